/*
 * tests/c/test_bf16.c: the bf16 kernels of precision = 'bf16' (kernels.h
 * linear_*_bf16, layernorm_forward_bf16, gelu_*_bf16, attention_*_bf16,
 * cast_bf16, adamw_step_bf16, sgd_step_bf16) on the CPU (core/ops/cpu) against the
 * reference (core/ops/ref, double sums of exact bf16 products):
 *   - the bf16 GEMMs against the bf16 oracle at an f32-summation tolerance (the
 *     operands are rounded the same way, so only the order of the f32 sums
 *     differs), and against the f64 GEMM of the unrounded f32 operands at a
 *     bf16 tolerance (what precision = 'bf16' costs), on sizes that take every
 *     block and tail path of the packing (K odd and past KC = 256, M past
 *     MC = 128, N past NC = 1024, K past a group of packed B), with f32 and
 *     bf16 activations and gradients (dout); a bf16 output is bit for bit
 *     the f32 one rounded, and within one bf16 rounding of the oracle's;
 *   - overwrite (dinp) and accumulate (dweight, dbias) semantics;
 *   - the bf16 outputs of LayerNorm and GELU, the cast and the optimizer steps
 *     with a working copy are bit for bit the f32 kernel then lunar_f32_to_bf16;
 *     GELU forward and backward from a bf16 input, and attention forward and
 *     backward on bf16 operands, bit for bit the f32 kernels on the widened
 *     values (then rounded), and within one bf16 rounding of the f64 oracle;
 *   - the GEMMs give the same bits on 1 and 2 threads.
 * On a CPU without avx512_bf16 (lunar_cpu_bf16_native() == 0) the kernels run
 * their portable path and the same checks apply.
 *
 *   make build/tests/test_bf16 && build/tests/test_bf16
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "lunar/kernels.h"
#include "lunar/tensor.h"
#define TEST_RNG_SEED 0x2545F4914F6CDD1Dull
#include "test.h"

/* ---- helpers -------------------------------------------------------------------- */

static uint16_t *to_bf16(const float *x, size_t n) {
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

/* ---- cast --------------------------------------------------------------------------- */

static void test_cast(void) {
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

/* ---- linear --------------------------------------------------------------------------- */

/* sizes: 1s, odd, K odd past KC = 256, M past MC = 128, N past NC = 1024, and
 * K past one group of packed B (8 KC blocks when N > NC: 4 MiB) */
static const int SIZES[][3] = {{1, 1, 1}, {7, 13, 5}, {37, 19, 33}, {9, 301, 17}, {130, 33, 17},
                               {3, 200, 1}, {129, 64, 1031}, {200, 515, 70}, {3, 2600, 1030}};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])

static void test_linear_forward(void) {
    for (size_t s = 0; s < NSIZES; s++) {
        int M = SIZES[s][0], K = SIZES[s][1], N = SIZES[s][2];
        size_t nin = (size_t)M * K, nw = (size_t)N * K, nout = (size_t)M * N;
        for (int mode = 0; mode < 4; mode++) {
            int with_bias = mode & 1, inp16 = (mode & 2) != 0;
            float *inp = rand_f(nin, -1, 1), *w = rand_f(nw, -1, 1), *b = rand_f(N, -1, 1);
            uint16_t *inph = to_bf16(inp, nin), *wh = to_bf16(w, nw);
            const void *x = inp16 ? (const void *)inph : (const void *)inp;
            float *out = rand_f(nout, -9, 9);   /* garbage: overwritten */
            double *din = to_d(inp, nin), *db = to_d(b, N), *want = zeros_d(nout), *exact = zeros_d(nout);
            lunar_cpu_linear_forward_bf16(out, 0, x, inp16, wh, with_bias ? b : NULL, M, K, N);
            lunar_ref_linear_forward_bf16_f64(want, 0, inp16 ? (const void *)inph : (const void *)din, inp16, wh,
                                              with_bias ? db : NULL, M, K, N);
            /* a bf16 output (precision = 'bf16': qkv, fc1) is the f32 result rounded once, bit for
             * bit (the row blocks of its scratch do not change any element's sum order) */
            uint16_t *outh = malloc(nout * sizeof *outh), *want_h = to_bf16(out, nout);
            lunar_cpu_linear_forward_bf16(outh, 1, x, inp16, wh, with_bias ? b : NULL, M, K, N);
            CHECK_MSG(memcmp(outh, want_h, nout * sizeof *outh) == 0, "linear_forward_bf16 out bf16 M%d K%d N%d", M,
                      K, N);
            uint16_t *ref_h = malloc(nout * sizeof *ref_h);   /* the oracle, rounded from double */
            lunar_ref_linear_forward_bf16_f64(ref_h, 1, inp16 ? (const void *)inph : (const void *)din, inp16, wh,
                                              with_bias ? db : NULL, M, K, N);
            for (size_t i = 0; i < nout; i++) {
                double a = lunar_bf16_to_f32(outh[i]), r = lunar_bf16_to_f32(ref_h[i]);
                CHECK_MSG(fabs(a - r) <= fabs(r) * (1.0 / 128) + ATOL_ORACLE * 10, "out bf16 element %zu: %g vs %g",
                          i, a, r);
                if (fabs(a - r) > fabs(r) * (1.0 / 128) + ATOL_ORACLE * 10) break;
            }
            free(outh); free(want_h); free(ref_h);
            char what[96];
            snprintf(what, sizeof what, "linear_forward_bf16 M%d K%d N%d bias %d bf16 inp %d", M, K, N, with_bias,
                     inp16);
            CHECK(close_arr(what, out, want, nout, RTOL_ORACLE, ATOL_ORACLE));
            /* against the f64 GEMM of the unrounded operands: the cost of bf16 */
            double *dw = to_d(w, nw);
            lunar_ref_linear_forward_f64(exact, din, dw, with_bias ? db : NULL, M, K, N);
            CHECK(close_arr(what, out, exact, nout, 0.0, ATOL_BF16));
            free(inp); free(w); free(b); free(inph); free(wh); free(out); free(din); free(db); free(want);
            free(exact); free(dw);
        }
    }
}

