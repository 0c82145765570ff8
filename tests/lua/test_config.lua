-- Tests of lua/lunar/config.lua and lua/lunar/schema.lua (pure Lua, no bindings).
--   build/lunar tests/lua/test_config.lua
--   LUA_PATH='lua/?.lua;lua/?/init.lua;tests/lua/?.lua;;' lua5.4 tests/lua/test_config.lua
local T = require('harness')
local config = require('lunar.config')
local schema = require('lunar.schema')

local HERE = debug.getinfo(1, 'S').source:match('^@(.*/)') or './'
local FIX = HERE .. 'fixtures/'

local function loadfix(name, overrides) return config.load(FIX .. name, overrides) end

-- schema --------------------------------------------------------------------

T.test('schema: every key has a type, a doc, and a default of that type', function()
  local keys = schema.keys()
  T.truthy(#keys >= 40, 'number of keys')
  local prev
  for _, e in ipairs(keys) do
    T.truthy(e.key and e.type and e.doc and #e.doc > 0, 'entry ' .. tostring(e.key))
    if prev then T.truthy(prev < e.key, 'sorted: ' .. prev .. ' < ' .. e.key) end
    prev = e.key
  end
  -- the defaults pass validation as they are
  T.eq(config.from_table({}).BATCH_SIZE, 128)
end)

T.test('schema: get, nested get, defaults', function()
  local e = schema.get('LEARNING_RATE')
  T.eq(e.type, 'number'); T.eq(e.default, 2e-3)
  T.eq(schema.get('OPTIMIZER').enum, { 'adamw', 'sgd' })
  local mode = schema.get('parallel.tensor.mode')
  T.eq(mode.key, 'parallel.tensor.mode'); T.eq(mode.default, 'none')
  T.eq(schema.get('parallel').default.tensor, { mode = 'none', size = 1 })
  T.eq(schema.get('NOPE'), nil)
  T.eq(schema.get('DEPTH.x'), nil)
  local d = schema.defaults()
  d.parallel.pipeline = 8   -- a fresh copy each time
  T.eq(schema.defaults().parallel.pipeline, 1)
  T.truthy(schema.help():find('parallel.tensor.mode', 1, true))
end)

-- load ----------------------------------------------------------------------

T.test('defaults: no file, no overrides', function()
  local c = config.load()
  T.eq(c.IMG_SIZE, 28); T.eq(c.PATCH_SIZE, 4); T.eq(c.HIDDEN_SIZE, 192)
  T.eq(c.DEPTH, 6); T.eq(c.NUM_HEADS, 3); T.eq(c.BATCH_SIZE, 128)
  T.eq(c.LEARNING_RATE, 2e-3); T.eq(c.WARMUP_EPOCHS, 0.1)
  T.eq(c.OPTIMIZER, 'adamw'); T.eq(c.DATASET, 'fashion_mnist')
  T.eq(c.METRICS_FILE, 'metrics.jsonl'); T.eq(c.EVAL_EVERY_EPOCH, true)
  T.eq(c.precision, 'fp32'); T.eq(c.device, 'cpu'); T.eq(c.gradient_accumulation, 1)
  T.eq(c.parallel, { data = 0, pipeline = 1, tensor = { mode = 'none', size = 1 },
                     sequence_parallel = false, pipeline_schedule = '1f1b' })
  T.eq(c.parallel.pipeline_split, nil)
  T.eq(c.SEQ_LENGTH, 50, 'derived (28 // 4)^2 + 1')
  T.eq(math.type(c.SEQ_LENGTH), 'integer')
  T.eq(getmetatable(c), nil, 'a plain table')
end)

T.test('overrides: a {KEY = value} table is refused (it would be ignored), a list of strings applies', function()
  T.raises(function() config.load(nil, {IMG_SIZE = 12}) end,
    "overrides are a list of 'key=value' strings, got a table with the key string \"IMG_SIZE\"")
  T.eq(config.load(nil, {'IMG_SIZE=12'}).IMG_SIZE, 12)
end)

T.test('file values override defaults, dicts filled with defaults', function()
  local c = loadfix('basic.lua')
  T.eq(c.DEPTH, 2); T.eq(c.LEARNING_RATE, 1e-3); T.eq(c.DATASET, 'synthetic')
  T.eq(c.MLP_RATIO, 2.5)
  T.eq(c.HIDDEN_SIZE, 192, 'default kept')
  T.eq(c.parallel, { data = 0, pipeline = 2, tensor = { mode = '1d', size = 2 },
                     sequence_parallel = false, pipeline_schedule = '1f1b' })
end)

T.test('include: base first, then the including file', function()
  local c = loadfix('child.lua')
  T.eq(c.DEPTH, 3, 'child overrides base')
  T.eq(c.HIDDEN_SIZE, 96, 'from base'); T.eq(c.BATCH_SIZE, 64, 'from base')
  T.eq(c.LOG_EVERY, 10, "child computed from base's value")
  T.eq(c.parallel.pipeline, 2, 'from base')
  T.eq(c.parallel.tensor, { mode = '1d', size = 2 }, 'child changed single fields')
end)

T.test('include: path relative to the including file', function()
  local c = loadfix('sub/child_up.lua')
  T.eq(c.DEPTH, 4); T.eq(c.NUM_CLASSES, 100)
end)

T.test('include and override order: defaults < base < child < command line', function()
  local c = loadfix('child.lua', { 'DEPTH=7', 'HIDDEN_SIZE=48', 'parallel.tensor.size=4' })
  T.eq(c.DEPTH, 7); T.eq(c.HIDDEN_SIZE, 48)
  T.eq(c.parallel.tensor, { mode = '1d', size = 4 })
  T.eq(c.parallel.pipeline, 2)
  T.eq(c.NUM_HEADS, 2); T.eq(c.IMG_SIZE, 28)
end)

T.test('include cycle is an error naming the chain', function()
  local msg = T.raises(function() loadfix('cycle_a.lua') end, 'include cycle')
  T.truthy(msg:find(FIX .. 'cycle_a.lua -> ' .. FIX .. 'cycle_b.lua -> ' .. FIX .. 'cycle_a.lua', 1, true), msg)
end)

T.test('self-include is an error', function()
  local msg = T.raises(function() loadfix('self_include.lua') end, 'include cycle')
  T.truthy(msg:find('self_include.lua -> ' .. FIX .. 'self_include.lua', 1, true), msg)
end)

T.test('missing config file and missing include', function()
  T.raises(function() loadfix('nope.lua') end, 'cannot open config file ' .. FIX .. 'nope.lua')
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, 'w')); f:write("include 'definitely_missing_base.lua'\n"); f:close()
  local msg = T.raises(function() config.load(tmp) end, tmp .. ': include: cannot open ')
  os.remove(tmp)
  T.truthy(msg:find('definitely_missing_base.lua', 1, true), msg)
end)

