/*
 * tests/c/test_cuda.c: the CUDA backend against the CPU (llm.c's rule: the CPU
 * is the oracle of the GPU kernels). Every kernel of kernels.h runs on random
 * inputs of odd sizes on the GPU (lunar_cuda_*) and on the CPU (lunar_cpu_*),
 * and the results are compared with per-dtype tolerances: f32 about 1e-5
 * relative (1e-4 for attention, as test_attention.c allows the CPU kernel against
 * the reference), TF32 GEMMs about 5e-3. The dropout masks and the Philox words
 * must be bitwise equal; the optimizer steps and the deterministic reductions
 * are checked to give the same bits on two runs. Also: the device allocator's
 * counters and its errors, host <-> device tensor copies (contiguous, strided,
 * dtype conversion), and the op layer on CUDA tensors (device checks, targets
 * checked on the host). bf16 (precision = 'bf16'): the bf16 GEMMs (cuBLASLt
 * CUDA_R_16BF, f32 accumulation) against the CPU's at an f32 tolerance (the
 * operands are rounded alike), with f32 or bf16 activations, gradients and
 * outputs (a bf16 output within one bf16 rounding); the bf16 outputs of
 * LayerNorm and GELU within one bf16 rounding, GELU forward and backward from
 * a bf16 input, the bf16 attention of kernels.h against the CPU's bf16 and
 * f32 kernels, the cast and the optimizer's working copy bitwise.
 *
 * The attention of bf16 / f16 inputs (core/cuda/attention.h): cuDNN's fused
 * graph where libcudnn loads (test_attention_cudnn: against the CPU and the
 * own kernel with bf16 / f16 tolerances, which path ran, determinism), and the
 * own-kernel fallback everywhere, the CPU emulation included, where cuDNN is
 * absent and the fallback must be taken and reported.
 *
 * On a machine without a CUDA device (or a build without the CUDA backend)
 * every test is reported as skipped, with the reason, and the summary reads
 * "0 passed, 0 failed, N skipped": a skip is never a pass. The cuDNN tests are
 * skipped the same way where a device is present but libcudnn is not.
 *
 * The kernel tests are in sections named by op family, as the CPU-side tests
 * tests/c/test_<family>.c and the sources core/ops/cuda/<family>.cu: linear,
 * layernorm, gelu, elementwise, attention, embed, patchify, dropout, loss,
 * optim; then bf16 (precision = 'bf16') across families.
 *
 *   make build/tests/test_cuda && build/tests/test_cuda
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/alloc.h"
#include "lunar/cuda.h"
#include "lunar/kernels.h"
#include "lunar/ops.h"
#include "lunar/rng.h"
#include "lunar/tensor.h"
#define TEST_RNG_SEED 0x243F6A8885A308D3ull
#include "test.h"

/* every test, in order (X-macro: run them, or skip them all) */
#define CUDA_TESTS(X)                  \
    X(test_device_info)                \
    X(test_allocator_counters)         \
    X(test_allocator_errors)           \
    X(test_tensor_copies)              \
    X(test_linear)                     \
    X(test_linear_tf32)                \
    X(test_linear_unaligned)           \
    X(test_layernorm)                  \
    X(test_gelu)                       \
    X(test_add_scale)                  \
    X(test_arith_ops)                  \
    X(test_attention)                  \
    X(test_attention_path_f32)         \
    X(test_attention_lowp_fallback)    \
    X(test_embed_tokens)               \
    X(test_patchify)                   \
    X(test_dropout_bitwise)            \
    X(test_cross_entropy)              \
    X(test_accuracy)                   \
    X(test_optimizers)                 \
    X(test_sum_squares)                \
    X(test_determinism)                \
    X(test_ops_on_device)              \
    X(test_bf16)                       \
    X(test_gelu_bf16)                  \
    X(test_attention_bf16)

/* the tests that need cuDNN besides a device: skipped, with the reason, where
 * libcudnn does not load (always in the CPU emulation) */
#define CUDNN_TESTS(X)                 \
    X(test_attention_cudnn)

#ifdef LUNAR_USE_CUDA
#include "../../core/cuda/attention.h"

/* the Philox words on the device (core/ops/cuda/dropout.cu) */
void lunar_cuda_rng_u32_fill(uint32_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset);

#define DEV 0

/* ---- helpers --------------------------------------------------------------------- */

/* device buffers: lunar_alloc on cuda:0, freed with their size */
static void *d_alloc(size_t nbytes) { return lunar_alloc(DEV, nbytes ? nbytes : 4); }
static void d_free(void *p, size_t nbytes) { lunar_free(DEV, p, nbytes ? nbytes : 4); }

static float *d_from(const float *h, size_t n) {
    float *d = d_alloc(n * sizeof *d);
    if (d && n && lunar_cuda_memcpy(d, DEV, h, LUNAR_CPU, n * sizeof *d)) return NULL;
    return d;
}

static int32_t *d_from_i(const int32_t *h, size_t n) {
    int32_t *d = d_alloc(n * sizeof *d);
    if (d && n && lunar_cuda_memcpy(d, DEV, h, LUNAR_CPU, n * sizeof *d)) return NULL;
    return d;
}

/* a host copy of n floats of device memory (malloc'ed) */
static float *h_from(const float *d, size_t n) {
    float *h = malloc((n ? n : 1) * sizeof *h);
    if (n && lunar_cuda_memcpy(h, LUNAR_CPU, d, DEV, n * sizeof *h)) {
        free(h);
        return NULL;
    }
    return h;
}

/* got ~ want: |g - w| <= rtol |w| + atol_rel max|w| elementwise; prints the worst */
static int close_f(const char *what, const float *got, const float *want, size_t n, double rtol, double atol_rel) {
    if (!got) {
        fprintf(stderr, "    %s: no result (%s)\n", what, lunar_last_error());
        return 0;
    }
    double wmax = 0.0;
    for (size_t i = 0; i < n; i++) wmax = fmax(wmax, fabs((double)want[i]));
    double atol = atol_rel * wmax + 1e-30, worst_ratio = -1.0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        double ratio = fabs((double)got[i] - (double)want[i]) / (atol + rtol * fabs((double)want[i]));
        if (isnan(got[i]) != isnan(want[i])) ratio = INFINITY;
        if (isnan(got[i]) && isnan(want[i])) ratio = 0.0;
        if (ratio > worst_ratio) { worst_ratio = ratio; worst = i; }
    }
    if (worst_ratio > 1.0) {
        fprintf(stderr, "    %s: element %zu of %zu: gpu %.9g, cpu %.9g (max |cpu| %.3g)\n", what, worst, n,
                (double)got[worst], (double)want[worst], wmax);
        return 0;
    }
    return 1;
}

static int same_bits(const char *what, const void *a, const void *b, size_t nbytes) {
    if (!a || !b) { fprintf(stderr, "    %s: no result (%s)\n", what, lunar_last_error()); return 0; }
    if (memcmp(a, b, nbytes) == 0) return 1;
    const unsigned char *x = a, *y = b;
    size_t i = 0;
    while (i < nbytes && x[i] == y[i]) i++;
    fprintf(stderr, "    %s: first different byte at %zu of %zu\n", what, i, nbytes);
    return 0;
}

/* the sticky CUDA error of the kernels must be clear */
#define CUDA_OK() CHECK_MSG(lunar_cuda_take_error() == LUNAR_OK, "CUDA error: %s", lunar_last_error())

/* ---- device, allocator, tensors -------------------------------------------------- */

static void test_device_info(void) {
    CHECK(lunar_cuda_device_count() >= 1);
    char name[256] = "";
    CHECK(lunar_cuda_device_name(DEV, name, sizeof name) == LUNAR_OK);
    CHECK(name[0] != 0);
    int major = 0, minor = 0;
    CHECK(lunar_cuda_capability(DEV, &major, &minor) == LUNAR_OK);
    printf("    cuda:0 = %s, sm_%d%d\n", name, major, minor);
    CHECK_MSG(major >= 8, "compute capability %d.%d: this build has code for sm_80 and sm_90", major, minor);
    CHECK(lunar_cuda_stream(DEV) != NULL && lunar_cuda_comm_stream(DEV) != NULL);
    CHECK(lunar_cuda_stream(DEV) != lunar_cuda_comm_stream(DEV));
    CHECK(lunar_cuda_synchronize(DEV) == LUNAR_OK);
    void *p = lunar_cuda_host_alloc(1000);
    CHECK(p != NULL && lunar_cuda_host_is_pinned(p));
    memset(p, 7, 1000);
    lunar_cuda_host_free(p);
}

static void test_allocator_counters(void) {
    lunar_alloc_empty_cache(DEV);
    lunar_alloc_stats s0, s1, s2, s3;
    lunar_alloc_get_stats(DEV, &s0);
    void *a = lunar_alloc(DEV, 1000);   /* rounded to 1024 */
    CHECK(a != NULL);
    lunar_alloc_get_stats(DEV, &s1);
    CHECK(s1.bytes_in_use == s0.bytes_in_use + 1024);
    CHECK(s1.peak_bytes >= s1.bytes_in_use);
    CHECK(s1.num_allocs == s0.num_allocs + 1 && s1.num_sys_allocs == s0.num_sys_allocs + 1);
    CHECK(s1.bytes_reserved == s0.bytes_reserved + 1024);
    lunar_free(DEV, a, 1000);
    lunar_alloc_get_stats(DEV, &s2);
    CHECK(s2.bytes_in_use == s0.bytes_in_use);
    CHECK(s2.bytes_reserved == s1.bytes_reserved);   /* cached, not returned */
    void *b = lunar_alloc(DEV, 1000);                /* served from the cache */
    lunar_alloc_get_stats(DEV, &s3);
    CHECK(b == a);
    CHECK(s3.num_sys_allocs == s1.num_sys_allocs);
    lunar_free(DEV, b, 1000);
    lunar_alloc_reset_peak(DEV);
    lunar_alloc_get_stats(DEV, &s3);
    CHECK(s3.peak_bytes == s3.bytes_in_use);
    lunar_alloc_empty_cache(DEV);
    lunar_alloc_get_stats(DEV, &s3);
    CHECK(s3.bytes_reserved == s3.bytes_in_use);   /* reserved = in use + cached, and nothing is cached */
    /* zero bytes: a valid unique pointer */
    void *z1 = lunar_alloc(DEV, 0), *z2 = lunar_alloc(DEV, 0);
    CHECK(z1 && z2 && z1 != z2);
    lunar_free(DEV, z1, 0);
    lunar_free(DEV, z2, 0);
    /* the CPU counters do not move */
    lunar_alloc_stats c0, c1;
    lunar_alloc_get_stats(LUNAR_CPU, &c0);
    void *d = lunar_alloc(DEV, 1 << 20);
    lunar_alloc_get_stats(LUNAR_CPU, &c1);
    CHECK(c1.bytes_in_use == c0.bytes_in_use);
    lunar_free(DEV, d, 1 << 20);
}

static void test_allocator_errors(void) {
    /* out of memory: names the device, the request and what is in use */
    void *p = lunar_alloc(DEV, (size_t)1 << 52);
    CHECK(p == NULL);
    CHECK_MSG(strstr(lunar_last_error(), "cuda:0: out of memory allocating 4096 TiB"), "message: %s",
              lunar_last_error());
    CHECK_MSG(strstr(lunar_last_error(), "in use") && strstr(lunar_last_error(), "total"), "message: %s",
              lunar_last_error());
    /* an index out of range */
    int n = lunar_cuda_device_count();
    int64_t shape[1] = {4};
    lunar_tensor *t = lunar_tensor_new(LUNAR_F32, 1, shape, n);
    CHECK(t == NULL);
    CHECK_MSG(strstr(lunar_last_error(), "out of range"), "message: %s", lunar_last_error());
    CHECK(lunar_cuda_check_device(-5) != LUNAR_OK);
    CHECK(lunar_cuda_take_error() == LUNAR_OK);   /* nothing sticky from these */
}

