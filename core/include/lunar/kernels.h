/*
 * lunar/kernels.h: the kernel set of a Vision Transformer, forward and backward,
 * on raw contiguous row-major arrays.
 *
 * Each kernel exists three times with the same argument list:
 *   lunar_ref_<op>_f64  naive loops in double precision: the oracle, and the
 *                       function the finite-difference tests differentiate;
 *   lunar_ref_<op>_f32  the same loops in single precision (core/ops/ref/);
 *   lunar_cpu_<op>      the fast f32 kernel: BLAS for GEMMs, OpenMP loops,
 *                       fused passes (core/ops/cpu/); tested against ref.
 * and, in a build with the CUDA backend (LUNAR_USE_CUDA), a fourth time:
 *   lunar_cuda_<op>     on device memory of the calling thread's current CUDA
 *                       device, queued on its compute stream (core/ops/cuda/,
 *                       lunar/cuda.h): cuBLASLt for GEMMs, own kernels for the
 *                       rest; tested against lunar_cpu_* (tests/c/test_cuda.c).
 *                       Pointers are device pointers, except the scalar results
 *                       (`loss` of cross_entropy_forward, and the return values
 *                       of sum_squares, accuracy_count and reduce), which come back to
 *                       the host (those three wait for the device). A failure
 *                       is kept as the thread's sticky CUDA error
 *                       (lunar_cuda_take_error).
 * The tensor-level API in ops.h checks shapes and dispatches to a backend.
 *
 * Conventions (llm.c order): outputs first, then what was saved for backward,
 * then inputs, then parameters, then sizes and scalars. Shape letters:
 * B batch, N tokens, C width, H heads, D head dim (C = H*D), K classes,
 * M rows (= B*N when a kernel works per token).
 * Input gradients (dinp, dx, dqkv, dlogits) are OVERWRITTEN; parameter
 * gradients (dweight, dbias, dcls, dpos) are ACCUMULATED (+=), as torch/nn's
 * accGradParameters, so gradient accumulation and micro-batches need nothing
 * special. A NULL gradient pointer means "not needed" where the doc says so.
 * Kernels never fail: shapes are checked by the caller (ops.h).
 */
#ifndef LUNAR_KERNELS_H
#define LUNAR_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The kernel list, written once for every (prefix, real) pair. */
#define LUNAR_KERNEL_DECLS(NAME, real)                                                          \
/* Linear: out[M,N] = inp[M,K] @ weight[N,K]^T + bias[N] (bias may be NULL).               */  \
void NAME(linear_forward)(real *out, const real *inp, const real *weight, const real *bias,    \
                          int M, int K, int N);                                                 \
/* dinp[M,K] = dout[M,N] @ weight (dinp may be NULL); dweight[N,K] += dout^T @ inp;         */  \
/* dbias[N] += sum over rows of dout (dbias may be NULL).                                   */  \
void NAME(linear_backward)(real *dinp, real *dweight, real *dbias, const real *dout,           \
                           const real *inp, const real *weight, int M, int K, int N);           \
/* Patchify (the data movement of a convolution with kernel = stride = P):                  */  \
/* inp[B, C, S_1..S_k] (k = 2 or 3 spatial dims, each a multiple of P) ->                   */  \
/* out[B, L, C*P^k], L = prod(S_i / P), patches in row-major order of the patch grid,       */  \
/* each patch's elements ordered (c, p_1, .., p_k), the flattening of a conv weight         */  \
/* [E, C, P, P(, P)], so patch embedding = patchify then linear.                            */  \
void NAME(patchify_forward)(real *out, const real *inp, int B, int C, int k, const int *S,     \
                            int P);                                                             \
/* dinp[B, C, S...] = scatter of dout[B, L, C*P^k] (overwrite).                             */  \
void NAME(patchify_backward)(real *dinp, const real *dout, int B, int C, int k, const int *S,  \
                             int P);                                                            \
/* LayerNorm over the last dim: out[M,C] = (inp - mean) * rstd * weight + bias;             */  \
/* saves mean[M] and rstd[M] = 1/sqrt(var + eps) (biased variance), as PyTorch.             */  \
void NAME(layernorm_forward)(real *out, real *mean, real *rstd, const real *inp,               \
                             const real *weight, const real *bias, int M, int C, real eps);    \
