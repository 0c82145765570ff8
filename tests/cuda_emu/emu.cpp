// tests/cuda_emu/emu.cpp: the host side of the CUDA emulation (cuda_emu.h):
// the fiber scheduler that runs a kernel's blocks and threads on the CPU, and
// the CUDA runtime API (cuda_runtime_api.h) that Lunar calls, on host memory.
//
// Devices: LUNAR_EMU_DEVICES of them (default 1), each with LUNAR_EMU_MEM_MIB
// MiB of "device memory" (default 4096), compute capability 9.0.
// LUNAR_EMU_ORDER=forward|reverse|shuffle: the order in which the scheduler
// runs the runnable threads of a block between synchronization points; the
// other orders expose kernels that read shared memory another thread writes
// without a __syncthreads in between.
#include "cuda_emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <map>
#include <vector>

namespace emu {

enum { RUN, WAIT_BLOCK, WAIT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;
    uint3 tid;
    int linear;
    int state;
};

struct Warp {
    unsigned gen = 0;
    int arrived = 0;
    uint64_t slot[2][32];
};

Fiber *cur;
uint3 cur_tid;
dim3 block_idx, block_dim, grid_dim;

static ucontext_t sched_ctx;
static std::vector<Fiber> fibers;
static std::vector<char *> stacks;
static std::vector<Warp> warps;
static constexpr size_t STACK = 256 * 1024;
static thunk_fn g_fn;
static void *g_closure;
static char *g_smem;
static cudaError_t g_last = cudaSuccess;
static std::map<const void *, int> g_max_dyn_smem;

[[noreturn]] static void die(const char *what) {
    fprintf(stderr, "cuda_emu: kernel block (%u, %u, %u) of grid (%u, %u, %u), %u threads: %s\n", block_idx.x,
            block_idx.y, block_idx.z, grid_dim.x, grid_dim.y, grid_dim.z, block_dim.x * block_dim.y * block_dim.z,
            what);
    abort();
}

static void yield() {
    Fiber *f = cur;
    swapcontext(&f->ctx, &sched_ctx);
    cur = f;
    cur_tid = f->tid;
}

static void fiber_entry() {
    g_fn(g_closure);
    cur->state = DONE;   // returns to uc_link, the scheduler
}

void syncthreads() {
    cur->state = WAIT_BLOCK;
    yield();
}

int lane_id() { return cur->linear & 31; }

uint64_t shfl_u64(uint64_t v, int src) {
    Fiber *f = cur;
    int w = f->linear >> 5, lane = f->linear & 31;
    Warp &W = warps[w];
    unsigned g = W.gen & 1;
    W.slot[g][lane] = v;
    if (++W.arrived == 32) {   // the last lane of the warp: everyone may read
        W.arrived = 0;
        W.gen++;
        for (int l = 0; l < 32; l++)
            if (fibers[w * 32 + l].state == WAIT_WARP) fibers[w * 32 + l].state = RUN;
    } else {
        f->state = WAIT_WARP;
        yield();
    }
    return W.slot[g][src];
}

void *dyn_smem() { return g_smem; }

static cudaError_t fail(cudaError_t e) {
    if (g_last == cudaSuccess) g_last = e;
    return e;
}

// the i-th thread to run of nt, in the order LUNAR_EMU_ORDER asks for
static unsigned order_index(unsigned i, unsigned nt) {
    static int mode = -1;
    static uint64_t pass;
    if (mode < 0) {
        const char *e = getenv("LUNAR_EMU_ORDER");
        mode = !e || !strcmp(e, "forward") ? 0 : !strcmp(e, "reverse") ? 1 : 2;
    }
    if (mode == 0) return i;
    if (mode == 1) return nt - 1 - i;
    if (i == 0) pass++;
    // a permutation of [0, nt) that changes every pass: multiply by an odd
    // number and add, modulo the power of two nt (nt is whole warps, and the
    // block sizes Lunar uses are powers of two), else fall back to a rotation
    uint64_t h = pass * 0x9E3779B97F4A7C15ull;
    if ((nt & (nt - 1)) == 0) return (unsigned)(((uint64_t)i * ((h >> 32) | 1u) + (h & 0xffffffffu)) & (nt - 1));
    return (unsigned)((i + (h >> 40)) % nt);
}

void run_grid(const Cfg &c, const void *kernel, thunk_fn fn, void *closure) {
    unsigned nt = c.block.x * c.block.y * c.block.z;
    if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.y > 65535 || c.grid.z > 65535 ||
        c.grid.x > 0x7fffffffu || nt == 0 || nt > 1024 || c.block.z > 64) {
        fprintf(stderr, "cuda_emu: invalid launch configuration grid (%u, %u, %u) block (%u, %u, %u)\n", c.grid.x,
                c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z);
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    if (nt % 32) {
        fprintf(stderr, "cuda_emu: blocks of %u threads: the emulator takes whole warps\n", nt);
        abort();
    }
    int allowed = 48 * 1024;
    auto it = g_max_dyn_smem.find(kernel);
    if (it != g_max_dyn_smem.end()) allowed = it->second;
    if (c.smem > (size_t)allowed) {
        fprintf(stderr, "cuda_emu: %zu bytes of dynamic shared memory, the kernel may use %d "
                        "(cudaFuncSetAttribute(MaxDynamicSharedMemorySize))\n", c.smem, allowed);
        fail(cudaErrorInvalidValue);
        return;
    }
    g_fn = fn;
    g_closure = closure;
    grid_dim = c.grid;
    block_dim = c.block;
    fibers.assign(nt, Fiber());
    warps.assign(nt / 32, Warp());
    while (stacks.size() < nt) stacks.push_back((char *)malloc(STACK));
    for (unsigned bz = 0; bz < c.grid.z; bz++)
        for (unsigned by = 0; by < c.grid.y; by++)
            for (unsigned bx = 0; bx < c.grid.x; bx++) {
                block_idx = dim3(bx, by, bz);
                g_smem = (char *)malloc(c.smem ? c.smem : 1);
                memset(g_smem, 0xff, c.smem);   // NaN floats: reading unwritten shared memory shows
                for (unsigned t = 0; t < nt; t++) {
                    Fiber &f = fibers[t];
                    f.linear = (int)t;
                    f.tid = uint3{t % c.block.x, (t / c.block.x) % c.block.y, t / (c.block.x * c.block.y)};
                    f.state = RUN;
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = stacks[t];
                    f.ctx.uc_stack.ss_size = STACK;
                    f.ctx.uc_link = &sched_ctx;
                    makecontext(&f.ctx, fiber_entry, 0);
                }
                for (auto &w : warps) w = Warp();
                for (;;) {
                    bool ran = false;
                    int done = 0, at_block = 0, at_warp = 0;
                    for (unsigned i = 0; i < nt; i++) {
                        unsigned t = order_index(i, nt);
                        if (fibers[t].state != RUN) continue;
                        cur = &fibers[t];
                        cur_tid = cur->tid;
                        swapcontext(&sched_ctx, &cur->ctx);
                        ran = true;
                    }
                    for (unsigned t = 0; t < nt; t++) {
                        int s = fibers[t].state;
                        done += s == DONE;
                        at_block += s == WAIT_BLOCK;
                        at_warp += s == WAIT_WARP;
                    }
                    if (done == (int)nt) break;
                    if (ran) continue;
                    if (at_warp == 0) {   // every live thread is at __syncthreads
                        for (auto &f : fibers)
                            if (f.state == WAIT_BLOCK) f.state = RUN;
                        continue;
                    }
                    char m[200];
                    snprintf(m, sizeof m, "deadlock: %d threads wait at a warp shuffle whose warp has lanes that "
                             "exited (%d) or wait at __syncthreads (%d)", at_warp, done, at_block);
                    die(m);
                }
                free(g_smem);
                g_smem = nullptr;
            }
}

}  // namespace emu

