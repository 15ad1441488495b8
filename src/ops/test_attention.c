/* Flash attention against a naive reference written independently here:
 * full score rows in double, a plain softmax, then the weighted sum of V.
 * Random Q/K/V; ragged head sizes and token counts, GQA groups, causal and
 * sliding-window masks, explicit slot positions and sequence ids, F32 and F16
 * caches, softcap; every thread count 1..3 and both the SIMD and the scalar
 * inner loops. */
#include "ops/cpu.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "tt.h"


typedef struct {
    tr_attn_params p;
    float *q, *out;
    void *k, *v;
    int32_t *q_pos, *kv_pos, *q_seq, *kv_seq;
    int32_t *blocks; /* paged: block tables */
} case_t;

/* Slot i of the cache as the kernel addresses it: paged, query t's
 * position i is in block blocks[q_seq[t]][i / block_size] of the pool. */
static size_t slot_of(const case_t *c, int t, int i) {
    if (c->p.n_seq == 0) return (size_t)i;
    const int bs = c->p.block_size;
    return (size_t)c->blocks[(size_t)c->q_seq[t] * c->p.max_blocks + i / bs] * bs + (size_t)(i % bs);
}

static bool sees(const case_t *c, int t, int i) {
    const tr_attn_params *p = &c->p;
    int pos = c->kv_pos ? c->kv_pos[i] : i;
    if (pos > c->q_pos[t] || (p->window && c->q_pos[t] - pos >= p->window)) return false;
    if (p->n_seq == 0 && c->kv_seq && c->kv_seq[i] != c->q_seq[t]) return false;
    return true;
}

static float kv_at(const case_t *c, const void *base, size_t stride, size_t i, int g, int dim, int x) {
    const char *row = (const char *)base + i * stride;
    if (c->p.kv_type == TR_TYPE_F16) return tr_fp16_to_fp32(((const uint16_t *)row)[g * dim + x]);
    return ((const float *)row)[g * dim + x];
}
static int dim_v(const case_t *c) { return c->p.head_dim_v ? c->p.head_dim_v : c->p.head_dim; }

