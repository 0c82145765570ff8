/*
 * bindings/ltensor.c: tensors as Lua userdata (metatable "lunar.Tensor").
 *
 * Lua API (dims and indices are 1-based, as in Torch7):
 *   lunar.empty(shape [, dtype [, device]]), lunar.zeros, lunar.ones,
 *   lunar.full(shape, v [, dtype [, device]])    device: 'cpu', 'cuda', 'cuda:N'
 *   lunar.tensor(values [, shape] [, dtype [, device]])   from a (nested) table of numbers
 *   (without a device argument: lunar.default_device(), 'cpu' unless
 *   lunar.set_default_device changed it; bindings/lcuda.c)
 *   t:shape() -> {d1, ...}   t:size([d])   t:dim()   t:numel()   t:dtype()   t:device()
 *   t:view(...)/t:reshape(...)   t:narrow(d, i, n)   t:select(d, i)   t:transpose(d1, d2)
 *   t:permute(...)   t:contiguous()   t:clone()   t:to(dtype)   t:copy_(src)   t:fill_(v)
 *   t:zero_()   t:item()   t:totable()   t:free()
 *   t:normal_(seed, name, mean, std) t:uniform_(seed, name, lo, hi)
 *   t:trunc_normal_(seed, name, mean, std, a, b)   (Philox streams named by `name`)
 *   t[i] (a number for 1-dim tensors, else a view of row i)   t[i] = v
 *   t + u, t - u, t * u, t / u, -t (elementwise, same shape, or with a number;
 *     any dtypes, an f32 result on the tensor's device: lunar_op_arith, ops.h)
 *   t:rsqrt([eps]): 1/sqrt(t + eps) elementwise (eps a number, default 0), the same way
 *   t:sum() t:mean() t:min() t:max() t:norm(): numbers, in double, on the
 *     tensor's device (lunar_op_sum ..., ops.h); a NaN anywhere gives NaN as in
 *     PyTorch; the sum of no elements is 0, their mean NaN, min/max an error
 *   tostring(t): shape, dtype, device and a summary of values
 * A released tensor (t:free() or a `<close>` variable going out of scope) keeps
 * its shape but raises an error on any access to data.
 * Tensors on a CUDA device (t:to('cuda'), bindings/lcuda.c) take every method:
 * arithmetic, the reductions and the ops (lunar.ops) run on the device; what
 * reads or writes single values or Lua tables (item, totable, t[i], the values
 * of tostring, the random fills) goes through a host copy.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lunar_bindings.h"
#include "lunar/ops.h"
#include "lunar/rng.h"

typedef struct { lunar_tensor *t; } tensor_ud;

int lunar_raise(lua_State *L) { return luaL_error(L, "%s", lunar_last_error()); }

void lunar_push_tensor(lua_State *L, lunar_tensor *t) {
    if (!t) { lunar_raise(L); return; }
    tensor_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = t;
    luaL_setmetatable(L, LUNAR_TENSOR_MT);
}

static tensor_ud *check_ud(lua_State *L, int idx) { return luaL_checkudata(L, idx, LUNAR_TENSOR_MT); }

lunar_tensor *lunar_check_tensor(lua_State *L, int idx) {
    tensor_ud *u = check_ud(L, idx);
    if (!u->t || !u->t->storage) luaL_error(L, "bad argument #%d: tensor was released (freed)", idx);
    return u->t;
}

lunar_tensor *lunar_opt_tensor(lua_State *L, int idx) {
    return lua_isnoneornil(L, idx) ? NULL : lunar_check_tensor(L, idx);
}

/* A shape from a table {d1, d2, ...} or from integer arguments idx.. */
static int get_shape(lua_State *L, int idx, int64_t *shape) {
    int n = 0;
    if (lua_istable(L, idx)) {
        n = (int)luaL_len(L, idx);
        if (n > LUNAR_MAX_DIMS) luaL_error(L, "shape has %d dims (at most %d)", n, LUNAR_MAX_DIMS);
        for (int i = 0; i < n; i++) {
            lua_geti(L, idx, i + 1);
            int isint = 0;
            lua_Integer v = lua_tointegerx(L, -1, &isint);   /* also takes integral floats */
            if (!isint) luaL_error(L, "shape entry %d is not an integer", i + 1);
            shape[i] = v;
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        for (int i = idx; i <= top && lua_isnumber(L, i); i++) {
            if (n >= LUNAR_MAX_DIMS) luaL_error(L, "too many dims");
            shape[n++] = luaL_checkinteger(L, i);
        }
    }
    return n;
}

/* The device argument at idx, or the default device when none. */
static int opt_device(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return lunar_bindings_default_device();
    return lunar_check_device_arg(L, idx);
}

/* A host copy of a device tensor (owned by the caller), or NULL when t is on
 * the host; raises on failure. */
static lunar_tensor *host_copy(lua_State *L, const lunar_tensor *t) {
    if (lunar_tensor_device(t) == LUNAR_CPU) return NULL;
    lunar_tensor *h = lunar_tensor_to_device(t, LUNAR_CPU);
    if (!h) lunar_raise(L);
    return h;
}

static lunar_dtype opt_dtype(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return LUNAR_F32;
    const char *name = luaL_checkstring(L, idx);
    int d = lunar_dtype_from_name(name);
    if (d < 0) luaL_error(L, "unknown dtype '%s' (f32, bf16, f16, f64, i32, i64, u8)", name);
    return (lunar_dtype)d;
}

static int l_empty(lua_State *L) {
    int64_t shape[LUNAR_MAX_DIMS];
    int n = get_shape(L, 1, shape);
    lunar_push_tensor(L, lunar_tensor_new(opt_dtype(L, 2), n, shape, opt_device(L, 3)));
    return 1;
}

static int l_zeros(lua_State *L) {
    int64_t shape[LUNAR_MAX_DIMS];
    int n = get_shape(L, 1, shape);
    lunar_push_tensor(L, lunar_tensor_zeros(opt_dtype(L, 2), n, shape, opt_device(L, 3)));
    return 1;
}

static int l_full(lua_State *L) {
    int64_t shape[LUNAR_MAX_DIMS];
    int n = get_shape(L, 1, shape);
    double v = luaL_checknumber(L, 2);
    lunar_tensor *t = lunar_tensor_new(opt_dtype(L, 3), n, shape, opt_device(L, 4));
    if (t && lunar_tensor_fill(t, v)) { lunar_tensor_free(t); t = NULL; }
    lunar_push_tensor(L, t);
    return 1;
}

static int l_ones(lua_State *L) {
    int64_t shape[LUNAR_MAX_DIMS];
    int n = get_shape(L, 1, shape);
    lunar_tensor *t = lunar_tensor_new(opt_dtype(L, 2), n, shape, opt_device(L, 3));
    if (t && lunar_tensor_fill(t, 1.0)) { lunar_tensor_free(t); t = NULL; }
    lunar_push_tensor(L, t);
    return 1;
}

/* Flattens a nested table of numbers into buf, recording the shape. An error
 * frees buf first (luaL_error does not return). */
static void flatten(lua_State *L, int idx, int depth, int64_t *shape, int *ndim, double **buf,
                    size_t *n, size_t *cap) {
    int64_t len = (int64_t)luaL_len(L, idx);
    if (depth >= LUNAR_MAX_DIMS) { free(*buf); *buf = NULL; luaL_error(L, "tensor: table nested too deep"); }
    if (depth >= *ndim) { *ndim = depth + 1; shape[depth] = len; }
    else if (shape[depth] != len) {
        free(*buf); *buf = NULL;
        luaL_error(L, "tensor: ragged table (dim %d has sizes %d and %d)", depth + 1, (int)shape[depth], (int)len);
    }
    for (int64_t i = 1; i <= len; i++) {
        lua_geti(L, idx, i);
        if (lua_istable(L, -1)) {
            flatten(L, lua_gettop(L), depth + 1, shape, ndim, buf, n, cap);
        } else {
            if (!lua_isnumber(L, -1)) {
                free(*buf); *buf = NULL;
                luaL_error(L, "tensor: element %d is not a number", (int)i);
            }
            if (*n == *cap) { *cap = *cap ? 2 * *cap : 64; *buf = realloc(*buf, *cap * sizeof **buf); }
            (*buf)[(*n)++] = lua_tonumber(L, -1);
        }
        lua_pop(L, 1);
    }
}

static int l_tensor(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t shape[LUNAR_MAX_DIMS] = {0}, given[LUNAR_MAX_DIMS];
    int ndim = 0, dtype_idx = 2;
    double *buf = NULL;
    size_t n = 0, cap = 0;
    flatten(L, 1, 0, shape, &ndim, &buf, &n, &cap);
    if (lua_isnil(L, 2) && lua_gettop(L) >= 3) dtype_idx = 3;   /* tensor(values, nil, dtype [, device]) */
    if (lua_istable(L, 2)) {
        int gn = get_shape(L, 2, given);
        int64_t numel = 1;
        for (int i = 0; i < gn; i++) numel *= given[i];
        if ((size_t)numel != n) { free(buf); return luaL_error(L, "tensor: %d values do not fill the shape given", (int)n); }
        ndim = gn;
        memcpy(shape, given, sizeof given);
        dtype_idx = 3;
    }
    if (n == 0 && ndim == 1) shape[0] = 0;
    lunar_dtype dtype = opt_dtype(L, dtype_idx);
    int device = opt_device(L, dtype_idx + 1);
    /* the numbers as an f64 tensor over buf, converted to dtype on device */
    lunar_tensor *src = lunar_tensor_from_data(buf, LUNAR_F64, ndim, shape);
    lunar_tensor *t = src ? lunar_tensor_new(dtype, ndim, shape, device) : NULL;
    if (t && lunar_tensor_copy(t, src)) { lunar_tensor_free(t); t = NULL; }
    lunar_tensor_free(src);
    free(buf);
    lunar_push_tensor(L, t);
    return 1;
}

// ----------------------------------------------------------------------------
// methods

static int m_shape(lua_State *L) {
    lunar_tensor *t = check_ud(L, 1)->t;
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) { lua_pushinteger(L, t->shape[i]); lua_rawseti(L, -2, i + 1); }
    return 1;
}

