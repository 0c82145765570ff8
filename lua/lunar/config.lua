--- Configs as code (Colossal-AI style): a config file is a Lua chunk and the
-- globals it sets are the config.
--
--     -- configs/vit_tiny.lua
--     include 'base.lua'                          -- relative to this file
--     HIDDEN_SIZE = 192
--     SEQ_LENGTH = (IMG_SIZE // PATCH_SIZE)^2 + 1 -- reads of keys already set work
--     parallel = { pipeline = 2, tensor = { mode = '1d', size = 2 } }
--     parallel.pipeline_schedule = 'gpipe'        -- dicts are filled with defaults on assignment
--     local n = 4                                 -- locals are helpers, not config
--
-- Resolution order: the schema defaults (lunar.schema), then the config file
-- (an `include`d base first, then the file that includes it), then the
-- command line overrides (`key=value`). Every key is checked against the
-- schema: an unknown key, an ill-typed value, a value outside its enum or
-- bounds is an error that names the key and the file (or "command line").
--
-- Overrides win, and they are in place before the file runs: the file reads
-- the overridden values and its own assignments to an overridden key are
-- ignored. So keys a config computes from others (`if DATASET == 'cifar10'
-- then IN_CHANS = 3 end`) follow the command line.
--
-- Errors are raised with `error(msg, 0)`: the message has no position prefix
-- of its own (a Lua error inside a config file keeps its "file:line:").
-- @module lunar.config
local schema = require('lunar.schema')

local config = {}

local deep_copy, is_dict, sorted_names = schema.deep_copy, schema.is_dict, schema.sorted_names
local default_of = schema.default_of
local ROOT = schema.root

local COMMAND_LINE = 'command line'

-- ---------------------------------------------------------------------------
-- formatting values

local RESERVED = {}
for w in ([[and break do else elseif end false for function goto if in local nil not
  or repeat return then true until while]]):gmatch('%a+') do RESERVED[w] = true end

local function is_identifier(s)
  return type(s) == 'string' and s:match('^[%a_][%w_]*$') ~= nil and not RESERVED[s]
end

--- A number as a Lua literal that reads back to the same value and subtype.
local function fmt_number(x)
  if math.type(x) == 'integer' then
    if x == math.mininteger then return '(-9223372036854775807 - 1)' end
    return string.format('%d', x)
  end
  if x ~= x then return '0/0' end
  if x == math.huge then return '1/0' end
  if x == -math.huge then return '-1/0' end
  local s
  for p = 1, 17 do
    s = string.format('%.' .. p .. 'g', x)
    if tonumber(s) == x then break end
  end
  if not s:find('[.eE]') then s = s .. '.0' end
  return s
end

local function quote(s)
  return (string.format('%q', s):gsub('\\\n', '\\n'))
end

-- Keys sorted: integers first (ascending), then strings, then anything else.
local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  local rank = function(k)
    if type(k) == 'number' then return 1 elseif type(k) == 'string' then return 2 end
    return 3
  end
  table.sort(keys, function(a, b)
    local ra, rb = rank(a), rank(b)
    if ra ~= rb then return ra < rb end
    if ra == 3 then return tostring(a) < tostring(b) end
    return a < b
  end)
  return keys
end

local function is_sequence(t, keys)
  for i, k in ipairs(keys) do
    if k ~= i then return false end
  end
  return true
end

--- A short one-line rendering of a value for error messages.
local function compact(v, depth)
  depth = depth or 0
  local tv = type(v)
  if tv == 'string' then return quote(v) end
  if tv == 'number' then return fmt_number(v) end
  if tv ~= 'table' then return tostring(v) end
  if depth > 1 then return '{...}' end
  local keys = sorted_keys(v)
  local seq = is_sequence(v, keys)
  local parts = {}
  for i, k in ipairs(keys) do
    if i > 6 then parts[#parts + 1] = '...'; break end
    local val = compact(v[k], depth + 1)
    if seq then parts[#parts + 1] = val
    elseif is_identifier(k) then parts[#parts + 1] = k .. ' = ' .. val
    else parts[#parts + 1] = '[' .. compact(k, 2) .. '] = ' .. val end
  end
  return '{' .. table.concat(parts, ', ') .. '}'
end

--- "string \"abc\"", "number 1.5", "table {1, 2}", "nil", ...
local function describe(v)
  local tv = type(v)
  if tv == 'nil' then return 'nil' end
  if tv == 'function' or tv == 'userdata' or tv == 'thread' then return tv end
  return tv .. ' ' .. compact(v)
end

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
  error(where .. ': ' .. msg, 0)
end

-- ---------------------------------------------------------------------------
-- checking values against the schema

local ARTICLE = {
  integer = 'an integer', number = 'a number', string = 'a string',
  boolean = 'a boolean', table = 'a table',
}

--- Checks a scalar (or a list item) of type `ty` against entry `e`'s enum,
-- bounds and check; returns it normalized (an integral float becomes an integer).
local function check_scalar(v, ty, e, key, where)
  local ok
  if ty == 'integer' then
    if math.type(v) == 'float' then v = math.tointeger(v) or v end
    ok = math.type(v) == 'integer'
  elseif ty == 'number' then
    ok = type(v) == 'number' and v == v
  else
    ok = type(v) == ty
  end
  if not ok then
    fail(where, string.format("config key '%s' must be %s, got %s", key, ARTICLE[ty], describe(v)))
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

--- Checks what a loaded config asks of this machine, which config.load does
-- not (a config is machine independent: `config show` reads a GPU recipe on a
-- laptop): device 'cuda' / 'cuda:N' needs that CUDA device (cuda:N with N
-- below the device count); precision = 'bf16' needs native bf16 kernels on
-- cfg.device (lunar.ops.bf16_supported: avx512_bf16 on the CPU, compute
-- capability 8.0 on CUDA). The training scripts call it before building
-- anything. Raises "config key 'device' is 'cuda', but <reason>" or "config
-- key 'precision' is 'bf16', but <reason>" (no position), else returns cfg.
-- @param cfg a config from config.load
function config.check_machine(cfg)
  local device = cfg.device or 'cpu'
  if device ~= 'cpu' then
    local ok, why = lunar.cuda.is_available()
    if not ok then
      error(string.format("config key 'device' is '%s', but no CUDA device is available (%s); use device = 'cpu' here",
        device, why), 0)
    end
    local n, count = tonumber(device:match('^cuda:(%d+)$')), lunar.cuda.device_count()
    if n and n >= count then
      error(string.format("config key 'device' is '%s', but this machine has %d CUDA device%s (cuda:0%s)", device,
        count, count == 1 and '' or 's', count > 1 and (' to cuda:' .. (count - 1)) or ''), 0)
    end
  end
  if cfg.precision == 'bf16' then
    local ok, why = lunar.ops.bf16_supported(cfg.device or 'cpu')
    if not ok then
      error(string.format("config key 'precision' is 'bf16', but %s; use precision = 'fp32' here", why), 0)
    end
  end
  return cfg
end

-- ---------------------------------------------------------------------------
-- overrides

--- The environment command-line values are evaluated in: math and string,
-- and reading any other name is an error (so a bare word becomes a string).
local function expr_env()
  local function copy(t) local c = {}; for k, v in pairs(t) do c[k] = v end; return c end
  return setmetatable({ math = copy(math), string = copy(string) }, {
    __index = function(_, k) error('unknown name ' .. tostring(k), 2) end,
    __newindex = function(_, k) error('cannot assign ' .. tostring(k), 2) end,
  })
end

local function eval_value(text)
  local f = load('return ' .. text, '=' .. COMMAND_LINE, 't', expr_env())
  if not f then return text end
  local r = table.pack(pcall(f))
  if not r[1] or r.n ~= 2 then return text end
  return r[2]
end

--- Parses command-line overrides.
-- Each string is `key=value`; key is a config key or a dotted path into a
-- dict (`parallel.tensor.size`). The value is a Lua expression evaluated with
-- only `math` and `string` visible (`2`, `1e-3`, `true`, `'1d'`,
-- `{pipeline=2, tensor={mode='1d', size=2}}`, `nil` for the default); text
-- that does not compile, fails to evaluate or gives other than one value
-- (`out.jsonl`, `metrics`, `cuda:0`, `2,2`) is taken as a plain string.
-- @tparam[opt] {string,...} list the override strings, in command-line order
-- @treturn {table,...} one `{key=, path={...}, text=, value=}` per override, in order
-- @raise "command line: malformed override 'X' (expected key=value)" for a string
--   without '=' or a key that is not a (dotted) name; "key 'DEPTH' given twice on
--   the command line"; "command line: keys 'parallel' and 'parallel.pipeline'
--   overlap" when one key is a prefix of another. Keys are not checked against
--   the schema here (`config.load` does that).
function config.parse_overrides(list)
  local out = {}
  if list == nil then return out end
  if type(list) ~= 'table' then
    error('config.parse_overrides: expected a list of strings, got ' .. describe(list), 2)
  end
  for i, s in ipairs(list) do
    if type(s) ~= 'string' then
      fail(COMMAND_LINE, string.format('override #%d must be a string key=value, got %s', i, describe(s)))
    end
    local key, text = s:match('^([^=]*)=(.*)$')
    local path = {}
    if key then
      key = key:match('^%s*(.-)%s*$')
      for part in (key .. '.'):gmatch('([^.]*)%.') do
        if not is_identifier(part) then key = nil; break end
        path[#path + 1] = part
      end
    end
    if not key then
      fail(COMMAND_LINE, string.format("malformed override '%s' (expected key=value)", s))
    end
    for _, prev in ipairs(out) do
      if prev.key == key then
        error(string.format("key '%s' given twice on the command line", key), 0)
      end
      local short, long = prev.key, key
      if #short > #long then short, long = long, short end
      if long:sub(1, #short + 1) == short .. '.' then
        fail(COMMAND_LINE, string.format("keys '%s' and '%s' overlap", prev.key, key))
      end
    end
    out[#out + 1] = { key = key, path = path, text = text, value = eval_value(text) }
  end
  return out
end

--- Sets one override into values, checking that its path names schema keys.
local function apply_override(values, ov, where)
  local e, node = ROOT, values
  for i, part in ipairs(ov.path) do
    local f = e.fields[part]
    if not f then fail(where, unknown_key(e, part)) end
    if i == #ov.path then
      node[part] = deep_copy(ov.value)
    else
      if not is_dict(f) then
        local kind = f.items and 'a list' or ARTICLE[f.type]
        fail(where, string.format("config key '%s' is %s, not a dict; cannot set '%s'",
          f.key, kind, ov.key))
      end
      if type(node[part]) ~= 'table' then node[part] = {} end
      node, e = node[part], f
    end
  end
end

local function get_path(t, path)
  for _, part in ipairs(path) do
    if type(t) ~= 'table' then return nil end
    t = t[part]
  end
  return t
end

-- ---------------------------------------------------------------------------
-- config files

local function dirname(p) return p:match('^(.*/)') or '' end

--- Collapses '.' and 'x/..' components and repeated slashes.
local function normalize(p)
  local abs = p:sub(1, 1) == '/'
  local parts = {}
  for part in p:gmatch('[^/]+') do
    if part == '.' then
      -- skip
    elseif part == '..' and #parts > 0 and parts[#parts] ~= '..' then
      parts[#parts] = nil
    elseif part == '..' and abs then
      -- '/..' is '/'
    else
      parts[#parts + 1] = part
    end
  end
  local s = (abs and '/' or '') .. table.concat(parts, '/')
  if s == '' then s = '.' end
  return s
end

--- The names a config file sees besides the config keys.
local function config_lib()
  local function copy(t) local c = {}; for k, v in pairs(t) do c[k] = v end; return c end
  return {
    math = copy(math), string = copy(string), table = copy(table), utf8 = copy(utf8),
    os = { getenv = os.getenv },
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, print = print, select = select, tonumber = tonumber,
    tostring = tostring, type = type, rawequal = rawequal, rawget = rawget, rawlen = rawlen,
  }
end

local run_file

--- A loading context: the values, the stack of files being run, the pins.
local function new_context(values, ovs)
  local ctx = { values = values, stack = {}, pinned = {}, nested = {} }
  for _, ov in ipairs(ovs) do
    if #ov.path == 1 then
      ctx.pinned[ov.key] = true
    else
      local top = ov.path[1]
      ctx.nested[top] = ctx.nested[top] or {}
      table.insert(ctx.nested[top], ov)
    end
  end
  local lib = config_lib()
  local function current() return ctx.stack[#ctx.stack].name end

  --- include 'file.lua' [, 'other.lua' ...]: runs each file (relative to the
  -- including file's directory) in the same config, before what follows.
  lib.include = function(...)
    local cur = current()
    for i = 1, select('#', ...) do
      local name = select(i, ...)
      if type(name) ~= 'string' then
        fail(cur, 'include expects a file name, got ' .. describe(name))
      end
      local path = name:sub(1, 1) == '/' and normalize(name) or normalize(dirname(cur) .. name)
      check_dict(ctx.values, ROOT, cur)   -- what this file set so far is this file's
      run_file(ctx, path, cur)
    end
  end

  local function assign(k, v)
    local e = ROOT.fields[k]
    if not e then
      local msg = unknown_key(ROOT, k)
      if type(v) == 'function' and type(k) == 'string' then
        msg = msg .. string.format("; a helper function must be local ('local function %s')", k)
      end
      fail(current(), msg)
    end
    if ctx.pinned[k] then return end
    if type(v) == 'table' and is_dict(e) then
      fill_defaults(v, e)
      for _, ov in ipairs(ctx.nested[k] or {}) do
        local node = v
        for j = 2, #ov.path - 1 do
          if type(node[ov.path[j]]) ~= 'table' then node[ov.path[j]] = {} end
          node = node[ov.path[j]]
        end
        node[ov.path[#ov.path]] = deep_copy(ov.pinned)
      end
    end
    ctx.values[k] = v
  end
  ctx.assign = assign

  ctx.env = setmetatable({}, {
    __index = function(_, k)
      local v = ctx.values[k]
      if v ~= nil then return v end
      v = lib[k]
      if v ~= nil then return v end
      if ROOT.fields[k] then return nil end
      error(unknown_key(ROOT, k), 2)
    end,
    __newindex = function(_, k, v) assign(k, v) end,
  })
  return ctx
end

--- Runs one config file in ctx (its globals become config keys), then checks
-- everything set so far, naming this file in any error.
run_file = function(ctx, name, included_from)
  local norm = normalize(name)
  for _, f in ipairs(ctx.stack) do
    if f.norm == norm then
      local chain = {}
      for j, g in ipairs(ctx.stack) do chain[j] = g.name end
      chain[#chain + 1] = name
      error('include cycle: ' .. table.concat(chain, ' -> '), 0)
    end
  end
  local chunk, err = loadfile(name, 't', ctx.env)
  if not chunk then
    if included_from and err:match('^cannot open ') then
      fail(included_from, 'include: ' .. err)
    end
    error((err:gsub('^cannot open ', 'cannot open config file ')), 0)
  end
  ctx.stack[#ctx.stack + 1] = { name = name, norm = norm }
  local ret = chunk()
  if ret ~= nil then
    if type(ret) ~= 'table' then
      fail(name, 'a config file may return only a table of config keys, got ' .. describe(ret))
    end
    for k in pairs(ret) do
      if type(k) ~= 'string' then
        fail(name, string.format('the returned table has a positional entry [%s]', compact(k)))
      end
    end
    for _, k in ipairs(sorted_keys(ret)) do ctx.assign(k, ret[k]) end
  end
  check_dict(ctx.values, ROOT, name)
  ctx.stack[#ctx.stack] = nil
end

--- Loads a config: the schema defaults, then the config file, then the overrides.
--
-- The file is a Lua chunk run in its own environment: each global it sets is a
-- config key; it can read keys already set (defaults included), `math`,
-- `string`, `table`, `utf8`, `os.getenv` and the usual base functions;
-- `include 'base.lua'` runs a base file (path relative to the including
-- file) whose values the including file can then override. Assigning a dict
-- (`parallel = {pipeline = 2}`) replaces it, its missing fields taking their
-- defaults; `parallel.pipeline = 2` changes one field. A file may also
-- `return` a table of keys (e.g. the output of `config.dump`).
--
-- Keys given in overrides are in place before the file runs: the file reads
-- them and its assignments to them are ignored. Keys with a `derive` in the
-- schema (SEQ_LENGTH) are computed last when still unset, and must agree with
-- their derivation when set; then the checks across keys run (IMG_SIZE a
-- multiple of PATCH_SIZE, HIDDEN_SIZE a multiple of NUM_HEADS).
-- @tparam[opt] string path the config file (nil: defaults and overrides only)
-- @tparam[opt] {string,...} overrides `key=value` strings (see `parse_overrides`)
-- @treturn table the resolved config: a plain table holding every key whose
--   value is not nil, dicts filled in, integral floats of integer keys converted
-- @raise (with `error(msg, 0)`) "FILE: unknown config key 'K' (did you mean
--   'KEY'?)"; "FILE: config key 'K' must be an integer, got string \"abc\"";
--   "FILE: config key 'K' must be one of 'a', 'b', got ..."; nested keys by
--   dotted path ("parallel.tensor.mode"); "include cycle: a.lua -> b.lua -> a.lua";
--   "FILE: config key 'SEQ_LENGTH' is 50, but ... = 65; leave it unset to derive
--   it"; "FILE: config key 'HIDDEN_SIZE' (100) must be a multiple of NUM_HEADS (3)";
--   "cannot open config file F: ..."; a Lua error in a file as "F:LINE: msg";
--   errors of the overrides name "command line" instead of FILE; see also
--   `parse_overrides`
function config.load(path, overrides)
  if path ~= nil and type(path) ~= 'string' then
    error('config.load: path must be a string or nil, got ' .. describe(path), 2)
  end
  local ovs = config.parse_overrides(overrides)
  local values = schema.defaults()
  for _, ov in ipairs(ovs) do apply_override(values, ov, COMMAND_LINE) end
  check_dict(values, ROOT, COMMAND_LINE)
  for _, ov in ipairs(ovs) do ov.pinned = deep_copy(get_path(values, ov.path)) end

  if path then
    local ctx = new_context(values, ovs)
    run_file(ctx, path, nil)
    for _, ov in ipairs(ovs) do
      apply_override(values, { path = ov.path, key = ov.key, value = ov.pinned }, COMMAND_LINE)
    end
  end
  local where = path or COMMAND_LINE
  check_dict(values, ROOT, where)
  derive_and_check(values, where)
  return values
end

--- Resolves a config given as a table (for scripts and tests that build one
-- in code): the schema defaults, then t's keys, checked like a file.
-- @tparam table t config keys, e.g. `{DEPTH = 2, parallel = {pipeline = 2}}`
-- @tparam[opt='config'] string where the name used in error messages
-- @treturn table the resolved config (a new table; t is not changed)
-- @raise the errors of `config.load`, naming `where`
function config.from_table(t, where)
  where = where or 'config'
  if type(t) ~= 'table' then
    error('config.from_table: expected a table, got ' .. describe(t), 2)
  end
  local values = schema.defaults()
  for k, v in pairs(t) do
    if type(k) == 'string' and is_dict(ROOT.fields[k] or {}) and type(v) == 'table' then
      v = deep_copy(v)
      fill_defaults(v, ROOT.fields[k])
    end
    values[k] = deep_copy(v)
  end
  check_dict(values, ROOT, where)
  derive_and_check(values, where)
  return values
end

-- ---------------------------------------------------------------------------
-- dump

--- Writes a resolved config as a Lua table constructor: keys sorted, one per
-- line, nested dicts indented, lists of scalars on one line, numbers that read
-- back exactly (integers stay integers, floats stay floats; inf and nan as
-- 1/0, -1/0, 0/0).
-- `load('return ' .. config.dump(cfg))()` gives a table equal to cfg, and a
-- file holding `return <dump>` is a valid config file.
-- @tparam table cfg a config (any table of strings, numbers, booleans and tables)
-- @tparam[opt] table opts `{comments = true}` appends each known key's doc as a
--   `-- comment`
-- @treturn string the Lua text, without a trailing newline
-- @raise "config.dump: cannot write a function at 'key'" for values that are
--   not data; "config.dump: cycle at 'key'" for a table containing itself
function config.dump(cfg, opts)
  local comments = opts and opts.comments
  local active = {}
  local function write(v, indent, path, entry)
    local tv = type(v)
    if tv == 'number' then return fmt_number(v) end
    if tv == 'string' then return quote(v) end
    if tv == 'boolean' then return tostring(v) end
    if tv ~= 'table' then
      error(string.format("config.dump: cannot write a %s at '%s'", tv, path), 0)
    end
    if active[v] then error(string.format("config.dump: cycle at '%s'", path), 0) end
    local keys = sorted_keys(v)
    if #keys == 0 then return '{}' end
    active[v] = true
    local out
    local scalars = true
    for _, k in ipairs(keys) do
      if type(v[k]) == 'table' then scalars = false; break end
    end
    if is_sequence(v, keys) and scalars then
      local items = {}
      for i, k in ipairs(keys) do items[i] = write(v[k], indent, path .. '[' .. k .. ']') end
      out = '{ ' .. table.concat(items, ', ') .. ' }'
    else
      local seq = is_sequence(v, keys)
      local lines = { '{' }
      local inner = indent .. '  '
      for _, k in ipairs(keys) do
        local sub = entry and entry.fields and type(k) == 'string' and entry.fields[k] or nil
        local kpath = (type(k) == 'string' and (path == '' and k or path .. '.' .. k))
          or string.format('%s[%s]', path, tostring(k))
        local lhs
        if seq then lhs = ''
        elseif is_identifier(k) then lhs = k .. ' = '
        elseif type(k) == 'string' or type(k) == 'number' then
          lhs = '[' .. write(k, inner, kpath) .. '] = '
        else
          error(string.format("config.dump: cannot write a %s key at '%s'", type(k), path), 0)
        end
        local line = inner .. lhs .. write(v[k], inner, kpath, sub) .. ','
        if comments and sub and sub.doc then line = line .. '  -- ' .. sub.doc end
        lines[#lines + 1] = line
      end
      lines[#lines + 1] = indent .. '}'
      out = table.concat(lines, '\n')
    end
    active[v] = nil
    return out
  end
  if type(cfg) ~= 'table' then
    error('config.dump: expected a table, got ' .. describe(cfg), 2)
  end
  return write(cfg, '', '', ROOT)
end

return config
