--- A tiny test harness for Lunar's Lua tests.
--
--     local T = require('harness')
--     T.test('adds', function()
--       T.eq(1 + 1, 2)
--       T.near(0.1 + 0.2, 0.3, 1e-12)
--       T.raises(function() error('boom') end, 'boom')
--     end)
--     T.run()   -- prints "  ok adds", then "1 passed, 0 failed, 0 skipped"; exits 0 or 1
--
-- Assertions take the actual value first and the expected one second. A failed
-- assertion reports the test file's line; any other error reports its message
-- and a traceback. `T.run` runs the tests in the order they were registered;
-- LUNAR_TEST_FILTER='part,other part' runs only the tests whose name contains
-- one of the comma-separated parts (plain text). The script's own arguments are
-- left alone (they may be a config or key=value overrides).
-- @module harness
local T = {}

local tests = {}
local FAILURE = { __tostring = function(f) return f.msg end }   -- marks an assertion failure
local SKIP = {}      -- metatable marking a skipped test

local HARNESS_SOURCE = debug.getinfo(1, 'S').source

--- "file:line" of the first caller outside this file.
local function where()
  for level = 3, 50 do
    local info = debug.getinfo(level, 'Sl')
    if not info then break end
    if info.source ~= HARNESS_SOURCE and info.currentline and info.currentline > 0 then
      return info.short_src .. ':' .. info.currentline
    end
  end
  return '?'
end

local function raise(msg, user_msg)
  if user_msg ~= nil then msg = tostring(user_msg) .. ': ' .. msg end
  error(setmetatable({ msg = msg, where = where() }, FAILURE), 0)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == 'number' or ta == 'string' then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

