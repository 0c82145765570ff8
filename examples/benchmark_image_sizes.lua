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
-- parallelism, and parallel.domain shards each image over domain ranks
-- (PhysicsNeMo's --domain_size; MODEL = 'hybrid_vit', the reference's model:
-- configs/recipes/hybrid_vit_image_sizes.lua): each rank then generates only
-- its slab of the batch's images. precision = 'bf16' is the reference's
-- --use_mixed_precision. MEMORY_BUDGET (bytes per rank or a size like '64MiB'; unset = none): a size whose
-- peak tensor memory exceeds it on some rank, or whose allocation fails, is a
-- row marked out-of-memory and the sweep stops there (larger images need
-- more); an allocation failure on one rank alone while the others wait in a
-- collective still ends the job through the MPI host.
--
-- Step time is the mean over the timed steps (the slowest rank's); images/s
-- and FLOP/s are global (all data-parallel ranks); FLOPs per image are
-- 6 * params * tokens + 12 * depth * tokens^2 * width (lunar.models; a MODEL's
-- as lunar.setup counts them); tokens per rank are the image's tokens on one
-- domain rank (the most); peak memory is the tensor allocator's peak during
-- that size (the largest over ranks), activation memory that peak less what
-- stays allocated between steps (weights, gradients, AdamW state, the batch),
-- and the process's peak resident set so far.
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
  local d = model.domain                     -- domain parallel: this rank's slab (lunar.parallel.domain)

  -- one batch of this data-parallel rank's synthetic images (learnable
  -- patterns, lunar.data.synthetic); the same on the ranks of a tensor or
  -- pipeline group; a domain rank generates its slab only
  local spatial = {}
  for i = 1, c.IMG_DIMS do spatial[i] = size end
  -- (labels from the batch's first classes only: the generator keeps one pattern per class, which for a
  -- 1000-class head and a large volume would outgrow the model)
  local ds = lunar.data.synthetic(c.BATCH_SIZE, c.IN_CHANS, c.IMG_DIMS, spatial, math.min(c.NUM_CLASSES, c.BATCH_SIZE),
    c.SEED + 1000 * g.dp_rank, d and {d.pixel_row0, d.pixel_rows} or nil)
  local loader = lunar.data.loader(ds, {batch_size = c.BATCH_SIZE, shuffle = false, prefetch = false})
  local x, y = loader:next()
  loader:free()   -- the dataset goes with the garbage collector

  local function step()                      -- one optimizer step (gradient_accumulation batches)
    local loss
    for _ = 1, c.gradient_accumulation do loss = engine:train_step(x, y) end
    return loss
  end

  for _ = 1, c.BENCH_WARMUP do step() end
  local resting = lunar.memory().bytes_in_use   -- weights, gradients, optimizer state, the batch
  lunar.reset_peak_memory()
  world:barrier()
  local t0 = lunar.clock()
  local loss
  for _ = 1, c.BENCH_STEPS do loss = step() end
  local step_time = max_over_ranks((lunar.clock() - t0) / c.BENCH_STEPS)
  local mem = lunar.memory()
  local flops_per_image = run.flops_per_image
  local images_per_s = c.BATCH_SIZE * c.gradient_accumulation * dp / step_time   -- every replica its own batches
  local tokens = model.num_tokens
  local row = {
    img_size = size, img_dims = c.IMG_DIMS, tokens = tokens, tokens_per_rank = d and max_over_ranks(d.tokens) or tokens,
    batch_size = c.BATCH_SIZE, data_parallel = dp, domain = g.domain_size, params = params, step_time_s = step_time,
    images_per_s = images_per_s, flop_per_s = images_per_s * flops_per_image,
    peak_bytes = max_over_ranks(mem.peak_bytes), activation_bytes = max_over_ranks(mem.peak_bytes - resting),
    peak_rss_bytes = max_over_ranks(mem.peak_rss_bytes), loss = loss, status = 'ok',
  }
  x:free(); y:free()
  run, engine, model = nil, nil, nil
  return row
end

