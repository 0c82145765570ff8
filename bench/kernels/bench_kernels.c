/*
 * bench/kernels/bench_kernels.c: times every fast CPU kernel (lunar_cpu_*) at
 * the main job's shapes (ViT on Fashion-MNIST: B = 128 images of 28 x 28, patch
 * 4, N = 50 tokens, C = 192, H = 3, D = 64, MLP 768, depth 6, 10 classes),
 * llm.c dev/cuda style: each kernel is first validated against the reference
 * (lunar_ref_*_f32, sums in double) and only then timed. Prints the median and
 * best time of each, GFLOP/s or GB/s, cblas_sgemm at 4096^3 and at the linear
 * shapes, and the sum of the kernel times of one training step (a lower bound
 * on the step, with no framework overhead) as images/s. Then the GEMMs side
 * by side at the linears' shapes (forward, dinp, dweight) of the main job and
 * of ViT-S/16: OpenBLAS sgemm vs oneDNN f32, the own bf16 GEMM vs oneDNN bf16
 * (bf16 operands, f32 sums and output), against the FP32 and bf16 peaks the
 * bench measures with an FMA / VDPBF16PS loop.
 * Not a test, and not built by make. Build and run (from the repository root;
 * without libdnnl-dev drop -DLUNAR_USE_DNNL and -ldnnl):
 *
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -march=native -fopenmp -DLUNAR_USE_DNNL -Icore/include \
 *       $(pkg-config --cflags openblas) bench/kernels/bench_kernels.c \
 *       core/ops/cpu/[a-z]*.c core/ops/ref/[a-z]*.c core/rng.c core/tensor.c \
 *       core/status.c core/alloc.c core/cuda/cuda_none.c \
 *       $(pkg-config --libs openblas) -ldnnl -lm -o /tmp/bench_kernels
 *   OMP_WAIT_POLICY=PASSIVE /tmp/bench_kernels [threads=2] [repeats=15] [gemm]
 *
 * A third argument `gemm` runs only the peaks and the GEMM comparison;
 * `attention` only the attention kernels, f32 and bf16 side by side (timed
 * interleaved) at the main job's, ViT-Ti/16's, ViT-S/16's and the HybridViT's
 * (400 and 784 tokens, 12 heads) shapes, and the ring-attention block kernels.
 *
 * The GEMMs are OpenBLAS's: which kernel set it runs (Haswell = AVX2, SkylakeX
 * or Cooperlake = AVX-512) follows OPENBLAS_CORETYPE or its CPU detection, and
 * is printed first; compare e.g. OPENBLAS_CORETYPE=Haswell and =Cooperlake.
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "lunar/kernels.h"
#include "../../core/ops/cpu/gemm.h"   /* oneDNN and the own bf16 GEMM, side by side */
#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* ---- the main job's shapes ------------------------------------------------------- */

enum { B = 128, IMG = 28, PATCH = 4, L = 49, N = 50, C = 192, H = 3, D = 64, F = 768,
       K = 10, DEPTH = 6, M = B * N };
static const size_t PARAMS = 2684554;

/* ---- helpers ---------------------------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t rs = 88172645463325252ull;
static float frand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static float *rnd(size_t n, float scale) {
    float *x = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    for (size_t i = 0; i < n; i++) x[i] = scale * frand();
    return x;
}
static float *zer(size_t n) {
    float *x = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
    memset(x, 0, n * sizeof(float));
    return x;
}

static int failures = 0;

/* max |a - b| / (max |b| + tiny) must be below tol */
static void validate(const char *what, const float *got, const float *want, size_t n, double tol) {
    double emax = 0.0, wmax = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (e > emax || isnan(e)) emax = isnan(e) ? INFINITY : e;
        if (fabs((double)want[i]) > wmax) wmax = fabs((double)want[i]);
    }
    double rel = emax / (wmax + 1e-30);
    if (!(rel <= tol)) {
        printf("  VALIDATION FAILED %-28s max err %.3g (relative to max %.3g: %.3g > %.1g)\n", what,
               emax, wmax, rel, tol);
        failures++;
    }
}

static int repeats = 15;

/* time fn(arg): 2 warm-up calls, then the median and the best of `repeats` */
typedef void (*bench_fn)(void);
static double med_ms, best_ms;
static void timeit(bench_fn fn) {
    double t[101];
    int r = repeats > 101 ? 101 : repeats;
    fn();
    fn();
    for (int i = 0; i < r; i++) {
        double t0 = now();
        fn();
        t[i] = (now() - t0) * 1e3;
    }
    for (int i = 1; i < r; i++) { /* insertion sort */
        double v = t[i];
        int j = i - 1;
        while (j >= 0 && t[j] > v) { t[j + 1] = t[j]; j--; }
        t[j + 1] = v;
    }
    med_ms = t[r / 2];
    best_ms = t[0];
}

static void report(const char *name, double gflop, double gbytes) {
    printf("  %-34s %9.3f ms  (best %8.3f)", name, med_ms, best_ms);
    if (gflop > 0) printf("  %7.1f GFLOP/s", gflop / (med_ms * 1e-3));
    if (gbytes > 0) printf("  %7.1f GB/s", gbytes / (med_ms * 1e-3));
    printf("\n");
}

/* ---- the kernels' state ------------------------------------------------------------ */

static float *img, *patches, *dimg;                         /* patchify */
static float *lin_in, *lin_w, *lin_b, *lin_out, *lin_dout, *lin_din, *lin_dw, *lin_db;
static int lM, lK, lN;                                     /* current linear shape */
static float *x, *y, *mean, *rstd, *lw, *lb, *dy, *dx, *dlw, *dlb; /* layernorm [M, C] */
static float *h, *hg, *dh;                                 /* gelu [M, F] */
static float *qkv, *att, *lse, *datt, *dqkv;               /* attention */
static float *tok_x, *cls, *pos, *tok, *dcls, *dpos;       /* embed */
static float *logits, *dlogits, loss;                      /* cross-entropy */
static int32_t *targets;
static float *param, *adam_m, *adam_v, *grad, *sgd_buf;    /* optimizer */
static float *ga, *gb, *gc;                                /* sgemm 4096 */
static int S2[2] = {IMG, IMG};

