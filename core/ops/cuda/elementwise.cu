// core/ops/cuda/elementwise.cu: the elementwise helpers of kernels.h on CUDA:
// the residual add, scale, the f32 -> bf16 cast (cast_bf16, precision = 'bf16'),
// the sum of squares behind the global gradient norm, and strided copies
// between two views on one device (lunar_tensor_copy). Grid-stride loops; in
// place allowed (out == inp) as on the CPU. sum_squares accumulates in double:
// per-block partials over a grid that depends only on n, then one block adds
// them in order (deterministic).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = x[i] * s;
}

// out = bf16(x)
__global__ void cast_bf16_kernel(uint16_t *out, const float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = f32_to_bf16(x[i]);
}

constexpr int SUM_THREADS = 512;

__global__ void sumsq_partial_kernel(double *partial, const float *x, size_t n) {
    __shared__ double sh[32];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double v = (double)x[i];
        s += v * v;
    }
    s = block_sum(s, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double *out, const double *partial, int nparts) {
    __shared__ double sh[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) s += partial[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = s;
}

}  // namespace

// ---------------------------------------------------------------------------
// the kernels.h entry points

extern "C" void lunar_cuda_add(float *out, const float *a, const float *b, size_t n) {
    if (n == 0) return;
    add_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, a, b, n);
    LAUNCH_CHECK();
}

extern "C" void lunar_cuda_scale(float *x, size_t n, float s) {
    if (n == 0) return;
    scale_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(x, n, s);
    LAUNCH_CHECK();
}

// out[n] = bf16(x[n]), rounded to nearest even (kernels.h).
extern "C" void lunar_cuda_cast_bf16(uint16_t *out, const float *x, size_t n) {
    if (n == 0) return;
    cast_bf16_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, x, n);
    LAUNCH_CHECK();
}

// sum_i x_i^2 in double (kernels.h); NaN when the scratch or a launch fails.
extern "C" double lunar_cuda_sum_squares(const float *x, size_t n) {
    if (n == 0) return 0.0;
    int nparts = (int)blocks_for(n, SUM_THREADS * 4, 1024);
    Scratch tmp(sizeof(double) * (size_t)(nparts + 1));
    if (!tmp.ptr) return NAN;
    double *partial = tmp.as<double>(), *out = partial + nparts;
    cudaStream_t s = stream();
    sumsq_partial_kernel<<<nparts, SUM_THREADS, 0, s>>>(partial, x, n);
    if (LAUNCH_CHECK()) return NAN;
    sum_partials_kernel<<<1, 1024, 0, s>>>(out, partial, nparts);
    if (LAUNCH_CHECK()) return NAN;
    double result = NAN;
    if (to_host(&result, out, sizeof result)) return NAN;
    return result;
}

// ---------------------------------------------------------------------------
// Strided copies on one device (lunar_tensor_copy between two views of the
// same device and dtype): one thread per element of the row-major shape.

namespace {

struct Strided {
    int ndim;
    int64_t shape[8], dst[8], src[8];   // strides in elements
};

template <typename T>
__global__ void strided_copy_kernel(T *dst, const T *src, Strided g, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t rest = i;
        int64_t od = 0, os = 0;
        for (int d = g.ndim - 1; d >= 0; d--) {
            int64_t idx = (int64_t)(rest % (size_t)g.shape[d]);
            rest /= (size_t)g.shape[d];
            od += idx * g.dst[d];
            os += idx * g.src[d];
        }
        dst[od] = src[os];
    }
}

template <typename T> void strided_copy(void *dst, const void *src, const Strided &g, size_t n, cudaStream_t s) {
    strided_copy_kernel<T><<<blocks_for(n, THREADS), THREADS, 0, s>>>((T *)dst, (const T *)src, g, n);
}

}  // namespace

extern "C" lunar_status lunar_cuda_copy_strided(int device, void *dst, const int64_t *dst_stride, const void *src,
                                                const int64_t *src_stride, const int64_t *shape, int ndim,
                                                size_t elem_size) {
    if (ndim < 0 || ndim > 8)
        return lunar_error(LUNAR_ERR_ARG, "copy_strided: %d dims (at most 8)", ndim);
    Strided g;
    memset(&g, 0, sizeof g);
    g.ndim = ndim;
    size_t n = 1;
    for (int d = 0; d < ndim; d++) {
        g.shape[d] = shape[d];
        g.dst[d] = dst_stride[d];
        g.src[d] = src_stride[d];
        n *= (size_t)shape[d];
    }
    if (n == 0) return LUNAR_OK;
    lunar_status st = lunar_cuda_set_device(device);
    if (st) return st;
    cudaStream_t s = stream();
    switch (elem_size) {
    case 1: strided_copy<uint8_t>(dst, src, g, n, s); break;
    case 2: strided_copy<uint16_t>(dst, src, g, n, s); break;
    case 4: strided_copy<uint32_t>(dst, src, g, n, s); break;
    case 8: strided_copy<uint64_t>(dst, src, g, n, s); break;
    default: return lunar_error(LUNAR_ERR_ARG, "copy_strided: elements of %zu bytes", elem_size);
    }
    CUDA_TRY(cudaGetLastError());
    return LUNAR_OK;
}
