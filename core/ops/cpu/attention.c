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
 * 4 vectors; the last column panel only as many vectors as it needs, so the
 * scores of 197 or 400 keys cost 208 or 400 columns, not 256 or 448), on
 * per-thread scratch: K^T and V^T [D, Np] (Np = N rounded up to
 * 16) and one or two [Br, Np] score tiles for a block of Br query rows (Br = N
 * unless N is large). Nothing of size N x N outlives the call.
 *
 * bf16 (precision = 'bf16'; attention_*_bf16): the same per-pair kernels on
 * the pair's rows widened to f32 in per-thread scratch, results rounded once
 * to bf16, so the bf16 result is bit for bit the f32 kernel's on the widened
 * operands, rounded; nothing of the size of the whole input is copied. The
 * products over the head dimension (Q K^T, dO V^T: half of the forward's
 * FLOPs, two fifths of the backward's) read the bf16 rows themselves with
 * VDPBF16PS (AVX512-BF16, D even; twice the f32 FMA rate); the f32 kernel sums
 * those products in VDPBF16PS's order (small_gemm_pairs), so the bits agree.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/tensor.h"   /* lunar_f32_to_bf16 */
#include "lunar/kernels.h"
#include "simd.h"

#define MR 6  /* rows of the micro-kernel */
#define NV 4  /* 16-float vectors of columns of the micro-kernel */
#define PF 2  /* prefetch the q, k, v (and dout, out) rows of the pair this many ahead */

/* ---- the small GEMM: C[rows, cols] = alpha * rscale[r] * A @ B (+ C when acc) -------
 * A element (r, k) at A[r * ars + k * aks] (any strides: A or A^T),
 * B row k at B + k * ldb (columns contiguous), C row r at C + r * ldc;
 * rscale[rows] scales each row of the product (NULL: 1).
 * small_gemm sums k = 0, 1, 2, ... in order; small_gemm_pairs (the products that
 * sum over the head dimension D: Q K^T and dO V^T) in the order 1, 0, 3, 2, ...
 * (the last k alone when Kd is odd), the order of VDPBF16PS within a pair of bf16
 * values: so small_gemm_bf16 on bf16 operands (one instruction per pair, twice
 * the f32 rate) gives small_gemm_pairs' bits on the same operands widened, and
 * the bf16 attention stays the f32 kernel on widened operands, bit for bit (bf16
 * products are exact in f32; VDPBF16PS flushes denormals, which scores of
 * attention never are in practice). */

#ifdef __AVX512F__
/* the MR x NV tile of accumulators c, scaled, into C (+ C when acc) */
static inline __attribute__((always_inline)) void store_tile(const int R, const int nv, __m512 c[MR][NV], float *C,
                                                             ptrdiff_t ldc, const __mmask16 *msk, float alpha,
                                                             const float *rscale, int acc) {
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
        if (r < R) {
            __m512 va = _mm512_set1_ps(rscale ? alpha * rscale[r] : alpha);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) {
                __m512 x = _mm512_mul_ps(c[r][v], va);
                float *p = C + r * ldc + 16 * v;
                if (acc) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(msk[v], p));
                _mm512_mask_storeu_ps(p, msk[v], x);
            }
        }
    }
}

/* R rows (<= MR) x nv vectors (<= NV; the last one masked) of C: both constants
 * where it is inlined, so each case keeps its accumulators in registers */
static inline __attribute__((always_inline)) void micro(const int R, const int nv, int Kd, const float *A,
                                                        ptrdiff_t ars, ptrdiff_t aks,
                                                        const float *B, ptrdiff_t ldb, float *C,
                                                        ptrdiff_t ldc, const __mmask16 *msk,
                                                        float alpha, const float *rscale, int acc,
                                                        const int pairs) {
    __m512 c[MR][NV];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
    }
    __mmask16 m[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) m[v] = v < nv ? msk[v] : 0;
    for (int kk = 0; kk < Kd; kk++) {
        const int k = pairs && (kk ^ 1) < Kd ? kk ^ 1 : kk;
        const float *b = B + k * ldb;
        const float *a = A + k * aks;
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = v < nv ? _mm512_maskz_loadu_ps(m[v], b + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            if (r < R) {
                __m512 av = _mm512_set1_ps(a[r * ars]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    if (v < nv) c[r][v] = _mm512_fmadd_ps(av, bv[v], c[r][v]);
            }
        }
    }
    store_tile(R, nv, c, C, ldc, msk, alpha, rscale, acc);
}

/* the micro-kernel fn (micro, micro_bf16) for R rows and nv vectors (1..NV), each
 * case with nv a constant */
#define MICRO_NV(fn, R, nv, ...)                                                                                      \
    do {                                                                                                              \
        switch (nv) {                                                                                                 \
        case 1: fn(R, 1, __VA_ARGS__); break;                                                                         \
        case 2: fn(R, 2, __VA_ARGS__); break;                                                                         \
        case 3: fn(R, 3, __VA_ARGS__); break;                                                                         \
        default: fn(R, 4, __VA_ARGS__); break;                                                                        \
        }                                                                                                             \
    } while (0)

