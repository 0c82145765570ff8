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
-- Checkpoints describe each block's parameters by its own split (param_ranks:
-- the block's data-parallel rank 0 writes them), so they resume on the same
-- layout and reshard into any other; clip_grad_norm sums each block's shards
-- over its own tensor group (sum_squares).
--
-- parallel.block_tensor_consec = {c_0, ...} (booleans, default all true) puts
-- block i's tensor group on consecutive ranks (true) or strided ones (false:
-- ranks r % (W/t), r % (W/t) + W/t, ...; Galvatron's tp_consec = 0). Every
-- block gathers from and returns to the base layout, so neighbours of any two
-- placements meet there. Dropout draws the single-rank run's masks for the
-- same samples (set_dropout_rows).
--
-- Not yet with it (checked by grid.validate before any collective): pipeline or
-- tensor parallelism of the base layout, sequence parallelism, MODEL.
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

--- Whether block i (0-based) puts its tensor group on consecutive ranks
-- (parallel.block_tensor_consec[i + 1], default true; Galvatron's tp_consec).
function layerwise.consecutive(g, i)
  local c = g.block_tensor_consec
  return c == nil or c[i + 1] ~= false
end

--- The key of a block's groups in g.block_groups: t (consecutive ranks) or
-- 's' .. t (strided ranks); t = the world size has one group, consecutive.
function layerwise.group_key(t, consec, world_size)
  if consec or t >= world_size then return t end
  return 's' .. t
end

--- The global ranks of block group position a (0-based) for rank R, size t of
-- a world of W ranks: consecutive R - R % t + a, strided R % (W / t) + a * W / t.
local function member(R, t, W, consec, a)
  if consec or t >= W then return R - R % t + a end
  local s = W // t
  return R % s + a * s
end

--- The groups of each size and placement the list uses (collective over
-- comm: two splits per group kind, sizes ascending, consecutive first):
-- {[key] = {tp = tensor group, dp = its data-parallel group, members = the
-- tp group's global ranks in group-rank order}} (key: layerwise.group_key).
-- Consecutive: tp ranks r - r % t .. (color r // t), dp r % t; strided
-- (Galvatron's tp_consec = 0): tp ranks r % (W/t), r % (W/t) + W/t, ... (color
-- r % (W/t)), dp the W/t consecutive ranks r - r % (W/t) ...
-- @param consec list of booleans per block (nil: all consecutive)
function layerwise.groups(comm, list, consec)
  local R, W, out = comm:rank(), comm:size(), {}
  local used = {}
  for i, t in ipairs(list) do
    if t > 1 then used[layerwise.group_key(t, consec == nil or consec[i] ~= false, W)] = true end
  end
  for _, t in ipairs(layerwise.sizes(list)) do
    for _, c in ipairs({true, false}) do
      local key = layerwise.group_key(t, c, W)
      if used[key] and not out[key] then
        local s = W // t
        local tp_color, tp_key, dp_color, dp_key = R // t, R % t, R % t, R // t
        if key ~= t then tp_color, tp_key, dp_color, dp_key = R % s, R // s, R // s, R % s end
        local grp = {tp = comm:split(tp_color, tp_key, comm:name() .. '/btp' .. key),
          dp = comm:split(dp_color, dp_key, comm:name() .. '/bdp' .. key), members = {}}
        for a = 0, t - 1 do grp.members[a + 1] = member(R, t, W, c, a) end
        out[key] = grp
      end
    end
  end
  return out
end

--- The groups of block i (0-based; an entry of layerwise.groups), nil for tensor size 1.
function layerwise.block_group(g, i)
  local t = g.block_tensor[i + 1]
  if not t or t <= 1 then return nil end
  return g.block_groups[layerwise.group_key(t, layerwise.consecutive(g, i), g.world_size)]
end

--- nn.ViT options for the grid's per-block sizes: opts.block_tp(i) (the tensor
-- factory of block i, nil for size 1) and opts.wrap_block(i, block).
function layerwise.model_options(o, g)
  o.block_tp = function(i)
    local grp = layerwise.block_group(g, i)
    if not grp then return nil end
    return tensor_1d.new{comm = grp.tp, size = grp.tp:size(), rank = grp.tp:rank()}
  end
  o.wrap_block = function(i, block)
    local grp = layerwise.block_group(g, i)
    if not grp then return block end
    return layerwise.Redistributed(block, grp.tp)
  end
  return o
end

--- Makes every Dropout of a layerwise model draw the mask the single-rank run
-- draws for the same samples (lunar.nn.Dropout's rows): the loader gives data
-- rank R of W the rows j * W + R of the global batch (lunar.data's interleaved
-- shards), and a block run on a tensor group sees the rows of its members
-- gathered in group-rank order. Local (no communication).
-- @param model the ViT of parallel.vit on a grid with parallel.block_tensor
function layerwise.set_dropout_rows(model, g)
  local W, R = g.world_size, g.rank
  local function rows_of(members)
    return function(n)
      local b, out = n // #members, {}
      for i = 0, n - 1 do out[i + 1] = (i % b) * W + members[i // b + 1] end
      return out
    end
  end
  local own = rows_of({R})
  model:apply(function(m, path)
    if m.__name == 'Dropout' then
      local i = path:match('^blocks%.(%d+)%.')
      local grp = i and layerwise.block_group(g, tonumber(i))
      m.rows = grp and rows_of(grp.members) or own
    end
  end)
end

--- The reducer's synchronization of a gradient group ('blocks.i', 'embed',
-- 'head'): {comm = the data-parallel group to average over, post_scale =
-- factor after it}, or nil for the grid's data-parallel group.
function layerwise.grad_sync(g, key)
  local i = key:match('^blocks%.(%d+)$')
  local grp = i and layerwise.block_group(g, tonumber(i))
  if not grp then return nil end
  return {comm = grp.dp, post_scale = 1 / grp.tp:size()}
end

--- Where this rank sits in the groups of the block that holds parameter
-- `name` ('blocks.<i>.<...>', a block with tensor size t > 1): its rank in the
-- block's data-parallel group and in its tensor group; nil for any other
-- parameter (the grid's coordinates apply). For lunar.checkpoint's writers:
-- block dp rank 0 writes the block's shards (tensor rank 0 its replicated ones).
function layerwise.param_ranks(g, name)
  local i = name:match('^blocks%.(%d+)%.')
  local grp = i and layerwise.block_group(g, tonumber(i))
  if not grp then return nil end
  return grp.dp:rank(), grp.tp:rank()
end

--- The sum of squares of the gradients of params, each counted once, on a
-- layerwise layout (parallel.grad_norm's part for parallel.block_tensor): a
-- block's shards are summed over its tensor group (one all_reduce per group
-- kind, over that kind's groups: every rank calls them, in g.block_groups'
-- sorted key order), its replicated parameters (norms, RowParallelLinear's
-- bias: the same on every rank of the group) and every parameter outside the
-- t > 1 blocks (the same on every rank after the data-parallel average)
-- counted on each rank once. Collective over the world. Returns a float.
function layerwise.sum_squares(params, g)
  local ops = lunar.ops
  local s, by_key = 0.0, {}
  for _, p in ipairs(params) do
    local i = p.name:match('^blocks%.(%d+)%.')
    local grp = i and layerwise.block_group(g, tonumber(i))
    if grp and p.shard then
      by_key[grp] = (by_key[grp] or 0.0) + ops.sum_squares(p.grad)
    else
      s = s + ops.sum_squares(p.grad)
    end
  end
  local keys = {}
  for k in pairs(g.block_groups) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local grp = g.block_groups[tonumber(k) or k]
    s = s + grp.tp:all_reduce_number(by_key[grp] or 0.0, 'sum')
  end
  return s
end

--- What a layout with parallel.block_tensor cannot do yet: nil, or a message.
function layerwise.validate(cfg, world_size, r)
  local list = cfg.parallel and cfg.parallel.block_tensor
  if list == nil then
    if cfg.parallel and cfg.parallel.block_tensor_consec ~= nil then
      return 'parallel: block_tensor_consec (per-block tensor placement) needs parallel.block_tensor (per-block tensor sizes)'
    end
    return nil
  end
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
  local consec = cfg.parallel.block_tensor_consec
  if consec ~= nil then
    if cfg.DEPTH and #consec ~= cfg.DEPTH then
      return string.format('parallel: block_tensor_consec has %d entries; it needs one boolean per block (DEPTH %d)',
        #consec, cfg.DEPTH)
    end
    for i, c in ipairs(consec) do
      if type(c) ~= 'boolean' then
        return string.format('parallel: block_tensor_consec[%d] (block %d) is %s, not a boolean', i, i - 1, tostring(c))
      end
    end
  end
  local function nope(what) return bad('(per-block tensor sizes) does not work with %s yet', what) end
  if cfg.MODEL ~= nil and cfg.MODEL ~= 'vit' then return nope('MODEL (models as code)') end
  return nil
end

return layerwise
