/* libFuzzer: any bytes as what a client sends on a connection. The head
 * scanner, the head parser and the chunked decoder (fed in two pieces, as
 * bytes arrive) must never crash, read out of bounds or leak, and must keep
 * their contracts: a head length within the input, an error with a status
 * and a message, a decoder that never consumes past what it was given nor
 * decodes past the body limit, and gives the same body however the bytes
 * are split. */
#include "server/http1.h"

#include <stdlib.h>
#include <string.h>

static void check_error(const http1_error *e) {
    if (e->status < 400 || e->status > 599 || !e->msg[0]) abort();
}

/* Decode in[0..n) fed as two pieces split at `cut`. -1: an error. */
static long decode(const char *in, size_t n, size_t cut, srv_buf *out) {
    http1_chunked c = {0};
    http1_error e;
    long a = http1_chunked_feed(&c, in, cut, out, 4096, 1024, &e);
    if (a < 0) return check_error(&e), -1;
    if ((size_t)a > cut || (!c.done && (size_t)a != cut)) abort();
    if (c.done) return a;
    long b = http1_chunked_feed(&c, in + cut, n - cut, out, 4096, 1024, &e);
    if (b < 0) return check_error(&e), -1;
    if ((size_t)b > n - cut || out->len > 4096) abort();
    return c.done ? a + b : -2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    http1_error e;
    long end = http1_head_end(in, size, &e);
    if (end < 0) check_error(&e);
    if ((size_t)(end > 0 ? end : 0) > size) abort();
    if (end > 0) {
        char *head = malloc((size_t)end + 1);
        memcpy(head, in, (size_t)end);
        head[end] = '\0';
        http1_request rq;
        if (http1_parse_head(head, (size_t)end, &rq, &e)) {
            if (!rq.method || !rq.path || (rq.path[0] != '/' && strcmp(rq.path, "*"))) abort();
            if (rq.chunked && rq.content_length) abort();
            for (int i = 0; i < rq.n_hdr; i++)
                if (http1_header_get(&rq, rq.hdr[i].name) == NULL) abort();
            char id[64];
            (void)http1_percent_decode(rq.path, strlen(rq.path), id, sizeof id);
        } else {
            check_error(&e);
        }
        free(head);
    }
    /* The rest of the input (or all of it) as a chunked body, split two ways. */
    const char *body = in + (end > 0 ? end : 0);
    size_t n = size - (size_t)(end > 0 ? end : 0);
    srv_buf a = {0}, b = {0};
    long ra = decode(body, n, n / 2, &a), rb = decode(body, n, n / 3, &b);
    if (ra >= 0 && rb >= 0 && (ra != rb || a.len != b.len || (a.len && memcmp(a.p, b.p, a.len)))) abort();
    srv_buf_free(&a);
    srv_buf_free(&b);
    return 0;
}
