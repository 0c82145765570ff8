/*
 * core/io/safetensors.c: safetensors read and write (io.h).
 *
 * Format: https://github.com/huggingface/safetensors (README "Format", and the
 * validation of safetensors/src/tensor.rs: header size bound, offsets sorted
 * and contiguous from 0 to the end of the buffer, nbytes = numel * dtype size).
 * JSON parsing by cJSON; the header is written by hand (integers printed
 * exactly, strings escaped) so large offsets never turn into exponents.
 */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lunar/io.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this file assumes a little-endian host"
#endif

struct lunar_safetensors {
    char *path;
    uint8_t *base;              /* the whole file */
    size_t len;
    int mapped;                 /* 1: munmap(base, len), 0: free(base) */
    int n;
    lunar_safetensors_entry *entries;
    char **names;               /* owned copies, entries[i].name == names[i] */
    int nmeta;
    char **meta_keys, **meta_values;
};

/* ------------------------------------------------------------------ dtypes */

/* The names of the format's dtypes that lunar supports, and their sizes, are
 * the dtype table of core/tensor.c (lunar_dtype_st_name, lunar_dtype_size). */

/* The format's other dtypes: known, but not supported by lunar. */
static const char *const other_dtypes[] = {"BOOL", "I8", "I16", "U16", "U32", "U64",
                                           "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3",
                                           "F6_E3M2", "F4", "C64"};

int lunar_safetensors_dtype_from_name(const char *name) {
    if (!name) return -1;
    for (int d = 0; d < LUNAR_NUM_DTYPES; d++)
        if (strcmp(lunar_dtype_st_name((lunar_dtype)d), name) == 0) return d;
    return -1;
}

