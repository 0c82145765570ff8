-- Tests of the model and recipe configs (configs/models, configs/recipes) and
-- of lua/lunar/cli.lua: NeMo's ViT sizes counted without allocating a model,
-- recipes that resolve and fit their documented world sizes, `config show`,
-- `config keys` and the README's generated config reference.
--   build/lunar tests/lua/test_configs.lua
local T = require('harness')
local config = require('lunar.config')
local schema = require('lunar.schema')
local cli = require('lunar.cli')

local ROOT = lunar.home .. '/'

-- name, width, depth, heads, MLP, patch, parameters with the 1000-class head,
-- published size in millions (NeMo's table; Ti/S: timm's), whether that size
-- counts the head (Zhai et al.'s g/14 and G/14 do not). The exact counts are
-- hand arithmetic, checked with Python: C P^2 D + D (patch embedding) + D
-- (cls) + T D (positions, T = (224 / P)^2 + 1) + depth (4 D + 4 D^2 + 3 D + D
-- + 2 D M + M + D) + 2 D + 1000 D + 1000; timm's and NeMo's published
-- counts agree where they give exact figures (B/16 86,567,656).
local MODELS = {
  {'vit_ti16', 192, 12, 3, 768, 16, 5717416, 6, true},
  {'vit_s16', 384, 12, 6, 1536, 16, 22050664, 22, true},
  {'vit_b16', 768, 12, 12, 3072, 16, 86567656, 86, true},
  {'vit_l16', 1024, 24, 16, 4096, 16, 304326632, 304, true},
  {'vit_h16', 1280, 32, 16, 5120, 16, 632199400, 632, true},
  {'vit_h14', 1280, 32, 16, 5120, 14, 632045800, 632, true},
  {'vit_giant14', 1408, 40, 16, 6144, 14, 1012611432, 1011, false},
  {'vit_gigantic14', 1664, 48, 16, 8192, 14, 1844440680, 1843, false},
}

local function load_model(name, overrides) return config.load(ROOT .. 'configs/models/' .. name .. '.lua', overrides) end
local function load_recipe(name) return config.load(ROOT .. 'configs/recipes/' .. name .. '.lua') end

T.test('model configs: NeMo widths, depths, heads, MLP sizes, patch and image', function()
  for _, m in ipairs(MODELS) do
    local c = load_model(m[1])
    T.eq({c.HIDDEN_SIZE, c.DEPTH, c.NUM_HEADS, c.PATCH_SIZE}, {m[2], m[3], m[4], m[6]}, m[1])
    T.eq({c.IMG_SIZE, c.IN_CHANS, c.NUM_CLASSES, c.IMG_DIMS}, {224, 3, 1000, 2}, m[1])
    T.eq(c.SEQ_LENGTH, (224 // m[6]) ^ 2 + 1, m[1] .. ' tokens')
    T.eq(cli.model_size(c).mlp_hidden, m[5], m[1] .. ' MLP hidden size')
  end
  -- g/14 and G/14 have fractional ratios that give exactly 6144 and 8192
  T.eq(math.type(load_model('vit_giant14').MLP_RATIO), 'float')
  T.eq(load_model('vit_b16').MLP_RATIO, 4)
end)

T.test('no two files differ only by case (case-insensitive file systems: macOS, Windows)', function()
  -- vit_g14.lua and vit_G14.lua collided; they are vit_giant14 and vit_gigantic14 (timm's names)
  local function walk(dir, rel)
    local names = lunar.io.listdir(dir)
    if not names then return end
    local seen = {}
    for _, n in ipairs(names) do
      local low = n:lower()
      T.truthy(not seen[low], string.format('%s%s and %s%s differ only by case', rel, seen[low], rel, n))
      seen[low] = n
      if lunar.io.stat(dir .. '/' .. n) == 'dir' then walk(dir .. '/' .. n, rel .. n .. '/') end
    end
  end
  for _, d in ipairs({'configs', 'lua', 'examples', 'tests', 'bindings', 'core'}) do walk(ROOT .. d, d .. '/') end
  T.truthy(lunar.io.stat(ROOT .. 'configs/models/vit_giant14.lua') == 'file')
  T.truthy(lunar.io.stat(ROOT .. 'configs/models/vit_gigantic14.lua') == 'file')
  T.eq(load_model('vit_giant14').HIDDEN_SIZE, 1408)
  T.eq(load_model('vit_gigantic14').HIDDEN_SIZE, 1664)
end)

T.test('model configs: parameter counts match the published sizes', function()
  for _, m in ipairs(MODELS) do
    local size = cli.model_size(load_model(m[1]))
    T.eq(size.params, m[7], m[1] .. ' parameters')
    T.eq(size.head, m[2] * 1000 + 1000, m[1] .. ' head')
    T.eq(size.backbone, size.params - size.head)
    local counted = m[9] and size.params or size.backbone
    T.truthy(math.abs(counted - m[8] * 1e6) < 1e6,
      string.format('%s: %d within a million of the published %dM', m[1], counted, m[8]))
  end
  -- the published figures of the brief, exactly
  T.eq(cli.model_size(load_model('vit_b16')).params, 86567656)
  T.eq(cli.model_size(load_model('vit_l16')).params, 304326632)
  T.eq(cli.model_size(load_model('vit_h14')).params, 632045800)
  T.eq(math.floor(cli.model_size(load_model('vit_giant14')).backbone / 1e6 + 0.5), 1011)
  T.eq(math.floor(cli.model_size(load_model('vit_gigantic14')).backbone / 1e6 + 0.5), 1843)
end)

T.test('counting parameters allocates no tensor memory', function()
  collectgarbage(); collectgarbage()
  local before = lunar.memory()
  local size = cli.model_size(load_model('vit_gigantic14'))
  local after = lunar.memory()
  T.eq(size.params, 1844440680)
  T.eq(after.num_allocs, before.num_allocs, 'allocations')
  T.eq(after.bytes_in_use, before.bytes_in_use, 'bytes in use')
  T.truthy(after.peak_bytes < 2^20, 'no 7 GB of weights ever')
end)

T.test('recipes: include a model and set the parallel dict and hyperparameters', function()
  local b = load_recipe('vit_b16_synthetic224_tp2_pp2')
  T.eq(cli.model_size(b).params, 86567656, 'the B/16 of configs/models')
  T.eq(b.parallel.pipeline, 2); T.eq(b.parallel.tensor, {mode = '1d', size = 2}); T.eq(b.parallel.data, 0)
  T.eq({b.BATCH_SIZE, b.LEARNING_RATE, b.WEIGHT_DECAY, b.NUM_EPOCHS, b.WARMUP_EPOCHS}, {256, 3e-3, 0.3, 300, 32})
  T.eq({b.NUM_MICRO_BATCHES, b.gradient_accumulation, b.clip_grad_norm, b.DROPOUT}, {8, 2, 1.0, 0.1})
  T.eq(b.BATCH_SIZE * (32 // 4) * b.gradient_accumulation, 4096, 'global batch on 32 ranks')
  local h = load_recipe('vit_h14_synthetic224_tp4_pp4')
  T.eq(cli.model_size(h).params, 632045800)
  T.eq(h.BATCH_SIZE * (64 // 16) * h.gradient_accumulation, 4096, 'global batch on 64 ranks')
  local c = load_recipe('vit_ti4_cifar10_dp')
  T.eq({c.DATASET, c.IMG_SIZE, c.PATCH_SIZE, c.HIDDEN_SIZE, c.DEPTH, c.NUM_HEADS, c.NUM_CLASSES},
    {'cifar10', 32, 4, 192, 12, 3, 10})
  T.eq(c.SEQ_LENGTH, 65)
  local s = load_recipe('vit_b8_image_sizes')
  T.eq({s.PATCH_SIZE, s.DEPTH, s.SWEEP_START, s.SWEEP_STOP, s.SWEEP_STEP, s.BATCH_SIZE}, {8, 16, 64, 256, 64, 1})
end)

T.test('recipes: their layouts fit the world sizes their comments name', function()
  local parallel = require('lunar.parallel')   -- part of Lunar: missing is a failure, not a skip
  local fits = {
    {'vit_b16_synthetic224_tp2_pp2', 32}, {'vit_b16_synthetic224_tp2_pp2', 4}, {'vit_h14_synthetic224_tp4_pp4', 64},
    {'vit_ti4_cifar10_dp', 4}, {'vit_ti4_cifar10_dp', 1}, {'vit_b8_image_sizes', 1},
    {'vit_2d', 4}, {'vit_2d', 64}, {'vit_2p5d', 8}, {'vit_2p5d', 64}, {'vit_3d', 8}, {'vit_3d', 64},
  }
  for _, f in ipairs(fits) do
    T.eq(parallel.grid.validate(load_recipe(f[1]), f[2]), nil, f[1] .. ' on ' .. f[2] .. ' ranks')
  end
  T.truthy(parallel.grid.validate(load_recipe('vit_b16_synthetic224_tp2_pp2'), 6), '6 ranks do not fit 2 x 2')
  T.truthy(parallel.grid.validate(load_recipe('vit_3d'), 12), '12 ranks do not fit 8')
end)

T.test("recipes of Colossal-AI's ViT benchmark in tensor modes 2d, 2.5d and 3d", function()
  local d2, d25, d3 = load_recipe('vit_2d'), load_recipe('vit_2p5d'), load_recipe('vit_3d')
  T.eq(d2.parallel.tensor, {mode = '2d', size = 4})
  T.eq(d25.parallel.tensor, {mode = '2.5d', size = 8, depth = 2})
  T.eq(d3.parallel.tensor, {mode = '3d', size = 8})
  for _, c in ipairs({d2, d25, d3}) do
    T.eq({c.HIDDEN_SIZE, c.DEPTH, c.NUM_HEADS, c.MLP_RATIO, c.IMG_SIZE, c.PATCH_SIZE, c.NUM_CLASSES},
      {4096, 32, 64, 4, 224, 16, 1000})
    T.eq({c.BATCH_SIZE, c.LEARNING_RATE, c.WEIGHT_DECAY, c.NUM_EPOCHS, c.WARMUP_EPOCHS, c.DROPOUT, c.CHECKPOINT},
      {128, 3e-3, 0.3, 300, 32, 0, true})
  end
  -- 6.5B parameters: 16 x 16 x 3 x 4096 + 4096 (patch) + 4096 + 197 x 4096 (cls, pos) + 32 x (4 x 4096 +
  -- 3 x 4096^2 + 3 x 4096 + 4096^2 + 4096 + 2 x 4096 x 16384 + 16384 + 4096) + 2 x 4096 + 4096 x 1000 + 1000
  local D, M = 4096, 16384
  local want = 768 * D + D + D + 197 * D + 32 * (4 * D + 4 * D * D + 4 * D + 2 * D * M + M + D) + 2 * D + 1000 * D + 1000
  T.eq(cli.model_size(d2).params, want)
  -- config show: 16 B per parameter over the ranks that split the weights (2.5d: size / depth)
  T.truthy(cli.config_show(ROOT .. 'configs/recipes/vit_2d.lua'):find('24.0 GiB per rank over pipeline 1 x tensor 4',
    1, true), '2d: 96.1 GiB / 4')
  T.truthy(cli.config_show(ROOT .. 'configs/recipes/vit_2p5d.lua'):find(
    '24.0 GiB per rank over pipeline 1 x tensor 8 (weights over 4: depth copies)', 1, true), '2.5d: 96.1 GiB / 4')
  T.truthy(cli.config_show(ROOT .. 'configs/recipes/vit_3d.lua'):find('12.0 GiB per rank over pipeline 1 x tensor 8',
    1, true), '3d: 96.1 GiB / 8')
end)

T.test('recipes that read ImageNet and the 384 fine-tuning recipe', function()
  local parallel = require('lunar.parallel')
  local z = load_recipe('vit_b16_imagenet_zip_tp2_pp2')
  T.eq({z.DATASET, z.IMG_SIZE, z.NUM_CLASSES, z.IN_CHANS}, {'imagenet_zip', 224, 1000, 3})
  T.eq(cli.model_size(z).params, 86567656, 'the B/16 of configs/models')
  T.eq(z.BATCH_SIZE * (32 // 4) * z.gradient_accumulation, 4096, 'global batch on 32 ranks')
  local f = load_recipe('vit_b16_imagenet_folder_dp')
  T.eq({f.DATASET, f.IMG_SIZE, f.NUM_CLASSES, f.OPTIMIZER}, {'image_folder', 224, 1000, 'adamw'})
  T.eq(f.BATCH_SIZE * 32 * f.gradient_accumulation, 4096, 'global batch on 32 ranks')
  local t = load_recipe('vit_b16_finetune384_sgd')
  T.eq({t.IMG_SIZE, t.SEQ_LENGTH, t.OPTIMIZER, t.MOMENTUM, t.WEIGHT_DECAY}, {384, 577, 'sgd', 0.9, 0.0})
  T.truthy(t.PRETRAINED ~= '', 'PRETRAINED set')
  -- B/16 at 384: the 224 count plus (577 - 197) positions of width 768 (hand arithmetic)
  T.eq(cli.model_size(t).params, 86567656 + (577 - 197) * 768)
  T.eq(t.BATCH_SIZE * 32 * t.gradient_accumulation, 512, 'global batch on 32 ranks')
  for _, r in ipairs({{z, 32}, {z, 4}, {f, 32}, {f, 1}, {t, 32}, {t, 1}}) do
    T.eq(parallel.grid.validate(r[1], r[2]), nil, r[1].DATASET .. ' on ' .. r[2] .. ' ranks')
  end
end)

T.test('config show: the resolved config, the counts, and a file that loads back', function()
  local text = cli.config_show(ROOT .. 'configs/models/vit_giant14.lua', {'NUM_CLASSES=10'})
  T.truthy(text:find('-- parameters: 1,011,216,522 (1011.2M); without the classification head: 1,011,202,432 (1011.2M)',
    1, true), text)
  T.truthy(text:find('MLP 6144', 1, true))
  T.truthy(text:find('NUM_CLASSES = 10,', 1, true))
  T.truthy(text:find('MLP_RATIO = 4.363636363636363', 1, true), 'the fractional ratio, exactly')
  local path = os.tmpname()
  local f = assert(io.open(path, 'w')); f:write(text); f:close()
  local back = config.load(path)
  os.remove(path)
  T.eq(back, config.load(ROOT .. 'configs/models/vit_giant14.lua', {'NUM_CLASSES=10'}))
  T.eq(cli.model_size(back).mlp_hidden, 6144)
  T.raises(function() cli.config_show(ROOT .. 'configs/models/vit_b16.lua', {'DEPTH=1', 'DEPTH=2'}) end,
    "key 'DEPTH' given twice on the command line")
end)

T.test('config subcommands: argument parsing and usage errors', function()
  local function usage_err(args)
    local ok, e = pcall(cli.config, args)
    T.falsy(ok, table.concat(args, ' '))
    T.truthy(type(e) == 'table' and e.usage, 'a usage error: ' .. tostring(e))
    return tostring(e)
  end
  T.truthy(usage_err({}):find('missing subcommand', 1, true))
  T.truthy(usage_err({'shwo'}):find("did you mean 'show'", 1, true))
  T.truthy(usage_err({'show'}):find('missing FILE', 1, true))
  T.truthy(usage_err({'show', 'a.lua', 'b.lua'}):find("one FILE expected", 1, true))
  T.truthy(usage_err({'show', 'a.lua', '--x'}):find("unknown option '--x'", 1, true))
  T.truthy(usage_err({'keys', '--nope'}):find("unknown argument '--nope'", 1, true))
  T.truthy(cli.config({'help'}):find('lunar config show', 1, true))
  T.truthy(cli.config({'show', ROOT .. 'configs/models/vit_b16.lua', 'DEPTH=1'}):find('depth 1,', 1, true))
  T.eq(cli.thousands(1844440680), '1,844,440,680'); T.eq(cli.thousands(12), '12'); T.eq(cli.thousands(-1234), '-1,234')
end)

T.test('config keys and the markdown reference: every key, with type, default and doc', function()
  local keys = schema.keys()
  local plain = cli.config_keys()
  local md = cli.markdown_reference()
  local rows = 0
  for _ in md:gmatch('\n| `') do rows = rows + 1 end
  T.eq(rows, #keys)
  for _, e in ipairs(keys) do
    T.truthy(plain:find(e.key, 1, true), e.key)
    T.truthy(md:find('| `' .. e.key .. '` |', 1, true), e.key)
  end
  T.truthy(md:find('| `SWEEP_START` | integer | `32` | image-size benchmark: first image side', 1, true))
  T.truthy(md:find('| `parallel.pipeline_split` | list of integers | (unset) |', 1, true))
  T.truthy(md:find("(one of \"adamw\", \"sgd\")", 1, true), 'enums listed')
  for _, k in ipairs{'SWEEP_START', 'SWEEP_STOP', 'SWEEP_STEP', 'BENCH_STEPS', 'BENCH_WARMUP', 'BENCH_CSV'} do
    local e = schema.get(k)
    T.truthy(e and #e.doc > 0, k)
  end
end)

T.test("README's config reference is the generated one", function()
  local f = assert(io.open(ROOT .. 'README.md', 'rb'))
  local text = f:read('a'); f:close()
  local _, section = cli.split_readme(text, 'README.md')
  T.truthy(section == cli.readme_section(), 'README.md is out of date: run build/lunar config keys --update-readme')
  T.raises(function() cli.split_readme('no markers', 'X.md') end, 'X.md: no config reference section')
end)

T.run()
