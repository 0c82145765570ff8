/*
 * core/ops/ref/patchify.c: the reference kernels of the patch gather and scatter of the patch embedding:
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_patchify.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

/* Offset into inp[B, C, S_1..S_k] of element e of patch l of image b, where
 * the patch grid is G_i = S_i / P in row-major order and e runs over
 * (c, p_1, .., p_k) in row-major order (the flattening of a conv weight). */
static size_t lunar_ref_patch_source(int b, size_t l, size_t e, int C, int k, const int *S,
                                     int P) {
    int grid[3], within[3];
    for (int i = k - 1; i >= 0; i--) {  /* peel the last spatial dim first */
        int G = S[i] / P;
        grid[i] = (int)(l % (size_t)G);
        l /= (size_t)G;
        within[i] = (int)(e % (size_t)P);
        e /= (size_t)P;
    }
    int c = (int)e;  /* what remains of e is the channel */
    size_t off = (size_t)b * (size_t)C + (size_t)c;
    for (int i = 0; i < k; i++) off = off * (size_t)S[i] + (size_t)(grid[i] * P + within[i]);
    return off;
}

#define LUNAR_REF_GENERIC "patchify.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * Patchify: the data movement of torch.nn.Conv2d/Conv3d with kernel = stride = P
 * (timm's PatchEmbed), so that patch embedding is patchify followed by linear
 * with the conv weight [E, C, P, P(, P)] viewed as [E, C*P^k]. */

/* out[B, L, C*P^k] gathered from inp[B, C, S_1..S_k]. */
void NAME(patchify_forward)(real *out, const real *inp, int B, int C, int k, const int *S,
                            int P) {
    size_t L = 1, E = (size_t)C;
    for (int i = 0; i < k; i++) {
        L *= (size_t)(S[i] / P);
        E *= (size_t)P;
    }
    for (int b = 0; b < B; b++) {
        for (size_t l = 0; l < L; l++) {
            for (size_t e = 0; e < E; e++) {
                out[((size_t)b * L + l) * E + e] = inp[lunar_ref_patch_source(b, l, e, C, k, S, P)];
            }
        }
    }
}

/* dinp[B, C, S_1..S_k] scattered back from dout[B, L, C*P^k]; every element of
 * dinp is written exactly once because the S_i are multiples of P. */
void NAME(patchify_backward)(real *dinp, const real *dout, int B, int C, int k, const int *S,
                             int P) {
    size_t L = 1, E = (size_t)C;
    for (int i = 0; i < k; i++) {
        L *= (size_t)(S[i] / P);
        E *= (size_t)P;
    }
    for (int b = 0; b < B; b++) {
        for (size_t l = 0; l < L; l++) {
            for (size_t e = 0; e < E; e++) {
                dinp[lunar_ref_patch_source(b, l, e, C, k, S, P)] = dout[((size_t)b * L + l) * E + e];
            }
        }
    }
}

#endif /* LUNAR_REF_GENERIC */
