/* Flash attention against a naive reference written independently here:
 * full score rows in double, a plain softmax, then the weighted sum of V.
 * Random Q/K/V; ragged head sizes and token counts, GQA groups, causal and
 * sliding-window masks, explicit slot positions and sequence ids, F32 and F16
 * caches, softcap; every thread count 1..3 and the inner loops of every ISA
 * this CPU runs (scalar, AVX2, AVX-512). Quantized caches (Q8_0, Q4_0,
 * TQ2_32 for K and V, mixed):
 * against the same double reference over the dequantized entries, bit for bit
 * against the lanes arithmetic written out here, and against the unquantized
 * data within a bound per type; with llama.cpp's Hadamard rotation, against
 * the unrotated data in float64 when keys and values have outlier channels. */
#include "ops/cpu.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "quant/blocks.h"
#include "trinity.h"
#include "tt.h"


typedef struct {
    tr_attn_params p;
    float *q, *out;
    void *k, *v;
    float *kf, *vf; /* the entries before they were stored in their types (slot-major, packed heads) */
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

/* Element x of head g (heads of dim elements) of a slot's row of `type`. */
static float entry(int type, const char *row, int g, int dim, int x) {
    const char *h = row + (size_t)g * tr_row_size(type, dim);
    if (type == TR_TYPE_F16) return tr_fp16_to_fp32(((const uint16_t *)h)[x]);
    if (type == TR_TYPE_F32) return ((const float *)h)[x];
    float blk[32];
    TT_CHECK(tr_dequantize(type, h + (size_t)(x / 32) * tr_type_block_bytes(type), blk, 32) == TR_OK);
    return blk[x % 32];
}
static bool is_quant(int type) { return type != TR_TYPE_F32 && type != TR_TYPE_F16; }
static float k_at(const case_t *c, size_t i, int g, int x) {
    return entry(c->p.k_type, (const char *)c->k + i * c->p.k_stride, g, c->p.head_dim, x);
}
static int dim_v(const case_t *c) { return c->p.head_dim_v ? c->p.head_dim_v : c->p.head_dim; }
static float v_at(const case_t *c, size_t i, int g, int x) {
    return entry(c->p.v_type, (const char *)c->v + i * c->p.v_stride, g, dim_v(c), x);
}

/* n_slots rows of n_heads heads of dim random elements in `type`, stride
 * bytes apart (the padding random too, for F32/F16); the values before
 * rounding into *orig. */
static void *fill_rows(int type, size_t n_slots, int n_heads, int dim, size_t stride, float **orig) {
    char *m = malloc(stride * n_slots + 1);
    const size_t hb = tr_row_size(type, dim), nel = (size_t)n_heads * dim;
    float *o = malloc(sizeof(float) * nel * n_slots + 1);
    memset(m, 0, stride * n_slots + 1);
    for (size_t i = 0; i < n_slots; i++) {
        char *row = m + i * stride;
        float *x = o + i * nel;
        if (!is_quant(type)) {
            const size_t es = type == TR_TYPE_F16 ? 2 : 4;
            for (size_t e = 0; e < stride / es; e++) {
                const float f = tt_rndf();
                if (e < nel) x[e] = f;
                if (es == 2) ((uint16_t *)row)[e] = tr_fp32_to_fp16(f);
                else ((float *)row)[e] = f;
            }
        } else {
            for (size_t e = 0; e < nel; e++) x[e] = tt_rndf();
            for (int g = 0; g < n_heads; g++) TT_CHECK(tr_quantize(type, x + (size_t)g * dim, row + g * hb, dim) == TR_OK);
        }
    }
    *orig = o;
    return m;
}

/* A query as the kernel meets the cache: Q8_0 blocks when K is quantized,
 * halves with TR_ATTN_HALF_Q, else as is. */
static void query_as_met(const case_t *c, const float *q, float *out) {
    const int d = c->p.head_dim;
    if (is_quant(c->p.k_type)) {
        char blocks[64 * 34];
        TT_CHECK(tr_quantize(TR_TYPE_Q8_0, q, blocks, d) == TR_OK);
        TT_CHECK(tr_dequantize(TR_TYPE_Q8_0, blocks, out, d) == TR_OK);
    } else {
        for (int x = 0; x < d; x++) out[x] = c->p.flags & TR_ATTN_HALF_Q ? tr_fp16_to_fp32(tr_fp32_to_fp16(q[x])) : q[x];
    }
}

static void naive(const case_t *c, float *out) {
    const tr_attn_params *p = &c->p;
    int d = p->head_dim, dv = dim_v(c), G = p->n_head / p->n_head_kv;
    double *s = malloc(sizeof(double) * (size_t)(p->n_kv + 1));
    float *qm = malloc(sizeof(float) * (size_t)d);
    for (int t = 0; t < p->n_tokens; t++) {
        for (int h = 0; h < p->n_head; h++) {
            int g = h / G;
            /* the query as the kernel meets the cache (halves, Q8_0): the reference takes it too */
            query_as_met(c, c->q + ((size_t)t * p->n_head + h) * d, qm);
            double mx = -INFINITY;
            for (int i = 0; i < p->n_kv; i++) {
                s[i] = -INFINITY;
                if (!sees(c, t, i)) continue;
                double dot = 0;
                for (int x = 0; x < d; x++) dot += (double)qm[x] * k_at(c, slot_of(c, t, i), g, x);
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
                    if (s[i] != -INFINITY) acc += exp(s[i] - mx) * v_at(c, slot_of(c, t, i), g, x);
                o[x] = sum > 0 ? (float)(acc / sum) : 0.0f;
            }
        }
    }
    free(s);
    free(qm);
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
    p->k_type = p->v_type = kv_type;
    /* padded slots: strides larger than one packed row (by whole blocks when quantized) */
    const size_t pad = is_quant(kv_type) ? tr_type_block_bytes(kv_type) : (kv_type == TR_TYPE_F16 ? 2 : 4);
    p->k_stride = (size_t)n_head_kv * tr_row_size(kv_type, d) + 8 * pad;
    p->v_stride = (size_t)n_head_kv * tr_row_size(kv_type, d) + 4 * pad;
    p->window = window;
    p->scale = 1.0f / sqrtf((float)d) * 3.0f; /* sharper than usual: exercises the max tracking */
    p->softcap = softcap;
    c.q = malloc(sizeof(float) * (size_t)n_tokens * n_head * d);
    c.out = malloc(sizeof(float) * (size_t)n_tokens * n_head * d);
    for (size_t i = 0; i < (size_t)n_tokens * n_head * d; i++) c.q[i] = tt_rndf();
    c.k = fill_rows(kv_type, (size_t)n_kv + 1, n_head_kv, d, p->k_stride, &c.kf);
    c.v = fill_rows(kv_type, (size_t)n_kv + 1, n_head_kv, d, p->v_stride, &c.vf);
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
    free(c->blocks), free(c->kf), free(c->vf);
}

/* An engine's cache: a pool of blocks of bs slots, handed to n_seq
 * sequences in a random order (so neighbouring positions sit in scattered
 * blocks), each sequence holding up to n_kv positions; head sizes d for K
 * and dv for V; tokens of random sequences at random positions (distinct per
 * sequence), in random order. */
static case_t make_paged_case_kv(int n_tokens, int n_kv, int n_seq, int bs, int d, int dv, int n_head, int n_head_kv,
                                 int k_type, int v_type, int window, unsigned flags) {
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
    p->k_type = k_type;
    p->v_type = v_type;
    p->window = window;
    p->flags = flags;
    p->scale = 1.0f / sqrtf((float)d) * 3.0f;
    const int n_blocks = n_seq * p->max_blocks + 3; /* a few never used */
    const size_t slots = (size_t)n_blocks * bs;
    p->k_stride = (size_t)n_head_kv * tr_row_size(k_type, d);
    p->v_stride = (size_t)n_head_kv * tr_row_size(v_type, dv);
    c.q = malloc(sizeof(float) * (size_t)n_tokens * n_head * d);
    c.out = malloc(sizeof(float) * (size_t)n_tokens * n_head * dv);
    for (size_t i = 0; i < (size_t)n_tokens * n_head * d; i++) c.q[i] = tt_rndf();
    c.k = fill_rows(k_type, slots, n_head_kv, d, p->k_stride, &c.kf);
    c.v = fill_rows(v_type, slots, n_head_kv, dv, p->v_stride, &c.vf);
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

static case_t make_paged_case(int n_tokens, int n_kv, int n_seq, int bs, int d, int dv, int n_head, int n_head_kv,
                              int kv_type, int window, unsigned flags) {
    return make_paged_case_kv(n_tokens, n_kv, n_seq, bs, d, dv, n_head, n_head_kv, kv_type, kv_type, window, flags);
}

/* The normalised-weights path's arithmetic written out plainly: halves of q,
 * 8-lane dot products, expf and a double sum in position order, normalised
 * weights rounded to halves, 8-lane weighted sums by position. */
static float lanes8(const float *l) { return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])); }

