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

/* ---------------------------------------------------------------- jobs */

/* A request's jobs, one per choice ("n"), in index order. */
typedef struct job_set {
    srv_job *job[SRV_MAX_CHOICES];
    int n;
} job_set;

static void jobs_cancel(srv_sched *s, const job_set *js) {
    for (int i = 0; i < js->n; i++) srv_sched_cancel(s, js->job[i]);
}

static void jobs_release(srv_sched *s, job_set *js) {
    for (int i = 0; i < js->n; i++) srv_sched_release(s, js->job[i]);
    js->n = 0;
}

/* The request's n jobs, each owning its copy of the prompt and of the
 * generation settings (sampling, stop strings, logprobs). Choice i's seed is
 * the request's + i when it brings one, so a fixed seed reproduces every
 * choice; without one the scheduler draws each its own. Takes over neither
 * req nor ids. False: out of memory, no job left. */
static bool make_jobs(srv_sched *s, const srv_request *req, const int32_t *ids, int32_t n_ids, double deadline,
                      job_set *js) {
    js->n = 0;
    for (int i = 0; i < req->n_choices; i++) {
        srv_request copy;
        int32_t *prompt = malloc(sizeof *prompt * (size_t)n_ids);
        srv_job *j = NULL;
        if (prompt && srv_request_copy_settings(req, &copy)) {
            memcpy(prompt, ids, sizeof *prompt * (size_t)n_ids);
            if (copy.has_seed) copy.sampling.seed += (uint64_t)i;
            if (!(j = srv_job_new(&copy, prompt, n_ids, deadline))) srv_request_free(&copy);
        }
        if (!j) {
            free(prompt);
            jobs_release(s, js);
            return false;
        }
        js->job[js->n++] = j;
    }
    return true;
}

/* With mu held: wait up to 100 ms for news of j. False: the client has hung
 * up (mu is held again either way). */
static bool wait_news(pthread_mutex_t *mu, srv_job *j, struct MHD_Connection *c) {
    struct timespec ts;
    deadline_in(&ts, 100);
    if (pthread_cond_timedwait(&j->cv, mu, &ts) != ETIMEDOUT) return true;
    pthread_mutex_unlock(mu);
    bool gone = client_gone(c);
    pthread_mutex_lock(mu);
    return !gone;
}

/* With the job's news readable (mu held, or the job DONE): the end of its
 * log-probabilities whose tokens' text has been released, from `from`. */
static size_t lp_released(const srv_job *j, size_t from) {
    while (from < j->n_lp && j->lp[from].off < j->text.len) from++;
    return from;
}

static srv_result result_base(srv_server *s, srv_kind kind, const char *id, int64_t created) {
    return (srv_result){.kind = kind, .id = id, .created = created, .model = s->model_id, .prompt_tokens = -1,
                        .piece = piece_cb, .piece_ctx = &s->eng};
}

/* Every job DONE. Usage counts the prompt once, as OpenAI does for n
 * choices, and the tokens of every choice. cached_tokens is choice 0's:
 * the choices are handed to the engine together, in order, so choice 0 is
 * the one that takes the prompt from what earlier requests left in the
 * cache (or computes it); the others reuse its blocks, which is this
 * request's own work, not a hit on earlier ones. So the figure is what the
 * same request with n = 1 reports, and never says that a prompt counted
 * once was served from the cache when it was computed. */
static void set_usage(srv_result *r, const job_set *js) {
    r->prompt_tokens = js->job[0]->n_prompt;
    r->cached_tokens = js->job[0]->n_cached;
    r->completion_tokens = r->accepted_tokens = r->rejected_tokens = 0;
    for (int i = 0; i < js->n; i++) {
        r->completion_tokens += js->job[i]->n_gen;
        r->accepted_tokens += js->job[i]->n_accepted;
        r->rejected_tokens += js->job[i]->n_drafted - js->job[i]->n_accepted;
    }
}

/* ----------------------------------------------------------- streaming */

