#include "sched.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A job handed to the engine: the scheduler thread's view of it. */
typedef struct run {
    srv_job *job;
    int64_t id;          /* the engine's sequence */
    srv_textout out;
    srv_token_lp *lp;    /* scheduler-side copy until published */
    size_t n_lp, cap_lp;
    int32_t n_gen;
    bool started;        /* the engine admitted it */
    double t_first;      /* first token sampled */
} run;

struct srv_sched {
    srv_engine eng;
    srv_metrics *metrics;
    pthread_mutex_t mu;
    pthread_cond_t cv;   /* wakes the scheduler: a job arrived, was cancelled, or stop */
    pthread_t thread;
    bool thread_started;

    srv_job *q_head, *q_tail; /* not yet handed to the engine */
    int n_queued, queue_max;
    run *runs;           /* [n_slots + queue_max]: jobs the engine has */
    int n_runs, cap_runs, n_slots;

    bool stopping;       /* no new jobs; queued ones failed */
    double stop_deadline;/* then cancel what is still running */
    uint64_t rng;        /* seeds for requests that bring none */
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

/* With s->mu held (n_runs and the queue are the scheduler's). */
static void gauges_locked(srv_sched *s) {
    int started = 0;
    for (int i = 0; i < s->n_runs; i++) started += s->runs[i].started;
    pthread_mutex_lock(&s->metrics->mu);
    s->metrics->in_flight = started;
    s->metrics->queued = s->n_queued + s->n_runs - started;
    pthread_mutex_unlock(&s->metrics->mu);
}

static void gauges(srv_sched *s) {
    pthread_mutex_lock(&s->mu);
    gauges_locked(s);
    pthread_mutex_unlock(&s->mu);
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

/* With s->mu held: a job ends without a slot (or loses it) with an error,
 * typed as the OpenAI API types it: the request's fault (4xx) or ours. */
static void job_fail(srv_job *j, int status, const char *code, const char *msg) {
    j->failed = true;
    srv_error_set(&j->err, status, status >= 500 ? "server_error" : "invalid_request_error", code, NULL, "%s", msg);
    j->state = SRV_JOB_DONE;
    j->t_end = srv_now();
    pthread_cond_broadcast(&j->cv);
}

/* With s->mu held: append a job to the queue. */
static void enqueue(srv_sched *s, srv_job *job) {
    job->refs++;
    job->state = SRV_JOB_QUEUED;
    if (s->q_tail) s->q_tail->next = job;
    else s->q_head = job;
    s->q_tail = job;
    s->n_queued++;
}

int srv_sched_submit(srv_sched *s, srv_job *const *jobs, int n) {
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->stopping) {
        rc = 2;
    } else if (n > s->cap_runs) {
        rc = 3;
    } else if (s->n_queued + s->n_runs + n > s->cap_runs) {
        rc = 1;
    } else {
        /* Under one lock hold: the scheduler hands them to the engine
         * together, in order, so choices sharing a prompt compute it once. */
        for (int i = 0; i < n; i++) enqueue(s, jobs[i]);
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

/* ---------------------------------------------------------------- runs */

/* With s->mu held: hand the job what the run may release (everything when
 * final). False when memory ran out: the job has failed. */
static bool run_publish(run *r, bool final) {
    srv_job *j = r->job;
    size_t rel = srv_textout_releasable(&r->out, final);
    if (rel > r->out.released) {
        if (!srv_buf_append(&j->text, r->out.raw.p + r->out.released, rel - r->out.released)) {
            job_fail(j, 500, NULL, "out of memory while generating");
            return false;
        }
        r->out.released = rel;
    }
    if (r->n_lp > j->n_lp) {
        if (j->cap_lp < r->n_lp) {
            srv_token_lp *p = realloc(j->lp, r->cap_lp * sizeof *p);
            if (!p) {
                job_fail(j, 500, NULL, "out of memory while generating");
                return false;
            }
            j->lp = p;
            j->cap_lp = r->cap_lp;
        }
        memcpy(j->lp + j->n_lp, r->lp + j->n_lp, (r->n_lp - j->n_lp) * sizeof *r->lp);
        j->n_lp = r->n_lp;
    }
    j->n_gen = r->n_gen;
    pthread_cond_broadcast(&j->cv);
    return true;
}

/* With s->mu held: the run's job is over (finish set, or failed/cancelled);
 * the engine forgets the sequence (its blocks released at once). */
static void run_end(srv_sched *s, int idx) {
    run *r = &s->runs[idx];
    srv_job *j = r->job;
    double now = srv_now();
    if (!j->failed && !j->cancelled) run_publish(r, true);
    j->state = SRV_JOB_DONE;
    j->t_end = now;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_lock(&s->metrics->mu);
    if (j->cancelled) s->metrics->cancelled++;
    if (r->n_gen > 1 && now > r->t_first) s->metrics->last_gen_tps = (double)(r->n_gen - 1) / (now - r->t_first);
    pthread_mutex_unlock(&s->metrics->mu);
    s->eng.release(s->eng.self, r->id);
    job_unref(j);
    srv_textout_free(&r->out);
    free(r->lp);
    s->runs[idx] = s->runs[--s->n_runs];
}

/* With s->mu held: hand a queued job to the engine. */
static void run_start(srv_sched *s, srv_job *j) {
    tr_seq_params p = {.prompt = j->prompt, .n_prompt = j->n_prompt, .n_predict = j->max_tokens,
                       .sampling = j->req.sampling, .no_cache = !j->req.cache_prompt,
                       .ignore_eog = j->req.ignore_eos, .grammar = j->req.grammar};
    if (!j->req.has_seed) p.sampling.seed = splitmix(&s->rng);
    /* The request's speculative settings over the server's; none with
     * logprobs (a step that yields several tokens has the logits of the
     * last one only). */
    const tr_spec_params *rs = &j->req.spec, *ds = &s->eng.spec;
    p.spec.kind = (int)rs->kind >= 0 ? rs->kind : ds->kind;
    p.spec.n_max = rs->n_max >= 0 ? rs->n_max : ds->n_max;
    p.spec.n_min = rs->n_min >= 0 ? rs->n_min : ds->n_min;
    if (p.spec.n_max > 0 && p.spec.n_min > p.spec.n_max) p.spec.n_min = p.spec.n_max;
    if (j->req.logprobs) p.spec.kind = TR_SPEC_NONE;
    tr_error err = {{0}};
    int64_t id = s->eng.submit(s->eng.self, &p, &err);
    if (id < 0) {
        job_fail(j, 400, NULL, err.msg);
        job_unref(j);
        return;
    }
    run *r = &s->runs[s->n_runs++];
    memset(r, 0, sizeof *r);
    r->job = j;
    r->id = id;
    srv_textout_init(&r->out, j->req.stop, j->req.n_stop);
    j->state = SRV_JOB_ACTIVE;
}

/* Outside the lock: one sampled token into the run's text. Returns the
 * finish reason, NONE to go on. */
static srv_finish run_token(srv_sched *s, run *r, int32_t tok, const float *logits, bool *oom) {
    srv_job *j = r->job;
    if (r->n_gen == 0) r->t_first = srv_now();
    r->n_gen++;
    if (j->req.logprobs && logits) {
        if (r->n_lp == r->cap_lp) {
            size_t cap = r->cap_lp ? r->cap_lp * 2 : 64;
            srv_token_lp *p = realloc(r->lp, cap * sizeof *p);
            if (!p) return *oom = true, SRV_FINISH_STOP;
            r->lp = p;
            r->cap_lp = cap;
        }
        srv_token_lp *e = &r->lp[r->n_lp++];
        e->id = tok;
        e->off = (uint32_t)r->out.raw.len;
        e->n_top = (uint8_t)j->req.top_logprobs;
        e->logprob = srv_logprobs(logits, s->eng.n_vocab, tok, e->n_top, e->top);
    }
    char piece[256];
    size_t n = s->eng.piece(s->eng.self, tok, piece, sizeof piece);
    if (n > sizeof piece) n = sizeof piece;
    if (!srv_textout_push(&r->out, piece, n)) return *oom = true, SRV_FINISH_STOP;
    if (r->out.stopped) return SRV_FINISH_STOP;
    return SRV_FINISH_NONE;
}

static srv_finish finish_of(tr_finish f) {
    return f == TR_FINISH_EOG ? SRV_FINISH_STOP : SRV_FINISH_LENGTH; /* LENGTH, CONTEXT */
}

/* One engine step, then every run's news. Called without the lock; the
 * runs array only changes on this thread. */
static void step(srv_sched *s) {
    tr_error err = {{0}};
    tr_step_stats st = {0};
    double t0 = srv_now();
    tr_status rc = s->eng.step(s->eng.self, &st, &err);
    double dt = srv_now() - t0;
    pthread_mutex_lock(&s->metrics->mu);
    s->metrics->prompt_tokens += (uint64_t)st.n_prompt_tokens;
    if (st.n_prompt_tokens) s->metrics->prompt_seconds += dt;
    else s->metrics->gen_seconds += dt;
    s->metrics->gen_tokens += (uint64_t)st.n_sampled;
    s->metrics->spec_drafted += (uint64_t)st.n_drafted;
    s->metrics->spec_accepted += (uint64_t)st.n_accepted;
    if (!st.n_prompt_tokens) s->metrics->gen_timed_tokens += (uint64_t)st.n_sampled;
    if (s->eng.kv_stats) s->eng.kv_stats(s->eng.self, &s->metrics->kv);
    pthread_mutex_unlock(&s->metrics->mu);

    /* Tokens into text outside the lock (log-softmax over the vocabulary is
     * not free), then publish under one lock. */
    int n = s->n_runs;
    srv_finish fin[n > 0 ? n : 1];
    tr_seq_info info[n > 0 ? n : 1];
    bool oom[n > 0 ? n : 1];
    for (int i = 0; i < n; i++) {
        run *r = &s->runs[i];
        fin[i] = SRV_FINISH_NONE;
        oom[i] = false;
        int32_t toks[8];
        const float *logits = s->eng.logits(s->eng.self, r->id);
        int32_t k;
        memset(&info[i], 0, sizeof info[i]);
        /* (a finished sequence is forgotten by the take that hands its last token) */
        do {
            k = s->eng.take(s->eng.self, r->id, toks, 8, &info[i]);
            for (int32_t t = 0; t < k && fin[i] == SRV_FINISH_NONE; t++)
                fin[i] = run_token(s, r, toks[t], t == k - 1 ? logits : NULL, &oom[i]);
        } while (k == 8 && fin[i] == SRV_FINISH_NONE); /* a step may yield more (speculation), even its last */
        if (fin[i] == SRV_FINISH_NONE && info[i].finish != TR_FINISH_NONE) {
            fin[i] = finish_of(info[i].finish);
            r->n_gen = info[i].n_generated; /* the end-of-generation token counts, as in llama.cpp's server */
        }
    }
    pthread_mutex_lock(&s->mu);
    for (int i = n - 1; i >= 0; i--) { /* from the end: run_end moves the last run into i */
        run *r = &s->runs[i];
        if (info[i].running) r->started = true;
        r->job->n_cached = info[i].n_cached;
        r->job->n_drafted = info[i].n_drafted;
        r->job->n_accepted = info[i].n_accepted;
        if (info[i].finish == TR_FINISH_ERROR && !oom[i]) {
            char msg[600];
            snprintf(msg, sizeof msg, "generation failed: %s", rc != TR_OK ? err.msg : "engine error");
            job_fail(r->job, 500, NULL, msg);
            run_end(s, i);
        } else if (oom[i]) {
            job_fail(r->job, 500, NULL, "out of memory while generating");
            run_end(s, i);
        } else if (fin[i] != SRV_FINISH_NONE) {
            r->job->finish = fin[i];
            run_end(s, i);
        } else if (!run_publish(r, false)) {
            run_end(s, i);
        }
    }
    gauges_locked(s);
    pthread_mutex_unlock(&s->mu);
}

static void *sched_main(void *arg) {
    srv_sched *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        double now = srv_now();
        /* Hand queued jobs to the engine, oldest first. */
        while (s->q_head && s->n_runs < s->cap_runs) {
            srv_job *j = s->q_head;
            unlink_queued(s, j);
            j->t_start = now;
            run_start(s, j);
        }
        /* Cancelled, out of time, or shut down past the grace period. */
        for (int i = s->n_runs - 1; i >= 0; i--) {
            srv_job *j = s->runs[i].job;
            if (j->cancelled) {
                j->finish = SRV_FINISH_STOP;
                run_end(s, i);
            } else if (s->stopping && now >= s->stop_deadline) {
                job_fail(j, 503, "shutting_down", "the server is shutting down");
                run_end(s, i);
            } else if (j->deadline > 0 && now >= j->deadline) {
                if (s->runs[i].started) {
                    /* As llama.cpp's t_max_predict_ms: stop where it got to. */
                    j->finish = SRV_FINISH_LENGTH;
                } else {
                    job_fail(j, 503, "timeout", "the request timed out waiting for room in the KV cache");
                }
                run_end(s, i);
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
        gauges_locked(s);
        if (s->stopping && s->n_runs == 0) break;
        if (s->n_runs == 0) {
            /* Idle: sleep until a job arrives (or a queued deadline, checked each second). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        step(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

srv_sched *srv_sched_new(const srv_engine *eng, int n_slots, int queue_max, srv_metrics *m,
                         tr_error *err) {
    if (n_slots < 1) {
        if (err) snprintf(err->msg, sizeof err->msg, "--parallel %d: must be at least 1", n_slots);
        return NULL;
    }
    srv_sched *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->eng = *eng;
    s->metrics = m;
    s->n_slots = n_slots;
    s->queue_max = queue_max < 0 ? 0 : queue_max;
    s->cap_runs = n_slots + s->queue_max;
    s->runs = calloc((size_t)s->cap_runs, sizeof *s->runs);
    if (!s->runs) goto oom;
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
    if (s) free(s->runs);
    free(s);
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
    free(s->runs);
    free(s);
}