/* Block b of a quantized head as its scale and 32 integers, read from the
 * layouts of quant/blocks.h. */
static void block_ints(int type, const char *head, int b, int8_t v[32], float *d) {
    if (type == TR_TYPE_Q8_0) {
        const tr_block_q8_0 *x = (const tr_block_q8_0 *)head + b;
        *d = tr_fp16_to_fp32(x->d);
        for (int j = 0; j < 32; j++) v[j] = x->qs[j];
    } else if (type == TR_TYPE_Q4_0) {
        const tr_block_q4_0 *x = (const tr_block_q4_0 *)head + b;
        *d = tr_fp16_to_fp32(x->d);
        for (int j = 0; j < 32; j++) v[j] = (int8_t)((j < 16 ? x->qs[j] & 15 : x->qs[j - 16] >> 4) - 8);
    } else {
        const tr_block_tq2_32 *x = (const tr_block_tq2_32 *)head + b;
        *d = tr_fp16_to_fp32(x->d);
        for (int j = 0; j < 32; j++) v[j] = (int8_t)(((x->qs[j % 8] >> (2 * (j / 8))) & 3) - 1);
    }
}

static void naive_lanes(const case_t *c, float *out) {
    const tr_attn_params *p = &c->p;
    int d = p->head_dim, dv = dim_v(c), G = p->n_head / p->n_head_kv;
    const bool kq = is_quant(p->k_type), vq = is_quant(p->v_type);
    float *s = malloc(sizeof(float) * (size_t)p->n_kv), *acc = malloc(sizeof(float) * 8 * (size_t)dv);
    tr_block_q8_0 q8[16];
    for (int t = 0; t < p->n_tokens; t++) {
        for (int h = 0; h < p->n_head; h++) {
            int g = h / G;
            const float *q = c->q + ((size_t)t * p->n_head + h) * d;
            if (kq) TT_CHECK(tr_quantize(TR_TYPE_Q8_0, q, q8, d) == TR_OK);
            float mx = -INFINITY;
            for (int i = 0; i < p->n_kv; i++) {
                s[i] = -INFINITY;
                if (!sees(c, t, i)) continue;
                float lane[8] = {0};
                if (kq) { /* block b: integer dot product, times both scales, into lane b mod 8 */
                    const char *kh = (const char *)c->k + slot_of(c, t, i) * p->k_stride + (size_t)g * tr_row_size(p->k_type, d);
                    for (int b = 0; b < d / 32; b++) {
                        int8_t kv[32];
                        float dk;
                        block_ints(p->k_type, kh, b, kv, &dk);
                        int32_t isum = 0;
                        for (int e = 0; e < 32; e++) isum += (int32_t)q8[b].qs[e] * kv[e];
                        lane[b & 7] += dk * tr_fp16_to_fp32(q8[b].d) * (float)isum;
                    }
                } else {
                    for (int x = 0; x < d; x++) {
                        float qx = p->flags & TR_ATTN_HALF_Q ? tr_fp16_to_fp32(tr_fp32_to_fp16(q[x])) : q[x];
                        lane[x & 7] += qx * k_at(c, slot_of(c, t, i), g, x);
                    }
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
                    if (vq) { /* the weight times the block's scale, times the integers */
                        const char *vh = (const char *)c->v + slot_of(c, t, i) * p->v_stride + (size_t)g * tr_row_size(p->v_type, dv);
                        for (int b = 0; b < dv / 32; b++) {
                            int8_t vv[32];
                            float dvb;
                            block_ints(p->v_type, vh, b, vv, &dvb);
                            const float wd = w * dvb; /* then fused into the lane: one rounding */
                            for (int e = 0; e < 32; e++)
                                acc[(b * 32 + e) * 8 + (i & 7)] = fmaf(wd, (float)vv[e], acc[(b * 32 + e) * 8 + (i & 7)]);
                        }
                    } else {
                        for (int x = 0; x < dv; x++) acc[x * 8 + (i & 7)] += w * v_at(c, slot_of(c, t, i), g, x);
                    }
                }
            }
            for (int x = 0; x < dv; x++) o[x] = lanes8(acc + x * 8);
        }
    }
    free(s), free(acc);
}

