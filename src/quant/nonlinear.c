/* The 4-bit formats whose levels are a lookup table rather than evenly
 * spaced: IQ4_NL and IQ4_XS (levels fitted to weight distributions; XS adds
 * 6-bit sub-block scales in super-blocks of 256) and MXFP4 (OCP
 * microscaling: FP4 E2M1 elements sharing one power-of-two E8M0 scale).
 * Quantizers for IQ4_NL and MXFP4 write the same bytes as llama-quantize
 * (ggml_quantize_chunk without an importance matrix). */
#include "blocks.h"
#include "qround.h"
#include "quant.h"

/* ---------------------------------------------------------------- IQ4_NL */

static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                         1,    13,   25,  38,  53,  69,  89,  113};

void tr_dequantize_row_iq4_nl(const void *src, float *dst, int64_t n) {
    const tr_block_iq4_nl *x = src;
    for (int64_t i = 0; i < n / TR_QK4_NL; i++, dst += TR_QK4_NL) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int j = 0; j < TR_QK4_NL / 2; j++) {
            dst[j] = d * (float)kvalues_iq4nl[x[i].qs[j] & 0x0f];
            dst[j + TR_QK4_NL / 2] = d * (float)kvalues_iq4nl[x[i].qs[j] >> 4];
        }
    }
}

/* The index of the level nearest to v (the lower one on ties), by bisection
 * of the sorted table. */
