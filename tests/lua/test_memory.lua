-- Tests of lunar.memory's formulas and of MEMORY_BUDGET (the estimate against
-- measured peaks is tests/mpi/memory_check.lua). Expected values are hand
-- arithmetic stated next to each check.
--   build/lunar tests/lua/test_memory.lua
local T = require('harness')
local memory = require('lunar.memory')
local config = require('lunar.config')
local cli = require('lunar.cli')

T.test('parse_bytes: sizes with units, numbers, bad text', function()
  T.eq(memory.parse_bytes('2GiB'), 2 * 1024 ^ 3 // 1)
  T.eq(memory.parse_bytes('512 MiB'), 512 * 1024 * 1024)
  T.eq(memory.parse_bytes('1.5G'), 1610612736)          -- 1.5 * 2^30
  T.eq(memory.parse_bytes('2GB'), 2000000000)
  T.eq(memory.parse_bytes('64kib'), 65536)
  T.eq(memory.parse_bytes(1000), 1000)
  T.eq(memory.parse_bytes('1000'), 1000)
  for _, bad in ipairs({'lots', '2 parsecs', '', '-1G', {}}) do
    local n, why = memory.parse_bytes(bad)
    T.eq(n, nil, T.show(bad))
    T.truthy(why and why:find('size like', 1, true), T.show(why))
  end
  T.eq(memory.parse_bytes(-5), nil)
end)

T.test("model_state: ZeRO's formulas (fp32 AdamW) and Lunar's bf16 storage", function()
  local psi, N = 1 << 20, 4
  local function bytes(zero, precision, optimizer)
    return memory.model_state(psi, {zero = zero, shards = N, precision = precision, optimizer = optimizer}).total
  end
  -- fp32 AdamW: 16, 8 + 8/N, 4 + 12/N, 16/N bytes per parameter (ZeRO, sec. 5)
  T.eq(bytes(0), 16 * psi)
  T.eq(bytes(1), 8 * psi + 8 * psi // N)
  T.eq(bytes(2), 4 * psi + 12 * psi // N)
  T.eq(bytes(3), 16 * psi // N)
  -- bf16: 4 master + 2 working + 4 grad + 8 moments = 18; moments sharded at 1, grads at 2, all at 3
  T.eq(bytes(0, 'bf16'), 18 * psi)
  T.eq(bytes(1, 'bf16'), 10 * psi + 8 * psi // N)
  T.eq(bytes(2, 'bf16'), 6 * psi + 12 * psi // N)
  -- stage 3 keeps no bf16 copy between steps: each gathered unit is rounded when gathered
  T.eq(bytes(3, 'bf16'), 16 * psi // N)
  -- SGD with momentum: one buffer (12 bytes), without: none (8)
  T.eq(bytes(0, 'fp32', 'sgd'), 12 * psi)
  T.eq(memory.model_state(psi, {optimizer = 'sgd', momentum = 0}).total, 8 * psi)
  -- during the step (inflight, not in total): stage 2 three units' f32 gradient buffers (the one in
  -- backward, two reduce_scatters in flight), stage 3 also a unit's f32 parameters twice (current and
  -- prefetched), each rounded up to 256 bytes (4000 -> 4096);
  -- under bf16 the two gathered units are bf16 (2000 -> 2048 bytes each) and the current one widened to f32
  local s3 = memory.model_state(psi, {zero = 3, shards = N, unit = 1000})
  T.eq(s3.total, 16 * psi // N)
  T.eq(s3.inflight, 5 * 4096)
  T.eq(memory.model_state(psi, {zero = 2, shards = N, unit = 1000}).inflight, 3 * 4096)
  T.eq(memory.model_state(psi, {zero = 3, shards = N, unit = 1000, precision = 'bf16'}).inflight,
    3 * 4096 + 2 * 2048 + 4096)
end)

T.test('zero_spec: nil, a stage, a Megatron-FSDP name, a table', function()
  T.eq(memory.zero_spec({parallel = {}}), {stage = 0})
  T.eq(memory.zero_spec({parallel = {zero = 3}}), {stage = 3})
  T.eq(memory.zero_spec({parallel = {zero = 'optim_grads'}}), {stage = 2})
  T.eq(memory.zero_spec({parallel = {zero = {stage = 1, group_size = 2}}}), {stage = 1, group_size = 2})
  T.eq(memory.zero_spec({parallel = {zero = {stage = 3, group_size = 0}}}), {stage = 3})
end)

T.test("block: the main job's block keeps 16 B*N*C floats plus LayerNorm and softmax statistics", function()
  -- configs/vit_fmnist.lua: B 128, N 50 tokens, C 192, MLP 768, 3 heads, fp32.
  -- input, x1, h1, h2 (4), qkv (3), attention out (1), fc1 and GELU out (8): 16 * 128*50*192 * 4 B
  -- = 78,643,200; LayerNorm mean and rstd, two norms: 4 * 128*50 * 4 B = 102,400; lse 128*3*50 * 4 B = 76,800
  local kept, input, extra = memory.block{B = 128, N = 50, C = 192, hidden = 768, heads = 3}
  T.eq(kept, 78643200 + 102400 + 76800)
  T.eq(input, 128 * 50 * 192 * 4)
  -- backward: dy (1) + fc2's dx and GELU's dx (4 + 4) - GELU's output (4): 5 B*N*C floats
  T.eq(extra, 5 * 128 * 50 * 192 * 4)
  -- bf16: residual stream f32 (x, x1: 2 x 4 B), the rest bf16 (14 x 2 B): 36 B per B*N*C
  local k16 = memory.block{B = 128, N = 50, C = 192, hidden = 768, heads = 3, bf16 = true}
  T.eq(k16, 36 * 128 * 50 * 192 + 102400 + 76800)
  -- tensor 2: qkv, attention out, MLP hidden halved: (4 + 12/2) B*N*C floats
  local k2 = memory.block{B = 128, N = 50, C = 192, hidden = 768, heads = 3, T = 3}
  T.eq(k2, (4 + 12 // 3) * 128 * 50 * 192 * 4 + 102400 + 76800 // 3)
end)

T.test('estimate: pipeline schedules keep different numbers of micro-batches in flight', function()
  local cfg = config.from_table({DEPTH = 4, NUM_MICRO_BATCHES = 4, BATCH_SIZE = 16,
    parallel = {pipeline = 2}}, 'test')
  local e1 = memory.estimate(cfg, {world = 2})
  T.eq(e1.ranks[1].inflight, 2)     -- 1F1B: min(pipeline - stage, m) = 2 on stage 0
  T.eq(e1.ranks[2].inflight, 1)
  cfg.parallel.pipeline_schedule = 'gpipe'
  local e2 = memory.estimate(cfg, {world = 2})
  T.eq(e2.ranks[1].inflight, 4)     -- GPipe: all m
  T.truthy(e2.ranks[1].activations > e1.ranks[1].activations)
  -- checkpointing lowers activations, never the model state
  cfg.CHECKPOINT = true
  local e3 = memory.estimate(cfg, {world = 2})
  T.truthy(e3.ranks[1].activations < e2.ranks[1].activations)
  T.eq(e3.ranks[1].model_state, e2.ranks[1].model_state)
  -- ZeRO stage 3 over data 4: model state / 4; the step peak adds the largest unit (one block: every
  -- block is its own checkpointed segment) gathered twice in f32 and three f32 gradient buffers, 20
  -- bytes per parameter; a block of width C = 192: qkv 3C^2+3C, proj C^2+C, fc1 4C^2+4C, fc2 4C^2+C,
  -- norms 4C = 12C^2 + 13C = 444,864 parameters (4 x 444,864 bytes is a multiple of 256)
  local z = memory.estimate(cfg, {world = 8, zero = {stage = 3}})
  local z0 = memory.estimate(cfg, {world = 8, zero = {stage = 0}})
  T.eq(z.shards, 4)
  local psi = z.ranks[1].psi
  T.eq(z.ranks[1].model_state, 4 * psi)
  T.eq(z.ranks[1].activations, z0.ranks[1].activations + 20 * 444864)
  T.eq(e3.ranks[1].model_state, 16 * psi)
end)

T.test('MEMORY_BUDGET: sizes accepted by the config, a budget under the estimate stops naming remedies', function()
  T.eq(config.from_table({MEMORY_BUDGET = '2GiB'}, 'test').MEMORY_BUDGET, 2147483648)
  T.eq(config.from_table({MEMORY_BUDGET = 4096}, 'test').MEMORY_BUDGET, 4096)
  T.raises(function() config.from_table({MEMORY_BUDGET = 'lots'}, 'test') end, "config key 'MEMORY_BUDGET' must be a size")
  local cfg = config.from_table({MEMORY_BUDGET = '1MiB', DEPTH = 4, BATCH_SIZE = 64}, 'test')
  local est = memory.estimate(cfg)
  T.truthy(est.max > 2 ^ 20, 'the estimate exceeds the budget')
  local msg = T.raises(function() memory.check_budget(cfg, {world = 1}) end, 'MEMORY_BUDGET 1.0 MiB per rank')
  T.truthy(msg:find(memory.format_bytes(est.max), 1, true), msg)
  T.truthy(msg:find("activation_checkpointing = {granularity = 'full'}", 1, true), msg)
  T.truthy(msg:find('BATCH_SIZE = 32', 1, true), msg)
  cfg.MEMORY_BUDGET = est.max
  T.eq(memory.check_budget(cfg, {world = 1}).max, est.max)   -- exactly the estimate fits
  cfg.MEMORY_BUDGET = nil
  T.eq(memory.check_budget(cfg, {world = 1}), nil)
end)

T.test('config show prints the memory per rank', function()
  local out = cli.config_show(lunar.home .. '/configs/vit_fmnist.lua', {'parallel.pipeline=2'}, 4)
  T.truthy(out:find('-- memory per rank (lunar.memory; data 2 x pipeline 2 x tensor 1', 1, true), out)
  T.truthy(out:find('--   stage 1 (blocks 3-5, 1 micro-batch in flight): parameters', 1, true), out)
end)

T.test('a MODEL at domain 2 x ZeRO: the model state shards over the data ranks of each domain coordinate', function()
  -- world 8 at domain 2: data 4; the domain ranks of an image hold the same shard (lunar.parallel.zero), so
  -- the state divides by 4 (group_size 2: by 2), never by data x domain = 8. psi = 1000 parameters, by hand:
  -- stage 3: 4000 / 4 + 4000 / 4 + 8000 / 4 = 4000 B; stage 2 over 2: 4000 + 4000 / 2 + 8000 / 2 = 10000 B;
  -- stage 1 over 4: 4000 + 4000 + 8000 / 4 = 10000 B
  local function state(z)
    local cfg = config.from_table({MODEL = 'hybrid_vit', parallel = {domain = 2, zero = z}}, 'test')
    return memory.replicated_state(cfg, 1000, {world = 8})
  end
  local r3 = state(3)
  T.eq({r3.layout.dp, r3.layout.domain, r3.shards, r3.state.total}, {4, 2, 4, 4000})
  local r2 = state({stage = 2, group_size = 2})
  T.eq({r2.shards, r2.state.params, r2.state.grads, r2.state.optimizer, r2.state.total}, {2, 4000, 2000, 4000, 10000})
  T.eq(state(1).state.total, 10000)
  local out = cli.config_show(lunar.home .. '/configs/vit_fmnist.lua', {'MODEL=hybrid_vit', 'parallel.domain=2',
    'parallel.zero=3'}, 8)
  T.truthy(out:find('-- model state per rank (lunar.memory; data 4 x domain 2, ZeRO stage 3 over 4 ranks of each ' ..
    'domain coordinate): parameters', 1, true), out)
end)

T.run()
