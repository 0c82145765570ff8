--- lunar.config.loader: runs config files (include, globals as keys,
-- overrides pinned before the file runs) and resolves a config from a file
-- or a table. lunar.config's module doc describes the rules.
local schema = require('lunar.schema')
local text = require('lunar.config.text')
local check = require('lunar.config.check')
local overrides = require('lunar.config.overrides')

local M = {}

local deep_copy, is_dict, ROOT = schema.deep_copy, schema.is_dict, schema.root
local compact, describe, sorted_keys = text.compact, text.describe, text.sorted_keys
local fail, unknown_key = check.fail, check.unknown_key
local check_dict, fill_defaults, derive_and_check = check.check_dict, check.fill_defaults, check.derive_and_check
local apply_override, get_path, COMMAND_LINE = overrides.apply, overrides.get_path, overrides.COMMAND_LINE
local parse_overrides = overrides.parse_overrides
local copy = text.copy_lib

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
      lunar.error('include cycle: ' .. table.concat(chain, ' -> '))
    end
  end
  local chunk, err = loadfile(name, 't', ctx.env)
  if not chunk then
    if included_from and err:match('^cannot open ') then
      fail(included_from, 'include: ' .. err)
    end
    lunar.error((err:gsub('^cannot open ', 'cannot open config file ')))
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
function M.load(path, overrides)
  if path ~= nil and type(path) ~= 'string' then
    error('config.load: path must be a string or nil, got ' .. describe(path), 2)
  end
  local ovs = parse_overrides(overrides)
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
function M.from_table(t, where)
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

return M