static void b_patchify_f(void) { lunar_cpu_patchify_forward(patches, img, B, 1, 2, S2, PATCH); }
static void b_patchify_b(void) { lunar_cpu_patchify_backward(dimg, patches, B, 1, 2, S2, PATCH); }
static void b_linear_f(void) { lunar_cpu_linear_forward(lin_out, lin_in, lin_w, lin_b, lM, lK, lN); }
static void b_linear_b(void) {
    lunar_cpu_linear_backward(lin_din, lin_dw, lin_db, lin_dout, lin_in, lin_w, lM, lK, lN);
}
static void b_linear_b_nodin(void) {
    lunar_cpu_linear_backward(NULL, lin_dw, lin_db, lin_dout, lin_in, lin_w, lM, lK, lN);
}
static void b_ln_f(void) { lunar_cpu_layernorm_forward(y, mean, rstd, x, lw, lb, M, C, 1e-6f); }
static void b_ln_b(void) { lunar_cpu_layernorm_backward(dx, dlw, dlb, dy, x, lw, mean, rstd, M, C); }
static void b_gelu_f(void) { lunar_cpu_gelu_forward(hg, h, (size_t)M * F); }
static void b_gelu_b(void) { lunar_cpu_gelu_backward(dh, hg, h, (size_t)M * F); }
static void b_att_f(void) { lunar_cpu_attention_forward(att, lse, qkv, B, N, H, D); }
static void b_att_b(void) { lunar_cpu_attention_backward(dqkv, datt, qkv, att, lse, B, N, H, D); }
static void b_embed_f(void) { lunar_cpu_embed_tokens_forward(tok, tok_x, cls, pos, B, L, C); }
static void b_embed_b(void) { lunar_cpu_embed_tokens_backward(tok_x, dcls, dpos, tok, B, L, C); }
static void b_dropout(void) { lunar_cpu_dropout_forward(y, x, (size_t)M * C, 0.1f, 7, 11, 0); }
static void b_add(void) { lunar_cpu_add(y, x, dy, (size_t)M * C); }
static void b_ce_f(void) { lunar_cpu_cross_entropy_forward(&loss, NULL, logits, targets, B, K, 0.1f); }
static void b_ce_b(void) { lunar_cpu_cross_entropy_backward(dlogits, logits, targets, B, K, 0.1f, 1.0f); }
static void b_adamw(void) {
    lunar_cpu_adamw_step(param, adam_m, adam_v, grad, PARAMS, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 10);
}
static void b_sgd(void) { lunar_cpu_sgd_step(param, sgd_buf, grad, PARAMS, 1e-3f, 0.9f, 1e-4f, 0, 0); }
static volatile double sink;
static void b_sumsq(void) { sink = lunar_cpu_sum_squares(grad, PARAMS); }
static int gM, gN, gK;
static CBLAS_TRANSPOSE gTa, gTb;
static void b_sgemm(void) {
    cblas_sgemm(CblasRowMajor, gTa, gTb, gM, gN, gK, 1.0f, ga, gTa == CblasNoTrans ? gK : gM, gb,
                gTb == CblasNoTrans ? gN : gK, 0.0f, gc, gN);
}

/* baseline: attention forward with one cblas_sgemm per (image, head) for Q K^T and P V */
static float *base_s;
static void b_att_blas_f(void) {
    const int qs = 3 * H * D, os = H * D;
    const float scale = 1.0f / sqrtf((float)D);
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, hh = bh % H;
        float S[N * N];
        const float *Q = qkv + (size_t)b * N * qs + hh * D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, D, scale, Q, qs, Q + os, qs, 0.0f, S, N);
        for (int i = 0; i < N; i++) {
            float mx = -INFINITY, s = 0;
            for (int j = 0; j < N; j++) mx = fmaxf(mx, S[i * N + j]);
            for (int j = 0; j < N; j++) s += S[i * N + j] = expf(S[i * N + j] - mx);
            for (int j = 0; j < N; j++) S[i * N + j] /= s;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, D, N, 1.0f, S, N, Q + 2 * os, qs,
                    0.0f, base_s + (size_t)b * N * os + hh * D, os);
    }
}

/* ---- peaks and the GEMM comparison -------------------------------------------------- */

/* GFLOP/s of a loop of independent 512-bit FMAs (bf16 = 0) or VDPBF16PS
 * (bf16 = 1: 64 FLOP each) on every thread, the best of 5; 0 when this build
 * has no such instruction. */
static double peak_gflops(int bf16) {
#if defined(__AVX512F__)
#if !defined(__AVX512BF16__)
    if (bf16) return 0.0;
#endif
    const long iters = 20000000;
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        int nt = 1;
        double t0 = now();
#pragma omp parallel
        {
#ifdef _OPENMP
#pragma omp single
            nt = omp_get_num_threads();
#endif
            __m512 acc[12];
            for (int j = 0; j < 12; j++) acc[j] = _mm512_set1_ps(1e-3f * (float)j);
            __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-7f);
            if (!bf16) {
                for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
                    for (int j = 0; j < 12; j++) acc[j] = _mm512_fmadd_ps(acc[j], a, b);
            } else {
#if defined(__AVX512BF16__)
                __m512bh ab = _mm512_cvtne2ps_pbh(a, a), bb = _mm512_cvtne2ps_pbh(b, b);
                for (long i = 0; i < iters; i++)
#pragma GCC unroll 12
                    for (int j = 0; j < 12; j++) acc[j] = _mm512_dpbf16_ps(acc[j], ab, bb);
#endif
            }
            float s = 0;
            for (int j = 0; j < 12; j++) s += _mm512_reduce_add_ps(acc[j]);
            sink += s;
        }
        double t = now() - t0;
        double g = (double)nt * iters * 12 * (bf16 ? 64 : 32) / t / 1e9;
        if (g > best) best = g;
    }
    return best;
