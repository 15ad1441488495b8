/* Jinja: rendering an AST with Python's semantics where chat templates rely on
 * them (truthiness, `in`, slicing, str methods, dict order, int/float
 * arithmetic, repr when a list or dict is printed) and jinja2's default
 * Undefined (prints as "", is falsy and empty; any attribute of it, any call or
 * arithmetic with it is an error). The sandbox of transformers' environment is
 * kept: methods that would modify a list or dict (append, pop, update ...)
 * fail as they do there. Every render has a step, output and memory budget so
 * a template that loops or grows without end stops with an error. */
#define _GNU_SOURCE /* memmem */
#include "template/jinja.h"

#include "core/util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct obuf {
    char *p;
    size_t n, cap;
} obuf;

struct jscope {
    jscope *parent;
    jv *vars; /* a D_DICT */
};

typedef struct interp {
    arena ar;
    jmp_buf jb;
    char *errmsg;
    jscope *globals;
    obuf *out;
    uint64_t steps, max_steps;
    size_t max_out;
    int line, depth;
    time_t now;
    bool now_utc;
    int loopctl; /* 1: break, 2: continue pending */
} interp;

#define FAIL(I, ...) jfail(&(I)->jb, (I)->errmsg, (I)->line, __VA_ARGS__)

static void step(interp *I) {
    if (++I->steps > I->max_steps)
        FAIL(I, "the template ran more than %llu steps (an endless loop?)", (unsigned long long)I->max_steps);
}

/* Work proportional to a length (bytes copied or scanned) counts as steps
 * too, one per 64 bytes: a template cannot spin on big strings unbudgeted. */
static void work(interp *I, size_t bytes) {
    I->steps += bytes / 64;
    step(I);
}

/* ----------------------------------------------------------------- output */

/* ob_put(I, b, "", 0) gives an empty buffer its (NUL-terminated) storage. */
static void ob_put(interp *I, obuf *b, const char *s, size_t n) {
    if (!n && b->p) return;
    if (n >= 64) work(I, n);
    if (b->n + n > I->max_out) FAIL(I, "the output grew beyond %zu bytes", I->max_out);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = ar_alloc(&I->ar, cap);
        if (b->n) memcpy(np, b->p, b->n);
        b->p = np;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void ob_puts(interp *I, obuf *b, const char *s) { ob_put(I, b, s, strlen(s)); }

/* ----------------------------------------------------------------- values */

static jv *mk(interp *I, vkind k) {
    jv *v = ar_alloc(&I->ar, sizeof *v);
    v->k = k;
    return v;
}
static jv *mkstr(interp *I, const char *p, size_t n) {
    if (n >= 64) work(I, n);
    jv *v = mk(I, V_STR);
    v->s.p = ar_strndup(&I->ar, p, n);
    v->s.n = n;
    return v;
}
static jv *mkcstr(interp *I, const char *s) { return mkstr(I, s, strlen(s)); }
static jv *ob_str(interp *I, obuf *b) {
    jv *v = mk(I, V_STR);
    v->s.p = b->p ? b->p : "";
    v->s.n = b->n;
    return v;
}
static jv *mkint(interp *I, int64_t i) {
    jv *v = mk(I, V_INT);
    v->i = i;
    return v;
}
static jv *mkfloat(interp *I, double f) {
    jv *v = mk(I, V_FLOAT);
    v->f = f;
    return v;
}
static jv *mkbool(interp *I, bool b) {
    jv *v = mk(I, V_BOOL);
    v->b = b;
    return v;
}
static jv *mkundef(interp *I, const char *what) {
    jv *v = mk(I, V_UNDEF);
    v->uname = what;
    return v;
}
static jv *mklist(interp *I) { return mk(I, V_LIST); }
static void lpush(interp *I, jv *l, jv *x) {
    if (l->l.n == l->l.cap) {
        size_t cap = l->l.cap ? l->l.cap * 2 : 4;
        jv **na = ar_alloc(&I->ar, cap * sizeof *na);
        if (l->l.n) memcpy(na, l->l.a, l->l.n * sizeof *na);
        l->l.a = na;
        l->l.cap = cap;
    }
    l->l.a[l->l.n++] = x;
}
static jv *mkdict(interp *I, dkind kind) {
    jv *v = mk(I, V_DICT);
    v->d.kind = kind;
    return v;
}

static bool equals(const jv *a, const jv *b);

static jv **dslot(const jv *d, const jv *key) {
    for (size_t i = 0; i < d->d.n; i++)
        if (equals(d->d.keys[i], key)) return &d->d.vals[i];
    return NULL;
}
static jv *dget(const jv *d, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < d->d.n; i++) {
        const jv *k = d->d.keys[i];
        if (k->k == V_STR && k->s.n == n && !memcmp(k->s.p, key, n)) return d->d.vals[i];
    }
    return NULL;
}
static void dsetv(interp *I, jv *d, jv *key, jv *val) {
    jv **s = dslot(d, key);
    if (s) {
        *s = val;
        return;
    }
    if (d->d.n == d->d.cap) {
        size_t cap = d->d.cap ? d->d.cap * 2 : 4;
        jv **nk = ar_alloc(&I->ar, cap * sizeof *nk), **nv = ar_alloc(&I->ar, cap * sizeof *nv);
        if (d->d.n) {
            memcpy(nk, d->d.keys, d->d.n * sizeof *nk);
            memcpy(nv, d->d.vals, d->d.n * sizeof *nv);
        }
        d->d.keys = nk;
        d->d.vals = nv;
        d->d.cap = cap;
    }
    d->d.keys[d->d.n] = key;
    d->d.vals[d->d.n] = val;
    d->d.n++;
}
/* key: a string that outlives the render (a literal, a name in the AST). */
static void dset(interp *I, jv *d, const char *key, jv *val) {
    jv k = {.k = V_STR, .s = {key, strlen(key)}};
    jv **s = dslot(d, &k);
    if (s) {
        *s = val;
        return;
    }
    jv *kv = mk(I, V_STR);
    kv->s = k.s;
    dsetv(I, d, kv, val);
}

static const char *type_name(const jv *v) {
    switch (v->k) {
    case V_UNDEF: return "Undefined";
    case V_NONE: return "NoneType";
    case V_BOOL: return "bool";
    case V_INT: return "int";
    case V_FLOAT: return "float";
    case V_STR: return "str";
    case V_LIST: {
        static const char *const lazy_names[] = {"list", "generator", "list_reverseiterator", "dict_items",
                                                 "dict_keys", "dict_values"};
        return v->l.lazy ? lazy_names[v->l.lazy] : v->l.tuple ? "tuple" : "list";
    }
    case V_DICT: return v->d.kind == D_NAMESPACE ? "Namespace" : v->d.kind == D_LOOP ? "LoopContext" : "dict";
    case V_FUNC: return "function";
    }
    return "?";
}

/* jinja2's UndefinedError: using an undefined value beyond printing/testing it. */
_Noreturn static void undef_fail(interp *I, const jv *v) {
    if (v->uname) FAIL(I, "%s is undefined", v->uname);
    FAIL(I, "a value is undefined");
}

static bool truthy(const jv *v) {
    switch (v->k) {
    case V_UNDEF:
    case V_NONE: return false;
    case V_BOOL: return v->b;
    case V_INT: return v->i != 0;
    case V_FLOAT: return v->f != 0;
    case V_STR: return v->s.n > 0;
    case V_LIST: return v->l.lazy == L_GEN || v->l.lazy == L_REVITER || v->l.n > 0;
    case V_DICT: return v->d.kind != D_DICT || v->d.n > 0;
    case V_FUNC: return true;
    }
    return false;
}

static bool is_num(const jv *v) { return v->k == V_INT || v->k == V_FLOAT || v->k == V_BOOL; }
static double num_f(const jv *v) { return v->k == V_FLOAT ? v->f : v->k == V_INT ? (double)v->i : v->b; }
static int64_t num_i(const jv *v) { return v->k == V_INT ? v->i : v->k == V_BOOL ? v->b : 0; }

static bool equals(const jv *a, const jv *b) {
    if (is_num(a) && is_num(b)) {
        if (a->k == V_FLOAT || b->k == V_FLOAT) return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a->k != b->k) return false;
    switch (a->k) {
    case V_UNDEF:
    case V_NONE: return true;
    case V_STR: return a->s.n == b->s.n && !memcmp(a->s.p, b->s.p, a->s.n);
    case V_LIST:
        if (a->l.lazy || b->l.lazy) return a == b;
        if (a->l.n != b->l.n || a->l.tuple != b->l.tuple) return false;
        for (size_t i = 0; i < a->l.n; i++)
            if (!equals(a->l.a[i], b->l.a[i])) return false;
        return true;
    case V_DICT:
        if (a->d.kind != D_DICT || b->d.kind != D_DICT) return a == b;
        if (a->d.n != b->d.n) return false;
        for (size_t i = 0; i < a->d.n; i++) {
            jv **s = dslot(b, a->d.keys[i]);
            if (!s || !equals(a->d.vals[i], *s)) return false;
        }
        return true;
    default: return a == b;
    }
}

/* ------------------------------------------------------------------ UTF-8 */

static size_t u8len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Code point at s[*i] (advancing *i); malformed bytes decode as themselves. */
static uint32_t u8next(const char *s, size_t n, size_t *i) {
    unsigned char c = (unsigned char)s[*i];
    size_t k = u8len(c);
    if (c < 0x80 || c < 0xC0 || *i + k > n) {
        (*i)++;
        return c;
    }
    uint32_t cp = c & (k == 2 ? 0x1F : k == 3 ? 0x0F : 0x07);
    for (size_t j = 1; j < k; j++) cp = (cp << 6) | ((unsigned char)s[*i + j] & 0x3F);
    *i += k;
    return cp;
}

static size_t u8count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n;) {
        u8next(s, n, &i);
        c++;
    }
    return c;
}

/* Byte offsets of each code point (n+1 entries, the last is the length). */
static size_t *u8offsets(interp *I, const char *s, size_t n, size_t *count) {
    work(I, n);
    size_t c = u8count(s, n);
    size_t *o = ar_alloc(&I->ar, (c + 1) * sizeof *o);
    size_t i = 0, k = 0;
    while (i < n) {
        o[k++] = i;
        u8next(s, n, &i);
    }
    o[k] = n;
    *count = c;
    return o;
}

