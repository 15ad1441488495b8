/* trinity serve: the OpenAI-compatible HTTP server (src/server) over the
 * engine of include/trinity.h.
 *
 * The main thread only waits for signals. The server listens at once (so
 * /health can say 503 while the model loads); a loader thread loads the
 * model, makes the context with one sequence per --parallel slot and hands
 * the engine to the server. SIGINT/SIGTERM: stop accepting, let in-flight
 * generations finish for --shutdown-grace seconds, cancel the rest, exit 0. */
#include "cli.h"
#include "gen.h"
#include "server/server.h"
#include "server/tools.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------ the engine, as srv_engine */

typedef struct engine {
    tr_model *model, *draft;
    tr_chat_template *chat; /* the file's template, --chat-template, or the built-in fallback */
    tr_engine *eng;
    const tr_vocab *vocab;
    int32_t n_vocab;
} engine;

static int64_t e_submit(void *self, const tr_seq_params *p, tr_error *err) {
    return tr_engine_submit(((engine *)self)->eng, p, err);
}
static tr_status e_step(void *self, tr_step_stats *st, tr_error *err) {
    return tr_engine_step(((engine *)self)->eng, st, err);
}
static int32_t e_take(void *self, int64_t id, int32_t *tokens, int32_t cap, tr_seq_info *info) {
    return tr_engine_take(((engine *)self)->eng, id, tokens, cap, info);
}
static const float *e_logits(void *self, int64_t id) { return tr_engine_logits(((engine *)self)->eng, id); }
static void e_release(void *self, int64_t id) { tr_engine_cancel(((engine *)self)->eng, id, true); }
static void e_kv_stats(void *self, tr_kv_stats *out) {
    tr_context_kv_stats(tr_engine_context(((engine *)self)->eng), out);
}
/* As llama.cpp's server: BOS as the model asks, special-token text parsed
 * (a chat template's markers are tokens, not words). */
static tr_status e_tokenize(void *self, const char *text, size_t len, int32_t **ids, size_t *n, tr_error *err) {
    return tr_tokenize(((engine *)self)->vocab, text, len, true, true, ids, n, err);
}
/* A Jinja template gets the messages and tools as sent. A built-in format
 * knows neither tools nor tool turns: it gets the server's plain messages,
 * where tool results and calls are written in the default (Hermes) form and
 * the tools are described in the system text (src/server/tools.c). */
static tr_status e_chat(void *self, const tr_chat_msg *m, size_t n, const char *messages_json, const char *tools_json,
                        char **out, tr_error *err) {
    engine *e = self;
    tr_chat_apply_opts o = {.tools_json = tools_json, .add_generation_prompt = true, .strip_special = true};
    if (!tr_chat_template_is_builtin(e->chat)) return tr_chat_template_apply(e->chat, messages_json, &o, out, err);
    o.tools_json = NULL;
    return tr_chat_template_apply_msgs(e->chat, m, n, &o, out, err);
}
static size_t e_piece(void *self, int32_t id, char *buf, size_t cap) {
    return tr_token_to_piece(((engine *)self)->vocab, id, false, buf, cap);
}

/* ------------------------------------------------------------- options */

typedef struct opts {
    const char *model;
    srv_config cfg;
    int32_t n_ctx, n_ctx_seq, n_batch, n_threads, kv_block, n_sinks, n_window;
    int32_t type_k, type_v;
    bool no_kv_rot;
    bool no_prefix_cache;
    bool no_repack;
    tr_spec_params spec;
    const char *model_draft;
    const char *chat_template; /* --chat-template FILE|NAME */
} opts;

