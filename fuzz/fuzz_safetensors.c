/*
 * fuzz/fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (lunar_safetensors_parse, core/io/safetensors.c) and, on what it accepts,
 * the writer (lunar_safetensors_serialize).
 *
 * The input is a whole safetensors file. On an error the reader must leave a
 * message. On success every tensor's metadata is checked against the file
 * (name, dtype, shape, nbytes = numel * dtype size, the tensors tiling the
 * data buffer, find(name) giving the same entry), every byte is read (summed),
 * the tensor is copied into a lunar tensor and converted to f32 through the
 * public API (lunar_tensor_to_dtype), the metadata pairs are walked, and the
 * file is written back with the writer and read again: the second reading
 * must give the same tensors and metadata.
 *
 *   make fuzz-build && build/fuzz/fuzz_safetensors -dict=fuzz/safetensors.dict \
 *       build/fuzz/corpus/safetensors fuzz/corpus/safetensors
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"  /* FUZZ_CHECK, fuzz_expect_error */
#include "lunar/alloc.h"  /* LUNAR_CPU, lunar_alloc_empty_cache */
#include "lunar/io.h"     /* lunar_safetensors_* */
#include "lunar/tensor.h" /* lunar_tensor_new, lunar_tensor_to_dtype */

/* Reads every byte of e and converts it to f32 through a lunar tensor. */
static void touch_entry(const lunar_safetensors_entry *e) {
    const uint8_t *p = e->data;
    volatile unsigned sum = 0;
    for (size_t i = 0; i < e->nbytes; i++) sum += p[i];
    (void)sum;
    lunar_tensor *t = lunar_tensor_new(e->dtype, e->ndim, e->shape, LUNAR_CPU);
    FUZZ_CHECK(t != NULL);
    FUZZ_CHECK(lunar_tensor_nbytes(t) == e->nbytes);
    if (e->nbytes) memcpy(lunar_tensor_data(t), e->data, e->nbytes);
    lunar_tensor *f = lunar_tensor_to_dtype(t, LUNAR_F32);
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(lunar_tensor_numel(f) == lunar_tensor_numel(t));
    const float *x = lunar_tensor_data(f);
    volatile float fsum = 0;
    for (int64_t i = 0; i < lunar_tensor_numel(f); i++) fsum += x[i];
    (void)fsum;
    lunar_tensor_free(f);
    lunar_tensor_free(t);
}

/* Checks what the reader returned against the input file. */
static void check_handle(const lunar_safetensors *st, const uint8_t *data, size_t size) {
    uint64_t hsize = 0;
    for (int i = 7; i >= 0; i--) hsize = hsize << 8 | data[i];
    FUZZ_CHECK(size >= 8 && hsize <= size - 8);
    uint64_t buflen = size - 8 - hsize, total = 0;
    int n = lunar_safetensors_count(st);
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK(lunar_safetensors_entry_at(st, -1) == NULL);
    FUZZ_CHECK(lunar_safetensors_entry_at(st, n) == NULL);
    for (int i = 0; i < n; i++) {
        const lunar_safetensors_entry *e = lunar_safetensors_entry_at(st, i);
        FUZZ_CHECK(e && e->name);
        FUZZ_CHECK(strcmp(e->name, "__metadata__") != 0);
        FUZZ_CHECK(lunar_safetensors_find(st, e->name) == e);
        FUZZ_CHECK(strcmp(lunar_dtype_st_name(e->dtype), "?") != 0);
        FUZZ_CHECK(e->ndim >= 0 && e->ndim <= LUNAR_MAX_DIMS);
        uint64_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            FUZZ_CHECK(e->shape[d] >= 0);
            numel *= (uint64_t)e->shape[d];   /* wraps harmlessly if nbytes is 0 */
        }
        FUZZ_CHECK(e->nbytes == 0 || numel * lunar_dtype_size(e->dtype) == e->nbytes);
        FUZZ_CHECK(e->nbytes <= buflen);
        total += e->nbytes;
        touch_entry(e);
    }
    FUZZ_CHECK(total == buflen);   /* the tensors tile the data buffer */
    int m = lunar_safetensors_metadata_count(st);
    FUZZ_CHECK(m >= 0);
    FUZZ_CHECK(lunar_safetensors_metadata_at(st, m, NULL, NULL) == -1);
    for (int i = 0; i < m; i++) {
        const char *k = NULL, *v = NULL;
        FUZZ_CHECK(lunar_safetensors_metadata_at(st, i, &k, &v) == 0 && k && v);
        FUZZ_CHECK(lunar_safetensors_metadata(st, k) == v);
        volatile size_t l = strlen(k) + strlen(v);
        (void)l;
    }
}

/* Writes st back with the writer, reads it again and compares. */
static void check_round_trip(const lunar_safetensors *st) {
    int n = lunar_safetensors_count(st), m = lunar_safetensors_metadata_count(st);
    lunar_safetensors_entry *es = calloc((size_t)n + 1, sizeof *es);
    const char **keys = calloc((size_t)m + 1, sizeof *keys);
    const char **vals = calloc((size_t)m + 1, sizeof *vals);
    FUZZ_CHECK(es && keys && vals);
    for (int i = 0; i < n; i++) es[i] = *lunar_safetensors_entry_at(st, i);
    for (int i = 0; i < m; i++) lunar_safetensors_metadata_at(st, i, &keys[i], &vals[i]);
    uint8_t *out = NULL;
    size_t len = 0;
    lunar_status s = lunar_safetensors_serialize(es, n, keys, vals, m, &out, &len);
    FUZZ_CHECK(s == LUNAR_OK);
    lunar_safetensors *st2 = lunar_safetensors_parse(out, len, "<round trip>");
    FUZZ_CHECK(st2 != NULL);
    FUZZ_CHECK(lunar_safetensors_count(st2) == n);
    FUZZ_CHECK(lunar_safetensors_metadata_count(st2) == m);
    for (int i = 0; i < n; i++) {
        const lunar_safetensors_entry *a = &es[i], *b = lunar_safetensors_entry_at(st2, i);
        FUZZ_CHECK(b && strcmp(a->name, b->name) == 0);
        FUZZ_CHECK(a->dtype == b->dtype && a->ndim == b->ndim && a->nbytes == b->nbytes);
        FUZZ_CHECK(memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim) == 0);
        FUZZ_CHECK(a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0);
    }
    for (int i = 0; i < m; i++) {
        const char *v = lunar_safetensors_metadata(st2, keys[i]);
        FUZZ_CHECK(v && strcmp(v, vals[i]) == 0);
    }
    lunar_safetensors_close(st2);
    free(out);
    free(es);
    free(keys);
    free(vals);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lunar_clear_error();
    lunar_safetensors *st = lunar_safetensors_parse(data, size, "<fuzz>");
    if (!st) {
        fuzz_expect_error();
        return 0;
    }
    FUZZ_CHECK(strcmp(lunar_safetensors_path(st), "<fuzz>") == 0);
    check_handle(st, data, size);
    check_round_trip(st);
    lunar_safetensors_close(st);
    lunar_alloc_empty_cache(LUNAR_CPU);   /* so LeakSanitizer sees every tensor */
    return 0;
}
