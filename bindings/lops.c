/*
 * bindings/lops.c: the ops of ops.h as Lua functions in `lunar.ops`. Each
 * forward allocates and returns its outputs; each backward takes the
 * parameter-gradient tensors to accumulate into and returns the new input
 * gradient. Shapes are those of kernels.h; the output shapes come from ops.h
 * (lunar_op_*_out_shape), which checks them as the op does: the bindings infer
 * no shape. A failing check raises a Lua error whose message names the op and
 * the shapes. Outputs are allocated on the
 * device of the first tensor argument, so the ops run on CUDA tensors as they
 * are (ops.c checks that every tensor argument is on that device).
 *
 *   y = ops.linear(x, w [, b])                    x [..., K], w [N, K] -> y [..., N]
 *   dx = ops.linear_backward(dy, x, w, dw [, db [, need_dx=true]])
 *   p = ops.patchify(img, P)                      [B, C, S..] -> [B, L, C*P^k]
 *   dimg = ops.patchify_backward(dp, img_shape, P)
 *   y, mean, rstd = ops.layernorm(x, w, b, eps)
 *   dx = ops.layernorm_backward(dy, x, w, mean, rstd, dw, db)
 *   y = ops.gelu(x);  dx = ops.gelu_backward(dy, x)
 *   o, lse = ops.attention(qkv, H);  dqkv = ops.attention_backward(do, qkv, o, lse, H)
 *   o, lse = ops.sdpa(q, k, v, H [, bias]);  dq, dk, dv = ops.sdpa_backward(do, q, k, v, o, lse, H [, bias])
 *                                   general attention: q [B, L, E], k, v [B, S, E], bias [B, H, L, S]
 *                                   additive (CPU only; masks and cross-attention of nn.MultiheadAttention)
 *   bias = ops.sdpa_mask({B, H, L, S}, attn_mask|nil, key_padding_mask|nil [, 'f32'|'f64'])
 *                                   PyTorch's masks (u8 = bool: nonzero -> -inf; float: added) summed
 *   t = ops.embed_tokens(x, cls, pos);  dx = ops.embed_tokens_backward(dt, dcls, dpos [, need_dx])
 *   y = ops.dropout(x, p, seed, stream, offset);  dx = ops.dropout_backward(dy, p, seed, stream, offset)
 *     ... [, row_len, row_stride]: x is rows of row_len elements row_stride apart in a larger tensor
 *     whose element (r, c) draws the word offset + r row_stride + c (lunar_op_dropout_rows)
 *   loss = ops.cross_entropy(logits, targets, smoothing)   (targets: i32 [B])
 *   dlogits = ops.cross_entropy_backward(logits, targets, smoothing, dloss)
 *   n = ops.accuracy_count(logits, targets)
 *   z = ops.add(a, b);  ops.add_(a, b) (a += b);  ops.scale_(x, s)
 *   ops.adamw_step(p, m, v, g, lr, beta1, beta2, eps, wd, t)
 *   ops.sgd_step(p, buf|nil, g, lr, momentum, wd, nesterov, first)
 *   ops.sum_squares(x) -> number (double accumulation)
 * f64 (nn.gradcheck): the ops of the models-as-code leaves (linear, patchify, layernorm, gelu,
 * rmsnorm, activation, attention, embed_tokens, dropout, add, scale_) take f64 operands, all of
 * one real dtype, and return f64 outputs, computed by the double reference kernels
 * (lunar_ref_*_f64) on the CPU while ops.use_reference_kernels(true) is set; elsewhere an
 * f64 operand is an error that says so.
 * bf16 mixed precision (precision = 'bf16'; ops.h):
 *   y = ops.linear(x, w16 [, b [, 'bf16']])   a bf16 weight: the bf16 GEMM; x f32 or bf16;
 *                                   y f32, or bf16 with 'bf16' (rounded once from the fp32 sums)
 *   dx = ops.linear_backward(dy, x, w16, dw [, db [, need_dx]])   dy f32 or bf16; dx, dw, db f32
 *   o, lse = ops.attention(qkv16, H)   bf16 qkv: o bf16, lse f32 (cuDNN's fused attention on CUDA)
 *   dqkv = ops.attention_backward(do16, qkv16, o16, lse, H)   all bf16 but lse; dqkv bf16
 *   dx = ops.gelu_backward(dy, x16 [, 'bf16'])   a bf16 x (the bf16 fc1 output); dy f32; dx f32,
 *                                   or bf16 with 'bf16' (rounded once: fc1's backward GEMM operand)
 *   y, mean, rstd = ops.layernorm(x, w, b, eps, 'bf16')   y bf16 (mean, rstd f32)
 *   y = ops.gelu(x, 'bf16')                                y bf16 (x f32 or bf16)
 *   h = ops.cast_bf16(x);  ops.cast_bf16_(h, x)            f32 -> bf16 (new, or into h)
 *   ops.adamw_step_bf16(p, p16, m, v, g, lr, beta1, beta2, eps, wd, t)
 *   ops.sgd_step_bf16(p, p16, buf|nil, g, lr, momentum, wd, nesterov, first)
 *                                   the step, and p16 = bf16(p) in the same pass
 *   ok, why = ops.bf16_supported([device])   true, or false and the reason
 */
