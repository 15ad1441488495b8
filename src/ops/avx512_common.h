/* Shared pieces of the AVX-512 matmul kernels (matmul_avx512*.c): the target
 * attribute of the TR_ISA_AVX512 tier and the loop helpers. Included only by
 * files that compile these with per-function target attributes, so the rest
 * of the binary stays baseline x86-64.
 *
 * The tier is AVX-512 F, BW, VL, DQ and VNNI on top of AVX2 + FMA + F16C
 * (Ice Lake, Zen 4 and later); nothing here may use AVX-512 BF16 or FP16,
 * which Ice Lake lacks. */
#ifndef TR_AVX512_COMMON_H
#define TR_AVX512_COMMON_H

#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TR_HAVE_AVX512_KERNELS 1

#define TGT512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define TILE512 static inline __attribute__((always_inline)) TGT512

/* Loops over a tile's tokens (NT <= TR_TILE_MAX, a constant once inlined)
 * must unroll so the accumulators live in registers. */
#define FOR_T512(j) _Pragma("GCC unroll 8") for (int j = 0; j < NT; j++)

/* acc + the products of w's bytes with the four bytes at p (broadcast),
 * summed by fours: GCC 12 does not fold the broadcast into the operand. */
TILE512 __m512i dpbusd_bcast(__m512i acc, __m512i w, const int8_t *p) {
#if defined(__GNUC__) && !defined(__clang__)
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const int32_t *)p));
    return acc;
#else
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(v));
#endif
}

#endif
#endif
