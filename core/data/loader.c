/*
 * core/data/loader.c: the sharded, shuffled batch loader with an optional
 * prefetch thread (data.h).
 *
 * Sampler (torch.utils.data.DistributedSampler): the epoch's order is a
 * Fisher-Yates permutation of [0, N) driven by Philox words (seed, stream
 * (0x4C4F4144 << 32) ^ epoch, i) (identity without shuffle); padded by repeating
 * from its start (drop_last = 0) or truncated (drop_last = 1) to a multiple of
 * num_shards; rank r keeps positions r, r + num_shards, ...
 *
 * Prefetch: `depth` slot buffers and a worker thread. The worker keeps the
 * window of positions [batch, batch + depth) of the caller's epoch filled: it
 * takes the first position of the window no slot holds, and a slot that holds
 * none of the window's (empty, or a position already passed or of another
 * epoch), and fills it outside the lock; lunar_loader_next waits until the
 * slot of its position is READY, copies it out and frees it, which moves the
 * window on. The worker reads the shard's index list only while `filling`;
 * set_epoch, seek and set_threads wait until it is not filling before they
 * change what it reads. A slot is named by its (epoch, batch) and a batch is a
 * pure function of them, so a slot filled before a seek stays valid, and
 * prefetch does not change a bit. A failed batch (an image dataset's bad file
 * with on_bad_image) is kept with its message and reported by the
 * lunar_loader_next that reaches it; its slot is freed, so the next call
 * tries that batch again.
 *
 * Batches for a CUDA device (lunar_loader_set_device): the loader owns a
 * page-locked host buffer of one batch (lunar_cuda_host_alloc), fills it as
 * lunar_loader_next does, and copies it to new device tensors with
 * lunar_cuda_memcpy (queued on the device's compute stream).
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lunar/cuda.h"
#include "lunar/rng.h"

#define SHUFFLE_STREAM_TAG (0x4C4F4144ull << 32) /* "LOAD" */
#define AUGMENT_STREAM_TAG (0x41554731ull << 32) /* "AUG1" */

enum { SLOT_EMPTY, SLOT_FILLING, SLOT_READY };

typedef struct {
    int state;
    int64_t epoch, batch;       /* the position it holds (FILLING, READY) */
    int n;                      /* the batch size; -1: filling failed, msg says why */
    lunar_status status;
    char msg[512];
    float *images;
    int32_t *labels;
} slot;

struct lunar_loader {
    const lunar_dataset *ds;
    int batch_size, shuffle, drop_last, rank, num_shards, prefetch;
    int threads;                /* decode threads for a file-backed dataset (>= 1) */
    int crop_pad;               /* lunar_loader_set_augment: RandomCrop padding (0: none) */
    double hflip;               /* and horizontal flip probability (0: none) */
    uint64_t seed;
    float *mean, *std;          /* [C] or NULL */
    int64_t per_shard;          /* samples per epoch on this shard */
    int64_t num_batches;
    int64_t *perm;              /* [N] scratch */
    int64_t *indices;           /* [per_shard]: this shard's samples, current epoch */
    int64_t indices_epoch;      /* epoch `indices` holds, -1 none */
    int64_t epoch, batch;       /* the caller's position */
    /* prefetch */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int sync_init;
    int stop, filling;          /* filling: the worker is computing a batch (lock released) */
    int depth;                  /* batches prepared ahead (= prefetch) */
    slot *slots;                /* [depth] */
    /* lunar_loader_next_tensors */
    int device;                 /* LUNAR_CPU, or the CUDA device batches go to */
    void *stage;                /* device >= 0: the page-locked batch (images, then labels) */
    size_t stage_img_bytes;     /* of one full batch of images */
};

/* indices <- this shard's sample list for `epoch`. */
static void compute_indices(lunar_loader *l, int64_t epoch) {
    if (l->indices_epoch == epoch) return;
    int64_t n = l->ds->n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = i;
    if (l->shuffle) {
        uint64_t stream = SHUFFLE_STREAM_TAG ^ (uint64_t)epoch;
        for (int64_t i = n - 1; i > 0; i--) {
            uint32_t r = lunar_rng_u32(l->seed, stream, (uint64_t)i);
            int64_t j = (int64_t)(((uint64_t)r * (uint64_t)(i + 1)) >> 32);
            int64_t t = l->perm[i];
            l->perm[i] = l->perm[j];
            l->perm[j] = t;
        }
    }
    /* padded[p] = perm[p % n]; rank takes p = rank + k * num_shards */
    for (int64_t k = 0; k < l->per_shard; k++)
        l->indices[k] = l->perm[(l->rank + k * l->num_shards) % n];
    l->indices_epoch = epoch;
}

