/* The whole server in-process over real sockets, with a scripted engine in
 * place of a model: routing, limits, auth, errors, responses, SSE streams,
 * stop strings, the queue and its 429, cancellation when a client leaves, and
 * shutdown. The scripted engine also checks every batch the scheduler builds
 * (positions follow on per sequence, ids in range), so a scheduling bug shows
 * up as a failed request. The script the engine follows: fake_engine.h. */
#define _GNU_SOURCE
#include "server/fake_engine.h"
#include "tt.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ------------------------------------------------------------- a client */

/* Every wait in this file has a deadline, so a server that stops answering
 * fails the test instead of hanging it until ctest's timeout: reads and
 * writes give up after this long (the slowest answer here takes a few
 * seconds). */
#define WAIT_SECONDS 60

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = WAIT_SECONDS};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const char *s, size_t n) {
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0) return;
        s += k;
        n -= (size_t)k;
    }
}

static void send_request(int fd, const char *method, const char *path, const char *auth, const char *body) {
    char head[512];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s%s%s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "",
                     body ? strlen(body) : 0);
    send_all(fd, head, (size_t)n);
    if (body) send_all(fd, body, strlen(body));
}

typedef struct resp {
    int status;
    char *head; /* status line and headers */
    char *body; /* de-chunked */
} resp;

static void resp_free(resp *r) { free(r->head); free(r->body); }

/* Read to EOF (or WAIT_SECONDS of silence) after the `n` bytes already read
 * into `got`, split head and body, undo chunked transfer coding. */
static resp read_resp_after(int fd, const char *got, size_t n) {
    size_t cap = 4096 + n, len = n;
    char *all = malloc(cap);
    if (n) memcpy(all, got, n);
    for (;;) {
        if (len + 2048 > cap) all = realloc(all, cap *= 2);
        ssize_t k = recv(fd, all + len, cap - len - 1, 0);
        if (k <= 0) break;
        len += (size_t)k;
    }
    all[len] = '\0';
    close(fd);
    resp r = {0};
    char *sep = strstr(all, "\r\n\r\n");
    if (!sep) {
        r.head = all;
        r.body = strdup("");
        return r;
    }
    *sep = '\0';
    r.head = strdup(all);
    sscanf(all, "HTTP/1.%*d %d", &r.status);
    char *b = sep + 4;
    if (strcasestr(r.head, "Transfer-Encoding: chunked")) {
        char *out = malloc(strlen(b) + 1);
        size_t o = 0;
        for (;;) {
            size_t n = strtoul(b, &b, 16);
            b = strstr(b, "\r\n");
            if (!n || !b) break;
            b += 2;
            memcpy(out + o, b, n);
            o += n;
            b += n + 2;
        }
        out[o] = '\0';
        r.body = out;
    } else {
        r.body = strdup(b);
    }
    free(all);
    return r;
}

static resp read_resp(int fd) { return read_resp_after(fd, NULL, 0); }

static resp call(int port, const char *method, const char *path, const char *auth, const char *body) {
    int fd = dial(port);
    send_request(fd, method, path, auth, body);
    return read_resp(fd);
}

#define KEY "sekret"

/* The error body of a response: checks OpenAI's shape, returns the message. */
static void check_error(resp *r, int status, const char *code, const char *needle) {
    TT_CHECK_EQ_INT(r->status, status);
    json_t *o = json_loads(r->body, 0, NULL);
    json_t *e = json_object_get(o, "error");
    TT_CHECK(json_is_string(json_object_get(e, "message")));
    TT_CHECK(json_is_string(json_object_get(e, "type")));
    TT_CHECK(json_object_get(e, "param") != NULL);
    if (code) TT_CHECK_STR(json_string_value(json_object_get(e, "code")), code);
    const char *m = json_string_value(json_object_get(e, "message"));
    TT_CHECK(m && strstr(m, needle));
    if (!m || !strstr(m, needle)) fprintf(stderr, "    body: %s\n", r->body);
    json_decref(o);
}

