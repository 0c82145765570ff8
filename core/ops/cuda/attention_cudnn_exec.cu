// core/ops/cuda/attention_cudnn_exec.cu: running cuDNN's attention graphs.
// Per device: a cuDNN handle on the compute stream and a cache of execution
// plans per (dtype, B, N, H, D, direction, variant), refusals cached too, all
// under one mutex; a call takes its plan, a workspace from the device
// allocator, and runs the plan on strided views of its tensors (no copies).
#include <pthread.h>
#include <stdio.h>

#include "attention_cudnn.cuh"

using namespace lunar_cuda;

namespace lunar_attn {

#if LUNAR_HAVE_CUDNN

namespace {

// ---------------------------------------------------------------------------
// per device: a handle on the compute stream and the cache of plans

struct Key {
    int dtype, variant;
    int64_t B, N, H, D;
    bool operator==(const Key &o) const {
        return dtype == o.dtype && variant == o.variant && B == o.B && N == o.N && H == o.H && D == o.D;
    }
};

struct Entry {
    Key key;
    cudnnBackendDescriptor_t plan = nullptr;   // NULL: refused, see why
    int64_t workspace = 0;
    char why[640] = "";
    std::vector<cudnnBackendDescriptor_t> keep;   // every descriptor of the graph
};

constexpr int MAX_DEVICES = 64;
constexpr size_t CACHE = 64;

struct DeviceDnn {
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;   // the handle, the cache and every execution
    bool tried = false;
    cudnnHandle_t handle = nullptr;
    char why[512] = "";
    std::vector<Entry *> cache;
    size_t next = 0;   // the entry replaced when the cache is full
};

DeviceDnn devs[MAX_DEVICES];

// The device's handle (created on first use, under d->mu), or NULL with d->why.
cudnnHandle_t handle_of(DeviceDnn *d, int dev) {
    if (!d->tried) {
        d->tried = true;
        cudaStream_t s = stream();
        Build b;
        cudnnHandle_t h = nullptr;
        if (!s) snprintf(d->why, sizeof d->why, "cuda:%d has no compute stream: %s", dev, lunar_last_error());
        else if (BCHECK(b, dnn.create(&h), "cudnnCreate") && BCHECK(b, dnn.set_stream(h, s), "cudnnSetStream"))
            d->handle = h;
        else snprintf(d->why, sizeof d->why, "cuda:%d: %.480s", dev, b.why);
    }
    return d->handle;
}

// The cached (or newly built) entry of key; never NULL (a refusal has plan NULL).
Entry *entry_of(DeviceDnn *d, cudnnHandle_t handle, const Key &key) {
    for (Entry *e : d->cache)
        if (e->key == key) return e;
    Entry *e = new Entry;
    e->key = key;
    Build b;
    Geometry g{key.B, key.N, key.H, key.D};
    cudnnDataType_t io = key.dtype == LUNAR_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
    if (key.variant == VAR_FORWARD) build_forward(b, g, io);
    else build_backward(b, g, io, key.variant == VAR_BWD_ACCUM);
    if (b.ok) e->plan = make_plan(b, handle, &e->workspace);
    if (!e->plan) {
        snprintf(e->why, sizeof e->why, "cuDNN refused the graph: %.600s", b.why);
        destroy_all(b.all);
    } else {
        e->keep.swap(b.all);
    }
    if (d->cache.size() < CACHE) {
        d->cache.push_back(e);
    } else {   // replace the oldest; nothing else runs it (d->mu is held)
        Entry *old = d->cache[d->next];
        destroy_all(old->keep);
        delete old;
        d->cache[d->next] = e;
        d->next = (d->next + 1) % CACHE;
    }
    return e;
}

size_t round_up(size_t n) { return (n + 255) / 256 * 256; }

// Runs the plan of e with the tensors uids[i] at ptrs[i] and a workspace of
// the plan's size plus `extra` bytes after it, which fill (when given) hands
// out (it returns 1 after recording an error). Sticky error on failure.
void execute(cudnnHandle_t handle, Entry *e, const int64_t *uids, void **ptrs, int n, size_t extra,
             int (*fill)(void *extra_ptr, void **ptrs, void *ctx), void *ctx) {
    size_t plan_ws = round_up((size_t)e->workspace), total = plan_ws + extra;
    Scratch ws(total ? total : 256);
    if (!ws.ptr) return;
    if (fill && fill((char *)ws.ptr + plan_ws, ptrs, ctx)) return;
    cudnnBackendDescriptor_t pack = nullptr;
    if (!DNN_EXEC(dnn.desc_create(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack))) return;
    void *wsp = ws.ptr;
    bool ok = DNN_EXEC(dnn.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids)) &&
              DNN_EXEC(dnn.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs)) &&
              DNN_EXEC(dnn.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &wsp)) &&
              DNN_EXEC(dnn.finalize(pack));
    if (ok) DNN_EXEC(dnn.execute(handle, e->plan, pack));
    DNN_EXEC(dnn.desc_destroy(pack));
}

