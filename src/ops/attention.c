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
 * reference and an AVX2 variant chosen once from the CPU's features. */
#include "cpu.h"
#include "kernels.h"
#include "ops.h"

#include <float.h>
#include <stdatomic.h>
#include <stdlib.h>

enum { TOK_BLOCK = 4, TILE = 64 };

typedef struct attn_fns {
    /* s[i] = scale * q . k_i for n slots k_i = k + i*stride bytes */
    void (*scores)(const float *q, const char *k, size_t stride, int n, int d, float scale, float *s);
    /* o += sum_i p[i] v_i over n slots (p[i] == 0 skipped) */
    void (*pv)(float *o, const float *p, const char *v, size_t stride, int n, int d);
    float (*exp_sum)(float *s, int n, float m); /* s[i] = exp(s[i] - m) (-inf -> 0); returns the sum */
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
#endif

static const attn_fns *pick_fns(int kv_type, bool simd) {
    static const attn_fns ref32 = {scores_f32, pv_f32, exp_sum_ref}, ref16 = {scores_f16, pv_f16, exp_sum_ref};
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static const attn_fns avx32 = {scores_f32_avx2, pv_f32_avx2, exp_sum_avx2},
                          avx16 = {scores_f16_avx2, pv_f16_avx2, exp_sum_avx2};
    const tr_cpu_features *f = tr_cpu_get();
    if (simd && f->avx2 && f->fma && f->f16c) return kv_type == TR_TYPE_F16 ? &avx16 : &avx32;
#else
    (void)simd;
#endif
    return kv_type == TR_TYPE_F16 ? &ref16 : &ref32;
}

/* ---------------------------------------------------------------- driver */

typedef struct attn_job {
    const tr_attn_params *p;
    const attn_fns *fn;
    const float *q;
    const char *k, *v;
    float *out;
    size_t esize;
    int group; /* query heads per KV head */
    int n_tblocks, n_split;
    int64_t n_units;
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

static void run_unit(attn_job *j, int64_t u, float *scr) {
    const tr_attn_params *p = j->p;
    int d = p->head_dim, G = j->group;
    int split = (int)(u % j->n_split);
    int g = (int)((u / j->n_split) % p->n_head_kv);
    int tb = (int)(u / j->n_split / p->n_head_kv);
    int t0 = tb * TOK_BLOCK, t1 = t0 + TOK_BLOCK < p->n_tokens ? t0 + TOK_BLOCK : p->n_tokens;
    int nq = (t1 - t0) * G;

    /* The slots any query of the unit can see: positions are slot indices
     * when kv_pos is NULL, so the causal limit and window bound the range. */
    int lo = 0, hi = p->n_kv;
    if (!p->kv_pos) {
        int32_t pmax = INT32_MIN, pmin = INT32_MAX;
        for (int t = t0; t < t1; t++) {
            if (p->q_pos[t] > pmax) pmax = p->q_pos[t];
            if (p->q_pos[t] < pmin) pmin = p->q_pos[t];
        }
        if ((int64_t)pmax + 1 < hi) hi = pmax + 1 < 0 ? 0 : pmax + 1;
        if (p->window > 0 && (int64_t)pmin - p->window + 1 > lo) lo = pmin - p->window + 1;
    }
    if (j->n_split > 1) { /* this unit's slice of [lo, hi) */
        int64_t len = hi > lo ? hi - lo : 0, per = (len + j->n_split - 1) / j->n_split;
        int64_t a = lo + per * split, b = a + per;
        lo = (int)(a < hi ? a : hi);
        hi = (int)(b < hi ? b : hi);
    }

    float *m = scr, *l = m + nq, *o = l + nq, *s = o + (size_t)nq * d;
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0;
    }
    memset(o, 0, sizeof(float) * (size_t)nq * d);

    bool plain = !p->kv_pos && !(p->kv_seq && p->q_seq); /* slot i is position i, one sequence */
    for (int i0 = lo; i0 < hi; i0 += TILE) {
        int i1 = hi - i0 < TILE ? hi : i0 + TILE;
        for (int t = t0; t < t1; t++) {
            /* With plain positions the visible slots of a query are one
             * range: score only those (a causal prompt skips half the work). */
            int a = i0, e = i1;
            if (plain) {
                if (p->q_pos[t] + 1 < e) e = p->q_pos[t] + 1;
                if (p->window > 0 && p->q_pos[t] - p->window + 1 > a) a = p->q_pos[t] - p->window + 1;
                if (a >= e) continue;
            }
            int n = e - a;
            for (int hg = 0; hg < G; hg++) {
                int qi = (t - t0) * G + hg, h = g * G + hg;
                const float *qv = j->q + ((size_t)t * p->n_head + h) * d;
                j->fn->scores(qv, j->k + (size_t)a * p->k_stride + (size_t)g * d * j->esize, p->k_stride, n, d,
                              p->scale, s);
                float mt = -INFINITY;
                for (int i = 0; i < n; i++) {
                    if (!plain && !visible(p, t, a + i)) s[i] = -INFINITY;
                    else if (p->softcap > 0) s[i] = p->softcap * tanhf(s[i] / p->softcap);
                    if (s[i] > mt) mt = s[i];
                }
                if (mt == -INFINITY) continue;
                float *oq = o + (size_t)qi * d;
                if (mt > m[qi]) {
                    float c = expf(m[qi] - mt); /* 0 on the first visible tile */
                    l[qi] *= c;
                    for (int x = 0; x < d; x++) oq[x] *= c;
                    m[qi] = mt;
                }
                l[qi] += j->fn->exp_sum(s, n, m[qi]);
                j->fn->pv(oq, s, j->v + (size_t)a * p->v_stride + (size_t)g * d * j->esize, p->v_stride, n, d);
            }
        }
    }

    for (int t = t0; t < t1; t++) {
        for (int hg = 0; hg < G; hg++) {
            int qi = (t - t0) * G + hg, h = g * G + hg;
            if (j->n_split > 1) {
                float *dst = j->partial + (((size_t)t * p->n_head + h) * j->n_split + split) * (size_t)(d + 2);
                dst[0] = m[qi];
                dst[1] = l[qi];
                memcpy(dst + 2, o + (size_t)qi * d, sizeof(float) * (size_t)d);
            } else {
                float *dst = j->out + ((size_t)t * p->n_head + h) * d;
                float inv = l[qi] > 0 ? 1.0f / l[qi] : 0.0f;
                for (int x = 0; x < d; x++) dst[x] = o[(size_t)qi * d + x] * inv;
            }
        }
    }
}

static void attn_part(void *arg, int ith, int nth) {
    (void)nth;
    attn_job *j = arg;
    float *scr = j->scratch + (size_t)ith * j->per_thread;
    for (;;) {
        int64_t u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= j->n_units) break;
        run_unit(j, u, scr);
    }
}

