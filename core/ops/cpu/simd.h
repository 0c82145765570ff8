/*
 * core/ops/cpu/simd.h: what the fast CPU kernels (the .c files beside it) share, and
 * nothing else includes:
 *   LUNAR_OMP(...)   an OpenMP pragma that vanishes (without a warning) when the
 *                    build has no OpenMP (NO_OMP=1);
 *   lunar_exp512     exp on 16 floats (AVX-512), Cephes' expf polynomial with
 *                    the scaling by 2^n done by vscalefps (correct underflow to 0,
 *                    overflow to inf, NaN kept), about 1 ulp; lunar_exp512_le
 *                    the same for inputs known to be <= 88.8 (no upper clamp);
 *   lunar_hsum / lunar_hmax  fixed-order horizontal reductions.
 *   lunar_round_bf16_hi / lunar_bf16x16  f32 -> bf16 on 16 lanes (the rounding of
 *                    lunar_f32_to_bf16), for the kernels with bf16 outputs;
 *                    lunar_load_bf16x16 / lunar_bf16_widen: bf16 -> f32 (exact);
 *   lunar_cpu_dbias_accumulate  the deterministic column sums of linear.c, for
 *                    f32 or bf16 gradients (linear_bf16.c uses it too).
 * Without AVX-512 (__AVX512F__ undefined) each kernel has a scalar loop with the
 * same arithmetic, so the library builds and is correct on any x86-64 or ARM.
 *
 * Determinism: every kernel here partitions work with schedule(static) over a
 * fixed number of pieces that depends on the sizes only, never on the thread
 * count, and reduces partial sums in a fixed order. So the same inputs give
 * bitwise the same outputs run to run, and for the non-BLAS kernels even for any
 * thread count.
 */
#ifndef LUNAR_CPU_SIMD_H
#define LUNAR_CPU_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#define LUNAR_OMP(x) _Pragma(#x)
static inline int lunar_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int lunar_omp_thread(void) { return omp_get_thread_num(); }
#else
#define LUNAR_OMP(x)
static inline int lunar_omp_max_threads(void) { return 1; }
static inline int lunar_omp_thread(void) { return 0; }
#endif

/* An elementwise loop the compiler must vectorize: GCC 12 at -O2 uses the
 * "very-cheap" cost model, which gives up on any loop that needs an alias check
 * or a remainder loop; `omp simd` (with -fopenmp or -fopenmp-simd) asserts the
 * iterations independent and vectorizes it. */
#define LUNAR_SIMD LUNAR_OMP(omp simd)

/* Below this many elements an elementwise loop runs on one thread: the fork
 * costs more than the work. */
#define LUNAR_PAR_MIN 32768

#ifdef __AVX512F__
#include <immintrin.h>

/* mask of the first n (0..16) lanes */
static inline __mmask16 lunar_mask16(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* lunar_exp512 for lanes known to be <= 88.8 (e.g. x - max of x: softmax),
 * one instruction fewer; the same bits as lunar_exp512 there. */
static inline __m512 lunar_exp512_le(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* exp(x) on 16 lanes: n = round(x log2 e), r = x - n ln2 (Cody-Waite split),
 * Cephes expf polynomial, times 2^n by scalef. NaN stays NaN (min/max operand
 * order), x <= -104 gives 0, x >= 88.8 gives inf. */
static inline __m512 lunar_exp512(__m512 x) { return lunar_exp512_le(_mm512_min_ps(_mm512_set1_ps(88.8f), x)); }

/* f32 -> bf16 on 16 lanes, lunar_f32_to_bf16's rounding (nearest even; NaN stays a
 * quiet NaN; denormals kept, unlike VCVTNEPS2BF16): the bf16 in the high half of
 * each 32-bit lane (the low half is garbage), and packed to 16 x 16 bits. */
static inline __m512i lunar_round_bf16_hi(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}
static inline __m256i lunar_bf16x16(__m512 x) {
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(lunar_round_bf16_hi(x), 16));
}
/* the first n (<= 16) bf16 values at p widened to f32 (exact), the rest 0 */
static inline __m512 lunar_load_bf16x16(__mmask16 k, const uint16_t *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}

static inline float lunar_hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
static inline float lunar_hmax(__m512 v) { return _mm512_reduce_max_ps(v); }
#endif /* __AVX512F__ */

/* a bf16 value widened to f32 (exact), inline for the loops that read bf16 */
static inline float lunar_bf16_widen(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* dbias[N] += column sums of dout[M, N], f32 (dout_bf16 = 0) or bf16 (1), in
 * fixed row blocks (float per block, double across blocks in order): the same
 * result for any thread count (linear.c). */
void lunar_cpu_dbias_accumulate(float *dbias, const void *dout, int dout_bf16, int M, int N);

#endif
