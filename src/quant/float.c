/* The unquantized formats: F16 (IEEE binary16) and BF16 (bfloat16). */
#include "blocks.h"
#include "quant.h"

void tr_dequantize_row_f16(const void *src, float *dst, int64_t n) {
    const tr_fp16 *x = src;
    for (int64_t i = 0; i < n; i++) dst[i] = tr_fp16_to_fp32(x[i]);
}

void tr_quantize_row_f16(const float *src, void *dst, int64_t n) {
    tr_fp16 *y = dst;
    for (int64_t i = 0; i < n; i++) y[i] = tr_fp32_to_fp16(src[i]);
}

void tr_dequantize_row_bf16(const void *src, float *dst, int64_t n) {
    const tr_bf16 *x = src;
    for (int64_t i = 0; i < n; i++) dst[i] = tr_bf16_to_fp32(x[i]);
}

void tr_quantize_row_bf16(const float *src, void *dst, int64_t n) {
    tr_bf16 *y = dst;
    for (int64_t i = 0; i < n; i++) y[i] = tr_fp32_to_bf16(src[i]);
}
