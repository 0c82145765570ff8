/*
 * core/cuda/device.c: CUDA devices, streams, copies, pinned host memory and the
 * caching device allocator (lunar/cuda.h). Built only with LUNAR_USE_CUDA (the
 * CUDA backend); core/cuda/cuda_none.c stands in otherwise.
 *
 * The runtime is touched only when a device is first asked for: init_once
 * counts the devices (cudaGetDeviceCount; on a machine without a driver that
 * fails with cudaErrorInsufficientDriver, which becomes the reason shown in
 * "no CUDA device available (...)") and registers the device allocator with
 * alloc.c.
 *
 * The allocator keeps freed blocks per device in free lists of exact rounded
 * sizes (multiples of 512 bytes), as core/alloc.c does for host memory and in
 * the spirit of PyTorch's CUDACachingAllocator: a training step allocates the
 * same sizes every time, so after the first step cudaMalloc (which
 * synchronizes) is never called. Every Lunar kernel, GEMM and copy runs on the
 * device's one compute stream, so a block freed by the host can be handed to
 * the next request at once: whatever used it is ahead in the same stream.
 * When cudaMalloc runs out of memory the cache is returned to the driver and
 * the allocation tried once more before the error.
 */
#ifdef LUNAR_USE_CUDA

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "lunar/alloc.h"
#include "lunar/cuda.h"
#include "internal.h"

#define ROUND 512
#define NBUCKETS 1024

/* Under the CPU emulation of tests/cuda_emu (LUNAR_CUDA_EMU), device memory is
 * host memory: AddressSanitizer is told that the rounding slack of a block and
 * every cached block are off limits, so kernels that overrun a buffer or use
 * freed memory are caught. Never in a real CUDA build. */
#if defined(LUNAR_CUDA_EMU) && defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define EMU_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define EMU_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define EMU_POISON(p, n) ((void)0)
#define EMU_UNPOISON(p, n) ((void)0)
#endif

typedef struct node { void *ptr; size_t size; struct node *next; } node;
typedef struct { size_t size; node *head; } bucket;

typedef struct {
    pthread_mutex_t mu;
    _Atomic int ready;             /* streams created (set once, under mu) */
    cudaStream_t compute, comm;
    bucket buckets[NBUCKETS];
    lunar_alloc_stats stats;
    size_t cached;
} device_state;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_count;                /* usable devices, 0 when none */
static char g_reason[512];         /* why none */
static device_state *g_devs;
static int g_local_rank;
static _Atomic int g_tf32;
static _Thread_local int tl_device = -1;
static _Thread_local int tl_has_err;
static _Thread_local char tl_err[768];

static const lunar_device_allocator cuda_allocator;

int lunar_cuda_compiled(void) { return 1; }

// ----------------------------------------------------------------------------
// sticky errors of the void kernels

void lunar_cuda_record_error(const char *file, int line, const char *what, const char *msg) {
    if (tl_has_err) return;
    snprintf(tl_err, sizeof tl_err, "%s:%d: %s: %s", file, line, what, msg);
    tl_has_err = 1;
}

lunar_status lunar_cuda_take_error(void) {
    if (!tl_has_err) return LUNAR_OK;
    tl_has_err = 0;
    return lunar_error(LUNAR_ERR_DEVICE, "CUDA error: %s", tl_err);
}

// ----------------------------------------------------------------------------
// devices

