/* trinity quantize: a GGUF file re-written with its weights in another
 * format, choosing each tensor's type as llama.cpp's llama-quantize does for
 * the same mix (src/llama-quant.cpp of the pinned source: which tensors may
 * be quantized, the per-category rules of each mix, the fallbacks for rows
 * that do not fit a block). With the same source and no importance matrix,
 * the tensors come out byte for byte those llama-quantize writes: the
 * quantizers (src/quant) are ggml's reference ones, step for step, and
 * test_quantize.py compares every tensor with llama.cpp's output.
 *
 * Tensors are visited in llama.cpp's order (layer number, then name), which
 * is also the order of the output file: the mix rules count attn_v and
 * ffn_down tensors as they go, so the order decides which layers get more
 * bits. Rows are independent, so threads split a tensor's rows and the bytes
 * do not depend on their number. An importance matrix (llama.cpp's imatrix
 * GGUF: <tensor>.in_sum2 and <tensor>.counts) weights the searches of the
 * formats that have a weighted form (kquants.c). Not done: the IQ mixes (no
 * IQ quantizers here), Q2_K_S, and llama.cpp's legacy .dat imatrix files. */
#include "core/util.h"
#include "quant/quant.h"
#include "trinity.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama.cpp's llama_ftype values (include/llama.h), the numbers written to general.file_type. */
typedef struct mix {
    const char *name;
    int ftype;
    tr_type base;
} mix;

enum {
    FT_F32 = 0, FT_F16 = 1, FT_Q4_0 = 2, FT_Q4_1 = 3, FT_Q8_0 = 7, FT_Q5_0 = 8, FT_Q5_1 = 9, FT_Q2_K = 10,
    FT_Q3_K_S = 11, FT_Q3_K_M = 12, FT_Q3_K_L = 13, FT_Q4_K_S = 14, FT_Q4_K_M = 15, FT_Q5_K_S = 16, FT_Q5_K_M = 17,
    FT_Q6_K = 18, FT_BF16 = 32, FT_TQ1_0 = 36, FT_TQ2_0 = 37,
};

static const mix mixes[] = {
    {"Q4_0", FT_Q4_0, TR_TYPE_Q4_0},     {"Q4_1", FT_Q4_1, TR_TYPE_Q4_1},       {"Q5_0", FT_Q5_0, TR_TYPE_Q5_0},
    {"Q5_1", FT_Q5_1, TR_TYPE_Q5_1},     {"Q2_K", FT_Q2_K, TR_TYPE_Q2_K},       {"Q3_K_S", FT_Q3_K_S, TR_TYPE_Q3_K},
    {"Q3_K_M", FT_Q3_K_M, TR_TYPE_Q3_K}, {"Q3_K_L", FT_Q3_K_L, TR_TYPE_Q3_K},   {"Q4_K_S", FT_Q4_K_S, TR_TYPE_Q4_K},
    {"Q4_K_M", FT_Q4_K_M, TR_TYPE_Q4_K}, {"Q5_K_S", FT_Q5_K_S, TR_TYPE_Q5_K},   {"Q5_K_M", FT_Q5_K_M, TR_TYPE_Q5_K},
    {"Q6_K", FT_Q6_K, TR_TYPE_Q6_K},     {"Q8_0", FT_Q8_0, TR_TYPE_Q8_0},       {"TQ1_0", FT_TQ1_0, TR_TYPE_TQ1_0},
    {"TQ2_0", FT_TQ2_0, TR_TYPE_TQ2_0},  {"F16", FT_F16, TR_TYPE_F16},          {"BF16", FT_BF16, TR_TYPE_BF16},
    {"F32", FT_F32, TR_TYPE_F32},
    /* llama-quantize's aliases */
    {"Q3_K", FT_Q3_K_M, TR_TYPE_Q3_K},   {"Q4_K", FT_Q4_K_M, TR_TYPE_Q4_K},     {"Q5_K", FT_Q5_K_M, TR_TYPE_Q5_K},
};
#define N_MIXES (sizeof mixes / sizeof mixes[0])

