/*
 * core/data/image_zip.c: Galvatron's zipped ImageNet (data.h,
 * lunar_dataset_image_zip), read from the archive without unpacking it,
 * through Debian's libzip.
 *
 * Layout (Galvatron and vision-longformer's ZipData, on Swin's zipped
 * ImageNet): train.zip + train_map.txt, val.zip + val_map.txt. A map line is
 * "<archive>@/<member path><TAB><label>" (e.g. "train.zip@/n01440764/
 * n01440764_10026.JPEG\t0"); blank lines are skipped. The samples are the
 * archive's members in the archive's order (its central directory) that the
 * map names, with an image extension (.jpg .jpeg .png, case-insensitive), not
 * a directory and not empty, as ZipData builds its list; the label is the
 * map's. Reading a member holds a mutex around libzip (a zip_t is not shared
 * by threads); decoding runs outside it.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "image.h"
#include "internal.h"

typedef struct {
    zip_t *z;
    pthread_mutex_t mu;
    uint64_t *member;       /* [n] archive index of sample i */
    char *path;
} zsrc;

static void zsrc_free(void *p) {
    zsrc *s = p;
    if (!s) return;
    if (s->z) zip_discard(s->z);
    pthread_mutex_destroy(&s->mu);
    free(s->member);
    free(s->path);
    free(s);
}

static lunar_status zsrc_read(void *ctx, int64_t idx, const char *name, uint8_t **buf, size_t *len) {
    zsrc *s = ctx;
    *buf = NULL;
    *len = 0;
    pthread_mutex_lock(&s->mu);
    lunar_status st = LUNAR_OK;
    zip_stat_t zs;
    zip_file_t *zf = NULL;
    uint8_t *b = NULL;
    if (zip_stat_index(s->z, s->member[idx], 0, &zs) != 0 || !(zs.valid & ZIP_STAT_SIZE)) {
        st = lunar_error(LUNAR_ERR_FORMAT, "image %s: cannot stat the member: %s", name, zip_strerror(s->z));
    } else if (!(zf = zip_fopen_index(s->z, s->member[idx], 0))) {
        st = lunar_error(LUNAR_ERR_FORMAT, "image %s: cannot open the member: %s", name, zip_strerror(s->z));
    } else if (!(b = malloc(zs.size ? zs.size : 1))) {
        st = lunar_error(LUNAR_ERR_OOM, "image %s: out of memory (%llu bytes)", name, (unsigned long long)zs.size);
    } else {
        zip_int64_t got = zip_fread(zf, b, zs.size);
        if (got < 0 || (zip_uint64_t)got != zs.size)
            st = lunar_error(LUNAR_ERR_FORMAT, "image %s: cannot read the member (%lld of %llu bytes): %s", name,
                             (long long)got, (unsigned long long)zs.size, zip_file_strerror(zf));
    }
    if (zf) zip_fclose(zf);
    pthread_mutex_unlock(&s->mu);
    if (st) {
        free(b);
        return st;
    }
    *buf = b;
    *len = zs.size;
    return LUNAR_OK;
}

typedef struct {
    char *member;   /* the path inside the archive (after "@/") */
    int32_t label;
} map_line;

static int map_cmp(const void *a, const void *b) {
    return strcmp(((const map_line *)a)->member, ((const map_line *)b)->member);
}

static int image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    char e[8] = {0};
    for (int i = 0; i < 7 && dot[i]; i++) e[i] = (char)tolower((unsigned char)dot[i]);
    return !strcmp(e, ".jpg") || !strcmp(e, ".jpeg") || !strcmp(e, ".png");
}

