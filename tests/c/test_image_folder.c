/*
 * tests/c/test_image_folder.c: the image-folder dataset (data.h,
 * core/data/image_folder.c, image_decode.c) on files written here with libpng
 * and libjpeg themselves (the comparisons with PIL and torchvision are
 * tests/fail/test_image_folder.sh's):
 *   - a PNG (RGB and grayscale) decodes to the pixels written, through an
 *     identity resize (eval, crop_pct 1, the image's own size)
 *   - a flat-colour JPEG (quality 100) decodes to that colour within 1 level
 *   - every proper prefix of a PNG and a JPEG, and 300 copies with a random
 *     byte changed, give LUNAR_ERR_FORMAT or a decode, never a crash; each
 *     prefix is an error (a truncated file is bad, not silently padded)
 *   - RandomResizedCrop's fallback by hand (100 x 50 image, scale (1, 1): every
 *     attempt is too tall, so torchvision's center crop: in_ratio 2 > 4/3, h 50,
 *     w round(50 * 4/3) = 67, top 0, left (100 - 67) // 2 = 16)
 *   - 2000 draws of the default RandomResizedCrop on a 64 x 48 image: every box
 *     inside the image with area and aspect ratio in range (up to the rounding
 *     of w and h), flips 1000 +- 100 (5 sigma of Binomial(2000, 0.5) is 112)
 *   - the same (seed, epoch, idx) gives the same sample; another epoch another
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>   /* after stdio.h: it uses FILE and size_t */
#include <png.h>

#include "lunar/data.h"
#include "lunar/rng.h"
#include "test.h"

static char root[256];

static void mkdirs(const char *rel) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    for (char *s = p + strlen(root) + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(p, 0755); *s = '/'; }
    mkdir(p, 0755);
}

static int write_png(const char *path, int w, int h, int channels, const uint8_t *px) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    if (setjmp(png_jmpbuf(p))) { fclose(f); return -1; }
    png_init_io(p, f);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(p, info);
    for (int y = 0; y < h; y++) png_write_row(p, (png_const_bytep)(px + (size_t)y * w * channels));
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    return fclose(f);
}

static int write_jpeg(const char *path, int w, int h, const uint8_t *rgb, int quality) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, f);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW r = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return fclose(f);
}

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*len);
    if (b && fread(b, 1, *len, f) != *len) { free(b); b = NULL; }
    fclose(f);
    return b;
}

static lunar_dataset *open_folder(const char *rel, int size, int train, double crop_pct, int strict) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    lunar_image_opts o;
    lunar_image_opts_default(&o, size, train);
    o.crop_pct = crop_pct;
    o.on_bad_image = strict;
    return lunar_dataset_image_folder(p, &o);
}

static void test_png_pixels(void) {
    enum { S = 20 };
    uint8_t rgb[S * S * 3], gray[S * S];
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            for (int c = 0; c < 3; c++) rgb[(y * S + x) * 3 + c] = (uint8_t)((x * 7 + y * 3 + c * 50) % 256);
            gray[y * S + x] = (uint8_t)(x * 13 + y);
        }
    mkdirs("png/a");
    mkdirs("png/b");
    char p[512];
    snprintf(p, sizeof p, "%s/png/a/rgb.png", root);
    CHECK(write_png(p, S, S, 3, rgb) == 0);
    snprintf(p, sizeof p, "%s/png/b/gray.png", root);
    CHECK(write_png(p, S, S, 1, gray) == 0);
    lunar_dataset *ds = open_folder("png", S, 0, 1.0, 1);
    CHECK_MSG(ds, "%s", lunar_last_error());
    CHECK(lunar_dataset_count(ds) == 2 && lunar_dataset_num_classes(ds) == 2);
    CHECK(strcmp(lunar_dataset_class_name(ds, 1), "b") == 0);
    uint8_t out[3 * S * S];
    int32_t label;
    lunar_crop crop;
    CHECK(lunar_dataset_image_sample(ds, 0, 0, 0, out, &label, &crop) == LUNAR_OK && label == 0);
    CHECK(crop.full_w == S && crop.full_h == S && crop.scale_denom == 1);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) CHECK_MSG(out[c * S * S + i] == rgb[i * 3 + c], "rgb c %d pixel %d", c, i);
    CHECK(lunar_dataset_image_sample(ds, 1, 0, 0, out, &label, NULL) == LUNAR_OK && label == 1);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) CHECK_MSG(out[c * S * S + i] == gray[i], "gray c %d pixel %d", c, i);
    lunar_dataset_free(ds);
}

