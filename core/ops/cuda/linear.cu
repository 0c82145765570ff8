// core/ops/cuda/linear.cu: the linear layer on CUDA through cuBLASLt, forward and
// backward (kernels.h), f32 or TF32 (lunar_cuda_set_tf32).
//
// precision = 'bf16' (linear_*_bf16): the same three GEMMs with A and B in
// CUDA_R_16BF and CUBLAS_COMPUTE_32F (fp32 accumulation; TF32 does not apply):
// the weight is the bf16 working copy; an f32 activation or gradient operand
// is first rounded to bf16 into scratch (cast_bf16), a bf16 one is used as it
// is. D is f32, except for a forward with a bf16 output (out_bf16 = 1), where
// it is rounded once from the f32 sum plus bias:
//   - no bias: C and D in CUDA_R_16BF (cuBLASLt rounds the f32 result as it
//     stores it);
//   - a bias: cuBLASLt's bias vector has D's type (cublasLt.h and the cuBLAS
//     docs, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: the exceptions are the integer
//     IMMA and fp8 kernels only), so with a bf16 D the bias would be rounded to
//     bf16 before the sum, then the sum again: two roundings. Instead the GEMM
//     and its f32 bias go to f32 scratch, then cast_bf16 (one rounding);
//   - where cuBLASLt offers no algorithm for the bf16 D, the same f32 scratch
//     and cast (the unfused bias, where needed, added in that same pass).
//
// Row-major [rows, cols] is column-major [cols, rows], so with D = C
// column-major (cuBLASLt's convention):
//   forward  out^T  [N, M]  = W^T' [N, K] . inp^T [K, M]   A = W    (op T), B = inp  (op N), bias epilogue
//   dinp     dinp^T [K, M]  = W^T  [K, N] . dout^T [N, M]  A = W    (op N), B = dout (op N)
//   dweight  dW^T   [K, N] += inp^T [K, M] . dout [M, N]   A = inp  (op N), B = dout (op T), beta = 1
// The bias of the forward is fused as CUBLASLT_EPILOGUE_BIAS (a vector of D's
// rows = N); when cuBLASLt offers no algorithm for it (an unaligned bias), a
// separate kernel adds it. dbias is an own deterministic column sum (per-chunk
// partials in double, then one pass per column) of dout, f32 or bf16,
// accumulated (+=).
//
// cuBLASLt is opened with dlopen at the first GEMM (libcublasLt.so.13): the
// library is ~0.5 GB and linking it would add ~0.1 s to every start of lunar,
// GPU or not. Per device: one handle, a 32 MiB workspace and a cache of the
// heuristic's choice per problem (shape, transposes, epilogue, TF32, the types
// of A/B and of C/D, and the alignment of every pointer, which cuBLASLt's
// kernels depend on: tensors are often views at any offset of a flat
// parameter buffer).
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>

#include "common.cuh"

using namespace lunar_cuda;

