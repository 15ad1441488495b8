/* AVX-512 kernels for the k-quants Q2_K..Q6_K (TR_ISA_AVX512: F, BW, VL,
 * DQ, VNNI; see kernels.h for the shape they share). The ternary formats
 * are in matmul_avx512_ternary.c.
 *
 * One scheme for all five formats. A super-block's 256 weights are decoded
 * once (for up to 8 tokens of a tile) into four zmm of unsigned bytes, W_k
 * holding elements 64k .. 64k+63 in natural order, so each W_k meets the
 * activations of the same bytes (qs + 64k, a plain load folded into the
 * product). vpdpbusd then gives, per token and W_k, 16 int32 lanes D_k of
 * four products each, every lane inside one sub-block (Q4_K/Q5_K: lanes
 * 0-7 and 8-15 are sub-blocks 2k and 2k+1, 32 weights each; Q2_K/Q3_K/
 * Q6_K: each 128-bit lane is one sub-block of 16). Four products fit int16
 * (at most 4 * 63 * 127 = 32004 for Q6_K's 6-bit weights), so the scales
 * are applied to two D_k at once: vpackssdw (exact) interleaves them as
 * int16 per 128-bit lane, and vpmaddwd, then vpdpwssd for the second pair,
 * multiply by the scales and add neighbouring lanes of one sub-block: per
 * token 4 vpdpbusd + 2 vpackssdw + vpmaddwd + vpdpwssd, against AVX2's
 * 8 vpmaddubsw + folds + vpmaddwd. The scale vectors come from the
 * unpacked scales by one vpermw each, once per super-block.
 *
 * Offsets go through the activation sums: Q6_K's -32 and Q3_K's -4 as one
 * more vpdpwssd of the 16 bsums with -32 or -4 times the scales (in the
 * int32 lanes, exact), the mins of Q2_K/Q4_K/Q5_K (which carry their own
 * float scale dmin) as a vpmaddwd with the 16 sums (Q4_K/Q5_K: each min
 * twice), converted and subtracted in float from the low lanes. Per token
 * and super-block the float part is: lanes to float, times d of the
 * weights (a broadcast shared by the tile), the mins, and one fma by the
 * activations' scale into a zmm accumulator; the horizontal sum is done
 * once per row and token. Q4_K reads its activations' natural quants (qs):
 * the AVX2 tile order (qs4) mixes sub-blocks inside a 4-byte lane.
 *
 * Instructions executed (Bochs's Sapphire Rapids, tests/x86emu.py) per
 * super-block and token, 16 rows x 4096 columns, GCC 12 -O2, AVX2 kernels
 * -> these:        nt=1          nt=4
 *   Q4_K       99.0 -> 54.3   50.3 -> 29.1
 *   Q6_K      110.3 -> 53.8   57.0 -> 27.5
 *   Q5_K      216.5 -> 68.1   85.2 -> 32.6
 *   Q3_K      259.2 -> 68.4   93.7 -> 31.2
 *   Q2_K       76.6 -> 47.7   54.2 -> 28.1
 * Of a token's share, 16-18 are the products, scales and float part (the
 * four vpdpbusd start from a zeroed register each: eliminated moves on
 * current cores); the rest is the decoding shared by the tile.
 *
 * Batch invariance: a (row, token) result is the same sequence of
 * operations whatever the batch: the per-super-block body (*_sb) takes the
 * tile's tokens in a loop whose iterations are independent, the one-token
 * kernel calls the same body with one token, and the integer parts are
 * exact; only the decoded weights are shared. */
#include "avx512_common.h"

#ifdef TR_HAVE_AVX512_KERNELS

#define ACTK(j, b) ((const tr_q8k *)(a + (size_t)(j) * as) + (b))

/* The sums are read with one 64-byte load (their 32 bytes and what follows
 * in the block, multiplied by zero words): it must stay inside the block. */
_Static_assert(offsetof(tr_q8k, bsums) + 64 <= sizeof(tr_q8k), "tr_q8k: 64 bytes from bsums");
_Static_assert(offsetof(tr_q8kp, bsums) + 64 <= sizeof(tr_q8kp), "tr_q8kp: 64 bytes from bsums");
#define ACTKP(j, b) ((const tr_q8kp *)(a + (size_t)(j) * as) + (b))

