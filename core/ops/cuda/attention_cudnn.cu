// core/ops/cuda/attention_cudnn.cu: fused attention through cuDNN's
// scaled-dot-product-attention graph (forward and backward) for bf16 / f16
// inputs, with the own kernel of attention.cu as the fallback, and the record
// of which path ran (core/cuda/attention.h says when each runs); also
// kernels.h's lunar_cuda_attention_{forward,backward}_bf16 (precision =
// 'bf16'), the bf16 calls of the dtype-generic entry points.
//
// cuDNN is opened with dlopen at the first bf16 / f16 attention (libcudnn.so.9,
// or LUNAR_CUDNN_LIBRARY), like cuBLASLt in gemm.cu: the binary starts and runs
// where cuDNN is missing, and says why it is not used. Only the backend
// (graph) API of cudnn_graph.h is used: tensor, matmul, pointwise, reduction
// and reshape descriptors make an operation graph in the pattern cuDNN's
// runtime fuses into its flash-attention kernels (the lowering
// cudnn_frontend's SDPA nodes produce for fp16 / bf16 I/O with f32
// intermediates):
//
//   forward (io = bf16 or f16; virtual tensors f32 unless said)
//     S     = matmul(Q [B,H,N,D], K^T [B,H,D,N])              [B,H,N,N]
//     S     = S * scale                      (scale: a by-value f32 scalar)
//     M     = reduce_max(S) over keys        [B,H,N,1]
//     E     = exp(S - M)
//     Z     = reduce_add(E)                  [B,H,N,1]
//     Stats = M + log(Z)                     [B,H,N,1] f32, non-virtual: lse
//     P     = E / Z                          io type
//     O     = matmul(P, V)                   [B,H,N,D]
//   backward
//     sum   = reduce_add(dO * O) * 1         [B,H,N,1] f32, non-virtual, in the workspace
//     P     = exp(matmul(Q, K^T) * scale - Stats)
//     dV    = matmul(reshape(P)^T, dO)       (P^T by strides, io type)
//     dS    = (matmul(dO, V^T) - sum) * P * scale
//     dK    = matmul(reshape(dS)^T, Q)
//     dQ    = matmul(dS, reshape(K^T))       deterministic variant: straight to dQ
//           | identity(dQacc = matmul(..))   "fast" variant: an f32 accumulator
//                                            in the workspace (cuDNN's atomics)
// Q, K, V, dQ, dK, dV are strided views of the [B, N, 3, H, D] qkv / dqkv
// buffers (no copies), O and dO of [B, N, H, D], Stats of lse [B, H, N].
// The graph goes through cuDNN's heuristics (mode A); the first engine config
// whose execution plan finalizes is kept, with its workspace size, in a cache
// per (device, dtype, B, N, H, D, direction, variant). Refusals are cached too.
//
// Every cuDNN call is checked: while a graph is built a failure becomes the
// reason of the fallback ("file:line: call: status; cuDNN's last error"); at
// execution it is the sticky CUDA error (file and line), as for every kernel.
#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <atomic>
#include <vector>

#if !defined(LUNAR_NO_CUDNN) && __has_include(<cudnn_graph.h>)   // -DLUNAR_NO_CUDNN: a build without it
#include <cudnn_graph.h>
#define LUNAR_HAVE_CUDNN 1
#else
#define LUNAR_HAVE_CUDNN 0
#endif

#include "common.cuh"
#include "../../cuda/attention.h"

using namespace lunar_cuda;

