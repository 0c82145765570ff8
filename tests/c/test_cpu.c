/*
 * tests/c/test_cpu.c: the fast CPU kernels (lunar_cpu_*, core/ops/cpu) against
 * the double-precision reference (lunar_ref_*_f64, core/ops/ref) on random
 * inputs of odd sizes (not multiples of 8 or 16, N = 1, B = 1, and sizes that
 * take the kernels' block and tail paths): forward outputs, the tensors saved for
 * backward (mean, rstd, lse), every gradient, overwrite vs accumulate
 * semantics; and determinism (the same inputs twice give the same bits; for the
 * kernels that do not call BLAS, 1 and 2 threads give the same bits too).
 *
 *   make build/tests/test_cpu && OMP_NUM_THREADS=2 build/tests/test_cpu
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "lunar/kernels.h"
#include "lunar/rng.h"
#define TEST_RNG_SEED 0x9E3779B97F4A7C15ull
#include "test.h"

/* ---- helpers -------------------------------------------------------------------- */

static float *zeros_f(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static int same_bits(const void *a, const void *b, size_t bytes) { return memcmp(a, b, bytes) == 0; }

/* ---- linear --------------------------------------------------------------------- */

static void test_linear(void) {
    const int sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {37, 19, 23}, {64, 48, 96}, {130, 33, 17}, {3, 200, 1}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int M = sizes[s][0], K = sizes[s][1], N = sizes[s][2];
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            size_t nin = (size_t)M * K, nw = (size_t)N * K, nout = (size_t)M * N;
            float *inp = rand_f(nin, -1, 1), *w = rand_f(nw, -1, 1), *b = rand_f(N, -1, 1);
            float *out = rand_f(nout, -9, 9);
            double *din = to_d(inp, nin), *dw = to_d(w, nw), *db = to_d(b, N), *dout_ref = zeros_d(nout);
            lunar_cpu_linear_forward(out, inp, w, with_bias ? b : NULL, M, K, N);
            lunar_ref_linear_forward_f64(dout_ref, din, dw, with_bias ? db : NULL, M, K, N);
            CHECK(close_arr("linear out", out, dout_ref, nout, 1e-5, 1e-6));
            /* backward: dinp overwritten (starts as garbage), dweight/dbias accumulated */
            float *g = rand_f(nout, -1, 1), *dinp = rand_f(nin, -9, 9);
            float *gw = rand_f(nw, -1, 1), *gb = rand_f(N, -1, 1);
            double *gd = to_d(g, nout), *dinp_ref = zeros_d(nin), *gw_ref = to_d(gw, nw), *gb_ref = to_d(gb, N);
            lunar_cpu_linear_backward(dinp, gw, with_bias ? gb : NULL, g, inp, w, M, K, N);
            lunar_ref_linear_backward_f64(dinp_ref, gw_ref, with_bias ? gb_ref : NULL, gd, din, dw, M, K, N);
            CHECK(close_arr("linear dinp", dinp, dinp_ref, nin, 1e-5, 1e-6));
            CHECK(close_arr("linear dweight", gw, gw_ref, nw, 1e-5, 1e-6));
            CHECK(close_arr("linear dbias", gb, gb_ref, N, 1e-5, 1e-6));
            /* dinp NULL: only the parameter gradients */
            float *gw2 = copy_f(gw, nw);
            lunar_cpu_linear_backward(NULL, gw2, NULL, g, inp, w, M, K, N);
            lunar_ref_linear_backward_f64(NULL, gw_ref, NULL, gd, din, dw, M, K, N);
            CHECK(close_arr("linear dweight (2nd accumulation)", gw2, gw_ref, nw, 1e-5, 1e-6));
            free(inp); free(w); free(b); free(out); free(din); free(dw); free(db); free(dout_ref);
            free(g); free(dinp); free(gw); free(gb); free(gd); free(dinp_ref); free(gw_ref);
            free(gb_ref); free(gw2);
        }
    }
}

/* ---- patchify -------------------------------------------------------------------- */