static srv_server *start(srv_config *c, tr_error *err) {
    srv_server *s = NULL;
    c->port = 0;
    c->log_requests = false;
    TT_CHECK(srv_start(c, &s, err) == TR_OK);
    return s;
}

/* Concatenate each choice's content over the SSE events; count events;
 * find each choice's finish. */
enum { SSE_CHOICES = 4 };
typedef struct sse_sum {
    char text[SSE_CHOICES][4096];
    char finish[SSE_CHOICES][16];
    int n_finish[SSE_CHOICES], n_role[SSE_CHOICES]; /* chunks with a finish_reason, with the role */
    int n_events, n_done;
    bool role_first, usage_seen, error_seen;
    long usage_prompt, usage_completion;
    bool malformed;
} sse_sum;

static void sse_choice(sse_sum *s, json_t *ch, bool chat) {
    json_int_t i = json_integer_value(json_object_get(ch, "index"));
    if (!json_is_integer(json_object_get(ch, "index")) || i < 0 || i >= SSE_CHOICES) {
        s->malformed = true;
        return;
    }
    json_t *d = chat ? json_object_get(ch, "delta") : ch;
    if (chat && json_object_get(d, "role")) {
        s->n_role[i]++;
        if (s->n_events == 0) s->role_first = true;
    }
    json_t *t = json_object_get(d, chat ? "content" : "text");
    if (json_is_string(t)) strncat(s->text[i], json_string_value(t), sizeof s->text[i] - strlen(s->text[i]) - 1);
    json_t *f = json_object_get(ch, "finish_reason");
    if (json_is_string(f)) {
        snprintf(s->finish[i], sizeof s->finish[i], "%s", json_string_value(f));
        s->n_finish[i]++;
    }
}

static sse_sum parse_sse(const char *body, bool chat) {
    sse_sum s = {0};
    const char *p = body;
    while (*p) {
        const char *end = strstr(p, "\n\n");
        if (!end || strncmp(p, "data: ", 6)) {
            s.malformed = true;
            break;
        }
        char *ev = strndup(p + 6, (size_t)(end - p - 6));
        if (strchr(ev, '\n')) s.malformed = true;
        if (!strcmp(ev, "[DONE]")) {
            s.n_done++;
        } else {
            json_t *o = json_loads(ev, 0, NULL);
            if (!o) s.malformed = true;
            if (s.n_done) s.malformed = true; /* nothing after [DONE] */
            if (json_object_get(o, "error")) s.error_seen = true;
            json_t *u = json_object_get(o, "usage");
            if (json_is_object(u)) {
                s.usage_seen = true;
                s.usage_prompt = (long)json_integer_value(json_object_get(u, "prompt_tokens"));
                s.usage_completion = (long)json_integer_value(json_object_get(u, "completion_tokens"));
            }
            json_t *chs = json_object_get(o, "choices");
            if (json_array_size(chs) > 1) s.malformed = true; /* one choice a chunk */
            for (size_t k = 0; k < json_array_size(chs); k++) sse_choice(&s, json_array_get(chs, k), chat);
            json_decref(o);
        }
        s.n_events++;
        free(ev);
        p = end + 2;
    }
    return s;
}

static long metric(int port, const char *name) {
    resp r = call(port, "GET", "/metrics", KEY, NULL);
    long v = -1;
    char *m = strstr(r.body, name);
    while (m && (m != r.body && m[-1] != '\n')) m = strstr(m + 1, name);
    if (m) v = atol(m + strlen(name) + 1);
    resp_free(&r);
    return v;
}

/* ---------------------------------------------------------------- tests */

static fake F1;
static srv_server *S1;
static int P1;

