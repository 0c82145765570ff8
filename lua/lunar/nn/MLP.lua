--- lunar.nn.MLP: fc1 -> exact GELU -> fc2 (timm's Mlp; Hendrycks & Gimpel 2016
-- for GELU), with optional dropout after fc2 (timm's drop). With a
-- tensor-parallel context (opts.tp) fc1 is a ColumnParallelLinear (hidden/T
-- units per rank) and fc2 a RowParallelLinear (Megatron's MLP: one all_reduce
-- forward, one backward).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Linear = require('lunar.nn.Linear')
local Dropout = require('lunar.nn.Dropout')
local ops = lunar.ops

local MLP = class('MLP', Module)

--- @param dim integer C
-- @param hidden integer the hidden width
-- @param opts {drop=0, seed=, tp=} (tp: lunar.parallel.tp_context)
function MLP:__init(dim, hidden, opts)
  opts = opts or {}
  Module.__init(self)
  self.dim, self.hidden = dim, hidden
  local tp = opts.tp
  if tp and tp.size > 1 then
    local ColumnParallelLinear = require('lunar.parallel.ColumnParallelLinear')
    local RowParallelLinear = require('lunar.parallel.RowParallelLinear')
    self:add('fc1', ColumnParallelLinear(dim, hidden, {tp = tp}))
    self:add('fc2', RowParallelLinear(hidden, dim, {tp = tp}))
  else
    self:add('fc1', Linear(dim, hidden))
    self:add('fc2', Linear(hidden, dim))
  end
  self:add('drop', Dropout(opts.drop or 0, opts.seed))   -- a child: train()/evaluate() reach it
  -- with sequence parallelism the dropout sees this rank's tokens: its own part of the stream
  if tp and tp.size > 1 and tp.sequence_parallel then self.drop.rank_offset = tp.rank end
end

function MLP:extra_repr() return string.format('%d -> %d -> %d', self.dim, self.hidden, self.dim) end

--- x [..., dim] -> y [..., dim]. Under precision = 'bf16' fc1's output h (kept
-- for the GELU backward) and the GELU output a (fc2's input, kept for its
-- backward) are bf16; y and the gradients f32.
function MLP:forward(x)
  local lowp = self.precision == 'bf16' and 'bf16' or nil
  local h, c1 = self.fc1:forward(x, lowp)
  local a = ops.gelu(h, lowp)
  local y, c2 = self.fc2:forward(a)
  self.drop.path = self.path .. '.drop'
  local yd, cd = self.drop:forward(y)
  return yd, {c1 = c1, h = h, c2 = c2, cd = cd}
end

function MLP:backward(ctx, dy)
  dy = self.drop:backward(ctx.cd, dy)
  local da = self.fc2:backward(ctx.c2, dy)
  local dh = ops.gelu_backward(da, ctx.h)
  da:free(); ctx.h:free()
  local dx = self.fc1:backward(ctx.c1, dh)
  dh:free()
  return dx
end

return MLP
