/*
 * fuzz/fuzz_common.h: what the fuzz targets share (header-only, static).
 *
 *   FUZZ_CHECK(cond)    an invariant of the API under test: a failure aborts,
 *                       which libFuzzer (and fuzz/replay_main.c) report as a crash
 *   fuzz_memfd_file     a reusable in-memory file with a path (/proc/self/fd/N),
 *                       so the path-based readers (gzip through zlib) are fuzzed
 *                       without touching the disk
 *   fuzz_gzip           gzip-compresses a buffer (zlib, windowBits 31)
 *
 * Built by `make fuzz-build` with clang -fsanitize=fuzzer,address,undefined and
 * by `make test` with gcc and fuzz/replay_main.c (see fuzz/README.md).
 */
#ifndef LUNAR_FUZZ_COMMON_H
#define LUNAR_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>     /* memfd_create */
#include <unistd.h>       /* ftruncate, pwrite */
#include <zlib.h>         /* deflate (gzip wrapper) */

#include "lunar/status.h" /* lunar_last_error, lunar_clear_error */

/* Aborts with the condition and line when an invariant does not hold. */
#define FUZZ_CHECK(cond)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, lunar_last_error());                                   \
            abort();                                                                        \
        }                                                                                   \
    } while (0)

/* A failing reader must leave a message (DESIGN.md: errors the caller can show). */
static inline void fuzz_expect_error(void) {
    FUZZ_CHECK(lunar_last_error()[0] != 0);
    lunar_clear_error();
}

/* An in-memory file, created once per process and rewritten per input. */
typedef struct {
    int fd;
    char path[64];
} fuzz_memfd_file;

/* Creates (on first use) the file and replaces its content with buf[len].
 * Returns its path, or NULL when memfd is unavailable. */
static inline const char *fuzz_memfd_write(fuzz_memfd_file *f, const char *name, const void *buf,
                                           size_t len) {
    if (f->fd <= 0) {
        f->fd = memfd_create(name, MFD_CLOEXEC);
        if (f->fd < 0) return NULL;
        snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    }
    if (ftruncate(f->fd, 0) != 0) return NULL;
    const uint8_t *p = buf;
    size_t off = 0;
    while (off < len) {
        ssize_t w = pwrite(f->fd, p + off, len - off, (off_t)off);
        if (w <= 0) return NULL;
        off += (size_t)w;
    }
    return f->path;
}

/* gzip of buf[len] into a malloc'd *out (*out_len bytes); level 0..9. Returns
 * 0 on success. */
static inline int fuzz_gzip(const uint8_t *buf, size_t len, int level, uint8_t **out,
                            size_t *out_len) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
    uLong cap = deflateBound(&zs, (uLong)len) + 32;
    uint8_t *o = malloc(cap);
    if (!o) {
        deflateEnd(&zs);
        return -1;
    }
    zs.next_in = (Bytef *)(uintptr_t)buf;
    zs.avail_in = (uInt)len;
    zs.next_out = o;
    zs.avail_out = (uInt)cap;
    int r = deflate(&zs, Z_FINISH);
    deflateEnd(&zs);
    if (r != Z_STREAM_END) {
        free(o);
        return -1;
    }
    *out = o;
    *out_len = cap - zs.avail_out;
    return 0;
}

#endif
