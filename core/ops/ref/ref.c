/*
 * core/ops/ref/ref.c: the reference kernels (lunar/kernels.h) in double
 * (lunar_ref_<op>_f64) and single (lunar_ref_<op>_f32) precision, both from
 * the one generic source ref_impl.h, Torch7 style (generic/ files included
 * once per type with `real` and a name macro defined).
 *
 * Tested by tests/c/test_ref.c (finite differences of the f64 forward and
 * forward facts); the fast kernels in core/ops/cpu are tested against these.
 * Build: part of liblunar (make), or alone with core/rng.c.
 */
#include "lunar/kernels.h"  /* LUNAR_REF_F64, LUNAR_REF_F32: the public names */

#define real double
#define NAME(op) LUNAR_REF_F64(op)
#include "ref_impl.h"
#undef real
#undef NAME

#define real float
#define NAME(op) LUNAR_REF_F32(op)
#include "ref_impl.h"
#undef real
#undef NAME
