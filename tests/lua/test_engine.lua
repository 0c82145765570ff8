-- Tests of lua/lunar/engine.lua: a tiny ViT on synthetic data learns,
-- training is bitwise reproducible, a non-finite loss stops before the update,
-- gradient accumulation equals one full batch, clipping and the LR schedule
-- are applied.
--   build/lunar tests/lua/test_engine.lua
local T = require('harness')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local engine = require('lunar.engine')
local config = require('lunar.config')
local data = require('lunar.data')
local models = require('lunar.models')

local CFG = config.from_table({DATASET = 'synthetic', NUM_SAMPLES = 256, IMG_SIZE = 8, PATCH_SIZE = 4,
  IN_CHANS = 2, NUM_CLASSES = 4, BATCH_SIZE = 32, SEED = 1, HIDDEN_SIZE = 32, NUM_HEADS = 2, DEPTH = 2,
  LABEL_SMOOTHING = 0.1}, 'test_engine')
local TRAIN = data.datasets(CFG)

local function new_engine(opts)
  opts = opts or {}
  local model = models.vit(CFG)
  nn.materialize(model, opts.seed or CFG.SEED)
  local opt = optim.AdamW(model:parameters(), {lr = opts.lr or 3e-3, weight_decay = 0.05})
  local eng = engine.initialize{model = model, optimizer = opt,
    criterion = nn.CrossEntropy{label_smoothing = CFG.LABEL_SMOOTHING},
    clip_grad_norm = opts.clip_grad_norm, gradient_accumulation = opts.gradient_accumulation,
    lr_scheduler = opts.lr_scheduler, num_micro_batches = opts.num_micro_batches, eval_hflip = opts.eval_hflip,
    eval_shift = opts.eval_shift, eval_fill = opts.eval_fill}
  eng:train()
  return eng, model, opt
end

local train = T.train_steps

local function mean(t, i, j)
  local s = 0
  for k = i, j do s = s + t[k] end
  return s / (j - i + 1)
end