namespace {

// ---------------------------------------------------------------------------
// the library, opened once

struct LtApi {
    decltype(&cublasLtCreate) create;
    decltype(&cublasLtMatmulDescCreate) desc_create;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set;
    decltype(&cublasLtMatrixLayoutCreate) layout_create;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
    decltype(&cublasLtMatmulPreferenceCreate) pref_create;
    decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
    decltype(&cublasLtMatmul) matmul;
    decltype(&cublasLtGetStatusString) status_string;
};

LtApi lt;
bool lt_ok;
char lt_error[384];
pthread_once_t lt_once = PTHREAD_ONCE_INIT;

template <typename F> bool load_sym(void *h, const char *name, F *out) {
    *out = (F)dlsym(h, name);
    if (!*out) snprintf(lt_error, sizeof lt_error, "cuBLASLt: symbol %s not found: %s", name, dlerror());
    return *out != nullptr;
}

void lt_load() {
    const char *names[] = {"libcublasLt.so.13", "libcublasLt.so"};
    void *h = nullptr;
    for (const char *n : names)
        if ((h = dlopen(n, RTLD_NOW | RTLD_LOCAL))) break;
    if (!h) {
        const char *e = dlerror();
        snprintf(lt_error, sizeof lt_error, "cuBLASLt not available: dlopen(libcublasLt.so.13): %s", e ? e : "?");
        return;
    }
    lt_ok = load_sym(h, "cublasLtCreate", &lt.create) && load_sym(h, "cublasLtMatmulDescCreate", &lt.desc_create) &&
            load_sym(h, "cublasLtMatmulDescDestroy", &lt.desc_destroy) &&
            load_sym(h, "cublasLtMatmulDescSetAttribute", &lt.desc_set) &&
            load_sym(h, "cublasLtMatrixLayoutCreate", &lt.layout_create) &&
            load_sym(h, "cublasLtMatrixLayoutDestroy", &lt.layout_destroy) &&
            load_sym(h, "cublasLtMatmulPreferenceCreate", &lt.pref_create) &&
            load_sym(h, "cublasLtMatmulPreferenceDestroy", &lt.pref_destroy) &&
            load_sym(h, "cublasLtMatmulPreferenceSetAttribute", &lt.pref_set) &&
            load_sym(h, "cublasLtMatmulAlgoGetHeuristic", &lt.heuristic) &&
            load_sym(h, "cublasLtMatmul", &lt.matmul) && load_sym(h, "cublasLtGetStatusString", &lt.status_string);
}

const char *status_str(cublasStatus_t st) { return lt.status_string ? lt.status_string(st) : "cuBLAS error"; }

// Records a failed cuBLASLt call (file and line of the caller).
#define LT_CHECK(call)                                                                             \
    ([&]() -> bool {                                                                               \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ == CUBLAS_STATUS_SUCCESS) return true;                                             \
        char m_[160];                                                                              \
        snprintf(m_, sizeof m_, "%s (cublasStatus %d)", status_str(st_), (int)st_);                \
        lunar_cuda_record_error(__FILE__, __LINE__, #call, m_);                                    \
        return false;                                                                              \
    }())

// ---------------------------------------------------------------------------
// per-device state

constexpr int MAX_DEVICES = 64;
constexpr size_t WORKSPACE = 32u << 20;
constexpr int CACHE = 256;

struct Key {
    int ta, tb, m, n, k, lda, ldb, ldd, epilogue, tf32, ab_type, d_type;
    unsigned align_a, align_b, align_d, align_bias;
    bool operator==(const Key &o) const { return memcmp(this, &o, sizeof *this) == 0; }
};

struct Entry {
    Key key;
    cublasLtMatmulAlgo_t algo;
    size_t workspace;
    int found;   // 0: cuBLASLt has no algorithm for this problem
};

struct DeviceLt {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int ready = 0, failed = 0;
    cublasLtHandle_t handle = nullptr;
    void *workspace = nullptr;
    Entry cache[CACHE];
    int used = 0, next = 0;
};

DeviceLt devs[MAX_DEVICES];

// The state of the current device, created on first use; nullptr after
// recording why not.
DeviceLt *device_lt(int dev) {
    pthread_once(&lt_once, lt_load);
    if (!lt_ok) {
        lunar_cuda_record_error(__FILE__, __LINE__, "linear", lt_error);
        return nullptr;
    }
    if (dev < 0 || dev >= MAX_DEVICES) {
        lunar_cuda_record_error(__FILE__, __LINE__, "linear", "device ordinal beyond the 64 cuBLASLt supports here");
        return nullptr;
    }
    DeviceLt *d = &devs[dev];
    pthread_mutex_lock(&d->mu);
    if (!d->ready && !d->failed) {
        memset(d->cache, 0, sizeof d->cache);
        if (!LT_CHECK(lt.create(&d->handle))) {
            d->failed = 1;
        } else if (!(d->workspace = lunar_alloc(dev, WORKSPACE))) {   // from the device allocator: its OOM
            // message names the device, the bytes asked for and those in use
            lunar_cuda_record_error(__FILE__, __LINE__, "cuBLASLt workspace", lunar_last_error());
            d->failed = 1;
        } else {
            d->ready = 1;
        }
    }
    bool ok = d->ready;
    pthread_mutex_unlock(&d->mu);
    if (!ok) lunar_cuda_record_error(__FILE__, __LINE__, "linear", "cuBLASLt could not be set up on this device");
    return ok ? d : nullptr;
}

unsigned align_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    unsigned al = 256;
    while (al > 2 && (a % al)) al >>= 1;   // 2: a bf16 view at an odd offset
    return al;
}