static void init_once(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n); const int call_line = __LINE__;
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        /* what the two usual answers mean, in words */
        char hint[160] = "";
        if (e == cudaErrorInsufficientDriver)
            snprintf(hint, sizeof hint, ": no NVIDIA driver is loaded on this machine, or it is older than this "
                                        "CUDA runtime needs");
        else if (e == cudaErrorNoDevice && visible)
            snprintf(hint, sizeof hint, ": the driver sees no GPU with CUDA_VISIBLE_DEVICES='%.60s'", visible);
        else if (e == cudaErrorNoDevice)
            snprintf(hint, sizeof hint, ": the driver is loaded but sees no GPU");
        snprintf(g_reason, sizeof g_reason, "cudaGetDeviceCount: %s [%s]%s (%s:%d)", cudaGetErrorString(e),
                 cudaGetErrorName(e), hint, __FILE__, call_line);
        return;
    }
    if (n <= 0) {
        if (visible)
            snprintf(g_reason, sizeof g_reason, "cudaGetDeviceCount found no device (CUDA_VISIBLE_DEVICES='%.60s')",
                     visible);
        else
            snprintf(g_reason, sizeof g_reason, "cudaGetDeviceCount found no device");
        return;
    }
    g_devs = calloc((size_t)n, sizeof *g_devs);
    if (!g_devs) {
        snprintf(g_reason, sizeof g_reason, "out of host memory for the state of %d devices", n);
        return;
    }
    for (int i = 0; i < n; i++) pthread_mutex_init(&g_devs[i].mu, NULL);
    const char *tf32 = getenv("LUNAR_TF32");
    if (tf32 && *tf32 && strcmp(tf32, "0") != 0) g_tf32 = 1;
    g_count = n;
    lunar_alloc_register_device_allocator(&cuda_allocator);
}

lunar_status lunar_cuda_init(void) {
    pthread_once(&g_once, init_once);
    if (g_count > 0) return LUNAR_OK;
    return lunar_error(LUNAR_ERR_DEVICE, "no CUDA device available (%s)", g_reason);
}

int lunar_cuda_device_count(void) {
    pthread_once(&g_once, init_once);
    return g_count;
}

int lunar_cuda_is_available(void) { return lunar_cuda_device_count() > 0; }

const char *lunar_cuda_unavailable_reason(void) {
    pthread_once(&g_once, init_once);
    return g_count > 0 ? "" : g_reason;
}

lunar_status lunar_cuda_check_device(int device) {
    lunar_status st = lunar_cuda_init();
    if (st) return st;
    if (device < 0 || device >= g_count) {
        if (g_count == 1)
            return lunar_error(LUNAR_ERR_DEVICE, "cuda:%d: device index out of range (1 CUDA device: cuda:0)",
                               device);
        return lunar_error(LUNAR_ERR_DEVICE, "cuda:%d: device index out of range (%d CUDA devices: cuda:0 .. cuda:%d)",
                           device, g_count, g_count - 1);
    }
    return LUNAR_OK;
}

/* Creates the device's streams on first use. */
static lunar_status ensure_streams(int device) {
    device_state *d = &g_devs[device];
    if (d->ready) return LUNAR_OK;   /* the common case: no lock */
    pthread_mutex_lock(&d->mu);
    if (d->ready) { pthread_mutex_unlock(&d->mu); return LUNAR_OK; }
    lunar_status st = LUNAR_OK;
    cudaError_t e = cudaSetDevice(device);
    /* the compute stream is a blocking stream: it also orders against work
     * someone else puts on the legacy default stream */
    if (e == cudaSuccess) e = cudaStreamCreate(&d->compute);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&d->comm, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        st = lunar_error(LUNAR_ERR_DEVICE, "cuda:%d: creating the streams failed: %s [%s] (%s:%d)", device,
                         cudaGetErrorString(e), cudaGetErrorName(e), __FILE__, __LINE__);
    } else {
        d->ready = 1;
    }
    pthread_mutex_unlock(&d->mu);
    if (tl_device >= 0 && tl_device != device) CUDA_RECORD(cudaSetDevice(tl_device));   /* back to the thread's */
    return st;
}

lunar_status lunar_cuda_set_device(int device) {
    lunar_status st = lunar_cuda_check_device(device);
    if (st) return st;
    if (tl_device != device) {
        CUDA_TRY(cudaSetDevice(device));
        tl_device = device;
    }
    return ensure_streams(device);
}

int lunar_cuda_default_device(void) {
    int n = lunar_cuda_device_count();
    return n > 0 ? g_local_rank % n : 0;
}

void lunar_cuda_set_local_rank(int local_rank) { g_local_rank = local_rank < 0 ? 0 : local_rank; }

int lunar_cuda_current_device(void) { return tl_device >= 0 ? tl_device : lunar_cuda_default_device(); }

