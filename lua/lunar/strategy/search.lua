--- lunar.strategy.search: Galvatron's strategy search (Miao et al. 2022,
-- "Galvatron: Efficient Transformer Training over Multiple GPUs Using
-- Automatic Parallelism", sec. 3-4; its dynamic_programming.py): for each
-- pipeline degree, tensor size, ZeRO stage, micro-batch count and global
-- batch, a dynamic program over the blocks of each pipeline stage picks every
-- block's strategy under the memory budget (the knapsack dimension), with the
-- re-sharding cost between adjacent blocks of different tensor sizes; the
-- fastest combination that fits wins. `lunar search` is its command line.
--
--   local search = require('lunar.strategy.search')
--   local res = search.run(cfg, prof, {world = 4, budget = 2^30})
--   res.best, res.ranked (fastest first; each {pp=, tp=, dp=, zero=, m=, global_batch=,
--     blocks = {strategy per block}, time=, memory = {per stage}, max_memory=, fits=, runnable=})
--   search.write_config(cfg, res.best, 'strategy.lua')
--
-- The cost model (constants from the profile, lunar.strategy.profile; times per
-- optimizer step in seconds, memory per rank in bytes):
--   block i with tensor size t, data size d, micro-batch b = global batch / (d m):
--     compute  f = fwd_t(b), bw = bwd_t(b) (+ f when checkpointed: the replay)
--     data-parallel sync of its 4 params/t bytes over d ranks, once per step:
--              stage 0/1 all_reduce (+ all_gather of the updated shard at 1),
--              2 reduce_scatter + all_gather, 3 reduce_scatter + 2 m all_gathers;
--              overlapped with the backward: max(0, comm - bw) + (overlap - 1) bw
--     optimizer per_param * params/t (/ d when ZeRO shards it)
--   a stage's step: (m + pp - 1) (sum of its blocks' f + bw, the embedding/head time
--     on the first/last stage, the point-to-point sends of b*N*C*4 bytes both ways)
--     + its data-parallel sync and optimizer time; the run's step: the slowest
--     stage (a pipeline flushes every step: GPipe and 1F1B alike, Narayanan et al. 2021)
--   re-sharding between blocks of tensor sizes t' != t: an all_gather of the
--     b*N*C*4-byte activation over max(t, t') ranks forward and backward
--   memory of a stage's rank (the knapsack): lunar.memory.model_state of each
--     block's params/t (its ZeRO stage over d) and of the embedding/head;
--     activations: each block keeps kept_t (input_t when checkpointed) bytes per
--     sample of b (the profile's), times the micro-batches 1F1B keeps in flight
--     (min(pp - stage, m)), plus a reserve for the largest backward transient
--     (extra_t; with checkpointed blocks also kept_t - input_t, a replay: the
--     program runs once without and once with checkpointing) and the
--     embedding/head activations (lunar.memory.stage_activations). The memory
--     printed for a runnable strategy is lunar.memory's estimate of its config
--     (`estimate`; the reserve above, `max_memory`, is an upper bound)
--
-- What Lunar runs (`runnable`: the strategy's config loads and its layout
-- validates): one tensor size for every block (global tensor, pipeline and
-- data sizes) with per-block activation checkpointing
-- (activation_checkpointing.blocks); with opts.layerwise also per-block tensor
-- sizes (parallel.block_tensor, lunar.parallel.layerwise) and placements
-- (consecutive or strided tensor groups, parallel.block_tensor_consec;
-- Galvatron's tp_consec: the profile's strided collectives for the block's
-- tensor group, its data-parallel group the other placement) over a base of
-- data parallelism only (pipeline 1, no ZeRO). ZeRO stages 1-3 are in
-- the search space and flagged: they need sharded data parallelism
-- (parallel.zero), which this build's schema may lack (then the best runnable
-- strategy is the one written).
-- @module lunar.strategy.search
local memory = require('lunar.memory')
local models = require('lunar.models')
local grid = require('lunar.parallel.grid')

local search = {}

local function poly(f, b) return f[1] + f[2] * b end

-- The profile's alpha + beta * bytes of op over g ranks placed consecutively or strided
-- (placement 'consecutive' | 'strided'; a profile without the strided figure: the consecutive one).
local function comm_cost(prof, op, g, bytes, placement)
  if g <= 1 or bytes <= 0 then return 0 end
  local by = prof.comm[op] or {}
  local c = placement == 'strided' and by.strided and by.strided[tostring(g)] or nil
  c = c or (by.consecutive and by.consecutive[tostring(g)])
  if not c then return math.huge end
  return c.alpha + c.beta * bytes
end

--- The placements of a strategy's groups: the tensor group's ('consecutive' or
-- 'strided': s.consec == false, Galvatron's tp_consec = 0) and the data-parallel
-- group's (the other one when both have more than one rank; consecutive else).
function search.placements(s)
  local tp = s.consec == false and 'strided' or 'consecutive'
  local dp = (s.tp > 1 and s.dp > 1 and tp == 'consecutive') and 'strided' or 'consecutive'
  return tp, dp
end

--- Whether ZeRO stages can be written into a config this build reads.
function search.zero_supported()
  return require('lunar.schema').get('parallel.zero') ~= nil
end

-- The parameters outside the blocks: {first = embedding, last = final norm and head}.
local function other_params(cfg)
  local m = models.vit(cfg)
  local first = m.patch_embed:num_parameters()
  for _, name in ipairs({'cls_token', 'pos_embed'}) do
    for _, p in ipairs(m:parameters()) do
      if p.name == name then
        local n = 1
        for _, s in ipairs(p.shape) do n = n * s end
        first = first + n
      end
    end
  end
  return {first = first, last = m.norm:num_parameters() + m.head:num_parameters()}
end

--- The time of one block under strategy s = {tp=, dp=, zero=, ckpt=, consec=} at
-- micro-batch b, m micro-batches, pipeline pp: per-micro-batch compute and
-- per-step data-parallel sync plus optimizer (seconds). The profile's block
-- times are measured on consecutive tensor groups; a strided group (s.consec
-- == false) adds the difference of its four all_reduces per micro-batch
-- (Megatron's two forward, two backward) of the b x N x C activation
-- (opts.act_bytes per sample), and its data-parallel group is consecutive.
function search.block_time(prof, s, b, m, act_bytes)
  local blk = prof.block.tp[tostring(s.tp)]
  local tpp, dpp = search.placements(s)
  local f = poly(blk.fwd, b)
  local bw = poly(blk.bwd, b) + (s.ckpt and f or 0)
  if tpp == 'strided' and s.tp > 1 and act_bytes then
    local x = b * act_bytes
    local d = comm_cost(prof, 'all_reduce', s.tp, x, 'strided') - comm_cost(prof, 'all_reduce', s.tp, x)
    f, bw = f + 2 * d, bw + 2 * d + (s.ckpt and 2 * d or 0)
  end
  local bytes = 4 * prof.block.params / s.tp
  local comm = 0
  if s.dp > 1 then
    if s.zero <= 1 then
      comm = comm_cost(prof, 'all_reduce', s.dp, bytes, dpp) +
        (s.zero == 1 and comm_cost(prof, 'all_gather', s.dp, bytes, dpp) or 0)
    elseif s.zero == 2 then
      comm = comm_cost(prof, 'reduce_scatter', s.dp, bytes, dpp) + comm_cost(prof, 'all_gather', s.dp, bytes, dpp)
    else
      comm = comm_cost(prof, 'reduce_scatter', s.dp, bytes, dpp) + 2 * m * comm_cost(prof, 'all_gather', s.dp, bytes, dpp)
    end
  end
  local sync = s.dp > 1 and (math.max(0, comm - bw) + (prof.overlap - 1) * bw) or 0
  local opt = prof.optimizer.per_param * prof.block.params / s.tp / ((s.zero >= 1 and s.dp > 1) and s.dp or 1)
  return f + bw, sync + opt
end

--- Activation bytes of a block under s at micro-batch b: kept until its
-- backward, and its backward's transient above that.
function search.block_memory(prof, s, b)
  local act = prof.block.tp[tostring(s.tp)].act
  local kept = (s.ckpt and act.input or act.kept) * b
  local transient = act.extra * b + (s.ckpt and (act.kept - act.input) * b or 0)
  return kept, transient
end

-- Model-state bytes of n parameters on a rank under strategy s.
local function state_bytes(cfg, n, s)
  return memory.model_state(n, {precision = cfg.precision, optimizer = cfg.OPTIMIZER, momentum = cfg.MOMENTUM,
    zero = s.zero, shards = s.dp}).total
end

--- The dynamic program over one stage's blocks (Galvatron's
-- f[v][s] = min over s' of f[v - mem(i, s)][s'] + inter(s', s) + time(i, s)).
-- @param items list of blocks, each {cands = {{s=, time=, mem=}}} (mem in knapsack units)
-- @param V capacity (units)
-- @param inter function(s_prev, s) -> time of re-sharding between adjacent blocks
-- @return best total time, the chosen candidate per block (nil, nil when nothing fits)
function search.dp(items, V, inter)
  local INF = math.huge
  local L = #items
  if L == 0 then return 0, {} end
  -- f[i][k][v]: best time of blocks 1..i with block i on candidate k using v units
  local f, from = {}, {}
  for i = 1, L do
    f[i], from[i] = {}, {}
    for k = 1, #items[i].cands do
      f[i][k], from[i][k] = {}, {}
      for v = 0, V do f[i][k][v] = INF end
    end
  end
  for k, c in ipairs(items[1].cands) do
    if c.mem <= V then f[1][k][c.mem] = c.time end
  end
  for i = 2, L do
    for k, c in ipairs(items[i].cands) do
      for kp, cp in ipairs(items[i - 1].cands) do
        local move = inter(cp.s, c.s)
        local prev = f[i - 1][kp]
        for v = 0, V - c.mem do
          local t = prev[v]
          if t < INF then
            local nt = t + move + c.time
            local nv = v + c.mem
            if nt < f[i][k][nv] then f[i][k][nv] = nt; from[i][k][nv] = {kp, v} end
          end
        end
      end
    end
  end
  local best, bk, bv = INF, nil, nil
  for k = 1, #items[L].cands do
    for v = 0, V do
      if f[L][k][v] < best then best, bk, bv = f[L][k][v], k, v end
    end
  end
  if not bk then return nil, nil end
  local chosen = {}
  local k, v = bk, bv
  for i = L, 1, -1 do
    chosen[i] = items[i].cands[k]
    if i > 1 then k, v = from[i][k][v][1], from[i][k][v][2] end
  end
  return best, chosen
end

local function pow2_divisors(n, limit)
  local out, t = {}, 1
  while t <= n and t <= (limit or n) do
    if n % t == 0 then out[#out + 1] = t end
    t = t * 2
  end
  return out
end

--- Searches; see the module doc.
-- @param cfg a resolved config (the model; its layout keys are what is searched)
-- @param prof a profile (lunar.strategy.profile.read)
-- @param opts {world = ranks, budget = bytes per rank, global_batches = list (default the
--   config's BATCH_SIZE x data), zero = list of stages (default {0, 1, 2, 3}),
--   layerwise = per-block tensor sizes and placements too, global = every block alike (all checkpointed or
--   none: no layerwise choice, for comparison), units = knapsack resolution (default 256)}
-- @return {ranked = every combination that fits, fastest first; best; smallest = the least
--   memory of any combination (when nothing fits); considered = combinations tried}
function search.run(cfg, prof, opts)
  local W, budget = opts.world, opts.budget
  local units = opts.units or 256
  local unit = math.max(1, budget / units)
  local depth = cfg.DEPTH
  local N, C = cfg.SEQ_LENGTH, cfg.HIDDEN_SIZE
  local others = other_params(cfg)
  local tps = {}
  for k in pairs(prof.block.tp) do tps[#tps + 1] = math.tointeger(tonumber(k)) end
  table.sort(tps)
  local lay0 = memory.layout(cfg, W)
  local gbs = opts.global_batches or {cfg.BATCH_SIZE * lay0.dp}
  local zeros = opts.zero or {0, 1, 2, 3}
  local ranked, smallest, considered = {}, nil, 0
  local zero_ok = search.zero_supported()

  for _, pp in ipairs(pow2_divisors(W, depth)) do
    local G = W // pp
    local splits = grid.partition(depth, pp)
    local min_split = math.huge
    for _, n in ipairs(splits) do min_split = math.min(min_split, n) end
    if min_split >= 1 then
      -- the tensor sizes: global ones (one outer choice), or all of them per block (layerwise)
      local tp_outer = {}
      for _, t in ipairs(tps) do if G % t == 0 then tp_outer[#tp_outer + 1] = t end end
      local outer = opts.layerwise and {0} or tp_outer
      for _, tglob in ipairs(outer) do
        for _, z in ipairs(zeros) do
          for _, gb in ipairs(gbs) do
            local m = 1
            while m <= gb do
              -- every tensor size of the space must give an integral micro-batch
              local cand_tp = tglob == 0 and tp_outer or {tglob}
              local ok_all, any = true, false
              for _, t in ipairs(cand_tp) do
                local d = G // t
                if gb % (d * m) ~= 0 or (z > 0 and d == 1) then ok_all = false else any = true end
              end
              if tglob == 0 then
                -- layerwise: keep the tensor sizes that divide the batch
                local keep = {}
                for _, t in ipairs(cand_tp) do
                  local d = G // t
                  if gb % (d * m) == 0 and not (z > 0 and d == 1) then keep[#keep + 1] = t end
                end
                cand_tp, ok_all = keep, #keep > 0
              end
              if ok_all and any then
                considered = considered + 1
                local args = {pp = pp, G = G, tps = cand_tp, zero = z, m = m, gb = gb, splits = splits,
                  budget = budget, unit = unit, others = others, N = N, C = C, placements = opts.layerwise}
                local res
                if opts.global then
                  -- a global strategy: every block checkpointed, or none
                  args.ckpt_all = false
                  res = search.evaluate(cfg, prof, args)
                  args.ckpt_all = true
                  local all = search.evaluate(cfg, prof, args)
                  if all.fits and (not res.fits or all.time < res.time) then res = all end
                  if not res.fits then res.min_memory = math.min(res.min_memory, all.min_memory) end
                else
                  res = search.evaluate(cfg, prof, args)
                end
                if res.fits then
                  -- ZeRO with per-block tensor sizes is refused by the grid (not composed yet)
                  res.runnable = res.valid and (z == 0 or (zero_ok and not res.block_tensor))
                  ranked[#ranked + 1] = res
                end
                if not smallest or res.min_memory < smallest.min_memory then smallest = res end
              end
              m = m * 2
            end
          end
        end
      end
    end
  end
  table.sort(ranked, function(a, b)
    if a.time ~= b.time then return a.time < b.time end
    return a.max_memory < b.max_memory
  end)
  local best
  for _, r in ipairs(ranked) do if r.runnable then best = r break end end
  return {ranked = ranked, best = best, fastest = ranked[1], smallest = smallest, considered = considered}
end

--- One combination (pp, tensor sizes, ZeRO stage, m, global batch): the DP
-- per stage. Returns {pp=, tp= (nil when it varies), dp=, zero=, m=, global_batch=,
-- blocks=, time=, memory=, max_memory=, fits=, min_memory=, uniform_tp=}.
function search.evaluate(cfg, prof, c)
  local pp, G, m, gb = c.pp, c.G, c.m, c.gb
  local bf16 = cfg.precision == 'bf16'
  local res = {pp = pp, zero = c.zero, m = m, global_batch = gb, blocks = {}, memory = {}, time = 0,
    max_memory = 0, fits = true, min_memory = 0}
  local first = 0
  for s = 0, pp - 1 do
    local L = c.splits[s + 1]
    local inflight = math.min(pp - s, m)
    local is_first, is_last = s == 0, s == pp - 1
    -- candidates: every tensor size of the space, checkpointed or not
    local cands = {}
    local const_mem, time_const = 0, 0
    local max_trans = {[false] = 0, [true] = 0}    -- the largest transient without / with checkpointed blocks
    for _, t in ipairs(c.tps) do
      local d = G // t
      local b = gb // (d * m)
      -- c.placements (layerwise): a tensor group of 1 < t < G ranks consecutive or strided
      for _, consec in ipairs((c.placements and t > 1 and t < G) and {true, false} or {true}) do
        for _, ck in ipairs({false, true}) do
          local st = {tp = t, dp = d, zero = c.zero, ckpt = ck, b = b, consec = consec}
          local per_mb, per_step = search.block_time(prof, st, b, m, c.N * c.C * 4)
          local kept, trans = search.block_memory(prof, st, b)
          local bytes = state_bytes(cfg, prof.block.params // t, st) + inflight * kept
          max_trans[true] = math.max(max_trans[true], trans)
          if not ck then max_trans[false] = math.max(max_trans[false], trans) end
          cands[#cands + 1] = {s = st, time = (m + pp - 1) * per_mb + per_step, bytes = bytes}
        end
      end
    end
    -- what is outside the blocks: the embedding / head (state and activations), at the first
    -- tensor size's data size, the p2p sends, the largest transient, ZeRO 3's gathered block
    local d0 = G // c.tps[1]
    local b0 = gb // (d0 * m)
    local s0 = {tp = c.tps[1], dp = d0, zero = c.zero}
    local oparams = (is_first and c.others.first or 0) + (is_last and c.others.last or 0)
    const_mem = state_bytes(cfg, oparams, s0)
    local act = memory.stage_activations{B = b0, N = c.N, C = c.C, hidden = 1, heads = 1, T = 1, bf16 = bf16,
      classes = cfg.NUM_CLASSES, patch_dim = math.tointeger(cfg.IN_CHANS * cfg.PATCH_SIZE ^ cfg.IMG_DIMS),
      first = is_first, last = is_last, inflight = inflight, units = {}}
    const_mem = const_mem + act
    if c.zero == 3 then const_mem = const_mem + 12 * prof.block.params // c.tps[1] end
    local img = cfg.IN_CHANS * cfg.IMG_SIZE ^ cfg.IMG_DIMS
    const_mem = const_mem + math.tointeger(b0 * m * img * 4 + b0 * m * 4)   -- the batch
    if is_first or is_last then time_const = time_const + (m + pp - 1) * poly(prof.other.time, b0) / (is_first and is_last and 1 or 2) end
    if pp > 1 then
      local bytes = b0 * c.N * c.C * 4
      time_const = time_const + (m + pp - 1) * 2 * (prof.comm.p2p.alpha + prof.comm.p2p.beta * bytes)
    end
    time_const = time_const + prof.optimizer.per_param * oparams
    local min_mem = const_mem + max_trans[true]
    do
      local cheapest = math.huge
      for _, cd in ipairs(cands) do cheapest = math.min(cheapest, cd.bytes) end
      min_mem = min_mem + L * cheapest
    end
    res.min_memory = math.max(res.min_memory, min_mem)
    -- re-sharding between neighbours of other tensor sizes or placements: an all_gather over the
    -- larger group (the later block's on a tie), in its placement
    local function inter(a, bst)
      if a.tp == bst.tp and (a.consec ~= false) == (bst.consec ~= false) then return 0 end
      local big = a.tp > bst.tp and a or bst
      local bytes = bst.b * c.N * c.C * 4
      return (m + pp - 1) * 2 * comm_cost(prof, 'all_gather', big.tp, bytes, (search.placements(big)))
    end
    -- two programs: without checkpointing (its smaller transient reserved), and with every
    -- candidate (the replay of a checkpointed block reserved); the faster that fits wins
    local best, chosen, reserve
    local passes = {false, true}
    if c.ckpt_all ~= nil then passes = {c.ckpt_all} end
    for _, with_ckpt in ipairs(passes) do
      local V = math.floor((c.budget - const_mem - max_trans[with_ckpt]) / c.unit)
      if V >= 0 then
        local items = {}
        for i = 1, L do
          local list = {}
          for _, cd in ipairs(cands) do
            -- c.ckpt_all (true / false): every block checkpointed / none (a global strategy)
            local allowed = with_ckpt or not cd.s.ckpt
            if c.ckpt_all ~= nil then allowed = cd.s.ckpt == c.ckpt_all end
            if allowed then
              list[#list + 1] = {s = cd.s, time = cd.time, bytes = cd.bytes, mem = math.ceil(cd.bytes / c.unit)}
            end
          end
          items[i] = {cands = list}
        end
        local b1, ch1 = search.dp(items, V, inter)
        if b1 and (not best or b1 < best) then best, chosen, reserve = b1, ch1, max_trans[with_ckpt] end
      end
    end
    if not best then
      res.fits = false
      res.memory[s + 1] = min_mem
    else
      local mem = const_mem + reserve
      for i = 1, L do
        res.blocks[first + i] = chosen[i].s
        mem = mem + chosen[i].bytes
      end
      res.memory[s + 1] = mem
      res.max_memory = math.max(res.max_memory, mem)
      res.time = math.max(res.time, best + time_const)
    end
    first = first + L
  end
  -- one tensor size for every block?
  -- (a strided block is per-block: the global tensor group is consecutive)
  local t1 = res.blocks[1] and res.blocks[1].tp
  res.uniform_tp = true
  local strided = false
  for _, st in pairs(res.blocks) do
    if st.tp ~= t1 then res.uniform_tp = false end
    if st.consec == false then strided, res.uniform_tp = true, false end
  end
  res.tp = res.uniform_tp and t1 or nil
  res.dp = res.tp and G // res.tp or G
  if not res.uniform_tp then
    -- per-block tensor sizes over a base of data parallelism (parallel.block_tensor), and their
    -- placements (parallel.block_tensor_consec) when a block is strided
    res.block_tensor = {}
    for i, st in ipairs(res.blocks) do res.block_tensor[i] = st.tp end
    if strided then
      res.block_tensor_consec = {}
      for i, st in ipairs(res.blocks) do res.block_tensor_consec[i] = st.consec ~= false end
    end
  end
  if res.fits then
    res.throughput = gb / res.time
    -- whether this build runs it: its config loads and its layout validates
    local sc = search.strategy_config(cfg, res, c.budget)
    local loads = pcall(require('lunar.config').from_table, require('lunar.schema').deep_copy(sc), 'strategy')
    res.valid = loads and grid.validate(sc, pp * G) == nil
    -- lunar.memory's estimate of its config, per rank (exact where tests/mpi/test_memory.sh measures
    -- it; the program above reserves more, from the profile)
    do
      local ok, est = pcall(memory.estimate, sc, {world = pp * G, zero = {stage = c.zero}})
      if ok then
        res.estimate = est.max
        -- the profile's bytes per sample, taken at its largest batch, miss the allocator's rounding of
        -- small tensors at small micro-batches: the config must pass its own MEMORY_BUDGET
        if est.max > c.budget then res.fits, res.throughput = false, nil end
      end
    end
  end
  return res
end

--- One line describing a result.
function search.describe(r)
  local ck = 0
  for _, st in ipairs(r.blocks) do if st.ckpt then ck = ck + 1 end end
  local per = {}
  for i, t in ipairs(r.block_tensor or {}) do
    per[i] = tostring(t) .. ((r.block_tensor_consec and not r.block_tensor_consec[i]) and ' strided' or '')
  end
  local tp = r.tp and tostring(r.tp) or ('per block {' .. table.concat(per, ', ') .. '}')
  local zero = r.zero > 0 and string.format(', ZeRO %d%s', r.zero, not search.zero_supported() and
    ' (needs sharded data parallelism: parallel.zero)' or r.block_tensor and
    ' (not composed with per-block tensor sizes yet)' or '') or ''
  return string.format('pipeline %d x tensor %s x data %s%s, global batch %d, %d micro-batches, %d/%d blocks ' ..
    'checkpointed: predicted step %.4g s (%.1f samples/s), memory %s per rank%s%s', r.pp, tp, tostring(r.dp), zero, r.global_batch, r.m, ck, #r.blocks, r.time, r.throughput or 0,
    memory.format_bytes(r.estimate or r.max_memory), r.estimate and string.format(' (reserved %s)',
    memory.format_bytes(r.max_memory)) or '', r.runnable and '' or ' [not runnable in this build]')
end

--- The strategy as a config (a table): the searched config with the layout
-- keys of r.
function search.strategy_config(cfg, r, budget)
  local c = require('lunar.schema').deep_copy(cfg)
  c.parallel = c.parallel or {}
  c.parallel.data = r.dp
  c.parallel.pipeline = r.pp
  local tp = r.tp or 1
  c.parallel.tensor = {mode = tp > 1 and '1d' or 'none', size = tp}
  c.parallel.block_tensor = r.block_tensor
  c.parallel.block_tensor_consec = r.block_tensor_consec
  c.parallel.pipeline_schedule = '1f1b'
  c.parallel.pipeline_split = nil
  c.parallel.sequence_parallel = false
  if r.zero > 0 then c.parallel.zero = {stage = r.zero} else c.parallel.zero = nil end
  c.BATCH_SIZE = r.global_batch // r.dp
  c.NUM_MICRO_BATCHES = r.m
  local blocks, any = {}, false
  for i, st in ipairs(r.blocks) do blocks[i] = st.ckpt; any = any or st.ckpt end
  c.CHECKPOINT = false
  c.activation_checkpointing = any and {blocks = blocks, method = 'uniform', num_layers = 1} or
    {method = 'uniform', num_layers = 1}
  c.MEMORY_BUDGET = budget
  return c
end

--- Writes the strategy as a Lua config file (`--config` reads it as is).
function search.write_config(cfg, res, path, opts)
  local r = res.best
  local c = search.strategy_config(cfg, r, opts.budget)
  local lines = {
    string.format('-- %s: the strategy `lunar search` chose for %d ranks under %s per rank', path, opts.world,
      memory.format_bytes(opts.budget)),
    '-- (lunar.strategy.search; Galvatron\'s dynamic program over the blocks, constants from the profile ' ..
      tostring(opts.profile_path or '') .. ')',
    '--   mpirun -np ' .. opts.world .. ' build/lunar examples/train_with_engine.lua --config ' .. path,
    '-- ' .. search.describe(r),
  }
  for s, mem in ipairs(r.memory) do
    lines[#lines + 1] = string.format('--   pipeline stage %d: %s per rank (predicted)', s - 1, memory.format_bytes(mem))
  end
  lines[#lines + 1] = 'return ' .. require('lunar.config').dump(c)
  if (lunar.rank or 0) == 0 then lunar.io.write_file(path, table.concat(lines, '\n') .. '\n') end
  return c
end

return search
