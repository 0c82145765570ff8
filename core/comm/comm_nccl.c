/*
 * core/comm/comm_nccl.c: collectives on CUDA tensors through NCCL, behind the
 * same lunar_comm API as the MPI ones (comm.h; comm_mpi.c sends a call here
 * when its tensors are on a CUDA device). Built with MPI and the CUDA backend;
 * otherwise the functions below only say that NCCL is not in this build.
 *
 * Bootstrap (llm.c's multi_gpu_config_init): the first collective on CUDA
 * tensors of a communicator creates its NCCL communicator, collectively: rank
 * 0 of the MPI communicator draws an ncclUniqueId, MPI_Bcast hands it to the
 * others, and every rank calls ncclCommInitRank with the device of its tensor
 * current. The NCCL communicator stays bound to that device.
 *
 * Stream order: NCCL runs on the device's compute stream (lunar/cuda.h), after
 * the kernels that produced the data and before those that use the result, so
 * a collective returns once queued: nothing waits for the host, and memory
 * freed after it is reused only by later work on the same stream. The
 * non-blocking forms therefore complete at once (a NULL request). AVG is
 * ncclAvg (sum scaled by 1/size inside NCCL; bitwise it may differ from the
 * MPI path's sum-then-divide).
 *
 * Point to point (send, recv and their i-forms) of CUDA tensors does not use
 * NCCL, whose communicator creation needs every rank of the communicator: it
 * stages through host memory over MPI (comm_mpi.c), correct but not fast.
 *
 * libnccl.so.2 is opened with dlopen at the first use: it is ~200 MB, and
 * linking it would slow down every start of lunar.
 */
#include "internal.h"

#if defined(LUNAR_USE_MPI) && defined(LUNAR_USE_CUDA)

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nccl.h>

#include "lunar/cuda.h"

static struct {
    __typeof__(&ncclGetUniqueId) get_unique_id;
    __typeof__(&ncclCommInitRank) init_rank;
    __typeof__(&ncclCommDestroy) destroy;
    __typeof__(&ncclAllReduce) all_reduce;
    __typeof__(&ncclReduceScatter) reduce_scatter;
    __typeof__(&ncclAllGather) all_gather;
    __typeof__(&ncclBroadcast) broadcast;
    __typeof__(&ncclGetErrorString) error_string;
} nc;
static int nc_ok;
static char nc_error[320];
static pthread_once_t nc_once = PTHREAD_ONCE_INIT;

static void *sym(void *h, const char *name) {
    void *p = dlsym(h, name);
    if (!p && !nc_error[0]) snprintf(nc_error, sizeof nc_error, "NCCL: symbol %s not found in libnccl.so.2", name);
    return p;
}

static void nc_load(void) {
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(nc_error, sizeof nc_error, "NCCL not available: dlopen(libnccl.so.2): %s", e ? e : "?");
        return;
    }
    *(void **)&nc.get_unique_id = sym(h, "ncclGetUniqueId");
    *(void **)&nc.init_rank = sym(h, "ncclCommInitRank");
    *(void **)&nc.destroy = sym(h, "ncclCommDestroy");
    *(void **)&nc.all_reduce = sym(h, "ncclAllReduce");
    *(void **)&nc.reduce_scatter = sym(h, "ncclReduceScatter");
    *(void **)&nc.all_gather = sym(h, "ncclAllGather");
    *(void **)&nc.broadcast = sym(h, "ncclBroadcast");
    *(void **)&nc.error_string = sym(h, "ncclGetErrorString");
    nc_ok = !nc_error[0];
}

struct comm_nccl {
    ncclComm_t comm;
    int device;
};

#define NCCL_TRY(x, call)                                                                          \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess)                                                                     \
            return comm_fail((x), LUNAR_ERR_IO, "NCCL error: %s (%s:%d: %s)", nc.error_string(r_),  \
                             __FILE__, __LINE__, #call);                                           \
    } while (0)

static int nccl_type(lunar_dtype d, ncclDataType_t *t) {
    switch (d) {
    case LUNAR_F32: *t = ncclFloat32; return 1;
    case LUNAR_F64: *t = ncclFloat64; return 1;
    case LUNAR_I32: *t = ncclInt32; return 1;
    case LUNAR_I64: *t = ncclInt64; return 1;
    case LUNAR_BF16: *t = ncclBfloat16; return 1;
    case LUNAR_F16: *t = ncclFloat16; return 1;
    case LUNAR_U8: *t = ncclUint8; return 1;
    default: return 0;
    }
}

static ncclRedOp_t nccl_op(lunar_reduce_op op) {
    switch (op) {
    case LUNAR_AVG: return ncclAvg;
    case LUNAR_MAX: return ncclMax;
    case LUNAR_MIN: return ncclMin;
    default: return ncclSum;
    }
}

