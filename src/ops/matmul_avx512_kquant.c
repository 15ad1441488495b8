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
#include "amx_common.h"

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

/* The 256 weights of a Q4_K / Q5_K / Q6_K super-block at w as four zmm of
 * unsigned bytes, W_k elements 64k .. 64k + 63 (formats below). */
TILE512 void q4_k_weights(const uint8_t *w, __m512i W[4]) {
    const __m512i sh = halves16(0, 4), m4 = _mm512_set1_epi8(0x0f);
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) W[k] = fields2(w + 16 + 32 * k, sh, m4);
}
TILE512 void q5_k_weights(const uint8_t *w, __m512i W[4]) {
    const __m512i sh = halves16(0, 4), m4 = _mm512_set1_epi8(0x0f), b16 = _mm512_set1_epi8(0x10);
    __m512i QH = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 16)));
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
        W[k] = add_high(fields2(w + 48 + 32 * k, sh, m4), QH, halves8((char)(1 << 2 * k), (char)(1 << (2 * k + 1))), b16);
}
TILE512 void q6_k_weights(const uint8_t *w, __m512i W[4]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m512i shl = halves16(4, 2), shr = halves16(0, 2);
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m512i Z = _mm512_loadu_si512(w + 64 * h);
        __m512i QH = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h)));
        /* (A & C) | B: the masked nibbles and the high bits already in place */
        W[2 * h] = _mm512_ternarylogic_epi32(Z, _mm512_and_si512(_mm512_sllv_epi16(QH, shl), m30), m4, 0xEC);
        W[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(Z, 4),
                                                 _mm512_and_si512(_mm512_srlv_epi16(QH, shr), m30), m4, 0xEC);
    }
}

/* Q4_K (TR_ACT_Q8KP, read in natural order: qs): W_k is the low nibbles of
 * qs bytes 32k..32k+31 (sub-block 2k) then their high nibbles (2k+1). The
 * mins go in float against the activations' dsums (d * bsums): dmin times
 * each sub-block's min (exact: 6 bits by an fp16's 11) in the lanes of its
 * two sums, then one fused multiply-subtract per token, where the integer
 * route (a vpmaddwd against the sums, a conversion, a multiply-subtract)
 * took three. */
TILE512 void q4_k_sb(__m512 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    __m512i S[2], W[4];
    __m512i mins;
    __m512 dw, dmin;
    k4_header(w, S, &mins, &dw, &dmin);
    const __m512 wm = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(mins))), dmin);
    q4_k_weights(w, W);
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
    __m512i S[2], W[4];
    __m512i mins;
    __m512 dw, dmin;
    k4_header(w, S, &mins, &dw, &dmin);
    q5_k_weights(w, W);
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
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
    __m512i S[2], W[4];
    scale_vectors(sc16, k16_idx, S);
    __m512i nsc = _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16, _mm256_set1_epi16(-32)));
    __m512 dw = _mm512_set1_ps(h2f(w + 208));
    q6_k_weights(w, W);
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

/* Both sums at once, for TR_GEMM_STREAMS. */
TILE512 void reduce2_ps(__m512 a0, __m512 a1, float out[2]) {
    out[0] = _mm512_reduce_add_ps(a0);
    out[1] = _mm512_reduce_add_ps(a1);
}

/* A row against NT <= TR_TILE_MAX (8) tokens, and the kernel: tokens in
 * tiles of eight (each decoded super-block shared by the tile: on a
 * Sapphire Rapids 10-13 % less time per block and token than tiles of four,
 * bench_matmul's hot kernel; 12 gained nothing more for Q4_K), rows outer so a weight row
 * is read from memory once; one token: kernels.h's TR_GEMM_STREAMS
 * (TR_STREAMS rows at once from as many stretches of the rows handed in), with the
 * same per-super-block body. */
