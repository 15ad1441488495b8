/* The engine's promise, on the real model (Gemma 3 270M): a sequence's
 * tokens and the logits they were sampled from are the same bits
 *   - alone, or batched with up to 7 others arriving at other times;
 *   - whatever the chunks its prompt is cut into (n_batch 1, 7, 64, 512);
 *   - whether its prefix came from the prefix cache or was computed;
 *   - when it was preempted for lack of KV blocks and recomputed;
 *   - greedy, and sampled at temperature 0.8 with a seed;
 *   - with each quantized KV cache type (-ctk / -ctv): alone, in chunks, on
 *     1-3 threads, batched with others, from the prefix cache.
 * The reference for each prompt is its run alone in a fresh engine without
 * the prefix cache, prompt in one batch. Also: prompt limits, cancellation
 * releasing blocks at once, n_predict = 0 with prompt logits (perplexity). */
#include "trinity.h"
#include "tt.h"
#include "engine/test_util.h"

#define MODEL "models/gemma-3-270m-q4_k_m.gguf"
enum { N_PROMPTS = 8, N_GEN = 10 };

static tr_model *model;
static int32_t *prompts[N_PROMPTS];
static size_t n_prompt[N_PROMPTS];

static tr_engine *engine_kv(int32_t n_seq, int32_t n_batch, int32_t n_ctx, bool cache, int32_t threads, int type_k,
                            int type_v) {
    tr_engine_params p = tr_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_batch = n_batch;
    p.ctx.n_ctx = n_ctx;
    p.ctx.n_threads = threads;
    p.ctx.type_k = type_k;
    p.ctx.type_v = type_v;
    p.no_prefix_cache = !cache;
    return tu_engine_new(model, &p);
}

static tr_engine *engine(int32_t n_seq, int32_t n_batch, int32_t n_ctx, bool cache) {
    return engine_kv(n_seq, n_batch, n_ctx, cache, 2, TR_TYPE_F16, TR_TYPE_F16);
}

static tr_seq_params seq_params(int i, float temp) {
    tr_seq_params p = {.prompt = prompts[i], .n_prompt = (int32_t)n_prompt[i], .n_predict = N_GEN,
                       .sampling = tr_sampler_default_params()};
    p.sampling.temp = temp;
    p.sampling.seed = 1234 + (uint64_t)i;
    p.ignore_eog = true;
    return p;
}

/* Submit prompts idx[0..n) (prompt k after `delay[k]` steps), step until all end. */
static void run_many(tr_engine *e, const int *idx, const int *delay, int n, float temp, tu_run *out) {
    tr_seq_params p[N_PROMPTS];
    for (int k = 0; k < n; k++) p[k] = seq_params(idx[k], temp);
    tu_run_many(e, model, p, delay, n, 2000, true, out);
}

static tu_run ref_greedy[N_PROMPTS], ref_sampled[N_PROMPTS];

TT_TEST(references_alone) {
    for (int i = 0; i < N_PROMPTS; i++) {
        tr_engine *e = engine(1, 512, 512, false);
        if (!e) return;
        int idx = i, d = 0;
        run_many(e, &idx, &d, 1, 0.0f, &ref_greedy[i]);
        run_many(e, &idx, &d, 1, 0.8f, &ref_sampled[i]);
        TT_CHECK_EQ_INT(ref_greedy[i].n, N_GEN);
        TT_CHECK_EQ_INT(ref_greedy[i].finish, TR_FINISH_LENGTH);
        tr_engine_free(e);
    }
    /* The sampled runs really sample: not all equal to greedy. */
    int differ = 0;
    for (int i = 0; i < N_PROMPTS; i++) differ += memcmp(ref_greedy[i].tok, ref_sampled[i].tok, sizeof ref_greedy[i].tok) != 0;
    TT_CHECK(differ > 0);
}

TT_TEST(prompt_chunks_do_not_change_the_output) {
    const int32_t batches[] = {1, 7, 64};
    for (int b = 0; b < 3; b++) {
        tr_engine *e = engine(1, batches[b], 512, false);
        if (!e) return;
        for (int i = 0; i < 2; i++) {
            tu_run o;
            int idx = i, d = 0;
            run_many(e, &idx, &d, 1, 0.0f, &o);
            TT_CHECK(tu_same(&o, &ref_greedy[i]));
        }
        tr_engine_free(e);
    }
}

