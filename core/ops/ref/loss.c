/*
 * core/ops/ref/loss.c: the reference kernels of cross-entropy with label smoothing, and the top-1 correct count:
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_loss.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "loss.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * Cross-entropy with label smoothing (Szegedy et al. 2016, "Rethinking the
 * Inception Architecture"; torch.nn.functional.cross_entropy(label_smoothing=eps),
 * reduction='mean'): q = (1 - eps) onehot(t) + eps / K. */

/* losses[b] = -sum_k q_k log softmax(logits[b])_k, log softmax through a
 * max-subtracted log-sum-exp; *loss = mean over b. */
void NAME(cross_entropy_forward)(real *loss, real *losses, const real *logits,
                                 const int32_t *targets, int B, int K, real smoothing) {
    double eps = (double)smoothing, total = 0.0;
    for (int b = 0; b < B; b++) {
        const real *z = logits + (size_t)b * K;
        double max = -INFINITY;
        for (int k = 0; k < K; k++) if ((double)z[k] > max) max = (double)z[k];
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += exp((double)z[k] - max);
        double lse = max + log(sum);
        double lb = 0.0;
        for (int k = 0; k < K; k++) {
            double q = (k == targets[b] ? 1.0 - eps : 0.0) + eps / K;
            lb -= q * ((double)z[k] - lse);
        }
        if (losses) losses[b] = (real)lb;
        total += lb;
    }
    *loss = (real)(total / B);
}

/* dlogits[b, k] = dloss / B * (softmax(logits[b])_k - q_k), overwritten. */
void NAME(cross_entropy_backward)(real *dlogits, const real *logits, const int32_t *targets,
                                  int B, int K, real smoothing, real dloss) {
    double eps = (double)smoothing, g = (double)dloss / B;
    for (int b = 0; b < B; b++) {
        const real *z = logits + (size_t)b * K;
        double max = -INFINITY;
        for (int k = 0; k < K; k++) if ((double)z[k] > max) max = (double)z[k];
        double sum = 0.0;
        for (int k = 0; k < K; k++) sum += exp((double)z[k] - max);
        for (int k = 0; k < K; k++) {
            double prob = exp((double)z[k] - max) / sum;
            double q = (k == targets[b] ? 1.0 - eps : 0.0) + eps / K;
            dlogits[(size_t)b * K + k] = (real)(g * (prob - q));
        }
    }
}

/* Top-1 correct count: rows whose argmax (first index on ties, as torch.argmax)
 * equals the target. */
int64_t NAME(accuracy_count)(const real *logits, const int32_t *targets, int B, int K) {
    int64_t correct = 0;
    for (int b = 0; b < B; b++) {
        const real *z = logits + (size_t)b * K;
        int best = 0;
        for (int k = 1; k < K; k++) if (z[k] > z[best]) best = k;
        if (best == targets[b]) correct++;
    }
    return correct;
}

#endif /* LUNAR_REF_GENERIC */
