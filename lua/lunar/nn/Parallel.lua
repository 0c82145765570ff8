--- lunar.nn.Parallel: child i reads slice i of the input along one dim,
-- their outputs are concatenated along another (torch/nn's
-- nn.Parallel(inputDimension, outputDimension); in PyTorch
-- torch.cat([m(x.select(in_dim, i)) for i, m in enumerate(ms)], out_dim)).
--
--   p = nn.Parallel(in_dim, out_dim, {m1, m2})          children '0', '1'
--   p = nn.Parallel(in_dim, out_dim, {{'a', m1}, {'b', m2}})
--   y, ctx = p:forward(x)    x's size along in_dim must be the number of
--                            children; child i reads x:select(in_dim, i) (that
--                            dim dropped, as torch/nn's select), y = cat of the
--                            outputs along out_dim (1-based; the outputs must
--                            agree on every other dim and be f32)
--   dx = p:backward(ctx, dy, need_dx)   slice i of dx along in_dim is child
--                            i's input gradient of its slice of dy
--
-- E.g. x [B, 2, C] and nn.Parallel(2, 2, {nn.Linear(C, 4), nn.Identity()}):
-- y [B, 4 + C] = cat(Linear(x[:, 1, :]), x[:, 2, :]).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local real = require('lunar.nn.precision').real
local Sequential = require('lunar.nn.Sequential')
local Concat = require('lunar.nn.Concat')

local Parallel = class('Parallel', Module)

Parallel.apply = Sequential.apply

--- @param in_dim integer the dimension sliced, one slice per child (1-based)
-- @param out_dim integer the dimension of the children's outputs to concatenate along (1-based)
-- @param list the children: modules or {name, module} pairs
function Parallel:__init(in_dim, out_dim, list)
  Module.__init(self)
  for _, d in ipairs({{'in_dim', in_dim}, {'out_dim', out_dim}}) do
    if math.type(d[2]) ~= 'integer' or d[2] < 1 then
      error(string.format('nn.Parallel: %s must be a positive integer (1-based), got %s', d[1], tostring(d[2])), 2)
    end
  end
  if type(list) ~= 'table' or #list == 0 then error('nn.Parallel: expected a non-empty list of modules', 2) end
  self.in_dim, self.cat_dim = in_dim, out_dim
  for i, e in ipairs(list) do
    local name, m = Sequential.entry('nn.Parallel', i, e, tostring(i - 1))
    Sequential.add_child(self, 'nn.Parallel', name, m)
  end
end

function Parallel:extra_repr()
  return string.format('in_dim=%d, out_dim=%d, %d modules', self.in_dim, self.cat_dim, #self._children)
end

--- x -> cat of child i's output on slice i; ctx owns the slices (contiguous
-- copies the children refer to) and the children's contexts, and refers to x.
function Parallel:forward(x)
  local s = x:shape()
  local d, n = self.in_dim, #self._children
  if #s < d or s[d] ~= n then
    local want = {}
    for k = 1, math.max(#s, d) do want[k] = k == d and n or '*' end
    self:shape_error(string.format('input (dim %d: one slice per child)', d), s, want)
  end
  local xs, outs, ctxs, keep = {}, {}, {}, {}
  for i, c in ipairs(self._children) do
    local v = x:select(d, i)
    xs[i] = v:contiguous()
    v:free()
    keep[xs[i]] = true
    outs[i], ctxs[i] = Sequential.child_forward(c.module, xs[i])
  end
  local y, sizes = Concat.cat_outputs(self, outs, x:device(), keep)
  if not self.training then
    for i, ci in ipairs(ctxs) do ci:free(); xs[i]:free() end
    return y, Context(nil, {evaluation = true})
  end
  local ctx = Context(nil, {x = x, sizes = sizes})
  for i, ci in ipairs(ctxs) do ctx:own('c' .. i, ci); ctx:own('x' .. i, xs[i]) end
  return y, ctx
end

--- dy -> dx: slice i along in_dim is child i's input gradient of its slice
-- of dy along out_dim; accumulates the children's parameter gradients.
function Parallel:backward(ctx, dy, need_dx)
  if ctx.evaluation then error('nn.Parallel:backward: the forward ran in evaluation mode and kept nothing', 2) end
  local want = need_dx ~= false
  local dx = want and lunar.zeros(ctx.x:shape(), real(dy), dy:device()) or nil
  local off = 1
  for i, c in ipairs(self._children) do
    local n = ctx.sizes[i]
    local view = dy:narrow(self.cat_dim, off, n)
    local dyi = view:contiguous()
    view:free()
    off = off + n
    local gi = c.module:backward(ctx['c' .. i], dyi, want)
    ctx._owns['c' .. i] = nil; ctx['c' .. i] = nil
    ctx:release('x' .. i)
    if gi then
      local slice = dx:select(self.in_dim, i)
      slice:copy_(gi)
      slice:free()
      if gi ~= dyi then gi:free() end
    end
    dyi:free()
  end
  ctx:free()
  return dx
end

return Parallel