TT_TEST(batched_with_others_does_not_change_the_output) {
    int idx[N_PROMPTS], delay[N_PROMPTS];
    for (int k = 0; k < N_PROMPTS; k++) {
        idx[k] = k;
        delay[k] = (k * 3) % 7; /* arriving while others prefill and decode */
    }
    for (int pass = 0; pass < 2; pass++) {
        const float temp = pass ? 0.8f : 0.0f;
        tr_engine *e = engine(N_PROMPTS, 64, 4096, false); /* small batches: prompts in several chunks */
        if (!e) return;
        tu_run o[N_PROMPTS];
        run_many(e, idx, delay, N_PROMPTS, temp, o);
        for (int k = 0; k < N_PROMPTS; k++) {
            const bool ok = tu_same(&o[k], pass ? &ref_sampled[k] : &ref_greedy[k]);
            if (!ok) fprintf(stderr, "  prompt %d (temp %.1f) differs batched\n", k, temp);
            TT_CHECK(ok);
        }
        tr_engine_free(e);
    }
}

TT_TEST(prefix_cache_hit_gives_the_same_output) {
    tr_engine *e = engine(4, 512, 2048, true);
    if (!e) return;
    int idx = 0, d = 0;
    tu_run first, again;
    run_many(e, &idx, &d, 1, 0.0f, &first);
    run_many(e, &idx, &d, 1, 0.0f, &again);
    TT_CHECK(tu_same(&first, &ref_greedy[0]));
    TT_CHECK(tu_same(&again, &ref_greedy[0]));
    TT_CHECK_EQ_INT(first.n_cached, 0);
    TT_CHECK(again.n_cached >= 32 && again.n_cached < (int32_t)n_prompt[0]);
    /* Prompt 1 shares prompt 0's first blocks (see main): a partial hit. */
    idx = 1;
    tu_run shared;
    run_many(e, &idx, &d, 1, 0.0f, &shared);
    TT_CHECK(tu_same(&shared, &ref_greedy[1]));
    TT_CHECK(shared.n_cached >= 32);
    /* Several at once sharing the prefix: one computes it, the others wait for it and reuse it. */
    tr_engine_free(e);
    e = engine(4, 512, 2048, true);
    int many[4] = {0, 1, 2, 3}, delays[4] = {0, 0, 0, 0};
    tu_run o[4];
    run_many(e, many, delays, 4, 0.0f, o);
    int hits = 0;
    for (int k = 0; k < 4; k++) {
        TT_CHECK(tu_same(&o[k], &ref_greedy[k]));
        hits += o[k].n_cached > 0;
    }
    TT_CHECK(hits >= 2);
    tr_kv_stats ks;
    tr_context_kv_stats(tr_engine_context(e), &ks);
    TT_CHECK_EQ_INT(ks.blocks_used, 0); /* everything finished: blocks are free or cached */
    TT_CHECK(ks.blocks_cached > 0);
    TT_CHECK(ks.hit_tokens > 0);
    tr_engine_free(e);
}

/* Quantized caches keep the promise: an entry is quantized from its own row
 * alone and attention sums in an order fixed by position, so a sequence's
 * tokens and logits are the same bits whatever its batch, chunks, threads,
 * or whether its prefix came from the cache (blocks keep the pool's type).
 * The reference: each prompt alone, in one batch, 2 threads. */
