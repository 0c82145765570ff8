--- lunar.class: a minimal class helper. `local C = class('Name', Parent)`;
-- `C(...)` creates an instance and calls `C.__init(self, ...)`; instances see
-- methods of C and then of Parent; `__tostring` and other metamethods defined
-- on a class apply to its instances.
local function class(name, parent)
  local c = {}
  c.__name = name
  c.__index = c
  c.__parent = parent
  if parent then
    for k, v in pairs(parent) do
      if k:find('^__') and k ~= '__index' and k ~= '__name' and k ~= '__parent' then c[k] = v end
    end
  end
  setmetatable(c, {
    __index = parent,
    __call = function(cls, ...)
      local obj = setmetatable({}, cls)
      if cls.__init then cls.__init(obj, ...) end
      return obj
    end,
  })
  return c
end

return class
