/*
 * tests/c/test_safetensors.c: safetensors write/read round trip with
 * metadata, the atomic write (and the file-system helpers of core/io/fs.c), and every corruption refused with a message that
 * names the file (and the tensor). Files go to a temporary directory.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lunar/io.h"
#include "lunar/rng.h"
#include "test.h"

static char tmpdir[256];
static char pathbuf[4][512];

static const char *tmp_path(int slot, const char *name) {
    snprintf(pathbuf[slot], sizeof pathbuf[slot], "%s/%s", tmpdir, name);
    return pathbuf[slot];
}

static int has(const char *msg, const char *part) { return strstr(msg, part) != NULL; }

static uint8_t *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

static int write_bytes(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

/* Writes a file with this JSON header (padded to 8 with spaces) and
 * data_len bytes of data (0, 1, 2, ...). */
static int write_raw(const char *path, const char *json, size_t data_len) {
    size_t h = strlen(json), hp = (h + 7) / 8 * 8;
    size_t total = 8 + hp + data_len;
    uint8_t *b = malloc(total);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hp >> (8 * i));
    memcpy(b + 8, json, h);
    memset(b + 8 + h, ' ', hp - h);
    for (size_t i = 0; i < data_len; i++) b[8 + hp + i] = (uint8_t)i;
    int r = write_bytes(path, b, total);
    free(b);
    return r;
}

/* No "<name>.tmp.*" left in the temporary directory. */
static int no_tmp_files(void) {
    DIR *d = opendir(tmpdir);
    if (!d) return 0;
    struct dirent *e;
    int ok = 1;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) ok = 0;
    closedir(d);
    return ok;
}

/* ------------------------------------------------------------ round trip */

static float w_f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-7f, -1e30f};
static uint16_t w_bf16[4] = {0x3F80, 0xC000, 0x7FC0, 0x0001};
static int64_t w_i64 = -1234567890123LL;
static uint8_t w_u8[5] = {0, 1, 2, 254, 255};
static double w_f64[2] = {3.141592653589793, -0.5};
static int32_t w_i32[3] = {-7, 0, 2147483647};
static uint16_t w_f16[2] = {0x3C00, 0xFBFF};

static int make_entries(lunar_safetensors_entry *e) {
    memset(e, 0, 9 * sizeof *e);
    e[0] = (lunar_safetensors_entry){.name = "patch_embed.proj.weight", .dtype = LUNAR_F32, .ndim = 2,
                                     .shape = {2, 3}, .data = w_f32, .nbytes = sizeof w_f32};
    e[1] = (lunar_safetensors_entry){.name = "cls_token", .dtype = LUNAR_BF16, .ndim = 1,
                                     .shape = {4}, .data = w_bf16, .nbytes = sizeof w_bf16};
    e[2] = (lunar_safetensors_entry){.name = "step", .dtype = LUNAR_I64, .ndim = 0,
                                     .data = &w_i64, .nbytes = 8};
    e[3] = (lunar_safetensors_entry){.name = "bytes", .dtype = LUNAR_U8, .ndim = 1, .shape = {5},
                                     .data = w_u8, .nbytes = 5};
    e[4] = (lunar_safetensors_entry){.name = "double\"quote\\and\ttab", .dtype = LUNAR_F64, .ndim = 3,
                                     .shape = {1, 1, 2}, .data = w_f64, .nbytes = 16};
    e[5] = (lunar_safetensors_entry){.name = "empty", .dtype = LUNAR_F32, .ndim = 2, .shape = {0, 3},
                                     .data = NULL, .nbytes = 0};
    e[6] = (lunar_safetensors_entry){.name = "ints", .dtype = LUNAR_I32, .ndim = 1, .shape = {3},
                                     .data = w_i32, .nbytes = 12};
    e[7] = (lunar_safetensors_entry){.name = "blocks.0.norm1.weight\xc3\xa9", .dtype = LUNAR_F16,
                                     .ndim = 8, .shape = {1, 1, 1, 1, 1, 1, 1, 2}, .data = w_f16,
                                     .nbytes = 4};
    return 8;
}

