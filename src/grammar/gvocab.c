/* The vocabulary as a grammar sees it (grammar.h), and the public helpers
 * that match text against a grammar. */
#define _GNU_SOURCE /* qsort_r */
#include "grammar/grammar.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>

static int cmp_bytes(const void *a, const void *b, void *arg) {
    const tr_grammar_vocab *gv = arg;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    const uint32_t lx = gv->off[x + 1] - gv->off[x], ly = gv->off[y + 1] - gv->off[y];
    int c = memcmp(gv->bytes + gv->off[x], gv->bytes + gv->off[y], lx < ly ? lx : ly);
    if (c) return c;
    if (lx != ly) return lx < ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Sort, then each token's shared prefix with the one before. */
static bool finish(tr_grammar_vocab *gv) {
    gv->sorted = malloc(sizeof *gv->sorted * (size_t)(gv->n ? gv->n : 1));
    gv->lcp = malloc(sizeof *gv->lcp * (size_t)(gv->n ? gv->n : 1));
    if (!gv->sorted || !gv->lcp) return false;
    gv->n_sorted = 0;
    gv->first_eog = -1;
    for (int32_t t = 0; t < gv->n; t++) {
        if (gv->eog[t]) {
            if (gv->first_eog < 0) gv->first_eog = t;
        } else if (gv->off[t + 1] > gv->off[t]) {
            gv->sorted[gv->n_sorted++] = t;
        }
    }
    qsort_r(gv->sorted, (size_t)gv->n_sorted, sizeof *gv->sorted, cmp_bytes, gv);
    for (int32_t i = 0; i < gv->n_sorted; i++) {
        uint32_t l = 0;
        if (i > 0) {
            const int32_t a = gv->sorted[i - 1], b = gv->sorted[i];
            const uint32_t la = gv->off[a + 1] - gv->off[a], lb = gv->off[b + 1] - gv->off[b];
            const char *pa = gv->bytes + gv->off[a], *pb = gv->bytes + gv->off[b];
            while (l < la && l < lb && pa[l] == pb[l]) l++;
        }
        gv->lcp[i] = l;
    }
    return true;
}

tr_grammar_vocab *tr_grammar_vocab_from_pieces(int32_t n, const char *const *pieces, const size_t *lens,
                                               const bool *eog) {
    if (n <= 0) return NULL;
    tr_grammar_vocab *gv = calloc(1, sizeof *gv);
    if (!gv) return NULL;
    gv->n = n;
    size_t total = 0;
    for (int32_t t = 0; t < n; t++) total += lens[t];
    gv->bytes = malloc(total ? total : 1);
    gv->off = malloc(sizeof *gv->off * ((size_t)n + 1));
    gv->eog = malloc((size_t)n);
    if (!gv->bytes || !gv->off || !gv->eog || total >= UINT32_MAX) {
        tr_grammar_vocab_free(gv);
        return NULL;
    }
    size_t k = 0;
    for (int32_t t = 0; t < n; t++) {
        gv->off[t] = (uint32_t)k;
        memcpy(gv->bytes + k, pieces[t], lens[t]);
        k += lens[t];
        gv->eog[t] = eog && eog[t];
    }
    gv->off[n] = (uint32_t)k;
    if (!finish(gv)) {
        tr_grammar_vocab_free(gv);
        return NULL;
    }
    return gv;
}

tr_grammar_vocab *tr_grammar_vocab_new(const tr_vocab *v) {
    if (!v) return NULL;
    const int32_t n = tr_vocab_n_tokens(v);
    if (n <= 0) return NULL;
    tr_grammar_vocab *gv = calloc(1, sizeof *gv);
    if (!gv) return NULL;
    gv->n = n;
    size_t cap = (size_t)n * 8, k = 0;
    gv->bytes = malloc(cap);
    gv->off = malloc(sizeof *gv->off * ((size_t)n + 1));
    gv->eog = malloc((size_t)n);
    if (!gv->bytes || !gv->off || !gv->eog) goto fail;
    for (int32_t t = 0; t < n; t++) {
        /* the text a token stands for in output (control tokens: none) */
        size_t len = tr_token_to_piece(v, t, false, NULL, 0);
        if (k + len > cap) {
            cap = cap * 2 + len;
            char *b = realloc(gv->bytes, cap);
            if (!b) goto fail;
            gv->bytes = b;
        }
        if (k + len >= UINT32_MAX) goto fail;
        gv->off[t] = (uint32_t)k;
        tr_token_to_piece(v, t, false, gv->bytes + k, len);
        k += len;
        gv->eog[t] = tr_vocab_is_eog(v, t);
    }
    gv->off[n] = (uint32_t)k;
    if (!finish(gv)) goto fail;
    return gv;
fail:
    tr_grammar_vocab_free(gv);
    return NULL;
}

void tr_grammar_vocab_free(tr_grammar_vocab *gv) {
    if (!gv) return;
    free(gv->bytes);
    free(gv->off);
    free(gv->eog);
    free(gv->sorted);
    free(gv->lcp);
    free(gv);
}

int tr_grammar_match(const tr_grammar *g, const char *text, size_t len) {
    if (!g || (!text && len)) return -1;
    gmatch *m = gm_new(g);
    if (!m) return -1;
    int r = !gm_take(m, text, len) ? 0 : gm_complete(m) ? 2 : 1;
    gm_free(m);
    return r;
}
