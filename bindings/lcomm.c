/*
 * bindings/lcomm.c: communicators and collectives (core/include/lunar/comm.h)
 * as `lunar.comm`.
 *
 * Ranks are 0-based everywhere here, like lunar.rank: they are MPI ranks, not
 * Lua indices (root, dst, src, c:rank() are all in 0 .. c:size()-1).
 *
 *   lunar.comm.world() -> c          every rank of the job ("world"); the same
 *                                    object each call. Its MPI_Comm_dup is made
 *                                    when the bindings open (on every rank), so
 *                                    world() itself is not collective. Without
 *                                    MPI: a world of one rank.
 *   c:rank(), c:size(), c:name(), c:set_name(s)
 *   c:split(color [, key=c:rank()] [, name]) -> sub-communicator
 *       collective over c (MPI_Comm_split): ranks with the same color (an
 *       integer >= 0) form a group, ordered by key; named name or
 *       "<c's name>/<color>". Freed by the garbage collector.
 *   tostring(c) -> "comm(world, rank 2 of 4)"
 *
 * Collectives (every rank of c calls them, in the same order). Tensors are
 * contiguous CPU tensors; reductions take f32, f64, i32, i64 (avg: f32, f64);
 * all_gather, broadcast, send/recv also bf16, f16, u8. op is 'sum' (default),
 * 'avg' (the sum divided by c:size()), 'max' or 'min'.
 *   c:all_reduce(t [, op]) -> t                      in place
 *   c:reduce_scatter(out, in [, op]) -> out          #in = size * #out; out on
 *                                                    rank r: block r of the reduction
 *   c:all_gather(out, in) -> out                     #out = size * #in; block r
 *                                                    from rank r (in may be block
 *                                                    c:rank() of out: in place)
 *   c:broadcast(t, root) -> t                        t of rank root (0-based) to all
 *   c:send(t, dst [, tag=0])                         blocking point to point
 *   c:recv(t, src [, tag=0]) -> t                    exactly #t elements must arrive
 *   c:barrier()
 * Non-blocking forms return a request r (the collective is started on every
 * rank in the same order as blocking ones would be):
 *   c:iall_reduce(t [, op]), c:ireduce_scatter(out, in [, op]),
 *   c:iall_gather(out, in), c:isend(t, dst [, tag]), c:irecv(t, src [, tag])
 *   r:wait() -> the result tensor (t, out; nothing for isend); finishes the op
 *               (avg's division happens here); waiting again is a no-op
 *   r:test() -> true when complete (still call wait before using the result)
 *   a request is a to-be-closed value: `local r <close> = c:iall_reduce(t)`
 * The request keeps its tensors (and the communicator) alive until it is
 * waited on, even if they are freed with t:free(); do not write to them
 * before the wait. A request that is garbage collected while in flight is
 * waited on in its __gc, so an MPI request never leaks (it may block there:
 * wait explicitly).
 *
 *   lunar.comm.all_reduce_number(c, x [, op]) -> number   (also c:all_reduce_number)
 *       a Lua number over the ranks, e.g. averaging a loss or a metric;
 *       an integer stays an integer for sum/max/min (i64), otherwise a float.
 *
 * Traffic counters of this process (every communicator; the tensor
 * collectives and sends started from Lua, blocking or not, counted when they
 * start; not all_reduce_number):
 *   lunar.comm.stats() -> {all_reduce = {calls =, bytes =}, reduce_scatter =,
 *       all_gather =, broadcast =, send =, total =}
 *   lunar.comm.reset_stats()
 *   bytes: what this rank sends by the bandwidth term of the standard
 *   algorithms (ring all-reduce, all-gather and reduce-scatter; a tree or
 *   pipelined chain broadcast averaged over the ranks), the quantity the
 *   papers' cost tables count, for a message of n bytes over p ranks:
 *   all_reduce 2(p-1)/p n, reduce_scatter (p-1)/p n (n: in), all_gather
 *   (p-1)/p n (n: out), broadcast (p-1)/p n, send n. Deterministic: it
 *   depends on the shapes and the group sizes only (what MPI's own algorithm
 *   choice moves on the wire may differ).
 *
 * Errors are Lua errors with the C message: "all_gather: comm 'world' (rank 2
 * of 4): out has 10 elements, expected size * in = 4 * 3 = 12". The checks are
 * local; an error on one rank while others wait in a collective ends the job
 * through the host (MPI_Abort), it does not hang.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "lunar_bindings.h"
#include "lunar/comm.h"

#define COMM_MT "lunar.Comm"
#define REQ_MT "lunar.CommRequest"
#define WORLD_KEY "lunar.comm.world"

typedef struct {
    lunar_comm *c;
    int owned;  /* from split: freed by __gc */
} comm_ud;

