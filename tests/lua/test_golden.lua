-- tests/lua/test_golden.lua: Lunar's ViT against PyTorch's on the golden file
-- tests/golden/vit_tiny.safetensors (written by tests/golden/gen_golden.py).
-- Every tensor is compared by its timm name: logits, loss, each parameter
-- gradient, the weights after one AdamW step, and the losses of 10 steps.
-- Tolerance: max |lunar - torch| / max |torch| <= 1e-4 per tensor.
--   build/lunar tests/lua/test_golden.lua
local T = require('harness')
local golden = require('golden')
local RTOL = 1e-4

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

golden.fp32_tests(T, {x = x, y = y, rtol = RTOL})

T.run()
