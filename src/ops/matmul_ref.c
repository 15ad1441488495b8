/* Scalar references for every weight format's dot product with its
 * activation format. These define the truth the SIMD variants are tested
 * against: integer products summed exactly per block, then scaled in float,
 * the arithmetic ggml's reference kernels use (block layouts are ggml's). */
#include "kernels.h"
#include "quant/quant.h"

#include <stdlib.h>

/* ---------------------------------------------------------------- activations */

void tr_act_q8_ref(const float *x, tr_q8a *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, y++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            int q = (int)roundf(x[i] * id);
            y->qs[i] = (int8_t)q;
            sum += q;
        }
        y->d = tr_fp16_to_fp32(tr_fp32_to_fp16(d));
        y->sum = sum;
    }
}

void tr_act_q8k_ref(const float *x, tr_q8k *y, int64_t n) {
    for (int64_t b = 0; b < n / 256; b++, x += 256, y++) {
        /* Scale by the signed value of largest magnitude so it maps to -127
         * exactly (ggml's Q8_K convention); the rest rounds to nearest. */
        float amax = 0, max = 0;
        for (int i = 0; i < 256; i++) {
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        }
        if (amax == 0) {
            memset(y, 0, sizeof *y);
            continue;
        }
        float iscale = -127.0f / max;
        for (int i = 0; i < 256; i++) {
            long v = lrintf(iscale * x[i]);
            y->qs[i] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += y->qs[16 * j + i];
            y->bsums[j] = (int16_t)s;
        }
        for (int j = 0; j < 8; j++) y->bsums32[j] = (int16_t)(y->bsums[2 * j] + y->bsums[2 * j + 1]);
        y->d = 1.0f / iscale;
    }
}

/* tr_q8k's values with the quants also in qs4's order (kernels.h). */
void tr_act_q8kp_ref(const float *x, tr_q8kp *y, int64_t n) {
    for (int64_t b = 0; b < n / 256; b++, x += 256, y++) {
        tr_q8k k;
        tr_act_q8k_ref(x, &k, 256);
        for (int e = 0; e < 256; e++) y->qs4[tr_q8kp_pos4(e)] = k.qs[e];
        tr_q8kp_set_natural(y, &k);
    }
}

static void act_q8(const float *x, void *y, int64_t n) { tr_act_q8_ref(x, y, n); }
static void act_q8k(const float *x, void *y, int64_t n) { tr_act_q8k_ref(x, y, n); }
static void act_q8kp(const float *x, void *y, int64_t n) { tr_act_q8kp_ref(x, y, n); }

const tr_act_row tr_ref_act_rows[] = {
    {TR_ACT_Q8, act_q8},
    {TR_ACT_Q8K, act_q8k},
    {TR_ACT_Q8KP, act_q8kp},
    {-1, NULL},
};

/* ---------------------------------------------------------------- float types */

static float dot_f32(int64_t n, const void *w_, const void *a_) {
    const float *w = w_, *a = a_;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += w[i] * a[i];
    return s;
}

static float dot_f16(int64_t n, const void *w_, const void *a_) {
    const uint16_t *w = w_;
    const float *a = a_;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += tr_fp16_to_fp32(w[i]) * a[i];
    return s;
}

static float dot_bf16(int64_t n, const void *w_, const void *a_) {
    const uint16_t *w = w_;
    const float *a = a_;
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += tr_bf16_to_fp32(w[i]) * a[i];
    return s;
}

/* ---------------------------------------------------------------- legacy quants */

static float dot_q8_0(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8a *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++, w += 34, a++) {
        int32_t sumi = 0;
        for (int i = 0; i < 32; i++) sumi += (int8_t)w[2 + i] * a->qs[i];
        s += tr_fp16_load(w) * a->d * (float)sumi;
    }
    return s;
}

static float dot_q4_0(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8a *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++, w += 18, a++) {
        int32_t sumi = 0;
        for (int i = 0; i < 16; i++) {
            sumi += ((w[2 + i] & 0xf) - 8) * a->qs[i];
            sumi += ((w[2 + i] >> 4) - 8) * a->qs[i + 16];
        }
        s += tr_fp16_load(w) * a->d * (float)sumi;
    }
    return s;
}

static float dot_q4_1(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8a *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++, w += 20, a++) {
        int32_t sumi = 0;
        for (int i = 0; i < 16; i++) {
            sumi += (w[4 + i] & 0xf) * a->qs[i];
            sumi += (w[4 + i] >> 4) * a->qs[i + 16];
        }
        s += tr_fp16_load(w) * a->d * (float)sumi + tr_fp16_load(w + 2) * a->d * (float)a->sum;
    }
    return s;
}

