-- Tests of the tensor bindings (bindings/ltensor.c), a few of lunar.ops's
-- error messages (bindings/lops.c) and lunar.memory / lunar.stream_id
-- (bindings/lcore.c).
--   build/lunar tests/lua/test_tensor.lua
local T = require('harness')

local ops = lunar.ops

-- constructors and shapes ------------------------------------------------------

T.test('constructors: shape, dtype, device, numel', function()
  local e = lunar.empty({2, 3})
  T.eq(e:shape(), {2, 3}); T.eq(e:size(), {2, 3}); T.eq(e:dim(), 2); T.eq(e:numel(), 6)
  T.eq(e:dtype(), 'f32'); T.eq(e:device(), 'cpu'); T.eq(#e, 2)
  T.eq(e:size(1), 2); T.eq(e:size(2), 3); T.eq(e:size(-1), 3)
  T.eq(e:nbytes(), 24)
  T.eq(lunar.empty({4}, 'i32'):dtype(), 'i32')
  T.eq(lunar.empty({4}, 'bf16'):nbytes(), 8)
  T.eq(lunar.zeros({2, 2, 2}, 'f64'):dtype(), 'f64')

  local z = lunar.zeros({3, 4})
  T.eq(z:totable(), {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, 0, 0, 0}})
  local o = lunar.ones({2, 5})
  T.eq(o:sum(), 10); T.eq(o:min(), 1); T.eq(o:max(), 1)
  local f = lunar.full({2, 2}, 2.5)
  T.eq(f:totable(), {{2.5, 2.5}, {2.5, 2.5}})
  local fi = lunar.full({3}, 7, 'i32')
  T.eq(fi:dtype(), 'i32'); T.eq(fi:totable(), {7, 7, 7})
  T.eq(math.type(fi[1]), 'integer')

  T.raises(function() lunar.zeros({2}, 'f31') end, "unknown dtype 'f31'")
  T.raises(function() lunar.zeros({2, -1}) end, 'negative size')
end)

T.test('lunar.tensor: nested tables, explicit shape, dtype, errors', function()
  local t = lunar.tensor({{1, 2, 3}, {4, 5, 6}})
  T.eq(t:shape(), {2, 3}); T.eq(t:dtype(), 'f32')
  T.eq(t:totable(), {{1, 2, 3}, {4, 5, 6}})
  local u = lunar.tensor({1, 2, 3, 4, 5, 6}, {3, 2})
  T.eq(u:shape(), {3, 2}); T.eq(u:totable(), {{1, 2}, {3, 4}, {5, 6}})
  local i = lunar.tensor({{1, 2}, {3, 4}}, 'i32')
  T.eq(i:dtype(), 'i32'); T.eq(i:totable(), {{1, 2}, {3, 4}})
  local j = lunar.tensor({1, 2, 3, 4}, {2, 2}, 'i64')
  T.eq(j:dtype(), 'i64'); T.eq(j:shape(), {2, 2})
  local c = lunar.tensor({{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}})
  T.eq(c:shape(), {2, 2, 2}); T.eq(c:sum(), 36)
  T.eq(lunar.tensor({}):shape(), {0})
  T.raises(function() lunar.tensor({{1, 2}, {3}}) end, 'ragged')
  T.raises(function() lunar.tensor({1, 'x'}) end, 'not a number')
  T.raises(function() lunar.tensor({1, 2, 3}, {2, 2}) end, 'do not fill the shape')
  T.truthy(lunar.is_tensor(t)); T.falsy(lunar.is_tensor({}))
end)

T.test('reductions: sum, mean, min, max, norm, item', function()
  local t = lunar.tensor({{3, -4}, {1, 2}})
  T.eq(t:sum(), 2); T.eq(t:mean(), 0.5); T.eq(t:min(), -4); T.eq(t:max(), 3)
  T.near(t:norm(), math.sqrt(30), 1e-12)
  T.eq(lunar.tensor({2.5}):item(), 2.5)
  T.raises(function() t:item() end, 'item: tensor has 4 elements')
  -- reductions over a strided view
  T.eq(t:transpose(1, 2):select(1, 2):sum(), -2)
end)

T.test('reductions propagate NaN as PyTorch does; infinities; empty and integer tensors', function()
  local nan, inf = 0 / 0, 1 / 0
  -- a NaN first, in the middle or last gives NaN for every reduction, in every dtype
  -- (torch.tensor([1., nan, -2.]).sum() / .mean() / .amin() / .amax() / .norm() are all nan)
  for _, dt in ipairs({'f32', 'bf16', 'f64'}) do
    for _, vals in ipairs({{nan, 1, -2}, {1, nan, -2}, {1, -2, nan}}) do
      local t = lunar.tensor(vals, dt)
      for _, r in ipairs({'sum', 'mean', 'min', 'max', 'norm'}) do
        local v = t[r](t)
        T.truthy(v ~= v, dt .. ' ' .. r .. ' of ' .. tostring(t) .. ' is NaN, got ' .. tostring(v))
      end
    end
  end
  -- over a strided view and a large tensor (several chunks of the CPU kernel)
  local big = lunar.zeros({300, 1001})
  big[300][1001] = nan
  T.truthy(big:max() ~= big:max() and big:transpose(1, 2):min() ~= big:transpose(1, 2):min())
  -- infinities (hand IEEE): inf + -inf = NaN; min -inf, max inf, norm inf
  local u = lunar.tensor({inf, -inf, 0})
  T.truthy(u:sum() ~= u:sum(), 'inf + -inf is NaN')
  T.eq(u:min(), -inf); T.eq(u:max(), inf); T.eq(u:norm(), inf)
  -- no elements: sum 0, mean NaN (PyTorch); min and max have no value
  local e = lunar.tensor({})
  T.eq(e:sum(), 0); T.truthy(e:mean() ~= e:mean())
  T.raises(function() return e:min() end, 'min: x is empty')
  T.raises(function() return e:max() end, 'max: x is empty')
  -- integer tensors are summed exactly beyond 2^24: 2^40 + 1 + 1
  T.eq(lunar.tensor({2 ^ 40 + 1, 1}, 'i64'):sum(), 2 ^ 40 + 2)
  T.eq(lunar.tensor({{7, 200}, {3, 0}}, 'u8'):max(), 200)
end)