static int is_other_dtype(const char *name) {
    for (size_t i = 0; i < sizeof other_dtypes / sizeof other_dtypes[0]; i++)
        if (strcmp(other_dtypes[i], name) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------------ helpers */

/* Index of the first byte that is not valid UTF-8 (or a NUL), len if none. */
static size_t utf8_invalid_at(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c == 0) return i;
        if (c < 0x80) { i++; continue; }
        size_t k;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { k = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { k = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { k = 3; cp = c & 0x07; }
        else return i;
        if (len - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += k + 1;
    }
    return len;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* A JSON number that is an exact integer in [0, 2^53]; -1 otherwise. */
static int64_t json_uint(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > 9007199254740992.0 || d != floor(d)) return -1;
    return (int64_t)d;
}

static void st_free(lunar_safetensors *st) {
    if (!st) return;
    if (st->base) {
        if (st->mapped) munmap(st->base, st->len);
        else free(st->base);
    }
    if (st->names)
        for (int i = 0; i < st->n; i++) free(st->names[i]);
    if (st->meta_keys)
        for (int i = 0; i < st->nmeta; i++) free(st->meta_keys[i]);
    if (st->meta_values)
        for (int i = 0; i < st->nmeta; i++) free(st->meta_values[i]);
    free(st->names);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->entries);
    free(st->path);
    free(st);
}

void lunar_safetensors_close(lunar_safetensors *st) { st_free(st); }

/* Sorting of entries by offsets (and names, for the duplicate check). */
typedef struct { int64_t begin, end; int i; } span;
static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->i - y->i;
}
static int str_ptr_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ------------------------------------------------------------------ reader */

/* One tensor entry of the header -> e (name set by the caller); offsets out. */
static lunar_status parse_entry(const char *path, const char *name, const cJSON *obj,
                                uint64_t buflen, lunar_safetensors_entry *e, int64_t *begin,
                                int64_t *end) {
    if (!cJSON_IsObject(obj))
        return lunar_error(LUNAR_ERR_FORMAT,
                           "safetensors %s: tensor '%s': entry is not an object with dtype, shape "
                           "and data_offsets", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(obj, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(obj, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(obj, "data_offsets");
    if (!cJSON_IsString(dt))
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': missing or non-string \"dtype\"",
                           path, name);
    int d = lunar_safetensors_dtype_from_name(dt->valuestring);
    if (d < 0)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': %s dtype '%s' (supported: F32, "
                           "BF16, F16, I32, I64, U8, F64)", path, name,
                           is_other_dtype(dt->valuestring) ? "unsupported" : "unknown", dt->valuestring);
    e->dtype = (lunar_dtype)d;
    if (!cJSON_IsArray(sh))
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': missing or non-array \"shape\"",
                           path, name);
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > LUNAR_MAX_DIMS)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': %d dims (at most %d supported)",
                           path, name, ndim, LUNAR_MAX_DIMS);
    e->ndim = ndim;
    /* span: the product of the nonzero sizes (saturated at 2^63 - 1). It bounds
     * a lunar tensor's strides (int64), so it must fit lunar_tensor_new's limit
     * of 2^59 elements even when a zero size makes the tensor empty
     * ([0, 2^40, 2^40]). */
    uint64_t numel = 1, span = 1;
    int k = 0;
    for (const cJSON *v = sh->child; v; v = v->next, k++) {
        int64_t x = json_uint(v);
        if (x < 0)
            return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': shape[%d] is not an "
                               "integer in [0, 2^53]", path, name, k);
        e->shape[k] = x;
        if (x != 0 && numel > (uint64_t)INT64_MAX / (uint64_t)x)
            return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': shape overflows the "
                               "element count", path, name);
        numel *= (uint64_t)x;
        if (x != 0)
            span = span > (uint64_t)INT64_MAX / (uint64_t)x ? (uint64_t)INT64_MAX : span * (uint64_t)x;
    }
    size_t esize = lunar_dtype_size(e->dtype);
    if (numel > (uint64_t)INT64_MAX / esize)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': shape overflows the byte count",
                           path, name);
    if (span > (uint64_t)INT64_MAX / 16)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': shape's nonzero sizes "
                           "multiply past 2^59 elements, more than a tensor holds (even an empty one)",
                           path, name);
    uint64_t nbytes = numel * esize;
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': \"data_offsets\" is not "
                           "[begin, end]", path, name);
    int64_t b = json_uint(of->child), en = json_uint(of->child->next);
    if (b < 0 || en < 0)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': data_offsets are not "
                           "integers in [0, 2^53]", path, name);
    if (b > en)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': data_offsets [%lld, %lld] "
                           "end before they begin", path, name, (long long)b, (long long)en);
    if ((uint64_t)en > buflen)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': data_offsets [%lld, %lld] "
                           "past the end of the %llu-byte data buffer (file truncated?)", path, name,
                           (long long)b, (long long)en, (unsigned long long)buflen);
    if ((uint64_t)(en - b) != nbytes)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s': data_offsets [%lld, %lld] "
                           "span %lld bytes but %s of %llu elements needs %llu", path, name,
                           (long long)b, (long long)en, (long long)(en - b), dt->valuestring,
                           (unsigned long long)numel, (unsigned long long)nbytes);
    e->nbytes = (size_t)nbytes;
    *begin = b;
    *end = en;
    return LUNAR_OK;
}

