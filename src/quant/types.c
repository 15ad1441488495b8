/* The row of every ggml type: names and block geometry match ggml exactly
 * (checked against the gguf package's GGML_QUANT_SIZES in the tests). The
 * geometry of every format Trinity reads is its block struct's (blocks.h),
 * stated once there; the kernel table (src/ops/kernels.c) takes it from
 * here. Formats Trinity does not read (most IQ types) carry ggml's sizes. */
#include "blocks.h"
#include "quant.h"

#include <string.h>

static void f32_to_float(const void *src, float *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }
static void f32_from_float(const float *src, void *dst, int64_t n) { memcpy(dst, src, (size_t)n * sizeof(float)); }

/* A row: name, elements and bytes per block, quantized?, to / from float,
 * then the _X16 fields by name (designated, so every other field is zero). */
#define ROW(name_, blck_, bytes_, quant_, to_, from_, ...)                                                    \
    {                                                                                                         \
        .name = name_, .blck_size = blck_, .type_size = bytes_, .is_quantized = quant_, .to_float = to_,      \
        .from_float = from_, __VA_ARGS__                                                                      \
    }

static const tr_type_traits type_traits[TR_TYPE_TABLE_SIZE] = {
    [TR_TYPE_F32] = ROW("F32", 1, sizeof(float), false, f32_to_float, f32_from_float),
    [TR_TYPE_F16] = ROW("F16", 1, sizeof(tr_fp16), false, tr_dequantize_row_f16, tr_quantize_row_f16),
    [TR_TYPE_Q4_0] = ROW("Q4_0", TR_QK4_0, sizeof(tr_block_q4_0), true, tr_dequantize_row_q4_0, tr_quantize_row_q4_0,
                      .x16 = TR_TYPE_Q4_0_X16),
    [TR_TYPE_Q4_1] = ROW("Q4_1", TR_QK4_1, sizeof(tr_block_q4_1), true, tr_dequantize_row_q4_1, tr_quantize_row_q4_1),
    [TR_TYPE_Q5_0] = ROW("Q5_0", TR_QK5_0, sizeof(tr_block_q5_0), true, tr_dequantize_row_q5_0, tr_quantize_row_q5_0,
                      .x16 = TR_TYPE_Q5_0_X16),
    [TR_TYPE_Q5_1] = ROW("Q5_1", TR_QK5_1, sizeof(tr_block_q5_1), true, tr_dequantize_row_q5_1, tr_quantize_row_q5_1),
    [TR_TYPE_Q8_0] = ROW("Q8_0", TR_QK8_0, sizeof(tr_block_q8_0), true, tr_dequantize_row_q8_0, tr_quantize_row_q8_0,
                      .x16 = TR_TYPE_Q8_0_X16),
    [TR_TYPE_Q8_1] = ROW("Q8_1", TR_QK8_1, sizeof(tr_block_q8_1), true, tr_dequantize_row_q8_1, tr_quantize_row_q8_1),
    [TR_TYPE_Q2_K] = ROW("Q2_K", TR_QK_K, sizeof(tr_block_q2_K), true, tr_dequantize_row_q2_K, tr_quantize_row_q2_K),
    [TR_TYPE_Q3_K] = ROW("Q3_K", TR_QK_K, sizeof(tr_block_q3_K), true, tr_dequantize_row_q3_K, tr_quantize_row_q3_K),
    [TR_TYPE_Q4_K] = ROW("Q4_K", TR_QK_K, sizeof(tr_block_q4_K), true, tr_dequantize_row_q4_K, tr_quantize_row_q4_K,
                      .x16 = TR_TYPE_Q4_K_X16),
    [TR_TYPE_Q5_K] = ROW("Q5_K", TR_QK_K, sizeof(tr_block_q5_K), true, tr_dequantize_row_q5_K, tr_quantize_row_q5_K),
    [TR_TYPE_Q6_K] = ROW("Q6_K", TR_QK_K, sizeof(tr_block_q6_K), true, tr_dequantize_row_q6_K, tr_quantize_row_q6_K),
    [TR_TYPE_Q8_K] = ROW("Q8_K", TR_QK_K, sizeof(tr_block_q8_K), true, tr_dequantize_row_q8_K, tr_quantize_row_q8_K),
    [TR_TYPE_IQ2_XXS] = ROW("IQ2_XXS", 256, 66, true, NULL, NULL),
    [TR_TYPE_IQ2_XS] = ROW("IQ2_XS", 256, 74, true, NULL, NULL),
    [TR_TYPE_IQ3_XXS] = ROW("IQ3_XXS", 256, 98, true, NULL, NULL),
    [TR_TYPE_IQ1_S] = ROW("IQ1_S", 256, 50, true, NULL, NULL),
    [TR_TYPE_IQ4_NL] = ROW("IQ4_NL", TR_QK4_NL, sizeof(tr_block_iq4_nl), true, tr_dequantize_row_iq4_nl, tr_quantize_row_iq4_nl),
    [TR_TYPE_IQ3_S] = ROW("IQ3_S", 256, 110, true, NULL, NULL),
    [TR_TYPE_IQ2_S] = ROW("IQ2_S", 256, 82, true, NULL, NULL),
    [TR_TYPE_IQ4_XS] = ROW("IQ4_XS", TR_QK_K, sizeof(tr_block_iq4_xs), true, tr_dequantize_row_iq4_xs, NULL),
    [TR_TYPE_I8] = ROW("I8", 1, 1, false, NULL, NULL),
    [TR_TYPE_I16] = ROW("I16", 1, 2, false, NULL, NULL),
    [TR_TYPE_I32] = ROW("I32", 1, 4, false, NULL, NULL),
    [TR_TYPE_I64] = ROW("I64", 1, 8, false, NULL, NULL),
    [TR_TYPE_F64] = ROW("F64", 1, 8, false, NULL, NULL),
    [TR_TYPE_IQ1_M] = ROW("IQ1_M", 256, 56, true, NULL, NULL),
    [TR_TYPE_BF16] = ROW("BF16", 1, sizeof(tr_bf16), false, tr_dequantize_row_bf16, tr_quantize_row_bf16),
    [TR_TYPE_TQ1_0] = ROW("TQ1_0", TR_QK_K, sizeof(tr_block_tq1_0), true, tr_dequantize_row_tq1_0, tr_quantize_row_tq1_0),
    [TR_TYPE_TQ2_0] = ROW("TQ2_0", TR_QK_K, sizeof(tr_block_tq2_0), true, tr_dequantize_row_tq2_0, tr_quantize_row_tq2_0),
    [TR_TYPE_MXFP4] = ROW("MXFP4", TR_QK_MXFP4, sizeof(tr_block_mxfp4), true, tr_dequantize_row_mxfp4, tr_quantize_row_mxfp4),
    /* Trinity's own: a KV-cache entry, and weights repacked at load (a
     * _X16 row is not contiguous: the bytes per block are a sixteenth of
     * its group's, no row converter; its kernels read it, and
     * tr_x16_dequantize_row a row of a group) */
    [TR_TYPE_TQ2_32] = ROW("TQ2_32", TR_QK_TQ2_32, sizeof(tr_block_tq2_32), true, tr_dequantize_row_tq2_32,
                        tr_quantize_row_tq2_32),
    [TR_TYPE_Q4_K_X16] = ROW("Q4_K_X16", TR_QK_K, sizeof(tr_block_q4_K_x16) / 16, true, NULL, NULL,
                          .x16_source = TR_TYPE_Q4_K, .x16_pack = tr_q4_k_to_x16, .x16_get = tr_q4_k_x16_get),
    [TR_TYPE_Q4_0_X16] = ROW("Q4_0_X16", TR_QK4_0, sizeof(tr_block_q4_0_x16) / 16, true, NULL, NULL,
                          .x16_source = TR_TYPE_Q4_0, .x16_pack = tr_q4_0_to_x16, .x16_get = tr_q4_0_x16_get),
    [TR_TYPE_Q5_0_X16] = ROW("Q5_0_X16", TR_QK5_0, sizeof(tr_block_q5_0_x16) / 16, true, NULL, NULL,
                          .x16_source = TR_TYPE_Q5_0, .x16_pack = tr_q5_0_to_x16, .x16_get = tr_q5_0_x16_get),
    [TR_TYPE_Q8_0_X16] = ROW("Q8_0_X16", TR_QK8_0, sizeof(tr_block_q8_0_x16) / 16, true, NULL, NULL,
                          .x16_source = TR_TYPE_Q8_0, .x16_pack = tr_q8_0_to_x16, .x16_get = tr_q8_0_x16_get),
};

