--- lunar.data: datasets by name, and loaders configured from a config.
--
--   train_ds, test_ds = data.datasets(cfg)      by cfg.DATASET
--   loader = data.loader(ds, cfg, {train=true, rank=, num_shards=})
--
-- Datasets: 'fashion_mnist' (IDX files of Debian's dataset-fashion-mnist in
-- cfg.DATA_DIR), 'cifar10' (binary batches in cfg.DATA_DIR), 'synthetic'
-- (cfg.NUM_SAMPLES learnable 2D or 3D images of IMG_SIZE, IN_CHANS channels),
-- 'image_folder' (torchvision's ImageFolder layout: cfg.DATA_DIR/train/<class>/
-- and cfg.DATA_DIR/val/<class>/ of .jpg/.jpeg/.png files, decoded in C on
-- cfg.DATA_THREADS threads; train: RandomResizedCrop(IMG_SIZE) + horizontal
-- flip, val: Resize(IMG_SIZE / CROP_PCT) + CenterCrop(IMG_SIZE); a bad file
-- per cfg.BAD_IMAGE; see lunar_dataset_image_folder in core/include/lunar/data.h),
-- 'imagenet_zip' (Galvatron's: cfg.DATA_DIR/train.zip + train_map.txt and
-- val.zip + val_map.txt, read from the archives; as 'image_folder' otherwise).
-- A missing or unreadable data file and a config that does not fit the data
-- are user errors (lunar.error: the host prints the message, no traceback).
local C = lunar.data

local data = {}

-- Per-channel mean and std of the training sets (torchvision's Normalize).
data.stats = {
  fashion_mnist = {mean = {0.2860}, std = {0.3530}},
  cifar10 = {mean = {0.4914, 0.4822, 0.4465}, std = {0.2470, 0.2435, 0.2616}},
  image_folder = {mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}},   -- ImageNet's (timm)
  imagenet_zip = {mean = {0.485, 0.456, 0.406}, std = {0.229, 0.224, 0.225}},
}

--- The normalized value of a black (0) pixel per channel, -mean / std of
-- cfg's normalization (DATA_MEAN / DATA_STD, else the dataset's; {0} for a
-- dataset without one): what the training crop's zero padding becomes, and
-- what evaluation's shifts (EVAL_SHIFT) fill the uncovered border with.
function data.black_pixel(cfg)
  local st = data.stats[cfg.DATASET] or {}
  local mean, std = cfg.DATA_MEAN or st.mean, cfg.DATA_STD or st.std
  if not mean or not std then return {0} end
  local v = {}
  for c = 1, #mean do v[c] = -mean[c] / (std[c] or std[1]) end
  return v
end

local function join(dir, name) return (dir:sub(-1) == '/' and dir or dir .. '/') .. name end

-- Reads a data file: a failure (a missing or corrupt file, named in the
-- message) is the user's input, raised as a user error (lunar.error: printed
-- without a traceback).
local function user_input(read, ...)
  local ok, res = pcall(read, ...)
  if not ok then lunar.error(tostring(res)) end
  return res
end

--- An image folder split (dir/<class>/<image>) as a dataset of IMG_SIZE x
-- IMG_SIZE RGB samples; train: the augmented training transform, else the
-- evaluation one. Errors (a missing directory, a class without images) name
-- the path.
local function image_opts(cfg, train)
  return {img_size = cfg.IMG_SIZE, train = train, crop_pct = cfg.CROP_PCT or 0.875,
    on_bad_image = cfg.BAD_IMAGE or 'skip', scale = cfg.AUG_SCALE, hflip = cfg.AUG_HFLIP}
end

function data.image_folder(dir, cfg, train)
  return user_input(C.image_folder, dir, image_opts(cfg, train))
end

