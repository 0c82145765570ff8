--- lunar.nn.LayerNorm over the last dim (Ba, Kiros, Hinton 2016; PyTorch's
-- nn.LayerNorm with elementwise affine). timm's ViT uses eps = 1e-6.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local LayerNorm = class('LayerNorm', Module)

--- @param dim integer C
-- @param eps number (default 1e-6)
-- @param opts {sequence_parallel=bool}: the norm runs on this rank's token
--   slice (Megatron's sequence parallelism), so its parameters' gradients are
--   partial sums over the tensor-parallel group (Module:param)
function LayerNorm:__init(dim, eps, opts)
  Module.__init(self)
  self.dim, self.eps = dim, eps or 1e-6
  local popts = opts and opts.sequence_parallel and {sequence_parallel = true} or nil
  self:param('weight', {dim}, {kind = 'ones'}, popts)
  self:param('bias', {dim}, {kind = 'zeros'}, popts)
end

function LayerNorm:extra_repr() return string.format('%d, eps=%g', self.dim, self.eps) end

--- x [..., C] -> y [..., C]; ctx owns mean and rstd and refers to x. Under precision = 'bf16'
-- (nn.materialize) y is bf16 (its readers in the ViT are GEMMs); the
-- statistics and the arithmetic stay f32, and x stays what it is (f32).
function LayerNorm:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.dim then self:shape_error('normalized dim', shape, {'*', self.dim}) end
  local y, mean, rstd = ops.layernorm(x, self.weight, self.bias, self.eps, self.precision == 'bf16' and 'bf16' or nil)
  return y, Context({mean = mean, rstd = rstd}, {x = x})
end

--- Accumulates dweight, dbias; returns dx [..., C] f32 (nil when need_dx is
-- false: the fused kernel computes it anyway).
function LayerNorm:backward(ctx, dy, need_dx)
  local dx = ops.layernorm_backward(dy, ctx.x, self.weight, ctx.mean, ctx.rstd, self.grad_weight, self.grad_bias)
  ctx:free()
  if need_dx == false then dx:free() return nil end
  return dx
end

return LayerNorm