static inline __attribute__((always_inline)) void small_gemm_run(int rows, int cols, int Kd, const float *A,
                                                                 ptrdiff_t ars, ptrdiff_t aks, const float *B,
                                                                 ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                                                                 const float *rscale, int acc, const int pairs) {
    for (int c0 = 0; c0 < cols; c0 += 16 * NV) {
        /* the last panel only as many vectors as its columns need (197 columns:
         * 3 panels of 4 and one of 1, not 4 of 4) */
        const int nv = (cols - c0 + 15) / 16 < NV ? (cols - c0 + 15) / 16 : NV;
        __mmask16 msk[NV];
        for (int v = 0; v < NV; v++) msk[v] = lunar_mask16(cols - c0 - 16 * v);
        for (int r0 = 0; r0 < rows; r0 += MR) {
            const float *a = A + r0 * ars;
            const float *b = B + c0;
            float *c = C + r0 * ldc + c0;
            const float *rs = rscale ? rscale + r0 : NULL;
            switch (rows - r0 < MR ? rows - r0 : MR) {
            case 6: MICRO_NV(micro, 6, nv, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, rs, acc, pairs); break;
            case 5: MICRO_NV(micro, 5, nv, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, rs, acc, pairs); break;
            case 4: MICRO_NV(micro, 4, nv, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, rs, acc, pairs); break;
            case 3: MICRO_NV(micro, 3, nv, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, rs, acc, pairs); break;
            case 2: MICRO_NV(micro, 2, nv, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, rs, acc, pairs); break;
            default: MICRO_NV(micro, 1, nv, Kd, a, ars, aks, b, ldb, c, ldc, msk, alpha, rs, acc, pairs); break;
            }
        }
    }
}

#if defined(__AVX512BF16__)
#define HAVE_BF16_GEMM 1
/* micro on bf16 operands: A rows of bf16 (element (r, k) at A[r * ars + k], k
 * contiguous, pairs 4-byte aligned), B the pairs of bf16 [K2, cols] (row k2 at
 * B + k2 * ldb, 32 bits per column: B(2 k2, j) low, B(2 k2 + 1, j) high) */
static inline __attribute__((always_inline)) void micro_bf16(const int R, const int nv, int K2, const uint16_t *A,
                                                             ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb, float *C,
                                                             ptrdiff_t ldc, const __mmask16 *msk, float alpha) {
    __m512 c[MR][NV];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) {
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) c[r][v] = _mm512_setzero_ps();
    }
    __mmask16 m[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) m[v] = v < nv ? msk[v] : 0;
    for (int k2 = 0; k2 < K2; k2++) {
        const uint32_t *b = B + k2 * ldb;
        const uint16_t *a = A + 2 * k2;
        __m512bh bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = v < nv ? (__m512bh)_mm512_maskz_loadu_epi32(m[v], b + 16 * v) : (__m512bh)_mm512_setzero_si512();
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
            if (r < R) {
                uint32_t pair;
                memcpy(&pair, a + r * ars, sizeof pair);
                __m512bh av = (__m512bh)_mm512_set1_epi32((int)pair);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    if (v < nv) c[r][v] = _mm512_dpbf16_ps(c[r][v], av, bv[v]);
            }
        }
    }
    store_tile(R, nv, c, C, ldc, msk, alpha, NULL, 0);
}

/* C[rows, cols] = alpha * A @ B on bf16 operands (micro_bf16's layouts), K2 pairs */
static void small_gemm_bf16(int rows, int cols, int K2, const uint16_t *A, ptrdiff_t ars, const uint32_t *B,
                            ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha) {
    for (int c0 = 0; c0 < cols; c0 += 16 * NV) {
        const int nv = (cols - c0 + 15) / 16 < NV ? (cols - c0 + 15) / 16 : NV;   /* as small_gemm_run */
        __mmask16 msk[NV];
        for (int v = 0; v < NV; v++) msk[v] = lunar_mask16(cols - c0 - 16 * v);
        for (int r0 = 0; r0 < rows; r0 += MR) {
            const uint16_t *a = A + r0 * ars;
            const uint32_t *b = B + c0;
            float *c = C + r0 * ldc + c0;
            switch (rows - r0 < MR ? rows - r0 : MR) {
            case 6: MICRO_NV(micro_bf16, 6, nv, K2, a, ars, b, ldb, c, ldc, msk, alpha); break;
            case 5: MICRO_NV(micro_bf16, 5, nv, K2, a, ars, b, ldb, c, ldc, msk, alpha); break;
            case 4: MICRO_NV(micro_bf16, 4, nv, K2, a, ars, b, ldb, c, ldc, msk, alpha); break;
            case 3: MICRO_NV(micro_bf16, 3, nv, K2, a, ars, b, ldb, c, ldc, msk, alpha); break;
            case 2: MICRO_NV(micro_bf16, 2, nv, K2, a, ars, b, ldb, c, ldc, msk, alpha); break;
            default: MICRO_NV(micro_bf16, 1, nv, K2, a, ars, b, ldb, c, ldc, msk, alpha); break;
            }
        }
    }
}
#endif
#else
static void small_gemm_run(int rows, int cols, int Kd, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                           const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                           const float *rscale, int acc, int pairs) {
    float tmp[16 * NV];
    for (int c0 = 0; c0 < cols; c0 += 16 * NV) {
        int nc = cols - c0 < 16 * NV ? cols - c0 : 16 * NV;
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < nc; j++) tmp[j] = 0.0f;
            for (int kk = 0; kk < Kd; kk++) {
                int k = pairs && (kk ^ 1) < Kd ? kk ^ 1 : kk;
                float a = A[r * ars + k * aks];
                const float *b = B + k * ldb + c0;
                for (int j = 0; j < nc; j++) tmp[j] += a * b[j];
            }
            float *c = C + r * ldc + c0;
            float a = rscale ? alpha * rscale[r] : alpha;
            for (int j = 0; j < nc; j++) c[j] = acc ? c[j] + a * tmp[j] : a * tmp[j];
        }
    }
}

#endif

static void small_gemm(int rows, int cols, int Kd, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                       const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha,
                       const float *rscale, int acc) {
    small_gemm_run(rows, cols, Kd, A, ars, aks, B, ldb, C, ldc, alpha, rscale, acc, 0);
}

