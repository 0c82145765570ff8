-- Activation checkpointing inside a composed model (lua/lunar/nn/Checkpoint.lua,
-- nn.Sequential:set_activation_checkpointing, setup.config_model): the
-- expected values are the same model run without checkpointing (the replay
-- runs the same kernels on the same inputs, weights and dropout masks, so
-- outputs and gradients must be equal bit for bit, and the names unchanged).
--   build/lunar tests/lua/test_models_checkpointing.lua
local T = require('harness')
local nn = require('lunar.nn')
local config = require('lunar.config')
local setup = require('lunar.setup')

local C, HEADS = 8, 2

local function randn(shape, name) return lunar.empty(shape):normal_(13, name, 0, 1) end

-- a pre-norm block with dropout in the attention projection, the MLP and after the block
local function block(i)
  return nn.Sequential{
    {'', nn.Residual{{'norm1', nn.LayerNorm(C)}, {'attn', nn.Attention(C, HEADS, {proj_drop = 0.2, seed = i})}}},
    {'', nn.Residual{{'norm2', nn.LayerNorm(C)}, {'mlp', nn.MLP(C, 2 * C, {drop = 0.3, seed = i})}}},
    {'drop', nn.Dropout(0.25, 7 + i)},
  }
end

-- blocks 0..depth-1 under 'blocks', wrapped in nn.Checkpoint where wrap(i) says so
local function model(depth, wrap)
  local list = {}
  for i = 0, depth - 1 do
    local b = block(i)
    list[#list + 1] = {tostring(i), wrap and wrap(i) and nn.Checkpoint(b) or b}
  end
  return nn.Sequential{{'embed', nn.Linear(4, C)}, {'blocks', nn.Sequential(list)}, {'norm', nn.LayerNorm(C)},
    {'pool', nn.MeanPool()}, {'head', nn.Linear(C, 3)}}
end

local names = T.param_names

-- every element equal (bitwise for finite values: a difference of 0 everywhere)
local function same_bits(what, a, b)
  T.eq(table.concat(a:shape(), ','), table.concat(b:shape(), ','), what .. ': shape')
  local d = a - b
  T.eq(d:min(), 0, what); T.eq(d:max(), 0, what)
  d:free()
end

-- two steps (forward + backward of the same batch, dropout counters advancing): the outputs,
-- dx and the flat gradient buffer; returns the context's tensor count of the first step
local function two_steps(m, x, dy)
  local outs, kept = {}, nil
  m:zero_grad()
  for s = 1, 2 do
    local y, ctx = m:forward(x)
    if s == 1 then kept = #ctx:tensors() end
    local dx = m:backward(ctx, dy)
    outs[#outs + 1] = y; outs[#outs + 1] = dx
  end
  return outs, kept
end

T.test('nn.Checkpoint(module) inside a Sequential: parameter names unchanged, gradients bitwise with dropout', function()
  local plain = nn.materialize(model(3), 5)
  local ck = nn.materialize(model(3, function(i) return i ~= 1 end), 5)   -- blocks 0 and 2 checkpointed
  T.eq(names(ck), names(plain), 'the wrapper is inlined: timm-style names as without it')
  T.truthy(names(ck):find('blocks.2.attn.qkv.weight', 1, true), names(ck))
  T.eq(ck.blocks['0'].__name, 'Checkpoint')
  T.eq(ck.blocks['0'].modules[1].path, 'blocks.0', 'the wrapped block has the path it has without the wrapper')
  same_bits('the same initial weights', ck._flat, plain._flat)
  local x, dy = randn({2, 5, 4}, 'ck.x'), randn({2, 3}, 'ck.dy')
  local a, kept_plain = two_steps(plain, x, dy)
  local b, kept_ck = two_steps(ck, x, dy)
  for i = 1, #a do same_bits(i % 2 == 1 and 'output' or 'dx', b[i], a[i]) end
  same_bits('every parameter gradient', ck._flat_grad, plain._flat_grad)
  T.truthy(plain._flat_grad:norm() > 0, 'gradients are not all zero')
  -- the checkpointed blocks keep no activations: the context holds fewer tensors
  T.truthy(kept_ck < kept_plain, string.format('tensors kept: %d with, %d without', kept_ck, kept_plain))
  -- a checkpoint's state_dict is the plain model's: load one into the other by name
  local sd = plain:state_dict()
  for _, p in ipairs(ck:parameters()) do T.truthy(sd[p.name] ~= nil, p.name) end
  -- bad arguments say what is wrong
  T.raises(function() nn.Checkpoint({}) end, 'expects a module or a non%-empty list of modules')
  T.raises(function() nn.Checkpoint({nn.Linear(2, 2), 3}) end, 'entry 2 of the list is a number, not a module')
end)

T.test('Sequential:set_activation_checkpointing (uniform 2, block 1): bitwise, gradient groups in the same order', function()
  local function run(spec)
    local m = nn.materialize(model(3), 9)
    if spec then m.blocks:set_activation_checkpointing(spec) end
    local order = {}
    m:grad_group_order()
    m.grad_ready_hook = function(key) order[#order + 1] = key end
    local outs = two_steps(m, randn({2, 5, 4}, 'sq.x'), randn({2, 3}, 'sq.dy'))
    return m, outs, table.concat(order, ' ')
  end
  local plain, a, order = run(nil)
  local one = 'head pool norm blocks.2 blocks.1 blocks.0 embed'
  T.eq(order, one .. ' ' .. one, 'groups, last first, in each of the two steps')
  for _, spec in ipairs({{granularity = 'full', method = 'uniform', num_layers = 2},
                          {granularity = 'full', method = 'block', num_layers = 1},
                          {granularity = 'full', method = 'uniform', num_layers = 3}}) do
    local what = spec.method .. ' ' .. spec.num_layers
    local m, b, order2 = run(spec)
    T.eq(names(m), names(plain), what)
    for i = 1, #a do same_bits(what .. (i % 2 == 1 and ': output' or ': dx'), b[i], a[i]) end
    same_bits(what .. ': gradients', m._flat_grad, plain._flat_grad)
    T.eq(order2, order, what .. ': gradient groups reported as without checkpointing')
  end
  -- 'selective' and nil change nothing; bad specs name the key
  T.eq(nn.materialize(model(2), 1).blocks:set_activation_checkpointing({granularity = 'selective'})._units, nil)
  local s = model(2).blocks
  T.raises(function() s:set_activation_checkpointing({granularity = 'full', num_layers = 3}) end,
    'activation_checkpointing.num_layers = 3 must be an integer from 1 to the 2 blocks here')
  T.raises(function() s:set_activation_checkpointing({granularity = 'full', method = 'odd'}) end,
    "activation_checkpointing.method must be 'uniform' or 'block', got 'odd'")
end)

local SMALL = {'DATASET=synthetic', 'NUM_SAMPLES=32', 'HIDDEN_SIZE=16', 'NUM_HEADS=2', 'DEPTH=3', 'BATCH_SIZE=8',
  'EVAL_EVERY_EPOCH=false', 'NUM_THREADS=1'}

T.test('config: activation_checkpointing on a MODEL checkpoints its blocks; training is bitwise unchanged', function()
  local path = lunar.home .. '/configs/examples/vit_composed.lua'
  local function with(extra)
    local o = {}
    for _, v in ipairs(SMALL) do o[#o + 1] = v end
    for _, v in ipairs(extra) do o[#o + 1] = v end
    local cfg = config.load(path, o)
    local inner = cfg.MODEL   -- the example's blocks, each followed by a dropout (masks must be replayed)
    cfg.MODEL = function(c, lib)
      local m = inner(c, lib)
      for i, e in ipairs(m.blocks._children) do
        e.module = lib.Sequential{{'', e.module}, {'drop', lib.Dropout(0.2, i)}}
        m.blocks[e.name] = e.module
      end
      return m
    end
    return setup.from_config(cfg, nil, {grid = false, quiet = true})
  end
  local plain = with({})
  -- the key on a MODEL config loads (it was refused) and reaches the blocks
  local ck = with({'activation_checkpointing.granularity=full', 'activation_checkpointing.num_layers=2'})
  T.truthy(ck.model.blocks._units and #ck.model.blocks._units == 2, 'blocks 0-1 and 2: two segments')
  T.eq(names(ck.model), names(plain.model))
  local la = T.train_steps(plain.engine, plain.train_loader, 2)
  local lb = T.train_steps(ck.engine, ck.train_loader, 2)
  for i = 1, 2 do T.eq(lb[i], la[i], 'loss of step ' .. i .. ', bitwise') end
  same_bits('weights after 2 steps', ck.model._flat, plain.model._flat)
  local cp = with({'CHECKPOINT=true'})
  T.eq(#cp.model.blocks._units, 3, 'CHECKPOINT = true: each block its own segment')
  -- a MODEL without 'blocks' says so, naming the config file and line
  local cfg = config.load(path, {'DATASET=synthetic', 'NUM_SAMPLES=8', 'HIDDEN_SIZE=16', 'NUM_HEADS=2', 'DEPTH=1',
    'CHECKPOINT=true', 'NUM_THREADS=1'})
  cfg.MODEL = function(_, lib) return lib.Sequential{{'head', lib.Linear(4, 2)}} end
  T.raises(function() setup.config_model(cfg) end,
    "test_models_checkpointing.lua:%d+: config key 'MODEL': activation_checkpointing %(or CHECKPOINT%) applies " ..
    "to the model's child 'blocks', a nn.Sequential of blocks; this model has no child named 'blocks'")
  local cfg2 = config.load(path, {'DATASET=synthetic', 'NUM_SAMPLES=8', 'HIDDEN_SIZE=16', 'NUM_HEADS=2', 'DEPTH=2',
    'activation_checkpointing.granularity=full', 'activation_checkpointing.num_layers=3', 'NUM_THREADS=1'})
  T.raises(function() setup.config_model(cfg2) end,
    "vit_composed.lua:%d+: config key 'MODEL': activation_checkpointing.num_layers = 3 must be an integer from 1 " ..
    'to the 2 blocks here')
end)

T.run()
