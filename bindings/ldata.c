/*
 * bindings/ldata.c: datasets and the batch loader (data.h) as `lunar.data`.
 *
 *   ds = lunar.data.load_idx(images_path, labels_path)         IDX (.gz or plain)
 *   ds = lunar.data.load_cifar10({path, ...})                  CIFAR-10 binary
 *   ds = lunar.data.synthetic(n, channels, ndim, {size..}, num_classes, seed [, {row0, rows}])
 *                                   (with {row0, rows}: the slab of those rows, 0-based, of the
 *                                   first spatial dim: lunar_dataset_synthetic_slab)
 *   ds = lunar.data.image_folder(dir, {img_size=, train=true, scale={0.08, 1}, ratio={3/4, 4/3},
 *                                      hflip=0.5, crop_pct=0.875, on_bad_image='skip'|'error'})
 *   ds = lunar.data.image_zip(zip_path, map_path, {...the same options})   Galvatron's zipped ImageNet
 *   ds:bad_images()  ds:class_name(k) (k 1-based)  ds:file(i) (i 0-based, as sample indices)
 *   img, label, crop = ds:sample(i, epoch, seed)   u8 [3, S, S], the label, the crop
 *                      {top=, left=, height=, width=, full_h=, full_w=, flip=, scale_denom=}
 *   ds:count() ds:channels() ds:ndim() ds:size(i) ds:num_classes() ds:shape()
 *   ld = lunar.data.loader(ds, {batch_size=, shuffle=true, seed=0, drop_last=false,
 *                               rank=0, num_shards=1, mean={..}, std={..}, prefetch=true,
 *                               (or the number of batches prepared ahead; true is 1)
 *                               device='cpu', threads=1, crop_padding=0, hflip=0})
 *                crop_padding, hflip: RandomCrop + horizontal flip of an in-memory
 *                2-D dataset (lunar_loader_set_augment; 0: none)
 *   images, labels = ld:next()   f32 [B, C, S..], i32 [B]; nil at the end of the epoch
 *                  (a data file that cannot be read or decoded: a user error, lunar.error)
 *   ld:device() -> 'cpu' or 'cuda:N'
 * device 'cuda' / 'cuda:N': batches come as tensors on that device
 * (lunar_loader_set_device, lunar_loader_next_tensors: the loader stages
 * them through its own page-locked buffer). An unusable device is an error
 * at lunar.data.loader, naming it.
 *   ld:set_epoch(e)  ld:num_batches()  ld:num_samples()  ld:position() -> epoch, batch
 *   ld:seek(epoch, batch)  ld:free()
 * Epochs and batch positions are 0-based, as the C API (they are counters, not
 * indices into Lua tables).
 */
#include <stdlib.h>
#include <string.h>

#include "lunar_bindings.h"
#include "lunar/data.h"

#define DATASET_MT "lunar.Dataset"
#define LOADER_MT "lunar.Loader"

typedef struct { lunar_dataset *ds; } dataset_ud;
typedef struct {
    lunar_loader *l;
    int batch_size;
} loader_ud;

static void push_dataset(lua_State *L, lunar_dataset *ds) {
    if (!ds) { lunar_raise(L); return; }
    dataset_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->ds = ds;
    luaL_setmetatable(L, DATASET_MT);
}

static lunar_dataset *check_ds(lua_State *L, int i) {
    dataset_ud *u = luaL_checkudata(L, i, DATASET_MT);
    if (!u->ds) luaL_error(L, "dataset was freed");
    return u->ds;
}

static int l_load_idx(lua_State *L) {
    push_dataset(L, lunar_dataset_load_idx(luaL_checkstring(L, 1), luaL_checkstring(L, 2)));
    return 1;
}

static int l_load_cifar10(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)luaL_len(L, 1);
    const char **paths = calloc((size_t)(n > 0 ? n : 1), sizeof *paths);
    for (int i = 0; i < n; i++) {
        lua_geti(L, 1, i + 1);
        paths[i] = lua_tostring(L, -1);   /* kept alive by the table */
        lua_pop(L, 1);
    }
    lunar_dataset *ds = lunar_dataset_load_cifar10(paths, n);
    free(paths);
    push_dataset(L, ds);
    return 1;
}

