/*
 * core/data/internal.h: what the data readers and the loader share (not
 * installed, not public).
 */
#ifndef LUNAR_DATA_INTERNAL_H
#define LUNAR_DATA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/data.h"

struct lunar_dataset {
    lunar_dtype dtype;          /* LUNAR_U8 or LUNAR_F32 */
    int64_t n;
    int channels;
    int ndim_spatial;           /* 2 or 3 */
    int size[3];
    int num_classes;
    int64_t sample_numel;       /* channels * prod(size) */
    void *pixels;               /* [n, channels, size...] */
    int32_t *labels;            /* [n] */
    /* Datasets read from files at load time (image_folder.c): pixels is NULL
     * and `sample` writes sample idx of `epoch` (augmentation keyed by
     * (seed, epoch, idx)) as u8 [channels, size...] to out and its label to
     * *label; it may be called from several threads at once. LUNAR_OK or an
     * error with a message. `impl` is freed by free_impl. */
    lunar_status (*sample)(const lunar_dataset *ds, int64_t idx, int64_t epoch, uint64_t seed,
                           uint8_t *out, int32_t *label);
    void *impl;
    void (*free_impl)(void *impl);
};

/* Reads a whole file through zlib (gzip or plain) into a malloc'd buffer
 * (*buf, *len; *buf may be NULL when *len is 0). Errors name the path: cannot
 * open (with the Debian package hint under /usr/share/datasets/fashion-mnist),
 * a directory, a read error, a truncated or corrupt gzip stream. */
lunar_status lunar_data_read_file(const char *path, uint8_t **buf, size_t *len);

#endif
