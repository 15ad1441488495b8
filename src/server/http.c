/* The HTTP side of trinity serve: connections, routing, limits,
 * authentication, and turning jobs into JSON responses and SSE streams.
 *
 * Connections. One acceptor thread takes connections and gives each its own
 * thread, so a handler may block waiting for its job (and a stream for its
 * next token) without holding up anyone else; a slow reader only slows its
 * own thread. HTTP/1.1 framing is http1.c's. The limits a hostile client
 * meets, and why (docs/DESIGN.md, "HTTP"):
 *   - a request head must be complete --header-timeout seconds after its
 *     first byte, however slowly it trickles in (slowloris);
 *   - at --max-connections, a new connection evicts the one that has waited
 *     longest without completing a request (idle between requests, or still
 *     sending its head or body); when every connection is busy with a
 *     request, the newcomer gets a 503 with Retry-After, never a reset;
 *   - a client that half-closes (shutdown(SHUT_WR)) after its request is
 *     still answered: only a reset or a failed write means it has gone, and
 *     that cancels its generation;
 *   - every error is one response with Connection: close, and the socket is
 *     closed gracefully (rest of the request read and dropped for a moment)
 *     so that the response is not lost to a reset. */
#define _GNU_SOURCE
#include "core/util.h"
#include "http1.h"
#include "sched.h"
#include "server.h"
#include "tools.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* Where a connection is, as the acceptor sees it when it needs room. */
typedef enum conn_state {
    CONN_FREE = 0, /* the table slot is unused */
    CONN_IDLE,     /* waiting for a request's first byte (new, or kept alive) */
    CONN_HEAD,     /* receiving a request head */
    CONN_BODY,     /* receiving a request body */
    CONN_BUSY,     /* a request is in: being answered */
} conn_state;

typedef struct conn_slot {
    conn_state state;
    int fd;
    double since;  /* srv_now() when the state began */
    bool evicted;  /* shut down to make room: no longer counted */
} conn_slot;

/* Connections refused with a 503 that the acceptor closes gracefully. */
#define N_LINGER 64

struct srv_server {
    srv_config cfg;
    char *host, *model_id, *api_key; /* cfg's strings, owned */
    int listen_fd;
    int wake[2]; /* pipe: wakes the acceptor to stop */
    pthread_t acceptor;
    bool acceptor_started, stopped;
    int port;
    int64_t created;
    srv_metrics metrics;
    pthread_mutex_t mu; /* guards ready, stopping, n_busy and the connection table */
    bool ready, stopping;
    int n_busy;          /* generation requests not yet completed (last byte sent) */
    pthread_cond_t idle; /* signalled when n_busy drops and when a connection ends */
    conn_slot *slots;    /* --max-connections live ones, plus room for evicted ones closing */
    int n_table;
    int n_live;          /* connections counted against --max-connections */
    int n_open;          /* connection threads running */
    pthread_attr_t thread_attr;
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
        .header_timeout = 5,
        .request_timeout = 600,
        .shutdown_grace = 5,
        .log_requests = true,
    };
}

int srv_port(const srv_server *s) { return s->port; }

/* ---------------------------------------------------------- connections */

/* One connection, owned by its thread. */
typedef struct conn {
    srv_server *s;
    int slot, fd;
    char *buf;                  /* bytes received and not yet used: [off, len) */
    size_t off, len, cap;
    bool eof;                   /* the client half-closed: no more bytes will come */
    bool broken;                /* reset, a failed write, or evicted: give up */
    bool keep_alive;            /* after this response, wait for another request */
    bool linger;                /* close gracefully: unread input may follow */
    bool body_unread;           /* the request's body has not been read */
    bool head_only;             /* HEAD: the response without its body */
    int minor;                  /* the request's HTTP/1.<minor> */
    double checked_at;          /* srv_now() when client_gone last looked */
} conn;

/* Move the connection to `st` in the table. False: it was evicted. */
static bool set_state(conn *c, conn_state st) {
    srv_server *s = c->s;
    pthread_mutex_lock(&s->mu);
    conn_slot *sl = &s->slots[c->slot];
    bool ok = !sl->evicted;
    if (ok && sl->state != st) {
        sl->state = st;
        sl->since = srv_now();
    }
    pthread_mutex_unlock(&s->mu);
    if (!ok) c->broken = true;
    return ok;
}

/* Receive into the buffer, waiting until `deadline` (srv_now() seconds).
 * >0: bytes; 0: end of input; -1: the deadline passed; -2: an error or a
 * reset (the connection is broken). */
static long conn_recv(conn *c, double deadline) {
    if (c->len == c->cap) return -2; /* callers keep room; cannot happen */
    for (;;) {
        double left = deadline - srv_now();
        if (left <= 0) return -1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int k = poll(&p, 1, left > 3600 ? 3600000 : (int)(left * 1000) + 1);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) return -2;
        if (k == 0) continue; /* re-check the deadline */
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
        if (n > 0) {
            c->len += (size_t)n;
            return n;
        }
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
        c->broken = true;
        return -2;
    }
}

/* Write every byte of iov (blocking; SO_SNDTIMEO bounds a reader that never
 * reads). False: the client is gone. */
static bool conn_writev(conn *c, struct iovec *iov, int n) {
    if (c->broken) return false;
    while (n > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t k = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            c->broken = true;
            return false;
        }
        while (n > 0 && (size_t)k >= iov->iov_len) {
            k -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= (size_t)k;
        }
    }
    return true;
}

static bool conn_write(conn *c, const void *p, size_t len) {
    struct iovec iov = {(void *)p, len};
    return conn_writev(c, &iov, 1);
}

/* Has the client gone? A reset or a failed write. A half-close (its FIN)
 * is not: the client may still be reading, as HTTP lets it. */
static bool client_gone(conn *c) {
    if (c->broken) return true;
    struct pollfd p = {.fd = c->fd, .events = 0};
    if (poll(&p, 1, 0) > 0 && (p.revents & (POLLERR | POLLHUP | POLLNVAL))) c->broken = true;
    return c->broken;
}

/* -------------------------------------------------------------- replies */