/* dinp[M,C] overwritten; dweight[C], dbias[C] accumulated.                                 */  \
void NAME(layernorm_backward)(real *dinp, real *dweight, real *dbias, const real *dout,        \
                              const real *inp, const real *weight, const real *mean,           \
                              const real *rstd, int M, int C);                                  \
/* Exact GELU: out = 0.5 * x * (1 + erf(x / sqrt(2))) (Hendrycks & Gimpel 2016).             */  \
void NAME(gelu_forward)(real *out, const real *inp, size_t n);                                  \
/* dinp = dout * (Phi(x) + x * phi(x)).                                                      */  \
void NAME(gelu_backward)(real *dinp, const real *dout, const real *inp, size_t n);             \
/* RMSNorm over the last dim (Zhang & Sennrich 2019; torch.nn.RMSNorm):                    */  \
/* out[M,C] = inp * rstd * weight, rstd[M] = 1/sqrt(mean(inp^2) + eps), saved.              */  \
void NAME(rmsnorm_forward)(real *out, real *rstd, const real *inp, const real *weight, int M,  \
                           int C, real eps);                                                    \
/* dinp[M,C] overwritten; dweight[C] accumulated.                                            */  \
void NAME(rmsnorm_backward)(real *dinp, real *dweight, const real *dout, const real *inp,      \
                            const real *weight, const real *rstd, int M, int C);                \
/* Pointwise activations, kind a LUNAR_ACT_*: RELU max(x, 0) (gradient 0 at 0, as PyTorch);  */  \
/* SILU x sigmoid(x) (Elfwing et al. 2018); GELU_TANH 0.5 x (1 + tanh(sqrt(2/pi)(x +          */  \
/* 0.044715 x^3))) (Hendrycks & Gimpel's approximation; PyTorch approximate='tanh').          */  \
/* In place allowed (out == inp).                                                            */  \
void NAME(activation_forward)(real *out, const real *inp, size_t n, int kind);                  \
/* dinp = dout * act'(inp) (dinp may alias dout).                                            */  \
void NAME(activation_backward)(real *dinp, const real *dout, const real *inp, size_t n,        \
                               int kind);                                                       \
/* Multi-head self-attention from a fused qkv projection (timm layout):                    */  \
/* qkv[B, N, 3, H, D] -> out[B, N, H, D] = softmax(q k^T / sqrt(D)) v per (b, h);           */  \
/* saves lse[B, H, N], the log-sum-exp of each row of scaled scores, so backward            */  \
/* recomputes the probabilities; no [N, N] matrix outlives the call (FlashAttention).       */  \
void NAME(attention_forward)(real *out, real *lse, const real *qkv, int B, int N, int H,       \
                             int D);                                                            \
/* dqkv[B, N, 3, H, D] overwritten, from dout[B, N, H, D], qkv, out and lse of forward.     */  \
void NAME(attention_backward)(real *dqkv, const real *dout, const real *qkv, const real *out,  \
                              const real *lse, int B, int N, int H, int D);                     \
/* Tokens: out[B, L+1, C]: out[b,0] = cls[C] + pos[0]; out[b,1+l] = x[b,l] + pos[1+l].      */  \
void NAME(embed_tokens_forward)(real *out, const real *x, const real *cls, const real *pos,    \
                                int B, int L, int C);                                           \
/* dx[B, L, C] overwritten (may be NULL); dcls[C] and dpos[L+1, C] accumulated.              */  \
void NAME(embed_tokens_backward)(real *dx, real *dcls, real *dpos, const real *dout, int B,    \
                                 int L, int C);                                                 \
/* Inverted dropout: element i is kept when the uniform u_i = (w_i >> 8) * 2^-24 >= p,      */  \
/* with w_i = lunar_rng_u32(seed, stream, offset + i); kept elements scale by 1/(1-p).      */  \
/* p == 0 copies. The mask is recomputed in backward from the same (seed, stream, offset).  */  \
void NAME(dropout_forward)(real *out, const real *inp, size_t n, real p, uint64_t seed,        \
                           uint64_t stream, uint64_t offset);                                   \
