/*
 * core/data/image_folder.c: torchvision's ImageFolder layout read lazily, and
 * the train/eval transforms of timm's ViT recipes (data.h,
 * lunar_dataset_image_folder). Decoding is image_decode.c's.
 *
 * Sources followed: torchvision 0.14 datasets/folder.py (find_classes,
 * make_dataset, IMG_EXTENSIONS), transforms.RandomResizedCrop.get_params,
 * transforms.functional resize / center_crop, and PIL's Resample.c
 * (precompute_coeffs: the bilinear filter's support scaled by the downscale
 * factor) for the resampling.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "image.h"
#include "internal.h"
#include "lunar/rng.h"

#define AUG_STREAM_TAG (0x494D47ull << 40) /* "IMG" */
#define FLIP_WORD 40
#define WORDS_PER_EPOCH 64   /* word w of epoch e: index e * 64 + w */

typedef struct {
    char **files;              /* [n] full paths (or a source's names) */
    int64_t n;
    char **classes;            /* [num_classes] names, or NULL */
    int num_classes;
    lunar_image_source src;    /* src.read NULL: files are read by path */
    lunar_image_opts o;
    atomic_uchar *warned;      /* [n] a warning was printed for file i */
    atomic_llong bad;          /* bad images met */
} folder;

void lunar_image_opts_default(lunar_image_opts *o, int img_size, int train) {
    o->img_size = img_size;
    o->train = train != 0;
    o->scale_min = 0.08;
    o->scale_max = 1.0;
    o->ratio_min = 3.0 / 4.0;
    o->ratio_max = 4.0 / 3.0;
    o->hflip = 0.5;
    o->crop_pct = 0.875;
    o->on_bad_image = 0;
}

/* ------------------------------------------------------------------ scan */

typedef struct {
    char *dir, *name;   /* dir relative to the class directory ("" at its top) */
} entry;

typedef struct {
    entry *e;
    size_t n, cap;
} entries;

static int has_image_ext(const char *name) {
    static const char *ext[] = {".jpg", ".jpeg", ".png"};
    size_t n = strlen(name);
    for (size_t k = 0; k < sizeof ext / sizeof *ext; k++) {
        size_t m = strlen(ext[k]);
        if (n < m) continue;
        int same = 1;
        for (size_t i = 0; i < m; i++)
            if (tolower((unsigned char)name[n - m + i]) != ext[k][i]) same = 0;
        if (same) return 1;
    }
    return 0;
}

static char *join2(const char *a, const char *b) {
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 2);
    if (!s) return NULL;
    memcpy(s, a, na);
    size_t at = na;
    if (na && a[na - 1] != '/') s[at++] = '/';
    memcpy(s + at, b, nb + 1);
    return s;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);   /* follows symlinks, as os.walk(followlinks) */
}

/* Adds the image files under root/rel (recursively) to *out; depth guards symlink loops. */
static lunar_status walk(const char *root, const char *rel, entries *out, int depth) {
    if (depth > 64) return lunar_error(LUNAR_ERR_IO, "image folder: %s/%s: directories nested deeper than 64 (a symlink loop?)", root, rel);
    char *path = *rel ? join2(root, rel) : strdup(root);
    if (!path) return lunar_error(LUNAR_ERR_OOM, "image folder: out of memory");
    DIR *d = opendir(path);
    if (!d) {
        lunar_status s = lunar_error(LUNAR_ERR_IO, "image folder: cannot open directory %s: %s", path, strerror(errno));
        free(path);
        return s;
    }
    struct dirent *de;
    lunar_status st = LUNAR_OK;
    while (st == LUNAR_OK && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *full = join2(path, de->d_name);
        if (!full) { st = lunar_error(LUNAR_ERR_OOM, "image folder: out of memory"); break; }
        if (is_dir(full)) {
            char *sub = *rel ? join2(rel, de->d_name) : strdup(de->d_name);
            st = sub ? walk(root, sub, out, depth + 1) : lunar_error(LUNAR_ERR_OOM, "image folder: out of memory");
            free(sub);
        } else if (has_image_ext(de->d_name)) {
            if (out->n == out->cap) {
                size_t cap = out->cap ? out->cap * 2 : 256;
                entry *e = realloc(out->e, cap * sizeof *e);
                if (!e) { free(full); st = lunar_error(LUNAR_ERR_OOM, "image folder: out of memory"); break; }
                out->e = e;
                out->cap = cap;
            }
            out->e[out->n].dir = strdup(rel);
            out->e[out->n].name = strdup(de->d_name);
            out->n++;
            if (!out->e[out->n - 1].dir || !out->e[out->n - 1].name)
                st = lunar_error(LUNAR_ERR_OOM, "image folder: out of memory");
        }
        free(full);
    }
    closedir(d);
    free(path);
    return st;
}