/* Validates st->base[st->len] and fills the entries. */
static lunar_status parse_file(lunar_safetensors *st) {
    const char *path = st->path;
    const uint8_t *buf = st->base;
    size_t len = st->len;
    if (len < 8)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: file is %zu bytes, shorter than the 8-byte "
                           "header size", path, len);
    uint64_t hsize = 0;
    for (int i = 7; i >= 0; i--) hsize = hsize << 8 | buf[i];
    if (hsize > len - 8)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header size %llu is larger than the file "
                           "(%zu bytes, %zu after the size; truncated or not safetensors)", path,
                           (unsigned long long)hsize, len, len - 8);
    if (hsize > LUNAR_SAFETENSORS_MAX_HEADER)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header size %llu exceeds the limit of %u "
                           "bytes", path, (unsigned long long)hsize, LUNAR_SAFETENSORS_MAX_HEADER);
    const char *hdr = (const char *)buf + 8;
    uint64_t buflen = len - 8 - hsize;
    if (hsize < 2 || hdr[0] != '{')
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header is not valid JSON (it does not "
                           "start with '{')", path);
    size_t bad = utf8_invalid_at((const uint8_t *)hdr, (size_t)hsize);
    if (bad < hsize)
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header is not valid UTF-8 text (byte %zu)",
                           path, bad);
    const char *endp = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hsize, &endp, 0);
    if (!root) {
        size_t at = (endp && endp >= hdr && endp <= hdr + hsize) ? (size_t)(endp - hdr) : 0;
        return lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header is not valid JSON (error near "
                           "byte %zu of %llu)", path, at, (unsigned long long)hsize);
    }
    lunar_status status = LUNAR_OK;
    span *spans = NULL;
    for (const char *p = endp; p && p < hdr + hsize; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header is not valid JSON (trailing "
                                 "characters at byte %zu)", path, (size_t)(p - hdr));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: header is JSON but not an object", path);
        goto done;
    }
    int count = 0, nmeta_obj = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (++nmeta_obj > 1) {
                status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: \"__metadata__\" appears twice",
                                     path);
                goto done;
            }
        } else {
            count++;
        }
    }
    st->entries = calloc((size_t)count + 1, sizeof *st->entries);
    st->names = calloc((size_t)count + 1, sizeof *st->names);
    spans = calloc((size_t)count + 1, sizeof *spans);
    if (!st->entries || !st->names || !spans) goto oom;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(c)) {
                status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: \"__metadata__\" is not an "
                                     "object of strings", path);
                goto done;
            }
            int m = cJSON_GetArraySize(c);
            st->meta_keys = calloc((size_t)m + 1, sizeof(char *));
            st->meta_values = calloc((size_t)m + 1, sizeof(char *));
            if (!st->meta_keys || !st->meta_values) goto oom;
            for (const cJSON *kv = c->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) {
                    status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: \"__metadata__\" value of "
                                         "'%s' is not a string", path, kv->string);
                    goto done;
                }
                for (int j = 0; j < st->nmeta; j++)
                    if (strcmp(st->meta_keys[j], kv->string) == 0) {
                        status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: metadata key '%s' "
                                             "appears twice", path, kv->string);
                        goto done;
                    }
                st->meta_keys[st->nmeta] = dup_str(kv->string);
                st->meta_values[st->nmeta] = dup_str(kv->valuestring);
                st->nmeta++;
                if (!st->meta_keys[st->nmeta - 1] || !st->meta_values[st->nmeta - 1]) goto oom;
            }
            continue;
        }
        int i = st->n;
        st->names[i] = dup_str(c->string);
        if (!st->names[i]) goto oom;
        st->n++;
        lunar_safetensors_entry *e = &st->entries[i];
        e->name = st->names[i];
        status = parse_entry(path, e->name, c, buflen, e, &spans[i].begin, &spans[i].end);
        if (status != LUNAR_OK) goto done;
        spans[i].i = i;
        e->data = buf + 8 + hsize + spans[i].begin;
    }
    /* duplicate names */
    if (st->n > 1) {
        char **sorted = malloc((size_t)st->n * sizeof(char *));
        if (!sorted) goto oom;
        memcpy(sorted, st->names, (size_t)st->n * sizeof(char *));
        qsort(sorted, (size_t)st->n, sizeof(char *), str_ptr_cmp);
        for (int i = 1; i < st->n; i++)
            if (strcmp(sorted[i - 1], sorted[i]) == 0) {
                status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s' appears twice", path,
                                     sorted[i]);
                free(sorted);
                goto done;
            }
        free(sorted);
    }
    /* offsets tile the buffer: sorted, from 0, each beginning where the last ended */
    qsort(spans, (size_t)st->n, sizeof(span), span_cmp);
    int64_t pos = 0;
    const char *prev = NULL;
    for (int k = 0; k < st->n; k++) {
        const char *nm = st->names[spans[k].i];
        if (spans[k].begin > pos && prev) {
            status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s' begins at byte %lld but "
                                 "tensor '%s' ends at %lld: a hole of %lld bytes in the data buffer",
                                 path, nm, (long long)spans[k].begin, prev, (long long)pos,
                                 (long long)(spans[k].begin - pos));
            goto done;
        }
        if (spans[k].begin > pos) {
            status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s' begins at byte %lld, the "
                                 "first tensor must begin at 0: a hole of %lld bytes in the data buffer",
                                 path, nm, (long long)spans[k].begin, (long long)spans[k].begin);
            goto done;
        }
        if (spans[k].begin < pos) {
            status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: tensor '%s' data_offsets [%lld, %lld] "
                                 "overlap tensor '%s', which ends at %lld", path, nm,
                                 (long long)spans[k].begin, (long long)spans[k].end,
                                 prev ? prev : "?", (long long)pos);
            goto done;
        }
        pos = spans[k].end;
        prev = nm;
    }
    if ((uint64_t)pos != buflen) {
        status = lunar_error(LUNAR_ERR_FORMAT, "safetensors %s: the tensors cover %lld of the %llu bytes "
                             "of the data buffer (%llu bytes not covered%s%s%s)", path, (long long)pos,
                             (unsigned long long)buflen, (unsigned long long)(buflen - (uint64_t)pos),
                             prev ? ", after tensor '" : "", prev ? prev : "", prev ? "'" : "");
        goto done;
    }
    goto done;