static float dot_q5_0(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8a *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++, w += 22, a++) {
        uint32_t qh = (uint32_t)w[2] | (uint32_t)w[3] << 8 | (uint32_t)w[4] << 16 | (uint32_t)w[5] << 24;
        int32_t sumi = 0;
        for (int i = 0; i < 16; i++) {
            int lo = (w[6 + i] & 0xf) | (int)((qh >> i) & 1) << 4;
            int hi = (w[6 + i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
            sumi += (lo - 16) * a->qs[i] + (hi - 16) * a->qs[i + 16];
        }
        s += tr_fp16_load(w) * a->d * (float)sumi;
    }
    return s;
}

static float dot_q5_1(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8a *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 32; b++, w += 24, a++) {
        uint32_t qh = (uint32_t)w[4] | (uint32_t)w[5] << 8 | (uint32_t)w[6] << 16 | (uint32_t)w[7] << 24;
        int32_t sumi = 0;
        for (int i = 0; i < 16; i++) {
            int lo = (w[8 + i] & 0xf) | (int)((qh >> i) & 1) << 4;
            int hi = (w[8 + i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
            sumi += lo * a->qs[i] + hi * a->qs[i + 16];
        }
        s += tr_fp16_load(w) * a->d * (float)sumi + tr_fp16_load(w + 2) * a->d * (float)a->sum;
    }
    return s;
}

/* ---------------------------------------------------------------- k-quants */

/* The 6-bit scale and min of sub-block j (of 8) packed in 12 bytes (Q4_K, Q5_K). */
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* Q4_K's activations are TR_ACT_Q8KP: quant e of a block is at qs4[tr_q8kp_pos4(e)]. */
static float dot_q4_k(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8kp *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 144, a++) {
        const uint8_t *scales = w + 4, *qs = w + 16;
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, scales, &sc, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = (j & 1) * 4;
            int32_t d = 0;
            for (int i = 0; i < 32; i++) d += ((q[i] >> shift) & 0xf) * a->qs4[tr_q8kp_pos4(32 * j + i)];
            sumi += sc * d;
            summ += m * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
        }
        s += a->d * (tr_fp16_load(w) * (float)sumi - tr_fp16_load(w + 2) * (float)summ);
    }
    return s;
}

static float dot_q5_k(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8k *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 176, a++) {
        const uint8_t *scales = w + 4, *qh = w + 16, *qs = w + 48;
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; j++) {
            int sc, m;
            scale_min_k4(j, scales, &sc, &m);
            const uint8_t *q = qs + 32 * (j / 2);
            int shift = (j & 1) * 4;
            int32_t d = 0;
            for (int i = 0; i < 32; i++) {
                int v = ((q[i] >> shift) & 0xf) | ((qh[i] >> j) & 1) << 4;
                d += v * a->qs[32 * j + i];
            }
            sumi += sc * d;
            summ += m * (a->bsums[2 * j] + a->bsums[2 * j + 1]);
        }
        s += a->d * (tr_fp16_load(w) * (float)sumi - tr_fp16_load(w + 2) * (float)summ);
    }
    return s;
}

/* Q6_K: 256 values of 6 bits (4 low in ql, 2 high in qh) minus 32, with a
 * signed 8-bit scale per 16. Element e of a 128-half: l = e % 32, group
 * g = e / 32: low nibble of ql[l + 32*(g&1)] (g < 2) or high (g >= 2), high
 * bits (qh[l] >> 2g) & 3. */
static float dot_q6_k(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8k *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 210, a++) {
        const uint8_t *ql = w, *qh = w + 128;
        const int8_t *sc = (const int8_t *)(w + 192);
        int32_t sumi = 0;
        for (int half = 0; half < 2; half++) {
            for (int g = 0; g < 4; g++) {
                for (int k = 0; k < 2; k++) { /* two scale groups of 16 per 32 */
                    int32_t d = 0;
                    for (int i = 0; i < 16; i++) {
                        int l = 16 * k + i;
                        int lo = (ql[64 * half + l + 32 * (g & 1)] >> (4 * (g >> 1))) & 0xf;
                        int hi = (qh[32 * half + l] >> (2 * g)) & 3;
                        d += ((lo | hi << 4) - 32) * a->qs[128 * half + 32 * g + l];
                    }
                    sumi += sc[8 * half + 2 * g + k] * d;
                }
            }
        }
        s += a->d * tr_fp16_load(w + 208) * (float)sumi;
    }
    return s;
}

static float dot_q2_k(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8k *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 84, a++) {
        const uint8_t *scales = w, *qs = w + 16;
        int32_t sumi = 0, summ = 0;
        for (int g = 0; g < 16; g++) { /* 16 groups of 16 */
            int half = g / 8, shift = 2 * ((g % 8) / 2), off = 16 * (g & 1);
            int32_t d = 0;
            for (int i = 0; i < 16; i++)
                d += ((qs[32 * half + off + i] >> shift) & 3) * a->qs[16 * g + i];
            sumi += (scales[g] & 0xf) * d;
            summ += (scales[g] >> 4) * a->bsums[g];
        }
        s += a->d * (tr_fp16_load(w + 80) * (float)sumi - tr_fp16_load(w + 82) * (float)summ);
    }
    return s;
}