const tr_type_traits *tr_type_traits_get(int type) {
    if (type < 0 || type >= TR_TYPE_TABLE_SIZE || !type_traits[type].name) return NULL;
    return &type_traits[type];
}

const char *tr_type_name(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t ? t->name : NULL;
}

int64_t tr_type_block_size(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t ? t->blck_size : 0;
}

size_t tr_type_block_bytes(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t ? t->type_size : 0;
}

size_t tr_row_size(int type, int64_t ne0) {
    const tr_type_traits *t = tr_type_traits_get(type);
    if (!t || ne0 < 0 || ne0 % t->blck_size) return 0;
    return (size_t)(ne0 / t->blck_size) * t->type_size;
}

int tr_x16_source(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t && t->x16_source ? t->x16_source : -1;
}

int tr_x16_layout(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t && t->x16 ? t->x16 : -1;
}

void tr_x16_pack(int type, const void *src, size_t src_row, void *dst, int64_t n) {
    const tr_type_traits *t = tr_type_traits_get(type);
    if (t && t->x16_pack) t->x16_pack(src, src_row, dst, n);
}

void tr_x16_get(int type, const void *blk, int i, void *dst) {
    const tr_type_traits *t = tr_type_traits_get(type);
    if (t && t->x16_get) t->x16_get(blk, i, dst);
}

