/* The text a generation produces, token piece by token piece, and what of it
 * may be released to the client yet.
 *
 * Two things hold text back: a stop string may be forming across token
 * boundaries ("</s" + "top>"), and a piece may end inside a UTF-8 character.
 * A stop string is searched for over the whole unreleased tail, so it is found
 * however the tokens split it, and it is never released. */
#ifndef SRV_TEXTOUT_H
#define SRV_TEXTOUT_H

#include "srv_util.h"

typedef struct srv_textout {
    srv_buf raw;             /* every byte generated so far (cut at a stop string) */
    size_t released;         /* raw[0..released) has been handed out */
    char *const *stop;       /* stop strings (not owned), none empty */
    size_t n_stop;
    bool stopped;            /* a stop string matched: raw ends where it began */
} srv_textout;

void srv_textout_init(srv_textout *t, char *const *stop, size_t n_stop);
void srv_textout_free(srv_textout *t);

/* Append one token's bytes. Returns false only when memory runs out. After a
 * stop string matched, further pushes are ignored. */
bool srv_textout_push(srv_textout *t, const char *piece, size_t n);

/* End of raw that may be released now: everything when `final` or stopped;
 * otherwise up to the start of the longest tail that could still grow into a
 * stop string, and not inside an unfinished UTF-8 character. */
size_t srv_textout_releasable(const srv_textout *t, bool final);

#endif
