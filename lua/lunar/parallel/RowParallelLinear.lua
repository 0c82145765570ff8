--- lunar.parallel.RowParallelLinear: a Linear whose weight columns (input
-- features) are split across the tensor-parallel group (Megatron-LM's
-- RowParallelLinear with input_is_parallel; Shoeybi et al. 2019, sec. 3):
-- rank r computes the partial product X_r A_r^T from its input slice, the
-- partial outputs are summed over the group, and the bias is added once,
-- after the reduction.
--
--   proj = RowParallelLinear(C, C, {tp = tp})          columns of this rank's heads
--   fc2  = RowParallelLinear(hidden, C, {tp = tp})     columns hidden/T
--
-- forward: x [..., in/T] -> y [..., out], replicated (ReduceFromTP: all_reduce;
-- backward identity), or with sequence parallelism this rank's token slice
-- [B, N/T, out] (ReduceScatterToSP: reduce_scatter; backward all_gather).
-- The weight is a shard ({dim = 2, groups = 1}); the bias is replicated (with
-- sequence parallelism it sees only this rank's tokens, so it is marked
-- sequence_parallel: its gradient is summed over the group before the step).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local mappings = require('lunar.parallel.mappings')
local ops = lunar.ops

local RowParallelLinear = class('RowParallelLinear', Module)

-- y [..., C] += bias [C] (one broadcast add: a K = 1 GEMM ones [R, 1] x bias [C, 1]^T).
local function add_bias_(y, bias)
  local C = bias:numel()
  local R = y:numel() // C
  local ones = lunar.ones({R, 1}, 'f32', y:device())
  local bv = bias:view(C, 1)
  local b = ops.linear(ones, bv)
  ops.add_(y, b)
  ones:free(); b:free(); bv:free()
  return y
end

-- grad_bias [C] += the sum of dy [..., C] over every row.
local function acc_bias_grad_(dy, grad_bias)
  local C = grad_bias:numel()
  local R = dy:numel() // C
  local ones = lunar.ones({R, 1}, 'f32', dy:device())
  local d = dy:is_contiguous() and dy or dy:contiguous()
  -- the views are freed now: a view holds its storage (dy's) until the GC otherwise
  local dv, gv = d:view(R, C), grad_bias:view(C, 1)
  ops.linear_backward(dv, ones, gv, gv, nil, false)
  dv:free(); gv:free()
  if d ~= dy then d:free() end
  ones:free()
end

--- @param in_features integer K (full; split in T parts)
-- @param out_features integer N (full)
-- @param opts {tp = {comm=, size=T, rank=, sequence_parallel=}, bias = true,
--   init = trunc_normal(0.02), bias_init = zeros}
function RowParallelLinear:__init(in_features, out_features, opts)
  Module.__init(self)
  local tp = assert(opts and opts.tp, 'RowParallelLinear: opts.tp (a tensor-parallel context) is required')
  if in_features % tp.size ~= 0 then
    error(string.format('RowParallelLinear: %d input features are not divisible by the tensor parallel size %d',
      in_features, tp.size), 0)
  end
  self.tp = tp
  self.in_features, self.out_features = in_features, out_features
  self.in_local = in_features // tp.size
  self.is_parallel_linear = true   -- nn.materialize's 'pytorch' init: fan-in in_features (full)
  self.sequence_parallel = tp.sequence_parallel and true or false
  self:param('weight', {out_features, self.in_local}, opts.init or {kind = 'trunc_normal', std = 0.02, a = -2, b = 2},
    {shard = {dim = 2, groups = 1, size = tp.size, rank = tp.rank, full_shape = {out_features, in_features}}})
  self.has_bias = opts.bias ~= false
  if self.has_bias then
    self:param('bias', {out_features}, opts.bias_init or {kind = 'zeros'}, {sequence_parallel = self.sequence_parallel})
  end
  self.output_map = self.sequence_parallel and mappings.ReduceScatterToSP(tp) or mappings.ReduceFromTP(tp)
end

function RowParallelLinear:extra_repr()
  return string.format('%d -> %d (%d inputs on this rank of %d%s)', self.in_features, self.out_features,
    self.in_local, self.tp.size, self.sequence_parallel and ', sequence parallel' or '')
end

--- x [..., in/T] -> y [..., out] (summed over the group; bias added once);
-- ctx refers to x.
function RowParallelLinear:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.in_local then
    self:shape_error('input features (this rank\'s slice)', shape, {'*', self.in_local})
  end
  local partial = ops.linear(x, self:gemm_weight('weight'))
  local y, mctx = self.output_map:forward(partial)
  if y ~= partial then partial:free() end
  if self.has_bias then add_bias_(y, self.bias) end
  return y, Context({mctx = mctx}, {x = x})
end

--- Accumulates dbias (from dy as it comes) and this rank's dweight; returns
-- dx [..., in/T] (nil when need_dx is false).
function RowParallelLinear:backward(ctx, dy, need_dx)
  if self.has_bias then acc_bias_grad_(dy, self.grad_bias) end
  local dyf = self.output_map:backward(ctx.mctx, dy)
  local dx = ops.linear_backward(dyf, ctx.x, self:gemm_weight('weight'), self.grad_weight, nil, need_dx ~= false)
  if dyf ~= dy then dyf:free() end
  ctx:free()
  return dx
end

return RowParallelLinear
