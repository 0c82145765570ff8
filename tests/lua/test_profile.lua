-- Tests of lua/lunar/profile.lua (the per-op timing hook of bench/step_breakdown.lua):
-- calls counted per op and category by hand, results passed through unchanged,
-- lunar.ops restored by stop, one session at a time.
--   build/lunar tests/lua/test_profile.lua
local T = require('harness')
local profile = require('lunar.profile')

T.test('counts each lunar.ops call, passes results through, restores lunar.ops', function()
  local add_before, ce_before = lunar.ops.add, lunar.ops.cross_entropy
  local p = profile.start()
  T.truthy(lunar.ops.add ~= add_before, 'add is wrapped while the session runs')
  local a, b = lunar.tensor({1, 2, 3}), lunar.tensor({10, 20, 30})
  local c = lunar.ops.add(a, b)                 -- 1 add
  lunar.ops.add_(c, a)                          -- 1 add_: c = 12, 24, 36
  lunar.ops.add_(c, a)                          -- 2 add_: c = 13, 26, 39
  local logits = lunar.tensor({{0, 0}})
  local loss = lunar.ops.cross_entropy(logits, lunar.tensor({1}, 'i32'), 0)   -- log 2 by hand
  local v = p:region('by hand', function(x, y) return x + y, 'second' end, 2, 3)
  local r = p:stop()
  T.eq(lunar.ops.add, add_before, 'add restored')
  T.eq(lunar.ops.cross_entropy, ce_before, 'cross_entropy restored')
  T.near(c[3], 39, 0, 0, 'the wrapped add_ computed')
  T.near(loss, math.log(2), 1e-6, 0, 'the wrapped cross_entropy returned its value')
  T.eq(v, 5, 'region returns fn results')
  T.eq(r.ops.add.calls, 1, 'add calls')
  T.eq(r.ops.add_.calls, 2, 'add_ calls')
  T.eq(r.categories['residual adds'].calls, 3, 'add and add_ are residual adds')
  T.eq(r.categories.loss.calls, 1, 'cross_entropy is loss')
  T.eq(r.regions['by hand'].calls, 1, 'region calls')
  T.truthy(r.ops.add_.seconds >= 0 and r.categories['residual adds'].seconds >= r.ops.add_.seconds,
    'category time sums its ops')
  T.eq(r.ops.linear, nil, 'ops never called are absent')
end)

T.test('one session at a time', function()
  local p = profile.start()
  T.raises(function() profile.start() end, 'already running')
  p:stop()
  local q = profile.start()   -- possible again after stop
  q:stop()
end)

T.test('median: odd and even counts by hand, the list left unsorted, empty is NaN', function()
  local t = {3, 1, 2}
  T.eq(profile.median(t), 2)
  T.eq(t, {3, 1, 2})
  T.eq(profile.median({4, 1, 3, 2}), 2.5)   -- (2 + 3) / 2
  local nan = profile.median({})
  T.truthy(nan ~= nan, 'NaN')
end)

T.run()
