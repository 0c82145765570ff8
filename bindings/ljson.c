/*
 * bindings/ljson.c: JSON as `lunar.json` (also require('lunar.json')), on
 * cJSON (libcjson, the library core/io/safetensors.c reads headers with).
 * Pure conversion between Lua values and cJSON trees; the one JSON library
 * of Lunar (metrics lines, checkpoint index.json, benchmark output).
 *
 *   lunar.json.encode(value) -> string   compact JSON text (no spaces)
 *   lunar.json.decode(text)  -> value
 *   lunar.json.null          the value of JSON null (a light userdata, NULL)
 *
 * encode, Lua -> JSON:
 *   nil and lunar.json.null -> null; booleans -> true / false.
 *   strings -> strings: cJSON escapes '"', '\' and bytes below 0x20; other
 *     bytes (UTF-8 included) are copied as they are, unchecked. A string that
 *     holds a NUL byte is an error (cJSON strings end at NUL).
 *   integers -> their decimal digits, exactly ("9007199254740993").
 *   floats -> the shortest of "%.15g", "%.16g", "%.17g" that strtod reads back
 *     to the same double, with ".0" appended when that text has neither '.'
 *     nor an exponent ("2.0", "-0.0", "0.1", "0.30000000000000004",
 *     "1e+300"): every float decodes to the same float. NaN and +-infinity
 *     are errors (JSON has no such numbers).
 *     Numbers are cJSON raw items holding this text: cJSON 1.7.15's own
 *     printer takes its "%1.15g" text whenever that reads back within
 *     DBL_EPSILON (relative) of the value, so 0.1 + 0.2 prints "0.3" and 2^53
 *     "9.00719925474099e+15" (checked with libcjson 1.7.15), and a cJSON
 *     number is a double (2^53 + 1 has none).
 *   tables (raw contents; metatables are ignored) -> an array when the keys
 *     are exactly 1..n (n >= 1); else an object whose keys must all be
 *     strings without NUL, written in byte order (strcmp), so equal tables
 *     give equal text (diffable files). The empty table is {} (an object, as
 *     lua-cjson wrote it). Any other key is an error naming it ("key 1 (a
 *     number)": a table with holes, {1, nil, 3}, is not an array).
 *   functions, threads and full userdata are errors.
 *   Tables nested deeper than 1000 levels (CJSON_NESTING_LIMIT, the limit of
 *   cJSON's parser; a table that contains itself hits it) are an error.
 *   Errors name the place in the value: "lunar.json.encode: $.config.LR: NaN
 *   is not a JSON number ...", where $ is the value, .k a field and [i] the
 *   i-th array element (1-based, as in Lua).
 *
 * decode, JSON -> Lua (cJSON parses; \uXXXX escapes, surrogate pairs
 * included, become UTF-8):
 *   objects -> tables (a repeated key: the last one wins); arrays ->
 *   sequences 1..n; null -> lunar.json.null (so arrays keep their length);
 *   true / false -> booleans; strings -> strings.
 *   numbers: without a fraction or an exponent and within int64 -> an
 *   integer; any other -> a float (strtod, correctly rounded). So everything
 *   encode writes reads back equal and of the same math.type ("2" -> 2,
 *   "2.0" -> 2.0, "9007199254740993" -> 2^53 + 1). Number literals are read
 *   from the text (a cJSON tree keeps only doubles) and checked against
 *   JSON's grammar (cJSON alone accepts "01" and "1."); a number beyond the
 *   range of a double is an error; cJSON reads at most 63 characters of a
 *   number, so a longer literal is invalid JSON here.
 *   Errors say where: "lunar.json.decode: invalid JSON at line 2, column 7
 *   (byte 19) near 'tru}'"; also for text after the value, nesting deeper
 *   than 1000 levels, \u0000 (cJSON strings end at NUL), a control byte
 *   unescaped in a string, and an empty text.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "lunar_bindings.h"

#define BOX_MT "lunar.json.box"
#define MAX_DEPTH CJSON_NESTING_LIMIT

/* What a conversion holds outside Lua's heap, freed by __gc when an error
 * unwinds the conversion, or at its end. */
typedef struct {
    cJSON *tree;
    char *text;
} box;

static int box_free(lua_State *L) {
    box *b = luaL_checkudata(L, 1, BOX_MT);
    cJSON_Delete(b->tree);
    b->tree = NULL;
    cJSON_free(b->text);
    b->text = NULL;
    return 0;
}

static box *new_box(lua_State *L) {
    box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->tree = NULL;
    b->text = NULL;
    luaL_setmetatable(L, BOX_MT);
    return b;
}

/* ------------------------------------------------------------------------ */
/* encode */

