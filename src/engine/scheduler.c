/* The engine's scheduler: sequences, admission, one batch per step.
 *
 * A sequence is its tokens (prompt, then what it sampled) and how many of
 * them the KV cache holds (n_fed). Whatever is not yet fed is fed the next
 * steps: one token for a generating sequence, a chunk for a prompt. When
 * the last known token has been fed, its logits give the next token. So a
 * prompt, a preempted sequence recomputing its cache and a generating one
 * are the same thing with different amounts pending.
 *
 * Each step:
 *   1. admit waiting sequences (oldest first) into free sequence slots while
 *      the KV pool can hold their pending tokens; a new sequence first takes
 *      the leading blocks of its tokens from the prefix cache. A sequence
 *      whose next block another running sequence is about to compute waits
 *      for it (so N requests with one long system prompt compute it once).
 *   2. make room for the decode tokens: if the pool cannot give a block a
 *      generating sequence needs, the newest running sequence is preempted
 *      (its cache released; it goes back to the head of the queue and later
 *      recomputes it, largely from the prefix cache), as vLLM does.
 *   3. batch: every generating sequence's one token first (what clients wait
 *      for), then prompt chunks with the room left (while others generate,
 *      at most prefill_chunk prompt tokens, so a long prompt delays their
 *      next token by a fraction of a step).
 *   4. speculation: a generating sequence with a drafter may add guesses
 *      of its next tokens after its one token, as many as pay for the
 *      wait they add to every sequence in the step (see choose_drafts).
 *   5. decode, sample every sequence whose pending tokens are all fed; for
 *      one with guesses, sample row after row while each sampled token
 *      equals the guess fed after it, then remove the cache entries of the
 *      rejected guesses.
 * Batch invariance of the forward pass makes every sequence's logits the
 * same bits whatever else shares its batches and however its prompt is cut:
 * so a row of a guess that was accepted holds the logits decoding one token
 * at a time would have computed, and speculation cannot change a token. */
#include "engine/engine.h"
#include "engine/spec.h"

#include "core/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { SPEC_MAX = 64 };   /* most guesses one sequence may ask to verify per step */
enum { GUESS_MAX = 128 }; /* most guesses of all sequences in one step */

typedef struct seq {
    int64_t id;
    int32_t slot;          /* context sequence, -1: waiting (or finished) */
    int32_t *tok;          /* prompt then sampled tokens */
    int32_t n_tok, cap_tok, n_prompt;
    int32_t n_fed;         /* tokens whose K/V the cache holds (= its length while running, plus n_drop) */
    int32_t n_drop;        /* streaming: positions slid out of the cache after the sinks since admission;
                            * token t >= n_fed - len sits at cache position t - n_drop */
    int32_t n_cached;      /* prompt tokens the prefix cache gave at first admission */
    int32_t n_gen, n_predict, n_taken;
    int32_t n_eog;         /* 1 when it ended on an end-of-generation token (sampled, not kept) */
    bool ignore_eog, no_cache, admitted_once;
    tr_sampler *sampler;
    tr_sampler_params sp;
    tr_grammar *grammar;   /* the sampler's constraint (NULL: none), until the sampler is made */
    void (*on_prompt_logits)(void *, int32_t, const float *);
    int32_t logits_from;
    void *user;
    tr_finish finish;
    const float *logits;   /* of the latest sampled token, this step */
    int32_t b_first, b_n;  /* this step's slice of the batch */
    int32_t take;          /* this step: known tokens fed (b_n minus the guesses) */
    /* speculation */
    tr_spec_params spec;
    drafter *dr;           /* its drafter (NULL: none, or the draft model's) */
    int32_t *draft, n_draft; /* this step's guesses, [spec.n_max] */
    double alpha, alpha0;  /* running estimate of P(a guess is accepted | the ones before were); its start */
    double alpha_chain;    /* the same for the n-gram drafter's chained guesses (past n_first) */
    int32_t n_first;       /* this step's guesses from the drafter's first lookup (spec.h) */
    int32_t d_fed;         /* draft model: positions its context holds for this sequence (= tok[0..d_fed)) */
    int32_t n_drafted, n_accepted, n_steps;
    uint64_t admitted;     /* admission order: the newest is preempted first */
    struct seq *qnext;     /* waiting queue */
    struct seq *next;      /* every sequence the engine knows */
} seq;

struct tr_engine {
    tr_model *model;
    tr_grammar_vocab *gvocab; /* the vocabulary's token bytes, made for the first grammar */
    tr_context *c;
    const tr_vocab *vocab;
    int32_t n_seq_max, n_batch, prefill_chunk;
    bool cache;
    bool stream;           /* the context streams (--kv-window): sequences slide instead of ending at a limit */
    seq **slot;            /* [n_seq_max]: running sequence per context sequence */
    seq *q_head, *q_tail;
    seq *all;
    int64_t next_id;
    uint64_t n_admitted;
    int64_t n_preempted;
    int32_t *b_tok, *b_pos, *b_seq;
    int8_t *b_logits;
    /* What a step of d generating rows plus k guesses costs (CPU seconds at
     * [d * (GUESS_MAX + 1) + k], see note_step_cost; 0: not seen yet), for
     * choosing how many guesses to verify. */
    double *t_step;
    int64_t *t_when;       /* the step that last measured each */
    int64_t n_steps;
    int32_t *out_tok;      /* [SPEC_MAX + 1] scratch: the model's choice per row */
    /* The draft model (TR_SPEC_DRAFT): its own context, with the same
     * sequence slots, fed greedily ahead of the model. */
    tr_model *dm;
    tr_context *dc;
};

tr_engine_params tr_engine_default_params(void) {
    tr_engine_params p = {.ctx = tr_context_default_params(), .prefill_chunk = 0, .no_prefix_cache = false};
    return p;
}

/* The draft model's context: the same sequences, pool and batch as the
 * model's, no prefix cache. Its vocabulary must be the model's, token for
 * token (its guesses are token ids the model verifies). */