static bool is_space_cp(uint32_t c) {
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---------------------------------------------------------- str and repr */

static void put_float(interp *I, obuf *b, double f) {
    char buf[64];
    if (isnan(f)) {
        ob_puts(I, b, "nan");
        return;
    }
    if (isinf(f)) {
        ob_puts(I, b, f < 0 ? "-inf" : "inf");
        return;
    }
    /* Python's repr: the shortest digits that round-trip, fixed notation
     * for exponents -4..15, otherwise d.ddde+XX */
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    char digits[32];
    size_t nd = 0;
    const char *q = buf;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.') digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    char out[64];
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (exp >= -4 && exp < 16) {
        if (exp < 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int z = 0; z < -exp - 1; z++) out[o++] = '0';
            for (size_t i = 0; i < nd; i++) out[o++] = digits[i];
        } else {
            for (int i = 0; i <= exp; i++) out[o++] = (size_t)i < nd ? digits[i] : '0';
            out[o++] = '.';
            if ((size_t)exp + 1 < nd)
                for (size_t i = (size_t)exp + 1; i < nd; i++) out[o++] = digits[i];
            else
                out[o++] = '0';
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (size_t i = 1; i < nd; i++) out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    ob_puts(I, b, out);
}

static void put_repr(interp *I, obuf *b, const jv *v);

static void put_str(interp *I, obuf *b, const jv *v) {
    char buf[32];
    switch (v->k) {
    case V_UNDEF: break;
    case V_NONE: ob_puts(I, b, "None"); break;
    case V_BOOL: ob_puts(I, b, v->b ? "True" : "False"); break;
    case V_INT:
        snprintf(buf, sizeof buf, "%lld", (long long)v->i);
        ob_puts(I, b, buf);
        break;
    case V_FLOAT: put_float(I, b, v->f); break;
    case V_STR: ob_put(I, b, v->s.p, v->s.n); break;
    default: put_repr(I, b, v); break;
    }
}

static void put_str_repr(interp *I, obuf *b, const char *s, size_t n) {
    work(I, n);
    bool sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char quote = sq && !dq ? '"' : '\'';
    ob_put(I, b, &quote, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char e[8];
        if (c == (unsigned char)quote || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            ob_put(I, b, e, 2);
        } else if (c == '\n') {
            ob_puts(I, b, "\\n");
        } else if (c == '\r') {
            ob_puts(I, b, "\\r");
        } else if (c == '\t') {
            ob_puts(I, b, "\\t");
        } else if (c < 0x20 || c == 0x7F) {
            snprintf(e, sizeof e, "\\x%02x", c);
            ob_puts(I, b, e);
        } else {
            ob_put(I, b, (const char *)&s[i], 1);
        }
    }
    ob_put(I, b, &quote, 1);
}

static void put_repr(interp *I, obuf *b, const jv *v) {
    step(I);
    if (++I->depth > 500) FAIL(I, "a value nests too deeply to print");
    switch (v->k) {
    case V_UNDEF: ob_puts(I, b, "Undefined"); break;
    case V_STR: put_str_repr(I, b, v->s.p, v->s.n); break;
    case V_LIST:
        if (v->l.lazy == L_GEN || v->l.lazy == L_REVITER)
            FAIL(I, "printing a %s is not supported (jinja2 prints its memory address); add |list", type_name(v));
        if (v->l.lazy) {
            ob_puts(I, b, type_name(v));
            ob_puts(I, b, "(");
        }
        ob_puts(I, b, v->l.tuple ? "(" : "[");
        for (size_t i = 0; i < v->l.n; i++) {
            if (i) ob_puts(I, b, ", ");
            put_repr(I, b, v->l.a[i]);
        }
        if (v->l.tuple && v->l.n == 1) ob_puts(I, b, ",");
        ob_puts(I, b, v->l.tuple ? ")" : "]");
        if (v->l.lazy) ob_puts(I, b, ")");
        break;
    case V_DICT:
        if (v->d.kind == D_NAMESPACE) ob_puts(I, b, "<Namespace ");
        if (v->d.kind == D_LOOP) {
            ob_puts(I, b, "<LoopContext>");
            break;
        }
        ob_puts(I, b, "{");
        for (size_t i = 0; i < v->d.n; i++) {
            if (i) ob_puts(I, b, ", ");
            put_repr(I, b, v->d.keys[i]);
            ob_puts(I, b, ": ");
            put_repr(I, b, v->d.vals[i]);
        }
        ob_puts(I, b, "}");
        if (v->d.kind == D_NAMESPACE) ob_puts(I, b, ">");
        break;
    case V_FUNC:
        ob_puts(I, b, v->fn.macro ? "<Macro '" : "<built-in method '");
        ob_puts(I, b, v->fn.name);
        ob_puts(I, b, "'>");
        break;
    default: put_str(I, b, v); break;
    }
    I->depth--;
}

static jv *to_str(interp *I, const jv *v) {
    if (v->k == V_STR) return (jv *)v;
    obuf b = {0};
    put_str(I, &b, v);
    return ob_str(I, &b);
}

/* ------------------------------------------------------------------- JSON */

typedef struct json_opts {
    bool ensure_ascii, sort_keys;
    const char *indent; /* NULL: none */
    const char *item_sep, *key_sep;
} json_opts;

static void json_str(interp *I, obuf *b, const char *s, size_t n, bool ascii) {
    work(I, n);
    ob_puts(I, b, "\"");
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        char e[16];
        if (c == '"' || c == '\\') {
            e[0] = '\\';
            e[1] = (char)c;
            ob_put(I, b, e, 2);
            i++;
        } else if (c < 0x20) {
            const char *m = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (m) {
                ob_puts(I, b, m);
            } else {
                snprintf(e, sizeof e, "\\u%04x", c);
                ob_puts(I, b, e);
            }
            i++;
        } else if (c >= 0x80 && ascii) {
            uint32_t cp = u8next(s, n, &i);
            if (cp >= 0x10000) {
                cp -= 0x10000;
                snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
            } else {
                snprintf(e, sizeof e, "\\u%04x", cp);
            }
            ob_puts(I, b, e);
        } else if (ascii && c == 0x7F) {
            ob_put(I, b, (const char *)&s[i], 1);
            i++;
        } else {
            ob_put(I, b, s + i, 1);
            i++;
        }
    }
    ob_puts(I, b, "\"");
}

static int cmp_values(interp *I, const jv *a, const jv *b, bool case_insensitive);

static void json_nl(interp *I, obuf *b, const json_opts *o, int level) {
    ob_puts(I, b, "\n");
    for (int i = 0; i < level; i++) ob_puts(I, b, o->indent);
}

static void json_dump(interp *I, obuf *b, const jv *v, const json_opts *o, int level) {
    step(I);
    if (level > 500) FAIL(I, "tojson: a value nests too deeply");
    switch (v->k) {
    case V_UNDEF: FAIL(I, "tojson: Object of type Undefined is not JSON serializable");
    case V_NONE: ob_puts(I, b, "null"); break;
    case V_BOOL: ob_puts(I, b, v->b ? "true" : "false"); break;
    case V_INT: put_str(I, b, v); break;
    case V_FLOAT:
        if (isnan(v->f))
            ob_puts(I, b, "NaN");
        else if (isinf(v->f))
            ob_puts(I, b, v->f < 0 ? "-Infinity" : "Infinity");
        else
            put_float(I, b, v->f);
        break;
    case V_STR: json_str(I, b, v->s.p, v->s.n, o->ensure_ascii); break;
    case V_LIST:
        if (v->l.lazy) FAIL(I, "tojson: Object of type %s is not JSON serializable", type_name(v));
        if (!v->l.n) {
            ob_puts(I, b, "[]");
            break;
        }
        ob_puts(I, b, "[");
        for (size_t i = 0; i < v->l.n; i++) {
            if (i) ob_puts(I, b, o->item_sep);
            if (o->indent) json_nl(I, b, o, level + 1);
            json_dump(I, b, v->l.a[i], o, level + 1);
        }
        if (o->indent) json_nl(I, b, o, level);
        ob_puts(I, b, "]");
        break;
    case V_DICT: {
        if (v->d.kind == D_LOOP) FAIL(I, "tojson: Object of type LoopContext is not JSON serializable");
        if (v->d.kind == D_NAMESPACE) FAIL(I, "tojson: Object of type Namespace is not JSON serializable");
        if (!v->d.n) {
            ob_puts(I, b, "{}");
            break;
        }
        size_t *ord = ar_alloc(&I->ar, v->d.n * sizeof *ord);
        for (size_t i = 0; i < v->d.n; i++) ord[i] = i;
        if (o->sort_keys) /* insertion sort: dicts are small */
            for (size_t i = 1; i < v->d.n; i++)
                for (size_t j = i; j > 0 && cmp_values(I, v->d.keys[ord[j - 1]], v->d.keys[ord[j]], false) > 0; j--) {
                    size_t t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                }
        ob_puts(I, b, "{");
        for (size_t k = 0; k < v->d.n; k++) {
            size_t i = ord[k];
            if (k) ob_puts(I, b, o->item_sep);
            if (o->indent) json_nl(I, b, o, level + 1);
            const jv *key = v->d.keys[i];
            if (key->k == V_STR) {
                json_str(I, b, key->s.p, key->s.n, o->ensure_ascii);
            } else if (key->k == V_NONE || key->k == V_BOOL || is_num(key)) {
                obuf kb = {0};
                json_dump(I, &kb, key, o, level + 1);
                ob_puts(I, b, "\"");
                ob_put(I, b, kb.p, kb.n);
                ob_puts(I, b, "\"");
            } else {
                FAIL(I, "tojson: keys must be str, int, float, bool or None, not %s", type_name(key));
            }
            ob_puts(I, b, o->key_sep);
            json_dump(I, b, v->d.vals[i], o, level + 1);
        }
        if (o->indent) json_nl(I, b, o, level);
        ob_puts(I, b, "}");
        break;
    }
    case V_FUNC: FAIL(I, "tojson: Object of type function is not JSON serializable");
    }
}

static jv *from_json(interp *I, json_t *j) {
    step(I);
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jv *d = mkdict(I, D_DICT);
        const char *k;
        json_t *x;
        json_object_foreach(j, k, x) dsetv(I, d, mkcstr(I, k), from_json(I, x));
        return d;
    }
    case JSON_ARRAY: {
        jv *l = mklist(I);
        size_t i;
        json_t *x;
        json_array_foreach(j, i, x) lpush(I, l, from_json(I, x));
        return l;
    }
    case JSON_STRING: return mkstr(I, json_string_value(j), json_string_length(j));
    case JSON_INTEGER: return mkint(I, json_integer_value(j));
    case JSON_REAL: return mkfloat(I, json_real_value(j));
    case JSON_TRUE: return mkbool(I, true);
    case JSON_FALSE: return mkbool(I, false);
    case JSON_NULL: return mk(I, V_NONE);
    }
    return mk(I, V_NONE);
}

/* ------------------------------------------------------------ comparison */

static int cmp_values(interp *I, const jv *a, const jv *b, bool ci) {
    if (is_num(a) && is_num(b)) {
        if (a->k == V_FLOAT || b->k == V_FLOAT) {
            double x = num_f(a), y = num_f(b);
            return x < y ? -1 : x > y;
        }
        int64_t x = num_i(a), y = num_i(b);
        return x < y ? -1 : x > y;
    }
    if (a->k == V_STR && b->k == V_STR) {
        size_t n = a->s.n < b->s.n ? a->s.n : b->s.n;
        int c = 0;
        if (ci) {
            for (size_t i = 0; i < n && !c; i++) {
                unsigned char x = (unsigned char)a->s.p[i], y = (unsigned char)b->s.p[i];
                if (x >= 'A' && x <= 'Z') x += 32;
                if (y >= 'A' && y <= 'Z') y += 32;
                c = (x > y) - (x < y);
            }
        } else {
            c = memcmp(a->s.p, b->s.p, n);
        }
        if (c) return c < 0 ? -1 : 1;
        return a->s.n < b->s.n ? -1 : a->s.n > b->s.n;
    }
    if (a->k == V_LIST && b->k == V_LIST) {
        for (size_t i = 0; i < a->l.n && i < b->l.n; i++) {
            int c = cmp_values(I, a->l.a[i], b->l.a[i], ci);
            if (c) return c;
        }
        return a->l.n < b->l.n ? -1 : a->l.n > b->l.n;
    }
    if (a->k == V_UNDEF) undef_fail(I, a);
    if (b->k == V_UNDEF) undef_fail(I, b);
    FAIL(I, "'<' not supported between instances of '%s' and '%s'", type_name(a), type_name(b));
}

/* ----------------------------------------------------------- containers */

/* Items of an iterable as a list: list itself, dict keys, string chars. */
/* Take up to `upto` more items of an iterator (generator, reverse iterator):
 * Python's iterators run once, so what is taken is gone for the next use. */
static jv *take_iter(interp *I, jv *v, size_t upto) {
    jv *l = mklist(I);
    while (v->l.used < v->l.n && l->l.n < upto) lpush(I, l, v->l.a[v->l.used++]);
    return l;
}

static bool is_iter(const jv *v) { return v->k == V_LIST && (v->l.lazy == L_GEN || v->l.lazy == L_REVITER); }

static jv *iter_list(interp *I, jv *v) {
    switch (v->k) {
    case V_UNDEF: return mklist(I);
    case V_LIST: return is_iter(v) ? take_iter(I, v, SIZE_MAX) : v;
    case V_DICT: {
        if (v->d.kind != D_DICT) FAIL(I, "'%s' object is not iterable", type_name(v));
        jv *l = mklist(I);
        for (size_t i = 0; i < v->d.n; i++) lpush(I, l, v->d.keys[i]);
        return l;
    }
    case V_STR: {
        work(I, v->s.n * 16); /* a list of one-character strings */
        jv *l = mklist(I);
        for (size_t i = 0; i < v->s.n;) {
            size_t j = i;
            u8next(v->s.p, v->s.n, &j);
            lpush(I, l, mkstr(I, v->s.p + i, j - i));
            i = j;
        }
        return l;
    }
    default: FAIL(I, "'%s' object is not iterable", type_name(v));
    }
}

static int64_t length_of(interp *I, const jv *v) {
    switch (v->k) {
    case V_UNDEF: return 0;
    case V_STR: work(I, v->s.n); return (int64_t)u8count(v->s.p, v->s.n);
    case V_LIST:
        if (v->l.lazy == L_GEN || v->l.lazy == L_REVITER) FAIL(I, "object of type '%s' has no len()", type_name(v));
        return (int64_t)v->l.n;
    case V_DICT: return (int64_t)v->d.n;
    default: FAIL(I, "object of type '%s' has no len()", type_name(v));
    }
}

static bool contains(interp *I, jv *hay, jv *needle) {
    switch (hay->k) {
    case V_UNDEF: return false;
    case V_STR:
        if (needle->k != V_STR) FAIL(I, "'in <string>' requires string as left operand, not %s", type_name(needle));
        if (!needle->s.n) return true;
        work(I, hay->s.n);
        return memmem(hay->s.p, hay->s.n, needle->s.p, needle->s.n) != NULL;
    case V_LIST:
        if (is_iter(hay)) { /* consumed up to the match */
            while (hay->l.used < hay->l.n) {
                step(I);
                if (equals(hay->l.a[hay->l.used++], needle)) return true;
            }
            return false;
        }
        for (size_t i = 0; i < hay->l.n; i++) {
            step(I);
            if (equals(hay->l.a[i], needle)) return true;
        }
        return false;
    case V_DICT:
        if (hay->d.kind == D_DICT) return dslot(hay, needle) != NULL;
        /* fall through */
    default: FAIL(I, "argument of type '%s' is not iterable", type_name(hay));
    }
}

static const char *const str_methods[] = {"split", "rsplit", "strip", "lstrip", "rstrip", "startswith", "endswith",
                                          "upper", "lower", "title", "capitalize", "replace", "find", "rfind",
                                          "count", "join", "format", "isdigit", "isalpha", "isalnum", "isspace",
                                          "islower", "isupper", "splitlines", "removeprefix", "removesuffix",
                                          "index", "partition", "rpartition", "zfill", "swapcase", "casefold",
                                          "isnumeric", "isdecimal", "istitle", "ljust", "rjust", "center",
                                          "expandtabs", NULL};
static const char *const dict_methods[] = {"get", "items", "keys", "values", "copy", NULL};
static const char *const dict_unsafe[] = {"pop", "popitem", "update", "setdefault", "clear", NULL};
static const char *const list_methods[] = {"index", "count", "copy", NULL};
static const char *const list_unsafe[] = {"append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear",
                                          NULL};

static bool in_names(const char *const *names, const char *s) {
    for (size_t i = 0; names[i]; i++)
        if (!strcmp(names[i], s)) return true;
    return false;
}

static jv *bound(interp *I, jv *self, const char *name, bool unsafe) {
    jv *f = mk(I, V_FUNC);
    f->fn.name = name;
    f->fn.self = self;
    f->fn.unsafe = unsafe;
    return f;
}

