--- lunar.nn.MultiheadAttention: PyTorch's nn.MultiheadAttention(embed_dim,
-- num_heads, batch_first=True, kdim=, vdim=) (need_weights=False, no
-- attention dropout), under PyTorch's parameter names:
--
--   in_proj_weight [3E, E]   the q, k and v projections stacked (rows q, then k, then v)
--     or, when kdim or vdim differs from E (PyTorch's _qkv_same_embed_dim false):
--     q_proj_weight [E, E], k_proj_weight [E, kdim], v_proj_weight [E, vdim]
--   in_proj_bias   [3E]
--   out_proj.weight [E, E], out_proj.bias [E]   (a lunar.nn.Linear child 'out_proj')
--
--   m = nn.MultiheadAttention(E, H [, {bias=, kdim=, vdim=}])
--   y, ctx = m:forward(x)        self-attention: x [B, N, E] -> y [B, N, E]
--   dx = m:backward(ctx, dy, need_dx)
--   y, ctx = m:forward{query, key, value, key_padding_mask = kpm, attn_mask = am}
--     (also {query = q, key = k, value = v, ...}): query [B, L, E], key [B, S, kdim],
--     value [B, S, vdim] (key defaults to query, value to key) -> y [B, L, E];
--     key_padding_mask [B, S] and attn_mask [L, S] or [B*H, L, S] as PyTorch's: u8
--     (PyTorch's bool: nonzero = not attended) or f32 (added to the scores); a query
--     whose keys are all masked gives NaN, as PyTorch's
--   g = m:backward(ctx, dy, need_dx)   g = {query = dq, key = dk, value = dv}, one entry
--     per role given (an omitted role's gradient is added to the role it defaulted to)
--
-- The math is timm's fused qkv attention (lunar.nn.Attention: qkv.weight is
-- in_proj_weight, proj is out_proj): q k^T * head_dim^-0.5, softmax over keys,
-- times v, heads concatenated, out_proj; the same fused kernel
-- (lunar.ops.attention, keeping only the log-sum-exp per row for backward).
-- Masked or cross-attention (a table input, or kdim/vdim) takes separate q, k,
-- v projections and the general kernel lunar.ops.sdpa (q [B, L, E], k and v
-- [B, S, E], the masks summed into an additive [B, H, L, S] bias by
-- lunar.ops.sdpa_mask): the reference loops (sums in double), run per image
-- over the threads, on the CPU only (no CUDA kernel: an error says so), and
-- f32 activations under precision = 'bf16'.
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
-- @param opts {bias=true, kdim=E, vdim=E}: bias = false drops in_proj_bias and
--   out_proj.bias (PyTorch's bias=False); kdim, vdim the widths of key and value
function MultiheadAttention:__init(embed_dim, num_heads, opts)
  Module.__init(self)
  opts = opts or {}
  if math.type(embed_dim) ~= 'integer' or math.type(num_heads) ~= 'integer' or num_heads < 1 or
      embed_dim % num_heads ~= 0 then
    error(string.format('nn.MultiheadAttention: embed_dim (%s) must be an integer multiple of num_heads (%s)',
      tostring(embed_dim), tostring(num_heads)), 2)
  end
  self.embed_dim, self.num_heads = embed_dim, num_heads
  self.kdim, self.vdim = opts.kdim or embed_dim, opts.vdim or embed_dim
  for _, k in ipairs({'kdim', 'vdim'}) do
    if math.type(self[k]) ~= 'integer' or self[k] < 1 then
      error(string.format('nn.MultiheadAttention: %s must be a positive integer, got %s', k, tostring(self[k])), 2)
    end
  end
  self.has_bias = opts.bias ~= false
  -- PyTorch's _qkv_same_embed_dim: one stacked in_proj_weight, else three (xavier_uniform each)
  self.separate_proj = self.kdim ~= embed_dim or self.vdim ~= embed_dim
  if self.separate_proj then
    for _, w in ipairs({{'q', embed_dim}, {'k', self.kdim}, {'v', self.vdim}}) do
      local bw = math.sqrt(6 / (w[2] + embed_dim))
      self:param(w[1] .. '_proj_weight', {embed_dim, w[2]}, {kind = 'uniform', low = -bw, high = bw})
    end
  else
    local b = math.sqrt(6 / (embed_dim + 3 * embed_dim))
    self:param('in_proj_weight', {3 * embed_dim, embed_dim}, {kind = 'uniform', low = -b, high = b})
  end
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
-- out_proj's context, and refers to x. A table input (masks, cross-attention)
-- or kdim/vdim: MultiheadAttention.forward_general.
function MultiheadAttention:forward(x)
  if not lunar.is_tensor(x) or self.separate_proj then return self:forward_general(x) end
  local s = x:shape()
  if #s ~= 3 or s[3] ~= self.embed_dim then self:shape_error('tokens (batch_first)', s, {'B', 'N', self.embed_dim}) end
  local qkv = ops.linear(x, self:gemm_weight('in_proj_weight'), self.in_proj_bias,
    self.precision == 'bf16' and 'bf16' or nil)
  local o, lse = ops.attention(qkv, self.num_heads)
  local y, proj_ctx = self.out_proj:forward(o)
  return y, Context({qkv = qkv, o = o, lse = lse, proj_ctx = proj_ctx}, {x = x})
end

-- The weight and bias of projection r (1 q, 2 k, 3 v) and their gradients:
-- views of the stacked in_proj_weight / in_proj_bias rows, or the separate weights.
local function proj(self, r, grad)
  local E = self.embed_dim
  local w
  if self.separate_proj then
    local n = ({'q', 'k', 'v'})[r] .. '_proj_weight'
    w = grad and self['grad_' .. n] or self:gemm_weight(n)
    w = w:narrow(1, 1, E)           -- a view, freed as the others
  else
    w = (grad and self.grad_in_proj_weight or self:gemm_weight('in_proj_weight')):narrow(1, (r - 1) * E + 1, E)
  end
  local b = self.has_bias and (grad and self.grad_in_proj_bias or self.in_proj_bias):narrow(1, (r - 1) * E + 1, E)
  return w, b or nil
end

--- The general path of forward: input a tensor (self-attention) or a table
-- {query, key, value, key_padding_mask=, attn_mask=} (see the module doc).
-- ctx owns q, k, v, the mask bias, o, lse and out_proj's context.
function MultiheadAttention:forward_general(input)
  local E, H = self.embed_dim, self.num_heads
  local query, key, value, kpm, am
  if lunar.is_tensor(input) then query = input
  elseif type(input) == 'table' then
    query, key, value = input.query or input[1], input.key or input[2], input.value or input[3]
    kpm, am = input.key_padding_mask, input.attn_mask
  end
  if not lunar.is_tensor(query) then
    self:shape_error('input (a tensor, or {query, key, value, key_padding_mask=, attn_mask=})', type(input), 'query')
  end
  local roles = {key = key ~= nil, value = value ~= nil}
  key = key or query
  value = value or key
  local qs, ks, vs = query:shape(), key:shape(), value:shape()
  if #qs ~= 3 or qs[3] ~= E then self:shape_error('query (batch_first)', qs, {'B', 'L', E}) end
  if #ks ~= 3 or ks[1] ~= qs[1] or ks[3] ~= self.kdim then self:shape_error('key', ks, {qs[1], 'S', self.kdim}) end
  if #vs ~= 3 or vs[1] ~= qs[1] or vs[2] ~= ks[2] or vs[3] ~= self.vdim then
    self:shape_error('value', vs, {qs[1], ks[2], self.vdim})
  end
  local t = {}
  for r, x in ipairs({query, key, value}) do
    local w, b = proj(self, r)
    t[r] = ops.linear(x, w, b)
    w:free(); if b then b:free() end
  end
  local bias
  if kpm or am then
    local ok, res = pcall(ops.sdpa_mask, {qs[1], H, qs[2], ks[2]}, am, kpm, t[1]:dtype())
    if not ok then
      for _, x in ipairs(t) do x:free() end
      error(string.format('%s (MultiheadAttention): %s', self.path ~= '' and self.path or '<root>',
        tostring(res):gsub('^sdpa_mask: ', '')), 0)
    end
    bias = res
  end
  local o, lse = ops.sdpa(t[1], t[2], t[3], H, bias)
  local y, proj_ctx = self.out_proj:forward(o)
  return y, Context({q = t[1], k = t[2], v = t[3], bias = bias, o = o, lse = lse, proj_ctx = proj_ctx},
    {query = query, key = key, value = value, roles = roles, table_input = not lunar.is_tensor(input)})
end

--- The backward of forward_general: dx for a tensor input, else {query=, key=, value=}.
function MultiheadAttention:backward_general(ctx, dy, need_dx)
  local do_ = self.out_proj:backward(ctx.proj_ctx, dy)
  ctx._owns.proj_ctx = nil; ctx.proj_ctx = nil
  local dq, dk, dv = ops.sdpa_backward(do_, ctx.q, ctx.k, ctx.v, ctx.o, ctx.lse, self.num_heads, ctx.bias)
  do_:free()
  local want = need_dx ~= false
  local g = {}
  for r, pair in ipairs({{dq, ctx.query}, {dk, ctx.key}, {dv, ctx.value}}) do
    local w, b = proj(self, r)
    local gw, gb = proj(self, r, true)
    g[r] = ops.linear_backward(pair[1], pair[2], w, gw, gb, want)
    w:free(); gw:free(); if b then b:free(); gb:free() end
    pair[1]:free()
  end
  local roles, table_input = ctx.roles, ctx.table_input
  ctx:free()
  if not want then return nil end
  -- an omitted role's gradient goes to the role it defaulted to (value -> key -> query)
  if not roles.value then ops.add_(g[2], g[3]); g[3]:free(); g[3] = nil end
  if not roles.key then ops.add_(g[1], g[2]); g[2]:free(); g[2] = nil end
  if not table_input then return g[1] end
  return {query = g[1], key = g[2], value = g[3]}
end

--- Accumulates the gradients of in_proj_weight, in_proj_bias and out_proj's;
-- returns dx (nil when need_dx is false).
function MultiheadAttention:backward(ctx, dy, need_dx)
  if ctx.lse and ctx.q then return self:backward_general(ctx, dy, need_dx) end
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
