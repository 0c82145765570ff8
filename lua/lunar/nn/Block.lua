--- lunar.nn.Block: a pre-norm transformer block (timm's Block):
--   x = x + attn(norm1(x));  x = x + mlp(norm2(x)).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local layers = require('lunar.nn.layers')
local Attention = require('lunar.nn.Attention')
local MLP = require('lunar.nn.MLP')
local ops = lunar.ops

local Block = class('Block', Module)

--- @param opts {dim=, num_heads=, mlp_ratio=4, eps=1e-6, drop=0, seed=, qkv_bias=true, tp=}
--   tp: the layer factory of a tensor-parallel mode (lunar.nn.layers; default
--   no split): attention and MLP split across tensor ranks; with
--   tp.sequence_parallel the norms and residuals run on this rank's token slice.
--   domain: a lunar.parallel.domain context, given to the attention (tokens
--   sharded over the domain group; everything else is local).
function Block:__init(opts)
  Module.__init(self)
  local dim = opts.dim
  local tp = opts.tp
  local sp = tp and tp.sequence_parallel and {sequence_parallel = true} or nil
  local f = tp or layers
  self:add('norm1', f:layer_norm(dim, opts.eps, sp))
  self:add('attn', Attention(dim, opts.num_heads, {proj_drop = opts.drop, seed = opts.seed, qkv_bias = opts.qkv_bias,
    tp = tp, domain = opts.domain}))
  self:add('norm2', f:layer_norm(dim, opts.eps, sp))
  self:add('mlp', MLP(dim, math.floor(dim * (opts.mlp_ratio or 4) + 0.5), {drop = opts.drop, seed = opts.seed, tp = tp}))
end

--- x [B, N, C] -> [B, N, C] (with sequence parallelism, token slices [B, N/T, C]).
-- ctx owns the norm outputs h1, h2, the residual sum x1 and the children's
-- contexts; it refers to x.
function Block:forward(x)
  local h1, cn1 = self.norm1:forward(x)
  local a, ca = self.attn:forward(h1)
  local x1 = ops.add_(a, x)            -- a is a fresh tensor: reuse it for the sum
  local h2, cn2 = self.norm2:forward(x1)
  local m, cm = self.mlp:forward(h2)
  local x2 = ops.add_(m, x1)
  return x2, Context({cn1 = cn1, ca = ca, cn2 = cn2, cm = cm, h1 = h1, h2 = h2, x1 = x1})
end

function Block:backward(ctx, dy, need_dx)
  local dh2 = self.mlp:backward(ctx.cm, dy)
  ctx:release('h2')
  local dx1 = self.norm2:backward(ctx.cn2, dh2)
  dh2:free()
  ops.add_(dx1, dy)                    -- the residual path
  local dh1 = self.attn:backward(ctx.ca, dx1)
  ctx:release('h1')
  local dx = self.norm1:backward(ctx.cn1, dh1)
  dh1:free()
  ops.add_(dx, dx1)
  dx1:free()
  ctx:free()
  if need_dx == false then dx:free() return nil end
  return dx
end

return Block
