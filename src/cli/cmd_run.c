/* trinity run: generate a continuation of a prompt, streamed to stdout (only
 * the generated text); timings on stderr, as llama.cpp's tools print them. */
#include "cli.h"
#include "gen.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f, "usage: trinity run -m MODEL (-p PROMPT | -f FILE) [options]\n\n"
               "Generates a continuation of the prompt and streams it to stdout.\n\n"
               "  -p, --prompt TEXT       the prompt\n"
               "  -f, --file FILE         read the prompt from a file\n");
    gen_flags_help(f, true);
}

int cmd_run(int argc, char **argv) {
    gen_opts o;
    gen_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        int r = gen_parse_flag(&o, "run", argc, argv, &i);
        if (r < 0) return 2;
        if (r == 0) {
            fprintf(stderr, "trinity run: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!o.model) {
        fprintf(stderr, "trinity run: -m MODEL is required\n");
        return 2;
    }
    if (o.prompt && o.file) {
        fprintf(stderr, "trinity run: give -p or -f, not both\n");
        return 2;
    }
    if (!o.prompt && !o.file) {
        fprintf(stderr, "trinity run: -p PROMPT or -f FILE is required\n");
        return 2;
    }
    if (!o.seed_set) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);

    tr_error err = {{0}};
    char *file_text = NULL;
    size_t prompt_len = 0;
    const char *prompt = o.prompt;
    if (o.file) {
        file_text = gen_read_file(o.file, &prompt_len, &err);
        if (!file_text) {
            fprintf(stderr, "trinity run: %s\n", err.msg);
            return 1;
        }
        prompt = file_text;
    } else {
        prompt_len = strlen(prompt);
    }

    int rc = 1;
    tr_model *m = NULL;
    tr_context *c = NULL;
    tr_sampler *s = NULL;
    int32_t *toks = NULL;
    size_t n_toks = 0;
    const double t0 = gen_now();
    if (tr_model_load(o.model, &m, &err)) goto fail;
    tr_context_params cp = tr_context_default_params();
    cp.n_ctx = o.n_ctx;
    cp.n_batch = o.n_batch;
    cp.n_threads = o.n_threads;
    if (tr_context_new(m, &cp, &c, &err)) goto fail;
    const double t_load = gen_now() - t0;
    const tr_vocab *v = tr_model_vocab(m);
    if (tr_tokenize(v, prompt, prompt_len, true, true, &toks, &n_toks, &err)) goto fail;
    if (n_toks == 0) {
        snprintf(err.msg, sizeof err.msg, "the prompt is empty and the model adds no BOS token: nothing to continue");
        goto fail;
    }
    const int32_t n_ctx = tr_context_n_ctx(c);
    if (n_toks >= (size_t)n_ctx) {
        snprintf(err.msg, sizeof err.msg, "the prompt is %zu tokens, the context (-c) holds %d: no room to generate",
                 n_toks, n_ctx);
        goto fail;
    }
    s = tr_sampler_new(&o.sp, tr_model_n_vocab(m));
    if (!s) {
        snprintf(err.msg, sizeof err.msg, "out of memory for the sampler");
        goto fail;
    }
    for (size_t i = 0; i < n_toks; i++) tr_sampler_accept(s, toks[i]);

    int32_t n_gen = 0;
    double t_prompt = 0, t_gen = 0;
    if (o.n_predict != 0) {
        const double tp = gen_now();
        if (gen_eval(c, o.n_batch, toks, (int32_t)n_toks, 0, 0, &err)) goto fail;
        t_prompt = gen_now() - tp;
        gen_stream st = {.out = stdout};
        const double tg = gen_now();
        int32_t pos = (int32_t)n_toks;
        for (;;) {
            int32_t id = tr_sampler_sample(s, tr_get_logits(c, -1));
            if (tr_vocab_is_eog(v, id)) break;
            gen_stream_put(&st, v, id);
            n_gen++;
            if (o.n_predict > 0 && n_gen >= o.n_predict) break;
            if (pos >= n_ctx) break; /* context full */
            tr_batch b = {.n_tokens = 1, .token = &id, .pos = &pos, .seq_id = &(int32_t){0}, .logits = NULL};
            if (tr_decode(c, &b, &err)) goto fail;
            pos++;
        }
        gen_stream_flush(&st);
        t_gen = gen_now() - tg;
    }
    fprintf(stderr, "\n\nload time: %.2f ms\n", t_load * 1e3);
    fprintf(stderr, "prompt: %zu tokens in %.2f ms (%.2f tokens/s)\n", n_toks, t_prompt * 1e3,
            t_prompt > 0 ? (double)n_toks / t_prompt : 0.0);
    fprintf(stderr, "generation: %d tokens in %.2f ms (%.2f tokens/s)\n", n_gen, t_gen * 1e3,
            t_gen > 0 ? n_gen / t_gen : 0.0);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "trinity run: %s\n", err.msg);
    free(toks);
    tr_sampler_free(s);
    tr_context_free(c);
    tr_model_free(m);
    free(file_text);
    return rc;
}
