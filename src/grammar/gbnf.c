/* GBNF, llama.cpp's grammar syntax (grammars/README.md in llama.cpp), into
 * the rules of grammar.h:
 *
 *   name ::= alternatives          one rule per line (inside parentheses a
 *                                  sequence may go on over newlines)
 *   a b                            sequence
 *   a | b                          alternatives
 *   ( ... )                        group (a generated rule)
 *   "lit"  [a-z_]  [^"\\]  .       literal, character class, negated, any
 *   x*  x+  x?  x{m}  x{m,}  x{m,n} repetitions (generated rules)
 *   # comment                      to the end of the line
 *
 * Escapes in literals and classes: \n \r \t \\ \" \[ \] \- \/ \xHH \uHHHH
 * \UHHHHHHHH. The result is refused, naming the rule, when a rule is used
 * but not defined, when a rule is left-recursive (the recogniser would loop,
 * as llama.cpp refuses too), or when there is no `root`. Sizes are bounded
 * (elements, rules, nesting, repetition counts) so that no input can make
 * the compiler or the recogniser blow up. */
#include "grammar/grammar.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

enum {
    MAX_ELEMENTS = 1 << 20, /* all rules together */
    MAX_RULES = 1 << 16,
    MAX_DEPTH = 64,         /* nested parentheses */
    MAX_REPEAT = 10000,     /* m and n of x{m,n} */
};

typedef struct evec {
    gelem *v;
    uint32_t n, cap;
} evec;

typedef struct prule {
    char *name;     /* NULL: generated */
    evec body;
    bool defined;
    uint32_t line;  /* where first used or defined, for errors */
} prule;

typedef struct parser {
    const char *p, *end, *start;
    prule *rules;
    uint32_t n_rules, cap_rules;
    uint32_t *hash; /* open addressing over named rules: index + 1, 0 empty */
    uint32_t hash_cap;
    uint64_t n_el;  /* elements over all rules */
    int depth;
    tr_error *err;
    bool failed;
} parser;

static uint32_t line_of(const parser *ps, const char *at) {
    uint32_t l = 1;
    for (const char *q = ps->start; q < at && q < ps->end; q++) l += *q == '\n';
    return l;
}

static bool fail(parser *ps, const char *at, const char *what) {
    if (!ps->failed) {
        ps->failed = true;
        tr_err_set(ps->err, TR_ERR_FORMAT, "grammar, line %u: %s", line_of(ps, at), what);
    }
    return false;
}

static bool push(parser *ps, evec *e, uint32_t type, uint32_t value) {
    if (ps->n_el >= MAX_ELEMENTS) return fail(ps, ps->p, "the grammar is too large (more than 1048576 elements once repetitions are expanded)");
    if (e->n == e->cap) {
        uint32_t cap = e->cap ? e->cap * 2 : 16;
        gelem *v = realloc(e->v, sizeof *v * cap);
        if (!v) return fail(ps, ps->p, "out of memory");
        e->v = v;
        e->cap = cap;
    }
    e->v[e->n++] = (gelem){type, value};
    ps->n_el++;
    return true;
}

static bool new_rule(parser *ps, char *name, uint32_t line, uint32_t *out) {
    if (ps->n_rules >= MAX_RULES) return fail(ps, ps->p, "too many rules (more than 65536, generated ones included)");
    if (ps->n_rules == ps->cap_rules) {
        uint32_t cap = ps->cap_rules ? ps->cap_rules * 2 : 32;
        prule *r = realloc(ps->rules, sizeof *r * cap);
        if (!r) return fail(ps, ps->p, "out of memory");
        ps->rules = r;
        ps->cap_rules = cap;
    }
    ps->rules[ps->n_rules] = (prule){.name = name, .line = line};
    *out = ps->n_rules++;
    return true;
}

