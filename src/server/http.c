/* The HTTP side of trinity serve, on libmicrohttpd: routing, limits,
 * authentication, and turning jobs into JSON responses and SSE streams.
 *
 * MHD runs one thread per connection, so a handler may block waiting for its
 * job (and a stream callback for the next token) without holding up anyone
 * else; a slow reader only slows its own thread. While it waits, the thread
 * checks its socket, so a client that hangs up cancels its generation within
 * a fraction of a second, even in the middle of a long prompt. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "core/util.h"
#include "sched.h"
#include "server.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct srv_server {
    srv_config cfg;
    char *host, *model_id, *api_key; /* cfg's strings, owned */
    struct MHD_Daemon *d;
    int port;
    int64_t created;
    srv_metrics metrics;
    pthread_mutex_t mu; /* guards ready, stopping (and publishes eng/sched with ready) */
    bool ready, stopping;
    int n_busy;          /* generation requests not yet completed (last byte sent) */
    pthread_cond_t idle; /* signalled when n_busy drops */
    srv_engine eng;
    srv_sched *sched;
    uint64_t next_id;
};

srv_config srv_default_config(void) {
    return (srv_config){
        .host = "127.0.0.1",
        .port = 8080,
        .model_id = "model",
        .api_key = NULL,
        .n_slots = 1,
        .queue_max = 64,
        .max_body = 8u << 20,
        .max_header = 16u << 10,
        .max_connections = 256,
        .idle_timeout = 30,
        .request_timeout = 600,
        .shutdown_grace = 5,
        .log_requests = true,
    };
}

int srv_port(const srv_server *s) { return s->port; }

/* One HTTP request, from its headers to its last byte (MHD's con_cls). */
typedef struct conn_req {
    srv_server *s;
    srv_endpoint ep;
    char method[16];
    char path[96];
    double t0;
    srv_buf body;
    bool body_too_big;
    bool busy; /* counted in n_busy */
    int status;
} conn_req;

/* -------------------------------------------------------------- replies */

static void common_headers(struct MHD_Response *resp) {
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", "*");
}

/* Queue `data` (malloc'ed; taken over) as the response. */
static enum MHD_Result reply(struct MHD_Connection *c, conn_req *r, int status, const char *ctype,
                             char *data, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(data);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    common_headers(resp);
    if (status == 429) MHD_add_response_header(resp, "Retry-After", "1");
    if (status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (status == 405)
        MHD_add_response_header(resp, "Allow",
                                r->ep == SRV_EP_CHAT || r->ep == SRV_EP_COMPLETIONS ? "POST, OPTIONS"
                                                                                     : "GET, OPTIONS");
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_json(struct MHD_Connection *c, conn_req *r, int status, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) return MHD_NO;
    return reply(c, r, status, "application/json", s, strlen(s));
}

static enum MHD_Result reply_error(struct MHD_Connection *c, conn_req *r, const srv_error *e) {
    char *s = srv_error_json(e);
    if (!s) return MHD_NO;
    return reply(c, r, e->status, "application/json", s, strlen(s));
}

static enum MHD_Result fail(struct MHD_Connection *c, conn_req *r, int status, const char *type,
                            const char *code, const char *param, const char *msg) {
    srv_error e;
    srv_error_set(&e, status, type, code, param, "%s", msg);
    return reply_error(c, r, &e);
}

/* ------------------------------------------------------------- helpers */

/* Has the client hung up? (EOF or an error on its socket; bytes of a
 * pipelined next request do not count.) */
static bool client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return true;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLERR | POLLHUP | POLLRDHUP | POLLNVAL)) return true;
    if (p.revents & POLLIN) {
        char ch;
        ssize_t n = recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return false;
}

static void deadline_in(struct timespec *ts, long ms) {
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_nsec += (ms % 1000) * 1000000L;
    ts->tv_sec += ms / 1000 + ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

static void make_id(srv_server *s, srv_kind kind, char *out, size_t cap) {
    pthread_mutex_lock(&s->mu);
    uint64_t n = ++s->next_id;
    pthread_mutex_unlock(&s->mu);
    snprintf(out, cap, "%s-%llx%06llx", kind == SRV_KIND_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)s->created, (unsigned long long)n);
}

