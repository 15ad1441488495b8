/* HTTP/1.1 framing: see http1.h for the rules. Every function here is pure
 * (no I/O, no allocation but the chunked decoder's output), so the fuzzer
 * reaches all of it. */
#include "http1.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool fail(http1_error *err, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(http1_error *err, int status, const char *fmt, ...) {
    err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return false;
}

/* RFC 9110 5.6.2: token characters. */
static bool is_tchar(unsigned char ch) {
    if (ch >= '0' && ch <= '9') return true;
    if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') return true;
    return ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* A byte a field value may hold: visible ASCII, space, tab, obs-text. */
static bool is_field_char(unsigned char ch) { return ch == '\t' || (ch >= 0x20 && ch != 0x7f); }

static bool is_hex(unsigned char ch, unsigned *v) {
    if (ch >= '0' && ch <= '9') *v = ch - '0';
    else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') *v = (ch | 0x20) - 'a' + 10;
    else return false;
    return true;
}

/* Leading empty lines before the request line; -1: a CR not followed by LF. */
static long skip_empty_lines(const char *buf, size_t len) {
    size_t i = 0;
    while (i < len && (buf[i] == '\r' || buf[i] == '\n')) {
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] != '\n') return -1;
        i++;
    }
    return (long)i;
}

/* The request line so far, which may not have ended yet: method, one space,
 * a target of visible characters, one space, "HTTP/". Cheap enough to run on
 * every read, and it is what turns a TLS handshake or an HTTP/2 connection
 * preface's binary frames into an answer at once instead of a wait. */
static bool check_request_line_prefix(const char *s, size_t n, http1_error *err) {
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i])) i++;
    if (i == n) return i <= 32 || fail(err, 501, "the request method is longer than 32 characters");
    if (i == 0 || s[i] != ' ')
        return fail(err, 400, "not an HTTP/1.x request: the request line must start with a method and a space "
                              "(TLS or HTTP/2 on this plain HTTP/1.1 port?)");
    i++;
    size_t t = i;
    while (i < n && (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f) i++;
    if (i == n) return true;
    if (i == t || s[i] != ' ')
        return s[i] == '\r' || s[i] == '\n'
                   ? fail(err, 400, "the request line has no HTTP version (HTTP/0.9 is not supported)")
                   : fail(err, 400, "the request target must be one word of visible ASCII characters");
    i++;
    static const char http[] = "HTTP/";
    for (size_t k = 0; k < 5 && i + k < n; k++)
        if (s[i + k] != http[k]) return fail(err, 400, "the request line must end with HTTP/1.1 or HTTP/1.0");
    return true;
}

long http1_head_end(const char *buf, size_t len, http1_error *err) {
    long skip = skip_empty_lines(buf, len);
    if (skip < 0) {
        fail(err, 400, "a CR must be followed by LF");
        return -1;
    }
    size_t start = (size_t)skip;
    const char *nl = memchr(buf + start, '\n', len - start);
    size_t line_len = nl ? (size_t)(nl - (buf + start)) : len - start;
    if (!check_request_line_prefix(buf + start, line_len, err)) return -1;
    if (!nl) return 0;
    /* Every later line: an empty one (LF or CRLF) ends the head. */
    for (size_t p = (size_t)(nl - buf) + 1; p < len;) {
        const char *e = memchr(buf + p, '\n', len - p);
        if (!e) return 0;
        size_t n = (size_t)(e - (buf + p));
        if (n == 0 || (n == 1 && buf[p] == '\r')) return (long)((size_t)(e - buf) + 1);
        p = (size_t)(e - buf) + 1;
    }
    return 0;
}

/* Split off the next line of [*p, end): NUL-terminate it (its CR LF or LF
 * dropped). NULL: a bare CR inside it. */
static char *next_line(char **p, char *end, size_t *n, http1_error *err) {
    char *s = *p;
    char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) nl = end; /* cannot happen for a head http1_head_end measured */
    char *stop = nl > s && nl[-1] == '\r' ? nl - 1 : nl;
    if (memchr(s, '\r', (size_t)(stop - s))) {
        fail(err, 400, "a CR must be followed by LF");
        return NULL;
    }
    *stop = '\0';
    *n = (size_t)(stop - s);
    *p = nl < end ? nl + 1 : end;
    return s;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
    return s;
}

static bool parse_request_line(char *line, http1_request *rq, http1_error *err) {
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1 || strchr(sp2 + 1, ' '))
        return fail(err, 400, "the request line must be: METHOD SP TARGET SP HTTP-VERSION");
    *sp1 = *sp2 = '\0';
    rq->method = line;
    for (const char *m = line; *m; m++)
        if (!is_tchar((unsigned char)*m)) return fail(err, 400, "the request method must be a token");
    const char *v = sp2 + 1;
    if (strlen(v) != 8 || strncmp(v, "HTTP/", 5) || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' ||
        v[7] > '9')
        return fail(err, 400, "the HTTP version must be written HTTP/<digit>.<digit>");
    if (v[5] != '1') return fail(err, 505, "HTTP/%c.%c is not supported: this server speaks HTTP/1.1", v[5], v[7]);
    rq->minor = v[7] == '0' ? 0 : 1;

    char *t = sp1 + 1;
    for (const char *c = t; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return fail(err, 400, "the request target must be visible ASCII characters");
    if (!strncasecmp(t, "http://", 7) || !strncasecmp(t, "https://", 8)) { /* absolute-form */
        char *slash = strchr(strstr(t, "://") + 3, '/');
        t = slash ? slash : (char *)"/";
    } else if (t[0] != '/' && strcmp(t, "*")) {
        return fail(err, 400, "the request target must be a path starting with '/'");
    }
    rq->target = t;
    rq->path = t;
    return true;
}

