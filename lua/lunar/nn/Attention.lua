--- lunar.nn.Attention: multi-head self-attention with a fused qkv projection
-- (Vaswani et al. 2017; timm's Attention: qkv Linear(dim, 3*dim) reshaped to
-- [B, N, 3, heads, head_dim], scale head_dim^-0.5, proj Linear(dim, dim)).
-- The attention kernel keeps only the log-sum-exp per row for backward
-- (FlashAttention's recomputation), never the [N, N] probabilities.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Linear = require('lunar.nn.Linear')
local Dropout = require('lunar.nn.Dropout')
local ops = lunar.ops

local Attention = class('Attention', Module)

--- @param dim integer C (a multiple of num_heads)
-- @param num_heads integer H
-- @param opts {qkv_bias=true, proj_drop=0, seed=}
function Attention:__init(dim, num_heads, opts)
  Module.__init(self)
  opts = opts or {}
  if dim % num_heads ~= 0 then
    error(string.format('attention: HIDDEN_SIZE %d is not divisible by NUM_HEADS %d', dim, num_heads), 0)
  end
  self.dim, self.num_heads = dim, num_heads
  self:add('qkv', Linear(dim, 3 * dim, {bias = opts.qkv_bias ~= false}))
  self:add('proj', Linear(dim, dim))
  self.proj_drop = Dropout(opts.proj_drop or 0, opts.seed)
end

function Attention:extra_repr() return string.format('dim %d, heads %d', self.dim, self.num_heads) end

--- x [B, N, C] -> y [B, N, C].
function Attention:forward(x)
  local qkv, qkv_ctx = self.qkv:forward(x)
  local o, lse = ops.attention(qkv, self.num_heads)
  local y, proj_ctx = self.proj:forward(o)
  self.proj_drop.path = self.path .. '.proj_drop'
  local yd, drop_ctx = self.proj_drop:forward(y)
  return yd, {qkv_ctx = qkv_ctx, qkv = qkv, o = o, lse = lse, proj_ctx = proj_ctx, drop_ctx = drop_ctx}
end

function Attention:backward(ctx, dy)
  dy = self.proj_drop:backward(ctx.drop_ctx, dy)
  local do_ = self.proj:backward(ctx.proj_ctx, dy)
  local dqkv = ops.attention_backward(do_, ctx.qkv, ctx.o, ctx.lse, self.num_heads)
  do_:free(); ctx.o:free(); ctx.lse:free(); ctx.qkv:free()
  local dx = self.qkv:backward(ctx.qkv_ctx, dqkv)
  dqkv:free()
  return dx
end

return Attention
