/* Streaming with attention sinks (--kv-sinks / --kv-window) on the real
 * model (Gemma 3 270M: local layers with RoPE base 10000, global ones with
 * 1e6):
 *   - a slide re-rotates every moved key with its own layer's RoPE: each row
 *     equals the forward pass's own tr_rope applied by -block to the row it
 *     was, head by head (a different code path: per-element angles), for
 *     F16 and Q8_0 keys; a Q8_0 key stored Hadamard-rotated is rotated back,
 *     turned and rotated again (here by the float64 matrix), and one stored
 *     plain (--no-kv-rot) is turned as it is; the sinks' rows are untouched;
 *   - after many slides, layer 0's keys (a function of the token and its
 *     position alone) equal those a fresh context computes for the kept
 *     tokens at their positions in the cache, within the roundings the
 *     repeated rotations add (measured and printed);
 *   - a streaming sequence generates past its window (finishes on length,
 *     not context), and its tokens and logits are the same bits on 1 or 2
 *     threads, with prompt chunks of 7 or 512, and batched with others;
 *   - every bad value of the flags is refused with a message naming it. */
#include "engine/engine.h"
#include "tt.h"
#include "engine/test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "models/gemma-3-270m-q4_k_m.gguf"

static tr_model *model;
static int32_t *text;
static size_t n_text;

static tr_context *stream_ctx_rot(int32_t sinks, int32_t window, int type_k, int32_t threads, bool no_rot,
                                  tr_error *err) {
    tr_context_params p = tr_context_default_params();
    p.no_kv_rot = no_rot;
    p.n_sinks = sinks;
    p.n_window = window;
    p.type_k = type_k;
    p.n_threads = threads;
    p.n_batch = 512;
    tr_context *c = NULL;
    if (tr_context_new(model, &p, &c, err) != TR_OK) return NULL;
    return c;
}
static tr_context *stream_ctx(int32_t sinks, int32_t window, int type_k, int32_t threads, tr_error *err) {
    return stream_ctx_rot(sinks, window, type_k, threads, false, err);
}

/* x = H x in blocks of n, H the orthonormal Walsh-Hadamard matrix written
 * from its definition (H[i][j] = (-1)^popcount(i & j) / sqrt(n)), in
 * float64: independent of tr_hadamard's butterflies. */
static void hadamard_f64(float *x, int64_t len, int n) {
    double *y = malloc(sizeof *y * (size_t)n);
    for (int64_t b = 0; b < len; b += n) {
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int j = 0; j < n; j++) s += (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) * x[b + j];
            y[i] = s / sqrt((double)n);
        }
        for (int i = 0; i < n; i++) x[b + i] = (float)y[i];
    }
    free(y);
}

static tr_status decode_range(tr_context *c, const int32_t *tok, int32_t n, int32_t pos0) {
    int32_t pos[512], seq[512];
    for (int32_t i = 0; i < n; i++) pos[i] = pos0 + i, seq[i] = 0;
    tr_batch b = {.n_tokens = n, .token = tok, .pos = pos, .seq_id = seq};
    tr_error err = {{0}};
    tr_status st = tr_decode(c, &b, &err);
    if (st != TR_OK) fprintf(stderr, "  decode: %s\n", err.msg);
    return st;
}

/* K rows of every layer at positions [0, n) of sequence 0, as floats. */
static float *read_keys(tr_context *c, int32_t n) {
    const tr_hparams *hp = &c->model->hp;
    const size_t kr = tr_row_size(c->type_k, c->k_dim);
    float *out = malloc(sizeof *out * (size_t)hp->n_layer * (size_t)n * (size_t)c->k_dim);
    for (int32_t l = 0; l < hp->n_layer; l++)
        for (int32_t p = 0; p < n; p++) {
            const int64_t slot = tr_kv_slot(tr_kv_table(c->kv, 0), tr_kv_block_size(c->kv), p);
            tr_dequantize(c->type_k, (const char *)tr_kv_k_layer(c->kv, l) + (size_t)slot * kr,
                          out + ((size_t)l * n + p) * c->k_dim, c->k_dim);
        }
    return out;
}

