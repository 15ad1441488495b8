/* The server's side of scheduling: a bounded queue of jobs and one thread
 * that owns the engine. The thread hands new jobs to the engine (which
 * decides what runs: admission, batches, the KV and prefix cache), calls its
 * step, takes each job's new tokens, turns them into text (stop strings,
 * logprobs) and publishes it to the job, where an HTTP thread picks it up. */
#ifndef SRV_SCHED_H
#define SRV_SCHED_H

#include "metrics.h"
#include "oai.h"
#include "server.h"
#include "textout.h"

#include <pthread.h>

typedef enum srv_job_state { SRV_JOB_QUEUED = 0, SRV_JOB_ACTIVE, SRV_JOB_DONE } srv_job_state;

typedef struct srv_job {
    /* Set before submission, then read-only. */
    srv_request req;           /* owns the stop strings and sampling settings */
    int32_t *prompt;           /* token ids (owned) */
    int32_t n_prompt;
    int32_t max_tokens;        /* -1: until the context is full */
    double t_arrive, deadline; /* srv_now(); deadline 0: none */

    /* Shared: guarded by the scheduler's mutex. */
    pthread_cond_t cv;         /* signalled when anything below changes */
    int refs;                  /* the HTTP side's and the scheduler's */
    srv_job_state state;
    bool cancelled;            /* the client went away */
    int32_t n_cached;          /* prompt tokens the prefix cache gave */
    srv_buf text;              /* generated text released so far (raw bytes) */
    srv_token_lp *lp;          /* per-token log-probabilities, when asked for */
    size_t n_lp, cap_lp;
    int32_t n_gen;             /* tokens generated */
    int32_t n_drafted, n_accepted; /* speculative guesses verified, accepted */
    srv_finish finish;
    bool failed;               /* err says why (a 5xx: shutdown, engine failure) */
    srv_error err;
    double t_start, t_end;     /* got a slot, finished */

    struct srv_job *next;      /* queue link */
} srv_job;

typedef struct srv_sched srv_sched;

srv_sched *srv_sched_new(const srv_engine *eng, int n_slots, int queue_max, srv_metrics *m,
                         tr_error *err);
/* Stop: refuse new jobs, fail queued ones, give active ones `grace` seconds,
 * cancel the rest, join the thread. Jobs stay valid (HTTP threads may still
 * hold them) until srv_sched_free, which must come after every HTTP thread
 * is done. */
void srv_sched_stop(srv_sched *s, double grace);
void srv_sched_free(srv_sched *s);

/* A new job with refs = 1 (the caller's). Takes over req and prompt. */
srv_job *srv_job_new(srv_request *req, int32_t *prompt, int32_t n_prompt, double deadline);
/* Queue a request's n jobs (its choices), all or none: the scheduler takes
 * its own reference to each. 0: queued; 1: they do not all fit in the queue
 * now (429); 2: shutting down (503); 3: n is more than the server ever holds
 * at once (--parallel + --queue), so waiting would not help. */
int srv_sched_submit(srv_sched *s, srv_job *const *jobs, int n);
/* The client went away: drop the job from the queue or stop its generation. */
void srv_sched_cancel(srv_sched *s, srv_job *job);
/* Drop the caller's reference. */
void srv_sched_release(srv_sched *s, srv_job *job);

/* The mutex guarding every job's shared fields (wait on job->cv with it). */
pthread_mutex_t *srv_sched_mutex(srv_sched *s);

#endif
