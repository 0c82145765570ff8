--- lunar.parallel.Linear3D: a Linear on a q x q x q cube (Bian et al. 2021,
-- arXiv 2105.14450, sec. 3; Agarwal et al.'s 3D matrix multiplication), as
-- Colossal-AI's legacy Linear3D runs it: with a the input's feature axis and
-- b the output's (column_linear: a = l, b = j; row_linear: a = j, b = l),
-- rank (i, j, l) holds X: batch block (i, b) [B/q^2, in/q] (features a), and
-- a piece of A = weight^T (in block a, out block b, rows piece i):
--   forward   X all-gathered over G_b (batch block i: [B/q, in/q]), the
--             weight over G_i ([out/q, in/q]), one GEMM, the partial Y
--             (a sum over a) reduce-scattered over G_a along the batch:
--             batch block (i, a) [B/q^2, out/q] (features b); the bias block b
--             added once, by a = 0, before the sum
--   backward  dY all-gathered over G_a, X again over G_b; dX = dY A^T
--             reduce-scattered over G_b along the batch, dA = X^T dY
--             reduce-scattered over G_i into the weight piece, the bias
--             block's column sums reduce-scattered over G_{i,a} into its piece
-- The tokens are whole (any count); the batch is split in q^2 blocks.
-- Parameters keep timm's names: weight [out/q^2, in/q] (rows: block b of
-- each of `groups`, then piece i), bias [out/q^3] (piece i*q + a of block b).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local tensor_2d = require('lunar.parallel.tensor_2d')
local ops = lunar.ops

local Linear3D = class('Linear3D', Module)

--- @param in_features integer (full)
-- @param out_features integer (full)
-- @param opts {tp = a tensor_3d factory, direction = 'column' | 'row', groups
--   = 1, bias = true, init = trunc_normal(0.02), bias_init = zeros,
--   bf16_output = false}
function Linear3D:__init(in_features, out_features, opts)
  Module.__init(self)
  local tp = assert(opts and opts.tp, 'Linear3D: opts.tp (a tensor_3d factory) is required')
  local q, groups = tp.q, opts.groups or 1
  if in_features % q ~= 0 or out_features % (groups * q * q) ~= 0 then
    error(string.format("Linear3D: %d -> %d features (%d groups) are not divisible by q = %d and q x q = %d " ..
      "(tensor mode '3d')", in_features, out_features, groups, q, q * q), 0)
  end
  self.tp, self.groups, self.direction = tp, groups, opts.direction
  self.in_features, self.out_features = in_features, out_features
  self.in_local, self.out_local = in_features // q, out_features // q
  self.is_parallel_linear = true   -- nn.materialize's 'pytorch' init: fan-in in_features (full)
  local a, b, ga, gb, bias_group
  if opts.direction == 'column' then a, b, ga, gb, bias_group = tp.l, tp.j, 'gl', 'gj', 'gil'
  elseif opts.direction == 'row' then a, b, ga, gb, bias_group = tp.j, tp.l, 'gj', 'gl', 'gij'
  else error("Linear3D: opts.direction must be 'column' or 'row'", 2) end
  self.a, self.ga, self.gb = a, ga, gb
  tp:vector_param(self, 'weight', {out_features, in_features}, 1,
    opts.init or {kind = 'trunc_normal', std = 0.02, a = -2, b = 2},
    {groups = groups, layout = {group = 'gi', block = b, piece = tp.i, npieces = q, label = 'q x q',
      extra = {dim = 2, block = a}}})
  self.has_bias = opts.bias ~= false
  if self.has_bias then
    tp:vector_param(self, 'bias', {out_features}, 1, opts.bias_init or {kind = 'zeros'},
      {groups = groups, layout = {group = bias_group, block = b, piece = tp.i * q + a, npieces = q * q,
        label = 'q x q x q'}})
  end
  self.bf16_output = opts.bf16_output and true or false
end

function Linear3D:extra_repr()
  return string.format('%d -> %d (%s, block [%d, %d] of a %d^3 cube)', self.in_features, self.out_features,
    self.direction, self.out_local, self.in_local, self.tp.q)
end

-- x [..., k] as contiguous rows [R, k] all-gathered over comm: [q*R, k] (a new tensor).
local function gather_rows(comm, q, x, k)
  local xc = x:is_contiguous() and x or x:contiguous()
  local R = xc:numel() // k
  local buf = lunar.empty({q, R, k}, xc:dtype(), xc:device())
  local xv = xc:view(R, k)
  comm:all_gather(buf, xv)
  xv:free()
  if xc ~= x then xc:free() end
  return tensor_2d.reshape(buf, {q * R, k}), R
end

-- y [q*R, k] reduce-scattered over comm along its rows: [R, k] (a new f32 tensor).
local function scatter_rows(comm, y, R, k)
  local out = lunar.empty({R, k}, 'f32', y:device())
  comm:reduce_scatter(out, y, 'sum')
  return out
end

--- x [..., in/q] -> y [..., out/q] (the same leading shape); ctx refers to x.
function Linear3D:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.in_local then
    self:shape_error("input features (this rank's block)", shape, {'*', self.in_local})
  end
  local tp = self.tp
  local g, q = tp.groups, tp.q
  local xg, R = gather_rows(g[self.gb], q, x, self.in_local)
  local w = tp:gather_vector(self, 'weight', true)
  local bias = self.has_bias and tp:gather_vector(self, 'bias') or nil   -- collective over G_{i,a}: every rank
  local yp = ops.linear(xg, w, self.a == 0 and bias or nil)
  xg:free(); w:free()
  if bias then bias:free() end
  local y = scatter_rows(g[self.ga], yp, R, self.out_local)
  yp:free()
  return tensor_2d.linear_output(self, y, shape), Context(nil, {x = x})
end

--- Accumulates this rank's weight and bias pieces' gradients; returns dx
-- [..., in/q] (nil when need_dx is false: the reduce-scatter over G_b is skipped).
function Linear3D:backward(ctx, dy, need_dx)
  local want = need_dx ~= false
  local tp = self.tp
  local g, q = tp.groups, tp.q
  local dyg, R = gather_rows(g[self.ga], q, dy, self.out_local)
  if self.has_bias then
    local dyc = dy:is_contiguous() and dy or dy:contiguous()
    local dv = dyc:view(R, self.out_local)
    tensor_2d.bias_grad(self, dv)
    dv:free()
    if dyc ~= dy then dyc:free() end
  end
  local xg = gather_rows(g[self.gb], q, ctx.x, self.in_local)
  local w = tp:gather_vector(self, 'weight', true)
  local gw = lunar.zeros({self.out_local, self.in_local}, 'f32', dy:device())
  local dxg = ops.linear_backward(dyg, xg, w, gw, nil, want)
  xg:free(); w:free(); dyg:free()
  tp:reduce_vector_grad(self, 'weight', gw)
  gw:free()
  ctx:free()
  if not want then return nil end
  local dx = scatter_rows(g[self.gb], dxg, R, self.in_local)
  dxg:free()
  local shape = dy:shape()
  shape[#shape] = self.in_local
  return tensor_2d.reshape(dx, shape)
end

return Linear3D
