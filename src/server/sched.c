#include "sched.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct slot {
    srv_job *job;        /* NULL: free */
    bool ready;          /* sampler made, prompt accepted */
    void *sampler;
    srv_textout out;
    int32_t n_past;      /* positions the sequence holds */
    int32_t n_fed;       /* prompt tokens fed so far */
    int32_t next_tok;    /* generating: the token to feed next */
    int32_t n_gen;
    int32_t logits_row;  /* row of this step's batch whose logits are ours, -1: none */
    srv_token_lp *lp;    /* scheduler-side copy until published */
    size_t n_lp, cap_lp;
    double t_first;      /* first token sampled */
} slot;

struct srv_sched {
    srv_engine eng;
    srv_metrics *metrics;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* wakes the scheduler: a job arrived, was cancelled, or stop */
    pthread_t thread;
    bool thread_started;

    srv_job *q_head, *q_tail;
    int n_queued, queue_max;
    slot *slots;
    int n_slots, n_active;

    bool stopping;       /* no new jobs; queued ones failed */
    double stop_deadline;/* then cancel what is still running */
    uint64_t rng;        /* seeds for requests that bring none */

    /* The step's batch: allocated once. */
    int32_t *b_tok, *b_pos, *b_seq;
    int8_t *b_logits;
};

pthread_mutex_t *srv_sched_mutex(srv_sched *s) { return &s->mu; }

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- jobs */

srv_job *srv_job_new(srv_request *req, int32_t *prompt, int32_t n_prompt, double deadline) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->req = *req;
    memset(req, 0, sizeof *req);
    j->prompt = prompt;
    j->n_prompt = n_prompt;
    j->max_tokens = j->req.max_tokens;
    j->t_arrive = srv_now();
    j->deadline = deadline;
    j->refs = 1;
    pthread_cond_init(&j->cv, NULL);
    return j;
}

static void job_free(srv_job *j) {
    srv_request_free(&j->req);
    free(j->prompt);
    srv_buf_free(&j->text);
    free(j->lp);
    pthread_cond_destroy(&j->cv);
    free(j);
}

/* With s->mu held. */
static void job_unref(srv_job *j) {
    if (--j->refs == 0) job_free(j);
}

void srv_sched_release(srv_sched *s, srv_job *job) {
    pthread_mutex_lock(&s->mu);
    job_unref(job);
    pthread_mutex_unlock(&s->mu);
}

static void gauges(srv_sched *s) {
    pthread_mutex_lock(&s->metrics->mu);
    s->metrics->in_flight = s->n_active;
    s->metrics->queued = s->n_queued;
    pthread_mutex_unlock(&s->metrics->mu);
}

/* With s->mu held: take a queued job out of the queue. */
static void unlink_queued(srv_sched *s, srv_job *job) {
    srv_job **pp = &s->q_head, *prev = NULL;
    while (*pp && *pp != job) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp) return;
    *pp = job->next;
    if (s->q_tail == job) s->q_tail = prev;
    job->next = NULL;
    s->n_queued--;
}

/* With s->mu held: a job ends without a slot (or loses it) with an error. */
static void job_fail(srv_job *j, int status, const char *code, const char *msg) {
    j->failed = true;
    srv_error_set(&j->err, status, "server_error", code, NULL, "%s", msg);
    j->state = SRV_JOB_DONE;
    j->t_end = srv_now();
    pthread_cond_broadcast(&j->cv);
}

int srv_sched_submit(srv_sched *s, srv_job *job) {
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->stopping) {
        rc = 2;
    } else if (s->n_queued >= s->queue_max + (s->n_slots - s->n_active)) {
        rc = 1;
    } else {
        job->refs++;
        job->state = SRV_JOB_QUEUED;
        if (s->q_tail) s->q_tail->next = job;
        else s->q_head = job;
        s->q_tail = job;
        s->n_queued++;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc == 0) gauges(s);
    if (rc == 1) {
        pthread_mutex_lock(&s->metrics->mu);
        s->metrics->rejected_busy++;
        pthread_mutex_unlock(&s->metrics->mu);
    }
    return rc;
}

