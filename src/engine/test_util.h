/* What the engine's tests (test_engine.c, test_engine_recurrent.c,
 * test_spec.c, test_stream.c) share: a sequence's run as recorded, the
 * engine made, and sequences submitted, stepped to their end and collected.
 * Header-only, and no test_*.c: tt.h's counters are per file, so a check
 * must be compiled into the test that reports it (and CMake makes every
 * src/<layer>/test_*.c a test of its own). */
#ifndef TR_ENGINE_TEST_UTIL_H
#define TR_ENGINE_TEST_UTIL_H

#include "trinity.h"
#include "tt.h"

enum { TU_MAX_GEN = 120, TU_MAX_SEQ = 8 };

/* One sequence's run: its tokens, and the hash of the logits each take
 * handed out, at the last token of the take (one token a step: every
 * token's). */
typedef struct tu_run {
    int32_t tok[TU_MAX_GEN];
    uint64_t logits_hash[TU_MAX_GEN];
    bool have_hash[TU_MAX_GEN];
    int32_t n, n_cached, n_drafted, n_accepted, n_steps;
    tr_finish finish;
} tu_run;

/* FNV-1a over the floats' bytes: equal hashes, the same bits. */
static inline uint64_t tu_hash_floats(const float *x, size_t n) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < n * sizeof *x; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* The same tokens and logits hashes. */
static inline bool tu_same(const tu_run *a, const tu_run *b) {
    return a->n == b->n && !memcmp(a->tok, b->tok, sizeof a->tok) &&
           !memcmp(a->logits_hash, b->logits_hash, sizeof a->logits_hash);
}

/* The engine, or NULL with the reason printed. */
static inline tr_engine *tu_engine_new(tr_model *model, const tr_engine_params *p) {
    tr_engine *e = NULL;
    tr_error err = {{0}};
    if (tr_engine_new(model, p, &e, &err) != TR_OK) fprintf(stderr, "  engine: %s\n", err.msg);
    return e;
}

/* Take what sequence id (of model's engine e) has after a step (at most cap tokens in all; with
 * one_per_step, checked to be one token when any), and the hash of the
 * logits of the last of them. */
static inline void tu_collect(tr_engine *e, const tr_model *model, int64_t id, int32_t cap, bool one_per_step,
                              tu_run *o) {
    int32_t t[TU_MAX_GEN];
    tr_seq_info info;
    const float *l = tr_engine_logits(e, id);
    int32_t k = tr_engine_take(e, id, t, cap, &info);
    if (k < 0) return;
    o->finish = info.finish;
    o->n_cached = info.n_cached;
    o->n_drafted = info.n_drafted;
    o->n_accepted = info.n_accepted;
    o->n_steps = info.n_steps;
    if (k == 0) return;
    if (one_per_step) TT_CHECK_EQ_INT(k, 1);
    TT_CHECK(o->n + k <= cap);
    if (o->n + k > cap) return;
    memcpy(o->tok + o->n, t, sizeof *t * (size_t)k);
    o->n += k;
    if (l) {
        o->logits_hash[o->n - 1] = tu_hash_floats(l, (size_t)tr_model_n_vocab(model));
        o->have_hash[o->n - 1] = true;
    }
}

/* Run sequences p[0..n) to their end, sequence k submitted after delay[k]
 * steps (delay NULL: all at once), collecting after every step; at most
 * max_steps steps. */
static inline void tu_run_many(tr_engine *e, const tr_model *model, const tr_seq_params *p, const int *delay, int n,
                               int max_steps, bool one_per_step, tu_run *out) {
    int64_t id[TU_MAX_SEQ];
    bool done[TU_MAX_SEQ] = {0};
    TT_CHECK(n <= TU_MAX_SEQ);
    if (n > TU_MAX_SEQ) return;
    memset(out, 0, sizeof *out * (size_t)n);
    for (int k = 0; k < n; k++) id[k] = -1;
    for (int step = 0; step < max_steps; step++) {
        for (int k = 0; k < n; k++)
            if (id[k] < 0 && step >= (delay ? delay[k] : 0)) {
                TT_CHECK(p[k].n_predict <= TU_MAX_GEN);
                tr_error err = {{0}};
                id[k] = tr_engine_submit(e, &p[k], &err);
                if (id[k] < 0) fprintf(stderr, "  submit: %s\n", err.msg);
                TT_CHECK(id[k] >= 0);
                if (id[k] < 0 || p[k].n_predict > TU_MAX_GEN) return;
            }
        tr_error err = {{0}};
        TT_CHECK(tr_engine_step(e, NULL, &err) == TR_OK);
        bool all = true;
        for (int k = 0; k < n; k++) {
            if (id[k] < 0 || done[k]) {
                all &= done[k];
                continue;
            }
            tu_collect(e, model, id[k], p[k].n_predict, one_per_step, &out[k]);
            done[k] = out[k].finish != TR_FINISH_NONE;
            all &= done[k];
        }
        if (all) return;
    }
    tt_fail("  %s:%d: the engine did not finish its sequences in %d steps\n", __FILE__, __LINE__, max_steps);
}

#endif
