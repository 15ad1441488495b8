/* Loading a model: hyperparameters from {arch}.* metadata, every weight found
 * and shape-checked as a view into the mapping (never copied), the
 * vocabulary checked against the embedding. What the file asks for and we do
 * not implement is an error that names it, never a silently different model. */
#include "model/model.h"

#include "core/util.h"
#include "quant/quant.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader {
    const tr_gguf *g;
    const char *path;
    char arch[64];
    tr_error *err;
} loader;

static void key_name(char *buf, size_t cap, const loader *L, const char *suffix) {
    snprintf(buf, cap, "%s.%s", L->arch, suffix);
}

/* An integer hyperparameter {arch}.suffix within [lo, hi]. */
static tr_status get_int(loader *L, const char *suffix, bool required, int64_t def, int64_t lo, int64_t hi,
                         int32_t *out) {
    char key[160];
    key_name(key, sizeof key, L, suffix);
    const tr_gguf_value *v = tr_gguf_get(L->g, key);
    int64_t x = def;
    if (!v) {
        if (required) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing metadata key %s", L->path, key);
    } else if (v->type == TR_GGUF_ARRAY) {
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: %s is per-layer (an array): not supported", L->path, key);
    } else if (!tr_gguf_get_int(L->g, key, &x)) {
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s is a %s, expected an integer", L->path, key,
                          tr_gguf_type_name(v->type));
    }
    if (x < lo || x > hi)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s = %lld is out of range [%lld, %lld]", L->path, key,
                          (long long)x, (long long)lo, (long long)hi);
    *out = (int32_t)x;
    return TR_OK;
}

static tr_status get_float(loader *L, const char *suffix, bool required, double def, float *out) {
    char key[160];
    key_name(key, sizeof key, L, suffix);
    const tr_gguf_value *v = tr_gguf_get(L->g, key);
    double x = def;
    if (!v) {
        if (required) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing metadata key %s", L->path, key);
    } else if (!tr_gguf_get_float(L->g, key, &x)) {
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s is a %s, expected a number", L->path, key,
                          tr_gguf_type_name(v->type));
    }
    if (!isfinite(x))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s is not a finite number", L->path, key);
    *out = (float)x;
    return TR_OK;
}

static bool has_key(const loader *L, const char *suffix) {
    char key[160];
    key_name(key, sizeof key, L, suffix);
    return tr_gguf_get(L->g, key) != NULL;
}

static const tr_gguf_tensor *find(loader *L, const char *name) { return tr_gguf_find_tensor(L->g, name); }

/* A 2-D weight of exactly rows x cols (ggml: ne[0] = cols, ne[1] = rows). */
static tr_status get_weight(loader *L, const char *name, int64_t rows, int64_t cols, bool required, tr_weight *w) {
    const tr_gguf_tensor *t = find(L, name);
    memset(w, 0, sizeof *w);
    if (!t) {
        if (required) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing tensor %s", L->path, name);
        return TR_OK;
    }
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != 1 || t->ne[3] != 1)
        return tr_err_set(L->err, TR_ERR_FORMAT,
                          "%s: tensor %s has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", L->path,
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3], (long long)cols, (long long)rows);
    if (!tr_type_can_dequantize(t->type)) {
        const char *tn = tr_type_name(t->type);
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which this build cannot compute with",
                          L->path, name, tn ? tn : "(unknown)");
    }
    if (tr_row_size(t->type, cols) == 0)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: tensor %s: row of %lld is not a whole number of %s blocks",
                          L->path, name, (long long)cols, tr_type_name(t->type));
    w->type = t->type;
    w->data = t->data;
    w->rows = rows;
    w->cols = cols;
    w->name = t->name;
    return TR_OK;
}

/* The experts' matrices: a 3-D tensor [cols, rows, n_expert], as one weight
 * of n_expert * rows rows (each expert's rows follow the previous one's). */
static tr_status get_experts(loader *L, const char *name, int64_t n_expert, int64_t rows, int64_t cols, tr_weight *w) {
    const tr_gguf_tensor *t = find(L, name);
    memset(w, 0, sizeof *w);
    if (!t) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing tensor %s", L->path, name);
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != n_expert || t->ne[3] != 1)
        return tr_err_set(L->err, TR_ERR_FORMAT,
                          "%s: tensor %s has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld, %lld]", L->path,
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                          (long long)cols, (long long)rows, (long long)n_expert);
    if (!tr_type_can_dequantize(t->type) || tr_row_size(t->type, cols) == 0) {
        const char *tn = tr_type_name(t->type);
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which this build cannot compute with "
                          "at rows of %lld", L->path, name, tn ? tn : "(unknown)", (long long)cols);
    }
    w->type = t->type;
    w->data = t->data;
    w->rows = rows * n_expert;
    w->cols = cols;
    w->name = t->name;
    return TR_OK;
}

/* A 1-D F32 vector of n (norm weights, biases). */
static tr_status get_vec(loader *L, const char *name, int64_t n, bool required, const float **out) {
    const tr_gguf_tensor *t = find(L, name);
    *out = NULL;
    if (!t) {
        if (required) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing tensor %s", L->path, name);
        return TR_OK;
    }
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: tensor %s has shape [%lld, %lld], expected [%lld]", L->path,
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)n);
    if (t->type != TR_TYPE_F32)
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s has type %s, expected F32", L->path, name,
                          tr_type_name(t->type) ? tr_type_name(t->type) : "(unknown)");
    if (((uintptr_t)t->data & 3) != 0)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: tensor %s is not 4-byte aligned", L->path, name);
    *out = (const float *)t->data;
    return TR_OK;
}

/* An F32 tensor of exactly [ne0, ne1] (ggml order; the SSM's small
 * parameters: conv taps, A, D, the grouped norm's weights). */
static tr_status get_f32(loader *L, const char *name, int64_t ne0, int64_t ne1, bool required, const float **out) {
    const tr_gguf_tensor *t = find(L, name);
    *out = NULL;
    if (!t) {
        if (required) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing tensor %s", L->path, name);
        return TR_OK;
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: tensor %s has shape [%lld, %lld, %lld], expected [%lld, %lld]",
                          L->path, name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)ne0, (long long)ne1);
    if (t->type != TR_TYPE_F32)
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s has type %s, expected F32 (as llama.cpp's ssm ops)",
                          L->path, name, tr_type_name(t->type) ? tr_type_name(t->type) : "(unknown)");
    if (((uintptr_t)t->data & 3) != 0)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: tensor %s is not 4-byte aligned", L->path, name);
    *out = (const float *)t->data;
    return TR_OK;
}

