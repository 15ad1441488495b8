/* Flash attention (see ops.h for the contract and layouts).
 *
 * Work is cut into units of (up to TOK_BLOCK query tokens) x (one KV head) x
 * (one slice of the KV range). A unit walks its KV range in tiles of TILE
 * slots; for every query of the unit (its tokens x the query heads sharing
 * that KV head) it scores the tile, updates the running max m and sum l of
 * the online softmax, rescales its output accumulator when the max grows, and
 * adds the tile's values weighted by exp(score - m). K and V of a tile are
 * read from memory once and served from L1 to all the unit's queries.
 *
 * Generation has one token, and small models have one or few KV heads, so a
 * unit per KV head would leave cores idle: the KV range is then split across
 * threads (flash-decoding), each slice keeps its own (m, l, o), and the
 * slices are merged at the end with the usual rescaling.
 *
 * The inner loops (q.k for F32/F16 keys, o += p v, exp) have a scalar
 * reference and an AVX2 variant, those of the normalised-weights path an
 * AVX-512 one too (the same bits as the AVX2 one), chosen from the CPU's
 * features.
 *
 * Quantized caches (Q8_0, Q4_0, TQ2_32 entries; K and V each their own type)
 * are read in place by the normalised-weights path: the unit's queries are
 * quantized to Q8_0 blocks once, each K block meets its query block in an
 * integer dot product, and V is dequantized into registers as it is summed.
 * This file is compiled without floating-point contraction (CMakeLists.txt):
 * the scalar references and the AVX2 variants of those kernels multiply and
 * add as separate roundings, or fuse them explicitly on both sides (fmaf and
 * FMA: a quantized V's weighted values), so they agree to the bit. */
#include "avx512_common.h"
#include "cpu.h"
#include "kernels.h"
#include "ops.h"
#include "quant/blocks.h"
#include "quant/quant.h"

#include <float.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>

enum { TOK_BLOCK = 4, TILE = 64, TILE_X = 32, RUN_SLOTS = 128 };

/* A run of slots that sit in consecutive cache rows (within one block of a
 * paged cache), for the weighted sum of V: its first row, the weight of its
 * first slot for the first head (head h's at w + h*w_stride), the position
 * of its first slot and its length. */
typedef struct kv_run {
    const char *v;
    const float *w;
    int p0, n;
} kv_run;

typedef struct attn_fns {
    /* s[i] = scale * q . k_i for n slots k_i = k + i*stride bytes */
    void (*scores)(const float *q, const char *k, size_t stride, int n, int d, float scale, float *s);
    /* o += sum_i p[i] v_i over n slots (p[i] == 0 skipped) */
    void (*pv)(float *o, const float *p, const char *v, size_t stride, int n, int d);
    float (*exp_sum)(float *s, int n, float m); /* s[i] = exp(s[i] - m) (-inf -> 0); returns the sum */
    void (*round_half)(float *dst, const float *src, int n); /* dst[i] = src[i] rounded to a half (nearest even) */
    /* The normalised-weights path (TR_ATTN_HALF_P), in a fixed summation
     * order (see "lanes" below):
     * s[qq*s_stride + i] = scale * q_qq . k_i for nq (1..4) queries q_qq =
     * q + qq*d and n slots k_i, each dot in 8 lanes (element e into lane e mod 8). */
    void (*scores_x)(const float *q, int nq, const char *k, size_t stride, int n, int d, float scale, float *s,
                     size_t s_stride);
    /* For nh (1..4) heads h: acc_h[lanes] += w_h[i] v_i over the slots of n_runs runs (in
     * position order, at most RUN_SLOTS slots in all), slot p into lane p mod 8, output elements
     * [x0, x1) only (x0 a multiple of 8, of 32 for a quantized V); head h's accumulator at
     * acc + h*acc_stride. The heads share each value's conversion; every element's sum is the
     * one-head sum, slot by slot in position order, so neither the runs' cuts nor their grouping
     * into calls changes a bit. A lane's accumulators stay in registers across all the runs. */
    void (*pv_x)(float *acc, size_t acc_stride, size_t w_stride, int nh, const kv_run *runs, int n_runs,
                 size_t stride, int x0, int x1);
    /* Quantized K: as scores_x, the queries as Q8_0 blocks (d/32 per query,
     * query qq at q + qq*d/32). Block b's integer dot product, times both
     * scales, goes into lane b mod 8; the lanes are summed as above. */
    void (*scores_xq)(const tr_block_q8_0 *q, int nq, const char *k, size_t stride, int n, int d, float scale,
                      float *s, size_t s_stride);
} attn_fns;

/* ---------------------------------------------------------------- scalar reference */

static float dot_f32(const float *q, const void *k_, int d) {
    const float *k = k_;
    float s = 0;
    for (int i = 0; i < d; i++) s += q[i] * k[i];
    return s;
}
static float dot_f16(const float *q, const void *k_, int d) {
    const uint16_t *k = k_;
    float s = 0;
    for (int i = 0; i < d; i++) s += q[i] * tr_fp16_to_fp32(k[i]);
    return s;
}
static void axpy_f32(float *o, float a, const void *v_, int d) {
    const float *v = v_;
    for (int i = 0; i < d; i++) o[i] += a * v[i];
}
static void axpy_f16(float *o, float a, const void *v_, int d) {
    const uint16_t *v = v_;
    for (int i = 0; i < d; i++) o[i] += a * tr_fp16_to_fp32(v[i]);
}
static float exp_sum_ref(float *s, int n, float m) {
    float sum = 0;
    for (int i = 0; i < n; i++) {
        s[i] = expf(s[i] - m); /* exp(-inf) = 0 */
        sum += s[i];
    }
    return sum;
}

static void round_half_ref(float *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) dst[i] = tr_fp16_to_fp32(tr_fp32_to_fp16(src[i]));
}

/* ---- lanes: the fixed summation order of the normalised-weights path.
 * A dot product of d elements keeps 8 partial sums, element e into lane
 * e mod 8, summed at the end as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)) (an
 * 8-wide SIMD register reduced by halves). The weighted sum of V keeps, for
 * every output element, 8 partial sums too, slot p into lane p mod 8, by
 * position, so the result does not depend on how the range was cut into
 * tiles. Products of halves are exact in float, so an FMA and a multiply
 * then add give the same bits: the scalar reference and the SIMD variant
 * agree bit for bit on a half-precision cache with half queries.
 * The accumulator of pv_x is [ceil(dv/8) blocks][8 lanes][8 elements]. */
static inline float lanes_sum(const float *l, size_t step) {
    const float a0 = l[0] + l[4 * step], a1 = l[step] + l[5 * step], a2 = l[2 * step] + l[6 * step],
                a3 = l[3 * step] + l[7 * step];
    return (a0 + a2) + (a1 + a3);
}

static float kv_f32(const char *row, int e) { return ((const float *)row)[e]; }
static float kv_f16(const char *row, int e) { return tr_fp16_to_fp32(((const uint16_t *)row)[e]); }

static void scores_x_ref(float (*kv)(const char *, int), const float *q, int nq, const char *k, size_t stride,
                         int n, int d, float scale, float *s, size_t s_stride) {
    for (int qq = 0; qq < nq; qq++)
        for (int i = 0; i < n; i++) {
            const char *kr = k + (size_t)i * stride;
            float lane[8] = {0};
            for (int e = 0; e < d; e++) lane[e & 7] += q[(size_t)qq * d + e] * kv(kr, e);
            s[(size_t)qq * s_stride + i] = lanes_sum(lane, 1) * scale;
        }
}
static void scores_x_f32(const float *q, int nq, const char *k, size_t stride, int n, int d, float scale, float *s,
                         size_t s_stride) {
    scores_x_ref(kv_f32, q, nq, k, stride, n, d, scale, s, s_stride);
}
static void scores_x_f16(const float *q, int nq, const char *k, size_t stride, int n, int d, float scale, float *s,
                         size_t s_stride) {
    scores_x_ref(kv_f16, q, nq, k, stride, n, d, scale, s, s_stride);
}
static void pv_x_ref(float (*kv)(const char *, int), float *acc, size_t acc_stride, size_t w_stride, int nh,
                     const kv_run *runs, int n_runs, size_t stride, int x0, int x1) {
    for (int r = 0; r < n_runs; r++)
    for (int h = 0; h < nh; h++) {
        const char *v = runs[r].v;
        const float *w = runs[r].w;
        const int p0 = runs[r].p0, n = runs[r].n;
        for (int i = 0; i < n; i++) {
            const float wi = w[(size_t)h * w_stride + i];
            if (wi == 0) continue;
            const char *vr = v + (size_t)i * stride;
            const int lane = (p0 + i) & 7;
            float *ah = acc + (size_t)h * acc_stride;
            for (int x = x0; x < x1; x++) ah[((x >> 3) * 8 + lane) * 8 + (x & 7)] += wi * kv(vr, x);
        }
    }
}
static void pv_x_f32(float *acc, size_t acc_stride, size_t w_stride, int nh, const kv_run *runs, int n_runs,
                     size_t stride, int x0, int x1) {
    pv_x_ref(kv_f32, acc, acc_stride, w_stride, nh, runs, n_runs, stride, x0, x1);
}
static void pv_x_f16(float *acc, size_t acc_stride, size_t w_stride, int nh, const kv_run *runs, int n_runs,
                     size_t stride, int x0, int x1) {
    pv_x_ref(kv_f16, acc, acc_stride, w_stride, nh, runs, n_runs, stride, x0, x1);
}

/* ---- quantized entries: the scalar reference. A block of 32 elements
 * unpacks to its scale and 32 small integers. */
typedef void (*unpack_fn)(const char *row, int b, int8_t v[32], float *d);
static void unpack_q8_0(const char *row, int b, int8_t v[32], float *d) {
    const tr_block_q8_0 *x = (const tr_block_q8_0 *)row + b;
    *d = tr_fp16_to_fp32(x->d);
    memcpy(v, x->qs, 32);
}
static void unpack_q4_0(const char *row, int b, int8_t v[32], float *d) {
    const tr_block_q4_0 *x = (const tr_block_q4_0 *)row + b;
    *d = tr_fp16_to_fp32(x->d);
    for (int j = 0; j < 16; j++) {
        v[j] = (int8_t)((x->qs[j] & 15) - 8);
        v[j + 16] = (int8_t)((x->qs[j] >> 4) - 8);
    }
}
static void unpack_tq2_32(const char *row, int b, int8_t v[32], float *d) {
    const tr_block_tq2_32 *x = (const tr_block_tq2_32 *)row + b;
    *d = tr_fp16_to_fp32(x->d);
    for (int j = 0; j < 32; j++) v[j] = (int8_t)(((x->qs[j % 8] >> (2 * (j / 8))) & 3) - 1);
}

