/*
 * core/data/dataset.c: the in-memory dataset (data.h) and the file reader the
 * IDX and CIFAR readers share (zlib, so .gz and plain files read alike).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "internal.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"

static const char *package_hint(const char *path) {
    size_t n = strlen(FMNIST_DIR);
    if (strncmp(path, FMNIST_DIR, n) == 0 && (path[n] == '/' || path[n] == 0))
        return " (install the Debian package dataset-fashion-mnist)";
    return "";
}

/* gzerror's message without the "<fd:N>: " that gzdopen streams carry. */
static const char *gz_message(gzFile gz, int *err) {
    const char *m = gzerror(gz, err);
    if (m && strncmp(m, "<fd:", 4) == 0) {
        const char *c = strstr(m, ": ");
        if (c) m = c + 2;
    }
    return m ? m : "unknown zlib error";
}

lunar_status lunar_data_read_file(const char *path, uint8_t **buf, size_t *len) {
    *buf = NULL;
    *len = 0;
    if (!path) return lunar_error(LUNAR_ERR_ARG, "data: file path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lunar_error(LUNAR_ERR_IO, "cannot open %s: %s%s", path, strerror(errno),
                           package_hint(path));
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return lunar_error(LUNAR_ERR_IO, "cannot read %s: Is a directory", path);
    }
    gzFile gz = gzdopen(fd, "rb");
    if (!gz) {
        close(fd);
        return lunar_error(LUNAR_ERR_OOM, "cannot read %s: out of memory for the zlib stream", path);
    }
    gzbuffer(gz, 1 << 18);
    size_t cap = (S_ISREG(st.st_mode) && st.st_size > 0) ? (size_t)st.st_size : 65536, n = 0;
    uint8_t *data = malloc(cap);
    if (!data) {
        gzclose(gz);
        return lunar_error(LUNAR_ERR_OOM, "cannot read %s: out of memory (%zu bytes)", path, cap);
    }
    for (;;) {
        if (n == cap) {
            if (cap > SIZE_MAX / 2) {
                free(data);
                gzclose(gz);
                return lunar_error(LUNAR_ERR_OOM, "cannot read %s: file too large", path);
            }
            uint8_t *p = realloc(data, cap * 2);
            if (!p) {
                free(data);
                gzclose(gz);
                return lunar_error(LUNAR_ERR_OOM, "cannot read %s: out of memory (%zu bytes)", path,
                                   cap * 2);
            }
            data = p;
            cap *= 2;
        }
        size_t want = cap - n;
        if (want > (size_t)INT_MAX) want = (size_t)INT_MAX;
        int r = gzread(gz, data + n, (unsigned)want);
        if (r < 0) {
            int err;
            const char *msg = gz_message(gz, &err);
            lunar_status st2 = lunar_error(
                err == Z_ERRNO ? LUNAR_ERR_IO : LUNAR_ERR_FORMAT, "cannot read %s: %s%s", path,
                msg,
                err == Z_BUF_ERROR ? " (truncated gzip stream)" : "");
            free(data);
            gzclose(gz);
            return st2;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    int err;
    const char *msg = gz_message(gz, &err);
    if (err != Z_OK) {
        lunar_status st2 = lunar_error(LUNAR_ERR_FORMAT, "cannot read %s: %s%s", path, msg,
                                       err == Z_BUF_ERROR ? " (truncated gzip stream)" : "");
        free(data);
        gzclose(gz);
        return st2;
    }
    gzclose(gz);
    *buf = data;
    *len = n;
    return LUNAR_OK;
}

lunar_dataset *lunar_dataset_new(lunar_dtype dtype, int64_t n, int channels, int ndim_spatial,
                                 const int *size, int num_classes) {
    if (dtype != LUNAR_U8 && dtype != LUNAR_F32) {
        lunar_error(LUNAR_ERR_DTYPE, "dataset: pixel dtype must be u8 or f32 (got %d)", (int)dtype);
        return NULL;
    }
    if (n < 0 || channels < 1 || (ndim_spatial != 2 && ndim_spatial != 3) || !size ||
        num_classes < 1) {
        lunar_error(LUNAR_ERR_ARG,
                    "dataset: bad arguments (n %lld, channels %d, ndim_spatial %d, num_classes %d): "
                    "need n >= 0, channels >= 1, ndim_spatial 2 or 3, num_classes >= 1",
                    (long long)n, channels, ndim_spatial, num_classes);
        return NULL;
    }
    int64_t numel = channels;
    for (int i = 0; i < ndim_spatial; i++) {
        if (size[i] < 1) {
            lunar_error(LUNAR_ERR_ARG, "dataset: spatial size %d is %d (must be >= 1)", i, size[i]);
            return NULL;
        }
        if (numel > INT64_MAX / size[i]) {
            lunar_error(LUNAR_ERR_ARG, "dataset: sample size overflows");
            return NULL;
        }
        numel *= size[i];
    }
    size_t esize = dtype == LUNAR_U8 ? 1 : sizeof(float);
    if (n > 0 && ((uint64_t)numel > SIZE_MAX / esize / (uint64_t)n ||
                  (uint64_t)n > SIZE_MAX / sizeof(int32_t))) {
        lunar_error(LUNAR_ERR_OOM, "dataset: %lld samples of %lld elements overflow memory",
                    (long long)n, (long long)numel);
        return NULL;
    }
    lunar_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        lunar_error(LUNAR_ERR_OOM, "dataset: out of memory");
        return NULL;
    }
    ds->dtype = dtype;
    ds->n = n;
    ds->channels = channels;
    ds->ndim_spatial = ndim_spatial;
    for (int i = 0; i < ndim_spatial; i++) ds->size[i] = size[i];
    ds->num_classes = num_classes;
    ds->sample_numel = numel;
    size_t pbytes = (size_t)n * (size_t)numel * esize;
    ds->pixels = calloc(pbytes ? pbytes : 1, 1);
    ds->labels = calloc(n ? (size_t)n : 1, sizeof(int32_t));
    if (!ds->pixels || !ds->labels) {
        lunar_error(LUNAR_ERR_OOM, "dataset: out of memory for %lld samples (%zu bytes)",
                    (long long)n, pbytes);
        lunar_dataset_free(ds);
        return NULL;
    }
    return ds;
}

void lunar_dataset_free(lunar_dataset *ds) {
    if (!ds) return;
    if (ds->free_impl) ds->free_impl(ds->impl);
    free(ds->pixels);
    free(ds->labels);
    free(ds);
}

int64_t lunar_dataset_count(const lunar_dataset *ds) { return ds ? ds->n : 0; }
int lunar_dataset_channels(const lunar_dataset *ds) { return ds ? ds->channels : 0; }
int lunar_dataset_ndim_spatial(const lunar_dataset *ds) { return ds ? ds->ndim_spatial : 0; }
int lunar_dataset_size(const lunar_dataset *ds, int i) {
    return (ds && i >= 0 && i < ds->ndim_spatial) ? ds->size[i] : -1;
}
int lunar_dataset_num_classes(const lunar_dataset *ds) { return ds ? ds->num_classes : 0; }
lunar_dtype lunar_dataset_dtype(const lunar_dataset *ds) { return ds ? ds->dtype : LUNAR_U8; }
int64_t lunar_dataset_sample_numel(const lunar_dataset *ds) { return ds ? ds->sample_numel : 0; }
void *lunar_dataset_pixels(lunar_dataset *ds) { return ds ? ds->pixels : NULL; }
int32_t *lunar_dataset_labels(lunar_dataset *ds) { return ds ? ds->labels : NULL; }
