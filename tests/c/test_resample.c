/*
 * tests/c/test_resample.c: the bicubic resize (kernels.h resize_bicubic, PyTorch's
 * F.interpolate(mode='bicubic', align_corners=False)), used to resample a ViT's
 * position embedding to another patch grid:
 *   - the reference, core/ops/ref/resample.c, against values computed by hand from
 *     Keys' cubic convolution (stated below), along W and along H, with and
 *     without antialias, upsampling and downsampling; the same size is the identity;
 *   - the CPU kernel, core/ops/cpu/resample.c (separable), and the f32 reference
 *     against the f64 reference on random 2-D grids (up, down, mixed), batch and
 *     channels > 1; a constant image stays constant;
 *   - the op, lunar_op_resize_bicubic (ops.h): [H, W, C] and [N, H, W, C] give the
 *     kernel's values, and its errors name the problem.
 * timm's own resample_abs_pos_embed is compared in tests/golden/timm_check.py.
 *
 *   make build/tests/test_resample && build/tests/test_resample
 */
#include "kernel_test.h"
#include "lunar/ops.h"
#include "lunar/status.h"

/* Without antialias (A = -0.75): cubic1(x) = (1.25x - 2.25)x^2 + 1, cubic2(x) =
 * ((-0.75x + 3.75)x - 6)x + 3, so cubic1(0.25) = 0.87890625, cubic1(0.75) = 0.26171875,
 * cubic2(1.25) = -0.10546875, cubic2(1.75) = -0.03515625 (exact in binary).
 * 2 -> 4 (scale 0.5): source points 0.5 (o + 0.5) - 0.5 = -0.25, 0.25, 0.75, 1.25.
 * o = 0: floor -1, t = 0.75, taps -2..1 clamped to 0, 0, 0, 1 with weights
 * cubic2(1.75), cubic1(0.75), cubic1(0.25), cubic2(1.25): on [1, 3]
 * out0 = 1 * 1.10546875 + 3 * (-0.10546875) = 0.7890625; o = 1: t = 0.25, taps -1..2 ->
 * 0, 0, 1, 1, weights -0.10546875, 0.87890625, 0.26171875, -0.03515625:
 * out1 = 0.7734375 + 3 * 0.2265625 = 1.453125; by symmetry out2 = 2.546875, out3 = 3.2109375. */
static const double NOAA_UP[4] = {0.7890625, 1.453125, 2.546875, 3.2109375};
/* With antialias (A = -0.5, PIL's): cubic1(x) = (1.5x - 2.5)x^2 + 1, cubic2(x) =
 * ((-0.5x + 2.5)x - 4)x + 2: cubic1(0.25) = 111/128, cubic1(0.75) = 29/128,
 * cubic2(1.25) = -9/128. 2 -> 4: center 0.5 (o + 0.5), support 2, taps [trunc(center - 1.5),
 * trunc(center + 2.5)) within [0, 2), weights f(i - center + 0.5) / their sum:
 * o = 0: f(0.25), f(1.25) = 111, -9 (/128) -> out0 = (111 - 27) / 102 = 14/17;
 * o = 1: f(-0.25), f(0.75) = 111, 29 -> out1 = (111 + 87) / 140 = 99/70;
 * o = 2: f(-0.75), f(0.25) = 29, 111 -> out2 = (29 + 333) / 140 = 181/70;
 * o = 3: f(-1.25), f(-0.25) = -9, 111 -> out3 = (-9 + 333) / 102 = 54/17. */
static const double AA_UP[4] = {14.0 / 17, 99.0 / 70, 181.0 / 70, 54.0 / 17};
/* 4 -> 2 with antialias: scale 2, support 4, x = (i - center + 0.5) / 2, all 4 taps:
 * o = 0 (center 1): x = -0.25, 0.25, 0.75, 1.25 -> 111, 111, 29, -9 (/128, sum 242):
 * on [1, 2, 3, 4] out0 = (111 + 222 + 87 - 36) / 242 = 192/121;
 * o = 1 (center 3): -9, 29, 111, 111 -> (-9 + 58 + 333 + 444) / 242 = 413/121. */
static const double AA_DOWN[2] = {192.0 / 121, 413.0 / 121};

/* 1-D case along W (h = 1) and along H (w = 1), two channels (the second 10x the first). */
static void check_1d(const double *in, int64_t n_in, const double *want, int64_t n_out, int aa) {
    double inp[2 * 8], out[2 * 8];
    for (int64_t i = 0; i < n_in; i++) { inp[2 * i] = in[i]; inp[2 * i + 1] = 10 * in[i]; }
    for (int axis = 0; axis < 2; axis++) {
        set(out, (size_t)(2 * n_out), GARBAGE);
        if (axis == 0) lunar_ref_resize_bicubic_f64(out, inp, 1, 1, n_in, 2, 1, n_out, aa);
        else lunar_ref_resize_bicubic_f64(out, inp, 1, n_in, 1, 2, n_out, 1, aa);
        for (int64_t o = 0; o < n_out; o++) {
            CHECK_CLOSE(out[2 * o], want[o], 1e-14, 0);
            CHECK_CLOSE(out[2 * o + 1], 10 * want[o], 1e-14, 0);
        }
    }
}

static void test_ref_resize_hand(void) {
    const double a[2] = {1, 3}, b[4] = {1, 2, 3, 4};
    check_1d(a, 2, NOAA_UP, 4, 0);
    check_1d(a, 2, AA_UP, 4, 1);
    check_1d(b, 4, AA_DOWN, 2, 1);
}

