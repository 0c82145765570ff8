/*
 * core/ops/cpu/layernorm.c: LayerNorm over the last dim on the CPU (kernels.h).
 *
 * Forward, per row (rows split over threads): one pass for the mean and the
 * biased variance, with sums of x - x[0] and (x - x[0])^2 (the shifted-data
 * algorithm, so a large mean does not cancel the variance away), then one pass
 * writing out. The row (C floats) stays in L1 between the two.
 * Backward, per row: one pass for mean_c(g) and mean_c(g * xhat), g = dout *
 * weight, one pass writing dinp and adding dout * xhat and dout into the
 * partial dweight/dbias of the row's block. Blocks are a fixed number of rows
 * (set by M only); the partials are summed in block order in double: the result
 * is the same for any thread count, run to run.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/kernels.h"
#include "lunar/tensor.h"   /* lunar_f32_to_bf16 */
#include "simd.h"

/* ---- forward ---------------------------------------------------------------- */

/* One row: y[C] (f32), or yb[C] (bf16, rounded as lunar_f32_to_bf16) when yb is set. */
static void ln_row_forward(float *y, uint16_t *yb, float *mean_out, float *rstd_out, const float *x,
                           const float *w, const float *bias, int C, float eps) {
    float shift = x[0], s1, s2;
#ifdef __AVX512F__
    __m512 vs = _mm512_set1_ps(shift);
    __m512 a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps();
    __m512 b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps();
    int c = 0;
    for (; c + 32 <= C; c += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + c), vs);
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(x + c + 16), vs);
        a1 = _mm512_add_ps(a1, d0);
        a2 = _mm512_fmadd_ps(d0, d0, a2);
        b1 = _mm512_add_ps(b1, d1);
        b2 = _mm512_fmadd_ps(d1, d1, b2);
    }
    for (; c < C; c += 16) {
        __mmask16 k = lunar_mask16(C - c);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vs);
        a1 = _mm512_add_ps(a1, d);
        a2 = _mm512_fmadd_ps(d, d, a2);
    }
    s1 = lunar_hsum(_mm512_add_ps(a1, b1));
    s2 = lunar_hsum(_mm512_add_ps(a2, b2));
#else
    double t1 = 0.0, t2 = 0.0; /* one accumulator: double keeps the sums exact enough */
    for (int c = 0; c < C; c++) {
        double d = (double)x[c] - (double)shift;
        t1 += d;
        t2 += d * d;
    }
    s1 = (float)t1;
    s2 = (float)t2;
#endif
    float md = s1 / (float)C;
    float var = s2 / (float)C - md * md;
    if (var < 0.0f) var = 0.0f;
    float mu = shift + md;
    float rs = 1.0f / sqrtf(var + eps);
    if (mean_out) *mean_out = mu;
    if (rstd_out) *rstd_out = rs;
#ifdef __AVX512F__
    __m512 vm = _mm512_set1_ps(mu), vr = _mm512_set1_ps(rs);
    for (c = 0; c < C; c += 16) {
        __mmask16 k = lunar_mask16(C - c);
        __m512 t = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        __m512 o = _mm512_fmadd_ps(t, _mm512_maskz_loadu_ps(k, w + c), _mm512_maskz_loadu_ps(k, bias + c));
        if (yb) _mm256_mask_storeu_epi16(yb + c, k, lunar_bf16x16(o));
        else _mm512_mask_storeu_ps(y + c, k, o);
    }
#else
    if (yb) for (int c = 0; c < C; c++) yb[c] = lunar_f32_to_bf16((x[c] - mu) * rs * w[c] + bias[c]);
    else for (int c = 0; c < C; c++) y[c] = (x[c] - mu) * rs * w[c] + bias[c];
#endif
}

void lunar_cpu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, int M, int C, float eps) {
    if (M <= 0 || C <= 0) return;
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * C >= LUNAR_PAR_MIN))
    for (int m = 0; m < M; m++) {
        ln_row_forward(out + (size_t)m * C, NULL, mean ? mean + m : NULL, rstd ? rstd + m : NULL,
                       inp + (size_t)m * C, weight, bias, C, eps);
    }
}

/* The same with out[M,C] rounded to bf16 as it is stored (precision = 'bf16'). */
void lunar_cpu_layernorm_forward_bf16(uint16_t *out, float *mean, float *rstd, const float *inp,
                                      const float *weight, const float *bias, int M, int C, float eps) {
    if (M <= 0 || C <= 0) return;
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * C >= LUNAR_PAR_MIN))
    for (int m = 0; m < M; m++) {
        ln_row_forward(NULL, out + (size_t)m * C, mean ? mean + m : NULL, rstd ? rstd + m : NULL,
                       inp + (size_t)m * C, weight, bias, C, eps);
    }
}

/* ---- backward ---------------------------------------------------------------- */

/* dinp of one row; adds dout * xhat to dw[C] and dout to db[C] (float partials)
 * unless dw is NULL. */
