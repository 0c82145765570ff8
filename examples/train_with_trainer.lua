-- examples/train_with_trainer.lua: train a ViT with the high-level trainer
-- (Colossal-AI's Trainer.fit with hooks). Same model, config, seed, data order
-- and learning-rate schedule as examples/train_with_engine.lua, so the same
-- losses step by step and the same test accuracy.
--
--   build/lunar examples/train_with_trainer.lua --config configs/vit_fmnist.lua [key=value ...]
--
-- A step is an optimizer update (MAX_STEPS, LOG_EVERY, SAVE_EVERY; with
-- gradient_accumulation = n it takes n batches). Reports the loss every
-- LOG_EVERY steps (a progress bar on a terminal), the test accuracy after each
-- epoch ("test accuracy"), the memory after each epoch, and writes one JSON
-- line per step and per test to METRICS_FILE. With CHECKPOINT_DIR set, saves
-- a checkpoint every SAVE_EVERY steps and at the end; with TENSORBOARD_DIR,
-- TensorBoard scalars (hooks.TensorboardHook); with PLOT_FILE, a PNG of the
-- curves at the end (lunar plot).
--
-- Parallel runs take the layout from the config's `parallel` dict
-- (lunar.parallel): mpirun -np 4 build/lunar examples/train_with_trainer.lua
-- --config configs/vit_fmnist.lua 'parallel={pipeline=2,tensor={mode="1d",size=2}}'
local setup = require('lunar.setup')
local log = require('lunar.log')
local Trainer = require('lunar.trainer')
local hooks = require('lunar.hooks')

-- config, threads, grid, data, model, loss, optimizer, LR schedule and engine (lunar.setup); the
-- schedule goes to LRSchedulerHook, not to the engine
local run = setup.from_config(lunar.args.config, lunar.args.overrides, {engine_schedule = false})
local cfg, grid = run.cfg, run.grid
log.info('lunar %s: ViT %d params, %d tokens, %d batches/epoch, %d epochs, %d steps, batch %d, %d threads (trainer)',
  lunar.version, run.num_params, run.model.num_tokens, run.batches_per_epoch, cfg.NUM_EPOCHS, run.max_steps,
  run.global_batch, lunar.num_threads())

local hook_list = {
  hooks.LRSchedulerHook{lr_scheduler = run.lr_scheduler},
  hooks.LossHook{},
  hooks.AccuracyHook{},
  hooks.ThroughputHook{flops_per_image = run.flops_per_image, ignored_steps = 1, data_parallel_size = grid.dp_size},
  hooks.LogMetricByStepHook{metrics = cfg.METRICS_FILE, log_every = cfg.LOG_EVERY, flops_per_image = run.flops_per_image},
  hooks.LogMetricByEpochHook{},
  hooks.LogMemoryByEpochHook{log_eval = false},
}
if cfg.TENSORBOARD_DIR ~= '' then
  hook_list[#hook_list + 1] = hooks.TensorboardHook{log_dir = cfg.TENSORBOARD_DIR, device = grid.device}
end
if cfg.CHECKPOINT_DIR ~= '' then
  hook_list[#hook_list + 1] = hooks.SaveCheckpointHook{dir = cfg.CHECKPOINT_DIR, every_steps = cfg.SAVE_EVERY}
end

local trainer = Trainer{engine = run.engine, logger = log, config = cfg}
trainer:fit{
  train_loader = run.train_loader,
  test_loader = cfg.EVAL_EVERY_EPOCH and run.test_loader or nil,
  epochs = cfg.NUM_EPOCHS,
  max_steps = cfg.MAX_STEPS,                    -- optimizer steps, as the engine example counts them
  test_interval = cfg.EVAL_INTERVAL,           -- and after the last epoch
  hooks = hook_list,
  display_progress = true,
}
log.peak_memory(grid.device)   -- device = 'cuda': the model, its state and the activations are there
require('lunar.plot').at_end(cfg)   -- PLOT_FILE: the curves of METRICS_FILE (lunar plot, gnuplot)
