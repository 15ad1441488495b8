/* Shared pieces of the AVX2 + FMA + F16C matmul kernels (matmul_avx2*.c):
 * reductions, half loads, the tile-to-kernel wrapper. Included only by
 * files that compile these with per-function target attributes, so the rest
 * of the binary stays baseline x86-64. */
#ifndef TR_AVX2_COMMON_H
#define TR_AVX2_COMMON_H

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TR_HAVE_AVX2_KERNELS 1

#define TGT __attribute__((target("avx2,fma,f16c")))
#define TILE static inline __attribute__((always_inline)) TGT

/* The AVX-VNNI tier (matmul_avxvnni*.c): AVX2 + FMA + F16C and the VEX
 * vpdpbusd/vpdpwssd; the TILE helpers here inline into its functions. */
#define TGTV __attribute__((target("avx2,fma,f16c,avxvnni")))
#define TILEV static inline __attribute__((always_inline)) TGTV


TILE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Both sums at once, for kernels.h's TR_GEMM_STREAMS. */
TILE void hsum2_ps(__m256 a0, __m256 a1, float out[2]) {
    out[0] = hsum_ps(a0);
    out[1] = hsum_ps(a1);
}

TILE float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* Sum of unsigned bytes u times signed bytes s, as 8 int32 lanes. */
TILE __m256i dot_us(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* Loops over the tile's tokens must unroll so accumulators live in registers. */
#define FOR_T(j) _Pragma("GCC unroll 4") for (int j = 0; j < NT; j++)

/* Lane t of the result: the sum of the 8 int32 lanes of v[t], t < 4. */
TILE __m128i reduce4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

#define ACT(j, b) ((const tr_q8a *)(a + (size_t)(j) * as) + (b))
#define ACTK(j, b) ((const tr_q8k *)(a + (size_t)(j) * as) + (b))

/* A tile made a kernel (kernels.h's TR_GEMM_FROM_TILE) with this file's target. */
#define GEMM_FROM_TILE(name, tile) TR_GEMM_FROM_TILE(name, tile, TGT)


#endif
#endif