static void scores_xq_ref(unpack_fn unpack, const tr_block_q8_0 *q, int nq, const char *k, size_t stride, int n,
                          int d, float scale, float *s, size_t s_stride) {
    const int nb = d / 32;
    for (int qq = 0; qq < nq; qq++)
        for (int i = 0; i < n; i++) {
            const char *kr = k + (size_t)i * stride;
            float lane[8] = {0};
            for (int b = 0; b < nb; b++) {
                int8_t kv[32];
                float dk;
                unpack(kr, b, kv, &dk);
                const tr_block_q8_0 *qb = q + (size_t)qq * nb + b;
                int32_t isum = 0;
                for (int e = 0; e < 32; e++) isum += (int32_t)qb->qs[e] * kv[e];
                lane[b & 7] += dk * tr_fp16_to_fp32(qb->d) * (float)isum;
            }
            s[(size_t)qq * s_stride + i] = lanes_sum(lane, 1) * scale;
        }
}
static void pv_xq_ref(unpack_fn unpack, float *acc, size_t acc_stride, size_t w_stride, int nh, const kv_run *runs,
                      int n_runs, size_t stride, int x0, int x1) {
    for (int r = 0; r < n_runs; r++)
    for (int h = 0; h < nh; h++) {
        const char *v = runs[r].v;
        const float *w = runs[r].w;
        const int p0 = runs[r].p0, n = runs[r].n;
        for (int i = 0; i < n; i++) {
            const float wi = w[(size_t)h * w_stride + i];
            if (wi == 0) continue;
            const char *vr = v + (size_t)i * stride;
            const int lane = (p0 + i) & 7;
            float *ah = acc + (size_t)h * acc_stride;
            for (int b = x0 / 32; b < x1 / 32; b++) {
                int8_t q[32];
                float d;
                unpack(vr, b, q, &d);
                const float wd = wi * d;
                for (int e = 0; e < 32; e++) { /* fused: one rounding, as the SIMD variant's FMA */
                    float *a = &ah[(((b * 32 + e) >> 3) * 8 + lane) * 8 + (e & 7)];
                    *a = fmaf(wd, (float)q[e], *a);
                }
            }
        }
    }
}
#define QREF(T)                                                                                                  \
    static void scores_xq_##T(const tr_block_q8_0 *q, int nq, const char *k, size_t stride, int n, int d,       \
                              float scale, float *s, size_t s_stride) {                                          \
        scores_xq_ref(unpack_##T, q, nq, k, stride, n, d, scale, s, s_stride);                                 \
    }                                                                                                            \
    static void pv_x_##T(float *acc, size_t acc_stride, size_t w_stride, int nh, const kv_run *runs, int n_runs, \
                         size_t stride, int x0, int x1) {                                                        \
        pv_xq_ref(unpack_##T, acc, acc_stride, w_stride, nh, runs, n_runs, stride, x0, x1);                      \
    }
QREF(q8_0)
QREF(q4_0)
QREF(tq2_32)
#undef QREF

static void scores_f32(const float *q, const char *k, size_t stride, int n, int d, float scale, float *s) {
    for (int i = 0; i < n; i++) s[i] = scale * dot_f32(q, k + (size_t)i * stride, d);
}
static void scores_f16(const float *q, const char *k, size_t stride, int n, int d, float scale, float *s) {
    for (int i = 0; i < n; i++) s[i] = scale * dot_f16(q, k + (size_t)i * stride, d);
}
static void pv_f32(float *o, const float *p, const char *v, size_t stride, int n, int d) {
    for (int i = 0; i < n; i++)
        if (p[i] != 0) axpy_f32(o, p[i], v + (size_t)i * stride, d);
}
static void pv_f16(float *o, const float *p, const char *v, size_t stride, int n, int d) {
    for (int i = 0; i < n; i++)
        if (p[i] != 0) axpy_f16(o, p[i], v + (size_t)i * stride, d);
}

/* ---------------------------------------------------------------- AVX2 */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TGT __attribute__((target("avx2,fma,f16c")))

TGT static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TGT static float dot_f32_avx2(const float *q, const void *k_, int d) {
    const float *k = k_;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= d; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), a1);
    }
    for (; i + 8 <= d; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
    float s = hsum8(_mm256_add_ps(a0, a1));
    for (; i < d; i++) s += q[i] * k[i];
    return s;
}

TGT static float dot_f16_avx2(const float *q, const void *k_, int d) {
    const uint16_t *k = k_;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= d; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i + 8))), a1);
    }
    for (; i + 8 <= d; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), a0);
    float s = hsum8(_mm256_add_ps(a0, a1));
    for (; i < d; i++) s += q[i] * _cvtsh_ss(k[i]);
    return s;
}

/* exp for x <= 0 (scores minus their max): 2^n * p(r) with r = x - n ln2 in
 * [-ln2/2, ln2/2], p a degree-6 Taylor polynomial (relative error ~2e-7);
 * below -87 the result is flushed to 0, which -inf also takes. */
TGT static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, res);
}

TGT static float exp_sum_avx2(float *s, int n, float m) {
    __m256 mv = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        _mm256_storeu_ps(s + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum8(acc);
    for (; i < n; i++) {
        s[i] = expf(s[i] - m);
        sum += s[i];
    }
    return sum;
}
TGT static void round_half_avx2(float *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) dst[i] = _cvtsh_ss(_cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT));
}

/* Scores of a tile: the per-slot dot is inlined (no call per slot). */
#define SCORES_AVX2(name, dotfn)                                                                      \
    TGT static void name(const float *q, const char *k, size_t stride, int n, int d, float scale, float *s) { \
        for (int i = 0; i < n; i++) s[i] = scale * dotfn(q, k + (size_t)i * stride, d);             \
    }
SCORES_AVX2(scores_f32_avx2, dot_f32_avx2)
SCORES_AVX2(scores_f16_avx2, dot_f16_avx2)

/* o += sum p[i] v_i, 32 output lanes at a time held in registers across
 * all slots of the tile, so o is loaded and stored once per tile. */
#define PV_AVX2(name, LOAD8)                                                                          \
    TGT static void name(float *o, const float *p, const char *v_, size_t stride, int n, int d) {   \
        int x = 0;                                                                                   \
        for (; x + 32 <= d; x += 32) {                                                               \
            __m256 o0 = _mm256_loadu_ps(o + x), o1 = _mm256_loadu_ps(o + x + 8);                     \
            __m256 o2 = _mm256_loadu_ps(o + x + 16), o3 = _mm256_loadu_ps(o + x + 24);               \
            for (int i = 0; i < n; i++) {                                                            \
                if (p[i] == 0) continue;                                                             \
                __m256 pi = _mm256_set1_ps(p[i]);                                                    \
                const char *vr = v_ + (size_t)i * stride;                                            \
                o0 = _mm256_fmadd_ps(pi, LOAD8(vr, x), o0);                                          \
                o1 = _mm256_fmadd_ps(pi, LOAD8(vr, x + 8), o1);                                      \
                o2 = _mm256_fmadd_ps(pi, LOAD8(vr, x + 16), o2);                                     \
                o3 = _mm256_fmadd_ps(pi, LOAD8(vr, x + 24), o3);                                     \
            }                                                                                        \
            _mm256_storeu_ps(o + x, o0);                                                             \
            _mm256_storeu_ps(o + x + 8, o1);                                                         \
            _mm256_storeu_ps(o + x + 16, o2);                                                        \
            _mm256_storeu_ps(o + x + 24, o3);                                                        \
        }                                                                                            \
        if (x < d) {                                                                                 \
            for (int i = 0; i < n; i++) {                                                            \
                if (p[i] == 0) continue;                                                             \
                const char *vr = v_ + (size_t)i * stride;                                            \
                int y = x;                                                                           \
                for (; y + 8 <= d; y += 8)                                                           \
                    _mm256_storeu_ps(o + y, _mm256_fmadd_ps(_mm256_set1_ps(p[i]), LOAD8(vr, y), _mm256_loadu_ps(o + y))); \
                for (; y < d; y++) o[y] += p[i] * LOAD1(vr, y);                                       \
            }                                                                                        \
        }                                                                                            \
    }
#define LOAD8_F32(vr, x) _mm256_loadu_ps((const float *)(vr) + (x))
#define LOAD8_F16(vr, x) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(vr) + (x))))
#define LOAD1 LOAD1_F32
#define LOAD1_F32(vr, y) (((const float *)(vr))[y])
PV_AVX2(pv_f32_avx2, LOAD8_F32)
#undef LOAD1
#define LOAD1(vr, y) _cvtsh_ss(((const uint16_t *)(vr))[y])
PV_AVX2(pv_f16_avx2, LOAD8_F16)
#undef LOAD1

/* The lanes order (see above) in SIMD: one 8-wide accumulator per query is
 * exactly the 8 lanes; nq queries share each converted K row. */
/* Loops of a few known steps whose arrays must live in registers. */
#define UNROLL8 _Pragma("GCC unroll 8")

#define SCORES_X_AVX2(name, LOADK, NQ)                                                                 \
    TGT static void name(const float *q, const char *k, size_t stride, int n, int d, float scale, float *s, \
                         size_t s_stride) {                                                          \
        const int d8 = d & ~7;                                                                       \
        for (int i = 0; i < n; i++) {                                                                \
            const char *kr = k + (size_t)i * stride;                                                 \
            __m256 acc[NQ];                                                                          \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) acc[qq] = _mm256_setzero_ps();                           \
            for (int e = 0; e < d8; e += 8) {                                                        \
                const __m256 kv = LOADK(kr, e);                                                      \
                UNROLL8 for (int qq = 0; qq < NQ; qq++)                                                      \
                    acc[qq] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)qq * d + e), kv, acc[qq]); \
            }                                                                                        \
            if (d8 < d) { /* ragged head: the missing elements are zeros, which add nothing */       \
                float kt[8] = {0}, qt[8] = {0};                                                      \
                for (int e = d8; e < d; e++) kt[e - d8] = LOAD1K(kr, e);                             \
                UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                    \
                    for (int e = d8; e < d; e++) qt[e - d8] = q[(size_t)qq * d + e];                 \
                    acc[qq] = _mm256_fmadd_ps(_mm256_loadu_ps(qt), _mm256_loadu_ps(kt), acc[qq]);    \
                }                                                                                    \
            }                                                                                        \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) s[(size_t)qq * s_stride + i] = hsum8(acc[qq]) * scale;   \
        }                                                                                            \
    }
#define LOADK_F32(kr, e) _mm256_loadu_ps((const float *)(kr) + (e))
#define LOADK_F16(kr, e) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)(kr) + (e))))
#define LOAD1K(kr, e) (((const float *)(kr))[e])
SCORES_X_AVX2(scores_x1_f32_avx2, LOADK_F32, 1)
SCORES_X_AVX2(scores_x2_f32_avx2, LOADK_F32, 2)
SCORES_X_AVX2(scores_x4_f32_avx2, LOADK_F32, 4)
#undef LOAD1K
#define LOAD1K(kr, e) _cvtsh_ss(((const uint16_t *)(kr))[e])
SCORES_X_AVX2(scores_x1_f16_avx2, LOADK_F16, 1)
SCORES_X_AVX2(scores_x2_f16_avx2, LOADK_F16, 2)
SCORES_X_AVX2(scores_x4_f16_avx2, LOADK_F16, 4)
#undef LOAD1K

#define SCORES_X_DISPATCH(name, suffix)                                                               \
    TGT static void name(const float *q, int nq, const char *k, size_t stride, int n, int d, float scale, float *s, \
                         size_t s_stride) {                                                          \
        for (; nq >= 4; nq -= 4, q += (size_t)4 * d, s += 4 * s_stride)                              \
            scores_x4_##suffix(q, k, stride, n, d, scale, s, s_stride);                              \
        for (; nq >= 2; nq -= 2, q += (size_t)2 * d, s += 2 * s_stride)                              \
            scores_x2_##suffix(q, k, stride, n, d, scale, s, s_stride);                              \
        if (nq) scores_x1_##suffix(q, k, stride, n, d, scale, s, s_stride);                          \
    }
SCORES_X_DISPATCH(scores_x_f32_avx2, f32_avx2)
SCORES_X_DISPATCH(scores_x_f16_avx2, f16_avx2)

#define AINL static inline __attribute__((always_inline)) TGT
AINL __m256 load8_kv(const char *row, int x, bool f16) {
    return f16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + x)))
               : _mm256_loadu_ps((const float *)row + x);
}
AINL float load1_kv(const char *row, int x, bool f16) {
    return f16 ? _cvtsh_ss(((const uint16_t *)row)[x]) : ((const float *)row)[x];
}

/* nh heads' lanes, output elements [x0, x1): for every 8 elements and every
 * lane, the lane's accumulator of each head is held in a register while the
 * lane's slots of every run (slot p0 + i into lane (p0 + i) mod 8, in
 * position order) are added, each slot's 8 values converted once for all the
 * heads. Each element's sum is the reference's, in its order; the products
 * of half weights and half (or float) values are fused (exact for halves). */
