-- nn.gradcheck in float64 (lua/lunar/nn/gradcheck.lua): the module and its
-- input cast to f64, every op on the double reference kernels (core/ops/ref),
-- tolerances tight enough (eps 1e-6, rtol 1e-6, atol 1e-7) that a backward
-- wrong by 1e-4 relative fails, which the f32 check (rtol 1e-2) cannot see.
-- The expected gradients are central finite differences of the forward in
-- double (an independent source: the forward alone); the wrong backwards below
-- are the check's own test (a check that cannot fail is a defect).
--   build/lunar tests/lua/test_gradcheck_f64.lua
local T = require('harness')
local nn = require('lunar.nn')
local ops = lunar.ops

local function randn(shape, name, std)
  return lunar.empty(shape):normal_(11, name, 0, std or 1)
end

local function check(m, x, opts)
  local rep = nn.gradcheck(m, x, opts)
  T.truthy(rep.ok, rep.message)
  T.eq(rep.dtype, 'f64', 'checked in f64: ' .. rep.message)
  T.truthy(rep.checked > 0, 'elements checked: ' .. rep.message)
  return rep
end

T.test('f64 ops: the reference kernels in double, refused with the reason elsewhere', function()
  local x = lunar.tensor({{1, 2, 3}, {4, 5, 6}}, nil, 'f64')
  local w = lunar.tensor({{1, 0, -1}, {0.5, 0.25, 0.125}}, nil, 'f64')
  -- the fast CPU kernels take f32: an f64 operand names the op and the way to the reference kernels
  T.raises(function() ops.linear(x, w) end, 'linear: f64 operands run on the reference kernels on the CPU only')
  ops.use_reference_kernels(true)
  local ok, err = pcall(function()
    -- 1 - 3 = -2; 0.5 + 0.5 + 0.375 = 1.375; 4 - 6 = -2; 2 + 1.25 + 0.75 = 4
    local y = ops.linear(x, w)
    T.eq(y:dtype(), 'f64')
    T.eq(table.concat(y:view(-1):totable(), ','), '-2.0,1.375,-2.0,4.0')
    -- a value f32 cannot hold: 1 + 2^-40 survives an f64 GEMM (f32 would round it to 1)
    local one = lunar.tensor({{1 + 2 ^ -40}}, nil, 'f64')
    local y1 = ops.linear(one, lunar.tensor({{1}}, nil, 'f64'))
    T.eq(y1:totable()[1][1], 1 + 2 ^ -40)
    -- mixed dtypes are an error, not a silent cast
    T.raises(function() ops.linear(x, lunar.tensor({{1, 0, -1}})) end, 'linear: weight has dtype f32, expected f64')
    -- layernorm keeps its statistics in f64
    local ln, mean, rstd = ops.layernorm(x, lunar.ones({3}, 'f64'), lunar.zeros({3}, 'f64'), 0)
    T.eq(ln:dtype() .. mean:dtype() .. rstd:dtype(), 'f64f64f64')
    -- row (1, 2, 3): mean 2, var 2/3, (x - 2) * sqrt(3/2) = -1.224744871391589 (Python math)
    T.near(ln:totable()[1][1], -1.224744871391589, 1e-15, 0)
  end)
  ops.use_reference_kernels(false)
  if not ok then error(err, 0) end
  -- tensor arithmetic: an f64 operand gives an f64 result (in double, exact here)
  local s = x * (1 + 2 ^ -40)
  T.eq(s:dtype(), 'f64')
  T.eq(s:totable()[1][1], 1 + 2 ^ -40)
  T.eq((lunar.ones({2}) + 1):dtype(), 'f32', 'f32 stays f32')
end)

T.test('f64 gradcheck: every leaf (Linear, norms, activations, Dropout in training, attention, tokens, conv, pooling)', function()
  check(nn.Linear(4, 3), randn({2, 4}, 'lin.x'))
  check(nn.Linear(4, 3, {bias = false}), randn({2, 3, 4}, 'linnb.x'))
  check(nn.LayerNorm(4), randn({2, 3, 4}, 'ln.x'))
  local rms = nn.materialize(nn.RMSNorm(4), 1)
  rms.weight:copy_(lunar.tensor({0.5, 1.5, -1, 2}))
  check(rms, randn({2, 3, 4}, 'rms.x'))
  check(nn.GELU(), randn({2, 3, 4}, 'gelu.x'))
  check(nn.GELU{approximate = 'tanh'}, randn({2, 3, 4}, 'gelut.x'))
  check(nn.SiLU(), randn({2, 3, 4}, 'silu.x'))
  local xr = randn({2, 3, 4}, 'relu.x')
  local far = (xr * xr) + 0.1          -- |x| >= 0.1: no difference straddles the kink at 0
  check(nn.ReLU(), far * ((xr * 0) + lunar.tensor({1, -1, 1, -1, -1, 1, 1, -1, 1, 1, -1, -1,
    1, -1, 1, -1, -1, 1, 1, -1, 1, 1, -1, -1}):view(2, 3, 4)))
  -- Dropout in training mode with p > 0: gradcheck rewinds its call counter, so every forward
  -- draws the one mask the backward uses
  local d = nn.materialize(nn.Dropout(0.4, 5), 1)
  local rep = check(d, randn({4, 6}, 'drop.x'))
  T.eq(rep.checked, 24)
  check(nn.Attention(8, 2), randn({2, 5, 8}, 'attn.x'), {max_elements = 48})
  check(nn.MultiheadAttention(8, 2), randn({2, 4, 8}, 'mha.x'), {max_elements = 48})
  check(nn.ClassToken(3), randn({2, 4, 3}, 'ct.x'))
  check(nn.PositionEmbedding(4, 3), randn({2, 4, 3}, 'pe.x'))
  check(nn.SelectToken(2), randn({2, 4, 3}, 'sel.x'))
  check(nn.MeanPool(), randn({2, 5, 3}, 'mp.x'))
  check(nn.Reshape({-1}), randn({2, 3, 4}, 'rs.x'))
  check(nn.Transpose(2, 3), randn({2, 3, 4}, 'tr.x'))
  check(nn.Identity(), randn({2, 3}, 'id.x'))
  check(nn.Conv2d(2, 3, 2), randn({2, 2, 4, 6}, 'conv.x'))
  check(nn.Conv3d(2, 3, 2), randn({1, 2, 2, 4, 2}, 'conv3.x'), {max_elements = 32})
  check(nn.PatchEmbed{img_size = 4, patch_size = 2, in_chans = 2, embed_dim = 3}, randn({2, 2, 4, 4}, 'pe2.x'))
end)