#else
    return 0.0;
#endif
}

/* one GEMM case: C = A B (+ C), with A, B as lunar_gemm_mat in f32 and bf16 */
static lunar_gemm_mat gA, gB, gA16, gB16;
static int qM, qN, qK, qacc;
static CBLAS_TRANSPOSE qTa, qTb;
static float *qC;
static void b_q_blas(void) {
    cblas_sgemm(CblasRowMajor, qTa, qTb, qM, qN, qK, 1.0f, gA.p, qTa == CblasNoTrans ? (int)gA.rs : (int)gA.cs,
                gB.p, qTb == CblasNoTrans ? (int)gB.rs : (int)gB.cs, qacc ? 1.0f : 0.0f, qC, qN);
}
static void b_q_dnnl(void) {
    if (lunar_cpu_dnnl_gemm(qM, qN, qK, &gA, &gB, NULL, qC, 0, (size_t)qN, qacc)) failures++;
}
static void b_q_own16(void) {
    if (lunar_cpu_gemm_bf16_own(qM, qN, qK, &gA16, &gB16, qC, (size_t)qN, qacc)) failures++;
}
static void b_q_dnnl16(void) {
    if (lunar_cpu_dnnl_gemm(qM, qN, qK, &gA16, &gB16, NULL, qC, 0, (size_t)qN, qacc)) failures++;
}

/* the bf16 linear layer as training calls it (inp bf16, out bf16, dout f32) */
static uint16_t *l16_in, *l16_w, *l16_out;
static float *l16_b, *l16_dout, *l16_din, *l16_dw, *l16_db;
static void b_l16_f(void) { lunar_cpu_linear_forward_bf16(l16_out, 1, l16_in, 1, l16_w, l16_b, lM, lK, lN); }
static void b_l16_b(void) {
    lunar_cpu_linear_backward_bf16(l16_din, l16_dw, l16_db, l16_dout, 0, l16_in, 1, l16_w, lM, lK, lN);
}

/* the median ms of each of fn[0..n) (NULL: skipped, 0), timed interleaved (one call
 * of each per round, after 2 warm-up rounds) so that the load of a shared machine
 * falls on all of them alike */
static void timeit_interleaved(bench_fn *fn, int n, double *med) {
    double t[4][101];
    int r = repeats > 101 ? 101 : repeats;
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < n; i++)
            if (fn[i]) fn[i]();
    for (int k = 0; k < r; k++)
        for (int i = 0; i < n; i++) {
            if (!fn[i]) continue;
            double t0 = now();
            fn[i]();
            t[i][k] = (now() - t0) * 1e3;
        }
    for (int i = 0; i < n; i++) {
        med[i] = 0;
        if (!fn[i]) continue;
        for (int a = 1; a < r; a++) { /* insertion sort */
            double v = t[i][a];
            int j = a - 1;
            while (j >= 0 && t[i][j] > v) { t[i][j + 1] = t[i][j]; j--; }
            t[i][j + 1] = v;
        }
        med[i] = t[i][r / 2];
    }
}

static void b_l16_own_f(void) { lunar_cpu_dnnl_enable(0); b_l16_f(); lunar_cpu_dnnl_enable(1); }
static void b_l16_own_b(void) { lunar_cpu_dnnl_enable(0); b_l16_b(); lunar_cpu_dnnl_enable(1); }
static void b_l16_dnnl_f(void) { b_l16_f(); }
static void b_l16_dnnl_b(void) { b_l16_b(); }

static uint16_t *to16(const float *x, size_t n) {
    uint16_t *h = aligned_alloc(64, (n * 2 + 63) & ~(size_t)63);
    lunar_cpu_cast_bf16(h, x, n);
    return h;
}

