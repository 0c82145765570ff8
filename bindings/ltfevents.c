/*
 * bindings/ltfevents.c: TensorBoard event files (io.h, core/io/tfevents.c) in `lunar.io`.
 *
 *   w = lunar.io.tfevents(dir [, wall_time])   creates dir, opens
 *       dir/events.out.tfevents.<T>.<host> for appending and writes the
 *       file_version record; wall_time in seconds since the epoch (default: now)
 *   w:scalars(step, tags, values [, wall_time])  one Event at `step` (an integer)
 *       with the scalars tags[i] = values[i] (arrays of equal length >= 1;
 *       strings and numbers, stored as f32); written and in the file on return
 *   w:path() -> the file's path       w:close() (also __gc, __close)
 *   lunar.io.crc32c(s) -> the CRC32C of the bytes of s (an integer)
 * Errors are raised with the core's message (it names the file).
 */
#include <stdlib.h>

#include "lunar_bindings.h"
#include "lunar/io.h"

#define TFEVENTS_MT "lunar.TfeventsWriter"

typedef struct { lunar_tfevents *w; } tfevents_ud;

static lunar_tfevents *check_writer(lua_State *L, int i) {
    tfevents_ud *u = luaL_checkudata(L, i, TFEVENTS_MT);
    if (!u->w) luaL_error(L, "TensorBoard event writer was closed");
    return u->w;
}

static int l_tfevents(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    double wall = luaL_optnumber(L, 2, -1);
    tfevents_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->w = NULL;
    luaL_setmetatable(L, TFEVENTS_MT);
    u->w = lunar_tfevents_open(dir, wall);
    if (!u->w) return lunar_raise(L);
    return 1;
}

static int w_scalars(lua_State *L) {
    lunar_tfevents *w = check_writer(L, 1);
    lua_Integer step = luaL_checkinteger(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    double wall = luaL_optnumber(L, 5, -1);
    lua_Integer n = luaL_len(L, 3);
    if (luaL_len(L, 4) != n) return luaL_error(L, "scalars: %d tags but %d values", (int)n, (int)luaL_len(L, 4));
    if (n < 1 || n > 1000000) return luaL_error(L, "scalars: %d tags (1 to 1000000)", (int)n);
    /* the tag strings stay referenced by the tags table (argument 3) during the call */
    const char **tags = lua_newuserdatauv(L, (size_t)n * sizeof *tags, 0);
    float *values = lua_newuserdatauv(L, (size_t)n * sizeof *values, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_geti(L, 3, i + 1);
        if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "scalars: tag %d is not a string", (int)i + 1);
        tags[i] = lua_tostring(L, -1);
        lua_pop(L, 1);
        lua_geti(L, 4, i + 1);
        if (!lua_isnumber(L, -1)) return luaL_error(L, "scalars: value %d (%s) is not a number", (int)i + 1, tags[i]);
        values[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (lunar_tfevents_scalars(w, (int64_t)step, wall, tags, values, (int)n) != LUNAR_OK) return lunar_raise(L);
    return 0;
}

static int w_path(lua_State *L) { lua_pushstring(L, lunar_tfevents_path(check_writer(L, 1))); return 1; }

static int w_close(lua_State *L) {
    tfevents_ud *u = luaL_checkudata(L, 1, TFEVENTS_MT);
    lunar_tfevents_close(u->w);
    u->w = NULL;
    return 0;
}

static int l_crc32c(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_pushinteger(L, (lua_Integer)lunar_crc32c(s, n));
    return 1;
}

static const luaL_Reg writer_methods[] = {
    {"scalars", w_scalars}, {"path", w_path}, {"close", w_close}, {"__gc", w_close}, {"__close", w_close},
    {NULL, NULL}};

/* Adds tfevents and crc32c to lunar.io (lunar_open_io has run: the `lunar`
 * table is on the top of the stack). */
void lunar_open_tfevents(lua_State *L) {
    luaL_newmetatable(L, TFEVENTS_MT);
    luaL_setfuncs(L, writer_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_getfield(L, -1, "io");
    lua_pushcfunction(L, l_tfevents);
    lua_setfield(L, -2, "tfevents");
    lua_pushcfunction(L, l_crc32c);
    lua_setfield(L, -2, "crc32c");
    lua_pop(L, 1);
}
