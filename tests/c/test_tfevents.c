/*
 * tests/c/test_tfevents.c: TensorBoard event files (core/io/tfevents.c, io.h).
 * Expected values: the CRC32C check values of RFC 3720 (B.4) and of the
 * Rocksoft catalogue ("123456789" -> 0xe3069283), and Event protobufs encoded
 * by hand from the wire format (field key = number << 3 | wire type; doubles
 * and floats little-endian), so a change in the encoder or the framing fails
 * here. tests/fail/test_tensorboard.sh reads whole runs with TensorBoard.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "lunar/io.h"

static char tmpdir[256];

static uint32_t masked(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void test_crc32c_check_values(void) {
    unsigned char buf[32];
    CHECK(lunar_crc32c("123456789", 9) == 0xe3069283u);
    memset(buf, 0, sizeof buf);
    CHECK(lunar_crc32c(buf, 32) == 0x8a9136aau);   /* RFC 3720 B.4: 32 bytes of zeros */
    memset(buf, 0xff, sizeof buf);
    CHECK(lunar_crc32c(buf, 32) == 0x62a8ab43u);   /* 32 bytes of 0xff */
    for (int i = 0; i < 32; i++) buf[i] = (unsigned char)i;
    CHECK(lunar_crc32c(buf, 32) == 0x46dd794eu);   /* 0x00, 0x01, ..., 0x1f */
    CHECK(lunar_crc32c("", 0) == 0);
}

/* Reads the whole file: *n bytes, malloc'ed. */
static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *b = malloc(1 << 16);
    *n = fread(b, 1, 1 << 16, f);
    fclose(f);
    return b;
}

/* One record at b: checks the framing, returns the data length (or -1). */
static long record(const unsigned char *b, size_t avail, const unsigned char *want, size_t want_len) {
    if (avail < 16) return -1;
    uint64_t len = 0;
    for (int i = 0; i < 8; i++) len |= (uint64_t)b[i] << (8 * i);
    if (len != want_len || avail < len + 16) return -1;
    if (le32(b + 8) != masked(lunar_crc32c(b, 8))) return -1;
    if (memcmp(b + 12, want, want_len) != 0) return -1;
    if (le32(b + 12 + len) != masked(lunar_crc32c(b + 12, len))) return -1;
    return (long)len;
}

static void test_records_byte_for_byte(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/tb", tmpdir);
    lunar_tfevents *w = lunar_tfevents_open(dir, 1.5);
    CHECK_MSG(w != NULL, "%s", lunar_last_error());
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    char want_path[700];
    snprintf(want_path, sizeof want_path, "%s/events.out.tfevents.0000000001.%s", dir, host);
    CHECK_MSG(strcmp(lunar_tfevents_path(w), want_path) == 0, "path %s, want %s", lunar_tfevents_path(w), want_path);
    const char *tags[] = {"loss"};
    float vals[] = {0.5f};
    CHECK(lunar_tfevents_scalars(w, 7, 2.0, tags, vals, 1) == LUNAR_OK);
    /* written when the call returns: read before close */
    size_t n;
    unsigned char *b = slurp(want_path, &n);
    CHECK(b != NULL);
    /* Event{wall_time = 1.5 (field 1, fixed64), file_version = "brain.Event:2" (field 3, 13 bytes)} */
    static const unsigned char ev0[] = {0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0x1a, 13, 'b', 'r', 'a', 'i', 'n', '.',
                                        'E', 'v', 'e', 'n', 't', ':', '2'};
    /* Event{wall_time = 2.0, step = 7 (field 2, varint), summary (field 5, 13 bytes) =
     *   Summary{value (field 1, 11 bytes) = Value{tag = "loss" (field 1), simple_value = 0.5 (field 2, fixed32)}}} */
    static const unsigned char ev1[] = {0x09, 0, 0, 0, 0, 0, 0, 0, 0x40, 0x10, 7, 0x2a, 13, 0x0a, 11, 0x0a, 4,
                                        'l', 'o', 's', 's', 0x15, 0, 0, 0, 0x3f};
    long l0 = record(b, n, ev0, sizeof ev0);
    long l1 = l0 < 0 ? -1 : record(b + l0 + 16, n - (size_t)l0 - 16, ev1, sizeof ev1);
    size_t total = sizeof ev0 + sizeof ev1 + 32;
    free(b);
    CHECK_MSG(l0 == (long)sizeof ev0 && l1 == (long)sizeof ev1 && n == total, "records %ld %ld, file %zu bytes", l0,
              l1, n);
    lunar_tfevents_close(w);
    /* a second writer in the same second appends (a file_version record again) */
    w = lunar_tfevents_open(dir, 1.25);
    CHECK(w != NULL);
    lunar_tfevents_close(w);
    b = slurp(want_path, &n);
    free(b);
    CHECK_MSG(n == total + 16 + sizeof ev0, "after a second open: %zu bytes", n);
}

static void test_errors_name_the_problem(void) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/tb2", tmpdir);
    CHECK(lunar_tfevents_open("", -1) == NULL && lunar_last_status() == LUNAR_ERR_ARG);
    /* a directory under a regular file cannot be made */
    char file[300], under[320];
    snprintf(file, sizeof file, "%s/plain", tmpdir);
    FILE *f = fopen(file, "w");
    CHECK(f != NULL);
    fclose(f);
    snprintf(under, sizeof under, "%s/sub", file);
    CHECK(lunar_tfevents_open(under, -1) == NULL && lunar_last_status() == LUNAR_ERR_IO);
    CHECK_MSG(strstr(lunar_last_error(), under) != NULL, "%s", lunar_last_error());
    lunar_tfevents *w = lunar_tfevents_open(dir, -1);
    CHECK(w != NULL);
    const char *tags[] = {"a", ""};
    float vals[] = {1, 2};
    lunar_status s = lunar_tfevents_scalars(w, 3, -1, tags, vals, 2);
    lunar_tfevents_close(w);
    CHECK(s == LUNAR_ERR_ARG);
    CHECK_MSG(strstr(lunar_last_error(), "scalar 2 (step 3) has an empty tag") != NULL, "%s", lunar_last_error());
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lunar_test_tfevents_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_crc32c_check_values);
    RUN(test_records_byte_for_byte);
    RUN(test_errors_name_the_problem);
    lunar_remove_tree(tmpdir);
    return TEST_SUMMARY();
}
