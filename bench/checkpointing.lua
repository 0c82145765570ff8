-- bench/checkpointing.lua: activation checkpointing (the config key
-- activation_checkpointing; issue 11) side by side with storing every
-- activation, in one process on one rank: peak tensor memory and step time.
--
--   build/lunar bench/checkpointing.lua --config configs/vit_fmnist.lua [key=value ...]
--   build/lunar bench/checkpointing.lua --config configs/models/vit_s16.lua DATASET=synthetic \
--     NUM_SAMPLES=64 BATCH_SIZE=8 NUM_THREADS=2 [BENCH_STEPS=5] [BENCH_WARMUP=1]
--
-- Two runs of the same config (lunar.setup, same seed, same batches): without
-- activation checkpointing, and with the config's or the command line's
-- activation_checkpointing (granularity 'full'), by default {granularity =
-- 'full', method = 'uniform', num_layers = 1} (every block). After BENCH_WARMUP untimed
-- steps each, BENCH_STEPS steps of the two runs alternate (A, B, A, B, ...,
-- so a machine shared with other jobs slows both alike). Per run it prints:
--   model state   tensor bytes the run holds between steps (parameters,
--                 gradients, optimizer state, bf16 working weights)
--   step peak     the peak of tensor bytes during a step above what was in use
--                 before it (activations and temporaries), the largest over the
--                 timed steps (lunar.memory().peak_bytes after reset_peak_memory)
--   total         model state + step peak: the run's peak alone
--   step time     median over the timed steps, seconds (lunar.clock)
-- and whether the losses of the two runs are bitwise equal (they must be).
-- Figures only; nothing is asserted (tests/lua/test_checkpointing.lua tests).
local config = require('lunar.config')
local setup = require('lunar.setup')

local args = lunar.args
local function is_ac(o) return o:match('^activation_checkpointing') or o:match('^CHECKPOINT=') end
local given = config.load(args.config, args.overrides)
local function checkpoints(cfg) return cfg.activation_checkpointing.granularity == 'full' or cfg.CHECKPOINT end
-- the two configs: without checkpointing (the given overrides less the checkpointing ones, and
-- checkpointing switched off) and with it (as given when the config or the command line asks for
-- 'full', else every block)
local plain_over, ckpt_over = {}, {}
for _, o in ipairs(args.overrides or {}) do
  ckpt_over[#ckpt_over + 1] = o
  if not is_ac(o) then plain_over[#plain_over + 1] = o end
end
plain_over[#plain_over + 1] = 'CHECKPOINT=false'
plain_over[#plain_over + 1] = 'activation_checkpointing={}'
if not checkpoints(given) then
  ckpt_over = {}
  for _, o in ipairs(plain_over) do if not is_ac(o) then ckpt_over[#ckpt_over + 1] = o end end
  ckpt_over[#ckpt_over + 1] = "activation_checkpointing={granularity='full', method='uniform', num_layers=1}"
end
local base = config.load(args.config, plain_over)
local other = config.load(args.config, ckpt_over)
local steps, warmup = base.BENCH_STEPS, base.BENCH_WARMUP

local function describe(cfg)
  local ac = cfg.activation_checkpointing
  if not (ac.granularity or cfg.CHECKPOINT) then return 'no checkpointing' end
  return string.format('%s/%s/%d', ac.granularity or 'full', ac.method, ac.num_layers)
end

local function build(cfg)
  local before = lunar.memory().bytes_in_use
  local run = setup.from_config(cfg, nil, {grid = false, quiet = true})
  run.train_loader:set_epoch(0)
  run.label = describe(cfg)
  run.losses, run.times, run.peak = {}, {}, 0
  run.before = before
  return run
end

local function step(run, timed)
  local x, y = run.train_loader:next()
  if not x then run.train_loader:set_epoch(1); x, y = run.train_loader:next() end
  local in_use = lunar.memory().bytes_in_use
  lunar.reset_peak_memory()
  local t0 = lunar.clock()
  local loss = run.engine:train_step(x, y)
  local dt = lunar.clock() - t0
  local peak = lunar.memory().peak_bytes - in_use
  x:free(); y:free()
  run.losses[#run.losses + 1] = loss
  if timed then
    run.times[#run.times + 1] = dt
    run.peak = math.max(run.peak, peak)
  end
end

local a = build(base)
step(a, false)                       -- the optimizer state exists after the first step
a.state = lunar.memory().bytes_in_use - a.before
local b = build(other)
step(b, false)
b.state = lunar.memory().bytes_in_use - b.before
for _ = 2, warmup do step(a, false); step(b, false) end
for _ = 1, steps do step(a, true); step(b, true) end

local median = require('lunar.profile').median

local MiB = 2 ^ 20
print(string.format('model: %d params, depth %d, width %d, %d tokens, batch %d, %s, %d threads; %d timed steps each',
  a.num_params, base.DEPTH, base.HIDDEN_SIZE, base.SEQ_LENGTH, base.BATCH_SIZE, base.precision, lunar.num_threads(),
  steps))
print(string.format('%-22s %14s %14s %14s %14s', '', 'model state', 'step peak', 'total', 'step time'))
for _, r in ipairs({a, b}) do
  print(string.format('%-22s %10.1f MiB %10.1f MiB %10.1f MiB %12.3f s', r.label, r.state / MiB, r.peak / MiB,
    (r.state + r.peak) / MiB, median(r.times)))
end
local same = #a.losses == #b.losses
for i = 1, #a.losses do same = same and a.losses[i] == b.losses[i] end
print(string.format('step peak ratio %.2fx, step time ratio %.2fx, losses bitwise equal: %s',
  a.peak / math.max(b.peak, 1), median(b.times) / median(a.times), same and 'yes' or 'NO'))
