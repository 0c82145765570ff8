-- Tests of lua/lunar/checkpoint.lua and lua/lunar/timm.lua:
--   - resume is bitwise identical to never stopping (a tiny ViT on synthetic
--     data with DROPOUT = 0.1: N steps straight against k steps, save, a fresh
--     model, optimizer and loader, load, N - k steps): losses and final
--     parameters; also across an epoch boundary, in the middle of a gradient
--     accumulation cycle, and with SGD momentum
--   - RESUME = 'auto' picks the newest complete checkpoint and ignores .tmp
--     directories; an interrupted save leaves the last complete one in place;
--     KEEP_CHECKPOINTS; SAVE_EVERY through maybe_save
--   - corrupt checkpoints (truncated shard, a header that is not JSON, offsets
--     past the end, a tensor with the wrong shape or dtype, a missing tensor,
--     a missing file or index.json, an index that is not JSON, a model that
--     differs from the config) are refused with a message naming the file and
--     the tensor, and the state in memory is unchanged (checksums)
--   - resharding: tensor- and pipeline-parallel shards saved by simulated
--     ranks (coroutines standing in for MPI ranks) load into one rank and into
--     another layout
--   - lunar.timm: export -> load_pretrained round trip, a head of another class
--     count is skipped, a pos_embed of another grid size is refused, a file
--     with timm's names written by a helper loads (no timm needed)
--   build/lunar tests/lua/test_checkpoint.lua
local T = require('harness')
local nn = require('lunar.nn')
local optim = require('lunar.optim')
local schedule = require('lunar.schedule')
local engine_mod = require('lunar.engine')
local config = require('lunar.config')
local data = require('lunar.data')
local models = require('lunar.models')
local checkpoint = require('lunar.checkpoint')
local timm = require('lunar.timm')
local json = require('lunar.json')

local TMP = os.getenv('TMPDIR') or '/tmp'
local ROOT = string.format('%s/lunar_test_checkpoint.%d', TMP, lunar.io.getpid())
lunar.io.mkdir(ROOT)
local ndirs = 0
local function tmpdir()
  ndirs = ndirs + 1
  local d = ROOT .. '/d' .. ndirs
  lunar.io.mkdir(d)
  return d
end

local BASE = {DATASET = 'synthetic', NUM_SAMPLES = 40, IMG_SIZE = 8, PATCH_SIZE = 4, IN_CHANS = 2, NUM_CLASSES = 4,
  BATCH_SIZE = 8, SEED = 3, HIDDEN_SIZE = 16, NUM_HEADS = 2, DEPTH = 2, DROPOUT = 0.1, NUM_EPOCHS = 3,
  LEARNING_RATE = 1e-2, WARMUP_EPOCHS = 0.5, clip_grad_norm = 1.0, METRICS_FILE = ''}

local function make_cfg(over)
  local t = {}
  for k, v in pairs(BASE) do t[k] = v end
  for k, v in pairs(over or {}) do t[k] = v end
  return config.from_table(t, 'test_checkpoint')
end