void *lunar_cuda_stream(int device) {
    if (lunar_cuda_check_device(device) || ensure_streams(device)) return NULL;
    return g_devs[device].compute;
}

void *lunar_cuda_comm_stream(int device) {
    if (lunar_cuda_check_device(device) || ensure_streams(device)) return NULL;
    return g_devs[device].comm;
}

lunar_status lunar_cuda_synchronize(int device) {
    lunar_status st = lunar_cuda_set_device(device);
    if (st) return st;
    CUDA_TRY(cudaStreamSynchronize(g_devs[device].compute));
    CUDA_TRY(cudaStreamSynchronize(g_devs[device].comm));
    return LUNAR_OK;
}

lunar_status lunar_cuda_device_name(int device, char *buf, size_t n) {
    lunar_status st = lunar_cuda_check_device(device);
    if (st) return st;
    struct cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    snprintf(buf, n, "%s", prop.name);
    return LUNAR_OK;
}

lunar_status lunar_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes) {
    lunar_status st = lunar_cuda_set_device(device);
    if (st) return st;
    CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes));
    return LUNAR_OK;
}

lunar_status lunar_cuda_capability(int device, int *major, int *minor) {
    lunar_status st = lunar_cuda_check_device(device);
    if (st) return st;
    CUDA_TRY(cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, device));
    CUDA_TRY(cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, device));
    return LUNAR_OK;
}

void lunar_cuda_set_tf32(int on) { g_tf32 = on ? 1 : 0; }
int lunar_cuda_tf32(void) { return g_tf32; }

// ----------------------------------------------------------------------------
// copies

lunar_status lunar_cuda_memcpy(void *dst, int dst_device, const void *src, int src_device, size_t nbytes) {
    if (nbytes == 0) return LUNAR_OK;
    if (dst_device < 0 && src_device < 0) {
        memmove(dst, src, nbytes);
        return LUNAR_OK;
    }
    lunar_status st;
    if (dst_device >= 0 && src_device >= 0 && dst_device != src_device) {
        /* between devices: the source's stream first, then a peer copy on the
         * destination's stream */
        if ((st = lunar_cuda_set_device(src_device))) return st;
        CUDA_TRY(cudaStreamSynchronize(g_devs[src_device].compute));
        if ((st = lunar_cuda_set_device(dst_device))) return st;
        cudaStream_t s = g_devs[dst_device].compute;
        CUDA_TRY(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, nbytes, s));
        CUDA_TRY(cudaStreamSynchronize(s));
        return LUNAR_OK;
    }
    int device = dst_device >= 0 ? dst_device : src_device;
    if ((st = lunar_cuda_set_device(device))) return st;
    cudaStream_t s = g_devs[device].compute;
    CUDA_TRY(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, s));
    CUDA_TRY(cudaStreamSynchronize(s));
    return LUNAR_OK;
}

lunar_status lunar_cuda_memset(int device, void *ptr, int value, size_t nbytes) {
    if (nbytes == 0) return LUNAR_OK;
    lunar_status st = lunar_cuda_set_device(device);
    if (st) return st;
    CUDA_TRY(cudaMemsetAsync(ptr, value, nbytes, g_devs[device].compute));
    return LUNAR_OK;
}

// ----------------------------------------------------------------------------
// pinned host memory: a 64-byte header before the block says how it was made

#define HOST_MAGIC 0x4c554e48u   /* "LUNH" */
typedef struct { uint32_t magic, pinned; size_t nbytes; } host_header;
#define HOST_HDR 64

void *lunar_cuda_host_alloc(size_t nbytes) {
    size_t total = HOST_HDR + (nbytes + 63) / 64 * 64;
    char *base = NULL;
    int pinned = 0;
    if (lunar_cuda_is_available()) {
        void *p = NULL;
        cudaError_t e = cudaHostAlloc(&p, total, cudaHostAllocPortable);
        if (e == cudaSuccess) { base = p; pinned = 1; }
        else (void)cudaGetLastError();   /* fall back to pageable memory */
    }
    if (!base) base = aligned_alloc(64, total);
    if (!base) {
        char b[32];
        lunar_error(LUNAR_ERR_OOM, "host_alloc: out of host memory allocating %s",
                    lunar_format_bytes(nbytes, b, sizeof b));
        return NULL;
    }
    host_header *h = (host_header *)base;
    h->magic = HOST_MAGIC;
    h->pinned = (uint32_t)pinned;
    h->nbytes = nbytes;
    return base + HOST_HDR;
}