void NAME(dropout_backward)(real *dinp, const real *dout, size_t n, real p, uint64_t seed,     \
                            uint64_t stream, uint64_t offset);                                  \
/* Dropout of a block [rows, row_len] of a larger row-major tensor whose rows are           */  \
/* row_stride long: element (r, c) draws the word offset + r row_stride + c (the word that */  \
/* element has in the whole tensor), kept and scaled as dropout_forward; row_stride ==      */  \
/* row_len is dropout_forward. Its own backward (the same mask on dout). In place allowed. */  \
void NAME(dropout_rows)(real *out, const real *inp, size_t rows, size_t row_len, real p,       \
                        uint64_t seed, uint64_t stream, uint64_t offset, uint64_t row_stride); \
/* Softmax cross-entropy with label smoothing eps (Szegedy et al. 2016, PyTorch's           */  \
/* label_smoothing): target distribution q = (1-eps) onehot(t) + eps/K;                     */  \
/* losses[b] = -sum_k q_k log softmax(logits[b])_k (losses may be NULL);                    */  \
/* *loss = mean over b. targets[b] in [0, K).                                               */  \
void NAME(cross_entropy_forward)(real *loss, real *losses, const real *logits,                 \
                                 const int32_t *targets, int B, int K, real smoothing);        \
/* dlogits[B,K] = dloss / B * (softmax(logits) - q), overwritten.                           */  \
void NAME(cross_entropy_backward)(real *dlogits, const real *logits, const int32_t *targets,   \
                                  int B, int K, real smoothing, real dloss);                    \
/* out[n] = a[n] + b[n] (the residual add; its backward is the identity to both).           */  \
void NAME(add)(real *out, const real *a, const real *b, size_t n);                              \
/* x[n] *= s.                                                                                */  \
void NAME(scale)(real *x, size_t n, real s);                                                    \
/* AdamW step t >= 1 (Loshchilov & Hutter 2019, PyTorch's torch.optim.AdamW):               */  \
/* p -= lr*wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;                                 */  \
/* p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). The scalars are doubles, as    */  \
/* PyTorch's Python floats: 1 - b, the bias corrections, 1 - lr wd and lr / (1 - b1^t) are   */  \
/* computed in double from them (never from a float-rounded beta), then rounded to real.    */  \
void NAME(adamw_step)(real *param, real *m, real *v, const real *grad, size_t n, double lr,   \
                      double beta1, double beta2, double eps, double weight_decay, int t);      \
/* SGD with momentum (PyTorch's torch.optim.SGD, dampening 0):                              */  \
/* g' = g + wd p; buf = first ? g' : momentum buf + g'; d = nesterov ? g' + momentum buf    */  \
/* : buf; p -= lr d. momentum == 0 ignores buf (may be NULL).                               */  \
void NAME(sgd_step)(real *param, real *buf, const real *grad, size_t n, real lr,              \
                    real momentum, real weight_decay, int nesterov, int first);                 \
/* ---- bf16 mixed precision (precision = 'bf16', ops.h). A bf16 value is a uint16_t: the   */  \
/* high half of an f32, rounded to nearest even, NaN kept quiet (lunar_f32_to_bf16).         */  \
/* Linear with a bf16 weight: out[M,N] = bf16(inp)[M,K] @ weight[N,K]^T + bias[N] (bias may */  \
/* be NULL). inp is real, rounded to bf16 as it is read (inp_bf16 = 0), or bf16              */  \
/* (inp_bf16 = 1). Products of bf16 values are exact; they are summed in real (fp32          */  \
/* accumulation: cuBLASLt's CUBLAS_COMPUTE_32F, VDPBF16PS on the CPU). out is real           */  \
/* (out_bf16 = 0) or bf16 (out_bf16 = 1: the real sum plus bias, rounded once as stored).    */  \
void NAME(linear_forward_bf16)(void *out, int out_bf16, const void *inp, int inp_bf16,         \
                               const uint16_t *weight, const real *bias, int M, int K, int N); \
