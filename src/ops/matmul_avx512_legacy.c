/* AVX-512 VNNI kernels for the legacy block formats (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0) against tr_q8a activations (TR_ISA_AVX512; kernels.h has the shape
 * they share; Q8_0 has a layout of its own, at the end of the file). The
 * structure is matmul_avx2_legacy.c's: four weight rows at
 * a time, each weight block decoded once for a tile of up to eight tokens
 * (sixteen accumulators, even and odd blocks; 13-18 % less time per block
 * and token than four on a Sapphire Rapids, bench_matmul's hot kernel),
 * and for one token (or a few) the four rows taken far apart as four
 * sequential streams with a prefetch one row ahead.
 *
 * What AVX-512 changes is the inner product. A block of four rows is held
 * as two 512-bit vectors of unsigned bytes: `lo`, whose 128-bit lane r has
 * row r's elements 0..15, and `hi` with elements 16..31. The token's block
 * is broadcast to the four lanes (x[0..15] against lo, x[16..31] against
 * hi), and two vpdpbusd (unsigned x signed bytes, summed by fours into
 * int32) leave each row's block product in its lane's four int32, which
 * replaces AVX2's vpmaddubsw + vpmaddwd and its horizontal folding of four
 * rows. The per-block float work (convert, scale, accumulate) is then one
 * vector for four rows, each row's scale repeated over its four lanes.
 *
 * Weights are made unsigned and the offset taken out through the
 * activation's integer sum: Q4_0 and Q5_0 keep their unsigned quants
 * (q = w + 8, w + 16; Q8_0's sixteen-row kernel flips its bytes, w + 128); the block's
 * int32 lanes start at -(offset / 4) * sum each, so the row's four lanes
 * carry -offset * sum, exactly. Q4_1 and Q5_1 add their min through the sum
 * in float.
 *
 * Batch invariance: every (row, token) goes through the same instructions
 * whatever the tile width, the row's slot in its group of four (each lane
 * group is reduced the same way) or the kind of group: rows left over after
 * the groups of four go through a group padded with copies of the last row,
 * not through another kernel. */
#include "avx512_common.h"

#ifdef TR_HAVE_AVX512_KERNELS

#include <stddef.h>

#include "legacy_geom.h"

/* One block of four rows, decoded. */
typedef struct quad {
    __m512i lo, hi; /* unsigned quants: lane r holds row r's elements 0..15 (lo), 16..31 (hi) */
    __m512 d;       /* row r's scale in lanes 4r..4r+3 */
    __m512 m;       /* row r's min in lane 4r, zero elsewhere (Q4_1, Q5_1) */
} quad;

/* The fifth bits of the four rows' elements 0..15 (sel picks qh bytes 0, 1)
 * or 16..31 (bytes 2, 3) as a byte mask in lo's / hi's order: each lane's
 * bytes take the qh byte holding their bit, then test that bit. */
TILE512 __mmask64 bits5_mask(__m512i qh4, __m512i sel) {
    return _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh4, sel), _mm512_set1_epi64((long long)0x8040201008040201ull));
}

TILE512 uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