static void ln_row_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, float mu, float rs, int C) {
    float sg, sgx;
#ifdef __AVX512F__
    __m512 vm = _mm512_set1_ps(mu), vr = _mm512_set1_ps(rs);
    __m512 ag = _mm512_setzero_ps(), agx = _mm512_setzero_ps();
    for (int c = 0; c < C; c += 16) {
        __mmask16 k = lunar_mask16(C - c);
        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dy + c), _mm512_maskz_loadu_ps(k, w + c));
        ag = _mm512_add_ps(ag, g);
        agx = _mm512_fmadd_ps(g, xh, agx);
    }
    sg = lunar_hsum(ag);
    sgx = lunar_hsum(agx);
#else
    double t1 = 0.0, t2 = 0.0;
    for (int c = 0; c < C; c++) {
        float xh = (x[c] - mu) * rs, g = dy[c] * w[c];
        t1 += (double)g;
        t2 += (double)(g * xh);
    }
    sg = (float)t1;
    sgx = (float)t2;
#endif
    float mg = sg / (float)C, mgx = sgx / (float)C;
#ifdef __AVX512F__
    __m512 vmg = _mm512_set1_ps(mg), vmgx = _mm512_set1_ps(mgx);
    for (int c = 0; c < C; c += 16) {
        __mmask16 k = lunar_mask16(C - c);
        __m512 xh = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vr);
        __m512 d = _mm512_maskz_loadu_ps(k, dy + c);
        __m512 g = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(k, w + c));
        /* rstd * (g - mg - xhat * mgx) */
        __m512 t = _mm512_sub_ps(_mm512_sub_ps(g, vmg), _mm512_mul_ps(xh, vmgx));
        _mm512_mask_storeu_ps(dx + c, k, _mm512_mul_ps(t, vr));
        if (dw) {
            _mm512_mask_storeu_ps(dw + c, k, _mm512_fmadd_ps(d, xh, _mm512_maskz_loadu_ps(k, dw + c)));
            _mm512_mask_storeu_ps(db + c, k, _mm512_add_ps(d, _mm512_maskz_loadu_ps(k, db + c)));
        }
    }
#else
    for (int c = 0; c < C; c++) {
        float xh = (x[c] - mu) * rs, g = dy[c] * w[c];
        dx[c] = (g - mg - xh * mgx) * rs;
        if (dw) {
            dw[c] += dy[c] * xh;
            db[c] += dy[c];
        }
    }
#endif
}

/* Rows per block of the dweight/dbias partial sums: at least 64, at most 128 blocks. */
static int ln_block_rows(int M) {
    int r = (M + 127) / 128;
    return r < 64 ? 64 : r;
}

void lunar_cpu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight, const float *mean,
                                  const float *rstd, int M, int C) {
    if (M <= 0 || C <= 0) return;
    int rows = ln_block_rows(M);
    int nblk = (M + rows - 1) / rows;
    /* 2C doubles to combine the partials, then nblk x [dw C | db C] floats */
    size_t pstride = 2 * (size_t)C;
    double *acc = malloc(pstride * sizeof(double) + (size_t)nblk * pstride * sizeof(float));
    float *part = acc ? (float *)(acc + pstride) : NULL;
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * C >= LUNAR_PAR_MIN / 4))
    for (int blk = 0; blk < nblk; blk++) {
        float *dw = part ? part + (size_t)blk * pstride : NULL;
        int m0 = blk * rows, m1 = m0 + rows < M ? m0 + rows : M;
        if (dw) memset(dw, 0, pstride * sizeof(float));
        for (int m = m0; m < m1; m++) {
            ln_row_backward(dinp + (size_t)m * C, dw, dw ? dw + C : NULL, dout + (size_t)m * C,
                            inp + (size_t)m * C, weight, mean[m], rstd[m], C);
        }
    }
    if (part) {
        for (size_t j = 0; j < pstride; j++) acc[j] = 0.0;
        for (int blk = 0; blk < nblk; blk++) {
            const float *p = part + (size_t)blk * pstride;
            LUNAR_SIMD
            for (size_t j = 0; j < pstride; j++) acc[j] += (double)p[j];
        }
        if (dweight) for (int c = 0; c < C; c++) dweight[c] += (float)acc[c];
        if (dbias) for (int c = 0; c < C; c++) dbias[c] += (float)acc[C + c];
        free(acc);
        return;
    }
    /* out of memory for the partials: column sums without scratch (slow, same result
     * up to rounding) */
    for (int c = 0; c < C; c++) {
        double dw = 0.0, db = 0.0;
        for (int m = 0; m < M; m++) {
            float d = dout[(size_t)m * C + c];
            dw += (double)(d * ((inp[(size_t)m * C + c] - mean[m]) * rstd[m]));
            db += (double)d;
        }
        if (dweight) dweight[c] += (float)dw;
        if (dbias) dbias[c] += (float)db;
    }
}
