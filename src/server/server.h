/* trinity serve: an OpenAI-compatible HTTP server.
 *
 *   HTTP threads (http.c, one per connection)          scheduler thread
 *   ------------------------------------------------    ----------------
 *   parse + check the request (oai.c), tokenize   ──▶   queue (bounded: 429 when full)
 *   stream the job's text as SSE / wait for it    ◀──   the engine's step API: submit jobs,
 *   client gone? cancel the job                          step, take tokens, text, publish
 *
 * The scheduler alone touches the engine's context; HTTP threads only read
 * the model (tokenizer, chat template) and the jobs' published output, under
 * the scheduler's mutex. The engine (include/trinity.h's tr_engine: admission,
 * batching, the KV cache and prefix cache, sampling) is reached through
 * srv_engine so the server can be tested without weights. */
#ifndef SRV_SERVER_H
#define SRV_SERVER_H

#include "trinity.h"

#include <stddef.h>

typedef struct srv_engine {
    void *self;
    int32_t n_vocab;
    int32_t n_ctx;   /* most positions one sequence holds (prompt and answer) */
    bool streaming;  /* sequences slide past n_ctx (--kv-window): no prompt limit, no context shift */
    tr_sampler_params defaults; /* sampling for fields a request leaves out */
    tr_spec_params spec;        /* speculative decoding for requests that do not say (serve --spec) */
    /* Scheduler thread only: the engine's step API (include/trinity.h). */
    int64_t (*submit)(void *self, const tr_seq_params *p, tr_error *err);
    tr_status (*step)(void *self, tr_step_stats *st, tr_error *err);
    int32_t (*take)(void *self, int64_t id, int32_t *tokens, int32_t cap, tr_seq_info *info);
    const float *(*logits)(void *self, int64_t id);
    void (*release)(void *self, int64_t id); /* cancel and forget */
    void (*kv_stats)(void *self, tr_kv_stats *out); /* NULL: no KV figures in /metrics */
    /* Any thread: these only read the model. */
    tr_status (*tokenize)(void *self, const char *text, size_t len, int32_t **ids, size_t *n,
                          tr_error *err);
    /* The prompt of a conversation: the chat template rendered with the
     * request's messages and tools as JSON (msgs: the same turns as text). */
    tr_status (*chat_format)(void *self, const tr_chat_msg *msgs, size_t n, const char *messages_json,
                             const char *tools_json, char **out, tr_error *err);
    size_t (*piece)(void *self, int32_t id, char *buf, size_t cap);
    int tool_format;  /* srv_tool_format (tools.h) the chat template writes tool calls in; 0: Hermes */
} srv_engine;

typedef struct srv_config {
    const char *host;        /* address to bind, "127.0.0.1" */
    int port;                /* 0: any free port (see srv_port) */
    const char *model_id;    /* the name /v1/models lists and requests must use */
    const char *api_key;     /* NULL or "": no authentication */
    int n_slots;             /* requests generated at once (--parallel) */
    int queue_max;           /* requests waiting for room before 429 */
    size_t max_body;         /* request body bytes (413 above) */
    size_t max_header;       /* request line + header bytes */
    int max_connections;     /* open connections; more are refused */
    int idle_timeout;        /* seconds a connection may sit idle */
    double header_timeout;   /* seconds from a request's first byte to the end of its head */
    double request_timeout;  /* seconds from arrival to the end of a generation; 0: none */
    double shutdown_grace;   /* seconds in-flight generations get to finish on shutdown */
    bool log_requests;       /* one line per request on stderr */
} srv_config;

srv_config srv_default_config(void);

typedef struct srv_server srv_server;

/* Listen. Until srv_set_engine, /health answers 503 and generation 503. */
tr_status srv_start(const srv_config *cfg, srv_server **out, tr_error *err);
int srv_port(const srv_server *s);
/* The model is ready: start the scheduler. */
tr_status srv_set_engine(srv_server *s, const srv_engine *eng, tr_error *err);
/* Graceful stop: refuse new connections and requests, give in-flight
 * generations shutdown_grace seconds, cancel the rest, close everything. */
void srv_stop(srv_server *s);
void srv_free(srv_server *s);

#endif
