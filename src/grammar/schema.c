/* JSON schema -> GBNF (docs/grammar.md). Each schema becomes a rule; the
 * output is compact JSON with a bounded amount of whitespace between tokens
 * (`ws`: nothing, a space, or a newline and up to 12 spaces or tabs; none
 * after the value, where only the end of generation may follow), so a model
 * cannot pad forever. Properties come in the order the schema lists
 * them, each optional one may be left out; extra properties are not
 * generated (a subset of what the schema allows, always valid against it).
 *
 * Supported: type (one or a list), properties, required,
 * additionalProperties (false, true, or a schema when there are no
 * properties), items, minItems, maxItems, enum, const, minLength,
 * maxLength, pattern (a regular-expression subset: literals, ., classes,
 * \d \w \s, groups, |, * + ? {m,n}, ^ $), minimum / maximum /
 * exclusiveMinimum / exclusiveMaximum for integers, anyOf, oneOf (when its
 * branches cannot overlap: distinct types or distinct constants), allOf of
 * one schema, $ref to #/$defs/... or #/definitions/... (recursion allowed).
 * Annotations (title, description, default, examples, ...) are ignored.
 * Anything else is refused, naming the keyword: a schema is never enforced
 * only in part. */
#include "grammar/grammar.h"

#include "core/util.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_NEST = 48, MAX_RULES_OUT = 20000, MAX_COUNT = 1000 };

typedef struct sbuf {
    char *s;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_fmt(sbuf *b, const char *fmt, ...) TR_PRINTF(2, 3);
static void sb_fmt(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

typedef struct conv {
    sbuf out;          /* the rules so far */
    int n_rules;
    json_t *root;      /* for $ref */
    json_t *refs;      /* "#/$defs/x" -> rule name */
    tr_error *err;
    const char *prefix; /* of the rules' names ("" or a word) */
    tr_status status;
    bool failed;
    int depth;
} conv;

static bool refuse(conv *c, tr_status st, const char *fmt, ...) TR_PRINTF(3, 4);
static bool refuse(conv *c, tr_status st, const char *fmt, ...) {
    if (c->failed) return false;
    c->failed = true;
    c->status = st;
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    tr_err_set(c->err, st, "json schema: %s", m);
    return false;
}

/* A new rule name into name[16]. */
static bool new_name(conv *c, char *name) {
    if (c->n_rules >= MAX_RULES_OUT) return refuse(c, TR_ERR_UNSUPPORTED, "the schema is too large (more than 20000 rules)");
    snprintf(name, 40, "%s%sr%d", c->prefix, *c->prefix ? "-" : "", ++c->n_rules);
    return true;
}

static void put_rule(conv *c, const char *name, const char *body) {
    sb_str(&c->out, name);
    sb_str(&c->out, " ::= ");
    sb_str(&c->out, body);
    sb_str(&c->out, "\n");
}

/* s as a GBNF string literal. */
static void lit(sbuf *b, const char *s, size_t n) {
    sb_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            sb_put(b, e, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            sb_fmt(b, "\\x%02X", ch);
        } else {
            sb_put(b, (const char *)&ch, 1);
        }
    }
    sb_str(b, "\"");
}

/* A JSON value, serialized compactly, as a literal. */
static bool lit_json(conv *c, sbuf *b, const json_t *v) {
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
    if (!s) return refuse(c, TR_ERR_NOMEM, "out of memory");
    lit(b, s, strlen(s));
    free(s);
    return true;
}

static const char PRIMITIVES[] =
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,12}\n"
    "jchar ::= [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
    "jstring ::= \"\\\"\" jchar* \"\\\"\"\n"
    "jint ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
    "jnumber ::= jint (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?\n"
    "jbool ::= \"true\" | \"false\"\n"
    "jnull ::= \"null\"\n"
    "jvalue ::= jobject | jarray | jstring | jnumber | jbool | jnull\n"
    "jobject ::= \"{\" ws (jstring ws \":\" ws jvalue ws (\",\" ws jstring ws \":\" ws jvalue ws)*)? \"}\"\n"
    "jarray ::= \"[\" ws (jvalue ws (\",\" ws jvalue ws)*)? \"]\"\n";

static bool schema(conv *c, json_t *s, char *name);

static bool is_annotation(const char *k) {
    static const char *const ann[] = {"title", "description", "$schema", "$id", "default", "examples", "$comment",
                                      "deprecated", "readOnly", "writeOnly", "$defs", "definitions", "strict", "nullable"};
    for (size_t i = 0; i < sizeof ann / sizeof ann[0]; i++)
        if (!strcmp(k, ann[i])) return true;
    return false;
}

static bool get_count(conv *c, json_t *s, const char *key, long long *out, long long dflt) {
    json_t *v = json_object_get(s, key);
    *out = dflt;
    if (!v) return true;
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return refuse(c, TR_ERR_FORMAT, "'%s' must be a non-negative integer", key);
    if (json_integer_value(v) > MAX_COUNT && dflt >= 0 && strncmp(key, "max", 3))
        return refuse(c, TR_ERR_UNSUPPORTED, "'%s' above %d is not supported", key, MAX_COUNT);
    *out = json_integer_value(v);
    return true;
}

