--- lunar.nn.precision: what the models-as-code leaves share for precision =
-- 'bf16' (nn.materialize). There LayerNorm and GELU give bf16 outputs (their
-- readers in the fused ViT are GEMMs, which take bf16); a leaf whose kernel
-- takes f32 only (patchify, embed_tokens, activation, rmsnorm, the residual
-- add, MeanPool's GEMM against an f32 row) reads an f32 copy of such an input.
-- f64 (nn.gradcheck casts a module and its input to f64): every leaf computes
-- in its input's real dtype, f64 for an f64 input, on the double reference
-- kernels (lunar.ops), so f64 passes through unchanged.
local precision = {}

--- The real dtype a leaf computes in for input x: 'f64' for an f64 x
-- (nn.gradcheck), else 'f32' (also for a bf16 x: its f32 copy).
function precision.real(x)
  return x:dtype() == 'f64' and 'f64' or 'f32'
end

--- x itself when it is f32 or f64, else (bf16) an f32 copy of it; the second
-- result is true when it is a copy (the caller frees it, or a context owns it).
function precision.f32(x)
  local dt = x:dtype()
  if dt == 'f32' or dt == 'f64' then return x, false end
  return x:to('f32'), true
end

return precision