T.test('unknown key: names key and file, with a did-you-mean', function()
  T.raises(function() loadfix('typo.lua') end,
    FIX .. "typo.lua: unknown config key 'LEARNNG_RATE' (did you mean 'LEARNING_RATE'?)")
  -- an error in an included base names the base
  T.raises(function() loadfix('includes_typo.lua') end, FIX .. "typo.lua: unknown config key 'LEARNNG_RATE'")
  -- case-insensitive suggestion
  T.raises(function() config.load(nil, { 'batch_size=3' }) end,
    "command line: unknown config key 'batch_size' (did you mean 'BATCH_SIZE'?)")
  -- nothing near: no suggestion
  local msg = T.raises(function() config.load(nil, { 'ZZZZZZZZ=1' }) end, "unknown config key 'ZZZZZZZZ'")
  T.falsy(msg:find('did you mean', 1, true), msg)
end)

T.test('reading an unknown name in a config is an error with its line', function()
  T.raises(function() loadfix('read_typo.lua') end,
    FIX .. "read_typo.lua:1: unknown config key 'IMG_SIZ' (did you mean 'IMG_SIZE'?)")
end)

T.test('a Lua error in a config keeps its file:line', function()
  T.raises(function() loadfix('runtime_error.lua') end, FIX .. 'runtime_error.lua:3: attempt to index')
end)