/* The inner loops' ISAs; a loop an ISA has no variant of runs the next
 * lower one's. Those this CPU cannot run are skipped (reported by TT_SIMD
 * where a test names its paths). */
static const tr_isa isas[] = {TR_ISA_SCALAR, TR_ISA_AVX2, TR_ISA_AVX512};
enum { N_ISAS = sizeof isas / sizeof isas[0] };

/* Why the AVX-512 loops cannot run here. tests/test_attention_emu.py runs
 * them on any machine under an emulator. */
static const char *avx512_missing(void) {
    const tr_cpu_features *f = tr_cpu_get();
    static char why[160];
    snprintf(why, sizeof why, "lacks%s%s%s%s%s%s (tests/test_attention_emu.py runs them emulated)",
             tr_isa_usable(TR_ISA_AVX2) ? "" : " avx2/fma/f16c", f->avx512f ? "" : " avx512f",
             f->avx512bw ? "" : " avx512bw", f->avx512vl ? "" : " avx512vl", f->avx512dq ? "" : " avx512dq",
             f->avx512vnni ? "" : " avx512vnni");
    if (getenv("TRINITY_CPU")) snprintf(why + strlen(why), sizeof why - strlen(why), " (TRINITY_CPU caps the features)");
    return why;
}

static int check_case(case_t *c, tr_pool **pools) {
    size_t n = (size_t)c->p.n_tokens * c->p.n_head * dim_v(c);
    float *want = malloc(sizeof(float) * n), *exact = malloc(sizeof(float) * n);
    naive(c, want);
    /* Weights rounded to halves are off the exact softmax by up to 2^-11. */
    const float tol = c->p.flags & TR_ATTN_HALF_P ? 2e-3f : 2e-5f;
    /* The normalised-weights path on a half cache with half queries is the
     * lanes arithmetic to the bit, whatever the threads and inner loops. */
    const bool bitwise = (c->p.flags & TR_ATTN_HALF_P) &&
                         (is_quant(c->p.k_type) || ((c->p.flags & TR_ATTN_HALF_Q) && c->p.k_type == TR_TYPE_F16)) &&
                         c->p.v_type != TR_TYPE_F32;
    if (bitwise) naive_lanes(c, exact);
    int bad_total = 0;
    for (int ii = 0; ii < N_ISAS; ii++) {
        if (!tr_isa_usable(isas[ii])) continue;
        for (int pi = 0; pi < 4; pi++) {
            memset(c->out, 0xff, sizeof(float) * n); /* NaN: every output must be written */
            tr_status st = tr_attention_variant(pi ? pools[pi - 1] : NULL, &c->p, c->q, c->k, c->v, c->out, isas[ii]);
            TT_CHECK_EQ_INT(st, TR_OK);
            int bad = 0;
            for (size_t i = 0; i < n; i++)
                if (!(fabsf(c->out[i] - want[i]) <= tol) || (bitwise && c->out[i] != exact[i])) bad++;
            if (bad)
                fprintf(stderr, "  tokens=%d kv=%d seqs=%d d=%d/%d heads=%d/%d types=%s/%s window=%d flags=%u isa=%d "
                                "threads=%d: %d bad\n", c->p.n_tokens, c->p.n_kv, c->p.n_seq, c->p.head_dim, dim_v(c),
                        c->p.n_head, c->p.n_head_kv, tr_type_name(c->p.k_type), tr_type_name(c->p.v_type), c->p.window,
                        c->p.flags, (int)isas[ii], pi, bad);
            bad_total += bad;
        }
    }
    free(want), free(exact);
    return bad_total;
}

