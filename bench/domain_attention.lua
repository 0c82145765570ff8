-- bench/domain_attention.lua: one attention layer under domain parallelism
-- (lunar.parallel.domain: ring or all-gather attention over the domain
-- ranks, forward and backward) against the block kernels it runs, at the
-- HybridViT's shape of bench/domain_weak_scaling.sh (224^2 pixels, patch 8:
-- 784 tokens, 392 per rank at domain 2; width 768, 12 heads). A benchmark,
-- not a test: what the domain layer costs beyond its kernels (the key/value
-- copies, the messages, the waits for the peer, the merges and zero fills).
--
--   mpirun -np 2 build/lunar bench/domain_attention.lua [key=value ...]
--   keys: IMG (224), PATCH (8), WIDTH (768), HEADS (12), BATCH (1), REPEAT (10), MODE (ring | allgather)
--
-- Each round times, on every rank, (1) d:attention then d:attention_backward
-- (the layer) and (2) the same block kernels on the same blocks with no
-- communication (each rank holds every block: the kernels alone); lunar.ops
-- calls inside (1) are timed with lunar.profile. Prints per rank the median
-- over rounds of: the layer, its kernels (as profiled inside it), the kernels
-- alone, and the overhead (layer - its kernels), in ms, with the load average.
local domain = require('lunar.parallel.domain')
local profile = require('lunar.profile')
local ops = lunar.ops

local world = lunar.comm.world()
local R, W = world:rank(), world:size()
local opt = {IMG = 224, PATCH = 8, WIDTH = 768, HEADS = 12, BATCH = 1, REPEAT = 10, MODE = 'ring'}
for _, o in ipairs(lunar.args.overrides or {}) do
  local k, v = o:match('^%s*([%w_]+)%s*=%s*(.-)%s*$')
  if not k or opt[k] == nil then error('bench/domain_attention.lua: unknown option ' .. o, 0) end
  opt[k] = tonumber(v) or v
end
local H, C, B = opt.HEADS, opt.WIDTH, opt.BATCH
local d = domain.new{comm = world, size = W, rank = R, attention = opt.MODE, img_size = opt.IMG,
  patch_size = opt.PATCH, img_dims = 2}
local n = d.tokens

-- every rank's qkv block, the same on every rank (seeded by the block's rank)
local qkvs = {}
for r = 1, W do
  qkvs[r] = lunar.empty({B, d.parts[r].tokens, 3 * C}):normal_(7, 'domain_attention.qkv' .. r, 0, 1)
end
local qkv = qkvs[R + 1]
local dout = lunar.empty({B, n, C}):normal_(7, 'domain_attention.dout' .. R, 0, 1)
local kvs = {}
for r = 1, W do kvs[r] = qkvs[r]:narrow(3, C + 1, 2 * C):contiguous() end

local median = profile.median
local layer, inside, alone = {}, {}, {}
for rep = 0, opt.REPEAT do
  world:barrier()
  local p = profile.start()
  local t0 = lunar.clock()
  local o, lse, q = d:attention(qkv, H)
  local dq = d:attention_backward(dout, q, o, lse, H)
  local t1 = lunar.clock()
  local res = p:stop()
  dq:free()
  local k = 0
  for _, e in pairs(res.ops) do k = k + e.seconds end
  -- the kernels alone: the same blocks, in the same order (this rank's first)
  world:barrier()
  local t2 = lunar.clock()
  local ko, kl
  for s = 0, W - 1 do
    local b = kvs[(R - s) % W + 1]
    if ko then ops.attention_block(qkv, b, H, ko, kl) else ko, kl = ops.attention_block(qkv, b, H) end
  end
  local dqkv = lunar.zeros({B, n, 3 * C})
  for s = 0, W - 1 do
    local r = (R - s) % W + 1
    local dkv = lunar.zeros({B, d.parts[r].tokens, 2 * C})
    ops.attention_block_backward(dqkv, dkv, dout, qkv, kvs[r], ko, kl, H)
    dkv:free()
  end
  local t3 = lunar.clock()
  dqkv:free(); ko:free(); kl:free(); o:free(); lse:free()
  if rep > 0 then   -- round 0 warms up
    layer[#layer + 1], inside[#inside + 1], alone[#alone + 1] = t1 - t0, k, t3 - t2
  end
end

local f = io.open('/proc/loadavg')
local load = f and f:read('l'):match('^(%S+)') or '?'
if f then f:close() end
local L, I, A = median(layer), median(inside), median(alone)
print(string.format('rank %d: %s attention, domain %d, B %d, %d of %d tokens, width %d, %d heads (median of %d, ' ..
  'load %s): layer fwd+bwd %.2f ms, its kernels %.2f ms, overhead %.2f ms (%.1f%%); kernels alone %.2f ms',
  R, opt.MODE, W, B, n, d.total_tokens, C, H, opt.REPEAT, load, L * 1e3, I * 1e3, (L - I) * 1e3,
  100 * (L - I) / L, A * 1e3))
if DT then
  local ks = {}
  for k in pairs(DT) do ks[#ks + 1] = k end
  table.sort(ks)
  local t = {}
  for _, k in ipairs(ks) do t[#t + 1] = string.format('%s %.2f', k, DT[k] * 1e3 / (opt.REPEAT + 1)) end
  print(string.format('rank %d pieces (ms per layer): %s', R, table.concat(t, ', ')))
end
