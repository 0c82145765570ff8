/*
 * core/ops/cpu/attention_block.c: one block of blockwise attention, the step of
 * ring attention (Liu et al. 2023, "Ring Attention with Blockwise Transformers
 * for Near-Infinite Context", arXiv 2310.01889; the online softmax of
 * FlashAttention, Dao et al. 2022, Alg. 1 and 4) used by domain parallelism
 * (lua/lunar/parallel/domain.lua): the queries of this rank's tokens against
 * one block of keys and values (this rank's or another rank's).
 *
 * Layouts (timm's): q is read from a fused qkv [B, Nq, 3, H, D] (its q part);
 * the key/value block is kv [B, Nk, 2, H, D]; out [B, Nq, H, D]; lse [B, H, Nq]
 * the log-sum-exp of each query row's scaled scores (scale = D^-1/2).
 *
 * Forward, accumulate = 0: out, lse of the block alone. accumulate = 1: the
 * block's result merged into the running (out, lse) through the log-sum-exp:
 * lse' = log(e^lse + e^lse_b), out' = out e^(lse - lse') + out_b e^(lse_b - lse').
 * After every block the running pair equals softmax attention over all keys.
 *
 * Backward (FlashAttention's, with the final out and lse of all blocks): for
 * each query row i and key j of the block, p = exp(s_ij - lse_i),
 * dV_j += p dO_i, dS = p (dO_i . v_j - delta_i) with delta_i = dO_i . out_i,
 * dQ_i += scale dS k_j (into the q part of dqkv), dK_j += scale dS q_i.
 * dqkv's q part and dkv are accumulated (+=), nothing else is written.
 *
 * f32 on the CPU, OpenMP over the (image, head) pairs: a pair is computed by
 * one thread in a fixed order, so results do not depend on the thread count.
 * No [Nq, Nk] matrix: one row of scores per query at a time.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/kernels.h"

void lunar_cpu_attention_block_forward(float *out, float *lse, const float *qkv, const float *kv, int B, int Nq,
                                       int Nk, int H, int D, int accumulate) {
    const float scale = 1.0f / sqrtf((float)D);
    const ptrdiff_t qrow = (ptrdiff_t)3 * H * D, kvrow = (ptrdiff_t)2 * H * D, orow = (ptrdiff_t)H * D;
#pragma omp parallel
    {
        float *s = malloc(sizeof(float) * (size_t)(Nk > 0 ? Nk : 1));
        float *acc = malloc(sizeof(float) * (size_t)D);
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            int b = bh / H, h = bh % H;
            for (int i = 0; i < Nq; i++) {
                const float *q = qkv + ((ptrdiff_t)b * Nq + i) * qrow + (ptrdiff_t)h * D;
                float m = -INFINITY;
                for (int j = 0; j < Nk; j++) {
                    const float *k = kv + ((ptrdiff_t)b * Nk + j) * kvrow + (ptrdiff_t)h * D;
                    float dot = 0.0f;
                    for (int d = 0; d < D; d++) dot += q[d] * k[d];
                    s[j] = dot * scale;
                    if (s[j] > m) m = s[j];
                }
                float l = 0.0f;
                for (int d = 0; d < D; d++) acc[d] = 0.0f;
                for (int j = 0; j < Nk; j++) {
                    float p = expf(s[j] - m);
                    l += p;
                    const float *v = kv + ((ptrdiff_t)b * Nk + j) * kvrow + (ptrdiff_t)(H + h) * D;
                    for (int d = 0; d < D; d++) acc[d] += p * v[d];
                }
                float blse = m + logf(l);
                float *o = out + ((ptrdiff_t)b * Nq + i) * orow + (ptrdiff_t)h * D;
                float *L = lse + ((ptrdiff_t)b * H + h) * Nq + i;
                if (!accumulate) {
                    for (int d = 0; d < D; d++) o[d] = acc[d] / l;
                    *L = blse;
                } else {
                    float old = *L, mx = old > blse ? old : blse;
                    float nl = mx + logf(expf(old - mx) + expf(blse - mx));
                    float wo = expf(old - nl), wb = expf(blse - nl) / l;
                    for (int d = 0; d < D; d++) o[d] = o[d] * wo + acc[d] * wb;
                    *L = nl;
                }
            }
        }
        free(s);
        free(acc);
    }
}

void lunar_cpu_attention_block_backward(float *dqkv, float *dkv, const float *dout, const float *qkv, const float *kv,
                                        const float *out, const float *lse, int B, int Nq, int Nk, int H, int D) {
    const float scale = 1.0f / sqrtf((float)D);
    const ptrdiff_t qrow = (ptrdiff_t)3 * H * D, kvrow = (ptrdiff_t)2 * H * D, orow = (ptrdiff_t)H * D;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int i = 0; i < Nq; i++) {
            const float *q = qkv + ((ptrdiff_t)b * Nq + i) * qrow + (ptrdiff_t)h * D;
            float *dq = dqkv + ((ptrdiff_t)b * Nq + i) * qrow + (ptrdiff_t)h * D;
            const float *go = dout + ((ptrdiff_t)b * Nq + i) * orow + (ptrdiff_t)h * D;
            const float *o = out + ((ptrdiff_t)b * Nq + i) * orow + (ptrdiff_t)h * D;
            float L = lse[((ptrdiff_t)b * H + h) * Nq + i];
            float delta = 0.0f;
            for (int d = 0; d < D; d++) delta += go[d] * o[d];
            for (int j = 0; j < Nk; j++) {
                const float *k = kv + ((ptrdiff_t)b * Nk + j) * kvrow + (ptrdiff_t)h * D;
                const float *v = k + (ptrdiff_t)H * D;
                float *dk = dkv + ((ptrdiff_t)b * Nk + j) * kvrow + (ptrdiff_t)h * D;
                float *dv = dk + (ptrdiff_t)H * D;
                float dot = 0.0f, dp = 0.0f;
                for (int d = 0; d < D; d++) {
                    dot += q[d] * k[d];
                    dp += go[d] * v[d];
                }
                float p = expf(dot * scale - L);
                float ds = p * (dp - delta) * scale;
                for (int d = 0; d < D; d++) {
                    dv[d] += p * go[d];
                    dq[d] += ds * k[d];
                    dk[d] += ds * q[d];
                }
            }
        }
    }
}
