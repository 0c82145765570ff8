/*
 * core/ops/ref/ref.h: private to core/ops/ref. The reference kernels (the
 * oracle every other backend is tested against) are one source file per op
 * family, named as in core/ops/cpu and core/ops/cuda, each written once
 * against two macros, Torch7 "generic" style:
 *   real      the element type (double or float)
 *   NAME(op)  the public name of op (lunar_ref_<op>_f64 or lunar_ref_<op>_f32)
 * A family file includes this header, defines LUNAR_REF_GENERIC as its own
 * name and includes generic.h, which includes the file again once per type.
 * The contract of every kernel (shapes, layouts, overwrite vs accumulate) is
 * in lunar/kernels.h.
 *
 * Plain loops in the style of llm.c's train_gpt2.c: no BLAS, no OpenMP, no
 * fusion, and every sum accumulated in double in both variants, so the f32
 * variant differs from the f64 one only by the rounding of what it stores.
 * Speed is not a goal; being obviously right is. The reference kernels need
 * only core/rng.c (the dropout mask) besides the C library.
 */
#ifndef LUNAR_OPS_REF_H
#define LUNAR_OPS_REF_H

#include <math.h>    /* exp, log, erf, sqrt, pow, INFINITY, NAN */
#include <stdint.h>  /* int32_t, int64_t, uint16_t, uint64_t */
#include <stdlib.h>  /* malloc, calloc, free (scratch rows) */
#include <string.h>  /* memcpy */

#include "lunar/kernels.h"  /* the declarations the definitions must match; LUNAR_REF_F64/F32 */
#include "lunar/rng.h"      /* lunar_rng_u32: the dropout mask */

/* bf16 mixed precision (precision = 'bf16'): the same ops with bf16 operands
 * or outputs. A bf16 operand is rounded from real as it is read; the products
 * of bf16 values are exact in double and summed in double, as everything here.
 *
 * x to bf16, through float (nearest even; NaN stays a quiet NaN): the rounding
 * of lunar_f32_to_bf16, repeated so that the reference needs only rng.c. For a
 * double x the two roundings can differ from one rounding in a tie of the
 * float's last bits, far below any bf16 tolerance. */
static inline uint16_t lunar_ref_to_bf16(double x) {
    float f = (float)x;
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* bf16 h widened to double (exact). */
static inline double lunar_ref_from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return (double)f;
}

#endif /* LUNAR_OPS_REF_H */
