-- nn.MultiheadAttention's masks and cross-attention (lua/lunar/nn/MultiheadAttention.lua
-- forward_general, lunar.ops.sdpa / sdpa_mask, core/ops/ref/sdpa.c). Expected values:
-- central finite differences in float64 (nn.gradcheck), the fused self-attention
-- path (an independent kernel) where no mask is given, and PyTorch itself in
-- test_models_as_code.lua's golden test (gen_leaves.py's mha cases).
--   build/lunar tests/lua/test_mha_masks.lua
local T = require('harness')
local nn = require('lunar.nn')
local class = require('lunar.class')
local ops = lunar.ops

local function randn(shape, name) return lunar.empty(shape):normal_(21, name, 0, 1) end

-- checks one role (query, key or value) of an attention call through nn.gradcheck: the role's
-- tensor is gradcheck's input, the others fixed (cast to the input's dtype, f64 in the check)
local Probe = class('MHAProbe', nn.Module)
function Probe:__init(mha, role, others)
  nn.Module.__init(self)
  self:add('mha', mha)
  self.role, self.others = role, others
end
function Probe:forward(x)
  local input = {}
  for k, v in pairs(self.others) do input[k] = lunar.is_tensor(v) and v:dtype() ~= 'u8' and v:to(x:dtype()) or v end
  input[self.role] = x
  return self.mha:forward(input)
end
function Probe:backward(ctx, dy, need_dx)
  local g = self.mha:backward(ctx, dy, need_dx)
  local mine = g[self.role]
  for k, v in pairs(g) do if k ~= self.role then v:free() end end
  return mine
end

local function check(m, x)
  local rep = nn.gradcheck(m, x, {max_elements = 64})
  T.truthy(rep.ok, rep.message)
  T.eq(rep.dtype, 'f64')
  return rep
end

T.test('no mask: the general path equals the fused self-attention kernel', function()
  local m = nn.materialize(nn.MultiheadAttention(8, 2), 3)
  local x = randn({2, 5, 8}, 'x')
  local y1, c1 = m:forward(x)
  local y2, c2 = m:forward{x}                 -- a table: the general kernel (lunar.ops.sdpa)
  T.check_close('output', y2, y1, {rtol = 1e-5, atol = 1e-6})
  local dy = randn({2, 5, 8}, 'dy')
  m:zero_grad()
  local dx1 = m:backward(c1, dy)
  local g1 = m._flat_grad:clone()
  m:zero_grad()
  local g = m:backward(c2, dy)
  T.eq(g.key, nil, 'key defaulted to query: its gradient is in query\'s')
  T.check_close('dx', g.query, dx1, {rtol = 1e-5, atol = 1e-6})
  T.check_close('parameter gradients', m._flat_grad, g1, {rtol = 1e-5, atol = 1e-6})
end)

