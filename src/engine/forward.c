/* The forward pass over a batch, read top to bottom like the paper:
 *
 *   x = embed(tokens) [* sqrt(n_embd)]
 *   for each layer:
 *       h = rmsnorm(x) ; q, k, v = h Wq, h Wk, h Wv [+ biases]
 *       [q, k = rmsnorm per head] ; q, k = rope(q, k, pos)
 *       cache k, v ; a = softmax(q k^T * scale, causal [, window]) v
 *       a = a Wo [; a = rmsnorm(a)] ; x = x + a
 *       h = rmsnorm(x) ; f = (act(h Wgate) * h Wup) Wdown [; f = rmsnorm(f)] ; x = x + f
 *   logits = rmsnorm(x) Wout [; cap * tanh(logits / cap)]
 *
 * Bracketed steps are fields of the architecture descriptor (model.h). All
 * tokens of the batch go through each matmul together (matrix-matrix work);
 * weights are read in place from the mapping. */
#include "engine/engine.h"

#include "core/util.h"

#include <math.h>
#include <string.h>

static void matmul(tr_context *c, const tr_weight *w, const float *x, int64_t n, float *y) {
    tr_matmul(c->pool, w->type, w->data, w->rows, w->cols, x, n, y);
}

static void add_bias(float *y, const float *bias, int64_t n_tokens, int64_t dim) {
    if (!bias) return;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t i = 0; i < dim; i++) y[t * dim + i] += bias[i];
}

/* ---------------------------------------------------------------- attention */

/* softmax(q k^T * scale) v for every (token, head) of the batch, over the
 * positions of the token's own sequence at or before its own (and within
 * the window on local layers): one call of the attention kernel, which
 * reads each sequence's K/V through its block table.
 *
 * The roundings follow llama.cpp's CPU graph without flash attention, so
 * that models stay close to it (quantized ones turn tiny differences into
 * whole quantization steps of the activations, and the parity tests' greedy
 * continuations meet near-ties a few ulps wide): q meets the half-precision
 * cache as halves, the scores and softmax are float, and the normalised
 * weights meet the values as halves again (TR_ATTN_HALF_P: the kernel's
 * normalised-weights path, not the online softmax, whose running weights
 * would round differently). The sums keep 8 partial sums in the order of
 * llama.cpp's 8-wide kernels (the kernel's "lanes" order). A quantized
 * cache (-ctk / -ctv) is read in place by the same path: q meets a quantized
 * K as Q8_0 blocks in integer dot products, V is dequantized in registers. */
static tr_status attention(tr_context *c, const tr_batch *b, int layer, bool swa) {
    const tr_hparams *hp = &c->model->hp;
    /* Same math either way; the rounding differs (q is rounded to halves
     * after the scale when the architecture scales q). */
    const bool scale_q = c->model->arch->scale_q;
    if (scale_q) {
        const int64_t n = (int64_t)b->n_tokens * hp->n_head * hp->head_k;
        for (int64_t i = 0; i < n; i++) c->q[i] *= hp->attn_scale;
    }
    tr_attn_params p = {
        .n_tokens = b->n_tokens,
        .n_kv = c->n_ctx_seq,
        .head_dim = hp->head_k,
        .head_dim_v = hp->head_v,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .k_type = c->type_k,
        .v_type = c->type_v,
        .k_stride = tr_row_size(c->type_k, c->k_dim),
        .v_stride = tr_row_size(c->type_v, c->v_dim),
        .q_pos = b->pos,
        .q_seq = b->seq_id,
        .n_seq = c->n_seq_max,
        .block_size = tr_kv_block_size(c->kv),
        .blocks = tr_kv_tables(c->kv),
        .max_blocks = tr_kv_max_blocks(c->kv),
        .window = swa ? hp->n_swa : 0, /* masked when pos - p >= n_swa */
        .scale = scale_q ? 1.0f : hp->attn_scale,
        .flags = TR_ATTN_HALF_Q | TR_ATTN_HALF_P,
    };
    return tr_attention(c->pool, &p, c->q, tr_kv_k_layer(c->kv, layer), tr_kv_v_layer(c->kv, layer), c->att);
}

/* ------------------------------------------------------------------ forward */