AINL void pv_x_nh(float *acc, size_t as, size_t ws, size_t wofs, const int NH, const kv_run *runs, int n_runs,
                  size_t stride, int x0, int x1, bool f16) {
    const int x8 = x0 + ((x1 - x0) & ~7);
    for (int x = x0; x < x8; x += 8)
        for (int l = 0; l < 8; l++) {
            float *ab = acc + (size_t)(x + l) * 8;
            __m256 a0 = _mm256_loadu_ps(ab), a1 = a0, a2 = a0, a3 = a0;
            if (NH > 1) a1 = _mm256_loadu_ps(ab + as);
            if (NH > 2) a2 = _mm256_loadu_ps(ab + 2 * as);
            if (NH > 3) a3 = _mm256_loadu_ps(ab + 3 * as);
            for (int r = 0; r < n_runs; r++) {
                const char *v = runs[r].v;
                const float *w = runs[r].w + wofs;
                const int n = runs[r].n;
                for (int i = (l - runs[r].p0) & 7; i < n; i += 8) { /* the run's slots in lane l */
                    const __m256 vv = load8_kv(v + (size_t)i * stride, x, f16);
                    a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + i), vv, a0);
                    if (NH > 1) a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + ws + i), vv, a1);
                    if (NH > 2) a2 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 2 * ws + i), vv, a2);
                    if (NH > 3) a3 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + 3 * ws + i), vv, a3);
                }
            }
            _mm256_storeu_ps(ab, a0);
            if (NH > 1) _mm256_storeu_ps(ab + as, a1);
            if (NH > 2) _mm256_storeu_ps(ab + 2 * as, a2);
            if (NH > 3) _mm256_storeu_ps(ab + 3 * as, a3);
        }
    for (int r = 0; r < n_runs; r++) /* ragged output tail */
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < runs[r].n; i++)
                for (int x = x8; x < x1; x++)
                    acc[(size_t)h * as + ((x >> 3) * 8 + ((runs[r].p0 + i) & 7)) * 8 + (x & 7)] +=
                        runs[r].w[wofs + (size_t)h * ws + i] * load1_kv(runs[r].v + (size_t)i * stride, x, f16);
}
/* Heads in fours (head h0's weights at each run's w + h0*ws). */
AINL void pv_x_heads(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs, size_t stride, int x0,
                     int x1, bool f16) {
    for (int h0 = 0; h0 < nh; h0 += 4) {
        float *ah = acc + (size_t)h0 * as;
        const size_t wo = (size_t)h0 * ws;
        const int left = nh - h0;
        if (left >= 4) pv_x_nh(ah, as, ws, wo, 4, runs, n_runs, stride, x0, x1, f16);
        else if (left == 3) pv_x_nh(ah, as, ws, wo, 3, runs, n_runs, stride, x0, x1, f16);
        else if (left == 2) pv_x_nh(ah, as, ws, wo, 2, runs, n_runs, stride, x0, x1, f16);
        else pv_x_nh(ah, as, ws, wo, 1, runs, n_runs, stride, x0, x1, f16);
    }
}
TGT static void pv_x_f32_avx2(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs, size_t stride,
                              int x0, int x1) {
    pv_x_heads(acc, as, ws, nh, runs, n_runs, stride, x0, x1, false);
}
TGT static void pv_x_f16_avx2(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs, size_t stride,
                              int x0, int x1) {
    pv_x_heads(acc, as, ws, nh, runs, n_runs, stride, x0, x1, true);
}
/* ---- quantized entries, AVX2. A block unpacks to 32 int8 in a register
 * (and its scale); the dot product with a Q8_0 query block is the usual
 * sign trick (|k| times q with k's sign, in pairs to 16 bits, then to 32),
 * exact; eight blocks' 32-bit partial sums are reduced together, one block
 * per lane, and scaled in float as the reference does. */
AINL __m256i unpack8_q8_0(const char *row, int b) {
    return _mm256_loadu_si256((const __m256i *)((const tr_block_q8_0 *)row + b)->qs);
}
AINL __m256i unpack8_q4_0(const char *row, int b) {
    const __m128i x = _mm_loadu_si128((const __m128i *)((const tr_block_q4_0 *)row + b)->qs);
    const __m128i m = _mm_set1_epi8(15);
    const __m256i v = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(x, 4), m), _mm_and_si128(x, m));
    return _mm256_sub_epi8(v, _mm256_set1_epi8(8));
}
AINL __m256i unpack8_tq2_32(const char *row, int b) {
    int64_t bits;
    memcpy(&bits, ((const tr_block_tq2_32 *)row + b)->qs, 8);
    const __m256i v = _mm256_srlv_epi64(_mm256_set1_epi64x(bits), _mm256_set_epi64x(6, 4, 2, 0));
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(3)), _mm256_set1_epi8(1));
}
AINL float scale_q8_0(const char *row, int b) { return _cvtsh_ss(((const tr_block_q8_0 *)row + b)->d); }
AINL float scale_q4_0(const char *row, int b) { return _cvtsh_ss(((const tr_block_q4_0 *)row + b)->d); }
AINL float scale_tq2_32(const char *row, int b) { return _cvtsh_ss(((const tr_block_tq2_32 *)row + b)->d); }

/* The scales of blocks b0 .. b0+m-1 (m <= 8) of a row of blocks of type B
 * (its fp16 field d), as floats in lanes 0 .. m-1, zeros after. */
#define SCALES8(B, row, b0, m)                                                                                     \
    _mm256_cvtph_ps((m) == 8 ? _mm_setr_epi16((short)((const B *)(row) + (b0))[0].d, (short)((const B *)(row) + (b0))[1].d, \
                                              (short)((const B *)(row) + (b0))[2].d, (short)((const B *)(row) + (b0))[3].d, \
                                              (short)((const B *)(row) + (b0))[4].d, (short)((const B *)(row) + (b0))[5].d, \
                                              (short)((const B *)(row) + (b0))[6].d, (short)((const B *)(row) + (b0))[7].d) \
                             : scales_part((const char *)((const B *)(row) + (b0)) + offsetof(B, d), sizeof(B), (m)))
/* The scales of block b of 8 cache slots, stride bytes apart from slot0
 * (blocks of type B), as floats. */
#define SLOT_SCALES8(B, slot0, stride, b)                                                                          \
    _mm256_cvtph_ps(_mm_setr_epi16((short)((const B *)((slot0) + 0 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 1 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 2 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 3 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 4 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 5 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 6 * (stride)) + (b))->d,                          \
                                   (short)((const B *)((slot0) + 7 * (stride)) + (b))->d))
AINL __m128i scales_part(const char *d, size_t size, int m) {
    uint16_t h[8] = {0};
    for (int b = 0; b < m; b++) memcpy(&h[b], d + (size_t)b * size, 2);
    return _mm_loadu_si128((const __m128i *)h);
}

/* Each K block meets the NQ queries' blocks (its unpacking shared); a pair
 * of blocks' 32-bit sums is folded as it is made (hadd), so few registers
 * stay live; the integer sums are exact, so any folding order gives the
 * reference's. The query scales are converted once per call when a head is
 * at most 8 blocks. */
#define SCORES_XQ_AVX2(T, NQ)                                                                                      \
    TGT static void scores_xq##NQ##_##T##_avx2(const tr_block_q8_0 *q, const char *k, size_t stride, int n, int d, \
                                              float scale, float *s, size_t s_stride) {                           \
        const int nb = d / 32;                                                                                     \
        const __m256i ones = _mm256_set1_epi16(1);                                                                 \
        __m256 dq0[NQ];                                                                                            \
        UNROLL8 for (int qq = 0; qq < NQ; qq++) dq0[qq] = SCALES8(tr_block_q8_0, q + (size_t)qq * nb, 0, nb < 8 ? nb : 8);  \
        for (int i = 0; i < n; i++) {                                                                              \
            const char *kr = k + (size_t)i * stride;                                                               \
            __m256 acc[NQ];                                                                                        \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) acc[qq] = _mm256_setzero_ps();                                         \
            for (int b0 = 0; b0 < nb; b0 += 8) {                                                                   \
                const int m = nb - b0 < 8 ? nb - b0 : 8;                                                           \
                __m256i t[NQ][4];                                                                                  \
                UNROLL8 for (int b = 0; b < 8; b += 2) {                                                           \
                    __m256i p[NQ][2];                                                                              \
                    UNROLL8 for (int e = 0; e < 2; e++) {                                                          \
                        if (b + e >= m) {                                                                          \
                            UNROLL8 for (int qq = 0; qq < NQ; qq++) p[qq][e] = _mm256_setzero_si256();                     \
                            continue;                                                                              \
                        }                                                                                          \
                        const __m256i kv = unpack8_##T(kr, b0 + b + e), ka = _mm256_abs_epi8(kv);                  \
                        UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                          \
                            const __m256i qv = _mm256_loadu_si256((const __m256i *)q[(size_t)qq * nb + b0 + b + e].qs); \
                            p[qq][e] = _mm256_madd_epi16(_mm256_maddubs_epi16(ka, _mm256_sign_epi8(qv, kv)), ones); \
                        }                                                                                          \
                    }                                                                                              \
                    UNROLL8 for (int qq = 0; qq < NQ; qq++) t[qq][b / 2] = _mm256_hadd_epi32(p[qq][0], p[qq][1]);          \
                }                                                                                                  \
                const __m256 dkv = SCALES8(tr_block_##T, kr, b0, m);                                               \
                UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                                  \
                    const __m256i u0 = _mm256_hadd_epi32(t[qq][0], t[qq][1]), u1 = _mm256_hadd_epi32(t[qq][2], t[qq][3]); \
                    const __m256i is = _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),                   \
                                                        _mm256_permute2x128_si256(u0, u1, 0x31));                  \
                    const __m256 dqv = nb <= 8 ? dq0[qq] : SCALES8(tr_block_q8_0, q + (size_t)qq * nb, b0, m);     \
                    acc[qq] = _mm256_add_ps(acc[qq], _mm256_mul_ps(_mm256_mul_ps(dkv, dqv), _mm256_cvtepi32_ps(is))); \
                }                                                                                                  \
            }                                                                                                      \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) s[(size_t)qq * s_stride + i] = hsum8(acc[qq]) * scale;                 \
        }                                                                                                          \
    }

/* Eight values x .. x+7 (x a multiple of 8) of a row, as floats, before the block's scale. */
AINL __m256 vals8_q8_0(const char *row, int x) {
    const tr_block_q8_0 *blk = (const tr_block_q8_0 *)row + x / 32;
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk->qs + x % 32))));
}
AINL __m256 vals8_q4_0(const char *row, int x) {
    const tr_block_q4_0 *blk = (const tr_block_q4_0 *)row + x / 32;
    const int o = x % 32;
    __m128i b = _mm_loadl_epi64((const __m128i *)(blk->qs + (o & 15)));
    if (o >= 16) b = _mm_srli_epi16(b, 4);
    b = _mm_and_si128(b, _mm_set1_epi8(15));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(8)));
}
AINL __m256 vals8_tq2_32(const char *row, int x) {
    const tr_block_tq2_32 *blk = (const tr_block_tq2_32 *)row + x / 32;
    __m128i b = _mm_srl_epi16(_mm_loadl_epi64((const __m128i *)blk->qs), _mm_cvtsi32_si128(2 * ((x % 32) / 8)));
    b = _mm_and_si128(b, _mm_set1_epi8(3));
    return _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(b), _mm256_set1_epi32(1)));
}

/* As pv_x_nh, a block of 32 output elements at a time: each slot's weight
 * times the block's scale once per head (w_h[i] * d, as the reference), then
 * for every 8 elements and lane the heads' accumulators in registers while
 * the lane's slots of every run are unpacked, once for all heads, and added
 * with one fused multiply-add each (the reference's fmaf: one rounding). */
