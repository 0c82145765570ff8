--- lunar.schedule: learning-rate schedules as pure functions of the step.
--
--   s = schedule.warmup_cosine{base_lr=, warmup_steps=, total_steps=, min_lr=0}
--   s:lr(step)     step counts from 0 (the first update)
--
-- Linear warmup from base_lr / warmup_steps to base_lr over warmup_steps
-- updates, then cosine decay to min_lr at total_steps (Loshchilov & Hutter,
-- SGDR 2017; Goyal et al. 2017 for warmup; timm's CosineLRScheduler with
-- warmup_prefix). Being a function of the step, it needs no state to resume.
local schedule = {}

local WarmupCosine = {}
WarmupCosine.__index = WarmupCosine

function schedule.warmup_cosine(opts)
  assert(opts.base_lr and opts.total_steps, 'warmup_cosine: base_lr and total_steps are required')
  return setmetatable({
    base_lr = opts.base_lr, warmup_steps = math.max(0, math.floor(opts.warmup_steps or 0)),
    total_steps = math.max(1, opts.total_steps), min_lr = opts.min_lr or 0,
  }, WarmupCosine)
end

--- The learning rate of update number `step` (0-based).
function WarmupCosine:lr(step)
  if step < self.warmup_steps then
    return self.base_lr * (step + 1) / self.warmup_steps
  end
  local span = math.max(1, self.total_steps - self.warmup_steps)
  local progress = math.min(1, (step - self.warmup_steps) / span)
  return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
end

function WarmupCosine:state_dict()
  return {base_lr = self.base_lr, warmup_steps = self.warmup_steps, total_steps = self.total_steps, min_lr = self.min_lr}
end

return schedule
