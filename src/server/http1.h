/* HTTP/1.1 message framing (RFC 9112), with no I/O: where a request head
 * ends, what it says, and the chunked transfer coding. The connection code
 * (http.c) feeds it bytes as they arrive; the fuzzer feeds it anything.
 *
 * The rules, chosen where the RFC lets a server choose, as nginx does:
 *   - a bare LF ends a line as CRLF does (RFC 9112 2.2 allows it); a CR not
 *     followed by LF is a 400;
 *   - obsolete line folding (a header line starting with a space or tab) is a
 *     400, never unfolded;
 *   - a request whose first bytes cannot begin a request line (a TLS
 *     handshake, binary noise) is refused at once, before any line ends;
 *   - Content-Length: digits only, one header line; anything else is a 400;
 *   - Transfer-Encoding: "chunked" alone; any other coding (gzip, identity,
 *     "gzip, chunked") is a 501; together with Content-Length, or in an
 *     HTTP/1.0 request, a 400 (request smuggling);
 *   - HTTP/1.1 needs exactly one Host; a version other than 1.x is a 505. */
#ifndef SRV_HTTP1_H
#define SRV_HTTP1_H

#include "srv_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP1_MAX_HEADERS 100

typedef struct http1_error {
    int status;    /* 400, 413, 417, 431, 501, 505 */
    char msg[200]; /* one line, for the client */
} http1_error;

typedef struct http1_header {
    const char *name, *value; /* NUL-terminated, inside the parsed head */
} http1_header;

typedef struct http1_request {
    const char *method;
    const char *target; /* as sent: origin-form ("/v1/models?x"), absolute-form or "*" */
    const char *path;   /* target's path, without the query, percent-encoding kept */
    int minor;          /* HTTP/1.<minor>: 0 or 1 (1.2 and later are answered as 1.1) */
    http1_header hdr[HTTP1_MAX_HEADERS];
    int n_hdr;
    /* Framing, from the headers. */
    bool chunked;
    uint64_t content_length; /* 0 without the header */
    bool keep_alive;         /* the client lets the connection stay open */
    bool expect_continue;    /* "Expect: 100-continue" (HTTP/1.1) */
} http1_request;

/* Where the head in buf[0..len) ends: its length in bytes (the blank line
 * included) when it is complete, 0 when more bytes are needed, -1 when the
 * bytes so far already cannot be a request (err says why). Empty lines before
 * the request line are part of the head (RFC 9112 2.2: ignored). */
long http1_head_end(const char *buf, size_t len, http1_error *err);

/* Parse a complete head (head_len bytes, as http1_head_end gave) in place:
 * it writes NULs into buf, and rq's strings point into it. */
bool http1_parse_head(char *buf, size_t head_len, http1_request *rq, http1_error *err);

/* The value of the first header named `name` (any case), or NULL. */
const char *http1_header_get(const http1_request *rq, const char *name);

/* The chunked transfer coding, decoded as bytes arrive. Chunk extensions are
 * read and ignored, trailer fields read and dropped; their bytes together
 * count against max_meta (431 above), the data against max_body (413). */
typedef struct http1_chunked {
    int state;
    uint64_t remaining; /* of the current chunk's data */
    int n_digits;
    size_t meta;        /* extension and trailer bytes so far */
    bool done;          /* the last chunk and the trailers are in */
} http1_chunked;

/* Decode from in[0..n), appending data to out. Returns the bytes consumed
 * (fewer than n only once done: the rest is the next request), or -1 (err). */
long http1_chunked_feed(http1_chunked *c, const char *in, size_t n, srv_buf *out, size_t max_body,
                        size_t max_meta, http1_error *err);

/* Decode %XX escapes of src[0..n) into out (at most cap - 1 bytes, then
 * NUL). False: a malformed escape, an encoded NUL, or too long. */
bool http1_percent_decode(const char *src, size_t n, char *out, size_t cap);

#endif
