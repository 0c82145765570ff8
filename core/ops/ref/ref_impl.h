/*
 * core/ops/ref/ref_impl.h: the reference kernels (the oracle), written once
 * against two macros, Torch7 "generic" style:
 *   real      the element type (double or float)
 *   NAME(op)  the public name of op (lunar_ref_<op>_f64 or lunar_ref_<op>_f32)
 * core/ops/ref/ref.c includes this file once per type; it is not a header to
 * include anywhere else. The contract of every kernel (shapes, layouts,
 * overwrite vs accumulate) is in lunar/kernels.h.
 *
 * Plain loops in the style of llm.c's train_gpt2.c: no BLAS, no OpenMP, no
 * fusion, and every sum accumulated in double in both variants, so the f32
 * variant differs from the f64 one only by the rounding of what it stores.
 * Speed is not a goal; being obviously right is.
 */

#include <math.h>    /* exp, log, erf, sqrt, pow, INFINITY, NAN */
#include <stdint.h>  /* int32_t, int64_t, uint64_t */
#include <stdlib.h>  /* malloc, free (attention scratch rows) */
#include <string.h>  /* memcpy */

#include "lunar/kernels.h"  /* the declarations these definitions must match */
#include "lunar/rng.h"      /* lunar_rng_u32: the dropout mask */

#if !defined(real) || !defined(NAME)
#error "ref_impl.h needs the macros real and NAME(op); include it from ref.c"
#endif

/* ------------------------------------------------------------------------------------
 * Type-independent helpers, compiled once however often this file is included. */
#ifndef LUNAR_REF_IMPL_COMMON
#define LUNAR_REF_IMPL_COMMON

/* Offset into inp[B, C, S_1..S_k] of element e of patch l of image b, where
 * the patch grid is G_i = S_i / P in row-major order and e runs over
 * (c, p_1, .., p_k) in row-major order (the flattening of a conv weight). */
static size_t lunar_ref_patch_source(int b, size_t l, size_t e, int C, int k, const int *S,
                                     int P) {
    int grid[3], within[3];
    for (int i = k - 1; i >= 0; i--) {  /* peel the last spatial dim first */
        int G = S[i] / P;
        grid[i] = (int)(l % (size_t)G);
        l /= (size_t)G;
        within[i] = (int)(e % (size_t)P);
        e /= (size_t)P;
    }
    int c = (int)e;  /* what remains of e is the channel */
    size_t off = (size_t)b * (size_t)C + (size_t)c;
    for (int i = 0; i < k; i++) off = off * (size_t)S[i] + (size_t)(grid[i] * P + within[i]);
    return off;
}

/* The dropout rule of kernels.h: element i is kept when
 * u_i = (w_i >> 8) * 2^-24 >= p, w_i = lunar_rng_u32(seed, stream, offset + i).
 * u_i is exact in float and double; p is compared as a double. */
static int lunar_ref_dropout_keep(double p, uint64_t seed, uint64_t stream, uint64_t index) {
    double u = (double)(lunar_rng_u32(seed, stream, index) >> 8) * (1.0 / 16777216.0);
    return u >= p;
}

#endif /* LUNAR_REF_IMPL_COMMON */

/* ------------------------------------------------------------------------------------
 * Linear */

/* out[M,N] = inp[M,K] @ weight[N,K]^T + bias[N]: torch.nn.functional.linear. */
void NAME(linear_forward)(real *out, const real *inp, const real *weight, const real *bias,
                          int M, int K, int N) {
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            double sum = bias ? (double)bias[n] : 0.0;
            for (int k = 0; k < K; k++) {
                sum += (double)inp[(size_t)m * K + k] * (double)weight[(size_t)n * K + k];
            }
            out[(size_t)m * N + n] = (real)sum;
        }
    }
}

/* The three products of the linear layer's backward:
 * dinp = dout @ weight (overwritten, skipped when NULL),
 * dweight += dout^T @ inp, dbias += column sums of dout (skipped when NULL). */