static const char *undef_name(interp *I, const jv *obj, const char *attr) {
    obuf b = {0};
    ob_puts(I, &b, "'");
    ob_puts(I, &b, obj->k == V_DICT && obj->d.kind == D_DICT ? "dict object" : type_name(obj));
    ob_puts(I, &b, obj->k == V_DICT && obj->d.kind == D_DICT ? "' has no attribute '" : " object' has no attribute '");
    ob_puts(I, &b, attr);
    ob_puts(I, &b, "'");
    return b.p;
}

static jv *loop_attr(interp *I, jv *loop, const char *attr) {
    int64_t i = (int64_t)loop->d.loop_i, n = (int64_t)loop->d.loop_items->l.n;
    jv **items = loop->d.loop_items->l.a;
    if (!strcmp(attr, "index")) return mkint(I, i + 1);
    if (!strcmp(attr, "index0")) return mkint(I, i);
    if (!strcmp(attr, "revindex")) return mkint(I, n - i);
    if (!strcmp(attr, "revindex0")) return mkint(I, n - i - 1);
    if (!strcmp(attr, "first")) return mkbool(I, i == 0);
    if (!strcmp(attr, "last")) return mkbool(I, i == n - 1);
    if (!strcmp(attr, "length")) return mkint(I, n);
    if (!strcmp(attr, "depth")) return mkint(I, 1);
    if (!strcmp(attr, "depth0")) return mkint(I, 0);
    if (!strcmp(attr, "previtem")) return i > 0 ? items[i - 1] : mkundef(I, "'there is no previous item'");
    if (!strcmp(attr, "nextitem")) return i + 1 < n ? items[i + 1] : mkundef(I, "'there is no next item'");
    if (!strcmp(attr, "cycle")) return bound(I, loop, attr, false);
    if (!strcmp(attr, "changed")) FAIL(I, "loop.changed() is not supported");
    return mkundef(I, undef_name(I, loop, attr));
}

/* obj.attr: Python attribute first (methods), then obj[attr] (jinja2's getattr). */
static jv *get_attr(interp *I, jv *obj, const char *attr) {
    if (obj->k == V_UNDEF) undef_fail(I, obj);
    if (attr[0] == '_') return mkundef(I, undef_name(I, obj, attr));
    switch (obj->k) {
    case V_STR:
        if (in_names(str_methods, attr)) return bound(I, obj, attr, false);
        break;
    case V_DICT:
        if (obj->d.kind == D_DICT) {
            if (in_names(dict_methods, attr)) return bound(I, obj, attr, false);
            if (in_names(dict_unsafe, attr)) return bound(I, obj, attr, true);
        } else if (obj->d.kind == D_LOOP) {
            return loop_attr(I, obj, attr);
        }
        {
            jv *v = dget(obj, attr);
            if (v) return v;
        }
        break;
    case V_LIST:
        if (in_names(list_methods, attr)) return bound(I, obj, attr, false);
        if (in_names(list_unsafe, attr)) return bound(I, obj, attr, true);
        break;
    default: break;
    }
    return mkundef(I, undef_name(I, obj, attr));
}

static jv *get_item(interp *I, jv *obj, jv *key) {
    if (obj->k == V_UNDEF) undef_fail(I, obj);
    if (obj->k == V_LIST && obj->l.lazy && (key->k == V_INT || key->k == V_BOOL))
        FAIL(I, "'%s' object is not subscriptable", type_name(obj));
    if (obj->k == V_DICT) {
        jv **s = dslot(obj, key);
        if (s) return *s;
    } else if ((obj->k == V_LIST || obj->k == V_STR) && (key->k == V_INT || key->k == V_BOOL)) {
        int64_t i = num_i(key);
        if (obj->k == V_LIST) {
            if (i < 0) i += (int64_t)obj->l.n;
            if (i >= 0 && i < (int64_t)obj->l.n) return obj->l.a[i];
        } else {
            size_t n;
            size_t *off = u8offsets(I, obj->s.p, obj->s.n, &n);
            if (i < 0) i += (int64_t)n;
            if (i >= 0 && i < (int64_t)n) {
                jv *c = mkstr(I, obj->s.p + off[i], off[i + 1] - off[i]);
                c->markup = obj->markup;
                return c;
            }
        }
    }
    if (key->k == V_STR) return get_attr(I, obj, key->s.p);
    return mkundef(I, "an item");
}

/* Python slice indices for length n. */
static void slice_idx(int64_t n, const jv *a, const jv *b, int64_t st, int64_t *start, int64_t *stop) {
    int64_t lo = st < 0 ? -1 : 0, hi = st < 0 ? n - 1 : n;
    if (a && a->k != V_NONE) {
        int64_t x = num_i(a);
        if (x < 0) x += n;
        *start = x < lo ? lo : x > hi ? hi : x;
    } else {
        *start = st < 0 ? hi : lo;
    }
    if (b && b->k != V_NONE) {
        int64_t x = num_i(b);
        if (x < 0) x += n;
        *stop = x < lo ? lo : x > hi ? hi : x;
    } else {
        *stop = st < 0 ? lo : hi;
    }
}

static jv *do_slice(interp *I, jv *obj, jv *a, jv *b, jv *c) {
    if (obj->k == V_UNDEF) undef_fail(I, obj);
    jv *parts[3] = {a, b, c};
    for (int k = 0; k < 3; k++)
        if (parts[k] && parts[k]->k != V_NONE && parts[k]->k != V_INT && parts[k]->k != V_BOOL)
            FAIL(I, "slice indices must be integers or None, not %s", type_name(parts[k]));
    if (obj->k == V_LIST && obj->l.lazy) FAIL(I, "'%s' object is not subscriptable", type_name(obj));
    int64_t st = c && c->k != V_NONE ? num_i(c) : 1;
    if (st == 0) FAIL(I, "slice step cannot be zero");
    if (obj->k == V_LIST) {
        int64_t start, stop;
        slice_idx((int64_t)obj->l.n, a, b, st, &start, &stop);
        jv *l = mklist(I);
        l->l.tuple = obj->l.tuple;
        for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) lpush(I, l, obj->l.a[i]);
        return l;
    }
    if (obj->k == V_STR) {
        size_t n;
        size_t *off = u8offsets(I, obj->s.p, obj->s.n, &n);
        int64_t start, stop;
        slice_idx((int64_t)n, a, b, st, &start, &stop);
        obuf o = {0};
        ob_put(I, &o, "", 0);
        for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) ob_put(I, &o, obj->s.p + off[i], off[i + 1] - off[i]);
        jv *r = ob_str(I, &o);
        r->markup = obj->markup;
        return r;
    }
    FAIL(I, "'%s' object is not subscriptable", type_name(obj));
}

/* ------------------------------------------------------------- arithmetic */

static jv *html_escape(interp *I, jv *s) {
    if (s->markup) return s;
    work(I, s->s.n);
    obuf o = {0};
    ob_put(I, &o, "", 0);
    for (size_t i = 0; i < s->s.n; i++) {
        char c = s->s.p[i];
        const char *r = c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;" : c == '\'' ? "&#39;" : NULL;
        if (r)
            ob_puts(I, &o, r);
        else
            ob_put(I, &o, &c, 1);
    }
    jv *r = ob_str(I, &o);
    r->markup = true;
    return r;
}

/* Markup's operations escape their str arguments (a value or a tuple of them). */
static jv *escape_args(interp *I, jv *v) {
    if (v->k == V_STR) return html_escape(I, v);
    if (v->k != V_LIST || !v->l.tuple) return v;
    jv *t = mklist(I);
    t->l.tuple = true;
    for (size_t i = 0; i < v->l.n; i++) lpush(I, t, v->l.a[i]->k == V_STR ? html_escape(I, v->l.a[i]) : v->l.a[i]);
    return t;
}

static void percent_format(interp *I, obuf *o, const jv *fmt, jv *args);

static jv *binop(interp *I, int op, jv *a, jv *b) {
    if (a->k == V_UNDEF) undef_fail(I, a);
    if (b->k == V_UNDEF) undef_fail(I, b);
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**"};
    if (is_num(a) && is_num(b)) {
        bool fl = a->k == V_FLOAT || b->k == V_FLOAT;
        double x = num_f(a), y = num_f(b);
        int64_t i = num_i(a), j = num_i(b), r;
        switch (op) {
        case OP_ADD:
            if (fl) return mkfloat(I, x + y);
            if (__builtin_add_overflow(i, j, &r)) FAIL(I, "integer overflow in +");
            return mkint(I, r);
        case OP_SUB:
            if (fl) return mkfloat(I, x - y);
            if (__builtin_sub_overflow(i, j, &r)) FAIL(I, "integer overflow in -");
            return mkint(I, r);
        case OP_MUL:
            if (fl) return mkfloat(I, x * y);
            if (__builtin_mul_overflow(i, j, &r)) FAIL(I, "integer overflow in *");
            return mkint(I, r);
        case OP_DIV:
            if (y == 0) FAIL(I, "division by zero");
            return mkfloat(I, x / y);
        case OP_FDIV:
        case OP_MOD:
            if (fl ? y == 0 : j == 0) FAIL(I, fl ? "float division by zero" : "integer division or modulo by zero");
            if (fl) { /* Python's float divmod */
                double m = fmod(x, y), d = (x - m) / y;
                if (m != 0) {
                    if ((y < 0) != (m < 0)) {
                        m += y;
                        d -= 1.0;
                    }
                } else {
                    m = copysign(0.0, y);
                }
                double fd;
                if (d != 0) {
                    fd = floor(d);
                    if (d - fd > 0.5) fd += 1.0;
                } else {
                    fd = copysign(0.0, x / y);
                }
                return mkfloat(I, op == OP_MOD ? m : fd);
            }
            if (i == INT64_MIN && j == -1) FAIL(I, "integer overflow in //");
            {
                int64_t q = i / j, m = i % j;
                if (m != 0 && ((m < 0) != (j < 0))) {
                    q--;
                    m += j;
                }
                return mkint(I, op == OP_MOD ? m : q);
            }
        case OP_POW:
            if (!fl && j >= 0) { /* by squaring, failing on overflow */
                int64_t acc = 1, base = i;
                for (int64_t e = j; e > 0; e >>= 1) {
                    if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) FAIL(I, "integer overflow in **");
                    if (e > 1 && __builtin_mul_overflow(base, base, &base)) FAIL(I, "integer overflow in **");
                }
                return mkint(I, acc);
            }
            return mkfloat(I, pow(x, y));
        }
    }
    if (op == OP_ADD && a->k == V_STR && b->k == V_STR) {
        bool markup = a->markup || b->markup; /* Markup + str escapes the str */
        if (markup && !a->markup) a = html_escape(I, a);
        if (markup && !b->markup) b = html_escape(I, b);
        obuf o = {0};
        ob_put(I, &o, "", 0);
        ob_put(I, &o, a->s.p, a->s.n);
        ob_put(I, &o, b->s.p, b->s.n);
        jv *r = ob_str(I, &o);
        r->markup = markup;
        return r;
    }
    if (op == OP_ADD && a->k == V_LIST && b->k == V_LIST && !a->l.lazy && !b->l.lazy) {
        jv *l = mklist(I);
        l->l.tuple = a->l.tuple;
        if (a->l.tuple != b->l.tuple) FAIL(I, "can only concatenate %s (not \"%s\") to %s", type_name(a), type_name(b), type_name(a));
        for (size_t k = 0; k < a->l.n; k++) lpush(I, l, a->l.a[k]);
        for (size_t k = 0; k < b->l.n; k++) lpush(I, l, b->l.a[k]);
        return l;
    }
    if (op == OP_MUL && (((a->k == V_STR || (a->k == V_LIST && !a->l.lazy)) && (b->k == V_INT || b->k == V_BOOL)) ||
                         ((b->k == V_STR || (b->k == V_LIST && !b->l.lazy)) && (a->k == V_INT || a->k == V_BOOL)))) {
        jv *seq = a->k == V_STR || a->k == V_LIST ? a : b;
        int64_t times = num_i(seq == a ? b : a);
        /* an empty one stays empty whatever the count: no loop to spin (the
         * budget counts bytes and elements, and there are none) */
        if (seq->k == V_STR ? seq->s.n == 0 : seq->l.n == 0) times = 0;
        if (seq->k == V_STR) {
            obuf o = {0};
            ob_put(I, &o, "", 0);
            for (int64_t k = 0; k < times; k++) ob_put(I, &o, seq->s.p, seq->s.n);
            jv *r = ob_str(I, &o);
            r->markup = seq->markup;
            return r;
        }
        jv *l = mklist(I);
        for (int64_t k = 0; k < times; k++)
            for (size_t m = 0; m < seq->l.n; m++) {
                step(I);
                lpush(I, l, seq->l.a[m]);
            }
        return l;
    }
    if (op == OP_MOD && a->k == V_STR) {
        obuf o = {0};
        if (a->markup) b = escape_args(I, b);
        percent_format(I, &o, a, b);
        jv *r = o.p ? ob_str(I, &o) : mkcstr(I, "");
        r->markup = a->markup;
        return r;
    }
    FAIL(I, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op], type_name(a), type_name(b));
}

/* "%s" % x: Python's printf-style formatting for %s %r %d %i %f %x %% with
 * flags, width and precision. */
