--- lunar.checkpoint.format: the on-disk format of a checkpoint and its index.
--
-- A checkpoint is a directory dir/step_<N>/ holding model_rank<R>.safetensors
-- (the tensors rank R writes), index.json (written last, by rank 0) and
-- config.lua; lunar.checkpoint's module doc describes every field. This
-- module knows the names, reads JSON (lunar.json) and checks index.json, and
-- lists the complete checkpoints of a directory. It changes no state.
--
--   format.encode(v) / format.decode(text, where)   JSON (lunar.json)
--   format.read_index(path)   -> index (checked), dir, index path
--   format.complete(dir)      -> {{step=, path=}, ...} sorted by step
--   format.latest(dir)        -> the newest complete checkpoint's path, its step; or nil
--
-- Numbers in JSON: lunar.json writes every number exactly and reads it back
-- with its math.type (an integer as an integer: counts, shapes, offsets, a
-- SEED >= 1e14; a float as the same float: a learning rate, MLP_RATIO), so
-- values read from index.json compare with ==.
local format = {}

format.FORMAT = 'lunar-checkpoint'
format.VERSION = 1

-- The config keys that fix the model's parameter shapes.
format.MODEL_KEYS = {'IMG_SIZE', 'PATCH_SIZE', 'IN_CHANS', 'HIDDEN_SIZE', 'DEPTH', 'NUM_HEADS', 'MLP_RATIO',
  'NUM_CLASSES', 'IMG_DIMS'}

local io_ = lunar.io

local json = require('lunar.json')

-- ---------------------------------------------------------------------------
-- small helpers shared by the checkpoint modules

function format.join(a, b)
  if a == '' then return b end
  return (a:sub(-1) == '/' and a or a .. '/') .. b
end
local join = format.join