void NAME(linear_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                           const real *inp, const real *weight, int M, int K, int N) {
    if (dinp) {
        for (int m = 0; m < M; m++) {
            for (int k = 0; k < K; k++) {
                double sum = 0.0;
                for (int n = 0; n < N; n++) {
                    sum += (double)dout[(size_t)m * N + n] * (double)weight[(size_t)n * K + k];
                }
                dinp[(size_t)m * K + k] = (real)sum;
            }
        }
    }
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            double sum = 0.0;
            for (int m = 0; m < M; m++) {
                sum += (double)dout[(size_t)m * N + n] * (double)inp[(size_t)m * K + k];
            }
            dweight[(size_t)n * K + k] += (real)sum;
        }
    }
    if (dbias) {
        for (int n = 0; n < N; n++) {
            double sum = 0.0;
            for (int m = 0; m < M; m++) sum += (double)dout[(size_t)m * N + n];
            dbias[n] += (real)sum;
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Patchify: the data movement of torch.nn.Conv2d/Conv3d with kernel = stride = P
 * (timm's PatchEmbed), so that patch embedding is patchify followed by linear
 * with the conv weight [E, C, P, P(, P)] viewed as [E, C*P^k]. */

/* out[B, L, C*P^k] gathered from inp[B, C, S_1..S_k]. */
void NAME(patchify_forward)(real *out, const real *inp, int B, int C, int k, const int *S,
                            int P) {
    size_t L = 1, E = (size_t)C;
    for (int i = 0; i < k; i++) {
        L *= (size_t)(S[i] / P);
        E *= (size_t)P;
    }
    for (int b = 0; b < B; b++) {
        for (size_t l = 0; l < L; l++) {
            for (size_t e = 0; e < E; e++) {
                out[((size_t)b * L + l) * E + e] = inp[lunar_ref_patch_source(b, l, e, C, k, S, P)];
            }
        }
    }
}

/* dinp[B, C, S_1..S_k] scattered back from dout[B, L, C*P^k]; every element of
 * dinp is written exactly once because the S_i are multiples of P. */
void NAME(patchify_backward)(real *dinp, const real *dout, int B, int C, int k, const int *S,
                             int P) {
    size_t L = 1, E = (size_t)C;
    for (int i = 0; i < k; i++) {
        L *= (size_t)(S[i] / P);
        E *= (size_t)P;
    }
    for (int b = 0; b < B; b++) {
        for (size_t l = 0; l < L; l++) {
            for (size_t e = 0; e < E; e++) {
                dinp[lunar_ref_patch_source(b, l, e, C, k, S, P)] = dout[((size_t)b * L + l) * E + e];
            }
        }
    }
}

/* ------------------------------------------------------------------------------------
 * LayerNorm (Ba, Kiros & Hinton 2016; torch.nn.LayerNorm over the last dim) */

/* out = (x - mean) * rstd * weight + bias per row of inp[M,C]; mean and the
 * biased variance in two passes in double; saves mean[M] and rstd[M]. */
void NAME(layernorm_forward)(real *out, real *mean, real *rstd, const real *inp,
                             const real *weight, const real *bias, int M, int C, real eps) {
    for (int m = 0; m < M; m++) {
        const real *x = inp + (size_t)m * C;
        double mu = 0.0;
        for (int c = 0; c < C; c++) mu += (double)x[c];
        mu /= C;
        double var = 0.0;
        for (int c = 0; c < C; c++) var += ((double)x[c] - mu) * ((double)x[c] - mu);
        var /= C;
        double rs = 1.0 / sqrt(var + (double)eps);
        for (int c = 0; c < C; c++) {
            double xhat = ((double)x[c] - mu) * rs;
            out[(size_t)m * C + c] = (real)(xhat * (double)weight[c] + (double)bias[c]);
        }
        mean[m] = (real)mu;
        rstd[m] = (real)rs;
    }
}

/* With xhat = (x - mean) * rstd and g = dout * weight (llm.c layernorm_backward):
 * dinp = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))   (overwritten),
 * dweight += sum over rows of dout * xhat, dbias += sum over rows of dout. */
void NAME(layernorm_backward)(real *dinp, real *dweight, real *dbias, const real *dout,
                              const real *inp, const real *weight, const real *mean,
                              const real *rstd, int M, int C) {
    for (int m = 0; m < M; m++) {
        const real *x = inp + (size_t)m * C;
        const real *dy = dout + (size_t)m * C;
        double mu = (double)mean[m], rs = (double)rstd[m];
        double g_mean = 0.0, gx_mean = 0.0;
        for (int c = 0; c < C; c++) {
            double xhat = ((double)x[c] - mu) * rs;
            double g = (double)dy[c] * (double)weight[c];
            g_mean += g;
            gx_mean += g * xhat;
        }
        g_mean /= C;
        gx_mean /= C;
        for (int c = 0; c < C; c++) {
            double xhat = ((double)x[c] - mu) * rs;
            double g = (double)dy[c] * (double)weight[c];
            dinp[(size_t)m * C + c] = (real)(rs * (g - g_mean - xhat * gx_mean));
        }
    }
    for (int c = 0; c < C; c++) {
        double dw = 0.0, db = 0.0;
        for (int m = 0; m < M; m++) {
            double xhat = ((double)inp[(size_t)m * C + c] - (double)mean[m]) * (double)rstd[m];
            dw += (double)dout[(size_t)m * C + c] * xhat;
            db += (double)dout[(size_t)m * C + c];
        }
        dweight[c] += (real)dw;
        dbias[c] += (real)db;
    }
}

/* ------------------------------------------------------------------------------------
 * GELU, exact (Hendrycks & Gimpel 2016; torch.nn.GELU(approximate='none')).
 * Elementwise: out may alias inp, dinp may alias dout. */

/* out = x * Phi(x), Phi(x) = 0.5 * (1 + erf(x / sqrt(2))). */
void NAME(gelu_forward)(real *out, const real *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = (double)inp[i];
        out[i] = (real)(0.5 * x * (1.0 + erf(x / sqrt(2.0))));
    }
}

/* dinp = dout * (Phi(x) + x * phi(x)), phi the standard normal density. */
void NAME(gelu_backward)(real *dinp, const real *dout, const real *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = (double)inp[i];
        double cdf = 0.5 * (1.0 + erf(x / sqrt(2.0)));
        double pdf = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
        dinp[i] = (real)((double)dout[i] * (cdf + x * pdf));
    }
}

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

/* ------------------------------------------------------------------------------------
 * Token embedding: prepend the class token, add the position embedding
 * (Dosovitskiy et al. 2021; timm VisionTransformer._pos_embed). */

/* out[b, 0] = cls + pos[0]; out[b, 1 + l] = x[b, l] + pos[1 + l]. */
void NAME(embed_tokens_forward)(real *out, const real *x, const real *cls, const real *pos,
                                int B, int L, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t <= L; t++) {
            for (int c = 0; c < C; c++) {
                double v = t == 0 ? (double)cls[c] : (double)x[((size_t)b * L + t - 1) * C + c];
                out[((size_t)b * (L + 1) + t) * C + c] = (real)(v + (double)pos[(size_t)t * C + c]);
            }
        }
    }
}

