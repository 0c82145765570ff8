--- lunar.config.overrides: `key=value` command-line overrides, parsed and
-- set into a config's values.
local schema = require('lunar.schema')
local text = require('lunar.config.text')
local check = require('lunar.config.check')

local M = {}

local deep_copy, is_dict, ROOT = schema.deep_copy, schema.is_dict, schema.root
local is_identifier, describe, copy = text.is_identifier, text.describe, text.copy_lib
local fail, unknown_key, ARTICLE = check.fail, check.unknown_key, check.ARTICLE

--- The name errors of the overrides give instead of a file.
local COMMAND_LINE = 'command line'
M.COMMAND_LINE = COMMAND_LINE

--- The environment command-line values are evaluated in: math and string,
-- and reading any other name is an error (so a bare word becomes a string).
local function expr_env()
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
function M.parse_overrides(list)
  local out = {}
  if list == nil then return out end
  if type(list) ~= 'table' then
    error('config.parse_overrides: expected a list of strings, got ' .. describe(list), 2)
  end
  for k in pairs(list) do
    if math.type(k) ~= 'integer' then
      -- a {KEY = value} table would be silently ignored by the list walk below
      fail(COMMAND_LINE, string.format("overrides are a list of 'key=value' strings, got a table with the key %s " ..
        "(write {'%s=...'}, or pass a resolved config table without overrides)", describe(k), tostring(k)))
    end
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
        lunar.error(string.format("key '%s' given twice on the command line", key))
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

M.apply, M.get_path = apply_override, get_path
return M
