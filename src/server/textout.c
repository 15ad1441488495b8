#define _GNU_SOURCE /* memmem */
#include "textout.h"

#include <string.h>

void srv_textout_init(srv_textout *t, char *const *stop, size_t n_stop) {
    memset(t, 0, sizeof *t);
    t->stop = stop;
    t->n_stop = n_stop;
}

void srv_textout_free(srv_textout *t) { srv_buf_free(&t->raw); }

bool srv_textout_push(srv_textout *t, const char *piece, size_t n) {
    if (t->stopped) return true;
    if (!srv_buf_append(&t->raw, piece, n)) return false;
    /* Nothing before `released` can start a match: a stop string's beginning
     * is held back until it is known not to be one. */
    const char *hay = t->raw.p + t->released;
    size_t hay_len = t->raw.len - t->released;
    size_t best = SIZE_MAX;
    for (size_t i = 0; i < t->n_stop; i++) {
        size_t sl = strlen(t->stop[i]);
        if (!sl || sl > hay_len) continue;
        const char *m = memmem(hay, hay_len, t->stop[i], sl);
        if (m && (size_t)(m - hay) < best) best = (size_t)(m - hay);
    }
    if (best != SIZE_MAX) {
        t->raw.len = t->released + best;
        t->raw.p[t->raw.len] = '\0';
        t->stopped = true;
    }
    return true;
}

size_t srv_textout_releasable(const srv_textout *t, bool final) {
    size_t end = t->raw.len;
    if (final || t->stopped) return end;
    const char *tail = t->raw.p ? t->raw.p + t->released : "";
    size_t tail_len = end - t->released;
    /* The earliest position from which the rest is a proper prefix of some
     * stop string: everything from there on may still become a match. */
    size_t hold_from = tail_len;
    for (size_t i = 0; i < t->n_stop; i++) {
        size_t sl = strlen(t->stop[i]);
        size_t max = sl - 1 < tail_len ? sl - 1 : tail_len;
        for (size_t k = max; k > 0; k--) {
            if (tail_len - k >= hold_from) break; /* cannot beat what we have */
            if (!memcmp(tail + tail_len - k, t->stop[i], k)) {
                hold_from = tail_len - k;
                break;
            }
        }
    }
    return t->released + srv_utf8_complete_prefix(tail, hold_from);
}