static void test_jpeg_flat(void) {
    enum { S = 16 };
    uint8_t rgb[S * S * 3];
    for (int i = 0; i < S * S; i++) { rgb[3 * i] = 200; rgb[3 * i + 1] = 120; rgb[3 * i + 2] = 40; }
    mkdirs("jpg/x");
    char p[512];
    snprintf(p, sizeof p, "%s/jpg/x/flat.JPG", root);
    CHECK(write_jpeg(p, S, S, rgb, 100) == 0);
    lunar_dataset *ds = open_folder("jpg", S, 0, 1.0, 1);
    CHECK_MSG(ds, "%s", lunar_last_error());
    uint8_t out[3 * S * S];
    int32_t label;
    CHECK(lunar_dataset_image_sample(ds, 0, 0, 0, out, &label, NULL) == LUNAR_OK);
    const int want[3] = {200, 120, 40};
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) CHECK_MSG(abs(out[c * S * S + i] - want[c]) <= 1, "c %d pixel %d: %d", c, i, out[c * S * S + i]);
    lunar_dataset_free(ds);
}

/* Writes buf[len] as the only file of folder `rel` and decodes it (strict). */
static lunar_status decode_bytes(const char *rel, const char *name, const uint8_t *buf, size_t len, int size) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s/c/%s", root, rel, name);
    FILE *f = fopen(p, "wb");
    if (!f) return LUNAR_ERR_IO;
    fwrite(buf, 1, len, f);
    fclose(f);
    lunar_dataset *ds = open_folder(rel, size, 1, 0.875, 1);
    if (!ds) return lunar_last_status();
    uint8_t out[3 * 8 * 8];
    int32_t label;
    lunar_status st = lunar_dataset_image_sample(ds, 0, 0, 0, out, &label, NULL);
    lunar_dataset_free(ds);
    return st;
}

