/* Drafters: prompt lookup (n-gram) and lookahead (Jacobi) guesses.
 *
 * n-gram ("prompt lookup decoding"): find the latest earlier occurrence of
 * the sequence's last g tokens (g = 4 down to 2) and guess the tokens that
 * followed it. Text that quotes, edits or extracts from its prompt repeats
 * long runs of it, and this guesses them for free. When that occurrence is
 * so recent that fewer than k tokens follow it (a pattern repeating every
 * few tokens: JSON fields, list items), the guesses so far are appended and
 * looked up again, so the guess runs on through the pattern (make
 * bench-spec's extract_json: 1.64 -> 2.74 tokens per step).
 *
 * lookahead: Jacobi iteration. The drafter keeps a window of guesses for
 * the positions after the sequence's last token; each verification gives
 * the model's choice after every guess, and those choices become the next
 * window (a guess conditioned on a wrong guess is still a better guess, and
 * the window converges towards what the model would write). Along the way
 * the trajectories yield n-grams: the token fed at position q in one step,
 * the model's choice for q + 1 there (fed at q + 1 the next step) and its
 * choice for q + 2 then: three tokens the model wrote one after another.
 * A pool keeps the latest few per first token; when the sequence's last
 * token starts one, the drafter guesses it (and chains further n-grams),
 * else the window. This is the lookahead decoding of Fu et al. (2024) with
 * one branch verified per step instead of a tree. */
#include "engine/spec.h"

#include <stdlib.h>
#include <string.h>

enum {
    NG_MAX = 4, NG_MIN = 2, /* prompt-lookup n-gram sizes, longest first */
    LA_WIN = 16,            /* Jacobi window: guesses kept */
    LA_N = 3,               /* n-grams harvested: a first token and LA_N - 1 after it */
    POOL_SETS = 4096, POOL_WAYS = 4,
};

typedef struct ngram {
    int32_t key;            /* first token, -1: empty */
    int32_t cont[LA_N - 1];
} ngram;

struct drafter {
    tr_spec_kind kind;
    /* n-gram: the context and the guesses so far, for chained lookups */
    int32_t *ctx;
    int32_t cap_ctx;
    /* lookahead */
    int32_t win[LA_WIN], n_win;
    int64_t win_pos;        /* position of win[0] */
    int32_t prev_in[LA_WIN + 1], prev_out[LA_WIN + 1], n_prev; /* the last verification's rows */
    int64_t prev_pos;       /* position of prev_in[0] */
    ngram *pool;            /* [POOL_SETS][POOL_WAYS], way 0 the latest */
};

drafter *drafter_new(tr_spec_kind kind) {
    if (kind != TR_SPEC_NGRAM && kind != TR_SPEC_LOOKAHEAD) return NULL;
    drafter *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->kind = kind;
    d->win_pos = d->prev_pos = -1;
    if (kind == TR_SPEC_LOOKAHEAD) {
        d->pool = malloc(sizeof *d->pool * POOL_SETS * POOL_WAYS);
        if (!d->pool) {
            free(d);
            return NULL;
        }
        for (int32_t i = 0; i < POOL_SETS * POOL_WAYS; i++) d->pool[i].key = -1;
    }
    return d;
}

void drafter_free(drafter *d) {
    if (!d) return;
    free(d->ctx);
    free(d->pool);
    free(d);
}

bool drafter_wants_all_rows(const drafter *d) { return d->kind == TR_SPEC_LOOKAHEAD; }

/* The continuation of the latest earlier occurrence of the last g tokens,
 * for the longest g in [g_min, NG_MAX] that occurs. */
static int32_t lookup(const int32_t *tok, int32_t n, int32_t k, int32_t g_min, int32_t *out) {
    for (int32_t g = NG_MAX; g >= g_min; g--) {
        if (n < g + 1) continue;
        const int32_t *key = tok + n - g;
        for (int32_t i = n - g - 1; i >= 0; i--) {
            if (tok[i] != key[0] || memcmp(tok + i, key, sizeof *key * (size_t)g)) continue;
            int32_t m = n - (i + g); /* tokens after the occurrence */
            if (m > k) m = k;
            memcpy(out, tok + i + g, sizeof *out * (size_t)m);
            return m;
        }
    }
    return 0;
}

static ngram *pool_set(drafter *d, int32_t key) {
    return d->pool + (size_t)(((uint32_t)key * 2654435761u) % POOL_SETS) * POOL_WAYS;
}

static const ngram *pool_find(drafter *d, int32_t key) {
    ngram *s = pool_set(d, key);
    for (int32_t w = 0; w < POOL_WAYS; w++)
        if (s[w].key == key) return &s[w];
    return NULL;
}

/* Insert as the latest (an equal n-gram moves to the front). */
static void pool_add(drafter *d, int32_t key, const int32_t *cont) {
    ngram *s = pool_set(d, key);
    int32_t at = POOL_WAYS - 1;
    for (int32_t w = 0; w < POOL_WAYS; w++)
        if (s[w].key == key && !memcmp(s[w].cont, cont, sizeof s[w].cont)) {
            at = w;
            break;
        }
    memmove(s + 1, s, sizeof *s * (size_t)at);
    s[0].key = key;
    memcpy(s[0].cont, cont, sizeof s[0].cont);
}