typedef struct {
    lunar_request *r;
    lunar_tensor *hold[2];  /* views keeping the storages alive while in flight */
    int pending;
    int has_result;         /* wait returns uservalue 1 */
    char op[24];
} req_ud;

/* ---- communicators ------------------------------------------------------------- */

static comm_ud *check_comm_ud(lua_State *L, int idx) { return luaL_checkudata(L, idx, COMM_MT); }

static lunar_comm *check_comm(lua_State *L, int idx) {
    comm_ud *u = check_comm_ud(L, idx);
    if (!u->c) luaL_error(L, "bad argument #%d: communicator was freed", idx);
    return u->c;
}

static void push_comm(lua_State *L, lunar_comm *c, int owned) {
    comm_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->c = c;
    u->owned = owned;
    luaL_setmetatable(L, COMM_MT);
}

static int l_world(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, WORLD_KEY) == LUA_TUSERDATA) return 1;
    lua_pop(L, 1);
    lunar_comm *c = lunar_comm_world();
    if (!c) return lunar_raise(L);
    push_comm(L, c, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, WORLD_KEY);
    return 1;
}

static int m_rank(lua_State *L) { lua_pushinteger(L, lunar_comm_rank(check_comm(L, 1))); return 1; }
static int m_size(lua_State *L) { lua_pushinteger(L, lunar_comm_size(check_comm(L, 1))); return 1; }
static int m_name(lua_State *L) { lua_pushstring(L, lunar_comm_name(check_comm(L, 1))); return 1; }