--- A fresh run: model (materialized with init_seed, default cfg.SEED),
-- optimizer, schedule, engine and loader at epoch 0.
local function setup(cfg, init_seed)
  local ds = data.datasets(cfg)
  local loader = data.loader(ds, cfg, {train = true})
  loader:set_epoch(0)
  local model = nn.materialize(models.vit(cfg), init_seed or cfg.SEED, {init = cfg.INIT, precision = cfg.precision})
  local opt
  if cfg.OPTIMIZER == 'sgd' then
    opt = optim.SGD(model:parameters(), {lr = cfg.LEARNING_RATE, momentum = cfg.MOMENTUM, weight_decay = cfg.WEIGHT_DECAY})
  else
    opt = optim.AdamW(model:parameters(), {lr = cfg.LEARNING_RATE, betas = {cfg.BETA1, cfg.BETA2}, eps = cfg.EPS,
      weight_decay = cfg.WEIGHT_DECAY})
  end
  local upe = math.max(1, loader:num_batches() // cfg.gradient_accumulation)
  local sched = schedule.warmup_cosine{base_lr = cfg.LEARNING_RATE, min_lr = cfg.MIN_LR,
    warmup_steps = math.floor(cfg.WARMUP_EPOCHS * upe + 0.5), total_steps = upe * cfg.NUM_EPOCHS}
  local eng = engine_mod.initialize{model = model, optimizer = opt, criterion = nn.CrossEntropy{},
    lr_scheduler = sched, clip_grad_norm = cfg.clip_grad_norm, gradient_accumulation = cfg.gradient_accumulation}
  eng:train()
  return {cfg = cfg, model = model, optimizer = opt, lr_scheduler = sched, engine = eng, loader = loader, step = 0}
end

local function state_of(r)
  local e = r.loader:position()
  return {model = r.model, optimizer = r.optimizer, lr_scheduler = r.lr_scheduler, engine = r.engine,
    loader = r.loader, step = r.step, epoch = e, config = r.cfg, rng = {note = 'kept'}}
end

--- Trains r up to step `to` (engine:train_step per batch: a new
-- epoch when the loader is exhausted); returns the losses.
local function train(r, to)
  local losses = {}
  while r.step < to do
    local x, y = r.loader:next()
    if not x then
      r.loader:set_epoch((r.loader:position()) + 1)
      x, y = r.loader:next()
    end
    local loss = r.engine:train_step(x, y)
    x:free(); y:free()
    r.step = r.step + 1
    losses[#losses + 1] = loss
  end
  return losses
end

local function bits_equal(a, b)
  if table.concat(a:shape(), ',') ~= table.concat(b:shape(), ',') then return false end
  local ta, tb = a:contiguous():view(-1):totable(), b:contiguous():view(-1):totable()
  for i = 1, #ta do if ta[i] ~= tb[i] then return false end end
  return true
end

--- Everything load may change, copied.
local function snapshot(r)
  local sd = r.optimizer:state_dict()
  local calls = {}
  r.model:apply(function(m, p) if m.__name == 'Dropout' then calls[p] = m.calls end end)
  local e, b = r.loader:position()
  return {flat = r.model._flat:clone(), grad = r.model._flat_grad:clone(),
    m = sd.exp_avg and sd.exp_avg:clone(), v = sd.exp_avg_sq and sd.exp_avg_sq:clone(),
    mb = sd.momentum_buffer and sd.momentum_buffer:clone(), t = sd.step,
    optimizer_steps = r.engine.optimizer_steps, batches_done = r.engine.batches_done, pos = {e, b}, calls = calls,
    sched = r.lr_scheduler:state_dict()}
end

local function same_snapshot(a, b)
  T.truthy(bits_equal(a.flat, b.flat), 'parameters changed')
  T.truthy(bits_equal(a.grad, b.grad), 'gradients changed')
  if a.m then T.truthy(bits_equal(a.m, b.m) and bits_equal(a.v, b.v), 'AdamW moments changed') end
  if a.mb then T.truthy(bits_equal(a.mb, b.mb), 'momentum changed') end
  T.eq(b.t, a.t, 'optimizer step'); T.eq(b.optimizer_steps, a.optimizer_steps); T.eq(b.batches_done, a.batches_done)
  T.eq(b.pos, a.pos, 'loader position'); T.eq(b.calls, a.calls, 'dropout counters'); T.eq(b.sched, a.sched)
end

--- N straight against k, save, fresh, load, N - k: bitwise.
local function check_resume(over, N, k)
  local cfg = make_cfg(over)
  local a = setup(cfg)
  local straight = train(a, N)
  local b = setup(cfg)
  local first = train(b, k)
  local dir = tmpdir()
  local path = checkpoint.save(dir, state_of(b))
  T.eq(path, dir .. '/step_' .. k)
  -- a fresh process's view: new model (other init), optimizer, loader
  local c = setup(cfg, cfg.SEED + 100)
  local info = checkpoint.load(path, state_of(c))
  T.eq(info.step, k)
  T.eq(info.rng, {note = 'kept'})
  c.step = info.step
  local rest = train(c, N)
  T.eq(#first + #rest, N)
  for i = 1, N do
    local got = i <= k and first[i] or rest[i - k]
    T.truthy(got == straight[i], string.format('loss of step %d: %.9g resumed, %.9g straight', i, got, straight[i]))
  end
  T.truthy(bits_equal(c.model._flat, a.model._flat), 'final parameters differ from the straight run')
  local sa, sc = a.optimizer:state_dict(), c.optimizer:state_dict()
  T.eq(sc.step, sa.step)
  for _, key in ipairs({'exp_avg', 'exp_avg_sq', 'momentum_buffer'}) do
    if sa[key] then T.truthy(bits_equal(sc[key], sa[key]), key .. ' differs from the straight run') end
  end
  return a, c, path
end

T.test('resume is bitwise identical: AdamW, DROPOUT=0.1, clipping, warmup + cosine, mid-epoch', function()
  local a = check_resume({}, 12, 7)
  local calls = 0
  a.model:apply(function(m) if m.__name == 'Dropout' then calls = calls + m.calls end end)
  T.truthy(calls > 0, 'dropout ran')
end)

T.test('resume is bitwise identical at an epoch boundary (5 batches per epoch)', function()
  check_resume({}, 8, 5)
end)

T.test('resume is bitwise identical in the middle of a gradient accumulation cycle', function()
  check_resume({gradient_accumulation = 2}, 10, 3)
end)

T.test('resume is bitwise identical with SGD momentum and no dropout', function()
  check_resume({OPTIMIZER = 'sgd', DROPOUT = 0.0, LEARNING_RATE = 0.05}, 9, 4)
end)

-- index.json holds every number exactly (lunar.json): a rate that needs 17
-- significant digits is written with them, and the schedule restored from it
-- gives every later lr bit for bit
T.test('resume is bitwise with a learning rate of 17 significant digits', function()
  local lr = 1 / 300            -- 0.0033333333333333335
  T.truthy(tonumber(string.format('%.14g', lr)) ~= lr, 'the rate needs more than 14 digits')
  local a, c, path = check_resume({LEARNING_RATE = lr}, 8, 3)
  local f = assert(io.open(path .. '/index.json', 'rb')); local idx = json.decode(f:read('a')); f:close()
  T.truthy(idx.lr_scheduler.base_lr == lr, string.format('index.json base_lr %.17g, the run\'s %.17g',
    idx.lr_scheduler.base_lr, lr))
  T.truthy(idx.config.LEARNING_RATE == lr, 'index.json config.LEARNING_RATE')
  T.truthy(c.lr_scheduler.base_lr == lr, string.format('base_lr %.17g after the load, %.17g before',
    c.lr_scheduler.base_lr, lr))
  for step = 0, 7 do T.truthy(c.lr_scheduler:lr(step) == a.lr_scheduler:lr(step), 'lr of step ' .. step) end
end)

-- 14 significant digits (lua-cjson's most) would change each value below:
-- string.format('%.14g') of 6144/1408 is 4.3636363636364, of 1/300
-- 0.0033333333333333, of 123456789012345678 1.2345678901235e+17
T.test('index.json numbers: integers and floats exact, with their math.type', function()
  local format = require('lunar.checkpoint.format')
  local r = 6144 / 1408         -- ViT-g/14's MLP_RATIO, 4.3636363636363633 (17 digits)
  local lr, seed = 1 / 300, 123456789012345678
  for _, v in ipairs({r, lr, seed}) do
    T.truthy(tonumber(string.format('%.14g', v)) ~= v, string.format('%.17g needs more than 14 digits', v))
  end
  local dir = tmpdir()
  T.truthy(lunar.io.write_file(dir .. '/index.json', format.encode({format = 'lunar-checkpoint', version = 1,
    step = 7, files = {}, tensors = {}, model = {MLP_RATIO = r, HIDDEN_SIZE = 1536}, config = {SEED = seed,
    LEARNING_RATE = lr, WARMUP_RATIO = 2.0}}, 'index.json')))
  local idx = format.read_index(dir)
  T.truthy(idx.model.MLP_RATIO == r, string.format('MLP_RATIO %.17g read back as %.17g', r, idx.model.MLP_RATIO))
  T.truthy(idx.config.LEARNING_RATE == lr, 'LEARNING_RATE')
  T.truthy(idx.config.SEED == seed, string.format('SEED %d read back as %s', seed, tostring(idx.config.SEED)))
  T.eq(math.type(idx.config.SEED), 'integer'); T.eq(math.type(idx.step), 'integer')
  T.eq(math.type(idx.model.HIDDEN_SIZE), 'integer')
  T.eq(math.type(idx.config.WARMUP_RATIO), 'float')   -- 2.0 stays a float
  T.eq(math.type(idx.model.MLP_RATIO), 'float')
end)

-- precision = 'bf16': the checkpoint holds the fp32 master weights; the load
-- refreshes the bf16 working copy from them, as the optimizer would have
T.test('resume under precision = bf16 is bitwise too (the working copy follows the loaded masters)', function()
  local ok, why = lunar.ops.bf16_supported('cpu')
  if not ok then T.skip(why) end
  check_resume({precision = 'bf16'}, 8, 3)
end)

T.test('the checkpoint: files, index.json contents, timm names, optimizer views', function()
  local r = setup(make_cfg())
  train(r, 3)
  local dir = tmpdir()
  local path = checkpoint.save(dir, state_of(r))
  local names = lunar.io.listdir(path)
  T.eq(names, {'config.lua', 'index.json', 'model_rank0.safetensors'})
  local f = io.open(path .. '/index.json'); local idx = json.decode(f:read('a')); f:close()
  T.eq(idx.format, 'lunar-checkpoint'); T.eq(idx.step, 3); T.eq(idx.files, {'model_rank0.safetensors'})
  T.eq(idx.loader.epoch, 0); T.eq(idx.loader.batch, 3); T.eq(idx.optimizer.kind, 'adamw'); T.eq(idx.optimizer.step, 3)
  T.eq(idx.engine.optimizer_steps, 3); T.eq(idx.rng.seed, 3); T.eq(idx.model.HIDDEN_SIZE, 16)
  T.eq(idx.config.HIDDEN_SIZE, 16); T.eq(idx.config.LEARNING_RATE, 1e-2); T.eq(idx.lr_scheduler.base_lr, 1e-2)
  T.truthy(idx.rng.dropout_calls['blocks.0.mlp.drop'] > 0)
  local q = idx.tensors['blocks.1.attn.qkv.weight']
  T.eq(q.shape, {48, 16}); T.eq(q.dtype, 'F32')
  T.eq(q.slices, {{file = 'model_rank0.safetensors', key = 'blocks.1.attn.qkv.weight', shape = {48, 16},
    ranges = {{0, 48}, {0, 16}}, ['local'] = {{0, 48}, {0, 16}}}})
  local tensors = lunar.io.load_safetensors(path .. '/model_rank0.safetensors')
  for _, p in ipairs(r.model:parameters()) do
    T.truthy(bits_equal(tensors[p.name], p.param), p.name)
    T.truthy(idx.tensors['optim.exp_avg.' .. p.name] and idx.tensors['optim.exp_avg_sq.' .. p.name], p.name)
  end
  T.truthy(bits_equal(tensors['optim.exp_avg.head.weight'], r.optimizer.m[#r.optimizer.m - 1]:view(4, 16)))
  T.eq(tensors['patch_embed.proj.weight']:shape(), {16, 2, 4, 4})
  T.eq(tensors['cls_token']:shape(), {1, 1, 16}); T.eq(tensors['pos_embed']:shape(), {1, 5, 16})
  -- config.lua is a config file giving the same config
  local back = config.load(path .. '/config.lua')
  T.eq(back.HIDDEN_SIZE, 16); T.eq(back.DROPOUT, 0.1)
end)

T.test("latest and RESUME='auto': the newest complete checkpoint, never a .tmp one", function()
  local cfg0 = make_cfg()
  local r = setup(cfg0)
  local dir = tmpdir()
  T.eq(checkpoint.latest(dir), nil)
  T.eq(checkpoint.latest(dir .. '/nope'), nil)
  local cfg = make_cfg({CHECKPOINT_DIR = dir, RESUME = 'auto'})
  T.eq(checkpoint.maybe_resume(cfg, state_of(setup(cfg))), nil, 'no checkpoint yet: fresh start')
  train(r, 2); checkpoint.save(dir, state_of(r))
  train(r, 10); checkpoint.save(dir, state_of(r))
  train(r, 11)
  -- newer but incomplete: a .tmp directory with a shard and an index, and a step dir without index.json
  lunar.io.mkdir(dir .. '/step_20.tmp.999')
  lunar.io.write_file(dir .. '/step_20.tmp.999/index.json', '{}')
  lunar.io.mkdir(dir .. '/step_30')
  local p, step = checkpoint.latest(dir)
  T.eq(p, dir .. '/step_10'); T.eq(step, 10)        -- 10 > 2 numerically
  local c = setup(cfg, 77)
  local info = checkpoint.maybe_resume(cfg, state_of(c))
  T.eq(info.step, 10); T.eq(info.path, dir .. '/step_10')
  T.eq(info.loader, {epoch = 2, batch = 0})          -- 10 batches = 2 whole epochs of 5
  T.eq({c.loader:position()}, {2, 0})
  T.eq(c.engine.optimizer_steps, 10)
  -- an explicit path; '' resumes nothing
  local d = setup(cfg, 78)
  T.eq(checkpoint.maybe_resume(make_cfg({RESUME = dir .. '/step_2'}), state_of(d)).step, 2)
  T.eq(checkpoint.maybe_resume(make_cfg({RESUME = ''}), state_of(d)), nil)
  T.raises(function() checkpoint.maybe_resume(make_cfg({RESUME = 'auto'}), state_of(d)) end, 'CHECKPOINT_DIR')
end)

T.test('an interrupted save leaves the last complete checkpoint as the one to resume', function()
  local r = setup(make_cfg())
  local dir = tmpdir()
  train(r, 2)
  checkpoint.save(dir, state_of(r))
  train(r, 4)
  local real = lunar.io.save_safetensors
  lunar.io.save_safetensors = function() error('disk full (simulated)', 0) end
  local ok, err = pcall(checkpoint.save, dir, state_of(r))
  lunar.io.save_safetensors = real
  T.falsy(ok); T.truthy(tostring(err):find('disk full', 1, true))
  T.eq(checkpoint.latest(dir), dir .. '/step_2')
  local leftovers = lunar.io.listdir(dir)
  T.eq(#leftovers, 2); T.truthy(leftovers[2]:match('^step_4%.tmp%.%d+$'), leftovers[2])
  -- an interrupted re-save of an existing step does not touch it either
  r.step = 2
  lunar.io.save_safetensors = function() error('disk full (simulated)', 0) end
  ok = pcall(checkpoint.save, dir, state_of(r))
  lunar.io.save_safetensors = real
  T.falsy(ok)
  local c = setup(make_cfg(), 5)
  T.eq(checkpoint.load(dir .. '/step_2', state_of(c)).step, 2)
  -- a completed re-save replaces it; a later save succeeds over the stale .tmp
  checkpoint.save(dir, state_of(r))
  r.step = 4
  checkpoint.save(dir, state_of(r))
  T.eq(checkpoint.latest(dir), dir .. '/step_4')
  T.eq(lunar.io.listdir(dir), {'step_2', 'step_4'})
end)

T.test('SAVE_EVERY and KEEP_CHECKPOINTS through maybe_save', function()
  local dir = tmpdir()
  local cfg = make_cfg({CHECKPOINT_DIR = dir, SAVE_EVERY = 3, KEEP_CHECKPOINTS = 2})
  local r = setup(cfg)
  local saved = {}
  for s = 1, 10 do
    train(r, s)
    local p = checkpoint.maybe_save(cfg, state_of(r))
    if p then saved[#saved + 1] = s end
  end
  T.eq(saved, {3, 6, 9})
  T.truthy(checkpoint.maybe_save(cfg, state_of(r), {final = true}))    -- step 10 at the end
  T.eq(checkpoint.maybe_save(cfg, state_of(r), {final = true}), nil)  -- not twice
  T.eq(lunar.io.listdir(dir), {'step_10', 'step_9'})
  T.eq(checkpoint.maybe_save(make_cfg({SAVE_EVERY = 1}), state_of(r)), nil)   -- no CHECKPOINT_DIR
end)

-- ---------------------------------------------------------------------------
-- corrupt checkpoints

local function read_bytes(p) local f = assert(io.open(p, 'rb')); local s = f:read('a'); f:close(); return s end
local function write_bytes(p, s) local f = assert(io.open(p, 'wb')); f:write(s); f:close() end

--- A saved checkpoint (a copy per corruption), and a run to load it into.
local GOOD
local function good_checkpoint()
  if not GOOD then
    local r = setup(make_cfg())
    train(r, 4)
    GOOD = checkpoint.save(tmpdir(), state_of(r))
  end
  local d = tmpdir() .. '/step_4'
  lunar.io.mkdir(d)
  for _, n in ipairs(lunar.io.listdir(GOOD)) do write_bytes(d .. '/' .. n, read_bytes(GOOD .. '/' .. n)) end
  return d
end

local function header_of(p)
  local s = read_bytes(p)
  local n = string.unpack('<I8', s)
  return s, n, s:sub(9, 8 + n)
end

--- Corrupts a fresh copy with fn(dir), then loading must fail with every
-- pattern in `expect` in the message, and leave the run's state unchanged.
local function refused(fn, expect, over)
  local d = good_checkpoint()
  fn(d)
  local r = setup(make_cfg(over), 11)
  train(r, 2)          -- a state that is not the checkpoint's
  local before = snapshot(r)
  local msg = T.raises(function() checkpoint.load(d, state_of(r)) end)
  if os.getenv("SHOW") then print("    -> " .. msg) end
  for _, e in ipairs(expect) do
    T.truthy(msg:find(e:gsub('DIR', d), 1, true), string.format('message %q lacks %q', msg, e:gsub('DIR', d)))
  end
  same_snapshot(before, snapshot(r))
  return msg
end

T.test('corrupt: a truncated shard', function()
  refused(function(d)
    local s = read_bytes(d .. '/model_rank0.safetensors')
    write_bytes(d .. '/model_rank0.safetensors', s:sub(1, #s // 2))
  end, {'DIR/model_rank0.safetensors', "tensor '", 'truncated'})
end)

T.test('corrupt: a shard header that is not JSON', function()
  refused(function(d)
    local s = read_bytes(d .. '/model_rank0.safetensors')
    write_bytes(d .. '/model_rank0.safetensors', s:sub(1, 8) .. '#' .. s:sub(10))
  end, {'DIR/model_rank0.safetensors', 'not valid JSON'})
end)

T.test('corrupt: offsets past the end of the data', function()
  refused(function(d)
    local p = d .. '/model_rank0.safetensors'
    local s, n, h = header_of(p)
    local a, b = h:find('"pos_embed":{[^}]-"data_offsets":%[%d+,')
    local e1, e2 = h:find('%d+', b + 1)
    h = h:sub(1, e1 - 1) .. string.rep('9', e2 - e1 + 1) .. h:sub(e2 + 1)
    write_bytes(p, s:sub(1, 8) .. h .. s:sub(9 + n))
  end, {'DIR/model_rank0.safetensors', "tensor 'pos_embed'", 'past the end'})
end)

T.test('corrupt: a tensor of the wrong shape in the shard', function()
  refused(function(d)
    local p = d .. '/model_rank0.safetensors'
    local t, meta = lunar.io.load_safetensors(p)
    t['blocks.0.attn.qkv.weight'] = t['blocks.0.attn.qkv.weight']:view(16, 48)
    lunar.io.save_safetensors(p, t, meta)
  end, {'DIR/model_rank0.safetensors', "tensor 'blocks.0.attn.qkv.weight'", '[16, 48]', '[48, 16]'})
end)

T.test('corrupt: a tensor of the wrong dtype in the shard', function()
  refused(function(d)
    local p = d .. '/model_rank0.safetensors'
    local t, meta = lunar.io.load_safetensors(p)
    t['norm.weight'] = t['norm.weight']:to('f64')
    lunar.io.save_safetensors(p, t, meta)
  end, {'DIR/model_rank0.safetensors', "tensor 'norm.weight'", 'F64'})
end)

T.test('corrupt: a tensor missing from the shard', function()
  refused(function(d)
    local p = d .. '/model_rank0.safetensors'
    local t, meta = lunar.io.load_safetensors(p)
    t['optim.exp_avg_sq.blocks.1.mlp.fc2.bias'] = nil
    lunar.io.save_safetensors(p, t, meta)
  end, {'DIR/model_rank0.safetensors', "tensor 'optim.exp_avg_sq.blocks.1.mlp.fc2.bias'"})
end)

T.test('corrupt: a tensor missing from index.json', function()
  refused(function(d)
    local idx = json.decode(read_bytes(d .. '/index.json'))
    idx.tensors['blocks.1.norm2.bias'] = nil
    write_bytes(d .. '/index.json', json.encode(idx))
  end, {'DIR/index.json', "tensor 'blocks.1.norm2.bias'"})
end)

T.test('corrupt: index.json missing, not JSON, or listing a missing file', function()
  refused(function(d) os.remove(d .. '/index.json') end, {'DIR/index.json', 'missing'})
  refused(function(d) write_bytes(d .. '/index.json', '{"format": "lunar-checkpoint", ') end,
    {'DIR/index.json', 'not valid JSON'})
  refused(function(d) os.remove(d .. '/model_rank0.safetensors') end, {'DIR/model_rank0.safetensors', 'missing'})
  local msg = T.raises(function() checkpoint.load(ROOT .. '/no_such_checkpoint', state_of(setup(make_cfg()))) end)
  T.truthy(msg:find(ROOT .. '/no_such_checkpoint', 1, true), msg)
end)

T.test('a model that differs from the checkpoint: the config key, or the tensor and both shapes', function()
  refused(function() end, {'DIR/index.json', 'HIDDEN_SIZE is 16 in the checkpoint, 32 here'}, {HIDDEN_SIZE = 32})
  -- without a config, the shapes speak
  local d = good_checkpoint()
  local r = setup(make_cfg({NUM_CLASSES = 6}), 5)
  local before = snapshot(r)
  local st = state_of(r)
  st.config = nil
  local msg = T.raises(function() checkpoint.load(d, st) end)
  T.truthy(msg:find("tensor 'head.weight' is [4, 16] in the checkpoint, [6, 16] in this model", 1, true), msg)
  same_snapshot(before, snapshot(r))
  -- another optimizer
  refused(function() end, {'DIR/index.json', "'adamw' in the checkpoint, 'sgd' here"}, {OPTIMIZER = 'sgd'})
end)

-- ---------------------------------------------------------------------------
-- resharding, with coroutines standing in for the ranks of an MPI job

--- Runs fn(rank) for every rank as coroutines; their grids' `world` is a
-- fake communicator whose barrier and all_reduce_number switch between them.
local function spmd(world_size, fn)
  local posted, cos, results = {}, {}, {}
  local function comm(rank)
    local n = 0
    return {
      barrier = function() coroutine.yield() end,
      all_reduce_number = function(_, x, op)
        assert(op == 'sum')
        n = n + 1
        posted[n] = posted[n] or {}
        posted[n][rank] = x
        coroutine.yield()
        local s = 0
        for r = 0, world_size - 1 do s = s + posted[n][r] end
        return s
      end,
    }
  end
  for r = 0, world_size - 1 do
    local c = comm(r)
    cos[r] = coroutine.create(function() results[r] = fn(r, c) end)
  end
  local live = world_size
  while live > 0 do
    live = 0
    for r = 0, world_size - 1 do
      if coroutine.status(cos[r]) ~= 'dead' then
        local ok, err = coroutine.resume(cos[r])
        if not ok then error(debug.traceback(cos[r], tostring(err)), 0) end
        if coroutine.status(cos[r]) ~= 'dead' then live = live + 1 end
      end
    end
  end
  return results
end

--- A fake grid: rank = pp * (dp * tp) + dp_rank * tp + tp_rank (Megatron's order).
local function fake_grid(rank, comm, dp, tp, pp)
  local tp_rank, dp_rank, pp_rank = rank % tp, (rank // tp) % dp, rank // (tp * dp)
  return {rank = rank, world_size = dp * tp * pp, dp_rank = dp_rank, dp_size = dp, tp_rank = tp_rank, tp_size = tp,
    pp_rank = pp_rank, pp_size = pp, world = comm}
end

--- This rank's part of the config's ViT (tensor shards, pipeline stage) with
-- an AdamW whose moments are set to functions of the weights (so that each
-- element is distinct and layout-independent).
local function part_model(cfg, g)
  local opts = {}
  for k, v in pairs(models.vit(cfg).opts) do opts[k] = v end
  if g.tp_size > 1 then opts.tp = require('lunar.parallel.tensor_1d').new{size = g.tp_size, rank = g.tp_rank} end
  if g.pp_size > 1 then
    local per = cfg.DEPTH // g.pp_size
    opts.stage = {first_block = g.pp_rank * per, last_block = (g.pp_rank + 1) * per - 1}
  end
  local model = nn.materialize(nn.ViT(opts), cfg.SEED)
  local opt = optim.AdamW(model:parameters(), {lr = 1e-3})
  for i, p in ipairs(opt.params) do
    opt.m[i]:copy_(p.param:view(-1) * 2)
    opt.v[i]:copy_(p.param:view(-1) * p.param:view(-1))
  end
  opt.t = 5
  return model, opt
end

local function check_against_plain(model, opt, cfg, what)
  local plain = nn.materialize(models.vit(cfg), cfg.SEED)
  local full = {}
  for _, p in ipairs(plain:parameters()) do full[p.name] = p.param end
  for i, p in ipairs(model:parameters()) do
    local want = full[p.name]
    if p.shard then   -- this rank's pieces of the full tensor
      local w = lunar.empty(p.shape)
      for _, pc in ipairs(nn.shard_pieces(p.shard)) do
        w:narrow(p.shard.dim, pc.local_offset + 1, pc.len):copy_(want:narrow(p.shard.dim, pc.full_offset + 1, pc.len))
      end
      want = w
    end
    T.truthy(bits_equal(p.param, want), what .. ': ' .. p.name)
    T.truthy(bits_equal(opt.m[i]:view(p.shape), want * 2), what .. ': exp_avg of ' .. p.name)
    T.truthy(bits_equal(opt.v[i]:view(p.shape), want * want), what .. ': exp_avg_sq of ' .. p.name)
  end
  T.eq(opt.t, 5)
end

local RESHARD_CFG = {DEPTH = 4, NUM_HEADS = 4, HIDDEN_SIZE = 16, DROPOUT = 0.0}

local function save_layout(dp, tp, pp)
  local cfg = make_cfg(RESHARD_CFG)
  local dir = tmpdir()
  local paths = spmd(dp * tp * pp, function(rank, comm)
    local g = fake_grid(rank, comm, dp, tp, pp)
    local model, opt = part_model(cfg, g)
    return checkpoint.save(dir, {model = model, optimizer = opt, step = 6, epoch = 1, config = cfg, grid = g})
  end)
  return paths[0], cfg
end

local function load_layout(path, cfg, dp, tp, pp)
  spmd(dp * tp * pp, function(rank, comm)
    local g = fake_grid(rank, comm, dp, tp, pp)
    local model, opt = part_model(make_cfg(RESHARD_CFG), g)
    -- scramble what the load must restore
    model._flat:fill_(0.5)
    for i = 1, #opt.m do opt.m[i]:fill_(1); opt.v[i]:fill_(2) end
    opt.t = 0
    checkpoint.load(path, {model = model, optimizer = opt, config = cfg, grid = g})
    check_against_plain(model, opt, cfg, string.format('dp %d tp %d pp %d rank %d', dp, tp, pp, rank))
  end)
end

T.test('resharding: tensor-parallel 2 shards (qkv in 3 groups) load into one rank and back', function()
  local path, cfg = save_layout(1, 2, 1)
  local files = lunar.io.listdir(path)
  T.eq(files, {'config.lua', 'index.json', 'model_rank0.safetensors', 'model_rank1.safetensors'})
  local idx = json.decode(read_bytes(path .. '/index.json'))
  local q = idx.tensors['blocks.0.attn.qkv.weight']
  T.eq(q.shape, {48, 16})
  T.eq(#q.slices, 6)    -- q, k and v rows of each of the 2 ranks
  T.eq(q.slices[2].ranges, {{16, 8}, {0, 16}}); T.eq(q.slices[2]['local'], {{8, 8}, {0, 16}})
  T.eq(#idx.tensors['blocks.0.norm1.weight'].slices, 1)   -- replicated: written once (tensor rank 0)
  load_layout(path, cfg, 1, 1, 1)
  load_layout(path, cfg, 1, 2, 1)
  load_layout(path, cfg, 2, 4, 1)
end)

T.test('resharding: pipeline 2 x tensor 2 x data 2 into one rank, tensor 4, pipeline 4', function()
  local path, cfg = save_layout(2, 2, 2)
  T.eq(#lunar.io.listdir(path), 2 + 4)    -- data-parallel rank 0 of each stage and tensor rank writes
  load_layout(path, cfg, 1, 1, 1)
  load_layout(path, cfg, 1, 4, 1)
  load_layout(path, cfg, 1, 1, 4)
  load_layout(path, cfg, 1, 2, 2)
  -- one rank's checkpoint into tensor 2 x pipeline 2
  local path1 = save_layout(1, 1, 1)
  load_layout(path1, cfg, 1, 2, 2)
end)

T.test('a registered slicer places a parameter (one contiguous slice)', function()
  -- a model whose head.weight rows are held in two halves by two simulated ranks
  local cfg = make_cfg({DROPOUT = 0.0})
  local dir = tmpdir()
  checkpoint.register_slicer(function(p)
    if p.name == 'head.weight' and p.half then
      return {full_shape = {4, 16}, pieces = {{full = {{p.half * 2, 2}, {0, 16}}, ['local'] = {{0, 2}, {0, 16}}}}}
    end
  end)
  local plain = nn.materialize(models.vit(cfg), cfg.SEED)
  local function halves(rank)
    -- a module tree with one parameter: rows 2*rank .. 2*rank+1 of head.weight
    local m = nn.Module()
    local head = m:add('head', nn.Module())
    head:param('weight', {2, 16}, {kind = 'zeros'})
    nn.materialize(m, 0)
    local ps = m:parameters()
    local real = m.parameters
    m.parameters = function(self)
      local out = real(self)
      out[1].half = rank
      return out
    end
    return m, ps[1]
  end
  spmd(2, function(rank, comm)
    local m, p = halves(rank)
    p.param:copy_(plain.head.weight:narrow(1, rank * 2 + 1, 2))
    local g = fake_grid(rank, comm, 1, 2, 1)
    return checkpoint.save(dir, {model = m, step = 1, grid = g})
  end)
  local m = nn.Module()
  local head = m:add('head', nn.Module())
  head:param('weight', {4, 16}, {kind = 'zeros'})
  nn.materialize(m, 0)
  checkpoint.load(dir .. '/step_1', {model = m})
  T.truthy(bits_equal(m.head.weight, plain.head.weight))
end)

-- ---------------------------------------------------------------------------
-- timm import and export

local TCFG = {DROPOUT = 0.0, NUM_CLASSES = 4}

T.test('timm: export writes exactly the timm names, F32, contiguous; load_pretrained reads it back', function()
  local cfg = make_cfg(TCFG)
  local a = nn.materialize(models.vit(cfg), 1)
  local path = ROOT .. '/export.safetensors'
  timm.export(a, path)
  local t, meta = lunar.io.load_safetensors(path)
  local names = {}
  for k, v in pairs(t) do names[#names + 1] = k; T.eq(v:dtype(), 'f32', k) end
  table.sort(names)
  local want = {}
  for _, p in ipairs(a:parameters()) do want[#want + 1] = p.name end
  table.sort(want)
  T.eq(names, want)
  T.eq(meta.format, 'pt')
  T.eq(t['blocks.0.attn.qkv.weight']:shape(), {48, 16})
  local b = nn.materialize(models.vit(cfg), 2)
  local report = timm.load_pretrained(b, path)
  T.truthy(bits_equal(a._flat, b._flat))
  T.eq(report.loaded, #want); T.eq(report.skipped, {})
end)

--- A safetensors file as timm writes one (its names and layouts; values
-- from a plain table), with num_classes outputs and grid g x g patches.
local function timm_like_file(path, cfg, num_classes, grid, extra)
  local E, C, P = cfg.HIDDEN_SIZE, cfg.IN_CHANS, cfg.PATCH_SIZE
  local H = math.floor(E * cfg.MLP_RATIO + 0.5)
  local t = {}
  local k = 0
  local function w(name, shape)
    k = k + 1
    t[name] = lunar.empty(shape):normal_(99, name, 0, 0.1 * k / (k + 1))
  end
  w('cls_token', {1, 1, E}); w('pos_embed', {1, grid * grid + 1, E})
  w('patch_embed.proj.weight', {E, C, P, P}); w('patch_embed.proj.bias', {E})
  for i = 0, cfg.DEPTH - 1 do
    local b = 'blocks.' .. i .. '.'
    w(b .. 'norm1.weight', {E}); w(b .. 'norm1.bias', {E})
    w(b .. 'attn.qkv.weight', {3 * E, E}); w(b .. 'attn.qkv.bias', {3 * E})
    w(b .. 'attn.proj.weight', {E, E}); w(b .. 'attn.proj.bias', {E})
    w(b .. 'norm2.weight', {E}); w(b .. 'norm2.bias', {E})
    w(b .. 'mlp.fc1.weight', {H, E}); w(b .. 'mlp.fc1.bias', {H})
    w(b .. 'mlp.fc2.weight', {E, H}); w(b .. 'mlp.fc2.bias', {E})
  end
  w('norm.weight', {E}); w('norm.bias', {E})
  w('head.weight', {num_classes, E}); w('head.bias', {num_classes})
  for name, shape in pairs(extra or {}) do w(name, shape) end
  lunar.io.save_safetensors(path, t, {format = 'pt'})
  return t
end

T.test('timm: a file with timm names loads; a head of another class count is skipped with a message', function()
  local cfg = make_cfg(TCFG)
  local path = ROOT .. '/timm_like.safetensors'
  local src = timm_like_file(path, cfg, 4, 2)
  local m = nn.materialize(models.vit(cfg), 1)
  timm.load_pretrained(m, path)
  for _, p in ipairs(m:parameters()) do T.truthy(bits_equal(p.param, src[p.name]), p.name) end
  -- 1000 ImageNet classes into a 4-class model: head kept at its init
  local path2 = ROOT .. '/timm_in1k.safetensors'
  local src2 = timm_like_file(path2, cfg, 1000, 2)
  local m2 = nn.materialize(models.vit(cfg), 1)
  local head_before = m2.head.weight:clone()
  local msgs = {}
  local report = timm.load_pretrained(m2, path2, {num_classes = 4, log = function(s) msgs[#msgs + 1] = s end})
  T.truthy(bits_equal(m2.head.weight, head_before), 'head kept')
  T.truthy(bits_equal(m2.blocks['1'].mlp.fc1.weight, src2['blocks.1.mlp.fc1.weight']))
  T.eq(report.skipped, {'head.bias', 'head.weight'})
  T.truthy(msgs[1] and msgs[1]:find('1000 classes', 1, true) and msgs[1]:find('4', 1, true), msgs[1])
  -- num_classes that disagrees with the model
  T.raises(function() timm.load_pretrained(m2, path2, {num_classes = 7}) end, 'num_classes 7')
end)

T.test('timm: refused before any change: another grid size, a missing or extra tensor, a bad file', function()
  local cfg = make_cfg(TCFG)
  local m = nn.materialize(models.vit(cfg), 1)
  local before = m._flat:clone()
  local p1 = ROOT .. '/timm_grid.safetensors'
  timm_like_file(p1, cfg, 4, 3)
  -- another square grid is resampled (timm's resample_abs_pos_embed; values: tests/golden/timm_check.py),
  -- a grid that is not square is refused
  local m1, msgs1 = nn.materialize(models.vit(cfg), 1), {}
  timm.load_pretrained(m1, p1, {log = function(s) msgs1[#msgs1 + 1] = s end})
  T.truthy(msgs1[1] and msgs1[1]:find('resampled from a 3x3 to a 2x2 grid', 1, true), msgs1[1])
  local t1 = timm_like_file(p1, cfg, 4, 3)
  t1.pos_embed = lunar.empty({1, 9, 16})
  lunar.io.save_safetensors(p1, t1)
  T.raises(function() timm.load_pretrained(m, p1) end, "pos_embed' is [1, 9, 16] in the file, [1, 5, 16] in the model")
  local p2 = ROOT .. '/timm_extra.safetensors'
  timm_like_file(p2, cfg, 4, 2, {['fc_norm.weight'] = {16}})
  T.raises(function() timm.load_pretrained(m, p2) end, "fc_norm.weight")
  local ok = pcall(timm.load_pretrained, m, p2, {strict = false})
  T.truthy(ok, 'strict = false ignores unexpected tensors')
  before = m._flat:clone()
  local p3 = ROOT .. '/timm_missing.safetensors'
  local t = timm_like_file(p3, cfg, 4, 2)
  t['blocks.1.attn.proj.bias'] = nil
  lunar.io.save_safetensors(p3, t)
  T.raises(function() timm.load_pretrained(m, p3) end, p3 .. ": no tensor 'blocks.1.attn.proj.bias'")
  local p4 = ROOT .. '/timm_trunc.safetensors'
  local s = read_bytes(p2)
  write_bytes(p4, s:sub(1, #s - 100))
  T.raises(function() timm.load_pretrained(m, p4) end, p4)
  T.truthy(bits_equal(m._flat, before), 'parameters unchanged')
end)

local _, failed = T.run({exit = false})
lunar.io.remove_tree(ROOT)
os.exit(failed == 0 and 0 or 1)