static void test_ref_resize_identity(void) {
    enum { H = 5, W = 4, C = 3 };
    double in[H * W * C], out[H * W * C];
    fill(in, H * W * C, -1, 1);
    for (int aa = 0; aa < 2; aa++) {
        lunar_ref_resize_bicubic_f64(out, in, 1, H, W, C, H, W, aa);
        for (int i = 0; i < H * W * C; i++) CHECK(out[i] == in[i]);
    }
}

static double *alloc_d(size_t n) { double *p = malloc(n * sizeof *p); if (!p) abort(); return p; }
static float *alloc_f(size_t n) { float *p = malloc(n * sizeof *p); if (!p) abort(); return p; }

/* CPU and f32 reference vs f64 reference; a constant image stays constant. */
static void test_cpu_resize(void) {
    static const int64_t cases[][4] = {{7, 7, 10, 10}, {10, 10, 7, 7}, {5, 3, 2, 9}, {14, 14, 24, 24}, {3, 8, 3, 8}};
    enum { N = 2, C = 5 };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int aa = 0; aa < 2; aa++) {
            int64_t h = cases[k][0], w = cases[k][1], oh = cases[k][2], ow = cases[k][3];
            size_t ni = (size_t)(N * h * w * C), no = (size_t)(N * oh * ow * C);
            double *in = alloc_d(ni), *ref = alloc_d(no);
            float *inf = alloc_f(ni), *out = alloc_f(no), *out32 = alloc_f(no);
            fill(in, ni, -2, 2);
            to_f32(inf, in, ni);
            for (size_t i = 0; i < ni; i++) in[i] = inf[i];
            lunar_ref_resize_bicubic_f64(ref, in, N, h, w, C, oh, ow, aa);
            lunar_cpu_resize_bicubic(out, inf, N, h, w, C, oh, ow, aa);
            lunar_ref_resize_bicubic_f32(out32, inf, N, h, w, C, oh, ow, aa);
            double worst = 0;
            for (size_t i = 0; i < no; i++) worst = fmax(worst, fabs(out[i] - ref[i]));
            CHECK_MSG(worst < 1e-5, "%lldx%lld -> %lldx%lld aa %d: CPU vs f64 reference %.3g", (long long)h,
                      (long long)w, (long long)oh, (long long)ow, aa, worst);
            CHECK_F32(out32, ref, no);
            for (size_t i = 0; i < ni; i++) inf[i] = 0.625f;
            lunar_cpu_resize_bicubic(out, inf, N, h, w, C, oh, ow, aa);
            worst = 0;
            for (size_t i = 0; i < no; i++) worst = fmax(worst, fabs(out[i] - 0.625));
            CHECK_MSG(worst < 1e-6, "constant image: %.3g", worst);
            free(in); free(ref); free(inf); free(out); free(out32);
        }
}

static void test_op_resize(void) {
    /* [1, 2, 1] (H 1, W 2, C 1) holding {1, 3} -> [1, 4, 1]: NOAA_UP, AA_UP */
    lunar_tensor *x = lunar_tensor_new(LUNAR_F32, 3, (int64_t[]){1, 2, 1}, LUNAR_CPU);
    lunar_tensor *y = lunar_tensor_new(LUNAR_F32, 3, (int64_t[]){1, 4, 1}, LUNAR_CPU);
    float *xd = lunar_tensor_data(x), *yd = lunar_tensor_data(y);
    xd[0] = 1; xd[1] = 3;
    CHECK(lunar_op_resize_bicubic(y, x, 0) == LUNAR_OK);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(yd[i], NOAA_UP[i], 1e-6, 0);
    CHECK(lunar_op_resize_bicubic(y, x, 1) == LUNAR_OK);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(yd[i], AA_UP[i], 1e-6, 0);
    /* errors */
    lunar_tensor *x2 = lunar_tensor_new(LUNAR_F32, 2, (int64_t[]){2, 2}, LUNAR_CPU);
    CHECK(lunar_op_resize_bicubic(y, x2, 1) == LUNAR_ERR_SHAPE);
    CHECK(strstr(lunar_last_error(), "must both be [H, W, C] or [N, H, W, C]"));
    lunar_tensor *yc = lunar_tensor_new(LUNAR_F32, 3, (int64_t[]){1, 4, 2}, LUNAR_CPU);
    CHECK(lunar_op_resize_bicubic(yc, x, 1) == LUNAR_ERR_SHAPE);
    CHECK(strstr(lunar_last_error(), "differ in N or C"));
    lunar_tensor *x16 = lunar_tensor_new(LUNAR_BF16, 3, (int64_t[]){1, 2, 1}, LUNAR_CPU);
    CHECK(lunar_op_resize_bicubic(y, x16, 1) == LUNAR_ERR_DTYPE);
    CHECK(strstr(lunar_last_error(), "resize_bicubic: inp has dtype bf16, expected f32"));
    CHECK(lunar_op_resize_bicubic(x, x, 1) == LUNAR_ERR_ARG);
    CHECK(strstr(lunar_last_error(), "out must not be inp"));
    lunar_tensor_free(x); lunar_tensor_free(y); lunar_tensor_free(x2); lunar_tensor_free(yc); lunar_tensor_free(x16);
}

int main(void) {
    RUN(test_ref_resize_hand);
    RUN(test_ref_resize_identity);
    RUN(test_cpu_resize);
    RUN(test_op_resize);
    return TEST_SUMMARY();
}
