/*
 * tests/c/test_data.c: datasets (IDX, CIFAR-10, synthetic) and the loader
 * (shuffle, shards, prefetch, resume, normalization). Small files are written
 * to a temporary directory; the real Fashion-MNIST files are read from
 * /usr/share/datasets/fashion-mnist when present.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "lunar/cuda.h"
#include "lunar/data.h"
#include "lunar/rng.h"
#include "test.h"

static char tmpdir[256];
static char pathbuf[8][512];

static const char *tmp_path(int slot, const char *name) {
    snprintf(pathbuf[slot], sizeof pathbuf[slot], "%s/%s", tmpdir, name);
    return pathbuf[slot];
}

static int write_bytes(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static int write_gz(const char *path, const uint8_t *b, size_t n) {
    gzFile g = gzopen(path, "wb");
    if (!g) return -1;
    int w = gzwrite(g, b, (unsigned)n);
    return (gzclose(g) == Z_OK && (size_t)w == n) ? 0 : -1;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* IDX images [n, rows, cols] with pixel (i, y, x) = (i * 31 + y * 7 + x) & 255 */
static uint8_t *make_idx_images(uint32_t n, uint32_t rows, uint32_t cols, size_t *len) {
    *len = 16 + (size_t)n * rows * cols;
    uint8_t *b = malloc(*len);
    put_be32(b, 0x00000803); put_be32(b + 4, n); put_be32(b + 8, rows); put_be32(b + 12, cols);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t y = 0; y < rows; y++)
            for (uint32_t x = 0; x < cols; x++)
                b[16 + ((size_t)i * rows + y) * cols + x] = (uint8_t)((i * 31 + y * 7 + x) & 255);
    return b;
}

/* IDX labels [n] with label i = (i * 3) % 10 */
static uint8_t *make_idx_labels(uint32_t n, size_t *len) {
    *len = 8 + n;
    uint8_t *b = malloc(*len);
    put_be32(b, 0x00000801); put_be32(b + 4, n);
    for (uint32_t i = 0; i < n; i++) b[8 + i] = (uint8_t)((i * 3) % 10);
    return b;
}

static int has(const char *msg, const char *part) { return strstr(msg, part) != NULL; }

/* ------------------------------------------------------------------- IDX */

static void check_idx_dataset(lunar_dataset *ds, uint32_t n, uint32_t rows, uint32_t cols, int *ok) {
    *ok = 0;
    if (!ds || lunar_dataset_count(ds) != n || lunar_dataset_channels(ds) != 1 ||
        lunar_dataset_ndim_spatial(ds) != 2 || lunar_dataset_size(ds, 0) != (int)rows ||
        lunar_dataset_size(ds, 1) != (int)cols || lunar_dataset_size(ds, 2) != -1 ||
        lunar_dataset_dtype(ds) != LUNAR_U8 || lunar_dataset_sample_numel(ds) != rows * cols)
        return;
    const uint8_t *px = lunar_dataset_pixels(ds);
    const int32_t *lb = lunar_dataset_labels(ds);
    int maxl = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (lb[i] != (int32_t)((i * 3) % 10)) return;
        if (lb[i] > maxl) maxl = lb[i];
        for (uint32_t p = 0; p < rows * cols; p++)
            if (px[(size_t)i * rows * cols + p] != (uint8_t)((i * 31 + (p / cols) * 7 + p % cols) & 255))
                return;
    }
    if (lunar_dataset_num_classes(ds) != maxl + 1) return;
    *ok = 1;
}

static void test_idx_round_trip_plain_and_gz(void) {
    size_t il, ll;
    uint8_t *im = make_idx_images(7, 3, 5, &il), *lb = make_idx_labels(7, &ll);
    CHECK(write_bytes(tmp_path(0, "img.idx"), im, il) == 0);
    CHECK(write_bytes(tmp_path(1, "lbl.idx"), lb, ll) == 0);
    CHECK(write_gz(tmp_path(2, "img.idx.gz"), im, il) == 0);
    CHECK(write_gz(tmp_path(3, "lbl.idx.gz"), lb, ll) == 0);
    free(im);
    free(lb);
    int ok;
    lunar_dataset *ds = lunar_dataset_load_idx(pathbuf[0], pathbuf[1]);
    CHECK_MSG(ds, "plain: %s", lunar_last_error());
    check_idx_dataset(ds, 7, 3, 5, &ok);
    lunar_dataset_free(ds);
    CHECK(ok);
    ds = lunar_dataset_load_idx(pathbuf[2], pathbuf[3]);
    CHECK_MSG(ds, "gz: %s", lunar_last_error());
    check_idx_dataset(ds, 7, 3, 5, &ok);
    lunar_dataset_free(ds);
    CHECK(ok);
    /* mixed: gz images, plain labels */
    ds = lunar_dataset_load_idx(pathbuf[2], pathbuf[1]);
    CHECK_MSG(ds, "mixed: %s", lunar_last_error());
    check_idx_dataset(ds, 7, 3, 5, &ok);
    lunar_dataset_free(ds);
    CHECK(ok);
}

static void test_idx_truncated(void) {
    size_t il, ll;
    uint8_t *im = make_idx_images(4, 6, 6, &il), *lb = make_idx_labels(4, &ll);
    CHECK(write_bytes(tmp_path(0, "trunc-img.idx"), im, il - 10) == 0);
    CHECK(write_bytes(tmp_path(1, "trunc-lbl.idx"), lb, ll) == 0);
    lunar_dataset *ds = lunar_dataset_load_idx(pathbuf[0], pathbuf[1]);
    const char *e = lunar_last_error();
    char want[64], got[64];
    snprintf(want, sizeof want, "expected %zu bytes", il);
    snprintf(got, sizeof got, "got %zu bytes", il - 10);
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[0]) && has(e, "truncated") && has(e, want) && has(e, got), "message: %s", e);
    CHECK(lunar_last_status() == LUNAR_ERR_FORMAT);
    /* truncated label file */
    CHECK(write_bytes(tmp_path(2, "trunc-lbl2.idx"), lb, ll - 1) == 0);
    CHECK(write_bytes(tmp_path(3, "full-img.idx"), im, il) == 0);
    ds = lunar_dataset_load_idx(pathbuf[3], pathbuf[2]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[2]) && has(e, "truncated"), "message: %s", e);
    /* a header cut short */
    CHECK(write_bytes(tmp_path(4, "short-hdr.idx"), im, 9) == 0);
    ds = lunar_dataset_load_idx(pathbuf[4], pathbuf[1]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[4]) && has(e, "truncated"), "message: %s", e);
    /* trailing bytes */
    uint8_t *longer = calloc(il + 3, 1);
    memcpy(longer, im, il);
    CHECK(write_bytes(tmp_path(5, "long-img.idx"), longer, il + 3) == 0);
    free(longer);
    ds = lunar_dataset_load_idx(pathbuf[5], pathbuf[1]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[5]) && has(e, "3 trailing bytes"), "message: %s", e);
    /* a gzip stream cut in the middle */
    CHECK(write_gz(tmp_path(6, "img.gz"), im, il) == 0);
    FILE *f = fopen(pathbuf[6], "rb");
    CHECK(f);
    uint8_t gzb[8192];
    size_t gn = fread(gzb, 1, sizeof gzb, f);
    fclose(f);
    CHECK(gn > 20);
    CHECK(write_bytes(tmp_path(7, "img-cut.gz"), gzb, gn / 2) == 0);
    ds = lunar_dataset_load_idx(pathbuf[7], pathbuf[1]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[7]) && (has(e, "truncated") || has(e, "unexpected end")), "message: %s", e);
    free(im);
    free(lb);
}

