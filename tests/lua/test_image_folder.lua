--- Image-folder datasets (DATASET = 'image_folder'; core/data/image_folder.c)
-- through the loader: what does not need an independent decoder. The folders
-- are Fashion-MNIST images written as PNG/JPEG by tests/golden/image_folder_check.py
-- (Debian's python3-pil; every test is skipped, and counted, where it is
-- missing). Pixels against PIL and crops against torchvision are
-- tests/fail/test_image_folder.sh's.
--   - the thread count and prefetch change no bit; a rank's shard is exactly
--     the samples of the single-rank epoch at its positions (augmentation keyed
--     by (seed, epoch, image index), not by the layout); seek resumes bitwise
--   - normalization with ImageNet's defaults: x = (u8 / 255 - mean) / std
--   - bad files: counted once each, replaced by the next good file WITH its
--     label; BAD_IMAGE = 'error' stops at the first, naming the file
--   - errors name the directory: missing, no class, a class without images
--   build/lunar tests/lua/test_image_folder.lua
local T = require('harness')
local data = require('lunar.data')
local config = require('lunar.config')

local TMP = os.getenv('TMPDIR') or '/tmp'
local ROOT = string.format('%s/lunar_test_image_folder.%d', TMP, lunar.io.getpid())
local PY = os.getenv('PYTHON') or '/usr/bin/python3'
local FMNIST = '/usr/share/datasets/fashion-mnist'