--- A split of Galvatron's zipped ImageNet: dir/<split>.zip read through the
-- map dir/<split>_map.txt ('<split>.zip@/<member><TAB><label>' lines); as
-- data.image_folder otherwise. Errors name the file (and the map's line).
function data.image_zip(dir, split, cfg, train)
  return user_input(C.image_zip, join(dir, split .. '.zip'), join(dir, split .. '_map.txt'), image_opts(cfg, train))
end

--- The Fashion-MNIST split ('train' or 't10k') from dir.
-- Errors name the missing file and the Debian package that ships it.
function data.fashion_mnist(dir, split)
  local ok, ds = pcall(C.load_idx, join(dir, split .. '-images-idx3-ubyte.gz'),
    join(dir, split .. '-labels-idx1-ubyte.gz'))
  if ok then return ds end
  local msg = tostring(ds)
  if not msg:find('dataset-fashion-mnist', 1, true) then
    msg = msg .. ' (Fashion-MNIST is provided by the Debian package dataset-fashion-mnist, installed in ' ..
      '/usr/share/datasets/fashion-mnist; set DATA_DIR to where the IDX files are)'
  end
  lunar.error(msg)
end

--- Train and test datasets named by cfg.DATASET; checks they match the model's
-- IMG_DIMS (2 or 3; nil is 2), IMG_SIZE, IN_CHANS and NUM_CLASSES. With a
-- domain context (lunar.parallel.domain), synthetic datasets are generated as
-- this rank's slab only (the same pixels as those rows of the whole images);
-- the third result says whether the datasets hold slabs (else the caller
-- cuts each batch: parallel.domain_loader).
function data.datasets(cfg, domain)
  -- IMG_DIMS: the spatial dimensions the model expects (a plain table may leave it out: 2)
  local dims = cfg.IMG_DIMS
  if dims == nil then dims = 2 end
  if type(dims) == 'number' then dims = math.tointeger(dims) or dims end   -- 3.0 is 3
  if dims ~= 2 and dims ~= 3 then
    lunar.error(string.format('data: config key IMG_DIMS must be 2 (images) or 3 (volumes), got %s %s', type(cfg.IMG_DIMS),
      tostring(cfg.IMG_DIMS)))
  end
  local train, test
  if cfg.DATASET == 'fashion_mnist' then
    train, test = data.fashion_mnist(cfg.DATA_DIR, 'train'), data.fashion_mnist(cfg.DATA_DIR, 't10k')
  elseif cfg.DATASET == 'cifar10' then
    local files = {}
    for i = 1, 5 do files[i] = join(cfg.DATA_DIR, 'data_batch_' .. i .. '.bin') end
    train, test = user_input(C.load_cifar10, files), user_input(C.load_cifar10, {join(cfg.DATA_DIR, 'test_batch.bin')})
  elseif cfg.DATASET == 'image_folder' then
    train, test = data.image_folder(join(cfg.DATA_DIR, 'train'), cfg, true),
      data.image_folder(join(cfg.DATA_DIR, 'val'), cfg, false)
  elseif cfg.DATASET == 'imagenet_zip' then
    train, test = data.image_zip(cfg.DATA_DIR, 'train', cfg, true), data.image_zip(cfg.DATA_DIR, 'val', cfg, false)
  elseif cfg.DATASET == 'synthetic' then
    local size = {}
    for i = 1, dims do size[i] = cfg.IMG_SIZE end
    local slab = domain and {domain.pixel_row0, domain.pixel_rows} or nil
    train = C.synthetic(cfg.NUM_SAMPLES, cfg.IN_CHANS, dims, size, cfg.NUM_CLASSES, cfg.SEED, slab)
    test = C.synthetic(math.max(cfg.NUM_SAMPLES // 4, cfg.NUM_CLASSES), cfg.IN_CHANS, dims, size,
      cfg.NUM_CLASSES, cfg.SEED + 1, slab)
  else
    lunar.error('data: unknown DATASET ' .. tostring(cfg.DATASET))
  end
  if train:ndim() ~= dims then
    lunar.error(string.format('data: %s has %dD images, but the config says IMG_DIMS=%d (%s)', cfg.DATASET, train:ndim(),
      dims, train:ndim() == 2 and 'set IMG_DIMS=2, or use DATASET=synthetic for volumes' or 'set IMG_DIMS=' ..
      train:ndim()))
  end
  local shape = train:shape()
  local slabbed = domain ~= nil and cfg.DATASET == 'synthetic'
  if slabbed then shape[2] = cfg.IMG_SIZE end      -- a slab of rows of images generated at IMG_SIZE
  if shape[1] ~= cfg.IN_CHANS or shape[2] ~= cfg.IMG_SIZE then
    lunar.error(string.format('data: %s images are %d x %d with %d channels, but the config says IMG_SIZE=%d, IN_CHANS=%d',
      cfg.DATASET, shape[2], shape[3] or shape[2], shape[1], cfg.IMG_SIZE, cfg.IN_CHANS))
  end
  if train:num_classes() > cfg.NUM_CLASSES then
    lunar.error(string.format('data: %s has %d classes but NUM_CLASSES=%d', cfg.DATASET, train:num_classes(),
      cfg.NUM_CLASSES))
  end
  return train, test, slabbed
end

--- A loader over ds configured from cfg: BATCH_SIZE, SEED, PREFETCH, device
-- and the dataset's normalization; opts.train shuffles and drops the last
-- partial batch; opts.rank / opts.num_shards shard by data-parallel rank;
-- opts.device (default cfg.device, else 'cpu') is where its batches land: on
-- 'cuda' / 'cuda:N' each batch goes through the loader's page-locked host
-- buffer to that device. cfg.DATA_MEAN / cfg.DATA_STD replace the dataset's
-- normalization; cfg.DATA_THREADS decode threads (image datasets); with
-- cfg.PREFETCH a thread prepares cfg.PREFETCH_BATCHES batches ahead. A train
-- loader of an in-memory dataset augments with cfg.AUG_CROP_PADDING (RandomCrop
-- with that zero padding) and cfg.AUG_HFLIP (flip probability), keyed by Philox
-- (lunar_loader_set_augment).
function data.loader(ds, cfg, opts)
  opts = opts or {}
  local train_aug = opts.train ~= false and cfg.DATASET ~= 'image_folder' and cfg.DATASET ~= 'imagenet_zip'
  local st = data.stats[cfg.DATASET] or {}
  return C.loader(ds, {
    batch_size = opts.batch_size or cfg.BATCH_SIZE, shuffle = opts.train ~= false,
    seed = cfg.SEED, drop_last = opts.train ~= false, rank = opts.rank or 0,
    num_shards = opts.num_shards or 1, mean = cfg.DATA_MEAN or st.mean, std = cfg.DATA_STD or st.std,
    prefetch = cfg.PREFETCH ~= false and (cfg.PREFETCH_BATCHES or 1) or 0, device = opts.device or cfg.device or 'cpu', threads = cfg.DATA_THREADS or 1,
    -- training augmentation of the in-memory datasets (the image datasets augment their own samples)
    crop_padding = train_aug and cfg.AUG_CROP_PADDING or 0, hflip = train_aug and cfg.AUG_HFLIP or 0,
  })
end

return data
