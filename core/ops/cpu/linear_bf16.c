/*
 * core/ops/cpu/linear_bf16.c: the linear layer with bf16 operands on the CPU
 * (kernels.h: linear_forward_bf16, linear_backward_bf16), the GEMMs of
 * precision = 'bf16' (the f32 -> bf16 cast is in elementwise.c).
 *
 * With oneDNN in the build (gemm.h, dnnl.c) the three GEMMs are its matmul
 * with bf16 operands and f32 accumulation (brgemm on AVX512-BF16 / AMX): the
 * forward with the bias fused and a bf16 output rounded once by oneDNN,
 * dweight accumulated by the sum post-op. oneDNN takes bf16 operands only, so
 * an f32 activation or gradient is first rounded into a bf16 scratch
 * (lunar_cpu_cast_bf16: the same rounding as below); in the backward a chunk
 * of rows at a time (backward_dnnl), never a copy of the whole gradient. Measured side by side
 * (bench/kernels, AMD Zen 4, 2 threads) oneDNN runs the ViT linears' GEMMs
 * faster than the own GEMM below (367 vs 317 GFLOP/s over the main job's and
 * ViT-S/16's shapes), so the own GEMM serves builds without oneDNN only.
 *
 * Debian's OpenBLAS 0.3.21 declares cblas_sbgemm in cblas.h but is built
 * without BUILD_BFLOAT16, so libopenblas.so does not export it; this file is
 * the bf16 GEMM instead, in the GotoBLAS/BLIS structure (Goto & van de Geijn
 * 2008; Van Zee & van de Geijn 2015):
 *   for jc (NC columns of C)  for pc (KC of the sum)  pack B[KC x NC]
 *     for ic (MC rows of C, split over threads)       pack A[MC x KC]
 *       for jr (NR)  for ir (MR)  micro-kernel: C[MR x NR] += A B
 * Packing rounds f32 operands to bf16 on load (round to nearest even, NaN kept
 * quiet: lunar_f32_to_bf16), so an activation or gradient in f32 never needs a
 * bf16 copy of its own, and lays the sum dimension out in pairs: a 32-bit word
 * (x[2p], x[2p+1]) per row, the operand of AVX512-BF16's VDPBF16PS, which
 * multiplies bf16 pairs exactly and adds both products to an f32 lane. The
 * micro-kernel keeps an 8 x 32 tile of C in sixteen zmm accumulators and
 * broadcasts one word of A per row against two vectors of B per pair.
 * Products of bf16 values are exact in f32; the sums are f32 (fp32
 * accumulation), in a fixed order per element (pair by pair, KC block by KC
 * block), for any thread count.
 *
 * Without AVX512-BF16 at compile time (__AVX512BF16__ undefined) the same
 * packed layout feeds a portable micro-kernel (f32 multiply-adds of the
 * widened pairs): correct everywhere, slower than sgemm. lunar_cpu_bf16_native
 * says which one runs; lunar_precision_supported (ops.h) refuses
 * precision = 'bf16' on a CPU without the native one.
 */
#include <stdlib.h>
#include <string.h>

#include "gemm.h"
#include "lunar/kernels.h"
#include "lunar/tensor.h"   /* lunar_f32_to_bf16, lunar_bf16_to_f32 */
#include "simd.h"

/* The blocking. KC even (whole pairs); MC a multiple of MR; NC of NR.
 * A micro-panel (MR x KC bf16, 4 KiB) and a B micro-panel (KC x NR, 16 KiB)
 * fit L1; the packed A block (MC x KC, 64 KiB) L2; the packed B block
 * (KC x NC, 512 KiB) L2/L3. */
#define MR 8
#define NR 32
#define KC 256
#define MC 128
#define NC 1024

/* An operand of C[i, j] = sum_k A(i, k) Bt(j, k): element (r, k) at
 * p[r * rs + k * cs], f32 (bf16 = 0) or bf16 (bf16 = 1). Both A and the
 * transpose of B are described this way, so one packing routine serves both. */
typedef struct {
    const void *p;
    int bf16;
    size_t rs, cs;
} operand;

