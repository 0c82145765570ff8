/*
 * fuzz/fuzz_idx.c: libFuzzer target for the IDX reader (core/data/idx.c) and
 * the file reader it shares with CIFAR-10 (zlib: gzip or plain,
 * core/data/dataset.c), raw and gzipped.
 *
 * Input: a 4-byte control header, then the payload.
 *   byte 0  mode: bits 0-1 how the two buffers reach the reader
 *             0  memory: lunar_dataset_from_idx(images, labels)
 *             1  files as given (plain or .gz bytes): lunar_dataset_load_idx;
 *                when neither can be gzip, the result must agree with mode 0
 *             2  files gzip-compressed here first (valid gzip of the payload
 *                parts); the result must agree with mode 0 on the same parts
 *             3  as 2, then each stream cut to byte3/256 of its length
 *                (truncated gzip: must be an error, never a crash)
 *           bit 2  on a dataset, also build a loader and fetch one batch
 *   bytes 1-2  the split point s (little-endian u16, clamped to the payload):
 *              images = payload[0:s], labels = payload[s:]
 *   byte 3  the cut for mode 3, the loader's batch size and seed
 * Each part also goes through lunar_idx_parse, whose view must lie inside the
 * buffer and match its dims. Files are memfds (/proc/self/fd/N), not disk.
 *
 *   make fuzz-build && build/fuzz/fuzz_idx build/fuzz/corpus/idx fuzz/corpus/idx
 */
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"  /* FUZZ_CHECK, fuzz_memfd_write, fuzz_gzip */
#include "lunar/data.h"   /* lunar_idx_parse, lunar_dataset_*, lunar_loader_* */

/* lunar_idx_parse on buf[len]; its view checked against the buffer. */
static void check_idx(const uint8_t *buf, size_t len) {
    lunar_idx x;
    lunar_clear_error();
    if (lunar_idx_parse(buf, len, "<fuzz>", &x) != LUNAR_OK) {
        fuzz_expect_error();
        return;
    }
    FUZZ_CHECK(x.ndim >= 1 && x.ndim <= LUNAR_IDX_MAX_DIMS);
    FUZZ_CHECK(x.elem_size == 1 || x.elem_size == 2 || x.elem_size == 4 || x.elem_size == 8);
    uint64_t numel = 1;
    for (int i = 0; i < x.ndim; i++) numel *= x.dims[i];   /* no overflow: it fits len */
    FUZZ_CHECK(numel * x.elem_size == x.nbytes);
    FUZZ_CHECK(x.data == buf + 4 + 4 * (size_t)x.ndim);
    FUZZ_CHECK(x.data + x.nbytes == buf + len);
    volatile unsigned sum = 0;
    for (size_t i = 0; i < x.nbytes; i++) sum += x.data[i];
    (void)sum;
}

/* Walks a dataset the IDX reader returned; when images is not NULL, its
 * pixels must equal the images file's data. */
static void check_dataset(lunar_dataset *ds, const uint8_t *images, size_t images_len, int loader,
                          uint8_t knob) {
    int64_t n = lunar_dataset_count(ds);
    FUZZ_CHECK(n >= 0);
    FUZZ_CHECK(lunar_dataset_dtype(ds) == LUNAR_U8);
    FUZZ_CHECK(lunar_dataset_channels(ds) == 1 && lunar_dataset_ndim_spatial(ds) == 2);
    int h = lunar_dataset_size(ds, 0), w = lunar_dataset_size(ds, 1);
    FUZZ_CHECK(h >= 1 && w >= 1 && lunar_dataset_size(ds, 2) == -1);
    FUZZ_CHECK(lunar_dataset_sample_numel(ds) == (int64_t)h * w);
    int nc = lunar_dataset_num_classes(ds);
    FUZZ_CHECK(nc >= 1 && nc <= 256);
    const uint8_t *px = lunar_dataset_pixels(ds);
    const int32_t *lb = lunar_dataset_labels(ds);
    size_t nbytes = (size_t)n * (size_t)h * (size_t)w;
    if (images) {
        FUZZ_CHECK(images_len == 16 + nbytes);
        FUZZ_CHECK(nbytes == 0 || memcmp(px, images + 16, nbytes) == 0);
    }
    volatile unsigned sum = 0;
    for (size_t i = 0; i < nbytes; i++) sum += px[i];
    (void)sum;
    for (int64_t i = 0; i < n; i++) FUZZ_CHECK(lb[i] >= 0 && lb[i] < nc);
    if (!loader || n == 0) return;
    int batch = 1 + (knob & 3);
    lunar_loader *l = lunar_loader_new(ds, batch, 1, knob, 0, 0, 1, NULL, NULL, 0);
    FUZZ_CHECK(l != NULL);
    float *img = malloc((size_t)batch * (size_t)h * (size_t)w * sizeof(float));
    int32_t *lab = malloc((size_t)batch * sizeof(int32_t));
    FUZZ_CHECK(img && lab);
    int b = lunar_loader_next(l, img, lab);
    FUZZ_CHECK(b >= 1 && b <= batch);
    for (int i = 0; i < b; i++) FUZZ_CHECK(lab[i] >= 0 && lab[i] < nc);
    for (size_t i = 0; i < (size_t)b * (size_t)h * (size_t)w; i++)
        FUZZ_CHECK(img[i] >= 0.0f && img[i] <= 1.0f);
    free(img);
    free(lab);
    lunar_loader_free(l);
}