T.test('arithmetic: IEEE special values, bf16 operands', function()
  local nan, inf = 0 / 0, 1 / 0
  local a = lunar.tensor({1, -1, 0, nan})
  local q = (a / 0):totable()   -- 1/0 = inf, -1/0 = -inf, 0/0 = NaN, NaN/0 = NaN
  T.eq(q[1], inf); T.eq(q[2], -inf); T.truthy(q[3] ~= q[3] and q[4] ~= q[4])
  local s = (lunar.tensor({inf}) - lunar.tensor({inf}))[1]
  T.truthy(s ~= s, 'inf - inf is NaN')
  -- bf16 operands are read exactly and give an f32 result: 1.0078125 is a bf16 value
  local h = lunar.tensor({1.0078125, 3}, 'bf16')
  local r = h * 2
  T.eq(r:dtype(), 'f32'); T.eq(r:totable(), {2.015625, 6})
  T.eq((h + lunar.tensor({1, 1})):totable(), {2.0078125, 4})
  -- computed in double and rounded once: 1 + 1e-8 rounds to 1 in f32
  T.eq((lunar.tensor({1}) + 1e-8)[1], 1)
  T.eq((lunar.tensor({3}) * 0.1)[1], lunar.tensor({0.3})[1])
end)

-- views -------------------------------------------------------------------------

T.test('views share storage: narrow, select, transpose, view, permute', function()
  local base = lunar.zeros({3, 4})
  local n = base:narrow(2, 2, 2)           -- columns 2..3
  T.eq(n:shape(), {3, 2}); T.falsy(n:is_contiguous())
  n:fill_(7)
  T.eq(base:totable(), {{0, 7, 7, 0}, {0, 7, 7, 0}, {0, 7, 7, 0}})

  local s = base:select(1, 2)              -- row 2
  T.eq(s:shape(), {4})
  s[4] = 5
  T.eq(base[2][4], 5)
  T.eq(base:totable()[2], {0, 7, 7, 5})

  local tr = base:transpose(1, 2)
  T.eq(tr:shape(), {4, 3}); T.falsy(tr:is_contiguous())
  tr[1][3] = -2                            -- base[3][1]
  T.eq(base[3][1], -2)
  T.eq(tr[4][2], 5, 'read through the transpose')

  local v = base:view(12)
  T.eq(v:shape(), {12})
  v[12] = 9
  T.eq(base[3][4], 9)
  local v2 = base:view({2, -1})
  T.eq(v2:shape(), {2, 6})
  v2[1][5] = 11                            -- flat 5 = base[2][1]
  T.eq(base[2][1], 11)
  T.eq(base:reshape(4, 3):shape(), {4, 3})

  local b3 = lunar.zeros({2, 3, 4})
  local p = b3:permute(3, 1, 2)
  T.eq(p:shape(), {4, 2, 3})
  p[4][2][3] = 1                           -- b3[2][3][4]
  T.eq(b3[2][3][4], 1); T.eq(b3:sum(), 1)

  -- copy_ into a view writes the base
  local m = lunar.zeros({2, 3})
  m:narrow(2, 2, 2):copy_(lunar.tensor({{1, 2}, {3, 4}}))
  T.eq(m:totable(), {{0, 1, 2}, {0, 3, 4}})
  T.raises(function() m:narrow(2, 1, 2):copy_(lunar.zeros({3, 2})) end, 'copy: destination [2, 2] and source [3, 2]')

  -- errors
  T.raises(function() tr:view(12) end, 'not contiguous')
  T.raises(function() base:view(5) end, 'reshape: cannot view [3, 4]')
  T.raises(function() base:narrow(2, 3, 3) end, 'narrow')
  T.raises(function() base:select(3, 1) end, 'dim 3 out of range for a 2-dim tensor')
  T.raises(function() base:permute(1, 1) end, 'repeated')
end)

T.test('a view keeps its storage alive after the base is freed', function()
  local base = lunar.tensor({1, 2, 3, 4})
  local v = base:narrow(1, 3, 2)
  base:free()
  T.truthy(base:is_released())
  T.falsy(v:is_released())
  T.eq(v:totable(), {3, 4})
end)

-- indexing ---------------------------------------------------------------------

