/* Grammars: the compiled form of a GBNF grammar (llama.cpp's syntax, which
 * JSON schemas are translated into) and the matcher that constrains
 * sampling with it.
 *
 * A grammar is llama.cpp's representation: rules of elements, alternatives
 * separated by G_ALT, each rule ended by G_END; repetitions and groups are
 * rewritten into generated rules by the parser. A matcher's state is a set
 * of stacks, as in llama.cpp's pushdown recogniser: each stack is the list
 * of positions still to match, the top a character element. Stacks are
 * persistent linked lists of interned nodes (position, parent), so a set of
 * stacks is a set of node ids and equal stacks are one node; nodes created
 * while checking candidate tokens are dropped again after each step. The
 * text matched is UTF-8: a token may end inside a character, and the state
 * then carries the partial character. */
#ifndef TR_GRAMMAR_H
#define TR_GRAMMAR_H

#include "trinity.h"

enum {
    G_END = 0,      /* end of a rule */
    G_ALT,          /* start of another alternative */
    G_REF,          /* value: a rule index */
    G_CHAR,         /* value: a code point; followed by G_RNG_UPPER / G_CHAR_ALT to make a class */
    G_CHAR_NOT,     /* the same, negated ([^...]) */
    G_RNG_UPPER,    /* value: the upper end of the range started by the element before */
    G_CHAR_ALT,     /* value: another code point of the class */
    G_ANY,          /* any code point (.) */
};

typedef struct gelem {
    uint32_t type, value;
} gelem;

struct tr_grammar {
    gelem *el;            /* every rule's elements, one after another */
    uint32_t n_el;
    uint32_t *rule_start; /* [n_rules] */
    uint32_t n_rules, root;
};

/* The vocabulary as the grammar sees it: each token's bytes, which tokens
 * end generation, and the tokens sorted by their bytes with the length of
 * the prefix each shares with the one before (a trie, flattened), so that a
 * whole-vocabulary mask walks each shared prefix once. */
struct tr_grammar_vocab {
    int32_t n;
    char *bytes;
    uint32_t *off;     /* [n + 1]: token t is bytes[off[t] .. off[t+1]) */
    uint8_t *eog;      /* [n] */
    int32_t *sorted;   /* [n_sorted]: the tokens with bytes that do not end generation, by their bytes */
    uint32_t *lcp;     /* [n_sorted]: bytes sorted[i] shares with sorted[i - 1] */
    int32_t n_sorted;
    int32_t first_eog; /* -1: none */
};

/* A matcher: one sequence's position in a grammar. */
typedef struct gmatch gmatch;

gmatch *gm_new(const tr_grammar *g); /* g is copied */
void gm_free(gmatch *m);
/* Back to the start (nothing matched). */
void gm_reset(gmatch *m);
/* Whether the text so far is a whole sentence of the grammar (it may go on). */
bool gm_complete(const gmatch *m);
/* Whether nothing can follow (no stack left and the text is complete or dead). */
bool gm_dead(const gmatch *m);
/* Whether bytes can follow the text so far (the text stays a prefix of a
 * sentence); the state does not change. */
bool gm_can_take(gmatch *m, const char *bytes, size_t len);
/* Take bytes; false (and the state unchanged) if they cannot follow. */
bool gm_take(gmatch *m, const char *bytes, size_t len);
/* allowed[t] = 1 for each token of gv that may follow (end-of-generation
 * tokens: when the text is complete), else 0. Returns how many. */
int32_t gm_mask(gmatch *m, const tr_grammar_vocab *gv, uint8_t *allowed);
/* Whether token t may follow. */
bool gm_token_ok(gmatch *m, const tr_grammar_vocab *gv, int32_t t);
/* Take token t (an end-of-generation token takes nothing). */
bool gm_take_token(gmatch *m, const tr_grammar_vocab *gv, int32_t t);

/* A vocabulary from raw pieces (tests). */
tr_grammar_vocab *tr_grammar_vocab_from_pieces(int32_t n, const char *const *pieces, const size_t *lens,
                                               const bool *eog);

#endif