/* One choice's progress through a stream. */
typedef struct stream_choice {
    size_t text_off, lp_off; /* text and log-probabilities sent */
    bool ended;              /* its final chunk is out */
} stream_choice;

/* What a job said besides its text, copied under the lock. */
typedef struct job_news {
    bool done, failed;
    srv_finish finish;
    srv_error err;
} job_news;

typedef struct stream {
    srv_server *s;
    struct MHD_Connection *conn;
    job_set jobs;
    stream_choice ch[SRV_MAX_CHOICES];
    srv_kind kind;
    char id[48];
    int64_t created;
    bool include_usage, want_lp;
    bool sent_role, finished;
    srv_buf out;   /* SSE bytes not yet handed to MHD */
    srv_buf text;  /* a chunk's text, copied out of its job */
    srv_token_lp *lp;
    size_t n_lp, cap_lp;
} stream;

static bool emit(stream *st, json_t *o) {
    bool ok = srv_sse_event(&st->out, o);
    json_decref(o);
    return ok;
}

/* OpenAI's first chunk of each choice names the role; it also gets the
 * headers out now. */
static bool stream_roles(stream *st) {
    bool ok = true;
    for (int i = 0; i < st->jobs.n; i++) {
        srv_result r = result_base(st->s, st->kind, st->id, st->created);
        r.index = i;
        r.first = true;
        ok &= emit(st, srv_chunk_json(&r));
    }
    st->sent_role = true;
    return ok;
}

/* With mu held: has choice i anything not yet sent? */
static bool has_news(const stream *st, int i) {
    const srv_job *j = st->jobs.job[i];
    return !st->ch[i].ended && (j->text.len > st->ch[i].text_off || j->state == SRV_JOB_DONE);
}

/* With mu held: wait until some choice has news. Every engine step
 * publishes every run of the request under one lock hold and wakes each,
 * so waiting on one unfinished job sees the others' news too (and the
 * 100 ms timeout bounds anything else). False: the client has gone. */
static bool stream_wait(stream *st, pthread_mutex_t *mu) {
    for (;;) {
        int wait_on = -1;
        for (int i = 0; i < st->jobs.n; i++) {
            if (has_news(st, i)) return true;
            if (wait_on < 0 && st->jobs.job[i]->state != SRV_JOB_DONE) wait_on = i;
        }
        if (wait_on < 0) return true; /* cannot happen: a DONE job not ended has news */
        if (!wait_news(mu, st->jobs.job[wait_on], st->conn)) return false;
    }
}

/* With mu held: copy choice i's text and log-probabilities since the last
 * look into st->text and st->lp. False: out of memory. */
static bool take_news(stream *st, int i, job_news *nw) {
    const srv_job *j = st->jobs.job[i];
    stream_choice *c = &st->ch[i];
    st->text.len = 0;
    st->n_lp = 0;
    if (!srv_buf_append(&st->text, j->text.p ? j->text.p + c->text_off : "", j->text.len - c->text_off))
        return false;
    c->text_off = j->text.len;
    size_t lp_end = lp_released(j, c->lp_off), need = lp_end - c->lp_off;
    if (need > st->cap_lp) {
        srv_token_lp *p = realloc(st->lp, need * sizeof *p);
        if (!p) return false;
        st->lp = p;
        st->cap_lp = need;
    }
    if (need) memcpy(st->lp, j->lp + c->lp_off, need * sizeof *st->lp);
    st->n_lp = need;
    c->lp_off = lp_end;
    *nw = (job_news){.done = j->state == SRV_JOB_DONE, .failed = j->failed, .finish = j->finish, .err = j->err};
    return true;
}

/* Mid-stream errors travel as an event with an "error" member, which the
 * OpenAI clients raise as an exception. */
static bool stream_error(stream *st, const srv_error *err) {
    char *e = srv_error_json(err);
    bool ok = e && srv_buf_puts(&st->out, "data: ") && srv_buf_puts(&st->out, e) && srv_buf_puts(&st->out, "\n\n");
    free(e);
    return ok;
}