T.test('ill-typed key names key and file', function()
  T.raises(function() loadfix('bad_type.lua') end,
    FIX .. "bad_type.lua: config key 'BATCH_SIZE' must be an integer, got string \"abc\"")
  T.raises(function() config.load(nil, { 'DEPTH=2.5' }) end,
    "command line: config key 'DEPTH' must be an integer, got number 2.5")
  T.raises(function() config.load(nil, { 'PREFETCH=1' }) end,
    "config key 'PREFETCH' must be a boolean, got number 1")
  T.raises(function() config.load(nil, { 'parallel=2' }) end,
    "config key 'parallel' must be a table, got number 2")
  T.raises(function() config.load(nil, { 'BATCH_SIZE=0' }) end,
    "config key 'BATCH_SIZE' must be >= 1, got 0")
  T.raises(function() config.load(nil, { 'BETA2=1' }) end, "config key 'BETA2' must be < 1, got 1")
  T.raises(function() config.load(nil, { 'device=gpu' }) end,
    "config key 'device' must be 'cpu', 'cuda' or 'cuda:N', got string \"gpu\"")
  T.eq(config.load(nil, { 'device=cuda:1' }).device, 'cuda:1')
end)

T.test('integral floats of integer keys become integers', function()
  local c = config.load(nil, { 'DEPTH=4.0', 'BATCH_SIZE=2^6' })
  T.eq(math.type(c.DEPTH), 'integer'); T.eq(c.DEPTH, 4)
  T.eq(math.type(c.BATCH_SIZE), 'integer'); T.eq(c.BATCH_SIZE, 64)
end)

T.test('enum violation lists the allowed values', function()
  T.raises(function() loadfix('bad_enum.lua') end,
    FIX .. "bad_enum.lua: config key 'OPTIMIZER' must be one of 'adamw', 'sgd', got string \"adam\"")
  T.raises(function() config.load(nil, { 'DATASET=fashion-mnist' }) end,
    "must be one of 'fashion_mnist', 'cifar10', 'synthetic', 'image_folder', 'imagenet_zip', got string \"fashion-mnist\" (did you mean 'fashion_mnist'?)")
  T.raises(function() config.load(nil, { 'IMG_DIMS=4' }) end, "config key 'IMG_DIMS' must be one of 2, 3, got number 4")
end)

T.test('nested parallel dict: unknown nested key, bad mode, bad types', function()
  T.raises(function() loadfix('bad_nested_key.lua') end,
    FIX .. "bad_nested_key.lua: unknown config key 'parallel.pipline' (did you mean 'parallel.pipeline'?)")
  T.raises(function() loadfix('bad_mode.lua') end,
    FIX .. "bad_mode.lua: config key 'parallel.tensor.mode' must be one of '1d', '2d', '2.5d', '3d', 'none', got string \"4d\"")
  T.falsy(select(2, pcall(loadfix, 'bad_mode.lua')):find('did you mean', 1, true), "no '1d' for '4d'")
  T.raises(function() config.load(nil, { "parallel.tensor={mode='1d', sise=2}" }) end,
    "command line: unknown config key 'parallel.tensor.sise' (did you mean 'parallel.tensor.size'?)")
  T.raises(function() config.load(nil, { 'parallel.tensor.size=0' }) end,
    "config key 'parallel.tensor.size' must be >= 1, got 0")
  T.raises(function() config.load(nil, { 'parallel={2}' }) end,
    "config key 'parallel' has a positional entry [1]")
  T.raises(function() config.load(nil, { "parallel.pipeline_split={2,'x'}" }) end,
    "config key 'parallel.pipeline_split[2]' must be an integer, got string \"x\"")
  T.raises(function() config.load(nil, { 'parallel.pipeline_split={a=1}' }) end,
    "config key 'parallel.pipeline_split' must be a list of integers")
  local c = config.load(nil, { 'parallel.pipeline_split={3,3}', 'parallel.pipeline=2' })
  T.eq(c.parallel.pipeline_split, { 3, 3 })
  -- a nil mode means 'none'
  T.eq(config.load(nil, { 'parallel.tensor={size=1}' }).parallel.tensor.mode, 'none')
end)

