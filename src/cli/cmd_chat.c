/* trinity chat: an interactive conversation in the terminal. Each turn the
 * whole conversation is rendered with the model's chat template (its
 * tokenizer.chat_template, --chat-template, or for a file without one a
 * built-in format, with a warning) and
 * tokenized; only the tokens after the part the KV cache already holds are
 * evaluated. The reply streams to stdout; "> " prompts go to stderr.
 *
 * Context shift: when the conversation and the room for a reply (-n, else a
 * quarter of the context) would not fit, its oldest whole turns are dropped
 * (tr_chat_fit: never the system prompt, never half a message) and the
 * conversation goes on without them; stderr says so. The prefix cache still
 * holds what the shortened conversation begins with (the system prompt). */
#include "cli.h"
#include "gen.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f, "usage: trinity chat -m MODEL [options]\n\n"
               "An interactive chat. Type a message and Enter; an empty line or end of input ends it.\n\n"
               "  --chat-template F|NAME  a Jinja chat template file, or a built-in format: gemma, chatml, llama3,\n"
               "                          llama2 (default: the model's tokenizer.chat_template; a file without one\n"
               "                          gets the built-in format its vocabulary suggests, with a warning)\n"
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

/* Forget messages [from, from + k). */
static void convo_drop(convo *cv, size_t from, size_t k) {
    for (size_t i = from; i < from + k; i++) free(cv->owned[i]);
    memmove(cv->owned + from, cv->owned + from + k, (cv->n - from - k) * sizeof *cv->owned);
    memmove(cv->msgs + from, cv->msgs + from + k, (cv->n - from - k) * sizeof *cv->msgs);
    cv->n -= k;
}

/* tr_chat_fit's renderer and tokenizer: the chat template (the file's, --chat-template, or the built-in
 * fallback) over the messages as JSON, and the model's vocabulary. */
typedef struct chat_ctx {
    const tr_model *m;
    const tr_chat_template *ct;
    const tr_chat_apply_opts *ao;
} chat_ctx;

static tr_status render(void *user, const tr_chat_msg *msgs, size_t n, char **out, tr_error *err) {
    const chat_ctx *c = user;
    return tr_chat_template_apply_msgs(c->ct, msgs, n, c->ao, out, err);
}

static tr_status tokenize(void *user, const char *text, size_t len, int32_t **ids, size_t *n, tr_error *err) {
    const chat_ctx *c = user;
    return tr_tokenize(tr_model_vocab(c->m), text, len, true, true, ids, n, err);
}

static void convo_free(convo *cv) {
    for (size_t i = 0; i < cv->n; i++) free(cv->owned[i]);
    free(cv->owned);
    free(cv->msgs);
}

/* The reply of a turn: streamed to stdout and kept for the conversation. */
typedef struct reply_buf {
    gen_stream st;
    char *p;
    size_t len, cap;
    bool ok;
} reply_buf;

static bool reply_token(void *user, int32_t id) {
    reply_buf *r = user;
    gen_stream_put(&r->st, r->st.vocab, id);
    char piece[256];
    size_t pn = tr_token_to_piece(r->st.vocab, id, false, piece, sizeof piece);
    if (pn > sizeof piece) pn = sizeof piece;
    if (r->len + pn + 1 > r->cap) {
        size_t nc = (r->cap ? r->cap * 2 : 1024) + pn;
        char *np = realloc(r->p, nc);
        if (!np) return r->ok = false;
        r->p = np;
        r->cap = nc;
    }
    memcpy(r->p + r->len, piece, pn);
    r->len += pn;
    r->p[r->len] = 0;
    return true;
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
    tr_engine *e = NULL;
    convo cv = {0};
    tr_chat_template *ct = NULL;
    tr_chat_apply_opts ao = {.add_generation_prompt = true, .strip_special = true};
    int32_t *toks = NULL;
    size_t n_toks = 0;
    reply_buf reply = {0};
    char line[8192];

    if (gen_load_model(o.model, o.no_repack, &m, &err)) goto fail;
    /* The prefix cache keeps the conversation between turns: each turn's
     * prompt (the whole conversation, rendered again) finds every block the
     * earlier turns computed, their replies included. */
    if (gen_engine(&o, m, true, &e, &err)) goto fail;
    const tr_vocab *v = tr_model_vocab(m);
    const int32_t n_ctx = tr_context_n_ctx(tr_engine_context(e));
    /* The template, checked before the first message. */
    if (tr_chat_template_load(m, o.chat_format, &ct, &err)) goto fail;
    if (tr_chat_template_is_builtin(ct) && !o.chat_format)
        fprintf(stderr, "trinity chat: warning: %s (replies may not end)\n", tr_chat_template_describe(ct));
    if (o.system && !convo_add(&cv, "system", o.system)) goto oom;

    for (uint64_t turn = 0;; turn++) {
        fputs("> ", stderr);
        fflush(stderr);
        if (!fgets(line, sizeof line, stdin)) break;
        size_t ln = strlen(line);
        while (ln && (line[ln - 1] == '\n' || line[ln - 1] == '\r')) line[--ln] = 0;
        if (ln == 0) break;
        if (!convo_add(&cv, "user", line)) goto oom;
        chat_ctx cc = {.m = m, .ct = ct, .ao = &ao};
        size_t dropped = 0;
        const int32_t room = o.n_window > 0 ? 0 : tr_chat_room(o.n_predict, n_ctx);
        if (tr_chat_fit(&cc, render, tokenize, cv.msgs, cv.n, o.n_window > 0 ? INT32_MAX : n_ctx, room, &toks,
                        &n_toks, &dropped, &err))
            goto fail;
        if (dropped) {
            const size_t n_sys = o.system ? 1 : 0;
            convo_drop(&cv, n_sys, dropped);
            fprintf(stderr, "[context shift: the %zu oldest messages were dropped to fit the context]\n", dropped);
        }
        if (o.n_window == 0 && n_toks + 1 >= (size_t)n_ctx) {
            snprintf(err.msg, sizeof err.msg,
                     "the conversation is %zu tokens even without its earlier turns, the context (-c) holds %d",
                     n_toks, n_ctx);
            goto fail;
        }
        reply.len = 0;
        if (reply.p) reply.p[0] = 0;
        reply.ok = true;
        reply.st = (gen_stream){.out = stdout, .vocab = v};
        tr_seq_params sp = {
            .prompt = toks, .n_prompt = (int32_t)n_toks, .n_predict = o.n_predict, .sampling = o.sp, .spec = o.spec};
        sp.sampling.seed = o.sp.seed + turn; /* each turn its own stream of random numbers, reproducible */
        gen_result res;
        if (gen_sequence(e, &sp, reply_token, &reply, &res, &err)) goto fail;
        if (!reply.ok) goto oom;
        gen_stream_flush(&reply.st);
        if (res.finish == TR_FINISH_CONTEXT) fprintf(stderr, "\n[context full]");
        else if (res.finish == TR_FINISH_LENGTH) fprintf(stderr, "\n[reply cut at the length limit: %d tokens (-n)]", o.n_predict);
        if (o.spec.kind != TR_SPEC_NONE) fputc('\n', stderr), gen_print_spec(stderr, &o, &res);
        fputc('\n', stdout);
        fflush(stdout);
        if (!convo_add(&cv, "assistant", reply.p ? reply.p : "")) goto oom;
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
    tr_chat_template_free(ct);
    free(reply.p);
    convo_free(&cv);
    tr_engine_free(e);
    tr_model_free(o.draft);
    tr_model_free(m);
    return rc;
}
