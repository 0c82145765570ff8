/*
 * tests/c/test_gelu.c: the kernels of exact GELU,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/gelu.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/gelu.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate;
 *   - the bf16 variants (precision = 'bf16', test_bf16_*): bit for bit the f32
 *     kernels then rounded where kernels.h says so, and within bf16 of the
 *     f64 oracle.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/gelu.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_gelu && build/tests/test_gelu
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { GELU_N = 16 };
typedef struct { double inp[GELU_N], R[GELU_N]; } gelu_ctx;

static double gelu_loss(void *p) {
    gelu_ctx *c = p;
    double out[GELU_N];
    lunar_ref_gelu_forward_f64(out, c->inp, GELU_N);
    return dot(out, c->R, GELU_N);
}

static void test_ref_gelu_backward(void) {
    gelu_ctx c;
    fill(c.inp, GELU_N, -3, 3);
    fill(c.R, GELU_N, -1, 1);
    double dinp[GELU_N];
    set(dinp, GELU_N, GARBAGE);
    lunar_ref_gelu_backward_f64(dinp, c.R, c.inp, GELU_N);
    CHECK_FD(gelu_loss, &c, c.inp, GELU_N, dinp);
}

/* x Phi(x) at known points: Phi(1) = 0.841344746068543 */
static void test_ref_gelu_forward_values(void) {
    double x[4] = {0, 1, -1, 10}, y[4];
    lunar_ref_gelu_forward_f64(y, x, 4);
    CHECK(y[0] == 0);
    CHECK_CLOSE(y[1], 0.8413447460685429, 1e-15, 0);
    CHECK_CLOSE(y[2], -0.15865525393145707, 1e-14, 0);
    CHECK_CLOSE(y[3], 10.0, 1e-15, 0);
}

