// core/ops/cuda/attention_fallback.cu: the own attention kernel (attention.cu,
// f32) on bf16 / f16 tensors, the path taken where cuDNN's fused graph is not:
// the operands widened to f32 copies on the device, the results rounded back
// with the conversions of lunar/half.h (the host's bits).
#include "attention_cudnn.cuh"

using namespace lunar_cuda;

namespace {

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

}  // namespace

namespace lunar_attn {

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

}  // namespace lunar_attn
