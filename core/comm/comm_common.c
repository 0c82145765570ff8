/* core/comm/comm_common.c: argument checks and messages shared by
 * comm_mpi.c and comm_single.c (internal.h). No MPI here. */
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

lunar_status comm_fail(const comm_ctx *x, lunar_status st, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lunar_error(st, "%s: comm '%s' (rank %d of %d): %s", x->op, x->name ? x->name : "?",
                       x->rank, x->size, msg);
}

lunar_status comm_check_comm(const lunar_comm *c, const char *op) {
    if (!c) return lunar_error(LUNAR_ERR_ARG, "%s: no communicator (NULL)", op);
    return LUNAR_OK;
}

const char *comm_op_name(lunar_reduce_op op) {
    switch (op) {
    case LUNAR_SUM: return "sum";
    case LUNAR_AVG: return "avg";
    case LUNAR_MAX: return "max";
    case LUNAR_MIN: return "min";
    }
    return "?";
}

int comm_op_valid(lunar_reduce_op op) {
    return op == LUNAR_SUM || op == LUNAR_AVG || op == LUNAR_MAX || op == LUNAR_MIN;
}

lunar_status comm_check_tensor(const comm_ctx *x, const lunar_tensor *t, const char *what,
                               comm_use use, lunar_reduce_op op) {
    if (!t) return comm_fail(x, LUNAR_ERR_ARG, "%s is NULL", what);
    if (!t->storage) return comm_fail(x, LUNAR_ERR_ARG, "%s was released (freed)", what);
    if (t->storage->device != LUNAR_CPU)
        return comm_fail(x, LUNAR_ERR_DEVICE, "%s is on device %d; collectives take CPU tensors",
                         what, t->storage->device);
    if (!lunar_tensor_is_contiguous(t))
        return comm_fail(x, LUNAR_ERR_ARG, "%s is not contiguous (use :contiguous())", what);
    if ((unsigned)t->dtype >= LUNAR_NUM_DTYPES)
        return comm_fail(x, LUNAR_ERR_DTYPE, "%s has a bad dtype %d", what, (int)t->dtype);
    int64_t n = lunar_tensor_numel(t);
    if (n > INT_MAX)
        return comm_fail(x, LUNAR_ERR_ARG, "%s has %lld elements (at most %d per call)", what,
                         (long long)n, INT_MAX);
    if (use == COMM_REDUCE) {
        if (!comm_op_valid(op)) return comm_fail(x, LUNAR_ERR_ARG, "bad reduce op %d", (int)op);
        int fl = t->dtype == LUNAR_F32 || t->dtype == LUNAR_F64;
        int in = t->dtype == LUNAR_I32 || t->dtype == LUNAR_I64;
        if (!fl && !in)
            return comm_fail(x, LUNAR_ERR_DTYPE,
                             "%s has dtype %s, which cannot be reduced (f32, f64, i32, i64; "
                             "convert with :to('f32'))", what, lunar_dtype_name(t->dtype));
        if (op == LUNAR_AVG && !fl)
            return comm_fail(x, LUNAR_ERR_DTYPE,
                             "op 'avg' needs a floating dtype (f32, f64), %s has %s; use 'sum'",
                             what, lunar_dtype_name(t->dtype));
    }
    return LUNAR_OK;
}

lunar_status comm_check_same_dtype(const comm_ctx *x, const lunar_tensor *out, const lunar_tensor *in) {
    if (out->dtype != in->dtype)
        return comm_fail(x, LUNAR_ERR_DTYPE, "dtype of out (%s) differs from in (%s)",
                         lunar_dtype_name(out->dtype), lunar_dtype_name(in->dtype));
    return LUNAR_OK;
}

lunar_status comm_check_blocks(const comm_ctx *x, const lunar_tensor *big, const char *big_name,
                               const lunar_tensor *small, const char *small_name) {
    int64_t nb = lunar_tensor_numel(big), ns = lunar_tensor_numel(small);
    if (nb != (int64_t)x->size * ns)
        return comm_fail(x, LUNAR_ERR_SHAPE,
                         "%s has %lld elements, expected size * %s = %d * %lld = %lld", big_name,
                         (long long)nb, small_name, x->size, (long long)ns,
                         (long long)((int64_t)x->size * ns));
    return LUNAR_OK;
}