// D[m, n] (column-major, ld ldd) = op(A) op(B) + beta D [+ bias[m] per column];
// A and B are f32 (ab = CUDA_R_32F) or bf16 (CUDA_R_16BF); D (and C = D) f32
// or bf16 (dt = CUDA_R_16BF: the f32 result rounded as stored); bias f32, so
// only with an f32 D (cuBLASLt's bias has D's type). Returns 1 when done, 0
// when cuBLASLt has no algorithm and the caller has another way (a bias: it
// adds it itself; a bf16 D: it goes through f32), -1 after recording an error.
int lt_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const void *A, int lda, const void *B,
            int ldb, float beta, void *D, int ldd, const float *bias, cudaDataType_t ab = CUDA_R_32F,
            cudaDataType_t dt = CUDA_R_32F) {
    if (bias && dt != CUDA_R_32F) return 0;   // an f32 bias with a bf16 D: not a documented combination
    int dev = device();
    DeviceLt *d = device_lt(dev);
    if (!d) return -1;
    int tf32 = ab == CUDA_R_32F ? lunar_cuda_tf32() : 0;
    cublasLtEpilogue_t epi = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    Key key;
    memset(&key, 0, sizeof key);
    key.ta = (int)ta; key.tb = (int)tb; key.m = m; key.n = n; key.k = k;
    key.lda = lda; key.ldb = ldb; key.ldd = ldd; key.epilogue = (int)epi; key.tf32 = tf32; key.ab_type = (int)ab;
    key.d_type = (int)dt;
    key.align_a = align_of(A); key.align_b = align_of(B); key.align_d = align_of(D);
    key.align_bias = bias ? align_of(bias) : 0;

    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    int result = -1;
    int32_t opa = (int32_t)ta, opb = (int32_t)tb;
    uint32_t epi32 = (uint32_t)epi;
    cublasComputeType_t ct = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    bool ok = LT_CHECK(lt.desc_create(&desc, ct, CUDA_R_32F)) &&
              LT_CHECK(lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa)) &&
              LT_CHECK(lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb)) &&
              LT_CHECK(lt.desc_set(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi32, sizeof epi32));
    if (ok && bias) {
        cudaDataType_t bt = CUDA_R_32F;
        ok = LT_CHECK(lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias)) &&
             LT_CHECK(lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    // stored shapes: A is m x k (op N) or k x m (op T); B is k x n or n x k
    ok = ok && LT_CHECK(lt.layout_create(&la, ab, ta == CUBLAS_OP_N ? m : k, ta == CUBLAS_OP_N ? k : m, lda)) &&
         LT_CHECK(lt.layout_create(&lb, ab, tb == CUBLAS_OP_N ? k : n, tb == CUBLAS_OP_N ? n : k, ldb)) &&
         LT_CHECK(lt.layout_create(&ld, dt, m, n, ldd));
    if (ok) {
        // the heuristic's choice, cached per problem
        Entry e;
        int have = 0;
        pthread_mutex_lock(&d->mu);
        for (int i = 0; i < d->used; i++)
            if (d->cache[i].key == key) { e = d->cache[i]; have = 1; break; }
        pthread_mutex_unlock(&d->mu);
        if (!have) {
            uint64_t ws = WORKSPACE;
            uint32_t aa = key.align_a, ab = key.align_b, ad = key.align_d;
            cublasLtMatmulHeuristicResult_t res[1];
            int nres = 0;
            ok = LT_CHECK(lt.pref_create(&pref)) &&
                 LT_CHECK(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws)) &&
                 LT_CHECK(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof aa)) &&
                 LT_CHECK(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof ab)) &&
                 LT_CHECK(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ad, sizeof ad)) &&
                 LT_CHECK(lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ad, sizeof ad));
            if (ok) {
                cublasStatus_t st = lt.heuristic(d->handle, desc, la, lb, ld, ld, pref, 1, res, &nres);
                memset(&e, 0, sizeof e);
                e.key = key;
                if (st == CUBLAS_STATUS_SUCCESS && nres > 0 && res[0].state == CUBLAS_STATUS_SUCCESS) {
                    e.algo = res[0].algo;
                    e.workspace = res[0].workspaceSize;
                    e.found = 1;
                } else if (st != CUBLAS_STATUS_SUCCESS && st != CUBLAS_STATUS_NOT_SUPPORTED) {
                    ok = LT_CHECK(st);
                }
                if (ok) {
                    pthread_mutex_lock(&d->mu);
                    int slot = d->used < CACHE ? d->used++ : (d->next++ % CACHE);
                    d->cache[slot] = e;
                    pthread_mutex_unlock(&d->mu);
                    have = 1;
                }
            }
        }
        if (ok && have) {
            if (!e.found) {
                if (bias || dt != CUDA_R_32F) result = 0;
                else {
                    char m_[200];
                    snprintf(m_, sizeof m_, "no cuBLASLt algorithm for m=%d n=%d k=%d (op %d/%d, ld %d/%d/%d)", m, n,
                             k, (int)ta, (int)tb, lda, ldb, ldd);
                    lunar_cuda_record_error(__FILE__, __LINE__, "cublasLtMatmulAlgoGetHeuristic", m_);
                }
            } else {
                float alpha = 1.0f;
                if (LT_CHECK(lt.matmul(d->handle, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &e.algo,
                                       d->workspace, e.workspace, stream())))
                    result = 1;
            }
        }
    }
    if (pref) LT_CHECK(lt.pref_destroy(pref));
    if (la) LT_CHECK(lt.layout_destroy(la));
    if (lb) LT_CHECK(lt.layout_destroy(lb));
    if (ld) LT_CHECK(lt.layout_destroy(ld));
    if (desc) LT_CHECK(lt.desc_destroy(desc));
    return result;
}

