/*
 * tests/c/test.h: a minimal C test harness. Each test binary defines test
 * functions, registers them in main with RUN(fn), and ends with
 * TEST_SUMMARY(), which prints "N passed, N failed" and returns the exit code.
 * A test that cannot run here (no CUDA device) is registered with
 * SKIP(fn, reason) instead: it counts as skipped, never as passed, and the
 * summary becomes "N passed, N failed, N skipped" (tests/run_all.sh reads it).
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
        if (test_current_failed_) test_failed_++;                                   \
        else { test_passed_++; printf("  ok %s\n", #fn); }                          \
    } while (0)

#define SKIP(fn, reason)                                                            \
    do {                                                                            \
        test_skipped_++;                                                            \
        printf("  skip %s: %s\n", #fn, (reason));                                   \
    } while (0)

#define TEST_SUMMARY()                                                              \
    ((test_skipped_ ? printf("%d passed, %d failed, %d skipped\n", test_passed_,    \
                             test_failed_, test_skipped_)                           \
                    : printf("%d passed, %d failed\n", test_passed_, test_failed_)), \
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

#endif
