/*
 * tests/c/test_determinism.c: the CPU kernels of every op family (core/ops/cpu)
 * give the same bits when run twice on the same inputs, and the kernels that
 * do not call BLAS give the same bits on 1 and 2 threads. Each family's
 * numerics are tested by its own tests/c/test_<family>.c.
 *
 *   make build/tests/test_determinism && OMP_NUM_THREADS=2 build/tests/test_determinism
 */
#include "kernel_test.h"

/* One pass of every kernel on fixed inputs, its outputs concatenated into res. */
static size_t run_all(float *res, int with_blas) {
    uint64_t save = rng_s;
    rng_s = 42;
    const int B = 3, N = 50, H = 3, D = 64, C = H * D, M = B * N, F = 4 * C;
    size_t k = 0;
    float *x = rand_f((size_t)M * C, -1, 1), *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1);
    float *y = zeros_f((size_t)M * C), *mean = zeros_f(M), *rstd = zeros_f(M);
    lunar_cpu_layernorm_forward(y, mean, rstd, x, w, b, M, C, 1e-6f);
    memcpy(res + k, y, (size_t)M * C * 4); k += (size_t)M * C;
    memcpy(res + k, rstd, (size_t)M * 4); k += M;
    float *g = rand_f((size_t)M * C, -1, 1), *dx = zeros_f((size_t)M * C), *dw = zeros_f(C), *db = zeros_f(C);
    lunar_cpu_layernorm_backward(dx, dw, db, g, x, w, mean, rstd, M, C);
    memcpy(res + k, dx, (size_t)M * C * 4); k += (size_t)M * C;
    memcpy(res + k, dw, C * 4); k += C;
    memcpy(res + k, db, C * 4); k += C;
    float *qkv = rand_f((size_t)M * 3 * C, -1, 1), *o = zeros_f((size_t)M * C), *lse = zeros_f((size_t)B * H * N);
    float *dqkv = zeros_f((size_t)M * 3 * C);
    lunar_cpu_attention_forward(o, lse, qkv, B, N, H, D);
    lunar_cpu_attention_backward(dqkv, g, qkv, o, lse, B, N, H, D);
    memcpy(res + k, o, (size_t)M * C * 4); k += (size_t)M * C;
    memcpy(res + k, lse, (size_t)B * H * N * 4); k += (size_t)B * H * N;
    memcpy(res + k, dqkv, (size_t)M * 3 * C * 4); k += (size_t)M * 3 * C;
    float *h = rand_f((size_t)M * F, -3, 3), *hg = zeros_f((size_t)M * F);
    lunar_cpu_gelu_forward(hg, h, (size_t)M * F);
    memcpy(res + k, hg, (size_t)M * F * 4); k += (size_t)M * F;
    lunar_cpu_gelu_backward(hg, h, h, (size_t)M * F);
    memcpy(res + k, hg, (size_t)M * F * 4); k += (size_t)M * F;
    float *dcls = zeros_f(C), *dpos = zeros_f((size_t)N * C);
    lunar_cpu_embed_tokens_backward(NULL, dcls, dpos, g, B, N - 1, C);
    memcpy(res + k, dpos, (size_t)N * C * 4); k += (size_t)N * C;
    res[k++] = (float)lunar_cpu_sum_squares(h, (size_t)M * F);
    int32_t tg[150];
    for (int i = 0; i < M; i++) tg[i] = i % C;
    float loss;
    lunar_cpu_cross_entropy_forward(&loss, NULL, x, tg, M, C, 0.1f);
    res[k++] = loss;
    if (with_blas) {
        float *W = rand_f((size_t)F * C, -1, 1), *bias = rand_f(F, -1, 1), *out = zeros_f((size_t)M * F);
        float *gW = zeros_f((size_t)F * C), *gb = zeros_f(F), *gin = zeros_f((size_t)M * C);
        lunar_cpu_linear_forward(out, x, W, bias, M, C, F);
        lunar_cpu_linear_backward(gin, gW, gb, h, x, W, M, C, F);
        memcpy(res + k, out, (size_t)M * F * 4); k += (size_t)M * F;
        memcpy(res + k, gW, (size_t)F * C * 4); k += (size_t)F * C;
        memcpy(res + k, gb, F * 4); k += F;
        memcpy(res + k, gin, (size_t)M * C * 4); k += (size_t)M * C;
        free(W); free(bias); free(out); free(gW); free(gb); free(gin);
    }
    free(x); free(w); free(b); free(y); free(mean); free(rstd); free(g); free(dx); free(dw); free(db);
    free(qkv); free(o); free(lse); free(dqkv); free(h); free(hg); free(dcls); free(dpos);
    rng_s = save;
    return k;
}

static void test_determinism(void) {
    size_t cap = 4u << 20;
    float *r1 = zeros_f(cap), *r2 = zeros_f(cap);
    size_t n1 = run_all(r1, 1), n2 = run_all(r2, 1);
    CHECK(n1 == n2 && n1 <= cap);
    CHECK(same_bits(r1, r2, n1 * sizeof(float)));
    free(r1); free(r2);
}

/* the kernels that do not call BLAS give the same bits on 1 and 2 threads */
static void test_thread_count_independence(void) {
    size_t cap = 4u << 20;
    float *r1 = zeros_f(cap), *r2 = zeros_f(cap);
    int before = max_threads();
    set_threads(1);
    size_t n1 = run_all(r1, 0);
    set_threads(2);
    size_t n2 = run_all(r2, 0);
    set_threads(before);
    CHECK(n1 == n2);
    CHECK(same_bits(r1, r2, n1 * sizeof(float)));
    free(r1); free(r2);
}

int main(void) {
    RUN(test_determinism);
    RUN(test_thread_count_independence);
    return TEST_SUMMARY();
}
