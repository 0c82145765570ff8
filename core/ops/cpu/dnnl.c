/*
 * core/ops/cpu/dnnl.c: the CPU GEMM through oneDNN's matmul primitive
 * (gemm.h). oneDNN dispatches on the processor itself (brgemm kernels for
 * AVX-512, AVX512-BF16, AMX), so the GEMMs run at the machine's rate whatever
 * the environment tells OpenBLAS. Debian's libdnnl is built on GNU OpenMP
 * (libgomp), the runtime of our own kernels and of OpenBLAS's OpenMP build:
 * one thread pool, sized by omp_set_num_threads / OMP_NUM_THREADS.
 *
 * Primitives are cached by everything that shapes one: M, N, K, the operand
 * strides (the transposes), the dtypes, bias or not, accumulate (sum post-op)
 * or not, and the thread count (oneDNN fixes its work split when it creates a
 * primitive). Creating one costs from tens of microseconds to milliseconds;
 * a training step reuses a few dozen. The cache holds CACHE_MAX primitives;
 * a shape past that is created, run and destroyed each call (still correct).
 * Memory objects wrap the caller's pointers on each call (no copy).
 *
 * Without -DLUNAR_USE_DNNL (the Makefile's NO_DNNL=1, no libdnnl-dev, or the
 * CUDA emulation build) every entry point says "not here" (-1, NULL, 0).
 */
#include "gemm.h"

#ifdef LUNAR_USE_DNNL

#include <dnnl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "simd.h"   /* lunar_omp_max_threads */

typedef struct {
    int M, N, K;
    int ab_bf16, c_bf16, bias, accumulate, threads;
    int64_t a_rs, a_cs, b_rs, b_cs, ldc;
} gemm_key;

typedef struct {
    gemm_key key;
    dnnl_primitive_t prim;
    char impl[64];   /* oneDNN's name of the implementation */
    dnnl_memory_desc_t a_md, b_md, c_md, bias_md;
} gemm_entry;

#define CACHE_MAX 512

static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t engine;            /* NULL: oneDNN has no CPU engine here */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static gemm_entry cache[CACHE_MAX];
static int cache_n;
static _Thread_local dnnl_stream_t stream;   /* a stream serves one thread at a time */
static int enabled = 1;                      /* lunar_cpu_dnnl_enable */

static void engine_init(void) {
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) engine = NULL;
}

static int key_eq(const gemm_key *a, const gemm_key *b) { return memcmp(a, b, sizeof *a) == 0; }

/* Creates the primitive of key k into e (e->prim NULL when oneDNN refuses). */
static void create(gemm_entry *e, const gemm_key *k) {
    memset(e, 0, sizeof *e);
    e->key = *k;
    dnnl_data_type_t ab = k->ab_bf16 ? dnnl_bf16 : dnnl_f32, c = k->c_bf16 ? dnnl_bf16 : dnnl_f32;
    dnnl_dims_t a_dims = {k->M, k->K}, a_str = {k->a_rs, k->a_cs};
    dnnl_dims_t b_dims = {k->K, k->N}, b_str = {k->b_rs, k->b_cs};
    dnnl_dims_t c_dims = {k->M, k->N}, c_str = {k->ldc, 1};
    dnnl_dims_t bias_dims = {1, k->N}, bias_str = {k->N, 1};
    if (dnnl_memory_desc_init_by_strides(&e->a_md, 2, a_dims, ab, a_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&e->b_md, 2, b_dims, ab, b_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&e->c_md, 2, c_dims, c, c_str) != dnnl_success ||
        dnnl_memory_desc_init_by_strides(&e->bias_md, 2, bias_dims, dnnl_f32, bias_str) != dnnl_success)
        return;
    dnnl_matmul_desc_t desc;
    if (dnnl_matmul_desc_init(&desc, &e->a_md, &e->b_md, k->bias ? &e->bias_md : NULL, &e->c_md) != dnnl_success)
        return;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (k->accumulate) {
        if (dnnl_primitive_attr_create(&attr) != dnnl_success) return;
        if (dnnl_post_ops_create(&po) != dnnl_success || dnnl_post_ops_append_sum(po, 1.0f) != dnnl_success ||
            dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success) {
            if (po) dnnl_post_ops_destroy(po);
            dnnl_primitive_attr_destroy(attr);
            return;
        }
        dnnl_post_ops_destroy(po);
    }
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &desc, attr, engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success) impl = NULL;
    /* a reference (naive loop) implementation is no faster than the fallbacks */
    if (impl && strncmp(impl, "ref", 3) == 0) { dnnl_primitive_desc_destroy(pd); return; }
    if (dnnl_primitive_create(&e->prim, pd) != dnnl_success) e->prim = NULL;
    if (impl) snprintf(e->impl, sizeof e->impl, "%s", impl);
    dnnl_primitive_desc_destroy(pd);
}

