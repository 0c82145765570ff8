/*
 * tests/c/test_reduce.c: whole-tensor reductions (kernels.h reduce; ops.h
 * lunar_op_sum/mean/min/max/norm): the reference kernels
 * (core/ops/ref/reduce.c) and the CPU kernel (core/ops/cpu/reduce.c) against
 * hand arithmetic and a float64 sum written here, NaN and infinity anywhere
 * in the array (PyTorch: a NaN makes sum, amin, amax and norm NaN), the same
 * bits for 1 and 2 threads; then the op layer: dtypes, strides, empty
 * tensors, errors. The CUDA kernel: tests/c/test_cuda.c (test_arith_reduce).
 *   make test-c   or   build/tests/test_reduce
 */
#define TEST_RNG_SEED 0x5eedbeefu
#include "test.h"

#include "lunar/ops.h"

typedef double (*reduce_fn)(const void *, int, size_t, int);

static const struct { const char *name; reduce_fn fn; } KERNELS[] = {
    {"ref_f64", lunar_ref_reduce_f64}, {"ref_f32", lunar_ref_reduce_f32}, {"cpu", lunar_cpu_reduce}};
#define NKERNELS (sizeof KERNELS / sizeof *KERNELS)

static void test_hand_values(void) {
    /* {3, -4, 1, 2}: sum 2, sum of squares 9 + 16 + 1 + 4 = 30, min -4, max 3 (exact in bf16) */
    const float x[4] = {3, -4, 1, 2};
    uint16_t x16[4];
    double x64[4];
    for (int i = 0; i < 4; i++) { x16[i] = lunar_f32_to_bf16(x[i]); x64[i] = x[i]; }
    const void *xs[3] = {x, x16, x64};
    const double want[4] = {2, 30, -4, 3};
    for (size_t k = 0; k < NKERNELS; k++)
        for (int t = 0; t < 3; t++)
            for (int op = 0; op < 4; op++) {
                double got = KERNELS[k].fn(xs[t], t, 4, op);
                CHECK_MSG(got == want[op], "%s type %d op %d: %g, want %g", KERNELS[k].name, t, op, got, want[op]);
            }
    /* no elements: sum 0, sum of squares 0 */
    for (size_t k = 0; k < NKERNELS; k++) CHECK(KERNELS[k].fn(x, 0, 0, LUNAR_REDUCE_SUM) == 0.0);
}

/* A NaN at the first, a middle and the last position of arrays that span one
 * block, several chunks (100003 elements: the CPU kernel's chunks and tail):
 * every op gives NaN. Infinities: hand values. */
static void test_nan_and_inf(void) {
    const size_t sizes[] = {1, 17, 100003};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *x = rand_f(n, -1, 1);
        uint16_t *x16 = malloc(n * 2);
        double *x64 = malloc(n * 8);
        size_t where[3] = {0, n / 2, n - 1};
        for (int w = 0; w < 3; w++) {
            float keep = x[where[w]];
            x[where[w]] = NAN;
            for (size_t i = 0; i < n; i++) { x16[i] = lunar_f32_to_bf16(x[i]); x64[i] = x[i]; }
            const void *xs[3] = {x, x16, x64};
            for (size_t k = 0; k < NKERNELS; k++)
                for (int t = 0; t < 3; t++)
                    for (int op = 0; op < 4; op++) {
                        double got = KERNELS[k].fn(xs[t], t, n, op);
                        CHECK_MSG(isnan(got), "%s type %d op %d, n %zu, NaN at %zu: %g", KERNELS[k].name, t, op, n,
                                  where[w], got);
                    }
            x[where[w]] = keep;
        }
        free(x); free(x16); free(x64);
    }
    /* {inf, 1}: sum inf, sumsq inf, min 1, max inf; {inf, -inf, 0}: sum NaN, min -inf, max inf */
    const float a[2] = {INFINITY, 1}, b[3] = {INFINITY, -INFINITY, 0};
    for (size_t k = 0; k < NKERNELS; k++) {
        reduce_fn f = KERNELS[k].fn;
        CHECK(f(a, 0, 2, LUNAR_REDUCE_SUM) == INFINITY && f(a, 0, 2, LUNAR_REDUCE_SUMSQ) == INFINITY);
        CHECK(f(a, 0, 2, LUNAR_REDUCE_MIN) == 1 && f(a, 0, 2, LUNAR_REDUCE_MAX) == INFINITY);
        CHECK(isnan(f(b, 0, 3, LUNAR_REDUCE_SUM)) && f(b, 0, 3, LUNAR_REDUCE_SUMSQ) == INFINITY);
        CHECK(f(b, 0, 3, LUNAR_REDUCE_MIN) == -INFINITY && f(b, 0, 3, LUNAR_REDUCE_MAX) == INFINITY);
    }
}

/* Random data against a float64 sum written here: |got - want| <= 1e-12
 * sum |x_i| (the CPU kernel sums in another order); min and max exact; the
 * sum of squares of f32 data is lunar_cpu_sum_squares bit for bit; the same
 * bits for 1 and 2 threads. */
