/*
 * core/ops/cpu/attention.c: multi-head self-attention on the CPU (kernels.h),
 * from the fused qkv[B, N, 3, H, D] (timm layout) to out[B, N, H, D], saving
 * lse[B, H, N]; backward recomputes the probabilities from lse (FlashAttention,
 * Dao et al. 2022, Alg. 2 and 4, with whole rows of keys per query block).
 *
 * Work is split over the B*H (image, head) pairs, one pair per thread at a time
 * (static schedule): a pair's result is computed by one thread in a fixed
 * order, so it is the same for any thread count. No BLAS call per pair (one
 * small sgemm per pair and head runs at half speed on 2 threads, PERF_ANCHORS):
 * the five products are one register-blocked kernel (6 rows x 64 columns of
 * accumulators, 24 zmm registers, A broadcast from memory, B rows loaded as
 * 4 vectors), on per-thread scratch: K^T and V^T [D, Np] (Np = N rounded up to
 * 16) and one or two [Br, Np] score tiles for a block of Br query rows (Br = N
 * unless N is large). Nothing of size N x N outlives the call.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/kernels.h"
#include "simd.h"

#define MR 6  /* rows of the micro-kernel */
#define NV 4  /* 16-float vectors of columns of the micro-kernel */

/* ---- the small GEMM: C[rows, cols] = alpha * A @ B (+ C when acc) ------------------
 * A element (r, k) at A[r * ars + k * aks] (any strides: A or A^T),
 * B row k at B + k * ldb (columns contiguous), C row r at C + r * ldc. */

#ifdef __AVX512F__
static inline __attribute__((always_inline)) void micro(const int R, int Kd, const float *A,
                                                        ptrdiff_t ars, ptrdiff_t aks,
                                                        const float *B, ptrdiff_t ldb, float *C,
                                                        ptrdiff_t ldc, const __mmask16 *msk,
                                                        float alpha, int acc) {
    __m512 c[MR][NV];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
    }
    const __mmask16 m0 = msk[0], m1 = msk[1], m2 = msk[2], m3 = msk[3];
    for (int k = 0; k < Kd; k++) {
        const float *b = B + k * ldb;
        const float *a = A + k * aks;
        __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
        __m512 b1 = _mm512_maskz_loadu_ps(m1, b + 16);
        __m512 b2 = _mm512_maskz_loadu_ps(m2, b + 32);
        __m512 b3 = _mm512_maskz_loadu_ps(m3, b + 48);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            if (r < R) {
                __m512 av = _mm512_set1_ps(a[r * ars]);
                c[r][0] = _mm512_fmadd_ps(av, b0, c[r][0]);
                c[r][1] = _mm512_fmadd_ps(av, b1, c[r][1]);
                c[r][2] = _mm512_fmadd_ps(av, b2, c[r][2]);
                c[r][3] = _mm512_fmadd_ps(av, b3, c[r][3]);
            }
        }
    }
    __m512 va = _mm512_set1_ps(alpha);
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r < R) {
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                __m512 x = _mm512_mul_ps(c[r][v], va);
                float *p = C + r * ldc + 16 * v;
                if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(msk[v], p));
                _mm512_mask_storeu_ps(p, msk[v], x);
            }
        }
    }
}

static void small_gemm(int rows, int cols, int Kd, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                       const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                       int acc) {
    for (int c0 = 0; c0 < cols; c0 += 16 * NV) {
        __mmask16 msk[NV];
        for (int v = 0; v < NV; v++) msk[v] = lunar_mask16(cols - c0 - 16 * v);
        for (int r0 = 0; r0 < rows; r0 += MR) {
            const float *a = A + r0 * ars;
            const float *b = B + c0;
            float *c = C + r0 * ldc + c0;
            switch (rows - r0 < MR ? rows - r0 : MR) {
            case 6: micro(6, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, acc); break;
            case 5: micro(5, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, acc); break;
            case 4: micro(4, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, acc); break;
            case 3: micro(3, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, acc); break;
            case 2: micro(2, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, acc); break;
            default: micro(1, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, acc); break;
            }
        }
    }
}
#else
static void small_gemm(int rows, int cols, int Kd, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                       const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                       int acc) {
    float tmp[16 * NV];
    for (int c0 = 0; c0 < cols; c0 += 16 * NV) {
        int nc = cols - c0 < 16 * NV ? cols - c0 : 16 * NV;
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < nc; j++) tmp[j] = 0.0f;
            for (int k = 0; k < Kd; k++) {
                float a = A[r * ars + k * aks];
                const float *b = B + k * ldb + c0;
                for (int j = 0; j < nc; j++) tmp[j] += a * b[j];
            }
            float *c = C + r * ldc + c0;
            for (int j = 0; j < nc; j++) c[j] = acc ? c[j] + alpha * tmp[j] : alpha * tmp[j];
        }
    }
}
#endif