static tr_pool *pools[3];

TT_TEST(prompt_and_decode_match_naive_softmax) {
    /* the AVX2 inner loops run only where the CPU has them */
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
    /* the AVX-512 loops (F32/F16 scores and weighted sums) where the CPU has them */
    TT_SIMD("avx512 attention (F32 and F16 cache)", tr_isa_usable(TR_ISA_AVX512), avx512_missing());
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
    static const int types[][2] = {{TR_TYPE_F16, TR_TYPE_F16}, {TR_TYPE_Q8_0, TR_TYPE_Q8_0}, {TR_TYPE_Q4_0, TR_TYPE_Q4_0},
                                   {TR_TYPE_TQ2_32, TR_TYPE_TQ2_32}, {TR_TYPE_Q8_0, TR_TYPE_Q4_0}};
    for (size_t ty = 0; ty < sizeof types / sizeof types[0]; ty++) {
        const int kt = types[ty][0], vt = types[ty][1];
        case_t a = make_paged_case_kv(9, 150, 2, 150, 64, 64, 4, 1, kt, vt, 0, flags);
        float *ref = malloc(sizeof(float) * 9 * 4 * 64);
        TT_CHECK_EQ_INT(tr_attention(pools[1], &a.p, a.q, a.k, a.v, a.out), TR_OK);
        memcpy(ref, a.out, sizeof(float) * 9 * 4 * 64);
        const int sizes[] = {1, 7, 16, 32, 64};
        for (int si = 0; si < 5; si++) {
            const int bs = sizes[si];
            case_t b = make_paged_case_kv(9, 150, 2, bs, 64, 64, 4, 1, kt, vt, 0, flags);
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
            for (int th = 0; th < 3; th++)
                for (int ii = 0; ii < N_ISAS; ii++) {
                    if (!tr_isa_usable(isas[ii])) continue;
                    TT_CHECK_EQ_INT(tr_attention_variant(pools[th], &b.p, b.q, b.k, b.v, b.out, isas[ii]), TR_OK);
                    TT_CHECK(memcmp(b.out, ref, sizeof(float) * 9 * 4 * 64) == 0);
                }
            free_case(&b);
        }
        free(ref);
        free_case(&a);
    }
}

