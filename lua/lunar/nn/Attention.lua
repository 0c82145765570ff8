--- lunar.nn.Attention: multi-head self-attention with a fused qkv projection
-- (Vaswani et al. 2017; timm's Attention: qkv Linear(dim, 3*dim) reshaped to
-- [B, N, 3, heads, head_dim], scale head_dim^-0.5, proj Linear(dim, dim)).
-- The attention kernel keeps only the log-sum-exp per row for backward
-- (FlashAttention's recomputation), never the [N, N] probabilities.
--
-- Tensor parallel (opts.tp, Megatron's 1D; Shoeybi et al. 2019): the heads are
-- split across the T tensor ranks. qkv is a ColumnParallelLinear (the q, k, v
-- rows of this rank's H/T heads), the attention kernel runs on the local
-- heads, proj is a RowParallelLinear (all_reduce, or reduce_scatter along
-- tokens with sequence parallelism, then the bias once).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Linear = require('lunar.nn.Linear')
local Dropout = require('lunar.nn.Dropout')
local ops = lunar.ops

local Attention = class('Attention', Module)

--- @param dim integer C (a multiple of num_heads)
-- @param num_heads integer H
-- @param opts {qkv_bias=true, proj_drop=0, seed=, tp=}: tp is a tensor-parallel
--   context {comm=, size=T, rank=, sequence_parallel=} (lunar.parallel.tp_context)
function Attention:__init(dim, num_heads, opts)
  Module.__init(self)
  opts = opts or {}
  if dim % num_heads ~= 0 then
    error(string.format('attention: HIDDEN_SIZE %d is not divisible by NUM_HEADS %d', dim, num_heads), 0)
  end
  self.dim, self.num_heads = dim, num_heads
  local tp = opts.tp
  if tp and tp.size > 1 then
    if num_heads % tp.size ~= 0 then
      error(string.format('attention: NUM_HEADS %d is not divisible by the tensor parallel size %d', num_heads,
        tp.size), 0)
    end
    local ColumnParallelLinear = require('lunar.parallel.ColumnParallelLinear')
    local RowParallelLinear = require('lunar.parallel.RowParallelLinear')
    self.local_heads = num_heads // tp.size
    self:add('qkv', ColumnParallelLinear(dim, 3 * dim, {tp = tp, groups = 3, bias = opts.qkv_bias ~= false}))
    self:add('proj', RowParallelLinear(dim, dim, {tp = tp}))
  else
    self.local_heads = num_heads
    self:add('qkv', Linear(dim, 3 * dim, {bias = opts.qkv_bias ~= false}))
    self:add('proj', Linear(dim, dim))
  end
  self:add('proj_drop', Dropout(opts.proj_drop or 0, opts.seed))   -- a child: train()/evaluate() reach it
  -- with sequence parallelism the dropout sees this rank's tokens: its own part of the stream
  if tp and tp.size > 1 and tp.sequence_parallel then self.proj_drop.rank_offset = tp.rank end
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
-- attention runs on bf16 operands (cuDNN's fused attention on CUDA).
function Attention:forward(x)
  local lowp = self.precision == 'bf16' and 'bf16' or nil
  local qkv, qkv_ctx = self.qkv:forward(x, lowp)
  local o, lse = ops.attention(qkv, self.local_heads)
  local y, proj_ctx = self.proj:forward(o)
  self.proj_drop.path = self.path .. '.proj_drop'
  local yd, drop_ctx = self.proj_drop:forward(y)
  return yd, {qkv_ctx = qkv_ctx, qkv = qkv, o = o, lse = lse, proj_ctx = proj_ctx, drop_ctx = drop_ctx}
end

function Attention:backward(ctx, dy)
  dy = self.proj_drop:backward(ctx.drop_ctx, dy)
  local do_ = self.proj:backward(ctx.proj_ctx, dy)
  if ctx.qkv:dtype() == 'bf16' then   -- precision = 'bf16': the attention's operands are all bf16
    local do16 = ops.cast_bf16(do_)
    do_:free()
    do_ = do16
  end
  local dqkv = ops.attention_backward(do_, ctx.qkv, ctx.o, ctx.lse, self.local_heads)
  do_:free(); ctx.o:free(); ctx.lse:free(); ctx.qkv:free()
  local dx = self.qkv:backward(ctx.qkv_ctx, dqkv)
  dqkv:free()
  return dx
end

return Attention
