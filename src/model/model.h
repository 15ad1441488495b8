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
    TR_ACT_SILU, /* silu (SwiGLU when gated) */
    TR_ACT_GELU, /* gelu_tanh, at half precision as ggml (GeGLU when gated) */
} tr_ffn_act;

typedef enum tr_norm_kind {
    TR_NORM_RMS,   /* x / rms(x) * w (attention.layer_norm_rms_epsilon) */
    TR_NORM_LAYER, /* (x - mean) / std * w + b (attention.layer_norm_epsilon; GPT-2) */
} tr_norm_kind;

typedef enum tr_rope_kind {
    TR_ROPE_NORM, /* pairs (2i, 2i+1), as the original Llama */
    TR_ROPE_NEOX, /* pairs (i, i + n_rot/2), as GPT-NeoX */
    TR_ROPE_NONE, /* no rotary embedding (GPT-2: learned absolute positions) */
} tr_rope_kind;

typedef enum tr_ffn_kind {
    TR_FFN_GATED, /* act(x Wgate) * (x Wup), then Wdown; gate and up may be one
                     fused ffn_up of 2*n_ff rows, gate first (Phi-3) */
    TR_FFN_SEQ,   /* act(x Wup + b) Wdown + b: no gate (GPT-2) */
} tr_ffn_kind;

typedef enum tr_moe_kind {
    TR_MOE_NO,       /* {arch}.expert_count set is an error */
    TR_MOE_OPTIONAL, /* experts when {arch}.expert_count > 0 (llama: Mixtral) */
    TR_MOE_REQUIRED, /* always experts (qwen3moe) */
} tr_moe_kind;

typedef enum tr_ssm_kind {
    TR_SSM_NONE,   /* attention and feed-forward layers */
    TR_SSM_MAMBA1, /* Mamba: every layer a selective SSM; A per (channel, state), dt through a
                      low-rank projection (ssm_x, ssm_dt); no attention, no feed-forward */
    TR_SSM_MAMBA2, /* Mamba-2: A one scalar per head, x, B, C and dt all from ssm_in, B and C shared
                      by the heads of a group, a grouped RMSNorm after the gate */
} tr_ssm_kind;

typedef struct tr_arch {
    const char *name;         /* general.architecture */
    tr_norm_kind norm;
    tr_rope_kind rope;
    tr_ffn_kind ffn;
    tr_ffn_act act;
    bool pos_embd;            /* learned absolute positions added to the embeddings (position_embd) */
    bool qkv_bias;            /* attn_{q,k,v}.bias are required (Qwen2); otherwise optional */
    bool qk_norm;             /* RMSNorm of each q and k head before RoPE (Qwen3, Gemma 3) */
    bool qk_norm_full;        /* ... of all q heads together and all k heads together instead (OLMoE) */
    bool post_norms;          /* RMSNorm of the attention and FFN outputs before the residual add (Gemma 2, 3) */
    bool embd_scale;          /* embeddings times sqrt(n_embd) (Gemma) */
    int swa_pattern;          /* with a sliding window: every swa_pattern-th layer is global, the others local
                                 ({arch}.attention.sliding_window_pattern overrides it) */
    int n_swa_default;        /* the window when the file does not set one (0: none) */
    float rope_base_swa;      /* RoPE base of the local layers, scale 1 (0: the global base and scale);
                                 {arch}.rope.freq_base_swa overrides it */
    bool final_softcap;       /* {arch}.final_logit_softcapping is applied (else setting it is an error) */
    float final_softcap_default; /* ... when the file does not set it (0: off) */
    bool attn_softcap;        /* cap * tanh(scores / cap) before the softmax ({arch}.attn_logit_softcapping) */
    float attn_softcap_default;
    bool scale_q;             /* the attention scale multiplies q before q.k (Gemma, Phi-3), not the scores */
    int n_layer_wide_scale;   /* with this many layers, q is scaled by 1/sqrt(n_embd/n_head) instead of
                                 1/sqrt(head_k): the 27B Gemmas, recognised as llama.cpp does */
    bool longrope;            /* rope_factors_long / _short (LongRoPE; Phi-3); other arches: with rope.scaling.type longrope */
    bool tied_output;         /* the output matrix is token_embd even if the file has output.weight (Gemma 2) */
    tr_moe_kind moe;          /* mixture-of-experts feed-forward: never, with {arch}.expert_count, or always */
    bool moe_norm_w;          /* the chosen experts' softmax weights renormalised to sum 1 (Qwen3-MoE, Mixtral) */
    bool moe_ff_exp;          /* experts' size from {arch}.expert_feed_forward_length (else n_ff, as Mixtral) */
    bool sub_norms;           /* RMSNorm of the attention's heads before Wo (attn_sub_norm) and of the FFN's
                                 hidden layer before Wdown (ffn_sub_norm) (BitNet) */
    bool matrix_scales;       /* a matrix may carry a scale, {name}.scale (one F32), that multiplies its
                                 product (BitNet) */
    tr_ssm_kind ssm;          /* state-space layers: every layer x = x + ssm(rmsnorm(x)), no feed-forward, unless hybrid */
    bool hybrid;              /* with ssm: a state-space layer where {arch}.attention.head_count_kv[i] is 0, attention
                                 elsewhere; every layer then has its feed-forward (Granite 4.0-H) */
    bool granite_scales;      /* {arch}.embedding_scale, residual_scale, logit_scale, attention.scale are read (Granite) */
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
    const float *scale;           /* [1]: multiplies the product (matrix_scales), or NULL */
} tr_weight;

