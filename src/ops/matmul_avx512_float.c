/* AVX-512 kernels for the float weight formats (F32, F16, BF16) against float
 * activations (TR_ISA_AVX512; kernels.h has the shape they share). As
 * matmul_avx2.c's: one weight row against a tile of up to four tokens, the
 * row's 16 weights per vector converted once for the tile (F16 through
 * vcvtph2ps, BF16 by widening and shifting into the top half of a float: the
 * tier does not include AVX-512 BF16), two accumulators per token, and the
 * ragged end of a row through masked loads rather than a scalar loop. Every
 * token's sum goes through the same instructions whatever the tile width. */
#include "avx512_common.h"

#ifdef TR_HAVE_AVX512_KERNELS

enum { FT_F32, FT_F16, FT_BF16 };

/* Weights i..i+15 as floats; the masked form reads only the lanes of k and
 * leaves the others zero. */
TILE512 __m512 wload(const uint8_t *w, int64_t i, const int FT) {
    if (FT == FT_F32) return _mm512_loadu_ps((const float *)w + i);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
    if (FT == FT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
TILE512 __m512 wload_mask(const uint8_t *w, int64_t i, __mmask16 k, const int FT) {
    if (FT == FT_F32) return _mm512_maskz_loadu_ps(k, (const float *)w + i);
    __m256i h = _mm256_maskz_loadu_epi16(k, (const uint16_t *)w + i);
    if (FT == FT_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TILE512 float hsum512(__m512 v) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define XT(j) ((const float *)(a + (size_t)(j) * as))

TILE512 void float_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out, const int FT) {
    __m512 acc[4][2];
    FOR_T512(j) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = wload(w, i, FT), w1 = wload(w, i + 16, FT);
        FOR_T512(j) {
            acc[j][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(XT(j) + i), acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(XT(j) + i + 16), acc[j][1]);
        }
    }
    if (i + 16 <= n) {
        __m512 w0 = wload(w, i, FT);
        FOR_T512(j) acc[j][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(XT(j) + i), acc[j][0]);
        i += 16;
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 w1 = wload_mask(w, i, k, FT);
        FOR_T512(j) acc[j][1] = _mm512_fmadd_ps(w1, _mm512_maskz_loadu_ps(k, XT(j) + i), acc[j][1]);
    }
    FOR_T512(j) out[j] = hsum512(_mm512_add_ps(acc[j][0], acc[j][1]));
}

/* Rows outer, tokens in fours inner: a weight row is read from memory once
 * and from L1 by the tiles after the first. */
#define GEMM_FLOAT(name, FT)                                                                                      \
    TGT512 static void name(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as, int nt,    \
                            float *y, size_t ys) {                                                              \
        const char *a = a_;                                                                                     \
        for (int r = 0; r < nr; r++) {                                                                          \
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;                                            \
            for (int t = 0; t < nt; t += 4) {                                                                   \
                float out[4];                                                                                   \
                const char *at = a + (size_t)t * as;                                                            \
                const int left = nt - t;                                                                        \
                if (left >= 4) float_tile(n, wr, at, as, 4, out, FT);                                           \
                else if (left == 3) float_tile(n, wr, at, as, 3, out, FT);                                      \
                else if (left == 2) float_tile(n, wr, at, as, 2, out, FT);                                      \
                else float_tile(n, wr, at, as, 1, out, FT);                                                     \
                for (int k = 0; k < 4 && k < left; k++) y[(size_t)(t + k) * ys + r] = out[k];                   \
            }                                                                                                   \
        }                                                                                                       \
    }

GEMM_FLOAT(gemm_f32, FT_F32)
GEMM_FLOAT(gemm_f16, FT_F16)
GEMM_FLOAT(gemm_bf16, FT_BF16)

const tr_gemm_row tr_avx512_float_gemm_rows[] = {
    {TR_TYPE_F32, TR_ACT_F32, gemm_f32},
    {TR_TYPE_F16, TR_ACT_F16, gemm_f16},
    {TR_TYPE_BF16, TR_ACT_BF16, gemm_bf16},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx512_float_gemm_rows[] = {{-1, 0, NULL}};
#endif