TT_TEST(slide_rotates_each_layer_with_its_own_rope) {
    const int types[] = {TR_TYPE_F16, TR_TYPE_Q8_0, TR_TYPE_Q8_0};
    const bool no_rot[] = {false, false, true};
    const char *names[] = {"f16", "q8_0 rotated", "q8_0 --no-kv-rot"};
    const tr_hparams *hp = &model->hp;
    bool local = false, global = false;
    for (int l = 0; l < hp->n_layer; l++) {
        local |= model->layers[l].rope_base == 10000.0f;
        global |= model->layers[l].rope_base != 10000.0f;
    }
    TT_CHECK(local && global); /* both kinds of layer are checked */
    for (int ti = 0; ti < 3; ti++) {
        tr_error err = {{0}};
        tr_context *c = stream_ctx_rot(5, 60, types[ti], 2, no_rot[ti], &err); /* cap = round_up(65, bs) + bs */
        TT_CHECK(c != NULL);
        if (!c) return;
        /* Gemma's heads of 256: one rotation per head for a quantized K, none for F16 or when disabled */
        TT_CHECK_EQ_INT(c->rot_k, ti == 1 ? 256 : 0);
        const int32_t cap = tr_context_n_ctx(c), bs = tr_kv_block_size(c->kv);
        TT_CHECK_EQ_INT(cap, (65 + bs - 1) / bs * bs + bs);
        TT_CHECK(decode_range(c, text, cap, 0) == TR_OK);
        float *before = read_keys(c, cap);
        int32_t dropped = 0;
        TT_CHECK(tr_kv_seq_slide(c, 0, &dropped, &err) == TR_OK);
        TT_CHECK_EQ_INT(dropped, bs);
        TT_CHECK_EQ_INT(tr_kv_seq_len(c, 0), cap - bs);
        float *after = read_keys(c, cap - bs);
        double worst = 0;
        int sinks_changed = 0;
        float *want = malloc(sizeof *want * (size_t)c->k_dim), *wq = malloc(tr_row_size(c->type_k, c->k_dim));
        for (int32_t l = 0; l < hp->n_layer; l++) {
            const tr_layer *ly = &model->layers[l];
            for (int32_t p = 0; p < cap - bs; p++) {
                const float *got = after + ((size_t)l * (cap - bs) + p) * c->k_dim;
                if (p < 5) { /* sinks stay as they were */
                    sinks_changed += memcmp(got, before + ((size_t)l * cap + p) * c->k_dim, sizeof *got * c->k_dim) != 0;
                    continue;
                }
                memcpy(want, before + ((size_t)l * cap + p + bs) * c->k_dim, sizeof *want * c->k_dim);
                if (ti == 1) hadamard_f64(want, c->k_dim, hp->head_k); /* back to the key RoPE turned */
                for (int64_t h = 0; h < hp->n_head_kv; h++)
                    tr_rope(want + h * hp->head_k, hp->n_rot, -bs, ly->rope_base, ly->rope_scale, model->rope_freqs,
                            1.0f, model->arch->rope == TR_ROPE_NEOX);
                if (ti == 1) hadamard_f64(want, c->k_dim, hp->head_k);
                tr_kv_store_row(c->type_k, want, wq, c->k_dim); /* the cache's rounding */
                tr_dequantize(c->type_k, wq, want, c->k_dim);
                double num = 0, den = 0;
                for (int64_t i = 0; i < c->k_dim; i++) {
                    num += (double)(got[i] - want[i]) * (got[i] - want[i]);
                    den += (double)want[i] * want[i];
                }
                const double rel = sqrt(num / (den + 1e-30));
                if (rel > worst) worst = rel;
            }
        }
        fprintf(stderr, "  %s: worst relative difference from tr_rope by -%d: %.2e\n", names[ti], bs, worst);
        /* The same rotation computed two ways: within a rounding step of the type. */
        TT_CHECK(worst < (ti ? 1e-2 : 1e-3));
        TT_CHECK_EQ_INT(sinks_changed, 0);
        free(want);
        free(wq);
        free(before);
        free(after);
        tr_context_free(c);
    }
}

