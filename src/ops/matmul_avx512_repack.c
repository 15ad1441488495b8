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
#include "avx512_common.h"

#include "quant/blocks.h"

#ifdef TR_HAVE_AVX512_KERNELS

#define ACTKP(j, b) ((const tr_q8kp *)(a + (size_t)(j) * as) + (b))

/* acc + each lane's word pairs times the two int16 at p (broadcast). */
TILE512 __m512i dpwssd_bcast(__m512i acc, __m512i w, const int16_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_dpwssd_epi32(acc, w, _mm512_set1_epi32(v));
}

/* One group of sixteen rows against NT <= TR_TILE_MAX tokens: out[j] lane i
 * = row i's result for token j. */
TILE512 void q4k_x16_tile(int64_t n, const tr_block_q4_K_x16 *g, const char *a, size_t as, int NT, __m512 *out) {
    __m512 acc[TR_TILE_MAX];
    FOR_T512(j) acc[j] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t b = 0; b < n / 256; b++, g++) {
        __m512i sumi[TR_TILE_MAX];
        _Pragma("GCC unroll 8") for (int sb = 0; sb < 8; sb++) {
            const int c = sb / 2, hi = sb & 1;
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
            acc[j] = _mm512_add_ps(acc[j], _mm512_mul_ps(_mm512_set1_ps(x->d), _mm512_sub_ps(t1, t2)));
        }
    }
    FOR_T512(j) out[j] = acc[j];
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

TILE512 void lx16_tile(int64_t n, const uint8_t *g, const char *a, size_t as, int NT, __m512 *out, const int F) {
    __m512 acc[TR_TILE_MAX];
    FOR_T512(j) acc[j] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10);
    for (int64_t b = 0; b < n / 32; b++, g += X_BYTES(F)) {
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
            acc[j] = _mm512_add_ps(acc[j], t);
        }
    }
    FOR_T512(j) out[j] = acc[j];
}

/* Tile of NT tokens of the format F's group at gp. */
#define X16_TILE(F, NT)                                                                                     \
    do {                                                                                                    \
        if ((F) == X_Q4_K) q4k_x16_tile(n, (const tr_block_q4_K_x16 *)gp, at, as, NT, acc);                 \
        else lx16_tile(n, gp, at, as, NT, acc, F);                                                          \
    } while (0)

/* The rows handed in (nr a multiple of 16, from a group's start: matmul.c
 * cuts chunks of whole groups) group by group, each against the tokens in
 * tiles of up to TR_TILE_MAX. */
TILE512 void gemm_x16(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as, int nt, float *y,
                      size_t ys, const int F) {
    const char *a = a_;
    for (int g = 0; g + 16 <= nr; g += 16) {
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

#define GEMM_X16(name, F)                                                                                        \
    TGT512 static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nt, float *y, \
                            size_t ys) {                                                                         \
        gemm_x16(n, w, ws, nr, a, as, nt, y, ys, F);                                                             \
    }
GEMM_X16(gemm_q4_k_x16, X_Q4_K)
GEMM_X16(gemm_q4_0_x16, X_Q4_0)
GEMM_X16(gemm_q5_0_x16, X_Q5_0)
GEMM_X16(gemm_q8_0_x16, X_Q8_0)

const tr_gemm_row tr_avx512_repack_gemm_rows[] = {
    {TR_TYPE_Q4_K_X16, TR_ACT_Q8KP, gemm_q4_k_x16},
    {TR_TYPE_Q4_0_X16, TR_ACT_Q8, gemm_q4_0_x16},
    {TR_TYPE_Q5_0_X16, TR_ACT_Q8, gemm_q5_0_x16},
    {TR_TYPE_Q8_0_X16, TR_ACT_Q8, gemm_q8_0_x16},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx512_repack_gemm_rows[] = {{-1, 0, NULL}};
#endif