#include <string.h>

#include "lunar_bindings.h"
#include "lunar/ops.h"
#include "lunar/rng.h"

#define T(i) lunar_check_tensor(L, i)
#define TOPT(i) lunar_opt_tensor(L, i)
#define TRY(expr) do { if (expr) return lunar_raise(L); } while (0)

/* A new output on the device of the op's first tensor argument (stack index 1;
 * ops.c checks that all arguments share it). */
static lunar_tensor *new_like_shape(lua_State *L, int ndim, const int64_t *shape, lunar_dtype dt) {
    lunar_tensor *t = lunar_tensor_new(dt, ndim, shape, lunar_tensor_device(lunar_check_tensor(L, 1)));
    if (!t) lunar_raise(L);
    lunar_push_tensor(L, t);
    return t;
}

/* The real dtype of an op's outputs: f64 for an f64 operand t (nn.gradcheck: the
 * reference kernels in double, ops.c), else f32. */
static lunar_dtype real_of(const lunar_tensor *t) { return t->dtype == LUNAR_F64 ? LUNAR_F64 : LUNAR_F32; }

/* A new real output of ref's shape (f64 for an f64 ref, else f32). */
static lunar_tensor *new_like(lua_State *L, const lunar_tensor *ref) {
    return new_like_shape(L, ref->ndim, ref->shape, real_of(ref));
}

static uint64_t stream_arg(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TSTRING) return lunar_rng_stream_id(lua_tostring(L, idx));
    return (uint64_t)luaL_optinteger(L, idx, 0);
}

/* The optional output dtype argument of the ops with a bf16 output: nil or
 * 'f32' (the default) or 'bf16'. */
static lunar_dtype out_dtype_arg(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return real_of(lunar_check_tensor(L, 1));   /* f64 for an f64 x */
    const char *s = luaL_checkstring(L, idx);
    if (!strcmp(s, "f32")) return LUNAR_F32;
    if (!strcmp(s, "bf16")) return LUNAR_BF16;
    luaL_argerror(L, idx, lua_pushfstring(L, "output dtype must be 'f32' or 'bf16', got '%s'", s));
    return LUNAR_F32;
}

static int l_linear(lua_State *L) {
    lunar_tensor *x = T(1), *w = T(2), *b = TOPT(3);
    int64_t shape[LUNAR_MAX_DIMS];
    int nd;
    TRY(lunar_op_linear_out_shape(&nd, shape, x, w));
    lunar_tensor *y = new_like_shape(L, nd, shape, out_dtype_arg(L, 4));
    TRY(lunar_op_linear_forward(y, x, w, b));
    return 1;
}

static int l_linear_backward(lua_State *L) {
    lunar_tensor *dy = T(1), *x = T(2), *w = T(3), *dw = T(4), *db = TOPT(5);
    int need_dx = lua_isnoneornil(L, 6) ? 1 : lua_toboolean(L, 6);
    lunar_tensor *dx = need_dx ? new_like(L, x) : NULL;
    TRY(lunar_op_linear_backward(dx, dw, db, dy, x, w));
    if (!dx) lua_pushnil(L);
    return 1;
}

