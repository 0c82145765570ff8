--- lunar.engine: the low-level training loop (Colossal-AI's Engine).
--
--   local engine = require('lunar.engine').initialize{
--     model = m, optimizer = opt, criterion = nn.CrossEntropy{...},
--     lr_scheduler = sched,            -- optional: sets the lr before each step
--     clip_grad_norm = 0,              -- optional: max global norm (0 = off)
--     gradient_accumulation = 1,       -- optional: micro-steps per update
--   }
--   engine:train()
--   engine:zero_grad()
--   local logits = engine(images)               -- forward (also engine:forward)
--   local loss = engine:criterion(logits, labels)
--   engine:backward(loss)
--   engine:step()                               -- lr, clipping, update; step += 1
--   local acc = engine:evaluate(loader)         -- top-1 accuracy over a loader
--
-- Explicit forward/backward contexts: the engine holds the context of the last
-- forward and criterion; backward consumes them. A non-finite loss raises an
-- error naming the step (and nothing is updated).
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
  local self = setmetatable({
    model = args.model, optimizer = args.optimizer, criterion_module = args.criterion,
    lr_scheduler = args.lr_scheduler, clip_grad_norm = args.clip_grad_norm or 0,
    gradient_accumulation = args.gradient_accumulation or 1, step_count = 0, micro_step = 0,
    params = args.model:parameters(), last_grad_norm = nil,
  }, Engine)
  return self
end

function Engine:train() self.model:train(true) end
function Engine:eval() self.model:evaluate() end

--- Sets every gradient to zero.
function Engine:zero_grad() self.model:zero_grad() end

--- images -> logits; keeps the context for backward.
function Engine:forward(x)
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
  self.model:backward(self._ctx, dlogits)
  dlogits:free()
  self._ctx, self._cctx = nil, nil
  self.micro_step = self.micro_step + 1
end

--- One optimizer update: the scheduler's lr for this step, gradient clipping,
-- the update. Returns the learning rate used.
function Engine:step()
  local lr = self.optimizer.lr
  if self.lr_scheduler then
    lr = self.lr_scheduler:lr(self.step_count)
    self.optimizer:set_lr(lr)
  end
  if self.clip_grad_norm and self.clip_grad_norm > 0 then
    self.last_grad_norm = optim.clip_grad_norm(self.params, self.clip_grad_norm)
  end
  self.optimizer:step()
  self.step_count = self.step_count + 1
  return lr
end

--- Top-1 accuracy of the model over every batch of `loader` (eval mode, then
-- back to the previous mode). Returns accuracy, correct, total.
function Engine:evaluate(loader, epoch)
  local was_training = self.model.training
  self.model:evaluate()
  loader:set_epoch(epoch or 0)
  local correct, total = 0, 0
  while true do
    local x, y = loader:next()
    if not x then break end
    local logits, ctx = self.model:forward(x)
    correct = correct + lunar.ops.accuracy_count(logits, y)
    total = total + y:numel()
    engine.free_ctx(ctx)
    logits:free(); x:free(); y:free()
  end
  self.model:train(was_training)
  return total > 0 and correct / total or 0, correct, total
end

return engine
