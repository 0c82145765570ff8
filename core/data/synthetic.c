/*
 * core/data/synthetic.c: learnable synthetic 2D/3D images (data.h).
 *
 * Class k has a fixed pattern per channel: the mean of two plane waves
 * cos(2 pi sum_d f_d x_d / size_d + phi) with integer frequencies f_d in [0, 3]
 * and a phase phi in [0, 2 pi), drawn from Philox stream
 * "lunar.data.synthetic.pattern" at words 4 * ((k * C + c) * 2 + wave) + {0..3}
 * (3 frequency words, 1 phase word). Sample i has label i % num_classes and
 * pixels pattern + 0.5 * N(0, 1), the noise from stream
 * "lunar.data.synthetic.noise" at normals i * sample_numel + j.
 * A slab (lunar_dataset_synthetic_slab: rows row0.. of the first spatial dim,
 * domain parallelism) has exactly those pixels of the whole images, computed
 * for the slab only.
 */
#include <math.h>
#include <stdlib.h>

#include "internal.h"
#include "lunar/rng.h"

#define SYN_NOISE_STD 0.5f

lunar_dataset *lunar_dataset_synthetic(int64_t n, int channels, int ndim_spatial, const int *size,
                                       int num_classes, uint64_t seed) {
    return lunar_dataset_synthetic_slab(n, channels, ndim_spatial, size, num_classes, seed, 0,
                                        size ? size[0] : 0);
}

lunar_dataset *lunar_dataset_synthetic_slab(int64_t n, int channels, int ndim_spatial, const int *size,
                                            int num_classes, uint64_t seed, int row0, int rows) {
    if (n < 0 || channels < 1 || (ndim_spatial != 2 && ndim_spatial != 3) || !size ||
        num_classes < 1) {
        lunar_error(LUNAR_ERR_ARG,
                    "synthetic dataset: bad arguments (n %lld, channels %d, ndim_spatial %d, "
                    "num_classes %d): need n >= 0, channels >= 1, ndim_spatial 2 or 3, "
                    "num_classes >= 1",
                    (long long)n, channels, ndim_spatial, num_classes);
        return NULL;
    }
    if (row0 < 0 || rows < 1 || size[0] < 1 || row0 + rows > size[0]) {
        lunar_error(LUNAR_ERR_ARG, "synthetic dataset: slab rows %d..%d are not within the first spatial size %d",
                    row0, row0 + rows - 1, size[0]);
        return NULL;
    }
    int slab_size[3] = {rows, size[1], ndim_spatial == 3 ? size[2] : 1};
    lunar_dataset *ds = lunar_dataset_new(LUNAR_F32, n, channels, ndim_spatial, slab_size, num_classes);
    if (!ds) return NULL;
    /* the slab's numel and plane; the whole image's for the noise offsets */
    int64_t numel = ds->sample_numel, plane = numel / channels;
    int64_t rest = plane / rows, full_plane = (int64_t)size[0] * rest, full_numel = full_plane * channels;
    if ((uint64_t)num_classes > SIZE_MAX / sizeof(float) / (uint64_t)numel) {
        lunar_error(LUNAR_ERR_OOM, "synthetic dataset: %d class patterns overflow memory", num_classes);
        lunar_dataset_free(ds);
        return NULL;
    }
    float *pattern = malloc((size_t)num_classes * (size_t)numel * sizeof(float));
    if (!pattern) {
        lunar_error(LUNAR_ERR_OOM, "synthetic dataset: out of memory for %d class patterns",
                    num_classes);
        lunar_dataset_free(ds);
        return NULL;
    }
    const uint64_t pstream = lunar_rng_stream_id("lunar.data.synthetic.pattern");
    const uint64_t nstream = lunar_rng_stream_id("lunar.data.synthetic.noise");
    /* spatial sizes as 3 dims (D = 1 for 2D) */
    int sz[3] = {1, size[0], size[1]};
    if (ndim_spatial == 3) { sz[0] = size[0]; sz[1] = size[1]; sz[2] = size[2]; }
    for (int k = 0; k < num_classes; k++) {
        for (int c = 0; c < channels; c++) {
            double f[2][3], phi[2];
            for (int w = 0; w < 2; w++) {
                uint64_t base = 4 * (((uint64_t)k * (uint64_t)channels + (uint64_t)c) * 2 + (uint64_t)w);
                /* the first frequency word goes to the first spatial dim */
                for (int d = 0; d < 3; d++) f[w][d] = 0;
                for (int d = 0; d < ndim_spatial; d++)
                    f[w][3 - ndim_spatial + d] = (double)(lunar_rng_u32(seed, pstream, base + (uint64_t)d) % 4u);
                phi[w] = 2.0 * M_PI * (double)(lunar_rng_u32(seed, pstream, base + 3) >> 8) / 16777216.0;
            }
            float *out = pattern + ((int64_t)k * channels + c) * plane;
            int64_t p = 0;
            /* the slab's rows of the first spatial dim (z in 3D, y in 2D), at their place in the image */
            int z0 = ndim_spatial == 3 ? row0 : 0, z1 = ndim_spatial == 3 ? row0 + rows : 1;
            int y0 = ndim_spatial == 2 ? row0 : 0, y1 = ndim_spatial == 2 ? row0 + rows : sz[1];
            for (int z = z0; z < z1; z++)
                for (int y = y0; y < y1; y++)
                    for (int x = 0; x < sz[2]; x++, p++) {
                        double v = 0;
                        for (int w = 0; w < 2; w++) {
                            double t = f[w][0] * z / sz[0] + f[w][1] * y / sz[1] + f[w][2] * x / sz[2];
                            v += 0.5 * cos(2.0 * M_PI * t + phi[w]);
                        }
                        out[p] = (float)v;
                    }
        }
    }
    float *px = ds->pixels;
    for (int64_t i = 0; i < n; i++) {
        int k = (int)(i % num_classes);
        ds->labels[i] = k;
        float *o = px + i * numel;
        /* the noise of the whole image's pixels in the slab: per channel, one run of the stream */
        for (int c = 0; c < channels; c++)
            lunar_rng_normal(o + c * plane, (size_t)plane, seed, nstream,
                             (uint64_t)i * (uint64_t)full_numel + (uint64_t)(c * full_plane + row0 * rest), 0.0f,
                             SYN_NOISE_STD);
        const float *pt = pattern + (int64_t)k * numel;
        for (int64_t j = 0; j < numel; j++) o[j] += pt[j];
    }
    free(pattern);
    return ds;
}