static int l_patchify(lua_State *L) {
    lunar_tensor *img = T(1);
    int P = (int)luaL_checkinteger(L, 2);
    int64_t shape[3];
    TRY(lunar_op_patchify_out_shape(shape, img, P));
    lunar_tensor *out = new_like_shape(L, 3, shape, real_of(img));
    TRY(lunar_op_patchify_forward(out, img, P));
    return 1;
}

static int l_patchify_backward(lua_State *L) {
    lunar_tensor *dp = T(1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int64_t shape[LUNAR_MAX_DIMS];
    int nd = (int)luaL_len(L, 2);
    if (nd < 1 || nd > LUNAR_MAX_DIMS) return luaL_error(L, "patchify_backward: bad image shape");
    for (int i = 0; i < nd; i++) { lua_geti(L, 2, i + 1); shape[i] = lua_tointeger(L, -1); lua_pop(L, 1); }
    lunar_tensor *dimg = new_like_shape(L, nd, shape, real_of(dp));
    TRY(lunar_op_patchify_backward(dimg, dp, (int)luaL_checkinteger(L, 3)));
    return 1;
}

static int l_layernorm(lua_State *L) {
    lunar_tensor *x = T(1), *w = T(2), *b = T(3);
    float eps = (float)luaL_optnumber(L, 4, 1e-5);
    lunar_dtype odt = out_dtype_arg(L, 5);
    int64_t rows = lunar_op_layernorm_rows(x);
    lunar_tensor *y = new_like_shape(L, x->ndim, x->shape, odt);
    lunar_tensor *mean = new_like_shape(L, 1, &rows, real_of(x));
    lunar_tensor *rstd = new_like_shape(L, 1, &rows, real_of(x));
    TRY(lunar_op_layernorm_forward(y, mean, rstd, x, w, b, eps));
    return 3;
}

static int l_layernorm_backward(lua_State *L) {
    lunar_tensor *dy = T(1), *x = T(2), *w = T(3), *mean = T(4), *rstd = T(5), *dw = T(6), *db = T(7);
    lunar_tensor *dx = new_like(L, x);
    TRY(lunar_op_layernorm_backward(dx, dw, db, dy, x, w, mean, rstd));
    return 1;
}

static int l_gelu(lua_State *L) {
    lunar_tensor *x = T(1);
    lunar_dtype odt = out_dtype_arg(L, 2);
    lunar_tensor *y = new_like_shape(L, x->ndim, x->shape, odt);
    TRY(lunar_op_gelu_forward(y, x));
    return 1;
}

static int l_gelu_backward(lua_State *L) {
    lunar_tensor *dy = T(1), *x = T(2), *dx = new_like_shape(L, x->ndim, x->shape, out_dtype_arg(L, 3));
    TRY(lunar_op_gelu_backward(dx, dy, x));
    return 1;
}

/* lunar.ops.rmsnorm(x, weight, eps) -> y, rstd (ops.h). */
static int l_rmsnorm(lua_State *L) {
    lunar_tensor *x = T(1), *w = T(2);
    float eps = (float)luaL_optnumber(L, 3, 1e-6);
    int64_t rows = lunar_op_layernorm_rows(x);
    lunar_tensor *y = new_like(L, x);
    lunar_tensor *rstd = new_like_shape(L, 1, &rows, real_of(x));
    TRY(lunar_op_rmsnorm_forward(y, rstd, x, w, eps));
    return 2;
}

/* lunar.ops.rmsnorm_backward(dy, x, weight, rstd, dweight) -> dx (dweight accumulated). */
static int l_rmsnorm_backward(lua_State *L) {
    lunar_tensor *dy = T(1), *x = T(2), *w = T(3), *rstd = T(4), *dw = T(5);
    lunar_tensor *dx = new_like(L, x);
    TRY(lunar_op_rmsnorm_backward(dx, dw, dy, x, w, rstd));
    return 1;
}

/* lunar.ops.resize_bicubic(x, oh, ow [, antialias]) -> y: x [H, W, C] or [N, H, W, C] f32 on
 * the CPU, y [OH, OW, C] or [N, OH, OW, C]; antialias (boolean, default true: timm's
 * resample_abs_pos_embed) as F.interpolate's (ops.h lunar_op_resize_bicubic). */
static int l_resize_bicubic(lua_State *L) {
    lunar_tensor *x = T(1);
    int64_t oh = luaL_checkinteger(L, 2), ow = luaL_checkinteger(L, 3);
    int aa = lua_isnoneornil(L, 4) ? 1 : lua_toboolean(L, 4);
    if (x->ndim != 3 && x->ndim != 4) return luaL_error(L, "resize_bicubic: x must be [H, W, C] or [N, H, W, C]");
    if (oh < 1 || ow < 1) return luaL_error(L, "resize_bicubic: output size %d x %d must be positive", (int)oh, (int)ow);
    int64_t shape[4];
    for (int d = 0; d < x->ndim; d++) shape[d] = x->shape[d];
    shape[x->ndim - 3] = oh;
    shape[x->ndim - 2] = ow;
    lunar_tensor *y = new_like_shape(L, x->ndim, shape, x->dtype);
    TRY(lunar_op_resize_bicubic(y, x, aa));
    return 1;
}

/* kind of lunar.ops.activation: 'relu' | 'silu' | 'gelu_tanh' -> LUNAR_ACT_* */
static int act_kind_arg(lua_State *L, int idx) {
    static const char *const names[] = {"relu", "silu", "gelu_tanh", NULL};
    static const int kinds[] = {LUNAR_ACT_RELU, LUNAR_ACT_SILU, LUNAR_ACT_GELU_TANH};
    return kinds[luaL_checkoption(L, idx, NULL, names)];
}

/* lunar.ops.activation(x, kind) -> y: kind 'relu' | 'silu' | 'gelu_tanh' (ops.h). */
static int l_activation(lua_State *L) {
    lunar_tensor *x = T(1);
    int kind = act_kind_arg(L, 2);
    lunar_tensor *y = new_like(L, x);
    TRY(lunar_op_activation_forward(y, x, kind));
    return 1;
}

/* lunar.ops.activation_backward(dy, x, kind) -> dx = dy * act'(x). */
static int l_activation_backward(lua_State *L) {
    lunar_tensor *dy = T(1), *x = T(2);
    int kind = act_kind_arg(L, 3);
    lunar_tensor *dx = new_like(L, x);
    TRY(lunar_op_activation_backward(dx, dy, x, kind));
    return 1;
}

static int l_attention(lua_State *L) {
    lunar_tensor *qkv = T(1);
    int H = (int)luaL_checkinteger(L, 2);
    int64_t oshape[3], lshape[3];
    TRY(lunar_op_attention_out_shapes(oshape, lshape, qkv, H));
    lunar_tensor *o = new_like_shape(L, 3, oshape, qkv->dtype);   /* bf16 for a bf16 qkv */
    lunar_tensor *lse = new_like_shape(L, 3, lshape, real_of(qkv));
    TRY(lunar_op_attention_forward(o, lse, qkv, H));
    return 2;
}

static int l_attention_backward(lua_State *L) {
    lunar_tensor *dout = T(1), *qkv = T(2), *o = T(3), *lse = T(4);
    int H = (int)luaL_checkinteger(L, 5);
    lunar_tensor *dqkv = new_like_shape(L, qkv->ndim, qkv->shape, qkv->dtype);
    TRY(lunar_op_attention_backward(dqkv, dout, qkv, o, lse, H));
    return 1;
}

/* lunar.ops.sdpa(q, k, v, H [, bias]) -> o, lse (ops.h lunar_op_sdpa_forward). */
static int l_sdpa(lua_State *L) {
    lunar_tensor *q = T(1), *k = T(2), *v = T(3), *bias = TOPT(5);
    int H = (int)luaL_checkinteger(L, 4);
    int64_t lshape[3] = {q->ndim == 3 ? q->shape[0] : 0, H, q->ndim == 3 ? q->shape[1] : 0};
    lunar_tensor *o = new_like(L, q);
    lunar_tensor *lse = new_like_shape(L, 3, lshape, real_of(q));
    TRY(lunar_op_sdpa_forward(o, lse, q, k, v, bias, H));
    return 2;
}

/* lunar.ops.sdpa_backward(do, q, k, v, o, lse, H [, bias]) -> dq, dk, dv. */
static int l_sdpa_backward(lua_State *L) {
    lunar_tensor *dout = T(1), *q = T(2), *k = T(3), *v = T(4), *o = T(5), *lse = T(6), *bias = TOPT(8);
    int H = (int)luaL_checkinteger(L, 7);
    lunar_tensor *dq = new_like(L, q), *dk = new_like(L, k), *dv = new_like(L, v);
    TRY(lunar_op_sdpa_backward(dq, dk, dv, dout, q, k, v, o, lse, bias, H));
    return 3;
}

/* lunar.ops.sdpa_mask({B, H, L, S}, attn_mask|nil, key_padding_mask|nil [, dtype='f32']) -> bias
 * [B, H, L, S] on the CPU (ops.h lunar_op_sdpa_mask). */
static int l_sdpa_mask(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int64_t shape[4];
    if (luaL_len(L, 1) != 4) return luaL_error(L, "sdpa_mask: the shape must be {B, H, L, S}");
    for (int i = 0; i < 4; i++) { lua_geti(L, 1, i + 1); shape[i] = lua_tointeger(L, -1); lua_pop(L, 1); }
    lunar_tensor *am = TOPT(2), *kpm = TOPT(3);
    const char *dt = luaL_optstring(L, 4, "f32");
    lunar_tensor *bias = lunar_tensor_new(strcmp(dt, "f64") ? LUNAR_F32 : LUNAR_F64, 4, shape, LUNAR_CPU);
    if (!bias) return lunar_raise(L);
    lunar_push_tensor(L, bias);
    TRY(lunar_op_sdpa_mask(bias, am, kpm));
    return 1;
}

/* lunar.ops.attention_block(qkv, kv, H [, out, lse]) -> out, lse: the queries of qkv
 * [B, Nq, 3C] against the key/value block kv [B, Nk, 2C]; with out [B, Nq, C] and lse
 * [B, H, Nq] given, the block is merged into them (in place, log-sum-exp) and they are
 * returned (ops.h lunar_op_attention_block_forward; ring attention). */
static int l_attention_block(lua_State *L) {
    lunar_tensor *qkv = T(1), *kv = T(2);
    int H = (int)luaL_checkinteger(L, 3);
    if (!lua_isnoneornil(L, 4)) {
        lunar_tensor *o = T(4), *lse = T(5);
        TRY(lunar_op_attention_block_forward(o, lse, qkv, kv, H, 1));
        lua_pushvalue(L, 4);
        lua_pushvalue(L, 5);
        return 2;
    }
    int64_t oshape[3], lshape[3];
    TRY(lunar_op_attention_out_shapes(oshape, lshape, qkv, H));
    lunar_tensor *o = new_like_shape(L, 3, oshape, LUNAR_F32);
    lunar_tensor *lse = new_like_shape(L, 3, lshape, LUNAR_F32);
    TRY(lunar_op_attention_block_forward(o, lse, qkv, kv, H, 0));
    return 2;
}

/* lunar.ops.attention_block_backward(dqkv, dkv, dout, qkv, kv, out, lse, H): accumulates the
 * q part of dqkv [B, Nq, 3C] and dkv [B, Nk, 2C] in place (ops.h
 * lunar_op_attention_block_backward); returns nothing. */
static int l_attention_block_backward(lua_State *L) {
    TRY(lunar_op_attention_block_backward(T(1), T(2), T(3), T(4), T(5), T(6), T(7), (int)luaL_checkinteger(L, 8)));
    return 0;
}

static int l_embed_tokens(lua_State *L) {
    lunar_tensor *x = T(1), *cls = T(2), *pos = T(3);
    int64_t shape[3];
    TRY(lunar_op_embed_tokens_out_shape(shape, x));
    lunar_tensor *out = new_like_shape(L, 3, shape, real_of(x));
    TRY(lunar_op_embed_tokens_forward(out, x, cls, pos));
    return 1;
}

static int l_embed_tokens_backward(lua_State *L) {
    lunar_tensor *dout = T(1), *dcls = T(2), *dpos = T(3);
    int need_dx = lua_isnoneornil(L, 4) ? 1 : lua_toboolean(L, 4);
    lunar_tensor *dx = NULL;
    if (need_dx) {
        int64_t shape[3];
        TRY(lunar_op_embed_tokens_dx_shape(shape, dout));
        dx = new_like_shape(L, 3, shape, real_of(dout));
    }
    TRY(lunar_op_embed_tokens_backward(dx, dcls, dpos, dout));
    if (!dx) lua_pushnil(L);
    return 1;
}

/* dropout and its backward; with row_len and row_stride (args 6, 7) the rows
 * form (lunar_op_dropout_rows), the same for both directions. */
static int dropout_either(lua_State *L, int backward) {
    lunar_tensor *x = T(1);
    float p = (float)luaL_checknumber(L, 2);
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 3), stream = stream_arg(L, 4);
    uint64_t offset = (uint64_t)luaL_optinteger(L, 5, 0);
    int rows = !lua_isnoneornil(L, 6);
    int64_t row_len = rows ? (int64_t)luaL_checkinteger(L, 6) : 0, row_stride = rows ? (int64_t)luaL_checkinteger(L, 7) : 0;
    lunar_tensor *y = new_like(L, x);   /* pushed: read the arguments first */
    if (rows) {
        TRY(lunar_op_dropout_rows(y, x, p, seed, stream, offset, row_len, row_stride));
    } else if (backward) {
        TRY(lunar_op_dropout_backward(y, x, p, seed, stream, offset));
    } else {
        TRY(lunar_op_dropout_forward(y, x, p, seed, stream, offset));
    }
    return 1;
}

