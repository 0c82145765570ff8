/*
 * lunar/ops.h: the tensor-level op API: shape and dtype checks, then dispatch
 * through the backend of the tensors' device (a table of kernels with the
 * signatures of kernels.h; the CPU backend is lunar_cpu_*).
 *
 * Every tensor argument must be f32 (targets: i32; bf16 where an op below says
 * so: the ops of precision = 'bf16'), contiguous, and on one
 * device (checked: "linear: inp is on cuda:0 but weight is on cpu"); the op
 * runs on that device's backend. A failing check returns a lunar_status whose message names the op
 * and the shapes involved ("linear: inp [8, 5] and weight [4, 6] differ in
 * K"). Gradient arguments follow kernels.h: input gradients are overwritten,
 * parameter gradients accumulated; a NULL gradient is skipped where allowed.
 */
#ifndef LUNAR_OPS_H
#define LUNAR_OPS_H

#include "lunar/kernels.h"
#include "lunar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A backend: one function pointer per kernel of kernels.h (ggml's
 * ggml_backend_i). Declared from the same macro, so the lists cannot drift. */
#define LUNAR_BACKEND_FIELD(op) (*op)
typedef struct lunar_backend {
    const char *name;
    LUNAR_KERNEL_DECLS(LUNAR_BACKEND_FIELD, float)
    /* NULL, or returns (and clears) an error the kernels could not return,
     * checked after every call (the CUDA backend: lunar_cuda_take_error). */
    lunar_status (*check)(void);
} lunar_backend;

/* The backend of a device (LUNAR_CPU or a CUDA ordinal; for a CUDA device it
 * also becomes the thread's current device); NULL with an error when that
 * device is not available ("no CUDA device available (...)", an index out of
 * range, or no CUDA backend in this build). */
const lunar_backend *lunar_backend_get(int device);
/* Make the CPU ops use the reference kernels (lunar_ref_*_f32: 1) or the fast
 * ones (0), for tests and debugging (lunar.ops.use_reference_kernels in Lua).
 * With the reference kernels on, the ops of the models-as-code leaves (linear,
 * patchify, layernorm, gelu, rmsnorm, activation, attention, embed_tokens,
 * dropout, add, scale) also take f64 operands, all of one real dtype (bf16
 * aside), on lunar_ref_*_f64: nn.gradcheck's float64 check. Otherwise, and on
 * CUDA, an f64 operand is LUNAR_ERR_DTYPE naming the op and this switch.
 * lunar_op_arith writes an f64 out on the CPU always (the f64 reference). */
void lunar_backend_use_ref(int on);

/* out[..., N] = inp[..., K] @ weight[N, K]^T + bias[N]; bias may be NULL.
 * A bf16 weight selects the bf16 GEMM (kernels.h linear_*_bf16; precision =
 * 'bf16'): inp may then be f32 (rounded to bf16 as it is read) or bf16, the
 * products are summed in f32; out f32, or bf16 (the f32 sums plus bias,
 * rounded once); dout f32 (rounded as the GEMMs read it; dbias sums it
 * unrounded) or bf16; bias, dinp, dweight and dbias stay f32 (dweight is the
 * fp32 master weight's gradient). Errors: dtypes, shapes, devices. */
lunar_status lunar_op_linear_forward(lunar_tensor *out, const lunar_tensor *inp,
                                     const lunar_tensor *weight, const lunar_tensor *bias);
lunar_status lunar_op_linear_backward(lunar_tensor *dinp, lunar_tensor *dweight, lunar_tensor *dbias,
                                      const lunar_tensor *dout, const lunar_tensor *inp,
                                      const lunar_tensor *weight);
/* inp [B, C, S1, S2] or [B, C, S1, S2, S3] -> out [B, L, C*P^k] (kernels.h). */
lunar_status lunar_op_patchify_forward(lunar_tensor *out, const lunar_tensor *inp, int P);
lunar_status lunar_op_patchify_backward(lunar_tensor *dinp, const lunar_tensor *dout, int P);
/* LayerNorm over the last dim C of inp [..., C]; mean, rstd have numel M = rows.
 * out may be bf16 (rounded as it is stored; statistics and arithmetic f32). */
lunar_status lunar_op_layernorm_forward(lunar_tensor *out, lunar_tensor *mean, lunar_tensor *rstd,
                                        const lunar_tensor *inp, const lunar_tensor *weight,
                                        const lunar_tensor *bias, float eps);
