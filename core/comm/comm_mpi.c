/*
 * core/comm/comm_mpi.c: communicators over MPI (comm.h), built when MPI is
 * found (the Makefile compiles core/comm/ with mpicc and -DLUNAR_USE_MPI;
 * comm_single.c is the single-rank build).
 *
 * The world is a duplicate of MPI_COMM_WORLD made at the first
 * lunar_comm_world() (collective), so Lunar's messages never match a user's
 * MPI_COMM_WORLD traffic. Every communicator has MPI_ERRORS_RETURN, every MPI
 * call is checked, and a failure becomes lunar_error("op: comm 'name' (rank r
 * of n): MPI error: <MPI_Error_string>"). Arguments are checked first
 * (comm_common.c), so a size mismatch never reaches MPI.
 *
 * A lunar_request is the MPI_Request plus what finishing needs: AVG's division
 * (the SUM then divided by the size, after the wait) and, for irecv, the
 * count that must have arrived.
 *
 * Tensors on a CUDA device: the collectives go to NCCL (comm_nccl.c), queued on
 * the device's compute stream (their i-forms complete at once: a NULL
 * request); send and recv stage through a host buffer over MPI (the i-forms
 * keep the buffer in the request; irecv copies it to the device at the wait).
 */
#ifdef LUNAR_USE_MPI

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <unistd.h>

#include "internal.h"
#include "lunar/cuda.h"

struct lunar_comm {
    MPI_Comm comm;
    int rank, size;
    int is_world;
    char name[64];
    comm_nccl *nccl;   /* for CUDA tensors, made at the first use (comm_nccl.c) */
};

struct lunar_request {
    MPI_Request req;
    MPI_Status status;
    int done;          /* completed (lunar_request_test saw it) */
    int err;           /* an MPI error code from MPI_Test, reported by the wait */
    /* for messages */
    char op[24];
    char name[64];
    int rank, size;
    /* finishing */
    int avg;           /* divide data[0..n) by size after the SUM */
    void *data;
    int64_t n;
    lunar_dtype dtype;
    int check_count;   /* irecv: exactly n elements of datatype must arrive */
    MPI_Datatype datatype;
    /* point to point of a CUDA tensor: the host staging buffer (freed at the
     * wait) and, for irecv, where it goes on the device */
    void *host;
    void *dev_ptr;
    int dev;
    size_t nbytes;
};

static lunar_comm g_world;
static int g_world_ready;

static int mpi_running(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    return init && !fin;
}

static comm_ctx ctx_of(const lunar_comm *c, const char *op) {
    return (comm_ctx){.op = op, .name = c->name, .rank = c->rank, .size = c->size};
}

/* The message for an MPI error code. */
static lunar_status mpi_fail(const comm_ctx *x, int rc) {
    char s[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) len = snprintf(s, sizeof s, "error code %d", rc);
    s[len < 0 ? 0 : len > MPI_MAX_ERROR_STRING ? MPI_MAX_ERROR_STRING : len] = 0;
    return comm_fail(x, LUNAR_ERR_IO, "MPI error: %s", s);
}

#define MPI_TRY(x, call)                       \
    do {                                       \
        int rc_ = (call);                      \
        if (rc_ != MPI_SUCCESS) return mpi_fail((x), rc_); \
    } while (0)

static MPI_Datatype mpi_type(lunar_dtype d) {
    switch (d) {
    case LUNAR_F32: return MPI_FLOAT;
    case LUNAR_F64: return MPI_DOUBLE;
    case LUNAR_I32: return MPI_INT32_T;
    case LUNAR_I64: return MPI_INT64_T;
    case LUNAR_BF16:
    case LUNAR_F16: return MPI_UINT16_T;
    case LUNAR_U8: return MPI_UINT8_T;
    default: return MPI_DATATYPE_NULL;
    }
}

static MPI_Op mpi_op(lunar_reduce_op op) {
    switch (op) {
    case LUNAR_MAX: return MPI_MAX;
    case LUNAR_MIN: return MPI_MIN;
    default: return MPI_SUM;  /* SUM, and AVG before its division */
    }
}

