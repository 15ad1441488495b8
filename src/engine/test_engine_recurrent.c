/* The engine's promise for state-space models (Mamba, Mamba-2, and the
 * hybrid granitehybrid, whose attention layers keep K/V beside the state),
 * whose sequences carry a recurrent state: a sequence's tokens and
 * logits are the same bits
 *   - alone, or batched with others arriving at other times, its prompt cut
 *     into chunks (each token meets the state its own sequence left);
 *   - in a slot another sequence used before (the state starts from zero);
 *   - when it was preempted and recomputed;
 * and what a recurrent state cannot do is refused, not done wrong: a suffix
 * cannot be removed (tr_kv_seq_rm), speculation and streaming windows are
 * refused, the prefix cache is off; a fork (tr_kv_seq_cp) goes on from the
 * source's state. llama.cpp's own logits for these architectures are
 * compared in tests/test_parity_arch.py; here the reference is the run alone.
 *
 * Models: the micro-shaped seeds of tests/fuzz/fuzz_model (scripts/gen_model.py
 * --shape micro --type Q8_0), small enough for the sanitizer build. */
#include "trinity.h"
#include "tt.h"
#include "engine/test_util.h"

enum { N_PROMPTS = 6, N_GEN = 12 };

static const char *const MODELS[] = {"tests/fuzz/fuzz_model/mamba", "tests/fuzz/fuzz_model/mamba2",
                                     "tests/fuzz/fuzz_model/granitehybrid"};
static tr_model *model;
static int32_t prompts[N_PROMPTS][64];
static int32_t n_prompt[N_PROMPTS];

static tr_engine *engine(int32_t n_seq, int32_t n_batch, int32_t n_ctx, int32_t threads, int32_t kv_block) {
    tr_engine_params p = tr_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_batch = n_batch;
    p.ctx.n_ctx = n_ctx;
    p.ctx.n_threads = threads;
    p.ctx.kv_block = kv_block;
    p.prefill_chunk = 5; /* prompts in several chunks while others decode */
    tr_engine *e = tu_engine_new(model, &p);
    TT_CHECK(e != NULL);
    return e;
}

static tr_seq_params seq_params(int i) {
    tr_seq_params p = {.prompt = prompts[i], .n_prompt = n_prompt[i], .n_predict = N_GEN,
                       .sampling = tr_sampler_default_params()};
    p.sampling.temp = 0.8f;
    p.sampling.seed = 99 + (uint64_t)i;
    p.ignore_eog = true;
    return p;
}

/* Submit prompts idx[0..n) (prompt k after delay[k] steps), step until all end. */
static void run_many(tr_engine *e, const int *idx, const int *delay, int n, tu_run *out) {
    tr_seq_params p[N_PROMPTS];
    for (int k = 0; k < n; k++) p[k] = seq_params(idx[k]);
    tu_run_many(e, model, p, delay, n, 2000, true, out);
}

static tu_run ref[N_PROMPTS];

TT_TEST(references_alone) {
    for (int i = 0; i < N_PROMPTS; i++) {
        tr_engine *e = engine(1, 64, 256, 2, 0);
        if (!e) return;
        int idx = i, d = 0;
        run_many(e, &idx, &d, 1, &ref[i]);
        TT_CHECK_EQ_INT(ref[i].n, N_GEN);
        tr_engine_free(e);
    }
}

TT_TEST(batched_chunked_and_reused_slots_give_the_same_output) {
    /* 6 sequences through 3 slots (each slot's state used by two sequences
     * in turn), arriving while others prefill and decode, batches of 16. */
    int idx[N_PROMPTS], delay[N_PROMPTS];
    for (int k = 0; k < N_PROMPTS; k++) idx[k] = k, delay[k] = (k * 3) % 5;
    const int32_t threads[] = {1, 3};
    for (int t = 0; t < 2; t++) {
        tr_engine *e = engine(3, 16, 512, threads[t], 4);
        if (!e) return;
        tu_run o[N_PROMPTS];
        run_many(e, idx, delay, N_PROMPTS, o);
        for (int k = 0; k < N_PROMPTS; k++) {
            if (!tu_same(&o[k], &ref[k])) fprintf(stderr, "  prompt %d differs batched (%d threads)\n", k, threads[t]);
            TT_CHECK(tu_same(&o[k], &ref[k]));
        }
        tr_engine_free(e);
    }
}

TT_TEST(preemption_gives_the_same_output) {
    /* A pool of 96 positions in blocks of 8 for 4 sequences of 40-60: the
     * newest is preempted (its state dropped) and later recomputed. */
    tr_engine *e = engine(4, 32, 96, 2, 8);
    if (!e) return;
    int idx[4] = {0, 1, 2, 3}, delay[4] = {0, 0, 1, 2};
    tu_run o[4];
    run_many(e, idx, delay, 4, o);
    for (int k = 0; k < 4; k++) TT_CHECK(tu_same(&o[k], &ref[idx[k]]));
    int64_t preempted = 0;
    tr_engine_load(e, NULL, NULL, &preempted);
    TT_CHECK(preempted > 0);
    tr_engine_free(e);
}

