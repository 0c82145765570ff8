/*
 * bindings/lunar_bindings.h: the Lua C API glue of liblunar.
 * One file per core area (ltensor.c, lops.c, ldata.c, lio.c, lcomm.c, lsys.c); each
 * exports a lunar_open_<area>(L) that adds its functions to the `lunar` table
 * on the top of the stack. lunar_open_bindings builds that table.
 */
#ifndef LUNAR_BINDINGS_H
#define LUNAR_BINDINGS_H

#include <lua.h>
#include <lauxlib.h>

#include "lunar/tensor.h"

/* The version of Lunar, defined here only: lunar.version (lcore.c) and
 * `lunar --version` (main.c). */
#define LUNAR_VERSION "0.1.0"

/* Creates the global table `lunar` with every binding (and package.loaded
 * ["lunar.core"]). Returns 0, or raises a Lua error. */
int lunar_open_bindings(lua_State *L);

/* Tensor userdata (metatable "lunar.Tensor"). */
#define LUNAR_TENSOR_MT "lunar.Tensor"
/* Pushes a userdata that owns t (freed by __gc / __close). */
void lunar_push_tensor(lua_State *L, lunar_tensor *t);
/* The tensor at stack index idx; raises a Lua error if it is not one or
 * was released. */
lunar_tensor *lunar_check_tensor(lua_State *L, int idx);
/* NULL if the value at idx is nil, else as lunar_check_tensor. */
lunar_tensor *lunar_opt_tensor(lua_State *L, int idx);
/* Raises a Lua error with the calling thread's last liblunar error. */
int lunar_raise(lua_State *L);

/* Set by the host: the world rank and size, and the directory of lua/. */
void lunar_bindings_set_rank(int rank, int size, int local_rank);

/* Pushes the caching allocator's counters of `device` (lunar/alloc.h) as a
 * table {bytes_in_use, peak_bytes, bytes_reserved, num_allocs,
 * num_sys_allocs}, with room for `extra` more fields (bindings/lcore.c). */
void lunar_push_alloc_stats(lua_State *L, int device, int extra);

/* Devices (bindings/lcuda.c). A device argument: 'cpu', 'cuda' (this rank's
 * device: lunar.local_rank modulo the device count) or 'cuda:N'; raises a Lua
 * error naming the argument otherwise. Returns LUNAR_CPU or the ordinal; the
 * device is not checked for existence here (allocating on it is). */
int lunar_check_device_arg(lua_State *L, int idx);
/* 1 and the device in *device when the value at idx is a device string. */
int lunar_test_device_arg(lua_State *L, int idx, int *device);
/* Where lunar.empty & co. allocate without a device argument (LUNAR_CPU
 * unless lunar.set_default_device changed it). */
int lunar_bindings_default_device(void);

#endif