static void test_idx_bad_magic(void) {
    size_t il, ll;
    uint8_t *im = make_idx_images(3, 2, 2, &il), *lb = make_idx_labels(3, &ll);
    CHECK(write_bytes(tmp_path(1, "magic-lbl.idx"), lb, ll) == 0);
    /* labels given as images: 0x00000801 where 0x00000803 is expected */
    lunar_dataset *ds = lunar_dataset_load_idx(pathbuf[1], pathbuf[1]);
    const char *e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[1]) && has(e, "magic") && has(e, "0x00000801") && has(e, "0x00000803"),
              "message: %s", e);
    /* not IDX at all */
    memcpy(im, "\x89PNG", 4);
    CHECK(write_bytes(tmp_path(0, "magic-img.idx"), im, il) == 0);
    ds = lunar_dataset_load_idx(pathbuf[0], pathbuf[1]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[0]) && has(e, "bad magic number 0x89504E47"), "message: %s", e);
    /* zero rows */
    free(im);
    im = make_idx_images(3, 2, 2, &il);
    put_be32(im + 8, 0);
    CHECK(write_bytes(tmp_path(2, "zero-rows.idx"), im, 16) == 0);
    ds = lunar_dataset_load_idx(pathbuf[2], pathbuf[1]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[2]) && has(e, "0 x 2"), "message: %s", e);
    free(im);
    free(lb);
}

static void test_idx_count_mismatch(void) {
    size_t il, ll;
    uint8_t *im = make_idx_images(5, 2, 3, &il), *lb = make_idx_labels(4, &ll);
    CHECK(write_bytes(tmp_path(0, "cm-img.idx"), im, il) == 0);
    CHECK(write_bytes(tmp_path(1, "cm-lbl.idx"), lb, ll) == 0);
    free(im);
    free(lb);
    lunar_dataset *ds = lunar_dataset_load_idx(pathbuf[0], pathbuf[1]);
    const char *e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[0]) && has(e, pathbuf[1]) && has(e, "5 images") && has(e, "4 labels"),
              "message: %s", e);
}

static void test_idx_missing_file(void) {
    const char *p = tmp_path(0, "no-such-file.idx.gz");
    size_t ll;
    uint8_t *lb = make_idx_labels(2, &ll);
    CHECK(write_bytes(tmp_path(1, "ok-lbl.idx"), lb, ll) == 0);
    free(lb);
    lunar_dataset *ds = lunar_dataset_load_idx(p, pathbuf[1]);
    const char *e = lunar_last_error();
    char want[600];
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", p);
    CHECK(ds == NULL);
    CHECK(lunar_last_status() == LUNAR_ERR_IO);
    CHECK_MSG(has(e, want) && !has(e, "dataset-fashion-mnist"), "message: %s", e);
    /* under the Debian dataset directory the message names the package */
    const char *fp = "/usr/share/datasets/fashion-mnist/no-such-images-idx3-ubyte.gz";
    ds = lunar_dataset_load_idx(fp, pathbuf[1]);
    e = lunar_last_error();
    snprintf(want, sizeof want, "cannot open %s: No such file or directory", fp);
    CHECK(ds == NULL);
    CHECK_MSG(has(e, want) && has(e, "install the Debian package dataset-fashion-mnist"), "message: %s", e);
    /* a directory */
    ds = lunar_dataset_load_idx(tmpdir, pathbuf[1]);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, tmpdir) && has(e, "directory"), "message: %s", e);
}

/* lunar_idx_parse and lunar_dataset_from_idx on every prefix and on random
 * corruptions of a valid pair: an error or a dataset, never a crash. */
static void test_idx_parse_memory(void) {
    size_t il, ll;
    uint8_t *im = make_idx_images(3, 4, 4, &il), *lb = make_idx_labels(3, &ll);
    lunar_idx idx;
    CHECK(lunar_idx_parse(im, il, "mem", &idx) == LUNAR_OK);
    CHECK(idx.type == 0x08 && idx.ndim == 3 && idx.dims[0] == 3 && idx.dims[1] == 4 && idx.dims[2] == 4);
    CHECK(idx.data == im + 16 && idx.nbytes == 48 && idx.elem_size == 1);
    for (size_t k = 0; k < il; k++) {
        CHECK(lunar_idx_parse(im, k, "mem", &idx) == LUNAR_ERR_FORMAT);
        CHECK_MSG(has(lunar_last_error(), "mem"), "prefix %zu: %s", k, lunar_last_error());
    }
    CHECK(lunar_idx_parse(NULL, 0, NULL, &idx) == LUNAR_ERR_FORMAT);
    /* dims whose product overflows */
    uint8_t huge[4 + 4 * 8];
    memset(huge, 0xFF, sizeof huge);
    huge[0] = huge[1] = 0; huge[2] = 0x0E; huge[3] = 8;
    CHECK(lunar_idx_parse(huge, sizeof huge, "huge", &idx) == LUNAR_ERR_FORMAT);
    CHECK_MSG(has(lunar_last_error(), "overflow"), "%s", lunar_last_error());
    uint8_t *buf = malloc(il);
    int accepted = 0;
    for (uint32_t t = 0; t < 2000; t++) {
        memcpy(buf, im, il);
        int flips = 1 + (int)(lunar_rng_u32(7, 1, t) % 4);
        for (int f = 0; f < flips; f++) {
            uint32_t r = lunar_rng_u32(7, 2, (uint64_t)t * 8 + (uint64_t)f);
            buf[r % 20 < 16 ? r % 16 : r % il] = (uint8_t)(r >> 16);
        }
        size_t len = lunar_rng_u32(7, 3, t) % 4 == 0 ? lunar_rng_u32(7, 4, t) % (il + 1) : il;
        lunar_dataset *ds = lunar_dataset_from_idx(buf, len, lb, ll, "fuzz-img", "fuzz-lbl");
        if (ds) accepted++;
        lunar_dataset_free(ds);
    }
    free(buf);
    free(im);
    free(lb);
    CHECK(accepted > 0);   /* pixel-only flips leave a valid file */
}

