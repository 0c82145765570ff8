--- lunar.nn.MeanPool: the mean over the tokens, x [B, N, C] -> y [B, C]
-- (timm's global_pool='avg': x.mean(dim=1); PyTorch: torch.mean(x, 1), or
-- nn.AdaptiveAvgPool1d(1) on x.transpose(1, 2)). f32.
-- Forward is one GEMM against a [1, N] row of 1/N (lunar.ops.linear on the
-- [B, C, N] transpose); backward spreads dy / N over the N tokens (copies).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local f32, real = require('lunar.nn.precision').f32, require('lunar.nn.precision').real
local ops = lunar.ops

-- Domain parallel (opts.domain, lua/lunar/parallel/domain.lua): x holds this
-- rank's tokens of the image's N; the mean is the local sum / N all_reduced
-- over the domain group, and backward is the all_reduce's adjoint over the
-- domain replicas of the loss, domain size * dy / N per token (the reducer
-- averages gradients over domain x data; see domain.lua).
local MeanPool = class('MeanPool', Module)

--- @param opts optional {domain=}
function MeanPool:__init(opts)
  Module.__init(self)
  self.domain = opts and opts.domain
end

--- x [B, N, C] -> y [B, C]; ctx keeps only the shape.
function MeanPool:forward(x)
  local s = x:shape()
  if #s ~= 3 then self:shape_error('tokens', s, {'B', 'N', 'C'}) end
  local B, N, C = s[1], s[2], s[3]
  local xf, copied = f32(x)                                   -- bf16 under precision = 'bf16'
  local xv = xf:transpose(2, 3)
  local xt = xv:contiguous()                                  -- [B, C, N]
  xv:free()
  if copied then xf:free() end
  local d = self.domain
  local w = lunar.full({1, N}, 1 / (d and d.total_tokens or N), real(x), x:device())
  local y = ops.linear(xt, w, nil)                            -- [B, C, 1]
  xt:free(); w:free()
  local out = y:view(B, C)
  if out ~= y then y:free() end
  if d then d:mean_pool_reduce(out) end
  return out, Context(nil, {shape = s})
end

--- dy [B, C] -> dx [B, N, C] = dy / N for every token.
function MeanPool:backward(ctx, dy, need_dx)
  local s = ctx.shape
  ctx:free()
  if need_dx == false then return nil end
  local B, N, C = s[1], s[2], s[3]
  local dx = lunar.empty({B, N, C}, real(dy), dy:device())
  local d = self.domain
  local scaled = ops.scale_(dy:clone(), d and d.size / d.total_tokens or 1 / N)
  for n = 1, N do dx:select(2, n):copy_(scaled) end
  scaled:free()
  return dx
end

return MeanPool
