--- lunar.parallel: data, tensor (1D, Megatron) and pipeline parallelism from
-- the config's `parallel` dict (Colossal-AI's), over lunar.comm (MPI).
--
--   local parallel = require('lunar.parallel')
--   local cfg = parallel.same_on_every_rank(config.load, path, overrides)  -- config errors printed once
--   local g = parallel.initialize(cfg)        -- the grid (grid.lua); a bad layout is printed
--                                             -- once and every rank exits 1; rank 0 prints the grid
--   local model = nn.materialize(parallel.vit(cfg, g), cfg.SEED, {init = cfg.INIT})
--   local loader = data.loader(ds, cfg, {train = true, rank = g.dp_rank, num_shards = g.dp_size})
--   engine.initialize{model =, optimizer =, criterion =, grid = g, ...}   (lunar.engine)
--   local full = parallel.gather_full_parameters(model, g)   -- name -> full tensor
--   parallel.load_full_parameters(model, full)               -- and back into shards
--
-- Pieces: grid (process grid and groups), mappings (the conjugate collectives
-- as modules), ColumnParallelLinear / RowParallelLinear, tensor_1d (the layer
-- factory the nn modules take as opts.tp), reducer (bucketed
-- data-parallel gradient all_reduce overlapped with backward), pipeline (GPipe
-- and 1F1B schedules), zero (ZeRO stages 1-3 / FSDP sharding). Global gradient norm and clipping over the tensor and
-- pipeline groups are here.
local nn = require('lunar.nn')
local grid = require('lunar.parallel.grid')

local tensor_1d = require('lunar.parallel.tensor_1d')
local tensor_2d = require('lunar.parallel.tensor_2d')
local tensor_3d = require('lunar.parallel.tensor_3d')

local parallel = {
  grid = grid,
  mappings = require('lunar.parallel.mappings'),
  ColumnParallelLinear = require('lunar.parallel.ColumnParallelLinear'),
  RowParallelLinear = require('lunar.parallel.RowParallelLinear'),
  tensor_1d = tensor_1d,
  tensor_2d = tensor_2d,
  tensor_3d = tensor_3d,
  reducer = require('lunar.parallel.reducer'),
  pipeline = require('lunar.parallel.pipeline'),
  domain = require('lunar.parallel.domain'),
  zero = require('lunar.parallel.zero'),
}

local function flush()
  io.stdout:flush()
  io.stderr:flush()
end