/* dinp[M,K] = bf16(dout) @ weight (overwritten; may be NULL);                               */  \
/* dweight[N,K] += bf16(dout)^T @ bf16(inp) (real, the master weight's gradient);            */  \
/* dbias[N] += column sums of dout as given (may be NULL). inp as in forward; dout is real   */  \
/* (dout_bf16 = 0, rounded as read by the GEMMs) or bf16 (dout_bf16 = 1).                   */  \
void NAME(linear_backward_bf16)(real *dinp, real *dweight, real *dbias, const void *dout,       \
                                int dout_bf16, const void *inp, int inp_bf16,                  \
                                const uint16_t *weight, int M, int K, int N);                  \
/* layernorm_forward whose out[M,C] is rounded to bf16; mean, rstd and the arithmetic real.  */  \
void NAME(layernorm_forward_bf16)(uint16_t *out, real *mean, real *rstd, const real *inp,      \
                                  const real *weight, const real *bias, int M, int C,          \
                                  real eps);                                                    \
/* gelu_forward whose out[n] is rounded to bf16; inp real (inp_bf16 = 0) or bf16 (1).        */  \
void NAME(gelu_forward_bf16)(uint16_t *out, const void *inp, int inp_bf16, size_t n);          \
/* gelu_backward from a bf16 inp[n] (the bf16 fc1 output): dinp = dout * gelu'(inp), real    */  \
/* (dinp_bf16 = 0), or bf16 (1: the real product rounded once, the fc1 GEMMs' operand).      */  \
void NAME(gelu_backward_bf16)(void *dinp, int dinp_bf16, const real *dout, const uint16_t *inp, \
                              size_t n);                                                       \
/* attention_forward on bf16 qkv: out[B, N, H, D] bf16 (rounded once from the real result),  */  \
/* lse[B, H, N] real; scores, softmax and sums in real (cuDNN's fused attention on CUDA,     */  \
/* where it serves the shape, core/cuda/attention.h).                                        */  \
void NAME(attention_forward_bf16)(uint16_t *out, real *lse, const uint16_t *qkv, int B, int N, \
                                  int H, int D);                                                \
/* attention_backward on bf16 operands: dqkv[B, N, 3, H, D] bf16 (overwritten) from bf16     */  \
/* dout, qkv, out and the real lse of forward; the arithmetic in real.                       */  \
void NAME(attention_backward_bf16)(uint16_t *dqkv, const uint16_t *dout, const uint16_t *qkv,  \
                                   const uint16_t *out, const real *lse, int B, int N, int H,  \
                                   int D);                                                      \
/* out[n] = bf16(x[n]).                                                                      */  \
void NAME(cast_bf16)(uint16_t *out, const real *x, size_t n);                                   \
/* adamw_step that also writes param_bf16[n] = bf16(the updated param) in the same pass:    */  \
/* the fp32 master weight and its bf16 working copy.                                         */  \
void NAME(adamw_step_bf16)(real *param, uint16_t *param_bf16, real *m, real *v,                \
                           const real *grad, size_t n, double lr, double beta1, double beta2,   \
                           double eps, double weight_decay, int t);                             \
/* sgd_step that also writes param_bf16[n] = bf16(the updated param).                        */  \
void NAME(sgd_step_bf16)(real *param, uint16_t *param_bf16, real *buf, const real *grad,       \
                         size_t n, real lr, real momentum, real weight_decay, int nesterov,    \
                         int first);                                                            \
/* Sum of squares of x[n], accumulated in double (for the global gradient norm).            */  \
double NAME(sum_squares)(const real *x, size_t n);                                              \
/* Number of rows b whose argmax over logits[b, 0..K) (first index on ties) equals          */  \
/* targets[b]: top-1 correct count.                                                          */  \
int64_t NAME(accuracy_count)(const real *logits, const int32_t *targets, int B, int K);      \
/* ---- tensor arithmetic and reductions (lunar.Tensor's + - * / and sum/min/max/norm;     */  \
/* core/ops/{ref,cpu,cuda}/arith and reduce). Operands are untyped: a_type etc. is a        */  \
/* LUNAR_ELEM_* (f32, bf16 as uint16_t, f64), whatever real is.                             */  \
/* out[i] = a[i] op b[i], op a LUNAR_ARITH_*: each operand an array of n elements, or NULL   */  \
/* for the scalar sa / sb (broadcast; not both NULL). Computed in double from the exact     */  \
/* operand values and rounded once to real (IEEE: x/0 = +-inf, 0/0 = NaN, NaN propagates). */  \
void NAME(arith)(real *out, const void *a, int a_type, double sa, const void *b, int b_type,   \
                 double sb, size_t n, int op);                                                  \
