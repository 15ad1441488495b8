/* Context life cycle, batch validation and KV-cache bookkeeping. All memory
 * is allocated here at creation; decoding allocates only when a batch asks
 * for more logits rows than any batch before it. */
#include "engine/engine.h"

#include "core/util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

tr_context_params tr_context_default_params(void) {
    tr_context_params p = {.n_ctx = 0, .n_batch = 0, .n_seq_max = 0, .n_threads = 0};
    return p;
}

static void *alloc_array(size_t n, size_t size, bool *ok) {
    uint64_t bytes;
    if (!tr_mul_u64(n, size, &bytes) || bytes > ((uint64_t)1 << 40)) {
        *ok = false;
        return NULL;
    }
    void *p = calloc(1, bytes ? (size_t)bytes : 1);
    if (!p) *ok = false;
    return p;
}

tr_status tr_context_new(tr_model *m, const tr_context_params *p, tr_context **out, tr_error *err) {
    *out = NULL;
    if (!m) return tr_err_set(err, TR_ERR_ARG, "context: no model");
    tr_context_params d = tr_context_default_params();
    if (!p) p = &d;
    const tr_hparams *hp = &m->hp;
    int32_t n_ctx = p->n_ctx, n_batch = p->n_batch, n_seq = p->n_seq_max, n_threads = p->n_threads;
    if (n_ctx < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_ctx (-c) = %d is negative", n_ctx);
    if (n_batch < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_batch = %d is negative", n_batch);
    if (n_seq < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_seq_max = %d is negative", n_seq);
    if (n_threads < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_threads (-t) = %d is negative", n_threads);
    if (n_ctx == 0) n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (n_ctx > (1 << 22)) return tr_err_set(err, TR_ERR_ARG, "context: n_ctx (-c) = %d is too large", n_ctx);
    if (n_batch == 0) n_batch = 512;
    if (n_batch > n_ctx * (n_seq ? n_seq : 1)) n_batch = n_ctx * (n_seq ? n_seq : 1);
    if (n_seq == 0) n_seq = 1;
    if (n_seq > 4096) return tr_err_set(err, TR_ERR_ARG, "context: n_seq_max = %d is too large", n_seq);
    if (n_threads == 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 0 ? (int32_t)nc : 1;
    }
    if (n_threads > 256) n_threads = 256;

    tr_context *c = calloc(1, sizeof *c);
    if (!c) return tr_err_set(err, TR_ERR_NOMEM, "context: out of memory");
    c->model = m;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->n_seq_max = n_seq;
    c->n_threads = n_threads;
    c->k_dim = (int64_t)hp->n_head_kv * hp->head_k;
    c->v_dim = (int64_t)hp->n_head_kv * hp->head_v;
    const size_t slots = (size_t)n_seq * (size_t)n_ctx;
    const int64_t q_dim = (int64_t)hp->n_head * hp->head_k, o_dim = (int64_t)hp->n_head * hp->head_v;
    const int64_t wide = hp->n_embd > q_dim ? hp->n_embd : q_dim;
    bool ok = true;
    c->k_cache = alloc_array(slots * (size_t)hp->n_layer, (size_t)c->k_dim * 2, &ok);
    c->v_cache = alloc_array(slots * (size_t)hp->n_layer, (size_t)c->v_dim * 2, &ok);
    c->valid = alloc_array(slots, 1, &ok);
    c->stamp = alloc_array(slots, sizeof(uint32_t), &ok);
    c->seq_len = alloc_array((size_t)n_seq, sizeof(int32_t), &ok);
    c->x = alloc_array((size_t)n_batch, (size_t)hp->n_embd * sizeof(float), &ok);
    c->xb = alloc_array((size_t)n_batch, (size_t)wide * sizeof(float), &ok);
    c->xb2 = alloc_array((size_t)n_batch, (size_t)hp->n_embd * sizeof(float), &ok);
    c->q = alloc_array((size_t)n_batch, (size_t)q_dim * sizeof(float), &ok);
    c->k = alloc_array((size_t)n_batch, (size_t)c->k_dim * sizeof(float), &ok);
    c->v = alloc_array((size_t)n_batch, (size_t)c->v_dim * sizeof(float), &ok);
    c->att = alloc_array((size_t)n_batch, (size_t)o_dim * sizeof(float), &ok);
    c->hb = alloc_array((size_t)n_batch, (size_t)hp->n_ff * sizeof(float), &ok);
    c->hb2 = alloc_array((size_t)n_batch, (size_t)hp->n_ff * sizeof(float), &ok);
    c->out_row = alloc_array((size_t)n_batch, sizeof(int32_t), &ok);
    /* One logits row per sequence is the common case (decoding); more rows
     * are added when a batch first asks for them. */
    c->logits_cap = n_seq;
    c->logits = alloc_array((size_t)n_seq, (size_t)hp->n_vocab * sizeof(float), &ok);
    if (ok) {
        c->pool = tr_pool_new(n_threads);
        if (!c->pool) ok = false;
    }
    if (!ok) {
        tr_context_free(c);
        return tr_err_set(err, TR_ERR_NOMEM,
                          "context: out of memory for n_ctx = %d, n_seq_max = %d, n_batch = %d (KV cache %.1f MiB)",
                          n_ctx, n_seq, n_batch,
                          (double)slots * hp->n_layer * (double)(c->k_dim + c->v_dim) * 2 / (1024.0 * 1024.0));
    }
    *out = c;
    return TR_OK;
}

void tr_context_free(tr_context *c) {
    if (!c) return;
    if (c->pool) tr_pool_free(c->pool);
    free(c->k_cache);
    free(c->v_cache);
    free(c->valid);
    free(c->stamp);
    free(c->seq_len);
    free(c->x);
    free(c->xb);
    free(c->xb2);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->out_row);
    free(c->logits);
    free(c);
}

int32_t tr_context_n_ctx(const tr_context *c) { return c->n_ctx; }

tr_status tr_decode(tr_context *c, const tr_batch *b, tr_error *err) {
    if (!c || !b) return tr_err_set(err, TR_ERR_ARG, "decode: no context or batch");
    const int32_t n = b->n_tokens;
    if (n <= 0) return tr_err_set(err, TR_ERR_ARG, "decode: batch is empty (n_tokens = %d)", n);
    if (n > c->n_batch)
        return tr_err_set(err, TR_ERR_ARG, "decode: batch of %d tokens is larger than n_batch = %d", n, c->n_batch);
    if (!b->token || !b->pos || !b->seq_id) return tr_err_set(err, TR_ERR_ARG, "decode: batch arrays missing");
    const int32_t n_vocab = c->model->hp.n_vocab;
    /* Validate everything before touching the cache, so that an error
     * leaves it as it was. */
    if (++c->stamp_now == 0) { /* wrapped: clear the stamps once */
        memset(c->stamp, 0, (size_t)c->n_seq_max * (size_t)c->n_ctx * sizeof(uint32_t));
        c->stamp_now = 1;
    }
    int32_t n_out = 0;
    for (int32_t i = 0; i < n; i++) {
        const int32_t tok = b->token[i], pos = b->pos[i], seq = b->seq_id[i];
        if (tok < 0 || tok >= n_vocab)
            return tr_err_set(err, TR_ERR_ARG, "decode: token %d of the batch is id %d, outside the vocabulary [0, %d)",
                              i, tok, n_vocab);
        if (seq < 0 || seq >= c->n_seq_max)
            return tr_err_set(err, TR_ERR_ARG, "decode: token %d of the batch has seq_id %d, outside [0, %d)", i, seq,
                              c->n_seq_max);
        if (pos < 0 || pos >= c->n_ctx)
            return tr_err_set(err, TR_ERR_ARG,
                              "decode: token %d of the batch is at position %d, outside the context [0, %d) (-c)", i,
                              pos, c->n_ctx);
        uint32_t *st = &c->stamp[(size_t)seq * c->n_ctx + pos];
        if (*st == c->stamp_now)
            return tr_err_set(err, TR_ERR_ARG, "decode: position %d of sequence %d appears twice in the batch", pos,
                              seq);
        *st = c->stamp_now;
        const bool want = b->logits ? b->logits[i] != 0 : i == n - 1;
        c->out_row[i] = want ? n_out++ : -1;
    }
    if (n_out > c->logits_cap) {
        float *nl = realloc(c->logits, (size_t)n_out * (size_t)n_vocab * sizeof(float));
        if (!nl) return tr_err_set(err, TR_ERR_NOMEM, "decode: out of memory for %d rows of logits", n_out);
        c->logits = nl;
        c->logits_cap = n_out;
    }
    c->n_out = n_out;
    c->n_batch_last = n;
    for (int32_t i = 0; i < n; i++) {
        const int32_t pos = b->pos[i], seq = b->seq_id[i];
        c->valid[(size_t)seq * c->n_ctx + pos] = 1;
        if (pos + 1 > c->seq_len[seq]) c->seq_len[seq] = pos + 1;
    }
    return tr_forward(c, b, err);
}

const float *tr_get_logits(tr_context *c, int32_t i) {
    if (!c || c->n_out == 0) return NULL;
    if (i < 0) i += c->n_batch_last; /* -1: the last token of the batch */
    if (i < 0 || i >= c->n_batch_last || c->out_row[i] < 0) return NULL;
    return c->logits + (size_t)c->out_row[i] * (size_t)c->model->hp.n_vocab;
}

static void seq_rm_one(tr_context *c, int32_t seq, int32_t p0, int32_t p1) {
    uint8_t *v = c->valid + (size_t)seq * c->n_ctx;
    if (p0 < p1) memset(v + p0, 0, (size_t)(p1 - p0));
    int32_t len = c->seq_len[seq];
    while (len > 0 && !v[len - 1]) len--;
    c->seq_len[seq] = len;
}

void tr_kv_seq_rm(tr_context *c, int32_t seq, int32_t p0, int32_t p1) {
    if (!c) return;
    if (p0 < 0) p0 = 0;
    if (p1 < 0 || p1 > c->n_ctx) p1 = c->n_ctx;
    if (p0 > c->n_ctx) p0 = c->n_ctx;
    if (seq < 0) { /* every sequence, as llama.cpp's seq_id -1 */
        for (int32_t s = 0; s < c->n_seq_max; s++) seq_rm_one(c, s, p0, p1);
    } else if (seq < c->n_seq_max) {
        seq_rm_one(c, seq, p0, p1);
    }
}

int32_t tr_kv_seq_len(const tr_context *c, int32_t seq) {
    if (!c || seq < 0 || seq >= c->n_seq_max) return 0;
    return c->seq_len[seq];
}