static tr_status draft_context(tr_engine *e, tr_model *dm, const tr_context_params *cp, tr_error *err) {
    const tr_vocab *a = tr_model_vocab(e->model), *b = tr_model_vocab(dm);
    const int32_t na = tr_model_n_vocab(e->model), nb = tr_model_n_vocab(dm);
    if (na != nb || tr_vocab_n_tokens(a) != tr_vocab_n_tokens(b))
        return tr_err_set(err, TR_ERR_ARG,
                          "the draft model %s has a vocabulary of %d tokens, the model %s one of %d: a draft model "
                          "must share the model's vocabulary",
                          tr_gguf_path(tr_model_gguf(dm)), nb, tr_gguf_path(tr_model_gguf(e->model)), na);
    for (int32_t i = 0; i < tr_vocab_n_tokens(a); i++) {
        const char *ta = tr_vocab_token_text(a, i), *tb = tr_vocab_token_text(b, i);
        if (strcmp(ta ? ta : "", tb ? tb : ""))
            return tr_err_set(err, TR_ERR_ARG,
                              "the draft model %s's token %d is '%.40s', the model %s's is '%.40s': a draft model "
                              "must share the model's vocabulary",
                              tr_gguf_path(tr_model_gguf(dm)), i, tb ? tb : "", tr_gguf_path(tr_model_gguf(e->model)), ta ? ta : "");
    }
    if (tr_model_is_recurrent(dm) || tr_model_is_recurrent(e->model))
        return tr_err_set(err, TR_ERR_ARG,
                          "a draft model (--model-draft) cannot be used with %s: a recurrent state cannot drop "
                          "rejected guesses", tr_model_is_recurrent(e->model) ? e->model->arch->name : dm->arch->name);
    tr_context_params dp = *cp;
    dp.prefix_cache = false;
    dp.n_ctx_seq = e->c->n_ctx_seq; /* the positions the model's sequences may reach */
    tr_status st = tr_context_new(dm, &dp, &e->dc, err);
    if (st != TR_OK) return st;
    e->dm = dm;
    return st;
}

tr_status tr_engine_new(tr_model *m, const tr_engine_params *p, tr_engine **out, tr_error *err) {
    *out = NULL;
    tr_engine_params d = tr_engine_default_params();
    if (!p) p = &d;
    if (p->prefill_chunk < 0)
        return tr_err_set(err, TR_ERR_ARG, "engine: prefill_chunk = %d is negative", p->prefill_chunk);
    tr_engine *e = calloc(1, sizeof *e);
    if (!e) return tr_err_set(err, TR_ERR_NOMEM, "engine: out of memory");
    tr_context_params cp = p->ctx;
    cp.prefix_cache = !p->no_prefix_cache;
    tr_status st = tr_context_new(m, &cp, &e->c, err);
    if (st != TR_OK) {
        free(e);
        return st;
    }
    e->model = m;
    e->vocab = tr_model_vocab(m);
    if (p->draft_model) {
        st = draft_context(e, p->draft_model, &cp, err);
        if (st != TR_OK) {
            tr_context_free(e->c);
            free(e);
            return st;
        }
    }
    e->cache = e->c->prefix_cache;
    e->stream = e->c->n_window > 0;
    if (e->stream && e->dc) {
        tr_engine_free(e);
        return tr_err_set(err, TR_ERR_ARG,
                          "engine: a draft model (--model-draft) cannot be combined with --kv-window: the draft "
                          "context would have to slide in step with the model's");
    }
    e->n_seq_max = e->c->n_seq_max;
    e->n_batch = e->c->n_batch;
    e->prefill_chunk = p->prefill_chunk ? p->prefill_chunk : (e->n_batch / 8 > 32 ? e->n_batch / 8 : 32);
    e->slot = calloc((size_t)e->n_seq_max, sizeof *e->slot);
    e->b_tok = malloc(sizeof *e->b_tok * (size_t)e->n_batch);
    e->b_pos = malloc(sizeof *e->b_pos * (size_t)e->n_batch);
    e->b_seq = malloc(sizeof *e->b_seq * (size_t)e->n_batch);
    e->b_logits = malloc((size_t)e->n_batch);
    e->t_step = calloc(((size_t)e->n_seq_max + 1) * (GUESS_MAX + 1), sizeof *e->t_step);
    e->t_when = calloc(((size_t)e->n_seq_max + 1) * (GUESS_MAX + 1), sizeof *e->t_when);
    e->out_tok = malloc(sizeof *e->out_tok * (SPEC_MAX + 1));
    if (!e->slot || !e->b_tok || !e->b_pos || !e->b_seq || !e->b_logits || !e->t_step || !e->t_when || !e->out_tok) {
        tr_engine_free(e);
        return tr_err_set(err, TR_ERR_NOMEM, "engine: out of memory");
    }
    *out = e;
    return TR_OK;
}

static void seq_destroy(seq *s) {
    tr_sampler_free(s->sampler);
    tr_grammar_free(s->grammar);
    drafter_free(s->dr);
    free(s->draft);
    free(s->tok);
    free(s);
}

void tr_engine_free(tr_engine *e) {
    if (!e) return;
    for (seq *s = e->all, *n; s; s = n) {
        n = s->next;
        seq_destroy(s);
    }
    tr_context_free(e->c);
    tr_context_free(e->dc);
    free(e->slot);
    free(e->b_tok);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_logits);
    free(e->t_step);
    free(e->t_when);
    free(e->out_tok);
    tr_grammar_vocab_free(e->gvocab);
    free(e);
}

tr_context *tr_engine_context(tr_engine *e) { return e->c; }

static int32_t count_running(const tr_engine *e) {
    int32_t r = 0;
    for (int32_t i = 0; i < e->n_seq_max; i++) r += e->slot[i] != NULL;
    return r;
}

void tr_engine_load(const tr_engine *e, int32_t *n_waiting, int32_t *n_running, int64_t *n_preempted) {
    int32_t w = 0, r = count_running(e);
    for (const seq *s = e->q_head; s; s = s->qnext) w++;
    if (n_waiting) *n_waiting = w;
    if (n_running) *n_running = r;
    if (n_preempted) *n_preempted = e->n_preempted;
}

