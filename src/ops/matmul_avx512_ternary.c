/* AVX-512 ternary matmul kernels (TQ2_0, TQ1_0 against tr_q8k activations;
 * TR_ISA_AVX512, see kernels.h for the shape they share).
 *
 * Both formats become the same thing before any product: four vectors of 64
 * unsigned codes (the weights -1..1 plus one), vector i holding elements
 * 64i..64i+63, so each pairs with one plain 64-byte load of the
 * activations. A token's block is then one vpmaddwd that starts the int32
 * chain with minus the activation sums (the "plus one" of every code: the 16
 * bsums times -1) and four vpdpbusd (unsigned codes times signed
 * activations, 16 int32 lanes, no overflow: a lane adds 16 products of at
 * most 3 * 4 * 128 and two bsums); then one conversion, one multiply by the
 * weight scale and one FMA by the activation scale into 16 float lanes,
 * summed once per row. The codes are decoded once per block for all the
 * tokens of a call (tr_matmul's tiles, at most four).
 *
 * Batch invariance: a (row, token) result is one sequence, the same in the
 * one-token path and the tiles: per block the integer chain (exact), then
 * cvt, mul, fma on the token's 16 lanes in block order, then one fixed tree
 * of lane-wise adds (sum4) that never mixes tokens or rows. Nothing depends
 * on which rows or tokens share the call. */
#include "avx512_common.h"

#ifdef TR_HAVE_AVX512_KERNELS

/* 16-bit lanes: the low 16 set to lo, the high 16 to hi. */
#define LANES16(v) ((long long)((unsigned long long)(v) * 0x0001000100010001ULL))
#define HALVES16(lo, hi)                                                                                            \
    _mm512_set_epi64(LANES16(hi), LANES16(hi), LANES16(hi), LANES16(hi), LANES16(lo), LANES16(lo), LANES16(lo),     \
                     LANES16(lo))

/* The fp16 scale at p in all 16 lanes. */
TILE512 __m512 scale16(const uint8_t *p) {
    short h;
    memcpy(&h, p, 2);
    return _mm512_cvtph_ps(_mm256_set1_epi16(h));
}

/* One token's block: codes c[0..3] against the activations x, added to acc.
 * dw is the weight scale per int32 lane. */
TILE512 __m512 token_block(__m512 acc, const __m512i c[4], const tr_q8k *x, __m512 dw) {
    /* 64 bytes from bsums: the 16 sums times -1, then d, bsums32 and the
     * padding (inside the block) times 0 */
    const __m512i minus_sums = HALVES16(0xffff, 0);
    __m512i s = _mm512_madd_epi16(minus_sums, _mm512_loadu_si512(x->bsums));
    s = _mm512_dpbusd_epi32(s, c[0], _mm512_loadu_si512(x->qs));
    s = _mm512_dpbusd_epi32(s, c[1], _mm512_loadu_si512(x->qs + 64));
    s = _mm512_dpbusd_epi32(s, c[2], _mm512_loadu_si512(x->qs + 128));
    s = _mm512_dpbusd_epi32(s, c[3], _mm512_loadu_si512(x->qs + 192));
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), dw), _mm512_set1_ps(x->d), acc);
}

/* The sums of a0..a3's 16 lanes, in lanes 0..3, each by the same tree: lane
 * k + lane k+8, then + (k+4), then + (k+2), then + (k+1). Every step adds
 * within one input's lanes, so a sum does not depend on its neighbours. */
TILE512 __m128 sum4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m512 u01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xee));
    __m512 u23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xee));
    __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(u01, u23, 0x88), _mm512_shuffle_f32x4(u01, u23, 0xdd));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4e));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xb1));
    const __m512i lane0s = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(lane0s, v));
}

/* ---------------------------------------------------------------- TQ2_0 */

/* Byte m of the 32-byte half h holds elements 128h + 32l + m in bits 2l
 * (matmul_ref.c): elements 64i..64i+63 are fields 2(i%2) and 2(i%2)+1 of
 * half i/2. The half is broadcast to both 256-bit halves of a vector,
 * shifted right by 4(i%2) (16-bit lanes: the high byte's bits enter the low
 * byte only above bit 3) and masked with 0x03 in the low half, 0x0c in the
 * high: the high half's codes come out times 4, and so do the high 8
 * lanes of a row's float sums, until tq2_0_unscale divides them by 4 once
 * at the end of the row (a power of two: the same as scaling each term). */