void srv_sched_cancel(srv_sched *s, srv_job *job) {
    pthread_mutex_lock(&s->mu);
    bool counted = false;
    if (job->state == SRV_JOB_QUEUED) {
        unlink_queued(s, job);
        job->cancelled = true;
        job->state = SRV_JOB_DONE;
        job->t_end = srv_now();
        job_unref(job); /* the scheduler's reference: it will never see this job */
        counted = true;
    } else if (job->state == SRV_JOB_ACTIVE && !job->cancelled) {
        job->cancelled = true;
        pthread_cond_signal(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    if (counted) {
        gauges(s);
        pthread_mutex_lock(&s->metrics->mu);
        s->metrics->cancelled++;
        pthread_mutex_unlock(&s->metrics->mu);
    }
}

/* --------------------------------------------------------------- slots */

static void slot_reset(srv_sched *s, slot *sl, int idx) {
    if (sl->sampler) s->eng.sampler_free(s->eng.self, sl->sampler);
    s->eng.seq_clear(s->eng.self, idx);
    srv_textout_free(&sl->out);
    free(sl->lp);
    memset(sl, 0, sizeof *sl);
    sl->logits_row = -1;
}

/* With s->mu held: hand the job what the slot may release (everything when
 * final). False when memory ran out: the job has failed. */
static bool slot_publish(srv_sched *s, slot *sl, bool final) {
    (void)s;
    srv_job *j = sl->job;
    size_t r = srv_textout_releasable(&sl->out, final);
    if (r > sl->out.released) {
        if (!srv_buf_append(&j->text, sl->out.raw.p + sl->out.released, r - sl->out.released)) {
            job_fail(j, 500, NULL, "out of memory while generating");
            return false;
        }
        sl->out.released = r;
    }
    if (sl->n_lp > j->n_lp) {
        if (j->cap_lp < sl->n_lp) {
            srv_token_lp *p = realloc(j->lp, sl->cap_lp * sizeof *p);
            if (!p) {
                job_fail(j, 500, NULL, "out of memory while generating");
                return false;
            }
            j->lp = p;
            j->cap_lp = sl->cap_lp;
        }
        memcpy(j->lp + j->n_lp, sl->lp + j->n_lp, (sl->n_lp - j->n_lp) * sizeof *sl->lp);
        j->n_lp = sl->n_lp;
    }
    j->n_gen = sl->n_gen;
    pthread_cond_broadcast(&j->cv);
    return true;
}

/* With s->mu held: the slot's job is over (finish set, or failed/cancelled). */
static void slot_end(srv_sched *s, int idx) {
    slot *sl = &s->slots[idx];
    srv_job *j = sl->job;
    double now = srv_now();
    if (!j->failed && !j->cancelled) slot_publish(s, sl, true);
    j->state = SRV_JOB_DONE;
    j->t_end = now;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_lock(&s->metrics->mu);
    if (j->cancelled) s->metrics->cancelled++;
    if (sl->n_gen > 1 && now > sl->t_first)
        s->metrics->last_gen_tps = (double)(sl->n_gen - 1) / (now - sl->t_first);
    pthread_mutex_unlock(&s->metrics->mu);
    job_unref(j);
    slot_reset(s, sl, idx);
    s->n_active--;
}

/* Outside the lock: make the sampler and remember the prompt for the
 * penalties, as llama.cpp's server does. */
static bool slot_prepare(srv_sched *s, slot *sl) {
    srv_job *j = sl->job;
    tr_sampler_params p = j->req.sampling;
    if (!j->req.has_seed) p.seed = splitmix(&s->rng);
    sl->sampler = s->eng.sampler_new(s->eng.self, &p);
    if (!sl->sampler) return false;
    for (int32_t i = 0; i < j->n_prompt; i++) s->eng.accept(s->eng.self, sl->sampler, j->prompt[i]);
    srv_textout_init(&sl->out, j->req.stop, j->req.n_stop);
    sl->ready = true;
    return true;
}

/* Outside the lock: one sampled token. Returns the finish reason, NONE to go on. */
static srv_finish slot_take(srv_sched *s, slot *sl, const float *logits, bool *oom) {
    srv_job *j = sl->job;
    int32_t tok = s->eng.sample(s->eng.self, sl->sampler, logits);
    if (sl->n_gen == 0) sl->t_first = srv_now();
    sl->n_gen++;
    if (s->eng.is_eog(s->eng.self, tok)) return SRV_FINISH_STOP;
    if (j->req.logprobs) {
        if (sl->n_lp == sl->cap_lp) {
            size_t cap = sl->cap_lp ? sl->cap_lp * 2 : 64;
            srv_token_lp *p = realloc(sl->lp, cap * sizeof *p);
            if (!p) return *oom = true, SRV_FINISH_STOP;
            sl->lp = p;
            sl->cap_lp = cap;
        }
        srv_token_lp *e = &sl->lp[sl->n_lp++];
        e->id = tok;
        e->off = (uint32_t)sl->out.raw.len;
        e->n_top = (uint8_t)j->req.top_logprobs;
        e->logprob = srv_logprobs(logits, s->eng.n_vocab, tok, e->n_top, e->top);
    }
    char piece[256];
    size_t n = s->eng.piece(s->eng.self, tok, piece, sizeof piece);
    if (n > sizeof piece) n = sizeof piece;
    if (!srv_textout_push(&sl->out, piece, n)) return *oom = true, SRV_FINISH_STOP;
    if (sl->out.stopped) return SRV_FINISH_STOP;
    if (j->max_tokens > 0 && sl->n_gen >= j->max_tokens) return SRV_FINISH_LENGTH;
    if (sl->n_past >= s->eng.n_ctx) return SRV_FINISH_LENGTH; /* no position left for it */
    sl->next_tok = tok;
    return SRV_FINISH_NONE;
}

/* One step over every active slot. Called without the lock. */
static void step(srv_sched *s) {
    int32_t n = 0, n_prompt_tok = 0;
    int32_t cap = s->eng.n_batch;
    /* Generating slots first, one token each: they are what clients wait on. */
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        sl->logits_row = -1;
        if (!sl->job || !sl->ready || sl->n_fed < sl->job->n_prompt || n >= cap) continue;
        s->b_tok[n] = sl->next_tok;
        s->b_pos[n] = sl->n_past;
        s->b_seq[n] = i;
        s->b_logits[n] = 1;
        sl->logits_row = n++;
    }
    /* Then prompt chunks with what room is left. While others are generating,
     * a long prompt goes in smaller pieces, so that it delays their next
     * token by a fraction of a full batch, not by the whole prompt. */
    int32_t prompt_cap = cap;
    if (n > 0) {
        int32_t piece = cap / 8 > 32 ? cap / 8 : 32;
        if (n + piece < prompt_cap) prompt_cap = n + piece;
    }
    for (int i = 0; i < s->n_slots && n < prompt_cap; i++) {
        slot *sl = &s->slots[i];
        if (!sl->job || !sl->ready || sl->n_fed >= sl->job->n_prompt) continue;
        int32_t take = sl->job->n_prompt - sl->n_fed;
        if (take > prompt_cap - n) take = prompt_cap - n;
        for (int32_t k = 0; k < take; k++) {
            s->b_tok[n] = sl->job->prompt[sl->n_fed + k];
            s->b_pos[n] = sl->n_past + k;
            s->b_seq[n] = i;
            s->b_logits[n] = 0;
            n++;
        }
        sl->n_fed += take;
        n_prompt_tok += take;
        if (sl->n_fed == sl->job->n_prompt) {
            s->b_logits[n - 1] = 1;
            sl->logits_row = n - 1;
        }
    }
    if (n == 0) return;

    tr_batch b = {.n_tokens = n, .token = s->b_tok, .pos = s->b_pos, .seq_id = s->b_seq, .logits = s->b_logits};
    tr_error err = {{0}};
    double t0 = srv_now();
    tr_status st = s->eng.decode(s->eng.self, &b, &err);
    double dt = srv_now() - t0;

    if (st != TR_OK) {
        /* The batch left the cache as it was; the slots in it cannot go on. */
        pthread_mutex_lock(&s->mu);
        for (int32_t k = 0; k < n; k++) {
            slot *sl = &s->slots[s->b_seq[k]];
            if (!sl->job || sl->job->state == SRV_JOB_DONE) continue;
            char msg[600];
            snprintf(msg, sizeof msg, "generation failed: %s", err.msg);
            job_fail(sl->job, 500, NULL, msg);
            slot_end(s, s->b_seq[k]);
        }
        pthread_mutex_unlock(&s->mu);
        gauges(s);
        return;
    }
    for (int32_t k = 0; k < n; k++) s->slots[s->b_seq[k]].n_past++;

    pthread_mutex_lock(&s->metrics->mu);
    s->metrics->prompt_tokens += (uint64_t)n_prompt_tok;
    if (n_prompt_tok) s->metrics->prompt_seconds += dt;
    else s->metrics->gen_seconds += dt;
    pthread_mutex_unlock(&s->metrics->mu);

    /* Sample outside the lock (log-softmax over the vocabulary is not free),
     * then publish every slot's news under one lock. */
    srv_finish fin[s->n_slots];
    bool oom[s->n_slots];
    int32_t sampled = 0;
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        fin[i] = SRV_FINISH_NONE;
        oom[i] = false;
        if (!sl->job || sl->logits_row < 0) continue;
        fin[i] = slot_take(s, sl, s->eng.logits(s->eng.self, sl->logits_row), &oom[i]);
        sampled++;
    }
    pthread_mutex_lock(&s->metrics->mu);
    s->metrics->gen_tokens += (uint64_t)sampled;
    if (!n_prompt_tok) s->metrics->gen_timed_tokens += (uint64_t)sampled;
    pthread_mutex_unlock(&s->metrics->mu);

    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_slots; i++) {
        slot *sl = &s->slots[i];
        if (!sl->job || sl->logits_row < 0) continue;
        if (oom[i]) {
            job_fail(sl->job, 500, NULL, "out of memory while generating");
            slot_end(s, i);
        } else if (fin[i] != SRV_FINISH_NONE) {
            sl->job->finish = fin[i];
            slot_end(s, i);
        } else if (!slot_publish(s, sl, false)) {
            slot_end(s, i);
        }
    }
    pthread_mutex_unlock(&s->mu);
    gauges(s);
}

