-- Tests of lua/lunar/schedule.lua and lua/lunar/optim.lua: the warmup-cosine
-- schedule, AdamW and SGD against hand computations, weight-decay grouping,
-- gradient clipping, and state_dict round trips.
--   build/lunar tests/lua/test_optim.lua
local T = require('harness')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')

-- f32 rounding of a double (the parameters are f32)
local function f32(x) return (string.unpack('f', string.pack('f', x))) end

-- A hand-made parameter list: one entry per {name, values, shape, no_weight_decay}.
local function params(specs)
  local out = {}
  for _, s in ipairs(specs) do
    local n = #s.values
    out[#out + 1] = {name = s.name, param = lunar.tensor(s.values), grad = lunar.zeros({n}), shape = s.shape or {n},
                     no_weight_decay = s.no_weight_decay or false}
  end
  return out
end

-- schedule ---------------------------------------------------------------------

T.test('warmup_cosine: warmup, peak, halfway, end', function()
  local base, min = 1e-3, 1e-5
  local s = schedule.warmup_cosine{base_lr = base, warmup_steps = 10, total_steps = 110, min_lr = min}
  T.near(s:lr(0), base / 10, 1e-12, 0, 'first step = base / warmup')
  T.near(s:lr(4), base * 5 / 10, 1e-12, 0, 'linear warmup')
  T.near(s:lr(9), base, 1e-12, 0, 'end of warmup = base')
  T.near(s:lr(10), base, 1e-12, 0, 'start of the cosine = base')
  T.near(s:lr(60), (base + min) / 2, 1e-12, 0, 'halfway through the cosine')
  T.near(s:lr(35), min + (base - min) * 0.5 * (1 + math.cos(math.pi / 4)), 1e-12, 0, 'a quarter')
  local last = s:lr(109)
  T.truthy(last > min and last < min + 1e-3 * (base - min), 'last step ~ min: ' .. last)
  T.near(s:lr(110), min, 1e-12, 0, 'total_steps: min')
  T.near(s:lr(1000), min, 1e-12, 0, 'after the end: min')
  -- monotone after the warmup
  local prev = math.huge
  for i = 10, 110 do
    local lr = s:lr(i)
    T.truthy(lr <= prev, 'non-increasing at step ' .. i)
    prev = lr
  end
  -- no warmup: starts at base
  local s0 = schedule.warmup_cosine{base_lr = 0.1, total_steps = 100}
  T.eq(s0:lr(0), 0.1)
  T.near(s0:lr(50), 0.05, 1e-12)
  T.near(s0:lr(100), 0, 0, 1e-15)
  -- a pure function of the step: the state needs nothing else
  T.eq(s:state_dict(), {base_lr = base, warmup_steps = 10, total_steps = 110, min_lr = min})
  T.raises(function() schedule.warmup_cosine{base_lr = 1} end, 'total_steps')
end)

-- AdamW ------------------------------------------------------------------------

-- torch.optim.AdamW's single-tensor update, in double.
local function adamw_ref(p, grads, lr, b1, b2, eps, wd)
  local m, v = 0, 0
  for t, g in ipairs(grads) do
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    local mhat, vhat = m / (1 - b1 ^ t), v / (1 - b2 ^ t)
    p = p - lr * mhat / (math.sqrt(vhat) + eps)
  end
  return p
end

local function adamw_two_steps(wd)
  local lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
  local ps = params({{name = 'w', values = {1.5}, shape = {1, 1}}})
  local opt = optim.AdamW(ps, {lr = lr, betas = {b1, b2}, eps = eps, weight_decay = wd})
  ps[1].grad[1] = 0.5
  opt:step()
  local after1 = ps[1].param[1]
  ps[1].grad[1] = -0.25
  opt:step()
  local after2 = ps[1].param[1]
  -- step 1 by hand: m = 0.05, v = 2.5e-4, mhat = 0.5, vhat = 0.25: p = 1.5 (1 - lr wd) - 0.1 * 0.5 / 0.5
  T.near(after1, 1.5 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps), 1e-6, 0, 'step 1')
  T.near(after1, adamw_ref(1.5, {0.5}, lr, b1, b2, eps, wd), 1e-6, 0, 'step 1 (reference)')
  -- step 2 by hand
  local m2 = 0.9 * 0.05 + 0.1 * -0.25
  local v2 = 0.999 * 2.5e-4 + 0.001 * 0.0625
  local expect2 = after1 * (1 - lr * wd) - lr * (m2 / (1 - 0.81)) / (math.sqrt(v2 / (1 - 0.998001)) + eps)
  T.near(after2, expect2, 1e-6, 0, 'step 2')
  T.near(after2, adamw_ref(1.5, {0.5, -0.25}, lr, b1, b2, eps, wd), 1e-6, 0, 'step 2 (reference)')
  T.eq(opt.t, 2)
  -- the moment buffers hold m and v
  local sd = opt:state_dict()
  T.eq(sd.kind, 'adamw'); T.eq(sd.step, 2)
  T.near(sd.exp_avg[1], m2, 1e-6)
  -- 1 - beta2 is formed in double from 0.999 (as PyTorch does), not from beta2
  -- rounded to f32 (0.99900001287, which put v 1.3e-5 relative off)
  T.near(sd.exp_avg_sq[1], v2, 1e-6)
  return after2
