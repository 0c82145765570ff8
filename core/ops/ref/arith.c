/*
 * core/ops/ref/arith.c: the reference kernel of tensor arithmetic (the + - * /
 * of lunar.Tensor): lunar_ref_arith_f64 and lunar_ref_arith_f32 of
 * lunar/kernels.h (the contract). Written once against `real` and NAME(op),
 * compiled for double and float by generic.h (ref.h: how the reference kernels
 * are written). Tested by tests/c/test_arith.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

/* Element i of an untyped operand (a LUNAR_ELEM_* array), or the scalar s when
 * the operand is NULL, as a double (exact for every element type). */
static double lunar_ref_operand(const void *p, int type, double s, size_t i) {
    if (!p) return s;
    if (type == LUNAR_ELEM_BF16) return lunar_ref_from_bf16(((const uint16_t *)p)[i]);
    if (type == LUNAR_ELEM_F64) return ((const double *)p)[i];
    return (double)((const float *)p)[i];
}

#define LUNAR_REF_GENERIC "arith.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* out = a op b in double, rounded once to real: torch.add/sub/mul/div (and
 * torch.rsqrt(a + b) for RSQRT_ADD) on float64 copies of the operands. */
void NAME(arith)(real *out, const void *a, int a_type, double sa, const void *b, int b_type,
                 double sb, size_t n, int op) {
    for (size_t i = 0; i < n; i++) {
        double x = lunar_ref_operand(a, a_type, sa, i), y = lunar_ref_operand(b, b_type, sb, i), r;
        switch (op) {
        case LUNAR_ARITH_ADD: r = x + y; break;
        case LUNAR_ARITH_SUB: r = x - y; break;
        case LUNAR_ARITH_MUL: r = x * y; break;
        case LUNAR_ARITH_RSQRT_ADD: r = 1.0 / sqrt(x + y); break;
        default: r = x / y; break;
        }
        out[i] = (real)r;
    }
}

#endif /* LUNAR_REF_GENERIC */