TT_TEST(quantized_kv_caches_are_batch_invariant) {
    static const int types[][2] = {{TR_TYPE_Q8_0, TR_TYPE_Q8_0},
                                   {TR_TYPE_Q4_0, TR_TYPE_Q4_0},
                                   {TR_TYPE_TQ2_32, TR_TYPE_TQ2_32},
                                   {TR_TYPE_Q8_0, TR_TYPE_Q4_0}};
    enum { NP = 4 };
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        const int kt = types[ty][0], vt = types[ty][1];
        tu_run ref[NP];
        for (int i = 0; i < NP; i++) {
            tr_engine *e = engine_kv(1, 512, 512, false, 2, kt, vt);
            if (!e) return;
            int idx = i, d = 0;
            run_many(e, &idx, &d, 1, 0.0f, &ref[i]);
            TT_CHECK_EQ_INT(ref[i].n, N_GEN);
            tr_engine_free(e);
        }
        /* the cache type changes the output (it is really used) */
        TT_CHECK(memcmp(ref[0].logits_hash, ref_greedy[0].logits_hash, sizeof ref[0].logits_hash) != 0);
        /* chunks of 7 and of 1 token, on 1 and 3 threads */
        for (int v = 0; v < 2; v++) {
            tr_engine *e = engine_kv(1, v ? 1 : 7, 512, false, v ? 3 : 1, kt, vt);
            if (!e) return;
            for (int i = 0; i < 2; i++) {
                tu_run o;
                int idx = i, d = 0;
                run_many(e, &idx, &d, 1, 0.0f, &o);
                if (!tu_same(&o, &ref[i]))
                    fprintf(stderr, "  %s/%s prompt %d differs in chunks of %d\n", tr_type_name(kt), tr_type_name(vt), i,
                            v ? 1 : 7);
                TT_CHECK(tu_same(&o, &ref[i]));
            }
            tr_engine_free(e);
        }
        /* batched together, arriving at different steps, prefix cache on
         * (prompts 0-3 share their first blocks: later ones reuse them) */
        int idx[NP] = {0, 1, 2, 3}, delay[NP] = {0, 2, 5, 9};
        tr_engine *e = engine_kv(NP, 64, 2048, true, 3, kt, vt);
        if (!e) return;
        tu_run o[NP];
        run_many(e, idx, delay, NP, 0.0f, o);
        int hits = 0;
        for (int k = 0; k < NP; k++) {
            if (!tu_same(&o[k], &ref[k])) fprintf(stderr, "  %s/%s prompt %d differs batched\n", tr_type_name(kt), tr_type_name(vt), k);
            TT_CHECK(tu_same(&o[k], &ref[k]));
            hits += o[k].n_cached > 0;
        }
        TT_CHECK(hits >= 1);
        tr_engine_free(e);
    }
}

TT_TEST(kv_cache_types_are_checked) {
    tr_engine_params p = tr_engine_default_params();
    tr_engine *e = NULL;
    tr_error err = {{0}};
    p.ctx.type_k = TR_TYPE_Q4_1; /* a ggml type, not a cache type */
    TT_CHECK(tr_engine_new(model, &p, &e, &err) == TR_ERR_ARG);
    TT_CHECK(strstr(err.msg, "-ctk") && strstr(err.msg, "q8_0"));
    p.ctx.type_k = TR_TYPE_F16;
    p.ctx.type_v = 12345;
    TT_CHECK(tr_engine_new(model, &p, &e, &err) == TR_ERR_ARG);
    TT_CHECK(strstr(err.msg, "-ctv") != NULL);
    TT_CHECK(tr_kv_type_from_name("q8_0") == TR_TYPE_Q8_0 && tr_kv_type_from_name("tq2_32") == TR_TYPE_TQ2_32);
    TT_CHECK(tr_kv_type_from_name("Q8_0") == -1 && tr_kv_type_from_name("f32") == -1 && tr_kv_type_from_name(NULL) == -1);
    /* bytes per block follow the types: Q8_0 34 bytes per 32 elements against F16's 64 */
    p.ctx.type_v = TR_TYPE_F16;
    p.ctx.n_ctx = 256;
    TT_CHECK(tr_engine_new(model, &p, &e, &err) == TR_OK);
    tr_kv_stats f16;
    tr_context_kv_stats(tr_engine_context(e), &f16);
    tr_engine_free(e);
    p.ctx.type_k = p.ctx.type_v = TR_TYPE_Q8_0;
    TT_CHECK(tr_engine_new(model, &p, &e, &err) == TR_OK);
    tr_kv_stats q8;
    tr_context_kv_stats(tr_engine_context(e), &q8);
    tr_engine_free(e);
    TT_CHECK(q8.bytes_per_block * 64 == f16.bytes_per_block * 34);
}

/* A chat's next turn: the prompt is the previous turn's prompt and reply,
 * then more. Its blocks come from the cache, and the entries of the
 * previous sequence's last, partly filled block too (a tail): token-level
 * reuse, with the same output as computed from scratch. */
