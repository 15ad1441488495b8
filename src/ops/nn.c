/* The forward pass's small ops: norms, RoPE, softmax, gated activations, and
 * GELU through a table of halves. Sums are accumulated in double
 * where a long reduction would otherwise lose digits (as ggml does). */
#include "ops/ops.h"

#include "ops/cpu.h"
#include "ops/kernels.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

void tr_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)(x[i] * x[i]); /* float square, double sum: as ggml */
    const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
    if (w)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
    else
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * scale;
}

/* LayerNorm in ggml's order of roundings (ggml_compute_forward_norm_f32 on
 * an AVX2 build): the mean from a double sum rounded to float; the squared
 * deviations summed 8 at a time in float, pairwise as its horizontal add
 * does, each group's sum into a double; the tail one by one. Then the
 * weight and the bias as separate ops, as llama.cpp's graph applies them. */
void tr_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i];
    const float mean = (float)s / (float)n;
    double var = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        float v[8];
        for (int k = 0; k < 8; k++) {
            const float d = x[i + k] - mean;
            y[i + k] = d;
            v[k] = d * d;
        }
        const float a0 = v[0] + v[4], a1 = v[1] + v[5], a2 = v[2] + v[6], a3 = v[3] + v[7];
        var += (double)((a0 + a2) + (a1 + a3));
    }
    for (; i < n; i++) {
        const float d = x[i] - mean;
        y[i] = d;
        var += (double)(d * d);
    }
    const float scale = 1.0f / sqrtf((float)(var / (double)n) + eps);
    for (i = 0; i < n; i++) {
        float v = y[i] * scale;
        if (w) v *= w[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

void tr_rope(float *x, int n_rot, int32_t pos, float freq_base, float freq_scale,
             const float *freq_factors, float mscale, bool neox) {
    /* theta_i = pos * base^(-2i/n_rot), built by repeated multiplication in
     * float as ggml does, so that long positions round the same way. */
    const float theta_scale = powf(freq_base, -2.0f / (float)n_rot);
    float theta_base = (float)pos;
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        float theta = theta_base;
        if (freq_factors) theta /= freq_factors[i];
        theta *= freq_scale;
        const float c = cosf(theta) * mscale, s = sinf(theta) * mscale;
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        const float x0 = x[a], x1 = x[b];
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
        theta_base *= theta_scale;
    }
}

/* The orthonormal Walsh-Hadamard transform of rows of n (a power of two)
 * floats, in place, computed as ggml's CPU backend computes llama.cpp's
 * KV-cache rotation (ggml_compute_forward_fwht): every element times
 * 1/sqrt(n) first, then log2(n) butterfly passes (u, v) -> (u + v, u - v)
 * over pairs len = 1, 2, 4 ... apart. Each output is the same sums in the
 * same order whatever the variant, so the SIMD one agrees to the bit. */
static void hadamard_row_ref(float *x, int n, float scale) {
    for (int j = 0; j < n; j++) x[j] *= scale;
    for (int len = 1; len < n; len <<= 1)
        for (int i = 0; i < n; i += 2 * len)
            for (int j = i; j < i + len; j++) {
                const float u = x[j], v = x[j + len];
                x[j] = u + v;
                x[j + len] = u - v;
            }
}

void tr_softmax(float *x, int64_t n) {
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > max) max = x[i];
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        const float e = expf(x[i] - max);
        x[i] = e;
        sum += e;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

void tr_swiglu(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

static float gelu_tanh(float x) {
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + 0.044715f * x * x)));
}

/* GELU as llama.cpp's CPU backend computes it: of the gate rounded to a
 * half, rounded to a half (ggml's GELU table), exact outside [-10, 10].
 * Matching this rounding keeps Gemma's logits within llama.cpp's. */
