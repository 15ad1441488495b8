/* libFuzzer: the grammar compiler and matcher. The first byte picks what the
 * rest is: GBNF text, or a JSON schema. Parsing must never crash, hang or
 * leak; a schema the translator accepts must give GBNF the compiler accepts
 * (else abort); a compiled grammar then matches the input's tail, and a small
 * vocabulary is masked and sampled, with the mask agreeing with per-token
 * checks. */
#define _GNU_SOURCE /* memmem */
#include "grammar/grammar.h"

#include <stdlib.h>
#include <string.h>

static const char *const PIECES[] = {"{", "}", "\"", "a", "ab", " ", "\n", "0", "1.5", "true", "\xc3", "\xa9",
                                     "\xc3\xa9", "[", "]", ",", ":", "x", "-", "\xe6\x97\xa5", ""};
enum { NP = sizeof PIECES / sizeof PIECES[0] };

static void exercise(const tr_grammar *g, const uint8_t *tail, size_t n) {
    (void)tr_grammar_match(g, (const char *)tail, n);
    size_t lens[NP + 1];
    const char *p[NP + 1];
    bool eog[NP + 1];
    for (int i = 0; i < NP; i++) p[i] = PIECES[i], lens[i] = strlen(PIECES[i]), eog[i] = false;
    p[NP] = "", lens[NP] = 0, eog[NP] = true;
    tr_grammar_vocab *gv = tr_grammar_vocab_from_pieces(NP + 1, p, lens, eog);
    gmatch *m = gv ? gm_new(g) : NULL;
    uint8_t mask[NP + 1];
    for (int step = 0; m && step < 16; step++) {
        int32_t c = gm_mask(m, gv, mask);
        for (int t = 0; t <= NP; t++)
            if ((mask[t] != 0) != gm_token_ok(m, gv, t)) abort();
        if (c == 0) break;
        int pick = (step < (int)n ? tail[step] : step) % c, t = 0;
        for (;; t++)
            if (mask[t] && pick-- == 0) break;
        if (eog[t]) break;
        if (!gm_take_token(m, gv, t)) abort();
    }
    gm_free(m);
    tr_grammar_vocab_free(gv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > 8192) return 0;
    const int mode = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    /* an optional "\n%%\n" splits the grammar or schema from a string to match */
    const uint8_t *tail = (const uint8_t *)"";
    size_t n_tail = 0;
    const char *sep = memmem(text, len, "\n%%\n", 4);
    if (sep) {
        tail = (const uint8_t *)sep + 4;
        n_tail = len - (size_t)(sep + 4 - text);
        len = (size_t)(sep - text);
    }
    tr_error err;
    tr_grammar *g = NULL;
    if (mode == 0) {
        if (tr_grammar_parse(text, len, &g, &err) != TR_OK) return 0;
    } else {
        char *gbnf = NULL;
        if (tr_json_schema_to_gbnf(text, len, &gbnf, &err) != TR_OK) return 0;
        tr_status st = tr_grammar_parse(gbnf, strlen(gbnf), &g, &err);
        free(gbnf);
        if (st == TR_ERR_NOMEM) return 0;
        if (st != TR_OK) abort(); /* the translator wrote GBNF its own compiler refuses */
    }
    exercise(g, tail, n_tail);
    tr_grammar_free(g);
    return 0;
}