static void usage(FILE *f) {
    fprintf(f,
            "usage: trinity serve -m MODEL [options]\n"
            "\n"
            "An OpenAI-compatible HTTP server: POST /v1/chat/completions, POST /v1/completions,\n"
            "GET /v1/models, GET /health, GET /metrics, POST /apply-template. Point any OpenAI client at\n"
            "http://HOST:PORT/v1.\n"
            "\n"
            "  -m, --model PATH          GGUF model file (required)\n"
            "      --host ADDR           address to listen on (default 127.0.0.1)\n"
            "      --port N              port (default 8080; 0 picks a free one)\n"
            "      --alias NAME          model name in /v1/models and requests (default: the file's name)\n"
            "  -c, --ctx-size N          KV cache size in tokens, shared by all requests (default: the model's\n"
            "                            context, at most 4096)\n"
            "      --ctx-per-seq N       most tokens one request holds, prompt and answer (default: -c, at most\n"
            "                            the model's context)\n"
            "      --no-repack           keep every weight in the file's mapping (otherwise copied at load into\n"
            "                            2 MiB pages, TQ1_0 repacked to TQ2_0's layout, on x86 SIMD CPUs\n"
            "                            Q4_K/Q4_0/Q5_0/Q8_0 into sixteen interleaved rows: faster)\n"
            "      --no-prefix-cache     do not reuse the KV of earlier requests' prompts (default: reuse;\n"
            "                            per request: \"cache_prompt\": false)\n"
            "      --kv-block N          tokens per KV-cache block (default 16)\n"
            "      --kv-window W         stream past the context: each request keeps its sinks and at least its\n"
            "                            last W tokens (a KV block at a time), memory constant; no prompt limit,\n"
            "                            no prefix cache (default: off; then a chat that would overflow drops its\n"
            "                            oldest whole turns: \"context_shift\" in the response)\n"
            "      --kv-sinks N          with --kv-window: the first N tokens stay (attention sinks, default 0)\n"
            "      --spec KIND           speculative decoding (same tokens, fewer steps where the text is\n"
            "                            guessable): ngram, lookahead, draft (-md) or none (default); per request:\n"
            "                            \"speculative\": {\"type\", \"n_max\", \"n_min\"} or false\n"
            "      --draft-max N         most guesses verified per step (default 16)\n"
            "      --draft-min N         fewer guesses than this are not verified (default 0)\n"
            "  -md, --model-draft FILE   draft model for --spec draft / \"type\": \"draft\" (same vocabulary)\n"
            "      --chat-template F|N   a Jinja chat template file, or a built-in format (gemma, chatml, llama3,\n"
            "                            llama2), instead of the model's tokenizer.chat_template\n"
            "  -ctk, --cache-type-k T    KV cache type of K: f16 (default), q8_0, q4_0, tq2_32\n"
            "  -ctv, --cache-type-v T    KV cache type of V, the same choices (default f16)\n"
            "      --no-kv-rot           store a quantized K / V unrotated (llama.cpp's LLAMA_ATTN_ROT_DISABLE=1)\n"
            "  -np, --parallel N         requests generated at once (default 1)\n"
            "  -b, --batch-size N        most tokens per forward pass (default 512)\n"
            "  -t, --threads N           CPU threads (default: all cores)\n"
            "      --api-key KEY         require 'Authorization: Bearer KEY' (not on /health)\n"
            "      --queue N             requests that may wait for a slot before 429 (default 64)\n"
            "      --max-body BYTES      request body limit, 413 above (default 8388608)\n"
            "      --max-header BYTES    request line + headers limit, 431 above (default 16384)\n"
            "      --max-connections N   open connections at most (default 256)\n"
            "      --idle-timeout SECS   close a connection idle this long (default 30)\n"
            "      --header-timeout SECS a request's headers must all arrive within this long of its first\n"
            "                            byte, or 408 and close (default 5)\n"
            "      --timeout SECS        longest a request may take, queue included; 0: none (default 600)\n"
            "      --shutdown-grace SECS on SIGINT/SIGTERM, time in-flight requests get to finish (default 5)\n"
            "  -q, --quiet               no per-request log lines\n");
}

/* Parse an integer option in [lo, hi]; false (message printed) otherwise. */
static bool num(const char *flag, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || *end || end == v || x < lo || x > hi) {
        fprintf(stderr, "trinity serve: %s %s: expected an integer between %lld and %lld\n", flag,
                v ? v : "(missing)", lo, hi);
        return false;
    }
    *out = x;
    return true;
}