static void percent_format(interp *I, obuf *o, const jv *fmt, jv *args) {
    size_t ai = 0;
    jv *argl = args->k == V_LIST && args->l.tuple ? args : NULL;
    ob_put(I, o, "", 0);
    for (size_t i = 0; i < fmt->s.n; i++) {
        char c = fmt->s.p[i];
        if (c != '%') {
            ob_put(I, o, &c, 1);
            continue;
        }
        if (++i >= fmt->s.n) FAIL(I, "incomplete format");
        if (fmt->s.p[i] == '%') {
            ob_puts(I, o, "%");
            continue;
        }
        char spec[32] = "%";
        size_t sn = 1;
        while (i < fmt->s.n && fmt->s.p[i] && strchr("-+ #0", fmt->s.p[i]) && sn < 8) spec[sn++] = fmt->s.p[i++];
        for (int part = 0; part < 2; part++) { /* width, then .precision: at most 4 digits each */
            if (part == 1) {
                if (i >= fmt->s.n || fmt->s.p[i] != '.') break;
                spec[sn++] = fmt->s.p[i++];
            }
            int digits = 0;
            while (i < fmt->s.n && fmt->s.p[i] >= '0' && fmt->s.p[i] <= '9') {
                if (++digits > 4) FAIL(I, "format: a width or precision above 9999 is not supported");
                spec[sn++] = fmt->s.p[i++];
            }
        }
        if (i >= fmt->s.n) FAIL(I, "incomplete format");
        char conv = fmt->s.p[i];
        jv *x;
        if (argl) {
            if (ai >= argl->l.n) FAIL(I, "not enough arguments for format string");
            x = argl->l.a[ai++];
        } else {
            if (ai++) FAIL(I, "not enough arguments for format string");
            x = args;
        }
        char buf[10500]; /* %.9999f of 1e308 fits */
        if (conv == 's' || conv == 'r') {
            obuf t = {0};
            if (conv == 's')
                put_str(I, &t, x);
            else
                put_repr(I, &t, x);
            spec[sn++] = 's';
            spec[sn] = 0;
            if (sn == 2) {
                ob_put(I, o, t.p, t.n);
            } else {
                size_t need = t.n + 10000 + 1;
                char *tmp = ar_alloc(&I->ar, need);
                snprintf(tmp, need, spec, t.p ? t.p : "");
                ob_puts(I, o, tmp);
            }
        } else if (strchr("dixXo", conv)) {
            if (!is_num(x)) FAIL(I, "%%%c format: a number is required, not %s", conv, type_name(x));
            int64_t v = x->k == V_FLOAT ? (int64_t)x->f : num_i(x);
            spec[sn++] = 'l';
            spec[sn++] = 'l';
            spec[sn++] = conv == 'i' ? 'd' : conv;
            spec[sn] = 0;
            snprintf(buf, sizeof buf, spec, (long long)v);
            ob_puts(I, o, buf);
        } else if (strchr("feEgG", conv)) {
            if (!is_num(x)) FAIL(I, "%%%c format: a real number is required, not %s", conv, type_name(x));
            spec[sn++] = conv;
            spec[sn] = 0;
            snprintf(buf, sizeof buf, spec, num_f(x));
            ob_puts(I, o, buf);
        } else {
            FAIL(I, "unsupported format character '%c'", conv);
        }
    }
    if (argl ? ai < argl->l.n : ai == 0) FAIL(I, "not all arguments converted during string formatting");
}

/* ---------------------------------------------------------------- calls */

typedef struct args {
    jv **pos;
    size_t n;
    const char **kwn;
    jv **kwv;
    size_t nkw;
} args;

static jv *arg(const args *a, size_t i, const char *name) {
    if (i < a->n) return a->pos[i];
    for (size_t k = 0; k < a->nkw; k++)
        if (name && !strcmp(a->kwn[k], name)) return a->kwv[k];
    return NULL;
}

static void want_args(interp *I, const args *a, size_t max, const char *what) {
    if (a->n > max) FAIL(I, "%s takes at most %zu argument(s) (%zu given)", what, max, a->n);
}

static const char *arg_str(interp *I, const args *a, size_t i, const char *name, const char *def, size_t *len) {
    jv *v = arg(a, i, name);
    if (!v || v->k == V_NONE) {
        if (len) *len = def ? strlen(def) : 0;
        return def;
    }
    if (v->k != V_STR) FAIL(I, "argument '%s' must be a string, not %s", name ? name : "?", type_name(v));
    if (len) *len = v->s.n;
    return v->s.p;
}

static int64_t arg_int(interp *I, const args *a, size_t i, const char *name, int64_t def) {
    jv *v = arg(a, i, name);
    if (!v || v->k == V_NONE) return def;
    if (v->k != V_INT && v->k != V_BOOL) FAIL(I, "argument '%s' must be an integer, not %s", name ? name : "?", type_name(v));
    return num_i(v);
}

static bool arg_bool(const args *a, size_t i, const char *name, bool def) {
    jv *v = arg(a, i, name);
    return v ? truthy(v) : def;
}

static jv *call_value(interp *I, jv *f, args *a, jv *caller);
static jv *eval(interp *I, const jnode *n, jscope *sc);
static void exec(interp *I, const jnode *n, jscope *sc);

static bool has_cp(const char *set, size_t n, uint32_t cp) {
    for (size_t i = 0; i < n;)
        if (u8next(set, n, &i) == cp) return true;
    return false;
}

/* str.strip family: chars NULL strips Python white space. */
static jv *strip_str(interp *I, const jv *s, const char *chars, size_t cn, bool left, bool right) {
    size_t b = 0, e = s->s.n;
    if (left)
        while (b < e) {
            size_t j = b;
            uint32_t cp = u8next(s->s.p, e, &j);
            if (chars ? !has_cp(chars, cn, cp) : !is_space_cp(cp)) break;
            b = j;
        }
    if (right)
        while (e > b) {
            size_t j = e - 1;
            while (j > b && ((unsigned char)s->s.p[j] & 0xC0) == 0x80) j--;
            size_t k = j;
            uint32_t cp = u8next(s->s.p, e, &k);
            if (chars ? !has_cp(chars, cn, cp) : !is_space_cp(cp)) break;
            e = j;
        }
    return mkstr(I, s->s.p + b, e - b);
}

static jv *split_str(interp *I, const jv *s, const char *sep, size_t sn, int64_t maxsplit, bool from_right) {
    work(I, s->s.n);
    jv *l = mklist(I);
    const char *p = s->s.p;
    size_t n = s->s.n;
    if (sep && !sn) FAIL(I, "split: empty separator");
    if (!from_right) {
        if (sep) {
            size_t start = 0;
            for (size_t i = 0; i + sn <= n;) {
                if (maxsplit >= 0 && (int64_t)l->l.n >= maxsplit) break;
                if (!memcmp(p + i, sep, sn)) {
                    lpush(I, l, mkstr(I, p + start, i - start));
                    i += sn;
                    start = i;
                } else {
                    i++;
                }
            }
            lpush(I, l, mkstr(I, p + start, n - start));
        } else {
            size_t i = 0;
            for (;;) {
                while (i < n) {
                    size_t j = i;
                    if (!is_space_cp(u8next(p, n, &j))) break;
                    i = j;
                }
                if (i >= n) break;
                if (maxsplit >= 0 && (int64_t)l->l.n >= maxsplit) { /* the rest as it is */
                    lpush(I, l, mkstr(I, p + i, n - i));
                    break;
                }
                size_t st = i;
                while (i < n) {
                    size_t j = i;
                    if (is_space_cp(u8next(p, n, &j))) break;
                    i = j;
                }
                lpush(I, l, mkstr(I, p + st, i - st));
            }
        }
        return l;
    }
    /* rsplit */
    jv *r = mklist(I);
    if (!sep) {
        if (maxsplit < 0) return split_str(I, s, NULL, 0, -1, false);
        size_t e = n;
        for (;;) {
            while (e > 0 && is_space_cp((unsigned char)p[e - 1])) e--;
            if (!e) break;
            if ((int64_t)r->l.n >= maxsplit) {
                size_t b = 0;
                while (b < e && is_space_cp((unsigned char)p[b])) b++;
                lpush(I, r, mkstr(I, p + b, e - b));
                break;
            }
            size_t b = e;
            while (b > 0 && !is_space_cp((unsigned char)p[b - 1])) b--;
            lpush(I, r, mkstr(I, p + b, e - b));
            e = b;
        }
    } else {
        size_t end = n;
        for (size_t i = n; i >= sn;) {
            if (maxsplit >= 0 && (int64_t)r->l.n >= maxsplit) break;
            if (!memcmp(p + i - sn, sep, sn)) {
                lpush(I, r, mkstr(I, p + i, end - i));
                i -= sn;
                end = i;
            } else {
                i--;
            }
        }
        lpush(I, r, mkstr(I, p, end));
    }
    for (size_t i = 0; i < r->l.n / 2; i++) {
        jv *t = r->l.a[i];
        r->l.a[i] = r->l.a[r->l.n - 1 - i];
        r->l.a[r->l.n - 1 - i] = t;
    }
    return r;
}

static jv *replace_str(interp *I, const jv *s, const char *old, size_t on, const char *nw, size_t nn, int64_t count) {
    work(I, s->s.n);
    obuf o = {0};
    ob_put(I, &o, "", 0);
    const char *p = s->s.p;
    size_t n = s->s.n;
    int64_t done = 0;
    if (!on) { /* Python inserts the new text between every character */
        size_t i = 0;
        while (i <= n) {
            if (count < 0 || done < count) {
                ob_put(I, &o, nw, nn);
                done++;
            }
            if (i == n) break;
            size_t j = i;
            u8next(p, n, &j);
            ob_put(I, &o, p + i, j - i);
            i = j;
        }
        return ob_str(I, &o);
    }
    for (size_t i = 0; i < n;) {
        if ((count < 0 || done < count) && i + on <= n && !memcmp(p + i, old, on)) {
            ob_put(I, &o, nw, nn);
            i += on;
            done++;
        } else {
            ob_put(I, &o, p + i, 1);
            i++;
        }
    }
    return ob_str(I, &o);
}

/* mode 0 upper, 1 lower, 2 capitalize, 3 title (Python's str.title), 4 swapcase; ASCII letters. */
static jv *case_str(interp *I, const jv *s, int mode) {
    work(I, s->s.n);
    char *r = ar_strndup(&I->ar, s->s.p, s->s.n);
    bool prev_cased = false;
    for (size_t i = 0; i < s->s.n; i++) {
        char c = r[i];
        bool up = c >= 'A' && c <= 'Z', lo = c >= 'a' && c <= 'z';
        bool want_up;
        switch (mode) {
        case 0: want_up = true; break;
        case 1: want_up = false; break;
        case 2: want_up = i == 0; break;
        case 3: want_up = !prev_cased; break;
        default: want_up = lo; break;
        }
        if (want_up && lo) r[i] = (char)(c - 32);
        if (!want_up && up) r[i] = (char)(c + 32);
        prev_cased = up || lo;
    }
    jv *v = mk(I, V_STR);
    v->s.p = r;
    v->s.n = s->s.n;
    return v;
}

static bool starts_at(const jv *s, const jv *prefix, bool end) {
    if (prefix->k != V_STR) return false;
    if (prefix->s.n > s->s.n) return false;
    return !memcmp(s->s.p + (end ? s->s.n - prefix->s.n : 0), prefix->s.p, prefix->s.n);
}

/* str.format with {} {0} {name} fields (no format specs) and {{ }} escapes. */
static jv *format_str(interp *I, const jv *s, const args *a) {
    obuf o = {0};
    ob_put(I, &o, "", 0);
    size_t auto_i = 0;
    for (size_t i = 0; i < s->s.n; i++) {
        char c = s->s.p[i];
        if (c == '{' && i + 1 < s->s.n && s->s.p[i + 1] == '{') {
            ob_puts(I, &o, "{");
            i++;
        } else if (c == '}' && i + 1 < s->s.n && s->s.p[i + 1] == '}') {
            ob_puts(I, &o, "}");
            i++;
        } else if (c == '{') {
            size_t j = i + 1;
            while (j < s->s.n && s->s.p[j] != '}') j++;
            if (j >= s->s.n) FAIL(I, "format: single '{' encountered in format string");
            const char *f = s->s.p + i + 1;
            size_t fn = j - i - 1;
            if (memchr(f, ':', fn) || memchr(f, '!', fn) || memchr(f, '.', fn) || memchr(f, '[', fn))
                FAIL(I, "format: field '{%.*s}' uses a format spec, conversion or lookup (not supported)", (int)fn, f);
            jv *v = NULL;
            if (!fn) {
                v = arg(a, auto_i++, NULL);
            } else if (f[0] >= '0' && f[0] <= '9') {
                v = arg(a, (size_t)atoi(f), NULL);
            } else {
                char *nm = ar_strndup(&I->ar, f, fn);
                v = arg(a, SIZE_MAX, nm);
            }
            if (!v) FAIL(I, "format: no argument for field '{%.*s}'", (int)fn, f);
            put_str(I, &o, v);
            i = j;
        } else if (c == '}') {
            FAIL(I, "format: single '}' encountered in format string");
        } else {
            ob_put(I, &o, &c, 1);
        }
    }
    return ob_str(I, &o);
}

static jv *str_method_plain(interp *I, jv *s, const char *m, args *a);