-- overrides -------------------------------------------------------------------

T.test('overrides: Lua expressions', function()
  local c = config.load(nil, {
    "parallel={pipeline=2,tensor={mode='1d',size=2}}", 'LEARNING_RATE=1e-3', 'DEPTH=2',
    'PREFETCH=false', 'WEIGHT_DECAY=math.sqrt(4)/100', "OPTIMIZER='sgd'",
  })
  T.eq(c.parallel.pipeline, 2); T.eq(c.parallel.tensor, { mode = '1d', size = 2 })
  T.eq(c.parallel.pipeline_schedule, '1f1b', 'dict filled with defaults')
  T.eq(c.LEARNING_RATE, 1e-3); T.eq(c.DEPTH, 2); T.eq(c.PREFETCH, false)
  T.near(c.WEIGHT_DECAY, 0.02, 1e-12); T.eq(c.OPTIMIZER, 'sgd')
end)

T.test('overrides: plain strings', function()
  local c = config.load(nil, {
    'METRICS_FILE=out.jsonl', 'DATA_DIR=/data/fmnist', 'OPTIMIZER=sgd', 'precision=bf16',
    'CHECKPOINT_DIR=metrics', 'RESUME=', 'device=cuda:0', 'parallel.tensor.mode=1d',
  })
  T.eq(c.METRICS_FILE, 'out.jsonl'); T.eq(c.DATA_DIR, '/data/fmnist'); T.eq(c.OPTIMIZER, 'sgd')
  T.eq(c.precision, 'bf16'); T.eq(c.CHECKPOINT_DIR, 'metrics'); T.eq(c.RESUME, '')
  T.eq(c.device, 'cuda:0'); T.eq(c.parallel.tensor.mode, '1d')
  -- several values are not one value: the text stays a string (then ill-typed here)
  T.raises(function() config.load(nil, { 'parallel.pipeline_split=2,2' }) end,
    'must be a list of integers, got string "2,2"')
end)

T.test('overrides: dotted keys set one nested field', function()
  local c = loadfix('basic.lua', { 'parallel.pipeline=4', 'parallel.tensor.size=1', "parallel.tensor.mode='none'" })
  T.eq(c.parallel.pipeline, 4); T.eq(c.parallel.tensor, { mode = 'none', size = 1 })
  T.eq(c.parallel.pipeline_schedule, '1f1b')
  -- a whole dict on the command line replaces the file's dict
  local d = loadfix('basic.lua', { 'parallel={pipeline=3}' })
  T.eq(d.parallel.tensor, { mode = 'none', size = 1 })
  T.eq(d.parallel.pipeline, 3)
  T.raises(function() config.load(nil, { 'DEPTH.x=1' }) end,
    "command line: config key 'DEPTH' is an integer, not a dict; cannot set 'DEPTH.x'")
  T.raises(function() config.load(nil, { 'parallel.pipelin=1' }) end,
    "command line: unknown config key 'parallel.pipelin' (did you mean 'parallel.pipeline'?)")
  -- nil restores the default
  T.eq(loadfix('basic.lua', { 'DEPTH=nil' }).DEPTH, 6)
end)

