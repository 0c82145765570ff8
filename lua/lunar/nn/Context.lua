--- lunar.nn.Context: what a module's forward saved for its backward, and who
-- releases it (the module contract, lunar.nn.Module).
--
--   local ctx = Context({h = h, c1 = c1}, {x = x})   owns h and the child context c1,
--                                                    refers to x (the caller's input)
--   ctx:own('o', o)          one more owned value (a tensor or a child context)
--   ctx:release('h')         frees an owned value now (a backward's prompt release)
--   ctx:free()               frees every owned value (recursively), forgets the
--                            references; a second call does nothing
--   ctx:tensors()            the owned tensors, children's included
--   do local y, ctx <close> = m:forward(x) ... end   ctx:free() when the block ends
--
-- A context OWNS the tensors its module created in forward and kept for
-- backward (activations, statistics) and the contexts of its children;
-- it only REFERS to tensors that belong to someone else (the module's input,
-- a tensor another context owns). ctx:free() frees exactly what it owns, so
-- no caller frees another module's tensors. Field names are the module's own
-- (ctx.x, ctx.mean, ...); `own`, `release`, `free`, `freed` and `_owns` are
-- the context's.
local Context = {}
Context.__index = Context
Context.__name = 'Context'
setmetatable(Context, {__call = function(_, owns, refs) return Context.new(owns, refs) end})

-- A released context: ctx.freed is true, free() and tensors() do nothing,
-- reading anything else is an error that says why (a second backward).
local Released = {__name = 'Context (released)'}
local function noop() end
local function none() return {} end
Released.__index = function(_, k)
  if k == 'free' then return noop elseif k == 'tensors' then return none end
  error(string.format("lunar.nn.Context: reading '%s' of a context already released " ..
    '(a backward used it, or ctx:free()); a context serves one backward', tostring(k)), 2)
end
Released.__close = noop

local function is_context(v) local mt = getmetatable(v) return mt == Context or mt == Released end

local function release_value(v)
  if lunar.is_tensor(v) or is_context(v) then v:free() end
end

--- A context that owns the values of `owns` (tensors, child contexts; plain
-- values are kept as they are) and refers to those of `refs`.
-- @param owns optional table name -> value
-- @param refs optional table name -> value
function Context.new(owns, refs)
  local ctx = setmetatable({_owns = {}}, Context)
  for k, v in pairs(owns or {}) do ctx:own(k, v) end
  for k, v in pairs(refs or {}) do ctx[k] = v end
  return ctx
end

--- Stores `value` under `name` as owned (freed by ctx:free()); returns value.
function Context:own(name, value)
  self[name] = value
  if value ~= nil then self._owns[name] = true end
  return value
end

--- Frees the value under `name` now when the context owns it (else only
-- forgets the reference) and removes it from the context.
function Context:release(name)
  if self._owns[name] then
    release_value(self[name])
    self._owns[name] = nil
  end
  self[name] = nil
end

--- Frees every owned tensor and child context and forgets every reference;
-- ctx.freed is true afterwards, and reading any other field is an error.
-- Idempotent.
function Context:free()
  for name in pairs(self._owns) do release_value(self[name]) end
  for k in pairs(self) do self[k] = nil end
  self.freed = true
  setmetatable(self, Released)
end

--- The tensors this context owns, its children's included (a list; for
-- tests and memory accounting).
function Context:tensors(out)
  out = out or {}
  for name in pairs(self._owns) do
    local v = self[name]
    if lunar.is_tensor(v) then out[#out + 1] = v elseif is_context(v) then v:tensors(out) end
  end
  return out
end

--- `local ctx <close> = ...`: frees the context when the variable goes out of scope.
Context.__close = Context.free

return Context