--- Runs fn(...), a computation whose errors are the same on every rank (a
-- config that does not load or a layout that does not fit: deterministic,
-- before any collective). On success returns its results. On an error,
-- rank 0 alone prints "lunar: <message>" to stderr (the message, no Lua
-- traceback: the user's input is wrong, not the program), then every rank
-- meets in a barrier (so the message is out before the job is torn down) and
-- exits 1 (with several ranks the host aborts the job: every rank ends
-- non-zero). An error that is not a string (a bug, not a message) is
-- re-raised with its traceback on one rank.
function parallel.same_on_every_rank(fn, ...)
  local res = table.pack(pcall(fn, ...))
  if res[1] then return table.unpack(res, 2, res.n) end
  local msg = res[2]
  local world = lunar.comm.world()
  if world:size() <= 1 and type(msg) ~= 'string' then error(msg, 0) end
  if world:rank() == 0 then
    io.stderr:write('lunar: ', tostring(msg), '\n')
  end
  flush()
  world:barrier()
  os.exit(1)
end

--- The process grid of `cfg` over `comm` (default the world), validated
-- before any collective (an error is printed once and every rank exits 1,
-- see same_on_every_rank); rank 0 prints the grid table when there is more
-- than one rank (opts.quiet: never). Also makes cfg.device the default
-- device (lunar.set_default_device; 'cuda' is this rank's local GPU,
-- lunar.local_rank modulo the device count, as torch.cuda.set_device(
-- local_rank) in Colossal-AI's launch), so the model, its gradients, the
-- optimizer state and the activations are created there; grid.device names
-- it ('cpu' or 'cuda:N'). config.check_machine checks the device first.
-- @param cfg a config (lunar.config.load)
-- @param comm optional communicator
-- @param opts optional {quiet=bool}
-- @return the grid (lunar.parallel.grid)
function parallel.initialize(cfg, comm, opts)
  comm = comm or lunar.comm.world()
  parallel.same_on_every_rank(function()
    local msg = grid.validate(cfg, comm:size())
    if msg then error(msg, 0) end
  end)
  local g = grid.new(cfg, comm)
  -- cfg.device: where this rank's tensors live from now on ('cuda': its local GPU)
  lunar.set_default_device(cfg.device or 'cpu')
  g.device = lunar.default_device()
  if g.world_size > 1 and g.rank == 0 and not (opts and opts.quiet) then
    io.stdout:write(g:describe(), '\n')
    io.stdout:flush()
  end
  return g
end

--- The tensor-parallel context the nn modules take (opts.tp): the layer
-- factory of the grid's tensor mode (lunar.parallel.tensor_1d: comm, size,
-- rank, sequence_parallel and the split layers; tensor_2d for '2d' and
-- '2.5d', tensor_3d for '3d'); nil when the tensor-parallel size is 1 (the modules then build
-- plain layers).
function parallel.tp_context(g)
  if not g or g.tp_size <= 1 then return nil end
  local tg = g.tensor_groups
  if tg and g.tensor_mode == '3d' then return tensor_3d.new{q = tg.q, rank = g.tp_rank, groups = tg} end
  if tg then return tensor_2d.new{q = tg.q, depth = tg.d, rank = g.tp_rank, groups = tg, mode = g.tensor_mode} end
  return tensor_1d.new{comm = g.tp_group, size = g.tp_size, rank = g.tp_rank, sequence_parallel = g.sequence_parallel}
end

--- The domain-parallel context of the grid (lunar.parallel.domain: this
-- rank's slab of cfg's images, the domain group, the attention mode); nil
-- when the domain size is 1. Made once per grid (kept as g.domain_ctx).
function parallel.domain_context(cfg, g)
  if not g or (g.domain_size or 1) <= 1 then return nil end
  if not g.domain_ctx then
    g.domain_ctx = parallel.domain.new{comm = g.domain_group, size = g.domain_size, rank = g.domain_rank,
      attention = g.domain_attention, img_size = cfg.IMG_SIZE, patch_size = cfg.PATCH_SIZE, img_dims = cfg.IMG_DIMS}
  end
  return g.domain_ctx
end

--- A loader whose batches are this domain rank's slabs of the images of
-- `loader` (lunar.parallel.domain: Domain:slab), the labels as they are;
-- every other method is the loader's.
function parallel.domain_loader(loader, d)
  local w = setmetatable({}, {__index = function(_, k)
    local f = loader[k]
    if type(f) ~= 'function' then return f end
    return function(_, ...) return f(loader, ...) end
  end})
  function w.next()
    local x, y = loader:next()
    if not x then return x, y end
    local s = d:slab(x)
    x:free()
    return s, y
  end
  return w
end

--- Model options for this rank's place in the grid: opts with tp (the tensor
-- context) and stage (this pipeline stage's blocks) added.
function parallel.model_options(opts, g)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if g then
    o.tp = parallel.tp_context(g)
    if g.pp_size > 1 then o.stage = {first_block = g.stage.first_block, last_block = g.stage.last_block} end
    if g.block_tensor then require('lunar.parallel.layerwise').model_options(o, g) end
  end
  return o
end

--- The config's ViT (lunar.models.vit) built for this rank: its tensor shards
-- and pipeline stage. Not materialized. With g nil, the plain model.
function parallel.vit(cfg, g)
  local plain = require('lunar.models').vit(cfg)
  if not g then return plain end
  local model = nn.ViT(parallel.model_options(plain.opts, g))
  -- per-block tensor sizes: the dropouts draw the single-rank masks of their samples
  if g.block_tensor then require('lunar.parallel.layerwise').set_dropout_rows(model, g) end
  return model
end

-- ---- gradient norm over the model-parallel ranks -----------------------------------------

--- The global L2 norm of the gradients of the whole model (PyTorch's
-- clip_grad_norm_ over every parameter, counted once): sums of squares in
-- double, shards summed over the tensor group (a shard's replicas, p.shard.replica
-- > 0 as 2.5D's depth layers, not counted), replicated parameters
-- (norms, biases of RowParallelLinear, embeddings, head) counted once (tensor
-- rank 0's), stages summed over the pipeline group: one all_reduce over the
-- model-parallel group (tensor x pipeline). Data-parallel replicas hold the
-- same averaged gradients, so nothing is summed over them. Per-block tensor
-- sizes (parallel.block_tensor): lunar.parallel.layerwise.sum_squares.
-- @param params model:parameters() of this rank
-- @param g the grid (nil: one rank)
function parallel.grad_norm(params, g)
  local ops = lunar.ops
  -- per-block tensor sizes: each block over its own tensor group (lunar.parallel.layerwise)
  if g and g.block_tensor then return math.sqrt(require('lunar.parallel.layerwise').sum_squares(params, g)) end
  local s = 0.0   -- a float on every rank (all_reduce_number reduces integers apart: a 2.5D depth replica adds nothing)
  for _, p in ipairs(params) do
    if (p.shard and (p.shard.replica or 0) == 0) or not g or g.tp_rank == 0 then s = s + ops.sum_squares(p.grad) end
  end
  if g and g.tp_size * g.pp_size > 1 then s = g.mp_group:all_reduce_number(s, 'sum') end
  return math.sqrt(s)
end

--- Scales every gradient so the global norm (parallel.grad_norm) is at most
-- max_norm (PyTorch's clip_grad_norm_, eps 1e-6). Returns the norm before
-- clipping; every rank applies the same coefficient.
function parallel.clip_grad_norm(params, max_norm, g)
  local norm = parallel.grad_norm(params, g)
  local coef = max_norm / (norm + 1e-6)
  if coef < 1 then
    for _, p in ipairs(params) do lunar.ops.scale_(p.grad, coef) end
  end
  return norm
end

-- ---- full tensors from shards and stages ----------------------------------------------------

--- The full tensor of one parameter from its tensor-parallel shards
-- (all_gather over the tensor group, then each rank's pieces put back in
-- place); a replicated parameter is returned as a copy.
function parallel.gather_full_tensor(p, g)
  if not p.shard then return p.param:clone() end
  local sh = p.shard
  if sh.pieces then
    -- N-d pieces (tensor_2d): each rank's pieces in place in zeros, summed over the tensor group
    -- (the pieces of replica 0 are disjoint and cover the tensor: the sum is exact)
    local full = lunar.zeros(sh.full_shape)
    if (sh.replica or 0) == 0 then nn.copy_pieces(full, p.param, sh.pieces, true) end
    return g.tp_group:all_reduce(full, 'sum')
  end
  local n = p.param:numel()
  local buf = lunar.empty({sh.size, n})
  -- the tensor group of the parameter's module (a layerwise block's own), else the grid's
  local comm = p.module and p.module.tp and p.module.tp.comm or g.tp_group
  local pc = p.param:contiguous()
  comm:all_gather(buf, pc)
  if pc ~= p.param then pc:free() end
  local full = lunar.empty(sh.full_shape)
  for r = 0, sh.size - 1 do
    local loc = buf[r + 1]:view(p.shape)
    for _, pc in ipairs(nn.shard_pieces(sh, r)) do
      full:narrow(sh.dim, pc.full_offset + 1, pc.len):copy_(loc:narrow(sh.dim, pc.local_offset + 1, pc.len))
    end
  end
  buf:free()
  return full
end

--- Every parameter of the whole model as full tensors (timm names), on every
-- rank: shards gathered over the tensor group, stages broadcast over the
-- pipeline group. For checkpoints and for comparing layouts. Collective over
-- the world (every rank calls it, one parameter after the other).
-- @param model the materialized model of this rank (a ViT with .opts, or any
--   model whose parameters are all on this rank when pp = 1)
-- @param g the grid (nil: one rank: copies)
-- @return table name -> tensor, and the list of names in the plain model's order
function parallel.gather_full_parameters(model, g)
  local local_params = {}
  for _, p in ipairs(model:parameters()) do local_params[p.name] = p end
  -- the plain model's names and shapes (no storage), in its parameter order
  local specs
  if model.opts and (model.opts.stage or model.opts.tp or model.opts.block_tp) then
    local plain_opts = {}
    for k, v in pairs(model.opts) do plain_opts[k] = v end
    plain_opts.tp, plain_opts.stage, plain_opts.block_tp, plain_opts.wrap_block = nil, nil, nil, nil
    specs = getmetatable(model)(plain_opts):parameters()
  else
    specs = model:parameters()
  end
  local out, names = {}, {}
  for i, spec in ipairs(specs) do
    names[i] = spec.name
    local p = local_params[spec.name]
    local t = p and (g and parallel.gather_full_tensor(p, g) or p.param:clone()) or nil
    if g and g.pp_size > 1 then
      local owner
      local blk = spec.name:match('^blocks%.(%d+)%.')
      if blk then owner = g:stage_of_block(tonumber(blk))
      elseif spec.name:match('^norm%.') or spec.name:match('^head%.') then owner = g.pp_size - 1
      else owner = 0 end
      if owner ~= g.pp_rank then t = lunar.empty(spec.shape) end
      g.pp_group:broadcast(t, owner)
    end
    out[spec.name] = t
  end
  return out, names
end

--- Loads full tensors (name -> tensor of the full shape, e.g. from
-- gather_full_parameters or a checkpoint with timm names) into this rank's
-- parameters: each shard takes its pieces, replicated parameters are copied;
-- names this rank does not hold (other pipeline stages) are ignored. Local,
-- no communication. Raises an error naming a parameter that is missing or
-- whose shape differs.
function parallel.load_full_parameters(model, tensors)
  for _, p in ipairs(model:parameters()) do
    local t = tensors[p.name]
    if not t then error('load_full_parameters: no tensor for ' .. p.name, 2) end
    local want = p.shard and p.shard.full_shape or p.shape
    if table.concat(t:shape(), ',') ~= table.concat(want, ',') then
      error(string.format('load_full_parameters: %s is [%s], expected [%s]', p.name, table.concat(t:shape(), ', '),
        table.concat(want, ', ')), 2)
    end
    if p.shard and p.shard.pieces then
      nn.copy_pieces(t, p.param, p.shard.pieces, false)
    elseif p.shard then
      local d = p.shard.dim
      for _, pc in ipairs(nn.shard_pieces(p.shard)) do
        p.param:narrow(d, pc.local_offset + 1, pc.len):copy_(t:narrow(d, pc.full_offset + 1, pc.len))
      end
    else
      p.param:copy_(t)
    end
  end
  model:sync_working_weights()   -- precision = 'bf16': the working copy follows the master weights
end

return parallel
