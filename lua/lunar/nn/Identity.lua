--- lunar.nn.Identity: y = x (PyTorch's nn.Identity): a placeholder in a
-- composition (e.g. no pre-logits layer). Any shape; y IS x and dx IS dy
-- (the module contract allows both), nothing is kept.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')

local Identity = class('Identity', Module)

function Identity:__init() Module.__init(self) end

--- x -> x itself.
function Identity:forward(x) return x, Context() end

--- dy -> dy itself (nil when need_dx is false).
function Identity:backward(ctx, dy, need_dx)
  ctx:free()
  if need_dx == false then return nil end
  return dy
end

return Identity
