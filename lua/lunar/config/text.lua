--- lunar.config.text: config values as Lua text, for messages and for
-- config.dump: numbers that read back exactly, quoted strings, sorted keys.
local M = {}

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

--- A copy of a library table (math, string, ...) a config chunk may change
-- without changing the real one.
local function copy_lib(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

M.is_identifier, M.fmt_number, M.quote, M.sorted_keys = is_identifier, fmt_number, quote, sorted_keys
M.is_sequence, M.compact, M.describe, M.copy_lib = is_sequence, compact, describe, copy_lib
return M
