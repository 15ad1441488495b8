/* AVX2 kernels for the k-quants (Q2_K..Q6_K) and TQ1_0/TQ2_0 against tr_q8k
 * activations; see matmul_avx2.c for the common scheme. */
#include "avx2_common.h"
#include "ternary_codes.h"

#ifdef TR_HAVE_AVX2_KERNELS

/* ---------------------------------------------------------------- k-quants */

/* The 6-bit scales and mins of Q4_K/Q5_K's 8 sub-blocks, unpacked from 12
 * bytes with word operations: bytes 0..7 of the result are the scales, 8..15
 * the mins. */
TILE __m128i scales_k4(const uint8_t *q) {
    /* two plain loads into integer registers (an array here would go through
     * the stack and stall on store forwarding) */
    uint64_t lo;
    uint32_t u2;
    memcpy(&lo, q, 8);
    memcpy(&u2, q + 8, 4);
    uint32_t u0 = (uint32_t)lo, u1 = (uint32_t)(lo >> 32);
    uint64_t sc = (u0 & 0x3f3f3f3fu) | (uint64_t)((u2 & 0x0f0f0f0fu) | ((u0 >> 2) & 0x30303030u)) << 32;
    uint64_t m = (u1 & 0x3f3f3f3fu) | (uint64_t)(((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 2) & 0x30303030u)) << 32;
    return _mm_set_epi64x((long long)m, (long long)sc);
}

/* ---- Why the k-quant kernels are shaped this way (measured on this Zen 1
 * machine, where 256-bit ops are two 128-bit halves): vpmaddubsw and vpmaddwd
 * both run on one pipe only (2 cycles per ymm each), shifts on one pipe
 * (2 cycles), shuffles/unpacks on two (1 cycle), and/or/add on three or four.
 * The textbook k-quant dot product spends a vpmaddwd per 32 weights and token
 * to apply the sub-block scale, so the multiply pipe does twice the work of
 * the products themselves. Here the int16 partial sums that vpmaddubsw leaves
 * (pairs of products, at most 2*15*127 for 4-bit weights) are first folded
 * with unpack+add across sub-blocks ("collapse"), which runs on the otherwise
 * idle shuffle/add pipes, and one vpmaddwd then applies the scales of four
 * sub-blocks at once (Q4_K/Q5_K: sums of 4 lanes stay below 32767) or two
 * (Q6_K: 6-bit weights allow sums of 2). The per-token result stays a vector
 * of 8 int32 per super-block, scaled into a float vector accumulator; the
 * horizontal sum is done once per row, not per super-block. Q4_K's prompt
 * tiles go further and avoid most of the folds with an interleaved order of
 * weights and activations (see q4_k_sb). */

/* Lane-wise fold of two int16 vectors into one: per 128-bit half, lanes of a
 * and b interleaved in pairs [a a b b a a b b], each the sum of two lanes
 * (lanes i and i+4 of the half). */
TILE __m256i fold32(__m256i a, __m256i b) {
    return _mm256_add_epi16(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
}
/* Second fold: [a a b b] from u and [c c d d] from v, each a sum of two. */
TILE __m256i fold64(__m256i u, __m256i v) {
    return _mm256_add_epi16(_mm256_unpacklo_epi64(u, v), _mm256_unpackhi_epi64(u, v));
}

/* vpshufb indexes turning a 16-byte vector of unsigned scale bytes (in both
 * halves) into int16 lanes matching the folded layout: lane k of each half
 * holds byte base + k/2, zero-extended. */
#define K4_SCALE_IDX(b)                                                                              \
    _mm256_setr_epi8(b, -128, b, -128, b + 1, -128, b + 1, -128, b + 2, -128, b + 2, -128, b + 3, -128, \
                     b + 3, -128, b, -128, b, -128, b + 1, -128, b + 1, -128, b + 2, -128, b + 2, -128,   \
                     b + 3, -128, b + 3, -128)
/* The float part of a Q4_K/Q5_K super-block for one token: V are the scaled
 * integer sums (8 int32), m16 the 8 mins (int16) that pair with the
 * activation sums per 32, dwm = [d, dmin] of the weights. The mins go into
 * the low 4 lanes of the same accumulator (one hsum per row). */
TILE __m256 k4_accumulate(__m256 acc, __m256i V, __m128i m16, const tr_q8k *x, __m128 dwm) {
    __m128 f = _mm_mul_ps(dwm, _mm_set1_ps(x->d));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(V), _mm256_broadcastss_ps(f), acc);
    __m128i M = _mm_madd_epi16(m16, _mm_loadu_si128((const __m128i *)x->bsums32));
    __m128 fm = _mm_mul_ps(_mm_cvtepi32_ps(M), _mm_shuffle_ps(f, f, 0x55));
    return _mm256_sub_ps(acc, _mm256_zextps128_ps256(fm));
}