static const char *reason_phrase(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 417: return "Expectation Failed";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* The status line and headers. len: the body's length; -1: a stream
 * (chunked, or ended by closing for HTTP/1.0); -2: no body at all (204). */
static size_t format_head(conn *c, char *h, size_t cap, int status, const char *ctype, long long len,
                          const char *extra) {
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (len == -1 && c->minor == 0) c->keep_alive = false; /* the body ends where the connection does */
    char length[48] = "";
    if (len >= 0) snprintf(length, sizeof length, "Content-Length: %lld\r\n", len);
    else if (len == -1) snprintf(length, sizeof length, "%s", c->minor ? "Transfer-Encoding: chunked\r\n" : "");
    int n = snprintf(h, cap, "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s%sAccess-Control-Allow-Origin: *\r\n%s%s%s\r\n",
                     status, reason_phrase(status), date, ctype ? "Content-Type: " : "", ctype ? ctype : "",
                     ctype ? "\r\n" : "", extra ? extra : "", length,
                     !c->keep_alive ? "Connection: close\r\n" : c->minor == 0 ? "Connection: keep-alive\r\n" : "");
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* One response: head and body in one write. Takes over body (malloc'ed). */
static bool send_response(conn *c, int status, const char *ctype, char *body, size_t len, const char *extra) {
    if (c->body_unread) { /* answered before its body: the body is not read */
        c->keep_alive = false;
        c->linger = true;
    }
    char head[1024];
    size_t hn = format_head(c, head, sizeof head, status, ctype, status == 204 ? -2 : (long long)len, extra);
    struct iovec iov[2] = {{head, hn}, {body, c->head_only ? 0 : len}};
    bool ok = conn_writev(c, iov, iov[1].iov_len ? 2 : 1);
    free(body);
    return ok;
}

/* An answer to bytes that are not an acceptable request (http1.c's errors,
 * timeouts, refusals): an OpenAI-style error body, and the connection ends. */
static void protocol_error(conn *c, int status, const char *code, const char *msg) {
    srv_error e;
    srv_error_set(&e, status, status >= 500 ? "server_error" : "invalid_request_error", code, NULL, "%s", msg);
    char *body = srv_error_json(&e);
    c->keep_alive = false;
    c->linger = true;
    c->head_only = false;
    if (body) send_response(c, status, "application/json", body, strlen(body), NULL);
    srv_metrics_request(&c->s->metrics, SRV_EP_OTHER, status, 0);
    if (c->s->cfg.log_requests) fprintf(stderr, "trinity serve: - - %d: %s\n", status, msg);
}

static const char *protocol_code(int status) {
    switch (status) {
    case 408: return "request_timeout";
    case 413: return "request_too_large";
    case 417: return "expectation_failed";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 505: return "http_version_not_supported";
    default: return "bad_request";
    }
}

/* One HTTP request, from its head to its last byte. */
typedef struct conn_req {
    srv_server *s;
    conn *c;
    srv_endpoint ep;
    const char *method, *path;
    const http1_request *rq;
    double t0;
    srv_buf body;
    bool busy; /* counted in n_busy */
    int status;
} conn_req;

/* Queue `data` (malloc'ed; taken over) as the response. */
static bool reply(conn_req *r, int status, const char *ctype, char *data, size_t len) {
    char extra[128] = "";
    if (status == 429 || status == 503) snprintf(extra, sizeof extra, "Retry-After: 1\r\n");
    if (status == 401) snprintf(extra, sizeof extra, "WWW-Authenticate: Bearer\r\n");
    if (status == 405)
        snprintf(extra, sizeof extra, "Allow: %s\r\n",
                 r->ep == SRV_EP_CHAT || r->ep == SRV_EP_COMPLETIONS || r->ep == SRV_EP_APPLY_TEMPLATE ? "POST, OPTIONS" : "GET, HEAD, OPTIONS");
    r->status = status;
    return send_response(r->c, status, ctype, data, len, extra);
}

static bool reply_json(conn_req *r, int status, json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!s) return false;
    return reply(r, status, "application/json", s, strlen(s));
}

static bool reply_error(conn_req *r, const srv_error *e) {
    char *s = srv_error_json(e);
    if (!s) return false;
    return reply(r, e->status, "application/json", s, strlen(s));
}

static bool fail(conn_req *r, int status, const char *type, const char *code, const char *param, const char *msg) {
    srv_error e;
    srv_error_set(&e, status, type, code, param, "%s", msg);
    return reply_error(r, &e);
}

/* ------------------------------------------------------------- helpers */

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

static bool authorized(srv_server *s, const http1_request *rq) {
    if (!s->api_key) return true;
    const char *h = http1_header_get(rq, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    return same_secret(h, s->api_key);
}

/* ---------------------------------------------------------------- jobs */

/* A request's jobs, one per prompt and choice ("n"), in index order (prompt * n + choice). */
typedef struct job_set {
    srv_job *job[SRV_MAX_JOBS];
    int n;
    int per_prompt; /* "n" */
    int32_t dropped; /* messages the context shift dropped from the request */
} job_set;

static void jobs_cancel(srv_sched *s, const job_set *js) {
    for (int i = 0; i < js->n; i++) srv_sched_cancel(s, js->job[i]);
}

static void jobs_release(srv_sched *s, job_set *js) {
    for (int i = 0; i < js->n; i++) srv_sched_release(s, js->job[i]);
    js->n = 0;
}

/* The request's jobs: for each prompt, n choices, each owning its copy of
 * the prompt and of the generation settings (sampling, stop strings,
 * logprobs). Choice i's seed is the request's + i when it brings one, so a
 * fixed seed reproduces every choice, and a prompt of a list gets what it
 * would get alone; without one the scheduler draws each its own. Takes over
 * neither req nor ids. False: out of memory, no job left. */
static bool make_jobs(srv_sched *s, const srv_request *req, int32_t *const *ids, const int32_t *n_ids,
                      int n_prompts, double deadline, job_set *js) {
    js->n = 0;
    js->per_prompt = req->n_choices;
    for (int p = 0; p < n_prompts; p++) {
        for (int i = 0; i < req->n_choices; i++) {
            srv_request copy;
            int32_t *prompt = malloc(sizeof *prompt * (size_t)n_ids[p]);
            srv_job *j = NULL;
            if (prompt && srv_request_copy_settings(req, &copy)) {
                memcpy(prompt, ids[p], sizeof *prompt * (size_t)n_ids[p]);
                if (copy.has_seed) copy.sampling.seed += (uint64_t)i;
                if (!(j = srv_job_new(&copy, prompt, n_ids[p], deadline))) srv_request_free(&copy);
            }
            if (!j) {
                free(prompt);
                jobs_release(s, js);
                return false;
            }
            js->job[js->n++] = j;
        }
    }
    return true;
}

/* With mu held: wait up to 100 ms for news of j. False: the client has gone
 * (mu is held again either way). The socket is looked at every 100 ms even
 * while news keeps coming (a job publishes every token), so a client that
 * resets mid-generation is noticed whether or not anything is being sent. */
static bool wait_news(pthread_mutex_t *mu, srv_job *j, conn *c) {
    struct timespec ts;
    deadline_in(&ts, 100);
    pthread_cond_timedwait(&j->cv, mu, &ts);
    double now = srv_now();
    if (now - c->checked_at < 0.1) return true;
    c->checked_at = now;
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

/* Every job DONE. Usage counts each prompt once, as OpenAI does for n
 * choices, and the tokens of every choice. cached_tokens is choice 0's:
 * the choices are handed to the engine together, in order, so choice 0 is
 * the one that takes the prompt from what earlier requests left in the
 * cache (or computes it); the others reuse its blocks, which is this
 * request's own work, not a hit on earlier ones. So the figure is what the
 * same request with n = 1 reports, and never says that a prompt counted
 * once was served from the cache when it was computed. */
static void set_usage(srv_result *r, const job_set *js) {
    r->prompt_tokens = r->cached_tokens = 0;
    for (int i = 0; i < js->n; i += js->per_prompt) { /* each prompt of a list, once */
        r->prompt_tokens += js->job[i]->n_prompt;
        r->cached_tokens += js->job[i]->n_cached;
    }
    r->dropped_messages = js->dropped;
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
    conn *conn;
    job_set jobs;
    stream_choice ch[SRV_MAX_JOBS];
    srv_kind kind;
    char id[48];
    int64_t created;
    bool include_usage, want_lp;
    bool sent_role, finished;
    srv_buf out;   /* SSE bytes not yet sent */
    srv_buf text;  /* a chunk's text, copied out of its job */
    srv_token_lp *lp;
    size_t n_lp, cap_lp;
    /* tools: the text is held back and parsed for tool calls at the end */
    const srv_request *tools;
    srv_buf held[SRV_MAX_JOBS]; /* each choice's whole text */
    size_t sent[SRV_MAX_JOBS];  /* of which streamed as content */
} stream;

/* How much of a tools answer's text so far is surely content (may stream):
 * a forced call is all call; Hermes calls may follow content, so the text
 * before "<tool_call>" (or before a tail that may begin it); Llama 3 and
 * Mistral calls are the whole answer, so nothing while it may start one. */
static size_t tools_safe_prefix(const srv_request *r, srv_tool_format f, const char *t, size_t len) {
    if (r->tool_choice == SRV_TOOLS_REQUIRED || r->tool_choice == SRV_TOOLS_NAMED) return 0;
    if (f == SRV_TOOLFMT_HERMES) {
        static const char open[] = "<tool_call>";
        const char *p = memmem(t, len, open, sizeof open - 1);
        if (p) return (size_t)(p - t);
        for (size_t k = sizeof open - 2; k > 0; k--) /* a tail that may begin "<tool_call>" */
            if (len >= k && !memcmp(t + len - k, open, k)) return len - k;
        return len;
    }
    size_t k = 0;
    while (k < len && (t[k] == ' ' || t[k] == '\n' || t[k] == '\t' || t[k] == '\r')) k++;
    if (k == len || t[k] == '{' || t[k] == '[') return 0;
    return len;
}

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
        r.dropped_messages = st->jobs.dropped;
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
    if (st->tools) {
        /* Text that may be a tool call is held back until it is known to be
         * one (or not); content before it streams as usual. */
        srv_buf *h = &st->held[i];
        if (!srv_buf_append(h, st->text.p ? st->text.p : "", st->text.len)) return false;
        st->text.len = 0;
        const srv_tool_format f = (srv_tool_format)st->s->eng.tool_format;
        size_t safe = tools_safe_prefix(st->tools, f, h->p ? h->p : "", h->len), *sent = &st->sent[i];
        srv_tool_call *calls = NULL;
        size_t n = 0, content_len = h->len;
        if (nw.done && !nw.failed) {
            n = srv_tools_parse(st->tools, f, h->p ? h->p : "", h->len, &calls, &content_len);
            safe = content_len;
        }
        srv_result t = r;
        t.text = (h->p ? h->p : "") + *sent;
        t.text_len = safe > *sent ? safe - *sent : 0;
        t.calls = calls;
        t.n_calls = n;
        if (t.text_len || n) ok &= emit(st, srv_chunk_json(&t));
        if (safe > *sent) *sent = safe;
        srv_tool_calls_free(calls, n);
        if (n && nw.finish == SRV_FINISH_STOP) nw.finish = SRV_FINISH_TOOL_CALLS;
    }
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
    bool news[SRV_MAX_JOBS];
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

static void stream_free(stream *st) {
    /* Ended early (the client left, a write failed): stop generating for it. */
    jobs_cancel(st->s->sched, &st->jobs);
    jobs_release(st->s->sched, &st->jobs);
    srv_buf_free(&st->out);
    srv_buf_free(&st->text);
    for (int i = 0; i < SRV_MAX_JOBS; i++) srv_buf_free(&st->held[i]);
    free(st->lp);
    free(st);
}

/* Send the stream: the head at once (so a client that has already gone
 * shows itself by a reset while its request still waits in the queue),
 * then each batch of events as one chunk as the jobs produce them. */
static bool run_stream(conn_req *r, stream *st) {
    conn *c = r->c;
    char head[1024];
    size_t hn = format_head(c, head, sizeof head, 200, "text/event-stream", -1,
                            "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    if (!conn_write(c, head, hn)) return false;
    if (c->head_only) return true;
    for (;;) {
        while (st->out.len == 0 && !st->finished)
            if (!stream_fill(st)) return false;
        if (st->out.len) {
            char size[24];
            int sn = c->minor ? snprintf(size, sizeof size, "%zx\r\n", st->out.len) : 0;
            struct iovec iov[3] = {{size, (size_t)sn}, {st->out.p, st->out.len}, {(void *)"\r\n", c->minor ? 2 : 0}};
            if (!conn_writev(c, iov, 3)) return false;
            srv_buf_consume(&st->out, st->out.len);
        }
        if (st->finished) break;
    }
    return c->minor == 0 || conn_write(c, "0\r\n\r\n", 5);
}

/* Answer with an SSE stream that the jobs feed. Takes over js. */
static bool start_stream(conn_req *r, srv_kind kind, job_set *js, const srv_request *req) {
    srv_server *s = r->s;
    stream *st = calloc(1, sizeof *st);
    if (!st) {
        jobs_cancel(s->sched, js);
        jobs_release(s->sched, js);
        return false;
    }
    st->s = s;
    st->conn = r->c;
    st->jobs = *js;
    js->n = 0;
    st->kind = kind;
    st->created = srv_unix_time();
    st->include_usage = req->include_usage;
    st->want_lp = req->logprobs;
    st->tools = req->tools && req->tool_choice != SRV_TOOLS_OFF ? req : NULL;
    make_id(s, kind, st->id, sizeof st->id);
    r->status = 200;
    bool ok = run_stream(r, st);
    if (!ok && r->c->broken) r->status = 499; /* nginx's "client closed request" */
    stream_free(st);
    return ok;
}

/* ---------------------------------------------------------- generation */

/* Not streamed: wait here (this is the connection's own thread) for every
 * choice, then answer them all, or the first failed one's error. Takes
 * over js. */
static bool answer_when_done(conn_req *r, srv_kind kind, job_set *js, const srv_request *req) {
    const bool want_lp = req->logprobs;
    srv_server *s = r->s;
    pthread_mutex_t *mu = srv_sched_mutex(s->sched);
    pthread_mutex_lock(mu);
    bool here = true;
    for (int i = 0; i < js->n && here; i++)
        while (here && js->job[i]->state != SRV_JOB_DONE) here = wait_news(mu, js->job[i], r->c);
    pthread_mutex_unlock(mu);
    if (!here) {
        jobs_cancel(s->sched, js);
        jobs_release(s->sched, js);
        r->status = 499; /* nginx's "client closed request" */
        return false;
    }
    /* DONE is final: the jobs' fields no longer change. */
    for (int i = 0; i < js->n; i++) {
        if (js->job[i]->failed) {
            bool ret = reply_error(r, &js->job[i]->err);
            jobs_release(s->sched, js);
            return ret;
        }
    }
    char id[48];
    make_id(s, kind, id, sizeof id);
    int64_t created = srv_unix_time();
    srv_result res[SRV_MAX_JOBS];
    srv_tool_call *calls[SRV_MAX_JOBS] = {0};
    size_t n_calls[SRV_MAX_JOBS] = {0};
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
        if (req->tools && req->tool_choice != SRV_TOOLS_OFF) {
            size_t content_len = 0;
            n_calls[i] = srv_tools_parse(req, (srv_tool_format)s->eng.tool_format, res[i].text, res[i].text_len,
                                         &calls[i], &content_len);
            if (n_calls[i]) {
                res[i].calls = calls[i];
                res[i].n_calls = n_calls[i];
                res[i].text_len = content_len;
                if (res[i].finish == SRV_FINISH_STOP) res[i].finish = SRV_FINISH_TOOL_CALLS;
            }
        }
    }
    set_usage(&res[0], js);
    bool ret = reply_json(r, 200, srv_response_json(res, (size_t)js->n));
    for (int i = 0; i < js->n; i++) srv_tool_calls_free(calls[i], n_calls[i]);
    jobs_release(s->sched, js);
    return ret;
}

/* Queue the request's jobs and answer: a stream, or the whole response.
 * Takes over req and ids. */
static bool generate(conn_req *r, srv_kind kind, srv_request *req, int32_t **ids, int32_t *n_ids,
                     int n_prompts) {
    srv_server *s = r->s;
    double deadline = s->cfg.request_timeout > 0 ? r->t0 + s->cfg.request_timeout : 0;
    job_set js;
    bool made = make_jobs(s->sched, req, ids, n_ids, n_prompts, deadline, &js);
    js.dropped = req->ctx_dropped;
    for (int p = 0; p < n_prompts; p++) free(ids[p]);
    if (!made) {
        srv_request_free(req);
        return fail(r, 500, "server_error", NULL, NULL, "out of memory");
    }
    int rc = srv_sched_submit(s->sched, js.job, js.n);
    if (rc != 0) {
        jobs_release(s->sched, &js);
        srv_request_free(req);
        if (rc == 1)
            return fail(r, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                        "the server is busy: every slot is generating and the queue is full; retry later");
        if (rc == 3)
            return fail(r, 400, "invalid_request_error", NULL, "n",
                        "the request asks for more completions (prompts times 'n') than this server generates "
                        "and queues at once (--parallel plus --queue): ask for fewer");
        return fail(r, 503, "server_error", "shutting_down", NULL, "the server is shutting down");
    }
    pthread_mutex_lock(&s->mu);
    s->n_busy++;
    r->busy = true;
    pthread_mutex_unlock(&s->mu);
    bool ret =
        req->stream ? start_stream(r, kind, &js, req) : answer_when_done(r, kind, &js, req);
    srv_request_free(req);
    return ret;
}

static bool add_tools(srv_request *req, srv_tool_format f, srv_error *e);

/* POST /apply-template, as llama-server: a chat request's body in, the
 * prompt its conversation becomes out ({"prompt": "..."}), nothing generated. */
static bool handle_apply_template(conn_req *r) {
    srv_server *s = r->s;
    const srv_engine *eng = &s->eng;
    srv_request req;
    srv_error e;
    if (!srv_request_parse(SRV_KIND_CHAT, r->body.p ? r->body.p : "", r->body.len, s->model_id, eng->n_vocab,
                           &eng->defaults, &req, &e))
        return reply_error(r, &e);
    if (req.tools && req.tool_choice != SRV_TOOLS_OFF && !add_tools(&req, (srv_tool_format)eng->tool_format, &e)) {
        srv_request_free(&req);
        return reply_error(r, &e);
    }
    char *text = NULL;
    tr_error terr = {{0}};
    tr_status st = eng->chat_format(eng->self, req.msgs, req.n_msgs, req.messages_json, req.tools_json, &text, &terr);
    srv_request_free(&req);
    if (st != TR_OK) return fail(r, 400, "invalid_request_error", NULL, "messages", terr.msg);
    json_t *o = json_pack("{s:s}", "prompt", text);
    free(text);
    return reply_json(r, 200, o);
}

/* The tools into the conversation (a system message describing them, ahead
 * of the system text if any) and, when a call is required, its grammar. */
static bool add_tools(srv_request *req, srv_tool_format f, srv_error *e) {
    char *text = srv_tools_prompt(req, f);
    if (!text) goto oom;
    if (req->n_msgs && !strcmp(req->msgs[0].role, "system")) {
        size_t a = strlen(text), b = strlen(req->msgs[0].content);
        char *c = malloc(a + 2 + b + 1);
        if (!c) goto oom;
        memcpy(c, req->msgs[0].content, b);
        memcpy(c + b, b ? "\n\n" : "", b ? 2 : 0);
        memcpy(c + b + (b ? 2 : 0), text, a + 1);
        free(text);
        free((char *)req->msgs[0].content);
        req->msgs[0].content = c;
    } else {
        tr_chat_msg *m = realloc(req->msgs, sizeof *m * (req->n_msgs + 1));
        if (!m) goto oom;
        memmove(m + 1, m, sizeof *m * req->n_msgs);
        m[0] = (tr_chat_msg){.role = "system", .content = text};
        req->msgs = m;
        req->n_msgs++;
    }
    if (req->tool_choice == SRV_TOOLS_REQUIRED || req->tool_choice == SRV_TOOLS_NAMED) return srv_tools_grammar(req, f, e);
    return true;
oom:
    free(text);
    srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
    return false;
}

/* tr_chat_fit's renderer over the request: the kept messages are a subset of
 * req->msgs (the same entries, so the same content pointers), and the chat
 * template gets those messages as they were sent. */
typedef struct fit_ctx {
    const srv_engine *eng;
    const srv_request *req;
    json_t *all; /* req->messages_json, parsed */
} fit_ctx;

static tr_status fit_render(void *user, const tr_chat_msg *msgs, size_t n, char **out, tr_error *err) {
    const fit_ctx *f = user;
    json_t *kept = json_array();
    for (size_t i = 0; kept && i < n; i++)
        for (size_t j = 0; j < f->req->n_msgs; j++)
            if (f->req->msgs[j].content == msgs[i].content) {
                json_array_append(kept, json_array_get(f->all, j));
                break;
            }
    char *kj = kept ? json_dumps(kept, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    json_decref(kept);
    if (!kj) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return TR_ERR_NOMEM;
    }
    tr_status st = f->eng->chat_format(f->eng->self, msgs, n, kj, f->req->tools_json, out, err);
    free(kj);
    return st;
}

static tr_status fit_tokenize(void *user, const char *text, size_t len, int32_t **ids, size_t *n, tr_error *err) {
    const fit_ctx *f = user;
    return f->eng->tokenize(f->eng->self, text, len, ids, n, err);
}

static bool handle_generate(conn_req *r, srv_kind kind) {
    srv_server *s = r->s;
    const srv_engine *eng = &s->eng;
    srv_request req;
    srv_error e;
    if (!srv_request_parse(kind, r->body.p ? r->body.p : "", r->body.len, s->model_id, eng->n_vocab,
                           &eng->defaults, &req, &e))
        return reply_error(r, &e);

    /* Tools: described in the built-in formats' system text (a Jinja template gets them as sent), and a
     * required call's grammar. */
    if (req.tools && req.tool_choice != SRV_TOOLS_OFF && !add_tools(&req, (srv_tool_format)eng->tool_format, &e)) {
        srv_request_free(&req);
        return reply_error(r, &e);
    }
    /* The prompts, as the model's tokens (a chat is one). */
    int n_prompts = kind == SRV_KIND_CHAT ? 1 : (int)req.n_prompts;
    int32_t *ids[SRV_MAX_JOBS] = {0};
    int32_t n_ids[SRV_MAX_JOBS] = {0};
    for (int p = 0; p < n_prompts; p++) {
        char param[32];
        snprintf(param, sizeof param, kind == SRV_KIND_CHAT ? "messages" : n_prompts > 1 ? "prompt[%d]" : "prompt", p);
        size_t n = 0;
        tr_error terr = {{0}};
        tr_status st = TR_OK;
        if (kind == SRV_KIND_CHAT) {
            /* The conversation as the template renders it; one that would overflow loses its oldest whole
             * turns (context shift). */
            size_t dropped = 0;
            const int32_t room = eng->streaming ? 0 : tr_chat_room(req.max_tokens, eng->n_ctx);
            fit_ctx fc = {.eng = eng, .req = &req, .all = json_loads(req.messages_json, 0, NULL)};
            st = fc.all ? tr_chat_fit(&fc, fit_render, fit_tokenize, req.msgs, req.n_msgs,
                                      eng->streaming ? INT32_MAX : eng->n_ctx, room, &ids[p], &n, &dropped, &terr)
                        : (snprintf(terr.msg, sizeof terr.msg, "out of memory"), TR_ERR_NOMEM);
            json_decref(fc.all);
            req.ctx_dropped = (int32_t)dropped;
            if (st == TR_OK && dropped) srv_metrics_context_shift(&s->metrics, (uint64_t)dropped);
        } else if (req.prompts[p].text) {
            const char *t = req.prompts[p].text;
            st = eng->tokenize(eng->self, t, strlen(t), &ids[p], &n, &terr);
        } else {
            ids[p] = req.prompts[p].ids;
            n = req.prompts[p].n_ids;
            req.prompts[p].ids = NULL;
            req.prompts[p].n_ids = 0;
        }
        char msg[600];
        const char *code = NULL;
        if (st != TR_OK)
            snprintf(msg, sizeof msg, "%s", terr.msg);
        else if (n == 0)
            snprintf(msg, sizeof msg, "the %s is empty: it gave no tokens", kind == SRV_KIND_CHAT ? "prompt" : param);
        else if (!eng->streaming && n >= (size_t)eng->n_ctx) {
            code = "context_length_exceeded";
            snprintf(msg, sizeof msg,
                     "the %s is %zu tokens long, but the context holds %d tokens (prompt and answer together): "
                     "shorten the prompt or start the server with a larger -c",
                     kind == SRV_KIND_CHAT ? "prompt" : param, n, (int)eng->n_ctx);
        } else {
            n_ids[p] = (int32_t)n;
            continue;
        }
        for (int q = 0; q <= p; q++) free(ids[q]);
        srv_request_free(&req);
        return fail(r, 400, "invalid_request_error", code, param, msg);
    }
    return generate(r, kind, &req, ids, n_ids, n_prompts);
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
    {"/apply-template", SRV_EP_APPLY_TEMPLATE, true},
};

/* The route of `path`; *model: for /v1/models/{id}, where the id starts. */
static const route *find_route(const char *path, const char **model) {
    *model = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        size_t n = strlen(routes[i].path);
        if (strncmp(path, routes[i].path, n)) continue;
        if (!path[n]) return &routes[i];
        if (routes[i].ep == SRV_EP_MODELS && path[n] == '/' && path[n + 1]) {
            *model = path + n + 1;
            return &routes[i];
        }
    }
    return NULL;
}

static json_t *model_json(srv_server *s) {
    return json_pack("{s:s, s:s, s:I, s:s, s:{s:i, s:i}}", "id", s->model_id, "object", "model", "created",
                     (json_int_t)s->created, "owned_by", "trinity", "meta", "n_ctx", (int)s->eng.n_ctx, "n_vocab",
                     (int)s->eng.n_vocab);
}

/* GET /v1/models, and GET /v1/models/{id} (the OpenAI clients'
 * models.retrieve): the model, or OpenAI's 404 for any other id. */
static bool handle_models(conn_req *r, const char *model) {
    srv_server *s = r->s;
    if (!model) return reply_json(r, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_json(s)));
    char id[512];
    if (!http1_percent_decode(model, strlen(model), id, sizeof id) || strcmp(id, s->model_id)) {
        srv_error e;
        srv_error_set(&e, 404, "invalid_request_error", "model_not_found", "model",
                      "The model '%.200s' does not exist: this server serves '%s'", model, s->model_id);
        return reply_error(r, &e);
    }
    return reply_json(r, 200, model_json(s));
}

enum { ANSWERED, BODY_FOLLOWS, FAILED };
#define ANSWER(sent) ((sent) ? ANSWERED : FAILED)

/* The request's head is in: anything that can be refused without the body
 * is refused here, and GET requests are answered. */
static int first_call(conn_req *r) {
    srv_server *s = r->s;
    const char *method = r->method, *model;
    const route *rt = find_route(r->path, &model);
    r->ep = rt ? rt->ep : SRV_EP_OTHER;
    char msg[256];
    if (!rt) {
        snprintf(msg, sizeof msg, "no such endpoint: %.16s %.96s", method, r->path);
        return ANSWER(fail(r, 404, "invalid_request_error", "not_found", NULL, msg));
    }
    if (!strcmp(method, "OPTIONS")) { /* CORS preflight from browser-based clients */
        r->status = 204;
        return ANSWER(send_response(r->c, 204, NULL, NULL, 0,
                                    rt->post ? "Access-Control-Allow-Methods: POST, OPTIONS\r\n"
                                               "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"
                                             : "Access-Control-Allow-Methods: GET, OPTIONS\r\n"
                                               "Access-Control-Allow-Headers: Authorization, Content-Type\r\n"));
    }
    bool method_ok = rt->post ? !strcmp(method, "POST") : (!strcmp(method, "GET") || !strcmp(method, "HEAD"));
    if (!method_ok) {
        snprintf(msg, sizeof msg, "%.16s is not allowed on %.96s: use %s", method, r->path, rt->post ? "POST" : "GET");
        return ANSWER(fail(r, 405, "invalid_request_error", "method_not_allowed", NULL, msg));
    }
    if (rt->ep != SRV_EP_HEALTH && !authorized(s, r->rq))
        return ANSWER(fail(r, 401, "invalid_request_error", "invalid_api_key", NULL,
                           "invalid or missing API key: send the header 'Authorization: Bearer <key>'"));
    pthread_mutex_lock(&s->mu);
    bool ready = s->ready, stopping = s->stopping;
    pthread_mutex_unlock(&s->mu);
    if (stopping && rt->ep != SRV_EP_METRICS)
        return ANSWER(fail(r, 503, "server_error", "shutting_down", NULL, "the server is shutting down"));
    if (!ready && rt->ep != SRV_EP_METRICS)
        return ANSWER(fail(r, 503, "server_error", "model_loading", NULL, "the model is loading; retry shortly"));
    if (rt->post) {
        if (r->rq->content_length > s->cfg.max_body) {
            snprintf(msg, sizeof msg, "the request body is %llu bytes, over the limit of %zu (--max-body)",
                     (unsigned long long)r->rq->content_length, s->cfg.max_body);
            return ANSWER(fail(r, 413, "invalid_request_error", "request_too_large", NULL, msg));
        }
        return BODY_FOLLOWS;
    }
    switch (rt->ep) {
    case SRV_EP_HEALTH: {
        char *b = strdup("{\"status\":\"ok\"}");
        return ANSWER(b && reply(r, 200, "application/json", b, strlen(b)));
    }
    case SRV_EP_METRICS: {
        srv_buf out = {0};
        if (!srv_metrics_render(&s->metrics, &out)) {
            srv_buf_free(&out);
            return FAILED;
        }
        return ANSWER(reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", out.p, out.len));
    }
    case SRV_EP_MODELS: return ANSWER(handle_models(r, model));
    default: return FAILED;
    }
}

/* ------------------------------------------------------ reading requests */

/* Read the next request's head; rq's strings point into *head (malloc'ed).
 * 1: a request; 0: the connection ends quietly (idle, closed by the client,
 * evicted); -1: an error was answered and the connection ends.
 *
 * Waiting for a request's first byte is bounded by --idle-timeout; from
 * that byte on, the whole head must arrive within --header-timeout, however
 * it trickles. */
static int read_head(conn *c, http1_request *rq, char **head) {
    srv_server *s = c->s;
    double deadline = srv_now() + s->cfg.idle_timeout;
    bool started = false;
    http1_error e;
    for (;;) {
        size_t have = c->len - c->off;
        if (have && !started) {
            started = true;
            deadline = srv_now() + s->cfg.header_timeout;
            if (!set_state(c, CONN_HEAD)) return 0;
        }
        if (have) {
            long end = http1_head_end(c->buf + c->off, have, &e);
            if (end > (long)s->cfg.max_header || (end == 0 && have >= s->cfg.max_header)) {
                char msg[160];
                snprintf(msg, sizeof msg, "the request head is over the limit of %zu bytes (--max-header)",
                         s->cfg.max_header);
                protocol_error(c, 431, "headers_too_large", msg);
                return -1;
            }
            if (end < 0) {
                protocol_error(c, e.status, protocol_code(e.status), e.msg);
                return -1;
            }
            if (end > 0) {
                if (!(*head = malloc((size_t)end + 1))) return 0;
                memcpy(*head, c->buf + c->off, (size_t)end);
                (*head)[end] = '\0';
                c->off += (size_t)end;
                if (http1_parse_head(*head, (size_t)end, rq, &e)) return 1;
                protocol_error(c, e.status, protocol_code(e.status), e.msg);
                return -1;
            }
        }
        if (c->eof) return 0; /* nothing, or a part of a head, then the end */
        if (c->off) {
            memmove(c->buf, c->buf + c->off, have);
            c->len = have;
            c->off = 0;
        }
        long n = conn_recv(c, deadline);
        if (n == -1) {
            if (!started) return 0; /* idle too long: close quietly */
            char msg[160];
            snprintf(msg, sizeof msg, "the request head was not complete within %g s of its first byte (--header-timeout)",
                     s->cfg.header_timeout);
            protocol_error(c, 408, "request_timeout", msg);
            return -1;
        }
        if (n == -2) return 0;
    }
}

/* Read the body rq announces into body. 1: all of it; 0: the client went
 * away; -1: e says what is wrong with it (413, 400, 408). Each read waits at
 * most --idle-timeout, and the whole body must arrive before the request's
 * deadline (--timeout). */
static int read_body(conn *c, const http1_request *rq, srv_buf *body, double deadline, http1_error *e) {
    srv_server *s = c->s;
    if (!set_state(c, CONN_BODY)) return 0;
    if (rq->expect_continue && !conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25)) return 0;
    http1_chunked ch = {0};
    for (;;) {
        size_t have = c->len - c->off;
        if (rq->chunked) {
            long k = http1_chunked_feed(&ch, c->buf + c->off, have, body, s->cfg.max_body, s->cfg.max_header, e);
            if (k < 0) return -1;
            c->off += (size_t)k;
            if (ch.done) return 1;
        } else {
            uint64_t want = rq->content_length - body->len;
            size_t take = have < want ? have : (size_t)want;
            if (!srv_buf_append(body, c->buf + c->off, take)) {
                snprintf(e->msg, sizeof e->msg, "out of memory for the request body");
                e->status = 413;
                return -1;
            }
            c->off += take;
            if (body->len == rq->content_length) return 1;
        }
        if (c->eof) return 0; /* the body was cut short */
        c->off = c->len = 0;  /* all used */
        double t = srv_now() + s->cfg.idle_timeout;
        long n = conn_recv(c, deadline > 0 && deadline < t ? deadline : t);
        if (n == -1) {
            e->status = 408;
            snprintf(e->msg, sizeof e->msg, "the request body stopped arriving (--idle-timeout %d s, --timeout)",
                     s->cfg.idle_timeout);
            return -1;
        }
        if (n == -2) return 0;
    }
}

/* One request, its head read: check it, read its body, answer. False: the
 * connection ends (after an error, on Connection: close, a client gone). */
static bool serve_request(conn *c, const http1_request *rq) {
    srv_server *s = c->s;
    conn_req r = {.s = s, .c = c, .ep = SRV_EP_OTHER, .method = rq->method, .path = rq->path, .rq = rq,
                  .t0 = srv_now(), .status = 500};
    c->minor = rq->minor;
    c->keep_alive = rq->keep_alive;
    c->head_only = !strcmp(rq->method, "HEAD");
    c->body_unread = rq->chunked || rq->content_length > 0;
    bool ok = false;
    switch (first_call(&r)) {
    case ANSWERED: ok = true; break;
    case FAILED: ok = false; break;
    case BODY_FOLLOWS: {
        http1_error e;
        double deadline = s->cfg.request_timeout > 0 ? r.t0 + s->cfg.request_timeout : 0;
        int got = read_body(c, rq, &r.body, deadline, &e);
        if (got == 1) {
            c->body_unread = false;
            ok = set_state(c, CONN_BUSY) &&
                 (r.ep == SRV_EP_APPLY_TEMPLATE
                      ? handle_apply_template(&r)
                      : handle_generate(&r, r.ep == SRV_EP_CHAT ? SRV_KIND_CHAT : SRV_KIND_COMPLETION));
        } else if (got < 0) {
            c->keep_alive = false;
            c->linger = true;
            fail(&r, e.status, "invalid_request_error", protocol_code(e.status), NULL, e.msg);
        } else {
            r.status = 499; /* the client left before its body was in */
        }
        break;
    }
    }
    if (c->broken && r.status == 200) r.status = 499; /* nginx's "client closed request" */
    double dt = srv_now() - r.t0;
    srv_metrics_request(&s->metrics, r.ep, r.status, dt);
    if (r.busy) {
        pthread_mutex_lock(&s->mu);
        s->n_busy--;
        pthread_cond_broadcast(&s->idle);
        pthread_mutex_unlock(&s->mu);
    }
    if (s->cfg.log_requests)
        fprintf(stderr, "trinity serve: %.16s %.96s %d %.3f s\n", r.method, r.path, r.status, dt);
    srv_buf_free(&r.body);
    return ok && c->keep_alive && !c->broken;
}

/* Close after an error answer: stop sending, then read and drop what the
 * client still sends for a moment, so that our close does not turn into a
 * reset that destroys the answer before the client has read it (nginx's
 * lingering close). */
static void close_gracefully(int fd) {
    shutdown(fd, SHUT_WR);
    double until = srv_now() + 2;
    size_t dropped = 0;
    char sink[4096];
    while (dropped < (1u << 20)) {
        double left = until - srv_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0) break;
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) break;
        if (n > 0) dropped += (size_t)n;
    }
}

