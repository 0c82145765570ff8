/*
 * core/comm/comm_single.c: the communicator of a build without MPI
 * (make NO_MPI=1, or no mpicc): a world of one rank. Collectives are the
 * identity (all_reduce, broadcast from root 0; AVG divides by 1) or a copy
 * (all_gather, reduce_scatter: out = in), after the same argument checks as
 * comm_mpi.c, so code that is wrong at any size fails here too. Point to
 * point has no peer: send/recv (and isend/irecv) are errors naming the op.
 * Non-blocking forms complete at once and return a NULL request.
 * lunar_comm_init refuses to start when a launcher (mpirun, srun) started
 * several processes of this build (comm.h).
 */
#ifndef LUNAR_USE_MPI

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

struct lunar_comm {
    int is_world;
    char name[64];
};

static lunar_comm g_world = {.is_world = 1, .name = "world"};

static comm_ctx ctx_of(const lunar_comm *c, const char *op) {
    return (comm_ctx){.op = op, .name = c->name, .rank = 0, .size = 1};
}

lunar_comm *lunar_comm_world(void) { return &g_world; }
int lunar_comm_rank(const lunar_comm *c) { return c ? 0 : -1; }
int lunar_comm_size(const lunar_comm *c) { return c ? 1 : 0; }
const char *lunar_comm_name(const lunar_comm *c) { return c ? c->name : "(null)"; }

void lunar_comm_set_name(lunar_comm *c, const char *name) {
    if (c && name) snprintf(c->name, sizeof c->name, "%s", name);
}

lunar_comm *lunar_comm_split(lunar_comm *c, int color, int key) {
    if (comm_check_comm(c, "split")) return NULL;
    comm_ctx x = ctx_of(c, "split");
    lunar_comm *nc = comm_split_alloc(&x, color, sizeof *nc);
    if (!nc) return NULL;
    snprintf(nc->name, sizeof nc->name, "%.48s/%d", c->name, color);
    return nc;
}

void lunar_comm_free(lunar_comm *c) {
    if (c && !c->is_world) free(c);
}

lunar_status lunar_comm_all_reduce(lunar_comm *c, lunar_tensor *t, lunar_reduce_op op) {
    if (comm_check_comm(c, "all_reduce")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "all_reduce");
    return comm_check_tensor(&x, t, "x", COMM_REDUCE, op);  /* the sum over one rank */
}

static lunar_status copy_bytes(lunar_tensor *out, const lunar_tensor *in) {
    void *po = lunar_tensor_data(out);
    const void *pi = lunar_tensor_data(in);
    if (po != pi) memmove(po, pi, lunar_tensor_nbytes(in));
    return LUNAR_OK;
}

lunar_status lunar_comm_reduce_scatter(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                       lunar_reduce_op op) {
    if (comm_check_comm(c, "reduce_scatter")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "reduce_scatter");
    lunar_status st = comm_check_reduce_scatter(&x, out, in, op);
    return st ? st : copy_bytes(out, in);
}

lunar_status lunar_comm_all_gather(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in) {
    if (comm_check_comm(c, "all_gather")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "all_gather");
    int in_place;
    lunar_status st = comm_check_all_gather(&x, out, in, &in_place);
    return st ? st : copy_bytes(out, in);
}

lunar_status lunar_comm_broadcast(lunar_comm *c, lunar_tensor *t, int root) {
    if (comm_check_comm(c, "broadcast")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "broadcast");
    lunar_status st;
    if ((st = comm_check_tensor(&x, t, "x", COMM_MOVE, LUNAR_SUM))) return st;
    return comm_check_rank(&x, root, "root", 0);
}

/* Point to point: checked like comm_mpi.c, so the peer (the only rank, 0)
 * is always this rank and refused, naming the op. */
static lunar_status p2p(lunar_comm *c, const char *op, const lunar_tensor *t, int peer,
                        const char *what, int tag) {
    if (comm_check_comm(c, op)) return lunar_last_status();
    comm_ctx x = ctx_of(c, op);
    lunar_status st;
    if ((st = comm_check_tensor(&x, t, "x", COMM_MOVE, LUNAR_SUM))) return st;
    if ((st = comm_check_rank(&x, peer, what, 1))) return st;
    return comm_check_tag(&x, tag);
}