/* The cached entry of k (created on first use); *owned = 1 when it did not
 * fit the cache and the caller destroys e->prim after use. NULL: no engine. */
static gemm_entry *lookup(const gemm_key *k, gemm_entry *tmp, int *owned) {
    pthread_once(&engine_once, engine_init);
    *owned = 0;
    if (!engine) return NULL;
    pthread_mutex_lock(&cache_lock);
    for (int i = 0; i < cache_n; i++)
        if (key_eq(&cache[i].key, k)) { pthread_mutex_unlock(&cache_lock); return &cache[i]; }
    gemm_entry *e = cache_n < CACHE_MAX ? &cache[cache_n] : tmp;
    create(e, k);
    if (e != tmp) cache_n++;
    else *owned = 1;
    pthread_mutex_unlock(&cache_lock);
    return e;
}

static int make_key(gemm_key *k, int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B,
                    const float *bias, int c_bf16, size_t ldc, int accumulate) {
    if (!enabled || M < 1 || N < 1 || K < 1 || A->bf16 != B->bf16 || ldc < (size_t)N) return -1;
    memset(k, 0, sizeof *k);   /* padding too: keys are compared with memcmp */
    k->M = M; k->N = N; k->K = K;
    k->ab_bf16 = A->bf16 != 0; k->c_bf16 = c_bf16 != 0; k->bias = bias != NULL; k->accumulate = accumulate != 0;
    k->threads = lunar_omp_max_threads();
    k->a_rs = (int64_t)A->rs; k->a_cs = (int64_t)A->cs; k->b_rs = (int64_t)B->rs; k->b_cs = (int64_t)B->cs;
    k->ldc = (int64_t)ldc;
    return 0;
}

int lunar_cpu_dnnl_gemm(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B, const float *bias,
                        void *C, int c_bf16, size_t ldc, int accumulate) {
    gemm_key k;
    if (make_key(&k, M, N, K, A, B, bias, c_bf16, ldc, accumulate)) return -1;
    gemm_entry tmp;
    int owned;
    gemm_entry *e = lookup(&k, &tmp, &owned);
    if (!e || !e->prim) return -1;
    if (!stream && dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        stream = NULL;
        if (owned) dnnl_primitive_destroy(e->prim);
        return -1;
    }
    dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbias = NULL;
    int rc = -1;
    if (dnnl_memory_create(&ma, &e->a_md, engine, (void *)A->p) == dnnl_success &&
        dnnl_memory_create(&mb, &e->b_md, engine, (void *)B->p) == dnnl_success &&
        dnnl_memory_create(&mc, &e->c_md, engine, C) == dnnl_success &&
        (!bias || dnnl_memory_create(&mbias, &e->bias_md, engine, (void *)bias) == dnnl_success)) {
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc},
                                   {DNNL_ARG_BIAS, mbias}};
        if (dnnl_primitive_execute(e->prim, stream, bias ? 4 : 3, args) == dnnl_success &&
            dnnl_stream_wait(stream) == dnnl_success)
            rc = 0;
    }
    if (ma) dnnl_memory_destroy(ma);
    if (mb) dnnl_memory_destroy(mb);
    if (mc) dnnl_memory_destroy(mc);
    if (mbias) dnnl_memory_destroy(mbias);
    if (owned) dnnl_primitive_destroy(e->prim);
    return rc;
}

const char *lunar_cpu_dnnl_gemm_impl(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B,
                                     const float *bias, int c_bf16, size_t ldc, int accumulate) {
    gemm_key k;
    if (make_key(&k, M, N, K, A, B, bias, c_bf16, ldc, accumulate)) return NULL;
    gemm_entry tmp;
    int owned;
    gemm_entry *e = lookup(&k, &tmp, &owned);
    if (!e || !e->prim) return NULL;
    static _Thread_local char name[64];
    snprintf(name, sizeof name, "%s", e->impl);
    if (owned) dnnl_primitive_destroy(e->prim);
    return name;
}

int lunar_cpu_dnnl_active(void) { return enabled; }

void lunar_cpu_dnnl_enable(int on) { enabled = on != 0; }

#else   /* no oneDNN in this build */

int lunar_cpu_dnnl_gemm(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B, const float *bias,
                        void *C, int c_bf16, size_t ldc, int accumulate) {
    return -1;
}

const char *lunar_cpu_dnnl_gemm_impl(int M, int N, int K, const lunar_gemm_mat *A, const lunar_gemm_mat *B,
                                     const float *bias, int c_bf16, size_t ldc, int accumulate) {
    return NULL;
}

int lunar_cpu_dnnl_active(void) { return 0; }

void lunar_cpu_dnnl_enable(int on) {}

#endif
