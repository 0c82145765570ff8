--- lunar.config.dump: a resolved config as Lua text that reads back equal.
local schema = require('lunar.schema')
local text = require('lunar.config.text')

local M = {}

local ROOT = schema.root
local fmt_number, quote, sorted_keys = text.fmt_number, text.quote, text.sorted_keys
local is_sequence, is_identifier, describe = text.is_sequence, text.is_identifier, text.describe

-- The source text of a config's function (the key MODEL), for dump: the lines
-- of its definition in its file, from its 'function' to its last 'end'. Only
-- a function that uses no local of its file (upvalues other than _ENV) can be
-- written so that it reads back as the same code.
local function function_source(f, path)
  local info = debug.getinfo(f, 'S')
  local file = info.source:match('^@(.*)')
  local function fail(why)
    error(string.format("config.dump: cannot write the function at '%s' (%s:%d): %s", path, file or info.short_src,
      info.linedefined, why), 0)
  end
  if not file or info.linedefined <= 0 then
    error(string.format("config.dump: cannot write a function at '%s' (one not defined in a Lua file)", path), 0)
  end
  for i = 1, 255 do
    local name = debug.getupvalue(f, i)
    if not name then break end
    if name ~= '_ENV' then fail("it uses '" .. name .. "', a local of its file; define it inside the function") end
  end
  local fh = io.open(file, 'r')
  if not fh then fail('its file cannot be read') end
  local lines, k = {}, 0
  for line in fh:lines() do
    k = k + 1
    if k >= info.linedefined and k <= info.lastlinedefined then lines[#lines + 1] = line end
  end
  fh:close()
  local src = table.concat(lines, '\n')
  local s, e = src:find('function', 1, true), src:match('.*()end')
  if not s or not e then fail('its source was not found') end
  src = src:sub(s, e + 2)
  if not load('return ' .. src, '=config.dump', 't', {}) then fail('its lines hold more than the function') end
  return src
end

--- Writes a resolved config as a Lua table constructor: keys sorted, one per
-- line, nested dicts indented, lists of scalars on one line, numbers that read
-- back exactly (integers stay integers, floats stay floats; inf and nan as
-- 1/0, -1/0, 0/0).
-- `load('return ' .. config.dump(cfg))()` gives a table equal to cfg, and a
-- file holding `return <dump>` is a valid config file. A function (MODEL) is
-- written as its source text from its file (the same code, a new closure).
-- @tparam table cfg a config (any table of strings, numbers, booleans and tables)
-- @tparam[opt] table opts `{comments = true}` appends each known key's doc as a
--   `-- comment`
-- @treturn string the Lua text, without a trailing newline
-- @raise "config.dump: cannot write a userdata at 'key'" for values that are
--   not data or a function not defined in a Lua file; "config.dump: cannot
--   write the function at 'key' (FILE:LINE): why" for one that uses a local
--   of its file;
--   "config.dump: cycle at 'key'" for a table containing itself
function M.dump(cfg, opts)
  local comments = opts and opts.comments
  local active = {}
  local function write(v, indent, path, entry)
    local tv = type(v)
    if tv == 'number' then return fmt_number(v) end
    if tv == 'string' then return quote(v) end
    if tv == 'boolean' then return tostring(v) end
    if tv == 'function' then return function_source(v, path) end
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