T.test('f64 gradcheck: every container, and the fused Block with dropout', function()
  check(nn.Sequential{nn.Linear(3, 5), nn.GELU(), nn.Linear(5, 2)}, randn({2, 3}, 'seq.x'))
  check(nn.Residual{nn.LayerNorm(4), nn.Linear(4, 4)}, randn({2, 3, 4}, 'res.x'))
  check(nn.Concat(2, {nn.Linear(3, 2), nn.Identity(), nn.Sequential{nn.Linear(3, 4), nn.SiLU()}}), randn({2, 3}, 'cat.x'))
  check(nn.Parallel(2, 2, {nn.Linear(3, 2), nn.Identity()}), randn({2, 2, 3}, 'par.x'))
  check(nn.Block{dim = 8, num_heads = 2, mlp_ratio = 2, drop = 0.25, seed = 3}, randn({2, 3, 8}, 'blk.x'),
    {max_elements = 24})
end)

T.test('f64 gradcheck catches a backward wrong by 1e-4 that the f32 check passes, and names it', function()
  local Off = require('lunar.class')('SlightlyOffLinear', nn.Linear)
  function Off:backward(ctx, dy, need_dx)   -- dx scaled by 1 + 1e-4: a wrong constant in a formula
    return ops.scale_(nn.Linear.backward(self, ctx, dy, need_dx), 1 + 1e-4)
  end
  local x = randn({3, 4}, 'off.x')
  local loose = nn.gradcheck(Off(4, 3), x, {dtype = 'f32'})
  T.truthy(loose.ok, 'f32 (rtol 1e-2) cannot see it: ' .. loose.message)
  local rep = nn.gradcheck(Off(4, 3), x)
  T.falsy(rep.ok, 'f64 sees it')
  T.eq(rep.worst.tensor, 'input')
  T.truthy(rep.message:find('%(SlightlyOffLinear, f64%)') and rep.message:find('FAILED'), rep.message)
  T.truthy(rep.worst.ratio > 10, 'well beyond the tolerance: ' .. rep.message)
  -- a parameter gradient off the same way fails on that parameter, by name, inside a container
  local OffW = require('lunar.class')('OffWeight', nn.Linear)
  function OffW:backward(ctx, dy, need_dx)
    local dx = nn.Linear.backward(self, ctx, dy, need_dx)
    ops.scale_(self.grad_weight, 1 + 1e-4)
    return dx
  end
  local rep2 = nn.gradcheck(nn.Sequential{{'fc1', nn.Linear(4, 4)}, {'fc2', OffW(4, 3)}}, x)
  T.falsy(rep2.ok, rep2.message)
  T.eq(rep2.worst.tensor, 'fc2.weight')
end)

T.test('f64 gradcheck leaves the module as it was: f32 parameters, values and gradients unchanged', function()
  local m = nn.materialize(nn.Sequential{nn.Linear(4, 3), nn.GELU()}, 2)
  local w = m['0'].weight
  local before = w:clone()
  m['0'].grad_weight:fill_(0.5)
  check(m, randn({2, 4}, 'keep.x'))
  T.truthy(rawequal(m['0'].weight, w), 'the same parameter tensor is back')
  T.eq(m['0'].weight:dtype(), 'f32')
  T.eq((m['0'].weight - before):norm(), 0, 'weights unchanged')
  T.eq(m['0'].grad_weight:min(), 0.5, 'the f32 gradients untouched')
  T.eq(m['0'].grad_weight:max(), 0.5)
  -- the fast kernels are back on: f64 is refused again
  T.raises(function() ops.gelu(lunar.zeros({2}, 'f64')) end, 'gelu: f64 operands run on the reference kernels')
  -- bad options and modules say what is wrong
  T.raises(function() nn.gradcheck(nn.Linear(2, 2), randn({1, 2}, 'o.x'), {dtype = 'f16'}) end,
    "opts.dtype must be 'f64' or 'f32', got f16")
end)

T.run()
