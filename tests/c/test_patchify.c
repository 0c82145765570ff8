/*
 * tests/c/test_patchify.c: the kernels of the patch gather / scatter of the patch embedding,
 * on every backend that runs here:
 *   - the reference, core/ops/ref/patchify.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/patchify.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/patchify.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_patchify && build/tests/test_patchify
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { PATCH_MAX = 256 };
typedef struct {
    int B, C, k, S[3], P;
    size_t n;  /* elements of inp = elements of out */
    double inp[PATCH_MAX], R[PATCH_MAX];
} patch_ctx;

static double patch_loss(void *p) {
    patch_ctx *c = p;
    double out[PATCH_MAX];
    lunar_ref_patchify_forward_f64(out, c->inp, c->B, c->C, c->k, c->S, c->P);
    return dot(out, c->R, c->n);
}

static void patch_setup(patch_ctx *c, int B, int C, int k, const int *S, int P) {
    c->B = B;
    c->C = C;
    c->k = k;
    c->P = P;
    c->n = (size_t)B * C;
    for (int i = 0; i < k; i++) {
        c->S[i] = S[i];
        c->n *= (size_t)S[i];
    }
    fill(c->inp, c->n, -1, 1);
    fill(c->R, c->n, -1, 1);
}

static void patch_backward_case(int B, int C, int k, const int *S, int P) {
    patch_ctx c;
    patch_setup(&c, B, C, k, S, P);
    CHECK(c.n <= PATCH_MAX);
    double dinp[PATCH_MAX], dinp2[PATCH_MAX];
    set(dinp, c.n, GARBAGE);
    lunar_ref_patchify_backward_f64(dinp, c.R, B, C, k, S, P);
    CHECK_FD(patch_loss, &c, c.inp, c.n, dinp);
    set(dinp2, c.n, -GARBAGE);
    lunar_ref_patchify_backward_f64(dinp2, c.R, B, C, k, S, P);
    CHECK_SAME(dinp2, dinp, c.n);
}

static void test_ref_patchify_backward_2d(void) {
    int S[2] = {4, 6};
    patch_backward_case(2, 2, 2, S, 2);
}

static void test_ref_patchify_backward_3d(void) {
    int S[3] = {4, 2, 6};
    patch_backward_case(1, 2, 3, S, 2);
}

/* a hand-read 2D case: image 4x4, one channel, P = 2: patch 1 is the
 * top-right 2x2 block in row-major order */
static void test_ref_patchify_forward_hand(void) {
    double img[16], out[16];
    for (int i = 0; i < 16; i++) img[i] = i;
    int S[2] = {4, 4};
    lunar_ref_patchify_forward_f64(out, img, 1, 1, 2, S, 2);
    CHECK(out[0] == 0 && out[1] == 1 && out[2] == 4 && out[3] == 5);
    CHECK(out[4] == 2 && out[5] == 3 && out[6] == 6 && out[7] == 7);
    CHECK(out[12] == 10 && out[13] == 11 && out[14] == 14 && out[15] == 15);
}

/* patchify then linear with the conv weight [E, C, P, P(, P)] flattened equals a
 * direct convolution with kernel = stride = P, written here independently. */
