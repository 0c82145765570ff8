/*
 * core/tensor.c: tensors over refcounted storage (tensor.h), in the manner of
 * Torch7's TH: a header (dtype, shape, strides, offset) points at a storage
 * that views share. Element-wise copies handle any strides and convert dtypes.
 *
 * Storage may live on a CUDA device (lunar/cuda.h). Every function here works
 * for device tensors too: copies between the host and a device take the
 * contiguous fast path (one cudaMemcpy) when both sides are contiguous with
 * the same dtype, and otherwise go through a host staging copy of the span of
 * storage the tensor covers (strided layouts, dtype conversions); element
 * access copies one element. None of it is fast; the ops (ops.h) are.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar/cuda.h"
#include "lunar/half.h"
#include "lunar/tensor.h"

#ifdef _OPENMP
#include <omp.h>
#define TENSOR_OMP(x) _Pragma(#x)   /* an OpenMP pragma, gone (no warning) in a NO_OMP build */
#else
#define TENSOR_OMP(x)
#endif

static const struct { const char *name, *st; size_t size; } dtypes[LUNAR_NUM_DTYPES] = {
    [LUNAR_F32] = {"f32", "F32", 4},  [LUNAR_BF16] = {"bf16", "BF16", 2},
    [LUNAR_F16] = {"f16", "F16", 2},  [LUNAR_I32] = {"i32", "I32", 4},
    [LUNAR_I64] = {"i64", "I64", 8},  [LUNAR_U8] = {"u8", "U8", 1},
    [LUNAR_F64] = {"f64", "F64", 8},
};

size_t lunar_dtype_size(lunar_dtype d) { return (unsigned)d < LUNAR_NUM_DTYPES ? dtypes[d].size : 0; }
const char *lunar_dtype_name(lunar_dtype d) { return (unsigned)d < LUNAR_NUM_DTYPES ? dtypes[d].name : "?"; }
const char *lunar_dtype_st_name(lunar_dtype d) { return (unsigned)d < LUNAR_NUM_DTYPES ? dtypes[d].st : "?"; }

int lunar_dtype_from_name(const char *name) {
    for (int i = 0; i < LUNAR_NUM_DTYPES; i++)
        if (!strcmp(name, dtypes[i].name) || !strcmp(name, dtypes[i].st)) return i;
    if (!strcmp(name, "float32") || !strcmp(name, "float")) return LUNAR_F32;
    if (!strcmp(name, "bfloat16")) return LUNAR_BF16;
    if (!strcmp(name, "int32")) return LUNAR_I32;
    if (!strcmp(name, "int64")) return LUNAR_I64;
    if (!strcmp(name, "float64") || !strcmp(name, "double")) return LUNAR_F64;
    return -1;
}

// ----------------------------------------------------------------------------
// bf16 / f16 conversions

/* lunar/half.h's integer conversions, the same bits as the CUDA kernels' */
uint16_t lunar_f32_to_bf16(float x) { return lunar_half_f32_to_bf16(x); }
float lunar_bf16_to_f32(uint16_t x) { return lunar_half_bf16_to_f32(x); }
uint16_t lunar_f32_to_f16(float x) { return lunar_half_f32_to_f16(x); }
float lunar_f16_to_f32(uint16_t x) { return lunar_half_f16_to_f32(x); }

// ----------------------------------------------------------------------------
// construction

static int check_shape(int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 0 || ndim > LUNAR_MAX_DIMS)
        return lunar_error(LUNAR_ERR_ARG, "tensor: %d dims (at most %d)", ndim, LUNAR_MAX_DIMS);
    /* nz, the product of the nonzero sizes, bounds the contiguous strides even
     * when a zero size makes numel 0: [0, 2^40, 2^40] would overflow them */
    int64_t n = 1, nz = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return lunar_error(LUNAR_ERR_ARG, "tensor: negative size %lld in dim %d",
                                             (long long)shape[i], i);
        if (shape[i] && nz > INT64_MAX / 16 / shape[i])
            return lunar_error(LUNAR_ERR_ARG, "tensor: size overflows");
        n *= shape[i];
        if (shape[i]) nz *= shape[i];
    }
    *numel = n;
    return LUNAR_OK;
}