TILE512 void tq2_0_codes(const uint8_t *w, __m512i c[4]) {
    const __m512i m = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0c), 1);
    __m512i h0 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w));
    __m512i h1 = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 32)));
    c[0] = _mm512_and_si512(h0, m);
    c[1] = _mm512_and_si512(_mm512_srli_epi16(h0, 4), m);
    c[2] = _mm512_and_si512(h1, m);
    c[3] = _mm512_and_si512(_mm512_srli_epi16(h1, 4), m);
}
TILE512 __m512 tq2_0_unscale(__m512 acc) {
    return _mm512_mul_ps(acc, _mm512_insertf32x8(_mm512_set1_ps(1.0f), _mm256_set1_ps(0.25f), 1));
}
enum { tq2_0_bytes = sizeof(tr_block_tq2_0), tq2_0_d = offsetof(tr_block_tq2_0, d) };

/* ---------------------------------------------------------------- TQ1_0 */

/* Five trits a byte in base 3 (matmul_ref.c): trit k of byte b is 0, 1 or 2
 * as q = b * 3^k mod 256 is at most 85, at most 170, or above. The bytes are
 * first placed where their elements go, then multiplied by their powers of
 * 3, then compared:
 *   elements   0..63   qs[0..31] times 1 | times 3
 *   elements  64..127  qs[0..31] times 9 | times 27
 *   elements 128..191  qs[0..31] times 81 | qs[32..47] times 1, times 3
 *   elements 192..255  qs[32..47] times 9, 27, 81 | qh[0..3] times 1, 3, 9, 27 */
TILE512 __m512i tq1_trits(__m512i q) {
    __mmask64 gt85 = _mm512_cmpgt_epu8_mask(q, _mm512_set1_epi8(85));
    __mmask64 gt170 = _mm512_cmpgt_epu8_mask(q, _mm512_set1_epi8((char)170));
    return _mm512_mask_mov_epi8(_mm512_maskz_mov_epi8(gt85, _mm512_set1_epi8(1)), gt170, _mm512_set1_epi8(2));
}

TILE512 __m512i times3(__m512i q) { return _mm512_add_epi8(q, _mm512_add_epi8(q, q)); }

/* Bytes times a multiplier per 16-bit lane (both bytes of a lane alike), mod
 * 256: vpmullw gives the low byte of each lane; the high byte's product
 * comes from the lane with its low byte cleared (no carry into it). */
TILE512 __m512i mul_bytes(__m512i v, __m512i m) {
    __m512i lo = _mm512_mullo_epi16(v, m);
    __m512i hi = _mm512_mullo_epi16(_mm512_and_si512(v, _mm512_set1_epi16((short)0xff00)), m);
    return _mm512_mask_blend_epi8(0xaaaaaaaaaaaaaaaaULL, lo, hi);
}

TILE512 void tq1_0_codes(const uint8_t *w, __m512i c[4]) {
    __m512i a = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w)); /* qs[0..31] twice */
    __m128i b = _mm_loadu_si128((const __m128i *)(w + 32));                      /* qs[32..47] */
    int e;
    memcpy(&e, w + 48, 4); /* qh[0..3] */
    __m512i a13 = _mm512_add_epi8(a, _mm512_maskz_add_epi8(0xffffffff00000000ULL, a, a)); /* a | 3a */
    __m512i ab = _mm512_inserti64x4(a, _mm256_broadcastsi128_si256(b), 1);
    __m512i be = _mm512_inserti32x4(_mm512_broadcast_i32x4(b), _mm_set1_epi32(e), 3);
    /* per 16-bit lane, element 0 first: the powers of ab's and be's bytes */
    const __m512i p2 = _mm512_set_epi64(LANES16(3), LANES16(3), LANES16(1), LANES16(1), LANES16(81), LANES16(81),
                                        LANES16(81), LANES16(81));
    const __m512i p3 = _mm512_set_epi64(0x001b001b00090009LL, 0x0003000300010001LL, LANES16(81), LANES16(81),
                                        LANES16(27), LANES16(27), LANES16(9), LANES16(9));
    c[0] = tq1_trits(a13);
    c[1] = tq1_trits(times3(times3(a13)));
    c[2] = tq1_trits(mul_bytes(ab, p2));
    c[3] = tq1_trits(mul_bytes(be, p3));
}
TILE512 __m512 tq1_0_unscale(__m512 acc) { return acc; }
enum { tq1_0_bytes = sizeof(tr_block_tq1_0), tq1_0_d = offsetof(tr_block_tq1_0, d) };

/* ---------------------------------------------------------------- the kernels */

/* A tile: weight row w against NT <= 4 tokens, each block decoded once;
 * token j's result to y[j * ys]. */