static void gemm_comparison(void) {
    double p32 = peak_gflops(0), p16 = peak_gflops(1);
    printf("\npeaks (this run): FP32 FMA %.0f GFLOP/s, bf16 VDPBF16PS %.0f GFLOP/s\n", p32, p16);
    printf("oneDNN in this build: %s\n", lunar_cpu_dnnl_active() ? "yes" : "no (NO_DNNL: its columns are n/a)");
    /* the linears (rows, in, out) of the main job (B 128 x 50 tokens, C 192) and
     * ViT-S/16 (B 8 x 197 tokens, C 384) */
    const struct { const char *name; int rows, in, out; } lin[] = {
        {"main qkv", 6400, 192, 576}, {"main proj", 6400, 192, 192}, {"main fc1", 6400, 192, 768},
        {"main fc2", 6400, 768, 192}, {"S/16 qkv", 1576, 384, 1152}, {"S/16 proj", 1576, 384, 384},
        {"S/16 fc1", 1576, 384, 1536}, {"S/16 fc2", 1576, 1536, 384},
    };
    size_t big = (size_t)6400 * 1536;
    float *X = rnd(big, 1), *W = rnd((size_t)1536 * 1536, 0.1f), *DY = rnd(big, 1), *C1 = zer(big), *C2 = zer(big);
    uint16_t *X16 = to16(X, big), *W16 = to16(W, (size_t)1536 * 1536), *DY16 = to16(DY, big);
    printf("GEMM GFLOP/s (median of %d, the four timed in turn): OpenBLAS f32 | oneDNN f32 | own bf16 | oneDNN bf16"
           "  (%% of the FP32 / bf16 peak; oneDNN's kernels)\n", repeats);
    double s32 = 0, s16 = 0, sb = 0, so = 0, fl_all = 0;
    for (size_t s = 0; s < sizeof lin / sizeof lin[0]; s++) {
        const int R = lin[s].rows, Ci = lin[s].in, Co = lin[s].out;
        for (int g = 0; g < 3; g++) {   /* forward, dinp, dweight */
            const char *what = g == 0 ? "fwd" : g == 1 ? "dinp" : "dW";
            if (g == 0) {          /* [R, Co] = X[R, Ci] W^T */
                qM = R; qN = Co; qK = Ci; qacc = 0; qTa = CblasNoTrans; qTb = CblasTrans;
                gA = (lunar_gemm_mat){X, 0, (size_t)Ci, 1}; gB = (lunar_gemm_mat){W, 0, 1, (size_t)Ci};
                gA16 = (lunar_gemm_mat){X16, 1, (size_t)Ci, 1}; gB16 = (lunar_gemm_mat){W16, 1, 1, (size_t)Ci};
            } else if (g == 1) {   /* [R, Ci] = DY[R, Co] W[Co, Ci] */
                qM = R; qN = Ci; qK = Co; qacc = 0; qTa = CblasNoTrans; qTb = CblasNoTrans;
                gA = (lunar_gemm_mat){DY, 0, (size_t)Co, 1}; gB = (lunar_gemm_mat){W, 0, (size_t)Ci, 1};
                gA16 = (lunar_gemm_mat){DY16, 1, (size_t)Co, 1}; gB16 = (lunar_gemm_mat){W16, 1, (size_t)Ci, 1};
            } else {               /* [Co, Ci] += DY^T X */
                qM = Co; qN = Ci; qK = R; qacc = 1; qTa = CblasTrans; qTb = CblasNoTrans;
                gA = (lunar_gemm_mat){DY, 0, 1, (size_t)Co}; gB = (lunar_gemm_mat){X, 0, (size_t)Ci, 1};
                gA16 = (lunar_gemm_mat){DY16, 1, 1, (size_t)Co}; gB16 = (lunar_gemm_mat){X16, 1, (size_t)Ci, 1};
            }
            size_t nc = (size_t)qM * qN;
            double fl = 2e-9 * qM * (double)qN * qK, r[4] = {0, 0, 0, 0};
            const char *i32 = lunar_cpu_dnnl_gemm_impl(qM, qN, qK, &gA, &gB, NULL, 0, (size_t)qN, qacc);
            char impl32[64];
            snprintf(impl32, sizeof impl32, "%s", i32 ? i32 : "n/a");
            const char *i16 = lunar_cpu_dnnl_gemm_impl(qM, qN, qK, &gA16, &gB16, NULL, 0, (size_t)qN, qacc);
            /* validation: oneDNN against OpenBLAS (f32) and against the own GEMM (bf16) */
            int save_acc = qacc;
            qacc = 0;
            qC = C1; b_q_blas();
            if (i32) { qC = C2; b_q_dnnl(); validate("oneDNN f32 vs OpenBLAS", C2, C1, nc, 1e-5); }
            qC = C1; b_q_own16();
            if (i16) { qC = C2; b_q_dnnl16(); validate("oneDNN bf16 vs own bf16", C2, C1, nc, 1e-5); }
            qacc = save_acc;
            qC = C1;
            bench_fn fns[4] = {b_q_blas, i32 ? b_q_dnnl : NULL, b_q_own16, i16 ? b_q_dnnl16 : NULL};
            double med[4];
            timeit_interleaved(fns, 4, med);
            for (int v = 0; v < 4; v++) r[v] = med[v] > 0 ? fl / (med[v] * 1e-3) : 0;
            printf("  %-10s %-4s %5dx%4dx%4d  %6.0f | %6.0f | %6.0f | %6.0f  (%3.0f%% %3.0f%% | %3.0f%% %3.0f%%)  %s, %s\n",
                   lin[s].name, what, qM, qN, qK, r[0], r[1], r[2], r[3], 100 * r[0] / p32, 100 * r[1] / p32,
                   p16 > 0 ? 100 * r[2] / p16 : 0, p16 > 0 ? 100 * r[3] / p16 : 0, impl32, i16 ? i16 : "n/a");
            if (r[0] > 0) sb += fl / r[0];
            if (r[1] > 0) s32 += fl / r[1];
            if (r[2] > 0) so += fl / r[2];
            if (r[3] > 0) s16 += fl / r[3];
            fl_all += fl;
        }
    }
    printf("  all shapes (total FLOPs / total median time): %6.0f | %6.0f | %6.0f | %6.0f GFLOP/s\n",
           sb > 0 ? fl_all / sb : 0, s32 > 0 ? fl_all / s32 : 0, so > 0 ? fl_all / so : 0,
           s16 > 0 ? fl_all / s16 : 0);

    /* the bf16 linear as training calls it: inp and out bf16, dout f32 (rounded by the GEMM path) */
    printf("bf16 linear layer (kernels.h: inp/out bf16, dout f32), ms: own GEMM | oneDNN\n");
    l16_in = X16; l16_w = W16; l16_out = to16(C1, big); l16_dout = DY; l16_din = C1; l16_dw = C2;
    l16_b = rnd(1536, 0.1f); l16_db = zer(1536);
    for (size_t s = 0; s < sizeof lin / sizeof lin[0]; s++) {
        lM = lin[s].rows; lK = lin[s].in; lN = lin[s].out;
        double t[2][2];
        bench_fn fns[4] = {b_l16_own_f, b_l16_dnnl_f, b_l16_own_b, b_l16_dnnl_b};
        double med[4];
        timeit_interleaved(fns, 4, med);
        t[0][0] = med[0]; t[1][0] = med[1]; t[0][1] = med[2]; t[1][1] = med[3];
        printf("  %-10s forward %7.3f | %7.3f   backward %7.3f | %7.3f   (oneDNN %.2fx)\n", lin[s].name,
               t[0][0], t[1][0], t[0][1], t[1][1], (t[0][0] + t[0][1]) / (t[1][0] + t[1][1]));
    }
    free(X); free(W); free(DY); free(C1); free(C2); free(X16); free(W16); free(DY16); free(l16_out);
    free(l16_b); free(l16_db);
}