static size_t piece_cb(void *ctx, int32_t id, char *buf, size_t cap) {
    const srv_engine *e = ctx;
    return e->piece(e->self, id, buf, cap);
}

/* Constant-time comparison: the key is a secret. */
static bool same_secret(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

static bool authorized(srv_server *s, struct MHD_Connection *c) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    return same_secret(h, s->api_key);
}

/* ----------------------------------------------------------- streaming */

typedef struct stream {
    srv_server *s;
    struct MHD_Connection *conn;
    srv_job *job;
    srv_kind kind;
    char id[48];
    int64_t created;
    bool include_usage;
    bool sent_role, finished, gone;
    size_t text_off, lp_off;
    srv_buf out;   /* SSE bytes not yet handed to MHD */
    srv_buf text;  /* this chunk's text, copied out of the job */
    srv_token_lp *lp;
    size_t n_lp, cap_lp;
} stream;

static srv_result result_base(stream *st) {
    return (srv_result){.kind = st->kind, .id = st->id, .created = st->created,
                        .model = st->s->model_id, .prompt_tokens = -1,
                        .piece = piece_cb, .piece_ctx = &st->s->eng};
}

/* Wait for news from the job and turn it into SSE events. False: the client
 * is gone (the job is cancelled) or memory ran out. */
