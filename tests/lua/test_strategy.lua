-- Tests of the strategy search (lunar.strategy.search: Galvatron's dynamic
-- program) on hand-made profiles whose optimum is known by hand arithmetic
-- (stated next to each check), and of the profile file round trip. The
-- measured profile and the searched strategy training are in
-- tests/mpi/test_strategy.sh.
--   build/lunar tests/lua/test_strategy.lua
local T = require('harness')
local config = require('lunar.config')
local search = require('lunar.strategy.search')
local profile = require('lunar.strategy.profile')

T.test('dp: the knapsack over blocks with a re-sharding cost between different strategies', function()
  -- three blocks, each A (time 1, 3 units) or B (time 2, 1 unit); block 3's A takes 1.2;
  -- switching strategy between neighbours costs 0.5. Capacity 7 (AAA needs 9):
  --   AAB 1 + 1 + 2 + 0.5 = 4.5 (7 units)   BAA 2 + 1 + 1.2 + 0.5 = 4.7   ABA 1 + 2 + 1.2 + 1 = 5.2
  --   ABB / BBA / BAB / BBB 5.5, 5.7, 6.2, 6  -> AAB, 4.5
  local A, B = {name = 'A'}, {name = 'B'}
  local function items(a3)
    local list = {}
    for i = 1, 3 do
      list[i] = {cands = {{s = A, time = i == 3 and a3 or 1, mem = 3}, {s = B, time = 2, mem = 1}}}
    end
    return list
  end
  local function inter(x, y) return x == y and 0 or 0.5 end
  local best, chosen = search.dp(items(1.2), 7, inter)
  T.near(best, 4.5, 1e-12)
  T.eq({chosen[1].s.name, chosen[2].s.name, chosen[3].s.name}, {'A', 'A', 'B'})
  -- capacity 4: only BBB (3 units) and one A with two Bs need 5: BBB, 6
  best, chosen = search.dp(items(1.2), 4, inter)
  T.near(best, 6, 1e-12)
  T.eq({chosen[1].s.name, chosen[2].s.name, chosen[3].s.name}, {'B', 'B', 'B'})
  -- capacity 2: nothing fits
  T.eq(search.dp(items(1.2), 2, inter), nil)
  -- capacity 9 and no switching cost: AAA, 1 + 1 + 1.2
  best = search.dp(items(1.2), 9, function() return 0 end)
  T.near(best, 3.2, 1e-12)
end)

-- A hand-made profile of a 4-block model on one rank: forward 0.3 + 0.1 b s, backward
-- 0.6 + 0.2 b s per block; a block keeps 1e5 bytes per sample, a checkpointed one 1e4;
-- everything else free (no communication, optimizer, embedding time).
local CFG = config.from_table({DEPTH = 4, HIDDEN_SIZE = 8, NUM_HEADS = 2, IMG_SIZE = 8, PATCH_SIZE = 4,
  IN_CHANS = 1, NUM_CLASSES = 2, BATCH_SIZE = 8}, 'test_strategy')
local function hand_profile()
  return {kind = 'lunar-profile', version = profile.VERSION, model = profile.model_of(CFG), machine = {host = 'x'},
    block = {params = 872, tp = {['1'] = {fwd = {0.3, 0.1}, bwd = {0.6, 0.2},
      act = {kept = 1e5, input = 1e4, extra = 0}}}},
    other = {time = {0, 0}}, optimizer = {per_param = 0}, overlap = 1.0,
    comm = {all_reduce = {consecutive = {}}, all_gather = {consecutive = {}}, reduce_scatter = {consecutive = {}},
      p2p = {alpha = 0, beta = 0}}}
end