/* ---- main ------------------------------------------------------------------------- */

struct linear_shape { const char *name; int M, K, N, need_dinp; };

/* ---- attention, f32 and bf16 side by side (third argument `attention`) ---------- */

static int aB, aN, aH, aD;                                   /* current attention shape */
static float *a_qkv, *a_out, *a_lse, *a_dout, *a_dqkv;
static uint16_t *a_qkv16, *a_out16, *a_dout16, *a_dqkv16;
static void b_a32_f(void) { lunar_cpu_attention_forward(a_out, a_lse, a_qkv, aB, aN, aH, aD); }
static void b_a32_b(void) { lunar_cpu_attention_backward(a_dqkv, a_dout, a_qkv, a_out, a_lse, aB, aN, aH, aD); }
static void b_a16_f(void) { lunar_cpu_attention_forward_bf16(a_out16, a_lse, a_qkv16, aB, aN, aH, aD); }
static void b_a16_b(void) {
    lunar_cpu_attention_backward_bf16(a_dqkv16, a_dout16, a_qkv16, a_out16, a_lse, aB, aN, aH, aD);
}

/* one block of ring attention: the queries of a_qkv [aB, aN, 3, aH, aD] against
 * the keys and values a_kv [aB, bNk, 2, aH, aD], merged into a_out, a_lse */
static int bNk;
static float *a_kv, *a_dkv;
static void b_blk_f(void) { lunar_cpu_attention_block_forward(a_out, a_lse, a_qkv, a_kv, aB, aN, bNk, aH, aD, 1); }
static void b_blk_b(void) {
    lunar_cpu_attention_block_backward(a_dqkv, a_dkv, a_dout, a_qkv, a_kv, a_out, a_lse, aB, aN, bNk, aH, aD);
}

/* The block kernels of ring attention (lunar.parallel.domain) at the HybridViT's
 * shapes of domain 2 at 224^2 (784 tokens, 392 per rank): a block of the other
 * rank's 392 keys (ring) or all 784 (all-gather); forward 4 B H Nq Nk D FLOPs,
 * backward 10 B H Nq Nk D. */
static void block_comparison(double p32) {
    printf("attention block ms (GFLOP/s, %% of the FP32 peak): f32 block forward (merge) | f32 block backward\n");
    const struct { int nq, nk; } sh[] = {{392, 392}, {392, 784}};
    for (int s = 0; s < 2; s++) {
        aB = 1; aN = sh[s].nq; bNk = sh[s].nk; aH = 12; aD = 64;
        size_t nq = (size_t)aB * aN * 3 * aH * aD, no = (size_t)aB * aN * aH * aD, nk = (size_t)aB * bNk * 2 * aH * aD;
        a_qkv = rnd(nq, 1.5f); a_kv = rnd(nk, 1.5f); a_dout = rnd(no, 1); a_out = zer(no); a_dqkv = zer(nq);
        a_dkv = zer(nk); a_lse = zer((size_t)aB * aH * aN);
        lunar_cpu_attention_block_forward(a_out, a_lse, a_qkv, a_kv, aB, aN, bNk, aH, aD, 0);
        bench_fn fn[2] = {b_blk_f, b_blk_b};
        double med[2], fl[2] = {4.0, 10.0};
        timeit_interleaved(fn, 2, med);
        printf("  HybViT 224 block B 1 Nq %3d Nk %3d H %d D %d ", aN, bNk, aH, aD);
        for (int i = 0; i < 2; i++) {
            double g = fl[i] * aB * aH * (double)aN * bNk * aD / (med[i] * 1e-3) * 1e-9;
            printf(" %s %7.3f (%4.0f, %3.0f%%)", i ? "|" : "", med[i], g, 100 * g / p32);
        }
        printf("\n");
        free(a_qkv); free(a_kv); free(a_dout); free(a_out); free(a_dqkv); free(a_dkv); free(a_lse);
    }
}

/* The attention kernels (forward 4 B H N^2 D FLOPs: Q K^T, P V; backward
 * 10 B H N^2 D: the scores again, dP, dQ, dK, dV), f32 and bf16 timed
 * interleaved, against the FP32 FMA peak of this run. */