static int l_dropout(lua_State *L) { return dropout_either(L, 0); }
static int l_dropout_backward(lua_State *L) { return dropout_either(L, 1); }

static int l_cross_entropy(lua_State *L) {
    float loss = 0;
    TRY(lunar_op_cross_entropy_forward(&loss, NULL, T(1), T(2), (float)luaL_optnumber(L, 3, 0)));
    lua_pushnumber(L, loss);
    return 1;
}

static int l_cross_entropy_backward(lua_State *L) {
    lunar_tensor *logits = T(1), *dl = new_like(L, logits);
    TRY(lunar_op_cross_entropy_backward(dl, logits, T(2), (float)luaL_optnumber(L, 3, 0),
                                        (float)luaL_optnumber(L, 4, 1)));
    return 1;
}

static int l_accuracy_count(lua_State *L) {
    int64_t n = 0;
    TRY(lunar_op_accuracy_count(&n, T(1), T(2)));
    lua_pushinteger(L, n);
    return 1;
}

static int l_add(lua_State *L) {
    lunar_tensor *a = T(1), *b = T(2), *out = new_like(L, a);
    TRY(lunar_op_add(out, a, b));
    return 1;
}

static int l_add_(lua_State *L) {
    lunar_tensor *a = T(1), *b = T(2);
    TRY(lunar_op_add(a, a, b));
    lua_settop(L, 1);
    return 1;
}

