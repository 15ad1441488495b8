/* Sampling, in llama.cpp's order: penalties, top-k, top-p, min-p,
 * temperature, then a draw from the softmax (or the argmax when temp <= 0).
 * The draw uses our own generator, seeded from the seed and the position
 * of the token drawn (the count of tokens accepted before it, prompt
 * included): a token's draw depends on nothing else, so speculative
 * decoding, which samples a position only once its guesses before it were
 * accepted, draws exactly what decoding one token at a time draws. A seed
 * makes a run reproducible (it does not reproduce llama.cpp's stream). */
#include "trinity.h"

#include "core/util.h"
#include "grammar/grammar.h"
#include "ops/ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    int32_t id;
    float logit;
    float p;
} cand;

struct tr_sampler {
    tr_sampler_params p;
    int32_t n_vocab;
    cand *cands;        /* [n_vocab] */
    int32_t *counts;    /* [n_vocab]: occurrences in the penalty window */
    int32_t *hist;      /* ring of the last `hist_cap` tokens */
    int32_t hist_cap, hist_len, hist_head;
    int64_t pos;        /* tokens accepted so far: the position of the next draw */
    gmatch *gm;         /* the grammar's state, NULL: unconstrained */
    const tr_grammar_vocab *gv;
    uint8_t *allowed;   /* [n_vocab]: the grammar's mask, when every token is checked */
    int32_t *ids;       /* [n_vocab]: the allowed tokens */
    uint64_t *rsort;    /* [2 * n_vocab]: radix sort's keys, made on first use (top-k off) */
};