TILE512 float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* A zmm whose 16-bit lanes are lo in the low 256 bits and hi in the high. */
TILE512 __m512i halves16(short lo, short hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(lo)), _mm256_set1_epi16(hi), 1);
}
TILE512 __m512i halves8(char lo, char hi) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi8(lo)), _mm256_set1_epi8(hi), 1);
}

/* 32 bytes at p in both 256-bit halves, shifted right per 16-bit word by
 * the counts of sh (one per half), masked with m: two fields of the same
 * bytes side by side (Q4_K's low nibbles then high nibbles, the 2-bit
 * fields of Q2_K/Q3_K). */
TILE512 __m512i fields2(const uint8_t *p, __m512i sh, __m512i m) {
    __m512i r = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_and_si512(_mm512_srlv_epi16(r, sh), m);
}

/* Adds `add` to the bytes of W whose bit is set in QH under sel (a high bit
 * of Q5_K/Q3_K: the bytes' low bits are clear there, so the add is an or). */
TILE512 __m512i add_high(__m512i W, __m512i QH, __m512i sel, __m512i add) {
    return _mm512_mask_add_epi8(W, _mm512_test_epi8_mask(QH, sel), W, add);
}

/* vpermw indexes: the int16 scale lanes for packs(D0, D1) and packs(D2,
 * D3). packs puts, per 128-bit lane l, the 4 dwords of lane l of the first
 * vector, then of the second, as words 8l .. 8l+7. */
#define REP4(a) a, a, a, a
/* Q4_K/Q5_K: lane l of D_k is sub-block 2k + l/2 (of 8). */
static const uint16_t k4_idx[2][32] __attribute__((aligned(64))) = {
    {REP4(0), REP4(2), REP4(0), REP4(2), REP4(1), REP4(3), REP4(1), REP4(3)},
    {REP4(4), REP4(6), REP4(4), REP4(6), REP4(5), REP4(7), REP4(5), REP4(7)},
};
/* Q2_K/Q3_K/Q6_K: lane l of D_k is sub-block 4k + l (of 16). */
static const uint16_t k16_idx[2][32] __attribute__((aligned(64))) = {
    {REP4(0), REP4(4), REP4(1), REP4(5), REP4(2), REP4(6), REP4(3), REP4(7)},
    {REP4(8), REP4(12), REP4(9), REP4(13), REP4(10), REP4(14), REP4(11), REP4(15)},
};

/* The two scale vectors from 16 int16 scales (words 0..15 of s16). */
TILE512 void scale_vectors(__m256i s16, const uint16_t idx[2][32], __m512i S[2]) {
    __m512i z = _mm512_castsi256_si512(s16); /* the indexes read words 0..15 only */
    S[0] = _mm512_permutexvar_epi16(_mm512_load_si512(idx[0]), z);
    S[1] = _mm512_permutexvar_epi16(_mm512_load_si512(idx[1]), z);
}

/* The scaled integer sums of one super-block and one token: W[k] against
 * the activations x + 64k, the scales S as built by scale_vectors. */
TILE512 __m512i k_scaled(const __m512i W[4], const int8_t *x, const __m512i S[2]) {
    __m512i D0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], _mm512_loadu_si512(x));
    __m512i D1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[1], _mm512_loadu_si512(x + 64));
    __m512i D2 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[2], _mm512_loadu_si512(x + 128));
    __m512i D3 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[3], _mm512_loadu_si512(x + 192));
    __m512i V = _mm512_madd_epi16(_mm512_packs_epi32(D0, D1), S[0]);
    return _mm512_dpwssd_epi32(V, _mm512_packs_epi32(D2, D3), S[1]);
}

/* The float part with mins: V the scaled sums, M the mins' products (4 or
 * 8 int32 in the low lanes, zero above), dw and dmin broadcast. */
TILE512 __m512 k_tail_mins(__m512 acc, __m512i V, __m512 Mf, __m512 dw, __m512 dmin, float xd) {
    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(V), dw);
    t = _mm512_fnmadd_ps(Mf, dmin, t);
    return _mm512_fmadd_ps(t, _mm512_set1_ps(xd), acc);
}

/* Without mins (offsets already in V). */
TILE512 __m512 k_tail(__m512 acc, __m512i V, __m512 dw, float xd) {
    return _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(V), dw), _mm512_set1_ps(xd), acc);
}

/* ---------------------------------------------------------------- Q4_K, Q5_K */

