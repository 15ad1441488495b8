/* Flash attention against a naive reference written independently here:
 * full score rows in double, a plain softmax, then the weighted sum of V.
 * Random Q/K/V; ragged head sizes and token counts, GQA groups, causal and
 * sliding-window masks, explicit slot positions and sequence ids, F32 and F16
 * caches, softcap; every thread count 1..3 and both the SIMD and the scalar
 * inner loops. */
#include "ops/kernels.h"
#include "ops/ops.h"
#include "tt.h"

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rndf(void) { return (float)(rnd() & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f; }

typedef struct {
    tr_attn_params p;
    float *q, *out;
    void *k, *v;
    int32_t *q_pos, *kv_pos, *q_seq, *kv_seq;
} case_t;

static float kv_at(const case_t *c, const void *base, size_t stride, int i, int g, int x) {
    const char *row = (const char *)base + (size_t)i * stride;
    if (c->p.kv_type == TR_TYPE_F16) return tr_fp16_to_fp32(((const uint16_t *)row)[g * c->p.head_dim + x]);
    return ((const float *)row)[g * c->p.head_dim + x];
}

static void naive(const case_t *c, float *out) {
    const tr_attn_params *p = &c->p;
    int d = p->head_dim, G = p->n_head / p->n_head_kv;
    double *s = malloc(sizeof(double) * (size_t)(p->n_kv + 1));
    for (int t = 0; t < p->n_tokens; t++) {
        for (int h = 0; h < p->n_head; h++) {
            int g = h / G;
            const float *q = c->q + ((size_t)t * p->n_head + h) * d;
            double mx = -INFINITY;
            for (int i = 0; i < p->n_kv; i++) {
                int pos = c->kv_pos ? c->kv_pos[i] : i;
                bool vis = pos <= c->q_pos[t] && (!p->window || c->q_pos[t] - pos < p->window) &&
                           (!c->kv_seq || c->kv_seq[i] == c->q_seq[t]);
                s[i] = -INFINITY;
                if (!vis) continue;
                double dot = 0;
                for (int x = 0; x < d; x++) dot += (double)q[x] * kv_at(c, c->k, p->k_stride, i, g, x);
                dot *= p->scale;
                if (p->softcap > 0) dot = p->softcap * tanh(dot / p->softcap);
                s[i] = dot;
                if (dot > mx) mx = dot;
            }
            float *o = out + ((size_t)t * p->n_head + h) * d;
            double sum = 0;
            for (int i = 0; i < p->n_kv; i++) sum += s[i] == -INFINITY ? 0 : exp(s[i] - mx);
            for (int x = 0; x < d; x++) {
                double acc = 0;
                for (int i = 0; i < p->n_kv; i++)
                    if (s[i] != -INFINITY) acc += exp(s[i] - mx) * kv_at(c, c->v, p->v_stride, i, g, x);
                o[x] = sum > 0 ? (float)(acc / sum) : 0.0f;
            }
        }
    }
    free(s);
}

static case_t make_case(int n_tokens, int n_kv, int d, int n_head, int n_head_kv, int kv_type, int window,
                        bool explicit_pos, bool seqs, float softcap) {
    case_t c = {0};
    tr_attn_params *p = &c.p;
    p->n_tokens = n_tokens;
    p->n_kv = n_kv;
    p->head_dim = d;
    p->n_head = n_head;
    p->n_head_kv = n_head_kv;
    p->kv_type = kv_type;
    size_t es = kv_type == TR_TYPE_F16 ? 2 : 4;
    /* padded slots: strides larger than one packed row */
    p->k_stride = (size_t)n_head_kv * d * es + 8 * es;
    p->v_stride = (size_t)n_head_kv * d * es + 4 * es;
    p->window = window;
    p->scale = 1.0f / sqrtf((float)d) * 3.0f; /* sharper than usual: exercises the max tracking */
    p->softcap = softcap;
    c.q = malloc(sizeof(float) * (size_t)n_tokens * n_head * d);
    c.out = malloc(sizeof(float) * (size_t)n_tokens * n_head * d);
    for (size_t i = 0; i < (size_t)n_tokens * n_head * d; i++) c.q[i] = rndf();
    c.k = malloc(p->k_stride * (size_t)(n_kv + 1));
    c.v = malloc(p->v_stride * (size_t)(n_kv + 1));
    for (int i = 0; i < n_kv; i++) {
        for (size_t x = 0; x < p->k_stride / es; x++) {
            float a = rndf(), b = rndf();
            if (es == 2) {
                ((uint16_t *)((char *)c.k + i * p->k_stride))[x] = tr_fp32_to_fp16(a);
            } else {
                ((float *)((char *)c.k + i * p->k_stride))[x] = a;
            }
            if (x < p->v_stride / es) {
                if (es == 2) ((uint16_t *)((char *)c.v + i * p->v_stride))[x] = tr_fp32_to_fp16(b);
                else ((float *)((char *)c.v + i * p->v_stride))[x] = b;
            }
        }
    }
    /* Queries are the last n_tokens positions of the cache (prompt or decode). */
    c.q_pos = malloc(sizeof(int32_t) * (size_t)n_tokens);
    for (int t = 0; t < n_tokens; t++) c.q_pos[t] = n_kv - n_tokens + t;
    if (explicit_pos) { /* slots hold positions in a shuffled order */
        c.kv_pos = malloc(sizeof(int32_t) * (size_t)n_kv);
        for (int i = 0; i < n_kv; i++) c.kv_pos[i] = i;
        for (int i = n_kv - 1; i > 0; i--) {
            int r = (int)(rnd() % (uint32_t)(i + 1));
            int32_t tmp = c.kv_pos[i];
            c.kv_pos[i] = c.kv_pos[r];
            c.kv_pos[r] = tmp;
        }
    }
    if (seqs) {
        c.q_seq = malloc(sizeof(int32_t) * (size_t)n_tokens);
        c.kv_seq = malloc(sizeof(int32_t) * (size_t)n_kv);
        for (int t = 0; t < n_tokens; t++) c.q_seq[t] = (int32_t)(rnd() % 2);
        for (int i = 0; i < n_kv; i++) c.kv_seq[i] = (int32_t)(rnd() % 3); /* seq 2: nobody's */
    }
    p->q_pos = c.q_pos;
    p->kv_pos = c.kv_pos;
    p->q_seq = c.q_seq;
    p->kv_seq = c.kv_seq;
    return c;
}

static void free_case(case_t *c) {
    free(c->q), free(c->out), free(c->k), free(c->v), free(c->q_pos), free(c->kv_pos), free(c->q_seq), free(c->kv_seq);
}

static int check_case(case_t *c, tr_pool **pools) {
    size_t n = (size_t)c->p.n_tokens * c->p.n_head * c->p.head_dim;
    float *want = malloc(sizeof(float) * n);
    naive(c, want);
    int bad_total = 0;
    for (int simd = 0; simd <= 1; simd++) {
        for (int pi = 0; pi < 4; pi++) {
            memset(c->out, 0xff, sizeof(float) * n); /* NaN: every output must be written */
            tr_status st = tr_attention_variant(pi ? pools[pi - 1] : NULL, &c->p, c->q, c->k, c->v, c->out, simd);
            TT_CHECK_EQ_INT(st, TR_OK);
            int bad = 0;
            for (size_t i = 0; i < n; i++)
                if (!(fabsf(c->out[i] - want[i]) <= 2e-5f)) bad++;
            if (bad)
                fprintf(stderr, "  tokens=%d kv=%d d=%d heads=%d/%d type=%d window=%d simd=%d threads=%d: %d bad\n",
                        c->p.n_tokens, c->p.n_kv, c->p.head_dim, c->p.n_head, c->p.n_head_kv, c->p.kv_type,
                        c->p.window, simd, pi, bad);
            bad_total += bad;
        }
    }
    free(want);
    return bad_total;
}

static tr_pool *pools[3];

TT_TEST(prompt_and_decode_match_naive_softmax) {
    static const int shapes[][3] = {{64, 4, 1}, {64, 32, 4}, {72, 6, 2}, {128, 4, 4}, {256, 4, 1}, {40, 3, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int kvt = 0; kvt < 2; kvt++) {
            int nt = 1 + (int)(rnd() % 17);
            int n_kv = nt + (int)(rnd() % 300);
            case_t c = make_case(nt, n_kv, shapes[s][0], shapes[s][1], shapes[s][2],
                                 kvt ? TR_TYPE_F16 : TR_TYPE_F32, 0, false, false, 0);
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
            /* decode: one token over a long cache (the split-KV path) */
            c = make_case(1, 200 + (int)(rnd() % 400), shapes[s][0], shapes[s][1], shapes[s][2],
                          kvt ? TR_TYPE_F16 : TR_TYPE_F32, 0, false, false, 0);
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
        }
    }
}

TT_TEST(sliding_window_positions_sequences_softcap) {
    for (int rep = 0; rep < 8; rep++) {
        int nt = 1 + (int)(rnd() % 17), n_kv = nt + (int)(rnd() % 260);
        int window = 1 + (int)(rnd() % 64);
        case_t c = make_case(nt, n_kv, 64, 4, 2, rep & 1 ? TR_TYPE_F16 : TR_TYPE_F32, window, rep & 2, rep & 4,
                             rep >= 4 ? 2.0f : 0.0f);
        TT_CHECK_EQ_INT(check_case(&c, pools), 0);
        free_case(&c);
    }
    /* a query that sees nothing (all slots in the future) gets zeros */
    case_t c = make_case(2, 10, 64, 2, 1, TR_TYPE_F32, 0, false, false, 0);
    c.q_pos[0] = -1;
    c.q_pos[1] = -5;
    TT_CHECK_EQ_INT(check_case(&c, pools), 0);
    TT_CHECK(c.out[0] == 0.0f);
    free_case(&c);
}

TT_TEST(rejects_bad_parameters) {
    case_t c = make_case(2, 10, 64, 4, 2, TR_TYPE_F32, 0, false, false, 0);
    c.p.n_head_kv = 3;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.n_head_kv = 2;
    c.p.kv_type = TR_TYPE_Q8_0;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.kv_type = TR_TYPE_F32;
    c.p.k_stride = 4;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    free_case(&c);
}

int main(void) {
    for (int i = 0; i < 3; i++) pools[i] = tr_pool_new(i + 1);
    TT_RUN(prompt_and_decode_match_naive_softmax);
    TT_RUN(sliding_window_positions_sequences_softcap);
    TT_RUN(rejects_bad_parameters);
    for (int i = 0; i < 3; i++) tr_pool_free(pools[i]);
    return TT_DONE();
}
