/* The HTTP layer against hostile and unusual clients, over raw sockets on
 * 127.0.0.1, with the scripted engine (fake_engine.h) in place of a model:
 * half-close, malformed and conflicting framing (request smuggling),
 * unsupported transfer codings, slowloris and idle floods at the connection
 * cap, pipelining, HTTP/1.0, chunked bodies with extensions and trailers,
 * line folding and bare LF, TLS and HTTP/2 on the plain port, Expect.
 *
 * Every read has a deadline of a few seconds, and the tests that measure
 * time (a trickled head, an answer "at once") assert it, so a server that
 * hangs fails here instead of stalling ctest. */
#define _GNU_SOURCE
#include "server/fake_engine.h"
#include "tt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>

#define READ_SECONDS 5.0 /* the longest any test waits for bytes */

/* ------------------------------------------------------------ a raw client */

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = (long)READ_SECONDS};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool put_n(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0) return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

static bool put(int fd, const char *s) { return put_n(fd, s, strlen(s)); }

/* What a connection gave back, and how it ended. */
typedef struct got {
    char *p;
    size_t n;
    bool eof;     /* the server closed (FIN) */
    bool reset;   /* the connection was reset */
    double secs;  /* until it ended, or the deadline */
} got;

static void got_free(got *g) { free(g->p); }

/* Read until the server closes, resets, or `max_s` seconds pass. */
static got slurp(int fd, double max_s) {
    got g = {.p = malloc(1 << 16)};
    size_t cap = 1 << 16;
    double t0 = tt_now();
    for (;;) {
        double left = t0 + max_s - tt_now();
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) <= 0) break;
        if (g.n + 4096 > cap) g.p = realloc(g.p, cap *= 2);
        ssize_t k = recv(fd, g.p + g.n, cap - g.n - 1, 0);
        if (k > 0) {
            g.n += (size_t)k;
            continue;
        }
        if (k == 0) g.eof = true;
        else g.reset = errno == ECONNRESET;
        break;
    }
    g.p[g.n] = '\0';
    g.secs = tt_now() - t0;
    return g;
}

/* Send raw bytes on a new connection (then half-close when asked), read
 * what comes back. */
static got exchange(int port, const char *raw, size_t n, bool half_close, double max_s) {
    int fd = dial(port);
    put_n(fd, raw, n);
    if (half_close) shutdown(fd, SHUT_WR);
    got g = slurp(fd, max_s);
    close(fd);
    return g;
}

static got exchange_s(int port, const char *raw) { return exchange(port, raw, strlen(raw), false, READ_SECONDS); }

/* One response out of a byte stream. */
typedef struct hresp {
    int status;
    char head[2048];
    char body[1 << 15];
    size_t used; /* bytes of the stream it took; 0: incomplete */
} hresp;

/* Parse the response starting at p[0..n): status line, headers, then a
 * Content-Length body, a chunked one, or (HTTP/1.0 streams) the rest. */
static void parse_resp(const char *p, size_t n, bool no_body, hresp *r) {
    memset(r, 0, sizeof *r);
    const char *e = memmem(p, n, "\r\n\r\n", 4);
    if (!e || sscanf(p, "HTTP/1.%*d %d", &r->status) != 1) return;
    size_t hn = (size_t)(e - p);
    snprintf(r->head, sizeof r->head, "%.*s", (int)hn, p);
    const char *b = e + 4, *end = p + n;
    if (no_body) {
        r->used = (size_t)(b - p);
        return;
    }
    const char *cl = strcasestr(r->head, "\nContent-Length:");
    if (cl) {
        size_t len = strtoul(cl + 16, NULL, 10);
        if ((size_t)(end - b) < len || len >= sizeof r->body) return;
        memcpy(r->body, b, len);
        r->used = (size_t)(b - p) + len;
    } else if (strcasestr(r->head, "\nTransfer-Encoding: chunked")) {
        size_t o = 0;
        for (;;) {
            char *next;
            size_t len = strtoul(b, &next, 16);
            const char *nl = memmem(next, (size_t)(end - next), "\r\n", 2);
            if (!nl || (size_t)(end - nl) < len + 4 || o + len >= sizeof r->body) return;
            memcpy(r->body + o, nl + 2, len);
            o += len;
            b = nl + 2 + len + 2;
            if (!len) break;
        }
        r->used = (size_t)(b - p);
    } else {
        size_t len = (size_t)(end - b) < sizeof r->body - 1 ? (size_t)(end - b) : sizeof r->body - 1;
        memcpy(r->body, b, len);
        r->used = n;
    }
}

