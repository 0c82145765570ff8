--- lunar.nn.Reshape: keeps the batch dim and reshapes the rest, x [B, ...] ->
-- y [B, shape...] (torch/nn's Reshape with a batch; PyTorch's nn.Unflatten /
-- nn.Flatten, or x.reshape(B, *shape)). One entry of shape may be -1 (inferred).
-- A view of x when x is contiguous (no copy).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')

local Reshape = class('Reshape', Module)

--- @param shape table the per-sample shape, e.g. {4, 49} or {-1}
function Reshape:__init(shape)
  Module.__init(self)
  if type(shape) ~= 'table' or #shape == 0 then error('nn.Reshape: expected a per-sample shape table, e.g. {-1}', 2) end
  self.shape = shape
end

function Reshape:extra_repr() return 'B, ' .. table.concat(self.shape, ', ') end

--- x [B, ...] -> [B, shape...]; ctx keeps x's shape.
function Reshape:forward(x)
  local s = x:shape()
  local want = {s[1]}
  for i, n in ipairs(self.shape) do want[i + 1] = n end
  local xc = x:contiguous()
  local ok, y = pcall(xc.view, xc, want)
  xc:free()
  if not ok then self:shape_error('reshape (' .. tostring(y) .. ')', s, want) end
  return y, Context(nil, {shape = s})
end

--- dy -> dy reshaped to x's shape (a view when dy is contiguous).
function Reshape:backward(ctx, dy, need_dx)
  local s = ctx.shape
  ctx:free()
  if need_dx == false then return nil end
  local dc = dy:contiguous()
  local dx = dc:view(s)
  dc:free()
  return dx
end

return Reshape
