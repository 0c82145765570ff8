// core/ops/cuda/patchify.cu: the data movement of the patch embedding on CUDA
// (patchify, the im2col of a convolution with kernel = stride = P), forward
// and backward, with the layouts of kernels.h (core/ops/ref/patchify.c).
// One thread per element.
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

struct Spatial { int s[3]; };

// Offset into inp[B, C, S_1..S_k] of element e of patch l of image b
// (lunar_ref_patch_source): the patch grid G_i = S_i / P in row-major order,
// e over (c, p_1, .., p_k) in row-major order.
__device__ __forceinline__ size_t patch_source(size_t b, size_t l, size_t e, int C, int k, Spatial S, int P) {
    int grid[3] = {0, 0, 0}, within[3] = {0, 0, 0};
    for (int i = k - 1; i >= 0; i--) {
        int G = S.s[i] / P;
        grid[i] = (int)(l % (size_t)G);
        l /= (size_t)G;
        within[i] = (int)(e % (size_t)P);
        e /= (size_t)P;
    }
    size_t off = b * (size_t)C + e;   // what remains of e is the channel
    for (int i = 0; i < k; i++) off = off * (size_t)S.s[i] + (size_t)(grid[i] * P + within[i]);
    return off;
}

template <bool FORWARD>
__global__ void patchify_kernel(float *dst, const float *src, size_t total, size_t L, size_t E, int C, int k,
                                Spatial S, int P) {
    for (size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        size_t e = idx % E, l = (idx / E) % L, b = idx / (E * L);
        size_t s = patch_source(b, l, e, C, k, S, P);
        if (FORWARD) dst[idx] = src[s];   // out[b, l, e] = inp[...]
        else dst[s] = src[idx];           // dinp[...] = dout[b, l, e]
    }
}

void patchify(bool forward, float *dst, const float *src, int B, int C, int k, const int *S, int P) {
    if (B <= 0 || C <= 0 || P <= 0 || k < 1 || k > 3) return;
    Spatial sp = {{1, 1, 1}};
    size_t L = 1, E = (size_t)C;
    for (int i = 0; i < k; i++) {
        sp.s[i] = S[i];
        L *= (size_t)(S[i] / P);
        E *= (size_t)P;
    }
    size_t total = (size_t)B * L * E;
    if (total == 0) return;
    if (forward)
        patchify_kernel<true><<<blocks_for(total, THREADS), THREADS, 0, stream()>>>(dst, src, total, L, E, C, k, sp, P);
    else
        patchify_kernel<false><<<blocks_for(total, THREADS), THREADS, 0, stream()>>>(dst, src, total, L, E, C, k, sp, P);
    LAUNCH_CHECK();
}

}  // namespace

extern "C" void lunar_cuda_patchify_forward(float *out, const float *inp, int B, int C, int k, const int *S, int P) {
    patchify(true, out, inp, B, C, k, S, P);
}

extern "C" void lunar_cuda_patchify_backward(float *dinp, const float *dout, int B, int C, int k, const int *S,
                                             int P) {
    patchify(false, dinp, dout, B, C, k, S, P);
}
