-- examples/train_with_engine.lua: train a ViT with the low-level engine loop
-- (Colossal-AI's engine: zero_grad, forward, criterion, backward, step; or
-- execute_schedule for a whole pipeline schedule).
--
--   build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua [key=value ...]
--   make run [ARGS='NUM_EPOCHS=2']
--   mpirun -np 8 build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua \
--     'parallel={pipeline=2, tensor={mode="1d", size=2}}' NUM_MICRO_BATCHES=4
--
-- The same script runs on one rank and on every rank of an MPI job: the
-- process grid comes from the config's `parallel` dict (data-parallel size =
-- world / (pipeline x tensor)); BATCH_SIZE is per data-parallel rank.
-- Reports the loss every LOG_EVERY steps (a progress bar on a terminal), the
-- test accuracy after each epoch ("test accuracy"), and writes one JSON line
-- per step and per evaluation to METRICS_FILE.
--
-- Checkpoints (lunar.checkpoint): with CHECKPOINT_DIR set, a sharded checkpoint
-- every SAVE_EVERY steps and one at the end; RESUME='auto' (the newest complete
-- checkpoint in CHECKPOINT_DIR) or RESUME=<dir>/step_<N> continues that run:
-- model, optimizer, LR schedule, dropout streams, gradient accumulation and the
-- loader's place in its epoch are restored, so the steps after a resume give
-- bitwise the losses of a run that never stopped (same layout; another layout
-- reshards the checkpoint and matches within float tolerance). A resumed run
-- keeps the METRICS_FILE lines of the steps it continues from.
--   build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua CHECKPOINT_DIR=ckpt SAVE_EVERY=100
--   build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua CHECKPOINT_DIR=ckpt RESUME=auto
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local data = require('lunar.data')
local models = require('lunar.models')
local engine_mod = require('lunar.engine')
local parallel = require('lunar.parallel')
local log = require('lunar.log')
local checkpoint = require('lunar.checkpoint')

-- a config or layout error is the same on every rank: printed once, every rank exits 1
local cfg = parallel.same_on_every_rank(config.load, lunar.args.config, lunar.args.overrides)
parallel.same_on_every_rank(config.check_machine, cfg)   -- e.g. precision = 'bf16' on a CPU without avx512_bf16
if cfg.NUM_THREADS and cfg.NUM_THREADS > 0 then lunar.set_num_threads(cfg.NUM_THREADS) end
local grid = parallel.initialize(cfg)          -- rank 0 prints the grid when there are several ranks

-- data: each data-parallel rank reads its shard
local train_ds, test_ds = data.datasets(cfg)
local train_loader = data.loader(train_ds, cfg, {train = true, rank = grid.dp_rank, num_shards = grid.dp_size})
local test_loader = data.loader(test_ds, cfg, {train = false, batch_size = 500,   -- eval keeps no activations
  rank = grid.dp_rank, num_shards = grid.dp_size})
local steps_per_epoch = train_loader:num_batches()
local total_steps = steps_per_epoch * cfg.NUM_EPOCHS
if cfg.MAX_STEPS > 0 then total_steps = math.min(total_steps, cfg.MAX_STEPS) end

