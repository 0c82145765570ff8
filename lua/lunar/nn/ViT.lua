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
--
-- Parallel forms (lunar.parallel builds them from the process grid; nothing
-- changes for the plain model):
--   opts.tp = a tensor-parallel mode's layer factory (lunar.nn.layers has its
--     fields; lunar.parallel.tp_context gives Megatron's 1D one): attention
--     heads and MLP units split across tp.size ranks; with
--     tp.sequence_parallel the norms and residuals of the blocks run on a
--     1/size slice of the tokens (tp:scatter_tokens() after the embedding,
--     tp:gather_tokens() before the final norm). The modes that split the
--     activations too (lunar.parallel.tensor_2d, tensor_3d: '2d', '2.5d',
--     '3d') also give the patch embedding, the class token and position
--     embedding (tp:token_params, tp:embed_tokens), the norms and the head;
--     the blocks then run on [B', N, C'] blocks (tp:local_batch,
--     tp:local_features) and the head returns the whole batch's logits.
--   opts.block_tp(i), opts.wrap_block(i, block): a layerwise strategy
--     (lunar.parallel.layerwise): block i built with its own tensor factory,
--     and run through what wrap_block returns (its redistribution).
--   opts.stage = {first_block=, last_block=}   a pipeline stage: only blocks
--     first..last (0-based, their global names kept); the stage holding block
--     0 owns patch_embed, cls_token and pos_embed, the one holding the last
--     block owns norm and head. forward(x) takes images on the first stage,
--     else the previous stage's activations [B, N, C] (token slices with
--     sequence parallelism), and returns logits on the last stage, else
--     activations; backward takes dlogits or the activation gradient and
--     returns the activation gradient (nil on the first stage unless need_dx).
--   opts.activation_checkpointing = {granularity = 'full', method = 'uniform' |
--     'block', num_layers = n} (NeMo's names; nil or granularity nil: off):
--     this stage's blocks run under lunar.nn.Checkpoint (only the input of
--     each checkpointed segment is kept; backward replays its forward, the
--     same dropout masks included, so gradients are bitwise unchanged).
--     'uniform': the stage's blocks in consecutive groups of n (the last one
--     may be shorter), each group one segment; 'block': the first n blocks of
--     the stage, each its own segment, the others stored as usual.
--     blocks = {b_0, ..., b_(depth-1)} (booleans; a layerwise strategy, Galvatron's
--     per-layer `cpt`): block i checkpointed alone when b_i, method and num_layers
--     ignored; a list of another length is an error.
--     'selective' (recompute only the attention core) is what lunar.nn.Attention
--     always does (its kernel keeps the log-sum-exp per row, never the
--     probabilities): no block is wrapped.
--     model:set_activation_checkpointing(spec) changes it on a built model.
--   model.grad_ready_hook = function(group)   called by backward as soon as a
--     group's gradients are complete: 'head' (norm and head), 'blocks.i' (last
--     to first), 'embed' (cls_token, pos_embed, patch_embed): each group is
--     contiguous in the flat gradient buffer, for data-parallel buckets.
--   model.zero_hook = function(event, keys)   sharded data parallelism
--     (lunar.parallel.zero): called with 'pre_forward' / 'post_forward' around
--     each unit's forward and 'pre_backward' / 'post_backward' around its
--     backward; a unit is the embedding ({'embed'}), a block or checkpointed
--     segment ({'blocks.i', ...}) or norm + head ({'head'}); model:zero_units()
--     lists them in forward order.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local layers = require('lunar.nn.layers')
local Block = require('lunar.nn.Block')
local Checkpoint = require('lunar.nn.Checkpoint')
local ops = lunar.ops

local ViT = class('ViT', Module)

