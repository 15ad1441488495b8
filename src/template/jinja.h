/* The Jinja interpreter's inner pieces shared by its files: the arena every
 * value and node lives in, the value type, and the error exit. A template is
 * parsed once into an AST (jinja_parse.c) that rendering (jinja_eval.c) walks;
 * each render owns one arena, freed whole at the end, so no value is ever
 * freed alone and an error can leave by longjmp without leaking. */
#ifndef TR_TEMPLATE_JINJA_H
#define TR_TEMPLATE_JINJA_H

#include "trinity.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------ arena */

typedef struct arena_blk arena_blk;
typedef struct arena {
    arena_blk *head;
    size_t used, limit; /* bytes handed out so far; the cap (0: none) */
    jmp_buf *fail;      /* where running out leaves to */
    char *errmsg;       /* ... with this message written (size 512) */
} arena;

void *ar_alloc(arena *a, size_t n); /* zeroed; longjmps on exhaustion */
char *ar_strndup(arena *a, const char *s, size_t n);
void ar_free(arena *a);

/* Leave the current parse or render with a message (the line is prefixed). */
_Noreturn void jfail(jmp_buf *jb, char *errmsg, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ------------------------------------------------------------------ values */

typedef enum vkind { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_FUNC } vkind;
typedef enum dkind { D_DICT, D_NAMESPACE, D_LOOP } dkind;

typedef struct jnode jnode;
typedef struct jscope jscope;
typedef struct jv jv;

struct jv {
    vkind k;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct {
            jv **a;
            size_t n, cap;
            bool tuple;
            int lazy;    /* L_*: what Python would have here instead of a list */
            size_t used; /* L_GEN, L_REVITER: items already consumed (an iterator runs once) */
        } l;
        struct {
            jv **keys, **vals;
            size_t n, cap;
            dkind kind;
            jv *loop_items; /* D_LOOP: the items iterated, and where the loop is: its */
            size_t loop_i;  /* attributes (index, first, nextitem ...) are computed when read */
        } d;
        struct {
            const char *name; /* builtin, method or macro name */
            jv *self;         /* bound method: the object */
            const jnode *macro;
            jscope *closure;
            const jnode *caller_body; /* a {% call %} block's body, as `caller` */
            jscope *caller_scope;
            bool unsafe; /* a sandbox-blocked method: calling it fails */
        } fn;
    };
    const char *uname; /* V_UNDEF: what was undefined, for messages */
    bool markup;       /* V_STR: markupsafe's Markup (from |safe, |escape): str operands get HTML-escaped */
};

/* Lists that stand for Python objects jinja2 templates meet: generators
 * (map, select ... filters), dict views (d.items()), a list_reverseiterator.
 * They iterate like lists, but have no len() (generators), print as their
 * object, cannot be indexed or turned into JSON. */
enum { L_LIST = 0, L_GEN, L_REVITER, L_ITEMS, L_KEYS, L_VALUES };

/* -------------------------------------------------------------------- AST */

typedef enum nkind {
    /* expressions */
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_BIN, N_NEG, N_POS, N_NOT, N_AND, N_OR,
    N_COND, N_LIST, N_TUPLE, N_DICT, N_CMP, N_CONCAT,
    /* statements */
    N_BODY, N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK, N_BREAK,
    N_CONTINUE,
} nkind;

typedef struct jkw {
    const char *name;
    jnode *val;
} jkw;

struct jnode {
    nkind k;
    int line;
    int op;           /* N_BIN / N_CMP operator token; N_TEST negated */
    const char *str;  /* names: variable, attribute, filter, test, macro */
    jv *val;          /* N_LIT, N_TEXT */
    jnode *a, *b, *c, *d; /* operands, bodies */
    jnode **items;    /* arguments, list items, statements, targets */
    size_t n;
    jkw *kw;          /* keyword arguments, macro parameters with defaults */
    size_t nkw;
    bool late;        /* unknown filter/test inside an if: fails only if evaluated */
};

/* Binary operators (N_BIN op, N_CMP ops). */
enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE,
       OP_IN, OP_NOTIN };

/* The variable a filter block's or set block's captured text is bound to
 * while its filters run (no template can spell this name). */
#define JINJA_BLOCK_VALUE " block"

typedef struct jtemplate {
    arena ar;
    jnode *root;
} jtemplate;

/* Parse src (len bytes) into t (t->ar set up by the caller). false: errmsg. */
bool jinja_parse(jtemplate *t, const char *src, size_t len, char *errmsg);
bool jinja_filter_known(const char *name);
bool jinja_test_known(const char *name);

#endif