/* "x{min,max}" for a repeated item, max < 0: unbounded. */
static void repeat(sbuf *b, const char *item, long long min, long long max) {
    sb_str(b, item);
    if (max < 0) sb_fmt(b, "{%lld,}", min);
    else sb_fmt(b, "{%lld,%lld}", min, max);
}

/* ---- integers in a range: digit patterns (as a regular-expression range) */

static void digits_same_len(sbuf *b, const char *lo, const char *hi, size_t n) {
    /* lo, hi: n digits each, lo <= hi */
    if (n == 0) return;
    if (n == 1) {
        sb_fmt(b, "[%c-%c]", lo[0], hi[0]);
        return;
    }
    bool lo_zeros = true, hi_nines = true;
    for (size_t i = 1; i < n; i++) lo_zeros &= lo[i] == '0', hi_nines &= hi[i] == '9';
    if (lo_zeros && hi_nines) { /* every tail: one class, no splitting */
        sb_fmt(b, "[%c-%c] [0-9]{%zu}", lo[0], hi[0], n - 1);
        return;
    }
    if (lo[0] == hi[0]) {
        sb_fmt(b, "\"%c\" ", lo[0]);
        digits_same_len(b, lo + 1, hi + 1, n - 1);
        return;
    }
    char nines[24], zeros[24];
    memset(nines, '9', n - 1);
    memset(zeros, '0', n - 1);
    sb_str(b, "(");
    sb_fmt(b, "\"%c\" ", lo[0]);
    digits_same_len(b, lo + 1, nines, n - 1);
    if (hi[0] - lo[0] > 1) sb_fmt(b, " | [%c-%c] [0-9]{%zu}", lo[0] + 1, hi[0] - 1, n - 1);
    sb_fmt(b, " | \"%c\" ", hi[0]);
    digits_same_len(b, zeros, hi + 1, n - 1);
    sb_str(b, ")");
}

/* Non-negative integers in [lo, hi], written without leading zeros. */
static void uint_range(sbuf *b, unsigned long long lo, unsigned long long hi) {
    bool first = true;
    unsigned long long p10 = 1;
    for (int d = 1; d <= 20 && lo <= hi; d++) {
        const unsigned long long dmin = d == 1 ? 0 : p10, dmax = d >= 20 ? ~0ull : p10 * 10 - 1;
        if (hi >= dmin && lo <= dmax) {
            unsigned long long a = lo > dmin ? lo : dmin, z = hi < dmax ? hi : dmax;
            char sa[24], sz[24];
            snprintf(sa, sizeof sa, "%llu", a);
            snprintf(sz, sizeof sz, "%llu", z);
            if (!first) sb_str(b, " | ");
            first = false;
            sb_str(b, "(");
            digits_same_len(b, sa, sz, strlen(sa));
            sb_str(b, ")");
        }
        if (d < 20) p10 *= 10;
    }
}

enum { INT_DIGITS = 16 }; /* an unbounded integer has at most 16 digits, as jint */

static bool integer_range(conv *c, json_t *s, sbuf *b) {
    const long long big = 9999999999999999ll; /* 16 digits */
    long long lo = -big, hi = big;
    const char *keys[4] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    for (int k = 0; k < 4; k++) {
        json_t *v = json_object_get(s, keys[k]);
        if (!v) continue;
        if (!json_is_number(v)) return refuse(c, TR_ERR_FORMAT, "'%s' must be a number", keys[k]);
        double x = json_number_value(v);
        if (!(fabs(x) <= (double)big)) return refuse(c, TR_ERR_UNSUPPORTED, "'%s' beyond 16 digits", keys[k]);
        long long bound;
        if (k == 0) bound = (long long)ceil(x), lo = bound > lo ? bound : lo;
        else if (k == 1) bound = (long long)floor(x) + 1, lo = bound > lo ? bound : lo;
        else if (k == 2) bound = (long long)floor(x), hi = bound < hi ? bound : hi;
        else bound = (long long)ceil(x) - 1, hi = bound < hi ? bound : hi;
    }
    if (lo > hi) return refuse(c, TR_ERR_FORMAT, "no integer satisfies minimum/maximum");
    sb_str(b, "(");
    bool any = false;
    if (lo < 0) { /* negatives: "-" then |x| in [max(1, -hi), -lo] */
        unsigned long long alo = hi < 0 ? (unsigned long long)(-hi) : 1, ahi = (unsigned long long)(-lo);
        sb_str(b, "\"-\" (");
        uint_range(b, alo, ahi);
        sb_str(b, ")");
        any = true;
    }
    if (hi >= 0) {
        if (any) sb_str(b, " | ");
        uint_range(b, lo > 0 ? (unsigned long long)lo : 0, (unsigned long long)hi);
    }
    sb_str(b, ")");
    return true;
}

/* ---- regular expressions (pattern) -> GBNF over JSON string characters */

typedef struct rx {
    const char *p, *end;
    conv *c;
    int depth;
} rx;

static bool rx_alt(rx *r, sbuf *b);

