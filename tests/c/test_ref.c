/*
 * tests/c/test_ref.c: tests of the reference kernels (core/ops/ref), the
 * oracle every other backend is tested against, so they are checked only
 * against things that do not depend on them:
 *   - every backward against central finite differences of the f64 forward
 *     (loss = sum(out * R), R random, h = 1e-6), for input and parameter
 *     gradients, and the accumulate-twice rule of kernels.h (parameter
 *     gradients add up, input gradients are overwritten);
 *   - forwards against hand-computed values and mathematical facts;
 *   - the f32 variant against the f64 one.
 *
 * Build and run: make build/tests/test_ref && build/tests/test_ref
 * (or alone: gcc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Icore/include
 *  tests/c/test_ref.c core/ops/ref/ref.c core/rng.c core/status.c -lm)
 */
#include <math.h>    /* fabs, log, sqrt, erf */
#include <stdint.h>  /* uint64_t, int32_t */
#include <stdlib.h>  /* size_t */
#include <string.h>  /* memcpy, memcmp */

#include "lunar/kernels.h"  /* lunar_ref_<op>_f64 / _f32: what is tested */
#include "lunar/rng.h"      /* lunar_rng_u32: the dropout mask rule */
#include "test.h"           /* RUN, CHECK, CHECK_CLOSE, TEST_SUMMARY */

// -------------------------------------------------------------------------------------
// helpers: a local deterministic generator, finite differences, comparisons

static uint64_t rng_state = 0x853c49e6748fea9bull;

/* splitmix64 (Steele, Lea & Flood 2014): a tiny generator local to the test. */
static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi), rounded to float so the f32 and f64 variants can be
 * fed exactly the same inputs */
static double rnd(double lo, double hi) {
    double u = (double)(next_u64() >> 40) * (1.0 / 16777216.0);
    return (double)(float)(lo + (hi - lo) * u);
}

static void fill(double *x, size_t n, double lo, double hi) {
    for (size_t i = 0; i < n; i++) x[i] = rnd(lo, hi);
}

static void set(double *x, size_t n, double v) {
    for (size_t i = 0; i < n; i++) x[i] = v;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void to_f32(float *dst, const double *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = (float)src[i];
}

/* max_i |a_i - s * b_i| */
static double max_diff_scaled(const double *a, const double *b, double s, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - s * b[i]));
    return worst;
}

/* max_i |a_i - b_i| / max(1, |b_i|): the f32 variant a against the f64 variant b */
static double rel_err_f32(const float *a, const double *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]) / fmax(1.0, fabs(b[i])));
    return worst;
}

/* A scalar loss of the current inputs held in ctx. */
typedef double (*loss_fn)(void *ctx);

#define FD_H 1e-6
#define FD_TOL 1e-6
#define F32_TOL 1e-5

/* Central finite differences of f with respect to x[0..n) against the
 * analytic gradient: max_i |a_i - n_i| / max(1, |n_i|). x is restored. */
static double fd_error(loss_fn f, void *ctx, double *x, size_t n, const double *analytic) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double saved = x[i];
        x[i] = saved + FD_H;
        double plus = f(ctx);
        x[i] = saved - FD_H;
        double minus = f(ctx);
        x[i] = saved;
        double numeric = (plus - minus) / (2.0 * FD_H);
        worst = fmax(worst, fabs(analytic[i] - numeric) / fmax(1.0, fabs(numeric)));
    }
    return worst;
}