static uint32_t hash_name(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* The rule named s[0..n), created (undefined) if new. */
static bool rule_named(parser *ps, const char *s, size_t n, uint32_t *out) {
    if (ps->hash_cap < 2 * (ps->n_rules + 1)) {
        uint32_t cap = ps->hash_cap ? ps->hash_cap * 2 : 64;
        while (cap < 2 * (ps->n_rules + 1)) cap *= 2;
        uint32_t *h = calloc(cap, sizeof *h);
        if (!h) return fail(ps, s, "out of memory");
        for (uint32_t i = 0; i < ps->n_rules; i++) {
            const char *nm = ps->rules[i].name;
            if (!nm) continue;
            uint32_t k = hash_name(nm, strlen(nm)) & (cap - 1);
            while (h[k]) k = (k + 1) & (cap - 1);
            h[k] = i + 1;
        }
        free(ps->hash);
        ps->hash = h;
        ps->hash_cap = cap;
    }
    uint32_t k = hash_name(s, n) & (ps->hash_cap - 1);
    for (; ps->hash[k]; k = (k + 1) & (ps->hash_cap - 1)) {
        const char *nm = ps->rules[ps->hash[k] - 1].name;
        if (strlen(nm) == n && !memcmp(nm, s, n)) {
            *out = ps->hash[k] - 1;
            return true;
        }
    }
    char *name = malloc(n + 1);
    if (!name) return fail(ps, s, "out of memory");
    memcpy(name, s, n);
    name[n] = 0;
    if (!new_rule(ps, name, line_of(ps, s), out)) {
        free(name);
        return false;
    }
    ps->hash[k] = *out + 1;
    return true;
}

static bool is_word(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Spaces, tabs, comments; newlines too when newline_ok. */
static void skip_space(parser *ps, bool newline_ok) {
    while (ps->p < ps->end) {
        char c = *ps->p;
        if (c == ' ' || c == '\t') ps->p++;
        else if (c == '#') {
            while (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r') ps->p++;
        } else if ((c == '\n' || c == '\r') && newline_ok) ps->p++;
        else break;
    }
}

/* One UTF-8 character of the grammar text. */
static bool utf8_char(parser *ps, uint32_t *cp) {
    const uint8_t *s = (const uint8_t *)ps->p;
    size_t left = (size_t)(ps->end - ps->p);
    uint8_t b = s[0];
    int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (!n || (size_t)n > left) return fail(ps, ps->p, "invalid UTF-8 in the grammar");
    uint32_t v = n == 1 ? b : n == 2 ? b & 0x1f : n == 3 ? b & 0x0f : b & 0x07;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return fail(ps, ps->p, "invalid UTF-8 in the grammar");
        v = v << 6 | (s[i] & 0x3f);
    }
    ps->p += n;
    *cp = v;
    return true;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A character of a literal or class, escapes decoded. */
static bool read_char(parser *ps, uint32_t *cp) {
    if (ps->p >= ps->end) return fail(ps, ps->p, "unexpected end of the grammar inside a literal or class");
    if (*ps->p != '\\') return utf8_char(ps, cp);
    const char *at = ps->p++;
    if (ps->p >= ps->end) return fail(ps, at, "unexpected end of the grammar after '\\'");
    char c = *ps->p++;
    int nhex = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
    if (nhex) {
        uint32_t v = 0;
        for (int i = 0; i < nhex; i++) {
            int h = ps->p < ps->end ? hexval(*ps->p) : -1;
            if (h < 0) return fail(ps, at, "expected hexadecimal digits after \\x, \\u or \\U");
            v = v << 4 | (uint32_t)h;
            ps->p++;
        }
        if (v > 0x10ffff) return fail(ps, at, "code point above U+10FFFF");
        *cp = v;
        return true;
    }
    switch (c) {
    case 'n': *cp = '\n'; return true;
    case 'r': *cp = '\r'; return true;
    case 't': *cp = '\t'; return true;
    case '\\': case '"': case '[': case ']': case '-': case '/': case '\'': case '^': *cp = (uint8_t)c; return true;
    default: return fail(ps, at, "unknown escape (want \\n \\r \\t \\\\ \\\" \\[ \\] \\- \\/ \\xHH \\uHHHH \\UHHHHHHHH)");
    }
}

static bool parse_alternates(parser *ps, evec *out, bool nested);

/* Copy elements [from, to) of src to the end of dst (src may be dst). */
static bool copy_elems(parser *ps, evec *dst, const evec *src, uint32_t from, uint32_t to) {
    for (uint32_t i = from; i < to; i++)
        if (!push(ps, dst, src->v[i].type, src->v[i].value)) return false;
    return true;
}

/* x{min,max} (max UINT32_MAX: no bound) of the symbol out[sym .. n). */
static bool repeat(parser *ps, evec *out, uint32_t sym, uint32_t min, uint32_t max) {
    evec s = {0};
    bool ok = copy_elems(ps, &s, out, sym, out->n);
    ps->n_el -= out->n - sym;
    out->n = sym;
    for (uint32_t i = 0; ok && i < min; i++) ok = copy_elems(ps, out, &s, 0, s.n);
    if (ok && max == UINT32_MAX) { /* R ::= S R | "" */
        uint32_t r;
        ok = new_rule(ps, NULL, 0, &r);
        if (ok) {
            evec body = {0};
            ok = copy_elems(ps, &body, &s, 0, s.n) && push(ps, &body, G_REF, r) && push(ps, &body, G_ALT, 0) &&
                 push(ps, &body, G_END, 0);
            ps->rules[r].body = body;
            ps->rules[r].defined = true;
            ok = ok && push(ps, out, G_REF, r);
        }
    } else if (ok && max > min) { /* R_1 ::= S | "", R_k ::= S R_{k-1} | "" */
        uint32_t last = UINT32_MAX;
        for (uint32_t k = 0; ok && k < max - min; k++) {
            uint32_t r;
            ok = new_rule(ps, NULL, 0, &r);
            if (!ok) break;
            evec body = {0};
            ok = copy_elems(ps, &body, &s, 0, s.n) && (last == UINT32_MAX || push(ps, &body, G_REF, last)) &&
                 push(ps, &body, G_ALT, 0) && push(ps, &body, G_END, 0);
            ps->rules[r].body = body;
            ps->rules[r].defined = true;
            last = r;
        }
        ok = ok && push(ps, out, G_REF, last);
    }
    free(s.v);
    return ok;
}

static bool read_count(parser *ps, uint32_t *v) {
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, ps->p, "expected a number in {m,n}");
    uint64_t x = 0;
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
        x = x * 10 + (uint64_t)(*ps->p++ - '0');
        if (x > MAX_REPEAT) return fail(ps, ps->p, "a repetition count above 10000");
    }
    *v = (uint32_t)x;
    return true;
}

static bool parse_sequence(parser *ps, evec *out, bool nested) {
    uint32_t sym = UINT32_MAX; /* where the last symbol starts */
    while (ps->p < ps->end && !ps->failed) {
        const char *at = ps->p;
        char c = *ps->p;
        if (c == '"') {
            ps->p++;
            sym = out->n;
            while (ps->p < ps->end && *ps->p != '"') {
                uint32_t cp;
                if (!read_char(ps, &cp) || !push(ps, out, G_CHAR, cp)) return false;
            }
            if (ps->p >= ps->end) return fail(ps, at, "unterminated string literal");
            ps->p++;
        } else if (c == '[') {
            ps->p++;
            sym = out->n;
            uint32_t start = G_CHAR;
            if (ps->p < ps->end && *ps->p == '^') {
                ps->p++;
                start = G_CHAR_NOT;
            }
            bool first = true;
            while (ps->p < ps->end && *ps->p != ']') {
                uint32_t lo, hi;
                if (!read_char(ps, &lo)) return false;
                if (!push(ps, out, first ? start : G_CHAR_ALT, lo)) return false;
                first = false;
                if (ps->p + 1 < ps->end && *ps->p == '-' && ps->p[1] != ']') {
                    ps->p++;
                    if (!read_char(ps, &hi)) return false;
                    if (hi < lo) return fail(ps, at, "a character range whose end is below its start");
                    if (!push(ps, out, G_RNG_UPPER, hi)) return false;
                }
            }
            if (ps->p >= ps->end) return fail(ps, at, "unterminated character class");
            if (first) return fail(ps, at, "an empty character class []");
            ps->p++;
        } else if (is_word(c)) {
            const char *s = ps->p;
            while (ps->p < ps->end && is_word(*ps->p)) ps->p++;
            uint32_t r;
            if (!rule_named(ps, s, (size_t)(ps->p - s), &r)) return false;
            sym = out->n;
            if (!push(ps, out, G_REF, r)) return false;
        } else if (c == '(') {
            if (++ps->depth > MAX_DEPTH) return fail(ps, at, "parentheses nested more than 64 deep");
            ps->p++;
            skip_space(ps, true);
            uint32_t r;
            if (!new_rule(ps, NULL, line_of(ps, at), &r)) return false;
            evec body = {0};
            bool ok = parse_alternates(ps, &body, true);
            ps->rules[r].body = body;
            ps->rules[r].defined = true;
            if (!ok) return false;
            if (ps->p >= ps->end || *ps->p != ')') return fail(ps, at, "expected ')' to close this '('");
            ps->p++;
            ps->depth--;
            sym = out->n;
            if (!push(ps, out, G_REF, r)) return false;
        } else if (c == '.') {
            ps->p++;
            sym = out->n;
            if (!push(ps, out, G_ANY, 0)) return false;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (sym == UINT32_MAX) return fail(ps, at, "a repetition operator with nothing before it");
            uint32_t min = 0, max = UINT32_MAX;
            ps->p++;
            if (c == '+') min = 1;
            else if (c == '?') max = 1;
            else if (c == '{') {
                skip_space(ps, false);
                if (!read_count(ps, &min)) return false;
                skip_space(ps, false);
                max = min;
                if (ps->p < ps->end && *ps->p == ',') {
                    ps->p++;
                    skip_space(ps, false);
                    max = UINT32_MAX;
                    if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9' && !read_count(ps, &max)) return false;
                    skip_space(ps, false);
                }
                if (ps->p >= ps->end || *ps->p != '}') return fail(ps, at, "expected '}' to close a {m,n} repetition");
                ps->p++;
                if (max < min) return fail(ps, at, "a repetition {m,n} with n < m");
            }
            if (!repeat(ps, out, sym, min, max)) return false;
            sym = UINT32_MAX; /* x** is an error, as in llama.cpp */
        } else {
            break;
        }
        skip_space(ps, nested);
    }
    return !ps->failed;
}

static bool parse_alternates(parser *ps, evec *out, bool nested) {
    if (!parse_sequence(ps, out, nested)) return false;
    while (ps->p < ps->end && *ps->p == '|') {
        ps->p++;
        skip_space(ps, true);
        if (!push(ps, out, G_ALT, 0) || !parse_sequence(ps, out, nested)) return false;
    }
    return push(ps, out, G_END, 0);
}

static bool parse_rule(parser *ps) {
    const char *at = ps->p;
    while (ps->p < ps->end && is_word(*ps->p)) ps->p++;
    if (ps->p == at) return fail(ps, at, "expected a rule name");
    uint32_t r;
    if (!rule_named(ps, at, (size_t)(ps->p - at), &r)) return false;
    skip_space(ps, false);
    if (ps->end - ps->p < 3 || memcmp(ps->p, "::=", 3)) return fail(ps, ps->p, "expected '::=' after the rule name");
    ps->p += 3;
    skip_space(ps, true);
    evec body = {0};
    bool ok = parse_alternates(ps, &body, false);
    /* A rule defined again replaces the earlier one, as in llama.cpp. */
    ps->n_el -= ps->rules[r].body.n;
    free(ps->rules[r].body.v);
    ps->rules[r].body = body;
    ps->rules[r].defined = true;
    ps->rules[r].line = line_of(ps, at);
    if (!ok) return false;
    if (ps->p < ps->end && *ps->p != '\n' && *ps->p != '\r')
        return fail(ps, ps->p, "unexpected character: expected the end of the line");
    return true;
}

/* Rules that can match the empty string, then a search for a rule that can
 * reach itself without consuming a character (left recursion). */
static bool check_rules(parser *ps) {
    uint32_t n = ps->n_rules;
    bool *nullable = calloc(n ? n : 1, 1);
    uint8_t *color = calloc(n ? n : 1, 1);
    uint32_t *stack = malloc(sizeof *stack * 3 * (n ? n : 1));
    if (!nullable || !color || !stack) {
        free(nullable), free(color), free(stack);
        return fail(ps, ps->end, "out of memory");
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (uint32_t r = 0; r < n; r++) {
            if (nullable[r]) continue;
            const evec *b = &ps->rules[r].body;
            bool alt_ok = true;
            for (uint32_t i = 0; i < b->n; i++) {
                const gelem e = b->v[i];
                if (e.type == G_ALT || e.type == G_END) {
                    if (alt_ok) {
                        nullable[r] = changed = true;
                        break;
                    }
                    alt_ok = true;
                } else if (e.type == G_REF) {
                    alt_ok = alt_ok && nullable[e.value];
                } else if (e.type != G_RNG_UPPER && e.type != G_CHAR_ALT) {
                    alt_ok = false;
                }
            }
        }
    }
    /* Iterative depth-first search over "r may start with q" edges: a grey
     * rule met again is a cycle. The stack holds (rule, next element to
     * look at, whether that element is at a leading position). */
    bool ok = true;
    for (uint32_t r0 = 0; r0 < n && ok; r0++) {
        if (color[r0]) continue;
        uint32_t sp = 0;
        stack[sp++] = r0, stack[sp++] = 0, stack[sp++] = 1;
        color[r0] = 1;
        while (sp && ok) {
            uint32_t r = stack[sp - 3], k = stack[sp - 2];
            bool lead = stack[sp - 1];
            const evec *b = &ps->rules[r].body;
            uint32_t found = UINT32_MAX;
            for (; k < b->n; k++) {
                const gelem e = b->v[k];
                if (e.type == G_ALT || e.type == G_END) lead = true;
                else if (e.type == G_REF && lead) {
                    found = k;
                    break;
                } else if (e.type != G_RNG_UPPER && e.type != G_CHAR_ALT && e.type != G_REF) lead = false;
            }
            if (found == UINT32_MAX) {
                color[r] = 2;
                sp -= 3;
                continue;
            }
            uint32_t q = b->v[found].value;
            stack[sp - 2] = found + 1;
            stack[sp - 1] = nullable[q];
            if (color[q] == 1) {
                const prule *pr = &ps->rules[q];
                tr_err_set(ps->err, TR_ERR_FORMAT,
                           "grammar: rule '%s' (line %u) is left-recursive (it can reach itself before matching a "
                           "character): write the recursion on the right",
                           pr->name ? pr->name : (ps->rules[r].name ? ps->rules[r].name : "(group)"), pr->line);
                ps->failed = true;
                ok = false;
            } else if (!color[q]) {
                color[q] = 1;
                stack[sp++] = q, stack[sp++] = 0, stack[sp++] = 1;
            }
        }
    }
    free(nullable), free(color), free(stack);
    return ok;
}

static void parser_free(parser *ps) {
    for (uint32_t i = 0; i < ps->n_rules; i++) {
        free(ps->rules[i].name);
        free(ps->rules[i].body.v);
    }
    free(ps->rules);
    free(ps->hash);
}

tr_status tr_grammar_parse(const char *text, size_t len, tr_grammar **out, tr_error *err) {
    if (!out) return tr_err_set(err, TR_ERR_ARG, "grammar: no output pointer");
    *out = NULL;
    if (!text) return tr_err_set(err, TR_ERR_ARG, "grammar: no text");
    parser ps = {.p = text, .end = text + len, .start = text, .err = err};
    skip_space(&ps, true);
    while (ps.p < ps.end && !ps.failed) {
        if (!parse_rule(&ps)) break;
        skip_space(&ps, true);
    }
    uint32_t root = UINT32_MAX;
    if (!ps.failed) {
        for (uint32_t i = 0; i < ps.n_rules; i++)
            if (ps.rules[i].name && !strcmp(ps.rules[i].name, "root")) root = i;
        if (root == UINT32_MAX) fail(&ps, ps.end, "no rule named 'root' (the rule generation starts from)");
    }
    for (uint32_t i = 0; i < ps.n_rules && !ps.failed; i++)
        if (!ps.rules[i].defined) {
            tr_err_set(err, TR_ERR_FORMAT, "grammar, line %u: rule '%s' is used but not defined", ps.rules[i].line,
                       ps.rules[i].name);
            ps.failed = true;
        }
    if (!ps.failed) check_rules(&ps);
    tr_grammar *g = NULL;
    if (!ps.failed) {
        g = calloc(1, sizeof *g);
        if (g) {
            g->n_rules = ps.n_rules;
            g->root = root;
            g->n_el = (uint32_t)ps.n_el;
            g->el = malloc(sizeof *g->el * (g->n_el ? g->n_el : 1));
            g->rule_start = malloc(sizeof *g->rule_start * ps.n_rules);
        }
        if (!g || !g->el || !g->rule_start) {
            tr_grammar_free(g);
            g = NULL;
            fail(&ps, ps.end, "out of memory");
        } else {
            uint32_t k = 0;
            for (uint32_t i = 0; i < ps.n_rules; i++) {
                g->rule_start[i] = k;
                memcpy(g->el + k, ps.rules[i].body.v, sizeof *g->el * ps.rules[i].body.n);
                k += ps.rules[i].body.n;
            }
        }
    }
    parser_free(&ps);
    if (ps.failed) return TR_ERR_FORMAT;
    *out = g;
    return TR_OK;
}

tr_grammar *tr_grammar_clone(const tr_grammar *g) {
    if (!g) return NULL;
    tr_grammar *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    *c = *g;
    c->el = malloc(sizeof *c->el * (g->n_el ? g->n_el : 1));
    c->rule_start = malloc(sizeof *c->rule_start * (g->n_rules ? g->n_rules : 1));
    if (!c->el || !c->rule_start) {
        tr_grammar_free(c);
        return NULL;
    }
    memcpy(c->el, g->el, sizeof *c->el * g->n_el);
    memcpy(c->rule_start, g->rule_start, sizeof *c->rule_start * g->n_rules);
    return c;
}

void tr_grammar_free(tr_grammar *g) {
    if (!g) return;
    free(g->el);
    free(g->rule_start);
    free(g);
}
