-- bench/train_scaling.lua: images/s of one training configuration on this
-- job's ranks (not a test): bench/scaling's training half runs it on 1 rank x
-- 2 threads and on 2 ranks x 1 thread (data parallel).
--
--   build/lunar bench/train_scaling.lua --config configs/vit_fmnist.lua MAX_STEPS=15 [key=value ...]
--   mpirun -np 2 build/lunar bench/train_scaling.lua --config configs/vit_fmnist.lua BATCH_SIZE=64
--
-- Every rank trains the config's ViT (its part of the grid from the
-- `parallel` dict: lunar.parallel) on one fixed random batch of BATCH_SIZE
-- images per data-parallel rank (no data loading in the timing); a timed step
-- is engine:train_step: zero_grad + forward + loss + backward (with the
-- bucketed, overlapped data-parallel all_reduce) + step (AdamW, lr 1e-4,
-- label smoothing 0.1 unless the command line sets LEARNING_RATE or
-- LABEL_SMOOTHING), or the schedule with pipeline stages / micro-batches.
-- After 3 warm-up steps, MAX_STEPS (default 15) steps are timed (with
-- gradient_accumulation = n, n batches each); the step time is the slowest
-- rank's. Rank 0
-- prints ONE JSON line starting {"bench":"train_scaling": the global batch,
-- median step time, images/s (global batch / median), ranks, threads, layout.
local setup = require('lunar.setup')
local json = require('lunar.json')

-- the bench's optimizer settings first, so that the command line's win
local overrides = {'LEARNING_RATE=1e-4', 'LABEL_SMOOTHING=0.1'}
for _, o in ipairs(lunar.args.overrides) do overrides[#overrides + 1] = o end
local run = setup.from_config(lunar.args.config, overrides, {loaders = false, quiet = true})
local cfg, g, eng = run.cfg, run.grid, run.engine
local steps = cfg.MAX_STEPS > 0 and cfg.MAX_STEPS or 15
local warmup = 3

local shape = {cfg.BATCH_SIZE, cfg.IN_CHANS}
for _ = 1, cfg.IMG_DIMS do table.insert(shape, cfg.IMG_SIZE) end
local x = lunar.empty(shape):normal_(cfg.SEED, 'bench.images.' .. g.dp_rank, 0, 1)
local y = lunar.empty({cfg.BATCH_SIZE}, 'i32')
for i = 1, cfg.BATCH_SIZE do y[i] = (i * 7 + g.dp_rank) % cfg.NUM_CLASSES end

local times = {}
for s = 1, warmup + steps do
  g.world:barrier()
  local t0 = lunar.clock()
  for _ = 1, cfg.gradient_accumulation do eng:train_step(x, y) end
  local dt = g.world:all_reduce_number(lunar.clock() - t0, 'max')
  if s > warmup then times[#times + 1] = dt end
end
table.sort(times)
local median = times[(#times + 1) // 2]
local global_batch = cfg.BATCH_SIZE * g.dp_size * cfg.gradient_accumulation   -- images per optimizer step
if g.rank == 0 then
  local body = json.encode{
    ranks = g.world_size, threads = lunar.num_threads(), dp = g.dp_size, tp = g.tp_size, pp = g.pp_size,
    global_batch = global_batch, steps = steps, step_ms_median = median * 1e3, step_ms_min = times[1] * 1e3,
    step_ms_max = times[#times] * 1e3, images_per_s = global_batch / median,
    peak_rss_mb = lunar.memory().peak_rss_bytes / 2^20,
  }
  print('{"bench":"train_scaling",' .. body:sub(2))
end
