/* The two steps of a state-space (Mamba) layer that are not matrix
 * products: the causal depthwise convolution and the selective scan, each
 * carrying a recurrent state per sequence from one token to the next.
 *
 * Both walk the batch's tokens in order, each token updating the state of
 * its own sequence, so a batch may hold several sequences, interleaved or
 * not, and a prompt may be cut anywhere: a token meets the state its
 * sequence's previous token left. A channel's (head's) arithmetic depends on
 * that channel alone and runs in one fixed order, so the results are the
 * same bits however the channels are split between threads and whatever
 * else shares the batch. The order of each sum is llama.cpp's CPU one
 * (ggml_compute_forward_ssm_conv_f32 / _ssm_scan_f32): taps oldest first,
 * states in index order. */
#include "ops/ops.h"

#include "ops/cpu.h"

#include <math.h>
#include <string.h>

/* Token t's state of one layer (conv or ssm). */
static float *state_of(float *base, size_t stride, const tr_ssm_batch *b, int64_t t) {
    return base + (size_t)b->seq[t] * stride;
}

void tr_ssm_conv(const tr_ssm_batch *b, const float *in, int64_t in_stride, const float *w, const float *bias,
                 int d_conv, int64_t conv_dim, int64_t c0, int64_t c1, float *out) {
    const int nk = d_conv - 1; /* state rows: the previous d_conv - 1 inputs, oldest first */
    for (int64_t t = 0; t < b->n; t++) {
        float *st = state_of(b->conv_state, b->conv_stride, b, t);
        const float *u = in + t * in_stride;
        float *o = out + t * conv_dim;
        if (b->pos[t] == 0) /* a sequence's first token: no past */
            for (int k = 0; k < nk; k++) memset(st + (size_t)k * conv_dim + c0, 0, sizeof(float) * (size_t)(c1 - c0));
        for (int64_t ch = c0; ch < c1; ch++) {
            const float *wc = w + ch * d_conv;
            float sum = 0.0f;
            for (int k = 0; k < nk; k++) sum += st[(size_t)k * conv_dim + ch] * wc[k];
            sum += u[ch] * wc[nk];
            for (int k = 0; k + 1 < nk; k++) st[(size_t)k * conv_dim + ch] = st[(size_t)(k + 1) * conv_dim + ch];
            if (nk > 0) st[(size_t)(nk - 1) * conv_dim + ch] = u[ch];
            const float v = bias ? sum + bias[ch] : sum;
            o[ch] = v / (1.0f + expf(-v)); /* SiLU */
        }
    }
}

/* softplus as ggml_compute_softplus_f32 */
static float softplus(float x) { return x > 20.0f ? x : logf(1.0f + expf(x)); }

void tr_ssm_scan_ref(const tr_ssm_batch *b, const tr_ssm_scan_params *p, int64_t h0, int64_t h1, float *y) {
    const int64_t hd = p->head_dim, ds = p->d_state, d_inner = p->n_head * hd;
    const int64_t heads_per_group = p->n_head / p->n_group;
    for (int64_t t = 0; t < b->n; t++) {
        float *st = state_of(b->ssm_state, b->ssm_stride, b, t);
        if (b->pos[t] == 0) memset(st + h0 * hd * ds, 0, sizeof(float) * (size_t)((h1 - h0) * hd * ds));
        const float *x = p->x + t * p->x_stride, *dt = p->dt + t * p->dt_stride;
        float *yt = y + t * d_inner;
        for (int64_t h = h0; h < h1; h++) {
            const float dt_sp = softplus(dt[h]);
            const int64_t g = h / heads_per_group;
            const float *B = p->B + t * p->bc_stride + g * ds, *C = p->C + t * p->bc_stride + g * ds;
            if (p->scalar_a) { /* Mamba-2: one decay for the head */
                const float dA = expf(dt_sp * p->A[h]);
                for (int64_t i1 = 0; i1 < hd; i1++) {
                    const int64_t ii = h * hd + i1;
                    const float x_dt = x[ii] * dt_sp;
                    float *s = st + ii * ds, sum = 0.0f;
                    for (int64_t i = 0; i < ds; i++) {
                        const float v = s[i] * dA + B[i] * x_dt;
                        sum += v * C[i];
                        s[i] = v;
                    }
                    yt[ii] = sum;
                }
            } else { /* Mamba: a decay per (channel, state); one channel per head */
                const float *A = p->A + h * ds;
                const float x_dt = x[h] * dt_sp;
                float *s = st + h * ds, sum = 0.0f;
                for (int64_t i = 0; i < ds; i++) {
                    const float v = s[i] * expf(dt_sp * A[i]) + B[i] * x_dt;
                    sum += v * C[i];
                    s[i] = v;
                }
                yt[h] = sum;
            }
        }
    }
}

/* ------------------------------------------------------------------- AVX2 */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SSM_AVX2 1
#define TGT __attribute__((target("avx2,fma")))
#define VEC static inline __attribute__((always_inline)) TGT