/* dx[b, l] = dout[b, 1 + l] (overwritten, skipped when NULL);
 * dcls += sum_b dout[b, 0]; dpos[t] += sum_b dout[b, t]. */
void NAME(embed_tokens_backward)(real *dx, real *dcls, real *dpos, const real *dout, int B,
                                 int L, int C) {
    if (dx) {
        for (int b = 0; b < B; b++) {
            for (int l = 0; l < L; l++) {
                for (int c = 0; c < C; c++) {
                    dx[((size_t)b * L + l) * C + c] = dout[((size_t)b * (L + 1) + 1 + l) * C + c];
                }
            }
        }
    }
    for (int t = 0; t <= L; t++) {
        for (int c = 0; c < C; c++) {
            double sum = 0.0;
            for (int b = 0; b < B; b++) sum += (double)dout[((size_t)b * (L + 1) + t) * C + c];
            dpos[(size_t)t * C + c] += (real)sum;
            if (t == 0) dcls[c] += (real)sum;
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Dropout, inverted (Srivastava et al. 2014; torch.nn.functional.dropout scales
 * the kept elements by 1/(1-p) in training). The mask is a pure function of
 * (seed, stream, offset + i) (kernels.h), never stored. p >= 1 drops
 * everything, as PyTorch. Elementwise: out may alias inp. */

void NAME(dropout_forward)(real *out, const real *inp, size_t n, real p, uint64_t seed,
                           uint64_t stream, uint64_t offset) {
    if (p == 0) {
        if (out != inp) memcpy(out, inp, n * sizeof *out);
        return;
    }
    double keep_scale = p >= 1 ? 0.0 : 1.0 / (1.0 - (double)p);
    for (size_t i = 0; i < n; i++) {
        int keep = lunar_ref_dropout_keep((double)p, seed, stream, offset + i);
        out[i] = keep ? (real)((double)inp[i] * keep_scale) : (real)0;
    }
}

/* dinp = dout * mask / (1 - p), the same mask as forward. */
void NAME(dropout_backward)(real *dinp, const real *dout, size_t n, real p, uint64_t seed,
                            uint64_t stream, uint64_t offset) {
    NAME(dropout_forward)(dinp, dout, n, p, seed, stream, offset);
}

/* ------------------------------------------------------------------------------------
 * Cross-entropy with label smoothing (Szegedy et al. 2016, "Rethinking the
 * Inception Architecture"; torch.nn.functional.cross_entropy(label_smoothing=eps),
 * reduction='mean'): q = (1 - eps) onehot(t) + eps / K. */

/* losses[b] = -sum_k q_k log softmax(logits[b])_k, log softmax through a
 * max-subtracted log-sum-exp; *loss = mean over b. */
void NAME(cross_entropy_forward)(real *loss, real *losses, const real *logits,
                                 const int32_t *targets, int B, int K, real smoothing) {
    double eps = (double)smoothing, total = 0.0;
    for (int b = 0; b < B; b++) {
        const real *z = logits + (size_t)b * K;
        double max = -INFINITY;
        for (int k = 0; k < K; k++) if ((double)z[k] > max) max = (double)z[k];
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += exp((double)z[k] - max);
        double lse = max + log(sum);
        double lb = 0.0;
        for (int k = 0; k < K; k++) {
            double q = (k == targets[b] ? 1.0 - eps : 0.0) + eps / K;
            lb -= q * ((double)z[k] - lse);
        }
        if (losses) losses[b] = (real)lb;
        total += lb;
    }
    *loss = (real)(total / B);
}

/* dlogits[b, k] = dloss / B * (softmax(logits[b])_k - q_k), overwritten. */
void NAME(cross_entropy_backward)(real *dlogits, const real *logits, const int32_t *targets,
                                  int B, int K, real smoothing, real dloss) {
    double eps = (double)smoothing, g = (double)dloss / B;
    for (int b = 0; b < B; b++) {
        const real *z = logits + (size_t)b * K;
        double max = -INFINITY;
        for (int k = 0; k < K; k++) if ((double)z[k] > max) max = (double)z[k];
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += exp((double)z[k] - max);
        for (int k = 0; k < K; k++) {
            double prob = exp((double)z[k] - max) / sum;
            double q = (k == targets[b] ? 1.0 - eps : 0.0) + eps / K;
            dlogits[(size_t)b * K + k] = (real)(g * (prob - q));
        }
    }
}

/* ------------------------------------------------------------------------------------
 * Elementwise helpers (may run in place). */

/* out = a + b: the residual connection. */
void NAME(add)(real *out, const real *a, const real *b, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (real)((double)a[i] + (double)b[i]);
}

/* x *= s. */
void NAME(scale)(real *x, size_t n, real s) {
    for (size_t i = 0; i < n; i++) x[i] = (real)((double)x[i] * (double)s);
}

/* ------------------------------------------------------------------------------------
 * Optimizers */

/* One AdamW step t >= 1 (Loshchilov & Hutter 2019; torch.optim.AdamW, the
 * single-tensor path): decoupled weight decay p *= 1 - lr*wd first, then
 * m, v moving averages and the bias-corrected update
 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
void NAME(adamw_step)(real *param, real *m, real *v, const real *grad, size_t n, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int t) {
    double b1 = beta1, b2 = beta2;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i];
        double p = (double)param[i] * (1.0 - (double)lr * (double)weight_decay);
        double mi = b1 * (double)m[i] + (1.0 - b1) * g;
        double vi = b2 * (double)v[i] + (1.0 - b2) * g * g;
        p -= (double)lr * (mi / bc1) / (sqrt(vi / bc2) + (double)eps);
        m[i] = (real)mi;
        v[i] = (real)vi;
        param[i] = (real)p;
    }
}

/* One SGD step (torch.optim.SGD with dampening 0): g' = g + wd p;
 * buf = first ? g' : momentum buf + g'; d = nesterov ? g' + momentum buf : buf;
 * p -= lr d. With momentum == 0, d = g' and buf is not touched. */
void NAME(sgd_step)(real *param, real *buf, const real *grad, size_t n, real lr,
                    real momentum, real weight_decay, int nesterov, int first) {
    double mu = (double)momentum;
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i] + (double)weight_decay * (double)param[i];
        double d = g;
        if (mu != 0.0) {
            double bi = first ? g : mu * (double)buf[i] + g;
            buf[i] = (real)bi;
            d = nesterov ? g + mu * bi : bi;
        }
        param[i] = (real)((double)param[i] - (double)lr * d);
    }
}

/* ------------------------------------------------------------------------------------
 * Reductions */

/* sum_i x_i^2 in double (the squared global gradient norm is the sum of these). */
double NAME(sum_squares)(const real *x, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}

/* Top-1 correct count: rows whose argmax (first index on ties, as torch.argmax)
 * equals the target. */
int64_t NAME(accuracy_count)(const real *logits, const int32_t *targets, int B, int K) {
    int64_t correct = 0;
    for (int b = 0; b < B; b++) {
        const real *z = logits + (size_t)b * K;
        int best = 0;
        for (int k = 1; k < K; k++) if (z[k] > z[best]) best = k;
        if (best == targets[b]) correct++;
    }
    return correct;
}

/* ------------------------------------------------------------------------------------
 * bf16 mixed precision (precision = 'bf16'): the same ops with bf16 operands
 * or outputs. A bf16 operand is rounded from real as it is read; the products
 * of bf16 values are exact in double and summed in double, as everything here. */

#ifndef LUNAR_REF_IMPL_BF16
#define LUNAR_REF_IMPL_BF16
/* x to bf16, through float (nearest even; NaN stays a quiet NaN): the rounding
 * of lunar_f32_to_bf16, repeated so that ref.c needs only rng.c. For a double
 * x the two roundings can differ from one rounding in a tie of the float's
 * last bits, far below any bf16 tolerance. */
static uint16_t lunar_ref_to_bf16(double x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static double lunar_ref_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return (double)f;
}
#endif /* LUNAR_REF_IMPL_BF16 */

/* Element i of an operand that is real (rounded to bf16 here) or bf16. */
static double NAME(bf16_operand)(const void *x, int is_bf16, size_t i) {
    if (is_bf16) return lunar_ref_from_bf16(((const uint16_t *)x)[i]);
    return lunar_ref_from_bf16(lunar_ref_to_bf16((double)((const real *)x)[i]));
}

/* out[M,N] = bf16(inp) @ weight^T + bias, summed in double; out real, or bf16 (out_bf16)
 * rounded once from the double sum. */
void NAME(linear_forward_bf16)(void *out, int out_bf16, const void *inp, int inp_bf16,
                               const uint16_t *weight, const real *bias, int M, int K, int N) {
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            double sum = bias ? (double)bias[n] : 0.0;
            for (int k = 0; k < K; k++) {
                sum += NAME(bf16_operand)(inp, inp_bf16, (size_t)m * K + k) *
                       lunar_ref_from_bf16(weight[(size_t)n * K + k]);
            }
            if (out_bf16) ((uint16_t *)out)[(size_t)m * N + n] = lunar_ref_to_bf16(sum);
            else ((real *)out)[(size_t)m * N + n] = (real)sum;
        }
    }
}

