/* trinity serve: an OpenAI-compatible HTTP server.
 *
 *   HTTP threads (libmicrohttpd, one per connection)    scheduler thread
 *   ------------------------------------------------    ----------------
 *   parse + check the request (oai.c), tokenize   ──▶   queue (bounded: 429 when full)
 *   stream the job's text as SSE / wait for it    ◀──   slots: each step one batch of every
 *   client gone? cancel the job                          active slot's tokens, sample, publish
 *
 * The scheduler alone touches the engine's context; HTTP threads only read
 * the model (tokenizer, chat template) and the jobs' published output, under
 * the scheduler's mutex. The engine is reached through srv_engine so the
 * scheduler can be tested without weights and so a different backend (a
 * batched forward, a speculative decoder) can slot in. */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include "trinity.h"

#include <stddef.h>

typedef struct srv_engine {
    void *self;
    int32_t n_vocab;
    int32_t n_ctx;   /* positions per sequence */
    int32_t n_batch; /* most tokens one decode takes */
    tr_sampler_params defaults; /* sampling for fields a request leaves out */
    /* Scheduler thread only. */
    tr_status (*decode)(void *self, const tr_batch *b, tr_error *err);
    const float *(*logits)(void *self, int32_t i);
    void (*seq_clear)(void *self, int32_t seq);
    void *(*sampler_new)(void *self, const tr_sampler_params *p);
    int32_t (*sample)(void *self, void *sampler, const float *logits);
    void (*accept)(void *self, void *sampler, int32_t id);
    void (*sampler_free)(void *self, void *sampler);
    /* Any thread: these only read the model. */
    tr_status (*tokenize)(void *self, const char *text, size_t len, int32_t **ids, size_t *n,
                          tr_error *err);
    tr_status (*chat_format)(void *self, const tr_chat_msg *msgs, size_t n, char **out, tr_error *err);
    size_t (*piece)(void *self, int32_t id, char *buf, size_t cap);
    bool (*is_eog)(void *self, int32_t id);
} srv_engine;

typedef struct srv_config {
    const char *host;        /* address to bind, "127.0.0.1" */
    int port;                /* 0: any free port (see srv_port) */
    const char *model_id;    /* the name /v1/models lists and requests must use */
    const char *api_key;     /* NULL or "": no authentication */
    int n_slots;             /* requests generated at once (--parallel) */
    int queue_max;           /* requests waiting for a slot before 429 */
    size_t max_body;         /* request body bytes (413 above) */
    size_t max_header;       /* request line + header bytes */
    int max_connections;     /* open connections; more are refused */
    int idle_timeout;        /* seconds a connection may sit idle */
    double request_timeout;  /* seconds from arrival to the end of a generation; 0: none */
    double shutdown_grace;   /* seconds in-flight generations get to finish on shutdown */
    bool log_requests;       /* one line per request on stderr */
} srv_config;

srv_config srv_default_config(void);

typedef struct srv_server srv_server;

/* Listen. Until srv_set_engine, /health answers 503 and generation 503. */
tr_status srv_start(const srv_config *cfg, srv_server **out, tr_error *err);
int srv_port(const srv_server *s);
/* The model is ready: start the scheduler (n_slots sequences 0..n_slots-1). */
tr_status srv_set_engine(srv_server *s, const srv_engine *eng, tr_error *err);
/* Graceful stop: refuse new connections and requests, give in-flight
 * generations shutdown_grace seconds, cancel the rest, close everything. */
void srv_stop(srv_server *s);
void srv_free(srv_server *s);

#endif
