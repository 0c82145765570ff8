-- tests/mpi/parallel_check.lua: every parallel layout trains the same model
-- (DESIGN.md's invariant), checked inside one mpirun job per world size
-- (tests/mpi/test_parallel.sh runs it with -np 2, 4 and 8).
--
--   mpirun -np W build/lunar tests/mpi/parallel_check.lua [-- FILTER]
--   mpirun -np W build/lunar tests/mpi/parallel_check.lua tensor_nd [FILTER]
--     only the 2D / 2.5D / 3D tensor modes (tests/mpi/test_tensor_nd.sh, -np 4
--     and 8: 2d size 4 alone, with micro-batches, accumulation, checkpointing,
--     dropout 0.1 and bf16, x data 2, x pipeline 2 (also with dropout 0.1);
--     2.5d size 8 depth 2 and 3d size 8, each with dropout 0.1 too; -np 16: 3d x pipeline 2 1f1b, 2.5d depth 2 x
--     pipeline 2 gpipe), the same checks and tolerances (with dropout
--     also: the losses are not those of the run without it)
--
-- A tiny ViT (img 12, patch 4 -> 10 tokens, 2 channels, width 16, depth 4,
-- 4 heads, MLP 64, 5 classes) on synthetic data, global batch 8, 5 AdamW
-- steps with clip_grad_norm 0.5 (it clips every step). First every rank
-- trains the single-rank reference itself (no collectives: the model is
-- tiny), then each layout (dp, tp, pp) of the issue whose product is W (and
-- (1, 1, 4) for four stages), with
-- both schedules when pp > 1 and 1, 2 and 4 micro-batches, plus sequence
-- parallelism, gradient accumulation, an uneven pipeline split and a repeat
-- run; and under precision = 'bf16' (where the CPU has avx512_bf16) every
-- tensor-parallel layout, with and without sequence parallelism, and the first
-- layout, against the single-rank bf16 run at the bf16 tolerances of TOL below;
-- and activation checkpointing (tensor 2 with sequence parallelism, pipeline 2
-- under both schedules, tensor 2 x pipeline 2, data 2 x tensor 2; bf16 at
-- tensor 2; per block, activation_checkpointing.blocks, at pipeline 2 1F1B,
-- data 2, tensor 2 x pipeline 2 GPipe; per-block tensor sizes, parallel.block_tensor,
-- mixed over data 2, 4 and 8, with and without per-block checkpointing, consecutive and strided
-- placement, with dropout 0.1 against the single-rank run with dropout): against the
-- reference, and with dropout bitwise against the same layout without it.
-- Checked against the reference:
--   - the loss of every step: within 1e-5 relative (and on every rank)
--   - the global gradient norm of every step (engine.last_grad_norm): within
--     1e-5 relative (Adam is blind to a wrong clipping coefficient that is
--     off by the same factor every step, so the norm is compared directly)
--   - every final parameter, gathered to full tensors
--     (parallel.gather_full_parameters): within 1e-4 * |ref| + lr / 50.
--     The absolute part is 2% of one AdamW step: an element whose (clipped)
--     gradient is a near-cancellation close to Adam's eps (1e-8) gets an
--     update g / (|g| + eps) that moves with the rounding of g (measured: the
--     single-rank run with 4 micro-batches differs from the one with 1 by
--     0.5% of lr in blocks.3.attn.proj.weight[75], whose first gradient is
--     -2.8e-8). A layout that gets a gradient wrong moves whole tensors by
--     up to lr per step and changes the losses and the gradient norm. The key
--     part of qkv.bias (rows C..2C-1) has a true gradient of zero (softmax is
--     invariant to a constant added to every key), so AdamW turns rounding
--     noise there into steps of about lr: that slice is compared with an
--     absolute tolerance of lr * steps instead (the bias is kept, as in timm,
--     so the q and v parts of the head split are checked).
--   - the same layout and seed run twice: bitwise identical losses.
--   - parallel.load_full_parameters puts the gathered tensors back into a
--     fresh model of the same layout exactly (gathering it again round-trips).
-- Every rank prints "rank R: parallel_check N passed, M failed"; rank 0
-- prints one line per configuration with the largest differences. Every rank
-- raises an error at the end when a check failed on any (the host aborts the job).
local nn = require('lunar.nn')
local data = require('lunar.data')
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local FILTER = (lunar.args.rest or {})[1]
-- 'tensor_nd': only the 2D / 2.5D / 3D tensor-parallel layouts (tests/mpi/test_tensor_nd.sh)
local ND = FILTER == 'tensor_nd'
if ND then FILTER = (lunar.args.rest or {})[2] end
local STEPS = 5
local LR = 1e-3

package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path   -- rank_checks (tests add their own path)
local checks = require('rank_checks').new('parallel_check', world)
local check = checks.check

local BASE = {
  DATASET = 'synthetic', NUM_SAMPLES = 96, IMG_SIZE = 12, PATCH_SIZE = 4, IN_CHANS = 2, NUM_CLASSES = 5,
  HIDDEN_SIZE = 16, DEPTH = 4, NUM_HEADS = 4, MLP_RATIO = 4, BATCH_SIZE = 8, LEARNING_RATE = LR,
  WEIGHT_DECAY = 0.05, clip_grad_norm = 0.5, LABEL_SMOOTHING = 0.1, SEED = 7, PREFETCH = false,
  INIT = 'timm', METRICS_FILE = '',
}

local function make_cfg(over)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return config.from_table(t, 'parallel_check')
end

local train_ds = data.datasets(make_cfg())

--- Trains STEPS updates; returns losses (one per batch), grad norms (one per
-- update) and the full parameters (name -> tensor), and the names.
local function train(cfg, g)
  -- the model, AdamW (betas 0.9, 0.999, eps 1e-8: the config's defaults) and the engine, as the examples
  -- build them; small buckets: several data-parallel buckets per step
  local run = setup.from_config(cfg, nil, {grid = g or false, loaders = false, engine = {bucket_size = 1500}})
  local model, eng = run.model, run.engine
  local loader = data.loader(train_ds, cfg, {train = true, rank = g and g.dp_rank or 0,
    num_shards = g and g.dp_size or 1})
  loader:set_epoch(0)
  local losses, norms = {}, {}
  lunar.comm.reset_stats()
  for _ = 1, STEPS * cfg.gradient_accumulation do
    local x, y = loader:next()
    local loss, _, updated = eng:train_step(x, y)
    losses[#losses + 1] = loss
    if updated then norms[#norms + 1] = eng.last_grad_norm end
    x:free(); y:free()
  end
  local gather_bytes = lunar.comm.stats().all_gather.bytes / STEPS   -- all_gather bytes sent per step
  -- under ZeRO-3 the parameters are gathered for the call (FSDP's summon_full_params)
  local full, names = (run.zero and run.zero.with_full_parameters or function(_, fn) return fn() end)(run.zero,
    function() return parallel.gather_full_parameters(model, g) end)
  -- and back: full tensors loaded into a fresh model of the same layout gather to the same tensors
  local fresh = nn.materialize(parallel.vit(cfg, g), cfg.SEED + 1, {init = cfg.INIT, precision = cfg.precision})
  parallel.load_full_parameters(fresh, full)
  local again = parallel.gather_full_parameters(fresh, g)
  local round_trip = true
  for _, n in ipairs(names) do
    local a, b = again[n]:view(-1):totable(), full[n]:view(-1):totable()
    for i = 1, #b do round_trip = round_trip and a[i] == b[i] end
  end
  check((g and 'layout' or 'reference') .. ': load_full_parameters then gather_full_parameters round-trips', round_trip)
  if run.zero then
    -- what the stage shards: AdamW state of this rank's blocks only (ceil(n / S) of each group), no full
    -- gradient buffer from stage 2, no full parameter buffer from stage 3
    local z, state = run.zero, run.optimizer:state_dict()
    check(string.format('zero %d: AdamW state holds %d of the %d elements (shard group of %d)', z.stage,
      state.exp_avg:numel(), model:num_parameters(), z.size), state.exp_avg:numel() <= z.shard_numel and
      (z.size == 1 or state.exp_avg:numel() < model:num_parameters()))
    check(string.format('zero %d: full gradient buffer %s', z.stage, z.stage >= 2 and 'freed' or 'kept'),
      (model._flat_grad == nil) == (z.stage >= 2))
    check(string.format('zero %d: full parameter buffer %s', z.stage, z.stage >= 3 and 'freed' or 'kept'),
      (model._flat == nil) == (z.stage >= 3))
  end
  if run.zero and run.zero.stage == 3 then
    -- prefetch: every unit's gather but the first of each forward and each backward was issued ahead
    -- (and the final with_full_parameters gathers every group at once, none prefetched)
    local st, passes = run.zero.stats, 2 * STEPS * cfg.NUM_MICRO_BATCHES * cfg.gradient_accumulation
    local ng = #run.zero.groups
    check(string.format('zero 3: all but the first unit of each pass prefetched (%d gathers, %d not prefetched, ' ..
      '%d passes, %d groups)', st.gathers, st.cold, passes, ng), st.cold == passes + ng and
      st.gathers == (passes + 1) * ng)
  end
  -- buckets reduced per step: ZeRO-2/3 reduce-scatter each group at every backward (micro-batch)
  local per_step = (run.zero and run.zero.stage >= 2) and cfg.NUM_MICRO_BATCHES * cfg.gradient_accumulation or 1
  return {losses = losses, norms = norms, params = full, names = names, model = model, gather_bytes = gather_bytes,
    buckets = eng.reducer and #eng.reducer.buckets * per_step or 0, stats = eng.reducer and eng.reducer.stats}
end

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-30) end

local refs = {}
-- with_dropout: the single-rank run with the layout's DROPOUT (a layout whose masks are the single-rank
-- ones: per-block tensor sizes), else without dropout
local function reference(over, with_dropout)
  local dropout = with_dropout and over.DROPOUT or nil
  local key = string.format('ga%d %s clip %s dropout %s', over.gradient_accumulation or 1, over.precision or 'fp32',
    tostring(over.clip_grad_norm), tostring(dropout))
  if not refs[key] then
    refs[key] = train(make_cfg({gradient_accumulation = over.gradient_accumulation, precision = over.precision,
      clip_grad_norm = over.clip_grad_norm, DROPOUT = dropout}), nil)
  end
  return refs[key]
end

-- The tolerances: fp32 as the header says; bf16 (precision = 'bf16') against
-- the single-rank bf16 run, where a layout changes the order of f32 sums
-- (tensor-parallel partial sums, data-parallel gradient reductions) and so
-- flips some bf16 roundings of activations. Measured worst differences on 2
-- and 4 ranks (printed per layout): losses 3e-5, grad norms 6.2e-5, final
-- parameters 0.03 of the fp32 tolerance; the bf16 tolerances are 5 to 10 times
-- those (a lost gradient moves whole tensors by lr per step).
local TOL = {
  fp32 = {loss = 1e-5, norm = 1e-5, param_rel = 1e-4, param_abs = LR / 50},
  bf16 = {loss = 3e-4, norm = 5e-4, param_rel = 2e-4, param_abs = LR / 10},
}

local function compare(name, got, ref, tol)
  tol = tol or TOL.fp32
  local ok = #got.losses == #ref.losses
  local worst_loss, worst_norm, worst_param, worst_name = 0, 0, 0, ''
  for i = 1, math.min(#got.losses, #ref.losses) do
    worst_loss = math.max(worst_loss, rel(got.losses[i], ref.losses[i]))
  end
  check(name .. string.format(': losses within %g relative', tol.loss), ok and worst_loss <= tol.loss,
    string.format('%d vs %d losses, worst %.3g: %s vs %s', #got.losses, #ref.losses, worst_loss,
      table.concat(got.losses, ' '), table.concat(ref.losses, ' ')))
  for i = 1, math.min(#got.norms, #ref.norms) do
    worst_norm = math.max(worst_norm, rel(got.norms[i], ref.norms[i]))
  end
  check(name .. string.format(': grad norms within %g relative', tol.norm), #got.norms == #ref.norms and
    worst_norm <= tol.norm,
    string.format('worst %.3g: %s vs %s', worst_norm, table.concat(got.norms, ' '), table.concat(ref.norms, ' ')))
  local C = BASE.HIDDEN_SIZE
  local param_ok = true
  for _, n in ipairs(ref.names) do
    local a, b = got.params[n], ref.params[n]
    if not a then param_ok = false; check(name .. ': parameter ' .. n .. ' gathered', false) goto continue end
    do
      local va, vb = a:view(-1):totable(), b:view(-1):totable()
      local is_qkv_bias = n:match('attn%.qkv%.bias$') ~= nil
      for i = 1, #vb do
        local d = math.abs(va[i] - vb[i])
        local key_slice = is_qkv_bias and i > C and i <= 2 * C
        local t = key_slice and LR * STEPS or (tol.param_abs + tol.param_rel * math.abs(vb[i]))
        if d > t then
          param_ok = false
          check(string.format('%s: %s[%d] = %.8g, reference %.8g', name, n, i, va[i], vb[i]), false)
          break
        end
        if not key_slice then
          local r = d / t
          if r > worst_param then worst_param, worst_name = r, n end
        end
      end
    end
    ::continue::
  end
  if param_ok then check(name .. ': final parameters match', true) end
  return worst_loss, worst_norm, worst_param, worst_name
end

-- ---- the configurations -------------------------------------------------------------------

-- the issue's layouts, and four stages (middle stages: neither first nor last)
local LAYOUTS = {{2, 1, 1}, {1, 2, 1}, {1, 1, 2}, {2, 2, 1}, {2, 1, 2}, {1, 2, 2}, {2, 2, 2}, {1, 1, 4}}
if W == 1 then LAYOUTS = {{1, 1, 1}} end   -- alone: micro-batches and accumulation on one rank
if ND then LAYOUTS = {} end
local configs = {}
local function add(dp, tp, pp, extra, label)
  local over = {BATCH_SIZE = BASE.BATCH_SIZE // dp,
    parallel = {data = dp, pipeline = pp, tensor = {mode = tp > 1 and '1d' or 'none', size = tp}}}
  for k, v in pairs(extra or {}) do
    if k == 'parallel' then for k2, v2 in pairs(v) do over.parallel[k2] = v2 end else over[k] = v end
  end
  configs[#configs + 1] = {over = over, name = string.format('dp %d tp %d pp %d%s', dp, tp, pp, label or '')}
  return configs[#configs]
end
for _, l in ipairs(LAYOUTS) do
  local dp, tp, pp = l[1], l[2], l[3]
  if dp * tp * pp == W then
    for _, sched in ipairs(pp > 1 and {'1f1b', 'gpipe'} or {'1f1b'}) do
      for _, m in ipairs({1, 2, 4}) do
        add(dp, tp, pp, {NUM_MICRO_BATCHES = m, parallel = {pipeline_schedule = sched}},
          string.format('%s, %d micro-batches', pp > 1 and (', ' .. sched) or '', m))
      end
    end
    if tp > 1 then
      add(dp, tp, pp, {NUM_MICRO_BATCHES = pp > 1 and 2 or 1, parallel = {sequence_parallel = true}},
        ', sequence parallel' .. (pp > 1 and ', 1f1b, 2 micro-batches' or ''))
    end
  end
end
-- gradient accumulation on the first layout of this world size; uneven
-- pipeline splits on the first one with pipeline stages
local first, first_pp
for _, l in ipairs(LAYOUTS) do
  if l[1] * l[2] * l[3] == W then
    first = first or l
    if l[3] > 1 then first_pp = first_pp or l end
  end
end
if first then
  add(first[1], first[2], first[3], {gradient_accumulation = 2, NUM_MICRO_BATCHES = 2},
    ', gradient accumulation 2, 2 micro-batches')
end
if first_pp then
  local dp, tp, pp = first_pp[1], first_pp[2], first_pp[3]
  add(dp, tp, pp, {NUM_MICRO_BATCHES = 4, parallel = {pipeline_split = {3, 1}}}, ', 1f1b, split {3, 1}, 4 micro-batches')
  add(dp, tp, pp, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_split = {1, 3}, pipeline_schedule = 'gpipe'}},
    ', gpipe, split {1, 3}, 2 micro-batches')
end

-- bf16 mixed precision (precision = 'bf16') on every tensor-parallel layout
-- (with and without sequence parallelism: the bf16 activations cross the
-- all_gather) and on the first layout, where the CPU has the bf16 kernels
local BF16_OK, BF16_WHY = lunar.ops.bf16_supported('cpu')
if ND then
  -- the 2D / 2.5D / 3D modes (lunar.parallel.tensor_2d, tensor_3d): {dp, tp, pp, tensor dict, extra, label}
  local T2D = {mode = '2d', size = 4}
  local ND_LAYOUTS = {
    {1, 4, 1, T2D, {}, ''},
    {1, 4, 1, T2D, {NUM_MICRO_BATCHES = 2}, ', 2 micro-batches'},
    {1, 4, 1, T2D, {gradient_accumulation = 2, NUM_MICRO_BATCHES = 2}, ', gradient accumulation 2, 2 micro-batches'},
    {1, 4, 1, T2D, {activation_checkpointing = {granularity = 'full', method = 'uniform', num_layers = 2}},
      ', checkpointing full/uniform/2'},
    -- dropout: every element of a split activation draws the mask of its place in the whole tensor
    {1, 4, 1, T2D, {DROPOUT = 0.1}, ', dropout 0.1'},
    {2, 4, 1, T2D, {}, ''},
    {1, 4, 2, T2D, {NUM_MICRO_BATCHES = 2}, ', 1f1b, 2 micro-batches'},
    {1, 4, 2, T2D, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = 'gpipe'}}, ', gpipe, 2 micro-batches'},
    {1, 8, 1, {mode = '2.5d', size = 8, depth = 2}, {}, ''},
    {1, 8, 1, {mode = '2.5d', size = 8, depth = 2}, {DROPOUT = 0.1}, ', dropout 0.1'},
    {1, 4, 2, T2D, {DROPOUT = 0.1}, ', 1f1b, dropout 0.1'},
    {1, 8, 1, {mode = '2.5d', size = 8, depth = 2}, {NUM_MICRO_BATCHES = 2, gradient_accumulation = 2},
      ', gradient accumulation 2, 2 micro-batches'},
    {1, 8, 1, {mode = '3d', size = 8}, {}, ''},
    {1, 8, 1, {mode = '3d', size = 8}, {DROPOUT = 0.1}, ', dropout 0.1'},
    -- x pipeline 2 at -np 16 (test_tensor_nd.sh runs only these there): 3d 1f1b, 2.5d gpipe
    {1, 8, 2, {mode = '3d', size = 8}, {NUM_MICRO_BATCHES = 2}, ', 1f1b, 2 micro-batches'},
    {1, 8, 2, {mode = '2.5d', size = 8, depth = 2}, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = 'gpipe'}},
      ', gpipe, 2 micro-batches'},
    {1, 8, 1, {mode = '3d', size = 8}, {NUM_MICRO_BATCHES = 2, gradient_accumulation = 2},
      ', gradient accumulation 2, 2 micro-batches'},
  }
  if BF16_OK then
    ND_LAYOUTS[#ND_LAYOUTS + 1] = {1, 4, 1, T2D, {precision = 'bf16'}, ', bf16'}
    ND_LAYOUTS[#ND_LAYOUTS + 1] = {1, 4, 1, T2D, {precision = 'bf16', DROPOUT = 0.1}, ', bf16, dropout 0.1'}
    ND_LAYOUTS[#ND_LAYOUTS + 1] = {1, 8, 1, {mode = '3d', size = 8}, {precision = 'bf16'}, ', bf16'}
  end
  for _, l in ipairs(ND_LAYOUTS) do
    local dp, tp, pp, tensor, extra, label = table.unpack(l)
    if dp * tp * pp == W then
      local e = {parallel = {tensor = tensor}}
      for k, v in pairs(extra) do
        if k == 'parallel' then for k2, v2 in pairs(v) do e.parallel[k2] = v2 end else e[k] = v end
      end
      local mode = tensor.mode .. (tensor.depth and (' depth ' .. tensor.depth) or '')
      local c = add(dp, tp, pp, e, ' (' .. mode .. ')' .. label)
      c.ref_dropout = true   -- with dropout: each element's mask is the single-rank run's
    end
  end
elseif BF16_OK then
  for _, l in ipairs(LAYOUTS) do
    local dp, tp, pp = l[1], l[2], l[3]
    if dp * tp * pp == W and (tp > 1 or l == first) then
      add(dp, tp, pp, {precision = 'bf16', NUM_MICRO_BATCHES = pp > 1 and 2 or 1}, ', bf16')
      if tp > 1 then
        add(dp, tp, pp, {precision = 'bf16', NUM_MICRO_BATCHES = pp > 1 and 2 or 1,
          parallel = {sequence_parallel = true}}, ', bf16, sequence parallel')
      end
    end
  end
else
  checks.skip('the bf16 layouts', BF16_WHY)   -- the CPU lacks avx512_bf16
end

-- activation checkpointing (tensor 2 with sequence parallelism, pipeline 2 under both schedules, and
-- their product at 4 ranks): each setting (a) against the single-rank reference like every layout, and
-- (b) with DROPOUT = 0.1 bitwise against the same layout without checkpointing (losses and gathered
-- parameters; the masks are replayed). (b) is not compared with one rank: a dropout mask depends on
-- the micro-batch and on the token slice a rank holds.
local AC_LAYOUTS = {
  {1, 2, 1, {parallel = {sequence_parallel = true}}, 'uniform', 1, ', sequence parallel'},
  {1, 1, 2, {NUM_MICRO_BATCHES = 4, parallel = {pipeline_schedule = '1f1b'}}, 'block', 1, ', 1f1b, 4 micro-batches'},
  {1, 1, 2, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = 'gpipe'}}, 'uniform', 2, ', gpipe, 2 micro-batches'},
  {1, 2, 2, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = '1f1b', sequence_parallel = true}}, 'uniform', 1,
    ', 1f1b, sequence parallel, 2 micro-batches'},
  {2, 2, 1, {}, 'block', 1, ''},
  -- per block (activation_checkpointing.blocks, a layerwise strategy): method is the list
  {1, 1, 2, {NUM_MICRO_BATCHES = 4, parallel = {pipeline_schedule = '1f1b'}}, {true, false, false, true}, 0,
    ', 1f1b, 4 micro-batches'},
  {2, 1, 1, {}, {false, true, true, false}, 0, ''},
  {1, 2, 2, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = 'gpipe'}}, {true, true, false, true}, 0,
    ', gpipe, 2 micro-batches'},
}
if BF16_OK then
  AC_LAYOUTS[#AC_LAYOUTS + 1] = {1, 2, 1, {precision = 'bf16', parallel = {sequence_parallel = true}}, 'uniform', 2,
    ', bf16, sequence parallel'}
