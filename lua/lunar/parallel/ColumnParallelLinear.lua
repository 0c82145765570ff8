--- lunar.parallel.ColumnParallelLinear: a Linear whose weight rows (output
-- features) are split across the tensor-parallel group (Megatron-LM's
-- ColumnParallelLinear; Shoeybi et al. 2019, sec. 3): rank r computes
-- Y_r = X A_r^T + b_r, its share of the outputs, from the whole input.
--
--   fc1 = ColumnParallelLinear(C, hidden, {tp = tp})                 rows split in T
--   qkv = ColumnParallelLinear(C, 3 * C, {tp = tp, groups = 3})      q, k and v rows
--         of this rank's heads (timm's qkv.weight rows are [3, H, D]; the local
--         weight is [3, H/T, D] rows, what ops.attention expects for H/T heads)
--
-- forward: x [..., in] (replicated; with sequence_parallel, this rank's token
-- slice [B, N/T, in]) -> y [..., out/T]. Before the GEMM the input passes
-- CopyToTP (identity; backward all_reduce) or, with sequence parallelism,
-- GatherFromSP (all_gather along tokens; backward reduce_scatter). Parameters
-- keep the full timm names; each is a shard ({dim = 1, groups, size = T,
-- rank}) initialized as the slice of the full tensor (nn.materialize).
local class = require('lunar.class')
local Module = require('lunar.nn.Module')
local Context = require('lunar.nn.Context')
local Linear = require('lunar.nn.Linear')
local mappings = require('lunar.parallel.mappings')
local ops = lunar.ops

local ColumnParallelLinear = class('ColumnParallelLinear', Module)

--- @param in_features integer K (full)
-- @param out_features integer N (full; split in T parts per group)
-- @param opts {tp = {comm=, size=T, rank=, sequence_parallel=}, bias = true,
--   groups = 1, init = trunc_normal(0.02), bias_init = zeros, bf16_output = false
--   (as Linear's)}
function ColumnParallelLinear:__init(in_features, out_features, opts)
  Module.__init(self)
  local tp = assert(opts and opts.tp, 'ColumnParallelLinear: opts.tp (a tensor-parallel context) is required')
  local groups = opts.groups or 1
  if out_features % (groups * tp.size) ~= 0 then
    error(string.format('ColumnParallelLinear: %d output features in %d groups are not divisible by the tensor ' ..
      'parallel size %d', out_features, groups, tp.size), 0)
  end
  self.tp, self.groups = tp, groups
  self.in_features, self.out_features = in_features, out_features
  self.out_local = out_features // tp.size
  self.is_parallel_linear = true   -- nn.materialize's 'pytorch' init: fan-in in_features
  local function shard(full_shape) return {dim = 1, groups = groups, size = tp.size, rank = tp.rank, full_shape = full_shape} end
  self:param('weight', {self.out_local, in_features}, opts.init or {kind = 'trunc_normal', std = 0.02, a = -2, b = 2},
    {shard = shard({out_features, in_features})})
  self.has_bias = opts.bias ~= false
  if self.has_bias then
    self:param('bias', {self.out_local}, opts.bias_init or {kind = 'zeros'}, {shard = shard({out_features})})
  end
  self.sequence_parallel = tp.sequence_parallel and true or false
  self.bf16_output = opts.bf16_output and true or false
  self.input_map = self.sequence_parallel and mappings.GatherFromSP(tp) or mappings.CopyToTP(tp)
end

function ColumnParallelLinear:extra_repr()
  return string.format('%d -> %d (%d on this rank of %d%s)', self.in_features, self.out_features, self.out_local,
    self.tp.size, self.sequence_parallel and ', sequence parallel' or '')
end

--- x [..., in] -> y [..., out/T] (bf16 as Linear's with bf16_output); ctx
-- owns the gathered input (sequence parallelism) or refers to x.
function ColumnParallelLinear:forward(x)
  local shape = x:shape()
  if shape[#shape] ~= self.in_features then
    self:shape_error('input features', shape, {'*', self.in_features})
  end
  local xin, mctx = self.input_map:forward(x)
  local y = ops.linear(xin, self:gemm_weight('weight'), self.bias, Linear.output_dtype(self))
  local ctx = Context({mctx = mctx})
  if xin ~= x then ctx:own('x', xin) else ctx.x = x end
  return y, ctx
end

--- Accumulates this rank's dweight, dbias; returns dx [..., in] (all-reduced,
-- or reduce-scattered to this rank's tokens with sequence parallelism; nil
-- and no collective when need_dx is false).
function ColumnParallelLinear:backward(ctx, dy, need_dx)
  local want = need_dx ~= false
  local dx = ops.linear_backward(dy, ctx.x, self:gemm_weight('weight'), self.grad_weight, self.grad_bias, want)
  ctx:release('x')
  local out
  if want then
    out = self.input_map:backward(ctx.mctx, dx)
    if out ~= dx then dx:free() end
  end
  ctx:free()
  return out
end

return ColumnParallelLinear