// The entry to run for this call, with d->mu held (the caller unlocks), or
// NULL with why.
Entry *choose(DeviceDnn **dp, cudnnHandle_t *hp, int variant, int dtype, int B, int N, int H, int D, char *why,
              size_t n) {
    int dev = device();
    if (dev < 0 || dev >= MAX_DEVICES) {
        snprintf(why, n, "cuda:%d: beyond the %d devices cuDNN attention handles", dev, MAX_DEVICES);
        return nullptr;
    }
    DeviceDnn *d = &devs[dev];
    pthread_mutex_lock(&d->mu);
    cudnnHandle_t h = handle_of(d, dev);
    if (!h) {
        snprintf(why, n, "%s", d->why);
        pthread_mutex_unlock(&d->mu);
        return nullptr;
    }
    Key key{dtype, variant, B, N, H, D};
    Entry *e = entry_of(d, h, key);
    if (!e->plan) {
        snprintf(why, n, "%s", e->why);
        pthread_mutex_unlock(&d->mu);
        return nullptr;
    }
    *dp = d;
    *hp = h;
    return e;
}

// the backward's workspace after the plan's: softmax_sum, then (fast variant)
// dQ_accum, zeroed
struct BwdTail { size_t sum_bytes, acc_bytes; };

int fill_bwd(void *extra, void **ptrs, void *ctx) {
    BwdTail *t = (BwdTail *)ctx;
    ptrs[11] = extra;   // UID_SOFTMAX_SUM
    if (!t->acc_bytes) return 0;
    void *acc = (char *)extra + t->sum_bytes;
    ptrs[12] = acc;     // UID_DQ_ACCUM: accumulated into, so zeroed first
    return CUDA_RECORD(cudaMemsetAsync(acc, 0, t->acc_bytes, stream()));
}

}  // namespace

bool cudnn_forward(int dtype, void *out, float *lse, const void *qkv, int B, int N, int H, int D, char *why,
                   size_t nwhy) {
    DeviceDnn *d = nullptr;
    cudnnHandle_t h = nullptr;
    Entry *e = choose(&d, &h, VAR_FORWARD, dtype, B, N, H, D, why, nwhy);
    if (!e) return false;
    size_t es = 2, C = (size_t)H * D;   // bf16 / f16 elements
    float scale = (float)(1.0 / sqrt((double)D));
    const char *q = (const char *)qkv;
    int64_t uids[] = {UID_Q, UID_K, UID_V, UID_O, UID_STATS, UID_SCALE};
    void *ptrs[] = {(void *)q, (void *)(q + C * es), (void *)(q + 2 * C * es), out, lse, &scale};
    execute(h, e, uids, ptrs, 6, 0, nullptr, nullptr);
    pthread_mutex_unlock(&d->mu);
    return true;
}

bool cudnn_backward(int dtype, int variant, void *dqkv, const void *dout, const void *qkv, const void *out,
                    const float *lse, int B, int N, int H, int D, char *why, size_t nwhy) {
    DeviceDnn *d = nullptr;
    cudnnHandle_t h = nullptr;
    Entry *e = choose(&d, &h, variant, dtype, B, N, H, D, why, nwhy);
    if (!e) return false;
    size_t es = 2, C = (size_t)H * D;
    float scale = (float)(1.0 / sqrt((double)D)), one = 1.0f;
    const char *q = (const char *)qkv;
    char *g = (char *)dqkv;
    BwdTail tail;
    tail.sum_bytes = round_up(sizeof(float) * (size_t)B * H * N);
    tail.acc_bytes = variant == VAR_BWD_ACCUM ? sizeof(float) * (size_t)B * H * N * D : 0;
    int64_t uids[] = {UID_Q,  UID_K,  UID_V,     UID_O,   UID_STATS,       UID_DO,      UID_DQ,
                      UID_DK, UID_DV, UID_SCALE, UID_ONE, UID_SOFTMAX_SUM, UID_DQ_ACCUM};
    void *ptrs[] = {(void *)q,      (void *)(q + C * es), (void *)(q + 2 * C * es), (void *)out,
                    (void *)lse,    (void *)dout,         g,                        g + C * es,
                    g + 2 * C * es, &scale,               &one,                     nullptr,
                    nullptr};
    execute(h, e, uids, ptrs, tail.acc_bytes ? 13 : 12, tail.sum_bytes + tail.acc_bytes, fill_bwd, &tail);
    pthread_mutex_unlock(&d->mu);
    return true;
}

#else  // no cudnn_graph.h at build time: cuDNN is never used

bool cudnn_forward(int, void *, float *, const void *, int, int, int, int, char *why, size_t nwhy) {
    snprintf(why, nwhy, "%s", dnn_reason);
    return false;
}

bool cudnn_backward(int, int, void *, const void *, const void *, const void *, const float *, int, int, int, int,
                    char *why, size_t nwhy) {
    snprintf(why, nwhy, "%s", dnn_reason);
    return false;
}

#endif  // LUNAR_HAVE_CUDNN

}  // namespace lunar_attn
