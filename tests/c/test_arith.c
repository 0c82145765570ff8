/*
 * tests/c/test_arith.c: tensor arithmetic (kernels.h arith; ops.h
 * lunar_op_arith): the reference kernels (lunar_ref_arith_f64/_f32,
 * core/ops/ref/arith.c) and the CPU kernel (core/ops/cpu/arith.c) against hand
 * arithmetic and against the test's own float64 computation (x op y in double
 * from the exact operands, rounded once to float), with IEEE special values;
 * then the op layer: scalar broadcasting, strided and integer operands, the
 * errors. The CUDA kernel is checked against the same rule in
 * tests/c/test_cuda.c (test_arith_reduce).
 *   make test-c   or   build/tests/test_arith
 */
#define TEST_RNG_SEED 0x5eed0a11u
#include "test.h"

#include "lunar/ops.h"

typedef void (*arith_fn)(float *, const void *, int, double, const void *, int, double, size_t, int);

/* lunar_ref_arith_f64 with a float output, to run every kernel one way */
static void ref64_as_f32(float *out, const void *a, int at, double sa, const void *b, int bt, double sb, size_t n,
                         int op) {
    double *o = malloc((n ? n : 1) * sizeof *o);
    lunar_ref_arith_f64(o, a, at, sa, b, bt, sb, n, op);
    for (size_t i = 0; i < n; i++) out[i] = (float)o[i];
    free(o);
}

static const struct { const char *name; arith_fn fn; } KERNELS[] = {
    {"ref_f64", ref64_as_f32}, {"ref_f32", lunar_ref_arith_f32}, {"cpu", lunar_cpu_arith}};
#define NKERNELS (sizeof KERNELS / sizeof *KERNELS)

/* x op y in double: the expected value before the final rounding */
static double apply(int op, double x, double y) {
    return op == LUNAR_ARITH_ADD ? x + y : op == LUNAR_ARITH_SUB ? x - y : op == LUNAR_ARITH_MUL ? x * y
         : op == LUNAR_ARITH_RSQRT_ADD ? 1.0 / sqrt(x + y) : x / y;
}

/* the same bits, NaN matching NaN */
static int same_f(float a, float b) { return (isnan(a) && isnan(b)) || memcmp(&a, &b, sizeof a) == 0; }

static void test_hand_values(void) {
    /* a = {1, 2, 3, -4}, b = {10, 20, 30, 40}, all exact in bf16 and f32 */
    const float a[4] = {1, 2, 3, -4}, b[4] = {10, 20, 30, 40};
    const double want[4][4] = {{11, 22, 33, 36}, {-9, -18, -27, -44}, {10, 40, 90, -160}, {0.1, 0.1, 0.1, -0.1}};
    uint16_t a16[4], b16[4];
    double a64[4], b64[4];
    for (int i = 0; i < 4; i++) {
        a16[i] = lunar_f32_to_bf16(a[i]); b16[i] = lunar_f32_to_bf16(b[i]);
        a64[i] = a[i]; b64[i] = b[i];
    }
    const void *as[3] = {a, a16, a64}, *bs[3] = {b, b16, b64};
    for (size_t k = 0; k < NKERNELS; k++)
        for (int op = 0; op < 4; op++)
            for (int ta = 0; ta < 3; ta++)
                for (int tb = 0; tb < 3; tb++) {
                    float out[4];
                    KERNELS[k].fn(out, as[ta], ta, 0, bs[tb], tb, 0, 4, op);
                    for (int i = 0; i < 4; i++)
                        CHECK_MSG(out[i] == (float)want[op][i], "%s op %d types %d/%d [%d]: %g, want %g",
                                  KERNELS[k].name, op, ta, tb, i, out[i], (float)want[op][i]);
                }
    /* scalars: a * 0.5, 12 / a, 10 - a */
    for (size_t k = 0; k < NKERNELS; k++) {
        float o1[4], o2[4], o3[4];
        KERNELS[k].fn(o1, a, LUNAR_ELEM_F32, 0, NULL, 0, 0.5, 4, LUNAR_ARITH_MUL);
        KERNELS[k].fn(o2, NULL, 0, 12, a, LUNAR_ELEM_F32, 0, 4, LUNAR_ARITH_DIV);
        KERNELS[k].fn(o3, NULL, 0, 10, a, LUNAR_ELEM_F32, 0, 4, LUNAR_ARITH_SUB);
        const float w1[4] = {0.5f, 1, 1.5f, -2}, w2[4] = {12, 6, 4, -3}, w3[4] = {9, 8, 7, 14};
        for (int i = 0; i < 4; i++) CHECK(o1[i] == w1[i] && o2[i] == w2[i] && o3[i] == w3[i]);
    }
}