static void test_tensor_copies(void) {
    int64_t shape[2] = {5, 7};
    lunar_tensor *h = lunar_tensor_new(LUNAR_F32, 2, shape, LUNAR_CPU);
    for (int i = 0; i < 35; i++) lunar_tensor_set(h, i, i * 0.5 - 3);
    /* contiguous round trip */
    lunar_tensor *d = lunar_tensor_to_device(h, DEV);
    CHECK(d && lunar_tensor_device(d) == DEV);
    lunar_tensor *back = lunar_tensor_to_device(d, LUNAR_CPU);
    CHECK(back && same_bits("round trip", lunar_tensor_data(back), lunar_tensor_data(h), 35 * 4));
    /* element access */
    CHECK(lunar_tensor_get(d, 12) == 12 * 0.5 - 3);
    CHECK(lunar_tensor_set(d, 12, 42.0) == LUNAR_OK && lunar_tensor_get(d, 12) == 42.0);
    /* a strided device view (transpose) copied to a contiguous host tensor */
    lunar_tensor *dt = lunar_tensor_transpose(d, 0, 1);
    lunar_tensor *ht = lunar_tensor_transpose(h, 0, 1);
    lunar_tensor_set(h, 12, 42.0);
    int64_t tshape[2] = {7, 5};
    lunar_tensor *c1 = lunar_tensor_new(LUNAR_F32, 2, tshape, LUNAR_CPU), *c2 = lunar_tensor_new(LUNAR_F32, 2, tshape, LUNAR_CPU);
    CHECK(lunar_tensor_copy(c1, dt) == LUNAR_OK && lunar_tensor_copy(c2, ht) == LUNAR_OK);
    CHECK(same_bits("transpose copy", lunar_tensor_data(c1), lunar_tensor_data(c2), 35 * 4));
    /* the same on the device: a strided-copy kernel, no host staging */
    lunar_tensor *dc = lunar_tensor_new(LUNAR_F32, 2, tshape, DEV);
    CHECK(dc && lunar_tensor_copy(dc, dt) == LUNAR_OK);
    lunar_tensor *hc = lunar_tensor_to_device(dc, LUNAR_CPU);
    CHECK(hc && same_bits("device transpose copy", lunar_tensor_data(hc), lunar_tensor_data(c2), 35 * 4));
    lunar_tensor_free(hc);
    lunar_tensor_free(dc);
    /* host -> strided device destination (a column of d) */
    lunar_tensor *col_d = lunar_tensor_select(d, 1, 3), *col_h = lunar_tensor_select(h, 1, 3);
    int64_t five[1] = {5};
    lunar_tensor *vals = lunar_tensor_new(LUNAR_F32, 1, five, LUNAR_CPU);
    for (int i = 0; i < 5; i++) lunar_tensor_set(vals, i, 100 + i);
    CHECK(lunar_tensor_copy(col_d, vals) == LUNAR_OK && lunar_tensor_copy(col_h, vals) == LUNAR_OK);
    lunar_tensor_free(back);
    back = lunar_tensor_to_device(d, LUNAR_CPU);
    CHECK(back && same_bits("strided write", lunar_tensor_data(back), lunar_tensor_data(h), 35 * 4));
    /* dtype conversion on the device (through the host) and fill */
    lunar_tensor *bf = lunar_tensor_to_dtype(d, LUNAR_BF16);
    CHECK(bf && lunar_tensor_device(bf) == DEV && bf->dtype == LUNAR_BF16);
    CHECK(lunar_tensor_get(bf, 3) == (double)lunar_bf16_to_f32(lunar_f32_to_bf16((float)lunar_tensor_get(h, 3))));
    CHECK(lunar_tensor_fill(dt, 2.5) == LUNAR_OK && lunar_tensor_get(d, 34) == 2.5);
    CHECK(lunar_tensor_fill(d, 0.0) == LUNAR_OK && lunar_tensor_get(d, 0) == 0.0);
    lunar_tensor *z = lunar_tensor_zeros(LUNAR_F32, 2, shape, DEV);
    CHECK(z && lunar_tensor_get(z, 34) == 0.0);
    /* device to device */
    lunar_tensor *d2 = lunar_tensor_to_device(h, DEV);
    CHECK(lunar_tensor_copy(z, d2) == LUNAR_OK && lunar_tensor_get(z, 12) == lunar_tensor_get(h, 12));
    CUDA_OK();
    lunar_tensor_free(d2); lunar_tensor_free(z); lunar_tensor_free(bf); lunar_tensor_free(vals);
    lunar_tensor_free(col_d); lunar_tensor_free(col_h); lunar_tensor_free(c1); lunar_tensor_free(c2);
    lunar_tensor_free(dt); lunar_tensor_free(ht); lunar_tensor_free(back); lunar_tensor_free(d); lunar_tensor_free(h);
}

/* ---- linear ---------------------------------------------------------------------- */

/* forward and backward of one (M, K, N) on GPU and CPU; shift offsets every
 * device pointer by that many floats (unaligned views) */
static int linear_case(int M, int K, int N, int with_bias, double rtol, double atol, int shift) {
    size_t ni = (size_t)M * K, nw = (size_t)N * K, no = (size_t)M * N;
    float *x = rand_f(ni, -1, 1), *w = rand_f(nw, -0.5, 0.5), *b = rand_f(N, -1, 1), *dy = rand_f(no, -1, 1);
    float *gw0 = rand_f(nw, -0.1, 0.1), *gb0 = rand_f(N, -0.1, 0.1);
    /* CPU */
    float *y = malloc((no ? no : 1) * 4), *dx = malloc((ni ? ni : 1) * 4), *gw = copy_f(gw0, nw), *gb = copy_f(gb0, N);
    lunar_cpu_linear_forward(y, x, w, with_bias ? b : NULL, M, K, N);
    lunar_cpu_linear_backward(dx, gw, with_bias ? gb : NULL, dy, x, w, M, K, N);
    /* GPU, each buffer `shift` floats past an aligned block */
    size_t s = (size_t)shift;
    float *bx = d_alloc((ni + s) * 4), *bw = d_alloc((nw + s) * 4), *bb = d_alloc((N + s) * 4),
          *bdy = d_alloc((no + s) * 4), *by = d_alloc((no + s) * 4), *bdx = d_alloc((ni + s) * 4),
          *bgw = d_alloc((nw + s) * 4), *bgb = d_alloc((N + s) * 4);
    float *dx_ = bx + s, *dw_ = bw + s, *db_ = bb + s, *ddy = bdy + s, *dyo = by + s, *ddx = bdx + s, *dgw = bgw + s,
          *dgb = bgb + s;
    lunar_cuda_memcpy(dx_, DEV, x, LUNAR_CPU, ni * 4);
    lunar_cuda_memcpy(dw_, DEV, w, LUNAR_CPU, nw * 4);
    lunar_cuda_memcpy(db_, DEV, b, LUNAR_CPU, N * 4);
    lunar_cuda_memcpy(ddy, DEV, dy, LUNAR_CPU, no * 4);
    lunar_cuda_memcpy(dgw, DEV, gw0, LUNAR_CPU, nw * 4);
    lunar_cuda_memcpy(dgb, DEV, gb0, LUNAR_CPU, N * 4);
    lunar_cuda_linear_forward(dyo, dx_, dw_, with_bias ? db_ : NULL, M, K, N);
    lunar_cuda_linear_backward(ddx, dgw, with_bias ? dgb : NULL, ddy, dx_, dw_, M, K, N);
    float *gy = h_from(dyo, no), *gdx = h_from(ddx, ni), *ggw = h_from(dgw, nw), *ggb = h_from(dgb, N);
    int ok = lunar_cuda_take_error() == LUNAR_OK;
    if (!ok) fprintf(stderr, "    linear M=%d K=%d N=%d: %s\n", M, K, N, lunar_last_error());
    char what[128];
    snprintf(what, sizeof what, "linear M=%d K=%d N=%d bias=%d shift=%d", M, K, N, with_bias, shift);
    ok = ok && close_f(what, gy, y, no, rtol, atol) && close_f("  dinp", gdx, dx, ni, rtol, atol) &&
         close_f("  dweight (accumulated)", ggw, gw, nw, rtol, atol) &&
         (!with_bias || close_f("  dbias (accumulated)", ggb, gb, N, 1e-5, 1e-6));
    d_free(bx, (ni + s) * 4); d_free(bw, (nw + s) * 4); d_free(bb, (N + s) * 4); d_free(bdy, (no + s) * 4);
    d_free(by, (no + s) * 4); d_free(bdx, (ni + s) * 4); d_free(bgw, (nw + s) * 4); d_free(bgb, (N + s) * 4);
    free(x); free(w); free(b); free(dy); free(gw0); free(gb0); free(y); free(dx); free(gw); free(gb);
    free(gy); free(gdx); free(ggw); free(ggb);
    return ok;
}

static const int LIN[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 96, 48}, {33, 200, 17}, {197, 192, 576}, {3, 1, 9}};

static void test_linear(void) {
    lunar_cuda_set_tf32(0);
    for (size_t i = 0; i < sizeof LIN / sizeof *LIN; i++)
        for (int bias = 0; bias <= 1; bias++)
            CHECK(linear_case(LIN[i][0], LIN[i][1], LIN[i][2], bias, 1e-5, 1e-5, 0));
}

static void test_linear_tf32(void) {
    lunar_cuda_set_tf32(1);
    int ok = 1;
    for (size_t i = 0; i < sizeof LIN / sizeof *LIN && ok; i++) ok = linear_case(LIN[i][0], LIN[i][1], LIN[i][2], 1, 5e-3, 5e-3, 0);
    lunar_cuda_set_tf32(0);
    CHECK(ok);
}

/* views at odd float offsets (a parameter inside a flat buffer) */
static void test_linear_unaligned(void) {
    lunar_cuda_set_tf32(0);
    CHECK(linear_case(19, 37, 11, 1, 1e-5, 1e-5, 1));
    CHECK(linear_case(64, 96, 48, 1, 1e-5, 1e-5, 3));
}

/* ---- layernorm ------------------------------------------------------------------- */