static const mix *find_mix(const char *name) {
    for (size_t i = 0; i < N_MIXES; i++)
        if (!strcasecmp(mixes[i].name, name)) return &mixes[i];
    return NULL;
}

const char *tr_quantize_mix_names(void) {
    return "Q4_0 Q4_1 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K Q8_0 TQ1_0 TQ2_0 F16 "
           "BF16 F32 (Q3_K, Q4_K, Q5_K: the _M mixes)";
}

static bool is_quantized(int t) { return t != TR_TYPE_F32 && t != TR_TYPE_F16 && t != TR_TYPE_BF16; }

static bool has(const char *s, const char *part) { return strstr(s, part) != NULL; }
static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

typedef enum cat { C_OTHER, C_OUTPUT, C_TOKEN_EMBD, C_ATTN_QKV, C_ATTN_KV_B, C_ATTN_V, C_ATTN_K, C_ATTN_Q,
                   C_ATTN_OUTPUT, C_FFN_UP, C_FFN_GATE, C_FFN_DOWN } cat;

static cat category(const char *name) {
    if (!strcmp(name, "output.weight")) return C_OUTPUT;
    if (!strcmp(name, "token_embd.weight") || !strcmp(name, "per_layer_token_embd.weight")) return C_TOKEN_EMBD;
    if (has(name, "attn_qkv.weight")) return C_ATTN_QKV;
    if (has(name, "attn_kv_b.weight")) return C_ATTN_KV_B;
    if (has(name, "attn_v.weight")) return C_ATTN_V;
    if (has(name, "attn_k.weight")) return C_ATTN_K;
    if (has(name, "attn_q.weight")) return C_ATTN_Q;
    if (has(name, "attn_output.weight")) return C_ATTN_OUTPUT;
    if (has(name, "ffn_up")) return C_FFN_UP;
    if (has(name, "ffn_gate")) return C_FFN_GATE;
    if (has(name, "ffn_down")) return C_FFN_DOWN;
    return C_OTHER;
}
static bool is_attn_v(cat c) { return c == C_ATTN_V || c == C_ATTN_QKV || c == C_ATTN_KV_B; }

/* The tensors llama-quantize leaves as they are, whatever the mix. */
static bool may_quantize(const tr_gguf_tensor *t, bool leave_output) {
    const char *n = t->name;
    if (t->n_dims < 2 || !ends_with(n, "weight") || has(n, "_norm.weight")) return false;
    if (leave_output && !strcmp(n, "output.weight")) return false;
    static const char *const keep[] = {"ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
                                       "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight",
                                       "indexer.k_proj.weight", "indexer.q_proj.weight", "time_mix_first.weight",
                                       "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
                                       "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
                                       "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight",
                                       "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
                                       "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
                                       "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
                                       "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
                                       "mm.a.code_embd"};
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
        if (has(n, keep[i])) return false;
    return strcmp(n, "position_embd.weight") && strcmp(n, "token_types.weight");
}

typedef struct state {
    const mix *mx;
    bool falcon, is_70b, tied, has_imatrix;
    int64_t n_gqa, n_expert, n_layer;
    int i_attn_v, n_attn_v, i_ffn_down, i_ffn_gate, i_ffn_up;
    int32_t output_type, token_embd_type; /* -1: the mix decides */
} state;

static bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The layer a per-layer rule applies to: the running count, or (MoE) the block's number in the name. */
static int layer_of(const state *s, int counter, const char *name, tr_error *err, bool *ok) {
    if (s->n_expert <= 1) return counter;
    int l = -1;
    if (sscanf(name, "blk.%d.", &l) != 1 || l < 0 || l >= s->n_layer) {
        tr_err_set(err, TR_ERR_FORMAT, "tensor '%s': no layer number in [0, %lld) in its name", name,
                   (long long)s->n_layer);
        *ok = false;
    }
    return l;
}