-- a resolved config from key = value pairs (as overrides on the command line)
local function cfg_of(t)
  local o = {}
  for k, v in pairs(t) do o[#o + 1] = k .. '=' .. tostring(v) end
  return config.load(nil, o)
end

local made, why
local function folders()
  if made == nil then
    lunar.io.mkdir(ROOT)
    local cmd = string.format("'%s' tests/golden/image_folder_check.py make '%s' '%s' 60 2>&1", PY, ROOT, FMNIST)
    local p = io.popen(cmd)
    local out = p:read('a')
    made = p:close() == true
    why = out:match('[^\n]*\n?$')
  end
  if not made then T.skip('cannot write the test images with ' .. PY .. ' (python3-pil, numpy): ' .. tostring(why)) end
  return ROOT
end

-- The rest of the current epoch's batches, as values: {x = table, y = table}.
local function batches(ld)
  local _, at = ld:position()
  local out = {}
  for b = at + 1, ld:num_batches() do
    local x, y = ld:next()
    out[b - at] = {x = x:totable(), y = y:totable()}
  end
  T.eq(ld:next(), nil)
  return out
end

local function folder_ds(dir, train, over)
  local o = {img_size = 24, train = train}
  for k, v in pairs(over or {}) do o[k] = v end
  return lunar.data.image_folder(dir, o)
end

T.test('threads and prefetch change no bit; shards are the single-rank epoch at their positions', function()
  local ds = folder_ds(folders() .. '/jpg/train', true)
  T.eq(ds:count(), 60)
  local function run(threads, prefetch, rank, shards, bs)
    local ld = lunar.data.loader(ds, {batch_size = bs or 8, seed = 5, shuffle = true, drop_last = false, threads = threads,
      prefetch = prefetch, rank = rank or 0, num_shards = shards or 1, mean = {0.485, 0.456, 0.406},
      std = {0.229, 0.224, 0.225}})
    ld:set_epoch(2)
    return batches(ld)
  end
  local ref = run(1, false)
  T.eq(#ref, 8)   -- ceil(60 / 8)
  T.eq(run(3, true), ref)
  T.eq(run(2, 3), ref)   -- 3 batches prepared ahead
  T.eq(run(2, false), ref)
  -- one sample per batch: the single-rank epoch's order, position by position
  local single = run(1, false, 0, 1, 1)
  for rank = 0, 1 do
    local shard = run(2, true, rank, 2, 1)
    T.eq(#shard, 30)
    for k = 1, #shard do T.eq(shard[k], single[rank + 2 * (k - 1) + 1], 'rank ' .. rank .. ' sample ' .. k) end
  end
  -- another epoch draws other crops
  local ld = lunar.data.loader(ds, {batch_size = 8, seed = 5, threads = 2})
  ld:set_epoch(3)
  local e3 = batches(ld)
  local same = true
  for b = 1, #e3 do if not pcall(T.eq, e3[b].x, ref[b].x) then same = false end end
  T.falsy(same, 'epoch 3 equals epoch 2')
end)

T.test('seek resumes bitwise mid-epoch, also with batches prepared ahead', function()
  local ds = folder_ds(folders() .. '/png/train', true)
  local function loader(prefetch)
    return lunar.data.loader(ds, {batch_size = 8, seed = 9, threads = 2, drop_last = true, prefetch = prefetch})
  end
  local a = loader(false)
  a:set_epoch(1)
  local all = batches(a)
  T.eq(#all, 7)
  for _, prefetch in ipairs({false, 1, 4}) do
    local b = loader(prefetch)
    local x = b:next()   -- epoch 0 batch 0: the worker runs ahead into epoch 0
    b:seek(1, 3)
    local rest = batches(b)
    T.eq(#rest, #all - 3)
    for k = 1, #rest do T.eq(rest[k], all[k + 3]) end
    b:seek(1, 1)         -- backwards, over slots the worker filled for (1, 3..)
    x = b:next()
    T.eq(x:totable(), all[2].x)
  end
end)

T.test('normalization: (u8 / 255 - mean) / std with the config default (ImageNet)', function()
  local cfg = cfg_of({DATASET = 'image_folder', DATA_DIR = folders() .. '/png', IMG_SIZE = 28,
    PATCH_SIZE = 7, IN_CHANS = 3, NUM_CLASSES = 10, DATA_THREADS = 2, BATCH_SIZE = 5})
  local train, val = data.datasets(cfg)
  T.eq({train:count(), val:count(), train:num_classes()}, {60, 30, 10})
  T.eq(val:class_name(1), '0_tshirt')
  local ld = data.loader(val, cfg, {train = false})
  local x, y = ld:next()
  local mean, std = {0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}
  for s = 0, 1 do
    local img, label = val:sample(s, 0, cfg.SEED)
    T.eq(y:totable()[s + 1], label)
    local u, xv = img:totable(), x[s + 1]:totable()
    for c = 1, 3 do
      for _, p in ipairs({{1, 1}, {14, 9}, {28, 28}, {10, 20}}) do
        local want = (u[c][p[1]][p[2]] / 255 - mean[c]) / std[c]
        T.near(xv[c][p[1]][p[2]], want, 1e-6, 1e-6)
      end
    end
  end
end)

T.test('bad images: counted once, replaced by the next good file with its own label', function()
  local dir = folders() .. '/bad/train'
  local ds = folder_ds(dir, false)
  T.eq(ds:count(), 9)
  -- index: 0 a/g00 1 a/g00x_corrupt 2 a/g02 3 a/g04 4 b/g01 5 b/g01x_truncated 6 b/g03 7 b/g05 8 b/g05x_text
  T.truthy(ds:file(1):find('g00x_corrupt.jpg', 1, true))
  local ld = lunar.data.loader(ds, {batch_size = 9, shuffle = false, threads = 2})
  local x, y = ld:next()
  T.eq(y:totable(), {0, 0, 0, 0, 1, 1, 1, 1, 0})   -- 1 -> a/g02 (a), 5 -> b/g03 (b), 8 wraps to a/g00 (a)
  T.eq(ds:bad_images(), 3)
  T.eq(x[2]:totable(), x[3]:totable())
  T.eq(x[6]:totable(), x[7]:totable())
  T.eq(x[9]:totable(), x[1]:totable())
  ld:set_epoch(1)
  ld:next()
  T.eq(ds:bad_images(), 3)   -- each file counted once
end)

T.test('bad images with on_bad_image = error: the loader raises, naming the file', function()
  local dir = folders() .. '/bad/train'
  local strict = folder_ds(dir, false, {on_bad_image = 'error'})
  for _, prefetch in ipairs({false, true}) do
    local ld = lunar.data.loader(strict, {batch_size = 4, shuffle = false, threads = 2, prefetch = prefetch})
    T.raises(function() ld:next() end, 'g00x_corrupt.jpg')
    T.eq({ld:position()}, {0, 0})
    ld:seek(0, 1)   -- samples 4..7: b/g01, b/g01x_truncated ...
    T.raises(function() ld:next() end, 'g01x_truncated.jpg: JPEG')
  end
  local _, err = pcall(function() strict:sample(8, 0, 0) end)
  T.truthy(tostring(err):find('g05x_text.png: not a JPEG or PNG', 1, true), tostring(err))
end)

T.test("imagenet_zip: Galvatron's train.zip + train_map.txt give the folder's samples bit for bit", function()
  local root = folders()
  local cfg = cfg_of({DATASET = 'imagenet_zip', DATA_DIR = root .. '/zip', IMG_SIZE = 28, PATCH_SIZE = 7, IN_CHANS = 3,
    BATCH_SIZE = 16, DATA_THREADS = 2})
  local ztrain, zval = data.datasets(cfg)
  local ftrain, fval = data.image_folder(root .. '/png/train', cfg, true), data.image_folder(root .. '/png/val', cfg, false)
  T.eq({ztrain:count(), zval:count(), ztrain:num_classes()}, {60, 30, 10})   -- the directory and the unlisted member left out
  T.truthy(ztrain:file(0):find('train.zip@/0_tshirt/', 1, true), ztrain:file(0))
  for _, pair in ipairs({{ztrain, ftrain}, {zval, fval}}) do
    for i = 0, pair[1]:count() - 1, 7 do
      local a, la = pair[1]:sample(i, 3, 5)
      local b, lb = pair[2]:sample(i, 3, 5)
      T.eq(la, lb)
      T.eq(a:totable(), b:totable())
    end
  end
  local ld = data.loader(ztrain, cfg, {train = true})
  T.eq(#batches(ld), 3)   -- 60 // 16, the last partial batch dropped
  -- errors name the file and the line
  local bad = ROOT .. '/badmap.txt'
  local f = assert(io.open(bad, 'w'))
  f:write('train.zip@/0_tshirt/00019.png\t0\n\nno tab here\n')
  f:close()
  T.raises(function() lunar.data.image_zip(root .. '/zip/train.zip', bad, {img_size = 8}) end,
    "badmap.txt line 3: expected '<archive>@/<member path><TAB><label >= 0>', got 'no tab here'")
  T.raises(function() lunar.data.image_zip(root .. '/zip/none.zip', root .. '/zip/train_map.txt', {img_size = 8}) end,
    'cannot open the zip archive .*none.zip')
  T.raises(function() lunar.data.image_zip(root .. '/zip/train_map.txt', root .. '/zip/train_map.txt', {img_size = 8}) end,
    'cannot open the zip archive .*train_map.txt: Not a zip archive')
end)

T.test('errors name the directory: missing, no classes, a class without images, bad options', function()
  T.raises(function() lunar.data.image_folder(ROOT .. '/nope', {img_size = 8}) end,
    'cannot open directory .*/nope: No such file')
  lunar.io.mkdir(ROOT .. '/empty/x')
  T.raises(function() lunar.data.image_folder(ROOT .. '/empty/x', {img_size = 8}) end, 'has no class directories')
  T.raises(function() lunar.data.image_folder(ROOT .. '/empty', {img_size = 8}) end,
    'class directory .*/empty/x has no image file')
  T.raises(function() lunar.data.image_folder(ROOT, {img_size = 0}) end, 'img_size 0')
  T.raises(function() lunar.data.image_folder(ROOT, {img_size = 8, scale = {0.5, 0.1}}) end, 'scale')
  T.raises(function() lunar.data.image_folder(ROOT, {img_size = 8, crop_pct = 1.5}) end, 'crop_pct')
  local cfg = cfg_of({DATASET = 'image_folder', DATA_DIR = ROOT .. '/nope', IMG_SIZE = 28, PATCH_SIZE = 7,
    IN_CHANS = 3})
  T.raises(function() data.datasets(cfg) end, 'nope/train')
  local cfg1 = cfg_of({DATASET = 'image_folder', DATA_DIR = folders() .. '/png', IMG_SIZE = 28,
    PATCH_SIZE = 7, IN_CHANS = 1})
  T.raises(function() data.datasets(cfg1) end, '3 channels, but the config says IMG_SIZE=28, IN_CHANS=1')
end)

local _, failed = T.run({exit = false})
lunar.io.remove_tree(ROOT)
os.exit(failed == 0 and 0 or 1)
