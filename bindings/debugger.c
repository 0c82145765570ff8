/*
 * bindings/debugger.c: the debugger of `lunar` (debugger.h).
 *
 * A session is the REPL loop (repl.h, lunar_repl_run) run at a frame of a
 * running script: chunks get an _ENV whose metamethods look names up in that
 * frame through the debug API (locals, upvalues, then the frame's _ENV), a
 * line that is a command (help, where, up, down, list, locals, p, next, step,
 * continue, quit) runs it, and the prompt "(ldb) " is printed on a pipe as
 * well (stdin forwarded by mpirun or srun is a pipe). Frames are counted from
 * the bottom of the stack so they stay put while the REPL's own calls come
 * and go above them. next/step are a line hook (pdb's next: the next line at
 * the same or a shallower depth).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include "debugger.h"
#include "host_error.h"
#include "repl.h"

/* ---- the debugger: frames and variables ------------------------------------------ */

/* A debugger session: the REPL opened at a breakpoint, at a `next`/`step`
 * stop, or post-mortem at the frame that raised an error. Frames are counted
 * from the bottom of L's stack (0 = the outermost), which stays valid while
 * the REPL runs code above them; a level (counted from the top) does not. */
enum { ACT_CONTINUE, ACT_NEXT, ACT_STEP };

typedef struct {
    lua_State *L;
    int top;             /* the frame where it stopped */
    int cur;             /* the frame shown and evaluated in (up/down move it) */
    int postmortem;      /* stopped on an error: nothing to step */
    int action;          /* what leaving the REPL does: ACT_* */
    lua_Integer serial;  /* tells this session's environments from older ones */
} debugger;

#define DPROMPT "(ldb) "

static debugger *g_dbg;          /* the session running, NULL when none */
static lua_Integer g_dbg_serial;
static int g_bp_on, g_pm_on;     /* lunar_debug_configure */
static int g_step_depth;         /* next: stop at a line at this stack depth or less */

static void step_hook(lua_State *L, lua_Debug *ar);

