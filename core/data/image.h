/*
 * core/data/image.h: the JPEG/PNG decoder image_folder.c uses (not public).
 */
#ifndef LUNAR_DATA_IMAGE_H
#define LUNAR_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/data.h"
#include "lunar/status.h"

typedef struct {
    int full_w, full_h;   /* the file's size */
    int w, h;             /* the decoded size (full / scale_denom, rounded up, for JPEG) */
    uint8_t *rgb;         /* [h, w, 3] (malloc'd; NULL after header_only) */
} lunar_image;

/* Decodes a JPEG or PNG held in buf[len] (recognized by its signature) to
 * 8-bit RGB, as PIL's convert('RGB'). scale_denom 1, 2, 4 or 8: libjpeg's
 * DCT scaling (ignored for PNG). header_only: sets full_w/full_h only. name
 * goes into messages. LUNAR_ERR_FORMAT naming the file on a corrupt,
 * truncated, CMYK or unknown file, or one of more than 2^28 pixels (after DCT
 * scaling). Safe on any input. */
lunar_status lunar_image_decode(const uint8_t *buf, size_t len, const char *name, int scale_denom,
                                int header_only, lunar_image *out);

/* Where an image dataset's bytes come from (image_folder.c reads files by
 * name when `read` is NULL; image_zip.c reads archive members). read(ctx, idx,
 * name, ...) returns sample idx's file in a malloc'd *buf (may be called from
 * several threads at once); free_ctx releases ctx with the dataset. */
typedef struct {
    lunar_status (*read)(void *ctx, int64_t idx, const char *name, uint8_t **buf, size_t *len);
    void *ctx;
    void (*free_ctx)(void *ctx);
} lunar_image_source;

/* The dataset of n image samples: names[n] (for messages and
 * lunar_dataset_file; with src.read NULL, the paths read), labels[n] in
 * [0, num_classes), classes[num_classes] (names, or NULL). Takes over the
 * arrays and strings (malloc'd) and src.ctx, also on error. Samples are made
 * as lunar_dataset_image_folder's (decode, transforms, bad images). */
lunar_dataset *lunar_image_dataset(char **names, int32_t *labels, int64_t n, char **classes, int num_classes,
                                   const lunar_image_opts *o, lunar_image_source src);

#endif
