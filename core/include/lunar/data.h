/*
 * lunar/data.h: in-memory datasets and the sharded, shuffled batch loader.
 *
 * A dataset holds N samples, each C channels over 2 (H, W) or 3 (D, H, W)
 * spatial dims, stored row-major as [N, C, spatial...] in uint8 (LUNAR_U8,
 * pixels 0..255, as read from IDX and CIFAR files) or float32 (LUNAR_F32,
 * synthetic data), with one int32 label per sample in [0, num_classes).
 *
 * Readers:
 *   - IDX, the MNIST family's format (http://yann.lecun.com/exdb/mnist/,
 *     "THE IDX FILE FORMAT"): magic 0x00000803 images [N, rows, cols] u8 and
 *     0x00000801 labels [N] u8, big-endian dims. Read through zlib, so .gz and
 *     plain files both work.
 *   - CIFAR-10 binary (https://www.cs.toronto.edu/~kriz/cifar.html, "binary
 *     version"): records of 1 label byte + 3072 pixel bytes (3 x 32 x 32, CHW,
 *     channels R, G, B), concatenated over files.
 *   - synthetic 2D/3D images from a seed (learnable: one pattern per class).
 * Each reader also has a parse-from-memory entry point (for fuzz targets).
 *
 * The loader turns a dataset into float32 batches [B, C, spatial...]: u8
 * pixels become pixel / 255 (torchvision ToTensor), then (x - mean[c]) / std[c]
 * (torchvision Normalize). Its sampler is PyTorch's DistributedSampler: a
 * permutation per (seed, epoch), padded or truncated to a multiple of the
 * number of data-parallel shards, rank r taking every num_shards-th index from
 * r. A background thread may prepare the next batches (prefetch); the batches are
 * bitwise the same with and without it.
 *
 * Errors: no function exits; a failing one returns NULL (or a status, or -1)
 * and leaves a message naming the file and the problem (status.h).
 */
#ifndef LUNAR_DATA_H
#define LUNAR_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/status.h"
#include "lunar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- datasets */

typedef struct lunar_dataset lunar_dataset;

/* A new dataset of n samples with zero pixels and zero labels, to be filled
 * through lunar_dataset_pixels / lunar_dataset_labels. dtype: LUNAR_U8 or
 * LUNAR_F32; channels >= 1; ndim_spatial 2 or 3; size[ndim_spatial] >= 1 each;
 * num_classes >= 1; n >= 0. NULL (LUNAR_ERR_ARG / LUNAR_ERR_OOM) on error. */
lunar_dataset *lunar_dataset_new(lunar_dtype dtype, int64_t n, int channels, int ndim_spatial,
                                 const int *size, int num_classes);

/* Fashion-MNIST / MNIST from two IDX files (each .gz or plain; zlib detects
 * which). images_path: magic 0x00000803, dims [N, rows, cols], u8 pixels;
 * labels_path: magic 0x00000801, dims [N], u8 labels. Returns a LUNAR_U8
 * dataset with channels 1, spatial (rows, cols), num_classes = max label + 1.
 * Errors (NULL): a file that cannot be opened (the message names the path and
 * the system error, and for a path under /usr/share/datasets/fashion-mnist
 * says it is provided by the Debian package dataset-fashion-mnist), a
 * truncated gzip stream, a bad magic, zero rows/cols, a file shorter or longer
 * than its header says (expected and actual bytes), image/label counts that
 * differ (both paths and counts). */
lunar_dataset *lunar_dataset_load_idx(const char *images_path, const char *labels_path);

/* The maximal number of dims an IDX header may declare here. */
#define LUNAR_IDX_MAX_DIMS 8

/* One parsed IDX file: a view into the caller's buffer. */
typedef struct {
    int type;                              /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
    int ndim;                              /* 1..LUNAR_IDX_MAX_DIMS */
    uint32_t dims[LUNAR_IDX_MAX_DIMS];     /* sizes, dims[0] = number of items */
    size_t elem_size;                      /* bytes per element of `type` */
    const uint8_t *data;                   /* first element (big-endian if multi-byte) */
    size_t nbytes;                         /* prod(dims) * elem_size */
} lunar_idx;