static int dim_arg(lua_State *L, const lunar_tensor *t, int idx) {
    lua_Integer d = luaL_checkinteger(L, idx);
    if (d < 0) d += t->ndim + 1;
    if (d < 1 || d > t->ndim) luaL_error(L, "dim %d out of range for a %d-dim tensor", (int)d, t->ndim);
    return (int)d - 1;
}

static int m_size(lua_State *L) {
    lunar_tensor *t = check_ud(L, 1)->t;
    if (lua_isnoneornil(L, 2)) return m_shape(L);
    lua_pushinteger(L, t->shape[dim_arg(L, t, 2)]);
    return 1;
}

static int m_dim(lua_State *L) { lua_pushinteger(L, check_ud(L, 1)->t->ndim); return 1; }
static int m_numel(lua_State *L) { lua_pushinteger(L, lunar_tensor_numel(check_ud(L, 1)->t)); return 1; }
static int m_dtype(lua_State *L) { lua_pushstring(L, lunar_dtype_name(check_ud(L, 1)->t->dtype)); return 1; }
static int m_device(lua_State *L) {
    int d = lunar_tensor_device(check_ud(L, 1)->t);
    if (d == LUNAR_CPU) lua_pushstring(L, "cpu"); else lua_pushfstring(L, "cuda:%d", d);
    return 1;
}
static int m_is_contiguous(lua_State *L) { lua_pushboolean(L, lunar_tensor_is_contiguous(lunar_check_tensor(L, 1))); return 1; }
static int m_nbytes(lua_State *L) { lua_pushinteger(L, (lua_Integer)lunar_tensor_nbytes(check_ud(L, 1)->t)); return 1; }
static int m_released(lua_State *L) { tensor_ud *u = check_ud(L, 1); lua_pushboolean(L, !u->t || !u->t->storage); return 1; }

