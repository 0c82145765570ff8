--- lunar.nn.Transpose: swaps two dims, y = x.transpose(d1, d2) made
-- contiguous (PyTorch's torch.transpose; timm's PatchEmbed does
-- flatten(2).transpose(1, 2)). Dims are 1-based, as lunar's tensor methods;
-- any shape with both dims.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')

local Transpose = class('Transpose', Module)

--- @param d1 integer
-- @param d2 integer
function Transpose:__init(d1, d2)
  Module.__init(self)
  if math.type(d1) ~= 'integer' or math.type(d2) ~= 'integer' or d1 < 1 or d2 < 1 then
    error('nn.Transpose: expected two positive (1-based) dims, got ' .. tostring(d1) .. ', ' .. tostring(d2), 2)
  end
  self.d1, self.d2 = d1, d2
end

function Transpose:extra_repr() return string.format('%d, %d', self.d1, self.d2) end

--- x -> x with dims d1, d2 swapped (a contiguous copy).
function Transpose:forward(x)
  local s = x:shape()
  if math.max(self.d1, self.d2) > #s then self:shape_error('dims to swap', s, {'>= ' .. math.max(self.d1, self.d2) .. ' dims'}) end
  local v = x:transpose(self.d1, self.d2)
  local y = v:contiguous()
  v:free()
  return y, Context()
end

--- dy -> dy with the same dims swapped back.
function Transpose:backward(ctx, dy, need_dx)
  ctx:free()
  if need_dx == false then return nil end
  local v = dy:transpose(self.d1, self.d2)
  local dx = v:contiguous()
  v:free()
  return dx
end

return Transpose
