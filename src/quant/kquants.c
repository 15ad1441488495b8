/* The k-quants: super-blocks of 256 elements split into sub-blocks whose
 * scales (and mins) are themselves quantized against one fp16 super-scale.
 * Q2_K..Q6_K are weight formats; Q8_K is the activation format their dot
 * products pair with.
 *
 * Dequantizers reproduce ggml's arithmetic order exactly (scale * sub-scale
 * first, then times q, then minus the min), so results are bit-identical to
 * ggml and the gguf package. Quantizers follow ggml's reference ("_ref")
 * quantizers step by step (a weighted least-squares search for each
 * sub-block's scale and min, then 4/6/8-bit quantization of those against the
 * block's largest, then every element requantized against the scales as
 * stored), so they write the same bytes as ggml's; test_quant_reference.py checks
 * that against llama.cpp's own library. With an importance matrix, the
 * weighted variants llama-quantize uses are at the end of this file
 * (tr_quantize_row_imatrix), byte for byte ggml's too (test_quantize.py). */
#include "blocks.h"
#include "qround.h"
#include "quant.h"

#include <stdbool.h>
#include <string.h>

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

static void set_scale_min_k4(int j, uint8_t *q, int sc, int m) {
    if (j < 4) {
        q[j] = (uint8_t)((q[j] & 0xc0) | sc);
        q[j + 4] = (uint8_t)((q[j + 4] & 0xc0) | m);
    } else {
        q[j + 4] = (uint8_t)((sc & 0x0f) | ((m & 0x0f) << 4));
        q[j - 4] = (uint8_t)((q[j - 4] & 0x3f) | ((sc >> 4) << 6));
        q[j] = (uint8_t)((q[j] & 0x3f) | ((m >> 4) << 6));
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

/* ============================================================ quantizers */

/* Below this a group's largest magnitude counts as zero (ggml's GROUP_MAX_EPS). */
#define GROUP_MAX_EPS 1e-15f

/* The first element of largest magnitude, with its sign; its magnitude in *amax. */
static float signed_absmax(int n, const float *x, float *amax) {
    float max = 0.0f, a = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > a) {
            a = fabsf(x[i]);
            max = x[i];
        }
    }
    *amax = a;
    return max;
}

/* Weighted least squares for a symmetric scale: x[i] ~ scale * (L[i] - nmax)
 * with L[i] in [0, 2*nmax), weights qw (an importance matrix's), or x^2
 * without (large elements matter most). Start
 * from scale = max / -nmax; try inverse scales (nmax +- 0.1k) / -max and keep
 * the levels whose fitted scale sumlx/suml2 removes the most squared error
 * (sumlx^2/suml2), replacing only on strict improvement. */
