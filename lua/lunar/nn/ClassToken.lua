--- lunar.nn.ClassToken: prepends a learned token, x [B, N, C] -> y [B, N+1, C]
-- with y[b, 1] = cls_token (timm's VisionTransformer: torch.cat([cls_token.expand(B,
-- -1, -1), x], dim=1)). Parameter `cls_token` [1, 1, C], timm's init normal
-- std 1e-6, no weight decay. Put it inline ({'', nn.ClassToken(C)}) in a
-- Sequential to get timm's name 'cls_token'. f32.
-- Runs the fused embed_tokens op with a zero position table.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32, real = require('lunar.nn.precision').f32, require('lunar.nn.precision').real
local ops = lunar.ops

local ClassToken = class('ClassToken', Module)

--- @param dim integer C
function ClassToken:__init(dim)
  Module.__init(self)
  self.dim = dim
  self:param('cls_token', {1, 1, dim}, {kind = 'normal', std = 1e-6}, {no_weight_decay = true})
end

function ClassToken:extra_repr() return tostring(self.dim) end

--- x [B, N, C] -> [B, N+1, C]; ctx keeps nothing.
function ClassToken:forward(x)
  local s = x:shape()
  if #s ~= 3 or s[3] ~= self.dim then self:shape_error('tokens', s, {'B', 'N', self.dim}) end
  local zero = lunar.zeros({1, s[2] + 1, self.dim}, real(x), x:device())
  local xf, copied = f32(x)                  -- bf16 under precision = 'bf16'
  local y = ops.embed_tokens(xf, self.cls_token, zero)
  zero:free()
  if copied then xf:free() end
  return y, Context()
end

--- dy [B, N+1, C] -> dx [B, N, C]; accumulates the class token's gradient.
function ClassToken:backward(ctx, dy, need_dx)
  ctx:free()
  local s = dy:shape()
  local scratch = lunar.zeros({1, s[2], self.dim}, real(dy), dy:device())   -- the (absent) position table's
  local dx = ops.embed_tokens_backward(dy, self.grad_cls_token, scratch, need_dx ~= false)
  scratch:free()
  return dx
end

return ClassToken
