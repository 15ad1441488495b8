/* The context: KV cache, scratch, outputs. Shared by context.c (life cycle,
 * cache bookkeeping) and forward.c (the forward pass). */
#ifndef TR_ENGINE_H
#define TR_ENGINE_H

#include "model/model.h"
#include "kv/kv.h"
#include "ops/ops.h"

/* The KV cache is src/kv's pool of blocks, shared by every sequence (n_ctx
 * tokens in all); a sequence holds positions [0, len) through its block
 * table, at most n_ctx_seq of them. Entries are rows of type_k / type_v:
 * IEEE halves by default (llama.cpp's default cache), or Q8_0, Q4_0, TQ2_32
 * blocks, one type for the whole pool. With the prefix cache on, the full blocks a batch computed
 * are registered for reuse once the forward pass has written them. */
struct tr_context {
    const tr_model *model;
    int32_t n_ctx, n_ctx_seq, n_batch, n_seq_max, n_threads;
    bool prefix_cache;
    int32_t type_k, type_v;      /* KV entry types (tr_type) */
    /* Walsh-Hadamard rotation of a quantized cache (tr_hadamard), as llama.cpp's KV cache: the size of
     * the blocks K and the queries (V and the attention output) are rotated in, 0 when off. K: the
     * largest power of two dividing head_k (one block per head), V: 64 (llama.cpp found smaller
     * blocks better for V). On when the type is quantized and the head a multiple of 64. */
    int32_t rot_k, rot_v;
    tr_pool *pool;
    int32_t n_sinks, n_window;   /* streaming (tr_kv_seq_slide); n_window = 0: off */

    int64_t k_dim, v_dim;        /* n_head_kv * head_k, n_head_kv * head_v */
    tr_kv *kv;
    int32_t *seq_next;           /* [n_seq_max] validation: the next position each sequence expects */
    int32_t *seq_len0;           /* [n_seq_max] lengths before the batch, to roll back a failure */
    bool *seq_publish;           /* [n_seq_max] with the prefix cache on: this sequence's blocks are kept */

    /* Scratch for n_batch tokens. */
    float *x, *xb, *xb2;         /* [n_batch][n_embd] */
    float *q, *k, *v, *att;      /* [n_batch][q_dim | k_dim | v_dim | n_head*head_v] */
    float *hb, *hb2;             /* [n_batch][n_ff] */
    /* Mixture of experts (n_expert > 0): the router's probabilities, each
     * token's chosen experts and weights, one expert's gathered rows and
     * its hidden rows, and each (token, choice)'s weighted output. */
    float *moe_probs;            /* [n_batch][n_expert] */
    int32_t *moe_sel;            /* [n_batch][n_expert_used] */
    float *moe_w;                /* [n_batch][n_expert_used] */
    /* Experts run in parallel, one whole expert per thread at a time (one
     * pool dispatch per layer, not three per expert); each thread has its
     * own buffers and a one-thread pool for its matmuls' scratch. */
    int moe_nth;
    tr_pool **moe_pool;          /* [moe_nth] */
    int32_t *moe_rows;           /* [moe_nth][n_batch]: (token, choice) of one expert's rows */
    float *moe_x;                /* [moe_nth][n_batch][n_embd] */
    float *moe_h, *moe_h2;       /* [moe_nth][n_batch][n_ff_exp] */
    float *moe_y;                /* [moe_nth][n_batch][n_embd] */
    float *moe_out;              /* [n_batch * n_expert_used][n_embd] */
    float *moe_seen;             /* [n_batch * n_expert_used][n_ff_exp]: each choice's down input, with an observer */

    /* State-space models (Mamba): no K/V rows (the pool keeps only each
     * sequence's positions), and a recurrent state per sequence slot, beside
     * its block table: the state is where the sequence's past lives. It is
     * zeroed when a sequence starts (a token at position 0, tr_kv_seq_rm of
     * the whole sequence), copied by tr_kv_seq_cp, and cannot be cut back
     * to an earlier position (tr_kv_seq_rm of a suffix is refused). */
    bool recurrent;
    size_t conv_layer, ssm_layer; /* floats of one sequence's state in one layer */
    float *conv_state;           /* [n_seq_max][n_layer][(d_conv-1) x conv_dim] */
    float *ssm_state;            /* [n_seq_max][n_layer][d_inner x d_state] */
    float *ssm_xz;               /* [n_batch][ssm_in rows] */
    float *ssm_xc;               /* [n_batch][conv_dim]: the convolution's output */
    float *ssm_dbc;              /* [n_batch][dt_rank + 2*d_state] (Mamba) */
    float *ssm_dtr;              /* [n_batch][dt_rank] (Mamba) */
    float *ssm_dt;               /* [n_batch][n_head] time steps */
    float *ssm_y;                /* [n_batch][d_inner] */

    /* Outputs of the last batch. */
    tr_matmul_observer mm_observer; /* tr_context_set_matmul_observer */
    void *mm_user;

    int32_t *out_row;            /* [n_batch]: row of token i in logits, or -1 */
    int32_t n_out, n_batch_last;
    float *logits;               /* [logits_cap][n_vocab] */
    int32_t logits_cap;
};

/* Whether a sequence's computed blocks go to the prefix cache (default yes
 * when the context has it on). */
void tr_context_seq_publish(tr_context *c, int32_t seq, bool on);

/* One token's K or V row into the cache, in the cache's type (a function of
 * this row alone). */
void tr_kv_store_row(int type, const float *x, void *dst, int64_t n);

/* Run the forward pass over a validated batch (forward.c). */
tr_status tr_forward(tr_context *c, const tr_batch *b, tr_error *err);

#endif
