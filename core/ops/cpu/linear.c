/*
 * core/ops/cpu/linear.c: the linear layer on the CPU (kernels.h).
 * The three products go to oneDNN's matmul (gemm.h, dnnl.c) where the build
 * has it: the forward with the bias fused, dweight accumulated by the sum
 * post-op, the transposes as strides. Without oneDNN (NO_DNNL=1, or a case
 * it has no kernel for) they are OpenBLAS sgemm calls (the OpenMP build, so
 * BLAS and our loops share one thread pool): the bias is written into out
 * first so the forward GEMM runs with beta = 1, and dweight accumulates with
 * beta = 1. dbias is a column sum over fixed row blocks (float per block,
 * double across blocks in order: deterministic for any thread count).
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "lunar/kernels.h"
#include "simd.h"

/* out[M,N] = inp[M,K] @ weight[N,K]^T + bias[N] */
void lunar_cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    if (K > 0) {
        lunar_gemm_mat a = {inp, 0, (size_t)K, 1}, wt = {weight, 0, 1, (size_t)K};   /* weight^T [K, N] */
        if (lunar_cpu_dnnl_gemm(M, N, K, &a, &wt, bias, out, 0, (size_t)N, 0) == 0) return;
    }
    float beta = 0.0f;
    if (bias) {
        LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * N >= LUNAR_PAR_MIN))
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * N, bias, (size_t)N * sizeof *out);
        beta = 1.0f;
    }
    if (K <= 0) {
        if (!bias) memset(out, 0, (size_t)M * N * sizeof *out);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, inp, K, weight, K, beta,
                out, N);
}

/* dbias += column sums of dout[M, N]. Rows are cut into fixed blocks (set by M
 * only); each block streams its rows in order into a float partial [N], and the
 * partials are added in block order in double: sequential reads, and the same
 * result for any thread count. */
static int dbias_block_rows(int M) {
    int r = (M + 255) / 256;
    return r < 32 ? 32 : r;
}

/* row m of dout into p[N] (add = 0: p = row; 1: p += row), f32 or bf16 widened */
static void dbias_row(float *p, const void *dout, int bf16, int m, int N, int add) {
    if (bf16) {
        const uint16_t *row = (const uint16_t *)dout + (size_t)m * N;
        LUNAR_SIMD
        for (int n = 0; n < N; n++) {
            float x = lunar_bf16_widen(row[n]);
            p[n] = add ? p[n] + x : x;
        }
    } else {
        const float *row = (const float *)dout + (size_t)m * N;
        if (!add) { memcpy(p, row, (size_t)N * sizeof(float)); return; }
        LUNAR_SIMD
        for (int n = 0; n < N; n++) p[n] += row[n];
    }
}

void lunar_cpu_dbias_accumulate(float *dbias, const void *dout, int dout_bf16, int M, int N) {
    if (M <= 0 || N <= 0) return;
    const int rows = dbias_block_rows(M), nblk = (M + rows - 1) / rows;
    /* N doubles to combine the partials, then nblk x N floats of partials */
    double *acc = malloc((size_t)N * sizeof(double) + (size_t)nblk * N * sizeof(float));
    if (!acc) { /* out of memory: column by column, no scratch */
        for (int n = 0; n < N; n++) {
            double sum = 0.0;
            for (int m = 0; m < M; m++) {
                size_t i = (size_t)m * N + n;
                sum += dout_bf16 ? (double)lunar_bf16_widen(((const uint16_t *)dout)[i]) : (double)((const float *)dout)[i];
            }
            dbias[n] += (float)sum;
        }
        return;
    }
    float *part = (float *)(acc + N);
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * N >= LUNAR_PAR_MIN))
    for (int blk = 0; blk < nblk; blk++) {
        int m0 = blk * rows, m1 = m0 + rows < M ? m0 + rows : M;
        float *p = part + (size_t)blk * N;
        for (int m = m0; m < m1; m++) dbias_row(p, dout, dout_bf16, m, N, m > m0);
    }
    for (int n = 0; n < N; n++) acc[n] = 0.0;
    for (int blk = 0; blk < nblk; blk++) {
        const float *p = part + (size_t)blk * N;
        LUNAR_SIMD
        for (int n = 0; n < N; n++) acc[n] += (double)p[n];
    }
    for (int n = 0; n < N; n++) dbias[n] += (float)acc[n];
    free(acc);
}

/* dinp = dout @ weight (overwrite, may be NULL); dweight += dout^T @ inp;
 * dbias += column sums of dout (may be NULL). */
void lunar_cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int M, int K, int N) {
    if (dinp && M > 0 && K > 0) {
        lunar_gemm_mat a = {dout, 0, (size_t)N, 1}, w = {weight, 0, (size_t)K, 1};
        if (N > 0) {
            if (lunar_cpu_dnnl_gemm(M, K, N, &a, &w, NULL, dinp, 0, (size_t)K, 0) != 0)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dout, N, weight,
                            K, 0.0f, dinp, K);
        } else {
            memset(dinp, 0, (size_t)M * K * sizeof *dinp);
        }
    }
    if (M <= 0 || N <= 0) return;
    lunar_gemm_mat dt = {dout, 0, 1, (size_t)N}, x = {inp, 0, (size_t)K, 1};   /* dout^T [N, M], inp [M, K] */
    if (dweight && K > 0 && lunar_cpu_dnnl_gemm(N, K, M, &dt, &x, NULL, dweight, 0, (size_t)K, 1) != 0) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dout, N, inp, K, 1.0f,
                    dweight, K);
    }
    if (dbias) lunar_cpu_dbias_accumulate(dbias, dout, 0, M, N);
}

/* C[n, n] = A B, row major: oneDNN where built, else OpenBLAS. */
static void sgemm_square(int n, const float *a, const float *b, float *c) {
    lunar_gemm_mat ma = {a, 0, (size_t)n, 1}, mb = {b, 0, (size_t)n, 1};
    if (lunar_cpu_dnnl_gemm(n, n, n, &ma, &mb, NULL, c, 0, (size_t)n, 0) == 0) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
}

/* The best of reps timed n x n x n f32 GEMMs (after one warm-up), in GFLOP/s,
 * through the GEMM the linear layer uses (oneDNN, else OpenBLAS sgemm):
 * the machine's GEMM peak, against which benchmarks report the training step
 * (bench/lunar_train_bench.lua). Operands are fixed small integers times 0.1. */
double lunar_cpu_sgemm_gflops(int n, int reps) {
    if (n < 1 || reps < 1) return -1.0;
    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) { free(a); free(b); free(c); return -1.0; }
    for (size_t i = 0; i < nn; i++) { a[i] = (float)((int)(i % 7) - 3) * 0.1f; b[i] = (float)((int)(i % 5) - 2) * 0.1f; }
    double best = 0.0;
    sgemm_square(n, a, b, c);  /* warm-up */
    for (int r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        sgemm_square(n, a, b, c);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double g = 2.0 * n * (double)n * n / (s > 0 ? s : 1e-9) / 1e9;
        if (g > best) best = g;
    }
    free(a); free(b); free(c);
    return best;
}