static const char *meta_k[3] = {"format", "lunar.step", "note"};
static const char *meta_v[3] = {"pt", "42", "a \"quoted\"\nline \xe2\x9c\x93"};

static void check_same_entries(const lunar_safetensors *st, const lunar_safetensors_entry *e, int n,
                               int *ok) {
    *ok = 0;
    if (lunar_safetensors_count(st) != n) return;
    for (int i = 0; i < n; i++) {
        const lunar_safetensors_entry *r = lunar_safetensors_entry_at(st, i);
        if (!r || strcmp(r->name, e[i].name) != 0 || r->dtype != e[i].dtype || r->ndim != e[i].ndim ||
            r->nbytes != e[i].nbytes)
            return;
        for (int d = 0; d < r->ndim; d++)
            if (r->shape[d] != e[i].shape[d]) return;
        if (r->nbytes && memcmp(r->data, e[i].data, r->nbytes) != 0) return;
        if (lunar_safetensors_find(st, e[i].name) != r) return;
    }
    *ok = 1;
}

static void test_round_trip(void) {
    lunar_safetensors_entry e[9];
    int n = make_entries(e);
    const char *p = tmp_path(0, "model.safetensors");
    lunar_status s = lunar_safetensors_write(p, e, n, meta_k, meta_v, 3);
    CHECK_MSG(s == LUNAR_OK, "%s", lunar_last_error());
    CHECK(no_tmp_files());
    lunar_safetensors *st = lunar_safetensors_open(p);
    CHECK_MSG(st, "%s", lunar_last_error());
    int ok;
    check_same_entries(st, e, n, &ok);
    int meta_ok = lunar_safetensors_metadata_count(st) == 3 &&
                  strcmp(lunar_safetensors_metadata(st, "format"), "pt") == 0 &&
                  strcmp(lunar_safetensors_metadata(st, "lunar.step"), "42") == 0 &&
                  strcmp(lunar_safetensors_metadata(st, "note"), meta_v[2]) == 0 &&
                  lunar_safetensors_metadata(st, "absent") == NULL;
    const char *k0 = NULL, *v0 = NULL;
    meta_ok &= lunar_safetensors_metadata_at(st, 0, &k0, &v0) == 0 && strcmp(k0, "format") == 0 &&
               strcmp(v0, "pt") == 0 && lunar_safetensors_metadata_at(st, 3, &k0, &v0) == -1;
    int misc = lunar_safetensors_find(st, "nope") == NULL && lunar_safetensors_entry_at(st, n) == NULL &&
               strcmp(lunar_safetensors_path(st), p) == 0;
    lunar_safetensors_close(st);
    CHECK(ok);
    CHECK(meta_ok);
    CHECK(misc);
    /* the layout: header size a multiple of 8, padded with spaces, offsets
     * contiguous in the given order, the buffer right after the header */
    size_t len;
    uint8_t *b = read_all(p, &len);
    CHECK(b);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    size_t data = 0;
    for (int i = 0; i < n; i++) data += e[i].nbytes;
    int layout = h % 8 == 0 && 8 + h + data == len && b[8] == '{' &&
                 memcmp(b + 8, "{\"__metadata__\":{\"format\":\"pt\"", 30) == 0 &&
                 memcmp(b + 8 + h, w_f32, sizeof w_f32) == 0 &&
                 memcmp(b + 8 + h + sizeof w_f32, w_bf16, sizeof w_bf16) == 0 &&
                 memcmp(b + len - 4, w_f16, 4) == 0;
    int trailing_ok = 1;
    for (size_t i = 8 + h - 1; b[i] != '}'; i--) trailing_ok &= b[i] == ' ';
    /* serialize gives the same bytes */
    uint8_t *m = NULL;
    size_t mlen = 0;
    s = lunar_safetensors_serialize(e, n, meta_k, meta_v, 3, &m, &mlen);
    int same = s == LUNAR_OK && mlen == len && memcmp(m, b, len) == 0;
    /* and parse from memory reads it back */
    st = lunar_safetensors_parse(m, mlen, "mem");
    free(m);
    CHECK_MSG(st, "%s", lunar_last_error());
    check_same_entries(st, e, n, &ok);
    lunar_safetensors_close(st);
    free(b);
    CHECK(layout);
    CHECK(trailing_ok);
    CHECK(same);
    CHECK(ok);
    /* no tensors, no metadata: "{}" padded to 8 */
    CHECK(lunar_safetensors_write(tmp_path(1, "empty.safetensors"), NULL, 0, NULL, NULL, 0) == LUNAR_OK);
    st = lunar_safetensors_open(pathbuf[1]);
    CHECK_MSG(st && lunar_safetensors_count(st) == 0 && lunar_safetensors_metadata_count(st) == 0, "%s",
              lunar_last_error());
    lunar_safetensors_close(st);
}

