/*
 * core/ops/cpu/rmsnorm.c: RMSNorm of kernels.h on the CPU (torch.nn.RMSNorm over the
 * last dim), f32 with double row sums; rows in parallel (OpenMP) in forward and for dinp,
 * and dweight by columns over the rows in a fixed order, so the result does not depend
 * on the thread count. Tested against core/ops/ref/rmsnorm.c by tests/c/test_rmsnorm.c.
 */
#include <math.h>

#include "lunar/kernels.h"
#include "simd.h"

void lunar_cpu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int M, int C,
                               float eps) {
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * C >= LUNAR_PAR_MIN))
    for (int m = 0; m < M; m++) {
        const float *x = inp + (size_t)m * C;
        double ss = 0.0;
        for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
        float rs = (float)(1.0 / sqrt(ss / C + (double)eps));
        float *y = out + (size_t)m * C;
        for (int c = 0; c < C; c++) y[c] = x[c] * rs * weight[c];
        rstd[m] = rs;
    }
}

void lunar_cpu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                const float *weight, const float *rstd, int M, int C) {
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * C >= LUNAR_PAR_MIN))
    for (int m = 0; m < M; m++) {
        const float *x = inp + (size_t)m * C, *dy = dout + (size_t)m * C;
        double gx = 0.0;
        for (int c = 0; c < C; c++) gx += (double)dy[c] * weight[c] * x[c];
        float r = rstd[m], k = (float)(gx / C) * r * r;
        float *dx = dinp + (size_t)m * C;
        for (int c = 0; c < C; c++) dx[c] = r * (dy[c] * weight[c] - x[c] * k);
    }
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * C >= LUNAR_PAR_MIN))
    for (int c = 0; c < C; c++) {
        double acc = 0.0;
        for (int m = 0; m < M; m++) acc += (double)dout[(size_t)m * C + c] * inp[(size_t)m * C + c] * rstd[m];
        dweight[c] += (float)acc;
    }
}
