/*
 * core/ops/ref/generic.h: private to core/ops/ref. Instantiates the generic
 * code of the family file named by LUNAR_REF_GENERIC (ref.h) twice: in double
 * (lunar_ref_<op>_f64) and in single precision (lunar_ref_<op>_f32).
 * Included once, at the end of the first pass of a family file.
 */
#ifndef LUNAR_REF_GENERIC
#error "define LUNAR_REF_GENERIC as the family file's name before including generic.h"
#endif

#define real double
#define NAME(op) LUNAR_REF_F64(op)
#include LUNAR_REF_GENERIC
#undef real
#undef NAME

#define real float
#define NAME(op) LUNAR_REF_F32(op)
#include LUNAR_REF_GENERIC
#undef real
#undef NAME
