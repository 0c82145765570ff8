--- lunar.checkpoint.state: what a training state holds, as the checkpoint
-- modules read it, and where this rank sits in the process layout.
--
-- state = {model=, optimizer=, lr_scheduler=, engine=, loader= (or
-- train_loader=), step=, epoch=, updates=, rng=, config=, grid=, keep=}
-- (lunar.checkpoint's module doc).
local format = require('lunar.checkpoint.format')

local M = {}

local numel = format.numel

--- {rank, world_size, dp_rank, dp_size, tp_rank, tp_size, pp_rank, pp_size, domain_rank, comm,
-- param_ranks} from a grid (param_ranks(name) -> dp rank, tp rank of the parameter's own
-- groups, or nil for the grid's: set under parallel.block_tensor), else the world communicator (every rank a data-parallel replica).
function M.layout(state)
  local g = state.grid
  if g then
    return {rank = g.rank, world_size = g.world_size, dp_rank = g.dp_rank, dp_size = g.dp_size,
      tp_rank = g.tp_rank, tp_size = g.tp_size, pp_rank = g.pp_rank, pp_size = g.pp_size,
      domain_rank = g.domain_rank or 0, comm = g.world,
      -- per-block tensor sizes: a block's own (dp, tp) ranks for its parameters (lunar.parallel.layerwise)
      param_ranks = g.block_tensor and function(name) return require('lunar.parallel.layerwise').param_ranks(g, name) end}
  end
  local w = lunar.comm and lunar.comm.world and lunar.comm.world()
  local rank, size = w and w:rank() or 0, w and w:size() or 1
  return {rank = rank, world_size = size, dp_rank = rank, dp_size = size, tp_rank = 0, tp_size = 1,
    pp_rank = 0, pp_size = 1, comm = w}
end

--- A barrier of every rank (nothing on one rank).
function M.barrier(L) if L.world_size > 1 then L.comm:barrier() end end

--- Rank 0's integer on every rank.
function M.from_rank0(L, x)
  if L.world_size <= 1 then return x end
  return math.tointeger(L.comm:all_reduce_number(L.rank == 0 and x or 0, 'sum'))
end

--- The model's parameters (model:parameters()), each with its storage
-- (under ZeRO-3 none: p.param is nil, the shards are the optimizer's pieces).
function M.params(state)
  local ps = state.model:parameters()
  local z = state.optimizer and state.optimizer.zero
  for _, p in ipairs(ps) do
    if not p.param and not (z and z.stage == 3) then   -- ZeRO-3: the shards hold them (lunar.parallel.zero)
      error('checkpoint: parameter ' .. p.name .. ' has no storage (materialize the model first)', 0)
    end
  end
  return ps
end

--- The optimizer's flat buffers as per-parameter views: {kind=, step=,
-- scalars={...}, buffers={key -> {flat=, views={name -> view}}}}, nil without one.
function M.optimizer(opt)
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

local function is_dropout(m) return m.__name == 'Dropout' or (type(m.calls) == 'number' and m.p ~= nil) end

--- Dropout call counters by module path.
function M.dropout_calls(model)
  local out = {}
  model:apply(function(m, path)
    if is_dropout(m) then out[path] = m.calls end
  end)
  return out
end

--- Sets every Dropout's call counter from calls (module path -> count).
function M.set_dropout_calls(model, calls)
  model:apply(function(m, path)
    if is_dropout(m) then m.calls = format.int(calls[path]) end
  end)
end

function M.loader(state) return state.loader or state.train_loader end

--- The optimizer updates done: state.updates, else the engine's or the optimizer's count.
function M.updates(state)
  if state.updates then return state.updates end
  if state.engine and state.engine.optimizer_steps then return state.engine.optimizer_steps end
  if state.optimizer and state.optimizer.t then return state.optimizer.t end
  return state.step
end

--- Whether the engine stands in the middle of a gradient accumulation cycle
-- (batches_done counts the batches whose backward ran, engine.batches_done).
function M.mid_accumulation(batches_done, accumulation)
  return batches_done ~= nil and (accumulation or 1) > 1 and batches_done % accumulation ~= 0
end

return M