TT_TEST(health_before_and_after_the_model) {
    tr_error err = {{0}};
    srv_config c = srv_default_config();
    c.model_id = "gemma";
    c.api_key = KEY;
    c.n_slots = 2;
    c.max_body = 4096;
    S1 = start(&c, &err);
    P1 = srv_port(S1);
    TT_CHECK(P1 > 0);
    resp r = call(P1, "GET", "/health", NULL, NULL);
    check_error(&r, 503, "model_loading", "loading");
    resp_free(&r);
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\"}");
    TT_CHECK_EQ_INT(r.status, 503);
    resp_free(&r);
    F1.n_seq = 2;
    srv_engine e = fake_engine(&F1, 64);
    TT_CHECK(srv_set_engine(S1, &e, &err) == TR_OK);
    r = call(P1, "GET", "/health", NULL, NULL);
    TT_CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
}

TT_TEST(routing_auth_and_limits) {
    resp r = call(P1, "GET", "/v1/nothing", KEY, NULL);
    check_error(&r, 404, "not_found", "no such endpoint");
    resp_free(&r);
    r = call(P1, "GET", "/v1/chat/completions", KEY, NULL);
    check_error(&r, 405, "method_not_allowed", "GET is not allowed");
    TT_CHECK(strcasestr(r.head, "Allow: POST") != NULL);
    resp_free(&r);
    r = call(P1, "DELETE", "/v1/models", KEY, NULL);
    check_error(&r, 405, "method_not_allowed", "DELETE");
    resp_free(&r);
    r = call(P1, "GET", "/v1/models", NULL, NULL);
    check_error(&r, 401, "invalid_api_key", "API key");
    resp_free(&r);
    r = call(P1, "GET", "/v1/models", "wrong", NULL);
    check_error(&r, 401, "invalid_api_key", "API key");
    resp_free(&r);
    r = call(P1, "GET", "/v1/models", KEY, NULL);
    TT_CHECK_EQ_INT(r.status, 200);
    json_t *o = json_loads(r.body, 0, NULL);
    TT_CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "data"), 0), "id")), "gemma");
    json_decref(o);
    resp_free(&r);
    /* Over --max-body (4096): declared length refused before the body is read. */
    char *big = malloc(5001);
    memset(big, ' ', 5000);
    big[5000] = '\0';
    big[0] = '{';
    big[4999] = '}';
    r = call(P1, "POST", "/v1/completions", KEY, big);
    check_error(&r, 413, "request_too_large", "over the limit");
    resp_free(&r);
    free(big);
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\": ");
    check_error(&r, 400, NULL, "not valid JSON");
    resp_free(&r);
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\": \"hi\", \"model\": \"gpt-4o\"}");
    check_error(&r, 404, "model_not_found", "gpt-4o");
    resp_free(&r);
    /* 64 positions: a 70-byte prompt cannot fit. */
    r = call(P1, "POST", "/v1/completions", KEY,
             "{\"prompt\": \"0123456789012345678901234567890123456789012345678901234567890123456789\"}");
    check_error(&r, 400, "context_length_exceeded", "70 tokens");
    TT_CHECK(strstr(r.body, "64") != NULL);
    resp_free(&r);
}

TT_TEST(chat_with_stop_split_across_tokens) {
    resp r = call(P1, "POST", "/v1/chat/completions", KEY,
                  "{\"model\":\"gemma\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"</stop>\"}");
    TT_CHECK_EQ_INT(r.status, 200);
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(ch, "message"), "content")), "Hello world");
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    json_t *u = json_object_get(o, "usage");
    /* "<user>hi<assistant>" is 19 bytes = 19 tokens; 6 generated up to the ">" */
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 19);
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 6);
    TT_CHECK_STR(json_string_value(json_object_get(o, "object")), "chat.completion");
    TT_CHECK(json_is_string(json_object_get(o, "id")) && json_is_integer(json_object_get(o, "created")));
    json_decref(o);
    resp_free(&r);
}

