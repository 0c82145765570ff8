/*
 * core/ops/ops.c: the tensor-level op API (ops.h): checks, then dispatch to the
 * backend of the device. The CPU backend is the fast kernels (core/ops/cpu);
 * the reference backend the naive ones (core/ops/ref), the oracle; the CUDA
 * backend (LUNAR_USE_CUDA) the kernels of core/ops/cuda, for devices >= 0.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/cuda.h"
#include "lunar/ops.h"

// ----------------------------------------------------------------------------
// backends

#define ENTRY(prefix, op) .op = prefix(op)
#define BACKEND_TABLE(nm, P, ...)                                                             \
    {.name = nm, ENTRY(P, linear_forward), ENTRY(P, linear_backward),                         \
     ENTRY(P, patchify_forward), ENTRY(P, patchify_backward), ENTRY(P, layernorm_forward),    \
     ENTRY(P, layernorm_backward), ENTRY(P, gelu_forward), ENTRY(P, gelu_backward),           \
     ENTRY(P, activation_forward), ENTRY(P, activation_backward),                             \
     ENTRY(P, rmsnorm_forward), ENTRY(P, rmsnorm_backward),                                   \
     ENTRY(P, attention_forward), ENTRY(P, attention_backward),                               \
     ENTRY(P, embed_tokens_forward), ENTRY(P, embed_tokens_backward),                         \
     ENTRY(P, dropout_forward), ENTRY(P, dropout_backward), ENTRY(P, dropout_rows),           \
     ENTRY(P, cross_entropy_forward),                                                         \
     ENTRY(P, cross_entropy_backward), ENTRY(P, add), ENTRY(P, scale), ENTRY(P, adamw_step),  \
     ENTRY(P, sgd_step), ENTRY(P, linear_forward_bf16), ENTRY(P, linear_backward_bf16),         \
     ENTRY(P, layernorm_forward_bf16), ENTRY(P, gelu_forward_bf16), ENTRY(P, gelu_backward_bf16), \
     ENTRY(P, attention_forward_bf16), ENTRY(P, attention_backward_bf16), ENTRY(P, cast_bf16),  \
     ENTRY(P, adamw_step_bf16), ENTRY(P, sgd_step_bf16), ENTRY(P, sum_squares),                \
     ENTRY(P, accuracy_count), ENTRY(P, arith), ENTRY(P, reduce), __VA_ARGS__}

static const lunar_backend cpu_backend = BACKEND_TABLE("cpu", LUNAR_CPU_KERNEL);
static const lunar_backend ref_backend = BACKEND_TABLE("ref", LUNAR_REF_F32);
/* f64 operands (nn.gradcheck's finite differences): the reference kernels in double,
 * lunar_ref_*_f64, on the CPU while the reference kernels are selected (ref64_get). */
typedef struct {
    const char *name;
    LUNAR_KERNEL_DECLS(LUNAR_BACKEND_FIELD, double)
    lunar_status (*check)(void);
} backend64;
static const backend64 ref64_backend = BACKEND_TABLE("ref64", LUNAR_REF_F64);
static int use_ref;

const lunar_backend *lunar_backend_get(int device) {
    if (device == LUNAR_CPU) return use_ref ? &ref_backend : &cpu_backend;
    if (device < 0) {
        lunar_error(LUNAR_ERR_DEVICE, "no device %d", device);
        return NULL;
    }
    return lunar_cuda_backend(device);   /* NULL with the reason when none */
}

#ifdef LUNAR_USE_CUDA
static const lunar_backend cuda_backend = BACKEND_TABLE("cuda", LUNAR_CUDA_KERNEL, .check = lunar_cuda_take_error);

const lunar_backend *lunar_cuda_backend(int device) {
    if (lunar_cuda_set_device(device)) return NULL;
    return &cuda_backend;
}
#endif
void lunar_backend_use_ref(int on) { use_ref = on; }

// ----------------------------------------------------------------------------
// checks

static int check_t(const char *op, const char *arg, const lunar_tensor *t, lunar_dtype dtype) {
    if (!t) return lunar_error(LUNAR_ERR_ARG, "%s: %s is missing", op, arg);
    if (!t->storage) return lunar_error(LUNAR_ERR_ARG, "%s: %s was released", op, arg);
    if (t->dtype != dtype)
        return lunar_error(LUNAR_ERR_DTYPE, "%s: %s has dtype %s, expected %s", op, arg,
                           lunar_dtype_name(t->dtype), lunar_dtype_name(dtype));
    if (!lunar_tensor_is_contiguous(t))
        return lunar_error(LUNAR_ERR_ARG, "%s: %s is not contiguous", op, arg);
    return LUNAR_OK;
}

static int check_numel(const char *op, const char *a, const lunar_tensor *ta, int64_t want, const char *what) {
    if (lunar_tensor_numel(ta) == want) return LUNAR_OK;
    char s[128];
    return lunar_error(LUNAR_ERR_SHAPE, "%s: %s %s has %lld elements, expected %lld (%s)", op, a,
                       lunar_shape_str(ta, s, sizeof s), (long long)lunar_tensor_numel(ta),
                       (long long)want, what);
}

static int shape_err(const char *op, const char *a, const lunar_tensor *ta, const char *b,
                     const lunar_tensor *tb, const char *what) {
    char s1[128], s2[128];
    return lunar_error(LUNAR_ERR_SHAPE, "%s: %s %s and %s %s %s", op, a, lunar_shape_str(ta, s1, sizeof s1),
                       b, lunar_shape_str(tb, s2, sizeof s2), what);
}

static void device_str(int d, char *buf, size_t n) {
    if (d == LUNAR_CPU) snprintf(buf, n, "cpu");
    else snprintf(buf, n, "cuda:%d", d);
}

/* The i-th name of a stringized argument list "a, b, c": start and length. */
static const char *nth_name(const char *names, int i, int *len) {
    const char *p = names;
    for (int k = 0; k < i && p; k++) {
        p = strchr(p, ',');
        if (p) { p++; while (*p == ' ') p++; }
    }
    if (!p) { *len = 1; return "?"; }
    *len = (int)strcspn(p, ", ");
    return p;
}

/* Every non-NULL tensor of ts[n] on the device of ts[0]. */
static int check_devices(const char *op, const char *names, const lunar_tensor *const *ts, int n) {
    int d0 = lunar_tensor_device(ts[0]);
    for (int i = 1; i < n; i++) {
        if (!ts[i] || lunar_tensor_device(ts[i]) == d0) continue;
        char a[32], b[32];
        int la, lb;
        const char *na = nth_name(names, 0, &la), *nb = nth_name(names, i, &lb);
        device_str(d0, a, sizeof a);
        device_str(lunar_tensor_device(ts[i]), b, sizeof b);
        return lunar_error(LUNAR_ERR_DEVICE, "%s: %.*s is on %s but %.*s is on %s (the tensors of an op must "
                           "be on one device: move them with :to())", op, la, na, a, lb, nb, b);
    }
    return LUNAR_OK;
}

/* t is f32 or bf16 (an activation the bf16 kernels read either way). */
static int check_t_f32_bf16(const char *op, const char *arg, const lunar_tensor *t) {
    return check_t(op, arg, t, t && t->dtype == LUNAR_BF16 ? LUNAR_BF16 : LUNAR_F32);
}

#define CHECK(expr) do { int rc_ = (expr); if (rc_) return (lunar_status)rc_; } while (0)
#define T(op, name, t) CHECK(check_t(op, name, t, LUNAR_F32))
#define T16(op, name, t) CHECK(check_t(op, name, t, LUNAR_BF16))
#define T32_16(op, name, t) CHECK(check_t_f32_bf16(op, name, t))
#define H(t) ((uint16_t *)lunar_tensor_data(t))
#define IS16(t) ((t)->dtype == LUNAR_BF16)
#define T_OPT(op, name, t) do { if (t) T(op, name, t); } while (0)
/* BACKEND(op, t, ...): every non-NULL tensor listed on t's device (the names
 * in messages are the argument names), then be = that device's backend. */