static void test_fashion_mnist_real(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char ti[256], tl[256], vi[256], vl[256];
    snprintf(ti, sizeof ti, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(tl, sizeof tl, "%s/train-labels-idx1-ubyte.gz", dir);
    snprintf(vi, sizeof vi, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(vl, sizeof vl, "%s/t10k-labels-idx1-ubyte.gz", dir);
    if (access(ti, R_OK) != 0 || access(tl, R_OK) != 0 || access(vi, R_OK) != 0 ||
        access(vl, R_OK) != 0) {
        TEST_SKIP("/usr/share/datasets/fashion-mnist absent (install the Debian package "
                  "dataset-fashion-mnist)");
    }
    /* expected values: read from the .gz files with Python's gzip module
     * (sum of the first image's 784 bytes, of all pixel bytes), not by Lunar */
    struct { const char *im, *lb; int64_t n; int first_label; uint64_t first_sum, total; } sets[2] = {
        {ti, tl, 60000, 9, 76247, 3431114169ull},
        {vi, vl, 10000, 9, 33456, 573469082ull},
    };
    for (int s = 0; s < 2; s++) {
        lunar_dataset *ds = lunar_dataset_load_idx(sets[s].im, sets[s].lb);
        CHECK_MSG(ds, "%s", lunar_last_error());
        int ok = lunar_dataset_count(ds) == sets[s].n && lunar_dataset_channels(ds) == 1 &&
                 lunar_dataset_size(ds, 0) == 28 && lunar_dataset_size(ds, 1) == 28 &&
                 lunar_dataset_num_classes(ds) == 10 && lunar_dataset_dtype(ds) == LUNAR_U8;
        const int32_t *lb = lunar_dataset_labels(ds);
        const uint8_t *px = lunar_dataset_pixels(ds);
        int64_t hist[10] = {0};
        for (int64_t i = 0; i < sets[s].n && ok; i++) {
            if (lb[i] < 0 || lb[i] > 9) ok = 0;
            else hist[lb[i]]++;
        }
        for (int c = 0; c < 10 && ok; c++)
            if (hist[c] != sets[s].n / 10) ok = 0;   /* Fashion-MNIST is balanced */
        uint64_t first = 0, total = 0;
        for (int p = 0; p < 784; p++) first += px[p];
        for (int64_t p = 0; p < sets[s].n * 784; p++) total += px[p];
        int first_label = lb[0];
        lunar_dataset_free(ds);
        CHECK_MSG(ok, "set %d: shape, labels or class balance wrong", s);
        CHECK(first_label == sets[s].first_label);
        CHECK_MSG(first == sets[s].first_sum && total == sets[s].total,
                  "set %d: pixel sums %llu, %llu", s, (unsigned long long)first, (unsigned long long)total);
    }
}

/* ----------------------------------------------------------------- CIFAR */

static void test_cifar_small(void) {
    enum { REC = 3073 };
    uint8_t *a = malloc(3 * REC), *b = malloc(2 * REC);
    for (int r = 0; r < 3; r++) {
        a[r * REC] = (uint8_t)(r + 1);
        for (int p = 0; p < 3072; p++) a[r * REC + 1 + p] = (uint8_t)((p * 5 + r) & 255);
    }
    for (int r = 0; r < 2; r++) {
        b[r * REC] = (uint8_t)(9 - r);
        for (int p = 0; p < 3072; p++) b[r * REC + 1 + p] = (uint8_t)((p / 1024) * 80 + r);
    }
    CHECK(write_bytes(tmp_path(0, "data_batch_1.bin"), a, 3 * REC) == 0);
    CHECK(write_gz(tmp_path(1, "data_batch_2.bin.gz"), b, 2 * REC) == 0);
    const char *paths[2] = {pathbuf[0], pathbuf[1]};
    lunar_dataset *ds = lunar_dataset_load_cifar10(paths, 2);
    CHECK_MSG(ds, "%s", lunar_last_error());
    int ok = lunar_dataset_count(ds) == 5 && lunar_dataset_channels(ds) == 3 &&
             lunar_dataset_size(ds, 0) == 32 && lunar_dataset_size(ds, 1) == 32 &&
             lunar_dataset_num_classes(ds) == 10;
    const int32_t *lb = lunar_dataset_labels(ds);
    const uint8_t *px = lunar_dataset_pixels(ds);
    int want_labels[5] = {1, 2, 3, 9, 8};
    for (int i = 0; i < 5 && ok; i++) ok = lb[i] == want_labels[i];
    /* CHW: channel c of sample 3 (first of file 2) is c * 80 */
    int chw = px[3 * 3072 + 0] == 0 && px[3 * 3072 + 1024] == 80 && px[3 * 3072 + 2047] == 80 &&
              px[3 * 3072 + 2048] == 160 && px[4 * 3072 + 3071] == 161 && px[2 * 3072 + 7] == ((35 + 2) & 255);
    lunar_dataset_free(ds);
    CHECK(ok);
    CHECK(chw);
    /* from memory */
    ds = lunar_cifar10_parse(a, 3 * REC, "mem");
    CHECK(ds && lunar_dataset_count(ds) == 3);
    lunar_dataset_free(ds);
    /* a truncated file */
    CHECK(write_bytes(tmp_path(2, "cut.bin"), a, 2 * REC + 100) == 0);
    paths[1] = pathbuf[2];
    ds = lunar_dataset_load_cifar10(paths, 2);
    const char *e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[2]) && has(e, "6246 bytes") && has(e, "3073"), "message: %s", e);
    /* a bad label */
    a[REC] = 10;
    CHECK(write_bytes(tmp_path(3, "badlabel.bin"), a, 3 * REC) == 0);
    paths[1] = pathbuf[3];
    ds = lunar_dataset_load_cifar10(paths, 2);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[3]) && has(e, "record 1") && has(e, "label 10"), "message: %s", e);
    /* missing */
    paths[1] = tmp_path(4, "missing.bin");
    ds = lunar_dataset_load_cifar10(paths, 2);
    e = lunar_last_error();
    CHECK(ds == NULL);
    CHECK_MSG(has(e, pathbuf[4]) && has(e, "No such file"), "message: %s", e);
    CHECK(lunar_dataset_load_cifar10(paths, 0) == NULL);
    free(a);
    free(b);
}

