--- lunar.nn.MLP: fc1 -> exact GELU -> fc2 (timm's Mlp; Hendrycks & Gimpel 2016
-- for GELU), with optional dropout after fc2 (timm's drop). fc1 is the
-- factory's column_linear and fc2 its row_linear: with lunar.parallel's 1D
-- mode a ColumnParallelLinear (hidden/T units per rank) and a
-- RowParallelLinear (Megatron's MLP: one all_reduce forward, one backward).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local layers = require('lunar.nn.layers')
local ops = lunar.ops

local MLP = class('MLP', Module)

--- @param dim integer C
-- @param hidden integer the hidden width
-- @param opts {drop=0, seed=, tp=}: tp, the layer factory of a tensor-parallel
--   mode (lunar.nn.layers; default: no split)
function MLP:__init(dim, hidden, opts)
  opts = opts or {}
  Module.__init(self)
  self.dim, self.hidden = dim, hidden
  local tp = opts.tp or layers
  -- under precision = 'bf16' fc1's output h is bf16 (GELU and its backward read it)
  self:add('fc1', tp:column_linear(dim, hidden, {bf16_output = true}))
  self:add('fc2', tp:row_linear(hidden, dim))
  self:add('drop', tp:dropout(opts.drop or 0, opts.seed))   -- a child: train()/evaluate() reach it
end

function MLP:extra_repr() return string.format('%d -> %d -> %d', self.dim, self.hidden, self.dim) end

--- x [..., dim] -> y [..., dim]. Under precision = 'bf16' fc1's output h (kept
-- for the GELU backward) and the GELU output a (fc2's input, kept for its
-- backward) are bf16, and so is the gradient dh of h (fc1's dout: its bias
-- gradient sums the bf16 values, as PyTorch's autocast does); y and the other
-- gradients f32. ctx owns h, a and the
-- children's contexts.
function MLP:forward(x)
  local lowp = self.precision == 'bf16' and 'bf16' or nil
  local h, c1 = self.fc1:forward(x)
  local a = ops.gelu(h, lowp)
  local y, c2 = self.fc2:forward(a)
  local yd, cd = self.drop:forward(y)
  if yd ~= y then y:free() end
  return yd, Context({c1 = c1, h = h, a = a, c2 = c2, cd = cd})
end

function MLP:backward(ctx, dy, need_dx)
  local dyd = self.drop:backward(ctx.cd, dy)
  local da = self.fc2:backward(ctx.c2, dyd)
  if dyd ~= dy then dyd:free() end
  ctx:release('a')
  -- under precision = 'bf16' dh is bf16 (the f32 product rounded once): fc1's
  -- backward GEMMs read bf16 operands, so the f32 dh is never stored
  local dh = ops.gelu_backward(da, ctx.h, ctx.h:dtype() == 'bf16' and 'bf16' or nil)
  da:free()
  ctx:release('h')
  local dx = self.fc1:backward(ctx.c1, dh, need_dx)
  dh:free()
  ctx:free()
  return dx
end

return MLP