static void test_linear_backward(void) {
    for (size_t s = 0; s < NSIZES; s++) {
        int M = SIZES[s][0], K = SIZES[s][1], N = SIZES[s][2];
        size_t nin = (size_t)M * K, nw = (size_t)N * K, nout = (size_t)M * N;
        for (int mode = 0; mode < 8; mode++) {
            int with_dinp = mode & 1, inp16 = (mode & 2) != 0, dout16 = (mode & 4) != 0;
            float *inp = rand_f(nin, -1, 1), *w = rand_f(nw, -1, 1), *g = rand_f(nout, -1, 1);
            uint16_t *inph = to_bf16(inp, nin), *wh = to_bf16(w, nw), *gh = to_bf16(g, nout);
            if (dout16) for (size_t i = 0; i < nout; i++) g[i] = lunar_bf16_to_f32(gh[i]);   /* the oracle's dout */
            const void *x = inp16 ? (const void *)inph : (const void *)inp;
            const void *dy = dout16 ? (const void *)gh : (const void *)g;
            float *dinp = rand_f(nin, -9, 9);                             /* overwritten */
            float *gw = rand_f(nw, -1, 1), *gb = rand_f(N, -1, 1);        /* accumulated */
            double *din = to_d(inp, nin), *gd = to_d(g, nout), *dinp_ref = zeros_d(nin);
            double *gw_ref = to_d(gw, nw), *gb_ref = to_d(gb, N);
            lunar_cpu_linear_backward_bf16(with_dinp ? dinp : NULL, gw, gb, dy, dout16, x, inp16, wh, M, K, N);
            lunar_ref_linear_backward_bf16_f64(with_dinp ? dinp_ref : NULL, gw_ref, gb_ref, gd, 0,
                                               inp16 ? (const void *)inph : (const void *)din, inp16, wh, M, K, N);
            char what[96];
            snprintf(what, sizeof what, "linear_backward_bf16 M%d K%d N%d bf16 inp %d bf16 dout %d", M, K, N, inp16,
                     dout16);
            if (with_dinp) CHECK(close_arr(what, dinp, dinp_ref, nin, RTOL_ORACLE, ATOL_ORACLE));
            CHECK(close_arr(what, gw, gw_ref, nw, RTOL_ORACLE, ATOL_ORACLE));
            CHECK(close_arr(what, gb, gb_ref, N, 1e-6, 1e-6));
            free(inp); free(w); free(g); free(inph); free(wh); free(gh); free(dinp); free(gw); free(gb); free(din); free(gd);
            free(dinp_ref); free(gw_ref); free(gb_ref);
        }
    }
}

