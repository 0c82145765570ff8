--- lunar.parallel.domain: domain parallelism, one image sharded over the ranks
-- of a domain group (PhysicsNeMo's ShardTensor domain parallelism for its ViT
-- example; ../PARALLEL_REFS B6). Each domain rank holds a contiguous slab of
-- every image of its batch: 2D images by rows of patches, 3D volumes by planes
-- of patches (the first spatial dim), so the patchifying convolution (kernel
-- = stride = patch) needs no halo and the slab's tokens are a contiguous
-- range of the image's row-major tokens. Slabs are as even as the patch rows
-- allow (the first rows % size ranks get one more row; grid.partition).
--
--   local d = domain.new{comm = g.domain_group, size = g.domain_size, rank = g.domain_rank,
--                        attention = 'ring', img_size =, patch_size =, img_dims =}
--   d.tokens, d.token_offset, d.total_tokens       this rank's tokens, where they start (0-based), all
--   d.mode                                         'ring' or 'allgather'
--   d:slab(images) -> this rank's slab of a batch of whole images (a contiguous copy)
--   d:slab_shape(batch, channels) -> the shape of this rank's slab of a batch
--   d:attention(qkv, heads) -> o, lse             exact softmax attention of this rank's queries
--   d:attention_backward(dout, qkv, o, lse, heads) -> dqkv    over the keys of every rank
--
-- Tokens stay sharded through the network: LayerNorm, the MLP, the qkv and
-- output projections are local (the leaves as they are); nn.Attention calls
-- d:attention, nn.PositionEmbedding adds its slice of the table, nn.MeanPool
-- sums over the domain group (the modules take opts.domain: this object).
--
-- Attention (d.mode, args.attention):
--   'ring'      ring attention (Liu et al. 2023, arXiv 2310.01889): the key/value
--               block [B, n_r, 2C] of every rank passes around the domain ring
--               (non-blocking send to rank+1 and receive from rank-1, overlapped
--               with the current block's attention, lunar.ops.attention_block);
--               each block's result is merged into the running output through
--               the log-sum-exp (online softmax). Backward passes the key/value
--               blocks around the ring again, this rank's own block first; the
--               dK/dV share of this rank's queries in another rank's block goes
--               straight back to its owner (non-blocking: one wait for the
--               peers per backward, not one per block). Memory: two key/value
--               blocks at a time, and in backward up to five dK/dV blocks
--               (home, two shares in flight each way).
--   'allgather' the key/value blocks of all ranks gathered once (all_gather of
--               blocks padded to the largest), then the same block kernel per
--               block; backward gathers them again and reduce-scatters dK/dV.
--               Fewer, larger messages: for small domain sizes.
-- Both are exact (the same online-softmax merge), f32 on the CPU (the block
-- kernel has no CUDA form yet); under precision = 'bf16' qkv is widened to f32.
--
-- Gradient convention: after the mean pool (an all_reduce over the domain
-- group) every domain rank holds the same logits and loss, and the reducer
-- averages the gradients over domain x data (grid.grad_group), so the pool's
-- backward is the all_reduce's adjoint, the sum over the domain replicas of
-- the replicated gradient: size * dy (no communication: dy is the same on
-- every domain rank).
local grid_mod = require('lunar.parallel.grid')
local ops = lunar.ops

local domain = {}

local Domain = {}
Domain.__index = Domain

-- A contiguous tensor of the view v (a copy, or v itself when contiguous); the
-- view is released either way (a view left to the garbage collector would keep
-- its base's storage alive until then).
local function contiguous_of(v)
  local c = v:contiguous()
  if c ~= v then v:free() end
  return c
end

--- The slabs of an image over `size` domain ranks: a list (1-based by rank)
-- of {rows =, row0 = (0-based), tokens =, token0 = (0-based)} in patch rows
-- (3D: planes) and tokens, and the image's token count.
-- @param img_size integer pixels per side
-- @param patch_size integer
-- @param img_dims integer 2 or 3
-- @param size integer domain size
function domain.partition(img_size, patch_size, img_dims, size)
  local g = img_size // patch_size
  local per_row = 1
  for _ = 2, img_dims do per_row = per_row * g end
  local rows = grid_mod.partition(g, size)
  local parts, r0 = {}, 0
  for r = 1, size do
    parts[r] = {rows = rows[r], row0 = r0, tokens = rows[r] * per_row, token0 = r0 * per_row}
    r0 = r0 + rows[r]
  end
  return parts, g * per_row
end

--- A domain context; see the module doc for args.
function domain.new(args)
  local self = setmetatable({comm = args.comm, size = args.size, rank = args.rank,
    mode = args.attention or 'ring', patch_size = args.patch_size, img_dims = args.img_dims or 2}, Domain)
  self.parts, self.total_tokens = domain.partition(args.img_size, args.patch_size, self.img_dims, self.size)
  local me = self.parts[self.rank + 1]
  self.tokens, self.token_offset = me.tokens, me.token0
  self.pixel_rows, self.pixel_row0 = me.rows * self.patch_size, me.row0 * self.patch_size
  self.next, self.prev = (self.rank + 1) % self.size, (self.rank - 1) % self.size
  return self
end

--- The shape of this rank's slab of a batch of B images of C channels.
function Domain:slab_shape(batch, channels, img_size)
  local s = {batch, channels, self.pixel_rows}
  for i = 2, self.img_dims do s[i + 2] = img_size end
  return s
end

--- This rank's slab (a contiguous copy) of whole images [B, C, S, S(, S)]:
-- the pixel rows (3D: planes) of its patch rows. For data that arrives as
-- whole images (a file dataset); generated data is made slab by slab.
function Domain:slab(images)
  return contiguous_of(images:narrow(3, self.pixel_row0 + 1, self.pixel_rows))
end

-- The key/value part [B, n, 2C] of qkv [B, n, 3C] (a contiguous copy).
local function kv_of(qkv)
  local C = qkv:shape()[3] // 3
  return contiguous_of(qkv:narrow(3, C + 1, 2 * C))
end

-- dst:narrow(dim, start, len):copy_(src), the view released.
local function copy_into(dst, dim, start, len, src)
  local v = dst:narrow(dim, start, len)
  v:copy_(src)
  v:free()
end

-- Every rank's key/value block, gathered (all_gather of blocks padded to the
-- largest): a list, 1-based by rank, of contiguous [B, n_r, 2C].
function Domain:gather_blocks(kv)
  local s = kv:shape()
  local maxn = 0
  for _, p in ipairs(self.parts) do maxn = math.max(maxn, p.tokens) end
  local pad = lunar.zeros({s[1], maxn, s[3]}, 'f32', kv:device())
  copy_into(pad, 2, 1, s[2], kv)
  local all = lunar.empty({self.size, s[1], maxn, s[3]}, 'f32', kv:device())
  self.comm:all_gather(all, pad)
  pad:free()
  local blocks = {}
  for r = 1, self.size do
    local row = all:select(1, r)
    blocks[r] = row:narrow(2, 1, self.parts[r].tokens):clone()    -- a contiguous copy
    row:free()
  end
  all:free()
  return blocks
end

-- qkv in f32 (precision = 'bf16' gives a bf16 qkv): itself or a copy, and whether a copy.
local function f32(qkv)
  if qkv:dtype() == 'f32' then return qkv, false end
  return qkv:to('f32'), true
end

--- Exact attention of this rank's queries over the keys of every domain rank:
-- qkv [B, n, 3C] (this rank's tokens; f32, or bf16 widened here) -> o
-- [B, n, C] f32 and lse [B, H, n] f32 (the log-sum-exp over all keys, for
-- backward), and the f32 qkv the backward must be given (qkv itself when f32).
-- Collective over the domain group.
function Domain:attention(qkv, heads)
  local q, copied = f32(qkv)
  local kv = kv_of(q)
  local o, lse
  local function block(b)
    if o then ops.attention_block(q, b, heads, o, lse) else o, lse = ops.attention_block(q, b, heads) end
  end
  if self.size == 1 then
    block(kv)
  elseif self.mode == 'allgather' then
    local blocks = self:gather_blocks(kv)
    for r = 1, self.size do block(blocks[r]); blocks[r]:free() end
  else
    local B, C2 = kv:shape()[1], kv:shape()[3]
    local cur = kv
    for t = 0, self.size - 1 do
      local recv, rr, rs
      if t < self.size - 1 then      -- start passing the block on while computing with it
        recv = lunar.empty({B, self.parts[(self.rank - t - 1) % self.size + 1].tokens, C2}, 'f32', kv:device())
        rr = self.comm:irecv(recv, self.prev, 0)
        rs = self.comm:isend(cur, self.next, 0)
      end
      block(cur)
      if rs then rs:wait(); rr:wait() end
      if cur ~= kv then cur:free() end
      cur = recv
    end
  end
  kv:free()
  return o, lse, q, copied
end

--- The backward of Domain:attention: dout [B, n, C] f32, the f32 qkv, o and
-- lse of forward -> dqkv [B, n, 3C] f32 (dq from this rank's queries over all
-- keys; dk, dv summed over the queries of every rank). Collective.
function Domain:attention_backward(dout, qkv, o, lse, heads)
  local s = qkv:shape()
  local B, n, C = s[1], s[2], s[3] // 3
  local dev = qkv:device()
  local dqkv = lunar.zeros(s, 'f32', dev)
  local kv = kv_of(qkv)
  local home                                  -- dK/dV of this rank's keys, summed over every rank's queries
  if self.size == 1 then
    home = lunar.zeros({B, n, 2 * C}, 'f32', dev)
    ops.attention_block_backward(dqkv, home, dout, qkv, kv, o, lse, heads)
  elseif self.mode == 'allgather' then
    local blocks = self:gather_blocks(kv)
    local maxn = 0
    for _, p in ipairs(self.parts) do maxn = math.max(maxn, p.tokens) end
    local all = lunar.zeros({self.size, B, maxn, 2 * C}, 'f32', dev)
    for r = 1, self.size do
      local d = lunar.zeros({B, self.parts[r].tokens, 2 * C}, 'f32', dev)
      ops.attention_block_backward(dqkv, d, dout, qkv, blocks[r], o, lse, heads)
      local row = all:select(1, r)
      copy_into(row, 2, 1, self.parts[r].tokens, d)
      row:free(); d:free(); blocks[r]:free()
    end
    local mine = lunar.empty({B, maxn, 2 * C}, 'f32', dev)
    self.comm:reduce_scatter(mine, all, 'sum')
    all:free()
    home = mine:narrow(2, 1, n):clone()
    mine:free()
  else
    -- The key/value blocks pass around the ring as in forward. This rank's own
    -- block comes first and its dK/dV go straight into home; the dK/dV of another
    -- rank's block (this rank's queries' share) go straight back to the block's
    -- owner, sent without waiting (the next block is computed meanwhile), and the
    -- owner adds the size - 1 shares it receives into home: the share of rank + t
    -- (which holds this rank's block at its step t) is received from step t on
    -- and added one step later. One wait for the peers per backward, not one
    -- per block; at most two shares in flight each way.
    home = lunar.zeros({B, n, 2 * C}, 'f32', dev)
    local shares, sends = {}, {}
    local function settle(list, add)  -- wait for the oldest share of list (added into home when add)
      local sh = table.remove(list, 1)
      sh.req:wait()
      if add then ops.add_(home, sh.buf) end
      sh.buf:free()
    end
    local cur = kv
    for t = 0, self.size - 1 do
      local owner = (self.rank - t) % self.size               -- whose block cur is (0-based)
      local recv, rr, rs
      if t < self.size - 1 then
        recv = lunar.empty({B, self.parts[(owner - 1) % self.size + 1].tokens, 2 * C}, 'f32', dev)
        rr = self.comm:irecv(recv, self.prev, 0)
        rs = self.comm:isend(cur, self.next, 0)
      end
      if t == 0 then
        ops.attention_block_backward(dqkv, home, dout, qkv, cur, o, lse, heads)
      else
        local buf = lunar.empty({B, n, 2 * C}, 'f32', dev)
        shares[#shares + 1] = {buf = buf, req = self.comm:irecv(buf, (self.rank + t) % self.size, 1)}
        local d = lunar.zeros({B, self.parts[owner + 1].tokens, 2 * C}, 'f32', dev)
        ops.attention_block_backward(dqkv, d, dout, qkv, cur, o, lse, heads)
        sends[#sends + 1] = {buf = d, req = self.comm:isend(d, owner, 1)}
        if #sends > 1 then settle(sends, false) end
        if #shares > 1 then settle(shares, true) end
      end
      if rs then rs:wait(); rr:wait() end
      if cur ~= kv then cur:free() end
      cur = recv
    end
    while #shares > 0 do settle(shares, true) end
    while #sends > 0 do settle(sends, false) end
  end
  kv:free()
  copy_into(dqkv, 3, C + 1, 2 * C, home)
  home:free()
  return dqkv
end

--- The mean over all the image's tokens of this rank's tokens x [B, n, C]:
-- the local sum / total_tokens, all_reduced over the domain group -> [B, C]
-- (the same on every domain rank). Collective.
function Domain:mean_pool_reduce(y)
  if self.size > 1 then self.comm:all_reduce(y, 'sum') end
  return y
end

--- The layer library a MODEL function receives under domain parallelism:
-- lunar.nn with PositionEmbedding, Attention, Block and MeanPool built with
-- this domain context, and the leaves that need whole token sequences or
-- whole images (ClassToken, SelectToken, MultiheadAttention, PatchEmbed, ViT)
-- refused with a message naming `where` (the MODEL's definition).
function Domain:layers(nn, where)
  local d = self
  local lib = setmetatable({}, {__index = nn})
  local function with(o)
    local c = {}
    for k, v in pairs(o or {}) do c[k] = v end
    c.domain = d
    return c
  end
  function lib.Attention(dim, heads, o) return nn.Attention(dim, heads, with(o)) end
  function lib.Block(o) return nn.Block(with(o)) end
  function lib.MeanPool(o) return nn.MeanPool(with(o)) end
  function lib.PositionEmbedding(n, dim, o) return nn.PositionEmbedding(n, dim, with(o)) end
  function lib.Conv2d(cin, cout, k, o)
    local stride, pad = (o or {}).stride or k, (o or {}).padding or 0
    if stride ~= k or pad ~= 0 then
      error(string.format('%s: nn.Conv2d with stride %d and padding %d reads across the slab boundaries of ' ..
        'parallel.domain = %d (no halo exchange); only the patchifying convolution (stride = kernel, no ' ..
        'padding) runs domain-parallel, or set parallel.domain = 1', where, stride, pad, d.size), 0)
    end
    return nn.Conv2d(cin, cout, k, o)
  end
  for _, name in ipairs({'ClassToken', 'SelectToken', 'MultiheadAttention', 'PatchEmbed', 'ViT', 'ShiftedPatches'}) do
    lib[name] = function()
      error(string.format("%s: nn.%s has no domain-parallel form (parallel.domain = %d shards each image's " ..
        'tokens over ranks); use nn.Conv2d/Conv3d, nn.PositionEmbedding, nn.Attention/Block and nn.MeanPool ' ..
        "(as MODEL = 'hybrid_vit' does), or set parallel.domain = 1", where, name, d.size), 0)
    end
  end
  return lib
end

return domain
