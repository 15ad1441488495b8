/* The supported architectures, one row each. What differs between them is
 * here and only here (see tr_arch in model.h). Facts checked against
 * llama.cpp's model builders (src/models/<arch>.cpp) and hyperparameter
 * loader (src/llama-model.cpp). */
#include "model/model.h"

#include <string.h>

static const tr_arch arches[] = {
    /* Llama 1/2/3, TinyLlama, SmolLM2, Mistral: original RoPE pairing, SwiGLU.
     * llama.cpp does not read llama.attention.sliding_window (Mistral 7B
     * v0.1 files carry one): attention stays global, here too. */
    /* Mixtral: llama with llama.expert_count experts per layer of n_ff
     * each, top expert_used_count by the router's softmax, their weights
     * renormalised. */
    {.name = "llama", .rope = TR_ROPE_NORM, .act = TR_ACT_SILU, .moe = TR_MOE_OPTIONAL, .moe_norm_w = true},
    /* Qwen2: NeoX RoPE, biases on q, k and v. */
    {.name = "qwen2", .rope = TR_ROPE_NEOX, .act = TR_ACT_SILU, .qkv_bias = true},
    /* Qwen3: NeoX RoPE, RMSNorm of q and k per head. */
    {.name = "qwen3", .rope = TR_ROPE_NEOX, .act = TR_ACT_SILU, .qk_norm = true},
    /* Qwen3-MoE: Qwen3's attention, a mixture of SwiGLU experts in every
     * layer: softmax over the router's logits, the top expert_used_count,
     * their weights renormalised to sum 1. */
    {.name = "qwen3moe", .rope = TR_ROPE_NEOX, .act = TR_ACT_SILU, .qk_norm = true, .moe = TR_MOE_REQUIRED,
     .moe_norm_w = true, .moe_ff_exp = true},
    /* OLMoE: NeoX RoPE, RMSNorm of all q heads together and of all k heads
     * together (weights of n_head*head_k and n_head_kv*head_k), a mixture of
     * SwiGLU experts of n_ff in every layer: softmax over the router's
     * logits, the top expert_used_count, their weights NOT renormalised. */
    {.name = "olmoe", .rope = TR_ROPE_NEOX, .act = TR_ACT_SILU, .qk_norm = true, .qk_norm_full = true,
     .moe = TR_MOE_REQUIRED},
    /* Gemma 2: NeoX RoPE, GeGLU, norms after attention and FFN too, scaled
     * embeddings, q scaled before q.k; local (window 4096 unless the file
     * says) and global layers alternate, one RoPE for both; the attention
     * scores and the logits soft-capped (50 and 30 unless the file says);
     * the output is always the embedding matrix. */
    {.name = "gemma2", .rope = TR_ROPE_NEOX, .act = TR_ACT_GELU, .post_norms = true, .embd_scale = true,
     .swa_pattern = 2, .n_swa_default = 4096, .final_softcap = true, .final_softcap_default = 30.0f,
     .attn_softcap = true, .attn_softcap_default = 50.0f, .scale_q = true, .n_layer_wide_scale = 46,
     .tied_output = true},
    /* Gemma 3: as Gemma 2 with QK-norm instead of the attention soft-cap;
     * with a sliding window, 5 local layers (RoPE base 10000) then 1 global
     * (the file's base). Final logit soft-capping is applied when the file
     * sets it (Gemma 3 releases do not). */
    {.name = "gemma3", .rope = TR_ROPE_NEOX, .act = TR_ACT_GELU, .qk_norm = true, .post_norms = true,
     .embd_scale = true, .swa_pattern = 6, .rope_base_swa = 10000.0f, .final_softcap = true, .scale_q = true,
     .n_layer_wide_scale = 62},
    /* GPT-2: learned absolute positions (no RoPE), LayerNorm with bias, a
     * GELU MLP without gate, q, k and v fused in attn_qkv, biases everywhere. */
    {.name = "gpt2", .norm = TR_NORM_LAYER, .rope = TR_ROPE_NONE, .ffn = TR_FFN_SEQ, .act = TR_ACT_GELU,
     .pos_embd = true},
    /* Phi-3: NeoX RoPE over rope.dimension_count dimensions (partial for
     * Phi-4-mini), q, k, v fused (or separate), gate and up fused in ffn_up,
     * q scaled before q.k, LongRoPE factors where the file has them.
     * llama.cpp disables Phi-3's sliding window (it warns): so do we. */
    {.name = "phi3", .rope = TR_ROPE_NEOX, .act = TR_ACT_SILU, .scale_q = true, .longrope = true},
    /* BitNet b1.58: ternary matrices (TQ1_0 / TQ2_0 files, or F32/F16 of
     * {-1, 0, 1} x scale), NeoX RoPE, SwiGLU (llama.cpp's graph applies SiLU
     * here, not the squared ReLU of the 2B-4T release), an RMSNorm of the
     * attention's output before Wo and of the FFN's hidden layer before
     * Wdown, a matrix's optional F32 scale multiplying its product; the
     * output is always token_embd (llama.cpp loads no output.weight). */
    {.name = "bitnet", .rope = TR_ROPE_NEOX, .act = TR_ACT_SILU, .sub_norms = true, .matrix_scales = true,
     .tied_output = true},
    /* Mamba: no attention, no feed-forward; each layer x + ssm(rmsnorm(x)):
     * in-projection to x and z, causal depthwise convolution of x, SiLU, the
     * selective scan (dt, B, C from x), + D*x, times silu(z), out-projection.
     * The recurrent state is the sequence's (engine.h), not a KV cache. */
    {.name = "mamba", .rope = TR_ROPE_NONE, .act = TR_ACT_SILU, .ssm = TR_SSM_MAMBA1},
    /* Mamba-2: as Mamba with one decay per head, x, B, C and dt from the
     * in-projection (B, C convolved with x, shared per group), and an
     * RMSNorm per group after the gate. */
    {.name = "mamba2", .rope = TR_ROPE_NONE, .act = TR_ACT_SILU, .ssm = TR_SSM_MAMBA2},
    /* Granite 4.0-H (dense): Mamba-2 layers and attention layers (those
     * whose attention.head_count_kv entry is not 0), each followed by a
     * SwiGLU feed-forward; Granite's multipliers: embeddings times
     * embedding_scale, each branch times residual_scale before its residual
     * add, q.k times attention.scale, logits divided by logit_scale. RoPE
     * (adjacent pairs) unless rope.scaling.finetuned is false, as in the
     * Granite 4.0-H releases (no positions in their attention). */
    {.name = "granitehybrid", .rope = TR_ROPE_NORM, .act = TR_ACT_SILU, .ssm = TR_SSM_MAMBA2, .hybrid = true,
     .granite_scales = true},
};

const tr_arch *tr_arch_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++)
        if (strlen(arches[i].name) == len && !memcmp(arches[i].name, name, len)) return &arches[i];
    return NULL;
}

const char *tr_arch_supported_list(void) {
    return "llama, qwen2, qwen3, qwen3moe, olmoe, gemma2, gemma3, gpt2, phi3, bitnet, mamba, mamba2, granitehybrid";
}
