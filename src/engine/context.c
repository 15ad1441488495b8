/* Context life cycle, batch validation and KV-cache bookkeeping. All memory
 * is allocated here at creation; decoding allocates only when a batch asks
 * for more logits rows than any batch before it. */
#include "engine/engine.h"

#include "core/util.h"
#include "quant/blocks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

tr_context_params tr_context_default_params(void) {
    tr_context_params p = {.n_ctx = 0, .n_batch = 0, .n_seq_max = 0, .n_threads = 0, .n_ctx_seq = 0,
                           .kv_block = 0, .prefix_cache = false, .type_k = TR_TYPE_F16, .type_v = TR_TYPE_F16};
    return p;
}

/* The KV cache types, by the names llama.cpp's -ctk / -ctv take. */
#define KV_TYPES(X) X("f16", TR_TYPE_F16) X("q8_0", TR_TYPE_Q8_0) X("q4_0", TR_TYPE_Q4_0) X("tq2_32", TR_TYPE_TQ2_32)
#define KV_ROW(name, type) {name, type},
#define KV_NAME(name, type) ", " name
static const struct {
    const char *name;
    int type;
} kv_types[] = {KV_TYPES(KV_ROW)};

int tr_kv_type_from_name(const char *name) {
    for (size_t i = 0; name && i < sizeof kv_types / sizeof kv_types[0]; i++)
        if (!strcmp(name, kv_types[i].name)) return kv_types[i].type;
    return -1;
}

const char *tr_kv_type_names(void) { return &KV_TYPES(KV_NAME)[2]; } /* past the leading ", " */

static const char *kv_type_name(int type) {
    for (size_t i = 0; i < sizeof kv_types / sizeof kv_types[0]; i++)
        if (kv_types[i].type == type) return kv_types[i].name;
    return NULL;
}