/* Markup's methods escape str arguments and give Markup back (split gives a list of Markup). */
static jv *str_method(interp *I, jv *s, const char *m, args *a) {
    if (!s->markup) return str_method_plain(I, s, m, a);
    args ea = *a;
    if (strcmp(m, "join")) {
        ea.pos = a->n ? ar_alloc(&I->ar, a->n * sizeof(jv *)) : NULL;
        for (size_t i = 0; i < a->n; i++) ea.pos[i] = a->pos[i]->k == V_STR ? html_escape(I, a->pos[i]) : a->pos[i];
        ea.kwv = a->nkw ? ar_alloc(&I->ar, a->nkw * sizeof(jv *)) : NULL;
        for (size_t i = 0; i < a->nkw; i++) ea.kwv[i] = a->kwv[i]->k == V_STR ? html_escape(I, a->kwv[i]) : a->kwv[i];
    } else if (a->n) {
        jv *l = iter_list(I, a->pos[0]), *el = mklist(I);
        for (size_t i = 0; i < l->l.n; i++) lpush(I, el, l->l.a[i]->k == V_STR ? html_escape(I, l->l.a[i]) : l->l.a[i]);
        ea.pos = ar_alloc(&I->ar, sizeof(jv *));
        ea.pos[0] = el;
        ea.n = 1;
    }
    jv *r = str_method_plain(I, s, m, &ea);
    if (r->k == V_STR && r != s) r->markup = true;
    if (r->k == V_LIST)
        for (size_t i = 0; i < r->l.n; i++)
            if (r->l.a[i]->k == V_STR) r->l.a[i]->markup = true;
    return r;
}

static jv *str_method_plain(interp *I, jv *s, const char *m, args *a) {
    size_t n1, n2;
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        want_args(I, a, 1, m);
        const char *chars = arg_str(I, a, 0, "chars", NULL, &n1);
        return strip_str(I, s, chars, n1, m[0] != 'r', m[0] != 'l');
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        want_args(I, a, 2, m);
        const char *sep = arg_str(I, a, 0, "sep", NULL, &n1);
        return split_str(I, s, sep, n1, arg_int(I, a, 1, "maxsplit", -1), m[0] == 'r');
    }
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        jv *p = arg(a, 0, NULL);
        if (!p) FAIL(I, "%s() takes at least 1 argument", m);
        if (p->k == V_LIST && p->l.tuple) {
            for (size_t i = 0; i < p->l.n; i++)
                if (starts_at(s, p->l.a[i], m[0] == 'e')) return mkbool(I, true);
            return mkbool(I, false);
        }
        if (p->k != V_STR) FAIL(I, "%s first arg must be str or a tuple of str, not %s", m, type_name(p));
        return mkbool(I, starts_at(s, p, m[0] == 'e'));
    }
    if (!strcmp(m, "upper")) return case_str(I, s, 0);
    if (!strcmp(m, "lower") || !strcmp(m, "casefold")) return case_str(I, s, 1);
    if (!strcmp(m, "capitalize")) return case_str(I, s, 2);
    if (!strcmp(m, "title")) return case_str(I, s, 3);
    if (!strcmp(m, "swapcase")) return case_str(I, s, 4);
    if (!strcmp(m, "replace")) {
        const char *old = arg_str(I, a, 0, "old", NULL, &n1), *nw = arg_str(I, a, 1, "new", NULL, &n2);
        if (!old || !nw) FAIL(I, "replace() takes at least 2 arguments");
        return replace_str(I, s, old, n1, nw, n2, arg_int(I, a, 2, "count", -1));
    }
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "count")) {
        const char *sub = arg_str(I, a, 0, "sub", NULL, &n1);
        if (!sub) FAIL(I, "%s() takes at least 1 argument", m);
        if (arg(a, 1, NULL)) FAIL(I, "%s() with start/end arguments is not supported", m);
        work(I, s->s.n);
        int64_t found = -1, cnt = 0;
        for (size_t i = 0; i + n1 <= s->s.n;) {
            if (!memcmp(s->s.p + i, sub, n1)) {
                if (found < 0 || m[0] == 'r') found = (int64_t)u8count(s->s.p, i);
                cnt++;
                i += n1 ? n1 : 1;
                if (!n1 && i > s->s.n) break;
            } else {
                i++;
            }
        }
        if (!n1) cnt = (int64_t)u8count(s->s.p, s->s.n) + 1;
        if (m[0] == 'c') return mkint(I, cnt);
        if (m[0] == 'i' && found < 0) FAIL(I, "substring not found");
        return mkint(I, found);
    }
    if (!strcmp(m, "join")) {
        jv *l = arg(a, 0, NULL);
        if (!l) FAIL(I, "join() takes exactly one argument");
        l = iter_list(I, l);
        obuf o = {0};
        ob_put(I, &o, "", 0);
        for (size_t i = 0; i < l->l.n; i++) {
            if (i) ob_put(I, &o, s->s.p, s->s.n);
            if (l->l.a[i]->k != V_STR) FAIL(I, "sequence item %zu: expected str instance, %s found", i, type_name(l->l.a[i]));
            ob_put(I, &o, l->l.a[i]->s.p, l->l.a[i]->s.n);
        }
        return ob_str(I, &o);
    }
    if (!strcmp(m, "format")) return format_str(I, s, a);
    if (!strncmp(m, "is", 2)) {
        if (!s->s.n) return mkbool(I, false);
        bool ok = true, any_cased = false;
        for (size_t i = 0; i < s->s.n; i++) {
            unsigned char c = (unsigned char)s->s.p[i];
            bool dg = c >= '0' && c <= '9', al = (c | 32) >= 'a' && (c | 32) <= 'z';
            if (!strcmp(m, "isdigit") || !strcmp(m, "isnumeric") || !strcmp(m, "isdecimal")) ok &= dg;
            else if (!strcmp(m, "isalpha")) ok &= al;
            else if (!strcmp(m, "isalnum")) ok &= al || dg;
            else if (!strcmp(m, "isspace")) ok &= is_space_cp(c);
            else if (!strcmp(m, "islower")) ok &= !(c >= 'A' && c <= 'Z'), any_cased |= al;
            else if (!strcmp(m, "isupper")) ok &= !(c >= 'a' && c <= 'z'), any_cased |= al;
            else FAIL(I, "str.%s() is not supported", m);
            if (c >= 0x80) FAIL(I, "str.%s() on non-ASCII text is not supported", m);
        }
        if (!strcmp(m, "islower") || !strcmp(m, "isupper")) ok &= any_cased;
        return mkbool(I, ok);
    }
    if (!strcmp(m, "splitlines")) {
        jv *l = mklist(I);
        size_t st = 0;
        for (size_t i = 0; i < s->s.n; i++) {
            char c = s->s.p[i];
            if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1C && c <= 0x1E)) {
                lpush(I, l, mkstr(I, s->s.p + st, i - st));
                if (c == '\r' && i + 1 < s->s.n && s->s.p[i + 1] == '\n') i++;
                st = i + 1;
            }
        }
        if (st < s->s.n) lpush(I, l, mkstr(I, s->s.p + st, s->s.n - st));
        return l;
    }
    if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        jv *p = arg(a, 0, NULL);
        if (!p || p->k != V_STR) FAIL(I, "%s() argument must be str", m);
        bool suf = m[6] == 's';
        if (!starts_at(s, p, suf)) return s;
        return mkstr(I, s->s.p + (suf ? 0 : p->s.n), s->s.n - p->s.n);
    }
    if (!strcmp(m, "partition") || !strcmp(m, "rpartition")) {
        const char *sep = arg_str(I, a, 0, "sep", NULL, &n1);
        if (!sep || !n1) FAIL(I, "%s: empty or missing separator", m);
        jv *t = mklist(I);
        t->l.tuple = true;
        int64_t at = -1;
        for (size_t i = 0; i + n1 <= s->s.n; i++)
            if (!memcmp(s->s.p + i, sep, n1)) {
                at = (int64_t)i;
                if (m[0] != 'r') break;
            }
        if (at < 0) {
            jv *e = mkcstr(I, "");
            lpush(I, t, m[0] == 'r' ? e : s);
            lpush(I, t, e);
            lpush(I, t, m[0] == 'r' ? s : e);
        } else {
            lpush(I, t, mkstr(I, s->s.p, (size_t)at));
            lpush(I, t, mkstr(I, sep, n1));
            lpush(I, t, mkstr(I, s->s.p + at + n1, s->s.n - (size_t)at - n1));
        }
        return t;
    }
    FAIL(I, "str.%s() is not supported", m);
}

static jv *call_macro(interp *I, jv *f, args *a, jv *caller);

static jv *call_method(interp *I, jv *f, args *a) {
    jv *self = f->fn.self;
    const char *m = f->fn.name;
    if (f->fn.unsafe) FAIL(I, "access to attribute '%s' of '%s' object is unsafe.", m, type_name(self));
    if (self->k == V_STR) return str_method(I, self, m, a);
    if (self->k == V_DICT && self->d.kind == D_LOOP) { /* loop.cycle */
        if (!a->n) FAIL(I, "no items for cycling given");
        return a->pos[self->d.loop_i % a->n];
    }
    if (self->k == V_DICT) {
        if (!strcmp(m, "get")) {
            jv *k = arg(a, 0, "key");
            if (!k) FAIL(I, "get expected at least 1 argument, got 0");
            jv **s = dslot(self, k);
            if (s) return *s;
            jv *d = arg(a, 1, "default");
            return d ? d : mk(I, V_NONE);
        }
        if (!strcmp(m, "copy")) {
            jv *d = mkdict(I, D_DICT);
            for (size_t i = 0; i < self->d.n; i++) dsetv(I, d, self->d.keys[i], self->d.vals[i]);
            return d;
        }
        jv *l = mklist(I);
        l->l.lazy = m[0] == 'k' ? L_KEYS : m[0] == 'v' ? L_VALUES : L_ITEMS;
        for (size_t i = 0; i < self->d.n; i++) {
            if (m[0] == 'k') {
                lpush(I, l, self->d.keys[i]);
            } else if (m[0] == 'v') {
                lpush(I, l, self->d.vals[i]);
            } else {
                jv *t = mklist(I);
                t->l.tuple = true;
                lpush(I, t, self->d.keys[i]);
                lpush(I, t, self->d.vals[i]);
                lpush(I, l, t);
            }
        }
        return l;
    }
    if (self->k == V_LIST) {
        if (!strcmp(m, "copy")) return do_slice(I, self, NULL, NULL, NULL);
        jv *x = arg(a, 0, NULL);
        if (!x) FAIL(I, "%s() takes exactly one argument", m);
        int64_t cnt = 0;
        for (size_t i = 0; i < self->l.n; i++)
            if (equals(self->l.a[i], x)) {
                if (m[0] == 'i') return mkint(I, (int64_t)i);
                cnt++;
            }
        if (m[0] == 'i') FAIL(I, "list.index(x): x not in list");
        return mkint(I, cnt);
    }
    FAIL(I, "'%s' object has no method '%s'", type_name(self), m);
}

static jv *strftime_now(interp *I, args *a) {
    size_t n;
    const char *fmt = arg_str(I, a, 0, "format", NULL, &n);
    if (!fmt) FAIL(I, "strftime_now() takes a format string");
    struct tm tm;
    if (I->now_utc)
        gmtime_r(&I->now, &tm);
    else
        localtime_r(&I->now, &tm);
    char buf[512];
    size_t w = strftime(buf, sizeof buf, fmt, &tm);
    if (!w && n) FAIL(I, "strftime_now: the format gives an empty or too long text");
    return mkstr(I, buf, w);
}

static jv *call_builtin(interp *I, jv *f, args *a) {
    const char *nm = f->fn.name;
    if (!strcmp(nm, "raise_exception")) {
        jv *m = arg(a, 0, "message");
        obuf o = {0};
        put_str(I, &o, m ? m : mkcstr(I, ""));
        FAIL(I, "%s", o.p ? o.p : "");
    }
    if (!strcmp(nm, "range")) {
        if (!a->n || a->n > 3) FAIL(I, "range expected 1 to 3 arguments, got %zu", a->n);
        for (size_t i = 0; i < a->n; i++)
            if (a->pos[i]->k != V_INT && a->pos[i]->k != V_BOOL)
                FAIL(I, "'%s' object cannot be interpreted as an integer", type_name(a->pos[i]));
        int64_t lo = a->n > 1 ? num_i(a->pos[0]) : 0, hi = num_i(a->pos[a->n > 1 ? 1 : 0]);
        int64_t st = a->n > 2 ? num_i(a->pos[2]) : 1;
        if (!st) FAIL(I, "range() arg 3 must not be zero");
        jv *l = mklist(I);
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (l->l.n >= 100000) FAIL(I, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
            lpush(I, l, mkint(I, i));
        }
        return l;
    }
    if (!strcmp(nm, "namespace") || !strcmp(nm, "dict")) {
        jv *d = mkdict(I, nm[0] == 'n' ? D_NAMESPACE : D_DICT);
        for (size_t i = 0; i < a->n; i++) {
            jv *x = a->pos[i];
            if (x->k != V_DICT) FAIL(I, "%s() takes only a mapping as positional argument", nm);
            for (size_t k = 0; k < x->d.n; k++) dsetv(I, d, x->d.keys[k], x->d.vals[k]);
        }
        for (size_t k = 0; k < a->nkw; k++) dset(I, d, a->kwn[k], a->kwv[k]);
        return d;
    }
    if (!strcmp(nm, "strftime_now")) return strftime_now(I, a);
    FAIL(I, "'%s' is not callable", nm);
}

static jv *call_value(interp *I, jv *f, args *a, jv *caller) {
    if (f->k == V_UNDEF) undef_fail(I, f);
    if (f->k != V_FUNC) FAIL(I, "'%s' object is not callable", type_name(f));
    if (f->fn.macro) return call_macro(I, f, a, caller);
    if (f->fn.self) return call_method(I, f, a);
    return call_builtin(I, f, a);
}

/* ---------------------------------------------------------------- sorting */

typedef struct sort_ctx {
    interp *I;
    bool ci, reverse;
    const char *attr; /* compare this attribute of each item, or NULL */
    int by;           /* dictsort: 0 key, 1 value (items are pairs) */
} sort_ctx;

