// core/ops/cuda/arith.cu: tensor arithmetic on CUDA (kernels.h arith): out =
// a op b, each operand an f32 / bf16 / f64 array or a scalar. One grid-stride
// loop; each element is combined in double from the exact operand values and
// rounded once to f32, the arithmetic of the reference kernel (core/ops/ref/
// arith.c), so the device and the CPU give the same bits. In place allowed
// (out == a).
#include "common.cuh"

using namespace lunar_cuda;

namespace {

constexpr int THREADS = 256;

// Element i of an operand (a LUNAR_ELEM_* array), or the scalar s when p is NULL.
__device__ __forceinline__ double operand(const void *p, int type, double s, size_t i) {
    if (!p) return s;
    if (type == LUNAR_ELEM_BF16) return (double)bf16_to_f32(((const uint16_t *)p)[i]);
    if (type == LUNAR_ELEM_F64) return ((const double *)p)[i];
    return (double)((const float *)p)[i];
}

__global__ void arith_kernel(float *out, const void *a, int a_type, double sa, const void *b, int b_type,
                             double sb, size_t n, int op) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double x = operand(a, a_type, sa, i), y = operand(b, b_type, sb, i), r;
        switch (op) {   // the same op for the whole grid: no divergence
        case LUNAR_ARITH_ADD: r = x + y; break;
        case LUNAR_ARITH_SUB: r = x - y; break;
        case LUNAR_ARITH_MUL: r = x * y; break;
        case LUNAR_ARITH_RSQRT_ADD: r = 1.0 / sqrt(x + y); break;   // IEEE double sqrt and /: the CPU's bits
        default: r = x / y; break;
        }
        out[i] = (float)r;
    }
}

}  // namespace

extern "C" void lunar_cuda_arith(float *out, const void *a, int a_type, double sa, const void *b, int b_type,
                                 double sb, size_t n, int op) {
    if (n == 0) return;
    arith_kernel<<<blocks_for(n, THREADS), THREADS, 0, stream()>>>(out, a, a_type, sa, b, b_type, sb, n, op);
    LAUNCH_CHECK();
}