/* Choice i's news as events: its new text, and its final chunk when it is
 * done. *failed: it failed (the error event is out). */
static bool stream_choice_news(stream *st, int i, bool *failed) {
    pthread_mutex_t *mu = srv_sched_mutex(st->s->sched);
    job_news nw;
    pthread_mutex_lock(mu);
    bool ok = take_news(st, i, &nw);
    pthread_mutex_unlock(mu);
    if (!ok) return false;
    srv_result r = result_base(st->s, st->kind, st->id, st->created);
    r.index = i;
    if (st->text.len || st->n_lp) {
        srv_result t = r;
        t.text = st->text.p;
        t.text_len = st->text.len;
        t.lp = st->want_lp ? st->lp : NULL;
        t.n_lp = st->n_lp;
        ok &= emit(st, srv_chunk_json(&t));
    }
    if (!nw.done) return ok;
    st->ch[i].ended = true;
    if (nw.failed) {
        *failed = true;
        return ok && stream_error(st, &nw.err);
    }
    r.finish = nw.finish;
    r.lp = st->want_lp ? st->lp : NULL; /* an empty list, as OpenAI sends */
    r.n_lp = 0;
    return ok && emit(st, srv_chunk_json(&r));
}

/* Every choice ended (or one failed): the usage chunk when asked for, then
 * [DONE]. */
static bool stream_end(stream *st, bool failed) {
    bool ok = true;
    if (!failed && st->include_usage) {
        srv_result r = result_base(st->s, st->kind, st->id, st->created);
        set_usage(&r, &st->jobs);
        ok = emit(st, srv_usage_chunk_json(&r));
    }
    st->finished = true;
    return ok && srv_sse_done(&st->out);
}

/* Wait for news from the jobs and turn it into SSE events, the choices'
 * chunks interleaved as they come (each with its index, as OpenAI does).
 * False: the client is gone (the jobs are cancelled) or memory ran out. */
static bool stream_fill(stream *st) {
    if (st->kind == SRV_KIND_CHAT && !st->sent_role) return stream_roles(st);
    pthread_mutex_t *mu = srv_sched_mutex(st->s->sched);
    pthread_mutex_lock(mu);
    bool here = stream_wait(st, mu);
    bool news[SRV_MAX_CHOICES];
    for (int i = 0; i < st->jobs.n; i++) news[i] = here && has_news(st, i);
    pthread_mutex_unlock(mu);
    if (!here) {
        jobs_cancel(st->s->sched, &st->jobs);
        return false;
    }
    bool ok = true, failed = false, all_ended = true;
    for (int i = 0; i < st->jobs.n && ok && !failed; i++)
        if (news[i]) ok = stream_choice_news(st, i, &failed);
    for (int i = 0; i < st->jobs.n; i++) all_ended &= st->ch[i].ended;
    if (failed) jobs_cancel(st->s->sched, &st->jobs); /* the stream ends here: stop the other choices */
    if (ok && (failed || all_ended)) ok = stream_end(st, failed);
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
    jobs_cancel(st->s->sched, &st->jobs);
    jobs_release(st->s->sched, &st->jobs);
    srv_buf_free(&st->out);
    srv_buf_free(&st->text);
    free(st->lp);
    free(st);
}

