/*
 * core/ops/cpu/dropout.c: inverted dropout on the CPU (kernels.h). Element i is
 * kept when (w >> 8) * 2^-24 >= p, w = lunar_rng_u32(seed, stream, offset + i),
 * i.e. when (w >> 8) >= ceil(p 2^24) (exact: p 2^24 is exact in double); kept
 * elements scale by 1/(1-p) (in double, rounded once). The words come from Philox4x32-10 (core/rng.c)
 * 16 blocks (64 words) at a time, in AVX-512 lanes where present; groups of 16
 * blocks are split over threads. In place allowed.
 */
#include <math.h>
#include <string.h>

#include "lunar/kernels.h"
#include "lunar/rng.h"
#include "simd.h"

/* The 64 words of Philox blocks blk0 .. blk0+15 of stream (seed, stream), in
 * word order: w[4 g + j] = word j of block blk0 + g = lunar_rng_u32(seed, stream,
 * 4 (blk0 + g) + j). Counter = (blk lo, blk hi, stream lo, stream hi), key = seed,
 * as core/rng.c. */
#ifdef __AVX512F__
static inline __m512i mulhi_epu32(__m512i a, __m512i m) {
    __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, m), 32);
    __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

static void philox16(uint64_t seed, uint64_t stream, uint64_t blk0, uint32_t w[64]) {
    uint32_t lo[16], hi[16];
    for (int g = 0; g < 16; g++) {
        uint64_t blk = blk0 + (uint64_t)g;
        lo[g] = (uint32_t)blk;
        hi[g] = (uint32_t)(blk >> 32);
    }
    __m512i c0 = _mm512_loadu_si512(lo), c1 = _mm512_loadu_si512(hi);
    __m512i c2 = _mm512_set1_epi32((int)(uint32_t)stream);
    __m512i c3 = _mm512_set1_epi32((int)(uint32_t)(stream >> 32));
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const __m512i M0 = _mm512_set1_epi32((int)0xD2511F53u), M1 = _mm512_set1_epi32((int)0xCD9E8D57u);
    for (int r = 0; r < 10; r++) {
        __m512i lo0 = _mm512_mullo_epi32(c0, M0), hi0 = mulhi_epu32(c0, M0);
        __m512i lo1 = _mm512_mullo_epi32(c2, M1), hi1 = mulhi_epu32(c2, M1);
        __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32((int)k0));
        __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32((int)k1));
        c0 = n0;
        c1 = lo1;
        c2 = n2;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    /* transpose [4 words][16 blocks] to [16 blocks][4 words] */
    uint32_t t[4][16];
    _mm512_storeu_si512(t[0], c0);
    _mm512_storeu_si512(t[1], c1);
    _mm512_storeu_si512(t[2], c2);
    _mm512_storeu_si512(t[3], c3);
    for (int g = 0; g < 16; g++) {
        for (int j = 0; j < 4; j++) w[4 * g + j] = t[j][g];
    }
}
#else
static void philox16(uint64_t seed, uint64_t stream, uint64_t blk0, uint32_t w[64]) {
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (int g = 0; g < 16; g++) {
        uint64_t blk = blk0 + (uint64_t)g;
        uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream,
                           (uint32_t)(stream >> 32)};
        lunar_philox4x32_10(ctr, key, w + 4 * g);
    }
}
#endif

static void dropout_apply(float *out, const float *inp, size_t n, float p, uint64_t seed,
                          uint64_t stream, uint64_t offset) {
    if (n == 0) return;
    if (p == 0.0f) {
        if (out != inp) {
            LUNAR_OMP(omp parallel for simd schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
            for (size_t i = 0; i < n; i++) out[i] = inp[i];
        }
        return;
    }
    /* keep iff (w >> 8) >= thr; thr > 2^24 - 1 drops everything (p >= 1) */
    double t = ceil((double)p * 16777216.0);
    uint32_t thr = t <= 0.0 ? 0u : t < 16777216.0 ? (uint32_t)t : 16777216u; /* NaN p: none kept */
    /* the product in double, rounded once: the same bits as the reference */
    double scale = p >= 1.0f ? 0.0 : 1.0 / (1.0 - (double)p);
    uint64_t first = offset >> 2, last = (offset + n - 1) >> 2;
    uint64_t groups = (last - first) / 16 + 1;
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN / 4))
    for (uint64_t g = 0; g < groups; g++) {
        uint32_t w[64];
        uint64_t blk0 = first + 16 * g;
        philox16(seed, stream, blk0, w);
        /* words idx in [4 blk0, 4 blk0 + 64) within [offset, offset + n) */
        uint64_t lo = 4 * blk0 < offset ? offset : 4 * blk0;
        uint64_t hi = 4 * blk0 + 64 < offset + n ? 4 * blk0 + 64 : offset + n;
        const uint32_t *wp = w + (lo - 4 * blk0);
        const float *x = inp + (lo - offset);
        float *y = out + (lo - offset);
        int cnt = (int)(hi - lo);
        LUNAR_SIMD
        for (int e = 0; e < cnt; e++) y[e] = (wp[e] >> 8) >= thr ? (float)((double)x[e] * scale) : 0.0f;
    }
}

void lunar_cpu_dropout_forward(float *out, const float *inp, size_t n, float p, uint64_t seed,
                               uint64_t stream, uint64_t offset) {
    dropout_apply(out, inp, n, p, seed, stream, offset);
}

void lunar_cpu_dropout_backward(float *dinp, const float *dout, size_t n, float p, uint64_t seed,
                                uint64_t stream, uint64_t offset) {
    dropout_apply(dinp, dout, n, p, seed, stream, offset);
}

/* One contiguous run per row (offset + r row_stride), the rows shared among the
 * threads (a row's own parallel loop then runs on its thread). */
void lunar_cpu_dropout_rows(float *out, const float *inp, size_t rows, size_t row_len, float p, uint64_t seed,
                            uint64_t stream, uint64_t offset, uint64_t row_stride) {
    LUNAR_OMP(omp parallel for schedule(static) if (rows > 1 && rows * row_len >= LUNAR_PAR_MIN / 4))
    for (size_t r = 0; r < rows; r++)
        dropout_apply(out + r * row_len, inp + r * row_len, row_len, p, seed, stream, offset + r * row_stride);
}