/* Parses an IDX file held in memory (buf[len], already decompressed): magic
 * 0x00 0x00 type ndim, then ndim big-endian u32 dims, then the data, which must
 * fill the rest exactly. `name` (a path, or NULL for "<memory>") goes into
 * error messages. LUNAR_OK, or LUNAR_ERR_FORMAT with a message (bad magic,
 * unknown type, too many dims, size overflow, truncated or trailing bytes with
 * expected/actual counts). Safe on any input (fuzz entry point). */
lunar_status lunar_idx_parse(const uint8_t *buf, size_t len, const char *name, lunar_idx *out);

/* A dataset from an IDX images buffer and an IDX labels buffer in memory (as
 * lunar_dataset_load_idx after reading and decompressing the files; the data
 * are copied). Names go into error messages (NULL: "<images>", "<labels>").
 * Safe on any input (fuzz entry point). */
lunar_dataset *lunar_dataset_from_idx(const uint8_t *images, size_t images_len,
                                      const uint8_t *labels, size_t labels_len,
                                      const char *images_name, const char *labels_name);

/* CIFAR-10 from binary batch files (data_batch_1.bin ... or test_batch.bin,
 * .gz also read), concatenated in the given order. Each file: records of
 * 1 label byte (0..9) + 3072 bytes (3 x 32 x 32, CHW). Returns a LUNAR_U8
 * dataset, channels 3, spatial (32, 32), num_classes 10. Errors (NULL): npaths
 * < 1, a file that cannot be opened, a size not a multiple of 3073 bytes, a
 * label > 9 (naming the file and record). */
lunar_dataset *lunar_dataset_load_cifar10(const char *const *paths, int npaths);

/* CIFAR-10 records from memory (buf[len]; copied); name for messages. Safe on
 * any input (fuzz entry point). */
lunar_dataset *lunar_cifar10_parse(const uint8_t *buf, size_t len, const char *name);

/* n synthetic float32 images [channels, size[0], ..., size[ndim_spatial-1]]
 * (ndim_spatial 2: H, W; 3: D, H, W), labels i % num_classes. Learnable: the
 * image of a sample of class k is 1.0 * pattern_k + 0.5 * N(0, 1) noise, where
 * pattern_k (per channel) is the mean of two plane waves
 * cos(2 pi (f . x / size) + phi) with integer frequencies f in [0, 3] per dim
 * and phases phi in [0, 2 pi), drawn per (class, channel, wave). A pure
 * function of the arguments (Philox, rng.h): the same on every run and
 * machine. NULL (LUNAR_ERR_ARG) on n < 0, channels < 1, ndim_spatial not 2 or
 * 3, a size < 1, num_classes < 1. */
lunar_dataset *lunar_dataset_synthetic(int64_t n, int channels, int ndim_spatial, const int *size,
                                       int num_classes, uint64_t seed);

/* The slab of rows row0 .. row0 + rows - 1 of the first spatial dim (2D: H, 3D: D) of
 * lunar_dataset_synthetic's images with the same arguments: samples [channels, rows,
 * size[1](, size[2])] whose pixels equal those rows of the whole images, computed for
 * the slab only (domain parallelism: no rank holds a whole image). NULL
 * (LUNAR_ERR_ARG) as lunar_dataset_synthetic, or when the rows are not within size[0]. */
lunar_dataset *lunar_dataset_synthetic_slab(int64_t n, int channels, int ndim_spatial, const int *size,
                                            int num_classes, uint64_t seed, int row0, int rows);

/* How an image-folder dataset turns a file into a sample (timm's and
 * torchvision's ViT recipes). */
typedef struct {
    int img_size;             /* output side S: samples are u8 [3, S, S] */
    int train;                /* 1: RandomResizedCrop + horizontal flip; 0: resize + center crop */
    double scale_min, scale_max;   /* RandomResizedCrop area fraction (0.08, 1) */
    double ratio_min, ratio_max;   /* RandomResizedCrop aspect ratio w/h (3/4, 4/3), drawn log-uniform */
    double hflip;             /* flip probability (0.5) */
    double crop_pct;          /* eval: resize the shorter side to floor(S / crop_pct), then center crop S (0.875) */
    int on_bad_image;         /* 0: skip (see lunar_dataset_image_folder), 1: error */
} lunar_image_opts;

/* The defaults above for side img_size, train or eval. */
void lunar_image_opts_default(lunar_image_opts *o, int img_size, int train);

