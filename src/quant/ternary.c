/* The ternary formats: every element is d * {-1, 0, 1}. TQ1_0 and TQ2_0 are
 * those of BitNet-style models (ggml's); TQ2_32 is Trinity's ternary KV-cache
 * entry (blocks of 32, below).
 * TQ1_0 packs five trits per byte (1.6875 bits per weight), TQ2_0 four
 * two-bit codes per byte (2.0625 bits, simpler to unpack). The quantizers
 * match ggml's reference (d = largest magnitude, q = round(x / d)) byte for
 * byte. */
#include "blocks.h"
#include "qround.h"
#include "quant.h"

static float absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

/* ----------------------------------------------------------------- TQ1_0 */

/* A byte holds five trits t0..t4 as the fraction (t0*81 + t1*27 + t2*9 +
 * t3*3 + t4) / 243 scaled to 256 (rounded up), so that multiplying by 3^k
 * modulo 256 brings trit k to the top and (byte * 3) >> 8 reads it. */
static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};

static int trit_at(uint8_t byte, int k) {
    const uint8_t q = (uint8_t)(byte * pow3[k]);
    return (int)(((uint16_t)q * 3) >> 8) - 1;
}

static uint8_t pack_trits(const int *t, int count, int stride) {
    unsigned v = 0;
    for (int k = 0; k < count; k++) v = v * 3 + (unsigned)t[k * stride];
    for (int k = count; k < 5; k++) v *= 3; /* qh bytes hold four trits, aligned to the top */
    return (uint8_t)((v * 256 + 242) / 243);
}

void tr_dequantize_row_tq1_0(const void *src, float *dst, int64_t n) {
    const tr_block_tq1_0 *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        /* qs[0..31]: elements k*32 + j; qs[32..47]: 160 + k*16 + j; qh[0..3]: 240 + k*4 + j */
        for (int k = 0; k < 5; k++)
            for (int j = 0; j < 32; j++) dst[k * 32 + j] = d * (float)trit_at(x[i].qs[j], k);
        for (int k = 0; k < 5; k++)
            for (int j = 0; j < 16; j++) dst[160 + k * 16 + j] = d * (float)trit_at(x[i].qs[32 + j], k);
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++) dst[240 + k * 4 + j] = d * (float)trit_at(x[i].qh[j], k);
    }
}

void tr_quantize_row_tq1_0(const float *src, void *dst, int64_t n) {
    tr_block_tq1_0 *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        const float d = absmax(src, TR_QK_K);
        const float id = d ? 1.0f / d : 0.0f;
        int t[TR_QK_K];
        for (int j = 0; j < TR_QK_K; j++) t[j] = tr_q_round(src[j] * id, -1, 1) + 1;
        for (int j = 0; j < 32; j++) y[i].qs[j] = pack_trits(t + j, 5, 32);
        for (int j = 0; j < 16; j++) y[i].qs[32 + j] = pack_trits(t + 160 + j, 5, 16);
        for (int j = 0; j < 4; j++) y[i].qh[j] = pack_trits(t + 240 + j, 4, 4);
        y[i].d = tr_fp32_to_fp16(d);
    }
}

/* ----------------------------------------------------------------- TQ2_0 */

void tr_dequantize_row_tq2_0(const void *src, float *dst, int64_t n) {
    const tr_block_tq2_0 *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++, dst += TR_QK_K) {
        const float d = tr_fp16_to_fp32(x[i].d);
        /* element e: bits 2*((e/32)%4) of qs[(e/128)*32 + e%32], stored as q + 1 */
        for (int e = 0; e < TR_QK_K; e++) {
            const int q = (x[i].qs[(e / 128) * 32 + e % 32] >> (2 * ((e / 32) % 4))) & 3;
            dst[e] = d * (float)(q - 1);
        }
    }
}

void tr_quantize_row_tq2_0(const float *src, void *dst, int64_t n) {
    tr_block_tq2_0 *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        const float d = absmax(src, TR_QK_K);
        const float id = d ? 1.0f / d : 0.0f;
        memset(y[i].qs, 0, sizeof y[i].qs);
        for (int e = 0; e < TR_QK_K; e++) {
            const int q = tr_q_round(src[e] * id, -1, 1) + 1;
            y[i].qs[(e / 128) * 32 + e % 32] |= (uint8_t)(q << (2 * ((e / 32) % 4)));
        }
        y[i].d = tr_fp32_to_fp16(d);
    }
}

/* ---------------------------------------------------------------- TQ2_32 */

