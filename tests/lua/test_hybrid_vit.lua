-- Tests of the HybridViT (config key MODEL = 'hybrid_vit', lunar.models.hybrid_vit):
-- PhysicsNeMo's domain-parallel ViT example composed from lunar.nn's leaves.
-- Expected values: the reference's printed parameter count, hand arithmetic
-- (stated below), finite differences (nn.gradcheck) and the loss of a few
-- AdamW steps going down.
--   build/lunar tests/lua/test_hybrid_vit.lua
local T = require('harness')
local nn = require('lunar.nn')
local config = require('lunar.config')
local models = require('lunar.models')
local setup = require('lunar.setup')

local function cfg_of(t, name)
  return config.from_table(t, name or 'test')
end

-- the reference's model: patch 8, width 768, 16 blocks, 12 heads, MLP 3072, 1000 classes, 3 channels
local REF = {MODEL = 'hybrid_vit', IN_CHANS = 3, NUM_CLASSES = 1000, PATCH_SIZE = 8, HIDDEN_SIZE = 768, DEPTH = 16,
  NUM_HEADS = 12, MLP_RATIO = 4}
local function ref(img, dims)
  local t = {}
  for k, v in pairs(REF) do t[k] = v end
  t.IMG_SIZE, t.IMG_DIMS = img, dims or 2
  return cfg_of(t, 'hybrid_vit reference')
end

