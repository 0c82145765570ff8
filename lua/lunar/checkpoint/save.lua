--- lunar.checkpoint.save: writes a checkpoint atomically (every rank its
-- shard, rank 0 the index and the rename) and prunes old ones.
--
--   save.save(dir, state)   -> dir/step_<N>   (collective with several ranks)
--   save.prune(dir, keep)   keeps the newest `keep` complete checkpoints
--
-- Atomicity: everything is written into dir/step_<N>.tmp.<pid of rank 0>;
-- rank 0 writes index.json there (fsync'd), renames the directory to
-- dir/step_<N> and fsyncs dir (lunar.checkpoint's module doc has the rest).
local log = require('lunar.log')
local format = require('lunar.checkpoint.format')
local reshard = require('lunar.checkpoint.reshard')
local S = require('lunar.checkpoint.state')

local M = {}

local join = format.join
local sorted_names = require('lunar.schema').sorted_names
local io_ = lunar.io

local function to_cpu(t)
  if t:device() ~= 'cpu' then return t:to('cpu') end
  return t
end

local function check_io(ok, msg, what)
  if not ok then error('checkpoint: ' .. (what and (what .. ': ') or '') .. tostring(msg), 0) end
  return ok
end

--- Whether this rank writes parameter p's pieces (data-parallel rank 0 and
-- domain rank 0: their copies are the same; a replicated parameter only on
-- tensor rank 0; a layerwise block's parameter by its own groups' ranks,
-- L.param_ranks).
local function writes(L, pc, name)
  local dp, tp = L.dp_rank, L.tp_rank
  if L.param_ranks then
    local d, t = L.param_ranks(name)
    if d then dp, tp = d, t end
  end
  if dp ~= 0 or (L.domain_rank or 0) ~= 0 then return false end
  if pc.sharded then return (pc.replica or 0) == 0 end   -- a 2.5D depth replica: layer 0 writes
  return tp == 0
end

--- Sharded data parallelism (lunar.parallel.zero): this rank's blocks as
-- they are, no gather. Each piece (a flat range of a parameter's local
-- tensor, and the same range of each optimizer buffer) is stored as the
-- boxes of that range (reshard.flat_boxes), named '<tensor>@<flat offset>'
-- and described as slices of the full tensor; written by the first replica
-- of the shard group (a replicated tensor-parallel parameter by tensor rank 0).
-- add(name, tensor, pieces, full tensor name) records each.
local function zero_shard(L, state, params, z, add)
  local e = state.engine
  if e and S.mid_accumulation(e.batches_done, e.gradient_accumulation) then
    error(string.format('checkpoint: parallel.zero stage %d saves at the end of a gradient accumulation cycle ' ..
      '(batches_done %d is inside a cycle of %d)', z.stage, e.batches_done, e.gradient_accumulation), 0)
  end
  local by_name = {}
  for _, p in ipairs(params) do by_name[p.name] = p end
  local os_ = S.optimizer(state.optimizer)
  for _, pc in ipairs(z.pieces) do
    local p = by_name[pc.name]
    for _, box in ipairs(reshard.flat_boxes(p.shape, pc.offset, pc.shape[1])) do
      local bp = reshard.box_pieces(p, box.ranges)
      if z.writes and #bp.pieces > 0 and (bp.sharded or L.tp_rank == 0) then
        local suffix = '@' .. (pc.offset + box.offset)
        local function part(t) return t:narrow(1, box.offset + 1, box.n):view(box.shape) end
        add(pc.name .. suffix, part(pc.param), bp, pc.name)
        for key, b in pairs(os_ and os_.buffers or {}) do
          local tname = 'optim.' .. key .. '.' .. pc.name
          add(tname .. suffix, part(b.views[pc.name]:view(-1)), bp, tname)
        end
      end
    end
  end
end

--- The shard of this rank: tensors (name -> CPU tensor) and the shard
-- description (name -> {full_shape, dtype, pieces}).
local function build_shard(L, state, params)
  local tensors, desc = {}, {}
  local function add(name, t, pc, tensor)
    local c = to_cpu(t)
    tensors[name] = c
    desc[name] = {dtype = format.st_dtype(c), full_shape = pc.full_shape, shape = c:shape(), pieces = pc.pieces,
      tensor = tensor}
  end
  local z = state.optimizer and state.optimizer.zero
  if z then
    zero_shard(L, state, params, z, add)
    return tensors, desc
  end
  local pcs = {}
  for _, p in ipairs(params) do pcs[p.name] = reshard.pieces(p) end
  for _, p in ipairs(params) do
    if writes(L, pcs[p.name], p.name) then add(p.name, p.param, pcs[p.name]) end
  end
  local os_ = S.optimizer(state.optimizer)
  if os_ then
    for key, b in pairs(os_.buffers) do
      for name, view in pairs(b.views) do
        local pc = pcs[name]
        if not pc then error('checkpoint: the optimizer holds parameter ' .. name .. ', which the model does not', 0) end
        if writes(L, pc, name) then add('optim.' .. key .. '.' .. name, view, pc) end
      end
    end
  end
  local e = state.engine
  if e and S.mid_accumulation(e.batches_done, e.gradient_accumulation) then
    for _, p in ipairs(params) do
      if p.grad and writes(L, pcs[p.name], p.name) then add('grad.' .. p.name, p.grad, pcs[p.name]) end
    end
  end
  return tensors, desc
end

-- The config as index.json holds it: JSON has no functions, so a function
-- (the key MODEL, models as code) is the text naming where it is defined
-- (config.lua, written by config.dump, holds its source).
local function config_for_json(cfg)
  local out = {}
  for k, v in pairs(cfg) do
    if type(v) == 'function' then
      local info = debug.getinfo(v, 'S')
      out[k] = string.format('function defined at %s:%d (config.lua holds its source)', info.short_src,
        info.linedefined)
    else
      out[k] = v
    end
  end
  return out
end

--- Builds index.json's table from the shard files in tmp (rank 0).
local function build_index(tmp, state, L)
  local files = {}
  for _, n in ipairs(check_io(io_.listdir(tmp))) do
    if format.is_shard_file(n) then files[#files + 1] = n end
  end
  table.sort(files, function(a, b) return tonumber(a:match('%d+')) < tonumber(b:match('%d+')) end)
  local tensors, calls = {}, {}
  for _, f in ipairs(files) do
    local r = io_.open_safetensors(join(tmp, f))
    local meta = r:metadata()
    r:close()
    local sh = format.decode(meta['lunar.shard'] or 'null', join(tmp, f) .. ' (metadata lunar.shard)')
    for name, d in pairs(sh.tensors) do
      local tname = d.tensor or name      -- a ZeRO box '<tensor>@<offset>' is a slice of <tensor>
      local t = tensors[tname]
      if not t then
        t = {dtype = d.dtype, shape = d.full_shape, slices = {}}
        tensors[tname] = t
      end
      for _, pc in ipairs(d.pieces) do
        t.slices[#t.slices + 1] = {file = f, key = name, shape = d.shape, ranges = pc.full, ['local'] = pc['local']}
      end
    end
    for path, c in pairs(sh.dropout_calls or {}) do calls[path] = c end
  end
  local loader = S.loader(state)
  local lpos
  if loader then
    local e, b = loader:position()
    lpos = {epoch = e, batch = b, num_batches = loader:num_batches()}
  end
  local os_ = S.optimizer(state.optimizer)
  local cfg = state.config
  local model_dims
  if cfg then
    model_dims = {}
    for _, k in ipairs(format.MODEL_KEYS) do model_dims[k] = cfg[k] end
  end
  local sched = state.lr_scheduler
  local e = state.engine
  return {
    format = format.FORMAT, version = format.VERSION,
    step = state.step, epoch = state.epoch, updates = S.updates(state),
    loader = lpos,
    optimizer = os_ and {kind = os_.kind, step = os_.step, hyperparameters = os_.scalars,
      lr = state.optimizer.lr, buffers = sorted_names(os_.buffers)} or nil,
    lr_scheduler = sched and sched.state_dict and sched:state_dict() or nil,
    engine = e and {optimizer_steps = e.optimizer_steps, batches_done = e.batches_done,
      gradient_accumulation = e.gradient_accumulation} or nil,
    rng = {seed = cfg and cfg.SEED, dropout_calls = calls, user = state.rng},
    grid = {world_size = L.world_size, dp_size = L.dp_size, tp_size = L.tp_size, pp_size = L.pp_size},
    files = files,
    tensors = tensors,
    model = model_dims,
    config = cfg and config_for_json(cfg),
    config_file = cfg and 'config.lua' or nil,
    time = os.time(),
  }
end

--- Removes all but the newest `keep` complete checkpoints of dir (keep nil
-- or <= 0: keeps all).
function M.prune(dir, keep)
  if not keep or keep <= 0 then return end
  local list = format.complete(dir)
  for i = 1, #list - keep do
    local ok, err = io_.remove_tree(list[i].path)
    if not ok then log.info('checkpoint: could not remove %s: %s', list[i].path, err) end
  end
end

--- Saves `state` (lunar.checkpoint's module doc) to dir/step_<state.step>
-- and returns that path. Collective when there are several ranks: every
-- rank calls it.
function M.save(dir, state)
  assert(type(dir) == 'string' and dir ~= '', 'checkpoint.save: dir must be a non-empty string')
  assert(type(state) == 'table' and state.model, 'checkpoint.save: state.model is required')
  local step = math.tointeger(state.step)
  if not step or step < 0 then error('checkpoint.save: state.step must be an integer >= 0, got ' .. tostring(state.step), 2) end
  local L = S.layout(state)
  local params = S.params(state)
  local final = join(dir, 'step_' .. step)
  local pid = S.from_rank0(L, io_.getpid())
  local tmp = final .. '.tmp.' .. pid
  if L.rank == 0 then
    check_io(io_.mkdir(dir))
    if io_.stat(tmp) then check_io(io_.remove_tree(tmp)) end
    check_io(io_.mkdir(tmp))
  end
  S.barrier(L)
  -- every writing rank: its shard, described in the file's metadata
  local tensors, desc = build_shard(L, state, params)
  if next(tensors) then
    local calls = L.tp_rank == 0 and S.dropout_calls(state.model) or {}
    local meta = {format = 'pt', ['lunar.format'] = format.FORMAT,
      ['lunar.shard'] = format.encode({rank = L.rank, dp_rank = L.dp_rank, tp_rank = L.tp_rank, pp_rank = L.pp_rank,
        tensors = desc, dropout_calls = calls}, 'the shard description')}
    io_.save_safetensors(join(tmp, format.shard_file(L.rank)), tensors, meta)
  end
  S.barrier(L)
  if L.rank == 0 then
    local index = build_index(tmp, state, L)
    if state.config then   -- the resolved config, loadable with --config
      check_io(io_.write_file(join(tmp, 'config.lua'), '-- the resolved config of ' .. final .. '\nreturn ' ..
        require('lunar.config').dump(state.config, {comments = true}) .. '\n'))
    end
    check_io(io_.write_file(join(tmp, 'index.json'), format.encode(index, 'index.json') .. '\n'))
    check_io(io_.fsync_dir(tmp))
    if io_.stat(final) then   -- re-saving a step: move the old one aside first
      local old = final .. '.old.' .. pid
      check_io(io_.rename(final, old))
      check_io(io_.rename(tmp, final))
      io_.remove_tree(old)
    else
      check_io(io_.rename(tmp, final))
    end
    check_io(io_.fsync_dir(dir))
    local keep = state.keep or (state.config and state.config.KEEP_CHECKPOINTS) or 0
    M.prune(dir, keep)
  end
  S.barrier(L)
  return final
end

return M