-- model (this rank's tensor shards and pipeline stage), loss, optimizer, schedule
local model = nn.materialize(parallel.vit(cfg, grid), cfg.SEED, {init = cfg.INIT, precision = cfg.precision})
local params = model:parameters()
local num_params = models.vit(cfg):num_parameters()   -- the whole model's
local criterion = nn.CrossEntropy{label_smoothing = cfg.LABEL_SMOOTHING}
local optimizer
if cfg.OPTIMIZER == 'sgd' then
  optimizer = optim.SGD(params, {lr = cfg.LEARNING_RATE, momentum = cfg.MOMENTUM, weight_decay = cfg.WEIGHT_DECAY})
else
  optimizer = optim.AdamW(params, {lr = cfg.LEARNING_RATE, betas = {cfg.BETA1, cfg.BETA2}, eps = cfg.EPS,
    weight_decay = cfg.WEIGHT_DECAY})
end
-- the schedule spans the whole run (NUM_EPOCHS), so MAX_STEPS only cuts it short; it counts
-- optimizer updates: one every gradient_accumulation batches
local updates_per_epoch = math.max(1, steps_per_epoch // cfg.gradient_accumulation)
local lr_scheduler = schedule.warmup_cosine{base_lr = cfg.LEARNING_RATE, min_lr = cfg.MIN_LR,
  warmup_steps = math.floor(cfg.WARMUP_EPOCHS * updates_per_epoch + 0.5),
  total_steps = updates_per_epoch * cfg.NUM_EPOCHS}

local engine = engine_mod.initialize{model = model, optimizer = optimizer, criterion = criterion,
  lr_scheduler = lr_scheduler, clip_grad_norm = cfg.clip_grad_norm,
  gradient_accumulation = cfg.gradient_accumulation, grid = grid}

local flops_per_image = models.vit_train_flops_per_image(cfg, num_params)
local global_batch = cfg.BATCH_SIZE * grid.dp_size
log.info('lunar %s: ViT %d params, %d tokens, %d steps/epoch, %d epochs, batch %d, %d threads',
  lunar.version, num_params, model.num_tokens, steps_per_epoch, cfg.NUM_EPOCHS, global_batch, lunar.num_threads())

-- what a checkpoint holds and a resume restores (by reference: saved as it stands then)
local ckpt = {model = model, optimizer = optimizer, lr_scheduler = lr_scheduler, engine = engine,
  train_loader = train_loader, config = cfg, grid = grid, rng = {seed = cfg.SEED},
  step = 0,      -- iterations (batches) done
  epoch = 0}     -- complete epochs
local step, start_epoch, start_batch = 0, 0, 0
local resumed = checkpoint.maybe_resume(cfg, ckpt)   -- nil: a fresh start
if resumed then
  step, start_epoch, start_batch = resumed.step, resumed.loader.epoch, resumed.loader.batch
  ckpt.step, ckpt.epoch = step, start_epoch
  if resumed.rng and resumed.rng.seed ~= nil and resumed.rng.seed ~= cfg.SEED then
    log.info('checkpoint: SEED is %s in the checkpoint, %d here: the data order and dropout masks differ ' ..
      'from the saved run', tostring(resumed.rng.seed), cfg.SEED)
  end
end
local start_step = step

-- a resumed run keeps the METRICS_FILE lines of the steps it continues from
local kept = {}
if resumed and cfg.METRICS_FILE ~= '' and log.is_main() then
  local f = io.open(cfg.METRICS_FILE)
  if f then
    local cjson = require('cjson')
    for line in f:lines() do
      local ok, obj = pcall(cjson.decode, line)
      if ok and type(obj) == 'table' and type(obj.step) == 'number' and obj.step <= step then kept[#kept + 1] = obj end
    end
    f:close()
  end
end
local metrics = log.metrics(cfg.METRICS_FILE)
for _, obj in ipairs(kept) do metrics:write(obj) end

for epoch = start_epoch, cfg.NUM_EPOCHS - 1 do
  if step >= total_steps then break end
  engine:train()
  -- a resume continues in the middle of its epoch: maybe_resume put the loader there (loader:seek);
  -- set_epoch would start the epoch over
  local i = 0
  if resumed and epoch == start_epoch then i = start_batch else train_loader:set_epoch(epoch) end
  local bar = log.progress(math.min(steps_per_epoch, i + total_steps - step), string.format('epoch %d', epoch + 1))
  local t_epoch, images_epoch, t_last, images_last = lunar.clock(), 0, lunar.clock(), 0
  while step < total_steps do
    local t0 = lunar.clock()
    local x, y = train_loader:next()
    if not x then break end
    engine:zero_grad()
    local loss
    if engine:uses_schedule() then
      -- pipeline stages or micro-batches: the whole schedule for the batch
      loss = engine:execute_schedule(x, y)
    else
      local logits = engine(x)
      loss = engine:criterion(logits, y)
      engine:backward(loss)
      logits:free()
      loss = engine:all_reduce_metric(loss)    -- averaged over the data-parallel ranks
    end
    local lr = engine:step()
    local dt = lunar.clock() - t0
    local n = y:numel() * grid.dp_size
    x:free(); y:free()
    step, i = step + 1, i + 1
    images_epoch, images_last = images_epoch + n, images_last + n
    metrics:write{step = step, epoch = epoch + 1, loss = loss, lr = lr, images_per_s = n / dt}
    ckpt.step, ckpt.epoch = step, i >= steps_per_epoch and epoch + 1 or epoch
    checkpoint.maybe_save(cfg, ckpt)   -- every SAVE_EVERY steps (collective: every rank calls it)
    bar:update(i, string.format('loss %.4f lr %.2e', loss, lr))
    if not bar.active and (step % cfg.LOG_EVERY == 0 or step == total_steps) then
      local now = lunar.clock()
      local ips = images_last / (now - t_last)
      log.info('epoch %d step %d/%d loss %.4f lr %.3e %.1f img/s %.1f GFLOP/s', epoch + 1, step, total_steps,
        loss, lr, ips, ips * flops_per_image / 1e9)
      t_last, images_last = now, 0
    end
  end
  bar:finish()
  local train_time = lunar.clock() - t_epoch
  if cfg.EVAL_EVERY_EPOCH then
    local t_eval = lunar.clock()
    local acc, correct, total = engine:evaluate(test_loader, 0)
    log.info('epoch %d: test accuracy %.2f%% (%d/%d), train %.1f s (%.1f img/s), eval %.1f s', epoch + 1,
      100 * acc, correct, total, train_time, images_epoch / train_time, lunar.clock() - t_eval)
    metrics:write{epoch = epoch + 1, step = step, test_accuracy = acc, train_seconds = train_time,
      images_per_s = images_epoch / train_time}
  end
end
-- the final checkpoint (unless this step was just saved, or this run trained nothing)
if step > start_step then checkpoint.maybe_save(cfg, ckpt, {final = true}) end
local mem = lunar.memory()
log.info('peak memory: %.1f MiB in tensors, %.1f MiB resident', mem.peak_bytes / 2^20, mem.peak_rss_bytes / 2^20)
if grid.device ~= 'cpu' then   -- device = 'cuda': the model, its state and the activations are there
  log.info('peak memory on %s: %.1f MiB in tensors', grid.device, lunar.cuda.memory(grid.device).peak_bytes / 2^20)
end
metrics:close()