static void test_ref_f32_gelu(void) {
    enum { N = 64 };
    double inp[N], dout[N], out[N], dinp[N];
    float inpf[N], doutf[N], outf[N], dinpf[N];
    fill(inp, N, -5, 5);
    fill(dout, N, -1, 1);
    to_f32(inpf, inp, N);
    to_f32(doutf, dout, N);
    lunar_ref_gelu_forward_f64(out, inp, N);
    lunar_ref_gelu_forward_f32(outf, inpf, N);
    CHECK_F32(outf, out, N);
    lunar_ref_gelu_backward_f64(dinp, dout, inp, N);
    lunar_ref_gelu_backward_f32(dinpf, doutf, inpf, N);
    CHECK_F32(dinpf, dinp, N);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

/* The CPU's GELU against the f64 reference, element by element:
 * |got - want| <= (2e-6 + [x < 0] x^2 2^-22) |want| + 1e-7 max|want|. The x^2
 * term, in the left tail only: there Phi(x) and phi(x) are exp(-x^2/2 + P)
 * with the argument rounded to float, a relative error of a few 2^-24 x^2/2 in
 * the result (4e-6 at x = -8.1, where gelu(x) = -3e-15), which the max|want|
 * floor hides unless the tail element is alone (n = 1). For x >= 0, Phi(x) is
 * 1 minus that small term and keeps 2e-6. Prints the worst element and returns 0 when one is off. */
static int close_gelu(const char *what, const float *got, const double *want, const float *x, size_t n) {
    double wmax = 0.0;
    for (size_t i = 0; i < n; i++) wmax = fmax(wmax, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double xi = (double)x[i], tol = (2e-6 + (xi < 0 ? xi * xi * 0x1p-22 : 0.0)) * fabs(want[i]) + 1e-7 * wmax;
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            fprintf(stderr, "    %s: element %zu of %zu (x = %.9g): got %.9g, want %.9g\n", what, i, n, xi,
                    (double)got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

static void test_cpu_gelu(void) {
    const size_t sizes[] = {1, 15, 16, 17, 1000, 70001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, -9, 9);
        if (n >= 16) {
            const float special[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 1.0f, -1.0f, 5.0f, -5.0f, 10.0f, -10.0f, 20.0f, -30.0f};
            memcpy(x, special, sizeof special);
        }
        float *y = rand_f(n, -9, 9), *g = rand_f(n, -1, 1), *dx = rand_f(n, -9, 9);
        double *xd = to_d(x, n), *gd = to_d(g, n), *y_ref = zeros_d(n), *dx_ref = zeros_d(n);
        lunar_cpu_gelu_forward(y, x, n);
        lunar_ref_gelu_forward_f64(y_ref, xd, n);
        CHECK(close_gelu("gelu out", y, y_ref, x, n));
        lunar_cpu_gelu_backward(dx, g, x, n);
        lunar_ref_gelu_backward_f64(dx_ref, gd, xd, n);
        CHECK(close_gelu("gelu dinp", dx, dx_ref, x, n));
        /* in place */
        float *z = copy_f(x, n);
        lunar_cpu_gelu_forward(z, z, n);
        CHECK(same_bits(z, y, n * sizeof *z));
        free(x); free(y); free(g); free(dx); free(xd); free(gd); free(y_ref); free(dx_ref); free(z);
    }
}

/* ---- bf16 (precision = 'bf16'): against the f32 kernels and the reference -------- */

static void test_bf16_gelu(void) {
    const size_t sizes[] = {1, 35, 13 * 192, 70 * 333};
    for (int s = 0; s < 4; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, -3, 5), *y = malloc(n * 4);
        uint16_t *yh = malloc(n * 2);
        lunar_cpu_gelu_forward(y, x, n);
        lunar_cpu_gelu_forward_bf16(yh, x, 0, n);
        uint16_t *want = to_bf16(y, n);
        CHECK(memcmp(yh, want, n * 2) == 0);
        /* GELU of a bf16 input (the bf16 fc1 output): the f32 kernels on the widened values */
        uint16_t *xh = to_bf16(x, n);
        float *xw = malloc(n * 4), *dy = rand_f(n, -1, 1), *dx = malloc(n * 4), *dx2 = malloc(n * 4);
        for (size_t i = 0; i < n; i++) xw[i] = lunar_bf16_to_f32(xh[i]);
        lunar_cpu_gelu_forward(y, xw, n);
        lunar_cpu_gelu_forward_bf16(yh, xh, 1, n);
        free(want);
        want = to_bf16(y, n);
        CHECK(memcmp(yh, want, n * 2) == 0);
        lunar_cpu_gelu_backward(dx, dy, xw, n);
        lunar_cpu_gelu_backward_bf16(dx2, 0, dy, xh, n);
        CHECK(memcmp(dx, dx2, n * 4) == 0);
        double *xwd = to_d(xw, n), *dyd = to_d(dy, n), *dxd = zeros_d(n);
        lunar_ref_gelu_backward_bf16_f64(dxd, 0, dyd, xh, n);
        CHECK(close_arr("gelu_backward_bf16 vs oracle", dx2, dxd, n, 1e-5, 1e-6));
        /* a bf16 dinp (fc1's backward GEMM operand): the f32 one rounded once */
        uint16_t *dxh = malloc(n * 2), *dx_want = to_bf16(dx2, n);
        lunar_cpu_gelu_backward_bf16(dxh, 1, dy, xh, n);
        CHECK(memcmp(dxh, dx_want, n * 2) == 0);
        free(dxh); free(dx_want);
        free(xh); free(xw); free(dy); free(dx); free(dx2); free(xwd); free(dyd); free(dxd);
        free(x); free(y); free(yh); free(want);
    }
}

/* every bf16 value as the input (the fast kernels read tables for a bf16
 * input): bit for bit the f32 kernels on the widened values, then rounded;
 * a NaN input gives a NaN (its sign and payload follow the compiler's operand
 * order of a commutative multiply, so only NaN-ness is compared there) */
static void test_bf16_gelu_every_value(void) {
    const size_t n = 65536;
    uint16_t *xh = malloc(n * 2), *yh = malloc(n * 2);
    float *xw = malloc(n * 4), *y = malloc(n * 4), *dy = rand_f(n, -1, 1), *dx = malloc(n * 4), *dx2 = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        xh[i] = (uint16_t)i;
        xw[i] = lunar_bf16_to_f32(xh[i]);
    }
    lunar_cpu_gelu_forward(y, xw, n);
    lunar_cpu_gelu_forward_bf16(yh, xh, 1, n);
    uint16_t *want = to_bf16(y, n);
    lunar_cpu_gelu_backward(dx, dy, xw, n);
    lunar_cpu_gelu_backward_bf16(dx2, 0, dy, xh, n);
    size_t bad = 0, nans = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(xw[i])) {
            nans++;
            bad += !isnan(lunar_bf16_to_f32(yh[i])) || !isnan(dx2[i]);
        } else {
            bad += yh[i] != want[i] || !same_bits(dx + i, dx2 + i, 4);
        }
    }
    CHECK(nans == 2 * 127 && bad == 0);
    free(xh); free(yh); free(xw); free(y); free(dy); free(dx); free(dx2); free(want);
}

int main(void) {
    RUN(test_ref_gelu_backward);
    RUN(test_ref_gelu_forward_values);
    RUN(test_ref_f32_gelu);
    RUN(test_cpu_gelu);
    RUN(test_bf16_gelu);
    RUN(test_bf16_gelu_every_value);
    return TEST_SUMMARY();
}