static jv *attr_path(interp *I, jv *v, const char *path);

static jv *sort_key(sort_ctx *c, jv *v) {
    if (c->by >= 0 && v->k == V_LIST && v->l.n == 2) return v->l.a[c->by];
    return c->attr ? attr_path(c->I, v, c->attr) : v;
}

static void merge_sort(sort_ctx *c, jv **a, jv **tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(c, a, tmp, h);
    merge_sort(c, a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        step(c->I);
        int r = cmp_values(c->I, sort_key(c, a[j]), sort_key(c, a[i]), c->ci);
        if (c->reverse ? r > 0 : r < 0)
            tmp[k++] = a[j++];
        else
            tmp[k++] = a[i++];
    }
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    memcpy(a, tmp, n * sizeof *a);
}

static jv *sorted(interp *I, jv *l, sort_ctx *c) {
    jv *r = mklist(I);
    for (size_t i = 0; i < l->l.n; i++) lpush(I, r, l->l.a[i]);
    jv **tmp = ar_alloc(&I->ar, (r->l.n + 1) * sizeof *tmp);
    merge_sort(c, r->l.a, tmp, r->l.n);
    return r;
}

/* ------------------------------------------------------- filters and tests */

static const char *const filter_names[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "pprint", "random", "reject", "rejectattr", "replace", "reverse",
    "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title", "tojson", "trim",
    "truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr", NULL};
static const char *const test_names[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter", "float",
    "ge", "gt", "greaterthan", "in", "integer", "iterable", "le", "lower", "lessthan", "lt", "mapping", "ne", "none",
    "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper", "==", "!=", "<", "<=", ">",
    ">=", NULL};

bool jinja_filter_known(const char *name) { return in_names(filter_names, name); }
bool jinja_test_known(const char *name) { return in_names(test_names, name); }

/* "a.b.0": attribute path as jinja2's make_attrgetter follows it. */
static jv *attr_path(interp *I, jv *v, const char *path) {
    const char *p = path;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        char *part = ar_strndup(&I->ar, p, n);
        bool digits = n > 0;
        for (size_t i = 0; i < n; i++) digits &= part[i] >= '0' && part[i] <= '9';
        v = digits ? get_item(I, v, mkint(I, atoll(part))) : get_item(I, v, mkcstr(I, part));
        p += n + (dot != NULL);
        if (!dot) break;
    }
    return v;
}

static bool apply_test(interp *I, const char *name, jv *v, args *a);
static jv *apply_filter(interp *I, const char *name, jv *v, args *a);

static args shift_args(const args *a, size_t k) {
    args r = *a;
    r.pos = a->pos ? a->pos + (a->n >= k ? k : a->n) : NULL;
    r.n = a->n >= k ? a->n - k : 0;
    return r;
}

static jv *select_items(interp *I, jv *v, args *a, bool attr, bool keep) {
    jv *l = truthy(v) ? iter_list(I, v) : mklist(I), *r = mklist(I);
    r->l.lazy = L_GEN;
    const char *path = NULL;
    args rest = shift_args(a, 0);
    if (attr) {
        jv *p = arg(a, 0, NULL);
        if (!p || p->k != V_STR) FAIL(I, "%sattr: the attribute name must be a string", keep ? "select" : "reject");
        path = p->s.p;
        rest = shift_args(a, 1);
    }
    jv *test = rest.n ? rest.pos[0] : NULL;
    if (test && test->k != V_STR) FAIL(I, "select: the test name must be a string");
    args targs = shift_args(&rest, 1);
    for (size_t i = 0; i < l->l.n; i++) {
        step(I);
        jv *x = path ? attr_path(I, l->l.a[i], path) : l->l.a[i];
        bool ok = test ? apply_test(I, test->s.p, x, &targs) : truthy(x);
        if (ok == keep) lpush(I, r, l->l.a[i]);
    }
    return r;
}

static jv *apply_filter(interp *I, const char *f, jv *v, args *a) {
    step(I);
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        jv *d = arg(a, 0, "default_value");
        bool boolean = arg_bool(a, 1, "boolean", false);
        if (v->k == V_UNDEF || (boolean && !truthy(v))) return d ? d : mkcstr(I, "");
        return v;
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) return mkint(I, length_of(I, v));
    if (!strcmp(f, "string")) return to_str(I, v);
    if (!strcmp(f, "safe")) {
        if (v->k == V_STR && v->markup) return v;
        jv *s = to_str(I, v);
        jv *r = mkstr(I, s->s.p, s->s.n);
        r->markup = true;
        return r;
    }
    if (!strcmp(f, "e") || !strcmp(f, "escape")) return html_escape(I, to_str(I, v));
    if (!strcmp(f, "forceescape")) {
        jv *s = to_str(I, v);
        return html_escape(I, mkstr(I, s->s.p, s->s.n));
    }
    if (!strcmp(f, "trim")) {
        size_t n;
        const char *chars = arg_str(I, a, 0, "chars", NULL, &n);
        jv *s = to_str(I, v), *r = strip_str(I, s, chars, n, true, true);
        r->markup = s->markup;
        return r;
    }
    if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize")) {
        jv *s = to_str(I, v), *r = case_str(I, s, f[0] == 'u' ? 0 : f[0] == 'l' ? 1 : 2);
        r->markup = s->markup;
        return r;
    }
    if (!strcmp(f, "title")) { /* jinja2: words begin after runs of -, white space, (, {, [, < */
        jv *s = to_str(I, v);
        char *r = ar_strndup(&I->ar, s->s.p, s->s.n);
        bool start = true;
        for (size_t i = 0; i < s->s.n; i++) {
            char c = r[i];
            if (strchr("- \t\n\r\v\f({[<", c) && c) {
                start = true;
                continue;
            }
            if (start) {
                if (c >= 'a' && c <= 'z') r[i] = (char)(c - 32);
            } else if (c >= 'A' && c <= 'Z') {
                r[i] = (char)(c + 32);
            }
            start = false;
        }
        jv *o = mk(I, V_STR);
        o->s.p = r;
        o->s.n = s->s.n;
        return o;
    }
    if (!strcmp(f, "replace")) {
        jv *s = to_str(I, v);
        jv *old = arg(a, 0, "old"), *nw = arg(a, 1, "new");
        if (!old || !nw) FAIL(I, "replace: needs the old and the new text");
        old = to_str(I, old);
        nw = to_str(I, nw);
        if (s->markup) { /* jinja2 escapes the arguments of a Markup's replace */
            old = html_escape(I, old);
            nw = html_escape(I, nw);
        }
        jv *r = replace_str(I, s, old->s.p, old->s.n, nw->s.p, nw->s.n, arg_int(I, a, 2, "count", -1));
        r->markup = s->markup;
        return r;
    }
    if (!strcmp(f, "tojson")) {
        json_opts o = {.ensure_ascii = arg_bool(a, 0, "ensure_ascii", false),
                       .sort_keys = arg_bool(a, 3, "sort_keys", false)};
        jv *ind = arg(a, 1, "indent"), *sep = arg(a, 2, "separators");
        if (ind && ind->k != V_NONE) {
            if (ind->k == V_STR) {
                o.indent = ind->s.p;
            } else if (ind->k == V_INT) {
                int64_t w = ind->i < 0 ? 0 : ind->i > 64 ? -1 : ind->i;
                if (w < 0) FAIL(I, "tojson: indent %lld is too large", (long long)ind->i);
                char *sp = ar_alloc(&I->ar, (size_t)w + 1);
                memset(sp, ' ', (size_t)w);
                o.indent = sp;
            } else {
                FAIL(I, "tojson: indent must be an integer or a string");
            }
        }
        o.item_sep = o.indent ? "," : ", ";
        o.key_sep = ": ";
        if (sep && sep->k != V_NONE) {
            if (sep->k != V_LIST || sep->l.n != 2 || sep->l.a[0]->k != V_STR || sep->l.a[1]->k != V_STR)
                FAIL(I, "tojson: separators must be a pair of strings");
            o.item_sep = sep->l.a[0]->s.p;
            o.key_sep = sep->l.a[1]->s.p;
        }
        obuf b = {0};
        json_dump(I, &b, v, &o, 0);
        return ob_str(I, &b);
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (v->k == V_UNDEF) return mkundef(I, f[0] == 'f' ? "'No first item, sequence was empty.'" : "'No last item, sequence was empty.'");
        if (f[0] == 'l' && is_iter(v)) FAIL(I, "'%s' object is not reversible", type_name(v));
        jv *l = is_iter(v) ? take_iter(I, v, f[0] == 'f' ? 1 : SIZE_MAX) : iter_list(I, v);
        if (!l->l.n) return mkundef(I, f[0] == 'f' ? "'No first item, sequence was empty.'" : "'No last item, sequence was empty.'");
        return l->l.a[f[0] == 'f' ? 0 : l->l.n - 1];
    }
    if (!strcmp(f, "list")) {
        jv *l = iter_list(I, v), *r = mklist(I);
        for (size_t i = 0; i < l->l.n; i++) lpush(I, r, l->l.a[i]);
        return r;
    }
    if (!strcmp(f, "join")) {
        size_t dn;
        const char *d = arg_str(I, a, 0, "d", "", &dn);
        jv *at = arg(a, 1, "attribute");
        jv *l = iter_list(I, v);
        obuf o = {0};
        ob_put(I, &o, "", 0);
        for (size_t i = 0; i < l->l.n; i++) {
            if (i) ob_put(I, &o, d, dn);
            jv *x = l->l.a[i];
            if (at && at->k != V_NONE) x = at->k == V_STR ? attr_path(I, x, at->s.p) : get_item(I, x, at);
            put_str(I, &o, x);
        }
        return ob_str(I, &o);
    }
    if (!strcmp(f, "items")) {
        if (v->k == V_UNDEF) return mklist(I);
        if (v->k != V_DICT || v->d.kind != D_DICT) FAIL(I, "items: can only get item pairs from a mapping");
        args none = {0};
        jv *r = call_method(I, bound(I, v, "items", false), &none);
        r->l.lazy = L_GEN;
        return r;
    }
    if (!strcmp(f, "dictsort")) {
        if (v->k != V_DICT || v->d.kind != D_DICT) FAIL(I, "dictsort: can only sort a mapping");
        args none = {0};
        jv *items = call_method(I, bound(I, v, "items", false), &none);
        items->l.lazy = L_LIST;
        size_t bn;
        const char *by = arg_str(I, a, 1, "by", "key", &bn);
        if (strcmp(by, "key") && strcmp(by, "value")) FAIL(I, "dictsort: 'by' must be 'key' or 'value'");
        sort_ctx c = {I, !arg_bool(a, 0, "case_sensitive", false), arg_bool(a, 2, "reverse", false), NULL,
                      by[0] == 'k' ? 0 : 1};
        return sorted(I, items, &c);
    }
    if (!strcmp(f, "sort")) {
        jv *at = arg(a, 2, "attribute");
        sort_ctx c = {I, !arg_bool(a, 1, "case_sensitive", false), arg_bool(a, 0, "reverse", false),
                      at && at->k == V_STR ? at->s.p : NULL, -1};
        return sorted(I, iter_list(I, v), &c);
    }
    if (!strcmp(f, "min") || !strcmp(f, "max")) {
        jv *at = arg(a, 1, "attribute");
        sort_ctx c = {I, !arg_bool(a, 0, "case_sensitive", false), false, at && at->k == V_STR ? at->s.p : NULL, -1};
        jv *l = iter_list(I, v);
        if (!l->l.n) return mkundef(I, "'No aggregated item, sequence was empty.'");
        jv *best = l->l.a[0];
        for (size_t i = 1; i < l->l.n; i++) {
            int r = cmp_values(I, sort_key(&c, l->l.a[i]), sort_key(&c, best), c.ci);
            if (f[1] == 'i' ? r < 0 : r > 0) best = l->l.a[i];
        }
        return best;
    }
    if (!strcmp(f, "unique")) {
        jv *at = arg(a, 1, "attribute");
        bool cs = arg_bool(a, 0, "case_sensitive", false);
        jv *l = iter_list(I, v), *r = mklist(I), *seen = mklist(I);
        for (size_t i = 0; i < l->l.n; i++) {
            jv *k = at && at->k == V_STR ? attr_path(I, l->l.a[i], at->s.p) : l->l.a[i];
            if (!cs && k->k == V_STR) k = case_str(I, k, 1);
            bool dup = false;
            for (size_t j = 0; j < seen->l.n && !dup; j++) {
                step(I);
                dup = equals(seen->l.a[j], k);
            }
            if (!dup) {
                lpush(I, seen, k);
                lpush(I, r, l->l.a[i]);
            }
        }
        r->l.lazy = L_GEN;
        return r;
    }
    if (!strcmp(f, "sum")) {
        jv *at = arg(a, 0, "attribute");
        jv *acc = arg(a, 1, "start");
        if (!acc) acc = mkint(I, 0);
        jv *l = iter_list(I, v);
        for (size_t i = 0; i < l->l.n; i++)
            acc = binop(I, OP_ADD, acc, at && at->k == V_STR ? attr_path(I, l->l.a[i], at->s.p) : l->l.a[i]);
        return acc;
    }
    if (!strcmp(f, "reverse")) {
        if (v->k == V_STR) return do_slice(I, v, NULL, NULL, mkint(I, -1));
        jv *l = iter_list(I, v), *r = mklist(I);
        for (size_t i = l->l.n; i > 0; i--) lpush(I, r, l->l.a[i - 1]);
        /* reversed() of a list is an iterator; of anything else jinja2 makes a list */
        r->l.lazy = v->k == V_DICT || (v->k == V_LIST && !is_iter(v)) ? L_REVITER : L_LIST;
        return r;
    }
    if (!strcmp(f, "map")) {
        jv *l = truthy(v) ? iter_list(I, v) : mklist(I), *r = mklist(I);
        r->l.lazy = L_GEN;
        jv *at = arg(a, SIZE_MAX, "attribute");
        if (at) {
            jv *def = arg(a, SIZE_MAX, "default");
            for (size_t i = 0; i < l->l.n; i++) {
                jv *x = at->k == V_STR ? attr_path(I, l->l.a[i], at->s.p) : get_item(I, l->l.a[i], at);
                lpush(I, r, x->k == V_UNDEF && def ? def : x);
            }
            return r;
        }
        jv *fname = arg(a, 0, NULL);
        if (!fname || fname->k != V_STR) FAIL(I, "map: needs a filter name or attribute=");
        if (!jinja_filter_known(fname->s.p)) FAIL(I, "no filter named '%s'", fname->s.p);
        args rest = shift_args(a, 1);
        for (size_t i = 0; i < l->l.n; i++) lpush(I, r, apply_filter(I, fname->s.p, l->l.a[i], &rest));
        return r;
    }
    if (!strcmp(f, "select")) return select_items(I, v, a, false, true);
    if (!strcmp(f, "reject")) return select_items(I, v, a, false, false);
    if (!strcmp(f, "selectattr")) return select_items(I, v, a, true, true);
    if (!strcmp(f, "rejectattr")) return select_items(I, v, a, true, false);
    if (!strcmp(f, "indent")) {
        jv *w = arg(a, 0, "width");
        const char *ind;
        if (w && w->k == V_STR) {
            ind = w->s.p;
        } else {
            if (w && w->k != V_INT && w->k != V_BOOL) FAIL(I, "indent: width must be an integer or a string");
            int64_t n = w ? num_i(w) : 4;
            if (n < 0) n = 0;
            if (n > 1024) FAIL(I, "indent: width %lld is too large", (long long)n);
            char *sp = ar_alloc(&I->ar, (size_t)n + 1);
            memset(sp, ' ', (size_t)n);
            ind = sp;
        }
        bool first = arg_bool(a, 1, "first", false), blank = arg_bool(a, 2, "blank", false);
        jv *s = to_str(I, v);
        obuf t = {0};
        ob_put(I, &t, s->s.p, s->s.n);
        ob_puts(I, &t, "\n");
        args none = {0};
        jv *lines = str_method(I, ob_str(I, &t), "splitlines", &none);
        obuf o = {0};
        ob_put(I, &o, "", 0);
        if (first) ob_puts(I, &o, ind);
        for (size_t i = 0; i < lines->l.n; i++) {
            jv *ln = lines->l.a[i];
            if (i) {
                ob_puts(I, &o, "\n");
                if (blank || ln->s.n) ob_puts(I, &o, ind);
            }
            ob_put(I, &o, ln->s.p, ln->s.n);
        }
        return ob_str(I, &o);
    }
    if (!strcmp(f, "int")) {
        jv *def = arg(a, 0, "default");
        int64_t base = arg_int(I, a, 1, "base", 10);
        if (v->k == V_INT) return v;
        if (v->k == V_BOOL) return mkint(I, v->b);
        if (v->k == V_FLOAT && isfinite(v->f) && fabs(v->f) < 9.2e18) return mkint(I, (int64_t)v->f);
        if (v->k == V_STR) {
            jv *s = strip_str(I, v, NULL, 0, true, true);
            char *end;
            long long x = strtoll(s->s.p, &end, (int)base);
            if (s->s.n && *end == 0) return mkint(I, x);
            double d = strtod(s->s.p, &end);
            if (s->s.n && *end == 0 && isfinite(d) && fabs(d) < 9.2e18) return mkint(I, (int64_t)d);
        }
        return def ? def : mkint(I, 0);
    }
    if (!strcmp(f, "float")) {
        jv *def = arg(a, 0, "default");
        if (is_num(v)) return mkfloat(I, num_f(v));
        if (v->k == V_STR) {
            jv *s = strip_str(I, v, NULL, 0, true, true);
            char *end;
            double d = strtod(s->s.p, &end);
            if (s->s.n && *end == 0) return mkfloat(I, d);
        }
        return def ? def : mkfloat(I, 0);
    }
    if (!strcmp(f, "abs")) {
        if (v->k == V_INT) return mkint(I, v->i < 0 ? -v->i : v->i);
        if (v->k == V_FLOAT) return mkfloat(I, fabs(v->f));
        if (v->k == V_BOOL) return mkint(I, v->b);
        FAIL(I, "bad operand type for abs(): '%s'", type_name(v));
    }
    if (!strcmp(f, "round")) {
        int64_t prec = arg_int(I, a, 0, "precision", 0);
        size_t mn;
        const char *method = arg_str(I, a, 1, "method", "common", &mn);
        if (!is_num(v)) FAIL(I, "round: a number is required, not %s", type_name(v));
        double x = num_f(v), p = pow(10, (double)prec);
        if (!strcmp(method, "common")) {
            char buf[400];
            if (v->k == V_INT) return v; /* Python's round(int, n) stays an int */
            if (prec < 0 || prec > 300) FAIL(I, "round: precision %lld is not supported", (long long)prec);
            snprintf(buf, sizeof buf, "%.*f", (int)prec, x);
            return mkfloat(I, strtod(buf, NULL));
        }
        if (!strcmp(method, "ceil")) return mkfloat(I, ceil(x * p) / p);
        if (!strcmp(method, "floor")) return mkfloat(I, floor(x * p) / p);
        FAIL(I, "round: method must be common, ceil or floor");
    }
    if (!strcmp(f, "format")) {
        jv *t = mklist(I);
        t->l.tuple = true;
        for (size_t i = 0; i < a->n; i++) lpush(I, t, a->pos[i]);
        obuf o = {0};
        percent_format(I, &o, to_str(I, v), t);
        return o.p ? ob_str(I, &o) : mkcstr(I, "");
    }
    if (!strcmp(f, "attr")) {
        jv *n = arg(a, 0, "name");
        if (!n || n->k != V_STR) FAIL(I, "attr: needs an attribute name");
        if (v->k == V_DICT && v->d.kind == D_DICT && !in_names(dict_methods, n->s.p) && !in_names(dict_unsafe, n->s.p))
            return mkundef(I, undef_name(I, v, n->s.p)); /* attributes only, not items */
        return get_attr(I, v, n->s.p);
    }
    if (!strcmp(f, "batch")) {
        int64_t size = arg_int(I, a, 0, "linecount", 0);
        jv *fill = arg(a, 1, "fill_with");
        if (size <= 0) FAIL(I, "batch: linecount must be positive");
        jv *l = iter_list(I, v), *r = mklist(I), *cur = NULL;
        r->l.lazy = L_GEN;
        for (size_t i = 0; i < l->l.n; i++) {
            if (!cur || (int64_t)cur->l.n == size) {
                cur = mklist(I);
                lpush(I, r, cur);
            }
            lpush(I, cur, l->l.a[i]);
        }
        if (cur && fill && fill->k != V_NONE)
            while ((int64_t)cur->l.n < size) lpush(I, cur, fill);
        return r;
    }
    if (!strcmp(f, "wordcount")) {
        jv *s = to_str(I, v);
        int64_t words = 0;
        bool in = false;
        for (size_t i = 0; i < s->s.n; i++) {
            unsigned char c = (unsigned char)s->s.p[i];
            bool w = (c | 32) >= 'a' && (c | 32) <= 'z' ? true : (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
            if (w && !in) words++;
            in = w;
        }
        return mkint(I, words);
    }
    if (jinja_filter_known(f)) FAIL(I, "the filter '%s' is not supported by this template engine", f);
    FAIL(I, "no filter named '%s'", f);
}