static void test_ieee_special_values(void) {
    const float a[6] = {1, -1, 0, NAN, INFINITY, INFINITY}, b[6] = {0, 0, 0, 1, INFINITY, -INFINITY};
    /* hand IEEE: 1/0 = inf, -1/0 = -inf, 0/0 = NaN, NaN/1 = NaN, inf/inf = NaN, inf/-inf = NaN;
     * inf - inf = NaN, inf + -inf = NaN, inf * -inf = -inf */
    const float div[6] = {INFINITY, -INFINITY, NAN, NAN, NAN, NAN};
    const float sub[6] = {1, -1, 0, NAN, NAN, INFINITY};
    const float add[6] = {1, -1, 0, NAN, INFINITY, NAN};
    const float mul[6] = {0, -0.0f, 0, NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < NKERNELS; k++) {
        float o[6];
        KERNELS[k].fn(o, a, 0, 0, b, 0, 0, 6, LUNAR_ARITH_DIV);
        for (int i = 0; i < 6; i++) CHECK_MSG(same_f(o[i], div[i]), "%s div [%d]: %g", KERNELS[k].name, i, o[i]);
        KERNELS[k].fn(o, a, 0, 0, b, 0, 0, 6, LUNAR_ARITH_SUB);
        for (int i = 0; i < 6; i++) CHECK_MSG(same_f(o[i], sub[i]), "%s sub [%d]: %g", KERNELS[k].name, i, o[i]);
        KERNELS[k].fn(o, a, 0, 0, b, 0, 0, 6, LUNAR_ARITH_ADD);
        for (int i = 0; i < 6; i++) CHECK_MSG(same_f(o[i], add[i]), "%s add [%d]: %g", KERNELS[k].name, i, o[i]);
        KERNELS[k].fn(o, a, 0, 0, b, 0, 0, 6, LUNAR_ARITH_MUL);
        for (int i = 0; i < 6; i++) CHECK_MSG(same_f(o[i], mul[i]), "%s mul [%d]: %g", KERNELS[k].name, i, o[i]);
        /* overflow of the f32 result: 3e38 * 10 = inf after the rounding */
        float big = 3e38f;
        KERNELS[k].fn(o, &big, 0, 0, NULL, 0, 10, 1, LUNAR_ARITH_MUL);
        CHECK(isinf(o[0]) && o[0] > 0);
    }
}

/* random operands of every type pair and sizes around the block edges: each
 * output is (float)(x op y) with x, y the exact operands in double, bit for bit */
static void test_random_against_double(void) {
    const size_t sizes[] = {1, 15, 2047, 2048, 2049, 100003};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        float *af = rand_f(n, -3, 3), *bf = rand_f(n, -3, 3), *out = malloc(n * sizeof *out);
        uint16_t *a16 = malloc(n * 2), *b16 = malloc(n * 2);
        double *a64 = malloc(n * 8), *b64 = malloc(n * 8);
        for (size_t i = 0; i < n; i++) {
            a16[i] = lunar_f32_to_bf16(af[i]); b16[i] = lunar_f32_to_bf16(bf[i]);
            a64[i] = (double)af[i] + 1e-12 * urand(); b64[i] = (double)bf[i] * (1 + 1e-10 * urand());
        }
        const void *as[3] = {af, a16, a64}, *bs[3] = {bf, b16, b64};
        int ok = 1;
        for (size_t k = 0; k < NKERNELS && ok; k++)
            for (int op = 0; op <= LUNAR_ARITH_RSQRT_ADD && ok; op++)
                for (int ta = 0; ta < 3 && ok; ta++)
                    for (int tb = 0; tb < 4 && ok; tb++) {   /* tb == 3: the scalar 0.1 */
                        KERNELS[k].fn(out, as[ta], ta, 0, tb < 3 ? bs[tb] : NULL, tb % 3, 0.1, n, op);
                        for (size_t i = 0; i < n && ok; i++) {
                            double x = ta == 0 ? af[i] : ta == 1 ? lunar_bf16_to_f32(a16[i]) : a64[i];
                            double y = tb == 3 ? 0.1 : tb == 0 ? bf[i] : tb == 1 ? lunar_bf16_to_f32(b16[i]) : b64[i];
                            float want = (float)apply(op, x, y);
                            if (!same_f(out[i], want)) {
                                fprintf(stderr, "    %s n=%zu op %d types %d/%d [%zu]: %.9g, want %.9g\n",
                                        KERNELS[k].name, n, op, ta, tb, i, out[i], want);
                                ok = 0;
                            }
                        }
                    }
        free(af); free(bf); free(out); free(a16); free(b16); free(a64); free(b64);
        CHECK(ok);
    }
}

