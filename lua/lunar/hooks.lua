--- lunar.hooks: the trainer's hooks, named as Colossal-AI's
-- (colossalai.legacy.trainer.hooks).
--
--   local hooks = require('lunar.hooks')
--   trainer:fit{..., hooks = {
--     hooks.LRSchedulerHook{lr_scheduler = s},             -- priority 1: the lr of each step
--     hooks.LossHook{},                                     -- 0: train/test loss metrics
--     hooks.AccuracyHook{},                                 -- 0: train/test top-1 accuracy
--     hooks.ThroughputHook{flops_per_image = f, ignored_steps = 5},   -- 10: images/s, FLOP/s
--     hooks.LogMetricByEpochHook{},                         -- 10: a line per epoch and test
--     hooks.LogMetricByStepHook{metrics = 'm.jsonl', log_every = 50},  -- 10: JSON lines
--     hooks.LogMemoryByEpochHook{},                         -- 10: lunar.memory() per epoch
--     hooks.TensorboardHook{log_dir = 'tb'},                -- 10: TensorBoard scalars, rank 0
--     hooks.SaveCheckpointHook{dir = 'ckpt', every_steps = 1000},      -- 10: checkpoint.save
--     {name = 'mine', priority = 5, after_train_iter = function(self, trainer, logits, labels, loss) end},
--     function(event, trainer, ...) end,                    -- called on every event
--   }}
--
-- Events and their arguments (after `trainer`):
--   before_train, after_train, before_train_epoch, after_train_epoch,
--   before_test, after_test                        (none)
--   before_train_iter, before_test_iter            images, labels
--   after_train_iter, after_test_iter              logits, labels, loss (a number)
-- The tensors are valid during the call only (the trainer frees them after).
--
-- Hooks run in ascending priority (Colossal-AI's defaults: 0 for the metric
-- hooks, 1 for the LR schedule, 10 for logging and checkpoints; 0 for a user
-- table without one, 100 for a plain function); equal priorities keep the
-- order given. A hook's `attach(trainer)`, if any, runs once when fit starts.
-- Metrics live in trainer.states.metrics.train / .test by name (`loss`,
-- `accuracy`, `throughput`, `flop_per_s`, `lr`); each is a `hooks.Metric`.
-- @module lunar.hooks
local class = require('lunar.class')
local log = require('lunar.log')

local hooks = {}

hooks.EVENTS = {
  'before_train', 'after_train', 'before_train_epoch', 'after_train_epoch',
  'before_train_iter', 'after_train_iter', 'before_test', 'after_test',
  'before_test_iter', 'after_test_iter',
}
local IS_EVENT = {}
for _, e in ipairs(hooks.EVENTS) do IS_EVENT[e] = true end
hooks.IS_EVENT = IS_EVENT

-- ---------------------------------------------------------------------------
-- metrics

--- A running metric: `update(sum, count)` adds a batch (the batch's total and
-- its weight), `value()` is the accumulated mean, `last` the last batch's mean.
hooks.Metric = class('Metric')

function hooks.Metric:__init(name) self.name = name; self:reset() end
function hooks.Metric:reset() self.sum, self.count, self.last = 0, 0, nil end

function hooks.Metric:update(sum, count)
  count = count or 1
  self.sum, self.count = self.sum + sum, self.count + count
  self.last = count > 0 and sum / count or nil
end

--- The accumulated mean (nil before the first update).
function hooks.Metric:value() return self.count > 0 and self.sum / self.count or nil end
-- Colossal-AI's names
function hooks.Metric:get_accumulated_value() return self:value() end
function hooks.Metric:get_last_step_value() return self.last end

--- The metric `name` of `split` ('train' or 'test'), created when missing.
function hooks.metric(trainer, split, name)
  local t = trainer.states.metrics[split]
  if not t[name] then t[name] = hooks.Metric(name) end
  return t[name]
end

-- ---------------------------------------------------------------------------
-- the base hook

--- The base of the built-in hooks: opts.priority overrides the class's
-- default, opts.name the class name used in error messages.
hooks.Hook = class('Hook')
hooks.Hook.default_priority = 0

