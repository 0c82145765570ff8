/*
 * tests/c/test_embed.c: the kernels of the token embedding (class token, position embedding),
 * on every backend that runs here:
 *   - the reference, core/ops/ref/embed.c (test_ref_*): backwards against
 *     central finite differences of the f64 forward, forwards against hand
 *     arithmetic and mathematical facts, the f32 variant against the f64 one;
 *   - the fast CPU kernels, core/ops/cpu/embed.c (test_cpu_*): against
 *     the f64 reference on random inputs of odd sizes (tail and block paths),
 *     saved tensors, every gradient, overwrite vs accumulate.
 * The methods and tolerances: tests/c/kernel_test.h. The CUDA kernels
 * (core/ops/cuda/embed.cu) are tested against these by test_cuda.c; the
 * determinism of every CPU kernel by test_determinism.c.
 *
 *   make build/tests/test_embed && build/tests/test_embed
 */
#include "kernel_test.h"

/* ---- the reference: finite differences, hand values, f32 against f64 --------------- */

enum { EM_B = 2, EM_L = 3, EM_C = 4, EM_T = EM_L + 1 };
typedef struct {
    double x[EM_B * EM_L * EM_C], cls[EM_C], pos[EM_T * EM_C], R[EM_B * EM_T * EM_C];
} embed_ctx;

static double embed_loss(void *p) {
    embed_ctx *c = p;
    double out[EM_B * EM_T * EM_C];
    lunar_ref_embed_tokens_forward_f64(out, c->x, c->cls, c->pos, EM_B, EM_L, EM_C);
    return dot(out, c->R, EM_B * EM_T * EM_C);
}

static void test_ref_embed_tokens_backward(void) {
    embed_ctx c;
    fill(c.x, EM_B * EM_L * EM_C, -1, 1);
    fill(c.cls, EM_C, -1, 1);
    fill(c.pos, EM_T * EM_C, -1, 1);
    fill(c.R, EM_B * EM_T * EM_C, -1, 1);
    double dx[EM_B * EM_L * EM_C], dcls[EM_C], dpos[EM_T * EM_C];
    set(dx, EM_B * EM_L * EM_C, GARBAGE);
    set(dcls, EM_C, 0);
    set(dpos, EM_T * EM_C, 0);
    lunar_ref_embed_tokens_backward_f64(dx, dcls, dpos, c.R, EM_B, EM_L, EM_C);
    CHECK_FD(embed_loss, &c, c.x, EM_B * EM_L * EM_C, dx);
    CHECK_FD(embed_loss, &c, c.cls, EM_C, dcls);
    CHECK_FD(embed_loss, &c, c.pos, EM_T * EM_C, dpos);

    double dx2[EM_B * EM_L * EM_C], dcls2[EM_C], dpos2[EM_T * EM_C];
    memcpy(dcls2, dcls, sizeof dcls);
    memcpy(dpos2, dpos, sizeof dpos);
    set(dx2, EM_B * EM_L * EM_C, -GARBAGE);
    lunar_ref_embed_tokens_backward_f64(dx2, dcls2, dpos2, c.R, EM_B, EM_L, EM_C);
    CHECK_DOUBLED(dcls2, dcls, EM_C);
    CHECK_DOUBLED(dpos2, dpos, EM_T * EM_C);
    CHECK_SAME(dx2, dx, EM_B * EM_L * EM_C);

    /* dx == NULL: the parameter gradients alone */
    double dcls3[EM_C], dpos3[EM_T * EM_C];
    set(dcls3, EM_C, 0);
    set(dpos3, EM_T * EM_C, 0);
    lunar_ref_embed_tokens_backward_f64(NULL, dcls3, dpos3, c.R, EM_B, EM_L, EM_C);
    CHECK_SAME(dcls3, dcls, EM_C);
    CHECK_SAME(dpos3, dpos, EM_T * EM_C);
}

