-- Tests of lua/lunar/trainer.lua and lua/lunar/hooks.lua on a tiny synthetic
-- ViT: the trainer gives bitwise the losses of the hand-written engine loop
-- (examples/train_with_engine.lua), hooks fire in order with the right counts,
-- errors name the hook, and the built-in hooks compute what they claim.
--   build/lunar tests/lua/test_trainer.lua
local T = require('harness')
local config = require('lunar.config')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local data = require('lunar.data')
local models = require('lunar.models')
local engine_mod = require('lunar.engine')
local Trainer = require('lunar.trainer')
local hooks = require('lunar.hooks')

-- 64 training images of 8 x 8 in 4 classes, batch 16: 4 steps per epoch;
-- 16 test images in batches of 8; dropout on, gradient clipping on
local BASE = {
  DATASET = 'synthetic', IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 1, HIDDEN_SIZE = 16, DEPTH = 1,
  NUM_HEADS = 2, NUM_CLASSES = 4, NUM_SAMPLES = 64, BATCH_SIZE = 16, DROPOUT = 0.1, SEED = 7,
  LEARNING_RATE = 3e-3, WARMUP_EPOCHS = 0.5, NUM_EPOCHS = 3, clip_grad_norm = 1.0,
}
local CFG = config.from_table(BASE)
local SPE = 4

--- A fresh model, optimizer, loaders and schedule; the schedule goes to the
-- engine when engine_schedule is true. overrides: config keys changed from BASE.
local function setup(engine_schedule, overrides, engine_opts)
  local CFG = CFG
  if overrides then
    local t = {}
    for k, v in pairs(BASE) do t[k] = v end
    for k, v in pairs(overrides) do t[k] = v end
    CFG = config.from_table(t)
  end
  local train_ds, test_ds = data.datasets(CFG)
  local s = {}
  s.train_loader = data.loader(train_ds, CFG, {train = true})
  s.test_loader = data.loader(test_ds, CFG, {train = false, batch_size = 8})
  s.model = nn.materialize(models.vit(CFG), CFG.SEED, {init = CFG.INIT})
  s.optimizer = optim.AdamW(s.model:parameters(), {lr = CFG.LEARNING_RATE, weight_decay = CFG.WEIGHT_DECAY})
  s.sched = schedule.warmup_cosine{base_lr = CFG.LEARNING_RATE, warmup_steps = math.floor(CFG.WARMUP_EPOCHS * SPE + 0.5),
    total_steps = SPE * CFG.NUM_EPOCHS}
  local args = {model = s.model, optimizer = s.optimizer, criterion = nn.CrossEntropy{},
    lr_scheduler = engine_schedule and s.sched or nil, clip_grad_norm = CFG.clip_grad_norm}
  for k, v in pairs(engine_opts or {}) do args[k] = v end
  s.engine = engine_mod.initialize(args)
  s.ds = {train_ds, test_ds}   -- keep the datasets alive as long as the loaders
  return s
end

--- The loop of examples/train_with_engine.lua, its low-level engine calls
-- (zero_grad, forward, criterion, backward, step) written out as the example
-- shows them: losses and lrs of n steps. The trainer (engine:train_step) must
-- give bitwise the same.
local function engine_loop(s, n)
  local losses, lrs, step = {}, {}, 0
  for epoch = 0, CFG.NUM_EPOCHS - 1 do
    if step >= n then break end
    s.engine:train()
    s.train_loader:set_epoch(epoch)
    while step < n do
      local x, y = s.train_loader:next()
      if not x then break end
      s.engine:zero_grad()
      local logits = s.engine(x)
      local loss = s.engine:criterion(logits, y)
      s.engine:backward(loss)
      local lr = s.engine:step()
      x:free(); y:free(); logits:free()
      step = step + 1
      losses[step], lrs[step] = loss, lr
    end
  end
  return losses, lrs
end

--- A hook recording the loss and lr of every step.
local function recorder()
  local r = {losses = {}, lrs = {}}
  r.hook = {name = 'recorder', after_train_iter = function(_, trainer, _, _, loss)
    r.losses[trainer.batches_done] = loss
    r.lrs[trainer.batches_done] = trainer.states.lr
  end}
  return r