/* sorted(os.walk(...)) then sorted(fnames): by directory, then name */
static int entry_cmp(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = strcmp(x->dir, y->dir);
    return c ? c : strcmp(x->name, y->name);
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Frees what f holds (not f). */
static void folder_clear(folder *f) {
    if (f->files)
        for (int64_t i = 0; i < f->n; i++) free(f->files[i]);
    free(f->files);
    if (f->classes)
        for (int k = 0; k < f->num_classes; k++) free(f->classes[k]);
    free(f->classes);
    if (f->src.free_ctx) f->src.free_ctx(f->src.ctx);
    free(f->warned);
}

static void folder_free(void *p) {
    if (!p) return;
    folder_clear(p);
    free(p);
}

static lunar_status folder_sample(const lunar_dataset *ds, int64_t idx, int64_t epoch, uint64_t seed,
                                  uint8_t *out, int32_t *label);

static void set_shape(lunar_dataset *ds, int64_t n, int num_classes, int img_size) {
    ds->dtype = LUNAR_U8;
    ds->n = n;
    ds->channels = 3;
    ds->ndim_spatial = 2;
    ds->size[0] = ds->size[1] = img_size;
    ds->num_classes = num_classes;
    ds->sample_numel = 3 * (int64_t)img_size * img_size;
    ds->sample = folder_sample;
}

static lunar_status check_opts(const lunar_image_opts *o) {
    if (o->img_size < 1)
        return lunar_error(LUNAR_ERR_ARG, "image folder: img_size %d (must be >= 1)", o->img_size);
    if (!(o->scale_min > 0 && o->scale_min <= o->scale_max && o->scale_max <= 1))
        return lunar_error(LUNAR_ERR_ARG, "image folder: scale (%g, %g) (need 0 < min <= max <= 1)", o->scale_min,
                           o->scale_max);
    if (!(o->ratio_min > 0 && o->ratio_min <= o->ratio_max && isfinite(o->ratio_max)))
        return lunar_error(LUNAR_ERR_ARG, "image folder: ratio (%g, %g) (need 0 < min <= max)", o->ratio_min,
                           o->ratio_max);
    if (!(o->hflip >= 0 && o->hflip <= 1))
        return lunar_error(LUNAR_ERR_ARG, "image folder: hflip %g (a probability in [0, 1])", o->hflip);
    if (!(o->crop_pct > 0 && o->crop_pct <= 1))
        return lunar_error(LUNAR_ERR_ARG, "image folder: crop_pct %g (need 0 < crop_pct <= 1)", o->crop_pct);
    return LUNAR_OK;
}

lunar_dataset *lunar_dataset_image_folder(const char *dir, const lunar_image_opts *opts) {
    if (!dir || !opts) {
        lunar_error(LUNAR_ERR_ARG, "image folder: NULL directory or options");
        return NULL;
    }
    if (check_opts(opts) != LUNAR_OK) return NULL;
    DIR *d = opendir(dir);
    if (!d) {
        lunar_error(LUNAR_ERR_IO, "image folder: cannot open directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    lunar_dataset *ds = calloc(1, sizeof *ds);
    folder *f = calloc(1, sizeof *f);
    size_t ncls_cap = 0;
    if (!ds || !f) goto oom;
    ds->impl = f;
    ds->free_impl = folder_free;
    f->o = *opts;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        char *full = join2(dir, de->d_name);
        if (!full) goto oom;
        int isd = is_dir(full);
        free(full);
        if (!isd) continue;
        if ((size_t)f->num_classes == ncls_cap) {
            ncls_cap = ncls_cap ? ncls_cap * 2 : 64;
            char **c = realloc(f->classes, ncls_cap * sizeof *c);
            if (!c) goto oom;
            f->classes = c;
        }
        if (!(f->classes[f->num_classes] = strdup(de->d_name))) goto oom;
        f->num_classes++;
    }
    closedir(d);
    d = NULL;
    if (f->num_classes == 0) {
        lunar_error(LUNAR_ERR_FORMAT, "image folder: %s has no class directories (expected %s/<class>/<image>.jpg)",
                    dir, dir);
        goto fail;
    }
    qsort(f->classes, (size_t)f->num_classes, sizeof *f->classes, str_cmp);
    int32_t *labels = NULL;
    char **files = NULL;
    size_t n = 0;
    for (int k = 0; k < f->num_classes; k++) {
        char *croot = join2(dir, f->classes[k]);
        if (!croot) goto oom;
        entries e = {0};
        lunar_status st = walk(croot, "", &e, 0);
        if (st == LUNAR_OK && e.n == 0)
            st = lunar_error(LUNAR_ERR_FORMAT,
                             "image folder: class directory %s has no image file (.jpg, .jpeg or .png)", croot);
        if (st == LUNAR_OK) {
            qsort(e.e, e.n, sizeof *e.e, entry_cmp);
            char **nf = realloc(files, (n + e.n + 1) * sizeof *nf);
            int32_t *nl = realloc(labels, (n + e.n) * sizeof *nl);
            if (nf) files = nf;
            if (nl) labels = nl;
            if (!nf || !nl) st = lunar_error(LUNAR_ERR_OOM, "image folder: out of memory");
            for (size_t i = 0; st == LUNAR_OK && i < e.n; i++) {
                char *rel = *e.e[i].dir ? join2(e.e[i].dir, e.e[i].name) : strdup(e.e[i].name);
                files[n] = rel ? join2(croot, rel) : NULL;
                free(rel);
                files[n + 1] = NULL;
                if (!files[n]) { st = lunar_error(LUNAR_ERR_OOM, "image folder: out of memory"); break; }
                labels[n] = k;
                n++;
                f->n = (int64_t)n;
            }
        }
        for (size_t i = 0; i < e.n; i++) { free(e.e[i].dir); free(e.e[i].name); }
        free(e.e);
        free(croot);
        f->files = files;
        ds->labels = labels;
        if (st != LUNAR_OK) goto fail;
    }
    f->warned = calloc(n, sizeof *f->warned);
    if (!f->warned) goto oom;
    set_shape(ds, (int64_t)n, f->num_classes, opts->img_size);
    return ds;
oom:
    lunar_error(LUNAR_ERR_OOM, "image folder %s: out of memory", dir);
fail:
    if (d) closedir(d);
    lunar_dataset_free(ds);
    if (!ds) folder_free(f);
    return NULL;
}

lunar_dataset *lunar_image_dataset(char **names, int32_t *labels, int64_t n, char **classes, int num_classes,
                                   const lunar_image_opts *o, lunar_image_source src) {
    lunar_dataset *ds = calloc(1, sizeof *ds);
    folder *f = calloc(1, sizeof *f);
    if (f) {
        f->files = names;
        f->n = n;
        f->classes = classes;
        f->num_classes = num_classes;
        f->src = src;
        f->o = *o;
    }
    if (!ds || !f) {
        folder fv = {.files = names, .n = n, .classes = classes, .num_classes = num_classes, .src = src};
        folder_clear(&fv);
        free(labels);
        free(ds);
        free(f);
        lunar_error(LUNAR_ERR_OOM, "image dataset: out of memory");
        return NULL;
    }
    ds->impl = f;
    ds->free_impl = folder_free;
    ds->labels = labels;
    if (check_opts(o) != LUNAR_OK) {
        lunar_dataset_free(ds);
        return NULL;
    }
    f->warned = calloc(n > 0 ? (size_t)n : 1, sizeof *f->warned);
    if (!f->warned) {
        lunar_dataset_free(ds);
        lunar_error(LUNAR_ERR_OOM, "image dataset: out of memory");
        return NULL;
    }
    set_shape(ds, n, num_classes, o->img_size);
    return ds;
}

static folder *folder_of(const lunar_dataset *ds) {
    return (ds && ds->sample == folder_sample) ? ds->impl : NULL;
}

int64_t lunar_dataset_bad_images(const lunar_dataset *ds) {
    folder *f = folder_of(ds);
    return f ? (int64_t)atomic_load(&f->bad) : 0;
}

const char *lunar_dataset_class_name(const lunar_dataset *ds, int k) {
    folder *f = folder_of(ds);
    return (f && f->classes && k >= 0 && k < f->num_classes) ? f->classes[k] : NULL;
}

const char *lunar_dataset_file(const lunar_dataset *ds, int64_t idx) {
    folder *f = folder_of(ds);
    return (f && idx >= 0 && idx < ds->n) ? f->files[idx] : NULL;
}

/* ------------------------------------------------------------- transforms */

/* The draws of one (seed, epoch, image index): Philox stream
 * AUG_STREAM_TAG ^ idx, word epoch * WORDS_PER_EPOCH + w. */
typedef struct {
    uint64_t seed, stream, base;
} draws;

static double unit(const draws *d, uint64_t w) {
    return (double)lunar_rng_u32(d->seed, d->stream, d->base + w) * (1.0 / 4294967296.0);
}

/* torch.randint(0, n): an integer in [0, n) */
static int randint(const draws *d, uint64_t w, int n) {
    return (int)(((uint64_t)lunar_rng_u32(d->seed, d->stream, d->base + w) * (uint64_t)n) >> 32);
}

/* RandomResizedCrop.get_params (torchvision 0.14), the draws from Philox */
static void rrc_params(const lunar_image_opts *o, int W, int H, const draws *d, lunar_crop *c) {
    double area = (double)W * H, lr0 = log(o->ratio_min), lr1 = log(o->ratio_max);
    for (int k = 0; k < 10; k++) {
        double ta = area * (o->scale_min + (o->scale_max - o->scale_min) * unit(d, 4 * k));
        double ar = exp(lr0 + (lr1 - lr0) * unit(d, 4 * k + 1));
        int w = (int)nearbyint(sqrt(ta * ar)), h = (int)nearbyint(sqrt(ta / ar));   /* Python round: half to even */
        if (w > 0 && w <= W && h > 0 && h <= H) {
            c->top = randint(d, 4 * k + 2, H - h + 1);
            c->left = randint(d, 4 * k + 3, W - w + 1);
            c->height = h;
            c->width = w;
            return;
        }
    }
    double in_ratio = (double)W / H;
    int w, h;
    if (in_ratio < o->ratio_min) {
        w = W;
        h = (int)nearbyint(w / o->ratio_min);
    } else if (in_ratio > o->ratio_max) {
        h = H;
        w = (int)nearbyint(h * o->ratio_max);
    } else {
        w = W;
        h = H;
    }
    c->top = (H - h) / 2;
    c->left = (W - w) / 2;
    c->height = h;
    c->width = w;
}

/* One axis of PIL's resampling (Resample.c precompute_coeffs, bilinear):
 * output pixels off .. off+count-1 of a resize of the source span
 * [box0, box0 + box_len) to `total` pixels; source taps clamped to [lo, hi).
 * For each output pixel: first tap *first, taps *ntap, weights (normalized). */
typedef struct {
    int *first, *ntap;
    float *w;       /* [count][kmax] */
    int kmax;
} axis;

static int axis_make(axis *a, double box0, double box_len, int total, int off, int count, int lo, int hi) {
    double scale = box_len / total, fs = scale > 1 ? scale : 1, support = fs;
    a->kmax = (int)ceil(support) * 2 + 1;
    a->first = malloc((size_t)count * sizeof(int));
    a->ntap = malloc((size_t)count * sizeof(int));
    a->w = malloc((size_t)count * (size_t)a->kmax * sizeof(float));
    if (!a->first || !a->ntap || !a->w) return -1;
    for (int i = 0; i < count; i++) {
        double center = box0 + (i + off + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (center - support + 0.5 < 0) xmin = 0;
        if (xmin < lo) xmin = lo;
        if (xmax > hi) xmax = hi;
        if (xmax - xmin > a->kmax) xmax = xmin + a->kmax;
        if (xmax <= xmin) {   /* degenerate: nearest source pixel */
            xmin = (int)floor(center);
            if (xmin < lo) xmin = lo;
            if (xmin > hi - 1) xmin = hi - 1;
            xmax = xmin + 1;
        }
        double sum = 0;
        float *w = a->w + (size_t)i * a->kmax;
        for (int x = xmin; x < xmax; x++) {
            double t = fabs((x - center + 0.5) / fs);
            double v = t < 1 ? 1 - t : 0;
            w[x - xmin] = (float)v;
            sum += v;
        }
        if (sum <= 0) {   /* all taps on the filter's zeros: nearest */
            for (int x = xmin; x < xmax; x++) w[x - xmin] = 0;
            w[0] = 1;
            sum = 1;
        }
        for (int x = xmin; x < xmax; x++) w[x - xmin] = (float)(w[x - xmin] / sum);
        a->first[i] = xmin;
        a->ntap[i] = xmax - xmin;
    }
    return 0;
}

static void axis_free(axis *a) {
    free(a->first);
    free(a->ntap);
    free(a->w);
}

/* out u8 [3, S, S] from img (rgb [h, w, 3]) through the two axes; flip mirrors x. */
static lunar_status resample(const lunar_image *img, const axis *ax, const axis *ay, int S, int flip, uint8_t *out) {
    int y0 = ay->first[0], y1 = y0;
    for (int i = 0; i < S; i++)
        if (ay->first[i] + ay->ntap[i] > y1) y1 = ay->first[i] + ay->ntap[i];
    for (int i = 0; i < S; i++)
        if (ay->first[i] < y0) y0 = ay->first[i];
    int rows = y1 - y0;
    float *tmp = malloc((size_t)rows * (size_t)S * 3 * sizeof(float));
    if (!tmp) return lunar_error(LUNAR_ERR_OOM, "image resample: out of memory");
    for (int r = 0; r < rows; r++) {   /* horizontal pass */
        const uint8_t *src = img->rgb + (size_t)(y0 + r) * img->w * 3;
        for (int x = 0; x < S; x++) {
            const float *w = ax->w + (size_t)x * ax->kmax;
            const uint8_t *p = src + (size_t)ax->first[x] * 3;
            float a0 = 0, a1 = 0, a2 = 0;
            for (int k = 0; k < ax->ntap[x]; k++) {
                a0 += w[k] * p[3 * k];
                a1 += w[k] * p[3 * k + 1];
                a2 += w[k] * p[3 * k + 2];
            }
            float *t = tmp + ((size_t)r * S + x) * 3;
            t[0] = a0;
            t[1] = a1;
            t[2] = a2;
        }
    }
    size_t plane = (size_t)S * S;
    for (int y = 0; y < S; y++) {   /* vertical pass */
        const float *w = ay->w + (size_t)y * ay->kmax;
        for (int x = 0; x < S; x++) {
            float a[3] = {0, 0, 0};
            for (int k = 0; k < ay->ntap[y]; k++) {
                const float *t = tmp + ((size_t)(ay->first[y] - y0 + k) * S + x) * 3;
                a[0] += w[k] * t[0];
                a[1] += w[k] * t[1];
                a[2] += w[k] * t[2];
            }
            int ox = flip ? S - 1 - x : x;
            for (int c = 0; c < 3; c++) {
                float v = nearbyintf(a[c]);
                out[c * plane + (size_t)y * S + ox] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    free(tmp);
    return LUNAR_OK;
}

/* The largest DCT scale denominator d in {1, 2, 4, 8} that leaves the crop at
 * least twice the output size on both axes (need_*: crop size / output size):
 * libjpeg's scaled IDCT then does the coarse reduction and the antialiased
 * resampling at least a factor 2 (the margin keeps the result close to a
 * full decode: PIL's draft() stops at 1x, which blurs less evenly). */
static int dct_denom(double need_w, double need_h) {
    int d = 8;
    while (d > 1 && (need_w < 2.0 * d || need_h < 2.0 * d)) d /= 2;
    return d;
}

/* Decodes file idx and transforms it into out; the crop chosen goes to *c. */
static lunar_status make_sample(const folder *f, const char *path, int64_t idx, int64_t epoch, uint64_t seed,
                                uint8_t *out, lunar_crop *c) {
    uint8_t *buf;
    size_t len;
    lunar_status st = f->src.read ? f->src.read(f->src.ctx, idx, path, &buf, &len)
                                  : lunar_data_read_file(path, &buf, &len);
    if (st) return st;
    lunar_image img;
    st = lunar_image_decode(buf, len, path, 1, 1, &img);
    if (st) { free(buf); return st; }
    int W = img.full_w, H = img.full_h, S = f->o.img_size;
    draws dr = {seed, AUG_STREAM_TAG ^ (uint64_t)idx, (uint64_t)epoch * WORDS_PER_EPOCH};
    memset(c, 0, sizeof *c);
    c->full_w = W;
    c->full_h = H;
    int rw = 0, rh = 0, off_x = 0, off_y = 0;
    if (f->o.train) {
        rrc_params(&f->o, W, H, &dr, c);
        c->flip = unit(&dr, FLIP_WORD) < f->o.hflip;
        c->scale_denom = dct_denom((double)c->width / S, (double)c->height / S);
    } else {
        /* Resize(floor(S / crop_pct)): shorter side to R, longer int(R * long / short); CenterCrop(S) */
        int R = (int)floor(S / f->o.crop_pct + 1e-9);   /* timm: math.floor(img_size / crop_pct) */
        if (W <= H) { rw = R; rh = (int)((double)R * H / W); }
        else { rh = R; rw = (int)((double)R * W / H); }
        off_y = (int)nearbyint((rh - S) / 2.0);
        off_x = (int)nearbyint((rw - S) / 2.0);
        c->top = off_y;
        c->left = off_x;
        c->height = c->width = S;
        c->scale_denom = dct_denom((double)W / rw, (double)H / rh);
    }
    st = lunar_image_decode(buf, len, path, c->scale_denom, 0, &img);
    free(buf);
    if (st) return st;
    /* source coordinates in the decoded image (DCT scaling: ceil(size / d) pixels for `size`) */
    double sx = (double)img.w / W, sy = (double)img.h / H;
    axis ax = {0}, ay = {0};
    int rc;
    if (f->o.train) {
        double bx = c->left * sx, by = c->top * sy, bw = c->width * sx, bh = c->height * sy;
        int lox = (int)floor(bx), hix = (int)ceil(bx + bw), loy = (int)floor(by), hiy = (int)ceil(by + bh);
        if (hix > img.w) hix = img.w;
        if (hiy > img.h) hiy = img.h;
        rc = axis_make(&ax, bx, bw, S, 0, S, lox, hix) | axis_make(&ay, by, bh, S, 0, S, loy, hiy);
    } else {
        rc = axis_make(&ax, 0, img.w, rw, off_x, S, 0, img.w) | axis_make(&ay, 0, img.h, rh, off_y, S, 0, img.h);
    }
    if (rc) st = lunar_error(LUNAR_ERR_OOM, "image %s: out of memory for resampling", path);
    else st = resample(&img, &ax, &ay, S, c->flip, out);
    axis_free(&ax);
    axis_free(&ay);
    free(img.rgb);
    return st;
}

static lunar_status folder_sample(const lunar_dataset *ds, int64_t idx, int64_t epoch, uint64_t seed,
                                  uint8_t *out, int32_t *label) {
    return lunar_dataset_image_sample(ds, idx, epoch, seed, out, label, NULL);
}

lunar_status lunar_dataset_image_sample(const lunar_dataset *ds, int64_t idx, int64_t epoch, uint64_t seed,
                                        uint8_t *out, int32_t *label, lunar_crop *crop) {
    folder *f = folder_of(ds);
    if (!f) return lunar_error(LUNAR_ERR_ARG, "image_sample: not an image-folder dataset");
    if (idx < 0 || idx >= ds->n || !out || !label)
        return lunar_error(LUNAR_ERR_ARG, "image_sample: index %lld out of range [0, %lld) or NULL output",
                           (long long)idx, (long long)ds->n);
    lunar_crop c;
    for (int64_t k = 0; k < ds->n; k++) {
        int64_t j = (idx + k) % ds->n;
        lunar_status st = make_sample(f, f->files[j], j, epoch, seed, out, &c);
        if (st == LUNAR_OK) {
            *label = ds->labels[j];
            if (crop) *crop = c;
            return LUNAR_OK;
        }
        if (st == LUNAR_ERR_OOM || f->o.on_bad_image) return st;
        if (atomic_exchange(&f->warned[j], 1) == 0) {
            atomic_fetch_add(&f->bad, 1);
            fprintf(stderr, "lunar: warning: skipping bad image (replaced by the next good one, with its label): %s\n",
                    lunar_last_error());
        }
    }
    return lunar_error(LUNAR_ERR_FORMAT, "image folder: no image of the %lld files decodes (first: %s)",
                       (long long)ds->n, f->files[0]);
}
