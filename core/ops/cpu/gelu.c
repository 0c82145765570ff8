/*
 * core/ops/cpu/gelu.c: exact GELU on the CPU (kernels.h), out = x Phi(x).
 *
 * AVX-512: Phi from erfc through the Chebyshev fit of Numerical Recipes
 * (erfcc, 2nd ed., sec. 6.2: fractional error below 1.2e-7 everywhere):
 *   z = |x|/sqrt(2), t = 1/(1 + z/2), erfc(z) = t exp(-z^2 + P(t)),
 *   Phi(x) = x >= 0 ? 1 - erfc(z)/2 : erfc(z)/2,
 * so Phi keeps its relative accuracy in the far left tail (where 1 + erf(x)
 * would cancel). Backward adds phi(x) = exp(-x^2/2)/sqrt(2 pi).
 * Without AVX-512: libm's erfcf and expf. Elementwise, in place allowed.
 *
 * A bf16 input (precision = 'bf16': the bf16 fc1 output) has only 65536
 * values, so with AVX-512 its forward and backward read tables of the kernels
 * above evaluated once at every bf16 value (built on first use, 384 KiB, L2
 * resident): gelu_fwd16[x] = bf16(x Phi(x)) and gelu_dx16[x] = Phi(x) +
 * x phi(x), gathered 16 lanes at a time. The results are the bits the
 * arithmetic gives (the same code fills the tables); a gather replaces about
 * 40 vector operations and a division per 16 values.
 */
#include <math.h>
#include <pthread.h>

#include "lunar/kernels.h"
#include "lunar/tensor.h"   /* lunar_f32_to_bf16 */
#include "simd.h"

#ifdef __AVX512F__
/* Phi(x) on 16 lanes */
static inline __m512 normal_cdf512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
    __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(half, z, one)); /* 1 / (1 + z/2) */
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    __m512 h = _mm512_mul_ps(_mm512_mul_ps(half, t), lunar_exp512(_mm512_fnmadd_ps(z, z, p)));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_sub_ps(h, pos, one, h);
}
#endif

#ifdef __AVX512F__
/* gelu'(x) = Phi(x) + x phi(x) on 16 lanes */
static inline __m512 gelu_dx512(__m512 x) {
    __m512 pdf = _mm512_mul_ps(_mm512_set1_ps(0.39894228040143268f),   /* 1/sqrt(2 pi) */
                               lunar_exp512(_mm512_mul_ps(_mm512_mul_ps(x, x), _mm512_set1_ps(-0.5f))));
    return _mm512_fmadd_ps(x, pdf, normal_cdf512(x));
}

/* the tables of a bf16 input, indexed by its 16 bits; gelu_fwd16 has one
 * entry of padding: its gather reads 32 bits at a 16-bit index */
static uint16_t gelu_fwd16[65536 + 2];
static float gelu_dx16[65536];
static pthread_once_t gelu_tables_once = PTHREAD_ONCE_INIT;

static void gelu_tables_init(void) {
    for (uint32_t i = 0; i < 65536; i += 16) {
        __m512i bits = _mm512_add_epi32(_mm512_set1_epi32((int)i),
                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
        __m512 x = _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
        _mm256_storeu_si256((__m256i *)(gelu_fwd16 + i), lunar_bf16x16(_mm512_mul_ps(x, normal_cdf512(x))));
        _mm512_storeu_ps(gelu_dx16 + i, gelu_dx512(x));
    }
}

/* the first n (<= 16) bf16 values at p as 32-bit table indices, the rest 0 */
static inline __m512i bf16_index16(__mmask16 k, const uint16_t *p) {
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p));
}
#endif

static inline float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }

void lunar_cpu_gelu_forward(float *out, const float *inp, size_t n) {
#ifdef __AVX512F__
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = lunar_mask16(n - i < 16 ? (int)(n - i) : 16);
        __m512 x = _mm512_maskz_loadu_ps(k, inp + i);
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(x, normal_cdf512(x)));
    }