/* ------------------------------------------------------------- synthetic */

static void test_synthetic_deterministic(void) {
    int size2[2] = {8, 6}, size3[3] = {4, 5, 6};
    lunar_dataset *a = lunar_dataset_synthetic(50, 3, 2, size2, 4, 123);
    lunar_dataset *b = lunar_dataset_synthetic(50, 3, 2, size2, 4, 123);
    lunar_dataset *c = lunar_dataset_synthetic(50, 3, 2, size2, 4, 124);
    lunar_dataset *d = lunar_dataset_synthetic(20, 2, 3, size3, 3, 5);
    CHECK_MSG(a && b && c && d, "%s", lunar_last_error());
    int64_t numel = lunar_dataset_sample_numel(a);
    int same_ab = memcmp(lunar_dataset_pixels(a), lunar_dataset_pixels(b), 50 * numel * 4) == 0 &&
                  memcmp(lunar_dataset_labels(a), lunar_dataset_labels(b), 50 * 4) == 0;
    int same_ac = memcmp(lunar_dataset_pixels(a), lunar_dataset_pixels(c), 50 * numel * 4) == 0;
    int shape = numel == 3 * 8 * 6 && lunar_dataset_dtype(a) == LUNAR_F32 &&
                lunar_dataset_num_classes(a) == 4 && lunar_dataset_ndim_spatial(d) == 3 &&
                lunar_dataset_size(d, 0) == 4 && lunar_dataset_size(d, 2) == 6 &&
                lunar_dataset_sample_numel(d) == 2 * 4 * 5 * 6;
    int labels = 1;
    for (int i = 0; i < 50; i++) labels &= lunar_dataset_labels(a)[i] == i % 4;
    int finite = 1;
    const float *px = lunar_dataset_pixels(d);
    for (int64_t i = 0; i < 20 * lunar_dataset_sample_numel(d); i++) finite &= isfinite(px[i]) && fabsf(px[i]) < 10;
    lunar_dataset_free(a);
    lunar_dataset_free(b);
    lunar_dataset_free(c);
    lunar_dataset_free(d);
    CHECK(same_ab);
    CHECK(!same_ac);
    CHECK(shape);
    CHECK(labels);
    CHECK(finite);
    CHECK(lunar_dataset_synthetic(10, 1, 4, size3, 2, 0) == NULL);
    CHECK(has(lunar_last_error(), "ndim_spatial"));
    int bad[2] = {8, 0};
    CHECK(lunar_dataset_synthetic(10, 1, 2, bad, 2, 0) == NULL);
}

/* Learnable: a nearest-class-mean classifier fit on 300 samples labels 300
 * others almost perfectly, in 2D and 3D. */
static void test_synthetic_learnable(void) {
    int size2[2] = {8, 8}, size3[3] = {4, 6, 6};
    for (int nd = 2; nd <= 3; nd++) {
        int K = 10;
        lunar_dataset *ds = lunar_dataset_synthetic(600, 2, nd, nd == 2 ? size2 : size3, K, 77);
        CHECK(ds);
        int64_t D = lunar_dataset_sample_numel(ds);
        const float *px = lunar_dataset_pixels(ds);
        const int32_t *lb = lunar_dataset_labels(ds);
        double *mean = calloc((size_t)(K * D), sizeof(double));
        int cnt[10] = {0};
        for (int i = 0; i < 300; i++) {
            cnt[lb[i]]++;
            for (int64_t j = 0; j < D; j++) mean[lb[i] * D + j] += px[i * D + j];
        }
        for (int k = 0; k < K; k++)
            for (int64_t j = 0; j < D; j++) mean[k * D + j] /= cnt[k];
        int correct = 0;
        for (int i = 300; i < 600; i++) {
            int best = -1;
            double bd = 1e300;
            for (int k = 0; k < K; k++) {
                double d2 = 0;
                for (int64_t j = 0; j < D; j++) {
                    double t = px[i * D + j] - mean[k * D + j];
                    d2 += t * t;
                }
                if (d2 < bd) { bd = d2; best = k; }
            }
            correct += best == lb[i];
        }
        free(mean);
        lunar_dataset_free(ds);
        CHECK_MSG(correct >= 285, "%dD: nearest-mean accuracy %d/300", nd, correct);
    }
}

/* ---------------------------------------------------------------- loader */

/* f32 dataset of n samples, 1 channel 2x2, every pixel = index, label = index % 7 */
static lunar_dataset *index_dataset(int64_t n) {
    int size[2] = {2, 2};
    lunar_dataset *ds = lunar_dataset_new(LUNAR_F32, n, 1, 2, size, 7);
    if (!ds) return NULL;
    float *px = lunar_dataset_pixels(ds);
    int32_t *lb = lunar_dataset_labels(ds);
    for (int64_t i = 0; i < n; i++) {
        for (int p = 0; p < 4; p++) px[i * 4 + p] = (float)i;
        lb[i] = (int32_t)(i % 7);
    }
    return ds;
}

/* Runs one epoch, writing sample indices (from pixels) to out; returns count or -1. */
static int64_t epoch_indices(lunar_loader *l, int64_t epoch, int64_t *out, int bs) {
    float *img = malloc((size_t)bs * 4 * sizeof(float));
    int32_t *lab = malloc((size_t)bs * sizeof(int32_t));
    int64_t k = 0;
    int n = -1;
    if (img && lab && lunar_loader_set_epoch(l, epoch) == LUNAR_OK) {
        while ((n = lunar_loader_next(l, img, lab)) > 0) {
            if (n > bs) { n = -1; break; }
            for (int s = 0; s < n; s++) {
                int64_t idx = (int64_t)img[s * 4];
                if (img[s * 4 + 3] != (float)idx || lab[s] != idx % 7) n = -1;
                out[k++] = idx;
            }
            if (n < 0) break;
        }
    }
    free(img);
    free(lab);
    return n < 0 ? -1 : k;
}

