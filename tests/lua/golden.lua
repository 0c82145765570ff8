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
--   golden.fp32_tests(T, {x = images, y = labels, rtol = 1e-4, ...})   -- the fp32 comparisons
local nn = require('lunar.nn')
local optim = require('lunar.optim')

local golden = {PATH = 'tests/golden/vit_tiny.safetensors'}

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
-- one AdamW step; the losses of ten steps. Each within opts.rtol as max |lunar
-- - torch| / max |torch| per tensor (T.check_close). opts: x, y (the golden
-- input and target, on the device the model is built on), rtol, where (a
-- suffix for messages, e.g. ' on cuda'), before (called first in each test,
-- e.g. to skip without a device).
function golden.fp32_tests(T, opts)
  local x, y, rtol = opts.x, opts.y, opts.rtol
  local before = opts.before or function() end
  local function check_close(name, a, b) return T.check_close(name, a, b, rtol, opts.where) end
  local function build_and_backward()
    local model, criterion = golden.model(), golden.criterion()
    model:zero_grad()
    local logits, ctx = model:forward(x)
    local _, cctx = criterion:forward(logits, y)
    model:backward(ctx, criterion:backward(cctx, 1))
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
        -- The query and value parts compare as usual, the key part within lr.
        check_close('step1.' .. p.name .. '[q]', got:narrow(1, 1, dim), ref:narrow(1, 1, dim))
        check_close('step1.' .. p.name .. '[v]', got:narrow(1, 2 * dim + 1, dim), ref:narrow(1, 2 * dim + 1, dim))
        local d = got:narrow(1, dim + 1, dim) - ref:narrow(1, dim + 1, dim)
        T.truthy(math.max(d:max(), -d:min()) <= lr * 1.01, 'step1.' .. p.name .. '[k] within lr')
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
      model:backward(ctx, criterion:backward(cctx, 1))
      opt:step()
    end
  end)
end

return golden
