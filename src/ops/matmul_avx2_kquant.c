/* AVX2 kernels for the k-quants (Q2_K..Q6_K) and TQ2_0 against tr_q8k
 * activations; see matmul_avx2.c for the common scheme. */
#include "avx2_common.h"

#ifdef TR_HAVE_AVX2_KERNELS

/* ---------------------------------------------------------------- k-quants */

/* The 6-bit scales and mins of Q4_K/Q5_K's 8 sub-blocks, unpacked from 12
 * bytes with word operations: bytes 0..7 of the result are the scales, 8..15
 * the mins. */
TILE __m128i scales_k4(const uint8_t *q) {
    uint32_t u[3];
    memcpy(u, q, 12);
    uint32_t sc_lo = u[0] & 0x3f3f3f3f, m_lo = u[1] & 0x3f3f3f3f;
    uint32_t sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
    uint32_t m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
    return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
}

/* Sum over the 8 sub-blocks of m[k] * (bsums[2k] + bsums[2k+1]); m16 holds
 * the 8 mins as int16. */
TILE int32_t mins_dot(__m128i m16, const int16_t *bsums) {
    __m128i bs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)bsums), _mm_loadu_si128((const __m128i *)(bsums + 8)));
    __m128i p = _mm_madd_epi16(bs, m16);
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4e));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xb1));
    return _mm_cvtsi128_si32(p);
}

/* All 16 int16 lanes set to scale k of sc16 (8 int16 scales in each half). */
TILE __m256i bcast_scale(__m256i sc16, int k) {
    return _mm256_shuffle_epi8(sc16, _mm256_set1_epi16((short)((2 * k + 1) << 8 | 2 * k)));
}

TILE void q4_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    /* per-token int32 sums are reduced once per super-block into one
     * 4-lane float accumulator: few live registers, no spills */
    __m128 acc = _mm_setzero_ps();
    float corr[4] = {0};
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < n / 256; b++, w += 144) {
        __m128i scm = scales_k4(w + 4);
        __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
        __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(scm, 8));
        float dw = h2f(w), dmin = h2f(w + 2);
        __m256i isum[4];
        for (int j = 0; j < 4; j++) isum[j] = _mm256_setzero_si256();
        _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * p));
            __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
            __m256i s0 = bcast_scale(sc16, 2 * p), s1 = bcast_scale(sc16, 2 * p + 1);
            FOR_T(j) {
                const int8_t *x = ACTK(j, b)->qs + 64 * p;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x)), s0);
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32))), s1);
                isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p0, p1));
            }
        }
        float dd[4] = {0};
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            dd[j] = dw * x->d;
            corr[j] += dmin * x->d * (float)mins_dot(m16, x->bsums);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4(isum[0], isum[1], isum[2], isum[3])), _mm_loadu_ps(dd), acc);
    }
    float r[4];
    _mm_storeu_ps(r, acc);
    FOR_T(j) out[j] = r[j] - corr[j];
}

TILE void q5_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    /* per-token int32 sums are reduced once per super-block into one
     * 4-lane float accumulator: few live registers, no spills */
    __m128 acc = _mm_setzero_ps();
    float corr[4] = {0};
    const __m256i m4 = _mm256_set1_epi8(0x0f), b16 = _mm256_set1_epi8(0x10);
    for (int64_t b = 0; b < n / 256; b++, w += 176) {
        __m128i scm = scales_k4(w + 4);
        __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
        __m128i m16 = _mm_cvtepu8_epi16(_mm_srli_si128(scm, 8));
        float dw = h2f(w), dmin = h2f(w + 2);
        __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 16));
        __m256i isum[4];
        for (int j = 0; j < 4; j++) isum[j] = _mm256_setzero_si256();
        _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 48 + 32 * p));
            /* fifth bit of sub-block 2p is bit 2p of qh, of 2p+1 bit 2p+1: move it to 0x10 */
            __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * p), 4), b16);
            __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(_mm256_srli_epi16(qh, 2 * p + 1), 4), b16);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(raw, m4), h0);
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), h1);
            __m256i s0 = bcast_scale(sc16, 2 * p), s1 = bcast_scale(sc16, 2 * p + 1);
            FOR_T(j) {
                const int8_t *x = ACTK(j, b)->qs + 64 * p;
                __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x)), s0);
                __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32))), s1);
                isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p0, p1));
            }
        }
        float dd[4] = {0};
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            dd[j] = dw * x->d;
            corr[j] += dmin * x->d * (float)mins_dot(m16, x->bsums);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4(isum[0], isum[1], isum[2], isum[3])), _mm_loadu_ps(dd), acc);
    }
    float r[4];
    _mm_storeu_ps(r, acc);
    FOR_T(j) out[j] = r[j] - corr[j];
}

