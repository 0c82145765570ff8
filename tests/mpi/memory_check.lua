-- tests/mpi/memory_check.lua: lunar.memory's estimate of a rank's memory
-- against the allocator's measured peak (lunar.memory()), for the layouts
-- whose size is the job's world size (tests/mpi/test_memory.sh runs it alone
-- and under mpirun -np 2).
--
--   [mpirun -np W] build/lunar tests/mpi/memory_check.lua [-- FILTER]
--
-- A ViT of 65 tokens (img 32, patch 4), width 64, depth 4, 4 heads, MLP 256,
-- batch 16, AdamW, on one synthetic batch made before anything is measured.
-- Per layout, on every rank: the bytes in use after the first step above what
-- was in use before lunar.setup (model state: parameters, gradients, bf16
-- copy, AdamW moments) and the peak of the second step above what was in use
-- when it started (activations and temporaries; lunar.reset_peak_memory).
-- Checked (expected values: the allocator's counters, core/alloc.c): model
-- state, step peak and their sum each within 10% of memory.estimate's figure
-- for this rank's pipeline stage. Rank 0 prints one line per layout and rank.
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')
local memory = require('lunar.memory')

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local FILTER = (lunar.args.rest or {})[1]
package.path = lunar.home .. '/tests/lua/?.lua;' .. package.path
local checks = require('rank_checks').new('memory_check', world)
local check = checks.check
local BF16 = lunar.ops.bf16_supported('cpu')

local BASE = {
  DATASET = 'synthetic', NUM_SAMPLES = 64, IMG_SIZE = 32, PATCH_SIZE = 4, IN_CHANS = 3, NUM_CLASSES = 10,
  HIDDEN_SIZE = 64, DEPTH = 4, NUM_HEADS = 4, MLP_RATIO = 4, BATCH_SIZE = 16, SEED = 3, PREFETCH = false,
  METRICS_FILE = '', NUM_THREADS = 1,
}

local LAYOUTS = {
  [1] = {
    {name = 'fp32'},
    {name = 'bf16', precision = 'bf16'},
    {name = 'checkpointing every block', CHECKPOINT = true},
    {name = 'checkpointing 2 blocks per segment', activation_checkpointing = {granularity = 'full', num_layers = 2}},
    {name = 'checkpointing first block only', activation_checkpointing = {granularity = 'full', method = 'block',
      num_layers = 1}},
    {name = '4 micro-batches', NUM_MICRO_BATCHES = 4},
    {name = 'bf16 + checkpointing', precision = 'bf16', CHECKPOINT = true},
    {name = 'checkpointing blocks 1 and 2 (per block)', activation_checkpointing = {blocks = {false, true, true, false}}},
  },
  [2] = {
    {name = 'data 2', parallel = {data = 2}},
    {name = 'tensor 2', parallel = {tensor = {mode = '1d', size = 2}}},
    {name = 'tensor 2 sequence parallel', parallel = {tensor = {mode = '1d', size = 2}, sequence_parallel = true},
      IMG_SIZE = 28},   -- 50 tokens: divisible by 2
    {name = 'pipeline 2 1f1b, 4 micro-batches', parallel = {pipeline = 2}, NUM_MICRO_BATCHES = 4},
    {name = 'pipeline 2 gpipe, 4 micro-batches', parallel = {pipeline = 2, pipeline_schedule = 'gpipe'},
      NUM_MICRO_BATCHES = 4},
    {name = 'pipeline 2 1f1b + checkpointing', parallel = {pipeline = 2}, NUM_MICRO_BATCHES = 4, CHECKPOINT = true},
    {name = 'tensor 2 bf16', parallel = {tensor = {mode = '1d', size = 2}}, precision = 'bf16'},
    {name = 'tensor 2, 4 micro-batches', parallel = {tensor = {mode = '1d', size = 2}}, NUM_MICRO_BATCHES = 4},
    {name = 'pipeline 2 1f1b, stage 0 checkpointed (per block)', parallel = {pipeline = 2}, NUM_MICRO_BATCHES = 4,
      activation_checkpointing = {blocks = {true, true, false, false}}},
    {name = 'block_tensor {2, 1, 1, 2}', parallel = {block_tensor = {2, 1, 1, 2}}},
    {name = 'block_tensor {1, 2, 2, 1} + blocks 1, 2 checkpointed', parallel = {block_tensor = {1, 2, 2, 1}},
      activation_checkpointing = {blocks = {false, true, true, false}}},
    {name = 'zero 1, data 2', parallel = {data = 2, zero = 1}},
    {name = 'zero 2, data 2', parallel = {data = 2, zero = 2}},
    {name = 'zero 3, data 2', parallel = {data = 2, zero = 3}},
    {name = 'zero 3, data 2 + checkpointing', parallel = {data = 2, zero = 3}, CHECKPOINT = true},
    {name = 'zero 2, data 2 bf16', parallel = {data = 2, zero = 2}, precision = 'bf16'},
    {name = 'zero 3, data 2 bf16', parallel = {data = 2, zero = 3}, precision = 'bf16'},
  },
}

LAYOUTS[4] = {
  {name = 'tensor 4', parallel = {tensor = {mode = '1d', size = 4}}},
  {name = 'tensor 2 x pipeline 2, 8 micro-batches', parallel = {tensor = {mode = '1d', size = 2}, pipeline = 2},
    NUM_MICRO_BATCHES = 8},
  {name = 'block_tensor {4, 2, 1, 2}', parallel = {block_tensor = {4, 2, 1, 2}}},
  {name = 'zero 3 hybrid, data 4 groups of 2', parallel = {data = 4, zero = {stage = 3, group_size = 2}}},
}

local function make_cfg(over)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(over) do if k ~= 'name' then t[k] = v end end
  return config.from_table(t, 'memory_check')
end

local function measure(cfg)
  local img = {cfg.BATCH_SIZE, cfg.IN_CHANS, cfg.IMG_SIZE, cfg.IMG_SIZE}
  local x = lunar.empty(img):normal_(1, 'memory_check.x', 0, 1)
  local labels = {}
  for i = 1, cfg.BATCH_SIZE do labels[i] = (i * 7) % cfg.NUM_CLASSES end
  local y = lunar.tensor(labels, 'i32')
  collectgarbage(); collectgarbage()
  local base = lunar.memory().bytes_in_use
  local g = W > 1 and parallel.initialize(cfg, world, {quiet = true}) or nil
  local run = setup.from_config(cfg, nil, {grid = g or false, loaders = false, quiet = true})
  run.engine:train_step(x, y)
  collectgarbage(); collectgarbage()
  local in_use = lunar.memory().bytes_in_use
  local state = in_use - base
  lunar.reset_peak_memory()
  run.engine:train_step(x, y)
  local act = lunar.memory().peak_bytes - in_use
  local stage = g and g.pp_rank or 0
  run.optimizer, run.model, run.engine = nil, nil, nil
  x:free(); y:free()
  collectgarbage(); collectgarbage()
  return state, act, stage
end

local function within(got, want, tol) return math.abs(got - want) <= tol * want end

local configs = 0
for _, lay in ipairs(LAYOUTS[W] or {}) do
  if (not FILTER or lay.name:find(FILTER, 1, true)) and (lay.precision ~= 'bf16' or BF16) then
    configs = configs + 1
    local cfg = make_cfg(lay)
    local est = memory.estimate(cfg, {world = W})
    local state, act, stage = measure(cfg)
    local r = est.ranks[stage + 1]
    local mib = 2 ^ 20
    local line = string.format('%-36s rank %d: model state %.2f MiB (estimate %.2f), step peak %.2f MiB ' ..
      '(estimate %.2f), sum %.2f (estimate %.2f, %+.1f%%)', lay.name, R, state / mib, r.model_state / mib,
      act / mib, r.activations / mib, (state + act) / mib, (r.model_state + r.activations) / mib,
      100 * ((r.model_state + r.activations) / (state + act) - 1))
    io.stdout:write(line, '\n'); io.stdout:flush()
    check(lay.name .. ': model state within 10%', within(r.model_state, state, 0.10), line)
    check(lay.name .. ': step peak (activations) within 10%', within(r.activations, act, 0.10), line)
    check(lay.name .. ': total within 10%', within(r.model_state + r.activations, state + act, 0.10), line)
  end
end
if R == 0 then print(string.format('world %d: %d layouts', W, configs)) end
check('some layouts ran', configs > 0 or (LAYOUTS[W] == nil))
checks.finish()
