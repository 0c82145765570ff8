/*
 * fuzz/gen_corpus.c: writes the committed seed corpus of the fuzz targets,
 * DIR/{safetensors,idx,cifar,image}/ (make fuzz-corpus: $(BUILD)/fuzz-seeds), a few valid tiny files each (< 10 KB).
 * The image seeds (fuzz_image.c: a scale byte, then the file) are PNGs and
 * JPEGs written here with libpng and libjpeg.
 * The safetensors seeds come from Lunar's own writer
 * (lunar_safetensors_serialize); the IDX and CIFAR-10 seeds are built here in
 * the targets' input layout (a control header, then the file bytes; see
 * fuzz_idx.c and fuzz_cifar.c). The regressions (inputs that once broke a
 * reader, kept after the fix) are written here too, byte for byte, as
 * regression_<what>.<ext>, so no binary input is committed.
 *
 *   make fuzz-corpus     (builds this with the replay objects and runs it)
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jpeglib.h> /* after stdio.h: it uses FILE and size_t */
#include <png.h>

#include "fuzz_common.h"  /* fuzz_gzip */
#include "lunar/io.h"     /* lunar_safetensors_serialize */
#include "lunar/tensor.h" /* lunar_f32_to_bf16, lunar_f32_to_f16 */

static const char *outdir = "build/fuzz-seeds";

static void die(const char *what) {
    fprintf(stderr, "gen_corpus: %s: %s\n", what, lunar_last_error()[0] ? lunar_last_error() : strerror(errno));
    exit(1);
}

