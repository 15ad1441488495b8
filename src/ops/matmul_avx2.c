/* AVX2 + FMA + F16C matmul kernels (see kernels.h for the shape they share).
 * Compiled with per-function target attributes so the rest of the binary
 * stays baseline x86-64; tr_kernel_best picks these only when cpu.c found
 * the features.
 *
 * Each kernel is a "tile" computing one weight row against NT <= 4 tokens:
 * a weight block is loaded and unpacked to bytes once, then multiplied with
 * each token's int8 block (vpmaddubsw: unsigned weight x signed activation,
 * then vpmaddwd to int32), so prompt processing decodes every weight block
 * once per four tokens instead of once per token. Unsigned nibbles are used
 * as they are and the format's offset (8 for Q4_0, 32 for Q6_K, ...) is
 * removed once per block through the activation sums. */
#include "avx2_common.h"

#ifdef TR_HAVE_AVX2_KERNELS

/* ---------------------------------------------------------------- float */

TILE void f32_tile(int64_t n, const uint8_t *w_, const char *a, size_t as, int NT, float *out) {
    const float *w = (const float *)w_;
    __m256 acc[4][2];
    FOR_T(j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_loadu_ps(w + i), w1 = _mm256_loadu_ps(w + i + 8);
        FOR_T(j) {
            const float *x = (const float *)(a + (size_t)j * as);
            acc[j][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc[j][1]);
        }
    }
    FOR_T(j) {
        const float *x = (const float *)(a + (size_t)j * as);
        float s = hsum_ps(_mm256_add_ps(acc[j][0], acc[j][1]));
        for (int64_t k = i; k < n; k++) s += w[k] * x[k];
        out[j] = s;
    }
}

TILE void f16_tile(int64_t n, const uint8_t *w_, const char *a, size_t as, int NT, float *out) {
    const uint16_t *w = (const uint16_t *)w_;
    __m256 acc[4][2];
    FOR_T(j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + i + 8)));
        FOR_T(j) {
            const float *x = (const float *)(a + (size_t)j * as);
            acc[j][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc[j][1]);
        }
    }
    FOR_T(j) {
        const float *x = (const float *)(a + (size_t)j * as);
        float s = hsum_ps(_mm256_add_ps(acc[j][0], acc[j][1]));
        for (int64_t k = i; k < n; k++) s += _cvtsh_ss(w[k]) * x[k];
        out[j] = s;
    }
}

TILE __m256 bf16x8(const uint16_t *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

TILE void bf16_tile(int64_t n, const uint8_t *w_, const char *a, size_t as, int NT, float *out) {
    const uint16_t *w = (const uint16_t *)w_;
    __m256 acc[4][2];
    FOR_T(j) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = bf16x8(w + i), w1 = bf16x8(w + i + 8);
        FOR_T(j) {
            const float *x = (const float *)(a + (size_t)j * as);
            acc[j][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc[j][1]);
        }
    }
    FOR_T(j) {
        const float *x = (const float *)(a + (size_t)j * as);
        float s = hsum_ps(_mm256_add_ps(acc[j][0], acc[j][1]));
        for (int64_t k = i; k < n; k++) s += tr_bf16_to_fp32(w[k]) * x[k];
        out[j] = s;
    }
}

GEMM_FROM_TILE(gemm_f32, f32_tile)
GEMM_FROM_TILE(gemm_f16, f16_tile)
GEMM_FROM_TILE(gemm_bf16, bf16_tile)

const tr_gemm_row tr_avx2_float_gemm_rows[] = {
    {TR_TYPE_F32, TR_ACT_F32, gemm_f32},
    {TR_TYPE_F16, TR_ACT_F16, gemm_f16},
    {TR_TYPE_BF16, TR_ACT_BF16, gemm_bf16},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_avx2_float_gemm_rows[] = {{-1, 0, NULL}};
#endif
