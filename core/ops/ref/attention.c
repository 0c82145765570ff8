/*
 * core/ops/ref/attention.c: the reference kernels of scaled dot-product attention, forward and backward (and on bf16 operands):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_attention.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "attention.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * Attention (Vaswani et al. 2017, scaled dot-product; the saved log-sum-exp and
 * the recomputation in backward follow FlashAttention, Dao et al. 2022, Alg. 2/4).
 * qkv[B, N, 3, H, D] (timm's fused qkv), out[B, N, H, D], lse[B, H, N]. */

/* element d of head h of token n of q (s = 0), k (s = 1) or v (s = 2) */
#define QKV_AT(b, n, s, h, d) \
    ((((size_t)(b) * N + (n)) * 3 + (s)) * (size_t)H * D + (size_t)(h) * D + (d))
/* element d of head h of token n of out / dout */
#define OUT_AT(b, n, h, d) (((size_t)(b) * N + (n)) * (size_t)H * D + (size_t)(h) * D + (d))

/* out = softmax(q k^T / sqrt(D)) v per (b, h), one row of N scores at a time
 * (stable softmax: subtract the row max); lse[b, h, i] = log sum_j exp(s_ij).
 * The only scratch is that row (N doubles); should malloc fail, out and lse
 * are filled with NaN so the failure cannot pass unnoticed. */
void NAME(attention_forward)(real *out, real *lse, const real *qkv, int B, int N, int H,
                             int D) {
    double scale = 1.0 / sqrt((double)D);
    double *row = malloc((size_t)N * sizeof *row);
    if (!row) {
        for (size_t i = 0; i < (size_t)B * N * H * D; i++) out[i] = (real)NAN;
        for (size_t i = 0; i < (size_t)B * H * N; i++) lse[i] = (real)NAN;
        return;
    }
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < N; i++) {
                /* scores of query i against every key, and their max */
                double max = -INFINITY;
                for (int j = 0; j < N; j++) {
                    double s = 0.0;
                    for (int d = 0; d < D; d++) {
                        s += (double)qkv[QKV_AT(b, i, 0, h, d)] * (double)qkv[QKV_AT(b, j, 1, h, d)];
                    }
                    row[j] = s * scale;
                    if (row[j] > max) max = row[j];
                }
                double sum = 0.0;
                for (int j = 0; j < N; j++) sum += exp(row[j] - max);
                double l = max + log(sum);
                lse[((size_t)b * H + h) * N + i] = (real)l;
                /* probabilities, then the weighted sum of values */
                for (int j = 0; j < N; j++) row[j] = exp(row[j] - l);
                for (int d = 0; d < D; d++) {
                    double o = 0.0;
                    for (int j = 0; j < N; j++) o += row[j] * (double)qkv[QKV_AT(b, j, 2, h, d)];
                    out[OUT_AT(b, i, h, d)] = (real)o;
                }
            }
        }
    }
    free(row);
}

/* dqkv (overwritten) from dout. Per (b, h) and query row i, with the
 * probabilities recomputed as P_ij = exp(s_ij - lse_i):
 *   dP_ij = dout_i . v_j,  Di = dout_i . out_i,  dS_ij = P_ij (dP_ij - Di),
 *   dq_i = scale sum_j dS_ij k_j,  dk_j += scale dS_ij q_i,  dv_j += P_ij dout_i.
 * dk and dv gather over all rows i in double scratch ([N, D] each) before they
 * are stored; should malloc fail, dqkv is filled with NaN. */