static void put(const char *target, const char *name, const void *buf, size_t len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", outdir, target);
    mkdir(outdir, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", outdir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) die(path);
    printf("%s (%zu bytes)\n", path, len);
}

/* ----------------------------------------------------------------- safetensors */

static lunar_safetensors_entry entry(const char *name, lunar_dtype dt, int ndim, const int64_t *shape,
                                     const void *data) {
    lunar_safetensors_entry e = {.name = name, .dtype = dt, .ndim = ndim, .data = data};
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        e.shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    e.nbytes = n * lunar_dtype_size(dt);
    return e;
}

static void st_put(const char *name, const lunar_safetensors_entry *es, int n, const char *const *mk,
                   const char *const *mv, int nm) {
    uint8_t *out;
    size_t len;
    if (lunar_safetensors_serialize(es, n, mk, mv, nm, &out, &len) != LUNAR_OK) die(name);
    put("safetensors", name, out, len);
    free(out);
}

static void gen_safetensors(void) {
    st_put("empty.safetensors", NULL, 0, NULL, NULL, 0);

    float f6[6] = {0.5f, -1.0f, 2.25f, 3.0e38f, -0.0f, 1e-40f};
    int64_t s23[2] = {2, 3};
    lunar_safetensors_entry one = entry("weight", LUNAR_F32, 2, s23, f6);
    st_put("f32_2x3.safetensors", &one, 1, NULL, NULL, 0);

    /* every dtype, a scalar, an empty tensor, metadata, timm names */
    uint16_t bf[4], hf[4];
    float specials[4] = {NAN, INFINITY, -65504.0f, 6e-8f};
    for (int i = 0; i < 4; i++) {
        bf[i] = lunar_f32_to_bf16(specials[i]);
        hf[i] = lunar_f32_to_f16(specials[i]);
    }
    int32_t i32[3] = {-1, 0, 2147483647};
    int64_t i64[2] = {INT64_MIN, 42};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    double f64[1] = {3.141592653589793};
    int64_t s4[1] = {4}, s22[2] = {2, 2}, s3[1] = {3}, s2[1] = {2}, s5[1] = {5}, s04[2] = {0, 4};
    lunar_safetensors_entry all[] = {
        entry("blocks.0.attn.qkv.weight", LUNAR_F32, 2, s23, f6),
        entry("blocks.0.norm1.weight", LUNAR_BF16, 1, s4, bf),
        entry("head.bias", LUNAR_F16, 2, s22, hf),
        entry("labels", LUNAR_I32, 1, s3, i32),
        entry("step", LUNAR_I64, 1, s2, i64),
        entry("pixels", LUNAR_U8, 1, s5, u8),
        entry("scale", LUNAR_F64, 0, NULL, f64),
        entry("empty", LUNAR_F32, 2, s04, NULL),
    };
    const char *mk[2] = {"format", "lunar"}, *mv[2] = {"pt", "{\"step\": 3}"};
    st_put("dtypes_meta.safetensors", all, 8, mk, mv, 2);

    /* u8[3] first: the f32 after it is not 4-byte aligned in the buffer */
    lunar_safetensors_entry unal[2] = {entry("a", LUNAR_U8, 1, s3, u8), entry("b", LUNAR_F32, 1, s2, f6)};
    st_put("unaligned.safetensors", unal, 2, NULL, NULL, 0);

    /* the most dims, and an empty tensor with big sizes (the reader bounds the
     * product of the nonzero ones) */
    int64_t s8[8] = {1, 1, 2, 1, 1, 1, 1, 2}, sbig[3] = {0, (int64_t)1 << 50, 16};
    lunar_safetensors_entry edge[2] = {entry("dims8", LUNAR_F32, 8, s8, f6),
                                       entry("empty_big", LUNAR_BF16, 3, sbig, NULL)};
    st_put("dims8_empty_big.safetensors", edge, 2, NULL, NULL, 0);

    /* names that need JSON escapes and UTF-8 */
    lunar_safetensors_entry esc[2] = {entry("quote\"back\\slash\n", LUNAR_U8, 1, s2, u8),
                                      entry("caf\xc3\xa9 \xe2\x82\xac", LUNAR_I32, 0, NULL, i32)};
    const char *ek[1] = {"\xf0\x9f\x98\x80"}, *ev[1] = {"tab\there"};
    st_put("escapes.safetensors", esc, 2, ek, ev, 1);
}

/* A safetensors file as its bytes: the header length (u64, little endian), then
 * the JSON header as given (any bytes, valid or not), then no data. */
static void st_raw(const char *name, const char *json) {
    size_t n = strlen(json);
    uint8_t out[1024];
    if (n + 8 > sizeof out) die("raw safetensors header too long");
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(out + 8, json, n);
    put("safetensors", name, out, n + 8);
}

/* Inputs that once broke a reader (fuzz/README.md, "Found and fixed"). */
static void gen_regressions(void) {
    /* an empty tensor whose nonzero sizes overflow int64 when multiplied into
     * strides (2^40 x 2^40): signed overflow in set_contiguous_strides */
    st_raw("regression_zero_size_stride_overflow.safetensors",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[0,1099511627776,1099511627776],\"data_offsets\":[0,0]}}");
}

/* ---------------------------------------------------------------- IDX, CIFAR */

typedef struct { uint8_t b[10000]; size_t n; } buf;

static void b_put(buf *b, const void *p, size_t n) {
    if (b->n + n > sizeof b->b) die("seed too large");
    memcpy(b->b + b->n, p, n);
    b->n += n;
}
static void b_u8(buf *b, uint8_t v) { b_put(b, &v, 1); }
static void b_be32(buf *b, uint32_t v) {
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    b_put(b, p, 4);
}

/* An IDX file: type, dims, then nbytes of data (a pattern). */
static void idx_file(buf *b, uint8_t type, int ndim, const uint32_t *dims, size_t elem) {
    b_u8(b, 0);
    b_u8(b, 0);
    b_u8(b, type);
    b_u8(b, (uint8_t)ndim);
    size_t n = elem;
    for (int i = 0; i < ndim; i++) {
        b_be32(b, dims[i]);
        n *= dims[i];
    }
    for (size_t i = 0; i < n; i++) b_u8(b, (uint8_t)(i * 37 + 11));
}

/* labels: n u8 labels 0..k-1 */
static void idx_labels(buf *b, uint32_t n, int k) {
    b_u8(b, 0);
    b_u8(b, 0);
    b_u8(b, 8);
    b_u8(b, 1);
    b_be32(b, n);
    for (uint32_t i = 0; i < n; i++) b_u8(b, (uint8_t)(i % (uint32_t)k));
}

/* A fuzz_idx input: control header (mode, split, knob), images, labels. */
static void idx_seed(const char *name, uint8_t mode, uint8_t knob, const buf *im, const buf *lb) {
    buf s = {.n = 0};
    b_u8(&s, mode);
    b_u8(&s, (uint8_t)(im->n & 0xff));
    b_u8(&s, (uint8_t)(im->n >> 8));
    b_u8(&s, knob);
    b_put(&s, im->b, im->n);
    b_put(&s, lb->b, lb->n);
    put("idx", name, s.b, s.n);
}

static void gen_idx(void) {
    static buf im, lb;
    uint32_t d[3] = {3, 4, 5};
    im.n = lb.n = 0;
    idx_file(&im, 0x08, 3, d, 1);
    idx_labels(&lb, 3, 3);
    idx_seed("mem_3x4x5.idx", 0, 0, &im, &lb);
    idx_seed("mem_loader.idx", 4, 7, &im, &lb);
    idx_seed("gzip_3x4x5.idx", 2, 6, &im, &lb);
    idx_seed("gzip_cut.idx", 3, 128, &im, &lb);

    /* a file that is gzip already (mode 1: read through zlib as given) */
    uint8_t *gim, *glb;
    size_t gil, gll;
    if (fuzz_gzip(im.b, im.n, 9, &gim, &gil) || fuzz_gzip(lb.b, lb.n, 9, &glb, &gll)) die("gzip");
    static buf g1, g2;
    g1.n = g2.n = 0;
    b_put(&g1, gim, gil);
    b_put(&g2, glb, gll);
    idx_seed("file_gz.idx", 1 | 4, 1, &g1, &g2);
    idx_seed("file_plain.idx", 1, 0, &im, &lb);
    free(gim);
    free(glb);

    /* one 28 x 28 image, as MNIST */
    uint32_t m[3] = {1, 28, 28};
    im.n = lb.n = 0;
    idx_file(&im, 0x08, 3, m, 1);
    idx_labels(&lb, 1, 1);
    idx_seed("mnist_1.idx", 4, 2, &im, &lb);

    /* no images, big frames */
    uint32_t z[3] = {0, 28, 28};
    im.n = lb.n = 0;
    idx_file(&im, 0x08, 3, z, 1);
    idx_labels(&lb, 0, 1);
    idx_seed("empty.idx", 0, 0, &im, &lb);

    /* other element types (lunar_idx_parse only; the dataset refuses them) */
    uint32_t f[2] = {2, 3}, i16[1] = {4}, f64[4] = {1, 1, 2, 1};
    im.n = lb.n = 0;
    idx_file(&im, 0x0D, 2, f, 4);
    idx_file(&lb, 0x0B, 1, i16, 2);
    idx_seed("types_f32_i16.idx", 0, 0, &im, &lb);
    im.n = lb.n = 0;
    idx_file(&im, 0x0E, 4, f64, 8);
    idx_file(&lb, 0x0C, 1, i16, 4);
    idx_seed("types_f64_i32.idx", 0, 0, &im, &lb);
}

static void cifar_records(buf *b, int n) {
    for (int r = 0; r < n; r++) {
        b_u8(b, (uint8_t)(r * 3 % 10));
        for (int i = 0; i < 3072; i++) b_u8(b, (uint8_t)(i * 7 + r));
    }
}

static void cifar_seed(const char *name, uint8_t mode, uint8_t split, int n) {
    static buf s;
    s.n = 0;
    b_u8(&s, mode);
    b_u8(&s, split);
    cifar_records(&s, n);
    put("cifar", name, s.b, s.n);
}

static void gen_cifar(void) {
    cifar_seed("mem_1.bin", 0, 0, 1);
    cifar_seed("file_1.bin", 1, 0, 1);
    cifar_seed("gzip_2.bin", 2, 0, 2);
    cifar_seed("split_2.bin", 3, 1, 2);
    cifar_seed("empty.bin", 1, 0, 0);
}

/* ---- image: PNG and JPEG files (libpng, libjpeg) after a DCT-scale byte ---- */

static void png_put(png_structp p, png_bytep data, size_t n) {
    b_put(png_get_io_ptr(p), data, n);
}
static void png_flush_none(png_structp p) { (void)p; }

static void image_png(const char *name, uint8_t scale, int w, int h, int color_type, int bit_depth, int interlace) {
    static buf b;
    b.n = 0;
    b_put(&b, &scale, 1);
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    if (!p || !info || setjmp(png_jmpbuf(p))) die(name);
    png_set_write_fn(p, &b, png_put, png_flush_none);
    png_set_IHDR(p, info, (png_uint_32)w, (png_uint_32)h, bit_depth, color_type, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 99, 199}};
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_PLTE(p, info, pal, 4);
    png_write_info(p, info);
    int passes = png_set_interlace_handling(p);
    size_t rb = png_get_rowbytes(p, info);
    uint8_t *row = malloc(rb);
    if (!row) die(name);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < h; y++) {
            for (size_t i = 0; i < rb; i++) row[i] = (uint8_t)(color_type == PNG_COLOR_TYPE_PALETTE ? (i + y) & 0x33 : i * 37 + y * 11);
            png_write_row(p, row);
        }
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(row);
    put("image", name, b.b, b.n);
}

