/*
 * core/ops/cpu/elementwise.c: the elementwise helpers and reductions on the CPU
 * (kernels.h): add, scale, sum_squares, accuracy_count. In place allowed.
 * sum_squares sums fixed chunks (set by n only) in double, in 16 lanes, then
 * the chunks in order: the same result for any thread count.
 */
#include <stdlib.h>

#include "lunar/kernels.h"
#include "simd.h"

void lunar_cpu_add(float *out, const float *a, const float *b, size_t n) {
    LUNAR_OMP(omp parallel for simd schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void lunar_cpu_scale(float *x, size_t n, float s) {
    LUNAR_OMP(omp parallel for simd schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

/* chunk of sum_squares: at least 16384 elements, at most 1024 chunks */
static size_t ss_chunk(size_t n) {
    size_t c = (n + 1023) / 1024;
    c = (c + 15) & ~(size_t)15;
    return c < 16384 ? 16384 : c;
}

static double sum_squares_chunk(const float *x, size_t n) {
    double lane[16] = {0};
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int j = 0; j < 16; j++) lane[j] += (double)x[i + j] * (double)x[i + j];
    }
    for (; i < n; i++) lane[0] += (double)x[i] * (double)x[i];
    double s = 0.0;
    for (int j = 0; j < 16; j++) s += lane[j];
    return s;
}

double lunar_cpu_sum_squares(const float *x, size_t n) {
    if (n == 0) return 0.0;
    size_t chunk = ss_chunk(n);
    int nchunks = (int)((n + chunk - 1) / chunk);
    double part[1024];
    LUNAR_OMP(omp parallel for schedule(static) if (nchunks > 1))
    for (int c = 0; c < nchunks; c++) {
        size_t i0 = (size_t)c * chunk, len = n - i0 < chunk ? n - i0 : chunk;
        part[c] = sum_squares_chunk(x + i0, len);
    }
    double s = 0.0;
    for (int c = 0; c < nchunks; c++) s += part[c];
    return s;
}

int64_t lunar_cpu_accuracy_count(const float *logits, const int32_t *targets, int B, int K) {
    int64_t correct = 0;
    LUNAR_OMP(omp parallel for schedule(static) reduction(+ : correct) if ((size_t)B * K >= LUNAR_PAR_MIN))
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        int best = 0;
        for (int k = 1; k < K; k++) if (z[k] > z[best]) best = k;
        if (best == targets[b]) correct++;
    }
    return correct;
}