static void small_gemm_pairs(int rows, int cols, int Kd, const float *A, ptrdiff_t ars, const float *B,
                             ptrdiff_t ldb, float *C, ptrdiff_t ldc, float alpha) {
    small_gemm_run(rows, cols, Kd, A, ars, 1, B, ldb, C, ldc, alpha, NULL, 0, 1);
}

/* ---- row helpers ------------------------------------------------------------------ */

/* Rows of a pair to come (its q, k, v, and dout, out in backward), prefetched one
 * token per row of work, so the loads spread over the pair being computed. */
typedef struct {
    const char *p[5];
    ptrdiff_t stride[5];   /* bytes */
    int n, bytes;          /* rows, bytes of a row */
} prefetcher;

/* The prefetcher of the pair bh + PF (q, k, v rows into *pf; dout, out rows into
 * *pf2 when not NULL), elements of esz bytes (f32 4, bf16 2) in the layouts of
 * attention_forward; pf->n = 0 (nothing) past the last pair. */
static void pair_prefetcher(prefetcher *pf, prefetcher *pf2, const void *qkv, const void *out, const void *dout,
                            size_t esz, int bh, int pairs, int N, int H, int D) {
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, os = (ptrdiff_t)H * D;
    memset(pf, 0, sizeof *pf);
    if (pf2) memset(pf2, 0, sizeof *pf2);
    if (bh + PF >= pairs) return;
    int b = (bh + PF) / H, h = (bh + PF) % H;
    const char *nq = (const char *)qkv + esz * ((size_t)b * N * qs + (size_t)h * D);
    *pf = (prefetcher){{nq, nq + esz * os, nq + 2 * esz * os}, {esz * qs, esz * qs, esz * qs}, 3, (int)esz * D};
    if (!pf2) return;
    size_t no = esz * ((size_t)b * N * os + (size_t)h * D);
    *pf2 = (prefetcher){{(const char *)dout + no, (const char *)out + no}, {esz * os, esz * os}, 2, (int)esz * D};
}

/* the cache lines of a row of `bytes` at p, into L2 ahead of use (always inlined:
 * GCC drops a call to a function that only prefetches, as having no effect) */
static inline __attribute__((always_inline)) void prefetch_row(const char *p, int bytes) {
#ifdef __AVX512F__
    for (int o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
#else
    for (int o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 2);
#endif
}

static inline __attribute__((always_inline)) void prefetch_token(const prefetcher *pf, int i) {
    if (!pf) return;
    for (int k = 0; k < pf->n; k++) prefetch_row(pf->p[k] + i * pf->stride[k], pf->bytes);
}

/* Softmax of rows r < nb of s (row stride ld, n < = ld columns), without the
 * division: s = exp(s - max_r), inv[r] = 1 / sum_j, lse[r] = max_r + log(sum_j).
 * One pass per quantity over all rows (loop fission): the rows of a pass are
 * independent, so their reductions overlap instead of waiting on each other. */
static void softmax_rows(float *s, ptrdiff_t ld, int nb, int n, float *lse, float *inv,
                         const prefetcher *pf, int i0) {
#ifdef __AVX512F__
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int r = 0; r < nb; r++) { /* row max, kept in lse for now */
        const float *x = s + r * ld;
        __m512 vmax = ninf;
        for (int j = 0; j < n; j += 16) {
            vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(ninf, lunar_mask16(n - j), x + j));
        }
        float mx = lunar_hmax(vmax);
        lse[r] = mx == -INFINITY ? 0.0f : mx; /* all -inf: exp(-inf) = 0, never NaN */
    }
    for (int r = 0; r < nb; r++) { /* exp and row sum */
        float *x = s + r * ld;
        prefetch_token(pf, i0 + r);
        __m512 vm = _mm512_set1_ps(lse[r]), vsum = _mm512_setzero_ps();
        int j = 0;
        for (; j + 16 <= n; j += 16) { /* x - max <= 0: lunar_exp512_le */
            __m512 e = lunar_exp512_le(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm));
            _mm512_storeu_ps(x + j, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        if (j < n) {
            __mmask16 k = lunar_mask16(n - j);
            __m512 e = _mm512_maskz_mov_ps(k, lunar_exp512_le(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vm)));
            _mm512_mask_storeu_ps(x + j, k, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        inv[r] = lunar_hsum(vsum);
    }
#else
    (void)pf;
    (void)i0;
    for (int r = 0; r < nb; r++) {
        float *x = s + r * ld;
        float mx = -INFINITY, sum = 0.0f;
        for (int j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
        if (mx == -INFINITY) mx = 0.0f;
        for (int j = 0; j < n; j++) {
            x[j] = expf(x[j] - mx);
            sum += x[j];
        }
        lse[r] = mx;
        inv[r] = sum;
    }
#endif
    for (int r = 0; r < nb; r++) {
        float sum = inv[r];
        lse[r] += logf(sum);
        inv[r] = 1.0f / sum;
    }
}

/* Di[r] = dout_r . out_r (rows of length D, strides os) for r < nb */
static void rowdots(float *Di, const float *a, const float *b, ptrdiff_t os, int nb, int D,
                    const prefetcher *pf, int i0) {
    for (int r = 0; r < nb; r++) {
        const float *x = a + r * os, *y = b + r * os;
        prefetch_token(pf, i0 + r);
#ifdef __AVX512F__
        __m512 acc = _mm512_setzero_ps();
        for (int j = 0; j < D; j += 16) {
            __mmask16 k = lunar_mask16(D - j);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, x + j), _mm512_maskz_loadu_ps(k, y + j), acc);
        }
        Di[r] = lunar_hsum(acc);
#else
        float acc = 0.0f;
        for (int j = 0; j < D; j++) acc += x[j] * y[j];
        Di[r] = acc;
#endif
    }
}