static bool stream_fill(stream *st) {
    srv_result r = result_base(st);
    if (st->kind == SRV_KIND_CHAT && !st->sent_role) {
        /* OpenAI's first chunk names the role; it also gets headers out now. */
        st->sent_role = true;
        r.first = true;
        json_t *o = srv_chunk_json(&r);
        bool ok = srv_sse_event(&st->out, o);
        json_decref(o);
        return ok;
    }
    srv_job *j = st->job;
    pthread_mutex_t *mu = srv_sched_mutex(st->s->sched);
    pthread_mutex_lock(mu);
    while (j->text.len == st->text_off && j->state != SRV_JOB_DONE) {
        struct timespec ts;
        deadline_in(&ts, 100);
        if (pthread_cond_timedwait(&j->cv, mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(mu);
            if (client_gone(st->conn)) {
                st->gone = true;
                srv_sched_cancel(st->s->sched, j);
                return false;
            }
            pthread_mutex_lock(mu);
        }
    }
    bool done = j->state == SRV_JOB_DONE;
    st->text.len = 0;
    bool ok = srv_buf_append(&st->text, j->text.p ? j->text.p + st->text_off : "", j->text.len - st->text_off);
    st->text_off = j->text.len;
    st->n_lp = 0;
    size_t lp_end = st->lp_off;
    while (lp_end < j->n_lp && j->lp[lp_end].off < j->text.len) lp_end++;
    if (ok && lp_end > st->lp_off) {
        size_t need = lp_end - st->lp_off;
        if (need > st->cap_lp) {
            srv_token_lp *p = realloc(st->lp, need * sizeof *p);
            if (p) st->lp = p, st->cap_lp = need;
            else ok = false;
        }
        if (ok) {
            memcpy(st->lp, j->lp + st->lp_off, need * sizeof *st->lp);
            st->n_lp = need;
            st->lp_off = lp_end;
        }
    }
    bool failed = j->failed;
    srv_error err = j->err;
    srv_finish finish = j->finish;
    int64_t n_prompt = j->n_prompt, n_gen = j->n_gen, n_cached = j->n_cached;
    pthread_mutex_unlock(mu);
    if (!ok) return false;

    bool want_lp = st->job->req.logprobs;
    if (st->text.len || st->n_lp) {
        r.text = st->text.p;
        r.text_len = st->text.len;
        r.lp = want_lp ? st->lp : NULL;
        r.n_lp = st->n_lp;
        json_t *o = srv_chunk_json(&r);
        ok &= srv_sse_event(&st->out, o);
        json_decref(o);
    }
    if (done) {
        if (failed) {
            /* Mid-stream errors travel as an event with an "error" member, which
             * the OpenAI clients raise as an exception. */
            char *e = srv_error_json(&err);
            ok &= e && srv_buf_puts(&st->out, "data: ") && srv_buf_puts(&st->out, e) &&
                  srv_buf_puts(&st->out, "\n\n");
            free(e);
        } else {
            r = result_base(st);
            r.finish = finish;
            r.lp = want_lp ? st->lp : NULL; /* an empty list, as OpenAI sends */
            r.n_lp = 0;
            json_t *o = srv_chunk_json(&r);
            ok &= srv_sse_event(&st->out, o);
            json_decref(o);
            if (st->include_usage) {
                r.prompt_tokens = n_prompt;
                r.completion_tokens = n_gen;
                r.cached_tokens = n_cached;
                o = srv_usage_chunk_json(&r);
                ok &= srv_sse_event(&st->out, o);
                json_decref(o);
            }
        }
        ok &= srv_sse_done(&st->out);
        st->finished = true;
    }
    return ok;
}

static ssize_t stream_cb(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *st = cls;
    while (st->out.len == 0) {
        if (st->finished) {
            /* Back to the idle timeout for the next request on this connection. */
            MHD_set_connection_option(st->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                                      (unsigned)st->s->cfg.idle_timeout);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (!stream_fill(st)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = st->out.len < max ? st->out.len : max;
    memcpy(buf, st->out.p, n);
    srv_buf_consume(&st->out, n);
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream *st = cls;
    /* Ended early (the client left, a write failed): stop generating for it. */
    srv_sched_cancel(st->s->sched, st->job);
    srv_sched_release(st->s->sched, st->job);
    srv_buf_free(&st->out);
    srv_buf_free(&st->text);
    free(st->lp);
    free(st);
}

/* ---------------------------------------------------------- generation */

static enum MHD_Result handle_generate(struct MHD_Connection *c, conn_req *r, srv_kind kind) {
    srv_server *s = r->s;
    const srv_engine *eng = &s->eng;
    srv_request req;
    srv_error e;
    if (!srv_request_parse(kind, r->body.p ? r->body.p : "", r->body.len, s->model_id, eng->n_vocab,
                           &eng->defaults, &req, &e))
        return reply_error(c, r, &e);

    /* The prompt, as the model's tokens. */
    int32_t *ids = NULL;
    size_t n_ids = 0;
    tr_error terr = {{0}};
    const char *param = kind == SRV_KIND_CHAT ? "messages" : "prompt";
    if (kind == SRV_KIND_CHAT) {
        char *text = NULL;
        if (eng->chat_format(eng->self, req.msgs, req.n_msgs, &text, &terr) != TR_OK) {
            srv_request_free(&req);
            return fail(c, r, 400, "invalid_request_error", NULL, param, terr.msg);
        }
        tr_status st = eng->tokenize(eng->self, text, strlen(text), &ids, &n_ids, &terr);
        free(text);
        if (st != TR_OK) {
            srv_request_free(&req);
            return fail(c, r, 400, "invalid_request_error", NULL, param, terr.msg);
        }
    } else if (req.prompt) {
        if (eng->tokenize(eng->self, req.prompt, strlen(req.prompt), &ids, &n_ids, &terr) != TR_OK) {
            srv_request_free(&req);
            return fail(c, r, 400, "invalid_request_error", NULL, param, terr.msg);
        }
    } else {
        ids = req.prompt_ids;
        n_ids = req.n_prompt_ids;
        req.prompt_ids = NULL;
        req.n_prompt_ids = 0;
    }
    if (n_ids == 0 || n_ids >= (size_t)eng->n_ctx) {
        char msg[256];
        if (n_ids == 0)
            snprintf(msg, sizeof msg, "the prompt is empty: it gave no tokens");
        else
            snprintf(msg, sizeof msg,
                     "the prompt is %zu tokens long, but the context holds %d tokens (prompt and answer together): "
                     "shorten the prompt or start the server with a larger -c",
                     n_ids, (int)eng->n_ctx);
        free(ids);
        srv_request_free(&req);
        return fail(c, r, 400, "invalid_request_error", n_ids ? "context_length_exceeded" : NULL, param, msg);
    }

    bool stream_mode = req.stream, include_usage = req.include_usage;
    double deadline = s->cfg.request_timeout > 0 ? r->t0 + s->cfg.request_timeout : 0;
    srv_job *job = srv_job_new(&req, ids, (int32_t)n_ids, deadline);
    if (!job) {
        free(ids);
        srv_request_free(&req);
        return fail(c, r, 500, "server_error", NULL, NULL, "out of memory");
    }
    int rc = srv_sched_submit(s->sched, &job, 1);
    if (rc != 0) {
        srv_sched_release(s->sched, job);
        if (rc == 1)
            return fail(c, r, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                        "the server is busy: every slot is generating and the queue is full; retry later");
        return fail(c, r, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    }
    pthread_mutex_lock(&s->mu);
    s->n_busy++;
    r->busy = true;
    pthread_mutex_unlock(&s->mu);
    /* Generation may take longer than the idle timeout; the request timeout
     * bounds it instead. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0);

    if (stream_mode) {
        stream *st = calloc(1, sizeof *st);
        if (!st) {
            srv_sched_cancel(s->sched, job);
            srv_sched_release(s->sched, job);
            return MHD_NO;
        }
        st->s = s;
        st->conn = c;
        st->job = job;
        st->kind = kind;
        st->created = srv_unix_time();
        st->include_usage = include_usage;
        make_id(s, kind, st->id, sizeof st->id);
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_cb, st, stream_free);
        if (!resp) {
            stream_free(st);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        common_headers(resp);
        r->status = 200;
        enum MHD_Result ret = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return ret;
    }

    /* Not streamed: wait here (this is the connection's own thread). */
    pthread_mutex_t *mu = srv_sched_mutex(s->sched);
    pthread_mutex_lock(mu);
    while (job->state != SRV_JOB_DONE) {
        struct timespec ts;
        deadline_in(&ts, 100);
        if (pthread_cond_timedwait(&job->cv, mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(mu);
            if (client_gone(c)) {
                srv_sched_cancel(s->sched, job);
                srv_sched_release(s->sched, job);
                r->status = 499; /* nginx's "client closed request" */
                return MHD_NO;
            }
            pthread_mutex_lock(mu);
        }
    }
    pthread_mutex_unlock(mu);
    /* DONE is final: the job's fields no longer change. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg.idle_timeout);
    enum MHD_Result ret;
    if (job->failed) {
        ret = reply_error(c, r, &job->err);
    } else {
        char id[48];
        make_id(s, kind, id, sizeof id);
        srv_result res = {.kind = kind, .id = id, .created = srv_unix_time(), .model = s->model_id,
                          .text = job->text.p ? job->text.p : "", .text_len = job->text.len,
                          .lp = NULL, .n_lp = 0, .finish = job->finish,
                          .prompt_tokens = job->n_prompt, .completion_tokens = job->n_gen, .cached_tokens = job->n_cached,
                          .piece = piece_cb, .piece_ctx = &s->eng};
        if (job->req.logprobs) {
            size_t n = 0;
            while (n < job->n_lp && job->lp[n].off < job->text.len) n++;
            static const srv_token_lp none[1];
            res.lp = job->lp ? job->lp : none; /* logprobs asked for: a list, even empty */
            res.n_lp = n;
        }
        ret = reply_json(c, r, 200, srv_response_json(&res, 1));
    }
    srv_sched_release(s->sched, job);
    return ret;
}

/* -------------------------------------------------------------- routing */

typedef struct route {
    const char *path;
    srv_endpoint ep;
    bool post;
} route;

static const route routes[] = {
    {"/v1/chat/completions", SRV_EP_CHAT, true},
    {"/chat/completions", SRV_EP_CHAT, true},
    {"/v1/completions", SRV_EP_COMPLETIONS, true},
    {"/completions", SRV_EP_COMPLETIONS, true},
    {"/v1/models", SRV_EP_MODELS, false},
    {"/models", SRV_EP_MODELS, false},
    {"/health", SRV_EP_HEALTH, false},
    {"/v1/health", SRV_EP_HEALTH, false},
    {"/metrics", SRV_EP_METRICS, false},
};

static const route *find_route(const char *url) {
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (!strcmp(url, routes[i].path)) return &routes[i];
    return NULL;
}

static enum MHD_Result handle_models(struct MHD_Connection *c, conn_req *r) {
    srv_server *s = r->s;
    json_t *o = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:{s:i, s:i}}]}", "object", "list", "data",
                          "id", s->model_id, "object", "model", "created", (json_int_t)s->created,
                          "owned_by", "trinity", "meta", "n_ctx", (int)s->eng.n_ctx, "n_vocab",
                          (int)s->eng.n_vocab);
    return reply_json(c, r, 200, o);
}