T.test('1-based indexing: read, write, nested, rows', function()
  local t = lunar.tensor({{1, 2, 3}, {4, 5, 6}})
  T.eq(t[1][1], 1); T.eq(t[2][3], 6); T.eq(t[1][3], 3)
  local row = t[2]
  T.truthy(lunar.is_tensor(row)); T.eq(row:shape(), {3}); T.eq(row:totable(), {4, 5, 6})
  t[1][2] = 20
  T.eq(t:totable(), {{1, 20, 3}, {4, 5, 6}})
  t[2] = 0                                 -- a number fills the row
  T.eq(t:totable(), {{1, 20, 3}, {0, 0, 0}})
  t[2] = lunar.tensor({7, 8, 9})           -- a tensor is copied into the row
  T.eq(t:totable(), {{1, 20, 3}, {7, 8, 9}})
  row[1] = -1                              -- the row is a view
  T.eq(t[2][1], -1)

  local c = lunar.zeros({2, 3, 4})
  c[2][3][4] = 5
  T.eq(c:view(24)[24], 5); T.eq(c[2][3][4], 5)

  local ints = lunar.tensor({1, 2, 3}, 'i32')
  T.eq(math.type(ints[2]), 'integer'); T.eq(ints[2], 2)
  ints[3] = 42
  T.eq(ints[3], 42)
  T.eq(math.type(lunar.tensor({1})[1]), 'float')

  T.raises(function() return t[0] end, 'index 0 out of range')
  T.raises(function() return t[3] end, 'index 3 out of range [1, 2]')
  T.raises(function() t[3] = 1 end, 'out of range')
  T.raises(function() t[1] = lunar.zeros({4}) end, 'differ in shape')
end)

-- arithmetic -------------------------------------------------------------------

T.test('arithmetic with tensors and numbers', function()
  local a = lunar.tensor({{1, 2}, {3, 4}})
  local b = lunar.tensor({{10, 20}, {30, 40}})
  T.eq((a + b):totable(), {{11, 22}, {33, 44}})
  T.eq((b - a):totable(), {{9, 18}, {27, 36}})
  T.eq((a * b):totable(), {{10, 40}, {90, 160}})
  T.eq((b / a):totable(), {{10, 10}, {10, 10}})
  T.eq((a + 1):totable(), {{2, 3}, {4, 5}})
  T.eq((2 * a):totable(), {{2, 4}, {6, 8}})
  T.eq((10 - a):totable(), {{9, 8}, {7, 6}})
  T.eq((12 / a):totable(), {{12, 6}, {4, 3}})
  T.eq((a / 2):totable(), {{0.5, 1}, {1.5, 2}})
  T.eq((-a):totable(), {{-1, -2}, {-3, -4}})
  T.eq((a + b):shape(), {2, 2})
  -- operands are not modified
  T.eq(a:totable(), {{1, 2}, {3, 4}})
  -- a strided operand is read in logical order
  T.eq((a:transpose(1, 2) + b):totable(), {{11, 23}, {32, 44}})
  -- integer tensors give f32 results
  local i = lunar.tensor({1, 2, 3}, 'i32')
  local r = i * 0.5
  T.eq(r:dtype(), 'f32'); T.eq(r:totable(), {0.5, 1, 1.5})
  T.raises(function() return a + lunar.zeros({3}) end, 'arithmetic: shapes [2, 2] and [3] differ')
end)

T.test('rsqrt: 1/sqrt(t + eps) elementwise on the device, f32 (hand values)', function()
  local v = lunar.tensor({{3, 0.25}, {15, 0}})
  -- 1/sqrt(3 + 1) = 0.5, 1/sqrt(0.25 + 1) = 0.894427191 (f32: 0.89442718029022), 1/sqrt(16) = 0.25, 1/sqrt(1) = 1
  local r = v:rsqrt(1)
  T.eq(r:dtype(), 'f32'); T.eq(r:shape(), {2, 2})
  local t = r:totable()
  T.eq({t[1][1], t[2][1], t[2][2]}, {0.5, 0.25, 1})
  T.near(t[1][2], 0.894427191, 1e-7)
  -- eps defaults to 0: 1/sqrt(0) = +inf; a strided operand read in logical order
  T.eq(v:rsqrt():totable()[2][2], math.huge)
  T.eq(v:transpose(1, 2):rsqrt(1):totable()[1][2], 0.25)
  T.eq(v:totable(), {{3, 0.25}, {15, 0}})   -- not modified
end)

T.test('arithmetic compares shapes, not element counts', function()
  -- [2, 3] and [3, 2] have the same numel: still an error naming both shapes
  local a, b = lunar.zeros({2, 3}), lunar.zeros({3, 2})
  for _, f in ipairs({function() return a + b end, function() return a - b end, function() return a * b end,
      function() return a / b end}) do
    T.raises(f, 'arithmetic: shapes [2, 3] and [3, 2] differ')
  end
  T.raises(function() return lunar.zeros({6}) + a end, 'arithmetic: shapes [6] and [2, 3] differ')
  T.raises(function() return lunar.zeros({1, 6}) * lunar.zeros({6, 1}) end, 'shapes [1, 6] and [6, 1] differ')
  T.eq((a + lunar.ones({2, 3})):shape(), {2, 3})
end)

T.test('clone and contiguous of a transposed tensor give the right element order', function()
  local t = lunar.tensor({{1, 2, 3}, {4, 5, 6}})
  local tt = t:transpose(1, 2)
  local c = tt:contiguous()
  T.truthy(c:is_contiguous())
  T.eq(c:shape(), {3, 2})
  T.eq(c:totable(), {{1, 4}, {2, 5}, {3, 6}})
  T.eq(c:view(6):totable(), {1, 4, 2, 5, 3, 6})
  local k = tt:clone()
  T.truthy(k:is_contiguous())
  T.eq(k:view(-1):totable(), {1, 4, 2, 5, 3, 6})
  k[1][1] = 100                           -- a clone has its own storage
  T.eq(t[1][1], 1)
  local k2 = t:clone()
  k2:fill_(0)
  T.eq(t:sum(), 21)
  -- 3-dim permute then contiguous
  local x = lunar.tensor({{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}})
  T.eq(x:permute(3, 2, 1):contiguous():view(8):totable(), {1, 5, 3, 7, 2, 6, 4, 8})
end)

