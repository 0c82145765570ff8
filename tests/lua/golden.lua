--- tests/lua/golden.lua: the golden file tests/golden/vit_tiny.safetensors
-- (written by tests/golden/gen_golden.py: PyTorch's ViT in f32, its inputs,
-- logits, loss, gradients, one AdamW step and ten losses) and the Lunar model
-- and optimizer its metadata describes, for the golden tests
-- (test_golden.lua, test_golden_cuda.lua, test_bf16.lua).
--
--   local golden = require('golden')
--   local st, num = golden.st, golden.num        -- tensors by name; a metadata number
--   local model = golden.model({precision = 'bf16'})
--   local opt = golden.optimizer(model)
--   local criterion = golden.criterion()
--   golden.fp32_tests(T, {x = images, y = labels, tol = golden.FP32_TOL, ...})   -- the fp32 comparisons
local nn = require('lunar.nn')
local optim = require('lunar.optim')

local golden = {PATH = 'tests/golden/vit_tiny.safetensors'}

--- The fp32 tolerance of every golden tensor (logits, gradients, weights after
-- a step), per element as torch.testing.assert_close: |lunar - torch| <=
-- atol + rtol * |torch|. rtol 1e-4 allows another summation order than
-- PyTorch's over the sums of up to 768 terms (f32 rounding 6e-8 each);
-- atol 1e-5 is torch.testing's f32 default, for elements that cancel to near
-- zero. Measured on the CPU (2026-12-06): every element is within rtol 1e-4
-- with atol 1.5e-8 (rtol 1e-6 with atol 8e-8). The losses: rtol 1e-4.
golden.FP32_TOL = {rtol = 1e-4, atol = 1e-5}

