/*
 * lunar/io.h: safetensors read and write, and the file-system primitives
 * Lunar's files go through (core/io/fs.c): the atomic write and the
 * directory helpers of checkpoint directories; TensorBoard event files
 * (core/io/tfevents.c).
 *
 * Format (https://github.com/huggingface/safetensors, README "Format"): an
 * 8-byte little-endian u64 N, then N bytes of a UTF-8 JSON object
 *   {"__metadata__": {"key": "value", ...},            (optional, strings only)
 *    "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * then the byte buffer. Offsets are relative to the buffer start, in bytes,
 * [begin, end); the tensors tile the buffer with no hole and no overlap; data
 * is little-endian, row-major. dtypes read and written here: F32, BF16, F16,
 * I32, I64, U8, F64 (lunar_dtype); the other dtypes of the format (BOOL, I8,
 * I16, U16, U32, U64, F8_*) are refused as unsupported.
 *
 * The reader validates the file as the reference implementation does and more
 * (every error names the file, and the tensor when one is at fault). The
 * writer writes "<path>.tmp.<pid>", fsyncs it and renames it onto path, so a
 * crash never leaves a half-written file at path (DESIGN.md invariant). It
 * keeps the caller's order of tensors, makes offsets contiguous in that order
 * and pads the header with spaces to a multiple of 8 bytes, as the reference
 * does, so the buffer starts 8-byte aligned. (The reference sorts tensors by
 * dtype alignment, then name; here a tensor's data is aligned to its dtype when
 * the tensors before it have sizes that are multiples of that alignment.)
 */
#ifndef LUNAR_IO_H
#define LUNAR_IO_H

#include <stddef.h>
#include <stdint.h>

#include "lunar/status.h"
#include "lunar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The largest header accepted, as the reference's MAX_HEADER_SIZE. */
#define LUNAR_SAFETENSORS_MAX_HEADER 100000000u

/* One tensor of a safetensors file: what the reader returns (pointers into the
 * handle, valid until lunar_safetensors_close) and what the writer takes. */
typedef struct {
    const char *name;                   /* UTF-8, unique, not "__metadata__" */
    lunar_dtype dtype;
    int ndim;                           /* 0 (a scalar) .. LUNAR_MAX_DIMS */
    int64_t shape[LUNAR_MAX_DIMS];
    const void *data;                   /* nbytes bytes, little-endian, row-major;
                                           in a reader, possibly not aligned to the
                                           dtype when the file's offsets are not */
    size_t nbytes;                      /* prod(shape) * dtype size */
} lunar_safetensors_entry;

typedef struct lunar_safetensors lunar_safetensors;

/* Opens and validates a safetensors file (mapped read-only with mmap, or read
 * into memory where mmap is not possible). NULL with LUNAR_ERR_IO (cannot open
 * or read, naming the path and the system error) or LUNAR_ERR_FORMAT (naming
 * the path, and the tensor when one is at fault): shorter than 8 bytes; header
 * size larger than the file or than LUNAR_SAFETENSORS_MAX_HEADER; header not
 * valid JSON (with the byte offset) or not an object; an entry that is not an
 * object with "dtype" (string), "shape" (array of integers >= 0) and
 * "data_offsets" ([begin, end], integers, begin <= end); an unknown or
 * unsupported dtype; more than LUNAR_MAX_DIMS dims; a shape whose element or
 * byte count overflows, or whose nonzero sizes multiply past 2^59 elements
 * (lunar_tensor_new's limit; also when a zero size makes it empty); end -
 * begin != numel * dtype size; offsets past the end of the buffer,
 * overlapping, leaving a hole or not covering the buffer; a duplicate name;
 * "__metadata__" that is not an object of strings. */
lunar_safetensors *lunar_safetensors_open(const char *path);

/* Parses a safetensors file held in memory (buf[len]; copied, so buf may be
 * freed after). `name` (NULL: "<memory>") stands for the path in messages.
 * The same validation as lunar_safetensors_open; safe on any input (fuzz
 * entry point). */
lunar_safetensors *lunar_safetensors_parse(const uint8_t *buf, size_t len, const char *name);

/* Number of tensors, and tensor i (0 <= i < count; NULL otherwise) in the
 * order of the file's header. */
int lunar_safetensors_count(const lunar_safetensors *st);
const lunar_safetensors_entry *lunar_safetensors_entry_at(const lunar_safetensors *st, int i);

/* The tensor named `name`, NULL when absent (no error is recorded). */
const lunar_safetensors_entry *lunar_safetensors_find(const lunar_safetensors *st, const char *name);

