-- Tests of activation checkpointing (lunar.nn.Checkpoint; ViT's
-- activation_checkpointing; the config keys activation_checkpointing and
-- CHECKPOINT). The reference for every gradient is the same model run without
-- checkpointing (its gradients are themselves checked against PyTorch in
-- test_golden.lua and against finite differences in test_nn.lua):
-- recomputation must give BITWISE the same losses and gradients, with
-- dropout > 0 (the masks are replayed, not redrawn), in fp32 and bf16.
--   build/lunar tests/lua/test_checkpointing.lua
local T = require('harness')
local nn = require('lunar.nn')
local config = require('lunar.config')
local data = require('lunar.data')
local setup = require('lunar.setup')
local models = require('lunar.models')
local Checkpoint = require('lunar.nn.Checkpoint')

local ops = lunar.ops
local BF16 = ops.bf16_supported('cpu')

-- a tiny ViT, 5 tokens of width 16, depth 4, dropout 0.3 (every block has two dropouts)
local TINY = {img_size = 8, patch_size = 4, in_chans = 2, embed_dim = 16, depth = 4, num_heads = 2,
              num_classes = 5, drop = 0.3, seed = 11}

local function vit(ac, precision)
  local o = {}
  for k, v in pairs(TINY) do o[k] = v end
  o.activation_checkpointing = ac
  return nn.materialize(nn.ViT(o), 3, {precision = precision})
end

local X = lunar.empty({3, 2, 8, 8}):normal_(5, 'test_checkpointing.x', 0, 1)
local Y = lunar.tensor({0, 3, 4}, 'i32')
local CRIT = nn.CrossEntropy{label_smoothing = 0.1}

-- `steps` forward/backward passes (dropout draws new masks each pass: the call
-- counters advance); returns the losses, the flat gradient, the image gradient
-- of the last pass and the dropout counters
local function run(model, steps)
  local losses, dimg = {}, nil
  model:zero_grad()
  for s = 1, steps do
    local logits, ctx = model:forward(X)
    local l, cctx = CRIT:forward(logits, Y)
    losses[s] = l
    local dlogits = CRIT:backward(cctx, 1)
    if dimg then dimg:free() end
    dimg = model:backward(ctx, dlogits, true)
    dlogits:free(); logits:free()
  end
  local calls = {}
  model:apply(function(m, p) if m.__name == 'Dropout' then calls[p] = m.calls end end)
  return losses, model._flat_grad:totable(), dimg:totable(), calls
end

local SETTINGS = {
  {granularity = 'full', method = 'uniform', num_layers = 1},
  {granularity = 'full', method = 'uniform', num_layers = 2},
  {granularity = 'full', method = 'uniform', num_layers = 3},     -- groups of 3 and 1
  {granularity = 'full', method = 'uniform', num_layers = 4},
  {granularity = 'full', method = 'block', num_layers = 1},
  {granularity = 'full', method = 'block', num_layers = 3},
  {granularity = 'full', blocks = {true, false, false, true}},    -- per block (a layerwise strategy)
}

local function name(ac)
  if ac.blocks then return 'blocks ' .. T.show(ac.blocks) end
  return string.format('%s/%s/%d', ac.granularity, ac.method, ac.num_layers)
end

