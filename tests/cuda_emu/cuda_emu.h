// tests/cuda_emu/cuda_emu.h: a CPU emulation of the CUDA device code that
// Lunar's kernels use, to run them on machines without a GPU (a test tool, not
// a backend; tests/cuda_emu/README.md).
//
// The kernel sources (core/ops/cuda/*.cu) are compiled as C++ by g++ after
// two mechanical rewrites (emu.mk): `k<<<cfg>>>(args)` becomes
// `::emu::launch(::emu::cfg(cfg), k, args)` and `extern __shared__ T s[];`
// becomes `T *s = (T *)::emu::dyn_smem();`. This header is force-included
// first and stands in for <cuda_runtime.h>; the host API (cuda_runtime_api.h)
// is the real header, implemented by emu.cpp on the host.
//
// A launch runs the blocks one after the other; the threads of a block are
// fibers (ucontext) switched cooperatively at __syncthreads and at warp
// shuffles, so barriers and shuffles have their CUDA meaning. The emulator
// stops the program with a message when a kernel would be undefined on a GPU
// in ways it can see: a shuffle with FULL_MASK while a lane of the warp has
// exited or waits elsewhere, a barrier some threads never reach, a launch
// configuration the GPU refuses (an empty grid, more than 1024 threads, more
// than 48 KiB of dynamic shared memory without cudaFuncSetAttribute). Device
// memory is host memory (AddressSanitizer sees out-of-bounds accesses) filled
// with NaN bytes when allocated, so reading what no kernel wrote shows up.
#pragma once

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static   // static locals: one copy, blocks run one at a time

#include <cuda_runtime_api.h>   // the real host API and types (dim3, cudaError_t, ...)

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

namespace emu {

struct Fiber;
extern Fiber *cur;
extern uint3 cur_tid;
extern dim3 block_idx, block_dim, grid_dim;

void syncthreads();
// exchanges 8 bytes with the warp: returns lane src's value
uint64_t shfl_u64(uint64_t v, int src_lane);
int lane_id();
void *dyn_smem();

struct Cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
inline Cfg cfg(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = 0) { return Cfg{g, b, smem, s}; }

// runs body(tid) for every thread of every block (emu.cpp)
typedef void (*thunk_fn)(void *closure);
void run_grid(const Cfg &c, const void *kernel_id, thunk_fn fn, void *closure);

template <typename... P, typename... A>
void launch(const Cfg &c, void (*kernel)(P...), A &&...args) {
    // the arguments converted to the kernel's parameter types once, as a launch copies them
    struct Pack {
        void (*k)(P...);
        std::tuple<typename std::decay<P>::type...> a;
    };
    Pack pack{kernel, std::tuple<typename std::decay<P>::type...>(std::forward<A>(args)...)};
    run_grid(c, (const void *)kernel, [](void *p) { std::apply(((Pack *)p)->k, ((Pack *)p)->a); }, &pack);
}

}  // namespace emu

#define threadIdx (::emu::cur_tid)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)

inline void __syncthreads() { ::emu::syncthreads(); }

template <typename T> inline T __shfl_sync(unsigned mask, T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    (void)mask;
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    u = ::emu::shfl_u64(u, src & 31);
    T r;
    memcpy(&r, &u, sizeof(T));
    return r;
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
    return __shfl_sync(mask, v, ::emu::lane_id() ^ lane_mask);
}

inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline float __fmul_rn(float a, float b) { return a * b; }   // built with -ffp-contract=off
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

// cudaFuncSetAttribute on a kernel (cuda_runtime.h's template form)
template <typename T> inline cudaError_t cudaFuncSetAttribute(T *f, enum cudaFuncAttribute a, int v) {
    return ::cudaFuncSetAttribute((const void *)f, a, v);
}