static seq *find(const tr_engine *e, int64_t id) {
    for (seq *s = e->all; s; s = s->next)
        if (s->id == id) return s;
    return NULL;
}

/* ------------------------------------------------------------- the queue */

static void queue_push(tr_engine *e, seq *s, bool front) {
    s->qnext = NULL;
    if (!e->q_head) {
        e->q_head = e->q_tail = s;
    } else if (front) {
        s->qnext = e->q_head;
        e->q_head = s;
    } else {
        e->q_tail->qnext = s;
        e->q_tail = s;
    }
}

static void queue_remove(tr_engine *e, seq *s) {
    seq *prev = NULL;
    for (seq *q = e->q_head; q; prev = q, q = q->qnext) {
        if (q != s) continue;
        if (prev) prev->qnext = q->qnext;
        else e->q_head = q->qnext;
        if (e->q_tail == q) e->q_tail = prev;
        s->qnext = NULL;
        return;
    }
}

int64_t tr_engine_submit(tr_engine *e, const tr_seq_params *p, tr_error *err) {
    const int32_t limit = e->c->n_ctx_seq, n_vocab = tr_model_n_vocab(e->model);
    if (!p || !p->prompt || p->n_prompt <= 0) {
        tr_err_set(err, TR_ERR_ARG, "the prompt is empty: it gave no tokens");
        return -1;
    }
    if (!e->stream && (p->n_prompt > limit || (p->n_predict != 0 && p->n_prompt >= limit))) {
        tr_err_set(err, TR_ERR_ARG,
                   "the prompt is %d tokens long, but a sequence holds at most %d tokens (prompt and answer "
                   "together): shorten the prompt or use a larger context",
                   p->n_prompt, limit);
        return -1;
    }
    for (int32_t i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= n_vocab) {
            tr_err_set(err, TR_ERR_ARG, "prompt token %d is id %d, outside the vocabulary [0, %d)", i, p->prompt[i],
                       n_vocab);
            return -1;
        }
    tr_spec_params sp = p->spec;
    if (sp.kind != TR_SPEC_NONE) {
        if (sp.n_max == 0) sp.n_max = 16;
        if (sp.kind < TR_SPEC_NONE || sp.kind > TR_SPEC_DRAFT) {
            tr_err_set(err, TR_ERR_ARG, "speculative decoding: unknown kind %d", (int)sp.kind);
            return -1;
        }
        if (sp.n_max < 1 || sp.n_max > SPEC_MAX || sp.n_min < 0 || sp.n_min > sp.n_max) {
            tr_err_set(err, TR_ERR_ARG,
                       "speculative decoding: draft-max = %d and draft-min = %d: want 1 <= draft-max <= %d and "
                       "0 <= draft-min <= draft-max",
                       sp.n_max, sp.n_min, SPEC_MAX);
            return -1;
        }
        if (e->c->recurrent) {
            /* Verifying guesses means dropping the rejected ones' positions
             * afterwards; a recurrent state cannot go back to an earlier
             * position (it would need a checkpoint per guess). */
            tr_err_set(err, TR_ERR_ARG,
                       "speculative decoding is not supported for %s: its recurrent state cannot drop rejected "
                       "guesses", e->model->arch->name);
            return -1;
        }
        if (sp.kind == TR_SPEC_DRAFT && !e->dc) {
            tr_err_set(err, TR_ERR_ARG,
                       "speculative decoding: 'draft' needs a draft model (--model-draft), and this engine has none");
            return -1;
        }
    }
    if (p->grammar && !e->gvocab && !(e->gvocab = tr_grammar_vocab_new(e->vocab))) {
        tr_err_set(err, TR_ERR_NOMEM, "out of memory for the vocabulary's token bytes (grammar)");
        return -1;
    }
    seq *s = calloc(1, sizeof *s);
    if (s && p->grammar && !(s->grammar = tr_grammar_clone(p->grammar))) {
        seq_destroy(s);
        tr_err_set(err, TR_ERR_NOMEM, "out of memory for a grammar");
        return -1;
    }
    if (s) {
        /* Room for every token the sequence may ever hold. */
        if (e->stream) /* no limit: the array grows while it generates */
            s->cap_tok = p->n_predict < 0 ? p->n_prompt + 256
                         : (int64_t)p->n_prompt + p->n_predict > INT32_MAX / 2 ? INT32_MAX / 2
                                                                              : p->n_prompt + p->n_predict;
        else
            s->cap_tok = p->n_predict < 0 || (int64_t)p->n_prompt + p->n_predict > limit ? limit
                                                                                         : p->n_prompt + p->n_predict;
        if (s->cap_tok < p->n_prompt) s->cap_tok = p->n_prompt;
        s->tok = malloc(sizeof *s->tok * (size_t)s->cap_tok);
    }
    if (s && sp.kind != TR_SPEC_NONE) {
        s->spec = sp;
        s->alpha = s->alpha0 = sp.kind == TR_SPEC_NGRAM ? 0.7 : 0.5; /* a copy of the context is likely right */
        s->alpha_chain = s->alpha0;
        s->draft = malloc(sizeof *s->draft * (size_t)sp.n_max);
        s->dr = sp.kind == TR_SPEC_DRAFT ? NULL : drafter_new(sp.kind);
    }
    if (!s || !s->tok || (sp.kind != TR_SPEC_NONE && (!s->draft || (!s->dr && sp.kind != TR_SPEC_DRAFT)))) {
        if (s) seq_destroy(s);
        tr_err_set(err, TR_ERR_NOMEM, "out of memory for a sequence of %d tokens", p->n_prompt);
        return -1;
    }
    memcpy(s->tok, p->prompt, sizeof *s->tok * (size_t)p->n_prompt);
    s->n_tok = s->n_prompt = p->n_prompt;
    s->n_predict = p->n_predict;
    s->sp = p->sampling;
    s->ignore_eog = p->ignore_eog;
    s->no_cache = p->no_cache || !e->cache;
    s->on_prompt_logits = p->on_prompt_logits;
    s->logits_from = p->logits_from;
    s->user = p->user;
    s->slot = -1;
    s->id = e->next_id++;
    s->next = e->all;
    e->all = s;
    queue_push(e, s, false);
    return s->id;
}