/* dinp = bf16(dout) @ weight (when dinp); dweight += bf16(dout)^T @ bf16(inp);
 * dbias += column sums of dout as they are (when dbias). */
void NAME(linear_backward_bf16)(real *dinp, real *dweight, real *dbias, const void *dout,
                                int dout_bf16, const void *inp, int inp_bf16,
                                const uint16_t *weight, int M, int K, int N) {
    if (dinp) {
        for (int m = 0; m < M; m++) {
            for (int k = 0; k < K; k++) {
                double sum = 0.0;
                for (int n = 0; n < N; n++) {
                    sum += NAME(bf16_operand)(dout, dout_bf16, (size_t)m * N + n) *
                           lunar_ref_from_bf16(weight[(size_t)n * K + k]);
                }
                dinp[(size_t)m * K + k] = (real)sum;
            }
        }
    }
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            double sum = 0.0;
            for (int m = 0; m < M; m++) {
                sum += NAME(bf16_operand)(dout, dout_bf16, (size_t)m * N + n) *
                       NAME(bf16_operand)(inp, inp_bf16, (size_t)m * K + k);
            }
            dweight[(size_t)n * K + k] += (real)sum;
        }
    }
    if (dbias) {
        for (int n = 0; n < N; n++) {
            double sum = 0.0;
            for (int m = 0; m < M; m++) {
                size_t i = (size_t)m * N + n;
                sum += dout_bf16 ? lunar_ref_from_bf16(((const uint16_t *)dout)[i]) : (double)((const real *)dout)[i];
            }
            dbias[n] += (real)sum;
        }
    }
}