static int l_scale_(lua_State *L) {
    TRY(lunar_op_scale(T(1), (float)luaL_checknumber(L, 2)));
    lua_settop(L, 1);
    return 1;
}

static int l_adamw_step(lua_State *L) {
    /* the scalars stay doubles: the kernel computes 1 - beta and the bias corrections in double */
    TRY(lunar_op_adamw_step(T(1), T(2), T(3), T(4), luaL_checknumber(L, 5), luaL_checknumber(L, 6),
                            luaL_checknumber(L, 7), luaL_checknumber(L, 8), luaL_checknumber(L, 9),
                            (int)luaL_checkinteger(L, 10)));
    return 0;
}

static int l_sgd_step(lua_State *L) {
    TRY(lunar_op_sgd_step(T(1), TOPT(2), T(3), (float)luaL_checknumber(L, 4), (float)luaL_checknumber(L, 5),
                          (float)luaL_checknumber(L, 6), lua_toboolean(L, 7), lua_toboolean(L, 8)));
    return 0;
}

static int l_sum_squares(lua_State *L) {
    double s = 0;
    TRY(lunar_op_sum_squares(&s, T(1)));
    lua_pushnumber(L, s);
    return 1;
}

static int l_cast_bf16(lua_State *L) {
    lunar_tensor *x = T(1), *y = new_like_shape(L, x->ndim, x->shape, LUNAR_BF16);
    TRY(lunar_op_cast_bf16(y, x));
    return 1;
}

