// core/ops/cuda/dropout.cu: inverted dropout of kernels.h on CUDA with the
// CPU's Philox4x32-10 stream (core/rng.c), so that a mask drawn on the GPU is
// bitwise the mask drawn on the CPU for the same (seed, stream, offset); and
// the Philox words themselves (lunar_cuda_rng_u32_fill, for that test).
// In place allowed (out == inp) as on the CPU.
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

// out = inp (dropout with p = 0 out of place)
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

// One thread per element of a block [rows, row_len] whose rows are row_stride
// long in the whole tensor: element (r, c) draws word offset + r row_stride + c.
__global__ void dropout_rows_kernel(float *out, const float *inp, size_t n, size_t row_len, uint32_t thr,
                                    double scale, uint64_t seed, uint64_t stream, uint64_t offset,
                                    uint64_t row_stride) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t word = offset + (uint64_t)(i / row_len) * row_stride + (uint64_t)(i % row_len);
        out[i] = (rng_u32(seed, stream, word) >> 8) >= thr ? (float)((double)inp[i] * scale) : 0.0f;
    }
}

}  // namespace

// ---------------------------------------------------------------------------
// the kernels.h entry points

extern "C" void lunar_cuda_dropout_rows(float *out, const float *inp, size_t rows, size_t row_len, float p,
                                        uint64_t seed, uint64_t stream_id, uint64_t offset, uint64_t row_stride) {
    size_t n = rows * row_len;
    if (p == 0.0f || n == 0) { dropout_apply(out, inp, n, p, seed, stream_id, offset); return; }
    double t = ceil((double)p * 16777216.0);   // the threshold and scale of dropout_apply
    uint32_t thr = t <= 0.0 ? 0u : t < 16777216.0 ? (uint32_t)t : 16777216u;
    double scale = p >= 1.0f ? 0.0 : 1.0 / (1.0 - (double)p);
    dropout_rows_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, inp, n, row_len, thr, scale, seed,
                                                                          stream_id, offset, row_stride);
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
