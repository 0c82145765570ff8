-- Tests of lunar.json (bindings/ljson.c): JSON on cJSON.
--   - numbers round-trip exactly and keep their math.type: the expected texts
--     are worked out by hand below (the shortest of %.15g / %.16g / %.17g
--     that reads back, as the binding's doc says), and 2000 doubles from
--     random bit patterns must satisfy string.format('%.17g') identity
--     (17 significant digits identify every double)
--   - strings: escapes, UTF-8 bytes, \u escapes and surrogate pairs
--   - tables: arrays for keys 1..n, {} for the empty table, objects with keys
--     in byte order, json.null
--   - errors: NaN / infinity, non-string keys, NUL bytes, functions, nesting
--     past 1000 levels, invalid JSON with its line, column and byte
--   build/lunar tests/lua/test_json.lua
local T = require('harness')
local json = require('lunar.json')

--- Encodes v, checks the text, decodes it and returns the value read back.
local function round(v, text)
  local s = json.encode(v)
  if text then T.eq(s, text, 'the JSON text') end
  return json.decode(s)
end

local function bits(x) return string.pack('<d', x) end

T.test("require('lunar.json') is lunar.json; null is one sentinel", function()
  T.truthy(json == lunar.json, 'the same table')
  T.eq(type(json.null), 'userdata')
  T.truthy(json.decode('null') == json.null, 'null decodes to json.null')
  T.eq(json.encode(json.null), 'null')
  T.eq(json.encode(nil), 'null')
  T.eq(json.encode(true), 'true'); T.eq(json.decode('false'), false)
end)

T.test('floats: the shortest text that reads back, marked as a float', function()
  -- 0.1: '%.15g' gives "0.1", and strtod("0.1") is the double nearest 1/10,
  -- which the literal 0.1 is too
  local v = round(0.1, '0.1'); T.eq(math.type(v), 'float'); T.truthy(v == 0.1)
  -- 1/3 = 0.333333333333333314829616256247...: 15 digits read back 3.1e-16
  -- off (more than half the spacing 2^-54 = 5.6e-17); 16 digits,
  -- 0.3333333333333333, are 1.5e-17 off: the same double
  T.truthy(round(1 / 3, '0.3333333333333333') == 1 / 3)
  -- 0.1 + 0.2 = 0.3000000000000000444...: '%.15g' and '%.16g' both give
  -- "0.3" (another double), so 17 digits (cJSON's own printer writes "0.3")
  T.truthy(round(0.1 + 0.2, '0.30000000000000004') == 0.1 + 0.2)
  -- 1e300: '%.15g' is "1e+300", strtod gives the double nearest 10^300
  T.truthy(round(1e300, '1e+300') == 1e300)
  -- 5e-324 = 2^-1074, the smallest subnormal 4.9406564584124654e-324: the
  -- 15 digits 4.94065645841247e-324 lie within half a step (2.5e-324) of it
  v = round(5e-324, '4.94065645841247e-324')
  T.truthy(v == 5e-324 and v > 0, 'the smallest subnormal')
  -- integral floats get '.0', so they decode as floats
  v = round(2.0, '2.0'); T.eq(math.type(v), 'float'); T.truthy(v == 2)
  -- 2^53 + 1 has no double: 2^53 + 1.0 is 2^53 = 9007199254740992
  v = round(2.0 ^ 53 + 1, '9007199254740992.0'); T.eq(math.type(v), 'float')
  -- -0.0: '%.15g' keeps the sign, "-0"; it must come back as -0.0 (1/x = -inf)
  v = round(-0.0, '-0.0'); T.eq(math.type(v), 'float'); T.truthy(1 / v == -math.huge, 'the sign of zero')
  T.truthy(round(-1.5e-7, '-1.5e-07') == -1.5e-7)
end)

T.test('integers: exact decimal digits, read back as integers', function()
  -- 2^53 + 1 = 9007199254740993 is not a double; as a Lua integer it stays
  local big = math.tointeger(2 ^ 53) + 1
  local v = round(big, '9007199254740993'); T.eq(math.type(v), 'integer'); T.truthy(v == big)
  v = round(math.mininteger, '-9223372036854775808'); T.truthy(v == math.mininteger and math.type(v) == 'integer')
  v = round(math.maxinteger, '9223372036854775807'); T.truthy(v == math.maxinteger and math.type(v) == 'integer')
  -- a SEED >= 1e14 (lua-cjson kept 14 digits)
  T.truthy(round(123456789012345678, '123456789012345678') == 123456789012345678)
  v = round(2, '2'); T.eq(math.type(v), 'integer')
  -- beyond int64, or with a fraction / exponent: a float
  v = json.decode('9223372036854775808')   -- 2^63
  T.eq(math.type(v), 'float'); T.truthy(v == 2.0 ^ 63)
  v = json.decode('1e2'); T.eq(math.type(v), 'float'); T.truthy(v == 100)
  v = json.decode('-0'); T.eq(math.type(v), 'integer'); T.truthy(v == 0)
end)

T.test('2000 doubles from random bit patterns read back bit for bit', function()
  -- a 64-bit LCG (Knuth's MMIX constants) for the patterns; NaN and
  -- infinities (exponent all ones) are skipped
  local x, n = 12345, 0
  for _ = 1, 4000 do
    x = x * 6364136223846793005 + 1442695040888963407
    local d = string.unpack('<d', string.pack('<i8', x))
    if d == d and d ~= math.huge and d ~= -math.huge then
      local back = json.decode(json.encode(d))
      -- %.17g identifies a double: the texts are equal only for the same value
      T.eq(string.format('%.17g', back), string.format('%.17g', d))
      T.truthy(bits(back) == bits(d), 'the bits of ' .. string.format('%.17g', d))
      n = n + 1
      if n == 2000 then break end
    end
  end
  T.eq(n, 2000)
end)

T.test('strings: escapes, UTF-8 and \\u escapes', function()
  -- cJSON escapes '"', '\', the named controls and other bytes < 0x20 as
  -- \u00xx (lower-case hex); '/' and bytes >= 0x80 are copied
  local s = '"\\\n\t\r\b\f\1\31/ é'
  T.eq(json.encode(s), [["\"\\\n\t\r\b\f\u0001\u001f/ é"]])
  T.eq(round(s), s)
  T.eq(json.decode('"\\u00e9"'), '\xC3\xA9')                 -- U+00E9 in UTF-8
  T.eq(json.decode('"\\ud83d\\ude00"'), '\xF0\x9F\x98\x80')   -- U+1F600, a surrogate pair
  T.eq(round('日本語'), '日本語')
  T.eq(round(''), '')
end)

T.test('tables: arrays, {} for empty, objects with sorted keys, nesting', function()
  T.eq(json.encode({}), '{}')
  T.eq(json.encode({1, 2.5, 'x', true}), '[1,2.5,"x",true]')
  -- byte order: 'B' (0x42) < '_' (0x5F) < 'a' (0x61) < 'b'
  T.eq(json.encode({b = 1, a = 2, _ = 3, B = 4}), '{"B":4,"_":3,"a":2,"b":1}')
  local v = {b = {1, {c = true, d = {}}}, a = json.null, e = {{}, {1}}}
  local back = round(v, '{"a":null,"b":[1,{"c":true,"d":{}}],"e":[{},[1]]}')
  T.truthy(back.a == json.null)
  T.eq(back.b, {1, {c = true, d = {}}}); T.eq(back.e, {{}, {1}})
  -- null keeps an array's length
  back = json.decode('[1, null, 3]')
  T.eq(#back, 3); T.truthy(back[2] == json.null)
  -- whitespace and a repeated key (the last wins)
  T.eq(json.decode(' {\n "a" : [ 1 , 2 ] ,\t"a": 3 }\r\n'), {a = 3})
  -- 1000 levels (cJSON's nesting limit) both ways
  local deep = {}
  for _ = 2, 1000 do deep = {deep} end
  local text = json.encode(deep)
  T.eq(text, string.rep('[', 999) .. '{}' .. string.rep(']', 999))
  T.eq(json.decode(string.rep('[', 1000) .. string.rep(']', 1000))[1][1][1] ~= nil, true)
  -- equal tables give equal text whatever their insertion order
  local t1, t2 = {}, {}
  for i = 1, 50 do t1['k' .. i] = i end
  for i = 50, 1, -1 do t2['k' .. i] = i end
  T.eq(json.encode(t1), json.encode(t2))
end)

T.test('encode errors name the place and the problem', function()
  T.raises(function() json.encode({lr = 0 / 0}) end, '$.lr: NaN is not a JSON number')
  T.raises(function() json.encode({x = {1, math.huge}}) end, '$.x[2]: inf is not a JSON number')
  T.raises(function() json.encode(-math.huge) end, '$: -inf is not a JSON number')
  T.raises(function() json.encode({a = {[1] = 'x', [3] = 'y'}}) end, '$.a: key 1 (a number) is not a string')
  T.raises(function() json.encode({[true] = 1}) end, 'key true (a boolean) is not a string')
  T.raises(function() json.encode({1, 2, k = 3}) end, 'is not a string')
  T.raises(function() json.encode({f = print}) end, '$.f: a function has no JSON form')
  T.raises(function() json.encode({'a\0b'}) end, '$[1]: a string holding a NUL byte')
  T.raises(function() json.encode({['a\0b'] = 1}) end, 'holds a NUL byte')
  local t = {}; t.self = t
  T.raises(function() json.encode(t) end, 'tables nested deeper than 1000 levels')
  local deep = {}
  for _ = 1, 1001 do deep = {deep} end
  T.raises(function() json.encode(deep) end, 'nested deeper than 1000 levels')
  T.raises(function() json.encode() end, 'value expected')
end)

T.test('decode errors give line, column and byte', function()
  -- '{"a": tru}': the 't' is byte 7
  T.raises(function() json.decode('{"a": tru}') end, "invalid JSON at line 1, column 7 (byte 7) near 'tru}'")
  -- '[1,\n 01]': '0' is byte 6, line 2 column 2; JSON forbids leading zeros
  T.raises(function() json.decode('[1,\n 01]') end, 'invalid number at line 2, column 2 (byte 6)')
  T.raises(function() json.decode('[1.]') end, 'invalid number at line 1, column 2')
  T.raises(function() json.decode('[1] x') end, 'text after the JSON value at line 1, column 5')
  T.raises(function() json.decode(' \n ') end, 'no JSON value')
  T.raises(function() json.decode('["a\\u0000"]') end, '\\u0000 in a string')
  T.raises(function() json.decode('["a\1"]') end, 'a control byte unescaped in a string at line 1, column 4')
  T.raises(function() json.decode('[1e400]') end, 'a number beyond the range of a double at line 1, column 2')
  T.raises(function() json.decode('{"a" 1}') end, 'invalid JSON at line 1')
  T.raises(function() json.decode('[NaN]') end, 'invalid JSON')
  T.raises(function() json.decode('[1, 2') end, 'invalid JSON')
  T.raises(function() json.decode(string.rep('[', 1001) .. string.rep(']', 1001)) end,
    'nested deeper than 1000 levels at line 1, column 1001')
  T.raises(function() json.decode({}) end, 'string expected')
end)

T.run()