/* First call for a request: only the headers are known. Anything that can be
 * refused without the body is refused here. */
static enum MHD_Result first_call(struct MHD_Connection *c, conn_req *r, const char *method) {
    srv_server *s = r->s;
    const route *rt = find_route(r->path);
    r->ep = rt ? rt->ep : SRV_EP_OTHER;
    const union MHD_ConnectionInfo *hi = MHD_get_connection_info(c, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (hi && hi->header_size > s->cfg.max_header) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request headers are %zu bytes, over the limit of %zu (--max-header)",
                 hi->header_size, s->cfg.max_header);
        return fail(c, r, 431, "invalid_request_error", "headers_too_large", NULL, msg);
    }
    if (!rt) {
        char msg[160];
        snprintf(msg, sizeof msg, "no such endpoint: %s %.96s", method, r->path);
        return fail(c, r, 404, "invalid_request_error", "not_found", NULL, msg);
    }
    if (!strcmp(method, "OPTIONS")) { /* CORS preflight from browser-based clients */
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        common_headers(resp);
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", rt->post ? "POST, OPTIONS" : "GET, OPTIONS");
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
        r->status = 204;
        enum MHD_Result ret = MHD_queue_response(c, 204, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    bool method_ok = rt->post ? !strcmp(method, "POST") : (!strcmp(method, "GET") || !strcmp(method, "HEAD"));
    if (!method_ok) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s is not allowed on %s: use %s", method, r->path, rt->post ? "POST" : "GET");
        return fail(c, r, 405, "invalid_request_error", "method_not_allowed", NULL, msg);
    }
    if (rt->ep != SRV_EP_HEALTH && !authorized(s, c))
        return fail(c, r, 401, "invalid_request_error", "invalid_api_key", NULL,
                    "invalid or missing API key: send the header 'Authorization: Bearer <key>'");
    pthread_mutex_lock(&s->mu);
    bool ready = s->ready, stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stopping && rt->ep != SRV_EP_METRICS)
        return fail(c, r, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    if (!ready && rt->ep != SRV_EP_METRICS)
        return fail(c, r, 503, "server_error", "model_loading", NULL, "the model is loading; retry shortly");
    if (rt->post) {
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > s->cfg.max_body) {
                char msg[160];
                snprintf(msg, sizeof msg, "the request body is %s bytes, over the limit of %zu (--max-body)", cl,
                         s->cfg.max_body);
                return fail(c, r, 413, "invalid_request_error", "request_too_large", NULL, msg);
            }
        }
        return MHD_YES; /* the body follows */
    }
    switch (rt->ep) {
    case SRV_EP_HEALTH: {
        char *b = strdup("{\"status\":\"ok\"}");
        return b ? reply(c, r, 200, "application/json", b, strlen(b)) : MHD_NO;
    }
    case SRV_EP_METRICS: {
        srv_buf out = {0};
        if (!srv_metrics_render(&s->metrics, &out)) {
            srv_buf_free(&out);
            return MHD_NO;
        }
        return reply(c, r, 200, "text/plain; version=0.0.4; charset=utf-8", out.p, out.len);
    }
    case SRV_EP_MODELS: return handle_models(c, r);
    default: return MHD_NO;
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    srv_server *s = cls;
    conn_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->s = s;
        r->t0 = srv_now();
        r->status = 500;
        snprintf(r->method, sizeof r->method, "%s", method);
        snprintf(r->path, sizeof r->path, "%s", url);
        *con_cls = r;
        return first_call(c, r, method);
    }
    if (*upload_data_size) {
        if (!r->body_too_big) {
            if (r->body.len + *upload_data_size > s->cfg.max_body) {
                r->body_too_big = true; /* keep reading, then answer 413 */
                srv_buf_free(&r->body);
            } else if (!srv_buf_append(&r->body, upload_data, *upload_data_size)) {
                return MHD_NO;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->body_too_big) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request body is over the limit of %zu bytes (--max-body)", s->cfg.max_body);
        return fail(c, r, 413, "invalid_request_error", "request_too_large", NULL, msg);
    }
    return handle_generate(c, r, r->ep == SRV_EP_CHAT ? SRV_KIND_CHAT : SRV_KIND_COMPLETION);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    srv_server *s = cls;
    conn_req *r = *con_cls;
    if (!r) return;
    double dt = srv_now() - r->t0;
    int status = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->status : (r->status == 200 ? 499 : r->status);
    srv_metrics_request(&s->metrics, r->ep, status, dt);
    if (r->busy) {
        pthread_mutex_lock(&s->mu);
        s->n_busy--;
        pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->mu);
    }
    if (s->cfg.log_requests)
        fprintf(stderr, "trinity serve: %s %s %d %.3f s\n", r->method, r->path, status, dt);
    srv_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

