/*
 * core/ops/cpu/linear.c: the linear layer on the CPU (kernels.h).
 * The three products are OpenBLAS sgemm calls (the OpenMP build, so BLAS and
 * our loops share one thread pool); the bias is written into out first so the
 * forward GEMM runs with beta = 1 (no separate bias pass), dweight accumulates
 * with beta = 1, and dbias is a column sum in double, split over 32-column tiles
 * (each tile's sum runs over the rows in order: deterministic for any thread
 * count).
 */
#include <cblas.h>
#include <string.h>

#include "lunar/kernels.h"
#include "simd.h"

/* out[M,N] = inp[M,K] @ weight[N,K]^T + bias[N] */
void lunar_cpu_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                              int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
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

/* Column tile of the dbias sum: 32 columns, a double accumulator each. */
#define DBIAS_TILE 32

static void dbias_accumulate(float *dbias, const float *dout, int M, int N) {
    int tiles = (N + DBIAS_TILE - 1) / DBIAS_TILE;
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * N >= LUNAR_PAR_MIN))
    for (int t = 0; t < tiles; t++) {
        int n0 = t * DBIAS_TILE, nn = N - n0 < DBIAS_TILE ? N - n0 : DBIAS_TILE;
        double acc[DBIAS_TILE];
        for (int j = 0; j < nn; j++) acc[j] = 0.0;
        for (int m = 0; m < M; m++) {
            const float *row = dout + (size_t)m * N + n0;
            for (int j = 0; j < nn; j++) acc[j] += (double)row[j];
        }
        for (int j = 0; j < nn; j++) dbias[n0 + j] += (float)acc[j];
    }
}

/* dinp = dout @ weight (overwrite, may be NULL); dweight += dout^T @ inp;
 * dbias += column sums of dout (may be NULL). */
void lunar_cpu_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, int M, int K, int N) {
    if (dinp && M > 0 && K > 0) {
        if (N > 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dout, N, weight,
                        K, 0.0f, dinp, K);
        } else {
            memset(dinp, 0, (size_t)M * K * sizeof *dinp);
        }
    }
    if (M <= 0 || N <= 0) return;
    if (dweight && K > 0) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dout, N, inp, K, 1.0f,
                    dweight, K);
    }
    if (dbias) dbias_accumulate(dbias, dout, M, N);
}
