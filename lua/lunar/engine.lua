--- lunar.engine: the low-level training loop (Colossal-AI's Engine).
--
--   local engine = require('lunar.engine').initialize{
--     model = m, optimizer = opt, criterion = nn.CrossEntropy{...},
--     lr_scheduler = sched,            -- optional: sets the lr before each step
--     clip_grad_norm = 0,              -- optional: max global norm (0 = off)
--     gradient_accumulation = 1,       -- optional: micro-steps per update
--     grid = g,                        -- optional: lunar.parallel.initialize(cfg)
--     num_micro_batches = m,           -- optional (default the grid's NUM_MICRO_BATCHES, or 1)
--     pipeline_schedule = '1f1b',      -- optional: '1f1b' | 'gpipe' (default the grid's)
--     bucket_size = 2^18,              -- optional: elements per data-parallel gradient bucket
--   }
--   engine:train()
--   engine:zero_grad()
--   local logits = engine(images)               -- forward (also engine:forward)
--   local loss = engine:criterion(logits, labels)
--   engine:backward(loss)
--   engine:step()                               -- lr, clipping, update; step += 1
--   local acc = engine:evaluate(loader)         -- top-1 accuracy over a loader
--
-- or, with pipeline stages or micro-batches (engine:uses_schedule()), one call
-- for the whole batch instead of forward, criterion and backward:
--   local loss = engine:execute_schedule(images, labels)   -- mean loss of the batch
--
-- Explicit forward/backward contexts: the engine holds the context of the last
-- forward and criterion; backward consumes them. A non-finite loss raises an
-- error naming the step (and nothing is updated).
--
-- Gradient accumulation (Colossal-AI's): with gradient_accumulation = n, the
-- loss gradient is 1/n, zero_grad only clears at the start of a cycle of n
-- backward passes and step only updates after the n-th (it returns the lr
-- and whether it updated), so a loop that calls zero_grad, forward,
-- criterion, backward and step for every batch updates every n batches.
--
-- Parallel (a grid from lunar.parallel.initialize): the model is this rank's
-- part (lunar.parallel.vit); the data-parallel gradients are averaged in
-- buckets overlapped with backward (lunar.parallel.reducer), finished before
-- the update; clip_grad_norm takes the global norm over the tensor and
-- pipeline groups (lunar.parallel.clip_grad_norm); execute_schedule runs the
-- GPipe or 1F1B schedule (lunar.parallel.pipeline) and returns the loss
-- averaged over micro-batches and data-parallel ranks, on every rank.
local optim = require('lunar.optim')

local Engine = {}
Engine.__index = function(self, k) return Engine[k] end
Engine.__call = function(self, x) return self:forward(x) end

local engine = {}

--- Frees every tensor reachable from a forward context (evaluation, or a
-- context that will not be used for backward).
engine.free_ctx = require('lunar.nn.Module').free_ctx

--- Creates an engine; see the module doc for the fields of `args`.
function engine.initialize(args)
  assert(args.model and args.optimizer and args.criterion, 'engine.initialize: model, optimizer and criterion are required')
  local g = args.grid
  local self = setmetatable({
    model = args.model, optimizer = args.optimizer, criterion_module = args.criterion,
    lr_scheduler = args.lr_scheduler, clip_grad_norm = args.clip_grad_norm or 0,
    gradient_accumulation = args.gradient_accumulation or 1, step_count = 0, micro_step = 0,
    params = args.model:parameters(), last_grad_norm = nil, grid = g,
    num_micro_batches = args.num_micro_batches or (g and g.num_micro_batches) or 1,
    pipeline_schedule = args.pipeline_schedule or (g and g.pipeline_schedule) or '1f1b',
  }, Engine)
  if g then
    self.reducer = require('lunar.parallel.reducer').new{model = args.model, grid = g, bucket_size = args.bucket_size}
  end
  return self
end

--- Whether a batch must go through execute_schedule (pipeline stages or
-- more than one micro-batch) rather than forward / criterion / backward.
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

--- Sets every gradient to zero (at the start of an accumulation cycle only).
function Engine:zero_grad()
  if self.micro_step % self.gradient_accumulation == 0 then self.model:zero_grad() end
end

--- images -> logits; keeps the context for backward.
function Engine:forward(x)
  if self.grid and self.grid.pp_size > 1 then
    error('engine:forward: this rank holds one pipeline stage; run the batch with engine:execute_schedule', 2)
  end
  if self._ctx then engine.free_ctx(self._ctx) end
  local out, ctx = self.model:forward(x)
  self._ctx = ctx
  return out
end

--- logits, labels -> loss (a number); keeps the criterion context.
function Engine:criterion(out, labels)
  local loss, cctx = self.criterion_module:forward(out, labels)
  self._cctx = cctx
  return loss
end

--- Backward of the last criterion and forward. The loss gradient is
-- 1 / gradient_accumulation, so accumulated micro-steps average.
function Engine:backward(loss)
  if loss ~= loss or loss == math.huge or loss == -math.huge then
    error(string.format('non-finite loss %s at step %d (1-based; stopping before the update)', tostring(loss), self.step_count + 1), 0)
  end
  assert(self._ctx and self._cctx, 'engine:backward: call forward and criterion first')
  local dlogits = self.criterion_module:backward(self._cctx, 1 / self.gradient_accumulation)
  self._cctx.logits:free()
  if self.reducer then self.reducer:begin((self.micro_step + 1) % self.gradient_accumulation == 0) end
  self.model:backward(self._ctx, dlogits)
  dlogits:free()
  self._ctx, self._cctx = nil, nil
  self.micro_step = self.micro_step + 1
end

--- One optimizer update: the scheduler's lr for this step, the gradient
-- synchronization (data-parallel buckets), gradient clipping (the global
-- norm), the update. Returns the learning rate and true; in the middle of a
-- gradient accumulation cycle it updates nothing and returns the lr the
-- next update will use and false.
function Engine:step()
  local lr = self.optimizer.lr
  if self.lr_scheduler then
    lr = self.lr_scheduler:lr(self.step_count)
  end
  if self.micro_step % self.gradient_accumulation ~= 0 then return lr, false end
  self.optimizer:set_lr(lr)
  if self.reducer then self.reducer:finish() end
  if self.clip_grad_norm and self.clip_grad_norm > 0 then
    if self.grid then
      self.last_grad_norm = require('lunar.parallel').clip_grad_norm(self.params, self.clip_grad_norm, self.grid)
    else
      self.last_grad_norm = optim.clip_grad_norm(self.params, self.clip_grad_norm)
    end
  end
  self.optimizer:step()
  self.step_count = self.step_count + 1
  return lr, true
end

--- Runs the forward and backward passes of a whole batch (this
-- data-parallel rank's images [B, C, S..] and labels [B]) as the schedule
-- says (Colossal-AI's execute_schedule): num_micro_batches micro-batches of
-- B / num_micro_batches images, through the pipeline stages with GPipe or
-- 1F1B when the grid has them, gradients accumulated (each micro-batch's loss
-- gradient is 1 / (num_micro_batches * gradient_accumulation)). Every rank
-- passes its batch (only the first stage reads images, only the last the
-- labels). Returns the batch's mean loss averaged over the data-parallel
-- group, on every rank. Call zero_grad before and step after, as with
-- backward.
function Engine:execute_schedule(images, labels)
  local g, m = self.grid, self.num_micro_batches
  local ga = self.gradient_accumulation
  local sync = (self.micro_step + 1) % ga == 0
  local scale = 1 / (m * ga)
  local reducer = self.reducer
  local where = string.format(' at step %d (1-based; stopping before the update)', self.step_count + 1)
  local loss_sum
  if self._ctx then engine.free_ctx(self._ctx); self._ctx, self._cctx = nil, nil end
  if g and g.pp_size > 1 then
    loss_sum = require('lunar.parallel.pipeline').run{
      model = self.model, criterion = self.criterion_module, grid = g, schedule = self.pipeline_schedule,
      images = images, labels = labels, num_micro_batches = m, loss_scale = scale, where = where,
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
      local logits, ctx = self.model:forward(x)
      local loss, cctx = self.criterion_module:forward(logits, y)
      if loss ~= loss or loss == math.huge or loss == -math.huge then
        error(string.format('non-finite loss %s%s', tostring(loss), where), 0)
      end
      loss_sum = loss_sum + loss
      local dlogits = self.criterion_module:backward(cctx, scale)
      logits:free()
      if reducer then reducer:begin(sync and k == m) end
      self.model:backward(ctx, dlogits)
      dlogits:free()
    end
  end
  self.micro_step = self.micro_step + 1
  return self:_schedule_loss(loss_sum and loss_sum / m)
end

-- The mean loss from the last stage (tensor rank 0) of every data-parallel
-- replica, averaged, on every rank.
function Engine:_schedule_loss(loss)
  local g = self.grid
  if not g or g.world_size == 1 then return loss end
  local mine = (g.stage.is_last and g.tp_rank == 0) and loss or 0.0
  return g.world:all_reduce_number(mine + 0.0, 'sum') / g.dp_size
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
    local logits
    if g and g.pp_size > 1 then
      logits = require('lunar.parallel.pipeline').forward_only(self.model, g, x, y:numel())
    else
      local ctx
      logits, ctx = self.model:forward(x)
      engine.free_ctx(ctx)
    end
    if logits then
      correct = correct + lunar.ops.accuracy_count(logits, y)
      total = total + y:numel()
      logits:free()
    end
    x:free(); y:free()
  end
  self.model:train(was_training)
  if g and g.world_size > 1 then
    local counts = g.stage.is_last and g.tp_rank == 0
    correct = g.world:all_reduce_number(counts and correct or 0, 'sum')
    total = g.world:all_reduce_number(counts and total or 0, 'sum')
  end
  return total > 0 and correct / total or 0, correct, total
end

return engine