/* ---------------------------------------------------------- the slots */

/* A running sequence gives its slot back (its cache released: blocks it
 * published stay in the prefix cache). */
static void vacate(tr_engine *e, seq *s) {
    if (s->slot < 0) return;
    if (!s->no_cache) tr_kv_keep_tail(e->c->kv, s->slot);
    tr_kv_seq_rm(e->c, s->slot, 0, -1);
    if (e->dc) tr_kv_seq_rm(e->dc, s->slot, 0, -1);
    s->d_fed = 0;
    e->slot[s->slot] = NULL;
    s->slot = -1;
    s->n_fed = s->n_drop = 0;
}

static void end_seq(tr_engine *e, seq *s, tr_finish why) {
    if (s->finish != TR_FINISH_NONE) return;
    s->finish = why;
    if (s->slot >= 0) vacate(e, s);
    else queue_remove(e, s);
    tr_sampler_free(s->sampler);
    s->sampler = NULL;
}

static int32_t pending(const seq *s) { return s->n_tok - s->n_fed; }

static int32_t blocks_for(const tr_engine *e, int32_t n) {
    const int32_t bs = tr_kv_block_size(e->c->kv);
    return (n + bs - 1) / bs;
}

/* The prefix another running sequence is computing and s could reuse once
 * it has: true when a running sequence still prefilling holds s's tokens
 * up to the end of the block after `have` but has not computed it yet. */
static bool wait_for_twin(const tr_engine *e, const seq *s, int32_t have) {
    const int32_t bs = tr_kv_block_size(e->c->kv), want = have + bs;
    if (want > s->n_tok - 1) return false; /* reuse always leaves the last token to compute */
    for (int32_t i = 0; i < e->n_seq_max; i++) {
        const seq *r = e->slot[i];
        if (!r || r->no_cache || r->n_fed >= want || r->n_tok < want) continue;
        if (!memcmp(r->tok, s->tok, sizeof *s->tok * (size_t)want)) return true;
    }
    return false;
}

typedef enum { ADMITTED, WAIT_TWIN, NO_ROOM } admission;

static admission admit(tr_engine *e, seq *s, int32_t slot) {
    tr_context *c = e->c;
    int32_t have = s->no_cache ? 0 : tr_kv_seq_reuse(c, slot, s->tok, s->n_tok);
    admission why = ADMITTED;
    if (!s->no_cache && wait_for_twin(e, s, have)) why = WAIT_TWIN;
    else if (blocks_for(e, s->n_tok - have < c->n_ctx_seq ? s->n_tok - have : c->n_ctx_seq) > tr_kv_available(c->kv))
        why = NO_ROOM;
    else if (!s->admitted_once && !(s->sampler = tr_sampler_new(&s->sp, tr_model_n_vocab(e->model)))) why = NO_ROOM;
    else if (!s->admitted_once && s->grammar) {
        /* Speculation stays exact under a grammar: rows are sampled in order
         * and only while the guesses before were right, so the grammar
         * advances by accepted tokens only (sample_rows). */
        if (tr_sampler_set_grammar(s->sampler, s->grammar, e->gvocab, NULL) != TR_OK) {
            tr_sampler_free(s->sampler);
            s->sampler = NULL;
            why = NO_ROOM;
        } else {
            tr_grammar_free(s->grammar);
            s->grammar = NULL;
        }
    }
    if (why != ADMITTED) {
        tr_kv_seq_rm(c, slot, 0, -1);
        return why;
    }
    if (!s->admitted_once) { /* the prompt counts for the penalties, as in llama.cpp's server */
        for (int32_t i = 0; i < s->n_prompt; i++) tr_sampler_accept(s->sampler, s->tok[i]);
        s->n_cached = have;
        s->admitted_once = true;
        if (!s->no_cache) tr_kv_note_lookup(c->kv, s->n_prompt, have);
    }
    tr_context_seq_publish(c, slot, !s->no_cache);
    s->slot = slot;
    s->n_fed = have;
    s->n_drop = 0;
    s->admitted = ++e->n_admitted;
    e->slot[slot] = s;
    return ADMITTED;
}

/* Oldest first; one out of room stops the line (no overtaking by smaller
 * requests), one waiting for a twin's prefix lets the others go. */
static void admit_waiting(tr_engine *e) {
    int32_t slot = 0;
    for (seq *s = e->q_head, *n; s; s = n) {
        n = s->qnext;
        while (slot < e->n_seq_max && e->slot[slot]) slot++;
        if (slot == e->n_seq_max) return;
        admission a = admit(e, s, slot);
        if (a == ADMITTED) queue_remove(e, s);
        else if (a == NO_ROOM) return;
    }
}

/* Blocks the generating sequences need this step; preempt the newest
 * running sequences until the pool has them. */
static void make_room(tr_engine *e) {
    for (;;) {
        int64_t need = 0;
        for (int32_t i = 0; i < e->n_seq_max; i++)
            if (e->slot[i] && pending(e->slot[i]) == 1) need += tr_kv_blocks_needed(e->c->kv, i, 1);
        if (need <= tr_kv_available(e->c->kv)) return;
        seq *victim = NULL;
        for (int32_t i = 0; i < e->n_seq_max; i++)
            if (e->slot[i] && (!victim || e->slot[i]->admitted > victim->admitted)) victim = e->slot[i];
        if (!victim || count_running(e) == 1) return; /* one sequence always fits (n_ctx_seq <= n_ctx) */
        vacate(e, victim);
        queue_push(e, victim, true);
        e->n_preempted++;
    }
}

/* ---------------------------------------------------------------- a step */

enum { LOGITS_CHUNK = 64 }; /* rows of logits one sequence asks of a step (Gemma's are 1 MiB each) */

static bool wants_logits(const seq *s, int32_t pos) {
    return s->on_prompt_logits && pos >= s->logits_from && pos < s->n_prompt;
}