/* One reduction of x[n] (x_type a LUNAR_ELEM_*) by op, a LUNAR_REDUCE_*: SUM (0 for n = 0), */  \
/* SUMSQ (sum of squares; f32 x: exactly NAME(sum_squares)), MIN, MAX (n >= 1; the caller   */  \
/* checks). Accumulated in double (on CUDA too: per-block partials combined in a fixed      */  \
/* order), so the same x gives the same bits for any thread count. A NaN anywhere gives NaN */  \
/* for every op (PyTorch's sum, amin, amax, norm); SUM of +inf and -inf is NaN.             */  \
double NAME(reduce)(const void *x, int x_type, size_t n, int op);

/* The element types of the untyped operands of arith and reduce. */
enum { LUNAR_ELEM_F32 = 0, LUNAR_ELEM_BF16 = 1, LUNAR_ELEM_F64 = 2 };
/* arith's op: a + b, a - b, a * b, a / b, and 1/sqrt(a + b) (RSQRT_ADD: torch.rsqrt(a + b), */
/* the 1/sqrt(var + eps) of a normalization; IEEE: 1/sqrt(0) = +inf, negative -> NaN).     */
enum { LUNAR_ARITH_ADD = 0, LUNAR_ARITH_SUB, LUNAR_ARITH_MUL, LUNAR_ARITH_DIV, LUNAR_ARITH_RSQRT_ADD };
/* activation_forward/backward's kind: ReLU, SiLU, tanh-approximated GELU. */
enum { LUNAR_ACT_RELU = 0, LUNAR_ACT_SILU, LUNAR_ACT_GELU_TANH };
/* reduce's op: sum, sum of squares, minimum, maximum. */
enum { LUNAR_REDUCE_SUM = 0, LUNAR_REDUCE_SUMSQ, LUNAR_REDUCE_MIN, LUNAR_REDUCE_MAX };

#define LUNAR_REF_F64(op) lunar_ref_##op##_f64
#define LUNAR_REF_F32(op) lunar_ref_##op##_f32
#define LUNAR_CPU_KERNEL(op) lunar_cpu_##op
#define LUNAR_CUDA_KERNEL(op) lunar_cuda_##op

LUNAR_KERNEL_DECLS(LUNAR_REF_F64, double)
LUNAR_KERNEL_DECLS(LUNAR_REF_F32, float)
LUNAR_KERNEL_DECLS(LUNAR_CPU_KERNEL, float)
/* One block of blockwise (ring) attention (not in the backend table: CPU only, f32;
 * core/ops/cpu/attention.c: the per-pair kernels of attention_forward/backward;
 * lunar_op_attention_block_* in ops.h). q from the fused
 * qkv [B, Nq, 3, H, D], the key/value block kv [B, Nk, 2, H, D], out [B, Nq, H, D],
 * lse [B, H, Nq]. Forward: the block's softmax attention (accumulate 0), or merged into the
 * running out and lse through the log-sum-exp (accumulate 1). Backward, from the final
 * out and lse: dqkv's q part and dkv accumulated (+=). */
void lunar_cpu_attention_block_forward(float *out, float *lse, const float *qkv, const float *kv, int B, int Nq,
                                       int Nk, int H, int D, int accumulate);
void lunar_cpu_attention_block_backward(float *dqkv, float *dkv, const float *dout, const float *qkv, const float *kv,
                                        const float *out, const float *lse, int B, int Nq, int Nk, int H, int D);
/* Bicubic resize of channels-last images (not in the backend table: CPU only, no CUDA
 * kernel; lunar_op_resize_bicubic in ops.h). inp [n, h, w, c] -> out [n, oh, ow, c],
 * contiguous, out not aliasing inp; equal to PyTorch's
 * F.interpolate(x.permute(0, 3, 1, 2), size=(oh, ow), mode='bicubic', align_corners=False,
 * antialias=antialias).permute(0, 2, 3, 1) (aten/src/ATen/native/UpSample.h,
 * cpu/UpSampleKernel.cpp). antialias 0: Keys' cubic convolution with A = -0.75 on the
 * 4 neighbours of the source point scale * (o + 0.5) - 0.5 (scale = in / out), indices
 * clamped at the border. antialias 1 (timm's resample_abs_pos_embed default): the
 * separable PIL-style filter with A = -0.5, its support widened by scale when
 * downsampling, taps cut at the border and the weights renormalized to sum 1. */
