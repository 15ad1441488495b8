/* The 4-bit formats whose levels are a lookup table rather than evenly
 * spaced: IQ4_NL (levels fitted to weight distributions) and MXFP4 (OCP
 * microscaling: FP4 E2M1 elements sharing one power-of-two E8M0 scale). */
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