/* Batch rows [*n, *n + take + n_draft): the sequence's next take known
 * tokens, then its guesses. */
static void feed(tr_engine *e, seq *s, int32_t take, int32_t *n) {
    s->b_first = *n;
    s->take = take;
    s->b_n = take + s->n_draft;
    for (int32_t k = 0; k < s->b_n; k++) {
        const int32_t pos = s->n_fed + k;
        e->b_tok[*n] = k < take ? s->tok[pos] : s->draft[k - take];
        e->b_pos[*n] = pos - s->n_drop; /* its position in the cache */
        e->b_seq[*n] = s->slot;
        e->b_logits[*n] = (k >= take - 1 && pos >= s->n_tok - 1) || wants_logits(s, pos);
        (*n)++;
    }
}

/* ------------------------------------------------------------ speculation */

/* The CPU time of the threads that compute a step: this thread's and the
 * pool's workers'. What a step costs is measured in it, not in wall time,
 * because the choice it serves (is a guess worth a row?) is about the
 * step's own work. Wall time also counts the moments other processes held
 * the cores, which come and go between the measurements of a step of 8
 * rows (taken every step) and of 9 (taken now and then): on a busy machine
 * the lucky minimum of a rare size makes its rows look cheap or a
 * preempted one dear. The process's CPU time would count its other
 * threads too: a server's connections, whose work grows with the streams,
 * not the rows (5-15 % of an eight-stream Gemma step). The pool's workers
 * sleep after a brief spin, so a worker waiting on a preempted one adds
 * little. The step's sampling runs on this thread alone while the workers
 * wait: it costs the step its seconds times the threads. */
static double thread_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double compute_cpu_s(const tr_engine *e) { return thread_cpu_s() + tr_pool_cpu_s(e->c->pool); }

/* The cost of a step of n tokens (each with its logits) relative to one of
 * 1, before any is measured: the shape measured on a 2-core AVX2 machine
 * with Gemma 3 270M (a second row costs a tenth of a step more, each
 * further one about a third: Gemma's 262144-token output layer is most of
 * the work of a row). */
static double cost_prior(int32_t n) { return n > 1 ? 1.1 + 0.35 * (n - 2) : 1.0; }

/* A measured size counts while it was measured in the last STALE steps: a
 * size measured once on a busy moment and too dear to be chosen since is
 * forgotten, and estimated from its neighbours again. */
enum { STALE = 512 };

/* Costs are kept per number of generating rows d, for d + k rows (k
 * guesses): the choice compares steps of the same d, and those of another
 * d are another regime (a server's eight streams keep its clients and
 * connections busier than one: sizes measured by one stream made guess rows
 * of eight look cheaper than their base). */
static size_t cost_index(int32_t d, int32_t k) { return (size_t)d * (GUESS_MAX + 1) + (size_t)k; }

static bool measured(const tr_engine *e, int32_t d, int32_t k) {
    const size_t i = cost_index(d, k);
    return e->t_step[i] > 0 && e->n_steps - e->t_when[i] < STALE;
}

/* The estimated seconds of a step of d generating rows and k guesses: its
 * measurement, else the nearest measured k of the same d scaled by the
 * prior's shape, else the prior (only ratios between one d's sizes count). */
static double step_cost(const tr_engine *e, int32_t d, int32_t k) {
    if (k > GUESS_MAX) k = GUESS_MAX;
    if (measured(e, d, k)) return e->t_step[cost_index(d, k)];
    for (int32_t j = 1; j <= GUESS_MAX; j++) {
        const int32_t lo = k - j, hi = k + j;
        if (lo >= 0 && measured(e, d, lo)) return e->t_step[cost_index(d, lo)] * cost_prior(d + k) / cost_prior(d + lo);
        if (hi <= GUESS_MAX && measured(e, d, hi))
            return e->t_step[cost_index(d, hi)] * cost_prior(d + k) / cost_prior(d + hi);
    }
    return cost_prior(d + k);
}

/* A running minimum that creeps up 2 % a step: other processes on the
 * machine only ever slow a step down, so the fastest recent time is the
 * step's own cost; the creep follows it up as the cache grows deeper. */
static void note_step_cost(tr_engine *e, int32_t d, int32_t k, double secs) {
    if (d < 1 || d > e->n_seq_max || k > GUESS_MAX) return;
    const size_t i = cost_index(d, k);
    double *t = &e->t_step[i];
    *t = measured(e, d, k) && *t * 1.02 < secs ? *t * 1.02 : secs;
    e->t_when[i] = ++e->n_steps;
}

/* The argmax of a row of logits (first of equals): a row of Gemma's
 * 262144 took 1 ms in this file's loop, 0.2 ms kept in a register, a
 * few hundredths in tr_argmax's vectors (lookahead takes one per guess). */
static int32_t argmax_row(const float *l, int32_t n) { return (int32_t)tr_argmax(l, n); }

/* The draft model guesses want[i] tokens for sequence dec[i], greedily:
 * first it catches up with the sequence's tokens (a new sequence's prompt,
 * or the tokens accepted since its last guesses), then one token per
 * sequence per round. Its batches go through its own context; every
 * sequence's guesses land in its draft[] and n_draft. A failed batch (the
 * draft pool full) just leaves those sequences without guesses. */