function hooks.Hook:__init(opts)
  opts = opts or {}
  self.priority = opts.priority or self.default_priority
  self.name = opts.name or self.__name
end

local function new_hook(name, priority)
  local c = class(name, hooks.Hook)
  c.default_priority = priority
  return c
end

-- ---------------------------------------------------------------------------
-- LRSchedulerHook

--- Sets the optimizer's learning rate before each step from a schedule (an
-- object with `lr(i)`, e.g. lunar.schedule.warmup_cosine): i is the number
-- of optimizer updates done (trainer.optimizer_steps; by_epoch = false, the default)
-- or the 0-based epoch (by_epoch = true), as the engine does with its own
-- lr_scheduler. Give the schedule to this hook or to the engine, not both.
hooks.LRSchedulerHook = new_hook('LRSchedulerHook', 1)

function hooks.LRSchedulerHook:__init(opts)
  hooks.Hook.__init(self, opts)
  assert(opts and opts.lr_scheduler and opts.lr_scheduler.lr,
    'LRSchedulerHook: lr_scheduler (with an lr(step) method) is required')
  self.lr_scheduler, self.by_epoch = opts.lr_scheduler, opts.by_epoch or false
end

function hooks.LRSchedulerHook:attach(trainer)
  if trainer.engine.lr_scheduler then
    error('LRSchedulerHook: the engine has an lr_scheduler too; give the schedule to one of them', 0)
  end
  trainer.lr_scheduler = self.lr_scheduler
end

function hooks.LRSchedulerHook:before_train_iter(trainer)
  local lr = self.lr_scheduler:lr(self.by_epoch and trainer.cur_epoch or trainer.optimizer_steps)
  trainer.engine.optimizer:set_lr(lr)
  trainer.states.lr = lr
end

function hooks.LRSchedulerHook:after_train_iter(trainer)
  hooks.metric(trainer, 'train', 'lr'):update(trainer.states.lr, 1)
end

-- ---------------------------------------------------------------------------
-- LossHook

--- Sums a metric's sum and count over the data-parallel replicas (a
-- collective: every rank runs the same hooks).
local function reduce_metric(trainer, m)
  if not m or not trainer.data_parallel_sum then return end
  m.sum, m.count = trainer:data_parallel_sum(m.sum), trainer:data_parallel_sum(m.count)
end

--- The train loss (mean over the epoch's batches) and the test loss (mean over
-- the test images): metrics train.loss and test.loss, averaged over the
-- data-parallel replicas at the end of the epoch and of the test.
hooks.LossHook = new_hook('LossHook', 0)

function hooks.LossHook:after_train_epoch(trainer) reduce_metric(trainer, trainer.states.metrics.train.loss) end

function hooks.LossHook:after_test(trainer)
  if not trainer.states.test_global then reduce_metric(trainer, trainer.states.metrics.test.loss) end
end

function hooks.LossHook:before_train_epoch(trainer) hooks.metric(trainer, 'train', 'loss'):reset() end
function hooks.LossHook:after_train_iter(trainer, _, _, loss) hooks.metric(trainer, 'train', 'loss'):update(loss, 1) end
function hooks.LossHook:before_test(trainer) hooks.metric(trainer, 'test', 'loss'):reset() end

function hooks.LossHook:after_test_iter(trainer, _, labels, loss)
  local n = labels:numel()
  hooks.metric(trainer, 'test', 'loss'):update(loss * n, n)
end

-- ---------------------------------------------------------------------------
-- AccuracyHook

--- Top-1 accuracy over the test set (test.accuracy) and over the epoch's
-- training batches (train.accuracy; opts.train = false turns it off). The
-- metric keeps `sum` = correct and `count` = images, summed over the
-- data-parallel replicas at the end of the epoch and of the test. A step
-- without logits (an engine that runs a pipeline schedule) is skipped.
hooks.AccuracyHook = new_hook('AccuracyHook', 0)

function hooks.AccuracyHook:after_train_epoch(trainer)
  if self.train then reduce_metric(trainer, trainer.states.metrics.train.accuracy) end