/* One escaped or plain character of a class or literal, as a GBNF class item. */
static bool rx_class_char(rx *r, sbuf *b, uint32_t ch) {
    (void)r;
    if (ch == '"' || ch == '\\' || ch < 0x20 || ch == 0x7f || ch == ']' || ch == '[' || ch == '-' || ch == '^')
        sb_fmt(b, "\\x%02X", ch);
    else {
        char u[4];
        size_t n = 0;
        if (ch < 0x80) u[n++] = (char)ch;
        else if (ch < 0x800) u[n++] = (char)(0xc0 | ch >> 6), u[n++] = (char)(0x80 | (ch & 0x3f));
        else if (ch < 0x10000)
            u[n++] = (char)(0xe0 | ch >> 12), u[n++] = (char)(0x80 | ((ch >> 6) & 0x3f)), u[n++] = (char)(0x80 | (ch & 0x3f));
        else
            u[n++] = (char)(0xf0 | ch >> 18), u[n++] = (char)(0x80 | ((ch >> 12) & 0x3f)),
            u[n++] = (char)(0x80 | ((ch >> 6) & 0x3f)), u[n++] = (char)(0x80 | (ch & 0x3f));
        sb_put(b, u, n);
    }
    return true;
}

static bool rx_utf8(rx *r, uint32_t *cp) {
    const unsigned char *s = (const unsigned char *)r->p;
    size_t left = (size_t)(r->end - r->p);
    int n = s[0] < 0x80 ? 1 : (s[0] >> 5) == 6 ? 2 : (s[0] >> 4) == 14 ? 3 : (s[0] >> 3) == 30 ? 4 : 0;
    if (!n || (size_t)n > left) return refuse(r->c, TR_ERR_FORMAT, "invalid UTF-8 in 'pattern'");
    uint32_t v = n == 1 ? s[0] : n == 2 ? s[0] & 0x1f : n == 3 ? s[0] & 0x0f : s[0] & 7;
    for (int i = 1; i < n; i++) v = v << 6 | (s[i] & 0x3f);
    r->p += n;
    *cp = v;
    return true;
}

/* A character that needs JSON escaping cannot be written raw inside the
 * string: patterns that match it are refused. */
static bool rx_plain_ok(rx *r, uint32_t ch) {
    if (ch == '"' || ch == '\\' || ch < 0x20)
        return refuse(r->c, TR_ERR_UNSUPPORTED,
                      "'pattern' matches a character that JSON must escape (quote, backslash or control)");
    return true;
}

