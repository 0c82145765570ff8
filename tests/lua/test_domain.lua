-- Tests of domain parallelism's single-rank pieces (lua/lunar/parallel/domain.lua,
-- lunar.ops.attention_block, grid.validate's domain checks); the multi-rank
-- equivalence is tests/mpi/domain_check.lua. Expected values: the fused
-- single-rank attention kernel (lunar.ops.attention) on the whole sequence,
-- and hand arithmetic for the slabs (stated below).
--   build/lunar tests/lua/test_domain.lua
local T = require('harness')
local ops = lunar.ops
local domain = require('lunar.parallel.domain')
local grid = require('lunar.parallel.grid')

local maxdiff = require('harness').max_abs_diff

T.test('attention_block: key blocks of 5, 1 and 7 tokens merged through the log-sum-exp = the fused attention',
  function()
  local B, N, H, D = 2, 13, 3, 8
  local C = H * D
  local qkv = lunar.empty({B, N, 3 * C}):normal_(3, 'test_domain.qkv', 0, 1)
  local dout = lunar.empty({B, N, C}):normal_(3, 'test_domain.dout', 0, 1)
  local o, lse = ops.attention(qkv, H)
  local dqkv = ops.attention_backward(dout, qkv, o, lse, H)
  local kv = qkv:narrow(3, C + 1, 2 * C):contiguous()
  local cuts = {{1, 5}, {6, 1}, {7, 7}}           -- uneven blocks, in another order below
  local blocks = {}
  for i, c in ipairs(cuts) do blocks[i] = kv:narrow(2, c[1], c[2]):contiguous() end
  local bo, blse = ops.attention_block(qkv, blocks[3], H)
  ops.attention_block(qkv, blocks[1], H, bo, blse)
  ops.attention_block(qkv, blocks[2], H, bo, blse)
  T.truthy(maxdiff(bo, o) < 1e-6, 'o ' .. maxdiff(bo, o))
  T.truthy(maxdiff(blse, lse) < 1e-6, 'lse ' .. maxdiff(blse, lse))
  -- backward: the q part accumulated over the blocks, each block's dK/dV its rows of the fused dqkv
  local dq = lunar.zeros({B, N, 3 * C})
  for i, c in ipairs(cuts) do
    local dkv = lunar.zeros({B, c[2], 2 * C})
    ops.attention_block_backward(dq, dkv, dout, qkv, blocks[i], o, lse, H)
    local want = dqkv:narrow(2, c[1], c[2]):narrow(3, C + 1, 2 * C)
    T.truthy(maxdiff(dkv, want) < 1e-5, 'dkv of block ' .. i .. ': ' .. maxdiff(dkv, want))
  end
  local e = maxdiff(dq:narrow(3, 1, C), dqkv:narrow(3, 1, C))
  T.truthy(e < 1e-5, 'dq ' .. e)
  T.eq(dq:narrow(3, C + 1, 2 * C):contiguous():norm(), 0.0, 'nothing but the q part is written')
  -- shapes that do not fit are errors naming them
  T.raises(function() ops.attention_block(qkv, lunar.zeros({B, 4, C}), H) end, 'must be [B, Nk, 2*C]')
  T.raises(function() ops.attention_block(qkv, lunar.zeros({1, 4, 2 * C}), H) end, 'must be [B, Nk, 2*C]')
end)

T.test('attention_block: one block of all the keys is the fused attention bit for bit (the same per-pair kernels)',
  function()
  -- N = 300: query rows in blocks (a [N, 304] score tile passes 256 KiB); D = 7 odd, 8 even
  for _, s in ipairs({{2, 13, 3, 8}, {1, 300, 2, 7}, {1, 300, 1, 8}}) do
    local B, N, H, D = s[1], s[2], s[3], s[4]
    local C = H * D
    local what = string.format('B%d N%d H%d D%d', B, N, H, D)
    local qkv = lunar.empty({B, N, 3 * C}):normal_(5, 'test_domain.whole.qkv', 0, 1)
    local dout = lunar.empty({B, N, C}):normal_(5, 'test_domain.whole.dout', 0, 1)
    local o, lse = ops.attention(qkv, H)
    local dqkv = ops.attention_backward(dout, qkv, o, lse, H)
    local kv = qkv:narrow(3, C + 1, 2 * C):contiguous()
    local bo, blse = ops.attention_block(qkv, kv, H)
    T.eq(maxdiff(bo, o), 0.0, 'o ' .. what)
    T.eq(maxdiff(blse, lse), 0.0, 'lse ' .. what)
    local dq, dkv = lunar.zeros({B, N, 3 * C}), lunar.zeros({B, N, 2 * C})
    ops.attention_block_backward(dq, dkv, dout, qkv, kv, o, lse, H)
    T.eq(maxdiff(dq:narrow(3, 1, C), dqkv:narrow(3, 1, C)), 0.0, 'dq ' .. what)
    T.eq(maxdiff(dkv, dqkv:narrow(3, C + 1, 2 * C)), 0.0, 'dkv ' .. what)
  end
end)

