/*
 * tests/c/test_dropout.c: the kernels of inverted dropout (the Philox mask),
 * on every backend that runs here:
 *   - the reference, core/ops/ref/dropout.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/dropout.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/dropout.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_dropout && build/tests/test_dropout
 */
#include "kernel_test.h"
#include "lunar/ops.h"   /* lunar_op_dropout_rows: its checks */

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { DR_N = 40 };
#define DR_P 0.3
#define DR_SEED 7u
#define DR_STREAM 3u
#define DR_OFFSET 11u
typedef struct { double inp[DR_N], R[DR_N]; } dropout_ctx;

static double dropout_loss(void *p) {
    dropout_ctx *c = p;
    double out[DR_N];
    lunar_ref_dropout_forward_f64(out, c->inp, DR_N, DR_P, DR_SEED, DR_STREAM, DR_OFFSET);
    return dot(out, c->R, DR_N);
}

static void test_ref_dropout_backward(void) {
    dropout_ctx c;
    fill(c.inp, DR_N, -1, 1);
    fill(c.R, DR_N, -1, 1);
    double dinp[DR_N];
    set(dinp, DR_N, GARBAGE);
    lunar_ref_dropout_backward_f64(dinp, c.R, DR_N, DR_P, DR_SEED, DR_STREAM, DR_OFFSET);
    CHECK_FD(dropout_loss, &c, c.inp, DR_N, dinp);
}

static void test_ref_dropout_p0_copies(void) {
    double inp[DR_N], out[DR_N];
    fill(inp, DR_N, -1, 1);
    lunar_ref_dropout_forward_f64(out, inp, DR_N, 0.0, 1, 2, 3);
    CHECK(memcmp(out, inp, sizeof out) == 0);
    float inpf[DR_N], outf[DR_N];
    to_f32(inpf, inp, DR_N);
    lunar_ref_dropout_forward_f32(outf, inpf, DR_N, 0.0f, 1, 2, 3);
    CHECK(memcmp(outf, inpf, sizeof outf) == 0);
}

/* p = 0.5: about half kept, each kept element doubled, the mask exactly the
 * rule of kernels.h; the same (seed, stream, offset) gives the same mask */
static void test_ref_dropout_half(void) {
    enum { N = 10000 };
    static double inp[N], out[N], out2[N];
    fill(inp, N, 0.5, 1.5);  /* never zero, so a zero output means dropped */
    const uint64_t seed = 1234, stream = 99, offset = 5;
    lunar_ref_dropout_forward_f64(out, inp, N, 0.5, seed, stream, offset);
    int kept = 0;
    for (int i = 0; i < N; i++) {
        uint32_t w = lunar_rng_u32(seed, stream, offset + (uint64_t)i);
        int keep = (double)(w >> 8) / 16777216.0 >= 0.5;
        CHECK_MSG(out[i] == (keep ? 2.0 * inp[i] : 0.0), "element %d: %g for %g", i, out[i], inp[i]);
        kept += keep;
    }
    CHECK_MSG(kept > 4700 && kept < 5300, "kept %d of %d", kept, N);
    lunar_ref_dropout_forward_f64(out2, inp, N, 0.5, seed, stream, offset);
    CHECK(memcmp(out, out2, sizeof out) == 0);
    lunar_ref_dropout_forward_f64(out2, inp, N, 0.5, seed, stream + 1, offset);
    CHECK(memcmp(out, out2, sizeof out) != 0);
}

/* the mask of offset o at element i is the mask of offset 0 at element o + i */
static void test_ref_dropout_offset_shifts(void) {
    enum { N = 64, O = 5 };
    double ones[N + O], m0[N + O], mo[N];
    set(ones, N + O, 1.0);
    lunar_ref_dropout_forward_f64(m0, ones, N + O, 0.25, 42, 17, 0);
    lunar_ref_dropout_forward_f64(mo, ones, N, 0.25, 42, 17, O);
    int dropped = 0;
    for (int i = 0; i < N; i++) {
        CHECK_MSG(mo[i] == m0[O + i], "element %d", i);
        dropped += mo[i] == 0;
    }
    CHECK(dropped > 0 && dropped < N);
}

static void test_ref_f32_dropout(void) {
    enum { N = 200 };
    double inp[N], out[N], dinp[N];
    float inpf[N], outf[N], dinpf[N];
    fill(inp, N, -1, 1);
    to_f32(inpf, inp, N);
    lunar_ref_dropout_forward_f64(out, inp, N, 0.5, 9, 8, 7);
    lunar_ref_dropout_forward_f32(outf, inpf, N, 0.5f, 9, 8, 7);
    CHECK_F32(outf, out, N);
    lunar_ref_dropout_backward_f64(dinp, inp, N, 0.5, 9, 8, 7);
    lunar_ref_dropout_backward_f32(dinpf, inpf, N, 0.5f, 9, 8, 7);
    CHECK_F32(dinpf, dinp, N);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_dropout(void) {
    const size_t sizes[] = {1, 7, 1000, 100003};
    const float ps[] = {0.0f, 0.1f, 0.5f, 0.9f, 1.0f};
    const uint64_t offsets[] = {0, 3, 5, 1ull << 33};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s];
        for (size_t ip = 0; ip < sizeof ps / sizeof ps[0]; ip++) {
            for (size_t io = 0; io < sizeof offsets / sizeof offsets[0]; io++) {
                float p = ps[ip];
                uint64_t seed = 1234567 + s, stream = 0xABCDEF0123ull * (ip + 1), off = offsets[io];
                float *x = rand_f(n, 0.5, 1.5), *y = rand_f(n, -9, 9), *dx = rand_f(n, -9, 9);
                double *xd = to_d(x, n), *y_ref = zeros_d(n);
                lunar_cpu_dropout_forward(y, x, n, p, seed, stream, off);
                lunar_ref_dropout_forward_f64(y_ref, xd, n, p, seed, stream, off);
                CHECK(close_arr("dropout out", y, y_ref, n, 1e-7, 0));
                float *y32 = rand_f(n, -9, 9);
                lunar_ref_dropout_forward_f32(y32, x, n, p, seed, stream, off);
                CHECK(same_bits(y, y32, n * sizeof *y)); /* the f32 reference, bit for bit */
                free(y32);
                for (size_t i = 0; i < n; i++) CHECK((y[i] == 0.0f) == (y_ref[i] == 0.0));
                /* backward applies the same mask */
                lunar_cpu_dropout_backward(dx, x, n, p, seed, stream, off);
                CHECK(same_bits(dx, y, n * sizeof *dx));
                /* the rule, directly, for a few elements */
                for (size_t i = 0; i < n && i < 40; i++) {
                    double u = (double)(lunar_rng_u32(seed, stream, off + i) >> 8) / 16777216.0;
                    CHECK((y[i] != 0.0f) == (u >= (double)p));
                }
                free(x); free(y); free(dx); free(xd); free(y_ref);
            }
        }
    }
}