static int m_view(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int64_t shape[LUNAR_MAX_DIMS];
    int n = get_shape(L, 2, shape);
    lunar_push_tensor(L, lunar_tensor_reshape(t, n, shape));
    return 1;
}

static int m_narrow(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int d = dim_arg(L, t, 2);
    lunar_push_tensor(L, lunar_tensor_narrow(t, d, luaL_checkinteger(L, 3) - 1, luaL_checkinteger(L, 4)));
    return 1;
}

static int m_select(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int d = dim_arg(L, t, 2);
    lunar_push_tensor(L, lunar_tensor_select(t, d, luaL_checkinteger(L, 3) - 1));
    return 1;
}

static int m_transpose(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int a = dim_arg(L, t, 2), b = dim_arg(L, t, 3);
    lunar_push_tensor(L, lunar_tensor_transpose(t, a, b));
    return 1;
}

static int m_permute(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    int dims[LUNAR_MAX_DIMS];
    if (lua_gettop(L) - 1 != t->ndim) return luaL_error(L, "permute: %d dims given for a %d-dim tensor", lua_gettop(L) - 1, t->ndim);
    for (int i = 0; i < t->ndim; i++) dims[i] = dim_arg(L, t, i + 2);
    lunar_push_tensor(L, lunar_tensor_permute(t, dims));
    return 1;
}