end

function hooks.AccuracyHook:after_test(trainer)
  if not trainer.states.test_global then reduce_metric(trainer, trainer.states.metrics.test.accuracy) end
end

function hooks.AccuracyHook:__init(opts)
  hooks.Hook.__init(self, opts)
  self.train = not (opts and opts.train == false)
end

local function count_correct(metric, logits, labels)
  if not logits then return end
  metric:update(lunar.ops.accuracy_count(logits, labels), labels:numel())
end

function hooks.AccuracyHook:before_train_epoch(trainer)
  if self.train then hooks.metric(trainer, 'train', 'accuracy'):reset() end
end

function hooks.AccuracyHook:after_train_iter(trainer, logits, labels)
  if self.train then count_correct(hooks.metric(trainer, 'train', 'accuracy'), logits, labels) end
end

function hooks.AccuracyHook:before_test(trainer) hooks.metric(trainer, 'test', 'accuracy'):reset() end

function hooks.AccuracyHook:after_test_iter(trainer, logits, labels)
  count_correct(hooks.metric(trainer, 'test', 'accuracy'), logits, labels)
end

-- ---------------------------------------------------------------------------
-- ThroughputHook

--- Images per second and achieved FLOP/s of training: train.throughput and
-- train.flop_per_s. A step's time runs from the end of the previous step (or
-- the start of the epoch) to the end of this one, so it includes loading the
-- batch and the hooks. The first `ignored_steps` batches of every epoch (warm-up)
-- are left out of the epoch's value; `last` is always the last batch's.
-- opts: flops_per_image (training FLOPs of one image, forward + backward, e.g.
-- lunar.models.vit_train_flops_per_image; 0 = no FLOP/s), ignored_steps (0),
-- data_parallel_size (1): the ranks that each process a batch of the same size
-- at the same time, so the global rate is the local one times it.
hooks.ThroughputHook = new_hook('ThroughputHook', 10)

function hooks.ThroughputHook:__init(opts)
  hooks.Hook.__init(self, opts)
  opts = opts or {}
  self.flops_per_image = opts.flops_per_image or 0
  self.ignored_steps = opts.ignored_steps or 0
  self.data_parallel_size = opts.data_parallel_size or 1
end

function hooks.ThroughputHook:before_train_epoch(trainer)
  hooks.metric(trainer, 'train', 'throughput'):reset()
  hooks.metric(trainer, 'train', 'flop_per_s'):reset()
  self.t_prev, self.steps = lunar.clock(), 0
end

function hooks.ThroughputHook:after_train_iter(trainer, _, labels)
  local now = lunar.clock()
  local dt = now - self.t_prev
  self.t_prev, self.steps = now, self.steps + 1
  local images = labels:numel() * self.data_parallel_size
  local tp, fl = hooks.metric(trainer, 'train', 'throughput'), hooks.metric(trainer, 'train', 'flop_per_s')
  if self.steps > self.ignored_steps then
    tp:update(images, dt)
    fl:update(images * self.flops_per_image, dt)
  else
    tp.last, fl.last = images / dt, images * self.flops_per_image / dt
  end
end

-- ---------------------------------------------------------------------------
-- LogMetricByEpochHook

