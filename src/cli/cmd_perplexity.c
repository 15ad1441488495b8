/* trinity perplexity: llama.cpp's llama-perplexity method. The text is
 * tokenized once (with BOS when the model adds one); it is cut into
 * non-overlapping windows of n_ctx tokens; each window is evaluated from an
 * empty cache with its first token replaced by BOS, and scored on its second
 * half: the log-probability of token j+1 given tokens up to j, for j from
 * n_ctx/2 to n_ctx-2. PPL = exp(mean NLL), with the standard error of the
 * mean carried through exp, as llama.cpp prints it. */
#include "cli.h"
#include "gen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: trinity perplexity -m MODEL -f TEXTFILE [-c 512] [options]\n\n"
               "Perplexity of the model on a text, computed as llama.cpp's llama-perplexity does.\n\n"
               "  -f, --file FILE         the text\n"
               "  --chunks N              score at most N windows (default: all)\n");
    gen_flags_help(f, false);
}

/* log p(tok) under softmax(logits), as llama.cpp: float max, double sum of expf. */
static double log_softmax_at(const float *logits, int32_t n_vocab, int32_t tok) {
    float max = logits[0];
    for (int32_t j = 1; j < n_vocab; j++)
        if (logits[j] > max) max = logits[j];
    double sum = 0;
    for (int32_t j = 0; j < n_vocab; j++) sum += expf(logits[j] - max);
    return (double)(logits[tok] - max) - log(sum);
}

/* The scored tokens: position p's logits predict window[p + 1]. */
typedef struct score {
    const int32_t *window;
    int32_t n_vocab;
    double nll, nll2;
    int64_t count;
} score;

static void score_token(void *user, int32_t pos, const float *logits) {
    score *sc = user;
    const double lp = log_softmax_at(logits, sc->n_vocab, sc->window[pos + 1]);
    sc->nll -= lp;
    sc->nll2 += lp * lp;
    sc->count++;
}

int cmd_perplexity(int argc, char **argv) {
    gen_opts o;
    gen_opts_init(&o);
    o.n_ctx = 512;
    int32_t max_chunks = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--chunks")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "trinity perplexity: --chunks needs a value\n");
                return 2;
            }
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > (1L << 30)) {
                fprintf(stderr, "trinity perplexity: --chunks expects a positive integer, got '%s'\n", argv[i]);
                return 2;
            }
            max_chunks = (int32_t)v;
            continue;
        }
        int r = gen_parse_flag(&o, "perplexity", argc, argv, &i);
        if (r < 0) return 2;
        if (r == 0 || o.prompt) {
            fprintf(stderr, "trinity perplexity: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!o.model || !o.file) {
        fprintf(stderr, "trinity perplexity: -m MODEL and -f TEXTFILE are required\n");
        return 2;
    }
    if (o.n_ctx < 4) {
        fprintf(stderr, "trinity perplexity: -c must be at least 4\n");
        return 2;
    }

    tr_error err = {{0}};
    int rc = 1;
    size_t text_len = 0;
    char *text = gen_read_file(o.file, &text_len, &err);
    if (!text) {
        fprintf(stderr, "trinity perplexity: %s\n", err.msg);
        return 1;
    }
    tr_model *m = NULL;
    tr_engine *e = NULL;
    int32_t *toks = NULL, *probe = NULL;
    size_t n_toks = 0, n_probe = 0;
    if (tr_model_load(o.model, &m, &err)) goto fail;
    const tr_vocab *v = tr_model_vocab(m);
    const int32_t n_ctx = o.n_ctx, n_vocab = tr_model_n_vocab(m);
    /* One sequence per window; the engine hands the logits of the scored
     * half a slice at a time, so memory stays small even with a large
     * vocabulary (Gemma's 262144). */
    gen_opts eo = o;
    eo.n_batch = o.n_batch < n_ctx ? o.n_batch : n_ctx;
    eo.n_ctx = n_ctx;
    eo.model_draft = NULL; /* scoring a text: nothing to guess */
    eo.spec.kind = TR_SPEC_NONE;
    if (gen_engine(&eo, m, false, &e, &err)) goto fail;
    if (tr_tokenize(v, text, text_len, true, false, &toks, &n_toks, &err)) goto fail;
    /* Does the model add BOS? Then every window starts with it. */
    if (tr_tokenize(v, "", 0, true, false, &probe, &n_probe, &err)) goto fail;
    const bool add_bos = n_probe > 0 && probe[0] == tr_vocab_bos(v) && tr_vocab_bos(v) >= 0;
    if (n_toks < 2 * (size_t)n_ctx) {
        snprintf(err.msg, sizeof err.msg,
                 "%s tokenizes to %zu tokens; perplexity with -c %d needs at least %d", o.file, n_toks, n_ctx,
                 2 * n_ctx);
        goto fail;
    }
    int32_t n_chunk = (int32_t)(n_toks / (size_t)n_ctx);
    if (max_chunks > 0 && max_chunks < n_chunk) n_chunk = max_chunks;
    fprintf(stderr, "perplexity: %zu tokens, %d chunks of %d, scoring the second half of each\n", n_toks, n_chunk,
            n_ctx);
    score sc = {.n_vocab = n_vocab};
    const double t0 = gen_now();
    for (int32_t ci = 0; ci < n_chunk; ci++) {
        int32_t *w = toks + (size_t)ci * n_ctx;
        const int32_t saved = w[0];
        if (add_bos) w[0] = tr_vocab_bos(v);
        /* Context up to n_ctx/2, then every token scored on the next one.
         * The last token predicts nothing inside the window: it is not fed. */
        sc.window = w;
        tr_seq_params sp = {.prompt = w, .n_prompt = n_ctx - 1, .n_predict = 0, .no_cache = true,
                            .on_prompt_logits = score_token, .logits_from = n_ctx / 2, .user = &sc};
        gen_result res;
        tr_status st = gen_sequence(e, &sp, NULL, NULL, &res, &err);
        w[0] = saved;
        if (st) goto fail;
        fprintf(stderr, "[%d]%.4f,", ci + 1, exp(sc.nll / (double)sc.count));
        if (ci == 0) fprintf(stderr, " (%.2f s per chunk) ", gen_now() - t0);
    }
    const double nll = sc.nll, nll2 = sc.nll2;
    const int64_t count = sc.count;
    fprintf(stderr, "\n");
    const double mean = nll / (double)count, mean2 = nll2 / (double)count;
    const double ppl = exp(mean);
    const double var = mean2 - mean * mean;
    const double err_ppl = var > 0 ? sqrt(var / (double)(count - 1)) * ppl : 0.0;
    printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl, err_ppl);
    fprintf(stderr, "%lld tokens scored in %.2f s\n", (long long)count, gen_now() - t0);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "trinity perplexity: %s\n", err.msg);
    free(toks);
    free(probe);
    tr_engine_free(e);
    tr_model_free(m);
    free(text);
    return rc;
}