/* [d, dmin] of a Q4_K/Q5_K block as floats (lanes 0 and 1). */
TILE __m128 k4_dwm(const uint8_t *w) {
    uint32_t u;
    memcpy(&u, w, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
}

/* Four sub-blocks (128 activations at x) against unpacked weights qa..qd,
 * scaled by S (K4_SCALE_IDX layout): 8 int32. */
TILE __m256i k4_quad(__m256i qa, __m256i qb, __m256i qc, __m256i qd, const int8_t *x, __m256i S) {
    __m256i pa = _mm256_maddubs_epi16(qa, _mm256_loadu_si256((const __m256i *)x));
    __m256i pb = _mm256_maddubs_epi16(qb, _mm256_loadu_si256((const __m256i *)(x + 32)));
    __m256i pc = _mm256_maddubs_epi16(qc, _mm256_loadu_si256((const __m256i *)(x + 64)));
    __m256i pd = _mm256_maddubs_epi16(qd, _mm256_loadu_si256((const __m256i *)(x + 96)));
    return _mm256_madd_epi16(fold64(fold32(pa, pb), fold32(pc, pd)), S);
}

/* Q4_K against permuted activations (TR_ACT_Q8KP, kernels.h). vpmaddubsw
 * leaves int16 lanes that each hold two products of one sub-block; the
 * scales differ per sub-block, so lanes of different sub-blocks may only be
 * added after the scale vpmaddwd, which runs on the one multiply pipe next
 * to the vpmaddubsw (the floor: 8 ymm vpmaddubsw = 16 cycles per
 * super-block and token). Everything else competes for the other pipes (and
 * spills onto the multiply pipe): time tracked the total uop count, about
 * 0.15-0.2 ns per uop per super-block and token. Products of the same
 * sub-block in the same lane add for free (one vpaddw), while two
 * homogeneous product vectors need two unpacks and an add to fold. So:
 *
 * Prompt tiles (qs4): the weights are rearranged once per super-block, for
 * the 4 tokens of a tile, into four vectors per 128 weights whose two-byte
 * slots cycle through the four sub-blocks (slot s: sub-block s % 4), each
 * vector taking a sub-block's quants from a different natural slot (s ^ d);
 * the activations were stored in the same order at conversion. Per token
 * and 128 weights: 4 vpmaddubsw + 3 vpaddw; one 64-bit fold of the two
 * 128-weight halves leaves [s0 s1 .. s7] per 128-bit half (16 quants of a
 * sub-block per lane: at most 16 * 15 * 127 = 30480, no int16 overflow)
 * and one vpmaddwd applies the scales: 13 vector ops per token after the
 * products where the homogeneous products and folds took 23.
 *
 * One token (natural qs): the rearrangement is not shared, and for one
 * token the 4-way one (15-17 ops per 128 weights) costs more than it saves
 * (nt=1 15.75 ns vs 14.3); a 2-way order (sub-block pairs, 6 ops per 64
 * weights) and the natural order with folds 16 -> 32 -> 64 bits measured
 * the same (14.32 vs 14.30), so the one-token kernel reads the natural
 * quants. Both paths put the same 16 products in each int16 lane before
 * the scales, so a row's int32 lanes, and its float operations (k4_tail,
 * q4_k_sum), are the same at every batch width: the results are bit for
 * bit those of the kernel before these changes.
 *
 * The mins go to their own 4-lane accumulator (madd, cvt, fnmadd: no
 * 256-bit subtract per token). Measured (bench_matmul HOT, ns per
 * super-block and token; Q4_K, 64x2048), step by step in one session (the
 * host's load moves these by up to ~10 % between time windows, nt=1 most;
 * compare runs made back to back):
 *                                            nt=1   nt=2   nt=4
 *   homogeneous products + folds (before)   16.24  12.29  11.61
 *   2-way order everywhere                  15.42  12.19  10.97
 *   + mins accumulator                      14.32  12.06  10.70
 *   4-way order everywhere                  15.75  11.70   9.9 
 *   4-way tiles, natural one token (this)   14.30  11.66   9.92
 * Without the float part (k4_tail) the tile ran at 8.7 ns: the 11 uops of
 * the scaling and the mins cost ~2 ns per super-block and token; in the
 * one-token kernel they cost 1.5 ns and the scale unpacking 0.7 ns (12.1
 * ns without both). Without the weight rearrangement (wrong results, for
 * timing) the tile ran at 8.8 ns: it costs ~1.1 ns per token at nt=4.
 * Before and after, interleaved A/B in one window: nt=1 13.85 -> 13.09,
 * nt=2 12.3 -> 12.05, nt=4 11.6 -> 10.35. */

/* The interleaved vectors from [A B A B], [C D C D], [B A B A], [D C D C]
 * (two-byte slots): dword blends give the slot patterns [t ^ d] in place,
 * then the slot permutation s -> s ^ d (d = 1: swap slot pairs, 2: swap
 * dwords, 3: both). */
TILE void k4_interleave_q(__m256i AB, __m256i CD, __m256i BA, __m256i DC, __m256i out[4]) {
    const __m256i swap1 = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7,
                                           4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const __m256i swap3 = _mm256_setr_epi8(6, 7, 4, 5, 2, 3, 0, 1, 14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3,
                                           0, 1, 14, 15, 12, 13, 10, 11, 8, 9);
    out[0] = _mm256_blend_epi32(AB, CD, 0xaa);                                 /* [A B C D] */
    out[1] = _mm256_shuffle_epi8(_mm256_blend_epi32(BA, DC, 0xaa), swap1);     /* [B A D C] */
    out[2] = _mm256_shuffle_epi32(_mm256_blend_epi32(CD, AB, 0xaa), 0xb1);     /* [C D A B] */
    out[3] = _mm256_shuffle_epi8(_mm256_blend_epi32(DC, BA, 0xaa), swap3);     /* [D C B A] */
}

/* The four vectors of 128 quants of sub-blocks A, B, C, D (one vector
 * each, natural order; weights or activations) in the interleaved order. */
TILE void k4_interleave(__m256i A, __m256i B, __m256i C, __m256i D, __m256i out[4]) {
    __m256i AB = _mm256_blend_epi16(A, B, 0xaa), BA = _mm256_blend_epi16(B, A, 0xaa);
    __m256i CD = _mm256_blend_epi16(C, D, 0xaa), DC = _mm256_blend_epi16(D, C, 0xaa);
    k4_interleave_q(AB, CD, BA, DC, out);
}

#define ACTKP(j, b) ((const tr_q8kp *)(a + (size_t)(j) * as) + (b))

/* The float part of a Q4_K super-block, shared by the tile and the block:
 * V the scaled sums (8 int32), m16 the mins, dwm = [d, dmin]. */
TILE void k4_tail(__m256 *acc, __m128 *accm, __m256i V, __m128i m16, __m128 dwm, const tr_q8kp *x) {
    __m128 f = _mm_mul_ps(dwm, _mm_set1_ps(x->d));
    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(V), _mm256_broadcastss_ps(f), *acc);
    __m128i M = _mm_madd_epi16(m16, _mm_loadu_si128((const __m128i *)x->bsums32));
    *accm = _mm_fnmadd_ps(_mm_cvtepi32_ps(M), _mm_shuffle_ps(f, f, 0x55), *accm);
}

