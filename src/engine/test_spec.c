/* Speculative decoding changes how many tokens a step yields, never which:
 * on the real model (Gemma 3 270M), every drafter, greedy and sampled at
 * temperature 0.8 with a seed, alone and batched with other sequences
 * (with and without speculation), gives the tokens of plain decoding, and
 * the logits each step hands out are the same bits as plain decoding's for
 * that token. Prompts that repeat themselves make the drafters' guesses
 * right often (checked: guesses are accepted), so the rollback of rejected
 * guesses and the acceptance of right ones are both exercised. Also: the
 * cache after a rollback equals a cache that never saw the rejected tokens;
 * cancelling mid-speculation frees every block; bad settings are refused. */
#include "engine/spec.h"
#include "trinity.h"
#include "tt.h"
#include "engine/test_util.h"

#define MODEL "models/gemma-3-270m-q4_k_m.gguf"
enum { N_PROMPTS = 4, N_GEN = 40 };

static tr_model *model;
static int32_t *prompts[N_PROMPTS];
static size_t n_prompt[N_PROMPTS];

static tr_engine *engine(int32_t n_seq, int32_t n_batch, bool cache) {
    tr_engine_params p = tr_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_batch = n_batch;
    p.ctx.n_ctx = 2048;
    p.ctx.n_threads = 2;
    p.no_prefix_cache = !cache;
    return tu_engine_new(model, &p);
}

static tr_seq_params seq_params(int i, float temp, tr_spec_kind kind) {
    tr_seq_params p = {.prompt = prompts[i], .n_prompt = (int32_t)n_prompt[i], .n_predict = N_GEN,
                       .sampling = tr_sampler_default_params()};
    p.sampling.temp = temp;
    p.sampling.seed = 99 + (uint64_t)i;
    p.ignore_eog = true;
    p.spec.kind = kind;
    return p;
}

/* Run sequences p[0..n) (sequence k submitted after delay[k] steps) to the
 * end: the tokens each step yields, and the logits hash of the last of them. */
static void run_many(tr_engine *e, const tr_seq_params *p, const int *delay, int n, tu_run *out) {
    tu_run_many(e, model, p, delay, n, 4000, false, out);
}

static tu_run ref[2][N_PROMPTS]; /* [greedy, sampled][prompt]: plain decoding, alone */

/* The same tokens, and every logits hash the speculative run has equals
 * plain decoding's for that token. */
static bool same_as_ref(const tu_run *o, const tu_run *r) {
    if (o->n != r->n || memcmp(o->tok, r->tok, sizeof o->tok)) return false;
    for (int i = 0; i < o->n; i++)
        if (o->have_hash[i] && o->logits_hash[i] != r->logits_hash[i]) return false;
    return true;
}

/* The n-gram drafter on its own (no model): guesses follow the latest
 * earlier occurrence of the context's end, and run on through a pattern
 * that repeats every few tokens (the occurrence is too recent to supply k
 * guesses alone); a context whose end never occurred before gives none. */
TT_TEST(ngram_guesses_run_on_through_a_repeating_pattern) {
    drafter *d = drafter_new(TR_SPEC_NGRAM);
    TT_CHECK(d != NULL);
    if (!d) return;
    enum { N = 11, K = 10, P = 3 };
    int32_t tok[N], out[K], first = -1;
    for (int i = 0; i < N; i++) tok[i] = 100 + i % P; /* 100 101 102 100 ... */
    int32_t m = drafter_propose(d, tok, N, K, out, &first);
    TT_CHECK(m == K);
    TT_CHECK(first == 3); /* the latest occurrence (of the last 4) has 3 tokens after it */
    for (int i = 0; i < m; i++) TT_CHECK(out[i] == 100 + (N + i) % P);
    /* a long-ago occurrence with enough tokens after it: its continuation */
    int32_t t2[40];
    for (int i = 0; i < 40; i++) t2[i] = 200 + i;
    t2[37] = 210, t2[38] = 211, t2[39] = 212; /* the end repeats 210 211 212 */
    m = drafter_propose(d, t2, 40, 5, out, &first);
    TT_CHECK(m == 5 && first == 5);
    for (int i = 0; i < m; i++) TT_CHECK(out[i] == 213 + i);
    /* nothing to follow */
    for (int i = 0; i < 40; i++) t2[i] = 300 + i;
    TT_CHECK(drafter_propose(d, t2, 40, 5, out, &first) == 0);
    drafter_free(d);
}