static void image_jpeg(const char *name, uint8_t scale, int w, int h, int gray, int progressive) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    unsigned long mlen = 0;
    jpeg_mem_dest(&c, &mem, &mlen);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = gray ? 1 : 3;
    c.in_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 80, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)w * 3);
    if (!row) die(name);
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < w * c.input_components; i++) row[i] = (uint8_t)(i * 29 + c.next_scanline * 7);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    static buf b;
    b.n = 0;
    b_put(&b, &scale, 1);
    b_put(&b, mem, mlen);
    free(mem);
    put("image", name, b.b, b.n);
}

static void gen_image(void) {
    image_png("rgb_5x3.png", 0, 5, 3, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE);
    image_png("gray16_4x4.png", 0, 4, 4, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE);
    image_png("palette_7x5.png", 1, 7, 5, PNG_COLOR_TYPE_PALETTE, 2, PNG_INTERLACE_NONE);
    image_png("rgba_adam7_9x9.png", 0, 9, 9, PNG_COLOR_TYPE_RGB_ALPHA, 8, PNG_INTERLACE_ADAM7);
    image_jpeg("rgb_17x9.jpg", 0, 17, 9, 0, 0);
    image_jpeg("rgb_33x20_scale4.jpg", 2, 33, 20, 0, 0);
    image_jpeg("gray_progressive_12x12_scale2.jpg", 1, 12, 12, 1, 1);
}

int main(int argc, char **argv) {
    if (argc > 1) outdir = argv[1];
    gen_safetensors();
    gen_regressions();
    gen_idx();
    gen_cifar();
    gen_image();
    return 0;
}