/* A fresh context's layer-0 keys against the streaming one's, for one K type. */
static void layer0_check(int type_k, double tol) {
    tr_error err = {{0}};
    tr_context *c = stream_ctx(4, 60, type_k, 2, &err);
    tr_context_params fp = tr_context_default_params();
    fp.n_ctx = 512;
    fp.type_k = type_k;
    tr_context *fresh = NULL;
    TT_CHECK(c && tr_context_new(model, &fp, &fresh, &err) == TR_OK);
    if (!c || !fresh) return;
    const int32_t cap = tr_context_n_ctx(c), total = 600;
    int32_t fed = 0, n_drop = 0;
    while (fed < total) { /* chunks up to the limit, a slide when full */
        int32_t d = 0;
        TT_CHECK(tr_kv_seq_slide(c, 0, &d, &err) == TR_OK);
        n_drop += d;
        const int32_t len = tr_kv_seq_len(c, 0);
        int32_t n = cap - len < 50 ? cap - len : 50;
        if (n > total - fed) n = total - fed;
        TT_CHECK(decode_range(c, text + fed, n, len) == TR_OK);
        fed += n;
    }
    TT_CHECK(n_drop >= 400); /* many slides: each kept key rotated up to (cap - 4) / 32 times */
    const int32_t len = tr_kv_seq_len(c, 0);
    TT_CHECK_EQ_INT(len, total - n_drop);
    /* The kept tokens: the sinks, then the window. */
    int32_t kept[512];
    for (int32_t p = 0; p < len; p++) kept[p] = p < 4 ? text[p] : text[p + n_drop];
    TT_CHECK(decode_range(fresh, kept, len, 0) == TR_OK);
    float *a = read_keys(c, len), *b = read_keys(fresh, len);
    double worst = 0;
    for (int32_t p = 0; p < len; p++) { /* layer 0: the first len rows of each */
        double num = 0, den = 0;
        for (int64_t i = 0; i < c->k_dim; i++) {
            const double d = a[(size_t)p * c->k_dim + i] - b[(size_t)p * c->k_dim + i];
            num += d * d;
            den += (double)b[(size_t)p * c->k_dim + i] * b[(size_t)p * c->k_dim + i];
        }
        if (sqrt(num / den) > worst) worst = sqrt(num / den);
    }
    /* The fresh context's row against ours: for F16, a half's rounding is
     * 4.9e-4 relative and a key is rounded again at each of up to 4
     * rotations here; for Q8_0, each rotation quantizes the row afresh. */
    fprintf(stderr, "  %s, %d slid positions: layer 0's keys within %.2e (relative) of a fresh context's\n",
            tr_type_name(type_k), n_drop, worst);
    TT_CHECK(worst < tol);
    free(a);
    free(b);
    tr_context_free(c);
    tr_context_free(fresh);
}

TT_TEST(layer0_keys_match_a_fresh_context_after_many_slides) {
    layer0_check(TR_TYPE_F16, 5e-3);
    layer0_check(TR_TYPE_Q8_0, 5e-2);
}

/* ----------------------------------------------------------- the engine */

enum { N_GEN = 120 };

static tr_engine *stream_engine(int32_t n_seq, int32_t n_batch, int32_t threads) {
    tr_engine_params p = tr_engine_default_params();
    p.ctx.n_seq_max = n_seq;
    p.ctx.n_batch = n_batch;
    p.ctx.n_threads = threads;
    p.ctx.n_sinks = 4;
    p.ctx.n_window = 100; /* 160 positions: slides every 32 */
    return tu_engine_new(model, &p);
}

/* Sequence k: a prompt of 150 + 40 k tokens from the text, then N_GEN tokens
 * (sampled at 0.8 with a seed); the others in mates[] run beside it. */
static void run(tr_engine *e, int n, const int *which, tu_run *o) {
    tr_seq_params p[4];
    for (int k = 0; k < n; k++) {
        p[k] = (tr_seq_params){.prompt = text + 7 * which[k], .n_prompt = 150 + 40 * which[k], .n_predict = N_GEN,
                               .sampling = tr_sampler_default_params(), .ignore_eog = true};
        p[k].sampling.seed = 99 + (uint64_t)which[k];
    }
    tu_run_many(e, model, p, NULL, n, 4000, true, o);
}

TT_TEST(streams_past_the_window_the_same_whatever_the_threads_chunks_and_batch) {
    tr_engine *e = stream_engine(1, 512, 2);
    if (!e) return;
    tu_run ref[3];
    for (int k = 0; k < 3; k++) {
        run(e, 1, &k, &ref[k]);
        TT_CHECK_EQ_INT(ref[k].n, N_GEN);
        TT_CHECK_EQ_INT(ref[k].finish, TR_FINISH_LENGTH); /* 150 + 40k + 120 > 160: it slid, and went on */
    }
    tr_engine_free(e);
    const int32_t threads[] = {1, 2}, batches[] = {7, 512};
    for (int ti = 0; ti < 2; ti++)
        for (int bi = 0; bi < 2; bi++) {
            if (threads[ti] == 2 && batches[bi] == 512) continue; /* the reference */
            e = stream_engine(1, batches[bi], threads[ti]);
            if (!e) return;
            int k = 1;
            tu_run o;
            run(e, 1, &k, &o);
            if (!tu_same(&o, &ref[1])) fprintf(stderr, "  threads %d, n_batch %d: differs\n", threads[ti], batches[bi]);
            TT_CHECK(tu_same(&o, &ref[1]));
            tr_engine_free(e);
        }
    e = stream_engine(3, 64, 2); /* three at once, prompts chunked between decodes */
    if (!e) return;
    const int all[3] = {0, 1, 2};
    tu_run o[3];
    run(e, 3, all, o);
    for (int k = 0; k < 3; k++) {
        if (!tu_same(&o[k], &ref[k])) fprintf(stderr, "  sequence %d batched with others: differs\n", k);
        TT_CHECK(tu_same(&o[k], &ref[k]));
    }
    tr_engine_free(e);
}