static void test_truncated_and_corrupt(void) {
    enum { W = 24, H = 18 };
    uint8_t rgb[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(lunar_rng_u32(1, 2, (uint64_t)i) >> 24);
    mkdirs("src");
    char png[512], jpg[512];
    snprintf(png, sizeof png, "%s/src/a.png", root);
    snprintf(jpg, sizeof jpg, "%s/src/a.jpg", root);
    CHECK(write_png(png, W, H, 3, rgb) == 0 && write_jpeg(jpg, W, H, rgb, 90) == 0);
    const char *srcs[2] = {png, jpg}, *names[2] = {"t.png", "t.jpg"};
    for (int k = 0; k < 2; k++) {
        size_t len;
        uint8_t *b = read_all(srcs[k], &len);
        CHECK(b);
        char rel[32];
        snprintf(rel, sizeof rel, "bad%d", k);
        char sub[40];
        snprintf(sub, sizeof sub, "%s/c", rel);
        mkdirs(sub);
        CHECK(decode_bytes(rel, names[k], b, len, 8) == LUNAR_OK);
        for (size_t n = 0; n < len; n++) {
            lunar_status st = decode_bytes(rel, names[k], b, n, 8);
            CHECK_MSG(st == LUNAR_ERR_FORMAT, "%s cut to %zu of %zu bytes: status %d (%s)", names[k], n, len, (int)st,
                      lunar_last_error());
            CHECK(strstr(lunar_last_error(), names[k]));
        }
        uint8_t *m = malloc(len);
        for (int t = 0; t < 300; t++) {
            memcpy(m, b, len);
            size_t at = lunar_rng_u32(7, (uint64_t)k, (uint64_t)(2 * t)) % len;
            m[at] = (uint8_t)lunar_rng_u32(7, (uint64_t)k, (uint64_t)(2 * t + 1));
            lunar_status st = decode_bytes(rel, names[k], m, len, 8);
            CHECK_MSG(st == LUNAR_OK || st == LUNAR_ERR_FORMAT, "%s byte %zu changed: status %d", names[k], at, (int)st);
        }
        free(m);
        free(b);
    }
}

static void test_crop_fallback_by_hand(void) {
    enum { W = 100, H = 50 };
    static uint8_t g[W * H];
    mkdirs("wide/k");
    char p[512];
    snprintf(p, sizeof p, "%s/wide/k/w.png", root);
    CHECK(write_png(p, W, H, 1, g) == 0);
    snprintf(p, sizeof p, "%s/wide", root);
    lunar_image_opts o;
    lunar_image_opts_default(&o, 8, 1);
    o.scale_min = o.scale_max = 1.0;
    lunar_dataset *ds = lunar_dataset_image_folder(p, &o);
    CHECK(ds);
    uint8_t out[3 * 8 * 8];
    int32_t label;
    lunar_crop c;
    for (int e = 0; e < 5; e++) {
        CHECK(lunar_dataset_image_sample(ds, 0, e, 3, out, &label, &c) == LUNAR_OK);
        CHECK_MSG(c.top == 0 && c.left == 16 && c.height == 50 && c.width == 67, "box %d %d %d %d", c.top, c.left,
                  c.height, c.width);
    }
    lunar_dataset_free(ds);
}

static void test_crop_statistics(void) {
    enum { W = 64, H = 48 };
    static uint8_t g[W * H];
    for (int i = 0; i < W * H; i++) g[i] = (uint8_t)i;
    mkdirs("stat/k");
    char p[512];
    snprintf(p, sizeof p, "%s/stat/k/s.png", root);
    CHECK(write_png(p, W, H, 1, g) == 0);
    lunar_dataset *ds = open_folder("stat", 8, 1, 0.875, 1);
    CHECK(ds);
    uint8_t out[3 * 8 * 8], again[3 * 8 * 8];
    int32_t label;
    lunar_crop c;
    int flips = 0, distinct = 0;
    for (int e = 0; e < 2000; e++) {
        CHECK(lunar_dataset_image_sample(ds, 0, e, 11, out, &label, &c) == LUNAR_OK);
        double w = c.width, h = c.height;
        CHECK_MSG(c.top >= 0 && c.left >= 0 && c.top + c.height <= H && c.left + c.width <= W, "box out of image");
        int fallback = c.width == W && c.height == H;
        double amax = (w + .5) * (h + .5) / (W * H), amin = (w - .5) * (h - .5) / (W * H);
        double rmax = (w + .5) / (h - .5), rmin = (w - .5) / (h + .5);
        CHECK_MSG(fallback || (amax >= 0.08 && amin <= 1 && rmax >= 0.75 && rmin <= 4.0 / 3),
                  "epoch %d box %dx%d", e, c.width, c.height);
        flips += c.flip;
        if (e < 20) {
            CHECK(lunar_dataset_image_sample(ds, 0, e, 11, again, &label, NULL) == LUNAR_OK);
            CHECK(memcmp(out, again, sizeof out) == 0);
            CHECK(lunar_dataset_image_sample(ds, 0, e + 1, 11, again, &label, NULL) == LUNAR_OK);
            distinct += memcmp(out, again, sizeof out) != 0;
        }
    }
    CHECK_MSG(abs(flips - 1000) <= 100, "flips %d of 2000", flips);
    CHECK_MSG(distinct >= 18, "only %d of 20 consecutive epochs differ", distinct);
    lunar_dataset_free(ds);
}

int main(void) {
    snprintf(root, sizeof root, "%s/lunar_test_image_folder_c.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    mkdir(root, 0755);
    RUN(test_png_pixels);
    RUN(test_jpeg_flat);
    RUN(test_truncated_and_corrupt);
    RUN(test_crop_fallback_by_hand);
    RUN(test_crop_statistics);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return TEST_SUMMARY();
}
