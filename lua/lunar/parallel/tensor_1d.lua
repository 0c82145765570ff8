--- lunar.parallel.tensor_1d: Megatron's 1D tensor parallelism (Shoeybi et
-- al. 2019) as the layer factory lunar.nn's modules take as opts.tp (the
-- fields of lunar.nn.layers): column-split and row-split linears, and with
-- sequence parallelism (Korthikanti et al. 2022) the token scatter and
-- gather around the blocks.
--
--   local tp = tensor_1d.new{comm = g.tp_group, size = T, rank = r, sequence_parallel = false}
--   nn.ViT{..., tp = tp}           (lunar.parallel.tp_context(g) does this from the grid)
--
-- The factory is also the tensor-parallel context the mappings and the
-- parallel linears read: tp.comm, tp.size, tp.rank, tp.sequence_parallel.
local ColumnParallelLinear = require('lunar.parallel.ColumnParallelLinear')
local RowParallelLinear = require('lunar.parallel.RowParallelLinear')
local mappings = require('lunar.parallel.mappings')

local tensor_1d = {}

local Tensor1D = setmetatable({}, {__index = require('lunar.nn.layers')})   -- norms, embeddings, head: replicated
Tensor1D.__index = Tensor1D

--- @param args {comm= (the tensor-parallel group; needed by forward and
--   backward only, so a model can be built without one), size=T, rank=,
--   sequence_parallel=false}
-- @return the factory
function tensor_1d.new(args)
  assert(args.size and args.rank, 'tensor_1d.new: size and rank are required')
  return setmetatable({comm = args.comm, size = args.size, rank = args.rank,
    sequence_parallel = args.sequence_parallel and true or false}, Tensor1D)
end

--- opts with tp = factory added (the caller's table is left alone); shared
-- with the other modes' factories.
function tensor_1d.with_tp(factory, opts)
  local o = {tp = factory}
  for k, v in pairs(opts or {}) do o[k] = v end
  return o
end
local with_tp = tensor_1d.with_tp

--- A ColumnParallelLinear: [..., in] -> this rank's outputs [..., out/T]
-- (opts: groups, bias, init, bias_init, bf16_output).
function Tensor1D:column_linear(in_features, out_features, opts)
  return ColumnParallelLinear(in_features, out_features, with_tp(self, opts))
end

--- A RowParallelLinear: [..., in/T] -> [..., out] summed over the group
-- (opts: bias, init, bias_init).
function Tensor1D:row_linear(in_features, out_features, opts)
  return RowParallelLinear(in_features, out_features, with_tp(self, opts))
end

--- With sequence parallelism a ScatterToSP (this rank's tokens), else nil.
function Tensor1D:scatter_tokens()
  if self.sequence_parallel then return mappings.ScatterToSP(self) end
  return nil
end

--- With sequence parallelism a GatherFromSP whose backward keeps this
-- rank's slice (the consumer, the final norm and head, is replicated), else nil.
function Tensor1D:gather_tokens()
  if self.sequence_parallel then return mappings.GatherFromSP(self, {grad = 'split'}) end
  return nil
end

return tensor_1d
