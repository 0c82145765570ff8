/*
 * core/ops/cpu/elementwise.c: the elementwise helpers and reductions on the CPU
 * (kernels.h): add, scale, sum_squares, cast_bf16. In place allowed.
 * sum_squares sums fixed chunks (set by n only) in double, in 16 lanes, then
 * the chunks in order: the same result for any thread count.
 */
#include <stdlib.h>

#include "lunar/kernels.h"
#include "lunar/tensor.h"   /* lunar_f32_to_bf16 */
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

/* ---- f32 -> bf16 -------------------------------------------------------------- */

#ifdef __AVX512F__
/* 32 consecutive floats (first n valid, rest read as 0) -> 32 bf16 in order. */
static inline __m512i cvt32_bf16(const float *x, int n) {
    __m512 a = _mm512_maskz_loadu_ps(lunar_mask16(n), x);
    __m512 b = _mm512_maskz_loadu_ps(lunar_mask16(n - 16), x + 16);
    /* the high halves of the 32 rounded lanes, in order (AVX512BW); the same
     * bits as VCVTNE2PS2BF16 except for denormals, which that flushes */
    const __m512i idx = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29,
                                         27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(lunar_round_bf16_hi(a), idx, lunar_round_bf16_hi(b));
}
#endif

/* out[n] = bf16(x[n]) (nearest even; NaN quiet). */
void lunar_cpu_cast_bf16(uint16_t *out, const float *x, size_t n) {
#ifdef __AVX512F__
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i += 32) {
        int k = n - i < 32 ? (int)(n - i) : 32;
        __m512i v = cvt32_bf16(x + i, k);
        _mm512_mask_storeu_epi16(out + i, k >= 32 ? ~(__mmask32)0 : (((__mmask32)1 << k) - 1), v);
    }
#else
    LUNAR_OMP(omp parallel for simd schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) out[i] = lunar_f32_to_bf16(x[i]);
#endif
}