T.test('overrides: duplicate, overlapping and malformed', function()
  T.raises(function() config.load(nil, { 'DEPTH=2', 'LOG_EVERY=1', 'DEPTH=3' }) end,
    "key 'DEPTH' given twice on the command line")
  T.raises(function() config.load(nil, { 'parallel={pipeline=2}', 'parallel.pipeline=2' }) end,
    "command line: keys 'parallel' and 'parallel.pipeline' overlap")
  T.raises(function() config.load(nil, { 'DEPTH' }) end,
    "command line: malformed override 'DEPTH' (expected key=value)")
  T.raises(function() config.load(nil, { '=3' }) end, 'malformed override')
  T.raises(function() config.load(nil, { 'a b=3' }) end, 'malformed override')
  T.raises(function() config.load(nil, { 'parallel..pipeline=3' }) end, 'malformed override')
end)

T.test('overrides are in place while the file runs', function()
  local c = loadfix('dataset_switch.lua', { 'DATASET=cifar10', 'DEPTH=9' })
  T.eq(c.IN_CHANS, 3, 'the file saw DATASET=cifar10'); T.eq(c.IMG_SIZE, 32)
  T.eq(c.DEPTH, 9, "the file's DEPTH = 4 is ignored")
  local d = loadfix('dataset_switch.lua')
  T.eq(d.IN_CHANS, 1); T.eq(d.DEPTH, 4)
end)

T.test('computing a key from an earlier one', function()
  local c = loadfix('computed.lua')
  T.eq(c.SEQ_LENGTH, 17); T.eq(math.type(c.SEQ_LENGTH), 'integer')
  T.eq(c.WARMUP_EPOCHS, 0.5); T.eq(c.HIDDEN_SIZE, 128); T.eq(c.NUM_HEADS, 4)
  T.eq(c.METRICS_FILE, 'run_d6.jsonl', 'read a default')
  T.eq(c.width, nil, 'locals are not config')
  -- with IMG_SIZE from the command line the computed SEQ_LENGTH follows it
  T.eq(loadfix('computed.lua', { 'IMG_SIZE=64' }).SEQ_LENGTH, 65)
end)

T.test('derived keys: set when unset, checked when set; checks across keys', function()
  T.eq(config.load(nil, { 'IMG_SIZE=32', 'PATCH_SIZE=8', 'IMG_DIMS=3' }).SEQ_LENGTH, 65)
  T.eq(config.load(nil, { 'SEQ_LENGTH=50' }).SEQ_LENGTH, 50)
  T.raises(function() config.load(nil, { 'SEQ_LENGTH=49' }) end,
    "command line: config key 'SEQ_LENGTH' is 49, but (IMG_SIZE // PATCH_SIZE)^IMG_DIMS + 1 = 50; leave it unset")
  -- a resolved config written out keeps SEQ_LENGTH; changing IMG_SIZE alone is caught
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, 'w')); f:write('return ', config.dump(config.load()), '\n'); f:close()
  local ok, err = pcall(config.load, tmp, { 'IMG_SIZE=32' })
  os.remove(tmp)
  T.falsy(ok); T.truthy(err:find(tmp .. ": config key 'SEQ_LENGTH' is 50, but", 1, true), err)
  T.raises(function() config.load(nil, { 'IMG_SIZE=30' }) end,
    "command line: config key 'IMG_SIZE' (30) must be a multiple of PATCH_SIZE (4)")
  T.raises(function() config.load(nil, { 'HIDDEN_SIZE=100' }) end,
    "config key 'HIDDEN_SIZE' (100) must be a multiple of NUM_HEADS (3)")
end)

-- from_table, dump ------------------------------------------------------------

T.test('from_table: defaults then the table, checked', function()
  local c = config.from_table({ DEPTH = 2, parallel = { pipeline = 2 } })
  T.eq(c.DEPTH, 2); T.eq(c.parallel.pipeline, 2); T.eq(c.parallel.tensor.size, 1)
  T.raises(function() config.from_table({ DEPT = 2 }, 'test') end,
    "test: unknown config key 'DEPT' (did you mean 'DEPTH'?)")
end)

