// core/ops/cuda/gelu.cu: exact GELU of kernels.h on CUDA, forward and backward.
// Grid-stride loops; in place allowed (out == inp) as on the CPU. precision =
// 'bf16': forward with a bf16 output from an f32 or bf16 input, backward from a
// bf16 input (the same math on the widened value).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

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

// InT: float, or uint16_t for a bf16 inp (the bf16 fc1 output), widened;
// OutT: float, or uint16_t for a bf16 dinp (store_as rounds)
template <typename OutT, typename InT>
__global__ void gelu_backward_kernel(OutT *dinp, const float *dout, const InT *inp, size_t n) {
    const float inv_sqrt_2pi = 0.39894228040143268f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = load_as(inp + i);
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        store_as(dinp + i, dout[i] * (normcdff(x) + x * pdf));
    }
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

// GELU backward, f32 (kernels.h): dinp = dout * (Phi(x) + x phi(x)).
extern "C" void lunar_cuda_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    if (n == 0) return;
    gelu_backward_kernel<float, float><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(dinp, dout, inp, n);
    LAUNCH_CHECK();
}

// GELU backward from a bf16 inp (kernels.h, precision = 'bf16'): the f32
// backward on the widened input; dout f32, dinp f32 or bf16 (dinp_bf16).
extern "C" void lunar_cuda_gelu_backward_bf16(void *dinp, int dinp_bf16, const float *dout, const uint16_t *inp,
                                              size_t n) {
    if (n == 0) return;
    if (dinp_bf16)
        gelu_backward_kernel<uint16_t, uint16_t><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(
            (uint16_t *)dinp, dout, inp, n);
    else
        gelu_backward_kernel<float, uint16_t><<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(
            (float *)dinp, dout, inp, n);
    LAUNCH_CHECK();
}