static int nearest_level(const int8_t *val, int n, float v) {
    if (!(v > (float)val[0])) return 0; /* also NaN */
    if (v >= (float)val[n - 1]) return n - 1;
    int lo = 0, hi = n - 1;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < (float)val[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - (float)val[hi - 1] < (float)val[hi] - v ? hi - 1 : hi;
}

/* As llama-quantize without an importance matrix (ggml's quantize_iq4_nl;
 * its quantize_row_iq4_nl_ref skips the search): weights x^2; start from the
 * scale that maps the largest magnitude onto the outermost level -127, try
 * inverse scales (k - 127) / max for k in -7..7, keep the least-squares scale
 * of the best levels, then pick every element's level against that scale. */
void tr_quantize_row_iq4_nl(const float *src, void *dst, int64_t n) {
    tr_block_iq4_nl *y = dst;
    const int ntry = 7;
    for (int64_t i = 0; i < n / TR_QK4_NL; i++, src += TR_QK4_NL) {
        float amax = 0.0f, max = 0.0f, w[TR_QK4_NL];
        for (int j = 0; j < TR_QK4_NL; j++) {
            w[j] = src[j] * src[j];
            if (fabsf(src[j]) > amax) {
                amax = fabsf(src[j]);
                max = src[j];
            }
        }
        float d = 0.0f;
        if (amax >= 1e-15f && isfinite(amax)) {
            d = -max / (float)kvalues_iq4nl[0];
            float id = 1.0f / d, sumqx = 0.0f, sumq2 = 0.0f;
            for (int j = 0; j < TR_QK4_NL; j++) {
                const float q = (float)kvalues_iq4nl[nearest_level(kvalues_iq4nl, 16, id * src[j])];
                sumqx += w[j] * q * src[j];
                sumq2 += w[j] * q * q;
            }
            d = sumqx / sumq2;
            float best = d * sumqx;
            for (int itry = -ntry; itry <= ntry; itry++) {
                id = (float)(itry + kvalues_iq4nl[0]) / max;
                sumqx = sumq2 = 0.0f;
                for (int j = 0; j < TR_QK4_NL; j++) {
                    const float q = (float)kvalues_iq4nl[nearest_level(kvalues_iq4nl, 16, id * src[j])];
                    sumqx += w[j] * q * src[j];
                    sumq2 += w[j] * q * q;
                }
                if (sumq2 > 0.0f && sumqx * sumqx > best * sumq2) {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
        }
        y[i].d = tr_fp32_to_fp16(d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint8_t L[TR_QK4_NL];
        for (int j = 0; j < TR_QK4_NL; j++) L[j] = (uint8_t)nearest_level(kvalues_iq4nl, 16, id * src[j]);
        for (int j = 0; j < TR_QK4_NL / 2; j++) y[i].qs[j] = (uint8_t)(L[j] | (L[j + TR_QK4_NL / 2] << 4));
    }
}

/* ---------------------------------------------------------------- IQ4_XS */

void tr_dequantize_row_iq4_xs(const void *src, float *dst, int64_t n) {
    const tr_block_iq4_xs *x = src;
    for (int64_t i = 0; i < n / TR_QK_K; i++) {
        const float d = tr_fp16_to_fp32(x[i].d);
        for (int ib = 0; ib < TR_QK_K / 32; ib++, dst += 32) {
            const int ls = ((x[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f) | (((x[i].scales_h >> (2 * ib)) & 3) << 4);
            const float dl = d * (float)(ls - 32);
            const uint8_t *qs = x[i].qs + 16 * ib;
            for (int j = 0; j < 16; j++) {
                dst[j] = dl * (float)kvalues_iq4nl[qs[j] & 0x0f];
                dst[j + 16] = dl * (float)kvalues_iq4nl[qs[j] >> 4];
            }
        }
    }
}

/* ----------------------------------------------------------------- MXFP4 */

/* The E2M1 values doubled, so they are integers; the scale is halved to match. */
static const int8_t kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

/* 2^(e-127) / 2: the E8M0 scale, halved for the doubled table. e = 0 and 1
 * give the float subnormals 2^-128 and 2^-127; e = 255 (E8M0's NaN) gives 2^127. */
static float e8m0_to_fp32_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    return tr_bits_f32(bits);
}

void tr_dequantize_row_mxfp4(const void *src, float *dst, int64_t n) {
    const tr_block_mxfp4 *x = src;
    for (int64_t i = 0; i < n / TR_QK_MXFP4; i++, dst += TR_QK_MXFP4) {
        const float d = e8m0_to_fp32_half(x[i].e);
        for (int j = 0; j < TR_QK_MXFP4 / 2; j++) {
            dst[j] = d * (float)kvalues_mxfp4[x[i].qs[j] & 0x0f];
            dst[j + TR_QK_MXFP4 / 2] = d * (float)kvalues_mxfp4[x[i].qs[j] >> 4];
        }
    }
}

/* The shared exponent puts the largest magnitude in E2M1's top binade
 * (4..6 before doubling); each element then takes the nearest level, the
 * first one on ties, as ggml's reference does. */
void tr_quantize_row_mxfp4(const float *src, void *dst, int64_t n) {
    tr_block_mxfp4 *y = dst;
    for (int64_t i = 0; i < n / TR_QK_MXFP4; i++, src += TR_QK_MXFP4) {
        float amax = 0.0f;
        for (int j = 0; j < TR_QK_MXFP4; j++) amax = fmaxf(amax, fabsf(src[j]));
        const float e = amax > 0.0f ? floorf(log2f(amax)) - 2 + 127 : 0.0f;
        y[i].e = (uint8_t)tr_q_trunc(e, 0, 255);
        const float d = e8m0_to_fp32_half(y[i].e);
        uint8_t q[TR_QK_MXFP4];
        for (int j = 0; j < TR_QK_MXFP4; j++) {
            int best = 0;
            float best_err = fabsf(d * (float)kvalues_mxfp4[0] - src[j]);
            for (int k = 1; k < 16; k++) {
                const float err = fabsf(d * (float)kvalues_mxfp4[k] - src[j]);
                if (err < best_err) {
                    best_err = err;
                    best = k;
                }
            }
            q[j] = (uint8_t)best;
        }
        for (int j = 0; j < TR_QK_MXFP4 / 2; j++) y[i].qs[j] = (uint8_t)(q[j] | (q[j + TR_QK_MXFP4 / 2] << 4));
    }
}
