/*
 * lunar/alloc.h: the per-device caching allocator.
 *
 * Freed blocks are kept in size-class free lists and handed out again, so a
 * training loop that allocates the same activations every step reaches a
 * steady state with no calls to the system allocator (the idea of PyTorch's
 * CUDACachingAllocator, here for host memory). Counters report the bytes handed
 * out now (in use), their high-water mark (peak) and the bytes held from the
 * system (reserved = in use + cached). Thread-safe.
 *
 * Devices other than the CPU are served by a device allocator that the CUDA
 * backend registers (lunar_alloc_register_device_allocator, called by
 * lunar_cuda_init in lunar/cuda.h), so this file stays free of CUDA.
 */
#ifndef LUNAR_ALLOC_H
#define LUNAR_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Devices: LUNAR_CPU, or a CUDA ordinal >= 0. */
#define LUNAR_CPU (-1)

typedef struct {
    size_t bytes_in_use;    /* bytes handed out and not yet freed */
    size_t peak_bytes;      /* high-water mark of bytes_in_use since the last reset */
    size_t bytes_reserved;  /* bytes held from the system (in use + cached) */
    uint64_t num_allocs;    /* calls to lunar_alloc */
    uint64_t num_sys_allocs;/* of those, how many went to the system allocator */
} lunar_alloc_stats;

/* Returns `nbytes` of memory aligned to 64 bytes on `device`, or NULL with a
 * lunar_error naming the device and the bytes asked for and in use.
 * nbytes == 0 returns a valid unique pointer. */
void *lunar_alloc(int device, size_t nbytes);

/* Gives back a block from lunar_alloc; `nbytes` must be the size asked for. */
void lunar_free(int device, void *ptr, size_t nbytes);

/* Fills `out` with the counters of `device`. */
void lunar_alloc_get_stats(int device, lunar_alloc_stats *out);

/* Sets peak_bytes to the current bytes_in_use. */
void lunar_alloc_reset_peak(int device);

/* Returns every cached (free) block of `device` to the system. */
void lunar_alloc_empty_cache(int device);

/* Registers a callback run (outside the allocator lock) whenever bytes_in_use
 * of the CPU device first passes `threshold` bytes after the previous call; the
 * Lua host uses it to step its garbage collector, which does not see C memory
 * (torch7's THSetGCHandler). Pass NULL to remove. */
void lunar_alloc_set_pressure_hook(void (*hook)(void *ud), void *ud, size_t threshold);

/* The allocator of CUDA devices (device >= 0): lunar_alloc, lunar_free and
 * the stats functions forward there. Each function takes the device; alloc
 * returns NULL with a lunar_error naming the device and the bytes asked for
 * and in use. */
typedef struct lunar_device_allocator {
    void *(*alloc)(int device, size_t nbytes);
    void (*free)(int device, void *ptr, size_t nbytes);
    void (*get_stats)(int device, lunar_alloc_stats *out);
    void (*reset_peak)(int device);
    void (*empty_cache)(int device);
} lunar_device_allocator;

/* Registers (or with NULL removes) the device allocator; `a` must stay valid.
 * Without one, lunar_alloc on a device >= 0 fails with a message. */
void lunar_alloc_register_device_allocator(const lunar_device_allocator *a);

/* Writes `bytes` for messages ("512 B", "3.0 MiB", "1.5 GiB") into buf (size
 * n) and returns buf. */
char *lunar_format_bytes(size_t bytes, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