T.test('dump is sorted, deterministic and round-trips', function()
  local c = loadfix('basic.lua', { 'parallel.pipeline_split={1,1}', 'DROPOUT=0.1', 'clip_grad_norm=1' })
  local s = config.dump(c)
  T.eq(s, config.dump(c), 'deterministic')
  -- top-level keys appear in sorted order, nested ones too
  local keys = {}
  for k in s:gmatch('\n  ([%w_]+) =') do keys[#keys + 1] = k end
  local sorted = { table.unpack(keys) }
  table.sort(sorted)
  T.eq(keys, sorted)
  T.truthy(s:find('  parallel = {\n    data = 0,\n    pipeline = 2,\n    pipeline_schedule = "1f1b",\n'
    .. '    pipeline_split = { 1, 1 },\n    sequence_parallel = false,\n    tensor = {\n'
    .. '      mode = "1d",\n      size = 2,\n    },\n  },', 1, true), s)
  T.truthy(s:find('\n  DROPOUT = 0.1,\n', 1, true), s)
  T.truthy(s:find('\n  MIN_LR = 0.0,\n', 1, true), 'floats stay floats')
  T.truthy(s:find('\n  EPS = 1e-08,\n', 1, true), s)
  -- load(dump) equals the table, subtypes included
  local back = assert(load('return ' .. s, 'dump', 't', {}))()
  T.eq(back, c)
  T.eq(math.type(back.MIN_LR), 'float'); T.eq(math.type(back.DEPTH), 'integer')
  -- a file holding `return <dump>` is a config that resolves to the same table
  local tmp = os.tmpname()
  local f = assert(io.open(tmp, 'w')); f:write('return ', s, '\n'); f:close()
  local again = config.load(tmp)
  os.remove(tmp)
  T.eq(again, c)
end)

T.test('dump: odd values', function()
  local t = { a = 1 / 0, b = -1 / 0, c = 'line\nnext "q" \\', d = { x = {} }, ['not id'] = true,
              e = 3.0, f = -0.5, g = 123456789.125, h = 1e300, [1] = 'one', i = math.mininteger }
  local back = load('return ' .. config.dump(t), 'dump', 't', {})()
  T.eq(back, t)
  T.eq(math.type(back.e), 'float'); T.eq(math.type(back.i), 'integer')
  local nan = load('return ' .. config.dump({ n = 0 / 0 }), 'dump', 't', {})().n
  T.truthy(nan ~= nan, 'nan')
  T.raises(function() config.dump({ f = print }) end, "config.dump: cannot write a function at 'f'")
  local cyc = {}; cyc.self = cyc
  T.raises(function() config.dump(cyc) end, "config.dump: cycle at 'self'")
  T.truthy(config.dump(config.load(), { comments = true }):find('  -- peak learning rate', 1, true))
end)

-- harness self-checks -----------------------------------------------------------

T.test('harness: eq, near, raises report failures', function()
  T.raises(function() T.eq({ a = { 1, 2 } }, { a = { 1, 3 } }) end, 'at [\"a\"][2]: expected 3, got 2')
  T.raises(function() T.eq(1, 2, 'ctx') end, 'ctx: expected 2, got 1')
  T.near(1.0, 1.0 + 1e-9, 1e-6)
  T.near({ 1, 2 }, { 1 + 1e-12, 2 }, 0, 1e-9)
  T.raises(function() T.near(1.0, 1.1, 1e-3) end, 'expected 1.1')
  T.raises(function() T.near(0 / 0, 0 / 0) end, 'expected')
  T.raises(function() T.raises(function() end) end, 'expected an error')
  T.raises(function() T.raises(function() error('abc') end, 'xyz') end, 'matching')
  T.raises(function() error('a (b) [c]') end, 'a (b) [c]')   -- plain find fallback
  T.raises(function() T.truthy(false) end, 'truthy')
end)

T.run()
