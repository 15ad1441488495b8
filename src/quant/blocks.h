/* The block layouts of ggml's tensor formats, byte for byte as GGUF files
 * store them, and the scalar half/bfloat16 conversions every format uses.
 *
 * Kernels include this header to read blocks directly; the static_asserts
 * pin each struct to the size ggml gives it (and the table in types.c), so a
 * padding surprise cannot silently shift every block after the first.
 * Little-endian hosts only, as the rest of Trinity. */
#ifndef TR_QUANT_BLOCKS_H
#define TR_QUANT_BLOCKS_H

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t tr_fp16;  /* IEEE 754 binary16 bits */
typedef uint16_t tr_bf16;  /* bfloat16 bits: the top half of a float */

/* Elements per block of the legacy formats and of the k-quants. */
#define TR_QK4_0 32
#define TR_QK4_1 32
#define TR_QK5_0 32
#define TR_QK5_1 32
#define TR_QK8_0 32
#define TR_QK8_1 32
#define TR_QK_K 256
#define TR_K_SCALE_SIZE 12 /* packed 6-bit scales and mins of Q4_K / Q5_K */

/* ------------------------------------------------------- legacy formats */

/* x = d * (q - 8), q a nibble; element j in the low nibbles, j+16 in the high. */
typedef struct {
    tr_fp16 d;
    uint8_t qs[TR_QK4_0 / 2];
} tr_block_q4_0;
static_assert(sizeof(tr_block_q4_0) == 18, "Q4_0 block is 18 bytes");

/* x = d * q + m */
typedef struct {
    tr_fp16 d;
    tr_fp16 m;
    uint8_t qs[TR_QK4_1 / 2];
} tr_block_q4_1;
static_assert(sizeof(tr_block_q4_1) == 20, "Q4_1 block is 20 bytes");

/* x = d * (q - 16), q five bits: low nibble in qs as Q4_0, bit 4 of element j in bit j of qh. */
typedef struct {
    tr_fp16 d;
    uint8_t qh[4];
    uint8_t qs[TR_QK5_0 / 2];
} tr_block_q5_0;
static_assert(sizeof(tr_block_q5_0) == 22, "Q5_0 block is 22 bytes");

/* x = d * q + m, q five bits as Q5_0. */
typedef struct {
    tr_fp16 d;
    tr_fp16 m;
    uint8_t qh[4];
    uint8_t qs[TR_QK5_1 / 2];
} tr_block_q5_1;
static_assert(sizeof(tr_block_q5_1) == 24, "Q5_1 block is 24 bytes");

/* x = d * q */
typedef struct {
    tr_fp16 d;
    int8_t qs[TR_QK8_0];
} tr_block_q8_0;
static_assert(sizeof(tr_block_q8_0) == 34, "Q8_0 block is 34 bytes");

/* x = d * q; s = d * sum(q), kept so dot products with Q4_1/Q5_1 can apply their offset once. */
typedef struct {
    tr_fp16 d;
    tr_fp16 s;
    int8_t qs[TR_QK8_1];
} tr_block_q8_1;
static_assert(sizeof(tr_block_q8_1) == 36, "Q8_1 block is 36 bytes");

/* ------------------------------------------------------------- k-quants */

/* 16 sub-blocks of 16: x = d * (scales & 15) * q - dmin * (scales >> 4), q two bits. */
typedef struct {
    uint8_t scales[TR_QK_K / 16];
    uint8_t qs[TR_QK_K / 4];
    tr_fp16 d;
    tr_fp16 dmin;
} tr_block_q2_K;
static_assert(sizeof(tr_block_q2_K) == 84, "Q2_K block is 84 bytes");

/* 16 sub-blocks of 16: x = d * (scale - 32) * (q - 4 * !hbit), 6-bit scales packed in 12 bytes. */
typedef struct {
    uint8_t hmask[TR_QK_K / 8];
    uint8_t qs[TR_QK_K / 4];
    uint8_t scales[12];
    tr_fp16 d;
} tr_block_q3_K;
static_assert(sizeof(tr_block_q3_K) == 110, "Q3_K block is 110 bytes");

/* 8 sub-blocks of 32: x = d * sc * q - dmin * m, 6-bit sc and m packed in 12 bytes. */
typedef struct {
    tr_fp16 d;
    tr_fp16 dmin;
    uint8_t scales[TR_K_SCALE_SIZE];
    uint8_t qs[TR_QK_K / 2];
} tr_block_q4_K;
static_assert(sizeof(tr_block_q4_K) == 144, "Q4_K block is 144 bytes");