end

T.test('AdamW: 1 - beta and the bias corrections come from the double betas', function()
  -- one step from m = v = 0 with g = 1: m = f32(1 - b1), v = f32(1 - b2), exactly
  -- PyTorch's f32 values (1 - 0.999 formed in double, then rounded); from betas
  -- rounded to f32 first they were f32(1 - f32(0.999)) = 0.00099998713 (1.3e-5 off)
  for _, b in ipairs({{0.9, 0.999}, {0.9, 0.95}, {0.8, 0.9999}, {0.99, 0.99999}}) do
    local ps = params({{name = 'w', values = {0.25, -2}}})
    local opt = optim.AdamW(ps, {lr = 1e-3, betas = b, eps = 1e-8, weight_decay = 0})
    ps[1].grad:fill_(1)
    opt:step()
    local sd = opt:state_dict()
    T.eq(sd.exp_avg[1], f32(1 - b[1]), 'exp_avg, beta1 ' .. b[1])
    T.eq(sd.exp_avg_sq[1], f32(1 - b[2]), 'exp_avg_sq, beta2 ' .. b[2])
  end
  -- many steps with beta2 close to 1: the bias correction 1 - beta2^t (double)
  -- matches the double reference; with f32 betas the step drifted by ~1e-5 relative
  local b1, b2, lr, eps = 0.9, 0.9999, 1e-2, 1e-8
  local ps = params({{name = 'w', values = {1}}})
  local opt = optim.AdamW(ps, {lr = lr, betas = {b1, b2}, eps = eps, weight_decay = 0})
  local grads = {}
  for t = 1, 50 do grads[t] = (t % 3 == 0) and -0.5 or 1 / t end
  local m, v = 0, 0
  for t, g in ipairs(grads) do
    ps[1].grad[1] = g
    opt:step()
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
  end
  local sd = opt:state_dict()
  T.near(sd.exp_avg_sq[1], v, 2e-6, 0, 'v after 50 steps')
  T.near(sd.exp_avg[1], m, 2e-6, 0, 'm after 50 steps')
  T.near(ps[1].param[1], adamw_ref(1, grads, lr, b1, b2, eps, 0), 1e-6, 0, 'param after 50 steps')
end)

T.test('AdamW: two steps on one element against a hand computation, no weight decay', function()
  local p = adamw_two_steps(0)
  T.near(p, 1.5 - 0.1 - 0.1 * (0.02 / 0.19) / math.sqrt(3.1225e-4 / 1.999e-3), 1e-6)
end)

T.test('AdamW: two steps on one element against a hand computation, weight decay 0.1', function()
  local with = adamw_two_steps(0.1)
  local without = adamw_two_steps(0)
  T.truthy(with < without, 'decay pulls the weight toward 0')
end)

T.test('AdamW: 1-D params and no_weight_decay names get no decay', function()
  local model = nn.ViT{img_size = 8, patch_size = 4, in_chans = 1, embed_dim = 8, depth = 1, num_heads = 2,
    num_classes = 3}
  nn.materialize(model, 5)
  local ps = model:parameters()
  local before = {}
  for _, p in ipairs(ps) do before[p.name] = p.param:clone() end
  local lr, wd = 0.1, 0.2
  local opt = optim.AdamW(ps, {lr = lr, weight_decay = wd})
  model:zero_grad()                        -- zero gradients: only the decay moves weights
  opt:step()
  local decayed, kept = 0, 0
  for _, p in ipairs(ps) do
    local b = before[p.name]
    if #p.shape <= 1 or p.name == 'cls_token' or p.name == 'pos_embed' then
      T.eq(p.param:totable(), b:totable(), p.name .. ' is not decayed')
      kept = kept + 1
    else
      local want = b * f32(1 - lr * wd)
      local d = p.param - want
      T.truthy(math.max(d:max(), -d:min()) <= 1e-7, p.name .. ' is decayed by 1 - lr wd')
      decayed = decayed + 1
    end
  end
  T.eq(decayed, 6, 'patch_embed.proj, qkv, proj, fc1, fc2, head weights')
  T.eq(kept, 14)
  -- hand-made params: the flag alone decides
  local hp = params({{name = 'a', values = {2}, shape = {1, 1}}, {name = 'b', values = {2}, shape = {1, 1},
    no_weight_decay = true}})
  local o2 = optim.AdamW(hp, {lr = 0.5, weight_decay = 0.5})
  o2:step()
  T.eq(hp[1].param[1], 1.5); T.eq(hp[2].param[1], 2)
end)

