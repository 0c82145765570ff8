--- lunar.engine: the low-level training loop (Colossal-AI's Engine).
--
--   local engine = require('lunar.engine').initialize{
--     model = m, optimizer = opt, criterion = nn.CrossEntropy{...},
--     lr_scheduler = sched,            -- optional: sets the lr before each optimizer step
--     clip_grad_norm = 0,              -- optional: max global norm (0 = off)
--     gradient_accumulation = 1,       -- optional: batches per optimizer step
--     grid = g,                        -- optional: lunar.parallel.initialize(cfg)
--     num_micro_batches = m,           -- optional (default the grid's NUM_MICRO_BATCHES, or 1)
--     pipeline_schedule = '1f1b',      -- optional: '1f1b' | 'gpipe' (default the grid's)
--     bucket_size = 2^18,              -- optional: elements per data-parallel gradient bucket
--     zero = z,                        -- optional: lunar.parallel.zero's sharded state (its
--                                      -- reducer, gradient shard and clipping replace the plain ones)
--     eval_hflip = false,              -- optional: eval_step's logits are the mean of the image's
--                                      -- and its mirror's (test-time augmentation; EVAL_HFLIP)
--     eval_shift = 0,                  -- optional: pixels; the mean also over the image (and mirror)
--                                      -- shifted up, down, left and right (EVAL_SHIFT)
--     eval_fill = {0},                 -- optional: per channel, the value the shift uncovers (a
--                                      -- black pixel once normalized, as the training crop pads)
--   }
--   engine:train()
--   local loss, lr, updated = engine:train_step(images, labels)   -- one batch, any layout
--   local acc = engine:evaluate(loader)                           -- top-1 accuracy over a loader
--
-- engine:train_step is THE training step of Lunar (the trainer, the tests and
-- the benches call it): zero_grad, then execute_schedule (the forward,
-- criterion and backward of the batch: whole, as num_micro_batches
-- micro-batches, or through the pipeline stages with GPipe or 1F1B), then
-- step. It is made of the low-level calls, which examples/train_with_engine.lua
-- shows one by one on a plain layout:
--   engine:zero_grad()
--   local logits = engine(images)               -- forward (also engine:forward)
--   local loss = engine:criterion(logits, labels)
--   engine:backward(loss)
--   engine:step()                               -- lr, clipping, update
--
-- Counters (saved in checkpoints):
--   engine.optimizer_steps  optimizer updates done (Megatron's iteration; what
--                           MAX_STEPS, SAVE_EVERY, LOG_EVERY and the LR schedule count)
--   engine.batches_done     batches whose backward ran (optimizer_steps *
--                           gradient_accumulation plus the batches of the cycle in progress)
--
-- Explicit forward/backward contexts: the engine holds the context of the last
-- forward and criterion; backward consumes them. A non-finite loss raises an
-- error naming the optimizer step (engine.check_loss; nothing is updated).
--
-- Gradient accumulation (Colossal-AI's): with gradient_accumulation = n, the
-- loss gradient is 1/n, zero_grad only clears at the start of a cycle of n
-- batches and step only updates after the n-th (it returns the lr and
-- whether it updated), so a loop that calls train_step for every batch
-- updates every n batches.
--
-- Parallel (a grid from lunar.parallel.initialize): the model is this rank's
-- part (lunar.parallel.vit); the data-parallel gradients are averaged in
-- buckets overlapped with backward (lunar.parallel.reducer), finished before
-- the update; clip_grad_norm takes the global norm over the tensor and
-- pipeline groups (lunar.parallel.clip_grad_norm); execute_schedule runs the
-- GPipe or 1F1B schedule (lunar.parallel.pipeline). The loss train_step
-- returns is the batch's mean loss averaged over the data-parallel ranks, on
-- every rank.
local optim = require('lunar.optim')
local shifted_views = require('lunar.nn.shifted_views')

local Engine = {}
Engine.__index = function(self, k) return Engine[k] end
Engine.__call = function(self, x) return self:forward(x) end

local engine = {}

--- Raises "non-finite loss L at step S[, micro-batch K] (1-based; stopping
-- before the update)" when `loss` is NaN or infinite; returns it otherwise.
-- step: the optimizer step being computed (1-based); micro_batch: optional.
-- The one check of the loss, for backward, execute_schedule and the pipeline
-- stages (lunar.parallel.pipeline calls it through run{check_loss=}).
function engine.check_loss(loss, step, micro_batch)
  if loss ~= loss or loss == math.huge or loss == -math.huge then
    error(string.format('non-finite loss %s at step %d%s (1-based; stopping before the update)', tostring(loss),
      step, micro_batch and string.format(', micro-batch %d', micro_batch) or ''), 0)
  end
  return loss
end

--- Creates an engine; see the module doc for the fields of `args`.
function engine.initialize(args)
  assert(args.model and args.optimizer and args.criterion, 'engine.initialize: model, optimizer and criterion are required')
  local g = args.grid
  local self = setmetatable({
    model = args.model, optimizer = args.optimizer, criterion_module = args.criterion,
    lr_scheduler = args.lr_scheduler, clip_grad_norm = args.clip_grad_norm or 0,
    gradient_accumulation = args.gradient_accumulation or 1, optimizer_steps = 0, batches_done = 0,
    params = args.model:parameters(), last_grad_norm = nil, grid = g,
    num_micro_batches = args.num_micro_batches or (g and g.num_micro_batches) or 1,
    pipeline_schedule = args.pipeline_schedule or (g and g.pipeline_schedule) or '1f1b',
    eval_hflip = args.eval_hflip or false, eval_shift = args.eval_shift or 0, eval_fill = args.eval_fill or {0},
  }, Engine)
  self.zero = args.zero
  if self.zero then
    self.reducer = self.zero.reducer
  elseif g then
    self.reducer = require('lunar.parallel.reducer').new{model = args.model, grid = g, bucket_size = args.bucket_size}
  end
  return self
end

--- Whether a batch goes through the schedule (pipeline stages or more than
-- one micro-batch) rather than one forward / criterion / backward; such a
-- step has no logits of the whole batch.
function Engine:uses_schedule()
  return self.num_micro_batches > 1 or (self.grid ~= nil and self.grid.pp_size > 1)
end

--- A metric of this rank's batch averaged over the data-parallel group (a
-- loss from engine:criterion, an accuracy); the number itself without a grid.
function Engine:all_reduce_metric(x)
  local g = self.grid
  if not g or g.dp_size == 1 then return x end
  return g.dp_group:all_reduce_number(x, 'avg')
end

function Engine:train() self.model:train(true) end
function Engine:eval() self.model:evaluate() end

--- Whether the next batch is the last of a gradient accumulation cycle (its
-- backward finishes the gradients the next step applies).
function Engine:_ends_cycle()
  return (self.batches_done + 1) % self.gradient_accumulation == 0
end

--- Sets every gradient to zero (at the start of an accumulation cycle only).
function Engine:zero_grad()
  if self.batches_done % self.gradient_accumulation == 0 then
    if self.zero then self.zero:zero_grad() else self.model:zero_grad() end
  end
end

--- images -> logits; keeps the context for backward.
function Engine:forward(x)
  if self.grid and self.grid.pp_size > 1 then
    error('engine:forward: this rank holds one pipeline stage; run the batch with engine:train_step', 2)
  end
  if self._ctx then self._ctx:free() end
  local out, ctx = self.model:forward(x)
  self._ctx, self._out = ctx, out   -- backward frees out (the logits) after the criterion's backward
  return out
end

--- logits, labels -> loss (a number); keeps the criterion context.
function Engine:criterion(out, labels)
  local loss, cctx = self.criterion_module:forward(out, labels)
  self._cctx = cctx
  return loss
end

-- The backward of the held criterion and forward contexts: the loss gradient
-- `scale`, the data-parallel buckets started (to be reduced when `sync`).
function Engine:_backward_held(scale, sync)
  local dlogits = self.criterion_module:backward(self._cctx, scale)
  self._out:free()
  if self.reducer then self.reducer:begin(sync) end
  self.model:backward(self._ctx, dlogits, false)
  dlogits:free()
  self._ctx, self._cctx, self._out = nil, nil, nil
end

--- Backward of the last criterion and forward (one batch). The loss gradient
-- is 1 / gradient_accumulation, so the batches of a cycle average.
function Engine:backward(loss)
  engine.check_loss(loss, self.optimizer_steps + 1)
  assert(self._ctx and self._cctx, 'engine:backward: call forward and criterion first')
  self:_backward_held(1 / self.gradient_accumulation, self:_ends_cycle())
  self.batches_done = self.batches_done + 1
end

--- One optimizer update: the scheduler's lr for this step, the gradient
-- synchronization (data-parallel buckets), gradient clipping (the global
-- norm), the update. Returns the learning rate and true; in the middle of a
-- gradient accumulation cycle it updates nothing and returns the lr the
-- next update will use and false.
function Engine:step()
  local lr = self.optimizer.lr
  if self.lr_scheduler then
    lr = self.lr_scheduler:lr(self.optimizer_steps)
  end
  if self.batches_done % self.gradient_accumulation ~= 0 then return lr, false end
  self.optimizer:set_lr(lr)
  if self.reducer then self.reducer:finish() end
  if self.clip_grad_norm and self.clip_grad_norm > 0 then
    if self.zero then
      self.last_grad_norm = self.zero:clip_grad_norm(self.clip_grad_norm)
    elseif self.grid then
      self.last_grad_norm = require('lunar.parallel').clip_grad_norm(self.params, self.clip_grad_norm, self.grid)
    else
      self.last_grad_norm = optim.clip_grad_norm(self.params, self.clip_grad_norm)
    end
  end
  self.optimizer:step()
  self.optimizer_steps = self.optimizer_steps + 1
  return lr, true
end

--- Runs the forward and backward passes of a whole batch (this
-- data-parallel rank's images [B, C, S..] and labels [B]) as the layout says
-- (Colossal-AI's execute_schedule): num_micro_batches micro-batches of
-- B / num_micro_batches images (one: the batch itself), through the pipeline
-- stages with GPipe or 1F1B when the grid has them, gradients accumulated
-- (each micro-batch's loss gradient is 1 / (num_micro_batches *
-- gradient_accumulation)). Every rank passes its batch (only the first stage
-- reads images, only the last the labels). Returns the batch's mean loss
-- averaged over the data-parallel group, on every rank, and, when
-- `keep_logits` is true and the layout has them (not engine:uses_schedule()),
-- a copy of the logits [B, classes] the caller frees. Call zero_grad before
-- and step after (engine:train_step does all three).
function Engine:execute_schedule(images, labels, keep_logits)
  local g, m = self.grid, self.num_micro_batches
  local sync = self:_ends_cycle()
  local scale = 1 / (m * self.gradient_accumulation)
  local reducer = self.reducer
  local step = self.optimizer_steps + 1
  local loss_sum, logits_copy
  if self._ctx then self._ctx:free(); self._ctx, self._cctx = nil, nil end
  if g and g.pp_size > 1 then
    loss_sum = require('lunar.parallel.pipeline').run{
      model = self.model, criterion = self.criterion_module, grid = g, schedule = self.pipeline_schedule,
      images = images, labels = labels, num_micro_batches = m, loss_scale = scale,
      check_loss = function(loss, k) engine.check_loss(loss, step, k) end,
      before_backward = function(k) if reducer then reducer:begin(sync and k == m) end end,
    }
  else
    local B = labels:size(1)
    if B % m ~= 0 then
      error(string.format('execute_schedule: the batch of %d is not divisible by %d micro-batches', B, m), 0)
    end
    local mb = B // m
    loss_sum = 0
    for k = 1, m do
      local x = m == 1 and images or images:narrow(1, (k - 1) * mb + 1, mb)
      local y = m == 1 and labels or labels:narrow(1, (k - 1) * mb + 1, mb)
      local logits = self:forward(x)
      local loss = engine.check_loss(self:criterion(logits, y), step, m > 1 and k or nil)
      loss_sum = loss_sum + loss
      if keep_logits and m == 1 then logits_copy = logits:clone() end
      self:_backward_held(scale, sync and k == m)
    end
  end
  self.batches_done = self.batches_done + 1
  local mean = loss_sum and loss_sum / m
  if self:uses_schedule() then return self:_schedule_loss(mean) end
  return self:all_reduce_metric(mean), logits_copy
end

--- One training step on one batch, for every layout: zero_grad,
-- execute_schedule (forward, criterion and backward: plain, micro-batches or
-- pipeline stages), step. Returns
--   loss     the batch's mean loss averaged over the data-parallel ranks (every rank)
--   lr       the learning rate of the update (or of the next one)
--   updated  whether the optimizer updated (false inside a gradient accumulation cycle)
--   logits   with opts.keep_logits, a copy of the batch's logits [B, classes]
--            for the caller (who frees it); nil when the layout runs a schedule
function Engine:train_step(images, labels, opts)
  self:zero_grad()
  local loss, logits = self:execute_schedule(images, labels, opts and opts.keep_logits)
  local lr, updated = self:step()
  return loss, lr, updated, logits
end

-- The mean loss from the last stage (tensor rank 0) of every data-parallel
-- replica, averaged, on every rank.
function Engine:_schedule_loss(loss)
  local g = self.grid
  if not g or g.world_size == 1 then return loss end
  local mine = (g.stage.is_last and g.tp_rank == 0 and (g.domain_rank or 0) == 0) and loss or 0.0
  return g.world:all_reduce_number(mine + 0.0, 'sum') / g.dp_size
end

--- The mirror image of x [B, C, H, W] (or [B, C, D, H, W]) along its last
-- axis, W (torchvision's hflip), as a new contiguous tensor of x's dtype and
-- device: W copies of one column each.
local function hflip(x)
  local d = x:dim()
  local W = x:size(d)
  local y = lunar.empty(x:shape(), x:dtype(), x:device())
  for j = 1, W do
    local dst, src = y:narrow(d, j, 1), x:narrow(d, W - j + 1, 1)
    dst:copy_(src)
    dst:free(); src:free()
  end
  return y
end

-- x [B, C, ...spatial] shifted by dy rows and dx columns of its last two axes
-- (pixel (i, j) of the copy is x's (i + dy, j + dx)), the uncovered border
-- filled with fill[c] in channel c, as a new contiguous tensor.
local function shifted(x, dy, dx, fill)
  local y = lunar.empty(x:shape(), x:dtype(), x:device())
  for c = 1, x:size(2) do
    local v = y:narrow(2, c, 1)
    v:fill_(fill[c] or fill[1] or 0)
    v:free()
  end
  shifted_views(y, x, {{dy, dx}}, function(dst, src) dst:copy_(src) end)
  return y
end

--- The forward of one evaluation batch (no context kept): images [B, ...]
-- -> logits [B, classes] (the caller frees them; nil on a pipeline stage
-- other than the last) and, with labels, the batch's mean loss on this rank
-- (nil without logits). Every rank of a pipeline calls it. Test-time
-- augmentation: with eval_hflip (EVAL_HFLIP) the logits are the mean of the
-- batch's and of its mirror images' (two forwards); with eval_shift = s > 0
-- (EVAL_SHIFT) the mean also takes in each of those shifted by s pixels up,
-- down, left and right (5 or 10 forwards), the uncovered border filled with
-- eval_fill (the training's random crop pads alike). The logits are summed in
-- that order (image, mirror; then per shift the image's, the mirror's) and
-- scaled by 1 / the number of views.
function Engine:eval_step(images, labels)
  if not self.eval_hflip and self.eval_shift == 0 then
    local logits = self:forward_logits(images)
    return logits, self:eval_loss(logits, labels)
  end
  local bases = {images}
  if self.eval_hflip then bases[2] = hflip(images) end
  local views = {{0, 0}}
  local s = self.eval_shift
  if s > 0 then views = {{0, 0}, {-s, 0}, {s, 0}, {0, -s}, {0, s}} end
  local sum, n = nil, 0
  for _, v in ipairs(views) do
    for _, base in ipairs(bases) do
      local x = (v[1] == 0 and v[2] == 0) and base or shifted(base, v[1], v[2], self.eval_fill)
      local l = self:forward_logits(x)
      if x ~= base then x:free() end
      n = n + 1
      if l then
        if sum then lunar.ops.add_(sum, l); l:free() else sum = l end
      end
    end
  end
  if bases[2] then bases[2]:free() end
  local logits = sum and lunar.ops.scale_(sum, 1 / n)
  return logits, self:eval_loss(logits, labels)
end

-- The logits of a batch in evaluation (eval_step without the loss and the mirror).
function Engine:forward_logits(images)
  local g = self.grid
  local logits
  -- a tensor mode that splits the batch in blocks (lunar.parallel.tensor_2d / tensor_3d) evaluates a
  -- batch of another size (the test set's last) padded with zero images, the logits cut back
  local n, nb = images:size(1), self.model.factory and self.model.factory:num_batch_blocks() or 1
  local unpadded = images
  if n % nb ~= 0 then
    local shape = images:shape()
    shape[1] = n + nb - n % nb
    images = lunar.zeros(shape, images:dtype(), images:device())
    images:narrow(1, 1, n):copy_(unpadded)
  end
  if g and g.pp_size > 1 then
    logits = require('lunar.parallel.pipeline').forward_only(self.model, g, images, images:size(1))
  else
    local ctx
    logits, ctx = self.model:forward(images)
    ctx:free()
  end
  if images ~= unpadded then
    images:free()
    if logits then
      local cut = logits:narrow(1, 1, n):contiguous()
      logits:free()
      logits = cut
    end
  end
  return logits
end

-- The mean loss of evaluation logits against labels (nil without either).
function Engine:eval_loss(logits, labels)
  if not (logits and labels) then return nil end
  local loss, cctx = self.criterion_module:forward(logits, labels)
  cctx:free()                          -- no backward: release the criterion's context
  return loss
end

--- Top-1 accuracy of the model over every batch of `loader` (eval mode, then
-- back to the previous mode). Returns accuracy, correct, total. With a grid
-- the loader is this data-parallel rank's shard (every rank of a pipeline and
-- tensor group iterates the same one); batches pass the pipeline stages
-- forward only, and the counts are summed over the data-parallel replicas.
function Engine:evaluate(loader, epoch)
  local g = self.grid
  local was_training = self.model.training
  self.model:evaluate()
  loader:set_epoch(epoch or 0)
  local correct, total = 0, 0
  while true do
    local x, y = loader:next()
    if not x then break end
    local logits = self:eval_step(x)
    if logits then
      correct = correct + lunar.ops.accuracy_count(logits, y)
      total = total + y:numel()
      logits:free()
    end
    x:free(); y:free()
  end
  self.model:train(was_training)
  if g and g.world_size > 1 then
    local counts = g.stage.is_last and g.tp_rank == 0 and (g.domain_rank or 0) == 0   -- domain ranks: same logits
    correct = g.world:all_reduce_number(counts and correct or 0, 'sum')
    total = g.world:all_reduce_number(counts and total or 0, 'sum')
  end
  return total > 0 and correct / total or 0, correct, total
end

return engine