/* The place of a value within the encoded one: a field (key) or an array
 * element (index), below `up`. */
typedef struct where {
    const struct where *up;
    const char *key;
    size_t klen;
    lua_Integer index;
} where;

/* "$" and the components of w; of a long path (a table that contains
 * itself), the first and the last 4. */
static void add_path(luaL_Buffer *b, const where *w) {
    const where *chain[MAX_DEPTH + 2];
    int n = 0;
    for (; w && n < MAX_DEPTH + 2; w = w->up) chain[n++] = w;
    luaL_addchar(b, '$');
    for (int i = n - 1; i >= 0; i--) {
        if (n > 8 && i == n - 5) {
            char skip[48];
            snprintf(skip, sizeof skip, "...(%d more)...", n - 8);
            luaL_addstring(b, skip);
            i = 3;
        }
        if (chain[i]->key) {
            luaL_addchar(b, '.');
            luaL_addlstring(b, chain[i]->key, chain[i]->klen);
        } else {
            char idx[32];
            snprintf(idx, sizeof idx, "[%lld]", (long long)chain[i]->index);
            luaL_addstring(b, idx);
        }
    }
}

/* Raises "lunar.json.encode: <path>: <message>". */
static int enc_error(lua_State *L, const where *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    const char *msg = lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "lunar.json.encode: ");
    add_path(&b, w);
    luaL_addstring(&b, ": ");
    luaL_addstring(&b, msg);
    luaL_pushresult(&b);
    return lua_error(L);
}

/* Attaches item to parent (an array when key is NULL, else an object), or
 * makes it the box's tree when parent is NULL; raises on a failed allocation. */
static cJSON *attach(lua_State *L, box *bx, cJSON *parent, const char *key, cJSON *item, const where *w) {
    if (!item) enc_error(L, w, "out of memory");
    if (!parent) {
        bx->tree = item;
    } else if (!(key ? cJSON_AddItemToObject(parent, key, item) : cJSON_AddItemToArray(parent, item))) {
        cJSON_Delete(item);
        enc_error(L, w, "out of memory");
    }
    return item;
}

/* The JSON text of a finite double that strtod reads back to the same
 * double, marked as a float (a '.' or an exponent). */
static void format_float(char *buf, size_t n, double d) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
    }
    if (!strpbrk(buf, ".eE")) strcat(buf, ".0");
}

/* Keys 1..n exactly: n; else (the empty table too) 0. */
static lua_Integer array_length(lua_State *L, int idx) {
    lua_Integer count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k > max) max = k;
        count++;
    }
    return max == count ? count : 0;
}

typedef struct {
    const char *s;
    size_t len;
} skey;

static int cmp_keys(const void *pa, const void *pb) {
    const skey *a = pa, *b = pb;
    int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
    if (c) return c;
    return (a->len > b->len) - (a->len < b->len);
}

static void encode_into(lua_State *L, box *bx, int idx, cJSON *parent, const char *key, const where *w, int depth);

static void encode_table(lua_State *L, box *bx, int idx, cJSON *parent, const char *key, const where *w, int depth) {
    if (depth >= MAX_DEPTH)
        enc_error(L, w, "tables nested deeper than %d levels (a table that contains itself?)", MAX_DEPTH);
    lua_Integer n = array_length(L, idx);
    if (n > 0) {
        cJSON *arr = attach(L, bx, parent, key, cJSON_CreateArray(), w);
        for (lua_Integer i = 1; i <= n; i++) {
            where sub = {w, NULL, 0, i};
            lua_rawgeti(L, idx, i);
            encode_into(L, bx, lua_gettop(L), arr, NULL, &sub, depth + 1);
            lua_pop(L, 1);
        }
        return;
    }
    cJSON *obj = attach(L, bx, parent, key, cJSON_CreateObject(), w);
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
    }
    if (count == 0) return;
    skey *keys = lua_newuserdatauv(L, count * sizeof *keys, 0);   /* freed by the GC */
    size_t k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            const char *tn = luaL_typename(L, -1);
            const char *s = luaL_tolstring(L, -1, NULL);
            enc_error(L, w, "key %s (a %s) is not a string: a table is a JSON array only when its keys are "
                      "exactly 1..n, else an object, whose keys are strings", s, tn);
        }
        keys[k].s = lua_tolstring(L, -1, &keys[k].len);
        if (memchr(keys[k].s, '\0', keys[k].len))
            enc_error(L, w, "key '%s' holds a NUL byte (cJSON strings end at NUL)", keys[k].s);
        k++;
    }
    qsort(keys, count, sizeof *keys, cmp_keys);
    for (k = 0; k < count; k++) {
        where sub = {w, keys[k].s, keys[k].len, 0};
        lua_pushlstring(L, keys[k].s, keys[k].len);
        lua_rawget(L, idx);
        encode_into(L, bx, lua_gettop(L), obj, keys[k].s, &sub, depth + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);   /* keys */
}