static int l_synthetic(lua_State *L) {
    int64_t n = luaL_checkinteger(L, 1);
    int channels = (int)luaL_checkinteger(L, 2), ndim = (int)luaL_checkinteger(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    int size[3] = {0, 0, 0};
    for (int i = 0; i < ndim && i < 3; i++) { lua_geti(L, 4, i + 1); size[i] = (int)lua_tointeger(L, -1); lua_pop(L, 1); }
    int classes = (int)luaL_checkinteger(L, 5);
    uint64_t seed = (uint64_t)luaL_optinteger(L, 6, 0);
    if (lua_isnoneornil(L, 7)) {
        push_dataset(L, lunar_dataset_synthetic(n, channels, ndim, size, classes, seed));
    } else {     /* a slab {row0 (0-based), rows} of the first spatial dim (domain parallelism) */
        luaL_checktype(L, 7, LUA_TTABLE);
        lua_geti(L, 7, 1); int row0 = (int)luaL_checkinteger(L, -1); lua_pop(L, 1);
        lua_geti(L, 7, 2); int rows = (int)luaL_checkinteger(L, -1); lua_pop(L, 1);
        push_dataset(L, lunar_dataset_synthetic_slab(n, channels, ndim, size, classes, seed, row0, rows));
    }
    return 1;
}

static double opt_field_num(lua_State *L, int t, const char *k, double def) {
    lua_getfield(L, t, k);
    double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

static void opt_field_pair(lua_State *L, int t, const char *k, double *a, double *b) {
    lua_getfield(L, t, k);
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        if (luaL_len(L, -1) != 2) luaL_error(L, "image_folder: %s needs 2 numbers {min, max}", k);
        lua_geti(L, -1, 1); *a = luaL_checknumber(L, -1); lua_pop(L, 1);
        lua_geti(L, -1, 2); *b = luaL_checknumber(L, -1); lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* The options table at t as lunar_image_opts. */
static lunar_image_opts image_opts(lua_State *L, int t) {
    luaL_checktype(L, t, LUA_TTABLE);
    lua_getfield(L, t, "img_size");
    int size = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, t, "train");
    int train = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    lunar_image_opts o;
    lunar_image_opts_default(&o, size, train);
    opt_field_pair(L, t, "scale", &o.scale_min, &o.scale_max);
    opt_field_pair(L, t, "ratio", &o.ratio_min, &o.ratio_max);
    o.hflip = opt_field_num(L, t, "hflip", o.hflip);
    o.crop_pct = opt_field_num(L, t, "crop_pct", o.crop_pct);
    lua_getfield(L, t, "on_bad_image");
    static const char *const bad[] = {"skip", "error", NULL};
    o.on_bad_image = luaL_checkoption(L, -1, "skip", bad);
    lua_pop(L, 1);
    return o;
}

static int l_image_folder(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    lunar_image_opts o = image_opts(L, 2);
    push_dataset(L, lunar_dataset_image_folder(dir, &o));
    return 1;
}

static int l_image_zip(lua_State *L) {
    const char *zip = luaL_checkstring(L, 1), *map = luaL_checkstring(L, 2);
    lunar_image_opts o = image_opts(L, 3);
    push_dataset(L, lunar_dataset_image_zip(zip, map, &o));
    return 1;
}

static int ds_count(lua_State *L) { lua_pushinteger(L, lunar_dataset_count(check_ds(L, 1))); return 1; }
static int ds_channels(lua_State *L) { lua_pushinteger(L, lunar_dataset_channels(check_ds(L, 1))); return 1; }
static int ds_ndim(lua_State *L) { lua_pushinteger(L, lunar_dataset_ndim_spatial(check_ds(L, 1))); return 1; }
static int ds_size(lua_State *L) { lua_pushinteger(L, lunar_dataset_size(check_ds(L, 1), (int)luaL_checkinteger(L, 2) - 1)); return 1; }
static int ds_num_classes(lua_State *L) { lua_pushinteger(L, lunar_dataset_num_classes(check_ds(L, 1))); return 1; }
static int ds_shape(lua_State *L) {
    lunar_dataset *ds = check_ds(L, 1);
    int nd = lunar_dataset_ndim_spatial(ds);
    lua_createtable(L, nd + 1, 0);
    lua_pushinteger(L, lunar_dataset_channels(ds));
    lua_rawseti(L, -2, 1);
    for (int i = 0; i < nd; i++) { lua_pushinteger(L, lunar_dataset_size(ds, i)); lua_rawseti(L, -2, i + 2); }
    return 1;
}
static int ds_bad_images(lua_State *L) { lua_pushinteger(L, lunar_dataset_bad_images(check_ds(L, 1))); return 1; }
static int ds_class_name(lua_State *L) {
    const char *n = lunar_dataset_class_name(check_ds(L, 1), (int)luaL_checkinteger(L, 2) - 1);
    if (n) lua_pushstring(L, n); else lua_pushnil(L);
    return 1;
}
static int ds_file(lua_State *L) {
    const char *n = lunar_dataset_file(check_ds(L, 1), luaL_checkinteger(L, 2));
    if (n) lua_pushstring(L, n); else lua_pushnil(L);
    return 1;
}
static int ds_sample(lua_State *L) {
    lunar_dataset *ds = check_ds(L, 1);
    int64_t shape[3] = {lunar_dataset_channels(ds), lunar_dataset_size(ds, 0), lunar_dataset_size(ds, 1)};
    lunar_tensor *t = lunar_tensor_new(LUNAR_U8, 3, shape, LUNAR_CPU);
    if (!t) return lunar_raise(L);
    int32_t label;
    lunar_crop c;
    if (lunar_dataset_image_sample(ds, luaL_checkinteger(L, 2), luaL_checkinteger(L, 3),
                                   (uint64_t)luaL_optinteger(L, 4, 0), lunar_tensor_data(t), &label, &c)) {
        lunar_tensor_free(t);
        return lunar_raise(L);
    }
    lunar_push_tensor(L, t);
    lua_pushinteger(L, label);
    lua_createtable(L, 0, 8);
    const char *names[] = {"top", "left", "height", "width", "full_h", "full_w", "scale_denom"};
    int vals[] = {c.top, c.left, c.height, c.width, c.full_h, c.full_w, c.scale_denom};
    for (int i = 0; i < 7; i++) { lua_pushinteger(L, vals[i]); lua_setfield(L, -2, names[i]); }
    lua_pushboolean(L, c.flip);
    lua_setfield(L, -2, "flip");
    return 3;
}
static int ds_gc(lua_State *L) {
    dataset_ud *u = luaL_checkudata(L, 1, DATASET_MT);
    lunar_dataset_free(u->ds);
    u->ds = NULL;
    return 0;
}
static int ds_tostring(lua_State *L) {
    lunar_dataset *ds = check_ds(L, 1);
    lua_pushfstring(L, "dataset(%d samples, %d channels, %dD, %d classes)", (int)lunar_dataset_count(ds),
                    lunar_dataset_channels(ds), lunar_dataset_ndim_spatial(ds), lunar_dataset_num_classes(ds));
    return 1;
}

static loader_ud *check_loader(lua_State *L, int i) {
    loader_ud *u = luaL_checkudata(L, i, LOADER_MT);
    if (!u->l) luaL_error(L, "loader was freed");
    return u;
}

static int get_float_list(lua_State *L, int t, const char *key, float *out, int n) {
    lua_getfield(L, t, key);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
    luaL_checktype(L, -1, LUA_TTABLE);
    if ((int)luaL_len(L, -1) != n) luaL_error(L, "loader: %s needs %d values (one per channel)", key, n);
    for (int i = 0; i < n; i++) { lua_geti(L, -1, i + 1); out[i] = (float)lua_tonumber(L, -1); lua_pop(L, 1); }
    lua_pop(L, 1);
    return 1;
}

static lua_Integer opt_field_int(lua_State *L, int t, const char *k, lua_Integer def) {
    lua_getfield(L, t, k);
    lua_Integer v = lua_isnil(L, -1) ? def : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int opt_field_bool(lua_State *L, int t, const char *k, int def) {
    lua_getfield(L, t, k);
    int v = lua_isnil(L, -1) ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* opts.prefetch: a boolean (1 or 0 batches ahead) or a count */
static int prefetch_depth(lua_State *L, int t) {
    lua_getfield(L, t, "prefetch");
    int v = lua_isnil(L, -1) ? 1 : lua_isboolean(L, -1) ? lua_toboolean(L, -1) : (int)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_loader(lua_State *L) {
    lunar_dataset *ds = check_ds(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int C = lunar_dataset_channels(ds);
    float *mean = calloc((size_t)C, sizeof(float)), *std = calloc((size_t)C, sizeof(float));
    int has_mean = get_float_list(L, 2, "mean", mean, C), has_std = get_float_list(L, 2, "std", std, C);
    if (has_mean != has_std) { free(mean); free(std); return luaL_error(L, "loader: give both mean and std, or neither"); }
    int bs = (int)opt_field_int(L, 2, "batch_size", 32);
    int device = LUNAR_CPU;
    lua_getfield(L, 2, "device");
    if (!lua_isnil(L, -1)) device = lunar_check_device_arg(L, -1);
    lua_pop(L, 1);
    lunar_loader *l = lunar_loader_new(ds, bs, opt_field_bool(L, 2, "shuffle", 1),
                                       (uint64_t)opt_field_int(L, 2, "seed", 0), opt_field_bool(L, 2, "drop_last", 0),
                                       (int)opt_field_int(L, 2, "rank", 0), (int)opt_field_int(L, 2, "num_shards", 1),
                                       has_mean ? mean : NULL, has_std ? std : NULL,
                                       prefetch_depth(L, 2));
    free(mean); free(std);
    if (!l) return lunar_raise(L);
    loader_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->l = l;
    u->batch_size = bs;
    luaL_setmetatable(L, LOADER_MT);   /* from here __gc frees the loader */
    if (lunar_loader_set_device(l, device)) return lunar_raise(L);
    if (lunar_loader_set_threads(l, (int)opt_field_int(L, 2, "threads", 1))) return lunar_raise(L);
    lua_getfield(L, 2, "hflip");
    double hflip = lua_isnil(L, -1) ? 0.0 : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (lunar_loader_set_augment(l, (int)opt_field_int(L, 2, "crop_padding", 0), hflip)) return lunar_raise(L);
    lua_pushvalue(L, 1);            /* keep the dataset alive as long as the loader */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int ld_next(lua_State *L) {
    lunar_tensor *img, *lab;
    int n = lunar_loader_next_tensors(check_loader(L, 1)->l, &img, &lab);
    if (n < 0) {
        /* a file that cannot be read or decoded (LUNAR_ERR_IO / _FORMAT) is the
         * user's data: raised through lunar.error (printed without a traceback) */
        lunar_status st = lunar_last_status();
        if (st != LUNAR_ERR_IO && st != LUNAR_ERR_FORMAT) return lunar_raise(L);
        lua_getglobal(L, "lunar");
        lua_getfield(L, -1, "error");
        lua_pushstring(L, lunar_last_error());
        lua_call(L, 1, 0);
        return 0;
    }
    if (n == 0) {
        lua_pushnil(L);
        return 1;
    }
    lunar_push_tensor(L, img);
    lunar_push_tensor(L, lab);
    return 2;
}

static int ld_set_epoch(lua_State *L) {
    if (lunar_loader_set_epoch(check_loader(L, 1)->l, luaL_checkinteger(L, 2))) return lunar_raise(L);
    return 0;
}
static int ld_num_batches(lua_State *L) { lua_pushinteger(L, lunar_loader_num_batches(check_loader(L, 1)->l)); return 1; }
static int ld_num_samples(lua_State *L) { lua_pushinteger(L, lunar_loader_num_samples(check_loader(L, 1)->l)); return 1; }
static int ld_batch_size(lua_State *L) { lua_pushinteger(L, check_loader(L, 1)->batch_size); return 1; }
static int ld_position(lua_State *L) {
    int64_t e, b;
    lunar_loader_position(check_loader(L, 1)->l, &e, &b);
    lua_pushinteger(L, e);
    lua_pushinteger(L, b);
    return 2;
}
static int ld_seek(lua_State *L) {
    if (lunar_loader_seek(check_loader(L, 1)->l, luaL_checkinteger(L, 2), luaL_checkinteger(L, 3))) return lunar_raise(L);
    return 0;
}
static int ld_free(lua_State *L) {
    loader_ud *u = luaL_checkudata(L, 1, LOADER_MT);
    lunar_loader_free(u->l);
    u->l = NULL;
    return 0;
}

static int ld_device(lua_State *L) {
    int device = lunar_loader_device(check_loader(L, 1)->l);
    if (device == LUNAR_CPU) lua_pushstring(L, "cpu");
    else lua_pushfstring(L, "cuda:%d", device);
    return 1;
}

static const luaL_Reg ds_methods[] = {
    {"count", ds_count}, {"channels", ds_channels}, {"ndim", ds_ndim}, {"size", ds_size},
    {"num_classes", ds_num_classes}, {"shape", ds_shape}, {"bad_images", ds_bad_images},
    {"class_name", ds_class_name}, {"file", ds_file}, {"sample", ds_sample}, {"__gc", ds_gc}, {"__tostring", ds_tostring},
    {NULL, NULL}};
static const luaL_Reg ld_methods[] = {
    {"next", ld_next}, {"set_epoch", ld_set_epoch}, {"num_batches", ld_num_batches},
    {"num_samples", ld_num_samples}, {"batch_size", ld_batch_size}, {"position", ld_position},
    {"seek", ld_seek}, {"device", ld_device}, {"free", ld_free}, {"__gc", ld_free}, {"__close", ld_free}, {NULL, NULL}};
static const luaL_Reg fns[] = {
    {"load_idx", l_load_idx}, {"load_cifar10", l_load_cifar10}, {"synthetic", l_synthetic},
    {"image_folder", l_image_folder}, {"image_zip", l_image_zip},
    {"loader", l_loader}, {NULL, NULL}};

static void new_mt(lua_State *L, const char *name, const luaL_Reg *m) {
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, m, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

/* Adds lunar.data to the table on the top of the stack. */
void lunar_open_data(lua_State *L) {
    new_mt(L, DATASET_MT, ds_methods);
    new_mt(L, LOADER_MT, ld_methods);
    luaL_newlib(L, fns);
    lua_setfield(L, -2, "data");
}
