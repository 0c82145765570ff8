/*
 * tests/c/test_rmsnorm.c: the RMSNorm kernels (kernels.h rmsnorm_*), on every backend
 * that runs here:
 *   - the reference, core/ops/ref/rmsnorm.c: dinp and dweight against central finite
 *     differences of the f64 forward, a row computed by hand, f32 against f64;
 *   - the CPU kernels, core/ops/cpu/rmsnorm.c: against the f64 reference on odd shapes,
 *     dweight accumulated (+=), a repeated call bit for bit (the CPU kernel sums
 *     dweight by column over the rows in order, so no thread count changes a bit).
 * The CUDA kernels (core/ops/cuda/rmsnorm.cu) do the CPU's arithmetic.
 *
 *   make build/tests/test_rmsnorm && build/tests/test_rmsnorm
 */
#include "kernel_test.h"

enum { RM = 3, RC = 5 };
typedef struct { double inp[RM * RC], weight[RC], R[RM * RC]; } rms_ctx;

static double rms_loss(void *p) {
    rms_ctx *c = p;
    double out[RM * RC], rstd[RM];
    lunar_ref_rmsnorm_forward_f64(out, rstd, c->inp, c->weight, RM, RC, 1e-6);
    return dot(out, c->R, RM * RC);
}

static void test_ref_rmsnorm_backward(void) {
    rms_ctx c;
    fill(c.inp, RM * RC, -2, 2);
    fill(c.weight, RC, 0.5, 1.5);
    fill(c.R, RM * RC, -1, 1);
    double out[RM * RC], rstd[RM], dinp[RM * RC], dweight[RC];
    lunar_ref_rmsnorm_forward_f64(out, rstd, c.inp, c.weight, RM, RC, 1e-6);
    set(dinp, RM * RC, GARBAGE);
    set(dweight, RC, 0.0);
    lunar_ref_rmsnorm_backward_f64(dinp, dweight, c.R, c.inp, c.weight, rstd, RM, RC);
    CHECK_FD(rms_loss, &c, c.inp, RM * RC, dinp);
    CHECK_FD(rms_loss, &c, c.weight, RC, dweight);
}

/* The row (3, 4) with weight (1, 2), eps 0: mean of squares 12.5, rstd 1/sqrt(12.5) =
 * 0.28284271247461901, out = (3 r, 8 r) = (0.848528137423857, 2.262741699796952). */
static void test_ref_rmsnorm_values(void) {
    double x[2] = {3, 4}, w[2] = {1, 2}, y[2], r[1];
    lunar_ref_rmsnorm_forward_f64(y, r, x, w, 1, 2, 0.0);
    CHECK_CLOSE(r[0], 0.28284271247461901, 1e-15, 0);
    CHECK_CLOSE(y[0], 0.848528137423857, 1e-14, 0);
    CHECK_CLOSE(y[1], 2.262741699796952, 1e-14, 0);
}

static void test_ref_f32_rmsnorm(void) {
    enum { M = 4, C = 37 };
    double inp[M * C], w[C], dout[M * C], out[M * C], rstd[M], dinp[M * C], dw[C];
    float inpf[M * C], wf[C], doutf[M * C], outf[M * C], rstdf[M], dinpf[M * C], dwf[C];
    fill(inp, M * C, -3, 3); fill(w, C, -1, 1); fill(dout, M * C, -1, 1);
    to_f32(inpf, inp, M * C); to_f32(wf, w, C); to_f32(doutf, dout, M * C);
    for (int i = 0; i < M * C; i++) { inp[i] = inpf[i]; dout[i] = doutf[i]; }
    for (int i = 0; i < C; i++) w[i] = wf[i];
    lunar_ref_rmsnorm_forward_f64(out, rstd, inp, w, M, C, 1e-6);
    lunar_ref_rmsnorm_forward_f32(outf, rstdf, inpf, wf, M, C, 1e-6f);
    CHECK_F32(outf, out, M * C);
    set(dw, C, 0.0);
    for (int i = 0; i < C; i++) dwf[i] = 0.0f;
    lunar_ref_rmsnorm_backward_f64(dinp, dw, dout, inp, w, rstd, M, C);
    lunar_ref_rmsnorm_backward_f32(dinpf, dwf, doutf, inpf, wf, rstdf, M, C);
    CHECK_F32(dinpf, dinp, M * C);
    CHECK_F32(dwf, dw, C);
}

static void test_cpu_rmsnorm(void) {
    const int shapes[][2] = {{1, 1}, {3, 7}, {17, 64}, {129, 192}};
    for (int s = 0; s < 4; s++) {
        int M = shapes[s][0], C = shapes[s][1];
        size_t n = (size_t)M * C;
        float *x = rand_f(n, -3, 3), *w = rand_f((size_t)C, -1, 1), *dy = rand_f(n, -1, 1);
        float *y = zeros_f(n), *r = zeros_f((size_t)M), *dx = zeros_f(n), *dw = rand_f((size_t)C, -1, 1);
        float *dw0 = copy_f(dw, (size_t)C);
        double *xd = to_d(x, n), *wd = to_d(w, (size_t)C), *dyd = to_d(dy, n), *yd = zeros_d(n), *rd = zeros_d((size_t)M);
        double *dxd = zeros_d(n), *dwd = to_d(dw, (size_t)C);
        lunar_cpu_rmsnorm_forward(y, r, x, w, M, C, 1e-6f);
        lunar_ref_rmsnorm_forward_f64(yd, rd, xd, wd, M, C, 1e-6);
        CHECK(rel_err_f32(y, yd, n) < 1e-5);
        CHECK(rel_err_f32(r, rd, (size_t)M) < 1e-6);
        lunar_cpu_rmsnorm_backward(dx, dw, dy, x, w, r, M, C);
        lunar_ref_rmsnorm_backward_f64(dxd, dwd, dyd, xd, wd, rd, M, C);   /* dwd starts at dw's old values */
        CHECK(rel_err_f32(dx, dxd, n) < 1e-5);
        CHECK(rel_err_f32(dw, dwd, (size_t)C) < 1e-5);
        /* a second run gives the same bits (fixed summation order) */
        float *dx2 = zeros_f(n), *dw2 = copy_f(dw0, (size_t)C);
        lunar_cpu_rmsnorm_backward(dx2, dw2, dy, x, w, r, M, C);
        CHECK(same_bits(dx, dx2, n * sizeof *dx) && same_bits(dw, dw2, (size_t)C * sizeof *dw));
        free(x); free(w); free(dy); free(y); free(r); free(dx); free(dw); free(dw0); free(xd); free(wd); free(dyd);
        free(yd); free(rd); free(dxd); free(dwd); free(dx2); free(dw2);
    }
}

int main(void) {
    RUN(test_ref_rmsnorm_backward);
    RUN(test_ref_rmsnorm_values);
    RUN(test_ref_f32_rmsnorm);
    RUN(test_cpu_rmsnorm);
    return TEST_SUMMARY();
}