/* ---- row helpers ------------------------------------------------------------------ */

/* Softmax of s[0..n) in place; returns the log-sum-exp. */
static float softmax_row(float *s, int n) {
#ifdef __AVX512F__
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = lunar_mask16(n - j);
        vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), k, s + j));
    }
    float mx = lunar_hmax(vmax);
    if (mx == -INFINITY) mx = 0.0f; /* all -inf: keep exp(-inf) = 0, never NaN */
    __m512 vm = _mm512_set1_ps(mx), vsum = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = lunar_mask16(n - j);
        __m512 e = _mm512_maskz_mov_ps(k, lunar_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vm)));
        _mm512_mask_storeu_ps(s + j, k, e);
        vsum = _mm512_add_ps(vsum, e);
    }
    float sum = lunar_hsum(vsum);
    __m512 vinv = _mm512_set1_ps(1.0f / sum);
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = lunar_mask16(n - j);
        _mm512_mask_storeu_ps(s + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + j), vinv));
    }
#else
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    if (mx == -INFINITY) mx = 0.0f;
    float sum = 0.0f;
    for (int j = 0; j < n; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) s[j] *= inv;
#endif
    return mx + logf(sum);
}

/* s[j] = exp(s[j] - lse), j < n: the probabilities again, from the saved lse */
static void exp_row(float *s, int n, float lse) {
#ifdef __AVX512F__
    __m512 vl = _mm512_set1_ps(lse);
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = lunar_mask16(n - j);
        __m512 e = lunar_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + j), vl));
        _mm512_mask_storeu_ps(s + j, k, e);
    }
#else
    for (int j = 0; j < n; j++) s[j] = expf(s[j] - lse);
#endif
}

/* dot product of a[0..n) and b[0..n) */
static float dot_row(const float *a, const float *b, int n) {
#ifdef __AVX512F__
    __m512 acc = _mm512_setzero_ps();
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = lunar_mask16(n - j);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + j), _mm512_maskz_loadu_ps(k, b + j), acc);
    }
    return lunar_hsum(acc);
#else
    float acc = 0.0f;
    for (int j = 0; j < n; j++) acc += a[j] * b[j];
    return acc;
#endif
}

/* ds[j] = p[j] * (ds[j] - Di) * scale, j < n (ds holds dP on entry) */
static void dsoftmax_row(float *ds, const float *p, int n, float Di, float scale) {
#ifdef __AVX512F__
    __m512 vd = _mm512_set1_ps(Di), vs = _mm512_set1_ps(scale);
    for (int j = 0; j < n; j += 16) {
        __mmask16 k = lunar_mask16(n - j);
        __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, ds + j), vd);
        x = _mm512_mul_ps(_mm512_mul_ps(x, _mm512_maskz_loadu_ps(k, p + j)), vs);
        _mm512_mask_storeu_ps(ds + j, k, x);
    }
#else
    for (int j = 0; j < n; j++) ds[j] = p[j] * (ds[j] - Di) * scale;
#endif
}

/* dst[d * ld + j] = src[j * ss + d]: rows [n, D] of a strided matrix to [D, ld] */
static void transpose(float *dst, ptrdiff_t ld, const float *src, ptrdiff_t ss, int n, int D) {
    for (int j = 0; j < n; j++) {
        const float *s = src + j * ss;
        for (int d = 0; d < D; d++) dst[d * ld + j] = s[d];
    }
}

/* ---- scratch ---------------------------------------------------------------------- */

static int round16(int n) { return (n + 15) & ~15; }

/* query rows per block: all of them unless a [Br, Np] tile would pass 256 KiB */
static int block_rows(int N, int Np) {
    const int limit = 65536; /* floats */
    if ((size_t)N * Np <= (size_t)limit) return N;
    int br = limit / Np / MR * MR;
    return br < MR ? MR : br;
}