/* A CUDA tensor argument: contiguous, a dtype NCCL moves (and reduces). */
static lunar_status check_dev(const comm_ctx *x, const lunar_tensor *t, const char *what, comm_use use,
                              lunar_reduce_op op) {
    if (!t) return comm_fail(x, LUNAR_ERR_ARG, "%s is NULL", what);
    if (!t->storage) return comm_fail(x, LUNAR_ERR_ARG, "%s was released (freed)", what);
    if (lunar_tensor_device(t) < 0)
        return comm_fail(x, LUNAR_ERR_DEVICE, "%s is on the cpu and another tensor on a CUDA device: the "
                         "tensors of a collective are all on the CPU (MPI) or all on one CUDA device (NCCL)", what);
    if (!lunar_tensor_is_contiguous(t))
        return comm_fail(x, LUNAR_ERR_ARG, "%s is not contiguous (use :contiguous())", what);
    ncclDataType_t nt;
    if (!nccl_type(t->dtype, &nt))
        return comm_fail(x, LUNAR_ERR_DTYPE, "%s has dtype %s, which NCCL does not take", what,
                         lunar_dtype_name(t->dtype));
    if (use == COMM_REDUCE) {
        if (!comm_op_valid(op)) return comm_fail(x, LUNAR_ERR_ARG, "bad reduce op %d", (int)op);
        int fl = t->dtype == LUNAR_F32 || t->dtype == LUNAR_F64 || t->dtype == LUNAR_BF16 || t->dtype == LUNAR_F16;
        if (!fl && t->dtype != LUNAR_I32 && t->dtype != LUNAR_I64)
            return comm_fail(x, LUNAR_ERR_DTYPE, "%s has dtype %s, which cannot be reduced (f32, f64, bf16, "
                             "f16, i32, i64)", what, lunar_dtype_name(t->dtype));
        if (op == LUNAR_AVG && !fl)
            return comm_fail(x, LUNAR_ERR_DTYPE, "op 'avg' needs a floating dtype, %s has %s; use 'sum'", what,
                             lunar_dtype_name(t->dtype));
    }
    return LUNAR_OK;
}

static lunar_status same_device(const comm_ctx *x, const lunar_tensor *a, const lunar_tensor *b) {
    int da = lunar_tensor_device(a), db = lunar_tensor_device(b);
    if (da == db) return LUNAR_OK;
    return comm_fail(x, LUNAR_ERR_DEVICE, "out is on %s%d and in on %s%d; both must be on one CUDA device",
                     da < 0 ? "cpu" : "cuda:", da < 0 ? 0 : da, db < 0 ? "cpu" : "cuda:", db < 0 ? 0 : db);
}

/* The NCCL communicator of an MPI communicator on `device`, created
 * collectively on first use; sets the device current. */
static lunar_status get_comm(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, int device, ncclComm_t *out) {
    pthread_once(&nc_once, nc_load);
    if (!nc_ok) return comm_fail(x, LUNAR_ERR_DEVICE, "%s", nc_error);
    if (lunar_cuda_set_device(device)) return comm_fail(x, LUNAR_ERR_DEVICE, "%s", lunar_last_error());
    if (*slot) {
        if ((*slot)->device != device)
            return comm_fail(x, LUNAR_ERR_DEVICE, "the tensor is on cuda:%d but this communicator's NCCL "
                             "communicator was made on cuda:%d", device, (*slot)->device);
        *out = (*slot)->comm;
        return LUNAR_OK;
    }
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (x->rank == 0) NCCL_TRY(x, nc.get_unique_id(&id));
    int rc = MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, mc);
    if (rc != MPI_SUCCESS) return comm_fail(x, LUNAR_ERR_IO, "MPI error %d broadcasting the NCCL id", rc);
    comm_nccl *n = calloc(1, sizeof *n);
    if (!n) return comm_fail(x, LUNAR_ERR_OOM, "out of memory");
    ncclResult_t r = nc.init_rank(&n->comm, x->size, id, x->rank);
    if (r != ncclSuccess) {
        free(n);
        return comm_fail(x, LUNAR_ERR_IO, "NCCL error at %s:%d: ncclCommInitRank(%d ranks, rank %d, cuda:%d): %s",
                         __FILE__, __LINE__, x->size, x->rank, device, nc.error_string(r));
    }
    n->device = device;
    *slot = n;
    *out = n->comm;
    return LUNAR_OK;
}

static cudaStream_t stream_of(int device) { return (cudaStream_t)lunar_cuda_stream(device); }

lunar_status nccl_all_reduce(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *t, lunar_reduce_op op) {
    lunar_status st = check_dev(x, t, "x", COMM_REDUCE, op);
    if (st) return st;
    ncclComm_t comm;
    int dev = lunar_tensor_device(t);
    if ((st = get_comm(slot, mc, x, dev, &comm))) return st;
    ncclDataType_t nt;
    nccl_type(t->dtype, &nt);
    void *p = lunar_tensor_data(t);
    NCCL_TRY(x, nc.all_reduce(p, p, (size_t)lunar_tensor_numel(t), nt, nccl_op(op), comm, stream_of(dev)));
    return LUNAR_OK;
}

