/*
 * bindings/debugger.h: the debugger of `lunar` (debugger.c): lunar.breakpoint,
 * next/step, and post-mortem sessions on an error.
 *
 * A debugger session is the REPL (repl.h) opened inside a running script, at
 * a frame: chunks run in an environment whose __index finds the frame's
 * locals (the innermost active one of a name), then its upvalues, then its
 * _ENV (the globals), and whose __newindex sets a local (lua_setlocal) or
 * upvalue of that name, else a global. Commands (a line that is exactly
 * one): help/h, where/bt, up/u [N], down/d [N], list/l, locals, p EXPR,
 * next/n, step/s, continue/c (and Ctrl-D or end of input), quit/q. The
 * prompt is "(ldb) ", printed on a pipe too; a pipe is read as plain lines.
 */
#ifndef LUNAR_DEBUGGER_H
#define LUNAR_DEBUGGER_H

#include <lua.h>

/* Turns the debugger on or off for this process: `breakpoints` makes
 * lunar.breakpoint() stop (else it does nothing), `postmortem` makes an
 * error escaping lunar_docall_postmortem open a session at the frame that
 * raised it. The host sets both for the --repl-rank rank, breakpoints alone
 * on a single-rank run without --repl-rank, neither on other ranks. */
void lunar_debug_configure(int breakpoints, int postmortem);

/* Adds `breakpoint` to the table on the top of L (the `lunar` table):
 *   lunar.breakpoint()   when the debugger is on for this process
 *     (lunar_debug_configure) and no session is open, stops: prints
 *     "breakpoint: SRC:LINE: in FUNCTION" and the source line, then runs a
 *     debugger session at the caller's frame; returns when it is left
 *     (continue, next, step). Otherwise returns at once (a no-op). Takes no
 *     arguments, returns nothing, raises no error. Ranks it does not stop
 *     simply go on, and wait at their next collective for the stopped one. */
void lunar_open_debug(lua_State *L);

/* As lunar_docall (host_error.h), for the host's script and -e chunks: when
 * post-mortem is on, an error that escapes the call prints "lunar: [rank R]
 * <message>" with its traceback, then opens a debugger session at the
 * innermost Lua frame of the error (its locals visible; next/step refused)
 * before the stack unwinds; leaving the session returns the error status as
 * lunar_docall does (message with traceback on the top). A user error
 * (lunar.error) opens no session: its message is all there is to see. With
 * post-mortem off (every rank but the --repl-rank one) it is exactly
 * lunar_docall. */
int lunar_docall_postmortem(lua_State *L, int narg, int nres);

/* The message handler of lunar_docall_postmortem. */
int lunar_postmortem_msghandler(lua_State *L);

#endif