/* Cache type pairs the quantized tests run: each quantized type for both,
 * and mixtures (llama.cpp lets -ctk and -ctv differ). */
static const int quant_pairs[][2] = {
    {TR_TYPE_Q8_0, TR_TYPE_Q8_0}, {TR_TYPE_Q4_0, TR_TYPE_Q4_0}, {TR_TYPE_TQ2_32, TR_TYPE_TQ2_32},
    {TR_TYPE_Q8_0, TR_TYPE_Q4_0}, {TR_TYPE_F16, TR_TYPE_Q8_0},  {TR_TYPE_Q4_0, TR_TYPE_F16},
    {TR_TYPE_TQ2_32, TR_TYPE_F16}, {TR_TYPE_F16, TR_TYPE_TQ2_32},
};
enum { N_QUANT_PAIRS = sizeof quant_pairs / sizeof quant_pairs[0] };

TT_TEST(quantized_caches_are_the_lanes_arithmetic) {
    /* The double reference over the dequantized entries (within the half
     * weights' 2e-3), and the lanes arithmetic written out above to the bit,
     * for the SIMD and scalar loops and 0-3 threads: head sizes of 1 to 8
     * blocks and more (ragged groups of 8 blocks), GQA groups, prompt and
     * decode, windows, paged tables of several block sizes. */
    const tr_cpu_features *f = tr_cpu_get();
    TT_SIMD("avx2 attention (quantized caches)", f->avx2 && f->fma && f->f16c, "lacks avx2, fma or f16c");
    TT_SIMD("avx512 attention (quantized caches)", tr_isa_usable(TR_ISA_AVX512), avx512_missing());
    static const int shapes[][3] = {{256, 4, 1}, {64, 32, 4}, {96, 6, 2}, {32, 3, 3}, {160, 4, 2}, {288, 2, 1}};
    const int sizes[] = {1, 5, 16, 32};
    for (int pr = 0; pr < N_QUANT_PAIRS; pr++) {
        const int kt = quant_pairs[pr][0], vt = quant_pairs[pr][1];
        for (size_t sh = 0; sh < sizeof shapes / sizeof shapes[0]; sh++) {
            const int d = shapes[sh][0], dv = (pr + (int)sh) % 3 == 0 ? 64 : d;
            const unsigned flags = sh & 1 ? TR_ATTN_HALF_Q | TR_ATTN_HALF_P : TR_ATTN_HALF_P;
            case_t c = make_paged_case_kv(1 + (int)(tt_rnd() % 17), 20 + (int)(tt_rnd() % 200), 1 + (int)(tt_rnd() % 3),
                                          sizes[(pr + (int)sh) % 4], d, dv, shapes[sh][1], shapes[sh][2], kt, vt,
                                          sh == 2 ? 1 + (int)(tt_rnd() % 50) : 0, flags);
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
            /* decode: one token over a long range */
            c = make_paged_case_kv(1, 100 + (int)(tt_rnd() % 300), 1, 32, d, dv, shapes[sh][1], shapes[sh][2], kt, vt, 0,
                                   flags);
            TT_CHECK_EQ_INT(check_case(&c, pools), 0);
            free_case(&c);
        }
    }
}