static int l_cast_bf16_(lua_State *L) {
    TRY(lunar_op_cast_bf16(T(1), T(2)));
    lua_settop(L, 1);
    return 1;
}

static int l_adamw_step_bf16(lua_State *L) {
    TRY(lunar_op_adamw_step_bf16(T(1), T(2), T(3), T(4), T(5), luaL_checknumber(L, 6), luaL_checknumber(L, 7),
                                 luaL_checknumber(L, 8), luaL_checknumber(L, 9), luaL_checknumber(L, 10),
                                 (int)luaL_checkinteger(L, 11)));
    return 0;
}

static int l_sgd_step_bf16(lua_State *L) {
    TRY(lunar_op_sgd_step_bf16(T(1), T(2), TOPT(3), T(4), (float)luaL_checknumber(L, 5),
                               (float)luaL_checknumber(L, 6), (float)luaL_checknumber(L, 7), lua_toboolean(L, 8),
                               lua_toboolean(L, 9)));
    return 0;
}

static int l_bf16_supported(lua_State *L) {
    int device = lua_isnoneornil(L, 1) ? lunar_bindings_default_device() : lunar_check_device_arg(L, 1);
    char why[512];
    if (lunar_bf16_supported(device, why, sizeof why)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, why);
    return 2;
}

static int l_use_ref(lua_State *L) {
    lunar_backend_use_ref(lua_toboolean(L, 1));
    return 0;
}