/* Q3_K: 2 low bits in qs (like Q2_K), a high bit in hmask that, when clear,
 * subtracts 4; 6-bit scales (minus 32) per 16 packed in 12 bytes. */
static void q3k_scales(const uint8_t *p, int8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (p[j] & 0xf) : (p[j - 8] >> 4);
        int hi = (p[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        out[j] = (int8_t)((lo | hi << 4) - 32);
    }
}

static float dot_q3_k(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8k *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 110, a++) {
        const uint8_t *hm = w, *qs = w + 32;
        int8_t sc[16];
        q3k_scales(w + 96, sc);
        int32_t sumi = 0;
        for (int g = 0; g < 16; g++) {
            int half = g / 8, j = (g % 8) / 2, off = 16 * (g & 1);
            int32_t d = 0;
            for (int i = 0; i < 16; i++) {
                int l = off + i;
                int v = ((qs[32 * half + l] >> (2 * j)) & 3) - ((hm[l] >> (4 * half + j)) & 1 ? 0 : 4);
                d += v * a->qs[16 * g + i];
            }
            sumi += sc[g] * d;
        }
        s += a->d * tr_fp16_load(w + 108) * (float)sumi;
    }
    return s;
}

/* ---------------------------------------------------------------- ternary */

/* TQ2_0: 2-bit codes 0..2 meaning -1..1; byte m of a 32-byte half holds
 * elements 128*half + 32*l + m in bits 2l..2l+1. */
static float dot_tq2_0(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8k *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 66, a++) {
        int32_t sumi = 0, suma = 0;
        for (int half = 0; half < 2; half++)
            for (int l = 0; l < 4; l++)
                for (int m = 0; m < 32; m++)
                    sumi += ((w[32 * half + m] >> (2 * l)) & 3) * a->qs[128 * half + 32 * l + m];
        for (int g = 0; g < 16; g++) suma += a->bsums[g];
        s += tr_fp16_load(w + 64) * a->d * (float)(sumi - suma);
    }
    return s;
}

/* TQ1_0: five trits per byte in base 3, read most significant first by
 * multiplying the byte by 3^k (mod 256) and taking the top of byte * 3.
 * qs[0..31] give elements 0..159 (32 per power), qs[32..47] elements
 * 160..239 (16 per power), qh[0..3] (four trits each) elements 240..255. */
static inline int trit(uint8_t byte, int k) {
    static const uint8_t pow3[6] = {1, 3, 9, 27, 81, 243};
    uint8_t q = (uint8_t)(byte * pow3[k]);
    return ((uint16_t)q * 3) >> 8;
}

static float dot_tq1_0(int64_t n, const void *w_, const void *a_) {
    const uint8_t *w = w_;
    const tr_q8k *a = a_;
    float s = 0;
    for (int64_t b = 0; b < n / 256; b++, w += 54, a++) {
        const uint8_t *qs = w, *qh = w + 48;
        const int8_t *x = a->qs;
        int32_t sumi = 0, suma = 0;
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 32; m++) sumi += trit(qs[m], k) * x[32 * k + m];
        for (int k = 0; k < 5; k++)
            for (int m = 0; m < 16; m++) sumi += trit(qs[32 + m], k) * x[160 + 16 * k + m];
        for (int k = 0; k < 4; k++)
            for (int m = 0; m < 4; m++) sumi += trit(qh[m], k) * x[240 + 4 * k + m];
        for (int g = 0; g < 16; g++) suma += a->bsums[g];
        s += tr_fp16_load(w + 52) * a->d * (float)(sumi - suma);
    }
    return s;
}

/* ---------------------------------------------------------------- the table */

#define GEMM_FROM_DOT(name, dot)                                                             \
    static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, \
                     int nt, float *y, size_t ys) {                                         \
        for (int t = 0; t < nt; t++)                                                        \
            for (int r = 0; r < nr; r++)                                                    \
                y[(size_t)t * ys + r] =                                                     \
                    dot(n, (const char *)w + (size_t)r * ws, (const char *)a + (size_t)t * as); \
    }

