/*
 * lunar/comm.h: communicators and collectives on tensors (DESIGN.md "Comm").
 *
 * A communicator is a group of ranks (an MPI_Comm underneath when built with
 * LUNAR_USE_MPI: core/comm/comm_mpi.c; without MPI, core/comm/comm_single.c:
 * only the world of one rank exists and every collective is the identity or
 * a copy). Ranks are 0-based MPI ranks everywhere in this API.
 *
 * Tensors: contiguous, on the CPU, of one dtype. Reductions (all_reduce,
 * reduce_scatter, SUM/MAX/MIN) take f32, f64, i32, i64; AVG (the SUM divided
 * by the size) only f32 and f64. all_gather, broadcast and send/recv also take
 * bf16, f16 (moved as 16-bit words) and u8. The dtype map is f32 MPI_FLOAT,
 * f64 MPI_DOUBLE, i32 MPI_INT32_T, i64 MPI_INT64_T, bf16/f16 MPI_UINT16_T,
 * u8 MPI_UINT8_T; at most INT_MAX elements per call.
 *
 * Errors: every function checks its arguments (dtype, layout, and that the
 * sizes fit: out = size * in for all_gather, in = size * out for
 * reduce_scatter, equal dtypes) before any MPI call, and every MPI call is
 * checked (the communicators use MPI_ERRORS_RETURN). A failure returns a
 * lunar_status and leaves a message (status.h) of the form
 *     "all_gather: comm 'world' (rank 2 of 4): out has 10 elements, expected
 *      size * in = 4 * 3 = 12"
 *     "recv: comm 'world' (rank 1 of 4): MPI error: MPI_ERR_TRUNCATE: ..."
 * naming the op, the communicator, the rank, and the sizes or MPI's error
 * string. The checks are local: ranks that disagree about sizes they each
 * find valid are not detected (MPI may report truncation, or hang).
 * Reductions are deterministic for a fixed communicator size (Open MPI's ob1
 * collectives reduce in a fixed order).
 *
 * Blocking and non-blocking forms: lunar_comm_iall_reduce and friends return
 * a request to pass to lunar_request_wait (MPI_Iallreduce etc.); the tensors
 * must stay alive and untouched until the wait returns (the Lua bindings keep
 * references to them). Point to point to the calling rank itself is refused
 * (a blocking send to self could deadlock).
 *
 * Threads: MPI is initialized MPI_THREAD_FUNNELED (lunar_comm_init), so call these
 * only from the main thread.
 *
 * Sources: the MPI 3.1 standard (collectives, MPI_Comm_split); the group
 * layout in lunar/parallel follows Megatron-LM's parallel_state.
 */
#ifndef LUNAR_COMM_H
#define LUNAR_COMM_H

#include "lunar/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lunar_comm lunar_comm;
typedef struct lunar_request lunar_request;

typedef enum { LUNAR_SUM = 0, LUNAR_AVG, LUNAR_MAX, LUNAR_MIN } lunar_reduce_op;

/* The world communicator (every rank of the job), named "world". Never freed
 * by the caller. With MPI it is a duplicate of MPI_COMM_WORLD (made at the
 * first call, which is therefore collective: call it on every rank), so
 * Lunar's traffic never matches a user's MPI_COMM_WORLD traffic. With MPI,
 * NULL with an error when MPI is not initialized (or already finalized). */
lunar_comm *lunar_comm_world(void);

/* Rank of the caller in `c` and the size of `c`. */
int lunar_comm_rank(const lunar_comm *c);
int lunar_comm_size(const lunar_comm *c);
/* A name for messages ("world", "tensor", ...), settable. */
const char *lunar_comm_name(const lunar_comm *c);
void lunar_comm_set_name(lunar_comm *c, const char *name);

/* MPI_Comm_split: ranks with the same color (>= 0) form a group, ordered by
 * key (ties by rank in c). Collective over `c`. Named "<c's name>/<color>"
 * until set. NULL with an error on failure. */
lunar_comm *lunar_comm_split(lunar_comm *c, int color, int key);
/* Frees a communicator from lunar_comm_split (the world is ignored). */
void lunar_comm_free(lunar_comm *c);

/* In place: every rank's x becomes the reduction over ranks (AVG divides the
 * sum by the size; f32/f64 only). */
lunar_status lunar_comm_all_reduce(lunar_comm *c, lunar_tensor *x, lunar_reduce_op op);
/* in: size * n elements on every rank; out: n elements; out on rank r is the
 * reduction over ranks of the r-th block of in (MPI_Reduce_scatter_block).
 * out must not overlap in. */
