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

typedef struct attn_job {
    tr_context *c;
    const tr_batch *b;
    int layer;
    bool swa;
} attn_job;

/* Sum of 8 partial sums in the order of an 8-wide SIMD horizontal add
 * (halves, then pairs, then the last two). */
static float hsum8(const float *l) {
    const float a0 = l[0] + l[4], a1 = l[1] + l[5], a2 = l[2] + l[6], a3 = l[3] + l[7];
    return (a0 + a2) + (a1 + a3);
}

/* One (token, head) pair: softmax(q . k_p * scale) over the valid positions
 * p <= pos of the token's own sequence (and within the window on local
 * layers), then the weighted sum of v_p.
 *
 * The roundings follow llama.cpp's CPU graph (without flash attention), so
 * that quantized models, whose activation quantization turns tiny
 * differences into whole quantization steps, stay close to it: q meets the
 * half-precision cache as halves, the scores and softmax are float, and the
 * weights meet the values as halves again. Dot products keep 8 partial
 * sums (element i into lane i mod 8), the order of llama.cpp's 8-wide
 * kernels, so that float rounding differs as little as possible. */
static void attend_one(tr_context *c, const tr_batch *b, int layer, bool swa, int32_t t, int32_t h, float *scores,
                       float *qh, float *acc) {
    const tr_hparams *hp = &c->model->hp;
    const int32_t pos = b->pos[t], seq = b->seq_id[t];
    const int32_t hk = hp->head_k, hv = hp->head_v;
    const int32_t kvh = h / (hp->n_head / hp->n_head_kv);
    const float *q = c->q + (size_t)t * hp->n_head * hk + (size_t)h * hk;
    float *out = c->att + (size_t)t * hp->n_head * hv + (size_t)h * hv;
    const size_t slot0 = ((size_t)layer * c->n_seq_max + (size_t)seq) * (size_t)c->n_ctx;
    const uint16_t *kc = c->k_cache + slot0 * (size_t)c->k_dim + (size_t)kvh * hk;
    const uint16_t *vc = c->v_cache + slot0 * (size_t)c->v_dim + (size_t)kvh * hv;
    const uint8_t *valid = c->valid + (size_t)seq * c->n_ctx;
    int32_t p_lo = 0;
    if (swa && pos - hp->n_swa + 1 > 0) p_lo = pos - hp->n_swa + 1; /* masked when pos - p >= n_swa */
    /* Same math either way; the rounding differs (q is rounded to halves). */
    const bool scale_q = c->model->arch->scale_q;
    const float q_scale = scale_q ? hp->attn_scale : 1.0f, scale = scale_q ? 1.0f : hp->attn_scale;
    const float *h2f = c->half_to_float;
    for (int32_t i = 0; i < hk; i++) qh[i] = h2f[tr_half_from_float(q[i] * q_scale)];
    float max = -INFINITY;
    for (int32_t p = p_lo; p <= pos; p++) {
        if (!valid[p]) continue;
        const uint16_t *kp = kc + (size_t)p * c->k_dim;
        float lane[8] = {0};
        for (int32_t i = 0; i < hk; i++) lane[i & 7] += qh[i] * h2f[kp[i]];
        float s = hsum8(lane) * scale;
        scores[p - p_lo] = s;
        if (s > max) max = s;
    }
    double sum = 0;
    for (int32_t p = p_lo; p <= pos; p++) {
        if (!valid[p]) continue;
        const float e = expf(scores[p - p_lo] - max);
        scores[p - p_lo] = e;
        sum += e;
    }
    memset(acc, 0, (size_t)hv * 8 * sizeof(float));
    const float inv = (float)(1.0 / sum);
    for (int32_t p = p_lo; p <= pos; p++) {
        if (!valid[p]) continue;
        const float w = h2f[tr_half_from_float(scores[p - p_lo] * inv)];
        const uint16_t *vp = vc + (size_t)p * c->v_dim;
        float *a = acc + (p & 7);
        for (int32_t i = 0; i < hv; i++) a[i * 8] += w * h2f[vp[i]];
    }
    for (int32_t i = 0; i < hv; i++) out[i] = hsum8(acc + i * 8);
}

static void attn_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    tr_context *c = j->c;
    const int64_t n_head = c->model->hp.n_head;
    const int64_t total = (int64_t)j->b->n_tokens * n_head;
    const int64_t per = (total + nth - 1) / nth;
    const int64_t lo = per * ith, hi = lo + per < total ? lo + per : total;
    float *scores = c->scores + (size_t)ith * (c->n_ctx + c->model->hp.head_k + 8 * c->model->hp.head_v);
    float *qh = scores + c->n_ctx;
    float *acc = qh + c->model->hp.head_k;
    for (int64_t w = lo; w < hi; w++)
        attend_one(c, j->b, j->layer, j->swa, (int32_t)(w / n_head), (int32_t)(w % n_head), scores, qh, acc);
}

/* ------------------------------------------------------------------ forward */

tr_status tr_forward(tr_context *c, const tr_batch *b, tr_error *err) {
    (void)err;
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
            /* Into the cache, at this token's slot of its sequence. */
            const size_t slot = ((size_t)il * c->n_seq_max + (size_t)b->seq_id[t]) * (size_t)c->n_ctx + (size_t)b->pos[t];
            uint16_t *kc = c->k_cache + slot * (size_t)k_dim, *vc = c->v_cache + slot * (size_t)v_dim;
            const float *v = c->v + t * v_dim;
            for (int64_t i = 0; i < k_dim; i++) kc[i] = tr_half_from_float(k[i]);
            for (int64_t i = 0; i < v_dim; i++) vc[i] = tr_half_from_float(v[i]);
        }
        attn_job job = {.c = c, .b = b, .layer = il, .swa = l->swa};
        tr_pool_run(c->pool, attn_worker, &job);
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
