/*
 * core/ops/ref/elementwise.c: the reference kernels of the elementwise helpers (add, scale, the bf16 cast) and the sum of squares:
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_elementwise.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "elementwise.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

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
 * Reductions */

/* sum_i x_i^2 in double (the squared global gradient norm is the sum of these). */
double NAME(sum_squares)(const real *x, size_t n) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += (double)x[i] * (double)x[i];
    return sum;
}

/* out = bf16(x). */
void NAME(cast_bf16)(uint16_t *out, const real *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = lunar_ref_to_bf16((double)x[i]);
}

#endif /* LUNAR_REF_GENERIC */
