/*
 * tests/c/test_optim.c: the kernels of the optimizer steps (AdamW, SGD),
 * on every backend that runs here:
 *   - the reference, core/ops/ref/optim.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/optim.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate;
 *   - the bf16 variants (precision = 'bf16', test_bf16_*): bit for bit the f32
 *     kernels then rounded where kernels.h says so, and within bf16 of the
 *     f64 oracle.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/optim.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_optim && build/tests/test_optim
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

static void test_ref_adamw_two_steps(void) {
    const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
    double p = 1.0, m = 0.0, v = 0.0, g1 = 0.5, g2 = -0.25;
    lunar_ref_adamw_step_f64(&p, &m, &v, &g1, 1, lr, b1, b2, eps, wd, 1);
    /* t = 1: m = 0.05, v = 0.00025, mhat = g, vhat = g^2 */
    double p1 = 1.0 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps);
    CHECK_CLOSE(m, 0.05, 1e-15, 0);
    CHECK_CLOSE(v, 0.00025, 1e-15, 0);
    CHECK_CLOSE(p, p1, 1e-15, 0);
    CHECK_CLOSE(p, 0.899000002, 1e-9, 0);
    lunar_ref_adamw_step_f64(&p, &m, &v, &g2, 1, lr, b1, b2, eps, wd, 2);
    /* t = 2: m = 0.9*0.05 - 0.1*0.25 = 0.02, v = 0.999*0.00025 + 0.001*0.0625 */
    double m2 = 0.02, v2 = 0.999 * 0.00025 + 0.001 * 0.0625;
    double mhat = m2 / (1 - 0.81), vhat = v2 / (1 - 0.998001);
    double p2 = p1 * (1 - lr * wd) - lr * mhat / (sqrt(vhat) + eps);
    CHECK_CLOSE(m, m2, 1e-14, 0);
    CHECK_CLOSE(v, v2, 1e-14, 0);
    CHECK_CLOSE(p, p2, 1e-14, 0);
}

static void test_ref_sgd_momentum_two_steps(void) {
    const double lr = 0.1, mu = 0.9, wd = 0.1;
    double g1 = 0.5, g2 = 0.25;
    /* plain momentum: g' = 0.6, buf = 0.6, p = 0.94; then g' = 0.344,
     * buf = 0.54 + 0.344 = 0.884, p = 0.94 - 0.0884 = 0.8516 */
    double p = 1.0, buf = GARBAGE;
    lunar_ref_sgd_step_f64(&p, &buf, &g1, 1, lr, mu, wd, 0, 1);
    CHECK_CLOSE(buf, 0.6, 1e-15, 0);
    CHECK_CLOSE(p, 0.94, 1e-15, 0);
    lunar_ref_sgd_step_f64(&p, &buf, &g2, 1, lr, mu, wd, 0, 0);
    CHECK_CLOSE(buf, 0.884, 1e-15, 0);
    CHECK_CLOSE(p, 0.8516, 1e-15, 0);
    /* Nesterov: d = 0.6 + 0.54 = 1.14, p = 0.886; then g' = 0.3386,
     * buf = 0.8786, d = 0.3386 + 0.79074 = 1.12934, p = 0.773066 */
    p = 1.0;
    buf = GARBAGE;
    lunar_ref_sgd_step_f64(&p, &buf, &g1, 1, lr, mu, wd, 1, 1);
    CHECK_CLOSE(buf, 0.6, 1e-15, 0);
    CHECK_CLOSE(p, 0.886, 1e-15, 0);
    lunar_ref_sgd_step_f64(&p, &buf, &g2, 1, lr, mu, wd, 1, 0);
    CHECK_CLOSE(buf, 0.8786, 1e-15, 0);
    CHECK_CLOSE(p, 0.773066, 1e-15, 0);
    /* momentum 0: p -= lr (g + wd p), buf may be NULL */
    p = 1.0;
    lunar_ref_sgd_step_f64(&p, NULL, &g1, 1, lr, 0.0, wd, 0, 1);
    CHECK_CLOSE(p, 0.94, 1e-15, 0);
    lunar_ref_sgd_step_f64(&p, NULL, &g2, 1, lr, 0.0, wd, 0, 0);
    CHECK_CLOSE(p, 0.94 - 0.1 * (0.25 + 0.094), 1e-15, 0);
}