#define GEMM_KQUANT5(name, sb, bytes, act_t)                                                             \
    TR_TILE_FROM_SB(name, sb, bytes, __m512, _mm512_setzero_ps(), _mm512_reduce_add_ps, act_t, TILE512)  \
    TR_GEMM_FROM_TILE_W(name##_tiles, name##_tile, TGT512, TR_TILE_MAX)                                  \
    TR_GEMM_STREAMS(name, name##_tiles, name##_block, bytes,                                             \
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

/* ---------------------------------------------------------------- AMX tier: Q4_K, Q5_K, Q6_K */

/* TR_ISA_AMX: the AVX-512 tier plus Intel's tile unit (AMX-TILE, AMX-INT8;
 * Sapphire Rapids and later Xeons). Here the k-quants most files are made
 * of; the legacy formats in matmul_amx_legacy.c, the shared pieces in
 * amx_common.h; every other type takes the AVX-512 kernel.
 *
 * A tdpbusd multiplies 16 weight rows (64 unsigned bytes each) by 16 tokens
 * (64 signed activation bytes each, transposed into the 4-byte groups the
 * unit wants) into 256 exact int32 sums. The sub-block scales are integers,
 * so they go into the weight bytes (split in parts small enough that a
 * quant times a part stays a byte, below), and a whole super-block is one
 * chain of four 64-deep products per part: the vector ports only combine
 * the parts, take the mins or offsets through the activation sums, and do
 * the float step, 16 tokens a zmm. Per call: up to 64 rows x 128 tokens;
 * per super-block the activations are transposed once for all rows and the
 * weights decoded and scaled once for all tokens.
 *
 * Batch invariance fixes the arithmetic: a token alone (generation) or in a
 * group of a few goes through the vector kernels below, so both must compute
 * the same floats. The tier's definition for Q4_K/Q5_K, per row, token and
 * super-block (Q6_K's after its tile kernel):
 *   isum = sum_j sc_j * dot_j   (exact int32; dot_j over sub-block j)
 *   imin = sum_j m_j * bsums32_j (exact int32)
 *   t = float(isum) * d;  t = t - float(imin) * dmin (fused);  acc = t * xd + acc (fused)
 * from acc = 0, the result acc. Integers are exact whatever order they are
 * summed in, and the float operations are the same instructions in both
 * kernels (lanes of a zmm there, lane 0 of an xmm here). It is not the
 * AVX-512 tier's order (that one keeps 16 float lanes per row), which is as
 * valid a rounding; tiers may differ from each other, a tier may not
 * differ from itself. */
/* The tier's float step on one lane (lane 0). */
TILE512 __m128 q4kx_tail(__m128 acc, __m128 isum, __m128 imin, __m128 dw, __m128 dmin, float xd) {
    __m128 t = _mm_mul_ss(isum, dw);
    t = _mm_fnmadd_ss(imin, dmin, t);
    return _mm_fmadd_ss(t, _mm_set_ss(xd), acc);
}

/* The tier's step for one token from q4_k_sb's / q5_k_sb's int32 lanes: the
 * scaled sums V (16 lanes) and the mins' products M (sub-block j's in dword
 * j) reduced to one int32 each (V folded to 8 lanes beside the 8 of M, then
 * both halves folded at once), then q4kx_tail. */
TILE512 __m128 k45x_step(__m128 acc, __m512i V, __m512i M, __m512 dw, __m512 dmin, float xd) {
    __m256i v8 = _mm256_add_epi32(_mm512_castsi512_si256(V), _mm512_extracti64x4_epi64(V, 1));
    __m512i R = _mm512_inserti64x4(_mm512_castsi256_si512(v8), _mm512_castsi512_si256(M), 1);
    R = _mm512_add_epi32(R, _mm512_shuffle_i64x2(R, R, _MM_SHUFFLE(2, 3, 0, 1)));
    R = _mm512_add_epi32(R, _mm512_shuffle_epi32(R, _MM_SHUFFLE(1, 0, 3, 2)));
    R = _mm512_add_epi32(R, _mm512_shuffle_epi32(R, _MM_SHUFFLE(2, 3, 0, 1)));
    __m512 F = _mm512_cvtepi32_ps(R); /* lane 0: isum, lane 8: imin */
    return q4kx_tail(acc, _mm512_castps512_ps128(F), _mm512_extractf32x4_ps(F, 2), _mm512_castps512_ps128(dw),
                     _mm512_castps512_ps128(dmin), xd);
}

/* The vector kernel of the tier for Q4_K (five = 0, TR_ACT_Q8KP) and Q5_K
 * (five = 1, TR_ACT_Q8K): q4_k_sb's / q5_k_sb's products, then k45x_step
 * per token. */
TILE512 void k45x_sb(__m128 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT, const int five) {
    __m512i S[2], W[4];
    __m512i mins;
    __m512 dw, dmin;
    k4_header(w, S, &mins, &dw, &dmin);
    if (five)
        q5_k_weights(w, W);
    else
        q4_k_weights(w, W);
    FOR_T512(j) {
        const int8_t *qs = five ? ACTK(j, b)->qs : ACTKP(j, b)->qs;
        const int16_t *bsums = five ? ACTK(j, b)->bsums : ACTKP(j, b)->bsums;
        const float xd = five ? ACTK(j, b)->d : ACTKP(j, b)->d;
        acc[j] = k45x_step(acc[j], k_scaled(W, qs, S), _mm512_madd_epi16(mins, _mm512_loadu_si512(bsums)), dw, dmin,
                           xd);
    }
}

TILE512 void first2_ss(__m128 a0, __m128 a1, float out[2]) {
    out[0] = _mm_cvtss_f32(a0);
    out[1] = _mm_cvtss_f32(a1);
}

TR_TILE_FROM_SB(q4kx, k45x_sb, 144, __m128, _mm_setzero_ps(), _mm_cvtss_f32, tr_q8kp, TILE512, 0)
TR_GEMM_FROM_TILE_W(q4kx_tiles, q4kx_tile, TGT512, TR_TILE_MAX)
TR_GEMM_STREAMS(q4kx_vec, q4kx_tiles, q4kx_block, 144, __m128, _mm_setzero_ps(), first2_ss, tr_q8kp, TGT512)
TR_TILE_FROM_SB(q5kx, k45x_sb, 176, __m128, _mm_setzero_ps(), _mm_cvtss_f32, tr_q8k, TILE512, 1)
TR_GEMM_FROM_TILE_W(q5kx_tiles, q5kx_tile, TGT512, TR_TILE_MAX)
TR_GEMM_STREAMS(q5kx_vec, q5kx_tiles, q5kx_block, 176, __m128, _mm_setzero_ps(), first2_ss, tr_q8k, TGT512)

/* vpermw indexes: the scale of each word of W_k (elements 64k..64k+63:
 * sub-blocks 2k and 2k+1, 16 words each), from the 8 unpacked scales. */
static const uint16_t amx_scale_idx[4][32] __attribute__((aligned(64))) = {
#define I16(v) v, v, v, v, v, v, v, v, v, v, v, v, v, v, v, v
    {I16(0), I16(1)},
    {I16(2), I16(3)},
    {I16(4), I16(5)},
    {I16(6), I16(7)},
#undef I16
};

/* Tile numbers are literals (GCC pastes them into the instruction). Chunk
 * c of a super-block (64 of its bytes: two sub-blocks) of weight rows
 * (low and high scale parts) and of activations. */
#define AMX_LOAD_W(c)                                                    \
    do {                                                                 \
        _tile_loadd(4, Alo[0] + 64 * (c), 256);                          \
        _tile_loadd(5, Ahi[0] + 64 * (c), 256);                          \
    } while (0)

/* Group g (tokens 16g .. 16g + 15; those past nt zero) of super-block b
 * of k-quant activations (blocks of blk bytes: quants at qs, the float
 * scale at d, int16 sums at sums, of which npairs pairs): the quants
 * transposed for the tile unit (B[sub-block]), the scales, and the sums as
 * one int32 pair per token and p (P[p], for vpmaddwd). */
TILE512 void amx_k_group(const char *a, size_t as, int64_t b, int g, int nt, size_t blk, size_t qs, size_t d,
                         size_t sums, int npairs, int8_t B[8][8][64], float xd[16], int32_t P[][16]) {
    static const int8_t zero_qs[256] __attribute__((aligned(64)));
    const int8_t *q[16];
    for (int i = 0; i < 16; i++) {
        int t = 16 * g + i;
        if (t < nt) {
            const char *x = a + (size_t)t * as + (size_t)b * blk;
            q[i] = (const int8_t *)(x + qs);
            memcpy(&xd[i], x + d, sizeof(float));
            for (int p = 0; p < npairs; p++) memcpy(&P[p][i], x + sums + 4 * p, 4);
        } else {
            q[i] = zero_qs;
            xd[i] = 0;
            for (int p = 0; p < npairs; p++) P[p][i] = 0;
        }
    }
    for (int j = 0; j < 8; j++) amx_transpose(q, 32 * j, B[j]);
}

/* Q4_K (five = 0) or Q5_K (five = 1): nr <= AMX_ROWS rows against nt <=
 * TR_AMX_TOKENS tokens.
 *
 * Rather than one product per sub-block (whose int32 results would each
 * need a store and a multiply by the scale), the scales go into the weights:
 * sc = lo + 16 hi (Q4_K: lo 0..15, hi 0..3; Q5_K's 5-bit quants: sc = lo +
 * 8 hi, both 0..7), and the weight bytes q * lo and q * hi (at most 225,
 * 217) stay unsigned bytes, so two chains of four full products (64 bytes
 * deep) give sum_j lo_j dot_j and sum_j hi_j dot_j for the whole
 * super-block: isum = low + 16 (8) high, exact, two stores. */
TGTAMX static inline __attribute__((always_inline)) void k45_amx_block(int64_t n, const uint8_t *w, size_t ws, int nr,
                                                                       const char *a, size_t as, int nt, float *y,
                                                                       size_t ys, const int five) {
    const int bytes = five ? 176 : 144, split = five ? 3 : 4;
    enum { G = TR_AMX_TOKENS / 16 };
    const int ng = (nt + 15) / 16, nrg = (nr + 15) / 16;
    float acc[AMX_ROWS][TR_AMX_TOKENS] __attribute__((aligned(64)));
    int8_t B[G][8][8][64] __attribute__((aligned(64))); /* [group][sub-block][row][16 tokens x 4 bytes] */
    int32_t P[G][4][16] __attribute__((aligned(64)));   /* bsums32 pairs 2p, 2p+1 of each token */
    float xd[G][16] __attribute__((aligned(64)));
    uint8_t Alo[16][256] __attribute__((aligned(64))), Ahi[16][256] __attribute__((aligned(64)));
    int32_t mp[16][4];
    float dw[16], dmin[16];
    int32_t C[G / 2][2][2][16][16] __attribute__((aligned(64))); /* [pair][group of the pair][low, high][row][token] */
    for (int r = 0; r < nrg * 16; r++) memset(acc[r], 0, sizeof(float) * 16 * (size_t)ng);

    amx_config_full();
    const __m512i lo_mask = _mm512_set1_epi16((short)((1 << split) - 1));
    const __m512i sidx0 = _mm512_load_si512(amx_scale_idx[0]), sidx1 = _mm512_load_si512(amx_scale_idx[1]);
    const __m512i sidx2 = _mm512_load_si512(amx_scale_idx[2]), sidx3 = _mm512_load_si512(amx_scale_idx[3]);
    for (int64_t b = 0; b < n / 256; b++) {
        for (int g = 0; g < ng; g++)
            if (five)
                amx_k_group(a, as, b, g, nt, sizeof(tr_q8k), offsetof(tr_q8k, qs), offsetof(tr_q8k, d),
                            offsetof(tr_q8k, bsums32), 4, B[g], xd[g], P[g]);
            else
                amx_k_group(a, as, b, g, nt, sizeof(tr_q8kp), offsetof(tr_q8kp, qs), offsetof(tr_q8kp, d),
                            offsetof(tr_q8kp, bsums32), 4, B[g], xd[g], P[g]);
        for (int rg = 0; rg < nrg; rg++) {
            for (int r = 0; r < 16; r++) {
                int row = 16 * rg + r;
                if (row >= nr) {
                    memset(Alo[r], 0, sizeof Alo[r]), memset(Ahi[r], 0, sizeof Ahi[r]);
                    memset(mp[r], 0, sizeof mp[r]);
                    dw[r] = dmin[r] = 0;
                    continue;
                }
                const uint8_t *wb = w + (size_t)row * ws + (size_t)b * bytes;
                if (b + AMX_AHEAD < n / 256) /* 64 rows read side by side: more streams than the prefetchers follow */
                    _Pragma("GCC unroll 3") for (int l = 0; l < bytes; l += 64)
                        _mm_prefetch((const char *)wb + AMX_AHEAD * bytes + l, _MM_HINT_T0);
                __m128i s = scales_k4(wb + 4);
                __m512i s16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(s)); /* words 0..7 scales, 8..15 mins */
                _mm_storeu_si128((__m128i *)mp[r], _mm_cvtepu8_epi16(_mm_srli_si128(s, 8)));
                dw[r] = h2f(wb), dmin[r] = h2f(wb + 2);
                /* W_k: elements 64k .. 64k + 63 (q4_k_sb's and q5_k_sb's decoding) */
                __m512i Q[4];
                if (five)
                    q5_k_weights(wb, Q);
                else
                    q4_k_weights(wb, Q);
                __m512i S[4] = {_mm512_permutexvar_epi16(sidx0, s16), _mm512_permutexvar_epi16(sidx1, s16),
                                _mm512_permutexvar_epi16(sidx2, s16), _mm512_permutexvar_epi16(sidx3, s16)};
                /* both bytes of a word times the word's scale part: two products of at most 225, no carry */
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                    _mm512_store_si512(Alo[r] + 64 * k, _mm512_mullo_epi16(Q[k], _mm512_and_si512(S[k], lo_mask)));
                    _mm512_store_si512(Ahi[r] + 64 * k, _mm512_mullo_epi16(Q[k], _mm512_srli_epi16(S[k], split)));
                }
            }
            __asm__ volatile("" ::: "memory"); /* GCC's tile loads do not tell it they read A and B */
            /* every product first, then the scales and float steps: the tile
             * unit works on the later groups while the vector ports finish
             * the first ones (their loads wait only for their own stores) */
            for (int g = 0; g < ng; g += 2) {
                int32_t(*Cp)[2][16][16] = C[g / 2];
                _tile_zero(0);
                _tile_zero(1);
                if (g + 1 < ng) {
                    _tile_zero(2);
                    _tile_zero(3);
                    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
                        AMX_LOAD_W(c);
                        _tile_loadd(6, B[g][2 * c], 64);
                        _tile_loadd(7, B[g + 1][2 * c], 64);
                        _tile_dpbusd(0, 4, 6);
                        _tile_dpbusd(1, 5, 6);
                        _tile_dpbusd(2, 4, 7);
                        _tile_dpbusd(3, 5, 7);
                    }
                    _tile_stored(2, Cp[1][0], 64);
                    _tile_stored(3, Cp[1][1], 64);
                } else {
                    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
                        AMX_LOAD_W(c);
                        _tile_loadd(6, B[g][2 * c], 64);
                        _tile_dpbusd(0, 4, 6);
                        _tile_dpbusd(1, 5, 6);
                    }
                }
                _tile_stored(0, Cp[0][0], 64);
                _tile_stored(1, Cp[0][1], 64);
            }
            for (int g = 0; g < ng; g++) {
                int32_t(*Cg)[16][16] = C[g / 2][g % 2];
                const __m512 xv = _mm512_load_ps(xd[g]);
                const __m512i P0 = _mm512_load_si512(P[g][0]), P1 = _mm512_load_si512(P[g][1]);
                const __m512i P2 = _mm512_load_si512(P[g][2]), P3 = _mm512_load_si512(P[g][3]);
                for (int r = 0; r < 16; r++) {
                    __m512i is = _mm512_add_epi32(_mm512_load_si512(Cg[0][r]),
                                                  _mm512_slli_epi32(_mm512_load_si512(Cg[1][r]), split));
                    __m512i im = _mm512_madd_epi16(P0, _mm512_set1_epi32(mp[r][0]));
                    im = _mm512_dpwssd_epi32(im, P1, _mm512_set1_epi32(mp[r][1]));
                    im = _mm512_dpwssd_epi32(im, P2, _mm512_set1_epi32(mp[r][2]));
                    im = _mm512_dpwssd_epi32(im, P3, _mm512_set1_epi32(mp[r][3]));
                    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(dw[r]));
                    t = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(im), _mm512_set1_ps(dmin[r]), t);
                    float *ap = &acc[16 * rg + r][16 * g];
                    _mm512_store_ps(ap, _mm512_fmadd_ps(t, xv, _mm512_load_ps(ap)));
                }
            }
        }
    }
    _tile_release();
    amx_store(acc, nr, nt, y, ys);
}