/* Row r < nb, columns j < n: p = exp(s - lse_r) (in place in s: the probabilities
 * again, from the saved lse) and ds = p * (ds - Di_r) * scale (ds holds dP on entry). */
static void dsoftmax_rows(float *s, float *ds, ptrdiff_t ld, int nb, int n, const float *lse,
                          const float *Di, float scale, const prefetcher *pf, int i0) {
    for (int r = 0; r < nb; r++) {
        float *p = s + r * ld, *d = ds + r * ld;
        prefetch_token(pf, i0 + r);
#ifdef __AVX512F__
        __m512 vl = _mm512_set1_ps(lse[r]), vd = _mm512_set1_ps(Di[r]), vs = _mm512_set1_ps(scale);
        for (int j = 0; j < n; j += 16) {
            __mmask16 k = lunar_mask16(n - j);
            __m512 e = lunar_exp512_le(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, p + j), vl)); /* s <= lse */
            _mm512_mask_storeu_ps(p + j, k, e);
            __m512 x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, d + j), vd);
            _mm512_mask_storeu_ps(d + j, k, _mm512_mul_ps(_mm512_mul_ps(x, e), vs));
        }
#else
        for (int j = 0; j < n; j++) {
            p[j] = expf(p[j] - lse[r]);
            d[j] = p[j] * (d[j] - Di[r]) * scale;
        }
#endif
    }
}

#ifdef __AVX512F__
/* r[0..16) = the transpose of the 16 x 16 block in r: unpack 32-bit, then 64-bit
 * pairs, then two rounds of 128-bit lane shuffles (56 shuffles in all). */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) { /* rows 4g..4g+3: u[4g + k] holds their columns k mod 4 */
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int k = 0; k < 4; k++) {
        __m512 vlo = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x88);
        __m512 vhi = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xDD);
        __m512 wlo = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x88);
        __m512 whi = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xDD);
        r[k] = _mm512_shuffle_f32x4(vlo, wlo, 0x88);
        r[8 + k] = _mm512_shuffle_f32x4(vlo, wlo, 0xDD);
        r[4 + k] = _mm512_shuffle_f32x4(vhi, whi, 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(vhi, whi, 0xDD);
    }
}

/* dst[d * ld + j] = src[j * ss + d]: rows [n, D] of a strided matrix to [D, ld],
 * ld >= n rounded up to 16 (columns n..ld of dst get zeros or are left alone) */
static void transpose(float *dst, ptrdiff_t ld, const float *src, ptrdiff_t ss, int n, int D) {
    for (int j0 = 0; j0 < n; j0 += 16) {
        for (int d0 = 0; d0 < D; d0 += 16) {
            __mmask16 k = lunar_mask16(D - d0);
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                r[i] = j0 + i < n ? _mm512_maskz_loadu_ps(k, src + (j0 + i) * ss + d0) : _mm512_setzero_ps();
            }
            transpose16(r);
            int nd = D - d0 < 16 ? D - d0 : 16;
            for (int i = 0; i < nd; i++) _mm512_storeu_ps(dst + (d0 + i) * ld + j0, r[i]);
        }
    }
}
#else
static void transpose(float *dst, ptrdiff_t ld, const float *src, ptrdiff_t ss, int n, int D) {
    for (int j = 0; j < n; j++) {
        const float *s = src + j * ss;
        for (int d = 0; d < D; d++) dst[d * ld + j] = s[d];
    }
}
#endif

/* ---- scratch ---------------------------------------------------------------------- */

static int round16(int n) { return (n + 15) & ~15; }

/* 1 when the bf16 kernels take the products over D (Q K^T, dO V^T) from the bf16
 * rows themselves (small_gemm_bf16: AVX512-BF16 built in, D even), 0 when they
 * widen the rows and run the f32 products (the same bits either way) */
#ifdef HAVE_BF16_GEMM
#define BF16_PAIRS(bf16, D) ((bf16) && (D) % 2 == 0)
#else
#define BF16_PAIRS(bf16, D) 0
#endif

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

/* ---- bf16 rows (precision = 'bf16') ------------------------------------------------ */

/* dst[n, D] (contiguous) = the bf16 rows src (row stride ss) widened to f32 */
static void widen_rows(float *dst, const uint16_t *src, ptrdiff_t ss, int n, int D) {
    for (int i = 0; i < n; i++) {
        const uint16_t *r = src + i * ss;
        float *d = dst + (size_t)i * D;
#ifdef __AVX512F__
        for (int j = 0; j < D; j += 16) {
            __mmask16 k = lunar_mask16(D - j);
            _mm512_mask_storeu_ps(d + j, k, lunar_load_bf16x16(k, r + j));
        }
#else
        for (int j = 0; j < D; j++) d[j] = lunar_bf16_widen(r[j]);
#endif
    }
}

/* the f32 rows src[n, D] (contiguous) rounded into the bf16 rows dst (row stride ds) */
static void round_rows(uint16_t *dst, ptrdiff_t ds, const float *src, int n, int D) {
    for (int i = 0; i < n; i++) {
        const float *r = src + (size_t)i * D;
        uint16_t *d = dst + i * ds;
#ifdef __AVX512F__
        for (int j = 0; j < D; j += 16) {
            __mmask16 k = lunar_mask16(D - j);
            _mm256_mask_storeu_epi16(d + j, k, lunar_bf16x16(_mm512_maskz_loadu_ps(k, r + j)));
        }
#else
        for (int j = 0; j < D; j++) d[j] = lunar_f32_to_bf16(r[j]);
#endif
    }
}