static inline uint16_t elem_bf16(const operand *x, size_t r, size_t k) {
    size_t i = r * x->rs + k * x->cs;
    return x->bf16 ? ((const uint16_t *)x->p)[i] : lunar_f32_to_bf16(((const float *)x->p)[i]);
}

/* ---- f32 -> bf16 on 16 lanes -------------------------------------------------- */

#ifdef __AVX512F__
/* 16 words (lo[i], hi[i]) as bf16 pairs from two rows of 16 floats. */
static inline __m512i pair_words_f32(__m512 lo, __m512 hi) {
    __m512i a = _mm512_srli_epi32(lunar_round_bf16_hi(lo), 16);
    __m512i b = _mm512_and_si512(lunar_round_bf16_hi(hi), _mm512_set1_epi32((int)0xffff0000u));
    return _mm512_or_si512(a, b);
}
#endif

/* ---- packing -------------------------------------------------------------------- */

#ifdef __AVX512F__
/* Transposes 8 x 8 32-bit words in place (v[i] word j <-> v[j] word i). */
static inline void transpose8x8(__m256i v[8]) {
    __m256 r0 = _mm256_castsi256_ps(v[0]), r1 = _mm256_castsi256_ps(v[1]), r2 = _mm256_castsi256_ps(v[2]),
           r3 = _mm256_castsi256_ps(v[3]), r4 = _mm256_castsi256_ps(v[4]), r5 = _mm256_castsi256_ps(v[5]),
           r6 = _mm256_castsi256_ps(v[6]), r7 = _mm256_castsi256_ps(v[7]);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
           t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    v[0] = _mm256_castps_si256(_mm256_permute2f128_ps(u0, u4, 0x20));
    v[1] = _mm256_castps_si256(_mm256_permute2f128_ps(u1, u5, 0x20));
    v[2] = _mm256_castps_si256(_mm256_permute2f128_ps(u2, u6, 0x20));
    v[3] = _mm256_castps_si256(_mm256_permute2f128_ps(u3, u7, 0x20));
    v[4] = _mm256_castps_si256(_mm256_permute2f128_ps(u0, u4, 0x31));
    v[5] = _mm256_castps_si256(_mm256_permute2f128_ps(u1, u5, 0x31));
    v[6] = _mm256_castps_si256(_mm256_permute2f128_ps(u2, u6, 0x31));
    v[7] = _mm256_castps_si256(_mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* Packs rows [r0, r0 + nr) and sums [k0, k0 + kl) of x into tiles of R rows
 * (R a multiple of 8): tile t, pair p, row r at out[(t * kp + p) * R + r] =
 * (x(r, k0 + 2p) as the low half, x(r, k0 + 2p + 1) as the high), kp =
 * (kl + 1) / 2; rows past nr and the odd tail are zero, so every tile is
 * complete. Three paths: the sum dim contiguous (cs = 1: 8 rows x 8 pairs at a
 * time, transposed in registers), the rows contiguous (rs = 1: a pair of sums
 * at a time, streaming 16 rows per vector), and any strides (scalar). */
static void pack(uint32_t *out, const operand *x, size_t r0, int nr, size_t k0, int kl, int R) {
    const int kp = (kl + 1) / 2, ntile = (nr + R - 1) / R;
    if (nr % R) memset(out + (size_t)(ntile - 1) * kp * R, 0, (size_t)kp * R * sizeof *out);
#ifdef __AVX512F__
    if (x->cs == 1) {
        for (int t = 0; t < ntile; t++) {
            uint32_t *o = out + (size_t)t * kp * R;
            int rows = nr - t * R < R ? nr - t * R : R;
            for (int g = 0; g < rows; g += 8) {   /* 8 rows */
                for (int p0 = 0; p0 < kp; p0 += 8) {   /* 8 pairs = 16 sums */
                    __mmask16 m = lunar_mask16(kl - 2 * p0);
                    __m256i v[8];
                    for (int j = 0; j < 8; j++) {
                        if (g + j >= rows) { v[j] = _mm256_setzero_si256(); continue; }
                        size_t at = (r0 + (size_t)t * R + g + j) * x->rs + k0 + 2 * (size_t)p0;
                        v[j] = x->bf16 ? _mm256_maskz_loadu_epi16(m, (const uint16_t *)x->p + at)
                                       : lunar_bf16x16(_mm512_maskz_loadu_ps(m, (const float *)x->p + at));
                    }
                    transpose8x8(v);
                    int np = kp - p0 < 8 ? kp - p0 : 8;
                    for (int p = 0; p < np; p++) _mm256_storeu_si256((__m256i *)(o + (size_t)(p0 + p) * R + g), v[p]);
                }
            }
        }
        return;
    }
    if (x->rs == 1) {
        for (int p = 0; p < kp; p++) {
            size_t k = k0 + 2 * (size_t)p;
            int has_hi = 2 * p + 1 < kl;
            for (int t = 0; t < ntile; t++) {
                uint32_t *o = out + ((size_t)t * kp + p) * R;
                int rows = nr - t * R < R ? nr - t * R : R;
                size_t base = r0 + (size_t)t * R;
                for (int r = 0; r < rows; r += 16) {
                    __mmask16 m = lunar_mask16(rows - r);
                    __m512i w;
                    if (x->bf16) {
                        const uint16_t *s = (const uint16_t *)x->p + k * x->cs + base + r;
                        __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s));
                        __m512i hi = has_hi ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, s + x->cs))
                                            : _mm512_setzero_si512();
                        w = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
                    } else {
                        const float *s = (const float *)x->p + k * x->cs + base + r;
                        __m512 lo = _mm512_maskz_loadu_ps(m, s);
                        __m512 hi = has_hi ? _mm512_maskz_loadu_ps(m, s + x->cs) : _mm512_setzero_ps();
                        w = pair_words_f32(lo, hi);
                    }
                    _mm512_mask_storeu_epi32(o + r, m, w);
                }
            }
        }
        return;
    }