TT_TEST(completion_lengths_eos_and_utf8) {
    resp r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"max_tokens\":3}");
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(ch, "text")), "Hello world");
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "length");
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")), 3);
    json_decref(o);
    resp_free(&r);
    /* max_tokens 7 ends between the euro sign's two bytes: the half is replaced. */
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"max_tokens\":7}");
    o = json_loads(r.body, 0, NULL);
    TT_CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "text")),
                 "Hello world</stop>\xEF\xBF\xBD");
    json_decref(o);
    resp_free(&r);
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"max_tokens\":9}");
    o = json_loads(r.body, 0, NULL);
    TT_CHECK_STR(json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "text")),
                 "Hello world</stop>\xE2\x82\xACx");
    json_decref(o);
    resp_free(&r);
    /* End of generation at once: it is counted as generated but is no text,
     * so it has no logprob entry. */
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"go!\",\"logprobs\":1}");
    o = json_loads(r.body, 0, NULL);
    ch = json_array_get(json_object_get(o, "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(ch, "text")), "");
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "stop");
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")), 1);
    json_t *lpt = json_object_get(json_object_get(ch, "logprobs"), "tokens");
    TT_CHECK(json_is_array(lpt) && json_array_size(lpt) == 0);
    json_decref(o);
    resp_free(&r);
    /* No max_tokens: runs until the 64-position context is full. */
    r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"abcd\"}");
    o = json_loads(r.body, 0, NULL);
    ch = json_array_get(json_object_get(o, "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "length");
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")), 61);
    json_decref(o);
    resp_free(&r);
}

/* Speculative decoding makes a step yield many tokens, its last step too:
 * every one reaches the response (streamed or not), as with one a step. */
TT_TEST(many_tokens_a_step_all_arrive) {
    const char *bodies[2] = {"{\"prompt\":\"abcd\",\"max_tokens\":30}",
                             "{\"prompt\":\"abcd\",\"max_tokens\":30,\"stream\":true}"};
    for (int b = 0; b < 2; b++) {
        char text[2][4096];
        for (int k = 0; k < 2; k++) {
            F1.per_step = k ? 20 : 1; /* 20 + 10: the last step yields 10 and ends the sequence */
            resp r = call(P1, "POST", "/v1/completions", KEY, bodies[b]);
            TT_CHECK_EQ_INT(r.status, 200);
            if (b == 0) {
                json_t *o = json_loads(r.body, 0, NULL);
                snprintf(text[k], sizeof text[k], "%s",
                         json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "text")));
                TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")),
                                30);
                json_decref(o);
            } else {
                sse_sum s = parse_sse(r.body, false);
                TT_CHECK(!s.malformed && s.n_finish[0] == 1);
                snprintf(text[k], sizeof text[k], "%s", s.text[0]);
            }
            resp_free(&r);
        }
        F1.per_step = 1;
        TT_CHECK(strlen(text[0]) > 20);
        TT_CHECK_STR(text[1], text[0]);
    }
    TT_CHECK_EQ_INT(F1.errors, 0);
}

/* A chat stream cut by a stop string, with usage, and a completion stream
 * of 9 tokens, each with n choices: every choice reads as it does alone
 * (its role first, its text, one finish), one [DONE]. */
static void check_streams(int n) {
    char body[256];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":[\"</stop>\"],"
             "\"stream\":true,\"n\":%d,\"stream_options\":{\"include_usage\":true}}", n);
    resp r = call(P1, "POST", "/v1/chat/completions", KEY, body);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strcasestr(r.head, "Content-Type: text/event-stream") != NULL);
    sse_sum s = parse_sse(r.body, true);
    TT_CHECK(!s.malformed && !s.error_seen && s.role_first);
    for (int i = 0; i < n; i++) {
        TT_CHECK_EQ_INT(s.n_role[i], 1);
        TT_CHECK_STR(s.text[i], "Hello world");
        TT_CHECK_STR(s.finish[i], "stop");
        TT_CHECK_EQ_INT(s.n_finish[i], 1);
    }
    TT_CHECK_EQ_INT(s.n_done, 1);
    TT_CHECK(s.usage_seen && s.usage_prompt == 19 && s.usage_completion == 6 * n);
    resp_free(&r);
    snprintf(body, sizeof body, "{\"prompt\":\"a\",\"max_tokens\":9,\"stream\":true,\"n\":%d}", n);
    r = call(P1, "POST", "/v1/completions", KEY, body);
    s = parse_sse(r.body, false);
    TT_CHECK(!s.malformed && !s.usage_seen);
    for (int i = 0; i < n; i++) {
        TT_CHECK_STR(s.text[i], "Hello world</stop>\xE2\x82\xACx");
        TT_CHECK_STR(s.finish[i], "length");
        TT_CHECK_EQ_INT(s.n_finish[i], 1);
    }
    TT_CHECK_EQ_INT(s.n_done, 1);
    resp_free(&r);
    TT_CHECK_EQ_INT(F1.errors, 0);
}

