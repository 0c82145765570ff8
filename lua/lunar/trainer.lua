--- lunar.trainer: the high-level training loop with hooks (Colossal-AI's
-- Trainer). It drives an engine (lunar.engine) through the same calls as the
-- hand-written loop of examples/train_with_engine.lua, so the two give
-- bitwise the same losses; what happens around the steps (the learning-rate
-- schedule, metrics, logging, checkpoints) is done by hooks (lunar.hooks).
--
--   local Trainer = require('lunar.trainer')
--   local hooks = require('lunar.hooks')
--   local trainer = Trainer{engine = engine, logger = require('lunar.log')}
--   trainer:fit{
--     train_loader = train_loader, test_loader = test_loader,
--     epochs = 10, max_steps = 0,            -- 0 / nil: no limit on steps
--     test_interval = 1,                     -- test after every N epochs (and after the last)
--     display_progress = true,               -- a progress bar when log.progress_enabled() (one rank, a terminal)
--     hooks = { hooks.LRSchedulerHook{lr_scheduler = s}, hooks.LossHook{}, hooks.AccuracyHook{},
--               function(event, trainer, ...) end },
--   }
--
-- A training iteration (one batch) is
--   images, labels = train_loader:next()     (nil ends the epoch)
--   before_train_iter(images, labels)
--   loss, lr, updated, logits = engine:train_step(images, labels, {keep_logits = true})
--   after_train_iter(logits, labels, loss)
-- (engine:train_step: zero_grad, forward, criterion, backward, step, or the
-- pipeline / micro-batch schedule; logits are nil with a schedule), and a
-- test iteration, with the engine in eval mode, logits, loss =
-- engine:eval_step(images, labels). The test phase of a pipeline stage is
-- engine:evaluate (before_test and after_test fire, the per-batch test
-- events do not, the test accuracy is set from its counts).
--
-- Steps are optimizer updates (Megatron's iterations): max_steps = k stops
-- after k updates, which with gradient_accumulation = n is k * n batches.
-- State a hook may read: trainer.engine, trainer.cur_epoch (0-based epoch being
-- run), trainer.batches_done (batches trained), trainer.optimizer_steps
-- (optimizer updates done), trainer.updated (whether the last batch's step
-- updated the weights: false inside a gradient accumulation cycle),
-- trainer.batch_in_epoch (batches done in this epoch), trainer.batches_per_epoch,
-- trainer.max_steps (the optimizer steps this fit will reach),
-- trainer.epochs_done (complete epochs), trainer.train_loader,
-- trainer.test_loader, trainer.progress_active (a progress bar is drawn),
-- trainer.states = {lr=, loss=, metrics = {train = {}, test = {}}, test_global=}
-- (test_global: the test metrics are already summed over the replicas).
-- An error raised by a hook names the hook, the event, the epoch and the optimizer step:
--   "hook 'MyHook' failed in after_train_iter (epoch 1, step 3): my.lua:12: boom"
-- @module lunar.trainer
local class = require('lunar.class')
local hooks_mod = require('lunar.hooks')
local log = require('lunar.log')

local Trainer = class('Trainer')

--- @tparam table opts {engine= (required), logger= (an object with info(fmt, ...);
--   default lunar.log), config= (the resolved config, for checkpoints)}
function Trainer:__init(opts)
  if type(opts) ~= 'table' or not opts.engine then
    error('Trainer{engine = ..., logger = ...}: engine is required', 2)
  end
  self.engine = opts.engine
  self.logger = opts.logger or log
  self.config = opts.config
  self.cur_epoch, self.batches_done, self.batch_in_epoch, self.epochs_done, self.optimizer_steps = 0, 0, 0, 0, 0
  self.states = {metrics = {train = {}, test = {}}}
  self.hooks = {}
end

--- Whether this rank holds one pipeline stage of several.
local function is_pipeline(engine)
  return engine.grid ~= nil and (engine.grid.pp_size or 1) > 1
end

--- The sum of a number over the data-parallel replicas (the number itself
-- without a data-parallel grid). Every rank must call it (a collective).
function Trainer:data_parallel_sum(x)
  local g = self.engine.grid
  if not g or (g.dp_size or 1) <= 1 or not g.dp_group then return x end
  return g.dp_group:all_reduce_number(x, 'sum')
end

--- Sorts and attaches hooks: ascending priority, equal priorities in the order
-- given. Each is normalized by hooks.wrap (tables, built-in hooks, functions).
function Trainer:set_hooks(list)
  local wrapped = {}
  for i, h in ipairs(list or {}) do
    local w = hooks_mod.wrap(h, i)
    w.index = i
    wrapped[#wrapped + 1] = w
  end
  table.sort(wrapped, function(a, b)
    if a.priority ~= b.priority then return a.priority < b.priority end
    return a.index < b.index
  end)
  self.hooks = wrapped
  for _, w in ipairs(wrapped) do
    if w.attach then self:call_one(w, 'attach', w.attach) end
  end
end

--- Calls one hook function, turning an error into one that names the hook.
function Trainer:call_one(w, event, fn, ...)
  local ok, err = pcall(fn, w.target, self, ...)
  if not ok then
    local msg = type(err) == 'string' and err or tostring(err)
    error(string.format("hook '%s' failed in %s (epoch %d, step %d): %s", w.name, event, self.cur_epoch + 1,
      self.optimizer_steps, msg), 0)
  end
end

--- Calls `event` on every hook that has it, in priority order.
function Trainer:call_hooks(event, ...)
  for _, w in ipairs(self.hooks) do
    local fn = w.fns[event]
    if fn then self:call_one(w, event, fn, ...) end
  end
end

local function free(...)
  for i = 1, select('#', ...) do
    local t = select(i, ...)
    if t and lunar.is_tensor(t) and not t:is_released() then t:free() end
  end
end

--- Runs the test phase over `loader`: before_test, per batch before_test_iter
-- and after_test_iter, after_test. The model is in eval mode during it and
-- back in its previous mode after. Returns trainer.states.metrics.test.
function Trainer:test(loader)
  assert(loader, 'trainer:test: a test loader is required')
  local engine = self.engine
  local was_training = engine.model and engine.model.training
  self.test_loader = loader
  self.states.test_global = false
  if is_pipeline(engine) then
    -- a pipeline stage has no logits of its own: engine:evaluate runs the
    -- stages and gives the global counts (no per-batch events, no test loss)
    self:call_hooks('before_test')
    local _, correct, total = engine:evaluate(loader, 0)
    local acc = hooks_mod.metric(self, 'test', 'accuracy')
    acc:reset()
    acc:update(correct, total)
    self.states.test_global = true
    self:call_hooks('after_test')
    return self.states.metrics.test
  end
  engine:eval()
  loader:set_epoch(0)
  self:call_hooks('before_test')
  while true do
    local x, y = loader:next()
    if not x then break end
    self:call_hooks('before_test_iter', x, y)
    local logits, loss = engine:eval_step(x, y)
    self:call_hooks('after_test_iter', logits, y, loss)
    free(logits, x, y)
  end
  self:call_hooks('after_test')
  if was_training ~= false then engine:train() end
  return self.states.metrics.test
end

--- Trains. See the module doc; args:
--   train_loader (required), epochs (required), max_steps (optimizer steps;
--   0/nil: none), test_loader, test_interval (1), hooks ({...}),
--   display_progress (false).
-- Training starts at epoch trainer.epochs_done (complete epochs) with
-- trainer.batches_done batches done: 0 and 0 for a fresh trainer; after a fit
-- cut short by max_steps, or when a resume sets them, the first epoch
-- continues at batch batches_done - epochs_done * batches_per_epoch
-- (trainer.start_batch overrides it), so fit{max_steps = k} then
-- fit{max_steps = n} trains the same steps as fit{max_steps = n}. It stops
-- after `epochs` epochs or when trainer.optimizer_steps reaches max_steps.
-- The test phase runs after every test_interval-th epoch and after the last
-- one trained.
-- @treturn Trainer self
function Trainer:fit(args)
  assert(type(args) == 'table', 'trainer:fit{train_loader=, epochs=, ...}')
  local loader, epochs = args.train_loader, args.epochs
  if not loader then error('trainer:fit: train_loader is required', 2) end
  if math.type(epochs) ~= 'integer' or epochs < 0 then
    error('trainer:fit: epochs must be an integer >= 0, got ' .. tostring(epochs), 2)
  end
  local test_interval = args.test_interval or 1
  local engine = self.engine
  local ga = engine.gradient_accumulation or 1
  self.train_loader, self.test_loader = loader, args.test_loader
  self.batches_per_epoch = loader:num_batches()
  local total_batches = self.batches_per_epoch * epochs
  local limit = args.max_steps and args.max_steps > 0 and args.max_steps or nil
  self.max_steps = total_batches // ga            -- the optimizer steps the epochs give
  if limit then self.max_steps = math.min(self.max_steps, limit) end
  self.epochs = epochs
  self:set_hooks(args.hooks)
  -- the batches still to train: up to the epochs' end, or to the update that reaches max_steps
  local function batches_left()
    local n = total_batches - self.batches_done
    if limit then n = math.min(n, (limit - self.optimizer_steps) * ga - self.batches_done % ga) end
    return n
  end

  self:call_hooks('before_train')
  for epoch = self.epochs_done, epochs - 1 do
    if batches_left() <= 0 then break end
    self.cur_epoch, self.batch_in_epoch = epoch, 0
    engine:train()
    loader:set_epoch(epoch)
    -- continuing in the middle of an epoch (a resume, or a fit cut short by max_steps)
    local skip = self.start_batch or (self.batches_done - epoch * self.batches_per_epoch)
    if skip > 0 and skip < self.batches_per_epoch then
      loader:seek(epoch, skip)
      self.batch_in_epoch = skip
    end
    self.start_batch = nil
    local bar = args.display_progress and
      log.progress(math.min(self.batches_per_epoch, self.batch_in_epoch + batches_left()),
        string.format('epoch %d', epoch + 1))
    self.progress_active = bar and bar.active or false
    self:call_hooks('before_train_epoch')
    while batches_left() > 0 do
      local x, y = loader:next()
      if not x then break end
      self:call_hooks('before_train_iter', x, y)
      local loss, lr, updated, logits = engine:train_step(x, y, {keep_logits = true})
      self.batches_done, self.batch_in_epoch = self.batches_done + 1, self.batch_in_epoch + 1
      if updated then self.optimizer_steps = self.optimizer_steps + 1 end
      self.updated = updated
      self.states.loss = loss
      self.states.lr = lr or engine.optimizer and engine.optimizer.lr
      self:call_hooks('after_train_iter', logits, y, loss)
      free(logits, x, y)
      if bar then bar:update(self.batch_in_epoch, string.format('loss %.4f lr %.2e', loss, self.states.lr or 0)) end
    end
    if bar then bar:finish() end
    self.progress_active = false
    self:call_hooks('after_train_epoch')
    if self.batch_in_epoch >= self.batches_per_epoch then self.epochs_done = epoch + 1 end
    local last = epoch == epochs - 1 or batches_left() <= 0
    if self.test_loader and ((epoch + 1) % test_interval == 0 or last) then self:test(self.test_loader) end
  end
  self:call_hooks('after_train')
  return self
end

return Trainer