static void set_contiguous_strides(lunar_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) { t->stride[i] = s; s *= t->shape[i]; }
}

static lunar_tensor *header(lunar_dtype dtype, int ndim, const int64_t *shape) {
    lunar_tensor *t = calloc(1, sizeof *t);
    if (!t) { lunar_error(LUNAR_ERR_OOM, "tensor: out of memory for a header"); return NULL; }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    set_contiguous_strides(t);
    return t;
}

lunar_tensor *lunar_tensor_new(lunar_dtype dtype, int ndim, const int64_t *shape, int device) {
    int64_t numel;
    if ((unsigned)dtype >= LUNAR_NUM_DTYPES) { lunar_error(LUNAR_ERR_DTYPE, "tensor: bad dtype %d", dtype); return NULL; }
    if (check_shape(ndim, shape, &numel)) return NULL;
    size_t nbytes = (size_t)numel * lunar_dtype_size(dtype);
    if (device != LUNAR_CPU && lunar_cuda_check_device(device)) {
        /* "no CUDA device available (...)" or an index out of range, plus the request */
        char msg[512], b[32];
        snprintf(msg, sizeof msg, "%s", lunar_last_error());
        lunar_error(LUNAR_ERR_DEVICE, "%s; cannot allocate %s on cuda:%d", msg,
                    lunar_format_bytes(nbytes, b, sizeof b), device);
        return NULL;
    }
    void *data = lunar_alloc(device, nbytes);
    if (!data) return NULL;
    lunar_storage *s = malloc(sizeof *s);
    lunar_tensor *t = header(dtype, ndim, shape);
    if (!s || !t) { free(s); free(t); lunar_free(device, data, nbytes); return NULL; }
    *s = (lunar_storage){.data = data, .nbytes = nbytes, .device = device, .refcount = 1};
    t->storage = s;
    return t;
}

lunar_tensor *lunar_tensor_zeros(lunar_dtype dtype, int ndim, const int64_t *shape, int device) {
    lunar_tensor *t = lunar_tensor_new(dtype, ndim, shape, device);
    if (!t) return NULL;
    if (device == LUNAR_CPU) {
        memset(t->storage->data, 0, t->storage->nbytes);
    } else if (lunar_cuda_memset(device, t->storage->data, 0, t->storage->nbytes)) {
        lunar_tensor_free(t);
        return NULL;
    }
    return t;
}

lunar_tensor *lunar_tensor_from_data(void *data, lunar_dtype dtype, int ndim, const int64_t *shape) {
    int64_t numel;
    if (check_shape(ndim, shape, &numel)) return NULL;
    lunar_storage *s = malloc(sizeof *s);
    lunar_tensor *t = header(dtype, ndim, shape);
    if (!s || !t) { free(s); free(t); return NULL; }
    *s = (lunar_storage){.data = data, .nbytes = (size_t)numel * lunar_dtype_size(dtype),
                         .device = LUNAR_CPU, .refcount = 1, .external = 1};
    t->storage = s;
    return t;
}

static void storage_decref(lunar_storage *s) {
    if (!s || --s->refcount > 0) return;
    if (!s->external) lunar_free(s->device, s->data, s->nbytes);
    free(s);
}

void lunar_tensor_release(lunar_tensor *t) {
    if (!t) return;
    storage_decref(t->storage);
    t->storage = NULL;
}

void lunar_tensor_free(lunar_tensor *t) {
    if (!t) return;
    lunar_tensor_release(t);
    free(t);
}

lunar_tensor *lunar_tensor_view(const lunar_tensor *t) {
    if (!t->storage) { lunar_error(LUNAR_ERR_ARG, "tensor: use of a released tensor"); return NULL; }
    lunar_tensor *v = malloc(sizeof *v);
    if (!v) { lunar_error(LUNAR_ERR_OOM, "tensor: out of memory for a header"); return NULL; }
    *v = *t;
    v->storage->refcount++;
    return v;
}

