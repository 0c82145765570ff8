/*
 * tests/c/kernel_test.h: what the kernel tests share (tests/c/test_<family>.c,
 * one per op family of core/ops: attention, dropout, elementwise, embed, gelu,
 * layernorm, linear, loss, optim, patchify; and test_determinism.c). Each
 * family file tests, on the backends that run without a GPU:
 *
 * The reference kernels (core/ops/ref, test_ref_*), the oracle every other
 * backend is tested against, so they are checked only against things that do
 * not depend on them:
 *   - every backward against central finite differences of the f64 forward
 *     (loss = sum(out * R), R random, h = 1e-6), for input and parameter
 *     gradients, and the accumulate-twice rule of kernels.h (parameter
 *     gradients add up, input gradients are overwritten);
 *   - forwards against hand-computed values and mathematical facts;
 *   - the f32 variant against the f64 one (same float-representable inputs).
 *
 * The fast CPU kernels (core/ops/cpu, test_cpu_*) against the double-precision
 * reference (lunar_ref_*_f64) on random inputs of odd sizes (not multiples of 8
 * or 16, N = 1, B = 1, and sizes that take the kernels' block and tail paths):
 * forward outputs, the tensors saved for backward (mean, rstd, lse), every
 * gradient, overwrite vs accumulate semantics (close_arr of test.h).
 *
 * The bf16 kernels of precision = 'bf16' (test_bf16_*) against the reference
 * (double sums of exact bf16 products):
 *   - the bf16 GEMMs against the bf16 oracle at an f32-summation tolerance (the
 *     operands are rounded the same way, so only the order of the f32 sums
 *     differs), and against the f64 GEMM of the unrounded f32 operands at a
 *     bf16 tolerance (what precision = 'bf16' costs), on sizes that take every
 *     block and tail path of the packing, with f32 and bf16 activations and
 *     gradients; a bf16 output is bit for bit the f32 one rounded, and within
 *     one bf16 rounding of the oracle's;
 *   - the bf16 outputs of LayerNorm and GELU, the cast and the optimizer steps
 *     with a working copy are bit for bit the f32 kernel then
 *     lunar_f32_to_bf16; GELU from a bf16 input and attention on bf16
 *     operands bit for bit the f32 kernels on the widened values (then
 *     rounded), and within one bf16 rounding of the f64 oracle.
 * On a CPU without avx512_bf16 (lunar_cpu_bf16_native() == 0) the kernels run
 * their portable path and the same checks apply.
 *
 * Random inputs: the reference tests draw from a local splitmix64 stream
 * (rnd, fill: values rounded to float, so f32 and f64 see the same inputs);
 * the CPU and bf16 tests from test.h's xorshift stream (urand, rand_f).
 */
#ifndef LUNAR_KERNEL_TEST_H
#define LUNAR_KERNEL_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/kernels.h"  /* lunar_ref_<op>_f64 / _f32, lunar_cpu_<op>: what is tested */
#include "lunar/rng.h"      /* lunar_rng_u32: the dropout mask rule */
#include "lunar/tensor.h"   /* lunar_f32_to_bf16, lunar_bf16_to_f32 */
#ifndef TEST_RNG_SEED
#define TEST_RNG_SEED 0x9E3779B97F4A7C15ull
#endif
#include "test.h"           /* RUN, CHECK, CHECK_CLOSE, TEST_SUMMARY, urand, rand_f, close_arr */

/* ---- the reference tests: a local deterministic generator, finite differences ---- */

static uint64_t rng_state = 0x853c49e6748fea9bull;

/* splitmix64 (Steele, Lea & Flood 2014): a tiny generator local to the test. */
static inline uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi), rounded to float so the f32 and f64 variants can be
 * fed exactly the same inputs */
static inline double rnd(double lo, double hi) {
    double u = (double)(next_u64() >> 40) * (1.0 / 16777216.0);
    return (double)(float)(lo + (hi - lo) * u);
}

static inline void fill(double *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = rnd(lo, hi);
}

static inline void set(double *x, size_t n, double v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static inline double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void to_f32(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* max_i |a_i - s * b_i| */
static inline double max_diff_scaled(const double *a, const double *b, double s, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - s * b[i]));
    return worst;
}

/* max_i |a_i - b_i| / max(1, |b_i|): the f32 variant a against the f64 variant b */
static inline double rel_err_f32(const float *a, const double *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i])));
    return worst;
}

/* A scalar loss of the current inputs held in ctx. */
typedef double (*loss_fn)(void *ctx);

#define FD_H 1e-6
#define FD_TOL 1e-6
#define F32_TOL 1e-5

/* Central finite differences of f with respect to x[0..n) against the
 * analytic gradient: max_i |a_i - n_i| / max(1, |n_i|). x is restored. */
static inline double fd_error(loss_fn f, void *ctx, double *x, size_t n, const double *analytic) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double saved = x[i];
        x[i] = saved + FD_H;
        double plus = f(ctx);
        x[i] = saved - FD_H;
        double minus = f(ctx);
        x[i] = saved;
        double numeric = (plus - minus) / (2.0 * FD_H);
        worst = fmax(worst, fabs(analytic[i] - numeric) / fmax(1.0, fabs(numeric)));
    }
    return worst;
}

#define CHECK_FD(f, ctx, x, n, grad)                                                  \
    do {                                                                              \
        double err_ = fd_error((f), (ctx), (x), (n), (grad));                         \
        CHECK_MSG(err_ < FD_TOL, "%s: finite-difference error %.3g", #grad, err_);    \
    } while (0)

/* second backward into the same parameter gradient: exactly twice the first */
#define CHECK_DOUBLED(now, first, n)                                                  \
    CHECK_MSG(max_diff_scaled((now), (first), 2.0, (n)) == 0.0,                       \
              "%s is not twice %s after a second backward", #now, #first)

/* an input gradient written over garbage: exactly the first one again */
#define CHECK_SAME(now, first, n) \
    CHECK_MSG(max_diff_scaled((now), (first), 1.0, (n)) == 0.0, "%s was not overwritten", #now)

#define CHECK_F32(a32, a64, n)                                                        \
    do {                                                                              \
        double err_ = rel_err_f32((a32), (a64), (n));                                 \
        CHECK_MSG(err_ < F32_TOL, "%s vs %s: relative error %.3g", #a32, #a64, err_); \
    } while (0)

#define GARBAGE 1e9

/* ---- the CPU tests ------------------------------------------------------------- */

static inline float *zeros_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static inline int same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

/* ---- the bf16 tests ------------------------------------------------------------ */

static inline uint16_t *to_bf16(const float *x, size_t n) {
    uint16_t *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = lunar_f32_to_bf16(x[i]);
    return y;
}

/* Tolerances. Against the bf16 oracle only the f32 summation differs: a few
 * f32 ulps of the largest partial sum. Against the unrounded f64 GEMM each
 * operand carries a relative rounding error up to 2^-9, so a sum of K products
 * of random sign is off by about 2^-8 sqrt(K) |a||b|: relative to the largest
 * output (itself about sqrt(K) |a||b|), 2^-8 with some slack. */
#define RTOL_ORACLE 2e-6
#define ATOL_ORACLE 2e-5
#define ATOL_BF16 1.5e-2

#endif /* LUNAR_KERNEL_TEST_H */