/* The bf16 rows of a pair the bf16 kernels read the products over D from
 * (BF16_PAIRS): q, k, v at row stride qs, dout at row stride os (backward). */
typedef struct {
    const uint16_t *q, *k, *v, *dout;
    ptrdiff_t qs, os;
} bf16_rows;

/* S[nb, N] (ld Np) = alpha * A B^T over D: A the rows A (f32, stride as) or
 * A16 (bf16, stride as16) when b16, B^T in Bt as transpose_pairs made it */
static void scores(int nb, int N, int D, const float *A, ptrdiff_t as, const uint16_t *A16, ptrdiff_t as16,
                   const float *Bt, int Np, float *S, float alpha, int b16) {
#ifdef HAVE_BF16_GEMM
    if (b16) {
        small_gemm_bf16(nb, N, D / 2, A16, as16, (const uint32_t *)Bt, Np, S, Np, alpha);
        return;
    }
#endif
    (void)A16;
    (void)as16;
    (void)b16;
    small_gemm_pairs(nb, N, D, A, as, Bt, Np, S, Np, alpha);
}

/* Bt = B^T of the rows B (f32, stride bs: [D, Np] floats) or, when B16 is not
 * NULL, of the bf16 rows B16 (stride bs16) as pairs ([D/2, Np] of 32 bits:
 * the bits moved, nothing rounded) */
static void transpose_pairs(float *Bt, int Np, const float *B, ptrdiff_t bs, const uint16_t *B16, ptrdiff_t bs16,
                            int N, int D) {
    if (B16) transpose(Bt, Np, (const float *)B16, bs16 / 2, N, D / 2);
    else transpose(Bt, Np, B, bs, N, D);
}

/* ---- forward ---------------------------------------------------------------------- */

/* One (image, head) pair: Q rows [Nq, D] of row stride qs against K, V rows
 * [Nk, D] of row stride ks -> O rows of stride os, L[Nq] (the self-attention
 * of the fused qkv: Nq = Nk, ks = qs; a block of ring attention: K, V from
 * another rank's block); Kt [D, Np], S [Br, Np], inv [Br] scratch
 * (Np = Nk rounded up to 16). With b16 (the bf16 rows of the fused qkv,
 * Nq = Nk; Q, K unused) the scores Q K^T are small_gemm_bf16 on them; NULL:
 * the f32 rows Q, K (the same bits on the same values). */
static void pair_forward(float *O, ptrdiff_t os, float *L, const float *Q, ptrdiff_t qs, const float *K,
                         const float *V, ptrdiff_t ks, const bf16_rows *b16, int Nq, int Nk, int D, int Np, int Br,
                         float scale, float *Kt, float *S, float *inv, const prefetcher *pf) {
    transpose_pairs(Kt, Np, K, ks, b16 ? b16->k : NULL, b16 ? b16->qs : 0, Nk, D);
    for (int i0 = 0; i0 < Nq; i0 += Br) {
        int nb = Nq - i0 < Br ? Nq - i0 : Br;
        scores(nb, Nk, D, b16 ? NULL : Q + i0 * qs, qs, b16 ? b16->q + i0 * b16->qs : NULL, b16 ? b16->qs : 0, Kt,
               Np, S, scale, b16 != NULL);
        softmax_rows(S, Np, nb, Nk, L + i0, inv, pf, i0);
        /* O = (exp(S - max) V) / sum: the division folded into the store */
        small_gemm(nb, D, Nk, S, Np, 1, V, ks, O + i0 * os, os, 1.0f, inv, 0);
    }
}

/* The forward on f32 qkv (bf16 = 0) or bf16 qkv and out (bf16 = 1: each pair's
 * q, k, v rows widened into per-thread scratch, its output rounded once). */
static void attention_forward(void *out_, float *lse, const void *qkv_, int bf16, int B, int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    const int Np = round16(N), Br = block_rows(N, Np);
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, os = (ptrdiff_t)H * D;
    const float scale = (float)(1.0 / sqrt((double)D));
    const int pairs = B * H;
    const size_t wide = bf16 ? 4 * (size_t)N * D : 0;   /* widened q, k, v and the f32 output */
    const int pair_bf16 = BF16_PAIRS(bf16, D);
    LUNAR_OMP(omp parallel if (pairs > 1 && (size_t)pairs * N * N * D >= 65536))
    {
        float *Kt = scratch_alloc((size_t)D * Np + (size_t)Br * Np + round16(Br) + wide);
        float *S = Kt ? Kt + (size_t)D * Np : NULL;
        float *inv = Kt ? S + (size_t)Br * Np : NULL;
        float *W = Kt ? inv + round16(Br) : NULL;
        LUNAR_OMP(omp for schedule(static))
        for (int bh = 0; bh < pairs; bh++) {
            int b = bh / H, h = bh % H;
            size_t qoff = (size_t)b * N * qs + (size_t)h * D, ooff = (size_t)b * N * os + (size_t)h * D;
            float *L = lse + (size_t)bh * N;
            if (!Kt) { /* out of memory: make it visible */
                for (int i = 0; i < N; i++) {
                    for (int d = 0; d < D; d++) {
                        if (bf16) ((uint16_t *)out_)[ooff + i * os + d] = 0x7fc0;
                        else ((float *)out_)[ooff + i * os + d] = NAN;
                    }
                    L[i] = NAN;
                }
                continue;
            }
            prefetcher pf; /* a pair this thread most likely does soon */
            pair_prefetcher(&pf, NULL, qkv_, NULL, NULL, bf16 ? 2 : 4, bh, pairs, N, H, D);
            if (bf16) {
                const uint16_t *q16 = (const uint16_t *)qkv_ + qoff;
                float *Wq = W, *Wk = W + (size_t)N * D, *Wv = Wk + (size_t)N * D, *Wo = Wv + (size_t)N * D;
                widen_rows(Wv, q16 + 2 * os, qs, N, D);
                if (pair_bf16) { /* the scores from the bf16 q, k rows themselves */
                    bf16_rows b16 = {q16, q16 + os, NULL, NULL, qs, 0};
                    pair_forward(Wo, D, L, NULL, D, NULL, Wv, D, &b16, N, N, D, Np, Br, scale, Kt, S, inv,
                                 pf.n ? &pf : NULL);
                } else {
                    widen_rows(Wq, q16, qs, N, D);
                    widen_rows(Wk, q16 + os, qs, N, D);
                    pair_forward(Wo, D, L, Wq, D, Wk, Wv, D, NULL, N, N, D, Np, Br, scale, Kt, S, inv,
                                 pf.n ? &pf : NULL);
                }
                round_rows((uint16_t *)out_ + ooff, os, Wo, N, D);
                continue;
            }
            const float *Q = (const float *)qkv_ + qoff;
            pair_forward((float *)out_ + ooff, os, L, Q, qs, Q + os, Q + 2 * os, qs, NULL, N, N, D, Np, Br, scale, Kt,
                         S, inv, pf.n ? &pf : NULL);
        }
        free(Kt);
    }
}

