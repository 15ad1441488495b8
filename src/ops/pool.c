/* A pool of persistent worker threads. tr_pool_run hands one function to all
 * of them plus the caller (who does share 0), and returns when every share is
 * done. A forward pass issues hundreds of these per token, so waking must be
 * cheap: workers and the caller spin briefly on an atomic generation counter
 * (the next job usually follows within microseconds) and only then sleep on a
 * condition variable, so an idle pool costs no CPU. */
#include "ops.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Polling before sleeping lasts SPIN_NS, timed by the clock rather than
 * counted in PAUSEs: a PAUSE takes 10 to 140 cycles depending on the CPU
 * (Intel raised it with Skylake; AMD's differ again), so 8192 of them were
 * 79 us on a Sapphire Rapids and a few on a short-PAUSE core. Shorter
 * polling lets a worker fall asleep between the jobs of a token and the next
 * job wait for its wake-up: on the Sapphire Rapids, 1024 PAUSEs (~10 us) cost
 * 2-4 % of generation and 256 (~2.5 us) 8-9 % (Gemma 3 270M, TinyLlama
 * Q4_0; `trinity bench -p 0 -n 64 -t 2`); 32768 (~320 us) gained nothing
 * over 8192 (docs/BENCHMARKS.md, session 22). */
enum { SPIN_NS = 100000 };

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One round of a polling loop: a PAUSE, and false (from then on) once
 * SPIN_NS have passed since its 64th round. The clock is read every 64
 * rounds, and not at all by the short waits most are (where the clock is
 * not read in user space, each read is a system call). */
typedef struct spin {
    unsigned n;
    bool over;
    uint64_t end; /* 0: not yet timed */
} spin;

static inline bool spin_more(spin *s) {
    if (s->over) return false;
    if ((++s->n & 63) == 0) {
        const uint64_t t = mono_ns();
        if (!s->end) s->end = t + SPIN_NS;
        else if (t >= s->end) return !(s->over = true);
    }
    cpu_relax();
    return true;
}

typedef struct worker {
    struct tr_pool *pool;
    int ith;
    pthread_t thread;
    clockid_t clock; /* its CPU-time clock (tr_pool_cpu_s) */
    bool has_clock;
} worker;

struct tr_pool {
    int n; /* threads including the caller */
    worker *workers;
    void (*fn)(void *arg, int ith, int nth);
    void *arg;
    bool shared; /* the current job was started by tr_pool_run_shared */
    /* (generation << 1) | open: the generation is bumped once per job and
     * workers wait for a change; open while workers may join the job. One
     * word, so a worker that joins learns which job it joined. */
    atomic_uint state;
    atomic_int active;  /* workers inside a job (joined, not yet left) */
    atomic_int pending; /* tr_pool_run: workers not yet done with the job */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    void *scratch; /* reused by the kernels between jobs (see tr_pool_scratch) */
    size_t scratch_size;
};

/* A worker joins a job by counting itself active, then looking whether the
 * job is still open; the caller closes a job, then waits until no worker is
 * active. Both sides are sequentially consistent, so either the worker sees
 * the job closed (and leaves) or the caller sees the worker (and waits for
 * it). While a worker is active the job's fields cannot change. */
static void *worker_main(void *p_) {
    worker *w = p_;
    struct tr_pool *p = w->pool;
    unsigned seen = 0; /* generation of the last job this worker ran or skipped */
    for (;;) {
        /* Waiting for a new generation or the stop: a worker that joined
         * the generation tr_pool_free's bump made (on its way in when the
         * stop came) must not wait for another. The stop is set under the
         * mutex before the broadcast, so the check under it cannot miss. */
        unsigned st = atomic_load_explicit(&p->state, memory_order_acquire);
        spin sp = {0};
        while (st >> 1 == seen && !atomic_load(&p->stop) && spin_more(&sp))
            st = atomic_load_explicit(&p->state, memory_order_acquire);
        if (st >> 1 == seen) {
            pthread_mutex_lock(&p->mu);
            while ((st = atomic_load(&p->state)) >> 1 == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->work_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        atomic_fetch_add(&p->active, 1);
        st = atomic_load(&p->state);
        seen = st >> 1;
        if (st & 1) {
            const bool shared = p->shared;
            p->fn(p->arg, w->ith, p->n);
            if (!shared && atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
                /* Taking the lock orders this signal after the caller's check. */
                pthread_mutex_lock(&p->mu);
                pthread_cond_signal(&p->done_cv);
                pthread_mutex_unlock(&p->mu);
            }
        }
        atomic_fetch_sub_explicit(&p->active, 1, memory_order_release);
    }
}

tr_pool *tr_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    struct tr_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    atomic_init(&p->state, 0);
    atomic_init(&p->active, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->stop, false);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads, sizeof *p->workers);
        if (!p->workers) {
            tr_pool_free(p);
            return NULL;
        }
        for (int i = 1; i < n_threads; i++) {
            p->workers[i].pool = p;
            p->workers[i].ith = i;
            if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i])) {
                p->n = i; /* run with the threads we got */
                break;
            }
            p->workers[i].has_clock = !pthread_getcpuclockid(p->workers[i].thread, &p->workers[i].clock);
        }
    }
    return p;
}

void tr_pool_free(tr_pool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, true);
        atomic_fetch_add(&p->state, 2);
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->n; i++) pthread_join(p->workers[i].thread, NULL);
        free(p->workers);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->scratch);
    free(p);
}

int tr_pool_size(const tr_pool *p) { return p ? p->n : 1; }

double tr_pool_cpu_s(const tr_pool *p) {
    double s = 0;
    for (int i = 1; p && p->workers && i < p->n; i++) {
        struct timespec ts;
        if (p->workers[i].has_clock && !clock_gettime(p->workers[i].clock, &ts))
            s += (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    }
    return s;
}

/* Start a job: its fields, then the new generation, open. */
static void start(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg, bool shared) {
    p->fn = fn;
    p->arg = arg;
    p->shared = shared;
    atomic_store_explicit(&p->pending, shared ? 0 : p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    unsigned gen = (atomic_load_explicit(&p->state, memory_order_relaxed) >> 1) + 1;
    atomic_store(&p->state, gen << 1 | 1u);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

/* Close the job and wait for the workers inside it to leave. */
static void finish(tr_pool *p) {
    atomic_store(&p->state, atomic_load_explicit(&p->state, memory_order_relaxed) & ~1u);
    spin sp = {0};
    while (atomic_load(&p->active))
        if (!spin_more(&sp)) sched_yield(); /* a worker preempted mid-share */
}

void tr_pool_run(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg) {
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    start(p, fn, arg, false);
    fn(arg, 0, p->n);
    spin sp = {0};
    while (atomic_load_explicit(&p->pending, memory_order_acquire) && spin_more(&sp)) {}
    if (atomic_load_explicit(&p->pending, memory_order_acquire)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending)) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    finish(p);
}

void tr_pool_run_shared(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg) {
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    start(p, fn, arg, true);
    fn(arg, 0, p->n);
    finish(p);
}

void *tr_pool_scratch(tr_pool *p, size_t bytes) {
    if (!p) return NULL;
    if (bytes > p->scratch_size) {
        /* Grow geometrically: the first few calls of a forward pass settle the size. */
        size_t want = bytes + bytes / 2 + 4096;
        void *b = NULL;
        if (posix_memalign(&b, 64, want)) return NULL;
        free(p->scratch);
        p->scratch = b;
        p->scratch_size = want;
    }
    return p->scratch;
}
