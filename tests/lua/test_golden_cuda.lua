-- tests/lua/test_golden_cuda.lua: the golden ViT test (tests/lua/test_golden.lua)
-- on a CUDA device: Lunar's ViT trained on the GPU against PyTorch's on the
-- golden file tests/golden/vit_tiny.safetensors: logits, loss, every parameter
-- gradient, the weights after one AdamW step, and the losses of ten steps.
-- The GEMMs run in full f32 (TF32 off), so the tolerance is the CPU test's:
-- per element |lunar - torch| <= atol + rtol * |torch| with golden.FP32_TOL
-- (rtol 1e-4, atol 1e-5); NaN or infinity fails.
--
-- The device is LUNAR_TEST_DEVICE (default 'cuda'; 'cpu' runs the same test on
-- the CPU, a check of the test itself). Every tensor the model and the
-- optimizer create lands on it through lunar.set_default_device; the golden
-- inputs are moved there. Without a CUDA device every test is skipped.
--   build/lunar tests/lua/test_golden_cuda.lua
--   LUNAR_TEST_DEVICE=cuda:1 build/lunar tests/lua/test_golden_cuda.lua
local T = require('harness')

local golden = require('golden')
local DEVICE = os.getenv('LUNAR_TEST_DEVICE') or 'cuda'
if DEVICE == '' then DEVICE = 'cuda' end

local available, reason = lunar.cuda.is_available()
local runs = DEVICE == 'cpu' or available

local st = golden.st

local x, y
if runs then
  lunar.set_default_device(DEVICE)
  lunar.cuda.set_tf32(false)
  x, y = st.input:to(DEVICE), st.target:to(DEVICE)
end

local function need_device()
  if not runs then T.skip('no CUDA device (' .. reason .. ')') end
end

local build, new_optimizer = golden.model, golden.optimizer
local function check_close(name, a, b, tol) return T.check_close(name, a, b, tol, ' on ' .. DEVICE) end
local criterion = golden.criterion()

T.test('the model lives on the device', function()
  need_device()
  local model = build()
  for _, p in ipairs(model:parameters()) do
    T.eq(p.param:device():sub(1, 4), DEVICE:sub(1, 4), p.name)
    T.eq(p.grad:device():sub(1, 4), DEVICE:sub(1, 4), 'grad.' .. p.name)
  end
end)

golden.fp32_tests(T, {x = x, y = y, tol = golden.FP32_TOL, where = ' on ' .. DEVICE, before = need_device})

-- precision = 'bf16' on the device (cuBLASLt CUDA_R_16BF GEMMs with fp32
-- accumulation, bf16 activations inside the blocks, attention on bf16 through
-- cuDNN's fused graph where it serves the shape, the fused AdamW writing the
-- working copy): the bf16 tolerances of tests/lua/test_bf16.lua (golden.BF16_TOL).
T.test('bf16: logits, gradients and ten AdamW losses within bf16 tolerance of PyTorch', function()
  need_device()
  local ok, why = lunar.ops.bf16_supported(DEVICE)
  if not ok then T.skip(why) end
  local model = build({precision = 'bf16'})
  T.eq(model._flat_bf16:device():sub(1, 4), DEVICE:sub(1, 4), 'the working copy lives on the device')
  local opt = new_optimizer(model)
  local ref = st.losses10
  for i = 1, 10 do
    model:zero_grad()
    local logits, ctx = model:forward(x)
    if i == 1 then check_close('bf16 logits', logits, st.logits, golden.BF16_TOL.logits) end
    local loss, cctx = criterion:forward(logits, y)
    T.near(loss, ref[i], golden.BF16_TOL.losses, 0, 'bf16 loss of step ' .. (i - 1))
    model:backward(ctx, criterion:backward(cctx, 1), false)
    if i == 1 then
      for _, p in ipairs(model:parameters()) do
        check_close('bf16 grad.' .. p.name, p.grad, st['grad.' .. p.name]:view(p.shape), golden.BF16_TOL.grad)
      end
    end
    opt:step()
  end
end)

T.run()