/* The exact attention over the data before it was stored (double, the
 * float queries): relative RMS error of the outputs. */
static double error_against_unquantized(const case_t *c) {
    const tr_attn_params *p = &c->p;
    const int d = p->head_dim, dv = dim_v(c), G = p->n_head / p->n_head_kv;
    double *s = malloc(sizeof(double) * (size_t)p->n_kv), se = 0, ss = 0;
    for (int t = 0; t < p->n_tokens; t++)
        for (int h = 0; h < p->n_head; h++) {
            const int g = h / G;
            const float *q = c->q + ((size_t)t * p->n_head + h) * d;
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < p->n_kv; i++) {
                s[i] = -INFINITY;
                if (!sees(c, t, i)) continue;
                const float *k = c->kf + slot_of(c, t, i) * (size_t)p->n_head_kv * d + (size_t)g * d;
                double dot = 0;
                for (int x = 0; x < d; x++) dot += (double)q[x] * k[x];
                s[i] = dot * p->scale;
                if (s[i] > mx) mx = s[i];
            }
            for (int i = 0; i < p->n_kv; i++) sum += s[i] == -INFINITY ? 0 : exp(s[i] - mx);
            for (int x = 0; x < dv; x++) {
                double acc = 0;
                for (int i = 0; i < p->n_kv; i++)
                    if (s[i] != -INFINITY)
                        acc += exp(s[i] - mx) * c->vf[slot_of(c, t, i) * (size_t)p->n_head_kv * dv + (size_t)g * dv + x];
                const double want = acc / sum, got = c->out[((size_t)t * p->n_head + h) * dv + x];
                se += (got - want) * (got - want);
                ss += want * want;
            }
        }
    free(s);
    return sqrt(se / ss);
}