// ----------------------------------------------------------------------------
// views

static int norm_dim(const lunar_tensor *t, int dim, const char *op) {
    int d = dim < 0 ? dim + t->ndim : dim;
    if (d < 0 || d >= t->ndim) {
        lunar_error(LUNAR_ERR_ARG, "%s: dim %d out of range for a %d-dim tensor", op, dim, t->ndim);
        return -1;
    }
    return d;
}

lunar_tensor *lunar_tensor_narrow(const lunar_tensor *t, int dim, int64_t start, int64_t length) {
    int d = norm_dim(t, dim, "narrow");
    if (d < 0) return NULL;
    if (start < 0 || length < 0 || start + length > t->shape[d]) {
        lunar_error(LUNAR_ERR_ARG, "narrow: [%lld, %lld) out of range for size %lld in dim %d",
                    (long long)start, (long long)(start + length), (long long)t->shape[d], d);
        return NULL;
    }
    lunar_tensor *v = lunar_tensor_view(t);
    if (!v) return NULL;
    v->offset += start * t->stride[d];
    v->shape[d] = length;
    return v;
}

lunar_tensor *lunar_tensor_select(const lunar_tensor *t, int dim, int64_t index) {
    int d = norm_dim(t, dim, "select");
    if (d < 0) return NULL;
    if (index < 0 || index >= t->shape[d]) {
        lunar_error(LUNAR_ERR_ARG, "select: index %lld out of range for size %lld in dim %d",
                    (long long)index, (long long)t->shape[d], d);
        return NULL;
    }
    lunar_tensor *v = lunar_tensor_view(t);
    if (!v) return NULL;
    v->offset += index * t->stride[d];
    for (int i = d; i < t->ndim - 1; i++) { v->shape[i] = t->shape[i + 1]; v->stride[i] = t->stride[i + 1]; }
    v->ndim--;
    return v;
}

lunar_tensor *lunar_tensor_transpose(const lunar_tensor *t, int dim0, int dim1) {
    int a = norm_dim(t, dim0, "transpose"), b = norm_dim(t, dim1, "transpose");
    if (a < 0 || b < 0) return NULL;
    lunar_tensor *v = lunar_tensor_view(t);
    if (!v) return NULL;
    v->shape[a] = t->shape[b]; v->shape[b] = t->shape[a];
    v->stride[a] = t->stride[b]; v->stride[b] = t->stride[a];
    return v;
}

lunar_tensor *lunar_tensor_permute(const lunar_tensor *t, const int *dims) {
    int seen[LUNAR_MAX_DIMS] = {0};
    for (int i = 0; i < t->ndim; i++) {
        int d = norm_dim(t, dims[i], "permute");
        if (d < 0) return NULL;
        if (seen[d]++) { lunar_error(LUNAR_ERR_ARG, "permute: dim %d repeated", d); return NULL; }
    }
    lunar_tensor *v = lunar_tensor_view(t);
    if (!v) return NULL;
    for (int i = 0; i < t->ndim; i++) {
        int d = norm_dim(t, dims[i], "permute");
        v->shape[i] = t->shape[d];
        v->stride[i] = t->stride[d];
    }
    return v;
}