function ViT:__init(opts)
  Module.__init(self)
  self.opts = opts
  local dim = opts.embed_dim
  self.embed_dim, self.num_classes, self.depth = dim, opts.num_classes, opts.depth
  local tp = opts.tp
  if tp and tp.size <= 1 then tp = nil end
  self.tp = tp
  self.sequence_parallel = tp and tp.sequence_parallel and true or false
  local stage = opts.stage or {}
  self.first_block = stage.first_block or 0
  self.last_block = stage.last_block or (opts.depth - 1)
  if self.first_block < 0 or self.last_block >= opts.depth or self.first_block > self.last_block then
    error(string.format('ViT: stage blocks %d..%d are not within DEPTH %d', self.first_block, self.last_block,
      opts.depth), 0)
  end
  self.is_first = self.first_block == 0
  self.is_last = self.last_block == opts.depth - 1
  local f = tp or layers             -- the layer factory (lunar.nn.layers: no split)
  self.factory = f
  local patch_embed = f:patch_embed{img_size = opts.img_size, patch_size = opts.patch_size,
    in_chans = opts.in_chans, embed_dim = dim, ndim = opts.ndim or 2}
  self.num_tokens = patch_embed.num_patches + 1
  self.local_tokens = self.num_tokens
  if self.sequence_parallel then
    if self.num_tokens % tp.size ~= 0 then
      error(string.format('ViT: sequence parallelism needs the %d tokens to be divisible by the tensor parallel ' ..
        'size %d', self.num_tokens, tp.size), 0)
    end
    self.local_tokens = self.num_tokens // tp.size
  end
  if self.is_first then
    self:add('patch_embed', patch_embed)
    f:token_params(self, self.num_tokens, dim, {kind = 'normal', std = 1e-6},
      {kind = 'trunc_normal', std = 0.02, a = -2, b = 2})
    -- a child (train()/evaluate() reach it), on every token (before the scatter)
    self:add('pos_drop', f:dropout(opts.drop or 0, opts.seed, true))
  end
  local blocks = self:add('blocks', Module())
  blocks.__name = 'ModuleList'
  for i = self.first_block, self.last_block do
    -- opts.block_tp(i): block i's own tensor factory (a layerwise strategy, lunar.parallel.layerwise)
    local btp = opts.block_tp and opts.block_tp(i) or tp
    blocks:add(tostring(i), Block{dim = dim, num_heads = opts.num_heads, mlp_ratio = opts.mlp_ratio,
      eps = opts.eps or 1e-6, drop = opts.drop, seed = opts.seed, qkv_bias = opts.qkv_bias, tp = btp})
  end
  if self.is_last then
    self:add('norm', f:layer_norm(dim, opts.eps or 1e-6))
    self:add('head', f:head(dim, opts.num_classes))
  end
  -- the factory's token mappings (nil unless sequence parallel): modules without parameters
  if self.is_first then self.scatter = tp and tp:scatter_tokens() end
  if self.is_last then self.gather = tp and tp:gather_tokens() end
  self:set_activation_checkpointing(opts.activation_checkpointing)
end

