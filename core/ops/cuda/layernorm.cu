// core/ops/cuda/layernorm.cu: LayerNorm over the last dim on CUDA, forward and
// backward (kernels.h; the formulas of core/ops/ref/layernorm.c, llm.c's
// layernorm_forward/backward).
//
// precision = 'bf16': the forward may store its output as bf16 (f32 arithmetic).
// One warp per row: the mean and the biased variance in two passes (no
// E[x^2] - mean^2 cancellation), rstd = 1/sqrt(var + eps). Backward: dinp per
// row in the same warp; dweight and dbias, sums over all rows, are reduced
// deterministically without atomics: each block sums a fixed chunk of rows per
// column in double into a partial buffer, then one thread per column adds the
// partials in order and accumulates into dweight, dbias (+=, kernels.h).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int WARPS = 8;
constexpr int THREADS = WARPS * 32;

// OutT: float, or uint16_t for a bf16 out (precision = 'bf16'; store_as rounds)
template <typename OutT>
__global__ void ln_forward_kernel(OutT *out, float *mean, float *rstd, const float *inp, const float *weight,
                                  const float *bias, int M, int C, float eps) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (m >= M) return;   // whole warps
    const float *x = inp + (size_t)m * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += x[c];
    float mu = warp_sum(s) / (float)C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float d = x[c] - mu;
        v += d * d;
    }
    float var = warp_sum(v) / (float)C;
    float rs = 1.0f / sqrtf(var + eps);
    OutT *y = out + (size_t)m * C;
    for (int c = lane; c < C; c += 32) store_as(y + c, (x[c] - mu) * rs * weight[c] + bias[c]);
    if (lane == 0) {
        mean[m] = mu;
        rstd[m] = rs;
    }
}

// dinp = rstd (g - mean(g) - xhat mean(g xhat)), g = dout * weight
__global__ void ln_dinp_kernel(float *dinp, const float *dout, const float *inp, const float *weight,
                               const float *mean, const float *rstd, int M, int C) {
    int lane = threadIdx.x & 31;
    int m = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (m >= M) return;
    const float *x = inp + (size_t)m * C, *dy = dout + (size_t)m * C;
    float mu = mean[m], rs = rstd[m];
    float gs = 0.0f, gxs = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - mu) * rs;
        float g = dy[c] * weight[c];
        gs += g;
        gxs += g * xhat;
    }
    float g_mean = warp_sum(gs) / (float)C, gx_mean = warp_sum(gxs) / (float)C;
    float *dx = dinp + (size_t)m * C;
    for (int c = lane; c < C; c += 32) {
        float xhat = (x[c] - mu) * rs;
        float g = dy[c] * weight[c];
        dx[c] = rs * (g - g_mean - xhat * gx_mean);
    }
}

// partial_w[r, c] = sum over rows of chunk r of dout * xhat; partial_b the same of dout
__global__ void ln_param_partial_kernel(double *partial_w, double *partial_b, const float *dout, const float *inp,
                                        const float *mean, const float *rstd, int M, int C, int chunk) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y;
    if (c >= C) return;
    int m0 = r * chunk, m1 = min(M, m0 + chunk);
    double sw = 0.0, sb = 0.0;
    for (int m = m0; m < m1; m++) {
        double dy = (double)dout[(size_t)m * C + c];
        double xhat = ((double)inp[(size_t)m * C + c] - (double)mean[m]) * (double)rstd[m];
        sw += dy * xhat;
        sb += dy;
    }
    partial_w[(size_t)r * C + c] = sw;
    partial_b[(size_t)r * C + c] = sb;
}

__global__ void ln_param_final_kernel(float *dweight, float *dbias, const double *partial_w, const double *partial_b,
                                      int R, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sw = 0.0, sb = 0.0;
    for (int r = 0; r < R; r++) {
        sw += partial_w[(size_t)r * C + c];
        sb += partial_b[(size_t)r * C + c];
    }
    dweight[c] += (float)sw;
    dbias[c] += (float)sb;
}

}  // namespace

extern "C" void lunar_cuda_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                             const float *weight, const float *bias, int M, int C, float eps) {
    if (M <= 0 || C <= 0) return;
    ln_forward_kernel<float><<<(M + WARPS - 1) / WARPS, THREADS, 0, stream()>>>(out, mean, rstd, inp, weight, bias,
                                                                                M, C, eps);
    LAUNCH_CHECK();
}

extern "C" void lunar_cuda_layernorm_forward_bf16(uint16_t *out, float *mean, float *rstd, const float *inp,
                                                  const float *weight, const float *bias, int M, int C, float eps) {
    if (M <= 0 || C <= 0) return;
    ln_forward_kernel<uint16_t><<<(M + WARPS - 1) / WARPS, THREADS, 0, stream()>>>(out, mean, rstd, inp, weight,
                                                                                   bias, M, C, eps);
    LAUNCH_CHECK();
}

extern "C" void lunar_cuda_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                              const float *inp, const float *weight, const float *mean,
                                              const float *rstd, int M, int C) {
    if (M <= 0 || C <= 0) return;
    cudaStream_t s = stream();
    ln_dinp_kernel<<<(M + WARPS - 1) / WARPS, THREADS, 0, s>>>(dinp, dout, inp, weight, mean, rstd, M, C);
    if (LAUNCH_CHECK()) return;
    // chunks of at least 32 rows, at most 512 chunks; the split depends only on M
    int R = (M + 31) / 32;
    if (R > 512) R = 512;
    int chunk = (M + R - 1) / R;
    R = (M + chunk - 1) / chunk;
    Scratch tmp(sizeof(double) * 2 * (size_t)R * (size_t)C);
    if (!tmp.ptr) return;
    double *pw = tmp.as<double>(), *pb = pw + (size_t)R * C;
    dim3 grid((unsigned)((C + 255) / 256), (unsigned)R);
    ln_param_partial_kernel<<<grid, 256, 0, s>>>(pw, pb, dout, inp, mean, rstd, M, C, chunk);
    if (LAUNCH_CHECK()) return;
    ln_param_final_kernel<<<(C + 255) / 256, 256, 0, s>>>(dweight, dbias, pw, pb, R, C);
    LAUNCH_CHECK();
}