/* llama_tensor_get_type_impl for the mixes above. */
static int mix_type(state *s, int t, const tr_gguf_tensor *x, cat c, tr_error *err, bool *ok) {
    const int ft = s->mx->ftype;
    if (c == C_OUTPUT || (s->tied && c == C_TOKEN_EMBD)) {
        if (s->output_type >= 0) t = s->output_type;
        else if (s->falcon || x->ne[0] % tr_type_block_size(t)) t = TR_TYPE_Q8_0;
        else if (t != TR_TYPE_Q8_0) t = TR_TYPE_Q6_K;
    } else if (c == C_TOKEN_EMBD) {
        if (s->token_embd_type >= 0) t = s->token_embd_type;
        else if (ft == FT_TQ1_0 || ft == FT_TQ2_0) t = TR_TYPE_Q4_K;
    } else if (is_attn_v(c)) {
        if (ft == FT_Q2_K) t = s->n_gqa >= 4 ? TR_TYPE_Q4_K : TR_TYPE_Q3_K;
        else if (ft == FT_Q3_K_M) t = s->i_attn_v < 2 ? TR_TYPE_Q5_K : TR_TYPE_Q4_K;
        else if (ft == FT_Q3_K_L) t = TR_TYPE_Q5_K;
        else if ((ft == FT_Q4_K_M || ft == FT_Q5_K_M) && more_bits(s->i_attn_v, s->n_attn_v)) t = TR_TYPE_Q6_K;
        else if (ft == FT_Q4_K_S && s->i_attn_v < 4) t = TR_TYPE_Q5_K;
        if (s->is_70b && (t == TR_TYPE_Q3_K || t == TR_TYPE_Q4_K)) t = TR_TYPE_Q5_K;
        if (s->n_expert == 8) t = TR_TYPE_Q8_0;
        s->i_attn_v++;
    } else if (c == C_ATTN_K) {
        if (s->n_expert == 8) t = TR_TYPE_Q8_0;
    } else if (c == C_FFN_DOWN) {
        int i = layer_of(s, s->i_ffn_down, x->name, err, ok), n = (int)s->n_layer;
        if (ft == FT_Q2_K) t = TR_TYPE_Q3_K;
        else if (ft == FT_Q3_K_M)
            t = i < n / 16 ? TR_TYPE_Q5_K : !s->falcon || more_bits(i, n) ? TR_TYPE_Q4_K : TR_TYPE_Q3_K;
        else if (ft == FT_Q3_K_L) t = s->falcon ? TR_TYPE_Q4_K : TR_TYPE_Q5_K;
        else if (ft == FT_Q4_K_M) {
            if (s->falcon) t = i < n / 16 ? TR_TYPE_Q6_K : more_bits(i, n) ? TR_TYPE_Q5_K : TR_TYPE_Q4_K;
            else if (more_bits(i, n)) t = TR_TYPE_Q6_K;
        } else if (ft == FT_Q5_K_M && more_bits(i, n)) t = TR_TYPE_Q6_K;
        else if (ft == FT_Q4_K_S && !s->falcon && i < n / 8) t = TR_TYPE_Q5_K;
        else if ((ft == FT_Q4_0 || ft == FT_Q5_0) && s->has_imatrix && i < n / 8)
            t = ft == FT_Q4_0 ? TR_TYPE_Q4_1 : TR_TYPE_Q5_1; /* llama.cpp's guard for the first ffn_down layers */
        s->i_ffn_down++;
    } else if (c == C_ATTN_OUTPUT) {
        if (!s->falcon) {
            if (s->n_expert == 8) {
                if (ft == FT_Q2_K || ft == FT_Q3_K_S || ft == FT_Q3_K_M || ft == FT_Q4_K_S || ft == FT_Q4_K_M)
                    t = TR_TYPE_Q5_K;
            } else if (ft == FT_Q2_K) t = TR_TYPE_Q3_K;
            else if (ft == FT_Q3_K_M) t = TR_TYPE_Q4_K;
            else if (ft == FT_Q3_K_L) t = TR_TYPE_Q5_K;
        } else if (ft == FT_Q3_K_L) t = TR_TYPE_Q4_K;
    } else if (c == C_FFN_GATE) {
        s->i_ffn_gate++;
    } else if (c == C_FFN_UP) {
        s->i_ffn_up++;
    }
    return t;
}