T.test("parameter count: the reference's 126,907,624 at 1024 x 1024 (derived below)", function()
  -- Hand count without the position embedding:
  --   conv 3*768*8*8 + 768 = 148,224; patch_embed.norm 2*768 = 1,536
  --   one block: norm1 + norm2 4*768 = 3,072; qkv 768*2304 + 2304 = 1,771,776;
  --   proj 768*768 + 768 = 590,592; fc1 768*3072 + 3072 = 2,362,368; fc2 3072*768 + 768 = 2,360,064
  --   -> 7,087,872 per block, x 16 = 113,405,952; head 768*1000 + 1000 = 769,000
  --   total 148,224 + 1,536 + 113,405,952 + 769,000 = 114,324,712.
  -- The position embedding adds 768 per patch: 126,907,624 - 114,324,712 = 12,582,912 = 768 * 16,384,
  -- 16,384 = 128^2 patches of 8 pixels: a 1024 x 1024 image (no class token).
  local m = models.hybrid_vit(ref(1024))
  T.eq(m:num_parameters(), 126907624)
  T.eq(models.hybrid_vit(ref(512)):num_parameters(), 114324712 + 768 * 64 * 64)
  -- 3D: the conv is 3*768*8^3 + 768 = 1,180,416 (not 148,224); a 64^3 volume has 8^3 = 512 patches
  T.eq(models.hybrid_vit(ref(64, 3)):num_parameters(), 114324712 - 148224 + 1180416 + 768 * 512)
  -- the names: the reference's, with Lunar's 'blocks' for its 'stages'
  local names = {}
  for _, p in ipairs(m:parameters()) do names[#names + 1] = p.name end
  T.eq(names[1], 'patch_embed.conv.weight')
  T.eq(names[3], 'patch_embed.norm.weight')
  T.eq(names[5], 'pos_embed')
  T.eq(names[6], 'blocks.0.norm1.weight')
  T.eq(names[#names], 'head.bias')
end)

T.test('lunar config show prints the HybridViT and its parameter count', function()
  local out = require('lunar.cli').config_show(lunar.home .. '/configs/models/hybrid_vit.lua')
  T.truthy(out:find('-- parameters: 126,907,624', 1, true), out)
  T.truthy(out:find('model: hybrid_vit 1024px, patch 8', 1, true), out)
end)

T.test("MODEL must be 'vit', 'hybrid_vit' or a function", function()
  T.raises(function() cfg_of({MODEL = 'resnet'}) end, "config key 'MODEL' must be 'vit', 'hybrid_vit' or a function")
  T.raises(function() cfg_of({MODEL = 3}) end, "config key 'MODEL' must be a string or a function")
end)

local TINY = {MODEL = 'hybrid_vit', DATASET = 'synthetic', NUM_SAMPLES = 16, IMG_SIZE = 16, PATCH_SIZE = 4,
  IN_CHANS = 2, HIDDEN_SIZE = 16, DEPTH = 2, NUM_HEADS = 2, NUM_CLASSES = 3, BATCH_SIZE = 8, LEARNING_RATE = 3e-3,
  WARMUP_EPOCHS = 0, NUM_EPOCHS = 20, SEED = 3, METRICS_FILE = ''}

local function tiny(over)
  local t = {}
  for k, v in pairs(TINY) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return cfg_of(t, 'tiny hybrid_vit')
end

T.test('gradcheck of the composed HybridViT (2D and 3D)', function()
  for _, dims in ipairs({2, 3}) do
    local c = tiny({IMG_SIZE = 8, IMG_DIMS = dims, HIDDEN_SIZE = 8})
    local m = nn.materialize(models.hybrid_vit(c), 1)
    local shape = {2, c.IN_CHANS}
    for _ = 1, dims do shape[#shape + 1] = 8 end
    local rep = nn.gradcheck(m, lunar.empty(shape):normal_(5, 'x', 0, 1), {max_elements = 24})
    T.truthy(rep.ok, dims .. 'D: ' .. rep.message)
    T.truthy(rep.checked > 100, rep.message)
  end
end)

T.test('trains through setup: 8 AdamW steps on synthetic images lower the loss (2D and 3D)', function()
  for _, dims in ipairs({2, 3}) do
    local run = setup.from_config(tiny({IMG_DIMS = dims, IMG_SIZE = dims == 3 and 8 or 16}), nil, {quiet = true})
    T.eq(run.num_params, run.model:num_parameters())
    T.truthy(run.flops_per_image > 0)
    local first, last
    for step = 1, 8 do
      run.train_loader:set_epoch(0)
      local x, y = run.train_loader:next()
      local loss = run.engine:train_step(x, y)
      x:free(); y:free()
      if step == 1 then first = loss end
      last = loss
    end
    T.truthy(last < first, string.format('%dD: loss %g -> %g', dims, first, last))
  end
end)

-- nn.ShiftedPatches against a plain-Lua reference of its stated definition: copy k of
-- y at (i, j) is x at (i + dy_k, j + dx_k), 0 outside the image, (dy, dx) = (0, 0),
-- (-s, -s), (-s, s), (s, -s), (s, s); channel block k holds copy k.
T.test('ShiftedPatches: the five copies, and backward as the transpose of forward', function()
  local B, C, H, W, s = 2, 2, 5, 6, 2
  local x = lunar.empty({B, C, H, W}):normal_(11, 'x', 0, 1)
  local xt = x:totable()
  local sp = nn.ShiftedPatches(s)
  local y, ctx = sp:forward(x)
  T.eq(y:shape(), {B, 5 * C, H, W})
  local yt = y:totable()
  local D = {{0, 0}, {-s, -s}, {-s, s}, {s, -s}, {s, s}}
  local bad = 0
  for b = 1, B do for k = 1, 5 do for c = 1, C do for i = 1, H do for j = 1, W do
    local si, sj = i + D[k][1], j + D[k][2]
    local want = (si >= 1 and si <= H and sj >= 1 and sj <= W) and xt[b][c][si][sj] or 0
    if yt[b][(k - 1) * C + c][i][j] ~= want then bad = bad + 1 end
  end end end end end
  T.eq(bad, 0)
  -- the adjoint identity <y, dy> = <x, dx> for a random dy (y = A x, dx = A^T dy)
  local dy = lunar.empty({B, 5 * C, H, W}):normal_(12, 'dy', 0, 1)
  local dx = sp:backward(ctx, dy, true)
  local lhs, rhs = (y * dy):sum(), (x * dx):sum()
  T.near(lhs, rhs, 1e-5 * (math.abs(lhs) + 1))
  y:free(); dy:free(); dx:free()
  -- a shift as large as the image leaves nothing: refused
  T.raises(function() nn.ShiftedPatches(5):forward(x) end, 'shift 5 must be smaller than the image (5 x 6)')
  T.raises(function() nn.ShiftedPatches(0) end, 'shift must be a positive integer')
end)

T.test('SHIFTED_PATCHES: the count (+4 input channels per image channel), gradcheck, 2D only', function()
  -- conv weight grows from IN_CHANS*P*P to 5*IN_CHANS*P*P per output channel: + 4 * 2 * 16 * 16 = 2,048
  T.eq(models.hybrid_vit(tiny({SHIFTED_PATCHES = 2})):num_parameters(),
    models.hybrid_vit(tiny()):num_parameters() + 4 * 2 * 4 * 4 * 16)
  local c = tiny({IMG_SIZE = 8, HIDDEN_SIZE = 8, SHIFTED_PATCHES = 2})
  local m = nn.materialize(models.hybrid_vit(c), 1)
  local names = {}
  for _, p in ipairs(m:parameters()) do names[#names + 1] = p.name end
  T.eq(names[1], 'patch_embed.conv.weight')
  T.eq(m:parameters()[1].param:shape(), {8, 10, 4, 4})
  local rep = nn.gradcheck(m, lunar.empty({2, 2, 8, 8}):normal_(5, 'x', 0, 1), {max_elements = 24})
  T.truthy(rep.ok, rep.message)
  T.raises(function() models.hybrid_vit(tiny({IMG_DIMS = 3, IMG_SIZE = 8, SHIFTED_PATCHES = 2})) end,
    'shifted patches are 2D only')
end)

T.test('STEM_CHANNELS: the stem before the patch embedding, its count by hand, gradcheck, 2D only', function()
  -- stem 3x3 conv IN_CHANS=2 -> c=4: 4*2*9 + 4 = 76; the patch conv then reads 4 channels instead of 2:
  -- + (4 - 2) * 4 * 4 * 16 = 512 weights (width 16, patch 4)
  T.eq(models.hybrid_vit(tiny({STEM_CHANNELS = 4})):num_parameters(),
    models.hybrid_vit(tiny()):num_parameters() + 76 + 512)
  local c = tiny({IMG_SIZE = 8, HIDDEN_SIZE = 8, STEM_CHANNELS = 3})
  local m = nn.materialize(models.hybrid_vit(c), 1)
  local names = {}
  for _, p in ipairs(m:parameters()) do names[#names + 1] = p.name end
  T.eq(table.concat(names, ' ', 1, 4), 'patch_embed.stem.weight patch_embed.stem.bias patch_embed.conv.weight ' ..
    'patch_embed.conv.bias')
  T.eq(m:parameters()[1].param:shape(), {3, 2, 3, 3})
  T.eq(m:parameters()[3].param:shape(), {8, 3, 4, 4})
  local rep = nn.gradcheck(m, lunar.empty({2, 2, 8, 8}):normal_(5, 'x', 0, 1), {max_elements = 24})
  T.truthy(rep.ok, rep.message)
  T.raises(function() models.hybrid_vit(tiny({IMG_DIMS = 3, IMG_SIZE = 8, STEM_CHANNELS = 2})) end,
    'the convolutional stem is 2D only')
end)

T.run()