#define PV_XQ_AVX2(T)                                                                                              \
    AINL void pv_xq_nh_##T(float *acc, size_t as, size_t ws, size_t wofs, const int NH, const kv_run *runs,        \
                           int n_runs, size_t stride, int x0, int x1) {                                            \
        __m256 wd[4][RUN_SLOTS]; /* w_h[k] * d_k of the block, broadcast: the products' memory operands */        \
        const char *bp[RUN_SLOTS]; /* each slot's block b */                                                       \
        int base[RUN_SLOTS];     /* run r's first slot among all the runs' */                                      \
        for (int r = 0, k = 0; r < n_runs; k += runs[r].n, r++) base[r] = k;                                       \
        for (int b = x0 / 32; b < x1 / 32; b++) {                                                                  \
            for (int r = 0; r < n_runs; r++) {                                                                     \
                const char *vc = runs[r].v;                                                                        \
                const float *wr = runs[r].w + wofs;                                                                \
                const int cn = runs[r].n, k0 = base[r];                                                            \
                int i = 0;                                                                                         \
                for (; i + 8 <= cn; i += 8) { /* 8 slots' scales at once */                                       \
                    const __m256 d8 = SLOT_SCALES8(tr_block_##T, vc + (size_t)i * stride, stride, b);             \
                    for (int h = 0; h < NH; h++) {                                                                 \
                        float f[8];                                                                                \
                        _mm256_storeu_ps(f, _mm256_mul_ps(_mm256_loadu_ps(wr + (size_t)h * ws + i), d8));          \
                        UNROLL8 for (int e = 0; e < 8; e++) wd[h][k0 + i + e] = _mm256_set1_ps(f[e]);             \
                    }                                                                                              \
                }                                                                                                  \
                for (; i < cn; i++) {                                                                              \
                    const float d = scale_##T(vc + (size_t)i * stride, b);                                         \
                    for (int h = 0; h < NH; h++) wd[h][k0 + i] = _mm256_set1_ps(wr[(size_t)h * ws + i] * d);       \
                }                                                                                                  \
                for (i = 0; i < cn; i++) bp[k0 + i] = (const char *)((const tr_block_##T *)(vc + (size_t)i * stride) + b); \
            }                                                                                                      \
            for (int x = b * 32; x < b * 32 + 32; x += 8) {                                                        \
                const int o = x & 31;                                                                              \
                /* the weights are read where they are used, not hoisted out of this loop (too many) */           \
                __asm__ volatile("" ::: "memory");                                                                 \
                UNROLL8 for (int l = 0; l < 8; l++) {                                                              \
                    float *ab = acc + (size_t)(x + l) * 8;                                                         \
                    __m256 a0 = _mm256_loadu_ps(ab), a1 = a0, a2 = a0, a3 = a0;                                    \
                    if (NH > 1) a1 = _mm256_loadu_ps(ab + as);                                                     \
                    if (NH > 2) a2 = _mm256_loadu_ps(ab + 2 * as);                                                 \
                    if (NH > 3) a3 = _mm256_loadu_ps(ab + 3 * as);                                                 \
                    for (int r = 0; r < n_runs; r++) {                                                             \
                        const int cn = runs[r].n, k0 = base[r];                                                    \
                        for (int i = (l - runs[r].p0) & 7; i < cn; i += 8) { /* the run's slots in lane l */      \
                            const __m256 vv = vals8_##T(bp[k0 + i], o);                                            \
                            a0 = _mm256_fmadd_ps(wd[0][k0 + i], vv, a0);                                           \
                            if (NH > 1) a1 = _mm256_fmadd_ps(wd[1][k0 + i], vv, a1);                               \
                            if (NH > 2) a2 = _mm256_fmadd_ps(wd[2][k0 + i], vv, a2);                               \
                            if (NH > 3) a3 = _mm256_fmadd_ps(wd[3][k0 + i], vv, a3);                               \
                        }                                                                                          \
                    }                                                                                              \
                    _mm256_storeu_ps(ab, a0);                                                                      \
                    if (NH > 1) _mm256_storeu_ps(ab + as, a1);                                                     \
                    if (NH > 2) _mm256_storeu_ps(ab + 2 * as, a2);                                                 \
                    if (NH > 3) _mm256_storeu_ps(ab + 3 * as, a3);                                                 \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
    TGT static void pv_x_##T##_avx2(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs,      \
                                    size_t stride, int x0, int x1) {                                               \
        for (int h0 = 0; h0 < nh; h0 += 4) { /* heads in fours: head h0's weights at each run's w + h0*ws */       \
            float *ah = acc + (size_t)h0 * as;                                                                     \
            const size_t wo = (size_t)h0 * ws;                                                                     \
            const int left = nh - h0;                                                                              \
            if (left >= 4) pv_xq_nh_##T(ah, as, ws, wo, 4, runs, n_runs, stride, x0, x1);                          \
            else if (left == 3) pv_xq_nh_##T(ah, as, ws, wo, 3, runs, n_runs, stride, x0, x1);                     \
            else if (left == 2) pv_xq_nh_##T(ah, as, ws, wo, 2, runs, n_runs, stride, x0, x1);                     \
            else pv_xq_nh_##T(ah, as, ws, wo, 1, runs, n_runs, stride, x0, x1);                                    \
        }                                                                                                          \
    }

#define QAVX2(T)                                                                                                   \
    SCORES_XQ_AVX2(T, 1)                                                                                           \
    SCORES_XQ_AVX2(T, 2)                                                                                           \
    /* Pairs of queries: four at once keep more sums live than there are registers (measured: more \
     * instructions than two pairs). */                                                                          \
    TGT static void scores_xq_##T##_avx2(const tr_block_q8_0 *q, int nq, const char *k, size_t stride, int n, int d, \
                                         float scale, float *s, size_t s_stride) {                                 \
        const int nb = d / 32;                                                                                     \
        for (; nq >= 2; nq -= 2, q += (size_t)2 * nb, s += 2 * s_stride)                                           \
            scores_xq2_##T##_avx2(q, k, stride, n, d, scale, s, s_stride);                                         \
        if (nq) scores_xq1_##T##_avx2(q, k, stride, n, d, scale, s, s_stride);                                     \
    }                                                                                                              \
    PV_XQ_AVX2(T)
QAVX2(q8_0)
QAVX2(q4_0)
QAVX2(tq2_32)
#undef QAVX2

/* ---------------------------------------------------------------- AVX-512 */

/* The normalised-weights path's loops (scores_x, scores_xq, pv_x) in 512-bit
 * registers, in the AVX2 variants' order to the bit: a register holds two of
 * the AVX2 variant's 8-lane sums side by side, never 16 terms of one sum. The
 * scores take two keys per register (lanes 0-7 the first key's 8 lanes, 8-15
 * the second's), the weighted sums of V two or four 8-element groups of one
 * lane per head. Every lane sees the AVX2 variant's operations in its order,
 * so the bits are the AVX2 variant's (and the reference's where those are).
 * The flash path's loops (scores, pv, exp_sum) stay AVX2. */
#define AINL512 static inline __attribute__((always_inline)) TGT512
/* Longer heads take the AVX2 loops: the queries' copies below live on the stack. */
enum { MAXD_512 = 512 };

/* Each 256-bit half's 8 lanes summed as hsum8 sums them, into lanes 0 and 8
 * (float addition commutes: lane j + lane j^4 is l_j + l_{j+4} in either). */
AINL512 __m512 hsum8x2(__m512 a) {
    a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, _MM_SHUFFLE(2, 3, 0, 1)));
    a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* Two keys' 8 values at e: key a in lanes 0-7, key b in 8-15. The tail
 * forms load the last d - e (< 8) values under mask m, zeros after (the AVX2
 * variant's zero-padded copies), and read nothing past them. */
AINL512 __m512 load2k_f32(const char *ka, const char *kb, int e) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps((const float *)ka + e)),
                              _mm256_loadu_ps((const float *)kb + e), 1);
}
AINL512 __m512 load2k_f16(const char *ka, const char *kb, int e) {
    const __m128i a = _mm_loadu_si128((const __m128i *)((const uint16_t *)ka + e));
    const __m128i b = _mm_loadu_si128((const __m128i *)((const uint16_t *)kb + e));
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
}
AINL512 __m512 tail2k_f32(const char *ka, const char *kb, int e, __mmask8 m) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_maskz_loadu_ps(m, (const float *)ka + e)),
                              _mm256_maskz_loadu_ps(m, (const float *)kb + e), 1);
}
AINL512 __m512 tail2k_f16(const char *ka, const char *kb, int e, __mmask8 m) {
    const __m128i a = _mm_maskz_loadu_epi16(m, (const uint16_t *)ka + e);
    const __m128i b = _mm_maskz_loadu_epi16(m, (const uint16_t *)kb + e);
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
}

/* Each query's 8-element groups are copied once per call into both halves
 * of a register (the products' memory operands); an odd last key is scored
 * twice in one register and its second copy dropped. */
#define SCORES_X_512(T, NQ)                                                                                        \
    TGT512 static void scores_x##NQ##_##T##_avx512(const float *q, const char *k, size_t stride, int n, int d,     \
                                                  float scale, float *s, size_t s_stride) {                       \
        const int d8 = d & ~7, g8 = d8 / 8;                                                                        \
        const __mmask8 tm = (__mmask8)((1u << (d - d8)) - 1);                                                      \
        __m512 qd[NQ][MAXD_512 / 8];                                                                               \
        UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                                          \
            const float *qr = q + (size_t)qq * d;                                                                  \
            for (int g = 0; g < g8; g++) qd[qq][g] = _mm512_broadcast_f32x8(_mm256_loadu_ps(qr + 8 * g));          \
            if (d8 < d) qd[qq][g8] = _mm512_broadcast_f32x8(_mm256_maskz_loadu_ps(tm, qr + d8));                   \
        }                                                                                                          \
        for (int i = 0; i < n; i += 2) {                                                                           \
            const char *ka = k + (size_t)i * stride, *kb = i + 1 < n ? ka + stride : ka;                           \
            __m512 acc[NQ];                                                                                        \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) acc[qq] = _mm512_setzero_ps();                                         \
            for (int g = 0; g < g8; g++) {                                                                         \
                const __m512 kv = load2k_##T(ka, kb, 8 * g);                                                       \
                UNROLL8 for (int qq = 0; qq < NQ; qq++) acc[qq] = _mm512_fmadd_ps(qd[qq][g], kv, acc[qq]);                 \
            }                                                                                                      \
            if (d8 < d) {                                                                                          \
                const __m512 kv = tail2k_##T(ka, kb, d8, tm);                                                      \
                UNROLL8 for (int qq = 0; qq < NQ; qq++) acc[qq] = _mm512_fmadd_ps(qd[qq][g8], kv, acc[qq]);                \
            }                                                                                                      \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                                      \
                const __m512 h = hsum8x2(acc[qq]);                                                                 \
                s[(size_t)qq * s_stride + i] = _mm512_cvtss_f32(h) * scale;                                        \
                if (i + 1 < n) s[(size_t)qq * s_stride + i + 1] = _mm_cvtss_f32(_mm512_extractf32x4_ps(h, 2)) * scale; \
            }                                                                                                      \
        }                                                                                                          \
    }
#define SCORES_X_DISPATCH_512(T)                                                                                   \
    SCORES_X_512(T, 1)                                                                                             \
    SCORES_X_512(T, 2)                                                                                             \
    SCORES_X_512(T, 4)                                                                                             \
    TGT512 static void scores_x_##T##_avx512(const float *q, int nq, const char *k, size_t stride, int n, int d,   \
                                             float scale, float *s, size_t s_stride) {                             \
        if (d > MAXD_512) {                                                                                        \
            scores_x_##T##_avx2(q, nq, k, stride, n, d, scale, s, s_stride);                                       \
            return;                                                                                                \
        }                                                                                                          \
        for (; nq >= 4; nq -= 4, q += (size_t)4 * d, s += 4 * s_stride)                                            \
            scores_x4_##T##_avx512(q, k, stride, n, d, scale, s, s_stride);                                        \
        for (; nq >= 2; nq -= 2, q += (size_t)2 * d, s += 2 * s_stride)                                            \
            scores_x2_##T##_avx512(q, k, stride, n, d, scale, s, s_stride);                                        \
        if (nq) scores_x1_##T##_avx512(q, k, stride, n, d, scale, s, s_stride);                                    \
    }
SCORES_X_DISPATCH_512(f32)
SCORES_X_DISPATCH_512(f16)

/* 16 values x .. x+15 of a row, as floats. */
AINL512 __m512 load16_kv(const char *row, int x, bool f16) {
    return f16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)row + x)))
               : _mm512_loadu_ps((const float *)row + x);
}
/* One lane's accumulators of two consecutive 8-element groups (64 floats
 * apart in the [groups][8 lanes][8] layout) as one register. */
AINL512 __m512 load_acc2(const float *ab) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(ab)), _mm256_loadu_ps(ab + 64), 1);
}
AINL512 void store_acc2(float *ab, __m512 a) {
    _mm256_storeu_ps(ab, _mm512_castps512_ps256(a));
    _mm256_storeu_ps(ab + 64, _mm512_extractf32x8_ps(a, 1));
}

/* As pv_x_nh, lane l of the 16*W output elements from x (W registers per
 * head), the weight an embedded broadcast. ab: acc + (x + l)*8. */
