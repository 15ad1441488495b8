/* AVX-512 kernels for the layouts weights are repacked into at load
 * (src/model/repack.c; TR_ISA_AVX512, the shape of kernels.h, with rows
 * taken in whole groups of sixteen from a group's start): Q4_K_X16 here,
 * Q4_0_X16 / Q5_0_X16 / Q8_0_X16 below.
 *
 * Q4_K_X16 (quant/blocks.h): a super-block of sixteen Q4_K rows laid out
 * so that each zmm load holds one thing of all sixteen rows, row i in int32
 * lane i: four quant bytes (eight values: a low and a high nibble each),
 * and after a vpmovzx the sixteen scales of a sub-block or mins of a pair.
 * Per token a sub-block is eight vpdpbusd against the token's quants
 * broadcast four at a time, leaving each row's exact sub-block sum in its
 * lane; a vpmulld by the sixteen scales and an add make the rows' sumi, four
 * vpdpwssd of the mins against the activations' sums per 32 their summ, and
 * the float step is one vector for sixteen rows. No horizontal sums, no
 * shuffles: what the sixteen-row Q8_0 kernel (matmul_avx512_legacy.c) does
 * with in-register transposition, the repack did once. A group is one
 * sequential stream of 2368 bytes per super-block, so one token reads
 * memory as fast as the file's rows would.
 *
 * The arithmetic is the scalar reference's (matmul_ref.c dot_q4_k), per
 * row, token and super-block in order from s = 0:
 *   s = s + xd * (d * float(sumi) - dmin * float(summ))
 * each operation rounded on its own (this file compiles without FMA
 * contraction: CMakeLists.txt), so a result equals the reference's bit for
 * bit, whatever the batch (a lane depends only on its row and token). */
#include "amx_common.h"

#include "quant/blocks.h"

#ifdef TR_HAVE_AVX512_KERNELS

#define ACTKP(j, b) ((const tr_q8kp *)(a + (size_t)(j) * as) + (b))

/* acc + each lane's word pairs times the two int16 at p (broadcast). */
TILE512 __m512i dpwssd_bcast(__m512i acc, __m512i w, const int16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(v));
}

/* One or two tokens over a group are bound by memory: the lines of the
 * block PF_AHEAD bytes on are asked for while this one computes (on a
 * Sapphire Rapids, with four streams and 2 MiB pages, one token of
 * Q4_K_X16 read 22-25 GB/s on 2 threads so against 19-22 without, or with
 * the prefetch a block further; Q4_0_X16 / Q5_0_X16 7-20 % faster with it
 * on one stream; 4-16 KiB ahead was slower). */
enum { PF_AHEAD = 2048 };
TILE512 void prefetch_ahead(const void *blk, size_t bytes) {
    const char *p = (const char *)blk + PF_AHEAD;
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* S groups of sixteen rows (gs bytes apart) against NT <= TR_TILE_MAX / S
 * tokens: out[s * NT + j] lane i = row i of group s's result for token j.
 * S > 1 (one token) reads S streams side by side: a single sequential
 * stream per thread left a Sapphire Rapids' prefetchers short (one token
 * of Q4_0_X16 18-20 GB/s on 2 threads against 22-23 with four streams).
 * gemm_x16 makes each stream a run of consecutive groups, a call per group
 * of the run: stream s's next group follows in memory, where the prefetch
 * of its last block points (streams of one group each, the next call's
 * groups elsewhere, read Q4_K_X16 at 23.4-25.0 GB/s against 25.0-27.1). */