lunar_status lunar_op_layernorm_backward(lunar_tensor *dinp, lunar_tensor *dweight, lunar_tensor *dbias,
                                         const lunar_tensor *dout, const lunar_tensor *inp,
                                         const lunar_tensor *weight, const lunar_tensor *mean,
                                         const lunar_tensor *rstd);
/* out may be bf16 (rounded as it is stored); inp f32, or bf16 with a bf16 out.
 * gelu_backward: inp f32 or bf16 (widened exactly); dout f32; dinp f32, or
 * bf16 with a bf16 inp (the f32 product rounded once as it is stored). */
lunar_status lunar_op_gelu_forward(lunar_tensor *out, const lunar_tensor *inp);
lunar_status lunar_op_gelu_backward(lunar_tensor *dinp, const lunar_tensor *dout, const lunar_tensor *inp);
/* RMSNorm over the last dim (kernels.h rmsnorm_*; torch.nn.RMSNorm): out = inp * rstd *
 * weight with rstd[M] = 1/sqrt(mean over C of inp^2 + eps) saved (M = rows, as
 * lunar_op_layernorm_rows); backward overwrites dinp and accumulates dweight. All f32,
 * contiguous, one device. Errors: dtypes, sizes ("rmsnorm: inp [2, 8] and weight [4]
 * differ in C"), devices. Used by lunar.nn.RMSNorm. */
lunar_status lunar_op_rmsnorm_forward(lunar_tensor *out, lunar_tensor *rstd, const lunar_tensor *inp,
                                      const lunar_tensor *weight, float eps);
lunar_status lunar_op_rmsnorm_backward(lunar_tensor *dinp, lunar_tensor *dweight, const lunar_tensor *dout,
                                       const lunar_tensor *inp, const lunar_tensor *weight,
                                       const lunar_tensor *rstd);
/* Pointwise activations (kernels.h activation_*; kind a LUNAR_ACT_*: ReLU, SiLU, GELU with
 * the tanh approximation): out = act(inp); backward dinp = dout * act'(inp). All f32, the
 * same numel, contiguous, one device; out may be inp. Errors: an unknown kind, dtypes,
 * sizes, devices (named "relu", "silu_backward", ...). Used by lunar.nn.ReLU, SiLU, GELU. */
lunar_status lunar_op_activation_forward(lunar_tensor *out, const lunar_tensor *inp, int kind);
lunar_status lunar_op_activation_backward(lunar_tensor *dinp, const lunar_tensor *dout, const lunar_tensor *inp,
                                          int kind);
/* Bicubic resize of channels-last images: inp [H, W, C] or [N, H, W, C] -> out [OH, OW, C]
 * or [N, OH, OW, C] (the sizes out has), f32, contiguous, on the CPU only (no CUDA kernel:
 * resample on the host, then copy to the device). PyTorch's F.interpolate(mode='bicubic',
 * align_corners=False, antialias=antialias != 0) over the H and W axes (kernels.h
 * resize_bicubic: A = -0.75 and clamped borders without antialias; the A = -0.5 PIL filter,
 * widened when downsampling, with it). out must not be inp. Errors: dtypes, ranks, N or C
 * differing, a size of 0, a tensor not on the CPU. Used by lua/lunar/timm.lua to resample
 * pos_embed as timm's resample_abs_pos_embed (antialias on). */
lunar_status lunar_op_resize_bicubic(lunar_tensor *out, const lunar_tensor *inp, int antialias);
/* General scaled dot-product attention (kernels.h sdpa_*; nn.MultiheadAttention's masks
 * and cross-attention): q [B, L, E], k and v [B, S, E], E = H*D; bias NULL or [B, H, L, S]
 * added to the scaled scores (-inf masks; lunar_op_sdpa_mask builds it from PyTorch's
 * masks); out [B, L, E], lse [B, H, L]. All of one real dtype: f32 (the CPU kernels, or
 * the f32 reference with lunar_backend_use_ref) or f64 (the f64 reference, with
 * lunar_backend_use_ref only); on the CPU only (no CUDA kernel: a CUDA tensor is an
 * error saying so). Errors: dtypes, shapes (naming both), H not dividing E. */
