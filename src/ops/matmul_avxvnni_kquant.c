/* AVX-VNNI kernels for the k-quants Q2_K..Q6_K (TR_ISA_AVXVNNI: AVX2 with
 * the VEX vpdpbusd/vpdpwssd; kernels.h has the shape they share), the
 * scheme of matmul_avx512_kquant.c in 256-bit registers; and for TQ1_0 /
 * TQ2_0, the AVX2 kernels with vpdpbusd for their products (t_sb below).
 *
 * A super-block's 256 weights are decoded once (for up to 4 tokens of a
 * tile) as four pairs of ymm of unsigned bytes, pair c holding elements
 * 64c .. 64c+63 in natural order, so each meets the activations of the same
 * bytes (qs + 64c, plain loads folded into the products). vpdpbusd gives,
 * per token and ymm, 8 int32 lanes D of four products each, every lane
 * inside one sub-block (Q4_K/Q5_K: the whole ymm is one sub-block of 32;
 * Q2_K/Q3_K/Q6_K: each 128-bit lane is one sub-block of 16). Four products
 * fit int16 (at most 4 * 63 * 128 for Q6_K), so a pair's two D are packed
 * (vpackssdw, exact) and one vpmaddwd / vpdpwssd applies the scales of its
 * four sub-blocks and adds neighbouring lanes: per token and super-block
 * 8 vpdpbusd + 4 vpackssdw + 4 word multiply-adds, against AVX2's
 * 8 vpmaddubsw, the folds and a vpmaddwd. The scale vector of a pair is a
 * vpshufb of the 16 byte scales and a sign extension, once per super-block.
 *
 * Pairs are decoded one at a time and taken through the tile's tokens, the
 * integer sums V (one ymm per token) carried across them: a whole decoded
 * super-block (8 ymm) with its scales and four tokens' sums would not fit
 * the 16 ymm registers.
 *
 * Offsets go through the activation sums: Q6_K's -32 and Q3_K's -4 as a
 * vpmaddwd of the 16 bsums with -32 or -4 times the scales, the start of V
 * (exact); the mins of Q2_K/Q4_K/Q5_K (with their own float scale dmin) as
 * a vpmaddwd with the sums (Q4_K/Q5_K: the 8 sums per 32, bsums32),
 * converted and subtracted in float. Per token and super-block the float
 * part is: lanes to float, times d of the weights, the mins, and one fma by
 * the activations' scale into a ymm accumulator; the horizontal sum is
 * done once per row and token. Q4_K reads its activations' natural quants
 * (qs), as the AVX-512 kernel does.
 *
 * Batch invariance: a (row, token) result is the same sequence of
 * operations whatever the batch: the per-super-block body (*_sb) takes the
 * tile's tokens in loops whose iterations are independent, the one-token
 * kernel calls the same body with one token, and the integer parts are
 * exact; only the decoded weights are shared. */
#include "avx2_common.h"
#include "ternary_codes.h"

#ifdef TR_HAVE_AVX2_KERNELS

#define ACTKP(j, b) ((const tr_q8kp *)(a + (size_t)(j) * as) + (b))

enum { K_Q2, K_Q3, K_Q4, K_Q5, K_Q6, K_TQ1, K_TQ2 };

/* vpshufb indexes: the byte scales of pair c's words (then sign-extended).
 * Q4_K/Q5_K: both 128-bit lanes are sub-blocks 2c (words 0-3) and 2c+1
 * (words 4-7). Q2_K/Q3_K/Q6_K: lane 0 is sub-blocks 4c and 4c+2, lane 1
 * 4c+1 and 4c+3 (vpackssdw keeps 128-bit lanes apart). */
#define REP4(a) a, a, a, a
static const uint8_t k4_idx[4][16] __attribute__((aligned(16))) = {
    {REP4(0), REP4(1), REP4(0), REP4(1)},
    {REP4(2), REP4(3), REP4(2), REP4(3)},
    {REP4(4), REP4(5), REP4(4), REP4(5)},
    {REP4(6), REP4(7), REP4(6), REP4(7)},
};
static const uint8_t k16_idx[4][16] __attribute__((aligned(16))) = {
    {REP4(0), REP4(2), REP4(1), REP4(3)},
    {REP4(4), REP4(6), REP4(5), REP4(7)},
    {REP4(8), REP4(10), REP4(9), REP4(11)},
    {REP4(12), REP4(14), REP4(13), REP4(15)},
};

TILEV __m256i scale_vector(__m128i s8, const uint8_t idx[16]) {
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s8, _mm_load_si128((const __m128i *)idx)));
}