static void test_random_against_double(void) {
    const size_t sizes[] = {1, 15, 16, 2047, 2049, 16385, 100003, 3000017};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *x = rand_f(n, -2, 3);
        uint16_t *x16 = malloc(n * 2);
        double *x64 = malloc(n * 8);
        for (size_t i = 0; i < n; i++) { x16[i] = lunar_f32_to_bf16(x[i]); x64[i] = x[i] * (1 + 1e-9 * urand()); }
        const void *xs[3] = {x, x16, x64};
        for (int t = 0; t < 3; t++) {
            double sum = 0, sumsq = 0, abs_sum = 0, mn = INFINITY, mx = -INFINITY;
            for (size_t i = 0; i < n; i++) {
                double v = t == 0 ? x[i] : t == 1 ? lunar_bf16_to_f32(x16[i]) : x64[i];
                sum += v; sumsq += v * v; abs_sum += fabs(v);
                mn = v < mn ? v : mn; mx = v > mx ? v : mx;
            }
            for (size_t k = 0; k < NKERNELS; k++) {
                reduce_fn f = KERNELS[k].fn;
                CHECK_CLOSE(f(xs[t], t, n, LUNAR_REDUCE_SUM), sum, 0, 1e-12 * abs_sum);
                CHECK_CLOSE(f(xs[t], t, n, LUNAR_REDUCE_SUMSQ), sumsq, 1e-12, 0);
                CHECK(f(xs[t], t, n, LUNAR_REDUCE_MIN) == mn && f(xs[t], t, n, LUNAR_REDUCE_MAX) == mx);
            }
            int threads = max_threads();
            for (int op = 0; op < 4; op++) {
                set_threads(1);
                double one = lunar_cpu_reduce(xs[t], t, n, op);
                set_threads(2);
                double two = lunar_cpu_reduce(xs[t], t, n, op);
                set_threads(threads);
                CHECK_MSG(memcmp(&one, &two, sizeof one) == 0, "n %zu type %d op %d: %.17g (1 thread) vs %.17g", n,
                          t, op, one, two);
            }
        }
        CHECK(lunar_cpu_reduce(x, LUNAR_ELEM_F32, n, LUNAR_REDUCE_SUMSQ) == lunar_cpu_sum_squares(x, n));
        free(x); free(x16); free(x64);
    }
}

static void test_op_layer(void) {
    /* [[3, -4], [1, 2]] in every dtype; column 2 of the transpose is {1, 2}... */
    const int64_t s22[2] = {2, 2};
    const double v[4] = {3, -4, 1, 2};
    const lunar_dtype dts[] = {LUNAR_F32, LUNAR_BF16, LUNAR_F16, LUNAR_F64, LUNAR_I32, LUNAR_I64};
    for (size_t d = 0; d < sizeof dts / sizeof *dts; d++) {
        lunar_tensor *t = lunar_tensor_new(dts[d], 2, s22, LUNAR_CPU);
        for (int i = 0; i < 4; i++) lunar_tensor_set(t, i, v[i]);
        double s, m, mn, mx, nrm;
        CHECK(!lunar_op_sum(&s, t) && !lunar_op_mean(&m, t) && !lunar_op_min(&mn, t) && !lunar_op_max(&mx, t) &&
              !lunar_op_norm(&nrm, t));
        CHECK_MSG(s == 2 && m == 0.5 && mn == -4 && mx == 3 && nrm == sqrt(30.0), "%s: %g %g %g %g %g",
                  lunar_dtype_name(dts[d]), s, m, mn, mx, nrm);
        /* the transpose's row 2 is column 2 of t: {-4, 2}, a strided view */
        lunar_tensor *tt = lunar_tensor_transpose(t, 0, 1), *row = lunar_tensor_select(tt, 0, 1);
        CHECK(!lunar_op_sum(&s, row) && s == -2 && !lunar_op_min(&mn, row) && mn == -4);
        lunar_tensor_free(row); lunar_tensor_free(tt); lunar_tensor_free(t);
    }
    /* i64 values beyond 2^24 stay exact (through f64): 2^40 + 1 */
    lunar_tensor *big = lunar_tensor_new(LUNAR_I64, 1, (int64_t[]){2}, LUNAR_CPU);
    lunar_tensor_set(big, 0, 1099511627777.0); lunar_tensor_set(big, 1, 1);
    double s;
    CHECK(!lunar_op_sum(&s, big) && s == 1099511627778.0);
    lunar_tensor_free(big);
    /* empty: sum 0, mean NaN (PyTorch), min and max errors */
    lunar_tensor *e = lunar_tensor_new(LUNAR_F32, 1, (int64_t[]){0}, LUNAR_CPU);
    double m;
    CHECK(!lunar_op_sum(&s, e) && s == 0 && !lunar_op_mean(&m, e) && isnan(m));
    CHECK(lunar_op_min(&m, e) == LUNAR_ERR_SHAPE && strstr(lunar_last_error(), "min: x is empty"));
    CHECK(lunar_op_max(&m, e) == LUNAR_ERR_SHAPE && strstr(lunar_last_error(), "max: x is empty"));
    lunar_tensor_release(e);
    CHECK(lunar_op_norm(&m, e) == LUNAR_ERR_ARG && strstr(lunar_last_error(), "norm: x was released"));
    lunar_tensor_free(e);
    /* NaN through the op layer in bf16 */
    lunar_tensor *n16 = lunar_tensor_new(LUNAR_BF16, 1, (int64_t[]){3}, LUNAR_CPU);
    lunar_tensor_set(n16, 0, 1); lunar_tensor_set(n16, 1, NAN); lunar_tensor_set(n16, 2, -1);
    CHECK(!lunar_op_max(&m, n16) && isnan(m) && !lunar_op_min(&m, n16) && isnan(m));
    CHECK(!lunar_op_norm(&m, n16) && isnan(m) && !lunar_op_mean(&m, n16) && isnan(m));
    lunar_tensor_free(n16);
}

int main(void) {
    RUN(test_hand_values);
    RUN(test_nan_and_inf);
    RUN(test_random_against_double);
    RUN(test_op_layer);
    return TEST_SUMMARY();
}
