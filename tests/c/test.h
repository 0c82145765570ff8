/*
 * tests/c/test.h: a minimal C test harness. Each test binary defines test
 * functions, registers them in main with RUN(fn), and ends with
 * TEST_SUMMARY(), which prints "N passed, N failed, N skipped" (tests/run_all.sh
 * reads it) and returns the exit code. A test that cannot run because the
 * machine lacks something (a CUDA device, a dataset package) is registered
 * with SKIP(fn, reason), or calls TEST_SKIP(reason) from its body: it counts
 * as skipped, never as passed.
 * A test fails on the first CHECK that does not hold; the message names the
 * file, line and values.
 */
#ifndef LUNAR_TEST_H
#define LUNAR_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int test_passed_, test_failed_, test_skipped_, test_current_failed_;
static const char *test_current_name_;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  FAIL %s (%s:%d): %s\n", test_current_name_, __FILE__, \
                    __LINE__, #cond);                                               \
            test_current_failed_ = 1;                                               \
            return;                                                                 \
        }                                                                           \
    } while (0)

#define CHECK_MSG(cond, ...)                                                        \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  FAIL %s (%s:%d): ", test_current_name_, __FILE__,    \
                    __LINE__);                                                      \
            fprintf(stderr, __VA_ARGS__);                                           \
            fprintf(stderr, "\n");                                                  \
            test_current_failed_ = 1;                                               \
            return;                                                                 \
        }                                                                           \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, rtol, atol)                                               \
    do {                                                                            \
        double a_ = (double)(a), b_ = (double)(b);                                  \
        CHECK_MSG(fabs(a_ - b_) <= (atol) + (rtol) * fabs(b_) && !isnan(a_),        \
                  "%s = %.9g, %s = %.9g", #a, a_, #b, b_);                          \
    } while (0)

#define RUN(fn)                                                                     \
    do {                                                                            \
        test_current_name_ = #fn;                                                   \
        test_current_failed_ = 0;                                                   \
        fn();                                                                       \
        if (test_current_failed_ < 0) test_skipped_++;                              \
        else if (test_current_failed_) test_failed_++;                              \
        else { test_passed_++; printf("  ok %s\n", #fn); }                          \
    } while (0)

#define SKIP(fn, reason)                                                            \
    do {                                                                            \
        test_skipped_++;                                                            \
        printf("  skip %s: %s\n", #fn, (reason));                                   \
    } while (0)

/* Inside a test body: leaves the test and counts it as skipped (not passed). */
#define TEST_SKIP(reason)                                                           \
    do {                                                                            \
        printf("  skip %s: %s\n", test_current_name_, (reason));                    \
        test_current_failed_ = -1;                                                  \
        return;                                                                     \
    } while (0)

#define TEST_SUMMARY()                                                              \
    (printf("%d passed, %d failed, %d skipped\n", test_passed_, test_failed_,       \
            test_skipped_),                                                         \
     test_failed_ ? 1 : 0)

/* ---- random inputs: a xorshift64* stream the test file seeds ------------------ */

/* A test file that wants random inputs defines TEST_RNG_SEED (a uint64_t
 * literal) before including this header and gets urand() (uniform doubles in
 * [0, 1)), rand_f() (a malloc'ed float array uniform in [lo, hi)) and copy_f()
 * (a malloc'ed copy); the caller frees the arrays. */
#ifdef TEST_RNG_SEED
#include <stdint.h>
#include <stdlib.h>
static uint64_t rng_s = TEST_RNG_SEED;

static inline double urand(void) { /* uniform [0, 1), xorshift64* (Vigna 2016) */
    rng_s ^= rng_s >> 12;
    rng_s ^= rng_s << 25;
    rng_s ^= rng_s >> 27;
    return (double)((rng_s * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}

static inline float *rand_f(size_t n, double lo, double hi) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * urand());
    return x;
}

static inline float *copy_f(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}
#endif

/* Against the double-precision reference (lunar_ref_*_f64), for the kernel
 * tests: to_d() (a malloc'ed double copy of floats), zeros_d() (calloc'ed),
 * and close_arr(): got ~ want elementwise, |g - w| <= rtol |w| + atol_rel *
 * max|w| (a scale-aware absolute floor, for elements that cancel to near
 * zero; NaN only matches NaN); prints the worst element and returns 0 when
 * one is off. set_threads / max_threads: the OpenMP thread count
 * (1 without OpenMP). */
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline double *to_d(const float *x, size_t n) {
    double *y = malloc((n ? n : 1) * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = (double)x[i];
    return y;
}

static inline double *zeros_d(size_t n) { return calloc(n ? n : 1, sizeof(double)); }

static inline int close_arr(const char *what, const float *got, const double *want, size_t n, double rtol,
                            double atol_rel) {
    double wmax = 0.0;
    for (size_t i = 0; i < n; i++) wmax = fmax(wmax, fabs(want[i]));
    double atol = atol_rel * wmax + 1e-30;
    size_t worst = 0;
    double worst_ratio = -1.0;
    for (size_t i = 0; i < n; i++) {
        double ratio = fabs((double)got[i] - want[i]) / (atol + rtol * fabs(want[i]));
        if (isnan(got[i]) != isnan(want[i])) ratio = INFINITY;
        if (isnan(got[i]) && isnan(want[i])) ratio = 0.0;
        if (ratio > worst_ratio) {
            worst_ratio = ratio;
            worst = i;
        }
    }
    if (worst_ratio > 1.0) {
        fprintf(stderr, "    %s: element %zu of %zu: got %.9g, want %.9g (max |want| %.3g)\n", what, worst, n,
                n ? (double)got[worst] : 0.0, n ? want[worst] : 0.0, wmax);
        return 0;
    }
    return 1;
}

static inline void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static inline int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#endif