/* A file written by another implementation (offsets out of header order,
 * a bigger header padding, fields in another order) reads. */
static void test_read_foreign_layout(void) {
    const char *p = tmp_path(0, "foreign.safetensors");
    CHECK(write_raw(p, "{\"b\":{\"shape\":[2],\"data_offsets\":[8,16],\"dtype\":\"F32\"},"
                       " \"a\" : {\"dtype\":\"I64\",\"data_offsets\":[0,8],\"shape\":[]},"
                       "\"__metadata__\":{}}          ", 16) == 0);
    lunar_safetensors *st = lunar_safetensors_open(p);
    CHECK_MSG(st, "%s", lunar_last_error());
    const lunar_safetensors_entry *a = lunar_safetensors_find(st, "a"), *b = lunar_safetensors_find(st, "b");
    int ok = lunar_safetensors_count(st) == 2 && a && b && a->ndim == 0 && a->nbytes == 8 &&
             b->shape[0] == 2 && ((const uint8_t *)b->data)[0] == 8 &&
             ((const uint8_t *)a->data)[7] == 7 && lunar_safetensors_entry_at(st, 0) == b;
    lunar_safetensors_close(st);
    CHECK(ok);
}

/* ------------------------------------------------------------ corruption */

typedef struct {
    const char *file;
    const char *json;      /* NULL: raw bytes below */
    size_t data_len;
    const char *want1, *want2;
} bad_case;