/* Sets up a new MPI_Comm as a lunar_comm (errors return, rank, size, name). */
static lunar_status adopt(lunar_comm *c, MPI_Comm comm, const char *name, const comm_ctx *x) {
    c->comm = comm;
    snprintf(c->name, sizeof c->name, "%s", name);
    MPI_TRY(x, MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
    MPI_TRY(x, MPI_Comm_rank(comm, &c->rank));
    MPI_TRY(x, MPI_Comm_size(comm, &c->size));
    MPI_Comm_set_name(comm, c->name);  /* for MPI tools; cosmetic */
    return LUNAR_OK;
}

lunar_comm *lunar_comm_world(void) {
    if (g_world_ready) {
        if (!mpi_running()) {
            lunar_error(LUNAR_ERR_ARG, "comm world: MPI has been finalized");
            return NULL;
        }
        return &g_world;
    }
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (!init || fin) {
        lunar_error(LUNAR_ERR_ARG, "comm world: MPI is %s (the host `lunar` initializes it; a C "
                    "program must call MPI_Init first)", fin ? "already finalized" : "not initialized");
        return NULL;
    }
    int wr = 0, ws = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &wr);
    MPI_Comm_size(MPI_COMM_WORLD, &ws);
    comm_ctx x = {.op = "comm world", .name = "world", .rank = wr, .size = ws};
    MPI_Comm dup;
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
    if (rc != MPI_SUCCESS) {
        mpi_fail(&x, rc);
        return NULL;
    }
    if (adopt(&g_world, dup, "world", &x) != LUNAR_OK) {
        MPI_Comm_free(&dup);
        return NULL;
    }
    g_world.is_world = 1;
    g_world_ready = 1;
    return &g_world;
}

int lunar_comm_rank(const lunar_comm *c) { return c ? c->rank : -1; }
int lunar_comm_size(const lunar_comm *c) { return c ? c->size : 0; }
const char *lunar_comm_name(const lunar_comm *c) { return c ? c->name : "(null)"; }

void lunar_comm_set_name(lunar_comm *c, const char *name) {
    if (!c || !name) return;
    snprintf(c->name, sizeof c->name, "%s", name);
    if (mpi_running()) MPI_Comm_set_name(c->comm, c->name);
}

lunar_comm *lunar_comm_split(lunar_comm *c, int color, int key) {
    if (comm_check_comm(c, "split")) return NULL;
    comm_ctx x = ctx_of(c, "split");
    lunar_comm *nc = comm_split_alloc(&x, color, sizeof *nc);
    if (!nc) return NULL;
    MPI_Comm sub;
    int rc = MPI_Comm_split(c->comm, color, key, &sub);
    if (rc != MPI_SUCCESS) {
        mpi_fail(&x, rc);
        free(nc);
        return NULL;
    }
    char name[64];
    snprintf(name, sizeof name, "%.48s/%d", c->name, color);
    if (adopt(nc, sub, name, &x) != LUNAR_OK) {
        MPI_Comm_free(&sub);
        free(nc);
        return NULL;
    }
    return nc;
}

void lunar_comm_free(lunar_comm *c) {
    if (!c || c->is_world) return;
    nccl_free(c->nccl);
    if (mpi_running() && c->comm != MPI_COMM_NULL) MPI_Comm_free(&c->comm);
    free(c);
}

/* ---- blocking collectives ------------------------------------------------------ */

lunar_status lunar_comm_all_reduce(lunar_comm *c, lunar_tensor *t, lunar_reduce_op op) {
    if (comm_check_comm(c, "all_reduce")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "all_reduce");
    if (comm_on_device(t)) return nccl_all_reduce(&c->nccl, c->comm, &x, t, op);
    lunar_status st = comm_check_tensor(&x, t, "x", COMM_REDUCE, op);
    if (st) return st;
    int n = (int)lunar_tensor_numel(t);
    void *p = lunar_tensor_data(t);
    MPI_TRY(&x, MPI_Allreduce(MPI_IN_PLACE, p, n, mpi_type(t->dtype), mpi_op(op), c->comm));
    if (op == LUNAR_AVG) comm_avg_divide(p, n, t->dtype, c->size);
    return LUNAR_OK;
}

