--- lunar.checkpoint.load: restores a training state from a checkpoint of
-- any parallel layout, checking everything before anything in memory changes.
--
--   load.load(path, state) -> info {path=, step=, epoch=, updates=, loader=, rng=, index=}
--
-- Validation order, and what is read: lunar.checkpoint's module doc.
local format = require('lunar.checkpoint.format')
local reshard = require('lunar.checkpoint.reshard')
local S = require('lunar.checkpoint.state')

local M = {}

local join, int, numel = format.join, format.int, format.numel
local io_ = lunar.io

--- The model dims of the saved config must equal this run's config.
local function check_config(idx, ipath, cfg)
  if not cfg or type(idx.model) ~= 'table' then return end
  for _, k in ipairs(format.MODEL_KEYS) do
    local a, b = idx.model[k], cfg[k]
    if a ~= nil and b ~= nil and a ~= b then
      error(string.format('checkpoint %s: the model differs from this config: %s is %s in the checkpoint, %s here',
        ipath, k, tostring(math.tointeger(a) or a), tostring(math.tointeger(b) or b)), 0)
    end
  end
end

--- Reads everything of `state` the checkpoint holds into temporaries and
-- checks it; returns the pending changes {dst=, src=}..., .optimizer,
-- .grads, .loader, .calls. Errors (nothing changed) name file and tensor.
local function read_all(idx, ipath, state, params, reader, commits)
  local function bad(msg) error(string.format('checkpoint %s: %s', ipath, msg), 0) end
  local pcs, by_name = {}, {}
  for _, p in ipairs(params) do
    pcs[p.name], by_name[p.name] = reshard.pieces(p), p
    if p.param then        -- (ZeRO-3 holds no full parameter)
      local tmp = lunar.empty(p.shape, p.param:dtype(), 'cpu')
      commits[#commits + 1] = {dst = p.param, src = tmp}
      reader:fill(p.name, tmp, pcs[p.name], 'a parameter')
    end
  end
  -- sharded data parallelism: each piece of this rank's shard, box by box (reshard.flat_boxes)
  local z = state.optimizer and state.optimizer.zero
  local function zero_fill(name, dst, pc, what)   -- dst: the 1-D piece of parameter pc.name
    local p = by_name[pc.name]
    for _, box in ipairs(reshard.flat_boxes(p.shape, pc.offset, pc.shape[1])) do
      local tmp = lunar.empty(box.shape, dst:dtype(), 'cpu')
      commits[#commits + 1] = {dst = dst:narrow(1, box.offset + 1, box.n):view(box.shape), src = tmp}
      reader:fill(name, tmp, reshard.box_pieces(p, box.ranges), what)
    end
  end
  if z then
    for _, pc in ipairs(z.pieces) do zero_fill(pc.name, pc.param, pc, 'a parameter (its ZeRO shard)') end
  end
  -- optimizer
  local os_ = S.optimizer(state.optimizer)
  if os_ then
    local io_opt = idx.optimizer
    if type(io_opt) ~= 'table' then bad('no optimizer state, but this run has an optimizer') end
    if io_opt.kind ~= os_.kind then
      bad(string.format("the optimizer is '%s' in the checkpoint, '%s' here", tostring(io_opt.kind), tostring(os_.kind)))
    end
    if not int(io_opt.step) then bad('optimizer.step is missing or not an integer') end
    local opt_sd = {kind = os_.kind, step = int(io_opt.step)}
    for key, b in pairs(os_.buffers) do
      local flat = lunar.zeros(b.flat:shape(), b.flat:dtype(), 'cpu')
      local off = 1
      for _, p in ipairs(state.optimizer.params) do
        local n = numel(p.shape)
        local view = flat:narrow(1, off, n):view(p.shape)
        off = off + n
        local name, what = 'optim.' .. key .. '.' .. p.name, 'the optimizer state of parameter ' .. p.name
        if z then zero_fill(name, view, p, what) else reader:fill(name, view, pcs[p.name] or reshard.pieces(p), what) end
      end
      opt_sd[key] = flat
    end
    commits.optimizer = opt_sd
  end
  -- gradients of an accumulation cycle in progress
  local e = state.engine
  local ie = type(idx.engine) == 'table' and idx.engine or nil
  -- engine counters: optimizer_steps, batches_done (step_count, micro_step before they were renamed)
  if e and ie and S.mid_accumulation(int(ie.batches_done) or int(ie.micro_step), int(ie.gradient_accumulation)) then
    if z then
      bad(string.format('saved in the middle of a gradient accumulation cycle, which this run (parallel.zero stage %d) ' ..
        'cannot resume: resume from a checkpoint at the end of a cycle', z.stage))
    end
    if (e.gradient_accumulation or 1) ~= ie.gradient_accumulation then
      bad(string.format('saved in the middle of a gradient accumulation cycle of %d, but this run accumulates %d',
        int(ie.gradient_accumulation), e.gradient_accumulation or 1))
    end
    local grads = {}
    commits.grads = grads
    for _, p in ipairs(params) do
      local tmp = lunar.empty(p.shape, p.grad:dtype(), 'cpu')
      grads[#grads + 1] = {dst = p.grad, src = tmp}
      reader:fill('grad.' .. p.name, tmp, pcs[p.name], 'the accumulated gradient of parameter ' .. p.name)
    end
  end
  -- loader position
  local loader = S.loader(state)
  if loader then
    local l = idx.loader
    if type(l) ~= 'table' or not int(l.epoch) or not int(l.batch) then bad('no loader position') end
    local nb = loader:num_batches()
    local le, lb = int(l.epoch), int(l.batch)
    if lb < 0 or le < 0 or lb > math.max(nb, int(l.num_batches) or 0) then
      bad(string.format('loader position (epoch %d, batch %d) is outside an epoch of %d batches', le, lb, nb))
    end
    if lb >= nb then le, lb = le + 1, 0 end
    commits.loader = {epoch = le, batch = lb}
  end
  -- dropout counters
  local calls = type(idx.rng) == 'table' and type(idx.rng.dropout_calls) == 'table' and idx.rng.dropout_calls or nil
  if calls then
    for p in pairs(S.dropout_calls(state.model)) do
      if not int(calls[p]) then bad(string.format("no dropout call counter for module '%s'", p)) end
    end
  end
  commits.calls = calls
end

--- Sets the LR schedule's fields from the saved ones (or its
-- load_state_dict); index.json holds them exactly (lunar.json).
local function restore_schedule(sched, saved)
  if sched.load_state_dict then return sched:load_state_dict(saved) end
  for k, v in pairs(saved) do
    if sched[k] ~= nil and type(v) == type(sched[k]) then sched[k] = v end
  end
end

--- Restores `state` (lunar.checkpoint's module doc) from the checkpoint at
-- `path` (a step_<N> directory or its index.json). Validates everything
-- first; on any error nothing in memory has changed. Returns info: {path=,
-- step=, epoch=, updates=, loader={epoch=, batch=} (where the loader now
-- stands: the batch after the saved one, past the end of an epoch moved to
-- the next epoch's start), rng= (the saved user rng table), index= (the
-- decoded index.json)}. Local to each rank (reads only the files holding
-- what this rank needs).
function M.load(path, state)
  assert(type(state) == 'table' and state.model, 'checkpoint.load: state.model is required')
  local idx, dir, ipath = format.read_index(path)
  for _, f in ipairs(idx.files) do
    if type(f) ~= 'string' or io_.stat(join(dir, f)) ~= 'file' then
      error(string.format('checkpoint %s: missing (listed in %s)', join(dir, tostring(f)), ipath), 0)
    end
  end
  check_config(idx, ipath, state.config)
  local params = S.params(state)
  local reader = reshard.reader(idx, dir, ipath)
  local commits = {}      -- {dst=, src=} copies done once everything is read
  local ok, err = pcall(read_all, idx, ipath, state, params, reader, commits)
  reader:close()
  if not ok then
    for _, c in ipairs(commits) do c.src:free() end
    for _, c in ipairs(commits.grads or {}) do c.src:free() end
    error(err, 0)
  end
  -- everything is read and checked: change the state
  for _, c in ipairs(commits) do c.dst:copy_(c.src); c.src:free() end
  if state.model.sync_working_weights then state.model:sync_working_weights() end   -- precision = 'bf16'
  if commits.optimizer then state.optimizer:load_state_dict(commits.optimizer) end
  if commits.grads then for _, c in ipairs(commits.grads) do c.dst:copy_(c.src); c.src:free() end end
  local e = state.engine
  if e then
    local ie = type(idx.engine) == 'table' and idx.engine or {}
    e.optimizer_steps = int(ie.optimizer_steps) or int(ie.step_count) or int(idx.updates) or e.optimizer_steps
    e.batches_done = int(ie.batches_done) or int(ie.micro_step) or int(idx.step) or e.batches_done
  end
  if commits.calls then S.set_dropout_calls(state.model, commits.calls) end
  if state.lr_scheduler and type(idx.lr_scheduler) == 'table' then restore_schedule(state.lr_scheduler, idx.lr_scheduler) end
  local loader = S.loader(state)
  if loader and commits.loader then loader:seek(commits.loader.epoch, commits.loader.batch) end
  return {path = dir, step = int(idx.step), epoch = int(idx.epoch) or idx.epoch, updates = int(idx.updates),
    loader = commits.loader, rng = type(idx.rng) == 'table' and idx.rng.user or nil, index = idx}
end

return M
