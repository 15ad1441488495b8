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
#include "kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define TILE static inline __attribute__((always_inline)) TGT

TILE float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
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

/* Wrap a tile into the kernel shape: rows outer, tokens in fours inner, so a
 * weight row is read from memory once and reused from L1 by the token tiles. */
#define GEMM_FROM_TILE(name, tile)                                                               \
    TGT static void name(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as, \
                         int nt, float *y, size_t ys) {                                         \
        const char *a = a_;                                                                     \
        for (int r = 0; r < nr; r++) {                                                          \
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;                            \
            float out[4];                                                                       \
            int t = 0;                                                                          \
            for (; t + 4 <= nt; t += 4) {                                                       \
                tile(n, wr, a + (size_t)t * as, as, 4, out);                                    \
                for (int k = 0; k < 4; k++) y[(size_t)(t + k) * ys + r] = out[k];               \
            }                                                                                   \
            int left = nt - t;                                                                  \
            if (left == 3) tile(n, wr, a + (size_t)t * as, as, 3, out);                         \
            else if (left == 2) tile(n, wr, a + (size_t)t * as, as, 2, out);                    \
            else if (left == 1) tile(n, wr, a + (size_t)t * as, as, 1, out);                    \
            for (int k = 0; k < left; k++) y[(size_t)(t + k) * ys + r] = out[k];                \
        }                                                                                       \
    }

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

/* ---------------------------------------------------------------- legacy quants */

TILE void q8_0_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 34) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(w + 2));
        __m256i aq = _mm256_abs_epi8(q); /* |w| unsigned, sign moved onto x */
        float dw = h2f(w);
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)x->qs), q);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(aq, sx)), _mm256_set1_ps(dw * x->d), acc[j]);
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]);
}

/* 32 nibbles: low halves are elements 0..15, high halves 16..31. */
TILE __m256i nibbles32(const uint8_t *p) {
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

TILE void q4_0_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    float corr[4] = {0};
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 18) {
        __m256i q = nibbles32(w + 2);
        float dw = h2f(w);
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            float d = dw * x->d;
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(q, _mm256_loadu_si256((const __m256i *)x->qs))),
                                     _mm256_set1_ps(d), acc[j]);
            corr[j] += d * (float)x->sum;
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]) - 8.0f * corr[j];
}

TILE void q4_1_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    float corr[4] = {0};
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 20) {
        __m256i q = nibbles32(w + 4);
        float dw = h2f(w), mw = h2f(w + 2);
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(q, _mm256_loadu_si256((const __m256i *)x->qs))),
                                     _mm256_set1_ps(dw * x->d), acc[j]);
            corr[j] += mw * x->d * (float)x->sum;
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]) + corr[j];
}

/* The fifth bits of 32 elements (bit i of qh for element i) as 0x10 bytes. */
TILE __m256i bits5(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    /* Broadcast the 4 bytes so byte i holds the byte containing bit i, then test its bit. */
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                    _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                       0x0202020202020202, 0x0303030303030303));
    __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

TILE void q5_0_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    float corr[4] = {0};
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 22) {
        __m256i q = _mm256_or_si256(nibbles32(w + 6), bits5(w + 2));
        float dw = h2f(w);
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            float d = dw * x->d;
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(q, _mm256_loadu_si256((const __m256i *)x->qs))),
                                     _mm256_set1_ps(d), acc[j]);
            corr[j] += d * (float)x->sum;
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]) - 16.0f * corr[j];
}

TILE void q5_1_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    float corr[4] = {0};
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 24) {
        __m256i q = _mm256_or_si256(nibbles32(w + 8), bits5(w + 4));
        float dw = h2f(w), mw = h2f(w + 2);
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(q, _mm256_loadu_si256((const __m256i *)x->qs))),
                                     _mm256_set1_ps(dw * x->d), acc[j]);
            corr[j] += mw * x->d * (float)x->sum;
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]) + corr[j];
}

/* Four weight rows at a time for the legacy formats: the 32-byte activation
 * block is loaded once for four rows, the four int32 dot products are folded
 * into one 4-lane vector (one lane per row) with a horizontal-add tree, and
 * the block scales of the four rows become one vector, so the per-block float
 * work (convert, scale, accumulate) is shared by four rows. */
enum { F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_Q8_0 };