TT_TEST(bad_values_are_refused_by_name) {
    struct {
        int32_t sinks, window, n_ctx, bs;
        const char *says;
    } cases[] = {
        {-1, 100, 0, 0, "--kv-sinks = -1 is negative"},
        {0, -5, 0, 0, "--kv-window = -5 is negative"},
        {4, 0, 0, 0, "needs --kv-window"},
        {600, 100, 512, 0, "--kv-sinks = 600 is not below the context"},
        {4, 500, 512, 32, "need 544 positions per sequence"},
        {4, 1000, 0, 64, ""}, /* fine: the pool is sized for the window */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tr_context_params p = tr_context_default_params();
        p.n_sinks = cases[i].sinks;
        p.n_window = cases[i].window;
        p.n_ctx = cases[i].n_ctx;
        p.kv_block = cases[i].bs;
        tr_context *c = NULL;
        tr_error err = {{0}};
        tr_status st = tr_context_new(model, &p, &c, &err);
        if (!cases[i].says[0]) {
            TT_CHECK(st == TR_OK);
            TT_CHECK_EQ_INT(tr_context_n_ctx(c), 1024 + 64);
        } else {
            TT_CHECK(st == TR_ERR_ARG && !c);
            if (!strstr(err.msg, cases[i].says)) fprintf(stderr, "  case %zu: '%s'\n", i, err.msg);
            TT_CHECK(strstr(err.msg, cases[i].says) != NULL);
        }
        tr_context_free(c);
    }
    /* A slide on a context that does not stream, or of a sequence it does not have. */
    tr_context *c = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_context_new(model, NULL, &c, &err) == TR_OK);
    int32_t d;
    TT_CHECK(tr_kv_seq_slide(c, 0, &d, &err) == TR_ERR_ARG && strstr(err.msg, "not streaming"));
    tr_context_free(c);
    c = stream_ctx(4, 60, TR_TYPE_F16, 1, &err);
    TT_CHECK(tr_kv_seq_slide(c, 3, &d, &err) == TR_ERR_ARG && strstr(err.msg, "sequence 3"));
    TT_CHECK(tr_kv_seq_slide(c, 0, &d, &err) == TR_OK && d == 0); /* empty: it has room */
    tr_context_free(c);
    /* A draft model would have to slide in step: refused. */
    tr_engine_params ep = tr_engine_default_params();
    ep.ctx.n_window = 100;
    ep.draft_model = model;
    tr_engine *e = NULL;
    TT_CHECK(tr_engine_new(model, &ep, &e, &err) == TR_ERR_ARG && !e && strstr(err.msg, "--kv-window"));
}

int main(void) {
    tr_error err = {{0}};
    if (tr_model_load(MODEL, &model, &err) != TR_OK) {
        fprintf(stderr, "  model missing (run scripts/setup.sh): %s\n", err.msg);
        TT_CHECK(0);
        return TT_DONE();
    }
    size_t len = 0;
    FILE *f = fopen("/usr/share/common-licenses/GPL-3", "rb");
    char *buf = malloc(1 << 16);
    if (f) len = fread(buf, 1, (1 << 16) - 1, f), fclose(f);
    buf[len] = 0;
    if (tr_tokenize(tr_model_vocab(model), buf, len, true, false, &text, &n_text, &err) != TR_OK || n_text < 1000) {
        fprintf(stderr, "need the text of the GPL-3 (/usr/share/common-licenses/GPL-3): %s\n", err.msg);
        return 1;
    }
    free(buf);
    TT_RUN(slide_rotates_each_layer_with_its_own_rope);
    TT_RUN(layer0_keys_match_a_fresh_context_after_many_slides);
    TT_RUN(streams_past_the_window_the_same_whatever_the_threads_chunks_and_batch);
    TT_RUN(bad_values_are_refused_by_name);
    free(text);
    tr_model_free(model);
    return TT_DONE();
}