static void test_layernorm(void) {
    static const int SZ[][2] = {{1, 1}, {5, 7}, {64, 192}, {33, 768}, {3, 1000}, {130, 33}};
    for (size_t t = 0; t < sizeof SZ / sizeof *SZ; t++) {
        int M = SZ[t][0], C = SZ[t][1];
        size_t n = (size_t)M * C;
        float *x = rand_f(n, -2, 3), *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -0.5, 0.5), *dy = rand_f(n, -1, 1);
        float *gw0 = rand_f(C, -0.1, 0.1), *gb0 = rand_f(C, -0.1, 0.1);
        float *y = malloc(n * 4), *mean = malloc(M * 4), *rstd = malloc(M * 4), *dx = malloc(n * 4);
        float *gw = copy_f(gw0, C), *gb = copy_f(gb0, C);
        lunar_cpu_layernorm_forward(y, mean, rstd, x, w, b, M, C, 1e-5f);
        lunar_cpu_layernorm_backward(dx, gw, gb, dy, x, w, mean, rstd, M, C);
        float *dx_ = d_from(x, n), *dw = d_from(w, C), *db = d_from(b, C), *ddy = d_from(dy, n);
        float *dgw = d_from(gw0, C), *dgb = d_from(gb0, C);
        float *dyo = d_alloc(n * 4), *dmean = d_alloc(M * 4), *drstd = d_alloc(M * 4), *ddx = d_alloc(n * 4);
        lunar_cuda_layernorm_forward(dyo, dmean, drstd, dx_, dw, db, M, C, 1e-5f);
        lunar_cuda_layernorm_backward(ddx, dgw, dgb, ddy, dx_, dw, dmean, drstd, M, C);
        float *gy = h_from(dyo, n), *gm = h_from(dmean, M), *gr = h_from(drstd, M), *gdx = h_from(ddx, n);
        float *ggw = h_from(dgw, C), *ggb = h_from(dgb, C);
        CUDA_OK();
        CHECK(close_f("layernorm out", gy, y, n, 1e-5, 1e-5));
        CHECK(close_f("layernorm mean", gm, mean, M, 1e-5, 1e-6));
        CHECK(close_f("layernorm rstd", gr, rstd, M, 1e-5, 1e-6));
        CHECK(close_f("layernorm dinp", gdx, dx, n, 1e-4, 1e-5));
        CHECK(close_f("layernorm dweight", ggw, gw, C, 1e-4, 1e-5));
        CHECK(close_f("layernorm dbias", ggb, gb, C, 1e-5, 1e-6));
        d_free(dx_, n * 4); d_free(dw, C * 4); d_free(db, C * 4); d_free(ddy, n * 4); d_free(dgw, C * 4);
        d_free(dgb, C * 4); d_free(dyo, n * 4); d_free(dmean, M * 4); d_free(drstd, M * 4); d_free(ddx, n * 4);
        free(x); free(w); free(b); free(dy); free(gw0); free(gb0); free(y); free(mean); free(rstd); free(dx);
        free(gw); free(gb); free(gy); free(gm); free(gr); free(gdx); free(ggw); free(ggb);
    }
}

/* ---- gelu ------------------------------------------------------------------------ */

static void test_gelu(void) {
    size_t n = 100003;
    float *x = rand_f(n, -6, 6), *dy = rand_f(n, -1, 1), *y = malloc(n * 4), *dx = malloc(n * 4);
    lunar_cpu_gelu_forward(y, x, n);
    lunar_cpu_gelu_backward(dx, dy, x, n);
    float *dx_ = d_from(x, n), *ddy = d_from(dy, n), *dyo = d_alloc(n * 4), *ddx = d_alloc(n * 4);
    lunar_cuda_gelu_forward(dyo, dx_, n);
    lunar_cuda_gelu_backward(ddx, ddy, dx_, n);
    float *gy = h_from(dyo, n), *gdx = h_from(ddx, n);
    CUDA_OK();
    CHECK(close_f("gelu out", gy, y, n, 2e-6, 1e-7));
    CHECK(close_f("gelu dinp", gdx, dx, n, 2e-6, 1e-7));
    d_free(dx_, n * 4); d_free(ddy, n * 4); d_free(dyo, n * 4); d_free(ddx, n * 4);
    free(x); free(dy); free(y); free(dx); free(gy); free(gdx);
}

/* ---- elementwise: add, then scale in place --------------------------------------- */

static void test_add_scale(void) {
    size_t n = 100003;
    float *x = rand_f(n, -6, 6), *dy = rand_f(n, -1, 1), *y = malloc(n * 4);
    float *dx_ = d_from(x, n), *ddy = d_from(dy, n), *dyo = d_alloc(n * 4);
    lunar_cpu_add(y, x, dy, n);
    lunar_cpu_scale(y, n, 0.37f);
    lunar_cuda_add(dyo, dx_, ddy, n);
    lunar_cuda_scale(dyo, n, 0.37f);
    float *gy = h_from(dyo, n);
    CUDA_OK();
    CHECK(same_bits("add then scale", gy, y, n * 4));
    d_free(dx_, n * 4); d_free(ddy, n * 4); d_free(dyo, n * 4);
    free(x); free(dy); free(y); free(gy);
}

/* ---- tensor arithmetic (kernels.h arith): every op, RSQRT_ADD included, with a
 * tensor and with a scalar right operand: the CPU kernel's bits (both compute in
 * double, IEEE-rounded, and round once to f32) ---------------------------------- */

static void test_arith_ops(void) {
    size_t n = 100003;
    float *a = rand_f(n, 0, 4), *b = rand_f(n, 0.25, 2), *y = malloc(n * 4);   /* a + b > 0: no NaN (its bits differ by device) */
    float *da = d_from(a, n), *db = d_from(b, n), *dy = d_alloc(n * 4);
    for (int op = LUNAR_ARITH_ADD; op <= LUNAR_ARITH_RSQRT_ADD; op++)
        for (int scalar = 0; scalar < 2; scalar++) {
            lunar_cpu_arith(y, a, LUNAR_ELEM_F32, 0, scalar ? NULL : b, LUNAR_ELEM_F32, 1e-6, n, op);
            lunar_cuda_arith(dy, da, LUNAR_ELEM_F32, 0, scalar ? NULL : db, LUNAR_ELEM_F32, 1e-6, n, op);
            float *gy = h_from(dy, n);
            CUDA_OK();
            char what[48];
            snprintf(what, sizeof what, "arith op %d%s", op, scalar ? " (scalar 1e-6)" : "");
            CHECK(same_bits(what, gy, y, n * 4));
            free(gy);
        }
    d_free(da, n * 4); d_free(db, n * 4); d_free(dy, n * 4);
    free(a); free(b); free(y);
}

/* ---- attention ------------------------------------------------------------------- */

static int attention_case(int B, int N, int H, int D) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
    float *qkv = rand_f(nq, -1.5, 1.5), *dout = rand_f(no, -1, 1);
    float *o = malloc(no * 4), *lse = malloc(nl * 4), *dqkv = malloc(nq * 4);
    lunar_cpu_attention_forward(o, lse, qkv, B, N, H, D);
    lunar_cpu_attention_backward(dqkv, dout, qkv, o, lse, B, N, H, D);
    float *dq = d_from(qkv, nq), *ddo = d_from(dout, no), *dout_ = d_alloc(no * 4), *dlse = d_alloc(nl * 4),
          *ddq = d_alloc(nq * 4);
    lunar_cuda_attention_forward(dout_, dlse, dq, B, N, H, D);
    lunar_cuda_attention_backward(ddq, ddo, dq, dout_, dlse, B, N, H, D);
    float *go = h_from(dout_, no), *gl = h_from(dlse, nl), *gd = h_from(ddq, nq);
    int ok = lunar_cuda_take_error() == LUNAR_OK;
    if (!ok) fprintf(stderr, "    attention B=%d N=%d H=%d D=%d: %s\n", B, N, H, D, lunar_last_error());
    char what[96];
    snprintf(what, sizeof what, "attention B=%d N=%d H=%d D=%d: out", B, N, H, D);
    ok = ok && close_f(what, go, o, no, 1e-4, 1e-5) && close_f("  lse", gl, lse, nl, 1e-5, 1e-6) &&
         close_f("  dqkv", gd, dqkv, nq, 1e-4, 1e-5);
    d_free(dq, nq * 4); d_free(ddo, no * 4); d_free(dout_, no * 4); d_free(dlse, nl * 4); d_free(ddq, nq * 4);
    free(qkv); free(dout); free(o); free(lse); free(dqkv); free(go); free(gl); free(gd);
    return ok;
}

static void test_attention(void) {
    /* D in every template (<= 32, 64, 128, 256; not multiples of 32 too), N from
     * one token to several key tiles with a ragged last one; D = 160 needs more
     * than 48 KiB of shared memory in backward */
    static const int SZ[][4] = {{1, 1, 1, 1},  {2, 5, 3, 8},   {2, 50, 3, 64}, {1, 197, 2, 64},
                                {1, 70, 1, 128}, {2, 40, 2, 33}, {1, 33, 2, 160}, {3, 17, 4, 16}};
    for (size_t i = 0; i < sizeof SZ / sizeof *SZ; i++) CHECK(attention_case(SZ[i][0], SZ[i][1], SZ[i][2], SZ[i][3]));
}

/* ---- attention: which path, bf16 / f16 through cuDNN or the own kernel ----------- */

/* x rounded to dtype (bf16 / f16) in place; the 16-bit words (malloc'ed) */
static uint16_t *round_16(float *x, size_t n, lunar_dtype dt) {
    uint16_t *h = malloc((n ? n : 1) * 2);
    for (size_t i = 0; i < n; i++) {
        h[i] = dt == LUNAR_BF16 ? lunar_f32_to_bf16(x[i]) : lunar_f32_to_f16(x[i]);
        x[i] = dt == LUNAR_BF16 ? lunar_bf16_to_f32(h[i]) : lunar_f16_to_f32(h[i]);
    }
    return h;
}

/* n 16-bit words of device memory as floats (malloc'ed), NULL on failure */
static float *h_from_16(const void *d, size_t n, lunar_dtype dt) {
    uint16_t *w = malloc((n ? n : 1) * 2);
    float *f = malloc((n ? n : 1) * 4);
    if (n && lunar_cuda_memcpy(w, LUNAR_CPU, d, DEV, n * 2)) { free(w); free(f); return NULL; }
    for (size_t i = 0; i < n; i++) f[i] = dt == LUNAR_BF16 ? lunar_bf16_to_f32(w[i]) : lunar_f16_to_f32(w[i]);
    free(w);
    return f;
}

static void *d_from_16(const uint16_t *h, size_t n) {
    void *d = d_alloc(n * 2);
    if (d && n && lunar_cuda_memcpy(d, DEV, h, LUNAR_CPU, n * 2)) return NULL;
    return d;
}

/* one forward and backward of dtype dt on the device, in the current
 * LUNAR_CUDNN_ATTENTION mode: outputs as floats, the paths and their reasons */
typedef struct {
    float *o, *lse, *dqkv;
    lunar_attn_path fwd, bwd;
    char why_fwd[800], why_bwd[800];
} lowp_run;

static void lowp_free(lowp_run *r) { free(r->o); free(r->lse); free(r->dqkv); memset(r, 0, sizeof *r); }

static int lowp_run_case(lunar_dtype dt, int B, int N, int H, int D, const uint16_t *qkv16, const uint16_t *dout16,
                         lowp_run *r) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
    memset(r, 0, sizeof *r);
    void *q = d_from_16(qkv16, nq), *g = d_from_16(dout16, no), *o = d_alloc(no * 2), *dq = d_alloc(nq * 2);
    float *l = d_alloc(nl * 4);
    const char *why = "";
    lunar_cuda_attention_forward_dt(dt, o, l, q, B, N, H, D);
    r->fwd = lunar_cuda_attention_last_path(0, &why);
    snprintf(r->why_fwd, sizeof r->why_fwd, "%s", why);
    lunar_cuda_attention_backward_dt(dt, dq, g, q, o, l, B, N, H, D);
    r->bwd = lunar_cuda_attention_last_path(1, &why);
    snprintf(r->why_bwd, sizeof r->why_bwd, "%s", why);
    r->o = h_from_16(o, no, dt);
    r->lse = h_from(l, nl);
    r->dqkv = h_from_16(dq, nq, dt);
    int ok = lunar_cuda_take_error() == LUNAR_OK;
    if (!ok) fprintf(stderr, "    %s attention B=%d N=%d H=%d D=%d: %s\n", lunar_dtype_name(dt), B, N, H, D,
                     lunar_last_error());
    d_free(q, nq * 2); d_free(g, no * 2); d_free(o, no * 2); d_free(dq, nq * 2); d_free(l, nl * 4);
    return ok && r->o && r->lse && r->dqkv;
}