--- bench(size), or a row marked out-of-memory: the peak over the ranks is above
-- MEMORY_BUDGET (bytes per rank), or an allocation failed on every rank.
local function bench_or_oom(size)
  local ok, row = pcall(bench, size)
  local failed = ok and 0 or 1
  if world:size() > 1 then failed = world:all_reduce_number(failed, 'max') end
  if failed == 0 then
    local budget = cfg.MEMORY_BUDGET or 0
    if budget > 0 and row.peak_bytes > budget then
      row.status = string.format('out-of-memory (peak %.1f MiB > MEMORY_BUDGET %.1f MiB)', row.peak_bytes / 2^20,
        budget / 2^20)
    end
    return row
  end
  local msg = ok and 'on another rank' or tostring(row)
  if not msg:lower():find('out of memory', 1, true) and not msg:find('another rank', 1, true) then error(row, 0) end
  collectgarbage(); collectgarbage(); lunar.empty_cache()
  return {img_size = size, img_dims = cfg.IMG_DIMS, status = 'out-of-memory (' .. msg:gsub('\n.*', '') .. ')'}
end

local COLUMNS = {'img_size', 'img_dims', 'tokens', 'batch_size', 'data_parallel', 'params', 'step_time_s',
  'images_per_s', 'flop_per_s', 'peak_bytes', 'peak_rss_bytes', 'domain', 'tokens_per_rank', 'activation_bytes', 'status'}

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
  if v == nil then return '' end
  if type(v) == 'string' then return '"' .. v:gsub('"', "'") .. '"' end
  if math.type(v) == 'integer' then return string.format('%d', v) end
  return string.format('%.6g', v)
end

local layout = parallel.grid.new(cfg, world)
log.info('lunar %s: image-size benchmark, %s, %dD images, sizes %d..%d by %d, patch %d, width %d, depth %d, ' ..
  '%d heads, batch %d per data-parallel rank; data %d x pipeline %d x tensor %d x domain %d%s; %s; %d warm-up + %d ' ..
  'timed steps, %d threads', lunar.version, type(cfg.MODEL) == 'string' and cfg.MODEL or (cfg.MODEL and 'MODEL' or
  'vit'), cfg.IMG_DIMS, cfg.SWEEP_START, cfg.SWEEP_STOP, cfg.SWEEP_STEP, cfg.PATCH_SIZE, cfg.HIDDEN_SIZE, cfg.DEPTH,
  cfg.NUM_HEADS, cfg.BATCH_SIZE, layout.dp_size, layout.pp_size, layout.tp_size, layout.domain_size,
  layout.domain_size > 1 and (' (' .. layout.domain_attention .. ' attention)') or '', cfg.precision,
  cfg.BENCH_WARMUP, cfg.BENCH_STEPS, lunar.num_threads())
layout = nil
local header = string.format('%8s %9s %6s %10s %11s %10s %10s %11s %11s %11s', 'img_size', 'tokens', 'domain',
  'tok/rank', 'step (ms)', 'images/s', 'GFLOP/s', 'peak (MiB)', 'act (MiB)', 'RSS (MiB)')
log.info('%s', header)
log.info('%s', string.rep('-', #header))
local rows = 0
for _, size in ipairs(sizes) do
  local r = bench_or_oom(size)
  local label = r.img_dims == 3 and (size .. '^3') or (size .. '^2')
  if r.step_time_s and r.status == 'ok' then
    log.info('%8s %9d %6d %10d %11.2f %10.2f %10.2f %11.1f %11.1f %11.1f', label, r.tokens, r.domain, r.tokens_per_rank,
      1000 * r.step_time_s, r.images_per_s, r.flop_per_s / 1e9, r.peak_bytes / 2^20, r.activation_bytes / 2^20,
      r.peak_rss_bytes / 2^20)
  else
    log.info('%8s %s', label, r.status)
  end
  rows = rows + 1
  if csv then
    local cells = {}
    for i, k in ipairs(COLUMNS) do cells[i] = fmt_csv(r[k]) end
    csv:write(table.concat(cells, ','), '\n')
    csv:flush()   -- a later size that runs out of memory leaves the rows so far
  end
  if r.status ~= 'ok' then
    log.info('stopping the sweep: larger images need more memory')
    break
  end
end
if csv then
  csv:close()
  log.info('wrote %s (%d rows)', cfg.BENCH_CSV, rows)
end