AINL512 void pv_x_lane512(float *ab, size_t as, size_t ws, size_t wofs, const int NH, const int W, const kv_run *runs,
                          int n_runs, size_t stride, int l, int x, bool f16) {
    __m512 a[4][2];
    UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int c = 0; c < W; c++) a[h][c] = load_acc2(ab + h * as + 128 * c);
    for (int r = 0; r < n_runs; r++) {
        const char *v = runs[r].v;
        const float *w = runs[r].w + wofs;
        const int n = runs[r].n;
        for (int i = (l - runs[r].p0) & 7; i < n; i += 8) { /* the run's slots in lane l */
            const char *vr = v + (size_t)i * stride;
            __m512 vv[2];
            UNROLL8 for (int c = 0; c < W; c++) vv[c] = load16_kv(vr, x + 16 * c, f16);
            UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int c = 0; c < W; c++)
                a[h][c] = _mm512_fmadd_ps(_mm512_set1_ps(w[h * ws + i]), vv[c], a[h][c]);
        }
    }
    UNROLL8 for (int h = 0; h < NH; h++) UNROLL8 for (int c = 0; c < W; c++) store_acc2(ab + h * as + 128 * c, a[h][c]);
}
/* 32 output elements at a time, then 16; a last group of 8 and the ragged
 * tail are the AVX2 loop's. */
AINL512 void pv_x_nh512(float *acc, size_t as, size_t ws, size_t wofs, const int NH, const kv_run *runs, int n_runs,
                        size_t stride, int x0, int x1, bool f16) {
    const int x8 = x0 + ((x1 - x0) & ~7);
    int x = x0;
    for (; x + 32 <= x8; x += 32)
        for (int l = 0; l < 8; l++)
            pv_x_lane512(acc + (size_t)(x + l) * 8, as, ws, wofs, NH, 2, runs, n_runs, stride, l, x, f16);
    if (x + 16 <= x8) {
        for (int l = 0; l < 8; l++)
            pv_x_lane512(acc + (size_t)(x + l) * 8, as, ws, wofs, NH, 1, runs, n_runs, stride, l, x, f16);
        x += 16;
    }
    if (x < x1) pv_x_nh(acc, as, ws, wofs, NH, runs, n_runs, stride, x, x1, f16);
}
AINL512 void pv_x_heads512(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs, size_t stride,
                           int x0, int x1, bool f16) {
    for (int h0 = 0; h0 < nh; h0 += 4) {
        float *ah = acc + (size_t)h0 * as;
        const size_t wo = (size_t)h0 * ws;
        const int left = nh - h0;
        if (left >= 4) pv_x_nh512(ah, as, ws, wo, 4, runs, n_runs, stride, x0, x1, f16);
        else if (left == 3) pv_x_nh512(ah, as, ws, wo, 3, runs, n_runs, stride, x0, x1, f16);
        else if (left == 2) pv_x_nh512(ah, as, ws, wo, 2, runs, n_runs, stride, x0, x1, f16);
        else pv_x_nh512(ah, as, ws, wo, 1, runs, n_runs, stride, x0, x1, f16);
    }
}
TGT512 static void pv_x_f32_avx512(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs,
                                   size_t stride, int x0, int x1) {
    pv_x_heads512(acc, as, ws, nh, runs, n_runs, stride, x0, x1, false);
}
TGT512 static void pv_x_f16_avx512(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs,
                                   size_t stride, int x0, int x1) {
    pv_x_heads512(acc, as, ws, nh, runs, n_runs, stride, x0, x1, true);
}

/* ---- quantized entries, AVX-512. K: two blocks per register as unsigned
 * bytes u = k + BIAS (Q8_0: 128, Q4_0: its nibbles, 8; TQ2_32: its 2-bit
 * fields, 1); u times the query's integers summed by VNNI (vpdpbusd), minus
 * BIAS times the sum of the query block's integers, is the integer dot
 * product exactly, so any folding order gives the AVX2 variant's sums. A
 * missing second block (an odd count) is not read: its query bytes are
 * zeros. */
AINL512 __m512i ubytes2_q8_0(const char *row, int b, bool two) {
    const tr_block_q8_0 *x = (const tr_block_q8_0 *)row + b;
    const __m256i lo = _mm256_loadu_si256((const __m256i *)x[0].qs);
    const __m512i z = two ? _mm512_inserti64x4(_mm512_castsi256_si512(lo), _mm256_loadu_si256((const __m256i *)x[1].qs), 1)
                          : _mm512_zextsi256_si512(lo);
    return _mm512_xor_si512(z, _mm512_set1_epi8((char)0x80));
}
AINL512 __m512i ubytes2_q4_0(const char *row, int b, bool two) {
    const tr_block_q4_0 *x = (const tr_block_q4_0 *)row + b;
    const __m128i lo = _mm_loadu_si128((const __m128i *)x[0].qs);
    const __m256i y = two ? _mm256_inserti128_si256(_mm256_castsi128_si256(lo), _mm_loadu_si128((const __m128i *)x[1].qs), 1)
                          : _mm256_zextsi128_si256(lo);
    /* [b's bytes, b's bytes, b+1's, b+1's], the second of each pair shifted to its high nibbles */
    const __m512i z = _mm512_shuffle_i64x2(_mm512_castsi256_si512(y), _mm512_castsi256_si512(y), _MM_SHUFFLE(1, 1, 0, 0));
    const long long s4 = 0x0004000400040004LL;
    return _mm512_and_si512(_mm512_srlv_epi16(z, _mm512_setr_epi64(0, 0, s4, s4, 0, 0, s4, s4)), _mm512_set1_epi8(15));
}
AINL512 __m512i ubytes2_tq2_32(const char *row, int b, bool two) {
    const tr_block_tq2_32 *x = (const tr_block_tq2_32 *)row + b;
    int64_t b0, b1 = 0;
    memcpy(&b0, x[0].qs, 8);
    if (two) memcpy(&b1, x[1].qs, 8);
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi64x(b0)), _mm256_set1_epi64x(b1), 1);
    return _mm512_and_si512(_mm512_srlv_epi64(z, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6)), _mm512_set1_epi8(3));
}

/* The 8 blocks' sums of 4 registers of block pairs (register p: blocks 2p
 * and 2p+1, 8 partial sums each), block b in lane b. */
AINL512 __m256i reduce8_blocks(const __m512i z[4]) {
    const __m512i y0 = _mm512_add_epi32(_mm512_shuffle_i32x4(z[0], z[1], 0x88), _mm512_shuffle_i32x4(z[0], z[1], 0xDD));
    const __m512i y1 = _mm512_add_epi32(_mm512_shuffle_i32x4(z[2], z[3], 0x88), _mm512_shuffle_i32x4(z[2], z[3], 0xDD));
    /* 128-bit chunk c: blocks c (y0) and c+4 (y1), 4 partial sums each */
    const __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi64(y0, y1), _mm512_unpackhi_epi64(y0, y1));
    const __m512i u = _mm512_add_epi32(t, _mm512_shuffle_epi32(t, _MM_PERM_CDAB));
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castsi512_si256(_mm512_permutexvar_epi32(idx, u));
}

/* The float side is the AVX2 variant's, 8 blocks a register. The queries'
 * integers are copied once per call, blocks side by side (a pair is one
 * memory operand), zeros after the last block. */
#define SCORES_XQ_512(T, BIAS, NQ)                                                                                 \
    TGT512 static void scores_xq##NQ##_##T##_avx512(const tr_block_q8_0 *q, const char *k, size_t stride, int n,   \
                                                   int d, float scale, float *s, size_t s_stride) {               \
        const int nb = d / 32, ng = (nb + 7) / 8;                                                                  \
        int8_t qb[NQ][MAXD_512] __attribute__((aligned(64)));                                                      \
        __m256i bsum[NQ][MAXD_512 / 256]; /* BIAS times each block's sum of integers */                            \
        __m256 dq[NQ][MAXD_512 / 256];                                                                             \
        UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                                          \
            for (int b = 0; b < 8 * ng; b++)                                                                       \
                _mm256_store_si256((__m256i *)(qb[qq] + 32 * b),                                                   \
                                   b < nb ? _mm256_loadu_si256((const __m256i *)q[(size_t)qq * nb + b].qs)         \
                                          : _mm256_setzero_si256());                                               \
            for (int g = 0; g < ng; g++) {                                                                         \
                __m512i z[4];                                                                                      \
                for (int p = 0; p < 4; p++)                                                                        \
                    z[p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(1),                        \
                                               _mm512_load_si512(qb[qq] + 32 * (8 * g + 2 * p)));                  \
                bsum[qq][g] = _mm256_mullo_epi32(reduce8_blocks(z), _mm256_set1_epi32(BIAS));                      \
                dq[qq][g] = SCALES8(tr_block_q8_0, q + (size_t)qq * nb, 8 * g, nb - 8 * g < 8 ? nb - 8 * g : 8);   \
            }                                                                                                      \
        }                                                                                                          \
        for (int i = 0; i < n; i++) {                                                                              \
            const char *kr = k + (size_t)i * stride;                                                               \
            __m256 acc[NQ];                                                                                        \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) acc[qq] = _mm256_setzero_ps();                                         \
            for (int g = 0; g < ng; g++) {                                                                         \
                const int b0 = 8 * g, m = nb - b0 < 8 ? nb - b0 : 8;                                               \
                __m512i z[NQ][4];                                                                                  \
                UNROLL8 for (int p = 0; p < 4; p++) {                                                              \
                    if (2 * p >= m) {                                                                              \
                        UNROLL8 for (int qq = 0; qq < NQ; qq++) z[qq][p] = _mm512_setzero_si512();                         \
                        continue;                                                                                  \
                    }                                                                                              \
                    const __m512i u = ubytes2_##T(kr, b0 + 2 * p, 2 * p + 1 < m);                                  \
                    UNROLL8 for (int qq = 0; qq < NQ; qq++)                                                                \
                        z[qq][p] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u,                                  \
                                                       _mm512_load_si512(qb[qq] + 32 * (b0 + 2 * p)));             \
                }                                                                                                  \
                const __m256 dkv = SCALES8(tr_block_##T, kr, b0, m);                                               \
                UNROLL8 for (int qq = 0; qq < NQ; qq++) {                                                                  \
                    const __m256i is = _mm256_sub_epi32(reduce8_blocks(z[qq]), bsum[qq][g]);                       \
                    acc[qq] = _mm256_add_ps(acc[qq], _mm256_mul_ps(_mm256_mul_ps(dkv, dq[qq][g]), _mm256_cvtepi32_ps(is))); \
                }                                                                                                  \
            }                                                                                                      \
            UNROLL8 for (int qq = 0; qq < NQ; qq++) s[(size_t)qq * s_stride + i] = hsum8(acc[qq]) * scale;                 \
        }                                                                                                          \
    }

/* 32 values of a block (0-15 in v[0], 16-31 in v[1]) as floats, before its scale. */
AINL512 void vals32_q8_0(const char *blk, __m512 v[2]) {
    const int8_t *qs = ((const tr_block_q8_0 *)blk)->qs;
    v[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)qs)));
    v[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(qs + 16))));
}
AINL512 void vals32_q4_0(const char *blk, __m512 v[2]) {
    const __m128i x = _mm_loadu_si128((const __m128i *)((const tr_block_q4_0 *)blk)->qs), m = _mm_set1_epi8(15);
    const __m512i e = _mm512_set1_epi32(8);
    v[0] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(x, m)), e));
    v[1] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(x, 4), m)), e));
}
AINL512 void vals32_tq2_32(const char *blk, __m512 v[2]) {
    const __m128i b = _mm_loadl_epi64((const __m128i *)((const tr_block_tq2_32 *)blk)->qs), m = _mm_set1_epi8(3);
    const __m128i lo = _mm_and_si128(_mm_unpacklo_epi64(b, _mm_srli_epi16(b, 2)), m);
    const __m128i hi = _mm_and_si128(_mm_unpacklo_epi64(_mm_srli_epi16(b, 4), _mm_srli_epi16(b, 6)), m);
    const __m512i one = _mm512_set1_epi32(1);
    v[0] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(lo), one));
    v[1] = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(hi), one));
}

/* As PV_XQ_AVX2, a whole block (32 elements: two registers per head) of one
 * lane at a time; the products w_h[k] * d_k are kept as floats and met as
 * embedded broadcasts. */
