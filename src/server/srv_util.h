/* Small pieces the server's modules share: a growable byte buffer, UTF-8
 * helpers and a monotonic clock. Internal to src/server. */
#ifndef SRV_UTIL_H
#define SRV_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv_buf {
    char *p;    /* NUL-terminated when not NULL */
    size_t len;
    size_t cap;
} srv_buf;

/* Append n bytes; false when memory runs out (the buffer is left as it was). */
bool srv_buf_append(srv_buf *b, const void *data, size_t n);
bool srv_buf_puts(srv_buf *b, const char *s);
bool srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes (a consumer that has sent them). */
void srv_buf_consume(srv_buf *b, size_t n);
void srv_buf_free(srv_buf *b);

/* Length of the longest prefix of s[0..n) that does not end inside a UTF-8
 * sequence which further bytes could still complete. Invalid bytes count as
 * complete (they are replaced when sanitised). */
size_t srv_utf8_complete_prefix(const char *s, size_t n);
/* Append s[0..n) to out with every invalid or truncated UTF-8 sequence
 * replaced by U+FFFD, so that the result is always valid JSON string text. */
bool srv_utf8_sanitize(srv_buf *out, const char *s, size_t n);

/* Seconds on a monotonic clock, and Unix time in seconds. */
double srv_now(void);
int64_t srv_unix_time(void);

#endif
