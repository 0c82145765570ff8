-- Tests of lunar.data (bindings/ldata.c) through lua/lunar/data.lua: synthetic
-- 2D and 3D datasets, loaders configured from a config, determinism, epochs,
-- resume, sharding, Fashion-MNIST, and the errors for missing data and a
-- config that does not fit the dataset.
--   build/lunar tests/lua/test_data.lua
local T = require('harness')
local config = require('lunar.config')
local data = require('lunar.data')

local FMNIST_DIR = '/usr/share/datasets/fashion-mnist'

local function synth_cfg(over)
  local t = {DATASET = 'synthetic', NUM_SAMPLES = 64, IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2,
             NUM_CLASSES = 5, BATCH_SIZE = 8, SEED = 3}
  for k, v in pairs(over or {}) do t[k] = v end
  return config.from_table(t, 'test_data')
end

-- A fingerprint of each sample of a batch (its pixel sum, exactly).
local function fingerprints(x)
  local out = {}
  for i = 1, x:size(1) do out[i] = string.format('%.17g', x[i]:sum()) end
  return out
end

-- Every batch of the current epoch: {x=, y=} tables (values, not tensors).
local function epoch_batches(ld)
  local out = {}
  while true do
    local x, y = ld:next()
    if not x then break end
    out[#out + 1] = {x = x:totable(), y = y:totable(), fp = fingerprints(x), shape = x:shape()}
  end
  return out
end

T.test('synthetic 2D: dataset shape, batches of the right shapes and dtypes', function()
  local cfg = synth_cfg()
  local train, test = data.datasets(cfg)
  T.eq(train:count(), 64); T.eq(test:count(), 16)
  T.eq(train:shape(), {2, 8, 8}); T.eq(train:channels(), 2); T.eq(train:ndim(), 2)
  T.eq(train:size(1), 8); T.eq(train:size(2), 8)
  T.eq(train:num_classes(), 5)
  T.truthy(tostring(train):find('64 samples', 1, true))
  local ld = data.loader(train, cfg, {train = true})
  T.eq(ld:num_batches(), 8); T.eq(ld:num_samples(), 64); T.eq(ld:batch_size(), 8)
  local x, y = ld:next()
  T.eq(x:shape(), {8, 2, 8, 8}); T.eq(x:dtype(), 'f32')
  T.eq(y:shape(), {8}); T.eq(y:dtype(), 'i32')
  for i = 1, 8 do
    T.truthy(y[i] >= 0 and y[i] < 5, 'label in [0, 5)')
    T.eq(math.type(y[i]), 'integer')
  end
  T.truthy(x:norm() > 0, 'images are not blank')
  -- the rest of the epoch, then nil until the next epoch
  local n = 1
  while ld:next() do n = n + 1 end
  T.eq(n, 8)
  T.eq(ld:next(), nil)
  T.eq(select(2, ld:position()), 8)
end)

T.test('synthetic: labels are i % classes, balanced over an epoch', function()
  local cfg = synth_cfg({NUM_SAMPLES = 60})
  local train = data.datasets(cfg)
  local ld = data.loader(train, cfg, {train = false})   -- no shuffle, keeps the partial batch
  local counts = {}
  local seen = 0
  local batches = epoch_batches(ld)
  T.eq(#batches, 8)
  T.eq(batches[8].shape, {4, 2, 8, 8}, 'a short last batch without drop_last')
  for b, batch in ipairs(batches) do
    for i, label in ipairs(batch.y) do
      T.eq(label, ((b - 1) * 8 + i - 1) % 5, 'in order without shuffle')
      counts[label] = (counts[label] or 0) + 1
      seen = seen + 1
    end
  end
  T.eq(seen, 60)
  T.eq(counts, {[0] = 12, 12, 12, 12, 12})
  -- training loader: drop_last leaves 7 full batches
  T.eq(data.loader(train, cfg, {train = true}):num_batches(), 7)
end)

T.test('synthetic 3D: batches [B, C, D, H, W]', function()
  local cfg = synth_cfg({IMG_DIMS = 3, NUM_SAMPLES = 32})
  local train = data.datasets(cfg)
  T.eq(train:shape(), {2, 8, 8, 8}); T.eq(train:ndim(), 3)
  local ld = data.loader(train, cfg, {train = true})
  local x, y = ld:next()
  T.eq(x:shape(), {8, 2, 8, 8, 8}); T.eq(y:shape(), {8})
  T.eq(ld:num_batches(), 4)
  -- the same as a direct loader over the binding
  local direct = lunar.data.synthetic(32, 2, 3, {8, 8, 8}, 5, 3)
  local dl = lunar.data.loader(direct, {batch_size = 8, shuffle = true, seed = 3, drop_last = true})
  local x2 = dl:next()
  T.eq(x2:totable(), x:totable())
end)

T.test('the same seed gives the same first batch; another seed another one', function()
  local cfg = synth_cfg()
  local a = data.loader(data.datasets(cfg), cfg, {train = true})
  local b = data.loader(data.datasets(cfg), cfg, {train = true})
  local xa, ya = a:next()
  local xb, yb = b:next()
  T.eq(xb:totable(), xa:totable()); T.eq(yb:totable(), ya:totable())
  -- prefetch on or off gives the same batches
  local cfg_np = synth_cfg({PREFETCH = false})
  local c = data.loader(data.datasets(cfg_np), cfg_np, {train = true})
  T.eq(c:next():totable(), xa:totable())
  -- another SEED: another dataset and order
  local cfg2 = synth_cfg({SEED = 4})
  local d = data.loader(data.datasets(cfg2), cfg2, {train = true})
  T.truthy(d:next():sum() ~= xa:sum())
end)

T.test('set_epoch changes the order; the same epoch repeats it', function()
  local cfg = synth_cfg()
  local train = data.datasets(cfg)
  local ld = data.loader(train, cfg, {train = true})
  local e0 = epoch_batches(ld)
  ld:set_epoch(1)
  T.eq({ld:position()}, {1, 0})
  local e1 = epoch_batches(ld)
  T.eq(#e1, #e0)
  local same = 0
  for b = 1, #e0 do if table.concat(e0[b].fp, ',') == table.concat(e1[b].fp, ',') then same = same + 1 end end
  T.eq(same, 0, 'epoch 1 has another order')
  -- each epoch is a permutation of the same samples
  local s0, s1 = {}, {}
  for b = 1, #e0 do
    for _, f in ipairs(e0[b].fp) do s0[#s0 + 1] = f end
    for _, f in ipairs(e1[b].fp) do s1[#s1 + 1] = f end
  end
  table.sort(s0); table.sort(s1)
  T.eq(s1, s0)
  ld:set_epoch(0)
  T.eq(epoch_batches(ld)[1].x, e0[1].x, 'epoch 0 again')
  T.raises(function() ld:set_epoch(-1) end)
end)

T.test('position / seek resumes at the same batch', function()
  local cfg = synth_cfg()
  local train = data.datasets(cfg)
  local ld = data.loader(train, cfg, {train = true})
  ld:set_epoch(2)
  for _ = 1, 3 do ld:next() end
  local e, b = ld:position()
  T.eq(e, 2); T.eq(b, 3)
  local want_x, want_y = ld:next()
  -- a fresh loader moved to the saved position returns the same batch
  local other = data.loader(train, cfg, {train = true})
  other:seek(e, b)
  local got_x, got_y = other:next()
  T.eq(got_x:totable(), want_x:totable()); T.eq(got_y:totable(), want_y:totable())
  T.eq({other:position()}, {2, 4})
  -- seeking back within the same loader works too
  ld:seek(2, 3)
  T.eq(ld:next():totable(), want_x:totable())
  -- the end of the epoch is a valid position; past it is an error
  other:seek(2, other:num_batches())
  T.eq(other:next(), nil)
  T.raises(function() other:seek(2, other:num_batches() + 1) end)
end)

T.test('shards of 2 ranks are disjoint and cover the epoch', function()
  local cfg = synth_cfg()
  local train = data.datasets(cfg)
  local all = {}
  for _, batch in ipairs(epoch_batches(data.loader(train, cfg, {train = false}))) do
    for _, f in ipairs(batch.fp) do all[f] = true end
  end
  local n_all = 0
  for _ in pairs(all) do n_all = n_all + 1 end
  T.eq(n_all, 64, 'fingerprints are unique')
  local owner = {}
  for rank = 0, 1 do
    local ld = data.loader(train, cfg, {train = true, rank = rank, num_shards = 2})
    T.eq(ld:num_samples(), 32); T.eq(ld:num_batches(), 4)
    ld:set_epoch(1)
    for _, batch in ipairs(epoch_batches(ld)) do
      for _, f in ipairs(batch.fp) do
        T.truthy(all[f], 'a sample of the dataset')
        T.eq(owner[f], nil, 'sample seen by two ranks')
        owner[f] = rank
      end
    end
  end
  local covered = 0
  for _ in pairs(owner) do covered = covered + 1 end
  T.eq(covered, 64)
  -- an odd split with drop_last truncates to a multiple of the shards
  local cfg3 = synth_cfg({NUM_SAMPLES = 50, BATCH_SIZE = 4})
  local t3 = data.datasets(cfg3)
  local l3 = data.loader(t3, cfg3, {train = true, rank = 2, num_shards = 3})
  T.eq(l3:num_samples(), 16); T.eq(l3:num_batches(), 4)
  T.raises(function() data.loader(t3, cfg3, {rank = 3, num_shards = 3}) end)
end)

T.test('loader arguments are checked', function()
  local ds = lunar.data.synthetic(16, 2, 2, {4, 4}, 3, 0)
  T.raises(function() lunar.data.loader(ds, {batch_size = 4, mean = {0.5}, std = {0.5}}) end,
    'mean needs 2 values')
  T.raises(function() lunar.data.loader(ds, {batch_size = 4, mean = {0.5, 0.5}}) end, 'give both mean and std')
  T.raises(function() lunar.data.loader(ds, {batch_size = 0}) end)
  -- normalization is (x - mean) / std per channel
  local raw = lunar.data.loader(ds, {batch_size = 4, shuffle = false}):next()
  local norm = lunar.data.loader(ds, {batch_size = 4, shuffle = false, mean = {1, -1}, std = {2, 4}}):next()
  T.near(norm[1][1][1][1], (raw[1][1][1][1] - 1) / 2, 1e-6)
  T.near(norm[2][2][3][4], (raw[2][2][3][4] + 1) / 4, 1e-6)
  T.raises(function() lunar.data.synthetic(4, 1, 4, {2, 2, 2, 2}, 2) end)
end)

-- Fashion-MNIST -----------------------------------------------------------------

local function have_fmnist()
  local f = io.open(FMNIST_DIR .. '/train-images-idx3-ubyte.gz', 'rb')
  if f then f:close() return true end
  return false
end

T.test('Fashion-MNIST with the default config: counts, classes, normalized batches', function()
  if not have_fmnist() then T.skip(FMNIST_DIR .. ' is absent (apt-get install dataset-fashion-mnist)') end
  local cfg = config.load(nil, {})
  T.eq(cfg.DATASET, 'fashion_mnist'); T.eq(cfg.DATA_DIR, FMNIST_DIR)
  local train, test = data.datasets(cfg)
  T.eq(train:count(), 60000); T.eq(test:count(), 10000)
  T.eq(train:num_classes(), 10); T.eq(test:num_classes(), 10)
  T.eq(train:shape(), {1, 28, 28})
  local ld = data.loader(train, cfg, {train = true})
  T.eq(ld:num_batches(), 60000 // cfg.BATCH_SIZE)
  local x, y = ld:next()
  T.eq(x:shape(), {cfg.BATCH_SIZE, 1, 28, 28})
  local n = x:numel()
  local mean = x:sum() / n
  local std = math.sqrt(x:norm() ^ 2 / n - mean * mean)
  T.truthy(mean > -0.5 and mean < 0.5, 'batch mean ' .. mean)
  T.truthy(std > 0.5 and std < 1.5, 'batch std ' .. std)
  -- the normalized background (pixel 0) is -0.286 / 0.353
  T.near(x:min(), -0.2860 / 0.3530, 1e-5)
  T.near(x:max(), (1 - 0.2860) / 0.3530, 1e-5)
  for i = 1, y:numel() do T.truthy(y[i] >= 0 and y[i] <= 9) end
  local tl = data.loader(test, cfg, {train = false})
  T.eq(tl:num_batches(), math.ceil(10000 / cfg.BATCH_SIZE))
end)

T.test('a missing DATA_DIR names the path and the Debian package', function()
  local dir = os.tmpname() .. '.does-not-exist/fmnist'
  local cfg = config.load(nil, {'DATA_DIR=' .. dir})
  local msg = T.raises(function() data.datasets(cfg) end, dir)
  T.truthy(msg:find('dataset-fashion-mnist', 1, true), 'names the package: ' .. msg)
  T.truthy(msg:find('train-images-idx3-ubyte', 1, true), 'names the file: ' .. msg)
  -- the default directory, when absent, also names the package
  if not have_fmnist() then
    T.raises(function() data.datasets(config.load(nil, {})) end, 'dataset-fashion-mnist')
  end
end)

T.test('IN_CHANS=3 with fashion_mnist is an error naming IN_CHANS', function()
  if not have_fmnist() then T.skip(FMNIST_DIR .. ' is absent') end
  local msg = T.raises(function() data.datasets(config.load(nil, {'IN_CHANS=3'})) end, 'IN_CHANS')
  T.truthy(msg:find('IN_CHANS=3', 1, true), msg)
  T.raises(function() data.datasets(config.load(nil, {'IMG_SIZE=32'})) end, 'IMG_SIZE=32')
  T.raises(function() data.datasets(config.load(nil, {'NUM_CLASSES=5'})) end, 'NUM_CLASSES=5')
end)

T.test('IMG_DIMS must be 2 or 3 and match the dataset: a config error naming IMG_DIMS', function()
  for _, bad in ipairs({4, 1, 0, 2.5, 'x'}) do
    local cfg = synth_cfg()
    cfg.IMG_DIMS = bad   -- past the schema, as a hand-built config table can be
    T.raises(function() data.datasets(cfg) end, 'config key IMG_DIMS must be 2 (images) or 3 (volumes), got ' ..
      type(bad) .. ' ' .. tostring(bad))
  end
  -- a plain table without IMG_DIMS: 2D
  local plain = {DATASET = 'synthetic', NUM_SAMPLES = 8, IMG_SIZE = 8, IN_CHANS = 1, NUM_CLASSES = 2, SEED = 1}
  T.eq(data.datasets(plain):ndim(), 2)
  plain.IMG_DIMS = 3.0
  T.eq(data.datasets(plain):ndim(), 3)
  -- the schema refuses it on the command line too, naming the key
  T.raises(function() config.load(nil, {'DATASET=synthetic', 'IMG_DIMS=4'}) end, "'IMG_DIMS' must be one of 2, 3")
  -- a 2D dataset with IMG_DIMS=3
  if have_fmnist() then
    T.raises(function() data.datasets(config.load(nil, {'IMG_DIMS=3'})) end,
      'fashion_mnist has 2D images, but the config says IMG_DIMS=3')
  end
end)

T.test('synthetic data follows IN_CHANS and IMG_SIZE; unknown DATASET is an error', function()
  local cfg = synth_cfg({IN_CHANS = 3, IMG_SIZE = 12})
  local train = data.datasets(cfg)
  T.eq(train:shape(), {3, 12, 12})
  local bad = synth_cfg()
  bad.DATASET = 'imagenet'
  T.raises(function() data.datasets(bad) end, 'unknown DATASET imagenet')
end)

T.run()