static bool apply_test(interp *I, const char *t, jv *v, args *a) {
    step(I);
    jv *x = arg(a, 0, NULL);
    if (!strcmp(t, "defined")) return v->k != V_UNDEF;
    if (!strcmp(t, "undefined")) return v->k == V_UNDEF;
    if (!strcmp(t, "none")) return v->k == V_NONE;
    if (!strcmp(t, "string")) return v->k == V_STR;
    if (!strcmp(t, "mapping")) return v->k == V_DICT && v->d.kind == D_DICT;
    if (!strcmp(t, "iterable")) return v->k == V_UNDEF || v->k == V_STR || v->k == V_LIST || (v->k == V_DICT && v->d.kind == D_DICT);
    if (!strcmp(t, "sequence"))
        return v->k == V_UNDEF || v->k == V_STR || (v->k == V_LIST && !v->l.lazy) || (v->k == V_DICT && v->d.kind == D_DICT);
    if (!strcmp(t, "number")) return is_num(v);
    if (!strcmp(t, "integer")) return v->k == V_INT;
    if (!strcmp(t, "float")) return v->k == V_FLOAT;
    if (!strcmp(t, "boolean")) return v->k == V_BOOL;
    if (!strcmp(t, "true")) return v->k == V_BOOL && v->b;
    if (!strcmp(t, "false")) return v->k == V_BOOL && !v->b;
    if (!strcmp(t, "callable")) return v->k == V_FUNC || v->k == V_UNDEF;
    if (!strcmp(t, "escaped")) return false;
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        args none = {0};
        return truthy(str_method(I, to_str(I, v), t[0] == 'l' ? "islower" : "isupper", &none));
    }
    if (!strcmp(t, "even") || !strcmp(t, "odd")) {
        if (v->k != V_INT && v->k != V_BOOL) FAIL(I, "the test '%s' needs an integer, not %s", t, type_name(v));
        return (num_i(v) % 2 != 0) == (t[0] == 'o');
    }
    if (!strcmp(t, "filter")) return v->k == V_STR && jinja_filter_known(v->s.p);
    if (!strcmp(t, "test")) return v->k == V_STR && jinja_test_known(v->s.p);
    if (!x) FAIL(I, "the test '%s' needs an argument", t);
    if (!strcmp(t, "sameas")) {
        if (v->k == V_NONE || v->k == V_BOOL || v->k == V_UNDEF) return v->k == x->k && (v->k != V_BOOL || v->b == x->b);
        return v == x;
    }
    if (!strcmp(t, "in")) return contains(I, x, v);
    if (!strcmp(t, "divisibleby")) {
        jv *r = binop(I, OP_MOD, v, x);
        return num_f(r) == 0;
    }
    if (!strcmp(t, "eq") || !strcmp(t, "equalto") || !strcmp(t, "==")) return equals(v, x);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !equals(v, x);
    int c = cmp_values(I, v, x, false);
    if (!strcmp(t, "lt") || !strcmp(t, "lessthan") || !strcmp(t, "<")) return c < 0;
    if (!strcmp(t, "le") || !strcmp(t, "<=")) return c <= 0;
    if (!strcmp(t, "gt") || !strcmp(t, "greaterthan") || !strcmp(t, ">")) return c > 0;
    if (!strcmp(t, "ge") || !strcmp(t, ">=")) return c >= 0;
    FAIL(I, "no test named '%s'", t);
}

/* ------------------------------------------------------------ evaluation */

static jscope *new_scope(interp *I, jscope *parent) {
    jscope *s = ar_alloc(&I->ar, sizeof *s);
    s->parent = parent;
    s->vars = mkdict(I, D_DICT);
    return s;
}

static jv *lookup(interp *I, jscope *sc, const char *name) {
    for (; sc; sc = sc->parent) {
        jv *v = dget(sc->vars, name);
        if (v) return v;
    }
    obuf b = {0};
    ob_puts(I, &b, "'");
    ob_puts(I, &b, name);
    ob_puts(I, &b, "'");
    return mkundef(I, b.p);
}

static void eval_args(interp *I, const jnode *n, jscope *sc, args *a) {
    a->n = n->n;
    a->pos = n->n ? ar_alloc(&I->ar, n->n * sizeof(jv *)) : NULL;
    for (size_t i = 0; i < n->n; i++) a->pos[i] = eval(I, n->items[i], sc);
    a->nkw = n->nkw;
    if (n->nkw) {
        a->kwn = ar_alloc(&I->ar, n->nkw * sizeof(char *));
        a->kwv = ar_alloc(&I->ar, n->nkw * sizeof(jv *));
        for (size_t i = 0; i < n->nkw; i++) {
            a->kwn[i] = n->kw[i].name;
            a->kwv[i] = eval(I, n->kw[i].val, sc);
        }
    }
}

