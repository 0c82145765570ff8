--- lunar.parallel.reducer: gradient synchronization after backward, bucketed
-- and overlapped with it (PyTorch DDP's Reducer, Li et al. 2020, "PyTorch
-- Distributed: Experiences on Accelerating Data Parallel Training"; Megatron's
-- param_and_grad_buffer buckets).
--
--   local r = reducer.new{model = m, grid = g, bucket_size = 2^20}
--   r:begin(sync)        before a backward; sync = this backward completes the
--                        gradients of the step (last micro-batch, last
--                        accumulation step); otherwise the hooks do nothing
--   model:backward(...)  calls r:ready(group) through model.grad_ready_hook
--   r:finish()           before the optimizer: starts what was not started,
--                        waits for every bucket
--   r.stats              {early =, late =}: buckets started during backward
--                        (overlapped) and in finish, over the run
--
-- The model's gradients live in one flat buffer (nn.materialize). The model
-- names groups of parameters whose gradients complete together
-- (model:grad_group_order(), model:grad_group_of(name); the ViT's are 'head',
-- 'blocks.i' from last to first, 'embed'); a group is contiguous in the flat
-- buffer and groups complete in reverse buffer order, so consecutive groups
-- form contiguous buckets of about bucket_size elements. As soon as every
-- group of a bucket is ready, a non-blocking all_reduce ('avg') of that
-- narrow view of the flat gradient starts over the data-parallel group, and
-- the rest of backward runs while it is in flight (each later hook calls
-- test() on the requests in flight so MPI makes progress).
--
-- With domain parallelism (grid.domain_size > 1) the all_reduce ('avg') runs
-- over domain x data (grid.grad_group): every domain rank's gradients are
-- partial sums over its tokens (lunar.parallel.domain's convention).
--
-- With sequence parallelism, parameters marked sequence_parallel (the block
-- norms and the RowParallelLinear biases, which see only this rank's tokens)
-- have partial gradients: the group's ready hook first sums them over the
-- tensor-parallel group (blocking, small), then the bucket goes to the
-- data-parallel all_reduce.
local reducer = {}

local Reducer = {}
Reducer.__index = Reducer

local numel = require('lunar.nn').numel

--- Creates the reducer of a materialized model and installs its hook
-- (model.grad_ready_hook).
-- @param args {model=, grid=, bucket_size = elements per bucket (default 2^18,
--   1 MiB of f32: PyTorch DDP's first-bucket size; a ViT block of width 192 is
--   one bucket, so each block's all_reduce overlaps the backward of the next)}
-- @return the reducer, or nil when nothing needs synchronizing (one
--   data-parallel rank and no sequence parallelism)
function reducer.new(args)
  local model, g = args.model, args.grid
  local dp = g.dp_size * (g.domain_size or 1) > 1
  local sp = g.sequence_parallel and g.tp_size > 1
  if not dp and not sp then return nil end
  assert(model._flat_grad and model._offsets, 'reducer: materialize the model first')
  local self = setmetatable({model = model, grid = g, dp = dp, sp = sp, sync = true,
    bucket_size = args.bucket_size or (1 << 18), groups = {}, order = {}, buckets = {}, requests = {}}, Reducer)
  -- groups: contiguous ranges of the flat gradient
  local order = model.grad_group_order and model:grad_group_order() or {'all'}
  local by_key = {}
  for i, key in ipairs(order) do
    local grp = {key = key, index = i, lo = math.huge, hi = -1, count = 0, sp_grads = {}}
    by_key[key] = grp
    self.groups[i] = grp
  end
  for _, p in ipairs(model:parameters()) do
    local key = model.grad_group_of and model:grad_group_of(p.name) or 'all'
    local grp = by_key[key]
    if not grp then error(string.format("reducer: parameter %s is in group '%s', which the model's " ..
      'grad_group_order does not list', p.name, key), 2) end
    local off, n = model._offsets[p.name], numel(p.shape)
    grp.lo, grp.hi, grp.count = math.min(grp.lo, off), math.max(grp.hi, off + n - 1), grp.count + n
    if p.sequence_parallel and sp then table.insert(grp.sp_grads, p.grad) end
  end
  for _, grp in ipairs(self.groups) do
    if grp.count > 0 and grp.hi - grp.lo + 1 ~= grp.count then
      error(string.format("reducer: the parameters of group '%s' are not contiguous in the flat gradient", grp.key), 2)
    end
  end
  -- buckets: consecutive groups (reverse buffer order), each a contiguous range
  local cur
  for _, grp in ipairs(self.groups) do
    if grp.count > 0 then
      -- a layerwise block (lunar.parallel.layerwise) averages over its own data-parallel group
      grp.sync = g.grad_sync and g:grad_sync(grp.key) or nil
      if cur and cur.lo ~= grp.hi + 1 then cur = nil end      -- not adjacent: a new bucket
      if cur and cur.sync ~= grp.sync then cur = nil end       -- another group to reduce over
      if not cur or cur.n >= self.bucket_size then
        cur = {lo = grp.lo, hi = grp.hi, n = 0, groups = {}, pending = 0, sync = grp.sync}
        table.insert(self.buckets, cur)
      end
      cur.lo = math.min(cur.lo, grp.lo)
      cur.n = cur.n + grp.count
      table.insert(cur.groups, grp)
      grp.bucket = cur
    end
  end
  for _, b in ipairs(self.buckets) do b.view = model._flat_grad:narrow(1, b.lo, b.hi - b.lo + 1) end
  self.by_key = by_key
  -- buckets started from a backward hook (overlapped) and from finish, over the run
  self.stats = {early = 0, late = 0}
  model.grad_ready_hook = function(key) self:ready(key) end
  self:reset()
  return self
end

--- Forgets the state of the last step (every group not ready).
function Reducer:reset()
  for _, grp in ipairs(self.groups) do grp.done = false end
  for _, b in ipairs(self.buckets) do b.ready, b.started = 0, false end
  self.requests, self.scaled = {}, {}
  self.in_finish = false
end

--- Before a backward: sync = whether this backward completes the step's
-- gradients (only then do the hooks reduce).
function Reducer:begin(sync) self.sync = sync and true or false end

--- Lets MPI progress the collectives in flight.
function Reducer:poke()
  for _, r in ipairs(self.requests) do r:test() end
end

local function start_group(self, grp)
  if grp.done then return end
  grp.done = true
  if self.sp then
    for _, gt in ipairs(grp.sp_grads) do self.grid.tp_group:all_reduce(gt, 'sum') end
  end
  local b = grp.bucket
  if not b then return end
  b.ready = b.ready + 1
  if b.ready == #b.groups and not b.started then
    b.started = true
    if b.sync then
      -- over the block's data-parallel group, then its scale (1 / tensor size: the sum over the group's samples)
      if b.sync.comm:size() > 1 then table.insert(self.requests, b.sync.comm:iall_reduce(b.view, 'avg')) end
      table.insert(self.scaled, b)
    elseif self.dp then
      table.insert(self.requests, (self.grid.grad_group or self.grid.dp_group):iall_reduce(b.view, 'avg'))
    end
    if self.in_finish then self.stats.late = self.stats.late + 1 else self.stats.early = self.stats.early + 1 end
  end
end

--- The hook: the gradients of `key` are complete (when sync).
function Reducer:ready(key)
  if not self.sync then return end
  local grp = self.by_key[key]
  if not grp then return end
  self:poke()
  start_group(self, grp)
end

--- Starts every group not started yet (in backward order) and waits for
-- every bucket; the gradients are then averaged over the data-parallel
-- group (and, with sequence parallelism, summed over the tensor group).
function Reducer:finish()
  self.in_finish = true
  for _, grp in ipairs(self.groups) do start_group(self, grp) end
  for _, r in ipairs(self.requests) do r:wait() end
  for _, b in ipairs(self.scaled) do lunar.ops.scale_(b.view, b.sync.post_scale) end
  self:reset()
end

return reducer