/* the CPU on the rounded inputs: out, lse; and the backward from the
 * device's own out and lse (so it is checked on its own) */
typedef struct { float *o, *lse, *dqkv; } cpu_ref;

static void cpu_ref_make(cpu_ref *c, const float *qkv, const float *dout, const float *dev_o, const float *dev_lse,
                         int B, int N, int H, int D) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
    c->o = malloc(no * 4); c->lse = malloc(nl * 4); c->dqkv = malloc(nq * 4);
    lunar_cpu_attention_forward(c->o, c->lse, qkv, B, N, H, D);
    lunar_cpu_attention_backward(c->dqkv, dout, qkv, dev_o, dev_lse, B, N, H, D);
}

static void cpu_ref_free(cpu_ref *c) { free(c->o); free(c->lse); free(c->dqkv); }

/* f32 inputs take the own kernel and say why */
static void test_attention_path_f32(void) {
    int B = 2, N = 9, H = 2, D = 16;
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
    float *qkv = rand_f(nq, -1, 1), *dout = rand_f(no, -1, 1);
    float *dq = d_from(qkv, nq), *ddo = d_from(dout, no), *o = d_alloc(no * 4), *l = d_alloc(nl * 4),
          *dd = d_alloc(nq * 4);
    const char *why = NULL;
    lunar_cuda_set_cudnn_attention(-1);
    lunar_cuda_attention_forward(o, l, dq, B, N, H, D);
    CHECK(lunar_cuda_attention_last_path(0, &why) == LUNAR_ATTN_PATH_OWN);
    CHECK_MSG(why && strstr(why, "f32"), "reason: %s", why ? why : "(null)");
    lunar_cuda_attention_backward_dt(LUNAR_F32, dd, ddo, dq, o, l, B, N, H, D);   /* the dtype entry too */
    CHECK(lunar_cuda_attention_last_path(1, &why) == LUNAR_ATTN_PATH_OWN);
    CHECK_MSG(strstr(why, "f32"), "reason: %s", why);
    lunar_cuda_set_cudnn_attention(LUNAR_CUDNN_ATTN_OFF);
    lunar_cuda_attention_forward_dt(LUNAR_F32, o, l, dq, B, N, H, D);
    CHECK(lunar_cuda_attention_last_path(0, &why) == LUNAR_ATTN_PATH_OWN);
    CHECK_MSG(strstr(why, "LUNAR_CUDNN_ATTENTION=0"), "reason: %s", why);
    lunar_cuda_set_cudnn_attention(-1);
    CHECK(strcmp(lunar_cuda_attention_path_name(LUNAR_ATTN_PATH_CUDNN), "cuDNN") == 0);
    /* a dtype the attention does not take: an error, no path */
    lunar_cuda_attention_forward_dt(LUNAR_I32, o, l, dq, B, N, H, D);
    CHECK(lunar_cuda_take_error() != LUNAR_OK);
    CHECK_MSG(strstr(lunar_last_error(), "f32, bf16, f16"), "message: %s", lunar_last_error());
    CUDA_OK();
    d_free(dq, nq * 4); d_free(ddo, no * 4); d_free(o, no * 4); d_free(l, nl * 4); d_free(dd, nq * 4);
    free(qkv); free(dout);
}

/* bf16 / f16 through the own kernel: with cuDNN switched off, and (where
 * libcudnn does not load: the CPU emulation) with cuDNN absent; each time the
 * path and its reason are reported and the results are the CPU's within the
 * rounding of the dtype */
static void test_attention_lowp_fallback(void) {
    static const int SZ[][4] = {{2, 33, 2, 64}, {1, 20, 3, 40}, {2, 9, 2, 33}, {1, 1, 2, 16}};
    static const lunar_dtype DT[] = {LUNAR_BF16, LUNAR_F16};
    int cudnn = lunar_cuda_cudnn_available();
    if (!cudnn) printf("    cuDNN: %s\n", lunar_cuda_cudnn_unavailable_reason());
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && cudnn) break;   /* cuDNN absent: the default mode must fall back too */
        lunar_cuda_set_cudnn_attention(pass == 0 ? LUNAR_CUDNN_ATTN_OFF : LUNAR_CUDNN_ATTN_ON);
        for (size_t t = 0; t < sizeof SZ / sizeof *SZ; t++)
            for (int k = 0; k < 2; k++) {
                lunar_dtype dt = DT[k];
                int B = SZ[t][0], N = SZ[t][1], H = SZ[t][2], D = SZ[t][3];
                size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
                float *qkv = rand_f(nq, -1.5, 1.5), *dout = rand_f(no, -1, 1);
                uint16_t *q16 = round_16(qkv, nq, dt), *g16 = round_16(dout, no, dt);
                lowp_run r = {0};
                int ok = lowp_run_case(dt, B, N, H, D, q16, g16, &r);
                const char *want = pass == 0 ? "LUNAR_CUDNN_ATTENTION=0" : lunar_cuda_cudnn_unavailable_reason();
                char what[128];
                snprintf(what, sizeof what, "%s fallback B=%d N=%d H=%d D=%d", lunar_dtype_name(dt), B, N, H, D);
                int paths = r.fwd == LUNAR_ATTN_PATH_OWN && r.bwd == LUNAR_ATTN_PATH_OWN && strstr(r.why_fwd, want) &&
                            strstr(r.why_bwd, want);
                if (ok && !paths)
                    fprintf(stderr, "    %s: paths %s (%s) / %s (%s), expected the own kernel because: %s\n", what,
                            lunar_cuda_attention_path_name(r.fwd), r.why_fwd, lunar_cuda_attention_path_name(r.bwd),
                            r.why_bwd, want);
                cpu_ref c = {0};
                if (ok) {
                    float *dev_o = copy_f(r.o, no);
                    cpu_ref_make(&c, qkv, dout, dev_o, r.lse, B, N, H, D);
                    free(dev_o);
                }
                /* the f32 kernel rounded once to the dtype */
                double rt = dt == LUNAR_BF16 ? 8e-3 : 2e-3, at = dt == LUNAR_BF16 ? 2e-3 : 5e-4;
                ok = ok && paths && close_f(what, r.o, c.o, no, rt, at) && close_f("  lse", r.lse, c.lse, nl, 1e-4, 1e-5) &&
                     close_f("  dqkv", r.dqkv, c.dqkv, nq, rt, at);
                lowp_free(&r);
                cpu_ref_free(&c);
                free(qkv); free(dout); free(q16); free(g16);
                if (!ok) lunar_cuda_set_cudnn_attention(-1);
                CHECK(ok);
            }
    }
    lunar_cuda_set_cudnn_attention(-1);
    CUDA_OK();
}

/* bf16 / f16 through cuDNN's fused graph: the path, and the results against
 * the CPU (on the same rounded inputs) and against the own kernel, with the
 * tolerances of the dtype (the probabilities enter the second matmul, and dS
 * the gradient matmuls, rounded to it); the deterministic backward twice */
static void test_attention_cudnn(void) {
    static const int SZ[][4] = {{2, 197, 3, 64}, {2, 128, 2, 128}, {1, 256, 4, 64}, {3, 50, 2, 32}, {1, 40, 1, 256}};
    static const lunar_dtype DT[] = {LUNAR_BF16, LUNAR_F16};
    int major = 0, minor = 0;
    CHECK(lunar_cuda_capability(DEV, &major, &minor) == LUNAR_OK);
    size_t v = lunar_cuda_cudnn_version();
    printf("    cuDNN %zu.%zu.%zu on sm_%d%d\n", v / 10000, v / 100 % 100, v % 100, major, minor);
    for (size_t t = 0; t < sizeof SZ / sizeof *SZ; t++)
        for (int k = 0; k < 2; k++) {
            lunar_dtype dt = DT[k];
            int B = SZ[t][0], N = SZ[t][1], H = SZ[t][2], D = SZ[t][3];
            size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
            float *qkv = rand_f(nq, -1.5, 1.5), *dout = rand_f(no, -1, 1);
            uint16_t *q16 = round_16(qkv, nq, dt), *g16 = round_16(dout, no, dt);
            char what[128];
            snprintf(what, sizeof what, "cuDNN %s B=%d N=%d H=%d D=%d", lunar_dtype_name(dt), B, N, H, D);
            double rt = dt == LUNAR_BF16 ? 2e-2 : 5e-3, gt = dt == LUNAR_BF16 ? 3e-2 : 1e-2;
            lowp_run r = {0}, own = {0}, again = {0};
            lunar_cuda_set_cudnn_attention(LUNAR_CUDNN_ATTN_ON);
            int ok = lowp_run_case(dt, B, N, H, D, q16, g16, &r);
            /* cuDNN must take the forward (D > 128 only on Hopper: cuDNN before 9.10
             * serves it nowhere else) and, on Hopper with D <= 128, the deterministic
             * backward (from cuDNN 9.16 for N % 128 != 0); elsewhere the own kernel
             * may run the backward, and the results are checked all the same */
            int need_fwd = D <= 128 || major == 9,
                need_bwd = major == 9 && D <= 128 && (v > 91500 || N % 128 == 0);
            if (ok && r.fwd != LUNAR_ATTN_PATH_CUDNN)
                fprintf(stderr, "    %s: forward took the %s: %s\n", what, lunar_cuda_attention_path_name(r.fwd), r.why_fwd);
            if (ok && r.bwd != LUNAR_ATTN_PATH_CUDNN)
                fprintf(stderr, "    %s: backward took the %s: %s\n", what, lunar_cuda_attention_path_name(r.bwd),
                        r.why_bwd);
            int paths = (r.fwd == LUNAR_ATTN_PATH_CUDNN || !need_fwd) && (r.bwd == LUNAR_ATTN_PATH_CUDNN || !need_bwd);
            cpu_ref c = {0};
            if (ok) {
                float *dev_o = copy_f(r.o, no);
                cpu_ref_make(&c, qkv, dout, dev_o, r.lse, B, N, H, D);
                free(dev_o);
            }
            ok = ok && paths && close_f(what, r.o, c.o, no, rt, rt) && close_f("  lse", r.lse, c.lse, nl, 1e-3, 1e-3) &&
                 close_f("  dqkv", r.dqkv, c.dqkv, nq, gt, gt);
            /* the same through the own kernel */
            lunar_cuda_set_cudnn_attention(LUNAR_CUDNN_ATTN_OFF);
            ok = ok && lowp_run_case(dt, B, N, H, D, q16, g16, &own) && own.fwd == LUNAR_ATTN_PATH_OWN &&
                 close_f("  out, cuDNN vs own kernel", r.o, own.o, no, rt, rt) &&
                 close_f("  lse, cuDNN vs own kernel", r.lse, own.lse, nl, 1e-3, 1e-3) &&
                 close_f("  dqkv, cuDNN vs own kernel", r.dqkv, own.dqkv, nq, gt, gt);
            /* the deterministic backward: the same bits twice */
            lunar_cuda_set_cudnn_attention(LUNAR_CUDNN_ATTN_ON);
            ok = ok && lowp_run_case(dt, B, N, H, D, q16, g16, &again) &&
                 same_bits("  out twice", r.o, again.o, no * 4) && same_bits("  dqkv twice", r.dqkv, again.dqkv, nq * 4);
            /* the fast backward (f32 dQ accumulator): cuDNN where it serves it */
            if (ok) {
                lowp_run fast = {0};
                lunar_cuda_set_cudnn_attention(LUNAR_CUDNN_ATTN_FAST);
                ok = lowp_run_case(dt, B, N, H, D, q16, g16, &fast);
                if (ok && fast.bwd != LUNAR_ATTN_PATH_CUDNN)
                    printf("    %s: the fast backward took the %s: %s\n", what,
                           lunar_cuda_attention_path_name(fast.bwd), fast.why_bwd);
                ok = ok && close_f("  dqkv, fast backward", fast.dqkv, c.dqkv, nq, gt, gt);
                lowp_free(&fast);
            }
            lunar_cuda_set_cudnn_attention(-1);
            lowp_free(&r); lowp_free(&own); lowp_free(&again);
            cpu_ref_free(&c);
            free(qkv); free(dout); free(q16); free(g16);
            CHECK(ok);
        }
    CUDA_OK();
}