--- The bf16 tolerances (precision = 'bf16' against PyTorch's f32), per
-- element as FP32_TOL. Every GEMM operand is rounded to bf16 (2^-9 relative),
-- so an output of K products carries an absolute error of about
-- 2^-9 * sqrt(K) * its typical term: logits rtol 2e-2, atol 1e-2 (the logits
-- are up to 1.6); gradients, three GEMMs deep per layer, rtol 5e-2, atol
-- 2e-3 (gradients up to 0.26). Measured on the CPU with avx512_bf16
-- (2026-12-06): every element within those rtols with atol 2.8e-3 (logits)
-- and 6.7e-4 (gradients). The loss: rtol 5e-3; the losses of ten steps: 2e-2.
-- One AdamW step moves each weight by about lr * sign(g), so the weights after
-- it differ where bf16 flips the sign of a tiny gradient: step1 atol 2 lr
-- (rtol 0).
golden.BF16_TOL = {logits = {rtol = 2e-2, atol = 1e-2}, grad = {rtol = 5e-2, atol = 2e-3}, loss = 5e-3,
  losses = 2e-2, step1_lr = 2}

local st, meta = lunar.io.load_safetensors(golden.PATH)
if meta.format_version ~= '1' then
  error('golden file ' .. golden.PATH .. ' has format_version ' .. tostring(meta.format_version) ..
    ', expected 1. HINT: regenerate it with /usr/bin/python3 tests/golden/gen_golden.py', 0)
end
golden.st, golden.meta = st, meta

--- The metadata value `k` as a number.
function golden.num(k) return tonumber(meta[k]) end
local num = golden.num

--- Lunar's ViT of the golden shape with PyTorch's initial weights, on the
-- default device. opts.precision: as nn.materialize ('bf16': the working
-- copies are refreshed from the copied masters).
function golden.model(opts)
  local model = nn.ViT{img_size = num('img_size'), patch_size = num('patch_size'), in_chans = num('in_chans'),
    embed_dim = num('dim'), depth = num('depth'), num_heads = num('heads'), mlp_ratio = num('mlp_ratio'),
    num_classes = num('num_classes'), eps = num('ln_eps')}
  nn.materialize(model, 0, {precision = opts and opts.precision})
  for _, p in ipairs(model:parameters()) do
    local g = st['param.' .. p.name]
    assert(g, 'golden file has no parameter ' .. p.name)
    p.param:copy_(g:view(p.shape))
  end
  model:sync_working_weights()   -- precision = 'bf16': the masters were written directly
  return model
end

--- AdamW with the golden file's hyperparameters.
function golden.optimizer(model)
  return optim.AdamW(model:parameters(), {lr = num('lr'), betas = {num('beta1'), num('beta2')}, eps = num('eps'),
    weight_decay = num('weight_decay')})
end

--- The loss of the golden run (cross-entropy with its label smoothing).
function golden.criterion() return nn.CrossEntropy{label_smoothing = num('label_smoothing')} end

--- Defines (T.test) the fp32 comparisons with PyTorch, the same on every
-- device: logits and loss; every parameter gradient by name; the weights after
-- one AdamW step; the losses of ten steps. Each element within opts.tol
-- ({rtol, atol}: |lunar - torch| <= atol + rtol * |torch|, T.check_close; NaN
-- or infinity fails); the losses within opts.tol.rtol. opts: x, y (the golden
-- input and target, on the device the model is built on), tol, where (a
-- suffix for messages, e.g. ' on cuda'), before (called first in each test,
-- e.g. to skip without a device).
function golden.fp32_tests(T, opts)
  local x, y, tol = opts.x, opts.y, opts.tol
  local rtol = tol.rtol
  local before = opts.before or function() end
  local function check_close(name, a, b) return T.check_close(name, a, b, tol, opts.where) end
  local function build_and_backward()
    local model, criterion = golden.model(), golden.criterion()
    model:zero_grad()
    local logits, ctx = model:forward(x)
    local _, cctx = criterion:forward(logits, y)
    model:backward(ctx, criterion:backward(cctx, 1), false)
    return model
  end

  T.test('forward: logits and loss match PyTorch', function()
    before()
    local model = golden.model()
    local logits = model:forward(x)
    T.eq(logits:device(), x:device())
    check_close('logits', logits, st.logits)
    T.near(golden.criterion():forward(logits, y), st.loss:item(), rtol, 0, 'loss')
  end)

  T.test('backward: every parameter gradient matches by name', function()
    before()
    local model = build_and_backward()
    local n = 0
    for _, p in ipairs(model:parameters()) do
      check_close('grad.' .. p.name, p.grad, st['grad.' .. p.name]:view(p.shape))
      n = n + 1
    end
    T.eq(n, 32, 'number of gradients compared')
  end)

  T.test('one AdamW step: the weights match by name', function()
    before()
    local model = build_and_backward()
    golden.optimizer(model):step()
    local dim, lr = num('dim'), num('lr')
    for _, p in ipairs(model:parameters()) do
      local ref, got = st['step1.' .. p.name]:view(p.shape), p.param:cpu()
      if p.name:match('attn%.qkv%.bias$') then
        -- The key bias has a gradient of exactly zero in theory (softmax ignores
        -- it); AdamW turns fp32 rounding noise there into an update of up to lr.
        -- The query and value parts compare as usual, the key part within lr
        -- per element (atol lr * 1.01: lr plus the f32 rounding of the weight).
        check_close('step1.' .. p.name .. '[q]', got:narrow(1, 1, dim), ref:narrow(1, 1, dim))
        check_close('step1.' .. p.name .. '[v]', got:narrow(1, 2 * dim + 1, dim), ref:narrow(1, 2 * dim + 1, dim))
        T.check_close('step1.' .. p.name .. '[k]', got:narrow(1, dim + 1, dim), ref:narrow(1, dim + 1, dim),
          {rtol = 0, atol = lr * 1.01}, opts.where)
      else
        check_close('step1.' .. p.name, got, ref)
      end
    end
  end)

  T.test('ten AdamW steps: the losses match PyTorch', function()
    before()
    local model, criterion = golden.model(), golden.criterion()
    local opt = golden.optimizer(model)
    for i = 1, 10 do
      model:zero_grad()
      local logits, ctx = model:forward(x)
      local loss, cctx = criterion:forward(logits, y)
      T.near(loss, st.losses10[i], rtol, 0, 'loss of step ' .. (i - 1))
      model:backward(ctx, criterion:backward(cctx, 1), false)
      opt:step()
    end
  end)
end

return golden