/* The dataset of images[il] / labels[ll] read from memory; NULL on error. */
static lunar_dataset *from_memory(const uint8_t *im, size_t il, const uint8_t *lb, size_t ll) {
    lunar_clear_error();
    lunar_dataset *ds = lunar_dataset_from_idx(im, il, lb, ll, "<images>", "<labels>");
    if (!ds) fuzz_expect_error();
    return ds;
}

/* The same through files; NULL on error (or when memfd is unavailable). */
static lunar_dataset *from_files(const uint8_t *im, size_t il, const uint8_t *lb, size_t ll) {
    static fuzz_memfd_file fim, flb;
    const char *pim = fuzz_memfd_write(&fim, "images", im, il);
    const char *plb = fuzz_memfd_write(&flb, "labels", lb, ll);
    if (!pim || !plb) return NULL;
    lunar_clear_error();
    lunar_dataset *ds = lunar_dataset_load_idx(pim, plb);
    if (!ds) fuzz_expect_error();
    return ds;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4) return 0;
    int mode = data[0] & 3, loader = (data[0] >> 2) & 1;
    uint8_t knob = data[3];
    const uint8_t *p = data + 4;
    size_t len = size - 4, split = (size_t)data[1] | (size_t)data[2] << 8;
    if (split > len) split = len;
    const uint8_t *im = p, *lb = p + split;
    size_t il = split, ll = len - split;

    check_idx(im, il);
    check_idx(lb, ll);
    if (mode == 0) {
        lunar_dataset *ds = from_memory(im, il, lb, ll);
        if (ds) check_dataset(ds, im, il, loader, knob);
        lunar_dataset_free(ds);
    } else if (mode == 1) {
        lunar_dataset *ds = from_files(im, il, lb, ll);
        if (ds) check_dataset(ds, NULL, 0, loader, knob);
        if ((il == 0 || im[0] != 0x1f) && (ll == 0 || lb[0] != 0x1f)) {
            /* neither can be gzip: zlib reads them as they are, as from memory */
            lunar_dataset *dm = from_memory(im, il, lb, ll);
            FUZZ_CHECK((ds == NULL) == (dm == NULL));
            lunar_dataset_free(dm);
        }
        lunar_dataset_free(ds);
    } else {
        uint8_t *gim = NULL, *glb = NULL;
        size_t gil = 0, gll = 0;
        FUZZ_CHECK(fuzz_gzip(im, il, knob % 10, &gim, &gil) == 0);
        FUZZ_CHECK(fuzz_gzip(lb, ll, knob % 10, &glb, &gll) == 0);
        if (mode == 3) {
            gil = gil * knob / 256;
            gll = gll * knob / 256;
        }
        lunar_dataset *ds = from_files(gim, gil, glb, gll);
        if (mode == 2) {
            /* a valid gzip stream reads as its content: the same as from memory */
            lunar_dataset *dm = from_memory(im, il, lb, ll);
            FUZZ_CHECK((ds == NULL) == (dm == NULL));
            if (ds) {
                check_dataset(ds, im, il, loader, knob);
                FUZZ_CHECK(lunar_dataset_count(ds) == lunar_dataset_count(dm));
                FUZZ_CHECK(lunar_dataset_num_classes(ds) == lunar_dataset_num_classes(dm));
                FUZZ_CHECK(memcmp(lunar_dataset_labels(ds), lunar_dataset_labels(dm),
                                  (size_t)lunar_dataset_count(ds) * sizeof(int32_t)) == 0);
            }
            lunar_dataset_free(dm);
        } else if (ds) {
            check_dataset(ds, NULL, 0, loader, knob);
        }
        lunar_dataset_free(ds);
        free(gim);
        free(glb);
    }
    return 0;
}