/* How many responses (status lines) are in g. */
static int count_status_lines(const got *g) {
    int k = 0;
    for (const char *q = g->p; (q = strstr(q, "HTTP/1.1 ")); q++)
        if (q == g->p || q[-1] == '\n') k++;
    return k;
}

/* The one response g holds: exactly one status line, the server closed
 * (never reset), an OpenAI-style error body when it is an error. */
static void check_single_error(const got *g, int status, const char *code) {
    hresp r;
    parse_resp(g->p, g->n, false, &r);
    TT_CHECK_EQ_INT(r.status, status);
    TT_CHECK_EQ_INT(count_status_lines(g), 1);
    TT_CHECK(r.used == g->n); /* nothing after the response */
    TT_CHECK(g->eof && !g->reset);
    TT_CHECK(strcasestr(r.head, "Connection: close") != NULL);
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *err = json_object_get(o, "error");
    TT_CHECK(json_is_string(json_object_get(err, "message")));
    if (code) TT_CHECK_STR(json_string_value(json_object_get(err, "code")), code);
    if (r.status != status || !json_is_object(err)) fprintf(stderr, "    got: %.400s\n", g->p);
    json_decref(o);
}

static const char COMPLETION[] = "{\"prompt\":\"a\",\"max_tokens\":3}";

static char *post_raw(const char *path, const char *extra_headers, const char *body) {
    char *s = NULL;
    if (asprintf(&s, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 path, extra_headers, strlen(body), body) < 0)
        return NULL;
    return s;
}

/* ------------------------------------------------------------------ servers */

static srv_server *serve(srv_config *c, fake *f, int n_seq, int n_ctx, useconds_t delay) {
    tr_error err = {{0}};
    srv_server *s = NULL;
    c->port = 0;
    c->log_requests = false;
    c->model_id = "gemma";
    TT_CHECK(srv_start(c, &s, &err) == TR_OK);
    memset(f, 0, sizeof *f);
    f->n_seq = n_seq;
    f->delay = delay;
    srv_engine e = fake_engine(f, n_ctx);
    TT_CHECK(srv_set_engine(s, &e, &err) == TR_OK);
    return s;
}

static long metric(int port, const char *name) {
    int fd = dial(port);
    put(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    got g = slurp(fd, READ_SECONDS);
    close(fd);
    long v = -1;
    for (char *m = g.p; (m = strstr(m, name)); m++)
        if ((m == g.p || m[-1] == '\n') && m[strlen(name)] == ' ') {
            v = atol(m + strlen(name) + 1);
            break;
        }
    got_free(&g);
    return v;
}

static bool await_metric(int port, const char *name, long want, double max_s) {
    for (double t0 = tt_now(); tt_now() - t0 < max_s; usleep(20000))
        if (metric(port, name) == want) return true;
    return metric(port, name) == want;
}

/* Read a stream until its first generated text. */
static bool await_hello(int fd) {
    char buf[4096];
    size_t n = 0;
    double t0 = tt_now();
    while (!memmem(buf, n, "Hello", 5) && n < sizeof buf && tt_now() - t0 < READ_SECONDS) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t k = recv(fd, buf + n, sizeof buf - n, 0);
        if (k <= 0) break;
        n += (size_t)k;
    }
    return memmem(buf, n, "Hello", 5) != NULL;
}

static fake F;
static srv_server *S;
static int P;