/* Metadata that would change the computation in ways we do not implement. */
static tr_status check_unsupported(loader *L, const tr_arch *arch) {
    static const char *const int_keys[] = {"expert_count", "attention.q_lora_rank", "attention.kv_lora_rank",
                                           "expert_shared_count", "expert_group_count"};
    for (size_t i = arch->moe != TR_MOE_NO ? 1 : 0; i < sizeof int_keys / sizeof int_keys[0]; i++) {
        char key[160];
        key_name(key, sizeof key, L, int_keys[i]);
        int64_t x = 0;
        if (tr_gguf_get(L->g, key) && (!tr_gguf_get_int(L->g, key, &x) || x != 0))
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: %s is set: not supported", L->path, key);
    }
    static const char *const float_keys[] = {"attn_logit_softcapping", "logit_scale", "attention.clamp_kqv",
                                             "embedding_scale", "residual_scale", "attention.scale"};
    for (size_t i = arch->attn_softcap ? 1 : 0; i < sizeof float_keys / sizeof float_keys[0]; i++) {
        if (arch->granite_scales && i != 2) continue; /* Granite reads them (but not clamp_kqv) */
        char key[160];
        key_name(key, sizeof key, L, float_keys[i]);
        double x = 0;
        if (tr_gguf_get(L->g, key) && (!tr_gguf_get_float(L->g, key, &x) || (x != 0 && x != 1)))
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: %s = %g: not supported", L->path, key, x);
    }
    if (arch->moe != TR_MOE_NO) {
        /* Gating other than the softmax, or scaled weights: not implemented. */
        static const char *const moe_keys[] = {"expert_gating_func", "expert_weights_scale", "expert_weights_norm"};
        for (size_t i = 0; i < sizeof moe_keys / sizeof moe_keys[0]; i++) {
            char key[160];
            key_name(key, sizeof key, L, moe_keys[i]);
            if (tr_gguf_get(L->g, key))
                return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: %s is set: not supported", L->path, key);
        }
    }
    if (!arch->final_softcap) {
        float cap = 0;
        if (get_float(L, "final_logit_softcapping", false, 0, &cap) != TR_OK) return TR_ERR_FORMAT;
        if (cap != 0)
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: %s.final_logit_softcapping is set: not supported for %s",
                              L->path, L->arch, L->arch);
    }
    char key[160];
    key_name(key, sizeof key, L, "rope.scaling.type");
    tr_str st;
    if (tr_gguf_get_str(L->g, key, &st)) {
        bool ok = (st.len == 4 && !memcmp(st.ptr, "none", 4)) || (st.len == 6 && !memcmp(st.ptr, "linear", 6)) ||
                  (st.len == 8 && !memcmp(st.ptr, "longrope", 8));
        if (!ok)
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED,
                              "%s: %s = '%.*s': only 'none', 'linear' and 'longrope' are supported", L->path, key,
                              (int)(st.len > 32 ? 32 : st.len), st.ptr);
    }
    return TR_OK;
}

/* State-space models (Mamba, Mamba-2): no attention and no feed-forward,
 * so none of their keys; the ssm.* keys instead (llama.cpp's names). */
/* The ssm.* keys (n_embd known). */
static tr_status load_ssm_keys(loader *L, tr_model *m) {
    tr_hparams *hp = &m->hp;
    const bool m2 = m->arch->ssm == TR_SSM_MAMBA2;
    tr_status st;
    if ((st = get_int(L, "ssm.conv_kernel", true, 0, 1, 256, &hp->ssm_d_conv))) return st;
    if ((st = get_int(L, "ssm.inner_size", true, 0, 1, 1 << 18, &hp->ssm_d_inner))) return st;
    if ((st = get_int(L, "ssm.state_size", true, 0, 1, 1024, &hp->ssm_d_state))) return st;
    if ((st = get_int(L, "ssm.time_step_rank", true, 0, 1, hp->ssm_d_inner, &hp->ssm_dt_rank))) return st;
    hp->ssm_n_group = 1;
    if (m2 && (st = get_int(L, "ssm.group_count", true, 0, 1, hp->ssm_d_inner, &hp->ssm_n_group))) return st;
    char key[160];
    key_name(key, sizeof key, L, "ssm.dt_b_c_rms");
    bool b = false;
    if (tr_gguf_get(L->g, key) && (!tr_gguf_get_bool(L->g, key, &b) || b))
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: %s is set (RMSNorm of dt, B and C, as Falcon-Mamba): not supported",
                          L->path, key);
    if (m2) {
        /* ssm.time_step_rank is Mamba-2's head count (llama.cpp's reading) */
        hp->ssm_n_head = hp->ssm_dt_rank;
        if (hp->ssm_d_inner % hp->ssm_n_head || hp->ssm_n_head % hp->ssm_n_group)
            return tr_err_set(L->err, TR_ERR_FORMAT,
                              "%s: %s.ssm.inner_size (%d), time_step_rank (heads, %d) and group_count (%d): want heads "
                              "dividing the inner size and groups dividing the heads",
                              L->path, L->arch, hp->ssm_d_inner, hp->ssm_n_head, hp->ssm_n_group);
        hp->ssm_head_dim = hp->ssm_d_inner / hp->ssm_n_head;
        hp->ssm_conv_dim = hp->ssm_d_inner + 2 * hp->ssm_n_group * hp->ssm_d_state;
    } else {
        hp->ssm_n_head = hp->ssm_d_inner; /* one channel per head, as llama.cpp's scan sees Mamba */
        hp->ssm_head_dim = 1;
        hp->ssm_conv_dim = hp->ssm_d_inner;
    }
    return TR_OK;
}

static tr_status load_ssm_hparams(loader *L, tr_model *m) {
    tr_hparams *hp = &m->hp;
    tr_status st;
    if ((st = get_int(L, "embedding_length", true, 0, 1, 1 << 17, &hp->n_embd))) return st;
    if ((st = get_int(L, "block_count", true, 0, 1, 4096, &hp->n_layer))) return st;
    if ((st = get_int(L, "context_length", false, 2048, 1, 1 << 24, &hp->n_ctx_train))) return st;
    if ((st = get_float(L, "attention.layer_norm_rms_epsilon", true, 0, &hp->norm_eps))) return st;
    if (!(hp->norm_eps >= 0))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s's norm epsilon is negative", L->path, L->arch);
    if ((st = load_ssm_keys(L, m))) return st;
    hp->n_layer_kv = 0;
    hp->n_layer_rs = hp->n_layer;
    /* No attention: no heads, no RoPE, no feed-forward. */
    hp->n_head = hp->n_head_kv = hp->head_k = hp->head_v = hp->n_rot = hp->n_ff = 0;
    hp->rope_base = hp->rope_base_swa = 10000.0f;
    hp->rope_scale = hp->rope_scale_swa = hp->rope_mscale = 1.0f;
    hp->n_ctx_orig = hp->n_ctx_train;
    return TR_OK;
}

/* Layer i's KV head count when {arch}.attention.head_count_kv is per
 * layer (a hybrid: 0 marks a state-space layer), else the one value. */