// ---------------------------------------------------------------------------
// own kernels: bias add, fill, the column sums of dbias

constexpr int THREADS = 256;

// out[M, N] = src[M, N] + bias[n], or = bias[n] where src is NULL (the K = 0
// case), 0 for a NULL bias; stored as OutT (a bf16 out rounded once). In place
// (out == src) for an f32 out.
template <typename OutT>
__global__ void bias_kernel(OutT *out, const float *src, const float *bias, size_t total, int N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        float b = bias ? bias[i % (size_t)N] : 0.0f;
        store_as(out + i, src ? src[i] + b : b);
    }
}

template <typename OutT> void bias_apply(OutT *out, const float *src, const float *bias, size_t total, int N) {
    bias_kernel<OutT><<<blocks_for(total, THREADS), THREADS, 0, stream()>>>(out, src, bias, total, N);
    LAUNCH_CHECK();
}

// T: float, or uint16_t for a bf16 dout (precision = 'bf16'), widened exactly
template <typename T>
__global__ void colsum_partial_kernel(double *partial, const T *x, int M, int N, int chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y;
    if (c >= N) return;
    int m0 = r * chunk, m1 = min(M, m0 + chunk);
    double s = 0.0;
    for (int m = m0; m < m1; m++) s += (double)load_as(x + (size_t)m * N + c);
    partial[(size_t)r * N + c] = s;
}

__global__ void colsum_final_kernel(float *acc, const double *partial, int R, int N) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= N) return;
    double s = 0.0;
    for (int r = 0; r < R; r++) s += partial[(size_t)r * N + c];
    acc[c] += (float)s;
}

