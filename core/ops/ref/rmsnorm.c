/*
 * core/ops/ref/rmsnorm.c: the reference kernels of RMSNorm (Zhang & Sennrich 2019;
 * torch.nn.RMSNorm over the last dim), forward and backward: lunar_ref_<op>_f64 and
 * lunar_ref_<op>_f32 of lunar/kernels.h, written once against `real` and NAME(op),
 * compiled for double and float by generic.h (ref.h); sums in double. Tested by
 * tests/c/test_rmsnorm.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "rmsnorm.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* out = x * rstd * weight per row of inp[M,C], rstd = 1/sqrt(mean(x^2) + eps); saves rstd[M]. */
void NAME(rmsnorm_forward)(real *out, real *rstd, const real *inp, const real *weight, int M, int C, real eps) {
    for (int m = 0; m < M; m++) {
        const real *x = inp + (size_t)m * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * (double)x[c];
        double rs = 1.0 / sqrt(ss / C + (double)eps);
        for (int c = 0; c < C; c++) out[(size_t)m * C + c] = (real)((double)x[c] * rs * (double)weight[c]);
        rstd[m] = (real)rs;
    }
}

/* With r = rstd and g = dout * weight: dx = r (g - x r^2 mean(g x)) (the derivative of
 * x r(x) through r's dependence on every x of the row); dweight += dout x r. */
void NAME(rmsnorm_backward)(real *dinp, real *dweight, const real *dout, const real *inp, const real *weight,
                            const real *rstd, int M, int C) {
    for (int m = 0; m < M; m++) {
        const real *x = inp + (size_t)m * C, *dy = dout + (size_t)m * C;
        double r = (double)rstd[m], gx = 0.0;
        for (int c = 0; c < C; c++) gx += (double)dy[c] * (double)weight[c] * (double)x[c];
        gx /= C;
        for (int c = 0; c < C; c++) {
            double g = (double)dy[c] * (double)weight[c];
            dinp[(size_t)m * C + c] = (real)(r * (g - (double)x[c] * r * r * gx));
            dweight[c] = (real)((double)dweight[c] + (double)dy[c] * (double)x[c] * r);
        }
    }
}

#endif /* LUNAR_REF_GENERIC */