/* ---- embed ----------------------------------------------------------------------- */

static void test_embed_tokens(void) {
    int B = 3, L = 49, C = 37;
    size_t nx = (size_t)B * L * C, np = (size_t)(L + 1) * C, no = (size_t)B * (L + 1) * C;
    float *x = rand_f(nx, -1, 1), *cls = rand_f(C, -1, 1), *pos = rand_f(np, -1, 1), *dout = rand_f(no, -1, 1);
    float *gc0 = rand_f(C, -0.1, 0.1), *gp0 = rand_f(np, -0.1, 0.1);
    float *out = malloc(no * 4), *dx = malloc(nx * 4), *gc = copy_f(gc0, C), *gp = copy_f(gp0, np);
    lunar_cpu_embed_tokens_forward(out, x, cls, pos, B, L, C);
    lunar_cpu_embed_tokens_backward(dx, gc, gp, dout, B, L, C);
    float *dx_ = d_from(x, nx), *dcls = d_from(cls, C), *dpos = d_from(pos, np), *ddout = d_from(dout, no);
    float *dgc = d_from(gc0, C), *dgp = d_from(gp0, np), *dout_ = d_alloc(no * 4), *ddx = d_alloc(nx * 4);
    lunar_cuda_embed_tokens_forward(dout_, dx_, dcls, dpos, B, L, C);
    lunar_cuda_embed_tokens_backward(ddx, dgc, dgp, ddout, B, L, C);
    lunar_cuda_embed_tokens_backward(NULL, dgc, dgp, ddout, B, L, C);   /* dx not needed; accumulates again */
    lunar_cpu_embed_tokens_backward(NULL, gc, gp, dout, B, L, C);
    float *go = h_from(dout_, no), *gdx = h_from(ddx, nx), *ggc = h_from(dgc, C), *ggp = h_from(dgp, np);
    CUDA_OK();
    CHECK(same_bits("embed out", go, out, no * 4));
    CHECK(same_bits("embed dx", gdx, dx, nx * 4));
    CHECK(close_f("embed dcls", ggc, gc, C, 1e-6, 1e-7));
    CHECK(close_f("embed dpos", ggp, gp, np, 1e-6, 1e-7));
    d_free(dx_, nx * 4); d_free(dcls, C * 4); d_free(dpos, np * 4); d_free(ddout, no * 4); d_free(dgc, C * 4);
    d_free(dgp, np * 4); d_free(dout_, no * 4); d_free(ddx, nx * 4);
    free(x); free(cls); free(pos); free(dout); free(gc0); free(gp0); free(out); free(dx); free(gc); free(gp);
    free(go); free(gdx); free(ggc); free(ggp);
}

/* ---- patchify -------------------------------------------------------------------- */

static void test_patchify(void) {
    struct { int B, C, k, S[3], P; } cases[] = {{2, 3, 2, {12, 8, 0}, 4}, {1, 1, 2, {28, 28, 0}, 7},
                                                 {2, 2, 3, {8, 4, 12}, 4}, {1, 3, 2, {5, 5, 0}, 1}};
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        int B = cases[t].B, C = cases[t].C, k = cases[t].k, P = cases[t].P, *S = cases[t].S;
        size_t n = (size_t)B * C;
        for (int i = 0; i < k; i++) n *= (size_t)S[i];
        float *img = rand_f(n, -1, 1), *dp = rand_f(n, -1, 1), *p = malloc(n * 4), *dimg = malloc(n * 4);
        lunar_cpu_patchify_forward(p, img, B, C, k, S, P);
        lunar_cpu_patchify_backward(dimg, dp, B, C, k, S, P);
        float *d_img = d_from(img, n), *d_dp = d_from(dp, n), *d_p = d_alloc(n * 4), *d_dimg = d_alloc(n * 4);
        lunar_cuda_patchify_forward(d_p, d_img, B, C, k, S, P);
        lunar_cuda_patchify_backward(d_dimg, d_dp, B, C, k, S, P);
        float *gp = h_from(d_p, n), *gd = h_from(d_dimg, n);
        CUDA_OK();
        CHECK(same_bits("patchify out", gp, p, n * 4));
        CHECK(same_bits("patchify dinp", gd, dimg, n * 4));
        d_free(d_img, n * 4); d_free(d_dp, n * 4); d_free(d_p, n * 4); d_free(d_dimg, n * 4);
        free(img); free(dp); free(p); free(dimg); free(gp); free(gd);
    }
}

/* ---- dropout (and the Philox words) ---------------------------------------------- */

static void test_dropout_bitwise(void) {
    /* the Philox words themselves */
    size_t nw = 4099;
    uint32_t *words = d_alloc(nw * 4), *hw = malloc(nw * 4), *cw = malloc(nw * 4);
    lunar_cuda_rng_u32_fill(words, nw, 0x1234567890abcdefull, lunar_rng_stream_id("blocks.3.attn.drop"), 7);
    CHECK(lunar_cuda_memcpy(hw, LUNAR_CPU, words, DEV, nw * 4) == LUNAR_OK);
    for (size_t i = 0; i < nw; i++) cw[i] = lunar_rng_u32(0x1234567890abcdefull, lunar_rng_stream_id("blocks.3.attn.drop"), 7 + i);
    CUDA_OK();
    CHECK(same_bits("philox words", hw, cw, nw * 4));
    d_free(words, nw * 4); free(hw); free(cw);
    /* masks and values, forward and backward, odd offsets and sizes */
    static const struct { size_t n; float p; uint64_t off; } C[] = {
        {1, 0.5f, 0}, {1001, 0.1f, 3}, {65537, 0.5f, 1ull << 33}, {4096, 0.999f, 5}, {333, 0.0f, 1}};
    for (size_t t = 0; t < sizeof C / sizeof *C; t++) {
        size_t n = C[t].n;
        float *x = rand_f(n, -2, 2), *y = malloc(n * 4), *dx = malloc(n * 4);
        lunar_cpu_dropout_forward(y, x, n, C[t].p, 42, 99, C[t].off);
        lunar_cpu_dropout_backward(dx, x, n, C[t].p, 42, 99, C[t].off);
        float *d_x = d_from(x, n), *d_y = d_alloc(n * 4), *d_dx = d_alloc(n * 4);
        lunar_cuda_dropout_forward(d_y, d_x, n, C[t].p, 42, 99, C[t].off);
        lunar_cuda_dropout_backward(d_dx, d_x, n, C[t].p, 42, 99, C[t].off);
        float *gy = h_from(d_y, n), *gdx = h_from(d_dx, n);
        CUDA_OK();
        CHECK(same_bits("dropout forward", gy, y, n * 4));
        CHECK(same_bits("dropout backward", gdx, dx, n * 4));
        lunar_cuda_dropout_forward(d_x, d_x, n, C[t].p, 42, 99, C[t].off);   /* in place */
        free(gy);
        gy = h_from(d_x, n);
        CUDA_OK();
        CHECK(same_bits("dropout in place", gy, y, n * 4));
        d_free(d_x, n * 4); d_free(d_y, n * 4); d_free(d_dx, n * 4);
        free(x); free(y); free(dx); free(gy); free(gdx);
    }
    /* the rows form (a block of a larger tensor): the CPU's bits, rows of 5 and 2049 */
    static const struct { size_t rows, len; uint64_t stride, off; } B[] = {{4, 5, 10, 13}, {3, 2049, 4100, 1001}};
    for (size_t t = 0; t < sizeof B / sizeof *B; t++) {
        size_t n = B[t].rows * B[t].len;
        float *x = rand_f(n, -2, 2), *y = malloc(n * 4);
        lunar_cpu_dropout_rows(y, x, B[t].rows, B[t].len, 0.3f, 42, 99, B[t].off, B[t].stride);
        float *d_x = d_from(x, n), *d_y = d_alloc(n * 4);
        lunar_cuda_dropout_rows(d_y, d_x, B[t].rows, B[t].len, 0.3f, 42, 99, B[t].off, B[t].stride);
        float *gy = h_from(d_y, n);
        CUDA_OK();
        CHECK(same_bits("dropout rows", gy, y, n * 4));
        d_free(d_x, n * 4); d_free(d_y, n * 4);
        free(x); free(y); free(gy);
    }
}

/* ---- loss: cross-entropy, accuracy ----------------------------------------------- */

static void test_cross_entropy(void) {
    static const int SZ[][2] = {{1, 1}, {1, 10}, {37, 10}, {64, 1000}, {5, 33}};
    static const float EPS[] = {0.0f, 0.1f};
    for (size_t t = 0; t < sizeof SZ / sizeof *SZ; t++)
        for (int e = 0; e < 2; e++) {
            int B = SZ[t][0], K = SZ[t][1];
            size_t n = (size_t)B * K;
            float *z = rand_f(n, -4, 4), *losses = malloc(B * 4), *dz = malloc(n * 4), loss = 0;
            int32_t *tg = malloc(B * 4);
            for (int b = 0; b < B; b++) tg[b] = (int32_t)(urand() * K) % K;
            lunar_cpu_cross_entropy_forward(&loss, losses, z, tg, B, K, EPS[e]);
            lunar_cpu_cross_entropy_backward(dz, z, tg, B, K, EPS[e], 0.75f);
            float *d_z = d_from(z, n), *d_l = d_alloc(B * 4), *d_dz = d_alloc(n * 4), gloss = -1;
            int32_t *d_t = d_from_i(tg, B);
            lunar_cuda_cross_entropy_forward(&gloss, d_l, d_z, d_t, B, K, EPS[e]);
            lunar_cuda_cross_entropy_backward(d_dz, d_z, d_t, B, K, EPS[e], 0.75f);
            float *gl = h_from(d_l, B), *gdz = h_from(d_dz, n);
            CUDA_OK();
            CHECK_CLOSE(gloss, loss, 2e-6, 1e-7);
            CHECK(close_f("cross_entropy losses", gl, losses, B, 2e-6, 1e-7));
            CHECK(close_f("cross_entropy dlogits", gdz, dz, n, 1e-5, 1e-6));
            d_free(d_z, n * 4); d_free(d_l, B * 4); d_free(d_dz, n * 4); d_free(d_t, B * 4);
            free(z); free(losses); free(dz); free(tg); free(gl); free(gdz);
        }
}