lunar_status lunar_comm_reduce_scatter(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                       lunar_reduce_op op) {
    if (comm_check_comm(c, "reduce_scatter")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "reduce_scatter");
    if (comm_on_device(out) || comm_on_device(in)) return nccl_reduce_scatter(&c->nccl, c->comm, &x, out, in, op);
    lunar_status st = comm_check_reduce_scatter(&x, out, in, op);
    if (st) return st;
    int n = (int)lunar_tensor_numel(out);
    void *po = lunar_tensor_data(out);
    MPI_TRY(&x, MPI_Reduce_scatter_block(lunar_tensor_data(in), po, n, mpi_type(in->dtype),
                                         mpi_op(op), c->comm));
    if (op == LUNAR_AVG) comm_avg_divide(po, n, out->dtype, c->size);
    return LUNAR_OK;
}

lunar_status lunar_comm_all_gather(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in) {
    if (comm_check_comm(c, "all_gather")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "all_gather");
    if (comm_on_device(out) || comm_on_device(in)) return nccl_all_gather(&c->nccl, c->comm, &x, out, in);
    int in_place;
    lunar_status st = comm_check_all_gather(&x, out, in, &in_place);
    if (st) return st;
    const void *sendbuf = in_place ? MPI_IN_PLACE : lunar_tensor_data(in);
    int n = (int)lunar_tensor_numel(in);
    MPI_Datatype dt = mpi_type(in->dtype);
    MPI_TRY(&x, MPI_Allgather(sendbuf, n, dt, lunar_tensor_data(out), n, dt, c->comm));
    return LUNAR_OK;
}

lunar_status lunar_comm_broadcast(lunar_comm *c, lunar_tensor *t, int root) {
    if (comm_check_comm(c, "broadcast")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "broadcast");
    if (comm_on_device(t)) return nccl_broadcast(&c->nccl, c->comm, &x, t, root);
    lunar_status st;
    if ((st = comm_check_tensor(&x, t, "x", COMM_MOVE, LUNAR_SUM))) return st;
    if ((st = comm_check_rank(&x, root, "root", 0))) return st;
    MPI_TRY(&x, MPI_Bcast(lunar_tensor_data(t), (int)lunar_tensor_numel(t), mpi_type(t->dtype),
                          root, c->comm));
    return LUNAR_OK;
}

static lunar_status check_p2p(const comm_ctx *x, const lunar_tensor *t, int peer, const char *what,
                              int tag) {
    lunar_status st;
    if (comm_on_device(t)) {   /* staged through the host: the CPU checks but the device */
        if (!lunar_tensor_is_contiguous(t))
            return comm_fail(x, LUNAR_ERR_ARG, "x is not contiguous (use :contiguous())");
        if (lunar_tensor_numel(t) > INT_MAX)
            return comm_fail(x, LUNAR_ERR_ARG, "x has %lld elements (at most %d per call)",
                             (long long)lunar_tensor_numel(t), INT_MAX);
        if (mpi_type(t->dtype) == MPI_DATATYPE_NULL)
            return comm_fail(x, LUNAR_ERR_DTYPE, "x has dtype %s, which cannot be sent", lunar_dtype_name(t->dtype));
    } else if ((st = comm_check_tensor(x, t, "x", COMM_MOVE, LUNAR_SUM))) {
        return st;
    }
    if ((st = comm_check_rank(x, peer, what, 1))) return st;
    return comm_check_tag(x, tag);
}

lunar_status lunar_comm_send(lunar_comm *c, const lunar_tensor *t, int dst, int tag) {
    if (comm_check_comm(c, "send")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "send");
    lunar_status st = check_p2p(&x, t, dst, "dst", tag);
    if (st) return st;
    if (comm_on_device(t)) {   /* through a host buffer */
        size_t nb = lunar_tensor_nbytes(t);
        void *h = malloc(nb ? nb : 1);
        if (!h) return comm_fail(&x, LUNAR_ERR_OOM, "out of host memory for a staging buffer");
        if ((st = lunar_cuda_memcpy(h, LUNAR_CPU, lunar_tensor_data(t), lunar_tensor_device(t), nb))) { free(h); return st; }
        int rc = MPI_Send(h, (int)lunar_tensor_numel(t), mpi_type(t->dtype), dst, tag, c->comm);
        free(h);
        if (rc != MPI_SUCCESS) return mpi_fail(&x, rc);
        return LUNAR_OK;
    }
    MPI_TRY(&x, MPI_Send(lunar_tensor_data(t), (int)lunar_tensor_numel(t), mpi_type(t->dtype), dst,
                         tag, c->comm));
    return LUNAR_OK;
}

