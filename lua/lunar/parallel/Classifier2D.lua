--- lunar.parallel.Classifier2D: the classification head (timm's head Linear
-- on the class token) on the 2D / 2.5D grid, as Colossal-AI's legacy
-- Classifier2D splits it: head.weight [classes, dim] is a vector piece along
-- its input features (1/q^2 each; lunar.parallel.tensor_2d), gathered over the
-- column group; rank (k, i, j) multiplies its class tokens' feature block j,
-- the partial logits are all-reduced over the row group (the bias added
-- once, by column 0, before the sum), then the batch blocks are all-gathered
-- over the batch group. head.bias [classes] is replicated on every tensor
-- rank; its gradient is summed over the batch group, so every copy gets the
-- same.
--
-- forward: class tokens [B/(dq), dim/q] -> logits [B, classes] (the whole
-- micro-batch, on every tensor rank: the loss runs as with one rank);
-- backward: dlogits [B, classes] (the same on every tensor rank) -> the
-- class tokens' gradient [B/(dq), dim/q].
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local tensor_2d = require('lunar.parallel.tensor_2d')
local ops = lunar.ops

local Classifier2D = class('Classifier2D', Module)

--- @param dim integer (full input features)
-- @param num_classes integer
-- @param opts {tp = a tensor_2d factory}
function Classifier2D:__init(dim, num_classes, opts)
  Module.__init(self)
  local tp = assert(opts and opts.tp, 'Classifier2D: opts.tp (a tensor_2d factory) is required')
  self.tp, self.in_features, self.out_features = tp, dim, num_classes
  self.dim_local = dim // tp.q
  self.is_parallel_linear = true   -- nn.materialize's 'pytorch' init: fan-in in_features (full)
  tp:vector_param(self, 'weight', {num_classes, dim}, 2, {kind = 'trunc_normal', std = 0.02, a = -2, b = 2})
  self:param('bias', {num_classes}, {kind = 'zeros'})
end

function Classifier2D:extra_repr()
  return string.format('%d -> %d (%d inputs on this rank)', self.in_features, self.out_features, self.dim_local)
end

--- x [B/(dq), dim/q] -> logits [B, classes] f32; ctx refers to x.
function Classifier2D:forward(x)
  local s = x:shape()
  if #s ~= 2 or s[2] ~= self.dim_local then self:shape_error("class tokens (this rank's block)", s, {'b', self.dim_local}) end
  local tp = self.tp
  local w = tp:gather_vector(self, 'weight', true)
  local part = ops.linear(x, w, tp.fblock == 0 and self.bias or nil)
  w:free()
  tp.groups.row:all_reduce(part, 'sum')
  local nb = tp:num_batch_blocks()
  local buf = lunar.empty({nb, s[1], self.out_features}, 'f32', part:device())
  tp.groups.batch:all_gather(buf, part)
  part:free()
  return tensor_2d.reshape(buf, {nb * s[1], self.out_features}), Context(nil, {x = x})
end

--- Accumulates the weight piece's and the bias's gradients; returns dx
-- [B/(dq), dim/q] (nil when need_dx is false).
function Classifier2D:backward(ctx, dy, need_dx)
  local tp = self.tp
  local x = ctx.x
  local b = x:shape()[1]
  local nv = dy:narrow(1, tp:batch_block() * b + 1, b)
  local mine = nv:contiguous()
  nv:free()
  local gb = lunar.zeros({self.out_features}, 'f32', dy:device())
  local ones = lunar.ones({b, 1}, 'f32', dy:device())
  local gv = gb:view(self.out_features, 1)
  ops.linear_backward(mine, ones, gv, gv, nil, false)
  ones:free(); gv:free()
  tp.groups.batch:all_reduce(gb, 'sum')
  ops.add_(self.grad_bias, gb)
  gb:free()
  local w = tp:gather_vector(self, 'weight', true)
  local gw = lunar.zeros({self.out_features, self.dim_local}, 'f32', dy:device())
  local dx = ops.linear_backward(mine, x, w, gw, nil, need_dx ~= false)
  w:free(); mine:free()
  tp:reduce_vector_grad(self, 'weight', gw)
  gw:free()
  ctx:free()
  return dx
end

return Classifier2D