/* Scales in the order of the folded lanes [s0 s1 .. s7] (both
 * halves), the mins as int16, [d, dmin]. */
TILE __m256i k4_scales(const uint8_t *w, __m128i *m16, __m128 *dwm) {
    const __m256i idx = _mm256_setr_epi8(0, -128, 1, -128, 2, -128, 3, -128, 4, -128, 5, -128, 6, -128, 7, -128,
                                         0, -128, 1, -128, 2, -128, 3, -128, 4, -128, 5, -128, 6, -128, 7, -128);
    __m256i scb = _mm256_broadcastsi128_si256(scales_k4(w + 4));
    *m16 = _mm_unpackhi_epi8(_mm256_castsi256_si128(scb), _mm_setzero_si128());
    *dwm = k4_dwm(w);
    return _mm256_shuffle_epi8(scb, idx);
}

/* One token (natural qs): homogeneous products folded 16 -> 32 -> 64 bits
 * give [s0 s1 .. s7] per 128-bit half, each lane the 16 products of its
 * sub-block in that half: the tile's lanes; the rest is the tile's. */
TILE void q4_k_one(__m256 *acc, __m128 *accm, const uint8_t *w, const tr_q8kp *x) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m128i m16;
    __m128 dwm;
    __m256i S = k4_scales(w, &m16, &dwm);
    __m256i U[2];
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m256i c[2];
        _Pragma("GCC unroll 2") for (int k = 0; k < 2; k++) {
            __m256i r = _mm256_loadu_si256((const __m256i *)(w + 16 + 64 * h + 32 * k));
            const int8_t *xq = x->qs + 128 * h + 64 * k;
            __m256i pa = _mm256_maddubs_epi16(_mm256_and_si256(r, m4), _mm256_loadu_si256((const __m256i *)xq));
            __m256i pb = _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(r, 4), m4),
                                              _mm256_loadu_si256((const __m256i *)(xq + 32)));
            c[k] = _mm256_add_epi16(_mm256_unpacklo_epi16(pa, pb), _mm256_unpackhi_epi16(pa, pb));
        }
        U[h] = fold32(c[0], c[1]);
    }
    k4_tail(acc, accm, _mm256_madd_epi16(fold64(U[0], U[1]), S), m16, dwm, x);
}

TILE void q4_k_sb(__m256 *acc, __m128 *accm, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m128i m16;
    __m128 dwm;
    __m256i S = k4_scales(w, &m16, &dwm);
    __m256i U[4];
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        /* sub-blocks 4h, 4h+1 are the low and high nibbles of r0, 4h+2 and
         * 4h+3 of r1: blend the bytes with their 4-bit shifts first, so
         * one mask each gives [A B A B], [B A B A], [C D C D], [D C D C] */
        __m256i r0 = _mm256_loadu_si256((const __m256i *)(w + 16 + 64 * h));
        __m256i r1 = _mm256_loadu_si256((const __m256i *)(w + 48 + 64 * h));
        __m256i t0 = _mm256_srli_epi16(r0, 4), t1 = _mm256_srli_epi16(r1, 4);
        __m256i v[4];
        k4_interleave_q(_mm256_and_si256(_mm256_blend_epi16(r0, t0, 0xaa), m4),
                        _mm256_and_si256(_mm256_blend_epi16(r1, t1, 0xaa), m4),
                        _mm256_and_si256(_mm256_blend_epi16(t0, r0, 0xaa), m4),
                        _mm256_and_si256(_mm256_blend_epi16(t1, r1, 0xaa), m4), v);
        FOR_T(j) {
            const int8_t *xq = ACTKP(j, b)->qs4 + 128 * h;
            __m256i c = _mm256_add_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(v[0], _mm256_loadu_si256((const __m256i *)xq)),
                                 _mm256_maddubs_epi16(v[1], _mm256_loadu_si256((const __m256i *)(xq + 32)))),
                _mm256_add_epi16(_mm256_maddubs_epi16(v[2], _mm256_loadu_si256((const __m256i *)(xq + 64))),
                                 _mm256_maddubs_epi16(v[3], _mm256_loadu_si256((const __m256i *)(xq + 96)))));
            if (h == 0) U[j] = c;
            else k4_tail(&acc[j], &accm[j], _mm256_madd_epi16(fold64(U[j], c), S), m16, dwm, ACTKP(j, b));
        }
    }
}