static void test_ref_f32_optimizers(void) {
    enum { N = 40 };
    double p[N], m[N], v[N], g[N], buf[N];
    float pf[N], mf[N], vf[N], gf[N], buff[N];
    fill(p, N, -1, 1);
    fill(m, N, -0.1, 0.1);
    fill(v, N, 0.0, 0.01);
    fill(g, N, -1, 1);
    fill(buf, N, -1, 1);
    to_f32(pf, p, N);
    to_f32(mf, m, N);
    to_f32(vf, v, N);
    to_f32(gf, g, N);
    to_f32(buff, buf, N);
    lunar_ref_adamw_step_f64(p, m, v, g, N, 1e-3, 0.9, 0.999, 1e-8, 0.05, 3);
    lunar_ref_adamw_step_f32(pf, mf, vf, gf, N, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 3);
    CHECK_F32(pf, p, N);
    CHECK_F32(mf, m, N);
    CHECK_F32(vf, v, N);
    lunar_ref_sgd_step_f64(p, buf, g, N, 0.01, 0.9, 1e-4, 1, 0);
    lunar_ref_sgd_step_f32(pf, buff, gf, N, 0.01f, 0.9f, 1e-4f, 1, 0);
    CHECK_F32(pf, p, N);
    CHECK_F32(buff, buf, N);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_adamw(void) {
    const size_t sizes[] = {1, 17, 100003};
    const int steps[] = {1, 2, 10, 1000};
    for (size_t s = 0; s < 3; s++) {
        for (size_t it = 0; it < 4; it++) {
            size_t n = sizes[s];
            float *p = rand_f(n, -1, 1), *m = rand_f(n, -0.01, 0.01), *v = rand_f(n, 0, 1e-4);
            float *g = rand_f(n, -0.1, 0.1);
            double *pd = to_d(p, n), *md = to_d(m, n), *vd = to_d(v, n), *gd = to_d(g, n);
            float lr = 2e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.05f;
            lunar_cpu_adamw_step(p, m, v, g, n, lr, b1, b2, eps, wd, steps[it]);
            lunar_ref_adamw_step_f64(pd, md, vd, gd, n, lr, b1, b2, eps, wd, steps[it]);
            CHECK(close_arr("adamw m", m, md, n, 1e-6, 1e-7));
            CHECK(close_arr("adamw v", v, vd, n, 1e-6, 1e-7));
            CHECK(close_arr("adamw param", p, pd, n, 1e-6, 1e-6));
            free(p); free(m); free(v); free(g); free(pd); free(md); free(vd); free(gd);
        }
    }
}

static void test_cpu_sgd(void) {
    const size_t n = 1001;
    for (int mode = 0; mode < 8; mode++) {
        float momentum = (mode & 1) ? 0.9f : 0.0f, wd = (mode & 2) ? 1e-4f : 0.0f;
        int nesterov = (mode & 4) != 0;
        for (int first = 1; first >= 0; first--) {
            float *p = rand_f(n, -1, 1), *buf = rand_f(n, -0.1, 0.1), *g = rand_f(n, -0.1, 0.1);
            double *pd = to_d(p, n), *bufd = to_d(buf, n), *gd = to_d(g, n);
            lunar_cpu_sgd_step(p, momentum != 0.0f ? buf : NULL, g, n, 0.1f, momentum, wd, nesterov, first);
            lunar_ref_sgd_step_f64(pd, momentum != 0.0f ? bufd : NULL, gd, n, 0.1f, momentum, wd, nesterov, first);
            CHECK(close_arr("sgd param", p, pd, n, 1e-6, 1e-7));
            CHECK(close_arr("sgd buf", buf, bufd, n, 1e-6, 1e-7));
            free(p); free(buf); free(g); free(pd); free(bufd); free(gd);
        }
    }
}

/* ---- bf16 (precision = 'bf16'): against the f32 kernels and the reference -------- */

static void test_bf16_optim(void) {
    const size_t sizes[] = {1, 17, 100003};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *p = rand_f(n, -1, 1), *m = rand_f(n, -0.01, 0.01), *v = rand_f(n, 0, 1e-4), *g = rand_f(n, -0.1, 0.1);
        float *p2 = malloc(n * 4), *m2 = malloc(n * 4), *v2 = malloc(n * 4);
        memcpy(p2, p, n * 4); memcpy(m2, m, n * 4); memcpy(v2, v, n * 4);
        uint16_t *ph = malloc(n * 2);
        lunar_cpu_adamw_step(p, m, v, g, n, 2e-3, 0.9, 0.999, 1e-8, 0.05, 7);
        lunar_cpu_adamw_step_bf16(p2, ph, m2, v2, g, n, 2e-3, 0.9, 0.999, 1e-8, 0.05, 7);
        CHECK(memcmp(p, p2, n * 4) == 0 && memcmp(m, m2, n * 4) == 0 && memcmp(v, v2, n * 4) == 0);
        uint16_t *want = to_bf16(p, n);
        CHECK(memcmp(ph, want, n * 2) == 0);
        free(want);
        /* SGD with momentum, nesterov, weight decay */
        lunar_cpu_sgd_step(p, m, g, n, 0.1f, 0.9f, 1e-4f, 1, 0);
        lunar_cpu_sgd_step_bf16(p2, ph, m2, g, n, 0.1f, 0.9f, 1e-4f, 1, 0);
        CHECK(memcmp(p, p2, n * 4) == 0 && memcmp(m, m2, n * 4) == 0);
        want = to_bf16(p, n);
        CHECK(memcmp(ph, want, n * 2) == 0);
        /* the reference does the same */
        double *pd = to_d(p, n), *bd = to_d(m, n), *gd = to_d(g, n);
        uint16_t *phd = malloc(n * 2);
        lunar_ref_sgd_step_bf16_f64(pd, phd, bd, gd, n, 0.1, 0.0, 0.0, 0, 1);
        for (size_t i = 0; i < n; i++) CHECK(phd[i] == lunar_f32_to_bf16((float)pd[i]));
        free(p); free(m); free(v); free(g); free(p2); free(m2); free(v2); free(ph); free(want); free(pd); free(bd);
        free(gd); free(phd);
    }
}

int main(void) {
    RUN(test_ref_adamw_two_steps);
    RUN(test_ref_sgd_momentum_two_steps);
    RUN(test_ref_f32_optimizers);
    RUN(test_cpu_adamw);
    RUN(test_cpu_sgd);
    RUN(test_bf16_optim);
    return TEST_SUMMARY();
}