static int64_t layer_kv_heads(const loader *L, const tr_model *m, int i) {
    char key[160];
    key_name(key, sizeof key, L, "attention.head_count_kv");
    const tr_gguf_value *v = tr_gguf_get(L->g, key);
    if (v && v->type == TR_GGUF_ARRAY) return tr_gguf_arr_int(v, (uint64_t)i);
    return m->hp.n_head_kv;
}

/* A hybrid's attention.head_count_kv: one value per layer, 0 for a
 * state-space layer, one common count for the attention layers (or a
 * single value: attention everywhere). Sets n_head_kv and the layer counts. */
static tr_status hybrid_kv_heads(loader *L, tr_model *m) {
    tr_hparams *hp = &m->hp;
    char key[160];
    key_name(key, sizeof key, L, "attention.head_count_kv");
    const tr_gguf_value *v = tr_gguf_get(L->g, key);
    if (!v || v->type != TR_GGUF_ARRAY) {
        tr_status st = get_int(L, "attention.head_count_kv", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv);
        hp->n_layer_kv = hp->n_layer;
        hp->n_layer_rs = 0;
        return st;
    }
    const tr_gguf_type et = v->v.arr.type;
    if (et > TR_GGUF_INT32 && et != TR_GGUF_UINT64 && et != TR_GGUF_INT64)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s is an array of %s, expected integers", L->path, key,
                          tr_gguf_type_name(et));
    if (v->v.arr.n != (uint64_t)hp->n_layer)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s has %llu entries for %d layers", L->path, key,
                          (unsigned long long)v->v.arr.n, hp->n_layer);
    hp->n_head_kv = 0;
    hp->n_layer_kv = hp->n_layer_rs = 0;
    for (int i = 0; i < hp->n_layer; i++) {
        const int64_t k = tr_gguf_arr_int(v, (uint64_t)i);
        if (k < 0 || k > hp->n_head || (k > 0 && hp->n_head_kv > 0 && k != hp->n_head_kv))
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED,
                              "%s: %s[%d] = %lld: want 0 (a state-space layer) or one KV head count in [1, %d] for "
                              "every attention layer", L->path, key, i, (long long)k, hp->n_head);
        if (k > 0) hp->n_head_kv = (int32_t)k, hp->n_layer_kv++;
        else hp->n_layer_rs++;
    }
    if (hp->n_head_kv == 0) hp->n_head_kv = hp->n_head; /* no attention layer: the heads are never used */
    return TR_OK;
}

static tr_status load_hparams(loader *L, tr_model *m) {
    tr_hparams *hp = &m->hp;
    const tr_arch *arch = m->arch;
    tr_status st;
    if ((st = check_unsupported(L, arch))) return st;
    if (arch->ssm != TR_SSM_NONE && !arch->hybrid) return load_ssm_hparams(L, m);
    hp->n_layer_rs = 0;
    if ((st = get_int(L, "embedding_length", true, 0, 1, 1 << 17, &hp->n_embd))) return st;
    if ((st = get_int(L, "block_count", true, 0, 1, 4096, &hp->n_layer))) return st;
    if ((st = get_int(L, "attention.head_count", true, 0, 1, 4096, &hp->n_head))) return st;
    hp->n_layer_kv = hp->n_layer;
    if (arch->hybrid) {
        if ((st = hybrid_kv_heads(L, m))) return st;
        if ((st = load_ssm_keys(L, m))) return st;
    } else if ((st = get_int(L, "attention.head_count_kv", false, hp->n_head, 1, hp->n_head, &hp->n_head_kv))) {
        return st;
    }
    if ((st = get_int(L, "feed_forward_length", true, 0, 1, 1 << 20, &hp->n_ff))) return st;
    if ((st = get_int(L, "context_length", false, 2048, 1, 1 << 24, &hp->n_ctx_train))) return st;
    hp->n_expert = hp->n_expert_used = hp->n_ff_exp = 0;
    if (arch->moe != TR_MOE_NO) {
        if ((st = get_int(L, "expert_count", arch->moe == TR_MOE_REQUIRED, 0, 0, 1024, &hp->n_expert))) return st;
        if (arch->moe == TR_MOE_REQUIRED && hp->n_expert == 0)
            return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.expert_count is 0", L->path, L->arch);
    }
    if (hp->n_expert > 0) {
        if ((st = get_int(L, "expert_used_count", true, 0, 1, hp->n_expert, &hp->n_expert_used))) return st;
        if (m->arch->moe_ff_exp) {
            if ((st = get_int(L, "expert_feed_forward_length", false, 0, 0, 1 << 20, &hp->n_ff_exp))) return st;
            if (hp->n_ff_exp == 0) hp->n_ff_exp = hp->n_ff / hp->n_expert_used; /* as llama.cpp */
        } else {
            hp->n_ff_exp = hp->n_ff;
        }
        if (hp->n_ff_exp == 0)
            return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.expert_feed_forward_length is 0", L->path, L->arch);
    }
    if (hp->n_head % hp->n_head_kv != 0)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.attention.head_count (%d) is not a multiple of head_count_kv (%d)",
                          L->path, L->arch, hp->n_head, hp->n_head_kv);
    int32_t def_head = hp->n_embd / hp->n_head;
    if ((st = get_int(L, "attention.key_length", false, def_head, 1, 1 << 12, &hp->head_k))) return st;
    if ((st = get_int(L, "attention.value_length", false, def_head, 1, 1 << 12, &hp->head_v))) return st;
    if ((st = get_int(L, "rope.dimension_count", false, hp->head_k, 2, hp->head_k, &hp->n_rot))) return st;
    if (hp->n_rot % 2)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.rope.dimension_count = %d is odd", L->path, L->arch, hp->n_rot);
    if (arch->norm == TR_NORM_LAYER) {
        if ((st = get_float(L, "attention.layer_norm_epsilon", true, 0, &hp->norm_eps))) return st;
    } else {
        if (has_key(L, "attention.layer_norm_epsilon") && !has_key(L, "attention.layer_norm_rms_epsilon"))
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: LayerNorm (not RMSNorm) is not supported for %s",
                              L->path, L->arch);
        if ((st = get_float(L, "attention.layer_norm_rms_epsilon", true, 0, &hp->norm_eps))) return st;
    }
    if (!(hp->norm_eps >= 0))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s's norm epsilon is negative", L->path, L->arch);
    if ((st = get_float(L, "rope.freq_base", false, 10000.0, &hp->rope_base))) return st;
    if (!(hp->rope_base > 0))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.rope.freq_base must be positive", L->path, L->arch);
    float factor = 0;
    if ((st = get_float(L, "rope.scaling.factor", false, 0.0, &factor))) return st;
    if (factor == 0 && (st = get_float(L, "rope.scale_linear", false, 0.0, &factor))) return st;
    if (factor < 0) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.rope.scaling.factor is negative", L->path, L->arch);
    hp->rope_scale = factor > 0 ? 1.0f / factor : 1.0f;
    /* rope.scaling.attn_factor multiplies cos and sin (llama.cpp: every architecture). */
    if ((st = get_float(L, "rope.scaling.attn_factor", false, 1.0, &hp->rope_mscale))) return st;
    if (!(hp->rope_mscale > 0))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.rope.scaling.attn_factor must be positive", L->path, L->arch);
    if ((st = get_int(L, "rope.scaling.original_context_length", false, hp->n_ctx_train, 1, 1 << 24, &hp->n_ctx_orig)))
        return st;
    hp->n_swa = 0;
    hp->swa_pattern = arch->swa_pattern;
    if (arch->swa_pattern > 0) {
        if ((st = get_int(L, "attention.sliding_window", false, arch->n_swa_default, 0, 1 << 24, &hp->n_swa)))
            return st;
        if ((st = get_int(L, "attention.sliding_window_pattern", false, arch->swa_pattern, 1, 4096, &hp->swa_pattern)))
            return st;
    }
    hp->rope_base_swa = arch->rope_base_swa > 0 ? arch->rope_base_swa : hp->rope_base;
    hp->rope_scale_swa = arch->rope_base_swa > 0 ? 1.0f : hp->rope_scale;
    if (arch->swa_pattern > 0 && (st = get_float(L, "rope.freq_base_swa", false, hp->rope_base_swa, &hp->rope_base_swa)))
        return st;
    if (!(hp->rope_base_swa > 0))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.rope.freq_base_swa must be positive", L->path, L->arch);
    hp->final_softcap = 0;
    if (arch->final_softcap &&
        (st = get_float(L, "final_logit_softcapping", false, arch->final_softcap_default, &hp->final_softcap)))
        return st;
    if (hp->final_softcap < 0)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.final_logit_softcapping is negative", L->path, L->arch);
    hp->attn_softcap = 0;
    if (arch->attn_softcap &&
        (st = get_float(L, "attn_logit_softcapping", false, arch->attn_softcap_default, &hp->attn_softcap)))
        return st;
    if (hp->attn_softcap < 0)
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s.attn_logit_softcapping is negative", L->path, L->arch);
    /* The 27B Gemmas scale queries by 1/sqrt(n_embd/n_head) (query_pre_attn_scalar),
     * which the file does not record; llama.cpp recognises them by their layer count. */
    if (arch->n_layer_wide_scale > 0 && hp->n_layer == arch->n_layer_wide_scale)
        hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
    else
        hp->attn_scale = 1.0f / sqrtf((float)hp->head_k);
    hp->embd_mult = hp->residual_scale = hp->logit_scale = 0;
    hp->no_rope = false;
    if (arch->granite_scales) {
        float as = 0;
        if ((st = get_float(L, "embedding_scale", false, 0, &hp->embd_mult))) return st;
        if ((st = get_float(L, "residual_scale", false, 0, &hp->residual_scale))) return st;
        if ((st = get_float(L, "logit_scale", false, 0, &hp->logit_scale))) return st;
        if ((st = get_float(L, "attention.scale", false, 0, &as))) return st;
        if (as != 0) hp->attn_scale = as; /* llama.cpp: attention.scale when set, else 1/sqrt(head size) */
        /* Granite turns RoPE off with rope.scaling.finetuned = false (llama.cpp's rope_pattern) */
        char key[160];
        key_name(key, sizeof key, L, "rope.scaling.finetuned");
        bool ft = true;
        if (tr_gguf_get(L->g, key) && !tr_gguf_get_bool(L->g, key, &ft))
            return tr_err_set(L->err, TR_ERR_FORMAT, "%s: %s is not a boolean", L->path, key);
        hp->no_rope = !ft;
    }
    return TR_OK;
}

