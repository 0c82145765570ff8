-- examples/benchmark_image_sizes.lua: training speed and memory of a ViT as
-- the image grows (PhysicsNeMo's ViT benchmark). For each image side from
-- SWEEP_START to SWEEP_STOP by SWEEP_STEP it builds the model for that size,
-- runs BENCH_WARMUP untimed and BENCH_STEPS timed training steps (forward,
-- loss, backward, gradient synchronization, AdamW: lunar.engine) on a batch of
-- synthetic images (IMG_DIMS = 2: images, 3: volumes), and prints a table of
-- image size, tokens, step time, images/s, achieved FLOP/s and peak memory,
-- also written to BENCH_CSV.
--
--   build/lunar examples/benchmark_image_sizes.lua [--config FILE] [key=value ...]
--   build/lunar examples/benchmark_image_sizes.lua --config configs/recipes/vit_b8_image_sizes.lua
--   mpirun -np 4 build/lunar examples/benchmark_image_sizes.lua --config ... BATCH_SIZE=2
--   build/lunar examples/benchmark_image_sizes.lua IMG_DIMS=3 PATCH_SIZE=8 SWEEP_START=16 SWEEP_STOP=64 SWEEP_STEP=16
--
-- Options are config keys (`build/lunar config keys`): the model (PATCH_SIZE,
-- HIDDEN_SIZE, DEPTH, NUM_HEADS, MLP_RATIO, IN_CHANS, NUM_CLASSES), IMG_DIMS,
-- BATCH_SIZE (per data-parallel rank), the sweep (SWEEP_START, SWEEP_STOP,
-- SWEEP_STEP, BENCH_WARMUP, BENCH_STEPS, BENCH_CSV), and the layout: the
-- data-parallel size is the world size / (pipeline x tensor) as with
-- training (lunar.parallel), so by default every rank is a data-parallel
-- replica; `parallel` and NUM_MICRO_BATCHES add tensor and pipeline
-- parallelism.
--
-- Step time is the mean over the timed steps (the slowest rank's); images/s
-- and FLOP/s are global (all data-parallel ranks); FLOPs per image are
-- 6 * params * tokens + 12 * depth * tokens^2 * width (lunar.models); peak
-- memory is the tensor allocator's peak during that size (the largest over
-- ranks) and the process's peak resident set so far.
local config = require('lunar.config')
local setup = require('lunar.setup')
local log = require('lunar.log')
local parallel = require('lunar.parallel')

--- The config. IMG_SIZE is replaced by each size of the sweep, so when the
-- file's (or the default 28) is not a multiple of PATCH_SIZE and the command
-- line does not set it, it becomes SWEEP_START.
local function load_config()
  local file, ovs = lunar.args.config, lunar.args.overrides
  local ok, c = pcall(config.load, file, ovs)
  if ok then return c end
  local given = false
  for _, o in ipairs(ovs) do given = given or o:match('^%s*IMG_SIZE%s*=') ~= nil end
  if given or not tostring(c):find('multiple of PATCH_SIZE', 1, true) then error(c, 0) end
  local function with(img)
    local t = table.move(ovs, 1, #ovs, 1, {})
    t[#t + 1] = 'IMG_SIZE=' .. img
    return t
  end
  -- 720720 = lcm(1..16): a multiple of any PATCH_SIZE up to 16, to read SWEEP_START
  local probe_ok, probe = pcall(config.load, file, with(720720))
  if not probe_ok then error(c, 0) end
  return config.load(file, with(probe.SWEEP_START))
end
--- The config of one size: cfg with IMG_SIZE = size (SEQ_LENGTH derived again).
local function config_for(cfg, size)
  local t = {}
  for k, v in pairs(cfg) do t[k] = v end
  t.IMG_SIZE, t.SEQ_LENGTH = size, nil
  return config.from_table(t, string.format('image size %d', size))
end

--- The config and the sizes, checked before anything runs (the same on every rank).
local function sweep_config()
  local cfg = load_config()
  if cfg.SWEEP_START > cfg.SWEEP_STOP then
    error(string.format('benchmark_image_sizes: SWEEP_START (%d) is above SWEEP_STOP (%d)', cfg.SWEEP_START,
      cfg.SWEEP_STOP), 0)
  end
  local sizes = {}
  for size = cfg.SWEEP_START, cfg.SWEEP_STOP, cfg.SWEEP_STEP do
    if size % cfg.PATCH_SIZE ~= 0 then
      error(string.format('benchmark_image_sizes: image size %d (from SWEEP_START %d by SWEEP_STEP %d) is not a ' ..
        'multiple of PATCH_SIZE %d', size, cfg.SWEEP_START, cfg.SWEEP_STEP, cfg.PATCH_SIZE), 0)
    end
    local msg = parallel.grid.validate(config_for(cfg, size), lunar.world_size or 1)
    if msg then error(string.format('benchmark_image_sizes: image size %d: %s', size, msg), 0) end
    sizes[#sizes + 1] = size
  end
  return cfg, sizes
end

local cfg, sizes = parallel.same_on_every_rank(sweep_config)
if cfg.NUM_THREADS > 0 then lunar.set_num_threads(cfg.NUM_THREADS) end
local world = lunar.comm.world()

local function max_over_ranks(x)
  if world:size() == 1 then return x end
  return world:all_reduce_number(x, 'max')
end

--- Builds the model for one size, trains BENCH_WARMUP + BENCH_STEPS steps on
-- one synthetic batch, and returns the row of the table.
local function bench(size)
  local c = config_for(cfg, size)
  collectgarbage(); collectgarbage()
  lunar.empty_cache()
  lunar.reset_peak_memory()
  -- the grid, this rank's part of the model, the optimizer and the engine for this size (no loaders)
  local run = setup.from_config(c, nil, {loaders = false, quiet = true})
  local g, model, engine, params = run.grid, run.model, run.engine, run.num_params
  engine:train()
  local dp = g.dp_size

  -- one batch of this data-parallel rank's synthetic images (learnable
  -- patterns, lunar.data.synthetic); the same on the ranks of a tensor or
  -- pipeline group
  local spatial = {}
  for i = 1, c.IMG_DIMS do spatial[i] = size end
  local ds = lunar.data.synthetic(c.BATCH_SIZE, c.IN_CHANS, c.IMG_DIMS, spatial, c.NUM_CLASSES,
    c.SEED + 1000 * g.dp_rank)
  local loader = lunar.data.loader(ds, {batch_size = c.BATCH_SIZE, shuffle = false, prefetch = false})
  local x, y = loader:next()
  loader:free()   -- the dataset goes with the garbage collector

  local function step()                      -- one optimizer step (gradient_accumulation batches)
    local loss
    for _ = 1, c.gradient_accumulation do loss = engine:train_step(x, y) end
    return loss
  end

  for _ = 1, c.BENCH_WARMUP do step() end
  world:barrier()
  local t0 = lunar.clock()
  local loss
  for _ = 1, c.BENCH_STEPS do loss = step() end
  local step_time = max_over_ranks((lunar.clock() - t0) / c.BENCH_STEPS)
  local mem = lunar.memory()
  local flops_per_image = run.flops_per_image
  local images_per_s = c.BATCH_SIZE * c.gradient_accumulation * dp / step_time   -- every replica its own batches
  local row = {
    img_size = size, img_dims = c.IMG_DIMS, tokens = model.num_tokens, batch_size = c.BATCH_SIZE,
    data_parallel = dp, params = params, step_time_s = step_time, images_per_s = images_per_s,
    flop_per_s = images_per_s * flops_per_image, peak_bytes = max_over_ranks(mem.peak_bytes),
    peak_rss_bytes = max_over_ranks(mem.peak_rss_bytes), loss = loss,
  }
  x:free(); y:free()
  run, engine, model = nil, nil, nil
  return row
end

local COLUMNS = {'img_size', 'img_dims', 'tokens', 'batch_size', 'data_parallel', 'params', 'step_time_s',
  'images_per_s', 'flop_per_s', 'peak_bytes', 'peak_rss_bytes'}

local csv
if cfg.BENCH_CSV ~= '' and log.is_main() then
  local err
  csv, err = io.open(cfg.BENCH_CSV, 'w')
  if not csv then
    error('benchmark_image_sizes: cannot open BENCH_CSV ' .. cfg.BENCH_CSV .. ': ' .. tostring(err), 0)
  end
  csv:write(table.concat(COLUMNS, ','), '\n')
  csv:flush()
end

local function fmt_csv(v)
  if math.type(v) == 'integer' then return string.format('%d', v) end
  return string.format('%.6g', v)
end

local layout = parallel.grid.new(cfg, world)
log.info('lunar %s: image-size benchmark, %dD images, sizes %d..%d by %d, patch %d, width %d, depth %d, ' ..
  '%d heads, batch %d per data-parallel rank; data %d x pipeline %d x tensor %d; %d warm-up + %d timed steps, ' ..
  '%d threads', lunar.version, cfg.IMG_DIMS, cfg.SWEEP_START, cfg.SWEEP_STOP, cfg.SWEEP_STEP, cfg.PATCH_SIZE,
  cfg.HIDDEN_SIZE, cfg.DEPTH, cfg.NUM_HEADS, cfg.BATCH_SIZE, layout.dp_size, layout.pp_size, layout.tp_size,
  cfg.BENCH_WARMUP, cfg.BENCH_STEPS, lunar.num_threads())
layout = nil
local header = string.format('%8s %9s %12s %12s %12s %14s %14s', 'img_size', 'tokens', 'step (ms)', 'images/s',
  'GFLOP/s', 'peak (MiB)', 'peak RSS (MiB)')
log.info('%s', header)
log.info('%s', string.rep('-', #header))
for _, size in ipairs(sizes) do
  local r = bench(size)
  log.info('%8s %9d %12.2f %12.2f %12.2f %14.1f %14.1f', r.img_dims == 3 and (size .. '^3') or (size .. '^2'),
    r.tokens, 1000 * r.step_time_s, r.images_per_s, r.flop_per_s / 1e9, r.peak_bytes / 2^20, r.peak_rss_bytes / 2^20)
  if csv then
    local cells = {}
    for i, k in ipairs(COLUMNS) do cells[i] = fmt_csv(r[k]) end
    csv:write(table.concat(cells, ','), '\n')
    csv:flush()   -- a later size that runs out of memory leaves the rows so far
  end
end
if csv then
  csv:close()
  log.info('wrote %s (%d rows)', cfg.BENCH_CSV, #sizes)
end
