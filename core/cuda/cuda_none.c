/*
 * core/cuda/cuda_none.c: lunar/cuda.h in a build without the CUDA backend
 * (no nvcc, or make CUDA=0): no device is ever available, every request for
 * one fails with a message that says why, and pinned host memory is ordinary
 * memory. core/cuda/device.c is the real thing (LUNAR_USE_CUDA).
 */
#ifndef LUNAR_USE_CUDA

#include <stdlib.h>
#include <string.h>

#include "lunar/alloc.h"
#include "lunar/cuda.h"

static const char *REASON = "this build has no CUDA backend: rebuild with make CUDA=1 where "
                            "/usr/local/cuda/bin/nvcc is installed";

int lunar_cuda_compiled(void) { return 0; }

lunar_status lunar_cuda_init(void) {
    return lunar_error(LUNAR_ERR_DEVICE, "no CUDA device available (%s)", REASON);
}

int lunar_cuda_device_count(void) { return 0; }
int lunar_cuda_is_available(void) { return 0; }
const char *lunar_cuda_unavailable_reason(void) { return REASON; }
lunar_status lunar_cuda_check_device(int device) { (void)device; return lunar_cuda_init(); }
lunar_status lunar_cuda_set_device(int device) { (void)device; return lunar_cuda_init(); }
int lunar_cuda_current_device(void) { return 0; }
int lunar_cuda_default_device(void) { return 0; }
void lunar_cuda_set_local_rank(int local_rank) { (void)local_rank; }
void *lunar_cuda_stream(int device) { (void)device; lunar_cuda_init(); return NULL; }
void *lunar_cuda_comm_stream(int device) { (void)device; lunar_cuda_init(); return NULL; }
lunar_status lunar_cuda_synchronize(int device) { (void)device; return lunar_cuda_init(); }

lunar_status lunar_cuda_memcpy(void *dst, int dst_device, const void *src, int src_device, size_t nbytes) {
    if (dst_device < 0 && src_device < 0) {
        if (nbytes) memmove(dst, src, nbytes);
        return LUNAR_OK;
    }
    return lunar_cuda_init();
}

lunar_status lunar_cuda_copy_strided(int device, void *dst, const int64_t *dst_stride, const void *src,
                                     const int64_t *src_stride, const int64_t *shape, int ndim, size_t elem_size) {
    (void)device; (void)dst; (void)dst_stride; (void)src; (void)src_stride; (void)shape; (void)ndim; (void)elem_size;
    return lunar_cuda_init();
}

lunar_status lunar_cuda_memset(int device, void *ptr, int value, size_t nbytes) {
    (void)device; (void)ptr; (void)value; (void)nbytes;
    return lunar_cuda_init();
}

/* 64 bytes before the block keep it 64-byte aligned, like device.c's header */
void *lunar_cuda_host_alloc(size_t nbytes) {
    char *base = aligned_alloc(64, 64 + (nbytes + 63) / 64 * 64);
    if (!base) {
        char b[32];
        lunar_error(LUNAR_ERR_OOM, "host_alloc: out of host memory allocating %s",
                    lunar_format_bytes(nbytes, b, sizeof b));
        return NULL;
    }
    return base + 64;
}

void lunar_cuda_host_free(void *ptr) {
    if (ptr) free((char *)ptr - 64);
}

int lunar_cuda_host_is_pinned(const void *ptr) { (void)ptr; return 0; }

lunar_status lunar_cuda_device_name(int device, char *buf, size_t n) {
    (void)device; if (n) buf[0] = 0;
    return lunar_cuda_init();
}

lunar_status lunar_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes) {
    (void)device; *free_bytes = *total_bytes = 0;
    return lunar_cuda_init();
}

lunar_status lunar_cuda_capability(int device, int *major, int *minor) {
    (void)device; *major = *minor = 0;
    return lunar_cuda_init();
}

const struct lunar_backend *lunar_cuda_backend(int device) {
    (void)device;
    lunar_cuda_init();
    return NULL;
}

void lunar_cuda_set_tf32(int on) { (void)on; }
int lunar_cuda_tf32(void) { return 0; }
lunar_status lunar_cuda_take_error(void) { return LUNAR_OK; }
void lunar_cuda_record_error(const char *file, int line, const char *what, const char *msg) {
    (void)file; (void)line; (void)what; (void)msg;
}

#endif /* !LUNAR_USE_CUDA */
