/*
 * lunar/tensor.h: n-dimensional tensors over refcounted storage (TH lineage).
 *
 * A tensor is a dtype, a shape, strides in elements, an offset in elements and
 * a pointer to a refcounted storage on one device. Views (narrow, select,
 * reshape of a contiguous tensor, transpose, permute) share storage and cost no
 * copy. Storage memory comes from the caching allocator (alloc.h). Compute is
 * f32; bf16 is a storage dtype with conversions (round to nearest even) and
 * the operand dtype of the bf16 ops of precision = 'bf16' (ops.h).
 * Functions that can fail return NULL or a lunar_status and leave a message
 * (status.h).
 */
#ifndef LUNAR_TENSOR_H
#define LUNAR_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/alloc.h"
#include "lunar/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LUNAR_MAX_DIMS 8

typedef enum {
    LUNAR_F32 = 0,
    LUNAR_BF16,
    LUNAR_F16,
    LUNAR_I32,
    LUNAR_I64,
    LUNAR_U8,
    LUNAR_F64,
    LUNAR_NUM_DTYPES
} lunar_dtype;

typedef struct lunar_storage {
    void *data;
    size_t nbytes;
    int device;        /* LUNAR_CPU or a CUDA ordinal */
    int refcount;
    int external;      /* 1: data is not owned (not freed) */
} lunar_storage;

typedef struct lunar_tensor {
    lunar_dtype dtype;
    int ndim;
    int64_t shape[LUNAR_MAX_DIMS];
    int64_t stride[LUNAR_MAX_DIMS];   /* in elements */
    int64_t offset;                   /* in elements */
    lunar_storage *storage;           /* NULL after lunar_tensor_release */
} lunar_tensor;

/* Bytes per element of a dtype (0 for an invalid one); its name ("f32",
 * "bf16", ...) and its safetensors name ("F32", "BF16", ...; both "?" for an
 * invalid dtype). One table (core/tensor.c) holds all three; the safetensors
 * reader and writer (core/io) use it. */
size_t lunar_dtype_size(lunar_dtype dtype);
const char *lunar_dtype_name(lunar_dtype dtype);
const char *lunar_dtype_st_name(lunar_dtype dtype);
/* Parses either kind of name; returns -1 when unknown. */
int lunar_dtype_from_name(const char *name);

/* A new contiguous tensor of `shape[ndim]` on `device`, uninitialized
 * (lunar_tensor_zeros: zero-filled). NULL on error. */
lunar_tensor *lunar_tensor_new(lunar_dtype dtype, int ndim, const int64_t *shape, int device);
lunar_tensor *lunar_tensor_zeros(lunar_dtype dtype, int ndim, const int64_t *shape, int device);

/* A tensor over memory the caller owns and keeps alive (not freed). */
lunar_tensor *lunar_tensor_from_data(void *data, lunar_dtype dtype, int ndim, const int64_t *shape);

/* Frees the header and drops its reference to the storage. NULL is ignored. */
void lunar_tensor_free(lunar_tensor *t);

/* Drops the storage reference now but keeps the header (shape is kept,
 * storage becomes NULL): what `tensor:free()` and `__close` do in Lua. */
void lunar_tensor_release(lunar_tensor *t);

/* A new header sharing t's storage (same shape, strides, offset). */
lunar_tensor *lunar_tensor_view(const lunar_tensor *t);

/* Views. dim may be negative (counted from the end). NULL on a bad argument. */
lunar_tensor *lunar_tensor_narrow(const lunar_tensor *t, int dim, int64_t start, int64_t length);
lunar_tensor *lunar_tensor_select(const lunar_tensor *t, int dim, int64_t index);
lunar_tensor *lunar_tensor_transpose(const lunar_tensor *t, int dim0, int dim1);
lunar_tensor *lunar_tensor_permute(const lunar_tensor *t, const int *dims);
/* Reshape: a view when t is contiguous, else an error; one entry may be -1. */
lunar_tensor *lunar_tensor_reshape(const lunar_tensor *t, int ndim, const int64_t *shape);

/* A contiguous copy (or a new view when already contiguous). */
lunar_tensor *lunar_tensor_contiguous(const lunar_tensor *t);
/* A contiguous copy with another dtype (f32 <-> bf16/f16/f64/i32/i64/u8). */
lunar_tensor *lunar_tensor_to_dtype(const lunar_tensor *t, lunar_dtype dtype);
/* A contiguous copy (same dtype) on another device (LUNAR_CPU or a CUDA
 * ordinal): host <-> device or device <-> device. NULL with an error, e.g.
 * "no CUDA device available (...)". */
lunar_tensor *lunar_tensor_to_device(const lunar_tensor *t, int device);

/* dst <- src elementwise for any strides, converting dtypes; shapes must have
 * the same number of elements and equal shapes. Either may be on a CUDA device
 * (synchronous: a host destination is ready at return). */
lunar_status lunar_tensor_copy(lunar_tensor *dst, const lunar_tensor *src);
/* Every element of t <- value (converted to t's dtype). */
lunar_status lunar_tensor_fill(lunar_tensor *t, double value);

int64_t lunar_tensor_numel(const lunar_tensor *t);
size_t lunar_tensor_nbytes(const lunar_tensor *t);
int lunar_tensor_is_contiguous(const lunar_tensor *t);
int lunar_tensor_device(const lunar_tensor *t);
/* Address of the first element (storage data + offset), NULL if released. */
void *lunar_tensor_data(const lunar_tensor *t);
/* Element at a flat row-major index of the logical shape, as double. */
double lunar_tensor_get(const lunar_tensor *t, int64_t index);
lunar_status lunar_tensor_set(lunar_tensor *t, int64_t index, double value);

/* Writes "[2, 3]" into buf (size n); returns buf. */
char *lunar_shape_str(const lunar_tensor *t, char *buf, size_t n);

/* bf16 conversions: round to nearest even; NaN stays NaN. */
uint16_t lunar_f32_to_bf16(float x);
float lunar_bf16_to_f32(uint16_t x);
/* IEEE half conversions. */
uint16_t lunar_f32_to_f16(float x);
float lunar_f16_to_f32(uint16_t x);

#ifdef __cplusplus
}
#endif
#endif