oom:
    status = lunar_error(LUNAR_ERR_OOM, "safetensors %s: out of memory while parsing the header", path);
done:
    free(spans);
    cJSON_Delete(root);
    return status;
}

static lunar_safetensors *st_new(const char *name) {
    lunar_safetensors *st = calloc(1, sizeof *st);
    if (st) st->path = dup_str(name);
    if (!st || !st->path) {
        free(st);
        lunar_error(LUNAR_ERR_OOM, "safetensors %s: out of memory", name);
        return NULL;
    }
    return st;
}

lunar_safetensors *lunar_safetensors_parse(const uint8_t *buf, size_t len, const char *name) {
    if (!name) name = "<memory>";
    if (!buf && len > 0) {
        lunar_error(LUNAR_ERR_ARG, "safetensors %s: NULL buffer", name);
        return NULL;
    }
    lunar_safetensors *st = st_new(name);
    if (!st) return NULL;
    st->base = malloc(len ? len : 1);
    if (!st->base) {
        lunar_error(LUNAR_ERR_OOM, "safetensors %s: out of memory for %zu bytes", name, len);
        st_free(st);
        return NULL;
    }
    if (len) memcpy(st->base, buf, len);
    st->len = len;
    if (parse_file(st) != LUNAR_OK) {
        st_free(st);
        return NULL;
    }
    return st;
}

lunar_safetensors *lunar_safetensors_open(const char *path) {
    if (!path) {
        lunar_error(LUNAR_ERR_ARG, "safetensors: path is NULL");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lunar_error(LUNAR_ERR_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        lunar_error(LUNAR_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        lunar_error(LUNAR_ERR_IO, "cannot read %s: Is a directory", path);
        close(fd);
        return NULL;
    }
    lunar_safetensors *st = st_new(path);
    if (!st) {
        close(fd);
        return NULL;
    }
    if (S_ISREG(sb.st_mode) && sb.st_size > 0 && (uint64_t)sb.st_size <= SIZE_MAX) {
        void *p = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p != MAP_FAILED) {
            st->base = p;
            st->len = (size_t)sb.st_size;
            st->mapped = 1;
        }
    }
    if (!st->mapped) { /* read it: a pipe, an empty file, or mmap refused */
        size_t cap = 1 << 16, n = 0;
        uint8_t *b = malloc(cap);
        for (;;) {
            if (!b) {
                lunar_error(LUNAR_ERR_OOM, "cannot read %s: out of memory", path);
                close(fd);
                st_free(st);
                return NULL;
            }
            if (n == cap) {
                uint8_t *q = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
                if (!q) free(b);
                b = q;
                cap *= 2;
                continue;
            }
            ssize_t r = read(fd, b + n, cap - n);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                lunar_error(LUNAR_ERR_IO, "cannot read %s: %s", path, strerror(errno));
                free(b);
                close(fd);
                st_free(st);
                return NULL;
            }
            if (r == 0) break;
            n += (size_t)r;
        }
        st->base = b;
        st->len = n;
    }
    close(fd);
    if (parse_file(st) != LUNAR_OK) {
        st_free(st);
        return NULL;
    }
    return st;
}

