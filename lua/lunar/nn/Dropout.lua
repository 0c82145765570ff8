--- lunar.nn.Dropout: inverted dropout (Srivastava et al. 2014) whose mask is a
-- pure function of (seed, the module's path, a per-call counter) through
-- Philox (rng.h): nothing is stored, backward regenerates the mask, and the
-- mask of a given call never depends on the parallel layout.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local ops = lunar.ops

local Dropout = class('Dropout', Module)

function Dropout:__init(p, seed)
  Module.__init(self)
  self.p, self.seed, self.calls = p or 0, seed or 0, 0
end

function Dropout:extra_repr() return string.format('p=%g', self.p) end

function Dropout:forward(x)
  if not self.training or self.p == 0 then return x, {identity = true} end
  self.calls = self.calls + 1
  local stream = lunar.stream_id(self.path .. '#' .. self.calls)
  return ops.dropout(x, self.p, self.seed, stream, 0), {stream = stream}
end

function Dropout:backward(ctx, dy)
  if ctx.identity then return dy end
  return ops.dropout_backward(dy, self.p, self.seed, ctx.stream, 0)
end

return Dropout