/* Connection's options, a comma-separated list of tokens. */
static void connection_options(const char *v, bool *close, bool *keep_alive) {
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') v++;
        size_t n = strcspn(v, ", \t");
        if (n == 5 && !strncasecmp(v, "close", 5)) *close = true;
        if (n == 10 && !strncasecmp(v, "keep-alive", 10)) *keep_alive = true;
        v += n;
    }
}

bool http1_parse_head(char *buf, size_t head_len, http1_request *rq, http1_error *err) {
    memset(rq, 0, sizeof *rq);
    long skip = skip_empty_lines(buf, head_len);
    if (skip < 0) return fail(err, 400, "a CR must be followed by LF");
    char *p = buf + skip, *end = buf + head_len;
    size_t n;
    char *line = next_line(&p, end, &n, err);
    if (!line || !parse_request_line(line, rq, err)) return false;

    /* Header lines, up to the empty line. */
    int n_host = 0, n_cl = 0, n_te = 0;
    const char *cl = NULL, *te = NULL, *expect = NULL;
    bool conn_close = false, conn_keep = false;
    while (p < end) {
        if (!(line = next_line(&p, end, &n, err))) return false;
        if (n == 0) break;
        if (line[0] == ' ' || line[0] == '\t')
            return fail(err, 400, "obsolete line folding (a header line starting with a space) is not accepted");
        char *colon = strchr(line, ':');
        if (!colon || colon == line) return fail(err, 400, "a header line must be NAME: VALUE");
        *colon = '\0';
        for (const char *c = line; *c; c++)
            if (!is_tchar((unsigned char)*c))
                return fail(err, 400, "the header name '%.40s' is not a token (no space before the colon)", line);
        for (const char *c = colon + 1; *c; c++)
            if (!is_field_char((unsigned char)*c))
                return fail(err, 400, "the value of header '%.40s' has a control character", line);
        if (rq->n_hdr == HTTP1_MAX_HEADERS)
            return fail(err, 431, "more than %d header lines", HTTP1_MAX_HEADERS);
        char *value = trim(colon + 1);
        rq->hdr[rq->n_hdr++] = (http1_header){line, value};
        if (!strcasecmp(line, "Host")) n_host++;
        else if (!strcasecmp(line, "Content-Length")) n_cl++, cl = value;
        else if (!strcasecmp(line, "Transfer-Encoding")) n_te++, te = value;
        else if (!strcasecmp(line, "Connection")) connection_options(value, &conn_close, &conn_keep);
        else if (!strcasecmp(line, "Expect")) expect = value;
    }

    if (n_host > 1 || (rq->minor == 1 && n_host == 0))
        return fail(err, 400, n_host ? "more than one Host header" : "an HTTP/1.1 request needs a Host header");
    if (n_cl > 1) return fail(err, 400, "more than one Content-Length header");
    if (n_te && n_cl) return fail(err, 400, "both Content-Length and Transfer-Encoding: send one of them");
    if (n_te && rq->minor == 0) return fail(err, 400, "Transfer-Encoding is not allowed in an HTTP/1.0 request");
    if (n_te) {
        if (n_te > 1 || strcasecmp(te, "chunked"))
            return fail(err, 501, "Transfer-Encoding '%.60s' is not supported: send chunked or a Content-Length",
                        n_te > 1 ? "(several)" : te);
        rq->chunked = true;
    }
    if (cl) {
        if (!*cl) return fail(err, 400, "Content-Length is empty");
        uint64_t v = 0;
        for (const char *c = cl; *c; c++) {
            if (*c < '0' || *c > '9') return fail(err, 400, "Content-Length '%.40s' is not a number of bytes", cl);
            uint64_t d = (uint64_t)(*c - '0');
            if (v > (UINT64_MAX - d) / 10) return fail(err, 400, "Content-Length '%.40s' is out of range", cl);
            v = v * 10 + d;
        }
        rq->content_length = v;
    }
    if (expect) {
        if (strcasecmp(expect, "100-continue")) return fail(err, 417, "Expect '%.40s' is not supported", expect);
        rq->expect_continue = rq->minor == 1;
    }
    rq->keep_alive = rq->minor == 1 ? !conn_close : conn_keep && !conn_close;
    /* The path: the target without its query or fragment. */
    char *q = strpbrk((char *)rq->path, "?#");
    if (q) *q = '\0';
    return true;
}

