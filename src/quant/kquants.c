/* The k-quants: super-blocks of 256 elements split into sub-blocks whose
 * scales (and mins) are themselves quantized against one fp16 super-scale.
 * Q2_K..Q6_K are weight formats; Q8_K is the activation format their dot
 * products pair with.
 *
 * Dequantizers reproduce ggml's arithmetic order exactly (scale * sub-scale
 * first, then times q, then minus the min), so results are bit-identical to
 * ggml and the gguf package. Quantizers use ggml's approach (a weighted
 * least-squares search for each sub-block's scale and min, then 6/4-bit
 * quantization of those against the block's largest) but are our own code
 * and are held to error bounds, not to ggml's exact bytes. */
#include "blocks.h"
#include "qround.h"
#include "quant.h"

#include <stdbool.h>

/* ----------------------------------------------------- packed scale access */

/* Q4_K / Q5_K: eight 6-bit scales and mins in 12 bytes. The first four of
 * each sit in the low six bits of bytes 0-3 (scales) and 4-7 (mins); the
 * last four have their low nibbles in bytes 8-11 and their top two bits in
 * the spare top bits of bytes 0-7. */
static void get_scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q3_K: sixteen 6-bit scales (stored +32) in 12 bytes: low nibbles of
 * scales 0-7 and 8-15 share bytes 0-7; the top two bits of scale j are in
 * byte 8 + j%4 at bit 2*(j/4). */
static int get_scale_q3_K(int j, const uint8_t *s) {
    const int lo = j < 8 ? (s[j] & 0x0f) : (s[j - 8] >> 4);
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

/* ------------------------------------------------------------------ Q2_K */

void tr_dequantize_row_q2_K(const void *src, float *dst, int64_t n) {
    const tr_block_q2_K *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        const float dmin = tr_fp16_to_fp32(x[i].dmin);
        /* element e: bits 2*((e/32)%4) of qs[(e/128)*32 + e%32]; sub-block e/16 */
        for (int e = 0; e < TR_QK_K; e++) {
            const uint8_t sc = x[i].scales[e / 16];
            const float dl = d * (float)(sc & 0x0f);
            const float ml = dmin * (float)(sc >> 4);
            const int q = (x[i].qs[(e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
            dst[e] = dl * (float)q - ml;
        }
    }
}

/* ------------------------------------------------------------------ Q3_K */

void tr_dequantize_row_q3_K(const void *src, float *dst, int64_t n) {
    const tr_block_q3_K *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int e = 0; e < TR_QK_K; e++) {
            const float dl = d * (float)get_scale_q3_K(e / 16, x[i].scales);
            const int lo = (x[i].qs[(e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
            /* the high bit set means no offset: q = lo, else q = lo - 4 */
            const int hbit = (x[i].hmask[e % 32] >> (e / 32)) & 1;
            dst[e] = dl * (float)(lo - (hbit ? 0 : 4));
        }
    }
}

/* ------------------------------------------------------------------ Q4_K */

void tr_dequantize_row_q4_K(const void *src, float *dst, int64_t n) {
    const tr_block_q4_K *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        const float dmin = tr_fp16_to_fp32(x[i].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            get_scale_min_k4(j, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            /* sub-block j: the low (even j) or high (odd j) nibbles of qs[32*(j/2) ..] */
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) dst[32 * j + l] = d1 * (float)((q[l] >> shift) & 0x0f) - m1;
        }
    }
}

/* ------------------------------------------------------------------ Q5_K */

void tr_dequantize_row_q5_K(const void *src, float *dst, int64_t n) {
    const tr_block_q5_K *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        const float dmin = tr_fp16_to_fp32(x[i].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            get_scale_min_k4(j, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *q = x[i].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; l++) {
                const int q5 = ((q[l] >> shift) & 0x0f) | (((x[i].qh[l] >> j) & 1) << 4);
                dst[32 * j + l] = d1 * (float)q5 - m1;
            }
        }
    }
}

/* ------------------------------------------------------------------ Q6_K */

void tr_dequantize_row_q6_K(const void *src, float *dst, int64_t n) {
    const tr_block_q6_K *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int e = 0; e < TR_QK_K; e++) {
            /* each half of 128: low nibbles of ql[0..63] then high nibbles;
             * two high bits from qh[(e/128)*32 + e%32] at bit 2*((e/32)%4) */
            const int h = e / 128, r = e % 128;
            const int lo = (x[i].ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0f;
            const int hi = (x[i].qh[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
            const float dl = d * (float)x[i].scales[e / 16];
            dst[e] = dl * (float)((lo | (hi << 4)) - 32);
        }
    }
}

/* ------------------------------------------------------------------ Q8_K */

void tr_dequantize_row_q8_K(const void *src, float *dst, int64_t n) {
    const tr_block_q8_K *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        for (int j = 0; j < TR_QK_K; j++) dst[j] = x[i].d * (float)x[i].qs[j];
    }
}
