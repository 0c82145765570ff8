/*
 * tests/c/test_loss.c: the kernels of cross-entropy with label smoothing and the top-1 correct count,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/loss.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/loss.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/loss.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_loss && build/tests/test_loss
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { CE_B = 4, CE_K = 5 };
typedef struct {
    double logits[CE_B * CE_K], smoothing, r;
    int32_t targets[CE_B];
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    double loss;
    lunar_ref_cross_entropy_forward_f64(&loss, NULL, c->logits, c->targets, CE_B, CE_K, c->smoothing);
    return loss * c->r;
}

static void ce_backward_case(double smoothing) {
    ce_ctx c = {.smoothing = smoothing, .targets = {0, 3, 4, 1}};
    fill(c.logits, CE_B * CE_K, -3, 3);
    c.r = rnd(0.5, 2);
    double dlogits[CE_B * CE_K], dlogits2[CE_B * CE_K];
    set(dlogits, CE_B * CE_K, GARBAGE);
    lunar_ref_cross_entropy_backward_f64(dlogits, c.logits, c.targets, CE_B, CE_K, smoothing, c.r);
    CHECK_FD(ce_loss, &c, c.logits, CE_B * CE_K, dlogits);
    set(dlogits2, CE_B * CE_K, -GARBAGE);
    lunar_ref_cross_entropy_backward_f64(dlogits2, c.logits, c.targets, CE_B, CE_K, smoothing, c.r);
    CHECK_SAME(dlogits2, dlogits, CE_B * CE_K);
    /* *loss is the mean of losses[] */
    double loss, losses[CE_B];
    lunar_ref_cross_entropy_forward_f64(&loss, losses, c.logits, c.targets, CE_B, CE_K, smoothing);
    CHECK_CLOSE(loss, (losses[0] + losses[1] + losses[2] + losses[3]) / CE_B, 1e-14, 0);
}

static void test_ref_cross_entropy_backward(void) { ce_backward_case(0.0); }

static void test_ref_cross_entropy_backward_smoothing(void) { ce_backward_case(0.1); }

/* uniform logits: every log-probability is -log K, whatever the smoothing */
static void test_ref_cross_entropy_uniform(void) {
    enum { B = 3, K = 10 };
    double logits[B * K], loss, losses[B];
    int32_t targets[B] = {0, 9, 4};
    set(logits, B * K, 0.7);
    lunar_ref_cross_entropy_forward_f64(&loss, losses, logits, targets, B, K, 0.0);
    CHECK_CLOSE(loss, log(K), 1e-14, 0);
    lunar_ref_cross_entropy_forward_f64(&loss, losses, logits, targets, B, K, 0.3);
    CHECK_CLOSE(loss, log(K), 1e-14, 0);
    CHECK_CLOSE(losses[2], log(K), 1e-14, 0);
}

/* two classes with softmax (1/4, 3/4), target 1, smoothing 0.2: q = (0.1, 0.9) */
static void test_ref_cross_entropy_hand(void) {
    double logits[2] = {0.0, log(3.0)}, loss;
    int32_t target = 1;
    lunar_ref_cross_entropy_forward_f64(&loss, NULL, logits, &target, 1, 2, 0.0);
    CHECK_CLOSE(loss, log(4.0 / 3.0), 1e-14, 0);
    lunar_ref_cross_entropy_forward_f64(&loss, NULL, logits, &target, 1, 2, 0.2);
    CHECK_CLOSE(loss, -(0.1 * log(0.25) + 0.9 * log(0.75)), 1e-14, 0);
    double dlogits[2];
    lunar_ref_cross_entropy_backward_f64(dlogits, logits, &target, 1, 2, 0.2, 1.0);
    CHECK_CLOSE(dlogits[0], 0.25 - 0.1, 1e-14, 1e-15);
    CHECK_CLOSE(dlogits[1], 0.75 - 0.9, 1e-14, 1e-15);
}

static void test_ref_accuracy_count(void) {
    /* row 0: tie between 1 and 2, first index wins; row 1: argmax 0;
     * row 2: argmax 3 (negative logits) */
    double logits[12] = {1, 3, 3, 0, 5, 4, 4, 4, -3, -2, -5, -1};
    int32_t t1[3] = {1, 0, 3}, t2[3] = {2, 0, 1};
    CHECK(lunar_ref_accuracy_count_f64(logits, t1, 3, 4) == 3);
    CHECK(lunar_ref_accuracy_count_f64(logits, t2, 3, 4) == 1);
    float lf[12];
    to_f32(lf, logits, 12);
    CHECK(lunar_ref_accuracy_count_f32(lf, t1, 3, 4) == 3);
    CHECK(lunar_ref_accuracy_count_f32(lf, t2, 3, 4) == 1);
}