void tr_x16_dequantize_row(int type, const void *group, int i, float *dst, int64_t n) {
    const tr_type_traits *t = tr_type_traits_get(type), *s = t ? tr_type_traits_get(t->x16_source) : NULL;
    if (!t || !t->x16_get || !s || !s->to_float || i < 0 || i > 15) return;
    _Static_assert(sizeof(tr_block_q4_K) <= 256 && sizeof(tr_block_q4_0) <= 256 && sizeof(tr_block_q5_0) <= 256 &&
                       sizeof(tr_block_q8_0) <= 256,
                   "every _X16 source's block fits blk");
    uint8_t blk[256] __attribute__((aligned(16)));
    const size_t gb = 16 * t->type_size; /* a block of the group: sixteen rows' */
    for (int64_t b = 0; b < n / t->blck_size; b++) {
        t->x16_get((const uint8_t *)group + (size_t)b * gb, i, blk);
        s->to_float(blk, dst + b * t->blck_size, t->blck_size);
    }
}

bool tr_type_can_dequantize(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t && t->to_float;
}

bool tr_type_can_quantize(int type) {
    const tr_type_traits *t = tr_type_traits_get(type);
    return t && t->from_float;
}

tr_status tr_dequantize(int type, const void *src, float *dst, int64_t n) {
    const tr_type_traits *t = tr_type_traits_get(type);
    if (!t) return TR_ERR_ARG;
    if (n < 0 || n % t->blck_size) return TR_ERR_ARG;
    if (!t->to_float) return TR_ERR_UNSUPPORTED;
    t->to_float(src, dst, n);
    return TR_OK;
}

tr_status tr_quantize(int type, const float *src, void *dst, int64_t n) {
    const tr_type_traits *t = tr_type_traits_get(type);
    if (!t) return TR_ERR_ARG;
    if (n < 0 || n % t->blck_size) return TR_ERR_ARG;
    if (!t->from_float) return TR_ERR_UNSUPPORTED;
    t->from_float(src, dst, n);
    return TR_OK;
}