static int32_t lookahead_propose(drafter *d, const int32_t *tok, int32_t n, int32_t k, int32_t *out) {
    if (k > LA_WIN) k = LA_WIN;
    /* n-grams from the pool, chained */
    int32_t m = 0, last = tok[n - 1];
    for (const ngram *g; m < k && (g = pool_find(d, last));) {
        for (int32_t j = 0; j < LA_N - 1 && m < k; j++) out[m++] = g->cont[j];
        last = out[m - 1];
    }
    if (m > 0) return m;
    /* else the window, started from the context's last occurrence of the token */
    if (d->win_pos != n || d->n_win == 0) {
        d->n_win = lookup(tok, n, LA_WIN, 1, d->win);
        d->win_pos = n;
    }
    m = d->n_win < k ? d->n_win : k;
    memcpy(out, d->win, sizeof *out * (size_t)m);
    return m;
}

/* Prompt lookup, chained: while the occurrence found leaves fewer than k
 * guesses, look up again at the end of the context plus the guesses. */
static int32_t ngram_propose(drafter *d, const int32_t *tok, int32_t n, int32_t k, int32_t *out, int32_t *n_first) {
    int32_t m = lookup(tok, n, k, NG_MIN, out);
    *n_first = m;
    if (m == 0 || m >= k) return m;
    if (d->cap_ctx < n + k) {
        const int64_t twice = 2 * ((int64_t)n + k); /* room to grow into: the context grows a step at a time */
        const int32_t cap = twice > INT32_MAX ? n + k : (int32_t)twice;
        int32_t *c = realloc(d->ctx, sizeof *c * (size_t)cap);
        if (!c) return m; /* no room to chain: the first run's guesses */
        d->ctx = c;
        d->cap_ctx = cap;
    }
    memcpy(d->ctx, tok, sizeof *tok * (size_t)n);
    memcpy(d->ctx + n, out, sizeof *out * (size_t)m);
    for (int32_t more; m < k; m += more) {
        more = lookup(d->ctx, n + m, k - m, NG_MIN, d->ctx + n + m);
        if (more == 0) break;
        memcpy(out + m, d->ctx + n + m, sizeof *out * (size_t)more);
    }
    return m;
}

int32_t drafter_propose(drafter *d, const int32_t *tok, int32_t n, int32_t k, int32_t *out, int32_t *n_first) {
    *n_first = 0;
    if (!d || n <= 0 || k <= 0) return 0;
    if (d->kind == TR_SPEC_NGRAM) return ngram_propose(d, tok, n, k, out, n_first);
    return *n_first = lookahead_propose(d, tok, n, k, out);
}

void drafter_observe(drafter *d, const int32_t *tok, int32_t n, const int32_t *draft, int32_t n_draft,
                     const int32_t *out, int32_t n_acc) {
    if (!d || d->kind != TR_SPEC_LOOKAHEAD || n <= 0) return;
    const int64_t base = n - 1; /* position of row 0 */
    const int32_t rows = n_draft + 1;
    /* Harvest: row i's input at position q + 1 was the model's choice for
     * q + 1 in the previous step: (its input at q, that choice, this row's
     * choice) is an n-gram of the model's. */
    for (int32_t i = 1; i < rows; i++) {
        const int64_t q = base + i - 1, j = q - d->prev_pos;
        if (j < 0 || j >= d->n_prev || d->prev_out[j] != draft[i - 1]) continue;
        const int32_t cont[LA_N - 1] = {draft[i - 1], out[i]};
        pool_add(d, d->prev_in[j], cont);
    }
    /* The rows, for the next step's harvest. */
    d->prev_pos = base;
    d->n_prev = rows;
    for (int32_t i = 0; i < rows; i++) {
        d->prev_in[i] = i == 0 ? tok[n - 1] : draft[i - 1];
        d->prev_out[i] = out[i];
    }
    /* The next window: the model's choices after the first rejected row
     * (guesses for the positions after the new last token), then the old
     * window's guesses past the rows. */
    int32_t w[LA_WIN], nw = 0;
    for (int32_t i = n_acc + 1; i < rows && nw < LA_WIN; i++) w[nw++] = out[i];
    for (int64_t p = base + rows + 1; nw < LA_WIN; p++) {
        const int64_t j = p - d->win_pos;
        if (j < 0 || j >= d->n_win) break;
        w[nw++] = d->win[j];
    }
    memcpy(d->win, w, sizeof *w * (size_t)nw);
    d->n_win = nw;
    d->win_pos = n + n_acc + 1;
}

bool tr_spec_kind_parse(const char *name, tr_spec_kind *out) {
    static const char *const names[] = {"none", "ngram", "lookahead", "draft"};
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, names[i])) {
            *out = (tr_spec_kind)i;
            return true;
        }
    return false;
}

const char *tr_spec_kind_name(tr_spec_kind k) {
    switch (k) {
    case TR_SPEC_NONE: return "none";
    case TR_SPEC_NGRAM: return "ngram";
    case TR_SPEC_LOOKAHEAD: return "lookahead";
    case TR_SPEC_DRAFT: return "draft";
    }
    return "?";
}