static void test_loader_shuffle_deterministic(void) {
    enum { N = 97 };
    lunar_dataset *ds = index_dataset(N);
    CHECK(ds);
    lunar_loader *a = lunar_loader_new(ds, 10, 1, 42, 0, 0, 1, NULL, NULL, 0);
    lunar_loader *b = lunar_loader_new(ds, 10, 1, 42, 0, 0, 1, NULL, NULL, 0);
    lunar_loader *c = lunar_loader_new(ds, 10, 1, 43, 0, 0, 1, NULL, NULL, 0);
    lunar_loader *id = lunar_loader_new(ds, 10, 0, 42, 0, 0, 1, NULL, NULL, 0);
    CHECK_MSG(a && b && c && id, "%s", lunar_last_error());
    CHECK(lunar_loader_num_batches(a) == 10 && lunar_loader_num_samples(a) == N);
    int64_t a0[N], a1[N], b1[N], b0[N], c0[N], i0[N], i1[N];
    int64_t na0 = epoch_indices(a, 0, a0, 10), na1 = epoch_indices(a, 1, a1, 10);
    int64_t nb1 = epoch_indices(b, 1, b1, 10), nb0 = epoch_indices(b, 0, b0, 10);  /* other order */
    int64_t nc0 = epoch_indices(c, 0, c0, 10);
    int64_t ni0 = epoch_indices(id, 0, i0, 10), ni1 = epoch_indices(id, 1, i1, 10);
    lunar_loader_free(a);
    lunar_loader_free(b);
    lunar_loader_free(c);
    lunar_loader_free(id);
    lunar_dataset_free(ds);
    CHECK(na0 == N && na1 == N && nb0 == N && nb1 == N && nc0 == N && ni0 == N && ni1 == N);
    CHECK(memcmp(a0, b0, sizeof a0) == 0);       /* same (seed, epoch): same order */
    CHECK(memcmp(a1, b1, sizeof a1) == 0);
    CHECK(memcmp(a0, a1, sizeof a0) != 0);       /* epochs differ */
    CHECK(memcmp(a0, c0, sizeof a0) != 0);       /* seeds differ */
    int seen[N] = {0}, perm = 1, ident = 1, moved = 0;
    for (int i = 0; i < N; i++) {
        if (a0[i] < 0 || a0[i] >= N || seen[a0[i]]++) perm = 0;
        ident &= i0[i] == i && i1[i] == i;
        moved += a0[i] != i;
    }
    CHECK(perm);                                 /* a permutation */
    CHECK(ident);                                /* no shuffle: identity every epoch */
    CHECK(moved > N / 2);
}

static void test_loader_shards(void) {
    enum { N = 103, S = 4 };
    lunar_dataset *ds = index_dataset(N);
    CHECK(ds);
    for (int drop = 0; drop <= 1; drop++) {
        int count[N] = {0};
        int64_t nb0 = -1, total = 0;
        for (int r = 0; r < S; r++) {
            lunar_loader *l = lunar_loader_new(ds, 8, 1, 9, drop, r, S, NULL, NULL, r % 2);
            CHECK_MSG(l, "%s", lunar_last_error());
            int64_t per = lunar_loader_num_samples(l), nb = lunar_loader_num_batches(l);
            CHECK(per == (drop ? N / S : (N + S - 1) / S));
            CHECK(nb == (drop ? per / 8 : (per + 7) / 8));
            if (r == 0) nb0 = nb;
            CHECK(nb == nb0);                    /* every rank has the same number of batches */
            int64_t idx[N];
            int64_t k = epoch_indices(l, 3, idx, 8);
            lunar_loader_free(l);
            CHECK(k == (drop ? nb * 8 : per));
            for (int64_t i = 0; i < k; i++) count[idx[i]]++;
            total += k;
        }
        int covered = 0, dup = 0;
        for (int i = 0; i < N; i++) {
            covered += count[i] > 0;
            dup += count[i] > 1 ? count[i] - 1 : 0;
        }
        if (!drop) {
            CHECK(covered == N);                 /* padded: cover everything */
            CHECK(dup == S * ((N + S - 1) / S) - N);   /* only the padding repeats */
        } else {
            CHECK(dup == 0);                     /* truncated: disjoint */
            CHECK(covered == total);
        }
    }
    /* shard r of the padded list = positions r, r + S, ... of the global order */
    lunar_loader *g = lunar_loader_new(ds, 200, 1, 9, 0, 0, 1, NULL, NULL, 0);
    lunar_loader *r1 = lunar_loader_new(ds, 200, 1, 9, 0, 1, S, NULL, NULL, 0);
    int64_t gi[N], ri[N];
    CHECK(epoch_indices(g, 2, gi, 200) == N && epoch_indices(r1, 2, ri, 200) == 26);
    int strided = 1;
    for (int k = 0; k < 26; k++) strided &= ri[k] == gi[(1 + k * S) % N];
    lunar_loader_free(g);
    lunar_loader_free(r1);
    lunar_dataset_free(ds);
    CHECK(strided);
}

/* u8 dataset with pixels from a hash, 3 channels 5x4, for the bitwise checks */
static lunar_dataset *u8_dataset(int64_t n) {
    int size[2] = {5, 4};
    lunar_dataset *ds = lunar_dataset_new(LUNAR_U8, n, 3, 2, size, 10);
    if (!ds) return NULL;
    uint8_t *px = lunar_dataset_pixels(ds);
    for (int64_t i = 0; i < n * 60; i++) px[i] = (uint8_t)(lunar_rng_u32(1, 2, (uint64_t)i) >> 24);
    for (int64_t i = 0; i < n; i++) lunar_dataset_labels(ds)[i] = (int32_t)(i % 10);
    return ds;
}

static void test_loader_prefetch_bitwise(void) {
    enum { N = 77, B = 6, NUMEL = 60 };
    lunar_dataset *ds = u8_dataset(N);
    CHECK(ds);
    const float mean[3] = {0.5f, 0.4f, 0.3f}, std[3] = {0.25f, 0.2f, 0.3f};
    lunar_loader *a = lunar_loader_new(ds, B, 1, 5, 0, 1, 2, mean, std, 0);
    lunar_loader *b = lunar_loader_new(ds, B, 1, 5, 0, 1, 2, mean, std, 1);
    CHECK_MSG(a && b, "%s", lunar_last_error());
    float ia[B * NUMEL], ib[B * NUMEL];
    int32_t la[B], lb[B];
    int same = 1, batches = 0, partial = 0;
    for (int epoch = 0; epoch < 3; epoch++) {
        if (epoch > 0) {
            CHECK(lunar_loader_set_epoch(a, epoch) == LUNAR_OK);
            CHECK(lunar_loader_set_epoch(b, epoch) == LUNAR_OK);
        }
        for (;;) {
            int na = lunar_loader_next(a, ia, la), nb = lunar_loader_next(b, ib, lb);
            if (na != nb) { same = 0; break; }
            if (na == 0) break;
            batches++;
            partial += na < B;
            if (memcmp(ia, ib, (size_t)na * NUMEL * sizeof(float)) != 0 ||
                memcmp(la, lb, (size_t)na * sizeof(int32_t)) != 0)
                same = 0;
        }
        /* after the end: 0 again, position at the end */
        int64_t e, bi;
        lunar_loader_position(b, &e, &bi);
        CHECK(lunar_loader_next(b, ib, lb) == 0 && e == epoch && bi == lunar_loader_num_batches(b));
    }
    /* a seek in the middle of a prefetch */
    CHECK(lunar_loader_seek(a, 7, 2) == LUNAR_OK && lunar_loader_seek(b, 7, 2) == LUNAR_OK);
    int na = lunar_loader_next(a, ia, la), nb = lunar_loader_next(b, ib, lb);
    same &= na == nb && na == B && memcmp(ia, ib, sizeof ia) == 0 && memcmp(la, lb, sizeof la) == 0;
    lunar_loader_free(a);
    lunar_loader_free(b);
    lunar_dataset_free(ds);
    CHECK(same);
    CHECK(batches == 3 * 7);   /* 39 samples per shard, batches of 6: 7 */
    CHECK(partial == 3);
}

