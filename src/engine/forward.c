/* The forward pass over a batch, read top to bottom like the paper:
 *
 *   x = embed(tokens) [* sqrt(n_embd)] [+ embed_pos(positions)]
 *   for each layer:
 *       h = norm(x) ; q, k, v = h Wq, h Wk, h Wv [+ biases]
 *       [q, k = rmsnorm per head] ; [q, k = rope(q, k, pos)]
 *       cache k, v ; a = softmax([cap * tanh](q k^T * scale / cap), causal [, window]) v
 *       [a = rmsnorm(a)] ; a = a Wo [+ bo] [; a = rmsnorm(a)] ; x = x + a
 *       h = norm(x) ; f = act(h Wgate) * h Wup  or  act(h Wup + b)
 *       [; f = rmsnorm(f)] ; f = f Wdown [+ b] [; f = rmsnorm(f)] ; x = x + f
 *   logits = norm(x) Wout [; cap * tanh(logits / cap)]
 *
 * norm is RMSNorm or LayerNorm with bias. Bracketed steps are fields of the
 * architecture descriptor (model.h); a matrix's product may be multiplied by
 * its scale (BitNet's {name}.scale). All tokens of the batch go through each
 * matmul together (matrix-matrix work); weights are read in place from the
 * mapping. */
#include "engine/engine.h"

#include "core/util.h"
#include "quant/quant.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

/* y = x W^T [* the matrix's scale] for n rows of x. */
static void matmul(tr_context *c, const tr_weight *w, const float *x, int64_t n, float *y) {
    if (c->mm_observer && n >= 16 && w->name)
        c->mm_observer(c->mm_user, &(tr_matmul_seen){.weight = w->name, .x = x, .n_tokens = n, .cols = w->cols});
    tr_matmul(c->pool, w->type, w->data, w->rows, w->cols, x, n, y);
    if (w->scale) { /* BitNet's {name}.scale: the product times one float, as ggml_mul */
        const float s = w->scale[0];
        for (int64_t i = 0; i < n * w->rows; i++) y[i] *= s;
    }
}

/* Rows [r0, r0 + rows) of a weight (one expert's matrix). */
static tr_weight weight_rows(const tr_weight *w, int64_t r0, int64_t rows) {
    tr_weight p = *w;
    p.data = (const uint8_t *)w->data + (size_t)r0 * tr_row_size(w->type, w->cols);
    p.rows = rows;
    return p;
}

static void add_bias(float *y, const float *bias, int64_t n_tokens, int64_t dim) {
    if (!bias) return;
    for (int64_t t = 0; t < n_tokens; t++)
        for (int64_t i = 0; i < dim; i++) y[t * dim + i] += bias[i];
}

