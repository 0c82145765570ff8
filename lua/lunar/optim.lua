--- lunar.optim: fused optimizer steps over a model's parameters.
--
--   opt = optim.AdamW(model:parameters(), {lr=, betas={0.9, 0.999}, eps=1e-8, weight_decay=0.05})
--   opt = optim.SGD(model:parameters(), {lr=, momentum=0.9, weight_decay=0, nesterov=false})
--   opt:step()          one update from the accumulated gradients (uses opt.lr)
--   opt:set_lr(lr)
--   opt:state_dict() / opt:load_state_dict(sd)   (step count and moment buffers)
--
-- AdamW is Loshchilov & Hutter (2019) as torch.optim.AdamW; SGD as
-- torch.optim.SGD (dampening 0). Weight decay follows timm's grouping
-- (param_groups_weight_decay): no decay for 1-dim parameters and the names
-- marked no_weight_decay (pos_embed, cls_token).
--
-- precision = 'bf16' (nn.materialize): the parameters (p.param) are the fp32
-- master weights and the state is fp32; a parameter with a bf16 working copy
-- (p.param_bf16) is updated by the fused ops.*_step_bf16, which writes the
-- copy in the same pass (the fp32 update is the plain step's, bit for bit).
local ops = lunar.ops
local class = require('lunar.class')

local optim = {}

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

--- Allocates one flat zeroed buffer and per-parameter views of it.
local function flat_state(params)
  local total = 0
  for _, p in ipairs(params) do total = total + numel(p.shape) end
  local flat = lunar.zeros({math.max(total, 1)})
  local views, off = {}, 1
  for i, p in ipairs(params) do
    local n = numel(p.shape)
    views[i] = flat:narrow(1, off, n)
    off = off + n
  end
  return flat, views
end

local function check_params(params, who)
  if type(params) ~= 'table' or #params == 0 then error(who .. ': no parameters to optimize', 2) end
  for _, p in ipairs(params) do
    if not p.param or not p.grad then error(who .. ': parameter ' .. tostring(p.name) .. ' has no storage (materialize the model first)', 2) end
  end
end

-- The flat views an update step walks: each parameter, its gradient and,
-- under precision = 'bf16', its bf16 working copy (every optimizer's).
local function flat_views(self, params)
  self.pviews, self.gviews, self.p16views = {}, {}, {}
  for i, p in ipairs(params) do
    self.pviews[i] = p.param:view(-1)
    self.gviews[i] = p.grad:view(-1)
    self.p16views[i] = p.param_bf16 and p.param_bf16:view(-1)   -- precision = 'bf16': the working copy
  end
end

optim.AdamW = class('AdamW')

function optim.AdamW:__init(params, opts)
  check_params(params, 'AdamW')
  opts = opts or {}
  self.params = params
  self.lr = opts.lr or 1e-3
  local betas = opts.betas or {0.9, 0.999}
  self.beta1, self.beta2 = betas[1], betas[2]
  self.eps = opts.eps or 1e-8
  self.weight_decay = opts.weight_decay or 0.01
  self.t = 0
  self.flat_m, self.m = flat_state(params)
  self.flat_v, self.v = flat_state(params)
  flat_views(self, params)
end

function optim.AdamW:set_lr(lr) self.lr = lr end

--- One AdamW update of every parameter from its accumulated gradient.
function optim.AdamW:step()
  self.t = self.t + 1
  for i, p in ipairs(self.params) do
    local wd = p.no_weight_decay and 0 or self.weight_decay
    if self.p16views[i] then
      ops.adamw_step_bf16(self.pviews[i], self.p16views[i], self.m[i], self.v[i], self.gviews[i], self.lr,
        self.beta1, self.beta2, self.eps, wd, self.t)
    else
      ops.adamw_step(self.pviews[i], self.m[i], self.v[i], self.gviews[i], self.lr, self.beta1, self.beta2,
        self.eps, wd, self.t)
    end
  end
end

function optim.AdamW:state_dict()
  return {kind = 'adamw', step = self.t, exp_avg = self.flat_m, exp_avg_sq = self.flat_v}
end

function optim.AdamW:load_state_dict(sd)
  self.t = sd.step
  self.flat_m:copy_(sd.exp_avg)
  self.flat_v:copy_(sd.exp_avg_sq)
end

optim.SGD = class('SGD')

function optim.SGD:__init(params, opts)
  check_params(params, 'SGD')
  opts = opts or {}
  self.params = params
  self.lr = opts.lr or 1e-2
  self.momentum = opts.momentum or 0
  self.weight_decay = opts.weight_decay or 0
  self.nesterov = opts.nesterov or false
  self.t = 0
  if self.momentum ~= 0 then self.flat_buf, self.buf = flat_state(params) else self.buf = {} end
  flat_views(self, params)
end

function optim.SGD:set_lr(lr) self.lr = lr end

--- One SGD update (momentum buffers start from the first gradient, as PyTorch).
function optim.SGD:step()
  self.t = self.t + 1
  for i, p in ipairs(self.params) do
    local wd = p.no_weight_decay and 0 or self.weight_decay
    if self.p16views[i] then
      ops.sgd_step_bf16(self.pviews[i], self.p16views[i], self.buf[i], self.gviews[i], self.lr, self.momentum, wd,
        self.nesterov, self.t == 1)
    else
      ops.sgd_step(self.pviews[i], self.buf[i], self.gviews[i], self.lr, self.momentum, wd, self.nesterov,
        self.t == 1)
    end
  end
end

function optim.SGD:state_dict()
  return {kind = 'sgd', step = self.t, momentum_buffer = self.flat_buf}
end

function optim.SGD:load_state_dict(sd)
  self.t = sd.step
  if self.flat_buf and sd.momentum_buffer then self.flat_buf:copy_(sd.momentum_buffer) end
end

--- Global L2 norm of every gradient (double accumulation).
function optim.grad_norm(params)
  local s = 0
  for _, p in ipairs(params) do s = s + ops.sum_squares(p.grad) end
  return math.sqrt(s)
end

--- Scales every gradient so the global norm is at most max_norm (PyTorch's
-- clip_grad_norm_, eps 1e-6). Returns the norm before clipping.
function optim.clip_grad_norm(params, max_norm)
  local norm = optim.grad_norm(params)
  local coef = max_norm / (norm + 1e-6)
  if coef < 1 then
    for _, p in ipairs(params) do ops.scale_(p.grad, coef) end
  end
  return norm
end

return optim
