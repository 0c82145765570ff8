/*
 * core/ops/ref/reduce.c: the reference kernel of the whole-tensor reductions
 * (lunar.Tensor's sum, mean, min, max, norm): lunar_ref_reduce_f64 and
 * lunar_ref_reduce_f32 of lunar/kernels.h (the contract; both variants are
 * the same function, real plays no part). Written once against NAME(op),
 * compiled twice by generic.h (ref.h). Tested by tests/c/test_reduce.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

/* Element i of x (a LUNAR_ELEM_* array) as a double (exact). */
static double lunar_ref_elem(const void *x, int type, size_t i) {
    if (type == LUNAR_ELEM_BF16) return lunar_ref_from_bf16(((const uint16_t *)x)[i]);
    if (type == LUNAR_ELEM_F64) return ((const double *)x)[i];
    return (double)((const float *)x)[i];
}

#define LUNAR_REF_GENERIC "reduce.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* One pass in element order, accumulated in double. The first NaN ends it with
 * NaN for every op (PyTorch: sum, amin, amax and norm propagate NaN). */
double NAME(reduce)(const void *x, int x_type, size_t n, int op) {
    double acc = op == LUNAR_REDUCE_MIN ? INFINITY : op == LUNAR_REDUCE_MAX ? -INFINITY : 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = lunar_ref_elem(x, x_type, i);
        if (isnan(v)) return NAN;
        switch (op) {
        case LUNAR_REDUCE_SUM: acc += v; break;
        case LUNAR_REDUCE_SUMSQ: acc += v * v; break;
        case LUNAR_REDUCE_MIN: if (v < acc) acc = v; break;
        default: if (v > acc) acc = v; break;
        }
    }
    return acc;
}

#endif /* LUNAR_REF_GENERIC */
