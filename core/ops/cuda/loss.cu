// core/ops/cuda/loss.cu: softmax cross-entropy with label smoothing (forward,
// backward) and the top-1 correct count, on CUDA. One warp per row of logits
// [B, K]; the row's log-sum-exp is max + log(sum exp(z - max)) with the sum in
// double, as the reference. The mean loss and the count are reduced over the
// rows by one block in a fixed order (deterministic) and copied to the host.
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int WARPS = 8;               // rows per block
constexpr int THREADS = WARPS * 32;

// Row max and sum exp(z - max) (double) of z[0..K), on every lane of the warp.
__device__ __forceinline__ void row_stats(const float *z, int K, int lane, float *max_out, double *sum_out) {
    float mx = -INFINITY;
    for (int k = lane; k < K; k += 32) mx = fmaxf(mx, z[k]);
    mx = warp_max(mx);
    double s = 0.0;
    for (int k = lane; k < K; k += 32) s += (double)expf(z[k] - mx);
    *max_out = mx;
    *sum_out = warp_sum(s);
}

// losses[b] = lse - (1 - eps) z_t - eps/K sum_k z_k  (= -sum_k q_k log softmax_k)
__global__ void ce_forward_kernel(double *row_loss, float *losses, const float *logits, const int32_t *targets,
                                  int B, int K, double eps) {
    int lane = threadIdx.x & 31;
    int b = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (b >= B) return;   // whole warps leave together
    const float *z = logits + (size_t)b * K;
    float mx;
    double s;
    row_stats(z, K, lane, &mx, &s);
    double zsum = 0.0;
    for (int k = lane; k < K; k += 32) zsum += (double)z[k];
    zsum = warp_sum(zsum);
    if (lane == 0) {
        double lse = (double)mx + log(s);
        int t = targets[b];
        double lb = lse - (1.0 - eps) * (double)z[t] - eps / K * zsum;
        row_loss[b] = lb;
        if (losses) losses[b] = (float)lb;
    }
}

__global__ void mean_kernel(float *out, const double *row_loss, int B) {
    __shared__ double sh[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < B; i += blockDim.x) s += row_loss[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = (float)(s / B);
}

// dlogits[b, k] = dloss / B (softmax_k - q_k)
__global__ void ce_backward_kernel(float *dlogits, const float *logits, const int32_t *targets, int B, int K,
                                   double eps, double g) {
    int lane = threadIdx.x & 31;
    int b = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (b >= B) return;
    const float *z = logits + (size_t)b * K;
    float mx;
    double s;
    row_stats(z, K, lane, &mx, &s);
    int t = targets[b];
    for (int k = lane; k < K; k += 32) {
        double prob = (double)expf(z[k] - mx) / s;
        double q = (k == t ? 1.0 - eps : 0.0) + eps / K;
        dlogits[(size_t)b * K + k] = (float)(g * (prob - q));
    }
}

// flags[b] = argmax_k z[b, k] (first index on ties; NaN never wins) == t[b]
__global__ void correct_kernel(int *flags, const float *logits, const int32_t *targets, int B, int K) {
    int lane = threadIdx.x & 31;
    int b = blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (b >= B) return;
    const float *z = logits + (size_t)b * K;
    float bv = -INFINITY;
    int bi = K;   // none yet
    for (int k = lane; k < K; k += 32) {
        float v = z[k];
        if (!isnan(v) && (bi == K || v > bv)) { bv = v; bi = k; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(FULL_MASK, bv, o);
        int oi = __shfl_xor_sync(FULL_MASK, bi, o);
        bool take = oi != K && (bi == K || ov > bv || (ov == bv && oi < bi));
        if (take) { bv = ov; bi = oi; }
    }
    if (lane == 0) flags[b] = (bi == K ? 0 : bi) == targets[b];
}

__global__ void count_kernel(long long *out, const int *flags, int B) {
    __shared__ double sh[32];
    double s = 0.0;   // exact for counts below 2^53
    for (int i = threadIdx.x; i < B; i += blockDim.x) s += (double)flags[i];
    s = block_sum(s, sh);
    if (threadIdx.x == 0) out[0] = (long long)s;
}

}  // namespace

extern "C" void lunar_cuda_cross_entropy_forward(float *loss, float *losses, const float *logits,
                                                 const int32_t *targets, int B, int K, float smoothing) {
    if (B <= 0 || K <= 0) { *loss = NAN; return; }   // the mean of nothing, as the CPU's 0/0
    Scratch tmp(sizeof(double) * (size_t)B + sizeof(float));
    if (!tmp.ptr) { *loss = NAN; return; }
    double *row_loss = tmp.as<double>();
    float *dloss = (float *)(row_loss + B);
    cudaStream_t s = stream();
    ce_forward_kernel<<<(B + WARPS - 1) / WARPS, THREADS, 0, s>>>(row_loss, losses, logits, targets, B, K,
                                                                  (double)smoothing);
    if (LAUNCH_CHECK()) { *loss = NAN; return; }
    mean_kernel<<<1, 1024, 0, s>>>(dloss, row_loss, B);
    if (LAUNCH_CHECK()) { *loss = NAN; return; }
    float result = NAN;
    to_host(&result, dloss, sizeof result);
    *loss = result;
}

extern "C" void lunar_cuda_cross_entropy_backward(float *dlogits, const float *logits, const int32_t *targets, int B,
                                                  int K, float smoothing, float dloss) {
    if (B <= 0 || K <= 0) return;
    ce_backward_kernel<<<(B + WARPS - 1) / WARPS, THREADS, 0, stream()>>>(dlogits, logits, targets, B, K,
                                                                          (double)smoothing, (double)dloss / B);
    LAUNCH_CHECK();
}

extern "C" int64_t lunar_cuda_accuracy_count(const float *logits, const int32_t *targets, int B, int K) {
    if (B <= 0 || K <= 0) return 0;
    Scratch tmp(sizeof(long long) + sizeof(int) * (size_t)B);
    if (!tmp.ptr) return 0;
    long long *count = tmp.as<long long>();
    int *flags = (int *)(count + 1);
    cudaStream_t s = stream();
    correct_kernel<<<(B + WARPS - 1) / WARPS, THREADS, 0, s>>>(flags, logits, targets, B, K);
    if (LAUNCH_CHECK()) return 0;
    count_kernel<<<1, 1024, 0, s>>>(count, flags, B);
    if (LAUNCH_CHECK()) return 0;
    long long result = 0;
    if (to_host(&result, count, sizeof result)) return 0;
    return (int64_t)result;
}