--- A compact rendering of a value for failure messages.
local function show(v, depth)
  depth = depth or 0
  local tv = type(v)
  if tv == 'string' then return string.format('%q', v) end
  if math.type(v) == 'float' then
    local s = string.format('%.17g', v)
    if not s:find('[.eEna]') then s = s .. '.0' end
    return s
  end
  if tv ~= 'table' or getmetatable(v) and getmetatable(v).__tostring then return tostring(v) end
  if depth > 2 then return '{...}' end
  local parts = {}
  for i, k in ipairs(sorted_keys(v)) do
    if i > 8 then parts[#parts + 1] = '...'; break end
    local ks = type(k) == 'string' and k:match('^[%a_][%w_]*$') and k or '[' .. show(k, 3) .. ']'
    parts[#parts + 1] = ks .. '=' .. show(v[k], depth + 1)
  end
  return '{' .. table.concat(parts, ', ') .. '}'
end
T.show = show

--- Deep comparison; returns nil when equal, else the path of the first
-- difference and the two values found there.
local function diff(a, b, path, seen)
  if rawequal(a, b) then return nil end
  if type(a) ~= 'table' or type(b) ~= 'table' then
    if a == b then return nil end
    return path, a, b
  end
  seen = seen or {}
  if seen[a] == b then return nil end
  seen[a] = b
  for _, k in ipairs(sorted_keys(a)) do
    local p, x, y = diff(a[k], b[k], path .. '[' .. show(k, 3) .. ']', seen)
    if p then return p, x, y end
  end
  for _, k in ipairs(sorted_keys(b)) do
    if a[k] == nil then return path .. '[' .. show(k, 3) .. ']', nil, b[k] end
  end
  return nil
end

--- Asserts that two values are equal: `==` for non-tables, key by key
-- (recursively) for tables. Numbers compare by value (1 == 1.0).
-- @param a the actual value
-- @param b the expected value
-- @tparam[opt] string msg prefix of the failure message
function T.eq(a, b, msg)
  local p, x, y = diff(a, b, '')
  if p == nil then return end
  if p == '' then
    raise(string.format('expected %s, got %s', show(b), show(a)), msg)
  end
  raise(string.format('at %s: expected %s, got %s', p, show(y), show(x)), msg)
end

local function is_near(a, b, rtol, atol)
  if a ~= a or b ~= b then return false end              -- NaN is never near
  if a == b then return true end                         -- equal infinities too
  return math.abs(a - b) <= atol + rtol * math.abs(b)
end

--- The largest |a - b| over the elements of two tensors of the same size (any
-- strides; read on the host).
function T.max_abs_diff(a, b)
  local va, vb = a:contiguous():view(-1):totable(), b:contiguous():view(-1):totable()
  local m = 0
  for i = 1, #vb do m = math.max(m, math.abs(va[i] - vb[i])) end
  return m
end

--- Asserts |a - b| <= atol + rtol * |b| (numpy.allclose's rule; NaN fails).
-- a and b may be numbers or tables of numbers (compared element by element,
-- recursively, with the same keys).
-- @param a the actual value
-- @param b the expected value
-- @tparam[opt=1e-6] number rtol relative tolerance
-- @tparam[opt=0] number atol absolute tolerance
-- @tparam[opt] string msg prefix of the failure message
function T.near(a, b, rtol, atol, msg)
  rtol, atol = rtol or 1e-6, atol or 0
  local function walk(x, y, path)
    if type(x) == 'table' and type(y) == 'table' then
      for _, k in ipairs(sorted_keys(y)) do walk(x[k], y[k], path .. '[' .. show(k, 3) .. ']') end
      for k in pairs(x) do
        if y[k] == nil then raise(string.format('at %s[%s]: unexpected value %s', path, show(k, 3), show(x[k])), msg) end
      end
      return
    end
    if type(x) ~= 'number' or type(y) ~= 'number' then
      raise(string.format('%sexpected a number near %s, got %s',
        path ~= '' and 'at ' .. path .. ': ' or '', show(y), show(x)), msg)
    end
    if not is_near(x, y, rtol, atol) then
      raise(string.format('%sexpected %s, got %s (|diff| %.3g > atol %g + rtol %g * |expected|)',
        path ~= '' and 'at ' .. path .. ': ' or '', show(y), show(x), math.abs(x - y), atol, rtol), msg)
    end
  end
  walk(a, b, '')
end

--- Asserts that v is truthy (not nil or false).
-- @tparam[opt] string msg the failure message
-- @return v
function T.truthy(v, msg)
  if not v then raise('expected a truthy value, got ' .. show(v), msg) end
  return v
end

--- Asserts that v is nil or false.
-- @tparam[opt] string msg the failure message
function T.falsy(v, msg)
  if v then raise('expected nil or false, got ' .. show(v), msg) end
end

--- Asserts that fn raises an error whose message matches pattern.
-- The pattern is a Lua pattern; when it does not match (or is not a valid
-- pattern) it is also tried as plain text, so `T.raises(f, "key 'a.b'")` works.
-- @tparam function fn called with no arguments
-- @tparam[opt] string pattern what the message must contain (nil: any error)
-- @treturn string the error message (tostring of the error value)
function T.raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then
    raise('expected an error' .. (pattern and (' matching ' .. show(pattern)) or '') .. ', got none', msg)
  end
  local text = tostring(err)
  if pattern ~= nil then
    local pok, found = pcall(string.find, text, pattern)
    if not (pok and found) and not text:find(pattern, 1, true) then
      raise(string.format('expected an error matching %s, got %s', show(pattern), show(text)), msg)
    end
  end
  return text
end

--- The elements of a tensor (any device, any float dtype) as a flat Lua
-- array of numbers, read as f32 on the CPU.
local function flat_values(t)
  t = t:to('cpu'):to('f32'):contiguous()
  if t:dim() == 0 then return {t:item()} end
  return t:view(-1):totable()
end

local function is_finite(v) return v == v and v ~= math.huge and v ~= -math.huge end

--- Relative error of a tensor against a reference: max |a - b| / max |b|
-- over all elements (0 when both are zero), computed element by element in
-- Lua (no tensor reduction, so no NaN can be skipped). NaN when any element
-- of either is NaN or infinite, or the shapes differ, so `rel_err(a, b) < tol`
-- and `rel_err(a, b) > tol` both fail then. Either may live on any device and
-- have any float dtype; both are compared as f32 on the CPU.
-- @tparam userdata a the tensor under test
-- @tparam userdata b the reference, same number of elements
-- @treturn number
function T.rel_err(a, b)
  local av, bv = flat_values(a), flat_values(b)
  if #av ~= #bv then return 0 / 0 end
  local dmax, bmax = 0, 0
  for i = 1, #bv do
    local x, y = av[i], bv[i]
    if not (is_finite(x) and is_finite(y)) then return 0 / 0 end
    dmax = math.max(dmax, math.abs(x - y))
    bmax = math.max(bmax, math.abs(y))
  end
  return dmax / math.max(bmax, 1e-30)
end

--- Compares a tensor with a reference element by element, as
-- torch.testing.assert_close does: |a - b| <= atol + rtol * |b| for every
-- element; an infinite reference element must be matched exactly; a NaN on
-- either side fails (equal_nan = False), so does an infinity or a NaN in `a`
-- where `b` is finite. Computed in Lua over the elements (no tensor
-- reduction is trusted to see NaN).
-- @tparam userdata a the tensor under test (any device, any float dtype)
-- @tparam userdata b the reference, same number of elements
-- @tparam number rtol relative tolerance
-- @tparam number atol absolute tolerance
-- @treturn boolean whether every element is close
-- @treturn table the worst element: {index = (1-based, flat), got, want,
--   ratio = |a - b| / (atol + rtol * |b|) (inf where non-finite), bad = the
--   number of elements off, n = the number of elements}
function T.compare(a, b, rtol, atol)
  assert(type(rtol) == 'number' and type(atol) == 'number', 'T.compare: rtol and atol must be numbers')
  local av, bv = flat_values(a), flat_values(b)
  if #av ~= #bv then
    return false, {index = 0, got = #av, want = #bv, ratio = math.huge, bad = math.max(#av, #bv), n = #bv,
      size_mismatch = true}
  end
  local worst = {index = 0, ratio = -1, bad = 0, n = #bv}
  for i = 1, #bv do
    local x, y = av[i], bv[i]
    local ratio
    if x ~= x or y ~= y then ratio = math.huge
    elseif not is_finite(y) then ratio = (x == y) and 0 or math.huge
    elseif not is_finite(x) then ratio = math.huge
    else
      local bound = atol + rtol * math.abs(y)
      local d = math.abs(x - y)
      ratio = d == 0 and 0 or (bound > 0 and d / bound or math.huge)
    end
    if ratio > 1 then worst.bad = worst.bad + 1 end
    if ratio > worst.ratio then worst.index, worst.got, worst.want, worst.ratio = i, x, y, ratio end
  end
  return worst.bad == 0, worst
end

--- Trains `steps` batches with an engine (lunar.engine) over a loader:
-- engine:train_step on each (a new epoch when the loader runs out, from
-- epoch 0). Returns the losses, one per batch.
function T.train_steps(eng, ld, steps)
  local losses, epoch = {}, 0
  ld:set_epoch(0)
  for _ = 1, steps do
    local x, y = ld:next()
    if not x then
      epoch = epoch + 1
      ld:set_epoch(epoch)
      x, y = ld:next()
    end
    losses[#losses + 1] = eng:train_step(x, y)
    x:free(); y:free()
  end
  return losses
end

--- Fails the running test unless every element of `a` is within
-- atol + rtol * |b| of the reference `b` (T.compare: torch.testing.assert_close's
-- rule; NaN or infinity where b is finite fails). The message names the
-- tensor, how many elements are off, and the worst one (flat index, values,
-- tolerances).
-- @tparam string name the tensor's name, for the message
-- @tparam userdata a the tensor under test
-- @tparam userdata b the reference
-- @tparam table tol {rtol = number, atol = number}, both required
-- @tparam[opt] string where appended to the message (e.g. ' on cuda:0')
-- @treturn table the worst element (T.compare's second result)
function T.check_close(name, a, b, tol, where)
  assert(type(tol) == 'table' and type(tol.rtol) == 'number' and type(tol.atol) == 'number',
    'T.check_close: tol must be {rtol = number, atol = number}')
  local ok, w = T.compare(a, b, tol.rtol, tol.atol)
  if not ok then
    if w.size_mismatch then
      raise(string.format('%s: %d elements, the reference has %d%s', name, w.got, w.want, where or ''))
    end
    raise(string.format('%s: %d of %d elements not within atol %g + rtol %g * |ref|%s; worst element %d: got %s, ' ..
      'want %s (|diff| %.3g)', name, w.bad, w.n, tol.atol, tol.rtol, where or '', w.index, show(w.got),
      show(w.want), math.abs(w.got - w.want)))
  end
  return w
end

--- The full parameter names of a lunar.nn module, in order, joined by spaces.
function T.param_names(m)
  local t = {}
  for _, p in ipairs(m:parameters()) do t[#t + 1] = p.name end
  return table.concat(t, ' ')
end

--- Marks the running test as skipped (counted apart) and leaves it.
-- @tparam[opt] string reason shown after the test name
function T.skip(reason)
  error(setmetatable({ msg = reason or '' }, SKIP), 0)
end

--- Registers a test; tests run in registration order.
-- @tparam string name
-- @tparam function fn the test body
function T.test(name, fn)
  assert(type(name) == 'string', 'T.test: name must be a string')
  assert(type(fn) == 'function', 'T.test: fn must be a function')
  tests[#tests + 1] = { name = name, fn = fn }
end

local function selected(name, filters)
  if #filters == 0 then return true end
  for _, f in ipairs(filters) do
    if name:find(f, 1, true) then return true end
  end
  return false
end

--- Runs the registered tests and prints "  ok NAME" / "  FAIL NAME: MESSAGE"
-- (with a traceback for errors other than assertion failures), then the
-- closing line "N passed, N failed, N skipped".
-- @tparam[opt] table opts `{exit = false}` returns instead of exiting;
--   `{filter = {'name part', ...}}` replaces LUNAR_TEST_FILTER
-- @treturn integer,integer,integer passed, failed, skipped (when not exiting)
-- Exits the process with os.exit(failed == 0 and 0 or 1) unless opts.exit is false.
function T.run(opts)
  opts = opts or {}
  local filters = opts.filter
  if not filters then
    filters = {}
    for f in (os.getenv('LUNAR_TEST_FILTER') or ''):gmatch('[^,]+') do filters[#filters + 1] = f end
  end
  local passed, failed, skipped = 0, 0, 0
  for _, t in ipairs(tests) do
    if selected(t.name, filters) then
      local ok, err = xpcall(t.fn, function(e)
        local mt = getmetatable(e)
        if mt == FAILURE or mt == SKIP then return e end
        return { msg = tostring(e), trace = debug.traceback('', 2) }
      end)
      if ok then
        passed = passed + 1
        print('  ok ' .. t.name)
      elseif getmetatable(err) == SKIP then
        skipped = skipped + 1
        print('  skip ' .. t.name .. (err.msg ~= '' and (': ' .. err.msg) or ''))
      elseif getmetatable(err) == FAILURE then
        failed = failed + 1
        print(string.format('  FAIL %s: %s: %s', t.name, err.where, err.msg))
      else
        failed = failed + 1
        print(string.format('  FAIL %s: %s', t.name, err.msg))
        local trace = err.trace:gsub('^\n', ''):gsub('\n%s*%[C%]: in function \'xpcall\'.*$', '')
        print((trace:gsub('\n', '\n      '):gsub('^', '      ')))
      end
    end
  end
  print(string.format('%d passed, %d failed, %d skipped', passed, failed, skipped))
  io.stdout:flush()
  if opts.exit == false then return passed, failed, skipped end
  os.exit(failed == 0 and 0 or 1)
end

return T