/* Rows [r0, r0 + rows) of a weight: a fused tensor's part (attn_qkv's q, k
 * and v; Phi-3's ffn_up's gate and up). Each output row of a matmul depends
 * on its own weight row only, so the parts compute what the whole would. */
static tr_weight weight_rows(const tr_weight *w, int64_t r0, int64_t rows) {
    tr_weight p = *w;
    p.data = (const uint8_t *)w->data + (size_t)r0 * tr_row_size(w->type, w->cols);
    p.rows = rows;
    return p;
}

/* The matrices of a dense layer that may carry a scale (llama.cpp's
 * wq_s .. ffn_down_s), into out[7]. */
static void scalable_matrices(tr_layer *l, tr_weight *out[7]) {
    tr_weight *const ws[7] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
    memcpy(out, ws, sizeof ws);
}

/* A matrix's scale, {name}.scale: one F32 that multiplies the matrix's
 * product (BitNet's per-tensor scale when the file keeps the matrix as bare
 * {-1, 0, 1}; llama.cpp's build_lora_mm). Optional, as in llama.cpp. */
static tr_status get_scale(loader *L, tr_weight *w) {
    if (!w->data) return TR_OK;
    const size_t k = strlen(w->name);
    if (k < 7 || strcmp(w->name + k - 7, ".weight") != 0) return TR_OK;
    char n[160];
    snprintf(n, sizeof n, "%.*s.scale", (int)(k - 7), w->name);
    return get_vec(L, n, 1, false, &w->scale);
}

static bool file_says_longrope(const loader *L) {
    char key[160];
    key_name(key, sizeof key, L, "rope.scaling.type");
    tr_str st;
    return tr_gguf_get_str(L->g, key, &st) && st.len == 8 && !memcmp(st.ptr, "longrope", 8);
}

/* A Mamba or Mamba-2 layer's tensors (llama.cpp's names and shapes; the
 * hybrid's conv bias is optional, as llama.cpp's granitehybrid loader). */