/* The row's result from the two accumulators (same operations for the
 * tile and the one-token block). Note: the random-model perplexity and the
 * real-model argmax checks in tests/test_parity_llamacpp.py move by ~1 %
 * (perplexity) and by up to 5 of 80 positions (argmax) with the order of
 * these last adds alone (activation quantization turns rounding
 * differences into different int8 roundings downstream); this order is the
 * one of the kernel before the 2-way/4-way change, whose results these
 * kernels reproduce bit for bit. */
TILE float q4_k_sum(__m256 acc, __m128 accm) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s = _mm_add_ps(s, accm);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* One-token accumulators of a Q4_K row, for GEMM_KQUANT. */
typedef struct {
    __m256 v;
    __m128 m;
} k4acc;
TILE k4acc k4acc_zero(void) { return (k4acc){_mm256_setzero_ps(), _mm_setzero_ps()}; }
TILE void k4acc_sum2(k4acc a0, k4acc a1, float out[2]) {
    out[0] = q4_k_sum(a0.v, a0.m);
    out[1] = q4_k_sum(a1.v, a1.m);
}
TILE k4acc q4_k_block(k4acc acc, const uint8_t *w, const tr_q8kp *x) {
    q4_k_one(&acc.v, &acc.m, w, x);
    return acc;
}

TILE void q4_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    __m128 accm[4];
    FOR_T(j) acc[j] = _mm256_setzero_ps(), accm[j] = _mm_setzero_ps();
    for (int64_t b = 0; b < n / 256; b++, w += 144) q4_k_sb(acc, accm, w, a, as, b, NT);
    FOR_T(j) out[j] = q4_k_sum(acc[j], accm[j]);
}

TILE void q5_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), b16 = _mm256_set1_epi8(0x10);
    for (int64_t b = 0; b < n / 256; b++, w += 176) {
        __m256i scb = _mm256_broadcastsi128_si256(scales_k4(w + 4));
        __m256i S[2] = {_mm256_shuffle_epi8(scb, K4_SCALE_IDX(0)), _mm256_shuffle_epi8(scb, K4_SCALE_IDX(4))};
        __m128i m16 = _mm_unpackhi_epi8(_mm256_castsi256_si128(scb), _mm_setzero_si128());
        __m128 dwm = k4_dwm(w);
        __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 16));
        __m256i V[4];
        _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
            __m256i r0 = _mm256_loadu_si256((const __m256i *)(w + 48 + 64 * q));
            __m256i r1 = _mm256_loadu_si256((const __m256i *)(w + 80 + 64 * q));
            /* the fifth bit of sub-block k is bit k of qh: compare instead of
             * shifting (shifts have a single pipe) */
            __m256i hq[4];
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                __m256i bit = _mm256_set1_epi8((char)(1 << (4 * q + k)));
                hq[k] = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit), b16);
            }
            __m256i qa = _mm256_or_si256(_mm256_and_si256(r0, m4), hq[0]);
            __m256i qb = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(r0, 4), m4), hq[1]);
            __m256i qc = _mm256_or_si256(_mm256_and_si256(r1, m4), hq[2]);
            __m256i qd = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(r1, 4), m4), hq[3]);
            FOR_T(j) {
                __m256i v = k4_quad(qa, qb, qc, qd, ACTK(j, b)->qs + 128 * q, S[q]);
                V[j] = q ? _mm256_add_epi32(V[j], v) : v;
            }
        }
        FOR_T(j) acc[j] = k4_accumulate(acc[j], V[j], m16, ACTK(j, b), dwm);
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]);
}

TILE __m256 q5_k_block(__m256 acc, const uint8_t *w, const tr_q8k *x) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), b16 = _mm256_set1_epi8(0x10);
    __m256i scb = _mm256_broadcastsi128_si256(scales_k4(w + 4));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 16));
    __m256i V = _mm256_setzero_si256();
    _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
        __m256i r0 = _mm256_loadu_si256((const __m256i *)(w + 48 + 64 * q));
        __m256i r1 = _mm256_loadu_si256((const __m256i *)(w + 80 + 64 * q));
        __m256i hq[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
            __m256i bit = _mm256_set1_epi8((char)(1 << (4 * q + k)));
            hq[k] = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit), b16);
        }
        __m256i qa = _mm256_or_si256(_mm256_and_si256(r0, m4), hq[0]);
        __m256i qb = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(r0, 4), m4), hq[1]);
        __m256i qc = _mm256_or_si256(_mm256_and_si256(r1, m4), hq[2]);
        __m256i qd = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(r1, 4), m4), hq[3]);
        __m256i S = _mm256_shuffle_epi8(scb, q ? K4_SCALE_IDX(4) : K4_SCALE_IDX(0));
        V = _mm256_add_epi32(V, k4_quad(qa, qb, qc, qd, x->qs + 128 * q, S));
    }
    return k4_accumulate(acc, V, _mm_unpackhi_epi8(_mm256_castsi256_si128(scb), _mm_setzero_si128()), x, k4_dwm(w));
}

