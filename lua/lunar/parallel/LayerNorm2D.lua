--- lunar.parallel.LayerNorm2D: LayerNorm (Ba et al. 2016) over features split
-- in q blocks along a row of the 2D / 2.5D grid (Optimus, arXiv 2104.05343,
-- sec. 3.3; Colossal-AI's legacy LayerNorm2D): each rank holds the feature
-- block j of its rows; the row statistics are sums all-reduced over the row
-- group, two-pass (the mean, then the sum of squared deviations: one
-- all_reduce of R numbers each), and the backward's two row sums
-- (sum dxhat, sum dxhat*xhat) one all_reduce of 2R numbers.
--
--   mean = sum_row(x)/C,  var = sum_row((x - mean)^2)/C,  rstd = 1/sqrt(var + eps)
--   y = (x - mean) * rstd * weight_j + bias_j
--   dx = rstd * (dxhat - sum_row(dxhat)/C - xhat * sum_row(dxhat*xhat)/C),  dxhat = dy * weight_j
--
-- Row sums and broadcasts are GEMMs with a ones vector (f32 accumulation),
-- products tensor arithmetic, rstd = Tensor:rsqrt(eps) on the device (no host
-- round trip).
-- weight and bias are vector pieces [C/q^2] (lunar.parallel.tensor_2d),
-- gathered over the column group when used, gradients reduce-scattered back.
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local tensor_2d = require('lunar.parallel.tensor_2d')
local ops = lunar.ops

local LayerNorm2D = class('LayerNorm2D', Module)

--- @param dim integer C (full)
-- @param eps number (default 1e-6)
-- @param opts {tp = a tensor_2d factory}
function LayerNorm2D:__init(dim, eps, opts)
  Module.__init(self)
  local tp = assert(opts and opts.tp, 'LayerNorm2D: opts.tp (a tensor_2d factory) is required')
  self.tp, self.dim, self.eps = tp, dim, eps or 1e-6
  self.dim_local = dim // tp.q
  tp:vector_param(self, 'weight', {dim}, 1, {kind = 'ones'})
  tp:vector_param(self, 'bias', {dim}, 1, {kind = 'zeros'})
end

function LayerNorm2D:extra_repr()
  return string.format('%d, eps=%g (%d on this rank, row statistics over %d ranks)', self.dim, self.eps,
    self.dim_local, self.tp.q)
end

-- [R, 1] row sums of a [R, c] (a GEMM with ones [1, c]).
local function rowsum(x, c) local o = lunar.ones({1, c}, 'f32', x:device()); local s = ops.linear(x, o); o:free(); return s end
-- v [R, 1] repeated along c columns (a K = 1 GEMM: exact).
local function per_row(v, c) local o = lunar.ones({c, 1}, 'f32', v:device()); local s = ops.linear(v, o); o:free(); return s end
-- w [c] repeated along R rows (a K = 1 GEMM: exact).
local function per_col(w, R)
  local c = w:numel()
  local o = lunar.ones({R, 1}, 'f32', w:device())
  local wv = w:view(c, 1)
  local s = ops.linear(o, wv)
  o:free(); wv:free()
  return s
end
-- into [c] += the column sums of x [R, c].
local function colsum_into(x, into)
  local R, c = x:shape()[1], x:shape()[2]
  local o = lunar.ones({R, 1}, 'f32', x:device())
  local iv = into:view(c, 1)
  ops.linear_backward(x, o, iv, iv, nil, false)
  o:free(); iv:free()
end

--- x [..., C/q] (f32) -> y [..., C/q] (bf16 under precision = 'bf16'); ctx
-- owns xhat and rstd.
function LayerNorm2D:forward(x)
  local shape = x:shape()
  local c, C = self.dim_local, self.dim
  if shape[#shape] ~= c then self:shape_error("normalized dim (this rank's block)", shape, {'*', c}) end
  local row = self.tp.groups.row
  local xc0 = x:is_contiguous() and x or x:contiguous()
  local x2 = xc0:view(xc0:numel() // c, c)
  local R = x2:shape()[1]
  local s = row:all_reduce(rowsum(x2, c), 'sum')
  local mean = s * (1 / C); s:free()
  local mb = per_row(mean, c); mean:free()
  local xc = x2 - mb; mb:free()
  local sq = xc * xc
  local v = row:all_reduce(rowsum(sq, c), 'sum'); sq:free()
  local var = v * (1 / C); v:free()
  local rstd = var:rsqrt(self.eps); var:free()   -- [R, 1] on x's device
  local rb = per_row(rstd, c)
  local xhat = xc * rb; xc:free(); rb:free()
  local w, b = self.tp:gather_vector(self, 'weight'), self.tp:gather_vector(self, 'bias')
  local wb, bb = per_col(w, R), per_col(b, R)
  w:free(); b:free()
  local t = xhat * wb; wb:free()
  local y = t + bb; t:free(); bb:free()
  x2:free()
  if xc0 ~= x then xc0:free() end
  y = tensor_2d.reshape(y, shape)
  if self.precision == 'bf16' then
    local y16 = ops.cast_bf16(y)
    y:free()
    y = y16
  end
  return y, Context({xhat = xhat, rstd = rstd})
end

--- Accumulates the weight and bias pieces' gradients; returns dx [..., C/q]
-- f32 (nil when need_dx is false; the row all_reduce is skipped).
function LayerNorm2D:backward(ctx, dy, need_dx)
  local c, C = self.dim_local, self.dim
  local tp = self.tp
  local dyc = dy:is_contiguous() and dy or dy:contiguous()
  local shape = dy:shape()
  local dy2 = dyc:view(dyc:numel() // c, c)
  local R = dy2:shape()[1]
  local xhat = ctx.xhat
  local gw, gb = lunar.zeros({c}, 'f32', dy:device()), lunar.zeros({c}, 'f32', dy:device())
  local dyx = dy2 * xhat
  colsum_into(dyx, gw); dyx:free()
  colsum_into(dy2, gb)
  tp:reduce_vector_grad(self, 'weight', gw)
  tp:reduce_vector_grad(self, 'bias', gb)
  gw:free(); gb:free()
  local dx
  if need_dx ~= false then
    local w = tp:gather_vector(self, 'weight')
    local wb = per_col(w, R); w:free()
    local dxhat = dy2 * wb; wb:free()
    local dxx = dxhat * xhat
    local sums = lunar.empty({R, 2}, 'f32', dy:device())
    local a, b = rowsum(dxhat, c), rowsum(dxx, c); dxx:free()
    local s1, s2 = sums:narrow(2, 1, 1), sums:narrow(2, 2, 1)
    s1:copy_(a); s2:copy_(b); a:free(); b:free()
    tp.groups.row:all_reduce(sums, 'sum')
    local am, bm = s1 * (1 / C), s2 * (1 / C)   -- [R, 1] each (strided views read through a copy)
    s1:free(); s2:free(); sums:free()
    local ab, bb = per_row(am, c), per_row(bm, c); am:free(); bm:free()
    local xb = xhat * bb; bb:free()
    local t1 = dxhat - ab; dxhat:free(); ab:free()
    local t2 = t1 - xb; t1:free(); xb:free()
    local rb = per_row(ctx.rstd, c)
    dx = tensor_2d.reshape(t2 * rb, shape); t2:free(); rb:free()
  end
  dy2:free()
  if dyc ~= dy then dyc:free() end
  ctx:free()
  return dx
end

return LayerNorm2D
