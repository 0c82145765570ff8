--- lunar.nn.MultiheadAttention: PyTorch's nn.MultiheadAttention(embed_dim,
-- num_heads, batch_first=True) for self-attention (query = key = value = x,
-- need_weights=False, no mask, no dropout), under PyTorch's parameter names:
--
--   in_proj_weight [3E, E]   the q, k and v projections stacked (rows q, then k, then v)
--   in_proj_bias   [3E]
--   out_proj.weight [E, E], out_proj.bias [E]   (a lunar.nn.Linear child 'out_proj')
--
--   m = nn.MultiheadAttention(E, H)
--   y, ctx = m:forward(x)        x [B, N, E] -> y [B, N, E]
--   dx = m:backward(ctx, dy, need_dx)
--
-- The math is timm's fused qkv attention (lunar.nn.Attention: qkv.weight is
-- in_proj_weight, proj is out_proj): q k^T * head_dim^-0.5, softmax over keys,
-- times v, heads concatenated, out_proj; the same fused kernel
-- (lunar.ops.attention, keeping only the log-sum-exp per row for backward).
-- Init as PyTorch's _reset_parameters: in_proj_weight xavier_uniform
-- (U(-b, b), b = sqrt(6 / (E + 3E))), in_proj_bias and out_proj.bias zero,
-- out_proj.weight U(-1/sqrt(E), 1/sqrt(E)) (nn.Linear's default). Under
-- precision = 'bf16' (nn.materialize) the projections read the bf16 working
-- weights and qkv, the attention output and the attention's operands in
-- backward are bf16, as in lunar.nn.Attention. Not split by tensor
-- parallelism (replicated, as every layer but Attention, MLP and Block).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local Linear = require('lunar.nn.Linear')
local Attention = require('lunar.nn.Attention')
local ops = lunar.ops

local MultiheadAttention = class('MultiheadAttention', Module)

--- @param embed_dim integer E (a multiple of num_heads)
-- @param num_heads integer H
-- @param opts {bias=true}: bias = false drops in_proj_bias and out_proj.bias (PyTorch's bias=False)
function MultiheadAttention:__init(embed_dim, num_heads, opts)
  Module.__init(self)
  opts = opts or {}
  if math.type(embed_dim) ~= 'integer' or math.type(num_heads) ~= 'integer' or num_heads < 1 or
      embed_dim % num_heads ~= 0 then
    error(string.format('nn.MultiheadAttention: embed_dim (%s) must be an integer multiple of num_heads (%s)',
      tostring(embed_dim), tostring(num_heads)), 2)
  end
  self.embed_dim, self.num_heads = embed_dim, num_heads
  self.has_bias = opts.bias ~= false
  local b = math.sqrt(6 / (embed_dim + 3 * embed_dim))
  self:param('in_proj_weight', {3 * embed_dim, embed_dim}, {kind = 'uniform', low = -b, high = b})
  if self.has_bias then self:param('in_proj_bias', {3 * embed_dim}, {kind = 'zeros'}) end
  local k = 1 / math.sqrt(embed_dim)
  self:add('out_proj', Linear(embed_dim, embed_dim, {bias = self.has_bias, init = {kind = 'uniform', low = -k, high = k}}))
end

function MultiheadAttention:extra_repr()
  return string.format('embed_dim %d, heads %d', self.embed_dim, self.num_heads)
end

--- Forward FLOPs (lunar.nn.flops) for x [B, N, E]: in_proj's GEMM
-- (2 * B * N * E * 3E) and the attention's q k^T and p v (4 * B * N^2 * E);
-- out_proj counts as its own Linear.
function MultiheadAttention:flops(xs)
  local B, N, E = xs[1], xs[2], self.embed_dim
  return 2 * B * N * E * 3 * E + 4 * B * N * N * E
end

--- x [B, N, E] -> y [B, N, E]; ctx owns qkv, the attention output o, lse and
-- out_proj's context, and refers to x.
function MultiheadAttention:forward(x)
  local s = x:shape()
  if #s ~= 3 or s[3] ~= self.embed_dim then self:shape_error('tokens (batch_first)', s, {'B', 'N', self.embed_dim}) end
  local qkv = ops.linear(x, self:gemm_weight('in_proj_weight'), self.in_proj_bias,
    self.precision == 'bf16' and 'bf16' or nil)
  local o, lse = ops.attention(qkv, self.num_heads)
  local y, proj_ctx = self.out_proj:forward(o)
  return y, Context({qkv = qkv, o = o, lse = lse, proj_ctx = proj_ctx}, {x = x})
end

--- Accumulates the gradients of in_proj_weight, in_proj_bias and out_proj's;
-- returns dx (nil when need_dx is false).
function MultiheadAttention:backward(ctx, dy, need_dx)
  local do_ = self.out_proj:backward(ctx.proj_ctx, dy)
  ctx._owns.proj_ctx = nil; ctx.proj_ctx = nil     -- released by out_proj's backward
  local dqkv = Attention.kernel_backward(ctx, do_, self.num_heads)
  local dx = ops.linear_backward(dqkv, ctx.x, self:gemm_weight('in_proj_weight'), self.grad_in_proj_weight,
    self.grad_in_proj_bias, need_dx ~= false)
  dqkv:free()
  ctx:free()
  return dx
end

return MultiheadAttention
