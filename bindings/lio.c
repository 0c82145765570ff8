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
 *
 * A lazy reader (the file is mapped and its header validated on open; tensor
 * data is copied only when read), for checkpoints that need some tensors or
 * some slices of them:
 *   r = lunar.io.open_safetensors(path)
 *   r:names() -> {name, ...} in the file's order     r:path() -> path
 *   r:info(name) -> {dtype = 'F32' (the file's name), lunar_dtype = 'f32' | nil,
 *                    shape = {..}, nbytes = n} or nil when absent
 *   r:read(name [, ranges]) -> a CPU tensor in the file's dtype: the whole tensor,
 *                    or the block ranges = {{start, length}, ...} (0-based, one pair
 *                    per dim); errors name the file and the tensor
 *   r:metadata() -> key -> string        r:close() (also __gc, __close)
 *
 * File-system helpers for checkpoint directories (core/io/fs.c, io.h; errors
 * are returned as nil, message naming the path, so callers can word them; an
 * empty path, or remove_tree of "/", is raised as an error):
 *   lunar.io.mkdir(path)            like mkdir -p; true, or nil, msg
 *   lunar.io.listdir(path)          {name, ...} sorted (no . and ..), or nil, msg
 *   lunar.io.stat(path)             'file' | 'dir' | 'other', size; or nil, msg
 *   lunar.io.remove_tree(path)      removes a file or a directory tree; true, or nil, msg
 *   lunar.io.rename(from, to)       rename(2); true, or nil, msg
 *   lunar.io.write_file(path, s)    lunar_atomic_write: "<path>.tmp.<pid>", fsync,
 *                                   rename, fsync of the directory; true, or nil, msg
 *   lunar.io.fsync_dir(path)        fsync of a directory (durable renames); true, or nil, msg
 *   lunar.io.getpid()               the process id
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lunar_bindings.h"
#include "lunar/io.h"

/* Pushes the safetensors metadata of st as a Lua table {key = value}. */
static void push_metadata(lua_State *L, const lunar_safetensors *st) {
    int nm = lunar_safetensors_metadata_count(st);
    lua_createtable(L, 0, nm);
    for (int i = 0; i < nm; i++) {
        const char *k, *v;
        if (lunar_safetensors_metadata_at(st, i, &k, &v) == 0) {
            lua_pushstring(L, v);
            lua_setfield(L, -2, k);
        }
    }
}

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
    push_metadata(L, st);
    lunar_safetensors_close(st);
    return 2;
}

static int l_save(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int has_meta = lua_istable(L, 3);
    /* check every key and value first (nothing allocated yet, so an error leaks nothing); a
     * non-string key is named from a copy, never converted in place (that would break lua_next) */
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            const char *kt = luaL_typename(L, -2);
            lua_pushvalue(L, -2);   /* a copy to convert */
            return luaL_error(L, "save_safetensors: %s: tensor names must be strings, got the %s key %s", path, kt,
                              luaL_tolstring(L, -1, NULL));
        }
        lunar_check_tensor(L, -1);
        n++;
        lua_pop(L, 1);
    }
    if (has_meta) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            if (lua_type(L, -2) != LUA_TSTRING) {
                const char *kt = luaL_typename(L, -2);
                lua_pushvalue(L, -2);   /* a copy to convert */
                return luaL_error(L, "save_safetensors: %s: metadata keys must be strings, got the %s key %s", path, kt,
                                  luaL_tolstring(L, -1, NULL));
            }
            if (lua_type(L, -1) != LUA_TSTRING)
                return luaL_error(L, "save_safetensors: %s: metadata values must be strings (key '%s' is a %s)",
                                  path, lua_tostring(L, -2), luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    }
    /* collect names in sorted order so files are reproducible */
    lunar_safetensors_entry *entries = calloc((size_t)(n ? n : 1), sizeof *entries);
    lunar_tensor **conts = calloc((size_t)(n ? n : 1), sizeof *conts);
    int i = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        lunar_tensor *t = lunar_check_tensor(L, -1);
        /* a contiguous host copy of a device tensor, else a contiguous view */
        conts[i] = lunar_tensor_device(t) != LUNAR_CPU ? lunar_tensor_to_device(t, LUNAR_CPU) : lunar_tensor_contiguous(t);
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
        while (lua_next(L, 3)) {   /* keys and values are strings (checked above), kept alive by the table */
            keys[k] = lua_tostring(L, -2);
            vals[k] = lua_tostring(L, -1);
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

/* ---- the lazy reader ----------------------------------------------------- */

#define READER_MT "lunar.SafetensorsReader"

typedef struct { lunar_safetensors *st; } reader_ud;

static lunar_safetensors *check_reader(lua_State *L, int i) {
    reader_ud *u = luaL_checkudata(L, i, READER_MT);
    if (!u->st) luaL_error(L, "safetensors reader was closed");
    return u->st;
}

static int l_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    reader_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->st = NULL;
    luaL_setmetatable(L, READER_MT);
    u->st = lunar_safetensors_open(path);
    if (!u->st) return lunar_raise(L);
    return 1;
}

static int r_close(lua_State *L) {
    reader_ud *u = luaL_checkudata(L, 1, READER_MT);
    lunar_safetensors_close(u->st);
    u->st = NULL;
    return 0;
}

static int r_path(lua_State *L) { lua_pushstring(L, lunar_safetensors_path(check_reader(L, 1))); return 1; }