// acc[N] += column sums of x[M, N] (f32 or bf16): fixed chunks, deterministic
template <typename T> void colsum_accumulate(float *acc, const T *x, int M, int N) {
    if (M <= 0 || N <= 0) return;
    int R = (M + 31) / 32;
    if (R > 512) R = 512;
    int chunk = (M + R - 1) / R;
    R = (M + chunk - 1) / chunk;
    Scratch tmp(sizeof(double) * (size_t)R * (size_t)N);
    if (!tmp.ptr) return;
    cudaStream_t s = stream();
    dim3 grid((unsigned)((N + 255) / 256), (unsigned)R);
    colsum_partial_kernel<T><<<grid, 256, 0, s>>>(tmp.as<double>(), x, M, N, chunk);
    if (LAUNCH_CHECK()) return;
    colsum_final_kernel<<<(N + 255) / 256, 256, 0, s>>>(acc, tmp.as<double>(), R, N);
    LAUNCH_CHECK();
}

// out^T [N, M] (f32) = op(A) . op(B) + bias: the fused bias epilogue, or where
// cuBLASLt has no algorithm for it the plain GEMM and bias_kernel. ab: the type
// of A (the weight) and B (the activation).
void forward_f32_out(float *out, const void *W, const void *x, const float *bias, int M, int K, int N,
                     cudaDataType_t ab) {
    int r = lt_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, W, K, x, K, 0.0f, out, N, bias, ab);
    if (r == 0) {   // no fused-bias algorithm: plain GEMM, then the bias
        r = lt_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, W, K, x, K, 0.0f, out, N, nullptr, ab);
        if (r == 1) bias_apply(out, out, bias, (size_t)M * (size_t)N, N);
    }
}

}  // namespace

// Linear forward in f32 (TF32 with lunar_cuda_set_tf32): out[M,N] = inp[M,K] @
// weight[N,K]^T + bias[N] (kernels.h); cuBLASLt with the fused bias epilogue.
extern "C" void lunar_cuda_linear_forward(float *out, const float *inp, const float *weight, const float *bias, int M,
                                          int K, int N) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {   // an empty sum: out = bias (or 0)
        bias_apply(out, (const float *)nullptr, bias, (size_t)M * (size_t)N, N);
        return;
    }
    forward_f32_out(out, weight, inp, bias, M, K, N, CUDA_R_32F);
}

// Linear backward in f32 (kernels.h): dinp overwritten (may be NULL), dweight
// and dbias (may be NULL) accumulated; dbias by the deterministic column sum.
extern "C" void lunar_cuda_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                           const float *inp, const float *weight, int M, int K, int N) {
    if (M <= 0) return;   // nothing flows back; the parameter sums are empty
    cudaStream_t s = stream();
    if (dinp && K > 0) {
        if (N <= 0) CUDA_RECORD(cudaMemsetAsync(dinp, 0, sizeof(float) * (size_t)M * (size_t)K, s));
        else lt_gemm(CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, weight, K, dout, N, 0.0f, dinp, K, nullptr);
    }
    if (K > 0 && N > 0) lt_gemm(CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, inp, K, dout, N, 1.0f, dweight, K, nullptr);
    if (dbias && N > 0) colsum_accumulate(dbias, dout, M, N);
}

// ---------------------------------------------------------------------------
// bf16 (precision = 'bf16')

namespace {

// x as bf16: x itself when it is bf16 already, else rounded into scratch s
// (nullptr after recording an error).
const uint16_t *as_bf16(const void *x, int is_bf16, size_t n, Scratch *&s) {
    if (is_bf16) return (const uint16_t *)x;
    s = new Scratch(n * sizeof(uint16_t));
    if (!s->ptr) return nullptr;
    lunar_cuda_cast_bf16(s->as<uint16_t>(), (const float *)x, n);
    return s->as<uint16_t>();
}

}  // namespace

