/*
 * core/ops/cpu/patchify.c: patchify and its scatter (kernels.h), the data
 * movement of a convolution with kernel = stride = P.
 * A 2-D input is handled as a 3-D one with depth 1 and patch depth 1, so one
 * loop nest serves both: per (b, patch-grid plane z, patch-grid row y), every
 * input row segment of P elements is copied to its place in the patch vector.
 * Rows (b, z, y) are split over threads; every element is written exactly once.
 */
#include <string.h>

#include "lunar/kernels.h"
#include "simd.h"

static void patch_move(float *out, float *img, const float *src, int to_patches, int B, int C,
                       int k, const int *S, int P) {
    int S0 = k == 3 ? S[0] : 1, S1 = S[k - 2], S2 = S[k - 1];
    int Pz = k == 3 ? P : 1;
    int GZ = S0 / Pz, GY = S1 / P, GX = S2 / P;
    size_t L = (size_t)GZ * GY * GX, E = (size_t)C * Pz * P * P;
    int rows = B * GZ * GY;
    size_t total = (size_t)B * L * E;
    (void)total; /* only in the OpenMP clause */
    LUNAR_OMP(omp parallel for schedule(static) if (total >= LUNAR_PAR_MIN))
    for (int r = 0; r < rows; r++) {
        int b = r / (GZ * GY), gz = (r / GY) % GZ, gy = r % GY;
        size_t l0 = ((size_t)gz * GY + gy) * GX;
        for (int c = 0; c < C; c++) {
            for (int pz = 0; pz < Pz; pz++) {
                for (int py = 0; py < P; py++) {
                    size_t irow = ((((size_t)b * C + c) * S0 + (size_t)gz * Pz + pz) * S1 +
                                   (size_t)gy * P + py) * S2;
                    size_t e0 = (((size_t)c * Pz + pz) * P + py) * P;
                    for (int gx = 0; gx < GX; gx++) {
                        size_t o = ((size_t)b * L + l0 + gx) * E + e0;
                        size_t i = irow + (size_t)gx * P;
                        if (to_patches) memcpy(out + o, src + i, (size_t)P * sizeof(float));
                        else memcpy(img + i, src + o, (size_t)P * sizeof(float));
                    }
                }
            }
        }
    }
}

void lunar_cpu_patchify_forward(float *out, const float *inp, int B, int C, int k, const int *S,
                                int P) {
    patch_move(out, NULL, inp, 1, B, C, k, S, P);
}

void lunar_cpu_patchify_backward(float *dinp, const float *dout, int B, int C, int k,
                                 const int *S, int P) {
    patch_move(NULL, dinp, dout, 0, B, C, k, S, P);
}