T.test('run: the budget forces exactly three checkpointed blocks; the predicted time by hand', function()
  local prof = hand_profile()
  -- unlimited: batch 8 in one micro-batch, nothing checkpointed (checkpointing only adds time):
  -- per block f = 0.3 + 0.8 = 1.1, bw = 0.6 + 1.6 = 2.2: 4 x 3.3 = 13.2 s
  local free = search.run(CFG, prof, {world = 1, budget = 1 << 30})
  T.eq(free.best.m, 1)
  T.near(free.best.time, 13.2, 1e-9)
  for _, st in ipairs(free.best.blocks) do T.falsy(st.ckpt) end
  -- 2 micro-batches of 4: f = 0.7, bw = 1.4, twice: 4 x 4.2 = 16.8 s, activations halved (4 blocks
  -- x 4e5 bytes saved). Checkpointing a block at batch 8 keeps (1e5 - 1e4) x 8 = 720,000 bytes fewer
  -- and costs one forward, 1.1 s; the backward's replay of a checkpointed block needs those 720,000
  -- bytes back once, so k checkpointed blocks save (k - 1) x 720,000 bytes.
  local m0 = free.best.max_memory
  local budget = m0 - 2 * 720000 + 50000     -- room for three checkpointed blocks, not two
  local res = search.run(CFG, prof, {world = 1, budget = budget})
  local r = res.best
  T.eq({r.pp, r.tp, r.dp, r.m, r.zero}, {1, 1, 1, 1, 0})
  local n = 0
  for _, st in ipairs(r.blocks) do if st.ckpt then n = n + 1 end end
  T.eq(n, 3, 'checkpointed blocks')
  T.near(r.time, 13.2 + 3 * 1.1, 1e-9)       -- 16.5 s < 16.8 s of two micro-batches
  T.truthy(r.max_memory <= budget)
  T.near(m0 - r.max_memory, 2 * 720000, 0, 1)
  -- and the next best is two micro-batches with nothing checkpointed (16.8 s)
  T.near(res.ranked[2].time, 16.8, 1e-9)
  T.eq(res.ranked[2].m, 2)
  for _, st in ipairs(res.ranked[2].blocks) do T.falsy(st.ckpt) end
end)

T.test('run --global: every block alike loses to the per-block choice under the same budget', function()
  local prof = hand_profile()
  local free = search.run(CFG, prof, {world = 1, budget = 1 << 30, global = true})
  T.near(free.best.time, 13.2, 1e-9)
  -- the budget of the test above: per block, three checkpointed blocks (16.5 s); globally, all four
  -- (13.2 + 4 x 1.1 = 17.6 s) or two micro-batches with none (16.8 s): two micro-batches
  local res = search.run(CFG, prof, {world = 1, budget = free.best.max_memory - 2 * 720000 + 50000, global = true})
  T.eq(res.best.m, 2)
  T.near(res.best.time, 16.8, 1e-9)
  for _, st in ipairs(res.best.blocks) do T.falsy(st.ckpt) end
  -- at one micro-batch only the all-checkpointed program remains (17.6 s)
  local all
  for _, r in ipairs(res.ranked) do if r.m == 1 then all = r end end
  T.near(all.time, 17.6, 1e-9)
  for _, st in ipairs(all.blocks) do T.truthy(st.ckpt) end
end)

