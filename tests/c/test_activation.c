/*
 * tests/c/test_activation.c: the pointwise activation kernels (ReLU, SiLU, tanh GELU;
 * kernels.h activation_*), on every backend that runs here:
 *   - the reference, core/ops/ref/activation.c: backwards against central finite
 *     differences of the f64 forward (away from ReLU's kink), forwards against values
 *     computed by hand (Python's math module, double: stated below), f32 against f64;
 *   - the CPU kernels, core/ops/cpu/activation.c: against the f64 reference on random
 *     inputs of odd sizes, special values, in place bit for bit.
 * The CUDA kernels (core/ops/cuda/activation.cu) share the CPU's formulas.
 *
 *   make build/tests/test_activation && build/tests/test_activation
 */
#include "kernel_test.h"

static const int KINDS[3] = {LUNAR_ACT_RELU, LUNAR_ACT_SILU, LUNAR_ACT_GELU_TANH};

enum { ACT_N = 16 };
typedef struct { double inp[ACT_N], R[ACT_N]; int kind; } act_ctx;

static double act_loss(void *p) {
    act_ctx *c = p;
    double out[ACT_N];
    lunar_ref_activation_forward_f64(out, c->inp, ACT_N, c->kind);
    return dot(out, c->R, ACT_N);
}

static void test_ref_activation_backward(void) {
    for (int k = 0; k < 3; k++) {
        act_ctx c;
        c.kind = KINDS[k];
        fill(c.inp, ACT_N, -3, 3);
        for (int i = 0; i < ACT_N; i++)   /* keep ReLU's kink out of the FD stencil */
            if (fabs(c.inp[i]) < 1e-3) c.inp[i] = 0.5;
        fill(c.R, ACT_N, -1, 1);
        double dinp[ACT_N];
        set(dinp, ACT_N, GARBAGE);
        lunar_ref_activation_backward_f64(dinp, c.R, c.inp, ACT_N, c.kind);
        CHECK_FD(act_loss, &c, c.inp, ACT_N, dinp);
    }
}

/* Hand values (Python math, double): silu(1) = 1/(1+e^-1) = 0.7310585786300049,
 * silu(-2) = -0.2384058440442351; gelu_tanh(x) = 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))):
 * gelu_tanh(1) = 0.8411919906082768, gelu_tanh(-1) = -0.15880800939172324,
 * gelu_tanh(2.5) = 2.484915733910001. ReLU's gradient at 0 is 0 (PyTorch). */
static void test_ref_activation_values(void) {
    double x[3] = {-2, 0, 3}, y[3], g[3], ones[3] = {1, 1, 1};
    lunar_ref_activation_forward_f64(y, x, 3, LUNAR_ACT_RELU);
    CHECK(y[0] == 0 && y[1] == 0 && y[2] == 3);
    lunar_ref_activation_backward_f64(g, ones, x, 3, LUNAR_ACT_RELU);
    CHECK(g[0] == 0 && g[1] == 0 && g[2] == 1);
    double xs[2] = {1, -2}, ys[2];
    lunar_ref_activation_forward_f64(ys, xs, 2, LUNAR_ACT_SILU);
    CHECK_CLOSE(ys[0], 0.7310585786300049, 1e-15, 0);
    CHECK_CLOSE(ys[1], -0.2384058440442351, 1e-15, 0);
    double xg[3] = {1, -1, 2.5}, yg[3];
    lunar_ref_activation_forward_f64(yg, xg, 3, LUNAR_ACT_GELU_TANH);
    CHECK_CLOSE(yg[0], 0.8411919906082768, 1e-15, 0);
    CHECK_CLOSE(yg[1], -0.15880800939172324, 1e-14, 0);
    CHECK_CLOSE(yg[2], 2.484915733910001, 1e-15, 0);
}

static void test_ref_f32_activation(void) {
    enum { N = 64 };
    for (int k = 0; k < 3; k++) {
        double inp[N], dout[N], out[N], dinp[N];
        float inpf[N], doutf[N], outf[N], dinpf[N];
        fill(inp, N, -5, 5);
        fill(dout, N, -1, 1);
        to_f32(inpf, inp, N);
        to_f32(doutf, dout, N);
        /* the f64 oracle on the f32-rounded inputs */
        for (int i = 0; i < N; i++) { inp[i] = inpf[i]; dout[i] = doutf[i]; }
        lunar_ref_activation_forward_f64(out, inp, N, KINDS[k]);
        lunar_ref_activation_forward_f32(outf, inpf, N, KINDS[k]);
        CHECK_F32(outf, out, N);
        lunar_ref_activation_backward_f64(dinp, dout, inp, N, KINDS[k]);
        lunar_ref_activation_backward_f32(dinpf, doutf, inpf, N, KINDS[k]);
        CHECK_F32(dinpf, dinp, N);
    }
}

/* |got - want| <= 4e-6 |want| + 1e-7 max|want| (f32 expf/tanhf against the f64 oracle). */
static int close_act(const char *what, int kind, const float *got, const double *want, const float *x, size_t n) {
    double wmax = 0.0;
    for (size_t i = 0; i < n; i++) wmax = fmax(wmax, fabs(want[i]));
    for (size_t i = 0; i < n; i++) {
        double tol = 4e-6 * fabs(want[i]) + 1e-7 * wmax;
        if (!(fabs((double)got[i] - want[i]) <= tol)) {
            fprintf(stderr, "    %s (kind %d): element %zu of %zu (x = %.9g): got %.9g, want %.9g\n", what, kind, i, n,
                    (double)x[i], (double)got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

static void test_cpu_activation(void) {
    const size_t sizes[] = {1, 15, 16, 17, 1000, 70001};
    for (int k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            float *x = rand_f(n, -9, 9);
            if (n >= 16) {
                const float special[] = {0.0f, -0.0f, 1e-8f, -1e-8f, 1.0f, -1.0f, 5.0f, -5.0f, 10.0f, -10.0f, 20.0f,
                                         -30.0f};
                memcpy(x, special, sizeof special);
            }
            float *y = rand_f(n, -9, 9), *g = rand_f(n, -1, 1), *dx = rand_f(n, -9, 9);
            double *xd = to_d(x, n), *gd = to_d(g, n), *y_ref = zeros_d(n), *dx_ref = zeros_d(n);
            lunar_cpu_activation_forward(y, x, n, KINDS[k]);
            lunar_ref_activation_forward_f64(y_ref, xd, n, KINDS[k]);
            CHECK(close_act("out", KINDS[k], y, y_ref, x, n));
            lunar_cpu_activation_backward(dx, g, x, n, KINDS[k]);
            lunar_ref_activation_backward_f64(dx_ref, gd, xd, n, KINDS[k]);
            CHECK(close_act("dinp", KINDS[k], dx, dx_ref, x, n));
            float *z = copy_f(x, n);   /* in place */
            lunar_cpu_activation_forward(z, z, n, KINDS[k]);
            CHECK(same_bits(z, y, n * sizeof *z));
            free(x); free(y); free(g); free(dx); free(xd); free(gd); free(y_ref); free(dx_ref); free(z);
        }
    }
}

int main(void) {
    RUN(test_ref_activation_backward);
    RUN(test_ref_activation_values);
    RUN(test_ref_f32_activation);
    RUN(test_cpu_activation);
    return TEST_SUMMARY();
}
