/*
 * core/data/idx.c: the IDX format of the MNIST family (data.h).
 *
 * Format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): bytes 0-1
 * zero, byte 2 the element type (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32,
 * 0x0E f64), byte 3 the number of dims, then each dim as a big-endian u32, then
 * the data in row-major order, big-endian. MNIST and Fashion-MNIST use
 * 0x00000803 for images [N, 28, 28] and 0x00000801 for labels [N].
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static size_t idx_elem_size(int type) {
    switch (type) {
    case 0x08: case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: case 0x0D: return 4;
    case 0x0E: return 8;
    default: return 0;
    }
}

lunar_status lunar_idx_parse(const uint8_t *buf, size_t len, const char *name, lunar_idx *out) {
    if (!name) name = "<memory>";
    if (!out) return lunar_error(LUNAR_ERR_ARG, "IDX %s: no output struct", name);
    memset(out, 0, sizeof *out);
    if (!buf && len > 0) return lunar_error(LUNAR_ERR_ARG, "IDX %s: NULL buffer", name);
    if (len < 4)
        return lunar_error(LUNAR_ERR_FORMAT,
                           "IDX %s: truncated: expected at least 4 bytes of magic, got %zu bytes",
                           name, len);
    uint32_t magic = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 | buf[3];
    size_t esize = idx_elem_size(buf[2]);
    if (buf[0] != 0 || buf[1] != 0 || esize == 0)
        return lunar_error(LUNAR_ERR_FORMAT,
                           "IDX %s: bad magic number 0x%08X (expected 0x000008NN, e.g. 0x00000803 "
                           "for images, 0x00000801 for labels; is it an IDX file?)",
                           name, magic);
    int ndim = buf[3];
    if (ndim < 1 || ndim > LUNAR_IDX_MAX_DIMS)
        return lunar_error(LUNAR_ERR_FORMAT, "IDX %s: magic 0x%08X declares %d dims (1..%d supported)",
                           name, magic, ndim, LUNAR_IDX_MAX_DIMS);
    size_t header = 4 + 4 * (size_t)ndim;
    if (len < header)
        return lunar_error(LUNAR_ERR_FORMAT,
                           "IDX %s: truncated: expected %zu header bytes, got %zu bytes", name,
                           header, len);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *p = buf + 4 + 4 * i;
        uint32_t d = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        out->dims[i] = d;
        if (d != 0 && numel > UINT64_MAX / d) overflow = 1;
        else numel *= d;
    }
    if (overflow || numel > (SIZE_MAX - header) / esize)
        return lunar_error(LUNAR_ERR_FORMAT, "IDX %s: dims overflow the addressable size", name);
    size_t nbytes = (size_t)numel * esize, expected = header + nbytes;
    if (len < expected)
        return lunar_error(LUNAR_ERR_FORMAT,
                           "IDX %s: truncated: expected %zu bytes (header %zu + data %zu), got %zu bytes",
                           name, expected, header, nbytes, len);
    if (len > expected)
        return lunar_error(LUNAR_ERR_FORMAT,
                           "IDX %s: %zu trailing bytes: expected %zu bytes (header %zu + data %zu), "
                           "got %zu bytes",
                           name, len - expected, expected, header, nbytes, len);
    out->type = buf[2];
    out->ndim = ndim;
    out->elem_size = esize;
    out->data = buf + header;
    out->nbytes = nbytes;
    return LUNAR_OK;
}

lunar_dataset *lunar_dataset_from_idx(const uint8_t *images, size_t images_len,
                                      const uint8_t *labels, size_t labels_len,
                                      const char *images_name, const char *labels_name) {
    if (!images_name) images_name = "<images>";
    if (!labels_name) labels_name = "<labels>";
    lunar_idx im, lb;
    if (lunar_idx_parse(images, images_len, images_name, &im) != LUNAR_OK) return NULL;
    if (lunar_idx_parse(labels, labels_len, labels_name, &lb) != LUNAR_OK) return NULL;
    if (im.type != 0x08 || im.ndim != 3) {
        lunar_error(LUNAR_ERR_FORMAT,
                    "IDX %s: bad magic number 0x0000%02X%02X for images (expected 0x00000803: "
                    "u8 [N, rows, cols])",
                    images_name, im.type, im.ndim);
        return NULL;
    }
    if (lb.type != 0x08 || lb.ndim != 1) {
        lunar_error(LUNAR_ERR_FORMAT,
                    "IDX %s: bad magic number 0x0000%02X%02X for labels (expected 0x00000801: "
                    "u8 [N])",
                    labels_name, lb.type, lb.ndim);
        return NULL;
    }
    if (im.dims[1] == 0 || im.dims[2] == 0 || im.dims[1] > INT32_MAX || im.dims[2] > INT32_MAX) {
        lunar_error(LUNAR_ERR_FORMAT, "IDX %s: images of %u x %u pixels (must be >= 1)", images_name,
                    im.dims[1], im.dims[2]);
        return NULL;
    }
    if (im.dims[0] != lb.dims[0]) {
        lunar_error(LUNAR_ERR_FORMAT, "IDX: %s holds %u images but %s holds %u labels", images_name,
                    im.dims[0], labels_name, lb.dims[0]);
        return NULL;
    }
    int64_t n = im.dims[0];
    int maxl = 0;
    for (int64_t i = 0; i < n; i++)
        if (lb.data[i] > maxl) maxl = lb.data[i];
    int size[2] = {(int)im.dims[1], (int)im.dims[2]};
    lunar_dataset *ds = lunar_dataset_new(LUNAR_U8, n, 1, 2, size, maxl + 1);
    if (!ds) return NULL;
    if (im.nbytes) memcpy(ds->pixels, im.data, im.nbytes);
    for (int64_t i = 0; i < n; i++) ds->labels[i] = lb.data[i];
    return ds;
}

lunar_dataset *lunar_dataset_load_idx(const char *images_path, const char *labels_path) {
    if (!images_path || !labels_path) {
        lunar_error(LUNAR_ERR_ARG, "IDX: images and labels paths are required");
        return NULL;
    }
    uint8_t *ib = NULL, *lb = NULL;
    size_t il = 0, ll = 0;
    if (lunar_data_read_file(images_path, &ib, &il) != LUNAR_OK) return NULL;
    if (lunar_data_read_file(labels_path, &lb, &ll) != LUNAR_OK) {
        free(ib);
        return NULL;
    }
    lunar_dataset *ds = lunar_dataset_from_idx(ib, il, lb, ll, images_path, labels_path);
    free(ib);
    free(lb);
    return ds;
}