T.test('masks: a padded key is a key that is not there; bool and float masks; all masked gives NaN', function()
  local m = nn.materialize(nn.MultiheadAttention(4, 2), 5)
  local q, k = randn({1, 3, 4}, 'q'), randn({1, 4, 4}, 'k')
  local kpm = lunar.tensor({{0, 0, 1, 0}}, nil, 'u8')              -- key 3 padded (PyTorch's bool True)
  local y1, c1 = m:forward{q, k, key_padding_mask = kpm}
  c1:free()
  -- the same call on keys 1, 2, 4 only
  local k3 = lunar.empty({1, 3, 4})
  k3:narrow(2, 1, 2):copy_(k:narrow(2, 1, 2)); k3:narrow(2, 3, 1):copy_(k:narrow(2, 4, 1))
  local y2, c2 = m:forward{q, k3}
  c2:free()
  T.check_close('masked key = absent key', y1, y2, {rtol = 1e-6, atol = 1e-6})
  -- a float mask of -1e30 on that key (added) is the same; a bool attn_mask [L, S] too
  local fm = lunar.tensor({{0, 0, -1e30, 0}})
  local am = lunar.tensor({{0, 0, 1, 0}, {0, 0, 1, 0}, {0, 0, 1, 0}}, nil, 'u8')
  local y3, c3 = m:forward{q, k, key_padding_mask = fm}; c3:free()
  local y4, c4 = m:forward{q, k, attn_mask = am}; c4:free()
  T.check_close('float key_padding_mask', y3, y2, {rtol = 1e-6, atol = 1e-6})
  T.check_close('bool attn_mask', y4, y2, {rtol = 1e-6, atol = 1e-6})
  -- every key of a query masked: NaN for that query (PyTorch's math path), the others finite
  local all = lunar.tensor({{1, 1, 1, 1}, {0, 0, 0, 0}, {0, 0, 0, 0}}, nil, 'u8')
  local y5, c5 = m:forward{q, k, attn_mask = all}; c5:free()
  local v = y5:totable()
  T.truthy(v[1][1][1] ~= v[1][1][1], 'query 1: NaN')
  T.truthy(v[1][2][1] == v[1][2][1], 'query 2: a number')
end)

T.test('gradcheck (f64) of query, key and value: masked self-attention, cross-attention, kdim/vdim', function()
  local kpm = lunar.tensor({{0, 0, 0, 1, 1}, {0, 0, 0, 0, 0}}, nil, 'u8')
  local causal = lunar.tensor({{0, 1, 1, 1, 1}, {0, 0, 1, 1, 1}, {0, 0, 0, 1, 1}, {0, 0, 0, 0, 1}, {0, 0, 0, 0, 0}},
    nil, 'u8')
  -- self-attention shapes with a key padding mask and a causal mask: query, key, value apart
  local x, kx, vx = randn({2, 5, 8}, 'sx'), randn({2, 5, 8}, 'sk'), randn({2, 5, 8}, 'sv')
  for _, role in ipairs({'query', 'key', 'value'}) do
    local others = {query = x, key = kx, value = vx, key_padding_mask = kpm, attn_mask = causal}
    local rep = check(Probe(nn.MultiheadAttention(8, 2), role, others), others[role])
    T.truthy(rep.checked > 100, 'input and every parameter: ' .. rep.message)
  end
  -- cross-attention L 3, S 6 with a float [B*H, L, S] mask
  local fm = randn({4, 3, 6}, 'fm')
  local q, k, v = randn({2, 3, 8}, 'cq'), randn({2, 6, 8}, 'ck'), randn({2, 6, 8}, 'cv')
  for _, role in ipairs({'query', 'key', 'value'}) do
    local others = {query = q, key = k, value = v, attn_mask = fm}
    check(Probe(nn.MultiheadAttention(8, 2), role, others), others[role])
  end
  -- kdim 6, vdim 4 (separate q/k/v_proj_weight, PyTorch's names)
  local mk = nn.MultiheadAttention(8, 2, {kdim = 6, vdim = 4})
  T.eq(T.param_names(mk), 'q_proj_weight k_proj_weight v_proj_weight in_proj_bias out_proj.weight out_proj.bias')
  local kk, vv = randn({2, 6, 6}, 'kk'), randn({2, 6, 4}, 'vv')
  for _, role in ipairs({'query', 'key', 'value'}) do
    local others = {query = q, key = kk, value = vv}
    check(Probe(nn.MultiheadAttention(8, 2, {kdim = 6, vdim = 4}), role, others), others[role])
  end
  -- a key given, value omitted (value = key): the key's gradient holds both
  local mm = nn.materialize(nn.MultiheadAttention(8, 2), 4)
  local y, c = mm:forward{q, k}
  local g = mm:backward(c, lunar.ones(y:shape()))
  T.truthy(g.query and g.key and g.value == nil, 'roles query and key')
  T.eq(mm:backward(select(2, mm:forward{q, k}), lunar.ones(y:shape()), false), nil, 'need_dx = false gives nil')
end)

T.test('masked and cross-attention: bad input names the module path and the shapes', function()
  local m = nn.materialize(nn.Sequential{{'attn', nn.MultiheadAttention(8, 2, {kdim = 6})}}, 1)
  local q = lunar.zeros({2, 3, 8})
  T.raises(function() m:forward{q, lunar.zeros({2, 4, 8})} end,   -- through the Sequential: no position
    '^attn %(MultiheadAttention%): key: expected %[2, S, 6%], got %[2, 4, 8%]$')
  T.raises(function() m:forward{q, lunar.zeros({2, 4, 6}), lunar.zeros({2, 5, 8})} end,
    '^attn %(MultiheadAttention%): value: expected %[2, 4, 8%], got %[2, 5, 8%]$')
  local m2 = nn.materialize(nn.Sequential{{'attn', nn.MultiheadAttention(8, 2)}}, 1)
  T.raises(function() m2.attn:forward{q, key_padding_mask = lunar.zeros({2, 4}, 'u8')} end,
    '^attn %(MultiheadAttention%): key_padding_mask %[2, 4%] must be %[B, S%] = %[2, 3%]')
  T.raises(function() m2.attn:forward{q, attn_mask = lunar.zeros({3, 4}, 'u8')} end,
    'attn_mask %[3, 4%] must be %[L, S%] = %[3, 3%] or %[B%*num_heads, L, S%] = %[4, 3, 3%]')
  T.raises(function() m2.attn:forward{q, attn_mask = lunar.zeros({3, 3}, 'i32')} end,
    "attn_mask has dtype i32; a mask is u8 %(PyTorch's bool")
  T.raises(function() nn.MultiheadAttention(8, 2, {kdim = 0}) end, 'kdim must be a positive integer, got 0')
  -- the op itself: f64 only on the reference kernels, and its shape errors
  T.raises(function() ops.sdpa(lunar.zeros({1, 2, 4}, 'f64'), lunar.zeros({1, 3, 4}, 'f64'),
    lunar.zeros({1, 3, 4}, 'f64'), 2) end, 'sdpa: f64 operands run on the reference kernels')
  T.raises(function() ops.sdpa(lunar.zeros({1, 2, 4}), lunar.zeros({1, 3, 6}), lunar.zeros({1, 3, 6}), 2) end,
    'sdpa: query %[1, 2, 4%] and key %[1, 3, 6%] do not fit')
end)

T.run()