/* the GEMMs: same bits on 1 and 2 threads, run to run */
static void test_linear_threads(void) {
    const int M = 300, K = 517, N = 1100;
    size_t nin = (size_t)M * K, nw = (size_t)N * K, nout = (size_t)M * N;
    float *inp = rand_f(nin, -1, 1), *g = rand_f(nout, -1, 1), *b = rand_f(N, -1, 1);
    float *w = rand_f(nw, -1, 1);
    uint16_t *wh = to_bf16(w, nw);
    float *r[2][3];
    int before = max_threads();
    for (int t = 0; t < 2; t++) {
        set_threads(t + 1);
        r[t][0] = calloc(nout, sizeof(float));
        r[t][1] = calloc(nin, sizeof(float));
        r[t][2] = calloc(nw, sizeof(float));
        lunar_cpu_linear_forward_bf16(r[t][0], 0, inp, 0, wh, b, M, K, N);
        lunar_cpu_linear_backward_bf16(r[t][1], r[t][2], NULL, g, 0, inp, 0, wh, M, K, N);
    }
    set_threads(before);
    CHECK(memcmp(r[0][0], r[1][0], nout * sizeof(float)) == 0);
    CHECK(memcmp(r[0][1], r[1][1], nin * sizeof(float)) == 0);
    CHECK(memcmp(r[0][2], r[1][2], nw * sizeof(float)) == 0);
    for (int t = 0; t < 2; t++) for (int i = 0; i < 3; i++) free(r[t][i]);
    free(inp); free(g); free(b); free(w); free(wh);
}

/* ---- bf16 outputs: the f32 kernel, then rounded ----------------------------------------- */

static void test_layernorm_gelu_bf16(void) {
    const int sizes[][2] = {{1, 1}, {5, 7}, {13, 192}, {70, 333}};
    for (int s = 0; s < 4; s++) {
        int M = sizes[s][0], C = sizes[s][1];
        size_t n = (size_t)M * C;
        float *x = rand_f(n, -3, 5), *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1);
        float *y = malloc(n * 4), *mean = malloc(M * 4), *rstd = malloc(M * 4), *mean2 = malloc(M * 4),
              *rstd2 = malloc(M * 4);
        uint16_t *yh = malloc(n * 2), *ref = malloc(n * 2);
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
        /* GELU */
        lunar_cpu_gelu_forward(y, x, n);
        lunar_cpu_gelu_forward_bf16(yh, x, 0, n);
        free(want);
        want = to_bf16(y, n);
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
        lunar_cpu_gelu_backward_bf16(dx2, dy, xh, n);
        CHECK(memcmp(dx, dx2, n * 4) == 0);
        double *xwd = to_d(xw, n), *dyd = to_d(dy, n), *dxd = zeros_d(n);
        lunar_ref_gelu_backward_bf16_f64(dxd, dyd, xh, n);
        CHECK(close_arr("gelu_backward_bf16 vs oracle", dx2, dxd, n, 1e-5, 1e-6));
        free(xh); free(xw); free(dy); free(dx); free(dx2); free(xwd); free(dyd); free(dxd);
        free(x); free(w); free(b); free(y); free(mean); free(rstd); free(mean2); free(rstd2); free(yh); free(ref);
        free(want); free(xd); free(wd); free(bd); free(md); free(rd); free(refd);
    }
}

/* ---- attention on bf16 operands ---------------------------------------------------------- */

/* the bf16 attention is the f32 kernel on the widened operands, results rounded
 * once (bit for bit), and within bf16 of the f64 oracle on the same operands */
