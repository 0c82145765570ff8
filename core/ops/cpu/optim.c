/*
 * core/ops/cpu/optim.c: the optimizer steps on the CPU (kernels.h), fused into
 * one pass over param, state and grad, in PyTorch's order of operations
 * (torch.optim.AdamW and SGD, single-tensor path) with the scalars that Python
 * computes in double (bias corrections, 1 - lr wd) computed once in double and
 * rounded to float. Elementwise, split over threads. The *_step_bf16 variants
 * (precision = 'bf16') also write the bf16 working copy (end of the file).
 */
#include <math.h>

#include "lunar/kernels.h"
#include "simd.h"

void lunar_cpu_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr_d,
                          double beta1_d, double beta2_d, double eps_d, double weight_decay, int t) {
    /* from the double scalars (a float beta2 = 0.999 would make 1 - beta2 off by 1.3e-5) */
    const double bc1 = 1.0 - pow(beta1_d, t), bc2 = 1.0 - pow(beta2_d, t);
    const float decay = (float)(1.0 - lr_d * weight_decay);
    const float omb1 = (float)(1.0 - beta1_d), omb2 = (float)(1.0 - beta2_d);
    const float step = (float)(lr_d / bc1), bc2s = (float)sqrt(bc2);
    const float beta1 = (float)beta1_d, beta2 = (float)beta2_d, eps = (float)eps_d;
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

/* ---- with the bf16 working copy (precision = 'bf16') ---------------------------------
 * The step above on chunks small enough to stay in L2 (each below LUNAR_PAR_MIN, so
 * the step runs on one thread inside the chunk loop), each chunk's updated master
 * weights rounded to bf16 right after: the same fp32 update bit for bit, and the
 * bf16 copy written while the chunk is still in cache. */
#define BF16_CHUNK 16384

void lunar_cpu_adamw_step_bf16(float *param, uint16_t *param_bf16, float *m, float *v, const float *grad,
                               size_t n, double lr, double beta1, double beta2, double eps,
                               double weight_decay, int t) {
    const size_t nch = (n + BF16_CHUNK - 1) / BF16_CHUNK;
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t c = 0; c < nch; c++) {
        size_t i = c * BF16_CHUNK, len = n - i < BF16_CHUNK ? n - i : BF16_CHUNK;
        lunar_cpu_adamw_step(param + i, m + i, v + i, grad + i, len, lr, beta1, beta2, eps, weight_decay, t);
        lunar_cpu_cast_bf16(param_bf16 + i, param + i, len);
    }
}

void lunar_cpu_sgd_step_bf16(float *param, uint16_t *param_bf16, float *buf, const float *grad, size_t n,
                             float lr, float momentum, float weight_decay, int nesterov, int first) {
    const size_t nch = (n + BF16_CHUNK - 1) / BF16_CHUNK;
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t c = 0; c < nch; c++) {
        size_t i = c * BF16_CHUNK, len = n - i < BF16_CHUNK ? n - i : BF16_CHUNK;
        lunar_cpu_sgd_step(param + i, buf ? buf + i : NULL, grad + i, len, lr, momentum, weight_decay, nesterov,
                           first);
        lunar_cpu_cast_bf16(param_bf16 + i, param + i, len);
    }
}