T.test('contiguous copies of strided views: element order by hand arithmetic, threaded sizes, every width', function()
  -- base [A, B, C] holds its own flat index a*B*C + b*C + c (exact in f32 and f64)
  local function iota(A, B, C, dtype)
    local v = {}
    for i = 1, A * B * C do v[i] = i - 1 end
    return lunar.tensor(v, {A, B, C}):to(dtype or 'f32')
  end
  -- transpose(2, 3) made contiguous: element (a, c, b) = a*B*C + b*C + c
  local function check_t23(A, B, C, dtype)
    local t = iota(A, B, C, dtype):transpose(2, 3):contiguous()
    T.truthy(t:is_contiguous())
    local flat, bad = t:view(-1):totable(), 0
    local i = 1
    for a = 0, A - 1 do for c = 0, C - 1 do for b = 0, B - 1 do
      if flat[i] ~= a * B * C + b * C + c then bad = bad + 1 end
      i = i + 1
    end end end
    T.eq(bad, 0, string.format('%s [%d, %d, %d] transposed: wrong elements', dtype or 'f32', A, B, C))
  end
  check_t23(3, 40, 37)            -- tiles of 16 with ragged edges both ways
  check_t23(4, 128, 160)          -- 81,920 elements: the threaded copy
  check_t23(2, 1, 5)              -- a dim of 1
  check_t23(2, 3, 4, 'f64')       -- 8-byte elements, row by row
  check_t23(5, 6, 7, 'bf16')      -- 2-byte elements (values < 256 are exact)
  check_t23(3, 300, 90, 'i32')    -- 4-byte integers, threaded
  -- a 3-dim permute whose innermost source stride is not 1 (the row-by-row copy)
  local p = iota(4, 5, 6):permute(3, 1, 2):contiguous():view(-1):totable()
  local bad, i = 0, 1
  for c = 0, 5 do for a = 0, 3 do for b = 0, 4 do
    if p[i] ~= a * 30 + b * 6 + c then bad = bad + 1 end
    i = i + 1
  end end end
  T.eq(bad, 0, 'permute(3, 1, 2)')
  -- a narrowed (offset, strided) source
  local n = iota(3, 8, 9):narrow(3, 2, 4):contiguous():view(-1):totable()
  bad, i = 0, 1
  for a = 0, 2 do for b = 0, 7 do for c = 1, 4 do
    if n[i] ~= a * 72 + b * 9 + c then bad = bad + 1 end
    i = i + 1
  end end end
  T.eq(bad, 0, 'narrow(3, 2, 4)')
end)

T.test("to() between f32 and bf16 of contiguous tensors (offset, threaded) matches the element-wise path", function()
  -- values with more bits than bf16 keeps (rounding: ties to even among them)
  local vals = {}
  for k = 1, 3 * 40000 do vals[k] = ((k * 7919) % 20011 - 10005) * (1 + 2 ^ -8) / 64 end
  local x = lunar.tensor(vals, {3, 40000}):narrow(1, 2, 2)            -- contiguous, offset 40000
  T.truthy(x:is_contiguous())
  local fast = x:to('bf16')                                            -- the contiguous pass
  local ref = x:transpose(1, 2):to('bf16'):transpose(1, 2)             -- strided: element by element
  T.eq(fast:to('f32'):view(-1):totable(), ref:contiguous():to('f32'):view(-1):totable())
  -- bf16 -> f32 is exact: the widened values are the bf16 ones
  local back = fast:to('f32')
  T.eq(back:dtype(), 'f32')
  T.eq(back:to('bf16'):to('f32'):view(-1):totable(), back:view(-1):totable())
  T.eq(fast:narrow(2, 3, 5):to('f32'):totable(), ref:narrow(2, 3, 5):to('f32'):totable())
end)

-- dtype conversion -------------------------------------------------------------

T.test("to('bf16') rounds to nearest, ties to even", function()
  local e8 = 2 ^ -8
  local vals = {
    1 + e8,          -- halfway between 1 and 1 + 2^-7: tie, to even (1)
    1 + 3 * e8,      -- halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): up
    1 + e8 + 2 ^ -12,  -- just above the tie: up
    1 + e8 - 2 ^ -12,  -- just below the tie: down
    -(1 + 3 * e8),   -- symmetric for negatives
    3.140625,        -- exactly representable
    1 / 0,
  }
  local b = lunar.tensor(vals):to('bf16')
  T.eq(b:dtype(), 'bf16'); T.eq(b:nbytes(), 2 * #vals)
  local want = {1, 1 + 2 ^ -6, 1 + 2 ^ -7, 1, -(1 + 2 ^ -6), 3.140625, 1 / 0}
  T.eq(b:totable(), want)
  T.eq(b:to('f32'):totable(), want)
  T.eq(b:to('f32'):dtype(), 'f32')
  local nan = lunar.tensor({0 / 0}):to('bf16')[1]
  T.truthy(nan ~= nan, 'NaN stays NaN')
  -- 65536 + 256 is halfway between 65536 and 65536 + 512: to even (65536)
  T.eq(lunar.tensor({65536 + 256, 65536 + 768}):to('bf16'):totable(), {65536, 66560})
end)