TT_TEST(streams) { check_streams(1); }

TT_TEST(n_choices_not_streamed) {
    /* Three choices, a seed: each its own job, seeds 10, 11, 12. */
    int first = F1.n_submitted;
    resp r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"max_tokens\":3,\"n\":3,\"seed\":10}");
    TT_CHECK_EQ_INT(r.status, 200);
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *chs = json_object_get(o, "choices");
    TT_CHECK_EQ_INT(json_array_size(chs), 3);
    for (int i = 0; i < 3; i++) {
        json_t *ch = json_array_get(chs, (size_t)i);
        TT_CHECK_EQ_INT(json_integer_value(json_object_get(ch, "index")), i);
        TT_CHECK_STR(json_string_value(json_object_get(ch, "text")), "Hello world");
        TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "length");
    }
    json_t *u = json_object_get(o, "usage");
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(u, "prompt_tokens")), 1); /* once, not per choice */
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(u, "completion_tokens")), 9);
    TT_CHECK_EQ_INT(F1.n_submitted - first, 3);
    for (int i = 0; i < 3; i++) TT_CHECK(F1.seeds[(first + i) % 64] == 10u + (unsigned)i);
    json_decref(o);
    resp_free(&r);
    /* Chat, a stop string and logprobs: every choice cut at its own stop,
     * with its own log-probabilities. */
    r = call(P1, "POST", "/v1/chat/completions", KEY,
             "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stop\":\"</stop>\",\"n\":2,\"logprobs\":true}");
    TT_CHECK_EQ_INT(r.status, 200);
    o = json_loads(r.body, 0, NULL);
    chs = json_object_get(o, "choices");
    TT_CHECK_EQ_INT(json_array_size(chs), 2);
    for (int i = 0; i < 2; i++) {
        json_t *ch = json_array_get(chs, (size_t)i);
        TT_CHECK_EQ_INT(json_integer_value(json_object_get(ch, "index")), i);
        TT_CHECK_STR(json_string_value(json_object_get(json_object_get(ch, "message"), "content")), "Hello world");
        TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "stop");
        TT_CHECK_EQ_INT(json_array_size(json_object_get(json_object_get(ch, "logprobs"), "content")), 3);
    }
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens")), 12);
    json_decref(o);
    resp_free(&r);
    TT_CHECK_EQ_INT(F1.errors, 0);
}

TT_TEST(n_choices_streamed) { check_streams(2); }

TT_TEST(one_failed_choice_fails_the_request) {
    /* seed 665: choice 1 is seeded 666, which the engine refuses. */
    resp r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"max_tokens\":3,\"n\":2,\"seed\":665}");
    check_error(&r, 400, NULL, "scripted failure");
    resp_free(&r);
    r = call(P1, "POST", "/v1/completions", KEY,
             "{\"prompt\":\"a\",\"max_tokens\":3,\"n\":2,\"seed\":665,\"stream\":true}");
    sse_sum s = parse_sse(r.body, false);
    TT_CHECK(!s.malformed && s.error_seen && !s.usage_seen);
    TT_CHECK(strstr(r.body, "scripted failure") != NULL);
    TT_CHECK_EQ_INT(s.n_finish[1], 0);
    TT_CHECK_EQ_INT(s.n_done, 1);
    resp_free(&r);
    TT_CHECK_EQ_INT(F1.errors, 0);
}