lunar_tensor *lunar_tensor_reshape(const lunar_tensor *t, int ndim, const int64_t *shape) {
    int64_t numel = lunar_tensor_numel(t), known = 1, s[LUNAR_MAX_DIMS];
    int infer = -1;
    if (ndim < 0 || ndim > LUNAR_MAX_DIMS) { lunar_error(LUNAR_ERR_ARG, "reshape: %d dims", ndim); return NULL; }
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1) {
            if (infer >= 0) { lunar_error(LUNAR_ERR_ARG, "reshape: more than one -1"); return NULL; }
            infer = i;
        } else known *= s[i];
    }
    if (infer >= 0 && known > 0 && numel % known == 0) s[infer] = numel / known;
    else if (infer >= 0) known = -1;
    int64_t total = 1;
    for (int i = 0; i < ndim; i++) total *= s[i];
    char buf[128];
    if (known < 0 || total != numel) {
        lunar_error(LUNAR_ERR_SHAPE, "reshape: cannot view %s (%lld elements) with the given shape",
                    lunar_shape_str(t, buf, sizeof buf), (long long)numel);
        return NULL;
    }
    if (!lunar_tensor_is_contiguous(t)) {
        lunar_error(LUNAR_ERR_ARG, "reshape: tensor %s is not contiguous (call contiguous() first)",
                    lunar_shape_str(t, buf, sizeof buf));
        return NULL;
    }
    lunar_tensor *v = lunar_tensor_view(t);
    if (!v) return NULL;
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = s[i];
    set_contiguous_strides(v);
    return v;
}

// ----------------------------------------------------------------------------
// queries