static int m_contiguous(lua_State *L) { lunar_push_tensor(L, lunar_tensor_contiguous(lunar_check_tensor(L, 1))); return 1; }
static int m_clone(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    lunar_push_tensor(L, lunar_tensor_to_dtype(t, t->dtype));
    return 1;
}
static int m_to(lua_State *L) { lunar_push_tensor(L, lunar_tensor_to_dtype(lunar_check_tensor(L, 1), opt_dtype(L, 2))); return 1; }

static int m_copy_(lua_State *L) {
    if (lunar_tensor_copy(lunar_check_tensor(L, 1), lunar_check_tensor(L, 2))) return lunar_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int m_fill_(lua_State *L) {
    if (lunar_tensor_fill(lunar_check_tensor(L, 1), luaL_checknumber(L, 2))) return lunar_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int m_zero_(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    if (lunar_tensor_device(t) == LUNAR_CPU && lunar_tensor_is_contiguous(t))
        memset(lunar_tensor_data(t), 0, lunar_tensor_nbytes(t));
    else if (lunar_tensor_fill(t, 0)) return lunar_raise(L);
    lua_settop(L, 1);
    return 1;
}

static int m_item(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    if (lunar_tensor_numel(t) != 1) return luaL_error(L, "item: tensor has %d elements, expected 1", (int)lunar_tensor_numel(t));
    lua_pushnumber(L, lunar_tensor_get(t, 0));
    return 1;
}

static void push_number(lua_State *L, const lunar_tensor *t, double v) {
    if (t->dtype == LUNAR_I32 || t->dtype == LUNAR_I64 || t->dtype == LUNAR_U8) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static void totable_rec(lua_State *L, const lunar_tensor *t, int d, int64_t *flat) {
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (d == t->ndim - 1) push_number(L, t, lunar_tensor_get(t, (*flat)++));
        else totable_rec(L, t, d + 1, flat);
        lua_rawseti(L, -2, i + 1);
    }
}

static int m_totable(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1), *h = host_copy(L, t);
    if (h) t = h;
    int64_t flat = 0;
    if (t->ndim == 0) push_number(L, t, lunar_tensor_get(t, 0));
    else totable_rec(L, t, 0, &flat);
    lunar_tensor_free(h);
    return 1;
}

static int m_free(lua_State *L) {
    tensor_ud *u = check_ud(L, 1);
    if (u->t) lunar_tensor_release(u->t);
    return 0;
}

static int m_gc(lua_State *L) {
    tensor_ud *u = check_ud(L, 1);
    lunar_tensor_free(u->t);
    u->t = NULL;
    return 0;
}

/* The reductions are core ops (ops.h: lunar_op_sum ..., any dtype, layout and
 * device, NaN propagating as in PyTorch); a failure raises its message. */
static int push_reduction(lua_State *L, lunar_status (*op)(double *, const lunar_tensor *)) {
    double v = 0;
    if (op(&v, lunar_check_tensor(L, 1))) return lunar_raise(L);
    lua_pushnumber(L, v);
    return 1;
}

static int m_sum(lua_State *L) { return push_reduction(L, lunar_op_sum); }
static int m_mean(lua_State *L) { return push_reduction(L, lunar_op_mean); }
static int m_min(lua_State *L) { return push_reduction(L, lunar_op_min); }
static int m_max(lua_State *L) { return push_reduction(L, lunar_op_max); }
static int m_norm(lua_State *L) { return push_reduction(L, lunar_op_norm); }

static uint64_t stream_arg(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TSTRING) return lunar_rng_stream_id(lua_tostring(L, idx));
    return (uint64_t)luaL_checkinteger(L, idx);
}