lunar_status lunar_op_sdpa_forward(lunar_tensor *out, lunar_tensor *lse, const lunar_tensor *q, const lunar_tensor *k,
                                   const lunar_tensor *v, const lunar_tensor *bias, int H);
/* dq [B, L, E], dk and dv [B, S, E] (overwritten) from dout [B, L, E] and forward's
 * operands and results (the same bias). As forward for dtypes and devices. */
lunar_status lunar_op_sdpa_backward(lunar_tensor *dq, lunar_tensor *dk, lunar_tensor *dv, const lunar_tensor *dout,
                                    const lunar_tensor *q, const lunar_tensor *k, const lunar_tensor *v,
                                    const lunar_tensor *out, const lunar_tensor *lse, const lunar_tensor *bias, int H);
/* bias [B, H, L, S] (f32 or f64, on the CPU, overwritten) = the sum of PyTorch's two
 * nn.MultiheadAttention masks: attn_mask NULL, [L, S] (every image and head) or
 * [B*H, L, S] (image b, head h at b*H + h, PyTorch's layout), and key_padding_mask NULL
 * or [B, S]. Each is u8 (PyTorch's bool: nonzero = not attended, -inf) or f32/f64
 * (added as is). Errors name the mask and the shapes expected. */
lunar_status lunar_op_sdpa_mask(lunar_tensor *bias, const lunar_tensor *attn_mask, const lunar_tensor *key_padding_mask);
/* qkv [B, N, 3C] (timm: 3, H, D) -> out [B, N, C], lse [B, H, N] (f32).
 * qkv, out, dout and dqkv are all f32, or all bf16 (precision = 'bf16':
 * kernels.h attention_*_bf16, the arithmetic in f32; on CUDA cuDNN's fused
 * attention where it serves the shape, core/cuda/attention.h). */
lunar_status lunar_op_attention_forward(lunar_tensor *out, lunar_tensor *lse, const lunar_tensor *qkv, int H);
lunar_status lunar_op_attention_backward(lunar_tensor *dqkv, const lunar_tensor *dout, const lunar_tensor *qkv,
                                         const lunar_tensor *out, const lunar_tensor *lse, int H);
/* One block of ring attention (domain parallelism, lua/lunar/parallel/domain.lua; kernels.h
 * lunar_cpu_attention_block_*): the queries of qkv [B, Nq, 3C] (its q part) against the
 * key/value block kv [B, Nk, 2C] (k then v, H heads each), out [B, Nq, C] and lse [B, H, Nq].
 * accumulate 0 writes the block's result, 1 merges it into out and lse through the
 * log-sum-exp. Backward, from the final out and lse: the q part of dqkv [B, Nq, 3C] and dkv
 * [B, Nk, 2C] are accumulated (+=). All f32, contiguous, on the CPU (no CUDA kernel: an error
 * names the device); B, C and H must agree. */
lunar_status lunar_op_attention_block_forward(lunar_tensor *out, lunar_tensor *lse, const lunar_tensor *qkv,
                                              const lunar_tensor *kv, int H, int accumulate);
lunar_status lunar_op_attention_block_backward(lunar_tensor *dqkv, lunar_tensor *dkv, const lunar_tensor *dout,
                                               const lunar_tensor *qkv, const lunar_tensor *kv,
                                               const lunar_tensor *out, const lunar_tensor *lse, int H);
/* x [B, L, C], cls [.., C] (C elements), pos [.., L+1, C] -> out [B, L+1, C]. */
lunar_status lunar_op_embed_tokens_forward(lunar_tensor *out, const lunar_tensor *x, const lunar_tensor *cls,
                                           const lunar_tensor *pos);
lunar_status lunar_op_embed_tokens_backward(lunar_tensor *dx, lunar_tensor *dcls, lunar_tensor *dpos,
                                            const lunar_tensor *dout);
lunar_status lunar_op_dropout_forward(lunar_tensor *out, const lunar_tensor *inp, float p, uint64_t seed,
                                      uint64_t stream, uint64_t offset);
lunar_status lunar_op_dropout_backward(lunar_tensor *dinp, const lunar_tensor *dout, float p, uint64_t seed,
                                       uint64_t stream, uint64_t offset);