T.test('partition: slabs of patch rows (2D) and planes (3D), the first ranks one more when uneven', function()
  -- 28 px, patch 4: 7 rows of 7 patches over 2 ranks = 4 + 3 rows = 28 + 21 tokens
  local p, total = domain.partition(28, 4, 2, 2)
  T.eq(total, 49)
  T.eq(p[1], {rows = 4, row0 = 0, tokens = 28, token0 = 0})
  T.eq(p[2], {rows = 3, row0 = 4, tokens = 21, token0 = 28})
  -- 20^3 px, patch 4: 5 planes of 25 patches over 4 ranks = 2 + 1 + 1 + 1
  p, total = domain.partition(20, 4, 3, 4)
  T.eq(total, 125)
  T.eq({p[1].tokens, p[2].tokens, p[3].tokens, p[4].tokens}, {50, 25, 25, 25})
  T.eq(p[4].token0, 100)
  -- a rank's slab of whole images: its pixel rows (rank 1 of 2: rows 16..27 of 28)
  local d = domain.new{comm = lunar.comm.world(), size = 2, rank = 1, img_size = 28, patch_size = 4}
  local x = lunar.empty({2, 1, 28, 28}):normal_(1, 'x', 0, 1)
  local s = d:slab(x)
  T.eq(s:shape(), {2, 1, 12, 28})
  T.eq(maxdiff(s, x:narrow(3, 17, 12)), 0.0)
  T.eq(d:slab_shape(2, 1, 28), {2, 1, 12, 28})
end)

T.test('synthetic data generated as a slab equals those rows of the whole images (2D and 3D)', function()
  local function first_batch(ds, n) return lunar.data.loader(ds, {batch_size = n, shuffle = false, prefetch = false}):next() end
  -- 2D [2, 12, 8]: rows 4..8 (0-based) = narrow(3, 5, 5) of the whole batch
  local full = first_batch(lunar.data.synthetic(3, 2, 2, {12, 8}, 5, 9), 3)
  local slab = first_batch(lunar.data.synthetic(3, 2, 2, {12, 8}, 5, 9, {4, 5}), 3)
  T.eq(slab:shape(), {3, 2, 5, 8})
  T.eq(maxdiff(slab, full:narrow(3, 5, 5)), 0.0)
  -- 3D [1, 6, 4, 5]: planes 3..5
  local f3 = first_batch(lunar.data.synthetic(2, 1, 3, {6, 4, 5}, 3, 1), 2)
  local s3 = first_batch(lunar.data.synthetic(2, 1, 3, {6, 4, 5}, 3, 1, {3, 3}), 2)
  T.eq(maxdiff(s3, f3:narrow(3, 4, 3)), 0.0)
  T.raises(function() lunar.data.synthetic(2, 1, 3, {6, 4, 5}, 3, 1, {5, 3}) end,
    'slab rows 5..7 are not within the first spatial size 6')
end)

T.test('grid.validate: domain errors name the sizes (no communication)', function()
  local base = {MODEL = 'hybrid_vit', IMG_SIZE = 12, PATCH_SIZE = 4, DEPTH = 2, HIDDEN_SIZE = 8, NUM_HEADS = 2}
  local function with(par, extra)
    local c = {parallel = par}
    for k, v in pairs(base) do c[k] = v end
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end
  T.eq(grid.validate(with({domain = 2}), 4), nil)
  T.eq(grid.validate(with({domain = {size = 3, attention = 'allgather'}}), 3), nil)
  T.eq(grid.validate(with({domain = 2}, {EVAL_HFLIP = true}), 2), nil)
  T.truthy(grid.validate(with({domain = 2}, {EVAL_SHIFT = 1}), 2):find('EVAL_SHIFT = 1 shifts whole images', 1, true))
  T.truthy(grid.validate(with({domain = 4}), 4):find('domain size 4 is more than the 3 rows of patches', 1, true))
  T.truthy(grid.validate(with({domain = 2}, {IMG_DIMS = 3}), 4) == nil)
  T.truthy(grid.validate(with({domain = 4}, {IMG_DIMS = 3}), 4):find('3 planes of patches', 1, true))
  T.truthy(grid.validate(with({domain = 2, tensor = 2}), 4):find('does not compose with tensor (2)', 1, true))
  T.truthy(grid.validate(with({domain = 2, pipeline = 2}), 4):find('or pipeline (2)', 1, true))
  T.truthy(grid.validate(with({domain = 2}, {MODEL = 'vit'}), 2):find("needs MODEL = 'hybrid_vit'", 1, true))
  T.truthy(grid.validate(with({domain = 2}, {device = 'cuda'}), 2):find('runs on the CPU only', 1, true))
  T.truthy(grid.validate(with({domain = 2}), 3):find('x domain (2) = 2', 1, true))
  T.truthy(grid.validate(with({domain = 2, data = 3}), 4):find('data (3) x pipeline (1) x tensor (1) x domain (2)',
    1, true))
  T.truthy(grid.validate(with({domain = {size = 2, attention = 'x'}}), 2):find("unknown domain attention 'x'", 1, true))
end)

T.test('the MODEL library under domain parallelism refuses whole-sequence leaves, naming the model', function()
  local d = domain.new{comm = lunar.comm.world(), size = 2, rank = 0, img_size = 8, patch_size = 4}
  local lib = d:layers(require('lunar.nn'), 'cfg.lua:3')
  T.raises(function() lib.ClassToken(8) end, 'cfg.lua:3: nn.ClassToken has no domain-parallel form')
  T.raises(function() lib.PatchEmbed{} end, 'nn.PatchEmbed has no domain-parallel form')
  T.eq(lib.Attention(8, 2).domain, d)
  T.eq(lib.Block{dim = 8, num_heads = 2}.attn.domain, d)
  T.eq(lib.LayerNorm, require('lunar.nn').LayerNorm, 'token-local leaves as they are')
  T.raises(function() lib.PositionEmbedding(5, 8) end, 'the domain-parallel image has 4 tokens')
  -- a padded stride-1 convolution (STEM_CHANNELS) would read the neighbours' rows: refused; the patchifying one runs
  T.raises(function() lib.Conv2d(1, 4, 3, {stride = 1, padding = 1}) end,
    'cfg.lua:3: nn.Conv2d with stride 1 and padding 1 reads across the slab boundaries')
  T.eq(lib.Conv2d(1, 4, 4).kernel_size, 4)
end)

T.run()