typedef struct tr_layer {
    const float *attn_norm;       /* [n_embd] */
    const float *attn_norm_b;     /* [n_embd], LayerNorm's bias, or NULL */
    tr_weight wq, wk, wv, wo;     /* wq: n_head*head_k x n_embd, wo: n_embd x n_head*head_v */
    const float *bq, *bk, *bv;    /* biases, NULL when absent (views into attn_qkv.bias when fused) */
    const float *bo;              /* attn_output.bias [n_embd] or NULL */
    const float *q_norm, *k_norm; /* [head_k] when qk_norm; [n_head*head_k], [n_head_kv*head_k] when qk_norm_full */
    const float *post_attn_norm;  /* [n_embd] when post_norms */
    const float *attn_sub_norm;   /* [n_head*head_v] when sub_norms */
    const float *ffn_norm;        /* [n_embd] */
    const float *ffn_norm_b;      /* [n_embd] or NULL */
    tr_weight w_gate, w_up, w_down; /* gate/up: n_ff x n_embd, down: n_embd x n_ff; no gate with TR_FFN_SEQ */
    const float *b_gate, *b_up, *b_down; /* [n_ff], [n_ff], [n_embd] or NULL */
    const float *ffn_sub_norm;    /* [n_ff] when sub_norms */
    const float *post_ffn_norm;   /* [n_embd] when post_norms */
    /* Mixture of experts (n_expert > 0), instead of w_gate/w_up/w_down: the
     * router, and the experts' matrices one after another (ggml's 3-D
     * tensors): expert e's gate is rows [e*n_ff_exp, (e+1)*n_ff_exp) of
     * gate_exps, its down rows [e*n_embd, (e+1)*n_embd) of down_exps. */
    tr_weight gate_inp;           /* n_expert x n_embd */
    tr_weight gate_exps, up_exps; /* n_expert*n_ff_exp x n_embd */
    tr_weight down_exps;          /* n_expert*n_embd x n_ff_exp */
    /* State-space (Mamba) layers, ssm != TR_SSM_NONE; conv_dim is the
     * channels the convolution sees (Mamba: d_inner; Mamba-2: x, B and C). */
    tr_weight ssm_in;             /* Mamba: 2*d_inner x n_embd (x, z); Mamba-2: (2*d_inner + 2*n_group*d_state
                                     + n_head) x n_embd (z, x, B, C, dt) */
    const float *ssm_conv1d;      /* [conv_dim][d_conv], F32 */
    const float *ssm_conv1d_b;    /* [conv_dim] */
    tr_weight ssm_x;              /* Mamba: (dt_rank + 2*d_state) x d_inner (dt, B, C) */
    tr_weight ssm_dt;             /* Mamba: d_inner x dt_rank */
    const float *ssm_dt_b;        /* Mamba: [d_inner]; Mamba-2: [n_head] */
    const float *ssm_a;           /* Mamba: [d_inner][d_state] (-exp(A_log)); Mamba-2: [n_head] */
    const float *ssm_d;           /* skip: Mamba [d_inner]; Mamba-2 [n_head] */
    const float *ssm_norm;        /* Mamba-2: [d_inner], group g's weights at g * d_inner/n_group */
    tr_weight ssm_out;            /* n_embd x d_inner */
    bool recurrent;               /* a state-space layer (ssm_*), else attention */
    int32_t kv_layer;             /* attention layers: this layer's index in the KV pool (-1: none) */
    int32_t rs_layer;             /* state-space layers: this layer's index in a sequence's state (-1: none) */
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
    int32_t swa_pattern;          /* every swa_pattern-th layer global (with n_swa) */
    float rope_base_swa, rope_scale_swa; /* the local layers' RoPE */
    float rope_mscale;            /* multiplies RoPE's cos and sin (rope.scaling.attn_factor; 1: none) */
    int32_t n_ctx_orig;           /* rope.scaling.original_context_length: LongRoPE's long factors beyond it */
    float attn_softcap;           /* 0: off */
    int32_t n_expert, n_expert_used, n_ff_exp; /* mixture of experts (n_expert 0: none) */
    float attn_scale;             /* multiplies q.k */
    float final_softcap;          /* 0: off */
    /* State-space layers ({arch}.ssm.*): d_conv taps of a causal convolution
     * over conv_dim channels, d_state entries of state per channel; Mamba:
     * dt from a rank-dt_rank projection; Mamba-2: n_head heads of head_dim
     * channels (ssm.time_step_rank is the head count), n_group groups of B, C. */
    int32_t ssm_d_conv, ssm_d_inner, ssm_d_state, ssm_dt_rank, ssm_n_group;
    int32_t ssm_n_head, ssm_head_dim, ssm_conv_dim;
    int32_t n_layer_kv, n_layer_rs; /* attention layers (K/V in the pool), state-space layers (a state each) */
    bool no_rope;                 /* the file turns RoPE off (granitehybrid: rope.scaling.finetuned = false) */
    float embd_mult;              /* embeddings times this (Granite's embedding_scale; 0: none) */
    float residual_scale;         /* each branch's output times this before its residual add (0: none) */
    float logit_scale;            /* logits divided by this (0: none) */
} tr_hparams;

