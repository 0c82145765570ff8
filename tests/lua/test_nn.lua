-- Tests of lua/lunar/nn: gradients against central finite differences on a
-- tiny ViT (nn.gradcheck in float64), gradient accumulation, initialization (determinism by name and
-- statistics), 3D images, timm's parameter names, shape errors, Dropout, the
-- module contract (contexts, need_dx, the loss as a Module, nn without
-- parallel, no renaming), and the parameter count of the main job's model.
--   build/lunar tests/lua/test_nn.lua
local T = require('harness')
local nn = require('lunar.nn')
local config = require('lunar.config')
local models = require('lunar.models')

local ops = lunar.ops

local TINY = {img_size = 8, patch_size = 4, in_chans = 2, embed_dim = 16, depth = 2, num_heads = 2,
              num_classes = 5}

local function vit(over, seed)
  local o = {}
  for k, v in pairs(TINY) do o[k] = v end
  for k, v in pairs(over or {}) do o[k] = v end
  local m = nn.ViT(o)
  nn.materialize(m, seed or 1)
  return m
end

local function by_name(model)
  local t = {}
  for _, p in ipairs(model:parameters()) do t[p.name] = p end
  return t
end

-- Runs fn with the reference kernels on (or off) and always switches them off again.
local function with_kernels(ref, fn)
  ops.use_reference_kernels(ref)
  local ok, err = pcall(fn)
  ops.use_reference_kernels(false)
  if not ok then error(err, 0) end
end

local rel_err = T.rel_err

-- finite differences ---------------------------------------------------------------

local X = lunar.empty({3, 2, 8, 8}):normal_(5, 'test_nn.x', 0, 1)
local Y = lunar.tensor({0, 3, 4}, 'i32')
local CRIT = nn.CrossEntropy{label_smoothing = 0.1}

-- forward + backward: the loss, and the image gradient
local function loss_and_grads(model, x)
  model:zero_grad()
  local logits, ctx = model:forward(x or X)
  local l, cctx = CRIT:forward(logits, Y)
  local dlogits = CRIT:backward(cctx, 1)
  local dimg = model:backward(ctx, dlogits, true)
  return l, dimg
end

