--- lunar.nn.precision: what the models-as-code leaves share for precision =
-- 'bf16' (nn.materialize). There LayerNorm and GELU give bf16 outputs (their
-- readers in the fused ViT are GEMMs, which take bf16); a leaf whose kernel
-- takes f32 only (patchify, embed_tokens, activation, rmsnorm, the residual
-- add, MeanPool's GEMM against an f32 row) reads an f32 copy of such an input.
local precision = {}

--- x itself when it is f32, else an f32 copy of it; the second result is
-- true when it is a copy (the caller frees it, or a context owns it).
function precision.f32(x)
  if x:dtype() == 'f32' then return x, false end
  return x:to('f32'), true
end

return precision
