/* Small helpers shared by every layer: error formatting, checked arithmetic. */
#ifndef TR_UTIL_H
#define TR_UTIL_H

#include "trinity.h"

#include <stdarg.h>
#include <stdint.h>

#if defined(__GNUC__)
#define TR_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TR_PRINTF(a, b)
#endif

/* Fill err (if not NULL) with a one-line message and return `st`. */
tr_status tr_err_set(tr_error *err, tr_status st, const char *fmt, ...) TR_PRINTF(3, 4);

/* Checked arithmetic: return false on overflow. */
/* Ask for the whole 2 MiB pages inside [p, p + bytes) to be transparent
 * huge pages (madvise mode): big buffers a token streams through (the KV
 * cache) take fewer TLB misses. A hint: nothing changes where it is refused. */
void tr_hint_huge_pages(void *p, size_t bytes);

static inline bool tr_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool tr_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

#endif