local function bitwise(precision)
  local ref_l, ref_g, ref_dx, ref_calls = run(vit(nil, precision), 2)
  T.truthy(ref_calls['blocks.0.mlp.drop'] == 2 and ref_calls['blocks.3.attn.proj_drop'] == 2,
    'the reference draws dropout masks: ' .. T.show(ref_calls))
  for _, ac in ipairs(SETTINGS) do
    local l, g, dx, calls = run(vit(ac, precision), 2)
    T.eq(l, ref_l, name(ac) .. ': losses bitwise')
    local bad = 0
    for i = 1, #ref_g do if g[i] ~= ref_g[i] then bad = bad + 1 end end
    T.eq(bad, 0, name(ac) .. ': gradient elements differing from no checkpointing (of ' .. #ref_g .. ')')
    T.eq(dx, ref_dx, name(ac) .. ': image gradient bitwise')
    T.eq(calls, ref_calls, name(ac) .. ': the replay leaves the dropout counters where the forwards left them')
  end
end

T.test('fp32, dropout 0.3: losses, every gradient and the image gradient bitwise equal without checkpointing',
  function() bitwise('fp32') end)

T.test('bf16, dropout 0.3: losses and gradients bitwise equal without checkpointing', function()
  if not BF16 then T.skip('this CPU has no native bf16 kernels (avx512_bf16)') end
  bitwise('bf16')
end)

T.test('the segments: uniform groups of num_layers, block = the first num_layers blocks alone', function()
  local function shape(m)
    local s = {}
    for _, u in ipairs(m.units) do s[#s + 1] = string.format('%s%d-%d', u.module.__name == 'Checkpoint' and 'C' or 'B',
      u.first, u.last) end
    return table.concat(s, ' ')
  end
  local o = {}
  for k, v in pairs(TINY) do o[k] = v end
  local m = nn.ViT(o)
  T.eq(shape(m), 'B0-0 B1-1 B2-2 B3-3')
  T.eq(shape(m:set_activation_checkpointing{granularity = 'full', method = 'uniform', num_layers = 3}), 'C0-2 C3-3')
  T.eq(shape(m:set_activation_checkpointing{granularity = 'full', method = 'block', num_layers = 2}),
    'C0-0 C1-1 B2-2 B3-3')
  -- selective: the attention kernel recomputes its probabilities anyway (it keeps lse, never [N, N])
  T.eq(shape(m:set_activation_checkpointing{granularity = 'selective'}), 'B0-0 B1-1 B2-2 B3-3')
  T.eq(m.activation_checkpointing.granularity, 'selective')
  -- a pipeline stage (blocks 2-3): counted per stage, NeMo's meaning
  o.stage = {first_block = 2, last_block = 3}
  o.activation_checkpointing = {granularity = 'full', method = 'uniform', num_layers = 2}
  T.eq(shape(nn.ViT(o)), 'C2-3')
  o.activation_checkpointing = {granularity = 'full', method = 'block', num_layers = 1}
  T.eq(shape(nn.ViT(o)), 'C2-2 B3-3')
  -- per block: indexed by the global block (blocks[i + 1]), method and num_layers ignored
  o.activation_checkpointing = {granularity = 'full', method = 'uniform', num_layers = 2, blocks = {true, true, false, true}}
  T.eq(shape(nn.ViT(o)), 'B2-2 C3-3')
  T.eq(shape(m:set_activation_checkpointing{granularity = 'full', blocks = {false, true, true, false}}),
    'B0-0 C1-1 C2-2 B3-3')
  -- parameter names do not change (the segments are not in the module tree)
  local names = {}
  for _, p in ipairs(m:parameters()) do names[#names + 1] = p.name end
  local plain = {}
  for _, p in ipairs(nn.ViT(TINY):parameters()) do plain[#plain + 1] = p.name end
  T.eq(names, plain)
end)

T.test('bad settings on the model name the key and the stage', function()
  local o = {}
  for k, v in pairs(TINY) do o[k] = v end
  o.stage = {first_block = 0, last_block = 1}
  o.activation_checkpointing = {granularity = 'full', method = 'uniform', num_layers = 3}
  T.raises(function() nn.ViT(o) end, 'activation_checkpointing.num_layers = 3 must be an integer from 1 to the 2 ' ..
    'blocks of this stage %(blocks 0%-1%)')
  o.activation_checkpointing = {granularity = 'full', method = 'every', num_layers = 1}
  T.raises(function() nn.ViT(o) end, "activation_checkpointing.method must be 'uniform' or 'block', got 'every'")
  o.activation_checkpointing = {granularity = 'full', blocks = {true, false, true}}
  T.raises(function() nn.ViT(o) end, 'activation_checkpointing.blocks must list one boolean per block (DEPTH 4), ' ..
    'got 3 entries')
  o.activation_checkpointing = {granularity = 'partial'}
  T.raises(function() nn.ViT(o) end, "activation_checkpointing.granularity must be 'full' or 'selective', got 'partial'")
end)

T.test('evaluation mode: the same logits with and without checkpointing, nothing kept, counters unchanged', function()
  local plain, ckpt = vit(nil), vit({granularity = 'full', method = 'uniform', num_layers = 2})
  plain:evaluate(); ckpt:evaluate()
  local a, ca = plain:forward(X)
  local b, cb = ckpt:forward(X)
  T.eq(b:totable(), a:totable(), 'logits bitwise')
  T.eq(#cb:tensors(), #ca:tensors(), 'evaluation keeps what it keeps without checkpointing')
  local calls = 0
  ckpt:apply(function(m) if m.__name == 'Dropout' then calls = calls + m.calls end end)
  T.eq(calls, 0, 'no mask drawn in evaluation')
  ca:free(); cb:free(); a:free(); b:free()
end)

-- the bytes of the tensors a forward context owns
local function ctx_bytes(ctx)
  local n = 0
  for _, t in ipairs(ctx:tensors()) do n = n + t:numel() * (t:dtype() == 'bf16' and 2 or 4) end
  return n
end

T.test('memory: a checkpointed block keeps no tensor; the context holds the block inputs only', function()
  local plain, ckpt = vit(nil), vit({granularity = 'full', method = 'uniform', num_layers = 1})
  local _, c1 = plain:forward(X)
  local _, c2 = ckpt:forward(X)
  for i = 0, 3 do
    T.eq(#c2['block' .. i]:tensors(), 0, 'checkpointed block ' .. i .. ' owns no tensor')
    T.truthy(#c1['block' .. i]:tensors() > 0, 'a stored block ' .. i .. ' owns its activations')
  end
  -- by hand: a block input is [3, 5, 16] f32 = 960 bytes; a stored block owns in
  -- fp32 at least h1, h2, x1 (3 x 960), qkv (3 x 960), o (960) and the MLP's 4x-wide
  -- hidden (2 x 3840: fc1 output and GELU output)
  local saved = ctx_bytes(c1) - ctx_bytes(c2)
  T.truthy(saved >= 4 * (7 * 960 + 2 * 3840), 'bytes saved ' .. saved)
  c1:free(); c2:free()
  -- measured peak of forward + backward: lower with checkpointing (depth 4, batch 64)
  local big = lunar.empty({64, 2, 8, 8}):normal_(6, 'test_checkpointing.big', 0, 1)
  local yb = lunar.zeros({64}, 'i32')
  local function peak(model)
    collectgarbage('collect')          -- no tensor of an earlier test freed during the measurement
    lunar.reset_peak_memory()
    local base = lunar.memory().bytes_in_use
    local logits, ctx = model:forward(big)
    local _, cc = CRIT:forward(logits, yb)
    local d = CRIT:backward(cc, 1)
    model:backward(ctx, d, false)
    d:free(); logits:free()
    return lunar.memory().peak_bytes - base
  end
  local p1, p2 = peak(plain), peak(ckpt)
  T.truthy(p2 < 0.75 * p1, string.format('peak bytes %d with checkpointing, %d without', p2, p1))
  big:free(); yb:free()
end)

T.test('nn.Checkpoint on any modules: Linear, an identity Dropout, Dropout, Linear; need_dx false', function()
  local function modules()
    local list = {nn.Linear(6, 8), nn.Dropout(0, 1), nn.Dropout(0.5, 1), nn.Linear(8, 3)}
    local root = nn.Module()
    for k, m in ipairs(list) do root:add('m' .. k, m) end
    nn.materialize(root, 4)
    return root, list
  end
  local x = lunar.empty({5, 6}):normal_(2, 'test_checkpointing.lin', 0, 1)
  local dy = lunar.empty({5, 3}):normal_(2, 'test_checkpointing.dy', 0, 1)
  -- plain: the modules one after the other
  local r1, l1 = modules()
  local h, ctxs, ins = x, {}, {}
  for k, m in ipairs(l1) do ins[k] = h; h, ctxs[k] = m:forward(h) end
  local y1 = h:totable()
  local g = dy
  for k = 4, 1, -1 do g = l1[k]:backward(ctxs[k], g) end
  local dx1 = g:totable()
  -- the same under a Checkpoint
  local r2, l2 = modules()
  local seg = Checkpoint(l2)
  local order = {}
  seg.after_backward = function(k) order[#order + 1] = k end
  local y2, c = seg:forward(x)
  T.eq(#c:tensors(), 0, 'the segment keeps no tensor')
  T.eq(y2:totable(), y1, 'output bitwise')
  local dx2 = seg:backward(c, dy)
  T.eq(dx2:totable(), dx1, 'dx bitwise')
  T.eq(r2._flat_grad:totable(), r1._flat_grad:totable(), 'parameter gradients bitwise')
  T.eq(order, {4, 3, 2, 1}, 'after_backward last to first')
  T.truthy(c.freed, 'backward released the context')
  local _, c3 = seg:forward(x)
  T.eq(seg:backward(c3, dy, false), nil, 'need_dx = false returns nil')
end)

-- ---- through the config, the setup and the engine -------------------------------------------

local BASE = {DATASET = 'synthetic', NUM_SAMPLES = 64, IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2,
  NUM_CLASSES = 4, BATCH_SIZE = 16, SEED = 5, HIDDEN_SIZE = 16, NUM_HEADS = 2, DEPTH = 3, DROPOUT = 0.2,
  LABEL_SMOOTHING = 0.1, PREFETCH = false, METRICS_FILE = '', clip_grad_norm = 1.0}

local function cfg_of(over)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return config.from_table(t, 'test_checkpointing')
end

local TRAIN = data.datasets(cfg_of())

local function train(over, steps)
  local cfg = cfg_of(over)
  local r = setup.from_config(cfg, nil, {grid = false, loaders = false})
  local losses = T.train_steps(r.engine, data.loader(TRAIN, cfg, {train = true}), steps)
  return losses, r.model._flat:totable(), r.model
end

T.test('engine: 4 AdamW steps with clipping and 2 micro-batches, bitwise with and without checkpointing', function()
  local ref_l, ref_p = train({NUM_MICRO_BATCHES = 2}, 4)
  for _, over in ipairs({
      {CHECKPOINT = true},
      {activation_checkpointing = {granularity = 'full', method = 'uniform', num_layers = 2}},
      {activation_checkpointing = {granularity = 'full', method = 'block', num_layers = 1}},
      {activation_checkpointing = {blocks = {false, true, true}}}}) do
    over.NUM_MICRO_BATCHES = 2
    local l, p, model = train(over, 4)
    T.truthy(model.activation_checkpointing, 'checkpointing is on: ' .. T.show(over))
    T.eq(l, ref_l, T.show(over) .. ': losses')
    T.eq(p, ref_p, T.show(over) .. ': parameters after 4 steps')
  end
end)

T.test("config: CHECKPOINT = true means granularity 'full', method 'uniform', num_layers 1", function()
  T.eq(models.activation_checkpointing(cfg_of({CHECKPOINT = true})),
    {granularity = 'full', method = 'uniform', num_layers = 1})
  T.eq(models.activation_checkpointing(cfg_of()), nil)
  T.eq(models.activation_checkpointing(cfg_of({activation_checkpointing = {granularity = 'full', method = 'block',
    num_layers = 2}})), {granularity = 'full', method = 'block', num_layers = 2})
end)

T.test('config errors name the key: granularity, method, num_layers per stage, CHECKPOINT', function()
  T.raises(function() cfg_of({activation_checkpointing = {granularity = 'ful'}}) end,
    "config key 'activation_checkpointing.granularity' must be one of 'full', 'selective', got string \"ful\" " ..
    "%(did you mean 'full'%?%)")
  T.raises(function() cfg_of({CHECKPOINT = true, activation_checkpointing = {granularity = 'selective'}}) end,
    "config key 'CHECKPOINT' is true %(granularity 'full'%), but activation_checkpointing.granularity is " ..
    "'selective'; set one of them")
  T.raises(function() cfg_of({activation_checkpointing = {granularity = 'full', method = 'blocks'}}) end,
    "config key 'activation_checkpointing.method' must be one of 'uniform', 'block', got string \"blocks\"")
  T.raises(function() cfg_of({activation_checkpointing = {granularity = 'full', num_layers = 0}}) end,
    "config key 'activation_checkpointing.num_layers' must be >= 1, got 0")
  T.raises(function() cfg_of({activation_checkpointing = {granularity = 'full', num_layers = 4}}) end,
    "config key 'activation_checkpointing.num_layers' %(4%) is more than the 3 blocks of the model %(DEPTH 3%)")
  -- per pipeline stage: DEPTH 3 over 2 stages = 2 + 1 blocks
  T.raises(function() cfg_of({CHECKPOINT = true, activation_checkpointing = {num_layers = 2},
    parallel = {pipeline = 2}}) end,
    "'activation_checkpointing.num_layers' %(2%) is more than the 1 blocks of pipeline stage 1 of 2 %(DEPTH 3%)")
  T.raises(function() cfg_of({activation_checkpointing = {granularity = 'full', num_layers = 2},
    parallel = {pipeline = 2, pipeline_split = {2, 1}}}) end, 'pipeline stage 1 of 2')
  T.raises(function() cfg_of({activation_checkpointing = {nm_layers = 2}}) end,
    "unknown config key 'activation_checkpointing.nm_layers' %(did you mean 'activation_checkpointing.num_layers'%?%)")
  -- on a MODEL the key applies to the model's 'blocks' (checked by setup against them:
  -- tests/lua/test_models_checkpointing.lua), so it loads
  T.eq(cfg_of({CHECKPOINT = true, MODEL = function(_, nn_) return nn_.Linear(2, 2) end}).CHECKPOINT, true)
  -- per block: one boolean per block, written by a loop in a config file
  T.raises(function() cfg_of({activation_checkpointing = {blocks = {true, false}}}) end,
    "config key 'activation_checkpointing.blocks' has 2 entries; it needs one boolean per block %(DEPTH 3%)")
  T.raises(function() cfg_of({activation_checkpointing = {blocks = {true, false, 1}}}) end,
    "config key 'activation_checkpointing.blocks[3]' must be a boolean")
  T.raises(function() cfg_of({activation_checkpointing = {granularity = 'selective', blocks = {true, false, true}}}) end,
    "granularity is 'selective'")
  local dir = os.getenv('TMPDIR') or '/tmp'
  local path = string.format('%s/lunar_test_ckpt_blocks_%d.lua', dir, math.random(1 << 30))
  local f = assert(io.open(path, 'w'))
  f:write("DEPTH = 6\nactivation_checkpointing = {blocks = {}}\n" ..
    "for i = 0, DEPTH - 1 do activation_checkpointing.blocks[i + 1] = i >= 4 end\n")
  f:close()
  local loaded = config.load(path)
  os.remove(path)
  T.eq(loaded.activation_checkpointing.blocks, {false, false, false, false, true, true})
  T.eq(models.activation_checkpointing(loaded).granularity, 'full')
  -- num_layers without granularity is not checked against the stages (nothing is checkpointed)
  T.eq(cfg_of({activation_checkpointing = {num_layers = 9}}).activation_checkpointing.num_layers, 9)
  T.eq(cfg_of({activation_checkpointing = {granularity = 'selective', num_layers = 9}}).activation_checkpointing
    .num_layers, 9)
end)

T.run()
