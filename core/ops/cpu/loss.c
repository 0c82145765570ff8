/*
 * core/ops/cpu/loss.c: softmax cross-entropy with label smoothing on the CPU
 * (kernels.h). Per row: the max, then one pass of exp(z - max) (AVX-512 exp,
 * lanes summed in double), lse = max + log(sum); the loss of a row is
 * lse - (1 - eps) z_t - (eps / K) sum_k z_k in double. The mean sums rows in
 * fixed blocks of 64 (double partials, in block order): the same for any thread
 * count. Also the top-1 correct count (accuracy_count).
 */
#include <math.h>

#include "lunar/kernels.h"
#include "simd.h"

#define CE_BLOCK 64

static float row_max(const float *z, int K) {
#ifdef __AVX512F__
    __m512 v = _mm512_set1_ps(-INFINITY);
    for (int k = 0; k < K; k += 16) {
        __mmask16 m = lunar_mask16(K - k);
        v = _mm512_max_ps(v, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, z + k));
    }
    return lunar_hmax(v);
#else
    float mx = -INFINITY;
    for (int k = 0; k < K; k++) mx = z[k] > mx ? z[k] : mx;
    return mx;
#endif
}

/* sum_k exp(z_k - mx) in double; e[k] = exp(z_k - mx) when e is not NULL. Also
 * *zsum = sum_k z_k in double. */
static double row_sumexp(float *e, const float *z, int K, float mx, double *zsum) {
#ifdef __AVX512F__
    __m512 vm = _mm512_set1_ps(mx);
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    __m512d z0 = _mm512_setzero_pd(), z1 = _mm512_setzero_pd();
    for (int k = 0; k < K; k += 16) {
        __mmask16 m = lunar_mask16(K - k);
        __m512 x = _mm512_maskz_loadu_ps(m, z + k);
        __m512 ex = _mm512_maskz_mov_ps(m, lunar_exp512(_mm512_sub_ps(x, vm)));
        if (e) _mm512_mask_storeu_ps(e + k, m, ex);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(ex)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(ex, 1)));
        z0 = _mm512_add_pd(z0, _mm512_cvtps_pd(_mm512_castps512_ps256(x)));
        z1 = _mm512_add_pd(z1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(x, 1)));
    }
    *zsum = _mm512_reduce_add_pd(_mm512_add_pd(z0, z1));
    return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
#else
    double s = 0.0, zs = 0.0;
    for (int k = 0; k < K; k++) {
        float ex = expf(z[k] - mx);
        if (e) e[k] = ex;
        s += (double)ex;
        zs += (double)z[k];
    }
    *zsum = zs;
    return s;
#endif
}

static double row_loss(const float *z, int t, int K, double eps) {
    float mx = row_max(z, K);
    double zsum;
    double s = row_sumexp(NULL, z, K, mx, &zsum);
    double lse = (double)mx + log(s);
    return lse - (1.0 - eps) * (double)z[t] - eps / K * zsum;
}

void lunar_cpu_cross_entropy_forward(float *loss, float *losses, const float *logits,
                                     const int32_t *targets, int B, int K, float smoothing) {
    if (B <= 0) {
        if (loss) *loss = NAN;
        return;
    }
    const double eps = (double)smoothing;
    const int nblk = (B + CE_BLOCK - 1) / CE_BLOCK;
    double part_stack[256];
    double *part = nblk <= 256 ? part_stack : NULL;
    /* more than 256 blocks: sum every row's double loss in order instead */
    LUNAR_OMP(omp parallel for schedule(static) if (part && (size_t)B * K >= LUNAR_PAR_MIN))
    for (int blk = 0; blk < (part ? nblk : 0); blk++) {
        int b0 = blk * CE_BLOCK, b1 = b0 + CE_BLOCK < B ? b0 + CE_BLOCK : B;
        double s = 0.0;
        for (int b = b0; b < b1; b++) {
            double lb = row_loss(logits + (size_t)b * K, targets[b], K, eps);
            if (losses) losses[b] = (float)lb;
            s += lb;
        }
        part[blk] = s;
    }
    double total = 0.0;
    if (part) {
        for (int blk = 0; blk < nblk; blk++) total += part[blk];
    } else {
        for (int b = 0; b < B; b++) {
            double lb = row_loss(logits + (size_t)b * K, targets[b], K, eps);
            if (losses) losses[b] = (float)lb;
            total += lb;
        }
    }
    if (loss) *loss = (float)(total / B);
}

void lunar_cpu_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets,
                                      int B, int K, float smoothing, float dloss) {
    if (B <= 0) return;
    const float g = (float)((double)dloss / B);
    const float qo = (float)((double)smoothing / K);                /* q off target */
    const float qt = (float)(1.0 - (double)smoothing + (double)smoothing / K); /* q at target */
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)B * K >= LUNAR_PAR_MIN))
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        float *d = dlogits + (size_t)b * K;
        float mx = row_max(z, K);
        double zsum;
        float inv = (float)(1.0 / row_sumexp(d, z, K, mx, &zsum));
        const int t = targets[b];
        LUNAR_SIMD
        for (int k = 0; k < K; k++) d[k] = g * (d[k] * inv - (k == t ? qt : qo));
    }
}

/* Top-1 correct count: rows whose argmax (first index on ties) equals the target. */
int64_t lunar_cpu_accuracy_count(const float *logits, const int32_t *targets, int B, int K) {
    int64_t correct = 0;
    LUNAR_OMP(omp parallel for schedule(static) reduction(+ : correct) if ((size_t)B * K >= LUNAR_PAR_MIN))
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        int best = 0;
        for (int k = 1; k < K; k++) if (z[k] > z[best]) best = k;
        if (best == targets[b]) correct++;
    }
    return correct;
}
