/* A pool of persistent worker threads. tr_pool_run hands one function to all
 * of them plus the caller (who does share 0), and returns when every share is
 * done. A forward pass issues hundreds of these per token, so waking must be
 * cheap: workers and the caller spin briefly on an atomic generation counter
 * (the next job usually follows within microseconds) and only then sleep on a
 * condition variable, so an idle pool costs no CPU. */
#include "ops.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* About 50-200 microseconds of polling before sleeping. */
enum { SPIN_ITERS = 1 << 13 };

typedef struct worker {
    struct tr_pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct tr_pool {
    int n; /* threads including the caller */
    worker *workers;
    void (*fn)(void *arg, int ith, int nth);
    void *arg;
    atomic_uint generation; /* bumped once per job; workers wait for a change */
    atomic_int pending;     /* workers not yet done with the current job */
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    void *scratch; /* reused by the kernels between jobs (see tr_pool_scratch) */
    size_t scratch_size;
};

static void *worker_main(void *p_) {
    worker *w = p_;
    struct tr_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        for (int i = 0; i < SPIN_ITERS && g == seen; i++) {
            cpu_relax();
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->generation)) == seen) pthread_cond_wait(&p->work_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        seen = g;
        if (atomic_load(&p->stop)) return NULL;
        p->fn(p->arg, w->ith, p->n);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            /* Taking the lock orders this signal after the caller's check. */
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

tr_pool *tr_pool_new(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 256) n_threads = 256;
    struct tr_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    atomic_init(&p->generation, 0);
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
        }
    }
    return p;
}

void tr_pool_free(tr_pool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, true);
        atomic_fetch_add(&p->generation, 1);
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

void tr_pool_run(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg) {
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);

    fn(arg, 0, p->n);

    for (int i = 0; i < SPIN_ITERS && atomic_load_explicit(&p->pending, memory_order_acquire); i++)
        cpu_relax();
    if (atomic_load_explicit(&p->pending, memory_order_acquire)) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->pending)) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
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