tr_sampler_params tr_sampler_default_params(void) {
    tr_sampler_params p = {
        .temp = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0xFFFFFFFFu, /* llama.cpp's LLAMA_DEFAULT_SEED: the caller picks a random one */
    };
    return p;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits, a function of (seed, pos) only. */
static double rng_uniform(uint64_t seed, int64_t pos) {
    uint64_t st = seed;
    st = splitmix64(&st) ^ (uint64_t)pos * 0xD1B54A32D192ED03ull;
    return (double)(splitmix64(&st) >> 11) * (1.0 / 9007199254740992.0);
}

tr_sampler *tr_sampler_new(const tr_sampler_params *p, int32_t n_vocab) {
    if (!p || n_vocab <= 0) return NULL;
    tr_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->hist_cap = p->repeat_last_n < 0 ? 1 << 20 : p->repeat_last_n;
    s->cands = malloc((size_t)n_vocab * sizeof *s->cands);
    s->counts = calloc((size_t)n_vocab, sizeof *s->counts);
    s->hist = malloc((size_t)(s->hist_cap > 0 ? s->hist_cap : 1) * sizeof *s->hist);
    if (!s->cands || !s->counts || !s->hist) {
        tr_sampler_free(s);
        return NULL;
    }
    return s;
}

void tr_sampler_free(tr_sampler *s) {
    if (!s) return;
    free(s->cands);
    free(s->counts);
    free(s->hist);
    gm_free(s->gm);
    free(s->allowed);
    free(s->ids);
    free(s->rsort);
    free(s);
}

tr_status tr_sampler_set_grammar(tr_sampler *s, const tr_grammar *g, const tr_grammar_vocab *gv, tr_error *err) {
    if (!s || !g || !gv) return tr_err_set(err, TR_ERR_ARG, "grammar: no sampler, grammar or vocabulary");
    if (gv->n != s->n_vocab)
        return tr_err_set(err, TR_ERR_ARG, "grammar: the vocabulary has %d tokens, the sampler %d", gv->n, s->n_vocab);
    gmatch *m = gm_new(g);
    uint8_t *a = malloc((size_t)s->n_vocab);
    int32_t *ids = malloc(sizeof *ids * (size_t)s->n_vocab);
    if (!m || !a || !ids) {
        gm_free(m);
        free(a);
        free(ids);
        return tr_err_set(err, TR_ERR_NOMEM, "grammar: out of memory for its state");
    }
    gm_free(s->gm);
    free(s->allowed);
    free(s->ids);
    s->gm = m;
    s->gv = gv;
    s->allowed = a;
    s->ids = ids;
    return TR_OK;
}

bool tr_sampler_grammar_complete(const tr_sampler *s) { return s && s->gm && gm_complete(s->gm); }

void tr_sampler_accept(tr_sampler *s, int32_t id) {
    if (!s || id < 0 || id >= s->n_vocab) return;
    s->pos++;
    if (s->hist_cap <= 0) return;
    if (s->hist_len == s->hist_cap) { /* forget the oldest */
        int32_t old = s->hist[s->hist_head];
        s->counts[old]--;
        s->hist[s->hist_head] = id;
        s->hist_head = (s->hist_head + 1) % s->hist_cap;
    } else {
        s->hist[(s->hist_head + s->hist_len) % s->hist_cap] = id;
        s->hist_len++;
    }
    s->counts[id]++;
}

static int cmp_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

/* The penalised logit of token i, as llama.cpp applies them: divide
 * positive logits, multiply negative ones, then subtract count * frequency
 * + presence. */
static inline float penalised(const tr_sampler *s, const float *logits, int32_t i, bool penalize) {
    float l = logits[i];
    if (penalize && s->counts[i] > 0) {
        const tr_sampler_params *p = &s->p;
        l = l <= 0 ? l * p->repeat_penalty : l / p->repeat_penalty;
        l -= (float)s->counts[i] * p->frequency_penalty + p->presence_penalty;
    }
    return l;
}

/* Min-heap on cmp_desc's order (the root is the worst kept). */
static void heap_down(cand *h, int32_t k, int32_t i) {
    for (;;) {
        int32_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < k && cmp_desc(&h[l], &h[w]) > 0) w = l;
        if (r < k && cmp_desc(&h[r], &h[w]) > 0) w = r;
        if (w == i) return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Above this many, the k best are found by a radix sort of all n. */
enum { RADIX_MIN = 4096 };

/* cmp_desc's order as an unsigned key, smallest first: the float's bits
 * made monotone and flipped, -0 as +0 (cmp_desc finds them equal; a stable
 * sort then keeps them in id order, as its tie rule does). */
static inline uint32_t desc_key(float l) {
    if (l == 0) l = 0.0f;
    uint32_t u;
    memcpy(&u, &l, 4);
    return ~(u >> 31 ? ~u : u | 0x80000000u);
}

/* All n candidates sorted by cmp_desc, the first k into c: an LSD radix
 * sort (four stable passes of 8 bits over key << 32 | index, indices in
 * increasing id order), 2 ms for Gemma's 262144 where qsort took 40 ms.
 * False when its buffer cannot be had (the caller sorts as before). */
static bool radix_k(tr_sampler *s, const float *logits, bool penalize, const int32_t *ids, int32_t n, int32_t k,
                    cand *c) {
    if (!s->rsort && !(s->rsort = malloc(sizeof *s->rsort * 2 * (size_t)s->n_vocab))) return false;
    uint64_t *a = s->rsort, *b = s->rsort + s->n_vocab;
    for (int32_t i = 0; i < n; i++)
        a[i] = (uint64_t)desc_key(penalised(s, logits, ids ? ids[i] : i, penalize)) << 32 | (uint32_t)i;
    for (int shift = 32; shift < 64; shift += 8) {
        int32_t cnt[257] = {0};
        for (int32_t i = 0; i < n; i++) cnt[(a[i] >> shift & 255) + 1]++;
        for (int d = 0; d < 256; d++) cnt[d + 1] += cnt[d];
        for (int32_t i = 0; i < n; i++) b[cnt[a[i] >> shift & 255]++] = a[i];
        uint64_t *t = a;
        a = b, b = t;
    }
    for (int32_t i = 0; i < k; i++) {
        const int32_t id = ids ? ids[(uint32_t)a[i]] : (int32_t)(uint32_t)a[i];
        c[i] = (cand){.id = id, .logit = penalised(s, logits, id, penalize)};
    }
    return true;
}

/* The k best of the n candidates of `ids` (NULL: tokens 0..n-1; ids in
 * increasing order) by cmp_desc, sorted, into c[0..k): one pass through a
 * heap of k (Gemma's vocabulary is 262144: no copy and sort of all of it),
 * or for large k a radix sort of all. Returns k. */
static int32_t best_k(tr_sampler *s, const float *logits, bool penalize, const int32_t *ids, int32_t n, int32_t k,
                      cand *c) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    if (k > RADIX_MIN && radix_k(s, logits, penalize, ids, n, k, c)) return k;
    for (int32_t i = 0; i < k; i++) {
        const int32_t id = ids ? ids[i] : i;
        c[i] = (cand){.id = id, .logit = penalised(s, logits, id, penalize)};
    }
    if (k < n) {
        for (int32_t i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
        for (int32_t i = k; i < n; i++) {
            const int32_t id = ids ? ids[i] : i;
            const cand x = {.id = id, .logit = penalised(s, logits, id, penalize)};
            if (cmp_desc(&x, &c[0]) < 0) { /* better than the worst kept */
                c[0] = x;
                heap_down(c, k, 0);
            }
        }
    }
    qsort(c, (size_t)k, sizeof *c, cmp_desc);
    return k;
}

/* From candidates sorted best first (top-k already applied): top-p, min-p,
 * temperature, then the draw keyed by (seed, position). */
static int32_t draw(const tr_sampler *s, cand *c, int32_t n) {
    const tr_sampler_params *p = &s->p;
    /* softmax over the survivors (sorted, c[0] is the largest) */
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        c[i].p = expf(c[i].logit - c[0].logit);
        sum += c[i].p;
    }
    if (p->top_p < 1.0f) {
        double cum = 0;
        int32_t keep = n;
        for (int32_t i = 0; i < n; i++) {
            cum += c[i].p / sum;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0) {
        /* keep p_i >= min_p * p_max, i.e. logit >= max + log(min_p) */
        const float floor_logit = c[0].logit + logf(p->min_p);
        int32_t keep = 1;
        while (keep < n && c[keep].logit >= floor_logit) keep++;
        n = keep;
    }
    /* temperature, then draw */
    sum = 0;
    for (int32_t i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - c[0].logit) / p->temp);
        sum += c[i].p;
    }
    const double r = rng_uniform(s->p.seed, s->pos) * sum;
    double cum = 0;
    for (int32_t i = 0; i < n; i++) {
        cum += c[i].p;
        if (r < cum) return c[i].id;
    }
    return c[n - 1].id;
}

