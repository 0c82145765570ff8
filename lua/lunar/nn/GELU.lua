--- lunar.nn.GELU: y = x * Phi(x), the exact GELU (Hendrycks & Gimpel 2016;
-- PyTorch's nn.GELU(approximate='none'), timm's default). Elementwise, any
-- shape, f32 (or bf16 input); under precision = 'bf16' y is bf16 (as in the
-- fused MLP). nn.GELU{approximate = 'tanh'}: 0.5 x (1 + tanh(sqrt(2/pi) (x +
-- 0.044715 x^3))) (PyTorch's nn.GELU(approximate='tanh')), f32, on
-- lunar.ops.activation(x, 'gelu_tanh').
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32 = require('lunar.nn.precision').f32
local ops = lunar.ops

local GELU = class('GELU', Module)

--- @param opts optional {approximate='none'}
function GELU:__init(opts)
  Module.__init(self)
  local a = opts and opts.approximate or 'none'
  if a ~= 'none' and a ~= 'tanh' then
    error(string.format("nn.GELU: approximate must be 'none' or 'tanh' (PyTorch's), got '%s'", tostring(a)), 2)
  end
  self.approximate = a
end

function GELU:extra_repr() return string.format("approximate='%s'", self.approximate) end

--- x -> gelu(x); ctx refers to x.
function GELU:forward(x)
  if self.approximate == 'tanh' then
    local xf, copied = f32(x)
    return ops.activation(xf, 'gelu_tanh'), copied and Context({x = xf}) or Context(nil, {x = x})
  end
  return ops.gelu(x, self.precision == 'bf16' and 'bf16' or nil), Context(nil, {x = x})
end

--- dy -> dy * gelu'(x).
function GELU:backward(ctx, dy, need_dx)
  local x = ctx.x
  ctx:free()
  if need_dx == false then return nil end
  if self.approximate == 'tanh' then return ops.activation_backward(dy, x, 'gelu_tanh') end
  return ops.gelu_backward(dy, x)
end

return GELU