void lunar_ref_resize_bicubic_f64(double *out, const double *inp, int64_t n, int64_t h, int64_t w, int64_t c,
                                  int64_t oh, int64_t ow, int antialias);
void lunar_ref_resize_bicubic_f32(float *out, const float *inp, int64_t n, int64_t h, int64_t w, int64_t c,
                                  int64_t oh, int64_t ow, int antialias);
void lunar_cpu_resize_bicubic(float *out, const float *inp, int64_t n, int64_t h, int64_t w, int64_t c,
                              int64_t oh, int64_t ow, int antialias);
/* General scaled dot-product attention (PyTorch's F.scaled_dot_product_attention with a
 * float attn_mask; nn.MultiheadAttention's masks and cross-attention): not in the backend
 * table (CPU only: no CUDA kernel; lunar_op_sdpa_* in ops.h). q[B, L, H, D], k and v
 * [B, S, H, D] (heads interleaved as in [B, L, E], E = H*D), bias NULL or [B, H, L, S]
 * added to the scaled scores (-inf masks a key); out[B, L, H, D] = softmax(q k^T / sqrt(D)
 * + bias) v per (b, h); lse[B, H, L] the log-sum-exp of each row, saved for backward. A row
 * whose keys are all masked gives lse -inf and NaN outputs (PyTorch's math path).
 * Backward: dq [B, L, H, D], dk, dv [B, S, H, D] OVERWRITTEN from dout and the saved
 * tensors. The CPU kernels are the f32 reference loops per image over OpenMP threads
 * (core/ops/cpu/sdpa.c). */
#define LUNAR_SDPA_DECLS(NAME, real)                                                                   \
void NAME(sdpa_forward)(real *out, real *lse, const real *q, const real *k, const real *v,             \
                        const real *bias, int B, int L, int S, int H, int D);                           \
void NAME(sdpa_backward)(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k, \
                         const real *v, const real *out, const real *lse, const real *bias, int B,      \
                         int L, int S, int H, int D);
LUNAR_SDPA_DECLS(LUNAR_REF_F64, double)
LUNAR_SDPA_DECLS(LUNAR_REF_F32, float)
LUNAR_SDPA_DECLS(LUNAR_CPU_KERNEL, float)
/* The 1-D weights of that resize along one axis of in_size -> out_size (both >= 1), in
 * double: returns the taps per output K (4 without antialias, 2 ceil(support) + 1 with);
 * when idx and wt are non-NULL fills idx[o * K + k] (source index in [0, in_size)) and
 * wt[o * K + k] (unused taps: index 0, weight 0). Shared by the ref and CPU kernels
 * (core/ops/ref/resample.c). */
int lunar_bicubic_weights(int64_t in_size, int64_t out_size, int antialias, int64_t *idx, double *wt);
/* 1 when the CPU bf16 kernels above (lunar_cpu_*_bf16) run on AVX512-BF16 instructions
 * (VDPBF16PS): built with them (-march=native on such a CPU) and the processor running
 * this has them (cpuid); 0: they run a portable path, correct but slower than f32
 * (core/ops/cpu/linear_bf16.c). precision = 'bf16' on the CPU requires 1. */
int lunar_cpu_bf16_native(void);
/* The best of reps timed n x n x n f32 GEMMs in GFLOP/s, after one warm-up, through
 * the GEMM the linear layers use (oneDNN, or cblas_sgemm without it): the GEMM peak (core/ops/cpu/linear.c); -1 when n or reps < 1 or
 * memory runs out. Not a kernel: a measurement for benchmarks. */
double lunar_cpu_sgemm_gflops(int n, int reps);
/* defined only with LUNAR_USE_CUDA (core/ops/cuda/) */
LUNAR_KERNEL_DECLS(LUNAR_CUDA_KERNEL, float)

#ifdef __cplusplus
}
#endif
#endif