end
for _, a in ipairs(AC_LAYOUTS) do
  local dp, tp, pp, extra, method, n, label = table.unpack(a)
  if dp * tp * pp == W and not ND then
    local ac = type(method) == 'table' and {blocks = method} or {granularity = 'full', method = method, num_layers = n}
    local function with(more)
      local t = {}
      for k, v in pairs(extra) do t[k] = v end
      for k, v in pairs(more) do t[k] = v end
      return t
    end
    local tag = type(method) == 'table' and ', checkpointing blocks ' .. table.concat((function()
        local t = {}
        for i, b in ipairs(method) do if b then t[#t + 1] = tostring(i - 1) end end
        return t
      end)(), '+') or string.format(', checkpointing full/%s/%d', method, n)
    add(dp, tp, pp, with({activation_checkpointing = ac}), label .. tag)
    local c = add(dp, tp, pp, with({activation_checkpointing = ac, DROPOUT = 0.1}), label .. tag .. ', dropout 0.1')
    c.bitwise = true
  end
end

-- per-block tensor sizes (parallel.block_tensor, lunar.parallel.layerwise; issue 14's layerwise
-- strategies): a base of W data-parallel ranks, blocks of mixed tensor sizes, with and without per-block
-- checkpointing, consecutive and strided tensor groups (parallel.block_tensor_consec, false = strided),
-- clipping on (the global norm over the blocks' groups), and with DROPOUT 0.1 against the single-rank
-- run with dropout (each dropout draws the single-rank masks of its samples)
local LW = {
  [2] = {{2, 1, 1, 2}, {1, 2, 2, 1, ckpt = {true, false, true, false}}, {2, 1, 1, 2, dropout = 0.1}},
  [4] = {{4, 2, 1, 2}, {2, 2, 4, 4, ckpt = {false, true, true, false}}, {1, 4, 1, 4},
    {2, 2, 4, 2, consec = {false, true, true, false}},
    {2, 1, 2, 4, consec = {false, true, false, true}, ckpt = {true, false, false, true}, dropout = 0.1},
    {4, 2, 1, 2, consec = {true, false, true, true}, dropout = 0.1}},
  [8] = {{2, 4, 1, 4, consec = {false, false, true, true}, ckpt = {false, true, false, true}},
    {4, 2, 2, 1, consec = {true, false, true, true}, dropout = 0.1}},
}
local layerwise = require('lunar.parallel.layerwise')
for _, l in ipairs(not ND and LW[W] or {}) do
  local list = {l[1], l[2], l[3], l[4]}
  local c = add(W, 1, 1, {parallel = {block_tensor = list, block_tensor_consec = l.consec},
    activation_checkpointing = l.ckpt and {blocks = l.ckpt} or nil, DROPOUT = l.dropout},
    string.format(', block_tensor {%s}%s%s%s', table.concat(list, ', '),
      l.consec and ' consec {' .. table.concat((function()
        local t = {}
        for i, b in ipairs(l.consec) do t[i] = b and 'c' or 's' end
        return t
      end)(), ',') .. '}' or '', l.ckpt and ', per-block checkpointing' or '',
      l.dropout and ', dropout ' .. l.dropout or ''))
  c.ref_dropout = true   -- the masks are the single-rank run's
  -- the layout is applied: block i holds NUM_HEADS / t_i heads and 1/t_i of fc1's rows, and is run
  -- redistributed (or checkpointed around its redistribution) when t_i > 1
  c.verify = function(model, g)
    for i, t in ipairs(list) do
      -- the block's tensor group: ranks R - R % t + a (consecutive) or R % (W/t) + a W/t (strided)
      local grp = layerwise.block_group(g, i - 1)
      if t > 1 then
        local strided = l.consec and not l.consec[i] and t < W
        local want = {}
        for a = 0, t - 1 do want[a + 1] = strided and (R % (W // t) + a * (W // t)) or (R - R % t + a) end
        check(string.format('%s: block %d runs on ranks %s', c.name, i - 1, table.concat(want, ',')),
          grp and grp.tp:size() == t and table.concat(grp.members, ',') == table.concat(want, ',') and
          grp.tp:rank() == (strided and R // (W // t) or R % t), grp and table.concat(grp.members, ','))
      end
      local blk = model.blocks[tostring(i - 1)]
      check(string.format('%s: block %d holds %d of %d heads', c.name, i - 1, BASE.NUM_HEADS // t, BASE.NUM_HEADS),
        blk.attn.local_heads == BASE.NUM_HEADS // t, tostring(blk.attn.local_heads))
      check(string.format('%s: block %d fc1 weight rows', c.name, i - 1),
        blk.mlp.fc1.weight:shape()[1] == BASE.HIDDEN_SIZE * BASE.MLP_RATIO // t)
    end
    local redistributed = 0
    for _, u in ipairs(model.units) do
      local mods = u.module.modules or {u.module}
      for _, m in ipairs(mods) do if m.__name == 'Redistributed' then redistributed = redistributed + 1 end end
    end
    local want = 0
    for _, t in ipairs(list) do if t > 1 then want = want + 1 end end
    check(c.name .. ': the blocks with tensor size > 1 run redistributed', redistributed == want,
      redistributed .. ' of ' .. want)
  end
end
-- sharded data parallelism (lunar.parallel.zero): stages 1, 2, 3 at data 2 and 4 (with clipping, as every
-- configuration), with gradient accumulation and micro-batches, bf16, activation checkpointing (stage 3),
-- hybrid sharding (group_size 2 of data 4), tensor 2 (with sequence parallelism) and pipeline 2 (both
-- schedules); each against the single-rank reference like every layout
local ZERO = {
  {2, 1, 1, {}, ''}, {4, 1, 1, {}, ''},
  {2, 1, 1, {gradient_accumulation = 2, NUM_MICRO_BATCHES = 2}, ', gradient accumulation 2, 2 micro-batches'},
  {4, 1, 1, {NUM_MICRO_BATCHES = 2}, ', 2 micro-batches'},
  {4, 1, 1, {group_size = 2}, ', hybrid group_size 2'},
  {2, 2, 1, {}, ''}, {2, 2, 1, {parallel = {sequence_parallel = true}}, ', sequence parallel'},
  {2, 1, 2, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = '1f1b'}}, ', 1f1b, 2 micro-batches'},
  {2, 1, 2, {NUM_MICRO_BATCHES = 2, parallel = {pipeline_schedule = 'gpipe'}}, ', gpipe, 2 micro-batches'},
  {2, 2, 2, {NUM_MICRO_BATCHES = 2}, ', 1f1b, 2 micro-batches'},
}
if BF16_OK then ZERO[#ZERO + 1] = {2, 1, 1, {precision = 'bf16'}, ', bf16'} end
for _, zc in ipairs(ZERO) do
  local dp, tp, pp, extra, label = table.unpack(zc)
  if dp * tp * pp == W and not ND then
    for stage = 1, 3 do
      local over = {}
      for k, v in pairs(extra) do if k ~= 'group_size' then over[k] = v end end
      over.parallel = {}
      for k, v in pairs(extra.parallel or {}) do over.parallel[k] = v end
      over.parallel.zero = extra.group_size and {stage = stage, group_size = extra.group_size} or stage
      add(dp, tp, pp, over, string.format(', zero %d%s', stage, label))
    end
  end
end
for _, zc in ipairs({{2, 1, 1, 'uniform', 2}, {4, 1, 1, 'block', 1}, {2, 1, 2, 'uniform', 1, 'gpipe'}}) do
  local dp, tp, pp, method, n, sched = table.unpack(zc)
  if dp * tp * pp == W and not ND then
    add(dp, tp, pp, {parallel = {zero = 3, pipeline_schedule = sched}, NUM_MICRO_BATCHES = sched and 2 or 1,
      activation_checkpointing = {granularity = 'full', method = method, num_layers = n}},
      string.format(', zero 3, checkpointing full/%s/%d%s', method, n, sched and (', ' .. sched) or ''))
  end
end

if #configs == 0 then
  if R == 0 then print(string.format('parallel_check: no layout of the issue has %d ranks', W)) end
end

local t_all = lunar.clock()
for _, c in ipairs(configs) do
  if not FILTER or c.name:find(FILTER, 1, true) then
    local t0 = lunar.clock()
    local cfg = make_cfg(c.over)
    local ref = reference(c.over, c.ref_dropout)
    local g = parallel.initialize(cfg, world, {quiet = true})
    local got = train(cfg, g)
    if c.verify then c.verify(got.model, g) end
    local wl, wn, wp, wname = 0, 0, 0, 'bitwise'
    if c.bitwise then
      -- the same layout without checkpointing: bitwise the same losses and parameters
      local plain_over = {}
      for k, v in pairs(c.over) do plain_over[k] = v end
      plain_over.activation_checkpointing = nil
      local plain = train(make_cfg(plain_over), g)
      local same = #got.losses == #plain.losses
      for i = 1, #plain.losses do same = same and got.losses[i] == plain.losses[i] end
      check(c.name .. ': losses bitwise those without checkpointing', same,
        table.concat(got.losses, ' ') .. ' vs ' .. table.concat(plain.losses, ' '))
      local params_same = true
      for _, n in ipairs(plain.names) do
        local a, b = got.params[n]:view(-1):totable(), plain.params[n]:view(-1):totable()
        for i = 1, #b do params_same = params_same and a[i] == b[i] end
      end
      check(c.name .. ': parameters bitwise those without checkpointing', params_same)
      check(c.name .. ': dropout is on (the losses are not those without it)', got.losses[1] ~= ref.losses[1])
    else
      wl, wn, wp, wname = compare(c.name, got, ref, TOL[c.over.precision or 'fp32'])
      if (c.over.DROPOUT or 0) > 0 then   -- equal to one rank with dropout, and that dropout drops
        local plain = {}
        for k, v in pairs(c.over) do plain[k] = v end
        plain.DROPOUT = nil
        check(c.name .. ': dropout is on (the losses are not those without it)',
          got.losses[1] ~= reference(plain).losses[1])
      end
    end
    -- every rank logs the same loss
    local l1 = got.losses[#got.losses]
    local hi, lo = world:all_reduce_number(l1, 'max'), world:all_reduce_number(l1, 'min')  -- both, always
    check(c.name .. ': every rank has the same loss', hi == l1 and lo == l1)
    -- the data-parallel buckets start from the backward hooks (overlapped), none waits for finish
    local st = got.stats
    if g.dp_size > 1 then
      check(c.name .. ': every bucket started during backward', st and st.late == 0 and
        st.early == got.buckets * STEPS, st and string.format('%d early, %d late, %d buckets', st.early, st.late,
        got.buckets))
    end
    if R == 0 then
      print(string.format('%-58s loss %.3g  norm %.3g  param %.2f of tol (%s)  buckets %d (%d overlapped)  %.2f s',
        c.name, wl, wn, wp, wname, got.buckets, st and st.early or 0, lunar.clock() - t0))
    end
    c.result = got
  end
end

-- ZeRO-3 under bf16 gathers the bf16 working copy: the bytes each rank sends by all_gather per step
-- (lunar.comm.stats) between half and 0.65 of those of the same layout in fp32 (the GEMM weights in
-- bf16; LayerNorm, biases, class token and position embedding still f32: in this narrow model about a
-- tenth of the elements, plus each group's f32 part padded to the largest rank's)
local z3 = {}
for _, c in ipairs(configs) do
  if c.result and c.name:find(', zero 3', 1, true) and c.over.NUM_MICRO_BATCHES == nil
    and not c.over.activation_checkpointing and (c.over.parallel.zero == 3) then
    z3[c.over.precision or 'fp32'] = z3[c.over.precision or 'fp32'] or c.result.gather_bytes
  end
end
if z3.bf16 and z3.fp32 then
  local ratio = z3.bf16 / z3.fp32
  check(string.format('zero 3: bf16 all_gather bytes per step %.0f, fp32 %.0f (ratio %.3f) in [0.5, 0.65]',
    z3.bf16, z3.fp32, ratio), ratio >= 0.5 and ratio <= 0.65)
  if R == 0 then
    print(string.format('zero 3 all_gather bytes per step and rank: fp32 %.0f, bf16 %.0f (%.3fx)', z3.fp32, z3.bf16, ratio))
  end
end

-- determinism: the first configuration again, bitwise the same losses
local c1 = configs[1]
if c1 and c1.result then
  local cfg = make_cfg(c1.over)
  local g = parallel.initialize(cfg, world, {quiet = true})
  local again = train(cfg, g)
  local same = #again.losses == #c1.result.losses
  for i = 1, #again.losses do same = same and again.losses[i] == c1.result.losses[i] end
  check(c1.name .. ': run twice, bitwise identical losses', same,
    table.concat(again.losses, ' ') .. ' vs ' .. table.concat(c1.result.losses, ' '))
  if R == 0 then print(string.format('%-58s repeated: %s', c1.name, same and 'bitwise identical' or 'DIFFERENT')) end
end

-- determinism under ZeRO-3 (non-blocking gathers and reduce_scatters in flight): bitwise run to run
for _, c in ipairs(configs) do
  if c.result and c.name:find(', zero 3', 1, true) then
    local cfg = make_cfg(c.over)
    local again = train(cfg, parallel.initialize(cfg, world, {quiet = true}))
    local same = #again.losses == #c.result.losses
    for i = 1, #again.losses do same = same and again.losses[i] == c.result.losses[i] end
    for _, n in ipairs(again.names) do
      local a, b = again.params[n]:view(-1):totable(), c.result.params[n]:view(-1):totable()
      for i = 1, #b do same = same and a[i] == b[i] end
    end
    check(c.name .. ': run twice, bitwise identical losses and parameters', same)
    if R == 0 then print(string.format('%-58s repeated: %s', c.name, same and 'bitwise identical' or 'DIFFERENT')) end
    break
  end
end

if R == 0 then print(string.format('world %d: %d configurations in %.1f s', W, #configs, lunar.clock() - t_all)) end
checks.finish()