local function fmt_train_metrics(m)
  local parts = {}
  if m.loss and m.loss:value() then parts[#parts + 1] = string.format('train loss %.4f', m.loss:value()) end
  if m.accuracy and m.accuracy:value() then
    parts[#parts + 1] = string.format('train accuracy %.2f%%', 100 * m.accuracy:value())
  end
  if m.throughput and m.throughput:value() then
    parts[#parts + 1] = string.format('%.1f img/s', m.throughput:value())
    if m.flop_per_s and m.flop_per_s:value() and m.flop_per_s:value() > 0 then
      parts[#parts + 1] = string.format('%.1f GFLOP/s', m.flop_per_s:value() / 1e9)
    end
  end
  return parts
end

--- One line per training epoch and one per test, on rank 0 (opts.logger: an
-- object with info(fmt, ...), default lunar.log):
--   epoch 1: train loss 0.6012, train accuracy 78.10%, 1520.3 img/s, 12.4 GFLOP/s, train 39.5 s
--   epoch 1: test accuracy 82.41% (8241/10000), test loss 0.4876, eval 2.1 s
hooks.LogMetricByEpochHook = new_hook('LogMetricByEpochHook', 10)

function hooks.LogMetricByEpochHook:__init(opts)
  hooks.Hook.__init(self, opts)
  self.logger = opts and opts.logger or log
end

function hooks.LogMetricByEpochHook:before_train_epoch() self.t_epoch = lunar.clock() end

function hooks.LogMetricByEpochHook:after_train_epoch(trainer)
  local parts = fmt_train_metrics(trainer.states.metrics.train)
  parts[#parts + 1] = string.format('train %.1f s', lunar.clock() - self.t_epoch)
  self.logger.info('epoch %d: %s', trainer.cur_epoch + 1, table.concat(parts, ', '))
end

function hooks.LogMetricByEpochHook:before_test() self.t_test = lunar.clock() end

function hooks.LogMetricByEpochHook:after_test(trainer)
  local m = trainer.states.metrics.test
  local parts = {}
  if m.accuracy and m.accuracy:value() then
    parts[#parts + 1] = string.format('test accuracy %.2f%% (%d/%d)', 100 * m.accuracy:value(), m.accuracy.sum,
      m.accuracy.count)
  end
  if m.loss and m.loss:value() then parts[#parts + 1] = string.format('test loss %.4f', m.loss:value()) end
  parts[#parts + 1] = string.format('eval %.1f s', lunar.clock() - self.t_test)
  self.logger.info('epoch %d: %s', trainer.cur_epoch + 1, table.concat(parts, ', '))
end

-- ---------------------------------------------------------------------------
-- LogMetricByStepHook

--- One JSON line per optimizer step and per test (lunar.log.metrics), the
-- format of examples/train_with_engine.lua (both through log.step_meter):
--   {"step":1,"epoch":1,"loss":2.31,"lr":4.2e-05,"images_per_s":1480.2}
--   {"step":469,"epoch":1,"test_accuracy":0.8241,"test_loss":0.4876}
-- (step: optimizer steps done; loss: the mean over the step's batches, which
-- are gradient_accumulation batches) and, every `log_every` optimizer steps
-- while no progress bar is shown, a console line (log.step_line)
--   epoch 1 step 50/469 loss 0.8123 lr 1.990e-03 1502.1 img/s 12.3 GFLOP/s
-- Images are counted over the data-parallel replicas (the engine's grid).
-- opts: metrics (a path, or an object with write(table); nil = no file),
-- log_every (0 = no console lines), logger (default lunar.log),
-- flops_per_image (for the console's GFLOP/s).
hooks.LogMetricByStepHook = new_hook('LogMetricByStepHook', 10)

function hooks.LogMetricByStepHook:__init(opts)
  hooks.Hook.__init(self, opts)
  opts = opts or {}
  if type(opts.metrics) == 'string' then
    self.writer = log.metrics(opts.metrics)   -- every line is flushed; stays open for another fit
  else
    self.writer = opts.metrics
  end
  self.meter = log.step_meter{metrics = self.writer, log_every = opts.log_every, logger = opts.logger,
    flops_per_image = opts.flops_per_image}
end

function hooks.LogMetricByStepHook:before_train_epoch() self.meter:start() end

function hooks.LogMetricByStepHook:after_train_iter(trainer, _, labels, loss)
  local g = trainer.engine.grid
  self.meter:batch(loss, labels:numel() * (g and g.dp_size or 1))
  if trainer.updated then
    self.meter:optimizer_step{step = trainer.optimizer_steps, total = trainer.max_steps, epoch = trainer.cur_epoch + 1,
      lr = trainer.states.lr, console = not trainer.progress_active}
  end
end

function hooks.LogMetricByStepHook:after_test(trainer)
  if not self.writer then return end
  local m = trainer.states.metrics.test
  self.writer:write{step = trainer.optimizer_steps, epoch = trainer.cur_epoch + 1,
    test_accuracy = m.accuracy and m.accuracy:value() or nil, test_loss = m.loss and m.loss:value() or nil}
end

-- ---------------------------------------------------------------------------
-- TensorboardHook

--- TensorBoard event files (lunar.tensorboard, Colossal-AI's TensorboardHook):
-- on rank 0, in opts.log_dir, one event per optimizer step with train/loss,
-- train/lr, train/images_per_s (the values LogMetricByStepHook writes to the
-- metrics file, through its own log.step_meter) and memory/peak_bytes (peak
-- bytes in tensors on opts.device, default lunar.default_device()), and one
-- per test with test/accuracy and test/loss.
hooks.TensorboardHook = class('TensorboardHook', hooks.LogMetricByStepHook)   -- its metrics file is the event file
hooks.TensorboardHook.default_priority = 10

function hooks.TensorboardHook:__init(opts)
  assert(opts and type(opts.log_dir) == 'string' and opts.log_dir ~= '',
    'TensorboardHook: log_dir (the event file directory) is required')
  hooks.LogMetricByStepHook.__init(self, {priority = opts.priority, name = opts.name,
    metrics = require('lunar.tensorboard').writer(opts.log_dir, {device = opts.device or lunar.default_device()})})
end

-- ---------------------------------------------------------------------------
-- LogMemoryByEpochHook

--- Memory after every training epoch (and test, unless opts.log_eval =
-- false), from lunar.memory(), on rank 0; trainer.states.memory holds the
-- last reading. When the default device is a GPU (config key device), its
-- memory too (lunar.cuda.memory; trainer.states.device_memory).
--   epoch 1: memory 12.3 MiB in use, peak 410.2 MiB in tensors, 620.5 MiB resident
--   epoch 1: cuda:0 memory 812.0 MiB in use, peak 2210.4 MiB in tensors
hooks.LogMemoryByEpochHook = new_hook('LogMemoryByEpochHook', 10)

function hooks.LogMemoryByEpochHook:__init(opts)
  hooks.Hook.__init(self, opts)
  self.logger = opts and opts.logger or log
  self.log_eval = not (opts and opts.log_eval == false)
end

function hooks.LogMemoryByEpochHook:report(trainer, what)
  local m = lunar.memory()
  trainer.states.memory = m
  self.logger.info('epoch %d%s: memory %.1f MiB in use, peak %.1f MiB in tensors, %.1f MiB resident',
    trainer.cur_epoch + 1, what, m.bytes_in_use / 2^20, m.peak_bytes / 2^20, m.peak_rss_bytes / 2^20)
  local dev = lunar.default_device()
  if dev ~= 'cpu' then
    local d = lunar.cuda.memory(dev)
    trainer.states.device_memory = d
    self.logger.info('epoch %d%s: %s memory %.1f MiB in use, peak %.1f MiB in tensors', trainer.cur_epoch + 1, what,
      dev, d.bytes_in_use / 2^20, d.peak_bytes / 2^20)
  end
end

function hooks.LogMemoryByEpochHook:after_train_epoch(trainer) self:report(trainer, '') end
function hooks.LogMemoryByEpochHook:after_test(trainer) if self.log_eval then self:report(trainer, ' (test)') end end

-- ---------------------------------------------------------------------------
-- SaveCheckpointHook

--- Saves a checkpoint every `every_steps` optimizer steps (after the update), every
-- `every_epochs` epochs and (at_end, default true) when training ends, unless
-- the last save was at that step. opts:
--   dir          the checkpoint directory (required)
--   save         function(dir, state); default: lunar.checkpoint.save
--   state        function(trainer) -> the state table; default: {model=,
--                optimizer=, lr_scheduler=, engine=, train_loader=, config=,
--                step= (optimizer steps done), epoch= (complete epochs)}
--   every_steps  0 = never by step;  every_epochs  0 = never by epoch (default 0)
-- trainer.states.last_checkpoint_step is the optimizer step of the last save.
hooks.SaveCheckpointHook = new_hook('SaveCheckpointHook', 10)

function hooks.SaveCheckpointHook:__init(opts)
  hooks.Hook.__init(self, opts)
  opts = opts or {}
  assert(type(opts.dir) == 'string' and opts.dir ~= '',
    'SaveCheckpointHook: dir (the checkpoint directory) is required')
  self.dir = opts.dir
  self.save = opts.save or require('lunar.checkpoint').save
  self.state = opts.state
  self.every_steps, self.every_epochs = opts.every_steps or 0, opts.every_epochs or 0
  self.at_end = opts.at_end ~= false
end

--- The default state: what a resume needs, by reference (the save function
-- reads the tensors).
function hooks.SaveCheckpointHook.default_state(trainer)
  local e = trainer.engine
  return {model = e.model, optimizer = e.optimizer, lr_scheduler = trainer.lr_scheduler or e.lr_scheduler,
    engine = e, train_loader = trainer.train_loader, config = trainer.config, step = trainer.optimizer_steps,
    epoch = trainer.epochs_done}
end

function hooks.SaveCheckpointHook:save_now(trainer)
  local state = (self.state or hooks.SaveCheckpointHook.default_state)(trainer)
  self.save(self.dir, state)
  trainer.states.last_checkpoint_step = trainer.optimizer_steps
end

function hooks.SaveCheckpointHook:after_train_iter(trainer)
  if trainer.updated and self.every_steps > 0 and trainer.optimizer_steps % self.every_steps == 0 then
    self:save_now(trainer)
  end
end

function hooks.SaveCheckpointHook:after_train_epoch(trainer)
  if self.every_epochs > 0 and (trainer.cur_epoch + 1) % self.every_epochs == 0 and
      trainer.states.last_checkpoint_step ~= trainer.optimizer_steps then
    self:save_now(trainer)
  end
end

function hooks.SaveCheckpointHook:after_train(trainer)
  if self.at_end and trainer.states.last_checkpoint_step ~= trainer.optimizer_steps then self:save_now(trainer) end
end

-- ---------------------------------------------------------------------------
-- user hooks

--- "function at FILE:LINE" for a hook given as a plain function.
local function function_name(fn)
  local info = debug.getinfo(fn, 'S')
  return string.format('function at %s:%d', info.short_src, info.linedefined)
end

--- Normalizes a hook to {name=, priority=, target=, fns={event -> fn}}, where
-- a call is fns[event](target, trainer, ...). Accepts a built-in hook, a user
-- table with event methods (and optional name, priority, attach), or a
-- function(event, trainer, ...) called on every event.
-- @raise for a table with no event method, or a field that looks like a
--   misspelled event ("after_train_iteration")
function hooks.wrap(h, index)
  if type(h) == 'function' then
    local fns = {}
    for _, e in ipairs(hooks.EVENTS) do
      fns[e] = function(_, trainer, ...) return h(e, trainer, ...) end
    end
    return {name = function_name(h), priority = 100, target = h, fns = fns}
  end
  if type(h) ~= 'table' then
    error(string.format('hook #%d: expected a table or a function, got %s', index or 0, type(h)), 0)
  end
  local name = h.name or h.__name or string.format('hook #%d', index or 0)
  local fns, any = {}, false
  for _, e in ipairs(hooks.EVENTS) do
    if type(h[e]) == 'function' then fns[e] = h[e]; any = true end
  end
  for k, v in pairs(h) do
    if type(k) == 'string' and type(v) == 'function' and not IS_EVENT[k] and k ~= 'attach' and
        (k:match('^before_') or k:match('^after_')) then
      error(string.format("hook '%s': '%s' is not an event (events: %s)", name, k, table.concat(hooks.EVENTS, ', ')), 0)
    end
  end
  if not any and not h.attach then
    error(string.format("hook '%s' has no event method (%s)", name, table.concat(hooks.EVENTS, ', ')), 0)
  end
  return {name = name, priority = h.priority or 0, target = h, fns = fns, attach = h.attach}
end

return hooks
