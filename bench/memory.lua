-- bench/memory.lua: per-rank tensor memory of sharded data parallelism (the
-- config key parallel.zero, lunar.parallel.zero) and activation checkpointing,
-- measured beside ZeRO's formulas (Rajbhandari et al. 2020, section 5), with
-- the step time of each setting.
--
--   mpirun -np N build/lunar bench/memory.lua --config CONFIG [key=value ...] [-- stages=0,1,2,3 ckpt=0,1]
--   mpirun -np 2 build/lunar bench/memory.lua --config configs/models/vit_b16.lua DATASET=synthetic \
--     NUM_SAMPLES=64 BATCH_SIZE=2 BENCH_STEPS=2 BENCH_WARMUP=1 -- stages=0,3 ckpt=0,1
--
-- For each stage and checkpointing setting (ckpt 1: activation_checkpointing
-- {granularity = 'full', method = 'uniform', num_layers = 1}, every block),
-- the config's run is built in the same job (lunar.setup, this job's layout
-- with parallel.zero = stage) and trains BENCH_WARMUP untimed steps; then
-- BENCH_STEPS timed steps go round-robin over the settings (all held at once).
-- Printed by rank 0, the largest over the ranks:
--   state     tensor bytes the run holds between steps (parameters, gradients,
--             optimizer state, bf16 working weights, shards), after its first step
--   formula   ZeRO's count for the rank's P parameters over a shard group of
--             S ranks, AdamW in fp32 (4 bytes of parameter, 4 of gradient, 8 of
--             state): stage 0 16P, 1 8P + 8P/S, 2 4P + 12P/S, 3 16P/S; under
--             precision = 'bf16' the bf16 working copy adds 2P at stages 0-2
--             (stage 3 rounds it per unit while gathered: in the step peak)
--   step peak the peak of tensor bytes during a step above the state
--             (activations, temporaries, stage 2/3 unit buffers in flight), the
--             largest over the timed steps (lunar.memory().peak_bytes after
--             lunar.reset_peak_memory())
--   total     state + step peak
--   step time median of the timed steps, seconds (lunar.clock, the slowest
--             rank's; the settings' steps interleave, so other jobs on the
--             machine slow them alike)
-- Figures only, nothing asserted (tests/mpi/parallel_check.lua tests the stages).
local config = require('lunar.config')
local setup = require('lunar.setup')
local parallel = require('lunar.parallel')
local zero = require('lunar.parallel.zero')