/* Q6_K int16 scale lanes for fold32 of groups (g, g+1) of a 128-half: the
 * low 128 bits of group g's products are sub-block 2g, the high 2g+1, so the
 * low half pairs scales (2g, 2g+2) and the high half (2g+1, 2g+3); indexes
 * into 8 sign-extended int16 scales held in both halves. */
#define Q6_SCALE_IDX(g)                                                                                  \
    _mm256_setr_epi8(4 * g, 4 * g + 1, 4 * g, 4 * g + 1, 4 * g + 4, 4 * g + 5, 4 * g + 4, 4 * g + 5, 4 * g,  \
                     4 * g + 1, 4 * g, 4 * g + 1, 4 * g + 4, 4 * g + 5, 4 * g + 4, 4 * g + 5, 4 * g + 2,   \
                     4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 6, 4 * g + 7, 4 * g + 6, 4 * g + 7, 4 * g + 2, \
                     4 * g + 3, 4 * g + 2, 4 * g + 3, 4 * g + 6, 4 * g + 7, 4 * g + 6, 4 * g + 7)

TILE void q6_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    for (int64_t b = 0; b < n / 256; b++, w += 210) {
        __m128i sc8 = _mm_loadu_si128((const __m128i *)(w + 192));
        /* the -32 offset of the quants, through the activation sums: 32 * sc
         * fits int16 */
        __m256i sc32 = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 5);
        __m256 dw = _mm256_set1_ps(h2f(w + 208));
        __m256i V[4];
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256i B = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
            __m256i S01 = _mm256_shuffle_epi8(B, Q6_SCALE_IDX(0)), S23 = _mm256_shuffle_epi8(B, Q6_SCALE_IDX(2));
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h));
            /* high bits to 0x30: left shifts as byte doublings (adds have
             * three pipes, shifts one) */
            __m256i qh2 = _mm256_add_epi8(qh, qh), qh4 = _mm256_add_epi8(qh2, qh2);
            __m256i qh8 = _mm256_add_epi8(qh4, qh4), qh16 = _mm256_add_epi8(qh8, qh8);
            __m256i q0 = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(qh16, m30));
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(qh4, m30));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                         _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
            FOR_T(j) {
                const int8_t *x = ACTK(j, b)->qs + 128 * h;
                __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)x));
                __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(x + 32)));
                __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(x + 64)));
                __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(x + 96)));
                __m256i v = _mm256_add_epi32(_mm256_madd_epi16(fold32(p0, p1), S01), _mm256_madd_epi16(fold32(p2, p3), S23));
                V[j] = h ? _mm256_add_epi32(V[j], v) : v;
            }
        }
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            __m256i v = _mm256_sub_epi32(V[j], _mm256_madd_epi16(sc32, _mm256_loadu_si256((const __m256i *)x->bsums)));
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_mul_ps(dw, _mm256_set1_ps(x->d)), acc[j]);
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]);
}

TILE __m256 q6_k_block(__m256 acc, const uint8_t *w, const tr_q8k *x) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m128i sc8 = _mm_loadu_si128((const __m128i *)(w + 192));
    __m256i V = _mm256_sub_epi32(_mm256_setzero_si256(),
                                 _mm256_madd_epi16(_mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 5),
                                                   _mm256_loadu_si256((const __m256i *)x->bsums)));
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m256i B = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
        __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w + 64 * h));
        __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w + 64 * h + 32));
        __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h));
        __m256i qh2 = _mm256_add_epi8(qh, qh), qh4 = _mm256_add_epi8(qh2, qh2);
        __m256i qh8 = _mm256_add_epi8(qh4, qh4), qh16 = _mm256_add_epi8(qh8, qh8);
        __m256i q0 = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_and_si256(qh16, m30));
        __m256i q1 = _mm256_or_si256(_mm256_and_si256(ql1, m4), _mm256_and_si256(qh4, m30));
        __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), _mm256_and_si256(qh, m30));
        __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30));
        const int8_t *xq = x->qs + 128 * h;
        __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)xq));
        __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(xq + 32)));
        __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(xq + 64)));
        __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(xq + 96)));
        V = _mm256_add_epi32(V, _mm256_add_epi32(_mm256_madd_epi16(fold32(p0, p1), _mm256_shuffle_epi8(B, Q6_SCALE_IDX(0))),
                                                 _mm256_madd_epi16(fold32(p2, p3), _mm256_shuffle_epi8(B, Q6_SCALE_IDX(2)))));
    }
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(V), _mm256_set1_ps(h2f(w + 208) * x->d), acc);
}

/* Two 128-element halves' groups as in Q6_K: 4 vectors of 32 quants (low
 * 128 bits sub-block 2g, high 2g+1) against x, with level-1 folds and the
 * scale lanes of Q6_SCALE_IDX built from B (8 int16 scales in both halves). */
TILE __m256i k16_half(__m256i q0, __m256i q1, __m256i q2, __m256i q3, const int8_t *x, __m256i B) {
    __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)x));
    __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(x + 32)));
    __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(x + 64)));
    __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(x + 96)));
    return _mm256_add_epi32(_mm256_madd_epi16(fold32(p0, p1), _mm256_shuffle_epi8(B, Q6_SCALE_IDX(0))),
                            _mm256_madd_epi16(fold32(p2, p3), _mm256_shuffle_epi8(B, Q6_SCALE_IDX(2))));
}

