/* Jinja: template text -> tokens -> AST, with the whitespace rules of the
 * environment Hugging Face transformers renders chat templates in
 * (trim_blocks, lstrip_blocks, keep_trailing_newline off). The grammar and its
 * precedence follow jinja2's parser: condexpr > or > and > not > compare >
 * +,- > ~ > *,/,//,% > ** > unary -,+ > primary with postfix (.attr, [item],
 * (call)) and then filters (|f) and tests (is t). */
#include "template/jinja.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ arena */

struct arena_blk {
    arena_blk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

void *ar_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (a->limit && a->used + n > a->limit)
        jfail(a->fail, a->errmsg, 0, "out of memory: the template used more than %zu MiB (a loop without end?)",
              a->limit >> 20);
    a->used += n;
    arena_blk *b = a->head;
    if (!b || b->size - b->used < n) {
        size_t sz = n > 60000 ? n : 65536 - sizeof(arena_blk);
        b = malloc(sizeof(arena_blk) + sz);
        if (!b) jfail(a->fail, a->errmsg, 0, "out of memory (%zu bytes)", n);
        b->size = sz;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

char *ar_strndup(arena *a, const char *s, size_t n) {
    char *p = ar_alloc(a, n + 1);
    if (n) memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void ar_free(arena *a) {
    for (arena_blk *b = a->head, *nx; b; b = nx) {
        nx = b->next;
        free(b);
    }
    a->head = NULL;
    a->used = 0;
}

void jfail(jmp_buf *jb, char *errmsg, int line, const char *fmt, ...) {
    char m[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(errmsg, 512, "template line %d: %s", line, m);
    else
        snprintf(errmsg, 512, "template: %s", m);
    longjmp(*jb, 1);
}

/* ------------------------------------------------------------------ lexer */

typedef enum tkind { T_EOF, T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP } tkind;

typedef struct tok {
    tkind k;
    int line;
    const char *s; /* text, name, string value (arena) */
    size_t n;
    char op[3];
    int64_t i;
    double f;
} tok;

typedef struct parser {
    arena *ar;
    jmp_buf jb;
    char *errmsg;
    tok *t;
    size_t nt, cap, pos;
    int depth, if_depth, loop_depth;
} parser;

#define PFAIL(p, line, ...) jfail(&(p)->jb, (p)->errmsg, (line), __VA_ARGS__)

static tok *push_tok(parser *p, tkind k, int line) {
    if (p->nt == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 256;
        tok *nt = ar_alloc(p->ar, cap * sizeof *nt);
        if (p->nt) memcpy(nt, p->t, p->nt * sizeof *nt);
        p->t = nt;
        p->cap = cap;
    }
    tok *t = &p->t[p->nt++];
    memset(t, 0, sizeof *t);
    t->k = k;
    t->line = line;
    return t;
}

static bool is_pyspace(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static int count_nl(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

static void put_utf8(char *out, size_t *o, uint32_t cp) {
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string literal's body with Python's unicode-escape rules (as jinja2's
 * lexer decodes it); unknown escapes stay as written. */
static void lex_string(parser *p, tok *t, const char *s, size_t n, int line) {
    char *out = ar_alloc(p->ar, n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) {
            out[o++] = s[i];
            continue;
        }
        char c = s[++i];
        int digits = 0;
        switch (c) {
        case 'n': out[o++] = '\n'; break;
        case 't': out[o++] = '\t'; break;
        case 'r': out[o++] = '\r'; break;
        case '\\': out[o++] = '\\'; break;
        case '\'': out[o++] = '\''; break;
        case '"': out[o++] = '"'; break;
        case 'a': out[o++] = '\a'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'v': out[o++] = '\v'; break;
        case '\n': break; /* line continuation */
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (c >= '0' && c <= '7') {
                uint32_t v = 0;
                int k = 0;
                while (k < 3 && i < n && s[i] >= '0' && s[i] <= '7') v = v * 8 + (uint32_t)(s[i++] - '0'), k++;
                i--;
                put_utf8(out, &o, v);
            } else {
                out[o++] = '\\';
                out[o++] = c;
            }
        }
        if (digits) {
            uint32_t v = 0;
            for (int k = 0; k < digits; k++) {
                int h = i + 1 + (size_t)k < n ? hexval(s[i + 1 + k]) : -1;
                if (h < 0) PFAIL(p, line, "truncated \\%c escape in a string literal", c);
                v = v * 16 + (uint32_t)h;
            }
            if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
                PFAIL(p, line, "escape \\%c%0*X in a string literal is not a valid code point", c, digits, v);
            i += (size_t)digits;
            put_utf8(out, &o, v);
        }
    }
    out[o] = 0;
    t->s = out;
    t->n = o;
}

/* Expression tokens from s[*pos] until the tag's closer (`}}` or `%}`, with
 * an optional leading `-`), which must come when brackets are balanced.
 * Returns true when the closer had a `-` (strip the whitespace after). */
static bool lex_tag(parser *p, const char *s, size_t n, size_t *pos, int *line, char closer) {
    int bal = 0;
    size_t i = *pos;
    int open_line = *line;
    for (;;) {
        while (i < n && is_pyspace((unsigned char)s[i])) {
            if (s[i] == '\n') (*line)++;
            i++;
        }
        if (i >= n) PFAIL(p, open_line, "unexpected end of template: the tag opened here is never closed");
        if (bal == 0) {
            if (s[i] == '-' && i + 2 < n && s[i + 1] == closer && s[i + 2] == '}') {
                *pos = i + 3;
                return true;
            }
            if (s[i] == closer && i + 1 < n && s[i + 1] == '}') {
                *pos = i + 2;
                return false;
            }
        }
        unsigned char c = (unsigned char)s[i];
        if (isalpha(c) || c == '_') {
            size_t j = i;
            while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_')) j++;
            tok *t = push_tok(p, T_NAME, *line);
            t->s = ar_strndup(p->ar, s + i, j - i);
            t->n = j - i;
            i = j;
        } else if (isdigit(c)) {
            size_t j = i;
            bool isf = false;
            while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
            if (j + 1 < n && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
                isf = true;
                j++;
                while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) j++;
            }
            if (j < n && (s[j] == 'e' || s[j] == 'E')) {
                size_t k = j + 1;
                if (k < n && (s[k] == '+' || s[k] == '-')) k++;
                if (k < n && isdigit((unsigned char)s[k])) {
                    isf = true;
                    j = k;
                    while (j < n && isdigit((unsigned char)s[j])) j++;
                }
            }
            char buf[64];
            size_t bn = 0;
            for (size_t k = i; k < j && bn < sizeof buf - 1; k++)
                if (s[k] != '_') buf[bn++] = s[k];
            buf[bn] = 0;
            if (j - i >= sizeof buf - 1) PFAIL(p, *line, "number literal too long");
            tok *t = push_tok(p, isf ? T_FLOAT : T_INT, *line);
            if (isf) {
                t->f = strtod(buf, NULL);
            } else {
                char *end;
                unsigned long long v = strtoull(buf, &end, 10);
                if (v > INT64_MAX || bn > 19) PFAIL(p, *line, "integer literal %s is too large", buf);
                t->i = (int64_t)v;
            }
            i = j;
        } else if (c == '\'' || c == '"') {
            size_t j = i + 1;
            int sl = *line;
            while (j < n && s[j] != (char)c) {
                if (s[j] == '\\' && j + 1 < n) j++;
                if (s[j] == '\n') (*line)++;
                j++;
            }
            if (j >= n) PFAIL(p, sl, "unterminated string literal");
            tok *t = push_tok(p, T_STR, sl);
            lex_string(p, t, s + i + 1, j - i - 1, sl);
            i = j + 1;
        } else {
            static const char *ops2[] = {"//", "**", "==", "!=", "<=", ">="};
            size_t len = 0;
            for (size_t k = 0; k < sizeof ops2 / sizeof ops2[0]; k++)
                if (i + 1 < n && s[i] == ops2[k][0] && s[i + 1] == ops2[k][1]) len = 2;
            if (!len) {
                if (!strchr("+-*/%~<>=()[]{},.:|", c) || c == 0)
                    PFAIL(p, *line, "unexpected character '%c' in a tag", isprint(c) ? c : '?');
                len = 1;
            }
            tok *t = push_tok(p, T_OP, *line);
            memcpy(t->op, s + i, len);
            if (c == '(' || c == '[' || c == '{') bal++;
            if (c == ')' || c == ']' || c == '}') {
                if (--bal < 0) PFAIL(p, *line, "unexpected '%c'", c);
            }
            i += len;
        }
    }
}

static void lex(parser *p, const char *s, size_t n) {
    size_t pos = 0;
    int line = 1;
    bool line_starting = true;
    while (pos <= n) {
        /* next tag opener */
        size_t k = pos;
        while (k + 1 < n && !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#'))) k++;
        if (k + 1 >= n) k = n;
        size_t tn = k - pos;
        const char *text = s + pos;
        int text_line = line;
        line += count_nl(text, tn);
        if (k == n) {
            if (tn) {
                tok *t = push_tok(p, T_TEXT, text_line);
                t->s = text;
                t->n = tn;
            }
            break;
        }
        char kind = s[k + 1];
        char sign = k + 2 < n ? s[k + 2] : 0;
        if (sign == '-') {
            while (tn && is_pyspace((unsigned char)text[tn - 1])) tn--;
        } else if (sign != '+' && kind != '{') {
            size_t l_pos = tn;
            while (l_pos && text[l_pos - 1] != '\n') l_pos--;
            if (l_pos > 0 || line_starting) {
                bool ws = l_pos < tn;
                for (size_t j = l_pos; j < tn; j++)
                    if (!is_pyspace((unsigned char)text[j])) ws = false;
                if (ws) tn = l_pos;
            }
        }
        if (tn) {
            tok *t = push_tok(p, T_TEXT, text_line);
            t->s = text;
            t->n = tn;
        }
        size_t after = k + 2 + (sign == '-' || sign == '+');
        bool strip_after;
        if (kind == '#') {
            size_t j = after;
            while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}')) j++;
            if (j + 1 >= n) PFAIL(p, line, "unterminated comment");
            line += count_nl(s + after, j - after);
            strip_after = j > after && s[j - 1] == '-';
            pos = j + 2;
        } else {
            int tag_line = line;
            push_tok(p, kind == '{' ? T_VBEGIN : T_BBEGIN, tag_line);
            /* {% raw %}: its body is text as written */
            size_t q = after;
            while (q < n && is_pyspace((unsigned char)s[q])) q++;
            bool raw = kind == '%' && q + 3 <= n && !memcmp(s + q, "raw", 3) &&
                       (q + 3 == n || !(isalnum((unsigned char)s[q + 3]) || s[q + 3] == '_'));
            pos = after;
            strip_after = lex_tag(p, s, n, &pos, &line, kind == '{' ? '}' : '%');
            push_tok(p, kind == '{' ? T_VEND : T_BEND, line);
            if (raw) {
                p->nt -= 3; /* BBEGIN raw BEND: the body follows as text */
                size_t b0 = pos;
                if (strip_after)
                    while (b0 < n && is_pyspace((unsigned char)s[b0])) b0++;
                else if (b0 < n && s[b0] == '\n')
                    b0++;
                size_t j = b0;
                for (;; j++) {
                    if (j + 1 >= n) PFAIL(p, tag_line, "{%% raw %%} without {%% endraw %%}");
                    if (s[j] != '{' || s[j + 1] != '%') continue;
                    size_t e = j + 2;
                    if (e < n && (s[e] == '-' || s[e] == '+')) e++;
                    while (e < n && is_pyspace((unsigned char)s[e])) e++;
                    if (e + 6 <= n && !memcmp(s + e, "endraw", 6)) break;
                }
                size_t bn = j - b0;
                if (s[j + 2] == '-')
                    while (bn && is_pyspace((unsigned char)s[b0 + bn - 1])) bn--;
                if (bn) {
                    tok *t = push_tok(p, T_TEXT, line);
                    t->s = s + b0;
                    t->n = bn;
                }
                line += count_nl(s + pos, j - pos);
                pos = j + 2;
                if (s[pos] == '-') pos++;
                while (is_pyspace((unsigned char)s[pos])) pos++;
                pos += 6;
                int dummy = line;
                size_t before = p->nt;
                strip_after = lex_tag(p, s, n, &pos, &dummy, '%');
                if (p->nt != before) PFAIL(p, line, "unexpected tokens in {%% endraw %%}");
                kind = '%';
            }
        }
        /* what follows the tag: `-` strips all white space; trim_blocks one newline */
        size_t j = pos;
        if (strip_after) {
            while (j < n && is_pyspace((unsigned char)s[j])) j++;
        } else if (kind != '{' && j < n && s[j] == '\n') {
            j++;
        }
        line += count_nl(s + pos, j - pos);
        line_starting = kind != '{' && j > pos && s[j - 1] == '\n';
        pos = j;
    }
    push_tok(p, T_EOF, line);
}

/* ----------------------------------------------------------------- parser */

static tok *cur(parser *p) { return &p->t[p->pos]; }
static tok *peek(parser *p, size_t k) { return p->pos + k < p->nt ? &p->t[p->pos + k] : &p->t[p->nt - 1]; }
static bool is_op(const tok *t, const char *op) { return t->k == T_OP && !strcmp(t->op, op); }
static bool is_name(const tok *t, const char *nm) { return t->k == T_NAME && !strcmp(t->s, nm); }

static const char *tok_desc(const tok *t) {
    switch (t->k) {
    case T_EOF: return "end of template";
    case T_TEXT: return "text";
    case T_VBEGIN: return "'{{'";
    case T_VEND: return "'}}'";
    case T_BBEGIN: return "'{%'";
    case T_BEND: return "'%}'";
    case T_NAME: return t->s;
    case T_STR: return "a string";
    case T_INT:
    case T_FLOAT: return "a number";
    case T_OP: return t->op;
    }
    return "?";
}

static void expect_op(parser *p, const char *op) {
    if (!is_op(cur(p), op)) PFAIL(p, cur(p)->line, "expected '%s', found '%s'", op, tok_desc(cur(p)));
    p->pos++;
}

static const char *expect_name(parser *p) {
    if (cur(p)->k != T_NAME) PFAIL(p, cur(p)->line, "expected a name, found '%s'", tok_desc(cur(p)));
    return p->t[p->pos++].s;
}

static void expect_bend(parser *p) {
    if (cur(p)->k != T_BEND) PFAIL(p, cur(p)->line, "expected '%%}', found '%s'", tok_desc(cur(p)));
    p->pos++;
}

static jnode *mk(parser *p, nkind k, int line) {
    jnode *n = ar_alloc(p->ar, sizeof *n);
    n->k = k;
    n->line = line;
    return n;
}

/* Growable node list. */
typedef struct nlist {
    jnode **a;
    size_t n, cap;
} nlist;

static void nl_push(parser *p, nlist *l, jnode *x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jnode **na = ar_alloc(p->ar, cap * sizeof *na);
        if (l->n) memcpy(na, l->a, l->n * sizeof *na);
        l->a = na;
        l->cap = cap;
    }
    l->a[l->n++] = x;
}

static jv *mkval(parser *p, vkind k) {
    jv *v = ar_alloc(p->ar, sizeof *v);
    v->k = k;
    return v;
}

static void enter(parser *p) {
    if (++p->depth > 200) PFAIL(p, cur(p)->line, "the template nests too deeply (more than 200 levels)");
}

static jnode *parse_expr(parser *p); /* conditional expression */
static jnode *parse_or(parser *p);
static jnode *parse_unary(parser *p, bool with_filter);
static jnode *parse_primary(parser *p);
static jnode *parse_postfix(parser *p, jnode *n);

/* (args, kw=args) after '(' was seen; fills n->items / n->kw. */
static void parse_call_args(parser *p, jnode *n) {
    expect_op(p, "(");
    nlist args = {0};
    jkw *kw = NULL;
    size_t nkw = 0, capkw = 0;
    while (!is_op(cur(p), ")")) {
        if (args.n || nkw) expect_op(p, ",");
        if (is_op(cur(p), ")")) break;
        if (is_op(cur(p), "*") || is_op(cur(p), "**"))
            PFAIL(p, cur(p)->line, "*args and **kwargs in calls are not supported");
        if (cur(p)->k == T_NAME && is_op(peek(p, 1), "=")) {
            const char *name = cur(p)->s;
            p->pos += 2;
            if (nkw == capkw) {
                capkw = capkw ? capkw * 2 : 4;
                jkw *nk = ar_alloc(p->ar, capkw * sizeof *nk);
                if (nkw) memcpy(nk, kw, nkw * sizeof *nk);
                kw = nk;
            }
            kw[nkw].name = name;
            kw[nkw].val = parse_expr(p);
            nkw++;
        } else {
            if (nkw) PFAIL(p, cur(p)->line, "a positional argument follows keyword arguments");
            nl_push(p, &args, parse_expr(p));
        }
    }
    expect_op(p, ")");
    n->items = args.a;
    n->n = args.n;
    n->kw = kw;
    n->nkw = nkw;
}

static jnode *parse_filter_expr(parser *p, jnode *n) {
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, "|")) {
            p->pos++;
            jnode *f = mk(p, N_FILTER, t->line);
            const char *name = expect_name(p);
            while (is_op(cur(p), ".")) { /* dotted filter names */
                p->pos++;
                const char *more = expect_name(p);
                size_t a = strlen(name), b = strlen(more);
                char *nm = ar_alloc(p->ar, a + b + 2);
                memcpy(nm, name, a);
                nm[a] = '.';
                memcpy(nm + a + 1, more, b + 1);
                name = nm;
            }
            f->str = name;
            f->a = n;
            if (is_op(cur(p), "(")) parse_call_args(p, f);
            if (!jinja_filter_known(name)) {
                if (!p->if_depth) PFAIL(p, t->line, "no filter named '%s'", name);
                f->late = true;
            }
            n = f;
        } else if (is_name(t, "is")) {
            p->pos++;
            jnode *x = mk(p, N_TEST, t->line);
            if (is_name(cur(p), "not")) {
                p->pos++;
                x->op = 1;
            }
            x->str = expect_name(p);
            x->a = n;
            tok *c = cur(p);
            if (is_op(c, "(")) {
                parse_call_args(p, x);
            } else if ((c->k == T_NAME || c->k == T_STR || c->k == T_INT || c->k == T_FLOAT || is_op(c, "[") ||
                        is_op(c, "{")) &&
                       !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
                if (is_name(c, "is")) PFAIL(p, c->line, "tests cannot be chained with 'is'");
                jnode *arg = parse_postfix(p, parse_primary(p));
                x->items = ar_alloc(p->ar, sizeof(jnode *));
                x->items[0] = arg;
                x->n = 1;
            }
            if (!jinja_test_known(x->str)) {
                if (!p->if_depth) PFAIL(p, t->line, "no test named '%s'", x->str);
                x->late = true;
            }
            n = x;
        } else if (is_op(t, "(")) {
            jnode *c = mk(p, N_CALL, t->line);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *parse_subscript(parser *p, jnode *obj, int line) {
    jnode *parts[3] = {0};
    int nparts = 0;
    bool slice = false;
    for (;;) {
        if (is_op(cur(p), ":")) {
            slice = true;
            p->pos++;
            if (++nparts > 2) PFAIL(p, line, "a slice has at most three parts");
            continue;
        }
        if (is_op(cur(p), "]")) break;
        if (parts[nparts]) PFAIL(p, cur(p)->line, "expected ']' or ':' in a subscript");
        parts[nparts] = parse_expr(p);
        if (is_op(cur(p), ",")) PFAIL(p, cur(p)->line, "tuple subscripts are not supported");
    }
    expect_op(p, "]");
    jnode *n;
    if (slice) {
        n = mk(p, N_SLICE, line);
        n->b = parts[0];
        n->c = parts[1];
        n->d = parts[2];
    } else {
        if (!parts[0]) PFAIL(p, line, "empty subscript");
        n = mk(p, N_ITEM, line);
        n->b = parts[0];
    }
    n->a = obj;
    return n;
}

static jnode *parse_postfix(parser *p, jnode *n) {
    for (;;) {
        tok *t = cur(p);
        if (is_op(t, ".")) {
            p->pos++;
            tok *a = cur(p);
            if (a->k == T_NAME) {
                jnode *x = mk(p, N_ATTR, t->line);
                x->a = n;
                x->str = a->s;
                p->pos++;
                n = x;
            } else if (a->k == T_INT) {
                jnode *x = mk(p, N_ITEM, t->line);
                x->a = n;
                x->b = mk(p, N_LIT, t->line);
                x->b->val = mkval(p, V_INT);
                x->b->val->i = a->i;
                p->pos++;
                n = x;
            } else {
                PFAIL(p, t->line, "expected an attribute name after '.', found '%s'", tok_desc(a));
            }
        } else if (is_op(t, "[")) {
            p->pos++;
            n = parse_subscript(p, n, t->line);
        } else if (is_op(t, "(")) {
            jnode *c = mk(p, N_CALL, t->line);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *parse_tuple_or_expr(parser *p, bool condexpr, bool explicit_parens);

static jnode *parse_primary(parser *p) {
    tok *t = cur(p);
    jnode *n;
    enter(p);
    if (t->k == T_NAME) {
        p->pos++;
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") || !strcmp(t->s, "False")) {
            n = mk(p, N_LIT, t->line);
            n->val = mkval(p, V_BOOL);
            n->val->b = t->s[0] == 't' || t->s[0] == 'T';
        } else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            n = mk(p, N_LIT, t->line);
            n->val = mkval(p, V_NONE);
        } else {
            n = mk(p, N_NAME, t->line);
            n->str = t->s;
        }
    } else if (t->k == T_STR) {
        /* adjacent literals concatenate */
        size_t total = 0, k = p->pos;
        while (p->t[k].k == T_STR) total += p->t[k++].n;
        char *s = ar_alloc(p->ar, total + 1);
        size_t o = 0;
        while (cur(p)->k == T_STR) {
            memcpy(s + o, cur(p)->s, cur(p)->n);
            o += cur(p)->n;
            p->pos++;
        }
        n = mk(p, N_LIT, t->line);
        n->val = mkval(p, V_STR);
        n->val->s.p = s;
        n->val->s.n = total;
    } else if (t->k == T_INT || t->k == T_FLOAT) {
        p->pos++;
        n = mk(p, N_LIT, t->line);
        n->val = mkval(p, t->k == T_INT ? V_INT : V_FLOAT);
        if (t->k == T_INT)
            n->val->i = t->i;
        else
            n->val->f = t->f;
    } else if (is_op(t, "(")) {
        p->pos++;
        n = parse_tuple_or_expr(p, true, true);
        expect_op(p, ")");
    } else if (is_op(t, "[")) {
        p->pos++;
        nlist l = {0};
        while (!is_op(cur(p), "]")) {
            if (l.n) expect_op(p, ",");
            if (is_op(cur(p), "]")) break;
            nl_push(p, &l, parse_expr(p));
        }
        expect_op(p, "]");
        n = mk(p, N_LIST, t->line);
        n->items = l.a;
        n->n = l.n;
    } else if (is_op(t, "{")) {
        p->pos++;
        nlist l = {0}; /* key, value, key, value ... */
        while (!is_op(cur(p), "}")) {
            if (l.n) expect_op(p, ",");
            if (is_op(cur(p), "}")) break;
            nl_push(p, &l, parse_expr(p));
            expect_op(p, ":");
            nl_push(p, &l, parse_expr(p));
        }
        expect_op(p, "}");
        n = mk(p, N_DICT, t->line);
        n->items = l.a;
        n->n = l.n;
    } else {
        PFAIL(p, t->line, "unexpected '%s' in an expression", tok_desc(t));
    }
    p->depth--;
    return n;
}

static jnode *parse_unary(parser *p, bool with_filter) {
    tok *t = cur(p);
    jnode *n;
    enter(p);
    if (is_op(t, "-") || is_op(t, "+")) {
        p->pos++;
        n = mk(p, is_op(t, "-") ? N_NEG : N_POS, t->line);
        n->a = parse_unary(p, false);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter) n = parse_filter_expr(p, n);
    p->depth--;
    return n;
}

static jnode *bin(parser *p, int op, jnode *a, jnode *b, int line) {
    jnode *n = mk(p, N_BIN, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(parser *p) {
    jnode *n = parse_unary(p, true);
    while (is_op(cur(p), "**")) {
        int line = cur(p)->line;
        p->pos++;
        n = bin(p, OP_POW, n, parse_unary(p, true), line);
    }
    return n;
}

static jnode *parse_math2(parser *p) {
    jnode *n = parse_pow(p);
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FDIV : is_op(t, "%") ? OP_MOD : 0;
        if (!op) return n;
        p->pos++;
        n = bin(p, op, n, parse_pow(p), t->line);
    }
}

static jnode *parse_concat(parser *p) {
    jnode *n = parse_math2(p);
    if (!is_op(cur(p), "~")) return n;
    jnode *c = mk(p, N_CONCAT, cur(p)->line);
    nlist l = {0};
    nl_push(p, &l, n);
    while (is_op(cur(p), "~")) {
        p->pos++;
        nl_push(p, &l, parse_math2(p));
    }
    c->items = l.a;
    c->n = l.n;
    return c;
}

static jnode *parse_math1(parser *p) {
    jnode *n = parse_concat(p);
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : 0;
        if (!op) return n;
        p->pos++;
        n = bin(p, op, n, parse_concat(p), t->line);
    }
}

static jnode *parse_compare(parser *p) {
    jnode *first = parse_math1(p);
    nlist l = {0};
    jnode *cmp = NULL;
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, "==") ? OP_EQ
                 : is_op(t, "!=") ? OP_NE
                 : is_op(t, "<")  ? OP_LT
                 : is_op(t, "<=") ? OP_LE
                 : is_op(t, ">")  ? OP_GT
                 : is_op(t, ">=") ? OP_GE
                 : is_name(t, "in") ? OP_IN
                 : 0;
        if (!op && is_name(t, "not") && is_name(peek(p, 1), "in")) {
            op = OP_NOTIN;
            p->pos++;
        }
        if (!op) break;
        p->pos++;
        if (!cmp) {
            cmp = mk(p, N_CMP, t->line);
            cmp->a = first;
        }
        jnode *o = mk(p, N_LIT, t->line); /* op holder */
        o->op = op;
        o->a = parse_math1(p);
        nl_push(p, &l, o);
    }
    if (!cmp) return first;
    cmp->items = l.a;
    cmp->n = l.n;
    return cmp;
}

static jnode *parse_not(parser *p) {
    if (is_name(cur(p), "not")) {
        jnode *n = mk(p, N_NOT, cur(p)->line);
        p->pos++;
        enter(p);
        n->a = parse_not(p);
        p->depth--;
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(parser *p) {
    jnode *n = parse_not(p);
    while (is_name(cur(p), "and")) {
        jnode *x = mk(p, N_AND, cur(p)->line);
        p->pos++;
        x->a = n;
        x->b = parse_not(p);
        n = x;
    }
    return n;
}

static jnode *parse_or(parser *p) {
    jnode *n = parse_and(p);
    while (is_name(cur(p), "or")) {
        jnode *x = mk(p, N_OR, cur(p)->line);
        p->pos++;
        x->a = n;
        x->b = parse_and(p);
        n = x;
    }
    return n;
}

static jnode *parse_expr(parser *p) {
    enter(p);
    jnode *n = parse_or(p);
    while (is_name(cur(p), "if")) {
        jnode *c = mk(p, N_COND, cur(p)->line);
        p->pos++;
        c->a = parse_or(p); /* test */
        c->b = n;           /* then */
        if (is_name(cur(p), "else")) {
            p->pos++;
            c->c = parse_expr(p);
        }
        n = c;
    }
    p->depth--;
    return n;
}

/* expr or a, b, c (a tuple); inside parentheses an empty () is a tuple. */
static jnode *parse_tuple_or_expr(parser *p, bool condexpr, bool explicit_parens) {
    int line = cur(p)->line;
    nlist l = {0};
    bool comma = false;
    for (;;) {
        if (l.n) {
            if (!is_op(cur(p), ",")) break;
            p->pos++;
            comma = true;
        }
        tok *t = cur(p);
        if (t->k == T_VEND || t->k == T_BEND || is_op(t, ")") || is_op(t, "]") || is_op(t, "}") || is_op(t, "=") ||
            (l.n && is_name(t, "if")))
            break;
        if (!l.n && (is_op(t, ")") && explicit_parens)) break;
        nl_push(p, &l, condexpr ? parse_expr(p) : parse_or(p));
    }
    if (l.n == 1 && !comma) return l.a[0];
    if (!l.n && !explicit_parens) PFAIL(p, line, "expected an expression, found '%s'", tok_desc(cur(p)));
    jnode *n = mk(p, N_TUPLE, line);
    n->items = l.a;
    n->n = l.n;
    return n;
}

/* Assignment target: name, name.attr (set only), or names a, b / (a, b). */
static jnode *parse_target(parser *p, bool allow_attr) {
    int line = cur(p)->line;
    bool paren = is_op(cur(p), "(");
    if (paren) p->pos++;
    nlist l = {0};
    for (;;) {
        jnode *n = mk(p, N_NAME, cur(p)->line);
        n->str = expect_name(p);
        if (allow_attr && is_op(cur(p), ".")) {
            p->pos++;
            jnode *a = mk(p, N_ATTR, n->line);
            a->a = n;
            a->str = expect_name(p);
            n = a;
        }
        nl_push(p, &l, n);
        if (!is_op(cur(p), ",")) break;
        p->pos++;
    }
    if (paren) expect_op(p, ")");
    if (l.n == 1 && !paren) return l.a[0];
    jnode *t = mk(p, N_TUPLE, line);
    t->items = l.a;
    t->n = l.n;
    return t;
}

static jnode *parse_body(parser *p, const char *const *ends, const char **which, int open_line);

/* After "{%": is the next tag name one of ends? */
static const char *at_end_tag(parser *p, const char *const *ends) {
    if (cur(p)->k != T_BBEGIN || !ends) return NULL;
    tok *n = peek(p, 1);
    if (n->k != T_NAME) return NULL;
    for (size_t i = 0; ends[i]; i++)
        if (!strcmp(n->s, ends[i])) return ends[i];
    return NULL;
}

static jnode *parse_statement(parser *p) {
    p->pos++; /* {% */
    tok *t = cur(p);
    int line = t->line;
    if (t->k != T_NAME) PFAIL(p, line, "expected a tag name after '{%%', found '%s'", tok_desc(t));
    const char *nm = t->s;
    p->pos++;
    enter(p);
    jnode *n;
    if (!strcmp(nm, "if")) {
        n = mk(p, N_IF, line);
        p->if_depth++;
        n->a = parse_tuple_or_expr(p, true, false);
        expect_bend(p);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        const char *which;
        n->b = parse_body(p, ends, &which, line);
        jnode *tail = n;
        for (;;) {
            if (!strcmp(which, "elif")) {
                jnode *e = mk(p, N_IF, cur(p)->line);
                e->a = parse_tuple_or_expr(p, true, false);
                expect_bend(p);
                e->b = parse_body(p, ends, &which, line);
                tail->c = e;
                tail = e;
            } else if (!strcmp(which, "else")) {
                expect_bend(p);
                static const char *const ends2[] = {"endif", NULL};
                tail->c = parse_body(p, ends2, &which, line);
            } else {
                expect_bend(p);
                break;
            }
        }
        p->if_depth--;
    } else if (!strcmp(nm, "for")) {
        n = mk(p, N_FOR, line);
        n->a = parse_target(p, false);
        if (!is_name(cur(p), "in")) PFAIL(p, cur(p)->line, "expected 'in' in a for tag, found '%s'", tok_desc(cur(p)));
        p->pos++;
        n->b = parse_tuple_or_expr(p, false, false);
        if (is_name(cur(p), "if")) {
            p->pos++;
            n->c = parse_expr(p);
        }
        if (is_name(cur(p), "recursive")) PFAIL(p, cur(p)->line, "recursive for loops are not supported");
        expect_bend(p);
        static const char *const ends[] = {"else", "endfor", NULL};
        const char *which;
        p->loop_depth++;
        jnode *body = parse_body(p, ends, &which, line);
        p->loop_depth--;
        n->items = ar_alloc(p->ar, 2 * sizeof(jnode *));
        n->items[0] = body;
        if (!strcmp(which, "else")) {
            expect_bend(p);
            static const char *const ends2[] = {"endfor", NULL};
            n->items[1] = parse_body(p, ends2, &which, line);
        }
        n->n = 2;
        expect_bend(p);
    } else if (!strcmp(nm, "set")) {
        jnode *target = parse_target(p, true);
        if (is_op(cur(p), "=")) {
            p->pos++;
            n = mk(p, N_SET, line);
            n->a = target;
            n->b = parse_tuple_or_expr(p, true, false);
            expect_bend(p);
        } else {
            if (target->k != N_NAME) PFAIL(p, line, "a block set assigns one name");
            n = mk(p, N_SETBLOCK, line);
            n->a = target;
            if (is_op(cur(p), "|")) { /* {% set x | filter %} */
                jnode *hole = mk(p, N_NAME, line);
                hole->str = JINJA_BLOCK_VALUE;
                n->c = parse_filter_expr(p, hole);
                n->d = hole;
            }
            expect_bend(p);
            static const char *const ends[] = {"endset", NULL};
            const char *which;
            n->b = parse_body(p, ends, &which, line);
            expect_bend(p);
        }
    } else if (!strcmp(nm, "macro") || !strcmp(nm, "call")) {
        bool is_call = nm[0] == 'c';
        n = mk(p, is_call ? N_CALLBLOCK : N_MACRO, line);
        /* parameters: name or name=default */
        jkw *params = NULL;
        size_t np = 0, cap = 0;
        if (!is_call) n->str = expect_name(p);
        if (!is_call || is_op(cur(p), "(")) {
            expect_op(p, "(");
            while (!is_op(cur(p), ")")) {
                if (np) expect_op(p, ",");
                if (np == cap) {
                    cap = cap ? cap * 2 : 4;
                    jkw *nk = ar_alloc(p->ar, cap * sizeof *nk);
                    if (np) memcpy(nk, params, np * sizeof *nk);
                    params = nk;
                }
                params[np].name = expect_name(p);
                params[np].val = NULL;
                if (is_op(cur(p), "=")) {
                    p->pos++;
                    params[np].val = parse_expr(p);
                } else if (np && params[np - 1].val) {
                    PFAIL(p, cur(p)->line, "a parameter without a default follows one with a default");
                }
                np++;
            }
            expect_op(p, ")");
        }
        n->kw = params;
        n->nkw = np;
        if (is_call) {
            n->a = parse_expr(p);
            if (n->a->k != N_CALL) PFAIL(p, line, "a call block needs a call expression");
        }
        expect_bend(p);
        static const char *const mends[] = {"endmacro", NULL};
        static const char *const cends[] = {"endcall", NULL};
        const char *which;
        int saved_loops = p->loop_depth;
        p->loop_depth = 0;
        n->b = parse_body(p, is_call ? cends : mends, &which, line);
        p->loop_depth = saved_loops;
        if (cur(p)->k == T_NAME && !is_call && !strcmp(cur(p)->s, n->str)) p->pos++; /* {% endmacro name %} */
        expect_bend(p);
    } else if (!strcmp(nm, "filter")) {
        n = mk(p, N_FILTERBLOCK, line);
        jnode *hole = mk(p, N_NAME, line);
        hole->str = JINJA_BLOCK_VALUE;
        p->pos--; /* read "filter name(args)|more" as the filters of a value: the tag name becomes the pipe */
        p->t[p->pos].k = T_OP;
        strcpy(p->t[p->pos].op, "|");
        n->c = parse_filter_expr(p, hole);
        n->d = hole;
        expect_bend(p);
        static const char *const ends[] = {"endfilter", NULL};
        const char *which;
        n->b = parse_body(p, ends, &which, line);
        expect_bend(p);
    } else if (!strcmp(nm, "break") || !strcmp(nm, "continue")) {
        if (!p->loop_depth) PFAIL(p, line, "'%s' outside of a for loop", nm);
        n = mk(p, nm[0] == 'b' ? N_BREAK : N_CONTINUE, line);
        expect_bend(p);
    } else if (!strcmp(nm, "generation")) {
        /* transformers' AssistantTracker: marks assistant text, renders its body */
        expect_bend(p);
        static const char *const ends[] = {"endgeneration", NULL};
        const char *which;
        n = parse_body(p, ends, &which, line);
        expect_bend(p);
    } else {
        static const char *const unsupported[] = {"include", "extends", "block", "import", "from", "with",
                                                  "autoescape", NULL};
        for (size_t i = 0; unsupported[i]; i++)
            if (!strcmp(nm, unsupported[i])) PFAIL(p, line, "the tag '%s' is not supported", nm);
        PFAIL(p, line, "unknown or unexpected tag '%s'", nm);
    }
    p->depth--;
    return n;
}

/* Statements until one of the end tags (its name consumed, *which set) or,
 * with ends NULL, the end of the template. */
static jnode *parse_body(parser *p, const char *const *ends, const char **which, int open_line) {
    jnode *body = mk(p, N_BODY, cur(p)->line);
    nlist l = {0};
    for (;;) {
        tok *t = cur(p);
        if (t->k == T_EOF) {
            if (ends) {
                size_t last = 0;
                while (ends[last + 1]) last++;
                PFAIL(p, open_line, "this block is never closed (expected '%s' before the end of the template)",
                      ends[last]);
            }
            break;
        }
        const char *e = at_end_tag(p, ends);
        if (e) {
            p->pos += 2;
            *which = e;
            break;
        }
        if (t->k == T_TEXT) {
            jnode *x = mk(p, N_TEXT, t->line);
            x->val = mkval(p, V_STR);
            x->val->s.p = t->s;
            x->val->s.n = t->n;
            nl_push(p, &l, x);
            p->pos++;
        } else if (t->k == T_VBEGIN) {
            p->pos++;
            jnode *x = mk(p, N_OUT, t->line);
            x->a = parse_tuple_or_expr(p, true, false);
            if (cur(p)->k != T_VEND) PFAIL(p, cur(p)->line, "expected '}}', found '%s'", tok_desc(cur(p)));
            p->pos++;
            nl_push(p, &l, x);
        } else if (t->k == T_BBEGIN) {
            nl_push(p, &l, parse_statement(p));
        } else {
            PFAIL(p, t->line, "unexpected '%s'", tok_desc(t));
        }
    }
    body->items = l.a;
    body->n = l.n;
    return body;
}

bool jinja_parse(jtemplate *t, const char *src, size_t len, char *errmsg) {
    parser p = {0};
    p.ar = &t->ar;
    p.errmsg = errmsg;
    t->ar.fail = &p.jb;
    t->ar.errmsg = errmsg;
    if (setjmp(p.jb)) return false;
    /* newlines normalised to \n; one trailing newline dropped (jinja2's defaults) */
    char *s = ar_alloc(&t->ar, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n') i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n') n--;
    s[n] = 0;
    lex(&p, s, n);
    t->root = parse_body(&p, NULL, NULL, 0);
    return true;
}
