--- lunar.nn.SelectToken: one token of each sample, x [B, N, C] -> y [B, C]
-- = x[:, i] (timm's class-token pooling, global_pool='token': x[:, 0];
-- PyTorch: x.select(1, i - 1)). i is 1-based, as lunar's select. f32.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local real = require('lunar.nn.precision').real

local SelectToken = class('SelectToken', Module)

--- @param i integer the token (1-based; 1 = the class token)
function SelectToken:__init(i)
  Module.__init(self)
  self.index = i or 1
end

function SelectToken:extra_repr() return tostring(self.index) end

--- x [B, N, C] -> x[:, i] [B, C] (a copy); ctx keeps x's shape.
function SelectToken:forward(x)
  local s = x:shape()
  if #s ~= 3 or s[2] < self.index then self:shape_error('tokens', s, {'B', '>= ' .. self.index, 'C'}) end
  local v = x:select(2, self.index)
  local y = v:contiguous()
  v:free()
  return y, Context(nil, {shape = s})
end

--- dy [B, C] -> dx [B, N, C], zero but for token i.
function SelectToken:backward(ctx, dy, need_dx)
  local s = ctx.shape
  ctx:free()
  if need_dx == false then return nil end
  local dx = lunar.zeros(s, real(dy), dy:device())
  local v = dx:select(2, self.index)
  v:copy_(dy)
  v:free()
  return dx
end

return SelectToken
