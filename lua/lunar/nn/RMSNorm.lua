--- lunar.nn.RMSNorm over the last dim (Zhang & Sennrich 2019; PyTorch's
-- nn.RMSNorm(dim, eps=1e-6) with elementwise affine): y = x / sqrt(mean(x^2) +
-- eps) * weight, x [..., C] -> y [..., C], weight [C] initialized to ones, no
-- weight decay (1-dim). f32. Kernels: lunar.ops.rmsnorm (core/ops/*/rmsnorm).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32 = require('lunar.nn.precision').f32
local ops = lunar.ops

local RMSNorm = class('RMSNorm', Module)

--- @param dim integer C
-- @param eps number (default 1e-6)
function RMSNorm:__init(dim, eps)
  Module.__init(self)
  self.dim, self.eps = dim, eps or 1e-6
  self:param('weight', {dim}, {kind = 'ones'})
end

function RMSNorm:extra_repr() return string.format('%d, eps=%g', self.dim, self.eps) end

--- x [..., C] -> y [..., C]; ctx owns rstd (one per row) and refers to x.
function RMSNorm:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.dim then self:shape_error('normalized dim', shape, {'*', self.dim}) end
  local xf, copied = f32(x)                  -- bf16 under precision = 'bf16'
  local y, rstd = ops.rmsnorm(xf, self.weight, self.eps)
  if copied then return y, Context({rstd = rstd, x = xf}) end
  return y, Context({rstd = rstd}, {x = x})
end

--- Accumulates dweight; returns dx [..., C] (nil when need_dx is false).
function RMSNorm:backward(ctx, dy, need_dx)
  local dx = ops.rmsnorm_backward(dy, ctx.x, self.weight, ctx.rstd, self.grad_weight)
  ctx:free()
  if need_dx == false then dx:free() return nil end
  return dx
end

return RMSNorm
