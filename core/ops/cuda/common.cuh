// core/ops/cuda/common.cuh: what the CUDA kernel files share: the compute
// stream of the current device, launch checking, grid sizes, warp and block
// reductions, device scratch memory from the caching allocator, and copying
// a scalar result back to the host.
//
// Conventions of every kernel file (llm.c's llmc/*.cuh, kept simple):
//  - each kernels.h entry point (extern "C" lunar_cuda_<op>) returns at once
//    when there is nothing to do, so no launch has a zero-sized grid;
//  - every launch is followed by LAUNCH_CHECK() (cudaGetLastError recorded as
//    the sticky CUDA error with file and line);
//  - indices that can pass 2^31 (element counts) are size_t, with grid-stride
//    loops over at most MAX_BLOCKS blocks;
//  - reductions that produce gradients or results are deterministic: fixed
//    per-block partial sums combined in a fixed order by a second pass, never
//    atomics, so the same inputs give the same bits.
#pragma once

#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lunar/alloc.h"
#include "lunar/cuda.h"
#include "lunar/half.h"
#include "lunar/kernels.h"
#include "../../cuda/internal.h"

namespace lunar_cuda {

constexpr int MAX_BLOCKS = 65535;     // grid-stride loops use at most this many blocks
constexpr unsigned FULL_MASK = 0xffffffffu;

// The compute stream of the calling thread's current device (set by the op
// layer through lunar_backend_get, or by lunar_cuda_set_device).
static inline cudaStream_t stream() {
    return (cudaStream_t)lunar_cuda_stream(lunar_cuda_current_device());
}

static inline int device() { return lunar_cuda_current_device(); }

#define LAUNCH_CHECK() CUDA_RECORD(cudaGetLastError())

// Blocks for n items at `threads` per block, capped for grid-stride loops.
static inline unsigned blocks_for(size_t n, int threads, int cap = MAX_BLOCKS) {
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    if (b < 1) b = 1;
    if (b > (size_t)cap) b = (size_t)cap;
    return (unsigned)b;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `shared` holds 32 values. Fixed order: deterministic.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T *shared) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();               // shared may still be read by a previous call
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    T r = lane < nwarps ? shared[lane] : T(0);
    if (warp == 0) r = warp_sum(r);
    if (threadIdx.x == 0) shared[0] = r;
    __syncthreads();
    return shared[0];
}

// Device scratch memory from the caching allocator. Freed while kernels using
// it may still run: the allocator hands blocks out again only to work on the
// same compute stream, which runs after them (lunar/cuda.h).
struct Scratch {
    void *ptr = nullptr;
    size_t nbytes = 0;
    int dev = 0;
    explicit Scratch(size_t n) : nbytes(n), dev(device()) {
        ptr = lunar_alloc(dev, n);
        if (!ptr) lunar_cuda_record_error(__FILE__, __LINE__, "scratch allocation", lunar_last_error());
    }
    ~Scratch() { if (ptr) lunar_free(dev, ptr, nbytes); }
    Scratch(const Scratch &) = delete;
    Scratch &operator=(const Scratch &) = delete;
    template <typename T> T *as() const { return (T *)ptr; }
};

// f32 -> bf16 (precision = 'bf16'): round to nearest even, NaN kept quiet, the
// bits of lunar_f32_to_bf16 (lunar/half.h, shared with the host); and back (exact).
__device__ __forceinline__ uint16_t f32_to_bf16(float x) { return lunar_half_f32_to_bf16(x); }
__device__ __forceinline__ float bf16_to_f32(uint16_t h) { return lunar_half_bf16_to_f32(h); }
// Stores v as the element type of an output: f32, or bf16 rounded.
__device__ __forceinline__ void store_as(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_as(uint16_t *p, float v) { *p = f32_to_bf16(v); }
// Loads an input element as f32: f32, or bf16 widened (exact).
__device__ __forceinline__ float load_as(const float *p) { return *p; }
__device__ __forceinline__ float load_as(const uint16_t *p) { return bf16_to_f32(*p); }

// Copies n bytes from the device to the host and waits (the scalar results).
static inline int to_host(void *dst, const void *src, size_t n) {
    cudaStream_t s = stream();
    if (CUDA_RECORD(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s))) return 1;
    return CUDA_RECORD(cudaStreamSynchronize(s));
}

}  // namespace lunar_cuda