TGTAMX static void q4_k_amx_block(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a, size_t as, int nt,
                                  float *y, size_t ys) {
    k45_amx_block(n, w, ws, nr, a, as, nt, y, ys, 0);
}
TGTAMX static void q5_k_amx_block(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a, size_t as, int nt,
                                  float *y, size_t ys) {
    k45_amx_block(n, w, ws, nr, a, as, nt, y, ys, 1);
}

GEMM_AMX(gemm_q4_k_amx, q4_k_amx_block, q4kx_vec, 4)
GEMM_AMX(gemm_q5_k_amx, q5_k_amx_block, q5kx_vec, 5)

/* Q6_K on the tile unit. The scales are signed bytes and the quants six
 * bits (0..63, offset -32), so a quant times a whole scale does not fit a
 * byte: u = sc + 128 (0..255) goes in four base-4 digits d_i (q * d_i <=
 * 189), five chains of products per super-block (the four digits and the
 * plain quants):
 *   sum_j sc_j dot_j = C0 + 4 C1 + 16 C2 + 64 C3 - 128 C4,
 * the offset -32 through the activations' sums per 16 (vpmaddwd with -32 sc
 * in the int16 pairs), all exact int32. The tier's arithmetic, per row, token
 * and super-block: isum as above (the vector kernel's lanes, reduced), then
 * t = float(isum) * d, acc = t * xd + acc (fused). */