static void *sched_main(void *arg) {
    srv_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        double now = srv_now();
        /* Admit queued jobs into free slots, oldest first. */
        for (int i = 0; i < s->n_slots && s->q_head; i++) {
            if (s->slots[i].job) continue;
            srv_job *j = s->q_head;
            unlink_queued(s, j);
            j->state = SRV_JOB_ACTIVE;
            j->t_start = now;
            s->slots[i].job = j;
            s->slots[i].ready = false;
            s->n_active++;
        }
        /* Cancelled, out of time, or shut down past the grace period. */
        for (int i = 0; i < s->n_slots; i++) {
            srv_job *j = s->slots[i].job;
            if (!j) continue;
            if (j->cancelled) {
                j->finish = SRV_FINISH_STOP;
                slot_end(s, i);
            } else if (s->stopping && now >= s->stop_deadline) {
                job_fail(j, 503, "shutting_down", "the server is shutting down");
                slot_end(s, i);
            } else if (j->deadline > 0 && now >= j->deadline) {
                /* As llama.cpp's t_max_predict_ms: stop where it got to. */
                j->finish = SRV_FINISH_LENGTH;
                slot_end(s, i);
            }
        }
        for (srv_job *j = s->q_head, *nx; j; j = nx) {
            nx = j->next;
            if (j->deadline > 0 && now >= j->deadline) {
                unlink_queued(s, j);
                job_fail(j, 503, "timeout", "the request timed out waiting for a free slot");
                job_unref(j);
            }
        }
        pthread_mutex_unlock(&s->mu);
        gauges(s);
        pthread_mutex_lock(&s->mu);
        if (s->stopping && s->n_active == 0) break;
        if (s->n_active == 0) {
            /* Idle: sleep until a job arrives (or a queued deadline, checked each second). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        bool fail = false;
        for (int i = 0; i < s->n_slots; i++)
            if (s->slots[i].job && !s->slots[i].ready && !slot_prepare(s, &s->slots[i])) fail = true;
        if (fail) {
            pthread_mutex_lock(&s->mu);
            for (int i = 0; i < s->n_slots; i++)
                if (s->slots[i].job && !s->slots[i].ready) {
                    job_fail(s->slots[i].job, 500, NULL, "out of memory making a sampler");
                    slot_end(s, i);
                }
            pthread_mutex_unlock(&s->mu);
        }
        step(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

srv_sched *srv_sched_new(const srv_engine *eng, int n_slots, int queue_max, srv_metrics *m,
                         tr_error *err) {
    if (n_slots < 1 || n_slots > eng->n_batch) {
        if (err)
            snprintf(err->msg, sizeof err->msg, "--parallel %d: must be between 1 and the batch size %d",
                     n_slots, (int)eng->n_batch);
        return NULL;
    }
    srv_sched *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->eng = *eng;
    s->metrics = m;
    s->n_slots = n_slots;
    s->queue_max = queue_max < 0 ? 0 : queue_max;
    s->slots = calloc((size_t)n_slots, sizeof *s->slots);
    s->b_tok = malloc((size_t)eng->n_batch * sizeof *s->b_tok);
    s->b_pos = malloc((size_t)eng->n_batch * sizeof *s->b_pos);
    s->b_seq = malloc((size_t)eng->n_batch * sizeof *s->b_seq);
    s->b_logits = malloc((size_t)eng->n_batch);
    if (!s->slots || !s->b_tok || !s->b_pos || !s->b_seq || !s->b_logits) goto oom;
    for (int i = 0; i < n_slots; i++) s->slots[i].logits_row = -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->rng = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ (uint64_t)(uintptr_t)s;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sched_main, s) != 0) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        goto oom;
    }
    s->thread_started = true;
    return s;
oom:
    if (s) {
        free(s->slots);
        free(s->b_tok);
        free(s->b_pos);
        free(s->b_seq);
        free(s->b_logits);
        free(s);
    }
    if (err) snprintf(err->msg, sizeof err->msg, "out of memory starting the scheduler");
    return NULL;
}

void srv_sched_stop(srv_sched *s, double grace) {
    if (!s || !s->thread_started) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    s->stop_deadline = srv_now() + (grace > 0 ? grace : 0);
    while (s->q_head) {
        srv_job *j = s->q_head;
        unlink_queued(s, j);
        job_fail(j, 503, "shutting_down", "the server is shutting down");
        job_unref(j);
    }
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
    gauges(s);
}

void srv_sched_free(srv_sched *s) {
    if (!s) return;
    srv_sched_stop(s, 0);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->slots);
    free(s->b_tok);
    free(s->b_pos);
    free(s->b_seq);
    free(s->b_logits);
    free(s);
}
