/* Architectures as data, and a loaded model: hyperparameters and weight views.
 *
 * Everything that makes one architecture differ from another is a field of
 * tr_arch; forward (src/engine/forward.c) reads those fields and never asks
 * which architecture it runs. Adding an architecture of this family means
 * adding a row to the table in arch.c. */
#ifndef TR_MODEL_H
#define TR_MODEL_H

#include "trinity.h"

typedef enum tr_ffn_act {
    TR_ACT_SILU, /* SwiGLU: silu(gate) * up */
    TR_ACT_GELU, /* GeGLU: gelu_tanh(gate) * up */
} tr_ffn_act;

typedef struct tr_arch {
    const char *name;         /* general.architecture */
    bool rope_neox;           /* RoPE pairs (i, i+d/2) rather than (2i, 2i+1) */
    tr_ffn_act act;
    bool qkv_bias;            /* attn_{q,k,v}.bias are required (Qwen2); otherwise optional */
    bool qk_norm;             /* RMSNorm of each q and k head before RoPE (Qwen3, Gemma 3) */
    bool post_norms;          /* RMSNorm of the attention and FFN outputs before the residual add (Gemma 3) */
    bool embd_scale;          /* embeddings times sqrt(n_embd) (Gemma) */
    int swa_pattern;          /* with a sliding window: every swa_pattern-th layer is global, the others local */
    float rope_base_swa;      /* RoPE base of the local layers (their scale is 1) */
    bool final_softcap;       /* {arch}.final_logit_softcapping is applied when set (else setting it is an error) */
    bool scale_q;             /* the attention scale multiplies q before q.k (Gemma), not the scores */
} tr_arch;

/* The descriptor of an architecture, NULL when unsupported. */
const tr_arch *tr_arch_find(const char *name, size_t len);
/* "llama, qwen2, ..." for error messages. */
const char *tr_arch_supported_list(void);

/* A weight matrix: `rows` rows of `cols` elements of `type`, in the mapping. */
typedef struct tr_weight {
    int type;
    const void *data;
    int64_t rows, cols;
    const char *name;
} tr_weight;

typedef struct tr_layer {
    const float *attn_norm;       /* [n_embd] */
    tr_weight wq, wk, wv, wo;     /* wq: n_head*head_k x n_embd, wo: n_embd x n_head*head_v */
    const float *bq, *bk, *bv;    /* biases, NULL when absent */
    const float *q_norm, *k_norm; /* [head_k] when qk_norm */
    const float *post_attn_norm;  /* [n_embd] when post_norms */
    const float *ffn_norm;        /* [n_embd] */
    tr_weight w_gate, w_up, w_down; /* gate/up: n_ff x n_embd, down: n_embd x n_ff */
    const float *post_ffn_norm;   /* [n_embd] when post_norms */
    bool swa;                     /* sliding-window (local) layer */
    float rope_base, rope_scale;  /* this layer's RoPE */
} tr_layer;

typedef struct tr_hparams {
    int32_t n_vocab, n_ctx_train, n_embd, n_layer, n_head, n_head_kv, n_ff;
    int32_t head_k, head_v;       /* per-head sizes of keys/queries and values */
    int32_t n_rot;                /* dimensions RoPE rotates (<= head_k) */
    float norm_eps;
    float rope_base, rope_scale;  /* global layers: base, and 1/factor of linear scaling */
    int32_t n_swa;                /* sliding window (0: none) */
    float attn_scale;             /* multiplies q.k */
    float final_softcap;          /* 0: off */
} tr_hparams;

struct tr_model {
    tr_gguf *gguf;
    tr_vocab *vocab;
    const tr_arch *arch;
    tr_hparams hp;
    tr_weight tok_embd;           /* n_vocab x n_embd */
    const float *output_norm;     /* [n_embd] */
    tr_weight output;             /* n_vocab x n_embd; token_embd when tied */
    const float *rope_freqs;      /* [n_rot/2] frequency factors (Llama 3.1), or NULL */
    tr_layer *layers;             /* [n_layer] */
    char arch_name[64];
    char name[256];
    uint64_t n_params, weight_bytes;
};

#endif
