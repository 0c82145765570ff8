/*
 * core/ops/cpu/arith.c: tensor arithmetic on the CPU (kernels.h arith): out =
 * a op b, each operand an f32 / bf16 / f64 array or a scalar. Blocks of
 * LUNAR_ELEM_BLOCK elements are widened to double (elem.h), combined in double
 * and rounded once to f32, so the result is that of the reference kernel bit
 * for bit (the double op of exact operands, one rounding); blocks are shared
 * among the OpenMP threads. out may be a (in place): a block is read before it
 * is written.
 */
#include <math.h>

#include "elem.h"

/* d[0..len) = elements i0.. of operand p, or the scalar s when p is NULL. */
static void operand_block(double *d, const void *p, int type, double s, size_t i0, size_t len) {
    if (p) { lunar_cpu_load_elems(d, p, type, i0, len); return; }
    for (size_t j = 0; j < len; j++) d[j] = s;
}

void lunar_cpu_arith(float *out, const void *a, int a_type, double sa, const void *b, int b_type, double sb,
                     size_t n, int op) {
    size_t nblocks = (n + LUNAR_ELEM_BLOCK - 1) / LUNAR_ELEM_BLOCK;
    LUNAR_OMP(omp parallel for schedule(static) if (parallel : n >= LUNAR_PAR_MIN))
    for (size_t k = 0; k < nblocks; k++) {
        double x[LUNAR_ELEM_BLOCK], y[LUNAR_ELEM_BLOCK];
        size_t i0 = k * LUNAR_ELEM_BLOCK, len = n - i0 < LUNAR_ELEM_BLOCK ? n - i0 : LUNAR_ELEM_BLOCK;
        operand_block(x, a, a_type, sa, i0, len);
        operand_block(y, b, b_type, sb, i0, len);
        float *o = out + i0;
        switch (op) {
        case LUNAR_ARITH_ADD:
            LUNAR_SIMD for (size_t j = 0; j < len; j++) o[j] = (float)(x[j] + y[j]);
            break;
        case LUNAR_ARITH_SUB:
            LUNAR_SIMD for (size_t j = 0; j < len; j++) o[j] = (float)(x[j] - y[j]);
            break;
        case LUNAR_ARITH_MUL:
            LUNAR_SIMD for (size_t j = 0; j < len; j++) o[j] = (float)(x[j] * y[j]);
            break;
        case LUNAR_ARITH_RSQRT_ADD:   /* sqrt and / in double are correctly rounded: the reference's bits */
            LUNAR_SIMD for (size_t j = 0; j < len; j++) o[j] = (float)(1.0 / sqrt(x[j] + y[j]));
            break;
        default:
            LUNAR_SIMD for (size_t j = 0; j < len; j++) o[j] = (float)(x[j] / y[j]);
            break;
        }
    }
}