/* V plus pair (Wa, Wb) against the activations x (64 bytes), scaled by S;
 * first: V is not started yet. */
TILEV __m256i k_pair(__m256i V, __m256i Wa, __m256i Wb, const int8_t *x, __m256i S, const int first) {
    __m256i Da = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), Wa, _mm256_loadu_si256((const __m256i *)x));
    __m256i Db = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), Wb, _mm256_loadu_si256((const __m256i *)(x + 32)));
    __m256i P = _mm256_packs_epi32(Da, Db);
    return first ? _mm256_madd_epi16(P, S) : _mm256_dpwssd_avx_epi32(V, P, S);
}

TILEV __m256i load256(const uint8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* Bits 4..5 (mask 0x30) or bit 4 (0x10) or bit 2 (0x04) of every byte from
 * bit j (field at j) of the same byte: a 16-bit shift moves no bit that
 * the mask keeps across a byte. */
TILEV __m256i bits_to(__m256i v, const int j, const int to, const __m256i mask) {
    __m256i s = j < to ? _mm256_slli_epi16(v, to - j) : j > to ? _mm256_srli_epi16(v, j - to) : v;
    return _mm256_and_si256(s, mask);
}

/* The 6-bit scales and mins of Q4_K/Q5_K's 8 sub-blocks from the 12
 * bytes at q (a 16-byte load: the block goes on), as bytes 0..7 (scales)
 * and 8..15 (mins). In dwords u0 u1 u2 of q the result is
 *   [u0 & 3f, (u2 & 0f) | ((u0 >> 2) & 30), u1 & 3f, ((u2 >> 4) & 0f) | ((u1 >> 2) & 30)]
 * per byte: the low parts come from [u0 u2 u1 u2] shifted by [0 0 0 4],
 * the high parts from [u0 u0 u1 u1] shifted by [32 2 32 2] (32: zero). */
TILEV __m128i scales_k4(const uint8_t *q) {
    __m128i v = _mm_loadu_si128((const __m128i *)q);
    __m128i lo = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4));
    __m128i hi = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), _mm_setr_epi32(32, 2, 32, 2));
    hi = _mm_and_si128(hi, _mm_set1_epi8(0x30));
    lo = _mm_and_si128(lo, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    return _mm_or_si128(lo, hi);
}

/* Q3_K's 16 scales (6 bits, minus 32) from the 12 bytes at p, as int8.
 * They end the block (and the last block of a tensor may end its
 * mapping): the load takes the 4 bytes before them instead, so u0 u1 u2
 * are dwords 1 2 3. Dword k of the result is (low nibbles | 2-bit field k
 * of u2 << 4) - 32, the nibbles those of [u0 u1 u0 u1] shifted by
 * [0 0 4 4]. */
TILEV __m128i scales_q3k(const uint8_t *p) {
    __m128i v = _mm_loadu_si128((const __m128i *)(p - 4));
    __m128i lo = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 1)), _mm_setr_epi32(0, 0, 4, 4));
    __m128i hi = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(3, 3, 3, 3)), _mm_setr_epi32(0, 2, 4, 6));
    hi = _mm_and_si128(_mm_slli_epi32(hi, 4), _mm_set1_epi8(0x30));
    lo = _mm_and_si128(lo, _mm_set1_epi8(0x0f));
    return _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32));
}

/* Pair c of a super-block w as unsigned bytes: elements 64c..64c+31 (Wa)
 * and 64c+32..64c+63 (Wb). */