static tr_status load_ssm_layer(loader *L, tr_model *m, int i, tr_layer *l) {
    const tr_hparams *hp = &m->hp;
    const bool m2 = m->arch->ssm == TR_SSM_MAMBA2;
    const int64_t E = hp->n_embd, DI = hp->ssm_d_inner, DS = hp->ssm_d_state, R = hp->ssm_dt_rank;
    const int64_t NH = hp->ssm_n_head, NG = hp->ssm_n_group, CD = hp->ssm_conv_dim, K = hp->ssm_d_conv;
    tr_status st;
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
    const int64_t in_rows = m2 ? 2 * DI + 2 * NG * DS + NH : 2 * DI;
    if ((st = get_weight(L, NAME("ssm_in.weight"), in_rows, E, true, &l->ssm_in))) return st;
    if ((st = get_f32(L, NAME("ssm_conv1d.weight"), K, CD, true, &l->ssm_conv1d))) return st;
    if ((st = get_vec(L, NAME("ssm_conv1d.bias"), CD, !m->arch->hybrid, &l->ssm_conv1d_b))) return st;
    if (m2) {
        if ((st = get_vec(L, NAME("ssm_dt.bias"), NH, true, &l->ssm_dt_b))) return st;
        if ((st = get_f32(L, NAME("ssm_a"), 1, NH, true, &l->ssm_a))) return st;
        if ((st = get_f32(L, NAME("ssm_d"), 1, NH, true, &l->ssm_d))) return st;
        if ((st = get_f32(L, NAME("ssm_norm.weight"), DI / NG, NG, true, &l->ssm_norm))) return st;
    } else {
        if ((st = get_weight(L, NAME("ssm_x.weight"), R + 2 * DS, DI, true, &l->ssm_x))) return st;
        if ((st = get_weight(L, NAME("ssm_dt.weight"), DI, R, true, &l->ssm_dt))) return st;
        if ((st = get_vec(L, NAME("ssm_dt.bias"), DI, true, &l->ssm_dt_b))) return st;
        if ((st = get_f32(L, NAME("ssm_a"), DS, DI, true, &l->ssm_a))) return st;
        if ((st = get_vec(L, NAME("ssm_d"), DI, true, &l->ssm_d))) return st;
        static const char *const norms[] = {"ssm_dt_norm.weight", "ssm_b_norm.weight", "ssm_c_norm.weight"};
        for (size_t j = 0; j < sizeof norms / sizeof norms[0]; j++)
            if (find(L, NAME(norms[j])))
                return tr_err_set(L->err, TR_ERR_UNSUPPORTED,
                                  "%s: tensor %s (RMSNorm of dt, B and C, as Jamba): not supported for %s", L->path, n,
                                  L->arch);
    }
    if ((st = get_weight(L, NAME("ssm_out.weight"), E, DI, true, &l->ssm_out))) return st;
#undef NAME
    return TR_OK;
}

/* An attention layer's tensors: norm bias, q/k/v (three tensors or one
 * fused attn_qkv), their biases, the output, QK-norm, post-norms. */
static tr_status load_attn_layer(loader *L, tr_model *m, int i, tr_layer *l) {
    const tr_hparams *hp = &m->hp;
    const tr_arch *arch = m->arch;
    const bool layer_norm = arch->norm == TR_NORM_LAYER;
    const int64_t E = hp->n_embd, Q = (int64_t)hp->n_head * hp->head_k, K = (int64_t)hp->n_head_kv * hp->head_k,
                  V = (int64_t)hp->n_head_kv * hp->head_v, O = (int64_t)hp->n_head * hp->head_v;
    tr_status st;
    char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
    if ((st = get_vec(L, NAME("attn_norm.bias"), E, layer_norm, &l->attn_norm_b))) return st;
    /* q, k, v: three tensors, or one attn_qkv of their rows in that order. */
    if (find(L, NAME("attn_qkv.weight"))) {
        tr_weight qkv;
        if ((st = get_weight(L, n, Q + K + V, E, true, &qkv))) return st;
        l->wq = weight_rows(&qkv, 0, Q);
        l->wk = weight_rows(&qkv, Q, K);
        l->wv = weight_rows(&qkv, Q + K, V);
        const float *b = NULL;
        if ((st = get_vec(L, NAME("attn_qkv.bias"), Q + K + V, arch->qkv_bias, &b))) return st;
        if (b) l->bq = b, l->bk = b + Q, l->bv = b + Q + K;
    } else {
        if ((st = get_weight(L, NAME("attn_q.weight"), Q, E, true, &l->wq))) return st;
        if ((st = get_weight(L, NAME("attn_k.weight"), K, E, true, &l->wk))) return st;
        if ((st = get_weight(L, NAME("attn_v.weight"), V, E, true, &l->wv))) return st;
        if ((st = get_vec(L, NAME("attn_q.bias"), Q, arch->qkv_bias, &l->bq))) return st;
        if ((st = get_vec(L, NAME("attn_k.bias"), K, arch->qkv_bias, &l->bk))) return st;
        if ((st = get_vec(L, NAME("attn_v.bias"), V, arch->qkv_bias, &l->bv))) return st;
    }
    if ((st = get_weight(L, NAME("attn_output.weight"), E, O, true, &l->wo))) return st;
    if ((st = get_vec(L, NAME("attn_output.bias"), E, false, &l->bo))) return st;
    if (arch->qk_norm) {
        const int64_t nq = arch->qk_norm_full ? Q : hp->head_k, nk = arch->qk_norm_full ? K : hp->head_k;
        if ((st = get_vec(L, NAME("attn_q_norm.weight"), nq, true, &l->q_norm))) return st;
        if ((st = get_vec(L, NAME("attn_k_norm.weight"), nk, true, &l->k_norm))) return st;
    } else if (find(L, NAME("attn_q_norm.weight"))) {
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s is not supported for %s", L->path, n, L->arch);
    }
    if (arch->sub_norms) {
        if ((st = get_vec(L, NAME("attn_sub_norm.weight"), O, true, &l->attn_sub_norm))) return st;
        if ((st = get_vec(L, NAME("ffn_sub_norm.weight"), hp->n_ff, true, &l->ffn_sub_norm))) return st;
    }
    if (arch->post_norms) {
        if ((st = get_vec(L, NAME("post_attention_norm.weight"), E, true, &l->post_attn_norm))) return st;
        if ((st = get_vec(L, NAME("post_ffw_norm.weight"), E, true, &l->post_ffn_norm))) return st;
    }
#undef NAME
    return TR_OK;
}