TT_TEST(quantized_cache_error_is_bounded_by_the_type) {
    /* Uniform data in [-1, 1), heads of 128, scores scaled 3/sqrt(d) (sharper
     * than a model's). A value's rounding error is about step/sqrt(12), step =
     * max|x|/127 for Q8_0 (0.4 % of the data's RMS) and max|x|/8 for Q4_0
     * (6 %); TQ2_32's round trip is 0.45 of the RMS (test_kv_types). K's error
     * moves the scores by about 3 * rms(q) * rms(dk); V's error reaches the
     * output averaged over the attended slots, but so is the output itself (a
     * weighted mean of ~100 random values), so relative to the output's RMS
     * the error stays near the per-value one. Measured here: F16 0.0004 (the
     * halves of q and of the weights), Q8_0 0.006, Q4_0 0.09, TQ2_32 0.45; the
     * bounds are twice that. */
    static const struct { int type; double bound; } rows[] = {
        {TR_TYPE_F16, 0.001}, {TR_TYPE_Q8_0, 0.013}, {TR_TYPE_Q4_0, 0.19}, {TR_TYPE_TQ2_32, 0.9}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        double worst = 0;
        for (int rep = 0; rep < 4; rep++) {
            case_t c = make_paged_case(1 + (int)(tt_rnd() % 8), 100 + (int)(tt_rnd() % 100), 1, 32, 128, 128, 4, 1,
                                       rows[r].type, 0, TR_ATTN_HALF_Q | TR_ATTN_HALF_P);
            TT_CHECK_EQ_INT(tr_attention(pools[1], &c.p, c.q, c.k, c.v, c.out), TR_OK);
            const double e = error_against_unquantized(&c);
            if (e > worst) worst = e;
            free_case(&c);
        }
        printf("     %-6s attention output: relative RMS error %.4f against the unquantized data (bound %.3f)\n",
               tr_type_name(rows[r].type), worst, rows[r].bound);
        TT_CHECK(worst <= rows[r].bound);
    }
}

/* llama.cpp's rotation of a quantized cache, as the forward pass applies it
 * (engine/forward.c): keys and queries Hadamard-rotated in blocks of rot_k,
 * values in blocks of rot_v before they are stored, the output rotated back.
 * Real keys have a few channels far larger than the rest (RoPE pairs of low
 * frequency, outlier features): a block's scale then serves its outlier and
 * rounds its other 31 values to few levels. Here a head of 256 has 4 such
 * channels (x 20) in K and 2 in V; the result is compared with the float64
 * attention over the unrotated, unquantized data. Rotated, the error is that
 * of Gaussian-like data (measured: Q8_0 0.0084, Q4_0 0.115; the bounds are
 * twice that); without rotation the outliers make it about 2.5 times larger
 * (0.021, 0.32), which the rotation must cut by at least half. */
static void store_rows(case_t *c, bool rot, int rot_k, int rot_v) {
    const tr_attn_params *p = &c->p;
    const int d = p->head_dim, dv = dim_v(c), nk = p->n_head_kv;
    const size_t slots = (size_t)(p->n_seq * p->max_blocks + 3) * p->block_size;
    float *row = malloc(sizeof(float) * (size_t)(d > dv ? d : dv));
    for (size_t i = 0; i < slots; i++)
        for (int g = 0; g < nk; g++) {
            memcpy(row, c->kf + (i * nk + g) * d, sizeof(float) * d);
            if (rot) tr_hadamard(row, d / rot_k, rot_k);
            TT_CHECK(tr_quantize(p->k_type, row, (char *)c->k + i * p->k_stride + g * tr_row_size(p->k_type, d), d) == TR_OK);
            memcpy(row, c->vf + (i * nk + g) * dv, sizeof(float) * dv);
            if (rot) tr_hadamard(row, dv / rot_v, rot_v);
            TT_CHECK(tr_quantize(p->v_type, row, (char *)c->v + i * p->v_stride + g * tr_row_size(p->v_type, dv), dv) == TR_OK);
        }
    free(row);
}