/* Answer with an SSE stream that the jobs feed. Takes over js. */
static enum MHD_Result start_stream(struct MHD_Connection *c, conn_req *r, srv_kind kind, job_set *js,
                                    const srv_request *req) {
    srv_server *s = r->s;
    stream *st = calloc(1, sizeof *st);
    if (!st) {
        jobs_cancel(s->sched, js);
        jobs_release(s->sched, js);
        return MHD_NO;
    }
    st->s = s;
    st->conn = c;
    st->jobs = *js;
    js->n = 0;
    st->kind = kind;
    st->created = srv_unix_time();
    st->include_usage = req->include_usage;
    st->want_lp = req->logprobs;
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

/* ---------------------------------------------------------- generation */

/* Not streamed: wait here (this is the connection's own thread) for every
 * choice, then answer them all, or the first failed one's error. Takes
 * over js. */
static enum MHD_Result answer_when_done(struct MHD_Connection *c, conn_req *r, srv_kind kind, job_set *js,
                                        bool want_lp) {
    srv_server *s = r->s;
    pthread_mutex_t *mu = srv_sched_mutex(s->sched);
    pthread_mutex_lock(mu);
    bool here = true;
    for (int i = 0; i < js->n && here; i++)
        while (here && js->job[i]->state != SRV_JOB_DONE) here = wait_news(mu, js->job[i], c);
    pthread_mutex_unlock(mu);
    if (!here) {
        jobs_cancel(s->sched, js);
        jobs_release(s->sched, js);
        r->status = 499; /* nginx's "client closed request" */
        return MHD_NO;
    }
    /* DONE is final: the jobs' fields no longer change. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)s->cfg.idle_timeout);
    for (int i = 0; i < js->n; i++) {
        if (js->job[i]->failed) {
            enum MHD_Result ret = reply_error(c, r, &js->job[i]->err);
            jobs_release(s->sched, js);
            return ret;
        }
    }
    char id[48];
    make_id(s, kind, id, sizeof id);
    int64_t created = srv_unix_time();
    srv_result res[SRV_MAX_CHOICES];
    for (int i = 0; i < js->n; i++) {
        const srv_job *j = js->job[i];
        static const srv_token_lp none[1];
        res[i] = result_base(s, kind, id, created);
        res[i].index = i;
        res[i].text = j->text.p ? j->text.p : "";
        res[i].text_len = j->text.len;
        res[i].finish = j->finish;
        res[i].lp = !want_lp ? NULL : j->lp ? j->lp : none; /* logprobs asked for: a list, even empty */
        res[i].n_lp = want_lp ? lp_released(j, 0) : 0;
    }
    set_usage(&res[0], js);
    enum MHD_Result ret = reply_json(c, r, 200, srv_response_json(res, (size_t)js->n));
    jobs_release(s->sched, js);
    return ret;
}

/* Queue the request's jobs and answer: a stream, or the whole response.
 * Takes over req and ids. */
static enum MHD_Result generate(struct MHD_Connection *c, conn_req *r, srv_kind kind, srv_request *req,
                                int32_t *ids, int32_t n_ids) {
    srv_server *s = r->s;
    double deadline = s->cfg.request_timeout > 0 ? r->t0 + s->cfg.request_timeout : 0;
    job_set js;
    bool made = make_jobs(s->sched, req, ids, n_ids, deadline, &js);
    free(ids);
    if (!made) {
        srv_request_free(req);
        return fail(c, r, 500, "server_error", NULL, NULL, "out of memory");
    }
    int rc = srv_sched_submit(s->sched, js.job, js.n);
    if (rc != 0) {
        jobs_release(s->sched, &js);
        srv_request_free(req);
        if (rc == 1)
            return fail(c, r, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                        "the server is busy: every slot is generating and the queue is full; retry later");
        if (rc == 3)
            return fail(c, r, 400, "invalid_request_error", NULL, "n",
                        "'n' asks for more choices than this server generates and queues at once "
                        "(--parallel plus --queue): ask for fewer");
        return fail(c, r, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    }
    pthread_mutex_lock(&s->mu);
    s->n_busy++;
    r->busy = true;
    pthread_mutex_unlock(&s->mu);
    /* Generation may take longer than the idle timeout; the request timeout
     * bounds it instead. */
    MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0);
    enum MHD_Result ret =
        req->stream ? start_stream(c, r, kind, &js, req) : answer_when_done(c, r, kind, &js, req->logprobs);
    srv_request_free(req);
    return ret;
}

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

    return generate(c, r, kind, &req, ids, (int32_t)n_ids);
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
