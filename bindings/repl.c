/*
 * bindings/repl.c: the read-eval-print loop of `lunar` (repl.h).
 *
 * The loop follows lua.c's: a line is first compiled as "return <line>" so
 * expressions print their values; otherwise as a statement, reading more
 * lines while the syntax error ends in "<eof>". On a terminal it uses GNU
 * readline (history in ~/.lunar_history, completion of global names and
 * table fields with Tab, Ctrl-C clears the current input); on a pipe it reads
 * plain lines with no prompt, so it can be driven by tests. A session
 * (lunar_repl_session) gives it another environment, prompt and commands:
 * that is how the debugger (debugger.c) runs it at a frame. The top-level
 * REPL also sees the main chunks' locals captured by a return hook
 * (lunar_repl_capture_locals), as `python -i` sees a script's variables.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>

#include <readline/readline.h>
#include <readline/history.h>

#include "host_error.h"
#include "repl.h"

#define PROMPT "lunar> "
#define PROMPT2 "    >> "
#define HISTORY_MAX 1000

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
static lunar_repl_session *g_complS;  /* the session whose names complete, or NULL */

static const char *const keywords[] = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
    "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while", NULL};

typedef struct {
    char **v;
    size_t n, cap;
} strlist;

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

static void sl_add_cb(void *list, const char *str) { sl_add(list, str); }

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
        if (g_complS && g_complS->names) g_complS->names(L, g_complS->ud, text, sl_add_cb, &out);
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

/* ---- the loop ----------------------------------------------------------------- */

/* Reads and compiles one chunk; pushes the function. Returns LUA_OK, an
 * error status with the message pushed, or -1 at end of input (nothing
 * pushed). In a session with commands, a command line runs the command and
 * counts as nothing to run, or as the end of input when it leaves. */