/* A new contiguous host tensor holding the block of tensor `name` that spans
 * [start[d], start[d] + len[d]) in each dim d (start and len have one entry per
 * dim; both NULL: the whole tensor), copied byte for byte (any dtype, a
 * possibly unaligned mapping). NULL with LUNAR_ERR_ARG naming the path and the
 * tensor: no such tensor ("<path>: no tensor 'w'"), or a range outside its dim
 * ("<path>: tensor 'w': range 2 is not within dim 2 of size 5"). */
lunar_tensor *lunar_safetensors_read_block(const lunar_safetensors *st, const char *name, const int64_t *start,
                                           const int64_t *len);

/* The "__metadata__" value of `key`, NULL when absent. */
const char *lunar_safetensors_metadata(const lunar_safetensors *st, const char *key);

/* Number of metadata pairs, and pair i (key and value; 0 on success, -1 when
 * i is out of range). */
int lunar_safetensors_metadata_count(const lunar_safetensors *st);
int lunar_safetensors_metadata_at(const lunar_safetensors *st, int i, const char **key,
                                  const char **value);

/* The path (or name) the handle was opened with. */
const char *lunar_safetensors_path(const lunar_safetensors *st);

/* Unmaps or frees the file; entries and strings from it become invalid. NULL
 * is ignored. */
void lunar_safetensors_close(lunar_safetensors *st);

/* Writes entries[n] and nmeta metadata pairs (meta_keys[i] -> meta_values[i];
 * both may be NULL when nmeta is 0) to path with lunar_atomic_write
 * ("<path>.tmp.<pid>", fsync, rename onto path, fsync of the directory). Offsets are contiguous in
 * the given order; the header is padded with spaces to a multiple of 8 bytes.
 * LUNAR_ERR_ARG (naming path and tensor): a NULL or duplicate name, the name
 * "__metadata__", ndim out of [0, LUNAR_MAX_DIMS], a dim outside [0, 2^53] or
 * nonzero dims whose product passes 2^59 (what the reader refuses), an
 * unsupported dtype, nbytes != numel * dtype size, NULL data with nbytes > 0, a
 * NULL or duplicate metadata key or NULL value. LUNAR_ERR_IO (naming the file
 * and the system error) when a write, fsync or rename fails; the temporary
 * file is then removed and path is left as it was. */
lunar_status lunar_safetensors_write(const char *path, const lunar_safetensors_entry *entries, int n,
                                     const char *const *meta_keys, const char *const *meta_values,
                                     int nmeta);

/* The same file in memory: *out (malloc'd, the caller frees it) and *len.
 * Errors as lunar_safetensors_write's LUNAR_ERR_ARG ones (name "<memory>"). */
lunar_status lunar_safetensors_serialize(const lunar_safetensors_entry *entries, int n,
                                         const char *const *meta_keys,
                                         const char *const *meta_values, int nmeta, uint8_t **out,
                                         size_t *len);

/* The lunar dtype of a safetensors dtype name ("F32", "BF16", ...: exactly
 * the names lunar_dtype_st_name of lunar/tensor.h gives), -1 if the name is
 * unknown or unsupported (lower-case lunar names included). The other way,
 * and the sizes: lunar_dtype_st_name and lunar_dtype_size (one dtype table,
 * core/tensor.c). */
int lunar_safetensors_dtype_from_name(const char *name);

/* ---- files and directories (core/io/fs.c, POSIX) ---------------------------
 * Every function returns LUNAR_OK, or an error whose message names the path
 * and the system error (LUNAR_ERR_IO; LUNAR_ERR_OOM; LUNAR_ERR_ARG for a NULL
 * or empty path). */

/* One piece of a file for lunar_atomic_write: len bytes at data. */
typedef struct {
    const void *data;
    size_t len;
} lunar_io_part;

/* Writes parts[0..nparts) in order to path atomically: the bytes go to
 * "<path>.tmp.<pid>", which is fsynced, closed and renamed onto path; then
 * path's directory is fsynced (best effort) so the rename is durable. A crash
 * leaves either the old file or the complete new one at path, never a
 * partial one (DESIGN.md invariant). On error the temporary file is removed,
 * path is left as it was, and the message reads "cannot write PATH: <step> of
 * TMP failed: <strerror>" (step: write, fsync, close, rename onto the path)
 * or "cannot write PATH: cannot create TMP: <strerror>". The only writer of
 * files in Lunar: lunar_safetensors_write and lunar.io.write_file use it. */