/* RSQRT_ADD (1/sqrt(a + b), LayerNorm's rstd = 1/sqrt(var + eps)) against hand
 * values: 1/sqrt(3 + 1) = 0.5, 1/sqrt(0.25 + 0) = 2, 1/sqrt(15 + 1) = 0.25,
 * 1/sqrt(0) = +inf, 1/sqrt(-1) = NaN, 1/sqrt(inf) = 0; with eps = 1e-6 on
 * var = 1: 1/sqrt(1.000001) = 1 - 5e-7 + 3.75e-13 = 1 - 8.39 * 2^-24, which
 * rounds to the f32 1 - 8 * 2^-24, as the literal 0.9999995f does */
static lunar_tensor *tensor_of(const double *v, lunar_dtype dt, int ndim, const int64_t *shape);

static void test_rsqrt_add(void) {
    const float a[6] = {3, 0.25f, 15, 0, -2, INFINITY}, b[6] = {1, 0, 1, 0, 1, 1};
    const float want[6] = {0.5f, 2, 0.25f, INFINITY, NAN, 0};
    for (size_t k = 0; k < NKERNELS; k++) {
        float o[6];
        KERNELS[k].fn(o, a, LUNAR_ELEM_F32, 0, b, LUNAR_ELEM_F32, 0, 6, LUNAR_ARITH_RSQRT_ADD);
        for (int i = 0; i < 6; i++)
            CHECK_MSG(same_f(o[i], want[i]), "%s rsqrt [%d]: %g, want %g", KERNELS[k].name, i, o[i], want[i]);
        float one = 1, r;
        KERNELS[k].fn(&r, &one, LUNAR_ELEM_F32, 0, NULL, 0, 1e-6, 1, LUNAR_ARITH_RSQRT_ADD);
        CHECK_MSG(r == 0.9999995f, "%s rsqrt(1 + 1e-6): %.9g", KERNELS[k].name, r);   /* 1 - 8 * 2^-24 */
    }
    /* the op layer names it "rsqrt" and refuses shapes as the other ops */
    const int64_t s3[1] = {3}, s2[1] = {2};
    const double v[3] = {4, 16, 0.0625};
    lunar_tensor *x = tensor_of(v, LUNAR_F32, 1, s3), *out = lunar_tensor_new(LUNAR_F32, 1, s3, LUNAR_CPU);
    CHECK(lunar_op_arith(out, x, 0, NULL, 0, LUNAR_ARITH_RSQRT_ADD) == LUNAR_OK);
    const float w[3] = {0.5f, 0.25f, 4};
    for (int i = 0; i < 3; i++) CHECK(((float *)lunar_tensor_data(out))[i] == w[i]);
    lunar_tensor *o2 = lunar_tensor_new(LUNAR_F32, 1, s2, LUNAR_CPU);
    CHECK(lunar_op_arith(o2, x, 0, NULL, 0, LUNAR_ARITH_RSQRT_ADD) == LUNAR_ERR_SHAPE);
    CHECK_MSG(strstr(lunar_last_error(), "rsqrt: out [2] has 2 elements, expected 3"), "%s", lunar_last_error());
    lunar_tensor_free(x); lunar_tensor_free(out); lunar_tensor_free(o2);
}