static float make_qx_quants(int n, int nmax, const float *x, uint8_t *L, const float *qw) {
    float amax;
    const float max = signed_absmax(n, x, &amax);
    if (!(amax >= GROUP_MAX_EPS) || !isfinite(amax)) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    float scale = 0.0f, best = 0.0f;
    for (int k = 0; k <= 18; k++) {
        const int is = k == 0 ? 0 : k - 10 + (k >= 10); /* 0 first, then -9..-1, 1..9 */
        const float iscale = is == 0 ? -(float)nmax / max : -((float)nmax + 0.1f * (float)is) / max;
        float sumlx = 0.0f, suml2 = 0.0f;
        for (int i = 0; i < n; i++) {
            const int l = tr_q_rint(iscale * x[i], -nmax, nmax - 1);
            const float w = qw ? qw[i] : x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (k == 0 || (suml2 > 0.0f && sumlx * sumlx > best * suml2)) {
            for (int i = 0; i < n; i++) L[i] = (uint8_t)(tr_q_rint(iscale * x[i], -nmax, nmax - 1) + nmax);
            scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Q3_K's search: start from the levels of scale max / -nmax, then move single
 * elements to the level the others' fit suggests whenever that improves the
 * weighted fit (sumlx^2 / suml2), for up to five sweeps. */
static float make_q3_quants(int n, int nmax, const float *x, uint8_t *L) {
    float amax;
    const float max = signed_absmax(n, x, &amax);
    if (!(amax >= GROUP_MAX_EPS) || !isfinite(amax)) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    const float iscale = -(float)nmax / max;
    int l8[32];
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        l8[i] = tr_q_rint(iscale * x[i], -nmax, nmax - 1);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * (float)l8[i];
        suml2 += w * (float)l8[i] * (float)l8[i];
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)l8[i];
            if (!(slx > 0.0f)) continue;
            float sl2 = suml2 - w * (float)l8[i] * (float)l8[i];
            const int new_l = tr_q_rint(x[i] * sl2 / slx, -nmax, nmax - 1);
            if (new_l == l8[i]) continue;
            slx += w * x[i] * (float)new_l;
            sl2 += w * (float)new_l * (float)new_l;
            if (sl2 > 0.0f && slx * slx * suml2 > sumlx * sumlx * sl2) {
                l8[i] = new_l;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (uint8_t)(l8[i] + nmax);
    return suml2 != 0.0f ? sumlx / suml2 : 0.0f;
}

/* Weighted least squares for a scale and a min: x[i] ~ scale * L[i] - min,
 * L[i] in [0, nmax], min >= 0 (the levels always include 0 or below). Tries
 * a range of inverse scales around nmax / (max - min), fits scale and min in
 * closed form for each set of levels, keeps the best by weighted squared
 * (or, with use_mad, absolute) error. */
static float make_qkx_quants(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                             float rmin, float rdelta, int nstep, bool use_mad) {
    float min = x[0], max = x[0], sum_w = 0.0f, sum_x = 0.0f;
    for (int i = 0; i < n; i++) {
        min = fminf(min, x[i]);
        max = fmaxf(max, x[i]);
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0.0f) min = 0.0f;
    if (!(max > min) || !isfinite(max - min)) {
        memset(L, 0, (size_t)n);
        *the_min = isfinite(min) ? -min : 0.0f;
        return 0.0f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1.0f / iscale;
    float best_err = 0.0f;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)tr_q_rint(iscale * (x[i] - min), 0, nmax);
        const float diff = scale * (float)L[i] + min - x[i];
        best_err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    uint8_t Laux[32];
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0.0f, sum_l2 = 0.0f, sum_xl = 0.0f;
        for (int i = 0; i < n; i++) {
            Laux[i] = (uint8_t)tr_q_rint(iscale * (x[i] - min), 0, nmax);
            sum_l += w[i] * (float)Laux[i];
            sum_l2 += w[i] * (float)Laux[i] * (float)Laux[i];
            sum_xl += w[i] * (float)Laux[i] * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0.0f)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0.0f) { /* the min may only shift levels down: refit the scale alone */
            this_min = 0.0f;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0.0f;
        for (int i = 0; i < n; i++) {
            const float diff = this_scale * (float)Laux[i] + this_min - x[i];
            err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

/* Q2_K's 2-bit levels: element e in bits 2 * ((e / 32) % 4) of qs[(e / 128) * 32 + e % 32]. */
static void q2_K_pack(const uint8_t L[TR_QK_K], uint8_t qs[TR_QK_K / 4]) {
    memset(qs, 0, TR_QK_K / 4);
    for (int e = 0; e < TR_QK_K; e++) qs[(e / 128) * 32 + e % 32] |= (uint8_t)(L[e] << (2 * ((e / 32) % 4)));
}

/* Q3_K's 3-bit levels (0..7): the low two bits as Q2_K's, the high bit in hmask (set means "no -4 offset"). */
static void q3_K_pack(const uint8_t L[TR_QK_K], tr_block_q3_K *y) {
    memset(y->hmask, 0, sizeof y->hmask);
    memset(y->qs, 0, sizeof y->qs);
    for (int e = 0; e < TR_QK_K; e++) {
        int q = L[e];
        if (q > 3) {
            y->hmask[e % 32] |= (uint8_t)(1 << (e / 32));
            q -= 4;
        }
        y->qs[(e / 128) * 32 + e % 32] |= (uint8_t)(q << (2 * ((e / 32) % 4)));
    }
}

/* ------------------------------------------------------------------ Q2_K */

void tr_quantize_row_q2_K(const float *src, void *dst, int64_t n) {
    tr_block_q2_K *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        uint8_t L[TR_QK_K];
        float weights[16], scales[16], mins[16];
        float max_scale = 0.0f, max_min = 0.0f;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(src[16 * j + l]);
            scales[j] = make_qkx_quants(16, 3, src + 16 * j, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
            max_scale = fmaxf(max_scale, scales[j]);
            max_min = fmaxf(max_min, mins[j]);
        }
        /* sub-block scales and mins as 4-bit multiples of d and dmin */
        const float iscale = max_scale > 0.0f ? 15.0f / max_scale : 0.0f;
        const float imin = max_min > 0.0f ? 15.0f / max_min : 0.0f;
        for (int j = 0; j < 16; j++) {
            const int ls = tr_q_rint(iscale * scales[j], 0, 15);
            const int lm = tr_q_rint(imin * mins[j], 0, 15);
            y[i].scales[j] = (uint8_t)(ls | (lm << 4));
        }
        y[i].d = tr_fp32_to_fp16(max_scale / 15.0f);
        y[i].dmin = tr_fp32_to_fp16(max_min / 15.0f);
        /* requantize against the scales as stored */
        const float d = tr_fp16_to_fp32(y[i].d), dmin = tr_fp16_to_fp32(y[i].dmin);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)(y[i].scales[j] & 0x0f);
            const float ml = dmin * (float)(y[i].scales[j] >> 4);
            if (dl == 0.0f) continue; /* the levels are moot: keep the search's */
            for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)tr_q_rint((src[16 * j + l] + ml) / dl, 0, 3);
        }
        q2_K_pack(L, y[i].qs);
    }
}

/* ------------------------------------------------------------------ Q3_K */

void tr_quantize_row_q3_K(const float *src, void *dst, int64_t n) {
    tr_block_q3_K *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        uint8_t L[TR_QK_K];
        float scales[16], max_scale = 0.0f, amax = 0.0f;
        for (int j = 0; j < 16; j++) {
            scales[j] = make_q3_quants(16, 4, src + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > amax) {
                amax = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        memset(y[i].scales, 0, sizeof y[i].scales);
        if (max_scale != 0.0f) {
            /* 6-bit signed sub-scales, the largest mapped to -32 */
            const float iscale = -32.0f / max_scale;
            for (int j = 0; j < 16; j++) {
                const int l = tr_q_rint(iscale * scales[j], -32, 31) + 32;
                if (j < 8)
                    y[i].scales[j] = (uint8_t)(l & 0x0f);
                else
                    y[i].scales[j - 8] |= (uint8_t)((l & 0x0f) << 4);
                y[i].scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = tr_fp32_to_fp16(1.0f / iscale);
        } else {
            y[i].d = tr_fp32_to_fp16(0.0f);
        }
        const float d = tr_fp16_to_fp32(y[i].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d * (float)get_scale_q3_K(j, y[i].scales);
            if (dl == 0.0f) continue; /* the levels are moot: keep the search's */
            for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)(tr_q_rint(src[16 * j + l] / dl, -4, 3) + 4);
        }
        q3_K_pack(L, &y[i]);
    }
}

/* ------------------------------------------------------------ Q4_K, Q5_K */

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): eight sub-blocks of 32 with a
 * scale and a min each, then both sets quantized to 6 bits against their
 * largest. Weights favour larger elements (rms of the sub-block + |x|). */
static void quantize_k4_block(const float *x, int nmax, float rmin, int nstep, tr_fp16 *dd, tr_fp16 *dmin,
                              uint8_t scales_packed[TR_K_SCALE_SIZE], uint8_t L[TR_QK_K]) {
    float weights[32], scales[8], mins[8];
    float max_scale = 0.0f, max_min = 0.0f;
    for (int j = 0; j < 8; j++) {
        float sum_x2 = 0.0f;
        for (int l = 0; l < 32; l++) sum_x2 += x[32 * j + l] * x[32 * j + l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], rmin, 0.1f, nstep, false);
        max_scale = fmaxf(max_scale, scales[j]);
        max_min = fmaxf(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
    memset(scales_packed, 0, TR_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++)
        set_scale_min_k4(j, scales_packed, tr_q_rint(inv_scale * scales[j], 0, 63), tr_q_rint(inv_min * mins[j], 0, 63));
    *dd = tr_fp32_to_fp16(max_scale / 63.0f);
    *dmin = tr_fp32_to_fp16(max_min / 63.0f);
    /* requantize every element against the scale and min as stored */
    const float d = tr_fp16_to_fp32(*dd), m = tr_fp16_to_fp32(*dmin);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        get_scale_min_k4(j, scales_packed, &sc, &mn);
        const float d1 = d * (float)sc, m1 = m * (float)mn;
        if (d1 == 0.0f) continue; /* the levels are moot: keep the search's */
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)tr_q_rint((x[32 * j + l] + m1) / d1, 0, nmax);
    }
}

static void k4_imatrix_block(const float *x, const float *qw, int nmax, tr_fp16 *dd, tr_fp16 *dmin,
                             uint8_t sp[TR_K_SCALE_SIZE], uint8_t L[TR_QK_K]);

/* Q4_K and Q5_K rows: each block's scales by the plain search, or under the importance qw (NULL: none). */
static void q4_K_rows(const float *src, tr_block_q4_K *y, int64_t n, const float *qw) {
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        uint8_t L[TR_QK_K];
        if (qw) k4_imatrix_block(src, qw + i * TR_QK_K, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        else quantize_k4_block(src, 15, -1.0f, 20, &y[i].d, &y[i].dmin, y[i].scales, L);
        /* sub-block j: low nibbles (even j) or high nibbles (odd j) of qs[32*(j/2) ..] */
        for (int j = 0; j < TR_QK_K; j += 64)
            for (int l = 0; l < 32; l++) y[i].qs[j / 2 + l] = (uint8_t)(L[j + l] | (L[j + 32 + l] << 4));
    }
}

void tr_quantize_row_q4_K(const float *src, void *dst, int64_t n) { q4_K_rows(src, dst, n, NULL); }

static void q5_K_rows(const float *src, tr_block_q5_K *y, int64_t n, const float *qw) {
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        uint8_t L[TR_QK_K];
        if (qw) k4_imatrix_block(src, qw + i * TR_QK_K, 31, &y[i].d, &y[i].dmin, y[i].scales, L);
        else quantize_k4_block(src, 31, -0.5f, 15, &y[i].d, &y[i].dmin, y[i].scales, L);
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int e = 0; e < TR_QK_K; e++)
            if (L[e] > 15) y[i].qh[e % 32] |= (uint8_t)(1 << (e / 32));
        for (int j = 0; j < TR_QK_K; j += 64)
            for (int l = 0; l < 32; l++)
                y[i].qs[j / 2 + l] = (uint8_t)((L[j + l] & 0x0f) | ((L[j + 32 + l] & 0x0f) << 4));
    }
}