static void test_accuracy(void) {
    int B = 77, K = 13;
    size_t n = (size_t)B * K;
    float *z = rand_f(n, -1, 1);
    int32_t *tg = malloc(B * 4);
    for (int b = 0; b < B; b++) tg[b] = (int32_t)(urand() * K) % K;
    /* ties: rows with the max repeated (first index wins), all equal, -inf */
    for (int k = 0; k < K; k++) z[k] = 0.5f;
    z[K + 3] = z[K + 9] = 5.0f; tg[1] = 3;
    z[2 * K + 4] = z[2 * K + 8] = 5.0f; tg[2] = 8;
    for (int k = 0; k < K; k++) z[3 * K + k] = -INFINITY;
    tg[3] = 0;
    for (int b = 10; b < 30; b++) {   /* make some rows right */
        int best = 0;
        for (int k = 1; k < K; k++) if (z[(size_t)b * K + k] > z[(size_t)b * K + best]) best = k;
        tg[b] = best;
    }
    int64_t want = lunar_cpu_accuracy_count(z, tg, B, K);
    float *d_z = d_from(z, n);
    int32_t *d_t = d_from_i(tg, B);
    int64_t got = lunar_cuda_accuracy_count(d_z, d_t, B, K);
    CUDA_OK();
    CHECK_MSG(got == want, "gpu %lld, cpu %lld", (long long)got, (long long)want);
    d_free(d_z, n * 4); d_free(d_t, B * 4); free(z); free(tg);
}

/* ---- optim ----------------------------------------------------------------------- */

static void test_optimizers(void) {
    size_t n = 10007;
    float *p0 = rand_f(n, -1, 1), *g = rand_f(n, -0.1, 0.1), *m0 = rand_f(n, -0.01, 0.01), *v0 = rand_f(n, 0, 1e-4);
    for (int t = 1; t <= 3; t += 2) {
        float *p = copy_f(p0, n), *m = copy_f(m0, n), *v = copy_f(v0, n);
        lunar_cpu_adamw_step(p, m, v, g, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, t);
        float *dp = d_from(p0, n), *dm = d_from(m0, n), *dv = d_from(v0, n), *dg = d_from(g, n);
        lunar_cuda_adamw_step(dp, dm, dv, dg, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, t);
        float *hp = h_from(dp, n), *hm = h_from(dm, n), *hv = h_from(dv, n);
        CUDA_OK();
        CHECK(close_f("adamw param", hp, p, n, 1e-6, 1e-7));
        CHECK(close_f("adamw exp_avg", hm, m, n, 1e-6, 1e-7));
        CHECK(close_f("adamw exp_avg_sq", hv, v, n, 1e-6, 1e-7));
        d_free(dp, n * 4); d_free(dm, n * 4); d_free(dv, n * 4); d_free(dg, n * 4);
        free(p); free(m); free(v); free(hp); free(hm); free(hv);
    }
    static const struct { float mu, wd; int nesterov, first; } S[] = {
        {0.0f, 0.0f, 0, 1}, {0.9f, 1e-4f, 0, 1}, {0.9f, 1e-4f, 0, 0}, {0.9f, 0.0f, 1, 0}};
    for (size_t t = 0; t < sizeof S / sizeof *S; t++) {
        float *p = copy_f(p0, n), *buf = copy_f(m0, n);
        lunar_cpu_sgd_step(p, S[t].mu != 0 ? buf : NULL, g, n, 0.1f, S[t].mu, S[t].wd, S[t].nesterov, S[t].first);
        float *dp = d_from(p0, n), *db = d_from(m0, n), *dg = d_from(g, n);
        lunar_cuda_sgd_step(dp, S[t].mu != 0 ? db : NULL, dg, n, 0.1f, S[t].mu, S[t].wd, S[t].nesterov, S[t].first);
        float *hp = h_from(dp, n), *hb = h_from(db, n);
        CUDA_OK();
        CHECK(close_f("sgd param", hp, p, n, 1e-6, 1e-7));
        CHECK(close_f("sgd momentum_buffer", hb, buf, n, 1e-6, 1e-7));
        d_free(dp, n * 4); d_free(db, n * 4); d_free(dg, n * 4);
        free(p); free(buf); free(hp); free(hb);
    }
    free(p0); free(g); free(m0); free(v0);
}

/* ---- elementwise: sum of squares ------------------------------------------------- */

static void test_sum_squares(void) {
    static const size_t NS[] = {1, 1000, (1 << 20) + 17};   /* the last takes the grid-stride loop */
    for (size_t t = 0; t < sizeof NS / sizeof *NS; t++) {
        size_t n = NS[t];
        float *x = rand_f(n, -1, 1);
        float *dx = d_from(x, n);
        double got = lunar_cuda_sum_squares(dx, n), want = lunar_cpu_sum_squares(x, n);
        CUDA_OK();
        CHECK_CLOSE(got, want, 1e-12, 1e-300);
        CHECK(lunar_cuda_sum_squares(dx, n) == got);   /* same bits again */
        d_free(dx, n * 4);
        free(x);
    }
    CHECK(lunar_cuda_sum_squares(NULL, 0) == 0.0);
}

/* the reductions without atomics give the same bits twice */
/* ---- every family: determinism, the op layer on device tensors ------------------- */

static void test_determinism(void) {
    int M = 300, C = 192, B = 2, N = 45, H = 2, D = 64;
    size_t n = (size_t)M * C;
    float *x = rand_f(n, -2, 2), *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1), *dy = rand_f(n, -1, 1);
    float *dx_ = d_from(x, n), *dw = d_from(w, C), *db = d_from(b, C), *ddy = d_from(dy, n);
    float *y = d_alloc(n * 4), *mean = d_alloc(M * 4), *rstd = d_alloc(M * 4), *ddx = d_alloc(n * 4);
    float *gw = d_alloc(C * 4), *gb = d_alloc(C * 4), *res[2][3];
    for (int r = 0; r < 2; r++) {
        lunar_cuda_memset(DEV, gw, 0, C * 4);
        lunar_cuda_memset(DEV, gb, 0, C * 4);
        lunar_cuda_layernorm_forward(y, mean, rstd, dx_, dw, db, M, C, 1e-6f);
        lunar_cuda_layernorm_backward(ddx, gw, gb, ddy, dx_, dw, mean, rstd, M, C);
        res[r][0] = h_from(ddx, n);
        res[r][1] = h_from(gw, C);
        res[r][2] = h_from(gb, C);
    }
    CUDA_OK();
    CHECK(same_bits("layernorm dinp twice", res[0][0], res[1][0], n * 4));
    CHECK(same_bits("layernorm dweight twice", res[0][1], res[1][1], C * 4));
    CHECK(same_bits("layernorm dbias twice", res[0][2], res[1][2], C * 4));
    for (int r = 0; r < 2; r++) for (int k = 0; k < 3; k++) free(res[r][k]);
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
    float *qkv = rand_f(nq, -1, 1), *dout = rand_f(no, -1, 1);
    float *dq = d_from(qkv, nq), *ddo = d_from(dout, no), *o = d_alloc(no * 4), *l = d_alloc(nl * 4),
          *dd = d_alloc(nq * 4), *a[2];
    for (int r = 0; r < 2; r++) {
        lunar_cuda_attention_forward(o, l, dq, B, N, H, D);
        lunar_cuda_attention_backward(dd, ddo, dq, o, l, B, N, H, D);
        a[r] = h_from(dd, nq);
    }
    CUDA_OK();
    CHECK(same_bits("attention dqkv twice", a[0], a[1], nq * 4));
    free(a[0]); free(a[1]);
    d_free(dq, nq * 4); d_free(ddo, no * 4); d_free(o, no * 4); d_free(l, nl * 4); d_free(dd, nq * 4);
    d_free(dx_, n * 4); d_free(dw, C * 4); d_free(db, C * 4); d_free(ddy, n * 4); d_free(y, n * 4);
    d_free(mean, M * 4); d_free(rstd, M * 4); d_free(ddx, n * 4); d_free(gw, C * 4); d_free(gb, C * 4);
    free(x); free(w); free(b); free(dy); free(qkv); free(dout);
}

/* the op layer (ops.h) on CUDA tensors: dispatch, device checks, host-side target checks */
static void test_ops_on_device(void) {
    int64_t xs[2] = {6, 10}, ws[2] = {4, 10}, bs[1] = {4}, ys[2] = {6, 4}, ts[1] = {6};
    lunar_tensor *x = lunar_tensor_new(LUNAR_F32, 2, xs, LUNAR_CPU), *w = lunar_tensor_new(LUNAR_F32, 2, ws, LUNAR_CPU),
                 *b = lunar_tensor_new(LUNAR_F32, 1, bs, LUNAR_CPU), *y = lunar_tensor_new(LUNAR_F32, 2, ys, LUNAR_CPU);
    for (int i = 0; i < 60; i++) lunar_tensor_set(x, i, urand() - 0.5);
    for (int i = 0; i < 40; i++) lunar_tensor_set(w, i, urand() - 0.5);
    for (int i = 0; i < 4; i++) lunar_tensor_set(b, i, urand() - 0.5);
    CHECK(lunar_op_linear_forward(y, x, w, b) == LUNAR_OK);
    lunar_tensor *dx = lunar_tensor_to_device(x, DEV), *dw = lunar_tensor_to_device(w, DEV),
                 *db = lunar_tensor_to_device(b, DEV), *dy = lunar_tensor_zeros(LUNAR_F32, 2, ys, DEV);
    CHECK(lunar_op_linear_forward(dy, dx, dw, db) == LUNAR_OK);
    lunar_tensor *hy = lunar_tensor_to_device(dy, LUNAR_CPU);
    CHECK(close_f("op linear", lunar_tensor_data(hy), lunar_tensor_data(y), 24, 1e-5, 1e-6));
    /* a CPU weight with CUDA input: a clear error naming both devices */
    CHECK(lunar_op_linear_forward(dy, dx, w, db) == LUNAR_ERR_DEVICE);
    CHECK_MSG(strstr(lunar_last_error(), "weight is on cpu") && strstr(lunar_last_error(), "cuda:0"), "message: %s",
              lunar_last_error());
    /* cross entropy with device targets: checked on the host */
    lunar_tensor *t = lunar_tensor_new(LUNAR_I32, 1, ts, LUNAR_CPU);
    for (int i = 0; i < 6; i++) lunar_tensor_set(t, i, i % 4);
    lunar_tensor *dt = lunar_tensor_to_device(t, DEV);
    float lc = 0, lg = 0;
    CHECK(lunar_op_cross_entropy_forward(&lc, NULL, y, t, 0.1f) == LUNAR_OK);
    CHECK(lunar_op_cross_entropy_forward(&lg, NULL, dy, dt, 0.1f) == LUNAR_OK);
    CHECK_CLOSE(lg, lc, 1e-5, 1e-7);
    int64_t cc = -1, cg = -2;
    CHECK(lunar_op_accuracy_count(&cc, y, t) == LUNAR_OK && lunar_op_accuracy_count(&cg, dy, dt) == LUNAR_OK);
    CHECK(cc == cg);
    CHECK(lunar_tensor_set(dt, 2, 7) == LUNAR_OK);   /* class 7 of 4 */
    CHECK(lunar_op_cross_entropy_forward(&lg, NULL, dy, dt, 0.0f) == LUNAR_ERR_ARG);
    CHECK_MSG(strstr(lunar_last_error(), "target 7 of row 2"), "message: %s", lunar_last_error());
    double ss = 0;
    CHECK(lunar_op_sum_squares(&ss, dx) == LUNAR_OK);
    CUDA_OK();
    lunar_tensor_free(x); lunar_tensor_free(w); lunar_tensor_free(b); lunar_tensor_free(y); lunar_tensor_free(dx);
    lunar_tensor_free(dw); lunar_tensor_free(db); lunar_tensor_free(dy); lunar_tensor_free(hy); lunar_tensor_free(t);
    lunar_tensor_free(dt);
}