static void draft_run(tr_engine *e, seq **dec, int32_t n_dec, const int32_t *want) {
    const int32_t nv = tr_model_n_vocab(e->dm);
    int32_t first[n_dec], cnt[n_dec], live[n_dec];
    for (int32_t i = 0; i < n_dec; i++) live[i] = want[i] > 0;
    /* Each round feeds every sequence what its draft context lacks of its
     * tokens and guesses so far (a chunk of at most the batch size), and a
     * sequence whose last one was fed gets its next guess from that row. */
    for (;;) {
        int32_t n = 0;
        for (int32_t i = 0; i < n_dec; i++) {
            seq *s = dec[i];
            const int32_t end = s->n_tok + s->n_draft; /* positions known: tokens, then guesses */
            cnt[i] = 0;
            if (!live[i] || s->n_draft >= want[i] || s->d_fed >= end || n >= e->n_batch) continue;
            int32_t take = end - s->d_fed;
            if (take > e->n_batch - n) take = e->n_batch - n;
            first[i] = n;
            cnt[i] = take;
            for (int32_t p = s->d_fed; p < s->d_fed + take; p++, n++) {
                e->b_tok[n] = p < s->n_tok ? s->tok[p] : s->draft[p - s->n_tok];
                e->b_pos[n] = p;
                e->b_seq[n] = s->slot;
                e->b_logits[n] = p == end - 1;
            }
        }
        if (n == 0) return;
        tr_batch b = {.n_tokens = n, .token = e->b_tok, .pos = e->b_pos, .seq_id = e->b_seq, .logits = e->b_logits};
        tr_error err = {{0}};
        const bool ok = tr_decode(e->dc, &b, &err) == TR_OK;
        for (int32_t i = 0; i < n_dec; i++) {
            seq *s = dec[i];
            if (!cnt[i]) continue;
            if (!ok) {
                live[i] = 0;
                continue;
            }
            s->d_fed += cnt[i];
            if (s->d_fed == s->n_tok + s->n_draft)
                s->draft[s->n_draft++] = argmax_row(tr_get_logits(e->dc, first[i] + cnt[i] - 1), nv);
        }
    }
}

/* The chance that a sequence's guesses 1..c are all accepted: alpha per
 * guess of the drafter's first lookup, alpha_chain per chained guess after
 * them (learnt apart: chained guesses are right in some texts, repeated
 * JSON fields, and wrong in others, where one estimate for both would
 * shorten the runs of the first lookup's good guesses too). */
static double guess_prob(const seq *s, int32_t c) {
    const int32_t first = c < s->n_first ? c : s->n_first;
    return pow(s->alpha, first) * pow(s->alpha_chain, c - first);
}

/* How many guesses each generating sequence verifies this step. Each
 * sequence's drafter proposes up to what it may take; the i-th guess of a
 * sequence adds guess_prob(i) expected tokens to its step (it counts only
 * if the ones before it are accepted). But a guess row makes the step
 * longer for every sequence in it (n_seq: the n_dec generating ones and
 * the prompts being fed), so guesses are chosen to make the product of the
 * sequences' rates grow, not their sum: a step's value is
 *   sum_i log(expected tokens of sequence i) - n_seq * log(cost),
 * the cost that measured for a step of n_dec generating rows plus the
 * guesses (prompt rows are left out of the price: they lengthen the real
 * step, so the guesses' share of it is overstated, and a step that feeds a
 * prompt verifies fewer). Alone (n_seq 1) that is the expected tokens per
 * second. In a batch of many streams, already compute-bound, a row costs
 * about what it gives and slows every stream: the sum's rule took one
 * stream's likely guesses, the streams with nothing to guess waited for
 * them, and a closed batch ends with its slowest stream (eight Gemma
 * streams on a 2-core Zen 3: 0.89-0.94x the aggregate tokens/s without
 * speculation before this rule and the cost table's regimes, 1.01-1.03x
 * after, docs/BENCHMARKS.md). Guesses are taken best first (the largest
 * gain in log) while the value grows: a single stream verifies long runs
 * of likely guesses, a batch of many only guesses that pay for every
 * stream's wait, and text the drafter cannot guess costs nothing. */
static int32_t choose_drafts(tr_engine *e, seq **dec, int32_t n_dec, int32_t n_seq, int32_t room) {
    int32_t n_prop = 0, cnt[n_dec], best[n_dec], want[n_dec];
    double expect[n_dec];
    bool drafting = false;
    for (int32_t i = 0; i < n_dec; i++) {
        seq *s = dec[i];
        s->n_draft = cnt[i] = best[i] = want[i] = 0;
        expect[i] = 1.0;
        s->n_first = INT32_MAX; /* the draft model's guesses are all first-hand */
        if (s->spec.kind == TR_SPEC_NONE) continue;
        int32_t k = s->spec.n_max;
        const int32_t left_ctx = e->c->n_ctx_seq - 1 - (s->n_fed - s->n_drop), left_cap = s->cap_tok - s->n_tok - 1;
        if (k > left_ctx) k = left_ctx;
        if (k > left_cap) k = left_cap;
        if (s->n_predict > 0 && k > s->n_predict - s->n_gen - 1) k = s->n_predict - s->n_gen - 1;
        if (k <= 0) continue;
        if (s->dr) {
            s->n_draft = drafter_propose(s->dr, s->tok, s->n_tok, k, s->draft, &s->n_first);
        } else { /* the draft model: about as many as a run of accepted guesses is long */
            want[i] = 1 + (int32_t)(s->alpha / (1.0 - s->alpha + 1e-9));
            if (want[i] > k) want[i] = k;
            drafting = true;
        }
    }
    if (drafting) draft_run(e, dec, n_dec, want);
    for (int32_t i = 0; i < n_dec; i++) n_prop += dec[i]->n_draft > 0;
    if (n_prop == 0) return 0;
    /* Greedy: the next guess that adds most to the log sum, while the value grows. */
    double gained = 0, best_value = -n_seq * log(step_cost(e, n_dec, 0));
    if (room > GUESS_MAX) room = GUESS_MAX;
    for (int32_t n = 1; n <= room; n++) {
        int32_t pick = -1;
        double l_pick = 0;
        for (int32_t i = 0; i < n_dec; i++) {
            if (cnt[i] >= dec[i]->n_draft) continue;
            const double l = log1p(guess_prob(dec[i], cnt[i] + 1) / expect[i]);
            if (l > l_pick) l_pick = l, pick = i;
        }
        if (pick < 0) break;
        expect[pick] += guess_prob(dec[pick], ++cnt[pick]);
        gained += l_pick;
        const double value = gained - n_seq * log(step_cost(e, n_dec, n));
        if (value > best_value) {
            best_value = value;
            memcpy(best, cnt, sizeof best);
        }
    }
    int32_t total = 0;
    for (int32_t i = 0; i < n_dec; i++) {
        seq *s = dec[i];
        if (s->spec.kind == TR_SPEC_NONE) continue;
        s->n_draft = best[i] >= s->spec.n_min ? best[i] : 0;
        if (s->n_draft == 0) { /* try again, some day */
            if (s->alpha < s->alpha0) s->alpha += 0.02 * (s->alpha0 - s->alpha);
            if (s->alpha_chain < s->alpha0) s->alpha_chain += 0.02 * (s->alpha0 - s->alpha_chain);
        }
        total += s->n_draft;
    }
    return total;
}