/* The count that arrived must be the count expected. */
static lunar_status check_received(const comm_ctx *x, MPI_Status *s, MPI_Datatype dt, int64_t n,
                                   int src, int tag) {
    int got = 0;
    MPI_TRY(x, MPI_Get_count(s, dt, &got));
    if (got != n)
        return comm_fail(x, LUNAR_ERR_SHAPE,
                         "received %d elements from rank %d (tag %d), expected %lld", got, src,
                         tag, (long long)n);
    return LUNAR_OK;
}

lunar_status lunar_comm_recv(lunar_comm *c, lunar_tensor *t, int src, int tag) {
    if (comm_check_comm(c, "recv")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "recv");
    lunar_status st = check_p2p(&x, t, src, "src", tag);
    if (st) return st;
    MPI_Status s;
    int64_t n = lunar_tensor_numel(t);
    MPI_Datatype dt = mpi_type(t->dtype);
    if (comm_on_device(t)) {   /* through a host buffer */
        size_t nb = lunar_tensor_nbytes(t);
        void *h = malloc(nb ? nb : 1);
        if (!h) return comm_fail(&x, LUNAR_ERR_OOM, "out of host memory for a staging buffer");
        int rc = MPI_Recv(h, (int)n, dt, src, tag, c->comm, &s);
        st = rc != MPI_SUCCESS ? mpi_fail(&x, rc) : check_received(&x, &s, dt, n, src, tag);
        if (!st) st = lunar_cuda_memcpy(lunar_tensor_data(t), lunar_tensor_device(t), h, LUNAR_CPU, nb);
        free(h);
        return st;
    }
    MPI_TRY(&x, MPI_Recv(lunar_tensor_data(t), (int)n, dt, src, tag, c->comm, &s));
    return check_received(&x, &s, dt, n, src, tag);
}

lunar_status lunar_comm_barrier(lunar_comm *c) {
    if (comm_check_comm(c, "barrier")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "barrier");
    MPI_TRY(&x, MPI_Barrier(c->comm));
    return LUNAR_OK;
}

/* ---- non-blocking --------------------------------------------------------------- */

static lunar_request *new_request(const comm_ctx *x) {
    lunar_request *r = calloc(1, sizeof *r);
    if (!r) {
        comm_fail(x, LUNAR_ERR_OOM, "out of memory for a request");
        return NULL;
    }
    r->req = MPI_REQUEST_NULL;
    snprintf(r->op, sizeof r->op, "%s", x->op);
    snprintf(r->name, sizeof r->name, "%s", x->name);
    r->rank = x->rank;
    r->size = x->size;
    return r;
}

/* Frees r when the start failed. */
static lunar_status started(lunar_request *r, int rc, const comm_ctx *x, lunar_request **req) {
    if (rc != MPI_SUCCESS) {
        free(r->host);
        free(r);
        return mpi_fail(x, rc);
    }
    *req = r;
    return LUNAR_OK;
}

lunar_status lunar_comm_iall_reduce(lunar_comm *c, lunar_tensor *t, lunar_reduce_op op,
                                    lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "iall_reduce")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "iall_reduce");
    if (!req) return comm_fail(&x, LUNAR_ERR_ARG, "req is NULL");
    if (comm_on_device(t)) return nccl_all_reduce(&c->nccl, c->comm, &x, t, op);   /* stream-ordered: done */
    lunar_status st = comm_check_tensor(&x, t, "x", COMM_REDUCE, op);
    if (st) return st;
    lunar_request *r = new_request(&x);
    if (!r) return lunar_last_status();
    r->data = lunar_tensor_data(t);
    r->n = lunar_tensor_numel(t);
    r->dtype = t->dtype;
    r->avg = op == LUNAR_AVG;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, r->data, (int)r->n, mpi_type(t->dtype), mpi_op(op),
                            c->comm, &r->req);
    return started(r, rc, &x, req);
}