static float *scratch_alloc(size_t floats) {
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

/* ---- forward ---------------------------------------------------------------------- */

void lunar_cpu_attention_forward(float *out, float *lse, const float *qkv, int B, int N, int H,
                                 int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    const int Np = round16(N), Br = block_rows(N, Np);
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, os = (ptrdiff_t)H * D;
    const float scale = (float)(1.0 / sqrt((double)D));
    const int pairs = B * H;
    LUNAR_OMP(omp parallel if (pairs > 1 && (size_t)pairs * N * N * D >= 65536))
    {
        float *Kt = scratch_alloc((size_t)D * Np + (size_t)Br * Np);
        float *S = Kt ? Kt + (size_t)D * Np : NULL;
        LUNAR_OMP(omp for schedule(static))
        for (int bh = 0; bh < pairs; bh++) {
            int b = bh / H, h = bh % H;
            const float *Q = qkv + (size_t)b * N * qs + (size_t)h * D;
            const float *K = Q + os, *V = Q + 2 * os;
            float *O = out + (size_t)b * N * os + (size_t)h * D;
            float *L = lse + (size_t)bh * N;
            if (!Kt) { /* out of memory: make it visible */
                for (int i = 0; i < N; i++) {
                    for (int d = 0; d < D; d++) O[i * os + d] = NAN;
                    L[i] = NAN;
                }
                continue;
            }
            transpose(Kt, Np, K, qs, N, D);
            for (int i0 = 0; i0 < N; i0 += Br) {
                int nb = N - i0 < Br ? N - i0 : Br;
                small_gemm(nb, N, D, Q + i0 * qs, qs, 1, Kt, Np, S, Np, scale, 0);
                for (int r = 0; r < nb; r++) L[i0 + r] = softmax_row(S + (size_t)r * Np, N);
                small_gemm(nb, D, N, S, Np, 1, V, qs, O + i0 * os, os, 1.0f, 0);
            }
        }
        free(Kt);
    }
}

/* ---- backward --------------------------------------------------------------------- */

void lunar_cpu_attention_backward(float *dqkv, const float *dout, const float *qkv,
                                  const float *out, const float *lse, int B, int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    const int Np = round16(N), Br = block_rows(N, Np);
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, os = (ptrdiff_t)H * D;
    const float scale = (float)(1.0 / sqrt((double)D));
    const int pairs = B * H;
    LUNAR_OMP(omp parallel if (pairs > 1 && (size_t)pairs * N * N * D >= 65536))
    {
        float *Kt = scratch_alloc(2 * (size_t)D * Np + 2 * (size_t)Br * Np);
        float *Vt = Kt ? Kt + (size_t)D * Np : NULL;
        float *P = Kt ? Vt + (size_t)D * Np : NULL;
        float *dS = Kt ? P + (size_t)Br * Np : NULL;
        LUNAR_OMP(omp for schedule(static))
        for (int bh = 0; bh < pairs; bh++) {
            int b = bh / H, h = bh % H;
            size_t qoff = (size_t)b * N * qs + (size_t)h * D;
            const float *Q = qkv + qoff, *K = Q + os, *V = Q + 2 * os;
            float *dQ = dqkv + qoff, *dK = dQ + os, *dV = dQ + 2 * os;
            size_t ooff = (size_t)b * N * os + (size_t)h * D;
            const float *O = out + ooff, *dO = dout + ooff;
            const float *L = lse + (size_t)bh * N;
            if (!Kt) { /* out of memory: make it visible */
                for (int i = 0; i < N; i++) {
                    for (int d = 0; d < D; d++) dQ[i * qs + d] = dK[i * qs + d] = dV[i * qs + d] = NAN;
                }
                continue;
            }
            transpose(Kt, Np, K, qs, N, D);
            transpose(Vt, Np, V, qs, N, D);
            for (int i0 = 0; i0 < N; i0 += Br) {
                int nb = N - i0 < Br ? N - i0 : Br;
                /* P = exp(scale Q K^T - lse) and dP = dO V^T for the block's rows */
                small_gemm(nb, N, D, Q + i0 * qs, qs, 1, Kt, Np, P, Np, scale, 0);
                small_gemm(nb, N, D, dO + i0 * os, os, 1, Vt, Np, dS, Np, 1.0f, 0);
                for (int r = 0; r < nb; r++) {
                    int i = i0 + r;
                    exp_row(P + (size_t)r * Np, N, L[i]);
                    float Di = dot_row(dO + i * os, O + i * os, D);
                    dsoftmax_row(dS + (size_t)r * Np, P + (size_t)r * Np, N, Di, scale);
                }
                /* dQ = dS K (dS carries the scale), dK (+)= dS^T Q, dV (+)= P^T dO */
                small_gemm(nb, D, N, dS, Np, 1, K, qs, dQ + i0 * qs, qs, 1.0f, 0);
                small_gemm(N, D, nb, dS, 1, Np, Q + i0 * qs, qs, dK, qs, 1.0f, i0 > 0);
                small_gemm(N, D, nb, P, 1, Np, dO + i0 * os, os, dV, qs, 1.0f, i0 > 0);
            }
        }
        free(Kt);
    }
}