TILE512 quad quad_decode(const uint8_t *const *wr, const int F) {
    quad q;
    const size_t qs = lg_qs(F);
    /* Row r's 16 nibble bytes in lane r: low nibbles are elements 0..15, high ones 16..31. */
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(wr[0] + qs)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(wr[1] + qs)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(wr[2] + qs)), 2);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(wr[3] + qs)), 3);
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    q.lo = _mm512_and_si512(v, m4);
    q.hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    if (F == F_Q5_0 || F == F_Q5_1) {
        const size_t o = lg_qh(F);
        __m128i h = _mm_setr_epi32((int)load32(wr[0] + o), (int)load32(wr[1] + o), (int)load32(wr[2] + o),
                                   (int)load32(wr[3] + o));
        /* Row r's qh in every dword of lane r. */
        __m512i h4 = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                              _mm512_castsi128_si512(h));
        const __m512i bit4 = _mm512_set1_epi8(0x10);
        __mmask64 klo = bits5_mask(h4, _mm512_set_epi64(0x0101010101010101, 0, 0x0101010101010101, 0,
                                                        0x0101010101010101, 0, 0x0101010101010101, 0));
        __mmask64 khi = bits5_mask(h4, _mm512_set_epi64(0x0303030303030303, 0x0202020202020202,
                                                        0x0303030303030303, 0x0202020202020202,
                                                        0x0303030303030303, 0x0202020202020202,
                                                        0x0303030303030303, 0x0202020202020202));
        q.lo = _mm512_mask_add_epi8(q.lo, klo, q.lo, bit4);
        q.hi = _mm512_mask_add_epi8(q.hi, khi, q.hi, bit4);
    }
    if (lg_has_min(F)) {
        /* (d, m) of the four rows as eight halves: d0 m0 d1 m1 ... */
        __m128i dm = _mm_setr_epi32((int)load32(wr[0]), (int)load32(wr[1]), (int)load32(wr[2]), (int)load32(wr[3]));
        __m512 f = _mm512_castps256_ps512(_mm256_cvtph_ps(dm));
        q.d = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6), f);
        q.m = _mm512_maskz_permutexvar_ps(0x1111, _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 5, 5, 5, 5, 7, 7, 7, 7), f);
    } else {
        /* Row r's scale in halves 4r..4r+3 (merge-masked broadcasts from memory), then to floats. */
        uint16_t h[4];
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) memcpy(&h[r], wr[r], 2);
        __m256i hv = _mm256_set1_epi16((short)h[0]);
        hv = _mm256_mask_set1_epi16(hv, 0x00f0, (short)h[1]);
        hv = _mm256_mask_set1_epi16(hv, 0x0f00, (short)h[2]);
        hv = _mm256_mask_set1_epi16(hv, 0xf000, (short)h[3]);
        q.d = _mm512_cvtph_ps(hv);
        q.m = _mm512_setzero_ps();
    }
    return q;
}

/* Every int32 lane at -(off / 4) * sum, the four lanes of a row carrying
 * -off * sum (|sum| <= 32 * 127; with the lanes' products, at most
 * 8 * 255 * 127, nothing overflows). As a word multiply-add: the low word
 * of the broadcast sum (|sum| fits int16) times -off / 4, its sign word
 * times 0. Under GCC that is a broadcast load and one vpmaddwd, where the
 * multiply of two broadcasts became a negate and a shift (two vector
 * instructions per token and block, on the ports the products need:
 * measured on a Sapphire Rapids, bench_matmul's hot kernel); under clang
 * the same word product with an accumulator (vpdpwssd) broadcasts the sum
 * from memory in one instruction. The bits are the same. */
TILE512 __m512i offset_lanes(const int32_t sum, const int off) {
#ifdef __clang__
    return _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_set1_epi32(-off / 4 & 0xffff), _mm512_set1_epi32(sum));
#else
    return _mm512_madd_epi16(_mm512_set1_epi32(-off / 4 & 0xffff), _mm512_set1_epi32(sum));
#endif
}

/* acc (a token's four rows, four lanes each) plus this block against token block x. */
TILE512 __m512 quad_token(const quad *q, const tr_q8a *x, __m512 acc, const int F) {
    const int off = lg_offset(F);
    __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x->qs));
    __m512i xhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(x->qs + 16)));
    __m512i s = off ? offset_lanes(x->sum, off) : _mm512_setzero_si512();
    s = _mm512_dpbusd_epi32(s, q->lo, xlo);
    s = _mm512_dpbusd_epi32(s, q->hi, xhi);
    if (lg_has_min(F)) {
        __m512 t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), q->d,
                                   _mm512_mul_ps(q->m, _mm512_cvtepi32_ps(_mm512_set1_epi32(x->sum))));
        return _mm512_fmadd_ps(t, _mm512_set1_ps(x->d), acc);
    }
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(q->d, _mm512_set1_ps(x->d)), acc);
}

#define ACT(j, b) ((const tr_q8a *)(a + (size_t)(j) * as) + (b))

/* Block b of the four rows into the NT accumulators. */
TILE512 void quad_block(const uint8_t *const *rows, int64_t b, const char *a, size_t as, int NT, __m512 *acc,
                        const int F) {
    const size_t o = (size_t)b * lg_bytes(F);
    const uint8_t *wr[4] = {rows[0] + o, rows[1] + o, rows[2] + o, rows[3] + o};
    quad q = quad_decode(wr, F);
    FOR_T512(j) acc[j] = quad_token(&q, ACT(j, b), acc[j], F);
}

