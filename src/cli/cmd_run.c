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
    tr_engine *e = NULL;
    int32_t *toks = NULL;
    size_t n_toks = 0;
    tr_grammar *grammar = NULL;
    if (gen_grammar(&o, &grammar, &err)) goto fail;
    const double t0 = gen_now();
    if (gen_load_model(o.model, o.no_repack, &m, &err)) goto fail;
    if (gen_engine(&o, m, false, &e, &err)) goto fail;
    const double t_load = gen_now() - t0;
    const tr_vocab *v = tr_model_vocab(m);
    if (tr_tokenize(v, prompt, prompt_len, true, true, &toks, &n_toks, &err)) goto fail;
    if (n_toks == 0) {
        snprintf(err.msg, sizeof err.msg, "the prompt is empty and the model adds no BOS token: nothing to continue");
        goto fail;
    }
    const int32_t n_ctx = tr_context_n_ctx(tr_engine_context(e));
    if (o.n_window == 0 && n_toks >= (size_t)n_ctx) { /* streaming (--kv-window) slides past it */
        snprintf(err.msg, sizeof err.msg, "the prompt is %zu tokens, the context (-c) holds %d: no room to generate",
                 n_toks, n_ctx);
        goto fail;
    }

    gen_result res = {0};
    if (o.n_predict != 0) {
        gen_stream st = {.out = stdout, .vocab = v};
        tr_seq_params sp = {
            .prompt = toks, .n_prompt = (int32_t)n_toks, .n_predict = o.n_predict, .sampling = o.sp, .spec = o.spec,
            .grammar = grammar};
        if (gen_sequence(e, &sp, gen_stream_token, &st, &res, &err)) goto fail;
        gen_stream_flush(&st);
    }
    const int32_t n_gen = res.n_gen;
    const double t_prompt = res.t_prompt, t_gen = res.t_gen;
    fprintf(stderr, "\n\nload time: %.2f ms\n", t_load * 1e3);
    fprintf(stderr, "prompt: %zu tokens in %.2f ms (%.2f tokens/s)\n", n_toks, t_prompt * 1e3,
            t_prompt > 0 ? (double)n_toks / t_prompt : 0.0);
    fprintf(stderr, "generation: %d tokens in %.2f ms (%.2f tokens/s)\n", n_gen, t_gen * 1e3,
            t_gen > 0 ? n_gen / t_gen : 0.0);
    if (o.n_predict != 0) /* why it stopped: a base model rarely ends by itself, so say so */
        fprintf(stderr, "stopped: %s\n",
                res.finish == TR_FINISH_EOG       ? "the model ended its reply (end-of-generation token)"
                : res.finish == TR_FINISH_LENGTH  ? "at the length limit (-n)"
                : res.finish == TR_FINISH_CONTEXT ? "the context is full (-c)"
                                                  : "cancelled");
    gen_print_spec(stderr, &o, &res);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "trinity run: %s\n", err.msg);
    free(toks);
    tr_grammar_free(grammar);
    tr_engine_free(e);
    tr_model_free(o.draft);
    tr_model_free(m);
    free(file_text);
    return rc;
}
