--- lunar.nn.Sequential: modules applied one after the other, forward and
-- backward composed (torch/nn's and PyTorch's nn.Sequential).
--
--   seq = nn.Sequential{nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)}
--     children named '0', '1', '2' (parameters '0.weight', '2.bias', ...)
--   seq = nn.Sequential{{'fc1', nn.Linear(8, 16)}, {'act', nn.GELU()}, {'fc2', nn.Linear(16, 8)}}
--     children named by the caller: {name, module} (timm's mlp.fc1.weight)
--   seq = nn.Sequential{{'', nn.ClassToken(C)}, ...}
--     the name '' inlines a child: its parameters and children are named as
--     if they were the container's own ('cls_token', not '0.cls_token'), so a
--     timm-shaped composition yields timm's names
--   y, ctx = seq:forward(x)      x -> children in order -> y
--   dx = seq:backward(ctx, dy, need_dx)
--
-- Entries may mix plain modules (named by their position, 0-based) and
-- {name, module} pairs. The context owns every child's context and every
-- intermediate activation (released as soon as the backward has passed the
-- child that reads it) and refers to x. A child that returns its input (an
-- identity) is fine anywhere; when the last one does, y may be x itself.
-- In evaluation mode (m:evaluate()) the children's contexts and the
-- activations are freed as the forward goes; ctx then serves only ctx:free().
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')

local Sequential = class('Sequential', Module)

--- Whether v is a lunar.nn module (an instance of Module or a subclass).
function Sequential.is_module(v)
  if type(v) ~= 'table' then return false end
  local mt = getmetatable(v)
  while mt do
    if mt == Module then return true end
    mt = mt.__parent
  end
  return false
end
local is_module = Sequential.is_module

local function describe(v)
  if type(v) == 'table' and v.__name then return v.__name end
  return type(v)
end

--- Splits a container entry into (name, module): a module (named `default`)
-- or {name, module}. Errors name the container and the entry. Shared with
-- Residual and Concat.
function Sequential.entry(what, i, e, default)
  if is_module(e) then return default, e end
  if type(e) == 'table' and type(e[1]) == 'string' and is_module(e[2]) then return e[1], e[2] end
  error(string.format('%s: entry %d must be a module or {name, module}, got %s%s', what, i, describe(e),
    type(e) == 'table' and not is_module(e) and ' (a table that is not {string, module})' or ''), 3)
end

--- Adds child `m` under `name` ('' inlines it); refuses a name that would
-- hide a method or an existing child. Shared with Residual and Concat.
function Sequential.add_child(self, what, name, m)
  if name ~= '' then
    if not name:match('^[%w_]+$') then
      error(string.format("%s: child name '%s' must be letters, digits or '_' (parameter names are dotted paths)",
        what, name), 3)
    end
    if self[name] ~= nil then
      error(string.format("%s: child name '%s' is taken (a method or another child)", what, name), 3)
    end
    self:add(name, m)
  else
    table.insert(self._children, {name = '', module = m})
  end
  return m
end

--- Module:apply with inlined children: a child named '' has the container's
-- own path, so its parameters read as the container's.
function Sequential.apply(self, fn, path)
  path = path or ''
  fn(self, path)
  for _, c in ipairs(self._children) do
    local p = c.name == '' and path or (path == '' and c.name or (path .. '.' .. c.name))
    c.module:apply(fn, p)
  end
end

-- Lua pattern text matching `s` literally.
local function literal(s) return (s:gsub('[%^%$%(%)%%%.%[%]%*%+%-%?]', '%%%0')) end

local function shape_str(v)
  if lunar.is_tensor(v) then return '[' .. table.concat(v:shape(), ', ') .. ']' end
  return type(v)
end

--- Runs child `m`'s forward on `h`: y, ctx = m:forward(h). An error that
-- names no module at or below m (an op's error from C, a plain error()) is
-- raised again prefixed with m's path, class and input shape, e.g.
-- "blocks.0.attn (Attention): input [3, 8]: <the op's message>"; one that
-- already names m or a descendant (Module:shape_error's "path (Class): what:
-- expected [..], got [..]") goes on unchanged. Shared with Residual and Concat.
function Sequential.child_forward(m, h)
  local ok, y, ctx = pcall(m.forward, m, h)
  if ok then return y, ctx end
  if type(y) ~= 'string' then error(y, 0) end
  local path = m.path or ''
  -- a module's own message: " <path>[.<descendant>] (<Class>): "
  local tagged = (' ' .. y):find(' ' .. (path == '' and '' or literal(path)) .. '[%w_%.<>]* %([%w_]+%): ')
  if tagged then error(y, 0) end
  error(string.format('%s (%s): input %s: %s', path ~= '' and path or '<root>', m.__name or 'Module',
    shape_str(h), y), 0)
end
local child_forward = Sequential.child_forward

--- @param list the children, in order: modules or {name, module} pairs
function Sequential:__init(list)
  Module.__init(self)
  if type(list) ~= 'table' or is_module(list) then
    error('nn.Sequential: expected a list of modules, got ' .. describe(list), 2)
  end
  for i, e in ipairs(list) do
    local name, m = Sequential.entry('nn.Sequential', i, e, tostring(i - 1))
    Sequential.add_child(self, 'nn.Sequential', name, m)
  end
end

function Sequential:extra_repr() return tostring(#self._children) .. ' modules' end

--- The i-th child module (1-based).
function Sequential:get(i) return self._children[i] and self._children[i].module end

--- The number of children.
function Sequential:size() return #self._children end

--- Activation checkpointing of this Sequential's children (the config key
-- activation_checkpointing on a MODEL's 'blocks', as nn.ViT's blocks):
-- spec = {granularity = 'full', method = 'uniform' | 'block', num_layers = n}
-- (NeMo's names): 'uniform' runs the children in consecutive groups of n
-- (the last may be shorter), each group one lunar.nn.Checkpoint segment
-- (only its input kept, its forward replayed in backward, dropout masks
-- included, so gradients are bitwise unchanged); 'block' the first n
-- children, each its own segment. nil, granularity nil or 'selective' (what
-- the attention kernel always does): none. The tree is not changed (names,
-- paths, flat buffers and gradient groups stay); only forward and backward
-- run the segments. Errors (prefixed with `where`) name the key: an unknown
-- granularity or method, num_layers not in 1..#children. Returns self.
function Sequential:set_activation_checkpointing(spec, where)
  local gran = spec and spec.granularity
  local n_children = #self._children
  self._units = nil
  if gran == nil or gran == 'selective' then return self end
  local pre = (where and (where .. ': ') or 'nn.Sequential: ') .. 'activation_checkpointing.'
  local method, n = spec.method or 'uniform', spec.num_layers or 1
  if gran ~= 'full' then error(string.format("%sgranularity must be 'full' or 'selective', got '%s'", pre, tostring(gran)), 0) end
  if method ~= 'uniform' and method ~= 'block' then
    error(string.format("%smethod must be 'uniform' or 'block', got '%s'", pre, tostring(method)), 0)
  end
  if math.type(n) ~= 'integer' or n < 1 or n > n_children then
    error(string.format('%snum_layers = %s must be an integer from 1 to the %d blocks here', pre, tostring(n),
      n_children), 0)
  end
  local Checkpoint = require('lunar.nn.Checkpoint')
  local units, i = {}, 1
  while i <= n_children do
    local last = method == 'uniform' and math.min(i + n - 1, n_children) or (i <= n and i or nil)
    if last then
      local list = {}
      for j = i, last do list[#list + 1] = self._children[j].module end
      local seg, first = Checkpoint(list), i
      seg.after_backward = function(k) self:_group_ready(first + k - 1) end
      units[#units + 1] = {module = seg, first = i, last = last, segment = true}
      i = last + 1
    else
      units[#units + 1] = {module = self._children[i].module, first = i, last = i}
      i = i + 1
    end
  end
  self._units = units
  return self
end

-- The gradient-group keys of entry e (the i-th of the forward list: a child,
-- or a checkpointed segment of children e.first..e.last) of this container,
-- for the root's zero_hook (see zero_units below); nil when it has none.
local function unit_keys(self, e, i)
  local gk = self._group_key
  if not gk then return nil end
  local keys = {}
  for j = e.first or i, e.last or i do
    if gk[j] then keys[#keys + 1] = gk[j] end
  end
  return #keys > 0 and keys or nil
end

-- Calls the root's zero_hook(event, keys) (sharded data parallelism) when set.
local function unit_event(self, event, keys)
  local hook = keys and self._group_root.zero_hook
  if hook then hook(event, keys) end
end

--- x -> the last child's output; ctx owns the children's contexts and the
-- intermediate activations, and refers to x.
function Sequential:forward(x)
  local ctx = Context(nil, {x = x})
  local owned = {}             -- tensor -> key under which ctx owns it
  local h = x
  local eval = not self.training
  for i, c in ipairs(self._units or self._children) do
    local keys = unit_keys(self, c, i)
    unit_event(self, 'pre_forward', keys)
    local ok, y, ci = pcall(child_forward, c.module, h)
    if ok then unit_event(self, 'post_forward', keys) end
    if not ok then
      ctx:free()      -- the children's contexts and activations so far
      error(y, 0)
    end
    if eval then
      ci:free()
      if owned[h] and y ~= h then ctx:release(owned[h]); owned[h] = nil end
    else
      ctx:own('c' .. i, ci)
    end
    if y ~= h and y ~= x and not owned[y] then
      owned[y] = 'h' .. (i + 1)      -- child i+1's input (or the output)
      ctx:own(owned[y], y)
    end
    h = y
  end
  -- the output is the caller's: the context only refers to it
  if owned[h] then ctx._owns[owned[h]] = nil end
  if eval then ctx.evaluation = true end
  return h, ctx
end

--- A pipeline stage of this model (Megatron/GPipe stages over the blocks, as
-- nn.ViT's opts.stage): a new root Sequential, not materialized, sharing this
-- model's child modules: the children before the child named 'blocks' (when
-- stage.is_first), blocks first_block..last_block of 'blocks' (0-based, their
-- names kept, so parameters keep their full names), the children after it
-- (when stage.is_last). The model must have a child 'blocks' that is a
-- Sequential of `depth` blocks; otherwise an error saying so (`where` names
-- the model's origin in it).
-- @param stage {first_block=, last_block=, is_first=, is_last=} (lunar.parallel.grid's g.stage)
-- @param depth integer the number of blocks the grid split (the config's DEPTH)
-- @param where string for errors (e.g. "FILE:LINE: config key 'MODEL'")
function Sequential:pipeline_stage(stage, depth, where)
  local blocks
  for _, c in ipairs(self._children) do if c.name == 'blocks' then blocks = c.module end end
  if not blocks or blocks.__name ~= 'Sequential' or #blocks._children ~= depth then
    error(string.format("%s: pipeline parallelism splits the model's child 'blocks', a nn.Sequential of DEPTH = %d " ..
      'blocks; this model has %s', where or 'nn.Sequential', depth,
      not blocks and "no child named 'blocks'" or (blocks.__name ~= 'Sequential' and ("a 'blocks' that is a " ..
      tostring(blocks.__name)) or string.format("%d blocks in 'blocks'", #blocks._children))), 0)
  end
  local list, after = {}, false
  for _, c in ipairs(self._children) do
    if c.module == blocks then
      local part = {}
      for i = stage.first_block, stage.last_block do
        local b = blocks._children[i + 1]
        part[#part + 1] = {b.name, b.module}
      end
      list[#list + 1] = {'blocks', Sequential(part)}
      after = true
    elseif (after and stage.is_last) or (not after and stage.is_first) then
      list[#list + 1] = {c.name, c.module}
    end
  end
  return Sequential(list)
end

-- Gradient groups for the data-parallel reducer (lunar.parallel.reducer: the
-- model's grad_group_order, grad_group_of and grad_ready_hook, as the ViT's):
-- one group per child, and one per grandchild for a child that is itself a
-- Sequential (a list of blocks), keyed by path ('head', 'blocks.3'; '#i' for
-- an inlined child). Each group's parameters are contiguous in the flat
-- buffers, and backward calls the root's grad_ready_hook(key) as soon as a
-- group's gradients are complete, so their all_reduce overlaps the rest of
-- the backward.
local function groups(self)
  local out = {}
  local function key_of(c, i) return c.name ~= '' and c.name or ('#' .. i) end
  for i, c in ipairs(self._children) do
    local k = key_of(c, i)
    if c.module.__name == 'Sequential' and #c.module._children > 0 then
      for j, cc in ipairs(c.module._children) do
        out[#out + 1] = {key = k .. '.' .. key_of(cc, j), owner = c.module, index = j, module = cc.module}
      end
    else
      out[#out + 1] = {key = k, owner = self, index = i, module = c.module}
    end
  end
  return out
end

--- The gradient groups in the order backward completes them (last child
-- first); also arms the children that report them (see groups above).
function Sequential:grad_group_order()
  local order = {}
  local gs = groups(self)
  for n = #gs, 1, -1 do
    local g = gs[n]
    g.owner._group_key = g.owner._group_key or {}
    g.owner._group_key[g.index] = g.key
    g.owner._group_root = self
    order[#order + 1] = g.key
  end
  return order
end

--- The gradient group of a parameter's full name (after nn.materialize).
function Sequential:grad_group_of(name)
  if not self._group_of then
    local map = {}
    for _, g in ipairs(groups(self)) do
      g.module:apply(function(m)
        for _, p in ipairs(m._params) do map[m.path == '' and p.name or (m.path .. '.' .. p.name)] = g.key end
      end)
    end
    self._group_of = map
  end
  return self._group_of[name]
end

--- The units of sharded data parallelism (lunar.parallel.zero stages 2 and
-- 3, as nn.ViT:zero_units) in forward order, each the list of its gradient
-- group keys: one per gradient group (see groups above), or one per
-- checkpointed segment (set_activation_checkpointing: its children's groups
-- together, since its backward replays their forward). Arms the containers:
-- forward and backward then call the root's zero_hook(event, keys) with
-- 'pre_forward' / 'post_forward' around each unit's forward and
-- 'pre_backward' / 'post_backward' around its backward (after its
-- grad_ready_hook), as nn.ViT does. A group without parameters is listed too
-- (lunar.parallel.zero skips it).
function Sequential:zero_units()
  self:grad_group_order()
  local list, seen = {}, {}
  for _, g in ipairs(groups(self)) do
    local seg
    for _, u in ipairs(g.owner._units or {}) do
      if g.index >= u.first and g.index <= u.last then seg = u end
    end
    if not seg then
      list[#list + 1] = {g.key}
    elseif not seen[seg] then
      seen[seg] = true
      list[#list + 1] = unit_keys(g.owner, seg)
    end
  end
  return list
end

--- Reports child i's gradient group complete (see groups above).
function Sequential:_group_ready(i)
  local key = self._group_key and self._group_key[i]
  local hook = key and self._group_root.grad_ready_hook
  if hook then hook(key) end
end

--- dy -> dx through the children in reverse; each intermediate activation
-- is released right after the backward of the child that read it.
function Sequential:backward(ctx, dy, need_dx)
  if ctx.evaluation then error('nn.Sequential:backward: the forward ran in evaluation mode and kept nothing', 2) end
  local g = dy
  local list = self._units or self._children
  for i = #list, 1, -1 do
    local want = i > 1 or need_dx ~= false
    local keys = unit_keys(self, list[i], i)
    unit_event(self, 'pre_backward', keys)
    local gi = list[i].module:backward(ctx['c' .. i], g, want)
    ctx['c' .. i] = nil; ctx._owns['c' .. i] = nil     -- released by the child's backward
    if g ~= dy and g ~= gi then g:free() end
    ctx:release('h' .. i)
    g = gi
    -- a checkpointed segment reports its children itself (after_backward)
    if not list[i].segment then self:_group_ready(list[i].first or i) end
    unit_event(self, 'post_backward', keys)
  end
  ctx:free()
  if need_dx == false then return nil end
  return g
end

return Sequential