/* ------------------------------------------------------------------- tests */

TT_TEST(half_closed_request_is_answered) {
    srv_config c = srv_default_config();
    c.n_slots = 2;
    S = serve(&c, &F, 2, 64, 0);
    P = srv_port(S);
    /* Sent, then shutdown(SHUT_WR): answered in full, then closed. */
    char *req = post_raw("/v1/completions", "", COMPLETION);
    for (int i = 0; i < 20; i++) { /* the old failure was intermittent: try it many times */
        got g = exchange(P, req, strlen(req), true, READ_SECONDS);
        hresp r;
        parse_resp(g.p, g.n, false, &r);
        TT_CHECK_EQ_INT(r.status, 200);
        TT_CHECK(strstr(r.body, "Hello world") != NULL);
        TT_CHECK(g.eof && !g.reset);
        got_free(&g);
    }
    free(req);
    /* A stream too: every event, then [DONE]. */
    req = post_raw("/v1/completions", "", "{\"prompt\":\"a\",\"max_tokens\":5,\"stream\":true}");
    got g = exchange(P, req, strlen(req), true, READ_SECONDS);
    hresp r;
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strstr(r.body, "data: [DONE]") != NULL && strstr(r.body, "\"finish_reason\":\"length\"") != NULL);
    got_free(&g);
    free(req);
    TT_CHECK_EQ_INT(metric(P, "trinity_requests_cancelled_total"), 0);
    TT_CHECK_EQ_INT(F.errors, 0);
}

TT_TEST(half_closed_request_waiting_for_a_slot_is_answered) {
    /* One slot, 20 ms a token: a stream holds the slot for ~0.6 s while a
     * half-closed request waits in the queue; it must be answered, not
     * cancelled. */
    static fake f;
    srv_config c = srv_default_config();
    c.n_slots = 1;
    srv_server *s = serve(&c, &f, 1, 4096, 20000);
    int port = srv_port(s);
    int holder = dial(port);
    char *req = post_raw("/v1/completions", "", "{\"prompt\":\"a\",\"max_tokens\":30,\"stream\":true}");
    put(holder, req);
    free(req);
    TT_CHECK(await_hello(holder));
    req = post_raw("/v1/completions", "", COMPLETION);
    got g = exchange(port, req, strlen(req), true, READ_SECONDS);
    free(req);
    hresp r;
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strstr(r.body, "Hello world") != NULL);
    got_free(&g);
    close(holder);
    TT_CHECK_EQ_INT(f.errors, 0);
    srv_free(s);
    fake_free(&f);
}

TT_TEST(reset_cancels_the_generation) {
    /* A reset (not a FIN) is a disconnect: the waiting request's generation
     * (4000 tokens at 20 ms: 80 s) stops at once. */
    static fake f;
    srv_config c = srv_default_config();
    c.n_slots = 1;
    srv_server *s = serve(&c, &f, 1, 4096, 20000);
    int port = srv_port(s);
    int fd = dial(port);
    char *req = post_raw("/v1/completions", "", "{\"prompt\":\"a\"}");
    put(fd, req);
    free(req);
    TT_CHECK(await_metric(port, "trinity_requests_in_flight", 1, READ_SECONDS));
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* RST */
    TT_CHECK(await_metric(port, "trinity_requests_cancelled_total", 1, 3));
    TT_CHECK(await_metric(port, "trinity_requests_in_flight", 0, 3));
    TT_CHECK(metric(port, "trinity_generated_tokens_total") < 1000);
    TT_CHECK_EQ_INT(f.errors, 0);
    srv_free(s);
    fake_free(&f);
}

TT_TEST(malformed_content_length_gets_one_400) {
    static const char *bad[] = {"abc", "-5", "+5", "99999999999999999999999", "5 5", "5, 5", "0x10", "", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char req[512];
        snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n%s", bad[i],
                 COMPLETION);
        got g = exchange_s(P, req);
        check_single_error(&g, 400, "bad_request");
        TT_CHECK(strstr(g.p, "Content-Length") != NULL); /* the message names the field */
        got_free(&g);
    }
    /* A well-formed length over --max-body is a 413, also once. */
    got g = exchange_s(P, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551615\r\n\r\n{}");
    check_single_error(&g, 413, "request_too_large");
    got_free(&g);
}

