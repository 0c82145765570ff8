/*
 * core/ops/cpu/resample.c: the bicubic resize of channels-last images on the CPU
 * (kernels.h resize_bicubic), separable: rows along x into an f32 scratch
 * [n, h, ow, c], then along y, each output a sum of K taps in float with the
 * weights of lunar_bicubic_weights (core/ops/ref/resample.c) rounded to f32;
 * OpenMP over rows. Tested against the reference by tests/c/test_resample.c.
 */
#include <stdlib.h>

#include "lunar/kernels.h"
#include "simd.h"

void lunar_cpu_resize_bicubic(float *out, const float *inp, int64_t n, int64_t h, int64_t w, int64_t c,
                              int64_t oh, int64_t ow, int antialias) {
    int ky = lunar_bicubic_weights(h, oh, antialias, NULL, NULL), kx = lunar_bicubic_weights(w, ow, antialias, NULL, NULL);
    int64_t *iy = malloc(sizeof(int64_t) * (size_t)(oh * ky)), *ix = malloc(sizeof(int64_t) * (size_t)(ow * kx));
    double *wy = malloc(sizeof(double) * (size_t)(oh * ky)), *wx = malloc(sizeof(double) * (size_t)(ow * kx));
    float *tmp = malloc(sizeof(float) * (size_t)(n * h * ow * c));
    if (!iy || !ix || !wy || !wx || !tmp) abort();
    lunar_bicubic_weights(h, oh, antialias, iy, wy);
    lunar_bicubic_weights(w, ow, antialias, ix, wx);
    size_t work = (size_t)(n * (h + oh) * ow * c) * (size_t)(kx + ky);
    /* along x: tmp[b, y, x', ch] = sum_d wx[x', d] inp[b, y, ix[x', d], ch] */
    LUNAR_OMP(omp parallel for schedule(static) if (work >= LUNAR_PAR_MIN))
    for (int64_t r = 0; r < n * h; r++)
        for (int64_t x = 0; x < ow; x++) {
            float *dst = tmp + (r * ow + x) * c;
            for (int64_t ch = 0; ch < c; ch++) dst[ch] = 0.0f;
            for (int d = 0; d < kx; d++) {
                float wgt = (float)wx[x * kx + d];
                const float *src = inp + (r * w + ix[x * kx + d]) * c;
                for (int64_t ch = 0; ch < c; ch++) dst[ch] += wgt * src[ch];
            }
        }
    /* along y */
    LUNAR_OMP(omp parallel for schedule(static) if (work >= LUNAR_PAR_MIN))
    for (int64_t r = 0; r < n * oh; r++) {
        int64_t b = r / oh, y = r % oh;
        float *dst = out + r * ow * c;
        for (int64_t i = 0; i < ow * c; i++) dst[i] = 0.0f;
        for (int a = 0; a < ky; a++) {
            float wgt = (float)wy[y * ky + a];
            const float *src = tmp + (b * h + iy[y * ky + a]) * ow * c;
            for (int64_t i = 0; i < ow * c; i++) dst[i] += wgt * src[i];
        }
    }
    free(iy); free(ix); free(wy); free(wx); free(tmp);
}
