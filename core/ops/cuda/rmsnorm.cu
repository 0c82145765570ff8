// core/ops/cuda/rmsnorm.cu: RMSNorm of kernels.h on CUDA (torch.nn.RMSNorm over the
// last dim), the CPU kernel's arithmetic (core/ops/cpu/rmsnorm.c): one thread per row
// for the row sums (double) and its outputs, one thread per column for dweight (rows
// summed in order: deterministic). Simple rather than fast: the models-as-code leaf,
// not a kernel of the built-in ViT.
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 128;

__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp, const float *weight, int M, int C,
                                       float eps) {
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= M) return;
    const float *x = inp + (size_t)m * C;
    double ss = 0.0;
    for (int c = 0; c < C; c++) ss += (double)x[c] * x[c];
    float rs = (float)(1.0 / sqrt(ss / C + (double)eps));
    for (int c = 0; c < C; c++) out[(size_t)m * C + c] = x[c] * rs * weight[c];
    rstd[m] = rs;
}

__global__ void rmsnorm_dinp_kernel(float *dinp, const float *dout, const float *inp, const float *weight,
                                    const float *rstd, int M, int C) {
    int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= M) return;
    const float *x = inp + (size_t)m * C, *dy = dout + (size_t)m * C;
    double gx = 0.0;
    for (int c = 0; c < C; c++) gx += (double)dy[c] * weight[c] * x[c];
    float r = rstd[m], k = (float)(gx / C) * r * r;
    for (int c = 0; c < C; c++) dinp[(size_t)m * C + c] = r * (dy[c] * weight[c] - x[c] * k);
}

__global__ void rmsnorm_dweight_kernel(float *dweight, const float *dout, const float *inp, const float *rstd, int M,
                                       int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double acc = 0.0;
    for (int m = 0; m < M; m++) acc += (double)dout[(size_t)m * C + c] * inp[(size_t)m * C + c] * rstd[m];
    dweight[c] += (float)acc;
}

}  // namespace

// RMSNorm forward (kernels.h): out = inp * rstd * weight, rstd saved.
extern "C" void lunar_cuda_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int M,
                                           int C, float eps) {
    if (M == 0) return;
    rmsnorm_forward_kernel<<<(M + THREADS - 1) / THREADS, THREADS, 0, stream()>>>(out, rstd, inp, weight, M, C, eps);
    LAUNCH_CHECK();
}

// RMSNorm backward (kernels.h): dinp overwritten, dweight accumulated.
extern "C" void lunar_cuda_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                            const float *weight, const float *rstd, int M, int C) {
    if (M == 0 || C == 0) return;
    rmsnorm_dinp_kernel<<<(M + THREADS - 1) / THREADS, THREADS, 0, stream()>>>(dinp, dout, inp, weight, rstd, M, C);
    LAUNCH_CHECK();
    rmsnorm_dweight_kernel<<<(C + THREADS - 1) / THREADS, THREADS, 0, stream()>>>(dweight, dout, inp, rstd, M, C);
    LAUNCH_CHECK();
}