void tr_quantize_row_q5_K(const float *src, void *dst, int64_t n) { q5_K_rows(src, dst, n, NULL); }

/* ------------------------------------------------------------------ Q6_K */

/* A Q6_K block from its sixteen sub-block scales (and the search's levels,
 * kept where a stored scale is 0): 8-bit signed sub-scales, the largest
 * mapped to -128, every element requantized against the scales as stored. */
static void q6_K_finish(tr_block_q6_K *y, const float *src, const float scales[16], uint8_t L[TR_QK_K]) {
    float max_scale = 0.0f, amax = 0.0f;
    for (int j = 0; j < 16; j++) {
        if (fabsf(scales[j]) > amax) {
            amax = fabsf(scales[j]);
            max_scale = scales[j];
        }
    }
    if (!(amax >= GROUP_MAX_EPS)) {
        memset(y, 0, sizeof *y);
        return;
    }
    const float iscale = -128.0f / max_scale;
    y->d = tr_fp32_to_fp16(1.0f / iscale);
    for (int j = 0; j < 16; j++) y->scales[j] = (int8_t)tr_q_rint(iscale * scales[j], -128, 127);
    const float d = tr_fp16_to_fp32(y->d);
    for (int j = 0; j < 16; j++) {
        const float dl = d * (float)y->scales[j];
        if (dl == 0.0f) continue; /* the levels are moot: keep the search's */
        for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)(tr_q_rint(src[16 * j + l] / dl, -32, 31) + 32);
    }
    /* each half of 128: ql[0..63] low nibbles hold elements 0..63, high nibbles 64..127;
     * qh[0..31] holds the top two bits of elements l, l+32, l+64, l+96 */
    for (int h = 0; h < 2; h++) {
        const uint8_t *q = L + 128 * h;
        for (int l = 0; l < 64; l++) y->ql[64 * h + l] = (uint8_t)((q[l] & 0x0f) | ((q[l + 64] & 0x0f) << 4));
        for (int l = 0; l < 32; l++)
            y->qh[32 * h + l] = (uint8_t)((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                                          ((q[l + 96] >> 4) << 6));
    }
}