/* exp of 8 floats: Cephes' expf (range reduction by ln 2 in two parts, a
 * degree-7 polynomial, the exponent put in by integer add), within 2 ulp of
 * expf; inputs below -87.3 give exp(-87.3) (about 1e-38) instead of less,
 * which no state times a decay can tell apart. */
VEC __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* ggml's reduction of its 8-wide sums: halves added, then two hadds. */
VEC float hsum8(__m256 v) {
    const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t1 = _mm_hadd_ps(t0, t0);
    return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
}

/* One channel of Mamba-2: d_state entries, 8 at a time in four sums of 32
 * as ggml's AVX2 build (s*dA + B*x_dt, then the sum of that times C), the
 * rest one by one after. */
VEC float chan_scalar_a(float *s, const float *B, const float *C, float dA, float x_dt, int64_t ds) {
    const __m256 vdA = _mm256_set1_ps(dA), vxdt = _mm256_set1_ps(x_dt);
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    const int64_t np = ds & ~(int64_t)31;
    for (int64_t i = 0; i < np; i += 32)
        for (int j = 0; j < 4; j++) {
            const int64_t k = i + 8 * j;
            const __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(s + k), vdA),
                                           _mm256_mul_ps(_mm256_loadu_ps(B + k), vxdt));
            acc[j] = _mm256_fmadd_ps(v, _mm256_loadu_ps(C + k), acc[j]);
            _mm256_storeu_ps(s + k, v);
        }
    float sum = 0.0f;
    if (np > 0) sum = hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3])));
    for (int64_t i = np; i < ds; i++) {
        const float v = s[i] * dA + B[i] * x_dt;
        sum += v * C[i];
        s[i] = v;
    }
    return sum;
}

/* One channel of Mamba: a decay per state, exp(dt' * A[i]), 8 at a time. */
VEC float chan_vector_a(float *s, const float *A, const float *B, const float *C, float dt_sp, float x_dt, int64_t ds) {
    const __m256 vdt = _mm256_set1_ps(dt_sp), vxdt = _mm256_set1_ps(x_dt);
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= ds; i += 8) {
        const __m256 dA = exp8(_mm256_mul_ps(vdt, _mm256_loadu_ps(A + i)));
        const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(s + i), dA, _mm256_mul_ps(_mm256_loadu_ps(B + i), vxdt));
        acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(C + i), acc);
        _mm256_storeu_ps(s + i, v);
    }
    float sum = i > 0 ? hsum8(acc) : 0.0f;
    for (; i < ds; i++) {
        const float v = s[i] * expf(dt_sp * A[i]) + B[i] * x_dt;
        sum += v * C[i];
        s[i] = v;
    }
    return sum;
}

TGT static void scan_avx2(const tr_ssm_batch *b, const tr_ssm_scan_params *p, int64_t h0, int64_t h1, float *y) {
    const int64_t hd = p->head_dim, ds = p->d_state, d_inner = p->n_head * hd;
    const int64_t heads_per_group = p->n_head / p->n_group;
    for (int64_t t = 0; t < b->n; t++) {
        float *st = state_of(b->ssm_state, b->ssm_stride, b, t);
        if (b->pos[t] == 0) memset(st + h0 * hd * ds, 0, sizeof(float) * (size_t)((h1 - h0) * hd * ds));
        const float *x = p->x + t * p->x_stride, *dt = p->dt + t * p->dt_stride;
        float *yt = y + t * d_inner;
        for (int64_t h = h0; h < h1; h++) {
            const float dt_sp = softplus(dt[h]);
            const int64_t g = h / heads_per_group;
            const float *B = p->B + t * p->bc_stride + g * ds, *C = p->C + t * p->bc_stride + g * ds;
            if (p->scalar_a) {
                const float dA = expf(dt_sp * p->A[h]);
                for (int64_t i1 = 0; i1 < hd; i1++) {
                    const int64_t ii = h * hd + i1;
                    yt[ii] = chan_scalar_a(st + ii * ds, B, C, dA, x[ii] * dt_sp, ds);
                }
            } else {
                yt[h] = chan_vector_a(st + h * ds, p->A + h * ds, B, C, dt_sp, x[h] * dt_sp, ds);
            }
        }
    }
}
#endif

void tr_ssm_scan(const tr_ssm_batch *b, const tr_ssm_scan_params *p, int64_t h0, int64_t h1, float *y) {
#ifdef SSM_AVX2
    const tr_cpu_features *f = tr_cpu_get();
    if (f->avx2 && f->fma) {
        scan_avx2(b, p, h0, h1, y);
        return;
    }
#endif
    tr_ssm_scan_ref(b, p, h0, h1, y);
}

bool tr_ssm_scan_has_simd(void) {
#ifdef SSM_AVX2
    const tr_cpu_features *f = tr_cpu_get();
    return f->avx2 && f->fma;
#else
    return false;
#endif
}
