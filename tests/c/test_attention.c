/*
 * tests/c/test_attention.c: the kernels of scaled dot-product attention,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/attention.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/attention.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate;
 *   - the bf16 variants (precision = 'bf16', test_bf16_*): bit for bit the f32
 *     kernels then rounded where kernels.h says so, and within bf16 of the
 *     f64 oracle.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/attention.cu and attention_*.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_attention && build/tests/test_attention
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { AT_B = 2, AT_N = 5, AT_H = 2, AT_D = 3, AT_QKV = AT_B * AT_N * 3 * AT_H * AT_D,
       AT_OUT = AT_B * AT_N * AT_H * AT_D, AT_LSE = AT_B * AT_H * AT_N };
typedef struct { double qkv[AT_QKV], R[AT_OUT]; } attn_ctx;

static double attn_loss(void *p) {
    attn_ctx *c = p;
    double out[AT_OUT], lse[AT_LSE];
    lunar_ref_attention_forward_f64(out, lse, c->qkv, AT_B, AT_N, AT_H, AT_D);
    return dot(out, c->R, AT_OUT);
}

static void test_ref_attention_backward(void) {
    attn_ctx c;
    fill(c.qkv, AT_QKV, -2, 2);
    fill(c.R, AT_OUT, -1, 1);
    double out[AT_OUT], lse[AT_LSE], dqkv[AT_QKV], dqkv2[AT_QKV];
    lunar_ref_attention_forward_f64(out, lse, c.qkv, AT_B, AT_N, AT_H, AT_D);
    set(dqkv, AT_QKV, GARBAGE);
    lunar_ref_attention_backward_f64(dqkv, c.R, c.qkv, out, lse, AT_B, AT_N, AT_H, AT_D);
    CHECK_FD(attn_loss, &c, c.qkv, AT_QKV, dqkv);
    set(dqkv2, AT_QKV, -GARBAGE);
    lunar_ref_attention_backward_f64(dqkv2, c.R, c.qkv, out, lse, AT_B, AT_N, AT_H, AT_D);
    CHECK_SAME(dqkv2, dqkv, AT_QKV);
}

/* one token attends only to itself: out = v exactly, lse = q.k / sqrt(D) */
static void test_ref_attention_single_token(void) {
    enum { B = 2, H = 3, D = 4 };
    double qkv[B * 3 * H * D], out[B * H * D], lse[B * H];
    fill(qkv, B * 3 * H * D, -2, 2);
    lunar_ref_attention_forward_f64(out, lse, qkv, B, 1, H, D);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            double s = 0;
            for (int d = 0; d < D; d++) {
                CHECK(out[(b * H + h) * D + d] == qkv[((b * 3 + 2) * H + h) * D + d]);
                s += qkv[((b * 3 + 0) * H + h) * D + d] * qkv[((b * 3 + 1) * H + h) * D + d];
            }
            CHECK_CLOSE(lse[b * H + h], s / sqrt(D), 1e-14, 1e-14);
        }
}

/* all keys equal: uniform probabilities, out = mean of v, lse = s + log N */
static void test_ref_attention_equal_keys(void) {
    enum { B = 1, N = 5, H = 2, D = 3 };
    double qkv[B * N * 3 * H * D], out[B * N * H * D], lse[B * H * N], key[H * D];
    fill(qkv, B * N * 3 * H * D, -2, 2);
    fill(key, H * D, -1, 1);
    for (int n = 0; n < N; n++)
        for (int x = 0; x < H * D; x++) qkv[(n * 3 + 1) * H * D + x] = key[x];
    lunar_ref_attention_forward_f64(out, lse, qkv, B, N, H, D);
    for (int h = 0; h < H; h++)
        for (int i = 0; i < N; i++) {
            double s = 0;
            for (int d = 0; d < D; d++) s += qkv[(i * 3 + 0) * H * D + h * D + d] * key[h * D + d];
            CHECK_CLOSE(lse[h * N + i], s / sqrt(D) + log(N), 1e-14, 1e-14);
            for (int d = 0; d < D; d++) {
                double mean = 0;
                for (int j = 0; j < N; j++) mean += qkv[(j * 3 + 2) * H * D + h * D + d] / N;
                CHECK_CLOSE(out[(i * H + h) * D + d], mean, 1e-14, 1e-14);
            }
        }
}