TT_TEST(references_plain_decoding) {
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < N_PROMPTS; i++) {
            tr_engine *e = engine(1, 512, false);
            if (!e) return;
            tr_seq_params p = seq_params(i, t ? 0.8f : 0.0f, TR_SPEC_NONE);
            int d = 0;
            run_many(e, &p, &d, 1, &ref[t][i]);
            TT_CHECK_EQ_INT(ref[t][i].n, N_GEN);
            TT_CHECK_EQ_INT(ref[t][i].n_steps, N_GEN);
            TT_CHECK_EQ_INT(ref[t][i].n_drafted, 0);
            tr_engine_free(e);
        }
}

static const char *kind_name(tr_spec_kind k) { return tr_spec_kind_name(k); }

TT_TEST(every_drafter_alone_gives_plain_decodings_tokens) {
    const tr_spec_kind kinds[] = {TR_SPEC_NGRAM, TR_SPEC_LOOKAHEAD};
    for (int ki = 0; ki < 2; ki++)
        for (int t = 0; t < 2; t++) {
            int32_t accepted = 0, steps = 0, gen = 0;
            for (int i = 0; i < N_PROMPTS; i++) {
                tr_engine *e = engine(1, 512, false);
                if (!e) return;
                tr_seq_params p = seq_params(i, t ? 0.8f : 0.0f, kinds[ki]);
                tu_run o;
                int d = 0;
                run_many(e, &p, &d, 1, &o);
                const bool ok = same_as_ref(&o, &ref[t][i]);
                if (!ok) fprintf(stderr, "  %s, prompt %d, temp %.1f: differs from plain decoding\n",
                                 kind_name(kinds[ki]), i, t ? 0.8 : 0.0);
                TT_CHECK(ok);
                TT_CHECK(o.n_accepted <= o.n_drafted);
                TT_CHECK_EQ_INT(o.n, N_GEN);
                accepted += o.n_accepted;
                steps += o.n_steps;
                gen += o.n;
                tr_engine_free(e);
            }
            fprintf(stderr, "  %s temp %.1f: %d tokens in %d steps, %d guesses accepted\n", kind_name(kinds[ki]),
                    t ? 0.8 : 0.0, gen, steps, accepted);
            /* The prompts repeat themselves: guesses were made and some accepted, so
             * multi-token steps and rollbacks both ran. */
            TT_CHECK(accepted > 0);
            TT_CHECK(steps < gen);
        }
}

TT_TEST(batched_mixed_speculation_gives_the_same_tokens) {
    /* Four sequences arriving at different times, two of them twice, with
     * different drafters and none, small batches (prompts in chunks). */
    const tr_spec_kind kinds[] = {TR_SPEC_NGRAM, TR_SPEC_LOOKAHEAD, TR_SPEC_NONE, TR_SPEC_NGRAM,
                                  TR_SPEC_LOOKAHEAD, TR_SPEC_NONE};
    const int which[] = {0, 1, 2, 3, 0, 2}, delay[] = {0, 2, 3, 5, 8, 1};
    for (int t = 0; t < 2; t++) {
        {
            const int cache = t; /* greedy without the prefix cache, sampled with it */
            tr_engine *e = engine(6, 24, cache);
            if (!e) return;
            tr_seq_params p[6];
            for (int k = 0; k < 6; k++) p[k] = seq_params(which[k], t ? 0.8f : 0.0f, kinds[k]);
            p[3].spec.n_max = 3; /* a short draft limit */
            tu_run o[6];
            run_many(e, p, delay, 6, o);
            for (int k = 0; k < 6; k++) {
                const bool ok = same_as_ref(&o[k], &ref[t][which[k]]);
                if (!ok) fprintf(stderr, "  batched: sequence %d (%s, temp %.1f, cache %d) differs\n", k,
                                 kind_name(kinds[k]), t ? 0.8 : 0.0, cache);
                TT_CHECK(ok);
            }
            tr_kv_stats ks;
            tr_context_kv_stats(tr_engine_context(e), &ks);
            TT_CHECK_EQ_INT(ks.blocks_used, 0);
            TT_CHECK_EQ_INT((int)ks.tokens_held, 0);
            tr_engine_free(e);
        }
    }
}