-- The tiny ViT's backward for the image and every parameter against central
-- differences of its forward in float64 (nn.gradcheck: the reference kernels
-- in double, tight tolerances); the fast kernels are held to the reference ones
-- ('fast and reference kernels agree' below), the loss's own backward by
-- tests/c/test_loss.c.
local function gradcheck_vit(model, x, what)
  local rep = nn.gradcheck(model, x, {max_elements = 12})
  T.truthy(rep.ok, what .. ': ' .. rep.message)
  T.eq(rep.dtype, 'f64', what)
  T.eq(#rep.tensors, #model:parameters() + 1, what .. ': the image and every parameter')
  return rep
end

T.test('the lunar.models doc names only functions that exist', function()
  local path = assert(package.searchpath('lunar.models', package.path))
  local f = assert(io.open(path)); local src = f:read('a'); f:close()
  local named = 0
  for line in src:gmatch('[^\n]+') do
    if not line:match('^%-%-') then break end   -- the header comment
    for name in line:gmatch('models%.([%w_]+)%(') do
      named = named + 1
      T.eq(type(models[name]), 'function', 'models.' .. name .. ' (named in the doc of ' .. path .. ')')
    end
  end
  T.truthy(named >= 2, 'the doc names models.vit and the helpers')
  local cfg = {IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2, HIDDEN_SIZE = 16, DEPTH = 2, NUM_HEADS = 2,
    MLP_RATIO = 4, NUM_CLASSES = 3}
  local n = models.vit(cfg):num_parameters()
  T.truthy(math.type(n) == 'integer' and n > 0, 'num_parameters')
  T.truthy(models.vit_train_flops_per_image(cfg, n) > 6 * n, 'flops per image')
end)

T.test('gradcheck (f64): the tiny ViT, the image and every parameter', function()
  gradcheck_vit(vit(), X, '2D')
end)

T.test('gradcheck (f64): the tiny ViT in training mode with dropout (its masks rewound)', function()
  local model = vit({drop = 0.2, seed = 3})
  T.truthy(model.training, 'training mode')
  gradcheck_vit(model, X, 'dropout 0.2')
end)

T.test('need_dx = false: no image gradient, the same parameter gradients', function()
  local model = vit()
  local x = X:clone()
  local _, dimg = loss_and_grads(model, x)
  T.truthy(dimg, 'backward(ctx, dlogits, true) returns the image gradient')
  T.eq(dimg:shape(), {3, 2, 8, 8})
  local g1 = model._flat_grad:clone()
  model:zero_grad()
  local logits, ctx = model:forward(x)
  local _, cctx = CRIT:forward(logits, Y)
  T.eq(model:backward(ctx, CRIT:backward(cctx, 1), false), nil)
  T.truthy(rel_err(model._flat_grad, g1) <= 1e-6)
end)

T.test('fast and reference kernels agree on the loss and every gradient', function()
  local model = vit()
  local l_fast, d_fast
  with_kernels(false, function() l_fast, d_fast = loss_and_grads(model) end)
  local g_fast = model._flat_grad:clone()
  local l_ref, d_ref
  with_kernels(true, function() l_ref, d_ref = loss_and_grads(model) end)
  T.near(l_fast, l_ref, 1e-5)
  T.truthy(rel_err(model._flat_grad, g_fast) < 1e-4, 'flat gradient')
  T.truthy(rel_err(d_fast, d_ref) < 1e-4, 'image gradient')
  for _, p in ipairs(model:parameters()) do
    T.truthy(p.grad:norm() > 0 or p.name:match('qkv%.bias'), p.name .. ' has a gradient')
  end
end)

-- accumulation -----------------------------------------------------------------

T.test('gradients accumulate: two backward passes without zero_grad double them', function()
  local model = vit()
  loss_and_grads(model)                    -- zero_grad + one pass
  local g1 = model._flat_grad:clone()
  T.truthy(g1:norm() > 0)
  local logits, ctx = model:forward(X)
  local _, cctx = CRIT:forward(logits, Y)
  model:backward(ctx, CRIT:backward(cctx, 1))
  T.truthy(rel_err(model._flat_grad, g1 * 2) < 1e-5, 'flat grad = 2 x one pass')
  for _, p in ipairs(model:parameters()) do
    local one = g1:narrow(1, model._offsets and model._offsets[p.name] or 1, p.grad:numel())
    if model._offsets then T.truthy(rel_err(p.grad:view(-1), one * 2) < 1e-5, p.name) end
  end
  model:zero_grad()
  T.eq(model._flat_grad:norm(), 0, 'zero_grad clears every gradient')
  -- a dloss scale scales every gradient
  local logits2, ctx2 = model:forward(X)
  local _, cctx2 = CRIT:forward(logits2, Y)
  model:backward(ctx2, CRIT:backward(cctx2, 0.5))
  T.truthy(rel_err(model._flat_grad, g1 * 0.5) < 1e-5, 'dloss = 0.5 halves the gradients')
end)

-- initialization ---------------------------------------------------------------

T.test('init is a function of (seed, name): depth 2 and depth 3 share their common parameters', function()
  local a = by_name(vit({depth = 2}, 7))
  local b = by_name(vit({depth = 3}, 7))
  local c = by_name(vit({depth = 2}, 8))
  local shared, random = 0, 0
  for name, p in pairs(a) do
    local q = T.truthy(b[name], 'depth 3 has ' .. name)
    T.eq(q.param:totable(), p.param:totable(), name .. ' equal for the same seed')
    shared = shared + 1
    local kind = p.init.kind
    if kind ~= 'zeros' and kind ~= 'ones' then
      random = random + 1
      local d = p.param - c[name].param
      T.truthy(math.max(d:max(), -d:min()) > 0, name .. ' differs for another seed')
    else
      T.eq(c[name].param:totable(), p.param:totable(), name .. ' (constant init)')
    end
  end
  T.eq(shared, 32)
  T.eq(random, 13, 'cls, pos, patch w+b, per block qkv/proj/fc1/fc2 weights, head weight')
  T.truthy(b['blocks.2.attn.qkv.weight'], 'depth 3 has block 2')
  -- materializing twice gives the same weights
  local m1, m2 = vit({}, 3), vit({}, 3)
  T.eq(m1._flat:totable(), m2._flat:totable())
end)

local function std_of(t)
  local n = t:numel()
  local mean = t:sum() / n
  return math.sqrt(math.max(t:norm() ^ 2 / n - mean * mean, 0)), mean
end

T.test('init statistics (timm): Linear std 0.02, zero biases, LayerNorm ones/zeros, conv uniform', function()
  local model = nn.ViT{img_size = 8, patch_size = 4, in_chans = 3, embed_dim = 64, depth = 1, num_heads = 2,
    num_classes = 10}
  nn.materialize(model, 11)
  local P = by_name(model)
  for _, name in ipairs({'blocks.0.attn.qkv.weight', 'blocks.0.attn.proj.weight', 'blocks.0.mlp.fc1.weight',
                         'blocks.0.mlp.fc2.weight'}) do
    local s, m = std_of(P[name].param)
    T.near(s, 0.02, 0.05, 0, name .. ' std')
    T.near(m, 0, 0, 0.002, name .. ' mean')
  end
  T.near((std_of(P['head.weight'].param)), 0.02, 0.12, 0, 'head.weight std')
  T.near((std_of(P['pos_embed'].param)), 0.02, 0.15, 0, 'pos_embed std')
  for _, name in ipairs({'blocks.0.attn.qkv.bias', 'blocks.0.attn.proj.bias', 'blocks.0.mlp.fc1.bias',
                         'blocks.0.mlp.fc2.bias', 'head.bias', 'blocks.0.norm1.bias', 'blocks.0.norm2.bias',
                         'norm.bias'}) do
    T.eq(P[name].param:min(), 0, name); T.eq(P[name].param:max(), 0, name)
  end
  for _, name in ipairs({'blocks.0.norm1.weight', 'blocks.0.norm2.weight', 'norm.weight'}) do
    T.eq(P[name].param:min(), 1, name); T.eq(P[name].param:max(), 1, name)
  end
  local cls = P['cls_token'].param
  T.truthy(cls:norm() > 0 and math.max(cls:max(), -cls:min()) < 1e-5, 'cls_token ~ N(0, 1e-6)')
  -- the conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 3 * 4 * 4
  local bound = 1 / math.sqrt(48)
  local w = P['patch_embed.proj.weight'].param
  T.truthy(w:min() >= -bound and w:max() <= bound, tostring(w))
  T.near((std_of(w)), bound / math.sqrt(3), 0.06, 0, 'conv weight std')
  local b = P['patch_embed.proj.bias'].param
  T.truthy(b:min() >= -bound and b:max() <= bound and b:norm() > 0, 'conv bias uniform')
end)

T.test("init 'pytorch': Linear weights and biases U(-1/sqrt(in), 1/sqrt(in))", function()
  local model = nn.ViT{img_size = 8, patch_size = 4, in_chans = 3, embed_dim = 64, depth = 1, num_heads = 2,
    num_classes = 10}
  nn.materialize(model, 11, {init = 'pytorch'})
  local P = by_name(model)
  local b64, b256 = 1 / 8, 1 / 16
  local qkv = P['blocks.0.attn.qkv.weight'].param
  T.truthy(qkv:min() >= -b64 and qkv:max() <= b64 and qkv:max() > 0.9 * b64, tostring(qkv))
  T.near((std_of(qkv)), b64 / math.sqrt(3), 0.05, 0, 'qkv std')
  local fc2 = P['blocks.0.mlp.fc2.weight'].param
  T.truthy(fc2:min() >= -b256 and fc2:max() <= b256 and fc2:max() > 0.9 * b256, tostring(fc2))
  local hb = P['head.bias'].param
  T.truthy(hb:norm() > 0 and hb:max() <= b64, 'Linear bias is uniform, not zero')
  T.eq(P['norm.weight'].param:min(), 1); T.eq(P['norm.bias'].param:max(), 0)
  T.raises(function() nn.materialize(nn.ViT(TINY), 1, {init = 'jax'}) end, 'unknown init scheme')
end)

-- 3D ---------------------------------------------------------------------------

T.test('a 3D ViT: patch embed weight [dim, C, 4, 4, 4], forward and backward', function()
  local model = vit({ndim = 3})
  local P = by_name(model)
  T.eq(P['patch_embed.proj.weight'].param:shape(), {16, 2, 4, 4, 4})
  T.eq(P['pos_embed'].param:shape(), {1, 9, 16})
  local x = lunar.empty({3, 2, 8, 8, 8}):normal_(2, 'x3', 0, 1)
  model:zero_grad()
  local logits, ctx = model:forward(x)
  T.eq(logits:shape(), {3, 5})
  local _, cctx = CRIT:forward(logits, Y)
  local dimg = model:backward(ctx, CRIT:backward(cctx, 1), true)
  T.eq(dimg:shape(), {3, 2, 8, 8, 8})
  for _, p in ipairs(model:parameters()) do
    T.truthy(p.grad:norm() > 0 or p.name:match('qkv%.bias'), p.name .. ' has a gradient')
  end
  -- the 3D patch embedding's weight and the input (and the rest) against finite differences
  gradcheck_vit(model, x, '3D')
  T.raises(function() model:forward(lunar.zeros({3, 2, 8, 8})) end, 'patch_embed')
end)

-- names ------------------------------------------------------------------------

T.test("parameter names and shapes are timm's (depth 1)", function()
  local model = nn.ViT{img_size = 8, patch_size = 4, in_chans = 2, embed_dim = 16, depth = 1, num_heads = 2,
    num_classes = 5}
  local names, shapes = {}, {}
  for _, p in ipairs(model:parameters()) do
    names[#names + 1] = p.name
    shapes[p.name] = p.shape
  end
  T.eq(names, {
    'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias',
    'blocks.0.norm1.weight', 'blocks.0.norm1.bias', 'blocks.0.attn.qkv.weight', 'blocks.0.attn.qkv.bias',
    'blocks.0.attn.proj.weight', 'blocks.0.attn.proj.bias', 'blocks.0.norm2.weight', 'blocks.0.norm2.bias',
    'blocks.0.mlp.fc1.weight', 'blocks.0.mlp.fc1.bias', 'blocks.0.mlp.fc2.weight', 'blocks.0.mlp.fc2.bias',
    'norm.weight', 'norm.bias', 'head.weight', 'head.bias',
  })
  T.eq(shapes['cls_token'], {1, 1, 16}); T.eq(shapes['pos_embed'], {1, 5, 16})
  T.eq(shapes['patch_embed.proj.weight'], {16, 2, 4, 4})
  T.eq(shapes['blocks.0.attn.qkv.weight'], {48, 16}); T.eq(shapes['blocks.0.mlp.fc1.weight'], {64, 16})
  T.eq(shapes['blocks.0.mlp.fc2.weight'], {16, 64}); T.eq(shapes['head.weight'], {5, 16})
  -- weight-decay grouping: 1-dim parameters, cls_token and pos_embed are excluded
  local nwd = {}
  for _, p in ipairs(model:parameters()) do if p.no_weight_decay then nwd[#nwd + 1] = p.name end end
  T.eq(#nwd, 14)
  for _, p in ipairs(model:parameters()) do
    T.eq(p.no_weight_decay, #p.shape <= 1 or p.name == 'cls_token' or p.name == 'pos_embed', p.name)
  end
  -- state_dict after materialize: name -> tensor of that shape
  nn.materialize(model, 0)
  local sd = model:state_dict()
  T.eq(sd['blocks.0.attn.proj.weight']:shape(), {16, 16})
  T.eq(model.blocks['0'].mlp.fc1.path, 'blocks.0.mlp.fc1', 'materialize sets module paths')
end)

-- errors -----------------------------------------------------------------------

T.test("shape errors name the module path and both shapes", function()
  local model = vit()
  local msg = T.raises(function() model:forward(lunar.zeros({3, 2, 9, 8})) end, 'patch_embed')
  T.truthy(msg:find('[3, 2, 9, 8]', 1, true), msg)
  T.truthy(msg:find('[B, 2, 8, 8]', 1, true), msg)
  msg = T.raises(function() model:forward(lunar.zeros({3, 1, 8, 8})) end, 'patch_embed')
  T.truthy(msg:find('[3, 1, 8, 8]', 1, true), msg)
  msg = T.raises(function() model.blocks['0'].mlp.fc1:forward(lunar.zeros({2, 5, 7})) end, 'blocks.0.mlp.fc1')
  T.truthy(msg:find('[2, 5, 7]', 1, true) and msg:find('16', 1, true), msg)
  msg = T.raises(function() model.blocks['1'].attn.qkv:forward(lunar.zeros({4, 15})) end, 'blocks.1.attn.qkv')
  T.truthy(msg:find('[4, 15]', 1, true), msg)
  msg = T.raises(function() model.norm:forward(lunar.zeros({2, 3, 8})) end, 'norm')
  T.truthy(msg:find('[2, 3, 8]', 1, true), msg)
  T.raises(function() nn.ViT{img_size = 10, patch_size = 4, in_chans = 1, embed_dim = 16, depth = 1,
    num_heads = 2, num_classes = 2} end, 'IMG_SIZE 10 is not a multiple of PATCH_SIZE 4')
  T.raises(function() nn.ViT{img_size = 8, patch_size = 4, in_chans = 1, embed_dim = 16, depth = 1,
    num_heads = 3, num_classes = 2} end, 'not divisible by NUM_HEADS 3')
  -- backward after an evaluation-mode forward is an error, not a crash
  model:evaluate()
  local logits, ctx = model:forward(X)
  T.raises(function() model:backward(ctx, logits) end, 'evaluation mode')
  model:train()
end)

-- Dropout ----------------------------------------------------------------------

local function mask_of(y)
  local t = y:totable()
  local zeros, s = 0, {}
  for i, v in ipairs(t) do
    if v == 0 then zeros = zeros + 1 end
    s[i] = v == 0 and '0' or '1'
  end
  return zeros, table.concat(s), t
end

T.test('Dropout: train mode drops about half, scales by 1/(1-p), deterministic per path and call', function()
  local x = lunar.ones({4000})
  local d = nn.Dropout(0.5, 123)
  d.path = 'blocks.0.mlp.drop'
  local y1, c1 = d:forward(x)
  local zeros, m1, vals = mask_of(y1)
  T.truthy(zeros > 1800 and zeros < 2200, 'zeros: ' .. zeros)
  for _, v in ipairs(vals) do
    if v ~= 0 and v ~= 2 then T.eq(v, 2, 'kept values are scaled by 2') end
  end
  -- backward regenerates the same mask
  local dx = d:backward(c1, lunar.full({4000}, 3))
  local _, mb = mask_of(dx)
  T.eq(mb, m1, 'backward mask = forward mask')
  T.eq(dx:sum(), 3 * y1:sum())
  -- the second call draws a new mask
  local _, m2 = mask_of(d:forward(x))
  T.truthy(m2 ~= m1, 'second call differs')
  -- a new module with the same seed and path replays both calls
  local e = nn.Dropout(0.5, 123)
  e.path = 'blocks.0.mlp.drop'
  T.eq(select(2, mask_of(e:forward(x))), m1, 'same path, call 1')
  T.eq(select(2, mask_of(e:forward(x))), m2, 'same path, call 2')
  -- another path or seed: another mask
  local f = nn.Dropout(0.5, 123)
  f.path = 'blocks.1.mlp.drop'
  T.truthy(select(2, mask_of(f:forward(x))) ~= m1, 'other path')
  local g = nn.Dropout(0.5, 124)
  g.path = 'blocks.0.mlp.drop'
  T.truthy(select(2, mask_of(g:forward(x))) ~= m1, 'other seed')
  -- p = 0.1 keeps about 90%
  local h = nn.Dropout(0.1, 1); h.path = 'x'
  local z = mask_of(h:forward(x))
  T.truthy(z > 300 and z < 500, 'p=0.1 zeros: ' .. z)
end)

T.test('Dropout.placement: a block of a split tensor drops what the whole tensor drops there', function()
  -- the whole [B=4, N=3, C=8] (rows of 8), and the block of batch rows 2..3 (0-based), features 4..7
  -- (a 2D rank's batch block 1 of 2, feature block 1 of 2): placement = offset (2*3)*8 + 4, rows of 4, 8 apart
  local whole = lunar.empty({4, 3, 8}):normal_(5, 'x', 0, 1)
  local d = nn.Dropout(0.5, 9); d.path = 'blocks.0.mlp.drop'
  local yw, cw = d:forward(whole)
  local blk = whole:narrow(1, 3, 2):narrow(3, 5, 4):contiguous()
  local b = nn.Dropout(0.5, 9); b.path = 'blocks.0.mlp.drop'
  b.placement = function(x) T.eq(x:shape(), {2, 3, 4}); return 6 * 8 + 4, 4, 8 end
  local yb, cb = b:forward(blk)
  T.eq(yb:totable(), yw:narrow(1, 3, 2):narrow(3, 5, 4):contiguous():totable(), 'forward: the whole run\'s block')
  local g = lunar.empty({4, 3, 8}):normal_(6, 'g', 0, 1)
  local gw = d:backward(cw, g)
  local gb = b:backward(cb, g:narrow(1, 3, 2):narrow(3, 5, 4):contiguous())
  T.eq(gb:totable(), gw:narrow(1, 3, 2):narrow(3, 5, 4):contiguous():totable(), 'backward: the same mask')
  -- the op's rows form checks that the rows fit
  T.raises(function() return lunar.ops.dropout(blk, 0.5, 9, 's', 0, 5, 8) end,
    'dropout: rows of 5 elements 8 apart do not fit inp of 24 elements')
end)

T.test('Dropout: evaluation mode is the identity', function()
  local x = lunar.empty({1000}):normal_(1, 'dx', 0, 1)
  local d = nn.Dropout(0.5, 123)
  d.path = 'drop'
  d:evaluate()
  local y, ctx = d:forward(x)
  T.eq(y:totable(), x:totable())
  T.eq(d.calls, 0, 'no mask drawn')
  local dy = lunar.ones({1000})
  T.eq(d:backward(ctx, dy):totable(), dy:totable())
  d:train()
  T.truthy(mask_of(d:forward(x)) > 0, 'train mode again drops')
end)

T.test('a ViT with dropout: train mode is stochastic, evaluation mode deterministic', function()
  local model = vit({drop = 0.5})
  local a = model:forward(X)
  local b = model:forward(X)
  T.truthy(rel_err(a, b) > 1e-3, 'train mode: two forwards differ')
  model:evaluate()
  local ref = vit({drop = 0})
  ref:evaluate()
  local c = model:forward(X)
  local d = model:forward(X)
  local r = ref:forward(X)
  -- every Dropout of the model (pos_drop, attn.proj_drop, mlp.drop) must be off
  T.eq(c:totable(), d:totable(), 'evaluation mode: two forwards are equal')
  T.eq(c:totable(), r:totable(), 'evaluation mode equals the model without dropout')
end)

-- the module contract (lunar.nn.Module) ------------------------------------------

local function all_released(list)
  for i, t in ipairs(list) do
    if not t:is_released() then return false, 'owned tensor ' .. i .. ' still holds storage' end
  end
  return true
end

T.test('a context owns what its module saved: backward releases it, never the caller\'s input', function()
  local model = vit({drop = 0.1})
  local x = X:clone()
  local logits, ctx = model:forward(x)
  T.eq(getmetatable(ctx), nn.Context, 'forward returns a lunar.nn.Context')
  local owned = ctx:tensors()
  -- per block: h1, h2, x1, qkv, o, lse, fc1 output h, GELU output a, 2 x (mean, rstd); and the block inputs
  T.truthy(#owned >= 2 * 14, #owned .. ' owned tensors')
  for _, t in ipairs(owned) do T.truthy(t ~= x, 'the input is referred to, not owned') end
  local _, cctx = CRIT:forward(logits, Y)
  model:backward(ctx, CRIT:backward(cctx, 1), false)
  T.truthy(all_released(owned))
  T.truthy(ctx.freed and cctx.freed, 'both contexts are released')
  T.falsy(x:is_released(), 'the caller\'s input is left alone')
  T.falsy(logits:is_released(), 'the caller\'s logits are left alone')
  T.raises(function() model:backward(ctx, logits) end, 'already used by a backward')
  logits:free()
end)

T.test('ctx:free() releases an unused context (twice is harmless); <close> does it at scope end', function()
  local model = vit()
  local logits, ctx = model:forward(X)
  local owned = ctx:tensors()
  ctx:free()
  T.truthy(all_released(owned))
  ctx:free()
  T.falsy(X:is_released())
  logits:free()
  -- a to-be-closed variable, for a layer and for the whole model
  local lin = nn.materialize(nn.Linear(4, 3), 1)
  local keep
  do
    local y, c <close> = model:forward(X)
    keep = c:tensors()
    T.truthy(#keep > 0 and not keep[1]:is_released(), 'alive inside the scope')
    y:free()
  end
  T.truthy(all_released(keep), 'released at the end of the scope')
  local closed
  do
    local _, c <close> = lin:forward(lunar.ones({2, 4}))
    closed = c
  end
  T.truthy(closed.freed, 'a Linear context too')
  -- a context serves one backward: a second one says so
  local lx = lunar.ones({2, 4})
  local ly, lc = lin:forward(lx)
  lin:backward(lc, lunar.ones({2, 3}))
  T.raises(function() lin:backward(lc, lunar.ones({2, 3})) end, 'context already released')
  ly:free()
  -- evaluation mode: the ViT frees the block activations as it goes; ctx:free() the rest
  model:evaluate()
  local out, ectx = model:forward(X)
  local rest = ectx:tensors()
  T.truthy(#rest > 0, 'the final norm and head activations')
  ectx:free()
  T.truthy(all_released(rest))
  out:free()
  model:train()
end)

T.test('need_dx: default true returns dx, false returns nil, for every module kind', function()
  local model = vit({drop = 0.1})
  local b = model.blocks['0']
  local tokens = lunar.empty({3, 5, 16}):normal_(1, 'tok', 0, 1)
  local logits = lunar.empty({3, 5}):normal_(2, 'logits', 0, 1)
  local cases = {
    {'Linear', b.mlp.fc1, tokens}, {'LayerNorm', b.norm1, tokens}, {'Dropout', b.attn.proj_drop, tokens},
    {'MLP', b.mlp, tokens}, {'Attention', b.attn, tokens}, {'Block', b, tokens},
    {'PatchEmbed', model.patch_embed, X}, {'ViT', model, X}, {'CrossEntropy', CRIT, logits, Y},
  }
  for _, c in ipairs(cases) do
    local name, m, x, target = c[1], c[2], c[3], c[4]
    local y, ctx = m:forward(x, target)
    local dy = type(y) == 'number' and 1 or lunar.ones(y:shape())
    local dx = m:backward(ctx, dy)
    T.truthy(lunar.is_tensor(dx), name .. ': dx by default')
    T.eq(dx:shape(), x:shape(), name .. ': dx has the input\'s shape')
    local y2, ctx2 = m:forward(x, target)
    T.eq(m:backward(ctx2, dy, false), nil, name .. ': need_dx = false')
    T.truthy(ctx.freed and ctx2.freed, name .. ': both contexts released')
    T.truthy(getmetatable(m).__parent ~= nil and m.parameters == nn.Module.parameters, name .. ' is a Module')
    if y ~= x and type(y) ~= 'number' then y:free(); y2:free() end
  end
end)

T.test('the loss is a Module: loss, ctx = forward(logits, target); dlogits = backward(ctx, dloss)', function()
  local crit = nn.CrossEntropy{label_smoothing = 0.1}
  T.truthy(crit.zero_grad == nn.Module.zero_grad and #crit:parameters() == 0, 'a Module without parameters')
  local z = {{1.0, -2.0, 0.5}, {0.0, 3.0, -1.0}}
  local logits, target = lunar.tensor(z), lunar.tensor({2, 1}, 'i32')
  local loss, ctx = crit:forward(logits, target)
  -- float64 reference (PyTorch's definition): q = 0.9 onehot + 0.1 / 3,
  -- loss = mean_b sum_k -q_k log softmax(z_b)_k, dlogits = dloss (softmax - q) / B
  local ref_loss, ref_d = 0, {}
  for b, row in ipairs(z) do
    local m = math.max(table.unpack(row))
    local se = 0
    for _, v in ipairs(row) do se = se + math.exp(v - m) end
    for k, v in ipairs(row) do
      local q = (k - 1 == ({2, 1})[b] and 0.9 or 0) + 0.1 / 3
      ref_loss = ref_loss - q * (v - m - math.log(se)) / 2
      ref_d[#ref_d + 1] = 0.5 * (math.exp(v - m) / se - q) / 2
    end
  end
  T.near(loss, ref_loss, 1e-6, 0, 'loss')
  local d = crit:backward(ctx, 0.5)
  local dv = d:view(-1):totable()
  for i, want in ipairs(ref_d) do T.near(dv[i], want, 1e-5, 1e-7, 'dlogits ' .. i) end
  T.truthy(ctx.freed, 'backward released the context')
  T.falsy(logits:is_released(), 'the logits stay the caller\'s')
end)

T.test('lunar.nn requires nothing from lunar.parallel (a fresh load, a plain model run, the sources)', function()
  local saved = {}
  for name, mod in pairs(package.loaded) do
    if name:match('^lunar%.nn') or name:match('^lunar%.parallel') then saved[name] = mod end
  end
  for name in pairs(saved) do package.loaded[name] = nil end
  local ok, err = pcall(function()
    local fresh = require('lunar.nn')
    local m = fresh.materialize(fresh.ViT(TINY), 1)
    local y, c = m:forward(X)
    local _, cc = fresh.CrossEntropy{}:forward(y, Y)
    m:backward(c, fresh.CrossEntropy{}:backward(cc), false)
    y:free()
  end)
  local parallel_loaded, nn_modules = {}, {}
  for name in pairs(package.loaded) do
    if name:match('^lunar%.parallel') then parallel_loaded[#parallel_loaded + 1] = name end
    if name:match('^lunar%.nn') then nn_modules[#nn_modules + 1] = name end
  end
  for name in pairs(package.loaded) do
    if name:match('^lunar%.nn') or name:match('^lunar%.parallel') then package.loaded[name] = nil end
  end
  for name, mod in pairs(saved) do package.loaded[name] = mod end
  T.truthy(ok, tostring(err))
  T.eq(parallel_loaded, {}, 'lunar.parallel modules loaded by lunar.nn')
  T.truthy(#nn_modules >= 10, 'the nn modules were loaded fresh')
  for _, name in ipairs(nn_modules) do
    local path = assert(package.searchpath(name, package.path))
    local f = assert(io.open(path)); local src = f:read('a'); f:close()
    T.falsy(src:find('require%s*%(?%s*[\'"]lunar%.parallel'), path .. ' requires lunar.parallel')
  end
end)

T.test('a module does not rename its children while it runs', function()
  local model = vit({drop = 0.1})
  local before = {}
  model:apply(function(m, path) before[#before + 1] = path .. '=' .. m.path end)
  T.eq(model.blocks['1'].attn.proj_drop.path, 'blocks.1.attn.proj_drop', 'materialize set the paths')
  local logits, ctx = model:forward(X)
  local _, cctx = CRIT:forward(logits, Y)
  model:backward(ctx, CRIT:backward(cctx, 1), false)
  logits:free()
  local after = {}
  model:apply(function(m, path) after[#after + 1] = path .. '=' .. m.path end)
  T.eq(after, before)
  -- a block materialized on its own: its dropouts keep the names materialize gave them
  local attn = nn.materialize(nn.Attention(16, 2, {proj_drop = 0.1}), 1)
  local mlp = nn.materialize(nn.MLP(16, 32, {drop = 0.1}), 1)
  local tokens = lunar.ones({2, 3, 16})
  for _, m in ipairs({attn, mlp}) do
    local y, c = m:forward(tokens)
    c:free(); y:free()
  end
  T.eq(attn.proj_drop.path, 'proj_drop')
  T.eq(mlp.drop.path, 'drop')
end)

-- parameter count --------------------------------------------------------------

T.test('num_parameters of the Fashion-MNIST config is the PyTorch count, 2684554', function()
  local cfg = config.from_table({IMG_SIZE = 28, PATCH_SIZE = 4, IN_CHANS = 1, HIDDEN_SIZE = 192, DEPTH = 6,
    NUM_HEADS = 3, NUM_CLASSES = 10})
  local model = models.vit(cfg)
  T.eq(model:num_parameters(), 2684554)
  T.eq(model._flat, nil, 'not materialized')
  T.eq(model.blocks['0'].attn.qkv.weight, nil, 'no parameter storage')
  T.eq(nn.ViT{img_size = 28, patch_size = 4, in_chans = 1, embed_dim = 192, depth = 6, num_heads = 3,
    mlp_ratio = 4, num_classes = 10}:num_parameters(), 2684554)
  -- tiny: 2*(16*32+16) + ... computed by hand for depth 1, dim 16, 5 tokens, 5 classes
  local tiny = nn.ViT{img_size = 8, patch_size = 4, in_chans = 2, embed_dim = 16, depth = 1, num_heads = 2,
    num_classes = 5}
  local patch = 16 * 32 + 16
  local block = 2 * 16 + (48 * 16 + 48) + (16 * 16 + 16) + 2 * 16 + (64 * 16 + 64) + (16 * 64 + 16)
  T.eq(tiny:num_parameters(), patch + 16 + 5 * 16 + block + 2 * 16 + (5 * 16 + 5))
end)

T.run()