void lunar_cpu_attention_forward(float *out, float *lse, const float *qkv, int B, int N, int H, int D) {
    attention_forward(out, lse, qkv, 0, B, N, H, D);
}

/* attention_forward on bf16 qkv: per pair, the f32 kernel on the widened q, k,
 * v rows (per-thread scratch), out rounded once to bf16. */
void lunar_cpu_attention_forward_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int N, int H, int D) {
    attention_forward(out, lse, qkv, 1, B, N, H, D);
}

/* ---- backward --------------------------------------------------------------------- */

/* One pair: dQ (row stride qs, like Q [Nq, D]), dK, dV (row stride ks, like
 * K, V [Nk, D]) from dO, O (row stride os) and L; overwritten (acc = 0) or
 * accumulated (acc = 1: a block of ring attention). Kt, Vt [D, Np], P, dS
 * [Br, Np], Di [Br] scratch. With b16 (the bf16 rows of the fused qkv and of
 * dout, Nq = Nk; V unused) the products Q K^T and dO V^T are small_gemm_bf16
 * on them; NULL: on the f32 rows (the same bits on the same values). */
static void pair_backward(float *dQ, float *dK, float *dV, const float *Q, ptrdiff_t qs, const float *K,
                          const float *V, ptrdiff_t ks, const float *O, const float *dO, ptrdiff_t os, const float *L,
                          const bf16_rows *b16, int Nq, int Nk, int D, int Np, int Br, float scale, int acc,
                          float *Kt, float *Vt, float *P, float *dS, float *Di, const prefetcher *pf,
                          const prefetcher *pf2) {
    transpose_pairs(Kt, Np, K, ks, b16 ? b16->k : NULL, b16 ? b16->qs : 0, Nk, D);
    transpose_pairs(Vt, Np, V, ks, b16 ? b16->v : NULL, b16 ? b16->qs : 0, Nk, D);
    for (int i0 = 0; i0 < Nq; i0 += Br) {
        int nb = Nq - i0 < Br ? Nq - i0 : Br;
        /* P = exp(scale Q K^T - lse) and dP = dO V^T for the block's rows */
        scores(nb, Nk, D, Q + i0 * qs, qs, b16 ? b16->q + i0 * b16->qs : NULL, b16 ? b16->qs : 0, Kt, Np, P, scale,
               b16 != NULL);
        scores(nb, Nk, D, dO + i0 * os, os, b16 ? b16->dout + i0 * b16->os : NULL, b16 ? b16->os : 0, Vt, Np, dS,
               1.0f, b16 != NULL);
        rowdots(Di, dO + i0 * os, O + i0 * os, os, nb, D, pf2, i0);
        dsoftmax_rows(P, dS, Np, nb, Nk, L + i0, Di, scale, pf, i0);
        /* dQ = dS K (dS carries the scale), dK (+)= dS^T Q, dV (+)= P^T dO */
        small_gemm(nb, D, Nk, dS, Np, 1, K, ks, dQ + i0 * qs, qs, 1.0f, NULL, acc);
        small_gemm(Nk, D, nb, dS, 1, Np, Q + i0 * qs, qs, dK, ks, 1.0f, NULL, acc || i0 > 0);
        small_gemm(Nk, D, nb, P, 1, Np, dO + i0 * os, os, dV, ks, 1.0f, NULL, acc || i0 > 0);
    }
}

/* The backward on f32 operands (bf16 = 0) or bf16 dqkv, dout, qkv, out (bf16 =
 * 1: each pair's rows widened into per-thread scratch, its gradients rounded
 * once). */