static void test_patchify(void) {
    struct { int B, C, k, S[3], P; } cases[] = {
        {2, 3, 2, {8, 12, 0}, 4}, {1, 1, 2, {28, 28, 0}, 4}, {3, 2, 2, {5, 7, 0}, 1},
        {2, 2, 3, {4, 6, 8}, 2},  {1, 3, 3, {3, 3, 3}, 3},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int B = cases[t].B, C = cases[t].C, k = cases[t].k, P = cases[t].P;
        const int *S = cases[t].S;
        size_t n = (size_t)B * C;
        for (int i = 0; i < k; i++) n *= (size_t)S[i];
        float *img = rand_f(n, -1, 1), *out = rand_f(n, -9, 9), *back = rand_f(n, -9, 9);
        double *dimg = to_d(img, n), *dout_ref = zeros_d(n), *dback_ref = zeros_d(n);
        lunar_cpu_patchify_forward(out, img, B, C, k, S, P);
        lunar_ref_patchify_forward_f64(dout_ref, dimg, B, C, k, S, P);
        CHECK(close_arr("patchify out", out, dout_ref, n, 0.0, 0.0));
        float *g = rand_f(n, -1, 1);
        double *gd = to_d(g, n);
        lunar_cpu_patchify_backward(back, g, B, C, k, S, P);
        lunar_ref_patchify_backward_f64(dback_ref, gd, B, C, k, S, P);
        CHECK(close_arr("patchify dinp", back, dback_ref, n, 0.0, 0.0));
        free(img); free(out); free(back); free(dimg); free(dout_ref); free(dback_ref); free(g); free(gd);
    }
}

/* ---- layernorm ------------------------------------------------------------------- */

static void test_layernorm(void) {
    const int sizes[][2] = {{1, 1}, {1, 7}, {5, 192}, {33, 37}, {300, 100}, {17, 1}, {129, 16}, {6400 / 16, 192}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int M = sizes[s][0], C = sizes[s][1];
        for (int shifted = 0; shifted < 2; shifted++) {
            size_t n = (size_t)M * C;
            /* shifted: a large common mean, to test the variance's cancellation */
            float *x = shifted ? rand_f(n, 99, 101) : rand_f(n, -2, 2);
            float *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1);
            float *out = rand_f(n, -9, 9), *mean = rand_f(M, -9, 9), *rstd = rand_f(M, -9, 9);
            double *xd = to_d(x, n), *wd = to_d(w, C), *bd = to_d(b, C);
            double *out_ref = zeros_d(n), *mean_ref = zeros_d(M), *rstd_ref = zeros_d(M);
            lunar_cpu_layernorm_forward(out, mean, rstd, x, w, b, M, C, 1e-5f);
            lunar_ref_layernorm_forward_f64(out_ref, mean_ref, rstd_ref, xd, wd, bd, M, C, 1e-5);
            for (int m = 0; m < M; m++) CHECK_CLOSE(mean[m], mean_ref[m], 1e-6, shifted ? 2e-5 : 1e-6);
            CHECK(close_arr("layernorm rstd", rstd, rstd_ref, M, shifted ? 1e-3 : 1e-5, 0));
            CHECK(close_arr("layernorm out", out, out_ref, n, shifted ? 1e-3 : 1e-5, shifted ? 1e-3 : 1e-5));
            /* backward from the f32 saved statistics (both sides) */
            double *meand = to_d(mean, M), *rstdd = to_d(rstd, M);
            float *g = rand_f(n, -1, 1), *dx = rand_f(n, -9, 9);
            float *gw = rand_f(C, -1, 1), *gb = rand_f(C, -1, 1);
            double *gd = to_d(g, n), *dx_ref = zeros_d(n), *gw_ref = to_d(gw, C), *gb_ref = to_d(gb, C);
            lunar_cpu_layernorm_backward(dx, gw, gb, g, x, w, mean, rstd, M, C);
            lunar_ref_layernorm_backward_f64(dx_ref, gw_ref, gb_ref, gd, xd, wd, meand, rstdd, M, C);
            double tol = shifted ? 1e-3 : 1e-4;
            CHECK(close_arr("layernorm dinp", dx, dx_ref, n, tol, tol / 10));
            CHECK(close_arr("layernorm dweight", gw, gw_ref, C, tol, tol / 10));
            CHECK(close_arr("layernorm dbias", gb, gb_ref, C, 1e-5, 1e-6));
            free(x); free(w); free(b); free(out); free(mean); free(rstd); free(xd); free(wd); free(bd);
            free(out_ref); free(mean_ref); free(rstd_ref); free(meand); free(rstdd); free(g); free(dx);
            free(gw); free(gb); free(gd); free(dx_ref); free(gw_ref); free(gb_ref);
        }
    }
}

