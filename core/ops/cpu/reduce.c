/*
 * core/ops/cpu/reduce.c: whole-tensor reductions on the CPU (kernels.h
 * reduce): sum, sum of squares, min, max of an f32 / bf16 / f64 array, in
 * double. The array is cut into chunks whose size depends on n only (at least
 * 16384 elements, at most 1024 chunks); the chunks run on the OpenMP threads,
 * each in 16 double lanes over blocks widened by elem.h, and their results are
 * combined in chunk order: the same bits for any thread count. NaN: sums
 * propagate it by arithmetic; min and max count NaN elements beside the lanes
 * (a compare the compiler vectorizes) and return NaN when there is one, as
 * PyTorch's amin/amax. The sum of squares of f32 data is lunar_cpu_sum_squares
 * (elementwise.c; the gradient norm), so x:norm()^2 and ops.sum_squares(x)
 * agree bit for bit.
 */
#include <math.h>

#include "elem.h"

#define LANES 16
#define MAX_CHUNKS 1024

static size_t chunk_size(size_t n) {
    size_t c = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
    c = (c + LUNAR_ELEM_BLOCK - 1) / LUNAR_ELEM_BLOCK * LUNAR_ELEM_BLOCK;
    return c < 16384 ? 16384 : c;
}

static double identity(int op) {
    return op == LUNAR_REDUCE_MIN ? INFINITY : op == LUNAR_REDUCE_MAX ? -INFINITY : 0.0;
}

/* Combines two partial results of op (NaN wins for min and max). */
static double combine(int op, double acc, double v) {
    if (op == LUNAR_REDUCE_MIN) return isnan(v) || v < acc ? v : acc;
    if (op == LUNAR_REDUCE_MAX) return isnan(v) || v > acc ? v : acc;
    return acc + v;
}

/* op over x[i0, i0 + len). */
static double reduce_chunk(const void *x, int type, size_t i0, size_t len, int op) {
    double lane[LANES], d[LUNAR_ELEM_BLOCK];
    int64_t nans = 0;
    for (int l = 0; l < LANES; l++) lane[l] = identity(op);
    for (size_t b = 0; b < len; b += LUNAR_ELEM_BLOCK) {
        size_t m = len - b < LUNAR_ELEM_BLOCK ? len - b : LUNAR_ELEM_BLOCK, j = 0;
        lunar_cpu_load_elems(d, x, type, i0 + b, m);
        for (; j + LANES <= m; j += LANES) {
            switch (op) {
            case LUNAR_REDUCE_SUM:
                for (int l = 0; l < LANES; l++) lane[l] += d[j + l];
                break;
            case LUNAR_REDUCE_SUMSQ:
                for (int l = 0; l < LANES; l++) lane[l] += d[j + l] * d[j + l];
                break;
            case LUNAR_REDUCE_MIN:
                for (int l = 0; l < LANES; l++) {
                    nans += d[j + l] != d[j + l];
                    lane[l] = d[j + l] < lane[l] ? d[j + l] : lane[l];
                }
                break;
            default:
                for (int l = 0; l < LANES; l++) {
                    nans += d[j + l] != d[j + l];
                    lane[l] = d[j + l] > lane[l] ? d[j + l] : lane[l];
                }
                break;
            }
        }
        for (; j < m; j++) {   /* the tail, into lane 0 */
            double v = op == LUNAR_REDUCE_SUMSQ ? d[j] * d[j] : d[j];
            nans += v != v;
            lane[0] = combine(op, lane[0], v);
        }
    }
    double r = lane[0];
    for (int l = 1; l < LANES; l++) r = combine(op, r, lane[l]);
    return nans ? NAN : r;
}

double lunar_cpu_reduce(const void *x, int x_type, size_t n, int op) {
    if (op == LUNAR_REDUCE_SUMSQ && x_type == LUNAR_ELEM_F32) return lunar_cpu_sum_squares(x, n);
    if (n == 0) return identity(op);
    size_t chunk = chunk_size(n);
    int nchunks = (int)((n + chunk - 1) / chunk);
    double part[MAX_CHUNKS];
    LUNAR_OMP(omp parallel for schedule(static) if (nchunks > 1))
    for (int c = 0; c < nchunks; c++) {
        size_t i0 = (size_t)c * chunk;
        part[c] = reduce_chunk(x, x_type, i0, n - i0 < chunk ? n - i0 : chunk, op);
    }
    double r = part[0];
    for (int c = 1; c < nchunks; c++) r = combine(op, r, part[c]);
    return r;
}