/* Lane 4r of every 128-bit lane: the sum of its four lanes, added the same
 * way in every lane. Out: the four rows' sums. */
TILE512 __m128 quad_sum(__m512 v) {
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0xb1));
    v = _mm512_add_ps(v, _mm512_permute_ps(v, 0x4e));
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), v));
}

/* The four rows against NT tokens; out[j] the rows' results for token j.
 * pf > 0 (one-token streams): also prefetch the bytes pf ahead in each row,
 * every line the next two blocks will need. Even and odd blocks go to
 * separate sums (with one or two tokens, a single chain of multiply-adds
 * would wait on its latency), at every tile width alike. */
TILE512 void quad_tile(const uint8_t *const *rows, int64_t n, const char *a, size_t as, int NT, __m128 *out,
                       const int F, size_t pf) {
    const uint8_t *const r4[4] = {rows[0], rows[1], rows[2], rows[3]}; /* in registers, not reloaded */
    __m512 acc[TR_TILE_MAX], acc2[TR_TILE_MAX];
    FOR_T512(j) acc[j] = acc2[j] = _mm512_setzero_ps();
    int64_t nb = n / 32, b = 0;
    for (; b + 2 <= nb; b += 2) {
        if (pf) {
            /* Two blocks span 36-48 bytes: one line. */
            const size_t p = (size_t)b * lg_bytes(F) + pf;
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) _mm_prefetch((const char *)r4[r] + p, _MM_HINT_T0);
        }
        quad_block(r4, b, a, as, NT, acc, F);
        quad_block(r4, b + 1, a, as, NT, acc2, F);
    }
    if (b < nb) quad_block(r4, b, a, as, NT, acc, F);
    FOR_T512(j) out[j] = quad_sum(_mm512_add_ps(acc[j], acc2[j]));
}

#define LQ_TILE TILE512
#define LQ_TGT TGT512
#define LQ_WIDTH TR_TILE_MAX
#include "legacy_quads.h"

GEMM_QUADS(gemm_q4_0, F_Q4_0)
GEMM_QUADS(gemm_q4_1, F_Q4_1)
GEMM_QUADS(gemm_q5_0, F_Q5_0)
GEMM_QUADS(gemm_q5_1, F_Q5_1)

/* ---------------------------------------------------------------- Q8_0: sixteen rows in the lanes of a zmm */

/* Q8_0 takes sixteen rows at a time, one row per int32 lane of a zmm: per
 * block the sixteen rows' 32 bytes are loaded (two rows a zmm) and
 * transposed in registers (vpermt2d, vshufi64x2) so that W[k] lane i holds
 * row i's elements 4k..4k+3 plus 128 (unsigned); per token eight vpdpbusd
 * against the token's dword k broadcast leave each row's exact block sum in
 * its lane, with no horizontal folding, and the float step is one vector
 * for sixteen rows. Decoded once per block for up to eight tokens.
 *
 * Measured on a Zen 4 (session 14): bench_matmul's hot kernel 0.28 ns per
 * block and token at 8 tokens against the four-row layout's 0.43; TinyLlama
 * Q8_0 pp128 132 -> 186 t/s, generation level (36.0-37.2 vs 35.4-36.8 t/s,
 * three alternating pairs). The same layout made Q4_0 / Q5_0 prompts 40 %
 * faster and Q4_K's 30 % (138 -> 180 t/s), but generation slower: Q4_0
 * -12 %, Gemma (Q5_0) -7 %, Q4_K -17 % (one token's weights as sixteen
 * far-apart streams: 27.8 GB/s on two threads where the two-stream Q4_K
 * kernel reads 37.5; sixteen neighbouring rows, or a prefetch of each
 * stream's next row, were slower still), so those keep their kernels: the
 * way to both is weights repacked at load into this layout (one stream per
 * sixteen rows, no transposition), not done yet.
 *
 * The arithmetic, per row, token and block in order from acc = 0 (the AMX
 * tier's, matmul_amx_legacy.c, instruction for instruction: that tier runs
 * this kernel for a few tokens):
 *   isum = dot(w + 128, x) - 128 * sum(x)   (exact, wrapping)
 *   acc = float(isum) * (d * xd) + acc      (d * xd rounded, then fused)
 * A lane's result depends only on its row and token. The scales are read
 * a block ahead into a buffer (below): a gather of the sixteen took as long
 * as the rest of a block's decoding on the Zen 4. */

