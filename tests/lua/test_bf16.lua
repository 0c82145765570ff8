-- tests/lua/test_bf16.lua: precision = 'bf16' (bf16 mixed precision: fp32
-- master weights, gradients and optimizer state; bf16 working weights, bf16
-- GEMMs with fp32 accumulation, bf16 LayerNorm and GELU outputs; fp32
-- statistics, softmax and loss; nn.materialize, lunar/ops.h):
--   - the ops: the bf16 linear, LayerNorm and GELU against their f32 forms at
--     a bf16 tolerance, the bf16 linear output and dout, GELU and attention on
--     bf16 operands against the f32 ops of the widened values, and the dtype
--     errors;
--   - materialize: master weights f32, working copies bf16 = the rounded
--     masters, after init, after optimizer steps (fused) and after
--     sync_working_weights; the activations the contexts keep are bf16 inside
--     the blocks, the residual stream and the statistics f32;
--   - the tiny ViT trained 10 steps in fp32 and in bf16 from the same seed:
--     the bf16 losses track the fp32 ones within 2e-2 relative;
--   - the golden file (tests/golden/vit_tiny.safetensors, PyTorch in f32):
--     logits, loss, every gradient, one AdamW step and ten losses within bf16
--     tolerances (test_golden.lua checks fp32 at 1e-4);
--   - the config: `precision` is validated, and on a CPU without avx512_bf16
--     (pretended with LUNAR_NO_CPU_BF16=1 in a child lunar) the training
--     script stops with an error naming the key and the CPU feature.
-- On a CPU without avx512_bf16 the tests that build a bf16 model are skipped
-- with the reason (the kernels' portable path is tested by the test_bf16_* sections of tests/c/test_<family>.c).
--   build/lunar tests/lua/test_bf16.lua
local T = require('harness')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local engine = require('lunar.engine')
local config = require('lunar.config')
local data = require('lunar.data')
local models = require('lunar.models')
local ops = lunar.ops

local NATIVE, WHY = ops.bf16_supported('cpu')
print(NATIVE and 'bf16 on this CPU: native (avx512_bf16)' or ('bf16 on this CPU: not supported: ' .. WHY))
local function need_bf16()
  if not NATIVE then T.skip(WHY) end
end

local rel_err = T.rel_err

-- per element |a - b| <= atol + rtol * |b| (NaN fails); tol = {rtol = , atol = }
local check_close = T.check_close
-- the ops below against f32 ops of the same (rounded) operands: only the
-- summation order differs, f32 rounding (6e-8) times up to 48 terms
local SAME_SUMS = {rtol = 1e-5, atol = 1e-6}

local function rand(shape, name, lo, hi) return lunar.empty(shape):uniform_(7, name, lo or -1, hi or 1) end

-- ---- ops --------------------------------------------------------------------------------

T.test('ops: the bf16 linear is the f32 linear of the rounded operands, within bf16 of the unrounded', function()
  local x, w, b = rand({5, 7, 48}, 'x'), rand({33, 48}, 'w', -0.3, 0.3), rand({33}, 'b')
  local w16 = ops.cast_bf16(w)
  T.eq(w16:dtype(), 'bf16')
  local y = ops.linear(x, w16, b)
  T.eq(y:dtype(), 'f32'); T.eq(y:shape(), {5, 7, 33})
  -- the same sums from rounded f32 copies: only the summation order differs
  local xr, wr = ops.cast_bf16(x):to('f32'), w16:to('f32')
  check_close('bf16 linear vs f32 linear of the rounded operands', y, ops.linear(xr, wr, b), SAME_SUMS)
  -- 48 products of operands rounded to bf16 (2^-9 relative each), |x| < 1,
  -- |w| < 0.3: within 48 * 0.3 * 2 * 2^-9 = 0.06 at worst, 1e-2 in practice
  check_close('bf16 linear vs f32 linear', y, ops.linear(x, w, b), {rtol = 1e-2, atol = 1e-2})
  -- a bf16 activation gives the same result as its f32 value rounded on load
  check_close('bf16 input', ops.linear(ops.cast_bf16(x), w16, b), y, {rtol = 1e-6, atol = 1e-7})
  -- backward: dx, dw, db f32; dw accumulates into the fp32 gradient
  local dy = rand({5, 7, 33}, 'dy')
  local dw, db = lunar.zeros({33, 48}), lunar.zeros({33})
  local dx = ops.linear_backward(dy, x, w16, dw, db)
  T.eq(dx:dtype(), 'f32'); T.eq(dx:shape(), {5, 7, 48})
  local dw32, db32 = lunar.zeros({33, 48}), lunar.zeros({33})
  local dx32 = ops.linear_backward(ops.cast_bf16(dy):to('f32'), xr, wr, dw32, db32)
  check_close('dinp', dx, dx32, SAME_SUMS)
  check_close('dweight', dw, dw32, SAME_SUMS)
  ops.linear_backward(dy, x, w16, dw, nil, false)   -- accumulates
  check_close('dweight accumulated twice', dw, dw32 * 2, SAME_SUMS)
  local db_ref = lunar.zeros({33})   -- dbias sums dout as it is, not rounded
  ops.linear_backward(dy, xr, wr, lunar.zeros({33, 48}), db_ref)
  check_close('dbias', db, db_ref, {rtol = 1e-6, atol = 1e-7})
end)

T.test('ops: LayerNorm and GELU with bf16 outputs; dtype errors name the op', function()
  local x, w, b = rand({6, 40}, 'ln.x', -2, 3), rand({40}, 'ln.w', 0.5, 1.5), rand({40}, 'ln.b')
  local y, mean, rstd = ops.layernorm(x, w, b, 1e-6)
  local y16, mean16, rstd16 = ops.layernorm(x, w, b, 1e-6, 'bf16')
  T.eq(y16:dtype(), 'bf16'); T.eq(mean16:dtype(), 'f32'); T.eq(rstd16:dtype(), 'f32')
  T.eq(y16:to('f32'):totable(), ops.cast_bf16(y):to('f32'):totable(), 'the f32 output, rounded')
  T.eq(mean16:totable(), mean:totable()); T.eq(rstd16:totable(), rstd:totable())
  local g16 = ops.gelu(x, 'bf16')
  T.eq(g16:dtype(), 'bf16')
  T.eq(g16:to('f32'):totable(), ops.cast_bf16(ops.gelu(x)):to('f32'):totable())
  T.raises(function() ops.gelu(x, 'f16') end, "'f32' or 'bf16'")
  -- bf16 where f32 is expected: the op and the argument are named
  T.raises(function() ops.gelu(g16) end, 'gelu: inp has dtype bf16, so out must be bf16')
  T.raises(function() ops.linear(g16:view(6, 40), w:view(1, 40)) end, 'linear: inp has dtype bf16, expected f32')
  T.raises(function() ops.cast_bf16_(x, x) end, 'cast_bf16: out has dtype f32, expected bf16')
end)

T.test('ops: bf16 linear output, bf16 dout, GELU from bf16, attention on bf16', function()
  local x, w, b = rand({3, 5, 40}, 'x2'), rand({24, 40}, 'w2', -0.3, 0.3), rand({24}, 'b2')
  local w16 = ops.cast_bf16(w)
  -- a bf16 output is the f32 output rounded once
  local y = ops.linear(x, w16, b)
  local y16 = ops.linear(x, w16, b, 'bf16')
  T.eq(y16:dtype(), 'bf16'); T.eq(y16:shape(), {3, 5, 24})
  T.eq(y16:to('f32'):totable(), ops.cast_bf16(y):to('f32'):totable(), 'out bf16 = bf16(out f32)')
  T.raises(function() ops.linear(x, w, b, 'bf16') end, 'linear: out has dtype bf16, expected f32')
  -- a bf16 dout: the same dinp and dweight as its f32 value (the GEMMs round it anyway), dbias of the bf16 values
  local dy16 = ops.cast_bf16(rand({3, 5, 24}, 'dy2'))
  local dw1, db1, dw2, db2 = lunar.zeros({24, 40}), lunar.zeros({24}), lunar.zeros({24, 40}), lunar.zeros({24})
  local dx1 = ops.linear_backward(dy16, x, w16, dw1, db1)
  local dx2 = ops.linear_backward(dy16:to('f32'), x, w16, dw2, db2)
  T.eq(dx1:dtype(), 'f32')
  T.eq(dx1:totable(), dx2:totable(), 'dinp'); T.eq(dw1:totable(), dw2:totable(), 'dweight')
  check_close('dbias', db1, db2, {rtol = 1e-6, atol = 1e-7})
  -- GELU of a bf16 input, and its backward: the f32 kernels on the widened values
  local h16 = ops.cast_bf16(rand({4, 33}, 'h', -3, 3))
  T.eq(ops.gelu(h16, 'bf16'):to('f32'):totable(), ops.cast_bf16(ops.gelu(h16:to('f32'))):to('f32'):totable())
  local da = rand({4, 33}, 'da')
  local dh = ops.gelu_backward(da, h16)
  T.eq(dh:dtype(), 'f32')
  T.eq(dh:totable(), ops.gelu_backward(da, h16:to('f32')):totable())
  -- attention on bf16 operands: out bf16 = the f32 attention of the widened qkv, rounded; lse f32
  local qkv16 = ops.cast_bf16(rand({2, 9, 3 * 32}, 'qkv', -2, 2))
  local o16, lse16 = ops.attention(qkv16, 2)
  T.eq(o16:dtype(), 'bf16'); T.eq(lse16:dtype(), 'f32'); T.eq(o16:shape(), {2, 9, 32})
  local o, lse = ops.attention(qkv16:to('f32'), 2)
  T.eq(o16:to('f32'):totable(), ops.cast_bf16(o):to('f32'):totable())
  T.eq(lse16:totable(), lse:totable())
  local do16 = ops.cast_bf16(rand({2, 9, 32}, 'do'))
  local dqkv16 = ops.attention_backward(do16, qkv16, o16, lse16, 2)
  T.eq(dqkv16:dtype(), 'bf16'); T.eq(dqkv16:shape(), {2, 9, 96})
  local dqkv = ops.attention_backward(do16:to('f32'), qkv16:to('f32'), o16:to('f32'), lse16, 2)
  T.eq(dqkv16:to('f32'):totable(), ops.cast_bf16(dqkv):to('f32'):totable())
  -- mixed dtypes name the argument
  T.raises(function() ops.attention_backward(do16:to('f32'), qkv16, o16, lse16, 2) end,
    'attention_backward: dout has dtype f32, expected bf16')
  T.raises(function() ops.attention_backward(do16, qkv16, o16:to('f32'), lse16, 2) end,
    'attention_backward: out has dtype f32, expected bf16')
end)

-- ---- the model ----------------------------------------------------------------------------

local CFG = config.from_table({DATASET = 'synthetic', NUM_SAMPLES = 256, IMG_SIZE = 8, PATCH_SIZE = 4,
  IN_CHANS = 2, NUM_CLASSES = 4, BATCH_SIZE = 32, SEED = 1, HIDDEN_SIZE = 32, NUM_HEADS = 2, DEPTH = 2,
  LABEL_SMOOTHING = 0.1}, 'test_bf16')
local TRAIN = data.datasets(CFG)

local function working_copies_are_rounded_masters(model, what)
  for _, p in ipairs(model:parameters()) do
    T.eq(p.param:dtype(), 'f32', what .. ': master ' .. p.name)
    T.eq(p.grad:dtype(), 'f32', what .. ': gradient ' .. p.name)
    T.truthy(p.param_bf16, what .. ': ' .. p.name .. ' has a working copy')
    T.eq(p.param_bf16:dtype(), 'bf16', what .. ': working copy ' .. p.name)
    T.eq(p.param_bf16:to('f32'):totable(), ops.cast_bf16(p.param):to('f32'):totable(),
      what .. ': working copy of ' .. p.name .. ' = the rounded master')
  end
end

T.test('materialize: fp32 master weights, bf16 working copies, bf16 activations inside the blocks', function()
  need_bf16()
  local m32 = nn.materialize(models.vit(CFG), 3)
  local m16 = nn.materialize(models.vit(CFG), 3, {precision = 'bf16'})
  T.eq(m16._flat:totable(), m32._flat:totable(), 'the same fp32 init')
  T.eq(m16._flat_bf16:numel(), m16._flat:numel())
  T.eq(m32._flat_bf16, nil); T.eq(m32:parameters()[1].param_bf16, nil)
  working_copies_are_rounded_masters(m16, 'after init')
  T.eq(m16.blocks['0'].mlp.fc1.precision, 'bf16')
  T.truthy(m16.blocks['0'].attn.qkv:gemm_weight('weight') == m16.blocks['0'].attn.qkv.weight_bf16)
  T.truthy(m32.blocks['0'].attn.qkv:gemm_weight('weight') == m32.blocks['0'].attn.qkv.weight)
  -- what the contexts keep
  local x = lunar.empty({4, 2, 8, 8}):normal_(1, 'img', 0, 1)
  local logits, ctx = m16:forward(x)
  T.eq(logits:dtype(), 'f32', 'logits')
  local b0 = ctx.block0
  T.eq(b0.h1:dtype(), 'bf16', 'norm1 output (qkv input)')
  T.eq(b0.h2:dtype(), 'bf16', 'norm2 output (fc1 input)')
  T.eq(b0.cm.c2.x:dtype(), 'bf16', 'GELU output (fc2 input)')
  T.eq(b0.cm.h:dtype(), 'bf16', 'fc1 output (GELU backward input)')
  T.eq(b0.ca.qkv:dtype(), 'bf16', 'qkv (attention input)')
  T.eq(b0.ca.o:dtype(), 'bf16', 'attention output (proj input)')
  T.eq(b0.ca.lse:dtype(), 'f32', 'softmax statistics (lse)')
  T.eq(b0.x1:dtype(), 'f32', 'residual stream')
  T.eq(ctx.h:dtype(), 'bf16', 'final norm output (head input)')
  m16:backward(ctx, lunar.ones({4, 4}), false)
  for _, p in ipairs(m16:parameters()) do T.eq(p.grad:dtype(), 'f32', p.name) end
  -- a master weight written directly: the working copy follows after sync_working_weights
  local w = m16.head.weight
  w:fill_(0.3)
  T.truthy(rel_err(m16.head.weight_bf16, ops.cast_bf16(w)) > 0.1, 'stale before the sync')
  m16:sync_working_weights()
  T.eq(m16.head.weight_bf16:to('f32'):totable(), ops.cast_bf16(w):to('f32'):totable())
  T.raises(function() nn.materialize(models.vit(CFG), 3, {precision = 'fp16'}) end, "precision must be 'fp32' or 'bf16'")
end)

local function new_engine(precision, opt_kind)
  local model = nn.materialize(models.vit(CFG), CFG.SEED, {precision = precision})
  local opt = opt_kind == 'sgd' and optim.SGD(model:parameters(), {lr = 0.05, momentum = 0.9, weight_decay = 1e-4})
    or optim.AdamW(model:parameters(), {lr = 3e-3, weight_decay = 0.05})
  local eng = engine.initialize{model = model, optimizer = opt, clip_grad_norm = 1.0,
    criterion = nn.CrossEntropy{label_smoothing = CFG.LABEL_SMOOTHING}}
  eng:train()
  return eng, model
end

local function train(eng, steps) return T.train_steps(eng, data.loader(TRAIN, CFG, {train = true}), steps) end

for _, kind in ipairs({'adamw', 'sgd'}) do
  T.test('10 steps (' .. kind .. ', clip_grad_norm): the bf16 losses track fp32 within 2e-2', function()
    need_bf16()
    local e32 = new_engine('fp32', kind)
    local e16, m16 = new_engine('bf16', kind)
    local l32, l16 = train(e32, 10), train(e16, 10)
    local worst = 0
    for i = 1, 10 do
      local r = math.abs(l16[i] - l32[i]) / math.abs(l32[i])
      worst = math.max(worst, r)
      T.truthy(r <= 2e-2, string.format('step %d: bf16 loss %.5f, fp32 %.5f (relative %.2g)', i, l16[i], l32[i], r))
    end
    print(string.format('    %s: largest relative loss difference over 10 steps %.2g; losses %.4f -> %.4f (fp32 %.4f -> %.4f)',
      kind, worst, l16[1], l16[10], l32[1], l32[10]))
    T.truthy(l16[10] < l16[1], 'bf16 learns')
    T.truthy(e16.last_grad_norm and e16.last_grad_norm > 0, 'clipping saw the fp32 gradient norm')
    working_copies_are_rounded_masters(m16, 'after 10 ' .. kind .. ' steps')
    -- the fused step writes the working copy: nothing stale
    T.truthy(rel_err(m16._flat_bf16, m16._flat) < 2 ^ -8, 'working copy within bf16 rounding of the master')
  end)
end

-- ---- golden ---------------------------------------------------------------------------------

local golden = require('golden')
local st, num = golden.st, golden.num
local function golden_model() return golden.model({precision = 'bf16'}) end
local golden_optimizer = golden.optimizer
local criterion = golden.criterion()

-- bf16 tolerances, per element (golden.lua says why): logits and loss carry
-- the rounding of every GEMM operand (2^-9 relative each); gradients more
-- (three GEMMs deep per layer); one AdamW step moves each weight by about
-- lr * sign(g), so the weights after it differ where bf16 flips the sign of a
-- tiny gradient: by up to 2 lr per element, checked absolutely.
local TOL = golden.BF16_TOL

T.test('golden (bf16): logits and loss within bf16 tolerance of PyTorch f32', function()
  need_bf16()
  local model = golden_model()
  local logits = model:forward(st.input)
  local w = check_close('logits', logits, st.logits, TOL.logits)
  local loss = criterion:forward(logits, st.target)
  T.near(loss, st.loss:item(), TOL.loss, 0, 'loss')
  print(string.format('    logits: worst element at %.2g of its tolerance; loss %.6f vs %.6f', w.ratio, loss,
    st.loss:item()))
end)

T.test('golden (bf16): every gradient within bf16 tolerance, by name', function()
  need_bf16()
  local model = golden_model()
  model:zero_grad()
  local logits, ctx = model:forward(st.input)
  local _, cctx = criterion:forward(logits, st.target)
  model:backward(ctx, criterion:backward(cctx, 1), false)
  local n, worst, wname = 0, 0, ''
  for _, p in ipairs(model:parameters()) do
    local e = check_close('grad.' .. p.name, p.grad, st['grad.' .. p.name]:view(p.shape), TOL.grad).ratio
    if e > worst then worst, wname = e, p.name end
    n = n + 1
  end
  T.eq(n, 32, 'number of gradients compared')
  print(string.format('    gradients: worst element at %.2g of its tolerance (%s)', worst, wname))
end)

T.test('golden (bf16): one AdamW step moves every weight as PyTorch does, within 2 lr', function()
  need_bf16()
  local model = golden_model()
  local opt = golden_optimizer(model)
  model:zero_grad()
  local logits, ctx = model:forward(st.input)
  local _, cctx = criterion:forward(logits, st.target)
  model:backward(ctx, criterion:backward(cctx, 1), false)
  opt:step()
  local lr = num('lr')
  for _, p in ipairs(model:parameters()) do
    check_close('step1.' .. p.name, p.param, st['step1.' .. p.name]:view(p.shape),
      {rtol = 0, atol = TOL.step1_lr * lr * 1.01})
  end
  working_copies_are_rounded_masters(model, 'after the golden step')
end)

T.test('golden (bf16): the losses of ten AdamW steps within 2e-2 of PyTorch', function()
  need_bf16()
  local model = golden_model()
  local opt = golden_optimizer(model)
  local ref, worst = st.losses10, 0
  for i = 1, 10 do
    model:zero_grad()
    local logits, ctx = model:forward(st.input)
    local loss, cctx = criterion:forward(logits, st.target)
    local r = math.abs(loss - ref[i]) / math.abs(ref[i])
    worst = math.max(worst, r)
    T.truthy(r <= TOL.losses, string.format('loss of step %d: %.6f vs %.6f', i - 1, loss, ref[i]))
    model:backward(ctx, criterion:backward(cctx, 1), false)
    opt:step()
  end
  print(string.format('    largest relative loss difference %.2g', worst))
end)

-- ---- config ------------------------------------------------------------------------------

T.test("config: precision is 'fp32' or 'bf16'; check_machine passes where bf16 runs", function()
  T.eq(config.from_table({}, 't').precision, 'fp32')
  T.raises(function() config.from_table({precision = 'fp16'}, 't') end,
    "config key 'precision' must be one of 'fp32', 'bf16'")
  local c = config.from_table({precision = 'bf16'}, 't')
  if NATIVE then
    T.eq(config.check_machine(c), c)
  else
    T.raises(function() config.check_machine(c) end, "config key 'precision' is 'bf16', but")
  end
  T.eq(config.check_machine(config.from_table({}, 't')).precision, 'fp32')
end)

T.test("config: on a CPU without avx512_bf16 the training script names the key and the feature", function()
  local prog, lo = arg and arg[0], 0
  while arg and arg[lo - 1] do lo = lo - 1; prog = arg[lo] end   -- the host program: the lowest index
  T.truthy(prog, 'the lunar program is known')
  local p = assert(io.popen("LUNAR_NO_CPU_BF16=1 '" .. prog .. "' examples/train_with_engine.lua --config " ..
    "configs/vit_fmnist.lua precision=bf16 MAX_STEPS=1 METRICS_FILE= 2>&1; echo \"rc=$?\""))
  local out = p:read('a')
  p:close()
  T.truthy(out:find("config key 'precision' is 'bf16', but this CPU has no avx512_bf16", 1, true), out)
  T.truthy(out:find('use precision = \'fp32\' here', 1, true), out)
  T.falsy(out:find('rc=0', 1, true), 'exits non-zero: ' .. out)
end)

T.run()