int comm_overlap(const lunar_tensor *a, const lunar_tensor *b) {
    const char *pa = lunar_tensor_data(a), *pb = lunar_tensor_data(b);
    size_t na = lunar_tensor_nbytes(a), nb = lunar_tensor_nbytes(b);
    if (!pa || !pb || !na || !nb) return 0;
    return (uintptr_t)pa < (uintptr_t)pb + nb && (uintptr_t)pb < (uintptr_t)pa + na;
}

lunar_status comm_check_rank(const comm_ctx *x, int r, const char *what, int not_self) {
    if (r < 0 || r >= x->size)
        return comm_fail(x, LUNAR_ERR_ARG, "%s %d is not a rank of this communicator (0 .. %d)",
                         what, r, x->size - 1);
    if (not_self && r == x->rank)
        return comm_fail(x, LUNAR_ERR_ARG,
                         "%s %d is this rank; point to point to self is not supported", what, r);
    return LUNAR_OK;
}

lunar_status comm_check_tag(const comm_ctx *x, int tag) {
    if (tag < 0) return comm_fail(x, LUNAR_ERR_ARG, "tag %d is negative (tags are >= 0)", tag);
    return LUNAR_OK;
}

void comm_avg_divide(void *data, int64_t n, lunar_dtype dtype, int size) {
    if (size <= 1) return;
    if (dtype == LUNAR_F32) {
        float *p = data, s = (float)size;
        for (int64_t i = 0; i < n; i++) p[i] /= s;
    } else if (dtype == LUNAR_F64) {
        double *p = data, s = (double)size;
        for (int64_t i = 0; i < n; i++) p[i] /= s;
    }
}

lunar_status comm_check_reduce_scatter(const comm_ctx *x, lunar_tensor *out, const lunar_tensor *in,
                                       lunar_reduce_op op) {
    lunar_status st;
    if ((st = comm_check_tensor(x, in, "in", COMM_REDUCE, op))) return st;
    if ((st = comm_check_tensor(x, out, "out", COMM_REDUCE, op))) return st;
    if ((st = comm_check_same_dtype(x, out, in))) return st;
    if ((st = comm_check_blocks(x, in, "in", out, "out"))) return st;
    if (comm_overlap(out, in)) return comm_fail(x, LUNAR_ERR_ARG, "out overlaps in");
    return LUNAR_OK;
}

lunar_status comm_check_all_gather(const comm_ctx *x, lunar_tensor *out, const lunar_tensor *in, int *in_place) {
    lunar_status st;
    *in_place = 0;
    if ((st = comm_check_tensor(x, in, "in", COMM_MOVE, LUNAR_SUM))) return st;
    if ((st = comm_check_tensor(x, out, "out", COMM_MOVE, LUNAR_SUM))) return st;
    if ((st = comm_check_same_dtype(x, out, in))) return st;
    if ((st = comm_check_blocks(x, out, "out", in, "in"))) return st;
    if (comm_overlap(out, in)) {
        const char *own = (const char *)lunar_tensor_data(out) + (size_t)x->rank * lunar_tensor_nbytes(in);
        if ((const char *)lunar_tensor_data(in) != own)
            return comm_fail(x, LUNAR_ERR_ARG, "in overlaps out but is not block %d of out (the only in-place form)",
                             x->rank);
        *in_place = 1;
    }
    return LUNAR_OK;
}

void *comm_split_alloc(const comm_ctx *x, int color, size_t size) {
    if (color < 0) {
        comm_fail(x, LUNAR_ERR_ARG, "color %d is negative (colors are >= 0)", color);
        return NULL;
    }
    void *nc = calloc(1, size);
    if (!nc) comm_fail(x, LUNAR_ERR_OOM, "out of memory");
    return nc;
}
