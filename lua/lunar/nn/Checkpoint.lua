--- lunar.nn.Checkpoint: activation checkpointing (Chen et al. 2016,
-- "Training Deep Nets with Sublinear Memory Cost"; Megatron-LM's and NeMo's
-- `recompute_granularity = 'full'`): a segment of modules run one after the
-- other whose forward keeps only the segment's input, and whose backward
-- replays the forward to rebuild the contexts, then runs the backward.
--
--   local seg = Checkpoint({blocks['0'], blocks['1']})   -- modules, in order
--   local y, ctx = seg:forward(x)      the segment's output; ctx refers to x and keeps
--                                      no tensor (each module's context is freed at once)
--   local dx = seg:backward(ctx, dy, need_dx)   replays the forward, then backward
--   seg.after_backward = function(k) end        optional: called after module k's
--                                               backward (k = n .. 1; gradient hooks)
--
-- The contract is lunar.nn.Module's: ctx only refers to the caller's input x,
-- which the caller keeps alive and unchanged until the backward (the replay
-- starts from it). Gradients are bitwise those without checkpointing: the
-- replay runs the same kernels on the same input and weights, and every
-- random module inside (lunar.nn.Dropout: a Philox stream keyed by its path
-- and a per-call counter) draws the same numbers, because forward saves each
-- one's counter (`m:rng_state()`) and the replay sets it back before
-- running, then restores the current value (later forwards, e.g. other
-- pipeline micro-batches in flight, keep theirs). Collectives inside the
-- modules (tensor parallelism) run again in the replay, in the same order
-- on every rank of their group.
--
-- Two forms:
-- - Checkpoint(list): a segment that is not a child of anything: the wrapped
--   modules stay where they are in the module tree (their paths and parameter
--   names unchanged); the segment only calls them (nn.ViT's and
--   nn.Sequential:set_activation_checkpointing's segments).
-- - Checkpoint(module): a wrapper to compose, e.g. nn.Sequential{{'0',
--   nn.Checkpoint(block)}, ...}: the module is its one child, inlined (as a
--   Sequential child named ''), so its parameters are named as if the wrapper
--   were not there ('0.attn.qkv.weight'): timm names, checkpoints and
--   optimizer state are those of the model without it.
-- A child's error is prefixed with its path, class and input shape, as in a
-- Sequential (Sequential.child_forward).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local Sequential = require('lunar.nn.Sequential')

local Checkpoint = class('Checkpoint', Module)

--- @param modules a module (the wrapper form: its inlined child), or a
--   non-empty list of modules run in order (the output of module k is the
--   input of module k + 1; not children)
function Checkpoint:__init(modules)
  Module.__init(self)
  if Sequential.is_module(modules) then
    self.modules = {modules}
    table.insert(self._children, {name = '', module = modules})
  else
    if type(modules) ~= 'table' or #modules == 0 then
      error('nn.Checkpoint: expects a module or a non-empty list of modules', 2)
    end
    self.modules = {}
    for k, m in ipairs(modules) do
      if not Sequential.is_module(m) then
        error(string.format('nn.Checkpoint: entry %d of the list is a %s, not a module', k, type(m)), 2)
      end
      self.modules[k] = m
    end
  end
  -- the random modules inside (those with rng_state / set_rng_state), found once
  self._random = {}
  for _, m in ipairs(self.modules) do
    m:apply(function(sub) if sub.rng_state and sub.set_rng_state then table.insert(self._random, sub) end end)
  end
end

--- The wrapper form's child is inlined: it has the wrapper's path.
Checkpoint.apply = Sequential.apply

function Checkpoint:extra_repr()
  local names = {}
  for k, m in ipairs(self.modules) do names[k] = m.path ~= '' and m.path or (m.__name or '?') end
  return table.concat(names, ', ')
end

local function rng_states(list)
  local s = {}
  for k, m in ipairs(list) do s[k] = m:rng_state() end
  return s
end

local function set_rng_states(list, s)
  for k, m in ipairs(list) do m:set_rng_state(s[k]) end
end

--- x -> the last module's output. Each module's context is freed as soon as
-- it has run and the intermediate outputs as soon as the next module has
-- run; ctx refers to x and holds the random modules' states (no tensor).
function Checkpoint:forward(x)
  local state = rng_states(self._random)
  local h = x
  for _, m in ipairs(self.modules) do
    local y, c = Sequential.child_forward(m, h)
    c:free()
    if h ~= x and h ~= y then h:free() end
    h = y
  end
  return h, Context(nil, {x = x, rng = state})
end

--- dy -> dx: replays the forward from ctx.x with the saved random states
-- (the same masks), then runs each module's backward, last to first,
-- freeing the replayed activations as it goes; releases ctx. need_dx as in
-- the module contract (false: the first module is asked for no dx, nil is
-- returned). dy stays the caller's.
function Checkpoint:backward(ctx, dy, need_dx)
  local x, state = ctx.x, ctx.rng
  ctx:free()
  local now = rng_states(self._random)
  set_rng_states(self._random, state)
  local n = #self.modules
  local ins, ctxs = {}, {}
  local h = x
  for k, m in ipairs(self.modules) do
    ins[k] = h
    h, ctxs[k] = m:forward(h)
  end
  set_rng_states(self._random, now)
  if h ~= ins[n] then h:free() end       -- the output itself is not needed: dy is given
  local g = dy
  for k = n, 1, -1 do
    local gin = self.modules[k]:backward(ctxs[k], g, k > 1 or need_dx ~= false)
    if g ~= dy and g ~= gin then g:free() end
    -- module k's input was module k - 1's output (unless k - 1 passed its input through)
    if k > 1 and ins[k] ~= ins[k - 1] then ins[k]:free() end
    if self.after_backward then self.after_backward(k) end
    g = gin
  end
  return g
end

return Checkpoint
