// core/ops/cuda/embed.cu: the token embedding on CUDA (class token and
// position embedding), forward and backward, with the layouts of kernels.h
// (core/ops/ref/embed.c). One thread per element; the sums over the batch of
// the backward run in a fixed order in double (deterministic, no atomics).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

// out[b, t] = (t == 0 ? cls : x[b, t - 1]) + pos[t]
__global__ void embed_forward_kernel(float *out, const float *x, const float *cls, const float *pos, int B, int L,
                                     int C) {
    size_t total = (size_t)B * (size_t)(L + 1) * (size_t)C;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t c = idx % (size_t)C, t = (idx / (size_t)C) % (size_t)(L + 1), b = idx / ((size_t)C * (size_t)(L + 1));
        float v = t == 0 ? cls[c] : x[(b * (size_t)L + t - 1) * (size_t)C + c];
        out[idx] = v + pos[t * (size_t)C + c];
    }
}

// dx[b, l] = dout[b, 1 + l]
__global__ void embed_dx_kernel(float *dx, const float *dout, int B, int L, int C) {
    size_t total = (size_t)B * (size_t)L * (size_t)C;
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t c = idx % (size_t)C, l = (idx / (size_t)C) % (size_t)L, b = idx / ((size_t)C * (size_t)L);
        dx[idx] = dout[(b * (size_t)(L + 1) + 1 + l) * (size_t)C + c];
    }
}

// dpos[t, c] += sum_b dout[b, t, c]; dcls[c] += the same sum for t = 0
__global__ void embed_dpos_kernel(float *dcls, float *dpos, const float *dout, int B, int L, int C) {
    size_t per = (size_t)(L + 1) * (size_t)C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < per; i += (size_t)gridDim.x * blockDim.x) {
        double sum = 0.0;
        for (int b = 0; b < B; b++) sum += (double)dout[(size_t)b * per + i];
        dpos[i] += (float)sum;
        if (i < (size_t)C) dcls[i] += (float)sum;
    }
}

}  // namespace

extern "C" void lunar_cuda_embed_tokens_forward(float *out, const float *x, const float *cls, const float *pos,
                                                int B, int L, int C) {
    size_t total = (size_t)B * (size_t)(L + 1) * (size_t)C;
    if (B <= 0 || C <= 0 || L < 0 || total == 0) return;
    embed_forward_kernel<<<blocks_for(total, THREADS), THREADS, 0, stream()>>>(out, x, cls, pos, B, L, C);
    LAUNCH_CHECK();
}

extern "C" void lunar_cuda_embed_tokens_backward(float *dx, float *dcls, float *dpos, const float *dout, int B,
                                                 int L, int C) {
    if (C <= 0 || L < 0) return;
    cudaStream_t s = stream();
    size_t nx = (size_t)(B > 0 ? B : 0) * (size_t)L * (size_t)C;
    if (dx && nx > 0) {
        embed_dx_kernel<<<blocks_for(nx, THREADS), THREADS, 0, s>>>(dx, dout, B, L, C);
        LAUNCH_CHECK();
    }
    if (B <= 0) return;   // nothing to accumulate
    size_t per = (size_t)(L + 1) * (size_t)C;
    embed_dpos_kernel<<<blocks_for(per, THREADS), THREADS, 0, s>>>(dcls, dpos, dout, B, L, C);
    LAUNCH_CHECK();
}
