/*
 * core/ops/cpu/optim.c: the optimizer steps on the CPU (kernels.h), fused into
 * one pass over param, state and grad, in PyTorch's order of operations
 * (torch.optim.AdamW and SGD, single-tensor path) with the scalars that Python
 * computes in double (bias corrections, 1 - lr wd) computed once in double and
 * rounded to float. Elementwise, split over threads.
 */
#include <math.h>

#include "lunar/kernels.h"
#include "simd.h"

void lunar_cpu_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, float lr,
                          float beta1, float beta2, float eps, float weight_decay, int t) {
    const double bc1 = 1.0 - pow((double)beta1, t), bc2 = 1.0 - pow((double)beta2, t);
    const float decay = (float)(1.0 - (double)lr * (double)weight_decay);
    const float omb1 = (float)(1.0 - (double)beta1), omb2 = (float)(1.0 - (double)beta2);
    const float step = (float)((double)lr / bc1), bc2s = (float)sqrt(bc2);
#ifdef __AVX512F__
    const __m512 vdecay = _mm512_set1_ps(decay), vb1 = _mm512_set1_ps(beta1),
                 vb2 = _mm512_set1_ps(beta2), vomb1 = _mm512_set1_ps(omb1),
                 vomb2 = _mm512_set1_ps(omb2), vstep = _mm512_set1_ps(step),
                 vbc2s = _mm512_set1_ps(bc2s), veps = _mm512_set1_ps(eps);
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = lunar_mask16(n - i < 16 ? (int)(n - i) : 16);
        __m512 g = _mm512_maskz_loadu_ps(k, grad + i);
        __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, param + i), vdecay);
        __m512 mi = _mm512_add_ps(_mm512_mul_ps(vb1, _mm512_maskz_loadu_ps(k, m + i)),
                                  _mm512_mul_ps(vomb1, g));
        __m512 vi = _mm512_add_ps(_mm512_mul_ps(vb2, _mm512_maskz_loadu_ps(k, v + i)),
                                  _mm512_mul_ps(_mm512_mul_ps(vomb2, g), g));
        __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbc2s), veps);
        p = _mm512_sub_ps(p, _mm512_mul_ps(vstep, _mm512_div_ps(mi, den)));
        _mm512_mask_storeu_ps(m + i, k, mi);
        _mm512_mask_storeu_ps(v + i, k, vi);
        _mm512_mask_storeu_ps(param + i, k, p);
    }
#else
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) {
        float g = grad[i];
        float p = param[i] * decay;
        float mi = beta1 * m[i] + omb1 * g;
        float vi = beta2 * v[i] + omb2 * g * g;
        float den = sqrtf(vi) / bc2s + eps;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step * (mi / den);
    }
#endif
}

void lunar_cpu_sgd_step(float *param, float *buf, const float *grad, size_t n, float lr,
                        float momentum, float weight_decay, int nesterov, int first) {
    const float wd = weight_decay, mu = momentum;
    if (momentum == 0.0f) {
        LUNAR_OMP(omp parallel for simd schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i++) {
            float g = wd != 0.0f ? grad[i] + wd * param[i] : grad[i];
            param[i] = param[i] - lr * g;
        }
        return;
    }
    LUNAR_OMP(omp parallel for simd schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) {
        float g = wd != 0.0f ? grad[i] + wd * param[i] : grad[i];
        float b = first ? g : mu * buf[i] + g;
        float d = nesterov ? g + mu * b : b;
        buf[i] = b;
        param[i] = param[i] - lr * d;
    }
}
