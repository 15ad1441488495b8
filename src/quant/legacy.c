/* The legacy block formats of 32 elements: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
 *
 * The quantizers follow ggml's reference ("_ref") quantizers step by step, so
 * they produce the same bytes as ggml and as the gguf package's numpy port:
 * the symmetric formats scale by the element of largest magnitude (keeping
 * its sign, so that element lands exactly on the extreme level -8 / -16), the
 * offset formats spread [min, max] over the levels. */
#include "blocks.h"
#include "qround.h"
#include "quant.h"

/* The first element of largest magnitude, with its sign. */
static float signed_absmax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *min, float *max) {
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *min = lo;
    *max = hi;
}

/* ------------------------------------------------------------------ Q4_0 */

void tr_dequantize_row_q4_0(const void *src, float *dst, int64_t n) {
    const tr_block_q4_0 *x = src;
    for (int64_t i = 0; i < n / TR_QK4_0; i++, dst += TR_QK4_0) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int j = 0; j < TR_QK4_0 / 2; j++) {
            dst[j] = d * (float)((x[i].qs[j] & 0x0f) - 8);
            dst[j + TR_QK4_0 / 2] = d * (float)((x[i].qs[j] >> 4) - 8);
        }
    }
}

void tr_quantize_row_q4_0(const float *src, void *dst, int64_t n) {
    tr_block_q4_0 *y = dst;
    for (int64_t i = 0; i < n / TR_QK4_0; i++, src += TR_QK4_0) {
        const float d = signed_absmax(src, TR_QK4_0) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = tr_fp32_to_fp16(d);
        for (int j = 0; j < TR_QK4_0 / 2; j++) {
            const int q0 = tr_q_trunc(src[j] * id + 8.5f, 0, 15);
            const int q1 = tr_q_trunc(src[j + TR_QK4_0 / 2] * id + 8.5f, 0, 15);
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ------------------------------------------------------------------ Q4_1 */

void tr_dequantize_row_q4_1(const void *src, float *dst, int64_t n) {
    const tr_block_q4_1 *x = src;
    for (int64_t i = 0; i < n / TR_QK4_1; i++, dst += TR_QK4_1) {
        const float d = tr_fp16_to_fp32(x[i].d);
        const float m = tr_fp16_to_fp32(x[i].m);
        for (int j = 0; j < TR_QK4_1 / 2; j++) {
            dst[j] = d * (float)(x[i].qs[j] & 0x0f) + m;
            dst[j + TR_QK4_1 / 2] = d * (float)(x[i].qs[j] >> 4) + m;
        }
    }
}

void tr_quantize_row_q4_1(const float *src, void *dst, int64_t n) {
    tr_block_q4_1 *y = dst;
    for (int64_t i = 0; i < n / TR_QK4_1; i++, src += TR_QK4_1) {
        float min, max;
        min_max(src, TR_QK4_1, &min, &max);
        const float d = (max - min) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = tr_fp32_to_fp16(d);
        y[i].m = tr_fp32_to_fp16(min);
        for (int j = 0; j < TR_QK4_1 / 2; j++) {
            const int q0 = tr_q_trunc((src[j] - min) * id + 0.5f, 0, 15);
            const int q1 = tr_q_trunc((src[j + TR_QK4_1 / 2] - min) * id + 0.5f, 0, 15);
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

/* ------------------------------------------------------------------ Q5_0 */

static uint32_t load_qh(const uint8_t qh[4]) {
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void store_qh(uint8_t qh[4], uint32_t v) {
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(v >> (8 * k));
}

void tr_dequantize_row_q5_0(const void *src, float *dst, int64_t n) {
    const tr_block_q5_0 *x = src;
    for (int64_t i = 0; i < n / TR_QK5_0; i++, dst += TR_QK5_0) {
        const float d = tr_fp16_to_fp32(x[i].d);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < TR_QK5_0 / 2; j++) {
            const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            dst[j] = d * (float)(((x[i].qs[j] & 0x0f) | (h0 << 4)) - 16);
            dst[j + TR_QK5_0 / 2] = d * (float)(((x[i].qs[j] >> 4) | (h1 << 4)) - 16);
        }
    }
}

void tr_quantize_row_q5_0(const float *src, void *dst, int64_t n) {
    tr_block_q5_0 *y = dst;
    for (int64_t i = 0; i < n / TR_QK5_0; i++, src += TR_QK5_0) {
        const float d = signed_absmax(src, TR_QK5_0) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = tr_fp32_to_fp16(d);
        uint32_t qh = 0;
        for (int j = 0; j < TR_QK5_0 / 2; j++) {
            const int q0 = tr_q_trunc(src[j] * id + 16.5f, 0, 31);
            const int q1 = tr_q_trunc(src[j + TR_QK5_0 / 2] * id + 16.5f, 0, 31);
            y[i].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_qh(y[i].qh, qh);
    }
}

/* ------------------------------------------------------------------ Q5_1 */

void tr_dequantize_row_q5_1(const void *src, float *dst, int64_t n) {
    const tr_block_q5_1 *x = src;
    for (int64_t i = 0; i < n / TR_QK5_1; i++, dst += TR_QK5_1) {
        const float d = tr_fp16_to_fp32(x[i].d);
        const float m = tr_fp16_to_fp32(x[i].m);
        const uint32_t qh = load_qh(x[i].qh);
        for (int j = 0; j < TR_QK5_1 / 2; j++) {
            const int h0 = (qh >> j) & 1, h1 = (qh >> (j + 16)) & 1;
            dst[j] = d * (float)((x[i].qs[j] & 0x0f) | (h0 << 4)) + m;
            dst[j + TR_QK5_1 / 2] = d * (float)((x[i].qs[j] >> 4) | (h1 << 4)) + m;
        }
    }
}

void tr_quantize_row_q5_1(const float *src, void *dst, int64_t n) {
    tr_block_q5_1 *y = dst;
    for (int64_t i = 0; i < n / TR_QK5_1; i++, src += TR_QK5_1) {
        float min, max;
        min_max(src, TR_QK5_1, &min, &max);
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = tr_fp32_to_fp16(d);
        y[i].m = tr_fp32_to_fp16(min);
        uint32_t qh = 0;
        for (int j = 0; j < TR_QK5_1 / 2; j++) {
            const int q0 = tr_q_trunc((src[j] - min) * id + 0.5f, 0, 31);
            const int q1 = tr_q_trunc((src[j + TR_QK5_1 / 2] - min) * id + 0.5f, 0, 31);
            y[i].qs[j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
            qh |= (uint32_t)(q0 >> 4) << j;
            qh |= (uint32_t)(q1 >> 4) << (j + 16);
        }
        store_qh(y[i].qh, qh);
    }
}

/* ------------------------------------------------------------ Q8_0, Q8_1 */

static float absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

void tr_dequantize_row_q8_0(const void *src, float *dst, int64_t n) {
    const tr_block_q8_0 *x = src;
    for (int64_t i = 0; i < n / TR_QK8_0; i++, dst += TR_QK8_0) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int j = 0; j < TR_QK8_0; j++) dst[j] = d * (float)x[i].qs[j];
    }
}

void tr_quantize_row_q8_0(const float *src, void *dst, int64_t n) {
    tr_block_q8_0 *y = dst;
    for (int64_t i = 0; i < n / TR_QK8_0; i++, src += TR_QK8_0) {
        const float d = absmax(src, TR_QK8_0) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = tr_fp32_to_fp16(d);
        for (int j = 0; j < TR_QK8_0; j++) y[i].qs[j] = (int8_t)tr_q_round(src[j] * id, -127, 127);
    }
}

void tr_dequantize_row_q8_1(const void *src, float *dst, int64_t n) {
    const tr_block_q8_1 *x = src;
    for (int64_t i = 0; i < n / TR_QK8_1; i++, dst += TR_QK8_1) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int j = 0; j < TR_QK8_1; j++) dst[j] = d * (float)x[i].qs[j];
    }
}

/* As Q8_0, plus s = d * sum(q) computed from the rounded q's (what a dot
 * product against an offset format actually needs). */
void tr_quantize_row_q8_1(const float *src, void *dst, int64_t n) {
    tr_block_q8_1 *y = dst;
    for (int64_t i = 0; i < n / TR_QK8_1; i++, src += TR_QK8_1) {
        const float d = absmax(src, TR_QK8_1) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < TR_QK8_1; j++) {
            y[i].qs[j] = (int8_t)tr_q_round(src[j] * id, -127, 127);
            sum += y[i].qs[j];
        }
        y[i].d = tr_fp32_to_fp16(d);
        y[i].s = tr_fp32_to_fp16((float)sum * d);
    }
}