const char *http1_header_get(const http1_request *rq, const char *name) {
    for (int i = 0; i < rq->n_hdr; i++)
        if (!strcasecmp(rq->hdr[i].name, name)) return rq->hdr[i].value;
    return NULL;
}

/* ------------------------------------------------------------- chunked */

enum {
    CH_SIZE = 0, /* hex digits of a chunk size */
    CH_EXT,      /* a chunk extension, up to the line's end */
    CH_SIZE_LF,  /* the LF after a size line's CR */
    CH_DATA,
    CH_DATA_CR,  /* the CRLF after a chunk's data */
    CH_DATA_LF,
    CH_TRAILER_START, /* the start of a trailer line (or of the final empty line) */
    CH_TRAILER,
    CH_TRAILER_LF,
    CH_END_LF,
};

long http1_chunked_feed(http1_chunked *c, const char *in, size_t n, srv_buf *out, size_t max_body,
                        size_t max_meta, http1_error *err) {
    size_t i = 0;
    while (i < n && !c->done) {
        unsigned char ch = (unsigned char)in[i];
        unsigned hv;
        switch (c->state) {
        case CH_SIZE:
            if (is_hex(ch, &hv)) {
                if (c->n_digits == 64) {
                    fail(err, 400, "a chunk size of more than 64 hex digits");
                    return -1;
                }
                if (c->remaining >> 59) { /* 2^63 bytes and up: far past any body limit */
                    fail(err, 413, "a chunk of more than 2^63 bytes");
                    return -1;
                }
                c->remaining = c->remaining * 16 + hv;
                c->n_digits++;
            } else if (c->n_digits && (ch == ';' || ch == ' ' || ch == '\t')) {
                c->state = CH_EXT;
            } else if (c->n_digits && (ch == '\r' || ch == '\n')) {
                c->state = ch == '\r' ? CH_SIZE_LF : (c->remaining ? CH_DATA : CH_TRAILER_START);
            } else {
                fail(err, 400, "malformed chunk size line");
                return -1;
            }
            i++;
            break;
        case CH_EXT:
            if (ch == '\r' || ch == '\n') {
                c->state = ch == '\r' ? CH_SIZE_LF : (c->remaining ? CH_DATA : CH_TRAILER_START);
            } else if (!is_field_char(ch)) {
                fail(err, 400, "a control character in a chunk extension");
                return -1;
            } else if (++c->meta > max_meta) {
                fail(err, 431, "chunk extensions and trailers over %zu bytes", max_meta);
                return -1;
            }
            i++;
            break;
        case CH_SIZE_LF:
            if (ch != '\n') {
                fail(err, 400, "a CR must be followed by LF");
                return -1;
            }
            c->state = c->remaining ? CH_DATA : CH_TRAILER_START;
            i++;
            break;
        case CH_DATA: {
            size_t take = n - i;
            if (take > c->remaining) take = (size_t)c->remaining;
            if (out->len + take > max_body) {
                fail(err, 413, "the request body is over the limit of %zu bytes (--max-body)", max_body);
                return -1;
            }
            if (!srv_buf_append(out, in + i, take)) {
                fail(err, 413, "out of memory for the request body");
                return -1;
            }
            c->remaining -= take;
            i += take;
            if (!c->remaining) c->state = CH_DATA_CR;
            break;
        }
        case CH_DATA_CR:
        case CH_DATA_LF:
            if (ch == '\n') {
                c->state = CH_SIZE;
                c->n_digits = 0;
            } else if (ch == '\r' && c->state == CH_DATA_CR) {
                c->state = CH_DATA_LF;
            } else {
                fail(err, 400, "a chunk's data is longer than its size");
                return -1;
            }
            i++;
            break;
        case CH_TRAILER_START:
        case CH_TRAILER:
            if (ch == '\n') {
                if (c->state == CH_TRAILER_START) c->done = true;
                c->state = CH_TRAILER_START;
            } else if (ch == '\r') {
                c->state = c->state == CH_TRAILER_START ? CH_END_LF : CH_TRAILER_LF;
            } else if (!is_field_char(ch)) {
                fail(err, 400, "a control character in a trailer field");
                return -1;
            } else if (++c->meta > max_meta) {
                fail(err, 431, "chunk extensions and trailers over %zu bytes", max_meta);
                return -1;
            } else {
                c->state = CH_TRAILER;
            }
            i++;
            break;
        case CH_TRAILER_LF:
        case CH_END_LF:
            if (ch != '\n') {
                fail(err, 400, "a CR must be followed by LF");
                return -1;
            }
            if (c->state == CH_END_LF) c->done = true;
            c->state = CH_TRAILER_START;
            i++;
            break;
        }
    }
    return (long)i;
}

bool http1_percent_decode(const char *src, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = src[i];
        if (ch == '%') {
            unsigned hi, lo;
            if (i + 2 >= n || !is_hex((unsigned char)src[i + 1], &hi) || !is_hex((unsigned char)src[i + 2], &lo))
                return false;
            ch = (char)(hi * 16 + lo);
            if (!ch) return false;
            i += 2;
        }
        if (o + 1 >= cap) return false;
        out[o++] = ch;
    }
    out[o] = '\0';
    return true;
}
