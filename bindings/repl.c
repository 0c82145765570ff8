/*
 * bindings/repl.c: the read-eval-print loop of `lunar` (repl.h), and the
 * protected call with traceback and Ctrl-C handling that the host shares.
 *
 * The loop follows lua.c's: a line is first compiled as "return <line>" so
 * expressions print their values; otherwise as a statement, reading more
 * lines while the syntax error ends in "<eof>". On a terminal it uses GNU
 * readline (history in ~/.lunar_history, completion of global names and
 * table fields with Tab, Ctrl-C clears the current input); on a pipe it reads
 * plain lines with no prompt, so it can be driven by tests.
 *
 * The debugger (repl.h: lunar.breakpoint, next/step, post-mortem) is the same
 * loop run at a frame of a running script: chunks get an _ENV whose
 * metamethods look names up in that frame through the debug API (locals,
 * upvalues, then the frame's _ENV), a line that is a command (help, where,
 * up, down, list, locals, p, next, step, continue, quit) runs it, and the
 * prompt "(ldb) " is printed on a pipe as well (stdin forwarded by mpirun or
 * srun is a pipe). Frames are counted from the bottom of the stack so they
 * stay put while the REPL's own calls come and go above them. next/step are
 * a line hook (pdb's next: the next line at the same or a shallower depth).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include <readline/readline.h>
#include <readline/history.h>

#include "repl.h"

#define PROMPT "lunar> "
#define PROMPT2 "    >> "
#define HISTORY_MAX 1000

static int g_rank = 0, g_size = 1;

void lunar_repl_set_rank(int rank, int size) {
    g_rank = rank;
    g_size = size;
}

/* ---- protected calls ------------------------------------------------------ */

int lunar_msghandler(lua_State *L) {
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

static int docall_with(lua_State *L, int narg, int nres, lua_CFunction msgh) {
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
    return docall_with(L, narg, nres, lunar_msghandler);
}

void lunar_report(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    if (!msg) msg = "(error object is not a string)";
    fflush(stdout);
    if (g_size > 1)
        fprintf(stderr, "lunar: [rank %d] %s\n", g_rank, msg);
    else
        fprintf(stderr, "lunar: %s\n", msg);
    fflush(stderr);
    lua_pop(L, 1);
}

/* ---- input ------------------------------------------------------------------ */

static int g_tty;
static volatile sig_atomic_t g_prompt_interrupted;

/* Ctrl-C at the prompt: read() returns EINTR (no SA_RESTART), our getc
 * function accepts the line, and the loop throws it away. */
static void prompt_sigint(int sig) {
    (void)sig;
    g_prompt_interrupted = 1;
}

static int repl_getc(FILE *f) {
    for (;;) {
        unsigned char c;
        ssize_t r = read(fileno(f), &c, 1);
        if (r == 1) return c;
        if (r == 0) return EOF;
        if (errno != EINTR) return EOF;
        if (g_prompt_interrupted) {  /* show it, then accept (and drop) the line */
            ssize_t w = write(1, "^C", 2);
            (void)w;
            return '\n';
        }
    }
}

/* 1 while a debugger session runs: the prompt is printed on a pipe too, so
 * that someone typing into mpirun's stdin sees where input is expected. */
static int g_prompt_always;

/* A line without its newline (malloc'd), or NULL at end of input. */
static char *read_line(const char *prompt) {
    if (g_tty) {
        fflush(stdout);
        return readline(prompt);
    }
    if (g_prompt_always) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\n') line[--n] = 0;
    if (n > 0 && line[n - 1] == '\r') line[--n] = 0;
    return line;
}

/* ---- history ------------------------------------------------------------------ */

static char g_hist_path[4096];
static int g_hist_ok;  /* 1 when the history file can be appended to */

static void history_open(void) {
    static int done;
    if (done) return;
    done = 1;
    const char *env = getenv("LUNAR_HISTORY");
    if (env && !*env) return;  /* LUNAR_HISTORY= : no history file */
    if (env) {
        snprintf(g_hist_path, sizeof g_hist_path, "%s", env);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) return;
        snprintf(g_hist_path, sizeof g_hist_path, "%s/.lunar_history", home);
    }
    using_history();
    stifle_history(HISTORY_MAX);
    if (read_history(g_hist_path) == 0)
        g_hist_ok = 1;
    else
        g_hist_ok = write_history(g_hist_path) == 0;  /* create it; failure is ignored */
}