void tr_quantize_row_q6_K(const float *src, void *dst, int64_t n) {
    tr_block_q6_K *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        uint8_t L[TR_QK_K];
        float scales[16];
        for (int j = 0; j < 16; j++) scales[j] = make_qx_quants(16, 32, src + 16 * j, L + 16 * j, NULL);
        q6_K_finish(&y[i], src, scales, L);
    }
}

/* ------------------------------------------------------------------ Q8_K */

/* The element of largest magnitude maps to -127 exactly (its sign kept in the
 * float scale); sums of each 16 quants let dot products apply mins cheaply. */
void tr_quantize_row_q8_K(const float *src, void *dst, int64_t n) {
    tr_block_q8_K *y = dst;
    for (int64_t i = 0; i < n / TR_QK_K; i++, src += TR_QK_K) {
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < TR_QK_K; j++) {
            if (fabsf(src[j]) > amax) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        if (!(amax > 0.0f) || !isfinite(amax)) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.0f / max;
        for (int j = 0; j < TR_QK_K; j++) y[i].qs[j] = (int8_t)tr_q_rint(iscale * src[j], -128, 127);
        for (int j = 0; j < TR_QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

/* ------------------------------------------ with an importance matrix */

/* What llama-quantize does with an importance matrix (qw: one weight per
 * column of the row, the mean squared activation that column met): the same
 * searches weighted by qw * sqrt(sigma2 + x^2) instead of the magnitude
 * heuristics, and the sub-block scales fitted by make_qp_quants. Byte for
 * byte ggml's weighted quantizers (test_quantize.py). Types without a
 * weighted form are quantized as without. */

/* Levels L[i] in [0, nmax] for x[i] >= 0 (scales, mins) under weights w:
 * the best of nine inverse scales around nmax / max by weighted error, then
 * up to five sweeps moving single levels where the fit improves. */
static float make_qp_quants(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0.0f;
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    if (!(max >= GROUP_MAX_EPS) || !isfinite(max)) {
        memset(L, 0, (size_t)n);
        return 0.0f;
    }
    enum { BIG = 1 << 22 };
    float iscale = (float)nmax / max;
    const float scale = 1.0f / iscale;
    float best_mse = 0.0f;
    for (int i = 0; i < n; i++) {
        const float diff = x[i] - scale * (float)(uint8_t)tr_q_rint(iscale * x[i], -BIG, BIG);
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * (float)is + (float)nmax) / max, scale_is = 1.0f / iscale_is;
        float mse = 0.0f;
        for (int i = 0; i < n; i++) {
            int l = tr_q_rint(iscale_is * x[i], -BIG, BIG);
            l = l < nmax ? l : nmax;
            const float diff = x[i] - scale_is * (float)l;
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0.0f, suml2 = 0.0f;
    for (int i = 0; i < n; i++) {
        int l = tr_q_rint(iscale * x[i], -BIG, BIG);
        l = l < nmax ? l : nmax;
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * (float)L[i];
        suml2 += w[i] * (float)L[i] * (float)L[i];
    }
    for (int itry = 0; itry < 5; itry++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * (float)L[i];
            float sl2 = suml2 - w[i] * (float)L[i] * (float)L[i];
            if (!(slx > 0.0f && sl2 > 0.0f)) continue;
            int new_l = tr_q_rint(x[i] * sl2 / slx, -BIG, BIG);
            new_l = new_l < nmax ? new_l : nmax;
            if (new_l == L[i]) continue;
            slx += w[i] * x[i] * (float)new_l;
            sl2 += w[i] * (float)new_l * (float)new_l;
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (uint8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

/* weight[l] = qw[l] * sqrt(sigma2 + x[l]^2) for n elements; returns their sum. */
static float importance(int n, const float *x, const float *qw, float sigma2, float *weight) {
    float sum = 0.0f;
    for (int l = 0; l < n; l++) weight[l] = qw[l] * sqrtf(sigma2 + x[l] * x[l]);
    for (int l = 0; l < n; l++) sum += weight[l];
    return sum;
}

static float sum_squares(int64_t n, const float *x) {
    float s = 0.0f;
    for (int64_t j = 0; j < n; j++) s += x[j] * x[j];
    return s;
}

static void q2_K_imatrix(const float *x, tr_block_q2_K *y, int64_t n, const float *qw) {
    for (int64_t i = 0; i < n / TR_QK_K; i++, x += TR_QK_K, qw += TR_QK_K) {
        uint8_t L[TR_QK_K], Ls[16], Lm[16];
        float weight[16], sw[16], scales[16], mins[16];
        const float sigma2 = sum_squares(TR_QK_K, x) / TR_QK_K;
        for (int j = 0; j < 16; j++) {
            sw[j] = importance(16, x + 16 * j, qw + 16 * j, sigma2, weight);
            scales[j] = make_qkx_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], -0.9f, 0.05f, 36, false);
        }
        const float dq = make_qp_quants(16, 15, scales, Ls, sw), mq = make_qp_quants(16, 15, mins, Lm, sw);
        y[i].d = tr_fp32_to_fp16(dq);
        y[i].dmin = tr_fp32_to_fp16(mq);
        const float dm = tr_fp16_to_fp32(y[i].d), mm = tr_fp16_to_fp32(y[i].dmin);
        for (int j = 0; j < 16; j++) y[i].scales[j] = (uint8_t)(Ls[j] | (Lm[j] << 4));
        for (int j = 0; j < 16; j++) {
            const float d = dm * (float)(y[i].scales[j] & 0x0f);
            if (d == 0.0f) continue;
            const float m = mm * (float)(y[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)tr_q_rint((x[16 * j + l] + m) / d, 0, 3);
        }
        q2_K_pack(L, y[i].qs);
    }
}

static void q3_K_imatrix(const float *x, tr_block_q3_K *y, int64_t n, const float *qw) {
    for (int64_t i = 0; i < n / TR_QK_K; i++, x += TR_QK_K, qw += TR_QK_K) {
        uint8_t L[TR_QK_K], Ls[16];
        float weight[16], sw[16], scales[16];
        const float sigma2 = 2 * sum_squares(TR_QK_K, x) / TR_QK_K;
        for (int j = 0; j < 16; j++) {
            sw[j] = importance(16, x + 16 * j, qw + 16 * j, sigma2, weight);
            scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
        }
        memset(y[i].scales, 0, sizeof y[i].scales);
        const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
        for (int j = 0; j < 16; j++) {
            int l = Ls[j];
            if (j < 8)
                y[i].scales[j] = (uint8_t)(l & 0x0f);
            else
                y[i].scales[j - 8] |= (uint8_t)((l & 0x0f) << 4);
            y[i].scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
        y[i].d = tr_fp32_to_fp16(d_block);
        for (int j = 0; j < 16; j++) {
            const float dl = tr_fp16_to_fp32(y[i].d) * (float)get_scale_q3_K(j, y[i].scales);
            if (dl == 0.0f) continue;
            for (int l = 0; l < 16; l++) L[16 * j + l] = (uint8_t)(tr_q_rint(x[16 * j + l] / dl, -4, 3) + 4);
        }
        q3_K_pack(L, &y[i]);
    }
}

/* Q4_K (nmax 15) and Q5_K (31): eight sub-blocks' scale and min searched
 * under the importance, both sets fitted to 6 bits by make_qp_quants, every
 * element requantized against what is stored. */
static void k4_imatrix_block(const float *x, const float *qw, int nmax, tr_fp16 *dd, tr_fp16 *dmin,
                             uint8_t sp[TR_K_SCALE_SIZE], uint8_t L[TR_QK_K]) {
    float weight[32], sw[8], scales[8], mins[8];
    uint8_t Ls[8], Lm[8];
    const float sigma2 = 2 * sum_squares(TR_QK_K, x) / TR_QK_K;
    for (int j = 0; j < 8; j++) {
        sw[j] = importance(32, x + 32 * j, qw + 32 * j, sigma2, weight);
        scales[j] = make_qkx_quants(32, nmax, x + 32 * j, weight, L + 32 * j, &mins[j], -0.9f, 0.05f, 36, false);
    }
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw), m_block = make_qp_quants(8, 63, mins, Lm, sw);
    memset(sp, 0, TR_K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) set_scale_min_k4(j, sp, Ls[j], Lm[j]);
    *dd = tr_fp32_to_fp16(d_block);
    *dmin = tr_fp32_to_fp16(m_block);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        get_scale_min_k4(j, sp, &sc, &mn);
        const float d = tr_fp16_to_fp32(*dd) * (float)sc;
        if (d == 0.0f) continue;
        const float dm = tr_fp16_to_fp32(*dmin) * (float)mn;
        for (int l = 0; l < 32; l++) L[32 * j + l] = (uint8_t)tr_q_rint((x[32 * j + l] + dm) / d, 0, nmax);
    }
}

static void q6_K_imatrix(const float *x, tr_block_q6_K *y, int64_t n, const float *qw) {
    for (int64_t i = 0; i < n / TR_QK_K; i++, x += TR_QK_K, qw += TR_QK_K) {
        uint8_t L[TR_QK_K];
        float scales[16];
        for (int j = 0; j < 16; j++) scales[j] = make_qx_quants(16, 32, x + 16 * j, L + 16 * j, qw + 16 * j);
        q6_K_finish(&y[i], x, scales, L);
    }
}

/* The legacy formats: blocks of 32, sigma2 taken over the whole row. */
static void legacy_imatrix(int type, const float *x, void *dst, int64_t n, const float *qw) {
    const float sigma2 = sum_squares(n, x) / (float)n;
    for (int64_t ib = 0; ib < n / 32; ib++) {
        const float *xb = x + 32 * ib;
        float weight[32], min;
        uint8_t L[32];
        importance(32, xb, qw + 32 * ib, sigma2, weight);
        uint32_t qh = 0;
        switch (type) {
        case TR_TYPE_Q4_0: {
            tr_block_q4_0 *y = (tr_block_q4_0 *)dst + ib;
            y->d = tr_fp32_to_fp16(make_qx_quants(32, 8, xb, L, weight));
            for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
            break;
        }
        case TR_TYPE_Q4_1: {
            tr_block_q4_1 *y = (tr_block_q4_1 *)dst + ib;
            y->d = tr_fp32_to_fp16(make_qkx_quants(32, 15, xb, weight, L, &min, -0.9f, 0.05f, 36, false));
            y->m = tr_fp32_to_fp16(-min);
            for (int j = 0; j < 16; j++) y->qs[j] = (uint8_t)(L[j] | (L[j + 16] << 4));
            break;
        }
        case TR_TYPE_Q5_0: case TR_TYPE_Q5_1: {
            float d;
            uint8_t *qs, *qhp;
            if (type == TR_TYPE_Q5_0) {
                tr_block_q5_0 *y = (tr_block_q5_0 *)dst + ib;
                d = make_qx_quants(32, 16, xb, L, weight);
                y->d = tr_fp32_to_fp16(d);
                qs = y->qs, qhp = y->qh;
            } else {
                tr_block_q5_1 *y = (tr_block_q5_1 *)dst + ib;
                d = make_qkx_quants(32, 31, xb, weight, L, &min, -0.9f, 0.05f, 36, false);
                y->d = tr_fp32_to_fp16(d);
                y->m = tr_fp32_to_fp16(-min);
                qs = y->qs, qhp = y->qh;
            }
            for (int j = 0; j < 16; j++) {
                qs[j] = (uint8_t)((L[j] & 0x0f) | ((L[j + 16] & 0x0f) << 4));
                qh |= (uint32_t)((L[j] & 0x10u) >> 4) << j;
                qh |= (uint32_t)((L[j + 16] & 0x10u) >> 4) << (j + 16);
            }
            memcpy(qhp, &qh, 4);
            break;
        }
        default: break;
        }
    }
}

bool tr_quantize_row_imatrix(int type, const float *src, void *dst, int64_t n, const float *qw) {
    switch (type) {
    case TR_TYPE_Q2_K: q2_K_imatrix(src, dst, n, qw); return true;
    case TR_TYPE_Q3_K: q3_K_imatrix(src, dst, n, qw); return true;
    case TR_TYPE_Q4_K: q4_K_rows(src, dst, n, qw); return true;
    case TR_TYPE_Q5_K: q5_K_rows(src, dst, n, qw); return true;
    case TR_TYPE_Q6_K: q6_K_imatrix(src, dst, n, qw); return true;
    case TR_TYPE_Q4_0: case TR_TYPE_Q4_1: case TR_TYPE_Q5_0: case TR_TYPE_Q5_1:
        legacy_imatrix(type, src, dst, n, qw);
        return true;
    default: return false;
    }
}

/* ---------------------------------------------------------------- Q4_K_X16 (repacked at load) */

void tr_q4_k_to_x16(const void *src, size_t src_row, void *dst, int64_t n) {
    tr_block_q4_K_x16 *y = dst;
    for (int64_t b = 0; b < n / TR_QK_K; b++, y++) {
        for (int i = 0; i < 16; i++) {
            const tr_block_q4_K *x = (const tr_block_q4_K *)((const uint8_t *)src + (size_t)i * src_row) + b;
            y->d[i] = x->d;
            y->dmin[i] = x->dmin;
            for (int j = 0; j < 8; j++) {
                int sc, m;
                get_scale_min_k4(j, x->scales, &sc, &m);
                y->sc[j][i] = (uint8_t)sc;
                y->mn[j / 2][i][j % 2] = (uint8_t)m;
            }
            for (int c = 0; c < 4; c++)
                for (int k = 0; k < 8; k++) memcpy(y->qs[c][k][i], x->qs + 32 * c + 4 * k, 4);
        }
    }
}

void tr_q4_k_x16_get(const void *x16, int i, void *dst) {
    const tr_block_q4_K_x16 *x = x16;
    tr_block_q4_K *y = dst;
    y->d = x->d[i];
    y->dmin = x->dmin[i];
    memset(y->scales, 0, sizeof y->scales);
    for (int j = 0; j < 8; j++) set_scale_min_k4(j, y->scales, x->sc[j][i], x->mn[j / 2][i][j % 2]);
    for (int c = 0; c < 4; c++)
        for (int k = 0; k < 8; k++) memcpy(y->qs + 32 * c + 4 * k, x->qs[c][k][i], 4);
}
