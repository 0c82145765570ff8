/*
 * core/rng.c: Philox4x32-10 (Salmon et al., SC'11) and the distributions built
 * on it (rng.h). Every value is a pure function of (seed, stream, index).
 */
#include <math.h>

#include "lunar/rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void lunar_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

uint64_t lunar_rng_stream_id(const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h;
}

static inline void block(uint64_t seed, uint64_t stream, uint64_t blk, uint32_t out[4]) {
    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    lunar_philox4x32_10(ctr, key, out);
}

uint32_t lunar_rng_u32(uint64_t seed, uint64_t stream, uint64_t index) {
    uint32_t w[4];
    block(seed, stream, index >> 2, w);
    return w[index & 3];
}

/* uniform in [0, 1) with 24 bits, never 1 */
static inline double u01(uint32_t w) { return (double)(w >> 8) * (1.0 / 16777216.0); }
/* uniform in (0, 1], never 0 (for logs) */
static inline double u01_open(uint32_t w) { return ((double)(w >> 8) + 1.0) * (1.0 / 16777216.0); }

void lunar_rng_uniform(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                       float low, float high) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        out[i] = (float)(low + (high - low) * u01(lunar_rng_u32(seed, stream, offset + i)));
    }
}

void lunar_rng_normal(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                      float mean, float std) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        uint64_t j = 2 * (offset + i);
        double u1 = u01_open(lunar_rng_u32(seed, stream, j));
        double u2 = u01(lunar_rng_u32(seed, stream, j + 1));
        double z = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
        out[i] = (float)(mean + std * z);
    }
}

/* Giles, "Approximating the erfinv function" (GPU Gems / 2010), single-precision
 * polynomial as a start, then two Newton steps on erf in double. */
double lunar_erfinv(double x) {
    if (x <= -1.0) return -INFINITY;
    if (x >= 1.0) return INFINITY;
    double w = -log((1.0 - x) * (1.0 + x)), p;
    if (w < 5.0) {
        w -= 2.5;
        p = 2.81022636e-08;
        p = 3.43273939e-07 + p * w;
        p = -3.5233877e-06 + p * w;
        p = -4.39150654e-06 + p * w;
        p = 0.00021858087 + p * w;
        p = -0.00125372503 + p * w;
        p = -0.00417768164 + p * w;
        p = 0.246640727 + p * w;
        p = 1.50140941 + p * w;
    } else {
        w = sqrt(w) - 3.0;
        p = -0.000200214257;
        p = 0.000100950558 + p * w;
        p = 0.00134934322 + p * w;
        p = -0.00367342844 + p * w;
        p = 0.00573950773 + p * w;
        p = -0.0076224613 + p * w;
        p = 0.00943887047 + p * w;
        p = 1.00167406 + p * w;
        p = 2.83297682 + p * w;
    }
    double y = p * x;
    for (int it = 0; it < 2; it++) {  /* Newton on erf(y) - x */
        double err = erf(y) - x;
        y -= err / (2.0 / sqrt(M_PI) * exp(-y * y));
    }
    return y;
}

void lunar_rng_trunc_normal(float *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset,
                            float mean, float std, float a, float b) {
    /* as torch.nn.init.trunc_normal_: u ~ U(2 Phi(alpha) - 1, 2 Phi(beta) - 1), x = erfinv(u) */
    double lo = erf(((double)a - mean) / std / sqrt(2.0));
    double hi = erf(((double)b - mean) / std / sqrt(2.0));
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        double u = lo + (hi - lo) * u01(lunar_rng_u32(seed, stream, offset + i));
        double x = mean + std * sqrt(2.0) * lunar_erfinv(u);
        if (x < a) x = a;
        if (x > b) x = b;
        out[i] = (float)x;
    }
}