static void test_loader_seek_resume(void) {
    enum { N = 50, B = 4 };
    lunar_dataset *ds = index_dataset(N);
    CHECK(ds);
    for (int pf = 0; pf <= 1; pf++) {
        /* straight run over epochs 0 and 1 */
        lunar_loader *l = lunar_loader_new(ds, B, 1, 11, 1, 0, 1, NULL, NULL, pf);
        CHECK_MSG(l, "%s", lunar_last_error());
        CHECK(lunar_loader_num_batches(l) == 12);
        int64_t e, bi;
        lunar_loader_position(l, &e, &bi);
        CHECK(e == 0 && bi == 0);
        float img[B * 4], straight[2][12][B];
        int32_t lab[B];
        for (int ep = 0; ep < 2; ep++) {
            CHECK(lunar_loader_set_epoch(l, ep) == LUNAR_OK);
            for (int k = 0; k < 12; k++) {
                CHECK(lunar_loader_next(l, img, lab) == B);
                for (int s = 0; s < B; s++) straight[ep][k][s] = img[s * 4];
            }
            CHECK(lunar_loader_next(l, img, lab) == 0);   /* drop_last: 2 samples dropped */
        }
        /* stop in the middle of epoch 1, save the position, resume in a new loader */
        CHECK(lunar_loader_set_epoch(l, 1) == LUNAR_OK);
        for (int k = 0; k < 5; k++) CHECK(lunar_loader_next(l, img, lab) == B);
        lunar_loader_position(l, &e, &bi);
        CHECK(e == 1 && bi == 5);
        lunar_loader_free(l);   /* mid-epoch, prefetch thread running */
        lunar_loader *r = lunar_loader_new(ds, B, 1, 11, 1, 0, 1, NULL, NULL, pf);
        CHECK(r && lunar_loader_seek(r, e, bi) == LUNAR_OK);
        int same = 1;
        for (int k = 5; k < 12; k++) {
            same &= lunar_loader_next(r, img, lab) == B;
            for (int s = 0; s < B; s++) same &= img[s * 4] == straight[1][k][s];
        }
        same &= lunar_loader_next(r, img, lab) == 0;
        /* back to epoch 0, batch 11 */
        CHECK(lunar_loader_seek(r, 0, 11) == LUNAR_OK);
        same &= lunar_loader_next(r, img, lab) == B;
        for (int s = 0; s < B; s++) same &= img[s * 4] == straight[0][11][s];
        /* out of range */
        CHECK(lunar_loader_seek(r, 0, 13) == LUNAR_ERR_ARG);
        CHECK(has(lunar_last_error(), "out of range"));
        CHECK(lunar_loader_seek(r, -1, 0) == LUNAR_ERR_ARG);
        CHECK(lunar_loader_seek(r, 2, 12) == LUNAR_OK && lunar_loader_next(r, img, lab) == 0);
        lunar_loader_free(r);
        CHECK_MSG(same, "prefetch %d: resumed batches differ from the straight run", pf);
    }
    lunar_dataset_free(ds);
}

static void test_loader_normalization(void) {
    int size[2] = {1, 2};
    lunar_dataset *ds = lunar_dataset_new(LUNAR_U8, 2, 2, 2, size, 2);
    CHECK(ds);
    uint8_t *px = lunar_dataset_pixels(ds);
    const uint8_t vals[8] = {0, 255, 51, 102, 10, 20, 30, 40};
    memcpy(px, vals, 8);
    const float mean[2] = {0.5f, 0.25f}, std[2] = {0.5f, 2.0f};
    lunar_loader *l = lunar_loader_new(ds, 2, 0, 0, 0, 0, 1, mean, std, 0);
    lunar_loader *raw = lunar_loader_new(ds, 2, 0, 0, 0, 0, 1, NULL, NULL, 1);
    CHECK_MSG(l && raw, "%s", lunar_last_error());
    float img[8], img_raw[8];
    int32_t lab[2];
    CHECK(lunar_loader_next(l, img, lab) == 2);
    CHECK(lunar_loader_next(raw, img_raw, lab) == 2);
    for (int i = 0; i < 8; i++) {
        int c = (i / 2) % 2;
        CHECK_CLOSE(img[i], (vals[i] / 255.0 - mean[c]) / std[c], 1e-6, 1e-6);
        CHECK(img[i] == ((float)vals[i] / 255.0f - mean[c]) / std[c]);   /* torchvision's order */
        CHECK(img_raw[i] == (float)vals[i] / 255.0f);
    }
    CHECK(img[0] == -1.0f && img[1] == 1.0f);
    lunar_loader_free(l);
    lunar_loader_free(raw);
    /* float sources are not scaled by 1/255 */
    lunar_dataset *f = index_dataset(3);
    const float m1[1] = {1.0f}, s1[1] = {2.0f};
    l = lunar_loader_new(f, 3, 0, 0, 0, 0, 1, m1, s1, 0);
    float fi[12];
    int32_t fl[3];
    CHECK(l && lunar_loader_next(l, fi, fl) == 3);
    CHECK(fi[0] == -0.5f && fi[4] == 0.0f && fi[8] == 0.5f);
    lunar_loader_free(l);
    lunar_dataset_free(f);
    lunar_dataset_free(ds);
}

