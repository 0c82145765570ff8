--- lunar.nn.gradcheck: a module's backward against central finite differences
-- (Torch7's nn.Jacobian, PyTorch's torch.autograd.gradcheck), for the input
-- and every parameter.
--
--   local report = nn.gradcheck(module, x, {eps = 1e-2, rtol = 1e-2, atol = 1e-3})
--   assert(report.ok, report.message)
--
-- The scalar checked is L = sum(y * r), r a fixed random tensor of y's shape
-- (seed opts.seed), so dL/dy = r: the analytic gradients are one backward of r
-- (after zero_grad), the numeric ones (L(w + eps) - L(w - eps)) / (2 eps) for
-- each checked element w of the input and of every parameter.
--
-- Precision, honestly: lunar's ops compute on f32 tensors only (f64 operands
-- are refused), so the perturbation is done in f32, not float64. To keep the
-- differences clean the check runs with the reference kernels by default
-- (opts.reference, default true: lunar.ops.use_reference_kernels, which sum in
-- double and round once to f32) and L is summed in double. With eps = 1e-2
-- (default) the truncation error is O(eps^2) and the f32 rounding error
-- about 6e-8 |L| / eps, so the default tolerance is rtol 1e-2, atol 1e-3 per
-- element: |analytic - numeric| <= atol + rtol * |numeric|. A wrong backward
-- (a missing term, a transposed weight, a wrong scale) misses by O(1) of the
-- gradient and fails. Non-smooth points (ReLU at 0) are the caller's to avoid.
--
-- The module runs in its current mode: a Dropout with p > 0 in training mode
-- draws a new mask per call and fails the check (call m:evaluate() or p = 0).
-- A module that was never materialized is materialized with opts.seed.
--
-- @param module a lunar.nn module (its forward takes one tensor)
-- @param x the input tensor (f32; not changed: a copy is perturbed)
-- @param opts optional {eps=1e-2, rtol=1e-2, atol=1e-3, seed=0, reference=true,
--   input=true (check dx), params=true (check every parameter),
--   max_elements=256 (per tensor: all elements when fewer, else this many:
--   the largest |analytic| ones and an even spread)}
-- @return report {ok=bool, message=string, checked=count of elements,
--   worst={tensor=name ('input' or the parameter's full name), index=flat
--   1-based index, analytic=, numeric=, err=, ratio=err / tolerance},
--   tensors={{name=, checked=, max_err=, max_ratio=}, ...}}
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

local function gradcheck(module, x, opts)
  opts = opts or {}
  local eps, rtol, atol = default(opts.eps, 1e-2), default(opts.rtol, 1e-2), default(opts.atol, 1e-3)
  local seed = default(opts.seed, 0)
  local nn = require('lunar.nn')
  if not module._flat then nn.materialize(module, seed) end
  local reference = default(opts.reference, true)
  ops.use_reference_kernels(reference)
  local ok, report = pcall(function()
    local xin = x:clone()                       -- contiguous, perturbed in place
    local xflat = xin:view(-1)
    -- r = dL/dy
    local y0, c0 = module:forward(xin)
    local r = lunar.empty(y0:shape(), 'f32', y0:device()):normal_(seed, 'gradcheck.r', 0, 1)
    c0:free()
    if y0 ~= xin then y0:free() end
    local function L()
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
    local rep = {ok = true, checked = 0, tensors = {}}
    local worst
    for _, t in ipairs(targets) do
      local gt = lunar.tensor(t.g)
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
      rep.checked = rep.checked + st.checked
      rep.tensors[#rep.tensors + 1] = st
    end
    r:free(); xflat:free(); xin:free()
    rep.worst = worst
    rep.ok = worst == nil or worst.ratio <= 1
    local where = module.path ~= '' and module.path or '<root>'
    if worst then
      rep.message = string.format('nn.gradcheck %s (%s): %d elements, worst %s[%d]: analytic %.6g, ' ..
        'finite difference %.6g, |diff| %.3g (%.3g x the tolerance atol %g + rtol %g * |fd|, eps %g)%s',
        where, module.__name or 'Module', rep.checked, worst.tensor, worst.index, worst.analytic, worst.numeric,
        worst.err, worst.ratio, atol, rtol, eps, rep.ok and '' or ': FAILED')
    else
      rep.message = string.format('nn.gradcheck %s: nothing to check', where)
    end
    return rep
  end)
  ops.use_reference_kernels(false)
  if not ok then error(report, 0) end
  return report
end

return gradcheck