T.test("to('i32') truncates toward zero; other dtypes", function()
  local t = lunar.tensor({1.7, -2.7, 3, -0.5, 100000})
  local i = t:to('i32')
  T.eq(i:dtype(), 'i32'); T.eq(i:shape(), {5})
  T.eq(i:totable(), {1, -2, 3, 0, 100000})
  T.eq(math.type(i:totable()[1]), 'integer')
  T.eq(i:to('f32'):totable(), {1, -2, 3, 0, 100000})
  T.eq(lunar.tensor({200.9, 255, 1}):to('u8'):totable(), {200, 255, 1})
  local d = lunar.tensor({0.1}):to('f64')
  T.eq(d:dtype(), 'f64')
  T.eq(d[1], (string.unpack('f', string.pack('f', 0.1))), 'f32 0.1 widened exactly')
  -- a strided source converts in logical order
  T.eq(lunar.tensor({{1, 2}, {3, 4}}):transpose(1, 2):to('i32'):totable(), {{1, 3}, {2, 4}})
  -- a bad dtype is named, with the valid ones
  T.raises(function() t:to('int7') end, "unknown dtype or device 'int7'")
  T.raises(function() t:to('int7') end, 'dtypes: f32, bf16, f16, f64, i32, i64, u8')
  T.raises(function() t:to('cpu', 'int7') end, "unknown dtype or device 'int7'")
  T.raises(function() t:to(7) end, "unknown dtype '7'")
end)

-- tostring ---------------------------------------------------------------------

T.test('tostring shows shape, dtype, device and values of small tensors', function()
  local s = tostring(lunar.tensor({{1, 2, 3}, {4, 5, 6}}))
  T.truthy(s:find('[2, 3]', 1, true), s)
  T.truthy(s:find('f32', 1, true), s)
  T.truthy(s:find('cpu', 1, true), s)
  T.truthy(s:find('[[1, 2, 3], [4, 5, 6]]', 1, true), s)
  T.truthy(s:find('min=1', 1, true) and s:find('max=6', 1, true), s)
  local si = tostring(lunar.tensor({-1, 7}, 'i32'))
  T.truthy(si:find('i32', 1, true) and si:find('[-1, 7]', 1, true), si)
  local sb = tostring(lunar.tensor({0.5, 2}):to('bf16'))
  T.truthy(sb:find('bf16', 1, true) and sb:find('[0.5, 2]', 1, true), sb)
  -- a large tensor: a summary, no value list
  local sl = tostring(lunar.zeros({10, 10}))
  T.truthy(sl:find('[10, 10]', 1, true), sl)
  T.falsy(sl:find('[[', 1, true), sl)
  T.falsy(sl:find('\n', 1, true), sl)
  -- a released tensor still prints its shape
  local r = lunar.zeros({4, 2}); r:free()
  local sr = tostring(r)
  T.truthy(sr:find('[4, 2]', 1, true) and sr:find('released', 1, true), sr)
end)

-- lifetime ---------------------------------------------------------------------

T.test('use after free raises an error naming "released"', function()
  local t = lunar.tensor({1, 2, 3})
  t:free()
  T.truthy(t:is_released())
  T.eq(t:shape(), {3}, 'the shape is kept')
  T.raises(function() return t[1] end, 'released')
  T.raises(function() t[1] = 0 end, 'released')
  T.raises(function() return t:sum() end, 'released')
  T.raises(function() return t + 1 end, 'released')
  T.raises(function() return 1 - t end, 'released')
  T.raises(function() return t:view(3) end, 'released')
  T.raises(function() return t:totable() end, 'released')
  T.raises(function() return t:clone() end, 'released')
  T.raises(function() return ops.gelu(t) end, 'released')
  T.raises(function() lunar.zeros({3}):copy_(t) end, 'released')
  t:free()                                 -- a second free is harmless
end)

T.test('a <close> variable releases its tensor at scope end, also on error', function()
  local kept
  do
    local t <close> = lunar.ones({8})
    kept = t
    T.eq(t:sum(), 8)
  end
  T.truthy(kept:is_released())
  T.raises(function() return kept:sum() end, 'released')

  local kept2
  local ok = pcall(function()
    local u <close> = lunar.zeros({2})
    kept2 = u
    error('boom')
  end)
  T.falsy(ok)
  T.truthy(kept2:is_released(), 'released when the scope is left by an error')
end)

T.test('lunar.memory: a freed tensor returns its bytes', function()
  collectgarbage(); collectgarbage()
  collectgarbage('stop')
  local ok, err = pcall(function()
    local m0 = lunar.memory()
    for _, k in ipairs({'bytes_in_use', 'peak_bytes', 'bytes_reserved', 'num_allocs', 'num_sys_allocs',
                        'peak_rss_bytes'}) do
      T.eq(math.type(m0[k]), 'integer', k)
    end
    local n = 1 << 20
    local t = lunar.empty({n})
    local m1 = lunar.memory()
    T.truthy(m1.bytes_in_use >= m0.bytes_in_use + 4 * n, 'in use grows by at least 4 MiB')
    T.truthy(m1.peak_bytes >= m1.bytes_in_use)
    t:free()
    T.eq(lunar.memory().bytes_in_use, m0.bytes_in_use, 'back to where it was')
  end)
  collectgarbage('restart')
  if not ok then error(err, 0) end
  T.eq(lunar.rank, 0); T.eq(lunar.world_size, 1); T.eq(type(lunar.version), 'string')
  T.eq(lunar.stream_id('a'), lunar.stream_id('a')); T.truthy(lunar.stream_id('a') ~= lunar.stream_id('b'))
  T.raises(function() lunar.set_num_threads(0) end, 'set_num_threads: 0 is not a thread count')
  T.truthy(lunar.num_threads() >= 1)
  T.truthy(lunar.clock() > 0)
  local t0 = lunar.clock()
  T.truthy(lunar.clock() >= t0, 'monotonic')
end)

