/*
 * core/data/image_decode.c: JPEG and PNG files to 8-bit RGB (image_folder.c's
 * decoder), through Debian's libjpeg-turbo (the libjpeg API of
 * libjpeg62-turbo) and libpng.
 *
 * Colour as PIL's Image.convert('RGB'): grayscale is replicated to R, G, B;
 * a PNG's palette is expanded, its alpha dropped (not composited), 16-bit
 * samples reduced to 8 (libpng's png_set_strip_16: the high byte). JPEG is
 * decoded with libjpeg's defaults (JDCT_ISLOW, fancy upsampling), as PIL does;
 * a CMYK/YCCK JPEG is refused (an error naming the file). A JPEG whose data
 * end early (libjpeg's warning JWRN_JPEG_EOF) is an error, as PIL's "image
 * file is truncated"; libjpeg's other warnings (e.g. extraneous bytes before
 * a marker) are tolerated, as PIL tolerates them.
 *
 * DCT scaling: lunar_image_decode(..., scale_denom) asks libjpeg for the image
 * at 1/scale_denom of its size (scale_denom 1, 2, 4 or 8; libjpeg computes
 * ceil(size / scale_denom)), decoding fewer coefficients: what PIL's
 * Image.draft does. PNG ignores it (always full size).
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>   /* after stdio.h: it uses FILE and size_t */
#include <jerror.h>
#include <png.h>

#include "image.h"

/* The most pixels a decoded image may have (a corrupt header may claim 65535 x 65535). */
#define MAX_PIXELS ((size_t)1 << 28)

static int is_jpeg(const uint8_t *b, size_t n) { return n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF; }
static int is_png(const uint8_t *b, size_t n) { return n >= 8 && png_sig_cmp(b, 0, 8) == 0; }

/* ------------------------------------------------------------------ JPEG */

struct jerr {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    int eof;                       /* JWRN_JPEG_EOF seen */
};

static void jerr_exit(j_common_ptr c) {
    struct jerr *e = (struct jerr *)c->err;
    longjmp(e->jb, 1);
}

static void jerr_emit(j_common_ptr c, int level) {
    struct jerr *e = (struct jerr *)c->err;
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) e->eof = 1;
}

static lunar_status jpeg_fail(j_decompress_ptr d, struct jerr *e, const char *name) {
    char msg[JMSG_LENGTH_MAX];
    e->mgr.format_message((j_common_ptr)d, msg);
    jpeg_destroy_decompress(d);
    return lunar_error(LUNAR_ERR_FORMAT, "image %s: JPEG: %s", name, msg);
}