#endif
    /* any strides (and every case without AVX-512): element by element */
    for (int t = 0; t < ntile; t++) {
        uint32_t *o = out + (size_t)t * kp * R;
        int rows = nr - t * R < R ? nr - t * R : R;
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < kp; p++) {
                size_t row = r0 + (size_t)t * R + r, k = k0 + 2 * (size_t)p;
                uint32_t lo = elem_bf16(x, row, k), hi = 2 * p + 1 < kl ? elem_bf16(x, row, k + 1) : 0;
                o[(size_t)p * R + r] = lo | hi << 16;
            }
    }
}

/* ---- micro-kernel ---------------------------------------------------------------- */

/* C[mr x nr] (ld ldc) = (accumulate ? C : 0) + A[MR x 2kp] B[2kp x NR], from
 * a packed A micro-panel (kp x MR words) and B micro-panel (kp x NR words);
 * only the first mr rows and nr columns of the tile are stored. */
static void micro_kernel(int kp, const uint32_t *a, const uint32_t *b, float *c, size_t ldc, int mr, int nr,
                         int accumulate) {
#if defined(__AVX512BF16__)
    __m512 acc[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int p = 0; p < kp; p++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 16);
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            __m512bh ar = (__m512bh)_mm512_set1_epi32((int)a[r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
        a += MR;
        b += NR;
    }
    __mmask16 m0 = lunar_mask16(nr), m1 = lunar_mask16(nr - 16);
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
        __m512 v0 = acc[r][0], v1 = acc[r][1];
        if (accumulate) {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, cr));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, cr + 16));
        }
        _mm512_mask_storeu_ps(cr, m0, v0);
        _mm512_mask_storeu_ps(cr + 16, m1, v1);
    }
#else
    /* portable: the same sums (products exact in f32, pairs in order), f32 FMAs */
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int p = 0; p < kp; p++) {
        for (int r = 0; r < MR; r++) {
            float alo = lunar_bf16_to_f32((uint16_t)a[r]), ahi = lunar_bf16_to_f32((uint16_t)(a[r] >> 16));
            LUNAR_SIMD
            for (int j = 0; j < NR; j++) {
                float blo = lunar_bf16_to_f32((uint16_t)b[j]), bhi = lunar_bf16_to_f32((uint16_t)(b[j] >> 16));
                acc[r][j] = acc[r][j] + ahi * bhi + alo * blo;
            }
        }
        a += MR;
        b += NR;
    }
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) {
            float *cij = c + (size_t)r * ldc + j;
            *cij = accumulate ? *cij + acc[r][j] : acc[r][j];
        }