static float geglu_one(float g, const float *table) {
    if (g <= -10.0f) return 0.0f;
    if (g >= 10.0f) return g;
    return table ? table[tr_fp32_to_fp16(g)]
                 : tr_fp16_to_fp32(tr_fp32_to_fp16(gelu_tanh(tr_fp16_to_fp32(tr_fp32_to_fp16(g)))));
}

void tr_geglu_ref(float *out, const float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = geglu_one(gate[i], NULL) * up[i];
}

/* The input being a half, GELU has only 65536 arguments: a table of its
 * rounded values, filled once per process (the same tanhf, so the same bits
 * as the reference), replaces a tanhf per element. Immutable once built. */
static float gelu_table[65536];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;
static void gelu_table_init(void) {
    for (uint32_t h = 0; h < 65536; h++)
        gelu_table[h] = tr_fp16_to_fp32(tr_fp32_to_fp16(gelu_tanh(tr_fp16_to_fp32((uint16_t)h))));
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define TGT __attribute__((target("avx2,fma,f16c")))

/* F16C rounds to the nearest half (ties to even, subnormals kept) as
 * tr_fp32_to_fp16 does; the 8 table entries are gathered. */
TGT static void geglu_avx2(float *out, const float *gate, const float *up, int64_t n) {
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(g, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256 v = _mm256_i32gather_ps(gelu_table, h, 4);
        v = _mm256_blendv_ps(v, g, _mm256_cmp_ps(g, hi, _CMP_GE_OQ));
        v = _mm256_andnot_ps(_mm256_cmp_ps(g, lo, _CMP_LE_OQ), v);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(v, _mm256_loadu_ps(up + i)));
    }
    for (; i < n; i++) out[i] = geglu_one(gate[i], gelu_table) * up[i];
}

TGT static void gelu_avx2(float *out, const float *x, int64_t n) {
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(x + i);
        const __m256i h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(g, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        __m256 v = _mm256_i32gather_ps(gelu_table, h, 4);
        v = _mm256_blendv_ps(v, g, _mm256_cmp_ps(g, hi, _CMP_GE_OQ));
        v = _mm256_andnot_ps(_mm256_cmp_ps(g, lo, _CMP_LE_OQ), v);
        _mm256_storeu_ps(out + i, v);
    }
    for (; i < n; i++) out[i] = geglu_one(x[i], gelu_table);
}
/* Passes len = 1, 2, 4 inside one register (each lane's partner brought
 * by a shuffle; the lower lane of a pair keeps own + partner = u + v, the
 * upper one partner - own = u - v), then len >= 8 between registers. */
TGT static void hadamard_row_avx2(float *x, int n, float scale) {
    const __m256 s = _mm256_set1_ps(scale);
    const __m256 odd1 = _mm256_castsi256_ps(_mm256_setr_epi32(0, -1, 0, -1, 0, -1, 0, -1));
    const __m256 odd2 = _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, -1, -1, 0, 0, -1, -1));
    const __m256 odd4 = _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1));
    for (int i = 0; i < n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), s), p;
        p = _mm256_permute_ps(v, 0xB1);
        v = _mm256_blendv_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), odd1);
        p = _mm256_permute_ps(v, 0x4E);
        v = _mm256_blendv_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), odd2);
        p = _mm256_permute2f128_ps(v, v, 0x01);
        v = _mm256_blendv_ps(_mm256_add_ps(v, p), _mm256_sub_ps(p, v), odd4);
        _mm256_storeu_ps(x + i, v);
    }
    for (int len = 8; len < n; len <<= 1)
        for (int i = 0; i < n; i += 2 * len)
            for (int j = i; j < i + len; j += 8) {
                const __m256 u = _mm256_loadu_ps(x + j), v = _mm256_loadu_ps(x + j + len);
                _mm256_storeu_ps(x + j, _mm256_add_ps(u, v));
                _mm256_storeu_ps(x + j + len, _mm256_sub_ps(u, v));
            }
}