static int m_set_name(lua_State *L) {
    lunar_comm_set_name(check_comm(L, 1), luaL_checkstring(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int int_arg(lua_State *L, int idx, const char *op, const char *what) {
    lua_Integer v = luaL_checkinteger(L, idx);
    if (v < INT_MIN || v > INT_MAX) luaL_error(L, "%s: %s %I is out of range", op, what, v);
    return (int)v;
}

static int opt_int_arg(lua_State *L, int idx, int def, const char *op, const char *what) {
    return lua_isnoneornil(L, idx) ? def : int_arg(L, idx, op, what);
}

static int m_split(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    int color = int_arg(L, 2, "split", "color");
    int key = opt_int_arg(L, 3, lunar_comm_rank(c), "split", "key");
    const char *name = luaL_optstring(L, 4, NULL);
    lunar_comm *nc = lunar_comm_split(c, color, key);
    if (!nc) return lunar_raise(L);
    if (name) lunar_comm_set_name(nc, name);
    push_comm(L, nc, 1);
    return 1;
}

static int comm_gc(lua_State *L) {
    comm_ud *u = check_comm_ud(L, 1);
    if (u->owned && u->c) lunar_comm_free(u->c);
    u->c = NULL;
    return 0;
}

static int comm_tostring(lua_State *L) {
    comm_ud *u = check_comm_ud(L, 1);
    if (!u->c) lua_pushstring(L, "comm(freed)");
    else lua_pushfstring(L, "comm(%s, rank %d of %d)", lunar_comm_name(u->c),
                         lunar_comm_rank(u->c), lunar_comm_size(u->c));
    return 1;
}

static lunar_reduce_op opt_op(lua_State *L, int idx, const char *opname) {
    if (lua_isnoneornil(L, idx)) return LUNAR_SUM;
    const char *s = luaL_checkstring(L, idx);
    if (strcmp(s, "sum") == 0) return LUNAR_SUM;
    if (strcmp(s, "avg") == 0) return LUNAR_AVG;
    if (strcmp(s, "max") == 0) return LUNAR_MAX;
    if (strcmp(s, "min") == 0) return LUNAR_MIN;
    luaL_error(L, "%s: unknown op '%s' (sum, avg, max, min)", opname, s);
    return LUNAR_SUM;
}

/* ---- traffic counters (lunar.comm.stats) ------------------------------------------ */

enum { ST_ALL_REDUCE, ST_REDUCE_SCATTER, ST_ALL_GATHER, ST_BROADCAST, ST_SEND, ST_N };
static const char *const st_names[ST_N] = {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "send"};
static struct { long long calls; double bytes; } st_counts[ST_N];

/* Counts one call of kind k on c with a message of t's bytes (see the header). */
static void st_count(int k, const lunar_comm *c, const lunar_tensor *t) {
    double p = (double)lunar_comm_size(c), n = (double)lunar_tensor_nbytes(t);
    double f = k == ST_ALL_REDUCE ? 2.0 * (p - 1.0) / p : k == ST_SEND ? 1.0 : (p - 1.0) / p;
    st_counts[k].calls++;
    st_counts[k].bytes += f * n;
}

static void st_push(lua_State *L, long long calls, double bytes) {
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)calls);
    lua_setfield(L, -2, "calls");
    lua_pushnumber(L, bytes);
    lua_setfield(L, -2, "bytes");
}

static int l_stats(lua_State *L) {
    long long calls = 0;
    double bytes = 0;
    lua_createtable(L, 0, ST_N + 1);
    for (int k = 0; k < ST_N; k++) {
        st_push(L, st_counts[k].calls, st_counts[k].bytes);
        lua_setfield(L, -2, st_names[k]);
        calls += st_counts[k].calls;
        bytes += st_counts[k].bytes;
    }
    st_push(L, calls, bytes);
    lua_setfield(L, -2, "total");
    return 1;
}

static int l_reset_stats(lua_State *L) {
    (void)L;
    memset(st_counts, 0, sizeof st_counts);
    return 0;
}

/* ---- blocking ------------------------------------------------------------------ */

static int m_all_reduce(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_tensor *t = lunar_check_tensor(L, 2);
    if (lunar_comm_all_reduce(c, t, opt_op(L, 3, "all_reduce"))) return lunar_raise(L);
    st_count(ST_ALL_REDUCE, c, t);
    lua_settop(L, 2);
    return 1;
}

static int m_reduce_scatter(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_tensor *out = lunar_check_tensor(L, 2), *in = lunar_check_tensor(L, 3);
    if (lunar_comm_reduce_scatter(c, out, in, opt_op(L, 4, "reduce_scatter"))) return lunar_raise(L);
    st_count(ST_REDUCE_SCATTER, c, in);
    lua_settop(L, 2);
    return 1;
}

static int m_all_gather(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_tensor *out = lunar_check_tensor(L, 2), *in = lunar_check_tensor(L, 3);
    if (lunar_comm_all_gather(c, out, in)) return lunar_raise(L);
    st_count(ST_ALL_GATHER, c, out);
    lua_settop(L, 2);
    return 1;
}

static int m_broadcast(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_tensor *t = lunar_check_tensor(L, 2);
    if (lunar_comm_broadcast(c, t, int_arg(L, 3, "broadcast", "root"))) return lunar_raise(L);
    st_count(ST_BROADCAST, c, t);
    lua_settop(L, 2);
    return 1;
}

static int m_send(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_tensor *t = lunar_check_tensor(L, 2);
    int dst = int_arg(L, 3, "send", "dst"), tag = opt_int_arg(L, 4, 0, "send", "tag");
    if (lunar_comm_send(c, t, dst, tag)) return lunar_raise(L);
    st_count(ST_SEND, c, t);
    return 0;
}

static int m_recv(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_tensor *t = lunar_check_tensor(L, 2);
    int src = int_arg(L, 3, "recv", "src"), tag = opt_int_arg(L, 4, 0, "recv", "tag");
    if (lunar_comm_recv(c, t, src, tag)) return lunar_raise(L);
    lua_settop(L, 2);
    return 1;
}

static int m_barrier(lua_State *L) {
    if (lunar_comm_barrier(check_comm(L, 1))) return lunar_raise(L);
    return 0;
}

static int l_all_reduce_number(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    luaL_checknumber(L, 2);
    lunar_reduce_op op = opt_op(L, 3, "all_reduce_number");
    int64_t shape[1] = {1};
    lunar_status st;
    if (lua_isinteger(L, 2) && op != LUNAR_AVG) {
        int64_t v = (int64_t)lua_tointeger(L, 2);
        lunar_tensor *t = lunar_tensor_from_data(&v, LUNAR_I64, 1, shape);
        if (!t) return lunar_raise(L);
        st = lunar_comm_all_reduce(c, t, op);
        lunar_tensor_free(t);
        if (st) return lunar_raise(L);
        lua_pushinteger(L, (lua_Integer)v);
    } else {
        double v = lua_tonumber(L, 2);
        lunar_tensor *t = lunar_tensor_from_data(&v, LUNAR_F64, 1, shape);
        if (!t) return lunar_raise(L);
        st = lunar_comm_all_reduce(c, t, op);
        lunar_tensor_free(t);
        if (st) return lunar_raise(L);
        lua_pushnumber(L, v);
    }
    return 1;
}

/* ---- non-blocking ------------------------------------------------------------------ */

static req_ud *check_req(lua_State *L, int idx) { return luaL_checkudata(L, idx, REQ_MT); }

static void drop_holds(req_ud *u) {
    for (int i = 0; i < 2; i++) {
        lunar_tensor_free(u->hold[i]);
        u->hold[i] = NULL;
    }
}

/* Pushes a request with uservalues 1 = result tensor (stack index res, or 0),
 * 2 = the other tensor (other, or 0), 3 = the communicator (stack index 1),
 * and views of both tensors. Returns the request, on the top of the stack. */
static req_ud *new_req(lua_State *L, const char *op, int res, int other, int has_result) {
    req_ud *u = lua_newuserdatauv(L, sizeof *u, 3);
    memset(u, 0, sizeof *u);
    snprintf(u->op, sizeof u->op, "%s", op);
    u->has_result = has_result;
    luaL_setmetatable(L, REQ_MT);
    int idx[2] = {res, other};
    for (int i = 0; i < 2; i++) {
        if (!idx[i]) continue;
        lua_pushvalue(L, idx[i]);
        lua_setiuservalue(L, -2, i + 1);
        u->hold[i] = lunar_tensor_view(lunar_check_tensor(L, idx[i]));
        if (!u->hold[i]) {
            drop_holds(u);
            lunar_raise(L);
        }
    }
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 3);
    return u;
}

