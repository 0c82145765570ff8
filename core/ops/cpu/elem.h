/*
 * core/ops/cpu/elem.h: private to core/ops/cpu (arith.c, reduce.c). Reads a
 * block of an untyped operand (a LUNAR_ELEM_* array of kernels.h: f32, bf16 or
 * f64) into doubles, exactly, with vectorizable loops; the kernels then work
 * on doubles whatever the operand's type.
 */
#ifndef LUNAR_CPU_ELEM_H
#define LUNAR_CPU_ELEM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lunar/half.h"
#include "lunar/kernels.h"
#include "simd.h"

/* Elements per block: two blocks of doubles (16 KiB each) stay in L1. */
#define LUNAR_ELEM_BLOCK 2048

/* d[0..len) = elements i0.. of p (type a LUNAR_ELEM_*) as doubles. */
static inline void lunar_cpu_load_elems(double *d, const void *p, int type, size_t i0, size_t len) {
    if (type == LUNAR_ELEM_F64) {
        memcpy(d, (const double *)p + i0, len * sizeof *d);
    } else if (type == LUNAR_ELEM_BF16) {
        const uint16_t *h = (const uint16_t *)p + i0;
        LUNAR_SIMD
        for (size_t j = 0; j < len; j++) d[j] = (double)lunar_half_bf16_to_f32(h[j]);
    } else {
        const float *f = (const float *)p + i0;
        LUNAR_SIMD
        for (size_t j = 0; j < len; j++) d[j] = (double)f[j];
    }
}

#endif