int lunar_safetensors_count(const lunar_safetensors *st) { return st ? st->n : 0; }

const lunar_safetensors_entry *lunar_safetensors_entry_at(const lunar_safetensors *st, int i) {
    return (st && i >= 0 && i < st->n) ? &st->entries[i] : NULL;
}

const lunar_safetensors_entry *lunar_safetensors_find(const lunar_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    for (int i = 0; i < st->n; i++)
        if (strcmp(st->names[i], name) == 0) return &st->entries[i];
    return NULL;
}

const char *lunar_safetensors_metadata(const lunar_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

int lunar_safetensors_metadata_count(const lunar_safetensors *st) { return st ? st->nmeta : 0; }

int lunar_safetensors_metadata_at(const lunar_safetensors *st, int i, const char **key,
                                  const char **value) {
    if (!st || i < 0 || i >= st->nmeta) return -1;
    if (key) *key = st->meta_keys[i];
    if (value) *value = st->meta_values[i];
    return 0;
}

const char *lunar_safetensors_path(const lunar_safetensors *st) { return st ? st->path : NULL; }

/* ------------------------------------------------------------------ writer */

typedef struct { char *s; size_t n, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = 1; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_int(sbuf *b, int64_t v) {
    char t[32];
    int k = snprintf(t, sizeof t, "%lld", (long long)v);
    sb_put(b, t, (size_t)k);
}
/* A JSON string literal (RFC 8259 escapes; UTF-8 passes through). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char t[8];
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        default:
            if (*p < 0x20) {
                snprintf(t, sizeof t, "\\u%04x", *p);
                sb_put(b, t, 6);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* Validates the arguments and builds the padded header; *data_len: buffer size. */
static lunar_status build_header(const char *path, const lunar_safetensors_entry *entries, int n,
                                 const char *const *meta_keys, const char *const *meta_values,
                                 int nmeta, sbuf *hb, uint64_t *data_len) {
    if (n < 0 || nmeta < 0 || (n > 0 && !entries) || (nmeta > 0 && (!meta_keys || !meta_values)))
        return lunar_error(LUNAR_ERR_ARG, "safetensors %s: bad arguments (n %d, nmeta %d, or NULL arrays)",
                           path, n, nmeta);
    for (int i = 0; i < nmeta; i++) {
        if (!meta_keys[i] || !meta_values[i])
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: metadata pair %d has a NULL key or value",
                               path, i);
        if (utf8_invalid_at((const uint8_t *)meta_keys[i], strlen(meta_keys[i])) < strlen(meta_keys[i]) ||
            utf8_invalid_at((const uint8_t *)meta_values[i], strlen(meta_values[i])) <
                strlen(meta_values[i]))
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: metadata '%s' is not valid UTF-8", path,
                               meta_keys[i]);
        for (int j = 0; j < i; j++)
            if (strcmp(meta_keys[i], meta_keys[j]) == 0)
                return lunar_error(LUNAR_ERR_ARG, "safetensors %s: metadata key '%s' given twice", path,
                                   meta_keys[i]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        const lunar_safetensors_entry *e = &entries[i];
        if (!e->name)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor %d has no name", path, i);
        if (strcmp(e->name, "__metadata__") == 0)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor %d is named \"__metadata__\", a "
                               "reserved key", path, i);
        if (utf8_invalid_at((const uint8_t *)e->name, strlen(e->name)) < strlen(e->name))
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor %d: name is not valid UTF-8", path, i);
        for (int j = 0; j < i; j++)
            if (strcmp(entries[j].name, e->name) == 0)
                return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s' given twice", path, e->name);
        size_t esize = lunar_dtype_size(e->dtype);
        if (!esize)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s': unsupported dtype %d", path,
                               e->name, (int)e->dtype);
        if (e->ndim < 0 || e->ndim > LUNAR_MAX_DIMS)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s': ndim %d (0..%d)", path,
                               e->name, e->ndim, LUNAR_MAX_DIMS);
        /* the reader's bounds: sizes in [0, 2^53], nonzero sizes' product <= 2^59 */
        uint64_t numel = 1, span = 1;
        int empty = 0;
        for (int d = 0; d < e->ndim; d++) {
            if (e->shape[d] < 0 || e->shape[d] > (int64_t)1 << 53)
                return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s': shape[%d] = %lld is not "
                                   "in [0, 2^53]", path, e->name, d, (long long)e->shape[d]);
            if (e->shape[d] == 0) {
                empty = 1;
                continue;
            }
            if (span > (uint64_t)INT64_MAX / 16 / (uint64_t)e->shape[d])
                return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s': shape overflows", path,
                                   e->name);
            span *= (uint64_t)e->shape[d];
        }
        numel = empty ? 0 : span;
        if (numel > (uint64_t)INT64_MAX / esize || numel * esize != (uint64_t)e->nbytes)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s': nbytes %zu but %llu elements "
                               "of %s need %llu", path, e->name, e->nbytes, (unsigned long long)numel,
                               lunar_dtype_st_name(e->dtype),
                               (unsigned long long)(numel * esize));
        if (!e->data && e->nbytes > 0)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: tensor '%s': data is NULL", path, e->name);
        if (off > (uint64_t)(1ull << 53) - e->nbytes)
            return lunar_error(LUNAR_ERR_ARG, "safetensors %s: data larger than 2^53 bytes", path);
        off += e->nbytes;
    }
    *data_len = off;
    /* the header */
    sb_str(hb, "{");
    int first = 1;
    if (nmeta > 0) {
        sb_str(hb, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) sb_str(hb, ",");
            sb_json_str(hb, meta_keys[i]);
            sb_str(hb, ":");
            sb_json_str(hb, meta_values[i]);
        }
        sb_str(hb, "}");
        first = 0;
    }
    off = 0;
    for (int i = 0; i < n; i++) {
        const lunar_safetensors_entry *e = &entries[i];
        if (!first) sb_str(hb, ",");
        first = 0;
        sb_json_str(hb, e->name);
        sb_str(hb, ":{\"dtype\":\"");
        sb_str(hb, lunar_dtype_st_name(e->dtype));
        sb_str(hb, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_str(hb, ",");
            sb_int(hb, e->shape[d]);
        }
        sb_str(hb, "],\"data_offsets\":[");
        sb_int(hb, (int64_t)off);
        sb_str(hb, ",");
        off += e->nbytes;
        sb_int(hb, (int64_t)off);
        sb_str(hb, "]}");
    }
    sb_str(hb, "}");
    while (!hb->oom && hb->n % 8 != 0) sb_str(hb, " ");
    if (hb->oom) return lunar_error(LUNAR_ERR_OOM, "safetensors %s: out of memory for the header", path);
    if (hb->n > LUNAR_SAFETENSORS_MAX_HEADER)
        return lunar_error(LUNAR_ERR_ARG, "safetensors %s: header of %zu bytes exceeds the limit of %u",
                           path, hb->n, LUNAR_SAFETENSORS_MAX_HEADER);
    return LUNAR_OK;
}