T.test('lunar.sgemm_gflops measures in core (a positive rate) and checks its arguments', function()
  local g = lunar.sgemm_gflops(64, 1)
  T.truthy(type(g) == 'number' and g > 0, 'GFLOP/s of a 64^3 sgemm: ' .. tostring(g))
  T.raises(function() lunar.sgemm_gflops(0) end, 'sgemm_gflops: size 0 and reps 3 must be >= 1')
end)

-- op errors --------------------------------------------------------------------

T.test('op shape errors name the op and both shapes', function()
  local msg = T.raises(function() ops.linear(lunar.zeros({2, 3}), lunar.zeros({4, 5})) end, 'linear')
  T.truthy(msg:find('[2, 3]', 1, true) and msg:find('[4, 5]', 1, true), msg)
  msg = T.raises(function() ops.linear(lunar.zeros({2, 5}), lunar.zeros({4, 5}), lunar.zeros({3})) end, 'linear')
  T.truthy(msg:find('bias', 1, true) and msg:find('[3]', 1, true), msg)
  msg = T.raises(function() ops.add(lunar.zeros({2, 3}), lunar.zeros({7})) end, 'add')
  T.truthy(msg:find('[2, 3]', 1, true) and msg:find('[7]', 1, true), msg)
  msg = T.raises(function() ops.attention(lunar.zeros({1, 4, 12}), 3) end, 'attention')
  T.truthy(msg:find('[1, 4, 12]', 1, true), msg)
  -- mixed real dtypes: the operands must share the input's (f32, or f64 on the reference kernels)
  msg = T.raises(function() ops.linear(lunar.zeros({2, 5}, 'f64'), lunar.zeros({4, 5})) end, 'linear')
  T.truthy(msg:find('weight has dtype f32, expected f64', 1, true), msg)
  msg = T.raises(function() ops.linear(lunar.zeros({2, 5}), lunar.zeros({4, 5}, 'f64')) end, 'linear')
  T.truthy(msg:find('weight has dtype f64, expected f32', 1, true), msg)
  msg = T.raises(function()
    ops.cross_entropy(lunar.zeros({2, 3}), lunar.tensor({0, 3}, 'i32'), 0)
  end, 'cross_entropy')
  T.truthy(msg:find('not a class in [0, 3)', 1, true), msg)
  -- a correct call works
  local y = ops.linear(lunar.ones({2, 5}), lunar.full({4, 5}, 0.5), lunar.full({4}, 1))
  T.eq(y:shape(), {2, 4}); T.eq(y:totable(), {{3.5, 3.5, 3.5, 3.5}, {3.5, 3.5, 3.5, 3.5}})
end)

T.test('output shapes come from the op layer, which refuses bad inputs before anything is allocated', function()
  -- the shapes lunar.ops allocates (ops.h lunar_op_*_out_shape), by hand
  T.eq(ops.linear(lunar.zeros({2, 3, 5}), lunar.zeros({4, 5})):shape(), {2, 3, 4})
  T.eq(ops.patchify(lunar.zeros({2, 3, 8, 12}), 4):shape(), {2, 6, 48})     -- L = 2 * 3, C P^2 = 3 * 16
  T.eq(ops.patchify(lunar.zeros({1, 2, 4, 4, 8}), 4):shape(), {1, 2, 128})   -- L = 1 * 1 * 2, 2 * 4^3
  local o, lse = ops.attention(lunar.zeros({2, 5, 12}), 2)
  T.eq(o:shape(), {2, 5, 4}); T.eq(lse:shape(), {2, 2, 5})
  local t = ops.embed_tokens(lunar.zeros({2, 3, 4}), lunar.zeros({4}), lunar.zeros({1, 4, 4}))
  T.eq(t:shape(), {2, 4, 4})
  T.eq(ops.embed_tokens_backward(t, lunar.zeros({4}), lunar.zeros({4, 4})):shape(), {2, 3, 4})
  local _, mean = ops.layernorm(lunar.zeros({2, 3, 4}), lunar.ones({4}), lunar.zeros({4}))
  T.eq(mean:shape(), {6})
  -- bad inputs: the op's own messages
  T.raises(function() ops.patchify(lunar.zeros({1, 1, 6, 6}), 4) end,
    'patchify: image [1, 1, 6, 6]: size 6 of spatial dim 0 is not a multiple of the patch size 4')
  T.raises(function() ops.patchify(lunar.zeros({6, 6}), 2) end, 'patchify: image [6, 6] must be [B, C, H, W]')
  T.raises(function() ops.patchify(lunar.zeros({1, 1, 4, 4}), 0) end, 'patchify: patch size 0 must be positive')
  T.raises(function() ops.attention(lunar.zeros({2, 5, 12}), 3) end, 'attention: width C = 4 of qkv [2, 5, 12] is not divisible by 3 heads')
  T.raises(function() ops.embed_tokens(lunar.zeros({2, 3}), lunar.zeros({4}), lunar.zeros({4, 4})) end,
    'embed_tokens: x [2, 3] must be [B, L, C]')
  T.raises(function() ops.embed_tokens_backward(lunar.zeros({2, 0, 4}), lunar.zeros({4}), lunar.zeros({4})) end,
    'embed_tokens_backward: dout [2, 0, 4] must be [B, L+1, C]')
  T.raises(function() ops.linear(lunar.zeros({2, 5}), lunar.zeros({5})) end,
    'linear: inp [2, 5] and weight [5] (weight must be 2-dim [N, K])')
end)