void NAME(attention_backward)(real *dqkv, const real *dout, const real *qkv, const real *out,
                              const real *lse, int B, int N, int H, int D) {
    double scale = 1.0 / sqrt((double)D);
    size_t nd = (size_t)N * D;
    double *P = malloc((2 * (size_t)N + 2 * nd) * sizeof *P);
    if (!P) {
        for (size_t i = 0; i < (size_t)B * N * 3 * H * D; i++) dqkv[i] = (real)NAN;
        return;
    }
    double *dS = P + N, *dk = dS + N, *dv = dk + nd;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (size_t x = 0; x < nd; x++) dk[x] = dv[x] = 0.0;
            for (int i = 0; i < N; i++) {
                double l = (double)lse[((size_t)b * H + h) * N + i];
                double Di = 0.0;
                for (int d = 0; d < D; d++) {
                    Di += (double)dout[OUT_AT(b, i, h, d)] * (double)out[OUT_AT(b, i, h, d)];
                }
                for (int j = 0; j < N; j++) {
                    double s = 0.0, dP = 0.0;
                    for (int d = 0; d < D; d++) {
                        s += (double)qkv[QKV_AT(b, i, 0, h, d)] * (double)qkv[QKV_AT(b, j, 1, h, d)];
                        dP += (double)dout[OUT_AT(b, i, h, d)] * (double)qkv[QKV_AT(b, j, 2, h, d)];
                    }
                    P[j] = exp(s * scale - l);
                    dS[j] = P[j] * (dP - Di);
                }
                for (int d = 0; d < D; d++) {
                    double dq = 0.0;
                    for (int j = 0; j < N; j++) dq += dS[j] * (double)qkv[QKV_AT(b, j, 1, h, d)];
                    dqkv[QKV_AT(b, i, 0, h, d)] = (real)(scale * dq);
                }
                for (int j = 0; j < N; j++) {
                    for (int d = 0; d < D; d++) {
                        dk[(size_t)j * D + d] += scale * dS[j] * (double)qkv[QKV_AT(b, i, 0, h, d)];
                        dv[(size_t)j * D + d] += P[j] * (double)dout[OUT_AT(b, i, h, d)];
                    }
                }
            }
            for (int j = 0; j < N; j++) {
                for (int d = 0; d < D; d++) {
                    dqkv[QKV_AT(b, j, 1, h, d)] = (real)dk[(size_t)j * D + d];
                    dqkv[QKV_AT(b, j, 2, h, d)] = (real)dv[(size_t)j * D + d];
                }
            }
        }
    }
    free(P);
}

#undef QKV_AT
#undef OUT_AT

/* n bf16 values widened to a new real array (NULL when out of memory; the
 * oracle runs in tests on small sizes). */
static real *NAME(widen_bf16)(const uint16_t *h, size_t n) {
    real *x = calloc(n ? n : 1, sizeof *x);
    if (x) for (size_t i = 0; i < n; i++) x[i] = (real)lunar_ref_from_bf16(h[i]);
    return x;
}

/* attention_forward of the widened qkv; out rounded to bf16. */
void NAME(attention_forward_bf16)(uint16_t *out, real *lse, const uint16_t *qkv, int B, int N, int H,
                                  int D) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D;
    real *q = NAME(widen_bf16)(qkv, nq), *o = malloc((no ? no : 1) * sizeof *o);
    if (q && o) {
        NAME(attention_forward)(o, lse, q, B, N, H, D);
        for (size_t i = 0; i < no; i++) out[i] = lunar_ref_to_bf16((double)o[i]);
    }
    free(q);
    free(o);
}

/* attention_backward of the widened operands; dqkv rounded to bf16. */
void NAME(attention_backward_bf16)(uint16_t *dqkv, const uint16_t *dout, const uint16_t *qkv,
                                   const uint16_t *out, const real *lse, int B, int N, int H, int D) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D;
    real *q = NAME(widen_bf16)(qkv, nq), *o = NAME(widen_bf16)(out, no), *d = NAME(widen_bf16)(dout, no);
    real *dq = malloc((nq ? nq : 1) * sizeof *dq);
    if (q && o && d && dq) {
        NAME(attention_backward)(dq, d, q, o, lse, B, N, H, D);
        for (size_t i = 0; i < nq; i++) dqkv[i] = lunar_ref_to_bf16((double)dq[i]);
    }
    free(q);
    free(o);
    free(d);
    free(dq);
}

#endif /* LUNAR_REF_GENERIC */