/* ---------------------------------------------------------------- a step */

/* A streaming sequence's token array doubles when full (it has no limit). */
static bool grow_tokens(seq *s) {
    if (s->cap_tok >= INT32_MAX / 2) return false;
    int32_t *t = realloc(s->tok, sizeof *t * (size_t)s->cap_tok * 2);
    if (!t) return false;
    s->tok = t;
    s->cap_tok *= 2;
    return true;
}

/* Streaming: every running sequence with tokens to feed whose cache is full
 * slides (drops the block after its sinks): so the cache a token meets
 * depends only on its index, whatever the chunks. A failed slide ends the
 * sequence. */
static void slide_full(tr_engine *e) {
    if (!e->stream) return;
    for (int32_t i = 0; i < e->n_seq_max; i++) {
        seq *s = e->slot[i];
        if (!s || pending(s) <= 0) continue;
        int32_t dropped = 0;
        tr_error err = {{0}};
        if (tr_kv_seq_slide(e->c, i, &dropped, &err) != TR_OK) end_seq(e, s, TR_FINISH_ERROR);
        else s->n_drop += dropped;
    }
}

/* Positions a sequence may still add to the cache this step (its limit). */
static int32_t room_left(const tr_engine *e, const seq *s) {
    return e->c->n_ctx_seq - tr_kv_len(e->c->kv, s->slot);
}

/* Sample sequence s's next tokens from this step's rows: the row after its
 * last known token, then the row after each guess while the token sampled
 * equals that guess. Returns why it ended (TR_FINISH_NONE: it goes on). */
static tr_finish sample_rows(tr_engine *e, seq *s, tr_step_stats *st) {
    const int32_t limit = e->c->n_ctx_seq, n0 = s->n_tok;
    const int32_t row0 = s->b_first + s->take - 1;
    tr_finish why = TR_FINISH_NONE;
    int32_t i = 0, *out = e->out_tok;
    for (;; i++) {
        const float *logits = tr_get_logits(e->c, row0 + i);
        const int32_t t = tr_sampler_sample(s->sampler, logits);
        s->logits = logits;
        out[i] = t;
        st->n_sampled++;
        if (!s->ignore_eog && tr_vocab_is_eog(e->vocab, t)) {
            s->n_eog = 1;
            why = TR_FINISH_EOG;
            break;
        }
        if (s->n_tok == s->cap_tok && e->stream && !grow_tokens(s)) {
            why = TR_FINISH_ERROR; /* out of memory for the token array */
            break;
        }
        s->tok[s->n_tok++] = t;
        s->n_gen++;
        if (s->n_predict > 0 && s->n_gen >= s->n_predict) why = TR_FINISH_LENGTH;
        else if (!e->stream && (s->n_fed + i + 1 >= limit || s->n_tok >= s->cap_tok))
            why = TR_FINISH_CONTEXT; /* no position left */
        if (why != TR_FINISH_NONE || i >= s->n_draft || t != s->draft[i]) break;
    }
    s->n_steps++;
    if (s->n_draft > 0) {
        /* Rows 0..i were fed known tokens; the rest were rejected guesses. */
        s->n_drafted += s->n_draft;
        s->n_accepted += i;
        st->n_drafted += s->n_draft;
        st->n_accepted += i;
        for (int32_t k = 0; k < s->n_draft && k <= i; k++) { /* accepted: i of them; rejected: the next, if any */
            double *a = k < s->n_first ? &s->alpha : &s->alpha_chain;
            *a += 0.15 * ((k < i ? 1.0 : 0.0) - *a);
        }
        tr_kv_seq_rm(e->c, s->slot, s->n_fed - s->n_drop + i + 1, -1);
    }
    if (e->dc && s->d_fed > n0 + i) { /* the draft model's cache: its guesses past the accepted ones go */
        tr_kv_seq_rm(e->dc, s->slot, n0 + i, -1);
        s->d_fed = n0 + i;
    }
    if (s->dr && why == TR_FINISH_NONE) {
        if (drafter_wants_all_rows(s->dr))
            for (int32_t k = i + 1; k <= s->n_draft; k++)
                out[k] = argmax_row(tr_get_logits(e->c, row0 + k), tr_model_n_vocab(e->model));
        drafter_observe(s->dr, s->tok, n0, s->draft, s->n_draft, out, i);
    }
    s->n_fed += i;
    return why;
}

