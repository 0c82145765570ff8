/*
 * core/ops/cpu/sdpa.c: general scaled dot-product attention on the CPU
 * (kernels.h lunar_cpu_sdpa_*: separate q, k, v of their own lengths and an
 * additive mask; nn.MultiheadAttention's masks and cross-attention). The
 * reference loops (core/ops/ref/sdpa.c, sums in double) run per image, the
 * images spread over the OpenMP threads: each image's result is computed by
 * one thread in a fixed order, so it is the same for any thread count and
 * equal to the f32 reference bit for bit. Not tuned: the fused self-attention
 * kernel (core/ops/cpu/attention.c) stays the fast path of unmasked
 * self-attention.
 */
#include <stddef.h>

#include "lunar/kernels.h"

void lunar_cpu_sdpa_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                            const float *bias, int B, int L, int S, int H, int D) {
    size_t ql = (size_t)L * H * D, kl = (size_t)S * H * D, bl = (size_t)H * L * S;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        lunar_ref_sdpa_forward_f32(out + b * ql, lse + (size_t)b * H * L, q + b * ql, k + b * kl, v + b * kl,
                                   bias ? bias + b * bl : NULL, 1, L, S, H, D);
}

void lunar_cpu_sdpa_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                             const float *v, const float *out, const float *lse, const float *bias, int B, int L,
                             int S, int H, int D) {
    size_t ql = (size_t)L * H * D, kl = (size_t)S * H * D, bl = (size_t)H * L * S;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++)
        lunar_ref_sdpa_backward_f32(dq + b * ql, dk + b * kl, dv + b * kl, dout + b * ql, q + b * ql, k + b * kl,
                                    v + b * kl, out + b * ql, lse + (size_t)b * H * L, bias ? bias + b * bl : NULL,
                                    1, L, S, H, D);
}
