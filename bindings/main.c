/*
 * bindings/main.c: `lunar`, the host program.
 *
 * Starts the communication layer (lunar_comm_init: MPI when built with it; a
 * singleton run without mpirun works; a single-rank build refuses to run under
 * a launcher that started several processes), opens a Lua 5.4 state with the standard libraries and the `lunar`
 * table (lunar_bindings.h; require('lunar') returns it too), points
 * package.path at the repository's lua/ and then the script's directory (as
 * Python's sys.path[0]), and runs a script, code given with -e, or the REPL. The
 * same command runs on every rank; an error on any rank ends the whole job.
 *
 *   lunar SCRIPT.lua [--config FILE] [key=value ...] [-- ARGS ...]
 *   lunar -e CODE [...]            run CODE (several -e run in order)
 *   lunar -i SCRIPT.lua [...]      run the script, then the REPL in its state
 *   lunar config SUBCOMMAND [...]  the config tool: require('lunar.cli').main(args)
 *                                  with args = {"config", SUBCOMMAND, ...}
 *   lunar plot FILE... [-o OUT]    the same, with args = {"plot", FILE, ...}
 *   lunar                          the REPL
 *   lunar --help | --version
 *
 * Arguments may come in any order before `--`: an argument with '=' (and no
 * '/' before the '=') is a config override, the first other one is the
 * script ("-" reads it from stdin), later ones and everything after `--` are
 * the script's own arguments. The script sees
 *   lunar.args = { script =, config =, overrides = {"k=v", ...}, rest = {...},
 *                  repl_rank =, interactive = }
 *   arg        = { [0] = script, [1..] = rest; the host's own arguments at
 *                  negative indices, as the lua standalone does }
 *   ...        = the rest arguments
 *   lunar.home = the repository root ($LUNAR_HOME, or found from the executable)
 *
 * Errors (host_error.h): a Lua error prints "lunar: [rank R] <message>" with
 * its traceback (the rank only when the world size is > 1; a user error,
 * lunar.error(msg), prints its message alone) and exits with status 1; with
 * more than one rank it calls lunar_comm_abort (MPI_Abort) so the others end too. os.exit(n)
 * exits with n (MPI finalized, or aborted when n != 0 and size > 1). SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL and SIGABRT print the signal, the C backtrace and the
 * Lua stack before the process dies of that signal. Ctrl-C during a script is
 * the Lua error "interrupted" (with a traceback); a second Ctrl-C kills.
 * Usage errors exit with status 2.
 *
 * With -i, the REPL (repl.h) runs after the script in its state and sees the
 * script's top-level locals besides the globals, as `python -i` does.
 *
 * The debugger (debugger.h): lunar.breakpoint() opens the REPL at its
 * caller's frame on the --repl-rank rank, or on a single-rank run without
 * --repl-rank, and is a no-op elsewhere; the other ranks wait at their next
 * collective. With --repl-rank R, an error escaping the script (or an -e
 * chunk) on rank R first opens the REPL post-mortem at the frame that raised
 * it; leaving it ends the job with that error as above.
 */
#include <errno.h>
#include <execinfo.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>

#include "lunar_bindings.h"
#include "lunar/alloc.h"
#include "lunar/comm.h"
#include "debugger.h"
#include "host_error.h"
#include "repl.h"

/* ---- process state ------------------------------------------------------------ */

static int g_rank = 0, g_size = 1, g_local_rank = 0;
static lua_State *g_L;
static pthread_t g_main_thread;
static char g_prefix[64] = "lunar: ";  /* "lunar: [rank R] " when size > 1 */

/* Ends the whole job now: lunar_comm_abort (MPI_Abort) with more than one
 * rank, else finalize and exit. */
static void die(int status) {
    fflush(stdout);
    fflush(stderr);
    if (g_size > 1) lunar_comm_abort(status);
    lunar_comm_finalize();
    _exit(status);
}

/* Runs at exit() (os.exit, or a C library that calls exit): finalize the
 * communication layer, or abort the job when the status is an error and
 * there are other ranks. */
static void on_exit_handler(int status, void *arg) {
    (void)arg;
    if (status != 0 && g_size > 1) die(status);
    lunar_comm_finalize();
}

/* ---- fatal signals ------------------------------------------------------------ */