-- random initialization --------------------------------------------------------

local function stats(t)
  local n = t:numel()
  local mean = t:sum() / n
  local var = t:norm() ^ 2 / n - mean * mean
  return mean, math.sqrt(var)
end

T.test('normal_: a pure function of (seed, name)', function()
  local a = lunar.empty({1000}):normal_(7, 'blocks.0.attn.qkv.weight', 0, 1)
  local b = lunar.empty({1000}):normal_(7, 'blocks.0.attn.qkv.weight', 0, 1)
  T.eq(a:totable(), b:totable(), 'same seed and name')
  local c = lunar.empty({1000}):normal_(7, 'blocks.1.attn.qkv.weight', 0, 1)
  local d = lunar.empty({1000}):normal_(8, 'blocks.0.attn.qkv.weight', 0, 1)
  local same_c, same_d = 0, 0
  for i = 1, 1000 do
    if a[i] == c[i] then same_c = same_c + 1 end
    if a[i] == d[i] then same_d = same_d + 1 end
  end
  T.eq(same_c, 0, 'another name gives other values')
  T.eq(same_d, 0, 'another seed gives other values')
  -- the name is the stream lunar.stream_id(name)
  local e = lunar.empty({1000}):normal_(7, lunar.stream_id('blocks.0.attn.qkv.weight'), 0, 1)
  T.eq(e:totable(), a:totable())
  -- an offset draws a slice of the same stream (a shard draws its own part)
  local part = lunar.empty({300}):normal_(7, 'blocks.0.attn.qkv.weight', 0, 1, 500)
  T.eq(part:totable(), a:narrow(1, 501, 300):clone():totable())
  -- mean and std
  local big = lunar.empty({20000}):normal_(1, 'big', 3, 2)
  local m, s = stats(big)
  T.near(m, 3, 0, 0.06); T.near(s, 2, 0.03)
  T.raises(function() lunar.empty({4}, 'i32'):normal_(1, 'x') end, 'normal_: needs a contiguous f32 tensor')
  T.raises(function() lunar.empty({4, 4}):transpose(1, 2):normal_(1, 'x') end, 'contiguous f32')
end)

T.test('uniform_: in [low, high) with the right mean', function()
  local u = lunar.empty({20000}):uniform_(3, 'u', -0.5, 1.5)
  T.truthy(u:min() >= -0.5 and u:max() < 1.5, tostring(u))
  local m, s = stats(u)
  T.near(m, 0.5, 0, 0.03)
  T.near(s, 2 / math.sqrt(12), 0.03)
  T.eq(lunar.empty({50}):uniform_(3, 'u', -0.5, 1.5):totable(), u:narrow(1, 1, 50):clone():totable())
end)

T.test('trunc_normal_: within [a, b] with the truncated std', function()
  -- N(0, 1) truncated to [-1, 1]: std = sqrt(1 - 2 phi(1) / (2 Phi(1) - 1)) = 0.5396
  local t = lunar.empty({20000}):trunc_normal_(5, 'pos_embed', 0, 1, -1, 1)
  T.truthy(t:min() >= -1 and t:max() <= 1, tostring(t))
  T.truthy(t:min() < -0.99 and t:max() > 0.99, 'reaches near both bounds')
  local m, s = stats(t)
  T.near(m, 0, 0, 0.02)
  T.near(s, 0.5396, 0.03)
  -- [-2, 2]: std 0.8796
  local w = lunar.empty({20000}):trunc_normal_(5, 'w', 0, 1, -2, 2)
  T.truthy(w:min() >= -2 and w:max() <= 2)
  local _, s2 = stats(w)
  T.near(s2, 0.8796, 0.03)
  -- absolute bounds (timm): std 0.02 in [-2, 2] is an untruncated N(0, 0.02)
  local v = lunar.empty({20000}):trunc_normal_(5, 'v', 0, 0.02, -2, 2)
  local _, s3 = stats(v)
  T.near(s3, 0.02, 0.03)
  -- off-center bounds: everything in [0.5, 3] for N(1, 1)
  local o = lunar.empty({5000}):trunc_normal_(9, 'o', 1, 1, 0.5, 3)
  T.truthy(o:min() >= 0.5 and o:max() <= 3, tostring(o))
  -- deterministic
  T.eq(lunar.empty({100}):trunc_normal_(5, 'pos_embed', 0, 1, -1, 1):totable(),
    t:narrow(1, 1, 100):clone():totable())
end)

-- safetensors (bindings/lio.c) ---------------------------------------------------

