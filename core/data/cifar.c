/*
 * core/data/cifar.c: CIFAR-10 binary batches (data.h).
 *
 * Format (https://www.cs.toronto.edu/~kriz/cifar.html, "Binary version"): a
 * file is a sequence of 3073-byte records, 1 label byte (0..9) then 3072 pixel
 * bytes: the 1024 red values of the 32 x 32 image in row-major order, then the
 * green, then the blue (CHW). data_batch_1..5.bin hold 10000 records each,
 * test_batch.bin 10000.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CIFAR_PIXELS 3072
#define CIFAR_RECORD (1 + CIFAR_PIXELS)

/* Checks that buf[len] is whole CIFAR-10 records with labels 0..9. */
static lunar_status cifar_check(const uint8_t *buf, size_t len, const char *name) {
    if (len % CIFAR_RECORD != 0)
        return lunar_error(LUNAR_ERR_FORMAT,
                           "CIFAR-10 %s: %zu bytes is not a whole number of %d-byte records "
                           "(%zu records and %zu bytes over; truncated or not a CIFAR-10 binary file)",
                           name, len, CIFAR_RECORD, len / CIFAR_RECORD, len % CIFAR_RECORD);
    size_t n = len / CIFAR_RECORD;
    for (size_t i = 0; i < n; i++)
        if (buf[i * CIFAR_RECORD] > 9)
            return lunar_error(LUNAR_ERR_FORMAT,
                               "CIFAR-10 %s: record %zu has label %d (expected 0..9; a CIFAR-100 "
                               "file, or not CIFAR-10?)",
                               name, i, buf[i * CIFAR_RECORD]);
    return LUNAR_OK;
}

static void cifar_copy(lunar_dataset *ds, int64_t at, const uint8_t *buf, size_t n) {
    uint8_t *px = ds->pixels;
    for (size_t i = 0; i < n; i++) {
        ds->labels[at + (int64_t)i] = buf[i * CIFAR_RECORD];
        memcpy(px + (size_t)(at + (int64_t)i) * CIFAR_PIXELS, buf + i * CIFAR_RECORD + 1,
               CIFAR_PIXELS);
    }
}

static const int cifar_size[2] = {32, 32};

lunar_dataset *lunar_cifar10_parse(const uint8_t *buf, size_t len, const char *name) {
    if (!name) name = "<memory>";
    if (!buf && len > 0) {
        lunar_error(LUNAR_ERR_ARG, "CIFAR-10 %s: NULL buffer", name);
        return NULL;
    }
    if (cifar_check(buf, len, name) != LUNAR_OK) return NULL;
    size_t n = len / CIFAR_RECORD;
    lunar_dataset *ds = lunar_dataset_new(LUNAR_U8, (int64_t)n, 3, 2, cifar_size, 10);
    if (!ds) return NULL;
    cifar_copy(ds, 0, buf, n);
    return ds;
}

lunar_dataset *lunar_dataset_load_cifar10(const char *const *paths, int npaths) {
    if (!paths || npaths < 1) {
        lunar_error(LUNAR_ERR_ARG, "CIFAR-10: no files given (npaths %d)", npaths);
        return NULL;
    }
    uint8_t **bufs = calloc((size_t)npaths, sizeof *bufs);
    size_t *lens = calloc((size_t)npaths, sizeof *lens);
    lunar_dataset *ds = NULL;
    if (!bufs || !lens) {
        lunar_error(LUNAR_ERR_OOM, "CIFAR-10: out of memory");
        goto done;
    }
    size_t total = 0;
    for (int f = 0; f < npaths; f++) {
        if (lunar_data_read_file(paths[f], &bufs[f], &lens[f]) != LUNAR_OK) goto done;
        if (cifar_check(bufs[f], lens[f], paths[f]) != LUNAR_OK) goto done;
        total += lens[f] / CIFAR_RECORD;
    }
    ds = lunar_dataset_new(LUNAR_U8, (int64_t)total, 3, 2, cifar_size, 10);
    if (!ds) goto done;
    int64_t at = 0;
    for (int f = 0; f < npaths; f++) {
        size_t n = lens[f] / CIFAR_RECORD;
        cifar_copy(ds, at, bufs[f], n);
        at += (int64_t)n;
    }
done:
    if (bufs)
        for (int f = 0; f < npaths; f++) free(bufs[f]);
    free(bufs);
    free(lens);
    return ds;
}
