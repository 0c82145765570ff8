--- lunar.nn.Linear: y[..., out] = x[..., in] @ weight[out, in]^T + bias[out].
-- timm/PyTorch layout and init (trunc_normal std 0.02 in [-2, 2], zero bias:
-- timm's init_weights_vit_timm).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local Linear = class('Linear', Module)

--- @param in_features integer K
-- @param out_features integer N
-- @param opts {bias=true, init={kind=..., std=...}, bias_init=..., bf16_output=false}:
--   bf16_output: under precision = 'bf16' (nn.materialize) y is bf16 (the
--   f32 sums rounded once), for a reader that takes bf16 (a GEMM, the
--   attention); otherwise y is f32
function Linear:__init(in_features, out_features, opts)
  Module.__init(self)
  opts = opts or {}
  self.in_features, self.out_features = in_features, out_features
  self:param('weight', {out_features, in_features}, opts.init or {kind = 'trunc_normal', std = 0.02, a = -2, b = 2})
  self.has_bias = opts.bias ~= false
  if self.has_bias then self:param('bias', {out_features}, opts.bias_init or {kind = 'zeros'}) end
  self.bf16_output = opts.bf16_output and true or false
end

function Linear:extra_repr() return string.format('%d -> %d', self.in_features, self.out_features) end

--- The dtype of a Linear's output: 'bf16' when the module was built with
-- bf16_output and runs under precision = 'bf16', else nil (f32). Shared
-- with the tensor-parallel linears (lunar.parallel).
function Linear.output_dtype(m)
  return (m.bf16_output and m.precision == 'bf16') and 'bf16' or nil
end

--- x [..., in] -> y [..., out]; ctx refers to x. Under precision = 'bf16' the
-- GEMM reads the bf16 working weight (x f32 or bf16; fp32 accumulation).
function Linear:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.in_features then
    self:shape_error('input features', shape, {'*', self.in_features})
  end
  return ops.linear(x, self:gemm_weight('weight'), self.bias, Linear.output_dtype(self)), Context(nil, {x = x})
end

--- Accumulates dweight, dbias; returns dx (nil when need_dx is false). dy f32,
-- or bf16 under precision = 'bf16'; dx f32.
function Linear:backward(ctx, dy, need_dx)
  local dx = ops.linear_backward(dy, ctx.x, self:gemm_weight('weight'), self.grad_weight, self.grad_bias,
    need_dx ~= false)
  ctx:free()
  return dx
end

return Linear