TILE512 void q4k_x16_tile(int64_t n, const tr_block_q4_K_x16 *g0, size_t gs, int S, const char *a, size_t as, int NT,
                          __m512 *out) {
    __m512 acc[TR_TILE_MAX];
    for (int i = 0; i < S * NT; i++) acc[i] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < n / 256; b++) _Pragma("GCC unroll 4") for (int st = 0; st < S; st++) {
        const tr_block_q4_K_x16 *g = (const tr_block_q4_K_x16 *)((const uint8_t *)g0 + (size_t)st * gs) + b;
        __m512i sumi[TR_TILE_MAX];
        _Pragma("GCC unroll 8") for (int sb = 0; sb < 8; sb++) {
            const int c = sb / 2, hi = sb & 1;
            if (NT <= 2) /* the next block, five of its 37 lines a sub-block (all at once: 2-4 % slower) */
                for (int l = 0; l < 5; l++) _mm_prefetch((const char *)(g + 1) + 64 * (5 * sb + l), _MM_HINT_T0);
            __m512i W[8];
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
                const __m512i q = _mm512_loadu_si512(g->qs[c][k]);
                W[k] = _mm512_and_si512(hi ? _mm512_srli_epi16(q, 4) : q, m4);
            }
            const __m512i S = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)g->sc[sb]));
            FOR_T512(j) {
                const int8_t *xq = ACTKP(j, b)->qs + 32 * sb;
                __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                    s0 = dpbusd_bcast(s0, W[k], xq + 4 * k);
                    s1 = dpbusd_bcast(s1, W[4 + k], xq + 16 + 4 * k);
                }
                const __m512i p = _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), S);
                sumi[j] = sb == 0 ? p : _mm512_add_epi32(sumi[j], p);
            }
        }
        __m512i M[4];
        _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++)
            M[p] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)g->mn[p]));
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g->d));
        const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g->dmin));
        FOR_T512(j) {
            const tr_q8kp *x = ACTKP(j, b);
            __m512i summ = _mm512_setzero_si512();
            _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) summ = dpwssd_bcast(summ, M[p], x->bsums32 + 2 * p);
            const __m512 t1 = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(sumi[j]));
            const __m512 t2 = _mm512_mul_ps(dmw, _mm512_cvtepi32_ps(summ));
            acc[st * NT + j] = _mm512_add_ps(acc[st * NT + j], _mm512_mul_ps(_mm512_set1_ps(x->d), _mm512_sub_ps(t1, t2)));
        }
    }
    for (int i = 0; i < S * NT; i++) out[i] = acc[i];
}

/* Q4_0_X16, Q5_0_X16, Q8_0_X16: a block of sixteen rows decoded once per
 * tile into eight zmm of unsigned bytes, W[k] lane i holding row i's values
 * 4k .. 4k + 3 (plus the format's offset: 8, 16 or 128); per token eight
 * vpdpbusd against the token's quants broadcast four at a time, starting
 * from the offset times the token's sum, leave each row's exact block sum in
 * its lane. The float step is the reference's (dot_q4_0, dot_q5_0,
 * dot_q8_0): s = s + (d * xd) * float(sumi). */
enum { X_Q4_0, X_Q5_0, X_Q8_0, X_Q4_K };
#define X_BYTES(F) ((F) == X_Q4_0 ? sizeof(tr_block_q4_0_x16) : (F) == X_Q5_0 ? sizeof(tr_block_q5_0_x16) : sizeof(tr_block_q8_0_x16))
#define X_OFFSET(F) ((F) == X_Q4_0 ? 8u : (F) == X_Q5_0 ? 16u : 128u)
#define ACTQ(j, b) ((const tr_q8a *)(a + (size_t)(j) * as) + (b))