/* ---- gelu ------------------------------------------------------------------------ */

static void test_gelu(void) {
    const size_t sizes[] = {1, 15, 16, 17, 1000, 70001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, -9, 9);
        if (n >= 16) {
            const float special[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 1.0f, -1.0f, 5.0f, -5.0f, 10.0f, -10.0f, 20.0f, -30.0f};
            memcpy(x, special, sizeof special);
        }
        float *y = rand_f(n, -9, 9), *g = rand_f(n, -1, 1), *dx = rand_f(n, -9, 9);
        double *xd = to_d(x, n), *gd = to_d(g, n), *y_ref = zeros_d(n), *dx_ref = zeros_d(n);
        lunar_cpu_gelu_forward(y, x, n);
        lunar_ref_gelu_forward_f64(y_ref, xd, n);
        CHECK(close_arr("gelu out", y, y_ref, n, 2e-6, 1e-7));
        lunar_cpu_gelu_backward(dx, g, x, n);
        lunar_ref_gelu_backward_f64(dx_ref, gd, xd, n);
        CHECK(close_arr("gelu dinp", dx, dx_ref, n, 2e-6, 1e-7));
        /* in place */
        float *z = copy_f(x, n);
        lunar_cpu_gelu_forward(z, z, n);
        CHECK(same_bits(z, y, n * sizeof *z));
        free(x); free(y); free(g); free(dx); free(xd); free(gd); free(y_ref); free(dx_ref); free(z);
    }
}

/* ---- attention ------------------------------------------------------------------- */

static int check_attention(int B, int N, int H, int D, double amp) {
    size_t nqkv = (size_t)B * N * 3 * H * D, nout = (size_t)B * N * H * D, nlse = (size_t)B * H * N;
    float *qkv = rand_f(nqkv, -amp, amp), *out = rand_f(nout, -9, 9), *lse = rand_f(nlse, -9, 9);
    double *qkvd = to_d(qkv, nqkv), *out_ref = zeros_d(nout), *lse_ref = zeros_d(nlse);
    lunar_cpu_attention_forward(out, lse, qkv, B, N, H, D);
    lunar_ref_attention_forward_f64(out_ref, lse_ref, qkvd, B, N, H, D);
    int ok = close_arr("attention out", out, out_ref, nout, 1e-4, 1e-5) &&
             close_arr("attention lse", lse, lse_ref, nlse, 1e-5, 1e-6);
    if (ok) {
        float *g = rand_f(nout, -1, 1), *dqkv = rand_f(nqkv, -9, 9);
        double *gd = to_d(g, nout), *outd = to_d(out, nout), *lsed = to_d(lse, nlse), *dqkv_ref = zeros_d(nqkv);
        lunar_cpu_attention_backward(dqkv, g, qkv, out, lse, B, N, H, D);
        lunar_ref_attention_backward_f64(dqkv_ref, gd, qkvd, outd, lsed, B, N, H, D);
        ok = close_arr("attention dqkv", dqkv, dqkv_ref, nqkv, 1e-4, 1e-5);
        free(g); free(dqkv); free(gd); free(outd); free(lsed); free(dqkv_ref);
    }
    if (!ok) fprintf(stderr, "    at B=%d N=%d H=%d D=%d\n", B, N, H, D);
    free(qkv); free(out); free(lse); free(qkvd); free(out_ref); free(lse_ref);
    return ok;
}