/* Converts the value at idx and attaches it to parent (see attach). depth:
 * the number of tables around it. */
static void encode_into(lua_State *L, box *bx, int idx, cJSON *parent, const char *key, const where *w, int depth) {
    luaL_checkstack(L, 6, "lunar.json.encode: nesting too deep");
    char num[48];
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        attach(L, bx, parent, key, cJSON_CreateNull(), w);
        return;
    case LUA_TBOOLEAN:
        attach(L, bx, parent, key, cJSON_CreateBool(lua_toboolean(L, idx)), w);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) {   /* lunar.json.null */
            attach(L, bx, parent, key, cJSON_CreateNull(), w);
            return;
        }
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, idx));
        } else {
            double d = (double)lua_tonumber(L, idx);
            if (isnan(d)) enc_error(L, w, "NaN is not a JSON number (JSON has no NaN or infinity)");
            if (isinf(d)) enc_error(L, w, "%s is not a JSON number (JSON has no NaN or infinity)", d > 0 ? "inf" : "-inf");
            format_float(num, sizeof num, d);
        }
        attach(L, bx, parent, key, cJSON_CreateRaw(num), w);
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (memchr(s, '\0', len)) enc_error(L, w, "a string holding a NUL byte (cJSON strings end at NUL)");
        attach(L, bx, parent, key, cJSON_CreateString(s), w);
        return;
    }
    case LUA_TTABLE:
        encode_table(L, bx, idx, parent, key, w, depth);
        return;
    default:
        break;
    }
    enc_error(L, w, "a %s has no JSON form", luaL_typename(L, idx));
}

static int l_encode(lua_State *L) {
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    box *bx = new_box(L);
    encode_into(L, bx, 1, NULL, NULL, NULL, 0);
    bx->text = cJSON_PrintUnformatted(bx->tree);
    if (!bx->text) return luaL_error(L, "lunar.json.encode: out of memory");
    lua_pushstring(L, bx->text);
    lua_pushcfunction(L, box_free);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 0);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* decode */

/* The text, and how far the number literals in it have been read: cJSON's
 * tree holds numbers as doubles, so the literals are taken from the text in
 * order (a depth-first walk of the tree meets values in text order). */
typedef struct {
    lua_State *L;
    const char *s;
    size_t len, pos;
} scan;

/* Raises "lunar.json.decode: <message> at line L, column C (byte N) near '...'". */
static int dec_error(lua_State *L, const char *s, size_t len, size_t off, const char *msg) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off && i < len; i++) {
        if (s[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    size_t n = 0;
    while (off + n < len && n < 16 && s[off + n] != '\n' && s[off + n] != '\0') n++;
    return luaL_error(L, "lunar.json.decode: %s at line %I, column %I (byte %I) near '%s'", msg, (lua_Integer)line,
                      (lua_Integer)col, (lua_Integer)(off + 1), lua_pushlstring(L, s + off, n));
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Whether s[0..n) is a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(const char *s, size_t n) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i < n && s[i] == '0') {
        i++;
    } else {
        if (i >= n || !is_digit(s[i])) return 0;
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && s[i] == '.') {
        if (++i >= n || !is_digit(s[i])) return 0;
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit(s[i])) return 0;
        while (i < n && is_digit(s[i])) i++;
    }
    return i == n;
}

/* Moves past the next number literal outside strings (checking the strings
 * it passes) and sets *start, *n; returns 0 at the end of the text. */
static int next_number(scan *sc, size_t *start, size_t *n) {
    const char *s = sc->s;
    while (sc->pos < sc->len) {
        char c = s[sc->pos];
        if (c == '"') {
            for (sc->pos++; sc->pos < sc->len && s[sc->pos] != '"'; sc->pos++) {
                unsigned char b = (unsigned char)s[sc->pos];
                if (b < 0x20) dec_error(sc->L, s, sc->len, sc->pos, "a control byte unescaped in a string");
                if (b == '\\') {
                    if (sc->pos + 5 < sc->len && !memcmp(s + sc->pos + 1, "u0000", 5))
                        dec_error(sc->L, s, sc->len, sc->pos, "\\u0000 in a string (cJSON strings end at NUL)");
                    sc->pos++;
                }
            }
            sc->pos++;
        } else if (c == '-' || is_digit(c)) {
            *start = sc->pos;
            while (sc->pos < sc->len && s[sc->pos] && strchr("0123456789+-.eE", s[sc->pos])) sc->pos++;
            *n = sc->pos - *start;
            return 1;
        } else {
            sc->pos++;
        }
    }
    return 0;
}

