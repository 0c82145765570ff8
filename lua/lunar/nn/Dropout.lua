--- lunar.nn.Dropout: inverted dropout (Srivastava et al. 2014) whose mask is a
-- pure function of (seed, the module's path, a per-call counter) through
-- Philox (rng.h): nothing is stored, backward regenerates the mask, and the
-- mask of a given call never depends on the parallel layout. A module that
-- runs on one slice of a tensor split across ranks (sequence parallelism:
-- each tensor rank holds 1/T of the tokens) sets `rank_offset` to its rank,
-- so the ranks draw disjoint parts of the stream (element offset
-- rank_offset * numel) instead of the same mask for every slice. A module
-- whose rows (dim 1: samples) are some rows of a larger batch sets `rows`, a
-- function(n) -> the 0-based row of the larger batch of each of its n rows:
-- row i then draws the elements that row draws in the larger batch (offset
-- row * numel / n; lunar.parallel.layerwise: the single-rank masks). A module
-- that runs on a block of a tensor split in rows and columns (the 2D / 2.5D /
-- 3D tensor modes) sets `placement`, a function x -> offset, row_len,
-- row_stride: x is rows of row_len elements row_stride apart in the whole
-- tensor, from element `offset` on, and each element draws the mask it has in
-- the whole tensor (ops.dropout's rows form, one kernel), so the split run
-- drops what one rank drops (lunar.parallel.tensor_2d's dropout).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local ops = lunar.ops

local Dropout = class('Dropout', Module)

function Dropout:__init(p, seed)
  Module.__init(self)
  self.p, self.seed, self.calls = p or 0, seed or 0, 0
  self.rank_offset = 0
  self.placement = nil
end

function Dropout:extra_repr() return string.format('p=%g', self.p) end

--- x -> y: a new tensor in training mode with p > 0, else x itself (the
-- identity). ctx keeps only the stream and offset (no tensor).
function Dropout:forward(x)
  if not self.training or self.p == 0 then return x, Context(nil, {identity = true}) end
  self.calls = self.calls + 1
  local stream = lunar.stream_id(self.path .. '#' .. self.calls)
  if self.rows then return self:_forward_rows(x, stream) end
  local offset, row_len, row_stride = self.rank_offset * x:numel(), nil, nil
  if self.placement then offset, row_len, row_stride = self.placement(x) end
  return ops.dropout(x, self.p, self.seed, stream, offset, row_len, row_stride),
    Context(nil, {stream = stream, offset = offset, row_len = row_len, row_stride = row_stride})
end

-- Each row i of x at offset rows(n)[i] * (numel / n) of the stream (see the module doc).
local function by_rows(x, rows, fn)
  local n = x:shape()[1]
  local m = x:numel() // n
  local xc = x:is_contiguous() and x or x:contiguous()
  local y = lunar.empty(x:shape(), x:dtype(), x:device())
  for i = 1, n do
    local xi, yi = xc:narrow(1, i, 1), y:narrow(1, i, 1)
    local r = fn(xi, rows[i] * m)
    yi:copy_(r)
    r:free(); xi:free(); yi:free()
  end
  if xc ~= x then xc:free() end
  return y
end

function Dropout:_forward_rows(x, stream)
  local rows = self.rows(x:shape()[1])
  local p, seed = self.p, self.seed
  local y = by_rows(x, rows, function(xi, off) return ops.dropout(xi, p, seed, stream, off) end)
  return y, Context(nil, {stream = stream, rows = rows})
end

--- The state that decides the next masks: the call counter (for
-- lunar.nn.Checkpoint, whose replay of a forward must draw the masks that
-- forward drew). set_rng_state(n) puts it back.
function Dropout:rng_state() return self.calls end

--- Sets the call counter (an integer from rng_state).
function Dropout:set_rng_state(calls) self.calls = calls end

--- dy -> dx (the same mask regenerated), or dy itself for the identity.
function Dropout:backward(ctx, dy, need_dx)
  local identity, stream, offset, rows = ctx.identity, ctx.stream, ctx.offset, ctx.rows
  local row_len, row_stride = ctx.row_len, ctx.row_stride
  ctx:free()
  if need_dx == false then return nil end
  if identity then return dy end
  if rows then
    local p, seed = self.p, self.seed
    return by_rows(dy, rows, function(di, off) return ops.dropout_backward(di, p, seed, stream, off) end)
  end
  return ops.dropout_backward(dy, self.p, self.seed, stream, offset, row_len, row_stride)
end

return Dropout
