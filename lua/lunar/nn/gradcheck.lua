--- lunar.nn.gradcheck: a module's backward against central finite differences
-- (Torch7's nn.Jacobian, PyTorch's torch.autograd.gradcheck), for the input
-- and every parameter, in float64.
--
--   local report = nn.gradcheck(module, x)
--   assert(report.ok, report.message)
--
-- The scalar checked is L = sum(y * r), r a fixed random tensor of y's shape
-- (seed opts.seed), so dL/dy = r: the analytic gradients are one backward of r
-- (after zero_grad), the numeric ones (L(w + eps) - L(w - eps)) / (2 eps) for
-- each checked element w of the input and of every parameter.
--
-- Precision: by default (opts.dtype = 'f64') the module's parameters and
-- gradients are swapped for float64 copies for the duration of the check (and
-- put back after it, unchanged), the input is cast to f64, and every op runs on
-- the reference kernels in double (lunar.ops.use_reference_kernels: the f64
-- lunar_ref_* of core/ops/ref; the fast CPU and CUDA kernels take f32 only).
-- With eps = 1e-6 the truncation error is O(eps^2) ~ 1e-12 and the rounding
-- error about 1e-16 |L| / eps ~ 1e-10 |L|, so the default tolerance is tight:
-- |analytic - numeric| <= atol + rtol * |numeric| with rtol 1e-6, atol 1e-7.
-- A wrong backward (a missing term, a transposed weight, a wrong scale, an
-- error of one f32 rounding in a formula) misses by far more and fails.
-- opts.dtype = 'f32' keeps the module and input in f32 (the reference kernels
-- in f32: defaults eps 1e-2, rtol 1e-2, atol 1e-3), for a module whose own
-- code cannot run in f64. Non-smooth points (ReLU at 0) are the caller's to
-- avoid.
--
-- The module runs in its current mode. A module with random state (Dropout
-- with p > 0 in training mode: a mask per call) is rewound to the state of the
-- analytic forward before every perturbed forward (its rng_state /
-- set_rng_state), so every L sees the same mask and dropout is checked too.
-- A module that was never materialized is materialized with opts.seed; one
-- materialized with precision = 'bf16' is refused (check it in fp32).
--
-- @param module a lunar.nn module (its forward takes one tensor)
-- @param x the input tensor (f32 or f64; not changed: a copy is perturbed)
-- @param opts optional {dtype='f64'|'f32', eps=, rtol=, atol= (defaults by
--   dtype, above), seed=0, input=true (check dx), params=true (check every
--   parameter), max_elements=256 (per tensor: all elements when fewer, else
--   this many: the largest |analytic| ones and an even spread)}
-- @return report {ok=bool, message=string, checked=count of elements,
--   dtype=, worst={tensor=name ('input' or the parameter's full name),
--   index=flat 1-based index, analytic=, numeric=, err=, ratio=err /
--   tolerance}, tensors={{name=, checked=, max_err=, max_ratio=}, ...}}
local ops = lunar.ops

local function default(v, d) if v == nil then return d end return v end

local function picks(g, k)
  local n = g:numel()
  if n <= k then
    local all = {}
    for i = 1, n do all[i] = i end
    return all
  end
  local vals = g:totable()
  local idx = {}
  for i = 1, n do idx[i] = i end
  table.sort(idx, function(a, b)
    local va, vb = math.abs(vals[a]), math.abs(vals[b])
    if va ~= vb then return va > vb end
    return a < b
  end)
  local seen, out = {}, {}
  local function add(i) if not seen[i] then seen[i] = true; out[#out + 1] = i end end
  for i = 1, k // 2 do add(idx[i]) end
  local rest = k - #out
  for j = 0, rest - 1 do add(1 + (j * (n - 1)) // math.max(rest - 1, 1)) end
  table.sort(out)
  return out
end

local function flat_values(t)
  local f = t:contiguous()
  local v = f:view(-1)
  local vals = v:totable()
  v:free(); f:free()
  return vals
end

-- Swaps every parameter of module and its gradient for an f64 copy (one flat
-- buffer each, as nn.materialize), zero gradients; returns the function that
-- puts the f32 ones back (they are never written).
local function swap_f64(module)
  local numel = require('lunar.nn').numel
  local params = module:parameters()
  local total = 0
  for _, p in ipairs(params) do total = total + numel(p.shape) end
  local flat = lunar.empty({math.max(total, 1)}, 'f64')
  local flat_grad = lunar.zeros({math.max(total, 1)}, 'f64')
  local saved, off = {}, 1
  for _, p in ipairs(params) do
    local n = numel(p.shape)
    local w = flat:narrow(1, off, n):view(p.shape)
    w:copy_(p.param)
    saved[#saved + 1] = {m = p.module, name = p.local_name, param = p.param, grad = p.grad}
    p.module[p.local_name] = w
    p.module['grad_' .. p.local_name] = flat_grad:narrow(1, off, n):view(p.shape)
    off = off + n
  end
  local root_grad = module._flat_grad
  module._flat_grad = flat_grad
  return function()
    for _, sv in ipairs(saved) do
      sv.m[sv.name]:free(); sv.m['grad_' .. sv.name]:free()
      sv.m[sv.name], sv.m['grad_' .. sv.name] = sv.param, sv.grad
    end
    module._flat_grad = root_grad
    flat:free(); flat_grad:free()
  end
end

-- The modules of the tree with random state (rng_state/set_rng_state) and that
-- state now: rewind() puts it back.
local function rng_rewinder(module)
  local states = {}
  module:apply(function(m)
    if m.rng_state and m.set_rng_state then states[#states + 1] = {m = m, s = m:rng_state()} end
  end)
  return function() for _, st in ipairs(states) do st.m:set_rng_state(st.s) end end
end

local function gradcheck(module, x, opts)
  opts = opts or {}
  local dtype = default(opts.dtype, 'f64')
  if dtype ~= 'f64' and dtype ~= 'f32' then
    error("nn.gradcheck: opts.dtype must be 'f64' or 'f32', got " .. tostring(dtype), 2)
  end
  local f64 = dtype == 'f64'
  local eps = default(opts.eps, f64 and 1e-6 or 1e-2)
  local rtol = default(opts.rtol, f64 and 1e-6 or 1e-2)
  local atol = default(opts.atol, f64 and 1e-7 or 1e-3)
  local seed = default(opts.seed, 0)
  local nn = require('lunar.nn')
  if not module._flat then nn.materialize(module, seed) end
  if module._flat_bf16 then
    error("nn.gradcheck: the module was materialized with precision = 'bf16'; check it in fp32", 2)
  end
  if x:device() ~= 'cpu' then error('nn.gradcheck: x is on ' .. x:device() .. '; the check runs on the CPU', 2) end
  ops.use_reference_kernels(true)
  local restore = f64 and swap_f64(module) or function() end
  local ok, report = pcall(function()
    local xin = x:to(dtype)                     -- a contiguous copy, perturbed in place
    local xflat = xin:view(-1)
    local rewind = rng_rewinder(module)
    -- r = dL/dy
    local y0, c0 = module:forward(xin)
    local r32 = lunar.empty(y0:shape(), 'f32', y0:device()):normal_(seed, 'gradcheck.r', 0, 1)
    local r = r32:to(dtype)
    r32:free()
    c0:free()
    if y0 ~= xin then y0:free() end
    local function L()
      rewind()
      local y, c = module:forward(xin)
      c:free()
      local prod = y * r
      local v = prod:sum()
      prod:free()
      if y ~= xin then y:free() end
      return v
    end
    -- analytic
    module:zero_grad()
    rewind()
    local y, c = module:forward(xin)
    local dx = module:backward(c, r, true)
    local targets = {}
    if default(opts.input, true) then
      if not dx then error('nn.gradcheck: the backward returned no input gradient') end
      targets[#targets + 1] = {name = 'input', w = xflat, g = flat_values(dx)}
    end
    if dx and dx ~= r then dx:free() end
    if y ~= xin then y:free() end
    if default(opts.params, true) then
      for _, p in ipairs(module:parameters()) do
        targets[#targets + 1] = {name = p.name, w = p.param:view(-1), g = flat_values(p.grad)}
      end
    end
    -- numeric
    local rep = {ok = true, checked = 0, tensors = {}, dtype = dtype}
    local worst
    for _, t in ipairs(targets) do
      local gt = lunar.tensor(t.g, nil, 'f64')
      local idx = picks(gt, opts.max_elements or 256)
      gt:free()
      local st = {name = t.name, checked = 0, max_err = 0, max_ratio = 0}
      for _, i in ipairs(idx) do
        local w0 = t.w[i]
        t.w[i] = w0 + eps; local lp = L()
        t.w[i] = w0 - eps; local lm = L()
        t.w[i] = w0
        local fd = (lp - lm) / (2 * eps)
        local a = t.g[i]
        local err = math.abs(a - fd)
        local ratio = err / (atol + rtol * math.abs(fd))
        st.checked = st.checked + 1
        if err > st.max_err then st.max_err = err end
        if ratio > st.max_ratio then st.max_ratio = ratio end
        if not worst or ratio > worst.ratio then
          worst = {tensor = t.name, index = i, analytic = a, numeric = fd, err = err, ratio = ratio}
        end
      end
      if t.name ~= 'input' then t.w:free() end
      rep.checked = rep.checked + st.checked
      rep.tensors[#rep.tensors + 1] = st
    end
    r:free(); xflat:free(); xin:free()
    rep.worst = worst
    rep.ok = worst == nil or worst.ratio <= 1
    local where = module.path ~= '' and module.path or '<root>'
    if worst then
      rep.message = string.format('nn.gradcheck %s (%s, %s): %d elements, worst %s[%d]: analytic %.10g, ' ..
        'finite difference %.10g, |diff| %.3g (%.3g x the tolerance atol %g + rtol %g * |fd|, eps %g)%s',
        where, module.__name or 'Module', dtype, rep.checked, worst.tensor, worst.index, worst.analytic,
        worst.numeric, worst.err, worst.ratio, atol, rtol, eps, rep.ok and '' or ': FAILED')
    else
      rep.message = string.format('nn.gradcheck %s: nothing to check', where)
    end
    return rep
  end)
  restore()
  ops.use_reference_kernels(false)
  if not ok then error(report, 0) end
  return report
end

return gradcheck