T.test('AdamW: every element of a vector parameter updates independently', function()
  local ps = params({{name = 'w', values = {1, -2, 3, 0.5}, shape = {2, 2}}})
  local opt = optim.AdamW(ps, {lr = 0.01, betas = {0.8, 0.99}, eps = 1e-6, weight_decay = 0.05})
  local gs = {{0.1, -0.2, 0.3, 0}, {0.4, 0.1, -0.3, 2}}
  for _, g in ipairs(gs) do
    ps[1].grad:copy_(lunar.tensor(g))
    opt:step()
  end
  local init = {1, -2, 3, 0.5}
  for i = 1, 4 do
    local want = adamw_ref(init[i], {gs[1][i], gs[2][i]}, 0.01, 0.8, 0.99, 1e-6, 0.05)
    T.near(ps[1].param[i], want, 1e-6, 1e-7, 'element ' .. i)
  end
end)

T.test('optimizers refuse parameters without storage', function()
  local model = nn.ViT{img_size = 8, patch_size = 4, in_chans = 1, embed_dim = 8, depth = 1, num_heads = 2,
    num_classes = 3}
  T.raises(function() optim.AdamW(model:parameters(), {}) end, 'materialize the model first')
  T.raises(function() optim.SGD({}, {}) end, 'no parameters to optimize')
end)

-- SGD --------------------------------------------------------------------------

T.test('SGD with momentum: two steps by hand', function()
  local lr, mu = 0.1, 0.9
  local ps = params({{name = 'w', values = {1.0}, shape = {1, 1}}})
  local opt = optim.SGD(ps, {lr = lr, momentum = mu})
  ps[1].grad[1] = 0.5
  opt:step()
  -- buf = g = 0.5; p = 1 - 0.05
  T.near(ps[1].param[1], 0.95, 1e-7)
  ps[1].grad[1] = -0.25
  opt:step()
  -- buf = 0.9 * 0.5 - 0.25 = 0.2; p = 0.95 - 0.02
  T.near(ps[1].param[1], 0.93, 1e-7)
  T.near(opt:state_dict().momentum_buffer[1], 0.2, 1e-7)

  -- with weight decay 0.1: g' = g + wd p
  local q = params({{name = 'w', values = {1.0}, shape = {1, 1}}})
  local o2 = optim.SGD(q, {lr = lr, momentum = mu, weight_decay = 0.1})
  q[1].grad[1] = 0.5; o2:step()
  local b1 = 0.5 + 0.1 * 1.0
  local p1 = 1.0 - lr * b1
  T.near(q[1].param[1], p1, 1e-7)
  q[1].grad[1] = -0.25; o2:step()
  local b2 = mu * b1 + (-0.25 + 0.1 * p1)
  T.near(q[1].param[1], p1 - lr * b2, 1e-6)

  -- nesterov: d = g' + mu buf
  local r = params({{name = 'w', values = {1.0}, shape = {1, 1}}})
  local o3 = optim.SGD(r, {lr = lr, momentum = mu, nesterov = true})
  r[1].grad[1] = 0.5; o3:step()
  T.near(r[1].param[1], 1 - lr * (0.5 + mu * 0.5), 1e-7)
  r[1].grad[1] = -0.25; o3:step()
  local nb = mu * 0.5 - 0.25
  T.near(r[1].param[1], 1 - lr * 0.95 - lr * (-0.25 + mu * nb), 1e-6)

  -- no momentum: plain steps, no buffer
  local s = params({{name = 'w', values = {1.0}, shape = {1, 1}}})
  local o4 = optim.SGD(s, {lr = lr, momentum = 0})
  s[1].grad[1] = 0.5; o4:step(); o4:step()
  T.near(s[1].param[1], 0.9, 1e-7)
  T.eq(o4:state_dict().momentum_buffer, nil)
end)