/* Q2_K: 2-bit quants, 4-bit scale and min per 16. One super-block of one
 * row against NT tokens (acc[j] += ...); the tiles and the one-token kernel
 * share it. */
TILE void q2_k_sb(__m256 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m128i sc8 = _mm_loadu_si128((const __m128i *)w);
    __m128i lo4 = _mm_and_si128(sc8, _mm_set1_epi8(0x0f));
    __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0f)));
    __m128 dwm = k4_dwm(w + 80); /* d, dmin */
    __m256i V[4];
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m256i B = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(h ? _mm_srli_si128(lo4, 8) : lo4));
        __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * h));
        __m256i q0 = _mm256_and_si256(raw, m3), q1 = _mm256_and_si256(_mm256_srli_epi16(raw, 2), m3);
        __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m3), q3 = _mm256_and_si256(_mm256_srli_epi16(raw, 6), m3);
        FOR_T(j) {
            __m256i v = k16_half(q0, q1, q2, q3, ACTK(j, b)->qs + 128 * h, B);
            V[j] = h ? _mm256_add_epi32(V[j], v) : v;
        }
    }
    FOR_T(j) {
        const tr_q8k *x = ACTK(j, b);
        __m128 f = _mm_mul_ps(dwm, _mm_set1_ps(x->d));
        __m256i M = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)x->bsums));
        __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(V[j]), _mm256_broadcastss_ps(f), acc[j]);
        acc[j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(M), _mm256_broadcastss_ps(_mm_shuffle_ps(f, f, 0x55)), t);
    }
}

/* Q3_K: 2 low bits in qs, the third in hmask (set: +0, clear: -4). Used as
 * q3 = low | high << 2 in 0..7 and the -4 removed through the activation
 * sums; 16 signed 6-bit scales (minus 32) per 16 elements. */
TILE __m128i scales_q3k(const uint8_t *p) {
    uint64_t lo;
    uint32_t u2;
    memcpy(&lo, p, 8); /* plain loads, not an array through the stack (see scales_k4) */
    memcpy(&u2, p + 8, 4);
    uint32_t u0 = (uint32_t)lo, u1 = (uint32_t)(lo >> 32);
    uint32_t s0 = (u0 & 0x0f0f0f0f) | ((u2 & 0x03030303) << 4);
    uint32_t s1 = (u1 & 0x0f0f0f0f) | (((u2 >> 2) & 0x03030303) << 4);
    uint32_t s2 = ((u0 >> 4) & 0x0f0f0f0f) | (((u2 >> 4) & 0x03030303) << 4);
    uint32_t s3 = ((u1 >> 4) & 0x0f0f0f0f) | (((u2 >> 6) & 0x03030303) << 4);
    return _mm_sub_epi8(_mm_set_epi64x((long long)((uint64_t)s3 << 32 | s2), (long long)((uint64_t)s1 << 32 | s0)),
                        _mm_set1_epi8(32));
}

TILE void q3_k_sb(__m256 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    __m128i sc8 = scales_q3k(w + 96);
    /* the -4 of a clear high bit, through the activation sums: 4 * sc fits int16 */
    __m256i sc4 = _mm256_slli_epi16(_mm256_cvtepi8_epi16(sc8), 2);
    __m256i hm = _mm256_loadu_si256((const __m256i *)w);
    __m256i V[4];
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m256i B = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(h ? _mm_srli_si128(sc8, 8) : sc8));
        __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * h));
        __m256i q[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
            /* high bit 4h+k of hmask as +4: compare rather than shift (one shift pipe) */
            __m256i bit = _mm256_set1_epi8((char)(1 << (4 * h + k)));
            __m256i hb = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit), four);
            __m256i lo = k == 0 ? raw : _mm256_srli_epi16(raw, 2 * k);
            q[k] = _mm256_or_si256(_mm256_and_si256(lo, m3), hb);
        }
        FOR_T(j) {
            __m256i v = k16_half(q[0], q[1], q[2], q[3], ACTK(j, b)->qs + 128 * h, B);
            V[j] = h ? _mm256_add_epi32(V[j], v) : v;
        }
    }
    float dw = h2f(w + 108);
    FOR_T(j) {
        const tr_q8k *x = ACTK(j, b);
        __m256i v = _mm256_sub_epi32(V[j], _mm256_madd_epi16(sc4, _mm256_loadu_si256((const __m256i *)x->bsums)));
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(dw * x->d), acc[j]);
    }
}

/* TQ2_0: codes 0..2 for -1..1 and one scale: the products of all 256 fit
 * int16 lanes (8 * 2 * 2 * 127), so they are added before one vpmaddwd; the
 * -1 goes through the activation sums. A token's eight products are one
 * chain of adds, which the empty asm closes: written as a tree of adds, gcc
 * issued all the tile's products first and spilled most of them (4.2 ns per
 * block and token against 3.15). Integer adds in any order give the same
 * sums. */
