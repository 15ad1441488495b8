#include "util.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

const char *tr_status_str(tr_status s) {
    switch (s) {
    case TR_OK: return "ok";
    case TR_ERR_IO: return "I/O error";
    case TR_ERR_FORMAT: return "malformed input";
    case TR_ERR_UNSUPPORTED: return "unsupported";
    case TR_ERR_NOMEM: return "out of memory";
    case TR_ERR_ARG: return "bad argument";
    case TR_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

tr_status tr_err_set(tr_error *err, tr_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        /* one line: fold any newline a message picked up from its input */
        for (char *p = err->msg; *p; p++)
            if (*p == '\n' || *p == '\r') *p = ' ';
    }
    return st;
}

void tr_hint_huge_pages(void *p, size_t bytes) {
    const uintptr_t H = (uintptr_t)2 << 20;
    const uintptr_t a = ((uintptr_t)p + H - 1) & ~(H - 1), e = ((uintptr_t)p + bytes) & ~(H - 1);
    if (p && e > a) madvise((void *)a, e - a, MADV_HUGEPAGE);
}