TILE void legacy_tile4(int64_t n, const uint8_t *w, size_t ws, const char *a, size_t as, int NT, __m128 *out,
                       const int F) {
    const int bs = F == F_Q4_0 ? 18 : F == F_Q4_1 ? 20 : F == F_Q5_0 ? 22 : F == F_Q5_1 ? 24 : 34;
    const int has_m = F == F_Q4_1 || F == F_Q5_1;
    const int off = F == F_Q4_0 ? 8 : F == F_Q5_0 ? 16 : 0;
    __m128 acc[4];
    FOR_T(j) acc[j] = _mm_setzero_ps();
    const uint8_t *w0 = w, *w1 = w + ws, *w2 = w + 2 * ws, *w3 = w + 3 * ws;
    for (int64_t b = 0; b < n / 32; b++) {
        size_t o = (size_t)b * bs;
        __m256i q[4];
        const uint8_t *wr[4] = {w0 + o, w1 + o, w2 + o, w3 + o};
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
            if (F == F_Q4_0) q[r] = nibbles32(wr[r] + 2);
            else if (F == F_Q4_1) q[r] = nibbles32(wr[r] + 4);
            else if (F == F_Q5_0) q[r] = _mm256_or_si256(nibbles32(wr[r] + 6), bits5(wr[r] + 2));
            else if (F == F_Q5_1) q[r] = _mm256_or_si256(nibbles32(wr[r] + 8), bits5(wr[r] + 4));
            else q[r] = _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(wr[r] + 2)));
        }
        uint16_t h[4], hm[4];
        _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
            memcpy(&h[r], wr[r], 2);
            if (has_m) memcpy(&hm[r], wr[r] + 2, 2);
        }
        __m128 dw = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)h));
        __m128 mw = has_m ? _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)hm)) : _mm_setzero_ps();
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            __m256i xv = _mm256_loadu_si256((const __m256i *)x->qs);
            __m256i p[4];
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                if (F == F_Q8_0)
                    p[r] = dot_us(q[r], _mm256_sign_epi8(xv, _mm256_loadu_si256((const __m256i *)(wr[r] + 2))));
                else
                    p[r] = dot_us(q[r], xv);
            }
            __m128i isum = reduce4(p[0], p[1], p[2], p[3]);
            if (off) isum = _mm_sub_epi32(isum, _mm_set1_epi32(off * x->sum));
            __m128 da = _mm_set1_ps(x->d);
            acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(dw, da), acc[j]);
            if (has_m) acc[j] = _mm_fmadd_ps(mw, _mm_set1_ps(x->d * (float)x->sum), acc[j]);
        }
    }
    FOR_T(j) out[j] = acc[j];
}

/* Rows in fours through tile4, the remaining rows through the one-row tile. */
#define GEMM_ROWS4(name, F, tile1)                                                                \
    TGT static void name(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as,  \
                         int nt, float *y, size_t ys) {                                          \
        const char *a = a_;                                                                      \
        int r = 0;                                                                               \
        for (; r + 4 <= nr; r += 4) {                                                            \
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;                             \
            __m128 out[4];                                                                       \
            int t = 0;                                                                           \
            for (; t + 4 <= nt; t += 4) {                                                        \
                legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 4, out, F);                      \
                for (int k = 0; k < 4; k++) _mm_storeu_ps(y + (size_t)(t + k) * ys + r, out[k]); \
            }                                                                                    \
            int left = nt - t;                                                                   \
            if (left == 3) legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 3, out, F);          \
            else if (left == 2) legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 2, out, F);     \
            else if (left == 1) legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 1, out, F);     \
            for (int k = 0; k < left; k++) _mm_storeu_ps(y + (size_t)(t + k) * ys + r, out[k]);  \
        }                                                                                        \
        if (r < nr) tile1(n, (const uint8_t *)w + (size_t)r * ws, ws, nr - r, a, as, nt, y + r, ys); \
    }

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

GEMM_FROM_TILE(gemm_f32, f32_tile)
GEMM_FROM_TILE(gemm_f16, f16_tile)
GEMM_FROM_TILE(gemm_bf16, bf16_tile)
GEMM_FROM_TILE(gemm1_q8_0, q8_0_tile)
GEMM_ROWS4(gemm_q8_0, F_Q8_0, gemm1_q8_0)
GEMM_FROM_TILE(gemm1_q4_0, q4_0_tile)
GEMM_ROWS4(gemm_q4_0, F_Q4_0, gemm1_q4_0)
GEMM_FROM_TILE(gemm1_q4_1, q4_1_tile)
GEMM_ROWS4(gemm_q4_1, F_Q4_1, gemm1_q4_1)
GEMM_FROM_TILE(gemm1_q5_0, q5_0_tile)
GEMM_ROWS4(gemm_q5_0, F_Q5_0, gemm1_q5_0)
GEMM_FROM_TILE(gemm1_q5_1, q5_1_tile)
GEMM_ROWS4(gemm_q5_1, F_Q5_1, gemm1_q5_1)
GEMM_FROM_TILE(gemm_q2_k, q2_k_tile)
GEMM_FROM_TILE(gemm_q4_k, q4_k_tile)
GEMM_FROM_TILE(gemm_q5_k, q5_k_tile)
GEMM_FROM_TILE(gemm_q6_k, q6_k_tile)
GEMM_FROM_TILE(gemm_q3_k, q3_k_tile)
GEMM_FROM_TILE(gemm_tq2_0, tq2_0_tile)

tr_gemm_fn tr_gemm_avx2_for(int type) {
    switch (type) {
    case TR_TYPE_F32: return gemm_f32;
    case TR_TYPE_F16: return gemm_f16;
    case TR_TYPE_BF16: return gemm_bf16;
    case TR_TYPE_Q8_0: return gemm_q8_0;
    case TR_TYPE_Q4_0: return gemm_q4_0;
    case TR_TYPE_Q4_1: return gemm_q4_1;
    case TR_TYPE_Q5_0: return gemm_q5_0;
    case TR_TYPE_Q5_1: return gemm_q5_1;
    case TR_TYPE_Q2_K: return gemm_q2_k;
    case TR_TYPE_Q4_K: return gemm_q4_k;
    case TR_TYPE_Q5_K: return gemm_q5_k;
    case TR_TYPE_Q6_K: return gemm_q6_k;
    case TR_TYPE_Q3_K: return gemm_q3_k;
    case TR_TYPE_TQ2_0: return gemm_tq2_0;
    default: return NULL;
    }
}

#else
tr_gemm_fn tr_gemm_avx2_for(int type) {
    (void)type;
    return NULL;
}
#endif