/* A row that does not fit the chosen type's block: llama.cpp's fallbacks. */
static int fallback(int t, int64_t ncols) {
    if (ncols % tr_type_block_size(t) == 0) return t;
    int f = t;
    switch (t) {
    case TR_TYPE_Q2_K: case TR_TYPE_Q3_K: case TR_TYPE_TQ1_0: case TR_TYPE_TQ2_0: f = TR_TYPE_Q4_0; break;
    case TR_TYPE_Q4_K: f = TR_TYPE_Q5_0; break;
    case TR_TYPE_Q5_K: f = TR_TYPE_Q5_1; break;
    case TR_TYPE_Q6_K: f = TR_TYPE_Q8_0; break;
    default: break;
    }
    return ncols % tr_type_block_size(f) ? TR_TYPE_F16 : f;
}

/* ------------------------------------------------------- imatrix file */

typedef struct imx_entry {
    char *name;   /* the weight's name */
    float *w;     /* per column, per expert: in_sum2 / counts */
    int64_t n;
} imx_entry;

typedef struct imatrix {
    imx_entry *e;
    int64_t n;
    char dataset[128];
    uint32_t chunks;
} imatrix;

static void imatrix_free(imatrix *m) {
    for (int64_t i = 0; i < m->n; i++) free(m->e[i].name), free(m->e[i].w);
    free(m->e);
    memset(m, 0, sizeof *m);
}

static const imx_entry *imatrix_find(const imatrix *m, const char *name) {
    for (int64_t i = 0; i < m->n; i++)
        if (!strcmp(m->e[i].name, name)) return &m->e[i];
    return NULL;
}

/* llama.cpp's imatrix GGUF, read as its quantize tool reads it: for each
 * weight, the sums of squared activations per column and expert divided by
 * that expert's count of tokens (rounded to a whole number; a count of 0 gives
 * weights of 1). */