TT_TEST(what_a_recurrent_state_cannot_do_is_refused) {
    TT_CHECK(tr_model_is_recurrent(model));
    tr_error err = {{0}};
    /* speculation: refused at submission, naming why */
    tr_engine *e = engine(1, 64, 256, 1, 0);
    if (!e) return;
    tr_seq_params p = seq_params(0);
    p.spec.kind = TR_SPEC_NGRAM;
    TT_CHECK(tr_engine_submit(e, &p, &err) < 0);
    TT_CHECK(strstr(err.msg, "speculative decoding is not supported") && strstr(err.msg, "recurrent state"));
    tr_engine_free(e);
    /* a draft model */
    tr_engine_params ep = tr_engine_default_params();
    ep.draft_model = model;
    e = NULL;
    TT_CHECK(tr_engine_new(model, &ep, &e, &err) != TR_OK && e == NULL);
    TT_CHECK(strstr(err.msg, "draft model") != NULL);
    /* streaming window */
    tr_context_params cp = tr_context_default_params();
    cp.n_window = 64;
    tr_context *c = NULL;
    TT_CHECK(tr_context_new(model, &cp, &c, &err) != TR_OK && c == NULL);
    TT_CHECK(strstr(err.msg, "--kv-window") != NULL);
}

/* Logits of the last token after decoding toks[0..n) of sequence seq from position p0. */
static const float *feed(tr_context *c, int32_t seq, const int32_t *toks, int32_t n, int32_t p0) {
    int32_t pos[64], sid[64];
    for (int32_t i = 0; i < n; i++) pos[i] = p0 + i, sid[i] = seq;
    tr_batch b = {.n_tokens = n, .token = (int32_t *)toks, .pos = pos, .seq_id = sid};
    tr_error err = {{0}};
    TT_CHECK(tr_decode(c, &b, &err) == TR_OK);
    return tr_get_logits(c, -1);
}

TT_TEST(context_state_operations) {
    const size_t nv = (size_t)tr_model_n_vocab(model);
    tr_context_params cp = tr_context_default_params();
    cp.n_ctx = 256;
    cp.n_seq_max = 2;
    cp.n_threads = 2;
    cp.prefix_cache = true; /* asked for, and off: a state is not kept per block */
    tr_context *c = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_context_new(model, &cp, &c, &err) == TR_OK);
    if (!c) return;
    const int32_t *t = prompts[4];
    const int32_t n = n_prompt[4], h = n / 2;
    /* the whole prompt in one batch: the reference */
    const uint64_t whole = tu_hash_floats(feed(c, 0, t, n, 0), nv);
    /* a suffix cannot be removed: nothing changes, and the next token goes on from the state */
    TT_CHECK(!tr_kv_seq_rm(c, 0, h, -1));
    TT_CHECK_EQ_INT(tr_kv_seq_len(c, 0), n);
    TT_CHECK(tr_kv_seq_rm(c, 0, n, -1)); /* removing nothing is fine */
    const int32_t next = t[1];
    const uint64_t after = tu_hash_floats(feed(c, 0, &next, 1, n), nv);
    /* the whole sequence can go; its slot then starts from zero */
    TT_CHECK(tr_kv_seq_rm(c, 0, 0, -1));
    TT_CHECK_EQ_INT(tr_kv_seq_len(c, 0), 0);
    feed(c, 0, t, h, 0);
    /* a fork goes on from the source's state: both halves' continuations equal the whole */
    TT_CHECK(tr_kv_seq_cp(c, 0, 1, &err) == TR_OK);
    TT_CHECK_EQ_INT(tr_kv_seq_len(c, 1), h);
    TT_CHECK(tu_hash_floats(feed(c, 1, t + h, n - h, h), nv) == whole);
    TT_CHECK(tu_hash_floats(feed(c, 0, t + h, n - h, h), nv) == whole);
    TT_CHECK(tu_hash_floats(feed(c, 1, &next, 1, n), nv) == after);
    /* no prefix cache */
    TT_CHECK(tr_kv_seq_rm(c, -1, 0, -1));
    TT_CHECK_EQ_INT(tr_kv_seq_reuse(c, 0, t, n), 0);
    tr_context_free(c);
}

int main(void) {
    for (size_t mi = 0; mi < sizeof MODELS / sizeof MODELS[0]; mi++) {
        tr_error err = {{0}};
        if (tr_model_load(MODELS[mi], &model, &err) != TR_OK) {
            fprintf(stderr, "  %s\n", err.msg);
            TT_CHECK(0);
            continue;
        }
        fprintf(stderr, "%s\n", MODELS[mi]);
        /* prompts of 30-60 random tokens past the control and byte tokens */
        tt_seed(7 + mi);
        const int32_t nv = tr_model_n_vocab(model);
        for (int i = 0; i < N_PROMPTS; i++) {
            n_prompt[i] = 30 + 6 * i;
            prompts[i][0] = 1;
            for (int32_t j = 1; j < n_prompt[i]; j++) prompts[i][j] = 259 + (int32_t)(tt_rnd() % (uint32_t)(nv - 259));
        }
        TT_RUN(references_alone);
        TT_RUN(batched_chunked_and_reused_slots_give_the_same_output);
        TT_RUN(preemption_gives_the_same_output);
        TT_RUN(what_a_recurrent_state_cannot_do_is_refused);
        TT_RUN(context_state_operations);
        tr_model_free(model);
    }
    return TT_DONE();
}
