/*
 * tests/c/test_layernorm.c: the kernels of LayerNorm,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/layernorm.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/layernorm.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate;
 *   - the bf16 variants (precision = 'bf16', test_bf16_*): bit for bit the f32
 *     kernels then rounded where kernels.h says so, and within bf16 of the
 *     f64 oracle.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/layernorm.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_layernorm && build/tests/test_layernorm
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { LN_M = 3, LN_C = 7 };
#define LN_EPS 1e-5
typedef struct {
    double inp[LN_M * LN_C], w[LN_C], b[LN_C], R[LN_M * LN_C];
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    double out[LN_M * LN_C], mean[LN_M], rstd[LN_M];
    lunar_ref_layernorm_forward_f64(out, mean, rstd, c->inp, c->w, c->b, LN_M, LN_C, LN_EPS);
    return dot(out, c->R, LN_M * LN_C);
}

static void test_ref_layernorm_backward(void) {
    ln_ctx c;
    fill(c.inp, LN_M * LN_C, -2, 2);
    fill(c.w, LN_C, 0.5, 1.5);
    fill(c.b, LN_C, -1, 1);
    fill(c.R, LN_M * LN_C, -1, 1);
    double out[LN_M * LN_C], mean[LN_M], rstd[LN_M];
    lunar_ref_layernorm_forward_f64(out, mean, rstd, c.inp, c.w, c.b, LN_M, LN_C, LN_EPS);
    double dinp[LN_M * LN_C], dw[LN_C], db[LN_C];
    set(dinp, LN_M * LN_C, GARBAGE);
    set(dw, LN_C, 0);
    set(db, LN_C, 0);
    lunar_ref_layernorm_backward_f64(dinp, dw, db, c.R, c.inp, c.w, mean, rstd, LN_M, LN_C);
    CHECK_FD(ln_loss, &c, c.inp, LN_M * LN_C, dinp);
    CHECK_FD(ln_loss, &c, c.w, LN_C, dw);
    CHECK_FD(ln_loss, &c, c.b, LN_C, db);

    double dinp2[LN_M * LN_C], dw2[LN_C], db2[LN_C];
    memcpy(dw2, dw, sizeof dw);
    memcpy(db2, db, sizeof db);
    set(dinp2, LN_M * LN_C, -GARBAGE);
    lunar_ref_layernorm_backward_f64(dinp2, dw2, db2, c.R, c.inp, c.w, mean, rstd, LN_M, LN_C);
    CHECK_DOUBLED(dw2, dw, LN_C);
    CHECK_DOUBLED(db2, db, LN_C);
    CHECK_SAME(dinp2, dinp, LN_M * LN_C);
}

/* with weight 1 and bias 0 each row comes out with mean 0 and variance
 * var / (var + eps), ~1; mean and rstd are the saved statistics */
static void test_ref_layernorm_forward_stats(void) {
    enum { M = 4, C = 9 };
    double inp[M * C], w[C], b[C], out[M * C], mean[M], rstd[M];
    fill(inp, M * C, -3, 5);
    set(w, C, 1);
    set(b, C, 0);
    double eps = 1e-10;
    lunar_ref_layernorm_forward_f64(out, mean, rstd, inp, w, b, M, C, eps);
    for (int m = 0; m < M; m++) {
        double mu = 0, var = 0, in_mu = 0, in_var = 0;
        for (int c = 0; c < C; c++) in_mu += inp[m * C + c] / C;
        for (int c = 0; c < C; c++) in_var += (inp[m * C + c] - in_mu) * (inp[m * C + c] - in_mu) / C;
        for (int c = 0; c < C; c++) mu += out[m * C + c] / C;
        for (int c = 0; c < C; c++) var += (out[m * C + c] - mu) * (out[m * C + c] - mu) / C;
        CHECK_CLOSE(mu, 0.0, 0, 1e-12);
        CHECK_CLOSE(var, 1.0, 1e-8, 0);
        CHECK_CLOSE(mean[m], in_mu, 1e-12, 1e-12);
        CHECK_CLOSE(rstd[m], 1.0 / sqrt(in_var + eps), 1e-12, 0);
    }
}