/* Dropout of inp seen as rows of row_len elements that are row_stride apart in a
 * larger row-major tensor (kernels.h dropout_rows): each element draws the mask
 * it has in that tensor, so a block split across ranks drops what one rank
 * drops (lunar.parallel.tensor_2d). Forward and backward alike (dout in inp's
 * place). Errors: those of dropout_forward; row_len < 1 or not dividing the
 * numel, row_stride < row_len. */
lunar_status lunar_op_dropout_rows(lunar_tensor *out, const lunar_tensor *inp, float p, uint64_t seed, uint64_t stream,
                                   uint64_t offset, int64_t row_len, int64_t row_stride);
/* logits [B, K], targets i32 [B] in [0, K) (checked); *loss = mean; losses [B] may be NULL. */
lunar_status lunar_op_cross_entropy_forward(float *loss, lunar_tensor *losses, const lunar_tensor *logits,
                                            const lunar_tensor *targets, float smoothing);
lunar_status lunar_op_cross_entropy_backward(lunar_tensor *dlogits, const lunar_tensor *logits,
                                             const lunar_tensor *targets, float smoothing, float dloss);
lunar_status lunar_op_accuracy_count(int64_t *correct, const lunar_tensor *logits, const lunar_tensor *targets);
/* out = a + b (same numel); x *= s. */
lunar_status lunar_op_add(lunar_tensor *out, const lunar_tensor *a, const lunar_tensor *b);
lunar_status lunar_op_scale(lunar_tensor *x, float s);
lunar_status lunar_op_adamw_step(lunar_tensor *param, lunar_tensor *m, lunar_tensor *v, const lunar_tensor *grad,
                                 double lr, double beta1, double beta2, double eps, double weight_decay, int t);
lunar_status lunar_op_sgd_step(lunar_tensor *param, lunar_tensor *buf, const lunar_tensor *grad, float lr,
                               float momentum, float weight_decay, int nesterov, int first);
lunar_status lunar_op_sum_squares(double *out, const lunar_tensor *x);

/* ---- output shapes ------------------------------------------------------------------
 * The shapes of the outputs an op writes, computed from its inputs with the same
 * checks (and messages) as the op itself, so a caller that allocates outputs (the
 * Lua bindings, bindings/lops.c) infers nothing. Errors: a missing or released
 * input, and the op's shape errors ("linear: inp [2, 3] and weight [4, 5] differ in
 * K ..."); dtypes and devices are checked by the op. */

/* linear: out [..., N] for inp [..., K] and weight [N, K] (shape has LUNAR_MAX_DIMS
 * entries; a 0-dim inp counts as [K]). */
lunar_status lunar_op_linear_out_shape(int *ndim, int64_t *shape, const lunar_tensor *inp,
                                       const lunar_tensor *weight);
/* patchify: out [B, L, C*P^k] for inp [B, C, S1..Sk]. */
lunar_status lunar_op_patchify_out_shape(int64_t shape[3], const lunar_tensor *inp, int P);
/* layernorm: M, the number of rows of inp [..., C] (numel of mean and rstd); never fails. */
int64_t lunar_op_layernorm_rows(const lunar_tensor *inp);
/* attention: out [B, N, C] and lse [B, H, N] for qkv [B, N, 3C] and H heads. */
lunar_status lunar_op_attention_out_shapes(int64_t out[3], int64_t lse[3], const lunar_tensor *qkv, int H);
/* embed_tokens: out [B, L+1, C] for x [B, L, C]; its backward: dx [B, L, C] for dout [B, L+1, C]. */
lunar_status lunar_op_embed_tokens_out_shape(int64_t shape[3], const lunar_tensor *x);
lunar_status lunar_op_embed_tokens_dx_shape(int64_t shape[3], const lunar_tensor *dout);

/* ---- tensor arithmetic and reductions (lunar.Tensor's + - * /, sum, mean, min, max,
 * norm; kernels.h arith and reduce) -------------------------------------------------
 * Unlike the ops above, these take operands of any dtype (f32, bf16, f64 directly;
 * f16, i32, i64, u8 through an f64 copy) and any strides (a strided view through a
 * contiguous copy on its device), on the CPU or a CUDA device. */