static void attention_comparison(void) {
    double p32 = peak_gflops(0);
    printf("\npeak (this run): FP32 FMA %.0f GFLOP/s\n", p32);
    printf("attention ms (GFLOP/s, %% of the FP32 peak): f32 forward | bf16 forward | f32 backward | bf16 backward\n");
    const struct { const char *name; int b, n, h, d; } sh[] = {
        {"main job", B, N, H, D}, {"ViT-Ti/16", 16, 197, 3, 64}, {"ViT-S/16", 8, 197, 6, 64},
        {"HybViT 160", 1, 400, 12, 64}, {"HybViT 224", 1, 784, 12, 64}};
    for (int s = 0; s < 5; s++) {
        aB = sh[s].b; aN = sh[s].n; aH = sh[s].h; aD = sh[s].d;
        size_t nq = (size_t)aB * aN * 3 * aH * aD, no = (size_t)aB * aN * aH * aD;
        a_qkv = rnd(nq, 1.5f); a_dout = rnd(no, 1); a_out = zer(no); a_dqkv = zer(nq); a_lse = zer((size_t)aB * aH * aN);
        a_qkv16 = to16(a_qkv, nq); a_dout16 = to16(a_dout, no);
        a_out16 = aligned_alloc(64, (no * 2 + 63) & ~(size_t)63); a_dqkv16 = aligned_alloc(64, (nq * 2 + 63) & ~(size_t)63);
        bench_fn fn[4] = {b_a32_f, b_a16_f, b_a32_b, b_a16_b};
        double med[4], fl[4] = {4.0, 4.0, 10.0, 10.0};
        timeit_interleaved(fn, 4, med);
        printf("  %-10s B %3d N %3d H %d D %d ", sh[s].name, aB, aN, aH, aD);
        for (int i = 0; i < 4; i++) {
            double g = fl[i] * aB * aH * (double)aN * aN * aD / (med[i] * 1e-3) * 1e-9;
            printf(" %s %7.3f (%4.0f, %3.0f%%)", i ? "|" : "", med[i], g, 100 * g / p32);
        }
        printf("\n");
        free(a_qkv); free(a_dout); free(a_out); free(a_dqkv); free(a_lse);
        free(a_qkv16); free(a_dout16); free(a_out16); free(a_dqkv16);
    }
    block_comparison(p32);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    if (argc > 2) repeats = atoi(argv[2]);
    if (repeats < 1) repeats = 1;
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    openblas_set_num_threads(threads);
    printf("bench_kernels: %d threads, median of %d (ms), main-job shapes B=%d N=%d C=%d H=%d D=%d F=%d\n",
           threads, repeats, B, N, C, H, D, F);
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("OpenBLAS: %s, kernels: %s (OPENBLAS_CORETYPE=%s)\n", openblas_get_config(),
           openblas_get_corename(), ct ? ct : "(unset)");
    int gemm_only = argc > 3 && strcmp(argv[3], "gemm") == 0;
    if (argc > 3 && strcmp(argv[3], "attention") == 0) {
        attention_comparison();
        return 0;
    }

    /* allocate */
    img = rnd((size_t)B * IMG * IMG, 1); patches = zer((size_t)B * L * 16); dimg = zer((size_t)B * IMG * IMG);
    size_t lmax = (size_t)M * F;
    lin_in = rnd(lmax, 1); lin_w = rnd((size_t)F * F, 0.1f); lin_b = rnd(F, 0.1f); lin_out = zer(lmax);
    lin_dout = rnd(lmax, 1); lin_din = zer(lmax); lin_dw = zer((size_t)F * F); lin_db = zer(F);
    x = rnd((size_t)M * C, 1); y = zer((size_t)M * C); mean = zer(M); rstd = zer(M);
    lw = rnd(C, 1); lb = rnd(C, 1); dy = rnd((size_t)M * C, 1); dx = zer((size_t)M * C); dlw = zer(C); dlb = zer(C);
    h = rnd((size_t)M * F, 3); hg = zer((size_t)M * F); dh = zer((size_t)M * F);
    qkv = rnd((size_t)M * 3 * C, 1.5f); att = zer((size_t)M * C); lse = zer((size_t)B * H * N);
    datt = rnd((size_t)M * C, 1); dqkv = zer((size_t)M * 3 * C); base_s = zer((size_t)M * C);
    tok_x = rnd((size_t)B * L * C, 1); cls = rnd(C, 1); pos = rnd((size_t)N * C, 1); tok = zer((size_t)M * C);
    dcls = zer(C); dpos = zer((size_t)N * C);
    logits = rnd((size_t)B * K, 3); dlogits = zer((size_t)B * K);
    targets = malloc(B * sizeof *targets);
    for (int b = 0; b < B; b++) targets[b] = b % K;
    param = rnd(PARAMS, 0.1f); adam_m = rnd(PARAMS, 0.01f); adam_v = zer(PARAMS); grad = rnd(PARAMS, 0.01f);
    sgd_buf = rnd(PARAMS, 0.01f);
    for (size_t i = 0; i < PARAMS; i++) adam_v[i] = 1e-4f * (1.0f + frand());

    if (gemm_only) {
        gemm_comparison();
        printf("%s\n", failures ? "VALIDATION FAILED" : "validation ok");
        return failures ? 1 : 0;
    }

    /* ---- validation against the reference (f32 reference: sums in double) ---- */
    printf("\nvalidating against lunar_ref_*_f32 ...\n");
    {
        float *r1 = zer(lmax), *r2 = zer(lmax), *r3 = zer(lmax), *r4 = zer(lmax);
        b_patchify_f(); lunar_ref_patchify_forward_f32(r1, img, B, 1, 2, S2, PATCH);
        validate("patchify", patches, r1, (size_t)B * L * 16, 0);
        b_patchify_b(); lunar_ref_patchify_backward_f32(r1, patches, B, 1, 2, S2, PATCH);
        validate("patchify backward", dimg, r1, (size_t)B * IMG * IMG, 0);
        /* linear on 256 rows of each shape (the BLAS path does not depend on M) */
        const int vK[] = {16, 192, 192, 192, 768, 192}, vN[] = {192, 576, 192, 768, 192, 10};
        for (int s = 0; s < 6; s++) {
            int m = 256, k = vK[s], n = vN[s];
            lunar_cpu_linear_forward(lin_out, lin_in, lin_w, lin_b, m, k, n);
            lunar_ref_linear_forward_f32(r1, lin_in, lin_w, lin_b, m, k, n);
            validate("linear forward", lin_out, r1, (size_t)m * n, 1e-5);
            memset(lin_dw, 0, (size_t)n * k * 4); memset(lin_db, 0, (size_t)n * 4);
            memset(r2, 0, (size_t)n * k * 4); memset(r3, 0, (size_t)n * 4);
            lunar_cpu_linear_backward(lin_din, lin_dw, lin_db, lin_dout, lin_in, lin_w, m, k, n);
            lunar_ref_linear_backward_f32(r1, r2, r3, lin_dout, lin_in, lin_w, m, k, n);
            validate("linear dinp", lin_din, r1, (size_t)m * k, 1e-5);
            validate("linear dweight", lin_dw, r2, (size_t)n * k, 1e-5);
            validate("linear dbias", lin_db, r3, n, 1e-5);
        }
        b_ln_f(); lunar_ref_layernorm_forward_f32(r1, r2, r3, x, lw, lb, M, C, 1e-6f);
        validate("layernorm out", y, r1, (size_t)M * C, 1e-5);
        validate("layernorm mean", mean, r2, M, 1e-5);
        validate("layernorm rstd", rstd, r3, M, 1e-5);
        memset(dlw, 0, C * 4); memset(dlb, 0, C * 4); memset(r2, 0, C * 4); memset(r3, 0, C * 4);
        b_ln_b(); lunar_ref_layernorm_backward_f32(r1, r2, r3, dy, x, lw, mean, rstd, M, C);
        validate("layernorm dinp", dx, r1, (size_t)M * C, 1e-5);
        validate("layernorm dweight", dlw, r2, C, 1e-5);
        validate("layernorm dbias", dlb, r3, C, 1e-5);
        b_gelu_f(); lunar_ref_gelu_forward_f32(r1, h, (size_t)M * F);
        validate("gelu", hg, r1, (size_t)M * F, 1e-6);
        b_gelu_b(); lunar_ref_gelu_backward_f32(r1, hg, h, (size_t)M * F);
        validate("gelu backward", dh, r1, (size_t)M * F, 1e-6);
        b_att_f(); lunar_ref_attention_forward_f32(r1, r2, qkv, B, N, H, D);
        validate("attention out", att, r1, (size_t)M * C, 1e-5);
        validate("attention lse", lse, r2, (size_t)B * H * N, 1e-5);
        b_att_b(); lunar_ref_attention_backward_f32(r1, datt, qkv, att, lse, B, N, H, D);
        validate("attention dqkv", dqkv, r1, (size_t)M * 3 * C, 1e-5);
        b_att_blas_f();
        validate("attention (per-head sgemm baseline)", base_s, att, (size_t)M * C, 1e-5);
        b_embed_f(); lunar_ref_embed_tokens_forward_f32(r1, tok_x, cls, pos, B, L, C);
        validate("embed", tok, r1, (size_t)M * C, 0);
        memset(dcls, 0, C * 4); memset(dpos, 0, (size_t)N * C * 4); memset(r3, 0, C * 4);
        memset(r4, 0, (size_t)N * C * 4);
        b_embed_b(); lunar_ref_embed_tokens_backward_f32(r2, r3, r4, tok, B, L, C);
        validate("embed dx", tok_x, r2, (size_t)B * L * C, 0);
        validate("embed dcls", dcls, r3, C, 1e-6);
        validate("embed dpos", dpos, r4, (size_t)N * C, 1e-6);
        b_dropout(); lunar_ref_dropout_forward_f32(r1, x, (size_t)M * C, 0.1f, 7, 11, 0);
        validate("dropout", y, r1, (size_t)M * C, 0);
        b_add(); lunar_ref_add_f32(r1, x, dy, (size_t)M * C);
        validate("add", y, r1, (size_t)M * C, 0);
        float l2;
        b_ce_f(); lunar_ref_cross_entropy_forward_f32(&l2, NULL, logits, targets, B, K, 0.1f);
        validate("cross_entropy", &loss, &l2, 1, 1e-6);
        b_ce_b(); lunar_ref_cross_entropy_backward_f32(r1, logits, targets, B, K, 0.1f, 1.0f);
        validate("cross_entropy backward", dlogits, r1, (size_t)B * K, 1e-6);
        float *p2 = malloc(PARAMS * 4), *m2 = malloc(PARAMS * 4), *v2 = malloc(PARAMS * 4);
        memcpy(p2, param, PARAMS * 4); memcpy(m2, adam_m, PARAMS * 4); memcpy(v2, adam_v, PARAMS * 4);
        b_adamw(); lunar_ref_adamw_step_f32(p2, m2, v2, grad, PARAMS, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.05f, 10);
        validate("adamw param", param, p2, PARAMS, 1e-6);
        validate("adamw m", adam_m, m2, PARAMS, 1e-6);
        validate("adamw v", adam_v, v2, PARAMS, 1e-6);
        double s1 = lunar_cpu_sum_squares(grad, PARAMS), s2 = lunar_ref_sum_squares_f32(grad, PARAMS);
        if (fabs(s1 - s2) > 1e-10 * s2) { printf("  VALIDATION FAILED sum_squares\n"); failures++; }
        free(p2); free(m2); free(v2); free(r1); free(r2); free(r3); free(r4);
    }
    printf("%s\n", failures ? "VALIDATION FAILED: the timings below are of wrong kernels" : "all kernels match the reference");

    /* ---- kernels ---- */
    const double MB = 1e-9 * 4; /* GB per float */
    double step_ms = 0.0;       /* sum of the kernel medians of one training step */
    printf("\nkernels (GB/s counts the bytes each kernel must read and write once)\n");
    timeit(b_patchify_f); report("patchify [128,1,28,28]->[128,49,16]", 0, 2 * MB * B * IMG * IMG);
    step_ms += med_ms;
    timeit(b_patchify_b); report("patchify backward", 0, 2 * MB * B * IMG * IMG);
    timeit(b_embed_f); report("embed_tokens [128,49,192]", 0, 2 * MB * M * C);
    step_ms += med_ms;
    timeit(b_embed_b); report("embed_tokens backward", 0, 2 * MB * M * C);
    step_ms += med_ms;
    timeit(b_ln_f); report("layernorm [6400,192]", 0, 2 * MB * M * C);
    step_ms += (2 * DEPTH + 1) * med_ms;
    timeit(b_ln_b); report("layernorm backward", 0, 3 * MB * M * C);
    step_ms += (2 * DEPTH + 1) * med_ms;
    timeit(b_att_f); report("attention [128,50,3,64]", 4e-9 * B * H * N * N * D, 0);
    step_ms += DEPTH * med_ms;
    double att_f = med_ms;
    timeit(b_att_b); report("attention backward", 10e-9 * B * H * N * N * D, 0);
    step_ms += DEPTH * med_ms;
    timeit(b_att_blas_f); report("  (baseline: per-head sgemm fwd)", 4e-9 * B * H * N * N * D, 0);
    printf("  %-34s %9.2fx\n", "  (ours vs baseline, forward)", med_ms / att_f);
    timeit(b_gelu_f); report("gelu [6400,768]", 0, 2 * MB * M * F);
    step_ms += DEPTH * med_ms;
    timeit(b_gelu_b); report("gelu backward", 0, 3 * MB * M * F);
    step_ms += DEPTH * med_ms;
    timeit(b_add); report("add (residual) [6400,192]", 0, 3 * MB * M * C);
    step_ms += 4 * DEPTH * med_ms; /* 2 residual adds forward, 2 gradient adds backward */
    timeit(b_dropout); report("dropout p=0.1 [6400,192]", 0, 2 * MB * M * C);
    timeit(b_ce_f); report("cross_entropy [128,10]", 0, 0);
    step_ms += med_ms;
    timeit(b_ce_b); report("cross_entropy backward", 0, 0);
    step_ms += med_ms;
    timeit(b_adamw); report("adamw_step (2,684,554 params)", 0, 7 * MB * PARAMS);
    step_ms += med_ms;
    timeit(b_sgd); report("sgd_step (momentum)", 0, 5 * MB * PARAMS);
    timeit(b_sumsq); report("sum_squares (2,684,554)", 0, MB * PARAMS);

    printf("\nlinear (forward: sgemm with the bias as C; backward: dinp and dweight sgemms + dbias)\n");
    const struct linear_shape ls[] = {
        {"patch_embed 6272x16 -> 192", B * L, 16, C, 0}, {"qkv 6400x192 -> 576", M, C, 3 * C, 1},
        {"proj 6400x192 -> 192", M, C, C, 1},            {"fc1 6400x192 -> 768", M, C, F, 1},
        {"fc2 6400x768 -> 192", M, F, C, 1},             {"head 128x192 -> 10", B, C, K, 1},
    };
    for (int s = 0; s < 6; s++) {
        lM = ls[s].M; lK = ls[s].K; lN = ls[s].N;
        int per_step = (s == 0 || s == 5) ? 1 : DEPTH;
        double fl = 2e-9 * lM * lK * lN;
        char name[64];
        timeit(b_linear_f);
        snprintf(name, sizeof name, "%s", ls[s].name); report(name, fl, 0);
        step_ms += per_step * med_ms;
        timeit(ls[s].need_dinp ? b_linear_b : b_linear_b_nodin);
        snprintf(name, sizeof name, "  backward%s", ls[s].need_dinp ? "" : " (no dinp)");
        report(name, (ls[s].need_dinp ? 2 : 1) * fl, 0);
        step_ms += per_step * med_ms;
    }

    printf("\ncblas_sgemm alone (alpha 1, beta 0)\n");
    gM = gN = gK = 4096; gTa = CblasNoTrans; gTb = CblasNoTrans;
    ga = rnd((size_t)4096 * 4096, 1); gb = rnd((size_t)4096 * 4096, 1); gc = zer((size_t)4096 * 4096);
    int saved = repeats;
    repeats = 5;
    timeit(b_sgemm); report("4096^3 NN", 2e-9 * 4096.0 * 4096 * 4096, 0);
    repeats = saved;
    const struct { const char *name; int M, N, K; CBLAS_TRANSPOSE a, b; } gs[] = {
        {"qkv fwd 6400x576x192 NT", M, 3 * C, C, CblasNoTrans, CblasTrans},
        {"fc1 fwd 6400x768x192 NT", M, F, C, CblasNoTrans, CblasTrans},
        {"fc2 fwd 6400x192x768 NT", M, C, F, CblasNoTrans, CblasTrans},
        {"fc1 dinp 6400x192x768 NN", M, C, F, CblasNoTrans, CblasNoTrans},
        {"fc1 dW 768x192x6400 TN", F, C, M, CblasTrans, CblasNoTrans},
        {"fc2 dW 192x768x6400 TN", C, F, M, CblasTrans, CblasNoTrans},
        {"proj fwd 6400x192x192 NT", M, C, C, CblasNoTrans, CblasTrans},
    };
    for (size_t s = 0; s < sizeof gs / sizeof gs[0]; s++) {
        gM = gs[s].M; gN = gs[s].N; gK = gs[s].K; gTa = gs[s].a; gTb = gs[s].b;
        timeit(b_sgemm); report(gs[s].name, 2e-9 * gM * gN * gK, 0);
    }

    gemm_comparison();

    double gflop_step = 0.840 * B;
    printf("\none training step of the main job, sum of kernel medians: %.1f ms -> %.1f img/s, "
           "%.1f GFLOP/s (model FLOPs %.1f GFLOP; PyTorch 1.13 peer ~142 img/s)\n",
           step_ms, B / (step_ms * 1e-3), gflop_step / (step_ms * 1e-3), gflop_step);
    printf("%s\n", failures ? "VALIDATION FAILED" : "validation ok");
    return failures ? 1 : 0;
}