/* After the C call that started the op: raise on failure, else mark it. */
static int started(lua_State *L, req_ud *u, lunar_status st, lunar_request *r) {
    if (st) {
        drop_holds(u);
        return lunar_raise(L);
    }
    u->r = r;
    u->pending = r != NULL;
    if (!u->pending) drop_holds(u);  /* completed at once (one rank) */
    return 1;
}

static int m_iall_reduce(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_check_tensor(L, 2);
    lunar_reduce_op op = opt_op(L, 3, "iall_reduce");
    req_ud *u = new_req(L, "iall_reduce", 2, 0, 1);
    lunar_request *r = NULL;
    lunar_status st = lunar_comm_iall_reduce(c, u->hold[0], op, &r);
    if (!st) st_count(ST_ALL_REDUCE, c, u->hold[0]);
    return started(L, u, st, r);
}

static int m_ireduce_scatter(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_check_tensor(L, 2);
    lunar_check_tensor(L, 3);
    lunar_reduce_op op = opt_op(L, 4, "ireduce_scatter");
    req_ud *u = new_req(L, "ireduce_scatter", 2, 3, 1);
    lunar_request *r = NULL;
    lunar_status st = lunar_comm_ireduce_scatter(c, u->hold[0], u->hold[1], op, &r);
    if (!st) st_count(ST_REDUCE_SCATTER, c, u->hold[1]);
    return started(L, u, st, r);
}

static int m_iall_gather(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_check_tensor(L, 2);
    lunar_check_tensor(L, 3);
    req_ud *u = new_req(L, "iall_gather", 2, 3, 1);
    lunar_request *r = NULL;
    lunar_status st = lunar_comm_iall_gather(c, u->hold[0], u->hold[1], &r);
    if (!st) st_count(ST_ALL_GATHER, c, u->hold[0]);
    return started(L, u, st, r);
}