GEMM_FROM_DOT(gemm_f32, dot_f32)
GEMM_FROM_DOT(gemm_f16, dot_f16)
GEMM_FROM_DOT(gemm_bf16, dot_bf16)
GEMM_FROM_DOT(gemm_q8_0, dot_q8_0)
GEMM_FROM_DOT(gemm_q4_0, dot_q4_0)
GEMM_FROM_DOT(gemm_q4_1, dot_q4_1)
GEMM_FROM_DOT(gemm_q5_0, dot_q5_0)
GEMM_FROM_DOT(gemm_q5_1, dot_q5_1)
GEMM_FROM_DOT(gemm_q2_k, dot_q2_k)
GEMM_FROM_DOT(gemm_q3_k, dot_q3_k)
GEMM_FROM_DOT(gemm_q4_k, dot_q4_k)
GEMM_FROM_DOT(gemm_q5_k, dot_q5_k)
GEMM_FROM_DOT(gemm_q6_k, dot_q6_k)
GEMM_FROM_DOT(gemm_tq1_0, dot_tq1_0)
GEMM_FROM_DOT(gemm_tq2_0, dot_tq2_0)

/* The _X16 layouts (rows repacked at load, sixteen to a group): row r is
 * row r % 16 of group r / 16 (the rows handed in start at a group); each
 * block is rebuilt as the source block it came from, so a row's result is
 * the source format's reference, bit for bit. */
#define GEMM_X16(name, type, dot, blck, src_bytes, act_t)                                                         \
    static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nt, float *y,       \
                     size_t ys) {                                                                                  \
        const size_t gb = 16 * tr_row_size(type, blck); /* a group's bytes per block */                           \
        for (int t = 0; t < nt; t++)                                                                               \
            for (int r = 0; r < nr; r++) {                                                                         \
                const char *g = (const char *)w + (size_t)(r / 16) * 16 * ws;                                      \
                const act_t *x = (const act_t *)((const char *)a + (size_t)t * as);                                \
                float s = 0;                                                                                       \
                for (int64_t b = 0; b < n / (blck); b++) {                                                         \
                    uint8_t blk[src_bytes] __attribute__((aligned(16))); /* the block struct's alignment */    \
                    tr_x16_get(type, g + (size_t)b * gb, r % 16, blk);                                             \
                    s += dot(blck, blk, x + b);                                                                    \
                }                                                                                                  \
                y[(size_t)t * ys + r] = s;                                                                         \
            }                                                                                                      \
    }
GEMM_X16(gemm_q4_k_x16, TR_TYPE_Q4_K_X16, dot_q4_k, 256, 144, tr_q8kp)
GEMM_X16(gemm_q4_0_x16, TR_TYPE_Q4_0_X16, dot_q4_0, 32, 18, tr_q8a)
GEMM_X16(gemm_q5_0_x16, TR_TYPE_Q5_0_X16, dot_q5_0, 32, 22, tr_q8a)
GEMM_X16(gemm_q8_0_x16, TR_TYPE_Q8_0_X16, dot_q8_0, 32, 34, tr_q8a)

/* The activation format each weight type is multiplied with is decided
 * here, with its reference: the SIMD rows must name the same. */
const tr_gemm_row tr_ref_gemm_rows[] = {
    {TR_TYPE_F32, TR_ACT_F32, gemm_f32},
    {TR_TYPE_F16, TR_ACT_F16, gemm_f16},
    {TR_TYPE_BF16, TR_ACT_BF16, gemm_bf16},
    {TR_TYPE_Q8_0, TR_ACT_Q8, gemm_q8_0},
    {TR_TYPE_Q4_0, TR_ACT_Q8, gemm_q4_0},
    {TR_TYPE_Q4_1, TR_ACT_Q8, gemm_q4_1},
    {TR_TYPE_Q5_0, TR_ACT_Q8, gemm_q5_0},
    {TR_TYPE_Q5_1, TR_ACT_Q8, gemm_q5_1},
    {TR_TYPE_Q2_K, TR_ACT_Q8K, gemm_q2_k},
    {TR_TYPE_Q3_K, TR_ACT_Q8K, gemm_q3_k},
    {TR_TYPE_Q4_K, TR_ACT_Q8KP, gemm_q4_k},
    {TR_TYPE_Q5_K, TR_ACT_Q8K, gemm_q5_k},
    {TR_TYPE_Q6_K, TR_ACT_Q8K, gemm_q6_k},
    {TR_TYPE_TQ1_0, TR_ACT_Q8K, gemm_tq1_0},
    {TR_TYPE_TQ2_0, TR_ACT_Q8K, gemm_tq2_0},
    {TR_TYPE_Q4_K_X16, TR_ACT_Q8KP, gemm_q4_k_x16},
    {TR_TYPE_Q4_0_X16, TR_ACT_Q8, gemm_q4_0_x16},
    {TR_TYPE_Q5_0_X16, TR_ACT_Q8, gemm_q5_0_x16},
    {TR_TYPE_Q8_0_X16, TR_ACT_Q8, gemm_q8_0_x16},
    {-1, 0, NULL},
};
