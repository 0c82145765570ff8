// core/ops/cuda/elementwise.cu: the elementwise kernels of kernels.h on CUDA:
// exact GELU forward and backward, the residual add, scale, and inverted
// dropout with the CPU's Philox4x32-10 stream, so that a mask drawn on the GPU
// is bitwise the mask drawn on the CPU for the same (seed, stream, offset).
// Grid-stride loops; in place allowed (out == inp) as on the CPU. precision =
// 'bf16': GELU forward with a bf16 output from an f32 or bf16 input, GELU
// backward from a bf16 input (the same math on the widened value), and the
// f32 -> bf16 cast (cast_bf16).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

// ---------------------------------------------------------------------------
// GELU: out = x Phi(x); dinp = dout (Phi(x) + x phi(x)). normcdff keeps its
// relative accuracy in the left tail (no 1 + erf cancellation).

// OutT: float, or uint16_t for a bf16 out (precision = 'bf16'; store_as rounds);
// InT: float, or uint16_t for a bf16 inp (load_as widens, exactly)
template <typename OutT, typename InT>
__global__ void gelu_forward_kernel(OutT *out, const InT *inp, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = load_as(inp + i);
        store_as(out + i, x * normcdff(x));
    }
}

// out = bf16(x)
__global__ void cast_bf16_kernel(uint16_t *out, const float *x, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = f32_to_bf16(x[i]);
}

// InT: float, or uint16_t for a bf16 inp (the bf16 fc1 output), widened
template <typename InT>
__global__ void gelu_backward_kernel(float *dinp, const float *dout, const InT *inp, size_t n) {
    const float inv_sqrt_2pi = 0.39894228040143268f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = load_as(inp + i);
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] = dout[i] * (normcdff(x) + x * pdf);
    }
}

__global__ void add_kernel(float *out, const float *a, const float *b, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = a[i] + b[i];
}

__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = x[i] * s;
}

__global__ void copy_kernel(float *out, const float *inp, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = inp[i];
}

// ---------------------------------------------------------------------------
// Philox4x32-10, word for word core/rng.c: counter (blk lo, blk hi, stream lo,
// stream hi), key (seed lo, seed hi), 10 rounds with the Weyl key schedule.

__device__ __forceinline__ void philox4x32_10(uint32_t c[4], uint32_t k0, uint32_t k1) {
    uint32_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
#pragma unroll
    for (int r = 0; r < 10; r++) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0;
        uint32_t n1 = lo1;
        uint32_t n2 = hi0 ^ c3 ^ k1;
        uint32_t n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    c[0] = c0; c[1] = c1; c[2] = c2; c[3] = c3;
}

// lunar_rng_u32(seed, stream, index) on the device
__device__ __forceinline__ uint32_t rng_u32(uint64_t seed, uint64_t stream, uint64_t index) {
    uint64_t blk = index >> 2;
    uint32_t c[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    return c[index & 3];
}

// One thread per Philox block (4 words): the words 4 blk .. 4 blk + 3 that fall
// in [offset, offset + n). Element kept when (w >> 8) >= thr; kept elements
// are multiplied by `scale` in double and rounded once, as the CPU does.
__global__ void dropout_kernel(float *out, const float *inp, size_t n, uint32_t thr, double scale,
                               uint64_t seed, uint64_t stream, uint64_t offset, uint64_t nblocks) {
    uint64_t first = offset >> 2;
    for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < nblocks;
         t += (uint64_t)gridDim.x * blockDim.x) {
        uint64_t blk = first + t;
        uint32_t w[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
        philox4x32_10(w, (uint32_t)seed, (uint32_t)(seed >> 32));
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint64_t word = 4 * blk + (uint64_t)j;
            if (word < offset || word >= offset + n) continue;
            size_t i = (size_t)(word - offset);
            out[i] = (w[j] >> 8) >= thr ? (float)((double)inp[i] * scale) : 0.0f;
        }
    }
}