static tr_status load_weights(loader *L, tr_model *m) {
    tr_hparams *hp = &m->hp;
    const tr_arch *arch = m->arch;
    const bool layer_norm = arch->norm == TR_NORM_LAYER;
    tr_status st;
    const tr_gguf_tensor *te = find(L, "token_embd.weight");
    if (!te) return tr_err_set(L->err, TR_ERR_FORMAT, "%s: missing tensor token_embd.weight", L->path);
    if (te->ne[1] < 1 || te->ne[1] > (1 << 24))
        return tr_err_set(L->err, TR_ERR_FORMAT, "%s: tensor token_embd.weight has %lld rows", L->path,
                          (long long)te->ne[1]);
    hp->n_vocab = (int32_t)te->ne[1];
    if ((st = get_weight(L, "token_embd.weight", hp->n_vocab, hp->n_embd, true, &m->tok_embd))) return st;
    if (arch->pos_embd &&
        (st = get_weight(L, "position_embd.weight", hp->n_ctx_train, hp->n_embd, true, &m->pos_embd)))
        return st;
    if ((st = get_vec(L, "output_norm.weight", hp->n_embd, true, &m->output_norm))) return st;
    if ((st = get_vec(L, "output_norm.bias", hp->n_embd, layer_norm, &m->output_norm_b))) return st;
    if (!arch->tied_output && (st = get_weight(L, "output.weight", hp->n_vocab, hp->n_embd, false, &m->output)))
        return st;
    if (!m->output.data) m->output = m->tok_embd; /* tied embeddings */
    if (find(L, "output.bias"))
        return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor output.bias is not supported", L->path);
    if (arch->longrope || file_says_longrope(L)) {
        if ((st = get_vec(L, "rope_factors_long.weight", hp->n_rot / 2, false, &m->rope_long))) return st;
        if ((st = get_vec(L, "rope_factors_short.weight", hp->n_rot / 2, false, &m->rope_short))) return st;
    } else if ((st = get_vec(L, "rope_freqs.weight", hp->n_rot / 2, false, &m->rope_freqs))) {
        return st;
    }

    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return tr_err_set(L->err, TR_ERR_NOMEM, "%s: out of memory for %d layers", L->path, hp->n_layer);
    const int64_t E = hp->n_embd, F = hp->n_ff;
    int32_t n_kv = 0, n_rs = 0;
    for (int i = 0; i < hp->n_layer; i++) {
        tr_layer *l = &m->layers[i];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", i, s), n)
        if ((st = get_vec(L, NAME("attn_norm.weight"), E, true, &l->attn_norm))) return st;
        /* The mixer: a state-space layer (Mamba; a hybrid's where its KV
         * head count is 0), or attention. */
        l->recurrent = arch->ssm != TR_SSM_NONE && (!arch->hybrid || layer_kv_heads(L, m, i) == 0);
        l->kv_layer = l->recurrent ? -1 : n_kv++;
        l->rs_layer = l->recurrent ? n_rs++ : -1;
        if (l->recurrent) {
            if ((st = load_ssm_layer(L, m, i, l))) return st;
            if (!arch->hybrid) continue; /* Mamba: no feed-forward */
        } else if ((st = load_attn_layer(L, m, i, l))) {
            return st;
        }
        if ((st = get_vec(L, NAME("ffn_norm.weight"), E, true, &l->ffn_norm))) return st;
        if ((st = get_vec(L, NAME("ffn_norm.bias"), E, layer_norm, &l->ffn_norm_b))) return st;
        if (hp->n_expert == 0 && find(L, NAME("ffn_gate_inp.weight")))
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s (mixture of experts) without %s.expert_count",
                              L->path, n, L->arch);
        bool fused_gu = false;
        if (hp->n_expert > 0) {
            const int64_t X = hp->n_expert, FX = hp->n_ff_exp;
            if ((st = get_weight(L, NAME("ffn_gate_inp.weight"), X, E, true, &l->gate_inp))) return st;
            if ((st = get_experts(L, NAME("ffn_gate_exps.weight"), X, FX, E, &l->gate_exps))) return st;
            if ((st = get_experts(L, NAME("ffn_up_exps.weight"), X, FX, E, &l->up_exps))) return st;
            if ((st = get_experts(L, NAME("ffn_down_exps.weight"), X, E, FX, &l->down_exps))) return st;
            if (find(L, NAME("ffn_gate_inp_shexp.weight")) || find(L, NAME("ffn_up_shexp.weight")))
                return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: shared experts (%s) are not supported", L->path, n);
        } else if (arch->ffn == TR_FFN_SEQ) {
            if ((st = get_weight(L, NAME("ffn_up.weight"), F, E, true, &l->w_up))) return st;
        } else if (!find(L, NAME("ffn_gate.weight")) && find(L, NAME("ffn_up.weight")) &&
                   find(L, n)->ne[1] == 2 * F) {
            /* gate and up fused: 2*n_ff rows, the gate's first (Phi-3) */
            tr_weight gu;
            if ((st = get_weight(L, n, 2 * F, E, true, &gu))) return st;
            l->w_gate = weight_rows(&gu, 0, F);
            l->w_up = weight_rows(&gu, F, F);
            fused_gu = true;
        } else {
            if ((st = get_weight(L, NAME("ffn_gate.weight"), F, E, true, &l->w_gate))) return st;
            if ((st = get_weight(L, NAME("ffn_up.weight"), F, E, true, &l->w_up))) return st;
        }
        if (hp->n_expert == 0 && (st = get_weight(L, NAME("ffn_down.weight"), E, F, true, &l->w_down))) return st;
        const bool seq = arch->ffn == TR_FFN_SEQ; /* GPT-2's MLP has its biases; others may */
        if (fused_gu && find(L, NAME("ffn_up.bias")))
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: a bias on the fused gate and up, %s, is not supported",
                              L->path, n);
        if ((st = get_vec(L, NAME("ffn_up.bias"), F, seq, &l->b_up))) return st;
        if ((st = get_vec(L, NAME("ffn_down.bias"), E, seq, &l->b_down))) return st;
        if ((st = get_vec(L, NAME("ffn_gate.bias"), F, false, &l->b_gate))) return st;
        if (seq && l->b_gate)
            return tr_err_set(L->err, TR_ERR_UNSUPPORTED, "%s: tensor %s is not supported for %s", L->path, n, L->arch);
#undef NAME
        if (arch->matrix_scales) {
            tr_weight *ws[7];
            scalable_matrices(l, ws);
            for (int j = 0; j < 7; j++)
                if ((st = get_scale(L, ws[j]))) return st;
        }
        /* Local (sliding-window) layers: all but every swa_pattern-th. */
        l->swa = hp->n_swa > 0 && hp->swa_pattern > 0 && (i % hp->swa_pattern) < hp->swa_pattern - 1;
        l->rope_base = l->swa ? hp->rope_base_swa : hp->rope_base;
        l->rope_scale = l->swa ? hp->rope_scale_swa : hp->rope_scale;
    }
    return TR_OK;
}

static void base_name(char *dst, size_t cap, const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(dst, cap, "%s", b);
}

tr_model_params tr_model_default_params(void) { return (tr_model_params){.no_repack = false}; }

tr_status tr_model_load(const char *path, tr_model **out, tr_error *err) {
    const tr_model_params p = tr_model_default_params();
    return tr_model_load_params(path, &p, out, err);
}

tr_status tr_model_load_params(const char *path, const tr_model_params *p, tr_model **out, tr_error *err) {
    *out = NULL;
    tr_model *m = calloc(1, sizeof *m);
    if (!m) return tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory", path);
    tr_status st = tr_gguf_open(path, &m->gguf, err);
    if (st) {
        free(m);
        return st;
    }
    loader L = {.g = m->gguf, .path = path, .err = err};
    tr_str a;
    if (!tr_gguf_get_str(m->gguf, "general.architecture", &a)) {
        st = tr_err_set(err, TR_ERR_FORMAT, "%s: missing metadata key general.architecture", path);
        goto fail;
    }
    m->arch = tr_arch_find(a.ptr, a.len);
    if (!m->arch || a.len >= sizeof L.arch) {
        st = tr_err_set(err, TR_ERR_UNSUPPORTED, "%s: architecture '%.*s' is not supported (supported: %s)", path,
                        (int)(a.len > 64 ? 64 : a.len), a.ptr, tr_arch_supported_list());
        goto fail;
    }
    memcpy(L.arch, a.ptr, a.len);
    L.arch[a.len] = 0;
    memcpy(m->arch_name, L.arch, a.len + 1);
    if ((st = load_hparams(&L, m))) goto fail;
    if ((st = load_weights(&L, m))) goto fail;
    if ((st = tr_vocab_load(m->gguf, &m->vocab, err))) goto fail;
    if (tr_vocab_n_tokens(m->vocab) != m->hp.n_vocab) {
        st = tr_err_set(err, TR_ERR_FORMAT, "%s: vocabulary has %d tokens but token_embd.weight has %d rows", path,
                        tr_vocab_n_tokens(m->vocab), m->hp.n_vocab);
        goto fail;
    }
    tr_str name;
    if (tr_gguf_get_str(m->gguf, "general.name", &name) && name.len > 0)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len > 200 ? 200 : name.len), name.ptr);
    else
        base_name(m->name, sizeof m->name, path);
    for (int64_t i = 0; i < tr_gguf_n_tensors(m->gguf); i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(m->gguf, i);
        m->n_params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        m->weight_bytes += t->nbytes;
    }
    if (!(p && p->no_repack) && (st = tr_model_repack(m, err))) goto fail;
    *out = m;
    return TR_OK;