/* A loop the compiler vectorizes (GCC's -O2 cost model gives up on a loop
 * with a runtime trip count): `omp simd` where OpenMP is built in. Division
 * and subtraction are exact per lane: the same values as the scalar loop. */
#ifdef _OPENMP
#define LOADER_SIMD _Pragma("omp simd")
#else
#define LOADER_SIMD
#endif

/* Normalizes one u8 sample [C, plane] into o (ToTensor, then Normalize). */
static void normalize_u8(const lunar_loader *l, const uint8_t *src, float *o, int channels, int64_t plane) {
    for (int c = 0; c < channels; c++) {
        const uint8_t *sp = src + c * plane;
        float *op = o + c * plane;
        if (l->mean) {
            float m = l->mean[c], sd = l->std[c];
            LOADER_SIMD
            for (int64_t p = 0; p < plane; p++) op[p] = ((float)sp[p] / 255.0f - m) / sd;
        } else {
            LOADER_SIMD
            for (int64_t p = 0; p < plane; p++) op[p] = (float)sp[p] / 255.0f;
        }
    }
}

/* The augmentation of sample idx of `epoch` (lunar_loader_set_augment) on its
 * normalized values o [C, H, W], tmp [H * W] scratch: shift by (dy, dx) in
 * [-pad, pad] (RandomCrop(S, padding = pad) of the zero-padded image: the
 * pixels shifted in are a 0 pixel's normalized value), then mirror x with
 * probability hflip. Two Philox words keyed by (seed, AUG1 ^ epoch, 2 idx and
 * 2 idx + 1): the same sample gets the same draw in any batch, shard or thread. */
static void augment_sample(const lunar_loader *l, int64_t idx, int64_t epoch, float *o, float *tmp) {
    const lunar_dataset *ds = l->ds;
    const int H = ds->size[0], W = ds->size[1], P = l->crop_pad;
    const uint64_t stream = AUGMENT_STREAM_TAG ^ (uint64_t)epoch;
    uint32_t r0 = lunar_rng_u32(l->seed, stream, 2 * (uint64_t)idx);
    uint32_t r1 = lunar_rng_u32(l->seed, stream, 2 * (uint64_t)idx + 1);
    const int span = 2 * P + 1;
    const int dy = (int)(((uint64_t)(r0 & 0xFFFF) * (uint64_t)span) >> 16) - P;
    const int dx = (int)(((uint64_t)(r0 >> 16) * (uint64_t)span) >> 16) - P;
    const int flip = (double)r1 * (1.0 / 4294967296.0) < l->hflip;
    if (dy == 0 && dx == 0 && !flip) return;
    for (int c = 0; c < ds->channels; c++) {
        float *op = o + (size_t)c * H * W;
        const float pad = l->mean ? (0.0f - l->mean[c]) / l->std[c] : 0.0f;
        memcpy(tmp, op, (size_t)H * W * sizeof(float));
        for (int y = 0; y < H; y++) {
            const int sy = y + dy;
            float *row = op + (size_t)y * W;
            if (sy < 0 || sy >= H) {
                for (int x = 0; x < W; x++) row[x] = pad;
                continue;
            }
            /* x reads column sx = (flip ? W - 1 - x : x) + dx: the x with 0 <= sx < W are [x0, x1) */
            const float *srow = tmp + (size_t)sy * W;
            const int x0 = flip ? (dx > 0 ? dx : 0) : (dx < 0 ? -dx : 0);
            const int x1 = flip ? (dx < 0 ? W + dx : W) : (dx > 0 ? W - dx : W);
            for (int x = 0; x < x0 && x < W; x++) row[x] = pad;
            if (flip)
                for (int x = x0; x < x1; x++) row[x] = srow[W - 1 - x + dx];
            else
                for (int x = x0; x < x1; x++) row[x] = srow[x + dx];
            for (int x = x1 > x0 ? x1 : x0; x < W; x++) row[x] = pad;
        }
    }
}

