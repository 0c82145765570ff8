/*
 * core/ops/ref/linear.c: the reference kernels of the linear layer, forward and backward (torch.nn.functional.linear):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_linear.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "linear.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

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

#endif /* LUNAR_REF_GENERIC */