/* The draft model (here the model itself: every guess is right under
 * greedy decoding, some are not when sampling) beside other drafters in
 * one batch: the same tokens again, and the draft context keeps up with
 * each sequence's accepted tokens. */
TT_TEST(draft_model_gives_the_same_tokens) {
    tr_engine_params ep = tr_engine_default_params();
    ep.ctx.n_seq_max = 3;
    ep.ctx.n_batch = 32;
    ep.ctx.n_ctx = 1024;
    ep.ctx.n_threads = 2;
    ep.draft_model = model;
    tr_engine *e = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_engine_new(model, &ep, &e, &err) == TR_OK);
    if (!e) return;
    for (int t = 0; t < 2; t++) {
        const tr_spec_kind kinds[3] = {TR_SPEC_DRAFT, TR_SPEC_NGRAM, TR_SPEC_DRAFT};
        const int which[3] = {1, 2, 3}, delay[3] = {0, 1, 4};
        tr_seq_params p[3];
        for (int k = 0; k < 3; k++) p[k] = seq_params(which[k], t ? 0.8f : 0.0f, kinds[k]);
        tu_run o[3];
        run_many(e, p, delay, 3, o);
        for (int k = 0; k < 3; k++) {
            const bool ok = same_as_ref(&o[k], &ref[t][which[k]]);
            if (!ok) fprintf(stderr, "  draft model: sequence %d (temp %.1f) differs\n", k, t ? 0.8 : 0.0);
            TT_CHECK(ok);
        }
        if (t == 0) TT_CHECK(o[0].n_accepted > 0 && o[0].n_steps < N_GEN);
    }
    tr_engine_free(e);
}

/* A context that decoded tokens and then lost some to a rollback gives the
 * next token the same logits as one that never saw them. */
TT_TEST(rollback_leaves_no_trace) {
    tr_context_params cp = tr_context_default_params();
    cp.n_ctx = 512;
    cp.n_threads = 2;
    cp.n_seq_max = 2;
    tr_context *c = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_context_new(model, &cp, &c, &err) == TR_OK);
    if (!c) return;
    const int32_t n = (int32_t)n_prompt[0];
    int32_t pos[64], seq[64], tok[64];
    int8_t want[64] = {0};
    for (int32_t i = 0; i < n; i++) pos[i] = i;
    const int n_vocab = tr_model_n_vocab(model);
    uint64_t h[2];
    for (int s = 0; s < 2; s++) {
        for (int32_t i = 0; i < n; i++) seq[i] = s;
        tr_batch b = {.n_tokens = n, .token = prompts[0], .pos = pos, .seq_id = seq};
        TT_CHECK(tr_decode(c, &b, &err) == TR_OK);
        if (s == 1) { /* 40 wrong guesses (past a block boundary), then rolled back */
            for (int32_t i = 0; i < 40; i++) tok[i] = 1000 + 37 * i, pos[i] = n + i, want[i] = 1;
            tr_batch g = {.n_tokens = 40, .token = tok, .pos = pos, .seq_id = seq, .logits = want};
            TT_CHECK(tr_decode(c, &g, &err) == TR_OK);
            TT_CHECK(tr_kv_seq_rm(c, 1, n, -1));
            TT_CHECK_EQ_INT(tr_kv_seq_len(c, 1), n);
        }
        int32_t next = prompts[1][3], p1 = n;
        tr_batch b1 = {.n_tokens = 1, .token = &next, .pos = &p1, .seq_id = &s};
        TT_CHECK(tr_decode(c, &b1, &err) == TR_OK);
        h[s] = tu_hash_floats(tr_get_logits(c, 0), (size_t)n_vocab);
        for (int32_t i = 0; i < n; i++) pos[i] = i;
    }
    TT_CHECK(h[0] == h[1]);
    tr_context_free(c);
}