TILE void tq2_0_sb(__m256 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m256i ones = _mm256_set1_epi16(1);
    if (NT == 1) {
        /* One token: the codes' decoding is not shared with other tokens,
         * so it is made cheaper. Bits 2-3 of a byte are taken in place,
         * as 4 * code (raw & 0x0c): one shift a half (by 4, for bits 4-7)
         * instead of three. The products of the codes times four sum in
         * their own int16 lanes (4 * 2 * 12 * 127 at most, codes up to 3)
         * and are exact multiples of four, so an arithmetic shift by 2
         * gives back their sum: the same integers as the plain form. */
        const __m256i m3 = _mm256_set1_epi8(3), mc = _mm256_set1_epi8(0x0c);
        const int8_t *x = ACTK(0, b)->qs;
        __m256i s1 = _mm256_setzero_si256(), s4 = _mm256_setzero_si256();
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 32 * h));
            __m256i hi = _mm256_srli_epi16(raw, 4);
            const int8_t *xh = x + 128 * h;
            s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(raw, m3),
                                                           _mm256_loadu_si256((const __m256i *)xh)));
            s4 = _mm256_add_epi16(s4, _mm256_maddubs_epi16(_mm256_and_si256(raw, mc),
                                                           _mm256_loadu_si256((const __m256i *)(xh + 32))));
            s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(_mm256_and_si256(hi, m3),
                                                           _mm256_loadu_si256((const __m256i *)(xh + 64))));
            s4 = _mm256_add_epi16(s4, _mm256_maddubs_epi16(_mm256_and_si256(hi, mc),
                                                           _mm256_loadu_si256((const __m256i *)(xh + 96))));
        }
        __m256i s = _mm256_add_epi16(s1, _mm256_srai_epi16(s4, 2));
        __m256i v = _mm256_madd_epi16(_mm256_sub_epi16(s, _mm256_loadu_si256((const __m256i *)ACTK(0, b)->bsums)), ones);
        acc[0] = tq_accumulate(acc[0], v, h2f(w + 64), ACTK(0, b));
        return;
    }
    __m256i S[4];
    _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
        __m256i q[4];
        tq2_0_half(w, h, q);
        FOR_T(j) {
            const int8_t *x = ACTK(j, b)->qs + 128 * h;
            __m256i s = h ? S[j] : _mm256_setzero_si256();
            _Pragma("GCC unroll 4") for (int l = 0; l < 4; l++)
                s = _mm256_add_epi16(s, _mm256_maddubs_epi16(q[l], _mm256_loadu_si256((const __m256i *)(x + 32 * l))));
            __asm__("" : "+x"(s));
            S[j] = s;
        }
    }
    float dw = h2f(w + 64);
    FOR_T(j) {
        const tr_q8k *x = ACTK(j, b);
        __m256i v = _mm256_madd_epi16(_mm256_sub_epi16(S[j], _mm256_loadu_si256((const __m256i *)x->bsums)), ones);
        acc[j] = tq_accumulate(acc[j], v, dw, x);
    }
}

/* TQ1_0 (ternary_codes.h): the eight vectors of codes decoded without
 * multiplies, then TQ2_0's products. */
TILE void tq1_0_sb(__m256 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i T[8];
    tq1_0_codes(w, T);
    FOR_T(j) {
        const tr_q8k *x = ACTK(j, b);
        __m256i s = _mm256_maddubs_epi16(T[0], _mm256_loadu_si256((const __m256i *)x->qs));
        _Pragma("GCC unroll 8") for (int i = 1; i < 8; i++) /* left rolled, gcc put T[] on the stack */
            s = _mm256_add_epi16(s, _mm256_maddubs_epi16(T[i], _mm256_loadu_si256((const __m256i *)(x->qs + 32 * i))));
        __m256i v = _mm256_madd_epi16(_mm256_sub_epi16(s, _mm256_loadu_si256((const __m256i *)x->bsums)), ones);
        acc[j] = tq_accumulate(acc[j], v, h2f(w + 52), x);
    }
}

/* Tiles and one-token blocks from a per-super-block body (kernels.h). */
#define TILE_FROM_SB(name, sb, bytes) \
    TR_TILE_FROM_SB(name, sb, bytes, __m256, _mm256_setzero_ps(), hsum_ps, tr_q8k, TILE)

TILE_FROM_SB(q2_k, q2_k_sb, 84)
TILE_FROM_SB(q3_k, q3_k_sb, 110)
TILE_FROM_SB(tq2_0, tq2_0_sb, 66)
TILE_FROM_SB(tq1_0, tq1_0_sb, 54)