#endif
}

/* ---- the GEMM ------------------------------------------------------------------------ */

/* C[M, N] (ld ldc) = (beta ? C : 0) + sum over k < K of bf16(A(i, k)) bf16(Bt(j, k));
 * beta is 0 (C not read) or 1. Returns 0, or -1 when out of memory for the
 * packing buffers (C untouched).
 * Threads: B is packed for a group of KC blocks at once (up to B_GROUP bytes,
 * tiles split over the threads), then each thread takes whole MC blocks of C
 * through every KC block of the group; two barriers per group, so a GEMM with
 * a long sum (dweight sums over every token) does not wait at a barrier per KC
 * block, which costs a scheduler slice whenever another process holds a core. */
#define B_GROUP (4u << 20)

static int gemm_bf16(int M, int N, int K, const operand *A, const operand *Bt, int beta, float *C, size_t ldc) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) {
        if (!beta)
            for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof *C);
        return 0;
    }
    const int nc_max = N < NC ? (N + NR - 1) / NR * NR : NC;
    const size_t block_words = (size_t)nc_max * KC / 2;          /* one packed KC block of B */
    const int nkc = (K + KC - 1) / KC;
    int group = (int)(B_GROUP / (block_words * sizeof(uint32_t)));
    if (group < 1) group = 1;
    if (group > nkc) group = nkc;
    uint32_t *bpack = aligned_alloc(64, (size_t)group * block_words * sizeof(uint32_t));
    if (!bpack) return -1;
    const size_t a_words = (size_t)MC * KC / 2;
    int nthreads = lunar_omp_max_threads();
    uint32_t *apack = aligned_alloc(64, (size_t)nthreads * a_words * sizeof(uint32_t));
    if (!apack) { free(bpack); return -1; }
    const double flops = 2.0 * M * N * (double)K;
    LUNAR_OMP(omp parallel if (flops >= 4e6))
    {
        uint32_t *ap = apack + (size_t)lunar_omp_thread() * a_words;
        for (int jc = 0; jc < N; jc += NC) {
            int nc = N - jc < NC ? N - jc : NC;
            int ntiles = (nc + NR - 1) / NR;
            for (int q0 = 0; q0 < nkc; q0 += group) {
                int nq = nkc - q0 < group ? nkc - q0 : group;
                LUNAR_OMP(omp for schedule(static))
                for (int w = 0; w < nq * ntiles; w++) {   /* (KC block, tile) pairs */
                    int q = w / ntiles, t = w % ntiles, pc = (q0 + q) * KC;
                    int kc = K - pc < KC ? K - pc : KC, kp = (kc + 1) / 2;
                    int rows = nc - t * NR < NR ? nc - t * NR : NR;
                    pack(bpack + (size_t)q * block_words + (size_t)t * kp * NR, Bt, (size_t)jc + (size_t)t * NR,
                         rows, (size_t)pc, kc, NR);
                }
                /* implicit barrier: the group of B is packed */
                int nblk = (M + MC - 1) / MC;
                LUNAR_OMP(omp for schedule(static))
                for (int ib = 0; ib < nblk; ib++) {
                    int ic = ib * MC, mc = M - ic < MC ? M - ic : MC;
                    for (int q = 0; q < nq; q++) {
                        int pc = (q0 + q) * KC, kc = K - pc < KC ? K - pc : KC, kp = (kc + 1) / 2;
                        int acc = beta || pc > 0;
                        pack(ap, A, (size_t)ic, mc, (size_t)pc, kc, MR);
                        for (int t = 0; t < ntiles; t++) {
                            int nr = nc - t * NR < NR ? nc - t * NR : NR;
                            const uint32_t *bt = bpack + (size_t)q * block_words + (size_t)t * kp * NR;
                            for (int ir = 0; ir < mc; ir += MR) {
                                int mr = mc - ir < MR ? mc - ir : MR;
                                micro_kernel(kp, ap + (size_t)(ir / MR) * kp * MR, bt,
                                             C + (size_t)(ic + ir) * ldc + jc + (size_t)t * NR, ldc, mr, nr, acc);
                            }
                        }
                    }
                }
                /* implicit barrier: bpack is free again */
            }
        }
    }
    free(apack);
    free(bpack);
    return 0;
}

