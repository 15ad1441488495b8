/* Sampling, in llama.cpp's order: penalties, top-k, top-p, min-p,
 * temperature, then a draw from the softmax (or the argmax when temp <= 0).
 * The draw uses our own generator, seeded from the seed and the position
 * of the token drawn (the count of tokens accepted before it, prompt
 * included): a token's draw depends on nothing else, so speculative
 * decoding, which samples a position only once its guesses before it were
 * accepted, draws exactly what decoding one token at a time draws. A seed
 * makes a run reproducible (it does not reproduce llama.cpp's stream). */
#include "trinity.h"

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
    free(s);
}

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

int32_t tr_sampler_sample(tr_sampler *s, const float *logits) {
    if (!s || !logits) return -1;
    const tr_sampler_params *p = &s->p;
    int32_t n = s->n_vocab;
    cand *c = s->cands;
    const bool penalize = p->repeat_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0;

    int32_t chosen;
    if (p->temp <= 0) {
        /* The argmax, straight off the logits (first of equals). */
        int32_t best = 0;
        float bl = penalised(s, logits, 0, penalize);
        for (int32_t i = 1; i < n; i++) {
            const float l = penalised(s, logits, i, penalize);
            if (l > bl) bl = l, best = i;
        }
        chosen = best;
    } else {
        if (p->top_k > 0 && p->top_k < n) {
            /* The k best in one pass through a heap of k (the vocabulary is
             * 262144 for Gemma: no copy and sort of all of it), then sorted:
             * the same candidates in the same order as a full sort. */
            const int32_t k = p->top_k;
            for (int32_t i = 0; i < k; i++) c[i] = (cand){.id = i, .logit = penalised(s, logits, i, penalize)};
            for (int32_t i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
            for (int32_t i = k; i < n; i++) {
                const cand x = {.id = i, .logit = penalised(s, logits, i, penalize)};
                if (cmp_desc(&x, &c[0]) < 0) { /* better than the worst kept */
                    c[0] = x;
                    heap_down(c, k, 0);
                }
            }
            qsort(c, (size_t)k, sizeof *c, cmp_desc);
            n = k;
        } else {
            for (int32_t i = 0; i < n; i++) c[i] = (cand){.id = i, .logit = penalised(s, logits, i, penalize)};
            qsort(c, (size_t)n, sizeof *c, cmp_desc);
        }
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
        chosen = c[n - 1].id;
        for (int32_t i = 0; i < n; i++) {
            cum += c[i].p;
            if (r < cum) {
                chosen = c[i].id;
                break;
            }
        }
    }
    tr_sampler_accept(s, chosen);
    return chosen;
}
