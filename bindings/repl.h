/*
 * bindings/repl.h: the interactive loop of `lunar` and the protected call
 * that both the host and the REPL use.
 *
 * lunar_repl reads Lua chunks (GNU readline with history and tab completion
 * when stdin is a terminal, plain lines otherwise), evaluates them in the
 * given state and prints their values. It can be entered from anywhere a
 * lua_State is at an API-safe point, for instance from a C function called
 * from Lua (a breakpoint): it leaves the stack as it found it.
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

#endif
