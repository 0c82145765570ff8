-- bench/tensor_modes.lua: the tensor-parallel modes side by side at equal
-- tensor size (issue 13): bytes each rank sends per training step in the
-- tensor group's collectives, per-rank model state and activation memory,
-- and the step time (a sanity check only: oversubscribed ranks on a few
-- cores are not a performance figure).
--
--   mpirun -np 4 build/lunar bench/tensor_modes.lua      1d size 4 vs 2d size 4
--   mpirun -np 8 build/lunar bench/tensor_modes.lua      1d size 8 vs 2.5d size 8 depth 2 vs 3d size 8
--   [-- HIDDEN BATCH]                                    (defaults 64 and 16)
--
-- The model: a ViT of width HIDDEN, depth 2, 8 heads, MLP 4x, 32 x 32 images
-- in 8 x 8 patches (17 tokens), 10 classes, batch BATCH per replica, fp32,
-- AdamW; every rank of the job is one tensor group (data 1, pipeline 1).
-- Per mode, after one untimed step, one step is counted and three timed:
--   sent/rank    bytes each rank sends in the step's tensor collectives (the
--                row/column/depth/cube groups of 2d, 2.5d, 3d), counted by
--                the comm layer (lunar.comm.stats: the bandwidth term of the
--                standard algorithms as the papers' tables count it, for a
--                message of n bytes over p ranks: all_reduce 2(p-1)/p n,
--                all_gather (p-1)/p n (n the gathered output), reduce_scatter
--                (p-1)/p n (n the input), broadcast (p-1)/p n; deterministic);
--                the mean over the ranks. With data 1 and pipeline 1 nothing
--                else sends tensors (the gradient norm and the loss are
--                all_reduce_number, not counted).
--   calls        collectives per rank per step (latency terms)
--   params/rank  parameter elements this rank holds (the largest over ranks)
--   state        bytes of model state per rank: parameters, gradients, AdamW's
--                m and v, 4 x 4 bytes per parameter element (the largest)
--   activations  tensor bytes one forward keeps for its backward (the
--                contexts and the logits; the largest over ranks)
--   step peak    the peak of tensor bytes during a step above the state
--                (activations and temporaries: gathered blocks, partial
--                outputs before a reduce-scatter; the largest over ranks)
--   step time    median of 3 steps, seconds (sanity only)
-- Figures only; nothing is asserted (tests/mpi/test_tensor_nd.sh tests).
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')
local data = require('lunar.data')

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local rest = lunar.args.rest or {}
local HIDDEN, BATCH = tonumber(rest[1] or '64'), tonumber(rest[2] or '16')

local MODES = {
  [4] = {{mode = '1d', size = 4}, {mode = '2d', size = 4}},
  [8] = {{mode = '1d', size = 8}, {mode = '2.5d', size = 8, depth = 2}, {mode = '3d', size = 8}},
}
local modes = MODES[W]
if not modes then error('bench/tensor_modes.lua: run it with mpirun -np 4 or -np 8', 0) end

-- ---- one mode ------------------------------------------------------------------------------------

local function run_mode(tensor)
  local cfg = config.from_table({DATASET = 'synthetic', NUM_SAMPLES = 8 * BATCH, IMG_SIZE = 32, PATCH_SIZE = 8,
    IN_CHANS = 3, NUM_CLASSES = 10, HIDDEN_SIZE = HIDDEN, DEPTH = 2, NUM_HEADS = 8, MLP_RATIO = 4,
    BATCH_SIZE = BATCH, LEARNING_RATE = 1e-3, SEED = 1, PREFETCH = false, METRICS_FILE = '',
    parallel = {tensor = tensor}}, 'tensor_modes')
  local g = parallel.initialize(cfg, world, {quiet = true})
  local run = setup.from_config(cfg, nil, {grid = g, loaders = false, quiet = true})
  local ds = data.datasets(cfg)
  local loader = data.loader(ds, cfg, {train = true, rank = 0, num_shards = 1})
  loader:set_epoch(0)
  local function step()
    local x, y = loader:next()
    run.engine:train_step(x, y)
    x:free(); y:free()
  end
  step()                                           -- AdamW's state exists from here
  local params = 0
  for _, p in ipairs(run.model:parameters()) do params = params + p.param:numel() end
  local state = 16 * params
  collectgarbage('collect')                        -- the previous mode's tensors are gone before the base
  collectgarbage('collect')
  lunar.reset_peak_memory()
  lunar.comm.reset_stats()
  local base = lunar.memory().bytes_in_use
  step()
  local peak = lunar.memory().peak_bytes - base
  local st = lunar.comm.stats().total
  local sent, calls = st.bytes, st.calls
  -- what one forward keeps for backward
  local x = loader:next()
  collectgarbage('collect')
  local b0 = lunar.memory().bytes_in_use
  local logits, ctx = run.model:forward(x)
  local kept = lunar.memory().bytes_in_use - b0
  ctx:free(); logits:free(); x:free()
  local times = {}
  for i = 1, 3 do
    world:barrier()
    local t0 = lunar.clock()
    step()
    times[i] = lunar.clock() - t0
  end
  table.sort(times)
  return {
    sent = world:all_reduce_number(sent + 0.0, 'sum') / W,
    calls = world:all_reduce_number(calls + 0.0, 'max'),
    params = world:all_reduce_number(params + 0.0, 'max'),
    state = world:all_reduce_number(state + 0.0, 'max'),
    peak = world:all_reduce_number(peak + 0.0, 'max'),
    kept = world:all_reduce_number(kept + 0.0, 'max'),
    time = world:all_reduce_number(times[2], 'max'),
  }
end

if R == 0 then
  print(string.format('tensor modes on %d ranks: ViT width %d, depth 2, 8 heads, 17 tokens, batch %d, fp32', W,
    HIDDEN, BATCH))
  print(string.format('%-22s %14s %7s %12s %12s %12s %12s %10s', 'mode', 'sent/rank', 'calls', 'params/rank',
    'state', 'activations', 'step peak', 'step time'))
end
for _, t in ipairs(modes) do
  local r = run_mode(t)
  if R == 0 then
    local name = string.format("'%s' size %d%s", t.mode, t.size, t.depth and (' depth ' .. t.depth) or '')
    print(string.format('%-22s %11.1f KB %7d %12d %9.1f KB %9.1f KB %9.1f KB %8.3f s', name, r.sent / 1024,
      r.calls, r.params, r.state / 1024, r.kept / 1024, r.peak / 1024, r.time))
  end
end