void tr_dequantize_row_tq2_32(const void *src, float *dst, int64_t n) {
    const tr_block_tq2_32 *x = src;
    for (int64_t i = 0; i < n / TR_QK_TQ2_32; i++, dst += TR_QK_TQ2_32) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int j = 0; j < TR_QK_TQ2_32; j++) dst[j] = d * (float)(((x[i].qs[j % 8] >> (2 * (j / 8))) & 3) - 1);
    }
}

/* The least-squares ternary block: for a support S (the elements that are
 * not 0) the best d is the mean magnitude over S, leaving an error of
 * sum(x^2) - (sum_S |x|)^2 / |S|; over supports of k elements the k largest
 * magnitudes are best, so k is chosen to maximise (sum of the k largest)^2 / k.
 * (ggml's TQ2_0 takes d = max |x| instead, which sends most of a Gaussian
 * block to 0: relative RMSE about 0.75 against about 0.45 here.) Equal
 * magnitudes go in index order, so the result is a function of the block. */
void tr_quantize_row_tq2_32(const float *src, void *dst, int64_t n) {
    tr_block_tq2_32 *y = dst;
    for (int64_t i = 0; i < n / TR_QK_TQ2_32; i++, src += TR_QK_TQ2_32) {
        int order[TR_QK_TQ2_32];
        float mag[TR_QK_TQ2_32];
        for (int j = 0; j < TR_QK_TQ2_32; j++) {
            mag[j] = fabsf(src[j]);
            int k = j; /* insertion: larger magnitudes first, earlier index first among equals */
            while (k > 0 && mag[order[k - 1]] < mag[j]) {
                order[k] = order[k - 1];
                k--;
            }
            order[k] = j;
        }
        double sum = 0, best = 0;
        int best_k = 0;
        float d = 0.0f;
        for (int k = 1; k <= TR_QK_TQ2_32; k++) {
            sum += mag[order[k - 1]];
            const double gain = sum * sum / k;
            if (gain > best) {
                best = gain;
                best_k = k;
                d = (float)(sum / k);
            }
        }
        memset(y[i].qs, 0, sizeof y[i].qs);
        for (int j = 0; j < TR_QK_TQ2_32; j++) y[i].qs[j % 8] |= (uint8_t)(1 << (2 * (j / 8))); /* code 1: zero */
        for (int k = 0; k < best_k; k++) {
            const int j = order[k], code = src[j] > 0 ? 2 : 0;
            y[i].qs[j % 8] = (uint8_t)((y[i].qs[j % 8] & ~(3 << (2 * (j / 8)))) | (code << (2 * (j / 8))));
        }
        y[i].d = tr_fp32_to_fp16(d);
    }
}

/* TQ1_0 blocks rewritten as TQ2_0 blocks of the same values: every trit
 * decoded exactly (as the code 0..2 TQ2_0 stores), the scale's bits copied,
 * so both dequantize, and multiply, to the same numbers. 54 -> 66 bytes a
 * block: what a TQ1_0 matrix is repacked to at load, for TQ2_0's kernels. */
/* The code (trit + 1) of trit k of n bytes: trit_at's (q * 3) >> 8 for
 * q = byte * 3^k mod 256 is 0, 1, 2 as q is at most 85, at most 170, or
 * more; in straight loops over whole chunks that compilers vectorize. */
static inline void trit_codes(const uint8_t *b, int n, int k, uint8_t *out) {
    for (int j = 0; j < n; j++) {
        const uint8_t q = (uint8_t)(b[j] * pow3[k]);
        out[j] = (uint8_t)((q > 85) + (q > 170));
    }
}

void tr_tq1_0_to_tq2_0(const void *src, void *dst, int64_t n) {
    const tr_block_tq1_0 *x = src;
    tr_block_tq2_0 *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++) {
        uint8_t t[TR_QK_K]; /* the block's codes in element order (see tr_dequantize_row_tq1_0) */
        for (int k = 0; k < 5; k++) trit_codes(x[i].qs, 32, k, t + 32 * k);
        for (int k = 0; k < 5; k++) trit_codes(x[i].qs + 32, 16, k, t + 160 + 16 * k);
        for (int k = 0; k < 4; k++) trit_codes(x[i].qh, 4, k, t + 240 + 4 * k);
        /* element e: bits 2*((e/32)%4) of qs[(e/128)*32 + e%32] */
        for (int h = 0; h < 2; h++)
            for (int m = 0; m < 32; m++) {
                const uint8_t *c = t + 128 * h + m;
                y[i].qs[32 * h + m] = (uint8_t)(c[0] | c[32] << 2 | c[64] << 4 | c[96] << 6);
            }
        y[i].d = x[i].d;
    }
}
