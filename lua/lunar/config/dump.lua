--- lunar.config.dump: a resolved config as Lua text that reads back equal.
local schema = require('lunar.schema')
local text = require('lunar.config.text')

local M = {}

local ROOT = schema.root
local fmt_number, quote, sorted_keys = text.fmt_number, text.quote, text.sorted_keys
local is_sequence, is_identifier, describe = text.is_sequence, text.is_identifier, text.describe

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
function M.dump(cfg, opts)
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

return M
