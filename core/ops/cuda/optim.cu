// core/ops/cuda/optim.cu: the optimizer steps (AdamW, SGD with momentum) on CUDA
// (the sum of squares behind the global gradient norm is in elementwise.cu).
//
// The steps follow core/ops/cpu/optim.c operation for operation: the scalars
// that PyTorch computes in double (bias corrections, 1 - lr wd) are computed
// once on the host in double and rounded to float, and every float operation
// uses the _rn intrinsics, which nvcc never fuses into an FMA, so a step on the
// GPU gives the same bits as the CPU's (gcc -std=c11 does not contract either).
// The *_step_bf16 entry points (precision = 'bf16') run the same kernels and
// also store each updated parameter rounded to bf16 (its working copy).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

// param_bf16: nullptr, or the bf16 working copy written from the updated param (precision = 'bf16')
__global__ void adamw_kernel(float *param, uint16_t *param_bf16, float *m, float *v, const float *grad, size_t n,
                             float beta1, float beta2, float eps, float decay, float omb1, float omb2, float step,
                             float bc2s) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = grad[i];
        float p = __fmul_rn(param[i], decay);
        float mi = __fadd_rn(__fmul_rn(beta1, m[i]), __fmul_rn(omb1, g));
        float vi = __fadd_rn(__fmul_rn(beta2, v[i]), __fmul_rn(__fmul_rn(omb2, g), g));
        float den = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2s), eps);
        m[i] = mi;
        v[i] = vi;
        float pn = __fsub_rn(p, __fmul_rn(step, __fdiv_rn(mi, den)));
        param[i] = pn;
        if (param_bf16) param_bf16[i] = f32_to_bf16(pn);
    }
}

__global__ void sgd_kernel(float *param, uint16_t *param_bf16, float *buf, const float *grad, size_t n, float lr,
                           float mu, float wd, int nesterov, int first) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float g = wd != 0.0f ? __fadd_rn(grad[i], __fmul_rn(wd, param[i])) : grad[i];
        float pn;
        if (mu == 0.0f) {
            pn = __fsub_rn(param[i], __fmul_rn(lr, g));
        } else {
            float b = first ? g : __fadd_rn(__fmul_rn(mu, buf[i]), g);
            float d = nesterov ? __fadd_rn(g, __fmul_rn(mu, b)) : b;
            buf[i] = b;
            pn = __fsub_rn(param[i], __fmul_rn(lr, d));
        }
        param[i] = pn;
        if (param_bf16) param_bf16[i] = f32_to_bf16(pn);
    }
}

}  // namespace

// the AdamW launch; param_bf16 may be nullptr
static void adamw_step(float *param, uint16_t *param_bf16, float *m, float *v, const float *grad, size_t n, double lr,
                       double beta1, double beta2, double eps, double weight_decay, int t) {
    if (n == 0) return;
    const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t);   /* from the double betas */
    const float decay = (float)(1.0 - lr * weight_decay);
    const float omb1 = (float)(1.0 - beta1), omb2 = (float)(1.0 - beta2);
    const float step = (float)(lr / bc1), bc2s = (float)sqrt(bc2);
    adamw_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(param, param_bf16, m, v, grad, n, (float)beta1,
                                                                   (float)beta2, (float)eps, decay, omb1, omb2, step,
                                                                   bc2s);
    LAUNCH_CHECK();
}

extern "C" void lunar_cuda_adamw_step(float *param, float *m, float *v, const float *grad, size_t n, double lr,
                                      double beta1, double beta2, double eps, double weight_decay, int t) {
    adamw_step(param, nullptr, m, v, grad, n, lr, beta1, beta2, eps, weight_decay, t);
}

extern "C" void lunar_cuda_adamw_step_bf16(float *param, uint16_t *param_bf16, float *m, float *v, const float *grad,
                                           size_t n, double lr, double beta1, double beta2, double eps,
                                           double weight_decay, int t) {
    adamw_step(param, param_bf16, m, v, grad, n, lr, beta1, beta2, eps, weight_decay, t);
}

extern "C" void lunar_cuda_sgd_step(float *param, float *buf, const float *grad, size_t n, float lr, float momentum,
                                    float weight_decay, int nesterov, int first) {
    if (n == 0) return;
    sgd_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(param, nullptr, buf, grad, n, lr, momentum,
                                                                 weight_decay, nesterov, first);
    LAUNCH_CHECK();
}

extern "C" void lunar_cuda_sgd_step_bf16(float *param, uint16_t *param_bf16, float *buf, const float *grad, size_t n,
                                         float lr, float momentum, float weight_decay, int nesterov, int first) {
    if (n == 0) return;
    sgd_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(param, param_bf16, buf, grad, n, lr, momentum,
                                                                 weight_decay, nesterov, first);
    LAUNCH_CHECK();
}
