/* AVX-VNNI kernels for the legacy block formats (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0) against tr_q8a activations (TR_ISA_AVXVNNI: AVX2 with the VEX
 * vpdpbusd of Alder Lake and later client cores; kernels.h has the shape).
 * matmul_avx512_legacy.c brought down to 256 bits: four weight rows at a
 * time, each weight block decoded once for a tile of up to four tokens, and
 * for one token (or a few) the four rows taken far apart as four sequential
 * streams with a prefetch one row ahead.
 *
 * A block of four rows is held as two pairs of rows, each two vectors of
 * unsigned bytes: `lo`, whose 128-bit lane r has the pair's row r elements
 * 0..15, and `hi` with elements 16..31. The token's block is broadcast to
 * both lanes, and two vpdpbusd leave each row's block product in its lane's
 * four int32 (AVX2's vpmaddubsw + vpmaddwd is two multiplies on Intel's
 * ports, vpdpbusd one, and no four-row fold per block is needed). The
 * per-block float work is one vector per pair of rows, each row's scale
 * repeated over its four lanes; the lanes are added once per row and tile.
 *
 * Weights are made unsigned and the offset taken out through the
 * activation's integer sum, as in the AVX-512 kernels: Q8_0's bytes flipped
 * by xor 0x80, Q4_0 / Q5_0 quants as stored; the int32 lanes start at
 * -(offset / 4) * sum. Q4_1 and Q5_1 add their min through the sum in float.
 *
 * One accumulator per token and pair of rows: the two pairs are two chains
 * of multiply-adds, so even with one token a block's work (some 30
 * instructions) outlasts a chain's latency; the 16 ymm registers have no
 * room for a second set at four tokens.
 *
 * Batch invariance: every (row, token) goes through the same instructions
 * whatever the tile width, the row's slot (each lane group is reduced the
 * same way) or the kind of group: rows left over after the groups of four
 * go through a group padded with copies of the last row. */
#include "avx2_common.h"

#ifdef TR_HAVE_AVX2_KERNELS

#include <stddef.h>

#include "legacy_geom.h"

/* One block of two rows, decoded. */
typedef struct pair {
    __m256i lo, hi; /* unsigned quants: lane r holds row r's elements 0..15 (lo), 16..31 (hi) */
    __m256 d;       /* row r's scale in lanes 4r..4r+3 */
    __m256 m;       /* row r's min in lane 4r, zero elsewhere (Q4_1, Q5_1) */
} pair;

TILEV __m256i two128(const uint8_t *p0, const uint8_t *p1) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p0)),
                                   _mm_loadu_si128((const __m128i *)p1), 1);
}

TILEV uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* A dword of p in every dword of an xmm. */
TILEV __m128i bcast32(const uint8_t *p) { return _mm_set1_epi32((int)load32(p)); }

/* A half of p in every word of an xmm. */
TILEV __m128i bcast16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _mm_set1_epi16((short)h);
}

/* The fifth bits (bit i of a row's qh for element i) of both rows as 0x10
 * bytes in lo's order (sel picks qh bytes 0, 1) or hi's (bytes 2, 3). */
TILEV __m256i bits5(__m256i qh2, __m256i sel) {
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    __m256i v = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(qh2, sel), bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

TILEV pair pair_decode(const uint8_t *w0, const uint8_t *w1, const int F) {
    pair q;
    const size_t qs = lg_qs(F);
    if (F == F_Q8_0) {
        const __m256i flip = _mm256_set1_epi8((char)0x80);
        q.lo = _mm256_xor_si256(two128(w0 + qs, w1 + qs), flip);
        q.hi = _mm256_xor_si256(two128(w0 + qs + 16, w1 + qs + 16), flip);
    } else {
        /* Low nibbles are elements 0..15, high ones 16..31. */
        __m256i v = two128(w0 + qs, w1 + qs);
        const __m256i m4 = _mm256_set1_epi8(0x0f);
        q.lo = _mm256_and_si256(v, m4);
        q.hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
        if (F == F_Q5_0 || F == F_Q5_1) {
            const size_t o = lg_qh(F);
            __m256i h2 = _mm256_inserti128_si256(_mm256_castsi128_si256(bcast32(w0 + o)), bcast32(w1 + o), 1);
            q.lo = _mm256_or_si256(q.lo, bits5(h2, _mm256_set_epi64x(0x0101010101010101, 0, 0x0101010101010101, 0)));
            q.hi = _mm256_or_si256(q.hi, bits5(h2, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                                                     0x0303030303030303, 0x0202020202020202)));
        }
    }
    if (lg_has_min(F)) {
        /* (d, m) of both rows as halves d0 m0 d1 m1, then four zero halves. */
        __m128i dm = _mm_unpacklo_epi32(_mm_cvtsi32_si128((int)load32(w0)), _mm_cvtsi32_si128((int)load32(w1)));
        __m256 f = _mm256_cvtph_ps(dm);
        q.d = _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2));
        q.m = _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(1, 4, 4, 4, 3, 4, 4, 4));
    } else {
        q.d = _mm256_cvtph_ps(_mm_unpacklo_epi64(bcast16(w0), bcast16(w1)));
        q.m = _mm256_setzero_ps();
    }
    return q;
}