static void attention_backward(void *dqkv_, const void *dout_, const void *qkv_, const void *out_, const float *lse,
                               int bf16, int B, int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    const int Np = round16(N), Br = block_rows(N, Np);
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, os = (ptrdiff_t)H * D;
    const float scale = (float)(1.0 / sqrt((double)D));
    const int pairs = B * H;
    const size_t wide = bf16 ? 8 * (size_t)N * D : 0;   /* q, k, v, out, dout widened; dq, dk, dv in f32 */
    const int pair_bf16 = BF16_PAIRS(bf16, D);
    LUNAR_OMP(omp parallel if (pairs > 1 && (size_t)pairs * N * N * D >= 65536))
    {
        float *Kt = scratch_alloc(2 * (size_t)D * Np + 2 * (size_t)Br * Np + round16(Br) + wide);
        float *Vt = Kt ? Kt + (size_t)D * Np : NULL;
        float *P = Kt ? Vt + (size_t)D * Np : NULL;
        float *dS = Kt ? P + (size_t)Br * Np : NULL;
        float *Di = Kt ? dS + (size_t)Br * Np : NULL;
        float *W = Kt ? Di + round16(Br) : NULL;
        LUNAR_OMP(omp for schedule(static))
        for (int bh = 0; bh < pairs; bh++) {
            int b = bh / H, h = bh % H;
            size_t qoff = (size_t)b * N * qs + (size_t)h * D, ooff = (size_t)b * N * os + (size_t)h * D;
            const float *L = lse + (size_t)bh * N;
            if (!Kt) { /* out of memory: make it visible */
                for (int i = 0; i < N; i++) {
                    for (int k = 0; k < 3; k++) {
                        for (int d = 0; d < D; d++) {
                            size_t at = qoff + k * os + i * qs + d;
                            if (bf16) ((uint16_t *)dqkv_)[at] = 0x7fc0;
                            else ((float *)dqkv_)[at] = NAN;
                        }
                    }
                }
                continue;
            }
            /* a pair this thread most likely does soon: its q, k, v rows (pf) and
             * dout, out rows (pf2) */
            prefetcher pf, pf2;
            pair_prefetcher(&pf, &pf2, qkv_, out_, dout_, bf16 ? 2 : 4, bh, pairs, N, H, D);
            if (bf16) {
                const size_t nd = (size_t)N * D;
                const uint16_t *q16 = (const uint16_t *)qkv_ + qoff;
                float *Wq = W, *Wk = W + nd, *Wv = W + 2 * nd, *Wo = W + 3 * nd, *Wdo = W + 4 * nd;
                float *Wdq = W + 5 * nd, *Wdk = W + 6 * nd, *Wdv = W + 7 * nd;
                const uint16_t *do16 = (const uint16_t *)dout_ + ooff;
                widen_rows(Wq, q16, qs, N, D);
                widen_rows(Wk, q16 + os, qs, N, D);
                widen_rows(Wo, (const uint16_t *)out_ + ooff, os, N, D);
                widen_rows(Wdo, do16, os, N, D);
                if (pair_bf16) { /* the products over D from the bf16 q, k, v, dout rows themselves */
                    bf16_rows b16 = {q16, q16 + os, q16 + 2 * os, do16, qs, os};
                    pair_backward(Wdq, Wdk, Wdv, Wq, D, Wk, NULL, D, Wo, Wdo, D, L, &b16, N, N, D, Np, Br, scale, 0,
                                  Kt, Vt, P, dS, Di, pf.n ? &pf : NULL, pf2.n ? &pf2 : NULL);
                } else {
                    widen_rows(Wv, q16 + 2 * os, qs, N, D);
                    pair_backward(Wdq, Wdk, Wdv, Wq, D, Wk, Wv, D, Wo, Wdo, D, L, NULL, N, N, D, Np, Br, scale, 0,
                                  Kt, Vt, P, dS, Di, pf.n ? &pf : NULL, pf2.n ? &pf2 : NULL);
                }
                uint16_t *d16 = (uint16_t *)dqkv_ + qoff;
                round_rows(d16, qs, Wdq, N, D);
                round_rows(d16 + os, qs, Wdk, N, D);
                round_rows(d16 + 2 * os, qs, Wdv, N, D);
                continue;
            }
            const float *out = out_, *dout = dout_;
            const float *Q = (const float *)qkv_ + qoff;
            float *dQ = (float *)dqkv_ + qoff;
            pair_backward(dQ, dQ + os, dQ + 2 * os, Q, qs, Q + os, Q + 2 * os, qs, out + ooff, dout + ooff, os, L,
                          NULL, N, N, D, Np, Br, scale, 0, Kt, Vt, P, dS, Di, pf.n ? &pf : NULL, pf2.n ? &pf2 : NULL);
        }
        free(Kt);
    }
}

void lunar_cpu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *out,
                                  const float *lse, int B, int N, int H, int D) {
    attention_backward(dqkv, dout, qkv, out, lse, 0, B, N, H, D);
}

/* attention_backward on bf16 operands: per pair, the f32 kernel on widened
 * rows (per-thread scratch), dqkv rounded once to bf16. */
void lunar_cpu_attention_backward_bf16(uint16_t *dqkv, const uint16_t *dout, const uint16_t *qkv, const uint16_t *out,
                                       const float *lse, int B, int N, int H, int D) {
    attention_backward(dqkv, dout, qkv, out, lse, 1, B, N, H, D);
}

/* ---- one block of ring attention (kernels.h lunar_cpu_attention_block_*) ------------ */

/* The block result ob [n, D] (contiguous), lb [n] merged into the rows o (row
 * stride os), l [n] through the log-sum-exp (the merge of
 * lunar_cpu_attention_block_forward); per row the same arithmetic in any build:
 * lse' = m + log(e^(l - m) + e^(lb - m)) (m the larger), o' = o e^(l - lse') +
 * ob e^(lb - lse'), the sums of the row's D products vectorized. */
static void merge_rows(float *o, ptrdiff_t os, float *l, const float *ob, const float *lb, int n, int D) {
    for (int i = 0; i < n; i++) {
        float old = l[i], b = lb[i], mx = old > b ? old : b;
        float nl = mx + logf(expf(old - mx) + expf(b - mx));
        float wo = expf(old - nl), wb = expf(b - nl);
        float *x = o + i * os;
        const float *y = ob + (size_t)i * D;
#ifdef __AVX512F__
        __m512 vo = _mm512_set1_ps(wo), vb = _mm512_set1_ps(wb);
        for (int d = 0; d < D; d += 16) {
            __mmask16 k = lunar_mask16(D - d);
            __m512 t = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, y + d), vb);
            _mm512_mask_storeu_ps(x + d, k, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, x + d), vo, t));
        }
