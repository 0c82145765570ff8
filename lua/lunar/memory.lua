--- lunar.memory: the memory model of a run, per rank, said before anything
-- is allocated (issue 11 "Memory, said before it is spent"; the strategy
-- search of lunar.strategy reads the same formulas).
--
--   local memory = require('lunar.memory')
--   local est = memory.estimate(cfg, {world = 4})     -- a resolved config
--   est.ranks[s]    per pipeline stage s (1-based; every rank of a stage holds the same):
--                   {stage=, first_block=, last_block=, psi= (parameters held by the rank),
--                    params=, working=, grads=, optimizer=, model_state=,
--                    activations= (peak of the step above the model state), input= (the batch),
--                    total=}   all in bytes
--   est.max         the largest total over the ranks (what MEMORY_BUDGET is held against)
--   print(memory.describe(est))
--   memory.check_budget(cfg, {world = N})   raises a user error naming what to change when
--                                           est.max > MEMORY_BUDGET (nothing is allocated)
--   memory.parse_bytes('2GiB') -> 2147483648;  memory.format_bytes(n) -> '2.0 GiB'
--
-- Model state (Rajbhandari et al. 2020, "ZeRO", sec. 3 and 5, with Lunar's
-- storage: nn.materialize keeps the fp32 parameters and fp32 gradients in two
-- flat buffers, precision = 'bf16' adds a bf16 working copy of every
-- parameter, optim.AdamW keeps two fp32 moments, SGD one momentum buffer or
-- none). Psi is the number of parameters a rank holds (its tensor shard of its
-- pipeline stage); N the ZeRO shard group (the data-parallel size, or
-- parallel.zero.group_size: hybrid sharding). Bytes per parameter:
--
--   stage   fp32 AdamW (ZeRO's)   bf16 AdamW (Lunar's storage)
--   0       16                    4 master + 2 working + 4 grad + 8 moments = 18
--   1       8 + 8/N               10 + 8/N     (moments sharded; the fp32 master stays whole:
--   2       4 + 12/N              6 + 12/N      it is the model's flat buffer, as in fp32)
--   3       16/N                  16/N         (the bf16 copy is made per gathered unit, below)
--
-- (ZeRO's paper counts the fp32 master with the optimizer state; were Lunar's
-- ZeRO to shard it at stage 1, bf16 stage 1 would be 6 + 12/N.) What a sharded
-- step holds only while it runs is counted in its step peak (activations), not
-- in the model state held between steps: stage 2 the fp32 gradient buffers of
-- the unit in backward (a block, or a checkpointed segment of blocks) and of
-- the two whose reduce_scatter may still be in flight, stage 3
-- that and the gathered parameters of two units (the one in use and the
-- prefetched one) in the dtype stage 3 gathers (bf16 under bf16, plus the
-- unit in use widened to fp32; memory.model_state's
-- `inflight`; measured in tests/mpi/test_memory.sh). The ZeRO stage and group are read from cfg.parallel.zero
-- (a number, a stage name of Megatron-FSDP, or {stage=, group_size=}; absent:
-- stage 0), or given as opts.zero.
--
-- Activations (the peak of one training step above the model state), from
-- what the code keeps: nn.Block's context (its input, the two LayerNorm
-- outputs and statistics, qkv, the attention output and log-sum-exp, the
-- residual sum, fc1's and GELU's outputs: 16 B*N*C values in fp32 at MLP
-- ratio 4, the residual stream f32 and the rest bf16 under precision =
-- 'bf16'); with tensor parallelism T the head-split tensors (qkv, attention,
-- MLP hidden) are 1/T; with sequence parallelism the residual stream and the
-- norms are 1/T and each ColumnParallelLinear keeps its gathered input
-- (Korthikanti et al. 2022, sec. 4). A checkpointed segment (nn.Checkpoint)
-- keeps only its input, and its backward replays its blocks (their whole
-- contexts alive at once). The backward of a block adds the gradient flowing
-- in and the MLP's two f32 hidden-size gradients; the last stage keeps the
-- final norm, pooled token and logits. Pipeline schedules keep several
-- micro-batches in flight (lunar.parallel.pipeline): GPipe all m, 1F1B
-- min(pipeline - stage, m) on stage `stage` (0-based); without a pipeline one
-- micro-batch of BATCH_SIZE / NUM_MICRO_BATCHES at a time. Every tensor is
-- rounded up to 256 bytes as the allocator does (core/alloc.c). Measured
-- against lunar.memory()'s peak in tests/lua/test_memory.lua and
-- tests/mpi/test_memory.sh (within 10%).
-- @module lunar.memory
local memory = {}