/* MHD's own complaints (a client that vanished mid-write, ...) are not ours to print. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls, (void)fmt, (void)ap;
}

/* ------------------------------------------------------------ lifecycle */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

tr_status srv_start(const srv_config *cfg, srv_server **out, tr_error *err) {
    *out = NULL;
    if (cfg->port < 0 || cfg->port > 65535) return tr_err_set(err, TR_ERR_ARG, "--port %d: must be 0..65535", cfg->port);
    if (cfg->idle_timeout < 1) return tr_err_set(err, TR_ERR_ARG, "--idle-timeout %d: must be at least 1 second", cfg->idle_timeout);
    if (cfg->max_connections < 1) return tr_err_set(err, TR_ERR_ARG, "--max-connections %d: must be at least 1", cfg->max_connections);
    if (cfg->max_header < 1024) return tr_err_set(err, TR_ERR_ARG, "--max-header %zu: must be at least 1024", cfg->max_header);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai || !ai) return tr_err_set(err, TR_ERR_ARG, "--host %s: %s", cfg->host, gai_strerror(gai));

    srv_server *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return tr_err_set(err, TR_ERR_NOMEM, "out of memory");
    }
    s->cfg = *cfg;
    s->host = strdup(cfg->host);
    s->model_id = strdup(cfg->model_id);
    s->api_key = dup_or_null(cfg->api_key);
    s->created = srv_unix_time();
    srv_metrics_init(&s->metrics);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    json_object_seed(0); /* before any thread builds a JSON object */

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ITC;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* The pool holds the request line and headers plus the read/write buffers. */
    size_t pool = cfg->max_header * 2 + 32 * 1024;
    s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_timeout,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->d) {
        int e = errno;
        srv_free(s);
        return tr_err_set(err, TR_ERR_IO, "cannot listen on %s:%d: %s", cfg->host, cfg->port,
                          e ? strerror(e) : "libmicrohttpd refused to start");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    *out = s;
    return TR_OK;
}