static void put(const char *s) {
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void put_int(long v) {
    char buf[24], *p = buf + sizeof buf;
    int neg = v < 0;
    unsigned long u = neg ? (unsigned long)(-v) : (unsigned long)v;
    *--p = 0;
    do { *--p = (char)('0' + u % 10); u /= 10; } while (u);
    if (neg) *--p = '-';
    put(p);
}

static const char *signame(int sig) {
    switch (sig) {
    case SIGSEGV: return "SIGSEGV, segmentation fault";
    case SIGBUS: return "SIGBUS, bus error";
    case SIGFPE: return "SIGFPE, arithmetic exception";
    case SIGILL: return "SIGILL, illegal instruction";
    case SIGABRT: return "SIGABRT, aborted";
    }
    return "?";
}

/* Prints the signal, the C backtrace and the Lua call stack (read without
 * allocating), then dies of the same signal. alarm() bounds the time spent
 * here in case the state is too broken to walk. */
static void fatal_signal(int sig) {
    alarm(10);
    put(g_prefix);
    put("fatal signal ");
    put_int(sig);
    put(" (");
    put(signame(sig));
    put(")\nC backtrace:\n");
    void *frames[64];
    int n = backtrace(frames, 64);
    backtrace_symbols_fd(frames, n, 2);
    lua_State *L = g_L;
    if (L && pthread_equal(pthread_self(), g_main_thread)) {
        put("Lua stack:\n");
        lua_Debug ar;
        for (int level = 0; level < 32 && lua_getstack(L, level, &ar); level++) {
            if (!lua_getinfo(L, "Sln", &ar)) break;
            put("\t");
            put(ar.short_src);
            if (ar.currentline > 0) {
                put(":");
                put_int(ar.currentline);
            }
            if (ar.name) {
                put(": in function '");
                put(ar.name);
                put("'");
            }
            put("\n");
        }
    }
    signal(sig, SIG_DFL);
    raise(sig);
    _exit(128 + sig);
}

static void install_signal_handlers(void) {
    static char altstack[1 << 16];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    sigaltstack(&ss, NULL);  /* so a C stack overflow still reports */
    void *warm[2];
    backtrace(warm, 2);  /* loads libgcc now, not inside the handler */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fatal_signal;
    sa.sa_flags = SA_ONSTACK | SA_NODEFER | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
}

/* ---- arguments ------------------------------------------------------------------ */

enum { ROLE_HOST, ROLE_SCRIPT, ROLE_REST };

typedef struct {
    const char *script;     /* NULL: none */
    const char *config;     /* --config FILE */
    const char *repl_rank;  /* --repl-rank R */
    const char *command;    /* "config", "plot", "profile", "search": argv[1..] go to lua/lunar/cli.lua */
    int interactive, help, version;
    int n_chunks, n_overrides, n_rest;
    const char **chunks;    /* -e CODE, in order */
    const char **overrides; /* key=value, in order */
    const char **rest;      /* script arguments */
    int *role;              /* per argv index */
} options;

static void usage(FILE *f) {
    fprintf(f,
"usage: lunar SCRIPT.lua [--config FILE] [key=value ...] [-- ARGS ...]\n"
"       lunar -e CODE [...]\n"
"       lunar -i SCRIPT.lua [...]\n"
"       lunar config show FILE [key=value ...] | keys [--markdown] | help\n"
"       lunar plot METRICS_FILE... [-o curves.png]\n"
"       [mpirun -np N] lunar profile --config C [--out PROFILE]\n"
"       lunar search --config C --profile PROFILE --world N --memory-budget BYTES [--out S.lua]\n"
"       lunar                        (the REPL)\n"
"\n"
"Runs a Lua 5.4 script, with the `lunar` library loaded, on every MPI rank\n"
"(mpirun -np N lunar ...), or an interactive REPL.\n"
"\n"
"commands:\n"
"  config show FILE [key=value ...]  print the resolved config and the model's\n"
"                    parameter count (the model is not allocated)\n"
"  config keys [--markdown]  every config key with its type, default and doc\n"
"  plot METRICS_FILE... [-o curves.png]  loss, learning-rate and test-accuracy\n"
"                    curves of one or more runs on one figure (gnuplot)\n"
"  profile, search   measure this machine; search a parallel strategy under a\n"
"                    memory budget and write it as a config (lunar.strategy)\n"
"\n"
"options:\n"
"  --config FILE     the config file (a Lua chunk): lunar.args.config\n"
"  key=value         a config override, in order: lunar.args.overrides\n"
"  -e CODE           run CODE (before the script, if any); may be repeated\n"
"  -i                after the script (or -e), open the REPL in the same state; it\n"
"                    sees the script's top-level locals and the globals\n"
"  --repl-rank R     the rank whose lunar.breakpoint() and errors open the REPL\n"
"                    (debugger, post-mortem); the other ranks wait at their next\n"
"                    collective. Without it, only a single-rank run stops at\n"
"                    lunar.breakpoint(). Send stdin to rank R: mpirun --stdin R,\n"
"                    srun --input=R. lunar.args.repl_rank\n"
"  -                 read the script from stdin\n"
"  --                the arguments after it go to the script: arg[1..], ...,\n"
"                    lunar.args.rest (so do positional arguments after the script)\n"
"  -h, --help        this text\n"
"  -v, --version     the version, and whether MPI and OpenMP are compiled in\n"
"\n"
"environment:\n"
"  LUNAR_HOME        the repository root holding lua/lunar (default: found from\n"
"                    the executable, build/lunar -> ..)\n"
"  LUNAR_HISTORY     the REPL history file (default ~/.lunar_history; empty: none)\n"
"  LUNAR_GC_STEP_MB  step Lua's garbage collector every N MiB of tensor memory\n"
"                    allocated (default 64; 0: never)\n"
"  OMP_NUM_THREADS   threads for the CPU kernels and BLAS\n"
"  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1,\n"
"  OMPI_MCA_rmaps_base_oversubscribe=1   Open MPI as root / more ranks than cores\n"
"\n"
"errors: a Lua error prints \"lunar: <message>\" and its stack traceback; an\n"
"error in the user's input (a missing dataset, a bad path, a config key) is\n"
"raised with lunar.error(msg) and prints the message alone.\n"
"\n"
"modules: require('lunar') is the lunar table; package.path holds lua/, then\n"
"the script's directory (modules next to the script), then Lua's default.\n"
"\n"
"exit status: 0 success, 1 a Lua error, 2 a usage error, n from os.exit(n),\n"
"128+N death by signal N.\n"
"\n"
"make commands:\n"
"  make                       build liblunar and build/lunar\n"
"  make run ARGS='key=value'  train ViT on Fashion-MNIST (examples/train_with_engine.lua)\n"
"  make test                  every test suite; ends with \"N passed, N failed\"\n"
"\n"
"examples:\n"
"  build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua EPOCHS=1\n"
"  mpirun -np 4 build/lunar examples/train_with_engine.lua --config configs/vit_fmnist.lua\n"
"  build/lunar -e 'print(lunar.version)'\n"
"  build/lunar -i script.lua\n");
}

static void version(void) {
    printf("lunar %s (%s, MPI: %s", LUNAR_VERSION, LUA_RELEASE, lunar_comm_backend());
#ifdef _OPENMP
    printf(", OpenMP: yes (%d)", _OPENMP);
#else
    printf(", OpenMP: no");
#endif
#ifdef LUNAR_USE_CUDA
    printf(", CUDA: yes");
#else
    printf(", CUDA: no");
#endif
    printf(")\n");
}

static int usage_error(const char *fmt, const char *what) {
    fprintf(stderr, "lunar: ");
    fprintf(stderr, fmt, what);
    fprintf(stderr, "\nusage: lunar SCRIPT.lua [--config FILE] [key=value ...] [-- ARGS ...]"
                    " (see lunar --help)\n");
    return 2;
}

static int is_override(const char *a) {
    const char *eq = strchr(a, '=');
    if (!eq || eq == a) return 0;
    for (const char *p = a; p < eq; p++)
        if (*p == '/') return 0;
    return 1;
}

/* The value of "--name VALUE" or "--name=VALUE" at argv[*i]; NULL if `a`
 * is not that option. Sets *missing when the value is absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *missing) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != 0) return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

static void free_options(options *o) {
    free(o->chunks);
    free(o->overrides);
    free(o->rest);
    free(o->role);
    o->chunks = o->overrides = o->rest = NULL;
    o->role = NULL;
}

/* Returns -1 on success, else the exit status (usage error); the caller
 * frees o's arrays with free_options in every case. */
static int parse_args(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->chunks = calloc((size_t)argc + 1, sizeof *o->chunks);
    o->overrides = calloc((size_t)argc + 1, sizeof *o->overrides);
    o->rest = calloc((size_t)argc + 1, sizeof *o->rest);
    o->role = calloc((size_t)argc + 1, sizeof *o->role);
    if (!o->chunks || !o->overrides || !o->rest || !o->role) {
        fprintf(stderr, "lunar: out of memory\n");
        return 1;
    }
    if (argc >= 2 && (strcmp(argv[1], "config") == 0 || strcmp(argv[1], "plot") == 0 ||
                      strcmp(argv[1], "profile") == 0 || strcmp(argv[1], "search") == 0)) {
        /* the config tool, `lunar plot`, `lunar profile` and `lunar search`: every argument goes to lunar.cli */
        o->command = argv[1];
        for (int i = 1; i < argc; i++) {
            o->rest[o->n_rest++] = argv[i];
            o->role[i] = ROLE_REST;
        }
        return -1;
    }
    int dashdash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int missing = 0;
        const char *v;
        if (dashdash) {
            o->rest[o->n_rest++] = a;
            o->role[i] = ROLE_REST;
        } else if (strcmp(a, "--") == 0) {
            dashdash = 1;
        } else if (a[0] == '-' && a[1] != 0) {
            if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                o->help = 1;
            } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
                o->version = 1;
            } else if (strcmp(a, "-i") == 0) {
                o->interactive = 1;
            } else if (strncmp(a, "-e", 2) == 0) {
                if (a[2]) {
                    o->chunks[o->n_chunks++] = a + 2;
                } else if (i + 1 < argc) {
                    o->chunks[o->n_chunks++] = argv[++i];
                } else {
                    return usage_error("option '%s' needs an argument (the Lua code to run)", a);
                }
            } else if ((v = opt_value(argc, argv, &i, "--config", &missing)) || missing) {
                if (missing) return usage_error("option '%s' needs an argument (a config file)", a);
                if (o->config) return usage_error("--config given twice (second: '%s')", v);
                o->config = v;
            } else if ((v = opt_value(argc, argv, &i, "--repl-rank", &missing)) || missing) {
                if (missing) return usage_error("option '%s' needs an argument (a rank)", a);
                char *end;
                errno = 0;
                long r = strtol(v, &end, 10);
                if (!*v || *end || errno || r < 0 || r > INT_MAX)
                    return usage_error("--repl-rank: '%s' is not a rank (an integer >= 0)", v);
                o->repl_rank = v;
            } else {
                return usage_error("unknown option '%s'", a);
            }
        } else if (is_override(a)) {
            o->overrides[o->n_overrides++] = a;
        } else if (!o->script) {
            o->script = a;
            o->role[i] = ROLE_SCRIPT;
        } else {
            o->rest[o->n_rest++] = a;
            o->role[i] = ROLE_REST;
        }
    }
    return -1;
}