/* Decoding samples of a file-backed dataset (ds->sample) on the loader's
 * threads: samples are taken from a shared counter; each result depends only
 * on (seed, epoch, idx), so the thread count changes no bit. */
typedef struct {
    const lunar_loader *l;
    int64_t start, count, epoch;
    float *images;
    int32_t *labels;
    atomic_llong next;
    atomic_int failed;
    pthread_mutex_t mu;
    char msg[512];
    lunar_status status;
} decode_job;

static void *decode_worker(void *arg) {
    decode_job *j = arg;
    const lunar_dataset *ds = j->l->ds;
    int64_t numel = ds->sample_numel, plane = numel / ds->channels;
    uint8_t *u8 = malloc((size_t)numel);
    if (!u8) {
        pthread_mutex_lock(&j->mu);
        if (!j->failed) {
            j->status = LUNAR_ERR_OOM;
            snprintf(j->msg, sizeof j->msg, "loader: out of memory for a decode buffer");
        }
        atomic_store(&j->failed, 1);
        pthread_mutex_unlock(&j->mu);
        return NULL;
    }
    for (;;) {
        int64_t s = atomic_fetch_add(&j->next, 1);
        if (s >= j->count || atomic_load(&j->failed)) break;
        int64_t idx = j->l->indices[j->start + s];
        lunar_status st = ds->sample(ds, idx, j->epoch, j->l->seed, u8, &j->labels[s]);
        if (st) {
            pthread_mutex_lock(&j->mu);
            if (!atomic_load(&j->failed)) {
                j->status = st;
                snprintf(j->msg, sizeof j->msg, "%s", lunar_last_error());
            }
            atomic_store(&j->failed, 1);
            pthread_mutex_unlock(&j->mu);
            break;
        }
        normalize_u8(j->l, u8, j->images + s * numel, ds->channels, plane);
    }
    free(u8);
    return NULL;
}

static int fill_decoded(const lunar_loader *l, int64_t start, int64_t count, float *images, int32_t *labels) {
    decode_job j = {.l = l, .start = start, .count = count, .epoch = l->indices_epoch,
                    .images = images, .labels = labels};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    pthread_mutex_init(&j.mu, NULL);
    int nt = l->threads < count ? l->threads : (int)count, started = 0;
    pthread_t th[LUNAR_LOADER_MAX_THREADS];
    for (int t = 1; t < nt; t++)
        if (pthread_create(&th[started], NULL, decode_worker, &j) == 0) started++;
    decode_worker(&j);   /* the calling thread decodes too */
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&j.mu);
    if (atomic_load(&j.failed)) {
        lunar_error(j.status, "%s", j.msg);
        return -1;
    }
    return (int)count;
}

/* Fills batch `b` of the epoch held in l->indices; returns its size, or -1
 * with an error (a file-backed dataset's bad image, with on_bad_image). */
static int fill_batch(const lunar_loader *l, int64_t b, float *images, int32_t *labels) {
    const lunar_dataset *ds = l->ds;
    int64_t start = b * l->batch_size;
    int64_t count = l->per_shard - start;
    if (count > l->batch_size) count = l->batch_size;
    if (count <= 0) return 0;
    if (ds->sample) return fill_decoded(l, start, count, images, labels);
    int64_t numel = ds->sample_numel, plane = numel / ds->channels;
    float tmp_small[1024];
    float *tmp = NULL;
    if (l->crop_pad > 0 || l->hflip > 0)
        tmp = plane <= 1024 ? tmp_small : malloc((size_t)plane * sizeof(float));
    for (int64_t s = 0; s < count; s++) {
        int64_t idx = l->indices[start + s];
        float *o = images + s * numel;
        labels[s] = ds->labels[idx];
        if (ds->dtype == LUNAR_U8) {
            normalize_u8(l, (const uint8_t *)ds->pixels + idx * numel, o, ds->channels, plane);
        } else {
            const float *src = (const float *)ds->pixels + idx * numel;
            if (l->mean) {
                for (int c = 0; c < ds->channels; c++) {
                    const float *sp = src + c * plane;
                    float *op = o + c * plane;
                    float m = l->mean[c], sd = l->std[c];
                    LOADER_SIMD
                    for (int64_t p = 0; p < plane; p++) op[p] = (sp[p] - m) / sd;
                }
            } else {
                memcpy(o, src, (size_t)numel * sizeof(float));
            }
        }
        if (l->crop_pad > 0 || l->hflip > 0) {
            if (!tmp) {
                lunar_error(LUNAR_ERR_OOM, "loader: out of memory for the augmentation of a %lld-pixel plane",
                            (long long)plane);
                return -1;
            }
            augment_sample(l, idx, l->indices_epoch, o, tmp);
        }
    }
    if (tmp != tmp_small) free(tmp);
    return (int)count;
}

