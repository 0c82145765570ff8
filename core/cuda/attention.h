/*
 * core/cuda/attention.h: the fused attention of the CUDA backend beyond the
 * f32 kernel of kernels.h: bf16 / f16 inputs through cuDNN's fused
 * scaled-dot-product-attention graph (core/ops/cuda/attention_cudnn_*.cu), the
 * own kernel (core/ops/cuda/attention.cu) as the fallback, and which of the
 * two ran. Only with LUNAR_USE_CUDA.
 *
 * The bf16 path is what precision = 'bf16' reaches from Lua now: ops.h's
 * attention on bf16 tensors calls kernels.h's lunar_cuda_attention_forward_bf16
 * and lunar_cuda_attention_backward_bf16, which are the dtype entries below
 * with LUNAR_BF16 (core/ops/cuda/attention_path.cu). f16 is reached only
 * through the _dt entries (tests, benchmarks).
 *
 * Which path runs (per call, forward and backward decided apart):
 *   f32 inputs                  the own f32 kernel (cuDNN's fused flash
 *                               attention takes bf16 / f16 only);
 *   bf16 / f16 inputs           cuDNN's fused attention when all of these hold:
 *                                 LUNAR_CUDNN_ATTENTION is not 0,
 *                                 libcudnn 9 (>= 9.0, not 9.10.0/9.10.1)
 *                                 loads (dlopen),
 *                                 D % 8 == 0, D <= 256, the pointers 16-byte
 *                                 aligned, and for backward N > 1 (and with
 *                                 cuDNN <= 9.15.0, N % 128 == 0),
 *                                 cuDNN finalizes the graph for this shape and
 *                                 its heuristics give an engine that builds;
 *                               else the own kernel on f32 copies (converted on
 *                               the device, results rounded back).
 * The log-sum-exp `lse` is the same quantity on both paths (natural log of the
 * row sums of exp(scale q.k)), so a forward of one path and a backward of the
 * other agree.
 *
 * LUNAR_CUDNN_ATTENTION (read once; lunar_cuda_set_cudnn_attention overrides):
 *   0, off            never cuDNN;
 *   1, on, unset      cuDNN with a deterministic backward graph (dQ written by
 *                     its matmul, no atomic dQ accumulation; cuDNN serves it on
 *                     Hopper); where cuDNN offers no engine for it the own
 *                     (deterministic) kernel runs the backward;
 *   fast              backward through the graph with an f32 dQ accumulator in
 *                     the workspace (atomics: fastest, not bitwise
 *                     reproducible run to run).
 * LUNAR_CUDNN_LIBRARY names the library to dlopen (default libcudnn.so.9, then
 * libcudnn_graph.so.9). LUNAR_ATTENTION_LOG=1 prints one line to stderr for
 * every new (direction, path, dtype, reason) an attention call takes (at most
 * 64), e.g. "lunar: cuda:0 attention forward (f32, B=2 N=9 H=2 D=16): own
 * kernel (f32 inputs: cuDNN's fused attention takes bf16 or f16)".
 * In the CPU emulation of tests/cuda_emu libcudnn is never loaded.
 *
 * Graphs are built once per (device, dtype, B, N, H, D, direction, backward
 * variant) and cached with their execution plan; a shape cuDNN refuses is
 * cached as refused (with the reason), so the choice costs nothing after the
 * first call. The workspace comes from the device allocator; everything runs
 * on the device's compute stream.
 */
#ifndef LUNAR_CUDA_ATTENTION_H
#define LUNAR_CUDA_ATTENTION_H

#include <stddef.h>

#include "lunar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LUNAR_ATTN_PATH_NONE = 0,   /* no attention call yet on this thread */
    LUNAR_ATTN_PATH_OWN = 1,    /* Lunar's own kernel (attention.cu) */
    LUNAR_ATTN_PATH_CUDNN = 2,  /* cuDNN's fused SDPA graph */
} lunar_attn_path;

/* kernels.h's attention on device memory of dtype f32, bf16 or f16: qkv
 * [B, N, 3, H, D] -> out [B, N, H, D] (dtype), lse [B, H, N] (always f32);
 * dqkv [B, N, 3, H, D] (dtype) from dout, qkv, out (dtype) and lse.
 * LUNAR_F32 is kernels.h's lunar_cuda_attention_forward / _backward, LUNAR_BF16
 * its lunar_cuda_attention_forward_bf16 / _backward_bf16 (precision = 'bf16').
 * Queued on the current device's compute stream; a failure is the thread's
 * sticky CUDA error (lunar_cuda_take_error), as for every CUDA kernel. */
void lunar_cuda_attention_forward_dt(lunar_dtype dtype, void *out, float *lse, const void *qkv, int B, int N,
                                     int H, int D);
void lunar_cuda_attention_backward_dt(lunar_dtype dtype, void *dqkv, const void *dout, const void *qkv,
                                      const void *out, const float *lse, int B, int N, int H, int D);

/* The path the calling thread's last attention forward (backward = 0) or
 * backward (backward = 1) took, f32 calls of kernels.h included, and why not
 * cuDNN when it was the own kernel (*reason "" for cuDNN; reason may be NULL). */
lunar_attn_path lunar_cuda_attention_last_path(int backward, const char **reason);
/* "none", "own kernel", "cuDNN" */
const char *lunar_cuda_attention_path_name(lunar_attn_path path);

/* The LUNAR_CUDNN_ATTENTION mode (see above). Setting -1 goes back to what
 * the environment says. Process-wide. */
enum { LUNAR_CUDNN_ATTN_OFF = 0, LUNAR_CUDNN_ATTN_ON = 1, LUNAR_CUDNN_ATTN_FAST = 2 };
void lunar_cuda_set_cudnn_attention(int mode);
int lunar_cuda_cudnn_attention(void);

/* 1 when libcudnn was loaded (dlopen, once; no device needed), else 0 with the
 * reason in lunar_cuda_cudnn_unavailable_reason() ("" when loaded). */
int lunar_cuda_cudnn_available(void);
const char *lunar_cuda_cudnn_unavailable_reason(void);
/* cudnnGetVersion() of the loaded library (e.g. 91900), 0 when none. */
size_t lunar_cuda_cudnn_version(void);

/* for core/ops/cuda: the own f32 kernels without recording a path (the
 * fallback of the bf16 / f16 calls), and the record of an f32 call of
 * kernels.h (lunar_cuda_attention_forward / _backward). */
void lunar_cuda_attention_forward_own(float *out, float *lse, const float *qkv, int B, int N, int H, int D);
void lunar_cuda_attention_backward_own(float *dqkv, const float *dout, const float *qkv, const float *out,
                                       const float *lse, int B, int N, int H, int D);
void lunar_cuda_attention_note_f32(int backward, int B, int N, int H, int D);

#ifdef __cplusplus
}
#endif
#endif
