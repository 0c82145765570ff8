// core/ops/cuda/reduce.cu: whole-tensor reductions on CUDA (kernels.h reduce):
// sum, sum of squares, min, max of an f32 / bf16 / f64 array, accumulated in
// double (not pairwise or Kahan in f32: the reductions here serve the Lua
// API, not the training step, and FP64 on the device costs nothing next to
// the memory traffic). Deterministic like sum_squares (elementwise.cu): each
// thread folds a fixed grid-stride sequence, blocks combine their threads in a
// fixed butterfly order into per-block partials over a grid that depends only
// on n, then one block combines the partials in order. NaN: min and max let a
// NaN win every comparison (combine), sums propagate it by arithmetic, as
// PyTorch's amin, amax, sum and norm. The sum of squares of f32 data is
// lunar_cuda_sum_squares itself, as on the CPU.
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 512;

__device__ __forceinline__ double identity(int op) {
    return op == LUNAR_REDUCE_MIN ? INFINITY : op == LUNAR_REDUCE_MAX ? -INFINITY : 0.0;
}

// Two partial results of op combined; a NaN on either side wins for min and max.
__device__ __forceinline__ double combine(int op, double a, double b) {
    if (op == LUNAR_REDUCE_MIN) return (a != a || a < b) ? a : b;
    if (op == LUNAR_REDUCE_MAX) return (a != a || a > b) ? a : b;
    return a + b;
}

__device__ __forceinline__ double element(const void *x, int type, size_t i) {
    if (type == LUNAR_ELEM_BF16) return (double)bf16_to_f32(((const uint16_t *)x)[i]);
    if (type == LUNAR_ELEM_F64) return ((const double *)x)[i];
    return (double)((const float *)x)[i];
}

// op over the block (blockDim.x a multiple of 32); the result in thread 0.
__device__ double block_combine(int op, double v, double *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = combine(op, v, __shfl_xor_sync(FULL_MASK, v, o));
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? sh[lane] : identity(op);
        for (int o = 16; o > 0; o >>= 1) v = combine(op, v, __shfl_xor_sync(FULL_MASK, v, o));
    }
    return v;
}

__global__ void reduce_partial_kernel(double *partial, const void *x, int type, size_t n, int op) {
    __shared__ double sh[32];
    double acc = identity(op);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double v = element(x, type, i);
        acc = combine(op, acc, op == LUNAR_REDUCE_SUMSQ ? v * v : v);
    }
    acc = block_combine(op, acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// The partials folded in index order per thread, then over the block.
__global__ void reduce_final_kernel(double *out, const double *partial, int nparts, int op) {
    __shared__ double sh[32];
    double acc = identity(op);
    for (int i = threadIdx.x; i < nparts; i += blockDim.x) acc = combine(op, acc, partial[i]);
    acc = block_combine(op, acc, sh);
    if (threadIdx.x == 0) out[0] = acc;
}

}  // namespace

// NaN when the scratch, a launch or the copy back fails (the sticky error says which).
extern "C" double lunar_cuda_reduce(const void *x, int x_type, size_t n, int op) {
    if (op == LUNAR_REDUCE_SUMSQ && x_type == LUNAR_ELEM_F32) return lunar_cuda_sum_squares((const float *)x, n);
    if (n == 0) return op == LUNAR_REDUCE_MIN ? INFINITY : op == LUNAR_REDUCE_MAX ? -INFINITY : 0.0;
    int nparts = (int)blocks_for(n, THREADS * 4, 1024);
    Scratch tmp(sizeof(double) * (size_t)(nparts + 1));
    if (!tmp.ptr) return NAN;
    double *partial = tmp.as<double>(), *out = partial + nparts;
    cudaStream_t s = stream();
    reduce_partial_kernel<<<nparts, THREADS, 0, s>>>(partial, x, x_type, n, op);
    if (LAUNCH_CHECK()) return NAN;
    reduce_final_kernel<<<1, 1024, 0, s>>>(out, partial, nparts, op);
    if (LAUNCH_CHECK()) return NAN;
    double result = NAN;
    if (to_host(&result, out, sizeof result)) return NAN;
    return result;
}
