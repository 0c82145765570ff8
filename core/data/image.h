/*
 * core/data/image.h: the JPEG/PNG decoder image_folder.c uses (not public).
 */
#ifndef LUNAR_DATA_IMAGE_H
#define LUNAR_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

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

#endif
