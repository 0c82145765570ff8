/*
 * core/ops/cpu/gemm.h: the CPU GEMM through oneDNN (core/ops/cpu/dnnl.c),
 * private to core/ops/cpu. The linear kernels (linear.c, linear_bf16.c) call
 * it first and fall back to OpenBLAS sgemm (f32) or the own bf16 GEMM when it
 * returns -1: a build without oneDNN (the Makefile's NO_DNNL=1, or no
 * libdnnl-dev), or a processor oneDNN has no kernel for.
 */
#ifndef LUNAR_CPU_GEMM_H
#define LUNAR_CPU_GEMM_H

#include <stddef.h>

/* A matrix operand of the GEMM: element (r, c) at p[r * rs + c * cs], f32
 * (bf16 = 0) or bf16 (bf16 = 1, uint16_t). Transposes are strides. */
typedef struct {
    const void *p;
    int bf16;
    size_t rs, cs;
} lunar_gemm_mat;

/* C[M, N] (row major, leading dimension ldc; f32, or bf16 when c_bf16) =
 * A[M, K] B[K, N] + bias[N] (bias f32, may be NULL) + C (when accumulate: C
 * is read and the product added to it, oneDNN's sum post-op). A and B have
 * the same dtype; f32 operands sum in f32, bf16 operands multiply exactly and
 * sum in f32 (fp32 accumulation), a bf16 C is rounded once (nearest even).
 * Threads: OpenMP's current omp_get_max_threads() (lunar.set_num_threads,
 * OMP_NUM_THREADS), the same pool as Lunar's own kernels; for a fixed shape
 * and thread count the result is the same bits on every call.
 * Returns 0, or -1 when oneDNN is not built in, M, N or K < 1, or oneDNN has
 * no kernel for the case (C untouched): the caller computes it another way. */
int lunar_cpu_dnnl_gemm(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B, const float *bias,
                        void *C, int c_bf16, size_t ldc, int accumulate);

/* The name of the oneDNN implementation that runs this case (e.g.
 * "brg:avx512_core"), or NULL when lunar_cpu_dnnl_gemm would return -1.
 * For the benches; the string is the calling thread's until its next call. */
const char *lunar_cpu_dnnl_gemm_impl(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B,
                                     const float *bias, int c_bf16, size_t ldc, int accumulate);

/* 1 when lunar_cpu_dnnl_gemm may run: oneDNN built in (-DLUNAR_USE_DNNL)
 * and not switched off by lunar_cpu_dnnl_enable(0); 0 otherwise. */
int lunar_cpu_dnnl_active(void);

/* on = 0: lunar_cpu_dnnl_gemm returns -1 (the fallbacks run) until called
 * again with 1. For the benches, which time both paths in one process; not
 * thread-safe against GEMMs running at the time. */
void lunar_cpu_dnnl_enable(int on);

/* The own bf16 GEMM (linear_bf16.c) on the same operands as
 * lunar_cpu_dnnl_gemm (bf16 or f32 rounded as read): C[M, N] (f32, ld ldc) =
 * A B (+ C when accumulate). Returns 0, or -1 when out of memory (C
 * untouched). For the benches. */
int lunar_cpu_gemm_bf16_own(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B, float *C,
                            size_t ldc, int accumulate);

#endif