TT_TEST(next_turn_reuses_the_previous_tail) {
    enum { CAP = 256 };
    int32_t turn2[CAP];
    int32_t n = 0;
    for (size_t k = 0; k < n_prompt[4]; k++) turn2[n++] = prompts[4][k];
    for (int k = 0; k < N_GEN - 1; k++) turn2[n++] = ref_greedy[4].tok[k]; /* the fed part of the reply */
    for (size_t k = 1; k < n_prompt[5] && n < CAP; k++) turn2[n++] = prompts[5][k];
    const int32_t held = (int32_t)n_prompt[4] + N_GEN - 1; /* what turn 1's sequence held */
    TT_CHECK(held % 32 != 0);                               /* so it ended in a partly filled block */
    tr_seq_params p = seq_params(0, 0.0f);
    p.prompt = turn2;
    p.n_prompt = n;
    tu_run fresh = {0}, cached = {0};
    for (int pass = 0; pass < 2; pass++) {
        tr_engine *e = engine(2, 512, 2048, pass == 1);
        if (!e) return;
        tu_run first;
        int idx = 4, d = 0;
        run_many(e, &idx, &d, 1, 0.0f, &first);
        TT_CHECK(tu_same(&first, &ref_greedy[4]));
        tr_error err = {{0}};
        int64_t id = tr_engine_submit(e, &p, &err);
        tu_run *o = pass ? &cached : &fresh;
        memset(o, 0, sizeof *o);
        for (int st = 0; st < 200 && o->finish == TR_FINISH_NONE; st++) {
            TT_CHECK(tr_engine_step(e, NULL, &err) == TR_OK);
            tu_collect(e, model, id, N_GEN, true, o);
        }
        tr_engine_free(e);
    }
    TT_CHECK_EQ_INT(fresh.n_cached, 0);
    TT_CHECK_EQ_INT(cached.n_cached, held);
    TT_CHECK(tu_same(&fresh, &cached));
    TT_CHECK_EQ_INT(cached.n, N_GEN);
}

TT_TEST(preemption_for_blocks_gives_the_same_output) {
    /* A pool of 160 tokens for 4 sequences of ~60-70 tokens each: the
     * engine must preempt and recompute (with and without the cache). */
    for (int cache = 0; cache < 2; cache++) {
        tr_engine *e = engine(4, 64, 160, cache);
        if (!e) return;
        int idx[4] = {4, 5, 6, 7}, delay[4] = {0, 0, 1, 2};
        tu_run o[4];
        run_many(e, idx, delay, 4, 0.8f, o);
        for (int k = 0; k < 4; k++) TT_CHECK(tu_same(&o[k], &ref_sampled[idx[k]]));
        int64_t preempted = 0;
        tr_engine_load(e, NULL, NULL, &preempted);
        TT_CHECK(preempted > 0);
        tr_engine_free(e);
    }
}

typedef struct ppl {
    int calls;
    int32_t first_pos, last_pos;
    uint64_t h;
} ppl;

static void on_logits(void *user, int32_t pos, const float *l) {
    ppl *p = user;
    if (!p->calls++) p->first_pos = pos;
    p->last_pos = pos;
    p->h ^= tu_hash_floats(l, (size_t)tr_model_n_vocab(model)) + (uint64_t)pos;
}