static bool rx_atom(rx *r, sbuf *b) {
    char ch = *r->p;
    if (ch == '(') {
        if (++r->depth > 32) return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' nests groups too deep");
        r->p++;
        if (r->end - r->p >= 2 && r->p[0] == '?' && r->p[1] == ':') r->p += 2;
        else if (r->p < r->end && *r->p == '?')
            return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' uses a lookaround or named group");
        sb_str(b, "(");
        if (!rx_alt(r, b)) return false;
        if (r->p >= r->end || *r->p != ')') return refuse(r->c, TR_ERR_FORMAT, "'pattern' has an unclosed '('");
        r->p++;
        r->depth--;
        sb_str(b, ")");
        return true;
    }
    if (ch == '.') {
        r->p++;
        sb_str(b, "[^\"\\\\\\x7F\\x00-\\x1F]");
        return true;
    }
    if (ch == '[') {
        r->p++;
        bool neg = r->p < r->end && *r->p == '^';
        if (neg) r->p++;
        sb_str(b, neg ? "[^\"\\\\\\x7F\\x00-\\x1F" : "[");
        bool first = true;
        while (r->p < r->end && (*r->p != ']' || first)) {
            first = false;
            uint32_t cp;
            if (*r->p == '\\') {
                r->p++;
                if (r->p >= r->end) return refuse(r->c, TR_ERR_FORMAT, "'pattern' ends in '\\'");
                char e = *r->p++;
                if (e == 'd') { sb_str(b, "0-9"); continue; }
                if (e == 'w') { sb_str(b, "a-zA-Z0-9_"); continue; }
                if (e == 's') { if (neg) sb_str(b, " \\t\\n\\r"); else return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' class with \\s (JSON escapes tab and newline)"); continue; }
                if (e == 'D' || e == 'W' || e == 'S' || e == 'b' || e == 'B' || (e >= '0' && e <= '9'))
                    return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' uses \\%c inside a class", e);
                cp = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : (uint32_t)(unsigned char)e;
            } else if (!rx_utf8(r, &cp)) {
                return false;
            }
            if (!neg && !rx_plain_ok(r, cp)) return false;
            rx_class_char(r, b, cp);
            if (r->p + 1 < r->end && *r->p == '-' && r->p[1] != ']') {
                r->p++;
                uint32_t hi;
                if (*r->p == '\\') {
                    r->p++;
                    if (r->p >= r->end) return refuse(r->c, TR_ERR_FORMAT, "'pattern' ends in '\\'");
                    hi = (unsigned char)*r->p++;
                } else if (!rx_utf8(r, &hi)) {
                    return false;
                }
                if (hi < cp) return refuse(r->c, TR_ERR_FORMAT, "'pattern' has a range whose end is below its start");
                if (!neg && ((cp <= '"' && hi >= '"') || (cp <= '\\' && hi >= '\\')))
                    return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' class range includes a quote or backslash");
                sb_str(b, "-");
                rx_class_char(r, b, hi);
            }
        }
        if (r->p >= r->end) return refuse(r->c, TR_ERR_FORMAT, "'pattern' has an unclosed '['");
        r->p++;
        sb_str(b, "]");
        return true;
    }
    if (ch == '\\') {
        r->p++;
        if (r->p >= r->end) return refuse(r->c, TR_ERR_FORMAT, "'pattern' ends in '\\'");
        char e = *r->p++;
        if (e == 'd') sb_str(b, "[0-9]");
        else if (e == 'w') sb_str(b, "[a-zA-Z0-9_]");
        else if (e == 'D') sb_str(b, "[^0-9\"\\\\\\x7F\\x00-\\x1F]");
        else if (e == 'W') sb_str(b, "[^a-zA-Z0-9_\"\\\\\\x7F\\x00-\\x1F]");
        else if (e == 's') sb_str(b, "\" \"");
        else if (e == 'S') sb_str(b, "[^ \"\\\\\\x7F\\x00-\\x1F]");
        else if (strchr(".^$|()[]{}*+?/-", e)) {
            sb_str(b, "[");
            rx_class_char(r, b, (unsigned char)e);
            sb_str(b, "]");
        } else {
            return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' uses the escape \\%c", e);
        }
        return true;
    }
    uint32_t cp;
    if (!rx_utf8(r, &cp) || !rx_plain_ok(r, cp)) return false;
    sb_str(b, "[");
    rx_class_char(r, b, cp);
    sb_str(b, "]");
    return true;
}

static bool rx_seq(rx *r, sbuf *b) {
    while (r->p < r->end && *r->p != '|' && *r->p != ')' && !r->c->failed) {
        if (*r->p == '^' || *r->p == '$')
            return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' has ^ or $ other than at its ends");
        if (strchr("*+?{", *r->p)) return refuse(r->c, TR_ERR_FORMAT, "'pattern' has a quantifier with nothing before it");
        if (!rx_atom(r, b)) return false;
        if (r->p < r->end && strchr("*+?{", *r->p)) {
            char q = *r->p++;
            if (q == '{') {
                long long m = 0, n = -1;
                char *e;
                m = strtoll(r->p, &e, 10);
                if (e == r->p || m < 0 || m > MAX_COUNT) return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' has a {m,n} count that is not a number up to 1000");
                r->p = e;
                n = m;
                if (r->p < r->end && *r->p == ',') {
                    r->p++;
                    n = -1;
                    if (r->p < r->end && *r->p != '}') {
                        n = strtoll(r->p, &e, 10);
                        if (e == r->p || n < m || n > MAX_COUNT) return refuse(r->c, TR_ERR_UNSUPPORTED, "'pattern' has a {m,n} count that is not a number up to 1000");
                        r->p = e;
                    }
                }
                if (r->p >= r->end || *r->p != '}') return refuse(r->c, TR_ERR_FORMAT, "'pattern' has an unclosed '{'");
                r->p++;
                if (n < 0) sb_fmt(b, "{%lld,}", m);
                else sb_fmt(b, "{%lld,%lld}", m, n);
            } else {
                sb_put(b, &q, 1);
            }
            if (r->p < r->end && (*r->p == '?' || *r->p == '+')) r->p++; /* lazy / possessive: same language */
        }
        sb_str(b, " ");
    }
    return !r->c->failed;
}

static bool rx_alt(rx *r, sbuf *b) {
    if (!rx_seq(r, b)) return false;
    while (r->p < r->end && *r->p == '|') {
        r->p++;
        sb_str(b, " | ");
        if (!rx_seq(r, b)) return false;
    }
    return true;
}

static bool pattern(conv *c, const char *pat, sbuf *b) {
    size_t n = strlen(pat);
    bool start = n && pat[0] == '^', end = n > start && pat[n - 1] == '$' && (n < 2 || pat[n - 2] != '\\');
    rx r = {.p = pat + start, .end = pat + n - end, .c = c};
    sb_str(b, "\"\\\"\" ");
    if (!start) sb_str(b, "jchar* ");
    sb_str(b, "(");
    if (!rx_alt(&r, b)) return false;
    if (r.p != r.end) return refuse(c, TR_ERR_FORMAT, "'pattern' has an unmatched ')'");
    sb_str(b, ")");
    if (!end) sb_str(b, " jchar*");
    sb_str(b, " \"\\\"\"");
    return true;
}

/* ---- schemas */

static bool check_keys(conv *c, json_t *s, const char *const *allowed, size_t n_allowed, const char *what) {
    const char *k;
    json_t *v;
    json_object_foreach(s, k, v) {
        if (is_annotation(k)) continue;
        bool ok = false;
        for (size_t i = 0; i < n_allowed; i++)
            if (!strcmp(k, allowed[i])) ok = true;
        if (!ok) return refuse(c, TR_ERR_UNSUPPORTED, "keyword '%s' is not supported%s%s", k, what ? " for " : "", what ? what : "");
    }
    return true;
}

static bool object_schema(conv *c, json_t *s, sbuf *b) {
    static const char *const keys[] = {"type", "properties", "required", "additionalProperties"};
    if (!check_keys(c, s, keys, 4, "objects")) return false;
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
           *add = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) return refuse(c, TR_ERR_FORMAT, "'properties' must be an object");
    if (req && !json_is_array(req)) return refuse(c, TR_ERR_FORMAT, "'required' must be an array");
    if (add && !json_is_boolean(add) && !json_is_object(add))
        return refuse(c, TR_ERR_FORMAT, "'additionalProperties' must be a boolean or a schema");
    size_t i;
    json_t *r;
    json_array_foreach(req, i, r) {
        if (!json_is_string(r)) return refuse(c, TR_ERR_FORMAT, "'required' must list strings");
        if (!props || !json_object_get(props, json_string_value(r)))
            return refuse(c, TR_ERR_UNSUPPORTED, "required property '%s' is not in 'properties'", json_string_value(r));
    }
    const size_t np = props ? json_object_size(props) : 0;
    if (np == 0) {
        if (add && json_is_object(add)) { /* a map: string -> schema */
            char v[40];
            if (!schema(c, add, v)) return false;
            sb_fmt(b, "\"{\" ws (jstring ws \":\" ws %s ws (\",\" ws jstring ws \":\" ws %s ws)*)? \"}\"", v, v);
        } else if (add && json_is_false(add)) {
            sb_str(b, "\"{\" ws \"}\"");
        } else {
            sb_str(b, "jobject");
        }
        return true;
    }
    /* Properties in order. first_i: nothing written yet, properties i..;
     * after_i: something written, properties i.. (each preceded by ","). */
    char (*kv)[40] = calloc(np, sizeof *kv), (*first)[40] = calloc(np + 1, sizeof *first),
         (*after)[40] = calloc(np + 1, sizeof *after);
    bool *opt = calloc(np, sizeof *opt);
    bool ok = kv && first && after && opt;
    if (!ok) refuse(c, TR_ERR_NOMEM, "out of memory");
    const char *k;
    json_t *v;
    size_t j = 0;
    json_object_foreach(props, k, v) {
        if (!ok) break;
        char vn[40];
        ok = schema(c, v, vn) && new_name(c, kv[j]);
        if (!ok) break;
        sbuf body = {0};
        json_t *key = json_string(k);
        ok = key && lit_json(c, &body, key);
        json_decref(key);
        if (!ok) break;
        sb_fmt(&body, " ws \":\" ws %s ws", vn);
        put_rule(c, kv[j], body.oom ? "" : body.s);
        free(body.s);
        opt[j] = true;
        json_array_foreach(req, i, r) if (!strcmp(json_string_value(r), k)) opt[j] = false;
        j++;
    }
    if (ok) {
        ok = new_name(c, first[np]) && new_name(c, after[np]);
        if (ok) put_rule(c, first[np], "\"\""), put_rule(c, after[np], "\"\"");
        for (size_t q = np; ok && q-- > 0;) {
            ok = new_name(c, first[q]) && new_name(c, after[q]);
            if (!ok) break;
            sbuf fb = {0}, ab = {0};
            if (opt[q]) {
                sb_fmt(&fb, "%s %s | %s", kv[q], after[q + 1], first[q + 1]);
                sb_fmt(&ab, "(\",\" ws %s)? %s", kv[q], after[q + 1]);
            } else {
                sb_fmt(&fb, "%s %s", kv[q], after[q + 1]);
                sb_fmt(&ab, "\",\" ws %s %s", kv[q], after[q + 1]);
            }
            put_rule(c, first[q], fb.s ? fb.s : "\"\"");
            put_rule(c, after[q], ab.s ? ab.s : "\"\"");
            if (fb.oom || ab.oom) ok = refuse(c, TR_ERR_NOMEM, "out of memory");
            free(fb.s);
            free(ab.s);
        }
        if (ok) sb_fmt(b, "\"{\" ws %s \"}\"", first[0]);
    }
    free(kv), free(first), free(after), free(opt);
    return ok && !c->failed;
}