static void test_ref_f32_layernorm(void) {
    enum { M = 6, C = 32 };
    double inp[M * C], w[C], b[C], dout[M * C], out[M * C], mean[M], rstd[M], dinp[M * C], dw[C], db[C];
    float inpf[M * C], wf[C], bf[C], doutf[M * C], outf[M * C], meanf[M], rstdf[M], dinpf[M * C],
        dwf[C], dbf[C];
    fill(inp, M * C, -2, 3);
    fill(w, C, 0.5, 1.5);
    fill(b, C, -1, 1);
    fill(dout, M * C, -1, 1);
    set(dw, C, 0);
    set(db, C, 0);
    to_f32(inpf, inp, M * C);
    to_f32(wf, w, C);
    to_f32(bf, b, C);
    to_f32(doutf, dout, M * C);
    to_f32(dwf, dw, C);
    to_f32(dbf, db, C);
    lunar_ref_layernorm_forward_f64(out, mean, rstd, inp, w, b, M, C, 1e-5);
    lunar_ref_layernorm_forward_f32(outf, meanf, rstdf, inpf, wf, bf, M, C, 1e-5f);
    CHECK_F32(outf, out, M * C);
    CHECK_F32(meanf, mean, M);
    CHECK_F32(rstdf, rstd, M);
    lunar_ref_layernorm_backward_f64(dinp, dw, db, dout, inp, w, mean, rstd, M, C);
    lunar_ref_layernorm_backward_f32(dinpf, dwf, dbf, doutf, inpf, wf, meanf, rstdf, M, C);
    CHECK_F32(dinpf, dinp, M * C);
    CHECK_F32(dwf, dw, C);
    CHECK_F32(dbf, db, C);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_layernorm(void) {
    const int sizes[][2] = {{1, 1}, {1, 7}, {5, 192}, {33, 37}, {300, 100}, {17, 1}, {129, 16}, {6400 / 16, 192}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int M = sizes[s][0], C = sizes[s][1];
        for (int shifted = 0; shifted < 2; shifted++) {
            size_t n = (size_t)M * C;
            /* shifted: a large common mean, to test the variance's cancellation */
            float *x = shifted ? rand_f(n, 99, 101) : rand_f(n, -2, 2);
            float *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1);
            float *out = rand_f(n, -9, 9), *mean = rand_f(M, -9, 9), *rstd = rand_f(M, -9, 9);
            double *xd = to_d(x, n), *wd = to_d(w, C), *bd = to_d(b, C);
            double *out_ref = zeros_d(n), *mean_ref = zeros_d(M), *rstd_ref = zeros_d(M);
            lunar_cpu_layernorm_forward(out, mean, rstd, x, w, b, M, C, 1e-5f);
            lunar_ref_layernorm_forward_f64(out_ref, mean_ref, rstd_ref, xd, wd, bd, M, C, 1e-5);
            for (int m = 0; m < M; m++) CHECK_CLOSE(mean[m], mean_ref[m], 1e-6, shifted ? 2e-5 : 1e-6);
            CHECK(close_arr("layernorm rstd", rstd, rstd_ref, M, shifted ? 1e-3 : 1e-5, 0));
            CHECK(close_arr("layernorm out", out, out_ref, n, shifted ? 1e-3 : 1e-5, shifted ? 1e-3 : 1e-5));
            /* backward from the f32 saved statistics (both sides) */
            double *meand = to_d(mean, M), *rstdd = to_d(rstd, M);
            float *g = rand_f(n, -1, 1), *dx = rand_f(n, -9, 9);
            float *gw = rand_f(C, -1, 1), *gb = rand_f(C, -1, 1);
            double *gd = to_d(g, n), *dx_ref = zeros_d(n), *gw_ref = to_d(gw, C), *gb_ref = to_d(gb, C);
            lunar_cpu_layernorm_backward(dx, gw, gb, g, x, w, mean, rstd, M, C);
            lunar_ref_layernorm_backward_f64(dx_ref, gw_ref, gb_ref, gd, xd, wd, meand, rstdd, M, C);
            double tol = shifted ? 1e-3 : 1e-4;
            CHECK(close_arr("layernorm dinp", dx, dx_ref, n, tol, tol / 10));
            CHECK(close_arr("layernorm dweight", gw, gw_ref, C, tol, tol / 10));
            CHECK(close_arr("layernorm dbias", gb, gb_ref, C, 1e-5, 1e-6));
            free(x); free(w); free(b); free(out); free(mean); free(rstd); free(xd); free(wd); free(bd);
            free(out_ref); free(mean_ref); free(rstd_ref); free(meand); free(rstdd); free(g); free(dx);
            free(gw); free(gb); free(gd); free(dx_ref); free(gw_ref); free(gb_ref);
        }
    }
}

/* ---- bf16 (precision = 'bf16'): against the f32 kernels and the reference -------- */

static void test_bf16_layernorm(void) {
    const int sizes[][2] = {{1, 1}, {5, 7}, {13, 192}, {70, 333}};
    for (int s = 0; s < 4; s++) {
        int M = sizes[s][0], C = sizes[s][1];
        size_t n = (size_t)M * C;
        float *x = rand_f(n, -3, 5), *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1);
        float *y = malloc(n * 4), *mean = malloc(M * 4), *rstd = malloc(M * 4), *mean2 = malloc(M * 4),
              *rstd2 = malloc(M * 4);
        uint16_t *yh = malloc(n * 2);
        lunar_cpu_layernorm_forward(y, mean, rstd, x, w, b, M, C, 1e-6f);
        lunar_cpu_layernorm_forward_bf16(yh, mean2, rstd2, x, w, b, M, C, 1e-6f);
        uint16_t *want = to_bf16(y, n);
        CHECK(memcmp(yh, want, n * 2) == 0);
        CHECK(memcmp(mean, mean2, M * 4) == 0 && memcmp(rstd, rstd2, M * 4) == 0);
        /* and the oracle: within one bf16 rounding (2^-8 relative) of the f64 values */
        double *xd = to_d(x, n), *wd = to_d(w, C), *bd = to_d(b, C), *md = zeros_d(M), *rd = zeros_d(M);
        uint16_t *refd = malloc(n * 2);
        lunar_ref_layernorm_forward_bf16_f64(refd, md, rd, xd, wd, bd, M, C, 1e-6);
        for (size_t i = 0; i < n; i++) {
            double a = lunar_bf16_to_f32(yh[i]), r = lunar_bf16_to_f32(refd[i]);
            CHECK_MSG(fabs(a - r) <= fabs(r) * (1.0 / 128) + 1e-6, "layernorm bf16 element %zu: %g vs %g", i, a, r);
        }
        free(x); free(w); free(b); free(y); free(mean); free(rstd); free(mean2); free(rstd2); free(yh);
        free(want); free(xd); free(wd); free(bd); free(md); free(rd); free(refd);
    }
}

int main(void) {
    RUN(test_ref_layernorm_backward);
    RUN(test_ref_layernorm_forward_stats);
    RUN(test_ref_f32_layernorm);
    RUN(test_cpu_layernorm);
    RUN(test_bf16_layernorm);
    return TEST_SUMMARY();
}