TILE512 void q6kx_sb(__m128 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(w + 192)));
    __m512i S[2], W[4];
    scale_vectors(sc16, k16_idx, S);
    __m512i nsc = _mm512_zextsi256_si512(_mm256_mullo_epi16(sc16, _mm256_set1_epi16(-32)));
    __m128 dw = _mm_set_ss(h2f(w + 208));
    q6_k_weights(w, W);
    FOR_T512(j) {
        const tr_q8k *x = ACTK(j, b);
        __m512i V = k_offset(k_scaled(W, x->qs, S), x, nsc);
        __m128 t = _mm_mul_ss(_mm_cvtsi32_ss(_mm_setzero_ps(), _mm512_reduce_add_epi32(V)), dw);
        acc[j] = _mm_fmadd_ss(t, _mm_set_ss(x->d), acc[j]);
    }
}

TR_TILE_FROM_SB(q6kx, q6kx_sb, 210, __m128, _mm_setzero_ps(), _mm_cvtss_f32, tr_q8k, TILE512)
TR_GEMM_FROM_TILE_W(q6kx_tiles, q6kx_tile, TGT512, TR_TILE_MAX)
TR_GEMM_STREAMS(q6kx_vec, q6kx_tiles, q6kx_block, 210, __m128, _mm_setzero_ps(), first2_ss, tr_q8k, TGT512)