lunar_status lunar_comm_send(lunar_comm *c, const lunar_tensor *t, int dst, int tag) {
    return p2p(c, "send", t, dst, "dst", tag);
}

lunar_status lunar_comm_recv(lunar_comm *c, lunar_tensor *t, int src, int tag) {
    return p2p(c, "recv", t, src, "src", tag);
}

lunar_status lunar_comm_barrier(lunar_comm *c) {
    if (comm_check_comm(c, "barrier")) return lunar_last_status();
    return LUNAR_OK;
}

lunar_status lunar_comm_iall_reduce(lunar_comm *c, lunar_tensor *t, lunar_reduce_op op,
                                    lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "iall_reduce")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "iall_reduce");
    return comm_check_tensor(&x, t, "x", COMM_REDUCE, op);
}

lunar_status lunar_comm_ireduce_scatter(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                        lunar_reduce_op op, lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "ireduce_scatter")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "ireduce_scatter");
    lunar_status st = comm_check_reduce_scatter(&x, out, in, op);
    return st ? st : copy_bytes(out, in);
}

lunar_status lunar_comm_iall_gather(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                    lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "iall_gather")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "iall_gather");
    int in_place;
    lunar_status st = comm_check_all_gather(&x, out, in, &in_place);
    return st ? st : copy_bytes(out, in);
}

lunar_status lunar_comm_isend(lunar_comm *c, const lunar_tensor *t, int dst, int tag,
                              lunar_request **req) {
    if (req) *req = NULL;
    return p2p(c, "isend", t, dst, "dst", tag);
}

lunar_status lunar_comm_irecv(lunar_comm *c, lunar_tensor *t, int src, int tag, lunar_request **req) {
    if (req) *req = NULL;
    return p2p(c, "irecv", t, src, "src", tag);
}

/* No request is ever made: every non-blocking op completed at once. */
lunar_status lunar_request_wait(lunar_request *req) { return LUNAR_OK; }
int lunar_request_test(lunar_request *req) { return 1; }

/* A launcher's "number of processes" variables: a single-rank build started
 * by one of them would run N independent jobs, each believing it is alone. */
static const char *const launcher_size_vars[] = {
    "OMPI_COMM_WORLD_SIZE",  /* Open MPI's mpirun */
    "PMI_SIZE",              /* PMI-1/2 launchers: MPICH's hydra, srun --mpi=pmi2 */
    "PMIX_SIZE",             /* some PMIx launchers */
    "MPI_LOCALNRANKS",       /* MPICH's hydra */
    "SLURM_STEP_NUM_TASKS",  /* srun (set in a job step, not in the batch script) */
};

lunar_status lunar_comm_init(int *argc, char ***argv, lunar_comm_process *p) {
    for (size_t i = 0; i < sizeof launcher_size_vars / sizeof launcher_size_vars[0]; i++) {
        const char *v = getenv(launcher_size_vars[i]);
        long n = v && *v ? strtol(v, NULL, 10) : 0;
        if (n > 1)
            return lunar_error(LUNAR_ERR_ARG,
                               "this lunar was built without MPI (a single-rank build: make NO_MPI=1, "
                               "or mpicc was missing at build time) but was started as one of %ld "
                               "processes (%s=%s): each would run the job alone. Rebuild with MPI "
                               "(Open MPI installed: scripts/install_deps.sh, then make), or run it "
                               "without a launcher", n, launcher_size_vars[i], v);
    }
    if (p) *p = (lunar_comm_process){.rank = 0, .size = 1, .local_rank = 0, .thread_funneled = 1};
    return LUNAR_OK;
}

void lunar_comm_finalize(void) {}

const char *lunar_comm_backend(void) { return "no"; }

void lunar_comm_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

#else
typedef int lunar_comm_single_not_built_;  /* MPI build: see comm_mpi.c */
#endif