static int parse(int argc, char **argv, opts *o) {
    o->cfg = srv_default_config();
    o->cfg.model_id = NULL;
    o->n_batch = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
#define IS(s) (!strcmp(a, s))
#define INT(lo, hi, dst)                                  \
    do {                                                  \
        if (!num(a, v, lo, hi, &x)) return 2;             \
        dst = x;                                          \
        i++;                                              \
    } while (0)
#define STR(dst)                                                             \
    do {                                                                     \
        if (!v) {                                                            \
            fprintf(stderr, "trinity serve: %s needs a value\n", a);         \
            return 2;                                                        \
        }                                                                    \
        dst = v;                                                             \
        i++;                                                                 \
    } while (0)
        if (IS("-h") || IS("--help")) {
            usage(stdout);
            return 0;
        } else if (IS("-m") || IS("--model")) STR(o->model);
        else if (IS("--host")) STR(o->cfg.host);
        else if (IS("--port")) INT(0, 65535, o->cfg.port);
        else if (IS("--alias")) STR(o->cfg.model_id);
        else if (IS("-c") || IS("--ctx-size")) INT(0, 1 << 20, o->n_ctx);
        else if (IS("--ctx-per-seq")) INT(1, 1 << 20, o->n_ctx_seq);
        else if (IS("--kv-block")) INT(1, 4096, o->kv_block);
        else if (IS("--kv-sinks")) INT(0, 1 << 22, o->n_sinks);
        else if (IS("--kv-window")) INT(1, 1 << 22, o->n_window);
        else if (IS("--no-prefix-cache")) o->no_prefix_cache = true;
        else if (IS("--no-repack")) o->no_repack = true;
        else if (IS("--no-kv-rot")) o->no_kv_rot = true;
        else if (IS("--spec")) {
            if (!v || !tr_spec_kind_parse(v, &o->spec.kind)) {
                fprintf(stderr, "trinity serve: --spec expects ngram, lookahead, draft or none, got '%s'\n",
                        v ? v : "(missing)");
                return 2;
            }
            i++;
        } else if (IS("--draft-max") || IS("--draft") || IS("--draft-n")) INT(1, 64, o->spec.n_max);
        else if (IS("--draft-min") || IS("--draft-n-min")) INT(0, 64, o->spec.n_min);
        else if (IS("-md") || IS("--model-draft")) STR(o->model_draft);
        else if (IS("--chat-template")) STR(o->chat_template);
        else if (IS("-ctk") || IS("--cache-type-k") || IS("-ctv") || IS("--cache-type-v")) {
            if (!v) {
                fprintf(stderr, "trinity serve: %s needs a value\n", a);
                return 2;
            }
            if (gen_parse_kv_type("serve", a, v, IS("-ctk") || IS("--cache-type-k") ? &o->type_k : &o->type_v) < 0)
                return 2;
            i++;
        }
        else if (IS("-np") || IS("--parallel")) INT(1, 256, o->cfg.n_slots);
        else if (IS("-b") || IS("--batch-size")) INT(1, 1 << 16, o->n_batch);
        else if (IS("-t") || IS("--threads")) INT(0, 1024, o->n_threads);
        else if (IS("--api-key")) STR(o->cfg.api_key);
        else if (IS("--queue")) INT(0, 1 << 20, o->cfg.queue_max);
        else if (IS("--max-body")) INT(64, 1LL << 32, o->cfg.max_body);
        else if (IS("--max-header")) INT(1024, 1 << 20, o->cfg.max_header);
        else if (IS("--max-connections")) INT(1, 1 << 16, o->cfg.max_connections);
        else if (IS("--idle-timeout")) INT(1, 86400, o->cfg.idle_timeout);
        else if (IS("--header-timeout")) INT(1, 3600, o->cfg.header_timeout);
        else if (IS("--timeout")) INT(0, 86400 * 7, o->cfg.request_timeout);
        else if (IS("--shutdown-grace")) INT(0, 3600, o->cfg.shutdown_grace);
        else if (IS("-q") || IS("--quiet")) o->cfg.log_requests = false;
        else {
            fprintf(stderr, "trinity serve: unknown option '%s' (see trinity serve --help)\n", a);
            return 2;
        }
#undef IS
#undef INT
#undef STR
    }
    if (!o->model) {
        fprintf(stderr, "trinity serve: -m MODEL is required (see trinity serve --help)\n");
        return 2;
    }
    if (o->spec.kind == TR_SPEC_DRAFT && !o->model_draft) {
        fprintf(stderr, "trinity serve: --spec draft needs a draft model: -md FILE\n");
        return 2;
    }
    if (o->spec.n_min > (o->spec.n_max ? o->spec.n_max : 16)) {
        fprintf(stderr, "trinity serve: --draft-min %d is more than --draft-max %d\n", o->spec.n_min,
                o->spec.n_max ? o->spec.n_max : 16);
        return 2;
    }
    if (o->cfg.n_slots > o->n_batch) {
        fprintf(stderr, "trinity serve: --parallel %d is more than --batch-size %d\n", o->cfg.n_slots, (int)o->n_batch);
        return 2;
    }
    return -1;
}

