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

#endif
