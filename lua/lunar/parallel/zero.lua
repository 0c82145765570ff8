--- lunar.parallel.zero: sharded data parallelism, ZeRO stages 1, 2 and 3
-- (Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training
-- Trillion Parameter Models"; stage 3 is PyTorch FSDP's FULL_SHARD, Zhao et
-- al. 2023, and a `group_size` below the data-parallel size FSDP's
-- HYBRID_SHARD). The config key (parsed here, the one place):
--
--   parallel = {zero = 3}                                  or
--   parallel = {zero = {stage = 3, group_size = 2}}        or
--   parallel = {zero = 'optim_grads_params'}               (Megatron-FSDP's names)
--
--   stage  ZeRO        Megatron-FSDP          what is sharded over the group
--   0      (DDP)       no_shard               nothing (lunar.parallel.reducer)
--   1      ZeRO-1      optim                  optimizer state (NeMo's distributed optimizer)
--   2      ZeRO-2      optim_grads            + gradients
--   3      ZeRO-3      optim_grads_params     + parameters (FSDP full sharding)
--
--   local zero = require('lunar.parallel.zero')
--   local z = zero.parse(v)            {stage =, group_size =} (0 = the data-parallel size), or nil, message
--   local msg = zero.validate(z, dp)   nil, or why group_size does not fit the data-parallel size
--   local s = zero.new{model =, grid =, config = z, make_optimizer = function(pieces) ... end}
--   s.optimizer  the sharded optimizer (step, set_lr, lr, state_dict); s.reducer the gradient hooks
--   s:zero_grad(), s:clip_grad_norm(max), s:with_full_parameters(fn)
--   s.stats      {early = reduce_scatters started in backward, gathers = stage 3 group
--                gathers, cold = those not prefetched (the first unit of each pass)}
--
-- Layout. The unit of sharding is the model's gradient group
-- (model:grad_group_order(): the ViT's 'embed', 'blocks.i', 'head'), a
-- contiguous range of n elements of the flat parameter buffer
-- (nn.materialize). With S ranks in the shard group, rank r owns elements
-- [r L, min((r + 1) L, n)) of each group, L = ceil(n / S) (the last rank's
-- block is padded with zeros, never stepped). Each rank keeps the optimizer
-- (AdamW or SGD from setup.optimizer) over "pieces": the part of each
-- parameter that falls in its blocks, as 1-D views with the parameter's
-- weight-decay rule, of the model's parameters (stages 1, 2) or, at stage 3,
-- of a flat buffer of sum L fp32 master weights of its blocks. Every
-- optimizer is elementwise, so stepping pieces is bitwise the full step.
-- Model state per rank in fp32 for P parameters over S ranks, as ZeRO's
-- paper counts it (AdamW: 8 bytes of state per parameter): stage 1
-- 8P + 8P/S, stage 2 4P + 12P/S, stage 3 16P/S, plus the unit buffers in
-- flight (stage 2: the gradients of a unit or two; stage 3 also the
-- parameters of the current and the next unit).
--
-- Stage 1: gradients are averaged over the data-parallel group by
-- lunar.parallel.reducer (buckets overlapped with backward); the pieces'
-- gradients are views of the full flat gradient; after the step each group's
-- blocks are all-gathered into the model's flat parameters.
-- Stage 2: backward writes each group's gradient into a buffer of S L
-- elements allocated before the group's backward (model.zero_hook
-- 'pre_backward'); as soon as the group is complete (grad_ready_hook) a
-- non-blocking reduce_scatter ('avg') over the shard group starts, the rest
-- of backward runs while it is in flight, and when it completes its block is
-- added into the rank's gradient shard and the buffer is freed; no full
-- gradient buffer exists. Parameters are gathered after the step as in stage 1.
-- Stage 3: the model's flat parameters are freed too; before a unit's forward
-- (the model's zero units: the ViT's embedding, each block or checkpointed
-- segment, and norm + head) its groups are all-gathered into a fresh buffer
-- and the modules' parameter fields pointed into it; the next unit's gather
-- is issued before the current unit computes (prefetch, in forward and in
-- backward order); the buffer is freed after the unit's forward and gathered
-- again before its backward. Under precision = 'bf16' each rank rounds its
-- block of the fp32 master weights to bf16 (lunar.ops.cast_bf16, the rounding
-- the fused optimizer steps use) and the bf16 working copy is what is
-- gathered (half the bytes of fp32; the issue's "the bf16 working copy is
-- what stage 3 gathers"); the parameters the modules read in fp32 (LayerNorm,
-- biases, class token, position embedding: all but the GEMM weights) are
-- gathered in fp32 beside it, packed, so the step is that of one rank in bf16
-- (unlike FSDP's MixedPrecision(param_dtype = bf16), which rounds those too);
-- gradients stay fp32 and are reduce-scattered in fp32. with_full_parameters
-- (checkpoints) gathers the fp32 master weights.
-- Hybrid sharding (group_size M < data-parallel size D): the shard group is
-- each run of M consecutive data-parallel ranks, replicated across the D / M
-- groups; stage 1 averages over all D ranks, stages 2 and 3 reduce-scatter
-- over the shard group, then average the shards over the replica group
-- (ranks with the same shard index) once per step.
-- Domain parallelism (parallel.domain = G, lunar.parallel.domain; every stage,
-- hybrid sharding too): the shard group is the data-parallel group (or its
-- runs of M) of each domain coordinate, so the G domain ranks of an image
-- hold the same shard index and shard alike; no state is divided by G. Each
-- domain rank's gradients are partial sums over its tokens, and the true
-- gradient is their 'avg' over domain x data (the reducer's convention,
-- grid.grad_group). Stage 1: lunar.parallel.reducer averages the full
-- gradient over domain x data. Stages 2 and 3: in backward each unit's
-- gradient is reduce-scattered ('avg') over the shard group as without
-- domains; finish() then averages the shard over the ranks holding the same
-- shard index, once per step (after the last micro-batch): the domain group
-- (grid.domain_group), or with hybrid sharding one group of replica x domain
-- (R x G ranks, R = D / M, split from grid.grad_group), one all_reduce of the
-- n-element shard instead of two (ring all_reduce bytes per rank 2(RG - 1)/RG n
-- instead of 2(R - 1)/R n + 2(G - 1)/G n, and one latency instead of two).
-- An average of equal-sized averages is the average over
-- domain x data. Stage 3 gathers each unit over the shard group only (the
-- domain peers gather the same parameters, bf16 working copy included).
-- The norm for clipping sums over the shard group and the tensor x pipeline
-- group only (the domain peers' and replicas' shards are the same values:
-- not counted twice). Checkpoints: the shards are written by the first
-- replica's domain rank 0 (self.writes) and reshard to any layout.
-- A MODEL (models as code, MODEL = 'hybrid_vit': an nn.Sequential) reports
-- its units through nn.Sequential:zero_units (one per gradient group, a
-- checkpointed segment one unit); data x domain only (lunar.schema refuses
-- its stages 2 and 3 with tensor or pipeline parallelism).
--
-- Gradient accumulation (micro-batches, gradient_accumulation): stage 1
-- reduces once, on the last backward of the step (the full gradient buffer
-- accumulates, as plain data parallelism); stages 2 and 3 reduce-scatter
-- every backward into the shard (the full gradient exists only while one
-- unit's backward runs, which is the memory the stage saves; DeepSpeed
-- ZeRO-2 and FSDP do the same), accumulating in fp32.
-- clip_grad_norm: the global L2 norm over the shards (sums of squares of each
-- rank's pieces, summed over the shard group, then the tensor x pipeline group
-- as lunar.parallel.grad_norm does; never over replicas or domain peers, which
-- hold the same shard), every rank the same coefficient.
-- Reductions are fp32 ('avg' of f32 gradients) also under bf16.
local zero = {}

local Zero = {}
Zero.__index = Zero

--- Megatron-FSDP's names of the stages (data_parallel_sharding_strategy).
zero.NAMES = {[0] = 'no_shard', 'optim', 'optim_grads', 'optim_grads_params'}
local BY_NAME = {no_shard = 0, optim = 1, optim_grads = 2, optim_grads_params = 3}

local function stage_of(v)
  if type(v) == 'string' then return BY_NAME[v] end
  if math.type(v) == 'float' then v = math.tointeger(v) end
  if math.type(v) == 'integer' and v >= 0 and v <= 3 then return v end
  return nil
end

--- Parses the config value parallel.zero: nil, a stage (0-3 or a
-- Megatron-FSDP name) or {stage =, group_size =}.
-- @return {stage = 0..3, group_size = integer >= 0 (0: the whole
--   data-parallel group)}, or nil and a message naming the value
function zero.parse(v)
  if v == nil then return {stage = 0, group_size = 0} end
  local stage, gs = v, 0
  if type(v) == 'table' then
    for k in pairs(v) do
      if k ~= 'stage' and k ~= 'group_size' then
        return nil, string.format("has an unknown field '%s' (fields: stage, group_size)", tostring(k))
      end
    end
    stage, gs = v.stage, v.group_size or 0
    if math.type(gs) == 'float' then gs = math.tointeger(gs) or gs end
    if math.type(gs) ~= 'integer' or gs < 0 then
      return nil, string.format('group_size must be an integer >= 1 (0 or nil: the whole data-parallel group), ' ..
        'got %s', tostring(v.group_size))
    end
  end
  local s = stage_of(stage)
  if not s then
    return nil, string.format("stage must be 0, 1, 2, 3 or one of 'no_shard', 'optim', 'optim_grads', " ..
      "'optim_grads_params', got %s", type(stage) == 'string' and ("'" .. stage .. "'") or tostring(stage))
  end
  return {stage = s, group_size = gs}
end

--- Whether a parsed zero config fits a data-parallel size `dp`: nil, or a
-- message (starting "parallel.zero") naming both numbers.
function zero.validate(z, dp)
  if not z or z.stage == 0 or z.group_size == 0 then return nil end
  if dp % z.group_size ~= 0 then
    return string.format('parallel.zero.group_size %d does not divide the data-parallel size %d (the shard groups ' ..
      'are runs of group_size consecutive data-parallel ranks)', z.group_size, dp)
  end
  return nil
end

local numel = require('lunar.nn').numel

-- Elements [off, off + n) (0-based) of the 1-D tensor t, as a view shaped
-- `shape` (default 1-D). A view holds its storage until released (:free())
-- or collected, so the views made here are released explicitly once used:
-- the intermediate one at once.
local function slice(t, off, n, shape)
  local v = t:narrow(1, off + 1, n)
  if not shape then return v end
  local s = v:view(shape)
  v:free()
  return s
end

-- dst[doff, doff + n) = src[soff, soff + n) (0-based, 1-D tensors).
local function copy_range(dst, doff, src, soff, n)
  local a, b = slice(dst, doff, n), slice(src, soff, n)
  a:copy_(b)
  a:free(); b:free()
end

--- nn.materialize without storage, for stage 3: the model's paths, the
-- flat layout (model._offsets) and precision are set, and the init (seed,
-- opts as nn.materialize's) is kept for zero.new, which draws each gradient
-- group in a temporary of that group's size and keeps this rank's block: no
-- rank ever holds the whole model (a model larger than a rank's memory can be
-- built). The weights are those nn.materialize gives, bit for bit (each
-- parameter's stream depends only on seed and its name). Raises
-- nn.materialize's errors (precision, init scheme, bf16 on a CPU without it).
function zero.materialize_deferred(model, seed, opts)
  local nn = require('lunar.nn')
  local _, offsets, _, precision = nn.layout(model, opts, 3)
  if precision == 'bf16' then
    local ok, why = lunar.ops.bf16_supported(lunar.default_device())
    if not ok then error("materialize: precision = 'bf16': " .. why, 2) end
    model:apply(function(m) m.precision = 'bf16' end)
  end
  model._offsets, model._deferred_init = offsets, {seed = seed, opts = opts, precision = precision}
  return model
end

--- Shards a materialized model over the grid's data-parallel group (see the
-- module doc). Collective over the data-parallel group (one or two
-- comm:split when group_size is set; with domain parallelism, hybrid
-- stages 2 and 3 split grid.grad_group: collective over domain x data).
-- @param args {model = a materialized model with grad groups (for stages 2
--   and 3 a model with zero units: lunar.nn.ViT, nn.Sequential), grid = g, config = a
--   parsed zero config with stage >= 1, make_optimizer = function(pieces)
--   -> optimizer over the pieces (setup.optimizer), bucket_size = stage 1's
--   reducer bucket size}
-- @return the sharded state (fields in the module doc)
function zero.new(args)
  local model, g, cfg = args.model, args.grid, args.config
  assert(cfg and cfg.stage >= 1, 'zero.new: stage 1, 2 or 3')
  local deferred = model._deferred_init
  assert(model._offsets and (model._flat or (deferred and cfg.stage == 3)),
    'zero.new: materialize the model first (nn.materialize, or zero.materialize_deferred for stage 3)')
  local D = g.dp_size
  local S = (cfg.group_size == 0 or cfg.group_size > D) and D or cfg.group_size
  local self = setmetatable({model = model, grid = g, stage = cfg.stage, size = S, sync = true,
    stats = {early = 0, late = 0, gathers = 0, cold = 0}, inflight = {}, gathered = {},
    bf16 = model._flat_bf16 ~= nil or (deferred and deferred.precision == 'bf16')}, Zero)
  local dom, dr = g.domain_size or 1, g.domain_rank or 0
  if S == D then
    self.shard_group, self.rank = g.dp_group, g.dp_rank
  else
    local name = g.dp_group:name()
    self.shard_group = g.dp_group:split(g.dp_rank // S, g.dp_rank % S, name .. '/shard')
    self.rank = g.dp_rank % S
  end
  -- stages 2 and 3: the group over which finish() averages the reduce-scattered shard, the ranks
  -- holding the same shard index: the other replicas (hybrid sharding) x the domain ranks, one group
  if self.stage >= 2 and S < D and dom > 1 then
    self.replica_group = g.grad_group:split(g.dp_rank % S, (g.dp_rank // S) * dom + dr,
      g.grad_group:name() .. '/replica')
  elseif self.stage >= 2 and S < D then
    self.replica_group = g.dp_group:split(g.dp_rank % S, g.dp_rank // S, g.dp_group:name() .. '/replica')
  elseif self.stage >= 2 and dom > 1 then
    self.replica_group = g.domain_group
  end
  -- the first replica writes the shards of a checkpoint (of domain rank 0: the domain ranks hold the same)
  self.writes = g.dp_rank < S and (g.domain_rank or 0) == 0
  -- the groups, their ranges and this rank's blocks
  local order = model:grad_group_order()
  local by_key, params = {}, model:parameters()
  self.groups = {}
  for i, key in ipairs(order) do
    local grp = {key = key, index = i, lo = math.huge, n = 0, params = {}}
    self.groups[i], by_key[key] = grp, grp
  end
  for _, p in ipairs(params) do
    local grp = by_key[model:grad_group_of(p.name)]
    if not grp then error('zero: parameter ' .. p.name .. " is in no group of the model's grad_group_order", 2) end
    table.insert(grp.params, p)
    grp.lo, grp.n = math.min(grp.lo, model._offsets[p.name]), grp.n + numel(p.shape)
  end
  -- a group without parameters (a module of a MODEL's Sequential that has none) is no group here
  local nonempty = {}
  for _, grp in ipairs(self.groups) do
    if grp.n > 0 then nonempty[#nonempty + 1] = grp else by_key[grp.key] = nil end
  end
  self.groups = nonempty
  local total = 0
  for _, grp in ipairs(self.groups) do
    grp.L = (grp.n + S - 1) // S
    grp.shard_off = total          -- 0-based offset of this group's block in the shard buffers
    total = total + grp.L
    grp.sp = {}
    for _, p in ipairs(grp.params) do
      p.group_offset = model._offsets[p.name] - grp.lo        -- 0-based within the group
      if p.group_offset + numel(p.shape) > grp.n then
        error(string.format("zero: the parameters of group '%s' are not contiguous in the flat buffer", grp.key), 2)
      end
      if p.sequence_parallel and g.sequence_parallel and g.tp_size > 1 then table.insert(grp.sp, p) end
    end
  end
  self.by_key, self.shard_numel = by_key, total
  if self.stage == 3 and self.bf16 then self:plan_f32_parts() end
  -- stage 3: fp32 master weights of this rank's blocks; stages 1 and 2 step the model's own (whole) parameters
  self.shard_param = self.stage == 3 and lunar.zeros({math.max(total, 1)}) or nil
  self.shard_grad = self.stage >= 2 and lunar.zeros({math.max(total, 1)}) or nil
  -- this rank's blocks of the master weights, and the pieces the optimizer steps
  self.pieces = {}
  for _, grp in ipairs(self.groups) do
    local b0 = self.rank * grp.L                               -- block start within the group
    local len = math.max(0, math.min(grp.L, grp.n - b0))
    grp.own = len
    if len > 0 and self.shard_param and model._flat then
      copy_range(self.shard_param, grp.shard_off, model._flat, grp.lo - 1 + b0, len)
    elseif self.shard_param then
      -- deferred init: the group drawn whole in a temporary, this rank's block kept
      local tmp = lunar.empty({math.max(grp.n, 1)})
      for _, p in ipairs(grp.params) do
        local w = slice(tmp, p.group_offset, numel(p.shape), p.shape)
        require('lunar.nn').init_into(w, p, deferred.seed, deferred.opts)
        w:free()
      end
      if len > 0 then copy_range(self.shard_param, grp.shard_off, tmp, b0, len) end
      tmp:free()
    end
    for _, p in ipairs(grp.params) do
      local a, np = p.group_offset, numel(p.shape)
      local lo, hi = math.max(a, b0), math.min(a + np, b0 + len)
      if hi > lo then
        local sofs = grp.shard_off + (lo - b0) + 1
        local grad = self.stage >= 2 and self.shard_grad:narrow(1, sofs, hi - lo)
          or model._flat_grad:narrow(1, grp.lo + lo, hi - lo)
        local param = self.shard_param and self.shard_param:narrow(1, sofs, hi - lo)
          or model._flat:narrow(1, grp.lo + lo, hi - lo)
        table.insert(self.pieces, {name = p.name, param = param, grad = grad,
          shape = {hi - lo}, no_weight_decay = p.no_weight_decay, shard = p.shard, offset = lo - a,
          numel = np, full_shape = p.shape, group = grp.key})
      end
    end
  end
  if #self.pieces == 0 then
    error(string.format('zero: data-parallel rank %d holds no parameter element (%d elements over %d ranks)',
      g.dp_rank, total, S), 2)
  end
  self.inner = args.make_optimizer(self.pieces)
  self.optimizer = setmetatable({zero = self, lr = self.inner.lr, params = self.pieces}, {__index = function(t, k)
    return Zero.optimizer_methods[k] end})
  -- the gradient hooks
  if self.stage == 1 then
    self.reducer = require('lunar.parallel.reducer').new{model = model, grid = g, bucket_size = args.bucket_size}
  else
    self.reducer = self
    self.buckets = self.groups
    model.grad_ready_hook = function(key) self:ready(key) end
    if not model.zero_units then
      error(string.format('zero: stage %d needs a model that reports its units (lunar.nn.ViT, nn.Sequential); ' ..
        '%s does not', self.stage, tostring(model.__name)), 2)
    end
    model.zero_hook = function(event, keys) self:on(event, keys) end
    -- the units in forward order (each a list of group keys: those with parameters), for prefetching
    self.units, self.unit_of = {}, {}
    for _, u in ipairs(model:zero_units()) do
      local keys = {}
      for _, key in ipairs(u) do if by_key[key] then keys[#keys + 1] = key end end
      if #keys > 0 then
        self.units[#self.units + 1] = keys
        for _, key in ipairs(keys) do self.unit_of[key] = #self.units end
      end
    end
    -- no full gradient buffer: backward writes into each group's buffer while it runs (the views
    -- into the flat buffers released, so that their memory goes now, not at a later collection)
    local function drop(field)
      for _, p in ipairs(params) do
        local v = p.module[field(p)]
        if v then v:free() end
        p.module[field(p)] = nil
      end
    end
    drop(function(p) return 'grad_' .. p.local_name end)
    if model._flat_grad then model._flat_grad:free(); model._flat_grad = nil end
    if self.stage == 3 and model._flat then
      drop(function(p) return p.local_name end)
      drop(function(p) return p.local_name .. '_bf16' end)
      model._flat:free(); model._flat = nil
      if model._flat_bf16 then model._flat_bf16:free(); model._flat_bf16 = nil end
    end
    collectgarbage()      -- the intermediate views nn.materialize left to the collector
  end
  return self
end

-- ---- the sharded optimizer ----------------------------------------------------------------

Zero.optimizer_methods = {}
local OM = Zero.optimizer_methods

--- The learning rate of the next step.
function OM.set_lr(o, lr) o.lr = lr; o.zero.inner:set_lr(lr) end

--- One update of this rank's pieces, then (stages 1 and 2) the updated
-- blocks all-gathered into the model's parameters.
function OM.step(o)
  local z = o.zero
  z.inner:step()
  if z.stage < 3 then z:gather_into_flat() end
end

--- The inner optimizer's state (over this rank's pieces).
function OM.state_dict(o) return o.zero.inner:state_dict() end
function OM.load_state_dict(o, sd) return o.zero.inner:load_state_dict(sd) end

-- A group's block of the master weights (L elements), a tensor the caller
-- frees once its collective completed: a view of the shard (stage 3) or of
-- the model's parameters (stages 1, 2), or a zero-padded copy of them when
-- the block runs past the group's end.
function Zero:block(grp)
  if self.shard_param then return slice(self.shard_param, grp.shard_off, grp.L) end
  local b0 = self.rank * grp.L
  if grp.own == grp.L then return slice(self.model._flat, grp.lo - 1 + b0, grp.L) end
  local t = lunar.zeros({grp.L})
  if grp.own > 0 then copy_range(t, 0, self.model._flat, grp.lo - 1 + b0, grp.own) end
  return t
end

--- Stages 1 and 2: every group's blocks all-gathered (non-blocking, two
-- groups in flight) into the model's flat parameters, then the bf16 working
-- copy rounded from them.
function Zero:gather_into_flat()
  local model, S, reqs = self.model, self.size, {}
  local function complete(r)
    r.req:wait()
    copy_range(model._flat, r.grp.lo - 1, r.buf, 0, r.grp.n)
    r.buf:free(); r.block:free()
  end
  for _, grp in ipairs(self.groups) do
    local buf = lunar.empty({S * grp.L})
    local block = self:block(grp)
    reqs[#reqs + 1] = {grp = grp, buf = buf, block = block, req = self.shard_group:iall_gather(buf, block)}
    -- at most two groups in flight: the temporaries stay within two units
    if #reqs > 2 then complete(table.remove(reqs, 1)) end
  end
  for _, r in ipairs(reqs) do complete(r) end
  model:sync_working_weights()
end

--- Zeroes the gradients the next step accumulates (the rank's gradient
-- shard; stage 1: the full flat gradient).
function Zero:zero_grad()
  if self.stage == 1 then self.model:zero_grad() else self.shard_grad:zero_() end
end

--- The global L2 norm of the gradients over the shards (see the module
-- doc); scales every piece's gradient so it is at most max_norm (PyTorch's
-- clip_grad_norm_, eps 1e-6). Returns the norm before clipping.
function Zero:clip_grad_norm(max_norm)
  local g, ops = self.grid, lunar.ops
  local s = 0
  for _, pc in ipairs(self.pieces) do
    if pc.shard or g.tp_rank == 0 then s = s + ops.sum_squares(pc.grad) end
  end
  if self.size > 1 then s = self.shard_group:all_reduce_number(s, 'sum') end
  if g.tp_size * g.pp_size > 1 then s = g.mp_group:all_reduce_number(s, 'sum') end
  local norm = math.sqrt(s)
  local coef = max_norm / (norm + 1e-6)
  if coef < 1 then
    for _, pc in ipairs(self.pieces) do ops.scale_(pc.grad, coef) end
  end
  return norm
end

-- ---- stage 3: gathering the parameters of a unit --------------------------------------------

-- Whether the modules read parameter p only through its bf16 working copy
-- under precision = 'bf16' (Module:gemm_weight: the weights of Linear, Conv,
-- PatchEmbed, of two or more dimensions); the others (LayerNorm, biases,
-- class token, position embedding) are read in f32.
local function gemm_read(p)
  return #p.shape >= 2 and p.local_name:sub(-6) == 'weight'
end

-- Stage 3 under bf16: for each group and each rank r of the shard group, the
-- ranges of r's block that hold f32-read parameters ({goff = offset in the
-- group, len =}), their total (grp.f32_count[r]) and the largest (grp.f32_M).
function Zero:plan_f32_parts()
  for _, grp in ipairs(self.groups) do
    grp.f32_parts, grp.f32_M = {}, 0
    for r = 0, self.size - 1 do
      local b0, b1, parts, c = r * grp.L, math.min((r + 1) * grp.L, grp.n), {}, 0
      for _, p in ipairs(grp.params) do
        if not gemm_read(p) then
          local lo, hi = math.max(p.group_offset, b0), math.min(p.group_offset + numel(p.shape), b1)
          if hi > lo then parts[#parts + 1] = {goff = lo, len = hi - lo}; c = c + hi - lo end
        end
      end
      grp.f32_parts[r], grp.f32_M = parts, math.max(grp.f32_M, c)
    end
  end
end

-- Starts the all_gather of a group's parameters (nothing when already started).
-- Under bf16 (outside with_full_parameters) the rank's block is rounded to the
-- bf16 working copy first and that is what is gathered (half the bytes), with
-- the f32 master values of the parameters read in f32 (plan_f32_parts) packed
-- and gathered beside it.
function Zero:start_gather(grp)
  if self.gathered[grp.key] then return end
  local block, half = self:block(grp), self.bf16 and not self.full
  local st = {half = half, views = {}}
  if half then
    local M = math.max(grp.f32_M, 1)
    st.small, st.small_all = lunar.zeros({M}), lunar.empty({self.size * M})
    local pos = 0
    for _, part in ipairs(grp.f32_parts[self.rank]) do
      copy_range(st.small, pos, block, part.goff - self.rank * grp.L, part.len)
      pos = pos + part.len
    end
    local b16 = lunar.ops.cast_bf16(block)
    block:free()
    block = b16
    st.req_small = self.shard_group:iall_gather(st.small_all, st.small)
  end
  st.buf, st.block = lunar.empty({self.size * grp.L}, half and 'bf16' or 'f32'), block
  st.req = self.shard_group:iall_gather(st.buf, block)
  self.gathered[grp.key] = st
end

-- Waits for a group's gather and points its modules' parameters into it.
function Zero:finish_gather(grp)
  if not self.gathered[grp.key] then self.stats.cold = self.stats.cold + 1 end
  self:start_gather(grp)
  local st = self.gathered[grp.key]
  if st.req then
    self.stats.gathers = self.stats.gathers + 1
    st.req:wait(); st.req = nil
    st.block:free(); st.block = nil
    local buf16, buf32 = nil, st.buf
    if st.half then
      -- the gathered bf16 working copy; the f32 fields (read by LayerNorm, biases, embeddings) widened
      -- from it (FSDP's MixedPrecision(param_dtype = bf16) likewise computes with the rounded values)
      buf16 = st.buf
      local src = slice(buf16, 0, grp.n)
      buf32 = src:to('f32')
      src:free()
      st.buf32 = buf32
      -- the f32-read parameters: their master values, unpacked from each rank's part
      st.req_small:wait(); st.req_small = nil
      local M = math.max(grp.f32_M, 1)
      for r = 0, self.size - 1 do
        local pos = r * M
        for _, part in ipairs(grp.f32_parts[r]) do
          copy_range(buf32, part.goff, st.small_all, pos, part.len)
          pos = pos + part.len
        end
      end
      st.small:free(); st.small_all:free(); st.small, st.small_all = nil, nil
    elseif self.bf16 then
      buf16 = lunar.empty({grp.n}, 'bf16', st.buf:device())
      local src = slice(st.buf, 0, grp.n)
      lunar.ops.cast_bf16_(buf16, src)
      src:free()
      st.buf16 = buf16
    end
    for _, p in ipairs(grp.params) do
      local n = numel(p.shape)
      local v = slice(buf32, p.group_offset, n, p.shape)
      p.module[p.local_name] = v
      st.views[#st.views + 1] = v
      if buf16 then
        v = slice(buf16, p.group_offset, n, p.shape)
        p.module[p.local_name .. '_bf16'] = v
        st.views[#st.views + 1] = v
      end
    end
  end
end

-- Frees a gathered group (its modules' parameter fields become nil).
function Zero:release(grp)
  local st = self.gathered[grp.key]
  if not st then return end
  if st.req then st.req:wait() end
  if st.req_small then st.req_small:wait() end
  if st.small then st.small:free(); st.small_all:free() end
  if st.block then st.block:free() end
  for _, p in ipairs(grp.params) do
    p.module[p.local_name] = nil
    p.module[p.local_name .. '_bf16'] = nil
  end
  for _, v in ipairs(st.views) do v:free() end
  st.buf:free()
  if st.buf16 then st.buf16:free() end
  if st.buf32 then st.buf32:free() end
  self.gathered[grp.key] = nil
end

--- Gathers every group's parameters into the model (stage 3), runs fn(),
-- frees them again (FSDP's summon_full_params); for checkpoints and
-- gather_full_parameters. Stages 1 and 2: fn() (the parameters are whole).
-- Collective over the shard group. Returns fn's results.
function Zero:with_full_parameters(fn)
  if self.stage < 3 then return fn() end
  self.full = true       -- the f32 master weights, also under bf16
  for _, grp in ipairs(self.groups) do self:finish_gather(grp) end
  local res = table.pack(pcall(fn))
  for _, grp in ipairs(self.groups) do self:release(grp) end
  self.full = nil
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

--- The model's unit events (model.zero_hook): event is 'pre_forward',
-- 'post_forward', 'pre_backward' or 'post_backward', keys the unit's group
-- keys. Stage 3 gathers before and frees after each, prefetching the next
-- unit; stages 2 and 3 allocate the unit's gradient buffers before its backward.
function Zero:on(event, keys)
  local k
  for _, key in ipairs(keys) do k = k or self.unit_of[key] end
  if not k then return end        -- a unit without parameters (a MODEL's pooling, reshape)
  keys = self.units[k]
  if event == 'pre_forward' or event == 'pre_backward' then
    if self.stage == 3 then
      for _, key in ipairs(keys) do self:finish_gather(self.by_key[key]) end
      -- prefetch: the next unit in this pass's order
      local nxt = self.units[event == 'pre_forward' and k + 1 or k - 1]
      if nxt then for _, key in ipairs(nxt) do self:start_gather(self.by_key[key]) end end
    end
    if event == 'pre_backward' then
      for _, key in ipairs(keys) do
        local grp = self.by_key[key]
        local buf = lunar.zeros({self.size * grp.L})
        grp.grad_buf = buf
        for _, p in ipairs(grp.params) do
          p.module['grad_' .. p.local_name] = slice(buf, p.group_offset, numel(p.shape), p.shape)
        end
      end
    end
  elseif self.stage == 3 then
    for _, key in ipairs(keys) do self:release(self.by_key[key]) end
  end
end

-- ---- stages 2 and 3: the gradient hooks (the reducer's interface) ---------------------------

--- Before a backward (sync: whether it completes the step's gradients).
-- Stages 2 and 3 reduce-scatter every backward; sync only decides whether
-- finish() will be called.
function Zero:begin(sync) self.sync = sync and true or false end

-- Completes one reduce_scatter: its block added into the gradient shard.
local function complete(self, r)
  r.req:wait()
  local dst = slice(self.shard_grad, r.grp.shard_off, r.grp.L)
  lunar.ops.add_(dst, r.out)
  dst:free()
  r.out:free(); r.buf:free()
end

--- The hook: group `key`'s gradients are complete. Its reduce_scatter
-- starts (non-blocking); at most two stay in flight (older ones complete).
function Zero:ready(key)
  local grp = self.by_key[key]
  if not grp or not grp.grad_buf then return end
  for _, r in ipairs(self.inflight) do r.req:test() end
  if #grp.sp > 0 then
    for _, p in ipairs(grp.sp) do self.grid.tp_group:all_reduce(p.module['grad_' .. p.local_name], 'sum') end
  end
  local buf = grp.grad_buf
  grp.grad_buf = nil
  for _, p in ipairs(grp.params) do
    p.module['grad_' .. p.local_name]:free()
    p.module['grad_' .. p.local_name] = nil
  end
  local out = lunar.empty({grp.L})
  table.insert(self.inflight, {grp = grp, buf = buf, out = out,
    req = self.shard_group:ireduce_scatter(out, buf, 'avg')})
  self.stats.early = self.stats.early + 1
  while #self.inflight > 2 do complete(self, table.remove(self.inflight, 1)) end
end

--- Before the optimizer: completes every reduce_scatter in flight and, with
-- hybrid sharding and/or domain parallelism, averages the gradient shard over
-- the ranks that hold the same shard index (self.replica_group: the other
-- replicas x the domain ranks).
function Zero:finish()
  for _, r in ipairs(self.inflight) do complete(self, r) end
  self.inflight = {}
  if self.replica_group then self.replica_group:all_reduce(self.shard_grad, 'avg') end
end

return zero
