--- lunar.nn.ViT: the Vision Transformer (Dosovitskiy et al. 2021) in timm's
-- VisionTransformer layout and parameter names: patch_embed.proj, cls_token,
-- pos_embed, blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2},
-- norm, head; pre-norm blocks, class token pooling, timm's default init
-- (pos_embed trunc_normal std 0.02, cls_token normal std 1e-6, Linear
-- trunc_normal std 0.02 and zero bias).
--
--   model = ViT{img_size=28, patch_size=4, in_chans=1, embed_dim=192, depth=6,
--               num_heads=3, mlp_ratio=4, num_classes=10, ndim=2, drop=0, seed=0}
--   logits, ctx = model:forward(images)     images [B, C, S..] -> logits [B, classes]
--   model:backward(ctx, dlogits)            accumulates every parameter gradient
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local PatchEmbed = require('lunar.nn.PatchEmbed')
local Block = require('lunar.nn.Block')
local LayerNorm = require('lunar.nn.LayerNorm')
local Linear = require('lunar.nn.Linear')
local Dropout = require('lunar.nn.Dropout')
local ops = lunar.ops

local ViT = class('ViT', Module)
local free_ctx = Module.free_ctx

function ViT:__init(opts)
  Module.__init(self)
  self.opts = opts
  local dim = opts.embed_dim
  self.embed_dim, self.num_classes, self.depth = dim, opts.num_classes, opts.depth
  self:add('patch_embed', PatchEmbed{img_size = opts.img_size, patch_size = opts.patch_size,
    in_chans = opts.in_chans, embed_dim = dim, ndim = opts.ndim or 2})
  self.num_tokens = self.patch_embed.num_patches + 1
  self:param('cls_token', {1, 1, dim}, {kind = 'normal', std = 1e-6}, {no_weight_decay = true})
  self:param('pos_embed', {1, self.num_tokens, dim}, {kind = 'trunc_normal', std = 0.02, a = -2, b = 2},
    {no_weight_decay = true})
  self.pos_drop = Dropout(opts.drop or 0, opts.seed)
  local blocks = self:add('blocks', Module())
  blocks.__name = 'ModuleList'
  for i = 0, opts.depth - 1 do
    blocks:add(tostring(i), Block{dim = dim, num_heads = opts.num_heads, mlp_ratio = opts.mlp_ratio,
      eps = opts.eps or 1e-6, drop = opts.drop, seed = opts.seed})
  end
  self:add('norm', LayerNorm(dim, opts.eps or 1e-6))
  self:add('head', Linear(dim, opts.num_classes))
end

function ViT:extra_repr()
  return string.format('tokens %d, dim %d, depth %d, classes %d', self.num_tokens, self.embed_dim,
    self.depth, self.num_classes)
end

--- images [B, C, S..] -> logits [B, num_classes].
function ViT:forward(img)
  local ctx = {blocks = {}, xs = {}}
  local p, cp = self.patch_embed:forward(img)
  ctx.cp = cp
  local x = ops.embed_tokens(p, self.cls_token, self.pos_embed)
  p:free()
  self.pos_drop.path = 'pos_drop'
  x, ctx.cd = self.pos_drop:forward(x)
  for i = 0, self.depth - 1 do
    ctx.xs[i] = x
    x, ctx.blocks[i] = self.blocks[tostring(i)]:forward(x)
    if not self.training then
      -- evaluation keeps no activations for backward: free as we go
      free_ctx(ctx.blocks[i])
      ctx.xs[i]:free()
      ctx.blocks[i], ctx.xs[i] = nil, nil
    end
  end
  local h, cn = self.norm:forward(x)
  ctx.cn, ctx.x_last, ctx.h = cn, x, h
  local pooled = h:select(2, 1):contiguous()     -- the class token, [B, C]
  local logits, ch = self.head:forward(pooled)
  ctx.ch, ctx.pooled = ch, pooled
  return logits, ctx
end

--- dlogits [B, num_classes]; accumulates every parameter gradient. Returns
-- the image gradient when need_dx (else nil).
function ViT:backward(ctx, dlogits, need_dx)
  if not ctx.xs[0] then error('ViT:backward: the forward ran in evaluation mode and kept no activations', 2) end
  local dpooled = self.head:backward(ctx.ch, dlogits)
  ctx.pooled:free()
  local hs = ctx.h:shape()
  local dh = lunar.zeros(hs)
  dh:select(2, 1):copy_(dpooled)
  dpooled:free(); ctx.h:free()
  local dx = self.norm:backward(ctx.cn, dh)
  dh:free(); ctx.x_last:free()
  for i = self.depth - 1, 0, -1 do
    local dprev = self.blocks[tostring(i)]:backward(ctx.blocks[i], dx)
    dx:free()
    if i > 0 then ctx.xs[i]:free() end
    dx = dprev
  end
  dx = self.pos_drop:backward(ctx.cd, dx)
  ctx.xs[0]:free()
  local dp = ops.embed_tokens_backward(dx, self.grad_cls_token, self.grad_pos_embed)
  dx:free()
  local dimg = self.patch_embed:backward(ctx.cp, dp, need_dx)
  dp:free()
  return dimg
end

return ViT