lunar_status lunar_comm_ireduce_scatter(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                        lunar_reduce_op op, lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "ireduce_scatter")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "ireduce_scatter");
    if (!req) return comm_fail(&x, LUNAR_ERR_ARG, "req is NULL");
    if (comm_on_device(out) || comm_on_device(in)) return nccl_reduce_scatter(&c->nccl, c->comm, &x, out, in, op);
    lunar_status st = comm_check_reduce_scatter(&x, out, in, op);
    if (st) return st;
    lunar_request *r = new_request(&x);
    if (!r) return lunar_last_status();
    r->data = lunar_tensor_data(out);
    r->n = lunar_tensor_numel(out);
    r->dtype = out->dtype;
    r->avg = op == LUNAR_AVG;
    int rc = MPI_Ireduce_scatter_block(lunar_tensor_data(in), r->data, (int)r->n,
                                       mpi_type(in->dtype), mpi_op(op), c->comm, &r->req);
    return started(r, rc, &x, req);
}

lunar_status lunar_comm_iall_gather(lunar_comm *c, lunar_tensor *out, const lunar_tensor *in,
                                    lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "iall_gather")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "iall_gather");
    if (!req) return comm_fail(&x, LUNAR_ERR_ARG, "req is NULL");
    if (comm_on_device(out) || comm_on_device(in)) return nccl_all_gather(&c->nccl, c->comm, &x, out, in);
    int in_place;
    lunar_status st = comm_check_all_gather(&x, out, in, &in_place);
    if (st) return st;
    const void *sendbuf = in_place ? MPI_IN_PLACE : lunar_tensor_data(in);
    lunar_request *r = new_request(&x);
    if (!r) return lunar_last_status();
    int n = (int)lunar_tensor_numel(in);
    MPI_Datatype dt = mpi_type(in->dtype);
    int rc = MPI_Iallgather(sendbuf, n, dt, lunar_tensor_data(out), n, dt, c->comm, &r->req);
    return started(r, rc, &x, req);
}

lunar_status lunar_comm_isend(lunar_comm *c, const lunar_tensor *t, int dst, int tag,
                              lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "isend")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "isend");
    if (!req) return comm_fail(&x, LUNAR_ERR_ARG, "req is NULL");
    lunar_status st = check_p2p(&x, t, dst, "dst", tag);
    if (st) return st;
    lunar_request *r = new_request(&x);
    if (!r) return lunar_last_status();
    const void *buf = lunar_tensor_data(t);
    if (comm_on_device(t)) {   /* from a host copy, kept until the wait */
        r->nbytes = lunar_tensor_nbytes(t);
        r->host = malloc(r->nbytes ? r->nbytes : 1);
        if (!r->host) { free(r); return comm_fail(&x, LUNAR_ERR_OOM, "out of host memory for a staging buffer"); }
        if ((st = lunar_cuda_memcpy(r->host, LUNAR_CPU, buf, lunar_tensor_device(t), r->nbytes))) {
            free(r->host);
            free(r);
            return st;
        }
        buf = r->host;
    }
    int rc = MPI_Isend(buf, (int)lunar_tensor_numel(t), mpi_type(t->dtype), dst, tag, c->comm, &r->req);
    return started(r, rc, &x, req);
}