/* The 6-bit scales and mins of Q4_K/Q5_K's 8 sub-blocks from the 12
 * bytes at q (a 16-byte load: the block goes on), as bytes 0..7 (scales)
 * and 8..15 (mins). In dwords u0 u1 u2 of q the result is
 *   [u0 & 3f, (u2 & 0f) | ((u0 >> 2) & 30), u1 & 3f, ((u2 >> 4) & 0f) | ((u1 >> 2) & 30)]
 * per byte: the low parts come from [u0 u2 u1 u2] shifted by [0 0 0 4],
 * the high parts from [u0 u0 u1 u1] shifted by [32 2 32 2] (32: zero). */
TILE512 __m128i scales_k4(const uint8_t *q) {
    __m128i v = _mm_loadu_si128((const __m128i *)q);
    __m128i lo = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    __m128i hi = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), _mm_setr_epi32(32, 2, 32, 2));
    hi = _mm_and_si128(hi, _mm_set1_epi8(0x30));
    /* (lo & m) | hi, m = 3f in dwords 0 and 2, 0f in 1 and 3 */
    return _mm_ternarylogic_epi32(lo, hi, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f), 0xEC);
}

/* vpermw indexes: the mins (words 8..15 of the unpacked scales), each
 * twice, to pair with the 16 activation sums (the pairs of one sub-block). */
static const uint16_t k4_min_idx[32] __attribute__((aligned(64))) = {
    8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15,
};

/* Scales, mins and [d, dmin] of a Q4_K/Q5_K super-block: the mins as
 * int16 pairs for the 16 activation sums, zero in words 16..31 (a 64-byte
 * load from bsums reads on past the sums). */
TILE512 void k4_header(const uint8_t *w, __m512i S[2], __m512i *mins, __m512 *dw, __m512 *dmin) {
    __m256i s16 = _mm256_cvtepu8_epi16(scales_k4(w + 4));
    scale_vectors(s16, k4_idx, S);
    *mins = _mm512_maskz_permutexvar_epi16(0xffff, _mm512_load_si512(k4_min_idx), _mm512_castsi256_si512(s16));
    uint32_t u;
    memcpy(&u, w, 4);
    __m128 dwm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
    *dw = _mm512_broadcastss_ps(dwm);
    *dmin = _mm512_broadcastss_ps(_mm_movehdup_ps(dwm));
}

/* Q4_K (TR_ACT_Q8KP, read in natural order: qs): W_k is the low nibbles of
 * qs bytes 32k..32k+31 (sub-block 2k) then their high nibbles (2k+1). The
 * mins go in float against the activations' dsums (d * bsums): dmin times
 * each sub-block's min (exact: 6 bits by an fp16's 11) in the lanes of its
 * two sums, then one fused multiply-subtract per token, where the integer
 * route (a vpmaddwd against the sums, a conversion, a multiply-subtract)
 * took three. */
TILE512 void q4_k_sb(__m512 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m512i sh = halves16(0, 4), m4 = _mm512_set1_epi8(0x0f);
    __m512i S[2], W[4];
    __m512i mins;
    __m512 dw, dmin;
    k4_header(w, S, &mins, &dw, &dmin);
    const __m512 wm = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(mins))), dmin);
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) W[k] = fields2(w + 16 + 32 * k, sh, m4);
    FOR_T512(j) {
        const tr_q8kp *x = ACTKP(j, b);
        __m512i V = k_scaled(W, x->qs, S);
        acc[j] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(V), dw), _mm512_set1_ps(x->d), acc[j]);
        acc[j] = _mm512_fnmadd_ps(wm, _mm512_loadu_ps(x->dsums), acc[j]);
    }
}

/* Q5_K: Q4_K's nibbles plus a fifth bit, bit j of qh[i] for element i of
 * sub-block j: W_k takes bits 2k and 2k+1 (one per half). */
TILE512 void q5_k_sb(__m512 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m512i sh = halves16(0, 4), m4 = _mm512_set1_epi8(0x0f), b16 = _mm512_set1_epi8(0x10);
    __m512i S[2], W[4];
    __m512i mins;
    __m512 dw, dmin;
    k4_header(w, S, &mins, &dw, &dmin);
    __m512i QH = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 16)));
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
        W[k] = add_high(fields2(w + 48 + 32 * k, sh, m4), QH, halves8((char)(1 << 2 * k), (char)(1 << (2 * k + 1))), b16);
    FOR_T512(j) {
        const tr_q8k *x = ACTK(j, b);
        __m512i V = k_scaled(W, x->qs, S);
        __m512i M = _mm512_madd_epi16(mins, _mm512_loadu_si512(x->bsums));
        acc[j] = k_tail_mins(acc[j], V, _mm512_cvtepi32_ps(M), dw, dmin, x->d);
    }
}