end

local function flat_params(model) return model._flat:totable() end

-- bitwise equality with the engine loop ------------------------------------------

T.test('trainer and engine loop: bitwise identical losses, lrs and weights over 10 steps', function()
  local a = setup(true)
  local losses, lrs = engine_loop(a, 10)
  local b = setup(false)
  local r = recorder()
  Trainer{engine = b.engine}:fit{train_loader = b.train_loader, epochs = CFG.NUM_EPOCHS, max_steps = 10,
    hooks = {hooks.LRSchedulerHook{lr_scheduler = b.sched}, r.hook}}
  T.eq(#r.losses, 10)
  for i = 1, 10 do
    T.truthy(r.losses[i] == losses[i], string.format('step %d loss %.17g vs %.17g', i, r.losses[i], losses[i]))
    T.truthy(r.lrs[i] == lrs[i], string.format('step %d lr', i))
  end
  T.truthy(losses[10] ~= losses[1], 'the model trains')
  T.eq(flat_params(b.model), flat_params(a.model), 'weights after 10 steps')
end)

T.test('trainer with the schedule in the engine: the same losses as with LRSchedulerHook', function()
  local a = setup(true)
  local ra = recorder()
  Trainer{engine = a.engine}:fit{train_loader = a.train_loader, epochs = 2, hooks = {ra.hook}}
  local b = setup(false)
  local rb = recorder()
  Trainer{engine = b.engine}:fit{train_loader = b.train_loader, epochs = 2,
    hooks = {rb.hook, hooks.LRSchedulerHook{lr_scheduler = b.sched}}}
  T.eq(#ra.losses, 2 * SPE)
  T.eq(ra.losses, rb.losses)
  T.eq(ra.lrs, rb.lrs)
end)

T.test('fit cut short by max_steps, then fit again: the same steps as one fit', function()
  local a = setup(false)
  local ra = recorder()
  Trainer{engine = a.engine}:fit{train_loader = a.train_loader, epochs = 3, max_steps = 11,
    hooks = {hooks.LRSchedulerHook{lr_scheduler = a.sched}, ra.hook}}
  local b = setup(false)
  local rb = recorder()
  local tr = Trainer{engine = b.engine}
  local hl = {hooks.LRSchedulerHook{lr_scheduler = b.sched}, rb.hook}
  tr:fit{train_loader = b.train_loader, epochs = 3, max_steps = 5, hooks = hl}   -- stops in epoch 2
  T.eq(tr.optimizer_steps, 5); T.eq(tr.batches_done, 5); T.eq(tr.epochs_done, 1)
  tr:fit{train_loader = b.train_loader, epochs = 3, max_steps = 11, hooks = hl}
  T.eq(tr.optimizer_steps, 11)
  T.eq(rb.losses, ra.losses)
  T.eq(flat_params(b.model), flat_params(a.model))
end)

T.test('gradient accumulation: the schedule in the engine or in LRSchedulerHook, the same steps', function()
  local a = setup(true, nil, {gradient_accumulation = 2})
  local ra = recorder()
  local ta = Trainer{engine = a.engine}
  ta:fit{train_loader = a.train_loader, epochs = 2, hooks = {ra.hook}}
  local b = setup(false, nil, {gradient_accumulation = 2})
  local rb = recorder()
  local tb = Trainer{engine = b.engine}
  tb:fit{train_loader = b.train_loader, epochs = 2, hooks = {hooks.LRSchedulerHook{lr_scheduler = b.sched}, rb.hook}}
  T.eq(ta.batches_done, 2 * SPE); T.eq(ta.optimizer_steps, SPE, 'one update every 2 batches')
  T.eq(tb.optimizer_steps, SPE)
  T.eq(rb.losses, ra.losses)
  T.eq(flat_params(b.model), flat_params(a.model))
end)

T.test('max_steps counts optimizer steps: with gradient_accumulation=2, 3 steps are 6 batches', function()
  -- 4 batches per epoch, 2 batches per update: max_steps = 3 stops in epoch 2
  -- after batch 6; the schedule's lr of update k (0-based) is sched:lr(k) in
  -- the engine and in LRSchedulerHook alike; the metrics file has one line
  -- per update whose loss is the mean of its two batches' losses; a
  -- checkpoint every 2 steps saves after update 2, and at the end after update 3.
  for _, in_engine in ipairs({true, false}) do
    local s = setup(in_engine, nil, {gradient_accumulation = 2})
    local r = recorder()
    local lines, saves = {}, {}
    local writer = {write = function(_, obj) lines[#lines + 1] = obj end}
    local hl = {r.hook, hooks.LogMetricByStepHook{metrics = writer},
      hooks.SaveCheckpointHook{dir = 'd', every_steps = 2, save = function(_, st) saves[#saves + 1] = st.step end}}
    if not in_engine then table.insert(hl, 1, hooks.LRSchedulerHook{lr_scheduler = s.sched}) end
    local tr = Trainer{engine = s.engine}
    tr:fit{train_loader = s.train_loader, epochs = 3, max_steps = 3, hooks = hl}
    local what = in_engine and 'schedule in the engine' or 'LRSchedulerHook'
    T.eq(tr.batches_done, 6, what); T.eq(tr.optimizer_steps, 3, what)
    T.eq(s.engine.batches_done, 6); T.eq(s.engine.optimizer_steps, 3); T.eq(s.optimizer.t, 3)
    T.eq(tr.max_steps, 3); T.eq(tr.epochs_done, 1)
    T.eq(#r.losses, 6)
    -- batches 2k-1 and 2k belong to update k (0-based k-1): both report its lr
    for b = 1, 6 do T.eq(r.lrs[b], s.sched:lr((b - 1) // 2), what .. ': lr of batch ' .. b) end
    T.truthy(s.sched:lr(0) < s.sched:lr(1), 'the warmup raises the lr')
    T.eq(#lines, 3)
    for k = 1, 3 do
      T.eq(lines[k].step, k)
      T.eq(lines[k].lr, s.sched:lr(k - 1))
      T.eq(lines[k].loss, (r.losses[2 * k - 1] + r.losses[2 * k]) / 2)
    end
    T.eq(lines[3].epoch, 2)
    T.eq(saves, {2, 3})
  end
end)

T.test('a step whose batches span two epochs: one metrics line, the mean of both batches', function()
  -- 48 images in batches of 16: 3 batches per epoch; 2 per step: step 2 is
  -- batch 3 of epoch 1 and batch 1 of epoch 2 (the engine's cycle continues
  -- across the epoch boundary), so 2 epochs are 3 steps
  local s = setup(true, {NUM_SAMPLES = 48}, {gradient_accumulation = 2})
  local r = recorder()
  local lines = {}
  local tr = Trainer{engine = s.engine}
  tr:fit{train_loader = s.train_loader, epochs = 2, hooks = {r.hook,
    hooks.LogMetricByStepHook{metrics = {write = function(_, obj) lines[#lines + 1] = obj end}}}}
  T.eq(tr.batches_done, 6); T.eq(tr.optimizer_steps, 3); T.eq(tr.max_steps, 3)
  T.eq(#lines, 3)
  for k = 1, 3 do T.eq(lines[k].loss, (r.losses[2 * k - 1] + r.losses[2 * k]) / 2, 'step ' .. k) end
  T.eq({lines[1].epoch, lines[2].epoch, lines[3].epoch}, {1, 2, 2})
end)

T.test('micro-batches (engine:execute_schedule): the trainer gives the hand loop\'s losses', function()
  local probe = setup(true, nil, {num_micro_batches = 2})
  T.truthy(probe.engine:uses_schedule())
  local losses = {}
  for epoch = 0, 1 do
    probe.engine:train()
    probe.train_loader:set_epoch(epoch)
    while true do
      local x, y = probe.train_loader:next()
      if not x then break end
      probe.engine:zero_grad()
      losses[#losses + 1] = probe.engine:execute_schedule(x, y)
      probe.engine:step()
      x:free(); y:free()
    end
  end
  local b = setup(true, nil, {num_micro_batches = 2})
  local rb = recorder()
  local seen_logits = false
  Trainer{engine = b.engine}:fit{train_loader = b.train_loader, epochs = 2,
    hooks = {rb.hook, hooks.AccuracyHook{}, hooks.LossHook{},
      {after_train_iter = function(_, _, logits) seen_logits = seen_logits or logits ~= nil end}}}
  T.eq(#rb.losses, 2 * SPE)
  T.eq(rb.losses, losses)
  T.eq(flat_params(b.model), flat_params(probe.model))
  T.falsy(seen_logits, 'no logits with a schedule')
end)

-- hook order and counts --------------------------------------------------------

T.test('hooks: every event fires with the right count, in order', function()
  local s = setup(true)
  local events = {}
  local counts = setmetatable({}, {__index = function() return 0 end})
  local function rec(event, trainer, ...)
    events[#events + 1] = event
    counts[event] = counts[event] + 1
    if event == 'before_train_iter' or event == 'before_test_iter' then
      local x, y = ...
      T.truthy(lunar.is_tensor(x) and lunar.is_tensor(y), event .. ' gets images and labels')
    elseif event == 'after_train_iter' or event == 'after_test_iter' then
      local logits, y, loss = ...
      T.eq(logits:shape(), {y:numel(), 4}, event .. ' gets logits')
      T.eq(math.type(loss), 'float', event .. ' gets the loss')
    end
  end
  local tr = Trainer{engine = s.engine}
  tr:fit{train_loader = s.train_loader, test_loader = s.test_loader, epochs = 3, test_interval = 2, hooks = {rec}}
  T.eq(counts.before_train, 1); T.eq(counts.after_train, 1)
  T.eq(counts.before_train_epoch, 3); T.eq(counts.after_train_epoch, 3)
  T.eq(counts.before_train_iter, 3 * SPE); T.eq(counts.after_train_iter, 3 * SPE)
  -- test_interval 2 over 3 epochs: after epoch 2 and after the last
  T.eq(counts.before_test, 2); T.eq(counts.after_test, 2)
  T.eq(counts.before_test_iter, 2 * 2); T.eq(counts.after_test_iter, 2 * 2)
  local want = {'before_train'}
  local function epoch(test)
    want[#want + 1] = 'before_train_epoch'
    for _ = 1, SPE do want[#want + 1] = 'before_train_iter'; want[#want + 1] = 'after_train_iter' end
    want[#want + 1] = 'after_train_epoch'
    if test then
      want[#want + 1] = 'before_test'
      for _ = 1, 2 do want[#want + 1] = 'before_test_iter'; want[#want + 1] = 'after_test_iter' end
      want[#want + 1] = 'after_test'
    end
  end
  epoch(false); epoch(true); epoch(true)
  want[#want + 1] = 'after_train'
  T.eq(events, want)
  T.eq(tr.batches_done, 3 * SPE); T.eq(tr.optimizer_steps, 3 * SPE); T.eq(tr.epochs_done, 3)
end)

T.test('hooks: ascending priority, ties in the order given', function()
  local s = setup(true)
  local order = {}
  local function h(name, priority)
    return {name = name, priority = priority, before_train = function() order[#order + 1] = name end}
  end
  local fn = function(event) if event == 'before_train' then order[#order + 1] = 'function' end end
  Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1, max_steps = 1,
    hooks = {h('p5', 5), fn, h('p1a', 1), h('p-3', -3), h('p1b', 1), h('p0', nil)}}
  T.eq(order, {'p-3', 'p0', 'p1a', 'p1b', 'p5', 'function'})
  -- the built-in defaults: metric hooks 0, LRSchedulerHook 1, logging and checkpoints 10
  T.eq(hooks.LossHook{}.priority, 0); T.eq(hooks.AccuracyHook{}.priority, 0)
  T.eq(hooks.LRSchedulerHook{lr_scheduler = s.sched}.priority, 1)
  T.eq(hooks.ThroughputHook{}.priority, 10); T.eq(hooks.LogMetricByEpochHook{}.priority, 10)
  T.eq(hooks.LogMetricByStepHook{}.priority, 10); T.eq(hooks.LogMemoryByEpochHook{}.priority, 10)
  T.eq(hooks.SaveCheckpointHook{dir = 'x', save = function() end}.priority, 10)
  T.eq(hooks.LossHook{priority = 7}.priority, 7)
end)

-- errors ---------------------------------------------------------------------------

T.test('a user hook error names the hook, the event and the step', function()
  local s = setup(true)
  local msg = T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1, hooks = {
      {name = 'exploder', after_train_iter = function(_, trainer)
        if trainer.optimizer_steps == 3 then error('boom at three') end
      end}}}
  end, "hook 'exploder' failed in after_train_iter (epoch 1, step 3)")
  T.truthy(msg:find('boom at three', 1, true), msg)
  T.truthy(msg:find('test_trainer.lua:%d+'), 'keeps the location of the error: ' .. msg)
  -- a plain function is named by where it is defined
  local line = debug.getinfo(1, 'l').currentline + 1
  local bad = function(event) if event == 'before_train_epoch' then error('no epochs today') end end
  msg = T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1, hooks = {bad}}
  end, 'failed in before_train_epoch')
  T.truthy(msg:find("hook 'function at [^']*test_trainer.lua:" .. line .. "'"), msg)
  -- a built-in hook by its class name
  msg = T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1,
      hooks = {hooks.SaveCheckpointHook{dir = 'd', every_steps = 2, save = function() error('disk full', 0) end}}}
  end, "hook 'SaveCheckpointHook' failed in after_train_iter (epoch 1, step 2): disk full")
end)

T.test('bad hooks are refused before training', function()
  local s = setup(true)
  local steps = 0
  local counting = {name = 'counting', after_train_iter = function() steps = steps + 1 end}
  T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1,
      hooks = {counting, {name = 'typo', after_train_iteration = function() end}}}
  end, "hook 'typo': 'after_train_iteration' is not an event")
  T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1, hooks = {counting, {name = 'empty'}}}
  end, "hook 'empty' has no event method")
  T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1, hooks = {counting, 42}}
  end, 'hook #2: expected a table or a function, got number')
  -- the schedule given twice (engine and hook)
  T.raises(function()
    Trainer{engine = s.engine}:fit{train_loader = s.train_loader, epochs = 1,
      hooks = {counting, hooks.LRSchedulerHook{lr_scheduler = s.sched}}}
  end, "hook 'LRSchedulerHook' failed in attach (epoch 1, step 0): LRSchedulerHook: the engine has an lr_scheduler too")
  T.eq(steps, 0, 'no step ran')
  T.raises(function() Trainer{} end, 'engine is required')
  T.raises(function() Trainer{engine = s.engine}:fit{epochs = 1} end, 'train_loader is required')
end)

-- the built-in hooks ----------------------------------------------------------------

T.test('LossHook and AccuracyHook: train means and the test accuracy of engine:evaluate', function()
  -- DROPOUT 0: the comparison with a second evaluation does not depend on
  -- whether evaluation mode reaches every dropout (tests/lua/test_nn.lua)
  local s = setup(true, {DROPOUT = 0})
  local r = recorder()
  local tr = Trainer{engine = s.engine}
  tr:fit{train_loader = s.train_loader, test_loader = s.test_loader, epochs = 2,
    hooks = {hooks.LossHook{}, hooks.AccuracyHook{}, r.hook}}
  local m = tr.states.metrics
  local mean = 0
  for i = SPE + 1, 2 * SPE do mean = mean + r.losses[i] / SPE end
  T.near(m.train.loss:value(), mean, 1e-12, 0, 'train loss: mean over the last epoch')
  T.eq(m.train.loss.count, SPE)
  T.eq(m.train.loss:get_last_step_value(), r.losses[2 * SPE])
  T.eq(m.train.accuracy.count, SPE * 16)
  T.truthy(m.train.accuracy.sum >= 0 and m.train.accuracy.sum <= SPE * 16)
  local acc, correct, total = s.engine:evaluate(s.test_loader)
  T.eq(m.test.accuracy.count, total); T.eq(m.test.accuracy.sum, correct)
  T.eq(m.test.accuracy:value(), acc)
  T.truthy(m.test.loss:value() > 0)
  T.truthy(s.model.training, 'back in training mode after the test')
end)

T.test('ThroughputHook: images/s over the steps after the ignored ones, FLOP/s = images/s * flops', function()
  local s = setup(true)
  local tr = Trainer{engine = s.engine}
  tr:fit{train_loader = s.train_loader, epochs = 1,
    hooks = {hooks.ThroughputHook{flops_per_image = 1000, ignored_steps = 1, data_parallel_size = 2}}}
  local tp, fl = tr.states.metrics.train.throughput, tr.states.metrics.train.flop_per_s
  T.eq(tp.sum, (SPE - 1) * 16 * 2, 'images of the steps after the first, times the data-parallel size')
  T.truthy(tp.count > 0, 'time')
  T.near(fl:value(), 1000 * tp:value(), 1e-12)
  T.truthy(tp.last > 0)
end)

T.test('LogMetricByStepHook, LogMetricByEpochHook, LogMemoryByEpochHook: what they write', function()
  local s = setup(false)
  local lines, logged = {}, {}
  local writer = {write = function(_, obj) lines[#lines + 1] = obj end}
  local logger = {info = function(fmt, ...) logged[#logged + 1] = string.format(fmt, ...) end}
  local tr = Trainer{engine = s.engine}
  tr:fit{train_loader = s.train_loader, test_loader = s.test_loader, epochs = 2, hooks = {
    hooks.LRSchedulerHook{lr_scheduler = s.sched}, hooks.LossHook{}, hooks.AccuracyHook{},
    hooks.ThroughputHook{}, hooks.LogMetricByStepHook{metrics = writer, log_every = 3, logger = logger},
    hooks.LogMetricByEpochHook{logger = logger}, hooks.LogMemoryByEpochHook{logger = logger}}}
  -- one JSON object per step, then one per test
  T.eq(#lines, 2 * SPE + 2)
  T.eq(lines[1].step, 1); T.eq(lines[1].epoch, 1); T.eq(lines[1].lr, s.sched:lr(0))
  T.truthy(lines[1].loss > 0 and lines[1].images_per_s > 0)
  T.eq(lines[SPE + 1].step, SPE); T.truthy(lines[SPE + 1].test_accuracy and lines[SPE + 1].test_loss, 'test line')
  local tests = {}
  for _, l in ipairs(lines) do if l.test_accuracy then tests[#tests + 1] = l end end
  T.eq(#tests, 2); T.eq(tests[2].step, 2 * SPE); T.eq(tests[2].epoch, 2)
  T.eq(tests[2].test_accuracy, tr.states.metrics.test.accuracy:value())
  local text = table.concat(logged, '\n')
  local function count(pat) local n = 0; for _ in text:gmatch(pat) do n = n + 1 end; return n end
  T.eq(count('epoch %d step %d+/8 loss'), 3, 'console lines at steps 3, 6 and the last (no terminal here)')
  T.eq(count('epoch %d: train loss'), 2)
  T.eq(count('epoch %d: test accuracy %d+%.%d+%% %(%d+/16%)'), 2)
  T.eq(count('epoch %d: memory [%d.]+ MiB in use, peak'), 2)
  T.eq(count('epoch %d %(test%): memory'), 2)
  T.truthy(tr.states.memory.peak_bytes > 0)
end)

T.test('the progress bar: rank 0 of a one-rank job on a terminal only (never under mpirun -np N > 1)', function()
  local log = require('lunar.log')
  local real = {isatty = lunar.isatty, rank = lunar.rank, world_size = lunar.world_size}
  local function with(tty, rank, size, fn)
    lunar.isatty, lunar.rank, lunar.world_size = function() return tty end, rank, size
    local ok, err = pcall(fn)
    lunar.isatty, lunar.rank, lunar.world_size = real.isatty, real.rank, real.world_size
    if not ok then error(err, 0) end
  end
  local cases = {   -- isatty(1), rank, world size -> drawn
    {true, 0, 1, true},     -- a terminal, one rank (also mpirun -np 1)
    {false, 0, 1, false},   -- redirected to a file or a pipe
    {true, 0, 2, false},    -- mpirun -np 2: Open MPI gives each rank a pty, the log may be a file
    {true, 1, 2, false},    -- never on another rank
    {true, 0, 8, false},
    {true, 0, nil, true},   -- a host without world_size: one rank
  }
  for _, c in ipairs(cases) do
    with(c[1], c[2], c[3], function()
      local what = string.format('isatty %s, rank %s, world size %s', tostring(c[1]), tostring(c[2]), tostring(c[3]))
      T.eq(log.progress_enabled(), c[4], what)
      T.eq(log.progress(10, 'epoch 1').active, c[4], what)
    end)
  end
  -- the trainer follows it: with display_progress and no bar, the LOG_EVERY lines are printed
  with(true, 0, 2, function()
    local s = setup(false)
    local logged = {}
    local logger = {info = function(fmt, ...) logged[#logged + 1] = string.format(fmt, ...) end}
    local tr = Trainer{engine = s.engine}
    local seen_active
    tr:fit{train_loader = s.train_loader, epochs = 1, display_progress = true, hooks = {
      hooks.LRSchedulerHook{lr_scheduler = s.sched},
      hooks.LogMetricByStepHook{log_every = 1, logger = logger},
      {name = 'probe', before_train_epoch = function(_, t) seen_active = t.progress_active end}}}
    T.eq(seen_active, false, 'no bar under mpirun with 2 ranks')
    T.eq(#logged, SPE, 'a console line per step instead')
  end)
end)

T.test('SaveCheckpointHook: every N steps, every N epochs and at the end, with a stub save', function()
  local s = setup(true)
  local saves = {}
  local function save(dir, state)
    saves[#saves + 1] = {dir = dir, step = state.step, epoch = state.epoch, model = state.model,
      optimizer = state.optimizer, loader = state.train_loader}
  end
  local tr = Trainer{engine = s.engine, config = CFG}
  tr:fit{train_loader = s.train_loader, epochs = 3, max_steps = 11,
    hooks = {hooks.SaveCheckpointHook{dir = 'ckpt', every_steps = 5, save = save}}}
  T.eq(#saves, 3)
  T.eq({saves[1].step, saves[2].step, saves[3].step}, {5, 10, 11})
  T.eq({saves[1].epoch, saves[2].epoch, saves[3].epoch}, {1, 2, 2}, 'complete epochs at each save')
  T.eq(saves[1].dir, 'ckpt')
  T.truthy(saves[1].model == s.model and saves[1].optimizer == s.optimizer and saves[1].loader == s.train_loader)
  T.eq(tr.states.last_checkpoint_step, 11)
  -- by epoch, no duplicate at the end
  local s2 = setup(true)
  saves = {}
  Trainer{engine = s2.engine}:fit{train_loader = s2.train_loader, epochs = 2,
    hooks = {hooks.SaveCheckpointHook{dir = 'c', every_epochs = 1, save = save, state = function(t)
      return {step = t.optimizer_steps, epoch = t.epochs_done} end}}}
  T.eq(#saves, 2)
  T.eq({saves[1].step, saves[2].step}, {SPE, 2 * SPE})
  -- without a save function it uses lunar.checkpoint.save
  T.eq(hooks.SaveCheckpointHook{dir = 'c'}.save, require('lunar.checkpoint').save)
  T.raises(function() hooks.SaveCheckpointHook{save = save} end, 'dir')
end)

T.test('Metric: accumulated and last values', function()
  local m = hooks.Metric('x')
  T.eq(m:value(), nil)
  m:update(6, 3); m:update(2, 1)
  T.eq(m:value(), 2); T.eq(m.last, 2); T.eq(m:get_accumulated_value(), 2)
  m:reset()
  T.eq(m.count, 0); T.eq(m.last, nil)
end)

T.run()
