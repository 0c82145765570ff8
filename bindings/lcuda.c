/*
 * bindings/lcuda.c: CUDA devices in Lua (lunar/cuda.h).
 *
 *   lunar.cuda.is_available() -> boolean, reason   (false and why when no device)
 *   lunar.cuda.device_count() -> integer           (0 without a device)
 *   lunar.cuda.compiled() -> boolean                (this build has the CUDA backend)
 *   lunar.cuda.device() -> integer                  ('cuda' of this rank: local_rank % count)
 *   lunar.cuda.set_device(n)                        (the thread's current device)
 *   lunar.cuda.synchronize([n])                     (waits for the device's streams)
 *   lunar.cuda.device_name([n]), lunar.cuda.capability([n]) -> major, minor
 *   lunar.cuda.memory([n]) -> {bytes_in_use, peak_bytes, bytes_reserved, num_allocs,
 *                              num_sys_allocs, free_bytes, total_bytes}   (caching allocator)
 *   lunar.cuda.reset_peak_memory([n]), lunar.cuda.empty_cache([n])
 *   lunar.cuda.set_tf32(on), lunar.cuda.tf32() -> boolean   (TF32 GEMMs; LUNAR_TF32=1 at start)
 *   lunar.set_default_device(device), lunar.default_device() -> string
 *                                                   (where lunar.empty & co. allocate; 'cpu')
 * Tensor methods:
 *   t:to(device) / t:to(dtype) / t:to(dtype, device)   device: 'cpu', 'cuda', 'cuda:N'
 *   t:cuda([n]), t:cpu(), t:is_cuda()
 * t:to(device) returns a copy on that device, or a view of t when t is already
 * there with that dtype (PyTorch's .to). Without a device, moving to 'cuda'
 * raises "no CUDA device available (<reason>); cannot allocate ... on cuda:0".
 */
#include <stdlib.h>
#include <string.h>

#include "lunar_bindings.h"
#include "lunar/cuda.h"

static int g_default_device = LUNAR_CPU;

int lunar_bindings_default_device(void) { return g_default_device; }

int lunar_test_device_arg(lua_State *L, int idx, int *device) {
    if (lua_type(L, idx) != LUA_TSTRING) return 0;
    const char *s = lua_tostring(L, idx);
    if (!strcmp(s, "cpu")) { *device = LUNAR_CPU; return 1; }
    if (!strcmp(s, "cuda")) { *device = lunar_cuda_default_device(); return 1; }
    if (!strncmp(s, "cuda:", 5) && s[5]) {
        char *end;
        long n = strtol(s + 5, &end, 10);
        if (*end == 0 && n >= 0 && n < 1 << 20) { *device = (int)n; return 1; }
    }
    return 0;
}

int lunar_check_device_arg(lua_State *L, int idx) {
    int d;
    if (lunar_test_device_arg(L, idx, &d)) return d;
    if (lua_type(L, idx) == LUA_TSTRING)
        luaL_error(L, "bad argument #%d: unknown device '%s' (cpu, cuda, cuda:N)", idx, lua_tostring(L, idx));
    else
        luaL_error(L, "bad argument #%d: a device ('cpu', 'cuda', 'cuda:N') expected, got %s", idx,
                   luaL_typename(L, idx));
    return LUNAR_CPU;
}

static void push_device(lua_State *L, int d) {
    if (d == LUNAR_CPU) lua_pushstring(L, "cpu");
    else lua_pushfstring(L, "cuda:%d", d);
}

/* An optional device ordinal argument (default: this rank's device). */
static int opt_ordinal(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return lunar_cuda_default_device();
    if (lua_type(L, idx) == LUA_TSTRING) {
        int d = lunar_check_device_arg(L, idx);
        if (d == LUNAR_CPU) luaL_error(L, "bad argument #%d: a CUDA device expected, got 'cpu'", idx);
        return d;
    }
    return (int)luaL_checkinteger(L, idx);
}

#define TRY(expr) do { if (expr) return lunar_raise(L); } while (0)

static int l_is_available(lua_State *L) {
    int ok = lunar_cuda_is_available();
    lua_pushboolean(L, ok);
    lua_pushstring(L, ok ? "" : lunar_cuda_unavailable_reason());
    return 2;
}

static int l_device_count(lua_State *L) { lua_pushinteger(L, lunar_cuda_device_count()); return 1; }
static int l_compiled(lua_State *L) { lua_pushboolean(L, lunar_cuda_compiled()); return 1; }
static int l_device(lua_State *L) { lua_pushinteger(L, lunar_cuda_default_device()); return 1; }

static int l_set_device(lua_State *L) {
    TRY(lunar_cuda_set_device(opt_ordinal(L, 1)));
    return 0;
}

static int l_synchronize(lua_State *L) {
    TRY(lunar_cuda_synchronize(opt_ordinal(L, 1)));
    return 0;
}

static int l_device_name(lua_State *L) {
    char name[256];
    TRY(lunar_cuda_device_name(opt_ordinal(L, 1), name, sizeof name));
    lua_pushstring(L, name);
    return 1;
}

static int l_capability(lua_State *L) {
    int major, minor;
    TRY(lunar_cuda_capability(opt_ordinal(L, 1), &major, &minor));
    lua_pushinteger(L, major);
    lua_pushinteger(L, minor);
    return 2;
}

static void setint(lua_State *L, const char *k, lua_Integer v) { lua_pushinteger(L, v); lua_setfield(L, -2, k); }

static int l_memory(lua_State *L) {
    int d = opt_ordinal(L, 1);
    size_t fr = 0, tot = 0;
    TRY(lunar_cuda_mem_info(d, &fr, &tot));
    lunar_push_alloc_stats(L, d, 2);
    setint(L, "free_bytes", (lua_Integer)fr);
    setint(L, "total_bytes", (lua_Integer)tot);
    return 1;
}