static void test_ref_f32_attention(void) {
    enum { B = 2, N = 7, H = 3, D = 4, NQ = B * N * 3 * H * D, NO = B * N * H * D, NL = B * H * N };
    double qkv[NQ], dout[NO], out[NO], lse[NL], dqkv[NQ];
    float qkvf[NQ], doutf[NO], outf[NO], lsef[NL], dqkvf[NQ];
    fill(qkv, NQ, -2, 2);
    fill(dout, NO, -1, 1);
    to_f32(qkvf, qkv, NQ);
    to_f32(doutf, dout, NO);
    lunar_ref_attention_forward_f64(out, lse, qkv, B, N, H, D);
    lunar_ref_attention_forward_f32(outf, lsef, qkvf, B, N, H, D);
    CHECK_F32(outf, out, NO);
    CHECK_F32(lsef, lse, NL);
    lunar_ref_attention_backward_f64(dqkv, dout, qkv, out, lse, B, N, H, D);
    lunar_ref_attention_backward_f32(dqkvf, doutf, qkvf, outf, lsef, B, N, H, D);
    CHECK_F32(dqkvf, dqkv, NQ);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static int check_attention(int B, int N, int H, int D, double amp) {
    size_t nqkv = (size_t)B * N * 3 * H * D, nout = (size_t)B * N * H * D, nlse = (size_t)B * H * N;
    float *qkv = rand_f(nqkv, -amp, amp), *out = rand_f(nout, -9, 9), *lse = rand_f(nlse, -9, 9);
    double *qkvd = to_d(qkv, nqkv), *out_ref = zeros_d(nout), *lse_ref = zeros_d(nlse);
    lunar_cpu_attention_forward(out, lse, qkv, B, N, H, D);
    lunar_ref_attention_forward_f64(out_ref, lse_ref, qkvd, B, N, H, D);
    int ok = close_arr("attention out", out, out_ref, nout, 1e-4, 1e-5) &&
             close_arr("attention lse", lse, lse_ref, nlse, 1e-5, 1e-6);
    if (ok) {
        float *g = rand_f(nout, -1, 1), *dqkv = rand_f(nqkv, -9, 9);
        double *gd = to_d(g, nout), *outd = to_d(out, nout), *lsed = to_d(lse, nlse), *dqkv_ref = zeros_d(nqkv);
        lunar_cpu_attention_backward(dqkv, g, qkv, out, lse, B, N, H, D);
        lunar_ref_attention_backward_f64(dqkv_ref, gd, qkvd, outd, lsed, B, N, H, D);
        ok = close_arr("attention dqkv", dqkv, dqkv_ref, nqkv, 1e-4, 1e-5);
        free(g); free(dqkv); free(gd); free(outd); free(lsed); free(dqkv_ref);
    }
    if (!ok) fprintf(stderr, "    at B=%d N=%d H=%d D=%d\n", B, N, H, D);
    free(qkv); free(out); free(lse); free(qkvd); free(out_ref); free(lse_ref);
    return ok;
}

static void test_cpu_attention(void) {
    CHECK(check_attention(1, 1, 1, 1, 1.0));
    CHECK(check_attention(2, 5, 3, 8, 2.0));
    CHECK(check_attention(2, 50, 3, 64, 1.0)); /* the main job's shape, B = 2 */
    CHECK(check_attention(2, 17, 2, 20, 2.0));
    CHECK(check_attention(1, 70, 1, 100, 0.5)); /* N > 64 and D > 64: two column blocks */
    CHECK(check_attention(3, 7, 1, 3, 3.0));
    CHECK(check_attention(1, 13, 2, 16, 4.0)); /* peaked softmax */
    CHECK(check_attention(1, 300, 1, 6, 1.0)); /* N * Np > 64K: query blocks, dK/dV accumulate */
}

/* ---- bf16 (precision = 'bf16'): against the f32 kernels and the reference -------- */

/* the bf16 attention is the f32 kernel on the widened operands, results rounded
 * once (bit for bit), and within bf16 of the f64 oracle on the same operands.
 * Shapes: odd D (1, 5: the products over D on widened rows), even D (VDPBF16PS
 * on the bf16 rows where the CPU has it), N = 300 (query rows in blocks); the
 * score columns' last panel of 1 (7, 197), 2 (90), 3 (300) and 4 (50) vectors */
static void test_bf16_attention(void) {
    const int shapes[][4] = {{1, 1, 1, 1},  {2, 7, 3, 8},   {2, 50, 2, 16}, {1, 197, 3, 64},
                             {2, 9, 3, 5},  {1, 300, 1, 6}, {1, 90, 2, 64}};
    for (int s = 0; s < 7; s++) {
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

int main(void) {
    RUN(test_ref_attention_backward);
    RUN(test_ref_attention_single_token);
    RUN(test_ref_attention_equal_keys);
    RUN(test_ref_f32_attention);
    RUN(test_cpu_attention);
    RUN(test_bf16_attention);
    return TEST_SUMMARY();
}
