/* The context: KV cache, scratch, outputs. Shared by context.c (life cycle,
 * cache bookkeeping) and forward.c (the forward pass). */
#ifndef TR_ENGINE_H
#define TR_ENGINE_H

#include "model/model.h"
#include "ops/ops.h"

/* The KV cache gives each sequence its own region of n_ctx slots; the
 * entry of position p lives in slot p. A sequence's positions are valid or
 * not (valid[]), so removing a range leaves the rest in place, and attention
 * only ever reads the valid slots of its own sequence at or before its own
 * position. Entries are IEEE halves, as llama.cpp's default cache. */
struct tr_context {
    const tr_model *model;
    int32_t n_ctx, n_batch, n_seq_max, n_threads;
    tr_pool *pool;

    int64_t k_dim, v_dim;        /* n_head_kv * head_k, n_head_kv * head_v */
    uint16_t *k_cache, *v_cache; /* [n_layer][n_seq_max][n_ctx][k_dim or v_dim] */
    uint8_t *valid;              /* [n_seq_max][n_ctx] */
    int32_t *seq_len;            /* [n_seq_max]: highest valid position + 1 */
    uint32_t *stamp;             /* [n_seq_max][n_ctx]: finds repeated positions in a batch */
    uint32_t stamp_now;

    /* Scratch for n_batch tokens. */
    float *x, *xb, *xb2;         /* [n_batch][n_embd] */
    float *q, *k, *v, *att;      /* [n_batch][q_dim | k_dim | v_dim | n_head*head_v] */
    float *hb, *hb2;             /* [n_batch][n_ff] */

    /* Outputs of the last batch. */
    int32_t *out_row;            /* [n_batch]: row of token i in logits, or -1 */
    int32_t n_out, n_batch_last;
    float *logits;               /* [logits_cap][n_vocab] */
    int32_t logits_cap;
};

/* Run the forward pass over a validated batch (forward.c). */
tr_status tr_forward(tr_context *c, const tr_batch *b, tr_error *err);

#endif
