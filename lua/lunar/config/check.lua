--- lunar.config.check: checks config values against the schema
-- (lunar.schema): types, enums, bounds, unknown keys with a "did you mean",
-- defaults filled in, derived keys and the checks across keys. Every error is
-- raised as "WHERE: message" with lunar.error(msg) (a user error: printed
-- without a traceback), WHERE a file or "command line".
local schema = require('lunar.schema')
local text = require('lunar.config.text')

local M = {}

local is_dict, sorted_names, default_of = schema.is_dict, schema.sorted_names, schema.default_of
local ROOT = schema.root
local compact, describe, fmt_number, sorted_keys = text.compact, text.describe, text.fmt_number, text.sorted_keys

-- ---------------------------------------------------------------------------
-- did you mean

--- Optimal-string-alignment edit distance (a transposition costs 1), case-insensitive.
local function distance(a, b)
  a, b = a:lower(), b:lower()
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    local ai = a:byte(i)
    for j = 1, lb do
      local cost = (ai == b:byte(j)) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and ai == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end

--- The candidate nearest to name, or nil when none is near enough.
local function nearest(name, candidates)
  local best, best_d
  local limit = math.min(3, 1 + #name // 5)
  for _, c in ipairs(candidates) do
    local d = distance(name, c)
    if d <= limit and 2 * d < #name and (not best_d or d < best_d or (d == best_d and c < best)) then
      best, best_d = c, d
    end
  end
  return best
end

--- "unknown config key 'parallel.pipline' (did you mean 'parallel.pipeline'?)"
local function unknown_key(dict_entry, name)
  local prefix = dict_entry.key == '' and '' or dict_entry.key .. '.'
  local msg = string.format("unknown config key '%s%s'", prefix, tostring(name))
  local best = type(name) == 'string' and nearest(name, sorted_names(dict_entry.fields))
  if best then msg = msg .. string.format(" (did you mean '%s%s'?)", prefix, best) end
  return msg
end

local function fail(where, msg)
  lunar.error(where .. ': ' .. msg)
end

-- ---------------------------------------------------------------------------
-- checking values against the schema

local ARTICLE = {
  integer = 'an integer', number = 'a number', string = 'a string',
  boolean = 'a boolean', table = 'a table', ['function'] = 'a function',
  size = "a size in bytes (an integer, or a string like '2GiB', '512MiB')",
}

--- Checks a scalar (or a list item) of type `ty` against entry `e`'s enum,
-- bounds and check; returns it normalized (an integral float becomes an integer).
local function check_scalar(v, ty, e, key, where)
  local ok
  local function is(alt)
    if alt == 'integer' then
      if math.type(v) == 'float' and math.tointeger(v) then v = math.tointeger(v) end
      return math.type(v) == 'integer'
    elseif alt == 'number' then
      return type(v) == 'number' and v == v
    elseif alt == 'size' then        -- bytes: an integer, or a string like '2GiB' (lunar.memory.parse_bytes)
      local n = require('lunar.memory').parse_bytes(v)
      if n ~= nil then v = n end
      return n ~= nil
    end
    return type(v) == alt
  end
  for alt in ty:gmatch('[^|]+') do     -- one type, or alternatives: 'string|function'
    ok = ok or is(alt)
  end
  if not ok then
    local what = ARTICLE[ty] or ty:gsub('[^|]+', function(a) return ARTICLE[a] or a end):gsub('|', ' or ')
    fail(where, string.format("config key '%s' must be %s, got %s", key, what, describe(v)))
  end
  if e.enum then
    local found = false
    for _, allowed in ipairs(e.enum) do
      if v == allowed then found = true; break end
    end
    if not found then
      local vals, strs = {}, {}
      for i, allowed in ipairs(e.enum) do
        vals[i] = compact(allowed):gsub('^"(.*)"$', "'%1'")
        if type(allowed) == 'string' then strs[#strs + 1] = allowed end
      end
      local msg = string.format("config key '%s' must be one of %s, got %s",
        key, table.concat(vals, ', '), describe(v))
      local best = type(v) == 'string' and nearest(v, strs)
      if best then msg = msg .. string.format(" (did you mean '%s'?)", best) end
      fail(where, msg)
    end
  end
  if type(v) == 'number' then
    if e.min and not (v > e.min or (v == e.min and not e.min_exclusive)) then
      fail(where, string.format("config key '%s' must be %s %s, got %s", key,
        e.min_exclusive and '>' or '>=', fmt_number(e.min), fmt_number(v)))
    end
    if e.max and not (v < e.max or (v == e.max and not e.max_exclusive)) then
      fail(where, string.format("config key '%s' must be %s %s, got %s", key,
        e.max_exclusive and '<' or '<=', fmt_number(e.max), fmt_number(v)))
    end
  end
  if e.check then
    local problem = e.check(v)
    if problem then
      fail(where, string.format("config key '%s' %s, got %s", key, problem, describe(v)))
    end
  end
  return v
end

local check_value

--- Checks a dict in place: no unknown or positional keys, every field checked
-- and normalized, missing fields filled with their defaults.
local function check_dict(t, e, where)
  for k in pairs(t) do
    if type(k) ~= 'string' then
      local what = e.key == '' and 'the config' or string.format("config key '%s'", e.key)
      fail(where, string.format("%s has a positional entry [%s]; expected named fields (%s)",
        what, compact(k), table.concat(sorted_names(e.fields), ', ')))
    end
  end
  for _, k in ipairs(sorted_keys(t)) do
    if not e.fields[k] then fail(where, unknown_key(e, k)) end
  end
  for _, name in ipairs(sorted_names(e.fields)) do
    t[name] = check_value(t[name], e.fields[name], where)
  end
  return t
end

local function check_list(t, e, where)
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= 'integer' or k < 1 or k > n then
      fail(where, string.format("config key '%s' must be a list of %ss, got %s",
        e.key, e.items, describe(t)))
    end
  end
  for i = 1, n do
    t[i] = check_scalar(t[i], e.items, e, string.format('%s[%d]', e.key, i), where)
  end
  return t
end

--- Checks one value against its entry; returns the normalized value (nil: the default).
check_value = function(v, e, where)
  if e.parse and v ~= nil then
    local r, problem = e.parse(v)
    if problem then fail(where, string.format("config key '%s' %s", e.key, problem)) end
    return r
  end
  if v == nil then
    if not is_dict(e) then return default_of(e) end
    v = {}
  end
  if e.type == 'table' then
    if type(v) ~= 'table' then
      local what = e.items and ('a list of ' .. e.items .. 's') or 'a table'
      fail(where, string.format("config key '%s' must be %s, got %s", e.key, what, describe(v)))
    end
    if e.fields then return check_dict(v, e, where) end
    if e.items then return check_list(v, e, where) end
    return v
  end
  return check_scalar(v, e.type, e, e.key, where)
end

--- Fills the missing fields of a dict value (recursively) with their defaults.
local function fill_defaults(t, e)
  for name, f in pairs(e.fields) do
    if t[name] == nil then
      t[name] = default_of(f)
    elseif is_dict(f) and type(t[name]) == 'table' then
      fill_defaults(t[name], f)
    end
  end
end

--- Sets the derived keys still unset, requires the others to agree with
-- their derivation, and runs the checks across keys (schema.checks).
local function derive_and_check(values, where)
  for _, name in ipairs(sorted_names(ROOT.fields)) do
    local e = ROOT.fields[name]
    if e.derive then
      local want = check_value(e.derive(values), e, where)
      if values[name] == nil then
        values[name] = want
      elseif values[name] ~= want then
        fail(where, string.format("config key '%s' is %s, but %s = %s; leave it unset to derive it",
          name, compact(values[name]), e.derive_doc or 'its derivation', compact(want)))
      end
    end
  end
  for _, chk in ipairs(schema.checks) do
    local problem = chk(values)
    if problem then
      fail(where, string.format("config key '%s' %s", problem[1], problem[2]))
    end
  end
end

M.fail, M.unknown_key, M.ARTICLE = fail, unknown_key, ARTICLE
M.check_value, M.check_dict, M.fill_defaults, M.derive_and_check = check_value, check_dict, fill_defaults, derive_and_check
return M
