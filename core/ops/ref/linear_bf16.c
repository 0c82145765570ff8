/*
 * core/ops/ref/linear_bf16.c: the reference kernels of the linear layer with bf16 operands or output (precision = 'bf16'):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_linear_bf16.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "linear_bf16.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

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

#endif /* LUNAR_REF_GENERIC */
