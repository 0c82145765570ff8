-- examples/train_with_trainer.lua: train a ViT with the high-level trainer
-- (Colossal-AI's Trainer.fit with hooks). Same model, config, seed, data order
-- and learning-rate schedule as examples/train_with_engine.lua, so the same
-- losses step by step and the same test accuracy.
--
--   build/lunar examples/train_with_trainer.lua --config configs/vit_fmnist.lua [key=value ...]
--
-- Reports the loss every LOG_EVERY steps (a progress bar on a terminal), the
-- test accuracy after each epoch ("test accuracy"), the memory after each
-- epoch, and writes one JSON line per step and per test to METRICS_FILE. With
-- CHECKPOINT_DIR set, saves a checkpoint every SAVE_EVERY steps and at the end
-- (needs lua/lunar/checkpoint.lua).
--
-- Parallel runs take the layout from the config's `parallel` dict
-- (lunar.parallel): mpirun -np 4 build/lunar examples/train_with_trainer.lua
-- --config configs/vit_fmnist.lua 'parallel={pipeline=2,tensor={mode="1d",size=2}}'
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local data = require('lunar.data')
local models = require('lunar.models')
local engine_mod = require('lunar.engine')
local log = require('lunar.log')
local Trainer = require('lunar.trainer')
local hooks = require('lunar.hooks')
local parallel = require('lunar.parallel')

-- a config error is printed once, before any collective
local cfg = parallel.same_on_every_rank(config.load, lunar.args.config, lunar.args.overrides)
parallel.same_on_every_rank(config.check_machine, cfg)   -- e.g. precision = 'bf16' on a CPU without avx512_bf16
if cfg.NUM_THREADS and cfg.NUM_THREADS > 0 then lunar.set_num_threads(cfg.NUM_THREADS) end
local grid = parallel.initialize(cfg)   -- data x pipeline x tensor (one rank: all 1)

-- data: each data-parallel rank reads its shard; the ranks of a tensor and
-- pipeline group read the same batches
local train_ds, test_ds = data.datasets(cfg)
local train_loader = data.loader(train_ds, cfg, {train = true, rank = grid.dp_rank, num_shards = grid.dp_size})
local test_loader = data.loader(test_ds, cfg, {train = false, batch_size = 500,   -- eval keeps no activations
  rank = grid.dp_rank, num_shards = grid.dp_size})
local steps_per_epoch = train_loader:num_batches()

-- model (this rank's tensor shards and pipeline stage), loss, optimizer, schedule
local model = nn.materialize(parallel.vit(cfg, grid), cfg.SEED, {init = cfg.INIT, precision = cfg.precision})
local params = model:parameters()
local num_params = models.vit(cfg):num_parameters()   -- the whole model's, not allocated
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

-- the schedule goes to LRSchedulerHook, not to the engine
local engine = engine_mod.initialize{model = model, optimizer = optimizer, criterion = criterion,
  clip_grad_norm = cfg.clip_grad_norm, gradient_accumulation = cfg.gradient_accumulation, grid = grid}

local flops_per_image = models.vit_train_flops_per_image(cfg, num_params)
log.info('lunar %s: ViT %d params, %d tokens, %d steps/epoch, %d epochs, batch %d, %d threads (trainer)',
  lunar.version, num_params, model.num_tokens, steps_per_epoch, cfg.NUM_EPOCHS, cfg.BATCH_SIZE * grid.dp_size,
  lunar.num_threads())

local hook_list = {
  hooks.LRSchedulerHook{lr_scheduler = lr_scheduler},
  hooks.LossHook{},
  hooks.AccuracyHook{},
  hooks.ThroughputHook{flops_per_image = flops_per_image, ignored_steps = 1, data_parallel_size = grid.dp_size},
  hooks.LogMetricByStepHook{metrics = cfg.METRICS_FILE, log_every = cfg.LOG_EVERY, flops_per_image = flops_per_image},
  hooks.LogMetricByEpochHook{},
  hooks.LogMemoryByEpochHook{log_eval = false},
}
if cfg.CHECKPOINT_DIR ~= '' then
  hook_list[#hook_list + 1] = hooks.SaveCheckpointHook{dir = cfg.CHECKPOINT_DIR, every_steps = cfg.SAVE_EVERY}
end

local trainer = Trainer{engine = engine, logger = log, config = cfg}
trainer:fit{
  train_loader = train_loader,
  test_loader = cfg.EVAL_EVERY_EPOCH and test_loader or nil,
  epochs = cfg.NUM_EPOCHS,
  max_steps = cfg.MAX_STEPS,                    -- batches, as the engine example counts them
  test_interval = 1,
  hooks = hook_list,
  display_progress = true,
}
local mem = lunar.memory()
log.info('peak memory: %.1f MiB in tensors, %.1f MiB resident', mem.peak_bytes / 2^20, mem.peak_rss_bytes / 2^20)
if grid.device ~= 'cpu' then   -- device = 'cuda': the model, its state and the activations are there
  log.info('peak memory on %s: %.1f MiB in tensors', grid.device, lunar.cuda.memory(grid.device).peak_bytes / 2^20)
end
