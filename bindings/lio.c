/*
 * bindings/lio.c: safetensors files (io.h) as `lunar.io`.
 *
 *   tensors, meta = lunar.io.load_safetensors(path)
 *       tensors: name -> tensor (a copy, in the file's dtype); meta: key -> string
 *   lunar.io.save_safetensors(path, tensors, meta)
 *       tensors: name -> tensor (any layout; written contiguous), meta: key -> string
 *       or nil. Written to a temporary name and renamed when complete.
 * Errors name the file and the tensor (the reader validates the header, dtypes,
 * shapes and offsets).
 */
#include <stdlib.h>
#include <string.h>

#include "lunar_bindings.h"
#include "lunar/io.h"

static int l_load(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lunar_safetensors *st = lunar_safetensors_open(path);
    if (!st) return lunar_raise(L);
    int n = lunar_safetensors_count(st);
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        const lunar_safetensors_entry *e = lunar_safetensors_entry_at(st, i);
        lunar_tensor *t = lunar_tensor_new(e->dtype, e->ndim, e->shape, LUNAR_CPU);
        if (!t) { lunar_safetensors_close(st); return lunar_raise(L); }
        memcpy(lunar_tensor_data(t), e->data, e->nbytes);
        lunar_push_tensor(L, t);
        lua_setfield(L, -2, e->name);
    }
    int nm = lunar_safetensors_metadata_count(st);
    lua_createtable(L, 0, nm);
    for (int i = 0; i < nm; i++) {
        const char *k, *v;
        if (lunar_safetensors_metadata_at(st, i, &k, &v) == 0) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, k);
        }
    }
    lunar_safetensors_close(st);
    return 2;
}

static int l_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_meta = lua_istable(L, 3);
    /* collect names in sorted order so files are reproducible */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) { n++; lua_pop(L, 1); }
    lunar_safetensors_entry *entries = calloc((size_t)(n ? n : 1), sizeof *entries);
    lunar_tensor **conts = calloc((size_t)(n ? n : 1), sizeof *conts);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING) { lua_pop(L, 2); free(entries); free(conts); return luaL_error(L, "save_safetensors: %s: tensor names must be strings", path); }
        lunar_tensor *t = lunar_check_tensor(L, -1);
        conts[i] = lunar_tensor_contiguous(t);
        if (!conts[i]) { for (int j = 0; j < i; j++) lunar_tensor_free(conts[j]); free(entries); free(conts); return lunar_raise(L); }
        entries[i].name = lua_tostring(L, -2);
        entries[i].dtype = t->dtype;
        entries[i].ndim = t->ndim;
        memcpy(entries[i].shape, t->shape, sizeof t->shape);
        entries[i].data = lunar_tensor_data(conts[i]);
        entries[i].nbytes = lunar_tensor_nbytes(t);
        i++;
        lua_pop(L, 1);
    }
    for (int a = 1; a < n; a++)   /* insertion sort by name */
        for (int b = a; b > 0 && strcmp(entries[b - 1].name, entries[b].name) > 0; b--) {
            lunar_safetensors_entry e = entries[b]; entries[b] = entries[b - 1]; entries[b - 1] = e;
        }
    int nm = 0;
    const char **keys = NULL, **vals = NULL;
    if (has_meta) {
        lua_pushnil(L);
        while (lua_next(L, 3)) { nm++; lua_pop(L, 1); }
        keys = calloc((size_t)nm + 1, sizeof *keys);
        vals = calloc((size_t)nm + 1, sizeof *vals);
        int k = 0;
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            lua_pushvalue(L, -2);
            keys[k] = lua_tostring(L, -1);
            lua_pop(L, 1);
            vals[k] = luaL_tolstring(L, -1, NULL);
            lua_pop(L, 1);   /* the tolstring copy; the value in the table keeps it alive if a string */
            if (lua_type(L, -1) != LUA_TSTRING) {
                free(keys); free(vals);
                for (int j = 0; j < n; j++) lunar_tensor_free(conts[j]);
                free(entries); free(conts);
                return luaL_error(L, "save_safetensors: %s: metadata values must be strings", path);
            }
            k++;
            lua_pop(L, 1);
        }
    }
    lunar_status s = lunar_safetensors_write(path, entries, n, keys, vals, nm);
    for (int j = 0; j < n; j++) lunar_tensor_free(conts[j]);
    free(entries); free(conts); free(keys); free(vals);
    if (s) return lunar_raise(L);
    return 0;
}

static const luaL_Reg fns[] = {{"load_safetensors", l_load}, {"save_safetensors", l_save}, {NULL, NULL}};

/* Adds lunar.io to the table on the top of the stack. */
void lunar_open_io(lua_State *L) {
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "io");
}