/* tr_argmax: the maximum by vpmaxps over two vectors (with any NaN noted:
 * such a row goes to the loop, whose comparisons skip NaNs), then the first
 * position holding it (equal compares, so -0 and +0 are one value, as for
 * the loop's >). */
TGT static int64_t argmax_avx2(const float *x, int64_t n) {
    __m256 m0 = _mm256_loadu_ps(x), m1 = _mm256_loadu_ps(x + 8);
    __m256 nan = _mm256_cmp_ps(m0, m1, _CMP_UNORD_Q);
    int64_t i = 16;
    for (; i + 16 <= n; i += 16) {
        const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
        m0 = _mm256_max_ps(m0, a);
        m1 = _mm256_max_ps(m1, b);
    }
    if (_mm256_movemask_ps(nan)) return -1;
    __m256 m = _mm256_max_ps(m0, m1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float best = _mm_cvtss_f32(h);
    for (; i < n; i++) {
        if (x[i] != x[i]) return -1;
        if (x[i] > best) best = x[i];
    }
    const __m256 bv = _mm256_set1_ps(best);
    for (i = 0; i + 8 <= n; i += 8) {
        const int k = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), bv, _CMP_EQ_OQ));
        if (k) return i + __builtin_ctz((unsigned)k);
    }
    for (; i < n; i++)
        if (x[i] == best) return i;
    return -1; /* not reached */
}
#endif

static int64_t argmax_ref(const float *x, int64_t n) {
    int64_t best = 0;
    float bx = x[0];
    for (int64_t i = 1; i < n; i++)
        if (x[i] > bx) bx = x[i], best = i;
    return best;
}

int64_t tr_argmax_variant(const float *x, int64_t n, bool simd) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (simd && n >= 16 && tr_cpu_get()->avx2) {
        const int64_t i = argmax_avx2(x, n);
        if (i >= 0) return i;
    }
#else
    (void)simd;
#endif
    return argmax_ref(x, n);
}

int64_t tr_argmax(const float *x, int64_t n) { return tr_argmax_variant(x, n, true); }

void tr_geglu_variant(float *out, const float *gate, const float *up, int64_t n, bool simd) {
    pthread_once(&gelu_once, gelu_table_init);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const tr_cpu_features *f = tr_cpu_get();
    if (simd && f->avx2 && f->f16c) {
        geglu_avx2(out, gate, up, n);
        return;
    }
#else
    (void)simd;
#endif
    for (int64_t i = 0; i < n; i++) out[i] = geglu_one(gate[i], gelu_table) * up[i];
}

void tr_geglu(float *out, const float *gate, const float *up, int64_t n) { tr_geglu_variant(out, gate, up, n, true); }

void tr_gelu_ref(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = geglu_one(x[i], NULL);
}

void tr_gelu_variant(float *out, const float *x, int64_t n, bool simd) {
    pthread_once(&gelu_once, gelu_table_init);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const tr_cpu_features *f = tr_cpu_get();
    if (simd && f->avx2 && f->f16c) {
        gelu_avx2(out, x, n);
        return;
    }
#else
    (void)simd;
#endif
    for (int64_t i = 0; i < n; i++) out[i] = geglu_one(x[i], gelu_table);
}

void tr_gelu(float *out, const float *x, int64_t n) { tr_gelu_variant(out, x, n, true); }

void tr_hadamard_variant(float *x, int64_t n_rows, int n, bool simd) {
    const float scale = 1.0f / sqrtf((float)n);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    const tr_cpu_features *f = tr_cpu_get();
    if (simd && n >= 8 && f->avx2) {
        for (int64_t r = 0; r < n_rows; r++) hadamard_row_avx2(x + r * n, n, scale);
        return;
    }
#else
    (void)simd;
#endif
    for (int64_t r = 0; r < n_rows; r++) hadamard_row_ref(x + r * n, n, scale);
}

void tr_hadamard(float *x, int64_t n_rows, int n) { tr_hadamard_variant(x, n_rows, n, true); }