TT_TEST(cancel_mid_speculation_frees_everything) {
    tr_engine *e = engine(2, 512, true);
    if (!e) return;
    tr_seq_params p = seq_params(0, 0.0f, TR_SPEC_NGRAM);
    tr_error err = {{0}};
    int64_t id = tr_engine_submit(e, &p, &err);
    tr_step_stats st = {0};
    int32_t drafted = 0;
    for (int s = 0; s < 40 && drafted == 0; s++) { /* until a step verified guesses */
        TT_CHECK(tr_engine_step(e, &st, &err) == TR_OK);
        drafted += st.n_drafted;
    }
    TT_CHECK(drafted > 0);
    tr_engine_cancel(e, id, true);
    tr_kv_stats ks;
    tr_context_kv_stats(tr_engine_context(e), &ks);
    TT_CHECK_EQ_INT(ks.blocks_used, 0);
    TT_CHECK_EQ_INT((int)ks.tokens_held, 0);
    TT_CHECK_EQ_INT(tr_engine_take(e, id, NULL, 0, NULL), -1);
    tr_engine_free(e);
}

TT_TEST(bad_settings_are_refused) {
    tr_engine *e = engine(1, 512, false);
    if (!e) return;
    tr_error err = {{0}};
    tr_seq_params p = seq_params(0, 0.0f, TR_SPEC_NGRAM);
    p.spec.n_max = 65;
    TT_CHECK(tr_engine_submit(e, &p, &err) < 0);
    TT_CHECK(strstr(err.msg, "draft-max") != NULL);
    p.spec.n_max = 4;
    p.spec.n_min = 5;
    TT_CHECK(tr_engine_submit(e, &p, &err) < 0);
    TT_CHECK(strstr(err.msg, "draft-min") != NULL);
    p.spec.n_min = 0;
    p.spec.kind = TR_SPEC_DRAFT; /* this engine has no draft model */
    TT_CHECK(tr_engine_submit(e, &p, &err) < 0);
    TT_CHECK(strstr(err.msg, "draft model") != NULL);
    tr_spec_kind k;
    TT_CHECK(tr_spec_kind_parse("lookahead", &k) && k == TR_SPEC_LOOKAHEAD);
    TT_CHECK(!tr_spec_kind_parse("eagle", &k));
    tr_engine_free(e);
}

int main(void) {
    tr_error err = {{0}};
    if (tr_model_load(MODEL, &model, &err) != TR_OK) {
        fprintf(stderr, "  model missing (run scripts/setup.sh): %s\n", err.msg);
        TT_CHECK(0);
        return TT_DONE();
    }
    /* Grounded prompts: a list to repeat, code to edit, a text to quote, and
     * a counting pattern. */
    static const char *texts[N_PROMPTS] = {
        "Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape, honeydew, kiwi, lemon. "
        "Repeat the list exactly: apple, banana,",
        "def area(width, height):\n    return width * height\n\ndef perimeter(width, height):\n    return 2 * "
        "(width + height)\n\n# The same functions with type hints:\ndef area(width: float, height: float) -> float:\n",
        "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick",
        "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. Monday, Tuesday,"};
    for (int i = 0; i < N_PROMPTS; i++)
        if (tr_tokenize(tr_model_vocab(model), texts[i], strlen(texts[i]), true, false, &prompts[i], &n_prompt[i],
                        &err)) {
            fprintf(stderr, "  %s\n", err.msg);
            return 1;
        }
    TT_RUN(ngram_guesses_run_on_through_a_repeating_pattern);
    TT_RUN(references_plain_decoding);
    TT_RUN(every_drafter_alone_gives_plain_decodings_tokens);
    TT_RUN(batched_mixed_speculation_gives_the_same_tokens);
    TT_RUN(draft_model_gives_the_same_tokens);
    TT_RUN(rollback_leaves_no_trace);
    TT_RUN(cancel_mid_speculation_frees_everything);
    TT_RUN(bad_settings_are_refused);
    for (int i = 0; i < N_PROMPTS; i++) free(prompts[i]);
    tr_model_free(model);
    return TT_DONE();
}
