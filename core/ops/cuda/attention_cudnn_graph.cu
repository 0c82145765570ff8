// core/ops/cuda/attention_cudnn_graph.cu: cuDNN's scaled-dot-product-attention
// graphs for bf16 / f16 inputs, forward and backward, and their execution plans.
// Only the backend (graph) API of cudnn_graph.h is used: tensor, matmul,
// pointwise, reduction and reshape descriptors make an operation graph in the
// pattern cuDNN's runtime fuses into its flash-attention kernels (the lowering
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
// A graph goes through cuDNN's heuristics (mode A); the first engine config
// whose execution plan finalizes is kept with its workspace size
// (attention_cudnn_exec.cu caches it).
#include <stdio.h>

#include "attention_cudnn.cuh"

using namespace lunar_cuda;

namespace lunar_attn {

#if LUNAR_HAVE_CUDNN

void destroy_all(std::vector<cudnnBackendDescriptor_t> &v) {
    // in reverse: operations before the tensors they name
    for (size_t i = v.size(); i-- > 0;) DNN_EXEC(dnn.desc_destroy(v[i]));
    v.clear();
}

namespace {

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

}  // namespace

// ---------------------------------------------------------------------------
// the two graphs

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

#endif  // LUNAR_HAVE_CUDNN

}  // namespace lunar_attn