/* Prompt tiles and the one-token streams (kernels.h's TR_GEMM_STREAMS). */
#define GEMM_KQUANT(name, tile, block, bytes, acc_t, zero, sum2, act_t) \
    GEMM_FROM_TILE(name##_tiles, tile)                                  \
    TR_GEMM_STREAMS(name, name##_tiles, block, bytes, acc_t, zero, sum2, act_t, TGT)

GEMM_KQUANT(gemm_q2_k, q2_k_tile, q2_k_block, 84, __m256, _mm256_setzero_ps(), hsum2_ps, tr_q8k)
GEMM_KQUANT(gemm_q4_k, q4_k_tile, q4_k_block, 144, k4acc, k4acc_zero(), k4acc_sum2, tr_q8kp)
GEMM_KQUANT(gemm_q5_k, q5_k_tile, q5_k_block, 176, __m256, _mm256_setzero_ps(), hsum2_ps, tr_q8k)
GEMM_KQUANT(gemm_q6_k, q6_k_tile, q6_k_block, 210, __m256, _mm256_setzero_ps(), hsum2_ps, tr_q8k)
GEMM_KQUANT(gemm_q3_k, q3_k_tile, q3_k_block, 110, __m256, _mm256_setzero_ps(), hsum2_ps, tr_q8k)
GEMM_KQUANT(gemm_tq2_0, tq2_0_tile, tq2_0_block, 66, __m256, _mm256_setzero_ps(), hsum2_ps, tr_q8k)
GEMM_KQUANT(gemm_tq1_0, tq1_0_tile, tq1_0_block, 54, __m256, _mm256_setzero_ps(), hsum2_ps, tr_q8k)

const tr_gemm_row tr_avx2_kquant_gemm_rows[] = {
    {TR_TYPE_Q2_K, TR_ACT_Q8K, gemm_q2_k},
    {TR_TYPE_Q3_K, TR_ACT_Q8K, gemm_q3_k},
    {TR_TYPE_Q4_K, TR_ACT_Q8KP, gemm_q4_k},
    {TR_TYPE_Q5_K, TR_ACT_Q8K, gemm_q5_k},
    {TR_TYPE_Q6_K, TR_ACT_Q8K, gemm_q6_k},
    {TR_TYPE_TQ1_0, TR_ACT_Q8K, gemm_tq1_0},
    {TR_TYPE_TQ2_0, TR_ACT_Q8K, gemm_tq2_0},
    {-1, 0, NULL},
};

/* ---------------------------------------------------------------- tr_q8k conversion */

/* Same bytes as tr_act_q8k_ref (the scalar loop costs ~8 cycles per float,
 * a fifth of a 256-row generation matmul): the largest magnitude by vector
 * max, its first occurrence (the sign the reference keeps) by compare masks,
 * the same float product rounded by cvtps (nearest even, like lrintf), the
 * clamp at 127 by signed saturation. */
TILE void act_q8k_avx2(const float *x, tr_q8k *y, int64_t n) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n / 256; b++, x += 256, y++) {
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < 256; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), m);
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        if (amax == 0) {
            memset(y, 0, sizeof *y);
            continue;
        }
        __m256 am = _mm256_set1_ps(amax);
        int first = 0;
        for (int i = 0; i < 256; i += 8) {
            int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(_mm256_loadu_ps(x + i), absmask), am, _CMP_EQ_OQ));
            if (mask) {
                first = i + __builtin_ctz((unsigned)mask);
                break;
            }
        }
        float iscale = -127.0f / x[first];
        __m256 is = _mm256_set1_ps(iscale);
        __m256i q[8];
        for (int k = 0; k < 8; k++) {
            const float *p = x + 32 * k;
            __m256i a0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), is));
            __m256i a1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 8), is));
            __m256i a2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 16), is));
            __m256i a3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p + 24), is));
            /* the packs work per 128-bit half: dwords come out a0lo a1lo a2lo a3lo a0hi ... */
            __m256i v = _mm256_packs_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
            q[k] = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(y->qs + 32 * k), q[k]);
        }
        /* sums per 16: 4-byte partial sums, two rounds of hadd leave groups
         * (0 2 4 6 | 1 3 5 7) per half, interleaved back by the unpacks */
        __m256i s[8];
        for (int k = 0; k < 8; k++) s[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q[k]), ones16);
        __m256i lo = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
        __m256i hi = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
        __m256i g = _mm256_packs_epi32(lo, hi); /* low half: groups 0 2 .. 14, high half: 1 3 .. 15 */
        __m128i ge = _mm256_castsi256_si128(g), go = _mm256_extracti128_si256(g, 1);
        __m128i b0 = _mm_unpacklo_epi16(ge, go), b1 = _mm_unpackhi_epi16(ge, go);
        _mm_storeu_si128((__m128i *)y->bsums, b0);
        _mm_storeu_si128((__m128i *)(y->bsums + 8), b1);
        _mm_storeu_si128((__m128i *)y->bsums32, _mm_hadd_epi16(b0, b1));
        y->d = 1.0f / iscale;
    }
}

TGT static void act_q8k_rows_avx2(const float *x, void *y, int64_t n) { act_q8k_avx2(x, y, n); }

/* The natural block, then the quants also in the order the Q4_K tiles
 * read (kernels.h), built with the same helper as their weights. */
TGT static void act_q8kp_avx2(const float *x, void *y_, int64_t n) {
    tr_q8kp *y = y_;
    for (int64_t b = 0; b < n / 256; b++, x += 256, y++) {
        tr_q8k k;
        act_q8k_avx2(x, &k, 256);
        __m256i q[8];
        for (int i = 0; i < 8; i++) q[i] = _mm256_loadu_si256((const __m256i *)(k.qs + 32 * i));
        for (int h = 0; h < 2; h++) {
            __m256i X[4];
            k4_interleave(q[4 * h], q[4 * h + 1], q[4 * h + 2], q[4 * h + 3], X);
            for (int d = 0; d < 4; d++) _mm256_storeu_si256((__m256i *)(y->qs4 + 128 * h + 32 * d), X[d]);
        }
        tr_q8kp_set_natural(y, &k);
    }
}

const tr_act_row tr_avx2_kquant_act_rows[] = {
    {TR_ACT_Q8K, act_q8k_rows_avx2},
    {TR_ACT_Q8KP, act_q8kp_avx2},
    {-1, NULL},
};

#else
const tr_gemm_row tr_avx2_kquant_gemm_rows[] = {{-1, 0, NULL}};
const tr_act_row tr_avx2_kquant_act_rows[] = {{-1, NULL}};
#endif