tr_status srv_set_engine(srv_server *s, const srv_engine *eng, tr_error *err) {
    s->eng = *eng;
    s->sched = srv_sched_new(&s->eng, s->cfg.n_slots, s->cfg.queue_max, &s->metrics, err);
    if (!s->sched) return TR_ERR_ARG;
    pthread_mutex_lock(&s->mu);
    s->ready = true;
    pthread_mutex_unlock(&s->mu);
    return TR_OK;
}

void srv_stop(srv_server *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    if (s->d) {
        MHD_socket fd = MHD_quiesce_daemon(s->d); /* no new connections */
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    /* Finish (or, past the grace period, cancel) what is generating; every
     * waiting HTTP thread then sees its job done and returns. */
    srv_sched_stop(s->sched, s->cfg.shutdown_grace);
    /* Let those threads send their last bytes before the sockets close (a
     * reader that never reads gets a few seconds, then is cut off). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 3;
    pthread_mutex_lock(&s->mu);
    while (s->n_busy > 0)
        if (pthread_cond_timedwait(&s->idle, &s->mu, &ts) == ETIMEDOUT) break;
    pthread_mutex_unlock(&s->mu);
    if (s->d) MHD_stop_daemon(s->d);
    s->d = NULL;
}

void srv_free(srv_server *s) {
    if (!s) return;
    srv_stop(s);
    srv_sched_free(s->sched);
    srv_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->idle);
    free(s->host);
    free(s->model_id);
    free(s->api_key);
    free(s);
}