static void test_attention_bf16(void) {
    const int shapes[][4] = {{1, 1, 1, 1}, {2, 7, 3, 8}, {2, 50, 2, 16}, {1, 197, 3, 64}};
    for (int s = 0; s < 4; s++) {
        int B = shapes[s][0], N = shapes[s][1], H = shapes[s][2], D = shapes[s][3];
        size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
        float *q = rand_f(nq, -2, 2), *dout = rand_f(no, -1, 1);
        uint16_t *qh = to_bf16(q, nq), *dh = to_bf16(dout, no);
        for (size_t i = 0; i < nq; i++) q[i] = lunar_bf16_to_f32(qh[i]);
        for (size_t i = 0; i < no; i++) dout[i] = lunar_bf16_to_f32(dh[i]);
        float *o = malloc(no * 4), *lse = malloc(nl * 4), *lse2 = malloc(nl * 4), *dq = malloc(nq * 4);
        uint16_t *oh = malloc(no * 2), *dqh = malloc(nq * 2);
        lunar_cpu_attention_forward(o, lse, q, B, N, H, D);
        lunar_cpu_attention_forward_bf16(oh, lse2, qh, B, N, H, D);
        uint16_t *want = to_bf16(o, no);
        CHECK_MSG(memcmp(oh, want, no * 2) == 0 && memcmp(lse, lse2, nl * 4) == 0, "attention bf16 B%d N%d H%d D%d",
                  B, N, H, D);
        /* backward reads the bf16 out of forward */
        for (size_t i = 0; i < no; i++) o[i] = lunar_bf16_to_f32(oh[i]);
        lunar_cpu_attention_backward(dq, dout, q, o, lse, B, N, H, D);
        lunar_cpu_attention_backward_bf16(dqh, dh, qh, oh, lse2, B, N, H, D);
        free(want);
        want = to_bf16(dq, nq);
        CHECK_MSG(memcmp(dqh, want, nq * 2) == 0, "attention_backward bf16 B%d N%d H%d D%d", B, N, H, D);
        /* the oracle */
        double *ld = zeros_d(nl);
        uint16_t *oref = malloc(no * 2), *dqref = malloc(nq * 2);
        lunar_ref_attention_forward_bf16_f64(oref, ld, qh, B, N, H, D);
        lunar_ref_attention_backward_bf16_f64(dqref, dh, qh, oh, ld, B, N, H, D);
        double omax = 0, dmax = 0, oerr = 0, derr = 0;
        for (size_t i = 0; i < no; i++) {
            omax = fmax(omax, fabs(lunar_bf16_to_f32(oref[i])));
            oerr = fmax(oerr, fabs(lunar_bf16_to_f32(oh[i]) - lunar_bf16_to_f32(oref[i])));
        }
        for (size_t i = 0; i < nq; i++) {
            dmax = fmax(dmax, fabs(lunar_bf16_to_f32(dqref[i])));
            derr = fmax(derr, fabs(lunar_bf16_to_f32(dqh[i]) - lunar_bf16_to_f32(dqref[i])));
        }
        CHECK_MSG(oerr <= omax / 128 + 1e-6, "attention bf16 vs oracle: %g of max %g", oerr, omax);
        CHECK_MSG(derr <= dmax / 128 + 1e-6, "attention_backward bf16 vs oracle: %g of max %g", derr, dmax);
        free(q); free(dout); free(qh); free(dh); free(o); free(lse); free(lse2); free(dq); free(oh); free(dqh);
        free(want); free(ld); free(oref); free(dqref);
    }
}

/* ---- optimizer steps with the working copy ---------------------------------------------- */

static void test_optim_bf16(void) {
    const size_t sizes[] = {1, 17, 100003};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *p = rand_f(n, -1, 1), *m = rand_f(n, -0.01, 0.01), *v = rand_f(n, 0, 1e-4), *g = rand_f(n, -0.1, 0.1);
        float *p2 = malloc(n * 4), *m2 = malloc(n * 4), *v2 = malloc(n * 4);
        memcpy(p2, p, n * 4); memcpy(m2, m, n * 4); memcpy(v2, v, n * 4);
        uint16_t *ph = malloc(n * 2);
        lunar_cpu_adamw_step(p, m, v, g, n, 2e-3, 0.9, 0.999, 1e-8, 0.05, 7);
        lunar_cpu_adamw_step_bf16(p2, ph, m2, v2, g, n, 2e-3, 0.9, 0.999, 1e-8, 0.05, 7);
        CHECK(memcmp(p, p2, n * 4) == 0 && memcmp(m, m2, n * 4) == 0 && memcmp(v, v2, n * 4) == 0);
        uint16_t *want = to_bf16(p, n);
        CHECK(memcmp(ph, want, n * 2) == 0);
        free(want);
        /* SGD with momentum, nesterov, weight decay */
        lunar_cpu_sgd_step(p, m, g, n, 0.1f, 0.9f, 1e-4f, 1, 0);
        lunar_cpu_sgd_step_bf16(p2, ph, m2, g, n, 0.1f, 0.9f, 1e-4f, 1, 0);
        CHECK(memcmp(p, p2, n * 4) == 0 && memcmp(m, m2, n * 4) == 0);
        want = to_bf16(p, n);
        CHECK(memcmp(ph, want, n * 2) == 0);
        /* the reference does the same */
        double *pd = to_d(p, n), *bd = to_d(m, n), *gd = to_d(g, n);
        uint16_t *phd = malloc(n * 2);
        lunar_ref_sgd_step_bf16_f64(pd, phd, bd, gd, n, 0.1, 0.0, 0.0, 0, 1);
        for (size_t i = 0; i < n; i++) CHECK(phd[i] == lunar_f32_to_bf16((float)pd[i]));
        free(p); free(m); free(v); free(g); free(p2); free(m2); free(v2); free(ph); free(want); free(pd); free(bd);
        free(gd); free(phd);
    }
}

int main(void) {
    printf("bf16 kernels: %s\n", lunar_cpu_bf16_native() ? "AVX512-BF16 (native)" : "portable path");
    RUN(test_cast);
    RUN(test_linear_forward);
    RUN(test_linear_backward);
    RUN(test_linear_threads);
    RUN(test_layernorm_gelu_bf16);
    RUN(test_attention_bf16);
    RUN(test_optim_bf16);
    return TEST_SUMMARY();
}