#define PV_XQ_512(T)                                                                                               \
    AINL512 void pv_xq_nh512_##T(float *acc, size_t as, size_t ws, size_t wofs, const int NH, const kv_run *runs,  \
                                 int n_runs, size_t stride, int x0, int x1) {                                      \
        float wd[4][RUN_SLOTS];                                                                                    \
        const char *bp[RUN_SLOTS];                                                                                 \
        int base[RUN_SLOTS];                                                                                       \
        for (int r = 0, k = 0; r < n_runs; k += runs[r].n, r++) base[r] = k;                                       \
        for (int b = x0 / 32; b < x1 / 32; b++) {                                                                  \
            for (int r = 0; r < n_runs; r++) {                                                                     \
                const char *vc = runs[r].v;                                                                        \
                const float *wr = runs[r].w + wofs;                                                                \
                const int cn = runs[r].n, k0 = base[r];                                                            \
                int i = 0;                                                                                         \
                for (; i + 8 <= cn; i += 8) {                                                                      \
                    const __m256 d8 = SLOT_SCALES8(tr_block_##T, vc + (size_t)i * stride, stride, b);             \
                    for (int h = 0; h < NH; h++)                                                                   \
                        _mm256_storeu_ps(&wd[h][k0 + i], _mm256_mul_ps(_mm256_loadu_ps(wr + (size_t)h * ws + i), d8)); \
                }                                                                                                  \
                for (; i < cn; i++) {                                                                              \
                    const float d = scale_##T(vc + (size_t)i * stride, b);                                         \
                    for (int h = 0; h < NH; h++) wd[h][k0 + i] = wr[(size_t)h * ws + i] * d;                       \
                }                                                                                                  \
                for (i = 0; i < cn; i++) bp[k0 + i] = (const char *)((const tr_block_##T *)(vc + (size_t)i * stride) + b); \
            }                                                                                                      \
            for (int l = 0; l < 8; l++) {                                                                          \
                float *ab = acc + (size_t)(b * 32 + l) * 8;                                                        \
                __m512 a[4][2];                                                                                    \
                UNROLL8 for (int h = 0; h < NH; h++) {                                                             \
                    a[h][0] = load_acc2(ab + h * as);                                                              \
                    a[h][1] = load_acc2(ab + h * as + 128);                                                        \
                }                                                                                                  \
                for (int r = 0; r < n_runs; r++) {                                                                 \
                    const int cn = runs[r].n, k0 = base[r];                                                        \
                    for (int i = (l - runs[r].p0) & 7; i < cn; i += 8) {                                           \
                        __m512 vv[2];                                                                              \
                        vals32_##T(bp[k0 + i], vv);                                                                \
                        UNROLL8 for (int h = 0; h < NH; h++) {                                                     \
                            a[h][0] = _mm512_fmadd_ps(_mm512_set1_ps(wd[h][k0 + i]), vv[0], a[h][0]);              \
                            a[h][1] = _mm512_fmadd_ps(_mm512_set1_ps(wd[h][k0 + i]), vv[1], a[h][1]);              \
                        }                                                                                          \
                    }                                                                                              \
                }                                                                                                  \
                UNROLL8 for (int h = 0; h < NH; h++) {                                                             \
                    store_acc2(ab + h * as, a[h][0]);                                                              \
                    store_acc2(ab + h * as + 128, a[h][1]);                                                        \
                }                                                                                                  \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
    TGT512 static void pv_x_##T##_avx512(float *acc, size_t as, size_t ws, int nh, const kv_run *runs, int n_runs, \
                                         size_t stride, int x0, int x1) {                                          \
        for (int h0 = 0; h0 < nh; h0 += 4) {                                                                       \
            float *ah = acc + (size_t)h0 * as;                                                                     \
            const size_t wo = (size_t)h0 * ws;                                                                     \
            const int left = nh - h0;                                                                              \
            if (left >= 4) pv_xq_nh512_##T(ah, as, ws, wo, 4, runs, n_runs, stride, x0, x1);                       \
            else if (left == 3) pv_xq_nh512_##T(ah, as, ws, wo, 3, runs, n_runs, stride, x0, x1);                  \
            else if (left == 2) pv_xq_nh512_##T(ah, as, ws, wo, 2, runs, n_runs, stride, x0, x1);                  \
            else pv_xq_nh512_##T(ah, as, ws, wo, 1, runs, n_runs, stride, x0, x1);                                 \
        }                                                                                                          \
    }

#define Q512(T, BIAS)                                                                                              \
    SCORES_XQ_512(T, BIAS, 1)                                                                                      \
    SCORES_XQ_512(T, BIAS, 2)                                                                                      \
    SCORES_XQ_512(T, BIAS, 4)                                                                                      \
    TGT512 static void scores_xq_##T##_avx512(const tr_block_q8_0 *q, int nq, const char *k, size_t stride, int n, \
                                              int d, float scale, float *s, size_t s_stride) {                     \
        if (d > MAXD_512) {                                                                                        \
            scores_xq_##T##_avx2(q, nq, k, stride, n, d, scale, s, s_stride);                                      \
            return;                                                                                                \
        }                                                                                                          \
        const int nb = d / 32;                                                                                     \
        for (; nq >= 4; nq -= 4, q += (size_t)4 * nb, s += 4 * s_stride)                                           \
            scores_xq4_##T##_avx512(q, k, stride, n, d, scale, s, s_stride);                                       \
        for (; nq >= 2; nq -= 2, q += (size_t)2 * nb, s += 2 * s_stride)                                           \
            scores_xq2_##T##_avx512(q, k, stride, n, d, scale, s, s_stride);                                       \
        if (nq) scores_xq1_##T##_avx512(q, k, stride, n, d, scale, s, s_stride);                                   \
    }                                                                                                              \
    PV_XQ_512(T)
Q512(q8_0, 128)
Q512(q4_0, 8)
Q512(tq2_32, 1)
#undef Q512
#endif

/* The inner loops for a K type and a V type: F32/F16 for any path, Q8_0,
 * Q4_0 and TQ2_32 for the normalised-weights path (scores_xq, pv_x). */
static bool quantized_kv(int type) { return type == TR_TYPE_Q8_0 || type == TR_TYPE_Q4_0 || type == TR_TYPE_TQ2_32; }

static attn_fns pick_fns(int k_type, int v_type, tr_isa isa) {
    attn_fns f = {0};
    f.exp_sum = exp_sum_ref;
    f.round_half = round_half_ref;
    f.scores = k_type == TR_TYPE_F16 ? scores_f16 : scores_f32;
    f.scores_x = k_type == TR_TYPE_F16 ? scores_x_f16 : scores_x_f32;
    f.scores_xq = k_type == TR_TYPE_Q8_0 ? scores_xq_q8_0 : k_type == TR_TYPE_Q4_0 ? scores_xq_q4_0 : scores_xq_tq2_32;
    f.pv = v_type == TR_TYPE_F16 ? pv_f16 : pv_f32;
    f.pv_x = v_type == TR_TYPE_F16 ? pv_x_f16 : v_type == TR_TYPE_Q8_0 ? pv_x_q8_0 : v_type == TR_TYPE_Q4_0 ? pv_x_q4_0
           : v_type == TR_TYPE_TQ2_32 ? pv_x_tq2_32 : pv_x_f32;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (isa >= TR_ISA_AVX2) {
        f.exp_sum = exp_sum_avx2;
        f.round_half = round_half_avx2;
        f.scores = k_type == TR_TYPE_F16 ? scores_f16_avx2 : scores_f32_avx2;
        f.scores_x = k_type == TR_TYPE_F16 ? scores_x_f16_avx2 : scores_x_f32_avx2;
        f.scores_xq = k_type == TR_TYPE_Q8_0   ? scores_xq_q8_0_avx2
                      : k_type == TR_TYPE_Q4_0 ? scores_xq_q4_0_avx2
                                               : scores_xq_tq2_32_avx2;
        f.pv = v_type == TR_TYPE_F16 ? pv_f16_avx2 : pv_f32_avx2;
        f.pv_x = v_type == TR_TYPE_F16 ? pv_x_f16_avx2 : v_type == TR_TYPE_Q8_0 ? pv_x_q8_0_avx2
               : v_type == TR_TYPE_Q4_0 ? pv_x_q4_0_avx2 : v_type == TR_TYPE_TQ2_32 ? pv_x_tq2_32_avx2 : pv_x_f32_avx2;
    }
    if (isa >= TR_ISA_AVX512) { /* the flash path's loops (scores, pv, exp_sum) stay AVX2 */
        f.scores_x = k_type == TR_TYPE_F16 ? scores_x_f16_avx512 : scores_x_f32_avx512;
        f.scores_xq = k_type == TR_TYPE_Q8_0   ? scores_xq_q8_0_avx512
                      : k_type == TR_TYPE_Q4_0 ? scores_xq_q4_0_avx512
                                               : scores_xq_tq2_32_avx512;
        f.pv_x = v_type == TR_TYPE_F16 ? pv_x_f16_avx512 : v_type == TR_TYPE_Q8_0 ? pv_x_q8_0_avx512
               : v_type == TR_TYPE_Q4_0 ? pv_x_q4_0_avx512 : v_type == TR_TYPE_TQ2_32 ? pv_x_tq2_32_avx512 : pv_x_f32_avx512;
    }
#else
    (void)isa;
#endif
    return f;
}

/* ---------------------------------------------------------------- driver */

typedef struct attn_job {
    const tr_attn_params *p;
    const attn_fns *fn;
    attn_fns fns;
    const float *q;
    const char *k, *v;
    float *out;
    size_t k_head, v_head; /* bytes of one head's K (V) in a slot */
    bool k_quant;          /* K is quantized: queries meet it as Q8_0 blocks */
    int group; /* query heads per KV head */
    int dv;    /* head size of the values (and of out) */
    int n_blocks, n_split;
    int64_t n_units;
    /* Token blocks: block b is the tokens order[bstart[b] .. bstart[b+1]),
     * all of one sequence when the cache is paged, and sees at most the
     * positions [blo[b], bhi[b]) of that sequence. */
    const int32_t *order, *bstart, *blo, *bhi;
    /* The normalised-weights path (exact). In one phase, a unit is a (token block, KV head) and does
     * everything; in two (two_phase; generation: too few units for the threads), phase 0 cuts each
     * group's query heads into n_sub units of sub heads that make the weights into W, and phase 1 cuts
     * the output elements into n_slice units that sum V for all the group's heads. */
    int n_sub, sub, n_slice, phase;
    bool exact, two_phase;
    float *W;       /* two phases: [n_blocks][n_head_kv][TOK_BLOCK][group][maxlen] weights */
    int maxlen;     /* the longest block range */
    atomic_llong next;
    float *scratch; /* per thread: per_thread floats */
    size_t per_thread;
    float *partial; /* n_split > 1: (m, l, o[d]) per (token, head, split) */
} attn_job;

static inline bool visible(const tr_attn_params *p, int t, int i) {
    int32_t kp = p->kv_pos ? p->kv_pos[i] : i;
    if (p->kv_seq && p->q_seq && p->kv_seq[i] != p->q_seq[t]) return false;
    if (kp > p->q_pos[t]) return false;
    if (p->window > 0 && p->q_pos[t] - kp >= p->window) return false;
    return true;
}

/* With plain positions (slot i is position i), narrow [*a, *e) to the slots
 * query t can see: at or before its position, and within the window. */
static inline void narrow_to_query(const tr_attn_params *p, int t, int *a, int *e) {
    const int32_t qp = p->q_pos[t];
    if (qp + 1 < *e) *e = qp + 1;
    if (p->window > 0 && qp - p->window + 1 > *a) *a = qp - p->window + 1;
}

/* Paged caches: where position i of a sequence lives (table NULL: slot i),
 * and the end of the run of positions from i that sit in consecutive slots
 * (the end of i's block), at most e. Tiles never cross it. */
static inline const char *kv_at(const tr_attn_params *p, const int32_t *table, const char *base, size_t stride,
                                int i) {
    if (!table) return base + (size_t)i * stride;
    return base + ((size_t)table[i / p->block_size] * p->block_size + (size_t)(i % p->block_size)) * stride;
}
static inline int run_end(const tr_attn_params *p, const int32_t *table, int i, int e) {
    if (!table) return e;
    const int be = (i / p->block_size + 1) * p->block_size;
    return be < e ? be : e;
}
/* As run_end, the run going on through blocks that follow each other in the
 * pool too (a sequence's blocks usually do): for sums whose bits do not
 * depend on where a range is cut. */
static inline int run_end_merged(const tr_attn_params *p, const int32_t *table, int i, int e) {
    if (!table) return e;
    int blk = i / p->block_size, be = (blk + 1) * p->block_size;
    while (be < e && table[blk + 1] == table[blk] + 1) blk++, be += p->block_size;
    return be < e ? be : e;
}

static void run_unit(attn_job *j, int64_t u, float *scr) {
    const tr_attn_params *p = j->p;
    int d = p->head_dim, dv = j->dv, G = j->group;
    int split = (int)(u % j->n_split);
    int g = (int)((u / j->n_split) % p->n_head_kv);
    int b = (int)(u / j->n_split / p->n_head_kv);
    const int32_t *tok = j->order + j->bstart[b];
    int nt = j->bstart[b + 1] - j->bstart[b], nq = nt * G;

    /* This block's sequence's table (paged), this KV head's columns. */
    const int32_t *table = p->n_seq > 0 ? p->blocks + (size_t)p->q_seq[tok[0]] * p->max_blocks : NULL;
    const char *kb = j->k + (size_t)g * j->k_head;
    const char *vb = j->v + (size_t)g * j->v_head;

    int lo = j->blo[b], hi = j->bhi[b];
    if (j->n_split > 1) { /* this unit's slice of [lo, hi) */
        int64_t len = hi > lo ? hi - lo : 0, per = (len + j->n_split - 1) / j->n_split;
        int64_t a = lo + per * split, e = a + per;
        lo = (int)(a < hi ? a : hi);
        hi = (int)(e < hi ? e : hi);
    }

    float *m = scr, *l = m + nq, *o = l + nq, *s = o + (size_t)nq * dv, *qh = s + TILE;
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0;
    }
    memset(o, 0, sizeof(float) * (size_t)nq * dv);
    /* The unit's queries, rounded to halves if asked (as they would be
     * meeting a half-precision cache in llama.cpp's graph). */
    const bool half_q = p->flags & TR_ATTN_HALF_Q;
    if (half_q && hi > lo)
        for (int ti = 0; ti < nt; ti++)
            for (int hg = 0; hg < G; hg++)
                j->fn->round_half(qh + (size_t)(ti * G + hg) * d,
                                  j->q + ((size_t)tok[ti] * p->n_head + (size_t)g * G + hg) * d, d);

    bool plain = !p->kv_pos && !(p->kv_seq && p->q_seq); /* slot i is position i, one sequence */
    for (int i0 = lo, i1; i0 < hi; i0 = i1) {
        i1 = run_end(p, table, i0, hi - i0 < TILE ? hi : i0 + TILE);
        for (int ti = 0; ti < nt; ti++) {
            const int t = tok[ti];
            /* With plain positions the visible slots of a query are one
             * range: score only those (a causal prompt skips half the work). */
            int a = i0, e = i1;
            if (plain) {
                narrow_to_query(p, t, &a, &e);
                if (a >= e) continue;
            }
            int n = e - a;
            for (int hg = 0; hg < G; hg++) {
                int qi = ti * G + hg, h = g * G + hg;
                const float *qv = half_q ? qh + (size_t)qi * d : j->q + ((size_t)t * p->n_head + h) * d;
                j->fn->scores(qv, kv_at(p, table, kb, p->k_stride, a), p->k_stride, n, d, p->scale, s);
                float mt = -INFINITY;
                for (int i = 0; i < n; i++) {
                    if (!plain && !visible(p, t, a + i)) s[i] = -INFINITY;
                    else if (p->softcap > 0) s[i] = p->softcap * tanhf(s[i] / p->softcap);
                    if (s[i] > mt) mt = s[i];
                }
                if (mt == -INFINITY) continue;
                float *oq = o + (size_t)qi * dv;
                if (mt > m[qi]) {
                    float c = expf(m[qi] - mt); /* 0 on the first visible tile */
                    l[qi] *= c;
                    for (int x = 0; x < dv; x++) oq[x] *= c;
                    m[qi] = mt;
                }
                l[qi] += j->fn->exp_sum(s, n, m[qi]);
                j->fn->pv(oq, s, kv_at(p, table, vb, p->v_stride, a), p->v_stride, n, dv);
            }
        }
    }

    for (int ti = 0; ti < nt; ti++) {
        const int t = tok[ti];
        for (int hg = 0; hg < G; hg++) {
            int qi = ti * G + hg, h = g * G + hg;
            if (j->n_split > 1) {
                float *dst = j->partial + (((size_t)t * p->n_head + h) * j->n_split + split) * (size_t)(dv + 2);
                dst[0] = m[qi];
                dst[1] = l[qi];
                memcpy(dst + 2, o + (size_t)qi * dv, sizeof(float) * (size_t)dv);
            } else {
                float *dst = j->out + ((size_t)t * p->n_head + h) * dv;
                float inv = l[qi] > 0 ? 1.0f / l[qi] : 0.0f;
                for (int x = 0; x < dv; x++) dst[x] = o[(size_t)qi * dv + x] * inv;
            }
        }
    }
}

/* The normalised-weights path (TR_ATTN_HALF_P): as llama.cpp's graph
 * without flash attention, every query's whole row of scores is made first,
 * then its softmax, whose weights are rounded to halves, then their sum with
 * V. All sums run in the lanes order, by position, so a query's result does
 * not depend on the unit or thread that computed it, nor on which heads or
 * output elements a unit took.
 *
 * The weights of the token block b's queries of KV head g's query heads
 * h0 .. h0 + nh - 1: query (ti, hh) of the group into W + (ti*G + hh)*ws,
 * slot i at [i - lo] (the slots its token sees; others it cannot see are 0).
 * qscr: room for the queries. */
static void exact_weights(attn_job *j, int b, int g, int h0, int nh, float *W, size_t ws, float *qscr) {
    const tr_attn_params *p = j->p;
    const int d = p->head_dim, G = j->group;
    const int32_t *tok = j->order + j->bstart[b];
    const int nt = j->bstart[b + 1] - j->bstart[b];
    const int32_t *table = p->n_seq > 0 ? p->blocks + (size_t)p->q_seq[tok[0]] * p->max_blocks : NULL;
    const char *kb = j->k + (size_t)g * j->k_head;
    const int lo = j->blo[b], hi = j->bhi[b];
    const bool plain = !p->kv_pos && !(p->kv_seq && p->q_seq);

    /* The queries: as floats (rounded to halves if asked), or, for a
     * quantized K, as Q8_0 blocks (as llama.cpp quantizes the activations
     * that meet quantized weights), in the same room (34 bytes per 32
     * elements against 128). */
    float *qh = qscr;
    tr_block_q8_0 *q8 = (tr_block_q8_0 *)qh;
    for (int ti = 0; ti < nt; ti++) {
        const float *src = j->q + ((size_t)tok[ti] * p->n_head + (size_t)g * G + h0) * d;
        if (j->k_quant) tr_quantize_row_q8_0(src, q8 + (size_t)ti * nh * (d / 32), (int64_t)nh * d);
        else if (p->flags & TR_ATTN_HALF_Q) j->fn->round_half(qh + (size_t)ti * nh * d, src, nh * d);
        else memcpy(qh + (size_t)ti * nh * d, src, sizeof(float) * (size_t)nh * d);
    }

    /* Scores, a tile of K at a time for all the block's queries. */
    for (int i0 = lo, i1; i0 < hi; i0 = i1) {
        i1 = run_end_merged(p, table, i0, hi - i0 < TILE_X ? hi : i0 + TILE_X);
        for (int ti = 0; ti < nt; ti++) {
            int a = i0, e = i1;
            if (plain) {
                narrow_to_query(p, tok[ti], &a, &e);
                if (a >= e) continue;
            }
            float *st = W + ((size_t)ti * G + h0) * ws + (a - lo);
            const char *kt = kv_at(p, table, kb, p->k_stride, a);
            if (j->k_quant)
                j->fn->scores_xq(q8 + (size_t)ti * nh * (d / 32), nh, kt, p->k_stride, e - a, d, p->scale, st, ws);
            else
                j->fn->scores_x(qh + (size_t)ti * nh * d, nh, kt, p->k_stride, e - a, d, p->scale, st, ws);
        }
    }

    for (int ti = 0; ti < nt; ti++) {
        const int t = tok[ti];
        int a = lo, e = hi;
        if (plain) narrow_to_query(p, t, &a, &e);
        for (int hh = 0; hh < nh; hh++) {
            float *w = W + ((size_t)ti * G + h0 + hh) * ws - lo; /* w[i] for slot i */
            /* softmax over the visible slots: max, exp and a double sum in
             * position order, then the normalised weights rounded */
            float mx = -INFINITY;
            for (int i = a; i < e; i++) {
                if (!plain && !visible(p, t, i)) {
                    w[i] = -INFINITY;
                    continue;
                }
                if (p->softcap > 0) w[i] = p->softcap * tanhf(w[i] / p->softcap);
                if (w[i] > mx) mx = w[i];
            }
            if (mx == -INFINITY) { /* sees nothing: an output of zeros */
                for (int i = a; i < e; i++) w[i] = 0;
                continue;
            }
            double sum = 0;
            for (int i = a; i < e; i++) {
                const float ei = w[i] == -INFINITY ? 0.0f : expf(w[i] - mx);
                w[i] = ei;
                sum += ei;
            }
            const float inv = (float)(1.0 / sum);
            for (int i = a; i < e; i++) w[i] *= inv;
            if (p->flags & TR_ATTN_HALF_P) j->fn->round_half(w + a, w + a, e - a);
        }
    }
}

/* The outputs of token block b's queries of all G heads of KV head g,
 * elements [x0, x1) (x0 a multiple of 32), from their weights in W (as
 * exact_weights leaves them); acc: room for G lane accumulators. */
static void exact_pv(attn_job *j, int b, int g, const float *W, size_t ws, int x0, int x1, float *acc) {
    const tr_attn_params *p = j->p;
    const int dv = j->dv, G = j->group;
    const int32_t *tok = j->order + j->bstart[b];
    const int nt = j->bstart[b + 1] - j->bstart[b];
    const int32_t *table = p->n_seq > 0 ? p->blocks + (size_t)p->q_seq[tok[0]] * p->max_blocks : NULL;
    const char *vb = j->v + (size_t)g * j->v_head;
    const int lo = j->blo[b], hi = j->bhi[b];
    const bool plain = !p->kv_pos && !(p->kv_seq && p->q_seq);
    const size_t acc_n = (size_t)((dv + 7) / 8) * 64; /* one head's lanes: [ceil(dv/8)][8 lanes][8] */
    const size_t a0 = (size_t)x0 * 8, a1 = (size_t)((x1 + 7) & ~7) * 8; /* the lanes of [x0, x1) */
    for (int ti = 0; ti < nt; ti++) {
        const int t = tok[ti];
        int a = lo, e = hi;
        if (plain) narrow_to_query(p, t, &a, &e);
        for (int hh = 0; hh < G; hh++) memset(acc + hh * acc_n + a0, 0, sizeof(float) * (a1 - a0));
        const float *w = W + (size_t)ti * G * ws - lo; /* head hh's w[i] for slot i at w[hh*ws + i] */
        /* Runs of slots in position order, RUN_SLOTS slots a call (the
         * lanes make the sum independent of where runs and calls are cut). */
        kv_run runs[RUN_SLOTS];
        int n_runs = 0, slots = 0;
        for (int i0 = a, i1; i0 < e; i0 = i1) {
            i1 = run_end_merged(p, table, i0, e - i0 < RUN_SLOTS - slots ? e : i0 + (RUN_SLOTS - slots));
            runs[n_runs++] = (kv_run){kv_at(p, table, vb, p->v_stride, i0), w + i0, i0, i1 - i0};
            slots += i1 - i0;
            if (slots == RUN_SLOTS || i1 == e) {
                j->fn->pv_x(acc, acc_n, ws, G, runs, n_runs, p->v_stride, x0, x1);
                n_runs = slots = 0;
            }
        }
        for (int hh = 0; hh < G; hh++) {
            float *out = j->out + ((size_t)t * p->n_head + (size_t)g * G + hh) * dv;
            const float *ah = acc + hh * acc_n;
            for (int x = x0; x < x1; x++) out[x] = lanes_sum(ah + (size_t)(x >> 3) * 64 + (x & 7), 8);
        }
    }
}

/* Unit u of the normalised-weights path (see attn_job). */
static void run_unit_exact(attn_job *j, int64_t u, float *scr) {
    const tr_attn_params *p = j->p;
    const int G = j->group, dv = j->dv;
    const size_t ws = (size_t)j->maxlen, acc_n = (size_t)((dv + 7) / 8) * 64;
    float *acc = scr, *qscr = acc + G * acc_n;
    if (!j->two_phase) {
        const int g = (int)(u % p->n_head_kv), b = (int)(u / p->n_head_kv);
        float *W = qscr + (size_t)TOK_BLOCK * G * p->head_dim;
        exact_weights(j, b, g, 0, G, W, ws, qscr);
        exact_pv(j, b, g, W, ws, 0, dv, acc);
        return;
    }
    const int n_cut = j->phase == 0 ? j->n_sub : j->n_slice, cut = (int)(u % n_cut);
    const int g = (int)((u / n_cut) % p->n_head_kv), b = (int)(u / n_cut / p->n_head_kv);
    float *W = j->W + ((size_t)b * p->n_head_kv + g) * TOK_BLOCK * G * ws;
    if (j->phase == 0) {
        const int h0 = cut * j->sub, nh = G - h0 < j->sub ? G - h0 : j->sub;
        if (nh > 0) exact_weights(j, b, g, h0, nh, W, ws, qscr);
    } else {
        const int n32 = (dv + 31) / 32, c0 = cut * n32 / j->n_slice, c1 = (cut + 1) * n32 / j->n_slice;
        if (c1 > c0) exact_pv(j, b, g, W, ws, 32 * c0, 32 * c1 < dv ? 32 * c1 : dv, acc);
    }
}

static void attn_part(void *arg, int ith, int nth) {
    (void)nth;
    attn_job *j = arg;
    float *scr = j->scratch + (size_t)ith * j->per_thread;
    for (;;) {
        int64_t u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= j->n_units) break;
        if (j->exact) run_unit_exact(j, u, scr);
        else run_unit(j, u, scr);
    }
}

/* Merge the slices of one (token, head): rescale each to the common max. */
static void merge_part(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const tr_attn_params *p = j->p;
    int d = j->dv;
    for (int64_t th = ith; th < (int64_t)p->n_tokens * p->n_head; th += nth) {
        const float *src = j->partial + (size_t)th * j->n_split * (size_t)(d + 2);
        float M = -INFINITY;
        for (int s = 0; s < j->n_split; s++)
            if (src[s * (d + 2)] > M) M = src[s * (d + 2)];
        float *dst = j->out + (size_t)th * d;
        memset(dst, 0, sizeof(float) * (size_t)d);
        float L = 0;
        if (M != -INFINITY) {
            for (int s = 0; s < j->n_split; s++) {
                const float *ps = src + s * (d + 2);
                if (ps[0] == -INFINITY) continue;
                float c = expf(ps[0] - M);
                L += c * ps[1];
                for (int x = 0; x < d; x++) dst[x] += c * ps[2 + x];
            }
        }
        float inv = L > 0 ? 1.0f / L : 0.0f;
        for (int x = 0; x < d; x++) dst[x] *= inv;
    }
}

/* Token blocks of up to TOK_BLOCK tokens (of one sequence when the cache
 * is paged: the tokens are grouped by sequence, stably) and the range of
 * slots each block can see, into ints (the tables' storage). Returns the
 * longest range. */
static int build_blocks(attn_job *j, int32_t *ints) {
    const tr_attn_params *p = j->p;
    const int nt = p->n_tokens, n_seq = p->n_seq;
    int32_t *order = ints, *bstart = order + nt, *blo = bstart + nt + 1, *bhi = blo + nt, *cnt = bhi + nt;
    if (n_seq > 0) {
        memset(cnt, 0, sizeof(int32_t) * ((size_t)n_seq + 1));
        for (int t = 0; t < nt; t++) cnt[p->q_seq[t] + 1]++;
        for (int s = 0; s < n_seq; s++) cnt[s + 1] += cnt[s];
        for (int t = 0; t < nt; t++) order[cnt[p->q_seq[t]]++] = t;
    } else {
        for (int t = 0; t < nt; t++) order[t] = t;
    }
    int nb = 0, maxlen = 0;
    for (int i = 0; i < nt; i++)
        if (i == 0 || i - bstart[nb - 1] == TOK_BLOCK || (n_seq > 0 && p->q_seq[order[i]] != p->q_seq[order[i - 1]]))
            bstart[nb++] = i;
    bstart[nb] = nt;
    for (int b = 0; b < nb; b++) {
        /* Positions are slot indices when kv_pos is NULL, so the causal
         * limit and the window bound the range. */
        int lo = 0, hi = p->n_kv;
        if (!p->kv_pos) {
            int32_t pmax = INT32_MIN, pmin = INT32_MAX;
            for (int i = bstart[b]; i < bstart[b + 1]; i++) {
                int32_t qp = p->q_pos[order[i]];
                if (qp > pmax) pmax = qp;
                if (qp < pmin) pmin = qp;
            }
            if ((int64_t)pmax + 1 < hi) hi = pmax + 1 < 0 ? 0 : pmax + 1;
            if (p->window > 0 && (int64_t)pmin - p->window + 1 > lo) lo = pmin - p->window + 1;
        }
        if (hi < lo) hi = lo;
        blo[b] = lo;
        bhi[b] = hi;
        if (hi - lo > maxlen) maxlen = hi - lo;
    }
    j->order = order;
    j->bstart = bstart;
    j->blo = blo;
    j->bhi = bhi;
    j->n_blocks = nb;
    return maxlen;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

tr_status tr_attention_variant(tr_pool *pool, const tr_attn_params *p, const float *q, const void *k,
                               const void *v, float *out, tr_isa isa) {
    if (!p || !q || !k || !v || !out || !p->q_pos) return TR_ERR_ARG;
    if (p->n_tokens < 0 || p->n_kv < 0 || p->head_dim <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        p->n_head % p->n_head_kv || p->n_seq < 0)
        return TR_ERR_ARG;
    if (p->head_dim_v < 0) return TR_ERR_ARG;
    const int dv = p->head_dim_v ? p->head_dim_v : p->head_dim;
    /* F32 and F16 entries on either path; quantized ones (whole blocks of
     * 32 per head) on the normalised-weights path. */
    const bool kq = quantized_kv(p->k_type), vq = quantized_kv(p->v_type);
    if ((p->k_type != TR_TYPE_F32 && p->k_type != TR_TYPE_F16 && !kq) ||
        (p->v_type != TR_TYPE_F32 && p->v_type != TR_TYPE_F16 && !vq))
        return TR_ERR_ARG;
    if ((kq || vq) && !(p->flags & TR_ATTN_HALF_P)) return TR_ERR_ARG;
    if ((kq && p->head_dim % 32) || (vq && dv % 32)) return TR_ERR_ARG;
    const size_t k_head = tr_row_size(p->k_type, p->head_dim), v_head = tr_row_size(p->v_type, dv);
    size_t row = (size_t)p->n_head_kv * k_head, row_v = (size_t)p->n_head_kv * v_head;
    if (p->n_kv > 1 && (p->k_stride < row || p->v_stride < row_v)) return TR_ERR_ARG;
    if (p->n_seq > 0) { /* paged: each query reads its own sequence through its block table */
        if (!p->q_seq || !p->blocks || p->kv_pos || p->kv_seq || p->block_size <= 0 ||
            p->max_blocks <= 0 || (int64_t)p->n_kv > (int64_t)p->max_blocks * p->block_size)
            return TR_ERR_ARG;
        for (int t = 0; t < p->n_tokens; t++)
            if (p->q_seq[t] < 0 || p->q_seq[t] >= p->n_seq || p->q_pos[t] >= p->n_kv) return TR_ERR_ARG;
    }
    if (p->n_tokens == 0) return TR_OK;

    int nth = tr_pool_size(pool);
    attn_job j = {0};
    j.p = p;
    j.fns = pick_fns(p->k_type, p->v_type, isa);
    j.fn = &j.fns;
    j.q = q;
    j.k = k;
    j.v = v;
    j.out = out;
    j.k_head = k_head;
    j.v_head = v_head;
    j.k_quant = kq;
    j.group = p->n_head / p->n_head_kv;
    j.dv = dv;

    /* The block tables come first in the scratch: the rest's size depends
     * on them (the longest range), and is asked for once they are known. */
    const int nt = p->n_tokens;
    size_t int_bytes = align64(sizeof(int32_t) * ((size_t)nt * 4 + 2 + (p->n_seq > 0 ? (size_t)p->n_seq + 1 : 0)));
    void *owned = NULL, *buf = tr_pool_scratch(pool, int_bytes);
    if (!buf) buf = owned = malloc(int_bytes);
    if (!buf) return TR_ERR_NOMEM;
    int maxlen = build_blocks(&j, buf);

    size_t per_thread, part_floats = 0;
    const int64_t base = (int64_t)j.n_blocks * p->n_head_kv;
    size_t w_floats = 0;
    if (p->flags & TR_ATTN_HALF_P) {
        /* Too few units to feed every thread (generation): two phases, the
         * weights by subsets of each group's query heads (each reads the K
         * range again), then the sums of V by slices of the output elements
         * for all the group's heads (V read once in all). The results do not
         * change: every element's sums are the same. */
        const int want = base < nth ? (int)((nth + base - 1) / base) : 1;
        j.exact = true;
        j.two_phase = want > 1;
        j.n_sub = want < j.group ? want : j.group;
        j.sub = (j.group + j.n_sub - 1) / j.n_sub;
        j.n_slice = want < (dv + 31) / 32 ? want : (dv + 31) / 32;
        j.n_split = 1;
        j.maxlen = maxlen;
        j.n_units = base * (j.two_phase ? j.n_sub : 1);
        const size_t acc = (size_t)j.group * ((dv + 7) / 8) * 64, qs = (size_t)TOK_BLOCK * j.group * p->head_dim;
        const size_t wts = (size_t)TOK_BLOCK * j.group * (size_t)maxlen;
        per_thread = acc + qs + (j.two_phase ? 0 : wts);
        if (j.two_phase) w_floats = (size_t)base * wts;
    } else {
        /* Too few units to feed every thread (generation): split the KV range. */
        j.n_split = base < nth && maxlen >= 2 * TILE ? (int)((2 * nth + base - 1) / base) : 1;
        if (j.n_split > 2 * nth) j.n_split = 2 * nth;
        j.n_units = base * j.n_split;
        size_t nq = (size_t)TOK_BLOCK * j.group;
        per_thread = nq * (2 + (size_t)p->head_dim + (size_t)dv) + TILE;
        if (j.n_split > 1) part_floats = (size_t)nt * p->n_head * j.n_split * (size_t)(dv + 2);
    }
    j.per_thread = (per_thread + 15) & ~(size_t)15;
    size_t bytes = int_bytes + align64(sizeof(float) * j.per_thread * (size_t)nth) + sizeof(float) * part_floats +
                   sizeof(float) * w_floats;
    if (owned) {
        void *nb = realloc(owned, bytes);
        if (!nb) {
            free(owned);
            return TR_ERR_NOMEM;
        }
        buf = owned = nb;
    } else {
        buf = tr_pool_scratch(pool, bytes);
        if (!buf) return TR_ERR_NOMEM;
    }
    build_blocks(&j, buf); /* again: growing the scratch may have moved it */
    j.scratch = (float *)((char *)buf + int_bytes);
    j.partial = j.scratch + j.per_thread * (size_t)nth;
    j.W = j.partial + part_floats;
    atomic_init(&j.next, 0);

    tr_pool_run_shared(pool, attn_part, &j);
    if (j.two_phase) { /* the weights are made: the sums of V */
        j.phase = 1;
        j.n_units = base * j.n_slice;
        atomic_store(&j.next, 0);
        tr_pool_run_shared(pool, attn_part, &j);
    }
    if (j.n_split > 1) {
        /* Small merges (generation) are not worth waking the pool for. */
        if ((int64_t)nt * p->n_head * j.n_split * dv < 65536) merge_part(&j, 0, 1);
        else tr_pool_run(pool, merge_part, &j);
    }
    free(owned);
    return TR_OK;
}

tr_attn_loop_fn tr_attention_loop(int kind, int type, tr_isa isa) {
    const attn_fns f = pick_fns(type, type, isa);
    return kind == 0 ? (tr_attn_loop_fn)f.scores_x : kind == 1 ? (tr_attn_loop_fn)f.scores_xq
           : kind == 2 ? (tr_attn_loop_fn)f.pv_x : NULL;
}

tr_status tr_attention(tr_pool *pool, const tr_attn_params *p, const float *q, const void *k, const void *v,
                       float *out) {
    const tr_isa isa = tr_isa_usable(TR_ISA_AVX512) ? TR_ISA_AVX512 : tr_isa_usable(TR_ISA_AVX2) ? TR_ISA_AVX2
                                                                                                 : TR_ISA_SCALAR;
    return tr_attention_variant(pool, p, q, k, v, out, isa);
}
