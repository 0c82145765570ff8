/*
 * fuzz/fuzz_image.c: libFuzzer target for the JPEG/PNG decoder of the image
 * datasets (core/data/image_decode.c, lunar_image_decode).
 *
 * Input: byte 0 selects the DCT scale denominator (1, 2, 4 or 8 by its low two
 * bits), the rest is the file. A decode must give a header the same as
 * header_only's, a size within 1..2^28 pixels and, for JPEG, ceil(full /
 * scale) on each side (libjpeg's scaled IDCT); PNG is always full size. Every
 * decoded byte is read (MSan/ASan see uninitialized or short buffers).
 *
 *   make fuzz-build && build/fuzz/fuzz_image build/fuzz/corpus/image build/fuzz-seeds/image
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/data/image.h" /* lunar_image_decode (internal to core/data) */
#include "fuzz_common.h"        /* FUZZ_CHECK, fuzz_expect_error */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int denom = 1 << (data[0] & 3);
    const uint8_t *p = data + 1;
    size_t len = size - 1;
    lunar_image head, img;
    lunar_clear_error();
    lunar_status hs = lunar_image_decode(p, len, "<fuzz>", denom, 1, &head);
    if (hs) fuzz_expect_error();
    else FUZZ_CHECK(head.rgb == NULL && head.full_w > 0 && head.full_h > 0);
    lunar_clear_error();
    lunar_status st = lunar_image_decode(p, len, "<fuzz>", denom, 0, &img);
    if (st) {
        fuzz_expect_error();
        FUZZ_CHECK(img.rgb == NULL);
        return 0;
    }
    FUZZ_CHECK(hs == LUNAR_OK && img.full_w == head.full_w && img.full_h == head.full_h);
    FUZZ_CHECK(img.rgb && img.w > 0 && img.h > 0 && (size_t)img.w * img.h <= ((size_t)1 << 28));
    int is_png = len >= 8 && p[0] == 0x89 && p[1] == 'P';
    int d = is_png ? 1 : denom;
    FUZZ_CHECK(img.w == (img.full_w + d - 1) / d && img.h == (img.full_h + d - 1) / d);
    unsigned sum = 0;
    for (size_t i = 0; i < (size_t)img.w * img.h * 3; i++) sum += img.rgb[i];
    volatile unsigned sink = sum;
    (void)sink;
    free(img.rgb);
    return 0;
}