TT_TEST(prompt_logits_limits_and_cancel) {
    tr_engine *e = engine(2, 512, 256, true);
    if (!e) return;
    tr_error err = {{0}};
    /* prompt logits from a position on, the same bits at any chunking */
    ppl a = {0}, b = {0};
    tr_seq_params p = {.prompt = prompts[2], .n_prompt = (int32_t)n_prompt[2], .n_predict = 0,
                       .on_prompt_logits = on_logits, .logits_from = 5, .user = &a, .no_cache = true};
    int64_t id = tr_engine_submit(e, &p, &err);
    TT_CHECK(id >= 0);
    tr_seq_info info = {0};
    for (int s = 0; s < 10 && tr_engine_take(e, id, NULL, 0, &info) >= 0 && info.finish == TR_FINISH_NONE; s++)
        tr_engine_step(e, NULL, &err);
    TT_CHECK_EQ_INT(a.calls, (int32_t)n_prompt[2] - 5);
    TT_CHECK_EQ_INT(a.first_pos, 5);
    TT_CHECK_EQ_INT(a.last_pos, (int32_t)n_prompt[2] - 1);
    tr_engine *e7 = engine(1, 7, 256, false);
    p.user = &b;
    id = tr_engine_submit(e7, &p, &err);
    for (int s = 0; s < 100 && tr_engine_take(e7, id, NULL, 0, &info) >= 0 && info.finish == TR_FINISH_NONE; s++)
        tr_engine_step(e7, NULL, &err);
    TT_CHECK_EQ_INT(b.calls, a.calls);
    TT_CHECK(a.h == b.h);
    tr_engine_free(e7);

    /* a prompt that can never fit is refused, naming both lengths */
    int32_t big[300] = {0};
    tr_seq_params q = {.prompt = big, .n_prompt = 300, .n_predict = 4, .sampling = tr_sampler_default_params()};
    TT_CHECK(tr_engine_submit(e, &q, &err) < 0);
    TT_CHECK(strstr(err.msg, "300") && strstr(err.msg, "256"));
    q.n_prompt = 0;
    TT_CHECK(tr_engine_submit(e, &q, &err) < 0);
    big[0] = -5;
    q.n_prompt = 3;
    TT_CHECK(tr_engine_submit(e, &q, &err) < 0);

    /* cancel mid-prompt releases its blocks at once */
    tr_seq_params r = seq_params(3, 0.0f);
    r.no_cache = true;
    id = tr_engine_submit(e, &r, &err);
    tr_engine_step(e, NULL, &err);
    tr_kv_stats ks;
    tr_context_kv_stats(tr_engine_context(e), &ks);
    TT_CHECK(ks.blocks_used > 0);
    tr_engine_cancel(e, id, false);
    tr_context_kv_stats(tr_engine_context(e), &ks);
    TT_CHECK_EQ_INT(ks.blocks_used, 0);
    int32_t got[N_GEN];
    TT_CHECK(tr_engine_take(e, id, got, N_GEN, &info) >= 0); /* the token its one step sampled, if any */
    TT_CHECK_EQ_INT(info.finish, TR_FINISH_CANCELLED);
    TT_CHECK_EQ_INT(tr_engine_take(e, id, NULL, 0, &info), -1); /* released by the take that saw the end */
    tr_engine_free(e);
}

int main(void) {
    tr_error err = {{0}};
    if (tr_model_load(MODEL, &model, &err) != TR_OK) {
        fprintf(stderr, "  model missing (run scripts/setup.sh): %s\n", err.msg);
        TT_CHECK(0);
        return TT_DONE();
    }
    /* Prompts of 20-70 tokens; 0-3 share a first part of about 50 tokens
     * (more than one 32-token block), the others are unrelated. */
    static const char *shared =
        "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type with an oil-based ink and a wooden press. His workshop in Mainz turned out pages "
        "faster than any scribe could copy them.";
    static const char *tails[] = {
        " Within fifty years, presses were", " Scholars soon noticed that", " The first book he printed was",
        " Prices of books fell because",
        "Photosynthesis converts light energy into chemical energy stored in glucose. In plants it takes place in "
        "the chloroplasts, where",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n\n# Now a "
        "faster version:\n",
        "Dear hiring manager, I am writing to apply for the position of", "1, 1, 2, 3, 5, 8, 13, 21, 34,"};
    for (int i = 0; i < N_PROMPTS; i++) {
        char text[512];
        snprintf(text, sizeof text, "%s%s", i < 4 ? shared : "", tails[i]);
        if (tr_tokenize(tr_model_vocab(model), text, strlen(text), true, false, &prompts[i], &n_prompt[i], &err)) {
            fprintf(stderr, "  %s\n", err.msg);
            return 1;
        }
    }
    TT_RUN(references_alone);
    TT_RUN(prompt_chunks_do_not_change_the_output);
    TT_RUN(batched_with_others_does_not_change_the_output);
    TT_RUN(prefix_cache_hit_gives_the_same_output);
    TT_RUN(next_turn_reuses_the_previous_tail);
    TT_RUN(preemption_for_blocks_gives_the_same_output);
    TT_RUN(prompt_logits_limits_and_cancel);
    TT_RUN(quantized_kv_caches_are_batch_invariant);
    TT_RUN(kv_cache_types_are_checked);
    for (int i = 0; i < N_PROMPTS; i++) free(prompts[i]);
    tr_model_free(model);
    return TT_DONE();
}
