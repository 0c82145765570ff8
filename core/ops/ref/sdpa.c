/*
 * core/ops/ref/sdpa.c: the reference kernels of general scaled dot-product
 * attention (PyTorch's F.scaled_dot_product_attention with a float attn_mask;
 * nn.MultiheadAttention's masks and cross-attention): separate q, k, v of
 * their own lengths and an optional additive mask, forward and backward.
 * lunar_ref_sdpa_{forward,backward}_{f64,f32} of lunar/kernels.h (declared
 * beside resize_bicubic: not in the backend table, no CUDA kernel). Written
 * once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h). Tested by tests/c/test_sdpa.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "sdpa.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* q[B, L, H, D], k and v [B, S, H, D], out [B, L, H, D]; bias [B, H, L, S]. */
#define Q_AT(b, i, h, d) ((((size_t)(b) * L + (i)) * H + (h)) * (size_t)D + (d))
#define KV_AT(b, j, h, d) ((((size_t)(b) * S + (j)) * H + (h)) * (size_t)D + (d))
#define BIAS_AT(b, h, i, j) ((((size_t)(b) * H + (h)) * L + (i)) * (size_t)S + (j))

/* out = softmax(q k^T / sqrt(D) + bias) v per (b, h), one row of S scores at a
 * time (stable softmax); lse[b, h, i] the log-sum-exp of row i of the biased
 * scores. bias NULL: none; an element -inf masks that key. A row whose keys
 * are all masked has lse -inf and NaN outputs (PyTorch's math path). Should
 * malloc fail, out and lse are NaN. */
void NAME(sdpa_forward)(real *out, real *lse, const real *q, const real *k, const real *v, const real *bias,
                        int B, int L, int S, int H, int D) {
    double scale = 1.0 / sqrt((double)D);
    double *row = malloc((size_t)(S ? S : 1) * sizeof *row);
    if (!row) {
        for (size_t i = 0; i < (size_t)B * L * H * D; i++) out[i] = (real)NAN;
        for (size_t i = 0; i < (size_t)B * H * L; i++) lse[i] = (real)NAN;
        return;
    }
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < L; i++) {
                double max = -INFINITY;
                for (int j = 0; j < S; j++) {
                    double s = 0.0;
                    for (int d = 0; d < D; d++) s += (double)q[Q_AT(b, i, h, d)] * (double)k[KV_AT(b, j, h, d)];
                    row[j] = s * scale + (bias ? (double)bias[BIAS_AT(b, h, i, j)] : 0.0);
                    if (row[j] > max) max = row[j];
                }
                double sum = 0.0;
                for (int j = 0; j < S; j++) sum += exp(row[j] - max);
                double l = max + log(sum);
                lse[((size_t)b * H + h) * L + i] = (real)l;
                for (int j = 0; j < S; j++) row[j] = exp(row[j] - l);
                for (int d = 0; d < D; d++) {
                    double o = 0.0;
                    for (int j = 0; j < S; j++) o += row[j] * (double)v[KV_AT(b, j, h, d)];
                    out[Q_AT(b, i, h, d)] = (real)o;
                }
            }
        }
    }
    free(row);
}

/* dq, dk, dv (overwritten) from dout, as attention_backward with the
 * probabilities P_ij = exp(s_ij * scale + bias_ij - lse_i) (0 where masked):
 *   dP_ij = dout_i . v_j,  Di = dout_i . out_i,  dS_ij = P_ij (dP_ij - Di),
 *   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dout_i.
 * dk and dv gather in double scratch ([S, D] each); should malloc fail, the
 * gradients are NaN. */
void NAME(sdpa_backward)(real *dq, real *dk, real *dv, const real *dout, const real *q, const real *k,
                         const real *v, const real *out, const real *lse, const real *bias, int B, int L, int S,
                         int H, int D) {
    double scale = 1.0 / sqrt((double)D);
    size_t sd = (size_t)S * D;
    double *P = malloc((2 * (size_t)S + 2 * sd + 1) * sizeof *P);
    if (!P) {
        for (size_t i = 0; i < (size_t)B * L * H * D; i++) dq[i] = (real)NAN;
        for (size_t i = 0; i < (size_t)B * S * H * D; i++) dk[i] = dv[i] = (real)NAN;
        return;
    }
    double *dS = P + S, *gk = dS + S, *gv = gk + sd;
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (size_t x = 0; x < sd; x++) gk[x] = gv[x] = 0.0;
            for (int i = 0; i < L; i++) {
                double l = (double)lse[((size_t)b * H + h) * L + i];
                double Di = 0.0;
                for (int d = 0; d < D; d++) Di += (double)dout[Q_AT(b, i, h, d)] * (double)out[Q_AT(b, i, h, d)];
                for (int j = 0; j < S; j++) {
                    double s = 0.0, dP = 0.0;
                    for (int d = 0; d < D; d++) {
                        s += (double)q[Q_AT(b, i, h, d)] * (double)k[KV_AT(b, j, h, d)];
                        dP += (double)dout[Q_AT(b, i, h, d)] * (double)v[KV_AT(b, j, h, d)];
                    }
                    P[j] = exp(s * scale + (bias ? (double)bias[BIAS_AT(b, h, i, j)] : 0.0) - l);
                    dS[j] = P[j] * (dP - Di);
                }
                for (int d = 0; d < D; d++) {
                    double g = 0.0;
                    for (int j = 0; j < S; j++) g += dS[j] * (double)k[KV_AT(b, j, h, d)];
                    dq[Q_AT(b, i, h, d)] = (real)(scale * g);
                }
                for (int j = 0; j < S; j++) {
                    for (int d = 0; d < D; d++) {
                        gk[(size_t)j * D + d] += scale * dS[j] * (double)q[Q_AT(b, i, h, d)];
                        gv[(size_t)j * D + d] += P[j] * (double)dout[Q_AT(b, i, h, d)];
                    }
                }
            }
            for (int j = 0; j < S; j++) {
                for (int d = 0; d < D; d++) {
                    dk[KV_AT(b, j, h, d)] = (real)gk[(size_t)j * D + d];
                    dv[KV_AT(b, j, h, d)] = (real)gv[(size_t)j * D + d];
                }
            }
        }
    }
    free(P);
}

#undef Q_AT
#undef KV_AT
#undef BIAS_AT

#endif /* LUNAR_REF_GENERIC */