TT_TEST(conflicting_framing_gets_400) {
    static const char *heads[] = {
        /* two different lengths: which one a proxy used is the smuggling question */
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 29\r\nContent-Length: 5\r\n\r\n",
        /* the same twice: refused as well (nginx does) */
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 29\r\nContent-Length: 29\r\n\r\n",
        /* both a length and chunked */
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 29\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 29\r\n\r\n",
        /* chunked in HTTP/1.0 */
        "POST /v1/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        char req[512];
        snprintf(req, sizeof req, "%s%s", heads[i], COMPLETION);
        got g = exchange_s(P, req);
        check_single_error(&g, 400, "bad_request");
        got_free(&g);
    }
}

TT_TEST(unsupported_transfer_encoding_gets_501_at_once) {
    static const char *te[] = {"Transfer-Encoding: gzip\r\n", "Transfer-Encoding: identity\r\n",
                               "Transfer-Encoding: gzip, chunked\r\n", "Transfer-Encoding: chunked, chunked\r\n",
                               "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"};
    for (size_t i = 0; i < sizeof te / sizeof te[0]; i++) {
        char req[512];
        snprintf(req, sizeof req, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n%s\r\n1d\r\n%s\r\n0\r\n\r\n", te[i],
                 COMPLETION);
        got g = exchange_s(P, req);
        check_single_error(&g, 501, "not_implemented");
        TT_CHECK(g.secs < 1.5); /* at once, not after an idle timeout */
        got_free(&g);
    }
}