static bool array_schema(conv *c, json_t *s, sbuf *b) {
    static const char *const keys[] = {"type", "items", "minItems", "maxItems"};
    if (!check_keys(c, s, keys, 4, "arrays")) return false;
    json_t *items = json_object_get(s, "items");
    if (items && !json_is_object(items) && !json_is_boolean(items))
        return refuse(c, TR_ERR_UNSUPPORTED, "'items' must be a schema (tuple forms are not supported)");
    long long mn, mx;
    if (!get_count(c, s, "minItems", &mn, 0) || !get_count(c, s, "maxItems", &mx, -1)) return false;
    if (mx >= 0 && mx < mn) return refuse(c, TR_ERR_FORMAT, "maxItems is below minItems");
    if (mx > MAX_COUNT) return refuse(c, TR_ERR_UNSUPPORTED, "'maxItems' above %d is not supported", MAX_COUNT);
    char it[40];
    if (items && json_is_false(items)) {
        if (mn > 0) return refuse(c, TR_ERR_FORMAT, "'items: false' with minItems > 0");
        sb_str(b, "\"[\" ws \"]\"");
        return true;
    }
    if (items && json_is_object(items)) {
        if (!schema(c, items, it)) return false;
    } else {
        snprintf(it, sizeof it, "jvalue");
    }
    char more[64];
    snprintf(more, sizeof more, "(\",\" ws %s ws)", it);
    if (mx == 0) {
        sb_str(b, "\"[\" ws \"]\"");
        return true;
    }
    sb_fmt(b, "\"[\" ws (%s ws ", it);
    repeat(b, more, mn > 0 ? mn - 1 : 0, mx < 0 ? -1 : mx - 1);
    sb_str(b, mn > 0 ? ") \"]\"" : ")? \"]\"");
    return true;
}

