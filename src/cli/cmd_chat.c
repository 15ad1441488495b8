/* trinity chat: an interactive conversation in the terminal. Each turn the
 * whole conversation is formatted with the model's chat template and
 * tokenized; only the tokens after the part the KV cache already holds are
 * evaluated. The reply streams to stdout; "> " prompts go to stderr. */
#include "cli.h"
#include "gen.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f, "usage: trinity chat -m MODEL [options]\n\n"
               "An interactive chat. Type a message and Enter; an empty line or end of input ends it.\n\n"
               "  --chat-format NAME      gemma, chatml, llama3 or llama2 (default: from tokenizer.chat_template)\n"
               "  -sys, --system-prompt T a system message\n");
    gen_flags_help(f, true);
}

typedef struct convo {
    tr_chat_msg *msgs;
    char **owned;
    size_t n, cap;
} convo;

static bool convo_add(convo *cv, const char *role, const char *content) {
    if (cv->n == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 16;
        tr_chat_msg *nm = realloc(cv->msgs, cap * sizeof *nm);
        if (!nm) return false;
        cv->msgs = nm;
        char **no = realloc(cv->owned, cap * sizeof *no);
        if (!no) return false;
        cv->owned = no;
        cv->cap = cap;
    }
    char *copy = strdup(content);
    if (!copy) return false;
    cv->owned[cv->n] = copy;
    cv->msgs[cv->n].role = role;
    cv->msgs[cv->n].content = copy;
    cv->n++;
    return true;
}

static void convo_free(convo *cv) {
    for (size_t i = 0; i < cv->n; i++) free(cv->owned[i]);
    free(cv->owned);
    free(cv->msgs);
}

int cmd_chat(int argc, char **argv) {
    gen_opts o;
    gen_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        int r = gen_parse_flag(&o, "chat", argc, argv, &i);
        if (r < 0) return 2;
        if (r == 0 || o.prompt || o.file) {
            fprintf(stderr, "trinity chat: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!o.model) {
        fprintf(stderr, "trinity chat: -m MODEL is required\n");
        return 2;
    }
    if (!o.seed_set) o.sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);

    tr_error err = {{0}};
    int rc = 1;
    tr_model *m = NULL;
    tr_context *c = NULL;
    tr_sampler *s = NULL;
    convo cv = {0};
    int32_t *cached = NULL; /* tokens the cache holds, in order */
    size_t n_cached = 0, cap_cached = 0;
    char *formatted = NULL, *reply = NULL;
    int32_t *toks = NULL;
    size_t n_toks = 0, reply_len = 0, reply_cap = 0;
    char line[8192];

    if (tr_model_load(o.model, &m, &err)) goto fail;
    tr_context_params cp = tr_context_default_params();
    cp.n_ctx = o.n_ctx;
    cp.n_batch = o.n_batch;
    cp.n_threads = o.n_threads;
    if (tr_context_new(m, &cp, &c, &err)) goto fail;
    const tr_vocab *v = tr_model_vocab(m);
    const int32_t n_ctx = tr_context_n_ctx(c);
    /* Check the template before the first message. */
    if (tr_chat_format(m, o.chat_format, NULL, 0, true, &formatted, &err)) goto fail;
    free(formatted);
    formatted = NULL;
    s = tr_sampler_new(&o.sp, tr_model_n_vocab(m));
    if (!s) {
        snprintf(err.msg, sizeof err.msg, "out of memory for the sampler");
        goto fail;
    }
    if (o.system && !convo_add(&cv, "system", o.system)) goto oom;

    for (;;) {
        fputs("> ", stderr);
        fflush(stderr);
        if (!fgets(line, sizeof line, stdin)) break;
        size_t ln = strlen(line);
        while (ln && (line[ln - 1] == '\n' || line[ln - 1] == '\r')) line[--ln] = 0;
        if (ln == 0) break;
        if (!convo_add(&cv, "user", line)) goto oom;
        if (tr_chat_format(m, o.chat_format, cv.msgs, cv.n, true, &formatted, &err)) goto fail;
        if (tr_tokenize(v, formatted, strlen(formatted), true, true, &toks, &n_toks, &err)) goto fail;
        free(formatted);
        formatted = NULL;
        /* Reuse what the cache already holds. */
        size_t common = 0;
        while (common < n_cached && common < n_toks && cached[common] == toks[common]) common++;
        if (common == n_toks && common > 0) common--; /* re-evaluate one token to get its logits */
        if (n_toks + 1 >= (size_t)n_ctx) {
            snprintf(err.msg, sizeof err.msg, "the conversation is %zu tokens, the context (-c) holds %d", n_toks,
                     n_ctx);
            goto fail;
        }
        tr_kv_seq_rm(c, 0, (int32_t)common, -1);
        if (gen_eval(c, o.n_batch, toks + common, (int32_t)(n_toks - common), (int32_t)common, 0, &err)) goto fail;
        if (cap_cached < (size_t)n_ctx) {
            free(cached);
            cap_cached = (size_t)n_ctx;
            cached = malloc(cap_cached * sizeof *cached);
            if (!cached) goto oom;
        }
        memcpy(cached, toks, n_toks * sizeof *toks);
        n_cached = n_toks;
        for (size_t i = 0; i < n_toks; i++) tr_sampler_accept(s, toks[i]);

        gen_stream st = {.out = stdout};
        reply_len = 0;
        int32_t n_gen = 0;
        for (;;) {
            int32_t id = tr_sampler_sample(s, tr_get_logits(c, -1));
            if (tr_vocab_is_eog(v, id)) break;
            gen_stream_put(&st, v, id);
            char piece[256];
            size_t pn = tr_token_to_piece(v, id, false, piece, sizeof piece);
            if (pn > sizeof piece) pn = sizeof piece;
            if (reply_len + pn + 1 > reply_cap) {
                size_t nc = (reply_cap ? reply_cap * 2 : 1024) + pn;
                char *nr = realloc(reply, nc);
                if (!nr) goto oom;
                reply = nr;
                reply_cap = nc;
            }
            memcpy(reply + reply_len, piece, pn);
            reply_len += pn;
            n_gen++;
            if (o.n_predict > 0 && n_gen >= o.n_predict) break;
            int32_t pos = (int32_t)n_cached;
            if (pos >= n_ctx) {
                gen_stream_flush(&st);
                fprintf(stderr, "\n[context full]\n");
                break;
            }
            tr_batch b = {.n_tokens = 1, .token = &id, .pos = &pos, .seq_id = &(int32_t){0}, .logits = NULL};
            if (tr_decode(c, &b, &err)) goto fail;
            cached[n_cached++] = id;
        }
        gen_stream_flush(&st);
        fputc('\n', stdout);
        fflush(stdout);
        if (reply) reply[reply_len] = 0;
        if (!convo_add(&cv, "assistant", reply ? reply : "")) goto oom;
        free(toks);
        toks = NULL;
    }
    rc = 0;
    goto done;
oom:
    snprintf(err.msg, sizeof err.msg, "out of memory");
fail:
    fprintf(stderr, "trinity chat: %s\n", err.msg);
done:
    free(toks);
    free(formatted);
    free(reply);
    free(cached);
    convo_free(&cv);
    tr_sampler_free(s);
    tr_context_free(c);
    tr_model_free(m);
    return rc;
}
