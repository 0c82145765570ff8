/*
 * tests/c/test_linear.c: the kernels of the linear layer,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/linear.c and linear_bf16.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/linear.c, linear_bf16.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate;
 *   - the bf16 variants (precision = 'bf16', test_bf16_*): bit for bit the f32
 *     kernels then rounded where kernels.h says so, and within bf16 of the
 *     f64 oracle.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/linear.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_linear && build/tests/test_linear
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { LIN_M = 3, LIN_K = 4, LIN_N = 5 };
typedef struct {
    double inp[LIN_M * LIN_K], w[LIN_N * LIN_K], bias[LIN_N], R[LIN_M * LIN_N];
} linear_ctx;

static double linear_loss(void *p) {
    linear_ctx *c = p;
    double out[LIN_M * LIN_N];
    lunar_ref_linear_forward_f64(out, c->inp, c->w, c->bias, LIN_M, LIN_K, LIN_N);
    return dot(out, c->R, LIN_M * LIN_N);
}

static void test_ref_linear_forward_hand(void) {
    double inp[4] = {1, 2, 3, 4}, w[4] = {5, 6, 7, 8}, bias[2] = {1, -1}, out[4];
    lunar_ref_linear_forward_f64(out, inp, w, bias, 2, 2, 2);
    CHECK(out[0] == 18 && out[1] == 22 && out[2] == 40 && out[3] == 52);
    lunar_ref_linear_forward_f64(out, inp, w, NULL, 2, 2, 2);
    CHECK(out[0] == 17 && out[1] == 23 && out[2] == 39 && out[3] == 53);
    float inpf[4] = {1, 2, 3, 4}, wf[4] = {5, 6, 7, 8}, biasf[2] = {1, -1}, outf[4];
    lunar_ref_linear_forward_f32(outf, inpf, wf, biasf, 2, 2, 2);
    CHECK(outf[0] == 18 && outf[1] == 22 && outf[2] == 40 && outf[3] == 52);
}

static void test_ref_linear_backward(void) {
    linear_ctx c;
    fill(c.inp, LIN_M * LIN_K, -1, 1);
    fill(c.w, LIN_N * LIN_K, -1, 1);
    fill(c.bias, LIN_N, -1, 1);
    fill(c.R, LIN_M * LIN_N, -1, 1);
    double dinp[LIN_M * LIN_K], dw[LIN_N * LIN_K], db[LIN_N];
    set(dw, LIN_N * LIN_K, 0);
    set(db, LIN_N, 0);
    lunar_ref_linear_backward_f64(dinp, dw, db, c.R, c.inp, c.w, LIN_M, LIN_K, LIN_N);
    CHECK_FD(linear_loss, &c, c.inp, LIN_M * LIN_K, dinp);
    CHECK_FD(linear_loss, &c, c.w, LIN_N * LIN_K, dw);
    CHECK_FD(linear_loss, &c, c.bias, LIN_N, db);

    /* accumulate twice: parameter gradients double, dinp is overwritten */
    double dinp2[LIN_M * LIN_K], dw2[LIN_N * LIN_K], db2[LIN_N];
    memcpy(dw2, dw, sizeof dw);
    memcpy(db2, db, sizeof db);
    set(dinp2, LIN_M * LIN_K, GARBAGE);
    lunar_ref_linear_backward_f64(dinp2, dw2, db2, c.R, c.inp, c.w, LIN_M, LIN_K, LIN_N);
    CHECK_DOUBLED(dw2, dw, LIN_N * LIN_K);
    CHECK_DOUBLED(db2, db, LIN_N);
    CHECK_SAME(dinp2, dinp, LIN_M * LIN_K);

    /* dinp == NULL and dbias == NULL: only dweight */
    double dw3[LIN_N * LIN_K];
    set(dw3, LIN_N * LIN_K, 0);
    lunar_ref_linear_backward_f64(NULL, dw3, NULL, c.R, c.inp, c.w, LIN_M, LIN_K, LIN_N);
    CHECK_SAME(dw3, dw, LIN_N * LIN_K);
}