static void push_number(scan *sc) {
    lua_State *L = sc->L;
    size_t start, n;
    if (!next_number(sc, &start, &n)) luaL_error(L, "lunar.json.decode: internal error: cJSON saw a number the text lacks");
    if (!json_number(sc->s + start, n)) dec_error(L, sc->s, sc->len, start, "invalid number");
    const char *lit = lua_pushlstring(L, sc->s + start, n);
    /* Lua's own reading: an integer when there is no '.' or exponent and it
     * fits lua_Integer, else a float (strtod) */
    if (lua_stringtonumber(L, lit) == 0) dec_error(L, sc->s, sc->len, start, "invalid number");
    if (!lua_isinteger(L, -1) && isinf(lua_tonumber(L, -1)))
        dec_error(L, sc->s, sc->len, start, "a number beyond the range of a double");
    lua_remove(L, -2);
}

static void push_value(scan *sc, const cJSON *item) {
    lua_State *L = sc->L;
    luaL_checkstack(L, 4, "lunar.json.decode: nesting too deep");
    if (cJSON_IsNull(item)) {
        lua_pushlightuserdata(L, NULL);
    } else if (cJSON_IsBool(item)) {
        lua_pushboolean(L, cJSON_IsTrue(item));
    } else if (cJSON_IsNumber(item)) {
        push_number(sc);
    } else if (cJSON_IsString(item)) {
        lua_pushstring(L, item->valuestring);
    } else if (cJSON_IsArray(item)) {
        lua_createtable(L, cJSON_GetArraySize(item), 0);
        lua_Integer i = 1;
        for (const cJSON *c = item->child; c; c = c->next) {
            push_value(sc, c);
            lua_rawseti(L, -2, i++);
        }
    } else if (cJSON_IsObject(item)) {
        lua_createtable(L, 0, cJSON_GetArraySize(item));
        for (const cJSON *c = item->child; c; c = c->next) {
            lua_pushstring(L, c->string);
            push_value(sc, c);
            lua_rawset(L, -3);
        }
    } else {
        luaL_error(L, "lunar.json.decode: internal error: a cJSON item of type %d", item->type);
    }
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The containers open at byte off (outside strings). */
static int depth_at(const char *s, size_t off) {
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < off; i++) {
        if (in_str) {
            if (s[i] == '\\') i++;
            else if (s[i] == '"') in_str = 0;
        } else if (s[i] == '"') {
            in_str = 1;
        } else if (s[i] == '[' || s[i] == '{') {
            depth++;
        } else if (s[i] == ']' || s[i] == '}') {
            depth--;
        }
    }
    return depth;
}

static int l_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_settop(L, 1);
    size_t i = 0;
    while (i < len && is_space(s[i])) i++;
    if (i == len) return luaL_error(L, "lunar.json.decode: no JSON value (the text is empty or blank)");
    box *bx = new_box(L);
    const char *end = NULL;
    bx->tree = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!bx->tree) {
        size_t off = end ? (size_t)(end - s) : 0;
        if (depth_at(s, off) >= MAX_DEPTH) {
            char msg[64];
            snprintf(msg, sizeof msg, "arrays and objects nested deeper than %d levels", MAX_DEPTH);
            return dec_error(L, s, len, off, msg);
        }
        return dec_error(L, s, len, off, "invalid JSON");
    }
    size_t off = (size_t)(end - s);
    while (off < len && is_space(s[off])) off++;
    if (off < len) return dec_error(L, s, len, off, "text after the JSON value");
    scan sc = {L, s, len, 0};
    push_value(&sc, bx->tree);
    size_t start, n;
    if (next_number(&sc, &start, &n))   /* checks the strings after the last number */
        return luaL_error(L, "lunar.json.decode: internal error: a number cJSON did not see at byte %I",
                          (lua_Integer)start + 1);
    lua_pushcfunction(L, box_free);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 0);
    return 1;
}

static const luaL_Reg fns[] = {{"encode", l_encode}, {"decode", l_decode}, {NULL, NULL}};
static const luaL_Reg box_meta[] = {{"__gc", box_free}, {NULL, NULL}};

/* Adds lunar.json to the table on the top of the stack, and makes it
 * package.loaded['lunar.json'] (require('lunar.json')). */
void lunar_open_json(lua_State *L) {
    luaL_newmetatable(L, BOX_MT);
    luaL_setfuncs(L, box_meta, 0);
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "lunar.json");
    lua_pop(L, 1);
    lua_setfield(L, -2, "json");
}