/* vpermw indexes: the scale of each word of W_k (four sub-blocks of 16,
 * 8 words each). */
static const uint16_t amx6_scale_idx[4][32] __attribute__((aligned(64))) = {
#define I8(v) v, v, v, v, v, v, v, v
    {I8(0), I8(1), I8(2), I8(3)},
    {I8(4), I8(5), I8(6), I8(7)},
    {I8(8), I8(9), I8(10), I8(11)},
    {I8(12), I8(13), I8(14), I8(15)},
#undef I8
};

/* Chain i's chunk c: weight tile wt (tile 5 or 6) against activation tile 7. */
#define AMX6_CHAIN(i, wt, c)                                             \
    do {                                                                 \
        _tile_loadd(wt, A6[i][0] + 64 * (c), 256);                       \
        _tile_dpbusd(i, wt, 7);                                          \
    } while (0)

TGTAMX static void q6_k_amx_block(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a, size_t as, int nt,
                                  float *y, size_t ys) {
    enum { G = TR_AMX_TOKENS / 16 };
    const int ng = (nt + 15) / 16, nrg = (nr + 15) / 16;
    float acc[AMX_ROWS][TR_AMX_TOKENS] __attribute__((aligned(64)));
    int8_t B[G][8][8][64] __attribute__((aligned(64))); /* [group][sub-block of 32][row][16 tokens x 4 bytes] */
    int32_t P[G][8][16] __attribute__((aligned(64)));   /* bsums pairs 2p, 2p+1 of each token */
    float xd[G][16] __attribute__((aligned(64)));
    uint8_t A6[5][16][256] __attribute__((aligned(64))); /* quants times digit i of u (i < 4), the quants (4) */
    int32_t ms[16][8];                                    /* -32 sc pairs */
    float dw[16];
    int32_t C[G][5][16][16] __attribute__((aligned(64)));
    for (int r = 0; r < nrg * 16; r++) memset(acc[r], 0, sizeof(float) * 16 * (size_t)ng);

    amx_config_full();
    const __m512i m3w = _mm512_set1_epi16(3);
    for (int64_t b = 0; b < n / 256; b++) {
        for (int g = 0; g < ng; g++)
            amx_k_group(a, as, b, g, nt, sizeof(tr_q8k), offsetof(tr_q8k, qs), offsetof(tr_q8k, d),
                        offsetof(tr_q8k, bsums), 8, B[g], xd[g], P[g]);
        for (int rg = 0; rg < nrg; rg++) {
            for (int r = 0; r < 16; r++) {
                int row = 16 * rg + r;
                if (row >= nr) {
                    for (int i = 0; i < 5; i++) memset(A6[i][r], 0, 256);
                    memset(ms[r], 0, sizeof ms[r]);
                    dw[r] = 0;
                    continue;
                }
                const uint8_t *wb = w + (size_t)row * ws + (size_t)b * 210;
                if (b + AMX_AHEAD < n / 256)
                    _Pragma("GCC unroll 4") for (int l = 0; l < 210; l += 64)
                        _mm_prefetch((const char *)wb + AMX_AHEAD * 210 + l, _MM_HINT_T0);
                __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb + 192)));
                _mm256_storeu_si256((__m256i *)ms[r], _mm256_mullo_epi16(sc16, _mm256_set1_epi16(-32)));
                __m512i u16 = _mm512_castsi256_si512(_mm256_add_epi16(sc16, _mm256_set1_epi16(128)));
                dw[r] = h2f(wb + 208);
                __m512i Wk[4];
                q6_k_weights(wb, Wk);
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) { /* elements 64k .. 64k + 63 */
                    __m512i U = _mm512_permutexvar_epi16(_mm512_load_si512(amx6_scale_idx[k]), u16);
                    _mm512_store_si512(A6[4][r] + 64 * k, Wk[k]);
                    /* both bytes of a word times a digit (<= 3): at most 189 each, no carry */
                    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++)
                        _mm512_store_si512(
                            A6[i][r] + 64 * k,
                            _mm512_mullo_epi16(Wk[k], _mm512_and_si512(_mm512_srli_epi16(U, 2 * i), m3w)));
                }
            }
            __asm__ volatile("" ::: "memory"); /* GCC's tile loads do not tell it they read A6 and B */
            for (int g = 0; g < ng; g++) {
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                _tile_zero(4);
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
                    _tile_loadd(7, B[g][2 * c], 64);
                    AMX6_CHAIN(0, 5, c);
                    AMX6_CHAIN(1, 6, c);
                    AMX6_CHAIN(2, 5, c);
                    AMX6_CHAIN(3, 6, c);
                    AMX6_CHAIN(4, 5, c);
                }
                _tile_stored(0, C[g][0], 64);
                _tile_stored(1, C[g][1], 64);
                _tile_stored(2, C[g][2], 64);
                _tile_stored(3, C[g][3], 64);
                _tile_stored(4, C[g][4], 64);
            }
            for (int g = 0; g < ng; g++) {
                const __m512 xv = _mm512_load_ps(xd[g]);
                for (int r = 0; r < 16; r++) {
                    __m512i is = _mm512_load_si512(C[g][0][r]);
                    is = _mm512_add_epi32(is, _mm512_slli_epi32(_mm512_load_si512(C[g][1][r]), 2));
                    is = _mm512_add_epi32(is, _mm512_slli_epi32(_mm512_load_si512(C[g][2][r]), 4));
                    is = _mm512_add_epi32(is, _mm512_slli_epi32(_mm512_load_si512(C[g][3][r]), 6));
                    is = _mm512_sub_epi32(is, _mm512_slli_epi32(_mm512_load_si512(C[g][4][r]), 7));
                    _Pragma("GCC unroll 8") for (int p = 0; p < 8; p++)
                        is = _mm512_dpwssd_epi32(is, _mm512_load_si512(P[g][p]), _mm512_set1_epi32(ms[r][p]));
                    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(is), _mm512_set1_ps(dw[r]));
                    float *ap = &acc[16 * rg + r][16 * g];
                    _mm512_store_ps(ap, _mm512_fmadd_ps(t, xv, _mm512_load_ps(ap)));
                }
            }
        }
    }
    _tile_release();
    amx_store(acc, nr, nt, y, ys);
}

GEMM_AMX(gemm_q6_k_amx, q6_k_amx_block, q6kx_vec, 7)

const tr_gemm_row tr_amx_kquant_gemm_rows[] = {
    {TR_TYPE_Q4_K, TR_ACT_Q8KP, gemm_q4_k_amx},
    {TR_TYPE_Q5_K, TR_ACT_Q8K, gemm_q5_k_amx},
    {TR_TYPE_Q6_K, TR_ACT_Q8K, gemm_q6_k_amx},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx512_kquant_gemm_rows[] = {{-1, 0, NULL}};
const tr_gemm_row tr_amx_kquant_gemm_rows[] = {{-1, 0, NULL}};
#endif