/* S groups (gs bytes apart) against NT tokens, as q4k_x16_tile. */
TILE512 void lx16_tile(int64_t n, const uint8_t *g0, size_t gs, int S, const char *a, size_t as, int NT, __m512 *out,
                       const int F) {
    __m512 acc[TR_TILE_MAX];
    for (int i = 0; i < S * NT; i++) acc[i] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10);
    for (int64_t b = 0; b < n / 32; b++) _Pragma("GCC unroll 4") for (int st = 0; st < S; st++) {
        const uint8_t *g = g0 + (size_t)st * gs + (size_t)b * X_BYTES(F);
        if (NT <= 2) prefetch_ahead(g, X_BYTES(F));
        __m512i W[8];
        if (F == X_Q8_0) {
            const tr_block_q8_0_x16 *x = (const tr_block_q8_0_x16 *)g;
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) W[k] = _mm512_loadu_si512(x->qs[k]);
        } else {
            const uint8_t(*qs)[16][4] = F == X_Q4_0 ? ((const tr_block_q4_0_x16 *)g)->qs : ((const tr_block_q5_0_x16 *)g)->qs;
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                const __m512i q = _mm512_loadu_si512(qs[k]);
                W[k] = _mm512_and_si512(q, m4);
                W[4 + k] = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
            }
            if (F == X_Q5_0) {
                const uint64_t *hm = ((const tr_block_q5_0_x16 *)g)->hm;
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) W[k] = _mm512_mask_add_epi8(W[k], hm[k], W[k], b4);
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g)); /* d[16] first in every layout */
        FOR_T512(j) {
            const tr_q8a *x = ACTQ(j, b);
            /* exact; the offset (wrapping: a hostile file's NaN activations
             * leave sums far out of range) starts the first chain */
            __m512i s0 = _mm512_set1_epi32((int32_t)(0u - X_OFFSET(F) * (uint32_t)x->sum));
            __m512i s1 = _mm512_setzero_si512();
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                s0 = dpbusd_bcast(s0, W[k], x->qs + 4 * k);
                s1 = dpbusd_bcast(s1, W[4 + k], x->qs + 16 + 4 * k);
            }
            const __m512 t = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x->d)), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)));
            acc[st * NT + j] = _mm512_add_ps(acc[st * NT + j], t);
        }
    }
    for (int i = 0; i < S * NT; i++) out[i] = acc[i];
}

/* Tile of NT tokens of the format F's S groups from gp, gs bytes apart. */
#define X16_TILE_S(F, S, NT, gs)                                                                            \
    do {                                                                                                    \
        if ((F) == X_Q4_K) q4k_x16_tile(n, (const tr_block_q4_K_x16 *)gp, gs, S, at, as, NT, acc);          \
        else lx16_tile(n, gp, gs, S, at, as, NT, acc, F);                                                   \
    } while (0)
#define X16_TILE(F, NT) X16_TILE_S(F, 1, NT, 16 * ws)
enum { X16_STREAMS = 4 }; /* streams a one-token call reads side by side (2..4), each a run of groups */

/* The rows handed in (nr a multiple of 16, from a group's start: matmul.c
 * cuts chunks of whole groups) group by group, each against the tokens in
 * tiles of up to TR_TILE_MAX. */