#define BACKEND(op, ...)                                                                       \
    const lunar_tensor *devs_[] = {__VA_ARGS__};                                                \
    CHECK(check_devices(op, #__VA_ARGS__, devs_, (int)(sizeof devs_ / sizeof *devs_)));          \
    const lunar_backend *be = lunar_backend_get(lunar_tensor_device(devs_[0]));                 \
    if (!be) return lunar_last_status()
/* After a kernel: the backend's pending error (CUDA), else OK. */
#define DONE() return be->check ? be->check() : LUNAR_OK
#define F(t) ((float *)lunar_tensor_data(t))
#define FOPT(t) ((t) ? F(t) : NULL)
#define LAST(t) ((t)->ndim ? (t)->shape[(t)->ndim - 1] : 1)

/* f64: the ops that take it (every op of the models-as-code leaves, for nn.gradcheck)
 * compute in the op's real dtype, REAL(lead): f64 when the lead tensor is f64, else
 * f32. R checks a tensor against it (R16 also lets a bf16 through in f32, the bf16
 * operands of precision = 'bf16'). BACKEND_R is BACKEND plus be64, the double
 * reference kernels, for f64 (the fast CPU and CUDA kernels take f32 only: ref64_get
 * refuses f64 there with the reason). KERNEL(k, ...) calls k on be64 or be, its
 * tensor arguments V(t) (untyped data, float * or double * by the kernel's type). */
#define REAL(lead) const lunar_dtype rdt_ = (lead) && (lead)->dtype == LUNAR_F64 ? LUNAR_F64 : LUNAR_F32
#define R(op, name, t) CHECK(check_t(op, name, t, rdt_))
#define R_OPT(op, name, t) do { if (t) R(op, name, t); } while (0)
#define R16(op, name, t) \
    CHECK(check_t(op, name, t, rdt_ == LUNAR_F32 && (t) && (t)->dtype == LUNAR_BF16 ? LUNAR_BF16 : rdt_))
#define V(t) lunar_tensor_data(t)
#define VOPT(t) ((t) ? V(t) : NULL)
#define BACKEND_R(op, ...)                                                                     \
    BACKEND(op, __VA_ARGS__);                                                                   \
    const backend64 *be64 = NULL;                                                               \
    if (rdt_ == LUNAR_F64 && !(be64 = ref64_get(op, lunar_tensor_device(devs_[0])))) return lunar_last_status()
#define KERNEL(k, ...) do { if (be64) be64->k(__VA_ARGS__); else be->k(__VA_ARGS__); } while (0)

/* The double reference kernels for an f64 op on device: the CPU with the reference
 * kernels selected (lunar_backend_use_ref), else NULL with an error naming op. */
static const backend64 *ref64_get(const char *op, int device) {
    if (device == LUNAR_CPU && use_ref) return &ref64_backend;
    lunar_error(LUNAR_ERR_DTYPE, "%s: f64 operands run on the reference kernels on the CPU only "
                "(lunar.ops.use_reference_kernels(true), as nn.gradcheck selects); the %s kernels take f32",
                op, device == LUNAR_CPU ? "fast CPU" : "CUDA");
    return NULL;
}

// ----------------------------------------------------------------------------
// ops

/* linear's geometry: weight [N, K], inp [..., K]: M = numel(inp) / K rows. */
static int linear_geom(const char *op, const lunar_tensor *inp, const lunar_tensor *weight, int64_t *M,
                       int64_t *K, int64_t *N) {
    if (weight->ndim != 2) return shape_err(op, "inp", inp, "weight", weight, "(weight must be 2-dim [N, K])");
    *N = weight->shape[0];
    *K = weight->shape[1];
    if (LAST(inp) != *K) return shape_err(op, "inp", inp, "weight", weight, "differ in K (the last dim of inp)");
    *M = lunar_tensor_numel(inp) / (*K ? *K : 1);
    return LUNAR_OK;
}

lunar_status lunar_op_linear_forward(lunar_tensor *out, const lunar_tensor *inp,
                                     const lunar_tensor *weight, const lunar_tensor *bias) {
    const char *op = "linear";
    /* a bf16 weight selects the bf16 GEMM (precision = 'bf16'): inp f32 or bf16 */
    int w16 = weight && weight->dtype == LUNAR_BF16;
    REAL(inp);
    if (w16) { T32_16(op, "out", out); T32_16(op, "inp", inp); T16(op, "weight", weight); }
    else { R(op, "out", out); R(op, "inp", inp); R(op, "weight", weight); }
    R_OPT(op, "bias", bias);
    int64_t M, K, N;
    CHECK(linear_geom(op, inp, weight, &M, &K, &N));
    if (bias) CHECK(check_numel(op, "bias", bias, N, "N = weight rows"));
    if (LAST(out) != N || lunar_tensor_numel(out) != M * N)
        return shape_err(op, "out", out, "weight", weight, "do not fit (out must be [..., N])");
    BACKEND_R(op, inp, out, weight, bias);
    if (w16)
        be->linear_forward_bf16(lunar_tensor_data(out), IS16(out), lunar_tensor_data(inp), IS16(inp), H(weight),
                                FOPT(bias), (int)M, (int)K, (int)N);
    else KERNEL(linear_forward, V(out), V(inp), V(weight), VOPT(bias), (int)M, (int)K, (int)N);
    DONE();
}

lunar_status lunar_op_linear_backward(lunar_tensor *dinp, lunar_tensor *dweight, lunar_tensor *dbias,
                                      const lunar_tensor *dout, const lunar_tensor *inp,
                                      const lunar_tensor *weight) {
    const char *op = "linear_backward";
    int w16 = weight && weight->dtype == LUNAR_BF16;   /* the bf16 GEMMs, as in forward */
    REAL(dweight);
    R_OPT(op, "dinp", dinp); R(op, "dweight", dweight); R_OPT(op, "dbias", dbias);
    if (w16) { T32_16(op, "dout", dout); T32_16(op, "inp", inp); T16(op, "weight", weight); }
    else { R(op, "dout", dout); R(op, "inp", inp); R(op, "weight", weight); }
    int64_t M, K, N;
    CHECK(linear_geom(op, inp, weight, &M, &K, &N));
    if (LAST(dout) != N || lunar_tensor_numel(dout) != M * N)
        return shape_err(op, "dout", dout, "weight", weight, "do not fit");
    if (dinp) CHECK(check_numel(op, "dinp", dinp, M * K, "the size of inp"));
    CHECK(check_numel(op, "dweight", dweight, N * K, "the size of weight"));
    if (dbias) CHECK(check_numel(op, "dbias", dbias, N, "N"));
    BACKEND_R(op, inp, dinp, dweight, dbias, dout, weight);
    if (w16)
        be->linear_backward_bf16(FOPT(dinp), F(dweight), FOPT(dbias), lunar_tensor_data(dout), IS16(dout),
                                 lunar_tensor_data(inp), IS16(inp), H(weight), (int)M, (int)K, (int)N);
    else
        KERNEL(linear_backward, VOPT(dinp), V(dweight), VOPT(dbias), V(dout), V(inp), V(weight), (int)M, (int)K, (int)N);
    DONE();
}

static int patch_geom(const char *op, const lunar_tensor *img, int P, int *S, int *k, int64_t *L, int64_t *cols) {
    if (img->ndim != 4 && img->ndim != 5) {
        char s[128];
        return lunar_error(LUNAR_ERR_SHAPE, "%s: image %s must be [B, C, H, W] or [B, C, D, H, W]", op,
                           lunar_shape_str(img, s, sizeof s));
    }
    if (P <= 0) return lunar_error(LUNAR_ERR_ARG, "%s: patch size %d must be positive", op, P);
    *k = img->ndim - 2;
    *L = 1;
    *cols = img->shape[1];
    for (int i = 0; i < *k; i++) {
        S[i] = (int)img->shape[2 + i];
        if (S[i] % P) {
            char s[128];
            return lunar_error(LUNAR_ERR_SHAPE, "%s: image %s: size %d of spatial dim %d is not a multiple "
                               "of the patch size %d", op, lunar_shape_str(img, s, sizeof s), S[i], i, P);
        }
        *L *= S[i] / P;
        *cols *= P;
    }
    return LUNAR_OK;
}

lunar_status lunar_op_patchify_forward(lunar_tensor *out, const lunar_tensor *inp, int P) {
    const char *op = "patchify";
    REAL(inp);
    R(op, "out", out); R(op, "inp", inp);
    int S[3], k; int64_t L, cols;
    CHECK(patch_geom(op, inp, P, S, &k, &L, &cols));
    CHECK(check_numel(op, "out", out, inp->shape[0] * L * cols, "[B, patches, C*P^k]"));
    BACKEND_R(op, inp, out);
    KERNEL(patchify_forward, V(out), V(inp), (int)inp->shape[0], (int)inp->shape[1], k, S, P);
    DONE();
}

lunar_status lunar_op_patchify_backward(lunar_tensor *dinp, const lunar_tensor *dout, int P) {
    const char *op = "patchify_backward";
    REAL(dout);
    R(op, "dinp", dinp); R(op, "dout", dout);
    int S[3], k; int64_t L, cols;
    CHECK(patch_geom(op, dinp, P, S, &k, &L, &cols));
    CHECK(check_numel(op, "dout", dout, dinp->shape[0] * L * cols, "[B, patches, C*P^k]"));
    BACKEND_R(op, dinp, dout);
    KERNEL(patchify_backward, V(dinp), V(dout), (int)dinp->shape[0], (int)dinp->shape[1], k, S, P);
    DONE();
}

lunar_status lunar_op_layernorm_forward(lunar_tensor *out, lunar_tensor *mean, lunar_tensor *rstd,
                                        const lunar_tensor *inp, const lunar_tensor *weight,
                                        const lunar_tensor *bias, float eps) {
    const char *op = "layernorm";
    REAL(inp);
    R16(op, "out", out); R(op, "mean", mean); R(op, "rstd", rstd); R(op, "inp", inp);
    R(op, "weight", weight); R(op, "bias", bias);
    int64_t C = LAST(inp), M = lunar_op_layernorm_rows(inp);
    if (lunar_tensor_numel(weight) != C) return shape_err(op, "inp", inp, "weight", weight, "differ in C");
    CHECK(check_numel(op, "bias", bias, C, "C"));
    CHECK(check_numel(op, "out", out, M * C, "the size of inp"));
    CHECK(check_numel(op, "mean", mean, M, "rows of inp"));
    CHECK(check_numel(op, "rstd", rstd, M, "rows of inp"));
    BACKEND_R(op, inp, out, mean, rstd, weight, bias);
    if (IS16(out)) be->layernorm_forward_bf16(H(out), F(mean), F(rstd), F(inp), F(weight), F(bias), (int)M, (int)C, eps);
    else KERNEL(layernorm_forward, V(out), V(mean), V(rstd), V(inp), V(weight), V(bias), (int)M, (int)C, eps);
    DONE();
}

/* The sizes a norm's backward checks (LayerNorm, RMSNorm): M rows of C = inp's last dim,
 * weight [C], dout and dinp the size of inp, dweight [C]. */
static int norm_backward_sizes(const char *op, int64_t *M, int64_t *C, const lunar_tensor *inp,
                               const lunar_tensor *weight, const lunar_tensor *dout, const lunar_tensor *dinp,
                               const lunar_tensor *dweight) {
    *C = LAST(inp);
    *M = lunar_op_layernorm_rows(inp);
    if (lunar_tensor_numel(weight) != *C) return shape_err(op, "inp", inp, "weight", weight, "differ in C");
    CHECK(check_numel(op, "dout", dout, *M * *C, "the size of inp"));
    CHECK(check_numel(op, "dinp", dinp, *M * *C, "the size of inp"));
    CHECK(check_numel(op, "dweight", dweight, *C, "C"));
    return LUNAR_OK;
}

lunar_status lunar_op_layernorm_backward(lunar_tensor *dinp, lunar_tensor *dweight, lunar_tensor *dbias,
                                         const lunar_tensor *dout, const lunar_tensor *inp,
                                         const lunar_tensor *weight, const lunar_tensor *mean,
                                         const lunar_tensor *rstd) {
    const char *op = "layernorm_backward";
    REAL(inp);
    R(op, "dinp", dinp); R(op, "dweight", dweight); R(op, "dbias", dbias); R(op, "dout", dout);
    R(op, "inp", inp); R(op, "weight", weight); R(op, "mean", mean); R(op, "rstd", rstd);
    int64_t C, M;
    CHECK(norm_backward_sizes(op, &M, &C, inp, weight, dout, dinp, dweight));
    CHECK(check_numel(op, "dbias", dbias, C, "C"));
    CHECK(check_numel(op, "mean", mean, M, "rows"));
    CHECK(check_numel(op, "rstd", rstd, M, "rows"));
    BACKEND_R(op, inp, dinp, dweight, dbias, dout, weight, mean, rstd);
    KERNEL(layernorm_backward, V(dinp), V(dweight), V(dbias), V(dout), V(inp), V(weight), V(mean), V(rstd),
           (int)M, (int)C);
    DONE();
}

lunar_status lunar_op_gelu_forward(lunar_tensor *out, const lunar_tensor *inp) {
    REAL(inp);
    R16("gelu", "out", out); R16("gelu", "inp", inp);
    if (IS16(inp) && !IS16(out))   /* a bf16 input (precision = 'bf16') gives a bf16 output */
        return lunar_error(LUNAR_ERR_DTYPE, "gelu: inp has dtype bf16, so out must be bf16 (got f32)");
    CHECK(check_numel("gelu", "out", out, lunar_tensor_numel(inp), "the size of inp"));
    BACKEND_R("gelu", inp, out);
    if (IS16(out)) be->gelu_forward_bf16(H(out), lunar_tensor_data(inp), IS16(inp), (size_t)lunar_tensor_numel(inp));
    else KERNEL(gelu_forward, V(out), V(inp), (size_t)lunar_tensor_numel(inp));
    DONE();
}

lunar_status lunar_op_gelu_backward(lunar_tensor *dinp, const lunar_tensor *dout, const lunar_tensor *inp) {
    const char *op = "gelu_backward";
    REAL(dout);
    R16(op, "dinp", dinp); R(op, "dout", dout); R16(op, "inp", inp);
    if (IS16(dinp) && !IS16(inp))
        return lunar_error(LUNAR_ERR_DTYPE, "gelu_backward: dinp has dtype bf16, so inp must be bf16 (got %s)",
                           lunar_dtype_name(inp->dtype));
    int64_t n = lunar_tensor_numel(inp);
    CHECK(check_numel(op, "dout", dout, n, "the size of inp"));
    CHECK(check_numel(op, "dinp", dinp, n, "the size of inp"));
    BACKEND_R(op, inp, dinp, dout);
    if (IS16(inp)) be->gelu_backward_bf16(lunar_tensor_data(dinp), IS16(dinp), F(dout), H(inp), (size_t)n);
    else KERNEL(gelu_backward, V(dinp), V(dout), V(inp), (size_t)n);
    DONE();
}

lunar_status lunar_op_rmsnorm_forward(lunar_tensor *out, lunar_tensor *rstd, const lunar_tensor *inp,
                                      const lunar_tensor *weight, float eps) {
    const char *op = "rmsnorm";
    REAL(inp);
    R(op, "out", out); R(op, "rstd", rstd); R(op, "inp", inp); R(op, "weight", weight);
    int64_t C = LAST(inp), M = lunar_op_layernorm_rows(inp);
    if (lunar_tensor_numel(weight) != C) return shape_err(op, "inp", inp, "weight", weight, "differ in C");
    CHECK(check_numel(op, "out", out, M * C, "the size of inp"));
    CHECK(check_numel(op, "rstd", rstd, M, "rows of inp"));
    BACKEND_R(op, inp, out, rstd, weight);
    KERNEL(rmsnorm_forward, V(out), V(rstd), V(inp), V(weight), (int)M, (int)C, eps);
    DONE();
}

lunar_status lunar_op_rmsnorm_backward(lunar_tensor *dinp, lunar_tensor *dweight, const lunar_tensor *dout,
                                       const lunar_tensor *inp, const lunar_tensor *weight,
                                       const lunar_tensor *rstd) {
    const char *op = "rmsnorm_backward";
    REAL(inp);
    R(op, "dinp", dinp); R(op, "dweight", dweight); R(op, "dout", dout); R(op, "inp", inp);
    R(op, "weight", weight); R(op, "rstd", rstd);
    int64_t C, M;
    CHECK(norm_backward_sizes(op, &M, &C, inp, weight, dout, dinp, dweight));
    CHECK(check_numel(op, "rstd", rstd, M, "rows of inp"));
    BACKEND_R(op, inp, dinp, dweight, dout, weight, rstd);
    KERNEL(rmsnorm_backward, V(dinp), V(dweight), V(dout), V(inp), V(weight), V(rstd), (int)M, (int)C);
    DONE();
}

static const char *act_name(int kind) {
    switch (kind) {
    case LUNAR_ACT_RELU: return "relu";
    case LUNAR_ACT_SILU: return "silu";
    case LUNAR_ACT_GELU_TANH: return "gelu_tanh";
    default: return NULL;
    }
}

lunar_status lunar_op_resize_bicubic(lunar_tensor *out, const lunar_tensor *inp, int antialias) {
    const char *op = "resize_bicubic";
    T(op, "inp", inp);
    T(op, "out", out);
    const lunar_tensor *ts[] = {inp, out};
    CHECK(check_devices(op, "inp, out", ts, 2));
    if (lunar_tensor_device(inp) != LUNAR_CPU)
        return lunar_error(LUNAR_ERR_DEVICE, "%s: runs on the CPU only (no CUDA kernel): move inp to the CPU with "
                           ":to('cpu')", op);
    int nd = inp->ndim;
    if ((nd != 3 && nd != 4) || out->ndim != nd)
        return shape_err(op, "inp", inp, "out", out, "must both be [H, W, C] or [N, H, W, C]");
    int64_t n = nd == 4 ? inp->shape[0] : 1, h = inp->shape[nd - 3], w = inp->shape[nd - 2], c = inp->shape[nd - 1];
    int64_t oh = out->shape[nd - 3], ow = out->shape[nd - 2];
    if ((nd == 4 && out->shape[0] != n) || out->shape[nd - 1] != c)
        return shape_err(op, "inp", inp, "out", out, "differ in N or C");
    if (lunar_tensor_numel(inp) == 0 || lunar_tensor_numel(out) == 0)
        return shape_err(op, "inp", inp, "out", out, "have a size of 0");
    if (lunar_tensor_data(out) == lunar_tensor_data(inp))
        return lunar_error(LUNAR_ERR_ARG, "%s: out must not be inp", op);
    if (use_ref) lunar_ref_resize_bicubic_f32(F(out), F(inp), n, h, w, c, oh, ow, antialias != 0);
    else lunar_cpu_resize_bicubic(F(out), F(inp), n, h, w, c, oh, ow, antialias != 0);
    return LUNAR_OK;
}

lunar_status lunar_op_activation_forward(lunar_tensor *out, const lunar_tensor *inp, int kind) {
    const char *op = act_name(kind);
    if (!op) return lunar_error(LUNAR_ERR_ARG, "activation: unknown kind %d (LUNAR_ACT_*)", kind);
    REAL(inp);
    R(op, "out", out); R(op, "inp", inp);
    CHECK(check_numel(op, "out", out, lunar_tensor_numel(inp), "the size of inp"));
    BACKEND_R(op, inp, out);
    KERNEL(activation_forward, V(out), V(inp), (size_t)lunar_tensor_numel(inp), kind);
    DONE();
}

lunar_status lunar_op_activation_backward(lunar_tensor *dinp, const lunar_tensor *dout, const lunar_tensor *inp,
                                          int kind) {
    const char *name = act_name(kind);
    if (!name) return lunar_error(LUNAR_ERR_ARG, "activation_backward: unknown kind %d (LUNAR_ACT_*)", kind);
    char op[32];
    snprintf(op, sizeof op, "%s_backward", name);
    REAL(inp);
    R(op, "dinp", dinp); R(op, "dout", dout); R(op, "inp", inp);
    int64_t n = lunar_tensor_numel(inp);
    CHECK(check_numel(op, "dout", dout, n, "the size of inp"));
    CHECK(check_numel(op, "dinp", dinp, n, "the size of inp"));
    BACKEND_R(op, inp, dinp, dout);
    KERNEL(activation_backward, V(dinp), V(dout), V(inp), (size_t)n, kind);
    DONE();
}

static int attn_geom(const char *op, const lunar_tensor *qkv, int H, int *B, int *N, int *D) {
    char s[128];
    if (qkv->ndim != 3 || qkv->shape[2] % 3)
        return lunar_error(LUNAR_ERR_SHAPE, "%s: qkv %s must be [B, N, 3*C]", op, lunar_shape_str(qkv, s, sizeof s));
    int64_t C = qkv->shape[2] / 3;
    if (H <= 0 || C % H)
        return lunar_error(LUNAR_ERR_SHAPE, "%s: width C = %lld of qkv %s is not divisible by %d heads", op,
                           (long long)C, lunar_shape_str(qkv, s, sizeof s), H);
    *B = (int)qkv->shape[0]; *N = (int)qkv->shape[1]; *D = (int)(C / H);
    return LUNAR_OK;
}

lunar_status lunar_op_attention_forward(lunar_tensor *out, lunar_tensor *lse, const lunar_tensor *qkv, int H) {
    const char *op = "attention";
    /* qkv f32 or bf16 (precision = 'bf16'); out of qkv's dtype; lse f32 */
    REAL(qkv);
    R16(op, "qkv", qkv); CHECK(check_t(op, "out", out, qkv->dtype)); R(op, "lse", lse);
    int B, N, D;
    CHECK(attn_geom(op, qkv, H, &B, &N, &D));
    CHECK(check_numel(op, "out", out, (int64_t)B * N * H * D, "[B, N, C]"));
    CHECK(check_numel(op, "lse", lse, (int64_t)B * H * N, "[B, H, N]"));
    BACKEND_R(op, qkv, out, lse);
    if (IS16(qkv)) be->attention_forward_bf16(H(out), F(lse), H(qkv), B, N, H, D);
    else KERNEL(attention_forward, V(out), V(lse), V(qkv), B, N, H, D);
    DONE();
}

/* The geometry of one attention block: qkv [B, Nq, 3C], kv [B, Nk, 2C], CPU, f32. */
static int attn_block_geom(const char *op, const lunar_tensor *qkv, const lunar_tensor *kv, int H, int *B, int *Nq,
                           int *Nk, int *D) {
    T(op, "qkv", qkv); T(op, "kv", kv);
    char s1[128], s2[128];
    CHECK(attn_geom(op, qkv, H, B, Nq, D));
    if (lunar_tensor_device(qkv) != LUNAR_CPU || lunar_tensor_device(kv) != LUNAR_CPU)
        return lunar_error(LUNAR_ERR_DEVICE, "%s: runs on the CPU only (no CUDA kernel yet)", op);
    if (kv->ndim != 3 || kv->shape[0] != *B || kv->shape[2] != 2 * (int64_t)H * *D)
        return lunar_error(LUNAR_ERR_SHAPE, "%s: kv %s must be [B, Nk, 2*C] for qkv %s", op,
                           lunar_shape_str(kv, s1, sizeof s1), lunar_shape_str(qkv, s2, sizeof s2));
    *Nk = (int)kv->shape[1];
    return LUNAR_OK;
}

lunar_status lunar_op_attention_block_forward(lunar_tensor *out, lunar_tensor *lse, const lunar_tensor *qkv,
                                              const lunar_tensor *kv, int H, int accumulate) {
    const char *op = "attention_block";
    int B, Nq, Nk, D;
    CHECK(attn_block_geom(op, qkv, kv, H, &B, &Nq, &Nk, &D));
    T(op, "out", out); T(op, "lse", lse);
    CHECK(check_numel(op, "out", out, (int64_t)B * Nq * H * D, "[B, Nq, C]"));
    CHECK(check_numel(op, "lse", lse, (int64_t)B * H * Nq, "[B, H, Nq]"));
    lunar_cpu_attention_block_forward(F(out), F(lse), F(qkv), F(kv), B, Nq, Nk, H, D, accumulate != 0);
    return LUNAR_OK;
}

lunar_status lunar_op_attention_block_backward(lunar_tensor *dqkv, lunar_tensor *dkv, const lunar_tensor *dout,
                                               const lunar_tensor *qkv, const lunar_tensor *kv,
                                               const lunar_tensor *out, const lunar_tensor *lse, int H) {
    const char *op = "attention_block_backward";
    int B, Nq, Nk, D;
    CHECK(attn_block_geom(op, qkv, kv, H, &B, &Nq, &Nk, &D));
    T(op, "dqkv", dqkv); T(op, "dkv", dkv); T(op, "dout", dout); T(op, "out", out); T(op, "lse", lse);
    CHECK(check_numel(op, "dqkv", dqkv, lunar_tensor_numel(qkv), "the size of qkv"));
    CHECK(check_numel(op, "dkv", dkv, lunar_tensor_numel(kv), "the size of kv"));
    CHECK(check_numel(op, "dout", dout, (int64_t)B * Nq * H * D, "[B, Nq, C]"));
    CHECK(check_numel(op, "out", out, (int64_t)B * Nq * H * D, "[B, Nq, C]"));
    CHECK(check_numel(op, "lse", lse, (int64_t)B * H * Nq, "[B, H, Nq]"));
    lunar_cpu_attention_block_backward(F(dqkv), F(dkv), F(dout), F(qkv), F(kv), F(out), F(lse), B, Nq, Nk, H, D);
    return LUNAR_OK;
}

lunar_status lunar_op_attention_backward(lunar_tensor *dqkv, const lunar_tensor *dout, const lunar_tensor *qkv,
                                         const lunar_tensor *out, const lunar_tensor *lse, int H) {
    const char *op = "attention_backward";
    /* all of qkv's dtype (f32, or bf16 under precision = 'bf16') but lse, f32 */
    REAL(qkv);
    R16(op, "qkv", qkv); CHECK(check_t(op, "dqkv", dqkv, qkv->dtype)); CHECK(check_t(op, "dout", dout, qkv->dtype));
    CHECK(check_t(op, "out", out, qkv->dtype)); R(op, "lse", lse);
    int B, N, D;
    CHECK(attn_geom(op, qkv, H, &B, &N, &D));
    CHECK(check_numel(op, "dqkv", dqkv, lunar_tensor_numel(qkv), "the size of qkv"));
    CHECK(check_numel(op, "dout", dout, (int64_t)B * N * H * D, "[B, N, C]"));
    CHECK(check_numel(op, "out", out, (int64_t)B * N * H * D, "[B, N, C]"));
    CHECK(check_numel(op, "lse", lse, (int64_t)B * H * N, "[B, H, N]"));
    BACKEND_R(op, qkv, dqkv, dout, out, lse);
    if (IS16(qkv)) be->attention_backward_bf16(H(dqkv), H(dout), H(qkv), H(out), F(lse), B, N, H, D);
    else KERNEL(attention_backward, V(dqkv), V(dout), V(qkv), V(out), V(lse), B, N, H, D);
    DONE();
}

/* embed_tokens' geometry: x [B, L, C] (with_cls 0), or dout [B, L+1, C] (with_cls 1, L+1 >= 1). */
static int embed_geom(const char *op, const char *name, const lunar_tensor *t, int with_cls) {
    if (t->ndim == 3 && t->shape[1] >= with_cls) return LUNAR_OK;
    char s[128];
    return lunar_error(LUNAR_ERR_SHAPE, "%s: %s %s must be %s", op, name, lunar_shape_str(t, s, sizeof s),
                       with_cls ? "[B, L+1, C]" : "[B, L, C]");
}

lunar_status lunar_op_embed_tokens_forward(lunar_tensor *out, const lunar_tensor *x, const lunar_tensor *cls,
                                           const lunar_tensor *pos) {
    const char *op = "embed_tokens";
    REAL(x);
    R(op, "out", out); R(op, "x", x); R(op, "cls", cls); R(op, "pos", pos);
    CHECK(embed_geom(op, "x", x, 0));
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    CHECK(check_numel(op, "cls_token", cls, C, "C"));
    if (lunar_tensor_numel(pos) != (L + 1) * C)
        return shape_err(op, "patches", x, "pos_embed", pos, "do not fit (pos_embed must be [1, L+1, C])");
    CHECK(check_numel(op, "out", out, B * (L + 1) * C, "[B, L+1, C]"));
    BACKEND_R(op, x, out, cls, pos);
    KERNEL(embed_tokens_forward, V(out), V(x), V(cls), V(pos), (int)B, (int)L, (int)C);
    DONE();
}

lunar_status lunar_op_embed_tokens_backward(lunar_tensor *dx, lunar_tensor *dcls, lunar_tensor *dpos,
                                            const lunar_tensor *dout) {
    const char *op = "embed_tokens_backward";
    REAL(dout);
    R_OPT(op, "dx", dx); R(op, "dcls", dcls); R(op, "dpos", dpos); R(op, "dout", dout);
    CHECK(embed_geom(op, "dout", dout, 1));
    int64_t B = dout->shape[0], L = dout->shape[1] - 1, C = dout->shape[2];
    if (dx) CHECK(check_numel(op, "dx", dx, B * L * C, "[B, L, C]"));
    CHECK(check_numel(op, "dcls", dcls, C, "C"));
    CHECK(check_numel(op, "dpos", dpos, (L + 1) * C, "[L+1, C]"));
    BACKEND_R(op, dout, dx, dcls, dpos);
    KERNEL(embed_tokens_backward, VOPT(dx), V(dcls), V(dpos), V(dout), (int)B, (int)L, (int)C);
    DONE();
}

static int check_p(const char *op, float p) {
    if (!(p >= 0.0f && p < 1.0f)) return lunar_error(LUNAR_ERR_ARG, "%s: probability %g not in [0, 1)", op, p);
    return LUNAR_OK;
}

lunar_status lunar_op_dropout_forward(lunar_tensor *out, const lunar_tensor *inp, float p, uint64_t seed,
                                      uint64_t stream, uint64_t offset) {
    REAL(inp);
    R("dropout", "out", out); R("dropout", "inp", inp); CHECK(check_p("dropout", p));
    CHECK(check_numel("dropout", "out", out, lunar_tensor_numel(inp), "the size of inp"));
    BACKEND_R("dropout", inp, out);
    KERNEL(dropout_forward, V(out), V(inp), (size_t)lunar_tensor_numel(inp), p, seed, stream, offset);
    DONE();
}

lunar_status lunar_op_dropout_backward(lunar_tensor *dinp, const lunar_tensor *dout, float p, uint64_t seed,
                                       uint64_t stream, uint64_t offset) {
    REAL(dout);
    R("dropout_backward", "dinp", dinp); R("dropout_backward", "dout", dout); CHECK(check_p("dropout", p));
    CHECK(check_numel("dropout_backward", "dinp", dinp, lunar_tensor_numel(dout), "the size of dout"));
    BACKEND_R("dropout_backward", dout, dinp);
    KERNEL(dropout_backward, V(dinp), V(dout), (size_t)lunar_tensor_numel(dout), p, seed, stream, offset);
    DONE();
}

lunar_status lunar_op_dropout_rows(lunar_tensor *out, const lunar_tensor *inp, float p, uint64_t seed, uint64_t stream,
                                   uint64_t offset, int64_t row_len, int64_t row_stride) {
    REAL(inp);
    R("dropout", "out", out); R("dropout", "inp", inp); CHECK(check_p("dropout", p));
    int64_t n = lunar_tensor_numel(inp);
    CHECK(check_numel("dropout", "out", out, n, "the size of inp"));
    if (row_len < 1 || n % row_len != 0 || row_stride < row_len)
        return lunar_error(LUNAR_ERR_ARG, "dropout: rows of %lld elements %lld apart do not fit inp of %lld elements "
                           "(row_len >= 1 must divide it, row_stride >= row_len)", (long long)row_len,
                           (long long)row_stride, (long long)n);
    BACKEND_R("dropout", inp, out);
    KERNEL(dropout_rows, V(out), V(inp), (size_t)(n / row_len), (size_t)row_len, p, seed, stream, offset,
           (uint64_t)row_stride);
    DONE();
}

static int ce_geom(const char *op, const lunar_tensor *logits, const lunar_tensor *targets, int *B, int *K) {
    T(op, "logits", logits);
    CHECK(check_t(op, "targets", targets, LUNAR_I32));
    char s[128];
    if (logits->ndim != 2) return lunar_error(LUNAR_ERR_SHAPE, "%s: logits %s must be [B, K]", op, lunar_shape_str(logits, s, sizeof s));
    *B = (int)logits->shape[0]; *K = (int)logits->shape[1];
    CHECK(check_numel(op, "targets", targets, *B, "B = rows of logits"));
    const int32_t *t = lunar_tensor_data(targets);
    int32_t *host = NULL;
    if (lunar_tensor_device(targets) != LUNAR_CPU && *B > 0) {   /* checked on the host */
        host = malloc((size_t)*B * sizeof *host);
        if (!host) return lunar_error(LUNAR_ERR_OOM, "%s: out of memory for %d targets", op, *B);
        lunar_status st = lunar_cuda_memcpy(host, LUNAR_CPU, t, lunar_tensor_device(targets), (size_t)*B * sizeof *host);
        if (st) { free(host); return st; }
        t = host;
    }
    for (int b = 0; b < *B; b++)
        if (t[b] < 0 || t[b] >= *K) {
            int tb = t[b];
            free(host);
            return lunar_error(LUNAR_ERR_ARG, "%s: target %d of row %d is not a class in [0, %d)", op, tb, b, *K);
        }
    free(host);
    return LUNAR_OK;
}

lunar_status lunar_op_cross_entropy_forward(float *loss, lunar_tensor *losses, const lunar_tensor *logits,
                                            const lunar_tensor *targets, float smoothing) {
    const char *op = "cross_entropy";
    int B, K;
    CHECK(ce_geom(op, logits, targets, &B, &K));
    T_OPT(op, "losses", losses);
    if (losses) CHECK(check_numel(op, "losses", losses, B, "B"));
    if (!(smoothing >= 0 && smoothing <= 1)) return lunar_error(LUNAR_ERR_ARG, "%s: label smoothing %g not in [0, 1]", op, smoothing);
    BACKEND(op, logits, targets, losses);
    be->cross_entropy_forward(loss, FOPT(losses), F(logits), lunar_tensor_data(targets), B, K, smoothing);
    DONE();
}

lunar_status lunar_op_cross_entropy_backward(lunar_tensor *dlogits, const lunar_tensor *logits,
                                             const lunar_tensor *targets, float smoothing, float dloss) {
    const char *op = "cross_entropy_backward";
    int B, K;
    CHECK(ce_geom(op, logits, targets, &B, &K));
    T(op, "dlogits", dlogits);
    CHECK(check_numel(op, "dlogits", dlogits, (int64_t)B * K, "[B, K]"));
    BACKEND(op, logits, targets, dlogits);
    be->cross_entropy_backward(F(dlogits), F(logits), lunar_tensor_data(targets), B, K, smoothing, dloss);
    DONE();
}

lunar_status lunar_op_accuracy_count(int64_t *correct, const lunar_tensor *logits, const lunar_tensor *targets) {
    int B, K;
    CHECK(ce_geom("accuracy", logits, targets, &B, &K));
    BACKEND("accuracy", logits, targets);
    *correct = be->accuracy_count(F(logits), lunar_tensor_data(targets), B, K);
    DONE();
}

lunar_status lunar_op_add(lunar_tensor *out, const lunar_tensor *a, const lunar_tensor *b) {
    REAL(a);
    R("add", "out", out); R("add", "a", a); R("add", "b", b);
    int64_t n = lunar_tensor_numel(a);
    if (lunar_tensor_numel(b) != n) return shape_err("add", "a", a, "b", b, "differ in size");
    CHECK(check_numel("add", "out", out, n, "the size of a"));
    BACKEND_R("add", a, out, b);
    KERNEL(add, V(out), V(a), V(b), (size_t)n);
    DONE();
}

lunar_status lunar_op_scale(lunar_tensor *x, float s) {
    REAL(x);
    R("scale", "x", x);
    BACKEND_R("scale", x);
    KERNEL(scale, V(x), (size_t)lunar_tensor_numel(x), s);
    DONE();
}

lunar_status lunar_op_adamw_step(lunar_tensor *param, lunar_tensor *m, lunar_tensor *v, const lunar_tensor *grad,
                                 double lr, double beta1, double beta2, double eps, double weight_decay, int t) {
    const char *op = "adamw";
    T(op, "param", param); T(op, "exp_avg", m); T(op, "exp_avg_sq", v); T(op, "grad", grad);
    int64_t n = lunar_tensor_numel(param);
    CHECK(check_numel(op, "grad", grad, n, "the size of param"));
    CHECK(check_numel(op, "exp_avg", m, n, "the size of param"));
    CHECK(check_numel(op, "exp_avg_sq", v, n, "the size of param"));
    if (t < 1) return lunar_error(LUNAR_ERR_ARG, "%s: step %d must be >= 1", op, t);
    BACKEND(op, param, m, v, grad);
    be->adamw_step(F(param), F(m), F(v), F(grad), (size_t)n, lr, beta1, beta2, eps, weight_decay, t);
    DONE();
}

lunar_status lunar_op_sgd_step(lunar_tensor *param, lunar_tensor *buf, const lunar_tensor *grad, float lr,
                               float momentum, float weight_decay, int nesterov, int first) {
    const char *op = "sgd";
    T(op, "param", param); T(op, "grad", grad); T_OPT(op, "momentum_buffer", buf);
    int64_t n = lunar_tensor_numel(param);
    CHECK(check_numel(op, "grad", grad, n, "the size of param"));
    if (momentum != 0 && !buf) return lunar_error(LUNAR_ERR_ARG, "%s: momentum %g needs a momentum buffer", op, momentum);
    if (buf) CHECK(check_numel(op, "momentum_buffer", buf, n, "the size of param"));
    BACKEND(op, param, grad, buf);
    be->sgd_step(F(param), FOPT(buf), F(grad), (size_t)n, lr, momentum, weight_decay, nesterov, first);
    DONE();
}

lunar_status lunar_op_sum_squares(double *out, const lunar_tensor *x) {
    T("sum_squares", "x", x);
    BACKEND("sum_squares", x);
    *out = be->sum_squares(F(x), (size_t)lunar_tensor_numel(x));
    DONE();
}

// ----------------------------------------------------------------------------
// output shapes: what a caller allocates, from the geometry the ops check

/* t given and not released (the inputs of the shape functions). */
static int check_live(const char *op, const char *arg, const lunar_tensor *t) {
    if (!t) return lunar_error(LUNAR_ERR_ARG, "%s: %s is missing", op, arg);
    if (!t->storage) return lunar_error(LUNAR_ERR_ARG, "%s: %s was released", op, arg);
    return LUNAR_OK;
}

lunar_status lunar_op_linear_out_shape(int *ndim, int64_t *shape, const lunar_tensor *inp,
                                       const lunar_tensor *weight) {
    CHECK(check_live("linear", "inp", inp)); CHECK(check_live("linear", "weight", weight));
    int64_t M, K, N;
    CHECK(linear_geom("linear", inp, weight, &M, &K, &N));
    *ndim = inp->ndim ? inp->ndim : 1;
    for (int d = 0; d < *ndim - 1; d++) shape[d] = inp->shape[d];
    shape[*ndim - 1] = N;
    return LUNAR_OK;
}

lunar_status lunar_op_patchify_out_shape(int64_t shape[3], const lunar_tensor *inp, int P) {
    CHECK(check_live("patchify", "inp", inp));
    int S[3], k; int64_t L, cols;
    CHECK(patch_geom("patchify", inp, P, S, &k, &L, &cols));
    shape[0] = inp->shape[0]; shape[1] = L; shape[2] = cols;
    return LUNAR_OK;
}

int64_t lunar_op_layernorm_rows(const lunar_tensor *inp) {
    int64_t C = LAST(inp);
    return lunar_tensor_numel(inp) / (C ? C : 1);
}

lunar_status lunar_op_attention_out_shapes(int64_t out[3], int64_t lse[3], const lunar_tensor *qkv, int H) {
    CHECK(check_live("attention", "qkv", qkv));
    int B, N, D;
    CHECK(attn_geom("attention", qkv, H, &B, &N, &D));
    out[0] = B; out[1] = N; out[2] = (int64_t)H * D;
    lse[0] = B; lse[1] = H; lse[2] = N;
    return LUNAR_OK;
}

lunar_status lunar_op_embed_tokens_out_shape(int64_t shape[3], const lunar_tensor *x) {
    CHECK(check_live("embed_tokens", "x", x));
    CHECK(embed_geom("embed_tokens", "x", x, 0));
    shape[0] = x->shape[0]; shape[1] = x->shape[1] + 1; shape[2] = x->shape[2];
    return LUNAR_OK;
}

lunar_status lunar_op_embed_tokens_dx_shape(int64_t shape[3], const lunar_tensor *dout) {
    CHECK(check_live("embed_tokens_backward", "dout", dout));
    CHECK(embed_geom("embed_tokens_backward", "dout", dout, 1));
    shape[0] = dout->shape[0]; shape[1] = dout->shape[1] - 1; shape[2] = dout->shape[2];
    return LUNAR_OK;
}

// ----------------------------------------------------------------------------
// tensor arithmetic and reductions (lunar.Tensor's + - * / and sum/mean/min/max/norm)

/* The kernel operand for t: t itself when it is contiguous f32, bf16 or f64
 * (*elem its LUNAR_ELEM_*), else a contiguous copy on t's device (*tmp, freed
 * by the caller): same dtype for a strided f32/bf16/f64 view, f64 for the
 * other dtypes (exact for i32, u8, f16, and i64 up to 2^53). */
static int elem_operand(const char *op, const char *arg, const lunar_tensor *t, const void **data, int *elem,
                        lunar_tensor **tmp) {
    *tmp = NULL;
    if (!t->storage) return lunar_error(LUNAR_ERR_ARG, "%s: %s was released", op, arg);
    lunar_dtype dt = t->dtype;
    *elem = dt == LUNAR_F32 ? LUNAR_ELEM_F32 : dt == LUNAR_BF16 ? LUNAR_ELEM_BF16 : LUNAR_ELEM_F64;
    if (!lunar_tensor_is_contiguous(t) || (dt != LUNAR_F32 && dt != LUNAR_BF16 && dt != LUNAR_F64)) {
        *tmp = lunar_tensor_to_dtype(t, *elem == LUNAR_ELEM_F64 ? LUNAR_F64 : dt);
        if (!*tmp) return lunar_last_status();
        t = *tmp;
    }
    *data = lunar_tensor_data(t);
    return LUNAR_OK;
}

static const char *const arith_names[] = {"add", "sub", "mul", "div", "rsqrt"};

lunar_status lunar_op_arith(lunar_tensor *out, const lunar_tensor *a, double sa, const lunar_tensor *b, double sb,
                            int op) {
    if (op < LUNAR_ARITH_ADD || op > LUNAR_ARITH_RSQRT_ADD)
        return lunar_error(LUNAR_ERR_ARG, "arithmetic: unknown op %d (LUNAR_ARITH_ADD .. LUNAR_ARITH_RSQRT_ADD)", op);
    const char *name = arith_names[op];
    if (!a && !b) return lunar_error(LUNAR_ERR_ARG, "arithmetic (%s): a and b are both scalars", name);
    REAL(out);   /* out f32, or f64 (on the CPU: the double reference kernel, exact for f64 operands) */
    R(name, "out", out);
    const lunar_tensor *ref = a ? a : b;
    int same = !(a && b) || a->ndim == b->ndim;   /* the shapes, not just numel, must be equal */
    for (int d = 0; same && a && b && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
    if (!same) {
        char s1[128], s2[128];
        return lunar_error(LUNAR_ERR_SHAPE, "arithmetic: shapes %s and %s differ", lunar_shape_str(a, s1, sizeof s1),
                           lunar_shape_str(b, s2, sizeof s2));
    }
    int64_t n = lunar_tensor_numel(ref);
    CHECK(check_numel(name, "out", out, n, "the size of the tensor operand"));
    const lunar_tensor *devs[] = {ref, a && b ? b : NULL, out};   /* named as in messages */
    CHECK(check_devices(name, a ? "a, b, out" : "b, a, out", devs, 3));
    const lunar_backend *be = lunar_backend_get(lunar_tensor_device(ref));
    if (!be) return lunar_last_status();
    if (rdt_ == LUNAR_F64 && lunar_tensor_device(ref) != LUNAR_CPU)
        return lunar_error(LUNAR_ERR_DTYPE, "arithmetic (%s): an f64 result is computed on the CPU only (the CUDA "
                           "kernel writes f32)", name);
    const void *pa = NULL, *pb = NULL;
    int ea = LUNAR_ELEM_F32, eb = LUNAR_ELEM_F32;
    lunar_tensor *ta = NULL, *tb = NULL;
    int rc = a ? elem_operand(name, "a", a, &pa, &ea, &ta) : LUNAR_OK;
    if (!rc && b) rc = elem_operand(name, "b", b, &pb, &eb, &tb);
    if (!rc) {
        if (rdt_ == LUNAR_F64) lunar_ref_arith_f64(V(out), pa, ea, sa, pb, eb, sb, (size_t)n, op);
        else be->arith(F(out), pa, ea, sa, pb, eb, sb, (size_t)n, op);
        rc = be->check ? be->check() : LUNAR_OK;
    }
    lunar_tensor_free(ta);
    lunar_tensor_free(tb);
    return (lunar_status)rc;
}

/* *out = the kernel reduction kop of x (any dtype, strides, device). */
static lunar_status reduce_op(const char *name, double *out, const lunar_tensor *x, int kop) {
    if (!x) return lunar_error(LUNAR_ERR_ARG, "%s: x is missing", name);
    if (!x->storage) return lunar_error(LUNAR_ERR_ARG, "%s: x was released", name);
    int64_t n = lunar_tensor_numel(x);
    if (n == 0 && (kop == LUNAR_REDUCE_MIN || kop == LUNAR_REDUCE_MAX))
        return lunar_error(LUNAR_ERR_SHAPE, "%s: x is empty (%s has no value for zero elements)", name, name);
    BACKEND(name, x);
    const void *p;
    int elem;
    lunar_tensor *tmp;
    int rc = elem_operand(name, "x", x, &p, &elem, &tmp);
    if (!rc) {
        *out = be->reduce(p, elem, (size_t)n, kop);
        rc = be->check ? be->check() : LUNAR_OK;
    }
    lunar_tensor_free(tmp);
    return (lunar_status)rc;
}

lunar_status lunar_op_sum(double *out, const lunar_tensor *x) { return reduce_op("sum", out, x, LUNAR_REDUCE_SUM); }
lunar_status lunar_op_min(double *out, const lunar_tensor *x) { return reduce_op("min", out, x, LUNAR_REDUCE_MIN); }
lunar_status lunar_op_max(double *out, const lunar_tensor *x) { return reduce_op("max", out, x, LUNAR_REDUCE_MAX); }

lunar_status lunar_op_mean(double *out, const lunar_tensor *x) {
    lunar_status st = reduce_op("mean", out, x, LUNAR_REDUCE_SUM);
    if (!st) *out = lunar_tensor_numel(x) ? *out / (double)lunar_tensor_numel(x) : NAN;
    return st;
}

lunar_status lunar_op_norm(double *out, const lunar_tensor *x) {
    lunar_status st = reduce_op("norm", out, x, LUNAR_REDUCE_SUMSQ);
    if (!st) *out = sqrt(*out);
    return st;
}

// ----------------------------------------------------------------------------
// general scaled dot-product attention (masks, cross-attention; CPU only)

/* The shapes of an sdpa call: q [B, L, E], k and v [B, S, E], E = H*D; bias NULL or [B, H, L, S]. */
static int sdpa_geom(const char *op, const lunar_tensor *q, const lunar_tensor *k, const lunar_tensor *v,
                     const lunar_tensor *bias, int H, int *B, int *L, int *S, int *D) {
    char s1[128];
    if (q->ndim != 3) return lunar_error(LUNAR_ERR_SHAPE, "%s: query %s must be [B, L, E]", op, lunar_shape_str(q, s1, sizeof s1));
    int64_t E = q->shape[2];
    if (H <= 0 || E % H)
        return lunar_error(LUNAR_ERR_SHAPE, "%s: width E = %lld of query %s is not divisible by %d heads", op,
                           (long long)E, lunar_shape_str(q, s1, sizeof s1), H);
    if (k->ndim != 3 || k->shape[0] != q->shape[0] || k->shape[2] != E)
        return shape_err(op, "query", q, "key", k, "do not fit (key must be [B, S, E])");
    if (v->ndim != 3 || v->shape[0] != k->shape[0] || v->shape[1] != k->shape[1] || v->shape[2] != E)
        return shape_err(op, "key", k, "value", v, "differ (value must be [B, S, E] as key)");
    *B = (int)q->shape[0]; *L = (int)q->shape[1]; *S = (int)k->shape[1]; *D = (int)(E / H);
    if (bias && (bias->ndim != 4 || bias->shape[0] != *B || bias->shape[1] != H || bias->shape[2] != *L ||
                 bias->shape[3] != *S))
        return lunar_error(LUNAR_ERR_SHAPE, "%s: mask %s must be [B, H, L, S] = [%d, %d, %d, %d]", op,
                           lunar_shape_str(bias, s1, sizeof s1), *B, H, *L, *S);
    return LUNAR_OK;
}

/* The sdpa kernels of the real dtype rdt on device: CPU only; f64 with the reference kernels only. */
static int sdpa_device(const char *op, int device, lunar_dtype rdt) {
    if (device != LUNAR_CPU)
        return lunar_error(LUNAR_ERR_DEVICE, "%s: masked or cross-attention runs on the CPU only (no CUDA kernel); "
                           "move the tensors with :to('cpu')", op);
    if (rdt == LUNAR_F64 && !ref64_get(op, device)) return lunar_last_status();
    return LUNAR_OK;
}

lunar_status lunar_op_sdpa_forward(lunar_tensor *out, lunar_tensor *lse, const lunar_tensor *q, const lunar_tensor *k,
                                   const lunar_tensor *v, const lunar_tensor *bias, int H) {
    const char *op = "sdpa";
    REAL(q);
    R(op, "query", q); R(op, "key", k); R(op, "value", v); R_OPT(op, "mask", bias); R(op, "out", out); R(op, "lse", lse);
    int B, L, S, D;
    CHECK(sdpa_geom(op, q, k, v, bias, H, &B, &L, &S, &D));
    CHECK(check_numel(op, "out", out, lunar_tensor_numel(q), "the size of query"));
    CHECK(check_numel(op, "lse", lse, (int64_t)B * H * L, "[B, H, L]"));
    const lunar_tensor *ts[] = {q, k, v, bias, out, lse};
    CHECK(check_devices(op, "query, key, value, mask, out, lse", ts, 6));
    CHECK(sdpa_device(op, lunar_tensor_device(q), rdt_));
    if (rdt_ == LUNAR_F64) lunar_ref_sdpa_forward_f64(V(out), V(lse), V(q), V(k), V(v), VOPT(bias), B, L, S, H, D);
    else if (use_ref) lunar_ref_sdpa_forward_f32(V(out), V(lse), V(q), V(k), V(v), VOPT(bias), B, L, S, H, D);
    else lunar_cpu_sdpa_forward(V(out), V(lse), V(q), V(k), V(v), VOPT(bias), B, L, S, H, D);
    return LUNAR_OK;
}

lunar_status lunar_op_sdpa_backward(lunar_tensor *dq, lunar_tensor *dk, lunar_tensor *dv, const lunar_tensor *dout,
                                    const lunar_tensor *q, const lunar_tensor *k, const lunar_tensor *v,
                                    const lunar_tensor *out, const lunar_tensor *lse, const lunar_tensor *bias, int H) {
    const char *op = "sdpa_backward";
    REAL(q);
    R(op, "query", q); R(op, "key", k); R(op, "value", v); R_OPT(op, "mask", bias); R(op, "out", out);
    R(op, "lse", lse); R(op, "dout", dout); R(op, "dquery", dq); R(op, "dkey", dk); R(op, "dvalue", dv);
    int B, L, S, D;
    CHECK(sdpa_geom(op, q, k, v, bias, H, &B, &L, &S, &D));
    int64_t nq = lunar_tensor_numel(q), nk = lunar_tensor_numel(k);
    CHECK(check_numel(op, "out", out, nq, "the size of query"));
    CHECK(check_numel(op, "dout", dout, nq, "the size of query"));
    CHECK(check_numel(op, "lse", lse, (int64_t)B * H * L, "[B, H, L]"));
    CHECK(check_numel(op, "dquery", dq, nq, "the size of query"));
    CHECK(check_numel(op, "dkey", dk, nk, "the size of key"));
    CHECK(check_numel(op, "dvalue", dv, nk, "the size of value"));
    const lunar_tensor *ts[] = {q, k, v, bias, out, lse, dout, dq, dk, dv};
    CHECK(check_devices(op, "query, key, value, mask, out, lse, dout, dquery, dkey, dvalue", ts, 10));
    CHECK(sdpa_device(op, lunar_tensor_device(q), rdt_));
    if (rdt_ == LUNAR_F64)
        lunar_ref_sdpa_backward_f64(V(dq), V(dk), V(dv), V(dout), V(q), V(k), V(v), V(out), V(lse), VOPT(bias),
                                    B, L, S, H, D);
    else if (use_ref)
        lunar_ref_sdpa_backward_f32(V(dq), V(dk), V(dv), V(dout), V(q), V(k), V(v), V(out), V(lse), VOPT(bias),
                                    B, L, S, H, D);
    else
        lunar_cpu_sdpa_backward(V(dq), V(dk), V(dv), V(dout), V(q), V(k), V(v), V(out), V(lse), VOPT(bias),
                                B, L, S, H, D);
    return LUNAR_OK;
}

/* Element i of a mask (u8: nonzero -> -inf, 0 -> 0; f32/f64: the value). */
static double mask_value(const lunar_tensor *m, size_t i) {
    const void *p = lunar_tensor_data(m);
    if (m->dtype == LUNAR_U8) return ((const uint8_t *)p)[i] ? -INFINITY : 0.0;
    if (m->dtype == LUNAR_F64) return ((const double *)p)[i];
    return ((const float *)p)[i];
}

static int check_mask(const char *what, const lunar_tensor *m) {
    if (!m->storage) return lunar_error(LUNAR_ERR_ARG, "sdpa_mask: %s was released", what);
    if (m->dtype != LUNAR_U8 && m->dtype != LUNAR_F32 && m->dtype != LUNAR_F64)
        return lunar_error(LUNAR_ERR_DTYPE, "sdpa_mask: %s has dtype %s; a mask is u8 (PyTorch's bool: nonzero "
                           "= not attended) or f32/f64 (added to the scores)", what, lunar_dtype_name(m->dtype));
    if (lunar_tensor_device(m) != LUNAR_CPU || !lunar_tensor_is_contiguous(m))
        return lunar_error(LUNAR_ERR_ARG, "sdpa_mask: %s must be a contiguous CPU tensor", what);
    return LUNAR_OK;
}

lunar_status lunar_op_sdpa_mask(lunar_tensor *bias, const lunar_tensor *attn_mask, const lunar_tensor *key_padding_mask) {
    const char *op = "sdpa_mask";
    REAL(bias);
    R(op, "bias", bias);
    char s1[128];
    if (bias->ndim != 4 || lunar_tensor_device(bias) != LUNAR_CPU)
        return lunar_error(LUNAR_ERR_SHAPE, "%s: bias %s must be a CPU tensor [B, H, L, S]", op,
                           lunar_shape_str(bias, s1, sizeof s1));
    int64_t B = bias->shape[0], H = bias->shape[1], L = bias->shape[2], S = bias->shape[3];
    int per_head = 0;
    if (attn_mask) {
        CHECK(check_mask("attn_mask", attn_mask));
        int ok2 = attn_mask->ndim == 2 && attn_mask->shape[0] == L && attn_mask->shape[1] == S;
        per_head = attn_mask->ndim == 3 && attn_mask->shape[0] == B * H && attn_mask->shape[1] == L &&
                   attn_mask->shape[2] == S;
        if (!ok2 && !per_head)
            return lunar_error(LUNAR_ERR_SHAPE, "attn_mask %s must be [L, S] = [%lld, %lld] or [B*num_heads, L, S] = "
                               "[%lld, %lld, %lld]", lunar_shape_str(attn_mask, s1, sizeof s1), (long long)L,
                               (long long)S, (long long)(B * H), (long long)L, (long long)S);
    }
    if (key_padding_mask) {
        CHECK(check_mask("key_padding_mask", key_padding_mask));
        if (key_padding_mask->ndim != 2 || key_padding_mask->shape[0] != B || key_padding_mask->shape[1] != S)
            return lunar_error(LUNAR_ERR_SHAPE, "key_padding_mask %s must be [B, S] = [%lld, %lld]",
                               lunar_shape_str(key_padding_mask, s1, sizeof s1), (long long)B, (long long)S);
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < L; i++)
                for (int64_t j = 0; j < S; j++) {
                    double x = 0.0;
                    if (attn_mask) x += mask_value(attn_mask, (size_t)(((per_head ? b * H + h : 0) * L + i) * S + j));
                    if (key_padding_mask) x += mask_value(key_padding_mask, (size_t)(b * S + j));
                    size_t at = (size_t)(((b * H + h) * L + i) * S + j);
                    if (rdt_ == LUNAR_F64) ((double *)V(bias))[at] = x;
                    else ((float *)V(bias))[at] = (float)x;
                }
    return LUNAR_OK;
}

// ----------------------------------------------------------------------------
// bf16 mixed precision (precision = 'bf16')

lunar_status lunar_op_cast_bf16(lunar_tensor *out, const lunar_tensor *x) {
    const char *op = "cast_bf16";
    T16(op, "out", out); T(op, "x", x);
    CHECK(check_numel(op, "out", out, lunar_tensor_numel(x), "the size of x"));
    BACKEND(op, x, out);
    be->cast_bf16(H(out), F(x), (size_t)lunar_tensor_numel(x));
    DONE();
}

lunar_status lunar_op_adamw_step_bf16(lunar_tensor *param, lunar_tensor *param_bf16, lunar_tensor *m,
                                      lunar_tensor *v, const lunar_tensor *grad, double lr, double beta1,
                                      double beta2, double eps, double weight_decay, int t) {
    const char *op = "adamw";
    T(op, "param", param); T16(op, "param_bf16", param_bf16);
    T(op, "exp_avg", m); T(op, "exp_avg_sq", v); T(op, "grad", grad);
    int64_t n = lunar_tensor_numel(param);
    CHECK(check_numel(op, "param_bf16", param_bf16, n, "the size of param"));
    CHECK(check_numel(op, "grad", grad, n, "the size of param"));
    CHECK(check_numel(op, "exp_avg", m, n, "the size of param"));
    CHECK(check_numel(op, "exp_avg_sq", v, n, "the size of param"));
    if (t < 1) return lunar_error(LUNAR_ERR_ARG, "%s: step %d must be >= 1", op, t);
    BACKEND(op, param, param_bf16, m, v, grad);
    be->adamw_step_bf16(F(param), H(param_bf16), F(m), F(v), F(grad), (size_t)n, lr, beta1, beta2, eps,
                        weight_decay, t);
    DONE();
}

lunar_status lunar_op_sgd_step_bf16(lunar_tensor *param, lunar_tensor *param_bf16, lunar_tensor *buf,
                                    const lunar_tensor *grad, float lr, float momentum, float weight_decay,
                                    int nesterov, int first) {
    const char *op = "sgd";
    T(op, "param", param); T16(op, "param_bf16", param_bf16); T(op, "grad", grad);
    T_OPT(op, "momentum_buffer", buf);
    int64_t n = lunar_tensor_numel(param);
    CHECK(check_numel(op, "param_bf16", param_bf16, n, "the size of param"));
    CHECK(check_numel(op, "grad", grad, n, "the size of param"));
    if (momentum != 0 && !buf) return lunar_error(LUNAR_ERR_ARG, "%s: momentum %g needs a momentum buffer", op, momentum);
    if (buf) CHECK(check_numel(op, "momentum_buffer", buf, n, "the size of param"));
    BACKEND(op, param, param_bf16, grad, buf);
    be->sgd_step_bf16(F(param), H(param_bf16), FOPT(buf), F(grad), (size_t)n, lr, momentum, weight_decay,
                      nesterov, first);
    DONE();
}

int lunar_bf16_supported(int device, char *why, size_t n) {
    if (why && n) why[0] = '\0';
    if (device == LUNAR_CPU) {
        const char *off = getenv("LUNAR_NO_CPU_BF16");   /* tests: act as a CPU without it */
        if (off && *off && strcmp(off, "0")) {
            if (why && n)
                snprintf(why, n, "this CPU has no avx512_bf16 (LUNAR_NO_CPU_BF16=%s pretends so), which the bf16 "
                                 "GEMMs on the CPU need", off);
            return 0;
        }
        if (lunar_cpu_bf16_native()) return 1;
        if (!why || !n) return 0;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512bf16"))
            snprintf(why, n, "this build of lunar has no AVX512-BF16 kernels although this CPU has avx512_bf16 "
                             "(rebuild it here: make clean && make, which compiles with -march=native)");
        else
#endif
            snprintf(why, n, "this CPU has no avx512_bf16 (see the flags in /proc/cpuinfo), which the bf16 "
                             "GEMMs on the CPU need (Intel Cooper Lake / Sapphire Rapids or later, AMD Zen 4 "
                             "or later)");
        return 0;
    }
    int major = 0, minor = 0;
    if (lunar_cuda_capability(device, &major, &minor)) {
        if (why && n) snprintf(why, n, "%s", lunar_last_error());
        return 0;
    }
    if (major >= 8) return 1;
    if (why && n)
        snprintf(why, n, "cuda:%d has compute capability %d.%d; bf16 GEMMs (cuBLASLt CUDA_R_16BF) need 8.0 or later",
                 device, major, minor);
    return 0;
}