static void test_ref_f32_cross_entropy(void) {
    enum { B = 6, K = 11 };
    double logits[B * K], losses[B], loss, dlogits[B * K];
    float logitsf[B * K], lossesf[B], lossf, dlogitsf[B * K];
    int32_t targets[B] = {0, 10, 3, 3, 7, 1};
    fill(logits, B * K, -4, 4);
    to_f32(logitsf, logits, B * K);
    for (int s = 0; s < 2; s++) {
        double eps = s ? 0.1 : 0.0;
        lunar_ref_cross_entropy_forward_f64(&loss, losses, logits, targets, B, K, eps);
        lunar_ref_cross_entropy_forward_f32(&lossf, lossesf, logitsf, targets, B, K, (float)eps);
        CHECK_F32(&lossf, &loss, 1);
        CHECK_F32(lossesf, losses, B);
        lunar_ref_cross_entropy_backward_f64(dlogits, logits, targets, B, K, eps, 2.5);
        lunar_ref_cross_entropy_backward_f32(dlogitsf, logitsf, targets, B, K, (float)eps, 2.5f);
        CHECK_F32(dlogitsf, dlogits, B * K);
    }
}

static void test_ref_f32_accuracy_count(void) {
    enum { B = 5, K = 10 };
    double a[B * K];
    float af[B * K];
    fill(a, B * K, -1, 1);
    to_f32(af, a, B * K);
    int32_t targets[B] = {1, 2, 3, 4, 5};
    CHECK(lunar_ref_accuracy_count_f32(af, targets, B, K) == lunar_ref_accuracy_count_f64(a, targets, B, K));
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_cross_entropy(void) {
    const int sizes[][2] = {{1, 1}, {3, 10}, {128, 10}, {7, 1000}, {200, 17}, {5000, 10}};
    const float smooth[] = {0.0f, 0.1f};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int B = sizes[s][0], K = sizes[s][1];
        for (size_t e = 0; e < 2; e++) {
            size_t n = (size_t)B * K;
            float *z = rand_f(n, -6, 6), *losses = rand_f(B, -9, 9), *dz = rand_f(n, -9, 9);
            int32_t *t = malloc(B * sizeof *t);
            for (int b = 0; b < B; b++) t[b] = (int32_t)(urand() * K);
            double *zd = to_d(z, n), *losses_ref = zeros_d(B), *dz_ref = zeros_d(n), loss_ref = 0;
            float loss = -1;
            lunar_cpu_cross_entropy_forward(&loss, losses, z, t, B, K, smooth[e]);
            lunar_ref_cross_entropy_forward_f64(&loss_ref, losses_ref, zd, t, B, K, smooth[e]);
            CHECK_CLOSE(loss, loss_ref, 1e-6, 1e-7);
            CHECK(close_arr("cross_entropy losses", losses, losses_ref, B, 1e-6, 1e-7));
            float loss2 = -1;
            lunar_cpu_cross_entropy_forward(&loss2, NULL, z, t, B, K, smooth[e]);
            CHECK(loss2 == loss);
            lunar_cpu_cross_entropy_backward(dz, z, t, B, K, smooth[e], 0.75f);
            lunar_ref_cross_entropy_backward_f64(dz_ref, zd, t, B, K, smooth[e], 0.75);
            CHECK(close_arr("cross_entropy dlogits", dz, dz_ref, n, 1e-5, 1e-6));
            free(z); free(losses); free(dz); free(t); free(zd); free(losses_ref); free(dz_ref);
        }
    }
}

static void test_cpu_accuracy_count(void) {
    const int sizes2[][2] = {{1, 1}, {13, 10}, {1000, 7}};
    for (size_t s = 0; s < 3; s++) {
        int B = sizes2[s][0], K = sizes2[s][1];
        float *z = rand_f((size_t)B * K, -1, 1);
        int32_t *t = malloc(B * sizeof *t);
        for (int b = 0; b < B; b++) {
            t[b] = (int32_t)(urand() * K);
            if (b % 3 == 0) z[(size_t)b * K + t[b]] = 5.0f;       /* right */
            if (b % 5 == 0 && K > 1) {                           /* a tie: the first index wins */
                z[(size_t)b * K] = 7.0f;
                z[(size_t)b * K + K - 1] = 7.0f;
            }
        }
        double *zd = to_d(z, (size_t)B * K);
        CHECK(lunar_cpu_accuracy_count(z, t, B, K) == lunar_ref_accuracy_count_f64(zd, t, B, K));
        free(z); free(t); free(zd);
    }
}

int main(void) {
    RUN(test_ref_cross_entropy_backward);
    RUN(test_ref_cross_entropy_backward_smoothing);
    RUN(test_ref_cross_entropy_uniform);
    RUN(test_ref_cross_entropy_hand);
    RUN(test_ref_accuracy_count);
    RUN(test_ref_f32_cross_entropy);
    RUN(test_ref_f32_accuracy_count);
    RUN(test_cpu_cross_entropy);
    RUN(test_cpu_accuracy_count);
    return TEST_SUMMARY();
}
