--- lunar.parallel.layerwise: per-block tensor sizes (issue 14; Galvatron's
-- layerwise hybrid strategies, Miao et al. 2022, sec. 3.1): parallel.block_tensor
-- = {t_0, ..., t_(DEPTH-1)} gives block i its own tensor-parallel size t_i over
-- a base layout of pure data parallelism (tensor 1, pipeline 1: every rank
-- holds BATCH_SIZE samples of its own).
--
-- Block i with t_i > 1 runs on the t_i consecutive ranks r - r % t_i ..
-- (its tensor group, Megatron's 1D split of heads and MLP), on the samples of
-- the whole group: Redistributed gathers the group's micro-batches along the
-- batch before the block (t_i x b samples, the same on every rank of the
-- group) and keeps this rank's slice after it; backward gathers the slices'
-- output gradients and keeps this rank's slice of the input gradient (the
-- block's CopyToTP has summed the partial gradients over the group). Its
-- parameters' gradients are then sums over the group's samples: they are
-- averaged over the block's data-parallel group (the G / t_i ranks with the
-- same r % t_i) and scaled by 1 / t_i, which is the average over all G ranks
-- (grad_sync). The redistribution is Galvatron's re-sharding between layers of
-- different tensor degrees (an all_gather of the activations forward, and of
-- their gradients backward).
--
--   parallel.block_tensor = {2, 2, 1, 1}       -- a config (a loop over DEPTH writes it)
--
-- Not yet with it (checked by grid.validate before any collective): pipeline or
-- tensor parallelism of the base layout, sequence parallelism, clip_grad_norm,
-- checkpoints (CHECKPOINT_DIR), MODEL, dropout (each group draws its masks on
-- its own samples), and the memory estimate of lunar.memory.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local tensor_1d = require('lunar.parallel.tensor_1d')

local layerwise = {}

--- Gathers x [b, ...] of every rank of comm along the batch: [size * b, ...], rank r's at rows r*b.
local function gather_batch(comm, x)
  local s = x:shape()
  local out_shape = {s[1] * comm:size()}
  for i = 2, #s do out_shape[i] = s[i] end
  local out = lunar.empty(out_shape, x:dtype(), x:device())
  local xc = x:is_contiguous() and x or x:contiguous()
  comm:all_gather(out, xc)
  if xc ~= x then xc:free() end
  return out
end

-- This rank's rows of x [size * b, ...]: a new contiguous tensor.
local function own_rows(comm, x)
  local b = x:shape()[1] // comm:size()
  local v = x:narrow(1, comm:rank() * b + 1, b)
  local out = v:contiguous()
  v:free()
  return out
end

--- A block run on its tensor group's gathered batch (see the module doc). Not
-- in the module tree: the block stays where it is (names unchanged); apply
-- reaches the block's modules (lunar.nn.Checkpoint finds their dropouts).
layerwise.Redistributed = class('Redistributed', Module)

--- @param block a module built with the tensor group's factory
-- @param comm the tensor group
function layerwise.Redistributed:__init(block, comm)
  Module.__init(self)
  self.block, self.comm, self.wraps = block, comm, block
end

function layerwise.Redistributed:apply(fn, ...) return self.block:apply(fn, ...) end

function layerwise.Redistributed:forward(x)
  local X = gather_batch(self.comm, x)
  local Y, c = self.block:forward(X)
  local y = own_rows(self.comm, Y)
  Y:free()
  return y, Context({X = X, c = c})
end

function layerwise.Redistributed:backward(ctx, dy, need_dx)
  local dY = gather_batch(self.comm, dy)
  local dX = self.block:backward(ctx.c, dY, true)
  ctx._owns.c = nil
  dY:free()
  ctx:free()
  local dx = own_rows(self.comm, dX)
  dX:free()
  if need_dx == false then dx:free() return nil end
  return dx
end

