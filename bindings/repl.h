/*
 * bindings/repl.h: the interactive loop of `lunar` (repl.c).
 *
 * lunar_repl reads Lua chunks (GNU readline with history and tab completion
 * when stdin is a terminal, plain lines otherwise), evaluates them in the
 * given state and prints their values. It can be entered from anywhere a
 * lua_State is at an API-safe point, for instance from a C function called
 * from Lua (a breakpoint): it leaves the stack as it found it. The debugger
 * (debugger.h) is a session of the same loop at a frame (lunar_repl_run with
 * its own environment and commands). Protected calls and error reports are
 * host_error.h's.
 */
#ifndef LUNAR_REPL_H
#define LUNAR_REPL_H

#include <lua.h>

/* Runs the read-eval-print loop on L until end of input (Ctrl-D). `banner`
 * (may be NULL) is printed first. Each chunk is tried as an expression
 * ("return <line>") first, so `2+2` prints 4; a chunk that ends early
 * ("<eof>" in the syntax error) reads continuation lines ("    >> ").
 * Results print separated by tabs through tostring (so tensors print
 * through their __tostring). An error prints its message (and traceback,
 * host_error.h) and the loop goes on. History: $LUNAR_HISTORY, or
 * ~/.lunar_history (set LUNAR_HISTORY= to keep none; an unwritable file is
 * ignored).
 * Names: the globals and, as `python -i` does, the top-level locals of the
 * chunks the host ran before (lunar_repl_capture_locals): a name is looked up
 * among those locals first, then in the globals; assigning to such a name
 * sets the captured value, any other assignment sets a global.
 * Stops a `next`/`step` of the debugger still armed. Returns 0. */
int lunar_repl(lua_State *L, const char *banner);

/* For the host's -i: arms a return hook so that when a main chunk (a
 * function called from C with no Lua frame below it: the script, an -e
 * chunk) returns, its active locals (those in scope at its end, the last one
 * of a name winning; nil values are not kept) are copied to a table that
 * lunar_repl then shows. Costs a hook call per function return while armed;
 * lunar_repl disarms it. */
void lunar_repl_capture_locals(lua_State *L);

/* For other debug hooks on L (the debugger's next/step hook), so that
 * setting them does not lose the capture: the event mask to add
 * (LUA_MASKRET while the capture is armed, else 0), the function to call on
 * each event, and the hook to restore in place of lua_sethook(L, NULL, 0, 0). */
int lunar_repl_hook_mask(void);
void lunar_repl_hook(lua_State *L, lua_Debug *ar);
void lunar_repl_reset_hook(lua_State *L);

/* One run of the loop with its own environment, prompt and commands (the
 * debugger's sessions). */
typedef struct {
    const char *prompt;   /* NULL: "lunar> " */
    int prompt_always;    /* print the prompt on a pipe as well */
    int env;              /* absolute stack index of the _ENV chunks run in; 0: the globals */
    /* A line that may be a command: 0 when it is Lua to run (it may set
     * *expr to the part of line to evaluate and print, as `p EXPR`), 1 when
     * it was handled, 2 when the loop must end. NULL: no commands. */
    int (*command)(lua_State *L, void *ud, const char *line, const char **expr);
    /* Adds the names starting with `prefix` that tab completion offers
     * besides the globals' (add(list, name) for each). NULL: none. */
    void (*names)(lua_State *L, void *ud, const char *prefix, void (*add)(void *list, const char *name),
                  void *list);
    void *ud;
    int got_input;        /* out: a line was read */
    int left;             /* out: a command ended the loop (not end of input) */
} lunar_repl_session;

/* Runs the loop as lunar_repl does, with session `s` (NULL: lunar_repl's). */
void lunar_repl_run(lua_State *L, const char *banner, lunar_repl_session *s);

#endif