/* layernorm_forward, then out rounded to bf16 (mean and rstd as layernorm_forward). */
void NAME(layernorm_forward_bf16)(uint16_t *out, real *mean, real *rstd, const real *inp,
                                  const real *weight, const real *bias, int M, int C, real eps) {
    real *row = malloc((size_t)(C > 0 ? C : 1) * sizeof *row);
    if (!row) return;  /* the oracle runs in tests on small rows */
    for (int m = 0; m < M; m++) {
        NAME(layernorm_forward)(row, mean + m, rstd + m,
                                inp + (size_t)m * C, weight, bias, 1, C, eps);
        for (int c = 0; c < C; c++) out[(size_t)m * C + c] = lunar_ref_to_bf16((double)row[c]);
    }
    free(row);
}

/* gelu_forward of inp (real, or bf16 when inp_bf16), then rounded to bf16. */
void NAME(gelu_forward_bf16)(uint16_t *out, const void *inp, int inp_bf16, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real x = inp_bf16 ? (real)lunar_ref_from_bf16(((const uint16_t *)inp)[i]) : ((const real *)inp)[i], y;
        NAME(gelu_forward)(&y, &x, 1);
        out[i] = lunar_ref_to_bf16((double)y);
    }
}

/* gelu_backward of the bf16 input widened to real. */
void NAME(gelu_backward_bf16)(real *dinp, const real *dout, const uint16_t *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real x = (real)lunar_ref_from_bf16(inp[i]);
        NAME(gelu_backward)(dinp + i, dout + i, &x, 1);
    }
}

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

/* out = bf16(x). */
void NAME(cast_bf16)(uint16_t *out, const real *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = lunar_ref_to_bf16((double)x[i]);
}

/* adamw_step, then the bf16 working copy of the updated parameter. */
void NAME(adamw_step_bf16)(real *param, uint16_t *param_bf16, real *m, real *v, const real *grad,
                           size_t n, double lr, double beta1, double beta2, double eps,
                           double weight_decay, int t) {
    NAME(adamw_step)(param, m, v, grad, n, lr, beta1, beta2, eps, weight_decay, t);
    NAME(cast_bf16)(param_bf16, param, n);
}

/* sgd_step, then the bf16 working copy of the updated parameter. */
void NAME(sgd_step_bf16)(real *param, uint16_t *param_bf16, real *buf, const real *grad, size_t n,
                         real lr, real momentum, real weight_decay, int nesterov, int first) {
    NAME(sgd_step)(param, buf, grad, n, lr, momentum, weight_decay, nesterov, first);
    NAME(cast_bf16)(param_bf16, param, n);
}