/* Q4_K_X16 (Trinity's own, weights repacked at load): one super-block of
 * sixteen consecutive Q4_K rows, laid out so that a zmm load gives one
 * value of each of the sixteen rows in its sixteen int32 lanes (row i in
 * lane i): the scales unpacked from their 6 bits, the quants' bytes in
 * fours. A matrix of R rows (R a multiple of 16) and n columns is R / 16
 * groups, each n / 256 of these in a row; it has the Q4_K rows' values
 * exactly (tr_q4_k_x16_get gives a row's block back byte for byte).
 * 148 bytes per row and super-block (Q4_K's 144: the scales unpacked). */
typedef struct {
    tr_fp16 d[16];           /* row i's d */
    tr_fp16 dmin[16];        /* row i's dmin */
    uint8_t sc[8][16];       /* sc[j][i]: row i's scale of sub-block j */
    uint8_t mn[4][16][2];    /* mn[p][i]: row i's mins of sub-blocks 2p, 2p + 1 */
    uint8_t qs[4][8][16][4]; /* qs[c][k][i]: row i's qs[32c + 4k .. 32c + 4k + 3] */
} tr_block_q4_K_x16;
static_assert(sizeof(tr_block_q4_K_x16) == 16 * 148, "Q4_K_X16 block is 16 x 148 bytes");

/* Q4_0_X16, Q5_0_X16, Q8_0_X16 (Trinity's own, weights repacked at load):
 * one block of sixteen consecutive rows, as Q4_K_X16 is for Q4_K: a zmm
 * load of qs gives row i's four bytes in int32 lane i. The values and
 * their offsets are the source format's: Q4_0's nibbles (qs[k][i] = row
 * i's qs[4k .. 4k + 3]: values 4k.. in the low nibbles, 16 + 4k.. in the
 * high); Q5_0's as Q4_0's with the fifth bits as byte masks (hm[4h + k]
 * bit 4i + j: row i's value 16h + 4k + j has its bit 4 set); Q8_0's int8
 * plus 128 as unsigned bytes (qs[k][i] = row i's values 4k .. 4k + 3).
 * Each is the size of its source's sixteen blocks. */
typedef struct {
    tr_fp16 d[16];
    uint8_t qs[4][16][4];
} tr_block_q4_0_x16;
static_assert(sizeof(tr_block_q4_0_x16) == 16 * 18, "Q4_0_X16 block is 16 x 18 bytes");
typedef struct {
    tr_fp16 d[16];
    uint64_t hm[8];
    uint8_t qs[4][16][4];
} tr_block_q5_0_x16;
static_assert(sizeof(tr_block_q5_0_x16) == 16 * 22, "Q5_0_X16 block is 16 x 22 bytes");
typedef struct {
    tr_fp16 d[16];
    uint8_t qs[8][16][4];
} tr_block_q8_0_x16;
static_assert(sizeof(tr_block_q8_0_x16) == 16 * 34, "Q8_0_X16 block is 16 x 34 bytes");

/* As Q4_K with a fifth bit per element in qh. */
typedef struct {
    tr_fp16 d;
    tr_fp16 dmin;
    uint8_t scales[TR_K_SCALE_SIZE];
    uint8_t qh[TR_QK_K / 8];
    uint8_t qs[TR_QK_K / 2];
} tr_block_q5_K;
static_assert(sizeof(tr_block_q5_K) == 176, "Q5_K block is 176 bytes");

/* 16 sub-blocks of 16: x = d * scales * (q - 32), q six bits (low 4 in ql, high 2 in qh). */
typedef struct {
    uint8_t ql[TR_QK_K / 2];
    uint8_t qh[TR_QK_K / 4];
    int8_t scales[TR_QK_K / 16];
    tr_fp16 d;
} tr_block_q6_K;
static_assert(sizeof(tr_block_q6_K) == 210, "Q6_K block is 210 bytes");

/* The activation format paired with the k-quants: float scale, bsums = sums of 16 q's. */
typedef struct {
    float d;
    int8_t qs[TR_QK_K];
    int16_t bsums[TR_QK_K / 16];
} tr_block_q8_K;
static_assert(sizeof(tr_block_q8_K) == 292, "Q8_K block is 292 bytes");

/* -------------------------------------------------------------- ternary */

/* Five trits per byte (base-3 fixed point) for 240 elements, four per byte for the last 16. */
typedef struct {
    uint8_t qs[(TR_QK_K - 4 * TR_QK_K / 64) / 5];
    uint8_t qh[TR_QK_K / 64];
    tr_fp16 d;
} tr_block_tq1_0;
static_assert(sizeof(tr_block_tq1_0) == 54, "TQ1_0 block is 54 bytes");