lunar_status lunar_comm_reduce_scatter(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                       lunar_reduce_op op);
/* in: n elements; out: size * n elements, block r from rank r (rank order).
 * In place when in is exactly block `rank` of out (a ZeRO shard of a flat
 * buffer); any other overlap is an error. */
lunar_status lunar_comm_all_gather(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in);
/* In place: x of rank `root` (0-based) is copied to every rank's x. */
lunar_status lunar_comm_broadcast(lunar_comm *c, lunar_tensor *x, int root);
/* Point to point, blocking (tags >= 0 distinguish concurrent messages). recv
 * checks that exactly numel(x) elements arrived. dst/src != own rank. */
lunar_status lunar_comm_send(lunar_comm *c, const lunar_tensor *x, int dst, int tag);
lunar_status lunar_comm_recv(lunar_comm *c, lunar_tensor *x, int src, int tag);
lunar_status lunar_comm_barrier(lunar_comm *c);

/* Non-blocking forms; *req receives a request (NULL when the op completed at
 * once, e.g. on a communicator of one rank). */
lunar_status lunar_comm_iall_reduce(lunar_comm *c, lunar_tensor *x, lunar_reduce_op op, lunar_request **req);
lunar_status lunar_comm_ireduce_scatter(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                        lunar_reduce_op op, lunar_request **req);
lunar_status lunar_comm_iall_gather(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in, lunar_request **req);
lunar_status lunar_comm_isend(lunar_comm *c, const lunar_tensor *x, int dst, int tag, lunar_request **req);
lunar_status lunar_comm_irecv(lunar_comm *c, lunar_tensor *x, int src, int tag, lunar_request **req);
/* Waits for a request, finishes it (AVG's division happens here) and frees
 * it. NULL is a no-op. */
lunar_status lunar_request_wait(lunar_request *req);
/* 1 when the request has completed (it still must be waited on), else 0.
 * NULL counts as completed; an MPI error counts as completed and is reported
 * by the wait. */
int lunar_request_test(lunar_request *req);

/* ---- the process in the job (the host `lunar` calls these; a C program
 * that does not call MPI_Init itself may too) ------------------------------ */

/* Where this process runs: filled by lunar_comm_init. */
typedef struct {
    int rank, size;      /* in the world */
    int local_rank;      /* among the world's ranks on this node (MPI_COMM_TYPE_SHARED) */
    int thread_funneled; /* 1 when MPI provides MPI_THREAD_FUNNELED or more (always 1 without MPI) */
} lunar_comm_process;

/* Starts the communication layer once per process, before any other call of
 * this header: MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED) with MPI (a
 * singleton run without mpirun is a world of one), then the rank, size and
 * local rank into *p. argc/argv may be NULL. Helper threads MPI starts
 * inherit the caller's signal mask (the host blocks its fatal signals around
 * this call so they reach the main thread).
 * Without MPI (comm_single.c): a world of one rank, unless the environment
 * shows that a launcher started several processes (OMPI_COMM_WORLD_SIZE,
 * PMI_SIZE, PMIX_SIZE, MPI_LOCALNRANKS or SLURM_STEP_NUM_TASKS greater than 1):
 * then LUNAR_ERR_ARG, "this lunar was built without MPI (a single-rank
 * build) but was started as one of N processes (VAR=N): ...", so
 * `mpirun -np 2` of a single-rank build fails instead of running two
 * independent jobs. LUNAR_ERR_IO when MPI_Init_thread fails. */
lunar_status lunar_comm_init(int *argc, char ***argv, lunar_comm_process *p);

/* Ends the communication layer (MPI_Finalize) if it is running; a no-op
 * otherwise (before init, after finalize, without MPI). Every rank calls it
 * at a normal exit. */
void lunar_comm_finalize(void);

/* What the layer is built on, for `lunar --version`: "Open MPI 4.1.4",
 * "MPI 3.1" for another MPI, or "no" for a single-rank build. A static string. */
const char *lunar_comm_backend(void);

/* Ends the whole job from any rank: prints nothing, flushes stdio, calls
 * MPI_Abort on MPI_COMM_WORLD (or _exit without MPI, or when MPI is not
 * running) with `code`. For the host's fatal paths only. */
void lunar_comm_abort(int code);

#ifdef __cplusplus
}
#endif
#endif
