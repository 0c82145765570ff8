/*
 * core/comm/internal.h: what comm_mpi.c and comm_single.c share
 * (comm_common.c): argument checks and messages, AVG's division.
 */
#ifndef LUNAR_COMM_INTERNAL_H
#define LUNAR_COMM_INTERNAL_H

#include "lunar/comm.h"

/* Who is failing, for messages: "op: comm 'name' (rank r of n): ..." */
typedef struct {
    const char *op;
    const char *name;
    int rank, size;
} comm_ctx;

/* What a tensor argument is used for. */
typedef enum {
    COMM_MOVE,    /* moved as bytes (gather, broadcast, p2p): every dtype */
    COMM_REDUCE,  /* reduced with an op: f32, f64, i32, i64 (AVG: f32, f64) */
} comm_use;

/* Records the message "op: comm 'name' (rank r of n): <fmt>" and returns st. */
lunar_status comm_fail(const comm_ctx *x, lunar_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks that c is not NULL (message names the op). */
lunar_status comm_check_comm(const lunar_comm *c, const char *op);

/* Checks a tensor argument (`what`: "x", "in", "out"): not NULL, not
 * released, on the CPU, contiguous, at most INT_MAX elements, a dtype that
 * `use` takes (and `op` for COMM_REDUCE). */
lunar_status comm_check_tensor(const comm_ctx *x, const lunar_tensor *t, const char *what,
                               comm_use use, lunar_reduce_op op);

/* out and in have the same dtype. */
lunar_status comm_check_same_dtype(const comm_ctx *x, const lunar_tensor *out, const lunar_tensor *in);

/* numel(big) == size * numel(small), else "<big_name> has N elements,
 * expected size * <small_name> = size * n = M". */
lunar_status comm_check_blocks(const comm_ctx *x, const lunar_tensor *big, const char *big_name,
                               const lunar_tensor *small, const char *small_name);

/* 1 when the byte ranges of a and b overlap. */
int comm_overlap(const lunar_tensor *a, const lunar_tensor *b);

/* reduce_scatter's arguments (every backend): in and out reducible tensors
 * of one dtype, numel(in) == size * numel(out), no overlap. */
lunar_status comm_check_reduce_scatter(const comm_ctx *x, lunar_tensor *out, const lunar_tensor *in,
                                       lunar_reduce_op op);

/* all_gather's arguments (every backend): one dtype, numel(out) == size *
 * numel(in); in may overlap out only as exactly block `rank` of out, the
 * in-place form (*in_place = 1 then, else 0). */
lunar_status comm_check_all_gather(const comm_ctx *x, lunar_tensor *out, const lunar_tensor *in, int *in_place);

/* split's common start (every backend): a negative color is an error;
 * otherwise a zeroed communicator of `size` bytes (NULL and an error when
 * memory runs out). */
void *comm_split_alloc(const comm_ctx *x, int color, size_t size);

/* A rank argument in [0, size) (`what`: "root", "dst", "src"), and for
 * point to point not the caller's own rank. */
lunar_status comm_check_rank(const comm_ctx *x, int r, const char *what, int not_self);
lunar_status comm_check_tag(const comm_ctx *x, int tag);

/* data[0..n) /= size, for f32 / f64 (AVG after SUM). */
void comm_avg_divide(void *data, int64_t n, lunar_dtype dtype, int size);

const char *comm_op_name(lunar_reduce_op op);
int comm_op_valid(lunar_reduce_op op);

/* 1 when t is a live tensor on a CUDA device (its collective goes to NCCL). */
static inline int comm_on_device(const lunar_tensor *t) {
    return t && t->storage && t->storage->device >= 0;
}

#ifdef LUNAR_USE_MPI
#include <mpi.h>
/* NCCL for CUDA tensors (comm_nccl.c): the NCCL communicator of an MPI
 * communicator is created in *slot at its first use (collective). Each checks
 * its arguments as comm_mpi.c does, then queues the collective on the
 * device's compute stream. */
typedef struct comm_nccl comm_nccl;
lunar_status nccl_all_reduce(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *t, lunar_reduce_op op);
lunar_status nccl_reduce_scatter(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *out,
                                 const lunar_tensor *in, lunar_reduce_op op);
lunar_status nccl_all_gather(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *out,
                             const lunar_tensor *in);
lunar_status nccl_broadcast(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *t, int root);
void nccl_free(comm_nccl *n);
#endif

#endif