TILEV void k_decode(const uint8_t *w, const int c, __m256i *Wa, __m256i *Wb, const int K) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m3 = _mm256_set1_epi8(3);
    if (K == K_Q4 || K == K_Q5) {
        /* qs byte 32c + i: element 64c + i in its low nibble, 64c + 32 + i in its high one */
        __m256i Q = load256(w + (K == K_Q4 ? 16 : 48) + 32 * c);
        *Wa = _mm256_and_si256(Q, m4);
        *Wb = _mm256_and_si256(_mm256_srli_epi16(Q, 4), m4);
        if (K == K_Q5) {
            /* the fifth bit of element 32j + i: bit j of qh[i] */
            const __m256i b16 = _mm256_set1_epi8(0x10);
            __m256i QH = load256(w + 16);
            *Wa = _mm256_or_si256(*Wa, bits_to(QH, 2 * c, 4, b16));
            *Wb = _mm256_or_si256(*Wb, bits_to(QH, 2 * c + 1, 4, b16));
        }
    } else if (K == K_Q6) {
        /* Half h = c / 2: ql[64h..64h+63] holds elements 128h + 0..63 in
         * its low nibbles, 128h + 64..127 in its high ones; qh[32h + l] the
         * high bits of element 128h + 32g + l in bits 2g, 2g+1. */
        const int h = c >> 1, g = 2 * (c & 1);
        const __m256i m30 = _mm256_set1_epi8(0x30);
        __m256i Z0 = load256(w + 64 * h), Z1 = load256(w + 64 * h + 32), QH = load256(w + 128 + 32 * h);
        if (c & 1) Z0 = _mm256_srli_epi16(Z0, 4), Z1 = _mm256_srli_epi16(Z1, 4);
        *Wa = _mm256_or_si256(_mm256_and_si256(Z0, m4), bits_to(QH, 2 * g, 4, m30));
        *Wb = _mm256_or_si256(_mm256_and_si256(Z1, m4), bits_to(QH, 2 * g + 2, 4, m30));
    } else {
        /* Q2_K/Q3_K: element 128h + 32j + l is bits 2j, 2j+1 of q[32h + l]
         * (h = c / 2, j = 2(c & 1) and one more); Q3_K's third bit is bit
         * 4h + j of hmask[l], +4 when set (the -4 goes through the sums). */
        const int h = c >> 1, j = 2 * (c & 1);
        __m256i Q = load256(w + (K == K_Q2 ? 16 : 32) + 32 * h);
        *Wa = bits_to(Q, 2 * j, 0, m3);
        *Wb = bits_to(Q, 2 * j + 2, 0, m3);
        if (K == K_Q3) {
            const __m256i b4 = _mm256_set1_epi8(4);
            __m256i HM = load256(w);
            *Wa = _mm256_or_si256(*Wa, bits_to(HM, 4 * h + j, 2, b4));
            *Wb = _mm256_or_si256(*Wb, bits_to(HM, 4 * h + j + 1, 2, b4));
        }
    }
}

/* One super-block w (block b of the activations) against NT tokens. */
TILEV void k_sb(__m256 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT, const int K) {
    /* Q4_K's TR_ACT_Q8KP has tr_q8k's fields (its natural quants in qs) at other offsets. */
#define XF(j, f) (K == K_Q4 ? ACTKP(j, b)->f : ACTK(j, b)->f)
    __m128i s8;
    __m256 dw, dmin = _mm256_setzero_ps();
    __m256i nsc = _mm256_setzero_si256(), mins = _mm256_setzero_si256();
    if (K == K_Q4 || K == K_Q5) {
        s8 = scales_k4(w + 4);
        mins = _mm256_castsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(s8, 8)));
        uint32_t u;
        memcpy(&u, w, 4);
        __m128 dwm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)u));
        dw = _mm256_broadcastss_ps(dwm);
        dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dwm));
    } else if (K == K_Q6) {
        s8 = _mm_loadu_si128((const __m128i *)(w + 192));
        nsc = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(s8), _mm256_set1_epi16(-32));
        dw = _mm256_set1_ps(h2f(w + 208));
    } else if (K == K_Q3) {
        s8 = scales_q3k(w + 96);
        nsc = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(s8), _mm256_set1_epi16(-4));
        dw = _mm256_set1_ps(h2f(w + 108));
    } else {
        __m128i sm = _mm_loadu_si128((const __m128i *)w);
        s8 = _mm_and_si128(sm, _mm_set1_epi8(0x0f));
        mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sm, 4), _mm_set1_epi8(0x0f)));
        dw = _mm256_set1_ps(h2f(w + 80));
        dmin = _mm256_set1_ps(h2f(w + 82));
    }
    const int offs = K == K_Q6 || K == K_Q3;
    __m256i V[4];
    FOR_T(j) V[j] = offs ? _mm256_madd_epi16(nsc, _mm256_loadu_si256((const __m256i *)XF(j, bsums)))
                         : _mm256_setzero_si256(); /* unread: the first pair starts V */
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        __m256i Wa, Wb;
        k_decode(w, c, &Wa, &Wb, K);
        __m256i S = scale_vector(s8, K == K_Q4 || K == K_Q5 ? k4_idx[c] : k16_idx[c]);
        FOR_T(j) V[j] = k_pair(V[j], Wa, Wb, XF(j, qs) + 64 * c, S, c == 0 && !offs);
    }
    FOR_T(j) {
        __m256 t = _mm256_mul_ps(_mm256_cvtepi32_ps(V[j]), dw);
        if (K == K_Q4 || K == K_Q5) {
            /* the 8 mins against the sums per 32: four int32, zero above */
            __m128i M = _mm_madd_epi16(_mm256_castsi256_si128(mins), _mm_loadu_si128((const __m128i *)XF(j, bsums32)));
            t = _mm256_fnmadd_ps(_mm256_zextps128_ps256(_mm_cvtepi32_ps(M)), dmin, t);
        } else if (K == K_Q2) {
            __m256i M = _mm256_madd_epi16(mins, _mm256_loadu_si256((const __m256i *)XF(j, bsums)));
            t = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(M), dmin, t);
        }
        acc[j] = _mm256_fmadd_ps(t, _mm256_set1_ps(XF(j, d)), acc[j]);
    }