// Linear forward with a bf16 weight (kernels.h, precision = 'bf16'): inp f32
// (rounded to bf16 into scratch) or bf16; A and B CUDA_R_16BF, f32
// accumulation; out f32 (out_bf16 = 0) or bf16 (out_bf16 = 1: the f32 sum
// plus bias rounded once, as the file header says how).
extern "C" void lunar_cuda_linear_forward_bf16(void *out, int out_bf16, const void *inp, int inp_bf16,
                                               const uint16_t *weight, const float *bias, int M, int K, int N) {
    if (M <= 0 || N <= 0) return;
    size_t total = (size_t)M * (size_t)N;
    if (K <= 0) {   // an empty sum: out = bias (or 0), rounded when bf16
        if (out_bf16) bias_apply((uint16_t *)out, (const float *)nullptr, bias, total, N);
        else bias_apply((float *)out, (const float *)nullptr, bias, total, N);
        return;
    }
    Scratch *si = nullptr;
    const uint16_t *x = as_bf16(inp, inp_bf16, (size_t)M * (size_t)K, si);
    if (x && !out_bf16) {
        forward_f32_out((float *)out, weight, x, bias, M, K, N, CUDA_R_16BF);
    } else if (x) {
        // no bias: cuBLASLt stores D in bf16 itself (0: no algorithm for it)
        int r = bias ? 0
                     : lt_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, weight, K, x, K, 0.0f, out, N, nullptr, CUDA_R_16BF,
                               CUDA_R_16BF);
        if (r == 0) {   // the f32 sum (plus the f32 bias) in scratch, rounded once into out
            Scratch tmp(total * sizeof(float));
            if (tmp.ptr) {
                r = lt_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, weight, K, x, K, 0.0f, tmp.ptr, N, bias, CUDA_R_16BF);
                if (r == 1) {
                    lunar_cuda_cast_bf16((uint16_t *)out, tmp.as<float>(), total);
                } else if (r == 0) {   // no fused-bias algorithm: bias added and rounded in one pass
                    r = lt_gemm(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, weight, K, x, K, 0.0f, tmp.ptr, N, nullptr,
                                CUDA_R_16BF);
                    if (r == 1) bias_apply((uint16_t *)out, tmp.as<float>(), bias, total, N);
                }
            }
        }
    }
    delete si;
}

// Linear backward with a bf16 weight (kernels.h, precision = 'bf16'): dout
// and inp f32 (rounded to bf16 into scratch) or bf16 (used as they are) as
// the GEMMs' CUDA_R_16BF operands; dinp (may be NULL) overwritten, dweight
// accumulated in f32; dbias (may be NULL) += the column sums of dout as given.
extern "C" void lunar_cuda_linear_backward_bf16(float *dinp, float *dweight, float *dbias, const void *dout,
                                                int dout_bf16, const void *inp, int inp_bf16, const uint16_t *weight,
                                                int M, int K, int N) {
    if (M <= 0) return;
    cudaStream_t s = stream();
    if (dinp && K > 0 && N <= 0) CUDA_RECORD(cudaMemsetAsync(dinp, 0, sizeof(float) * (size_t)M * (size_t)K, s));
    if (N > 0 && K > 0) {
        Scratch *sd = nullptr, *si = nullptr;
        const uint16_t *dy = as_bf16(dout, dout_bf16, (size_t)M * (size_t)N, sd);
        if (dy && dinp) lt_gemm(CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, weight, K, dy, N, 0.0f, dinp, K, nullptr, CUDA_R_16BF);
        const uint16_t *x = dy ? as_bf16(inp, inp_bf16, (size_t)M * (size_t)K, si) : nullptr;
        if (x) lt_gemm(CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, x, K, dy, N, 1.0f, dweight, K, nullptr, CUDA_R_16BF);
        delete si;
        delete sd;
    }
    if (dbias && N > 0) {
        if (dout_bf16) colsum_accumulate(dbias, (const uint16_t *)dout, M, N);
        else colsum_accumulate(dbias, (const float *)dout, M, N);
    }
}