static void test_attention(void) {
    CHECK(check_attention(1, 1, 1, 1, 1.0));
    CHECK(check_attention(2, 5, 3, 8, 2.0));
    CHECK(check_attention(2, 50, 3, 64, 1.0)); /* the main job's shape, B = 2 */
    CHECK(check_attention(2, 17, 2, 20, 2.0));
    CHECK(check_attention(1, 70, 1, 100, 0.5)); /* N > 64 and D > 64: two column blocks */
    CHECK(check_attention(3, 7, 1, 3, 3.0));
    CHECK(check_attention(1, 13, 2, 16, 4.0)); /* peaked softmax */
    CHECK(check_attention(1, 300, 1, 6, 1.0)); /* N * Np > 64K: query blocks, dK/dV accumulate */
}

/* ---- embed ------------------------------------------------------------------------ */

static void test_embed(void) {
    const int sizes[][3] = {{1, 1, 1}, {2, 3, 5}, {3, 49, 192}, {5, 7, 70}, {1, 16, 129}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int B = sizes[s][0], L = sizes[s][1], C = sizes[s][2];
        size_t nx = (size_t)B * L * C, nout = (size_t)B * (L + 1) * C, np = (size_t)(L + 1) * C;
        float *x = rand_f(nx, -1, 1), *cls = rand_f(C, -1, 1), *pos = rand_f(np, -1, 1);
        float *out = rand_f(nout, -9, 9);
        double *xd = to_d(x, nx), *clsd = to_d(cls, C), *posd = to_d(pos, np), *out_ref = zeros_d(nout);
        lunar_cpu_embed_tokens_forward(out, x, cls, pos, B, L, C);
        lunar_ref_embed_tokens_forward_f64(out_ref, xd, clsd, posd, B, L, C);
        CHECK(close_arr("embed out", out, out_ref, nout, 1e-7, 0));
        float *g = rand_f(nout, -1, 1), *dx = rand_f(nx, -9, 9), *dcls = rand_f(C, -1, 1), *dpos = rand_f(np, -1, 1);
        double *gd = to_d(g, nout), *dx_ref = zeros_d(nx), *dcls_ref = to_d(dcls, C), *dpos_ref = to_d(dpos, np);
        lunar_cpu_embed_tokens_backward(dx, dcls, dpos, g, B, L, C);
        lunar_ref_embed_tokens_backward_f64(dx_ref, dcls_ref, dpos_ref, gd, B, L, C);
        CHECK(close_arr("embed dx", dx, dx_ref, nx, 0, 0));
        CHECK(close_arr("embed dcls", dcls, dcls_ref, C, 1e-6, 1e-7));
        CHECK(close_arr("embed dpos", dpos, dpos_ref, np, 1e-6, 1e-7));
        lunar_cpu_embed_tokens_backward(NULL, dcls, dpos, g, B, L, C);
        lunar_ref_embed_tokens_backward_f64(NULL, dcls_ref, dpos_ref, gd, B, L, C);
        CHECK(close_arr("embed dpos (dx NULL, 2nd accumulation)", dpos, dpos_ref, np, 1e-6, 1e-7));
        free(x); free(cls); free(pos); free(out); free(xd); free(clsd); free(posd); free(out_ref);
        free(g); free(dx); free(dcls); free(dpos); free(gd); free(dx_ref); free(dcls_ref); free(dpos_ref);
    }
}

/* ---- dropout --------------------------------------------------------------------- */

