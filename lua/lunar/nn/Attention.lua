--- lunar.nn.Attention: multi-head self-attention with a fused qkv projection
-- (Vaswani et al. 2017; timm's Attention: qkv Linear(dim, 3*dim) reshaped to
-- [B, N, 3, heads, head_dim], scale head_dim^-0.5, proj Linear(dim, dim)).
-- The attention kernel keeps only the log-sum-exp per row for backward
-- (FlashAttention's recomputation), never the [N, N] probabilities.
--
-- Tensor parallel (opts.tp, a layer factory, lunar.nn.layers): with
-- lunar.parallel's 1D mode (Megatron's; Shoeybi et al. 2019) the heads are
-- split across the T tensor ranks: qkv is a ColumnParallelLinear (the q, k, v
-- rows of this rank's H/T heads), the attention kernel runs on the local
-- heads, proj is a RowParallelLinear (all_reduce, or reduce_scatter along
-- tokens with sequence parallelism, then the bias once).
--
-- Domain parallel (opts.domain, lua/lunar/parallel/domain.lua): x holds this
-- rank's tokens; qkv and proj are local, and the attention of the local
-- queries over the keys of every domain rank is domain:attention (ring or
-- all-gather, exact through the log-sum-exp), f32.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local layers = require('lunar.nn.layers')
local ops = lunar.ops

local Attention = class('Attention', Module)

--- @param dim integer C (a multiple of num_heads)
-- @param num_heads integer H
-- @param opts {qkv_bias=true, proj_drop=0, seed=, tp=}: tp, the layer factory of
--   a tensor-parallel mode (default lunar.nn.layers: no split)
function Attention:__init(dim, num_heads, opts)
  Module.__init(self)
  opts = opts or {}
  if dim % num_heads ~= 0 then
    error(string.format('attention: HIDDEN_SIZE %d is not divisible by NUM_HEADS %d', dim, num_heads), 0)
  end
  self.dim, self.num_heads = dim, num_heads
  local tp = opts.tp or layers
  self.local_heads = tp:local_heads(num_heads)
  self.local_dim = tp:local_features(dim)
  self.domain = opts.domain
  -- under precision = 'bf16' qkv is bf16 (the attention's operands)
  self:add('qkv', tp:column_linear(dim, 3 * dim, {groups = 3, bias = opts.qkv_bias ~= false, bf16_output = true}))
  self:add('proj', tp:row_linear(dim, dim))
  self:add('proj_drop', tp:dropout(opts.proj_drop or 0, opts.seed))   -- a child: train()/evaluate() reach it
end

function Attention:extra_repr()
  if self.local_heads ~= self.num_heads then
    return string.format('dim %d, heads %d (%d on this rank)', self.dim, self.num_heads, self.local_heads)
  end
  return string.format('dim %d, heads %d', self.dim, self.num_heads)
end

--- x [B, N, C] -> y [B, N, C] (with sequence parallelism both are this
-- rank's token slice [B, N/T, C]). Under precision = 'bf16' qkv and the
-- attention output o (what backward keeps) are bf16, lse and y f32; the
-- attention runs on bf16 operands (cuDNN's fused attention on CUDA). ctx
-- owns qkv, o, lse and the children's contexts.
function Attention:forward(x)
  local s = x:shape()
  if #s ~= 3 or s[3] ~= self.local_dim then self:shape_error('tokens', s, {'B', 'N', self.local_dim}) end
  local qkv, qkv_ctx = self.qkv:forward(x)
  local o, lse
  if self.domain then
    local q, copied
    o, lse, q, copied = self.domain:attention(qkv, self.local_heads)
    if copied then qkv:free(); qkv = q end       -- backward reads the f32 copy
  else
    o, lse = ops.attention(qkv, self.local_heads)
  end
  local y, proj_ctx = self.proj:forward(o)
  local yd, drop_ctx = self.proj_drop:forward(y)
  if yd ~= y then y:free() end
  return yd, Context({qkv_ctx = qkv_ctx, qkv = qkv, o = o, lse = lse, proj_ctx = proj_ctx, drop_ctx = drop_ctx})
end

--- The attention kernel's backward from a forward's ctx.qkv, ctx.o, ctx.lse
-- (released here) and the output gradient do_ (freed here; cast to bf16 when
-- qkv is bf16, precision = 'bf16'): returns dqkv. Shared with
-- nn.MultiheadAttention. domain: optional, the lunar.parallel.domain context of a
-- domain-parallel forward (its attention_backward, collective).
function Attention.kernel_backward(ctx, do_, heads, domain)
  if domain then
    local dqkv = domain:attention_backward(do_, ctx.qkv, ctx.o, ctx.lse, heads)
    do_:free(); ctx:release('o'); ctx:release('lse'); ctx:release('qkv')
    return dqkv
  end
  if ctx.qkv:dtype() == 'bf16' then   -- precision = 'bf16': the attention's operands are all bf16
    local do16 = ops.cast_bf16(do_)
    do_:free()
    do_ = do16
  end
  local dqkv = ops.attention_backward(do_, ctx.qkv, ctx.o, ctx.lse, heads)
  do_:free(); ctx:release('o'); ctx:release('lse'); ctx:release('qkv')
  return dqkv
end

function Attention:backward(ctx, dy, need_dx)
  local dyd = self.proj_drop:backward(ctx.drop_ctx, dy)
  local do_ = self.proj:backward(ctx.proj_ctx, dyd)
  if dyd ~= dy then dyd:free() end
  local dqkv = Attention.kernel_backward(ctx, do_, self.local_heads, self.domain)
  local dx = self.qkv:backward(ctx.qkv_ctx, dqkv, need_dx)
  dqkv:free()
  ctx:free()
  return dx
end

return Attention