static void history_add(const char *chunk) {
    if (!g_tty || !*chunk) return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && strcmp(last->line, chunk) == 0) return;
    add_history(chunk);
    if (g_hist_ok && append_history(1, g_hist_path) != 0) g_hist_ok = 0;
}

static void history_close(void) {
    if (g_hist_ok) history_truncate_file(g_hist_path, HISTORY_MAX);
}

/* ---- completion ------------------------------------------------------------- */

static lua_State *g_complL;

static const char *const keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while", NULL};

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

/* In a debugger session: adds the current frame's local and upvalue names
 * that start with `prefix` (defined with the debugger below). */
static void add_frame_names(lua_State *L, strlist *out, const char *prefix);

static void sl_add(strlist *s, const char *str) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], str) == 0) return;
    if (s->n + 1 >= s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 32;
        char **v = realloc(s->v, cap * sizeof *v);
        if (!v) return;
        s->v = v;
        s->cap = cap;
    }
    char *d = strdup(str);
    if (d) s->v[s->n++] = d;
}

/* Adds the string keys of the table on the top of L starting with `prefix`
 * (each as head .. key), following __index tables of metatables; raw access
 * only, so completion never runs Lua code. */
static void add_fields(lua_State *L, strlist *out, const char *head, size_t headlen,
                       const char *prefix) {
    size_t plen = strlen(prefix);
    for (int depth = 0; depth < 8 && lua_istable(L, -1); depth++) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                size_t klen;
                const char *k = lua_tolstring(L, -2, &klen);
                if (klen >= plen && strncmp(k, prefix, plen) == 0 && (plen > 0 || k[0] != '_')) {
                    char *s = malloc(headlen + klen + 1);
                    if (s) {
                        memcpy(s, head, headlen);
                        memcpy(s + headlen, k, klen + 1);
                        sl_add(out, s);
                        free(s);
                    }
                }
            }
            lua_pop(L, 1);
        }
        if (!lua_getmetatable(L, -1)) break;
        lua_pushliteral(L, "__index");
        lua_rawget(L, -2);
        lua_remove(L, -2);  /* the metatable */
        lua_remove(L, -2);  /* the table: continue with __index */
    }
    lua_pop(L, 1);
}

/* Pushes the value named by the dotted path text[0..len) (raw lookups from
 * the globals), or nil. */
static void push_path(lua_State *L, const char *text, size_t len) {
    lua_pushglobaltable(L);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && text[j] != '.' && text[j] != ':') j++;
        if (lua_type(L, -1) != LUA_TTABLE) {
            /* userdata and others: look in their metatable's __index table */
            if (!lua_getmetatable(L, -1)) {
                lua_pop(L, 1);
                lua_pushnil(L);
                return;
            }
            lua_pushliteral(L, "__index");
            lua_rawget(L, -2);
            lua_remove(L, -2);
            lua_remove(L, -2);
            if (!lua_istable(L, -1)) return;
        }
        lua_pushlstring(L, text + i, j - i);
        lua_rawget(L, -2);
        lua_remove(L, -2);
        i = j + 1;
    }
}