namespace {

// ---------------------------------------------------------------------------
// the mode, the record of the path, the log line

std::atomic<int> g_mode{-2};   // -2: not read yet

int mode_from_env() {
    const char *s = getenv("LUNAR_CUDNN_ATTENTION");
    if (!s || !*s) return LUNAR_CUDNN_ATTN_ON;
    if (!strcmp(s, "0") || !strcasecmp(s, "off") || !strcasecmp(s, "false") || !strcasecmp(s, "no"))
        return LUNAR_CUDNN_ATTN_OFF;
    if (!strcmp(s, "2") || !strcasecmp(s, "fast")) return LUNAR_CUDNN_ATTN_FAST;
    return LUNAR_CUDNN_ATTN_ON;
}

int mode() {
    int m = g_mode.load();
    if (m == -2) {
        m = mode_from_env();
        g_mode.store(m);
    }
    return m;
}

struct PathNote {
    lunar_attn_path path = LUNAR_ATTN_PATH_NONE;
    char reason[768] = "";
};
thread_local PathNote tl_note[2];

pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
int log_on = -1;
uint64_t logged[64];
int nlogged;

uint64_t hash_str(const char *s, uint64_t h) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

const char *dtype_name(int dt) { return dt == LUNAR_BF16 ? "bf16" : dt == LUNAR_F16 ? "f16" : "f32"; }

// Records the path of this call; with LUNAR_ATTENTION_LOG=1, prints it once
// per new (direction, path, dtype, reason).
void note(int backward, lunar_attn_path path, int dtype, int B, int N, int H, int D, const char *fmt, ...) {
    PathNote &p = tl_note[backward ? 1 : 0];
    p.path = path;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p.reason, sizeof p.reason, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    if (log_on < 0) {
        const char *s = getenv("LUNAR_ATTENTION_LOG");
        log_on = s && *s && strcmp(s, "0") != 0;
    }
    if (log_on) {
        uint64_t h = hash_str(p.reason, 1469598103934665603ull ^ (uint64_t)((backward * 4 + (int)path) * 8 + dtype));
        bool seen = false;
        for (int i = 0; i < nlogged && !seen; i++) seen = logged[i] == h;
        if (!seen && nlogged < 64) {   // at most 64 lines in all
            logged[nlogged++] = h;
            fprintf(stderr, "lunar: cuda:%d attention %s (%s, B=%d N=%d H=%d D=%d): %s%s%s%s\n", device(),
                    backward ? "backward" : "forward", dtype_name(dtype), B, N, H, D,
                    lunar_cuda_attention_path_name(path), p.reason[0] ? " (" : "", p.reason, p.reason[0] ? ")" : "");
        }
    }
    pthread_mutex_unlock(&log_mu);
}

#if LUNAR_HAVE_CUDNN

// ---------------------------------------------------------------------------
// the library, opened once

struct DnnApi {
    decltype(&cudnnGetVersion) get_version;
    decltype(&cudnnGetErrorString) error_string;
    decltype(&cudnnGetLastErrorString) last_error;   // optional
    decltype(&cudnnCreate) create;
    decltype(&cudnnSetStream) set_stream;
    decltype(&cudnnBackendCreateDescriptor) desc_create;
    decltype(&cudnnBackendDestroyDescriptor) desc_destroy;
    decltype(&cudnnBackendFinalize) finalize;
    decltype(&cudnnBackendSetAttribute) set;
    decltype(&cudnnBackendGetAttribute) get;
    decltype(&cudnnBackendExecute) execute;
};

DnnApi dnn;
bool dnn_ok;
size_t dnn_version;
char dnn_reason[512];
pthread_once_t dnn_once = PTHREAD_ONCE_INIT;

template <typename F> bool load_sym(void *h, const char *lib, const char *name, F *out, bool required = true) {
    *out = (F)dlsym(h, name);
    if (!*out && required) {
        const char *e = dlerror();
        snprintf(dnn_reason, sizeof dnn_reason, "cuDNN not usable: %s has no symbol %s (%s)", lib, name, e ? e : "?");
    }
    return *out != nullptr || !required;
}

void dnn_load() {
    const char *env = getenv("LUNAR_CUDNN_LIBRARY");
    if (env && !*env) env = nullptr;
#ifdef LUNAR_CUDA_EMU
    // the CPU emulation's streams and memory are not CUDA's: the real libcudnn
    // must never see them
    (void)env;
    snprintf(dnn_reason, sizeof dnn_reason, "cuDNN not available: it is not part of the CPU emulation of tests/cuda_emu");
    return;
#endif
    const char *names[2] = {"libcudnn.so.9", "libcudnn_graph.so.9"};
    int nnames = 2;
    if (env) { names[0] = env; nnames = 1; }
    void *h = nullptr;
    const char *lib = names[0];
    char first_err[300] = "";
    for (int i = 0; i < nnames && !h; i++) {
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) lib = names[i];
        else if (!first_err[0]) {
            const char *e = dlerror();
            snprintf(first_err, sizeof first_err, "%s", e ? e : "?");
        }
    }
    if (!h) {
        snprintf(dnn_reason, sizeof dnn_reason, "cuDNN not available: dlopen(%s): %s", names[0], first_err);
        return;
    }
    bool ok = load_sym(h, lib, "cudnnGetVersion", &dnn.get_version) &&
              load_sym(h, lib, "cudnnGetErrorString", &dnn.error_string) &&
              load_sym(h, lib, "cudnnGetLastErrorString", &dnn.last_error, false) &&
              load_sym(h, lib, "cudnnCreate", &dnn.create) && load_sym(h, lib, "cudnnSetStream", &dnn.set_stream) &&
              load_sym(h, lib, "cudnnBackendCreateDescriptor", &dnn.desc_create) &&
              load_sym(h, lib, "cudnnBackendDestroyDescriptor", &dnn.desc_destroy) &&
              load_sym(h, lib, "cudnnBackendFinalize", &dnn.finalize) &&
              load_sym(h, lib, "cudnnBackendSetAttribute", &dnn.set) &&
              load_sym(h, lib, "cudnnBackendGetAttribute", &dnn.get) &&
              load_sym(h, lib, "cudnnBackendExecute", &dnn.execute);
    if (!ok) return;
    dnn_version = dnn.get_version();
    if (dnn_version < 90000) {
        snprintf(dnn_reason, sizeof dnn_reason,
                 "cuDNN not usable: %s is version %zu.%zu.%zu; the attention graph needs cuDNN 9", lib,
                 dnn_version / 1000, dnn_version / 100 % 10, dnn_version % 100);   // cuDNN 8 numbering
        dnn_version = 0;
        return;
    }
    dnn_ok = true;
}

bool dnn_loaded() {
    pthread_once(&dnn_once, dnn_load);
    return dnn_ok;
}

const char *status_str(cudnnStatus_t st) { return dnn.error_string ? dnn.error_string(st) : "cuDNN error"; }

// "status (code); cuDNN's last error message" of a failed call
void describe(char *buf, size_t n, cudnnStatus_t st) {
    char last[256] = "";
    if (dnn.last_error) dnn.last_error(last, sizeof last);
    snprintf(buf, n, "%s (%d)%s%s", status_str(st), (int)st, last[0] ? "; " : "", last);
}

// An execution-time cuDNN call: a failure is the sticky CUDA error.
bool exec_check(cudnnStatus_t st, const char *file, int line, const char *what) {
    if (st == CUDNN_STATUS_SUCCESS) return true;
    char m[400];
    describe(m, sizeof m, st);
    lunar_cuda_record_error(file, line, what, m);
    return false;
}
#define DNN_EXEC(call) exec_check((call), __FILE__, __LINE__, #call)

// ---------------------------------------------------------------------------
// building a graph: every descriptor made is kept (and destroyed together);
// the first failing call stops the build and is its reason

struct Build {
    std::vector<cudnnBackendDescriptor_t> all;
    std::vector<cudnnBackendDescriptor_t> ops;
    bool ok = true;
    char why[640] = "";

    bool check(cudnnStatus_t st, const char *file, int line, const char *what) {
        if (st == CUDNN_STATUS_SUCCESS) return true;
        if (ok) {
            char m[400];
            describe(m, sizeof m, st);
            snprintf(why, sizeof why, "%s:%d: %s: %s", file, line, what, m);
            ok = false;
        }
        return false;
    }
};