static void test_dropout(void) {
    const size_t sizes[] = {1, 7, 1000, 100003};
    const float ps[] = {0.0f, 0.1f, 0.5f, 0.9f, 1.0f};
    const uint64_t offsets[] = {0, 3, 5, 1ull << 33};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        for (size_t ip = 0; ip < sizeof ps / sizeof ps[0]; ip++) {
            for (size_t io = 0; io < sizeof offsets / sizeof offsets[0]; io++) {
                float p = ps[ip];
                uint64_t seed = 1234567 + s, stream = 0xABCDEF0123ull * (ip + 1), off = offsets[io];
                float *x = rand_f(n, 0.5, 1.5), *y = rand_f(n, -9, 9), *dx = rand_f(n, -9, 9);
                double *xd = to_d(x, n), *y_ref = zeros_d(n);
                lunar_cpu_dropout_forward(y, x, n, p, seed, stream, off);
                lunar_ref_dropout_forward_f64(y_ref, xd, n, p, seed, stream, off);
                CHECK(close_arr("dropout out", y, y_ref, n, 1e-7, 0));
                float *y32 = rand_f(n, -9, 9);
                lunar_ref_dropout_forward_f32(y32, x, n, p, seed, stream, off);
                CHECK(same_bits(y, y32, n * sizeof *y)); /* the f32 reference, bit for bit */
                free(y32);
                for (size_t i = 0; i < n; i++) CHECK((y[i] == 0.0f) == (y_ref[i] == 0.0));
                /* backward applies the same mask */
                lunar_cpu_dropout_backward(dx, x, n, p, seed, stream, off);
                CHECK(same_bits(dx, y, n * sizeof *dx));
                /* the rule, directly, for a few elements */
                for (size_t i = 0; i < n && i < 40; i++) {
                    double u = (double)(lunar_rng_u32(seed, stream, off + i) >> 8) / 16777216.0;
                    CHECK((y[i] != 0.0f) == (u >= (double)p));
                }
                free(x); free(y); free(dx); free(xd); free(y_ref);
            }
        }
    }
}

/* ---- cross-entropy --------------------------------------------------------------- */

static void test_cross_entropy(void) {
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

/* ---- elementwise, reductions ------------------------------------------------------- */

static void test_elementwise(void) {
    const size_t sizes[] = {1, 17, 100003};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        float *a = rand_f(n, -1, 1), *b = rand_f(n, -1, 1), *o = rand_f(n, -9, 9);
        double *ad = to_d(a, n), *bd = to_d(b, n), *o_ref = zeros_d(n);
        lunar_cpu_add(o, a, b, n);
        lunar_ref_add_f64(o_ref, ad, bd, n);
        CHECK(close_arr("add", o, o_ref, n, 1e-7, 0));
        lunar_cpu_add(a, a, b, n); /* in place */
        CHECK(same_bits(a, o, n * sizeof *a));
        lunar_cpu_scale(o, n, 0.3f);
        lunar_ref_scale_f64(o_ref, n, (double)0.3f);
        CHECK(close_arr("scale", o, o_ref, n, 1e-6, 0));
        free(a); free(b); free(o); free(ad); free(bd); free(o_ref);
    }
}

static void test_sum_squares_accuracy(void) {
    const size_t sizes[] = {0, 1, 15, 16, 1000, 100003, 3000017};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        float *x = rand_f(n, -3, 3);
        double *xd = to_d(x, n);
        CHECK_CLOSE(lunar_cpu_sum_squares(x, n), lunar_ref_sum_squares_f64(xd, n), 1e-12, 1e-300);
        free(x); free(xd);
    }
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

/* ---- optimizers ------------------------------------------------------------------ */

static void test_adamw(void) {
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

static void test_sgd(void) {
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

/* ---- determinism ----------------------------------------------------------------- */

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
    RUN(test_linear);
    RUN(test_patchify);
    RUN(test_layernorm);
    RUN(test_gelu);
    RUN(test_attention);
    RUN(test_embed);
    RUN(test_dropout);
    RUN(test_cross_entropy);
    RUN(test_elementwise);
    RUN(test_sum_squares_accuracy);
    RUN(test_adamw);
    RUN(test_sgd);
    RUN(test_determinism);
    RUN(test_thread_count_independence);
    return TEST_SUMMARY();
}
