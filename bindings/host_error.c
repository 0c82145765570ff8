/*
 * bindings/host_error.c: the protected call, the error report and user
 * errors of the host `lunar` (host_error.h).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "host_error.h"

#define USER_ERROR_MT "lunar.UserError"

static int g_rank = 0, g_size = 1;

void lunar_host_set_rank(int rank, int size) {
    g_rank = rank;
    g_size = size;
}

int lunar_host_rank(void) { return g_rank; }
int lunar_host_size(void) { return g_size; }

const char *lunar_rank_tag(void) {
    static char buf[32];
    if (g_size <= 1) return "";
    snprintf(buf, sizeof buf, "[rank %d] ", g_rank);
    return buf;
}

/* ---- user errors ------------------------------------------------------------ */

int lunar_is_user_error(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, USER_ERROR_MT);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

/* Pushes the message of the user error at idx. */
static void push_user_message(lua_State *L, int idx) {
    lua_getfield(L, idx, "message");
    if (!lua_isstring(L, -1)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "(user error without a message)");
    }
}

static int l_error(lua_State *L) {
    luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_tostring(L, 1);  /* a number becomes its string */
    lua_createtable(L, 0, 1);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "message");
    luaL_setmetatable(L, USER_ERROR_MT);
    return lua_error(L);
}

static int l_is_user_error(lua_State *L) {
    lua_pushboolean(L, lunar_is_user_error(L, 1));
    return 1;
}

static int ue_tostring(lua_State *L) {
    push_user_message(L, 1);
    return 1;
}

/* a .. b where either is a user error: its message in its place */
static int ue_concat(lua_State *L) {
    for (int i = 1; i <= 2; i++) {
        if (lunar_is_user_error(L, i)) {
            push_user_message(L, i);
            lua_replace(L, i);
        } else if (!lua_isstring(L, i)) {
            return luaL_error(L, "attempt to concatenate a %s value", luaL_typename(L, i));
        }
    }
    lua_concat(L, 2);
    return 1;
}

/* err:find(...) & co.: string method m called on the message */
static int ue_string_method(lua_State *L) {
    if (lunar_is_user_error(L, 1)) {
        push_user_message(L, 1);
        lua_replace(L, 1);
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* __index(err, k): the string library's method k, called on the message */
static int ue_index(lua_State *L) {
    lua_getglobal(L, "string");
    if (!lua_istable(L, -1) || lua_type(L, 2) != LUA_TSTRING) return 0;
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    if (!lua_isfunction(L, -1)) return 0;
    lua_pushcclosure(L, ue_string_method, 1);
    return 1;
}

void lunar_open_errors(lua_State *L) {
    luaL_newmetatable(L, USER_ERROR_MT);
    static const luaL_Reg mt[] = {
        {"__tostring", ue_tostring}, {"__concat", ue_concat}, {"__index", ue_index}, {NULL, NULL}};
    luaL_setfuncs(L, mt, 0);
    lua_setfield(L, -2, "UserError");
    lua_pushcfunction(L, l_error);
    lua_setfield(L, -2, "error");
    lua_pushcfunction(L, l_is_user_error);
    lua_setfield(L, -2, "is_user_error");
}

/* ---- protected calls ------------------------------------------------------ */

int lunar_msghandler(lua_State *L) {
    if (lunar_is_user_error(L, 1)) {  /* the user's input is wrong: the message alone */
        push_user_message(L, 1);
        return 1;
    }
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {  /* error object is not a string (or number) */
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;  /* a structured error that knows how to print itself */
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Ctrl-C during a call: the handler only sets a hook (lua_sethook is safe to
 * call from a signal handler); the hook raises the error in Lua's context. */
static lua_State *volatile g_callL = NULL;

static void lstop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, "interrupted");
}

static void laction(int sig) {
    int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
    signal(sig, SIG_DFL);  /* a second Ctrl-C before the hook runs ends the process */
    if (g_callL) lua_sethook(g_callL, lstop, flag, 1);
}

int lunar_docall_with(lua_State *L, int narg, int nres, lua_CFunction msgh) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    lua_State *prevL = g_callL;
    g_callL = L;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = laction;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    int status = lua_pcall(L, narg, nres, base);
    sigaction(SIGINT, &old, NULL);
    g_callL = prevL;
    lua_remove(L, base);
    return status;
}

int lunar_docall(lua_State *L, int narg, int nres) {
    return lunar_docall_with(L, narg, nres, lunar_msghandler);
}

void lunar_report(lua_State *L) {
    int top = lua_gettop(L);
    const char *msg = lua_tostring(L, -1);
    if (!msg && lunar_is_user_error(L, -1)) {
        push_user_message(L, -1);
        msg = lua_tostring(L, -1);
    }
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, top));
    fflush(stdout);
    fprintf(stderr, "lunar: %s%s\n", lunar_rank_tag(), msg);
    fflush(stderr);
    lua_settop(L, top - 1);
}
