--- lunar.nn.Concat: every child reads the same input, their outputs are
-- concatenated along a dimension (torch/nn's Concat; in PyTorch
-- torch.cat([m(x) for m in ms], dim)).
--
--   c = nn.Concat(dim, {m1, m2})            children '0', '1'
--   c = nn.Concat(dim, {{'a', m1}, {'b', m2}})
--   y, ctx = c:forward(x)       y = cat(m1(x), m2(x), ...) along dim (1-based, as
--                               lunar's narrow; the outputs must agree on every
--                               other dim and be f32)
--   dx = c:backward(ctx, dy, need_dx)   dx = sum_i m_i's input gradient of its
--                               slice of dy
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local real = require('lunar.nn.precision').real
local Sequential = require('lunar.nn.Sequential')
local ops = lunar.ops

local Concat = class('Concat', Module)

Concat.apply = Sequential.apply

--- @param dim integer the dimension to concatenate along (1-based)
-- @param list the children: modules or {name, module} pairs
function Concat:__init(dim, list)
  Module.__init(self)
  if math.type(dim) ~= 'integer' or dim < 1 then
    error('nn.Concat: dim must be a positive integer (1-based), got ' .. tostring(dim), 2)
  end
  if type(list) ~= 'table' or #list == 0 then error('nn.Concat: expected a non-empty list of modules', 2) end
  self.cat_dim = dim
  for i, e in ipairs(list) do
    local name, m = Sequential.entry('nn.Concat', i, e, tostring(i - 1))
    Sequential.add_child(self, 'nn.Concat', name, m)
  end
end

function Concat:extra_repr() return string.format('dim=%d, %d modules', self.cat_dim, #self._children) end

--- Concatenates the children's outputs `outs` along self.cat_dim into a new
-- f32 tensor on `device`, checking that every other dim agrees (errors name
-- the container, the child and the shapes); frees each output except those
-- in `keep` (inputs a child returned as its output). Returns y and the sizes
-- along the dim. Shared with nn.Parallel.
function Concat.cat_outputs(self, outs, device, keep)
  local d = self.cat_dim
  local sizes, shape = {}, nil
  for i, o in ipairs(outs) do
    local s = o:shape()
    if not shape then
      shape = s
      if d > #s then
        self:shape_error(string.format('output of child %d has no dim %d', i, d), s, {'>= ' .. d .. ' dims'})
      end
    else
      local ok = #s == #shape
      for k = 1, #s do if k ~= d and s[k] ~= shape[k] then ok = false end end
      if not ok then
        local want = {}
        for k = 1, #shape do want[k] = k == d and '*' or shape[k] end
        self:shape_error(string.format('output of child %d (every dim but %d must agree)', i, d), s, want)
      end
    end
    sizes[i] = s[d]
  end
  local total = 0
  for _, n in ipairs(sizes) do total = total + n end
  local yshape = {}
  for k = 1, #shape do yshape[k] = shape[k] end
  yshape[d] = total
  local y = lunar.empty(yshape, real(outs[1]), device)
  local off = 1
  for i, o in ipairs(outs) do
    y:narrow(d, off, sizes[i]):copy_(o)
    off = off + sizes[i]
    if not keep[o] then o:free() end
  end
  return y, sizes
end

--- x -> cat of the children's outputs; ctx owns their contexts and refers to x.
function Concat:forward(x)
  local outs, ctxs = {}, {}
  for i, c in ipairs(self._children) do outs[i], ctxs[i] = Sequential.child_forward(c.module, x) end
  local y, sizes = Concat.cat_outputs(self, outs, x:device(), {[x] = true})
  if not self.training then
    for _, ci in ipairs(ctxs) do ci:free() end
    return y, Context(nil, {evaluation = true})
  end
  local ctx = Context(nil, {x = x, sizes = sizes})
  for i, ci in ipairs(ctxs) do ctx:own('c' .. i, ci) end
  return y, ctx
end

--- dy -> the sum of the children's input gradients of their slices.
function Concat:backward(ctx, dy, need_dx)
  if ctx.evaluation then error('nn.Concat:backward: the forward ran in evaluation mode and kept nothing', 2) end
  local d = self.cat_dim
  local want = need_dx ~= false
  local dx
  local off = 1
  for i, c in ipairs(self._children) do
    local n = ctx.sizes[i]
    local dyi = dy:narrow(d, off, n):contiguous()
    off = off + n
    local gi = c.module:backward(ctx['c' .. i], dyi, want)
    ctx._owns['c' .. i] = nil; ctx['c' .. i] = nil
    if gi then
      if not dx then
        dx = gi == dyi and dyi:clone() or gi
      else
        ops.add_(dx, gi)
        if gi ~= dyi then gi:free() end
      end
    end
    if dx ~= dyi then dyi:free() end
  end
  ctx:free()
  return dx
end

return Concat
