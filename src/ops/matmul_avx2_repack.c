/* AVX2 and AVX-VNNI kernels for the layouts weights are repacked into at
 * load (src/model/repack.c; quant/blocks.h; the AVX-512 ones are
 * matmul_avx512_repack.c, whose comment says why the layout pays): the same
 * _X16 layouts, taken as two halves of eight rows. A zmm of the layout is
 * two ymm, rows 0-7 in the first 32 bytes and rows 8-15 in the next, so row
 * 8h + i is int32 lane i of half h's ymm. Rows are taken group by group;
 * a tile of three or four tokens takes the halves in two passes over the
 * group (its accumulators fill the sixteen ymm), one or two tokens take
 * both halves of each block in turn, one pass with a prefetch ahead (bound
 * by memory: two passes measured 12-20 % slower for one token on 2 threads
 * of a Zen 5). The body (matmul_avx2_repack_body.h) is compiled once per
 * tier.
 *
 * Per token and half-block, each lane's exact integer sum of its row's
 * quants against the token's, each weight vector loaded and split into its
 * nibbles once for the tile's tokens:
 *   - AVX-VNNI: vpdpbusd against the token's quants broadcast four at a
 *     time, as the AVX-512 kernels; Q4_K's sub-block sums times their
 *     scales by vpmulld;
 *   - AVX2: vpmaddubsw (unsigned weights times the token's signed quants,
 *     pairs added in int16) summed in int16 and widened by vpmaddwd:
 *     Q4_0 / Q4_K nibbles (<= 15) take eight vectors in one int16 sum
 *     (|sum| <= 8 * 2 * 15 * 128 = 30720), Q5_0's five bits (<= 31) two
 *     sums of four (<= 31744): no saturation, so the sums are exact. Q4_K's
 *     scale multiplies in the widening vpmaddwd (the scale in both int16 of
 *     its lane). Q8_0's stored bytes (int8 + 128, up to 255) would
 *     saturate vpmaddubsw: its AVX2 kernel (q8x16) flips them back to int8
 *     and moves their signs onto the activations, widening each vector's
 *     pairs at once (25-35 % faster prompts than the file's rows, on an
 *     Emerald Rapids capped at AVX2).
 * The float steps are the scalar reference's operations in its order, as in
 * the AVX-512 file (this file compiles without FMA contraction:
 * CMakeLists.txt), so a repacked matrix computes the reference's bits on
 * every tier, whatever the batch. */
#include "avx2_common.h"

#include "quant/blocks.h"

#ifdef TR_HAVE_AVX2_KERNELS

enum { X_Q4_0, X_Q5_0, X_Q8_0, X_Q4_K };
#define X_BYTES(F) ((F) == X_Q4_0 ? sizeof(tr_block_q4_0_x16) : (F) == X_Q5_0 ? sizeof(tr_block_q5_0_x16) : sizeof(tr_block_q8_0_x16))
#define X_OFFSET(F) ((F) == X_Q4_0 ? 8u : (F) == X_Q5_0 ? 16u : 128u)
#define ACTQ(j, b) ((const tr_q8a *)(a + (size_t)(j) * as) + (b))
#define ACTKP(j, b) ((const tr_q8kp *)(a + (size_t)(j) * as) + (b))

/* Tokens per tile (the wrapper loops over tiles of the TR_TILE_MAX it is
 * handed): two accumulators per token, and the weight vectors being split, fill the registers. */
enum { XT = 4 };
/* Groups a one-token call reads side by side: four for the legacy layouts,
 * two for Q4_K_X16 (one token on 2 threads of a Sapphire Rapids capped at
 * AVX2, one stream -> these, the loop over them rolled: Q4_0_X16 22.9-23.3
 * -> 24.0-27.4 GB/s, Q8_0_X16 22.4-24.7 -> 25.3-28.2, Q5_0_X16 19.8-20.7
 * -> 23.8-23.9, Q4_K_X16 18.9-21.0 -> 23.3-26.7 with its prefetch spread
 * over the block; three or four Q4_K streams measured no better). */
enum { X_STREAMS = 4 };
#define X_STREAMS_OF(F) ((F) == X_Q4_K ? 2 : X_STREAMS)
#define FOR_XT(j) _Pragma("GCC unroll 4") for (int j = 0; j < NT; j++)

TILE __m256i bcast4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* One pass over a group (one or two tokens) is bound by memory: the lines
 * of the block PF_AHEAD bytes on are asked for while this one computes. */
enum { PF_AHEAD = 2048 };
TILE void prefetch_ahead(const void *blk, size_t bytes) {
    const char *p = (const char *)blk + PF_AHEAD;
    for (size_t o = 0; o < bytes; o += 64) _mm_prefetch(p + o, _MM_HINT_T0);
}

/* Half h (rows 8h..8h+7) of a 64-byte vector of the layout. */
TILE __m256i half_load(const void *p, int h) { return _mm256_loadu_si256((const __m256i *)((const uint8_t *)p + 32 * h)); }

/* The eight lanes' fifth bits of Q5_0_X16 (hm bit 4i + j of half h's
 * 32-bit part: byte 4i + j) as 0x10 in those bytes. */
TILE __m256i q5_high(uint64_t hm, int h) {
    const __m256i v = _mm256_set1_epi32((int32_t)(uint32_t)(hm >> (32 * h)));
    const __m256i sel = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, /* byte b: mask byte b / 8 */
                                         2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(v, sel), bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

#define X_SFX avx2
#define X_TGT TGT
#define X_VNNI 0
#include "matmul_avx2_repack_body.h"
#undef X_SFX
#undef X_TGT
#undef X_VNNI

#define X_SFX avxvnni
#define X_TGT TGTV
#define X_VNNI 1
#include "matmul_avx2_repack_body.h"

const tr_gemm_row tr_avx2_repack_gemm_rows[] = {
    {TR_TYPE_Q4_K_X16, TR_ACT_Q8KP, gemm_q4_k_x16_avx2},
    {TR_TYPE_Q4_0_X16, TR_ACT_Q8, gemm_q4_0_x16_avx2},
    {TR_TYPE_Q5_0_X16, TR_ACT_Q8, gemm_q5_0_x16_avx2},
    {TR_TYPE_Q8_0_X16, TR_ACT_Q8, gemm_q8_0_x16_avx2},
    {-1, 0, NULL},
};

const tr_gemm_row tr_avxvnni_repack_gemm_rows[] = {
    {TR_TYPE_Q4_K_X16, TR_ACT_Q8KP, gemm_q4_k_x16_avxvnni},
    {TR_TYPE_Q4_0_X16, TR_ACT_Q8, gemm_q4_0_x16_avxvnni},
    {TR_TYPE_Q5_0_X16, TR_ACT_Q8, gemm_q5_0_x16_avxvnni},
    {TR_TYPE_Q8_0_X16, TR_ACT_Q8, gemm_q8_0_x16_avxvnni},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx2_repack_gemm_rows[] = {{-1, 0, NULL}};
const tr_gemm_row tr_avxvnni_repack_gemm_rows[] = {{-1, 0, NULL}};
#endif
