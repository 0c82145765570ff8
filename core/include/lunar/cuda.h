/*
 * lunar/cuda.h: CUDA devices, streams, device memory and the CUDA backend.
 *
 * Every build has these functions. A build with the CUDA backend (make CUDA=1,
 * or nvcc found; -DLUNAR_USE_CUDA) implements them in core/cuda/device.c; a
 * build without it links core/cuda/cuda_none.c, where no device is ever
 * available and the reason says so. Nothing here touches the CUDA runtime
 * until a device is first asked for (lunar_cuda_init), so a machine without a
 * GPU or driver runs the CPU code unchanged.
 *
 * Devices are CUDA ordinals (tensor.h: `cuda:N`, device N >= 0). Each device
 * gets, on first use, one compute stream (every kernel, GEMM and copy of
 * Lunar runs on it, in order) and one communication stream (for NCCL). Device
 * memory comes from a caching allocator (per device: free lists of exact
 * rounded sizes, counters of bytes in use, peak and reserved), registered
 * with lunar_alloc (alloc.h) by lunar_cuda_init: lunar_alloc(N, bytes) on a
 * CUDA device is served by it. A freed block is handed out again only to work
 * on the same compute stream, which stream order makes safe without a
 * synchronization (stream-ordered reuse); work on the communication stream
 * must be ordered before its memory is freed (an event, as comm_nccl does).
 *
 * Errors: functions return a lunar_status (or NULL / 0) with a message naming
 * the device and the CUDA call, with file and line, e.g.
 *   "no CUDA device available (cudaGetDeviceCount: CUDA driver version is
 *    insufficient for CUDA runtime version [cudaErrorInsufficientDriver])"
 *   "cuda:3: device index out of range (2 CUDA devices: cuda:0 .. cuda:1)"
 *   "cuda:0: out of memory allocating 1.5 GiB (3.2 GiB in use, 80 GiB total)"
 * The CUDA kernels (kernels.h signatures) return void, so a failure inside one
 * (a launch error, a cuBLASLt status) is kept as the calling thread's sticky
 * CUDA error, which lunar_cuda_take_error returns and clears; the op layer
 * (ops.c) turns it into the op's status.
 */
#ifndef LUNAR_CUDA_H
#define LUNAR_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lunar_backend;

/* 1 when this build has the CUDA backend (compiled with nvcc), else 0. */
int lunar_cuda_compiled(void);

/* Initializes the CUDA runtime once (thread-safe): counts the devices and
 * registers the device allocator. LUNAR_OK when at least one device exists,
 * else LUNAR_ERR_DEVICE with "no CUDA device available (<reason>)". */
lunar_status lunar_cuda_init(void);

/* Number of usable devices (0 when none; never negative). Initializes. */
int lunar_cuda_device_count(void);
/* 1 when at least one device is usable. */
int lunar_cuda_is_available(void);
/* Why no device is usable ("" when one is): the failing call and CUDA's
 * message, or that the build has no CUDA backend. */
const char *lunar_cuda_unavailable_reason(void);

/* LUNAR_OK when `device` names a usable device, else an error naming it
 * (none available, or the index out of range). Initializes. */
lunar_status lunar_cuda_check_device(int device);
/* Makes `device` current for the calling thread (cudaSetDevice) and creates
 * its streams on first use. */
lunar_status lunar_cuda_set_device(int device);
/* The calling thread's current device (the last lunar_cuda_set_device; else
 * the process default device, see below). */
int lunar_cuda_current_device(void);
/* The process default device, what `cuda` without an index means: the local
 * rank modulo the device count (set by lunar_cuda_set_local_rank; 0 before). */
int lunar_cuda_default_device(void);
/* Records the local rank (ranks on this node) that picks the default device. */
void lunar_cuda_set_local_rank(int local_rank);

/* The device's compute and communication streams (cudaStream_t), created on
 * first use; NULL with an error when the device is not usable. */
void *lunar_cuda_stream(int device);
void *lunar_cuda_comm_stream(int device);
/* Waits for all work on the device's streams. */
lunar_status lunar_cuda_synchronize(int device);

/* Copies nbytes between any two of host (device LUNAR_CPU, -1) and CUDA
 * devices, on the compute stream of the device involved (the destination's
 * when both are devices), and waits for it, so a host destination is ready and
 * a host source may be reused at return. */
lunar_status lunar_cuda_memcpy(void *dst, int dst_device, const void *src, int src_device,
                               size_t nbytes);
/* dst <- src elementwise on one device, both strided views (strides in
 * elements, row-major order of `shape`, ndim <= 8) of elem_size-byte elements
 * (1, 2, 4 or 8), pointers at their first element; queued on the compute
 * stream (a kernel: no host staging). */
lunar_status lunar_cuda_copy_strided(int device, void *dst, const int64_t *dst_stride, const void *src,
                                     const int64_t *src_stride, const int64_t *shape, int ndim, size_t elem_size);
/* Sets nbytes of device memory to the byte `value`, on the compute stream. */
lunar_status lunar_cuda_memset(int device, void *ptr, int value, size_t nbytes);

/* Host memory for the data loader: page-locked (cudaHostAlloc, portable) when a
 * CUDA device is available, so copies to the device are fast and may be
 * asynchronous; ordinary 64-byte-aligned memory otherwise. NULL with an error
 * on failure. Free only with lunar_cuda_host_free. */
void *lunar_cuda_host_alloc(size_t nbytes);
void lunar_cuda_host_free(void *ptr);
/* 1 when ptr came from lunar_cuda_host_alloc and is page-locked. */
int lunar_cuda_host_is_pinned(const void *ptr);

/* The device's name ("NVIDIA H100 80GB HBM3") and memory (cudaMemGetInfo). */
lunar_status lunar_cuda_device_name(int device, char *buf, size_t n);
lunar_status lunar_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes);
/* Compute capability, e.g. 9 and 0 for sm_90. */
lunar_status lunar_cuda_capability(int device, int *major, int *minor);

/* The CUDA backend (ops.h): sets `device` current and returns the kernel
 * table, or NULL with an error (no device, index out of range, no backend). */
const struct lunar_backend *lunar_cuda_backend(int device);

/* TF32 tensor cores for the f32 GEMMs (cuBLASLt CUBLAS_COMPUTE_32F_FAST_TF32):
 * off by default (full f32, as PyTorch's default for matmul); on makes linear
 * layers ~2-8x faster with ~1e-3 relative error. Process-wide. */
void lunar_cuda_set_tf32(int on);
int lunar_cuda_tf32(void);

/* Returns the calling thread's sticky CUDA error (LUNAR_OK when none) and
 * clears it, leaving its message as the thread's lunar_last_error. */
lunar_status lunar_cuda_take_error(void);
/* Records a failure as the sticky error when none is pending (first wins);
 * for the CUDA kernels, which cannot return one. */
void lunar_cuda_record_error(const char *file, int line, const char *what, const char *msg);

#ifdef __cplusplus
}
#endif
#endif