// ----------------------------------------------------------------------------
// the runtime API on the host

using emu::fail;

static int n_devices() {
    const char *e = getenv("LUNAR_EMU_DEVICES");
    int n = e ? atoi(e) : 1;
    return n < 0 ? 0 : n;
}
static size_t mem_total() {
    const char *e = getenv("LUNAR_EMU_MEM_MIB");
    return (size_t)(e ? atol(e) : 4096) << 20;
}
static int g_device = 0;
static std::map<void *, size_t> g_allocs;
static size_t g_used;

extern "C" {

cudaError_t cudaGetLastError(void) {
    cudaError_t e = emu::g_last;
    emu::g_last = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return emu::g_last; }

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "emulated CUDA error";
    }
}
const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    default: return "cudaErrorUnknown";
    }
}

cudaError_t cudaGetDeviceCount(int *count) {
    *count = n_devices();
    return *count > 0 ? cudaSuccess : fail(cudaErrorNoDevice);
}
cudaError_t cudaSetDevice(int d) {
    if (d < 0 || d >= n_devices()) return fail(cudaErrorInvalidDevice);
    g_device = d;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d) { *d = g_device; return cudaSuccess; }

cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)new int(1); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) { *s = (cudaStream_t)new int(2); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t s) { return cudaSuccess; }

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d) {
    if (d < 0 || d >= n_devices()) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "Lunar CUDA emulator (CPU) %d", d);
    p->major = 9;
    p->minor = 0;
    p->totalGlobalMem = mem_total();
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int d) {
    if (d < 0 || d >= n_devices()) return fail(cudaErrorInvalidDevice);
    *v = a == cudaDevAttrComputeCapabilityMajor ? 9 : a == cudaDevAttrComputeCapabilityMinor ? 0 : 0;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot) {
    *tot = mem_total();
    *fr = *tot - g_used;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t n) {
    if (n > mem_total() - g_used) return fail(cudaErrorMemoryAllocation);
    *p = malloc(n ? n : 1);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    memset(*p, 0xff, n);   // NaN floats until written
    g_allocs[*p] = n;
    g_used += n;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
    if (!p) return cudaSuccess;
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) {
        fprintf(stderr, "cuda_emu: cudaFree of %p, not from cudaMalloc\n", p);
        abort();
    }
    g_used -= it->second;
    g_allocs.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) {
    *p = aligned_alloc(64, (n + 63) / 64 * 64);
    return *p ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void *p) { free(p); return cudaSuccess; }

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t s) {
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind k) {
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyPeerAsync(void *dst, int dd, const void *src, int sd, size_t n, cudaStream_t s) {
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s) {
    if (n) memset(p, v, n);
    return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *f, enum cudaFuncAttribute a, int v) {
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (v < 0 || v > 227 * 1024) return fail(cudaErrorInvalidValue);
        emu::g_max_dyn_smem[f] = v;
    }
    return cudaSuccess;
}

}  // extern "C"
