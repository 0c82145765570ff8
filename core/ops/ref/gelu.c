/*
 * core/ops/ref/gelu.c: the reference kernels of exact GELU, forward and backward (and its bf16 variants):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_gelu.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "gelu.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * GELU, exact (Hendrycks & Gimpel 2016; torch.nn.GELU(approximate='none')).
 * Elementwise: out may alias inp, dinp may alias dout. */

/* out = x * Phi(x), Phi(x) = 0.5 * erfc(-x / sqrt(2)) (= 0.5 * (1 + erf(x / sqrt(2))),
 * without the cancellation of 1 + erf in the left tail, where x Phi(x) is still
 * a normal number down to x = -37). */
void NAME(gelu_forward)(real *out, const real *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = (double)inp[i];
        out[i] = (real)(0.5 * x * erfc(-x / sqrt(2.0)));
    }
}

/* dinp = dout * (Phi(x) + x * phi(x)), phi the standard normal density. */
void NAME(gelu_backward)(real *dinp, const real *dout, const real *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        double x = (double)inp[i];
        double cdf = 0.5 * erfc(-x / sqrt(2.0));
        double pdf = exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
        dinp[i] = (real)((double)dout[i] * (cdf + x * pdf));
    }
}

/* gelu_forward of inp (real, or bf16 when inp_bf16), then rounded to bf16. */
void NAME(gelu_forward_bf16)(uint16_t *out, const void *inp, int inp_bf16, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real x = inp_bf16 ? (real)lunar_ref_from_bf16(((const uint16_t *)inp)[i]) : ((const real *)inp)[i], y;
        NAME(gelu_forward)(&y, &x, 1);
        out[i] = lunar_ref_to_bf16((double)y);
    }
}

/* gelu_backward of the bf16 input widened to real; dinp real, or rounded to
 * bf16 (dinp_bf16). */
void NAME(gelu_backward_bf16)(void *dinp, int dinp_bf16, const real *dout, const uint16_t *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        real x = (real)lunar_ref_from_bf16(inp[i]), d;
        NAME(gelu_backward)(&d, dout + i, &x, 1);
        if (dinp_bf16) ((uint16_t *)dinp)[i] = lunar_ref_to_bf16((double)d);
        else ((real *)dinp)[i] = d;
    }
}

#endif /* LUNAR_REF_GENERIC */
