-- Tests of sharded data parallelism's pieces that need no second rank
-- (lunar.parallel.zero; the multi-rank equivalence with one rank is in
-- tests/mpi/parallel_check.lua, sharded checkpoints in
-- tests/mpi/checkpoint_check.lua):
--   - the config key parallel.zero: every accepted form parsed to
--     {stage, group_size}, bad values named, the grid's group_size check;
--   - reshard.flat_boxes, which describes a ZeRO piece (a flat range of a
--     parameter) as boxes of the tensor for checkpoints: against a brute-force
--     enumeration of the row-major indices of every range of five shapes;
--   - nn.Sequential's zero units (a MODEL's): the list for MODEL = 'hybrid_vit'
--     with a checkpointed segment, by hand, and the hook events of a forward
--     and backward in order; a MODEL whose root reports no units is a config
--     error naming the key (setup.config_model);
--   - one rank, every stage: training equals the plain run (S = 1: no
--     communication, the gather / free / reduce path alone), also for
--     MODEL = 'hybrid_vit' with checkpointed blocks at stages 2 and 3.
--   build/lunar tests/lua/test_zero.lua
local T = require('harness')
local zero = require('lunar.parallel.zero')
local grid = require('lunar.parallel.grid')
local config = require('lunar.config')
local reshard = require('lunar.checkpoint.reshard')

T.test('parallel.zero: numbers, Megatron-FSDP names and tables parse to {stage, group_size}', function()
  local cases = {
    {nil, 0, 0}, {0, 0, 0}, {1, 1, 0}, {2, 2, 0}, {3, 3, 0}, {3.0, 3, 0},
    {'no_shard', 0, 0}, {'optim', 1, 0}, {'optim_grads', 2, 0}, {'optim_grads_params', 3, 0},
    {{stage = 3}, 3, 0}, {{stage = 'optim_grads', group_size = 2}, 2, 2}, {{stage = 1, group_size = 4}, 1, 4},
  }
  for _, c in ipairs(cases) do
    local z = zero.parse(c[1])
    T.eq(z, {stage = c[2], group_size = c[3]}, 'parse ' .. tostring(c[1]))
    T.eq(zero.parse(z), z, 'parse is idempotent')
  end
end)

T.test('parallel.zero: bad values are named', function()
  local _, m = zero.parse(4)
  T.truthy(m:find("stage must be 0, 1, 2, 3 or one of 'no_shard', 'optim', 'optim_grads', 'optim_grads_params', got 4",
    1, true), m)
  _, m = zero.parse('full_shard')
  T.truthy(m:find("got 'full_shard'", 1, true), m)
  _, m = zero.parse({stage = 2, group_size = -1})
  T.truthy(m:find('group_size must be an integer >= 1', 1, true), m)
  _, m = zero.parse({stage = 2, shards = 2})
  T.truthy(m:find("unknown field 'shards'", 1, true), m)
  T.raises(function() config.from_table({parallel = {zero = 5}}, 't') end,
    "config key 'parallel.zero' stage must be", 'config load names the key')
  T.eq(config.from_table({parallel = {zero = 'optim'}}, 't').parallel.zero, {stage = 1, group_size = 0})
end)

T.test('parallel.zero: group_size must divide the data-parallel size (grid.validate, no collective)', function()
  local cfg = config.from_table({parallel = {zero = {stage = 3, group_size = 3}}}, 't')
  T.eq(grid.validate(cfg, 4), 'parallel: parallel.zero.group_size 3 does not divide the data-parallel size 4 ' ..
    '(the shard groups are runs of group_size consecutive data-parallel ranks)')
  T.eq(grid.validate(cfg, 6), nil)
  local cfg2 = config.from_table({parallel = {zero = {stage = 2, group_size = 2}, pipeline = 2}}, 't')
  T.truthy(grid.validate(cfg2, 6):find('group_size 2 does not divide the data-parallel size 3', 1, true))
  -- a MODEL's stages 2 and 3: data and domain parallel (nn.Sequential:zero_units), not yet tensor or pipeline
  T.truthy(config.from_table({parallel = {zero = 2}, MODEL = function(c, nn) return nn.Linear(2, 2) end}, 't'))
  T.raises(function()
    config.from_table({parallel = {zero = 3, pipeline = 2}, MODEL = 'hybrid_vit'}, 't')
  end, "config key 'parallel.zero' stage 3 of a MODEL (models as code) composes with data and domain parallelism, " ..
    'not yet with tensor (1) or pipeline (2) parallelism')
end)