typedef struct par_arg {
    int port;
    char body[256];
    char out[256];
} par_arg;

static void *par_call(void *p) {
    par_arg *a = p;
    resp r = call(a->port, "POST", "/v1/completions", KEY, a->body);
    json_t *o = json_loads(r.body, 0, NULL);
    const char *t = json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"), 0), "text"));
    snprintf(a->out, sizeof a->out, "%s", t ? t : "(none)");
    json_decref(o);
    resp_free(&r);
    return NULL;
}

TT_TEST(concurrent_requests_share_batches) {
    /* Two slots, six requests of different prompt lengths at once: each
     * answer must be what it is alone, and no batch may break the rules. */
    par_arg a[6];
    pthread_t th[6];
    for (int i = 0; i < 6; i++) {
        a[i].port = P1;
        /* up to 46 tokens: more than one prompt piece (32) while others generate */
        snprintf(a[i].body, sizeof a[i].body, "{\"prompt\":\"%.*s\",\"max_tokens\":%d}", 1 + i * 9,
                 "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz", 4 + i);
        pthread_create(&th[i], NULL, par_call, &a[i]);
    }
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 6; i++) {
        par_arg alone = a[i];
        par_call(&alone);
        TT_CHECK_STR(a[i].out, alone.out);
    }
    TT_CHECK_EQ_INT(F1.errors, 0);
}

