--- lunar.checkpoint.reshard: where a parameter's local tensor sits in the
-- full tensor, and the reader that assembles any rank's pieces from the
-- slices another layout saved.
--
--   reshard.pieces(p)          -> {full_shape=, pieces={{full=, ["local"]=}, ...}, sharded=}
--   reshard.register_slicer(fn)   fn(p) -> nil | {full_shape=, pieces=} tried first
--   local r = reshard.reader(index, dir, index_path)
--   r:fill(name, dst, pieces, what); r:close()
--
-- Ranges are lists of {start, length} per dim, 0-based; full ranges are in
-- the full tensor, local ranges in the stored (or this rank's) tensor.
-- Built-in rules: a plain parameter (the whole tensor); p.shard = {dim=,
-- groups=, size=, rank=, full_shape=} (lunar.nn.shard_pieces: the
-- tensor-parallel layout of lunar.parallel); p.shard = {dim=, start=,
-- length=, full_shape=} (one contiguous slice); p.shard = {pieces=,
-- full_shape=, replica=} (N-d pieces in this module's form, the 2D / 2.5D
-- layouts of lunar.parallel.tensor_2d: a linear's weight split along both
-- dims, rows block j of q (of each of its groups) and columns block i; a
-- vector split along its feature dim in q blocks and each block in q pieces;
-- replica k > 0, a 2.5D depth layer, holds a copy of layer 0's pieces and is
-- not written).
local nn = require('lunar.nn')
local format = require('lunar.checkpoint.format')

local reshard = {}

local join, shape_str, same_shape, whole = format.join, format.shape_str, format.same_shape, format.whole
local io_ = lunar.io

-- ---------------------------------------------------------------------------
-- pieces

local slicers = {}
local intersect       -- box intersection (below)

--- Registers fn(p) -> nil | {full_shape=, pieces={{full=ranges, ["local"]=ranges}, ...}},
-- tried (last registered first) before the built-in rules; p is an entry of
-- model:parameters() (name, shape, param, shard, ...).
function reshard.register_slicer(fn)
  assert(type(fn) == 'function', 'checkpoint.register_slicer: expected a function')
  table.insert(slicers, fn)
end

--- Where parameter p's local tensor sits in the full tensor: {full_shape=,
-- pieces={{full=, ["local"]=}, ...}, sharded=bool}.
function reshard.pieces(p)
  for i = #slicers, 1, -1 do
    local r = slicers[i](p)
    if r then
      r.sharded = r.sharded ~= false and not (#r.pieces == 1 and same_shape(r.full_shape, p.shape))
      return r
    end
  end
  local sh = p.shard
  if not sh then return {full_shape = p.shape, pieces = {{full = whole(p.shape), ['local'] = whole(p.shape)}}, sharded = false} end
  local fs = sh.full_shape
  if sh.pieces then return {full_shape = fs, pieces = sh.pieces, sharded = true, replica = sh.replica} end
  assert(fs and sh.dim, 'checkpoint: parameter ' .. tostring(p.name) .. ' has a shard without dim and full_shape')
  local d = sh.dim
  local function ranges(start, len)
    local r = whole(fs)
    r[d] = {start, len}
    return r
  end
  local pieces = {}
  if sh.start then
    local loc = whole(p.shape)
    pieces[1] = {full = ranges(sh.start, sh.length or p.shape[d]), ['local'] = loc}
  else
    for _, pc in ipairs(nn.shard_pieces(sh)) do
      local loc = whole(p.shape)
      loc[d] = {pc.local_offset, pc.len}
      pieces[#pieces + 1] = {full = ranges(pc.full_offset, pc.len), ['local'] = loc}
    end
  end
  return {full_shape = fs, pieces = pieces, sharded = true}
end

--- The row-major flat range [lo, lo + len) (0-based) of a tensor of
-- `shape`, as boxes each contiguous in that order (at most 2 per dimension):
-- {{ranges = box in the tensor, shape = box's shape, offset = its first
-- element's flat offset - lo, n = its elements}, ...} in order.
function reshard.flat_boxes(shape, lo, len)
  local out = {}
  local function rec(prefix, d, a, b)       -- flat range [a, b) of dims d.. at index prefix
    if b <= a then return end
    if d > #shape then
      out[#out + 1] = {prefix = prefix, dims = {}, start = a}
      return
    end
    local stride = 1
    for k = d + 1, #shape do stride = stride * shape[k] end
    local i0, i1 = a // stride, (b - 1) // stride
    local function full_rows(from, to)    -- rows from..to-1 of dim d, whole below
      if to <= from then return end
      local r = {}
      for k = 1, d - 1 do r[k] = {prefix[k], 1} end
      r[d] = {from, to - from}
      for k = d + 1, #shape do r[k] = {0, shape[k]} end
      out[#out + 1] = {ranges = r, start = from * stride}
    end
    local function sub(i, x, y)
      local p = {}
      for k = 1, d - 1 do p[k] = prefix[k] end
      p[d] = i
      rec(p, d + 1, x, y)
    end
    if i0 == i1 then
      if a % stride == 0 and b - a == stride then full_rows(i0, i0 + 1) else sub(i0, a - i0 * stride, b - i0 * stride) end
      return
    end
    local first = i0
    if a % stride ~= 0 then sub(i0, a - i0 * stride, stride); first = i0 + 1 end
    local last = i1
    if b % stride ~= 0 then last = i1 - 1 end
    full_rows(first, last + 1)
    if b % stride ~= 0 then sub(i1, 0, b - i1 * stride) end
  end
  -- the flat offsets of boxes found at the deepest level are relative to that level: use the prefix
  rec({}, 1, lo, lo + len)
  local res = {}
  for _, bx in ipairs(out) do
    local r = bx.ranges
    if not r then     -- a run inside the last dimension (prefix covers every dim but the last)
      r = {}
      for k = 1, #shape do r[k] = {bx.prefix[k], 1} end
    end
    -- the box's first element and size, in the whole tensor's row-major order
    local first, n, stride = 0, 1, 1
    local bshape = {}
    for k = #shape, 1, -1 do
      first = first + r[k][1] * stride
      stride = stride * shape[k]
      n = n * r[k][2]
      bshape[k] = r[k][2]
    end
    res[#res + 1] = {ranges = r, shape = bshape, offset = first - lo, n = n}
  end
  return res
end

--- The pieces (as reshard.pieces gives them) of box `box` (ranges in p's
-- local tensor, reshard.flat_boxes) of parameter p: {full_shape=,
-- pieces={{full=, ["local"]= (within the box)}, ...}}; for a ZeRO shard, whose
-- pieces are flat ranges of the local (tensor-parallel) parameter.
function reshard.box_pieces(p, box)
  local pc = reshard.pieces(p)
  local out = {}
  for _, piece in ipairs(pc.pieces) do
    local I = intersect(piece['local'], box)
    if I then
      local full, loc = {}, {}
      for d = 1, #I do
        full[d] = {I[d][1] - piece['local'][d][1] + piece.full[d][1], I[d][2]}
        loc[d] = {I[d][1] - box[d][1], I[d][2]}
      end
      out[#out + 1] = {full = full, ['local'] = loc}
    end
  end
  return {full_shape = pc.full_shape, pieces = out, sharded = pc.sharded}
end

-- ---------------------------------------------------------------------------
-- the reader

function intersect(a, b)
  local r = {}
  for d = 1, #a do
    local s = math.max(a[d][1], b[d][1])
    local e = math.min(a[d][1] + a[d][2], b[d][1] + b[d][2])
    if e <= s then return nil end
    r[d] = {s, e - s}
  end
  return r
end

local function volume(r)
  local n = 1
  for _, x in ipairs(r) do n = n * x[2] end
  return n
end

local function narrow_all(t, ranges)
  for d, r in ipairs(ranges) do
    if r[1] ~= 0 or r[2] ~= t:size(d) then t = t:narrow(d, r[1] + 1, r[2]) end
  end
  return t
end

--- A loader of the tensors of one checkpoint: opens its files on demand,
-- checks them against the index, fills destination tensors.
local Reader = {}
Reader.__index = Reader

--- A reader of the checkpoint whose checked index (format.read_index) is idx.
function reshard.reader(idx, dir, ipath)
  return setmetatable({idx = idx, dir = dir, ipath = ipath, files = {}}, Reader)
end

function Reader:file(name)
  local r = self.files[name]
  if r then return r end
  local ok, res = pcall(io_.open_safetensors, join(self.dir, name))
  if not ok then
    error('checkpoint: ' .. tostring(res), 0)   -- names the file, and the tensor at fault
  end
  self.files[name] = res
  return res
end

function Reader:close()
  for _, r in pairs(self.files) do r:close() end
  self.files = {}
end

--- Fills dst (a CPU tensor of p's local shape) with tensor `name` of the
-- checkpoint, placed by pieces pc (reshard.pieces); `what` says what the
-- tensor is to this model, for the messages. Errors name the file and the
-- tensor.
function Reader:fill(name, dst, pc, what)
  local t = self.idx.tensors[name]
  if not t then
    error(string.format("checkpoint %s: no tensor '%s' (%s of this model)", self.ipath, name, what), 0)
  end
  if not same_shape(t.shape, pc.full_shape) then
    error(string.format("checkpoint %s: tensor '%s' is %s in the checkpoint, %s in this model", self.ipath, name,
      shape_str(t.shape), shape_str(pc.full_shape)), 0)
  end
  local want = format.st_dtype(dst)
  if t.dtype ~= want then
    error(string.format("checkpoint %s: tensor '%s' is %s in the checkpoint, %s in this model", self.ipath, name,
      t.dtype, want), 0)
  end
  -- the slices must not overlap
  for i = 1, #t.slices do
    for j = i + 1, #t.slices do
      if intersect(t.slices[i].ranges, t.slices[j].ranges) then
        error(string.format("checkpoint %s: tensor '%s': slices in %s and %s overlap", self.ipath, name,
          t.slices[i].file, t.slices[j].file), 0)
      end
    end
  end
  for _, piece in ipairs(pc.pieces) do
    local covered = 0
    for _, sl in ipairs(t.slices) do
      local I = intersect(piece.full, sl.ranges)
      if I then
        local r = self:file(sl.file)
        local fpath = join(self.dir, sl.file)
        local info = r:info(sl.key)
        if not info then
          error(string.format("checkpoint %s: no tensor '%s' (listed in %s)", fpath, sl.key, self.ipath), 0)
        end
        if info.dtype ~= t.dtype then
          error(string.format("checkpoint %s: tensor '%s' is %s, but %s says %s", fpath, sl.key, info.dtype,
            self.ipath, t.dtype), 0)
        end
        if not same_shape(info.shape, sl.shape) then
          error(string.format("checkpoint %s: tensor '%s' has shape %s, but %s says %s", fpath, sl.key,
            shape_str(info.shape), self.ipath, shape_str(sl.shape)), 0)
        end
        local src, dsto = {}, {}
        for d = 1, #I do
          src[d] = {I[d][1] - sl.ranges[d][1] + sl['local'][d][1], I[d][2]}
          dsto[d] = {I[d][1] - piece.full[d][1] + piece['local'][d][1], I[d][2]}
        end
        local block = r:read(sl.key, src)
        narrow_all(dst, dsto):copy_(block)
        block:free()
        covered = covered + volume(I)
      end
    end
    if covered ~= volume(piece.full) then
      error(string.format("checkpoint %s: tensor '%s': the slices cover %d of the %d elements this rank needs",
        self.ipath, name, covered, volume(piece.full)), 0)
    end
  end
end

return reshard
