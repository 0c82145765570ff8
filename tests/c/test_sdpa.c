/*
 * tests/c/test_sdpa.c: the kernels of general scaled dot-product attention
 * (separate q, k, v of their own lengths, an additive mask; kernels.h sdpa_*,
 * core/ops/ref/sdpa.c and core/ops/cpu/sdpa.c):
 *   - the f64 reference without a mask equals the fused self-attention
 *     reference (core/ops/ref/attention.c) on the same q, k, v;
 *   - a key masked with -inf is a key that is not there (the same out and lse
 *     as the kernel on the other keys only; its dk, dv are 0);
 *   - every gradient (dq, dk, dv; masked and cross lengths L != S) against
 *     central finite differences of the f64 forward; overwritten, not added;
 *   - the f32 reference within F32_TOL of the f64 one, and the CPU kernel bit
 *     for bit the f32 reference.
 * Methods and tolerances: tests/c/kernel_test.h.
 *
 *   make build/tests/test_sdpa && build/tests/test_sdpa
 */
#include "kernel_test.h"

enum { SB = 2, SL = 3, SS = 5, SH = 2, SD = 3, SQ = SB * SL * SH * SD, SKV = SB * SS * SH * SD,
       SBIAS = SB * SH * SL * SS, SLSE = SB * SH * SL };

typedef struct { double q[SQ], k[SKV], v[SKV], bias[SBIAS], R[SQ]; int masked; } sdpa_ctx;

static double sdpa_loss(void *p) {
    sdpa_ctx *c = p;
    double out[SQ], lse[SLSE];
    lunar_ref_sdpa_forward_f64(out, lse, c->q, c->k, c->v, c->masked ? c->bias : NULL, SB, SL, SS, SH, SD);
    return dot(out, c->R, SQ);
}

/* a mask with some keys -inf (never a whole row) and some finite additive terms */
static void make_bias(double *bias) {
    fill(bias, SBIAS, -1, 1);
    for (int b = 0; b < SB; b++)
        for (int h = 0; h < SH; h++)
            for (int i = 0; i < SL; i++)
                for (int j = 0; j < SS; j++)
                    if ((i + j + b + h) % 3 == 0 && j != i) bias[((b * SH + h) * SL + i) * SS + j] = -INFINITY;
}

static void test_ref_sdpa_backward(void) {
    for (int masked = 0; masked <= 1; masked++) {
        sdpa_ctx c;
        c.masked = masked;
        fill(c.q, SQ, -2, 2); fill(c.k, SKV, -2, 2); fill(c.v, SKV, -2, 2); fill(c.R, SQ, -1, 1);
        make_bias(c.bias);
        const double *bias = masked ? c.bias : NULL;
        double out[SQ], lse[SLSE], dq[SQ], dk[SKV], dv[SKV], dq2[SQ], dk2[SKV], dv2[SKV];
        lunar_ref_sdpa_forward_f64(out, lse, c.q, c.k, c.v, bias, SB, SL, SS, SH, SD);
        set(dq, SQ, GARBAGE); set(dk, SKV, GARBAGE); set(dv, SKV, GARBAGE);
        lunar_ref_sdpa_backward_f64(dq, dk, dv, c.R, c.q, c.k, c.v, out, lse, bias, SB, SL, SS, SH, SD);
        CHECK_FD(sdpa_loss, &c, c.q, SQ, dq);
        CHECK_FD(sdpa_loss, &c, c.k, SKV, dk);
        CHECK_FD(sdpa_loss, &c, c.v, SKV, dv);
        set(dq2, SQ, -GARBAGE); set(dk2, SKV, -GARBAGE); set(dv2, SKV, -GARBAGE);
        lunar_ref_sdpa_backward_f64(dq2, dk2, dv2, c.R, c.q, c.k, c.v, out, lse, bias, SB, SL, SS, SH, SD);
        CHECK_SAME(dq2, dq, SQ); CHECK_SAME(dk2, dk, SKV); CHECK_SAME(dv2, dv, SKV);
    }
}

/* no mask, L = S: the fused self-attention kernel on qkv [B, N, 3, H, D] built from q, k, v */
static void test_ref_sdpa_equals_attention(void) {
    enum { B = 2, N = 4, H = 2, D = 3, C = H * D };
    double q[B * N * C], k[B * N * C], v[B * N * C], qkv[B * N * 3 * C];
    double o1[B * N * C], o2[B * N * C], l1[B * H * N], l2[B * H * N];
    fill(q, B * N * C, -2, 2); fill(k, B * N * C, -2, 2); fill(v, B * N * C, -2, 2);
    for (int t = 0; t < B * N; t++)
        for (int x = 0; x < C; x++) {
            qkv[(t * 3 + 0) * C + x] = q[t * C + x];
            qkv[(t * 3 + 1) * C + x] = k[t * C + x];
            qkv[(t * 3 + 2) * C + x] = v[t * C + x];
        }
    lunar_ref_attention_forward_f64(o1, l1, qkv, B, N, H, D);
    lunar_ref_sdpa_forward_f64(o2, l2, q, k, v, NULL, B, N, N, H, D);
    for (int i = 0; i < B * N * C; i++) CHECK_CLOSE(o2[i], o1[i], 1e-14, 1e-14);
    for (int i = 0; i < B * H * N; i++) CHECK_CLOSE(l2[i], l1[i], 1e-14, 1e-14);
}