#define CHECK_FD(f, ctx, x, n, grad)                                                  \
    do {                                                                              \
        double err_ = fd_error((f), (ctx), (x), (n), (grad));                         \
        CHECK_MSG(err_ < FD_TOL, "%s: finite-difference error %.3g", #grad, err_);    \
    } while (0)

/* second backward into the same parameter gradient: exactly twice the first */
#define CHECK_DOUBLED(now, first, n)                                                  \
    CHECK_MSG(max_diff_scaled((now), (first), 2.0, (n)) == 0.0,                       \
              "%s is not twice %s after a second backward", #now, #first)

/* an input gradient written over garbage: exactly the first one again */
#define CHECK_SAME(now, first, n) \
    CHECK_MSG(max_diff_scaled((now), (first), 1.0, (n)) == 0.0, "%s was not overwritten", #now)

#define CHECK_F32(a32, a64, n)                                                        \
    do {                                                                              \
        double err_ = rel_err_f32((a32), (a64), (n));                                 \
        CHECK_MSG(err_ < F32_TOL, "%s vs %s: relative error %.3g", #a32, #a64, err_); \
    } while (0)

#define GARBAGE 1e9

// -------------------------------------------------------------------------------------
// linear

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

static void test_linear_forward_hand(void) {
    double inp[4] = {1, 2, 3, 4}, w[4] = {5, 6, 7, 8}, bias[2] = {1, -1}, out[4];
    lunar_ref_linear_forward_f64(out, inp, w, bias, 2, 2, 2);
    CHECK(out[0] == 18 && out[1] == 22 && out[2] == 40 && out[3] == 52);
    lunar_ref_linear_forward_f64(out, inp, w, NULL, 2, 2, 2);
    CHECK(out[0] == 17 && out[1] == 23 && out[2] == 39 && out[3] == 53);
    float inpf[4] = {1, 2, 3, 4}, wf[4] = {5, 6, 7, 8}, biasf[2] = {1, -1}, outf[4];
    lunar_ref_linear_forward_f32(outf, inpf, wf, biasf, 2, 2, 2);
    CHECK(outf[0] == 18 && outf[1] == 22 && outf[2] == 40 && outf[3] == 52);
}

static void test_linear_backward(void) {
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

// -------------------------------------------------------------------------------------
// patchify

enum { PATCH_MAX = 256 };
typedef struct {
    int B, C, k, S[3], P;
    size_t n;  /* elements of inp = elements of out */
    double inp[PATCH_MAX], R[PATCH_MAX];
} patch_ctx;

static double patch_loss(void *p) {
    patch_ctx *c = p;
    double out[PATCH_MAX];
    lunar_ref_patchify_forward_f64(out, c->inp, c->B, c->C, c->k, c->S, c->P);
    return dot(out, c->R, c->n);
}

static void patch_setup(patch_ctx *c, int B, int C, int k, const int *S, int P) {
    c->B = B;
    c->C = C;
    c->k = k;
    c->P = P;
    c->n = (size_t)B * C;
    for (int i = 0; i < k; i++) {
        c->S[i] = S[i];
        c->n *= (size_t)S[i];
    }
    fill(c->inp, c->n, -1, 1);
    fill(c->R, c->n, -1, 1);
}

static void patch_backward_case(int B, int C, int k, const int *S, int P) {
    patch_ctx c;
    patch_setup(&c, B, C, k, S, P);
    CHECK(c.n <= PATCH_MAX);
    double dinp[PATCH_MAX], dinp2[PATCH_MAX];
    set(dinp, c.n, GARBAGE);
    lunar_ref_patchify_backward_f64(dinp, c.R, B, C, k, S, P);
    CHECK_FD(patch_loss, &c, c.inp, c.n, dinp);
    set(dinp2, c.n, -GARBAGE);
    lunar_ref_patchify_backward_f64(dinp2, c.R, B, C, k, S, P);
    CHECK_SAME(dinp2, dinp, c.n);
}

static void test_patchify_backward_2d(void) {
    int S[2] = {4, 6};
    patch_backward_case(2, 2, 2, S, 2);
}

static void test_patchify_backward_3d(void) {
    int S[3] = {4, 2, 6};
    patch_backward_case(1, 2, 3, S, 2);
}

/* a hand-read 2D case: image 4x4, one channel, P = 2: patch 1 is the
 * top-right 2x2 block in row-major order */
static void test_patchify_forward_hand(void) {
    double img[16], out[16];
    for (int i = 0; i < 16; i++) img[i] = i;
    int S[2] = {4, 4};
    lunar_ref_patchify_forward_f64(out, img, 1, 1, 2, S, 2);
    CHECK(out[0] == 0 && out[1] == 1 && out[2] == 4 && out[3] == 5);
    CHECK(out[4] == 2 && out[5] == 3 && out[6] == 6 && out[7] == 7);
    CHECK(out[12] == 10 && out[13] == 11 && out[14] == 14 && out[15] == 15);
}

/* patchify then linear with the conv weight [E, C, P, P(, P)] flattened equals a
 * direct convolution with kernel = stride = P, written here independently. */
static void test_patchify_is_conv(void) {
    enum { B = 2, C = 2, E = 3, P = 2 };
    /* 2D: S = 4 x 6 */
    {
        enum { S0 = 4, S1 = 6, G0 = S0 / P, G1 = S1 / P, L = G0 * G1, KP = C * P * P };
        double img[B * C * S0 * S1], w[E * KP], bias[E], patches[B * L * KP], out[B * L * E];
        fill(img, B * C * S0 * S1, -1, 1);
        fill(w, E * KP, -1, 1);
        fill(bias, E, -1, 1);
        int S[2] = {S0, S1};
        lunar_ref_patchify_forward_f64(patches, img, B, C, 2, S, P);
        lunar_ref_linear_forward_f64(out, patches, w, bias, B * L, KP, E);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++)
                for (int g0 = 0; g0 < G0; g0++)
                    for (int g1 = 0; g1 < G1; g1++) {
                        double conv = bias[e];
                        for (int c = 0; c < C; c++)
                            for (int p0 = 0; p0 < P; p0++)
                                for (int p1 = 0; p1 < P; p1++)
                                    conv += w[((e * C + c) * P + p0) * P + p1] *
                                            img[((b * C + c) * S0 + g0 * P + p0) * S1 + g1 * P + p1];
                        CHECK_CLOSE(out[(b * L + g0 * G1 + g1) * E + e], conv, 1e-12, 1e-12);
                    }
    }
    /* 3D: S = 4 x 2 x 6 */
    {
        enum { S0 = 4, S1 = 2, S2 = 6, G0 = S0 / P, G1 = S1 / P, G2 = S2 / P,
               L = G0 * G1 * G2, KP = C * P * P * P };
        double img[B * C * S0 * S1 * S2], w[E * KP], bias[E], patches[B * L * KP], out[B * L * E];
        fill(img, B * C * S0 * S1 * S2, -1, 1);
        fill(w, E * KP, -1, 1);
        fill(bias, E, -1, 1);
        int S[3] = {S0, S1, S2};
        lunar_ref_patchify_forward_f64(patches, img, B, C, 3, S, P);
        lunar_ref_linear_forward_f64(out, patches, w, bias, B * L, KP, E);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++)
                for (int g0 = 0; g0 < G0; g0++)
                    for (int g1 = 0; g1 < G1; g1++)
                        for (int g2 = 0; g2 < G2; g2++) {
                            double conv = bias[e];
                            for (int c = 0; c < C; c++)
                                for (int p0 = 0; p0 < P; p0++)
                                    for (int p1 = 0; p1 < P; p1++)
                                        for (int p2 = 0; p2 < P; p2++)
                                            conv += w[(((e * C + c) * P + p0) * P + p1) * P + p2] *
                                                    img[(((b * C + c) * S0 + g0 * P + p0) * S1 +
                                                         g1 * P + p1) * S2 + g2 * P + p2];
                            int l = (g0 * G1 + g1) * G2 + g2;
                            CHECK_CLOSE(out[(b * L + l) * E + e], conv, 1e-12, 1e-12);
                        }
    }
}

// -------------------------------------------------------------------------------------
// layernorm

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

static void test_layernorm_backward(void) {
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
static void test_layernorm_forward_stats(void) {
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

// -------------------------------------------------------------------------------------
// gelu

enum { GELU_N = 16 };
typedef struct { double inp[GELU_N], R[GELU_N]; } gelu_ctx;

static double gelu_loss(void *p) {
    gelu_ctx *c = p;
    double out[GELU_N];
    lunar_ref_gelu_forward_f64(out, c->inp, GELU_N);
    return dot(out, c->R, GELU_N);
}

static void test_gelu_backward(void) {
    gelu_ctx c;
    fill(c.inp, GELU_N, -3, 3);
    fill(c.R, GELU_N, -1, 1);
    double dinp[GELU_N];
    set(dinp, GELU_N, GARBAGE);
    lunar_ref_gelu_backward_f64(dinp, c.R, c.inp, GELU_N);
    CHECK_FD(gelu_loss, &c, c.inp, GELU_N, dinp);
}

/* x Phi(x) at known points: Phi(1) = 0.841344746068543 */
static void test_gelu_forward_values(void) {
    double x[4] = {0, 1, -1, 10}, y[4];
    lunar_ref_gelu_forward_f64(y, x, 4);
    CHECK(y[0] == 0);
    CHECK_CLOSE(y[1], 0.8413447460685429, 1e-15, 0);
    CHECK_CLOSE(y[2], -0.15865525393145707, 1e-14, 0);
    CHECK_CLOSE(y[3], 10.0, 1e-15, 0);
}

// -------------------------------------------------------------------------------------
// attention

enum { AT_B = 2, AT_N = 5, AT_H = 2, AT_D = 3, AT_QKV = AT_B * AT_N * 3 * AT_H * AT_D,
       AT_OUT = AT_B * AT_N * AT_H * AT_D, AT_LSE = AT_B * AT_H * AT_N };
typedef struct { double qkv[AT_QKV], R[AT_OUT]; } attn_ctx;

static double attn_loss(void *p) {
    attn_ctx *c = p;
    double out[AT_OUT], lse[AT_LSE];
    lunar_ref_attention_forward_f64(out, lse, c->qkv, AT_B, AT_N, AT_H, AT_D);
    return dot(out, c->R, AT_OUT);
}

static void test_attention_backward(void) {
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
static void test_attention_single_token(void) {
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
static void test_attention_equal_keys(void) {
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

// -------------------------------------------------------------------------------------
// embed tokens

enum { EM_B = 2, EM_L = 3, EM_C = 4, EM_T = EM_L + 1 };
typedef struct {
    double x[EM_B * EM_L * EM_C], cls[EM_C], pos[EM_T * EM_C], R[EM_B * EM_T * EM_C];
} embed_ctx;

static double embed_loss(void *p) {
    embed_ctx *c = p;
    double out[EM_B * EM_T * EM_C];
    lunar_ref_embed_tokens_forward_f64(out, c->x, c->cls, c->pos, EM_B, EM_L, EM_C);
    return dot(out, c->R, EM_B * EM_T * EM_C);
}

static void test_embed_tokens_backward(void) {
    embed_ctx c;
    fill(c.x, EM_B * EM_L * EM_C, -1, 1);
    fill(c.cls, EM_C, -1, 1);
    fill(c.pos, EM_T * EM_C, -1, 1);
    fill(c.R, EM_B * EM_T * EM_C, -1, 1);
    double dx[EM_B * EM_L * EM_C], dcls[EM_C], dpos[EM_T * EM_C];
    set(dx, EM_B * EM_L * EM_C, GARBAGE);
    set(dcls, EM_C, 0);
    set(dpos, EM_T * EM_C, 0);
    lunar_ref_embed_tokens_backward_f64(dx, dcls, dpos, c.R, EM_B, EM_L, EM_C);
    CHECK_FD(embed_loss, &c, c.x, EM_B * EM_L * EM_C, dx);
    CHECK_FD(embed_loss, &c, c.cls, EM_C, dcls);
    CHECK_FD(embed_loss, &c, c.pos, EM_T * EM_C, dpos);

    double dx2[EM_B * EM_L * EM_C], dcls2[EM_C], dpos2[EM_T * EM_C];
    memcpy(dcls2, dcls, sizeof dcls);
    memcpy(dpos2, dpos, sizeof dpos);
    set(dx2, EM_B * EM_L * EM_C, -GARBAGE);
    lunar_ref_embed_tokens_backward_f64(dx2, dcls2, dpos2, c.R, EM_B, EM_L, EM_C);
    CHECK_DOUBLED(dcls2, dcls, EM_C);
    CHECK_DOUBLED(dpos2, dpos, EM_T * EM_C);
    CHECK_SAME(dx2, dx, EM_B * EM_L * EM_C);

    /* dx == NULL: the parameter gradients alone */
    double dcls3[EM_C], dpos3[EM_T * EM_C];
    set(dcls3, EM_C, 0);
    set(dpos3, EM_T * EM_C, 0);
    lunar_ref_embed_tokens_backward_f64(NULL, dcls3, dpos3, c.R, EM_B, EM_L, EM_C);
    CHECK_SAME(dcls3, dcls, EM_C);
    CHECK_SAME(dpos3, dpos, EM_T * EM_C);
}

// -------------------------------------------------------------------------------------
// dropout

enum { DR_N = 40 };
#define DR_P 0.3
#define DR_SEED 7u
#define DR_STREAM 3u
#define DR_OFFSET 11u
typedef struct { double inp[DR_N], R[DR_N]; } dropout_ctx;

static double dropout_loss(void *p) {
    dropout_ctx *c = p;
    double out[DR_N];
    lunar_ref_dropout_forward_f64(out, c->inp, DR_N, DR_P, DR_SEED, DR_STREAM, DR_OFFSET);
    return dot(out, c->R, DR_N);
}

static void test_dropout_backward(void) {
    dropout_ctx c;
    fill(c.inp, DR_N, -1, 1);
    fill(c.R, DR_N, -1, 1);
    double dinp[DR_N];
    set(dinp, DR_N, GARBAGE);
    lunar_ref_dropout_backward_f64(dinp, c.R, DR_N, DR_P, DR_SEED, DR_STREAM, DR_OFFSET);
    CHECK_FD(dropout_loss, &c, c.inp, DR_N, dinp);
}

static void test_dropout_p0_copies(void) {
    double inp[DR_N], out[DR_N];
    fill(inp, DR_N, -1, 1);
    lunar_ref_dropout_forward_f64(out, inp, DR_N, 0.0, 1, 2, 3);
    CHECK(memcmp(out, inp, sizeof out) == 0);
    float inpf[DR_N], outf[DR_N];
    to_f32(inpf, inp, DR_N);
    lunar_ref_dropout_forward_f32(outf, inpf, DR_N, 0.0f, 1, 2, 3);
    CHECK(memcmp(outf, inpf, sizeof outf) == 0);
}

/* p = 0.5: about half kept, each kept element doubled, the mask exactly the
 * rule of kernels.h; the same (seed, stream, offset) gives the same mask */
static void test_dropout_half(void) {
    enum { N = 10000 };
    static double inp[N], out[N], out2[N];
    fill(inp, N, 0.5, 1.5);  /* never zero, so a zero output means dropped */
    const uint64_t seed = 1234, stream = 99, offset = 5;
    lunar_ref_dropout_forward_f64(out, inp, N, 0.5, seed, stream, offset);
    int kept = 0;
    for (int i = 0; i < N; i++) {
        uint32_t w = lunar_rng_u32(seed, stream, offset + (uint64_t)i);
        int keep = (double)(w >> 8) / 16777216.0 >= 0.5;
        CHECK_MSG(out[i] == (keep ? 2.0 * inp[i] : 0.0), "element %d: %g for %g", i, out[i], inp[i]);
        kept += keep;
    }
    CHECK_MSG(kept > 4700 && kept < 5300, "kept %d of %d", kept, N);
    lunar_ref_dropout_forward_f64(out2, inp, N, 0.5, seed, stream, offset);
    CHECK(memcmp(out, out2, sizeof out) == 0);
    lunar_ref_dropout_forward_f64(out2, inp, N, 0.5, seed, stream + 1, offset);
    CHECK(memcmp(out, out2, sizeof out) != 0);
}

/* the mask of offset o at element i is the mask of offset 0 at element o + i */
static void test_dropout_offset_shifts(void) {
    enum { N = 64, O = 5 };
    double ones[N + O], m0[N + O], mo[N];
    set(ones, N + O, 1.0);
    lunar_ref_dropout_forward_f64(m0, ones, N + O, 0.25, 42, 17, 0);
    lunar_ref_dropout_forward_f64(mo, ones, N, 0.25, 42, 17, O);
    int dropped = 0;
    for (int i = 0; i < N; i++) {
        CHECK_MSG(mo[i] == m0[O + i], "element %d", i);
        dropped += mo[i] == 0;
    }
    CHECK(dropped > 0 && dropped < N);
}

// -------------------------------------------------------------------------------------
// cross-entropy

enum { CE_B = 4, CE_K = 5 };
typedef struct {
    double logits[CE_B * CE_K], smoothing, r;
    int32_t targets[CE_B];
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    double loss;
    lunar_ref_cross_entropy_forward_f64(&loss, NULL, c->logits, c->targets, CE_B, CE_K, c->smoothing);
    return loss * c->r;
}

static void ce_backward_case(double smoothing) {
    ce_ctx c = {.smoothing = smoothing, .targets = {0, 3, 4, 1}};
    fill(c.logits, CE_B * CE_K, -3, 3);
    c.r = rnd(0.5, 2);
    double dlogits[CE_B * CE_K], dlogits2[CE_B * CE_K];
    set(dlogits, CE_B * CE_K, GARBAGE);
    lunar_ref_cross_entropy_backward_f64(dlogits, c.logits, c.targets, CE_B, CE_K, smoothing, c.r);
    CHECK_FD(ce_loss, &c, c.logits, CE_B * CE_K, dlogits);
    set(dlogits2, CE_B * CE_K, -GARBAGE);
    lunar_ref_cross_entropy_backward_f64(dlogits2, c.logits, c.targets, CE_B, CE_K, smoothing, c.r);
    CHECK_SAME(dlogits2, dlogits, CE_B * CE_K);
    /* *loss is the mean of losses[] */
    double loss, losses[CE_B];
    lunar_ref_cross_entropy_forward_f64(&loss, losses, c.logits, c.targets, CE_B, CE_K, smoothing);
    CHECK_CLOSE(loss, (losses[0] + losses[1] + losses[2] + losses[3]) / CE_B, 1e-14, 0);
}

static void test_cross_entropy_backward(void) { ce_backward_case(0.0); }
static void test_cross_entropy_backward_smoothing(void) { ce_backward_case(0.1); }

/* uniform logits: every log-probability is -log K, whatever the smoothing */
static void test_cross_entropy_uniform(void) {
    enum { B = 3, K = 10 };
    double logits[B * K], loss, losses[B];
    int32_t targets[B] = {0, 9, 4};
    set(logits, B * K, 0.7);
    lunar_ref_cross_entropy_forward_f64(&loss, losses, logits, targets, B, K, 0.0);
    CHECK_CLOSE(loss, log(K), 1e-14, 0);
    lunar_ref_cross_entropy_forward_f64(&loss, losses, logits, targets, B, K, 0.3);
    CHECK_CLOSE(loss, log(K), 1e-14, 0);
    CHECK_CLOSE(losses[2], log(K), 1e-14, 0);
}

/* two classes with softmax (1/4, 3/4), target 1, smoothing 0.2: q = (0.1, 0.9) */
static void test_cross_entropy_hand(void) {
    double logits[2] = {0.0, log(3.0)}, loss;
    int32_t target = 1;
    lunar_ref_cross_entropy_forward_f64(&loss, NULL, logits, &target, 1, 2, 0.0);
    CHECK_CLOSE(loss, log(4.0 / 3.0), 1e-14, 0);
    lunar_ref_cross_entropy_forward_f64(&loss, NULL, logits, &target, 1, 2, 0.2);
    CHECK_CLOSE(loss, -(0.1 * log(0.25) + 0.9 * log(0.75)), 1e-14, 0);
    double dlogits[2];
    lunar_ref_cross_entropy_backward_f64(dlogits, logits, &target, 1, 2, 0.2, 1.0);
    CHECK_CLOSE(dlogits[0], 0.25 - 0.1, 1e-14, 1e-15);
    CHECK_CLOSE(dlogits[1], 0.75 - 0.9, 1e-14, 1e-15);
}

// -------------------------------------------------------------------------------------
// accuracy, sum of squares, add, scale

static void test_accuracy_count(void) {
    /* row 0: tie between 1 and 2, first index wins; row 1: argmax 0;
     * row 2: argmax 3 (negative logits) */
    double logits[12] = {1, 3, 3, 0, 5, 4, 4, 4, -3, -2, -5, -1};
    int32_t t1[3] = {1, 0, 3}, t2[3] = {2, 0, 1};
    CHECK(lunar_ref_accuracy_count_f64(logits, t1, 3, 4) == 3);
    CHECK(lunar_ref_accuracy_count_f64(logits, t2, 3, 4) == 1);
    float lf[12];
    to_f32(lf, logits, 12);
    CHECK(lunar_ref_accuracy_count_f32(lf, t1, 3, 4) == 3);
    CHECK(lunar_ref_accuracy_count_f32(lf, t2, 3, 4) == 1);
}

static void test_sum_squares(void) {
    double x[4] = {1, 2, 3, -4};
    float xf[4] = {1, 2, 3, -4};
    CHECK(lunar_ref_sum_squares_f64(x, 4) == 30.0);
    CHECK(lunar_ref_sum_squares_f32(xf, 4) == 30.0);
    CHECK(lunar_ref_sum_squares_f64(x, 0) == 0.0);
}

static void test_add_scale(void) {
    double a[3] = {1, 2, 3}, b[3] = {0.5, -2, 10}, out[3];
    lunar_ref_add_f64(out, a, b, 3);
    CHECK(out[0] == 1.5 && out[1] == 0 && out[2] == 13);
    lunar_ref_scale_f64(out, 3, -2.0);
    CHECK(out[0] == -3 && out[1] == 0 && out[2] == -26);
}

// -------------------------------------------------------------------------------------
// optimizers, against the formulas worked by hand

static void test_adamw_two_steps(void) {
    const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    double p = 1.0, m = 0.0, v = 0.0, g1 = 0.5, g2 = -0.25;
    lunar_ref_adamw_step_f64(&p, &m, &v, &g1, 1, lr, b1, b2, eps, wd, 1);
    /* t = 1: m = 0.05, v = 0.00025, mhat = g, vhat = g^2 */
    double p1 = 1.0 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps);
    CHECK_CLOSE(m, 0.05, 1e-15, 0);
    CHECK_CLOSE(v, 0.00025, 1e-15, 0);
    CHECK_CLOSE(p, p1, 1e-15, 0);
    CHECK_CLOSE(p, 0.899000002, 1e-9, 0);
    lunar_ref_adamw_step_f64(&p, &m, &v, &g2, 1, lr, b1, b2, eps, wd, 2);
    /* t = 2: m = 0.9*0.05 - 0.1*0.25 = 0.02, v = 0.999*0.00025 + 0.001*0.0625 */
    double m2 = 0.02, v2 = 0.999 * 0.00025 + 0.001 * 0.0625;
    double mhat = m2 / (1 - 0.81), vhat = v2 / (1 - 0.998001);
    double p2 = p1 * (1 - lr * wd) - lr * mhat / (sqrt(vhat) + eps);
    CHECK_CLOSE(m, m2, 1e-14, 0);
    CHECK_CLOSE(v, v2, 1e-14, 0);
    CHECK_CLOSE(p, p2, 1e-14, 0);
}

static void test_sgd_momentum_two_steps(void) {
    const double lr = 0.1, mu = 0.9, wd = 0.1;
    double g1 = 0.5, g2 = 0.25;
    /* plain momentum: g' = 0.6, buf = 0.6, p = 0.94; then g' = 0.344,
     * buf = 0.54 + 0.344 = 0.884, p = 0.94 - 0.0884 = 0.8516 */
    double p = 1.0, buf = GARBAGE;
    lunar_ref_sgd_step_f64(&p, &buf, &g1, 1, lr, mu, wd, 0, 1);
    CHECK_CLOSE(buf, 0.6, 1e-15, 0);
    CHECK_CLOSE(p, 0.94, 1e-15, 0);
    lunar_ref_sgd_step_f64(&p, &buf, &g2, 1, lr, mu, wd, 0, 0);
    CHECK_CLOSE(buf, 0.884, 1e-15, 0);
    CHECK_CLOSE(p, 0.8516, 1e-15, 0);
    /* Nesterov: d = 0.6 + 0.54 = 1.14, p = 0.886; then g' = 0.3386,
     * buf = 0.8786, d = 0.3386 + 0.79074 = 1.12934, p = 0.773066 */
    p = 1.0;
    buf = GARBAGE;
    lunar_ref_sgd_step_f64(&p, &buf, &g1, 1, lr, mu, wd, 1, 1);
    CHECK_CLOSE(buf, 0.6, 1e-15, 0);
    CHECK_CLOSE(p, 0.886, 1e-15, 0);
    lunar_ref_sgd_step_f64(&p, &buf, &g2, 1, lr, mu, wd, 1, 0);
    CHECK_CLOSE(buf, 0.8786, 1e-15, 0);
    CHECK_CLOSE(p, 0.773066, 1e-15, 0);
    /* momentum 0: p -= lr (g + wd p), buf may be NULL */
    p = 1.0;
    lunar_ref_sgd_step_f64(&p, NULL, &g1, 1, lr, 0.0, wd, 0, 1);
    CHECK_CLOSE(p, 0.94, 1e-15, 0);
    lunar_ref_sgd_step_f64(&p, NULL, &g2, 1, lr, 0.0, wd, 0, 0);
    CHECK_CLOSE(p, 0.94 - 0.1 * (0.25 + 0.094), 1e-15, 0);
}

// -------------------------------------------------------------------------------------
// f32 variant against f64 on random inputs (same float-representable inputs)

static void test_f32_linear(void) {
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

static void test_f32_patchify(void) {
    enum { B = 2, C = 3, n = B * C * 4 * 2 * 6 };
    int S[3] = {4, 2, 6};
    double inp[n], out[n], dinp[n];
    float inpf[n], outf[n], dinpf[n];
    fill(inp, n, -1, 1);
    to_f32(inpf, inp, n);
    lunar_ref_patchify_forward_f64(out, inp, B, C, 3, S, 2);
    lunar_ref_patchify_forward_f32(outf, inpf, B, C, 3, S, 2);
    CHECK_F32(outf, out, n);
    lunar_ref_patchify_backward_f64(dinp, out, B, C, 3, S, 2);
    lunar_ref_patchify_backward_f32(dinpf, outf, B, C, 3, S, 2);
    CHECK_F32(dinpf, dinp, n);
    CHECK_F32(dinpf, inp, n);  /* backward of a permutation undoes it */
}

static void test_f32_layernorm(void) {
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

static void test_f32_gelu(void) {
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

static void test_f32_attention(void) {
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

static void test_f32_embed_tokens(void) {
    enum { B = 3, L = 5, C = 6, T = L + 1 };
    double x[B * L * C], cls[C], pos[T * C], out[B * T * C], dx[B * L * C], dcls[C], dpos[T * C];
    float xf[B * L * C], clsf[C], posf[T * C], outf[B * T * C], dxf[B * L * C], dclsf[C], dposf[T * C];
    fill(x, B * L * C, -1, 1);
    fill(cls, C, -1, 1);
    fill(pos, T * C, -1, 1);
    set(dcls, C, 0);
    set(dpos, T * C, 0);
    to_f32(xf, x, B * L * C);
    to_f32(clsf, cls, C);
    to_f32(posf, pos, T * C);
    to_f32(dclsf, dcls, C);
    to_f32(dposf, dpos, T * C);
    lunar_ref_embed_tokens_forward_f64(out, x, cls, pos, B, L, C);
    lunar_ref_embed_tokens_forward_f32(outf, xf, clsf, posf, B, L, C);
    CHECK_F32(outf, out, B * T * C);
    lunar_ref_embed_tokens_backward_f64(dx, dcls, dpos, out, B, L, C);
    lunar_ref_embed_tokens_backward_f32(dxf, dclsf, dposf, outf, B, L, C);
    CHECK_F32(dxf, dx, B * L * C);
    CHECK_F32(dclsf, dcls, C);
    CHECK_F32(dposf, dpos, T * C);
}

static void test_f32_dropout(void) {
    enum { N = 200 };
    double inp[N], out[N], dinp[N];
    float inpf[N], outf[N], dinpf[N];
    fill(inp, N, -1, 1);
    to_f32(inpf, inp, N);
    lunar_ref_dropout_forward_f64(out, inp, N, 0.5, 9, 8, 7);
    lunar_ref_dropout_forward_f32(outf, inpf, N, 0.5f, 9, 8, 7);
    CHECK_F32(outf, out, N);
    lunar_ref_dropout_backward_f64(dinp, inp, N, 0.5, 9, 8, 7);
    lunar_ref_dropout_backward_f32(dinpf, inpf, N, 0.5f, 9, 8, 7);
    CHECK_F32(dinpf, dinp, N);
}

static void test_f32_cross_entropy(void) {
    enum { B = 6, K = 11 };
    double logits[B * K], losses[B], loss, dlogits[B * K];
    float logitsf[B * K], lossesf[B], lossf, dlogitsf[B * K];
    int32_t targets[B] = {0, 10, 3, 3, 7, 1};
    fill(logits, B * K, -4, 4);
    to_f32(logitsf, logits, B * K);
    for (int s = 0; s < 2; s++) {
        double eps = s ? 0.1 : 0.0;
        lunar_ref_cross_entropy_forward_f64(&loss, losses, logits, targets, B, K, eps);
        lunar_ref_cross_entropy_forward_f32(&lossf, lossesf, logitsf, targets, B, K, (float)eps);
        CHECK_F32(&lossf, &loss, 1);
        CHECK_F32(lossesf, losses, B);
        lunar_ref_cross_entropy_backward_f64(dlogits, logits, targets, B, K, eps, 2.5);
        lunar_ref_cross_entropy_backward_f32(dlogitsf, logitsf, targets, B, K, (float)eps, 2.5f);
        CHECK_F32(dlogitsf, dlogits, B * K);
    }
}

static void test_f32_elementwise_and_reductions(void) {
    enum { N = 50, B = 5, K = 10 };
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
    int32_t targets[B] = {1, 2, 3, 4, 5};
    CHECK(lunar_ref_accuracy_count_f32(af, targets, B, K) == lunar_ref_accuracy_count_f64(a, targets, B, K));
}

static void test_f32_optimizers(void) {
    enum { N = 40 };
    double p[N], m[N], v[N], g[N], buf[N];
    float pf[N], mf[N], vf[N], gf[N], buff[N];
    fill(p, N, -1, 1);
    fill(m, N, -0.1, 0.1);
    fill(v, N, 0.0, 0.01);
    fill(g, N, -1, 1);
    fill(buf, N, -1, 1);
    to_f32(pf, p, N);
    to_f32(mf, m, N);
    to_f32(vf, v, N);
    to_f32(gf, g, N);
    to_f32(buff, buf, N);
    lunar_ref_adamw_step_f64(p, m, v, g, N, 1e-3, 0.9, 0.999, 1e-8, 0.05, 3);
    lunar_ref_adamw_step_f32(pf, mf, vf, gf, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 3);
    CHECK_F32(pf, p, N);
    CHECK_F32(mf, m, N);
    CHECK_F32(vf, v, N);
    lunar_ref_sgd_step_f64(p, buf, g, N, 0.01, 0.9, 1e-4, 1, 0);
    lunar_ref_sgd_step_f32(pf, buff, gf, N, 0.01f, 0.9f, 1e-4f, 1, 0);
    CHECK_F32(pf, p, N);
    CHECK_F32(buff, buf, N);
}

// -------------------------------------------------------------------------------------

int main(void) {
    RUN(test_linear_forward_hand);
    RUN(test_linear_backward);
    RUN(test_patchify_forward_hand);
    RUN(test_patchify_is_conv);
    RUN(test_patchify_backward_2d);
    RUN(test_patchify_backward_3d);
    RUN(test_layernorm_forward_stats);
    RUN(test_layernorm_backward);
    RUN(test_gelu_forward_values);
    RUN(test_gelu_backward);
    RUN(test_attention_single_token);
    RUN(test_attention_equal_keys);
    RUN(test_attention_backward);
    RUN(test_embed_tokens_backward);
    RUN(test_dropout_p0_copies);
    RUN(test_dropout_half);
    RUN(test_dropout_offset_shifts);
    RUN(test_dropout_backward);
    RUN(test_cross_entropy_uniform);
    RUN(test_cross_entropy_hand);
    RUN(test_cross_entropy_backward);
    RUN(test_cross_entropy_backward_smoothing);
    RUN(test_accuracy_count);
    RUN(test_sum_squares);
    RUN(test_add_scale);
    RUN(test_adamw_two_steps);
    RUN(test_sgd_momentum_two_steps);
    RUN(test_f32_linear);
    RUN(test_f32_patchify);
    RUN(test_f32_layernorm);
    RUN(test_f32_gelu);
    RUN(test_f32_attention);
    RUN(test_f32_embed_tokens);
    RUN(test_f32_dropout);
    RUN(test_f32_cross_entropy);
    RUN(test_f32_elementwise_and_reductions);
    RUN(test_f32_optimizers);
    return TEST_SUMMARY();
}