lunar_status nccl_reduce_scatter(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *out,
                                 const lunar_tensor *in, lunar_reduce_op op) {
    lunar_status st;
    if ((st = check_dev(x, in, "in", COMM_REDUCE, op)) || (st = check_dev(x, out, "out", COMM_REDUCE, op)) ||
        (st = same_device(x, out, in)) || (st = comm_check_same_dtype(x, out, in)) ||
        (st = comm_check_blocks(x, in, "in", out, "out")))
        return st;
    if (comm_overlap(out, in)) return comm_fail(x, LUNAR_ERR_ARG, "out overlaps in");
    ncclComm_t comm;
    int dev = lunar_tensor_device(in);
    if ((st = get_comm(slot, mc, x, dev, &comm))) return st;
    ncclDataType_t nt;
    nccl_type(in->dtype, &nt);
    NCCL_TRY(x, nc.reduce_scatter(lunar_tensor_data(in), lunar_tensor_data(out), (size_t)lunar_tensor_numel(out), nt,
                                  nccl_op(op), comm, stream_of(dev)));
    return LUNAR_OK;
}

lunar_status nccl_all_gather(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *out,
                             const lunar_tensor *in) {
    lunar_status st;
    if ((st = check_dev(x, in, "in", COMM_MOVE, LUNAR_SUM)) || (st = check_dev(x, out, "out", COMM_MOVE, LUNAR_SUM)) ||
        (st = same_device(x, out, in)) || (st = comm_check_same_dtype(x, out, in)) ||
        (st = comm_check_blocks(x, out, "out", in, "in")))
        return st;
    if (comm_overlap(out, in)) {   /* NCCL's in-place form: in is block `rank` of out */
        const char *own = (const char *)lunar_tensor_data(out) + (size_t)x->rank * lunar_tensor_nbytes(in);
        if ((const char *)lunar_tensor_data(in) != own)
            return comm_fail(x, LUNAR_ERR_ARG, "in overlaps out but is not block %d of out (the only in-place form)",
                             x->rank);
    }
    ncclComm_t comm;
    int dev = lunar_tensor_device(in);
    if ((st = get_comm(slot, mc, x, dev, &comm))) return st;
    ncclDataType_t nt;
    nccl_type(in->dtype, &nt);
    NCCL_TRY(x, nc.all_gather(lunar_tensor_data(in), lunar_tensor_data(out), (size_t)lunar_tensor_numel(in), nt, comm,
                              stream_of(dev)));
    return LUNAR_OK;
}

lunar_status nccl_broadcast(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *t, int root) {
    lunar_status st;
    if ((st = check_dev(x, t, "x", COMM_MOVE, LUNAR_SUM)) || (st = comm_check_rank(x, root, "root", 0))) return st;
    ncclComm_t comm;
    int dev = lunar_tensor_device(t);
    if ((st = get_comm(slot, mc, x, dev, &comm))) return st;
    ncclDataType_t nt;
    nccl_type(t->dtype, &nt);
    void *p = lunar_tensor_data(t);
    NCCL_TRY(x, nc.broadcast(p, p, (size_t)lunar_tensor_numel(t), nt, root, comm, stream_of(dev)));
    return LUNAR_OK;
}

void nccl_free(comm_nccl *n) {
    if (!n) return;
    if (nc_ok) {
        if (lunar_cuda_synchronize(n->device))   /* nothing of ours in flight */
            lunar_cuda_record_error(__FILE__, __LINE__, "nccl_free", lunar_last_error());
        ncclResult_t r = nc.destroy(n->comm);
        if (r != ncclSuccess) lunar_cuda_record_error(__FILE__, __LINE__, "ncclCommDestroy", nc.error_string(r));
    }
    free(n);
}

#elif defined(LUNAR_USE_MPI)

/* An MPI build without the CUDA backend: no CUDA tensor can exist, but say so. */
static lunar_status no_nccl(const comm_ctx *x) {
    return comm_fail(x, LUNAR_ERR_DEVICE, "CUDA tensors need NCCL, which this build (without CUDA) does not have");
}
lunar_status nccl_all_reduce(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *t, lunar_reduce_op op) {
    (void)slot; (void)mc; (void)t; (void)op;
    return no_nccl(x);
}
lunar_status nccl_reduce_scatter(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *out,
                                 const lunar_tensor *in, lunar_reduce_op op) {
    (void)slot; (void)mc; (void)out; (void)in; (void)op;
    return no_nccl(x);
}
lunar_status nccl_all_gather(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *out,
                             const lunar_tensor *in) {
    (void)slot; (void)mc; (void)out; (void)in;
    return no_nccl(x);
}
lunar_status nccl_broadcast(comm_nccl **slot, MPI_Comm mc, const comm_ctx *x, lunar_tensor *t, int root) {
    (void)slot; (void)mc; (void)t; (void)root;
    return no_nccl(x);
}
void nccl_free(comm_nccl *n) { (void)n; }

#else
typedef int lunar_comm_nccl_not_built_;   /* NO_MPI: single rank, comm_single.c */
#endif
