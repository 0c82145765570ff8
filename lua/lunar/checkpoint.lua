--- lunar.checkpoint: sharded checkpoints in safetensors with timm's names,
-- written atomically, resumed bitwise, loaded into another parallel layout.
--
--   local checkpoint = require('lunar.checkpoint')
--   checkpoint.save(dir, state)            -> the path dir/step_<N>
--   checkpoint.latest(dir)                 -> the newest complete checkpoint, its step; or nil
--   checkpoint.load(path, state)           -> info {step=, epoch=, updates=, loader={epoch=, batch=}, ...}
--   checkpoint.maybe_resume(cfg, state)    -> info or nil (RESUME: '', 'auto' or a path)
--   checkpoint.maybe_save(cfg, state [, {final=true}]) -> the path, or nil (CHECKPOINT_DIR, SAVE_EVERY)
--   checkpoint.register_slicer(fn)         see "Shards" below
--
-- state = {model=, optimizer=, lr_scheduler=, engine=, loader= (or train_loader=),
--          step= (iterations done), epoch=, updates= (optimizer updates; default
--          engine.step_count or optimizer.t), rng= (a table of plain data, saved as
--          is), config= (the resolved config), grid= (lunar.parallel's grid; nil
--          on one rank), keep= (KEEP_CHECKPOINTS; default config's)}
-- Only model and step are required for save; load restores what the state has.
--
-- Layout of a checkpoint (dir/step_<N>/):
--   model_rank<R>.safetensors  the tensors rank R holds and writes: each parameter
--       under its timm name (this rank's shard of it), the optimizer state as
--       per-parameter tensors `optim.<buffer>.<name>` (AdamW: exp_avg,
--       exp_avg_sq; SGD: momentum_buffer), views of the optimizer's flat buffers,
--       and, when saved in the middle of a gradient accumulation cycle, the
--       accumulated gradients `grad.<name>`. Its __metadata__ "lunar.shard"
--       (JSON) lists, for each tensor, the full shape and the pieces it holds.
--   index.json  written last, by rank 0: format, step, epoch, updates, loader
--       position (epoch, batch), optimizer kind and step count, LR schedule
--       state, engine counters, RNG (seed, every Dropout's call counter, the
--       state's rng table), the parallel layout, the resolved config (as a
--       JSON object; also written as config.lua, `return <config.dump>`, a
--       config file) and the model dims, the files, and for every tensor its
--       dtype, full shape and slices: {file=, key=, shape= (of the stored
--       tensor), ranges={{start, length} per dim of the full tensor},
--       ["local"]={{start, length} per dim of the stored tensor}} (0-based).
--
-- Atomicity: everything is written into dir/step_<N>.tmp.<pid of rank 0>;
-- rank 0 writes index.json there (fsync'd), renames the directory to
-- dir/step_<N> and fsyncs dir. An interrupted save leaves only a .tmp
-- directory, which latest() and RESUME='auto' ignore, so it never replaces or
-- shadows the last complete checkpoint. Re-saving an existing step moves the
-- old directory aside, renames the new one in, then removes the old one.
-- With several ranks (lunar.comm), the ranks meet in barriers: after rank 0
-- made the temporary directory, after every shard is written (rank 0 then
-- reads the shard headers to build the index: CHECKPOINT_DIR must be on a file
-- system every rank sees), and after the rename. On one rank (no MPI) there is
-- no communication.
--
-- Who writes what: the ranks of data-parallel rank 0 write, every other data
-- parallel replica holds the same values. A tensor-parallel shard (a parameter
-- with p.shard) is written by each tensor rank; a replicated parameter by
-- tensor rank 0; each pipeline stage writes its own parameters.
--
-- Loading validates everything before any state in memory changes: index.json
-- must exist and be valid JSON of this format, every file it lists must exist,
-- the model dims of the saved config must equal this run's (when state.config
-- is given), every parameter (and optimizer buffer) of this rank's model must
-- be in the index with the model's full shape and dtype, its slices must not
-- overlap and must cover what this rank needs, each slice's file must be a
-- valid safetensors file (the C reader checks the header JSON, dtypes, shapes
-- and offsets) holding the tensor with the dtype and shape the index says, the
-- loader position must be within the loader's epoch. The tensors are read into
-- temporaries; only when all are read are they copied into the model and the
-- optimizer and the counters set. Errors name the file and the tensor.
--
-- Shards (resharding): a parameter's place in the full tensor is given by
-- checkpoint.pieces(p): a list of {full = ranges, ["local"] = ranges} and the
-- full shape. Built in: a plain parameter (the whole tensor); p.shard =
-- {dim=, groups=, size=, rank=, full_shape=} (lunar.nn.shard_pieces: the
-- tensor-parallel layout of lunar.parallel); p.shard = {dim=, start=, length=,
-- full_shape=} (one contiguous slice, start 0-based). register_slicer(fn)
-- adds fn(p) -> nil | {full_shape=, pieces={{full=, ["local"]=}, ...}} tried
-- before the built-ins. Loading assembles each piece a rank needs from the
-- stored slices that overlap it, so any saved layout loads into any other.
--
-- Resuming on the same layout is bitwise identical to not stopping: the
-- loader's shuffle is a pure function of (seed, epoch) and its position is
-- restored with loader:seek; dropout masks are Philox streams keyed by
-- (seed, module path, call counter) and the counters are restored; the LR
-- schedule is a function of the update count (engine.step_count). Resuming
-- with another data-parallel size continues at the same batch index, which
-- is the same point of the epoch when the global batch is unchanged.
local nn = require('lunar.nn')
local log = require('lunar.log')

local checkpoint = {}

checkpoint.FORMAT = 'lunar-checkpoint'
checkpoint.VERSION = 1

-- The config keys that fix the model's parameter shapes.
checkpoint.MODEL_KEYS = {'IMG_SIZE', 'PATCH_SIZE', 'IN_CHANS', 'HIDDEN_SIZE', 'DEPTH', 'NUM_HEADS', 'MLP_RATIO',
  'NUM_CLASSES', 'IMG_DIMS'}

local io_ = lunar.io

-- ---------------------------------------------------------------------------
-- small helpers

local function join(a, b)
  if a == '' then return b end
  return (a:sub(-1) == '/' and a or a .. '/') .. b
end

local function numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

local function shape_str(s)
  local t = {}
  for i, v in ipairs(s) do t[i] = tostring(math.tointeger(v) or v) end
  return '[' .. table.concat(t, ', ') .. ']'
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
-- for lunar.timm's messages and checks on the same safetensors headers
checkpoint.shape_str, checkpoint.same_shape = shape_str, same_shape

local function whole(shape)
  local r = {}
  for i, s in ipairs(shape) do r[i] = {0, s} end
  return r
end

local function st_dtype(t) return t:dtype():upper() end

local function to_cpu(t)
  if t:device() ~= 'cpu' then return t:to('cpu') end
  return t
end

--- An integer from a decoded JSON number (cjson gives floats), or nil.
local function int(v)
  if type(v) ~= 'number' then return nil end
  return math.tointeger(v)
end

-- ---------------------------------------------------------------------------
-- JSON: written here (floats with 17 significant digits, so they read back
-- exactly; keys sorted, so files are reproducible), read with lua-cjson.

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = {['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
    return map[c] or string.format('\\u%04x', c:byte())
  end) .. '"'
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  if n == 0 then return false end
  for i = 1, n do if t[i] == nil then return false end end
  return true
end

--- Encodes v as JSON; tables nested deeper than `pretty` levels go on one line.
local function json_encode(v, pretty, indent, path)
  indent, path = indent or '', path or '$'
  local tv = type(v)
  if tv == 'nil' then return 'null' end
  if tv == 'boolean' then return tostring(v) end
  if tv == 'number' then
    if math.type(v) == 'integer' then return string.format('%d', v) end
    if v ~= v or v == math.huge or v == -math.huge then
      error(string.format('checkpoint: cannot write the number %s at %s in JSON', tostring(v), path), 0)
    end
    if v == math.floor(v) and math.abs(v) < 2^53 then return string.format('%.1f', v) end
    for _, fmt in ipairs({'%.15g', '%.16g'}) do   -- the shortest text that reads back exactly
      local t = string.format(fmt, v)
      if tonumber(t) == v then return t end
    end
    return string.format('%.17g', v)
  end
  if tv == 'string' then return json_string(v) end
  if tv ~= 'table' then error(string.format('checkpoint: cannot write a %s at %s in JSON', tv, path), 0) end
  local nl = pretty and pretty > 0
  local inner = indent .. '  '
  local sub = pretty and pretty - 1
  local parts = {}
  if is_array(v) then
    for i, x in ipairs(v) do parts[i] = json_encode(x, sub, inner, path .. '[' .. i .. ']') end
    if not nl then return '[' .. table.concat(parts, ', ') .. ']' end
    return '[\n' .. inner .. table.concat(parts, ',\n' .. inner) .. '\n' .. indent .. ']'
  end
  local keys = {}
  for k in pairs(v) do
    if type(k) ~= 'string' then error(string.format('checkpoint: a %s key at %s in JSON', type(k), path), 0) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  if #keys == 0 then return '{}' end
  for i, k in ipairs(keys) do
    parts[i] = json_string(k) .. ': ' .. json_encode(v[k], sub, inner, path .. '.' .. k)
  end
  if not nl then return '{' .. table.concat(parts, ', ') .. '}' end
  return '{\n' .. inner .. table.concat(parts, ',\n' .. inner) .. '\n' .. indent .. '}'
end
checkpoint.json_encode = json_encode

--- t with every integral float turned into an integer (in place; for
-- decoded JSON whose numbers are all counts).
local function ints(t)
  if type(t) == 'number' then return math.tointeger(t) or t end
  if type(t) ~= 'table' then return t end
  for k, v in pairs(t) do t[k] = ints(v) end
  return t
end

local function json_decode(text, where)
  local cjson = require('cjson')
  local ok, v = pcall(cjson.decode, text)
  if not ok then error(string.format('%s: not valid JSON (%s)', where, tostring(v):gsub('^.-: ', '')), 0) end
  return v
end

-- ---------------------------------------------------------------------------
-- the process layout

--- {rank, world_size, dp_rank, dp_size, tp_rank, tp_size, pp_rank, pp_size, comm}
-- from a grid, else the world communicator (every rank a data-parallel replica).
local function layout(state)
  local g = state.grid
  if g then
    return {rank = g.rank, world_size = g.world_size, dp_rank = g.dp_rank, dp_size = g.dp_size,
      tp_rank = g.tp_rank, tp_size = g.tp_size, pp_rank = g.pp_rank, pp_size = g.pp_size, comm = g.world}
  end
  local w = lunar.comm and lunar.comm.world and lunar.comm.world()
  local rank, size = w and w:rank() or 0, w and w:size() or 1
  return {rank = rank, world_size = size, dp_rank = rank, dp_size = size, tp_rank = 0, tp_size = 1,
    pp_rank = 0, pp_size = 1, comm = w}
end

local function barrier(L) if L.world_size > 1 then L.comm:barrier() end end

--- Rank 0's integer on every rank.
local function from_rank0(L, x)
  if L.world_size <= 1 then return x end
  return math.tointeger(L.comm:all_reduce_number(L.rank == 0 and x or 0, 'sum'))
end

-- ---------------------------------------------------------------------------
-- shards: where a parameter sits in the full tensor

local slicers = {}

--- Registers fn(p) -> nil | {full_shape=, pieces={{full=ranges, ["local"]=ranges}, ...}},
-- tried (last registered first) before the built-in rules; p is an entry of
-- model:parameters() (name, shape, param, shard, ...). Ranges are lists of
-- {start, length} per dim, 0-based; full ranges are in the full tensor,
-- local ranges in p.param.
function checkpoint.register_slicer(fn)
  assert(type(fn) == 'function', 'checkpoint.register_slicer: expected a function')
  table.insert(slicers, fn)
end

--- Where parameter p's local tensor sits in the full tensor: {full_shape=,
-- pieces={{full=, ["local"]=}, ...}, sharded=bool}.
function checkpoint.pieces(p)
  for i = #slicers, 1, -1 do
    local r = slicers[i](p)
    if r then
      r.sharded = r.sharded ~= false and not (#r.pieces == 1 and same_shape(r.full_shape, p.shape))
      return r
    end
  end
  local sh = p.shard
  if not sh then return {full_shape = p.shape, pieces = {{full = whole(p.shape), ['local'] = whole(p.shape)}}, sharded = false} end
  local fs = sh.full_shape
  assert(fs and sh.dim, 'checkpoint: parameter ' .. tostring(p.name) .. ' has a shard without dim and full_shape')
  local d = sh.dim
  local function ranges(start, len)
    local r = whole(fs)
    r[d] = {start, len}
    return r
  end
  local pieces = {}
  if sh.start then
    local loc = whole(p.shape)
    pieces[1] = {full = ranges(sh.start, sh.length or p.shape[d]), ['local'] = loc}
  else
    for _, pc in ipairs(nn.shard_pieces(sh)) do
      local loc = whole(p.shape)
      loc[d] = {pc.local_offset, pc.len}
      pieces[#pieces + 1] = {full = ranges(pc.full_offset, pc.len), ['local'] = loc}
    end
  end
  return {full_shape = fs, pieces = pieces, sharded = true}
end

--- Whether this rank writes parameter p's pieces (data-parallel rank 0; a
-- replicated parameter only on tensor rank 0).
local function writes(L, pc)
  if L.dp_rank ~= 0 then return false end
  return pc.sharded or L.tp_rank == 0
end

-- ---------------------------------------------------------------------------
-- what a state holds

local function params_of(state)
  local ps = state.model:parameters()
  for _, p in ipairs(ps) do
    if not p.param then error('checkpoint: parameter ' .. p.name .. ' has no storage (materialize the model first)', 0) end
  end
  return ps
end

--- The optimizer's flat buffers as per-parameter views: {kind=, step=,
-- scalars={...}, buffers={key -> {flat=, views={name -> view}}}}, nil without one.
local function optimizer_state(opt)
  if not opt or not opt.state_dict then return nil end
  local sd = opt:state_dict()
  local params = opt.params or {}
  local total = 0
  for _, p in ipairs(params) do total = total + numel(p.shape) end
  local out = {kind = sd.kind, step = sd.step, scalars = {}, buffers = {}}
  for k, v in pairs(sd) do
    if lunar.is_tensor(v) then
      if v:numel() ~= math.max(total, 1) then
        error(string.format('checkpoint: optimizer buffer %s has %d elements, its parameters %d (a partitioned ' ..
          'optimizer state is not supported)', k, v:numel(), total), 0)
      end
      local views, off = {}, 1
      for _, p in ipairs(params) do
        local n = numel(p.shape)
        views[p.name] = v:narrow(1, off, n):view(p.shape)
        off = off + n
      end
      out.buffers[k] = {flat = v, views = views}
    elseif k ~= 'kind' and k ~= 'step' and (type(v) == 'number' or type(v) == 'string' or type(v) == 'boolean') then
      out.scalars[k] = v
    end
  end
  return out
end

--- Dropout call counters by module path.
local function dropout_calls(model)
  local out = {}
  model:apply(function(m, path)
    if m.__name == 'Dropout' or (type(m.calls) == 'number' and m.p ~= nil) then out[path] = m.calls end
  end)
  return out
end

local function loader_of(state) return state.loader or state.train_loader end

local function updates_of(state)
  if state.updates then return state.updates end
  if state.engine and state.engine.step_count then return state.engine.step_count end
  if state.optimizer and state.optimizer.t then return state.optimizer.t end
  return state.step
end

-- ---------------------------------------------------------------------------
-- save

--- The shard of this rank: tensors (name -> CPU tensor) and the shard
-- description (name -> {full_shape, dtype, pieces}).
local function build_shard(L, state, params)
  local tensors, desc = {}, {}
  local function add(name, t, pc)
    local c = to_cpu(t)
    tensors[name] = c
    desc[name] = {dtype = st_dtype(c), full_shape = pc.full_shape, shape = c:shape(), pieces = pc.pieces}
  end
  local pcs = {}
  for _, p in ipairs(params) do pcs[p.name] = checkpoint.pieces(p) end
  for _, p in ipairs(params) do
    if writes(L, pcs[p.name]) then add(p.name, p.param, pcs[p.name]) end
  end
  local os_ = optimizer_state(state.optimizer)
  if os_ then
    for key, b in pairs(os_.buffers) do
      for name, view in pairs(b.views) do
        local pc = pcs[name]
        if not pc then error('checkpoint: the optimizer holds parameter ' .. name .. ', which the model does not', 0) end
        if writes(L, pc) then add('optim.' .. key .. '.' .. name, view, pc) end
      end
    end
  end
  local e = state.engine
  if e and e.micro_step and (e.gradient_accumulation or 1) > 1 and e.micro_step % e.gradient_accumulation ~= 0 then
    for _, p in ipairs(params) do
      if p.grad and writes(L, pcs[p.name]) then add('grad.' .. p.name, p.grad, pcs[p.name]) end
    end
  end
  return tensors, desc
end

local function check_io(ok, msg, what)
  if not ok then error('checkpoint: ' .. (what and (what .. ': ') or '') .. tostring(msg), 0) end
  return ok
end

--- Complete checkpoints in dir: a list of {step=, path=} sorted by step.
local function complete_checkpoints(dir)
  local names = io_.listdir(dir)
  local out = {}
  if not names then return out end
  for _, n in ipairs(names) do
    local s = n:match('^step_(%d+)$')
    if s and io_.stat(join(join(dir, n), 'index.json')) == 'file' then
      out[#out + 1] = {step = math.tointeger(tonumber(s)), path = join(dir, n)}
    end
  end
  table.sort(out, function(a, b) return a.step < b.step end)
  return out
end

--- Builds index.json from the shard files in tmp (rank 0).
local function build_index(tmp, state, L)
  local files = {}
  for _, n in ipairs(check_io(io_.listdir(tmp))) do
    if n:match('^model_rank%d+%.safetensors$') then files[#files + 1] = n end
  end
  table.sort(files, function(a, b) return tonumber(a:match('%d+')) < tonumber(b:match('%d+')) end)
  local tensors, calls = {}, {}
  for _, f in ipairs(files) do
    local r = io_.open_safetensors(join(tmp, f))
    local meta = r:metadata()
    r:close()
    local sh = ints(json_decode(meta['lunar.shard'] or 'null', join(tmp, f) .. ' (metadata lunar.shard)'))
    for name, d in pairs(sh.tensors) do
      local t = tensors[name]
      if not t then
        t = {dtype = d.dtype, shape = d.full_shape, slices = {}}
        tensors[name] = t
      end
      for _, pc in ipairs(d.pieces) do
        t.slices[#t.slices + 1] = {file = f, key = name, shape = d.shape, ranges = pc.full, ['local'] = pc['local']}
      end
    end
    for path, c in pairs(sh.dropout_calls or {}) do calls[path] = c end
  end
  local loader = loader_of(state)
  local lpos
  if loader then
    local e, b = loader:position()
    lpos = {epoch = e, batch = b, num_batches = loader:num_batches()}
  end
  local os_ = optimizer_state(state.optimizer)
  local cfg = state.config
  local model_dims
  if cfg then
    model_dims = {}
    for _, k in ipairs(checkpoint.MODEL_KEYS) do model_dims[k] = cfg[k] end
  end
  local sched = state.lr_scheduler
  local e = state.engine
  return {
    format = checkpoint.FORMAT, version = checkpoint.VERSION,
    step = state.step, epoch = state.epoch, updates = updates_of(state),
    loader = lpos,
    optimizer = os_ and {kind = os_.kind, step = os_.step, hyperparameters = os_.scalars,
      lr = state.optimizer.lr, buffers = (function()
        local ks = {}
        for k in pairs(os_.buffers) do ks[#ks + 1] = k end
        table.sort(ks)
        return ks
      end)()} or nil,
    lr_scheduler = sched and sched.state_dict and sched:state_dict() or nil,
    engine = e and {step_count = e.step_count, micro_step = e.micro_step,
      gradient_accumulation = e.gradient_accumulation} or nil,
    rng = {seed = cfg and cfg.SEED, dropout_calls = calls, user = state.rng},
    grid = {world_size = L.world_size, dp_size = L.dp_size, tp_size = L.tp_size, pp_size = L.pp_size},
    files = files,
    tensors = tensors,
    model = model_dims,
    config = cfg,
    config_file = cfg and 'config.lua' or nil,
    time = os.time(),
  }
end

--- Removes all but the newest `keep` complete checkpoints of dir.
function checkpoint.prune(dir, keep)
  if not keep or keep <= 0 then return end
  local list = complete_checkpoints(dir)
  for i = 1, #list - keep do
    local ok, err = io_.remove_tree(list[i].path)
    if not ok then log.info('checkpoint: could not remove %s: %s', list[i].path, err) end
  end
end

--- Saves `state` (see the module doc) to dir/step_<state.step> and returns
-- that path. Collective when there are several ranks: every rank calls it.
function checkpoint.save(dir, state)
  assert(type(dir) == 'string' and dir ~= '', 'checkpoint.save: dir must be a non-empty string')
  assert(type(state) == 'table' and state.model, 'checkpoint.save: state.model is required')
  local step = math.tointeger(state.step)
  if not step or step < 0 then error('checkpoint.save: state.step must be an integer >= 0, got ' .. tostring(state.step), 2) end
  local L = layout(state)
  local params = params_of(state)
  local final = join(dir, 'step_' .. step)
  local pid = from_rank0(L, io_.getpid())
  local tmp = final .. '.tmp.' .. pid
  if L.rank == 0 then
    check_io(io_.mkdir(dir))
    if io_.stat(tmp) then check_io(io_.remove_tree(tmp)) end
    check_io(io_.mkdir(tmp))
  end
  barrier(L)
  -- every writing rank: its shard, described in the file's metadata
  local tensors, desc = build_shard(L, state, params)
  if next(tensors) then
    local calls = L.tp_rank == 0 and dropout_calls(state.model) or {}
    local meta = {format = 'pt', ['lunar.format'] = checkpoint.FORMAT,
      ['lunar.shard'] = json_encode({rank = L.rank, dp_rank = L.dp_rank, tp_rank = L.tp_rank, pp_rank = L.pp_rank,
        tensors = desc, dropout_calls = calls})}
    io_.save_safetensors(join(tmp, string.format('model_rank%d.safetensors', L.rank)), tensors, meta)
  end
  barrier(L)
  if L.rank == 0 then
    local index = build_index(tmp, state, L)
    if state.config then   -- the resolved config, loadable with --config
      check_io(io_.write_file(join(tmp, 'config.lua'), '-- the resolved config of ' .. final .. '\nreturn ' ..
        require('lunar.config').dump(state.config, {comments = true}) .. '\n'))
    end
    check_io(io_.write_file(join(tmp, 'index.json'), json_encode(index, 2) .. '\n'))
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
    checkpoint.prune(dir, keep)
  end
  barrier(L)
  return final
end

--- The newest complete checkpoint in dir (a step_<N> directory holding
-- index.json; .tmp directories are ignored) and its step, or nil.
function checkpoint.latest(dir)
  if type(dir) ~= 'string' or dir == '' then return nil end
  local list = complete_checkpoints(dir)
  if #list == 0 then return nil end
  return list[#list].path, list[#list].step
end

-- ---------------------------------------------------------------------------
-- load

--- Reads and checks index.json of the checkpoint at path (a step directory
-- or its index.json). Returns index, the directory, the index path.
function checkpoint.read_index(path)
  if type(path) ~= 'string' or path == '' then error('checkpoint: no checkpoint path given', 0) end
  local dir, ipath
  if path:match('index%.json$') then
    ipath, dir = path, path:match('^(.*)/[^/]*$') or '.'
  else
    dir, ipath = path:gsub('/+$', ''), join(path, 'index.json')
  end
  local kind = io_.stat(dir)
  if not kind then error(string.format('checkpoint %s: no such directory', dir), 0) end
  if kind ~= 'dir' then error(string.format('checkpoint %s: not a directory (expected a step_<N> directory)', dir), 0) end
  local f = io.open(ipath, 'rb')
  if not f then
    local hint = ''
    if checkpoint.latest(dir) then
      hint = string.format(" (%s holds checkpoints: give one of its step_<N> directories, or RESUME='auto' with " ..
        'CHECKPOINT_DIR=%s)', dir, dir)
    end
    error(string.format('checkpoint %s: missing (an incomplete or interrupted save, or not a checkpoint directory)%s',
      ipath, hint), 0)
  end
  local text = f:read('a')
  f:close()
  local idx = json_decode(text, 'checkpoint ' .. ipath)
  local function bad(msg) error(string.format('checkpoint %s: %s', ipath, msg), 0) end
  if type(idx) ~= 'table' or idx.format ~= checkpoint.FORMAT then bad('not a Lunar checkpoint index (format)') end
  for _, k in ipairs({'version', 'step', 'epoch', 'updates', 'loader', 'engine', 'rng', 'grid', 'tensors'}) do
    if k ~= 'rng' then idx[k] = ints(idx[k]) elseif type(idx.rng) == 'table' then idx.rng.dropout_calls = ints(idx.rng.dropout_calls) end
  end
  if type(idx.optimizer) == 'table' then idx.optimizer.step = ints(idx.optimizer.step) end
  if not int(idx.version) or int(idx.version) > checkpoint.VERSION then
    bad('unsupported version ' .. tostring(idx.version))
  end
  if not int(idx.step) then bad('step is missing or not an integer') end
  if type(idx.tensors) ~= 'table' then bad('tensors is missing') end
  if type(idx.files) ~= 'table' then bad('files is missing') end
  for name, t in pairs(idx.tensors) do
    if type(t) ~= 'table' or type(t.shape) ~= 'table' or type(t.slices) ~= 'table' or type(t.dtype) ~= 'string' then
      bad(string.format("tensor '%s': expected {dtype=, shape=, slices=}", name))
    end
    for i, s in ipairs(t.shape) do
      if not int(s) or s < 0 then bad(string.format("tensor '%s': dim %d of its shape is not an integer >= 0", name, i)) end
    end
    for _, sl in ipairs(t.slices) do
      local ok = type(sl) == 'table' and type(sl.file) == 'string' and type(sl.key) == 'string' and
        type(sl.ranges) == 'table' and type(sl['local']) == 'table' and type(sl.shape) == 'table' and
        #sl.ranges == #t.shape and #sl['local'] == #t.shape and not sl.file:find('/', 1, true)
      for d = 1, ok and #t.shape or 0 do
        local r, l = sl.ranges[d], sl['local'][d]
        ok = ok and type(r) == 'table' and type(l) == 'table' and int(r[1]) and int(r[2]) and int(l[1]) and int(l[2]) and
          r[1] >= 0 and r[2] >= 0 and r[1] + r[2] <= t.shape[d] and r[2] == l[2] and l[1] >= 0 and
          int(sl.shape[d]) and l[1] + l[2] <= sl.shape[d]
      end
      if not ok then bad(string.format("tensor '%s': a slice is not {file=, key=, shape=, ranges=, local=} within " ..
        'the shape %s', name, shape_str(t.shape))) end
    end
  end
  return idx, dir, ipath
end

local function intersect(a, b)
  local r = {}
  for d = 1, #a do
    local s = math.max(a[d][1], b[d][1])
    local e = math.min(a[d][1] + a[d][2], b[d][1] + b[d][2])
    if e <= s then return nil end
    r[d] = {s, e - s}
  end
  return r
end

local function volume(r)
  local n = 1
  for _, x in ipairs(r) do n = n * x[2] end
  return n
end

local function narrow_all(t, ranges)
  for d, r in ipairs(ranges) do
    if r[1] ~= 0 or r[2] ~= t:size(d) then t = t:narrow(d, r[1] + 1, r[2]) end
  end
  return t
end

--- A loader of the tensors of one checkpoint: opens its files on demand,
-- checks them against the index, fills destination tensors.
local Reader = {}
Reader.__index = Reader

local function new_reader(idx, dir, ipath)
  return setmetatable({idx = idx, dir = dir, ipath = ipath, files = {}}, Reader)
end

function Reader:file(name, tensor)
  local r = self.files[name]
  if r then return r end
  local path = join(self.dir, name)
  local ok, res = pcall(io_.open_safetensors, path)
  if not ok then
    error('checkpoint: ' .. tostring(res), 0)   -- names the file, and the tensor at fault
  end
  self.files[name] = res
  return res
end

function Reader:close()
  for _, r in pairs(self.files) do r:close() end
  self.files = {}
end

--- Fills dst (a CPU tensor of p's local shape) with tensor `name` of the
-- checkpoint, placed by pieces pc (checkpoint.pieces). Errors name the file
-- and the tensor.
function Reader:fill(name, dst, pc, what)
  local t = self.idx.tensors[name]
  if not t then
    error(string.format("checkpoint %s: no tensor '%s' (%s of this model)", self.ipath, name, what), 0)
  end
  if not same_shape(t.shape, pc.full_shape) then
    error(string.format("checkpoint %s: tensor '%s' is %s in the checkpoint, %s in this model", self.ipath, name,
      shape_str(t.shape), shape_str(pc.full_shape)), 0)
  end
  local want = st_dtype(dst)
  if t.dtype ~= want then
    error(string.format("checkpoint %s: tensor '%s' is %s in the checkpoint, %s in this model", self.ipath, name,
      t.dtype, want), 0)
  end
  -- the slices must not overlap
  for i = 1, #t.slices do
    for j = i + 1, #t.slices do
      if intersect(t.slices[i].ranges, t.slices[j].ranges) then
        error(string.format("checkpoint %s: tensor '%s': slices in %s and %s overlap", self.ipath, name,
          t.slices[i].file, t.slices[j].file), 0)
      end
    end
  end
  for _, piece in ipairs(pc.pieces) do
    local covered = 0
    for _, sl in ipairs(t.slices) do
      local I = intersect(piece.full, sl.ranges)
      if I then
        local r = self:file(sl.file, name)
        local fpath = join(self.dir, sl.file)
        local info = r:info(sl.key)
        if not info then
          error(string.format("checkpoint %s: no tensor '%s' (listed in %s)", fpath, sl.key, self.ipath), 0)
        end
        if info.dtype ~= t.dtype then
          error(string.format("checkpoint %s: tensor '%s' is %s, but %s says %s", fpath, sl.key, info.dtype,
            self.ipath, t.dtype), 0)
        end
        if not same_shape(info.shape, sl.shape) then
          error(string.format("checkpoint %s: tensor '%s' has shape %s, but %s says %s", fpath, sl.key,
            shape_str(info.shape), self.ipath, shape_str(sl.shape)), 0)
        end
        local src, dsto = {}, {}
        for d = 1, #I do
          src[d] = {I[d][1] - sl.ranges[d][1] + sl['local'][d][1], I[d][2]}
          dsto[d] = {I[d][1] - piece.full[d][1] + piece['local'][d][1], I[d][2]}
        end
        local block = r:read(sl.key, src)
        narrow_all(dst, dsto):copy_(block)
        block:free()
        covered = covered + volume(I)
      end
    end
    if covered ~= volume(piece.full) then
      error(string.format("checkpoint %s: tensor '%s': the slices cover %d of the %d elements this rank needs",
        self.ipath, name, covered, volume(piece.full)), 0)
    end
  end
end

local function check_config(idx, ipath, cfg)
  if not cfg or type(idx.model) ~= 'table' then return end
  for _, k in ipairs(checkpoint.MODEL_KEYS) do
    local a, b = idx.model[k], cfg[k]
    if a ~= nil and b ~= nil and a ~= b then
      error(string.format('checkpoint %s: the model differs from this config: %s is %s in the checkpoint, %s here',
        ipath, k, tostring(math.tointeger(a) or a), tostring(math.tointeger(b) or b)), 0)
    end
  end
end

--- Restores `state` (see the module doc) from the checkpoint at `path` (a
-- step_<N> directory or its index.json). Validates everything first; on any
-- error nothing in memory has changed. Returns info: {path=, step=, epoch=,
-- updates=, loader={epoch=, batch=} (where the loader now stands: the batch
-- after the saved one, past the end of an epoch moved to the next epoch's
-- start), rng= (the saved user rng table), index= (the decoded index.json)}.
-- Local to each rank (reads only the files holding what this rank needs).
function checkpoint.load(path, state)
  assert(type(state) == 'table' and state.model, 'checkpoint.load: state.model is required')
  local idx, dir, ipath = checkpoint.read_index(path)
  local function bad(msg) error(string.format('checkpoint %s: %s', ipath, msg), 0) end
  for _, f in ipairs(idx.files) do
    if type(f) ~= 'string' or io_.stat(join(dir, f)) ~= 'file' then
      error(string.format('checkpoint %s: missing (listed in %s)', join(dir, tostring(f)), ipath), 0)
    end
  end
  check_config(idx, ipath, state.config)
  local params = params_of(state)
  local reader = new_reader(idx, dir, ipath)
  local commits = {}      -- {dst=, src=} copies done once everything is read
  local ok, err = pcall(function()
    local pcs = {}
    for _, p in ipairs(params) do
      pcs[p.name] = checkpoint.pieces(p)
      local tmp = lunar.empty(p.shape, p.param:dtype(), 'cpu')
      reader:fill(p.name, tmp, pcs[p.name], 'a parameter')
      commits[#commits + 1] = {dst = p.param, src = tmp}
    end
    -- optimizer
    local os_ = optimizer_state(state.optimizer)
    local opt_sd
    if os_ then
      local io_opt = idx.optimizer
      if type(io_opt) ~= 'table' then bad('no optimizer state, but this run has an optimizer') end
      if io_opt.kind ~= os_.kind then
        bad(string.format("the optimizer is '%s' in the checkpoint, '%s' here", tostring(io_opt.kind), tostring(os_.kind)))
      end
      if not int(io_opt.step) then bad('optimizer.step is missing or not an integer') end
      opt_sd = {kind = os_.kind, step = int(io_opt.step)}
      for key, b in pairs(os_.buffers) do
        local flat = lunar.zeros(b.flat:shape(), b.flat:dtype(), 'cpu')
        local off = 1
        for _, p in ipairs(state.optimizer.params) do
          local n = numel(p.shape)
          local view = flat:narrow(1, off, n):view(p.shape)
          off = off + n
          reader:fill('optim.' .. key .. '.' .. p.name, view, pcs[p.name] or checkpoint.pieces(p),
            'the optimizer state of parameter ' .. p.name)
        end
        opt_sd[key] = flat
      end
    end
    -- gradients of an accumulation cycle in progress
    local e = state.engine
    local ie = type(idx.engine) == 'table' and idx.engine or nil
    local grads
    if e and ie and int(ie.micro_step) and int(ie.gradient_accumulation) and ie.gradient_accumulation > 1 and
        ie.micro_step % ie.gradient_accumulation ~= 0 then
      if (e.gradient_accumulation or 1) ~= ie.gradient_accumulation then
        bad(string.format('saved in the middle of a gradient accumulation cycle of %d, but this run accumulates %d',
          int(ie.gradient_accumulation), e.gradient_accumulation or 1))
      end
      grads = {}
      for _, p in ipairs(params) do
        local tmp = lunar.empty(p.shape, p.grad:dtype(), 'cpu')
        reader:fill('grad.' .. p.name, tmp, pcs[p.name], 'the accumulated gradient of parameter ' .. p.name)
        grads[#grads + 1] = {dst = p.grad, src = tmp}
      end
    end
    -- loader position
    local loader = loader_of(state)
    local lpos
    if loader then
      local l = idx.loader
      if type(l) ~= 'table' or not int(l.epoch) or not int(l.batch) then bad('no loader position') end
      local nb = loader:num_batches()
      local le, lb = int(l.epoch), int(l.batch)
      if lb < 0 or le < 0 or lb > math.max(nb, int(l.num_batches) or 0) then
        bad(string.format('loader position (epoch %d, batch %d) is outside an epoch of %d batches', le, lb, nb))
      end
      if lb >= nb then le, lb = le + 1, 0 end
      lpos = {epoch = le, batch = lb}
    end
    -- dropout counters
    local calls = type(idx.rng) == 'table' and type(idx.rng.dropout_calls) == 'table' and idx.rng.dropout_calls or nil
    local mine = dropout_calls(state.model)
    if calls then
      for p in pairs(mine) do
        if not int(calls[p]) then bad(string.format("no dropout call counter for module '%s'", p)) end
      end
    end
    commits.optimizer, commits.grads, commits.loader, commits.calls = opt_sd, grads, lpos, calls
  end)
  reader:close()
  if not ok then
    for _, c in ipairs(commits) do c.src:free() end
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
    e.step_count = int(ie.step_count) or int(idx.updates) or e.step_count
    e.micro_step = int(ie.micro_step) or int(idx.step) or e.micro_step
  end
  if commits.calls then
    state.model:apply(function(m, p)
      if m.__name == 'Dropout' or (type(m.calls) == 'number' and m.p ~= nil) then m.calls = int(commits.calls[p]) end
    end)
  end
  local sched = state.lr_scheduler
  if sched and type(idx.lr_scheduler) == 'table' then
    if sched.load_state_dict then sched:load_state_dict(idx.lr_scheduler)
    else
      for k, v in pairs(idx.lr_scheduler) do
        if sched[k] ~= nil and type(v) == type(sched[k]) then sched[k] = (math.type(sched[k]) == 'integer' and int(v)) or v end
      end
    end
  end
  local loader = loader_of(state)
  if loader and commits.loader then loader:seek(commits.loader.epoch, commits.loader.batch) end
  return {path = dir, step = int(idx.step), epoch = int(idx.epoch) or idx.epoch, updates = int(idx.updates),
    loader = commits.loader, rng = type(idx.rng) == 'table' and idx.rng.user or nil, index = idx}
end

-- ---------------------------------------------------------------------------
-- the config keys: CHECKPOINT_DIR, SAVE_EVERY, KEEP_CHECKPOINTS, RESUME

--- Resumes as cfg.RESUME says: '' -> nil; 'auto' -> the newest complete
-- checkpoint in cfg.CHECKPOINT_DIR (nil, starting fresh, when there is
-- none); else the checkpoint at that path (a step_<N> directory). Returns
-- checkpoint.load's info, or nil. state.config defaults to cfg. With several
-- ranks, rank 0 picks the 'auto' checkpoint for all.
function checkpoint.maybe_resume(cfg, state)
  local r = cfg.RESUME or ''
  if r == '' then return nil end
  state.config = state.config or cfg
  local path = r
  if r == 'auto' then
    if (cfg.CHECKPOINT_DIR or '') == '' then
      error("checkpoint: RESUME='auto' needs CHECKPOINT_DIR (the directory to look for checkpoints in)", 0)
    end
    local L = layout(state)
    local p, step = checkpoint.latest(cfg.CHECKPOINT_DIR)
    step = from_rank0(L, step or -1)
    if step < 0 then
      log.info('checkpoint: no complete checkpoint in %s: starting fresh', cfg.CHECKPOINT_DIR)
      return nil
    end
    path = L.world_size > 1 and join(cfg.CHECKPOINT_DIR, 'step_' .. step) or p
  end
  local info = checkpoint.load(path, state)
  log.info('checkpoint: resumed from %s (step %d%s)', info.path, info.step,
    info.loader and string.format(', epoch %d, batch %d', info.loader.epoch + 1, info.loader.batch) or '')
  return info
end

local last_saved = {}

--- Saves when cfg.CHECKPOINT_DIR is set and state.step is a multiple of
-- cfg.SAVE_EVERY (> 0), or, with opts.final, at the end of training unless
-- this step was just saved. Returns the checkpoint's path, or nil.
function checkpoint.maybe_save(cfg, state, opts)
  local dir = cfg.CHECKPOINT_DIR or ''
  if dir == '' then return nil end
  local every = cfg.SAVE_EVERY or 0
  local due
  if opts and opts.final then
    due = last_saved[dir] ~= state.step
  else
    due = every > 0 and state.step > 0 and state.step % every == 0
  end
  if not due then return nil end
  state.config = state.config or cfg
  local path = checkpoint.save(dir, state)
  last_saved[dir] = state.step
  log.info('checkpoint: saved %s', path)
  return path
end

return checkpoint