/* The architecture's norm of each of n rows of E. */
static void norm_rows(const tr_arch *arch, float *y, const float *x, const float *w, const float *b, int64_t n,
                      int64_t E, float eps) {
    for (int64_t t = 0; t < n; t++) {
        if (arch->norm == TR_NORM_LAYER)
            tr_layernorm(y + t * E, x + t * E, w, b, E, eps);
        else
            tr_rmsnorm(y + t * E, x + t * E, w, E, eps);
    }
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
 * K as Q8_0 blocks in integer dot products, V is dequantized in registers.
 * A quantized cache holds its entries rotated (c->rot_k, c->rot_v; see
 * tr_context_params.no_kv_rot): the keys were rotated when stored, so the
 * queries are rotated here (after the scale, as llama.cpp's graph), and the
 * values were, so the output is rotated back (H is its own inverse). */
static tr_status attention(tr_context *c, const tr_batch *b, int layer, bool swa) {
    const tr_hparams *hp = &c->model->hp;
    /* Same math either way; the rounding differs (q is rounded to halves
     * after the scale when the architecture scales q). */
    const bool scale_q = c->model->arch->scale_q;
    if (scale_q) {
        const int64_t n = (int64_t)b->n_tokens * hp->n_head * hp->head_k;
        for (int64_t i = 0; i < n; i++) c->q[i] *= hp->attn_scale;
    }
    if (c->rot_k) tr_hadamard(c->q, (int64_t)b->n_tokens * hp->n_head * hp->head_k / c->rot_k, c->rot_k);
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
        .softcap = hp->attn_softcap,
        .flags = TR_ATTN_HALF_Q | TR_ATTN_HALF_P,
    };
    tr_status st = tr_attention(c->pool, &p, c->q, tr_kv_k_layer(c->kv, layer), tr_kv_v_layer(c->kv, layer), c->att);
    if (st == TR_OK && c->rot_v)
        tr_hadamard(c->att, (int64_t)b->n_tokens * hp->n_head * hp->head_v / c->rot_v, c->rot_v);
    return st;
}

/* -------------------------------------------------------- mixture of experts */

typedef struct moe_job {
    tr_context *c;
    const tr_layer *l;
    const float *h;
    int64_t n;
    atomic_int next; /* the next expert to take */
} moe_job;

/* Expert e on the rows that chose it, with thread ith's buffers and
 * one-thread pool: gather, SwiGLU, down, and each row's output times its
 * weight into moe_out. A single-thread matmul gives the bits a multi-thread
 * one gives (tr_matmul's rows do not depend on the split). */
static void run_expert(const moe_job *j, int32_t e, int ith) {
    tr_context *c = j->c;
    const tr_hparams *hp = &c->model->hp;
    const int64_t E = hp->n_embd, FX = hp->n_ff_exp, K = hp->n_expert_used, nb = c->n_batch;
    int32_t *rows = c->moe_rows + ith * nb;
    float *x = c->moe_x + ith * nb * E, *h1 = c->moe_h + ith * nb * FX, *h2 = c->moe_h2 + ith * nb * FX;
    float *y = c->moe_y + ith * nb * E;
    int64_t m = 0;
    for (int64_t t = 0; t < j->n; t++)
        for (int64_t k = 0; k < K; k++)
            if (c->moe_sel[t * K + k] == e) {
                rows[m] = (int32_t)(t * K + k);
                memcpy(x + m * E, j->h + t * E, sizeof(float) * (size_t)E);
                m++;
            }
    if (m == 0) return; /* an expert nobody chose is never read */
    const tr_weight gate = weight_rows(&j->l->gate_exps, e * FX, FX), up = weight_rows(&j->l->up_exps, e * FX, FX);
    const tr_weight down = weight_rows(&j->l->down_exps, e * E, E);
    tr_pool *p = c->moe_pool[ith];
    tr_matmul(p, gate.type, gate.data, gate.rows, gate.cols, x, m, h1);
    tr_matmul(p, up.type, up.data, up.rows, up.cols, x, m, h2);
    tr_swiglu(h1, h1, h2, m * FX);
    if (c->mm_observer) /* each choice's input of down, in its (token, choice) place */
        for (int64_t r = 0; r < m; r++)
            memcpy(c->moe_seen + (int64_t)rows[r] * FX, h1 + r * FX, sizeof(float) * (size_t)FX);
    tr_matmul(p, down.type, down.data, down.rows, down.cols, h1, m, y);
    for (int64_t r = 0; r < m; r++) {
        const float wt = c->moe_w[rows[r]];
        float *o = c->moe_out + (int64_t)rows[r] * E;
        for (int64_t i = 0; i < E; i++) o[i] = y[r * E + i] * wt;
    }
}

static void moe_part(void *arg, int ith, int nth) {
    moe_job *j = arg;
    (void)nth;
    for (;;) {
        const int32_t e = atomic_fetch_add(&j->next, 1);
        if (e >= j->c->model->hp.n_expert) return;
        run_expert(j, e, ith);
    }
}

/* f = sum over the token's chosen experts e, best first, of w_e * FFN_e(h),
 * as llama.cpp's build_moe_ffn: p = softmax(h Wrouter); the n_expert_used
 * largest p (ties: the lower expert first); w = those p [/ their sum]. The
 * batch is grouped by expert: each expert's matrices are read once for all
 * the rows that chose it, and only the chosen experts' rows are read; the
 * threads take whole experts (an atomic counter), not parts of each. A
 * row's result is a function of that row alone (tr_matmul's rows are
 * independent of their batch mates) and the sum runs in the token's own
 * choice order: batch-invariant. h: xb; f: xb2. */
static void moe_ffn(tr_context *c, const tr_layer *l, const float *h, int64_t n, float *f) {
    const tr_hparams *hp = &c->model->hp;
    const int64_t E = hp->n_embd, X = hp->n_expert, K = hp->n_expert_used;
    matmul(c, &l->gate_inp, h, n, c->moe_probs);
    for (int64_t t = 0; t < n; t++) {
        float *p = c->moe_probs + t * X;
        tr_softmax(p, X);
        int32_t *sel = c->moe_sel + t * K;
        float *w = c->moe_w + t * K;
        for (int64_t j = 0; j < K; j++) { /* selection: K is small */
            int32_t best = -1;
            for (int32_t e = 0; e < X; e++) {
                bool taken = false;
                for (int64_t i = 0; i < j; i++) taken |= sel[i] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[j] = best;
            w[j] = p[best];
        }
        if (c->model->arch->moe_norm_w) {
            double sum = 0; /* ggml_sum_rows: a double sum, rounded */
            for (int64_t j = 0; j < K; j++) sum += w[j];
            float s = (float)sum;
            if (s < 6.103515625e-5f) s = 6.103515625e-5f; /* llama.cpp's clamp */
            for (int64_t j = 0; j < K; j++) w[j] /= s;
        }
    }
    tr_matmul_seen seen = {.x = h, .n_tokens = n, .cols = hp->n_embd, .ids = c->moe_sel, .n_used = (int32_t)K,
                           .n_expert = (int32_t)X};
    if (c->mm_observer) {
        seen.weight = l->gate_exps.name;
        if (seen.weight) c->mm_observer(c->mm_user, &seen);
        seen.weight = l->up_exps.name;
        if (seen.weight) c->mm_observer(c->mm_user, &seen);
    }
    moe_job j = {.c = c, .l = l, .h = h, .n = n};
    atomic_init(&j.next, 0);
    if (c->moe_nth > 1 && tr_pool_size(c->pool) <= c->moe_nth)
        tr_pool_run(c->pool, moe_part, &j);
    else
        moe_part(&j, 0, 1);
    if (c->mm_observer && l->down_exps.name) {
        seen.weight = l->down_exps.name, seen.x = c->moe_seen, seen.cols = hp->n_ff_exp, seen.per_choice = true;
        c->mm_observer(c->mm_user, &seen);
    }
    for (int64_t t = 0; t < n; t++) { /* ((y_0 + y_1) + y_2) ..., the token's choice order */
        float *o = f + t * E;
        memcpy(o, c->moe_out + t * K * E, sizeof(float) * (size_t)E);
        for (int64_t j = 1; j < K; j++)
            for (int64_t i = 0; i < E; i++) o[i] += c->moe_out[(t * K + j) * E + i];
    }
}

/* ------------------------------------------------------- state-space layers */

typedef struct ssm_job {
    const tr_ssm_batch *b;
    /* convolution */
    const float *in;
    int64_t in_stride;
    const tr_layer *l;
    int d_conv;
    int64_t conv_dim;
    float *xc;
    /* scan */
    const tr_ssm_scan_params *sp;
    float *y;
    /* gate: y + D*x, times silu(z) [, RMSNorm per group], token rows */
    const float *xz;
    int64_t n, in_rows, z_off, head_dim, n_group;
    float eps;
} ssm_job;

/* Thread ith's share of [0, n), in units of `unit` (so that no two threads
 * share a cache line of the state more than needed). */
static void share(int64_t n, int64_t unit, int ith, int nth, int64_t *a, int64_t *z) {
    const int64_t units = (n + unit - 1) / unit, per = (units + nth - 1) / nth;
    *a = per * ith * unit;
    *z = *a + per * unit;
    if (*a > n) *a = n;
    if (*z > n) *z = n;
}

static void ssm_conv_part(void *arg, int ith, int nth) {
    const ssm_job *j = arg;
    int64_t c0, c1;
    share(j->conv_dim, 16, ith, nth, &c0, &c1);
    if (c0 < c1)
        tr_ssm_conv(j->b, j->in, j->in_stride, j->l->ssm_conv1d, j->l->ssm_conv1d_b, j->d_conv, j->conv_dim, c0, c1,
                    j->xc);
}

static void ssm_scan_part(void *arg, int ith, int nth) {
    const ssm_job *j = arg;
    int64_t h0, h1;
    share(j->sp->n_head, j->sp->head_dim > 1 ? 1 : 16, ith, nth, &h0, &h1);
    if (h0 < h1) tr_ssm_scan(j->b, j->sp, h0, h1, j->y);
}

/* Thread ith's token rows of y = (y + D*x) * silu(z) [, then RMSNorm per
 * group]: each row a function of itself alone. */
static void ssm_gate_part(void *arg, int ith, int nth) {
    const ssm_job *j = arg;
    const tr_layer *l = j->l;
    const int64_t DI = j->sp->n_head * j->head_dim, gs = DI / j->n_group;
    int64_t t0, t1;
    share(j->n, 1, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        float *yt = j->y + t * DI;
        const float *xt = j->sp->x + t * j->sp->x_stride;
        for (int64_t i = 0; i < DI; i++) yt[i] += xt[i] * l->ssm_d[i / j->head_dim];
        tr_swiglu(yt, j->xz + t * j->in_rows + j->z_off, yt, DI);
        if (l->ssm_norm)
            for (int64_t g = 0; g < j->n_group; g++) tr_rmsnorm(yt + g * gs, yt + g * gs, l->ssm_norm + g * gs, gs, j->eps);
    }
}

/* out = ssm(h) for one Mamba / Mamba-2 layer (llama.cpp's build_mamba_layer
 * and build_mamba2_layer), h the normed input of n tokens:
 *   Mamba:   x, z = h Win ; x = silu(conv(x) + b) ; dt, B, C = x Wx ;
 *            dt = dt Wdt + bdt ; y = scan(x, dt, A, B, C) + D*x ;
 *            out = (y * silu(z)) Wout
 *   Mamba-2: z, xBC, dt = h Win ; xBC = silu(conv(xBC) + b) ; x, B, C = xBC ;
 *            y = scan(x, dt + bdt, A, B, C) + D*x ; y = rmsnorm_per_group(y * silu(z)) ;
 *            out = y Wout
 * The convolution and the scan carry each sequence's state across tokens
 * (ops/ssm.c); the matmuls are row by row as everywhere. */
static void ssm_layer(tr_context *c, const tr_batch *b, const tr_layer *l, const float *h, float *out) {
    const tr_hparams *hp = &c->model->hp;
    const size_t il = (size_t)l->rs_layer; /* its place in a sequence's state */
    const bool m2 = c->model->arch->ssm == TR_SSM_MAMBA2;
    const int64_t n = b->n_tokens, DI = hp->ssm_d_inner, DS = hp->ssm_d_state, R = hp->ssm_dt_rank;
    const int64_t NH = hp->ssm_n_head, HD = hp->ssm_head_dim, NG = hp->ssm_n_group, CD = hp->ssm_conv_dim;
    const int64_t in_rows = l->ssm_in.rows;
    const size_t nl = (size_t)hp->n_layer_rs;
    const tr_ssm_batch sb = {.n = n, .seq = b->seq_id, .pos = b->pos,
                             .conv_state = c->conv_state + il * c->conv_layer,
                             .ssm_state = c->ssm_state + il * c->ssm_layer,
                             .conv_stride = nl * c->conv_layer, .ssm_stride = nl * c->ssm_layer};
    float *xz = c->ssm_xz, *xc = c->ssm_xc, *dt = c->ssm_dt, *y = c->ssm_y;

    matmul(c, &l->ssm_in, h, n, xz);
    /* causal convolution of x (Mamba-2: of x, B and C), bias, SiLU */
    ssm_job j = {.b = &sb, .in = xz + (m2 ? DI : 0), .in_stride = in_rows, .l = l, .d_conv = hp->ssm_d_conv,
                 .conv_dim = CD, .xc = xc};
    tr_pool_run(c->pool, ssm_conv_part, &j);

    tr_ssm_scan_params sp = {.n_head = NH, .head_dim = HD, .d_state = DS, .n_group = NG, .scalar_a = m2, .A = l->ssm_a,
                             .x = xc, .x_stride = CD, .dt = dt, .dt_stride = NH};
    if (m2) { /* dt: the in-projection's last n_head rows, plus its bias */
        for (int64_t t = 0; t < n; t++)
            for (int64_t i = 0; i < NH; i++) dt[t * NH + i] = xz[t * in_rows + 2 * DI + 2 * NG * DS + i] + l->ssm_dt_b[i];
        sp.B = xc + DI;
        sp.C = xc + DI + NG * DS;
        sp.bc_stride = CD;
    } else { /* dt, B, C = x Wx; dt = dt Wdt + bias */
        float *dbc = c->ssm_dbc, *dtr = c->ssm_dtr;
        const int64_t W = R + 2 * DS;
        matmul(c, &l->ssm_x, xc, n, dbc);
        for (int64_t t = 0; t < n; t++) memcpy(dtr + t * R, dbc + t * W, sizeof(float) * (size_t)R);
        matmul(c, &l->ssm_dt, dtr, n, dt);
        add_bias(dt, l->ssm_dt_b, n, DI);
        sp.B = dbc + R;
        sp.C = dbc + R + DS;
        sp.bc_stride = W;
    }
    j.sp = &sp;
    j.y = y;
    tr_pool_run(c->pool, ssm_scan_part, &j);

    /* y + D*x, times silu(z) (Mamba-2: then RMSNorm per group); Mamba's D is
     * per channel (a head of one channel), Mamba-2's per head */
    j.xz = xz;
    j.n = n;
    j.in_rows = in_rows;
    j.z_off = m2 ? 0 : DI;
    j.head_dim = HD;
    j.n_group = NG;
    j.eps = hp->norm_eps;
    tr_pool_run(c->pool, ssm_gate_part, &j);
    matmul(c, &l->ssm_out, y, n, out);
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

    /* Embeddings: rows of token_embd, dequantized [, plus the rows of the
     * learned positions]. */
    const size_t emb_row = tr_row_size(m->tok_embd.type, E);
    const bool emb_x16 = tr_x16_source(m->tok_embd.type) >= 0; /* tied to an output repacked at load */
    const float emb_scale = arch->embd_scale ? sqrtf((float)E) : hp->embd_mult != 0 ? hp->embd_mult : 1.0f;
    for (int64_t t = 0; t < n; t++) {
        const int32_t tok = b->token[t];
        const uint8_t *emb = m->tok_embd.data;
        if (emb_x16)
            tr_x16_dequantize_row(m->tok_embd.type, emb + (size_t)(tok / 16) * 16 * emb_row, tok % 16, x + t * E, E);
        else
            tr_dequantize(m->tok_embd.type, emb + (size_t)tok * emb_row, x + t * E, E);
        if (emb_scale != 1.0f)
            for (int64_t i = 0; i < E; i++) x[t * E + i] *= emb_scale;
        if (arch->pos_embd) { /* positions < n_ctx_train: the context caps n_ctx_seq there */
            const uint8_t *prow = (const uint8_t *)m->pos_embd.data + (size_t)b->pos[t] * tr_row_size(m->pos_embd.type, E);
            tr_dequantize(m->pos_embd.type, prow, xb, E);
            for (int64_t i = 0; i < E; i++) x[t * E + i] += xb[i];
        }
    }
    /* RoPE's frequency factors: Llama 3.1's, or LongRoPE's long ones when a
     * sequence may outgrow the original context (as llama.cpp chooses, by
     * the context's size: the same for every batch). */
    const float *freq_factors = m->rope_freqs;
    if (m->rope_long || m->rope_short) freq_factors = c->n_ctx_seq > hp->n_ctx_orig ? m->rope_long : m->rope_short;
    const bool neox = arch->rope == TR_ROPE_NEOX;
    const bool use_rope = arch->rope != TR_ROPE_NONE && !hp->no_rope;

    for (int il = 0; il < hp->n_layer; il++) {
        const tr_layer *l = &m->layers[il];

        /* The mixer: attention, or a state-space layer. */
        if (l->recurrent) { /* the state-space mixer (Mamba, Mamba-2) instead of attention */
            norm_rows(arch, xb, x, l->attn_norm, NULL, n, E, eps);
            ssm_layer(c, b, l, xb, xb2);
        } else { /* attention */
            norm_rows(arch, xb, x, l->attn_norm, l->attn_norm_b, n, E, eps);
            matmul(c, &l->wq, xb, n, c->q);
            matmul(c, &l->wk, xb, n, c->k);
            matmul(c, &l->wv, xb, n, c->v);
            add_bias(c->q, l->bq, n, q_dim);
            add_bias(c->k, l->bk, n, k_dim);
            add_bias(c->v, l->bv, n, v_dim);
            for (int64_t t = 0; t < n; t++) {
                float *q = c->q + t * q_dim, *k = c->k + t * k_dim;
                const bool full = arch->qk_norm_full;
                if (full && l->q_norm) tr_rmsnorm(q, q, l->q_norm, q_dim, eps);
                if (full && l->k_norm) tr_rmsnorm(k, k, l->k_norm, k_dim, eps);
                for (int64_t h = 0; h < n_head; h++) {
                    if (l->q_norm && !full) tr_rmsnorm(q + h * hk, q + h * hk, l->q_norm, hk, eps);
                    if (use_rope)
                        tr_rope(q + h * hk, hp->n_rot, b->pos[t], l->rope_base, l->rope_scale, freq_factors,
                                hp->rope_mscale, neox);
                }
                for (int64_t h = 0; h < n_kv; h++) {
                    if (l->k_norm && !full) tr_rmsnorm(k + h * hk, k + h * hk, l->k_norm, hk, eps);
                    if (use_rope)
                        tr_rope(k + h * hk, hp->n_rot, b->pos[t], l->rope_base, l->rope_scale, freq_factors,
                                hp->rope_mscale, neox);
                }
                /* Into the cache, at this token's slot of its sequence, in the
                 * cache's types (a function of this row alone: batch-invariant),
                 * rotated first when the type is quantized. */
                float *v = c->v + t * v_dim;
                if (c->rot_k) tr_hadamard(k, k_dim / c->rot_k, c->rot_k);
                if (c->rot_v) tr_hadamard(v, v_dim / c->rot_v, c->rot_v);
                const int64_t slot = tr_kv_slot(tr_kv_table(c->kv, b->seq_id[t]), tr_kv_block_size(c->kv), b->pos[t]);
                tr_kv_store_row(c->type_k, k,
                                (char *)tr_kv_k_layer(c->kv, l->kv_layer) + (size_t)slot * tr_row_size(c->type_k, k_dim),
                                k_dim);
                tr_kv_store_row(c->type_v, v,
                                (char *)tr_kv_v_layer(c->kv, l->kv_layer) + (size_t)slot * tr_row_size(c->type_v, v_dim),
                                v_dim);
            }
            tr_status st = attention(c, b, l->kv_layer, l->swa);
            if (st != TR_OK) return tr_err_set(err, st, "forward: attention of layer %d failed (out of memory?)", il);
            if (arch->sub_norms) /* RMSNorm of the heads' outputs, before Wo (BitNet) */
                for (int64_t t = 0; t < n; t++)
                    tr_rmsnorm(c->att + t * o_dim, c->att + t * o_dim, l->attn_sub_norm, o_dim, eps);
            matmul(c, &l->wo, c->att, n, xb2);
            add_bias(xb2, l->bo, n, E);
            if (l->post_attn_norm)
                for (int64_t t = 0; t < n; t++) tr_rmsnorm(xb2 + t * E, xb2 + t * E, l->post_attn_norm, E, eps);
        }
        if (hp->residual_scale != 0) /* Granite: the branch scaled before its residual add */
            for (int64_t i = 0; i < n * E; i++) xb2[i] *= hp->residual_scale;
        for (int64_t i = 0; i < n * E; i++) x[i] += xb2[i];
        if (l->recurrent && !arch->hybrid) continue; /* Mamba: no feed-forward */

        /* Feed-forward. */
        norm_rows(arch, xb, x, l->ffn_norm, l->ffn_norm_b, n, E, eps);
        if (hp->n_expert > 0) { /* sum of the chosen experts' SwiGLU, weighted */
            moe_ffn(c, l, xb, n, xb2);
        } else if (arch->ffn == TR_FFN_SEQ) { /* act(h Wup + b) */
            matmul(c, &l->w_up, xb, n, c->hb);
            add_bias(c->hb, l->b_up, n, F);
            if (arch->act == TR_ACT_GELU)
                tr_gelu(c->hb, c->hb, n * F);
            else
                for (int64_t i = 0; i < n * F; i++) c->hb[i] = c->hb[i] / (1.0f + expf(-c->hb[i]));
        } else { /* act(h Wgate) * (h Wup) */
            matmul(c, &l->w_gate, xb, n, c->hb);
            matmul(c, &l->w_up, xb, n, c->hb2);
            add_bias(c->hb, l->b_gate, n, F);
            add_bias(c->hb2, l->b_up, n, F);
            if (arch->act == TR_ACT_GELU)
                tr_geglu(c->hb, c->hb, c->hb2, n * F);
            else
                tr_swiglu(c->hb, c->hb, c->hb2, n * F);
        }
        if (arch->sub_norms) /* RMSNorm of the hidden layer, before Wdown (BitNet) */
            for (int64_t t = 0; t < n; t++) tr_rmsnorm(c->hb + t * F, c->hb + t * F, l->ffn_sub_norm, F, eps);
        if (hp->n_expert == 0) {
            matmul(c, &l->w_down, c->hb, n, xb2);
            add_bias(xb2, l->b_down, n, E);
        }
        if (l->post_ffn_norm)
            for (int64_t t = 0; t < n; t++) tr_rmsnorm(xb2 + t * E, xb2 + t * E, l->post_ffn_norm, E, eps);
        if (hp->residual_scale != 0)
            for (int64_t i = 0; i < n * E; i++) xb2[i] *= hp->residual_scale;
        for (int64_t i = 0; i < n * E; i++) x[i] += xb2[i];
    }

    /* Logits, only for the tokens that asked for them. */
    if (c->n_out == 0) return TR_OK;
    for (int64_t t = 0; t < n; t++)
        if (c->out_row[t] >= 0)
            norm_rows(arch, xb + (int64_t)c->out_row[t] * E, x + t * E, m->output_norm, m->output_norm_b, 1, E, eps);
    matmul(c, &m->output, xb, c->n_out, c->logits);
    if (hp->logit_scale != 0) { /* Granite: logits divided by logit_scale (ggml_scale by its inverse) */
        const float inv = 1.0f / hp->logit_scale;
        const int64_t total = (int64_t)c->n_out * hp->n_vocab;
        for (int64_t i = 0; i < total; i++) c->logits[i] *= inv;
    }
    if (hp->final_softcap > 0) {
        const float cap = hp->final_softcap;
        const int64_t total = (int64_t)c->n_out * hp->n_vocab;
        for (int64_t i = 0; i < total; i++) c->logits[i] = cap * tanhf(c->logits[i] / cap);
    }
    return TR_OK;
}