static void test_in_place(void) {
    float x[3] = {1, 2, 3};
    lunar_cpu_arith(x, x, LUNAR_ELEM_F32, 0, NULL, 0, 2, 3, LUNAR_ARITH_MUL);
    CHECK(x[0] == 2 && x[1] == 4 && x[2] == 6);
}

static lunar_tensor *tensor_of(const double *v, lunar_dtype dt, int ndim, const int64_t *shape) {
    lunar_tensor *t = lunar_tensor_new(dt, ndim, shape, LUNAR_CPU);
    for (int64_t i = 0; i < lunar_tensor_numel(t); i++) lunar_tensor_set(t, i, v[i]);
    return t;
}

static void test_op_layer(void) {
    const int64_t s23[2] = {2, 3}, s32[2] = {3, 2};
    const double av[6] = {1, 2, 3, 4, 5, 6}, bv[6] = {10, 20, 30, 40, 50, 60};
    lunar_tensor *a = tensor_of(av, LUNAR_F32, 2, s23), *b = tensor_of(bv, LUNAR_F32, 2, s32);
    lunar_tensor *bt = lunar_tensor_transpose(b, 0, 1);   /* [2, 3], strided: {{10, 30, 50}, {20, 40, 60}} */
    lunar_tensor *out = lunar_tensor_new(LUNAR_F32, 2, s23, LUNAR_CPU);
    CHECK(lunar_op_arith(out, a, 0, bt, 0, LUNAR_ARITH_ADD) == LUNAR_OK);
    const float w[6] = {11, 32, 53, 24, 45, 66};
    for (int i = 0; i < 6; i++) CHECK(((float *)lunar_tensor_data(out))[i] == w[i]);
    /* an i32 operand (through f64) and a scalar on the left: 7 - a */
    lunar_tensor *ai = tensor_of(av, LUNAR_I32, 2, s23);
    CHECK(lunar_op_arith(out, NULL, 7, ai, 0, LUNAR_ARITH_SUB) == LUNAR_OK);
    for (int i = 0; i < 6; i++) CHECK(((float *)lunar_tensor_data(out))[i] == (float)(7 - av[i]));
    /* errors: shapes, not element counts; out's dtype and size; two scalars; released */
    CHECK(lunar_op_arith(out, a, 0, b, 0, LUNAR_ARITH_MUL) == LUNAR_ERR_SHAPE);
    CHECK(strstr(lunar_last_error(), "arithmetic: shapes [2, 3] and [3, 2] differ"));
    lunar_tensor *o16 = lunar_tensor_new(LUNAR_BF16, 2, s23, LUNAR_CPU), *o5 = lunar_tensor_new(LUNAR_F32, 1, (int64_t[]){5}, LUNAR_CPU);
    CHECK(lunar_op_arith(o16, a, 0, NULL, 1, LUNAR_ARITH_ADD) == LUNAR_ERR_DTYPE);
    CHECK(strstr(lunar_last_error(), "add: out has dtype bf16, expected f32"));
    CHECK(lunar_op_arith(o5, a, 0, NULL, 1, LUNAR_ARITH_ADD) == LUNAR_ERR_SHAPE);
    CHECK(strstr(lunar_last_error(), "add: out [5] has 5 elements, expected 6"));
    CHECK(lunar_op_arith(out, NULL, 1, NULL, 2, LUNAR_ARITH_ADD) == LUNAR_ERR_ARG);
    CHECK(strstr(lunar_last_error(), "both scalars"));
    CHECK(lunar_op_arith(out, a, 0, NULL, 2, 7) == LUNAR_ERR_ARG);
    lunar_tensor_release(ai);
    CHECK(lunar_op_arith(out, ai, 0, NULL, 2, LUNAR_ARITH_DIV) == LUNAR_ERR_ARG);
    CHECK(strstr(lunar_last_error(), "div: a was released"));
    lunar_tensor_free(a); lunar_tensor_free(b); lunar_tensor_free(bt); lunar_tensor_free(out);
    lunar_tensor_free(ai); lunar_tensor_free(o16); lunar_tensor_free(o5);
}

int main(void) {
    RUN(test_hand_values);
    RUN(test_ieee_special_values);
    RUN(test_random_against_double);
    RUN(test_rsqrt_add);
    RUN(test_in_place);
    RUN(test_op_layer);
    return TEST_SUMMARY();
}
