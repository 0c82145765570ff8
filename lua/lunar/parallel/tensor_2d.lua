--- lunar.parallel.tensor_2d: 2D tensor parallelism (Optimus: Xu et al. 2021,
-- arXiv 2104.05343; SUMMA: van de Geijn & Watts 1997) and 2.5D (Tesseract:
-- Wang et al. 2021, arXiv 2105.14500), as Colossal-AI's `parallel = {tensor =
-- {mode = '2d', size = q*q}}` and `{mode = '2.5d', size = d*q*q, depth = d}`
-- ask for them: the layer factory lunar.nn's modules take as opts.tp (the
-- fields of lunar.nn.layers).
--
-- The tensor group of d*q*q ranks is d layers of a q x q grid: tensor rank
-- r = k*q*q + i*q + j is row i, column j of depth layer k (2D: d = 1, k = 0).
--   row group     the q ranks (k, i, *)    activations' feature blocks
--   column group  the q ranks (k, *, j)    weight blocks; vector pieces
--   depth group   the d ranks (*, i, j)    replicas of one block (2.5D)
--   batch group   the d*q ranks (*, *, j)  the batch blocks, in order k*q + i
-- Activations [B, N, C] are split in blocks: rank (k, i, j) holds batch
-- block k*q + i of d*q and feature block j of q: [B/(dq), N, C/q]. The
-- attention heads are split like the features (H/q per rank, the q, k, v
-- rows of those heads), the tokens are whole.
--
-- Parameters (timm's names and full shapes; each rank a disjoint piece of
-- every split one within a depth layer, the d layers replicas of each other,
-- the gradients of the replicas summed over the depth group):
--   a linear's weight [out, in]   rows block j (of its `groups`, e.g. qkv's q,
--                                 k and v rows of heads block j), columns block i:
--                                 [out/q, in/q]; a SUMMA GEMM (Linear2D)
--   vectors used by feature block j: a linear's bias, LayerNorm's weight and
--     bias, cls_token, pos_embed, patch_embed.proj (its output channels) and
--     the head's weight (its input features): block j split again in q
--     pieces along the column group, rank (i, j) holding piece i (1/q^2 of the
--     tensor, as Colossal-AI's Linear2D bias, LayerNorm2D, PatchEmbedding2D
--     and Classifier2D keep them); gathered over the column group when used,
--     their gradients reduce-scattered back
--   head.bias [classes]           replicated on every tensor rank (the logits
--                                 are replicated; its gradient is summed over
--                                 the batch group, so every copy gets the same)
-- The logits [B/(dq), classes] of a batch block are all-reduced over the row
-- group, then all-gathered over the batch group: the loss sees the whole
-- micro-batch's logits [B, classes] on every tensor rank, as with 1D
-- (Colossal-AI computes the loss on the blocks; gathering B x classes floats
-- keeps lunar.engine's one criterion for every layout).
--
--   local t = tensor_2d.new{q = 2, depth = 1, rank = r, groups = g.tensor_groups}
--   nn.ViT{..., tp = t}       (lunar.parallel.tp_context(g) does this from the grid)
--
-- Bad layouts are found by tensor_2d.check (grid.validate calls it, before
-- any collective); the modules repeat the checks that concern them.
local tensor_2d = {}

local layers = require('lunar.nn.layers')   -- the fields a mode does not define itself

local T2 = {}
T2.__index = function(_, k) local v = T2[k]; if v == nil then v = layers[k] end; return v end

-- ---- layout checks -------------------------------------------------------------------------

local function isqrt(n)
  local r = math.floor(math.sqrt(n) + 0.5)
  if r * r == n then return r end
  return nil
end

--- The grid sizes of a mode: q, d, or nil and a message (no "parallel: "
-- prefix) naming the key and the numbers.
-- @param mode '2d' or '2.5d'
-- @param size parallel.tensor.size
-- @param depth parallel.tensor.depth (2.5D; nil = 1)
function tensor_2d.dims(mode, size, depth)
  if mode == '2d' then
    local q = isqrt(size)
    if not q then
      return nil, string.format("tensor mode '2d' needs parallel.tensor.size = q x q (4, 9, 16, ...), got %d " ..
        '(not a perfect square)', size)
    end
    return q, 1
  end
  depth = depth or 1
  if math.type(depth) ~= 'integer' or depth < 1 then
    return nil, string.format("tensor mode '2.5d': parallel.tensor.depth %s must be an integer >= 1", tostring(depth))
  end
  if size % depth ~= 0 then
    return nil, string.format("tensor mode '2.5d': parallel.tensor.depth %d does not divide parallel.tensor.size %d",
      depth, size)
  end
  local q = isqrt(size // depth)
  if not q then
    return nil, string.format("tensor mode '2.5d' needs parallel.tensor.size = depth x q x q: size %d / depth %d = %d " ..
      'is not a perfect square', size, depth, size // depth)
  end
  return q, depth
end

--- Checks a config against a 2D / 2.5D layout, with no communication.
-- @param mode '2d' or '2.5d'
-- @param size, depth parallel.tensor's
-- @param cfg the config (HIDDEN_SIZE, NUM_HEADS, MLP_RATIO, BATCH_SIZE,
--   NUM_MICRO_BATCHES, MODEL)
-- @return nil, or the message (no "parallel: " prefix)
function tensor_2d.check(mode, size, depth, cfg)
  local q, d = tensor_2d.dims(mode, size, depth)
  if not q then return d end
  if q == 1 and d == 1 then return nil end
  local what = string.format("tensor mode '%s' (q = %d%s)", mode, q, d > 1 and (', depth ' .. d) or '')
  return tensor_2d.check_split(what, cfg, q, q * q, 'q x q', d * q, 'depth x q')
end

--- The checks every mode that splits activations makes (2D, 2.5D, 3D):
-- HIDDEN_SIZE and the MLP hidden size divisible by `unit` (q blocks, each
-- in unit/q pieces), NUM_HEADS by q, the micro-batch by the nbatch batch
-- blocks; MODEL (check_model). nil, or the message starting
-- with `what` (the mode and its sizes); the labels name unit and nbatch.
function tensor_2d.check_split(what, cfg, q, unit, unit_label, nbatch, batch_label)
  local dim, heads = cfg.HIDDEN_SIZE, cfg.NUM_HEADS
  if dim and dim % unit ~= 0 then
    return string.format('%s: HIDDEN_SIZE %d is not divisible by %s = %d (features are split in q blocks and ' ..
      'the norms, biases and embeddings of a block in pieces)', what, dim, unit_label, unit)
  end
  if heads and heads % q ~= 0 then
    return string.format('%s: NUM_HEADS %d is not divisible by q = %d (heads are split like the features)',
      what, heads, q)
  end
  if dim then
    local hidden = math.floor(dim * (cfg.MLP_RATIO or 4) + 0.5)
    if hidden % unit ~= 0 then
      return string.format('%s: the MLP hidden size %d (HIDDEN_SIZE %d x MLP_RATIO %g) is not divisible by %s = %d',
        what, hidden, dim, cfg.MLP_RATIO or 4, unit_label, unit)
    end
  end
  local m = cfg.NUM_MICRO_BATCHES or 1
  if cfg.BATCH_SIZE and cfg.BATCH_SIZE % m == 0 and (cfg.BATCH_SIZE // m) % nbatch ~= 0 then
    return string.format('%s: the micro-batch of %d images (BATCH_SIZE %d / NUM_MICRO_BATCHES %d) is not divisible ' ..
      'by %s = %d (the batch is split in that many blocks)', what, cfg.BATCH_SIZE // m, cfg.BATCH_SIZE, m,
      batch_label, nbatch)
  end
  return tensor_2d.check_model(what, cfg)
end

--- What the modes that split activations (2D, 2.5D, 3D) do not support:
-- nil, or the message starting with `what` (the mode and its sizes).
function tensor_2d.check_model(what, cfg)
  if cfg.MODEL ~= nil and cfg.MODEL ~= 'vit' then
    return string.format("%s: config key 'MODEL' (a model defined in the config) is not supported: use the " ..
      'built-in ViT (MODEL = nil) or tensor mode 1d', what)
  end
  return nil
end

--- Splits the grid's tensor group into the row, column, depth and batch
-- groups (collective over g.tp_group: four splits, the same on every rank)
-- and stores them as g.tensor_groups = {q=, d=, i=, j=, k=, row=, col=,
-- depth=, batch=}.
function tensor_2d.make_groups(g, mode, depth)
  local q, d = tensor_2d.dims(mode, g.tp_size, depth)
  local r = g.tp_rank
  local k, i, j = r // (q * q), (r % (q * q)) // q, r % q
  local tp = g.tp_group
  local name = tp:name()
  g.tensor_groups = {
    q = q, d = d, i = i, j = j, k = k,
    row = tp:split(k * q + i, j, name .. '/row'),
    col = tp:split(k * q + j, i, name .. '/col'),
    depth = tp:split(i * q + j, k, name .. '/depth'),
    batch = tp:split(j, k * q + i, name .. '/batch'),
  }
  return g.tensor_groups
end

--- @param args {q=, depth=1, rank= (tensor rank), groups= (make_groups'
--   result; needed by forward and backward only, so a model can be built
--   without one), mode='2d'|'2.5d'}
-- @return the factory (fields: size, rank, q, d, i, j, k, groups, mode)
function tensor_2d.new(args)
  local q, d = assert(args.q, 'tensor_2d.new: q is required'), args.depth or 1
  local r = assert(args.rank, 'tensor_2d.new: rank is required')
  local t = setmetatable({size = d * q * q, rank = r, q = q, d = d, k = r // (q * q), i = (r % (q * q)) // q,
    j = r % q, groups = args.groups, mode = args.mode or (d > 1 and '2.5d' or '2d'), sequence_parallel = false}, T2)
  -- the activations' feature block, and this rank's piece of a vector's block (over the column group)
  t.fblock, t.piece, t.npieces = t.j, t.i, q
  t.bblock, t.nbatch = t.k * q + t.i, d * q          -- the activations' batch block, of nbatch
  return t
end

--- The class of the factory (lunar.parallel.tensor_3d builds on it).
tensor_2d.Factory = T2

-- ---- where a piece sits in the full tensor -------------------------------------------------

-- Block `idx` of `parts` along a dim of length F made of G equal groups (every
-- group cut in `parts`): list of {full=, loc=, len=} (0-based offsets).
local function block_intervals(F, G, parts, idx)
  local group = F // G
  local part = group // parts
  local out = {}
  for g = 0, G - 1 do out[#out + 1] = {full = g * group + idx * part, loc = g * part, len = part} end
  return out
end

-- The local range [start, start + len) of an interval list, re-based to 0.
local function sub_intervals(list, start, len)
  local out = {}
  for _, iv in ipairs(list) do
    local s, e = math.max(iv.loc, start), math.min(iv.loc + iv.len, start + len)
    if e > s then out[#out + 1] = {full = iv.full + (s - iv.loc), loc = s - start, len = e - s} end
  end
  return out
end

-- The N-d pieces {full = ranges, ['local'] = ranges} (lunar.checkpoint.reshard's
-- form) from one interval list per dim (nil: the whole dim).
local function cross(full_shape, per_dim)
  local pieces = {{full = {}, ['local'] = {}}}
  for d = 1, #full_shape do
    local list = per_dim[d] or {{full = 0, loc = 0, len = full_shape[d]}}
    local next_pieces = {}
    for _, pc in ipairs(pieces) do
      for _, iv in ipairs(list) do
        local f, l = {table.unpack(pc.full)}, {table.unpack(pc['local'])}
        f[d], l[d] = {iv.full, iv.len}, {iv.loc, iv.len}
        next_pieces[#next_pieces + 1] = {full = f, ['local'] = l}
      end
    end
    pieces = next_pieces
  end
  return pieces
end

--- The shard spec of a linear's weight [out, in]: rows block j (of `groups`),
-- columns block i; local shape [out/q, in/q].
function T2:weight_shard(out_f, in_f, groups)
  local fs = {out_f, in_f}
  return {full_shape = fs, replica = self.k, mode = self.mode,
    pieces = cross(fs, {block_intervals(out_f, groups or 1, self.q, self.j), block_intervals(in_f, 1, self.q, self.i)})}
end

--- How a vector parameter is split (the default: the activations'): block
-- `block` of q along its dim, that block cut in `npieces` pieces of which
-- this rank holds `piece`, gathered over self.groups[group] (in piece
-- order); `extra` = {dim=, block=} also takes block `block` of q along
-- another dim (a 3D linear's weight); `label` names npieces * q in messages.
function T2:vector_layout()
  return {group = 'col', block = self.fblock, piece = self.piece, npieces = self.npieces, label = 'q x q'}
end

--- The shard spec of a vector along dim `dim` of full_shape (`groups` as a
-- weight's rows: each group's block `block`, then the pieces of that),
-- split as layout L (default self:vector_layout()).
function T2:vector_shard(full_shape, dim, groups, L)
  L = L or self:vector_layout()
  local F, q = full_shape[dim], self.q
  local n = F // (q * L.npieces)
  local per = {}
  per[dim] = sub_intervals(block_intervals(F, groups or 1, q, L.block), L.piece * n, n)
  if L.extra then per[L.extra.dim] = block_intervals(full_shape[L.extra.dim], 1, q, L.extra.block) end
  return {full_shape = full_shape, replica = self.k, mode = self.mode, pieces = cross(full_shape, per)}
end

-- ---- vector pieces: gathered when used, gradients reduce-scattered --------------------------

--- Declares a vector piece on `module` (see the module doc): local shape
-- full_shape with dim `dim` / (q * npieces) (and the extra dim / q). opts:
-- Module:param's, plus groups and layout (default self:vector_layout()).
function T2:vector_param(module, name, full_shape, dim, init, opts)
  opts = opts or {}
  local L = opts.layout or self:vector_layout()
  local F, q, G = full_shape[dim], self.q, opts.groups or 1
  if F % (G * q * L.npieces) ~= 0 then
    error(string.format("tensor mode '%s': %s has %d features along dim %d, not divisible by %s%s = %d",
      self.mode, name, F, dim, G > 1 and (G .. ' groups x ') or '', L.label, q * L.npieces), 0)
  end
  local shape = {table.unpack(full_shape)}
  shape[dim] = F // (q * L.npieces)
  if L.extra then shape[L.extra.dim] = shape[L.extra.dim] // q end
  local o = {shard = self:vector_shard(full_shape, dim, G, L)}
  for k, v in pairs(opts) do if k ~= 'groups' and k ~= 'layout' then o[k] = v end end
  module._vector_layouts = module._vector_layouts or {}
  module._vector_layouts[name] = {dim = dim, layout = L}
  return module:param(name, shape, init, o)
end

--- t (a tensor the caller owns) viewed as `shape`: the view owns the storage
-- from now on (t's header is freed, so nothing waits for the garbage
-- collector to release the storage). Shared by the modes' modules.
function tensor_2d.reshape(t, shape)
  local v = t:view(table.unpack(shape))
  t:free()
  return v
end
local reshape = tensor_2d.reshape

-- The permutation that moves dim 1 of an (n+1)-dim tensor to just before dim d+1.
local function move_first(n, d)
  local perm = {}
  for x = 2, d do perm[#perm + 1] = x end
  perm[#perm + 1] = 1
  for x = d + 1, n + 1 do perm[#perm + 1] = x end
  return perm
end

--- The block of a vector parameter (all-gather of the pieces over the
-- layout's group, the column group by default; under precision = 'bf16' its working copy when `working`): a new
-- tensor, the caller frees it.
function T2:gather_vector(module, name, working)
  local v = module._vector_layouts[name]
  local dim, q = v.dim, v.layout.npieces
  local t = working and module:gemm_weight(name) or module[name]
  local s = t:shape()
  local buf = lunar.empty({q, table.unpack(s)}, t:dtype(), t:device())
  self.groups[v.layout.group]:all_gather(buf, t)
  local full = {table.unpack(s)}
  full[dim] = s[dim] * q
  if dim == 1 then return reshape(buf, full) end
  local pv = buf:permute(table.unpack(move_first(#s, dim)))
  local c = pv:contiguous()
  pv:free(); buf:free()
  return reshape(c, full)
end

--- Adds the gradient of block j, gblock (this rank's batch block's partial
-- sum; left alone), into the vector's gradient piece: reduce-scatter over
-- the layout's group (the sum over the batch rows), all_reduce over the depth
-- group (2.5D), add.
function T2:reduce_vector_grad(module, name, gblock)
  local v = module._vector_layouts[name]
  local dim, q = v.dim, v.layout.npieces
  local gp = module['grad_' .. name]
  local s = gp:shape()
  local split = {}
  for x = 1, #s do
    if x == dim then split[#split + 1] = q end
    split[#split + 1] = s[x]
  end
  local gc = gblock:is_contiguous() and gblock or gblock:contiguous()
  local stacked = gc:view(table.unpack(split))   -- a header over gc's storage
  if dim > 1 then
    -- [..., q, piece, ...] -> [q, ..., piece, ...]
    local perm = {dim}
    for x = 1, #split do if x ~= dim then perm[#perm + 1] = x end end
    local pv = stacked:permute(table.unpack(perm))
    local c = pv:contiguous()
    pv:free(); stacked:free()
    stacked = c
  end
  local out = lunar.empty(s, 'f32', gp:device())
  self.groups[v.layout.group]:reduce_scatter(out, stacked, 'sum')
  if self.d > 1 then self.groups.depth:all_reduce(out, 'sum') end
  lunar.ops.add_(gp, out)
  out:free(); stacked:free()
  if gc ~= gblock then gc:free() end
end

--- Sums a freshly computed gradient piece (a tensor of a replicated block:
-- a weight block's) over the depth group (2.5D; a no-op in 2D), in place.
function T2:reduce_depth(t)
  if self.d > 1 then self.groups.depth:all_reduce(t, 'sum') end
  return t
end

-- ---- shared by the linears (Linear2D, Linear3D) ----------------------------------------------

--- A linear's output: y [R, out_local] viewed as the input's leading shape
-- `shape` with out_local features, cast to bf16 when the module's output is
-- (Linear.output_dtype); y is consumed.
function tensor_2d.linear_output(m, y, shape)
  local out_shape = {table.unpack(shape)}
  out_shape[#out_shape] = m.out_local
  y = reshape(y, out_shape)
  if require('lunar.nn.Linear').output_dtype(m) == 'bf16' then
    local y16 = lunar.ops.cast_bf16(y)
    y:free()
    y = y16
  end
  return y
end

--- Adds the column sums of dy2 [R, out_local] (f32 or bf16; summed in f32)
-- into m's bias piece gradient (tp:reduce_vector_grad).
function tensor_2d.bias_grad(m, dy2)
  local R, n = dy2:shape()[1], m.out_local
  local gb = lunar.zeros({n}, 'f32', dy2:device())
  local ones = lunar.ones({R, 1}, 'f32', dy2:device())
  local dyf = dy2:dtype() == 'f32' and dy2 or (dy2 + 0)
  local gv = gb:view(n, 1)
  lunar.ops.linear_backward(dyf, ones, gv, gv, nil, false)
  if dyf ~= dy2 then dyf:free() end
  ones:free(); gv:free()
  m.tp:reduce_vector_grad(m, 'bias', gb)
  gb:free()
end

-- ---- the factory (lunar.nn.layers' fields) ---------------------------------------------------

local with_tp = require('lunar.parallel.tensor_1d').with_tp

--- A Linear2D (SUMMA): [..., in/q] block (i, j) -> [..., out/q] block (i, j)
-- (opts: groups, bias, init, bias_init, bf16_output).
function T2:column_linear(in_features, out_features, opts)
  return require('lunar.parallel.Linear2D')(in_features, out_features, with_tp(self, opts))
end

--- A Linear2D as well: 2D has no row/column distinction between the two
-- linears of a pair (both take and give blocks).
T2.row_linear = T2.column_linear

--- A LayerNorm2D: statistics all-reduced over the row group.
function T2:layer_norm(dim, eps)
  return require('lunar.parallel.LayerNorm2D')(dim, eps, {tp = self})
end

--- A PatchEmbed2D: images [B, C, S..] (the whole micro-batch, as every tensor
-- rank receives it) -> tokens block [B/(dq), L, dim/q].
function T2:patch_embed(opts)
  return require('lunar.parallel.PatchEmbed2D')(with_tp(self, opts))
end

--- A Classifier2D: class tokens block [B/(dq), dim/q] -> logits [B, classes]
-- (every tensor rank the whole micro-batch's).
function T2:head(dim, num_classes)
  return require('lunar.parallel.Classifier2D')(dim, num_classes, {tp = self})
end

--- Declares cls_token [1, 1, dim] and pos_embed [1, N, dim] on `owner` (the
-- ViT) as vector pieces along dim 3.
function T2:token_params(owner, num_tokens, dim, cls_init, pos_init)
  self:vector_param(owner, 'cls_token', {1, 1, dim}, 3, cls_init, {no_weight_decay = true})
  self:vector_param(owner, 'pos_embed', {1, num_tokens, dim}, 3, pos_init, {no_weight_decay = true})
end

--- patch tokens block [b, L, dim/q] -> [b, L+1, dim/q] (class token first,
-- position embedding added) from the gathered blocks of owner's pieces.
function T2:embed_tokens(owner, p)
  local cls, pos = self:gather_vector(owner, 'cls_token'), self:gather_vector(owner, 'pos_embed')
  local e = lunar.ops.embed_tokens(p, cls, pos)
  cls:free(); pos:free()
  return e
end

--- The backward of embed_tokens: accumulates owner's cls_token and pos_embed
-- gradient pieces; returns the patch tokens' gradient [b, L, dim/q].
function T2:embed_tokens_backward(owner, dt)
  local cs, ps = owner.grad_cls_token:shape(), owner.grad_pos_embed:shape()
  local gc = lunar.zeros({cs[1], cs[2], cs[3] * self.npieces}, 'f32', dt:device())
  local gp = lunar.zeros({ps[1], ps[2], ps[3] * self.npieces}, 'f32', dt:device())
  local dp = lunar.ops.embed_tokens_backward(dt, gc, gp)
  self:reduce_vector_grad(owner, 'cls_token', gc)
  self:reduce_vector_grad(owner, 'pos_embed', gp)
  gc:free(); gp:free()
  return dp
end

--- A Dropout on the residual layout's block [b, N, C/q] (batch block
-- batch_block() of num_batch_blocks(), feature block fblock of q: what
-- pos_drop, proj_drop and the MLP's drop see in every mode of this factory):
-- each element draws the mask of its position in the whole [B, N, C]
-- tensor, row r of the block being row bblock * rows + r of the whole
-- (the tokens are whole), its features at fblock * C/q (Dropout.placement,
-- ops.dropout's rows form). So the split run drops what one rank drops.
-- `whole` (tokens before a scatter) has no meaning here: tokens are whole.
function T2:dropout(p, seed)
  local d = require('lunar.nn.Dropout')(p, seed)
  local bblock, fblock, q = self.bblock, self.fblock, self.q
  d.placement = function(x)
    local shape = x:shape()
    local c = shape[#shape]
    local rows = x:numel() // c
    return (bblock * rows * q + fblock) * c, c, c * q
  end
  return d
end

--- Heads on this rank: H/q (those of feature block j).
function T2:local_heads(num_heads)
  if num_heads % self.q ~= 0 then
    error(string.format("attention: NUM_HEADS %d is not divisible by q = %d (tensor mode '%s')", num_heads, self.q,
      self.mode), 0)
  end
  return num_heads // self.q
end

--- Features of an activation on this rank: C/q.
function T2:local_features(dim) return dim // self.q end

--- Images of a micro-batch of B in this rank's batch block: B /
-- num_batch_blocks() (an error naming both when it does not divide).
function T2:local_batch(batch)
  local nb = self:num_batch_blocks()
  if batch % nb ~= 0 then
    error(string.format("tensor mode '%s': a micro-batch of %d images is not divisible by %s = %d",
      self.mode, batch, self.mode == '3d' and 'q x q' or 'depth x q', nb), 0)
  end
  return batch // nb
end

--- This rank's batch block index (0-based, of num_batch_blocks()): 2D /
-- 2.5D k*q + i, 3D i*q + j.
function T2:batch_block() return self.bblock end

--- The number of batch blocks of a micro-batch: 2D / 2.5D d*q, 3D q*q.
function T2:num_batch_blocks() return self.nbatch end

--- Where the activation block of tensor rank `rank` (default this one) sits:
-- batch block, number of batch blocks, feature block, number of feature
-- blocks (0-based). `inner` (the output of column_linear, the input of
-- row_linear) is the same layout in 2D / 2.5D.
function T2:activation_block(inner, rank)
  rank = rank or self.rank
  local q = self.q
  local k, i, j = rank // (q * q), (rank % (q * q)) // q, rank % q
  return k * q + i, self.d * q, j, q
end

return tensor_2d
