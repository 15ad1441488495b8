/* trinity imatrix — an importance matrix for `trinity quantize --imatrix`
 * (and llama-quantize's), computed as llama-imatrix computes it: the text's
 * tokens in chunks of -c (each chunk's first token replaced by BOS, from an
 * empty cache, in batches of -b), and for every weight of a block ("blk.*",
 * with --process-output also output.weight) the sum over the tokens of each
 * input column's square and the count of tokens, from products of 16 tokens
 * or more. Written in llama-imatrix's GGUF layout: <weight>.in_sum2 and
 * <weight>.counts (F32), imatrix.datasets, imatrix.chunk_count,
 * imatrix.chunk_size. A mixture of experts' 3-D matrices get a row of sums
 * and a count per expert (every batch, as llama-imatrix's MUL_MAT_ID). */
#include "cli.h"
#include "gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: trinity imatrix -m MODEL -f TEXT [-o imatrix.gguf] [-c 512] [-b 512] [--chunks N] [-t T]\n"
               "                       [--process-output]\n"
               "  -c N        tokens per chunk (each from an empty cache, the first one BOS)\n"
               "  --chunks N  at most N chunks (default: all the text holds)\n"
               "  --process-output  also collect output.weight's inputs\n");
}

typedef struct entry {
    char *name;
    float *sum;     /* [n_mat][cols] */
    float *count;   /* [n_mat]: tokens (dense) or choices of that expert, as F32 in the file */
    int64_t cols, n_mat;
} entry;

typedef struct collector {
    entry *e;
    int n, cap;
    bool process_output, failed;
    char bad[160];
} collector;

static entry *find_entry(collector *c, const char *weight, int64_t cols, int64_t n_mat) {
    for (int i = 0; i < c->n; i++) {
        entry *e = &c->e[i];
        if (strcmp(e->name, weight)) continue;
        if (e->cols != cols || e->n_mat != n_mat) {
            c->failed = true;
            snprintf(c->bad, sizeof c->bad, "%s: inputs of %lld x %lld and %lld x %lld", weight, (long long)e->cols,
                     (long long)e->n_mat, (long long)cols, (long long)n_mat);
            return NULL;
        }
        return e;
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 64;
        entry *ne = realloc(c->e, sizeof *ne * (size_t)cap);
        if (!ne) goto oom;
        c->e = ne, c->cap = cap;
    }
    entry *e = &c->e[c->n];
    *e = (entry){.name = strdup(weight), .sum = calloc((size_t)(cols * n_mat), sizeof(float)),
                 .count = calloc((size_t)n_mat, sizeof(float)), .cols = cols, .n_mat = n_mat};
    if (!e->name || !e->sum || !e->count) {
        free(e->name), free(e->sum), free(e->count);
        goto oom;
    }
    c->n++;
    return e;
oom:
    c->failed = true;
    snprintf(c->bad, sizeof c->bad, "out of memory");
    return NULL;
}

/* As llama-imatrix's collector: a dense product adds each token's squared
 * inputs; an experts' product adds each choice's to its expert's row, the
 * choices taken slot by slot and the tokens in order within a slot, and
 * counts the choices per expert. */
static void observe(void *user, const tr_matmul_seen *s) {
    collector *c = user;
    if (c->failed) return;
    if (!s->ids && strncmp(s->weight, "blk.", 4) && !(c->process_output && !strcmp(s->weight, "output.weight")))
        return;
    const int64_t cols = s->cols, n_mat = s->ids ? s->n_expert : 1;
    entry *e = find_entry(c, s->weight, cols, n_mat);
    if (!e) return;
    if (!s->ids) {
        for (int64_t t = 0; t < s->n_tokens; t++)
            for (int64_t j = 0; j < cols; j++) e->sum[j] += s->x[t * cols + j] * s->x[t * cols + j];
        e->count[0] += (float)s->n_tokens;
    } else {
        for (int64_t k = 0; k < s->n_used; k++)
            for (int64_t t = 0; t < s->n_tokens; t++) {
                const int32_t ex = s->ids[t * s->n_used + k];
                const float *x = s->x + (s->per_choice ? t * s->n_used + k : t) * cols;
                float *acc = e->sum + (int64_t)ex * cols;
                for (int64_t j = 0; j < cols; j++) acc[j] += x[j] * x[j];
                e->count[ex] += 1.0f;
            }
    }
    for (int64_t j = 0; j < cols * n_mat; j++)
        if (!isfinite(e->sum[j])) {
            c->failed = true;
            snprintf(c->bad, sizeof c->bad, "non-finite values in the inputs of %s", s->weight);
            return;
        }
}