/* torchvision's ImageFolder layout: dir/<class>/.../<file>.{jpg,jpeg,png}
 * (extension case-insensitive). Classes are the subdirectories of dir sorted by
 * name (byte order, as Python's sorted), labelled 0, 1, ...; files are found
 * recursively (symlinks followed) and sorted by (directory, name), as
 * torchvision's make_dataset does. Only names are read here; a file is opened
 * and decoded when the loader needs it (lunar_dataset_image_sample), so a
 * dataset of any size costs memory per file name only.
 *
 * A sample: the decoded RGB image (image_decode.c: libpng; libjpeg-turbo
 * with DCT scaling 1/2, 1/4 or 1/8 where the crop stays at least twice the
 * output size after it, i.e. where it is at least 4 times), then for
 * train torchvision's RandomResizedCrop(S, scale, ratio) (10 attempts, then
 * its center-crop fallback) and RandomHorizontalFlip(hflip); for eval
 * Resize(floor(S / crop_pct)) and CenterCrop(S). Resampling is PIL's
 * antialiased bilinear (triangle filter widened by the downscale factor,
 * clamped to the crop box), rounded to u8 once. Every random draw is a
 * Philox word (seed, stream (0x494D47 << 40) ^ idx, word epoch * 64 + w):
 * attempt k uses w = 4k..4k+3 (area, log-ratio, top, left), the flip w = 40;
 * so a sample depends on (seed, epoch, idx) only, not on the layout, the
 * threads or a resume (idx < 2^40, epoch < 2^58).
 *
 * A bad image (unreadable, corrupt, truncated, CMYK, not JPEG/PNG) found at
 * load time: with on_bad_image 0 it is counted (lunar_dataset_bad_images),
 * one warning naming the file and the error goes to stderr the first time,
 * and the sample is replaced by the next good file of the dataset (idx + 1,
 * idx + 2, ... wrapping) WITH THAT FILE'S LABEL, augmented with its own
 * (seed, epoch, idx) draws: a batch keeps its size, every image keeps its own
 * label, and the substitution is deterministic on any layout. When no file
 * decodes, an error. With on_bad_image 1 the first bad image is an error
 * naming the file (the loader returns -1).
 *
 * Errors (NULL): dir missing or not a directory, no class directory, a class
 * without any image file (naming it), img_size < 1, scale/ratio/crop_pct out
 * of range. */
lunar_dataset *lunar_dataset_image_folder(const char *dir, const lunar_image_opts *opts);

/* Galvatron's zipped ImageNet: the members of the zip archive zip_path named
 * by the map file map_path, read from the archive (libzip) without unpacking
 * it. A map line is "<archive>@/<member path><TAB><label>" (e.g.
 * "train.zip@/n01440764/n01440764_10026.JPEG\t0"; blank lines skipped); the
 * samples are the archive's image members (.jpg .jpeg .png) in archive order
 * that the map names, labelled by it, num_classes = max label + 1, as
 * Galvatron's ZipData. Samples, transforms and bad images as
 * lunar_dataset_image_folder's; lunar_dataset_file gives "<zip_path>@/<member>".
 * Errors (NULL): the map missing or a line not of that form (naming the file
 * and line), a member with two labels, the archive missing or not a zip, no
 * image member named in the map. */
lunar_dataset *lunar_dataset_image_zip(const char *zip_path, const char *map_path, const lunar_image_opts *opts);

/* Bad images met so far (0 for other datasets). */
int64_t lunar_dataset_bad_images(const lunar_dataset *ds);

/* Class k's name (the directory name) of an image-folder dataset; NULL if k
 * is out of range or the dataset has no names. */
const char *lunar_dataset_class_name(const lunar_dataset *ds, int k);

/* The file of sample idx of an image-folder dataset, NULL otherwise. */
const char *lunar_dataset_file(const lunar_dataset *ds, int64_t idx);

/* The crop of one sample: the box (top, left, height, width) in the full
 * image's pixels, the full size, the flip, and the DCT scale used. */
typedef struct {
    int top, left, height, width;
    int full_h, full_w;
    int flip;
    int scale_denom;
} lunar_crop;

