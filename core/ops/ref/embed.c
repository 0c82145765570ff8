/*
 * core/ops/ref/embed.c: the reference kernels of the token embedding (class token and position embedding):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_embed.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "embed.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * Token embedding: prepend the class token, add the position embedding
 * (Dosovitskiy et al. 2021; timm VisionTransformer._pos_embed). */

/* out[b, 0] = cls + pos[0]; out[b, 1 + l] = x[b, l] + pos[1 + l]. */
void NAME(embed_tokens_forward)(real *out, const real *x, const real *cls, const real *pos,
                                int B, int L, int C) {
    for (int b = 0; b < B; b++) {
        for (int t = 0; t <= L; t++) {
            for (int c = 0; c < C; c++) {
                double v = t == 0 ? (double)cls[c] : (double)x[((size_t)b * L + t - 1) * C + c];
                out[((size_t)b * (L + 1) + t) * C + c] = (real)(v + (double)pos[(size_t)t * C + c]);
            }
        }
    }
}

/* dx[b, l] = dout[b, 1 + l] (overwritten, skipped when NULL);
 * dcls += sum_b dout[b, 0]; dpos[t] += sum_b dout[b, t]. */
void NAME(embed_tokens_backward)(real *dx, real *dcls, real *dpos, const real *dout, int B,
                                 int L, int C) {
    if (dx) {
        for (int b = 0; b < B; b++) {
            for (int l = 0; l < L; l++) {
                for (int c = 0; c < C; c++) {
                    dx[((size_t)b * L + l) * C + c] = dout[((size_t)b * (L + 1) + 1 + l) * C + c];
                }
            }
        }
    }
    for (int t = 0; t <= L; t++) {
        for (int c = 0; c < C; c++) {
            double sum = 0.0;
            for (int b = 0; b < B; b++) sum += (double)dout[((size_t)b * (L + 1) + t) * C + c];
            dpos[(size_t)t * C + c] += (real)sum;
            if (t == 0) dcls[c] += (real)sum;
        }
    }
}

#endif /* LUNAR_REF_GENERIC */