/* vpermt2d indexes: two vectors of two rows' 32 bytes (rows 0..3, row r's
 * dword m at 8r + m) -> lane m: dword m of rows 0..3, m = 0..3 or 4..7. */
static const int32_t r16_q03[16] __attribute__((aligned(64))) = {0, 8, 16, 24, 1, 9, 17, 25,
                                                                 2, 10, 18, 26, 3, 11, 19, 27};
static const int32_t r16_q47[16] __attribute__((aligned(64))) = {4, 12, 20, 28, 5, 13, 21, 29,
                                                                 6, 14, 22, 30, 7, 15, 23, 31};

/* Two rows' 32 bytes (at p + r[0], p + r[1]) in the two halves. */
TILE512 __m512i rows2x32(const uint8_t *p, const int32_t *r) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + r[0]))),
                              _mm256_loadu_si256((const __m256i *)(p + r[1])), 1);
}

/* P[k] lane m: dword m of rows 4k..4k+3 -> T[m] lane i: row i's dword m. */
TILE512 void lanes4x4(const __m512i P[4], __m512i *T) {
    __m512i U0 = _mm512_shuffle_i64x2(P[0], P[1], 0x44), U1 = _mm512_shuffle_i64x2(P[0], P[1], 0xEE);
    __m512i V0 = _mm512_shuffle_i64x2(P[2], P[3], 0x44), V1 = _mm512_shuffle_i64x2(P[2], P[3], 0xEE);
    T[0] = _mm512_shuffle_i64x2(U0, V0, 0x88);
    T[1] = _mm512_shuffle_i64x2(U0, V0, 0xDD);
    T[2] = _mm512_shuffle_i64x2(U1, V1, 0x88);
    T[3] = _mm512_shuffle_i64x2(U1, V1, 0xDD);
}

/* Sixteen rows' 32 bytes at p + ro[i]: T[m] lane i = row i's dword m (m < 8). */
TILE512 void rows16x32(const uint8_t *p, const int32_t *ro, __m512i T[8]) {
    const __m512i q03 = _mm512_load_si512(r16_q03), q47 = _mm512_load_si512(r16_q47);
    __m512i P[4], Q[4];
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        __m512i Y0 = rows2x32(p, ro + 4 * k), Y1 = rows2x32(p, ro + 4 * k + 2);
        P[k] = _mm512_permutex2var_epi32(Y0, q03, Y1);
        Q[k] = _mm512_permutex2var_epi32(Y0, q47, Y1);
    }
    lanes4x4(P, T);
    lanes4x4(Q, T + 4);
}

/* Sixteen Q8_0 rows (row i at w0 + ro[i]) against NT <= TR_TILE_MAX tokens. */
TILE512 void q8_rows16(int64_t n, const uint8_t *w0, const int32_t ro[16], const char *a, size_t as, int NT,
                       __m512 *acc) {
    const int64_t nb = n / 32;
    const size_t qs = offsetof(tr_block_q8_0, qs), bytes = sizeof(tr_block_q8_0);
    /* Each row's first four bytes (its scale d) copied a block ahead to
     * dm[b & 1], so that one vector load finds them stored (a gather took
     * as long as the rest of a block's decoding on the Zen 4). */
    int32_t dm[2][16] __attribute__((aligned(64)));
    _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) memcpy(&dm[0][i], w0 + ro[i], 4);
    FOR_T512(j) acc[j] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *base = w0 + (size_t)b * bytes;
        const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_load_si512(dm[b & 1])));
        if (b + 1 < nb)
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) memcpy(&dm[(b + 1) & 1][i], base + bytes + ro[i], 4);
        __m512i W[8];
        rows16x32(base + qs, ro, W);
        const __m512i flip = _mm512_set1_epi8((char)0x80);
        _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) W[k] = _mm512_xor_si512(W[k], flip);
        FOR_T512(j) {
            const tr_q8a *x = ACT(j, b);
            /* exact, in two chains of four (the order does not matter); the
             * offset (wrapping: a hostile file's NaN activations leave sums
             * far out of range) starts the first */
            __m512i s0 = _mm512_set1_epi32((int32_t)((uint32_t)-128 * (uint32_t)x->sum));
            __m512i s1 = _mm512_setzero_si512();
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                s0 = dpbusd_bcast(s0, W[k], x->qs + 4 * k);
                s1 = dpbusd_bcast(s1, W[4 + k], x->qs + 16 + 4 * k);
            }
            const __m512 xd = _mm512_set1_ps(x->d);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, xd), acc[j]);
        }
    }
}