static void test_loader_errors(void) {
    lunar_dataset *ds = index_dataset(10);
    CHECK(ds);
    CHECK(lunar_loader_new(NULL, 4, 0, 0, 0, 0, 1, NULL, NULL, 0) == NULL);
    CHECK(lunar_loader_new(ds, 0, 0, 0, 0, 0, 1, NULL, NULL, 0) == NULL);
    CHECK(has(lunar_last_error(), "batch_size 0"));
    CHECK(lunar_loader_new(ds, 4, 0, 0, 0, 2, 2, NULL, NULL, 0) == NULL);
    CHECK(has(lunar_last_error(), "shard_rank 2 of num_shards 2"));
    const float m[1] = {0}, s0[1] = {0};
    CHECK(lunar_loader_new(ds, 4, 0, 0, 0, 0, 1, m, s0, 0) == NULL);
    CHECK(has(lunar_last_error(), "std"));
    CHECK(lunar_loader_new(ds, 4, 0, 0, 0, 0, 1, m, NULL, 0) == NULL);
    CHECK(lunar_loader_new(ds, 11, 0, 0, 1, 0, 1, NULL, NULL, 0) == NULL);   /* no batch */
    CHECK(has(lunar_last_error(), "no batch"));
    lunar_dataset *empty = index_dataset(0);
    CHECK(empty && lunar_loader_new(empty, 1, 0, 0, 0, 0, 1, NULL, NULL, 0) == NULL);
    lunar_dataset_free(empty);
    /* a loader freed right after creation, while its thread prefetches */
    for (int i = 0; i < 20; i++) {
        lunar_loader *l = lunar_loader_new(ds, 3, 1, (uint64_t)i, 0, 0, 1, NULL, NULL, 1);
        CHECK(l);
        lunar_loader_free(l);
    }
    CHECK(lunar_loader_next(NULL, NULL, NULL) == -1);
    lunar_dataset_free(ds);
}

/* lunar_loader_set_augment: the flip by hand; the crop as a shift of the
 * normalized image by (dy, dx) in [-1, 1]^2 with the normalized 0 pixel shifted
 * in, found by search (all nine shifts appear over 300 samples) and equal to
 * the documented Philox draws; batches bitwise the same with prefetch; a new
 * draw each epoch; bad arguments refused naming them. */
static void test_loader_augment(void) {
    /* flip by hand: [[1, 2, 3], [4, 5, 6]] -> [[3, 2, 1], [6, 5, 4]] (/255) */
    int size23[2] = {2, 3};
    lunar_dataset *t = lunar_dataset_new(LUNAR_U8, 1, 1, 2, size23, 1);
    CHECK(t);
    uint8_t *tp = lunar_dataset_pixels(t);
    for (int i = 0; i < 6; i++) tp[i] = (uint8_t)(i + 1);
    lunar_loader *l = lunar_loader_new(t, 1, 0, 0, 0, 0, 1, NULL, NULL, 0);
    CHECK(l && lunar_loader_set_augment(l, 0, 1.0) == LUNAR_OK);
    float fimg[6];
    int32_t flab[1];
    const int want[6] = {3, 2, 1, 6, 5, 4};
    CHECK(lunar_loader_next(l, fimg, flab) == 1);
    for (int i = 0; i < 6; i++) CHECK(fimg[i] == (float)want[i] / 255.0f);
    lunar_loader_free(l);
    lunar_dataset_free(t);

    enum { N = 300, C = 3, H = 5, W = 4, NUMEL = 60 };
    lunar_dataset *ds = u8_dataset(N);
    CHECK(ds);
    const float mean[3] = {0.5f, 0.4f, 0.3f}, std[3] = {0.25f, 0.2f, 0.3f};
    lunar_loader *plain = lunar_loader_new(ds, N, 0, 9, 0, 0, 1, mean, std, 0);
    lunar_loader *aug = lunar_loader_new(ds, N, 0, 9, 0, 0, 1, mean, std, 0);
    CHECK_MSG(plain && aug && lunar_loader_set_augment(aug, 1, 0.0) == LUNAR_OK, "%s", lunar_last_error());
    float *a = malloc((size_t)N * NUMEL * sizeof(float)), *p = malloc((size_t)N * NUMEL * sizeof(float));
    int32_t *lab = malloc(N * sizeof(int32_t));
    CHECK(lunar_loader_next(plain, p, lab) == N && lunar_loader_next(aug, a, lab) == N);
    int seen[3][3] = {{0}}, found_all = 1, formula = 1;
    for (int i = 0; i < N; i++) {
        int found = 0;
        for (int dy = -1; dy <= 1 && !found; dy++)
            for (int dx = -1; dx <= 1 && !found; dx++) {
                int ok = 1;
                for (int c = 0; c < C && ok; c++)
                    for (int y = 0; y < H && ok; y++)
                        for (int x = 0; x < W && ok; x++) {
                            int sy = y + dy, sx = x + dx;
                            float w = sy >= 0 && sy < H && sx >= 0 && sx < W ? p[(size_t)i * NUMEL + c * H * W + sy * W + sx]
                                                                             : (0.0f - mean[c]) / std[c];
                            ok = a[(size_t)i * NUMEL + c * H * W + y * W + x] == w;
                        }
                if (ok) {
                    found = 1;
                    seen[dy + 1][dx + 1]++;
                    /* data.h's draws: w0 = rng(seed, AUG1 << 32 ^ epoch, 2 idx) */
                    uint32_t w0 = lunar_rng_u32(9, 0x41554731ull << 32, 2 * (uint64_t)i);
                    int fy = (int)(((w0 & 0xFFFF) * 3u) >> 16) - 1, fx = (int)(((w0 >> 16) * 3u) >> 16) - 1;
                    /* a sample whose shift pulls in only equal pixels could match
                     * several shifts; with hashed pixels none does */
                    formula &= fy == dy && fx == dx;
                }
            }
        found_all &= found;
    }
    CHECK(found_all);
    CHECK(formula);
    for (int dy = 0; dy < 3; dy++)
        for (int dx = 0; dx < 3; dx++) CHECK_MSG(seen[dy][dx] > 0, "shift (%d, %d) never drawn", dy - 1, dx - 1);
    /* crop and flip together (hflip 1: every sample mirrored): sample i is the
     * plain one read at column (W - 1 - x) + dx, row y + dy, the shift (dy, dx)
     * of the same draw, the normalized 0 pixel outside */
    lunar_loader *both = lunar_loader_new(ds, N, 0, 9, 0, 0, 1, mean, std, 0);
    CHECK(both && lunar_loader_set_augment(both, 1, 1.0) == LUNAR_OK);
    float *f = malloc((size_t)N * NUMEL * sizeof(float));
    CHECK(lunar_loader_next(both, f, lab) == N);
    int bad = 0;
    for (int i = 0; i < N; i++) {
        uint32_t w0 = lunar_rng_u32(9, 0x41554731ull << 32, 2 * (uint64_t)i);
        int dy = (int)(((w0 & 0xFFFF) * 3u) >> 16) - 1, dx = (int)(((w0 >> 16) * 3u) >> 16) - 1;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int sy = y + dy, sx = W - 1 - x + dx;
                    float w = sy >= 0 && sy < H && sx >= 0 && sx < W ? p[(size_t)i * NUMEL + c * H * W + sy * W + sx]
                                                                     : (0.0f - mean[c]) / std[c];
                    bad += f[(size_t)i * NUMEL + c * H * W + y * W + x] != w;
                }
    }
    CHECK_MSG(bad == 0, "crop + flip: %d pixels differ from the mirrored, shifted image", bad);
    free(f);
    lunar_loader_free(both);
    /* another epoch: other draws */
    CHECK(lunar_loader_set_epoch(aug, 1) == LUNAR_OK);
    float *a1 = malloc((size_t)N * NUMEL * sizeof(float));
    CHECK(lunar_loader_next(aug, a1, lab) == N);
    CHECK(memcmp(a, a1, (size_t)N * NUMEL * sizeof(float)) != 0);
    lunar_loader_free(plain);
    lunar_loader_free(aug);

    /* prefetch, batches of 7, shuffled: the same bits as without prefetch */
    lunar_loader *x = lunar_loader_new(ds, 7, 1, 3, 0, 0, 1, mean, std, 0);
    lunar_loader *y = lunar_loader_new(ds, 7, 1, 3, 0, 0, 1, mean, std, 2);
    CHECK(x && y && lunar_loader_set_augment(x, 2, 0.5) == LUNAR_OK && lunar_loader_set_augment(y, 2, 0.5) == LUNAR_OK);
    int same = 1;
    for (int b = 0; b < 10; b++) {
        int nx = lunar_loader_next(x, a, lab), ny = lunar_loader_next(y, a1, lab);
        same &= nx == 7 && ny == 7 && memcmp(a, a1, 7 * NUMEL * sizeof(float)) == 0;
    }
    CHECK(same);
    /* errors */
    CHECK(lunar_loader_set_augment(x, 4, 0.0) != LUNAR_OK && has(lunar_last_error(), "crop padding 4"));
    CHECK(has(lunar_last_error(), "5 x 4"));
    CHECK(lunar_loader_set_augment(x, -1, 0.0) != LUNAR_OK && has(lunar_last_error(), "crop padding -1"));
    CHECK(lunar_loader_set_augment(x, 0, 1.5) != LUNAR_OK && has(lunar_last_error(), "hflip 1.5"));
    int size3[3] = {2, 2, 2};
    lunar_dataset *vol = lunar_dataset_new(LUNAR_U8, 4, 1, 3, size3, 2);
    lunar_loader *v = vol ? lunar_loader_new(vol, 2, 0, 0, 0, 0, 1, NULL, NULL, 0) : NULL;
    CHECK(v && lunar_loader_set_augment(v, 1, 0.0) != LUNAR_OK && has(lunar_last_error(), "3-D"));
    CHECK(v && lunar_loader_set_augment(v, 0, 0.0) == LUNAR_OK);   /* none: fine */
    lunar_loader_free(v);
    lunar_dataset_free(vol);
    lunar_loader_free(x);
    lunar_loader_free(y);
    free(a); free(a1); free(p); free(lab);
    lunar_dataset_free(ds);
}