TT_TEST(models_retrieve) {
    static const char *ok[] = {"/v1/models/gemma", "/models/gemma", "/v1/models/gem%6Da"};
    for (size_t i = 0; i < 3; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", ok[i]);
        got g = exchange_s(P, req);
        hresp r;
        parse_resp(g.p, g.n, false, &r);
        TT_CHECK_EQ_INT(r.status, 200);
        json_t *o = json_loads(r.body, 0, NULL);
        TT_CHECK_STR(json_string_value(json_object_get(o, "id")), "gemma");
        TT_CHECK_STR(json_string_value(json_object_get(o, "object")), "model");
        TT_CHECK(json_is_integer(json_object_get(o, "created")) && json_is_string(json_object_get(o, "owned_by")));
        json_decref(o);
        got_free(&g);
    }
    got g = exchange_s(P, "GET /v1/models/gpt-4o HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    hresp r;
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 404);
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *e = json_object_get(o, "error");
    TT_CHECK_STR(json_string_value(json_object_get(e, "code")), "model_not_found");
    TT_CHECK_STR(json_string_value(json_object_get(e, "param")), "model");
    TT_CHECK_STR(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    TT_CHECK(strstr(json_string_value(json_object_get(e, "message")), "gpt-4o") != NULL);
    json_decref(o);
    got_free(&g);
    /* HEAD: the headers, no body. */
    g = exchange_s(P, "HEAD /v1/models/gemma HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    parse_resp(g.p, g.n, true, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(r.used == g.n && strtol(strcasestr(r.head, "Content-Length:") + 15, NULL, 10) > 0);
    got_free(&g);
}

TT_TEST(trickled_head_meets_the_header_timeout) {
    /* --header-timeout 1: a head sent one byte every 100 ms (it would take
     * 3.5 s) gets a 408 about a second after its first byte, whatever the
     * idle timeout (30 s) says. */
    static fake f;
    srv_config c = srv_default_config();
    c.header_timeout = 1;
    srv_server *s = serve(&c, &f, 1, 64, 0);
    int fd = dial(srv_port(s));
    const char *head = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaa\r\n\r\n";
    double t0 = tt_now();
    for (const char *p = head; *p; p++) {
        if (!put_n(fd, p, 1)) break;
        struct pollfd pl = {.fd = fd, .events = POLLIN};
        if (poll(&pl, 1, 100) > 0) break; /* the server has answered */
    }
    got g = slurp(fd, READ_SECONDS);
    double dt = tt_now() - t0;
    close(fd);
    check_single_error(&g, 408, "request_timeout");
    TT_CHECK(dt > 0.8 && dt < 2.5);
    got_free(&g);
    srv_free(s);
    fake_free(&f);
}

/* Slowloris: connections that each send one more header byte every
 * 250 ms, redialled when the server drops them, as the attack does. */
typedef struct loris {
    int port, n;
    volatile bool stop;
    int fds[32];
} loris;

static void *loris_main(void *p) {
    loris *l = p;
    for (int i = 0; i < l->n; i++) l->fds[i] = -1;
    while (!l->stop) {
        for (int i = 0; i < l->n; i++) {
            if (l->fds[i] < 0 && (l->fds[i] = dial(l->port)) >= 0) put(l->fds[i], "GET /health HTTP/1.1\r\nX-");
            if (l->fds[i] >= 0 && !put_n(l->fds[i], "a", 1)) {
                close(l->fds[i]);
                l->fds[i] = -1;
            }
        }
        usleep(250000);
    }
    for (int i = 0; i < l->n; i++)
        if (l->fds[i] >= 0) close(l->fds[i]);
    return NULL;
}

TT_TEST(slowloris_at_the_cap_does_not_starve_honest_clients) {
    /* --max-connections 4 against 12 trickling connections: every honest
     * request (health and a completion) is answered, none reset or refused. */
    static fake f;
    srv_config c = srv_default_config();
    c.max_connections = 4;
    c.header_timeout = 2;
    srv_server *s = serve(&c, &f, 1, 64, 0);
    int port = srv_port(s);
    loris l = {.port = port, .n = 12};
    pthread_t t;
    pthread_create(&t, NULL, loris_main, &l);
    usleep(600000); /* the tricklers hold the cap */
    int n_ok = 0;
    char *req = post_raw("/v1/completions", "Connection: close\r\n", COMPLETION);
    for (int i = 0; i < 10; i++) {
        got g = i % 3 == 2 ? exchange_s(port, req)
                           : exchange_s(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        hresp r;
        parse_resp(g.p, g.n, false, &r);
        n_ok += r.status == 200 && !g.reset;
        if (r.status != 200) fprintf(stderr, "    honest request %d: %.200s (reset %d)\n", i, g.p, g.reset);
        got_free(&g);
        usleep(150000);
    }
    free(req);
    l.stop = true;
    pthread_join(t, NULL);
    TT_CHECK_EQ_INT(n_ok, 10);
    TT_CHECK(metric(port, "trinity_connections_evicted_total") > 0);
    TT_CHECK_EQ_INT(metric(port, "trinity_connections_refused_total"), 0);
    srv_free(s);
    fake_free(&f);
}

TT_TEST(idle_connections_at_the_cap_make_room) {
    /* --max-connections 4, eight silent connections: each new one evicts the
     * oldest idle one (a clean close, not a reset), and honest requests are
     * answered at once instead of waiting for the idle timeout. */
    static fake f;
    srv_config c = srv_default_config();
    c.max_connections = 4;
    srv_server *s = serve(&c, &f, 1, 64, 0);
    int port = srv_port(s);
    int idle[8];
    for (int i = 0; i < 8; i++) {
        idle[i] = dial(port);
        usleep(20000);
    }
    for (int i = 0; i < 5; i++) {
        got g = exchange_s(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        hresp r;
        parse_resp(g.p, g.n, false, &r);
        TT_CHECK_EQ_INT(r.status, 200);
        TT_CHECK(g.secs < 1.5);
        got_free(&g);
    }
    int closed_cleanly = 0;
    for (int i = 0; i < 8; i++) {
        got g = slurp(idle[i], 0.3);
        closed_cleanly += g.eof && g.n == 0;
        got_free(&g);
        close(idle[i]);
    }
    TT_CHECK(closed_cleanly >= 4); /* the four oldest at least */
    TT_CHECK(metric(port, "trinity_connections_evicted_total") >= 4);
    srv_free(s);
    fake_free(&f);
}

TT_TEST(busy_connections_at_the_cap_get_503) {
    /* --max-connections 2, both generating: a third connection cannot evict
     * anyone and gets a readable 503 with Retry-After, not a reset. */
    static fake f;
    srv_config c = srv_default_config();
    c.max_connections = 2;
    c.n_slots = 2;
    srv_server *s = serve(&c, &f, 2, 4096, 20000);
    int port = srv_port(s);
    int a[2];
    char *req = post_raw("/v1/completions", "", "{\"prompt\":\"a\",\"stream\":true}");
    for (int i = 0; i < 2; i++) {
        a[i] = dial(port);
        put(a[i], req);
        TT_CHECK(await_hello(a[i]));
    }
    free(req);
    int fd = dial(port);
    put(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    got g = slurp(fd, READ_SECONDS);
    close(fd);
    check_single_error(&g, 503, "server_busy");
    TT_CHECK(strcasestr(g.p, "Retry-After: 1") != NULL);
    got_free(&g);
    for (int i = 0; i < 2; i++) close(a[i]);
    /* Once they are gone, the server takes connections again. */
    bool back = false;
    for (double t0 = tt_now(); !back && tt_now() - t0 < READ_SECONDS; usleep(50000)) {
        got h = exchange_s(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        back = strstr(h.p, "HTTP/1.1 200") == h.p;
        got_free(&h);
    }
    TT_CHECK(back);
    TT_CHECK(metric(port, "trinity_connections_refused_total") >= 1);
    srv_free(s);
    fake_free(&f);
}

TT_TEST(pipelined_requests_are_answered_in_order) {
    char *post = post_raw("/v1/completions", "", COMPLETION);
    char req[2048];
    snprintf(req, sizeof req,
             "GET /health HTTP/1.1\r\nHost: x\r\n\r\n%s"
             "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1d\r\n%s\r\n0\r\n\r\n"
             "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             post, COMPLETION);
    free(post);
    got g = exchange_s(P, req);
    const char *p = g.p;
    size_t left = g.n;
    static const char *want[] = {"\"status\":\"ok\"", "Hello world", "Hello world", "\"id\":\"gemma\""};
    for (int i = 0; i < 4; i++) {
        hresp r;
        parse_resp(p, left, false, &r);
        TT_CHECK_EQ_INT(r.status, 200);
        TT_CHECK(strstr(r.body, want[i]) != NULL);
        if (!r.used) break;
        p += r.used;
        left -= r.used;
    }
    TT_CHECK_EQ_INT(left, 0);
    TT_CHECK(g.eof);
    got_free(&g);
}

TT_TEST(http_1_0) {
    /* No Host needed; the connection closes after the answer. */
    got g = exchange_s(P, "GET /health HTTP/1.0\r\n\r\n");
    hresp r;
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strcasestr(r.head, "Connection: close") && g.eof && r.used == g.n);
    got_free(&g);
    /* Keep-alive when asked for: two requests on one connection. */
    g = exchange_s(P, "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /v1/models HTTP/1.0\r\n\r\n");
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strcasestr(r.head, "Connection: keep-alive") != NULL);
    hresp r2;
    parse_resp(g.p + r.used, g.n - r.used, false, &r2);
    TT_CHECK_EQ_INT(r2.status, 200);
    TT_CHECK(strstr(r2.body, "gemma") != NULL);
    got_free(&g);
    /* A stream without chunked coding: the body ends where the connection does. */
    g = exchange_s(P, "POST /v1/completions HTTP/1.0\r\nContent-Length: 43\r\n\r\n"
                      "{\"prompt\":\"a\",\"max_tokens\":3,\"stream\":true}");
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(!strcasestr(r.head, "Transfer-Encoding"));
    TT_CHECK(strstr(r.body, "Hello") && strstr(r.body, "data: [DONE]\n\n") && g.eof);
    got_free(&g);
}

TT_TEST(chunked_bodies_with_extensions_and_trailers) {
    /* {"prompt":"abc","max_tokens":3} in three chunks, with extensions,
     * a last-chunk extension and two trailer fields. */
    const char *req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n"
                      "a;name=value\r\n{\"prompt\":\r\n"
                      "6 ; quoted=\"a;b\"\r\n\"abc\",\r\n"
                      "F\r\n\"max_tokens\":3}\r\n"
                      "0;last\r\nX-Checksum: 1\r\nX-Other: two\r\n\r\n";
    got g = exchange_s(P, req);
    hresp r;
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    json_t *o = json_loads(r.body, 0, NULL);
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "prompt_tokens")), 3);
    json_decref(o);
    got_free(&g);
    /* Bare LF in the chunk framing, as in the head: accepted. */
    g = exchange_s(P, "POST /v1/completions HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\nConnection: close\n\n"
                      "1d\n{\"prompt\":\"a\",\"max_tokens\":3}\n0\n\n");
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    got_free(&g);
    /* A size that is not hex, data longer than its size: one 400 each. */
    g = exchange_s(P, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
    check_single_error(&g, 400, "bad_request");
    got_free(&g);
    g = exchange_s(P, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n");
    check_single_error(&g, 400, "bad_request");
    got_free(&g);
    /* Chunks over --max-body (8 MiB by default, 4 KiB here on a server of its own): 413 once. */
    static fake f;
    srv_config c = srv_default_config();
    c.max_body = 4096;
    srv_server *s = serve(&c, &f, 1, 64, 0);
    char *big = malloc(20000);
    int n = snprintf(big, 20000, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        n += snprintf(big + n, (size_t)(20000 - n), "400\r\n");
        memset(big + n, ' ', 1024);
        n += 1024;
        n += snprintf(big + n, (size_t)(20000 - n), "\r\n");
    }
    g = exchange(srv_port(s), big, (size_t)n, false, READ_SECONDS);
    check_single_error(&g, 413, "request_too_large");
    got_free(&g);
    free(big);
    srv_free(s);
    fake_free(&f);
}

TT_TEST(line_folding_and_line_endings) {
    /* Obsolete line folding: 400, never unfolded. */
    got g = exchange_s(P, "GET /health HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n");
    check_single_error(&g, 400, "bad_request");
    TT_CHECK(strstr(g.p, "folding") != NULL);
    got_free(&g);
    g = exchange_s(P, "GET /health HTTP/1.1\r\nHost: x\r\n\tX-Tab-Folded: a\r\n\r\n");
    check_single_error(&g, 400, "bad_request");
    got_free(&g);
    /* Bare LF line endings: accepted everywhere in the head, for GET and POST. */
    const char *lf[] = {"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n",
                        "GET /health HTTP/1.1\r\nHost: x\nConnection: close\r\n\n",
                        ("POST /v1/completions HTTP/1.1\nHost: x\nContent-Length: 29\nConnection: close\n\n"
                         "{\"prompt\":\"a\",\"max_tokens\":3}")};
    for (int i = 0; i < 3; i++) {
        g = exchange_s(P, lf[i]);
        hresp r;
        parse_resp(g.p, g.n, false, &r);
        TT_CHECK_EQ_INT(r.status, 200);
        got_free(&g);
    }
    /* A bare CR, a space before the colon, no Host, two Hosts: 400 each. */
    const char *bad[] = {"GET /health HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n",
                         "GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
                         "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
                         "GET /health HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
                         "GET  /health HTTP/1.1\r\nHost: x\r\n\r\n"};
    for (int i = 0; i < 5; i++) {
        g = exchange_s(P, bad[i]);
        check_single_error(&g, 400, "bad_request");
        got_free(&g);
    }
}

TT_TEST(tls_and_http2_on_the_plain_port_are_refused_at_once) {
    /* The start of a TLS 1.2/1.3 ClientHello: refused with a 400 at once
     * (no line ever ends in it, so waiting would be a 30 s hang). */
    static const unsigned char hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                                          0x6b, 0x2a, 0x11, 0x00, 0x0d, 0x0a, 0x0d, 0x0a, 0x42, 0x00};
    got g = exchange(P, (const char *)hello, sizeof hello, false, READ_SECONDS);
    check_single_error(&g, 400, "bad_request");
    TT_CHECK(g.secs < 1);
    got_free(&g);
    /* The HTTP/2 connection preface and a SETTINGS frame: 505, at once. */
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00";
    g = exchange(P, preface, sizeof preface - 1, false, READ_SECONDS);
    check_single_error(&g, 505, "http_version_not_supported");
    TT_CHECK(g.secs < 1);
    got_free(&g);
    /* HTTP/0.9 and noise. */
    g = exchange_s(P, "GET /health\r\n\r\n");
    check_single_error(&g, 400, "bad_request");
    got_free(&g);
    g = exchange(P, "\x00\x01\x02\x03", 4, false, READ_SECONDS);
    check_single_error(&g, 400, "bad_request");
    TT_CHECK(g.secs < 1);
    got_free(&g);
}

TT_TEST(expect_100_continue) {
    /* The interim 100 comes before the body is sent, then the answer. */
    int fd = dial(P);
    put(fd, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 29\r\n"
            "Connection: close\r\n\r\n");
    char buf[256] = {0};
    struct pollfd pl = {.fd = fd, .events = POLLIN};
    TT_CHECK(poll(&pl, 1, 1000) == 1);
    ssize_t k = recv(fd, buf, sizeof buf - 1, 0);
    TT_CHECK(k > 0 && !strncmp(buf, "HTTP/1.1 100 Continue\r\n\r\n", 25));
    put(fd, COMPLETION);
    got g = slurp(fd, READ_SECONDS);
    close(fd);
    hresp r;
    parse_resp(g.p, g.n, false, &r);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strstr(r.body, "Hello world") != NULL);
    got_free(&g);
    /* Any other expectation: 417. */
    g = exchange_s(P, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}");
    check_single_error(&g, 417, "expectation_failed");
    got_free(&g);
}

TT_TEST(oversized_head_gets_one_431) {
    char req[20000];
    int n = snprintf(req, sizeof req, "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(req + n, 'a', 17000);
    snprintf(req + n + 17000, sizeof req - (size_t)n - 17000, "\r\n\r\n");
    got g = exchange_s(P, req);
    check_single_error(&g, 431, "headers_too_large");
    got_free(&g);
    srv_free(S);
    TT_CHECK_EQ_INT(F.errors, 0);
    fake_free(&F);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    TT_RUN(half_closed_request_is_answered);
    TT_RUN(half_closed_request_waiting_for_a_slot_is_answered);
    TT_RUN(reset_cancels_the_generation);
    TT_RUN(malformed_content_length_gets_one_400);
    TT_RUN(conflicting_framing_gets_400);
    TT_RUN(unsupported_transfer_encoding_gets_501_at_once);
    TT_RUN(models_retrieve);
    TT_RUN(trickled_head_meets_the_header_timeout);
    TT_RUN(slowloris_at_the_cap_does_not_starve_honest_clients);
    TT_RUN(idle_connections_at_the_cap_make_room);
    TT_RUN(busy_connections_at_the_cap_get_503);
    TT_RUN(pipelined_requests_are_answered_in_order);
    TT_RUN(http_1_0);
    TT_RUN(chunked_bodies_with_extensions_and_trailers);
    TT_RUN(line_folding_and_line_endings);
    TT_RUN(tls_and_http2_on_the_plain_port_are_refused_at_once);
    TT_RUN(expect_100_continue);
    TT_RUN(oversized_head_gets_one_431);
    return TT_DONE();
}