static tr_status imatrix_load(const char *path, imatrix *m, tr_error *err) {
    memset(m, 0, sizeof *m);
    tr_gguf *g = NULL;
    tr_status st = tr_gguf_open(path, &g, err);
    if (st != TR_OK) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        return tr_err_set(err, st, "--imatrix: %s (an imatrix GGUF as llama-imatrix writes it is expected; "
                                   "its legacy .dat format is not read)", why);
    }
    const tr_gguf_value *ds = tr_gguf_get(g, "imatrix.datasets");
    int64_t chunks = 0, chunk_size = 0;
    if (!ds || ds->type != TR_GGUF_ARRAY || ds->v.arr.type != TR_GGUF_STRING ||
        !tr_gguf_get_int(g, "imatrix.chunk_count", &chunks) || !tr_gguf_get_int(g, "imatrix.chunk_size", &chunk_size)) {
        st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix %s: missing imatrix metadata (imatrix.datasets, "
                                            "imatrix.chunk_count, imatrix.chunk_size)", path);
        goto done;
    }
    m->chunks = (uint32_t)chunks;
    if (ds->v.arr.n > 0) {
        tr_str d0 = tr_gguf_arr_str(ds, 0);
        snprintf(m->dataset, sizeof m->dataset, "%.*s", (int)(d0.len < 127 ? d0.len : 127), d0.ptr);
    }
    int64_t nt = tr_gguf_n_tensors(g);
    m->e = calloc((size_t)(nt > 0 ? nt : 1), sizeof *m->e);
    if (!m->e) {
        st = tr_err_set(err, TR_ERR_NOMEM, "out of memory");
        goto done;
    }
    static const char sfx[] = ".in_sum2";
    for (int64_t i = 0; i < nt; i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        size_t ln = strlen(t->name);
        if (ln <= sizeof sfx - 1 || strcmp(t->name + ln - (sizeof sfx - 1), sfx)) continue;
        char cname[512];
        snprintf(cname, sizeof cname, "%.*s.counts", (int)(ln - (sizeof sfx - 1)), t->name);
        const tr_gguf_tensor *c = tr_gguf_find_tensor(g, cname);
        if (!c) {
            st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix %s: mismatched sums and counts for %.*s", path,
                            (int)(ln - (sizeof sfx - 1)), t->name);
            goto done;
        }
        if (t->type != TR_TYPE_F32 || c->type != TR_TYPE_F32) {
            st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix %s: sums and counts for %s must be F32", path, t->name);
            goto done;
        }
        int64_t nval = (int64_t)(t->nbytes / 4), ncounts = (int64_t)(c->nbytes / 4);
        if (ncounts < 1 || nval % ncounts) {
            st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix %s: %s has %lld values for %lld counts", path, t->name,
                            (long long)nval, (long long)ncounts);
            goto done;
        }
        imx_entry *e = &m->e[m->n];
        e->name = malloc(ln - (sizeof sfx - 1) + 1);
        e->w = malloc(sizeof(float) * (size_t)(nval ? nval : 1));
        if (!e->name || !e->w) {
            free(e->name), free(e->w);
            st = tr_err_set(err, TR_ERR_NOMEM, "out of memory");
            goto done;
        }
        memcpy(e->name, t->name, ln - (sizeof sfx - 1));
        e->name[ln - (sizeof sfx - 1)] = 0;
        e->n = nval;
        m->n++;
        const float *sums = t->data, *counts = c->data;
        const int64_t ne0 = nval / ncounts;
        for (int64_t j = 0; j < ncounts; j++) {
            const float cnt = (float)lroundf(counts[j]);
            for (int64_t k = 0; k < ne0; k++) e->w[j * ne0 + k] = cnt > 0.0f ? sums[j * ne0 + k] / cnt : 1.0f;
        }
        for (int64_t k = 0; k < nval; k++)
            if (!isfinite(e->w[k])) {
                st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix %s: %s holds a non-finite value", path, t->name);
                goto done;
            }
    }
    if (m->n == 0) st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix %s: no data (no <tensor>.in_sum2 tensors)", path);
done:
    tr_gguf_close(g);
    if (st != TR_OK) imatrix_free(m);
    return st;
}

static int64_t layer_key(const char *name) {
    int l = -1;
    sscanf(name, "blk.%d.", &l);
    return l;
}