void destroy_all(std::vector<cudnnBackendDescriptor_t> &v) {
    // in reverse: operations before the tensors they name
    for (size_t i = v.size(); i-- > 0;) DNN_EXEC(dnn.desc_destroy(v[i]));
    v.clear();
}

#define BCHECK(b, call, what) ((b).ok && (b).check((call), __FILE__, __LINE__, (what)))
#define SETA(b, d, attr, type, n, ptr) \
    BCHECK(b, dnn.set((d), (attr), (type), (n), (ptr)), "cudnnBackendSetAttribute(" #attr ")")
#define FINALIZE(b, d, what) BCHECK(b, dnn.finalize(d), "cudnnBackendFinalize(" what ")")

cudnnBackendDescriptor_t make(Build &b, cudnnBackendDescriptorType_t type, const char *what) {
    cudnnBackendDescriptor_t d = nullptr;
    if (!BCHECK(b, dnn.desc_create(type, &d), what)) return nullptr;
    b.all.push_back(d);
    return d;
}
#define MAKE(b, type) make((b), (type), "cudnnBackendCreateDescriptor(" #type ")")

struct Shape4 { int64_t dim[4], stride[4]; };

// A tensor descriptor: 4-D, 16-byte aligned (checked before a graph is used).
cudnnBackendDescriptor_t tensor(Build &b, int64_t uid, cudnnDataType_t dt, const Shape4 &s, bool is_virtual,
                                bool by_value = false) {
    cudnnBackendDescriptor_t t = MAKE(b, CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    int64_t align = 16;
    bool v = true;
    SETA(b, t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    SETA(b, t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, s.dim);
    SETA(b, t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, s.stride);
    SETA(b, t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    SETA(b, t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    if (is_virtual) SETA(b, t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v);
    if (by_value) SETA(b, t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &v);
    FINALIZE(b, t, "tensor");
    return t;
}

void matmul(Build &b, cudnnBackendDescriptor_t A, cudnnBackendDescriptor_t B, cudnnBackendDescriptor_t C) {
    cudnnBackendDescriptor_t md = MAKE(b, CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    cudnnDataType_t ct = CUDNN_DATA_FLOAT;
    SETA(b, md, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &ct);
    FINALIZE(b, md, "matmul descriptor");
    cudnnBackendDescriptor_t op = MAKE(b, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    SETA(b, op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &A);
    SETA(b, op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &B);
    SETA(b, op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &C);
    SETA(b, op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &md);
    FINALIZE(b, op, "matmul operation");
    if (b.ok) b.ops.push_back(op);
}

// y = mode(x) or mode(x, bb) (bb NULL for the unary modes), computed in f32
void pointwise(Build &b, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t bb,
               cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t pd = MAKE(b, CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    cudnnDataType_t ct = CUDNN_DATA_FLOAT;
    SETA(b, pd, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    SETA(b, pd, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &ct);
    FINALIZE(b, pd, "pointwise descriptor");
    cudnnBackendDescriptor_t op = MAKE(b, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    float one = 1.0f;
    SETA(b, op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pd);
    SETA(b, op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (bb) SETA(b, op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &bb);
    SETA(b, op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    SETA(b, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one);
    SETA(b, op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one);
    FINALIZE(b, op, "pointwise operation");
    if (b.ok) b.ops.push_back(op);
}

// y[.., 1] = reduce(x) over the last dim, in f32
void reduction(Build &b, cudnnReduceTensorOp_t rop, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd = MAKE(b, CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    cudnnDataType_t ct = CUDNN_DATA_FLOAT;
    SETA(b, rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &rop);
    SETA(b, rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &ct);
    FINALIZE(b, rd, "reduction descriptor");
    cudnnBackendDescriptor_t op = MAKE(b, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    SETA(b, op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SETA(b, op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    SETA(b, op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd);
    FINALIZE(b, op, "reduction operation");
    if (b.ok) b.ops.push_back(op);
}

// y = x seen with other dims / strides (a transpose by strides)
void reshape(Build &b, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = MAKE(b, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    SETA(b, op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    SETA(b, op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    FINALIZE(b, op, "reshape operation");
    if (b.ok) b.ops.push_back(op);
}

// ---------------------------------------------------------------------------
// the two graphs

// tensor ids of the variant pack (virtual tensors: 100 and up)
enum : int64_t {
    UID_Q = 1, UID_K = 2, UID_V = 3, UID_O = 4, UID_STATS = 5, UID_DO = 6, UID_DQ = 7, UID_DK = 8, UID_DV = 9,
    UID_SCALE = 10, UID_ONE = 11, UID_SOFTMAX_SUM = 12, UID_DQ_ACCUM = 13,
};

enum Variant { VAR_FORWARD = 0, VAR_BWD_DETERMINISTIC = 1, VAR_BWD_ACCUM = 2 };

struct Geometry {
    int64_t B, N, H, D;
    // [B,N,3,H,D] seen as [B,H,N,D] (q, k, v, dq, dk, dv) and its transpose [B,H,D,N]
    Shape4 qkv_bhnd() const { int64_t T = 3 * H * D; return {{B, H, N, D}, {N * T, D, T, 1}}; }
    Shape4 qkv_bhdn() const { int64_t T = 3 * H * D; return {{B, H, D, N}, {N * T, D, 1, T}}; }
    // [B,N,H,D] seen as [B,H,N,D] (out, dout)
    Shape4 out_bhnd() const { int64_t C = H * D; return {{B, H, N, D}, {N * C, D, C, 1}}; }
    Shape4 rows() const { return {{B, H, N, 1}, {H * N, N, 1, 1}}; }              // lse, row stats
    Shape4 scores() const { return {{B, H, N, N}, {H * N * N, N * N, N, 1}}; }     // [B,H,Nq,Nk]
    Shape4 scores_t() const { return {{B, H, N, N}, {H * N * N, N * N, 1, N}}; }   // its transpose
    Shape4 packed_bhnd() const { return {{B, H, N, D}, {H * N * D, N * D, D, 1}}; }
    static Shape4 scalar() { return {{1, 1, 1, 1}, {1, 1, 1, 1}}; }
};

void build_forward(Build &b, const Geometry &g, cudnnDataType_t io) {
    const cudnnDataType_t F = CUDNN_DATA_FLOAT;
    int64_t v = 100;
    auto Q = tensor(b, UID_Q, io, g.qkv_bhnd(), false);
    auto KT = tensor(b, UID_K, io, g.qkv_bhdn(), false);
    auto V = tensor(b, UID_V, io, g.qkv_bhnd(), false);
    auto O = tensor(b, UID_O, io, g.out_bhnd(), false);
    auto stats = tensor(b, UID_STATS, F, g.rows(), false);
    auto scale = tensor(b, UID_SCALE, F, Geometry::scalar(), false, true);
    auto S = tensor(b, v++, F, g.scores(), true);
    auto S2 = tensor(b, v++, F, g.scores(), true);
    auto M = tensor(b, v++, F, g.rows(), true);
    auto Sub = tensor(b, v++, F, g.scores(), true);
    auto E = tensor(b, v++, F, g.scores(), true);
    auto Z = tensor(b, v++, F, g.rows(), true);
    auto L = tensor(b, v++, F, g.rows(), true);
    auto P = tensor(b, v++, io, g.scores(), true);   // the second matmul reads it in the I/O type
    matmul(b, Q, KT, S);
    pointwise(b, CUDNN_POINTWISE_MUL, S, scale, S2);
    reduction(b, CUDNN_REDUCE_TENSOR_MAX, S2, M);
    pointwise(b, CUDNN_POINTWISE_SUB, S2, M, Sub);
    pointwise(b, CUDNN_POINTWISE_EXP, Sub, nullptr, E);
    reduction(b, CUDNN_REDUCE_TENSOR_ADD, E, Z);
    pointwise(b, CUDNN_POINTWISE_LOG, Z, nullptr, L);
    pointwise(b, CUDNN_POINTWISE_ADD, M, L, stats);
    pointwise(b, CUDNN_POINTWISE_DIV, E, Z, P);
    matmul(b, P, V, O);
}

void build_backward(Build &b, const Geometry &g, cudnnDataType_t io, bool accum) {
    const cudnnDataType_t F = CUDNN_DATA_FLOAT;
    int64_t v = 100;
    auto Q = tensor(b, UID_Q, io, g.qkv_bhnd(), false);
    auto KT = tensor(b, UID_K, io, g.qkv_bhdn(), false);
    auto VT = tensor(b, UID_V, io, g.qkv_bhdn(), false);
    auto O = tensor(b, UID_O, io, g.out_bhnd(), false);
    auto dO = tensor(b, UID_DO, io, g.out_bhnd(), false);
    auto stats = tensor(b, UID_STATS, F, g.rows(), false);
    auto dQ = tensor(b, UID_DQ, io, g.qkv_bhnd(), false);
    auto dK = tensor(b, UID_DK, io, g.qkv_bhnd(), false);
    auto dV = tensor(b, UID_DV, io, g.qkv_bhnd(), false);
    auto scale = tensor(b, UID_SCALE, F, Geometry::scalar(), false, true);
    auto one = tensor(b, UID_ONE, F, Geometry::scalar(), false, true);
    auto softmax_sum = tensor(b, UID_SOFTMAX_SUM, F, g.rows(), false);   // in the workspace
    // the sum of dO * O per row: its virtual product is laid out as cuDNN's own lowering does
    Shape4 dOO = {{g.B, g.H, g.N, g.D}, {g.H * g.N * g.D, g.N * g.D, g.H * g.D, 1}};
    auto t_doo = tensor(b, v++, F, dOO, true);
    auto t_rowsum = tensor(b, v++, F, g.rows(), true);
    pointwise(b, CUDNN_POINTWISE_MUL, dO, O, t_doo);
    reduction(b, CUDNN_REDUCE_TENSOR_ADD, t_doo, t_rowsum);
    pointwise(b, CUDNN_POINTWISE_MUL, t_rowsum, one, softmax_sum);
    // P = exp(scale q.k - lse) and dV = P^T dO
    auto S = tensor(b, v++, F, g.scores(), true);
    auto S2 = tensor(b, v++, F, g.scores(), true);
    auto S3 = tensor(b, v++, F, g.scores(), true);
    auto P = tensor(b, v++, F, g.scores(), true);
    auto Pt = tensor(b, v++, io, g.scores_t(), true);
    matmul(b, Q, KT, S);
    pointwise(b, CUDNN_POINTWISE_MUL, S, scale, S2);
    pointwise(b, CUDNN_POINTWISE_SUB, S2, stats, S3);
    pointwise(b, CUDNN_POINTWISE_EXP, S3, nullptr, P);
    reshape(b, P, Pt);
    matmul(b, Pt, dO, dV);
    // dS = P (dO.v - sum) scale and dK = dS^T q
    auto dP = tensor(b, v++, F, g.scores(), true);
    auto dP2 = tensor(b, v++, F, g.scores(), true);
    auto dS = tensor(b, v++, F, g.scores(), true);
    auto dS2 = tensor(b, v++, F, g.scores(), true);
    auto dSt = tensor(b, v++, io, g.scores_t(), true);
    matmul(b, dO, VT, dP);
    pointwise(b, CUDNN_POINTWISE_SUB, dP, softmax_sum, dP2);
    pointwise(b, CUDNN_POINTWISE_MUL, dP2, P, dS);
    pointwise(b, CUDNN_POINTWISE_MUL, dS, scale, dS2);
    reshape(b, dS2, dSt);
    matmul(b, dSt, Q, dK);
    // dQ = dS k, with k = K^T transposed back
    auto K = tensor(b, v++, F, g.qkv_bhnd(), true);
    reshape(b, KT, K);
    if (accum) {
        auto dQacc = tensor(b, UID_DQ_ACCUM, F, g.packed_bhnd(), false);   // in the workspace
        matmul(b, dS2, K, dQacc);
        pointwise(b, CUDNN_POINTWISE_IDENTITY, dQacc, nullptr, dQ);
    } else {
        matmul(b, dS2, K, dQ);
    }
}

// The operation graph of b.ops, cuDNN's heuristics (mode A) and the first
// engine configuration whose execution plan finalizes. Returns the plan
// (owned by b) or NULL with b.why.
cudnnBackendDescriptor_t make_plan(Build &b, cudnnHandle_t handle, int64_t *workspace) {
    cudnnBackendDescriptor_t graph = MAKE(b, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    int64_t nops = (int64_t)b.ops.size();
    SETA(b, graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    SETA(b, graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, nops, b.ops.data());
    FINALIZE(b, graph, "operation graph");
    cudnnBackendDescriptor_t heur = MAKE(b, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    SETA(b, heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph);
    SETA(b, heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    FINALIZE(b, heur, "engine heuristics");
    int64_t count = 0;
    BCHECK(b, dnn.get(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr),
           "cudnnBackendGetAttribute(CUDNN_ATTR_ENGINEHEUR_RESULTS, count)");
    if (!b.ok) return nullptr;
    if (count <= 0) {
        snprintf(b.why, sizeof b.why, "%s:%d: cuDNN's heuristics offer no engine for this graph", __FILE__, __LINE__);
        b.ok = false;
        return nullptr;
    }
    if (count > 16) count = 16;
    std::vector<cudnnBackendDescriptor_t> cfgs((size_t)count, nullptr);
    for (auto &c : cfgs) c = MAKE(b, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    int64_t got = 0;
    BCHECK(b, dnn.get(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, cfgs.data()),
           "cudnnBackendGetAttribute(CUDNN_ATTR_ENGINEHEUR_RESULTS)");
    if (!b.ok) return nullptr;
    // try the configurations in the heuristics' order; a refusal is expected
    // for some, so it is kept as the reason only when none builds
    char first_refusal[640] = "";
    for (int64_t i = 0; i < got && i < count; i++) {
        Build attempt;
        cudnnBackendDescriptor_t plan = MAKE(attempt, CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        SETA(attempt, plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
        SETA(attempt, plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
        FINALIZE(attempt, plan, "execution plan");
        int64_t n = 0, ws = 0;
        BCHECK(attempt, dnn.get(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws),
               "cudnnBackendGetAttribute(CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)");
        if (attempt.ok) {
            b.all.insert(b.all.end(), attempt.all.begin(), attempt.all.end());
            *workspace = ws < 0 ? 0 : ws;
            return plan;
        }
        if (!first_refusal[0]) snprintf(first_refusal, sizeof first_refusal, "%s", attempt.why);
        destroy_all(attempt.all);
    }
    snprintf(b.why, sizeof b.why, "no engine of %lld builds a plan; the first: %.560s", (long long)got,
             first_refusal[0] ? first_refusal : "(none offered)");
    b.ok = false;
    return nullptr;
}

// ---------------------------------------------------------------------------
// per device: a handle on the compute stream and the cache of plans

struct Key {
    int dtype, variant;
    int64_t B, N, H, D;
    bool operator==(const Key &o) const {
        return dtype == o.dtype && variant == o.variant && B == o.B && N == o.N && H == o.H && D == o.D;
    }
};

struct Entry {
    Key key;
    cudnnBackendDescriptor_t plan = nullptr;   // NULL: refused, see why
    int64_t workspace = 0;
    char why[640] = "";
    std::vector<cudnnBackendDescriptor_t> keep;   // every descriptor of the graph
};

constexpr int MAX_DEVICES = 64;
constexpr size_t CACHE = 64;

struct DeviceDnn {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;   // the handle, the cache and every execution
    bool tried = false;
    cudnnHandle_t handle = nullptr;
    char why[512] = "";
    std::vector<Entry *> cache;
    size_t next = 0;   // the entry replaced when the cache is full
};

DeviceDnn devs[MAX_DEVICES];

// The device's handle (created on first use, under d->mu), or NULL with d->why.
cudnnHandle_t handle_of(DeviceDnn *d, int dev) {
    if (!d->tried) {
        d->tried = true;
        cudaStream_t s = stream();
        Build b;
        cudnnHandle_t h = nullptr;
        if (!s) snprintf(d->why, sizeof d->why, "cuda:%d has no compute stream: %s", dev, lunar_last_error());
        else if (BCHECK(b, dnn.create(&h), "cudnnCreate") && BCHECK(b, dnn.set_stream(h, s), "cudnnSetStream"))
            d->handle = h;
        else snprintf(d->why, sizeof d->why, "cuda:%d: %.480s", dev, b.why);
    }
    return d->handle;
}

// The cached (or newly built) entry of key; never NULL (a refusal has plan NULL).
Entry *entry_of(DeviceDnn *d, cudnnHandle_t handle, const Key &key) {
    for (Entry *e : d->cache)
        if (e->key == key) return e;
    Entry *e = new Entry;
    e->key = key;
    Build b;
    Geometry g{key.B, key.N, key.H, key.D};
    cudnnDataType_t io = key.dtype == LUNAR_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    if (key.variant == VAR_FORWARD) build_forward(b, g, io);
    else build_backward(b, g, io, key.variant == VAR_BWD_ACCUM);
    if (b.ok) e->plan = make_plan(b, handle, &e->workspace);
    if (!e->plan) {
        snprintf(e->why, sizeof e->why, "cuDNN refused the graph: %.600s", b.why);
        destroy_all(b.all);
    } else {
        e->keep.swap(b.all);
    }
    if (d->cache.size() < CACHE) {
        d->cache.push_back(e);
    } else {   // replace the oldest; nothing else runs it (d->mu is held)
        Entry *old = d->cache[d->next];
        destroy_all(old->keep);
        delete old;
        d->cache[d->next] = e;
        d->next = (d->next + 1) % CACHE;
    }
    return e;
}

size_t round_up(size_t n) { return (n + 255) / 256 * 256; }

// Runs the plan of e with the tensors uids[i] at ptrs[i] and a workspace of
// the plan's size plus `extra` bytes after it, which fill (when given) hands
// out (it returns 1 after recording an error). Sticky error on failure.
void execute(cudnnHandle_t handle, Entry *e, const int64_t *uids, void **ptrs, int n, size_t extra,
             int (*fill)(void *extra_ptr, void **ptrs, void *ctx), void *ctx) {
    size_t plan_ws = round_up((size_t)e->workspace), total = plan_ws + extra;
    Scratch ws(total ? total : 256);
    if (!ws.ptr) return;
    if (fill && fill((char *)ws.ptr + plan_ws, ptrs, ctx)) return;
    cudnnBackendDescriptor_t pack = nullptr;
    if (!DNN_EXEC(dnn.desc_create(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack))) return;
    void *wsp = ws.ptr;
    bool ok = DNN_EXEC(dnn.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids)) &&
              DNN_EXEC(dnn.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs)) &&
              DNN_EXEC(dnn.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &wsp)) &&
              DNN_EXEC(dnn.finalize(pack));
    if (ok) DNN_EXEC(dnn.execute(handle, e->plan, pack));
    DNN_EXEC(dnn.desc_destroy(pack));
}

// The entry to run for this call, with d->mu held (the caller unlocks), or
// NULL with why.
Entry *choose(DeviceDnn **dp, cudnnHandle_t *hp, int variant, int dtype, int B, int N, int H, int D, char *why,
              size_t n) {
    int dev = device();
    if (dev < 0 || dev >= MAX_DEVICES) {
        snprintf(why, n, "cuda:%d: beyond the %d devices cuDNN attention handles", dev, MAX_DEVICES);
        return nullptr;
    }
    DeviceDnn *d = &devs[dev];
    pthread_mutex_lock(&d->mu);
    cudnnHandle_t h = handle_of(d, dev);
    if (!h) {
        snprintf(why, n, "%s", d->why);
        pthread_mutex_unlock(&d->mu);
        return nullptr;
    }
    Key key{dtype, variant, B, N, H, D};
    Entry *e = entry_of(d, h, key);
    if (!e->plan) {
        snprintf(why, n, "%s", e->why);
        pthread_mutex_unlock(&d->mu);
        return nullptr;
    }
    *dp = d;
    *hp = h;
    return e;
}

// the backward's workspace after the plan's: softmax_sum, then (fast variant)
// dQ_accum, zeroed
struct BwdTail { size_t sum_bytes, acc_bytes; };

int fill_bwd(void *extra, void **ptrs, void *ctx) {
    BwdTail *t = (BwdTail *)ctx;
    ptrs[11] = extra;   // UID_SOFTMAX_SUM
    if (!t->acc_bytes) return 0;
    void *acc = (char *)extra + t->sum_bytes;
    ptrs[12] = acc;     // UID_DQ_ACCUM: accumulated into, so zeroed first
    return CUDA_RECORD(cudaMemsetAsync(acc, 0, t->acc_bytes, stream()));
}

// cuDNN runs the call (true; a failure at execution is the sticky error), or
// false with why (nothing queued). The prechecks have passed.
bool cudnn_forward(int dtype, void *out, float *lse, const void *qkv, int B, int N, int H, int D, char *why,
                   size_t nwhy) {
    DeviceDnn *d = nullptr;
    cudnnHandle_t h = nullptr;
    Entry *e = choose(&d, &h, VAR_FORWARD, dtype, B, N, H, D, why, nwhy);
    if (!e) return false;
    size_t es = 2, C = (size_t)H * D;   // bf16 / f16 elements
    float scale = (float)(1.0 / sqrt((double)D));
    const char *q = (const char *)qkv;
    int64_t uids[] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE};
    void *ptrs[] = {(void *)q, (void *)(q + C * es), (void *)(q + 2 * C * es), out, lse, &scale};
    execute(h, e, uids, ptrs, 6, 0, nullptr, nullptr);
    pthread_mutex_unlock(&d->mu);
    return true;
}

bool cudnn_backward(int dtype, int variant, void *dqkv, const void *dout, const void *qkv, const void *out,
                    const float *lse, int B, int N, int H, int D, char *why, size_t nwhy) {
    DeviceDnn *d = nullptr;
    cudnnHandle_t h = nullptr;
    Entry *e = choose(&d, &h, variant, dtype, B, N, H, D, why, nwhy);
    if (!e) return false;
    size_t es = 2, C = (size_t)H * D;
    float scale = (float)(1.0 / sqrt((double)D)), one = 1.0f;
    const char *q = (const char *)qkv;
    char *g = (char *)dqkv;
    BwdTail tail;
    tail.sum_bytes = round_up(sizeof(float) * (size_t)B * H * N);
    tail.acc_bytes = variant == VAR_BWD_ACCUM ? sizeof(float) * (size_t)B * H * N * D : 0;
    int64_t uids[] = {UID_Q,  UID_K,  UID_V,     UID_O,   UID_STATS,       UID_DO,      UID_DQ,
                      UID_DK, UID_DV, UID_SCALE, UID_ONE, UID_SOFTMAX_SUM, UID_DQ_ACCUM};
    void *ptrs[] = {(void *)q,      (void *)(q + C * es), (void *)(q + 2 * C * es), (void *)out,
                    (void *)lse,    (void *)dout,         g,                        g + C * es,
                    g + 2 * C * es, &scale,               &one,                     nullptr,
                    nullptr};
    execute(h, e, uids, ptrs, tail.acc_bytes ? 13 : 12, tail.sum_bytes + tail.acc_bytes, fill_bwd, &tail);
    pthread_mutex_unlock(&d->mu);
    return true;
}

#else  // no cudnn_graph.h at build time: cuDNN is never used

size_t dnn_version;
const char dnn_reason[] = "cuDNN not available: this build found no cudnn_graph.h (the cuDNN 9 headers) when it was "
                          "compiled";
bool dnn_loaded() { return false; }
enum Variant { VAR_FORWARD = 0, VAR_BWD_DETERMINISTIC = 1, VAR_BWD_ACCUM = 2 };

bool cudnn_forward(int, void *, float *, const void *, int, int, int, int, char *why, size_t nwhy) {
    snprintf(why, nwhy, "%s", dnn_reason);
    return false;
}

bool cudnn_backward(int, int, void *, const void *, const void *, const void *, const float *, int, int, int, int,
                    char *why, size_t nwhy) {
    snprintf(why, nwhy, "%s", dnn_reason);
    return false;
}

#endif  // LUNAR_HAVE_CUDNN

// ---------------------------------------------------------------------------
// choosing the path

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// Why cuDNN cannot take this call before any graph is built ("" when it may).
void precheck(char *why, size_t n, int backward, int B, int N, int H, int D, const void *const *ptrs, int nptrs) {
    why[0] = 0;
    int m = mode();
    if (m == LUNAR_CUDNN_ATTN_OFF) {
        snprintf(why, n, "cuDNN attention disabled (LUNAR_CUDNN_ATTENTION=0)");
        return;
    }
    if (!dnn_loaded()) {
        snprintf(why, n, "%s", dnn_reason);
        return;
    }
    if (dnn_version == 91000 || dnn_version == 91001) {
        snprintf(why, n, "cuDNN 9.10.0 and 9.10.1 have known SDPA bugs (loaded: %zu)", dnn_version);
        return;
    }
    if (D % 8 != 0 || D > 256) {
        snprintf(why, n, "head dim D = %d: cuDNN's fused attention takes D %% 8 == 0 and D <= 256", D);
        return;
    }
    if (backward && N == 1) {
        snprintf(why, n, "N = 1: cuDNN's fused attention backward takes N > 1");
        return;
    }
    if (backward && dnn_version <= 91500 && N % 128 != 0) {
        // cuDNN up to 9.15 needs a padding-mask subgraph in backward when the
        // sequence is not a multiple of 128; this graph has none
        snprintf(why, n, "cuDNN %zu.%zu.%zu: backward with N %% 128 != 0 (N = %d) needs cuDNN 9.16 or newer",
                 dnn_version / 10000, dnn_version / 100 % 100, dnn_version % 100, N);
        return;
    }
    for (int i = 0; i < nptrs; i++)
        if (!aligned16(ptrs[i])) {
            snprintf(why, n, "a tensor is not 16-byte aligned");
            return;
        }
}

// ---------------------------------------------------------------------------
// the own kernel on bf16 / f16: f32 copies made on the device

// the conversions of lunar/half.h (the host's bits), by dtype
__device__ __forceinline__ float half_bf16_to_f32(uint16_t h) { return lunar_half_bf16_to_f32(h); }
__device__ __forceinline__ uint16_t half_f32_to_bf16(float x) { return lunar_half_f32_to_bf16(x); }
__device__ __forceinline__ float half_f16_to_f32(uint16_t x) { return lunar_half_f16_to_f32(x); }
__device__ __forceinline__ uint16_t half_f32_to_f16(float x) { return lunar_half_f32_to_f16(x); }

constexpr int CVT_THREADS = 256;

__global__ void to_f32_kernel(float *dst, const uint16_t *src, size_t n, int bf16) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = bf16 ? half_bf16_to_f32(src[i]) : half_f16_to_f32(src[i]);
}

__global__ void from_f32_kernel(uint16_t *dst, const float *src, size_t n, int bf16) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = bf16 ? half_f32_to_bf16(src[i]) : half_f32_to_f16(src[i]);
}

// 0 when queued, 1 after recording an error
int to_f32(float *dst, const void *src, size_t n, int dtype) {
    to_f32_kernel<<<blocks_for(n, CVT_THREADS), CVT_THREADS, 0, stream()>>>(dst, (const uint16_t *)src, n,
                                                                               dtype == LUNAR_BF16);
    return LAUNCH_CHECK();
}

int from_f32(void *dst, const float *src, size_t n, int dtype) {
    from_f32_kernel<<<blocks_for(n, CVT_THREADS), CVT_THREADS, 0, stream()>>>((uint16_t *)dst, src, n,
                                                                                 dtype == LUNAR_BF16);
    return LAUNCH_CHECK();
}

void own_forward_16(int dtype, void *out, float *lse, const void *qkv, int B, int N, int H, int D) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D;
    Scratch q(nq * sizeof(float)), o(no * sizeof(float));
    if (!q.ptr || !o.ptr) return;
    if (to_f32(q.as<float>(), qkv, nq, dtype)) return;
    lunar_cuda_attention_forward_own(o.as<float>(), lse, q.as<float>(), B, N, H, D);
    from_f32(out, o.as<float>(), no, dtype);
}

void own_backward_16(int dtype, void *dqkv, const void *dout, const void *qkv, const void *out, const float *lse,
                     int B, int N, int H, int D) {
    size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D;
    Scratch q(nq * sizeof(float)), dq(nq * sizeof(float)), o(no * sizeof(float)), g(no * sizeof(float));
    if (!q.ptr || !dq.ptr || !o.ptr || !g.ptr) return;
    if (to_f32(q.as<float>(), qkv, nq, dtype) || to_f32(o.as<float>(), out, no, dtype) ||
        to_f32(g.as<float>(), dout, no, dtype))
        return;
    lunar_cuda_attention_backward_own(dq.as<float>(), g.as<float>(), q.as<float>(), o.as<float>(), lse, B, N, H, D);
    from_f32(dqkv, dq.as<float>(), nq, dtype);
}

// the backward's workspace tail: softmax_sum, then (fast variant) dQ_accum, zeroed
bool dtype_ok(lunar_dtype dtype, const char *what) {
    if (dtype == LUNAR_F32 || dtype == LUNAR_BF16 || dtype == LUNAR_F16) return true;
    char m[128];
    snprintf(m, sizeof m, "dtype %d is not one the CUDA attention takes (f32, bf16, f16)", (int)dtype);
    lunar_cuda_record_error(__FILE__, __LINE__, what, m);
    return false;
}

}  // namespace

// ---------------------------------------------------------------------------
// entry points (core/cuda/attention.h)

extern "C" void lunar_cuda_attention_note_f32(int backward, int B, int N, int H, int D) {
    if (mode() == LUNAR_CUDNN_ATTN_OFF)
        note(backward, LUNAR_ATTN_PATH_OWN, LUNAR_F32, B, N, H, D, "cuDNN attention disabled (LUNAR_CUDNN_ATTENTION=0)");
    else
        note(backward, LUNAR_ATTN_PATH_OWN, LUNAR_F32, B, N, H, D,
             "f32 inputs: cuDNN's fused attention takes bf16 or f16");
}

extern "C" void lunar_cuda_attention_forward_dt(lunar_dtype dtype, void *out, float *lse, const void *qkv, int B,
                                                int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    if (!dtype_ok(dtype, "attention")) return;
    if (dtype == LUNAR_F32) {
        lunar_cuda_attention_forward((float *)out, lse, (const float *)qkv, B, N, H, D);
        return;
    }
    char why[768];
    const void *ptrs[] = {out, lse, qkv};
    precheck(why, sizeof why, 0, B, N, H, D, ptrs, 3);
    if (!why[0] && cudnn_forward(dtype, out, lse, qkv, B, N, H, D, why, sizeof why)) {
        note(0, LUNAR_ATTN_PATH_CUDNN, dtype, B, N, H, D, "");
        return;
    }
    own_forward_16(dtype, out, lse, qkv, B, N, H, D);
    note(0, LUNAR_ATTN_PATH_OWN, dtype, B, N, H, D, "%s", why);
}

extern "C" void lunar_cuda_attention_backward_dt(lunar_dtype dtype, void *dqkv, const void *dout, const void *qkv,
                                                 const void *out, const float *lse, int B, int N, int H, int D) {
    if (B <= 0 || N <= 0 || H <= 0 || D <= 0) return;
    if (!dtype_ok(dtype, "attention_backward")) return;
    if (dtype == LUNAR_F32) {
        lunar_cuda_attention_backward((float *)dqkv, (const float *)dout, (const float *)qkv, (const float *)out,
                                      lse, B, N, H, D);
        return;
    }
    char why[768];
    const void *ptrs[] = {dqkv, dout, qkv, out, lse};
    precheck(why, sizeof why, 1, B, N, H, D, ptrs, 5);
    if (!why[0]) {
        int variant = mode() == LUNAR_CUDNN_ATTN_FAST ? VAR_BWD_ACCUM : VAR_BWD_DETERMINISTIC;
        if (cudnn_backward(dtype, variant, dqkv, dout, qkv, out, lse, B, N, H, D, why, sizeof why)) {
            note(1, LUNAR_ATTN_PATH_CUDNN, dtype, B, N, H, D, "");
            return;
        }
        if (variant == VAR_BWD_DETERMINISTIC && !strncmp(why, "cuDNN refused", 13)) {
            size_t k = strlen(why);
            snprintf(why + k, sizeof why - k, " [the deterministic backward graph; LUNAR_CUDNN_ATTENTION=fast "
                                              "tries the one with an f32 dQ accumulator]");
        }
    }
    own_backward_16(dtype, dqkv, dout, qkv, out, lse, B, N, H, D);
    note(1, LUNAR_ATTN_PATH_OWN, dtype, B, N, H, D, "%s", why);
}

// kernels.h's attention of precision = 'bf16' (what Lua's bf16 models reach
// through ops.h): the bf16 entries of the dtype-generic calls above, so cuDNN's
// fused graph where it serves the shape, else the own kernel on f32 copies;
// the path is recorded as for every call (lunar_cuda_attention_last_path).
extern "C" void lunar_cuda_attention_forward_bf16(uint16_t *out, float *lse, const uint16_t *qkv, int B, int N, int H,
                                                  int D) {
    lunar_cuda_attention_forward_dt(LUNAR_BF16, out, lse, qkv, B, N, H, D);
}

// Backward of lunar_cuda_attention_forward_bf16: dqkv bf16 (overwritten) from
// the bf16 dout, qkv, out and the f32 lse of forward (either path's).
extern "C" void lunar_cuda_attention_backward_bf16(uint16_t *dqkv, const uint16_t *dout, const uint16_t *qkv,
                                                   const uint16_t *out, const float *lse, int B, int N, int H, int D) {
    lunar_cuda_attention_backward_dt(LUNAR_BF16, dqkv, dout, qkv, out, lse, B, N, H, D);
}

extern "C" lunar_attn_path lunar_cuda_attention_last_path(int backward, const char **reason) {
    const PathNote &p = tl_note[backward ? 1 : 0];
    if (reason) *reason = p.reason;
    return p.path;
}

extern "C" const char *lunar_cuda_attention_path_name(lunar_attn_path path) {
    switch (path) {
    case LUNAR_ATTN_PATH_OWN: return "own kernel";
    case LUNAR_ATTN_PATH_CUDNN: return "cuDNN";
    default: return "none";
    }
}

extern "C" void lunar_cuda_set_cudnn_attention(int m) {
    if (m < 0) m = mode_from_env();
    if (m > LUNAR_CUDNN_ATTN_FAST) m = LUNAR_CUDNN_ATTN_ON;
    g_mode.store(m);
}

extern "C" int lunar_cuda_cudnn_attention(void) { return mode(); }

extern "C" int lunar_cuda_cudnn_available(void) { return dnn_loaded() ? 1 : 0; }

extern "C" const char *lunar_cuda_cudnn_unavailable_reason(void) { return dnn_loaded() ? "" : dnn_reason; }

extern "C" size_t lunar_cuda_cudnn_version(void) { return dnn_loaded() ? dnn_version : 0; }