static int m_isend(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_check_tensor(L, 2);
    int dst = int_arg(L, 3, "isend", "dst"), tag = opt_int_arg(L, 4, 0, "isend", "tag");
    req_ud *u = new_req(L, "isend", 2, 0, 0);
    lunar_request *r = NULL;
    lunar_status st = lunar_comm_isend(c, u->hold[0], dst, tag, &r);
    if (!st) st_count(ST_SEND, c, u->hold[0]);
    return started(L, u, st, r);
}

static int m_irecv(lua_State *L) {
    lunar_comm *c = check_comm(L, 1);
    lunar_check_tensor(L, 2);
    int src = int_arg(L, 3, "irecv", "src"), tag = opt_int_arg(L, 4, 0, "irecv", "tag");
    req_ud *u = new_req(L, "irecv", 2, 0, 1);
    lunar_request *r = NULL;
    lunar_status st = lunar_comm_irecv(c, u->hold[0], src, tag, &r);
    return started(L, u, st, r);
}

/* Finishes a pending request; returns its status (the request is done either way). */
static lunar_status finish(req_ud *u) {
    if (!u->pending) return LUNAR_OK;
    lunar_request *r = u->r;
    u->r = NULL;
    u->pending = 0;
    lunar_status st = lunar_request_wait(r);
    drop_holds(u);
    return st;
}

static int r_wait(lua_State *L) {
    req_ud *u = check_req(L, 1);
    if (finish(u)) return lunar_raise(L);
    if (!u->has_result) return 0;
    lua_getiuservalue(L, 1, 1);
    return 1;
}

static int r_test(lua_State *L) {
    req_ud *u = check_req(L, 1);
    lua_pushboolean(L, !u->pending || lunar_request_test(u->r));
    return 1;
}

static int r_close(lua_State *L) {
    if (finish(check_req(L, 1))) return lunar_raise(L);
    return 0;
}

static int r_gc(lua_State *L) {
    req_ud *u = check_req(L, 1);
    if (u->pending && finish(u))
        fprintf(stderr, "lunar: warning: a %s request collected while in flight failed: %s\n",
                u->op, lunar_last_error());
    drop_holds(u);
    return 0;
}

static int r_tostring(lua_State *L) {
    req_ud *u = check_req(L, 1);
    lua_pushfstring(L, "comm_request(%s, %s)", u->op, u->pending ? "in flight" : "done");
    return 1;
}

/* ---- registration ------------------------------------------------------------------ */

static const luaL_Reg comm_methods[] = {
    {"rank", m_rank}, {"size", m_size}, {"name", m_name}, {"set_name", m_set_name},
    {"split", m_split}, {"all_reduce", m_all_reduce}, {"reduce_scatter", m_reduce_scatter},
    {"all_gather", m_all_gather}, {"broadcast", m_broadcast}, {"send", m_send}, {"recv", m_recv},
    {"barrier", m_barrier}, {"iall_reduce", m_iall_reduce}, {"ireduce_scatter", m_ireduce_scatter},
    {"iall_gather", m_iall_gather}, {"isend", m_isend}, {"irecv", m_irecv},
    {"all_reduce_number", l_all_reduce_number}, {NULL, NULL}};

static const luaL_Reg req_methods[] = {{"wait", r_wait}, {"test", r_test}, {NULL, NULL}};

void lunar_open_comm(lua_State *L) {
    luaL_newmetatable(L, COMM_MT);
    luaL_newlib(L, comm_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, comm_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, comm_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, REQ_MT);
    luaL_newlib(L, req_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, r_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, r_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, r_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    /* Duplicate MPI_COMM_WORLD now, while every rank runs the same code:
     * lunar_comm_world's first call is collective. A failure (MPI not
     * initialized) is reported by lunar.comm.world() itself. */
    if (!lunar_comm_world()) lunar_clear_error();

    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, l_world);
    lua_setfield(L, -2, "world");
    lua_pushcfunction(L, l_all_reduce_number);
    lua_setfield(L, -2, "all_reduce_number");
    lua_pushcfunction(L, l_stats);
    lua_setfield(L, -2, "stats");
    lua_pushcfunction(L, l_reset_stats);
    lua_setfield(L, -2, "reset_stats");
    lua_setfield(L, -2, "comm");
}