static void le64(uint8_t out[8], uint64_t v) {
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(v >> (8 * i));
}

lunar_status lunar_safetensors_serialize(const lunar_safetensors_entry *entries, int n,
                                         const char *const *meta_keys,
                                         const char *const *meta_values, int nmeta, uint8_t **out,
                                         size_t *len) {
    if (!out || !len) return lunar_error(LUNAR_ERR_ARG, "safetensors <memory>: NULL output");
    *out = NULL;
    *len = 0;
    sbuf hb = {0};
    uint64_t dlen = 0;
    lunar_status s = build_header("<memory>", entries, n, meta_keys, meta_values, nmeta, &hb, &dlen);
    if (s != LUNAR_OK) {
        free(hb.s);
        return s;
    }
    if (dlen > SIZE_MAX - 8 - hb.n) {
        free(hb.s);
        return lunar_error(LUNAR_ERR_OOM, "safetensors <memory>: too large for memory");
    }
    size_t total = 8 + hb.n + (size_t)dlen;
    uint8_t *b = malloc(total);
    if (!b) {
        free(hb.s);
        return lunar_error(LUNAR_ERR_OOM, "safetensors <memory>: out of memory for %zu bytes", total);
    }
    le64(b, hb.n);
    memcpy(b + 8, hb.s, hb.n);
    size_t at = 8 + hb.n;
    for (int i = 0; i < n; i++) {
        if (entries[i].nbytes) memcpy(b + at, entries[i].data, entries[i].nbytes);
        at += entries[i].nbytes;
    }
    free(hb.s);
    *out = b;
    *len = total;
    return LUNAR_OK;
}