/* The f32 data to fill: the tensor's own on the host, or a host staging
 * buffer for a device tensor (*staged set; finish_fill copies it over). */
static float *f32_contig(lua_State *L, int idx, const char *op, lunar_tensor **staged) {
    lunar_tensor *t = lunar_check_tensor(L, idx);
    *staged = NULL;
    if (t->dtype != LUNAR_F32 || !lunar_tensor_is_contiguous(t))
        luaL_error(L, "%s: needs a contiguous f32 tensor", op);
    if (lunar_tensor_device(t) == LUNAR_CPU) return lunar_tensor_data(t);
    *staged = lunar_tensor_new(LUNAR_F32, t->ndim, t->shape, LUNAR_CPU);
    if (!*staged) lunar_raise(L);
    return lunar_tensor_data(*staged);
}

static void finish_fill(lua_State *L, int idx, lunar_tensor *staged) {
    if (!staged) return;
    lunar_status st = lunar_tensor_copy(lunar_check_tensor(L, idx), staged);
    lunar_tensor_free(staged);
    if (st) lunar_raise(L);
}

/* t:normal_(seed, name, mean, std [, offset]) */
static int m_normal_(lua_State *L) {
    lunar_tensor *staged;
    float *p = f32_contig(L, 1, "normal_", &staged);
    lunar_rng_normal(p, (size_t)lunar_tensor_numel(lunar_check_tensor(L, 1)), (uint64_t)luaL_checkinteger(L, 2),
                     stream_arg(L, 3), (uint64_t)luaL_optinteger(L, 6, 0), (float)luaL_optnumber(L, 4, 0),
                     (float)luaL_optnumber(L, 5, 1));
    finish_fill(L, 1, staged);
    lua_settop(L, 1);
    return 1;
}

/* t:uniform_(seed, name, low, high [, offset]) */
static int m_uniform_(lua_State *L) {
    lunar_tensor *staged;
    float *p = f32_contig(L, 1, "uniform_", &staged);
    lunar_rng_uniform(p, (size_t)lunar_tensor_numel(lunar_check_tensor(L, 1)), (uint64_t)luaL_checkinteger(L, 2),
                      stream_arg(L, 3), (uint64_t)luaL_optinteger(L, 6, 0), (float)luaL_optnumber(L, 4, 0),
                      (float)luaL_optnumber(L, 5, 1));
    finish_fill(L, 1, staged);
    lua_settop(L, 1);
    return 1;
}

/* t:trunc_normal_(seed, name, mean, std, a, b [, offset]) */
static int m_trunc_normal_(lua_State *L) {
    lunar_tensor *staged;
    float *p = f32_contig(L, 1, "trunc_normal_", &staged);
    lunar_rng_trunc_normal(p, (size_t)lunar_tensor_numel(lunar_check_tensor(L, 1)), (uint64_t)luaL_checkinteger(L, 2),
                           stream_arg(L, 3), (uint64_t)luaL_optinteger(L, 8, 0), (float)luaL_optnumber(L, 4, 0),
                           (float)luaL_optnumber(L, 5, 1), (float)luaL_optnumber(L, 6, -2), (float)luaL_optnumber(L, 7, 2));
    finish_fill(L, 1, staged);
    lua_settop(L, 1);
    return 1;
}

// ----------------------------------------------------------------------------
// metamethods