T.test('30 steps reduce the loss clearly; accuracy on the train loader beats chance', function()
  local eng, model = new_engine()
  local ld = data.loader(TRAIN, CFG, {train = true})
  local losses = train(eng, ld, 30)
  T.eq(#losses, 30)
  T.eq(eng.optimizer_steps, 30)
  local first, last = mean(losses, 1, 3), mean(losses, 28, 30)
  T.truthy(first > 1.2, 'starts near ln 4: ' .. first)
  T.truthy(last < 0.75 * first, string.format('loss %.3f -> %.3f', first, last))
  local eval_ld = data.loader(TRAIN, CFG, {train = false})
  local acc, correct, total = eng:evaluate(eval_ld)
  T.eq(total, 256)
  T.eq(acc, correct / total)
  T.truthy(acc > 0.6, 'accuracy ' .. acc .. ' beats chance (0.25)')
  T.truthy(model.training, 'evaluate restores training mode')
  -- evaluating does not change the weights
  local before = model._flat:clone()
  eng:evaluate(eval_ld)
  T.eq(model._flat:totable(), before:totable())
end)

T.test('the same seed run twice gives bitwise identical losses', function()
  local a = train(new_engine(), data.loader(TRAIN, CFG, {train = true}), 12)
  local b = train(new_engine(), data.loader(TRAIN, CFG, {train = true}), 12)
  T.eq(b, a)
  local c = train(new_engine({seed = 2}), data.loader(TRAIN, CFG, {train = true}), 12)
  T.truthy(c[1] ~= a[1], 'another init seed gives another loss')
end)

T.test("a NaN weight: backward raises 'non-finite loss' with the step; nothing is updated", function()
  local eng, model, opt = new_engine()
  local ld = data.loader(TRAIN, CFG, {train = true})
  train(eng, ld, 2)
  T.eq(eng.optimizer_steps, 2); T.eq(opt.t, 2)
  model.head.weight:view(-1)[1] = 0 / 0
  local before = model._flat:clone()
  local m_before = opt:state_dict().exp_avg:clone()
  local x, y = ld:next()
  local msg = T.raises(function()
    eng:zero_grad()
    local logits = eng(x)
    local loss = eng:criterion(logits, y)
    eng:backward(loss)
    eng:step()
  end, 'non%-finite loss')
  T.truthy(msg:find('at step 3 ', 1, true), msg)
  T.eq(eng.optimizer_steps, 2, 'no step counted')
  T.eq(opt.t, 2, 'the optimizer did not step')
  -- every weight but the poisoned one is unchanged, and so is the optimizer state
  local a, b = model._flat:totable(), before:totable()
  local changed = 0
  for i = 1, #a do
    if a[i] == a[i] and a[i] ~= b[i] then changed = changed + 1 end
  end
  T.eq(changed, 0)
  T.eq(opt:state_dict().exp_avg:totable(), m_before:totable())
  -- an infinite loss is refused too
  T.raises(function() eng:backward(math.huge) end, 'non-finite loss inf at step 3')
end)

-- The flat gradient after one update's worth of backward passes over batch (x, y),
-- split into `parts` micro-batches.
local function grads_of(x, y, parts)
  local eng, model = new_engine({gradient_accumulation = parts})
  eng:zero_grad()
  local B = x:size(1)
  local mb = B // parts
  for k = 0, parts - 1 do
    local xs = x:narrow(1, k * mb + 1, mb):contiguous()
    local ys = y:narrow(1, k * mb + 1, mb):contiguous()
    local logits = eng(xs)
    local loss = eng:criterion(logits, ys)
    eng:backward(loss)
  end
  T.eq(eng.batches_done, parts)
  return model._flat_grad:clone(), eng
end

T.test('gradient_accumulation=2 over two half-batches equals one full batch', function()
  local ld = data.loader(TRAIN, CFG, {train = true})
  local x, y = ld:next()
  local full = grads_of(x, y, 1)
  local acc = grads_of(x, y, 2)
  local d = acc - full
  local rel = math.max(d:max(), -d:min()) / math.max(full:max(), -full:min())
  T.truthy(rel <= 1e-5, 'relative difference ' .. rel)
  T.truthy(full:norm() > 0)
  -- and a plain sum (no 1/2 scaling) would be twice as large: the test can fail
  local doubled = grads_of(x, y, 1) * 2
  local d2 = acc - doubled
  T.truthy(math.max(d2:max(), -d2:min()) / math.max(full:max(), -full:min()) > 0.4)
  -- one step after accumulation equals one step after the full batch
  local e1, m1 = new_engine({gradient_accumulation = 1})
  local e2, m2 = new_engine({gradient_accumulation = 2})
  m1._flat_grad:copy_(full); e1:step()
  m2._flat_grad:copy_(acc); e2:step()
  local dw = m1._flat - m2._flat
  T.truthy(math.max(dw:max(), -dw:min()) < 1e-5, 'weights after one step')
end)

T.test('gradient_accumulation=2 in the plain loop: zero_grad and step act once per cycle', function()
  local ld = data.loader(TRAIN, CFG, {train = true})
  local x, y = ld:next()
  -- one engine, one update on the full batch
  local e1, m1 = new_engine({gradient_accumulation = 1})
  e1:zero_grad(); e1:backward(e1:criterion(e1(x), y))
  local _, up1 = e1:step()
  T.eq(up1, true)
  -- the other: zero_grad, forward, criterion, backward, step for each half
  local e2, m2, o2 = new_engine({gradient_accumulation = 2})
  local w0 = m2._flat:clone()
  local updates = {}
  for k = 0, 1 do
    local xs, ys = x:narrow(1, k * 16 + 1, 16):contiguous(), y:narrow(1, k * 16 + 1, 16):contiguous()
    e2:zero_grad()
    e2:backward(e2:criterion(e2(xs), ys))
    local _, updated = e2:step()
    updates[#updates + 1] = updated
    if k == 0 then
      T.eq(m2._flat:totable(), w0:totable(), 'no update in the middle of the cycle')
      T.eq(e2.optimizer_steps, 0); T.eq(o2.t, 0)
    end
  end
  T.eq(updates, {false, true})
  T.eq(e2.optimizer_steps, 1); T.eq(o2.t, 1)
  local dg = m2._flat_grad - m1._flat_grad
  T.truthy(math.max(dg:max(), -dg:min()) / math.max(m1._flat_grad:max(), -m1._flat_grad:min()) <= 1e-5,
    'accumulated gradients = full-batch gradients')
  local dw = m2._flat - m1._flat
  T.truthy(math.max(dw:max(), -dw:min()) < 1e-5, 'the same update')
end)

T.test('clip_grad_norm is applied: last_grad_norm set, gradients scaled to the max norm', function()
  local max_norm = 1e-3
  local eng, model = new_engine({clip_grad_norm = max_norm})
  T.eq(eng.last_grad_norm, nil)
  local ld = data.loader(TRAIN, CFG, {train = true})
  local x, y = ld:next()
  eng:zero_grad()
  eng:backward(eng:criterion(eng(x), y))
  local pre = optim.grad_norm(eng.params)
  T.truthy(pre > 10 * max_norm, 'the gradient norm exceeds the max: ' .. pre)
  eng:step()
  T.near(eng.last_grad_norm, pre, 1e-9, 0, 'last_grad_norm is the norm before clipping')
  T.near(optim.grad_norm(eng.params), max_norm, 1e-4, 0, 'gradients were scaled to max_norm')
  T.near(model._flat_grad:norm(), max_norm, 1e-4)
  -- without clipping: no norm recorded, gradients untouched
  local e2, m2 = new_engine()
  e2:zero_grad()
  e2:backward(e2:criterion(e2(x), y))
  local g = m2._flat_grad:clone()
  e2:step()
  T.eq(e2.last_grad_norm, nil)
  T.eq(m2._flat_grad:totable(), g:totable())
end)

T.test('the lr scheduler sets the learning rate of each step', function()
  local sched = schedule.warmup_cosine{base_lr = 1e-2, warmup_steps = 4, total_steps = 10, min_lr = 1e-4}
  local eng, _, opt = new_engine({lr_scheduler = sched})
  local ld = data.loader(TRAIN, CFG, {train = true})
  local x, y = ld:next()
  for step = 0, 5 do
    eng:zero_grad()
    eng:backward(eng:criterion(eng(x), y))
    local lr = eng:step()
    T.near(lr, sched:lr(step), 1e-15, 0, 'lr of step ' .. step)
    T.eq(opt.lr, lr)
  end
  T.near(opt.lr, sched:lr(5), 1e-15)
  T.near(sched:lr(0), 2.5e-3, 1e-12)
end)

T.test('train_step: micro-batches give the plain losses and weights; keep_logits gives the forward', function()
  -- The loss of a batch is the mean over its images, so the mean of the losses
  -- of two equal halves is the full batch's loss, and the gradients of the
  -- halves, each scaled by 1/2, sum to the full gradient: equal up to float
  -- rounding (1e-5 relative, as the gradient accumulation test above). A
  -- wrong scale (1 instead of 1/2) doubles the gradient, which the first
  -- step's gradients show (AdamW itself is nearly blind to the scale).
  local plain, mp = new_engine()
  local micro, mm = new_engine({num_micro_batches = 2})
  T.falsy(plain:uses_schedule()); T.truthy(micro:uses_schedule())
  local la, lb = data.loader(TRAIN, CFG, {train = true}), data.loader(TRAIN, CFG, {train = true})
  local a = train(plain, la, 1)
  local b = train(micro, lb, 1)
  local dg = mm._flat_grad - mp._flat_grad
  T.truthy(math.max(dg:max(), -dg:min()) / math.max(mp._flat_grad:max(), -mp._flat_grad:min()) <= 1e-5,
    'the first step\'s gradients')
  T.near(b, a, 1e-6, 0, 'the first loss')
  -- 5 more steps: losses within 1e-5 relative; weights within lr / 10: AdamW
  -- turns rounding noise in a gradient near zero (the key part of qkv.bias has
  -- a true gradient of zero, tests/mpi/parallel_check.lua) into steps of up
  -- to lr (measured: 1e-4 = lr / 30 after 6 steps)
  local function more(eng, ld)
    local out = {}
    for i = 1, 5 do
      local x, y = ld:next()
      out[i] = eng:train_step(x, y)
      x:free(); y:free()
    end
    return out
  end
  local a5, b5 = more(plain, la), more(micro, lb)
  T.near(b5, a5, 1e-5)
  T.truthy(a5[5] < a[1], 'the model trains')
  local dw = mp._flat - mm._flat
  T.truthy(math.max(dw:max(), -dw:min()) < 3e-3 / 10, 'the same weights after 6 steps')
  T.eq(micro.optimizer_steps, 6); T.eq(micro.batches_done, 6)
  -- keep_logits: a copy of the batch's logits, equal to a forward in eval mode without dropout
  local ld = data.loader(TRAIN, CFG, {train = false})
  local x, y = ld:next()
  local e, m = new_engine()
  local ref = m:forward(x)            -- CFG has no dropout: the same logits as in training mode
  local loss, lr, updated, logits = e:train_step(x, y, {keep_logits = true})
  T.eq(logits:shape(), {32, 4})
  T.eq(logits:totable(), ref:totable())
  T.truthy(updated); T.eq(lr, 3e-3)
  T.near(loss, lunar.ops.cross_entropy(ref, y, CFG.LABEL_SMOOTHING), 1e-6)
  local _, _, _, none = micro:train_step(x, y, {keep_logits = true})
  T.eq(none, nil, 'no logits of the whole batch with micro-batches')
  logits:free(); ref:free()
end)

T.test('train_step with gradient_accumulation=2: counters, lr of each update, the update after two batches', function()
  local sched = schedule.warmup_cosine{base_lr = 1e-2, warmup_steps = 2, total_steps = 6, min_lr = 1e-4}
  local eng, model, opt = new_engine({gradient_accumulation = 2, lr_scheduler = sched})
  local ld = data.loader(TRAIN, CFG, {train = true})
  ld:set_epoch(0)
  local got = {}
  for i = 1, 6 do
    local x, y = ld:next()
    local w0 = model._flat:clone()
    local _, lr, updated = eng:train_step(x, y)
    got[i] = {lr = lr, updated = updated, optimizer_steps = eng.optimizer_steps, batches_done = eng.batches_done}
    -- the weights move on the second batch of each cycle only
    local dw = model._flat - w0
    T.eq(math.max(dw:max(), -dw:min()) > 0, updated, 'batch ' .. i)
    x:free(); y:free()
  end
  -- updates 0, 1, 2 (0-based) after batches 2, 4, 6: the schedule's lr of each
  -- update (warmup: 1e-2 * 1/2, 1e-2 * 2/2; then cosine at progress 0)
  local w = {sched:lr(0), sched:lr(1), sched:lr(2)}
  T.near({w[1], w[2], w[3]}, {5e-3, 1e-2, 1e-2}, 1e-12)
  T.eq(got, {
    {lr = w[1], updated = false, optimizer_steps = 0, batches_done = 1},
    {lr = w[1], updated = true, optimizer_steps = 1, batches_done = 2},
    {lr = w[2], updated = false, optimizer_steps = 1, batches_done = 3},
    {lr = w[2], updated = true, optimizer_steps = 2, batches_done = 4},
    {lr = w[3], updated = false, optimizer_steps = 2, batches_done = 5},
    {lr = w[3], updated = true, optimizer_steps = 3, batches_done = 6},
  })
  T.eq(opt.t, 3)
end)

T.test('engine.check_loss: NaN and infinities raise with the step (and micro-batch), finite passes', function()
  T.eq(engine.check_loss(1.5, 1), 1.5)
  T.raises(function() engine.check_loss(0 / 0, 4) end, 'non%-finite loss .*nan at step 4 %(1%-based')
  T.raises(function() engine.check_loss(-math.huge, 2, 3) end, 'non-finite loss -inf at step 2, micro-batch 3')
end)

T.test('eval_shift: the mean over the image, its mirror and both shifted 1 px four ways (by hand)', function()
  local plain = new_engine()
  local tta = new_engine({eval_hflip = true, eval_shift = 1, eval_fill = {-1.5, 2.5}})   -- the same weights
  plain:eval(); tta:eval()
  local x = lunar.empty({3, 2, 8, 8}):normal_(9, 'x', 0, 1)
  local xt = x:totable()
  -- view (dy, dx) of the table t: v[b][c][i][j] = t[b][c][i + dy][j + dx], fill[c] outside
  local fill = {-1.5, 2.5}
  local function view(t, dy, dx, mirror)
    local out = {}
    for b = 1, 3 do out[b] = {} for c = 1, 2 do out[b][c] = {} for i = 1, 8 do
      local row = {}
      for j = 1, 8 do
        local si, sj = i + dy, j + dx
        if si < 1 or si > 8 or sj < 1 or sj > 8 then row[j] = fill[c]
        else row[j] = t[b][c][si][mirror and 9 - sj or sj] end
      end
      out[b][c][i] = row
    end end end
    return lunar.tensor(out)
  end
  local want
  for _, d in ipairs({{0, 0}, {-1, 0}, {1, 0}, {0, -1}, {0, 1}}) do
    for _, mirror in ipairs({false, true}) do
      local v = view(xt, d[1], d[2], mirror)
      local l = plain:eval_step(v)
      want = want and (want + l) or l
      v:free()
    end
  end
  want = (want * 0.1):totable()
  local got = tta:eval_step(x)
  local gt, worst = got:totable(), 0
  for r = 1, 3 do for k = 1, 4 do worst = math.max(worst, math.abs(gt[r][k] - want[r][k])) end end
  T.truthy(worst < 1e-6, 'worst difference ' .. worst)
  -- shifting alone (no flip): 5 views, and it changes the logits
  local shift_only = new_engine({eval_shift = 1, eval_fill = fill})
  shift_only:eval()
  local a, p = shift_only:eval_step(x), plain:eval_step(x)
  local dn = (a - p):norm()
  T.truthy(dn > 1e-4, 'the shifted views move the logits: ' .. dn)
  got:free(); a:free(); p:free(); x:free()
end)

T.test('eval_hflip: the logits are the mean of the image and of its mirror (W reversed, by hand)', function()
  local plain = new_engine()
  local tta = new_engine({eval_hflip = true})           -- the same seed: the same weights
  plain:eval(); tta:eval()
  local x = lunar.empty({3, 2, 8, 8}):normal_(7, 'x', 0, 1)
  local y = lunar.tensor({0, 1, 3}, 'i32')
  -- the mirror built element by element from the table: m[b][c][i][j] = x[b][c][i][9 - j]
  local xt = x:totable()
  local mt = {}
  for b = 1, 3 do mt[b] = {} for c = 1, 2 do mt[b][c] = {} for i = 1, 8 do
    local row = {}
    for j = 1, 8 do row[j] = xt[b][c][i][9 - j] end
    mt[b][c][i] = row
  end end end
  local m = lunar.tensor(mt)
  local a = plain:eval_step(x)
  local b = plain:eval_step(m)
  local want = ((a + b) * 0.5):totable()
  local got, loss = tta:eval_step(x, y)
  local worst = 0
  for r = 1, 3 do for k = 1, 4 do worst = math.max(worst, math.abs(got:totable()[r][k] - want[r][k])) end end
  T.eq(worst, 0)
  -- the loss is the criterion's on the averaged logits
  local want_loss = plain:eval_loss(got, y)
  T.eq(loss, want_loss)
  T.truthy(loss > 0)
  a:free(); b:free(); got:free(); x:free(); m:free()
end)

T.test('backward without forward and criterion is an error', function()
  local eng = new_engine()
  T.raises(function() eng:backward(1.0) end, 'call forward and criterion first')
  T.raises(function() engine.initialize{model = {}} end, 'model, optimizer and criterion are required')
end)

T.run()