/* ---------------------------------------------------------------- Q6_K, Q3_K, Q2_K */

/* The offset o of the quants (Q6_K: 32, Q3_K: 4) through the 16 activation
 * sums: V += sum_j (-o * sc_j) * bsums_j, as one vpdpwssd of a 64-byte load
 * from bsums (the sums, then d and the rest of the block: multiplied by the
 * zero words 16..31 of nsc). */
TILE512 __m512i k_offset(__m512i V, const tr_q8k *x, __m512i nsc) {
    return _mm512_dpwssd_epi32(V, nsc, _mm512_loadu_si512(x->bsums)); /* the load folds as the last operand */
}

/* Q6_K: 6-bit quants, 4 low bits in ql, 2 high in qh, minus 32; a signed
 * 8-bit scale per 16. Per half h, ql[64h..64h+63] holds elements
 * 128h + 0..63 in its low nibbles and 128h + 64..127 in its high ones;
 * qh[32h + l] has the high bits of elements 128h + 32g + l in bits 2g, 2g+1. */
TILE512 void q6_k_sb(__m512 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m512i shl = halves16(4, 2), shr = halves16(0, 2);
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
    __m512i S[2], W[4];
    scale_vectors(sc16, k16_idx, S);
    __m512i nsc = _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16, _mm256_set1_epi16(-32)));
    __m512 dw = _mm512_set1_ps(h2f(w + 208));
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m512i Z = _mm512_loadu_si512(w + 64 * h);
        __m512i QH = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h)));
        /* (A & C) | B: the masked nibbles and the high bits already in place */
        W[2 * h] = _mm512_ternarylogic_epi32(Z, _mm512_and_si512(_mm512_sllv_epi16(QH, shl), m30), m4, 0xEC);
        W[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(Z, 4),
                                                 _mm512_and_si512(_mm512_srlv_epi16(QH, shr), m30), m4, 0xEC);
    }
    FOR_T512(j) {
        const tr_q8k *x = ACTK(j, b);
        acc[j] = k_tail(acc[j], k_offset(k_scaled(W, x->qs, S), x, nsc), dw, x->d);
    }
}

/* Q3_K's 16 scales (6 bits, minus 32) from the 12 bytes at p, as int8.
 * They end the block (and the last block of a tensor may end its
 * mapping): the load takes the 4 bytes before them instead, so u0 u1 u2
 * are dwords 1 2 3. Dword k of the result is (low nibbles | 2-bit field k
 * of u2 << 4) - 32, the nibbles those of [u0 u1 u0 u1] shifted by
 * [0 0 4 4]. */
TILE512 __m128i scales_q3k(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)(p - 4));
    __m128i lo = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 1)), _mm_setr_epi32(0, 0, 4, 4));
    __m128i hi = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(3, 3, 3, 3)), _mm_setr_epi32(0, 2, 4, 6));
    hi = _mm_and_si128(_mm_slli_epi32(hi, 4), _mm_set1_epi8(0x30));
    /* (lo & 0f) | hi */
    return _mm_sub_epi8(_mm_ternarylogic_epi32(lo, hi, _mm_set1_epi8(0x0f), 0xEC), _mm_set1_epi8(32));
}

/* The 2-bit fields of Q2_K/Q3_K: element 128h + 32j + l is bits 2j, 2j+1
 * of q[32h + l], so W_k (elements 64k..) is fields j = 2(k&1), 2(k&1)+1
 * of the 32 bytes of half k/2. */
TILE512 void fields_2bit(const uint8_t *q, __m512i W[4]) {
    const __m512i m3 = _mm512_set1_epi8(3), sh02 = halves16(0, 2), sh46 = halves16(4, 6);
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) W[k] = fields2(q + 32 * (k >> 1), k & 1 ? sh46 : sh02, m3);
}

/* Q3_K: 2 low bits in qs, the third in hmask (bit 4h + j of hmask[l] for
 * element 128h + 32j + l; set: +0, clear: -4), used as low | high << 2 in
 * 0..7 with the -4 through the activation sums. */