local args = lunar.args
local world = lunar.comm.world()
local R = world:rank()
local opts = {stages = {0, 1, 2, 3}, ckpt = {0, 1}}
for _, a in ipairs(args.rest or {}) do
  local k, v = a:match('^(%w+)=(.*)$')
  if not opts[k] then error('bench/memory: unknown option ' .. a .. ' (stages=0,1,2,3 ckpt=0,1)', 0) end
  opts[k] = {}
  for x in v:gmatch('[^,]+') do opts[k][#opts[k] + 1] = math.tointeger(tonumber(x)) end
end
local base = parallel.same_on_every_rank(config.load, args.config, args.overrides or {})

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local median = require('lunar.profile').median

local function measure(stage, ck)
  local cfg = copy(base)
  cfg.parallel = copy(base.parallel)
  local z = zero.parse(base.parallel.zero)
  cfg.parallel.zero = {stage = stage, group_size = z.group_size}
  cfg.activation_checkpointing = ck == 1 and {granularity = 'full', method = 'uniform', num_layers = 1}
    or {method = 'uniform', num_layers = 1}
  cfg.CHECKPOINT = false
  collectgarbage(); collectgarbage()
  local before = lunar.memory().bytes_in_use
  local g = parallel.initialize(cfg, world, {quiet = true})
  local run = setup.from_config(cfg, nil, {grid = g, quiet = true})
  local loader = run.train_loader
  loader:set_epoch(0)
  local P = 0
  for _, p in ipairs(run.model:parameters()) do P = P + require('lunar.nn').numel(p.shape) end
  local S = run.zero and run.zero.size or g.dp_size
  local res = {stage = stage, ck = ck, times = {}, peak = 0, P = P, S = S}
  local function step(timed)
    local x, y = loader:next()
    if not x then loader:set_epoch(1); x, y = loader:next() end
    local in_use = lunar.memory().bytes_in_use
    lunar.reset_peak_memory()
    local t0 = lunar.clock()
    run.engine:train_step(x, y)
    local dt = lunar.clock() - t0
    local peak = lunar.memory().peak_bytes - in_use
    x:free(); y:free()
    if timed then
      res.times[#res.times + 1] = world:all_reduce_number(dt, 'max')
      res.peak = math.max(res.peak, peak)
    end
  end
  step(false)
  res.state = world:all_reduce_number(lunar.memory().bytes_in_use - before, 'max')
  for _ = 2, cfg.BENCH_WARMUP do step(false) end
  local k = ({[0] = {16, 0}, {8, 8}, {4, 12}, {0, 16}})[stage]
  res.formula = k[1] * P + k[2] * P / S + ((cfg.precision == 'bf16' and stage < 3) and 2 * P or 0)
  res.num_params, res.grid, res.step = run.num_params, g, step
  return res
end

-- every setting built (one after the other: each one's state is what its build and first step added),
-- then the timed steps round-robin over the settings (a machine shared with other jobs slows all alike)
local results = {}
for _, ck in ipairs(opts.ckpt) do
  for _, stage in ipairs(opts.stages) do results[#results + 1] = measure(stage, ck) end
end
for _ = 1, base.BENCH_STEPS do
  for _, r in ipairs(results) do r.step(true) end
end
for _, r in ipairs(results) do
  r.peak = world:all_reduce_number(r.peak, 'max')
  r.time = median(r.times)
end

if R == 0 then
  local MiB, r1 = 2 ^ 20, results[1]
  local g = r1.grid
  print(string.format('model: %d params (%d on this rank), depth %d, width %d, batch %d per rank, %s; world %d = ' ..
    'data %d x tensor %d x pipeline %d, shard group %d; %d timed steps each, %d threads', r1.num_params, r1.P,
    base.DEPTH, base.HIDDEN_SIZE, base.BATCH_SIZE, base.precision, g.world_size, g.dp_size, g.tp_size, g.pp_size,
    r1.S, base.BENCH_STEPS, lunar.num_threads()))
  print(string.format('%-6s %-5s %12s %12s %12s %12s %10s', 'stage', 'ckpt', 'state MiB', 'formula MiB',
    'step peak', 'total MiB', 'step s'))
  local by = {}
  for _, r in ipairs(results) do
    by[r.stage .. '/' .. r.ck] = r
    print(string.format('%-6d %-5s %12.1f %12.1f %12.1f %12.1f %10.3f', r.stage, r.ck == 1 and 'full' or 'off',
      r.state / MiB, r.formula / MiB, r.peak / MiB, (r.state + r.peak) / MiB, r.time))
  end
  for _, ck in ipairs(opts.ckpt) do
    local s0 = by['0/' .. ck]
    for _, st in ipairs(opts.stages) do
      local r = by[st .. '/' .. ck]
      if s0 and r and st > 0 then
        print(string.format('ckpt %s: stage %d state %.3fx of stage 0, step time %.3fx', ck == 1 and 'full' or 'off',
          st, r.state / s0.state, r.time / s0.time))
      end
    end
  end
  for _, st in ipairs(opts.stages) do
    local a, b = by[st .. '/0'], by[st .. '/1']
    if a and b then
      print(string.format('stage %d: full checkpointing step peak %.2fx smaller, step time %.2fx', st,
        a.peak / math.max(b.peak, 1), b.time / a.time))
    end
  end
end