/* The number of active frames of L (levels 0 .. n-1). */
static int stack_depth(lua_State *L) {
    lua_Debug ar;
    if (!lua_getstack(L, 0, &ar)) return 0;
    int lo = 0, hi = 1;
    while (lua_getstack(L, hi, &ar)) {
        lo = hi;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (lua_getstack(L, mid, &ar))
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

/* Fills ar for frame `frame` (counted from the bottom); 0 if there is none. */
static int get_frame(lua_State *L, int frame, lua_Debug *ar) {
    int level = stack_depth(L) - 1 - frame;
    return frame >= 0 && level >= 0 && lua_getstack(L, level, ar);
}

/* Finds `name` in the frame: the innermost active local of that name, then
 * an upvalue of the frame's function. Returns 'l' (local number *n), 'u'
 * (upvalue number *n) or 0. Leaves the stack as it was. */
static int find_var(lua_State *L, lua_Debug *ar, const char *name, int *n) {
    const char *v;
    int found = 0;
    for (int i = 1; (v = lua_getlocal(L, ar, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (v[0] != '(' && strcmp(v, name) == 0) found = i;  /* later = inner scope */
    }
    if (found) {
        *n = found;
        return 'l';
    }
    lua_getinfo(L, "f", ar);
    for (int i = 1; (v = lua_getupvalue(L, -1, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (strcmp(v, name) == 0) {
            lua_pop(L, 1);
            *n = i;
            return 'u';
        }
    }
    lua_pop(L, 1);
    return 0;
}

/* Pushes the variable find_var found. */
static void push_var(lua_State *L, lua_Debug *ar, int kind, int n) {
    if (kind == 'l') {
        lua_getlocal(L, ar, n);
    } else {
        lua_getinfo(L, "f", ar);
        lua_getupvalue(L, -1, n);
        lua_remove(L, -2);
    }
}

/* For the environment's metamethods: fills ar with the session's current
 * frame; 0 when the environment outlived its session (a function defined
 * in the REPL and called later) or runs on another thread. */
static int env_frame(lua_State *L, lua_Debug *ar) {
    lua_Integer serial = lua_tointeger(L, lua_upvalueindex(2));
    return g_dbg && g_dbg->serial == serial && g_dbg->L == L && get_frame(L, g_dbg->cur, ar);
}

/* Pushes the _ENV the frame sees (its local or upvalue _ENV), else the
 * globals (upvalue 1). */
static void push_frame_env(lua_State *L, lua_Debug *ar, int has_frame) {
    int n, kind = has_frame ? find_var(L, ar, "_ENV", &n) : 0;
    if (kind)
        push_var(L, ar, kind, n);
    else
        lua_pushvalue(L, lua_upvalueindex(1));
}

/* __index(env, k): the frame's local k, its upvalue k, or _ENV[k]. */
static int env_index(lua_State *L) {
    lua_Debug ar;
    int n, kind = 0, has = env_frame(L, &ar);
    if (has && lua_type(L, 2) == LUA_TSTRING) kind = find_var(L, &ar, lua_tostring(L, 2), &n);
    if (kind) {
        push_var(L, &ar, kind, n);
        return 1;
    }
    push_frame_env(L, &ar, has);
    lua_pushvalue(L, 2);
    lua_gettable(L, -2);
    return 1;
}

/* __newindex(env, k, v): sets the frame's local k (debug.setlocal), else its
 * upvalue k, else _ENV[k]. */
static int env_newindex(lua_State *L) {
    lua_Debug ar;
    int n, kind = 0, has = env_frame(L, &ar);
    if (has && lua_type(L, 2) == LUA_TSTRING) kind = find_var(L, &ar, lua_tostring(L, 2), &n);
    if (kind == 'l') {
        lua_pushvalue(L, 3);
        if (!lua_setlocal(L, &ar, n)) lua_pop(L, 1);
        return 0;
    }
    if (kind == 'u') {
        lua_getinfo(L, "f", &ar);
        lua_pushvalue(L, 3);
        if (!lua_setupvalue(L, -2, n)) lua_pop(L, 1);
        return 0;
    }
    push_frame_env(L, &ar, has);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_settable(L, -3);
    return 0;
}

/* Pushes a session's evaluation environment: an empty table whose
 * metatable looks names up in the current frame. */
static void push_env(lua_State *L, lua_Integer serial) {
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_pushglobaltable(L);
    lua_pushinteger(L, serial);
    lua_pushcclosure(L, env_index, 2);
    lua_setfield(L, -2, "__index");
    lua_pushglobaltable(L);
    lua_pushinteger(L, serial);
    lua_pushcclosure(L, env_newindex, 2);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "lunar.debugger_env");
    lua_setfield(L, -2, "__name");
    lua_setmetatable(L, -2);
}

/* Pushes "src:line: in <what>" for a frame (ar filled with "Sln"), as
 * luaL_traceback words it. */
static const char *push_where(lua_State *L, lua_Debug *ar) {
    if (ar->currentline > 0)
        lua_pushfstring(L, "%s:%d: in ", ar->short_src, ar->currentline);
    else
        lua_pushfstring(L, "%s: in ", ar->short_src);
    if (ar->namewhat && *ar->namewhat)
        lua_pushfstring(L, "%s '%s'", strcmp(ar->namewhat, "global") == 0 ? "function" : ar->namewhat,
                        ar->name ? ar->name : "?");
    else if (*ar->what == 'm')
        lua_pushliteral(L, "main chunk");
    else if (*ar->what == 'C')
        lua_pushliteral(L, "?");
    else
        lua_pushfstring(L, "function <%s:%d>", ar->short_src, ar->linedefined);
    lua_concat(L, 2);
    return lua_tostring(L, -1);
}

/* Pushes the text of a chunk's source (ar->source): the file for "@name",
 * the string itself for a chunk loaded from a string. Returns 0 (nothing
 * pushed) when there is none ("=name", an unreadable file). */
static int push_source(lua_State *L, const char *source) {
    if (source[0] == '=') return 0;
    if (source[0] != '@') {
        lua_pushstring(L, source);
        return 1;
    }
    FILE *f = fopen(source + 1, "rb");
    if (!f) return 0;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) luaL_addlstring(&b, buf, n);
    fclose(f);
    luaL_pushresult(&b);
    return 1;
}

/* Prints lines first..last of text, numbered, "->" marking line `mark`;
 * with numbered = 0 only the marked line, as "-> text". */
static void print_lines(const char *text, int first, int last, int mark, int numbered) {
    int line = 1;
    const char *p = text;
    while (*p && line <= last) {
        const char *e = strchr(p, '\n');
        int len = e ? (int)(e - p) : (int)strlen(p);
        if (len > 0 && p[len - 1] == '\r') len--;
        if (line >= first) {
            if (numbered)
                printf("%4d %s %.*s\n", line, line == mark ? "->" : "  ", len, p);
            else if (line == mark)
                printf("-> %.*s\n", len, p);
        }
        if (!e) break;
        p = e + 1;
        line++;
    }
}

/* Prints where the session's current frame is: "<label>: src:line: in f"
 * (or "> src:line: in f" without label), then its source line. */
static void print_frame(lua_State *L, debugger *d, const char *label) {
    lua_Debug ar;
    if (!get_frame(L, d->cur, &ar)) return;
    lua_getinfo(L, "Sln", &ar);
    const char *where = push_where(L, &ar);
    if (label)
        printf("%s%s: %s\n", lunar_rank_tag(), label, where);
    else
        printf("> %s\n", where);
    lua_pop(L, 1);
    if (ar.currentline > 0 && push_source(L, ar.source)) {
        print_lines(lua_tostring(L, -1), ar.currentline, ar.currentline, ar.currentline, 0);
        lua_pop(L, 1);
    }
    fflush(stdout);
}

/* Tab completion in a session: the current frame's local and upvalue names
 * that start with `prefix`. */
static void add_frame_names(lua_State *L, void *ud, const char *prefix, void (*add)(void *, const char *),
                            void *list) {
    (void)ud;
    lua_Debug ar;
    const char *v;
    size_t plen = strlen(prefix);
    if (!g_dbg || g_dbg->L != L || !get_frame(L, g_dbg->cur, &ar)) return;
    for (int i = 1; (v = lua_getlocal(L, &ar, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (v[0] != '(' && strncmp(v, prefix, plen) == 0) add(list, v);
    }
    lua_getinfo(L, "f", &ar);
    for (int i = 1; (v = lua_getupvalue(L, -1, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (*v && strcmp(v, "_ENV") != 0 && strncmp(v, prefix, plen) == 0) add(list, v);
    }
    lua_pop(L, 1);
}

/* ---- the debugger: commands ------------------------------------------------------- */

static const char debug_help[] =
"commands (any other line is Lua, run in the current frame: its locals, then its\n"
"upvalues, then the globals; assigning to a local's name sets that local):\n"
"  help, h           this list\n"
"  where, bt         the stack traceback, most recent call first; > marks the current frame\n"
"  up, u [N]         move N frames (default 1) toward the callers\n"
"  down, d [N]       move back toward where it stopped\n"
"  list, l           the source around the current line\n"
"  locals            the current frame's locals and upvalues\n"
"  p EXPR            print EXPR (p n prints a variable named like a command)\n"
"  next, n           go on to the next line in this function (or in its caller once it\n"
"                    returns), or to the next lunar.breakpoint(), whichever comes first\n"
"  step, s           go on to the next line anywhere, into called functions\n"
"  continue, c       go on running (so does Ctrl-D / end of input)\n"
"  quit, q           end the job now (exit status 1; every rank ends)\n"
"After an error (post-mortem) there is nothing to step: c or Ctrl-D ends the job.\n";

/* Protected commands (they run Lua: __tostring, the allocator): the
 * debugger is argument 1. */
static int cmd_where(lua_State *L) {
    debugger *d = lua_touserdata(L, 1);
    lua_Debug ar;
    int depth = stack_depth(L), skipped = 0;
    printf("stack traceback (> marks the current frame):\n");
    for (int f = d->top; f >= 0; f--) {
        /* as luaL_traceback: the 10 innermost and 11 outermost frames (and the
         * current one), so that a stack overflow's traceback stays short */
        if (f < d->top - 9 && f > 10 && f != d->cur) {
            skipped++;
            continue;
        }
        if (skipped) printf("  ...\t(skipping %d levels)\n", skipped);
        skipped = 0;
        if (!lua_getstack(L, depth - 1 - f, &ar)) break;
        lua_getinfo(L, "Sln", &ar);
        printf("%s %s\n", f == d->cur ? ">" : " ", push_where(L, &ar));
        lua_pop(L, 1);
    }
    return 0;
}

static int cmd_list(lua_State *L) {
    debugger *d = lua_touserdata(L, 1);
    lua_Debug ar;
    if (!get_frame(L, d->cur, &ar)) return 0;
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline <= 0 || !push_source(L, ar.source)) {
        printf("no source for %s\n", ar.short_src);
        return 0;
    }
    int first = ar.currentline > 5 ? ar.currentline - 5 : 1;
    print_lines(lua_tostring(L, -1), first, ar.currentline + 5, ar.currentline, 1);
    return 0;
}

/* Prints "  name = value" with the value (on top, popped) cut to one line. */
static void print_var(lua_State *L, const char *name, const char *what) {
    size_t len;
    const char *s = luaL_tolstring(L, -1, &len);
    const char *nl = memchr(s, '\n', len);
    int cut = nl ? (int)(nl - s) : (int)len;
    if (cut > 160) cut = 160;
    printf("  %s = %.*s%s%s\n", name, cut, s, cut < (int)len ? " ..." : "", what);
    lua_pop(L, 2);
}

static int cmd_locals(lua_State *L) {
    debugger *d = lua_touserdata(L, 1);
    lua_Debug ar;
    const char *name;
    if (!get_frame(L, d->cur, &ar)) return 0;
    for (int i = 1; (name = lua_getlocal(L, &ar, i)) != NULL; i++) {
        if (name[0] == '(') {
            lua_pop(L, 1);
            continue;
        }
        print_var(L, name, "");
    }
    lua_getinfo(L, "f", &ar);
    for (int i = 1; (name = lua_getupvalue(L, -1, i)) != NULL; i++) {
        if (!*name || strcmp(name, "_ENV") == 0) {
            lua_pop(L, 1);
            continue;
        }
        print_var(L, name, "  (upvalue)");
    }
    lua_pop(L, 1);
    return 0;
}

static void run_protected(lua_State *L, lua_CFunction f, debugger *d) {
    lua_pushcfunction(L, f);
    lua_pushlightuserdata(L, d);
    if (lunar_docall(L, 1, 0) != LUA_OK) lunar_report(L);
    fflush(stdout);
}

enum { C_UP, C_DOWN, C_HELP, C_WHERE, C_LIST, C_LOCALS, C_NEXT, C_STEP, C_CONTINUE, C_QUIT };

static const struct {
    const char *name, *alias, *alias2;
    int id;
} debug_commands[] = {
    {"up", "u", NULL, C_UP},         {"down", "d", NULL, C_DOWN},
    {"help", "h", NULL, C_HELP},     {"where", "bt", NULL, C_WHERE},
    {"list", "l", NULL, C_LIST},     {"locals", NULL, NULL, C_LOCALS},
    {"next", "n", NULL, C_NEXT},     {"step", "s", NULL, C_STEP},
    {"continue", "c", "cont", C_CONTINUE}, {"quit", "q", NULL, C_QUIT},
};

static int same(const char *a, const char *b) { return b && strcmp(a, b) == 0; }

/* Handles a debugger command (lunar_repl_session.command). Returns 0 when
 * `line` is not one (it is Lua; `p EXPR` sets *expr to EXPR), 1 when
 * handled, 2 when the REPL should end (d->action says how). A command wins
 * over a variable of the same name (as in pdb), with a note. */
static int debug_command(lua_State *L, void *ud, const char *line, const char **expr) {
    debugger *d = ud;
    if (line[0] == 'p' && (line[1] == ' ' || line[1] == '\t')) {  /* p EXPR */
        *expr = line + 2;
        return 0;
    }
    char cmd[16];
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strcspn(p, " \t");
    if (n == 0 || n >= sizeof cmd) return 0;
    memcpy(cmd, p, n);
    cmd[n] = 0;
    int id = -1;
    for (size_t i = 0; i < sizeof debug_commands / sizeof debug_commands[0]; i++)
        if (same(cmd, debug_commands[i].name) || same(cmd, debug_commands[i].alias) ||
            same(cmd, debug_commands[i].alias2))
            id = debug_commands[i].id;
    if (id < 0) return 0;
    const char *arg = p + n;
    while (*arg == ' ' || *arg == '\t') arg++;
    int count = 1;
    if (*arg) {  /* only up/down take an argument: a count */
        char *end;
        long v = strtol(arg, &end, 10);
        while (*end == ' ' || *end == '\t') end++;
        if ((id != C_UP && id != C_DOWN) || *end || v < 1 || v > 1000000) return 0;
        count = (int)v;
    }
    lua_Debug ar;
    int vn;
    if (get_frame(L, d->cur, &ar) && find_var(L, &ar, cmd, &vn))
        printf("(%s is a command; the variable %s prints with: p %s)\n", cmd, cmd, cmd);
    switch (id) {
    case C_UP:
    case C_DOWN: {
        int to = id == C_UP ? d->cur - count : d->cur + count;
        if (to < 0) to = 0;
        if (to > d->top) to = d->top;
        if (to == d->cur)
            printf(id == C_UP ? "already at the outermost frame\n" : "already at the frame where it stopped\n");
        d->cur = to;
        print_frame(L, d, NULL);
        return 1;
    }
    case C_HELP:
        fputs(debug_help, stdout);
        fflush(stdout);
        return 1;
    case C_WHERE:
        run_protected(L, cmd_where, d);
        return 1;
    case C_LIST:
        run_protected(L, cmd_list, d);
        return 1;
    case C_LOCALS:
        run_protected(L, cmd_locals, d);
        return 1;
    case C_NEXT:
    case C_STEP:
        if (d->postmortem) {
            printf("post-mortem: the script has failed, there is nothing to run "
                   "(c or Ctrl-D ends the job)\n");
            fflush(stdout);
            return 1;
        }
        d->action = id == C_NEXT ? ACT_NEXT : ACT_STEP;
        return 2;
    case C_CONTINUE:
        d->action = ACT_CONTINUE;
        return 2;
    case C_QUIT:
        fflush(stdout);
        fprintf(stderr, "lunar: %squit from the debugger\n", lunar_rank_tag());
        fflush(stderr);
        exit(1);  /* the host's exit handler ends the other ranks */
    }
    return 0;
}

/* ---- the debugger: stops ---------------------------------------------------------------- */

/* Opens a debugger session at `frame` (counted from the bottom of L's
 * stack) and, when it is left with next/step, arms the line hook. */
static void debug_stop(lua_State *L, int frame, const char *why, int postmortem) {
    if (lua_gethook(L) == step_hook) lunar_repl_reset_hook(L);
    if (!lua_checkstack(L, LUA_MINSTACK)) return;
    int top = lua_gettop(L);
    debugger d;
    memset(&d, 0, sizeof d);
    d.L = L;
    d.top = d.cur = frame;
    d.postmortem = postmortem;
    d.serial = ++g_dbg_serial;
    push_env(L, d.serial);
    lunar_repl_session s;
    memset(&s, 0, sizeof s);
    s.prompt = DPROMPT;
    s.prompt_always = 1;
    s.env = lua_gettop(L);
    s.command = debug_command;
    s.names = add_frame_names;
    s.ud = &d;
    g_dbg = &d;
    fflush(stdout);
    fflush(stderr);
    print_frame(L, &d, why);
    static int hinted;
    if (!hinted) {
        hinted = 1;
        printf("(help lists the commands; c or Ctrl-D %s)\n",
               postmortem ? "ends the job" : "continues");
        fflush(stdout);
    }
    lunar_repl_run(L, NULL, &s);
    g_dbg = NULL;
    if (!s.got_input && !isatty(0) && lunar_host_size() > 1) {  /* stdin not routed here? */
        static int hinted_stdin;
        if (!hinted_stdin) {
            hinted_stdin = 1;
            fflush(stdout);
            fprintf(stderr, "lunar: %sthe debugger's stdin is at end of input: going on. Send stdin "
                    "to this rank (mpirun --stdin %d, srun --input=%d).\n", lunar_rank_tag(),
                    lunar_host_rank(), lunar_host_rank());
            fflush(stderr);
        }
    }
    lua_settop(L, top);
    if (d.action == ACT_NEXT) {
        g_step_depth = d.cur + 1;  /* the depth of the current frame */
        lua_sethook(L, step_hook, LUA_MASKLINE | lunar_repl_hook_mask(), 0);
    } else if (d.action == ACT_STEP) {
        g_step_depth = INT_MAX;
        lua_sethook(L, step_hook, LUA_MASKLINE | lunar_repl_hook_mask(), 0);
    }
}

/* The line hook of next/step: stops at the first line run at a stack depth
 * of at most g_step_depth (any depth for step). */
static void step_hook(lua_State *L, lua_Debug *ar) {
    lua_Debug deeper;
    if (ar->event != LUA_HOOKLINE) {  /* a return: the -i capture of the script's locals */
        lunar_repl_hook(L, ar);
        return;
    }
    if (g_step_depth != INT_MAX && lua_getstack(L, g_step_depth, &deeper)) return;
    lunar_repl_reset_hook(L);
    if (g_dbg || !g_bp_on) return;
    debug_stop(L, stack_depth(L) - 1, g_step_depth == INT_MAX ? "step" : "next", 0);
}

/* lunar.breakpoint(): stops at the caller's frame when this process is the
 * one that debugs (repl.h, lunar_open_debug); else, or inside a session, a
 * no-op. */
static int l_breakpoint(lua_State *L) {
    if (!g_bp_on || g_dbg) return 0;
    int depth = stack_depth(L);  /* level 0: this function, level 1: its caller */
    if (depth >= 2) debug_stop(L, depth - 2, "breakpoint", 0);
    return 0;
}

void lunar_debug_configure(int breakpoints, int postmortem) {
    g_bp_on = breakpoints;
    g_pm_on = postmortem;
}

void lunar_open_debug(lua_State *L) {
    lua_pushcfunction(L, l_breakpoint);
    lua_setfield(L, -2, "breakpoint");
}

int lunar_postmortem_msghandler(lua_State *L) {
    int user = lunar_is_user_error(L, 1);
    lunar_msghandler(L);  /* the message with its traceback, on the top */
    if (!g_pm_on || g_dbg || user) return 1;
    lua_Debug ar;
    int level = 1;  /* level 0 is this handler; skip C functions such as error() */
    while (lua_getstack(L, level, &ar) && lua_getinfo(L, "S", &ar) && *ar.what == 'C') level++;
    if (!lua_getstack(L, level, &ar)) level = 1;
    if (!lua_getstack(L, level, &ar)) return 1;
    const char *msg = lua_tostring(L, -1);
    fflush(stdout);
    fprintf(stderr, "lunar: %s%s\n", lunar_rank_tag(), msg ? msg : "(error object is not a string)");
    fflush(stderr);
    debug_stop(L, stack_depth(L) - 1 - level, "post-mortem", 1);
    return 1;
}

int lunar_docall_postmortem(lua_State *L, int narg, int nres) {
    return lunar_docall_with(L, narg, nres, lunar_postmortem_msghandler);
}