static void test_ref_f32_linear(void) {
    enum { M = 7, K = 13, N = 9 };
    double inp[M * K], w[N * K], bias[N], dout[M * N], out[M * N], dinp[M * K], dw[N * K], db[N];
    float inpf[M * K], wf[N * K], biasf[N], doutf[M * N], outf[M * N], dinpf[M * K], dwf[N * K], dbf[N];
    fill(inp, M * K, -1, 1);
    fill(w, N * K, -1, 1);
    fill(bias, N, -1, 1);
    fill(dout, M * N, -1, 1);
    fill(dw, N * K, -1, 1);  /* nonzero starting gradients: accumulation in both */
    fill(db, N, -1, 1);
    to_f32(inpf, inp, M * K);
    to_f32(wf, w, N * K);
    to_f32(biasf, bias, N);
    to_f32(doutf, dout, M * N);
    to_f32(dwf, dw, N * K);
    to_f32(dbf, db, N);
    lunar_ref_linear_forward_f64(out, inp, w, bias, M, K, N);
    lunar_ref_linear_forward_f32(outf, inpf, wf, biasf, M, K, N);
    CHECK_F32(outf, out, M * N);
    lunar_ref_linear_backward_f64(dinp, dw, db, dout, inp, w, M, K, N);
    lunar_ref_linear_backward_f32(dinpf, dwf, dbf, doutf, inpf, wf, M, K, N);
    CHECK_F32(dinpf, dinp, M * K);
    CHECK_F32(dwf, dw, N * K);
    CHECK_F32(dbf, db, N);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_linear(void) {
    const int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {37, 19, 23}, {64, 48, 96}, {130, 33, 17}, {3, 200, 1}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            size_t nin = (size_t)M * K, nw = (size_t)N * K, nout = (size_t)M * N;
            float *inp = rand_f(nin, -1, 1), *w = rand_f(nw, -1, 1), *b = rand_f(N, -1, 1);
            float *out = rand_f(nout, -9, 9);
            double *din = to_d(inp, nin), *dw = to_d(w, nw), *db = to_d(b, N), *dout_ref = zeros_d(nout);
            lunar_cpu_linear_forward(out, inp, w, with_bias ? b : NULL, M, K, N);
            lunar_ref_linear_forward_f64(dout_ref, din, dw, with_bias ? db : NULL, M, K, N);
            CHECK(close_arr("linear out", out, dout_ref, nout, 1e-5, 1e-6));
            /* backward: dinp overwritten (starts as garbage), dweight/dbias accumulated */
            float *g = rand_f(nout, -1, 1), *dinp = rand_f(nin, -9, 9);
            float *gw = rand_f(nw, -1, 1), *gb = rand_f(N, -1, 1);
            double *gd = to_d(g, nout), *dinp_ref = zeros_d(nin), *gw_ref = to_d(gw, nw), *gb_ref = to_d(gb, N);
            lunar_cpu_linear_backward(dinp, gw, with_bias ? gb : NULL, g, inp, w, M, K, N);
            lunar_ref_linear_backward_f64(dinp_ref, gw_ref, with_bias ? gb_ref : NULL, gd, din, dw, M, K, N);
            CHECK(close_arr("linear dinp", dinp, dinp_ref, nin, 1e-5, 1e-6));
            CHECK(close_arr("linear dweight", gw, gw_ref, nw, 1e-5, 1e-6));
            CHECK(close_arr("linear dbias", gb, gb_ref, N, 1e-5, 1e-6));
            /* dinp NULL: only the parameter gradients */
            float *gw2 = copy_f(gw, nw);
            lunar_cpu_linear_backward(NULL, gw2, NULL, g, inp, w, M, K, N);
            lunar_ref_linear_backward_f64(NULL, gw_ref, NULL, gd, din, dw, M, K, N);
            CHECK(close_arr("linear dweight (2nd accumulation)", gw2, gw_ref, nw, 1e-5, 1e-6));
            free(inp); free(w); free(b); free(out); free(din); free(dw); free(db); free(dout_ref);
            free(g); free(dinp); free(gw); free(gb); free(gd); free(dinp_ref); free(gw_ref);
            free(gb_ref); free(gw2);
        }
    }
}

/* ---- bf16 (precision = 'bf16'): against the f32 kernels and the reference -------- */

/* sizes: 1s, odd, K odd past KC = 256, M past MC = 128, N past NC = 1024, and
 * K past one group of packed B (8 KC blocks when N > NC: 4 MiB) */
static const int SIZES[][3] = {{1, 1, 1}, {7, 13, 5}, {37, 19, 33}, {9, 301, 17}, {130, 33, 17},
                               {3, 200, 1}, {129, 64, 1031}, {200, 515, 70}, {3, 2600, 1030}};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])

static void test_bf16_linear_forward(void) {
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

/* the sizes, and one whose f32 dout and inp oneDNN's path rounds in row chunks
 * (M (N + K) > 2^19 bf16 values: chunks of 606 rows, then 94) */
static void test_bf16_linear_backward(void) {
    for (size_t s = 0; s <= NSIZES; s++) {
        int M = s < NSIZES ? SIZES[s][0] : 700, K = s < NSIZES ? SIZES[s][1] : 64, N = s < NSIZES ? SIZES[s][2] : 800;
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

/* the GEMMs: same bits on 1 and 2 threads, run to run (the backward in row
 * chunks of f32 dout and inp: 324, 324, 52 rows) */
static void test_bf16_linear_threads(void) {
    const int M = 700, K = 517, N = 1100;
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

int main(void) {
    printf("bf16 kernels: %s\n", lunar_cpu_bf16_native() ? "AVX512-BF16 (native)" : "portable path");
    RUN(test_ref_linear_forward_hand);
    RUN(test_ref_linear_backward);
    RUN(test_ref_f32_linear);
    RUN(test_cpu_linear);
    RUN(test_bf16_linear_forward);
    RUN(test_bf16_linear_backward);
    RUN(test_bf16_linear_threads);
    return TEST_SUMMARY();
}