/* Sample idx of an image-folder dataset for (seed, epoch), as the loader
 * makes it: out u8 [3, S, S] (before normalization), *label, and when crop is
 * not NULL the crop applied (tests compare it with torchvision). Errors as
 * lunar_dataset_image_folder's bad images (on_bad_image 1), LUNAR_ERR_ARG for
 * another dataset or idx out of range. */
lunar_status lunar_dataset_image_sample(const lunar_dataset *ds, int64_t idx, int64_t epoch,
                                        uint64_t seed, uint8_t *out, int32_t *label,
                                        lunar_crop *crop);

/* Frees a dataset (NULL is ignored). A loader must not outlive its dataset. */
void lunar_dataset_free(lunar_dataset *ds);

/* Accessors. size(ds, i): the i-th spatial size (0 <= i < ndim_spatial),
 * -1 when i is out of range. sample_numel: channels * prod(spatial sizes). */
int64_t lunar_dataset_count(const lunar_dataset *ds);
int lunar_dataset_channels(const lunar_dataset *ds);
int lunar_dataset_ndim_spatial(const lunar_dataset *ds);
int lunar_dataset_size(const lunar_dataset *ds, int i);
int lunar_dataset_num_classes(const lunar_dataset *ds);
lunar_dtype lunar_dataset_dtype(const lunar_dataset *ds);
int64_t lunar_dataset_sample_numel(const lunar_dataset *ds);

/* The pixel array [N, C, spatial...] (uint8_t* or float* per dtype) and the
 * label array [N]. Writable, for datasets built with lunar_dataset_new. */
void *lunar_dataset_pixels(lunar_dataset *ds);
int32_t *lunar_dataset_labels(lunar_dataset *ds);

/* ------------------------------------------------------------------ loader */

typedef struct lunar_loader lunar_loader;

/* A batch loader over `ds` (not copied; it must outlive the loader).
 *   batch_size >= 1; shuffle: a new permutation each epoch, a pure function of
 *   (seed, epoch): Fisher-Yates over [0, N), for i = N-1 .. 1 swap i with
 *   j = (lunar_rng_u32(seed, (0x4C4F4144 << 32) ^ epoch, i) * (i + 1)) >> 32;
 *   the identity when !shuffle.
 *   shard_rank in [0, num_shards): the data-parallel rank and size. As
 *   torch.utils.data.DistributedSampler, the epoch's index list is padded by
 *   repeating it from its start (drop_last = 0) or truncated (drop_last = 1)
 *   to a multiple of num_shards; rank r takes positions r, r + num_shards, ...
 *   so every rank has the same number of samples and batches.
 *   drop_last: also drops a last partial batch (else it is returned short).
 *   mean_per_channel, std_per_channel: NULL for none, else C floats each
 *   (std != 0): x = (x - mean[c]) / std[c] after the u8 scaling by 1/255.
 *   prefetch: n >= 1 starts a thread that prepares the next n batches while
 *   the caller works on the current one (n batch buffers); 0 prepares each
 *   batch in lunar_loader_next.
 * The loader starts at epoch 0, batch 0. NULL on error (bad argument, or a
 * configuration that yields no batch: empty dataset, fewer samples per shard
 * than batch_size with drop_last). */
lunar_loader *lunar_loader_new(const lunar_dataset *ds, int batch_size, int shuffle, uint64_t seed,
                               int drop_last, int shard_rank, int num_shards,
                               const float *mean_per_channel, const float *std_per_channel,
                               int prefetch);

/* Fills the next batch of the current epoch: images float32 [B, C, spatial...]
 * (room for batch_size * sample_numel floats), labels int32 [B] (room for
 * batch_size). Returns B (batch_size, or fewer for a last partial batch), 0 at
 * the end of the epoch (and on every call after it until set_epoch or seek),
 * -1 on a NULL argument or a batch that could not be made (a bad image of a
 * file-backed dataset with on_bad_image = 1; the message names the file). */
int lunar_loader_next(lunar_loader *l, float *images, int32_t *labels);

/* Where lunar_loader_next_tensors puts batches: LUNAR_CPU (the default) or
 * CUDA device `device`. For a device, the loader allocates its page-locked
 * host buffer of one batch (lunar_cuda_host_alloc, kept until the loader is
 * freed) now. Errors: the device's (lunar_cuda_check_device: not compiled in,
 * no such device, naming it), LUNAR_ERR_OOM. */