-- Tensor placement (Galvatron's tp_consec) on 4 ranks, global batch 8, one micro-batch: blocks of
-- 1e6 parameters, tensor sizes 1 and 2 with the same compute (tp 1 at b = 2, tp 2 at b = 4:
-- forward 0.5 s, backward 1.0 s), all_reduce costs beta x bytes: 1e-6 s/B over 2 or 4 consecutive
-- ranks, 2e-6 s/B over 2 strided ones, point-to-point 10 s (no pipeline). A block's data-parallel all_reduce (4e6 / t bytes) overlaps
-- its backward: time f + bw + max(0, comm - bw).
--   tp 1 (data 4, consecutive): 0.5 + 1.0 + (4.0 - 1.0) = 4.5 s
--   tp 2 consecutive (data 2 strided): 0.5 + 1.0 + (4.0 - 1.0) = 4.5 s
--   tp 2 strided (data 2 consecutive): its four all_reduces of b N C 4 = 4 x 5 x 8 x 4 = 640 bytes
--     cost d = 640 x (2e-6 - 1e-6) = 6.4e-4 s more each: f = 0.5 + 2d, bw = 1.0 + 2d, comm 2.0:
--     0.5 + 2d + 2.0 = 2.50128 s
-- so the layerwise search puts every block on strided ranks (4 x 2.50128 = 10.00512 s), and the
-- global one (a consecutive tensor group) takes 4 x 4.5 = 18 s.
T.test('run --layerwise: strided tensor groups where their data-parallel group is cheaper; by hand', function()
  local prof = hand_profile()
  prof.block.params = 1000000
  prof.block.tp['1'] = {fwd = {0.3, 0.1}, bwd = {0.6, 0.2}, act = {kept = 1e3, input = 1e2, extra = 0}}
  prof.block.tp['2'] = {fwd = {0.3, 0.05}, bwd = {0.6, 0.1}, act = {kept = 1e3, input = 1e2, extra = 0}}
  prof.comm.all_reduce = {consecutive = {['2'] = {alpha = 0, beta = 1e-6}, ['4'] = {alpha = 0, beta = 1e-6}},
    strided = {['2'] = {alpha = 0, beta = 2e-6}}}
  prof.comm.p2p = {alpha = 10, beta = 0}    -- no pipeline (its sends cost 10 s each)
  T.eq(CFG.SEQ_LENGTH * CFG.HIDDEN_SIZE * 4, 160)
  local res = search.run(CFG, prof, {world = 4, budget = 1 << 40, layerwise = true, global_batches = {8}, zero = {0}})
  local r = res.best
  T.eq({r.pp, r.m, r.global_batch}, {1, 1, 8})
  T.near(r.time, 4 * (0.5 + 2 * 6.4e-4 + 2.0), 1e-9)
  T.eq(r.block_tensor, {2, 2, 2, 2})
  T.eq(r.block_tensor_consec, {false, false, false, false})
  T.truthy(search.describe(r):find('per block {2 strided, 2 strided, 2 strided, 2 strided}', 1, true),
    search.describe(r))
  local c = search.strategy_config(CFG, r, 1 << 40)
  T.eq(c.parallel.block_tensor_consec, {false, false, false, false})
  T.eq({c.parallel.data, c.BATCH_SIZE}, {4, 2})
  T.eq(require('lunar.parallel.grid').validate(config.from_table(c, 'strategy'), 4), nil)
  -- the global search: consecutive tensor groups only, 18 s
  local g = search.run(CFG, prof, {world = 4, budget = 1 << 40, global_batches = {8}, zero = {0}})
  T.near(g.best.time, 18, 1e-9)
  T.eq(g.best.block_tensor_consec, nil)
end)

T.test('run: a budget nothing fits gives no best and the smallest memory found', function()
  local res = search.run(CFG, hand_profile(), {world = 1, budget = 1000})
  T.eq(res.best, nil)
  T.truthy(res.smallest and res.smallest.min_memory > 1000, T.show(res.smallest and res.smallest.min_memory))
end)

T.test('strategy config: the searched layout, batch, micro-batches and per-block checkpointing', function()
  local prof = hand_profile()
  local free = search.run(CFG, prof, {world = 1, budget = 1 << 30})
  local res = search.run(CFG, prof, {world = 1, budget = free.best.max_memory - 2 * 720000 + 50000})
  local c = search.strategy_config(CFG, res.best, 123456)
  T.eq(c.parallel.pipeline, 1)
  T.eq(c.parallel.data, 1)
  T.eq(c.BATCH_SIZE, 8)
  T.eq(c.NUM_MICRO_BATCHES, 1)
  local n = 0
  for _, b in ipairs(c.activation_checkpointing.blocks) do if b then n = n + 1 end end
  T.eq(n, 3)
  -- it is a valid config: dumped, loaded back equal
  local back = config.from_table(load('return ' .. config.dump(c))(), 'strategy')
  T.eq(back.activation_checkpointing.blocks, c.activation_checkpointing.blocks)
  T.eq(back.MEMORY_BUDGET, 123456)
end)

T.test('profile: differences name what differs; a file that is not a profile is a clear error', function()
  local prof = hand_profile()
  -- the same model: only the machine differs (the hand-made profile names host 'x')
  local same = profile.differences(prof, CFG)
  T.eq(#same, 1, table.concat(same, '; '))
  T.truthy(same[1]:find('machine: profiled on x', 1, true), same[1])
  local other = config.from_table({DEPTH = 4, HIDDEN_SIZE = 16, NUM_HEADS = 2, IMG_SIZE = 8, PATCH_SIZE = 4,
    IN_CHANS = 1, NUM_CLASSES = 2}, 'other')
  local diffs = table.concat(profile.differences(prof, other), '; ')
  T.truthy(diffs:find('HIDDEN_SIZE: profile 8, config 16', 1, true), diffs)
  local path = (os.getenv('TMPDIR') or '/tmp') .. '/lunar_test_strategy_' .. math.random(1 << 30) .. '.json'
  local f = assert(io.open(path, 'w')); f:write('{"kind": "something else"}'); f:close()
  T.raises(function() profile.read(path) end, 'not a Lunar profile')
  os.remove(path)
  T.raises(function() profile.read(path) end, 'profile ' .. path)
  local fit = profile.fit({1, 2, 4}, {3, 5, 9})            -- y = 1 + 2x exactly
  T.near(fit[1], 1, 1e-12); T.near(fit[2], 2, 1e-12)
  -- a falling line is clamped to c = 0 and a = the 1/y^2-weighted mean: (5/25 + 3/9) / (1/25 + 1/9) = 60/17
  fit = profile.fit({1, 2}, {5, 3})
  T.near(fit[1], 60 / 17, 1e-12); T.eq(fit[2], 0.0)
end)

T.test('parallel.block_tensor: bad input is a layout error naming the block, before any collective', function()
  local grid = require('lunar.parallel.grid')
  local function cfg(list, more)
    local t = {DEPTH = 4, HIDDEN_SIZE = 16, NUM_HEADS = 4, IMG_SIZE = 8, PATCH_SIZE = 4, BATCH_SIZE = 4,
      parallel = {block_tensor = list}}
    for k, v in pairs(more or {}) do t[k] = v end
    return config.from_table(t, 'test_strategy')
  end
  T.eq(grid.validate(cfg({2, 1, 1, 2}), 2), nil)
  T.eq(grid.validate(cfg({2, 1, 2}), 2), 'parallel: block_tensor has 3 entries; it needs one tensor size per block ' ..
    '(DEPTH 4)')
  T.eq(grid.validate(cfg({2, 1, 3, 2}), 4), 'parallel: block_tensor [3] = 3 (block 2) is not a power of two')
  T.eq(grid.validate(cfg({2, 1, 4, 2}), 2), 'parallel: block_tensor [3] = 4 (block 2) does not divide the world size 2')
  T.eq(grid.validate(cfg({8, 1, 1, 1}), 8), 'parallel: block_tensor [1] = 8 (block 0) does not divide NUM_HEADS 4')
  -- clipping, checkpoints and dropout work with it (tests/mpi/parallel_check.lua, test_checkpoint.sh)
  T.eq(grid.validate(cfg({2, 1, 1, 2}, {clip_grad_norm = 1.0, DROPOUT = 0.1, CHECKPOINT_DIR = 'ck'}), 2), nil)
  -- per-block placement (parallel.block_tensor_consec): one boolean per block, only with block_tensor
  local function consec(c) return {parallel = {block_tensor = {2, 1, 1, 2}, block_tensor_consec = c}} end
  T.eq(grid.validate(cfg({2, 1, 1, 2}, consec({false, true, true, false})), 4), nil)
  T.eq(grid.validate(cfg({2, 1, 1, 2}, consec({false, true})), 4),
    'parallel: block_tensor_consec has 2 entries; it needs one boolean per block (DEPTH 4)')
  T.raises(function() cfg({2, 1, 1, 2}, consec({false, 1, true, true})) end, 'parallel.block_tensor_consec')
  T.eq(grid.validate(cfg(nil, {parallel = {block_tensor_consec = {true, true, true, true}}}), 4),
    'parallel: block_tensor_consec (per-block tensor placement) needs parallel.block_tensor (per-block tensor sizes)')
  T.eq(grid.validate(cfg({2, 1, 1, 2}, {parallel = {block_tensor = {2, 1, 1, 2}, pipeline = 2}}), 4),
    'parallel: block_tensor (per-block tensor sizes) needs a base layout of data parallelism only: pipeline 2, tensor 1')
  T.raises(function() cfg({2, 1, 0, 2}) end, "config key 'parallel.block_tensor[3]' must be >= 1")
end)

T.run()