-- clipping ---------------------------------------------------------------------

T.test('clip_grad_norm scales gradients to the max norm and returns the pre-clip norm', function()
  local ps = params({{name = 'a', values = {0, 0}}, {name = 'b', values = {0}}})
  ps[1].grad:copy_(lunar.tensor({3, 0}))
  ps[2].grad[1] = 4
  T.near(optim.grad_norm(ps), 5, 1e-12)
  local n = optim.clip_grad_norm(ps, 1)
  T.near(n, 5, 1e-12, 0, 'returns the norm before clipping')
  T.near(ps[1].grad[1], 0.6, 1e-6); T.near(ps[2].grad[1], 0.8, 1e-6)
  T.near(optim.grad_norm(ps), 1, 1e-6, 0, 'the norm is now max_norm')
  -- below the max: untouched
  local n2 = optim.clip_grad_norm(ps, 10)
  T.near(n2, 1, 1e-6)
  T.near(ps[1].grad[1], 0.6, 1e-6); T.near(ps[2].grad[1], 0.8, 1e-6)
  -- over a model
  local model = nn.ViT{img_size = 8, patch_size = 4, in_chans = 1, embed_dim = 8, depth = 1, num_heads = 2,
    num_classes = 3}
  nn.materialize(model, 2)
  local mp = model:parameters()
  for _, p in ipairs(mp) do p.grad:fill_(1) end
  local total = model:num_parameters()
  T.near(optim.clip_grad_norm(mp, 0.5), math.sqrt(total), 1e-9)
  T.near(optim.grad_norm(mp), 0.5, 1e-5)
  T.near(model._flat_grad:max(), 0.5 / math.sqrt(total), 1e-5)
end)

-- state_dict -------------------------------------------------------------------

local function tiny_model(seed)
  local m = nn.ViT{img_size = 8, patch_size = 4, in_chans = 1, embed_dim = 8, depth = 1, num_heads = 2,
    num_classes = 3}
  nn.materialize(m, seed)
  return m
end

-- Fills every gradient with a deterministic function of (step, name).
local function set_grads(model, step)
  for _, p in ipairs(model:parameters()) do
    p.grad:view(-1):normal_(step, 'grad.' .. p.name, 0, 0.1)
  end
end

local function snapshot(sd)
  local s = {}
  for k, v in pairs(sd) do s[k] = lunar.is_tensor(v) and v:clone() or v end
  return s
end

local function round_trip(make_opt)
  local a = tiny_model(1)
  local oa = make_opt(a)
  for step = 1, 3 do set_grads(a, step); oa:step() end
  local saved_params = a._flat:clone()
  local saved = snapshot(oa:state_dict())
  -- a fresh model and optimizer, loaded from the snapshot
  local b = tiny_model(99)
  b._flat:copy_(saved_params)
  local ob = make_opt(b)
  ob:load_state_dict(saved)
  T.eq(ob.t, 3)
  for step = 4, 6 do
    set_grads(a, step); oa:step()
    set_grads(b, step); ob:step()
    T.eq(b._flat:totable(), a._flat:totable(), 'bitwise equal after step ' .. step)
  end
  -- without loading the state the next step differs
  local c = tiny_model(99)
  c._flat:copy_(saved_params)
  local oc = make_opt(c)
  set_grads(c, 4); oc:step()
  local a2 = tiny_model(1)
  local oa2 = make_opt(a2)
  for step = 1, 4 do set_grads(a2, step); oa2:step() end
  local d = c._flat - a2._flat
  T.truthy(math.max(d:max(), -d:min()) > 0, 'a fresh optimizer state gives another step')
end

T.test('AdamW state_dict / load_state_dict: bitwise identical next steps', function()
  round_trip(function(m) return optim.AdamW(m:parameters(), {lr = 1e-2, weight_decay = 0.05}) end)
end)

T.test('SGD state_dict / load_state_dict: bitwise identical next steps', function()
  round_trip(function(m) return optim.SGD(m:parameters(), {lr = 1e-2, momentum = 0.9, weight_decay = 1e-3}) end)
end)

T.test('set_lr changes the step size', function()
  local ps = params({{name = 'w', values = {1.0}, shape = {1, 1}}})
  local opt = optim.SGD(ps, {lr = 0.1})
  opt:set_lr(0.5)
  T.eq(opt.lr, 0.5)
  ps[1].grad[1] = 1
  opt:step()
  T.near(ps[1].param[1], 0.5, 1e-7)
end)

T.run()