fail:
    tr_model_free(m);
    return st;
}

void tr_model_free(tr_model *m) {
    if (!m) return;
    tr_vocab_free(m->vocab);
    tr_model_repack_free(m);
    free(m->layers);
    tr_gguf_close(m->gguf);
    free(m);
}

const tr_gguf *tr_model_gguf(const tr_model *m) { return m->gguf; }
const tr_vocab *tr_model_vocab(const tr_model *m) { return m->vocab; }
const char *tr_model_arch(const tr_model *m) { return m->arch_name; }
const char *tr_model_name(const tr_model *m) { return m->name; }
int32_t tr_model_n_vocab(const tr_model *m) { return m->hp.n_vocab; }
int32_t tr_model_n_ctx_train(const tr_model *m) { return m->hp.n_ctx_train; }
bool tr_model_is_recurrent(const tr_model *m) { return m->hp.n_layer_rs > 0; }
uint64_t tr_model_n_params(const tr_model *m) { return m->n_params; }
uint64_t tr_model_weight_bytes(const tr_model *m) { return m->weight_bytes; }
uint64_t tr_model_repacked_bytes(const tr_model *m) { return m->repacked_bytes; }
uint64_t tr_model_copied_bytes(const tr_model *m) { return m->copied_bytes; }

/* ---------------------------------------------------------------- describe */

typedef struct sbuf {
    char *p;
    size_t cap, len;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->len < b->cap ? b->p + b->len : NULL, b->len < b->cap ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (k > 0) b->len += (size_t)k;
}

/* A sequence's recurrent state, all state-space layers. */
static double state_kib(const tr_hparams *hp) {
    return ((double)(hp->ssm_d_conv - 1) * hp->ssm_conv_dim + (double)hp->ssm_d_inner * hp->ssm_d_state) *
           hp->n_layer_rs * sizeof(float) / 1024.0;
}