static lunar_status jpeg_decode(const uint8_t *buf, size_t len, const char *name, int denom,
                                int header_only, lunar_image *out) {
    struct jpeg_decompress_struct d;
    struct jerr e;
    memset(&e, 0, sizeof e);
    uint8_t *volatile px = NULL;
    d.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jerr_exit;
    e.mgr.emit_message = jerr_emit;
    if (setjmp(e.jb)) {
        free(px);
        return jpeg_fail(&d, &e, name);
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    if (d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&d);
        return lunar_error(LUNAR_ERR_FORMAT, "image %s: JPEG: CMYK images are not read (convert to RGB)", name);
    }
    out->full_w = (int)d.image_width;
    out->full_h = (int)d.image_height;
    if (header_only) {
        jpeg_destroy_decompress(&d);
        return LUNAR_OK;
    }
    d.out_color_space = JCS_RGB;
    d.scale_num = 1;
    d.scale_denom = (unsigned)denom;
    jpeg_calc_output_dimensions(&d);
    if ((size_t)d.output_width * d.output_height > MAX_PIXELS) {
        jpeg_destroy_decompress(&d);
        return lunar_error(LUNAR_ERR_FORMAT, "image %s: JPEG: %u x %u pixels (more than %zu: corrupt header?)", name,
                           d.output_width, d.output_height, MAX_PIXELS);
    }
    jpeg_start_decompress(&d);
    size_t w = d.output_width, h = d.output_height, row = w * 3;
    px = malloc(row * h);
    if (!px) {
        jpeg_destroy_decompress(&d);
        return lunar_error(LUNAR_ERR_OOM, "image %s: out of memory for %zu x %zu pixels", name, w, h);
    }
    while (d.output_scanline < d.output_height) {
        JSAMPROW r = px + row * d.output_scanline;
        jpeg_read_scanlines(&d, &r, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    if (e.eof) {
        free(px);
        return lunar_error(LUNAR_ERR_FORMAT, "image %s: JPEG: premature end of data (truncated file)", name);
    }
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = px;
    return LUNAR_OK;
}

/* ------------------------------------------------------------------- PNG */

struct pngsrc {
    const uint8_t *buf;
    size_t len, at;
    char msg[200];
    jmp_buf jb;
};

static void png_read_mem(png_structp p, png_bytep dst, size_t n) {
    struct pngsrc *s = png_get_io_ptr(p);
    if (n > s->len - s->at) png_error(p, "truncated file");
    memcpy(dst, s->buf + s->at, n);
    s->at += n;
}

static void png_err(png_structp p, png_const_charp m) {
    struct pngsrc *s = png_get_error_ptr(p);
    snprintf(s->msg, sizeof s->msg, "%s", m);
    longjmp(s->jb, 1);
}

static void png_warn(png_structp p, png_const_charp m) { (void)p; (void)m; }

static lunar_status png_decode(const uint8_t *buf, size_t len, const char *name, int header_only,
                               lunar_image *out) {
    struct pngsrc s = {.buf = buf, .len = len, .at = 0};
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, png_err, png_warn);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    if (!info) {
        png_destroy_read_struct(&p, NULL, NULL);
        return lunar_error(LUNAR_ERR_OOM, "image %s: out of memory for the PNG reader", name);
    }
    uint8_t *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(s.jb)) {
        free(px);
        free(rows);
        png_destroy_read_struct(&p, &info, NULL);
        return lunar_error(LUNAR_ERR_FORMAT, "image %s: PNG: %s", name, s.msg);
    }
    png_set_read_fn(p, &s, png_read_mem);
    /* no more than ImageNet needs: refuse absurd sizes before allocating */
    png_set_user_limits(p, 1u << 15, 1u << 15);
    png_read_info(p, info);
    out->full_w = (int)png_get_image_width(p, info);
    out->full_h = (int)png_get_image_height(p, info);
    if (header_only) {
        png_destroy_read_struct(&p, &info, NULL);
        return LUNAR_OK;
    }
    int ct = png_get_color_type(p, info);
    png_set_expand(p);                 /* palette -> RGB, gray < 8 bit -> 8, tRNS -> alpha */
    png_set_strip_16(p);
    png_set_strip_alpha(p);
    if (ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(p);
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    size_t w = png_get_image_width(p, info), h = png_get_image_height(p, info);
    size_t rb = png_get_rowbytes(p, info);
    if (w * h > MAX_PIXELS) png_error(p, "too many pixels (corrupt header?)");
    if (rb != w * 3) png_error(p, "unexpected row layout after conversion to RGB");
    px = malloc(rb * h);
    rows = malloc(h * sizeof *rows);
    if (!px || !rows) png_error(p, "out of memory");
    for (size_t y = 0; y < h; y++) rows[y] = px + y * rb;
    png_read_image(p, rows);
    png_read_end(p, NULL);
    free(rows);
    png_destroy_read_struct(&p, &info, NULL);
    out->w = (int)w;
    out->h = (int)h;
    out->rgb = px;
    return LUNAR_OK;
}

lunar_status lunar_image_decode(const uint8_t *buf, size_t len, const char *name, int scale_denom,
                                int header_only, lunar_image *out) {
    memset(out, 0, sizeof *out);
    if (!name) name = "<memory>";
    if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8)
        return lunar_error(LUNAR_ERR_ARG, "image %s: scale_denom %d (must be 1, 2, 4 or 8)", name, scale_denom);
    if (buf && is_jpeg(buf, len)) return jpeg_decode(buf, len, name, scale_denom, header_only, out);
    if (buf && is_png(buf, len)) return png_decode(buf, len, name, header_only, out);
    return lunar_error(LUNAR_ERR_FORMAT, "image %s: not a JPEG or PNG file (%zu bytes, unknown signature)",
                       name, len);
}