/* ------------------------------------------------------------ loading */

typedef struct loader {
    const opts *o;
    srv_server *srv;
    pthread_t main_thread;
    engine eng;
    bool ok;
    tr_error err;
} loader;

static void *load_main(void *arg) {
    loader *l = arg;
    const opts *o = l->o;
    if (gen_load_model(o->model, o->no_repack, &l->eng.model, &l->err) != TR_OK) goto done;
    if (tr_chat_template_load(l->eng.model, o->chat_template, &l->eng.chat, &l->err) != TR_OK) goto done;
    if (tr_chat_template_is_builtin(l->eng.chat) && !o->chat_template)
        fprintf(stderr, "trinity serve: warning: %s (replies may not end)\n", tr_chat_template_describe(l->eng.chat));
    if (tr_model_is_recurrent(l->eng.model) && o->spec.kind != TR_SPEC_NONE) {
        snprintf(l->err.msg, sizeof l->err.msg,
                 "--spec %s: speculative decoding is not supported for %s (its recurrent state cannot drop rejected "
                 "guesses)", tr_spec_kind_name(o->spec.kind), tr_model_arch(l->eng.model));
        goto done;
    }
    if (o->model_draft && gen_load_model(o->model_draft, o->no_repack, &l->eng.draft, &l->err) != TR_OK) goto done;
    tr_engine_params ep = tr_engine_default_params();
    ep.draft_model = l->eng.draft;
    ep.ctx.n_ctx = o->n_ctx;
    ep.ctx.n_ctx_seq = o->n_ctx_seq;
    ep.ctx.n_batch = o->n_batch;
    ep.ctx.n_seq_max = o->cfg.n_slots;
    ep.ctx.n_threads = o->n_threads;
    ep.ctx.kv_block = o->kv_block;
    ep.ctx.n_sinks = o->n_sinks;
    ep.ctx.n_window = o->n_window;
    ep.ctx.type_k = o->type_k;
    ep.ctx.type_v = o->type_v;
    ep.ctx.no_kv_rot = o->no_kv_rot;
    ep.no_prefix_cache = o->no_prefix_cache;
    if (tr_engine_new(l->eng.model, &ep, &l->eng.eng, &l->err) != TR_OK) goto done;
    l->eng.vocab = tr_model_vocab(l->eng.model);
    l->eng.n_vocab = tr_model_n_vocab(l->eng.model);
    srv_engine se = {
        .self = &l->eng, .n_vocab = l->eng.n_vocab, .n_ctx = tr_context_n_ctx(tr_engine_context(l->eng.eng)),
        .streaming = o->n_window > 0,
        .defaults = tr_sampler_default_params(), .spec = o->spec,
        .submit = e_submit, .step = e_step, .take = e_take, .logits = e_logits, .release = e_release,
        .kv_stats = e_kv_stats, .tokenize = e_tokenize, .chat_format = e_chat, .piece = e_piece,
    };
    tr_str tmpl = {0};
    const bool has_tmpl = tr_gguf_get_str(tr_model_gguf(l->eng.model), "tokenizer.chat_template", &tmpl);
    se.tool_format = (int)srv_tool_format_detect(has_tmpl ? tmpl.ptr : NULL, has_tmpl ? (size_t)tmpl.len : 0);
    if (srv_set_engine(l->srv, &se, &l->err) != TR_OK) goto done;
    tr_kv_stats ks;
    tr_context_kv_stats(tr_engine_context(l->eng.eng), &ks);
    fprintf(stderr,
            "trinity serve: model %s ready (%s, KV cache %d tokens in blocks of %d, %d per request, %d request%s at "
            "once, prefix cache %s)\n",
            o->cfg.model_id, tr_model_arch(l->eng.model), ks.n_blocks * ks.block_size, ks.block_size, (int)se.n_ctx,
            o->cfg.n_slots, o->cfg.n_slots == 1 ? "" : "s",
            tr_model_is_recurrent(l->eng.model) ? "off: a recurrent state per sequence"
            : o->no_prefix_cache                 ? "off"
                                                 : "on");
    l->ok = true;
done:
    pthread_kill(l->main_thread, SIGUSR1); /* wake the main thread either way */
    return NULL;
}