/* out = a op b elementwise, op a LUNAR_ARITH_* (add, sub, mul, div; RSQRT_ADD:
 * 1/sqrt(a + b), "rsqrt" in messages). a or b may be
 * NULL: the number sa or sb takes its place, broadcast to every element (b = NULL:
 * a op sb; a = NULL: sa op b). With two tensors their shapes must be equal (not
 * only their element counts). out: f32, contiguous, the numel of the operand(s),
 * on their device. Computed in double from the exact operand values and rounded
 * once to f32 (IEEE: x/0 = +-inf, 0/0 = NaN; NaN propagates). Errors: both
 * operands NULL, an unknown op, a released tensor, shapes ("arithmetic: shapes [2,
 * 3] and [3, 2] differ"), out's dtype or size, devices ("add: a is on cpu but b is
 * on cuda:0 ..."). */
lunar_status lunar_op_arith(lunar_tensor *out, const lunar_tensor *a, double sa, const lunar_tensor *b, double sb,
                            int op);
/* Whole-tensor reductions of x (any dtype, strides and device) into *out, in double
 * (kernels.h reduce: deterministic for any thread count; on CUDA also in double).
 * A NaN anywhere in x gives NaN, as PyTorch's sum, mean, amin, amax and norm;
 * +inf and -inf sum to NaN. sum of no elements is 0, mean NaN (PyTorch's
 * values); min and max of no elements are an error ("min: x is empty ...").
 * norm = sqrt(sum of squares), the Frobenius / 2-norm of the flattened x.
 * Errors: a released x, empty x (min, max), device unavailable. */
lunar_status lunar_op_sum(double *out, const lunar_tensor *x);
lunar_status lunar_op_mean(double *out, const lunar_tensor *x);
lunar_status lunar_op_min(double *out, const lunar_tensor *x);
lunar_status lunar_op_max(double *out, const lunar_tensor *x);
lunar_status lunar_op_norm(double *out, const lunar_tensor *x);

/* ---- bf16 mixed precision (precision = 'bf16') ------------------------------------
 * Mixed precision training (Micikevicius et al. 2018) in bf16, which needs no
 * loss scaling (Kalamkar et al. 2019), as Megatron-LM keeps it (bf16 model
 * params, fp32 main params and optimizer state), on explicit contexts: fp32
 * master weights, gradients and optimizer state; a bf16 working copy of the
 * weights for the GEMMs; bf16 activations inside each block (the outputs of
 * LayerNorm, qkv, attention, fc1 and GELU, and the gradients of qkv); f32
 * statistics, softmax, loss, and the residual stream with its gradient (as
 * Megatron's fp32_residual_connection) (lua/lunar/nn, nn.materialize). */

/* out (bf16) = x (f32) rounded to nearest even, NaN kept quiet; same numel.
 * Errors: dtypes, sizes, devices. Source: kernels.h cast_bf16. */
lunar_status lunar_op_cast_bf16(lunar_tensor *out, const lunar_tensor *x);
/* lunar_op_adamw_step / lunar_op_sgd_step on the fp32 master param that also
 * write its bf16 working copy param_bf16 (bf16, numel of param) in the same
 * pass; the fp32 update is bit for bit that of the plain step. Errors: as the
 * plain steps (dtypes: param_bf16 must be bf16, the rest f32; sizes; devices;
 * t < 1; momentum without a buffer). Source: kernels.h *_step_bf16. */
lunar_status lunar_op_adamw_step_bf16(lunar_tensor *param, lunar_tensor *param_bf16, lunar_tensor *m,
                                      lunar_tensor *v, const lunar_tensor *grad, double lr, double beta1,
                                      double beta2, double eps, double weight_decay, int t);
lunar_status lunar_op_sgd_step_bf16(lunar_tensor *param, lunar_tensor *param_bf16, lunar_tensor *buf,
                                    const lunar_tensor *grad, float lr, float momentum, float weight_decay,
                                    int nesterov, int first);
/* 1 when the bf16 ops run natively on device (LUNAR_CPU: the CPU kernels use
 * AVX512-BF16 and the processor has it, lunar_cpu_bf16_native; a CUDA
 * ordinal: compute capability 8.0 or later); else 0 with the reason written
 * to why[n] (may be NULL), e.g. "this CPU has no avx512_bf16 (...)". The
 * environment variable LUNAR_NO_CPU_BF16=1 makes the CPU answer 0 (a test of
 * the refusal on any machine). The bf16 kernels themselves run anywhere
 * (portable paths); this says whether they are worth running. */
int lunar_bf16_supported(int device, char *why, size_t n);

#ifdef __cplusplus
}
#endif
#endif