static const luaL_Reg ops[] = {
    {"linear", l_linear}, {"linear_backward", l_linear_backward}, {"patchify", l_patchify},
    {"patchify_backward", l_patchify_backward}, {"layernorm", l_layernorm},
    {"layernorm_backward", l_layernorm_backward}, {"gelu", l_gelu}, {"gelu_backward", l_gelu_backward},
    {"resize_bicubic", l_resize_bicubic}, {"activation", l_activation}, {"activation_backward", l_activation_backward},
    {"rmsnorm", l_rmsnorm}, {"rmsnorm_backward", l_rmsnorm_backward},
    {"attention", l_attention}, {"attention_backward", l_attention_backward},
    {"sdpa", l_sdpa}, {"sdpa_backward", l_sdpa_backward}, {"sdpa_mask", l_sdpa_mask},
    {"attention_block", l_attention_block}, {"attention_block_backward", l_attention_block_backward},
    {"embed_tokens", l_embed_tokens}, {"embed_tokens_backward", l_embed_tokens_backward},
    {"dropout", l_dropout}, {"dropout_backward", l_dropout_backward},
    {"cross_entropy", l_cross_entropy}, {"cross_entropy_backward", l_cross_entropy_backward},
    {"accuracy_count", l_accuracy_count}, {"add", l_add}, {"add_", l_add_}, {"scale_", l_scale_},
    {"adamw_step", l_adamw_step}, {"sgd_step", l_sgd_step}, {"sum_squares", l_sum_squares},
    {"cast_bf16", l_cast_bf16}, {"cast_bf16_", l_cast_bf16_}, {"adamw_step_bf16", l_adamw_step_bf16},
    {"sgd_step_bf16", l_sgd_step_bf16}, {"bf16_supported", l_bf16_supported},
    {"use_reference_kernels", l_use_ref}, {NULL, NULL}};

/* Adds lunar.ops to the table on the top of the stack. */
void lunar_open_ops(lua_State *L) {
    luaL_newlib(L, ops);
    lua_setfield(L, -2, "ops");
}
