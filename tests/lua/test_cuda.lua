-- tests/lua/test_cuda.lua: CUDA devices from Lua (bindings/lcuda.c).
-- Everywhere: lunar.cuda answers whether a device is available and why not,
-- device arguments are checked, and CPU tensors behave as before. Without a
-- device: asking for one raises "no CUDA device available (<reason>)" and the
-- tests that need a GPU are skipped (counted as skipped, never as passed).
-- With one: tensors move to and from the device, the ops run there and agree
-- with the CPU, and the device's memory counters move.
--   build/lunar tests/lua/test_cuda.lua
local T = require('harness')
local ops = lunar.ops

local available, reason = lunar.cuda.is_available()

local function need_gpu()
  if not available then T.skip('no CUDA device (' .. reason .. ')') end
end

local rel_err = T.rel_err

local function rand(shape, seed, lo, hi)
  return lunar.empty(shape, 'f32', 'cpu'):uniform_(seed or 1, 'test_cuda', lo or -1, hi or 1)
end

T.test('lunar.cuda.is_available answers with a reason', function()
  T.eq(type(available), 'boolean')
  T.eq(type(reason), 'string')
  if available then
    T.eq(reason, '')
    T.truthy(lunar.cuda.device_count() >= 1)
  else
    T.truthy(#reason > 0, 'a reason is given')
    T.eq(lunar.cuda.device_count(), 0)
  end
  T.eq(type(lunar.cuda.compiled()), 'boolean')
  T.eq(lunar.default_device(), 'cpu')
end)

T.test('without a device, asking for cuda raises a clear error', function()
  if available then T.skip('a CUDA device is present') end
  local msg = T.raises(function() return lunar.zeros({2}):to('cuda') end, 'no CUDA device available (', 'to(cuda)')
  T.truthy(msg:find(reason, 1, true), 'the message carries the reason: ' .. msg)
  T.raises(function() return lunar.zeros({2}):cuda() end, 'no CUDA device available (')
  T.raises(function() return lunar.empty({2, 3}, 'f32', 'cuda:1') end, 'cannot allocate 24 B on cuda:1')
  T.raises(function() return lunar.tensor({1, 2}, nil, 'f32', 'cuda') end, 'no CUDA device available (')
  T.raises(function() return lunar.cuda.memory() end, 'no CUDA device available (')
  T.raises(function() lunar.cuda.synchronize() end, 'no CUDA device available (')
  T.raises(function() lunar.set_default_device('cuda') end, 'no CUDA device available (')
  T.eq(lunar.default_device(), 'cpu', 'the default device is unchanged')
end)

T.test('device arguments are checked', function()
  T.raises(function() return lunar.zeros({2}):to('gpu') end, "unknown dtype or device 'gpu'")
  T.raises(function() return lunar.empty({2}, 'f32', 'tpu') end, "unknown device 'tpu'")
  T.raises(function() return lunar.empty({2}, 'f32', 'cuda:x') end, "unknown device 'cuda:x'")
  T.raises(function() return lunar.zeros({2}):to('f32', 'f64') end, 'two dtypes')
end)

T.test('CPU tensors: to(cpu), cpu(), is_cuda, to(dtype) as before', function()
  local t = lunar.tensor({1, 2, 3})
  T.eq(t:to('cpu'):totable(), {1, 2, 3})
  T.eq(t:cpu():device(), 'cpu')
  T.falsy(t:is_cuda())
  local d = t:to('f64')
  T.eq(d:dtype(), 'f64')
  T.eq(t:to('i32', 'cpu'):dtype(), 'i32')
  T.eq(t:to():dtype(), 'f32')
  local v = t:to('cpu')
  v[1] = 7
  T.eq(t[1], 7, 'to(the same device and dtype) is a view, as PyTorch')
  T.eq(lunar.zeros({2}, 'f32', 'cpu'):device(), 'cpu')
end)

-- ---------------------------------------------------------------------------
-- with a GPU

T.test('tensors move to the device and back', function()
  need_gpu()
  local t = rand({5, 7}, 3)
  local d = t:to('cuda')
  T.eq(d:device(), 'cuda:' .. lunar.cuda.device())
  T.truthy(d:is_cuda())
  T.truthy(tostring(d):find('cuda:', 1, true))
  T.eq(d:cpu():totable(), t:totable())
  T.eq(d:totable(), t:totable())
  T.eq(d:transpose(1, 2):contiguous():cpu():totable(), t:transpose(1, 2):contiguous():totable())
  T.near(d:sum(), t:sum(), 1e-12)
  T.near(d[2][3], t[2][3], 0)
  d[1] = 0
  T.eq(d:cpu()[1]:totable(), {0, 0, 0, 0, 0, 0, 0})
  local z = lunar.zeros({3, 4}, 'f32', 'cuda:0')
  T.eq(z:device(), 'cuda:0')
  T.eq(z:sum(), 0)
  local f = lunar.full({2}, 2.5, 'f32', 'cuda')
  T.eq(f:totable(), {2.5, 2.5})
  T.eq((f + f):device(), f:device(), 'arithmetic keeps the device')
  T.eq((f * 2):totable(), {5, 5})
  local bf = d:to('bf16')
  T.eq(bf:dtype(), 'bf16')
  T.eq(bf:device(), d:device())
  local n = lunar.cuda.device_count()
  T.raises(function() return t:to('cuda:' .. n) end, 'out of range')
end)

T.test('random fills on the device match the CPU', function()
  need_gpu()
  local c = lunar.empty({1000}, 'f32', 'cpu'):trunc_normal_(5, 'w', 0, 0.02, -0.04, 0.04)
  local g = lunar.empty({1000}, 'f32', 'cuda'):trunc_normal_(5, 'w', 0, 0.02, -0.04, 0.04)
  T.eq(g:cpu():totable(), c:totable())
end)

T.test('ops on CUDA tensors agree with the CPU', function()
  need_gpu()
  local x, w, b = rand({6, 50, 48}, 1), rand({40, 48}, 2, -0.2, 0.2), rand({40}, 3)
  local X, W, Bb = x:cuda(), w:cuda(), b:cuda()
  local y, Y = ops.linear(x, w, b), ops.linear(X, W, Bb)
  T.eq(Y:device(), X:device())
  T.truthy(rel_err(Y, y) < 1e-5, 'linear')
  local lw, lb = rand({48}, 4, 0.5, 1.5), rand({48}, 5)
  local h = ops.layernorm(x, lw, lb, 1e-6)
  local H = ops.layernorm(X, lw:cuda(), lb:cuda(), 1e-6)
  T.truthy(rel_err(H, h) < 1e-5, 'layernorm')
  local qkv = rand({2, 50, 3 * 48}, 6)
  local o = ops.attention(qkv, 3)
  local O = ops.attention(qkv:cuda(), 3)
  T.truthy(rel_err(O, o) < 1e-4, 'attention')
  local g, G = ops.gelu(x), ops.gelu(X)
  T.truthy(rel_err(G, g) < 1e-5, 'gelu')
  local dr, DR = ops.dropout(x, 0.3, 7, 'drop', 11), ops.dropout(X, 0.3, 7, 'drop', 11)
  T.eq(DR:cpu():totable(), dr:totable(), 'dropout masks are bitwise the CPU ones')
  -- the rows form (a block of a larger tensor: rows of 48 elements 96 apart), forward and backward
  local drr, DRR = ops.dropout(x, 0.3, 7, 'drop', 11, 48, 96), ops.dropout(X, 0.3, 7, 'drop', 11, 48, 96)
  T.eq(DRR:cpu():totable(), drr:totable(), 'dropout rows form: the CPU bits')
  T.eq(ops.dropout_backward(X, 0.3, 7, 'drop', 11, 48, 96):cpu():totable(), drr:totable(), 'its backward')
  local logits, tg = rand({8, 10}, 8, -3, 3), lunar.tensor({1, 2, 3, 4, 5, 6, 7, 0}, nil, 'i32')
  T.near(ops.cross_entropy(logits:cuda(), tg:cuda(), 0.1), ops.cross_entropy(logits, tg, 0.1), 1e-5)
  T.eq(ops.accuracy_count(logits:cuda(), tg:cuda()), ops.accuracy_count(logits, tg))
  T.near(ops.sum_squares(X), ops.sum_squares(x), 1e-9)
end)

T.test('tensor arithmetic and reductions run on the device: the CPU bits, NaN propagates', function()
  need_gpu()
  -- core/ops/cuda/arith.cu and reduce.cu through lunar_op_arith / lunar_op_sum ...
  local x, y = rand({37, 129}, 11, -3, 3), rand({37, 129}, 12, -3, 3)   -- odd sizes
  local X, Y = x:cuda(), y:cuda()
  -- arithmetic is double arithmetic rounded once on both: the same bits
  local fs = {function(a, b) return a + b end, function(a, b) return a - b end, function(a, b) return a * b end,
    function(a, b) return a / b end, function(a) return -a end, function(a) return 0.1 * a end,
    function(a) return 1 / a end, function(a) return (a * a):rsqrt(1e-6) end}
  for i, f in ipairs(fs) do
    local got = f(X, Y)
    T.eq(got:device(), X:device(), 'arithmetic ' .. i .. ' stays on the device')
    T.eq(got:cpu():totable(), f(x, y):totable(), 'arithmetic ' .. i)
  end
  local hx, hy = x:to('bf16'), y:to('bf16')   -- bf16 and strided operands
  T.eq((hx:cuda() * hy:cuda()):cpu():totable(), (hx * hy):totable(), 'bf16 operands')
  T.eq((X:transpose(1, 2) - 1):cpu():totable(), (x:transpose(1, 2) - 1):totable(), 'a strided operand')
  -- reductions: min and max exact; sum, mean and norm within 1e-12 of the CPU's (both in double, another order)
  for _, c in ipairs({{x, X, 'f32'}, {hx, hx:cuda(), 'bf16'}, {x:transpose(1, 2), X:transpose(1, 2), 'strided'}}) do
    local h, d, what = c[1], c[2], c[3]
    T.eq(d:min(), h:min(), what .. ' min'); T.eq(d:max(), h:max(), what .. ' max')
    T.near(d:sum(), h:sum(), 0, 1e-12 * 37 * 129 * 3, what .. ' sum')
    T.near(d:mean(), h:mean(), 0, 1e-12 * 3, what .. ' mean')
    T.near(d:norm(), h:norm(), 1e-12, 0, what .. ' norm')
  end
  -- a NaN anywhere gives NaN for every reduction (the last element of a grid-stride loop)
  local big = lunar.zeros({300, 1001})
  big[300][1001] = 0 / 0
  local B = big:cuda()
  for _, r in ipairs({'sum', 'mean', 'min', 'max', 'norm'}) do
    local v = B[r](B)
    T.truthy(v ~= v, r .. ' of a device tensor with a NaN is NaN, got ' .. tostring(v))
  end
  local inf = lunar.tensor({1 / 0, -1 / 0, 0}):cuda()
  T.truthy(inf:sum() ~= inf:sum(), 'inf + -inf is NaN'); T.eq(inf:min(), -1 / 0); T.eq(inf:max(), 1 / 0)
  collectgarbage()   -- the device tensors made here, not freed while a later test counts bytes
end)

T.test('a ViT on the device trains while the default device is the CPU (buffers follow the activations)', function()
  need_gpu()
  local nn = require('lunar.nn')
  local function build()
    local m = nn.ViT{img_size = 8, patch_size = 4, in_chans = 2, embed_dim = 16, depth = 2, num_heads = 2,
      mlp_ratio = 2, num_classes = 5}
    return nn.materialize(m, 3)
  end
  local x, y = rand({3, 2, 8, 8}, 9), lunar.tensor({0, 4, 2}, nil, 'i32')
  local crit = nn.CrossEntropy{}
  local cpu_model = build()
  local logits, ctx = cpu_model:forward(x)
  local loss, cc = crit:forward(logits, y)
  cpu_model:backward(ctx, crit:backward(cc), false)
  -- the model's tensors on the device; everything the backward allocates must follow them
  lunar.set_default_device('cuda')
  local ok, gpu_model = pcall(build)
  lunar.set_default_device('cpu')
  assert(ok, gpu_model)
  T.eq(lunar.default_device(), 'cpu')
  local X, Y = x:cuda(), y:cuda()
  local L, gctx = gpu_model:forward(X)
  local gl, gcc = crit:forward(L, Y)
  gpu_model:backward(gctx, crit:backward(gcc), false)   -- was: dh on the CPU, "... is on cpu"
  T.near(gl, loss, 1e-4)
  local cpu_p = {}
  for _, p in ipairs(cpu_model:parameters()) do cpu_p[p.name] = p end
  for _, p in ipairs(gpu_model:parameters()) do
    T.eq(p.grad:device(), X:device(), p.name)
    T.truthy(rel_err(p.grad, cpu_p[p.name].grad) < 1e-3, 'gradient of ' .. p.name)
  end
end)

T.test('an op with tensors on two devices names them', function()
  need_gpu()
  local x, w = rand({4, 8}, 1):cuda(), rand({3, 8}, 2)
  T.raises(function() return ops.linear(x, w) end, 'weight is on cpu')
end)

T.test('the device memory counters move', function()
  need_gpu()
  lunar.cuda.synchronize()
  local m0 = lunar.cuda.memory()
  local t = lunar.empty({1024, 1024}, 'f32', 'cuda')
  local m1 = lunar.cuda.memory()
  T.eq(m1.bytes_in_use - m0.bytes_in_use, 4 * 1024 * 1024)
  T.truthy(m1.peak_bytes >= m1.bytes_in_use)
  T.truthy(m1.total_bytes > 0)
  t:free()
  T.eq(lunar.cuda.memory().bytes_in_use, m0.bytes_in_use)
  lunar.cuda.empty_cache()
  local m2 = lunar.cuda.memory()
  T.eq(m2.bytes_reserved, m2.bytes_in_use)
  lunar.cuda.reset_peak_memory()
  T.eq(lunar.cuda.memory().peak_bytes, lunar.cuda.memory().bytes_in_use)
  T.raises(function() return lunar.empty({1 << 40}, 'f32', 'cuda') end, 'out of memory allocating')
end)

T.test('the default device', function()
  need_gpu()
  lunar.set_default_device('cuda')
  local ok, err = pcall(function()
    T.eq(lunar.zeros({2}):device(), 'cuda:' .. lunar.cuda.device())
    T.eq(lunar.tensor({1, 2}):device(), 'cuda:' .. lunar.cuda.device())
    T.eq(lunar.zeros({2}, 'f32', 'cpu'):device(), 'cpu')
  end)
  lunar.set_default_device('cpu')
  if not ok then error(err, 0) end
  T.eq(lunar.zeros({2}):device(), 'cpu')
end)

-- The attention path is told on stderr with LUNAR_ATTENTION_LOG=1 (core/cuda/attention.h),
-- once per (direction, path, reason): f32 tensors always take the own kernel, and say
-- why not cuDNN. Checked in a child lunar, whose stderr is read here.
T.test('the attention path is logged once, with the reason', function()
  need_gpu()
  local prog, lo = arg and arg[0], 0
  while arg and arg[lo - 1] do lo = lo - 1; prog = arg[lo] end   -- the host program: the lowest index
  T.truthy(prog, 'the lunar program is known')
  local script = os.tmpname()
  local f = assert(io.open(script, 'w'))
  f:write([[
local qkv = lunar.empty({2, 9, 3 * 32}, 'f32', 'cpu'):uniform_(1, 'log', -1, 1):cuda()
for _ = 1, 2 do
  local o, lse = lunar.ops.attention(qkv, 2)
  local dq = lunar.ops.attention_backward(o:clone(), qkv, o, lse, 2)
end
lunar.cuda.synchronize()
print('child done')
]])
  f:close()
  local function run(env)
    local p = assert(io.popen(env .. " '" .. prog .. "' '" .. script .. "' 2>&1"))
    local out = p:read('a')
    p:close()
    return out
  end
  local ok, err = pcall(function()
    local out = run('LUNAR_ATTENTION_LOG=1')
    T.truthy(out:find('child done', 1, true), 'the child ran: ' .. out)
    local _, nf = out:gsub('attention forward %(f32, B=2 N=9 H=2 D=16%): own kernel %(f32 inputs', '')
    local _, nb = out:gsub('attention backward %(f32, B=2 N=9 H=2 D=16%): own kernel %(f32 inputs', '')
    T.eq(nf, 1, 'one forward line: ' .. out)
    T.eq(nb, 1, 'one backward line: ' .. out)
    out = run('LUNAR_ATTENTION_LOG=1 LUNAR_CUDNN_ATTENTION=0')
    T.truthy(out:find('own kernel (cuDNN attention disabled (LUNAR_CUDNN_ATTENTION=0))', 1, true), out)
    out = run('LUNAR_ATTENTION_LOG=0')
    T.falsy(out:find('lunar: cuda:', 1, true), 'no line without LUNAR_ATTENTION_LOG: ' .. out)
  end)
  os.remove(script)
  if not ok then error(err, 0) end
end)

T.run()