typedef struct conn_start {
    srv_server *s;
    int slot, fd;
} conn_start;

static void *conn_main(void *arg) {
    conn_start a = *(conn_start *)arg;
    free(arg);
    srv_server *s = a.s;
    conn c = {.s = s, .slot = a.slot, .fd = a.fd, .minor = 1, .keep_alive = true};
    c.cap = s->cfg.max_header + (16u << 10);
    c.buf = malloc(c.cap);
    int one = 1;
    setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* SSE events go out as they come */
    struct timeval tv = {.tv_sec = s->cfg.idle_timeout};
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    while (c.buf && set_state(&c, CONN_IDLE)) {
        http1_request rq;
        char *head = NULL;
        int got = read_head(&c, &rq, &head);
        bool more = got == 1 && set_state(&c, CONN_BUSY) && serve_request(&c, &rq);
        free(head);
        if (!more) break;
    }
    if (c.linger && !c.broken) close_gracefully(c.fd);
    free(c.buf);
    pthread_mutex_lock(&s->mu);
    conn_slot *sl = &s->slots[c.slot];
    if (!sl->evicted) s->n_live--;
    close(c.fd); /* under the lock: the acceptor never shuts down a reused descriptor */
    *sl = (conn_slot){.state = CONN_FREE, .fd = -1};
    s->n_open--;
    srv_metrics_connections(&s->metrics, s->n_live, 0, 0);
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ------------------------------------------------------------- accepting */

/* With mu held, at the cap: shut down the connection that has waited
 * longest without completing a request: idle or sending its head first,
 * then one still sending its body. False: every one is busy with a request. */
static bool evict_one(srv_server *s) {
    int best = -1;
    for (int pass = 0; pass < 2 && best < 0; pass++)
        for (int i = 0; i < s->n_table; i++) {
            const conn_slot *sl = &s->slots[i];
            bool fits = pass == 0 ? sl->state == CONN_IDLE || sl->state == CONN_HEAD : sl->state == CONN_BODY;
            if (fits && !sl->evicted && (best < 0 || sl->since < s->slots[best].since)) best = i;
        }
    if (best < 0) return false;
    s->slots[best].evicted = true;
    shutdown(s->slots[best].fd, SHUT_RDWR); /* its thread sees the end and closes it */
    s->n_live--;
    srv_metrics_connections(&s->metrics, s->n_live, 1, 0);
    return true;
}

typedef struct lingering {
    int fd;
    double until;
} lingering;

/* No room even after eviction: a 503 the client can read (it is in the
 * socket before we stop sending), then a graceful close by the acceptor. */
static void refuse(srv_server *s, int fd, lingering *lg, int *n_lg) {
    static const char body[] = "{\"error\":{\"message\":\"the server is at its connection limit "
                               "(--max-connections) and every connection is busy with a request; retry "
                               "shortly\",\"type\":\"server_error\",\"param\":null,\"code\":\"server_busy\"}}";
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    if (send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {} /* a full buffer: it gets the close */
    shutdown(fd, SHUT_WR);
    pthread_mutex_lock(&s->mu);
    srv_metrics_connections(&s->metrics, s->n_live, 0, 1);
    pthread_mutex_unlock(&s->mu);
    if (*n_lg < N_LINGER) lg[(*n_lg)++] = (lingering){fd, srv_now() + 2};
    else close(fd);
}

static void admit(srv_server *s, int fd, lingering *lg, int *n_lg) {
    pthread_mutex_lock(&s->mu);
    if (s->n_live >= s->cfg.max_connections) evict_one(s);
    int slot = -1;
    if (s->n_live < s->cfg.max_connections)
        for (int i = 0; i < s->n_table && slot < 0; i++)
            if (s->slots[i].state == CONN_FREE) slot = i;
    conn_start *a = slot >= 0 ? malloc(sizeof *a) : NULL;
    pthread_t t;
    if (a) {
        *a = (conn_start){s, slot, fd};
        s->slots[slot] = (conn_slot){.state = CONN_IDLE, .fd = fd, .since = srv_now()};
        s->n_live++;
        s->n_open++;
        if (pthread_create(&t, &s->thread_attr, conn_main, a) != 0) {
            free(a);
            a = NULL;
            s->slots[slot] = (conn_slot){.state = CONN_FREE, .fd = -1};
            s->n_live--;
            s->n_open--;
        }
    }
    if (a) srv_metrics_connections(&s->metrics, s->n_live, 0, 0);
    pthread_mutex_unlock(&s->mu);
    if (!a) refuse(s, fd, lg, n_lg);
}

static void *acceptor_main(void *arg) {
    srv_server *s = arg;
    lingering lg[N_LINGER];
    int n_lg = 0;
    struct pollfd pf[2 + N_LINGER];
    for (;;) {
        pf[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        pf[1] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        for (int i = 0; i < n_lg; i++) pf[2 + i] = (struct pollfd){.fd = lg[i].fd, .events = POLLIN};
        int polled = n_lg;
        if (poll(pf, (nfds_t)(2 + polled), polled ? 250 : -1) < 0 && errno != EINTR) break;
        if (pf[0].revents) break;
        /* Refused connections: drop what they send until they close, or 2 s. */
        double now = srv_now();
        for (int i = polled - 1; i >= 0; i--) {
            bool done = now > lg[i].until;
            if (pf[2 + i].revents) {
                char sink[4096];
                ssize_t k = recv(lg[i].fd, sink, sizeof sink, MSG_DONTWAIT);
                if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) done = true;
            }
            if (done) {
                close(lg[i].fd);
                lg[i] = lg[--n_lg];
            }
        }
        if (!(pf[1].revents & POLLIN)) continue;
        for (int k = 0; k < 16; k++) {
            int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                admit(s, fd, lg, &n_lg);
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                poll(NULL, 0, 50); /* out of descriptors: let connections close, do not spin */
            break;
        }
    }
    for (int i = 0; i < n_lg; i++) close(lg[i].fd);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

static int listen_on(const struct addrinfo *ai) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 512)) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int bound_port(int fd) {
    struct sockaddr_storage a;
    socklen_t n = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &n)) return -1;
    return a.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&a)->sin6_port)
                                   : ntohs(((struct sockaddr_in *)&a)->sin_port);
}