/* ---- bf16 (precision = 'bf16') --------------------------------------------------- */

static void *h_bytes(const void *d, size_t nbytes) {
    void *h = malloc(nbytes ? nbytes : 1);
    if (nbytes && lunar_cuda_memcpy(h, LUNAR_CPU, d, DEV, nbytes)) { free(h); return NULL; }
    return h;
}

static uint16_t *bf16_of(const float *x, size_t n) {
    uint16_t *h = malloc((n ? n : 1) * 2);
    for (size_t i = 0; i < n; i++) h[i] = lunar_f32_to_bf16(x[i]);
    return h;
}

static float *f32_of(const uint16_t *h, size_t n) {
    float *x = malloc((n ? n : 1) * 4);
    for (size_t i = 0; i < n; i++) x[i] = lunar_bf16_to_f32(h[i]);
    return x;
}

/* the bf16 linear on GPU and CPU; inp16: the activation in bf16; out16: the
 * forward's output in bf16 (the f32 sum plus bias rounded once); dout16: the
 * gradient in bf16 (the GEMM operand as given, dbias its column sums);
 * with_bias: a bias (0: NULL, for forward and dbias); shift: every device
 * pointer that many elements past an aligned block (odd bf16 offsets; a bias
 * not 16-byte aligned takes the unfused bias) */
static int linear_bf16_case(int M, int K, int N, int inp16, int out16, int dout16, int with_bias, int shift) {
    size_t ni = (size_t)M * K, nw = (size_t)N * K, no = (size_t)M * N, s = (size_t)shift;
    float *x = rand_f(ni, -1, 1), *w = rand_f(nw, -0.5, 0.5), *b = rand_f(N, -1, 1), *dy = rand_f(no, -1, 1);
    float *gw0 = rand_f(nw, -0.1, 0.1), *gb0 = rand_f(N, -0.1, 0.1);
    uint16_t *xh = bf16_of(x, ni), *wh = bf16_of(w, nw), *dyh = bf16_of(dy, no);
    const void *xin = inp16 ? (const void *)xh : (const void *)x, *dyin = dout16 ? (const void *)dyh : (const void *)dy;
    size_t xes = inp16 ? 2 : 4, yes = out16 ? 2 : 4, dyes = dout16 ? 2 : 4;
    const float *bias = with_bias ? b : NULL;
    void *y = malloc((no ? no : 1) * yes);
    float *dx = malloc((ni ? ni : 1) * 4), *gw = copy_f(gw0, nw), *gb = copy_f(gb0, N);
    lunar_cpu_linear_forward_bf16(y, out16, xin, inp16, wh, bias, M, K, N);
    lunar_cpu_linear_backward_bf16(dx, gw, with_bias ? gb : NULL, dyin, dout16, xin, inp16, wh, M, K, N);
    char *bx = d_alloc((ni + s) * xes), *bw = d_alloc((nw + s) * 2), *bdy = d_alloc((no + s) * dyes),
         *by = d_alloc((no + s) * yes);
    float *bb = d_alloc((N + s) * 4), *bdx = d_alloc((ni + s) * 4), *bgw = d_alloc((nw + s) * 4),
          *bgb = d_alloc((N + s) * 4);
    void *dxin = bx + s * xes, *ddy = bdy + s * dyes, *dyo = by + s * yes;
    uint16_t *dwh = (uint16_t *)bw + s;
    float *db_ = bb + s, *ddx = bdx + s, *dgw = bgw + s, *dgb = bgb + s;
    if (ni) lunar_cuda_memcpy(dxin, DEV, xin, LUNAR_CPU, ni * xes);
    if (nw) lunar_cuda_memcpy(dwh, DEV, wh, LUNAR_CPU, nw * 2);
    lunar_cuda_memcpy(db_, DEV, b, LUNAR_CPU, N * 4);
    lunar_cuda_memcpy(ddy, DEV, dyin, LUNAR_CPU, no * dyes);
    if (nw) lunar_cuda_memcpy(dgw, DEV, gw0, LUNAR_CPU, nw * 4);
    lunar_cuda_memcpy(dgb, DEV, gb0, LUNAR_CPU, N * 4);
    lunar_cuda_linear_forward_bf16(dyo, out16, dxin, inp16, dwh, with_bias ? db_ : NULL, M, K, N);
    lunar_cuda_linear_backward_bf16(ddx, dgw, with_bias ? dgb : NULL, ddy, dout16, dxin, inp16, dwh, M, K, N);
    float *gy = out16 ? h_from_16(dyo, no, LUNAR_BF16) : h_from(dyo, no), *gdx = h_from(ddx, ni),
          *ggw = h_from(dgw, nw), *ggb = h_from(dgb, N);
    float *cy = out16 ? f32_of(y, no) : copy_f(y, no);
    int ok = lunar_cuda_take_error() == LUNAR_OK;
    if (!ok) fprintf(stderr, "    linear bf16 M=%d K=%d N=%d: %s\n", M, K, N, lunar_last_error());
    char what[160];
    snprintf(what, sizeof what, "linear bf16 M=%d K=%d N=%d inp16=%d out16=%d dout16=%d bias=%d shift=%d", M, K, N,
             inp16, out16, dout16, with_bias, shift);
    /* a bf16 out: the two f32 sums (alike within f32 summation) each rounded
     * once, so within one bf16 rounding of each other */
    double yrt = out16 ? 1.0 / 128 : 1e-5;
    ok = ok && close_f(what, gy, cy, no, yrt, 1e-5) && close_f("  dinp", gdx, dx, ni, 1e-5, 1e-5) &&
         close_f("  dweight (accumulated)", ggw, gw, nw, 1e-5, 1e-5) &&
         close_f("  dbias (accumulated)", ggb, gb, N, 1e-5, 1e-6);
    d_free(bx, (ni + s) * xes); d_free(bw, (nw + s) * 2); d_free(bb, (N + s) * 4); d_free(bdy, (no + s) * dyes);
    d_free(by, (no + s) * yes); d_free(bdx, (ni + s) * 4); d_free(bgw, (nw + s) * 4); d_free(bgb, (N + s) * 4);
    free(x); free(w); free(b); free(dy); free(gw0); free(gb0); free(xh); free(wh); free(dyh); free(y); free(dx);
    free(gw); free(gb); free(gy); free(gdx); free(ggw); free(ggb); free(cy);
    return ok;
}

static void test_bf16(void) {
    /* the activation f32 or bf16; the output and the gradient both f32 or both bf16 */
    for (size_t i = 0; i < sizeof LIN / sizeof *LIN; i++)
        for (int inp16 = 0; inp16 <= 1; inp16++)
            for (int io16 = 0; io16 <= 1; io16++)
                CHECK(linear_bf16_case(LIN[i][0], LIN[i][1], LIN[i][2], inp16, io16, io16, 1, 0));
    /* a bf16 out without bias (cuBLASLt's bf16 D), and each bf16 flag alone */
    CHECK(linear_bf16_case(33, 200, 17, 1, 1, 1, 0, 0));
    CHECK(linear_bf16_case(64, 96, 48, 0, 1, 0, 0, 0));
    CHECK(linear_bf16_case(64, 96, 48, 0, 1, 0, 1, 0));
    CHECK(linear_bf16_case(64, 96, 48, 0, 0, 1, 1, 0));
    /* bf16 views at odd offsets; an unaligned bias takes the unfused bias (for a
     * bf16 out: added and rounded in one pass) */
    CHECK(linear_bf16_case(19, 37, 11, 1, 0, 0, 1, 1));
    CHECK(linear_bf16_case(64, 96, 48, 0, 0, 0, 1, 3));
    CHECK(linear_bf16_case(19, 37, 11, 1, 1, 1, 1, 1));
    CHECK(linear_bf16_case(64, 96, 48, 0, 1, 1, 0, 3));
    /* K = 0: out = bias (rounded when bf16), dinp = 0 */
    CHECK(linear_bf16_case(5, 0, 7, 0, 1, 1, 1, 0));
    CHECK(linear_bf16_case(5, 0, 7, 1, 0, 0, 1, 0));
    /* LayerNorm and GELU with bf16 outputs: within one bf16 rounding of the CPU's */
    const int M = 33, C = 768;
    size_t n = (size_t)M * C;
    float *x = rand_f(n, -3, 5), *w = rand_f(C, 0.5, 1.5), *b = rand_f(C, -1, 1);
    uint16_t *yc = malloc(n * 2), *gc = malloc(n * 2), *xc = malloc(n * 2);
    float *mean = malloc(M * 4), *rstd = malloc(M * 4);
    lunar_cpu_layernorm_forward_bf16(yc, mean, rstd, x, w, b, M, C, 1e-6f);
    lunar_cpu_gelu_forward_bf16(gc, x, 0, n);
    lunar_cpu_cast_bf16(xc, x, n);
    float *dx = d_from(x, n), *dw = d_from(w, C), *db = d_from(b, C), *dm = d_alloc(M * 4), *dr = d_alloc(M * 4);
    uint16_t *dy = d_alloc(n * 2), *dg = d_alloc(n * 2), *dc = d_alloc(n * 2);
    lunar_cuda_layernorm_forward_bf16(dy, dm, dr, dx, dw, db, M, C, 1e-6f);
    lunar_cuda_gelu_forward_bf16(dg, dx, 0, n);
    lunar_cuda_cast_bf16(dc, dx, n);
    uint16_t *hy = h_bytes(dy, n * 2), *hg = h_bytes(dg, n * 2), *hc = h_bytes(dc, n * 2);
    float *hr = h_from(dr, M);
    CUDA_OK();
    float *fy = f32_of(hy, n), *fyc = f32_of(yc, n), *fg = f32_of(hg, n), *fgc = f32_of(gc, n);
    CHECK(close_f("layernorm bf16 out", fy, fyc, n, 1.0 / 128, 1e-6));
    CHECK(close_f("layernorm bf16 rstd", hr, rstd, M, 1e-5, 1e-6));
    CHECK(close_f("gelu bf16 out", fg, fgc, n, 1.0 / 128, 1e-6));
    CHECK(same_bits("cast_bf16", hc, xc, n * 2));
    /* the optimizer's working copy: the plain step's param, rounded */
    size_t np = 10007;
    float *p0 = rand_f(np, -1, 1), *g = rand_f(np, -0.1, 0.1), *m0 = rand_f(np, -0.01, 0.01), *v0 = rand_f(np, 0, 1e-4);
    float *dp = d_from(p0, np), *dmm = d_from(m0, np), *dv = d_from(v0, np), *dgr = d_from(g, np);
    float *dp2 = d_from(p0, np), *dm2 = d_from(m0, np), *dv2 = d_from(v0, np);
    uint16_t *dph = d_alloc(np * 2), *dph2 = d_alloc(np * 2);
    lunar_cuda_adamw_step(dp, dmm, dv, dgr, np, 1e-3, 0.9, 0.999, 1e-8, 0.05, 3);
    lunar_cuda_adamw_step_bf16(dp2, dph, dm2, dv2, dgr, np, 1e-3, 0.9, 0.999, 1e-8, 0.05, 3);
    lunar_cuda_sgd_step_bf16(dp2, dph2, dm2, dgr, np, 0.1f, 0.9f, 1e-4f, 1, 0);
    float *hp = h_from(dp, np), *hp2 = h_from(dp2, np);
    uint16_t *hph = h_bytes(dph, np * 2), *hph2 = h_bytes(dph2, np * 2);
    CUDA_OK();
    CHECK(hp && hp2 && hph && hph2);
    uint16_t *want = bf16_of(hp, np);
    CHECK(same_bits("adamw_step_bf16 working copy", hph, want, np * 2));
    free(want);
    want = bf16_of(hp2, np);
    CHECK(same_bits("sgd_step_bf16 working copy", hph2, want, np * 2));
    free(want);
    d_free(dx, n * 4); d_free(dw, C * 4); d_free(db, C * 4); d_free(dm, M * 4); d_free(dr, M * 4);
    d_free(dy, n * 2); d_free(dg, n * 2); d_free(dc, n * 2); d_free(dp, np * 4); d_free(dmm, np * 4);
    d_free(dv, np * 4); d_free(dgr, np * 4); d_free(dp2, np * 4); d_free(dm2, np * 4); d_free(dv2, np * 4);
    d_free(dph, np * 2); d_free(dph2, np * 2);
    free(x); free(w); free(b); free(yc); free(gc); free(xc); free(mean); free(rstd); free(hy); free(hg); free(hc);
    free(hr); free(fy); free(fyc); free(fg); free(fgc); free(p0); free(g); free(m0); free(v0); free(hp); free(hp2);
    free(hph); free(hph2);
}