static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || x < lo || x > hi) {
        fprintf(stderr, "trinity imatrix: %s wants a whole number from %ld to %ld, not '%s'\n", flag, lo, hi,
                v ? v : "(nothing)");
        return -1;
    }
    *out = x;
    return 0;
}

int cmd_imatrix(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *out = "imatrix.gguf";
    long n_ctx = 512, n_batch = 0, max_chunks = -1, threads = 0;
    collector col = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--process-output")) {
            col.process_output = true;
            continue;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file")) file = v;
        else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = v;
        else if (!strcmp(a, "-c")) { if (parse_long(a, v, 16, 1 << 20, &n_ctx)) return 2; }
        else if (!strcmp(a, "-b")) { if (parse_long(a, v, 16, 1 << 20, &n_batch)) return 2; }
        else if (!strcmp(a, "--chunks")) { if (parse_long(a, v, 1, 1 << 30, &max_chunks)) return 2; }
        else if (!strcmp(a, "-t")) { if (parse_long(a, v, 1, 256, &threads)) return 2; }
        else {
            fprintf(stderr, "trinity imatrix: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!v) {
            fprintf(stderr, "trinity imatrix: %s needs a value\n", a);
            return 2;
        }
        i++;
    }
    if (!model || !file) {
        fprintf(stderr, "trinity imatrix: -m MODEL and -f TEXT are required\n");
        usage(stderr);
        return 2;
    }
    if (n_batch == 0 || n_batch > n_ctx) n_batch = n_ctx < 512 ? n_ctx : 512;

    tr_error err = {{0}};
    int rc = 1;
    tr_model *m = NULL;
    tr_context *c = NULL;
    char *text = NULL;
    int32_t *toks = NULL, *pos = NULL, *seq = NULL;
    size_t n_toks = 0, len = 0;
    tr_gguf_writer *w = NULL;
    if (tr_model_load(model, &m, &err) != TR_OK) goto fail;
    if (!(text = gen_read_file(file, &len, &err))) goto fail;
    const tr_vocab *v = tr_model_vocab(m);
    if (tr_tokenize(v, text, len, true, false, &toks, &n_toks, &err) != TR_OK) goto fail;
    long n_chunks = (long)(n_toks / (size_t)n_ctx);
    if (max_chunks > 0 && n_chunks > max_chunks) n_chunks = max_chunks;
    if (n_chunks < 1) {
        snprintf(err.msg, sizeof err.msg, "%s: %zu tokens, fewer than one chunk of %ld (-c)", file, n_toks, n_ctx);
        goto fail;
    }
    tr_context_params cp = tr_context_default_params();
    cp.n_ctx = (int32_t)n_ctx;
    cp.n_batch = (int32_t)n_batch;
    cp.n_threads = (int32_t)(threads > 0 ? threads : sysconf(_SC_NPROCESSORS_ONLN));
    if (tr_context_new(m, &cp, &c, &err) != TR_OK) goto fail;
    if (tr_context_set_matmul_observer(c, observe, &col, &err) != TR_OK) goto fail;
    pos = malloc(sizeof *pos * (size_t)n_batch);
    seq = calloc((size_t)n_batch, sizeof *seq);
    /* with --process-output every token's logits, so that output.weight sees the whole batch (as llama-imatrix,
     * which computes the chunk's perplexity) */
    int8_t *want = malloc((size_t)n_batch);
    if (want) memset(want, 1, (size_t)n_batch);
    if (!pos || !seq || !want) {
        free(want);
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto fail;
    }
    const int32_t bos = tr_vocab_bos(v);
    double t0 = gen_now();
    for (long k = 0; k < n_chunks; k++) {
        int32_t *chunk = toks + (size_t)k * (size_t)n_ctx;
        if (bos >= 0) chunk[0] = bos;
        tr_kv_seq_rm(c, -1, 0, -1);
        for (long b = 0; b < n_ctx; b += n_batch) {
            int32_t nb = (int32_t)(n_ctx - b < n_batch ? n_ctx - b : n_batch);
            for (int32_t i = 0; i < nb; i++) pos[i] = (int32_t)(b + i);
            tr_batch batch = {.n_tokens = nb, .token = chunk + b, .pos = pos, .seq_id = seq,
                              .logits = col.process_output ? want : NULL};
            if (tr_decode(c, &batch, &err) != TR_OK) {
                free(want);
                goto fail;
            }
            if (col.failed) {
                free(want);
                snprintf(err.msg, sizeof err.msg, "%s", col.bad);
                goto fail;
            }
        }
        if (isatty(2)) fprintf(stderr, "\rtrinity imatrix: chunk %ld of %ld (%.1f s)", k + 1, n_chunks, gen_now() - t0);
    }
    if (isatty(2)) fputc('\n', stderr);
    free(want);

    if (!(w = tr_gguf_writer_new())) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto fail;
    }
    /* imatrix.datasets: one string, in the container's array layout (u64 length, bytes) */
    size_t fl = strlen(file);
    uint8_t *raw = malloc(8 + fl);
    if (!raw) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto fail;
    }
    uint64_t fl64 = fl, off0 = 0;
    memcpy(raw, &fl64, 8);
    memcpy(raw + 8, file, fl);
    tr_gguf_value ds = {.type = TR_GGUF_ARRAY};
    ds.v.arr.type = TR_GGUF_STRING;
    ds.v.arr.n = 1;
    ds.v.arr.data = raw;
    ds.v.arr.str_off = &off0;
    if (tr_gguf_writer_set_str(w, "general.type", "imatrix", &err) != TR_OK ||
        tr_gguf_writer_set(w, "imatrix.datasets", &ds, &err) != TR_OK ||
        tr_gguf_writer_set_u32(w, "imatrix.chunk_count", (uint32_t)n_chunks, &err) != TR_OK ||
        tr_gguf_writer_set_u32(w, "imatrix.chunk_size", (uint32_t)n_ctx, &err) != TR_OK) {
        free(raw);
        goto fail;
    }
    free(raw);
    for (int i = 0; i < col.n && err.msg[0] == 0; i++) {
        char name[600];
        int64_t ne_s[2] = {col.e[i].cols, col.e[i].n_mat}, ne_c[2] = {1, col.e[i].n_mat};
        snprintf(name, sizeof name, "%s.in_sum2", col.e[i].name);
        if (tr_gguf_writer_add_tensor(w, name, TR_TYPE_F32, 2, ne_s, col.e[i].sum, &err) != TR_OK) break;
        snprintf(name, sizeof name, "%s.counts", col.e[i].name);
        if (tr_gguf_writer_add_tensor(w, name, TR_TYPE_F32, 2, ne_c, col.e[i].count, &err) != TR_OK) break;
    }
    if (!err.msg[0] && tr_gguf_writer_write(w, out, &err) == TR_OK) {
        fprintf(stderr, "trinity imatrix: %s: %d weights, %ld chunks of %ld tokens\n", out, col.n, n_chunks, n_ctx);
        rc = 0;
    }
    if (rc == 0) goto done;
fail:
    fprintf(stderr, "trinity imatrix: %s\n", err.msg);
done:
    for (int i = 0; i < col.n; i++) free(col.e[i].name), free(col.e[i].sum), free(col.e[i].count);
    free(col.e);
    tr_gguf_writer_free(w);
    free(pos), free(seq), free(toks), free(text);
    tr_context_free(c);
    tr_model_free(m);
    return rc;
}