/* For a pair of 16-element groups (k, k+1) of 8 int16 scales held in both
 * halves of S: sc[k] in every lane of the low half, sc[k+1] in the high. */
TILE __m256i pair_scale(__m256i S, int k) {
    return _mm256_shuffle_epi8(S, _mm256_set_m128i(_mm_set1_epi16((short)((2 * k + 3) << 8 | (2 * k + 2))),
                                                   _mm_set1_epi16((short)((2 * k + 1) << 8 | 2 * k))));
}

/* Sum over 16 groups of sc[g] * bsums[g] (signed 8-bit scales). */
TILE int32_t scales16_dot(const int8_t *sc, const int16_t *bsums) {
    __m256i s = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
    __m256i p = _mm256_madd_epi16(s, _mm256_loadu_si256((const __m256i *)bsums));
    __m128i q = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0x4e));
    q = _mm_add_epi32(q, _mm_shuffle_epi32(q, 0xb1));
    return _mm_cvtsi128_si32(q);
}

TILE void q6_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    /* per-token int32 sums are reduced once per super-block into one
     * 4-lane float accumulator: few live registers, no spills */
    __m128 acc = _mm_setzero_ps();
    float corr[4] = {0};
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    for (int64_t b = 0; b < n / 256; b++, w += 210) {
        const int8_t *sc = (const int8_t *)(w + 192);
        float dw = h2f(w + 208);
        __m256i isum[4];
        for (int j = 0; j < 4; j++) isum[j] = _mm256_setzero_si256();
        __m128i sc8 = _mm_loadu_si128((const __m128i *)sc);
        __m256i S2[2] = {_mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8)),
                         _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)))};
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(w + 64 * h));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(w + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(w + 128 + 32 * h));
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                __m256i lo = g == 0 ? _mm256_and_si256(ql0, m4)
                           : g == 1 ? _mm256_and_si256(ql1, m4)
                           : g == 2 ? _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4)
                                    : _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4);
                __m256i hb = g == 0 ? _mm256_slli_epi16(qh, 4)
                           : g == 1 ? _mm256_slli_epi16(qh, 2)
                           : g == 2 ? qh
                                    : _mm256_srli_epi16(qh, 2);
                __m256i q = _mm256_or_si256(lo, _mm256_and_si256(hb, m30));
                __m256i s = pair_scale(S2[h], 2 * g);
                FOR_T(j) {
                    const int8_t *x = ACTK(j, b)->qs + 128 * h + 32 * g;
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x)), s);
                    isum[j] = _mm256_add_epi32(isum[j], p);
                }
            }
        }
        float dd[4] = {0};
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            float d = dw * x->d;
            dd[j] = d;
            corr[j] += d * (float)(32 * scales16_dot(sc, x->bsums));
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4(isum[0], isum[1], isum[2], isum[3])), _mm_loadu_ps(dd), acc);
    }
    float r[4];
    _mm_storeu_ps(r, acc);
    FOR_T(j) out[j] = r[j] - corr[j];
}

TILE void q2_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    /* per-token int32 sums are reduced once per super-block into one
     * 4-lane float accumulator: few live registers, no spills */
    __m128 acc = _mm_setzero_ps();
    float corr[4] = {0};
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < n / 256; b++, w += 84) {
        const uint8_t *scales = w;
        float dw = h2f(w + 80), dmin = h2f(w + 82);
        __m128i sc8 = _mm_loadu_si128((const __m128i *)scales);
        int8_t mins[16];
        _mm_storeu_si128((__m128i *)mins, _mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0f)));
        __m128i lo4 = _mm_and_si128(sc8, _mm_set1_epi8(0x0f));
        __m256i S2[2] = {_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(lo4)),
                         _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(lo4, 8)))};
        __m256i isum[4];
        for (int j = 0; j < 4; j++) isum[j] = _mm256_setzero_si256();
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 16 + 32 * h));
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) { /* shift 2s: groups 8h+2s (bytes 0..15), 8h+2s+1 (16..31) */
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * s), m3);
                __m256i sv = pair_scale(S2[h], 2 * s);
                FOR_T(j) {
                    const int8_t *x = ACTK(j, b)->qs + 128 * h + 32 * s;
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x)), sv);
                    isum[j] = _mm256_add_epi32(isum[j], p);
                }
            }
        }
        float dd[4] = {0};
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            dd[j] = dw * x->d;
            corr[j] += dmin * x->d * (float)scales16_dot(mins, x->bsums);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4(isum[0], isum[1], isum[2], isum[3])), _mm_loadu_ps(dd), acc);
    }
    float r[4];
    _mm_storeu_ps(r, acc);
    FOR_T(j) out[j] = r[j] - corr[j];
}

/* Q3_K: 2 low bits in qs, the third in hmask (set: +0, clear: -4). Used as
 * q3 = low | high << 2 in 0..7 and the -4 removed through the activation
 * sums; 16 signed 6-bit scales (minus 32) per 16 elements. */