static void test_ref_patchify_is_conv(void) {
    enum { B = 2, C = 2, E = 3, P = 2 };
    /* 2D: S = 4 x 6 */
    {
        enum { S0 = 4, S1 = 6, G0 = S0 / P, G1 = S1 / P, L = G0 * G1, KP = C * P * P };
        double img[B * C * S0 * S1], w[E * KP], bias[E], patches[B * L * KP], out[B * L * E];
        fill(img, B * C * S0 * S1, -1, 1);
        fill(w, E * KP, -1, 1);
        fill(bias, E, -1, 1);
        int S[2] = {S0, S1};
        lunar_ref_patchify_forward_f64(patches, img, B, C, 2, S, P);
        lunar_ref_linear_forward_f64(out, patches, w, bias, B * L, KP, E);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++)
                for (int g0 = 0; g0 < G0; g0++)
                    for (int g1 = 0; g1 < G1; g1++) {
                        double conv = bias[e];
                        for (int c = 0; c < C; c++)
                            for (int p0 = 0; p0 < P; p0++)
                                for (int p1 = 0; p1 < P; p1++)
                                    conv += w[((e * C + c) * P + p0) * P + p1] *
                                            img[((b * C + c) * S0 + g0 * P + p0) * S1 + g1 * P + p1];
                        CHECK_CLOSE(out[(b * L + g0 * G1 + g1) * E + e], conv, 1e-12, 1e-12);
                    }
    }
    /* 3D: S = 4 x 2 x 6 */
    {
        enum { S0 = 4, S1 = 2, S2 = 6, G0 = S0 / P, G1 = S1 / P, G2 = S2 / P,
               L = G0 * G1 * G2, KP = C * P * P * P };
        double img[B * C * S0 * S1 * S2], w[E * KP], bias[E], patches[B * L * KP], out[B * L * E];
        fill(img, B * C * S0 * S1 * S2, -1, 1);
        fill(w, E * KP, -1, 1);
        fill(bias, E, -1, 1);
        int S[3] = {S0, S1, S2};
        lunar_ref_patchify_forward_f64(patches, img, B, C, 3, S, P);
        lunar_ref_linear_forward_f64(out, patches, w, bias, B * L, KP, E);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < E; e++)
                for (int g0 = 0; g0 < G0; g0++)
                    for (int g1 = 0; g1 < G1; g1++)
                        for (int g2 = 0; g2 < G2; g2++) {
                            double conv = bias[e];
                            for (int c = 0; c < C; c++)
                                for (int p0 = 0; p0 < P; p0++)
                                    for (int p1 = 0; p1 < P; p1++)
                                        for (int p2 = 0; p2 < P; p2++)
                                            conv += w[(((e * C + c) * P + p0) * P + p1) * P + p2] *
                                                    img[(((b * C + c) * S0 + g0 * P + p0) * S1 +
                                                         g1 * P + p1) * S2 + g2 * P + p2];
                            int l = (g0 * G1 + g1) * G2 + g2;
                            CHECK_CLOSE(out[(b * L + l) * E + e], conv, 1e-12, 1e-12);
                        }
    }
}

static void test_ref_f32_patchify(void) {
    enum { B = 2, C = 3, n = B * C * 4 * 2 * 6 };
    int S[3] = {4, 2, 6};
    double inp[n], out[n], dinp[n];
    float inpf[n], outf[n], dinpf[n];
    fill(inp, n, -1, 1);
    to_f32(inpf, inp, n);
    lunar_ref_patchify_forward_f64(out, inp, B, C, 3, S, 2);
    lunar_ref_patchify_forward_f32(outf, inpf, B, C, 3, S, 2);
    CHECK_F32(outf, out, n);
    lunar_ref_patchify_backward_f64(dinp, out, B, C, 3, S, 2);
    lunar_ref_patchify_backward_f32(dinpf, outf, B, C, 3, S, 2);
    CHECK_F32(dinpf, dinp, n);
    CHECK_F32(dinpf, inp, n);  /* backward of a permutation undoes it */
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_patchify(void) {
    struct { int B, C, k, S[3], P; } cases[] = {
        {2, 3, 2, {8, 12, 0}, 4}, {1, 1, 2, {28, 28, 0}, 4}, {3, 2, 2, {5, 7, 0}, 1},
        {2, 2, 3, {4, 6, 8}, 2},  {1, 3, 3, {3, 3, 3}, 3},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int B = cases[t].B, C = cases[t].C, k = cases[t].k, P = cases[t].P;
        const int *S = cases[t].S;
        size_t n = (size_t)B * C;
        for (int i = 0; i < k; i++) n *= (size_t)S[i];
        float *img = rand_f(n, -1, 1), *out = rand_f(n, -9, 9), *back = rand_f(n, -9, 9);
        double *dimg = to_d(img, n), *dout_ref = zeros_d(n), *dback_ref = zeros_d(n);
        lunar_cpu_patchify_forward(out, img, B, C, k, S, P);
        lunar_ref_patchify_forward_f64(dout_ref, dimg, B, C, k, S, P);
        CHECK(close_arr("patchify out", out, dout_ref, n, 0.0, 0.0));
        float *g = rand_f(n, -1, 1);
        double *gd = to_d(g, n);
        lunar_cpu_patchify_backward(back, g, B, C, k, S, P);
        lunar_ref_patchify_backward_f64(dback_ref, gd, B, C, k, S, P);
        CHECK(close_arr("patchify dinp", back, dback_ref, n, 0.0, 0.0));
        free(img); free(out); free(back); free(dimg); free(dout_ref); free(dback_ref); free(g); free(gd);
    }
}

int main(void) {
    RUN(test_ref_patchify_backward_2d);
    RUN(test_ref_patchify_backward_3d);
    RUN(test_ref_patchify_forward_hand);
    RUN(test_ref_patchify_is_conv);
    RUN(test_ref_f32_patchify);
    RUN(test_cpu_patchify);
    return TEST_SUMMARY();
}