void dropout_apply(float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t stream,
                   uint64_t offset) {
    if (n == 0) return;
    cudaStream_t s = lunar_cuda::stream();
    if (p == 0.0f) {
        if (out != inp) {
            copy_kernel<<<blocks_for(n, THREADS), THREADS, 0, s>>>(out, inp, n);
            LAUNCH_CHECK();
        }
        return;
    }
    // the threshold and scale of core/ops/cpu/dropout.c
    double t = ceil((double)p * 16777216.0);
    uint32_t thr = t <= 0.0 ? 0u : t < 16777216.0 ? (uint32_t)t : 16777216u;
    double scale = p >= 1.0f ? 0.0 : 1.0 / (1.0 - (double)p);
    uint64_t nblocks = ((offset + n - 1) >> 2) - (offset >> 2) + 1;
    dropout_kernel<<<blocks_for(nblocks, THREADS), THREADS, 0, s>>>(out, inp, n, thr, scale, seed, stream, offset,
                                                                    nblocks);
    LAUNCH_CHECK();
}

}  // namespace

// ---------------------------------------------------------------------------
// the kernels.h entry points

// Exact GELU, f32 (kernels.h).
extern "C" void lunar_cuda_gelu_forward(float *out, const float *inp, size_t n) {
    if (n == 0) return;
    gelu_forward_kernel<float, float><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, inp, n);
    LAUNCH_CHECK();
}

// Exact GELU with a bf16 out (kernels.h, precision = 'bf16'): inp f32
// (inp_bf16 = 0) or bf16 (1); computed in f32, rounded once as stored.
extern "C" void lunar_cuda_gelu_forward_bf16(uint16_t *out, const void *inp, int inp_bf16, size_t n) {
    if (n == 0) return;
    if (inp_bf16)
        gelu_forward_kernel<uint16_t, uint16_t><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(
            out, (const uint16_t *)inp, n);
    else
        gelu_forward_kernel<uint16_t, float><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(
            out, (const float *)inp, n);
    LAUNCH_CHECK();
}

// out[n] = bf16(x[n]), rounded to nearest even (kernels.h).
extern "C" void lunar_cuda_cast_bf16(uint16_t *out, const float *x, size_t n) {
    if (n == 0) return;
    cast_bf16_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, x, n);
    LAUNCH_CHECK();
}

// GELU backward, f32 (kernels.h): dinp = dout * (Phi(x) + x phi(x)).
extern "C" void lunar_cuda_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (n == 0) return;
    gelu_backward_kernel<float><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(dinp, dout, inp, n);
    LAUNCH_CHECK();
}

// GELU backward from a bf16 inp (kernels.h, precision = 'bf16'): the f32
// backward on the widened input; dout and dinp f32.
extern "C" void lunar_cuda_gelu_backward_bf16(float *dinp, const float *dout, const uint16_t *inp, size_t n) {
    if (n == 0) return;
    gelu_backward_kernel<uint16_t><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(dinp, dout, inp, n);
    LAUNCH_CHECK();
}

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

extern "C" void lunar_cuda_dropout_forward(float *out, const float *inp, size_t n, float p, uint64_t seed,
                                           uint64_t stream_id, uint64_t offset) {
    dropout_apply(out, inp, n, p, seed, stream_id, offset);
}

extern "C" void lunar_cuda_dropout_backward(float *dinp, const float *dout, size_t n, float p, uint64_t seed,
                                            uint64_t stream_id, uint64_t offset) {
    dropout_apply(dinp, dout, n, p, seed, stream_id, offset);
}

// The Philox words on the device, for the test of bitwise equality with
// lunar_rng_u32 (tests/c/test_cuda.c): out[i] = rng_u32(seed, stream, offset + i).
namespace {
__global__ void rng_words_kernel(uint32_t *out, size_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = rng_u32(seed, stream, offset + i);
}
}  // namespace

extern "C" void lunar_cuda_rng_u32_fill(uint32_t *out, size_t n, uint64_t seed, uint64_t stream_id,
                                        uint64_t offset) {
    if (n == 0) return;
    rng_words_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, n, seed, stream_id, offset);
    LAUNCH_CHECK();
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