/* Every int32 lane at -(off / 4) * sum, a row's four lanes carrying
 * -off * sum (nothing overflows: |sum| <= 32 * 127). As in the AVX-512
 * file, a word multiply-add (the low word of the broadcast sum times
 * -off / 4, its sign word times 0): under GCC a broadcast load and one
 * vpmaddwd instead of a negate and a shift; clang keeps the accumulating
 * form that broadcasts the sum from memory. The bits are the same. */
TILEV __m256i offset_lanes(const int32_t sum, const int off) {
#ifdef __clang__
    return _mm256_dpwssd_avx_epi32(_mm256_setzero_si256(), _mm256_set1_epi32(-off / 4 & 0xffff), _mm256_set1_epi32(sum));
#else
    return _mm256_madd_epi16(_mm256_set1_epi32(-off / 4 & 0xffff), _mm256_set1_epi32(sum));
#endif
}

/* acc[p] (a token's pairs of rows, four lanes a row) plus this block against token block x. */
TILEV void quad_token(const pair *q, const tr_q8a *x, __m256 *acc, const int F) {
    const int off = lg_offset(F);
    __m256i xlo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)x->qs));
    __m256i xhi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(x->qs + 16)));
    __m256i s0 = off ? offset_lanes(x->sum, off) : _mm256_setzero_si256();
    __m256 xd = _mm256_set1_ps(x->d);
    _Pragma("GCC unroll 2") for (int p = 0; p < 2; p++) {
        __m256i s = _mm256_dpbusd_avx_epi32(s0, q[p].lo, xlo);
        s = _mm256_dpbusd_avx_epi32(s, q[p].hi, xhi);
        if (lg_has_min(F)) {
            __m256 t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), q[p].d,
                                       _mm256_mul_ps(q[p].m, _mm256_cvtepi32_ps(_mm256_set1_epi32(x->sum))));
            acc[p] = _mm256_fmadd_ps(t, xd, acc[p]);
        } else {
            acc[p] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(q[p].d, xd), acc[p]);
        }
    }
}

#define ACTV(j, b) ((const tr_q8a *)(a + (size_t)(j) * as) + (b))

/* Block b of the four rows into the NT tokens' accumulators (two each). */
TILEV void quad_block(const uint8_t *const *rows, int64_t b, const char *a, size_t as, int NT, __m256 (*acc)[2],
                      const int F) {
    const size_t o = (size_t)b * lg_bytes(F);
    pair q[2] = {pair_decode(rows[0] + o, rows[1] + o, F), pair_decode(rows[2] + o, rows[3] + o, F)};
    FOR_T(j) quad_token(q, ACTV(j, b), acc[j], F);
}

/* The four rows' sums from the two pairs' lanes, each row's four lanes
 * added in the same order. */
TILEV __m128 quad_sum(__m256 v01, __m256 v23) {
    __m256 h = _mm256_hadd_ps(v01, v23);
    h = _mm256_hadd_ps(h, h);
    return _mm_unpacklo_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* The four rows against NT tokens; out[j] the rows' results for token j.
 * pf > 0 (one-token streams): also prefetch the bytes pf ahead in each row,
 * every line the next two blocks will need. */
TILEV void quad_tile(const uint8_t *const *rows, int64_t n, const char *a, size_t as, int NT, __m128 *out,
                     const int F, size_t pf) {
    const uint8_t *const r4[4] = {rows[0], rows[1], rows[2], rows[3]}; /* in registers, not reloaded */
    __m256 acc[4][2];
    FOR_T(j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    int64_t nb = n / 32, b = 0;
    for (; b + 2 <= nb; b += 2) {
        if (pf) {
            /* Two blocks span 36-68 bytes: one line, and for Q8_0 a second one every other step. */
            const size_t p = (size_t)b * lg_bytes(F) + pf;
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                _mm_prefetch((const char *)r4[r] + p, _MM_HINT_T0);
                if (F == F_Q8_0 && (b & 2)) _mm_prefetch((const char *)r4[r] + p + 64, _MM_HINT_T0);
            }
        }
        quad_block(r4, b, a, as, NT, acc, F);
        quad_block(r4, b + 1, a, as, NT, acc, F);
    }
    if (b < nb) quad_block(r4, b, a, as, NT, acc, F);
    FOR_T(j) out[j] = quad_sum(acc[j][0], acc[j][1]);
}

#define LQ_TILE TILEV
#define LQ_TGT TGTV
#define LQ_WIDTH 4
#include "legacy_quads.h"

GEMM_QUADS(gemm_q8_0, F_Q8_0)
GEMM_QUADS(gemm_q4_0, F_Q4_0)
GEMM_QUADS(gemm_q4_1, F_Q4_1)
GEMM_QUADS(gemm_q5_0, F_Q5_0)
GEMM_QUADS(gemm_q5_1, F_Q5_1)

const tr_gemm_row tr_avxvnni_legacy_gemm_rows[] = {
    {TR_TYPE_Q8_0, TR_ACT_Q8, gemm_q8_0},
    {TR_TYPE_Q4_0, TR_ACT_Q8, gemm_q4_0},
    {TR_TYPE_Q4_1, TR_ACT_Q8, gemm_q4_1},
    {TR_TYPE_Q5_0, TR_ACT_Q8, gemm_q5_0},
    {TR_TYPE_Q5_1, TR_ACT_Q8, gemm_q5_1},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avxvnni_legacy_gemm_rows[] = {{-1, 0, NULL}};
#endif