lunar_status lunar_loader_set_device(lunar_loader *l, int device);

/* The device of lunar_loader_set_device (LUNAR_CPU for NULL). */
int lunar_loader_device(const lunar_loader *l);

/* The next batch as new tensors on the loader's device: *images f32
 * [B, C, spatial...], *labels i32 [B] (the caller frees both). B as
 * lunar_loader_next: batch_size or fewer for a last partial batch (on the CPU
 * then a prefix of a full-size allocation), 0 at the end of the epoch (both
 * NULL). On a CUDA device the batch is filled in the loader's page-locked
 * buffer, then copied with lunar_cuda_memcpy on the device's compute stream
 * (after the work already queued there); the prefetch thread prepares the
 * next batch meanwhile. -1 with an error (NULL argument, allocation, copy);
 * both NULL. */
int lunar_loader_next_tensors(lunar_loader *l, lunar_tensor **images, lunar_tensor **labels);

/* The most decode threads a loader may use. */
#define LUNAR_LOADER_MAX_THREADS 256

/* Decode threads for a file-backed dataset (lunar_dataset_image_folder):
 * each batch's samples are decoded and augmented by `threads` threads (the
 * prefetch thread, or the caller without prefetch, is one of them), drawing
 * samples from a shared counter. Every sample depends only on (seed, epoch,
 * index), so batches are bitwise the same for any thread count. No effect on
 * in-memory datasets. LUNAR_ERR_ARG unless 1 <= threads <= 256. A failing
 * batch (a bad image with on_bad_image = 1) makes lunar_loader_next return -1
 * with that image's message; the position stays at that batch. */
lunar_status lunar_loader_set_threads(lunar_loader *l, int threads);

/* Training augmentation of an in-memory 2-D image dataset (Fashion-MNIST,
 * CIFAR-10, synthetic), after the normalization: torchvision's
 * RandomCrop(S, padding = crop_pad) (the image shifted by dy, dx drawn
 * uniformly in [-crop_pad, crop_pad], the pixels shifted in those of a 0
 * pixel) then RandomHorizontalFlip(hflip). The draws of sample idx in `epoch`
 * are two Philox words, lunar_rng_u32(seed, (0x41554731 << 32) ^ epoch,
 * 2 idx and 2 idx + 1): dy = (w0 & 0xFFFF) * (2 crop_pad + 1) >> 16 - crop_pad,
 * dx the same from w0 >> 16, flip when w1 / 2^32 < hflip; so batches stay a
 * pure function of (seed, epoch, position) for any shard, prefetch or thread
 * count. crop_pad = 0 and hflip = 0 (the default): none. Batches already
 * prefetched are made again. LUNAR_ERR_ARG: crop_pad < 0 or >= the image
 * side, hflip outside [0, 1], a file-backed (it has its own) or 3-D dataset. */
lunar_status lunar_loader_set_augment(lunar_loader *l, int crop_pad, double hflip);

/* Starts epoch `epoch` (>= 0) at its first batch: lunar_loader_seek(l, epoch, 0). */
lunar_status lunar_loader_set_epoch(lunar_loader *l, int64_t epoch);

/* Batches per epoch on this shard (the same on every shard). */
int64_t lunar_loader_num_batches(const lunar_loader *l);

/* Samples per epoch on this shard (after padding or truncation). */
int64_t lunar_loader_num_samples(const lunar_loader *l);

/* The data position: the epoch and the index of the batch the next call to
 * lunar_loader_next returns (num_batches once the epoch is exhausted). Saved in
 * a checkpoint and given back to lunar_loader_seek, it resumes exactly. */
void lunar_loader_position(const lunar_loader *l, int64_t *epoch, int64_t *batch_index);

/* Moves to (epoch, batch_index): the next batch returned is batch batch_index
 * of that epoch, the same one a straight run returns there. batch_index in
 * [0, num_batches]. LUNAR_ERR_ARG when out of range. */
lunar_status lunar_loader_seek(lunar_loader *l, int64_t epoch, int64_t batch_index);

/* Stops and joins the prefetch thread (also mid-epoch) and frees the loader.
 * NULL is ignored. */
void lunar_loader_free(lunar_loader *l);

#ifdef __cplusplus
}
#endif
#endif