static int r_names(lua_State *L) {
    lunar_safetensors *st = check_reader(L, 1);
    int n = lunar_safetensors_count(st);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, lunar_safetensors_entry_at(st, i)->name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static void push_shape(lua_State *L, const lunar_safetensors_entry *e) {
    lua_createtable(L, e->ndim, 0);
    for (int d = 0; d < e->ndim; d++) {
        lua_pushinteger(L, (lua_Integer)e->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
}

static int r_info(lua_State *L) {
    lunar_safetensors *st = check_reader(L, 1);
    const lunar_safetensors_entry *e = lunar_safetensors_find(st, luaL_checkstring(L, 2));
    if (!e) { lua_pushnil(L); return 1; }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, lunar_dtype_st_name(e->dtype));
    lua_setfield(L, -2, "dtype");
    lua_pushstring(L, lunar_dtype_name(e->dtype));
    lua_setfield(L, -2, "lunar_dtype");
    push_shape(L, e);
    lua_setfield(L, -2, "shape");
    lua_pushinteger(L, (lua_Integer)e->nbytes);
    lua_setfield(L, -2, "nbytes");
    return 1;
}

static int r_metadata(lua_State *L) {
    lunar_safetensors *st = check_reader(L, 1);
    push_metadata(L, st);
    return 1;
}

/* r:read(name [, ranges]): the tensor, or its block {{start, len}, ...}
 * (0-based starts; lunar_safetensors_read_block checks and copies it). */
static int r_read(lua_State *L) {
    lunar_safetensors *st = check_reader(L, 1);
    const char *name = luaL_checkstring(L, 2);
    const char *path = lunar_safetensors_path(st);
    const lunar_safetensors_entry *e = lunar_safetensors_find(st, name);
    if (!e) return luaL_error(L, "%s: no tensor '%s'", path, name);
    int nd = e->ndim, ranged = !lua_isnoneornil(L, 3);
    int64_t start[LUNAR_MAX_DIMS], len[LUNAR_MAX_DIMS];
    if (ranged) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if ((int)luaL_len(L, 3) != nd)
            return luaL_error(L, "%s: tensor '%s': %d ranges given for %d dims", path, name, (int)luaL_len(L, 3), nd);
        for (int d = 0; d < nd; d++) {
            lua_geti(L, 3, d + 1);
            if (!lua_istable(L, -1)) return luaL_error(L, "%s: tensor '%s': range %d is not {start, length}", path, name, d + 1);
            lua_geti(L, -1, 1);
            lua_geti(L, -2, 2);
            int ok1, ok2;
            start[d] = lua_tointegerx(L, -2, &ok1);
            len[d] = lua_tointegerx(L, -1, &ok2);
            lua_pop(L, 3);
            if (!ok1 || !ok2) return luaL_error(L, "%s: tensor '%s': range %d is not {start, length}", path, name, d + 1);
        }
    }
    lunar_push_tensor(L, lunar_safetensors_read_block(st, name, ranged ? start : NULL, ranged ? len : NULL));
    return 1;
}

/* ---- file-system helpers (core/io/fs.c) ----------------------------------- */

/* true, or nil and the message of the failed core call; a refused argument
 * (an empty path, remove_tree('/')) is raised as an error. */
static int fs_result(lua_State *L, lunar_status s) {
    if (s == LUNAR_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (s == LUNAR_ERR_ARG) return lunar_raise(L);
    lua_pushnil(L);
    lua_pushstring(L, lunar_last_error());
    return 2;
}

static int l_mkdir(lua_State *L) { return fs_result(L, lunar_mkdirs(luaL_checkstring(L, 1))); }

static int l_listdir(lua_State *L) {
    char **names;
    size_t n;
    lunar_status s = lunar_listdir(luaL_checkstring(L, 1), &names, &n);
    if (s != LUNAR_OK) return fs_result(L, s);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lunar_free_names(names, n);
    return 1;
}

static int l_stat(lua_State *L) {
    lunar_path_kind kind;
    int64_t size;
    lunar_status s = lunar_path_stat(luaL_checkstring(L, 1), &kind, &size);
    if (s != LUNAR_OK) return fs_result(L, s);
    static const char *const kinds[] = {"file", "dir", "other"};
    lua_pushstring(L, kinds[kind]);
    lua_pushinteger(L, (lua_Integer)size);
    return 2;
}

static int l_remove_tree(lua_State *L) { return fs_result(L, lunar_remove_tree(luaL_checkstring(L, 1))); }

static int l_rename(lua_State *L) {
    return fs_result(L, lunar_rename(luaL_checkstring(L, 1), luaL_checkstring(L, 2)));
}

static int l_fsync_dir(lua_State *L) { return fs_result(L, lunar_fsync_dir(luaL_checkstring(L, 1))); }

static int l_write_file(lua_State *L) {
    lunar_io_part part;
    part.data = luaL_checklstring(L, 2, &part.len);
    return fs_result(L, lunar_atomic_write(luaL_checkstring(L, 1), &part, 1));
}

static int l_getpid(lua_State *L) { lua_pushinteger(L, (lua_Integer)getpid()); return 1; }

static const luaL_Reg reader_methods[] = {
    {"names", r_names}, {"info", r_info}, {"read", r_read}, {"metadata", r_metadata}, {"path", r_path},
    {"close", r_close}, {"__gc", r_close}, {"__close", r_close}, {NULL, NULL}};

static const luaL_Reg fns[] = {
    {"load_safetensors", l_load}, {"save_safetensors", l_save}, {"open_safetensors", l_open},
    {"mkdir", l_mkdir}, {"listdir", l_listdir}, {"stat", l_stat}, {"remove_tree", l_remove_tree},
    {"rename", l_rename}, {"write_file", l_write_file}, {"fsync_dir", l_fsync_dir}, {"getpid", l_getpid},
    {NULL, NULL}};

/* Adds lunar.io to the table on the top of the stack. */
void lunar_open_io(lua_State *L) {
    luaL_newmetatable(L, READER_MT);
    luaL_setfuncs(L, reader_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "io");
}