local KiB, MiB, GiB, TiB = 1024, 1024 ^ 2, 1024 ^ 3, 1024 ^ 4
local UNITS = {
  [''] = 1, b = 1, k = KiB, kb = 1000, kib = KiB, m = MiB, mb = 1000 ^ 2, mib = MiB,
  g = GiB, gb = 1000 ^ 3, gib = GiB, t = TiB, tb = 1000 ^ 4, tib = TiB,
}

--- A size in bytes from a number (bytes) or a string like '2GiB', '512 MiB',
-- '1.5G' (K/M/G/T and KiB..TiB are powers of 1024, KB..TB of 1000).
-- @return the integer number of bytes, or nil and a text saying what is wrong
function memory.parse_bytes(v)
  if math.type(v) == 'integer' then
    if v < 0 then return nil, 'must be >= 0' end
    return v
  end
  if type(v) == 'number' then
    if v ~= v or v < 0 or v == math.huge then return nil, 'must be a finite size >= 0' end
    return math.floor(v)
  end
  if type(v) ~= 'string' then return nil, "must be a number of bytes or a size like '2GiB'" end
  local num, unit = v:match('^%s*([%d%.]+[eE]?[%d]*)%s*([%a]*)%s*$')
  local x = num and tonumber(num)
  local mult = unit and UNITS[unit:lower()]
  if not x or not mult then
    return nil, "must be a number of bytes or a size like '2GiB', '512MiB', '1.5G' (units K, M, G, T, KiB..TiB, KB..TB)"
  end
  return math.floor(x * mult + 0.5)
end

--- n bytes as text: '512.0 KiB', '3.2 MiB', '1.50 GiB'.
function memory.format_bytes(n)
  if n >= GiB then return string.format('%.2f GiB', n / GiB) end
  if n >= MiB then return string.format('%.1f MiB', n / MiB) end
  return string.format('%.1f KiB', n / KiB)
end

--- The ZeRO stage and shard group a config asks for, through the one parser of
-- cfg.parallel.zero (lunar.parallel.zero.parse: a stage 0-3, a Megatron-FSDP
-- name or {stage=, group_size=}; nil -> stage 0; a value it refuses counts as
-- stage 0 here, the config check names it).
-- @return {stage=, group_size=} (group_size nil: the data-parallel size)
function memory.zero_spec(cfg)
  local z = type(cfg) == 'table' and type(cfg.parallel) == 'table' and cfg.parallel.zero or nil
  local spec = require('lunar.parallel.zero').parse(z) or {stage = 0, group_size = 0}
  return {stage = spec.stage, group_size = spec.group_size ~= 0 and spec.group_size or nil}
end