/* A cache type for K or V (0: F16), or an error naming the flag. */
static tr_status kv_type_check(int32_t *type, const char *what, const char *flag, int32_t head, tr_error *err) {
    if (*type == 0) *type = TR_TYPE_F16;
    const char *name = kv_type_name(*type);
    if (!name)
        return tr_err_set(err, TR_ERR_ARG, "context: %s (%s) = %d is not a KV cache type (%s)", what, flag, *type,
                          tr_kv_type_names());
    if (tr_type_block_size(*type) > 1 && head % tr_type_block_size(*type))
        return tr_err_set(err, TR_ERR_ARG,
                          "context: %s %s needs heads of whole blocks of %lld elements; this model's heads have %d",
                          flag, name, (long long)tr_type_block_size(*type), head);
    return TR_OK;
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
    int32_t n_ctx_seq = p->n_ctx_seq, bs = p->kv_block;
    if (n_ctx < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_ctx (-c) = %d is negative", n_ctx);
    if (n_batch < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_batch = %d is negative", n_batch);
    if (n_seq < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_seq_max = %d is negative", n_seq);
    if (n_threads < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_threads (-t) = %d is negative", n_threads);
    if (n_ctx_seq < 0) return tr_err_set(err, TR_ERR_ARG, "context: n_ctx_seq = %d is negative", n_ctx_seq);
    if (bs < 0 || bs > 4096) return tr_err_set(err, TR_ERR_ARG, "context: kv_block = %d is outside [1, 4096]", bs);
    int32_t type_k = p->type_k, type_v = p->type_v;
    tr_status st = kv_type_check(&type_k, "type_k", "-ctk", hp->head_k, err);
    if (st == TR_OK) st = kv_type_check(&type_v, "type_v", "-ctv", hp->head_v, err);
    if (st != TR_OK) return st;
    if (bs == 0) bs = 16;
    if (n_seq == 0) n_seq = 1;
    if (n_ctx == 0 && p->n_window > 0 && p->n_sinks >= 0 && p->n_window <= (1 << 22) && p->n_sinks <= (1 << 22) &&
        n_seq <= 4096) { /* streaming: a pool of just the sequences' windows */
        const int64_t want = (((int64_t)p->n_sinks + p->n_window + bs - 1) / bs * bs + bs) * n_seq;
        n_ctx = want > (1 << 22) ? (1 << 22) + 1 : (int32_t)want; /* too large: refused below */
    }
    if (n_ctx == 0) n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (n_ctx > (1 << 22)) return tr_err_set(err, TR_ERR_ARG, "context: n_ctx (-c) = %d is too large", n_ctx);
    if (n_ctx_seq == 0) n_ctx_seq = n_ctx < hp->n_ctx_train ? n_ctx : hp->n_ctx_train;
    if (n_ctx_seq > n_ctx) n_ctx_seq = n_ctx;
    /* Learned positions exist up to n_ctx_train only. */
    if (m->arch->pos_embd && n_ctx_seq > hp->n_ctx_train) n_ctx_seq = hp->n_ctx_train;
    if (bs == 0) bs = 16;
    const int32_t n_sinks = p->n_sinks, n_window = p->n_window;
    if (n_sinks < 0) return tr_err_set(err, TR_ERR_ARG, "context: --kv-sinks = %d is negative", n_sinks);
    if (n_window < 0) return tr_err_set(err, TR_ERR_ARG, "context: --kv-window = %d is negative", n_window);
    if (n_sinks > 0 && n_window == 0)
        return tr_err_set(err, TR_ERR_ARG, "context: --kv-sinks = %d needs --kv-window (the tokens kept after the sinks)",
                          n_sinks);
    if (n_window > 0) {
        /* A sequence holds at most the sinks and the window rounded up to
         * whole blocks, plus the block a slide drops: so after a slide the
         * window still holds at least n_window tokens. */
        if (n_sinks >= n_ctx_seq)
            return tr_err_set(err, TR_ERR_ARG, "context: --kv-sinks = %d is not below the context of a sequence (%d)",
                              n_sinks, n_ctx_seq);
        const int64_t cap = ((int64_t)n_sinks + n_window + bs - 1) / bs * bs + bs;
        if (cap > n_ctx_seq)
            return tr_err_set(err, TR_ERR_ARG,
                              "context: --kv-sinks %d + --kv-window %d need %lld positions per sequence (rounded to "
                              "blocks of %d, plus one block), more than the context of a sequence (%d, -c / "
                              "--ctx-per-seq)",
                              n_sinks, n_window, (long long)cap, bs, n_ctx_seq);
        n_ctx_seq = (int32_t)cap;
    }
    const bool recurrent = hp->n_layer_rs > 0;
    if (recurrent && n_window > 0)
        return tr_err_set(err, TR_ERR_ARG,
                          "context: --kv-window / --kv-sinks do not apply to %s: it has no KV cache to slide (its "
                          "recurrent state is constant in size)", m->arch->name);
    if (n_batch == 0) n_batch = 512;
    if (n_batch > n_ctx) n_batch = n_ctx;
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
    c->n_ctx_seq = n_ctx_seq;
    c->n_batch = n_batch;
    c->n_seq_max = n_seq;
    c->n_threads = n_threads;
    /* A streaming sequence owns its blocks. A recurrent state is valid at one
     * position only, the end of what it has read: a cached prefix's blocks
     * would need the state at their end, which is not kept (so: off). */
    c->prefix_cache = p->prefix_cache && n_window == 0 && !recurrent;
    c->recurrent = recurrent;
    c->n_sinks = n_window > 0 ? n_sinks : 0;
    c->n_window = n_window;
    c->type_k = type_k;
    c->type_v = type_v;
    /* llama.cpp's conditions (llama_kv_cache: attn_rot_k, attn_rot_v) */
    if (!p->no_kv_rot && tr_type_block_size(type_k) > 1 && hp->head_k % 64 == 0)
        for (c->rot_k = 64; hp->head_k % (2 * c->rot_k) == 0;) c->rot_k *= 2;
    if (!p->no_kv_rot && tr_type_block_size(type_v) > 1 && hp->head_v % 64 == 0) c->rot_v = 64;
    c->k_dim = (int64_t)hp->n_head_kv * hp->head_k;
    c->v_dim = (int64_t)hp->n_head_kv * hp->head_v;
    const int64_t q_dim = (int64_t)hp->n_head * hp->head_k, o_dim = (int64_t)hp->n_head * hp->head_v;
    const int64_t wide = hp->n_embd > q_dim ? hp->n_embd : q_dim;
    /* The pool rounds n_ctx up to whole blocks; one sequence may span all of it. */
    tr_kv_params kp = {.n_blocks = (n_ctx + bs - 1) / bs, .block_size = bs, .n_seq = n_seq,
                       .max_blocks = (n_ctx_seq + bs - 1) / bs, .n_layer = hp->n_layer_kv,
                       .k_row = tr_row_size(type_k, c->k_dim), .v_row = tr_row_size(type_v, c->v_dim)};
    st = tr_kv_new(&kp, &c->kv, err);
    if (st != TR_OK) {
        tr_context_free(c);
        return st;
    }
    bool ok = true;
    c->seq_next = alloc_array((size_t)n_seq, sizeof(int32_t), &ok);
    c->seq_len0 = alloc_array((size_t)n_seq, sizeof(int32_t), &ok);
    c->seq_publish = alloc_array((size_t)n_seq, sizeof(bool), &ok);
    for (int32_t i = 0; ok && i < n_seq; i++) c->seq_publish[i] = true;
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
    if (hp->n_expert > 0) {
        const size_t nx = (size_t)hp->n_expert, k = (size_t)hp->n_expert_used, nb = (size_t)n_batch;
        const size_t nth = (size_t)n_threads;
        c->moe_probs = alloc_array(nb, nx * sizeof(float), &ok);
        c->moe_sel = alloc_array(nb, k * sizeof(int32_t), &ok);
        c->moe_w = alloc_array(nb, k * sizeof(float), &ok);
        c->moe_rows = alloc_array(nth * nb, sizeof(int32_t), &ok);
        c->moe_x = alloc_array(nth * nb, (size_t)hp->n_embd * sizeof(float), &ok);
        c->moe_h = alloc_array(nth * nb, (size_t)hp->n_ff_exp * sizeof(float), &ok);
        c->moe_h2 = alloc_array(nth * nb, (size_t)hp->n_ff_exp * sizeof(float), &ok);
        c->moe_y = alloc_array(nth * nb, (size_t)hp->n_embd * sizeof(float), &ok);
        c->moe_pool = alloc_array(nth, sizeof(tr_pool *), &ok);
        for (size_t i = 0; ok && i < nth; i++) {
            c->moe_pool[i] = tr_pool_new(1);
            if (!c->moe_pool[i]) ok = false;
            else c->moe_nth = (int)i + 1;
        }
        c->moe_out = alloc_array((size_t)n_batch * k, (size_t)hp->n_embd * sizeof(float), &ok);
    }
    if (recurrent) {
        const size_t nb = (size_t)n_batch;
        const int64_t di = hp->ssm_d_inner, in_rows = m->arch->ssm == TR_SSM_MAMBA2
                                                          ? 2 * di + 2 * (int64_t)hp->ssm_n_group * hp->ssm_d_state +
                                                                hp->ssm_n_head
                                                          : 2 * di; /* ssm_in's rows */
        c->conv_layer = (size_t)(hp->ssm_d_conv - 1) * (size_t)hp->ssm_conv_dim;
        c->ssm_layer = (size_t)di * (size_t)hp->ssm_d_state;
        c->conv_state = alloc_array((size_t)n_seq * (size_t)hp->n_layer_rs, c->conv_layer * sizeof(float), &ok);
        c->ssm_state = alloc_array((size_t)n_seq * (size_t)hp->n_layer_rs, c->ssm_layer * sizeof(float), &ok);
        c->ssm_xz = alloc_array(nb, (size_t)in_rows * sizeof(float), &ok);
        c->ssm_xc = alloc_array(nb, (size_t)hp->ssm_conv_dim * sizeof(float), &ok);
        c->ssm_dbc = alloc_array(nb, (size_t)(hp->ssm_dt_rank + 2 * hp->ssm_d_state) * sizeof(float), &ok);
        c->ssm_dtr = alloc_array(nb, (size_t)hp->ssm_dt_rank * sizeof(float), &ok);
        c->ssm_dt = alloc_array(nb, (size_t)hp->ssm_n_head * sizeof(float), &ok);
        c->ssm_y = alloc_array(nb, (size_t)di * sizeof(float), &ok);
    }
    /* One logits row per sequence is the common case (decoding); more rows
     * are added when a batch first asks for them. */
    c->logits_cap = n_seq < n_batch ? n_seq : n_batch;
    c->logits = alloc_array((size_t)c->logits_cap, (size_t)hp->n_vocab * sizeof(float), &ok);
    if (ok) {
        c->pool = tr_pool_new(n_threads);
        if (!c->pool) ok = false;
    }
    if (!ok) {
        tr_context_free(c);
        return tr_err_set(err, TR_ERR_NOMEM, "context: out of memory for n_seq_max = %d, n_batch = %d", n_seq, n_batch);
    }
    *out = c;
    return TR_OK;
}

void tr_context_free(tr_context *c) {
    if (!c) return;
    if (c->pool) tr_pool_free(c->pool);
    tr_kv_free(c->kv);
    free(c->seq_next);
    free(c->seq_len0);
    free(c->seq_publish);
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
    for (int i = 0; i < c->moe_nth; i++) tr_pool_free(c->moe_pool[i]);
    free(c->moe_pool);
    free(c->moe_probs);
    free(c->moe_sel);
    free(c->moe_w);
    free(c->moe_rows);
    free(c->moe_x);
    free(c->moe_h);
    free(c->moe_h2);
    free(c->moe_y);
    free(c->moe_out);
    free(c->moe_seen);
    free(c->conv_state);
    free(c->ssm_state);
    free(c->ssm_xz);
    free(c->ssm_xc);
    free(c->ssm_dbc);
    free(c->ssm_dtr);
    free(c->ssm_dt);
    free(c->ssm_y);
    free(c->logits);
    free(c);
}

int32_t tr_context_n_ctx(const tr_context *c) { return c->n_ctx_seq; }

static void state_set(tr_context *c, int32_t s, int32_t src);

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
    for (int32_t i = 0; i < n; i++) {
        const int32_t seq = b->seq_id[i];
        if (seq >= 0 && seq < c->n_seq_max) c->seq_next[seq] = c->seq_len0[seq] = tr_kv_len(c->kv, seq);
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
        if (pos < 0 || pos >= c->n_ctx_seq)
            return tr_err_set(err, TR_ERR_ARG,
                              "decode: token %d of the batch is at position %d, outside the context [0, %d) (-c)", i,
                              pos, c->n_ctx_seq);
        if (pos != c->seq_next[seq])
            return tr_err_set(err, TR_ERR_ARG,
                              "decode: token %d of the batch is at position %d of sequence %d, which expects position %d "
                              "next",
                              i, pos, seq, c->seq_next[seq]);
        c->seq_next[seq]++;
        const bool want = b->logits ? b->logits[i] != 0 : i == n - 1;
        c->out_row[i] = want ? n_out++ : -1;
    }
    /* Blocks for every sequence's new positions, or none. */
    int64_t need = 0;
    for (int32_t i = 0; i < n; i++) {
        const int32_t seq = b->seq_id[i];
        if (c->seq_next[seq] < 0) continue; /* counted */
        need += tr_kv_blocks_needed(c->kv, seq, c->seq_next[seq] - c->seq_len0[seq]);
        c->seq_next[seq] = -1;
    }
    if (need > tr_kv_available(c->kv))
        return tr_err_set(err, TR_ERR_NOMEM,
                          "decode: the KV cache is full: the batch needs %lld more blocks of %d tokens, %d are free (-c %d)",
                          (long long)need, tr_kv_block_size(c->kv), tr_kv_available(c->kv), c->n_ctx);
    if (n_out > c->logits_cap) {
        float *nl = realloc(c->logits, (size_t)n_out * (size_t)n_vocab * sizeof(float));
        if (!nl) return tr_err_set(err, TR_ERR_NOMEM, "decode: out of memory for %d rows of logits", n_out);
        c->logits = nl;
        c->logits_cap = n_out;
    }
    c->n_out = n_out;
    c->n_batch_last = n;
    tr_status st = TR_OK;
    for (int32_t i = 0; i < n && st == TR_OK; i++) /* cannot fail after the checks above */
        st = tr_kv_append(c->kv, b->seq_id[i], &b->token[i], 1, err);
    if (st == TR_OK) st = tr_forward(c, b, err);
    if (st != TR_OK) { /* the cache as it was */
        for (int32_t i = 0; i < n; i++) tr_kv_truncate(c->kv, b->seq_id[i], c->seq_len0[b->seq_id[i]]);
        /* A hybrid's state-space layers before the failing one have read the
         * batch, and a state cannot go back: its sequences start over. */
        for (int32_t i = 0; c->recurrent && i < n; i++) {
            tr_kv_truncate(c->kv, b->seq_id[i], 0);
            state_set(c, b->seq_id[i], -1);
        }
        c->n_out = 0;
        return st;
    }
    if (c->prefix_cache)
        for (int32_t i = 0; i < n; i++)
            if ((i == 0 || b->seq_id[i] != b->seq_id[i - 1]) && c->seq_publish[b->seq_id[i]])
                tr_kv_publish(c->kv, b->seq_id[i]);
    return TR_OK;
}

const float *tr_get_logits(tr_context *c, int32_t i) {
    if (!c || c->n_out == 0) return NULL;
    if (i < 0) i += c->n_batch_last; /* -1: the last token of the batch */
    if (i < 0 || i >= c->n_batch_last || c->out_row[i] < 0) return NULL;
    return c->logits + (size_t)c->out_row[i] * (size_t)c->model->hp.n_vocab;
}

void tr_kv_store_row(int type, const float *x, void *dst, int64_t n) {
    if (type == TR_TYPE_F16) { /* halves as llama.cpp's default cache rounds them */
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++) h[i] = tr_fp32_to_fp16(x[i]);
    } else { /* the type's quantizer (Q8_0 and Q4_0 as ggml's, byte for byte) */
        tr_quantize(type, x, dst, n);
    }
}

/* Rotate the keys at positions [from, to) of a sequence by delta positions,
 * layer by layer with the layer's own RoPE (base, linear scale, frequency
 * factors): RoPE is a rotation by pos * theta_i, so rope(rope(k, p), d) is
 * rope(k, p + d). The angles are tr_rope's, built the same way (delta times
 * base^(-2i/n_rot) by repeated multiplication in float); one table of cos/sin
 * per layer serves every row. A row is read to float, rotated and stored in
 * the cache's type again: one more rounding to halves for F16, a fresh
 * quantization of the rotated row for the quantized types. A key stored
 * Hadamard-rotated (c->rot_k) is rotated back before RoPE and forward again
 * after it, as llama.cpp's K shift does (RoPE turns pairs of a head's own
 * elements; the Hadamard transform mixes them all). */
static void rotate_keys(tr_context *c, int32_t seq, int32_t from, int32_t to, int32_t delta) {
    const tr_model *m = c->model;
    const tr_hparams *hp = &m->hp;
    const int32_t bs = tr_kv_block_size(c->kv), half = hp->n_rot / 2;
    const int32_t *tab = tr_kv_table(c->kv, seq);
    const size_t k_row = tr_row_size(c->type_k, c->k_dim);
    if (m->arch->rope == TR_ROPE_NONE || hp->no_rope) return; /* no RoPE (GPT-2's learned positions): nothing rotates */
    const bool neox = m->arch->rope == TR_ROPE_NEOX;
    /* the frequency factors forward.c uses (LongRoPE: by the sequence's limit); not rope_mscale, which the
     * stored key carries once already */
    const float *factors = m->rope_freqs;
    if (m->rope_long || m->rope_short) factors = c->n_ctx_seq > hp->n_ctx_orig ? m->rope_long : m->rope_short;
    float cs[half > 0 ? half : 1], sn[half > 0 ? half : 1];
    float *row = c->k; /* scratch: one row of k_dim floats */
    for (int32_t il = 0; il < hp->n_layer; il++) {
        const tr_layer *l = &m->layers[il];
        if (l->kv_layer < 0) continue; /* a state-space layer */
        const float theta_scale = powf(l->rope_base, -2.0f / (float)hp->n_rot);
        float theta_base = (float)delta;
        for (int32_t i = 0; i < half; i++) {
            float theta = theta_base;
            if (factors) theta /= factors[i];
            theta *= l->rope_scale;
            cs[i] = cosf(theta);
            sn[i] = sinf(theta);
            theta_base *= theta_scale;
        }
        uint8_t *k = tr_kv_k_layer(c->kv, l->kv_layer);
        for (int32_t p = from; p < to; p++) {
            uint8_t *dst = k + (size_t)tr_kv_slot(tab, bs, p) * k_row;
            tr_dequantize(c->type_k, dst, row, c->k_dim);
            if (c->rot_k) tr_hadamard(row, c->k_dim / c->rot_k, c->rot_k);
            for (int64_t h = 0; h < hp->n_head_kv; h++) {
                float *x = row + h * hp->head_k;
                for (int32_t i = 0; i < half; i++) {
                    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
                    const float x0 = x[a], x1 = x[b];
                    x[a] = x0 * cs[i] - x1 * sn[i];
                    x[b] = x0 * sn[i] + x1 * cs[i];
                }
            }
            if (c->rot_k) tr_hadamard(row, c->k_dim / c->rot_k, c->rot_k);
            tr_kv_store_row(c->type_k, row, dst, c->k_dim);
        }
    }
}

tr_status tr_kv_seq_slide(tr_context *c, int32_t seq, int32_t *dropped, tr_error *err) {
    if (dropped) *dropped = 0;
    if (!c) return tr_err_set(err, TR_ERR_ARG, "kv: no context");
    if (c->n_window == 0) return tr_err_set(err, TR_ERR_ARG, "kv: slide: the context is not streaming (--kv-window)");
    if (seq < 0 || seq >= c->n_seq_max)
        return tr_err_set(err, TR_ERR_ARG, "kv: slide: sequence %d outside [0, %d)", seq, c->n_seq_max);
    const int32_t len = tr_kv_len(c->kv, seq), bs = tr_kv_block_size(c->kv);
    if (len < c->n_ctx_seq) return TR_OK;
    tr_status st = tr_kv_slide(c->kv, seq, c->n_sinks, err);
    if (st != TR_OK) return st;
    rotate_keys(c, seq, c->n_sinks, len - bs, -bs);
    if (dropped) *dropped = bs;
    return TR_OK;
}

void tr_context_stream(const tr_context *c, int32_t *n_sinks, int32_t *n_window) {
    if (n_sinks) *n_sinks = c ? c->n_sinks : 0;
    if (n_window) *n_window = c ? c->n_window : 0;
}

/* Sequence s's recurrent state (every layer) to zeros, or a copy of src's. */
static void state_set(tr_context *c, int32_t s, int32_t src) {
    const size_t nl = (size_t)c->model->hp.n_layer_rs, nc = nl * c->conv_layer, ns = nl * c->ssm_layer;
    float *conv = c->conv_state + (size_t)s * nc, *ssm = c->ssm_state + (size_t)s * ns;
    if (src < 0) {
        memset(conv, 0, nc * sizeof(float));
        memset(ssm, 0, ns * sizeof(float));
    } else {
        memcpy(conv, c->conv_state + (size_t)src * nc, nc * sizeof(float));
        memcpy(ssm, c->ssm_state + (size_t)src * ns, ns * sizeof(float));
    }
}

bool tr_kv_seq_rm(tr_context *c, int32_t seq, int32_t p0, int32_t p1) {
    if (!c) return false;
    if (p0 < 0) p0 = 0;
    const int32_t s0 = seq < 0 ? 0 : seq, s1 = seq < 0 ? c->n_seq_max : seq + 1;
    if (seq >= c->n_seq_max) return false;
    for (int32_t s = s0; s < s1; s++) { /* all or nothing */
        if (p1 >= 0 && p1 < tr_kv_len(c->kv, s) && p0 < p1) return false;
        /* A recurrent state holds the whole past in one: it can be dropped
         * (p0 = 0), not cut back to an earlier position. */
        if (c->recurrent && p0 > 0 && p0 < tr_kv_len(c->kv, s)) return false;
    }
    for (int32_t s = s0; s < s1; s++) {
        if (c->recurrent && p0 == 0 && tr_kv_len(c->kv, s) > 0) state_set(c, s, -1);
        tr_kv_truncate(c->kv, s, p0);
    }
    return true;
}

int32_t tr_kv_seq_len(const tr_context *c, int32_t seq) {
    if (!c || seq < 0 || seq >= c->n_seq_max) return 0;
    return tr_kv_len(c->kv, seq);
}

tr_status tr_kv_seq_cp(tr_context *c, int32_t src, int32_t dst, tr_error *err) {
    if (!c) return tr_err_set(err, TR_ERR_ARG, "kv: no context");
    tr_status st = tr_kv_fork(c->kv, src, dst, err);
    if (st == TR_OK && c->recurrent) state_set(c, dst, src); /* the fork goes on from src's state */
    return st;
}

int32_t tr_kv_seq_reuse(tr_context *c, int32_t seq, const int32_t *tokens, int32_t n) {
    if (!c || !c->prefix_cache || seq < 0 || seq >= c->n_seq_max || n > c->n_ctx_seq) return 0;
    return tr_kv_reuse(c->kv, seq, tokens, n, true); /* the engine counts lookups (tr_kv_note_lookup) */
}

void tr_context_seq_publish(tr_context *c, int32_t seq, bool on) {
    if (seq >= 0 && seq < c->n_seq_max) c->seq_publish[seq] = on;
}

void tr_context_kv_stats(const tr_context *c, tr_kv_stats *o) {
    tr_kv_counts k;
    tr_kv_counts_get(c->kv, &k);
    o->block_size = tr_kv_block_size(c->kv);
    o->n_blocks = k.n_blocks;
    o->blocks_used = k.used;
    o->blocks_cached = k.cached;
    o->tokens_held = k.tokens_held;
    o->evictions = k.evictions;
    o->hit_tokens = k.hit_tokens;
    o->lookup_tokens = k.lookup_tokens;
    o->bytes_per_block = (size_t)o->block_size * (size_t)c->model->hp.n_layer_kv *
                         (tr_row_size(c->type_k, c->k_dim) + tr_row_size(c->type_v, c->v_dim));
}

tr_status tr_context_set_matmul_observer(tr_context *c, tr_matmul_observer fn, void *user, tr_error *err) {
    const tr_hparams *hp = &c->model->hp;
    if (fn && hp->n_expert > 0 && !c->moe_seen) {
        bool ok = true;
        c->moe_seen = alloc_array((size_t)c->n_batch * (size_t)hp->n_expert_used, (size_t)hp->n_ff_exp * sizeof(float),
                                  &ok);
        if (!ok) return tr_err_set(err, TR_ERR_NOMEM, "out of memory for the experts' observed inputs");
    }
    c->mm_observer = fn;
    c->mm_user = user;
    return TR_OK;
}