static char **complete(const char *text, int start, int end) {
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;  /* no file name completion */
    rl_completion_append_character = '\0';  /* readline resets it before each attempt */
    lua_State *L = g_complL;
    if (!L) return NULL;
    int top = lua_gettop(L);
    strlist out = {0};
    const char *sep = NULL;
    for (const char *p = text; *p; p++)
        if (*p == '.' || *p == ':') sep = p;
    if (!sep) {
        add_frame_names(L, &out, text);
        lua_pushglobaltable(L);
        add_fields(L, &out, "", 0, text);
        size_t tl = strlen(text);
        if (tl > 0)
            for (int i = 0; keywords[i]; i++)
                if (strncmp(keywords[i], text, tl) == 0) sl_add(&out, keywords[i]);
    } else {
        size_t headlen = (size_t)(sep - text) + 1;
        push_path(L, text, headlen - 1);
        if (!lua_istable(L, -1)) {
            if (lua_getmetatable(L, -1)) {
                lua_pushliteral(L, "__index");
                lua_rawget(L, -2);
                lua_remove(L, -2);
                lua_remove(L, -2);
            } else {
                lua_pop(L, 1);
                lua_pushnil(L);
            }
        }
        add_fields(L, &out, text, headlen, sep + 1);
    }
    lua_settop(L, top);
    if (out.n == 0) {
        free(out.v);
        return NULL;
    }
    /* readline wants: [0] = the common prefix, then the matches, then NULL */
    char **m = malloc((out.n + 2) * sizeof *m);
    if (!m) {
        for (size_t i = 0; i < out.n; i++) free(out.v[i]);
        free(out.v);
        return NULL;
    }
    size_t common = strlen(out.v[0]);
    for (size_t i = 1; i < out.n; i++) {
        size_t k = 0;
        while (k < common && out.v[i][k] == out.v[0][k]) k++;
        common = k;
    }
    if (out.n == 1) {
        m[0] = out.v[0];
        m[1] = NULL;
    } else {
        m[0] = strndup(out.v[0], common);
        for (size_t i = 0; i < out.n; i++) m[i + 1] = out.v[i];
        m[out.n + 1] = NULL;
    }
    free(out.v);
    return m;
}

/* ---- the loop ----------------------------------------------------------------- */

/* 1 (and pops the message) when status is a syntax error at end of input. */
static int incomplete(lua_State *L, int status) {
    if (status == LUA_ERRSYNTAX) {
        size_t lmsg;
        const char *msg = lua_tolstring(L, -1, &lmsg);
        if (lmsg >= 5 && strcmp(msg + lmsg - 5, "<eof>") == 0) {
            lua_pop(L, 1);
            return 1;
        }
    }
    return 0;
}

/* Prints every argument with tostring, separated by tabs. */
static int print_values(lua_State *L) {
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    fwrite(s, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static char *concat3(const char *a, const char *sep, const char *b) {
    size_t la = strlen(a), ls = strlen(sep), lb = strlen(b);
    char *s = malloc(la + ls + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, sep, ls);
    memcpy(s + la + ls, b, lb + 1);
    return s;
}

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
    int env;             /* stack index of the evaluation environment */
    int got_input;       /* a line was read */
    int left;            /* the REPL was left by a command (not end of input) */
    lua_Integer serial;  /* tells this session's environments from older ones */
} debugger;

#define DPROMPT "(ldb) "

static debugger *g_dbg;          /* the session running, NULL when none */
static lua_Integer g_dbg_serial;
static int g_bp_on, g_pm_on;     /* lunar_debug_configure */
static int g_step_depth;         /* next: stop at a line at this stack depth or less */

static void step_hook(lua_State *L, lua_Debug *ar);

/* "[rank R] " when the world has more than one rank, else "". */
static const char *rank_tag(void) {
    static char buf[32];
    if (g_size <= 1) return "";
    snprintf(buf, sizeof buf, "[rank %d] ", g_rank);
    return buf;
}

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
        printf("%s%s: %s\n", rank_tag(), label, where);
    else
        printf("> %s\n", where);
    lua_pop(L, 1);
    if (ar.currentline > 0 && push_source(L, ar.source)) {
        print_lines(lua_tostring(L, -1), ar.currentline, ar.currentline, ar.currentline, 0);
        lua_pop(L, 1);
    }
    fflush(stdout);
}