/* dropout_rows: a block of a larger row-major tensor drops what that tensor drops.
 * The whole tensor [R, C] is dropped at offset O with dropout_forward; the block
 * of rows [r0, r0 + rows) and columns [c0, c0 + len), dropped alone with
 * offset O + r0 C + c0, row_stride C, is that block of the result bit for bit
 * (ref f64, ref f32, CPU; the CPU with rows long enough for its threads too). */
static void test_dropout_rows_is_the_block(void) {
    const struct { size_t R, C, r0, rows, c0, len; } cs[] = {
        {6, 10, 1, 4, 3, 5}, {5, 7, 0, 5, 0, 7}, {9, 12, 3, 3, 6, 6}, {4, 4100, 1, 2, 1000, 2049}, {300, 64, 20, 256, 16, 16}};
    for (size_t k = 0; k < sizeof cs / sizeof *cs; k++) {
        size_t R = cs[k].R, C = cs[k].C, rows = cs[k].rows, len = cs[k].len;
        uint64_t O = 13, seed = 99, stream = 0x5151 + k, off = O + cs[k].r0 * C + cs[k].c0;
        float *full = rand_f(R * C, 0.5, 1.5), *yfull = malloc(R * C * 4);
        float *blk = malloc(rows * len * 4), *y = malloc(rows * len * 4), *y32 = malloc(rows * len * 4);
        double *blkd = malloc(rows * len * 8), *yd = malloc(rows * len * 8);
        lunar_cpu_dropout_forward(yfull, full, R * C, 0.3f, seed, stream, O);
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < len; c++) {
                blk[r * len + c] = full[(cs[k].r0 + r) * C + cs[k].c0 + c];
                blkd[r * len + c] = blk[r * len + c];
            }
        lunar_cpu_dropout_rows(y, blk, rows, len, 0.3f, seed, stream, off, C);
        lunar_ref_dropout_rows_f32(y32, blk, rows, len, 0.3f, seed, stream, off, C);
        lunar_ref_dropout_rows_f64(yd, blkd, rows, len, (double)0.3f, seed, stream, off, C);
        int ok = 1;
        for (size_t r = 0; r < rows; r++)
            for (size_t c = 0; c < len; c++) {
                float want = yfull[(cs[k].r0 + r) * C + cs[k].c0 + c];
                size_t i = r * len + c;
                ok = ok && same_bits(&y[i], &want, 4) && same_bits(&y32[i], &want, 4) && (float)yd[i] == want;
            }
        CHECK_MSG(ok, "case %zu: the block of [%zu, %zu] rows %zu+%zu cols %zu+%zu", k, R, C, cs[k].r0, rows,
                  cs[k].c0, len);
        /* in place */
        lunar_cpu_dropout_rows(blk, blk, rows, len, 0.3f, seed, stream, off, C);
        CHECK(same_bits(blk, y, rows * len * 4));
        free(full); free(yfull); free(blk); free(y); free(y32); free(blkd); free(yd);
    }
    /* the op layer: the rows must fit the tensor */
    const int64_t s6[1] = {6};
    lunar_tensor *x = lunar_tensor_zeros(LUNAR_F32, 1, s6, LUNAR_CPU), *o = lunar_tensor_zeros(LUNAR_F32, 1, s6, LUNAR_CPU);
    CHECK(lunar_op_dropout_rows(o, x, 0.5f, 1, 2, 0, 3, 8) == LUNAR_OK);
    CHECK(lunar_op_dropout_rows(o, x, 0.5f, 1, 2, 0, 4, 8) == LUNAR_ERR_ARG);
    CHECK_MSG(strstr(lunar_last_error(), "dropout: rows of 4 elements 8 apart do not fit inp of 6 elements"), "%s",
              lunar_last_error());
    CHECK(lunar_op_dropout_rows(o, x, 0.5f, 1, 2, 0, 3, 2) == LUNAR_ERR_ARG);
    lunar_tensor_free(x); lunar_tensor_free(o);
}

int main(void) {
    RUN(test_ref_dropout_backward);
    RUN(test_ref_dropout_p0_copies);
    RUN(test_ref_dropout_half);
    RUN(test_ref_dropout_offset_shifts);
    RUN(test_ref_f32_dropout);
    RUN(test_cpu_dropout);
    RUN(test_dropout_rows_is_the_block);
    return TEST_SUMMARY();
}
