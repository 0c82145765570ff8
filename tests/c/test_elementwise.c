/*
 * tests/c/test_elementwise.c: the kernels of the elementwise helpers (add, scale, the bf16 cast) and the sum of squares,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/elementwise.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/elementwise.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate;
 *   - the bf16 variants (precision = 'bf16', test_bf16_*): bit for bit the f32
 *     kernels then rounded where kernels.h says so, and within bf16 of the
 *     f64 oracle.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/elementwise.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_elementwise && build/tests/test_elementwise
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

static void test_ref_sum_squares(void) {
    double x[4] = {1, 2, 3, -4};
    float xf[4] = {1, 2, 3, -4};
    CHECK(lunar_ref_sum_squares_f64(x, 4) == 30.0);
    CHECK(lunar_ref_sum_squares_f32(xf, 4) == 30.0);
    CHECK(lunar_ref_sum_squares_f64(x, 0) == 0.0);
}

static void test_ref_add_scale(void) {
    double a[3] = {1, 2, 3}, b[3] = {0.5, -2, 10}, out[3];
    lunar_ref_add_f64(out, a, b, 3);
    CHECK(out[0] == 1.5 && out[1] == 0 && out[2] == 13);
    lunar_ref_scale_f64(out, 3, -2.0);
    CHECK(out[0] == -3 && out[1] == 0 && out[2] == -26);
}

static void test_ref_f32_elementwise(void) {
    enum { N = 50 };
    double a[N], b[N], out[N];
    float af[N], bf[N], outf[N];
    fill(a, N, -1, 1);
    fill(b, N, -1, 1);
    to_f32(af, a, N);
    to_f32(bf, b, N);
    lunar_ref_add_f64(out, a, b, N);
    lunar_ref_add_f32(outf, af, bf, N);
    CHECK_F32(outf, out, N);
    lunar_ref_scale_f64(out, N, 0.375);
    lunar_ref_scale_f32(outf, N, 0.375f);
    CHECK_F32(outf, out, N);
    /* the f32 inputs are the f64 ones exactly, and both sum in double */
    CHECK(lunar_ref_sum_squares_f32(af, N) == lunar_ref_sum_squares_f64(a, N));
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_elementwise(void) {
    const size_t sizes[] = {1, 17, 100003};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *a = rand_f(n, -1, 1), *b = rand_f(n, -1, 1), *o = rand_f(n, -9, 9);
        double *ad = to_d(a, n), *bd = to_d(b, n), *o_ref = zeros_d(n);
        lunar_cpu_add(o, a, b, n);
        lunar_ref_add_f64(o_ref, ad, bd, n);
        CHECK(close_arr("add", o, o_ref, n, 1e-7, 0));
        lunar_cpu_add(a, a, b, n); /* in place */
        CHECK(same_bits(a, o, n * sizeof *a));
        lunar_cpu_scale(o, n, 0.3f);
        lunar_ref_scale_f64(o_ref, n, (double)0.3f);
        CHECK(close_arr("scale", o, o_ref, n, 1e-6, 0));
        free(a); free(b); free(o); free(ad); free(bd); free(o_ref);
    }
}

static void test_cpu_sum_squares(void) {
    const size_t sizes[] = {0, 1, 15, 16, 1000, 100003, 3000017};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, -3, 3);
        double *xd = to_d(x, n);
        CHECK_CLOSE(lunar_cpu_sum_squares(x, n), lunar_ref_sum_squares_f64(xd, n), 1e-12, 1e-300);
        free(x); free(xd);
    }
}

/* ---- bf16 (precision = 'bf16'): against the f32 kernels and the reference -------- */

static void test_bf16_cast(void) {
    const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, NAN, 3.0e38f, -3.4e38f,
                             1.0e-38f, 1.2e-40f, /* denormal */ 1.00390625f /* 1 + 2^-8: a tie, to even */,
                             1.01171875f /* 1 + 3 * 2^-8: a tie, up */, 65504.0f, 1e-3f};
    const size_t ns = sizeof special / sizeof special[0];
    const size_t sizes[] = {1, 15, 31, 33, 100003};
    for (size_t s = 0; s < 5; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, -100, 100);
        for (size_t i = 0; i < n && i < ns; i++) x[i] = special[i];
        uint16_t *got = malloc(n * sizeof *got), *ref = malloc(n * sizeof *ref), *want = to_bf16(x, n);
        lunar_cpu_cast_bf16(got, x, n);
        lunar_ref_cast_bf16_f32(ref, x, n);
        for (size_t i = 0; i < n; i++) {
            CHECK_MSG(got[i] == want[i], "cast of %.9g (element %zu of %zu): got 0x%04x, want 0x%04x",
                      (double)x[i], i, n, got[i], want[i]);
            CHECK_MSG(ref[i] == want[i], "reference cast of %.9g: got 0x%04x, want 0x%04x", (double)x[i], ref[i],
                      want[i]);
        }
        free(x); free(got); free(ref); free(want);
    }
    CHECK(lunar_f32_to_bf16(1.00390625f) == 0x3f80);   /* ties to even */
    CHECK(lunar_f32_to_bf16(1.01171875f) == 0x3f82);
}

int main(void) {
    RUN(test_ref_sum_squares);
    RUN(test_ref_add_scale);
    RUN(test_ref_f32_elementwise);
    RUN(test_cpu_elementwise);
    RUN(test_cpu_sum_squares);
    RUN(test_bf16_cast);
    return TEST_SUMMARY();
}