static int load_chunk(lua_State *L, lunar_repl_session *s) {
    char *line = read_line(s->prompt ? s->prompt : PROMPT);
    if (!line) return -1;
    if (g_prompt_interrupted) {  /* Ctrl-C: drop the line */
        g_prompt_interrupted = 0;
        free(line);
        lua_pushnil(L);
        return LUA_YIELD;  /* "nothing to run" */
    }
    const char *expr = line;
    s->got_input = 1;
    if (s->command) {
        int c = s->command(L, s->ud, line, &expr);
        if (c) {
            history_add(line);
            free(line);
            if (c == 2) {
                s->left = 1;
                return -1;
            }
            lua_pushnil(L);
            return LUA_YIELD;
        }
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

/* The loop of lunar_repl_run. */
static void repl_loop(lua_State *L, const char *banner, lunar_repl_session *s) {
    int top = lua_gettop(L);
    int prev_tty = g_tty, prev_always = g_prompt_always;
    g_tty = isatty(0);
    g_prompt_always = s->prompt_always;
    lua_State *prev_complL = g_complL;
    lunar_repl_session *prev_complS = g_complS;
    struct sigaction sa, old;
    if (banner) {
        fputs(banner, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (g_tty) {
        history_open();
        g_complL = L;
        g_complS = s;
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
        int status = load_chunk(L, s);
        if (status == -1) break;
        if (status == LUA_YIELD) {  /* interrupted input, or a command */
            lua_settop(L, top);
            continue;
        }
        if (status == LUA_OK) {
            if (s->env) {  /* the chunk's _ENV: the session's environment */
                lua_pushvalue(L, s->env);
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
    if ((g_tty || s->prompt_always) && !s->left) fputc('\n', stdout);  /* Ctrl-D: end the prompt's line */
    fflush(stdout);
    g_complL = prev_complL;
    g_complS = prev_complS;
    g_tty = prev_tty;
    g_prompt_always = prev_always;
    lua_settop(L, top);
}

void lunar_repl_run(lua_State *L, const char *banner, lunar_repl_session *s) {
    lunar_repl_session plain;
    if (!s) {
        memset(&plain, 0, sizeof plain);
        s = &plain;
    }
    s->got_input = s->left = 0;
    repl_loop(L, banner, s);
}

/* ---- the script's top-level locals (-i) ------------------------------------------ */

#define LOCALS_KEY "lunar.script_locals"
static int g_capture_armed;

/* On the return of a main chunk (no Lua frame below it): copies its active
 * locals into the registry's LOCALS_KEY table. */
void lunar_repl_hook(lua_State *L, lua_Debug *ar) {
    lua_Debug caller;
    if (!g_capture_armed || ar->event != LUA_HOOKRET || lua_getstack(L, 1, &caller)) return;
    if (!lua_checkstack(L, 4)) return;
    if (lua_getfield(L, LUA_REGISTRYINDEX, LOCALS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, LOCALS_KEY);
    }
    const char *name;
    for (int i = 1; (name = lua_getlocal(L, ar, i)) != NULL; i++) {
        if (name[0] == '(' || lua_isnil(L, -1)) {
            lua_pop(L, 1);
            continue;
        }
        lua_setfield(L, -2, name);  /* a later local of the same name wins */
    }
    lua_pop(L, 1);
}

int lunar_repl_hook_mask(void) { return g_capture_armed ? LUA_MASKRET : 0; }

void lunar_repl_reset_hook(lua_State *L) {
    if (g_capture_armed)
        lua_sethook(L, lunar_repl_hook, LUA_MASKRET, 0);
    else
        lua_sethook(L, NULL, 0, 0);
}

void lunar_repl_capture_locals(lua_State *L) {
    g_capture_armed = 1;
    lunar_repl_reset_hook(L);
}

/* The top-level environment: __index(env, k) is the captured local k, else
 * the global k; __newindex sets the captured local of that name if there is
 * one, else the global. Upvalues: the captured table, the globals. */
static int top_index(lua_State *L) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    lua_pushvalue(L, 2);
    lua_gettable(L, lua_upvalueindex(2));
    return 1;
}

static int top_newindex(lua_State *L) {
    lua_pushvalue(L, 2);
    int is_local = lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL;
    lua_pop(L, 1);
    lua_settop(L, 3);
    if (is_local)
        lua_rawset(L, lua_upvalueindex(1));
    else
        lua_settable(L, lua_upvalueindex(2));
    return 0;
}

static void top_names(lua_State *L, void *ud, const char *prefix, void (*add)(void *, const char *),
                      void *list) {
    (void)ud;
    size_t plen = strlen(prefix);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LOCALS_KEY) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TSTRING && strncmp(lua_tostring(L, -1), prefix, plen) == 0)
                add(list, lua_tostring(L, -1));
        }
    }
    lua_pop(L, 1);
}

int lunar_repl(lua_State *L, const char *banner) {
    g_capture_armed = 0;
    lua_sethook(L, NULL, 0, 0);  /* the capture, or a debugger `next` that ran off the script */
    int top = lua_gettop(L);
    lunar_repl_session s;
    memset(&s, 0, sizeof s);
    if (lua_getfield(L, LUA_REGISTRYINDEX, LOCALS_KEY) == LUA_TTABLE) {
        lua_newtable(L);                 /* the environment */
        lua_createtable(L, 0, 3);        /* its metatable */
        lua_pushvalue(L, -3);
        lua_pushglobaltable(L);
        lua_pushcclosure(L, top_index, 2);
        lua_setfield(L, -2, "__index");
        lua_pushvalue(L, -3);
        lua_pushglobaltable(L);
        lua_pushcclosure(L, top_newindex, 2);
        lua_setfield(L, -2, "__newindex");
        lua_setmetatable(L, -2);
        s.env = lua_gettop(L);
        s.names = top_names;
    }
    repl_loop(L, banner, &s);
    lua_settop(L, top);
    return 0;
}