static void add_frame_names(lua_State *L, strlist *out, const char *prefix) {
    lua_Debug ar;
    const char *v;
    size_t plen = strlen(prefix);
    if (!g_dbg || g_dbg->L != L || !get_frame(L, g_dbg->cur, &ar)) return;
    for (int i = 1; (v = lua_getlocal(L, &ar, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (v[0] != '(' && strncmp(v, prefix, plen) == 0) sl_add(out, v);
    }
    lua_getinfo(L, "f", &ar);
    for (int i = 1; (v = lua_getupvalue(L, -1, i)) != NULL; i++) {
        lua_pop(L, 1);
        if (*v && strcmp(v, "_ENV") != 0 && strncmp(v, prefix, plen) == 0) sl_add(out, v);
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

/* Handles a debugger command. Returns 0 when `line` is not one (it is Lua),
 * 1 when handled, 2 when the REPL should end (d->action says how). A
 * command wins over a variable of the same name (as in pdb), with a note. */
static int debug_command(lua_State *L, debugger *d, const char *line) {
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
        fprintf(stderr, "lunar: %squit from the debugger\n", rank_tag());
        fflush(stderr);
        exit(1);  /* the host's exit handler ends the other ranks */
    }
    return 0;
}

/* ---- the loop ----------------------------------------------------------------- */

/* Reads and compiles one chunk; pushes the function. Returns LUA_OK, an
 * error status with the message pushed, or -1 at end of input (nothing
 * pushed). In a debugger session (d), a command line runs the command and
 * counts as nothing to run, or as the end of input when it leaves. */
static int load_chunk(lua_State *L, debugger *d) {
    char *line = read_line(d ? DPROMPT : PROMPT);
    if (!line) return -1;
    if (g_prompt_interrupted) {  /* Ctrl-C: drop the line */
        g_prompt_interrupted = 0;
        free(line);
        lua_pushnil(L);
        return LUA_YIELD;  /* "nothing to run" */
    }
    const char *expr = line;
    if (d) {
        d->got_input = 1;
        int c = debug_command(L, d, line);
        if (c) {
            history_add(line);
            free(line);
            if (c == 2) {
                d->left = 1;
                return -1;
            }
            lua_pushnil(L);
            return LUA_YIELD;
        }
        if (line[0] == 'p' && (line[1] == ' ' || line[1] == '\t')) expr = line + 2;  /* p EXPR */
    }
    char *ret = concat3("return ", expr, ";");
    int status = ret ? luaL_loadbuffer(L, ret, strlen(ret), "=repl") : LUA_ERRMEM;
    free(ret);
    if (status == LUA_OK || expr != line) {  /* p EXPR: an expression or its error */
        history_add(line);
        free(line);
        return status;
    }
    lua_pop(L, 1);
    char *chunk = line;
    for (;;) {
        status = luaL_loadbuffer(L, chunk, strlen(chunk), "=repl");
        if (!incomplete(L, status)) break;
        char *more = read_line(PROMPT2);
        if (!more || g_prompt_interrupted) {
            int interrupted = more != NULL;
            g_prompt_interrupted = 0;
            free(more);
            history_add(chunk);
            if (interrupted) {
                free(chunk);
                lua_pushnil(L);
                return LUA_YIELD;
            }
            /* end of input inside a chunk: report its syntax error */
            status = luaL_loadbuffer(L, chunk, strlen(chunk), "=repl");
            free(chunk);
            return status == LUA_OK ? -1 : status;
        }
        char *joined = concat3(chunk, "\n", more);
        free(chunk);
        free(more);
        if (!joined) {
            lua_pushliteral(L, "out of memory");
            return LUA_ERRMEM;
        }
        chunk = joined;
    }
    history_add(chunk);
    free(chunk);
    return status;
}

/* The loop of lunar_repl; in a debugger session (d) chunks run in the
 * session's environment and commands are recognized. */
static void repl_loop(lua_State *L, const char *banner, debugger *d) {
    int top = lua_gettop(L);
    int prev_tty = g_tty, prev_always = g_prompt_always;
    g_tty = isatty(0);
    g_prompt_always = d != NULL;
    lua_State *prev_complL = g_complL;
    struct sigaction sa, old;
    if (banner) {
        fputs(banner, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (g_tty) {
        history_open();
        g_complL = L;
        rl_readline_name = "lunar";
        rl_attempted_completion_function = complete;
        rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{}()[],+-*/%^~#";
        rl_completion_append_character = '\0';
        rl_catch_signals = 0;
        rl_getc_function = repl_getc;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = prompt_sigint;
        sa.sa_flags = 0;  /* no SA_RESTART: read() returns EINTR */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old);
    }
    for (;;) {
        g_prompt_interrupted = 0;
        int status = load_chunk(L, d);
        if (status == -1) break;
        if (status == LUA_YIELD) {  /* interrupted input, or a command */
            lua_settop(L, top);
            continue;
        }
        if (status == LUA_OK) {
            if (d) {  /* the chunk's _ENV: the session's environment */
                lua_pushvalue(L, d->env);
                if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
            }
            int base = lua_gettop(L);
            status = lunar_docall(L, 0, LUA_MULTRET);
            if (status == LUA_OK && lua_gettop(L) >= base) {
                int n = lua_gettop(L) - base + 1;
                lua_pushcfunction(L, print_values);
                lua_insert(L, base);
                status = lua_pcall(L, n, 0, 0);
                if (status != LUA_OK)
                    lua_pushfstring(L, "error printing the result: %s", lua_tostring(L, -1));
            }
        }
        if (status != LUA_OK) lunar_report(L);
        lua_settop(L, top);
    }
    if (g_tty) {
        sigaction(SIGINT, &old, NULL);
        history_close();
    }
    if ((g_tty || d) && !(d && d->left)) fputc('\n', stdout);  /* Ctrl-D: end the prompt's line */
    if (d && !g_tty && !d->got_input && g_size > 1) {  /* stdin not routed here? */
        static int hinted;
        if (!hinted) {
            hinted = 1;
            fflush(stdout);
            fprintf(stderr, "lunar: %sthe debugger's stdin is at end of input: going on. Send stdin "
                    "to this rank (mpirun --stdin %d, srun --input=%d).\n", rank_tag(), g_rank, g_rank);
            fflush(stderr);
        }
    }
    fflush(stdout);
    g_complL = prev_complL;
    g_tty = prev_tty;
    g_prompt_always = prev_always;
    lua_settop(L, top);
}

int lunar_repl(lua_State *L, const char *banner) {
    if (lua_gethook(L) == step_hook) lua_sethook(L, NULL, 0, 0);  /* a `next` that ran off the script */
    repl_loop(L, banner, NULL);
    return 0;
}

/* ---- the debugger: stops ---------------------------------------------------------------- */

/* Opens a debugger session at `frame` (counted from the bottom of L's
 * stack) and, when it is left with next/step, arms the line hook. */
static void debug_stop(lua_State *L, int frame, const char *why, int postmortem) {
    if (lua_gethook(L) == step_hook) lua_sethook(L, NULL, 0, 0);
    if (!lua_checkstack(L, LUA_MINSTACK)) return;
    int top = lua_gettop(L);
    debugger d;
    memset(&d, 0, sizeof d);
    d.L = L;
    d.top = d.cur = frame;
    d.postmortem = postmortem;
    d.serial = ++g_dbg_serial;
    push_env(L, d.serial);
    d.env = lua_gettop(L);
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
    repl_loop(L, NULL, &d);
    g_dbg = NULL;
    lua_settop(L, top);
    if (d.action == ACT_NEXT) {
        g_step_depth = d.cur + 1;  /* the depth of the current frame */
        lua_sethook(L, step_hook, LUA_MASKLINE, 0);
    } else if (d.action == ACT_STEP) {
        g_step_depth = INT_MAX;
        lua_sethook(L, step_hook, LUA_MASKLINE, 0);
    }
}

/* The line hook of next/step: stops at the first line run at a stack depth
 * of at most g_step_depth (any depth for step). */
static void step_hook(lua_State *L, lua_Debug *ar) {
    lua_Debug deeper;
    if (ar->event != LUA_HOOKLINE) return;
    if (g_step_depth != INT_MAX && lua_getstack(L, g_step_depth, &deeper)) return;
    lua_sethook(L, NULL, 0, 0);
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
    lunar_msghandler(L);  /* the message with its traceback, on the top */
    if (!g_pm_on || g_dbg) return 1;
    lua_Debug ar;
    int level = 1;  /* level 0 is this handler; skip C functions such as error() */
    while (lua_getstack(L, level, &ar) && lua_getinfo(L, "S", &ar) && *ar.what == 'C') level++;
    if (!lua_getstack(L, level, &ar)) level = 1;
    if (!lua_getstack(L, level, &ar)) return 1;
    const char *msg = lua_tostring(L, -1);
    fflush(stdout);
    fprintf(stderr, "lunar: %s%s\n", rank_tag(), msg ? msg : "(error object is not a string)");
    fflush(stderr);
    debug_stop(L, stack_depth(L) - 1 - level, "post-mortem", 1);
    return 1;
}

int lunar_docall_postmortem(lua_State *L, int narg, int nres) {
    return docall_with(L, narg, nres, lunar_postmortem_msghandler);
}