int64_t lunar_tensor_numel(const lunar_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t lunar_tensor_nbytes(const lunar_tensor *t) {
    return (size_t)lunar_tensor_numel(t) * lunar_dtype_size(t->dtype);
}

int lunar_tensor_is_contiguous(const lunar_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

int lunar_tensor_device(const lunar_tensor *t) { return t->storage ? t->storage->device : LUNAR_CPU; }

void *lunar_tensor_data(const lunar_tensor *t) {
    if (!t->storage) return NULL;
    return (char *)t->storage->data + t->offset * (int64_t)lunar_dtype_size(t->dtype);
}

char *lunar_shape_str(const lunar_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

// ----------------------------------------------------------------------------
// element access and copies

static inline double load(const void *base, lunar_dtype d, int64_t i) {
    switch (d) {
    case LUNAR_F32: return ((const float *)base)[i];
    case LUNAR_BF16: return lunar_bf16_to_f32(((const uint16_t *)base)[i]);
    case LUNAR_F16: return lunar_f16_to_f32(((const uint16_t *)base)[i]);
    case LUNAR_I32: return ((const int32_t *)base)[i];
    case LUNAR_I64: return (double)((const int64_t *)base)[i];
    case LUNAR_U8: return ((const uint8_t *)base)[i];
    case LUNAR_F64: return ((const double *)base)[i];
    default: return 0;
    }
}

static inline void store(void *base, lunar_dtype d, int64_t i, double v) {
    switch (d) {
    case LUNAR_F32: ((float *)base)[i] = (float)v; break;
    case LUNAR_BF16: ((uint16_t *)base)[i] = lunar_f32_to_bf16((float)v); break;
    case LUNAR_F16: ((uint16_t *)base)[i] = lunar_f32_to_f16((float)v); break;
    case LUNAR_I32: ((int32_t *)base)[i] = (int32_t)v; break;
    case LUNAR_I64: ((int64_t *)base)[i] = (int64_t)v; break;
    case LUNAR_U8: ((uint8_t *)base)[i] = (uint8_t)v; break;
    case LUNAR_F64: ((double *)base)[i] = v; break;
    default: break;
    }
}

/* Element offset (in elements, relative to the storage) of flat index i. */
static inline int64_t elem_offset(const lunar_tensor *t, int64_t i) {
    int64_t off = t->offset;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t idx = i % t->shape[d];
        i /= t->shape[d];
        off += idx * t->stride[d];
    }
    return off;
}

double lunar_tensor_get(const lunar_tensor *t, int64_t index) {
    if (!t->storage || index < 0 || index >= lunar_tensor_numel(t)) return NAN;
    if (t->storage->device != LUNAR_CPU) {   /* one element from the device */
        size_t es = lunar_dtype_size(t->dtype);
        unsigned char buf[8];
        if (lunar_cuda_memcpy(buf, LUNAR_CPU, (char *)t->storage->data + elem_offset(t, index) * (int64_t)es,
                              t->storage->device, es))
            return NAN;
        return load(buf, t->dtype, 0);
    }
    return load(t->storage->data, t->dtype, elem_offset(t, index));
}

lunar_status lunar_tensor_set(lunar_tensor *t, int64_t index, double value) {
    if (!t->storage) return lunar_error(LUNAR_ERR_ARG, "set: use of a released tensor");
    if (index < 0 || index >= lunar_tensor_numel(t))
        return lunar_error(LUNAR_ERR_ARG, "set: index %lld out of range (%lld elements)",
                           (long long)index, (long long)lunar_tensor_numel(t));
    if (t->storage->device != LUNAR_CPU) {   /* one element to the device */
        size_t es = lunar_dtype_size(t->dtype);
        unsigned char buf[8];
        store(buf, t->dtype, 0, value);
        return lunar_cuda_memcpy((char *)t->storage->data + elem_offset(t, index) * (int64_t)es,
                                 t->storage->device, buf, LUNAR_CPU, es);
    }
    store(t->storage->data, t->dtype, elem_offset(t, index), value);
    return LUNAR_OK;
}

/* ----------------------------------------------------------------------------
 * host staging of device tensors: the span of storage elements a tensor covers
 * (strides are never negative), [offset, offset + sum (shape_i - 1) stride_i]. */

static int64_t span_elems(const lunar_tensor *t) {
    int64_t last = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return 0;
        last += (t->shape[i] - 1) * t->stride[i];
    }
    return last + 1;
}

/* A host tensor with t's shape, strides and dtype over a host copy of t's span
 * (t on a device). NULL with an error on failure. */
static lunar_tensor *download_span(const lunar_tensor *t) {
    size_t es = lunar_dtype_size(t->dtype), nbytes = (size_t)span_elems(t) * es;
    lunar_storage *s = malloc(sizeof *s);
    lunar_tensor *h = malloc(sizeof *h);
    void *data = lunar_alloc(LUNAR_CPU, nbytes);
    if (!s || !h || !data) {
        free(s); free(h); lunar_free(LUNAR_CPU, data, nbytes);
        lunar_error(LUNAR_ERR_OOM, "copy: out of host memory for a staging buffer of %zu bytes", nbytes);
        return NULL;
    }
    *s = (lunar_storage){.data = data, .nbytes = nbytes, .device = LUNAR_CPU, .refcount = 1};
    *h = *t;
    h->offset = 0;
    h->storage = s;
    if (lunar_cuda_memcpy(data, LUNAR_CPU, (char *)t->storage->data + t->offset * (int64_t)es,
                          t->storage->device, nbytes)) {
        lunar_tensor_free(h);
        return NULL;
    }
    return h;
}

/* Writes the span of host staging tensor h (from download_span(t)) back to t. */
static lunar_status upload_span(lunar_tensor *t, const lunar_tensor *h) {
    size_t es = lunar_dtype_size(t->dtype);
    return lunar_cuda_memcpy((char *)t->storage->data + t->offset * (int64_t)es, t->storage->device,
                             h->storage->data, LUNAR_CPU, h->storage->nbytes);
}

static lunar_status copy_host(lunar_tensor *dst, const lunar_tensor *src);

/* dst <- src when at least one of them is on a device (shapes checked). */
static lunar_status copy_device(lunar_tensor *dst, const lunar_tensor *src) {
    int dd = dst->storage->device, sd = src->storage->device;
    int64_t n = lunar_tensor_numel(dst);
    if (n == 0) return LUNAR_OK;
    if (dst->dtype == src->dtype && lunar_tensor_is_contiguous(dst) && lunar_tensor_is_contiguous(src))
        return lunar_cuda_memcpy(lunar_tensor_data(dst), dd, lunar_tensor_data(src), sd,
                                 (size_t)n * lunar_dtype_size(dst->dtype));
    if (dd == sd && dst->dtype == src->dtype && dst->ndim <= 8)   /* one device: a strided-copy kernel */
        return lunar_cuda_copy_strided(dd, lunar_tensor_data(dst), dst->stride, lunar_tensor_data(src), src->stride,
                                       dst->shape, dst->ndim, lunar_dtype_size(dst->dtype));
    /* src on the host (a view, or a staging copy of its span) */
    lunar_tensor *hs = sd == LUNAR_CPU ? lunar_tensor_view(src) : download_span(src);
    if (!hs) return lunar_last_status();
    lunar_status st;
    if (dd == LUNAR_CPU) {
        st = copy_host(dst, hs);
    } else if (lunar_tensor_is_contiguous(dst)) {
        lunar_tensor *hd = lunar_tensor_new(dst->dtype, dst->ndim, dst->shape, LUNAR_CPU);
        st = hd ? copy_host(hd, hs) : lunar_last_status();
        if (!st) st = lunar_cuda_memcpy(lunar_tensor_data(dst), dd, lunar_tensor_data(hd), LUNAR_CPU,
                                        (size_t)n * lunar_dtype_size(dst->dtype));
        lunar_tensor_free(hd);
    } else {   /* read, modify and write back the span of dst */
        lunar_tensor *hd = download_span(dst);
        st = hd ? copy_host(hd, hs) : lunar_last_status();
        if (!st) st = upload_span(dst, hd);
        lunar_tensor_free(hd);
    }
    lunar_tensor_free(hs);
    return st;
}

lunar_tensor *lunar_tensor_to_device(const lunar_tensor *t, int device) {
    if (!t->storage) { lunar_error(LUNAR_ERR_ARG, "to: use of a released tensor"); return NULL; }
    lunar_tensor *out = lunar_tensor_new(t->dtype, t->ndim, t->shape, device);
    if (!out) return NULL;
    if (lunar_tensor_copy(out, t)) { lunar_tensor_free(out); return NULL; }
    return out;
}

lunar_status lunar_tensor_copy(lunar_tensor *dst, const lunar_tensor *src) {
    char a[128], b[128];
    if (!dst->storage || !src->storage) return lunar_error(LUNAR_ERR_ARG, "copy: use of a released tensor");
    int same = dst->ndim == src->ndim;
    for (int i = 0; same && i < dst->ndim; i++) same = dst->shape[i] == src->shape[i];
    if (!same)
        return lunar_error(LUNAR_ERR_SHAPE, "copy: destination %s and source %s differ in shape",
                           lunar_shape_str(dst, a, sizeof a), lunar_shape_str(src, b, sizeof b));
    if (dst->storage->device != LUNAR_CPU || src->storage->device != LUNAR_CPU) return copy_device(dst, src);
    return copy_host(dst, src);
}

/* Rows of the last dim walked by an odometer over the outer dims (the
 * element offsets of dst and src follow row by row, no division per row). */
typedef struct { int64_t idx[LUNAR_MAX_DIMS], doff, soff; } row_walk;

static void row_walk_start(row_walk *w, const lunar_tensor *dst, const lunar_tensor *src, int64_t row) {
    int last = dst->ndim - 1;
    w->doff = dst->offset;
    w->soff = src->offset;
    for (int d = last - 1; d >= 0; d--) {
        w->idx[d] = row % dst->shape[d];
        row /= dst->shape[d];
        w->doff += w->idx[d] * dst->stride[d];
        w->soff += w->idx[d] * src->stride[d];
    }
}

static inline void row_walk_next(row_walk *w, const lunar_tensor *dst, const lunar_tensor *src) {
    for (int d = dst->ndim - 2; d >= 0; d--) {
        w->doff += dst->stride[d];
        w->soff += src->stride[d];
        if (++w->idx[d] < dst->shape[d]) return;
        w->doff -= dst->shape[d] * dst->stride[d];
        w->soff -= dst->shape[d] * src->stride[d];
        w->idx[d] = 0;
    }
}

/* dst <- src for 4-byte elements, dst contiguous and src contiguous along its
 * next-to-last dim (the contiguous() of a view whose last two dims are
 * swapped: [B, C, L] of a [B, L, C] tensor): per matrix of the last two dims,
 * panels of 16 source elements in a row (one cache line) written down a
 * column, so both sides stay in L1 whatever the strides; bits as they are. */
static lunar_status transpose_last2_host(lunar_tensor *dst, const lunar_tensor *src) {
    int nd = dst->ndim;
    int64_t R = dst->shape[nd - 2], C = dst->shape[nd - 1], ss = src->stride[nd - 1];
    int64_t mats = lunar_tensor_numel(dst) / (R * C);
    uint32_t *db = (uint32_t *)dst->storage->data + dst->offset;
    const uint32_t *sb = src->storage->data;
    TENSOR_OMP(omp parallel for schedule(static) if (mats * R * C > 1 << 16 && mats > 1))
    for (int64_t m = 0; m < mats; m++) {
        int64_t so = src->offset, rest = m;   /* the source offset of matrix m (outer dims) */
        for (int d = nd - 3; d >= 0; d--) {
            so += rest % dst->shape[d] * src->stride[d];
            rest /= dst->shape[d];
        }
        uint32_t *dm = db + m * R * C;
        const uint32_t *sm = sb + so;
        for (int64_t r0 = 0; r0 < R; r0 += 16) {
            int64_t r1 = r0 + 16 < R ? r0 + 16 : R;
            for (int64_t c = 0; c < C; c++) {
                const uint32_t *sp = sm + c * ss;
                for (int64_t r = r0; r < r1; r++) dm[r * C + c] = sp[r];
            }
        }
    }
    return LUNAR_OK;
}

/* dst <- src, both on the host, shapes equal. Contiguous operands of one
 * dtype: memmove; contiguous f32 <-> bf16 (the casts precision = 'bf16' makes
 * through to()): one vectorizable pass with the conversions of load/store
 * (bf16 -> f32 exact, f32 -> bf16 round to nearest even); strided copies of
 * one dtype (contiguous() of a transposed view): row by row of the last dim
 * (memcpy where both rows are contiguous), the rows' offsets stepped by an
 * odometer; anything else element by element
 * through double (exact for every pair of dtypes but i64 beyond 2^53). */
static lunar_status copy_host(lunar_tensor *dst, const lunar_tensor *src) {
    int64_t n = lunar_tensor_numel(dst);
    int dc = lunar_tensor_is_contiguous(dst), sc = lunar_tensor_is_contiguous(src);
    if (dst->dtype == src->dtype && dc && sc) {
        memmove(lunar_tensor_data(dst), lunar_tensor_data(src), (size_t)n * lunar_dtype_size(dst->dtype));
        return LUNAR_OK;
    }
    void *db = dst->storage->data;
    const void *sb = src->storage->data;
    if (dc && sc && dst->dtype == LUNAR_F32 && src->dtype == LUNAR_BF16) {
        float *d = (float *)db + dst->offset;
        const uint16_t *h = (const uint16_t *)sb + src->offset;
        TENSOR_OMP(omp parallel for simd schedule(static) if (n > 1 << 16))
        for (int64_t i = 0; i < n; i++) d[i] = lunar_half_bf16_to_f32(h[i]);
        return LUNAR_OK;
    }
    if (dc && sc && dst->dtype == LUNAR_BF16 && src->dtype == LUNAR_F32) {
        uint16_t *h = (uint16_t *)db + dst->offset;
        const float *f = (const float *)sb + src->offset;
        TENSOR_OMP(omp parallel for simd schedule(static) if (n > 1 << 16))
        for (int64_t i = 0; i < n; i++) h[i] = lunar_half_f32_to_bf16(f[i]);
        return LUNAR_OK;
    }
    size_t es = lunar_dtype_size(dst->dtype);
    if (dst->dtype == src->dtype && dc && es == 4 && dst->ndim >= 2 && n > 0 && src->stride[dst->ndim - 2] == 1 &&
        src->stride[dst->ndim - 1] != 1)
        return transpose_last2_host(dst, src);
    if (dst->dtype == src->dtype && dst->ndim > 0 && n > 0 && (es == 2 || es == 4 || es == 8)) {
        /* strided copy of one dtype, bits moved as they are, row by row of the last dim */
        int last = dst->ndim - 1;
        int64_t len = dst->shape[last], rows = n / len;
        int64_t ds = dst->stride[last], ss = src->stride[last];
        TENSOR_OMP(omp parallel if (n > 1 << 16))
        {
            int64_t nt = 1, t = 0;
#ifdef _OPENMP
            nt = omp_get_num_threads();
            t = omp_get_thread_num();
#endif
            int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
            row_walk w;
            if (r0 < r1) row_walk_start(&w, dst, src, r0);
            for (int64_t r = r0; r < r1; r++) {
                if (ds == 1 && ss == 1) {   /* rows contiguous on both sides (a select or narrow of dim 1..) */
                    memcpy((char *)db + w.doff * (int64_t)es, (const char *)sb + w.soff * (int64_t)es,
                           (size_t)len * es);
                } else if (es == 4) {
                    uint32_t *dp = (uint32_t *)db + w.doff;
                    const uint32_t *sp = (const uint32_t *)sb + w.soff;
                    for (int64_t j = 0; j < len; j++) dp[j * ds] = sp[j * ss];
                } else if (es == 2) {
                    uint16_t *dp = (uint16_t *)db + w.doff;
                    const uint16_t *sp = (const uint16_t *)sb + w.soff;
                    for (int64_t j = 0; j < len; j++) dp[j * ds] = sp[j * ss];
                } else {
                    uint64_t *dp = (uint64_t *)db + w.doff;
                    const uint64_t *sp = (const uint64_t *)sb + w.soff;
                    for (int64_t j = 0; j < len; j++) dp[j * ds] = sp[j * ss];
                }
                row_walk_next(&w, dst, src);
            }
        }
        return LUNAR_OK;
    }
    TENSOR_OMP(omp parallel for schedule(static) if (n > 1 << 16))
    for (int64_t i = 0; i < n; i++)
        store(db, dst->dtype, elem_offset(dst, i), load(sb, src->dtype, elem_offset(src, i)));
    return LUNAR_OK;
}

lunar_status lunar_tensor_fill(lunar_tensor *t, double value) {
    if (!t->storage) return lunar_error(LUNAR_ERR_ARG, "fill: use of a released tensor");
    int64_t n = lunar_tensor_numel(t);
    if (t->storage->device != LUNAR_CPU) {
        if (n == 0) return LUNAR_OK;
        if (value == 0.0 && !signbit(value) && lunar_tensor_is_contiguous(t))   /* every dtype's zero is 0 bytes */
            return lunar_cuda_memset(t->storage->device, lunar_tensor_data(t), 0, lunar_tensor_nbytes(t));
        lunar_tensor *h = download_span(t);
        if (!h) return lunar_last_status();
        lunar_status st = lunar_tensor_fill(h, value);
        if (!st) st = upload_span(t, h);
        lunar_tensor_free(h);
        return st;
    }
    if (t->dtype == LUNAR_F32 && lunar_tensor_is_contiguous(t)) {
        float *p = lunar_tensor_data(t), v = (float)value;
        for (int64_t i = 0; i < n; i++) p[i] = v;
        return LUNAR_OK;
    }
    for (int64_t i = 0; i < n; i++) store(t->storage->data, t->dtype, elem_offset(t, i), value);
    return LUNAR_OK;
}

lunar_tensor *lunar_tensor_contiguous(const lunar_tensor *t) {
    if (!t->storage) { lunar_error(LUNAR_ERR_ARG, "contiguous: use of a released tensor"); return NULL; }
    if (lunar_tensor_is_contiguous(t)) return lunar_tensor_view(t);
    return lunar_tensor_to_dtype(t, t->dtype);
}

lunar_tensor *lunar_tensor_to_dtype(const lunar_tensor *t, lunar_dtype dtype) {
    lunar_tensor *out = lunar_tensor_new(dtype, t->ndim, t->shape, lunar_tensor_device(t));
    if (!out) return NULL;
    if (lunar_tensor_copy(out, t)) { lunar_tensor_free(out); return NULL; }
    return out;
}