#else
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) out[i] = inp[i] * normal_cdf(inp[i]);
#endif
}

/* gelu_forward with out rounded to bf16 as it is stored (precision = 'bf16');
 * inp f32, or bf16 (inp_bf16: the bf16 fc1 output) widened as it is read. */
void lunar_cpu_gelu_forward_bf16(uint16_t *out, const void *inp, int inp_bf16, size_t n) {
    const float *x32 = inp;
    const uint16_t *x16 = inp;
#ifdef __AVX512F__
    if (inp_bf16) {
        pthread_once(&gelu_tables_once, gelu_tables_init);
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i += 16) {
            __mmask16 k = lunar_mask16(n - i < 16 ? (int)(n - i) : 16);
            __m512i y = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), k, bf16_index16(k, x16 + i),
                                                    (const void *)gelu_fwd16, 2);
            _mm256_mask_storeu_epi16(out + i, k, _mm512_cvtepi32_epi16(y));   /* the low 16 bits */
        }
        return;
    }
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = lunar_mask16(n - i < 16 ? (int)(n - i) : 16);
        __m512 x = _mm512_maskz_loadu_ps(k, x32 + i);
        _mm256_mask_storeu_epi16(out + i, k, lunar_bf16x16(_mm512_mul_ps(x, normal_cdf512(x))));
    }
#else
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) {
        float x = inp_bf16 ? lunar_bf16_widen(x16[i]) : x32[i];
        out[i] = lunar_f32_to_bf16(x * normal_cdf(x));
    }
#endif
}

/* dinp = dout * (Phi(x) + x phi(x)), x from inp (f32) or inp16 (bf16, when set:
 * the table gelu_dx16 with AVX-512); dinp f32, or bf16 (dinp16 set instead:
 * the f32 product rounded as it is stored, only with inp16). */
static void gelu_backward(float *dinp, uint16_t *dinp16, const float *dout, const float *inp, const uint16_t *inp16,
                          size_t n) {
#ifdef __AVX512F__
    if (inp16) {
        pthread_once(&gelu_tables_once, gelu_tables_init);
        LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
        for (size_t i = 0; i < n; i += 16) {
            __mmask16 k = lunar_mask16(n - i < 16 ? (int)(n - i) : 16);
            __m512 d = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), k, bf16_index16(k, inp16 + i), gelu_dx16, 4);
            __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dout + i), d);
            if (dinp16) _mm256_mask_storeu_epi16(dinp16 + i, k, lunar_bf16x16(g));
            else _mm512_mask_storeu_ps(dinp + i, k, g);
        }
        return;
    }
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 k = lunar_mask16(n - i < 16 ? (int)(n - i) : 16);
        __m512 x = _mm512_maskz_loadu_ps(k, inp + i);
        _mm512_mask_storeu_ps(dinp + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dout + i), gelu_dx512(x)));
    }
#else
    const float inv_sqrt_2pi = 0.39894228040143268f;
    LUNAR_OMP(omp parallel for schedule(static) if (n >= LUNAR_PAR_MIN))
    for (size_t i = 0; i < n; i++) {
        float x = inp16 ? lunar_bf16_widen(inp16[i]) : inp[i];
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        float g = dout[i] * (normal_cdf(x) + x * pdf);
        if (dinp16) dinp16[i] = lunar_f32_to_bf16(g);
        else dinp[i] = g;
    }
#endif
}

void lunar_cpu_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    gelu_backward(dinp, NULL, dout, inp, NULL, n);
}

/* gelu_backward from a bf16 input (precision = 'bf16': the bf16 fc1 output);
 * dinp f32, or bf16 (dinp_bf16: the operand of fc1's backward GEMMs, which
 * would round the f32 one the same way). */
void lunar_cpu_gelu_backward_bf16(void *dinp, int dinp_bf16, const float *dout, const uint16_t *inp, size_t n) {
    gelu_backward(dinp_bf16 ? NULL : dinp, dinp_bf16 ? dinp : NULL, dout, NULL, inp, n);
}