/* GELU from a bf16 input (the bf16 fc1 output of precision = 'bf16'): forward
 * to bf16 within one bf16 rounding of the CPU's, backward in f32 at the f32
 * GELU's tolerance, against the CPU's bf16 kernel and the f32 backward of the
 * widened input (the same math) */
static void test_gelu_bf16(void) {
    static const size_t NS[] = {1, 1000, 100003};
    for (size_t t = 0; t < sizeof NS / sizeof *NS; t++) {
        size_t n = NS[t];
        float *x = rand_f(n, -6, 6), *dy = rand_f(n, -1, 1);
        uint16_t *xh = bf16_of(x, n), *gc = malloc(n * 2);
        float *xw = f32_of(xh, n), *dxc = malloc(n * 4), *dxw = malloc(n * 4);
        lunar_cpu_gelu_forward_bf16(gc, xh, 1, n);
        lunar_cpu_gelu_backward_bf16(dxc, 0, dy, xh, n);
        lunar_cpu_gelu_backward(dxw, dy, xw, n);
        uint16_t *dxh = d_from_16(xh, n), *dg = d_alloc(n * 2);
        float *ddy = d_from(dy, n), *ddx = d_alloc(n * 4);
        lunar_cuda_gelu_forward_bf16(dg, dxh, 1, n);
        lunar_cuda_gelu_backward_bf16(ddx, 0, ddy, dxh, n);
        float *fg = h_from_16(dg, n, LUNAR_BF16), *gdx = h_from(ddx, n), *fgc = f32_of(gc, n);
        CUDA_OK();
        CHECK(close_f("gelu bf16 out from a bf16 inp", fg, fgc, n, 1.0 / 128, 1e-6));
        CHECK(close_f("gelu_backward_bf16 dinp", gdx, dxc, n, 2e-6, 1e-7));
        CHECK(close_f("gelu_backward_bf16 dinp vs f32 backward of the widened inp", gdx, dxw, n, 2e-6, 1e-7));
        /* a bf16 dinp: the f32 one rounded once (within a bf16 step of the CPU's) */
        uint16_t *ddxh = d_alloc(n * 2);
        lunar_cuda_gelu_backward_bf16(ddxh, 1, ddy, dxh, n);
        float *gdxh = h_from_16(ddxh, n, LUNAR_BF16);
        CUDA_OK();
        CHECK(close_f("gelu_backward_bf16 bf16 dinp", gdxh, dxc, n, 1.0 / 128, 1e-6));
        free(gdxh);
        d_free(ddxh, n * 2);
        /* the bf16 input gives the f32 input's forward on the widened values */
        float *dxw_d = d_from(xw, n);
        uint16_t *dg2 = d_alloc(n * 2);
        lunar_cuda_gelu_forward_bf16(dg2, dxw_d, 0, n);
        uint16_t *h1 = h_bytes(dg, n * 2), *h2 = h_bytes(dg2, n * 2);
        CUDA_OK();
        CHECK(same_bits("gelu bf16 out: bf16 inp vs its f32 widening", h1, h2, n * 2));
        d_free(dxh, n * 2); d_free(dg, n * 2); d_free(ddy, n * 4); d_free(ddx, n * 4); d_free(dxw_d, n * 4);
        d_free(dg2, n * 2);
        free(x); free(dy); free(xh); free(gc); free(xw); free(dxc); free(dxw); free(fg); free(gdx); free(fgc);
        free(h1); free(h2);
    }
}

/* kernels.h's bf16 attention (precision = 'bf16'): the path it took is
 * recorded (the own kernel where cuDNN is absent, the CPU emulation
 * included), and its results are the CPU's: against the CPU's bf16 kernel and
 * against the CPU's f32 attention of the widened inputs (the backward from the
 * device's own out and lse, so it is checked on its own), with the bf16
 * tolerances of the path that ran */
static void test_attention_bf16(void) {
    static const int SZ[][4] = {{2, 33, 2, 64}, {1, 20, 3, 40}, {2, 9, 2, 33}, {1, 1, 2, 16}, {1, 128, 2, 64}};
    int cudnn = lunar_cuda_cudnn_available();
    lunar_cuda_set_cudnn_attention(-1);
    for (size_t t = 0; t < sizeof SZ / sizeof *SZ; t++) {
        int B = SZ[t][0], N = SZ[t][1], H = SZ[t][2], D = SZ[t][3];
        size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D, nl = (size_t)B * H * N;
        float *qkv = rand_f(nq, -1.5, 1.5), *dout = rand_f(no, -1, 1);
        uint16_t *q16 = round_16(qkv, nq, LUNAR_BF16), *g16 = round_16(dout, no, LUNAR_BF16);
        uint16_t *dq = d_from_16(q16, nq), *dg = d_from_16(g16, no), *dout_ = d_alloc(no * 2), *ddq = d_alloc(nq * 2);
        float *dl = d_alloc(nl * 4);
        const char *why = NULL;
        lunar_cuda_attention_forward_bf16(dout_, dl, dq, B, N, H, D);
        lunar_attn_path pf = lunar_cuda_attention_last_path(0, &why);
        char why_f[800];
        snprintf(why_f, sizeof why_f, "%s", why ? why : "");
        lunar_cuda_attention_backward_bf16(ddq, dg, dq, dout_, dl, B, N, H, D);
        lunar_attn_path pb = lunar_cuda_attention_last_path(1, &why);
        uint16_t *ho = h_bytes(dout_, no * 2), *hdq = h_bytes(ddq, nq * 2);
        float *go = h_from_16(dout_, no, LUNAR_BF16), *gl = h_from(dl, nl), *gd = h_from_16(ddq, nq, LUNAR_BF16);
        int ok = lunar_cuda_take_error() == LUNAR_OK && ho && hdq && go && gl && gd;
        char what[128];
        snprintf(what, sizeof what, "attention bf16 B=%d N=%d H=%d D=%d (%s / %s)", B, N, H, D,
                 lunar_cuda_attention_path_name(pf), lunar_cuda_attention_path_name(pb));
        if (!ok) fprintf(stderr, "    %s: %s\n", what, lunar_last_error());
        /* a path is recorded; without cuDNN it is the own kernel, saying why */
        int paths = pf != LUNAR_ATTN_PATH_NONE && pb != LUNAR_ATTN_PATH_NONE &&
                    (cudnn || (pf == LUNAR_ATTN_PATH_OWN && pb == LUNAR_ATTN_PATH_OWN && why_f[0] && why && why[0]));
        if (!paths) fprintf(stderr, "    %s: unexpected paths (%s; %s)\n", what, why_f, why ? why : "");
        /* the CPU: its bf16 kernels on the same bf16 words, and its f32 kernels
         * on the widened values */
        uint16_t *co16 = malloc(no * 2), *cdq16 = malloc(nq * 2);
        float *cl16 = malloc(nl * 4), *co = malloc(no * 4), *cl = malloc(nl * 4), *cdq = malloc(nq * 4);
        if (ok) {
            lunar_cpu_attention_forward_bf16(co16, cl16, q16, B, N, H, D);
            lunar_cpu_attention_backward_bf16(cdq16, g16, q16, ho, gl, B, N, H, D);
            lunar_cpu_attention_forward(co, cl, qkv, B, N, H, D);
            lunar_cpu_attention_backward(cdq, dout, qkv, go, gl, B, N, H, D);
        }
        float *fco = ok ? f32_of(co16, no) : NULL, *fcdq = ok ? f32_of(cdq16, nq) : NULL;
        /* the own kernel: the f32 kernel rounded once; cuDNN rounds the
         * probabilities and dS to bf16 inside (test_attention_cudnn's tolerances) */
        int own_f = pf == LUNAR_ATTN_PATH_OWN, own_b = pb == LUNAR_ATTN_PATH_OWN;
        double rt = own_f ? 8e-3 : 2e-2, at = own_f ? 2e-3 : 2e-2, lt = own_f ? 1e-4 : 1e-3;
        double gt = own_b ? 8e-3 : 3e-2, ga = own_b ? 2e-3 : 3e-2;
        ok = ok && paths && close_f(what, go, fco, no, rt, at) && close_f("  lse vs cpu bf16", gl, cl16, nl, lt, lt / 10) &&
             close_f("  dqkv vs cpu bf16", gd, fcdq, nq, gt, ga) && close_f("  out vs cpu f32", go, co, no, rt, at) &&
             close_f("  lse vs cpu f32", gl, cl, nl, lt, lt / 10) && close_f("  dqkv vs cpu f32", gd, cdq, nq, gt, ga);
        CHECK(ok);
        d_free(dq, nq * 2); d_free(dg, no * 2); d_free(dout_, no * 2); d_free(ddq, nq * 2); d_free(dl, nl * 4);
        free(qkv); free(dout); free(q16); free(g16); free(ho); free(hdq); free(go); free(gl); free(gd);
        free(co16); free(cdq16); free(cl16); free(co); free(cl); free(cdq); free(fco); free(fcdq);
    }
    CUDA_OK();
}

#endif /* LUNAR_USE_CUDA */

int main(void) {
    (void)test_current_name_;   /* used only by RUN, absent from a build without CUDA */
    (void)test_current_failed_;
    if (!lunar_cuda_is_available()) {
        printf("skipped: no CUDA device (%s)\n", lunar_cuda_unavailable_reason());
#define SKIP_ONE(fn) SKIP(fn, "no CUDA device");
        CUDA_TESTS(SKIP_ONE)
        CUDNN_TESTS(SKIP_ONE)
        return TEST_SUMMARY();
    }
#ifdef LUNAR_USE_CUDA
    if (lunar_cuda_set_device(DEV)) {
        fprintf(stderr, "cuda:0: %s\n", lunar_last_error());
        return 1;
    }
#define RUN_ONE(fn) RUN(fn);
    CUDA_TESTS(RUN_ONE)
    if (lunar_cuda_cudnn_available()) {
        CUDNN_TESTS(RUN_ONE)
    } else {
#define SKIP_NO_CUDNN(fn) SKIP(fn, lunar_cuda_cudnn_unavailable_reason());
        CUDNN_TESTS(SKIP_NO_CUDNN)
    }
#endif
    return TEST_SUMMARY();
}
