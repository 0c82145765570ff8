/*
 * bindings/lcore.c: builds the global table `lunar` from every binding area,
 * plus the system functions:
 *   lunar.rank, lunar.world_size, lunar.local_rank   (numbers, set by the host)
 *   lunar.clock() -> seconds (monotonic, double)
 *   lunar.memory() -> {bytes_in_use, peak_bytes, bytes_reserved, num_allocs,
 *                      num_sys_allocs, peak_rss_bytes}   (caching allocator, cpu)
 *   lunar.reset_peak_memory(), lunar.empty_cache()
 *   lunar.set_num_threads(n), lunar.num_threads()        (OpenMP, shared with BLAS)
 *   lunar.isatty([fd=1]) -> boolean
 *   lunar.sgemm_gflops(n [, reps=3]) -> best GFLOP/s of the linears' f32 GEMM (oneDNN or cblas_sgemm) n x n x n
 *   lunar.stream_id(name) -> integer (the Philox stream of a name, rng.h)
 *   lunar.version
 * and the areas: lunar.Tensor & co. (ltensor.c), lunar.cuda (lcuda.c), lunar.ops
 * (lops.c), lunar.data (ldata.c), lunar.io (lio.c), lunar.comm (lcomm.c),
 * lunar.json (ljson.c).
 */
#include <math.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>   /* openblas_set_num_threads */
#ifdef _OPENMP
#include <omp.h>
#endif

#include "lunar_bindings.h"
#include "lunar/cuda.h"
#include "lunar/kernels.h"
#include "lunar/rng.h"

void lunar_open_tensor(lua_State *L);
void lunar_open_ops(lua_State *L);
void lunar_open_data(lua_State *L);
void lunar_open_io(lua_State *L);
void lunar_open_tfevents(lua_State *L);
void lunar_open_comm(lua_State *L);
void lunar_open_cuda(lua_State *L);
void lunar_open_json(lua_State *L);

static int g_rank, g_size = 1, g_local_rank;

void lunar_bindings_set_rank(int rank, int size, int local_rank) {
    g_rank = rank;
    g_size = size;
    g_local_rank = local_rank;
    lunar_cuda_set_local_rank(local_rank);   /* 'cuda' means device local_rank % count */
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int l_clock(lua_State *L) { lua_pushnumber(L, now()); return 1; }

static void setint(lua_State *L, const char *k, lua_Integer v) { lua_pushinteger(L, v); lua_setfield(L, -2, k); }

void lunar_push_alloc_stats(lua_State *L, int device, int extra) {
    lunar_alloc_stats s;
    lunar_alloc_get_stats(device, &s);
    lua_createtable(L, 0, 5 + extra);
    setint(L, "bytes_in_use", (lua_Integer)s.bytes_in_use);
    setint(L, "peak_bytes", (lua_Integer)s.peak_bytes);
    setint(L, "bytes_reserved", (lua_Integer)s.bytes_reserved);
    setint(L, "num_allocs", (lua_Integer)s.num_allocs);
    setint(L, "num_sys_allocs", (lua_Integer)s.num_sys_allocs);
}

static int l_memory(lua_State *L) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    lunar_push_alloc_stats(L, LUNAR_CPU, 1);
    setint(L, "peak_rss_bytes", (lua_Integer)ru.ru_maxrss * 1024);
    return 1;
}

static int l_reset_peak(lua_State *L) { lunar_alloc_reset_peak(LUNAR_CPU); return 0; }
static int l_empty_cache(lua_State *L) { lunar_alloc_empty_cache(LUNAR_CPU); return 0; }

static int l_set_num_threads(lua_State *L) {
    int n = (int)luaL_checkinteger(L, 1);
    if (n < 1) return luaL_error(L, "set_num_threads: %d is not a thread count", n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
    return 0;
}

static int l_num_threads(lua_State *L) {
#ifdef _OPENMP
    lua_pushinteger(L, omp_get_max_threads());
#else
    lua_pushinteger(L, 1);
#endif
    return 1;
}

static int l_isatty(lua_State *L) { lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1))); return 1; }

static int l_sgemm_gflops(lua_State *L) {   /* core/ops/cpu/linear.c measures */
    int n = (int)luaL_checkinteger(L, 1), reps = (int)luaL_optinteger(L, 2, 3);
    if (n < 1 || reps < 1) return luaL_error(L, "sgemm_gflops: size %d and reps %d must be >= 1", n, reps);
    double g = lunar_cpu_sgemm_gflops(n, reps);
    if (g < 0) return luaL_error(L, "sgemm_gflops: out of memory for three %d x %d matrices", n, n);
    lua_pushnumber(L, g);
    return 1;
}

static int l_stream_id(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lunar_rng_stream_id(luaL_checkstring(L, 1)));
    return 1;
}

static const luaL_Reg sys[] = {
    {"clock", l_clock}, {"memory", l_memory}, {"reset_peak_memory", l_reset_peak},
    {"empty_cache", l_empty_cache}, {"set_num_threads", l_set_num_threads},
    {"num_threads", l_num_threads}, {"isatty", l_isatty}, {"sgemm_gflops", l_sgemm_gflops},
    {"stream_id", l_stream_id}, {NULL, NULL}};

int lunar_open_bindings(lua_State *L) {
    lua_newtable(L);
    luaL_setfuncs(L, sys, 0);
    setint(L, "rank", g_rank);
    setint(L, "world_size", g_size);
    setint(L, "local_rank", g_local_rank);
    lua_pushstring(L, LUNAR_VERSION);
    lua_setfield(L, -2, "version");
    lunar_open_tensor(L);
    lunar_open_cuda(L);   /* lunar.cuda, devices, t:to('cuda') (bindings/lcuda.c) */
    lunar_open_ops(L);
    lunar_open_data(L);
    lunar_open_io(L);
    lunar_open_tfevents(L);   /* lunar.io.tfevents, lunar.io.crc32c (bindings/ltfevents.c) */
    lunar_open_comm(L);
    lunar_open_json(L);   /* lunar.json, require('lunar.json') (bindings/ljson.c) */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "lunar.core");
    lua_pop(L, 2);
    lua_setglobal(L, "lunar");
    return 0;
}