static bool string_schema(conv *c, json_t *s, sbuf *b) {
    static const char *const keys[] = {"type", "minLength", "maxLength", "pattern"};
    if (!check_keys(c, s, keys, 4, "strings")) return false;
    json_t *pat = json_object_get(s, "pattern");
    long long mn, mx;
    if (!get_count(c, s, "minLength", &mn, 0) || !get_count(c, s, "maxLength", &mx, -1)) return false;
    if (mx > MAX_COUNT) return refuse(c, TR_ERR_UNSUPPORTED, "'maxLength' above %d is not supported", MAX_COUNT);
    if (mx >= 0 && mx < mn) return refuse(c, TR_ERR_FORMAT, "maxLength is below minLength");
    if (pat) {
        if (!json_is_string(pat)) return refuse(c, TR_ERR_FORMAT, "'pattern' must be a string");
        if (mn > 0 || mx >= 0) return refuse(c, TR_ERR_UNSUPPORTED, "'pattern' together with minLength/maxLength");
        return pattern(c, json_string_value(pat), b);
    }
    sb_str(b, "\"\\\"\" ");
    repeat(b, "jchar", mn, mx);
    sb_str(b, " \"\\\"\"");
    return true;
}

static bool number_schema(conv *c, json_t *s, const char *type, sbuf *b) {
    static const char *const ikeys[] = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    static const char *const nkeys[] = {"type"};
    const bool integer = !strcmp(type, "integer");
    if (!check_keys(c, s, integer ? ikeys : nkeys, integer ? 5 : 1, integer ? "integers" : "numbers")) return false;
    if (!integer) {
        sb_str(b, "jnumber");
        return true;
    }
    for (int k = 1; k < 5; k++)
        if (json_object_get(s, ikeys[k])) return integer_range(c, s, b);
    sb_str(b, "jint");
    return true;
}

static bool typed(conv *c, json_t *s, const char *type, sbuf *b) {
    if (!strcmp(type, "object")) return object_schema(c, s, b);
    if (!strcmp(type, "array")) return array_schema(c, s, b);
    if (!strcmp(type, "string")) return string_schema(c, s, b);
    if (!strcmp(type, "integer") || !strcmp(type, "number")) return number_schema(c, s, type, b);
    if (!strcmp(type, "boolean") || !strcmp(type, "null")) {
        static const char *const keys[] = {"type"};
        if (!check_keys(c, s, keys, 1, type)) return false;
        sb_str(b, type[0] == 'b' ? "jbool" : "jnull");
        return true;
    }
    return refuse(c, TR_ERR_FORMAT, "unknown type '%s'", type);
}

/* The "family" of a oneOf branch, for the no-overlap check. */
static const char *family(json_t *s) {
    json_t *t = json_object_get(s, "type");
    if (!json_is_string(t)) return NULL;
    const char *n = json_string_value(t);
    return !strcmp(n, "integer") ? "number" : n;
}

static bool alternatives(conv *c, json_t *list, const char *kw, sbuf *b) {
    if (!json_is_array(list) || json_array_size(list) == 0)
        return refuse(c, TR_ERR_FORMAT, "'%s' must be a non-empty array of schemas", kw);
    if (!strcmp(kw, "oneOf")) { /* exactly one must match: the branches must not overlap */
        size_t i, j;
        json_t *x, *y;
        json_array_foreach(list, i, x) json_array_foreach(list, j, y) {
            if (j <= i) continue;
            json_t *cx = json_object_get(x, "const"), *cy = json_object_get(y, "const");
            const char *fx = family(x), *fy = family(y);
            bool distinct = (cx && cy && !json_equal(cx, cy) && json_object_size(x) == 1u + !!json_object_get(x, "description") && json_object_size(y) == 1u + !!json_object_get(y, "description")) ||
                            (fx && fy && strcmp(fx, fy));
            if (!distinct)
                return refuse(c, TR_ERR_UNSUPPORTED,
                              "'oneOf' whose branches may overlap (only branches of distinct types or distinct "
                              "constants are supported; use anyOf)");
        }
    }
    size_t i;
    json_t *x;
    sb_str(b, "(");
    json_array_foreach(list, i, x) {
        char n[40];
        if (!schema(c, x, n)) return false;
        if (i) sb_str(b, " | ");
        sb_str(b, n);
    }
    sb_str(b, ")");
    return true;
}

