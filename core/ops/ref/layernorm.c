/*
 * core/ops/ref/layernorm.c: the reference kernels of LayerNorm, forward and backward (and the bf16 output of forward):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_layernorm.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "layernorm.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

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

#endif /* LUNAR_REF_GENERIC */
