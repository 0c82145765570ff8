-- examples/train_with_engine.lua: train a ViT with the low-level engine loop
-- (Colossal-AI's engine: zero_grad, forward, criterion, backward, step,
-- written out here; with pipeline stages or micro-batches execute_schedule
-- runs the batch's forward and backward instead). engine:train_step(x, y) is
-- these calls in one (lunar.engine), which the trainer and the benches use.
--
--   build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua [key=value ...]
--   make run [ARGS='NUM_EPOCHS=2']
--   mpirun -np 8 build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua \
--     'parallel={pipeline=2, tensor={mode="1d", size=2}}' NUM_MICRO_BATCHES=4
--
-- The same script runs on one rank and on every rank of an MPI job: the
-- process grid comes from the config's `parallel` dict (data-parallel size =
-- world / (pipeline x tensor)); BATCH_SIZE is per data-parallel rank.
-- A step is an optimizer update: MAX_STEPS, LOG_EVERY and SAVE_EVERY count
-- them; with gradient_accumulation = n a step takes n batches. Reports the
-- loss every LOG_EVERY steps (a progress bar on a terminal), the test accuracy
-- after each epoch ("test accuracy"; every EVAL_INTERVAL-th and the last), and writes one JSON line per step (its
-- batches' mean loss) and per evaluation to METRICS_FILE; with TENSORBOARD_DIR
-- set, the same values as TensorBoard scalars (lunar.tensorboard), and with
-- PLOT_FILE set, a PNG of the curves at the end (lunar plot).
--
-- Checkpoints (lunar.checkpoint): with CHECKPOINT_DIR set, a sharded checkpoint
-- every SAVE_EVERY steps and one at the end; RESUME='auto' (the newest complete
-- checkpoint in CHECKPOINT_DIR) or RESUME=<dir>/step_<N> continues that run:
-- model, optimizer, LR schedule, dropout streams, the engine's counters and the
-- loader's place in its epoch are restored, so the steps after a resume give
-- bitwise the losses of a run that never stopped (same layout; another layout
-- reshards the checkpoint and matches within float tolerance). A resumed run
-- keeps the METRICS_FILE lines of the steps it continues from.
--   build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua CHECKPOINT_DIR=ckpt SAVE_EVERY=100
--   build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua CHECKPOINT_DIR=ckpt RESUME=auto
local setup = require('lunar.setup')
local log = require('lunar.log')
local checkpoint = require('lunar.checkpoint')

-- config (checked on every rank: an error is printed once), threads, the process grid (rank 0 prints
-- it when there are several ranks), each data-parallel rank's shard of the data, this rank's part of the
-- model, loss, optimizer, LR schedule, engine: lunar.setup
local run = setup.from_config(lunar.args.config, lunar.args.overrides)
local cfg, grid, model, engine = run.cfg, run.grid, run.model, run.engine
local train_loader, test_loader = run.train_loader, run.test_loader
local batches_per_epoch, max_steps = run.batches_per_epoch, run.max_steps   -- max_steps: optimizer steps
local total_batches = batches_per_epoch * cfg.NUM_EPOCHS
log.info('lunar %s: ViT %d params, %d tokens, %d batches/epoch, %d epochs, %d steps, batch %d, %d threads',
  lunar.version, run.num_params, model.num_tokens, batches_per_epoch, cfg.NUM_EPOCHS, max_steps, run.global_batch,
  lunar.num_threads())

-- what a checkpoint holds and a resume restores (by reference: saved as it stands then)
local ckpt = {model = model, optimizer = run.optimizer, lr_scheduler = run.lr_scheduler, engine = engine,
  train_loader = train_loader, config = cfg, grid = grid, rng = {seed = cfg.SEED},
  step = 0,      -- optimizer steps done
  epoch = 0}     -- complete epochs
local start_epoch, start_batch = 0, 0
-- engine.optimizer_steps and engine.batches_done come back from the checkpoint
local resumed = checkpoint.maybe_resume(cfg, ckpt)   -- nil: a fresh start
if resumed then
  start_epoch, start_batch = resumed.loader.epoch, resumed.loader.batch
  ckpt.step, ckpt.epoch = engine.optimizer_steps, start_epoch
  if resumed.rng and resumed.rng.seed ~= nil and resumed.rng.seed ~= cfg.SEED then
    log.info('checkpoint: SEED is %s in the checkpoint, %d here: the data order and dropout masks differ ' ..
      'from the saved run', tostring(resumed.rng.seed), cfg.SEED)
  end
end
local start_step = engine.optimizer_steps

-- a resumed run keeps the METRICS_FILE lines of the steps it continues from
local kept = {}
if resumed and cfg.METRICS_FILE ~= '' and log.is_main() then
  local f = io.open(cfg.METRICS_FILE)
  if f then
    local json = require('lunar.json')
    for line in f:lines() do
      local ok, obj = pcall(json.decode, line)
      if ok and type(obj) == 'table' and type(obj.step) == 'number' and obj.step <= start_step then
        kept[#kept + 1] = obj
      end
    end
    f:close()
  end
end
local metrics = log.metrics(cfg.METRICS_FILE)
for _, obj in ipairs(kept) do metrics:write(obj) end
-- TENSORBOARD_DIR: every metrics line from here on is also a TensorBoard event on rank 0 (lunar.tensorboard)
metrics = require('lunar.tensorboard').tee(metrics, cfg.TENSORBOARD_DIR, {device = grid.device})
-- one metrics line per optimizer step, a console line every LOG_EVERY steps (log.step_meter)
local meter = log.step_meter{metrics = metrics, log_every = cfg.LOG_EVERY, flops_per_image = run.flops_per_image}

-- the batches still to train: to the end of the last epoch, or to the update that reaches MAX_STEPS
local ga = cfg.gradient_accumulation
local function batches_left()
  return math.min(total_batches - engine.batches_done,
    (max_steps - engine.optimizer_steps) * ga - engine.batches_done % ga)
end

for epoch = start_epoch, cfg.NUM_EPOCHS - 1 do
  if batches_left() <= 0 then break end
  engine:train()
  -- a resume continues in the middle of its epoch: maybe_resume put the loader there (loader:seek);
  -- set_epoch would start the epoch over
  local i = 0
  if resumed and epoch == start_epoch then i = start_batch else train_loader:set_epoch(epoch) end
  local bar = log.progress(math.min(batches_per_epoch, i + batches_left()), string.format('epoch %d', epoch + 1))
  local t_epoch, images_epoch = lunar.clock(), 0
  meter:start()
  while batches_left() > 0 do
    local x, y = train_loader:next()
    if not x then break end
    -- one training step, written out (engine:train_step does exactly this)
    engine:zero_grad()
    local loss
    if engine:uses_schedule() then
      -- pipeline stages or micro-batches: the forward and backward of the whole batch
      loss = engine:execute_schedule(x, y)
    else
      local logits = engine(x)
      loss = engine:criterion(logits, y)
      engine:backward(loss)
      logits:free()
      loss = engine:all_reduce_metric(loss)    -- averaged over the data-parallel ranks
    end
    local lr, updated = engine:step()            -- false inside a gradient accumulation cycle
    local n = y:numel() * grid.dp_size
    x:free(); y:free()
    i, images_epoch = i + 1, images_epoch + n
    meter:batch(loss, n)
    bar:update(i, string.format('loss %.4f lr %.2e', loss, lr))
    if updated then
      local step = engine.optimizer_steps
      meter:optimizer_step{step = step, total = max_steps, epoch = epoch + 1, lr = lr, console = not bar.active}
      ckpt.step, ckpt.epoch = step, i >= batches_per_epoch and epoch + 1 or epoch
      checkpoint.maybe_save(cfg, ckpt)   -- every SAVE_EVERY steps (collective: every rank calls it)
    end
  end
  bar:finish()
  local train_time = lunar.clock() - t_epoch
  -- the test accuracy after every EVAL_INTERVAL-th epoch and after the last one
  local last = epoch == cfg.NUM_EPOCHS - 1 or batches_left() <= 0
  if cfg.EVAL_EVERY_EPOCH and ((epoch + 1) % cfg.EVAL_INTERVAL == 0 or last) then
    local t_eval = lunar.clock()
    local acc, correct, total = engine:evaluate(test_loader, 0)
    log.info('epoch %d: test accuracy %.2f%% (%d/%d), train %.1f s (%.1f img/s), eval %.1f s', epoch + 1,
      100 * acc, correct, total, train_time, images_epoch / train_time, lunar.clock() - t_eval)
    metrics:write{epoch = epoch + 1, step = engine.optimizer_steps, test_accuracy = acc, train_seconds = train_time,
      images_per_s = images_epoch / train_time}
  end
end
-- the final checkpoint (unless this step was just saved, or this run trained nothing)
if engine.optimizer_steps > start_step then checkpoint.maybe_save(cfg, ckpt, {final = true}) end
log.peak_memory(grid.device)   -- device = 'cuda': the model, its state and the activations are there
metrics:close()
require('lunar.plot').at_end(cfg)   -- PLOT_FILE: the curves of METRICS_FILE (lunar plot, gnuplot)