/* ---- the repository root -------------------------------------------------------- */

static int has_lua_dir(const char *root) {
    char p[PATH_MAX + 32];
    struct stat st;
    snprintf(p, sizeof p, "%s/lua/lunar", root);
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Fills root with the directory holding lua/lunar: $LUNAR_HOME, else the
 * executable's directory or one of its parents (build/lunar -> ..).
 * Returns 0, or -1 (root then holds the best guess). */
static int find_root(char *root, size_t cap) {
    const char *env = getenv("LUNAR_HOME");
    if (env && *env) {
        snprintf(root, cap, "%s", env);
        if (has_lua_dir(root)) return 0;
        fprintf(stderr, "lunar: warning: LUNAR_HOME=%s has no lua/lunar; looking next to the "
                        "executable\n", env);
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(root, cap, ".");
        return has_lua_dir(root) ? 0 : -1;
    }
    exe[n] = 0;
    char guess[PATH_MAX] = "";
    for (int up = 0; up < 4; up++) {
        char *slash = strrchr(exe, '/');
        if (!slash) break;
        *slash = 0;
        const char *dir = exe[0] ? exe : "/";
        if (up == 1) snprintf(guess, sizeof guess, "%s", dir);  /* build/lunar -> .. */
        if (has_lua_dir(dir)) {
            snprintf(root, cap, "%s", dir);
            return 0;
        }
        if (!exe[0]) break;
    }
    snprintf(root, cap, "%s", guess[0] ? guess : ".");
    return -1;
}

/* ---- the Lua state ------------------------------------------------------------------ */

static void gc_pressure(void *ud) {
    static int busy;
    lua_State *L = ud;
    if (!L || busy || !pthread_equal(pthread_self(), g_main_thread)) return;
    if (!lua_gc(L, LUA_GCISRUNNING)) return;  /* respect collectgarbage("stop") */
    busy = 1;
    lua_gc(L, LUA_GCSTEP, 0);  /* returns -1 (does nothing) when called during a collection */
    busy = 0;
}

/* package.path: the repository's lua/ first, then the running script's
 * directory (as Python puts the script's directory in sys.path[0]: a script
 * requires the modules next to it; after lua/ so that none can shadow
 * Lunar's), then Lua's default path. No script, or a script read from stdin:
 * no script directory. */
static void set_package_path(lua_State *L, const char *root, const char *script) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    const char *old = lua_tostring(L, -1);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;", root, root);
    luaL_addvalue(&b);
    if (script && strcmp(script, "-") != 0) {
        const char *slash = strrchr(script, '/');
        if (!slash)
            luaL_addstring(&b, ".");
        else
            luaL_addlstring(&b, script, slash == script ? 1 : (size_t)(slash - script));
        luaL_addstring(&b, "/?.lua;");
    }
    luaL_addstring(&b, old ? old : "");
    luaL_pushresult(&b);
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

static void push_strings(lua_State *L, const char **v, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushstring(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

/* lunar.args, lunar.home and the global `arg`. */
static int set_args(lua_State *L) {
    int argc = (int)lua_tointeger(L, 1);
    char **argv = lua_touserdata(L, 2);
    const options *o = lua_touserdata(L, 3);
    const char *root = lua_tostring(L, 4);
    if (lua_getglobal(L, "lunar") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setglobal(L, "lunar");
    }
    lua_pushstring(L, root);
    lua_setfield(L, -2, "home");
    lua_createtable(L, 0, 6);
    if (o->script) {
        lua_pushstring(L, o->script);
        lua_setfield(L, -2, "script");
    }
    if (o->config) {
        lua_pushstring(L, o->config);
        lua_setfield(L, -2, "config");
    }
    push_strings(L, o->overrides, o->n_overrides);
    lua_setfield(L, -2, "overrides");
    push_strings(L, o->rest, o->n_rest);
    lua_setfield(L, -2, "rest");
    if (o->repl_rank) {
        lua_pushinteger(L, (lua_Integer)strtol(o->repl_rank, NULL, 10));
        lua_setfield(L, -2, "repl_rank");
    }
    lua_pushboolean(L, o->interactive);
    lua_setfield(L, -2, "interactive");
    lua_setfield(L, -2, "args");
    lua_pop(L, 1);

    /* arg: [0] = script (or the program), [1..] = rest, host arguments below 0 */
    lua_createtable(L, o->n_rest, argc);
    int nhost = 0;
    for (int i = 0; i < argc; i++)
        if (o->role[i] == ROLE_HOST) nhost++;
    if (!o->script) nhost--;  /* argv[0] becomes arg[0] */
    int k = -nhost;
    for (int i = 0; i < argc; i++) {
        if (o->role[i] != ROLE_HOST || (i == 0 && !o->script)) continue;
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, k++);
    }
    lua_pushstring(L, o->script ? o->script : argv[0]);
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < o->n_rest; i++) {
        lua_pushstring(L, o->rest[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    return 0;
}

/* Opens the libraries and bindings and sets the arguments, protected.
 * require('lunar') returns the `lunar` table (package.loaded.lunar). */
static int open_state(lua_State *L) {
    const options *o = lua_touserdata(L, 3);
    luaL_openlibs(L);
    set_package_path(L, lua_tostring(L, 4), o->script);
    lunar_open_bindings(L);
    lua_settop(L, 4);
    set_args(L);
    lua_getglobal(L, "lunar");
    lunar_open_debug(L);   /* lunar.breakpoint (debugger.h) */
    lunar_open_errors(L);  /* lunar.error, lunar.UserError (host_error.h) */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "lunar");
    return 0;
}

/* Loads and runs one chunk (already on the stack) with the script args. */
static int run_chunk(lua_State *L, int load_status, const options *o) {
    if (load_status != LUA_OK) return load_status;
    for (int i = 0; i < o->n_rest; i++) lua_pushstring(L, o->rest[i]);
    return lunar_docall_postmortem(L, o->n_rest, 0);  /* post-mortem on the --repl-rank rank */
}

int main(int argc, char **argv) {
    options o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0 || o.help || o.version) {
        if (rc < 0 && o.help) usage(stdout);
        else if (rc < 0) version();
        free_options(&o);
        return rc >= 0 ? rc : 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);  /* line by line, also through mpirun's pipes */
    g_main_thread = pthread_self();

    /* MPI starts helper threads; they inherit this mask, so a fatal signal or
     * Ctrl-C sent to the process is delivered to the main thread, whose handler
     * can print the Lua stack. (Faults are still delivered to the faulting thread.) */
    sigset_t fatal, old;
    sigemptyset(&fatal);
    int blocked[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGINT};
    for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++) sigaddset(&fatal, blocked[i]);
    pthread_sigmask(SIG_BLOCK, &fatal, &old);
    lunar_comm_process proc;
    lunar_status cs = lunar_comm_init(&argc, &argv, &proc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (cs != LUNAR_OK) {
        fprintf(stderr, "lunar: %s\n", lunar_last_error());
        free_options(&o);
        return 1;
    }
    g_rank = proc.rank;
    g_size = proc.size;
    g_local_rank = proc.local_rank;
    if (!proc.thread_funneled && g_rank == 0)
        fprintf(stderr, "lunar: warning: MPI provides a thread level below MPI_THREAD_FUNNELED\n");
    on_exit(on_exit_handler, NULL);
    if (g_size > 1) snprintf(g_prefix, sizeof g_prefix, "lunar: [rank %d] ", g_rank);
    lunar_bindings_set_rank(g_rank, g_size, g_local_rank);
    lunar_host_set_rank(g_rank, g_size);
    /* the debugger: lunar.breakpoint stops, and an error opens a post-mortem,
     * on the --repl-rank rank only; without --repl-rank a single-rank run
     * stops at breakpoints (no post-mortem) and a multi-rank run never does */
    long repl_rank = o.repl_rank ? strtol(o.repl_rank, NULL, 10) : -1;
    if (o.repl_rank)
        lunar_debug_configure(repl_rank == g_rank, repl_rank == g_rank);
    else
        lunar_debug_configure(g_size == 1, 0);
    if (o.repl_rank && repl_rank >= g_size && g_rank == 0)
        fprintf(stderr, "lunar: warning: --repl-rank %ld, but the job has %d rank%s: no rank will "
                        "open the REPL\n", repl_rank, g_size, g_size == 1 ? "" : "s");
    install_signal_handlers();

    char root[PATH_MAX];
    if (find_root(root, sizeof root) != 0 && g_rank == 0)
        fprintf(stderr, "lunar: warning: cannot find lua/lunar next to the executable; "
                        "set LUNAR_HOME to the repository root\n");

    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%scannot create the Lua state (out of memory)\n", g_prefix);
        die(1);
    }
    g_L = L;
    lua_pushcfunction(L, open_state);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    lua_pushlightuserdata(L, &o);
    lua_pushstring(L, root);
    int status = lunar_docall(L, 4, 0);

    const char *gc_env = getenv("LUNAR_GC_STEP_MB");
    long gc_mb = gc_env && *gc_env ? strtol(gc_env, NULL, 10) : 64;
    if (gc_mb > 0) lunar_alloc_set_pressure_hook(gc_pressure, L, (size_t)gc_mb << 20);

    if (o.interactive) lunar_repl_capture_locals(L);  /* the REPL sees the script's locals */
    if (status == LUA_OK && o.command) {
        static const char cli[] = "return require('lunar.cli').main({...})";
        status = run_chunk(L, luaL_loadbuffer(L, cli, strlen(cli), "=(lunar config)"), &o);
    }
    for (int i = 0; status == LUA_OK && i < o.n_chunks; i++)
        status = run_chunk(L, luaL_loadbuffer(L, o.chunks[i], strlen(o.chunks[i]), "=(command line)"), &o);
    if (status == LUA_OK && o.script) {
        int ls = luaL_loadfile(L, strcmp(o.script, "-") == 0 ? NULL : o.script);
        status = run_chunk(L, ls, &o);
    }
    if (status != LUA_OK) {
        lunar_report(L);
        /* with -i on one rank, the REPL opens on the failed state for inspection */
        if (!(o.interactive && g_size == 1)) die(1);
    }
    if (o.interactive || (!o.script && o.n_chunks == 0 && !o.command)) {
        char banner[128];
        snprintf(banner, sizeof banner, "lunar %s (%s), Ctrl-D to exit", LUNAR_VERSION, LUA_RELEASE);
        lunar_repl(L, isatty(0) && !o.script && o.n_chunks == 0 ? banner : NULL);
    }
    lunar_alloc_set_pressure_hook(NULL, NULL, 0);
    g_L = NULL;
    lua_close(L);
    free_options(&o);
    fflush(stdout);
    lunar_comm_finalize();
    return status == LUA_OK ? 0 : 1;
}
