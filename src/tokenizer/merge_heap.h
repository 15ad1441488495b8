/* The merge queue both tokenizers use: a binary min-heap of candidate merges.
 * A textual template: include it after defining the element type `bigram` and
 * `static inline bool before(const bigram *a, const bigram *b)` (a is merged
 * first), so each tokenizer keeps its own ordering and element without an
 * indirect call per comparison. */
#ifndef TR_MERGE_HEAP_H
#define TR_MERGE_HEAP_H

#include <stdbool.h>
#include <stdlib.h>

typedef struct heap {
    bigram *v;
    size_t n, cap;
} heap;

static bool heap_push(heap *h, bigram x) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        bigram *nv = realloc(h->v, cap * sizeof *nv);
        if (!nv) return false;
        h->v = nv;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&x, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = x;
    return true;
}

static bigram heap_pop(heap *h) {
    bigram top = h->v[0], x = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c])) c++;
        if (!before(&h->v[c], &x)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = x;
    return top;
}

#endif