#undef XF
}

/* TQ2_0 / TQ1_0: the AVX2 kernels' codes (0..2, ternary_codes.h), eight
 * vectors of 32 in the activations' order, each against a plain load of
 * them by one vpdpbusd. Per token the int32 chain starts with minus the
 * activation sums (the -1 of every code: a vpmaddwd of the 16 bsums by -1),
 * so lane k holds what the AVX2 kernels' vpmaddwd leaves there (the
 * products of bytes 4k..4k+3 of every 32, minus bsums 2k and 2k+1; all
 * exact), then their float step: per token and super-block 1 vpmaddwd +
 * 8 vpdpbusd against 8 vpmaddubsw + 7 vpaddw + vpsubw + vpmaddwd, the
 * same bits. */
TILEV void t_sb(__m256 *acc, const uint8_t *w, const char *a, size_t as, int64_t b, int NT, const int K) {
    __m256i T[8];
    if (K == K_TQ2) {
        tq2_0_half(w, 0, T);
        tq2_0_half(w, 1, T + 4);
    } else {
        tq1_0_codes(w, T);
    }
    const float dw = h2f(w + (K == K_TQ2 ? 64 : 52));
    FOR_T(j) {
        const tr_q8k *x = ACTK(j, b);
        __m256i v = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), _mm256_set1_epi16(-1));
        _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++)
            v = _mm256_dpbusd_avx_epi32(v, T[i], _mm256_loadu_si256((const __m256i *)(x->qs + 32 * i)));
        acc[j] = tq_accumulate(acc[j], v, dw, x);
    }
}

/* A row against NT <= 4 tokens, and the kernel: tokens in tiles of four
 * (each decoded super-block shared by the tile), tiles outer so a tile's
 * activations stay in L1 (kernels.h's TR_GEMM_FROM_TILE); one token: kernels.h's TR_GEMM_STREAMS
 * (TR_STREAMS rows at once from as many stretches of the rows handed in), with the
 * same per-super-block body. */
#define GEMM_KQUANTV(name, sb, K, bytes, act_t)                                                          \
    TR_TILE_FROM_SB(name, sb, bytes, __m256, _mm256_setzero_ps(), hsum_ps, act_t, TILEV, K)              \
    TR_GEMM_FROM_TILE(name##_tiles, name##_tile, TGTV)                                                   \
    TR_GEMM_STREAMS(name, name##_tiles, name##_block, bytes,                                             \
                    __m256, _mm256_setzero_ps(), hsum2_ps, act_t, TGTV)

GEMM_KQUANTV(gemm_q2_k, k_sb, K_Q2, 84, tr_q8k)
GEMM_KQUANTV(gemm_q3_k, k_sb, K_Q3, 110, tr_q8k)
GEMM_KQUANTV(gemm_q4_k, k_sb, K_Q4, 144, tr_q8kp)
GEMM_KQUANTV(gemm_q5_k, k_sb, K_Q5, 176, tr_q8k)
GEMM_KQUANTV(gemm_q6_k, k_sb, K_Q6, 210, tr_q8k)
GEMM_KQUANTV(gemm_tq1_0, t_sb, K_TQ1, 54, tr_q8k)
GEMM_KQUANTV(gemm_tq2_0, t_sb, K_TQ2, 66, tr_q8k)

const tr_gemm_row tr_avxvnni_kquant_gemm_rows[] = {
    {TR_TYPE_Q2_K, TR_ACT_Q8K, gemm_q2_k},
    {TR_TYPE_Q3_K, TR_ACT_Q8K, gemm_q3_k},
    {TR_TYPE_Q4_K, TR_ACT_Q8KP, gemm_q4_k},
    {TR_TYPE_Q5_K, TR_ACT_Q8K, gemm_q5_k},
    {TR_TYPE_Q6_K, TR_ACT_Q8K, gemm_q6_k},
    {TR_TYPE_TQ1_0, TR_ACT_Q8K, gemm_tq1_0},
    {TR_TYPE_TQ2_0, TR_ACT_Q8K, gemm_tq2_0},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avxvnni_kquant_gemm_rows[] = {{-1, 0, NULL}};
#endif