void lunar_cuda_host_free(void *ptr) {
    if (!ptr) return;
    host_header *h = (host_header *)((char *)ptr - HOST_HDR);
    if (h->magic != HOST_MAGIC) return;   /* not ours: leave it rather than corrupt the heap */
    h->magic = 0;
    if (h->pinned) CUDA_RECORD(cudaFreeHost(h));
    else free(h);
}

int lunar_cuda_host_is_pinned(const void *ptr) {
    if (!ptr) return 0;
    const host_header *h = (const host_header *)((const char *)ptr - HOST_HDR);
    return h->magic == HOST_MAGIC && h->pinned;
}

// ----------------------------------------------------------------------------
// the caching device allocator

static size_t round_size(size_t n) { return n == 0 ? ROUND : (n + ROUND - 1) / ROUND * ROUND; }

static bucket *find_bucket(device_state *d, size_t size) {
    size_t h = (size / ROUND) * 2654435761u % NBUCKETS;
    for (size_t i = 0; i < NBUCKETS; i++) {
        bucket *b = &d->buckets[(h + i) % NBUCKETS];
        if (b->size == size) return b;
        if (b->size == 0) { b->size = size; return b; }
    }
    return NULL;
}

/* Returns every cached block of the device to the driver. */
static void release_cached(int device) {
    device_state *d = &g_devs[device];
    node *all = NULL;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < NBUCKETS; i++) {
        node *n = d->buckets[i].head;
        while (n) {
            node *next = n->next;
            n->next = all;
            all = n;
            d->stats.bytes_reserved -= d->buckets[i].size;
            n = next;
        }
        d->buckets[i].head = NULL;
    }
    d->cached = 0;
    pthread_mutex_unlock(&d->mu);
    if (all && lunar_cuda_set_device(device) == LUNAR_OK) {
        while (all) {
            node *next = all->next;
            EMU_UNPOISON(all->ptr, all->size);
            CUDA_RECORD(cudaFree(all->ptr));
            free(all);
            all = next;
        }
    }
    while (all) { node *next = all->next; free(all); all = next; }
}

