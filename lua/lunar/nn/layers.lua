--- lunar.nn.layers: the layer factory of a model that is not split across
-- ranks. Attention, MLP, Block and ViT build every layer a tensor-parallel
-- mode may split through a factory, their opts.tp, and use this one when
-- opts.tp is nil; a mode under lunar.parallel (lunar.parallel.tensor_1d,
-- what lunar.parallel.tp_context returns) is a factory with the same
-- fields, so lunar.nn never names a parallel mode nor requires lunar.parallel.
--
--   tp.size, tp.rank               the tensor-parallel group (1, 0 here)
--   tp.sequence_parallel           whether norms, dropouts and residuals run on
--                                  1/size of the tokens (false here)
--   tp:column_linear(in, out, opts)   [..., in] -> [..., out/size] (this rank's
--                                  outputs; opts.groups: out is that many equal
--                                  groups, each split); Linear opts
--   tp:row_linear(in, out, opts)   [..., in/size] -> [..., out], summed over
--                                  the group (token slices with sequence_parallel)
--   tp:scatter_tokens()            a module [B, N, C] -> this rank's tokens
--                                  [B, N/size, C], or nil when not sequence parallel
--   tp:gather_tokens()             a module [B, N/size, C] -> [B, N, C] whose
--                                  consumer is replicated, or nil likewise
local Linear = require('lunar.nn.Linear')

local layers = {size = 1, rank = 0, sequence_parallel = false}

--- A Linear (groups has no meaning without a split and is ignored).
function layers:column_linear(in_features, out_features, opts)
  return Linear(in_features, out_features, opts)
end

--- A Linear.
function layers:row_linear(in_features, out_features, opts)
  return Linear(in_features, out_features, opts)
end

--- nil: the tokens are never split.
function layers:scatter_tokens() return nil end

--- nil: the tokens are never split.
function layers:gather_tokens() return nil end

return layers