static int mt_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lunar_tensor *t = lunar_check_tensor(L, 1);
        lua_Integer i = luaL_checkinteger(L, 2);
        if (t->ndim == 0) return luaL_error(L, "cannot index a 0-dim tensor");
        if (i < 1 || i > t->shape[0]) return luaL_error(L, "index %d out of range [1, %d]", (int)i, (int)t->shape[0]);
        if (t->ndim == 1) { push_number(L, t, lunar_tensor_get(t, i - 1)); return 1; }
        lunar_push_tensor(L, lunar_tensor_select(t, 0, i - 1));
        return 1;
    }
    lua_getmetatable(L, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int mt_newindex(lua_State *L) {
    lunar_tensor *t = lunar_check_tensor(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (t->ndim == 0 || i < 1 || i > t->shape[0]) return luaL_error(L, "index %d out of range", (int)i);
    if (t->ndim == 1) {
        if (lunar_tensor_set(t, i - 1, luaL_checknumber(L, 3))) return lunar_raise(L);
        return 0;
    }
    lunar_tensor *row = lunar_tensor_select(t, 0, i - 1);
    if (!row) return lunar_raise(L);
    lunar_status st = lua_isnumber(L, 3) ? lunar_tensor_fill(row, lua_tonumber(L, 3))
                                         : lunar_tensor_copy(row, lunar_check_tensor(L, 3));
    lunar_tensor_free(row);
    if (st) return lunar_raise(L);
    return 0;
}

static int mt_len(lua_State *L) {
    lunar_tensor *t = check_ud(L, 1)->t;
    lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
    return 1;
}

/* t + u, t - u, t * u, t / u and -t: lunar_op_arith (ops.h) on the device of the
 * tensor operand, either operand a number; the result is f64 when a tensor operand
 * is f64 (on the CPU), else f32. */
static int arith(lua_State *L, int op) {
    lunar_tensor *a = lua_isuserdata(L, 1) ? lunar_check_tensor(L, 1) : NULL;
    lunar_tensor *b = lua_isuserdata(L, 2) ? lunar_check_tensor(L, 2) : NULL;
    double sa = a ? 0 : luaL_checknumber(L, 1), sb = b ? 0 : luaL_checknumber(L, 2);
    const lunar_tensor *ref = a ? a : b;
    int f64 = (a && a->dtype == LUNAR_F64) || (b && b->dtype == LUNAR_F64);
    lunar_tensor *out = lunar_tensor_new(f64 ? LUNAR_F64 : LUNAR_F32, ref->ndim, ref->shape, lunar_tensor_device(ref));
    lunar_push_tensor(L, out);   /* raises when out is NULL; collected on an error below */
    if (lunar_op_arith(out, a, sa, b, sb, op)) return lunar_raise(L);
    return 1;
}

static int mt_add(lua_State *L) { return arith(L, LUNAR_ARITH_ADD); }
static int mt_sub(lua_State *L) { return arith(L, LUNAR_ARITH_SUB); }
static int mt_mul(lua_State *L) { return arith(L, LUNAR_ARITH_MUL); }
static int mt_div(lua_State *L) { return arith(L, LUNAR_ARITH_DIV); }
static int mt_unm(lua_State *L) {   /* -t = t * -1 (exact) */
    lua_settop(L, 1);
    lua_pushnumber(L, -1);
    return arith(L, LUNAR_ARITH_MUL);
}
/* t:rsqrt([eps]) = 1/sqrt(t + eps) (eps a number, default 0; torch.rsqrt(t + eps)),
 * one kernel on t's device: the rstd of a normalization without a host round trip. */
static int m_rsqrt(lua_State *L) {
    lunar_check_tensor(L, 1);
    double eps = luaL_optnumber(L, 2, 0);
    lua_settop(L, 1);
    lua_pushnumber(L, eps);
    return arith(L, LUNAR_ARITH_RSQRT_ADD);
}

static void fmt_value(luaL_Buffer *b, const lunar_tensor *t, double v) {
    char s[64];
    if (t->dtype == LUNAR_I32 || t->dtype == LUNAR_I64 || t->dtype == LUNAR_U8) snprintf(s, sizeof s, "%lld", (long long)v);
    else snprintf(s, sizeof s, "%.6g", v);
    luaL_addstring(b, s);
}

static void fmt_rec(luaL_Buffer *b, const lunar_tensor *t, int d, int64_t *flat) {
    luaL_addchar(b, '[');
    for (int64_t i = 0; i < t->shape[d]; i++) {
        if (i) luaL_addstring(b, ", ");
        if (d == t->ndim - 1) fmt_value(b, t, lunar_tensor_get(t, (*flat)++));
        else fmt_rec(b, t, d + 1, flat);
    }
    luaL_addchar(b, ']');
}

/* "tensor([2, 3], f32, cpu, min=.. max=.. mean=.. std=..)", the statistics from
 * the reduction ops on t's device, then the values when there are at most 32
 * (from a host copy of a device tensor). */
static int mt_tostring(lua_State *L) {
    lunar_tensor *t = check_ud(L, 1)->t;
    char shape[160], s[256], dname[32];
    int dev = lunar_tensor_device(t);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lunar_shape_str(t, shape, sizeof shape);
    if (dev == LUNAR_CPU) snprintf(dname, sizeof dname, "cpu");
    else snprintf(dname, sizeof dname, "cuda:%d", dev);
    snprintf(s, sizeof s, "tensor(%s, %s, %s", shape, lunar_dtype_name(t->dtype), dname);
    luaL_addstring(&b, s);
    if (!t->storage) {
        luaL_addstring(&b, ", released)");
        luaL_pushresult(&b);
        return 1;
    }
    int64_t n = lunar_tensor_numel(t);
    if (n > 0) {   /* population std from the mean and the norm */
        double mn, mx, mean, norm;
        if (lunar_op_min(&mn, t) || lunar_op_max(&mx, t) || lunar_op_mean(&mean, t) || lunar_op_norm(&norm, t))
            return lunar_raise(L);
        double var = norm * norm / (double)n - mean * mean;
        snprintf(s, sizeof s, ", min=%.6g max=%.6g mean=%.6g std=%.6g", mn, mx, mean, sqrt(var > 0 ? var : 0));
        luaL_addstring(&b, s);
    }
    luaL_addchar(&b, ')');
    if (t->ndim == 0 || (n > 0 && n <= 32)) {
        lunar_tensor *h = host_copy(L, t);
        const lunar_tensor *v = h ? h : t;
        luaL_addchar(&b, '\n');
        if (t->ndim == 0) {
            fmt_value(&b, v, lunar_tensor_get(v, 0));
        } else {
            int64_t flat = 0;
            fmt_rec(&b, v, 0, &flat);
        }
        lunar_tensor_free(h);
    }
    luaL_pushresult(&b);
    return 1;
}

static const luaL_Reg methods[] = {
    {"shape", m_shape}, {"size", m_size}, {"dim", m_dim}, {"numel", m_numel}, {"dtype", m_dtype},
    {"device", m_device}, {"is_contiguous", m_is_contiguous}, {"nbytes", m_nbytes},
    {"is_released", m_released}, {"view", m_view}, {"reshape", m_view}, {"narrow", m_narrow},
    {"select", m_select}, {"transpose", m_transpose}, {"permute", m_permute},
    {"contiguous", m_contiguous}, {"clone", m_clone}, {"to", m_to}, {"copy_", m_copy_},
    {"fill_", m_fill_}, {"zero_", m_zero_}, {"item", m_item}, {"totable", m_totable},
    {"free", m_free}, {"sum", m_sum}, {"mean", m_mean}, {"min", m_min}, {"max", m_max},
    {"norm", m_norm}, {"rsqrt", m_rsqrt}, {"normal_", m_normal_}, {"uniform_", m_uniform_},
    {"trunc_normal_", m_trunc_normal_},
    {"__index", mt_index}, {"__newindex", mt_newindex}, {"__len", mt_len}, {"__gc", m_gc},
    {"__close", m_free}, {"__tostring", mt_tostring}, {"__add", mt_add}, {"__sub", mt_sub},
    {"__mul", mt_mul}, {"__div", mt_div}, {"__unm", mt_unm}, {NULL, NULL}};

static const luaL_Reg functions[] = {
    {"empty", l_empty}, {"zeros", l_zeros}, {"ones", l_ones}, {"full", l_full}, {"tensor", l_tensor},
    {NULL, NULL}};

static int l_is_tensor(lua_State *L) {
    lua_pushboolean(L, luaL_testudata(L, 1, LUNAR_TENSOR_MT) != NULL);
    return 1;
}

/* Adds the tensor functions to the table on the top of the stack. */
void lunar_open_tensor(lua_State *L) {
    luaL_newmetatable(L, LUNAR_TENSOR_MT);
    luaL_setfuncs(L, methods, 0);
    lua_pushstring(L, "Tensor");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    luaL_setfuncs(L, functions, 0);
    lua_pushcfunction(L, l_is_tensor);
    lua_setfield(L, -2, "is_tensor");
}