tr_status tr_engine_step(tr_engine *e, tr_step_stats *stats, tr_error *err) {
    tr_step_stats st = {0};
    if (stats) *stats = st;
    admit_waiting(e);
    slide_full(e);
    make_room(e);
    tr_kv *kv = e->c->kv;
    int32_t n = 0, avail = tr_kv_available(kv), n_dec = 0;
    seq *dec[e->n_seq_max > 0 ? e->n_seq_max : 1];
    for (int32_t i = 0; i < e->n_seq_max; i++) {
        seq *s = e->slot[i];
        if (!s) continue;
        s->b_n = s->take = s->n_draft = 0;
        s->logits = NULL;
        if (pending(s) != 1 || n >= e->n_batch) continue;
        const int32_t need = tr_kv_blocks_needed(kv, i, 1);
        if (need > avail) continue;
        avail -= need;
        s->take = 1;
        dec[n_dec++] = s;
        n++;
    }
    /* Prompt chunks with the room left. */
    const int32_t prompt_cap = n > 0 && n + e->prefill_chunk < e->n_batch ? n + e->prefill_chunk : e->n_batch;
    for (int32_t i = 0; i < e->n_seq_max && n < prompt_cap; i++) {
        seq *s = e->slot[i];
        if (!s || pending(s) <= 1) continue;
        int32_t take = pending(s);
        if (take > prompt_cap - n) take = prompt_cap - n;
        if (e->stream && take > room_left(e, s)) take = room_left(e, s); /* a chunk never crosses a slide */
        if (s->on_prompt_logits) { /* at most LOGITS_CHUNK rows of logits */
            const int32_t from = s->logits_from > s->n_fed ? s->logits_from : s->n_fed;
            if (s->n_fed + take > from + LOGITS_CHUNK) take = from + LOGITS_CHUNK - s->n_fed;
        }
        while (take > 0 && tr_kv_blocks_needed(kv, i, take) > avail) /* what the pool can hold */
            take = take > tr_kv_block_size(kv) ? take - tr_kv_block_size(kv) : take - 1;
        if (take <= 0) continue;
        avail -= tr_kv_blocks_needed(kv, i, take);
        s->take = take;
        n += take;
        st.n_prompt_tokens += take;
    }
    /* Guesses after the generating sequences' tokens, within the batch and the pool. */
    int32_t n_seq = n_dec;
    for (int32_t i = 0; i < e->n_seq_max; i++) n_seq += e->slot[i] && e->slot[i]->take > 0 && pending(e->slot[i]) > 1;
    if (n_dec > 0 && choose_drafts(e, dec, n_dec, n_seq, e->n_batch - n) > 0)
        for (int32_t k = 0; k < n_dec; k++) {
            seq *s = dec[k];
            const int32_t base = tr_kv_blocks_needed(kv, s->slot, 1);
            while (s->n_draft > 0 && tr_kv_blocks_needed(kv, s->slot, 1 + s->n_draft) - base > avail) s->n_draft--;
            avail -= tr_kv_blocks_needed(kv, s->slot, 1 + s->n_draft) - base;
        }
    n = 0;
    for (int32_t k = 0; k < n_dec; k++) { /* generating sequences first, */
        const int32_t take = dec[k]->take;
        feed(e, dec[k], take, &n);
    }
    for (int32_t i = 0; i < e->n_seq_max; i++) /* then prompts */
        if (e->slot[i] && e->slot[i]->take > 0 && pending(e->slot[i]) > 1) feed(e, e->slot[i], e->slot[i]->take, &n);
    if (n == 0) return TR_OK;

    tr_batch b = {.n_tokens = n, .token = e->b_tok, .pos = e->b_pos, .seq_id = e->b_seq, .logits = e->b_logits};
    const double t0 = compute_cpu_s(e);
    tr_status rc = tr_decode(e->c, &b, err);
    if (rc != TR_OK) { /* the cache is as it was; the batch's sequences cannot go on */
        for (int32_t i = 0; i < e->n_seq_max; i++)
            if (e->slot[i] && e->slot[i]->b_n) end_seq(e, e->slot[i], TR_FINISH_ERROR);
        return rc;
    }
    const double t_fwd = compute_cpu_s(e) - t0, t1 = thread_cpu_s();
    st.n_tokens = n;
    for (int32_t i = 0; i < e->n_seq_max; i++) {
        seq *s = e->slot[i];
        if (!s || !s->b_n) continue;
        if (s->on_prompt_logits)
            for (int32_t k = 0; k < s->take; k++)
                if (wants_logits(s, s->n_fed + k))
                    s->on_prompt_logits(s->user, s->n_fed + k, tr_get_logits(e->c, s->b_first + k));
        s->n_fed += s->take;
        if (s->n_fed < s->n_tok) continue;
        /* Every known token is in the cache: the next one(s). */
        if (s->n_predict == 0) {
            end_seq(e, s, TR_FINISH_LENGTH);
            continue;
        }
        s->n_fed--; /* sample_rows counts from the row of the last known token */
        const tr_finish why = sample_rows(e, s, &st);
        s->n_fed++;
        if (why != TR_FINISH_NONE) end_seq(e, s, why);
    }
    /* A step's cost: the forward pass and what its rows ask after it (a sampled token each, and lookahead's
     * argmax of every guess: a Gemma row of logits is 1 MiB to read). Only steps whose every row has its
     * logits, the rows guesses add: a prompt row skips the output layer, most of a Gemma row's work (a
     * 14-token prompt chunk took about half the time of a step of 14 generating rows). */
    if (st.n_prompt_tokens == 0) note_step_cost(e, n_dec, n - n_dec, t_fwd + (thread_cpu_s() - t1) * (double)e->c->n_threads);
    if (stats) *stats = st;
    return TR_OK;
}

/* ---------------------------------------------------------------- results */

int32_t tr_engine_take(tr_engine *e, int64_t id, int32_t *tokens, int32_t cap, tr_seq_info *info) {
    seq *s = find(e, id);
    if (!s) return -1;
    int32_t n = s->n_gen - s->n_taken;
    if (n > cap) n = cap;
    if (n > 0 && tokens) memcpy(tokens, s->tok + s->n_prompt + s->n_taken, sizeof *tokens * (size_t)n);
    else if (!tokens) n = 0;
    s->n_taken += n;
    if (info) {
        info->finish = s->finish;
        info->running = s->slot >= 0;
        info->n_prompt = s->n_prompt;
        info->n_cached = s->n_cached;
        info->n_generated = s->n_gen + s->n_eog;
        info->n_drafted = s->n_drafted;
        info->n_accepted = s->n_accepted;
        info->n_steps = s->n_steps;
    }
    if (s->finish != TR_FINISH_NONE && s->n_taken == s->n_gen) tr_engine_cancel(e, id, true);
    return n;
}

const float *tr_engine_logits(tr_engine *e, int64_t id) {
    seq *s = find(e, id);
    return s ? s->logits : NULL;
}

void tr_engine_cancel(tr_engine *e, int64_t id, bool release) {
    seq *s = find(e, id);
    if (!s) return;
    end_seq(e, s, TR_FINISH_CANCELLED);
    if (!release) return;
    for (seq **pp = &e->all; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    seq_destroy(s);
}