#define TERNARY_TILE(fmt)                                                                                           \
    TILE512 void fmt##_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *y, size_t ys) {   \
        __m512 acc[4];                                                                                              \
        FOR_T512(j) acc[j] = _mm512_setzero_ps();                                                                   \
        for (int64_t b = 0; b < n / 256; b++, w += fmt##_bytes) {                                                   \
            __m512i c[4];                                                                                           \
            fmt##_codes(w, c);                                                                                      \
            __m512 dw = scale16(w + fmt##_d);                                                                       \
            FOR_T512(j) acc[j] = token_block(acc[j], c, (const tr_q8k *)(a + (size_t)j * as) + b, dw);              \
        }                                                                                                           \
        float out[4];                                                                                               \
        FOR_T512(j) acc[j] = fmt##_unscale(acc[j]);                                                                 \
        _mm_storeu_ps(out, sum4(acc[0], acc[NT > 1], acc[NT > 2 ? 2 : 0], acc[NT > 3 ? 3 : 0]));                    \
        FOR_T512(j) y[(size_t)j * ys] = out[j];                                                                     \
    }

/* One token's block: the codes decoded, then token_block (for the
 * one-token streams). */
#define TERNARY_BLOCK(fmt)                                                                                          \
    TILE512 __m512 fmt##_block(__m512 acc, const uint8_t *w, const tr_q8k *x) {                                     \
        __m512i c[4];                                                                                               \
        fmt##_codes(w, c);                                                                                          \
        return token_block(acc, c, x, scale16(w + fmt##_d));                                                        \
    }                                                                                                               \
    /* two rows' results by the tiles' tree (sum4) */                                                               \
    TILE512 void fmt##_sum2(__m512 acc0, __m512 acc1, float out[2]) {                                               \
        float o[4];                                                                                                 \
        acc0 = fmt##_unscale(acc0);                                                                                 \
        acc1 = fmt##_unscale(acc1);                                                                                 \
        _mm_storeu_ps(o, sum4(acc0, acc1, acc0, acc1));                                                             \
        out[0] = o[0];                                                                                              \
        out[1] = o[1];                                                                                              \
    }

/* Several tokens: the tokens in tiles of four outer, the rows inner, so a
 * tile's activations stay in L1 (kernels.h's TR_GEMM_FROM_TILE). One token
 * (generation): kernels.h's TR_GEMM_STREAMS, TR_STREAMS rows at once from as
 * many stretches of the rows handed in. */
#define TERNARY_GEMM(fmt)                                                                                           \
    TERNARY_TILE(fmt)                                                                                               \
    TERNARY_BLOCK(fmt)                                                                                              \
    TILE512 void gemm_##fmt##_tiles(int64_t n, const void *w_, size_t ws, int nr, const void *a_, size_t as,        \
                                    int nt, float *y, size_t ys) {                                                  \
        const uint8_t *w = w_;                                                                                      \
        const char *a = a_;                                                                                         \
        for (int t = 0; t < nt; t += 4) {                                                                           \
            for (int r = 0; r < nr; r++) {                                                                          \
                const uint8_t *wr = w + (size_t)r * ws;                                                             \
                const char *at = a + (size_t)t * as;                                                                \
                float *yt = y + (size_t)t * ys + r;                                                                 \
                switch (nt - t < 4 ? nt - t : 4) {                                                                  \
                case 4: fmt##_tile(n, wr, at, as, 4, yt, ys); break;                                                \
                case 3: fmt##_tile(n, wr, at, as, 3, yt, ys); break;                                                \
                case 2: fmt##_tile(n, wr, at, as, 2, yt, ys); break;                                                \
                default: fmt##_tile(n, wr, at, as, 1, yt, ys); break;                                               \
                }                                                                                                   \
            }                                                                                                       \
        }                                                                                                           \
    }                                                                                                               \
    TR_GEMM_STREAMS(gemm_##fmt, gemm_##fmt##_tiles, fmt##_block, fmt##_bytes, __m512, _mm512_setzero_ps(),          \
                    fmt##_sum2, tr_q8k, TGT512)

TERNARY_GEMM(tq2_0)
TERNARY_GEMM(tq1_0)

const tr_gemm_row tr_avx512_ternary_gemm_rows[] = {
    {TR_TYPE_TQ1_0, TR_ACT_Q8K, gemm_tq1_0},
    {TR_TYPE_TQ2_0, TR_ACT_Q8K, gemm_tq2_0},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx512_ternary_gemm_rows[] = {{-1, 0, NULL}};
#endif
