/*
 * core/ops/ref/activation.c: the reference kernels of the pointwise activations
 * (ReLU, SiLU, tanh-approximated GELU), forward and backward: lunar_ref_<op>_f64 and
 * lunar_ref_<op>_f32 of lunar/kernels.h, written once against `real` and NAME(op) and
 * compiled for double and float by generic.h (ref.h). Each value is computed in double
 * and rounded once. Tested by tests/c/test_activation.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "activation.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

#ifndef LUNAR_REF_ACT_ONCE
#define LUNAR_REF_ACT_ONCE
/* sqrt(2/pi) and the cubic coefficient of the tanh GELU (PyTorch's kBeta, kKappa). */
#define LUNAR_GELU_TANH_BETA 0.79788456080286535588
#define LUNAR_GELU_TANH_KAPPA 0.044715

/* act(x) in double. */
static double ref_act(double x, int kind) {
    switch (kind) {
    case LUNAR_ACT_RELU: return x > 0 ? x : 0.0;
    case LUNAR_ACT_SILU: return x / (1.0 + exp(-x));
    default: {   /* LUNAR_ACT_GELU_TANH: 0.5 x (1 + tanh u) = x / (1 + exp(-2u)), no cancellation in the left tail */
        double u = LUNAR_GELU_TANH_BETA * (x + LUNAR_GELU_TANH_KAPPA * x * x * x);
        return x / (1.0 + exp(-2.0 * u));
    }
    }
}

/* act'(x) in double: ReLU 1 for x > 0, else 0 (PyTorch's threshold_backward at 0);
 * SiLU s (1 + x (1 - s)), s = sigmoid(x); tanh GELU 0.5 (1 + t) + 0.5 x (1 - t^2) u'(x),
 * t = tanh u, through p = 1 + t = 2 / (1 + exp(-2u)) and 1 - t^2 = p (2 - p). */
static double ref_act_grad(double x, int kind) {
    switch (kind) {
    case LUNAR_ACT_RELU: return x > 0 ? 1.0 : 0.0;
    case LUNAR_ACT_SILU: {
        double s = 1.0 / (1.0 + exp(-x));
        return s * (1.0 + x * (1.0 - s));
    }
    default: {
        double u = LUNAR_GELU_TANH_BETA * (x + LUNAR_GELU_TANH_KAPPA * x * x * x);
        double p = 2.0 / (1.0 + exp(-2.0 * u));
        double du = LUNAR_GELU_TANH_BETA * (1.0 + 3.0 * LUNAR_GELU_TANH_KAPPA * x * x);
        return 0.5 * p + 0.5 * x * (p * (2.0 - p)) * du;
    }
    }
}
#endif

void NAME(activation_forward)(real *out, const real *inp, size_t n, int kind) {
    for (size_t i = 0; i < n; i++) out[i] = (real)ref_act((double)inp[i], kind);
}

void NAME(activation_backward)(real *dinp, const real *dout, const real *inp, size_t n, int kind) {
    for (size_t i = 0; i < n; i++) dinp[i] = (real)((double)dout[i] * ref_act_grad((double)inp[i], kind));
}

#endif /* LUNAR_REF_GENERIC */