/* ---- the linear layer ------------------------------------------------------------- */

/* out[M,N] (f32, ld N) = bf16(inp)[M,K] @ weight[N,K]^T + bias[N] (bias may be NULL). */
static void linear_f32_out(float *out, const operand *a, const uint16_t *weight, const float *bias, int M, int K,
                           int N) {
    if (bias) {
        LUNAR_OMP(omp parallel for schedule(static) if ((size_t)M * N >= LUNAR_PAR_MIN))
        for (int m = 0; m < M; m++) memcpy(out + (size_t)m * N, bias, (size_t)N * sizeof *out);
    }
    operand bt = {weight, 1, (size_t)K, 1};
    if (gemm_bf16(M, N, K, a, &bt, bias != NULL, out, (size_t)N)) {
        /* out of memory for 0.5 MiB of packing: the sums element by element */
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                float s = bias ? bias[n] : 0.0f;
                for (int k = 0; k < K; k++)
                    s += lunar_bf16_to_f32(elem_bf16(a, m, k)) * lunar_bf16_to_f32(weight[(size_t)n * K + k]);
                out[(size_t)m * N + n] = s;
            }
    }
}

/* out[M,N] = bf16(inp)[M,K] @ weight[N,K]^T + bias[N] (bias may be NULL); out
 * f32, or bf16 (out_bf16): then the f32 sums of a block of rows go through a
 * scratch of at most OUT_ROWS rows and are rounded once into out, so the f32
 * result never exists whole (fc1's [B*N, 4C] output is what a bf16 activation
 * saves). OUT_ROWS keeps every thread's MC blocks busy; the weight is packed
 * again per block, O(N K) next to the block's O(OUT_ROWS N K). */
#define OUT_ROWS_PER_THREAD (2 * MC)

/* the forward through the own GEMM */
static void forward_own(void *out, int out_bf16, const void *inp, int inp_bf16, const uint16_t *weight,
                        const float *bias, int M, int K, int N) {
    if (!out_bf16) {
        operand a = {inp, inp_bf16, (size_t)K, 1};
        linear_f32_out(out, &a, weight, bias, M, K, N);
        return;
    }
    int rows = OUT_ROWS_PER_THREAD * lunar_omp_max_threads();
    if (rows > M) rows = M;
    float *tmp = malloc((size_t)rows * N * sizeof *tmp);
    if (!tmp) rows = 1;   /* out of memory: a row at a time, element by element, below */
    for (int m0 = 0; m0 < M; m0 += rows) {
        int mr = M - m0 < rows ? M - m0 : rows;
        size_t off = (size_t)m0 * K;
        operand a = {inp_bf16 ? (const void *)((const uint16_t *)inp + off) : (const void *)((const float *)inp + off),
                     inp_bf16, (size_t)K, 1};
        if (tmp) {
            linear_f32_out(tmp, &a, weight, bias, mr, K, N);
            lunar_cpu_cast_bf16((uint16_t *)out + (size_t)m0 * N, tmp, (size_t)mr * N);
        } else {
            for (int n = 0; n < N; n++) {   /* no scratch at all: element by element */
                float s = bias ? bias[n] : 0.0f;
                for (int k = 0; k < K; k++)
                    s += lunar_bf16_to_f32(elem_bf16(&a, 0, k)) * lunar_bf16_to_f32(weight[(size_t)n * K + k]);
                ((uint16_t *)out)[(size_t)m0 * N + n] = lunar_f32_to_bf16(s);
            }
        }
    }
    free(tmp);
}

/* dinp[M,K] = bf16(dout) @ weight, the own GEMM. */
static void dinp_own(float *dinp, const void *dout, int dout_bf16, const uint16_t *weight, int M, int K, int N) {
    operand a = {dout, dout_bf16, (size_t)N, 1}, bt = {weight, 1, 1, (size_t)K};
    if (gemm_bf16(M, K, N, &a, &bt, 0, dinp, (size_t)K)) {
        for (int m = 0; m < M; m++)
            for (int k = 0; k < K; k++) {
                float s = 0.0f;
                for (int n = 0; n < N; n++)
                    s += lunar_bf16_to_f32(elem_bf16(&a, m, n)) * lunar_bf16_to_f32(weight[(size_t)n * K + k]);
                dinp[(size_t)m * K + k] = s;
            }
    }
}