/* lunar_loader_next_tensors: the same batches as lunar_loader_next (the
 * reference), as CPU tensors of shape [n, 3, 5, 4] and [n]; a device that is
 * not there is refused when it is set, naming it. */
static void test_loader_next_tensors(void) {
    enum { N = 23, B = 6, NUMEL = 60 };
    lunar_dataset *ds = u8_dataset(N);
    CHECK(ds);
    lunar_loader *a = lunar_loader_new(ds, B, 1, 3, 0, 0, 1, NULL, NULL, 0);
    lunar_loader *b = lunar_loader_new(ds, B, 1, 3, 0, 0, 1, NULL, NULL, 1);
    CHECK_MSG(a && b, "%s", lunar_last_error());
    CHECK(lunar_loader_device(b) == LUNAR_CPU && lunar_loader_set_device(b, LUNAR_CPU) == LUNAR_OK);
    float ia[B * NUMEL];
    int32_t la[B];
    int same = 1, batches = 0, last = 0;
    for (;;) {
        lunar_tensor *img, *lab;
        int na = lunar_loader_next(a, ia, la), nb = lunar_loader_next_tensors(b, &img, &lab);
        if (na != nb) { same = 0; break; }
        if (nb == 0) { same &= img == NULL && lab == NULL; break; }
        batches++;
        last = nb;
        same &= img->ndim == 4 && img->shape[0] == nb && img->shape[1] == 3 && img->shape[2] == 5 &&
                img->shape[3] == 4 && lab->ndim == 1 && lab->shape[0] == nb && img->dtype == LUNAR_F32 &&
                lab->dtype == LUNAR_I32 && lunar_tensor_device(img) == LUNAR_CPU;
        same &= memcmp(lunar_tensor_data(img), ia, (size_t)nb * NUMEL * sizeof(float)) == 0 &&
                memcmp(lunar_tensor_data(lab), la, (size_t)nb * sizeof(int32_t)) == 0;
        lunar_tensor_free(img);
        lunar_tensor_free(lab);
    }
    CHECK(same);
    CHECK(batches == 4 && last == 5);   /* 23 = 3 * 6 + 5 */
    /* a CUDA device that this build or machine does not have: an error, the loader unchanged */
    if (lunar_cuda_device_count() <= 7) {
        CHECK(lunar_loader_set_device(b, 7) != LUNAR_OK);
        CHECK(lunar_loader_device(b) == LUNAR_CPU);
    }
    CHECK(lunar_loader_set_device(b, -5) == LUNAR_ERR_ARG && has(lunar_last_error(), "-5"));
    lunar_tensor *x = (lunar_tensor *)1, *y = (lunar_tensor *)1;
    CHECK(lunar_loader_next_tensors(NULL, &x, &y) == -1 && x == NULL && y == NULL);
    lunar_loader_free(a);
    lunar_loader_free(b);
    lunar_dataset_free(ds);
}

static void rm_rf_tmp(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/lunar_test_data_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_idx_round_trip_plain_and_gz);
    RUN(test_idx_truncated);
    RUN(test_idx_bad_magic);
    RUN(test_idx_count_mismatch);
    RUN(test_idx_missing_file);
    RUN(test_idx_parse_memory);
    RUN(test_fashion_mnist_real);
    RUN(test_cifar_small);
    RUN(test_synthetic_deterministic);
    RUN(test_synthetic_learnable);
    RUN(test_loader_shuffle_deterministic);
    RUN(test_loader_shards);
    RUN(test_loader_prefetch_bitwise);
    RUN(test_loader_seek_resume);
    RUN(test_loader_normalization);
    RUN(test_loader_errors);
    RUN(test_loader_augment);
    RUN(test_loader_next_tensors);
    rm_rf_tmp();
    return TEST_SUMMARY();
}