static jv *eval(interp *I, const jnode *n, jscope *sc) {
    step(I);
    int saved_line = I->line;
    I->line = n->line;
    if (++I->depth > 400) FAIL(I, "the template recursed too deeply");
    jv *r = NULL;
    switch (n->k) {
    case N_LIT: r = n->val; break;
    case N_NAME: r = lookup(I, sc, n->str); break;
    case N_ATTR: r = get_attr(I, eval(I, n->a, sc), n->str); break;
    case N_ITEM: {
        jv *o = eval(I, n->a, sc);
        r = get_item(I, o, eval(I, n->b, sc));
        break;
    }
    case N_SLICE: {
        jv *o = eval(I, n->a, sc);
        jv *x = n->b ? eval(I, n->b, sc) : NULL, *y = n->c ? eval(I, n->c, sc) : NULL, *z = n->d ? eval(I, n->d, sc) : NULL;
        r = do_slice(I, o, x, y, z);
        break;
    }
    case N_CALL: {
        jv *f = eval(I, n->a, sc);
        args a = {0};
        eval_args(I, n, sc, &a);
        I->line = n->line;
        r = call_value(I, f, &a, NULL);
        break;
    }
    case N_FILTER: {
        jv *v = eval(I, n->a, sc);
        args a = {0};
        eval_args(I, n, sc, &a);
        I->line = n->line;
        if (n->late && !jinja_filter_known(n->str)) FAIL(I, "no filter named '%s'", n->str);
        r = apply_filter(I, n->str, v, &a);
        break;
    }
    case N_TEST: {
        jv *v = eval(I, n->a, sc);
        args a = {0};
        eval_args(I, n, sc, &a);
        I->line = n->line;
        if (n->late && !jinja_test_known(n->str)) FAIL(I, "no test named '%s' found", n->str);
        bool t = apply_test(I, n->str, v, &a);
        r = mkbool(I, n->op ? !t : t);
        break;
    }
    case N_BIN: {
        jv *x = eval(I, n->a, sc);
        jv *y = eval(I, n->b, sc);
        I->line = n->line;
        r = binop(I, n->op, x, y);
        break;
    }
    case N_NEG:
    case N_POS: {
        jv *x = eval(I, n->a, sc);
        if (x->k == V_UNDEF) undef_fail(I, x);
        if (!is_num(x)) FAIL(I, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+', type_name(x));
        if (n->k == N_POS)
            r = x->k == V_BOOL ? mkint(I, x->b) : x;
        else if (x->k == V_FLOAT)
            r = mkfloat(I, -x->f);
        else if (num_i(x) == INT64_MIN)
            FAIL(I, "integer overflow in unary -");
        else
            r = mkint(I, -num_i(x));
        break;
    }
    case N_NOT: r = mkbool(I, !truthy(eval(I, n->a, sc))); break;
    case N_AND: {
        jv *x = eval(I, n->a, sc);
        r = truthy(x) ? eval(I, n->b, sc) : x;
        break;
    }
    case N_OR: {
        jv *x = eval(I, n->a, sc);
        r = truthy(x) ? x : eval(I, n->b, sc);
        break;
    }
    case N_COND:
        if (truthy(eval(I, n->a, sc)))
            r = eval(I, n->b, sc);
        else
            r = n->c ? eval(I, n->c, sc) : mkundef(I, "the else branch of an inline if");
        break;
    case N_LIST:
    case N_TUPLE:
        r = mklist(I);
        r->l.tuple = n->k == N_TUPLE;
        for (size_t i = 0; i < n->n; i++) lpush(I, r, eval(I, n->items[i], sc));
        break;
    case N_DICT:
        r = mkdict(I, D_DICT);
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            jv *k = eval(I, n->items[i], sc);
            if (k->k == V_LIST && !k->l.tuple) FAIL(I, "unhashable type: 'list'");
            if (k->k == V_DICT) FAIL(I, "unhashable type: 'dict'");
            dsetv(I, r, k, eval(I, n->items[i + 1], sc));
        }
        break;
    case N_CMP: {
        jv *x = eval(I, n->a, sc);
        bool ok = true;
        for (size_t i = 0; i < n->n && ok; i++) {
            const jnode *o = n->items[i];
            jv *y = eval(I, o->a, sc);
            I->line = o->line;
            switch (o->op) {
            case OP_EQ: ok = equals(x, y); break;
            case OP_NE: ok = !equals(x, y); break;
            case OP_LT: ok = cmp_values(I, x, y, false) < 0; break;
            case OP_LE: ok = cmp_values(I, x, y, false) <= 0; break;
            case OP_GT: ok = cmp_values(I, x, y, false) > 0; break;
            case OP_GE: ok = cmp_values(I, x, y, false) >= 0; break;
            case OP_IN: ok = contains(I, y, x); break;
            case OP_NOTIN: ok = !contains(I, y, x); break;
            }
            x = y;
        }
        r = mkbool(I, ok);
        break;
    }
    case N_CONCAT: {
        obuf o = {0};
        ob_put(I, &o, "", 0);
        for (size_t i = 0; i < n->n; i++) put_str(I, &o, eval(I, n->items[i], sc));
        r = ob_str(I, &o);
        break;
    }
    default: FAIL(I, "internal: statement node in an expression");
    }
    I->depth--;
    I->line = saved_line;
    return r;
}

/* Bind a for/set target (name, ns.attr or a tuple of names) in scope sc. */
static void assign(interp *I, const jnode *t, jv *v, jscope *sc) {
    if (t->k == N_NAME) {
        dset(I, sc->vars, t->str, v);
    } else if (t->k == N_ATTR) {
        jv *ns = lookup(I, sc, t->a->str);
        if (ns->k != V_DICT || ns->d.kind != D_NAMESPACE) FAIL(I, "cannot assign attribute on non-namespace object");
        dset(I, ns, t->str, v);
    } else {
        jv *l = iter_list(I, v);
        if (l->l.n != t->n)
            FAIL(I, l->l.n > t->n ? "too many values to unpack (expected %zu)" : "not enough values to unpack (expected %zu, got %zu)",
                 t->n, l->l.n);
        for (size_t i = 0; i < t->n; i++) assign(I, t->items[i], l->l.a[i], sc);
    }
}

static jv *capture(interp *I, const jnode *body, jscope *sc) {
    obuf *saved = I->out, o = {0};
    ob_put(I, &o, "", 0);
    I->out = &o;
    exec(I, body, sc);
    I->out = saved;
    return ob_str(I, &o);
}

static jv *call_macro(interp *I, jv *f, args *a, jv *caller) {
    const jnode *m = f->fn.macro;
    if (++I->depth > 400) FAIL(I, "macro '%s' recursed too deeply", f->fn.name);
    jscope *sc = new_scope(I, f->fn.closure);
    if (a->n > m->nkw) FAIL(I, "macro '%s' takes not more than %zu argument(s)", f->fn.name, m->nkw);
    for (size_t k = 0; k < a->nkw; k++) {
        bool found = false;
        for (size_t i = 0; i < m->nkw; i++) {
            if (strcmp(m->kw[i].name, a->kwn[k])) continue;
            if (i < a->n) FAIL(I, "macro '%s' got multiple values for argument '%s'", f->fn.name, a->kwn[k]);
            found = true;
        }
        if (!found && strcmp(a->kwn[k], "caller"))
            FAIL(I, "macro '%s' takes no keyword argument '%s'", f->fn.name, a->kwn[k]);
    }
    for (size_t i = 0; i < m->nkw; i++) {
        jv *v = i < a->n ? a->pos[i] : arg(a, SIZE_MAX, m->kw[i].name);
        if (!v) {
            if (m->kw[i].val) {
                v = eval(I, m->kw[i].val, sc);
            } else {
                obuf b = {0};
                ob_puts(I, &b, "parameter '");
                ob_puts(I, &b, m->kw[i].name);
                ob_puts(I, &b, "' was not provided");
                v = mkundef(I, b.p);
            }
        }
        dset(I, sc->vars, m->kw[i].name, v);
    }
    if (caller) dset(I, sc->vars, "caller", caller);
    int saved_loopctl = I->loopctl;
    jv *r = capture(I, m->b, sc);
    I->loopctl = saved_loopctl;
    I->depth--;
    return r;
}

static void exec_for(interp *I, const jnode *n, jscope *sc) {
    jv *seq = eval(I, n->b, sc);
    I->line = n->line;
    jv *items = iter_list(I, seq);
    if (n->c) { /* for x in xs if cond: the loop sees only what passes */
        jv *kept = mklist(I);
        for (size_t i = 0; i < items->l.n; i++) {
            jscope *fs = new_scope(I, sc);
            assign(I, n->a, items->l.a[i], fs);
            if (truthy(eval(I, n->c, fs))) lpush(I, kept, items->l.a[i]);
        }
        items = kept;
    }
    size_t len = items->l.n;
    for (size_t i = 0; i < len; i++) {
        step(I);
        jscope *it = new_scope(I, sc);
        jv *loop = mkdict(I, D_LOOP);
        loop->d.loop_items = items;
        loop->d.loop_i = i;
        dset(I, it->vars, "loop", loop);
        assign(I, n->a, items->l.a[i], it);
        exec(I, n->items[0], it);
        int ctl = I->loopctl;
        I->loopctl = 0;
        if (ctl == 1) break;
    }
    if (!len && n->items[1]) exec(I, n->items[1], sc);
}

static void exec(interp *I, const jnode *n, jscope *sc) {
    step(I);
    I->line = n->line;
    switch (n->k) {
    case N_BODY:
        for (size_t i = 0; i < n->n && !I->loopctl; i++) exec(I, n->items[i], sc);
        break;
    case N_TEXT: ob_put(I, I->out, n->val->s.p, n->val->s.n); break;
    case N_OUT: put_str(I, I->out, eval(I, n->a, sc)); break;
    case N_IF:
        if (truthy(eval(I, n->a, sc)))
            exec(I, n->b, sc);
        else if (n->c)
            exec(I, n->c, sc);
        break;
    case N_FOR: exec_for(I, n, sc); break;
    case N_SET: {
        jv *v = eval(I, n->b, sc);
        I->line = n->line;
        assign(I, n->a, v, sc);
        break;
    }
    case N_SETBLOCK: {
        jv *v = capture(I, n->b, sc);
        if (n->c) {
            jscope *fs = new_scope(I, sc);
            dset(I, fs->vars, JINJA_BLOCK_VALUE, v);
            v = eval(I, n->c, fs);
        }
        assign(I, n->a, v, sc);
        break;
    }
    case N_FILTERBLOCK: {
        jv *v = capture(I, n->b, sc);
        jscope *fs = new_scope(I, sc);
        dset(I, fs->vars, JINJA_BLOCK_VALUE, v);
        put_str(I, I->out, eval(I, n->c, fs));
        break;
    }
    case N_MACRO: {
        jv *f = mk(I, V_FUNC);
        f->fn.name = n->str;
        f->fn.macro = n;
        f->fn.closure = sc;
        dset(I, sc->vars, n->str, f);
        break;
    }
    case N_CALLBLOCK: {
        jv *caller = mk(I, V_FUNC);
        caller->fn.name = "caller";
        caller->fn.macro = n;
        caller->fn.closure = sc;
        jv *f = eval(I, n->a->a, sc);
        args a = {0};
        eval_args(I, n->a, sc, &a);
        I->line = n->line;
        if (f->k != V_FUNC || !f->fn.macro) FAIL(I, "a call block must call a macro");
        put_str(I, I->out, call_macro(I, f, &a, caller));
        break;
    }
    case N_BREAK:
    case N_CONTINUE:
        I->loopctl = n->k == N_BREAK ? 1 : 2;
        break;
    default: FAIL(I, "internal: expression node as a statement");
    }
}

/* ------------------------------------------------------------ public API */

struct tr_template {
    jtemplate t;
};

tr_status tr_template_parse(const char *src, size_t len, tr_template **out, tr_error *err) {
    *out = NULL;
    tr_template *t = calloc(1, sizeof *t);
    if (!t) return tr_err_set(err, TR_ERR_NOMEM, "template: out of memory");
    t->t.ar.limit = (size_t)64 << 20;
    if (!jinja_parse(&t->t, src, len, err->msg)) {
        ar_free(&t->t.ar);
        free(t);
        return TR_ERR_FORMAT;
    }
    *out = t;
    return TR_OK;
}

void tr_template_free(tr_template *t) {
    if (!t) return;
    ar_free(&t->t.ar);
    free(t);
}

static const char *const builtins[] = {"range", "namespace", "dict", "raise_exception", "strftime_now", NULL};

tr_status tr_template_render(const tr_template *t, const char *vars_json, const tr_template_opts *opts, char **out,
                             tr_error *err) {
    *out = NULL;
    tr_template_opts o = opts ? *opts : (tr_template_opts){0};
    interp *volatile I = calloc(1, sizeof *I);
    if (!I) return tr_err_set(err, TR_ERR_NOMEM, "template: out of memory");
    I->errmsg = err->msg;
    I->ar.fail = &I->jb;
    I->ar.errmsg = err->msg;
    I->ar.limit = o.max_memory ? o.max_memory : (size_t)128 << 20;
    I->max_steps = o.max_steps ? o.max_steps : 5000000;
    I->max_out = o.max_output ? o.max_output : (size_t)16 << 20;
    I->now = o.now ? (time_t)o.now : time(NULL);
    I->now_utc = o.now != 0;
    json_t *volatile vars = NULL;
    volatile tr_status st = TR_OK;
    if (setjmp(I->jb)) {
        st = TR_ERR_FORMAT;
        goto done;
    }
    {
        json_error_t je;
        vars = json_loads(vars_json ? vars_json : "{}", JSON_ALLOW_NUL, &je);
        if (!vars || !json_is_object(vars)) {
            snprintf(err->msg, sizeof err->msg, "template variables: %s",
                     vars ? "must be a JSON object" : je.text);
            st = TR_ERR_ARG;
            goto done;
        }
        I->globals = new_scope(I, NULL);
        for (size_t i = 0; builtins[i]; i++) {
            jv *f = mk(I, V_FUNC);
            f->fn.name = builtins[i];
            dset(I, I->globals->vars, builtins[i], f);
        }
        jscope *top = new_scope(I, I->globals);
        const char *k;
        json_t *x;
        json_object_foreach(vars, k, x) dset(I, top->vars, k, from_json(I, x));
        obuf res = {0};
        ob_put(I, &res, "", 0);
        I->out = &res;
        exec(I, t->t.root, top);
        *out = malloc(res.n + 1);
        if (!*out) {
            st = tr_err_set(err, TR_ERR_NOMEM, "template: out of memory for the output");
            goto done;
        }
        if (res.n) memcpy(*out, res.p, res.n);
        (*out)[res.n] = 0;
        err->msg[0] = 0;
    }
done:
    json_decref(vars);
    ar_free(&I->ar);
    free(I);
    return st;
}
