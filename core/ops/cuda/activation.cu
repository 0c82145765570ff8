// core/ops/cuda/activation.cu: the pointwise activations of kernels.h on CUDA
// (ReLU, SiLU, tanh-approximated GELU), forward and backward, f32, grid-stride
// loops; in place allowed as on the CPU (core/ops/cpu/activation.c, the same
// formulas: the tanh GELU through 1 + tanh(u) = 2 / (1 + exp(-2u)), no cancellation
// in its left tail).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;
constexpr float BETA = 0.7978845608028654f;   // sqrt(2/pi)
constexpr float KAPPA = 0.044715f;

__device__ inline float act(float x, int kind) {
    if (kind == LUNAR_ACT_RELU) return x > 0.0f ? x : 0.0f;
    if (kind == LUNAR_ACT_SILU) return x / (1.0f + expf(-x));
    return x / (1.0f + expf(-2.0f * BETA * (x + KAPPA * x * x * x)));   // 0.5 x (1 + tanh u)
}

__device__ inline float act_grad(float x, int kind) {
    if (kind == LUNAR_ACT_RELU) return x > 0.0f ? 1.0f : 0.0f;
    if (kind == LUNAR_ACT_SILU) {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    float p = 2.0f / (1.0f + expf(-2.0f * BETA * (x + KAPPA * x * x * x)));   // 1 + tanh u
    return 0.5f * p + 0.5f * x * (p * (2.0f - p)) * BETA * (1.0f + 3.0f * KAPPA * x * x);
}

__global__ void activation_forward_kernel(float *out, const float *inp, size_t n, int kind) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        out[i] = act(inp[i], kind);
}

__global__ void activation_backward_kernel(float *dinp, const float *dout, const float *inp, size_t n, int kind) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dinp[i] = dout[i] * act_grad(inp[i], kind);
}

}  // namespace

// out = act(inp), kind a LUNAR_ACT_* (kernels.h).
extern "C" void lunar_cuda_activation_forward(float *out, const float *inp, size_t n, int kind) {
    if (n == 0) return;
    activation_forward_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, inp, n, kind);
    LAUNCH_CHECK();
}

// dinp = dout * act'(inp) (kernels.h).
extern "C" void lunar_cuda_activation_backward(float *dinp, const float *dout, const float *inp, size_t n,
                                               int kind) {
    if (n == 0) return;
    activation_backward_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(dinp, dout, inp, n, kind);
    LAUNCH_CHECK();
}