TILE512 void q3_k_sb(__m512 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m512i four = _mm512_set1_epi8(4);
    __m256i sc16 = _mm256_cvtepi8_epi16(scales_q3k(w + 96));
    __m512i S[2], W[4];
    scale_vectors(sc16, k16_idx, S);
    __m512i nsc = _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16, _mm256_set1_epi16(-4)));
    __m512 dw = _mm512_set1_ps(h2f(w + 108));
    __m512i HM = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w));
    fields_2bit(w + 32, W);
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) W[k] = add_high(W[k], HM, halves8((char)(1 << 2 * k), (char)(1 << (2 * k + 1))), four);
    FOR_T512(j) {
        const tr_q8k *x = ACTK(j, b);
        acc[j] = k_tail(acc[j], k_offset(k_scaled(W, x->qs, S), x, nsc), dw, x->d);
    }
}

/* Q2_K: 2-bit quants, a 4-bit scale and a 4-bit min per 16 (the mins with
 * their own float scale dmin, against the 16 activation sums). */
TILE512 void q2_k_sb(__m512 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    __m256i sm = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)w));
    __m512i S[2], W[4];
    scale_vectors(_mm256_and_si256(sm, _mm256_set1_epi16(0x0f)), k16_idx, S);
    /* words 16..31 zero: a 64-byte load from bsums may read past the sums */
    __m512i mins = _mm512_zextsi256_si512(_mm256_srli_epi16(sm, 4));
    __m512 dw = _mm512_set1_ps(h2f(w + 80)), dmin = _mm512_set1_ps(h2f(w + 82));
    fields_2bit(w + 16, W);
    FOR_T512(j) {
        const tr_q8k *x = ACTK(j, b);
        __m512i V = k_scaled(W, x->qs, S);
        __m512i M = _mm512_madd_epi16(mins, _mm512_loadu_si512(x->bsums));
        acc[j] = k_tail_mins(acc[j], V, _mm512_cvtepi32_ps(M), dw, dmin, x->d);
    }
}

/* ---------------------------------------------------------------- kernels */

/* Both sums at once, for TR_GEMM_TWO_STREAMS. */
TILE512 void reduce2_ps(__m512 a0, __m512 a1, float out[2]) {
    out[0] = _mm512_reduce_add_ps(a0);
    out[1] = _mm512_reduce_add_ps(a1);
}

/* A row against NT <= TR_TILE_MAX (8) tokens, and the kernel: tokens in
 * tiles of eight (each decoded super-block shared by the tile: on a
 * Sapphire Rapids 10-13 % less time per block and token than tiles of four,
 * bench_matmul's hot kernel; 12 gained nothing more for Q4_K), rows outer so a weight row
 * is read from memory once; one token: kernels.h's TR_GEMM_TWO_STREAMS
 * (two rows at once from the two halves of the rows handed in), with the
 * same per-super-block body. */
#define GEMM_KQUANT5(name, sb, bytes, act_t)                                                             \
    TR_TILE_FROM_SB(name, sb, bytes, __m512, _mm512_setzero_ps(), _mm512_reduce_add_ps, act_t, TILE512)  \
    TR_GEMM_FROM_TILE_W(name##_tiles, name##_tile, TGT512, TR_TILE_MAX)                                  \
    TR_GEMM_TWO_STREAMS(name, name##_tiles, name##_block, bytes,                                         \
                        __m512, _mm512_setzero_ps(), reduce2_ps, act_t, TGT512)

GEMM_KQUANT5(gemm_q2_k, q2_k_sb, 84, tr_q8k)
GEMM_KQUANT5(gemm_q3_k, q3_k_sb, 110, tr_q8k)
GEMM_KQUANT5(gemm_q4_k, q4_k_sb, 144, tr_q8kp)
GEMM_KQUANT5(gemm_q5_k, q5_k_sb, 176, tr_q8k)
GEMM_KQUANT5(gemm_q6_k, q6_k_sb, 210, tr_q8k)

const tr_gemm_row tr_avx512_kquant_gemm_rows[] = {
    {TR_TYPE_Q2_K, TR_ACT_Q8K, gemm_q2_k},
    {TR_TYPE_Q3_K, TR_ACT_Q8K, gemm_q3_k},
    {TR_TYPE_Q4_K, TR_ACT_Q8KP, gemm_q4_k},
    {TR_TYPE_Q5_K, TR_ACT_Q8K, gemm_q5_k},
    {TR_TYPE_Q6_K, TR_ACT_Q8K, gemm_q6_k},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx512_kquant_gemm_rows[] = {{-1, 0, NULL}};
#endif