TT_TEST(slow_and_silent_clients_block_nobody) {
    /* One client sends half a request line and stops; another starts a long
     * stream and never reads it. Others are still answered. */
    int half = dial(P1);
    send_all(half, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le", 44);
    int mute = dial(P1);
    send_request(mute, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"stream\":true}");
    for (int i = 0; i < 3; i++) {
        resp r = call(P1, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"max_tokens\":3}");
        TT_CHECK_EQ_INT(r.status, 200);
        TT_CHECK(strstr(r.body, "Hello world") != NULL);
        resp_free(&r);
    }
    close(half);
    close(mute);
}

/* Read a stream's bytes until its first generated text. */
static void await_hello(int fd) {
    char buf[4096];
    size_t got = 0;
    while (!memmem(buf, got, "Hello", 5) && got < sizeof buf) {
        ssize_t k = recv(fd, buf + got, sizeof buf - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    TT_CHECK(memmem(buf, got, "Hello", 5) != NULL);
}

static void await_metric(int port, const char *name, long want) {
    for (int i = 0; i < 500 && metric(port, name) != want; i++) usleep(10000);
    TT_CHECK_EQ_INT(metric(port, name), want);
}

/* A slow engine: one slot, one queue place. */
static fake F2;
static srv_server *S2;
static int P2;

TT_TEST(queue_full_429_and_disconnect_cancels) {
    tr_error err = {{0}};
    srv_config c = srv_default_config();
    c.model_id = "gemma";
    c.api_key = KEY;
    c.n_slots = 1;
    c.queue_max = 1;
    c.shutdown_grace = 0;
    S2 = start(&c, &err);
    P2 = srv_port(S2);
    F2.n_seq = 1;
    F2.delay = 20000; /* 20 ms a step: 4000 positions would take 80 s */
    srv_engine e = fake_engine(&F2, 4096);
    TT_CHECK(srv_set_engine(S2, &e, &err) == TR_OK);

    /* A: a long stream; wait for its first content so it surely holds the slot. */
    int a = dial(P2);
    send_request(a, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"stream\":true}");
    await_hello(a);
    /* B: waits in the queue. */
    par_arg b = {.port = P2};
    snprintf(b.body, sizeof b.body, "{\"prompt\":\"b\",\"max_tokens\":2}");
    pthread_t tb;
    pthread_create(&tb, NULL, par_call, &b);
    for (double t0 = tt_now(); metric(P2, "trinity_requests_queued") != 1 && tt_now() - t0 < WAIT_SECONDS;)
        usleep(10000);
    TT_CHECK_EQ_INT(metric(P2, "trinity_requests_queued"), 1);
    /* C: no room. */
    resp r = call(P2, "POST", "/v1/completions", KEY, "{\"prompt\":\"c\",\"max_tokens\":2}");
    check_error(&r, 429, "rate_limit_exceeded", "busy");
    TT_CHECK(strcasestr(r.head, "Retry-After: 1") != NULL);
    resp_free(&r);
    /* A hangs up: its generation stops and B gets the slot. */
    close(a);
    pthread_join(tb, NULL);
    TT_CHECK_STR(b.out, "Hello wor");
    TT_CHECK_EQ_INT(metric(P2, "trinity_requests_cancelled_total"), 1);
    /* A generated far fewer than the 4095 tokens it would have. */
    TT_CHECK(metric(P2, "trinity_generated_tokens_total") < 1000);
    TT_CHECK_EQ_INT(metric(P2, "trinity_requests_in_flight"), 0);
    TT_CHECK_EQ_INT(F2.errors, 0);
}

TT_TEST(n_choices_fill_the_queue_and_cancel_together) {
    /* One slot, one queue place. Three choices never fit: 400 naming n. */
    long cancelled = metric(P2, "trinity_requests_cancelled_total");
    resp r = call(P2, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"n\":3}");
    check_error(&r, 400, NULL, "more completions");
    TT_CHECK(strstr(r.body, "\"param\":\"n\"") != NULL);
    resp_free(&r);
    /* With one place taken, two choices do not fit now (though one would): 429. */
    int a = dial(P2);
    send_request(a, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"stream\":true}");
    await_hello(a);
    r = call(P2, "POST", "/v1/completions", KEY, "{\"prompt\":\"c\",\"max_tokens\":2,\"n\":2}");
    check_error(&r, 429, "rate_limit_exceeded", "busy");
    resp_free(&r);
    close(a);
    await_metric(P2, "trinity_requests_cancelled_total", cancelled + 1);
    /* A two-choice stream whose client hangs up: both choices stop. */
    a = dial(P2);
    send_request(a, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"stream\":true,\"n\":2}");
    await_hello(a);
    close(a);
    await_metric(P2, "trinity_requests_cancelled_total", cancelled + 3);
    await_metric(P2, "trinity_requests_in_flight", 0);
    r = call(P2, "POST", "/v1/completions", KEY, "{\"prompt\":\"b\",\"max_tokens\":2}");
    TT_CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    TT_CHECK_EQ_INT(F2.errors, 0);
}

TT_TEST(request_time_and_header_limits) {
    /* --timeout 2.5 s over a 20 ms/step engine, --idle-timeout 1 s: the
     * generation outlives the idle timeout (it must not be cut by it) and is
     * stopped by the request timeout with what it has. */
    static fake f3;
    tr_error err = {{0}};
    srv_config c = srv_default_config();
    c.model_id = "gemma";
    c.idle_timeout = 1;
    c.request_timeout = 2.5;
    c.max_header = 2048;
    srv_server *s = start(&c, &err);
    int port = srv_port(s);
    f3.n_seq = 1;
    f3.delay = 20000;
    srv_engine e = fake_engine(&f3, 4096);
    TT_CHECK(srv_set_engine(s, &e, &err) == TR_OK);
    resp r = call(port, "POST", "/v1/completions", NULL, "{\"prompt\":\"a\"}");
    TT_CHECK_EQ_INT(r.status, 200);
    json_t *o = json_loads(r.body, 0, NULL);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "length");
    json_int_t n = json_integer_value(json_object_get(json_object_get(o, "usage"), "completion_tokens"));
    TT_CHECK(n > 0 && n < 4000);
    json_decref(o);
    resp_free(&r);
    /* Headers over --max-header: 431 (or, past MHD's own buffer, its refusal). */
    int fd = dial(port);
    char big[4096];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char head[4400];
    snprintf(head, sizeof head, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: %s\r\n\r\n", big);
    send_all(fd, head, strlen(head));
    r = read_resp(fd);
    TT_CHECK_EQ_INT(r.status, 431);
    resp_free(&r);
    srv_free(s);
    fake_free(&f3);
}

TT_TEST(metrics_text) {
    resp r = call(P1, "GET", "/metrics", KEY, NULL);
    TT_CHECK_EQ_INT(r.status, 200);
    TT_CHECK(strstr(r.body, "trinity_requests_total{endpoint=\"/v1/completions\",status=\"200\"}") != NULL);
    TT_CHECK(strstr(r.body, "trinity_requests_total{endpoint=\"/v1/completions\",status=\"413\"} 1") != NULL);
    TT_CHECK(strstr(r.body, "# TYPE trinity_request_duration_seconds histogram") != NULL);
    TT_CHECK(strstr(r.body, "trinity_request_duration_seconds_bucket{endpoint=\"/v1/chat/completions\",le=\"+Inf\"}") != NULL);
    TT_CHECK(strstr(r.body, "trinity_prompt_tokens_total ") != NULL);
    TT_CHECK(strstr(r.body, "trinity_generated_tokens_per_second ") != NULL);
    resp_free(&r);
}

TT_TEST(shutdown_ends_streams) {
    /* A stream in flight when the server stops (grace 0) ends with an error
     * event and [DONE]; srv_free returns. */
    int a = dial(P2);
    send_request(a, "POST", "/v1/completions", KEY, "{\"prompt\":\"a\",\"stream\":true}");
    /* read until the first content has arrived, so the stream is surely in flight */
    char buf[4096];
    size_t got = 0;
    while (!memmem(buf, got, "Hello", 5) && got < sizeof buf) {
        ssize_t k = recv(a, buf + got, sizeof buf - got, 0);
        if (k <= 0) break;
        got += (size_t)k;
    }
    TT_CHECK(memmem(buf, got, "Hello", 5) != NULL);
    srv_free(S2);
    resp r = read_resp_after(a, buf, got);
    TT_CHECK_EQ_INT(r.status, 200);
    /* well-formed events: the text so far, one error event naming the
     * shutdown, then [DONE] and nothing after it */
    sse_sum s = parse_sse(r.body, false);
    TT_CHECK(!s.malformed);
    TT_CHECK(!strncmp(s.text[0], "Hello", 5));
    TT_CHECK(s.error_seen);
    TT_CHECK_EQ_INT(s.n_done, 1);
    TT_CHECK(s.finish[0][0] == 0); /* cut short: no finish reason was sent */
    const char *err_ev = strstr(r.body, "\"error\"");
    TT_CHECK(err_ev && strstr(err_ev, "shutting down") && strstr(err_ev, "data: [DONE]"));
    if (s.malformed || !s.error_seen || s.n_done != 1) fprintf(stderr, "    stream: %s\n", r.body);
    resp_free(&r);
    srv_free(S1);
    fake_free(&F1);
    fake_free(&F2);
}

int main(void) {
    TT_RUN(health_before_and_after_the_model);
    TT_RUN(routing_auth_and_limits);
    TT_RUN(chat_with_stop_split_across_tokens);
    TT_RUN(completion_lengths_eos_and_utf8);
    TT_RUN(streams);
    TT_RUN(many_tokens_a_step_all_arrive);
    TT_RUN(n_choices_not_streamed);
    TT_RUN(n_choices_streamed);
    TT_RUN(one_failed_choice_fails_the_request);
    TT_RUN(concurrent_requests_share_batches);
    TT_RUN(slow_and_silent_clients_block_nobody);
    TT_RUN(queue_full_429_and_disconnect_cancels);
    TT_RUN(n_choices_fill_the_queue_and_cancel_together);
    TT_RUN(request_time_and_header_limits);
    TT_RUN(metrics_text);
    TT_RUN(shutdown_ends_streams);
    return TT_DONE();
}
