/*
 * core/io/tfevents.c: TensorBoard event files (io.h, lunar_tfevents_*).
 *
 * A file is a sequence of TFRecord records (tensorflow/core/lib/io/record_writer.cc)
 *   uint64 length (little-endian) | uint32 masked_crc32c(length bytes)
 *   | data[length] | uint32 masked_crc32c(data)
 * with masked_crc(c) = ((c >> 15) | (c << 17)) + 0xa282ead8, each data an
 * Event protobuf (core/io/tfevents.proto, compiled by protoc-c; encoded by
 * libprotobuf-c). The first record is Event{wall_time, file_version =
 * "brain.Event:2"}; then one Event{wall_time, step, summary{value{tag,
 * simple_value}...}} per call of lunar_tfevents_scalars. CRC32C (Castagnoli)
 * is ISA-L's crc32_iscsi (Debian's libisal). Every record goes to the file in
 * one write(2) on a descriptor opened with O_APPEND: a crash of the process
 * keeps every record written before it (nothing waits in a user-space buffer).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "lunar/io.h"
#include "tfevents.pb-c.h"

struct lunar_tfevents {
    int fd;
    char *path;
};

uint32_t lunar_crc32c(const void *data, size_t len) {
    /* crc32_iscsi takes the running register (init 0xffffffff) and returns it
     * without the final inversion; its length is an int */
    uint32_t crc = 0xffffffffu;
    const unsigned char *p = data;
    while (len > 0) {
        int k = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        crc = crc32_iscsi((unsigned char *)p, k, crc);
        p += k;
        len -= (size_t)k;
    }
    return crc ^ 0xffffffffu;
}

/* wall_time, or the current time (CLOCK_REALTIME) for a negative one */
static double wall_or_now(double wall_time) {
    if (wall_time >= 0) return wall_time;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t masked_crc(const void *data, size_t len) {
    uint32_t c = lunar_crc32c(data, len);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Frames `event` as one TFRecord and writes it with one write(2). */
static lunar_status write_event(lunar_tfevents *w, const Lunar__Tfevents__Event *event) {
    size_t n = lunar__tfevents__event__get_packed_size(event);
    unsigned char *rec = malloc(n + 16);
    if (!rec) return lunar_error(LUNAR_ERR_OOM, "tfevents %s: cannot allocate a record of %zu bytes", w->path, n);
    uint64_t len = n;
    for (int i = 0; i < 8; i++) rec[i] = (unsigned char)(len >> (8 * i));
    put_le32(rec + 8, masked_crc(rec, 8));
    lunar__tfevents__event__pack(event, rec + 12);
    put_le32(rec + 12 + n, masked_crc(rec + 12, n));
    size_t total = n + 16, done = 0;
    while (done < total) {
        ssize_t r = write(w->fd, rec + done, total - done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r == 0 ? EIO : errno;
            free(rec);
            return lunar_error(LUNAR_ERR_IO, "cannot write TensorBoard event file %s: %s", w->path, strerror(e));
        }
        done += (size_t)r;
    }
    free(rec);
    return LUNAR_OK;
}

lunar_tfevents *lunar_tfevents_open(const char *dir, double wall_time) {
    if (!dir || !*dir) {
        lunar_error(LUNAR_ERR_ARG, "tfevents: the directory is empty");
        return NULL;
    }
    if (lunar_mkdirs(dir) != LUNAR_OK) return NULL;
    wall_time = wall_or_now(wall_time);
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    lunar_tfevents *w = calloc(1, sizeof *w);
    size_t cap = strlen(dir) + strlen(host) + 64;
    char *path = malloc(cap);
    if (!w || !path) {
        free(w);
        free(path);
        lunar_error(LUNAR_ERR_OOM, "tfevents: out of memory opening a file in %s", dir);
        return NULL;
    }
    snprintf(path, cap, "%s/events.out.tfevents.%010lld.%s", dir, (long long)wall_time, host);
    w->path = path;
    w->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        lunar_error(LUNAR_ERR_IO, "cannot open TensorBoard event file %s: %s", path, strerror(errno));
        free(path);
        free(w);
        return NULL;
    }
    Lunar__Tfevents__Event ev = LUNAR__TFEVENTS__EVENT__INIT;
    ev.wall_time = wall_time;
    ev.what_case = LUNAR__TFEVENTS__EVENT__WHAT_FILE_VERSION;
    ev.file_version = (char *)"brain.Event:2";
    if (write_event(w, &ev) != LUNAR_OK) {
        lunar_status s = lunar_last_status();
        lunar_tfevents_close(w);
        lunar_error(s, "%s", lunar_last_error());
        return NULL;
    }
    return w;
}

lunar_status lunar_tfevents_scalars(lunar_tfevents *w, int64_t step, double wall_time, const char *const *tags,
                                    const float *values, int n) {
    if (!w) return lunar_error(LUNAR_ERR_ARG, "tfevents: the writer is closed");
    if (n < 1 || !tags || !values) return lunar_error(LUNAR_ERR_ARG, "tfevents %s: no scalar to write", w->path);
    for (int i = 0; i < n; i++) {
        if (!tags[i] || !tags[i][0])
            return lunar_error(LUNAR_ERR_ARG, "tfevents %s: scalar %d (step %lld) has an empty tag", w->path, i + 1,
                               (long long)step);
    }
    Lunar__Tfevents__Summary__Value *vals = malloc((size_t)n * sizeof *vals);
    Lunar__Tfevents__Summary__Value **ptrs = malloc((size_t)n * sizeof *ptrs);
    if (!vals || !ptrs) {
        free(vals);
        free(ptrs);
        return lunar_error(LUNAR_ERR_OOM, "tfevents %s: out of memory", w->path);
    }
    for (int i = 0; i < n; i++) {
        lunar__tfevents__summary__value__init(&vals[i]);
        vals[i].tag = (char *)tags[i];
        vals[i].value_case = LUNAR__TFEVENTS__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
        vals[i].simple_value = values[i];
        ptrs[i] = &vals[i];
    }
    Lunar__Tfevents__Summary summary = LUNAR__TFEVENTS__SUMMARY__INIT;
    summary.n_value = (size_t)n;
    summary.value = ptrs;
    Lunar__Tfevents__Event ev = LUNAR__TFEVENTS__EVENT__INIT;
    ev.wall_time = wall_or_now(wall_time);
    ev.step = step;
    ev.what_case = LUNAR__TFEVENTS__EVENT__WHAT_SUMMARY;
    ev.summary = &summary;
    lunar_status s = write_event(w, &ev);
    free(vals);
    free(ptrs);
    return s;
}

const char *lunar_tfevents_path(const lunar_tfevents *w) { return w ? w->path : NULL; }

void lunar_tfevents_close(lunar_tfevents *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    free(w->path);
    free(w);
}
