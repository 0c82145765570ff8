--- lunar.profile: where a CPU training step spends its time, per kernel (a
-- profiler hook for the benches; bench/step_breakdown.lua uses it).
--
--   local profile = require('lunar.profile')
--   local p = profile.start()            -- every lunar.ops function is timed from now on
--   engine:train_step(x, y)
--   p:region('loader', loader.next, loader)   -- time any other call under a name
--   local r = p:stop()                   -- lunar.ops restored
--   r.ops['linear'] = {calls = 24, seconds = 0.031}
--   r.categories['GEMM'] = {calls = .., seconds = ..}
--
-- How: start() replaces each function of the lunar.ops table by a wrapper
-- that reads lunar.clock() (monotonic, seconds) before and after the call.
-- The modules call their kernels as ops.name(...) through that table, so
-- every kernel call of the step is seen; the CPU kernels are synchronous
-- (their OpenMP threads join before they return), so the wall time of a call
-- is the kernel's. Costs about a microsecond per call (two clock reads and a
-- Lua closure call); time the step without the hook for the step's own
-- figure and compare. A call made from inside another timed call (none of
-- lunar.ops calls another) would be counted twice. Not for CUDA (the kernels
-- there are asynchronous: the wall time of a call is its launch).
--
-- Categories (profile.CATEGORY): the kernels grouped as the step's parts --
-- GEMM (linear forward with its fused bias, linear backward: the dx and dW
-- GEMMs and the bias gradient), attention, LayerNorm, GELU, residual adds,
-- dropout, AdamW (the optimizer kernels), loss, embeddings (patchify, class
-- token and position embedding), bf16 casts; an op not listed is its own
-- category. Regions (p:region) are categories of their own name.
-- @module lunar.profile
local profile = {}

--- The median of a list of numbers (seconds, rates: what a bench repeats);
-- the list is left as it is. Even count: the mean of the two middle values;
-- empty: NaN.
-- @param t {number, ...}
-- @return number
function profile.median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

--- Category of each lunar.ops function (see the module doc).
profile.CATEGORY = {
  linear = 'GEMM', linear_backward = 'GEMM',
  attention = 'attention', attention_backward = 'attention',
  layernorm = 'LayerNorm', layernorm_backward = 'LayerNorm', rmsnorm = 'LayerNorm', rmsnorm_backward = 'LayerNorm',
  gelu = 'GELU', gelu_backward = 'GELU', activation = 'GELU', activation_backward = 'GELU',
  add = 'residual adds', add_ = 'residual adds',
  dropout = 'dropout', dropout_backward = 'dropout',
  adamw_step = 'AdamW', adamw_step_bf16 = 'AdamW', sgd_step = 'AdamW', sgd_step_bf16 = 'AdamW',
  sum_squares = 'AdamW', scale_ = 'AdamW',
  cross_entropy = 'loss', cross_entropy_backward = 'loss', accuracy_count = 'loss',
  patchify = 'embeddings', patchify_backward = 'embeddings', embed_tokens = 'embeddings',
  embed_tokens_backward = 'embeddings',
  cast_bf16 = 'bf16 casts', cast_bf16_ = 'bf16 casts',
}

local Session = {}
Session.__index = Session

local function add(t, name, dt)
  local e = t[name]
  if not e then e = {calls = 0, seconds = 0}; t[name] = e end
  e.calls = e.calls + 1
  e.seconds = e.seconds + dt
end

--- Starts timing every function of lunar.ops; returns the session. Raises
-- when a session is already running (one at a time: the wrappers would nest).
function profile.start()
  if profile._active then error('lunar.profile.start: a session is already running; stop it first', 2) end
  local ops, clock = lunar.ops, lunar.clock
  local self = setmetatable({ops = {}, regions = {}, saved = {}}, Session)
  for name, fn in pairs(ops) do
    if type(fn) == 'function' and name ~= 'bf16_supported' and name ~= 'use_reference_kernels' then
      self.saved[name] = fn
      local rec = self.ops
      ops[name] = function(...)
        local t0 = clock()
        local a, b, c, d = fn(...)   -- lunar.ops functions return at most three values
        add(rec, name, clock() - t0)
        return a, b, c, d
      end
    end
  end
  profile._active = self
  return self
end

--- Calls fn(...) and adds its wall time to the region `name`; returns fn's
-- results (up to four).
function Session:region(name, fn, ...)
  local t0 = lunar.clock()
  local a, b, c, d = fn(...)
  add(self.regions, name, lunar.clock() - t0)
  return a, b, c, d
end

--- Restores lunar.ops and returns {ops = {name = {calls, seconds}},
-- regions = {...}, categories = {name = {calls, seconds}}} (categories:
-- the ops grouped by profile.CATEGORY, plus the regions).
function Session:stop()
  for name, fn in pairs(self.saved) do lunar.ops[name] = fn end
  self.saved = {}
  profile._active = nil
  local cats = {}
  for name, e in pairs(self.ops) do
    local c = profile.CATEGORY[name] or name
    local t = cats[c] or {calls = 0, seconds = 0}
    t.calls, t.seconds = t.calls + e.calls, t.seconds + e.seconds
    cats[c] = t
  end
  for name, e in pairs(self.regions) do cats[name] = {calls = e.calls, seconds = e.seconds} end
  return {ops = self.ops, regions = self.regions, categories = cats}
end

return profile