TILE512 void gemm_x16(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as, int nt, float *y,
                      size_t ys, const int F) {
    const char *a = a_;
    int g = 0;
    if (nt == 1 && nr >= 32) {
        /* up to X16_STREAMS streams side by side, stream st the call's
         * groups st * q .. st * q + q - 1 in turn: consecutive groups are
         * contiguous, so each stream is one long sequential read and the
         * prefetch in a group's last block reaches its next group */
        const int G = nr / 16, S = G < X16_STREAMS ? G : X16_STREAMS, q = G / S;
        const size_t gs = (size_t)q * 16 * ws;
        for (int i = 0; i < q; i++) {
            const uint8_t *gp = (const uint8_t *)w + (size_t)i * 16 * ws;
            const char *at = a;
            __m512 acc[TR_TILE_MAX];
            switch (S) {
            case 2: X16_TILE_S(F, 2, 1, gs); break;
            case 3: X16_TILE_S(F, 3, 1, gs); break;
            default: X16_TILE_S(F, X16_STREAMS, 1, gs); break;
            }
            for (int st = 0; st < S; st++) _mm512_storeu_ps(y + 16 * ((size_t)st * q + i), acc[st]);
        }
        g = 16 * S * q; /* the groups left (fewer than S) one by one */
    }
    for (; g + 16 <= nr; g += 16) {
        const uint8_t *gp = (const uint8_t *)w + (size_t)g * ws;
        for (int t0 = 0; t0 < nt; t0 += TR_TILE_MAX) {
            __m512 acc[TR_TILE_MAX];
            const char *at = a + (size_t)t0 * as;
            const int k = nt - t0 < TR_TILE_MAX ? nt - t0 : TR_TILE_MAX;
            switch (k) { /* each tile width its own inlined copy: the accumulators stay in registers */
            case 1: X16_TILE(F, 1); break;
            case 2: X16_TILE(F, 2); break;
            case 3: X16_TILE(F, 3); break;
            case 4: X16_TILE(F, 4); break;
            case 5: X16_TILE(F, 5); break;
            case 6: X16_TILE(F, 6); break;
            case 7: X16_TILE(F, 7); break;
            default: X16_TILE(F, 8); break;
            }
            for (int j = 0; j < k; j++) _mm512_storeu_ps(y + (size_t)(t0 + j) * ys + g, acc[j]);
        }
    }
}

/* A tier's four kernels (body: gemm_x16, or gemm_x16_amx below, with the
 * format as its last argument) and its list of rows. */