TT_TEST(rotated_quantized_cache_matches_float64_attention) {
    static const struct { int type; double bound; } rows[] = {{TR_TYPE_Q8_0, 0.017}, {TR_TYPE_Q4_0, 0.23}};
    const int d = 256, rot_k = 256, rot_v = 64;
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        double worst[2] = {0, 0};
        for (int rep = 0; rep < 3; rep++) {
            case_t c = make_paged_case(1 + (int)(tt_rnd() % 4), 150 + (int)(tt_rnd() % 100), 1, 32, d, d, 4, 1,
                                       rows[r].type, 0, TR_ATTN_HALF_Q | TR_ATTN_HALF_P);
            c.p.scale = 1.0f / sqrtf((float)d);
            const size_t slots = (size_t)(c.p.n_seq * c.p.max_blocks + 3) * c.p.block_size;
            for (size_t i = 0; i < slots; i++) {
                for (int x = 0; x < 4; x++) c.kf[i * d + 7 + 61 * x] *= 20.0f;
                for (int x = 0; x < 2; x++) c.vf[i * d + 30 + 100 * x] *= 20.0f;
            }
            const size_t nq = (size_t)c.p.n_tokens * c.p.n_head * d;
            float *q = malloc(sizeof(float) * nq), *q0 = c.q;
            for (int rot = 0; rot <= 1; rot++) {
                store_rows(&c, rot, rot_k, rot_v);
                memcpy(q, q0, sizeof(float) * nq);
                if (rot) tr_hadamard(q, (int64_t)(nq / rot_k), rot_k);
                TT_CHECK_EQ_INT(tr_attention(pools[rep % 3], &c.p, q, c.k, c.v, c.out), TR_OK);
                if (rot) tr_hadamard(c.out, (int64_t)(nq / rot_v), rot_v);
                const double e = error_against_unquantized(&c); /* against q0, kf, vf in float64 */
                if (e > worst[rot]) worst[rot] = e;
            }
            free(q);
            free_case(&c);
        }
        printf("     %-6s with outlier channels: relative RMS error %.4f rotated (bound %.2f), %.4f unrotated\n",
               tr_type_name(rows[r].type), worst[1], rows[r].bound, worst[0]);
        TT_CHECK(worst[1] <= rows[r].bound);
        TT_CHECK(worst[1] <= 0.5 * worst[0]);
    }
}

TT_TEST(rejects_bad_parameters) {
    case_t c = make_case(2, 10, 64, 4, 2, TR_TYPE_F32, 0, false, false, 0);
    c.p.n_head_kv = 3;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.n_head_kv = 2;
    c.p.k_type = TR_TYPE_Q4_1; /* not a cache type */
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.k_type = TR_TYPE_Q8_0; /* quantized: only on the normalised-weights path */
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.k_type = TR_TYPE_F32;
    c.p.v_type = TR_TYPE_TQ2_32;
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.flags = TR_ATTN_HALF_P;
    c.p.head_dim = 48; /* quantized heads are whole blocks of 32 */
    TT_CHECK_EQ_INT(tr_attention(NULL, &c.p, c.q, c.k, c.v, c.out), TR_ERR_ARG);
    c.p.head_dim = 64;
    c.p.flags = 0;
    c.p.v_type = TR_TYPE_F32;
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
    TT_RUN(quantized_caches_are_the_lanes_arithmetic);
    TT_RUN(quantized_cache_error_is_bounded_by_the_type);
    TT_RUN(rotated_quantized_cache_matches_float64_attention);
    TT_RUN(rejects_bad_parameters);
    for (int i = 0; i < 3; i++) tr_pool_free(pools[i]);
    return TT_DONE();
}