/* Four 2-bit trits (q + 1) per byte. */
typedef struct {
    uint8_t qs[TR_QK_K / 4];
    tr_fp16 d;
} tr_block_tq2_0;
static_assert(sizeof(tr_block_tq2_0) == 66, "TQ2_0 block is 66 bytes");

/* Trinity's ternary KV-cache entries (not a ggml type): x = d * (code - 1),
 * codes 0..2 in two bits; element j in bits 2*(j/8) of qs[j%8], so one
 * 64-bit load shifted by 0, 2, 4, 6 gives elements 0-7, 8-15, 16-23, 24-31.
 * Blocks of 32 (not TQ2_0's 256) so that a block never spans two heads of
 * 64 and d follows the data closely: 2.5 bits per element. */
#define TR_QK_TQ2_32 32
typedef struct {
    tr_fp16 d;
    uint8_t qs[TR_QK_TQ2_32 / 4];
} tr_block_tq2_32;
static_assert(sizeof(tr_block_tq2_32) == 10, "TQ2_32 block is 10 bytes");

/* ----------------------------------------------- non-linear 4-bit formats */

#define TR_QK4_NL 32
#define TR_QK_MXFP4 32

/* x = d * kvalues_iq4nl[q] */
typedef struct {
    tr_fp16 d;
    uint8_t qs[TR_QK4_NL / 2];
} tr_block_iq4_nl;
static_assert(sizeof(tr_block_iq4_nl) == 18, "IQ4_NL block is 18 bytes");

/* 8 sub-blocks of 32: x = d * (scale - 32) * kvalues_iq4nl[q], 6-bit scales
 * (low nibbles in scales_l, top two bits in scales_h at bit 2*j). */
typedef struct {
    tr_fp16 d;
    uint16_t scales_h;
    uint8_t scales_l[TR_QK_K / 64];
    uint8_t qs[TR_QK_K / 2];
} tr_block_iq4_xs;
static_assert(sizeof(tr_block_iq4_xs) == 136, "IQ4_XS block is 136 bytes");

/* x = 2^(e-128) * e2m1_doubled[q]: an E8M0 shared exponent and FP4 (E2M1) elements. */
typedef struct {
    uint8_t e;
    uint8_t qs[TR_QK_MXFP4 / 2];
} tr_block_mxfp4;
static_assert(sizeof(tr_block_mxfp4) == 17, "MXFP4 block is 17 bytes");

/* ------------------------------------------- half and bfloat16 scalars */

static inline uint32_t tr_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float tr_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Exact: every half (subnormals, infinities, NaN payloads) has a float. */
static inline float tr_fp16_to_fp32(tr_fp16 h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) return tr_bits_f32(sign | 0x7f800000u | (mant << 13)); /* inf / NaN */
    if (exp != 0) return tr_bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
    /* zero or subnormal: mant * 2^-24 is exact in float */
    const float v = (float)mant * 0x1p-24f;
    return sign ? -v : v;
}

/* Round to nearest even, overflow to infinity, subnormal halves kept, NaN
 * stays NaN (quieted, sign and top payload bits kept, as x86's F16C does). */
static inline tr_fp16 tr_fp32_to_fp16(float f) {
    const uint32_t u = tr_f32_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00 | ((a >> 13) & 0x3ff));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* >= 65520 rounds to inf */
    if (a >= 0x38800000u) {                                  /* normal half: >= 2^-14 */
        /* rebias the exponent, then round the 13 dropped bits to nearest even;
         * a carry out of the mantissa correctly bumps the exponent */
        const uint32_t r = a - ((uint32_t)112 << 23);
        const uint32_t h = (r + 0xfffu + ((r >> 13) & 1)) >> 13;
        return (uint16_t)(sign | h);
    }
    if (a < 0x33000000u) return sign; /* < 2^-25: rounds to zero (2^-25 itself ties to even 0) */
    /* subnormal half: value = m * 2^-24; shift the full 24-bit significand */
    const uint32_t e = a >> 23;            /* 102 .. 112 */
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;        /* 14 .. 24 */
    const uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    const uint32_t h = q + (rem > half || (rem == half && (q & 1)));
    return (uint16_t)(sign | h);
}

/* A half stored at p (little-endian, any alignment), as a float. */
static inline float tr_fp16_load(const void *p) {
    const uint8_t *b = (const uint8_t *)p;
    return tr_fp16_to_fp32((tr_fp16)(b[0] | (b[1] << 8)));
}

static inline float tr_bf16_to_fp32(tr_bf16 h) { return tr_bits_f32((uint32_t)h << 16); }

/* Round to nearest even; NaN stays NaN (quiet bit forced, as ggml does). */
static inline tr_bf16 tr_fp32_to_bf16(float f) {
    const uint32_t u = tr_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

#endif