/* dweight[N,K] += bf16(dout)^T @ bf16(inp), the own GEMM. */
static void dweight_own(float *dweight, const void *dout, int dout_bf16, const void *inp, int inp_bf16, int M,
                        int K, int N) {
    operand a = {dout, dout_bf16, 1, (size_t)N}, bt = {inp, inp_bf16, 1, (size_t)K};
    if (gemm_bf16(N, K, M, &a, &bt, 1, dweight, (size_t)K)) {
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                float s = 0.0f;
                for (int m = 0; m < M; m++)
                    s += lunar_bf16_to_f32(elem_bf16(&a, n, m)) * lunar_bf16_to_f32(elem_bf16(&bt, k, m));
                dweight[(size_t)n * K + k] += s;
            }
    }
}

int lunar_cpu_gemm_bf16_own(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B, float *C,
                            size_t ldc, int accumulate) {
    operand a = {A->p, A->bf16, A->rs, A->cs}, bt = {B->p, B->bf16, B->cs, B->rs};   /* Bt(j, k) = B(k, j) */
    return gemm_bf16(M, N, K, &a, &bt, accumulate, C, ldc);
}

/* ---- the kernels.h entry points: oneDNN first, the own GEMM otherwise ------------------ */

/* x[n] as bf16: x itself (is_bf16), or rounded into *scratch (malloc'd; the
 * caller frees it). NULL when out of memory. */
static const uint16_t *as_bf16(const void *x, int is_bf16, size_t n, uint16_t **scratch) {
    *scratch = NULL;
    if (is_bf16) return x;
    if (!(*scratch = malloc(n * sizeof **scratch))) return NULL;
    lunar_cpu_cast_bf16(*scratch, x, n);
    return *scratch;
}

void lunar_cpu_linear_forward_bf16(void *out, int out_bf16, const void *inp, int inp_bf16, const uint16_t *weight,
                                   const float *bias, int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    if (K > 0 && lunar_cpu_dnnl_active()) {
        uint16_t *tmp;
        const uint16_t *x = as_bf16(inp, inp_bf16, (size_t)M * K, &tmp);
        lunar_gemm_mat a = {x, 1, (size_t)K, 1}, wt = {weight, 1, 1, (size_t)K};   /* weight^T [K, N] */
        int rc = x ? lunar_cpu_dnnl_gemm(M, N, K, &a, &wt, bias, out, out_bf16, (size_t)N, 0) : -1;
        free(tmp);
        if (rc == 0) return;
    }
    forward_own(out, out_bf16, inp, inp_bf16, weight, bias, M, K, N);
}

/* bf16 values of f32 rows rounded per chunk in the backward: at most this many
 * (1 MiB), so an f32 gradient (fc1's dout, [B*N, 4C]: 9.4 MiB as bf16 in the
 * main job) is never copied whole, and the chunk is still in cache when the
 * GEMMs read it. */
#define CHUNK_ELEMS (1 << 19)

/* The backward's GEMMs through oneDNN on row chunks of dout and inp: for rows
 * [m0, m0 + rows) the f32 ones rounded into a scratch, then dinp's rows =
 * dy @ weight and dweight += dy^T x (the sum post-op). One chunk (the whole
 * batch, no scratch) when both are bf16; otherwise CHUNK_ELEMS / width rows
 * per chunk, set by the shape only (the same sums for any thread count).
 * Returns 0, or -1 before touching dinp or dweight when oneDNN has no kernel
 * for one of the chunk shapes or the scratch cannot be allocated. */
