/*
 * core/ops/ref/dropout.c: the reference kernels of inverted dropout with the counter-based Philox mask:
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_dropout.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

/* The dropout rule of kernels.h: element i is kept when
 * u_i = (w_i >> 8) * 2^-24 >= p, w_i = lunar_rng_u32(seed, stream, offset + i).
 * u_i is exact in float and double; p is compared as a double. */
static int lunar_ref_dropout_keep(double p, uint64_t seed, uint64_t stream, uint64_t index) {
    double u = (double)(lunar_rng_u32(seed, stream, index) >> 8) * (1.0 / 16777216.0);
    return u >= p;
}

#define LUNAR_REF_GENERIC "dropout.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * Dropout, inverted (Srivastava et al. 2014; torch.nn.functional.dropout scales
 * the kept elements by 1/(1-p) in training). The mask is a pure function of
 * (seed, stream, offset + i) (kernels.h), never stored. p >= 1 drops
 * everything, as PyTorch. Elementwise: out may alias inp. */

void NAME(dropout_forward)(real *out, const real *inp, size_t n, real p, uint64_t seed,
                           uint64_t stream, uint64_t offset) {
    if (p == 0) {
        if (out != inp) memcpy(out, inp, n * sizeof *out);
        return;
    }
    double keep_scale = p >= 1 ? 0.0 : 1.0 / (1.0 - (double)p);
    for (size_t i = 0; i < n; i++) {
        int keep = lunar_ref_dropout_keep((double)p, seed, stream, offset + i);
        out[i] = keep ? (real)((double)inp[i] * keep_scale) : (real)0;
    }
}

/* dinp = dout * mask / (1 - p), the same mask as forward. */
void NAME(dropout_backward)(real *dinp, const real *dout, size_t n, real p, uint64_t seed,
                            uint64_t stream, uint64_t offset) {
    NAME(dropout_forward)(dinp, dout, n, p, seed, stream, offset);
}

/* The block [rows, row_len] of a tensor with rows row_stride long: row r is
 * dropout_forward of row_len elements at offset + r row_stride. */
void NAME(dropout_rows)(real *out, const real *inp, size_t rows, size_t row_len, real p, uint64_t seed,
                        uint64_t stream, uint64_t offset, uint64_t row_stride) {
    for (size_t r = 0; r < rows; r++)
        NAME(dropout_forward)(out + r * row_len, inp + r * row_len, row_len, p, seed, stream, offset + r * row_stride);
}

#endif /* LUNAR_REF_GENERIC */