lunar_status lunar_atomic_write(const char *path, const lunar_io_part *parts, int nparts);

/* fsync of a directory, so renames inside it are durable. A file system that
 * cannot fsync directories (EINVAL) counts as success.
 * Error: "cannot fsync directory PATH: <strerror>". */
lunar_status lunar_fsync_dir(const char *path);

/* Creates path and its missing parents (mode 0755), as mkdir -p; an existing
 * directory is success. Error: "cannot create directory PATH: <strerror>"
 * (ENOTDIR when path exists and is not a directory). */
lunar_status lunar_mkdirs(const char *path);

/* The names in directory path, without "." and "..", sorted by strcmp:
 * *names (malloc'd array of n malloc'd strings; free with lunar_free_names)
 * and *n. Error: "cannot list directory PATH: <strerror>"; *names is then
 * NULL and *n 0. */
lunar_status lunar_listdir(const char *path, char ***names, size_t *n);

/* Frees what lunar_listdir returned (NULL is ignored). */
void lunar_free_names(char **names, size_t n);

typedef enum { LUNAR_PATH_FILE = 0, LUNAR_PATH_DIR, LUNAR_PATH_OTHER } lunar_path_kind;

/* stat(2) of path (following links): its kind and size in bytes (either
 * pointer may be NULL). Error: "cannot stat PATH: <strerror>" (also for a
 * path that does not exist, ENOENT). */
lunar_status lunar_path_stat(const char *path, lunar_path_kind *kind, int64_t *size);

/* Removes a file, or a directory and everything under it (links are removed,
 * never followed). "" and "/" are refused (LUNAR_ERR_ARG). Stops at the first
 * failure: "cannot remove P: <strerror>" with P the entry that failed. */
lunar_status lunar_remove_tree(const char *path);

/* rename(2). Error: "cannot rename FROM to TO: <strerror>". */
lunar_status lunar_rename(const char *from, const char *to);

/* ---- TensorBoard event files (core/io/tfevents.c) --------------------------
 * The files TensorBoard reads (tensorboard.backend.event_processing):
 * TFRecord records (uint64 length LE, uint32 masked CRC32C of the length, the
 * data, uint32 masked CRC32C of the data; masked(c) = ((c >> 15) | (c << 17))
 * + 0xa282ead8) holding Event protobufs (core/io/tfevents.proto: TensorFlow's
 * field numbers, encoded by protobuf-c). Scalars are Summary.Value
 * simple_value (float). Each record is one write(2) to a file opened with
 * O_APPEND, so a crash keeps the records written before it. */
typedef struct lunar_tfevents lunar_tfevents;

/* CRC32C (Castagnoli, reflected, init and final xor 0xffffffff) of len bytes,
 * through ISA-L (crc32_iscsi); "123456789" gives 0xe3069283. */
uint32_t lunar_crc32c(const void *data, size_t len);

/* Creates dir (as mkdir -p) and opens "<dir>/events.out.tfevents.<T>.<host>"
 * for appending (T: wall_time in whole seconds, 10 digits; host:
 * gethostname), then writes the first record Event{wall_time, file_version =
 * "brain.Event:2"}. wall_time: seconds since the Unix epoch (< 0: now,
 * CLOCK_REALTIME; also in lunar_tfevents_scalars). An existing file
 * of that name is appended to (TensorBoard reads both runs' records). NULL on
 * error: LUNAR_ERR_ARG (empty dir), LUNAR_ERR_IO ("cannot create directory
 * DIR: ..." or "cannot open TensorBoard event file PATH: <strerror>"). */
lunar_tfevents *lunar_tfevents_open(const char *dir, double wall_time);

/* Appends one Event{wall_time, step, summary{value{tags[i], values[i]} for i
 * < n}} (n >= 1; tags non-empty UTF-8, values f32, NaN and infinities kept).
 * Errors: LUNAR_ERR_ARG (closed writer, n < 1, an empty tag: the message names
 * the file, the scalar and the step), LUNAR_ERR_IO ("cannot write TensorBoard
 * event file PATH: <strerror>"), LUNAR_ERR_OOM. */
lunar_status lunar_tfevents_scalars(lunar_tfevents *w, int64_t step, double wall_time, const char *const *tags,
                                    const float *values, int n);

/* The file's path (owned by w; NULL for NULL). */
const char *lunar_tfevents_path(const lunar_tfevents *w);

/* Closes the file and frees w (NULL is ignored). */
void lunar_tfevents_close(lunar_tfevents *w);

#ifdef __cplusplus
}
#endif
#endif