T.test('lunar.io: reader:read of a block copies its bytes exactly; ranges are checked', function()
  local path = os.tmpname()
  local w = lunar.tensor({{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}})
  local b16 = lunar.tensor({1.5, -0.25, 3}):to('bf16')
  lunar.io.save_safetensors(path, {w = w, b16 = b16})
  local r = lunar.io.open_safetensors(path)
  T.eq(r:read('w'):totable(), w:totable(), 'no ranges: the whole tensor')
  -- rows 2..3, columns 2..4 ({start (0-based), length} per dim): by hand {{6, 7, 8}, {10, 11, 12}}
  T.eq(r:read('w', {{1, 2}, {1, 3}}):totable(), {{6, 7, 8}, {10, 11, 12}})
  T.eq(r:read('w', {{0, 0}, {0, 4}}):shape(), {0, 4}, 'an empty block')
  local blk = r:read('b16', {{1, 2}})
  T.eq(blk:dtype(), 'bf16'); T.eq(blk:totable(), {-0.25, 3})
  T.raises(function() r:read('w', {{1, 3}, {0, 4}}) end, "tensor 'w': range 1 is not within dim 1 of size 3")
  T.raises(function() r:read('w', {{0, 1}, {-1, 2}}) end, 'range 2 is not within dim 2 of size 4')
  T.raises(function() r:read('w', {{0, 1}}) end, '1 ranges given for 2 dims')
  T.raises(function() r:read('w', {{0, 1}, {0, 'x'}}) end, 'range 2 is not {start, length}')
  T.raises(function() r:read('nope') end, "no tensor 'nope'")
  r:close()
  os.remove(path)
end)

T.test('lunar.io: safetensors round trip of dtypes, a strided tensor and metadata', function()
  local path = os.tmpname()
  local t = lunar.tensor({{1, 2, 3}, {4, 5, 6}})
  local tensors = {w = t, tr = t:transpose(1, 2), i = lunar.tensor({1, -2, 7}, 'i32'),
                   b = lunar.tensor({1.5, -0.25}):to('bf16'), s = lunar.tensor({3.25})}
  lunar.io.save_safetensors(path, tensors, {format = 'pt', note = 'a b'})
  local st, meta = lunar.io.load_safetensors(path)
  local names = {}
  for k in pairs(st) do names[#names + 1] = k end
  table.sort(names)
  T.eq(names, {'b', 'i', 's', 'tr', 'w'})
  T.eq(st.w:shape(), {2, 3}); T.eq(st.w:totable(), {{1, 2, 3}, {4, 5, 6}})
  T.eq(st.tr:shape(), {3, 2}); T.eq(st.tr:totable(), {{1, 4}, {2, 5}, {3, 6}}, 'written in logical order')
  T.eq(st.i:dtype(), 'i32'); T.eq(st.i:totable(), {1, -2, 7})
  T.eq(st.b:dtype(), 'bf16'); T.eq(st.b:totable(), {1.5, -0.25})
  T.eq(st.s:totable(), {3.25})
  T.eq(meta, {format = 'pt', note = 'a b'})
  -- loaded tensors are copies: writing them does not touch the file's next load
  st.w[1][1] = 100
  T.eq(lunar.io.load_safetensors(path).w[1][1], 1)
  -- no metadata
  lunar.io.save_safetensors(path, {x = lunar.zeros({2})})
  local st2, meta2 = lunar.io.load_safetensors(path)
  T.eq(st2.x:totable(), {0, 0}); T.eq(next(meta2), nil)
  -- errors name the file
  T.raises(function() lunar.io.save_safetensors(path, {w = t}, {n = 3}) end, 'metadata values must be strings')
  T.raises(function() lunar.io.save_safetensors(path, {t}) end, 'tensor names must be strings')
  -- a numeric metadata key is an error naming the key (it was converted in place during lua_next)
  for _, meta in ipairs({{'a'}, {[1] = 'x', b = 'y'}, {[2.5] = 'v'}, {format = 'pt', [7] = 'seven'}}) do
    local k = next(meta)
    while type(k) == 'string' do k = next(meta, k) end
    T.raises(function() lunar.io.save_safetensors(path, {w = t}, meta) end,
      path .. ': metadata keys must be strings, got the number key ' .. tostring(k))
  end
  T.raises(function() lunar.io.save_safetensors(path, {w = t}, {[true] = 'v'}) end, 'got the boolean key true')
  T.raises(function() lunar.io.save_safetensors(path, {w = t}, {n = 3}) end, "key 'n' is a number")
  T.raises(function() lunar.io.save_safetensors(path, {[1.5] = t}) end, 'tensor names must be strings, got the number key 1.5')
  T.raises(function() lunar.io.save_safetensors(path, {w = 3}) end, 'tensor')
  -- a refused save writes nothing: the last good file is still there
  lunar.io.save_safetensors(path, {x = lunar.ones({2})}, {ok = 'yes'})
  pcall(lunar.io.save_safetensors, path, {x = lunar.zeros({2})}, {[1] = 'bad'})
  local st3, meta3 = lunar.io.load_safetensors(path)
  T.eq(st3.x:totable(), {1, 1}); T.eq(meta3, {ok = 'yes'})
  local f = assert(io.open(path, 'wb')); f:write('garbage'); f:close()
  T.raises(function() lunar.io.load_safetensors(path) end, path)
  os.remove(path)
  T.raises(function() lunar.io.load_safetensors(path) end, 'cannot open ' .. path)
  T.raises(function() lunar.io.save_safetensors('/nonexistent-dir/x.safetensors', {w = t}) end,
    '/nonexistent-dir/x.safetensors')
end)

T.run()