/* With the lock held: the slot holding (epoch, batch) in state st, or NULL. */
static slot *slot_at(lunar_loader *l, int64_t epoch, int64_t batch, int st) {
    for (int k = 0; k < l->depth; k++) {
        slot *s = &l->slots[k];
        if (s->state == st && s->epoch == epoch && s->batch == batch) return s;
    }
    return NULL;
}

/* With the lock held: the next (slot, batch) to fill, or NULL: the first
 * position of the caller's window that no slot holds, and a slot holding none
 * of the window's positions. */
static slot *next_job(lunar_loader *l, int64_t *batch) {
    int64_t end = l->batch + l->depth;
    if (end > l->num_batches) end = l->num_batches;
    for (int64_t b = l->batch; b < end; b++) {
        if (slot_at(l, l->epoch, b, SLOT_READY)) continue;
        for (int k = 0; k < l->depth; k++) {
            slot *s = &l->slots[k];
            if (s->state == SLOT_EMPTY ||
                (s->state == SLOT_READY && (s->epoch != l->epoch || s->batch < l->batch || s->batch >= end))) {
                *batch = b;
                return s;
            }
        }
        return NULL;
    }
    return NULL;
}

static void *worker_main(void *arg) {
    lunar_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        slot *s = NULL;
        int64_t b = 0;
        while (!l->stop && !(s = next_job(l, &b))) pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        s->state = SLOT_FILLING;
        s->epoch = l->epoch;
        s->batch = b;
        l->filling = 1;
        pthread_mutex_unlock(&l->mu);
        int n = fill_batch(l, b, s->images, s->labels);
        pthread_mutex_lock(&l->mu);
        if (n < 0) {   /* the error is this thread's: keep it for the caller */
            s->status = lunar_last_status();
            snprintf(s->msg, sizeof s->msg, "%s", lunar_last_error());
        }
        s->n = n;
        s->state = SLOT_READY;
        l->filling = 0;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* With the lock held: waits until the worker computes no batch. */
static void wait_not_filling(lunar_loader *l) {
    while (l->filling) pthread_cond_wait(&l->cv, &l->mu);
}

lunar_loader *lunar_loader_new(const lunar_dataset *ds, int batch_size, int shuffle, uint64_t seed,
                               int drop_last, int shard_rank, int num_shards,
                               const float *mean_per_channel, const float *std_per_channel,
                               int prefetch) {
    if (!ds) {
        lunar_error(LUNAR_ERR_ARG, "loader: dataset is NULL");
        return NULL;
    }
    if (batch_size < 1) {
        lunar_error(LUNAR_ERR_ARG, "loader: batch_size %d (must be >= 1)", batch_size);
        return NULL;
    }
    if (num_shards < 1 || shard_rank < 0 || shard_rank >= num_shards) {
        lunar_error(LUNAR_ERR_ARG, "loader: shard_rank %d of num_shards %d (need 0 <= rank < num_shards)",
                    shard_rank, num_shards);
        return NULL;
    }
    if ((mean_per_channel == NULL) != (std_per_channel == NULL)) {
        lunar_error(LUNAR_ERR_ARG, "loader: normalization needs both mean and std per channel (or neither)");
        return NULL;
    }
    if (std_per_channel)
        for (int c = 0; c < ds->channels; c++)
            if (std_per_channel[c] == 0.0f || !isfinite(std_per_channel[c]) ||
                !isfinite(mean_per_channel[c])) {
                lunar_error(LUNAR_ERR_ARG, "loader: channel %d has mean %g, std %g (std must be nonzero, "
                            "both finite)", c, (double)mean_per_channel[c], (double)std_per_channel[c]);
                return NULL;
            }
    int64_t n = ds->n;
    int64_t per_shard = drop_last ? n / num_shards : (n + num_shards - 1) / num_shards;
    int64_t nb = drop_last ? per_shard / batch_size : (per_shard + batch_size - 1) / batch_size;
    if (nb < 1) {
        lunar_error(LUNAR_ERR_ARG,
                    "loader: no batch per epoch: %lld samples over %d shards is %lld per shard, "
                    "batch_size %d%s",
                    (long long)n, num_shards, (long long)per_shard, batch_size,
                    drop_last ? " with drop_last" : "");
        return NULL;
    }
    lunar_loader *l = calloc(1, sizeof *l);
    if (!l) {
        lunar_error(LUNAR_ERR_OOM, "loader: out of memory");
        return NULL;
    }
    l->ds = ds;
    l->device = LUNAR_CPU;
    l->threads = 1;
    l->batch_size = batch_size;
    l->shuffle = shuffle != 0;
    l->drop_last = drop_last != 0;
    l->rank = shard_rank;
    l->num_shards = num_shards;
    l->prefetch = prefetch > 0;
    l->depth = prefetch > 0 ? prefetch : 0;
    l->seed = seed;
    l->per_shard = per_shard;
    l->num_batches = nb;
    l->indices_epoch = -1;
    l->perm = malloc((size_t)n * sizeof(int64_t));
    l->indices = malloc((size_t)per_shard * sizeof(int64_t));
    if (!l->perm || !l->indices) goto oom;
    if (mean_per_channel) {
        l->mean = malloc((size_t)ds->channels * sizeof(float));
        l->std = malloc((size_t)ds->channels * sizeof(float));
        if (!l->mean || !l->std) goto oom;
        memcpy(l->mean, mean_per_channel, (size_t)ds->channels * sizeof(float));
        memcpy(l->std, std_per_channel, (size_t)ds->channels * sizeof(float));
    }
    compute_indices(l, 0);
    if (l->prefetch) {
        l->slots = calloc((size_t)l->depth, sizeof *l->slots);
        if (!l->slots) goto oom;
        for (int k = 0; k < l->depth; k++) {
            l->slots[k].images = malloc((size_t)batch_size * (size_t)ds->sample_numel * sizeof(float));
            l->slots[k].labels = malloc((size_t)batch_size * sizeof(int32_t));
            if (!l->slots[k].images || !l->slots[k].labels) goto oom;
        }
        if (pthread_mutex_init(&l->mu, NULL) != 0) goto thread_fail;
        if (pthread_cond_init(&l->cv, NULL) != 0) {
            pthread_mutex_destroy(&l->mu);
            goto thread_fail;
        }
        l->sync_init = 1;
        int rc = pthread_create(&l->thread, NULL, worker_main, l);
        if (rc != 0) {
            lunar_error(LUNAR_ERR_OOM, "loader: cannot start the prefetch thread: %s", strerror(rc));
            lunar_loader_free(l);
            return NULL;
        }
        l->thread_started = 1;
    }
    return l;
oom:
    lunar_error(LUNAR_ERR_OOM, "loader: out of memory (%lld samples, batch_size %d)", (long long)n,
                batch_size);
    lunar_loader_free(l);
    return NULL;
thread_fail:
    lunar_error(LUNAR_ERR_OOM, "loader: cannot create the prefetch mutex or condition variable");
    lunar_loader_free(l);
    return NULL;
}

int lunar_loader_next(lunar_loader *l, float *images, int32_t *labels) {
    if (!l || !images || !labels) {
        lunar_error(LUNAR_ERR_ARG, "loader_next: NULL loader or output buffer");
        return -1;
    }
    if (l->batch >= l->num_batches) return 0;
    if (!l->prefetch) {
        compute_indices(l, l->epoch);
        int n = fill_batch(l, l->batch, images, labels);
        if (n >= 0) l->batch++;
        return n;
    }
    pthread_mutex_lock(&l->mu);
    slot *s;
    while (!(s = slot_at(l, l->epoch, l->batch, SLOT_READY))) {
        pthread_cond_broadcast(&l->cv);
        pthread_cond_wait(&l->cv, &l->mu);
    }
    int n = s->n;
    if (n < 0) {   /* the batch failed: report it; a later call tries it again */
        lunar_error(s->status, "%s", s->msg);
    } else {
        int64_t numel = l->ds->sample_numel;
        memcpy(images, s->images, (size_t)n * (size_t)numel * sizeof(float));
        memcpy(labels, s->labels, (size_t)n * sizeof(int32_t));
        l->batch++;
    }
    s->state = SLOT_EMPTY;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return n;
}

lunar_status lunar_loader_seek(lunar_loader *l, int64_t epoch, int64_t batch_index) {
    if (!l) return lunar_error(LUNAR_ERR_ARG, "loader_seek: NULL loader");
    if (epoch < 0 || batch_index < 0 || batch_index > l->num_batches)
        return lunar_error(LUNAR_ERR_ARG,
                           "loader_seek: position (epoch %lld, batch %lld) out of range (epoch >= 0, "
                           "batch in [0, %lld])",
                           (long long)epoch, (long long)batch_index, (long long)l->num_batches);
    if (!l->prefetch) {
        l->epoch = epoch;
        l->batch = batch_index;
        compute_indices(l, epoch);
        return LUNAR_OK;
    }
    pthread_mutex_lock(&l->mu);
    wait_not_filling(l);
    l->epoch = epoch;
    l->batch = batch_index;
    compute_indices(l, epoch);   /* the worker is idle: it only reads indices while filling */
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return LUNAR_OK;
}

lunar_status lunar_loader_set_threads(lunar_loader *l, int threads) {
    if (!l) return lunar_error(LUNAR_ERR_ARG, "loader_set_threads: NULL loader");
    if (threads < 1 || threads > LUNAR_LOADER_MAX_THREADS)
        return lunar_error(LUNAR_ERR_ARG, "loader_set_threads: %d threads (must be 1..%d)", threads,
                           LUNAR_LOADER_MAX_THREADS);
    if (!l->prefetch) {
        l->threads = threads;
        return LUNAR_OK;
    }
    pthread_mutex_lock(&l->mu);
    wait_not_filling(l);
    l->threads = threads;   /* the worker reads it only while filling */
    pthread_mutex_unlock(&l->mu);
    return LUNAR_OK;
}

lunar_status lunar_loader_set_augment(lunar_loader *l, int crop_pad, double hflip) {
    if (!l) return lunar_error(LUNAR_ERR_ARG, "loader_set_augment: NULL loader");
    const lunar_dataset *ds = l->ds;
    if (crop_pad < 0 || !(hflip >= 0 && hflip <= 1))
        return lunar_error(LUNAR_ERR_ARG, "loader_set_augment: crop padding %d (must be >= 0), hflip %g (a "
                           "probability in [0, 1])", crop_pad, hflip);
    if ((crop_pad > 0 || hflip > 0) && (ds->sample || ds->ndim_spatial != 2))
        return lunar_error(LUNAR_ERR_ARG, "loader_set_augment: random crop and flip are for in-memory 2-D image "
                           "datasets (this one is %s)", ds->sample ? "read from files, with its own augmentation"
                                                                   : "3-D");
    if (crop_pad >= ds->size[0] || crop_pad >= ds->size[1])
        return lunar_error(LUNAR_ERR_ARG, "loader_set_augment: crop padding %d is not smaller than the %d x %d "
                           "image", crop_pad, ds->size[0], ds->size[1]);
    if (l->prefetch) {
        pthread_mutex_lock(&l->mu);
        wait_not_filling(l);
    }
    l->crop_pad = crop_pad;
    l->hflip = hflip;
    if (l->prefetch) {
        for (int k = 0; k < l->depth; k++) /* batches made without it: made again */
            if (l->slots[k].state == SLOT_READY) l->slots[k].state = SLOT_EMPTY;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    return LUNAR_OK;
}

lunar_status lunar_loader_set_epoch(lunar_loader *l, int64_t epoch) {
    return lunar_loader_seek(l, epoch, 0);
}

int64_t lunar_loader_num_batches(const lunar_loader *l) { return l ? l->num_batches : 0; }
int64_t lunar_loader_num_samples(const lunar_loader *l) { return l ? l->per_shard : 0; }

void lunar_loader_position(const lunar_loader *l, int64_t *epoch, int64_t *batch_index) {
    if (epoch) *epoch = l ? l->epoch : 0;
    if (batch_index) *batch_index = l ? l->batch : 0;
}

lunar_status lunar_loader_set_device(lunar_loader *l, int device) {
    if (!l) return lunar_error(LUNAR_ERR_ARG, "loader_set_device: NULL loader");
    if (device == l->device) return LUNAR_OK;
    if (device != LUNAR_CPU) {
        if (device < 0) return lunar_error(LUNAR_ERR_ARG, "loader_set_device: %d is not a device", device);
        lunar_status s = lunar_cuda_check_device(device);
        if (s) return s;
    }
    if (device != LUNAR_CPU && !l->stage) {
        size_t img = (size_t)l->batch_size * (size_t)l->ds->sample_numel * sizeof(float);
        void *stage = lunar_cuda_host_alloc(img + (size_t)l->batch_size * sizeof(int32_t));
        if (!stage) return lunar_last_status();
        l->stage = stage;
        l->stage_img_bytes = img;
    }
    l->device = device;
    return LUNAR_OK;
}

int lunar_loader_device(const lunar_loader *l) { return l ? l->device : LUNAR_CPU; }

/* A batch's tensor shapes: images [n, C, spatial...], labels [n]; returns the images' ndim. */
static int batch_shape(const lunar_loader *l, int64_t n, int64_t *shape) {
    int nd = lunar_dataset_ndim_spatial(l->ds);
    shape[0] = n;
    shape[1] = lunar_dataset_channels(l->ds);
    for (int i = 0; i < nd; i++) shape[2 + i] = lunar_dataset_size(l->ds, i);
    return nd + 2;
}

int lunar_loader_next_tensors(lunar_loader *l, lunar_tensor **images, lunar_tensor **labels) {
    if (images) *images = NULL;
    if (labels) *labels = NULL;
    if (!l || !images || !labels) {
        lunar_error(LUNAR_ERR_ARG, "loader_next_tensors: NULL loader or output");
        return -1;
    }
    int64_t shape[LUNAR_MAX_DIMS];
    lunar_tensor *img = NULL, *lab = NULL;
    int n;
    if (l->device == LUNAR_CPU) {   /* straight into the tensors */
        int nd = batch_shape(l, l->batch_size, shape);
        img = lunar_tensor_new(LUNAR_F32, nd, shape, LUNAR_CPU);
        lab = img ? lunar_tensor_new(LUNAR_I32, 1, shape, LUNAR_CPU) : NULL;
        if (!img || !lab) goto fail;
        n = lunar_loader_next(l, lunar_tensor_data(img), lunar_tensor_data(lab));
        if (n <= 0) goto done;
        if (n < l->batch_size) {  /* a short last batch: a prefix */
            img->shape[0] = n;
            lab->shape[0] = n;
        }
    } else {   /* into the page-locked buffer, then to the device */
        float *stage_img = l->stage;
        int32_t *stage_lab = (int32_t *)((char *)l->stage + l->stage_img_bytes);
        n = lunar_loader_next(l, stage_img, stage_lab);
        if (n <= 0) return n;
        int nd = batch_shape(l, n, shape);
        img = lunar_tensor_new(LUNAR_F32, nd, shape, l->device);
        lab = img ? lunar_tensor_new(LUNAR_I32, 1, shape, l->device) : NULL;
        if (!img || !lab ||
            lunar_cuda_memcpy(lunar_tensor_data(img), l->device, stage_img, LUNAR_CPU,
                              (size_t)n * (size_t)l->ds->sample_numel * sizeof(float)) ||
            lunar_cuda_memcpy(lunar_tensor_data(lab), l->device, stage_lab, LUNAR_CPU,
                              (size_t)n * sizeof(int32_t)))
            goto fail;
    }
    *images = img;
    *labels = lab;
    return n;
fail:
    n = -1;
done:
    lunar_tensor_free(img);
    lunar_tensor_free(lab);
    return n;
}

void lunar_loader_free(lunar_loader *l) {
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    if (l->sync_init) {
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
    }
    if (l->slots)
        for (int k = 0; k < l->depth; k++) {
            free(l->slots[k].images);
            free(l->slots[k].labels);
        }
    free(l->slots);
    lunar_cuda_host_free(l->stage);
    free(l->perm);
    free(l->indices);
    free(l->mean);
    free(l->std);
    free(l);
}
