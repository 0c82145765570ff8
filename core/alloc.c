/*
 * core/alloc.c: the caching allocator of host memory (alloc.h).
 *
 * Blocks are rounded up to 256 bytes and kept, once freed, in a free list per
 * exact rounded size (an open hash table of sizes). A training loop allocates
 * the same activation sizes every step, so after the first step every request
 * is served from the cache. CUDA devices get their own allocator in the CUDA
 * backend (core/cuda/device.c), registered here through
 * lunar_alloc_register_device_allocator; devices >= 0 are forwarded to it, and
 * refused with a message when none is registered.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/alloc.h"
#include "lunar/status.h"

#define ALIGN 64
#define ROUND 256
#define NBUCKETS 1024

typedef struct block { struct block *next; } block;
typedef struct { size_t size; block *head; } bucket;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bucket buckets[NBUCKETS];
static lunar_alloc_stats stats;
static size_t cached_bytes;
static void (*pressure_hook)(void *);
static void *pressure_ud;
static size_t pressure_threshold, pressure_since;

static const lunar_device_allocator *_Atomic device_allocator;

void lunar_alloc_register_device_allocator(const lunar_device_allocator *a) { device_allocator = a; }

char *lunar_format_bytes(size_t bytes, char *buf, size_t n) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 4) { v /= 1024.0; u++; }
    if (u == 0) snprintf(buf, n, "%zu B", bytes);
    else snprintf(buf, n, v >= 100 ? "%.0f %s" : "%.1f %s", v, units[u]);
    return buf;
}

static size_t round_size(size_t n) { return n == 0 ? ROUND : (n + ROUND - 1) / ROUND * ROUND; }

/* Bucket of `size`: an existing one or an empty slot (linear probing); NULL if
 * the table is full, in which case the block bypasses the cache. */
static bucket *find_bucket(size_t size) {
    size_t h = (size / ROUND) * 2654435761u % NBUCKETS;
    for (size_t i = 0; i < NBUCKETS; i++) {
        bucket *b = &buckets[(h + i) % NBUCKETS];
        if (b->size == size) return b;
        if (b->size == 0) { b->size = size; return b; }
    }
    return NULL;
}

void *lunar_alloc(int device, size_t nbytes) {
    if (device != LUNAR_CPU) {
        const lunar_device_allocator *a = device_allocator;
        if (device >= 0 && a) return a->alloc(device, nbytes);
        char b[32];
        if (device < 0)
            lunar_error(LUNAR_ERR_DEVICE, "alloc: no device %d (asked for %s)", device,
                        lunar_format_bytes(nbytes, b, sizeof b));
        else
            lunar_error(LUNAR_ERR_DEVICE, "alloc: cuda:%d: no CUDA device allocator (asked for %s; "
                        "no CUDA device available, or lunar_cuda_init was not called)", device,
                        lunar_format_bytes(nbytes, b, sizeof b));
        return NULL;
    }
    size_t size = round_size(nbytes);
    void *p = NULL;
    int call_hook = 0;
    pthread_mutex_lock(&mu);
    stats.num_allocs++;
    bucket *b = find_bucket(size);
    if (b && b->head) {
        p = b->head;
        b->head = b->head->next;
        cached_bytes -= size;
    }
    pthread_mutex_unlock(&mu);
    if (!p) {
        p = aligned_alloc(ALIGN, size);
        if (!p) {
            lunar_alloc_stats s;
            lunar_alloc_get_stats(device, &s);
            lunar_error(LUNAR_ERR_OOM, "alloc: out of memory on cpu: asked for %zu bytes, "
                        "%zu in use, %zu cached", nbytes, s.bytes_in_use, cached_bytes);
            return NULL;
        }
        pthread_mutex_lock(&mu);
        stats.num_sys_allocs++;
        stats.bytes_reserved += size;
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_lock(&mu);
    stats.bytes_in_use += size;
    if (stats.bytes_in_use > stats.peak_bytes) stats.peak_bytes = stats.bytes_in_use;
    if (pressure_hook) {
        pressure_since += size;
        if (pressure_since >= pressure_threshold) { pressure_since = 0; call_hook = 1; }
    }
    void (*hook)(void *) = pressure_hook;
    void *ud = pressure_ud;
    pthread_mutex_unlock(&mu);
    if (call_hook && hook) hook(ud);
    return p;
}

void lunar_free(int device, void *ptr, size_t nbytes) {
    if (!ptr) return;
    if (device != LUNAR_CPU) {
        const lunar_device_allocator *a = device_allocator;
        if (device >= 0 && a) a->free(device, ptr, nbytes);
        return;
    }
    size_t size = round_size(nbytes);
    pthread_mutex_lock(&mu);
    stats.bytes_in_use -= size;
    bucket *b = find_bucket(size);
    if (b) {
        block *blk = ptr;
        blk->next = b->head;
        b->head = blk;
        cached_bytes += size;
        ptr = NULL;
    } else {
        stats.bytes_reserved -= size;
    }
    pthread_mutex_unlock(&mu);
    free(ptr);
}

void lunar_alloc_get_stats(int device, lunar_alloc_stats *out) {
    memset(out, 0, sizeof *out);
    if (device != LUNAR_CPU) {
        const lunar_device_allocator *a = device_allocator;
        if (device >= 0 && a) a->get_stats(device, out);
        return;
    }
    pthread_mutex_lock(&mu);
    *out = stats;
    pthread_mutex_unlock(&mu);
}

void lunar_alloc_reset_peak(int device) {
    if (device != LUNAR_CPU) {
        const lunar_device_allocator *a = device_allocator;
        if (device >= 0 && a) a->reset_peak(device);
        return;
    }
    pthread_mutex_lock(&mu);
    stats.peak_bytes = stats.bytes_in_use;
    pthread_mutex_unlock(&mu);
}

void lunar_alloc_empty_cache(int device) {
    if (device != LUNAR_CPU) {
        const lunar_device_allocator *a = device_allocator;
        if (device >= 0 && a) a->empty_cache(device);
        return;
    }
    pthread_mutex_lock(&mu);
    for (int i = 0; i < NBUCKETS; i++) {
        block *blk = buckets[i].head;
        while (blk) {
            block *next = blk->next;
            stats.bytes_reserved -= buckets[i].size;
            free(blk);
            blk = next;
        }
        buckets[i].head = NULL;
    }
    cached_bytes = 0;
    pthread_mutex_unlock(&mu);
}

void lunar_alloc_set_pressure_hook(void (*hook)(void *ud), void *ud, size_t threshold) {
    pthread_mutex_lock(&mu);
    pressure_hook = hook;
    pressure_ud = ud;
    pressure_threshold = threshold;
    pressure_since = 0;
    pthread_mutex_unlock(&mu);
}