#define X16_KERNELS(tgt, body, sfx)                                                                              \
    X16_GEMM(tgt, body, gemm_q4_k_x16##sfx, X_Q4_K)                                                               \
    X16_GEMM(tgt, body, gemm_q4_0_x16##sfx, X_Q4_0)                                                               \
    X16_GEMM(tgt, body, gemm_q5_0_x16##sfx, X_Q5_0)                                                               \
    X16_GEMM(tgt, body, gemm_q8_0_x16##sfx, X_Q8_0)
#define X16_GEMM(tgt, body, name, F)                                                                             \
    tgt static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nt, float *y, \
                         size_t ys) {                                                                            \
        body(n, w, ws, nr, a, as, nt, y, ys, F);                                                                 \
    }
#define X16_ROWS(sfx)                                                                                            \
    {                                                                                                            \
        {TR_TYPE_Q4_K_X16, TR_ACT_Q8KP, gemm_q4_k_x16##sfx}, {TR_TYPE_Q4_0_X16, TR_ACT_Q8, gemm_q4_0_x16##sfx},   \
            {TR_TYPE_Q5_0_X16, TR_ACT_Q8, gemm_q5_0_x16##sfx}, {TR_TYPE_Q8_0_X16, TR_ACT_Q8, gemm_q8_0_x16##sfx},  \
            {-1, 0, NULL},                                                                                       \
    }

X16_KERNELS(TGT512, gemm_x16, )
const tr_gemm_row tr_avx512_repack_gemm_rows[] = X16_ROWS();

/* ---------------------------------------------------------------- AMX (TR_ISA_AMX) */

/* The same layouts on the tile unit. The repacked group is already what a
 * tile product wants as its second operand: a zmm of the layout (sixteen
 * rows' four values each) is one 64-byte row of a B tile, so a block's
 * (sub-block's) eight decoded vectors W[k] are a B tile of 8 x 64 bytes, and
 * the activations need no transposition: sixteen tokens' 32 quants, read in
 * place at the token stride, are the A tile (16 x 32 bytes). tdpbsud
 * (signed activations, unsigned weights) leaves in C[j][i] token j's exact
 * sum for row i: lane i of the vector kernels' int32 vector, the same
 * integer. From there each token takes the vector kernels' own float steps
 * on its zmm of sixteen rows, so a token's result is the reference's bits
 * whichever kernel ran it, and a call's tokens may be split between them:
 * whole groups of sixteen go to the tiles, the rest (and calls under
 * AMX_X16_MIN tokens, where the tiles' columns are too empty to pay) to
 * gemm_x16. Two blocks (sub-blocks) are in flight: tmm0/1 results, tmm2/3
 * activations, tmm4/5 weights. */
enum { AMX_X16_MIN = 16 };

TGTAMX static inline void x16_amx_config(void) {
    static const uint8_t rows[8] = {16, 16, 16, 16, 8, 8, 0, 0};
    static const uint16_t colsb[8] = {64, 64, 32, 32, 64, 64, 0, 0};
    amx_config(rows, colsb);
}

/* Block (sub-block) products into result tile c from activations at xq
 * (16 tokens, stride as) and weights at wq (8 x 64 bytes). */
#define X16_PRODUCT(c, at, wt, xq, wq)          \
    do {                                        \
        _tile_zero(c);                          \
        _tile_loadd(at, xq, (long)as);          \
        _tile_loadd(wt, wq, 64);                \
        _tile_dpbsud(c, at, wt);                \
    } while (0)

/* The eight weight vectors of a Q4_0_X16 / Q5_0_X16 block at g, decoded as
 * lx16_tile decodes them, into W (8 x 64 bytes). */
TILE512 void x16_decode(const uint8_t *g, const int F, uint8_t W[8][64]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const uint8_t(*qs)[16][4] = F == X_Q4_0 ? ((const tr_block_q4_0_x16 *)g)->qs : ((const tr_block_q5_0_x16 *)g)->qs;
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        const __m512i q = _mm512_loadu_si512(qs[k]);
        __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
        if (F == X_Q5_0) {
            const uint64_t *hm = ((const tr_block_q5_0_x16 *)g)->hm;
            const __m512i b4 = _mm512_set1_epi8(0x10);
            lo = _mm512_mask_add_epi8(lo, hm[k], lo, b4);
            hi = _mm512_mask_add_epi8(hi, hm[4 + k], hi, b4);
        }
        _mm512_store_si512(W[k], lo);
        _mm512_store_si512(W[4 + k], hi);
    }
}

/* The float step of a legacy block for 16 tokens (tokens t0.. at a) from
 * the sums C: lx16_tile's, token by token. */
TILE512 void lx16_step(__m512 acc[16], const int32_t C[16][16], const uint8_t *g, const char *a, size_t as, int64_t b,
                       const int F) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
    _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++) {
        const tr_q8a *x = ACTQ(j, b);
        const __m512i s = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(0u - X_OFFSET(F) * (uint32_t)x->sum)),
                                           _mm512_load_si512(C[j]));
        const __m512 t = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(x->d)), _mm512_cvtepi32_ps(s));
        acc[j] = _mm512_add_ps(acc[j], t);
    }
}

/* One group of sixteen rows against sixteen tokens (legacy F), blocks in
 * pairs; out[j] lane i = row i's result for token j. */
TGTAMX static inline __attribute__((always_inline)) void lx16_amx16(int64_t n, const uint8_t *g, const char *a,
                                                                     size_t as, __m512 acc[16], const int F) {
    uint8_t W[2][8][64] __attribute__((aligned(64)));
    int32_t C[2][16][16] __attribute__((aligned(64)));
    _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
    const int64_t nb = n / 32;
    const size_t bytes = X_BYTES(F);
    for (int64_t b = 0; b < nb; b += 2) {
        const uint8_t *g0 = g + (size_t)b * bytes, *g1 = g0 + bytes;
        const bool two = b + 1 < nb;
        if (F != X_Q8_0) {
            x16_decode(g0, F, W[0]);
            if (two) x16_decode(g1, F, W[1]);
        }
        __asm__ volatile("" ::: "memory"); /* the tile loads read W: GCC does not know */
        X16_PRODUCT(0, 2, 4, ACTQ(0, b)->qs, F == X_Q8_0 ? (const void *)((const tr_block_q8_0_x16 *)g0)->qs : W[0]);
        if (two)
            X16_PRODUCT(1, 3, 5, ACTQ(0, b + 1)->qs,
                        F == X_Q8_0 ? (const void *)((const tr_block_q8_0_x16 *)g1)->qs : W[1]);
        _tile_stored(0, C[0], 64);
        if (two) _tile_stored(1, C[1], 64);
        __asm__ volatile("" ::: "memory");
        lx16_step(acc, C[0], g0, a, as, b, F);
        if (two) lx16_step(acc, C[1], g1, a, as, b + 1, F);
    }
}