tr_status tr_forward(tr_context *c, const tr_batch *b, tr_error *err) {
    const tr_model *m = c->model;
    const tr_arch *arch = m->arch;
    const tr_hparams *hp = &m->hp;
    const int64_t n = b->n_tokens, E = hp->n_embd, F = hp->n_ff;
    const int64_t hk = hp->head_k, n_head = hp->n_head, n_kv = hp->n_head_kv;
    const int64_t q_dim = n_head * hk, k_dim = c->k_dim, v_dim = c->v_dim, o_dim = n_head * hp->head_v;
    const float eps = hp->norm_eps;
    float *x = c->x, *xb = c->xb, *xb2 = c->xb2;

    /* Embeddings: rows of token_embd, dequantized. */
    const size_t emb_row = tr_row_size(m->tok_embd.type, E);
    const float emb_scale = arch->embd_scale ? sqrtf((float)E) : 1.0f;
    for (int64_t t = 0; t < n; t++) {
        const uint8_t *row = (const uint8_t *)m->tok_embd.data + (size_t)b->token[t] * emb_row;
        tr_dequantize(m->tok_embd.type, row, x + t * E, E);
        if (emb_scale != 1.0f)
            for (int64_t i = 0; i < E; i++) x[t * E + i] *= emb_scale;
    }

    for (int il = 0; il < hp->n_layer; il++) {
        const tr_layer *l = &m->layers[il];

        /* Attention. */
        for (int64_t t = 0; t < n; t++) tr_rmsnorm(xb + t * E, x + t * E, l->attn_norm, E, eps);
        matmul(c, &l->wq, xb, n, c->q);
        matmul(c, &l->wk, xb, n, c->k);
        matmul(c, &l->wv, xb, n, c->v);
        add_bias(c->q, l->bq, n, q_dim);
        add_bias(c->k, l->bk, n, k_dim);
        add_bias(c->v, l->bv, n, v_dim);
        for (int64_t t = 0; t < n; t++) {
            float *q = c->q + t * q_dim, *k = c->k + t * k_dim;
            for (int64_t h = 0; h < n_head; h++) {
                if (l->q_norm) tr_rmsnorm(q + h * hk, q + h * hk, l->q_norm, hk, eps);
                tr_rope(q + h * hk, hp->n_rot, b->pos[t], l->rope_base, l->rope_scale, m->rope_freqs, arch->rope_neox);
            }
            for (int64_t h = 0; h < n_kv; h++) {
                if (l->k_norm) tr_rmsnorm(k + h * hk, k + h * hk, l->k_norm, hk, eps);
                tr_rope(k + h * hk, hp->n_rot, b->pos[t], l->rope_base, l->rope_scale, m->rope_freqs, arch->rope_neox);
            }
            /* Into the cache, at this token's slot of its sequence, in the
             * cache's types (a function of this row alone: batch-invariant). */
            const int64_t slot = tr_kv_slot(tr_kv_table(c->kv, b->seq_id[t]), tr_kv_block_size(c->kv), b->pos[t]);
            tr_kv_store_row(c->type_k, k, (char *)tr_kv_k_layer(c->kv, il) + (size_t)slot * tr_row_size(c->type_k, k_dim), k_dim);
            tr_kv_store_row(c->type_v, c->v + t * v_dim,
                      (char *)tr_kv_v_layer(c->kv, il) + (size_t)slot * tr_row_size(c->type_v, v_dim), v_dim);
        }
        tr_status st = attention(c, b, il, l->swa);
        if (st != TR_OK) return tr_err_set(err, st, "forward: attention of layer %d failed (out of memory?)", il);
        matmul(c, &l->wo, c->att, n, xb2);
        (void)o_dim;
        if (l->post_attn_norm)
            for (int64_t t = 0; t < n; t++) tr_rmsnorm(xb2 + t * E, xb2 + t * E, l->post_attn_norm, E, eps);
        for (int64_t i = 0; i < n * E; i++) x[i] += xb2[i];

        /* Feed-forward. */
        for (int64_t t = 0; t < n; t++) tr_rmsnorm(xb + t * E, x + t * E, l->ffn_norm, E, eps);
        matmul(c, &l->w_gate, xb, n, c->hb);
        matmul(c, &l->w_up, xb, n, c->hb2);
        if (arch->act == TR_ACT_GELU)
            tr_geglu(c->hb, c->hb, c->hb2, n * F);
        else
            tr_swiglu(c->hb, c->hb, c->hb2, n * F);
        matmul(c, &l->w_down, c->hb, n, xb2);
        if (l->post_ffn_norm)
            for (int64_t t = 0; t < n; t++) tr_rmsnorm(xb2 + t * E, xb2 + t * E, l->post_ffn_norm, E, eps);
        for (int64_t i = 0; i < n * E; i++) x[i] += xb2[i];
    }

    /* Logits, only for the tokens that asked for them. */
    if (c->n_out == 0) return TR_OK;
    for (int64_t t = 0; t < n; t++)
        if (c->out_row[t] >= 0) tr_rmsnorm(xb + (int64_t)c->out_row[t] * E, x + t * E, m->output_norm, E, eps);
    matmul(c, &m->output, xb, c->n_out, c->logits);
    if (hp->final_softcap > 0) {
        const float cap = hp->final_softcap;
        const int64_t total = (int64_t)c->n_out * hp->n_vocab;
        for (int64_t i = 0; i < total; i++) c->logits[i] = cap * tanhf(c->logits[i] / cap);
    }
    return TR_OK;
}
