/*
 * core/ops/ref/resample.c: the reference bicubic resize of channels-last images
 * (kernels.h resize_bicubic; PyTorch's F.interpolate(mode='bicubic',
 * align_corners=False), with or without antialias), used to resample a ViT's
 * position embedding to another patch grid (lua/lunar/timm.lua, timm's
 * resample_abs_pos_embed). Also the 1-D weights both the reference and the CPU
 * kernel (core/ops/cpu/resample.c) use, lunar_bicubic_weights. The reference sums
 * the full 2-D stencil wy * wx * in directly, in double. Tested by
 * tests/c/test_resample.c (hand-computed weights) and tests/golden/timm_check.py (timm).
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

/* Keys' cubic convolution kernel (PyTorch's cubic_convolution1 / 2, UpSample.h):
 * |x| <= 1: ((A + 2)|x| - (A + 3)) x^2 + 1; 1 < |x| < 2: ((A|x| - 5A)|x| + 8A)|x| - 4A. */
static double cubic1(double x, double A) { return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0; }
static double cubic2(double x, double A) { return ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A; }

/* The antialiased filter (PyTorch's HelperInterpCubic::aa_filter, A = -0.5 as PIL). */
static double aa_filter(double x) {
    if (x < 0) x = -x;
    if (x < 1.0) return cubic1(x, -0.5);
    if (x < 2.0) return cubic2(x, -0.5);
    return 0.0;
}

int lunar_bicubic_weights(int64_t in_size, int64_t out_size, int antialias, int64_t *idx, double *wt) {
    double scale = (double)in_size / (double)out_size;
    if (!antialias) {
        if (!idx) return 4;
        const double A = -0.75;
        for (int64_t o = 0; o < out_size; o++) {
            double real = scale * ((double)o + 0.5) - 0.5;   /* not clamped for cubic (area_pixel_compute_source_index) */
            double fl = floor(real), t = real - fl;
            double c[4] = {cubic2(t + 1.0, A), cubic1(t, A), cubic1(1.0 - t, A), cubic2(2.0 - t, A)};
            for (int k = 0; k < 4; k++) {
                int64_t i = (int64_t)fl - 1 + k;
                idx[o * 4 + k] = i < 0 ? 0 : i >= in_size ? in_size - 1 : i;
                wt[o * 4 + k] = c[k];
            }
        }
        return 4;
    }
    /* _compute_indices_weights_aa (UpSampleKernel.cpp): interp_size 4 */
    double support = scale >= 1.0 ? 2.0 * scale : 2.0;
    int K = (int)ceil(support) * 2 + 1;
    if (!idx) return K;
    double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    for (int64_t o = 0; o < out_size; o++) {
        double center = scale * ((double)o + 0.5);
        int64_t xmin = (int64_t)(center - support + 0.5), xmax = (int64_t)(center + support + 0.5);   /* trunc, as C++ */
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        double total = 0;
        for (int k = 0; k < K; k++) {
            int64_t i = xmin + k;
            double v = i < xmax ? aa_filter(((double)i - center + 0.5) * invscale) : 0.0;
            idx[o * K + k] = i < xmax ? i : 0;
            wt[o * K + k] = v;
            total += v;
        }
        if (total != 0.0)
            for (int k = 0; k < K; k++) wt[o * K + k] /= total;
    }
    return K;
}

#define LUNAR_REF_GENERIC "resample.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

void NAME(resize_bicubic)(real *out, const real *inp, int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh,
                          int64_t ow, int antialias) {
    int ky = lunar_bicubic_weights(h, oh, antialias, NULL, NULL), kx = lunar_bicubic_weights(w, ow, antialias, NULL, NULL);
    int64_t *iy = malloc(sizeof(int64_t) * (size_t)(oh * ky)), *ix = malloc(sizeof(int64_t) * (size_t)(ow * kx));
    double *wy = malloc(sizeof(double) * (size_t)(oh * ky)), *wx = malloc(sizeof(double) * (size_t)(ow * kx));
    if (!iy || !ix || !wy || !wx) abort();   /* the oracle: sizes of tests */
    lunar_bicubic_weights(h, oh, antialias, iy, wy);
    lunar_bicubic_weights(w, ow, antialias, ix, wx);
    for (int64_t b = 0; b < n; b++)
        for (int64_t y = 0; y < oh; y++)
            for (int64_t x = 0; x < ow; x++)
                for (int64_t ch = 0; ch < c; ch++) {
                    double s = 0;
                    for (int a = 0; a < ky; a++)
                        for (int d = 0; d < kx; d++)
                            s += wy[y * ky + a] * wx[x * kx + d] *
                                 (double)inp[((b * h + iy[y * ky + a]) * w + ix[x * kx + d]) * c + ch];
                    out[((b * oh + y) * ow + x) * c + ch] = (real)s;
                }
    free(iy); free(ix); free(wy); free(wx);
}

#endif
