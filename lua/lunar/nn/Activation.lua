--- lunar.nn.Activation: the base of the pointwise activations that run on
-- lunar.ops.activation (ReLU, SiLU, GELU's tanh form): y = act(x), any shape,
-- f32; ctx refers to x, dx = dy * act'(x). A subclass sets self.kind
-- ('relu' | 'silu' | 'gelu_tanh', the kernels of core/ops/*/activation).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32 = require('lunar.nn.precision').f32
local ops = lunar.ops

local Activation = class('Activation', Module)

--- @param kind 'relu' | 'silu' | 'gelu_tanh'
function Activation:__init(kind)
  Module.__init(self)
  self.kind = kind
end

--- x -> act(x); ctx refers to x (or owns its f32 copy when x is bf16).
function Activation:forward(x)
  local xf, copied = f32(x)
  return ops.activation(xf, self.kind), copied and Context({x = xf}) or Context(nil, {x = x})
end

--- dy -> dy * act'(x) (nil when need_dx is false).
function Activation:backward(ctx, dy, need_dx)
  local x = ctx.x
  ctx:free()
  if need_dx == false then return nil end
  return ops.activation_backward(dy, x, self.kind)
end

return Activation