function format.numel(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

--- A shape as text: '[2, 3]'.
function format.shape_str(s)
  local t = {}
  for i, v in ipairs(s) do t[i] = tostring(math.tointeger(v) or v) end
  return '[' .. table.concat(t, ', ') .. ']'
end
local shape_str = format.shape_str

function format.same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

--- Ranges {{0, s}, ...} covering the whole of a tensor of this shape.
function format.whole(shape)
  local r = {}
  for i, s in ipairs(shape) do r[i] = {0, s} end
  return r
end

--- The safetensors dtype name of tensor t ('F32', 'BF16', ...).
function format.st_dtype(t) return t:dtype():upper() end

--- v when it is an integer (a decoded JSON number without a fraction or
-- exponent), or nil.
function format.int(v)
  if type(v) ~= 'number' then return nil end
  return math.tointeger(v)
end
local int = format.int

-- ---------------------------------------------------------------------------
-- JSON

--- v as JSON text. Errors (NaN, infinity, a function) name `what`.
function format.encode(v, what)
  local ok, s = pcall(json.encode, v)
  if not ok then error(string.format('checkpoint: cannot write %s as JSON (%s)', what or 'a value', tostring(s)), 0) end
  return s
end

--- The value of JSON text; an error names `where` (a file).
function format.decode(text, where)
  local ok, v = pcall(json.decode, text)
  if not ok then error(string.format('%s: not valid JSON (%s)', where, tostring(v):gsub('^.-: ', '')), 0) end
  return v
end

-- ---------------------------------------------------------------------------
-- the checkpoints of a directory

--- The name of rank R's shard file, and whether a name is one.
function format.shard_file(rank) return string.format('model_rank%d.safetensors', rank) end
function format.is_shard_file(name) return name:match('^model_rank%d+%.safetensors$') ~= nil end

--- Complete checkpoints in dir (step_<N> directories holding index.json;
-- .tmp directories are ignored): a list of {step=, path=} sorted by step.
function format.complete(dir)
  local names = io_.listdir(dir)
  local out = {}
  if not names then return out end
  for _, n in ipairs(names) do
    local s = n:match('^step_(%d+)$')
    if s and io_.stat(join(join(dir, n), 'index.json')) == 'file' then
      out[#out + 1] = {step = math.tointeger(tonumber(s)), path = join(dir, n)}
    end
  end
  table.sort(out, function(a, b) return a.step < b.step end)
  return out
end

--- The newest complete checkpoint in dir and its step, or nil.
function format.latest(dir)
  if type(dir) ~= 'string' or dir == '' then return nil end
  local list = format.complete(dir)
  if #list == 0 then return nil end
  return list[#list].path, list[#list].step
end

-- ---------------------------------------------------------------------------
-- reading index.json

--- Checks the slices of tensor `name` of the index (their ranges within the
-- full shape, each the size of its local range); calls bad(msg) when wrong.
local function check_tensor(name, t, bad)
  if type(t) ~= 'table' or type(t.shape) ~= 'table' or type(t.slices) ~= 'table' or type(t.dtype) ~= 'string' then
    bad(string.format("tensor '%s': expected {dtype=, shape=, slices=}", name))
  end
  for i, s in ipairs(t.shape) do
    if not int(s) or s < 0 then bad(string.format("tensor '%s': dim %d of its shape is not an integer >= 0", name, i)) end
  end
  for _, sl in ipairs(t.slices) do
    local ok = type(sl) == 'table' and type(sl.file) == 'string' and type(sl.key) == 'string' and
      type(sl.ranges) == 'table' and type(sl['local']) == 'table' and type(sl.shape) == 'table' and
      #sl.ranges == #t.shape and #sl['local'] == #t.shape and not sl.file:find('/', 1, true)
    for d = 1, ok and #t.shape or 0 do
      local r, l = sl.ranges[d], sl['local'][d]
      ok = ok and type(r) == 'table' and type(l) == 'table' and int(r[1]) and int(r[2]) and int(l[1]) and int(l[2]) and
        r[1] >= 0 and r[2] >= 0 and r[1] + r[2] <= t.shape[d] and r[2] == l[2] and l[1] >= 0 and
        int(sl.shape[d]) and l[1] + l[2] <= sl.shape[d]
    end
    if not ok then bad(string.format("tensor '%s': a slice is not {file=, key=, shape=, ranges=, local=} within " ..
      'the shape %s', name, shape_str(t.shape))) end
  end
end

--- Reads and checks index.json of the checkpoint at path (a step directory
-- or its index.json). Returns index, the directory, the index path. Errors
-- name the directory or index.json and what is wrong (a path that is not a
-- checkpoint is a user error, lunar.error: printed without a traceback).
function format.read_index(path)
  if type(path) ~= 'string' or path == '' then lunar.error('checkpoint: no checkpoint path given') end
  local dir, ipath
  if path:match('index%.json$') then
    ipath, dir = path, path:match('^(.*)/[^/]*$') or '.'
  else
    dir, ipath = path:gsub('/+$', ''), join(path, 'index.json')
  end
  local kind = io_.stat(dir)
  if not kind then lunar.error(string.format('checkpoint %s: no such directory', dir)) end
  if kind ~= 'dir' then lunar.error(string.format('checkpoint %s: not a directory (expected a step_<N> directory)', dir)) end
  local f = io.open(ipath, 'rb')
  if not f then
    local hint = ''
    if format.latest(dir) then
      hint = string.format(" (%s holds checkpoints: give one of its step_<N> directories, or RESUME='auto' with " ..
        'CHECKPOINT_DIR=%s)', dir, dir)
    end
    lunar.error(string.format('checkpoint %s: missing (an incomplete or interrupted save, or not a checkpoint directory)%s',
      ipath, hint))
  end
  local text = f:read('a')
  f:close()
  local idx = format.decode(text, 'checkpoint ' .. ipath)
  local function bad(msg) error(string.format('checkpoint %s: %s', ipath, msg), 0) end
  if type(idx) ~= 'table' or idx.format ~= format.FORMAT then bad('not a Lunar checkpoint index (format)') end
  if not int(idx.version) or int(idx.version) > format.VERSION then
    bad('unsupported version ' .. tostring(idx.version))
  end
  if not int(idx.step) then bad('step is missing or not an integer') end
  if type(idx.tensors) ~= 'table' then bad('tensors is missing') end
  if type(idx.files) ~= 'table' then bad('files is missing') end
  for name, t in pairs(idx.tensors) do check_tensor(name, t, bad) end
  return idx, dir, ipath
end

return format