static void test_ref_f32_embed_tokens(void) {
    enum { B = 3, L = 5, C = 6, T = L + 1 };
    double x[B * L * C], cls[C], pos[T * C], out[B * T * C], dx[B * L * C], dcls[C], dpos[T * C];
    float xf[B * L * C], clsf[C], posf[T * C], outf[B * T * C], dxf[B * L * C], dclsf[C], dposf[T * C];
    fill(x, B * L * C, -1, 1);
    fill(cls, C, -1, 1);
    fill(pos, T * C, -1, 1);
    set(dcls, C, 0);
    set(dpos, T * C, 0);
    to_f32(xf, x, B * L * C);
    to_f32(clsf, cls, C);
    to_f32(posf, pos, T * C);
    to_f32(dclsf, dcls, C);
    to_f32(dposf, dpos, T * C);
    lunar_ref_embed_tokens_forward_f64(out, x, cls, pos, B, L, C);
    lunar_ref_embed_tokens_forward_f32(outf, xf, clsf, posf, B, L, C);
    CHECK_F32(outf, out, B * T * C);
    lunar_ref_embed_tokens_backward_f64(dx, dcls, dpos, out, B, L, C);
    lunar_ref_embed_tokens_backward_f32(dxf, dclsf, dposf, outf, B, L, C);
    CHECK_F32(dxf, dx, B * L * C);
    CHECK_F32(dclsf, dcls, C);
    CHECK_F32(dposf, dpos, T * C);
}

/* ---- the CPU kernels against the f64 reference ------------------------------------ */

static void test_cpu_embed(void) {
    const int sizes[][3] = {{1, 1, 1}, {2, 3, 5}, {3, 49, 192}, {5, 7, 70}, {1, 16, 129}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int B = sizes[s][0], L = sizes[s][1], C = sizes[s][2];
        size_t nx = (size_t)B * L * C, nout = (size_t)B * (L + 1) * C, np = (size_t)(L + 1) * C;
        float *x = rand_f(nx, -1, 1), *cls = rand_f(C, -1, 1), *pos = rand_f(np, -1, 1);
        float *out = rand_f(nout, -9, 9);
        double *xd = to_d(x, nx), *clsd = to_d(cls, C), *posd = to_d(pos, np), *out_ref = zeros_d(nout);
        lunar_cpu_embed_tokens_forward(out, x, cls, pos, B, L, C);
        lunar_ref_embed_tokens_forward_f64(out_ref, xd, clsd, posd, B, L, C);
        CHECK(close_arr("embed out", out, out_ref, nout, 1e-7, 0));
        float *g = rand_f(nout, -1, 1), *dx = rand_f(nx, -9, 9), *dcls = rand_f(C, -1, 1), *dpos = rand_f(np, -1, 1);
        double *gd = to_d(g, nout), *dx_ref = zeros_d(nx), *dcls_ref = to_d(dcls, C), *dpos_ref = to_d(dpos, np);
        lunar_cpu_embed_tokens_backward(dx, dcls, dpos, g, B, L, C);
        lunar_ref_embed_tokens_backward_f64(dx_ref, dcls_ref, dpos_ref, gd, B, L, C);
        CHECK(close_arr("embed dx", dx, dx_ref, nx, 0, 0));
        CHECK(close_arr("embed dcls", dcls, dcls_ref, C, 1e-6, 1e-7));
        CHECK(close_arr("embed dpos", dpos, dpos_ref, np, 1e-6, 1e-7));
        lunar_cpu_embed_tokens_backward(NULL, dcls, dpos, g, B, L, C);
        lunar_ref_embed_tokens_backward_f64(NULL, dcls_ref, dpos_ref, gd, B, L, C);
        CHECK(close_arr("embed dpos (dx NULL, 2nd accumulation)", dpos, dpos_ref, np, 1e-6, 1e-7));
        free(x); free(cls); free(pos); free(out); free(xd); free(clsd); free(posd); free(out_ref);
        free(g); free(dx); free(dcls); free(dpos); free(gd); free(dx_ref); free(dcls_ref); free(dpos_ref);
    }
}

int main(void) {
    RUN(test_ref_embed_tokens_backward);
    RUN(test_ref_f32_embed_tokens);
    RUN(test_cpu_embed);
    return TEST_SUMMARY();
}