/* The Q8_0 kernel: q8_rows16 over sixteens of rows, in tiles of up to
 * TR_TILE_MAX tokens. Rows come from the sixteen parts of the rows handed
 * in (sixteen far-apart sequential streams), the last nr % 16 rows as a
 * sixteen with the last row repeated. Row offsets are int32: a call over
 * more than 1 GiB of rows goes in parts. */
TGT512 void tr_avx512_gemm_q8_0(int64_t n, const void *w_, size_t ws, int nr, const void *a_, size_t as, int nt,
                                float *y, size_t ys) {
    const uint8_t *w = w_;
    const char *a = a_;
    const int part = (int)((1u << 30) / ws);
    if (nr > part) {
        for (int r0 = 0; r0 < nr; r0 += part)
            tr_avx512_gemm_q8_0(n, w + (size_t)r0 * ws, ws, nr - r0 < part ? nr - r0 : part, a, as, nt, y + r0, ys);
        return;
    }
    const int h = nr / 16;
    for (int q = 0; q <= h; q++) {
        int rows[16];
        if (q < h)
            for (int i = 0; i < 16; i++) rows[i] = q + i * h;
        else if (16 * h < nr)
            for (int i = 0; i < 16; i++) rows[i] = 16 * h + i < nr ? 16 * h + i : nr - 1;
        else
            break;
        int32_t ro[16];
        for (int i = 0; i < 16; i++) ro[i] = (int32_t)((size_t)(rows[i] - rows[0]) * ws);
        const uint8_t *w0 = w + (size_t)rows[0] * ws;
        for (int t0 = 0; t0 < nt; t0 += TR_TILE_MAX) {
            __m512 acc[TR_TILE_MAX];
            const char *at = a + (size_t)t0 * as;
            int k = nt - t0 < TR_TILE_MAX ? nt - t0 : TR_TILE_MAX;
            switch (k) { /* each tile width its own inlined copy: the accumulators stay in registers */
            case 1: q8_rows16(n, w0, ro, at, as, 1, acc); break;
            case 2: q8_rows16(n, w0, ro, at, as, 2, acc); break;
            case 3: q8_rows16(n, w0, ro, at, as, 3, acc); break;
            case 4: q8_rows16(n, w0, ro, at, as, 4, acc); break;
            case 5: q8_rows16(n, w0, ro, at, as, 5, acc); break;
            case 6: q8_rows16(n, w0, ro, at, as, 6, acc); break;
            case 7: q8_rows16(n, w0, ro, at, as, 7, acc); break;
            default: q8_rows16(n, w0, ro, at, as, 8, acc); break;
            }
            for (int j = 0; j < k; j++) {
                float out[16];
                _mm512_storeu_ps(out, acc[j]);
                for (int i = 0; i < 16; i++) y[(size_t)(t0 + j) * ys + rows[i]] = out[i];
            }
        }
    }
}

const tr_gemm_row tr_avx512_legacy_gemm_rows[] = {
    {TR_TYPE_Q8_0, TR_ACT_Q8, tr_avx512_gemm_q8_0},
    {TR_TYPE_Q4_0, TR_ACT_Q8, gemm_q4_0},
    {TR_TYPE_Q4_1, TR_ACT_Q8, gemm_q4_1},
    {TR_TYPE_Q5_0, TR_ACT_Q8, gemm_q5_0},
    {TR_TYPE_Q5_1, TR_ACT_Q8, gemm_q5_1},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx512_legacy_gemm_rows[] = {{-1, 0, NULL}};
#endif