--- The tensor sizes of parallel.block_tensor that are > 1, sorted (every rank
-- builds their groups in this order).
function layerwise.sizes(list)
  local seen, out = {}, {}
  for _, t in ipairs(list or {}) do
    if t > 1 and not seen[t] then seen[t] = true; out[#out + 1] = t end
  end
  table.sort(out)
  return out
end

--- The groups of each size (collective over comm: two splits per size):
-- {[t] = {tp = tensor group (ranks r - r % t ..), dp = its data-parallel group (r % t)}}.
function layerwise.groups(comm, list)
  local R, out = comm:rank(), {}
  for _, t in ipairs(layerwise.sizes(list)) do
    out[t] = {tp = comm:split(R // t, R % t, comm:name() .. '/btp' .. t),
      dp = comm:split(R % t, R // t, comm:name() .. '/bdp' .. t)}
  end
  return out
end

--- nn.ViT options for the grid's per-block sizes: opts.block_tp(i) (the tensor
-- factory of block i, nil for size 1) and opts.wrap_block(i, block).
function layerwise.model_options(o, g)
  local list = g.block_tensor
  o.block_tp = function(i)
    local t = list[i + 1]
    if t <= 1 then return nil end
    local grp = g.block_groups[t]
    return tensor_1d.new{comm = grp.tp, size = t, rank = grp.tp:rank()}
  end
  o.wrap_block = function(i, block)
    local t = list[i + 1]
    if t <= 1 then return block end
    return layerwise.Redistributed(block, g.block_groups[t].tp)
  end
  return o
end

--- The reducer's synchronization of a gradient group ('blocks.i', 'embed',
-- 'head'): {comm = the data-parallel group to average over, post_scale =
-- factor after it}, or nil for the grid's data-parallel group.
function layerwise.grad_sync(g, key)
  local i = key:match('^blocks%.(%d+)$')
  local t = i and g.block_tensor[tonumber(i) + 1]
  if not t or t <= 1 then return nil end
  return {comm = g.block_groups[t].dp, post_scale = 1 / t}
end

--- What a layout with parallel.block_tensor cannot do yet: nil, or a message.
function layerwise.validate(cfg, world_size, r)
  local list = cfg.parallel and cfg.parallel.block_tensor
  if list == nil then return nil end
  local function bad(fmt, ...) return 'parallel: block_tensor ' .. string.format(fmt, ...) end
  if cfg.DEPTH and #list ~= cfg.DEPTH then
    return bad('has %d entries; it needs one tensor size per block (DEPTH %d)', #list, cfg.DEPTH)
  end
  if r.pp > 1 or r.tp > 1 or r.sp then
    return bad('(per-block tensor sizes) needs a base layout of data parallelism only: pipeline %d, tensor %d%s',
      r.pp, r.tp, r.sp and ', sequence parallel' or '')
  end
  local hidden = math.floor((cfg.HIDDEN_SIZE or 0) * (cfg.MLP_RATIO or 4) + 0.5)
  for i, t in ipairs(list) do
    if t < 1 or (t & (t - 1)) ~= 0 then return bad('[%d] = %d (block %d) is not a power of two', i, t, i - 1) end
    if world_size % t ~= 0 then
      return bad('[%d] = %d (block %d) does not divide the world size %d', i, t, i - 1, world_size)
    end
    if cfg.NUM_HEADS and cfg.NUM_HEADS % t ~= 0 then
      return bad('[%d] = %d (block %d) does not divide NUM_HEADS %d', i, t, i - 1, cfg.NUM_HEADS)
    end
    if cfg.HIDDEN_SIZE and (cfg.HIDDEN_SIZE % t ~= 0 or hidden % t ~= 0) then
      return bad('[%d] = %d (block %d) does not divide HIDDEN_SIZE %d and the MLP width %d', i, t, i - 1,
        cfg.HIDDEN_SIZE, hidden)
    end
  end
  local function nope(what) return bad('(per-block tensor sizes) does not work with %s yet', what) end
  if (cfg.clip_grad_norm or 0) > 0 then return nope('clip_grad_norm') end
  if (cfg.CHECKPOINT_DIR or '') ~= '' then return nope('checkpoints (CHECKPOINT_DIR)') end
  if cfg.MODEL ~= nil and cfg.MODEL ~= 'vit' then return nope('MODEL (models as code)') end
  if (cfg.DROPOUT or 0) > 0 then return nope('DROPOUT > 0') end
  return nil
end

return layerwise