static void *cuda_alloc(int device, size_t nbytes) {
    char b1[32], b2[32], b3[32], b4[32];
    if (lunar_cuda_check_device(device)) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lunar_last_error());
        lunar_error(LUNAR_ERR_DEVICE, "%s; cannot allocate %s on cuda:%d", msg,
                    lunar_format_bytes(nbytes, b1, sizeof b1), device);
        return NULL;
    }
    device_state *d = &g_devs[device];
    size_t size = round_size(nbytes);
    void *p = NULL;
    pthread_mutex_lock(&d->mu);
    d->stats.num_allocs++;
    bucket *b = find_bucket(d, size);
    if (b && b->head) {
        node *n = b->head;
        b->head = n->next;
        p = n->ptr;
        free(n);
        d->cached -= size;
        d->stats.bytes_in_use += size;
        if (d->stats.bytes_in_use > d->stats.peak_bytes) d->stats.peak_bytes = d->stats.bytes_in_use;
    }
    pthread_mutex_unlock(&d->mu);
    if (p) {
        EMU_UNPOISON(p, nbytes);
        EMU_POISON((char *)p + nbytes, size - nbytes);
        return p;
    }

    if (lunar_cuda_set_device(device)) return NULL;
    cudaError_t e = cudaMalloc(&p, size); int call_line = __LINE__;
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        release_cached(device);
        e = cudaMalloc(&p, size); call_line = __LINE__;
    }
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        int have_info = cudaMemGetInfo(&fr, &tot) == cudaSuccess;   /* best effort, for the message */
        if (!have_info) (void)cudaGetLastError();
        pthread_mutex_lock(&d->mu);
        size_t in_use = d->stats.bytes_in_use;
        pthread_mutex_unlock(&d->mu);
        if (e == cudaErrorMemoryAllocation && have_info)
            lunar_error(LUNAR_ERR_OOM, "cuda:%d: out of memory allocating %s (%s in use by Lunar, %s total, %s free; "
                        "cudaMalloc at %s:%d)",
                        device, lunar_format_bytes(nbytes, b1, sizeof b1), lunar_format_bytes(in_use, b2, sizeof b2),
                        lunar_format_bytes(tot, b3, sizeof b3), lunar_format_bytes(fr, b4, sizeof b4), __FILE__,
                        call_line);
        else if (e == cudaErrorMemoryAllocation)
            lunar_error(LUNAR_ERR_OOM, "cuda:%d: out of memory allocating %s (%s in use by Lunar; total and free "
                        "unknown: cudaMemGetInfo failed; cudaMalloc at %s:%d)",
                        device, lunar_format_bytes(nbytes, b1, sizeof b1), lunar_format_bytes(in_use, b2, sizeof b2),
                        __FILE__, call_line);
        else
            lunar_error(LUNAR_ERR_DEVICE, "cuda:%d: cudaMalloc of %s failed (%s in use): %s [%s] (%s:%d)", device,
                        lunar_format_bytes(nbytes, b1, sizeof b1), lunar_format_bytes(in_use, b2, sizeof b2),
                        cudaGetErrorString(e), cudaGetErrorName(e), __FILE__, call_line);
        return NULL;
    }
    pthread_mutex_lock(&d->mu);
    d->stats.num_sys_allocs++;
    d->stats.bytes_reserved += size;
    d->stats.bytes_in_use += size;
    if (d->stats.bytes_in_use > d->stats.peak_bytes) d->stats.peak_bytes = d->stats.bytes_in_use;
    pthread_mutex_unlock(&d->mu);
    EMU_POISON((char *)p + nbytes, size - nbytes);
    return p;
}

static void cuda_free(int device, void *ptr, size_t nbytes) {
    if (!ptr || device < 0 || device >= g_count) return;
    device_state *d = &g_devs[device];
    size_t size = round_size(nbytes);
    EMU_POISON(ptr, size);   /* cached or freed: off limits until handed out again */
    node *n = malloc(sizeof *n);
    pthread_mutex_lock(&d->mu);
    d->stats.bytes_in_use -= size;
    bucket *b = n ? find_bucket(d, size) : NULL;
    if (b) {
        n->ptr = ptr;
        n->size = size;
        n->next = b->head;
        b->head = n;
        d->cached += size;
        ptr = NULL;
    } else {
        d->stats.bytes_reserved -= size;
    }
    pthread_mutex_unlock(&d->mu);
    if (ptr) {   /* no room in the cache: back to the driver */
        EMU_UNPOISON(ptr, size);
        free(n);
        if (lunar_cuda_set_device(device) == LUNAR_OK) CUDA_RECORD(cudaFree(ptr));
    }
}

static void cuda_get_stats(int device, lunar_alloc_stats *out) {
    memset(out, 0, sizeof *out);
    if (device < 0 || device >= g_count) return;
    pthread_mutex_lock(&g_devs[device].mu);
    *out = g_devs[device].stats;
    pthread_mutex_unlock(&g_devs[device].mu);
}

static void cuda_reset_peak(int device) {
    if (device < 0 || device >= g_count) return;
    pthread_mutex_lock(&g_devs[device].mu);
    g_devs[device].stats.peak_bytes = g_devs[device].stats.bytes_in_use;
    pthread_mutex_unlock(&g_devs[device].mu);
}

static void cuda_empty_cache(int device) {
    if (device < 0 || device >= g_count) return;
    release_cached(device);
}

static const lunar_device_allocator cuda_allocator = {
    .alloc = cuda_alloc, .free = cuda_free, .get_stats = cuda_get_stats,
    .reset_peak = cuda_reset_peak, .empty_cache = cuda_empty_cache,
};

#endif /* LUNAR_USE_CUDA */