/* Q4_K_X16 on the tiles, a group of sixteen rows against na (a multiple of
 * 16, <= TR_AMX_TOKENS) tokens. A sub-block's integer scale (0..63) goes
 * into its weight bytes as two parts, sc = lo + 16 hi (q * lo <= 225 and q
 * * hi <= 45 are unsigned bytes), so a super-block is two chains of four
 * 64-deep products (one per sub-block pair c: B rows 0-7 the low nibbles,
 * sub-block 2c, 8-15 the high ones, 2c + 1; A the token's 64 quants of the
 * pair in place) and isum = C_lo + 16 C_hi: the exact sum of sc_j * dot_j
 * that q4k_x16_tile forms with vpmulld. Each super-block is decoded and
 * scaled once for all the tokens (one vpmullw per nibble vector gives both
 * parts: a byte q times lo + 256 hi is q lo in the low byte, q hi in the
 * high); the mins and the float step are q4k_x16_tile's, per token on its
 * zmm of sixteen rows. */
TGTAMX static inline __attribute__((always_inline)) void q4k_x16_amx(int64_t n, const tr_block_q4_K_x16 *g,
                                                                      const char *a, size_t as, int na, float *y,
                                                                      size_t ys) {
    uint8_t WL[4][16][64] __attribute__((aligned(64))), WH[4][16][64] __attribute__((aligned(64)));
    int32_t CL[16][16] __attribute__((aligned(64))), CH[16][16] __attribute__((aligned(64)));
    __m512 acc[TR_AMX_TOKENS];
    for (int j = 0; j < na; j++) acc[j] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f), lo8 = _mm512_set1_epi16(0x00ff), hi8 = _mm512_set1_epi16((short)0xff00);
    for (int64_t b = 0; b < n / 256; b++, g++) {
        _Pragma("GCC unroll 1") for (int c = 0; c < 4; c++) {
            __m512i s16[2]; /* per lane (row): lo + 256 hi in both words, sub-blocks 2c and 2c + 1 */
            _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
                const __m512i S = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)g->sc[2 * c + h]));
                const __m512i v = _mm512_or_si512(_mm512_and_si512(S, _mm512_set1_epi32(15)),
                                                  _mm512_slli_epi32(_mm512_srli_epi32(S, 4), 8));
                s16[h] = _mm512_or_si512(v, _mm512_slli_epi32(v, 16));
            }
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
                const __m512i q = _mm512_loadu_si512(g->qs[c][k]);
                _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
                    const __m512i nb = _mm512_and_si512(h ? _mm512_srli_epi16(q, 4) : q, m4);
                    const __m512i E = _mm512_mullo_epi16(_mm512_and_si512(nb, lo8), s16[h]);
                    const __m512i O = _mm512_mullo_epi16(_mm512_srli_epi16(nb, 8), s16[h]);
                    _mm512_store_si512(WL[c][8 * h + k], _mm512_or_si512(_mm512_and_si512(E, lo8), _mm512_slli_epi16(O, 8)));
                    _mm512_store_si512(WH[c][8 * h + k], _mm512_or_si512(_mm512_srli_epi16(E, 8), _mm512_and_si512(O, hi8)));
                }
            }
        }
        __m512i M[4];
        _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++)
            M[p] = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)g->mn[p]));
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g->d));
        const __m512 dmw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g->dmin));
        __asm__ volatile("" ::: "memory"); /* the tile loads read WL / WH: GCC does not know */
        for (int t0 = 0; t0 < na; t0 += 16) {
            const int8_t *xq = ACTKP(t0, b)->qs;
            _tile_zero(0);
            _tile_zero(1);
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c += 2) {
                _tile_loadd(2, xq + 64 * c, (long)as);
                _tile_loadd(4, WL[c], 64);
                _tile_loadd(5, WH[c], 64);
                _tile_dpbsud(0, 2, 4);
                _tile_dpbsud(1, 2, 5);
                _tile_loadd(3, xq + 64 * (c + 1), (long)as);
                _tile_loadd(6, WL[c + 1], 64);
                _tile_loadd(7, WH[c + 1], 64);
                _tile_dpbsud(0, 3, 6);
                _tile_dpbsud(1, 3, 7);
            }
            _tile_stored(0, CL, 64);
            _tile_stored(1, CH, 64);
            __asm__ volatile("" ::: "memory");
            _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++) {
                const tr_q8kp *x = ACTKP(t0 + j, b);
                const __m512i sumi = _mm512_add_epi32(_mm512_load_si512(CL[j]), _mm512_slli_epi32(_mm512_load_si512(CH[j]), 4));
                __m512i summ = _mm512_setzero_si512();
                _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) summ = dpwssd_bcast(summ, M[p], x->bsums32 + 2 * p);
                const __m512 t1 = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(sumi));
                const __m512 t2 = _mm512_mul_ps(dmw, _mm512_cvtepi32_ps(summ));
                acc[t0 + j] = _mm512_add_ps(acc[t0 + j], _mm512_mul_ps(_mm512_set1_ps(x->d), _mm512_sub_ps(t1, t2)));
            }
        }
    }
    for (int j = 0; j < na; j++) _mm512_storeu_ps(y + (size_t)j * ys, acc[j]);
}

