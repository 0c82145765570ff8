-- tests/lua/test_golden.lua: Lunar's ViT against PyTorch's on the golden file
-- tests/golden/vit_tiny.safetensors (written by tests/golden/gen_golden.py).
-- Every tensor is compared by its timm name: logits, loss, each parameter
-- gradient, the weights after one AdamW step, and the losses of 10 steps.
-- Tolerance: per element |lunar - torch| <= atol + rtol * |torch| with
-- golden.FP32_TOL (rtol 1e-4, atol 1e-5; golden.lua says why); a NaN or an
-- infinity fails, which the last tests show on corrupted copies.
--   build/lunar tests/lua/test_golden.lua
local T = require('harness')
local golden = require('golden')

local st, build = golden.st, golden.model
local x, y = st.input, st.target

T.test('every parameter of the golden file exists in Lunar with the same shape', function()
  local model = build()
  local names = {}
  for _, p in ipairs(model:parameters()) do names[p.name] = true end
  for k, v in pairs(st) do
    local name = k:match('^param%.(.*)$')
    if name then
      T.truthy(names[name], 'Lunar has no parameter ' .. name)
      T.eq(model:state_dict()[name]:numel(), v:numel(), name)
    end
  end
end)

golden.fp32_tests(T, {x = x, y = y, tol = golden.FP32_TOL})

-- The comparison itself: the golden logits compared with a copy of themselves
-- pass; the same copy with one element NaN, +inf or -inf, or off by more
-- than the tolerance, fails (T.check_close), and T.rel_err is NaN for a
-- non-finite element. A tensor reduction (max, min) that skipped NaN would
-- let the NaN copies pass.
local function corrupted(k, v)
  local c = st.logits:clone()
  c:view(-1)[k] = v
  return c
end

T.test('the golden comparison passes an exact copy and fails one element off', function()
  local n = st.logits:numel()
  T.check_close('copy', st.logits:clone(), st.logits, golden.FP32_TOL)
  local k = n // 2
  local v = st.logits:view(-1)[k]
  local off = corrupted(k, v + 2 * (golden.FP32_TOL.atol + golden.FP32_TOL.rtol * math.abs(v)))
  T.raises(function() T.check_close('one element off', off, st.logits, golden.FP32_TOL) end,
    '1 of ' .. n .. ' elements not within')
end)

for _, case in ipairs({{'NaN', 0 / 0}, {'+inf', math.huge}, {'-inf', -math.huge}}) do
  local name, v = case[1], case[2]
  T.test('a ' .. name .. ' in a compared tensor fails the golden comparison', function()
    for _, k in ipairs({1, st.logits:numel()}) do   -- first and last element
      local bad = corrupted(k, v)
      T.raises(function() T.check_close('logits', bad, st.logits, golden.FP32_TOL) end,
        'worst element ' .. k .. ':')
      T.raises(function() T.check_close('logits', bad, st.logits, {rtol = 1, atol = 1e30}) end,
        'not within', 'fails at any finite tolerance')
      local e = T.rel_err(bad, st.logits)
      T.truthy(e ~= e, 'T.rel_err is NaN, got ' .. tostring(e))
    end
  end)
end

T.run()