T.test("nn.Sequential's zero units (MODEL = 'hybrid_vit', a checkpointed segment): the list and the events", function()
  local nn = require('lunar.nn')
  local cfg = config.from_table({MODEL = 'hybrid_vit', IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2, NUM_CLASSES = 3,
    HIDDEN_SIZE = 8, DEPTH = 3, NUM_HEADS = 2}, 't')
  local m = require('lunar.models').hybrid_vit(cfg)
  m.blocks:set_activation_checkpointing({granularity = 'full', method = 'uniform', num_layers = 2})
  -- by hand: one unit per child (the patch embedding's children, the inlined position embedding '#2', the pool
  -- and the head), blocks 0 and 1 one unit (their segment's backward replays both), block 2 alone
  local want = {{'patch_embed.conv'}, {'patch_embed.flatten'}, {'patch_embed.to_tokens'}, {'patch_embed.norm'},
    {'#2'}, {'blocks.0', 'blocks.1'}, {'blocks.2'}, {'pool'}, {'head'}}
  T.eq(m:zero_units(), want)
  nn.materialize(m, 1)
  local log = {}
  m.zero_hook = function(event, keys) log[#log + 1] = event .. ' ' .. table.concat(keys, ',') end
  m.grad_ready_hook = function(key) log[#log + 1] = 'ready ' .. key end
  local x = lunar.empty({2, 2, 8, 8}):normal_(1, 't.x', 0, 1)
  local y, ctx = m:forward(x)
  local dx = m:backward(ctx, lunar.ones(y:shape()))
  local expect = {}
  for _, u in ipairs(want) do
    local k = table.concat(u, ',')
    expect[#expect + 1] = 'pre_forward ' .. k
    expect[#expect + 1] = 'post_forward ' .. k
  end
  for i = #want, 1, -1 do
    local k = table.concat(want[i], ',')
    expect[#expect + 1] = 'pre_backward ' .. k
    for j = #want[i], 1, -1 do expect[#expect + 1] = 'ready ' .. want[i][j] end
    expect[#expect + 1] = 'post_backward ' .. k
  end
  T.eq(log, expect)
  x:free(); y:free(); if dx then dx:free() end
  -- a MODEL whose root reports no gradient groups / units: a config error naming the key, before any step
  local cfg2 = config.from_table({MODEL = function(_, lib) return lib.Residual{lib.Linear(4, 4)} end,
    DATASET = 'synthetic', IMG_SIZE = 8, PATCH_SIZE = 4, parallel = {zero = 2}}, 't')
  local g = require('lunar.parallel').initialize(cfg2, nil, {quiet = true})
  T.raises(function() require('lunar.setup').config_model(cfg2, g) end,
    "config key 'MODEL': parallel.zero (stage 2) shards by the model's gradient groups and units, which a " ..
    'nn.Sequential reports; got a Residual')
end)

T.test('reshard.flat_boxes: every flat range of five shapes, against the row-major enumeration', function()
  local shapes = {{5}, {3, 4}, {2, 3, 4}, {1, 1, 6}, {4, 1, 3}}
  local ranges, worst_boxes = 0, 0
  for _, sh in ipairs(shapes) do
    local N = 1
    for _, x in ipairs(sh) do N = N * x end
    for lo = 0, N - 1 do
      for len = 1, N - lo do
        local boxes = reshard.flat_boxes(sh, lo, len)
        local pos = 0
        for _, b in ipairs(boxes) do
          T.eq(b.offset, pos, 'box offset')
          local idx = {}
          for k = 1, #sh do idx[k] = b.ranges[k][1]; T.eq(b.shape[k], b.ranges[k][2]) end
          for _ = 1, b.n do
            local f, st = 0, 1
            for k = #sh, 1, -1 do f = f + idx[k] * st; st = st * sh[k] end
            if f ~= lo + pos then error(string.format('%s [%d, +%d): element %d at flat %d', table.concat(sh, 'x'),
              lo, len, pos, f)) end
            pos = pos + 1
            for k = #sh, 1, -1 do
              idx[k] = idx[k] + 1
              if idx[k] < b.ranges[k][1] + b.ranges[k][2] then break end
              idx[k] = b.ranges[k][1]
            end
          end
        end
        T.eq(pos, len, 'the boxes cover the range')
        worst_boxes = math.max(worst_boxes, #boxes / (2 * #sh - 1))
        ranges = ranges + 1
      end
    end
  end
  T.truthy(worst_boxes <= 1, 'at most 2 * dims - 1 boxes')
  T.eq(ranges, 15 + 78 + 300 + 21 + 78)
end)

T.test('one rank, every stage, AdamW and SGD: the same losses and parameters as without sharding, bitwise', function()
  local setup = require('lunar.setup')
  local data = require('lunar.data')
  local parallel = require('lunar.parallel')
  local function run(z, optimizer, extra)
    local t = {DATASET = 'synthetic', NUM_SAMPLES = 16, IMG_SIZE = 8, PATCH_SIZE = 4,
      IN_CHANS = 2, NUM_CLASSES = 3, HIDDEN_SIZE = 8, DEPTH = 2, NUM_HEADS = 2, BATCH_SIZE = 4,
      clip_grad_norm = 0.5, SEED = 3, PREFETCH = false, METRICS_FILE = '', NUM_MICRO_BATCHES = 2,
      OPTIMIZER = optimizer, MOMENTUM = 0.9, parallel = {zero = z}}
    for k, v in pairs(extra or {}) do t[k] = v end
    local cfg = config.from_table(t, 't')
    local g = parallel.initialize(cfg, nil, {quiet = true})
    local r = setup.from_config(cfg, nil, {grid = g, loaders = false})
    local ld = data.loader(data.datasets(cfg), cfg, {train = true})
    ld:set_epoch(0)
    local losses = {}
    for i = 1, 3 do
      local x, y = ld:next()
      losses[i] = r.engine:train_step(x, y)
      x:free(); y:free()
    end
    local f = function() return parallel.gather_full_parameters(r.model, g) end
    return losses, r.zero and r.zero:with_full_parameters(f) or f(), r
  end
  for _, optimizer in ipairs({'adamw', 'sgd'}) do
    local l0, p0 = run(0, optimizer)
    for stage = 1, 3 do
      local l, p, r = run(stage, optimizer)
      T.eq(l, l0, optimizer .. ' stage ' .. stage .. ' losses')
      for n, t in pairs(p0) do T.eq(p[n]:totable(), t:totable(), optimizer .. ' stage ' .. stage .. ' ' .. n) end
      T.eq(r.model._flat == nil, stage == 3, 'stage 3 frees the full parameters')
    end
  end
  -- a MODEL (nn.Sequential's units), its blocks checkpointed in segments of 2 (stage 3 gathers a segment
  -- whole): bitwise in one micro-batch; over 2 micro-batches stages 2 and 3 add each micro-batch's gradient
  -- into the shard where the plain run's GEMMs accumulate into the gradient (another rounding), so there
  -- within 1e-6 (a lost or doubled micro-batch moves the parameters by about lr = 1e-3)
  for _, m in ipairs({1, 2}) do
    local hv = {MODEL = 'hybrid_vit', DEPTH = 3, NUM_MICRO_BATCHES = m,
      activation_checkpointing = {granularity = 'full', num_layers = 2}}
    local l0, p0 = run(0, 'adamw', hv)
    for stage = 2, 3 do
      local l, p = run(stage, 'adamw', hv)
      local what = string.format('hybrid_vit, %d micro-batch(es), stage %d', m, stage)
      if m == 1 then
        T.eq(l, l0, what .. ' losses')
        for n, t in pairs(p0) do T.eq(p[n]:totable(), t:totable(), what .. ' ' .. n) end
      else
        T.near(l, l0, 1e-6, 0, what .. ' losses')
        for n, t in pairs(p0) do T.near(p[n]:totable(), t:totable(), 0, 1e-6, what .. ' ' .. n) end
      end
    end
  end
end)

T.run()