/* Whole groups of sixteen tokens on the tiles, group of rows by group of
 * rows; the other tokens (and every token of a call under AMX_X16_MIN) in
 * gemm_x16. */
TGTAMX static inline __attribute__((always_inline)) void gemm_x16_amx(int64_t n, const void *w, size_t ws, int nr,
                                                                       const void *a_, size_t as, int nt, float *y,
                                                                       size_t ys, const int F) {
    const char *a = a_;
    const int na = nt < AMX_X16_MIN ? 0 : nt / 16 * 16;
    if (na) {
        if (F == X_Q4_K) amx_config_full();
        else x16_amx_config();
        for (int g = 0; g + 16 <= nr; g += 16) {
            const uint8_t *gp = (const uint8_t *)w + (size_t)g * ws;
            if (F == X_Q4_K) {
                q4k_x16_amx(n, (const tr_block_q4_K_x16 *)gp, a, as, na, y + g, ys);
                continue;
            }
            for (int t0 = 0; t0 < na; t0 += 16) {
                __m512 acc[16];
                lx16_amx16(n, gp, a + (size_t)t0 * as, as, acc, F);
                _Pragma("GCC unroll 16") for (int j = 0; j < 16; j++)
                    _mm512_storeu_ps(y + (size_t)(t0 + j) * ys + g, acc[j]);
            }
        }
        _tile_release();
    }
    if (na < nt) gemm_x16(n, w, ws, nr, a + (size_t)na * as, as, nt - na, y + (size_t)na * ys, ys, F);
}

X16_KERNELS(TGTAMX, gemm_x16_amx, _amx)
const tr_gemm_row tr_amx_repack_gemm_rows[] = X16_ROWS(_amx);

#else
const tr_gemm_row tr_avx512_repack_gemm_rows[] = {{-1, 0, NULL}};
const tr_gemm_row tr_amx_repack_gemm_rows[] = {{-1, 0, NULL}};
#endif