/* B = H = 1: masking key 2 (of S = 4) with -inf gives the kernel on keys 0, 1, 3 only */
static void test_ref_sdpa_mask_removes_key(void) {
    enum { L = 3, S = 4, D = 2 };
    double q[L * D], k[S * D], v[S * D], k3[3 * D], v3[3 * D], bias[L * S] = {0};
    double o1[L * D], o2[L * D], l1[L], l2[L], R[L * D], dq[L * D], dk[S * D], dv[S * D];
    fill(q, L * D, -2, 2); fill(k, S * D, -2, 2); fill(v, S * D, -2, 2); fill(R, L * D, -1, 1);
    for (int i = 0; i < L; i++) bias[i * S + 2] = -INFINITY;
    for (int j = 0, n = 0; j < S; j++) {
        if (j == 2) continue;
        for (int d = 0; d < D; d++) { k3[n * D + d] = k[j * D + d]; v3[n * D + d] = v[j * D + d]; }
        n++;
    }
    lunar_ref_sdpa_forward_f64(o1, l1, q, k, v, bias, 1, L, S, 1, D);
    lunar_ref_sdpa_forward_f64(o2, l2, q, k3, v3, NULL, 1, L, 3, 1, D);
    for (int i = 0; i < L * D; i++) CHECK_CLOSE(o1[i], o2[i], 1e-14, 1e-14);
    for (int i = 0; i < L; i++) CHECK_CLOSE(l1[i], l2[i], 1e-14, 1e-14);
    lunar_ref_sdpa_backward_f64(dq, dk, dv, R, q, k, v, o1, l1, bias, 1, L, S, 1, D);
    for (int d = 0; d < D; d++) CHECK(dk[2 * D + d] == 0.0 && dv[2 * D + d] == 0.0);
}

static void test_sdpa_f32_and_cpu(void) {
    double q[SQ], k[SKV], v[SKV], bias[SBIAS], R[SQ], out[SQ], lse[SLSE], dq[SQ], dk[SKV], dv[SKV];
    fill(q, SQ, -2, 2); fill(k, SKV, -2, 2); fill(v, SKV, -2, 2); fill(R, SQ, -1, 1);
    make_bias(bias);
    lunar_ref_sdpa_forward_f64(out, lse, q, k, v, bias, SB, SL, SS, SH, SD);
    lunar_ref_sdpa_backward_f64(dq, dk, dv, R, q, k, v, out, lse, bias, SB, SL, SS, SH, SD);
    float qf[SQ], kf[SKV], vf[SKV], bf[SBIAS], Rf[SQ], of[SQ], lf[SLSE], dqf[SQ], dkf[SKV], dvf[SKV];
    float oc[SQ], lc[SLSE], dqc[SQ], dkc[SKV], dvc[SKV];
    to_f32(qf, q, SQ); to_f32(kf, k, SKV); to_f32(vf, v, SKV); to_f32(bf, bias, SBIAS); to_f32(Rf, R, SQ);
    lunar_ref_sdpa_forward_f32(of, lf, qf, kf, vf, bf, SB, SL, SS, SH, SD);
    lunar_ref_sdpa_backward_f32(dqf, dkf, dvf, Rf, qf, kf, vf, of, lf, bf, SB, SL, SS, SH, SD);
    CHECK_F32(of, out, SQ); CHECK_F32(lf, lse, SLSE);
    CHECK_F32(dqf, dq, SQ); CHECK_F32(dkf, dk, SKV); CHECK_F32(dvf, dv, SKV);
    lunar_cpu_sdpa_forward(oc, lc, qf, kf, vf, bf, SB, SL, SS, SH, SD);
    lunar_cpu_sdpa_backward(dqc, dkc, dvc, Rf, qf, kf, vf, oc, lc, bf, SB, SL, SS, SH, SD);
    CHECK(same_bits(oc, of, sizeof oc) && same_bits(lc, lf, sizeof lc));
    CHECK(same_bits(dqc, dqf, sizeof dqc) && same_bits(dkc, dkf, sizeof dkc) && same_bits(dvc, dvf, sizeof dvc));
}

int main(void) {
    RUN(test_ref_sdpa_backward);
    RUN(test_ref_sdpa_equals_attention);
    RUN(test_ref_sdpa_mask_removes_key);
    RUN(test_sdpa_f32_and_cpu);
    return TEST_SUMMARY();
}
