/*
 * core/ops/cpu/embed.c: token embedding on the CPU (kernels.h): prepend the
 * class token and add the position embedding; backward copies dx and sums
 * dout over the batch into dcls and dpos. The sums run over b in order, in
 * double, per (token, 64-column tile): the same for any thread count.
 */
#include <string.h>

#include "lunar/kernels.h"
#include "simd.h"

void lunar_cpu_embed_tokens_forward(float *out, const float *x, const float *cls, const float *pos,
                                    int B, int L, int C) {
    const int T = L + 1;
    const int rows = B * T;
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)rows * C >= LUNAR_PAR_MIN))
    for (int r = 0; r < rows; r++) {
        int b = r / T, t = r % T;
        const float *src = t == 0 ? cls : x + ((size_t)b * L + (t - 1)) * C;
        const float *p = pos + (size_t)t * C;
        float *o = out + (size_t)r * C;
        LUNAR_SIMD
        for (int c = 0; c < C; c++) o[c] = src[c] + p[c];
    }
}

#define EMBED_TILE 64

void lunar_cpu_embed_tokens_backward(float *dx, float *dcls, float *dpos, const float *dout,
                                     int B, int L, int C) {
    const int T = L + 1;
    if (dx) {
        const int rows = B * L;
        LUNAR_OMP(omp parallel for schedule(static) if ((size_t)rows * C >= LUNAR_PAR_MIN))
        for (int r = 0; r < rows; r++) {
            int b = r / L, l = r % L;
            memcpy(dx + (size_t)r * C, dout + ((size_t)b * T + 1 + l) * C, (size_t)C * sizeof(float));
        }
    }
    if (!dcls && !dpos) return;
    const int tiles = (C + EMBED_TILE - 1) / EMBED_TILE;
    const int items = T * tiles;
    LUNAR_OMP(omp parallel for schedule(static) if ((size_t)B * T * C >= LUNAR_PAR_MIN))
    for (int it = 0; it < items; it++) {
        int t = it / tiles, c0 = (it % tiles) * EMBED_TILE;
        int nc = C - c0 < EMBED_TILE ? C - c0 : EMBED_TILE;
        double acc[EMBED_TILE];
        for (int j = 0; j < nc; j++) acc[j] = 0.0;
        for (int b = 0; b < B; b++) {
            const float *g = dout + ((size_t)b * T + t) * C + c0;
            LUNAR_SIMD
            for (int j = 0; j < nc; j++) acc[j] += (double)g[j];
        }
        if (dpos) {
            float *p = dpos + (size_t)t * C + c0;
            for (int j = 0; j < nc; j++) p[j] += (float)acc[j];
        }
        if (t == 0 && dcls) {
            for (int j = 0; j < nc; j++) dcls[c0 + j] += (float)acc[j];
        }
    }
}