--- Which of this stage's blocks run under activation checkpointing (see the
-- module doc for spec; nil or spec.granularity nil: none). Errors name the
-- key: an unknown granularity or method, num_layers < 1 or more than this
-- stage's blocks. Sets self.units, the forward's order of
-- {first=, last=, module=} (a Block, or a Checkpoint over blocks first..last).
function ViT:set_activation_checkpointing(spec)
  local gran = spec and spec.granularity
  local n_blocks = self.last_block - self.first_block + 1
  local segments = {}           -- first block -> last block of each checkpointed segment
  if gran ~= nil then
    local method, n = spec.method or 'uniform', spec.num_layers or 1
    if gran ~= 'full' and gran ~= 'selective' then
      error(string.format("ViT: activation_checkpointing.granularity must be 'full' or 'selective', got '%s'",
        tostring(gran)), 0)
    end
    if method ~= 'uniform' and method ~= 'block' then
      error(string.format("ViT: activation_checkpointing.method must be 'uniform' or 'block', got '%s'",
        tostring(method)), 0)
    end
    if gran == 'full' and spec.blocks == nil and (math.type(n) ~= 'integer' or n < 1 or n > n_blocks) then
      error(string.format('ViT: activation_checkpointing.num_layers = %s must be an integer from 1 to the %d ' ..
        'blocks of this stage (blocks %d-%d)', tostring(n), n_blocks, self.first_block, self.last_block), 0)
    end
    if gran == 'full' and spec.blocks ~= nil then
      -- per block (a layerwise strategy): blocks[i + 1] true checkpoints block i alone
      if type(spec.blocks) ~= 'table' or #spec.blocks ~= self.depth then
        error(string.format('ViT: activation_checkpointing.blocks must list one boolean per block (DEPTH %d), got %s',
          self.depth, type(spec.blocks) == 'table' and (#spec.blocks .. ' entries') or type(spec.blocks)), 0)
      end
      for i = self.first_block, self.last_block do
        if spec.blocks[i + 1] then segments[i] = i end
      end
    elseif gran == 'selective' then
      -- the attention core is recomputed in backward by the attention kernel itself (Attention.lua)
    elseif method == 'uniform' then
      for i = self.first_block, self.last_block, n do segments[i] = math.min(i + n - 1, self.last_block) end
    else
      for i = self.first_block, self.first_block + n - 1 do segments[i] = i end
    end
  end
  self.activation_checkpointing = gran and {granularity = gran, method = spec.method or 'uniform',
    num_layers = spec.num_layers or 1, blocks = spec.blocks} or nil
  -- what runs block j: the block, or what opts.wrap_block made of it (lunar.parallel.layerwise)
  local wrap = self.opts.wrap_block
  local function runner(j)
    local b = self.blocks[tostring(j)]
    return wrap and wrap(j, b) or b
  end
  local units, i = {}, self.first_block
  while i <= self.last_block do
    local last = segments[i]
    if last then
      local list = {}
      for j = i, last do list[#list + 1] = runner(j) end
      local seg = Checkpoint(list)
      local first = i
      seg.after_backward = function(k) self:_grads_ready('blocks.' .. (first + k - 1)) end
      units[#units + 1] = {first = i, last = last, module = seg}
      i = last + 1
    else
      units[#units + 1] = {first = i, last = i, module = runner(i)}
      i = i + 1
    end
  end
  for _, u in ipairs(units) do
    u.keys = {}
    for j = u.first, u.last do u.keys[#u.keys + 1] = 'blocks.' .. j end
  end
  self.units = units
  return self
end

function ViT:extra_repr()
  local s = string.format('tokens %d, dim %d, depth %d, classes %d', self.num_tokens, self.embed_dim,
    self.depth, self.num_classes)
  if not (self.is_first and self.is_last) then
    s = s .. string.format(', blocks %d-%d', self.first_block, self.last_block)
  end
  if self.tp then
    s = s .. string.format(', tensor parallel %d%s', self.tp.size, self.sequence_parallel and ' (sequence parallel)' or '')
  end
  return s
end

--- The shape of the activations this stage receives / sends for a batch of
-- B images: {B, N, C}, or {B, N/T, C} with sequence parallelism.
function ViT:hidden_shape(batch)
  return {self.factory:local_batch(batch), self.local_tokens, self.factory:local_features(self.embed_dim)}
end

--- The gradient group of a parameter name: 'head', 'blocks.i' or 'embed'.
function ViT:grad_group_of(name)
  local i = name:match('^blocks%.(%d+)%.')
  if i then return 'blocks.' .. i end
  if name:match('^norm%.') or name:match('^head%.') then return 'head' end
  return 'embed'
end

--- This stage's gradient groups in the order backward completes them.
function ViT:grad_group_order()
  local order = {}
  if self.is_last then order[#order + 1] = 'head' end
  for i = self.last_block, self.first_block, -1 do order[#order + 1] = 'blocks.' .. i end
  if self.is_first then order[#order + 1] = 'embed' end
  return order
end

function ViT:_grads_ready(group)
  if self.grad_ready_hook then self.grad_ready_hook(group) end
end

local EMBED, HEAD = {'embed'}, {'head'}

--- This stage's units in forward order, each the list of its gradient
-- groups (see model.zero_hook in the module doc).
function ViT:zero_units()
  local list = {}
  if self.is_first then list[#list + 1] = EMBED end
  for _, u in ipairs(self.units) do list[#list + 1] = u.keys end
  if self.is_last then list[#list + 1] = HEAD end
  return list
end

function ViT:_unit(event, keys)
  if self.zero_hook then self.zero_hook(event, keys) end
end

--- images [B, C, S..] -> logits [B, num_classes] (a pipeline stage: see the
-- module doc for its input and output). ctx owns every activation the
-- backward needs (on a later pipeline stage it refers to the input); in
-- evaluation mode the block activations are freed as the forward goes and
-- ctx only serves ctx:free().
function ViT:forward(input)
  local ctx = Context()
  local x
  if self.is_first then
    self:_unit('pre_forward', EMBED)
    local p, cp = self.patch_embed:forward(input)
    ctx:own('cp', cp)
    local e = self.factory:embed_tokens(self, p)
    p:free()
    local cd
    x, cd = self.pos_drop:forward(e)
    ctx:own('cd', cd)
    if x ~= e then e:free() end
    self:_unit('post_forward', EMBED)
    if self.scatter then
      local full, cs = x, nil
      x, cs = self.scatter:forward(full)
      ctx:own('cs', cs)
      full:free()
    end
  else
    local s = input:shape()
    local width = self.factory:local_features(self.embed_dim)
    if #s ~= 3 or s[2] ~= self.local_tokens or s[3] ~= width then
      self:shape_error('activations from the previous pipeline stage', s, {'B', self.local_tokens, width})
    end
    x = input
  end
  for _, u in ipairs(self.units) do
    local i = u.first
    local key = 'x' .. i                       -- the input of block i (of the segment from block i)
    if i == self.first_block and not self.is_first then ctx[key] = x else ctx:own(key, x) end
    self:_unit('pre_forward', u.keys)
    local y, cb = u.module:forward(x)
    self:_unit('post_forward', u.keys)
    ctx:own('block' .. i, cb)
    if not self.training then
      -- evaluation keeps no activations for backward: free as we go (not the caller's input)
      ctx:release('block' .. i)
      ctx:release(key)
    end
    x = y
  end
  if not self.training then ctx.evaluation = true end
  if not self.is_last then return x, ctx end
  if self.gather then
    local slice, cg = x, nil
    x, cg = self.gather:forward(slice)
    ctx:own('cg', cg)
    slice:free()
  end
  self:_unit('pre_forward', HEAD)
  local h, cn = self.norm:forward(x)
  ctx:own('x_last', x); ctx:own('cn', cn); ctx:own('h', h)
  -- the class token, [B, C]; the view is freed now (it holds h's storage until the GC otherwise)
  local cls = h:select(2, 1)
  local pooled = ctx:own('pooled', cls:contiguous())
  cls:free()
  local logits, ch = self.head:forward(pooled)
  self:_unit('post_forward', HEAD)
  ctx:own('ch', ch)
  return logits, ctx
end

--- dlogits [B, num_classes] (or, on a stage before the last, the gradient of
-- its output activations); accumulates every parameter gradient, calling
-- grad_ready_hook as groups complete, and releases ctx. Returns the image
-- gradient on the first stage, the input activation gradient on later
-- stages (nil for either when need_dx is false). The caller's dy and input
-- are not freed.
function ViT:backward(ctx, dy, need_dx)
  if ctx.freed then error('ViT:backward: the context was already used by a backward, or freed', 2) end
  if ctx.evaluation then
    error('ViT:backward: the forward ran in evaluation mode and kept no activations', 2)
  end
  local dx
  if self.is_last then
    self:_unit('pre_backward', HEAD)
    local dpooled = self.head:backward(ctx.ch, dy)
    ctx:release('pooled')
    local hs = ctx.h:shape()
    -- where the activation is, not the default device; f32 (a gradient), even when h is bf16 (precision = 'bf16');
    -- f64 under nn.gradcheck
    local dh = lunar.zeros(hs, require('lunar.nn.precision').real(dpooled), ctx.h:device())
    local dcls = dh:select(2, 1)
    dcls:copy_(dpooled)
    dcls:free()
    dpooled:free(); ctx:release('h')
    dx = self.norm:backward(ctx.cn, dh)
    dh:free(); ctx:release('x_last')
    if self.gather then
      local full = dx
      dx = self.gather:backward(ctx.cg, full)
      full:free()
    end
    self:_grads_ready('head')
    self:_unit('post_backward', HEAD)
  else
    dx = dy
  end
  for k = #self.units, 1, -1 do
    local u = self.units[k]
    local i = u.first
    -- block first's input gradient: the embedding's on the first stage, else the caller's
    local want = i > self.first_block or self.is_first or need_dx ~= false
    self:_unit('pre_backward', u.keys)
    local dprev = u.module:backward(ctx['block' .. i], dx, want)
    if dx ~= dy then dx:free() end
    if i > self.first_block then ctx:release('x' .. i) end
    dx = dprev
    -- a checkpointed segment reports its blocks itself (Checkpoint.after_backward), as each completes
    local blk = self.blocks[tostring(i)]
    if u.module == blk or u.module.wraps == blk then self:_grads_ready('blocks.' .. i) end
    self:_unit('post_backward', u.keys)
  end
  if not self.is_first then
    ctx:free()
    return dx
  end
  if self.scatter then
    local slice = dx
    dx = self.scatter:backward(ctx.cs, slice)
    slice:free()
  end
  local dd = self.pos_drop:backward(ctx.cd, dx)
  if dd ~= dx then dx:free() end
  ctx:release('x' .. self.first_block)
  self:_unit('pre_backward', EMBED)
  local dp = self.factory:embed_tokens_backward(self, dd)
  dd:free()
  local dimg = self.patch_embed:backward(ctx.cp, dp, need_dx)
  dp:free()
  ctx:free()
  self:_grads_ready('embed')
  self:_unit('post_backward', EMBED)
  return dimg
end

return ViT