size_t tr_model_describe(const tr_model *m, char *buf, size_t cap) {
    sbuf b = {.p = buf, .cap = cap, .len = 0};
    if (cap) buf[0] = 0;
    const tr_arch *a = m->arch;
    const tr_hparams *hp = &m->hp;
    const tr_layer *l0 = &m->layers[0];
    char key[160];
    if (a->ssm != TR_SSM_NONE && !a->hybrid) {
        put(&b, "architecture: %s (supported), %d layers, n_embd %d, vocabulary %d\n", a->name, hp->n_layer, hp->n_embd,
            hp->n_vocab);
        if (a->ssm == TR_SSM_MAMBA2)
            put(&b, "state space: Mamba-2 (scalar decay per head), d_inner %d, %d heads of %d, %d group%s of B/C, "
                "d_state %d, conv kernel %d, grouped RMSNorm\n", hp->ssm_d_inner, hp->ssm_n_head, hp->ssm_head_dim,
                hp->ssm_n_group, hp->ssm_n_group == 1 ? "" : "s", hp->ssm_d_state, hp->ssm_d_conv);
        else
            put(&b, "state space: Mamba (selective scan), d_inner %d, d_state %d, conv kernel %d, dt rank %d\n",
                hp->ssm_d_inner, hp->ssm_d_state, hp->ssm_d_conv, hp->ssm_dt_rank);
        put(&b, "recurrent state: %.1f KiB per sequence, constant with length (no attention, no KV cache); "
            "prefix cache, speculative decoding and --kv-window are off for it (a state cannot be rolled back)\n",
            state_kib(hp));
        put(&b, "norms: RMSNorm, eps %g\n", hp->norm_eps);
        put(&b, "output: %s\n", m->output.data == m->tok_embd.data ? "tied to token_embd" : "output.weight");
        return b.len;
    }
    put(&b, "architecture: %s (supported), %d layers, n_embd %d, n_ff %d, vocabulary %d\n", a->name, hp->n_layer,
        hp->n_embd, hp->n_ff, hp->n_vocab);

    put(&b, "attention: %d heads, %d KV heads (%s), head size %d/%d", hp->n_head, hp->n_head_kv,
        hp->n_head_kv == hp->n_head ? "MHA" : hp->n_head_kv == 1 ? "MQA" : "GQA", hp->head_k, hp->head_v);
    if (tr_gguf_find_tensor(m->gguf, "blk.0.attn_qkv.weight")) put(&b, ", q/k/v fused (attn_qkv)");
    if (l0->bq) put(&b, ", q/k/v biases");
    if (l0->bo) put(&b, ", output bias");
    if (a->qk_norm) put(&b, a->qk_norm_full ? ", QK-norm over all heads" : ", QK-norm");
    put(&b, ", scale %g%s", hp->attn_scale, a->scale_q ? " on q" : "");
    if (hp->attn_softcap > 0) put(&b, ", attention soft-capping %g", hp->attn_softcap);
    int n_local = 0;
    for (int i = 0; i < hp->n_layer; i++) n_local += m->layers[i].swa;
    if (n_local > 0)
        put(&b, ", sliding window %d on %d of %d layers (one global in every %d)", hp->n_swa, n_local, hp->n_layer,
            hp->swa_pattern);
    snprintf(key, sizeof key, "%s.attention.sliding_window", m->arch_name);
    int64_t w = 0;
    if (a->swa_pattern == 0 && tr_gguf_get_int(m->gguf, key, &w) && w > 0)
        put(&b, ", sliding window %lld in the file: not applied (as llama.cpp for %s)", (long long)w, a->name);
    put(&b, "\n");

    if (a->hybrid) {
        put(&b, "layers: %d attention, %d state-space (Mamba-2: %d heads of %d, %d group%s of B/C, d_state %d, conv "
            "kernel %d); recurrent state %.1f KiB per sequence beside its KV cache; prefix cache, speculative decoding "
            "and --kv-window are off (a state cannot be rolled back)\n", hp->n_layer_kv, hp->n_layer_rs, hp->ssm_n_head,
            hp->ssm_head_dim, hp->ssm_n_group, hp->ssm_n_group == 1 ? "" : "s", hp->ssm_d_state, hp->ssm_d_conv,
            state_kib(hp));
        put(&b, "multipliers: embeddings %g, residual branches %g, logits 1/%g\n", hp->embd_mult ? hp->embd_mult : 1.0,
            hp->residual_scale ? hp->residual_scale : 1.0, hp->logit_scale ? hp->logit_scale : 1.0);
    }
    put(&b, "positions: ");
    if (hp->no_rope) {
        put(&b, "none (rope.scaling.finetuned is false: no RoPE, as llama.cpp)");
    } else if (a->rope == TR_ROPE_NONE) {
        put(&b, "learned absolute positions (position_embd, %d)", hp->n_ctx_train);
    } else {
        put(&b, "RoPE (%s) over %d of %d dimensions, base %g", a->rope == TR_ROPE_NEOX ? "NeoX pairs" : "adjacent pairs",
            hp->n_rot, hp->head_k, hp->rope_base);
        if (hp->rope_scale != 1.0f) put(&b, ", linear scaling %g", 1.0f / hp->rope_scale);
        if (n_local > 0 && (hp->rope_base_swa != hp->rope_base || hp->rope_scale_swa != hp->rope_scale))
            put(&b, ", local layers base %g", hp->rope_base_swa);
        if (m->rope_freqs) put(&b, ", frequency factors (rope_freqs)");
        if (m->rope_long || m->rope_short)
            put(&b, ", LongRoPE factors (long beyond %d tokens per sequence, else short)", hp->n_ctx_orig);
        if (hp->rope_mscale != 1.0f) put(&b, ", attention factor %g", hp->rope_mscale);
    }
    put(&b, ", context %d\n", hp->n_ctx_train);

    if (hp->n_expert > 0)
        put(&b, "experts: mixture of %d experts, top %d by the router's softmax%s, experts' feed-forward %d\n",
            hp->n_expert, hp->n_expert_used, a->moe_norm_w ? ", weights renormalised to sum 1" : ", weights not renormalised", hp->n_ff_exp);
    const char *act = a->act == TR_ACT_GELU ? "GELU" : "SiLU";
    if (hp->n_expert > 0)
        put(&b, "feed-forward: %s experts", a->act == TR_ACT_GELU ? "GeGLU" : "SwiGLU");
    else if (a->ffn == TR_FFN_SEQ)
        put(&b, "feed-forward: %s MLP (no gate)", act);
    else
        put(&b, "feed-forward: %s", a->act == TR_ACT_GELU ? "GeGLU" : "SwiGLU");
    if (hp->n_expert == 0 && a->ffn == TR_FFN_GATED && !tr_gguf_find_tensor(m->gguf, "blk.0.ffn_gate.weight"))
        put(&b, ", gate and up fused (ffn_up)");
    if (l0->b_up || l0->b_down) put(&b, ", biases");
    put(&b, "\n");

    put(&b, "norms: %s, eps %g", a->norm == TR_NORM_LAYER ? "LayerNorm with bias" : "RMSNorm", hp->norm_eps);
    if (a->post_norms) put(&b, ", also after attention and feed-forward");
    if (a->sub_norms)
        put(&b, ", also of the attention's output before attn_output (attn_sub_norm) and of the feed-forward's "
            "hidden layer before ffn_down (ffn_sub_norm)");
    put(&b, "\n");
    if (a->matrix_scales) {
        int n_mat = 0, n_scaled = 0;
        for (int i = 0; i < hp->n_layer; i++) {
            tr_weight *ws[7];
            scalable_matrices(&m->layers[i], ws);
            for (int j = 0; j < 7; j++) {
                n_mat += ws[j]->data != NULL;
                n_scaled += ws[j]->scale != NULL;
            }
        }
        put(&b, "matrix scales: %d of %d layer matrices have a {name}.scale (one F32 multiplying the product)\n",
            n_scaled, n_mat);
    }

    put(&b, "output: ");
    if (a->embd_scale) put(&b, "embeddings scaled by sqrt(n_embd), ");
    put(&b, "%s", m->output.data == m->tok_embd.data ? "tied to token_embd" : "output.weight");
    if (a->tied_output && tr_gguf_find_tensor(m->gguf, "output.weight"))
        put(&b, " (the file's output.weight is not used: llama.cpp's %s loader reads none, and refuses the file "
            "for its extra tensor)", a->name);
    if (hp->final_softcap > 0) put(&b, ", final logit soft-capping %g", hp->final_softcap);
    put(&b, "\n");
    /* What is (or, for a model loaded with no_repack, would be) repacked on this CPU. */
    int64_t n_from[TR_REPACK_KINDS] = {0};
    uint64_t from_bytes[TR_REPACK_KINDS] = {0}, to_bytes[TR_REPACK_KINDS] = {0}, copied = m->copied_bytes;
    if (m->n_repacked > 0) {
        for (int64_t j = 0; j < m->n_repacked; j++) {
            const tr_repacked *r = &m->repacked[j];
            const int k = tr_repack_kind(r->to);
            if (k < 0 || r->to == r->from) continue; /* copies: below */
            n_from[k]++, from_bytes[k] += r->src_bytes;
            to_bytes[k] += (uint64_t)(r->src_bytes / r->src_row) * r->dst_row;
        }
    } else {
        tr_model_repack_plan(m, n_from, from_bytes, to_bytes, &copied);
    }
    for (int k = 0; k < TR_REPACK_KINDS; k++) {
        if (n_from[k] == 0) continue;
        static const int to[TR_REPACK_KINDS] = {TR_TYPE_TQ2_0, TR_TYPE_Q4_K_X16, TR_TYPE_Q4_0_X16, TR_TYPE_Q5_0_X16,
                                                TR_TYPE_Q8_0_X16};
        const bool x16 = k > 0;
        put(&b, "repack: %lld %s tensors (%.1f MiB mapped) %s into %s%s (%.1f MiB of the model's own; %s; "
            "--no-repack keeps them mapped)\n",
            (long long)n_from[k], tr_type_name(x16 ? tr_x16_source(to[k]) : TR_TYPE_TQ1_0),
            (double)from_bytes[k] / 1048576.0, m->n_repacked ? "repacked at load" : "repacked at load by run/chat/serve/bench",
            x16 ? tr_type_name(to[k]) : "TQ2_0's layout", x16 ? " (sixteen rows interleaved)" : "",
            (double)to_bytes[k] / 1048576.0,
            x16 ? "the same numbers; the SIMD kernels read sixteen rows as one stream"
                : "the same numbers, faster kernels");
    }
    if (copied > 0)
        put(&b, "copy: the other matrices (%.1f MiB) %s as they are into the model's own memory, in 2 MiB pages with "
            "the repacked ones (fewer TLB misses; --no-repack keeps them mapped)\n",
            (double)copied / 1048576.0, m->n_repacked ? "copied at load" : "copied at load by run/chat/serve/bench");
    return b.len;
}