static int backward_dnnl(float *dinp, float *dweight, const void *dout, int dout_bf16, const void *inp, int inp_bf16,
                         const uint16_t *weight, int M, int K, int N) {
    const int round_x = dweight && !inp_bf16;
    const size_t width = (dout_bf16 ? 0 : (size_t)N) + (round_x ? (size_t)K : 0);
    int rows = M;
    if (width > 0 && (size_t)M * width > CHUNK_ELEMS) {
        rows = (int)(CHUNK_ELEMS / width);
        if (rows < 1) rows = 1;
    }
    /* every shape the chunks use has a kernel: nothing is half done below */
    const int shapes[2] = {rows, M % rows};
    lunar_gemm_mat w = {weight, 1, (size_t)K, 1};
    for (int i = 0; i < 2; i++) {
        int mr = shapes[i];
        if (mr == 0) continue;
        lunar_gemm_mat a = {weight, 1, (size_t)N, 1}, dt = {weight, 1, 1, (size_t)N}, xm = {weight, 1, (size_t)K, 1};
        if (dinp && !lunar_cpu_dnnl_gemm_impl(mr, K, N, &a, &w, NULL, 0, (size_t)K, 0)) return -1;
        if (dweight && !lunar_cpu_dnnl_gemm_impl(N, K, mr, &dt, &xm, NULL, 0, (size_t)K, 1)) return -1;
    }
    uint16_t *scratch = NULL;
    if (width > 0 && !(scratch = malloc((size_t)rows * width * sizeof *scratch))) return -1;
    uint16_t *sdy = scratch, *sx = scratch + (dout_bf16 ? 0 : (size_t)rows * N);
    for (int m0 = 0; m0 < M; m0 += rows) {
        const int mr = M - m0 < rows ? M - m0 : rows;
        const uint16_t *dy = (const uint16_t *)dout + (size_t)m0 * N;
        if (!dout_bf16) {
            lunar_cpu_cast_bf16(sdy, (const float *)dout + (size_t)m0 * N, (size_t)mr * N);
            dy = sdy;
        }
        if (dinp) {
            lunar_gemm_mat a = {dy, 1, (size_t)N, 1};
            lunar_cpu_dnnl_gemm(mr, K, N, &a, &w, NULL, dinp + (size_t)m0 * K, 0, (size_t)K, 0);
        }
        if (dweight) {
            const uint16_t *x = (const uint16_t *)inp + (size_t)m0 * K;
            if (round_x) {
                lunar_cpu_cast_bf16(sx, (const float *)inp + (size_t)m0 * K, (size_t)mr * K);
                x = sx;
            }
            lunar_gemm_mat dt = {dy, 1, 1, (size_t)N}, xm = {x, 1, (size_t)K, 1};   /* dout^T [N, mr], inp [mr, K] */
            lunar_cpu_dnnl_gemm(N, K, mr, &dt, &xm, NULL, dweight, 0, (size_t)K, 1);
        }
    }
    free(scratch);
    return 0;
}

/* dinp[M,K] = bf16(dout) @ weight (dinp may be NULL); dweight[N,K] +=
 * bf16(dout)^T @ bf16(inp); dbias[N] += column sums of dout as given (f32
 * unrounded, or the bf16 values). dout f32 or bf16 (dout_bf16). */
void lunar_cpu_linear_backward_bf16(float *dinp, float *dweight, float *dbias, const void *dout, int dout_bf16,
                                    const void *inp, int inp_bf16, const uint16_t *weight, int M, int K, int N) {
    if (M > 0 && K > 0 && N > 0 && (dinp || dweight) && lunar_cpu_dnnl_active() &&
        backward_dnnl(dinp, dweight, dout, dout_bf16, inp, inp_bf16, weight, M, K, N) == 0)
        dinp = dweight = NULL;   /* done */
    if (dinp && M > 0 && K > 0) dinp_own(dinp, dout, dout_bf16, weight, M, K, N);
    if (M <= 0 || N <= 0) return;
    if (dweight && K > 0) dweight_own(dweight, dout, dout_bf16, inp, inp_bf16, M, K, N);
    /* dbias: the f32 kernel's deterministic column sums */
    if (dbias) lunar_cpu_dbias_accumulate(dbias, dout, dout_bf16, M, N);
}

/* 1 when the bf16 kernels of this build use AVX512-BF16 (VDPBF16PS) and the
 * processor running it has it. */
int lunar_cpu_bf16_native(void) {
#if defined(__AVX512BF16__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") ? 1 : 0;
#else
    return 0;
#endif
}
