--- lunar.parallel.Linear2D: a Linear on a q x q grid by SUMMA (van de Geijn &
-- Watts 1997), as Optimus (Xu et al. 2021, arXiv 2104.05343, Alg. 1-2) and
-- Colossal-AI's legacy Linear2D run it; with 2.5D (Tesseract, arXiv
-- 2105.14500) each of the d depth layers runs it on its batch rows.
--
-- With X = x (rows: the batch block, columns: the features) and A = weight^T
-- [in, out], rank (i, j) holds X_ij [b, in/q] and A_ij = weight[out block j,
-- in block i]^T, and computes Y_ij = sum_t X_it A_tj:
--   forward   for t = 0..q-1: X_it broadcast along row i (from column t), A_tj
--             along column j (from row t); Y_ij += X_it A_tj (bias block j
--             added once, at t = 0)
--   backward  dX_it = sum_j dY_ij A_tj^T: for each t A_tj broadcast along the
--             column again, the q partials dY_ij A_tj^T stacked and
--             reduce-scattered over the row (rank (i, t) gets its sum);
--             dA_tj = sum_i X_it^T dY_ij: for each t X_it broadcast along the
--             row again, the q partials stacked and reduce-scattered over the
--             column (rank (t, j) gets its sum), then summed over the depth
--             group (2.5D); the bias block's gradient (column sums of dY_ij)
--             reduce-scattered over the column into this rank's piece.
-- Per forward: q broadcasts of an input block [R, in/q] over the row and q of
-- a weight block [out/q, in/q] over the column (each rank receives q - 1 of
-- each); per backward the same broadcasts (those of A only when dx is
-- wanted), a reduce-scatter of [q, R, in/q] over the row and one of
-- [q, out/q, in/q] over the column, and the bias piece's.
--
-- forward: x [..., in/q] (feature block j of this rank's batch block) ->
-- y [..., out/q] (feature block j; with groups, e.g. qkv's 3, the rows of
-- each group's block j). Parameters keep timm's names: weight [out/q, in/q],
-- bias [out/q^2] (a piece, tensor_2d's vector_shard).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local tensor_2d = require('lunar.parallel.tensor_2d')
local ops = lunar.ops

local Linear2D = class('Linear2D', Module)

--- @param in_features integer (full)
-- @param out_features integer (full)
-- @param opts {tp = (a tensor_2d factory), groups = 1, bias = true, init =
--   trunc_normal(0.02), bias_init = zeros, bf16_output = false (as Linear's)}
function Linear2D:__init(in_features, out_features, opts)
  Module.__init(self)
  local tp = assert(opts and opts.tp, 'Linear2D: opts.tp (a tensor_2d factory) is required')
  local q, groups = tp.q, opts.groups or 1
  if in_features % q ~= 0 or out_features % (groups * q) ~= 0 then
    error(string.format("Linear2D: %d -> %d features (%d groups) are not divisible by q = %d (tensor mode '%s')",
      in_features, out_features, groups, q, tp.mode), 0)
  end
  self.tp, self.groups = tp, groups
  self.in_features, self.out_features = in_features, out_features
  self.in_local, self.out_local = in_features // q, out_features // q
  self.is_parallel_linear = true   -- nn.materialize's 'pytorch' init: fan-in in_features (full)
  self:param('weight', {self.out_local, self.in_local}, opts.init or {kind = 'trunc_normal', std = 0.02, a = -2, b = 2},
    {shard = tp:weight_shard(out_features, in_features, groups)})
  self.has_bias = opts.bias ~= false
  if self.has_bias then
    tp:vector_param(self, 'bias', {out_features}, 1, opts.bias_init or {kind = 'zeros'}, {groups = groups})
  end
  self.bf16_output = opts.bf16_output and true or false
end

function Linear2D:extra_repr()
  return string.format('%d -> %d (block [%d, %d] of a %dx%d grid)', self.in_features, self.out_features,
    self.out_local, self.in_local, self.tp.q, self.tp.q)
end

-- The rows of x [..., k] as a contiguous [R, k] (a view when x is contiguous).
local function rows(x, k)
  local xc = x:is_contiguous() and x or x:contiguous()
  return xc:view(xc:numel() // k, k), xc ~= x and xc or nil
end

-- Block t of the SUMMA step: this rank's own tensor when it is the root
-- (index == t), else a fresh buffer of its shape; broadcast over comm from t.
local function bcast(comm, own, index, t)
  local buf = own
  if index ~= t then buf = lunar.empty(own:shape(), own:dtype(), own:device()) end
  comm:broadcast(buf, t)
  return buf
end

--- x [..., in/q] -> y [..., out/q]; ctx refers to x. Under precision = 'bf16'
-- the broadcast weight blocks are the bf16 working copies, the sums f32, y
-- bf16 with bf16_output.
function Linear2D:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.in_local then
    self:shape_error("input features (this rank's block)", shape, {'*', self.in_local})
  end
  local tp = self.tp
  local g = tp.groups
  local x2, xc = rows(x, self.in_local)
  local w = self:gemm_weight('weight')
  local bias = self.has_bias and tp:gather_vector(self, 'bias') or nil
  local y
  for t = 0, tp.q - 1 do
    local xt = bcast(g.row, x2, tp.j, t)
    local wt = bcast(g.col, w, tp.i, t)
    local p = ops.linear(xt, wt, t == 0 and bias or nil)
    if y then ops.add_(y, p); p:free() else y = p end
    if xt ~= x2 then xt:free() end
    if wt ~= w then wt:free() end
  end
  if bias then bias:free() end
  x2:free()
  if xc then xc:free() end
  return tensor_2d.linear_output(self, y, shape), Context(nil, {x = x})
end

--- Accumulates this rank's weight block and bias piece gradients; returns dx
-- [..., in/q] (nil when need_dx is false: the broadcasts of A and the row
-- reduce-scatter are skipped; every rank of a row must agree, and they do:
-- need_dx is a property of the model's position, not of the rank).
function Linear2D:backward(ctx, dy, need_dx)
  local want = need_dx ~= false
  local tp = self.tp
  local g, q = tp.groups, tp.q
  local dy2, dyc = rows(dy, self.out_local)
  local x2, xc = rows(ctx.x, self.in_local)
  local R = x2:shape()[1]
  local w = self:gemm_weight('weight')
  if self.has_bias then tensor_2d.bias_grad(self, dy2) end
  -- dA: partial t = dY_ij^T X_it, reduce-scattered over the column
  local pw = lunar.zeros({q, self.out_local, self.in_local}, 'f32', dy:device())
  local pin = want and lunar.empty({q, R, self.in_local}, 'f32', dy:device()) or nil
  for t = 0, q - 1 do
    local xt = bcast(g.row, x2, tp.j, t)
    local wt = want and bcast(g.col, w, tp.i, t) or w
    local pwt = pw[t + 1]
    local dxt = ops.linear_backward(dy2, xt, wt, pwt, nil, want)
    pwt:free()
    if dxt then
      local pt = pin[t + 1]
      pt:copy_(dxt); pt:free(); dxt:free()
    end
    if xt ~= x2 then xt:free() end
    if wt ~= w then wt:free() end
  end
  local gw = lunar.empty({self.out_local, self.in_local}, 'f32', dy:device())
  g.col:reduce_scatter(gw, pw, 'sum')
  pw:free()
  tp:reduce_depth(gw)
  ops.add_(self.grad_weight, gw)
  gw:free(); dy2:free(); x2:free()
  if dyc then dyc:free() end
  if xc then xc:free() end
  ctx:free()
  if not want then return nil end
  local dx = lunar.empty({R, self.in_local}, 'f32', dy:device())
  g.row:reduce_scatter(dx, pin, 'sum')
  pin:free()
  local shape = dy:shape()
  shape[#shape] = self.in_local
  return tensor_2d.reshape(dx, shape)
end

return Linear2D
