/*
 * core/cuda/internal.h: what the CUDA parts of liblunar share (device.c and
 * the .cu files of core/ops/cuda): the checking macros for CUDA runtime calls. Every
 * runtime, cuBLASLt and NCCL call is checked; a failure reports the call, the
 * file and the line, and never exits (llm.c's cudaCheck, but returning).
 *
 *   CUDA_TRY(call)       in a function returning lunar_status: returns
 *                        LUNAR_ERR_DEVICE with "file:line: call: message [name]"
 *   CUDA_RECORD(call)    anywhere (the void kernels): records the same message
 *                        as the thread's sticky CUDA error (lunar/cuda.h) and
 *                        evaluates to 1 on failure, 0 on success
 * Only with LUNAR_USE_CUDA (include after cuda_runtime_api.h is available).
 */
#ifndef LUNAR_CUDA_INTERNAL_H
#define LUNAR_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>

#include "lunar/cuda.h"
#include "lunar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "cudaErrorMemoryAllocation: out of memory" style text of a runtime error. */
#define LUNAR_CUDA_ERRSTR_FMT "%s [%s]"

#define CUDA_TRY(call)                                                                    \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            (void)cudaGetLastError();                                                     \
            return lunar_error(LUNAR_ERR_DEVICE, "%s:%d: %s: " LUNAR_CUDA_ERRSTR_FMT,     \
                               __FILE__, __LINE__, #call, cudaGetErrorString(e_),         \
                               cudaGetErrorName(e_));                                     \
        }                                                                                 \
    } while (0)

static inline int lunar_cuda_record_rt(cudaError_t e, const char *file, int line, const char *what) {
    if (e == cudaSuccess) return 0;
    (void)cudaGetLastError();   /* clear a non-sticky error so later calls are not blamed */
    char msg[256];
    const char *s = cudaGetErrorString(e), *n = cudaGetErrorName(e);
    int k = 0;
    for (const char *p = s; *p && k < 200; p++) msg[k++] = *p;
    msg[k++] = ' '; msg[k++] = '[';
    for (const char *p = n; *p && k < 250; p++) msg[k++] = *p;
    msg[k++] = ']'; msg[k] = 0;
    lunar_cuda_record_error(file, line, what, msg);
    return 1;
}

#define CUDA_RECORD(call) lunar_cuda_record_rt((call), __FILE__, __LINE__, #call)

#ifdef __cplusplus
}
#endif
#endif