/* llama.cpp's weight order: layer number (-1 outside blocks), then name. */
static int by_layer_then_name(const void *a, const void *b) {
    const tr_gguf_tensor *x = *(const tr_gguf_tensor *const *)a, *y = *(const tr_gguf_tensor *const *)b;
    int64_t lx = layer_key(x->name), ly = layer_key(y->name);
    if (lx != ly) return lx < ly ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int64_t kv_int(const tr_gguf *g, const char *arch, const char *key, int64_t dflt) {
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int64_t v;
    if (tr_gguf_get_int(g, k, &v)) return v;
    const tr_gguf_value *a = tr_gguf_get(g, k); /* per-layer arrays: the first layer's, as n_gqa() reads */
    if (a && a->type == TR_GGUF_ARRAY && a->v.arr.n > 0) return tr_gguf_arr_int(a, 0);
    return dflt;
}

/* ------------------------------------------------------------- the rows */

typedef struct job {
    const tr_gguf_tensor *t;
    int to;
    const float *qw; /* importance per column and expert, or NULL */
    uint8_t *dst;
    int64_t row0, row1;
    size_t src_row, dst_row;
    tr_status st;
} job;

static void *convert_rows(void *arg) {
    job *j = arg;
    const int64_t n = j->t->ne[0];
    float *f = j->t->type == TR_TYPE_F32 ? NULL : malloc(sizeof(float) * (size_t)n);
    if (j->t->type != TR_TYPE_F32 && !f) {
        j->st = TR_ERR_NOMEM;
        return NULL;
    }
    for (int64_t r = j->row0; r < j->row1 && j->st == TR_OK; r++) {
        const uint8_t *src = (const uint8_t *)j->t->data + (size_t)r * j->src_row;
        const float *x = (const float *)src;
        if (f) {
            j->st = tr_dequantize(j->t->type, src, f, n);
            x = f;
        }
        if (j->st != TR_OK) break;
        void *out = j->dst + (size_t)r * j->dst_row;
        const float *qw = j->qw ? j->qw + (r / j->t->ne[1]) * n : NULL; /* a 3-D tensor: its expert's slice */
        if (!qw || !tr_quantize_row_imatrix(j->to, x, out, n, qw)) j->st = tr_quantize(j->to, x, out, n);
    }
    free(f);
    return NULL;
}

static tr_status convert_tensor(const tr_gguf_tensor *t, int to, const float *qw, uint8_t *dst, int n_threads,
                                tr_error *err) {
    int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 64) n_threads = 64;
    if (rows < n_threads) n_threads = (int)(rows > 0 ? rows : 1);
    job jobs[64];
    pthread_t th[64];
    size_t src_row = tr_row_size(t->type, t->ne[0]), dst_row = tr_row_size(to, t->ne[0]);
    bool made[64] = {false};
    for (int i = 0; i < n_threads; i++)
        jobs[i] = (job){.t = t, .to = to, .qw = qw, .dst = dst, .row0 = rows * i / n_threads, .row1 = rows * (i + 1) / n_threads,
                        .src_row = src_row, .dst_row = dst_row, .st = TR_OK};
    for (int i = 1; i < n_threads; i++) made[i] = pthread_create(&th[i], NULL, convert_rows, &jobs[i]) == 0;
    convert_rows(&jobs[0]);
    for (int i = 1; i < n_threads; i++) {
        if (made[i]) pthread_join(th[i], NULL);
        else convert_rows(&jobs[i]); /* no thread to be had: this one does it */
    }
    for (int i = 0; i < n_threads; i++) {
        if (jobs[i].st == TR_ERR_NOMEM) return tr_err_set(err, TR_ERR_NOMEM, "out of memory converting '%s'", t->name);
        if (jobs[i].st != TR_OK)
            return tr_err_set(err, jobs[i].st, "tensor '%s': cannot convert %s to %s", t->name, tr_type_name(t->type),
                              tr_type_name(to));
    }
    return TR_OK;
}

/* One tensor's bytes, made when the writer reaches it: the input's own
 * (mapped) when its type stays, converted into the one buffer all
 * conversions share otherwise (the previous tensor is written by then). */
typedef struct fill_ctx {
    const tr_gguf_tensor *t;
    int to;
    const float *qw;
    int n_threads;
    const tr_quantize_params *p;
    int64_t i, n;
    struct scratch *buf;
} fill_ctx;

typedef struct scratch {
    void *p;
    uint64_t cap;
} scratch;

static tr_status fill_tensor(void *user, uint64_t nbytes, const void **data, tr_error *err) {
    const fill_ctx *f = user;
    const tr_gguf_tensor *t = f->t;
    if (f->to == (int)t->type) {
        *data = t->data;
    } else {
        if (nbytes > f->buf->cap) {
            void *np = (uint64_t)(size_t)nbytes == nbytes ? realloc(f->buf->p, (size_t)nbytes) : NULL;
            if (!np) return tr_err_set(err, TR_ERR_NOMEM, "out of memory for tensor '%s'", t->name);
            f->buf->p = np, f->buf->cap = nbytes;
        }
        tr_status st = convert_tensor(t, f->to, f->qw, f->buf->p, f->n_threads, err);
        if (st != TR_OK) return st;
        *data = f->buf->p;
    }
    if (f->p->progress) f->p->progress(f->p->user, f->i, f->n, t->name, t->type, f->to, t->nbytes, nbytes);
    return TR_OK;
}