static bool ref_schema(conv *c, json_t *s, char *name) {
    if (json_object_size(s) != 1u + !!json_object_get(s, "description") + !!json_object_get(s, "title"))
        return refuse(c, TR_ERR_UNSUPPORTED, "keywords beside '$ref' are not supported");
    json_t *r = json_object_get(s, "$ref");
    if (!json_is_string(r)) return refuse(c, TR_ERR_FORMAT, "'$ref' must be a string");
    const char *ref = json_string_value(r);
    json_t *known = json_object_get(c->refs, ref);
    if (known) {
        snprintf(name, 40, "%s", json_string_value(known));
        return true;
    }
    const char *defs = NULL, *key = NULL;
    if (!strncmp(ref, "#/$defs/", 8)) defs = "$defs", key = ref + 8;
    else if (!strncmp(ref, "#/definitions/", 14)) defs = "definitions", key = ref + 14;
    else return refuse(c, TR_ERR_UNSUPPORTED, "'$ref' other than #/$defs/NAME or #/definitions/NAME: '%s'", ref);
    json_t *target = json_object_get(json_object_get(c->root, defs), key);
    if (!target) return refuse(c, TR_ERR_FORMAT, "'$ref' to '%s', which is not defined", ref);
    /* The rule's name is known before its body: recursive references work. */
    char rn[40];
    if (!new_name(c, rn)) return false;
    json_object_set_new(c->refs, ref, json_string(rn));
    char body[40];
    if (!schema(c, target, body)) return false;
    put_rule(c, rn, body);
    snprintf(name, 40, "%s", rn);
    return true;
}

/* The rule for schema s, its name into name[16]. */
static bool schema(conv *c, json_t *s, char *name) {
    if (c->failed) return false;
    if (++c->depth > MAX_NEST) return refuse(c, TR_ERR_UNSUPPORTED, "the schema nests deeper than %d", MAX_NEST);
    bool ok = false;
    sbuf b = {0};
    if (json_is_true(s)) {
        snprintf(name, 40, "jvalue");
        c->depth--;
        return true;
    }
    if (!json_is_object(s)) {
        c->depth--;
        return refuse(c, TR_ERR_FORMAT, "a schema must be an object or a boolean");
    }
    json_t *type = json_object_get(s, "type");
    if (json_object_get(s, "$ref")) {
        ok = ref_schema(c, s, name);
        c->depth--;
        return ok;
    }
    json_t *en = json_object_get(s, "enum"), *cn = json_object_get(s, "const");
    json_t *any = json_object_get(s, "anyOf"), *one = json_object_get(s, "oneOf"), *all = json_object_get(s, "allOf");
    if (en || cn) {
        static const char *const keys[] = {"enum", "const", "type"};
        if (!check_keys(c, s, keys, 3, "enum/const")) goto out;
        if (en && (!json_is_array(en) || !json_array_size(en)))
            return refuse(c, TR_ERR_FORMAT, "'enum' must be a non-empty array");
        sb_str(&b, "(");
        if (cn) lit_json(c, &b, cn);
        size_t i;
        json_t *x;
        json_array_foreach(en, i, x) {
            if (cn || i) sb_str(&b, " | ");
            lit_json(c, &b, x);
        }
        sb_str(&b, ")");
        if (cn && en) { /* both: the const must be in the enum; then the const alone */
            bool in = false;
            json_array_foreach(en, i, x) in |= json_equal(x, cn);
            if (!in) {
                refuse(c, TR_ERR_FORMAT, "'const' is not one of 'enum'");
                goto out;
            }
            b.n = 0;
            lit_json(c, &b, cn);
        }
        if (type) { /* the values must be of the type: otherwise nothing is valid */
            size_t k;
            json_t *x2;
            json_t *vals = cn ? json_pack("[O]", cn) : json_incref(en);
            json_array_foreach(vals, k, x2) {
                const char *t = json_string_value(type);
                bool fits = !t || (!strcmp(t, "string") && json_is_string(x2)) ||
                            (!strcmp(t, "integer") && json_is_integer(x2)) || (!strcmp(t, "number") && json_is_number(x2)) ||
                            (!strcmp(t, "boolean") && json_is_boolean(x2)) || (!strcmp(t, "null") && json_is_null(x2)) ||
                            (!strcmp(t, "object") && json_is_object(x2)) || (!strcmp(t, "array") && json_is_array(x2));
                if (!fits) {
                    json_decref(vals);
                    refuse(c, TR_ERR_UNSUPPORTED, "an 'enum'/'const' value that is not of the schema's 'type'");
                    goto out;
                }
            }
            json_decref(vals);
        }
        ok = true;
    } else if (any || one) {
        static const char *const keys[] = {"anyOf", "oneOf"};
        if (!check_keys(c, s, keys, 2, "anyOf/oneOf (put other keywords inside the branches)")) goto out;
        if (any && one) {
            refuse(c, TR_ERR_UNSUPPORTED, "'anyOf' together with 'oneOf'");
            goto out;
        }
        ok = alternatives(c, any ? any : one, any ? "anyOf" : "oneOf", &b);
    } else if (all) {
        static const char *const keys[] = {"allOf"};
        if (!check_keys(c, s, keys, 1, NULL)) goto out;
        if (!json_is_array(all) || json_array_size(all) != 1) {
            refuse(c, TR_ERR_UNSUPPORTED, "'allOf' with other than one schema");
            goto out;
        }
        char n[40];
        ok = schema(c, json_array_get(all, 0), n);
        if (ok) sb_str(&b, n);
    } else if (json_is_array(type)) {
        if (!json_array_size(type)) {
            refuse(c, TR_ERR_FORMAT, "'type' is an empty list");
            goto out;
        }
        size_t i;
        json_t *t;
        sb_str(&b, "(");
        ok = true;
        json_array_foreach(type, i, t) {
            if (!json_is_string(t)) {
                ok = refuse(c, TR_ERR_FORMAT, "'type' must list strings");
                break;
            }
            if (i) sb_str(&b, " | ");
            sb_str(&b, "(");
            if (!(ok = typed(c, s, json_string_value(t), &b))) break;
            sb_str(&b, ")");
        }
        sb_str(&b, ")");
    } else if (type) {
        if (!json_is_string(type)) {
            refuse(c, TR_ERR_FORMAT, "'type' must be a string or a list of strings");
            goto out;
        }
        ok = typed(c, s, json_string_value(type), &b);
    } else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
               json_object_get(s, "required")) {
        ok = object_schema(c, s, &b);
    } else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems")) {
        ok = array_schema(c, s, &b);
    } else {
        static const char *const keys[] = {"type"};
        if (!check_keys(c, s, keys, 1, NULL)) goto out;
        sb_str(&b, "jvalue");
        ok = true;
    }
    if (ok && b.oom) ok = refuse(c, TR_ERR_NOMEM, "out of memory");
    if (ok && new_name(c, name)) put_rule(c, name, b.s);
    else ok = false;