static void naive(const case_t *c, float *out) {
    const tr_attn_params *p = &c->p;
    int d = p->head_dim, dv = dim_v(c), G = p->n_head / p->n_head_kv;
    double *s = malloc(sizeof(double) * (size_t)(p->n_kv + 1));
    for (int t = 0; t < p->n_tokens; t++) {
        for (int h = 0; h < p->n_head; h++) {
            int g = h / G;
            const float *q = c->q + ((size_t)t * p->n_head + h) * d;
            double mx = -INFINITY;
            for (int i = 0; i < p->n_kv; i++) {
                s[i] = -INFINITY;
                if (!sees(c, t, i)) continue;
                double dot = 0;
                for (int x = 0; x < d; x++) {
                    /* with TR_ATTN_HALF_Q the query is halves: the reference takes them too */
                    double qx = p->flags & TR_ATTN_HALF_Q ? tr_fp16_to_fp32(tr_fp32_to_fp16(q[x])) : q[x];
                    dot += qx * kv_at(c, c->k, p->k_stride, slot_of(c, t, i), g, d, x);
                }
                dot *= p->scale;
                if (p->softcap > 0) dot = p->softcap * tanh(dot / p->softcap);
                s[i] = dot;
                if (dot > mx) mx = dot;
            }
            float *o = out + ((size_t)t * p->n_head + h) * dv;
            double sum = 0;
            for (int i = 0; i < p->n_kv; i++) sum += s[i] == -INFINITY ? 0 : exp(s[i] - mx);
            for (int x = 0; x < dv; x++) {
                double acc = 0;
                for (int i = 0; i < p->n_kv; i++)
                    if (s[i] != -INFINITY) acc += exp(s[i] - mx) * kv_at(c, c->v, p->v_stride, slot_of(c, t, i), g, dv, x);
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
    for (size_t i = 0; i < (size_t)n_tokens * n_head * d; i++) c.q[i] = tt_rndf();
    c.k = malloc(p->k_stride * (size_t)(n_kv + 1));
    c.v = malloc(p->v_stride * (size_t)(n_kv + 1));
    for (int i = 0; i < n_kv; i++) {
        for (size_t x = 0; x < p->k_stride / es; x++) {
            float a = tt_rndf(), b = tt_rndf();
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
            int r = (int)(tt_rnd() % (uint32_t)(i + 1));
            int32_t tmp = c.kv_pos[i];
            c.kv_pos[i] = c.kv_pos[r];
            c.kv_pos[r] = tmp;
        }
    }
    if (seqs) {
        c.q_seq = malloc(sizeof(int32_t) * (size_t)n_tokens);
        c.kv_seq = malloc(sizeof(int32_t) * (size_t)n_kv);
        for (int t = 0; t < n_tokens; t++) c.q_seq[t] = (int32_t)(tt_rnd() % 2);
        for (int i = 0; i < n_kv; i++) c.kv_seq[i] = (int32_t)(tt_rnd() % 3); /* seq 2: nobody's */
    }
    p->q_pos = c.q_pos;
    p->kv_pos = c.kv_pos;
    p->q_seq = c.q_seq;
    p->kv_seq = c.kv_seq;
    return c;
}

static void free_case(case_t *c) {
    free(c->q), free(c->out), free(c->k), free(c->v), free(c->q_pos), free(c->kv_pos), free(c->q_seq), free(c->kv_seq);
    free(c->blocks);
}

/* An engine's cache: a pool of blocks of bs slots, handed to n_seq
 * sequences in a random order (so neighbouring positions sit in scattered
 * blocks), each sequence holding up to n_kv positions; head sizes d for K
 * and dv for V; tokens of random sequences at random positions (distinct per
 * sequence), in random order. */
static case_t make_paged_case(int n_tokens, int n_kv, int n_seq, int bs, int d, int dv, int n_head, int n_head_kv,
                              int kv_type, int window, unsigned flags) {
    case_t c = {0};
    tr_attn_params *p = &c.p;
    p->n_tokens = n_tokens;
    p->n_kv = n_kv;
    p->n_seq = n_seq;
    p->block_size = bs;
    p->max_blocks = (n_kv + bs - 1) / bs;
    p->head_dim = d;
    p->head_dim_v = dv;
    p->n_head = n_head;
    p->n_head_kv = n_head_kv;
    p->kv_type = kv_type;
    p->window = window;
    p->flags = flags;
    p->scale = 1.0f / sqrtf((float)d) * 3.0f;
    const int n_blocks = n_seq * p->max_blocks + 3; /* a few never used */
    size_t es = kv_type == TR_TYPE_F16 ? 2 : 4, slots = (size_t)n_blocks * bs;
    p->k_stride = (size_t)n_head_kv * d * es;
    p->v_stride = (size_t)n_head_kv * dv * es;
    c.q = malloc(sizeof(float) * (size_t)n_tokens * n_head * d);
    c.out = malloc(sizeof(float) * (size_t)n_tokens * n_head * dv);
    for (size_t i = 0; i < (size_t)n_tokens * n_head * d; i++) c.q[i] = tt_rndf();
    c.k = malloc(p->k_stride * slots);
    c.v = malloc(p->v_stride * slots);
    for (size_t i = 0; i < p->k_stride * slots / es; i++) {
        if (es == 2) ((uint16_t *)c.k)[i] = tr_fp32_to_fp16(tt_rndf());
        else ((float *)c.k)[i] = tt_rndf();
    }
    for (size_t i = 0; i < p->v_stride * slots / es; i++) {
        if (es == 2) ((uint16_t *)c.v)[i] = tr_fp32_to_fp16(tt_rndf());
        else ((float *)c.v)[i] = tt_rndf();
    }
    /* a random permutation of the pool's blocks, dealt out to the tables */
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        int j = (int)(tt_rnd() % (uint32_t)(i + 1));
        int32_t x = perm[i];
        perm[i] = perm[j];
        perm[j] = x;
    }
    c.blocks = malloc(sizeof(int32_t) * (size_t)n_seq * p->max_blocks);
    for (int i = 0; i < n_seq * p->max_blocks; i++) c.blocks[i] = perm[i];
    free(perm);
    c.q_pos = malloc(sizeof(int32_t) * (size_t)n_tokens);
    c.q_seq = malloc(sizeof(int32_t) * (size_t)n_tokens);
    for (int t = 0; t < n_tokens; t++) {
        bool dup;
        do { /* a (sequence, position) at most once, as a batch has it */
            c.q_seq[t] = (int32_t)(tt_rnd() % (uint32_t)n_seq);
            c.q_pos[t] = (int32_t)(tt_rnd() % (uint32_t)n_kv);
            dup = false;
            for (int u = 0; u < t; u++) dup |= c.q_seq[u] == c.q_seq[t] && c.q_pos[u] == c.q_pos[t];
        } while (dup);
    }
    p->q_pos = c.q_pos;
    p->q_seq = c.q_seq;
    p->blocks = c.blocks;
    return c;
}

/* The normalised-weights path's arithmetic written out plainly: halves of q,
 * 8-lane dot products, expf and a double sum in position order, normalised
 * weights rounded to halves, 8-lane weighted sums by position. */
static float lanes8(const float *l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

static void naive_lanes(const case_t *c, float *out) {
    const tr_attn_params *p = &c->p;
    int d = p->head_dim, dv = dim_v(c), G = p->n_head / p->n_head_kv;
    float *s = malloc(sizeof(float) * (size_t)p->n_kv), *acc = malloc(sizeof(float) * 8 * (size_t)dv);
    for (int t = 0; t < p->n_tokens; t++) {
        for (int h = 0; h < p->n_head; h++) {
            int g = h / G;
            const float *q = c->q + ((size_t)t * p->n_head + h) * d;
            float mx = -INFINITY;
            for (int i = 0; i < p->n_kv; i++) {
                s[i] = -INFINITY;
                if (!sees(c, t, i)) continue;
                float lane[8] = {0};
                for (int x = 0; x < d; x++) {
                    float qx = p->flags & TR_ATTN_HALF_Q ? tr_fp16_to_fp32(tr_fp32_to_fp16(q[x])) : q[x];
                    lane[x & 7] += qx * kv_at(c, c->k, p->k_stride, slot_of(c, t, i), g, d, x);
                }
                s[i] = lanes8(lane) * p->scale;
                if (p->softcap > 0) s[i] = p->softcap * tanhf(s[i] / p->softcap);
                if (s[i] > mx) mx = s[i];
            }
            float *o = out + ((size_t)t * p->n_head + h) * dv;
            memset(acc, 0, sizeof(float) * 8 * (size_t)dv);
            if (mx != -INFINITY) {
                double sum = 0;
                for (int i = 0; i < p->n_kv; i++) {
                    s[i] = s[i] == -INFINITY ? 0.0f : expf(s[i] - mx);
                    sum += s[i];
                }
                float inv = (float)(1.0 / sum);
                for (int i = 0; i < p->n_kv; i++) {
                    if (s[i] == 0) continue;
                    float w = s[i] * inv;
                    if (p->flags & TR_ATTN_HALF_P) w = tr_fp16_to_fp32(tr_fp32_to_fp16(w));
                    for (int x = 0; x < dv; x++)
                        acc[x * 8 + (i & 7)] += w * kv_at(c, c->v, p->v_stride, slot_of(c, t, i), g, dv, x);
                }
            }
            for (int x = 0; x < dv; x++) o[x] = lanes8(acc + x * 8);
        }
    }
    free(s), free(acc);
}

static int check_case(case_t *c, tr_pool **pools) {
    size_t n = (size_t)c->p.n_tokens * c->p.n_head * dim_v(c);
    float *want = malloc(sizeof(float) * n), *exact = malloc(sizeof(float) * n);
    naive(c, want);
    /* Weights rounded to halves are off the exact softmax by up to 2^-11. */
    const float tol = c->p.flags & TR_ATTN_HALF_P ? 2e-3f : 2e-5f;
    /* The normalised-weights path on a half cache with half queries is the
     * lanes arithmetic to the bit, whatever the threads and inner loops. */
    const bool bitwise = (c->p.flags & TR_ATTN_HALF_P) && (c->p.flags & TR_ATTN_HALF_Q) && c->p.kv_type == TR_TYPE_F16;
    if (bitwise) naive_lanes(c, exact);
    int bad_total = 0;
    for (int simd = 0; simd <= 1; simd++) {
        for (int pi = 0; pi < 4; pi++) {
            memset(c->out, 0xff, sizeof(float) * n); /* NaN: every output must be written */
            tr_status st = tr_attention_variant(pi ? pools[pi - 1] : NULL, &c->p, c->q, c->k, c->v, c->out, simd);
            TT_CHECK_EQ_INT(st, TR_OK);
            int bad = 0;
            for (size_t i = 0; i < n; i++)
                if (!(fabsf(c->out[i] - want[i]) <= tol) || (bitwise && c->out[i] != exact[i])) bad++;
            if (bad)
                fprintf(stderr, "  tokens=%d kv=%d seqs=%d d=%d/%d heads=%d/%d type=%d window=%d flags=%u simd=%d threads=%d: "
                                "%d bad\n", c->p.n_tokens, c->p.n_kv, c->p.n_seq, c->p.head_dim, dim_v(c), c->p.n_head,
                        c->p.n_head_kv, c->p.kv_type, c->p.window, c->p.flags, simd, pi, bad);
            bad_total += bad;
        }
    }
    free(want), free(exact);
    return bad_total;
}

static tr_pool *pools[3];

TT_TEST(prompt_and_decode_match_naive_softmax) {
    /* simd = 1 below runs the AVX2 inner loops only where the CPU has them */
    const tr_cpu_features *f = tr_cpu_get();
    TT_SIMD("avx2 attention (F32 and F16 cache)", f->avx2 && f->fma && f->f16c, "lacks avx2, fma or f16c");
    static const int shapes[][3] = {{64, 4, 1}, {64, 32, 4}, {72, 6, 2}, {128, 4, 4}, {256, 4, 1}, {40, 3, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int kvt = 0; kvt < 2; kvt++) {
            int nt = 1 + (int)(tt_rnd() % 17);
            int n_kv = nt + (int)(tt_rnd() % 300);
            case_t c = make_case(nt, n_kv, shapes[s][0], shapes[s][1], shapes[s][2],
                                 kvt ? TR_TYPE_F16 : TR_TYPE_F32, 0, false, false, 0);
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
            /* decode: one token over a long cache (the split-KV path) */
            c = make_case(1, 200 + (int)(tt_rnd() % 400), shapes[s][0], shapes[s][1], shapes[s][2],
                          kvt ? TR_TYPE_F16 : TR_TYPE_F32, 0, false, false, 0);
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
        }
    }
}

TT_TEST(sliding_window_positions_sequences_softcap) {
    for (int rep = 0; rep < 8; rep++) {
        int nt = 1 + (int)(tt_rnd() % 17), n_kv = nt + (int)(tt_rnd() % 260);
        int window = 1 + (int)(tt_rnd() % 64);
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

TT_TEST(normalised_weights_path_is_the_lanes_arithmetic) {
    /* Gemma-, TinyLlama- and Qwen-like groups, ragged head sizes (not
     * multiples of 8), windows that start ranges off a multiple of 8. */
    static const int shapes[][4] = {{256, 256, 4, 1}, {64, 64, 32, 4}, {40, 40, 6, 2}, {72, 72, 4, 4}, {20, 20, 3, 1}};
    for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
        for (int rep = 0; rep < 4; rep++) {
            const unsigned flags = rep == 3 ? TR_ATTN_HALF_P : TR_ATTN_HALF_Q | TR_ATTN_HALF_P;
            const int type = rep == 2 ? TR_TYPE_F32 : TR_TYPE_F16;
            /* prompt: several tokens of one sequence, then one decode token */
            case_t c = make_case(1 + (int)(tt_rnd() % 17), 20 + (int)(tt_rnd() % 200), shapes[sh][0], shapes[sh][2],
                                 shapes[sh][3], type, rep == 1 ? 1 + (int)(tt_rnd() % 50) : 0, false, false, 0);
            c.p.flags = flags;
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
            c = make_case(1, 100 + (int)(tt_rnd() % 300), shapes[sh][0], shapes[sh][2], shapes[sh][3], type, 0, false,
                          false, 0);
            c.p.flags = flags;
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
        }
    }
}

TT_TEST(paged_cache_through_block_tables) {
    /* Both paths; tokens of several sequences interleaved, each reading only
     * its own positions through its block table; blocks of several sizes
     * (tiles cut at block ends); V heads of another size. */
    const int sizes[] = {1, 3, 16, 32, 64};
    for (int rep = 0; rep < 15; rep++) {
        const unsigned flags = rep % 3 == 0 ? 0 : TR_ATTN_HALF_Q | TR_ATTN_HALF_P;
        const int d = rep & 1 ? 64 : 40, dv = rep % 4 == 1 ? 24 : d;
        case_t c = make_paged_case(1 + (int)(tt_rnd() % 20), 30 + (int)(tt_rnd() % 150), 1 + (int)(tt_rnd() % 4),
                                   sizes[rep % 5], d, dv, 4, rep & 2 ? 2 : 1, rep & 4 ? TR_TYPE_F16 : TR_TYPE_F32,
                                   rep % 5 == 0 ? 16 : 0, flags);
        TT_CHECK_EQ_INT(check_case(&c, pools), 0);
        free_case(&c);
    }
}

/* The forward pass's promise: with the normalised-weights path, a query's
 * result is the same bits whatever the block size and block placement
 * (the same K/V rows, laid out in a pool differently). */
TT_TEST(paged_result_does_not_depend_on_block_layout) {
    const unsigned flags = TR_ATTN_HALF_Q | TR_ATTN_HALF_P;
    case_t a = make_paged_case(9, 150, 2, 150, 64, 64, 4, 1, TR_TYPE_F16, 0, flags);
    float *ref = malloc(sizeof(float) * 9 * 4 * 64);
    TT_CHECK_EQ_INT(tr_attention(pools[1], &a.p, a.q, a.k, a.v, a.out), TR_OK);
    memcpy(ref, a.out, sizeof(float) * 9 * 4 * 64);
    const int sizes[] = {1, 7, 16, 32, 64};
    for (int si = 0; si < 5; si++) {
        const int bs = sizes[si];
        case_t b = make_paged_case(9, 150, 2, bs, 64, 64, 4, 1, TR_TYPE_F16, 0, flags);
        /* a's queries and entries, moved to b's layout */
        memcpy(b.q, a.q, sizeof(float) * 9 * 4 * 64);
        memcpy(b.q_pos, a.q_pos, sizeof(int32_t) * 9);
        memcpy(b.q_seq, a.q_seq, sizeof(int32_t) * 9);
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < 150; i++) {
                const size_t from = (size_t)a.blocks[(size_t)s * a.p.max_blocks] * 150 + (size_t)i;
                const size_t to = (size_t)b.blocks[(size_t)s * b.p.max_blocks + i / bs] * bs + (size_t)(i % bs);
                memcpy((char *)b.k + to * b.p.k_stride, (char *)a.k + from * a.p.k_stride, a.p.k_stride);
                memcpy((char *)b.v + to * b.p.v_stride, (char *)a.v + from * a.p.v_stride, a.p.v_stride);
            }
        for (int th = 0; th < 3; th++) {
            TT_CHECK_EQ_INT(tr_attention(pools[th], &b.p, b.q, b.k, b.v, b.out), TR_OK);
            TT_CHECK(memcmp(b.out, ref, sizeof(float) * 9 * 4 * 64) == 0);
        }
        free_case(&b);
    }
    free(ref);
    free_case(&a);
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
    /* paged caches need the queries' sequences, inside [0, n_seq), and positions inside n_kv */
    c = make_paged_case(2, 10, 2, 4, 64, 64, 4, 2, TR_TYPE_F32, 0, 0);
    c.p.q_seq = NULL;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.q_seq = c.q_seq;
    c.q_seq[1] = 2;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.q_seq[1] = 1;
    c.q_pos[0] = 10;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.q_pos[0] = 0;
    c.p.blocks = NULL;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    free_case(&c);
}

int main(void) {
    tt_seed(0x243f6a8885a308d3ull); /* this file's inputs since it was written */
    for (int i = 0; i < 3; i++) pools[i] = tr_pool_new(i + 1);
    TT_RUN(prompt_and_decode_match_naive_softmax);
    TT_RUN(sliding_window_positions_sequences_softcap);
    TT_RUN(normalised_weights_path_is_the_lanes_arithmetic);
    TT_RUN(paged_cache_through_block_tables);
    TT_RUN(paged_result_does_not_depend_on_block_layout);
    TT_RUN(rejects_bad_parameters);
    for (int i = 0; i < 3; i++) tr_pool_free(pools[i]);
    return TT_DONE();
}