/* ------------------------------------------------------------- the file */

tr_quantize_params tr_quantize_default_params(void) {
    return (tr_quantize_params){.type = "Q8_0", .output_type = -1, .token_embd_type = -1};
}

tr_status tr_quantize_file(const char *in, const char *out, const tr_quantize_params *p, tr_error *err) {
    const mix *mx = p && p->type ? find_mix(p->type) : NULL;
    if (!mx)
        return tr_err_set(err, TR_ERR_ARG, "unknown quantization type '%s': expected one of %s",
                          p && p->type ? p->type : "(none)", tr_quantize_mix_names());
    for (int k = 0; k < 2; k++) {
        int32_t t = k ? p->token_embd_type : p->output_type;
        if (t >= 0 && (t >= TR_TYPE_COUNT || !tr_type_can_quantize(t)))
            return tr_err_set(err, TR_ERR_ARG, "%s type %d: this build cannot write it",
                              k ? "token embedding" : "output tensor", (int)t);
    }
    imatrix im = {0};
    if (p->imatrix) {
        tr_status st = imatrix_load(p->imatrix, &im, err);
        if (st != TR_OK) return st;
    }
    tr_gguf *g = NULL;
    tr_status st = tr_gguf_open(in, &g, err);
    if (st != TR_OK) {
        imatrix_free(&im);
        return st;
    }
    int64_t nt = tr_gguf_n_tensors(g);
    const tr_gguf_tensor **order = calloc((size_t)(nt > 0 ? nt : 1), sizeof *order);
    int *to = calloc((size_t)(nt > 0 ? nt : 1), sizeof *to);
    fill_ctx *fills = calloc((size_t)(nt > 0 ? nt : 1), sizeof *fills);
    scratch conv = {0};
    tr_gguf_writer *w = tr_gguf_writer_new();
    if (!order || !to || !fills || !w) {
        st = tr_err_set(err, TR_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < nt; i++) order[i] = tr_gguf_tensor_at(g, i);
    qsort(order, (size_t)nt, sizeof *order, by_layer_then_name);

    tr_str arch_s = {0};
    char arch[64] = "";
    if (tr_gguf_get_str(g, "general.architecture", &arch_s) && arch_s.len < sizeof arch)
        memcpy(arch, arch_s.ptr, arch_s.len), arch[arch_s.len] = 0;
    state s = {.mx = mx, .output_type = p->output_type, .token_embd_type = p->token_embd_type, .tied = true};
    int64_t n_head = kv_int(g, arch, "attention.head_count", 0), n_head_kv = kv_int(g, arch, "attention.head_count_kv", n_head);
    s.n_gqa = n_head_kv > 0 ? n_head / n_head_kv : 0;
    s.n_expert = kv_int(g, arch, "expert_count", 0);
    s.n_layer = kv_int(g, arch, "block_count", 0);
    s.falcon = !strcmp(arch, "falcon");
    s.has_imatrix = im.n > 0;
    s.is_70b = !strcmp(arch, "llama") && s.n_layer == 80 && n_head != n_head_kv; /* llama.cpp's LLM_TYPE_70B */
    for (int64_t i = 0; i < nt; i++) {
        cat c = category(order[i]->name);
        if (is_attn_v(c)) s.n_attn_v++;
        if (c == C_OUTPUT) s.tied = false;
    }

    /* The types, in order (the counters advance as llama.cpp's do). */
    bool ok = true;
    for (int64_t i = 0; i < nt && ok; i++) {
        const tr_gguf_tensor *t = order[i];
        to[i] = t->type;
        if (!may_quantize(t, p->leave_output)) continue;
        int nt2 = mx->base;
        if (is_quantized(mx->base)) {
            if (!p->pure) nt2 = mix_type(&s, nt2, t, category(t->name), err, &ok);
            nt2 = fallback(nt2, t->ne[0]);
        }
        to[i] = nt2;
    }
    if (!ok) {
        st = TR_ERR_FORMAT;
        goto done;
    }

    /* Metadata: the source's, without split keys, with the new file type. */
    for (int64_t i = 0; i < tr_gguf_n_kv(g) && st == TR_OK; i++) {
        const char *k = tr_gguf_kv_key(g, i);
        if (!strcmp(k, "split.no") || !strcmp(k, "split.count") || !strcmp(k, "split.tensors.count")) continue;
        /* set below, at the end (llama.cpp's gguf_set_val removes a key and appends it) */
        if (!strcmp(k, "general.quantization_version") || !strcmp(k, "general.file_type")) continue;
        st = tr_gguf_writer_set(w, k, tr_gguf_kv_value(g, i), err);
    }
    if (st == TR_OK) st = tr_gguf_writer_set_u32(w, "general.quantization_version", 2, err);
    if (st == TR_OK) st = tr_gguf_writer_set_u32(w, "general.file_type", (uint32_t)mx->ftype, err);
    if (im.n) { /* what llama-quantize records of its importance matrix */
        char file[128];
        snprintf(file, sizeof file, "%s", p->imatrix);
        if (st == TR_OK) st = tr_gguf_writer_set_str(w, "quantize.imatrix.file", file, err);
        if (st == TR_OK && im.dataset[0]) st = tr_gguf_writer_set_str(w, "quantize.imatrix.dataset", im.dataset, err);
        if (st == TR_OK) st = tr_gguf_writer_set_u32(w, "quantize.imatrix.entries_count", (uint32_t)im.n, err);
        if (st == TR_OK && im.chunks > 0)
            st = tr_gguf_writer_set_u32(w, "quantize.imatrix.chunks_count", im.chunks, err);
    }
    if (st != TR_OK) goto done;

    /* Everything that can be refused is checked before a byte is written;
     * the tensors are converted while the file is written, one at a time. */
    for (int64_t i = 0; i < nt; i++) {
        const tr_gguf_tensor *t = order[i];
        fills[i] = (fill_ctx){.t = t, .to = to[i], .n_threads = p->n_threads, .p = p, .i = i, .n = nt, .buf = &conv};
        if (to[i] != (int)t->type) {
            if (is_quantized(t->type) && !p->allow_requantize) {
                st = tr_err_set(err, TR_ERR_ARG,
                                "tensor '%s' is %s already: requantizing loses precision twice; pass "
                                "--allow-requantize to do it anyway",
                                t->name, tr_type_name(t->type));
                goto done;
            }
            if (!tr_type_can_dequantize(t->type)) {
                st = tr_err_set(err, TR_ERR_UNSUPPORTED, "tensor '%s': this build cannot read %s", t->name,
                                tr_type_name(t->type));
                goto done;
            }
            const imx_entry *ie = im.n ? imatrix_find(&im, t->name) : NULL;
            if (ie && ie->n == t->ne[0] * t->ne[2]) fills[i].qw = ie->w;
            else if (ie && strcmp(t->name, "token_embd.weight") && strcmp(t->name, "per_layer_token_embd.weight")) {
                st = tr_err_set(err, TR_ERR_FORMAT, "--imatrix: %lld values for '%s', which has %lld columns x %lld "
                                "experts", (long long)ie->n, t->name, (long long)t->ne[0], (long long)t->ne[2]);
                goto done;
            }
        }
        if ((st = tr_gguf_writer_add_tensor_fill(w, t->name, (tr_type)to[i], t->n_dims, t->ne, fill_tensor, &fills[i],
                                                 err)) != TR_OK)
            goto done;
    }
    if ((st = tr_gguf_writer_write(w, out, err)) != TR_OK) goto done;
done:
    tr_gguf_writer_free(w);
    free(fills);
    free(conv.p);
    free(to);
    free(order);
    tr_gguf_close(g);
    imatrix_free(&im);
    return st;
}
