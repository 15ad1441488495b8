/* trinity perplexity: llama.cpp's llama-perplexity method. The text is
 * tokenized once (with BOS when the model adds one); it is cut into
 * non-overlapping windows of n_ctx tokens; each window is evaluated from an
 * empty cache with its first token replaced by BOS, and scored on its second
 * half: the log-probability of token j+1 given tokens up to j, for j from
 * n_ctx/2 to n_ctx-2. PPL = exp(mean NLL), with the standard error of the
 * mean carried through exp, as llama.cpp prints it.
 *
 * Streaming mode (--kv-window W [--kv-sinks N]): the whole text goes
 * through one sequence whose cache slides (StreamingLLM's evaluation): every
 * token from the second on is scored given everything the rolling cache
 * still holds. The perplexity of each run of --ppl-stride tokens (default
 * 1024) is printed with the process's resident memory at its end, one line
 * each on stdout ("window i: tokens a-b ppl P rss_kib R"), then the whole. */
#include "cli.h"
#include "gen.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: trinity perplexity -m MODEL -f TEXTFILE [-c 512] [options]\n\n"
               "Perplexity of the model on a text, computed as llama.cpp's llama-perplexity does.\n\n"
               "  -f, --file FILE         the text\n"
               "  --chunks N              score at most N windows (default: all)\n"
               "  --ppl-stride N          streaming mode (--kv-window): report every N tokens (default 1024)\n");
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

/* Resident memory of this process in KiB (/proc/self/status VmRSS), or -1. */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

/* Streaming mode: the per-stride figures as the logits arrive. */
typedef struct stream_score {
    score all;
    int32_t stride, n_last; /* n_last: positions scored in all */
    double w_nll;
    int64_t w_count, w_first;
    int32_t w_index;
} stream_score;

static void stream_token(void *user, int32_t pos, const float *logits) {
    stream_score *ss = user;
    const double before = ss->all.nll;
    score_token(&ss->all, pos, logits);
    ss->w_nll += ss->all.nll - before;
    if (++ss->w_count == ss->stride || pos + 1 == ss->n_last) {
        printf("window %d: tokens %lld-%lld ppl %.4f rss_kib %ld\n", ss->w_index, (long long)ss->w_first,
               (long long)pos + 1, exp(ss->w_nll / (double)ss->w_count), rss_kib());
        fflush(stdout);
        ss->w_index++;
        ss->w_first = pos + 2;
        ss->w_nll = 0;
        ss->w_count = 0;
    }
}

int cmd_perplexity(int argc, char **argv) {
    gen_opts o;
    gen_opts_init(&o);
    o.n_ctx = 512;
    int32_t max_chunks = -1, stride = 1024;
    bool c_given = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--ppl-stride")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "trinity perplexity: --ppl-stride needs a value\n");
                return 2;
            }
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > (1L << 30)) {
                fprintf(stderr, "trinity perplexity: --ppl-stride expects a positive integer, got '%s'\n", argv[i]);
                return 2;
            }
            stride = (int32_t)v;
            continue;
        }
        if (!strcmp(argv[i], "-c") || !strcmp(argv[i], "--ctx-size")) c_given = true;
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
    if (o.n_window > 0 && !c_given) o.n_ctx = 0; /* streaming: the pool is the window */
    if (o.n_window == 0 && o.n_sinks > 0) {
        fprintf(stderr, "trinity perplexity: --kv-sinks needs --kv-window\n");
        return 2;
    }
    if (o.n_window == 0 && o.n_ctx < 4) {
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
    if (gen_load_model(o.model, o.no_repack, &m, &err)) goto fail;
    const tr_vocab *v = tr_model_vocab(m);
    if (o.n_window > 0) {
        gen_opts eo = o;
        eo.model_draft = NULL;
        eo.spec.kind = TR_SPEC_NONE;
        if (gen_engine(&eo, m, false, &e, &err)) goto fail;
        if (tr_tokenize(v, text, text_len, true, false, &toks, &n_toks, &err)) goto fail;
        if (n_toks < 2 || n_toks > INT32_MAX / 2) {
            snprintf(err.msg, sizeof err.msg, "%s tokenizes to %zu tokens; streaming perplexity needs 2 to %d", o.file,
                     n_toks, INT32_MAX / 2);
            goto fail;
        }
        int32_t sinks, window;
        tr_context_stream(tr_engine_context(e), &sinks, &window);
        fprintf(stderr,
                "perplexity (streaming): %zu tokens through a cache of %d sinks + a window of at least %d (%d "
                "positions), reported every %d\n",
                n_toks, sinks, window, tr_context_n_ctx(tr_engine_context(e)), stride);
        stream_score ss = {.all = {.window = toks, .n_vocab = tr_model_n_vocab(m)},
                           .stride = stride,
                           .n_last = (int32_t)n_toks - 1,
                           .w_first = 1};
        tr_seq_params sp = {.prompt = toks, .n_prompt = (int32_t)n_toks - 1, .n_predict = 0, .no_cache = true,
                            .on_prompt_logits = stream_token, .logits_from = 0, .user = &ss};
        const double t0 = gen_now();
        gen_result res;
        if (gen_sequence(e, &sp, NULL, NULL, &res, &err)) goto fail;
        const double mean = ss.all.nll / (double)ss.all.count, mean2 = ss.all.nll2 / (double)ss.all.count;
        const double ppl = exp(mean), var = mean2 - mean * mean;
        printf("Final estimate: PPL = %.4f +/- %.5f\n", ppl,
               var > 0 && ss.all.count > 1 ? sqrt(var / (double)(ss.all.count - 1)) * ppl : 0.0);
        fprintf(stderr, "%lld tokens scored in %.2f s\n", (long long)ss.all.count, gen_now() - t0);
        rc = 0;
        goto fail;
    }
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
