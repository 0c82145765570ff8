/*
 * core/ops/cpu/activation.c: the pointwise activations of kernels.h on the CPU
 * (ReLU, SiLU, tanh-approximated GELU), forward and backward, in f32 with libm's
 * expf over OpenMP-parallel loops (the compiler vectorizes ReLU). In place allowed.
 * The tanh GELU uses 1 + tanh(u) = 2 / (1 + exp(-2u)) and 1 - tanh(u)^2 = p (2 - p),
 * p = 1 + tanh(u), so its left tail (where 1 + tanhf(u) would cancel: x = -5 gives
 * p = 4e-7) keeps f32's relative accuracy. Tested against core/ops/ref/activation.c by tests/c/test_activation.c.
 */
#include <math.h>

#include "lunar/kernels.h"
#include "simd.h"

#define BETA 0.7978845608028654f   /* sqrt(2/pi) */
#define KAPPA 0.044715f

void lunar_cpu_activation_forward(float *out, const float *inp, size_t n, int kind) {
    if (kind == LUNAR_ACT_RELU) {
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
    } else if (kind == LUNAR_ACT_SILU) {
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) out[i] = inp[i] / (1.0f + expf(-inp[i]));
    } else {
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            out[i] = x / (1.0f + expf(-2.0f * BETA * (x + KAPPA * x * x * x)));   /* 0.5 x (1 + tanh u) */
        }
    }
}

void lunar_cpu_activation_backward(float *dinp, const float *dout, const float *inp, size_t n, int kind) {
    if (kind == LUNAR_ACT_RELU) {
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
    } else if (kind == LUNAR_ACT_SILU) {
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) {
            float x = inp[i], s = 1.0f / (1.0f + expf(-x));
            dinp[i] = dout[i] * s * (1.0f + x * (1.0f - s));
        }
    } else {
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) {
            float x = inp[i], p = 2.0f / (1.0f + expf(-2.0f * BETA * (x + KAPPA * x * x * x)));   /* 1 + tanh u */
            float du = BETA * (1.0f + 3.0f * KAPPA * x * x);
            dinp[i] = dout[i] * (0.5f * p + 0.5f * x * (p * (2.0f - p)) * du);
        }
    }
}
