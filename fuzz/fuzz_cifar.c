/*
 * fuzz/fuzz_cifar.c: libFuzzer target for the CIFAR-10 binary reader
 * (core/data/cifar.c): lunar_cifar10_parse on memory, and
 * lunar_dataset_load_cifar10 on the same bytes as a file, raw or gzipped.
 *
 * Input: byte 0 selects the path (0: memory, 1: a file as given, 2: a file
 * gzip-compressed here first, 3: as 2, split into two files at a point given
 * by byte 1; the datasets must agree with the memory one), the rest is the
 * CIFAR-10 data. A dataset must have 3 x 32 x 32 u8 samples, labels 0..9 and
 * the records' bytes.
 *
 *   make fuzz-build && build/fuzz/fuzz_cifar build/fuzz/corpus/cifar fuzz/corpus/cifar
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h" /* FUZZ_CHECK, fuzz_memfd_write, fuzz_gzip */
#include "lunar/data.h"  /* lunar_cifar10_parse, lunar_dataset_* */

#define RECORD 3073

/* Checks a dataset against the records buf[len]. */
static void check_dataset(lunar_dataset *ds, const uint8_t *buf, size_t len) {
    int64_t n = lunar_dataset_count(ds);
    FUZZ_CHECK(n >= 0 && (size_t)n * RECORD == len);
    FUZZ_CHECK(lunar_dataset_channels(ds) == 3 && lunar_dataset_ndim_spatial(ds) == 2);
    FUZZ_CHECK(lunar_dataset_size(ds, 0) == 32 && lunar_dataset_size(ds, 1) == 32);
    FUZZ_CHECK(lunar_dataset_num_classes(ds) == 10 && lunar_dataset_dtype(ds) == LUNAR_U8);
    const uint8_t *px = lunar_dataset_pixels(ds);
    const int32_t *lb = lunar_dataset_labels(ds);
    for (int64_t i = 0; i < n; i++) {
        FUZZ_CHECK(lb[i] == buf[(size_t)i * RECORD] && lb[i] <= 9);
        FUZZ_CHECK(memcmp(px + (size_t)i * 3072, buf + (size_t)i * RECORD + 1, 3072) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    int mode = data[0] & 3;
    const uint8_t *p = data + 2;
    size_t len = size - 2;
    lunar_clear_error();
    lunar_dataset *dm = lunar_cifar10_parse(p, len, "<fuzz>");
    if (dm) check_dataset(dm, p, len);
    else fuzz_expect_error();
    if (mode != 0) {
        static fuzz_memfd_file f1, f2;
        const uint8_t *a = p, *b = NULL;
        size_t al = len, bl = 0;
        uint8_t *ga = NULL, *gb = NULL;
        if (mode == 3) {
            size_t split = (size_t)data[1] * RECORD;
            if (split > len) split = len;
            al = split;
            b = p + split;
            bl = len - split;
        }
        if (mode >= 2) {
            FUZZ_CHECK(fuzz_gzip(a, al, 6, &ga, &al) == 0);
            a = ga;
            if (b) {
                FUZZ_CHECK(fuzz_gzip(b, bl, 6, &gb, &bl) == 0);
                b = gb;
            }
        }
        const char *paths[2];
        paths[0] = fuzz_memfd_write(&f1, "cifar1", a, al);
        paths[1] = b ? fuzz_memfd_write(&f2, "cifar2", b, bl) : NULL;
        if (paths[0] && (!b || paths[1])) {
            lunar_clear_error();
            lunar_dataset *df = lunar_dataset_load_cifar10(paths, b ? 2 : 1);
            if (df) check_dataset(df, p, len);
            else fuzz_expect_error();
            /* raw bytes that cannot be gzip read as they are; gzip reads as its content */
            int comparable = mode >= 2 || len == 0 || p[0] != 0x1f;
            /* (mode 3 splits at a record boundary: the two files hold the same records) */
            if (comparable) FUZZ_CHECK((df == NULL) == (dm == NULL));
            lunar_dataset_free(df);
        }
        free(ga);
        free(gb);
    }
    lunar_dataset_free(dm);
    return 0;
}
