// core/ops/cuda/attention_cudnn.cuh: private to the attention files of
// core/ops/cuda: what the parts of the bf16 / f16 attention
// (core/cuda/attention.h says which path runs when) share. One job per file:
//   attention_path.cu          which path a call takes (LUNAR_CUDNN_ATTENTION,
//                              the prechecks), the record and log of the path,
//                              and the entry points of core/cuda/attention.h
//   attention_cudnn_lib.cu     opening libcudnn with dlopen, its symbols and
//                              version, cuDNN's error strings
//   attention_cudnn_graph.cu   the SDPA operation graphs and their execution
//                              plans (cuDNN's backend API)
//   attention_cudnn_exec.cu    per device: the cuDNN handle, the cache of
//                              plans, running a plan on the tensors of a call
//   attention_fallback.cu      the own kernel (attention.cu) on bf16 / f16
//                              tensors through f32 copies
//
// Every cuDNN call is checked: while a graph is built a failure becomes the
// reason of the fallback ("file:line: call: status; cuDNN's last error"); at
// execution it is the sticky CUDA error (file and line), as for every kernel.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <vector>

#if !defined(LUNAR_NO_CUDNN) && __has_include(<cudnn_graph.h>)   // -DLUNAR_NO_CUDNN: a build without it
#include <cudnn_graph.h>
#define LUNAR_HAVE_CUDNN 1
#else
#define LUNAR_HAVE_CUDNN 0
#endif

#include "common.cuh"
#include "../../cuda/attention.h"

namespace lunar_attn {

// the graph variants (the direction, and the backward's dQ accumulation)
enum Variant { VAR_FORWARD = 0, VAR_BWD_DETERMINISTIC = 1, VAR_BWD_ACCUM = 2 };

// ---- attention_cudnn_lib.cu

extern size_t dnn_version;     // cuDNN's version number (91000 = 9.10.0) once loaded, else 0
extern char dnn_reason[512];   // why cuDNN cannot be used ("" once loaded)
// Opens libcudnn once (thread-safe); true when it is usable.
bool dnn_loaded();

#if LUNAR_HAVE_CUDNN
// the entry points of libcudnn that Lunar calls, from dlsym
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
extern DnnApi dnn;

// "status (code); cuDNN's last error message" of a failed call
void describe(char *buf, size_t n, cudnnStatus_t st);
// An execution-time cuDNN call: a failure is the sticky CUDA error.
bool exec_check(cudnnStatus_t st, const char *file, int line, const char *what);
#define DNN_EXEC(call) exec_check((call), __FILE__, __LINE__, #call)

// ---- attention_cudnn_graph.cu

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

// destroys every descriptor of v, in reverse (operations before the tensors they name)
void destroy_all(std::vector<cudnnBackendDescriptor_t> &v);

#define BCHECK(b, call, what) ((b).ok && (b).check((call), __FILE__, __LINE__, (what)))

enum : int64_t {
    UID_Q = 1, UID_K = 2, UID_V = 3, UID_O = 4, UID_STATS = 5, UID_DO = 6, UID_DQ = 7, UID_DK = 8, UID_DV = 9,
    UID_SCALE = 10, UID_ONE = 11, UID_SOFTMAX_SUM = 12, UID_DQ_ACCUM = 13,
};

struct Shape4 { int64_t dim[4], stride[4]; };

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
// The forward graph (io: CUDNN_DATA_BFLOAT16 or CUDNN_DATA_HALF) into b.ops.
void build_forward(Build &b, const Geometry &g, cudnnDataType_t io);
// The backward graph; accum: dQ through an f32 accumulator (VAR_BWD_ACCUM).
void build_backward(Build &b, const Geometry &g, cudnnDataType_t io, bool accum);
// The operation graph of b.ops, cuDNN's heuristics (mode A) and the first
// engine configuration whose execution plan finalizes. Returns the plan
// (owned by b) or NULL with b.why.
cudnnBackendDescriptor_t make_plan(Build &b, cudnnHandle_t handle, int64_t *workspace);
#endif  // LUNAR_HAVE_CUDNN

// ---- attention_cudnn_exec.cu

// cuDNN runs the call (true; a failure at execution is the sticky error), or
// false with why (nothing queued). The prechecks of attention_path.cu have passed.
bool cudnn_forward(int dtype, void *out, float *lse, const void *qkv, int B, int N, int H, int D, char *why,
                   size_t nwhy);
bool cudnn_backward(int dtype, int variant, void *dqkv, const void *dout, const void *qkv, const void *out,
                    const float *lse, int B, int N, int H, int D, char *why, size_t nwhy);

// ---- attention_fallback.cu

// The own f32 kernel on bf16 / f16 (dtype) tensors: f32 copies converted on
// the device, results rounded back; lse f32. Failures are the sticky error.
void own_forward_16(int dtype, void *out, float *lse, const void *qkv, int B, int N, int H, int D);
void own_backward_16(int dtype, void *dqkv, const void *dout, const void *qkv, const void *out, const float *lse,
                     int B, int N, int H, int D);

}  // namespace lunar_attn
