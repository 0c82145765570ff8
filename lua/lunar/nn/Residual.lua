--- lunar.nn.Residual: y = x + f(x), forward and backward composed (the skip
-- connection of He et al. 2016; timm's Block is
-- Sequential{{'', Residual{{'norm1', LayerNorm}, {'attn', Attention}}}, ...}).
--
--   r = nn.Residual(f)                f a module: named '' (inlined), so f's
--                                     parameters read as the Residual's own
--   r = nn.Residual{{'norm1', ln}, {'attn', attn}}   a list: f = those in
--                                     sequence, named as given (norm1.weight)
--   y, ctx = r:forward(x)             x [..] -> y [..] (f(x) must have x's shape)
--   dx = r:backward(ctx, dy, need_dx) dx = dy + f'(x)^T dy
--
-- PyTorch has no module of its own for it: `x + f(x)` in a forward.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local Sequential = require('lunar.nn.Sequential')
local f32 = require('lunar.nn.precision').f32
local ops = lunar.ops

local Residual = class('Residual', Module)

Residual.apply = Sequential.apply

--- @param f a module, or a list of modules / {name, module} pairs (run in sequence)
function Residual:__init(f)
  Module.__init(self)
  if not Sequential.is_module(f) then
    if type(f) ~= 'table' then error('nn.Residual: expected a module or a list of modules, got ' .. type(f), 2) end
    local seq = Sequential(f)
    f = seq
  end
  self.f = f
  table.insert(self._children, {name = '', module = f})
end

--- x -> x + f(x); ctx owns f's context and refers to x.
function Residual:forward(x)
  local fx, cf = Sequential.child_forward(self.f, x)
  local xs, fs = x:shape(), fx:shape()
  if table.concat(xs, ',') ~= table.concat(fs, ',') then
    cf:free()
    if fx ~= x then fx:free() end
    self:shape_error('f(x) must have the shape of x', fs, xs)
  end
  -- the sum in f32 (under precision = 'bf16' x or f(x) may be a bf16 norm output)
  local xf, cx = f32(x)
  local y
  if fx == x then
    y = ops.add(xf, xf)
  else
    local ff, cf32 = f32(fx)
    if cf32 then fx:free() end
    y = ops.add_(ff, xf)      -- f's fresh output (or its f32 copy): reuse it for the sum
  end
  if cx then xf:free() end
  if not self.training then cf:free() return y, Context(nil, {evaluation = true}) end
  return y, Context({cf = cf})
end

--- dy -> dy + f's input gradient; accumulates f's parameter gradients.
function Residual:backward(ctx, dy, need_dx)
  if ctx.evaluation then error('nn.Residual:backward: the forward ran in evaluation mode and kept nothing', 2) end
  local df = self.f:backward(ctx.cf, dy, need_dx)
  ctx._owns.cf = nil; ctx.cf = nil       -- released by f's backward
  ctx:free()
  if need_dx == false then
    if df and df ~= dy then df:free() end
    return nil
  end
  if df == dy then return ops.add(dy, dy) end
  return ops.add_(df, dy)
end

return Residual