static int l_reset_peak(lua_State *L) {
    int d = opt_ordinal(L, 1);
    TRY(lunar_cuda_check_device(d));
    lunar_alloc_reset_peak(d);
    return 0;
}

static int l_empty_cache(lua_State *L) {
    int d = opt_ordinal(L, 1);
    TRY(lunar_cuda_check_device(d));
    lunar_alloc_empty_cache(d);
    return 0;
}

static int l_set_tf32(lua_State *L) { lunar_cuda_set_tf32(lua_toboolean(L, 1)); return 0; }
static int l_tf32(lua_State *L) { lua_pushboolean(L, lunar_cuda_tf32()); return 1; }

static int l_set_default_device(lua_State *L) {
    int d = lunar_check_device_arg(L, 1);
    if (d != LUNAR_CPU) TRY(lunar_cuda_check_device(d));
    g_default_device = d;
    return 0;
}

static int l_default_device(lua_State *L) { push_device(L, g_default_device); return 1; }

// ----------------------------------------------------------------------------
// tensor methods

/* t:to(x [, y]): x and y each a device or a dtype; the dtype conversion of
 * the original method (ltensor.c) is the upvalue. */
static int m_to(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int device = lunar_tensor_device(t), has_device = 0, dtype_idx = 0;
    for (int i = 2; i <= 3 && !lua_isnoneornil(L, i); i++) {
        int d;
        if (lunar_test_device_arg(L, i, &d)) { device = d; has_device = 1; }
        else if (!dtype_idx) dtype_idx = i;
        else return luaL_error(L, "to: two dtypes given");
    }
    if (dtype_idx && lua_type(L, dtype_idx) == LUA_TSTRING && lunar_dtype_from_name(lua_tostring(L, dtype_idx)) < 0)
        return luaL_error(L, "to: unknown dtype or device '%s' (dtypes: f32, bf16, f16, f64, i32, i64, u8; "
                          "devices: cpu, cuda, cuda:N)", lua_tostring(L, dtype_idx));
    if (!has_device) {   /* the dtype conversion of ltensor.c */
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        if (dtype_idx) lua_pushvalue(L, dtype_idx);
        else lua_pushnil(L);
        lua_call(L, 2, 1);
        return 1;
    }
    int dtype = t->dtype;
    if (dtype_idx) {
        dtype = lunar_dtype_from_name(luaL_checkstring(L, dtype_idx));
        if (dtype < 0) return luaL_error(L, "unknown dtype '%s' (f32, bf16, f16, f64, i32, i64, u8)",
                                         lua_tostring(L, dtype_idx));
    }
    if (device == lunar_tensor_device(t) && dtype == (int)t->dtype) {
        lunar_push_tensor(L, lunar_tensor_view(t));
        return 1;
    }
    lunar_tensor *r = lunar_tensor_new((lunar_dtype)dtype, t->ndim, t->shape, device);
    if (!r) return lunar_raise(L);
    if (lunar_tensor_copy(r, t)) { lunar_tensor_free(r); return lunar_raise(L); }
    lunar_push_tensor(L, r);
    return 1;
}

static int m_cuda(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int d = opt_ordinal(L, 2);
    if (lunar_tensor_device(t) == d) { lunar_push_tensor(L, lunar_tensor_view(t)); return 1; }
    lunar_push_tensor(L, lunar_tensor_to_device(t, d));
    return 1;
}

static int m_cpu(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    if (lunar_tensor_device(t) == LUNAR_CPU) { lunar_push_tensor(L, lunar_tensor_view(t)); return 1; }
    lunar_push_tensor(L, lunar_tensor_to_device(t, LUNAR_CPU));
    return 1;
}

static int m_is_cuda(lua_State *L) {
    lua_pushboolean(L, lunar_tensor_device(lunar_check_tensor(L, 1)) != LUNAR_CPU);
    return 1;
}

static const luaL_Reg cuda_fns[] = {
    {"is_available", l_is_available}, {"device_count", l_device_count}, {"compiled", l_compiled},
    {"device", l_device}, {"set_device", l_set_device}, {"synchronize", l_synchronize},
    {"device_name", l_device_name}, {"capability", l_capability}, {"memory", l_memory},
    {"reset_peak_memory", l_reset_peak}, {"empty_cache", l_empty_cache}, {"set_tf32", l_set_tf32},
    {"tf32", l_tf32}, {NULL, NULL}};

/* Adds lunar.cuda, lunar.set_default_device/default_device and the tensor
 * methods to the table on the top of the stack (after lunar_open_tensor). */
void lunar_open_cuda(lua_State *L) {
    luaL_newlib(L, cuda_fns);
    lua_setfield(L, -2, "cuda");
    lua_pushcfunction(L, l_set_default_device);
    lua_setfield(L, -2, "set_default_device");
    lua_pushcfunction(L, l_default_device);
    lua_setfield(L, -2, "default_device");

    luaL_getmetatable(L, LUNAR_TENSOR_MT);
    lua_getfield(L, -1, "to");                 /* the dtype conversion, as upvalue */
    lua_pushcclosure(L, m_to, 1);
    lua_setfield(L, -2, "to");
    lua_pushcfunction(L, m_cuda);
    lua_setfield(L, -2, "cuda");
    lua_pushcfunction(L, m_cpu);
    lua_setfield(L, -2, "cpu");
    lua_pushcfunction(L, m_is_cuda);
    lua_setfield(L, -2, "is_cuda");
    lua_pop(L, 1);
}