#else
        for (int d = 0; d < D; d++) x[d] = fmaf(x[d], wo, y[d] * wb);
#endif
        l[i] = nl;
    }
}

/* The queries of qkv [B, Nq, 3, H, D] against the key/value block kv [B, Nk, 2, H, D]
 * with the per-pair kernels above: out [B, Nq, H, D], lse [B, H, Nq] written
 * (accumulate 0), or the block's result (per-thread scratch) merged into them through
 * the log-sum-exp: lse' = log(e^lse + e^lse_b), out' = out e^(lse - lse') + out_b
 * e^(lse_b - lse') (accumulate 1; Liu et al. 2023, the online softmax). */
void lunar_cpu_attention_block_forward(float *out, float *lse, const float *qkv, const float *kv, int B, int Nq,
                                       int Nk, int H, int D, int accumulate) {
    if (B <= 0 || Nq <= 0 || Nk <= 0 || H <= 0 || D <= 0) return;
    const int Np = round16(Nk), Br = block_rows(Nq, Np);
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, ks = (ptrdiff_t)2 * H * D, os = (ptrdiff_t)H * D;
    const float scale = (float)(1.0 / sqrt((double)D));
    const int pairs = B * H;
    const size_t merge = accumulate ? (size_t)Nq * D + round16(Nq) : 0;
    LUNAR_OMP(omp parallel if (pairs > 1 && (size_t)pairs * Nq * Nk * D >= 65536))
    {
        float *Kt = scratch_alloc((size_t)D * Np + (size_t)Br * Np + round16(Br) + merge);
        float *S = Kt ? Kt + (size_t)D * Np : NULL;
        float *inv = Kt ? S + (size_t)Br * Np : NULL;
        float *Wo = Kt ? inv + round16(Br) : NULL, *Wl = Wo ? Wo + (size_t)Nq * D : NULL;
        LUNAR_OMP(omp for schedule(static))
        for (int bh = 0; bh < pairs; bh++) {
            int b = bh / H, h = bh % H;
            const float *Q = qkv + (size_t)b * Nq * qs + (size_t)h * D;
            const float *K = kv + (size_t)b * Nk * ks + (size_t)h * D;
            float *O = out + (size_t)b * Nq * os + (size_t)h * D, *L = lse + (size_t)bh * Nq;
            if (!Kt) { /* out of memory: make it visible */
                for (int i = 0; i < Nq; i++) {
                    for (int d = 0; d < D; d++) O[i * os + d] = NAN;
                    L[i] = NAN;
                }
                continue;
            }
            if (!accumulate) {
                pair_forward(O, os, L, Q, qs, K, K + os, ks, NULL, Nq, Nk, D, Np, Br, scale, Kt, S, inv, NULL);
                continue;
            }
            pair_forward(Wo, D, Wl, Q, qs, K, K + os, ks, NULL, Nq, Nk, D, Np, Br, scale, Kt, S, inv, NULL);
            merge_rows(O, os, L, Wo, Wl, Nq, D);
        }
        free(Kt);
    }
}

/* The block's share of the backward, from the final out and lse over all blocks: the
 * q part of dqkv [B, Nq, 3, H, D] and dkv [B, Nk, 2, H, D] accumulated (FlashAttention's
 * backward with the global lse: the probabilities of the block's keys are exact). */
void lunar_cpu_attention_block_backward(float *dqkv, float *dkv, const float *dout, const float *qkv, const float *kv,
                                        const float *out, const float *lse, int B, int Nq, int Nk, int H, int D) {
    if (B <= 0 || Nq <= 0 || Nk <= 0 || H <= 0 || D <= 0) return;
    const int Np = round16(Nk), Br = block_rows(Nq, Np);
    const ptrdiff_t qs = (ptrdiff_t)3 * H * D, ks = (ptrdiff_t)2 * H * D, os = (ptrdiff_t)H * D;
    const float scale = (float)(1.0 / sqrt((double)D));
    const int pairs = B * H;
    LUNAR_OMP(omp parallel if (pairs > 1 && (size_t)pairs * Nq * Nk * D >= 65536))
    {
        float *Kt = scratch_alloc(2 * (size_t)D * Np + 2 * (size_t)Br * Np + round16(Br));
        float *Vt = Kt ? Kt + (size_t)D * Np : NULL;
        float *P = Kt ? Vt + (size_t)D * Np : NULL;
        float *dS = Kt ? P + (size_t)Br * Np : NULL;
        float *Di = Kt ? dS + (size_t)Br * Np : NULL;
        LUNAR_OMP(omp for schedule(static))
        for (int bh = 0; bh < pairs; bh++) {
            int b = bh / H, h = bh % H;
            size_t qoff = (size_t)b * Nq * qs + (size_t)h * D, koff = (size_t)b * Nk * ks + (size_t)h * D;
            size_t ooff = (size_t)b * Nq * os + (size_t)h * D;
            if (!Kt) { /* out of memory: make it visible */
                for (int i = 0; i < Nq; i++)
                    for (int d = 0; d < D; d++) dqkv[qoff + i * qs + d] = NAN;
                continue;
            }
            pair_backward(dqkv + qoff, dkv + koff, dkv + koff + os, qkv + qoff, qs, kv + koff, kv + koff + os, ks,
                          out + ooff, dout + ooff, os, lse + (size_t)bh * Nq, NULL, Nq, Nk, D, Np, Br, scale, 1, Kt, Vt, P,
                          dS, Di, NULL, NULL);
        }
        free(Kt);
    }
}