/* Parses the map file into *lines (sorted by member); errors name the file and line. */
static lunar_status read_map(const char *map_path, map_line **lines, size_t *count, int *num_classes) {
    uint8_t *buf;
    size_t len;
    *lines = NULL;
    *count = 0;
    *num_classes = 0;
    lunar_status st = lunar_data_read_file(map_path, &buf, &len);
    if (st) return st;
    size_t cap = 0, n = 0, lineno = 0;
    map_line *m = NULL;
    char *text = malloc(len + 1);
    if (!text) { free(buf); return lunar_error(LUNAR_ERR_OOM, "map %s: out of memory", map_path); }
    if (len) memcpy(text, buf, len);
    text[len] = 0;
    free(buf);
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        lineno++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\r' || line[l - 1] == ' ' || line[l - 1] == '\t')) line[--l] = 0;
        while (*line == ' ' || *line == '\t') line++;
        if (!*line) continue;
        char *tab = strchr(line, '\t');
        char *at = strchr(line, '@');
        char *end = NULL;
        long label = tab ? strtol(tab + 1, &end, 10) : -1;
        if (!tab || !at || at > tab || !end || end == tab + 1 || *end || label < 0 || label > INT32_MAX - 1) {
            st = lunar_error(LUNAR_ERR_FORMAT,
                             "map %s line %zu: expected '<archive>@/<member path><TAB><label >= 0>', got '%.120s'",
                             map_path, lineno, line);
            break;
        }
        *tab = 0;
        char *member = at + 1;
        while (*member == '/') member++;
        if (!*member) {
            st = lunar_error(LUNAR_ERR_FORMAT, "map %s line %zu: no member path after '@'", map_path, lineno);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            map_line *g = realloc(m, cap * sizeof *m);
            if (!g) { st = lunar_error(LUNAR_ERR_OOM, "map %s: out of memory", map_path); break; }
            m = g;
        }
        if (!(m[n].member = strdup(member))) { st = lunar_error(LUNAR_ERR_OOM, "map %s: out of memory", map_path); break; }
        m[n].label = (int32_t)label;
        if (label + 1 > *num_classes) *num_classes = (int)label + 1;
        n++;
    }
    free(text);
    if (!st && n == 0) st = lunar_error(LUNAR_ERR_FORMAT, "map %s: no entries", map_path);
    if (!st) {
        qsort(m, n, sizeof *m, map_cmp);
        for (size_t i = 1; i < n; i++)
            if (!strcmp(m[i].member, m[i - 1].member) && m[i].label != m[i - 1].label) {
                st = lunar_error(LUNAR_ERR_FORMAT, "map %s: %s has labels %d and %d", map_path, m[i].member,
                                 m[i - 1].label, m[i].label);
                break;
            }
    }
    if (st) {
        for (size_t i = 0; i < n; i++) free(m[i].member);
        free(m);
        return st;
    }
    *lines = m;
    *count = n;
    return LUNAR_OK;
}

lunar_dataset *lunar_dataset_image_zip(const char *zip_path, const char *map_path, const lunar_image_opts *opts) {
    if (!zip_path || !map_path || !opts) {
        lunar_error(LUNAR_ERR_ARG, "image zip: NULL path or options");
        return NULL;
    }
    map_line *map;
    size_t nmap;
    int num_classes;
    if (read_map(map_path, &map, &nmap, &num_classes)) return NULL;
    int err = 0;
    zip_int64_t ne = 0;
    zip_t *z = zip_open(zip_path, ZIP_RDONLY, &err);
    lunar_dataset *ds = NULL;
    zsrc *s = NULL;
    char **names = NULL;
    int32_t *labels = NULL;
    if (!z) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        lunar_error(err == ZIP_ER_NOENT || err == ZIP_ER_OPEN || err == ZIP_ER_READ ? LUNAR_ERR_IO : LUNAR_ERR_FORMAT,
                    "cannot open the zip archive %s: %s", zip_path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        goto done;
    }
    ne = zip_get_num_entries(z, 0);
    s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->mu, NULL);
    names = calloc(ne > 0 ? (size_t)ne : 1, sizeof *names);
    labels = calloc(ne > 0 ? (size_t)ne : 1, sizeof *labels);
    if (!s || !names || !labels || !(s->member = calloc(ne > 0 ? (size_t)ne : 1, sizeof *s->member)) ||
        !(s->path = strdup(zip_path))) {
        lunar_error(LUNAR_ERR_OOM, "image zip %s: out of memory", zip_path);
        goto done;
    }
    s->z = z;
    z = NULL;
    int64_t n = 0;
    for (zip_int64_t i = 0; i < ne; i++) {
        zip_stat_t zs;
        if (zip_stat_index(s->z, (zip_uint64_t)i, 0, &zs) != 0 || !(zs.valid & ZIP_STAT_NAME)) continue;
        const char *name = zs.name;
        size_t nl = strlen(name);
        if (!nl || name[nl - 1] == '/' || name[0] == '.' || ((zs.valid & ZIP_STAT_SIZE) && zs.size == 0) ||
            !image_ext(name))
            continue;
        map_line key = {(char *)name, 0};
        map_line *hit = bsearch(&key, map, nmap, sizeof *map, map_cmp);
        if (!hit) continue;
        size_t need = strlen(zip_path) + nl + 3;
        if (!(names[n] = malloc(need))) {
            lunar_error(LUNAR_ERR_OOM, "image zip %s: out of memory", zip_path);
            goto done;
        }
        snprintf(names[n], need, "%s@/%s", zip_path, name);
        labels[n] = hit->label;
        s->member[n] = (uint64_t)i;
        n++;
    }
    if (n == 0) {
        lunar_error(LUNAR_ERR_FORMAT, "image zip %s: no image member is named in %s (%zu map entries)", zip_path,
                    map_path, nmap);
        goto done;
    }
    lunar_image_source src = {zsrc_read, s, zsrc_free};
    ds = lunar_image_dataset(names, labels, n, NULL, num_classes, opts, src);
    names = NULL;   /* taken over, also on error */
    labels = NULL;
    s = NULL;
done:
    if (z) zip_discard(z);
    if (names)
        for (zip_int64_t i = 0; i < ne; i++) free(names[i]);
    free(names);
    free(labels);
    zsrc_free(s);
    for (size_t i = 0; i < nmap; i++) free(map[i].member);
    free(map);
    return ds;
}