tr_status srv_start(const srv_config *cfg, srv_server **out, tr_error *err) {
    *out = NULL;
    if (cfg->port < 0 || cfg->port > 65535) return tr_err_set(err, TR_ERR_ARG, "--port %d: must be 0..65535", cfg->port);
    if (cfg->idle_timeout < 1) return tr_err_set(err, TR_ERR_ARG, "--idle-timeout %d: must be at least 1 second", cfg->idle_timeout);
    if (!(cfg->header_timeout > 0)) return tr_err_set(err, TR_ERR_ARG, "--header-timeout %g: must be more than 0 seconds", cfg->header_timeout);
    if (cfg->max_connections < 1) return tr_err_set(err, TR_ERR_ARG, "--max-connections %d: must be at least 1", cfg->max_connections);
    if (cfg->max_header < 1024) return tr_err_set(err, TR_ERR_ARG, "--max-header %zu: must be at least 1024", cfg->max_header);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    char port[8];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai || !ai) return tr_err_set(err, TR_ERR_ARG, "--host %s: %s", cfg->host, gai_strerror(gai));
    int lfd = listen_on(ai);
    int lerr = errno;
    freeaddrinfo(ai);
    if (lfd < 0) return tr_err_set(err, TR_ERR_IO, "cannot listen on %s:%d: %s", cfg->host, cfg->port, strerror(lerr));

    srv_server *s = calloc(1, sizeof *s);
    int n_table = cfg->max_connections + cfg->max_connections / 2 + 16;
    if (s) s->slots = calloc((size_t)n_table, sizeof *s->slots);
    if (!s || !s->slots || pipe2(s->wake, O_CLOEXEC)) {
        if (s) free(s->slots);
        free(s);
        close(lfd);
        return tr_err_set(err, TR_ERR_NOMEM, "out of memory");
    }
    s->cfg = *cfg;
    s->host = strdup(cfg->host);
    s->model_id = strdup(cfg->model_id);
    s->api_key = dup_or_null(cfg->api_key);
    s->created = srv_unix_time();
    s->listen_fd = lfd;
    s->port = bound_port(lfd);
    s->n_table = n_table;
    for (int i = 0; i < n_table; i++) s->slots[i].fd = -1;
    srv_metrics_init(&s->metrics);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->idle, NULL);
    pthread_attr_init(&s->thread_attr);
    pthread_attr_setdetachstate(&s->thread_attr, PTHREAD_CREATE_DETACHED);
    json_object_seed(0); /* before any thread builds a JSON object */
    if (pthread_create(&s->acceptor, NULL, acceptor_main, s)) {
        srv_free(s);
        return tr_err_set(err, TR_ERR_IO, "cannot start the acceptor thread");
    }
    s->acceptor_started = true;
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
    if (!s || s->stopped) return;
    s->stopped = true;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->mu);
    /* No new connections. */
    if (s->acceptor_started) {
        if (write(s->wake[1], "x", 1) < 0) {} /* a full pipe already wakes it */
        pthread_join(s->acceptor, NULL);
        s->acceptor_started = false;
    }
    close(s->listen_fd);
    s->listen_fd = -1;
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
    /* Close the rest (idle keep-alive connections, stuck writers) and wait
     * for every connection thread: they use the server until they end. */
    for (int i = 0; i < s->n_table; i++)
        if (s->slots[i].state != CONN_FREE) shutdown(s->slots[i].fd, SHUT_RDWR);
    while (s->n_open > 0) pthread_cond_wait(&s->idle, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

void srv_free(srv_server *s) {
    if (!s) return;
    srv_stop(s);
    srv_sched_free(s->sched);
    srv_metrics_destroy(&s->metrics);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->idle);
    pthread_attr_destroy(&s->thread_attr);
    close(s->wake[0]);
    close(s->wake[1]);
    free(s->slots);
    free(s->host);
    free(s->model_id);
    free(s->api_key);
    free(s);
}
