/*
 * bindings/repl.h: the interactive loop of `lunar` and the protected call
 * that both the host and the REPL use.
 *
 * lunar_repl reads Lua chunks (GNU readline with history and tab completion
 * when stdin is a terminal, plain lines otherwise), evaluates them in the
 * given state and prints their values. It can be entered from anywhere a
 * lua_State is at an API-safe point, for instance from a C function called
 * from Lua (a breakpoint): it leaves the stack as it found it. The debugger
 * (lunar.breakpoint, post-mortem) is a session of the same loop at a frame.
 */
#ifndef LUNAR_REPL_H
#define LUNAR_REPL_H

#include <lua.h>

/* Runs the read-eval-print loop on L until end of input (Ctrl-D). `banner`
 * (may be NULL) is printed first. Each chunk is tried as an expression
 * ("return <line>") first, so `2+2` prints 4; a chunk that ends early
 * ("<eof>" in the syntax error) reads continuation lines ("    >> ").
 * Results print separated by tabs through tostring (so tensors print
 * through their __tostring). An error prints its message and traceback and
 * the loop goes on. History: $LUNAR_HISTORY, or ~/.lunar_history (set
 * LUNAR_HISTORY= to keep none; an unwritable file is ignored).
 * Returns 0. */
int lunar_repl(lua_State *L, const char *banner);

/* lua_pcall(L, narg, nres) with a message handler that appends a traceback
 * (an error object that is not a string is turned into one through its
 * __tostring, without traceback), and with Ctrl-C (SIGINT) turned into the
 * Lua error "interrupted" at the next Lua instruction, as lua.c does.
 * Returns the lua_pcall status; on error the message is on the top. */
int lunar_docall(lua_State *L, int narg, int nres);

/* The message handler lunar_docall uses (for callers that want lua_pcall). */
int lunar_msghandler(lua_State *L);

/* Prints the error message on the top of L to stderr as
 * "lunar: [rank R] <message>" (the rank only when the world size is > 1)
 * and pops it. */
void lunar_report(lua_State *L);

/* The rank and world size used in messages (set by the host). */
void lunar_repl_set_rank(int rank, int size);

/* ---- the debugger ------------------------------------------------------------
 * A debugger session is the REPL opened inside a running script, at a frame:
 * chunks run in an environment whose __index finds the frame's locals (the
 * innermost active one of a name), then its upvalues, then its _ENV (the
 * globals), and whose __newindex sets a local (lua_setlocal) or upvalue of
 * that name, else a global. Commands (a line that is exactly one): help/h,
 * where/bt, up/u [N], down/d [N], list/l, locals, p EXPR, next/n, step/s,
 * continue/c (and Ctrl-D or end of input), quit/q. The prompt is "(ldb) ",
 * printed on a pipe too; a pipe is read as plain lines. */

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

/* As lunar_docall, for the host's script and -e chunks: when post-mortem is
 * on, an error that escapes the call prints "lunar: [rank R] <message>" with
 * its traceback, then opens a debugger session at the innermost Lua frame of
 * the error (its locals visible; next/step refused) before the stack
 * unwinds; leaving the session returns the error status as lunar_docall does
 * (message with traceback on the top). With post-mortem off (every rank but
 * the --repl-rank one) it is exactly lunar_docall. */
int lunar_docall_postmortem(lua_State *L, int narg, int nres);

/* The message handler of lunar_docall_postmortem. */
int lunar_postmortem_msghandler(lua_State *L);

#endif