TILE __m128i scales_q3k(const uint8_t *p) {
    uint32_t u[3];
    memcpy(u, p, 12);
    uint32_t s0 = (u[0] & 0x0f0f0f0f) | ((u[2] & 0x03030303) << 4);
    uint32_t s1 = (u[1] & 0x0f0f0f0f) | (((u[2] >> 2) & 0x03030303) << 4);
    uint32_t s2 = ((u[0] >> 4) & 0x0f0f0f0f) | (((u[2] >> 4) & 0x03030303) << 4);
    uint32_t s3 = ((u[1] >> 4) & 0x0f0f0f0f) | (((u[2] >> 6) & 0x03030303) << 4);
    return _mm_sub_epi8(_mm_setr_epi32((int)s0, (int)s1, (int)s2, (int)s3), _mm_set1_epi8(32));
}

TILE void q3_k_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m128 acc = _mm_setzero_ps();
    float corr[4] = {0};
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t b = 0; b < n / 256; b++, w += 110) {
        float dw = h2f(w + 108);
        __m128i sc8 = scales_q3k(w + 96);
        int8_t sc[16];
        _mm_storeu_si128((__m128i *)sc, sc8);
        __m256i S2[2] = {_mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8)),
                         _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)))};
        __m256i hm = _mm256_loadu_si256((const __m256i *)w);
        __m256i isum[4];
        for (int j = 0; j < 4; j++) isum[j] = _mm256_setzero_si256();
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 32 + 32 * h));
            _Pragma("GCC unroll 4") for (int s = 0; s < 4; s++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * s), m3);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + s), one);
                __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hb, 2));
                __m256i sv = pair_scale(S2[h], 2 * s);
                FOR_T(j) {
                    const int8_t *x = ACTK(j, b)->qs + 128 * h + 32 * s;
                    __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)x)), sv);
                    isum[j] = _mm256_add_epi32(isum[j], p);
                }
            }
        }
        float dd[4] = {0};
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            float d = dw * x->d;
            dd[j] = d;
            corr[j] += d * (float)(4 * scales16_dot(sc, x->bsums));
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4(isum[0], isum[1], isum[2], isum[3])), _mm_loadu_ps(dd), acc);
    }
    float r[4];
    _mm_storeu_ps(r, acc);
    FOR_T(j) out[j] = r[j] - corr[j];
}

/* TQ2_0: codes 0..2 for -1..1, the -1 removed through the activation sums. */
TILE void tq2_0_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m128 acc = _mm_setzero_ps();
    float corr[4] = {0};
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < n / 256; b++, w += 66) {
        float dw = h2f(w + 64);
        __m256i isum[4];
        for (int j = 0; j < 4; j++) isum[j] = _mm256_setzero_si256();
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 32 * h));
            _Pragma("GCC unroll 4") for (int l = 0; l < 4; l++) {
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * l), m3);
                FOR_T(j) {
                    const int8_t *x = ACTK(j, b)->qs + 128 * h + 32 * l;
                    isum[j] = _mm256_add_epi32(isum[j], dot_us(q, _mm256_loadu_si256((const __m256i *)x)));
                }
            }
        }
        float dd[4] = {0};
        FOR_T(j) {
            const tr_q8k *x = ACTK(j, b);
            __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)x->bsums), _mm256_set1_epi16(1));
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
            float d = dw * x->d;
            dd[j] = d;
            corr[j] += d * (float)_mm_cvtsi128_si32(t);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(reduce4(isum[0], isum[1], isum[2], isum[3])), _mm_loadu_ps(dd), acc);
    }
    float r[4];
    _mm_storeu_ps(r, acc);
    FOR_T(j) out[j] = r[j] - corr[j];
}

GEMM_FROM_TILE(gemm_q2_k, q2_k_tile)
GEMM_FROM_TILE(gemm_q4_k, q4_k_tile)
GEMM_FROM_TILE(gemm_q5_k, q5_k_tile)
GEMM_FROM_TILE(gemm_q6_k, q6_k_tile)
GEMM_FROM_TILE(gemm_q3_k, q3_k_tile)
GEMM_FROM_TILE(gemm_tq2_0, tq2_0_tile)

tr_gemm_fn tr_gemm_avx2_kquant(int type) {
    switch (type) {
    case TR_TYPE_Q2_K: return gemm_q2_k;
    case TR_TYPE_Q4_K: return gemm_q4_k;
    case TR_TYPE_Q5_K: return gemm_q5_k;
    case TR_TYPE_Q6_K: return gemm_q6_k;
    case TR_TYPE_Q3_K: return gemm_q3_k;
    case TR_TYPE_TQ2_0: return gemm_tq2_0;
    default: return NULL;
    }
}

#endif