lunar_status lunar_safetensors_write(const char *path, const lunar_safetensors_entry *entries, int n,
                                     const char *const *meta_keys, const char *const *meta_values,
                                     int nmeta) {
    if (!path || !*path) return lunar_error(LUNAR_ERR_ARG, "safetensors: empty or NULL path");
    sbuf hb = {0};
    uint64_t dlen = 0;
    lunar_status s = build_header(path, entries, n, meta_keys, meta_values, nmeta, &hb, &dlen);
    if (s != LUNAR_OK) {
        free(hb.s);
        return s;
    }
    uint8_t sz[8];
    le64(sz, hb.n);
    /* the size, the header, then every tensor's bytes: one atomic write */
    lunar_io_part *parts = malloc(((size_t)(n > 0 ? n : 0) + 2) * sizeof *parts);
    if (!parts) {
        free(hb.s);
        return lunar_error(LUNAR_ERR_OOM, "safetensors %s: out of memory", path);
    }
    parts[0] = (lunar_io_part){sz, 8};
    parts[1] = (lunar_io_part){hb.s, hb.n};
    for (int i = 0; i < n; i++) parts[i + 2] = (lunar_io_part){entries[i].data, entries[i].nbytes};
    s = lunar_atomic_write(path, parts, n + 2);
    free(parts);
    free(hb.s);
    return s;
}

lunar_tensor *lunar_safetensors_read_block(const lunar_safetensors *st, const char *name, const int64_t *start,
                                           const int64_t *len) {
    const char *path = lunar_safetensors_path(st);
    const lunar_safetensors_entry *e = lunar_safetensors_find(st, name);
    if (!e) {
        lunar_error(LUNAR_ERR_ARG, "%s: no tensor '%s'", path, name);
        return NULL;
    }
    int nd = e->ndim;
    int64_t s0[LUNAR_MAX_DIMS], n0[LUNAR_MAX_DIMS];   /* the block, checked */
    for (int d = 0; d < nd; d++) {
        s0[d] = start ? start[d] : 0;
        n0[d] = len ? len[d] : e->shape[d];
        if (s0[d] < 0 || n0[d] < 0 || s0[d] > e->shape[d] || n0[d] > e->shape[d] - s0[d]) {
            lunar_error(LUNAR_ERR_ARG, "%s: tensor '%s': range %d is not within dim %d of size %lld", path, name,
                        d + 1, d + 1, (long long)e->shape[d]);
            return NULL;
        }
    }
    lunar_tensor *t = lunar_tensor_new(e->dtype, nd, n0, LUNAR_CPU);
    if (!t || lunar_tensor_numel(t) == 0) return t;
    /* runs of the innermost dim, one for every index of the outer dims */
    size_t es = lunar_dtype_size(e->dtype);
    int64_t stride[LUNAR_MAX_DIMS], acc = 1;   /* elements, of the stored tensor */
    for (int d = nd - 1; d >= 0; d--) { stride[d] = acc; acc *= e->shape[d]; }
    size_t run = (size_t)(nd ? n0[nd - 1] : 1) * es;
    int64_t runs = nd ? lunar_tensor_numel(t) / n0[nd - 1] : 1, idx[LUNAR_MAX_DIMS] = {0};
    const uint8_t *src = e->data;
    uint8_t *dst = lunar_tensor_data(t);
    for (int64_t r = 0; r < runs; r++) {
        int64_t off = 0;
        for (int d = 0; d < nd; d++) off += (s0[d] + (d == nd - 1 ? 0 : idx[d])) * stride[d];
        memcpy(dst + (size_t)r * run, src + (size_t)off * es, run);
        for (int d = nd - 2; d >= 0; d--) {   /* the next outer index */
            if (++idx[d] < n0[d]) break;
            idx[d] = 0;
        }
    }
    return t;
}
