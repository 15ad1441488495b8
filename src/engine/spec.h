/* Drafters for speculative decoding: each guesses the tokens a sequence
 * will generate next, from its tokens alone (no second model: the draft
 * model is the scheduler's, as it needs batches of its own). The scheduler
 * verifies the guesses (scheduler.c); a drafter only proposes and learns
 * what the model made of its proposal. */
#ifndef TR_SPEC_H
#define TR_SPEC_H

#include "trinity.h"

typedef struct drafter drafter;

/* A drafter of kind TR_SPEC_NGRAM or TR_SPEC_LOOKAHEAD (NULL: another kind,
 * or out of memory). */
drafter *drafter_new(tr_spec_kind kind);
void drafter_free(drafter *d);

/* Up to k guesses (written to out) for the tokens after tok[0..n): tok are
 * the sequence's tokens, prompt and generated, the last one not yet
 * decoded. Returns how many (0: no guess worth making); *n_first is how
 * many of them the first lookup gave, the rest being guesses
 * chained on guesses (the n-gram drafter's; the scheduler learns how often
 * each kind is right apart). */
int32_t drafter_propose(drafter *d, const int32_t *tok, int32_t n, int32_t k, int32_t *out, int32_t *n_first);

/* Whether drafter_observe wants the model's choice at rejected rows too
 * (their argmax: a little work per row, so only for drafters that learn
 * from it). */
bool drafter_wants_all_rows(const drafter *d);

/* What the model made of the last proposal: the sequence held n tokens
 * (tok[n-1] at position n-1 was decoded with the guesses draft[0..n_draft)
 * after it), out[i] is the model's choice after row i (row 0: tok[n-1],
 * row i: draft[i-1]); the first n_acc guesses were accepted. out has
 * n_acc + 1 entries, or n_draft + 1 when drafter_wants_all_rows. */
void drafter_observe(drafter *d, const int32_t *tok, int32_t n, const int32_t *draft, int32_t n_draft,
                     const int32_t *out, int32_t n_acc);

#endif
