/* The supported architectures, one row each. What differs between them is
 * here and only here (see tr_arch in model.h). Facts checked against
 * llama.cpp's model builders and hyperparameter loader. */
#include "model/model.h"

#include <string.h>

static const tr_arch arches[] = {
    /* Llama 1/2/3, TinyLlama, SmolLM2, Mistral: original RoPE pairing, SwiGLU. */
    {.name = "llama", .rope_neox = false, .act = TR_ACT_SILU},
    /* Qwen2: NeoX RoPE, biases on q, k and v. */
    {.name = "qwen2", .rope_neox = true, .act = TR_ACT_SILU, .qkv_bias = true},
    /* Qwen3: NeoX RoPE, RMSNorm of q and k per head. */
    {.name = "qwen3", .rope_neox = true, .act = TR_ACT_SILU, .qk_norm = true},
    /* Gemma 3: NeoX RoPE, GeGLU, QK-norm, norms after attention and FFN too,
     * scaled embeddings; with a sliding window, 5 local layers (RoPE base
     * 10000) then 1 global (the file's base). Final logit soft-capping is
     * applied when the file sets it (Gemma 3 releases do not). */
    {.name = "gemma3", .rope_neox = true, .act = TR_ACT_GELU, .qk_norm = true, .post_norms = true,
     .embd_scale = true, .swa_pattern = 6, .rope_base_swa = 10000.0f, .final_softcap = true, .scale_q = true},
};

const tr_arch *tr_arch_find(const char *name, size_t len) {
    for (size_t i = 0; i < sizeof arches / sizeof arches[0]; i++)
        if (strlen(arches[i].name) == len && !memcmp(arches[i].name, name, len)) return &arches[i];
    return NULL;
}

const char *tr_arch_supported_list(void) { return "llama, qwen2, qwen3, gemma3"; }