/* Merge the slices of one (token, head): rescale each to the common max. */
static void merge_part(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const tr_attn_params *p = j->p;
    int d = p->head_dim;
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

tr_status tr_attention_variant(tr_pool *pool, const tr_attn_params *p, const float *q, const void *k,
                               const void *v, float *out, bool simd) {
    if (!p || !q || !k || !v || !out || !p->q_pos) return TR_ERR_ARG;
    if (p->n_tokens < 0 || p->n_kv < 0 || p->head_dim <= 0 || p->n_head <= 0 || p->n_head_kv <= 0 ||
        p->n_head % p->n_head_kv)
        return TR_ERR_ARG;
    if (p->kv_type != TR_TYPE_F32 && p->kv_type != TR_TYPE_F16) return TR_ERR_ARG;
    size_t esize = p->kv_type == TR_TYPE_F16 ? 2 : 4;
    size_t row = (size_t)p->n_head_kv * p->head_dim * esize;
    if (p->n_kv > 1 && (p->k_stride < row || p->v_stride < row)) return TR_ERR_ARG;
    if (p->n_tokens == 0) return TR_OK;

    int nth = tr_pool_size(pool);
    attn_job j = {0};
    j.p = p;
    j.fn = pick_fns(p->kv_type, simd);
    j.q = q;
    j.k = k;
    j.v = v;
    j.out = out;
    j.esize = esize;
    j.group = p->n_head / p->n_head_kv;
    j.n_tblocks = (p->n_tokens + TOK_BLOCK - 1) / TOK_BLOCK;
    int64_t base = (int64_t)j.n_tblocks * p->n_head_kv;
    /* Too few units to feed every thread (generation): split the KV range. */
    j.n_split = base < nth && p->n_kv >= 2 * TILE ? (int)((2 * nth + base - 1) / base) : 1;
    j.n_units = base * j.n_split;
    atomic_init(&j.next, 0);

    size_t nq = (size_t)TOK_BLOCK * j.group;
    j.per_thread = (nq * (2 + (size_t)p->head_dim) + TILE + 15) & ~(size_t)15;
    size_t partial = j.n_split > 1 ? (size_t)p->n_tokens * p->n_head * j.n_split * (size_t)(p->head_dim + 2) : 0;
    size_t bytes = sizeof(float) * (j.per_thread * (size_t)nth + partial);
    void *owned = NULL, *buf = tr_pool_scratch(pool, bytes);
    if (!buf) buf = owned = malloc(bytes);
    if (!buf) return TR_ERR_NOMEM;
    j.scratch = buf;
    j.partial = j.scratch + j.per_thread * (size_t)nth;

    tr_pool_run(pool, attn_part, &j);
    if (j.n_split > 1) tr_pool_run(pool, merge_part, &j);
    free(owned);
    return TR_OK;
}

tr_status tr_attention(tr_pool *pool, const tr_attn_params *p, const float *q, const void *k, const void *v,
                       float *out) {
    return tr_attention_variant(pool, p, q, k, v, out, true);
}