/* The model's name for /v1/models: the file name without its folder and .gguf. */
static char *default_alias(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *s = strdup(b);
    if (!s) return NULL;
    size_t n = strlen(s);
    if (n > 5 && !strcmp(s + n - 5, ".gguf")) s[n - 5] = '\0';
    return s;
}

int cmd_serve(int argc, char **argv) {
    opts o = {0};
    int rc = parse(argc, argv, &o);
    if (rc >= 0) return rc;
    char *alias = NULL;
    if (!o.cfg.model_id) {
        if (!(alias = default_alias(o.model))) return 1;
        o.cfg.model_id = alias;
    }

    /* Signals go to sigwait() here, never to a handler in some other thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client that hung up is an error return, not a death */

    tr_error err = {{0}};
    srv_server *srv = NULL;
    if (srv_start(&o.cfg, &srv, &err) != TR_OK) {
        fprintf(stderr, "trinity serve: %s\n", err.msg);
        free(alias);
        return 1;
    }
    const char *h = o.cfg.host;
    bool v6 = strchr(h, ':') != NULL;
    fprintf(stderr, "trinity serve: listening on http://%s%s%s:%d/v1 (loading %s)\n", v6 ? "[" : "", h,
            v6 ? "]" : "", srv_port(srv), o.model);

    loader l = {.o = &o, .srv = srv, .main_thread = pthread_self()};
    pthread_t lt;
    bool loading = pthread_create(&lt, NULL, load_main, &l) == 0;
    if (!loading) {
        fprintf(stderr, "trinity serve: cannot start the loader thread\n");
        srv_free(srv);
        free(alias);
        return 1;
    }
    int status = 0;
    for (;;) {
        int sig = 0;
        sigwait(&set, &sig);
        if (sig == SIGUSR1) {
            if (!loading) continue;
            pthread_join(lt, NULL);
            loading = false;
            if (!l.ok) {
                fprintf(stderr, "trinity serve: %s\n", l.err.msg);
                status = 1;
                break;
            }
            continue;
        }
        fprintf(stderr, "trinity serve: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        if (loading) { /* a load cannot be interrupted: let it end first */
            pthread_join(lt, NULL);
            loading = false;
        }
        break;
    }
    srv_free(srv);
    tr_engine_free(l.eng.eng);
    tr_model_free(l.eng.draft);
    tr_chat_template_free(l.eng.chat);
    tr_model_free(l.eng.model);
    free(alias);
    if (status == 0) fprintf(stderr, "trinity serve: stopped\n");
    return status;
}