static void test_corrupt_files_refused(void) {
    const bad_case cases[] = {
        {"bad-json.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]", 4,
         "not valid JSON", NULL},
        {"bad-json2.safetensors", "{\"a\": tru}", 0, "not valid JSON", NULL},
        {"trailing.safetensors", "{} x", 0, "not valid JSON", "trailing"},
        {"not-object.safetensors", "[1,2]", 0, "not valid JSON", NULL},
        {"unknown-dtype.safetensors", "{\"w\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w'", "unknown dtype 'Q7'"},
        {"bool-dtype.safetensors", "{\"w\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "tensor 'w'", "unsupported dtype 'BOOL'"},
        {"past-end.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 12,
         "tensor 'w'", "past the end"},
        {"overlap.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
         "tensor 'b'", "overlap tensor 'a'"},
        {"hole.safetensors",
         "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12,
         "tensor 'b'", "hole of 4 bytes"},
        {"uncovered.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 10,
         "6 bytes not covered", "tensor 'a'"},
        {"not-from-zero.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
         "tensor 'a'", "hole of 1 bytes"},
        {"nbytes.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
         "tensor 'w'", "needs 24"},
        {"negative.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":[0,24]}}", 24,
         "tensor 'w'", "shape[1] is not an integer in [0, 2^53]"},
        {"fraction.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w'", "shape[0]"},
        {"overflow.safetensors",
         "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8,
         "tensor 'w'", "overflow"},
        {"overflow2.safetensors",
         "{\"w\":{\"dtype\":\"F64\",\"shape\":[1125899906842624,2048],\"data_offsets\":[0,8]}}", 8,
         "tensor 'w'", "overflows the byte count"},
        {"huge-dim.safetensors",
         "{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}", 8,
         "tensor 'w'", "shape[0] is not an integer in [0, 2^53]"},
        {"too-many-dims.safetensors",
         "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         "tensor 'w'", "9 dims"},
        {"reversed.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1,
         "tensor 'w'", "end before"},
        {"no-dtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'w'",
         "\"dtype\""},
        {"no-offsets.safetensors", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'w'",
         "data_offsets"},
        {"entry-not-object.safetensors", "{\"w\":3}", 0, "tensor 'w'", "not an object"},
        {"duplicate.safetensors",
         "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
         "tensor 'w'", "twice"},
        {"meta-number.safetensors", "{\"__metadata__\":{\"step\":3}}", 0, "__metadata__", "'step'"},
        {"meta-array.safetensors", "{\"__metadata__\":[\"x\"]}", 0, "__metadata__", "not an object"},
        {"bad-utf8.safetensors", "{\"\xff\":{}}", 0, "UTF-8", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = tmp_path(0, cases[i].file);
        CHECK(write_raw(p, cases[i].json, cases[i].data_len) == 0);
        lunar_safetensors *st = lunar_safetensors_open(p);
        const char *e = lunar_last_error();
        if (st) lunar_safetensors_close(st);
        CHECK_MSG(st == NULL, "%s accepted", cases[i].file);
        CHECK_MSG(lunar_last_status() == LUNAR_ERR_FORMAT, "%s: status %d", cases[i].file,
                  (int)lunar_last_status());
        CHECK_MSG(has(e, p) && has(e, cases[i].want1) && (!cases[i].want2 || has(e, cases[i].want2)),
                  "%s: message: %s", cases[i].file, e);
    }
}

static void test_corrupt_sizes_refused(void) {
    /* shorter than 8 bytes */
    const char *p = tmp_path(0, "tiny.safetensors");
    CHECK(write_bytes(p, "\x02\x00\x00", 3) == 0);
    lunar_safetensors *st = lunar_safetensors_open(p);
    const char *e = lunar_last_error();
    CHECK(st == NULL);
    CHECK_MSG(has(e, p) && has(e, "3 bytes") && has(e, "8-byte"), "message: %s", e);
    /* an empty file */
    p = tmp_path(0, "zero.safetensors");
    CHECK(write_bytes(p, "", 0) == 0);
    st = lunar_safetensors_open(p);
    e = lunar_last_error();
    CHECK(st == NULL);
    CHECK_MSG(has(e, p) && has(e, "0 bytes"), "message: %s", e);
    /* header size larger than the file */
    p = tmp_path(0, "big-header.safetensors");
    uint8_t b[24] = {0x00, 0x01, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK(write_bytes(p, b, sizeof b) == 0);
    st = lunar_safetensors_open(p);
    e = lunar_last_error();
    CHECK(st == NULL);
    CHECK_MSG(has(e, p) && has(e, "header size 256 is larger than the file") && has(e, "24 bytes"),
              "message: %s", e);
    /* a huge header size (a u64 near 2^64) */
    memset(b, 0xFF, 8);
    CHECK(write_bytes(p, b, sizeof b) == 0);
    st = lunar_safetensors_open(p);
    e = lunar_last_error();
    CHECK(st == NULL);
    CHECK_MSG(has(e, p) && has(e, "larger than the file"), "message: %s", e);
    /* a valid file truncated by a few bytes: the last tensor runs past the end */
    lunar_safetensors_entry ent[9];
    int n = make_entries(ent);
    uint8_t *m;
    size_t len;
    CHECK(lunar_safetensors_serialize(ent, n, meta_k, meta_v, 3, &m, &len) == LUNAR_OK);
    p = tmp_path(0, "truncated.safetensors");
    CHECK(write_bytes(p, m, len - 3) == 0);
    free(m);
    st = lunar_safetensors_open(p);
    e = lunar_last_error();
    CHECK(st == NULL);
    CHECK_MSG(has(e, p) && has(e, "past the end") && has(e, "blocks.0.norm1.weight"), "message: %s", e);
    /* a missing file */
    p = tmp_path(0, "missing.safetensors");
    st = lunar_safetensors_open(p);
    e = lunar_last_error();
    CHECK(st == NULL && lunar_last_status() == LUNAR_ERR_IO);
    CHECK_MSG(has(e, p) && has(e, "No such file or directory"), "message: %s", e);
    /* a directory */
    st = lunar_safetensors_open(tmpdir);
    e = lunar_last_error();
    CHECK(st == NULL);
    CHECK_MSG(has(e, tmpdir) && has(e, "directory"), "message: %s", e);
}

/* Every prefix and many random byte corruptions of a valid file: parsed or
 * refused, never a crash; a refusal always names the buffer. */
static void test_parse_memory_fuzz(void) {
    lunar_safetensors_entry ent[9];
    int n = make_entries(ent);
    uint8_t *m;
    size_t len;
    CHECK(lunar_safetensors_serialize(ent, n, meta_k, meta_v, 3, &m, &len) == LUNAR_OK);
    for (size_t k = 0; k < len; k++) {
        lunar_safetensors *st = lunar_safetensors_parse(m, k, "fuzz");
        CHECK_MSG(st == NULL, "prefix %zu of %zu accepted", k, len);
        CHECK_MSG(has(lunar_last_error(), "fuzz"), "prefix %zu: %s", k, lunar_last_error());
    }
    uint8_t *buf = malloc(len);
    int accepted = 0, refused = 0;
    for (uint32_t t = 0; t < 3000; t++) {
        memcpy(buf, m, len);
        int flips = 1 + (int)(lunar_rng_u32(3, 1, t) % 3);
        for (int f = 0; f < flips; f++) {
            uint32_t r = lunar_rng_u32(3, 2, (uint64_t)t * 4 + (uint64_t)f);
            buf[r % len] = (uint8_t)(r >> 24);
        }
        lunar_safetensors *st = lunar_safetensors_parse(buf, len, "fuzz");
        if (st) {
            accepted++;
            for (int i = 0; i < lunar_safetensors_count(st); i++) {
                const lunar_safetensors_entry *e = lunar_safetensors_entry_at(st, i);
                volatile uint8_t sink = 0;
                for (size_t j = 0; j < e->nbytes; j++) sink ^= ((const uint8_t *)e->data)[j];
                (void)sink;
            }
            lunar_safetensors_close(st);
        } else {
            refused++;
            CHECK(has(lunar_last_error(), "fuzz"));
        }
    }
    free(buf);
    free(m);
    CHECK(accepted > 0 && refused > 0);
    CHECK(lunar_safetensors_parse(NULL, 0, NULL) == NULL);
    CHECK(has(lunar_last_error(), "<memory>"));
}

/* ---------------------------------------------------------------- writer */

static void test_write_refuses_bad_entries(void) {
    lunar_safetensors_entry e[9];
    int n = make_entries(e);
    const char *p = tmp_path(0, "keep.safetensors");
    CHECK(lunar_safetensors_write(p, e, 2, NULL, NULL, 0) == LUNAR_OK);
    size_t len0;
    uint8_t *before = read_all(p, &len0);
    CHECK(before);
    struct { int field; const char *want; } bad[] = {
        {0, "nbytes 20"}, {1, "given twice"}, {2, "__metadata__"}, {3, "shape[1] = -2"},
        {4, "data is NULL"}, {5, "no name"}, {6, "unsupported dtype"}, {7, "ndim 9"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        make_entries(e);
        switch (bad[i].field) {
        case 0: e[0].nbytes = 20; break;
        case 1: e[3].name = "cls_token"; break;
        case 2: e[1].name = "__metadata__"; break;
        case 3: e[0].shape[1] = -2; break;
        case 4: e[3].data = NULL; break;
        case 5: e[2].name = NULL; break;
        case 6: e[2].dtype = LUNAR_NUM_DTYPES; break;
        case 7: e[3].ndim = 9; break;
        }
        lunar_status s = lunar_safetensors_write(p, e, n, NULL, NULL, 0);
        const char *msg = lunar_last_error();
        CHECK_MSG(s == LUNAR_ERR_ARG && has(msg, p) && has(msg, bad[i].want), "case %zu: %s", i, msg);
    }
    const char *dupk[2] = {"a", "a"}, *vals[2] = {"1", "2"};
    make_entries(e);
    CHECK(lunar_safetensors_write(p, e, n, dupk, vals, 2) == LUNAR_ERR_ARG);
    CHECK(has(lunar_last_error(), "metadata key 'a' given twice"));
    const char *nullv[1] = {NULL};
    CHECK(lunar_safetensors_write(p, e, n, dupk, nullv, 1) == LUNAR_ERR_ARG);
    /* the file at p is untouched and no temporary file is left */
    size_t len1;
    uint8_t *after = read_all(p, &len1);
    int same = after && len1 == len0 && memcmp(before, after, len0) == 0;
    free(before);
    free(after);
    CHECK(same);
    CHECK(no_tmp_files());
}

static void test_write_atomic_replace(void) {
    lunar_safetensors_entry e[9];
    make_entries(e);
    const char *p = tmp_path(0, "ckpt.safetensors");
    const char *k[1] = {"step"}, *v1[1] = {"1"}, *v2[1] = {"2"};
    CHECK(lunar_safetensors_write(p, e, 3, k, v1, 1) == LUNAR_OK);
    CHECK(lunar_safetensors_write(p, e, 1, k, v2, 1) == LUNAR_OK);   /* replaces */
    lunar_safetensors *st = lunar_safetensors_open(p);
    CHECK_MSG(st, "%s", lunar_last_error());
    int ok = lunar_safetensors_count(st) == 1 && strcmp(lunar_safetensors_metadata(st, "step"), "2") == 0;
    lunar_safetensors_close(st);
    CHECK(ok);
    CHECK(no_tmp_files());
    /* a directory that does not exist: an error naming the path, nothing created */
    char q[600];
    snprintf(q, sizeof q, "%s/no/such/dir/x.safetensors", tmpdir);
    lunar_status s = lunar_safetensors_write(q, e, 1, NULL, NULL, 0);
    const char *msg = lunar_last_error();
    CHECK(s == LUNAR_ERR_IO);
    CHECK_MSG(has(msg, q) && has(msg, "No such file or directory"), "message: %s", msg);
    /* the path is a directory: the rename fails, the temporary file is removed */
    char d[600];
    snprintf(d, sizeof d, "%s/adir", tmpdir);
    CHECK(mkdir(d, 0755) == 0);
    char inner[700];
    snprintf(inner, sizeof inner, "%s/file", d);
    CHECK(write_bytes(inner, "x", 1) == 0);
    s = lunar_safetensors_write(d, e, 1, NULL, NULL, 0);
    msg = lunar_last_error();
    CHECK(s == LUNAR_ERR_IO);
    CHECK_MSG(has(msg, d) && has(msg, "rename"), "message: %s", msg);
    CHECK(no_tmp_files());
}

/* core/io/fs.c: the atomic write of several parts, and the directory helpers
 * (expected values: the bytes written by hand, the names created here). */
static void test_fs_helpers(void) {
    char dir[600], deep[700], f[700];
    snprintf(dir, sizeof dir, "%s/fs", tmpdir);
    snprintf(deep, sizeof deep, "%s/a/b/c", dir);
    CHECK(lunar_mkdirs(deep) == LUNAR_OK);
    CHECK(lunar_mkdirs(deep) == LUNAR_OK);   /* exists: success, as mkdir -p */
    snprintf(f, sizeof f, "%s/x.txt", dir);
    lunar_io_part parts[3] = {{"ab", 2}, {NULL, 0}, {"cde", 3}};
    CHECK(lunar_atomic_write(f, parts, 3) == LUNAR_OK);
    size_t len = 0;
    uint8_t *b = read_all(f, &len);
    int same = b && len == 5 && memcmp(b, "abcde", 5) == 0;
    free(b);
    CHECK(same);
    lunar_path_kind kind;
    int64_t size = -1;
    CHECK(lunar_path_stat(f, &kind, &size) == LUNAR_OK && kind == LUNAR_PATH_FILE && size == 5);
    CHECK(lunar_path_stat(dir, &kind, NULL) == LUNAR_OK && kind == LUNAR_PATH_DIR);
    /* a file in the way of mkdir: ENOTDIR named with the path */
    CHECK(lunar_mkdirs(f) == LUNAR_ERR_IO);
    CHECK_MSG(has(lunar_last_error(), f) && has(lunar_last_error(), "Not a directory"), "message: %s",
              lunar_last_error());
    char **names;
    size_t n;
    CHECK(lunar_listdir(dir, &names, &n) == LUNAR_OK);
    int listed = n == 2 && strcmp(names[0], "a") == 0 && strcmp(names[1], "x.txt") == 0;
    lunar_free_names(names, n);
    CHECK(listed);   /* sorted, no . and .., no temporary file left */
    char g[700];
    snprintf(g, sizeof g, "%s/y.txt", dir);
    CHECK(lunar_rename(f, g) == LUNAR_OK);
    CHECK(lunar_path_stat(f, NULL, NULL) == LUNAR_ERR_IO && has(lunar_last_error(), f));
    CHECK(lunar_fsync_dir(dir) == LUNAR_OK);
    CHECK(lunar_remove_tree("/") == LUNAR_ERR_ARG);
    CHECK(lunar_remove_tree(dir) == LUNAR_OK);
    CHECK(lunar_listdir(dir, &names, &n) == LUNAR_ERR_IO && names == NULL && n == 0);
    CHECK_MSG(has(lunar_last_error(), dir) && has(lunar_last_error(), "No such file"), "message: %s",
              lunar_last_error());
    CHECK(no_tmp_files());
}

static void test_dtype_names(void) {
    CHECK(strcmp(lunar_dtype_st_name(LUNAR_BF16), "BF16") == 0);
    CHECK(lunar_safetensors_dtype_from_name("F64") == LUNAR_F64);
    CHECK(lunar_safetensors_dtype_from_name("f32") == -1);
    CHECK(lunar_safetensors_dtype_from_name("BOOL") == -1);
    CHECK(lunar_dtype_size(LUNAR_I64) == 8 && lunar_dtype_size(LUNAR_U8) == 1);
    CHECK(strcmp(lunar_dtype_st_name(LUNAR_NUM_DTYPES), "?") == 0);
    for (int d = 0; d < LUNAR_NUM_DTYPES; d++)   /* every name the writer writes reads back */
        CHECK(lunar_safetensors_dtype_from_name(lunar_dtype_st_name((lunar_dtype)d)) == d);
}

static void rm_rf_tmp(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/lunar_test_st_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_round_trip);
    RUN(test_read_foreign_layout);
    RUN(test_corrupt_files_refused);
    RUN(test_corrupt_sizes_refused);
    RUN(test_parse_memory_fuzz);
    RUN(test_write_refuses_bad_entries);
    RUN(test_write_atomic_replace);
    RUN(test_fs_helpers);
    RUN(test_dtype_names);
    rm_rf_tmp();
    return TEST_SUMMARY();
}
