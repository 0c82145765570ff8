--- lunar.nn.GELU: y = x * Phi(x), the exact GELU (Hendrycks & Gimpel 2016;
-- PyTorch's nn.GELU(approximate='none'), timm's default). Elementwise, any
-- shape, f32 (or bf16 input); under precision = 'bf16' y is bf16 (as in the
-- fused MLP). The tanh approximation (approximate='tanh') has no kernel yet:
-- asking for it is an error.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local GELU = class('GELU', Module)

--- @param opts optional {approximate='none'}
function GELU:__init(opts)
  Module.__init(self)
  local a = opts and opts.approximate or 'none'
  if a ~= 'none' then
    error(string.format("nn.GELU: approximate = '%s' has no kernel in lunar.ops (only the exact GELU, " ..
      "approximate = 'none')", tostring(a)), 2)
  end
  self.approximate = a
end

function GELU:extra_repr() return "approximate='none'" end

--- x -> gelu(x); ctx refers to x.
function GELU:forward(x)
  return ops.gelu(x, self.precision == 'bf16' and 'bf16' or nil), Context(nil, {x = x})
end

--- dy -> dy * gelu'(x).
function GELU:backward(ctx, dy, need_dx)
  local x = ctx.x
  ctx:free()
  if need_dx == false then return nil end
  return ops.gelu_backward(dy, x)
end

return GELU