out:
    free(b.s);
    c->depth--;
    return ok && !c->failed;
}

tr_status tr_json_schema_to_gbnf_rule(const char *text, size_t len, const char *rule, bool primitives, char **gbnf,
                                      tr_error *err) {
    if (!gbnf || !rule) return tr_err_set(err, TR_ERR_ARG, "json schema: no output pointer or rule name");
    *gbnf = NULL;
    size_t rl = strlen(rule);
    if (rl == 0 || rl > 24) return tr_err_set(err, TR_ERR_ARG, "json schema: the rule name must be 1 to 24 characters");
    for (size_t i = 0; i < rl; i++)
        if (!((rule[i] >= 'a' && rule[i] <= 'z') || (rule[i] >= 'A' && rule[i] <= 'Z') || (rule[i] >= '0' && rule[i] <= '9')))
            return tr_err_set(err, TR_ERR_ARG, "json schema: the rule name must be letters and digits");
    json_error_t je;
    json_t *root = json_loadb(text ? text : "", text ? len : 0, JSON_DECODE_ANY, &je);
    if (!root) return tr_err_set(err, TR_ERR_FORMAT, "json schema: not valid JSON: %s (line %d)", je.text, je.line);
    const bool is_root = !strcmp(rule, "root");
    conv c = {.root = root, .refs = json_object(), .err = err, .prefix = is_root ? "" : rule};
    char top[40];
    if (primitives) sb_str(&c.out, PRIMITIVES);
    bool ok = c.refs && schema(&c, root, top);
    if (ok) {
        sb_fmt(&c.out, "%s ::= %s\n", rule, top); /* nothing after the value: generation ends there */
        if (c.out.oom) ok = refuse(&c, TR_ERR_NOMEM, "out of memory");
    }
    json_decref(c.refs);
    json_decref(root);
    if (!ok) {
        free(c.out.s);
        if (!c.failed) tr_err_set(err, TR_ERR_NOMEM, "json schema: out of memory");
        return c.failed ? c.status : TR_ERR_NOMEM;
    }
    if (is_root && primitives) {
        /* What the compiler refuses (a pattern's group that can match nothing, repeated: `()+`, which is
         * left recursion once written as GBNF) is a schema this engine cannot enforce: refused here, with
         * the compiler's reason, rather than accepted and then failing. */
        tr_grammar *g = NULL;
        tr_error ce = {{0}};
        tr_status st = tr_grammar_parse(c.out.s, strlen(c.out.s), &g, &ce);
        tr_grammar_free(g);
        if (st != TR_OK) {
            free(c.out.s);
            if (st == TR_ERR_NOMEM) return tr_err_set(err, st, "json schema: out of memory");
            return tr_err_set(err, TR_ERR_UNSUPPORTED, "json schema: not enforceable as a grammar (%s)", ce.msg);
        }
    }
    *gbnf = c.out.s;
    return TR_OK;
}

tr_status tr_json_schema_to_gbnf(const char *text, size_t len, char **gbnf, tr_error *err) {
    return tr_json_schema_to_gbnf_rule(text, len, "root", true, gbnf, err);
}