/* A tensor repacked at load (repack.c): src's rows rewritten at dst. */
typedef struct tr_repacked {
    const void *src;
    size_t src_bytes, src_row, dst_row;
    uint8_t *dst;
    int from, to; /* the file's type, the layout's */
} tr_repacked;

struct tr_model {
    tr_gguf *gguf;
    tr_vocab *vocab;
    const tr_arch *arch;
    tr_hparams hp;
    tr_weight tok_embd;           /* n_vocab x n_embd */
    tr_weight pos_embd;           /* n_ctx_train x n_embd learned positions (pos_embd arches) */
    const float *output_norm;     /* [n_embd] */
    const float *output_norm_b;   /* [n_embd] or NULL (LayerNorm) */
    tr_weight output;             /* n_vocab x n_embd; token_embd when tied */
    const float *rope_freqs;      /* [n_rot/2] frequency factors (Llama 3.1), or NULL */
    const float *rope_long, *rope_short; /* [n_rot/2] LongRoPE factors beyond / within n_ctx_orig, or NULL */
    tr_layer *layers;             /* [n_layer] */
    char arch_name[64];
    char name[256];
    uint64_t n_params, weight_bytes;
    tr_repacked *repacked;        /* [n_repacked], owned: converted tensors, and (from == to) copies */
    int64_t n_repacked;
    uint64_t repacked_bytes;      /* bytes of the converted tensors */
    uint64_t copied_bytes;        /* bytes of the tensors copied as they are */
    uint8_t *own;                 /* the model's own memory (repack.c own_alloc), own_len bytes, or NULL */
    size_t own_len;
};

/* Repack what has a faster layout (TQ1_0 matrices into TQ2_0's; Q4_K, Q4_0,
 * Q5_0, Q8_0 into their _X16 layouts where the kernels want them),
 * pointing the weights at the copies; and free the copies. */
tr_status tr_model_repack(tr_model *m, tr_error *err);
/* What tr_model_repack would repack on this CPU, by kind (tr_repack_kind of
 * the target: 0 TQ1_0 -> TQ2_0, 1 Q4_K -> Q4_K_X16, 2 Q4_0 -> Q4_0_X16,
 * 3 Q5_0 -> Q5_0_X16, 4 Q8_0 -> Q8_0_X16): tensors, their mapped bytes and
 * the copies' bytes, and the bytes of the matrices copied as they are;
 * returns the number of tensors converted, -1 when out of memory. */
enum { TR_REPACK_KINDS = 5 };
int tr_repack_kind(int to);
int64_t tr_model_repack_plan(const tr_model *m, int64_t n_from[TR_REPACK_KINDS], uint64_t bytes_from[TR_REPACK_KINDS],
                             uint64_t bytes_to[TR_REPACK_KINDS], uint64_t *bytes_copied);
void tr_model_repack_free(tr_model *m);

#endif