/* Under a grammar. The result must be that of masking every forbidden
 * token and sampling as usual; checking a token is the expensive part, so
 * when only the best few allowed tokens matter (greedy: one; top-k: k) the
 * best candidates are checked in order, and the whole vocabulary is masked
 * (gm_mask, one walk of the sorted token bytes) only when they do not hold
 * enough allowed tokens, or when every allowed token counts (no top-k). The
 * first `need` allowed tokens in cmp_desc order are exactly the top-`need`
 * of the masked logits, so both ways pick the same token (test_grammar
 * checks it against a full mask). */
static int32_t sample_grammar(tr_sampler *s, const float *logits, bool penalize) {
    const tr_sampler_params *p = &s->p;
    const int32_t n = s->n_vocab;
    cand *c = s->cands;
    const int32_t need = p->temp <= 0 ? 1 : (p->top_k > 0 && p->top_k < n) ? p->top_k : n;
    if (need < n) {
        int32_t m = need * 4 < 256 ? 256 : need * 4;
        m = best_k(s, logits, penalize, NULL, n, m, c);
        int32_t got = 0;
        for (int32_t i = 0; i < m && got < need; i++)
            if (gm_token_ok(s->gm, s->gv, c[i].id)) c[got++] = c[i];
        if (got == need) return p->temp <= 0 ? c[0].id : draw(s, c, got);
    }
    int32_t n_ok = gm_mask(s->gm, s->gv, s->allowed);
    if (n_ok == 0) return s->gv->first_eog >= 0 ? s->gv->first_eog : 0;
    int32_t *ids = s->ids;
    int32_t k = 0;
    for (int32_t t = 0; t < n; t++)
        if (s->allowed[t]) ids[k++] = t;
    if (p->temp <= 0) {
        int32_t best = ids[0];
        float bl = penalised(s, logits, best, penalize);
        for (int32_t i = 1; i < k; i++) {
            const float l = penalised(s, logits, ids[i], penalize);
            if (l > bl) bl = l, best = ids[i];
        }
        return best;
    }
    const int32_t kk = best_k(s, logits, penalize, ids, k, p->top_k > 0 && p->top_k < k ? p->top_k : k, c);
    return draw(s, c, kk);
}

int32_t tr_sampler_sample(tr_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    const tr_sampler_params *p = &s->p;
    const int32_t n = s->n_vocab;
    const bool penalize = p->repeat_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0;

    int32_t chosen;
    if (s->gm) {
        chosen = sample_grammar(s, logits, penalize);
        gm_take_token(s->gm, s->gv, chosen);
    } else if (p->temp <= 0 && !penalize) {
        chosen = (int32_t)tr_argmax(logits, n); /* the argmax, straight off the logits (first of equals) */
    } else if (p->temp <= 0) {
        /* The argmax of the penalised logits (first of equals). */
        int32_t best = 0;
        float bl = penalised(s, logits, 0, penalize);
        for (int32_t i = 1; i < n; i++) {
            const float l = penalised(s, logits, i, penalize);
            if (l > bl) bl = l, best = i;
        }
        chosen = best;
    } else {
        const int32_t k = best_k(s, logits, penalize, NULL, n, p->top_k > 0 && p->top_k < n ? p->top_k : n, s->cands);
        chosen = draw(s, s->cands, k);
    }
    tr_sampler_accept(s, chosen);
    return chosen;
}