local ROUND = 256
local function r256(n) return n <= 0 and 0 or ((n + ROUND - 1) // ROUND) * ROUND end

--- The model-state bytes of a rank holding psi parameters.
-- @param psi integer parameters held by the rank
-- @param opts {precision='fp32'|'bf16', optimizer='adamw'|'sgd', momentum=0.9, zero=0..3,
--   shards=N (ZeRO shard group size), unit=largest unit's parameter count (stage 3)}
-- @return {params=, working=, grads=, optimizer=, total=, inflight=} bytes; inflight (stages 2, 3;
--   needs opts.unit) is what the step adds while it runs (the unit buffers), not part of total
function memory.model_state(psi, opts)
  opts = opts or {}
  local stage, N = opts.zero or 0, math.max(opts.shards or 1, 1)
  local bf16 = opts.precision == 'bf16'
  local moments = 8
  if opts.optimizer == 'sgd' then moments = (opts.momentum or 0.9) ~= 0 and 4 or 0 end
  local function shard(bytes, on) return on and math.ceil(bytes / N) or bytes end
  local s = {
    params = shard(4 * psi, stage >= 3),
    working = (bf16 and stage < 3) and 2 * psi or 0,   -- stage 3 rounds each gathered unit (zero.lua)
    grads = shard(4 * psi, stage >= 2),
    optimizer = shard(moments * psi, stage >= 1),
    inflight = 0,
  }
  if stage >= 2 and opts.unit then
    -- the fp32 gradient buffers of three units (zero.lua: the one in backward, Zero:on 'pre_backward',
    -- and up to two whose reduce_scatter is still in flight, Zero:ready: MPI progresses them only when
    -- called, so on a large model they are), and at stage 3 the gathered parameters of two units
    -- (current and prefetched): fp32, or under bf16 the gathered bf16 working copies and the current
    -- unit's fp32 fields (widened, the f32-read parameters' masters unpacked)
    s.inflight = 3 * r256(4 * opts.unit)
    if stage >= 3 then
      s.inflight = s.inflight + (bf16 and 2 * r256(2 * opts.unit) + r256(4 * opts.unit) or 2 * r256(4 * opts.unit))
    end
  end
  if stage == 0 then
    -- unsharded: the allocator's rounding of the (three or four) flat buffers
    s.params, s.grads = r256(s.params), r256(s.grads)
    s.working, s.optimizer = r256(s.working), (moments // 4) * r256(4 * psi)
  end
  s.total = s.params + s.working + s.grads + s.optimizer
  return s
end

--- The activation bytes of one transformer block for a micro-batch.
-- @param d {B=micro-batch, N=tokens, C=width, hidden=MLP width, heads=, T=tensor size,
--   sp=sequence parallel, bf16=precision is bf16}
-- @return kept (bytes its forward keeps until its backward, its input included),
--   input (bytes of its input), extra (bytes its backward adds at its peak over kept)
function memory.block(d)
  local B, N, C, H, T = d.B, d.N, d.C, d.hidden, d.T or 1
  local lp = d.bf16 and 2 or 4
  local n = d.sp and N // T or N                 -- tokens of the residual stream on this rank
  local x = r256(B * n * C * 4)                  -- block input, residual sum (f32)
  local norm = r256(B * n * C * lp)              -- a LayerNorm output
  local stats = 2 * r256(B * n * 4)              -- its mean and rstd
  local gathered = d.sp and r256(B * N * C * lp) or 0   -- ColumnParallelLinear's gathered input
  local qkv = r256(B * N * 3 * C // T * lp)
  local o = r256(B * N * C // T * lp)
  local lse = r256(B * (d.heads // T) * N * 4)
  local hid = r256(B * N * H // T * lp)          -- fc1 output, GELU output
  local kept = 2 * x + 2 * norm + 2 * stats + 2 * gathered + qkv + o + lse + 2 * hid
  -- backward: the incoming gradient (f32), then fc2's input gradient (f32, hidden/T) and
  -- GELU's (f32; bf16 under bf16: nn.MLP), GELU's input released after; with sequence
  -- parallelism fc2's backward first all-gathers the gradient (a [T, B, n, C] buffer and its
  -- permuted copy)
  local dy = x
  local dhid = r256(B * N * H // T * 4)
  local extra = dy + dhid + r256(B * N * H // T * lp) - hid
  if d.sp then extra = math.max(extra, dy + 2 * r256(B * N * C * 4)) end
  return kept, x, extra
end

--- The peak activation bytes of a pipeline stage (or the whole model) over
-- one training step.
-- @param d as memory.block, plus classes=, patch_dim= (C_in * patch^dims), images= (pixels per
--   image times channels), first=, last= (the stage holds the embedding / the head), inflight=
--   (micro-batches whose contexts are alive at once), units = list of {blocks=n, checkpoint=bool}
--   in forward order (a checkpointed unit of n blocks keeps only its input)
-- @return peak bytes, kept bytes of one micro-batch
function memory.stage_activations(d)
  local B, N, C, T = d.B, d.N, d.C, d.T or 1
  local lp = d.bf16 and 2 or 4
  local kept_b, in_b, extra_b = memory.block(d)
  -- what stays alive for the whole micro-batch outside the blocks
  local base = 0
  if d.first then base = base + r256(B * (N - 1) * d.patch_dim * 4) end   -- patchify output
  local head_kept, head_extra, dlogits = 0, 0, 0
  if d.last then
    -- the final norm's input (whole tokens), statistics and output, the pooled class token, the logits
    local x_last, h, pooled, logits = r256(B * N * C * 4), r256(B * N * C * lp), r256(B * C * lp),
      r256(B * d.classes * 4)
    head_kept = x_last + 2 * r256(B * N * 4) + h + pooled + logits
    -- backward (nn.ViT, lunar.engine): dlogits (alive until the model's backward ends), the logits
    -- and the pooled token released, dpooled and the zero-filled gradient of the norm output, then
    -- h released and the norm's dx
    dlogits = r256(B * d.classes * 4)
    local dpooled = r256(B * C * 4)
    head_extra = dlogits + math.max(0, -logits - pooled + math.max(dpooled + x_last, 2 * x_last - h))
  end
  local unit_kept, unit_extra = {}, {}
  for i, u in ipairs(d.units) do
    -- a unit may carry its own block's bytes (a layerwise block: another tensor size and batch)
    local kb, ib, eb = u.kept or kept_b, u.input or in_b, u.extra or extra_b
    if u.checkpoint then
      unit_kept[i] = ib
      unit_extra[i] = u.blocks * kb - ib + eb     -- the replayed contexts
    else
      unit_kept[i] = u.blocks * kb
      unit_extra[i] = eb
    end
  end
  local blocks_kept = 0
  for _, k in ipairs(unit_kept) do blocks_kept = blocks_kept + k end
  local kept = base + blocks_kept + head_kept
  local peak = kept + head_extra
  local below = base + blocks_kept
  for i = #d.units, 1, -1 do
    peak = math.max(peak, below + unit_extra[i] + dlogits)
    below = below - unit_kept[i]
  end
  local inflight = math.max(d.inflight or 1, 1)
  return (inflight - 1) * kept + peak, kept
end

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

--- The layout a config asks for on `world` ranks: {dp=, tp=, pp=, domain=, sp=, schedule=, splits=}
-- (dp = world / (pipeline x tensor x domain) unless parallel.data names it).
function memory.layout(cfg, world)
  local par = cfg.parallel or {}
  local tensor = par.tensor
  local tp = 1
  if type(tensor) == 'table' then tp = (tensor.mode ~= 'none' and tensor.mode ~= nil) and (tensor.size or 1) or 1
  elseif type(tensor) == 'number' then tp = tensor end
  local pp = par.pipeline or 1
  local grid = require('lunar.parallel.grid')
  local dom = grid.requested_domain(par)
  local dp = (par.data or 0) > 0 and par.data or math.max(1, (world or pp * tp * dom) // (pp * tp * dom))
  local splits = grid.partition(cfg.DEPTH, pp, par.pipeline_split)
  return {dp = dp, tp = tp, pp = pp, domain = dom, sp = par.sequence_parallel and tp > 1 or false,
    schedule = par.pipeline_schedule or '1f1b', splits = splits}
end

--- The model state per rank of a run whose activations this module does not
-- model (a MODEL: models as code or MODEL = 'hybrid_vit', data x domain
-- parallel, every rank holding the whole model): memory.model_state of its
-- psi parameters over the ZeRO shard group. Under domain parallelism that
-- group is the data-parallel group of each domain coordinate
-- (lunar.parallel.zero): parallel.zero.group_size, or data = world / (domain
-- x pipeline x tensor), never data x domain (the domain ranks of an image
-- hold the same shard, so the domain size does not divide the state).
-- @param cfg a resolved config
-- @param psi integer the model's parameter count
-- @param opts {world=}
-- @return {layout = memory.layout(cfg, world), zero = memory.zero_spec(cfg), shards =, state = {params=,
--   working=, grads=, optimizer=, total=} bytes}
function memory.replicated_state(cfg, psi, opts)
  local lay = memory.layout(cfg, (opts or {}).world)
  local zero = memory.zero_spec(cfg)
  local shards = zero.group_size or lay.dp
  return {layout = lay, zero = zero, shards = shards, state = memory.model_state(psi, {precision = cfg.precision,
    optimizer = cfg.OPTIMIZER, momentum = cfg.MOMENTUM, zero = zero.stage, shards = shards})}
end

--- memory.replicated_state's result as one line of text.
function memory.describe_replicated(r)
  local fb, lay, st = memory.format_bytes, r.layout, r.state
  return string.format('model state per rank (lunar.memory; data %d%s, ZeRO stage %d%s): parameters %s%s, ' ..
    'gradients %s, optimizer state %s; total %s (the activations of a MODEL are not modelled)', lay.dp,
    lay.domain > 1 and string.format(' x domain %d', lay.domain) or '', r.zero.stage, r.zero.stage > 0 and
    string.format(' over %d ranks%s', r.shards, lay.domain > 1 and ' of each domain coordinate' or '') or '',
    fb(st.params), st.working > 0 and (' + bf16 copy ' .. fb(st.working)) or '', fb(st.grads), fb(st.optimizer),
    fb(st.total))
end

--- The ViT stage a rank of pipeline stage `s` (0-based) builds, not materialized.
local function stage_model(cfg, lay, s)
  local plain = require('lunar.models').vit(cfg)
  local o = {}
  for k, v in pairs(plain.opts) do o[k] = v end
  if lay.tp > 1 then
    o.tp = require('lunar.parallel.tensor_1d').new{size = lay.tp, rank = 0, sequence_parallel = lay.sp}
  end
  if lay.pp > 1 then
    local first = 0
    for i = 1, s do first = first + lay.splits[i] end
    o.stage = {first_block = first, last_block = first + lay.splits[s + 1] - 1}
  end
  local bt = cfg.parallel and cfg.parallel.block_tensor
  if bt then
    o.block_tp = function(i)
      local t = bt[i + 1]
      return t > 1 and require('lunar.parallel.tensor_1d').new{size = t, rank = 0} or nil
    end
  end
  return require('lunar.nn').ViT(o)
end

--- The memory of every rank of a config's run (see the module doc).
-- @param cfg a resolved config (lunar.config.load) of the built-in ViT (MODEL = nil)
-- @param opts {world= ranks (for the data-parallel size; default data x pipeline x
--   tensor with data from parallel.data or 1), zero= {stage=, group_size=} (default
--   memory.zero_spec(cfg))}
-- @return {ranks = {per pipeline stage}, max=, layout=, zero=, shards=}
function memory.estimate(cfg, opts)
  opts = opts or {}
  local lay = memory.layout(cfg, opts.world)
  local zero = opts.zero or memory.zero_spec(cfg)
  local shards = zero.group_size or lay.dp
  local m = cfg.NUM_MICRO_BATCHES or 1
  local B = cfg.BATCH_SIZE // m
  local est = {ranks = {}, max = 0, layout = lay, zero = zero, shards = shards, micro_batch = B}
  for s = 0, lay.pp - 1 do
    local model = stage_model(cfg, lay, s)
    local psi = model:num_parameters()
    -- the largest zero unit's parameters (a block, or a checkpointed segment of blocks)
    local unit = 0
    for _, u in ipairs(model.units) do
      local n = 0
      for i = u.first, u.last do n = n + model.blocks[tostring(i)]:num_parameters() end
      unit = math.max(unit, n)
    end
    local st = memory.model_state(psi, {precision = cfg.precision, optimizer = cfg.OPTIMIZER,
      momentum = cfg.MOMENTUM, zero = zero.stage, shards = shards, unit = unit})
    local units = {}
    local bt = cfg.parallel and cfg.parallel.block_tensor
    for i, u in ipairs(model.units) do
      units[i] = {blocks = u.last - u.first + 1, checkpoint = u.module.__name == 'Checkpoint'}
      local t = bt and bt[u.first + 1] or 1
      if t > 1 then
        -- parallel.block_tensor (lunar.parallel.layerwise): the block runs on its tensor group's gathered
        -- t x B samples, which its wrapper keeps besides this rank's input; backward gathers dy too
        local k, _, e = memory.block{B = t * B, N = model.num_tokens, C = cfg.HIDDEN_SIZE,
          hidden = model.blocks[tostring(u.first)].mlp.hidden, heads = cfg.NUM_HEADS, T = t,
          bf16 = cfg.precision == 'bf16'}
        local own = r256(B * model.num_tokens * cfg.HIDDEN_SIZE * 4)
        units[i].kept, units[i].input, units[i].extra = k + own, own, e + own
      end
    end
    local inflight = 1
    if lay.pp > 1 then inflight = lay.schedule == 'gpipe' and m or math.min(lay.pp - s, m) end
    local patch_dim = cfg.IN_CHANS * cfg.PATCH_SIZE ^ (cfg.IMG_DIMS or 2)
    local act = memory.stage_activations{B = B, N = model.num_tokens, C = cfg.HIDDEN_SIZE,
      hidden = model.blocks[tostring(model.first_block)].mlp.hidden, heads = cfg.NUM_HEADS, T = lay.tp,
      sp = lay.sp, bf16 = cfg.precision == 'bf16', classes = cfg.NUM_CLASSES, patch_dim = math.tointeger(patch_dim),
      first = model.is_first, last = model.is_last, inflight = inflight, units = units}
    local img = cfg.IN_CHANS * cfg.IMG_SIZE ^ (cfg.IMG_DIMS or 2)
    local input = r256(math.tointeger(cfg.BATCH_SIZE * img) * 4) + r256(cfg.BATCH_SIZE * 4)
    local r = {stage = s, first_block = model.first_block, last_block = model.last_block, psi = psi,
      params = st.params, working = st.working, grads = st.grads, optimizer = st.optimizer,
      model_state = st.total, activations = act + st.inflight, input = input, inflight = inflight}
    r.total = r.model_state + r.activations + r.input
    est.ranks[s + 1] = r
    est.max = math.max(est.max, r.total)
  end
  return est
end

--- The estimate as text: one line per pipeline stage, then what the most
-- loaded rank needs.
function memory.describe(est)
  local fb = memory.format_bytes
  local lay = est.layout
  local lines = {string.format('memory per rank (lunar.memory; data %d x pipeline %d x tensor %d%s, ZeRO stage %d%s, ' ..
    'micro-batch %d):', lay.dp, lay.pp, lay.tp, lay.sp and ' sequence parallel' or '', est.zero.stage,
    est.zero.stage > 0 and string.format(' over %d ranks', est.shards) or '', est.micro_batch)}
  for _, r in ipairs(est.ranks) do
    local who = lay.pp > 1 and string.format('stage %d (blocks %d-%d, %d micro-batch%s in flight)', r.stage,
      r.first_block, r.last_block, r.inflight, r.inflight == 1 and '' or 'es') or 'every rank'
    lines[#lines + 1] = string.format('  %s: parameters %s%s, gradients %s, optimizer state %s, activations %s ' ..
      '(peak), batch %s; total %s', who, fb(r.params), r.working > 0 and (' + bf16 copy ' .. fb(r.working)) or '',
      fb(r.grads), fb(r.optimizer), fb(r.activations), fb(r.input), fb(r.total))
  end
  return table.concat(lines, '\n')
end

--- What to change when the estimate exceeds a budget: the options that lower
-- it, most effective first, each with the total it would give.
local function remedies(cfg, est, opts)
  local out = {}
  local function try(label, over, zero)
    local c = require('lunar.schema').deep_copy(cfg)
    over(c)
    local ok, e = pcall(memory.estimate, c, {world = opts.world, zero = zero})
    if ok then out[#out + 1] = {label = label, max = e.max} end
  end
  local ac = require('lunar.models').activation_checkpointing(cfg)
  if not ac or ac.granularity ~= 'full' then
    try("activation_checkpointing = {granularity = 'full'} (or CHECKPOINT = true)", function(c) c.CHECKPOINT = true end)
  end
  if est.zero.stage < 3 and est.layout.dp > 1 then
    try('parallel.zero = 3 (ZeRO-3: parameters, gradients and optimizer state sharded over the data-parallel ranks)',
      function(c) c.parallel.zero = {stage = 3, group_size = est.zero.group_size or 0} end,
      {stage = 3, group_size = est.zero.group_size})
  end
  local lay = est.layout
  for _, t in ipairs({2, 4, 8}) do
    if t > lay.tp and cfg.NUM_HEADS % t == 0 then
      try(string.format('parallel.tensor = {mode = \'1d\', size = %d} (%d times the ranks, or fewer data ranks)',
        t, t // lay.tp),
        function(c) c.parallel.tensor = {mode = '1d', size = t} end)
      break
    end
  end
  if cfg.BATCH_SIZE > 1 then
    try(string.format('BATCH_SIZE = %d', cfg.BATCH_SIZE // 2), function(c)
      c.BATCH_SIZE = c.BATCH_SIZE // 2
      if c.BATCH_SIZE % (c.NUM_MICRO_BATCHES or 1) ~= 0 then c.NUM_MICRO_BATCHES = 1 end
    end)
  end
  table.sort(out, function(a, b) return a.max < b.max end)
  return out
end

--- Raises a user error (lunar.error) when the config's MEMORY_BUDGET (bytes
-- per rank; nil or 0: none) is below the estimate of its most loaded rank,
-- naming the components and what to change. Allocates nothing; the same
-- answer on every rank (call it through parallel.same_on_every_rank).
-- @param cfg a resolved config
-- @param opts {world=}
-- @return the estimate, or nil for a MODEL config (models as code: not modelled)
function memory.check_budget(cfg, opts)
  local budget = cfg.MEMORY_BUDGET
  if budget == nil or budget == 0 or budget == '' then return nil end
  if cfg.MODEL ~= nil and cfg.MODEL ~= 'vit' then return nil end
  budget = assert(memory.parse_bytes(budget))
  local est = memory.estimate(cfg, opts)
  if est.max <= budget then return est end
  local worst
  for _, r in ipairs(est.ranks) do if r.total == est.max then worst = r break end end
  local fb = memory.format_bytes
  local msg = {string.format('MEMORY_BUDGET %s per rank is less than the %s a rank of this run needs ' ..
    '(%sparameters %s, gradients %s, optimizer state %s, activations %s, batch %s); nothing was allocated. ' ..
    'To fit, change:', fb(budget), fb(est.max), est.layout.pp > 1 and string.format('pipeline stage %d: ', worst.stage) or '',
    fb(worst.params + worst.working), fb(worst.grads), fb(worst.optimizer), fb(worst.activations), fb(worst.input))}
  for _, r in ipairs(remedies(cfg, est, opts or {})) do
    msg[#msg + 1] = string.format('  %s -> %s%s', r.label, fb(r.max), r.max <= budget and ' (fits)' or '')
  end
  lunar.error(table.concat(msg, '\n'))
end

return memory
