/*
 * bindings/host_error.h: how the host `lunar` runs Lua code and reports what
 * goes wrong (host_error.c): the protected call with a traceback and Ctrl-C,
 * the one-line report, and user errors.
 *
 * Two kinds of errors reach the host:
 *   - a user error: the input is wrong (a missing dataset, a bad path, a
 *     config key), raised by Lunar's own checks with lunar.error(msg). It is
 *     printed as "lunar: <msg>", without a Lua traceback: the traceback would
 *     point into Lunar, not at anything the user can change.
 *   - any other error (a runtime error in code, a C error from the core, an
 *     error(msg) of a script): a bug somewhere, printed with its traceback.
 */
#ifndef LUNAR_HOST_ERROR_H
#define LUNAR_HOST_ERROR_H

#include <lua.h>

/* The rank and world size used in messages (set by the host at start). */
void lunar_host_set_rank(int rank, int size);
int lunar_host_rank(void);
int lunar_host_size(void);
/* "[rank R] " when the world has more than one rank, else "" (a static buffer). */
const char *lunar_rank_tag(void);

/* lua_pcall(L, narg, nres) with lunar_msghandler, and with Ctrl-C (SIGINT)
 * turned into the Lua error "interrupted" at the next Lua instruction, as
 * lua.c does (a second Ctrl-C before that kills the process). Returns the
 * lua_pcall status; on error the message is on the top. */
int lunar_docall(lua_State *L, int narg, int nres);

/* As lunar_docall with another message handler (the debugger's post-mortem). */
int lunar_docall_with(lua_State *L, int narg, int nres, lua_CFunction msgh);

/* The message handler of lunar_docall: a user error becomes its message
 * alone; a string (or number) gets a traceback appended; another error
 * object prints through its __tostring (without traceback) or as "(error
 * object is a T value)" with a traceback. */
int lunar_msghandler(lua_State *L);

/* Prints the error on the top of L to stderr as "lunar: [rank R] <message>"
 * (the rank only when the world size is > 1; the message through tostring)
 * and pops it. */
void lunar_report(lua_State *L);

/* 1 when the value at idx is a user error (raised by lunar.error). */
int lunar_is_user_error(lua_State *L, int idx);

/* Adds to the table on the top of L (the `lunar` table):
 *   lunar.error(msg)        raises a user error: a table {message = msg}
 *                           whose metatable is lunar.UserError. It prints as
 *                           msg (__tostring), concatenates as msg (__concat),
 *                           and answers string methods on msg (err:find(...),
 *                           err:match(...)), so code that treats errors as
 *                           strings keeps working. msg: a string (a number
 *                           is converted); anything else is an argument error.
 *   lunar.UserError         that metatable (getmetatable(e) == lunar.UserError)
 *   lunar.is_user_error(e)  true when e was raised by lunar.error
 * Lunar raises its checks of user input this way (data sets, checkpoint
 * paths, config keys); error(msg) everywhere else is a bug's error. */
void lunar_open_errors(lua_State *L);

#endif