lunar_status lunar_comm_irecv(lunar_comm *c, lunar_tensor *t, int src, int tag, lunar_request **req) {
    if (req) *req = NULL;
    if (comm_check_comm(c, "irecv")) return lunar_last_status();
    comm_ctx x = ctx_of(c, "irecv");
    if (!req) return comm_fail(&x, LUNAR_ERR_ARG, "req is NULL");
    lunar_status st = check_p2p(&x, t, src, "src", tag);
    if (st) return st;
    lunar_request *r = new_request(&x);
    if (!r) return lunar_last_status();
    r->n = lunar_tensor_numel(t);
    r->datatype = mpi_type(t->dtype);
    r->check_count = 1;
    void *buf = lunar_tensor_data(t);
    if (comm_on_device(t)) {   /* into a host buffer, copied to the device at the wait */
        r->nbytes = lunar_tensor_nbytes(t);
        r->host = malloc(r->nbytes ? r->nbytes : 1);
        if (!r->host) { free(r); return comm_fail(&x, LUNAR_ERR_OOM, "out of host memory for a staging buffer"); }
        r->dev_ptr = buf;
        r->dev = lunar_tensor_device(t);
        buf = r->host;
    }
    int rc = MPI_Irecv(buf, (int)r->n, r->datatype, src, tag, c->comm, &r->req);
    return started(r, rc, &x, req);
}

lunar_status lunar_request_wait(lunar_request *r) {
    if (!r) return LUNAR_OK;
    comm_ctx x = {.op = r->op, .name = r->name, .rank = r->rank, .size = r->size};
    lunar_status st = LUNAR_OK;
    int rc = r->err;
    if (rc == MPI_SUCCESS && !r->done) {
        if (!mpi_running()) {
            st = comm_fail(&x, LUNAR_ERR_ARG, "wait after MPI was finalized");
            free(r->host);
            free(r);
            return st;
        }
        rc = MPI_Wait(&r->req, &r->status);
    }
    if (rc != MPI_SUCCESS) {
        st = mpi_fail(&x, rc);
    } else if (r->check_count) {
        st = check_received(&x, &r->status, r->datatype, r->n, r->status.MPI_SOURCE,
                            r->status.MPI_TAG);
        if (!st && r->dev_ptr) st = lunar_cuda_memcpy(r->dev_ptr, r->dev, r->host, LUNAR_CPU, r->nbytes);
    } else if (r->avg) {
        comm_avg_divide(r->data, r->n, r->dtype, r->size);
    }
    free(r->host);
    free(r);
    return st;
}

int lunar_request_test(lunar_request *r) {
    if (!r) return 1;
    if (r->done || r->err) return 1;
    if (!mpi_running()) return 1;  /* the wait reports it */
    int flag = 0;
    int rc = MPI_Test(&r->req, &flag, &r->status);
    if (rc != MPI_SUCCESS) {
        r->err = rc;
        return 1;
    }
    if (flag) r->done = 1;
    return flag;
}

lunar_status lunar_comm_init(int *argc, char ***argv, lunar_comm_process *p) {
    lunar_comm_process me = {.rank = 0, .size = 1, .local_rank = 0, .thread_funneled = 1};
    int init = 0, provided = MPI_THREAD_FUNNELED;
    MPI_Initialized(&init);
    if (!init) {
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return lunar_error(LUNAR_ERR_IO, "MPI_Init_thread failed (error %d)", rc);
    } else {
        MPI_Query_thread(&provided);
    }
    me.thread_funneled = provided >= MPI_THREAD_FUNNELED;
    MPI_Comm_rank(MPI_COMM_WORLD, &me.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &me.size);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, me.rank, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_rank(local, &me.local_rank);
        MPI_Comm_free(&local);
    }
    if (p) *p = me;
    return LUNAR_OK;
}

void lunar_comm_finalize(void) {
    if (mpi_running()) MPI_Finalize();
}

#define LUNAR_STR_(x) #x
#define LUNAR_STR(x) LUNAR_STR_(x)
const char *lunar_comm_backend(void) {
#if defined(OMPI_MAJOR_VERSION)
    return "Open MPI " LUNAR_STR(OMPI_MAJOR_VERSION) "." LUNAR_STR(OMPI_MINOR_VERSION) "." LUNAR_STR(
        OMPI_RELEASE_VERSION);
#else
    return "MPI " LUNAR_STR(MPI_VERSION) "." LUNAR_STR(MPI_SUBVERSION);
#endif
}

void lunar_comm_abort(int code) {
    fflush(stdout);
    fflush(stderr);
    if (mpi_running()) MPI_Abort(MPI_COMM_WORLD, code);
    _exit(code);
}

#else
typedef int lunar_comm_mpi_not_built_;  /* NO_MPI: see comm_single.c */
#endif
