#include "gen.h"

#include <errno.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void gen_opts_init(gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = -1;
    o->n_batch = 512;
    o->sp = tr_sampler_default_params();
}

static int parse_int(const char *cmd, const char *flag, const char *s, int32_t lo, int32_t hi, int32_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "trinity %s: %s expects an integer in [%d, %d], got '%s'\n", cmd, flag, lo, hi, s);
        return -1;
    }
    *out = (int32_t)v;
    return 1;
}

static int parse_float(const char *cmd, const char *flag, const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "trinity %s: %s expects a number in [%g, %g], got '%s'\n", cmd, flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 1;
}

tr_status gen_load_model(const char *path, bool no_repack, tr_model **out, tr_error *err) {
    tr_model_params p = tr_model_default_params();
    p.no_repack = no_repack;
    return tr_model_load_params(path, &p, out, err);
}

void gen_repack_help(FILE *f) {
    fprintf(f, "  --no-repack             keep every weight in the file's mapping (zero copy); by default the\n"
               "                          matrices are copied at load into 2 MiB pages, TQ1_0 repacked into TQ2_0's\n"
               "                          layout, and on x86 SIMD CPUs Q4_K/Q4_0/Q5_0/Q8_0 into sixteen interleaved\n"
               "                          rows (faster)\n");
}

int gen_parse_flag(gen_opts *o, const char *cmd, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "--no-repack")) {
        o->no_repack = true;
        return 1;
    }
    static const char *const with_value[] = {"-m", "--model", "-p", "--prompt", "-f", "--file", "-n", "--n-predict",
                                             "-t", "--threads", "-c", "--ctx-size", "-b", "--batch-size", "--temp",
                                             "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--repeat-last-n",
                                             "--presence-penalty", "--frequency-penalty", "--seed", "-s",
                                             "--chat-format", "--chat-template", "-sys", "--system-prompt", "--spec",
                                             "--draft-max", "--draft", "--draft-n", "--draft-min", "--draft-n-min",
                                             "-md", "--model-draft", "-ctk", "--cache-type-k", "-ctv",
                                             "--cache-type-v", "--grammar", "--grammar-file", "--json-schema",
                                             "--kv-sinks", "--kv-window"};
    if (!strcmp(a, "--no-kv-rot")) {
        o->no_kv_rot = true;
        return 1;
    }
    bool known = false;
    for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
        if (!strcmp(a, with_value[k])) known = true;
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "trinity %s: %s needs a value\n", cmd, a);
        return -1;
    }
    const char *v = argv[++*i];
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model = v;
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) o->file = v;
    else if (!strcmp(a, "--chat-format") || !strcmp(a, "--chat-template")) o->chat_format = v;
    else if (!strcmp(a, "-md") || !strcmp(a, "--model-draft")) o->model_draft = v;
    else if (!strcmp(a, "-sys") || !strcmp(a, "--system-prompt")) o->system = v;
    else if (!strcmp(a, "--grammar")) o->grammar = v;
    else if (!strcmp(a, "--grammar-file")) o->grammar_file = v;
    else if (!strcmp(a, "--json-schema")) o->json_schema = v;
    else if (!strcmp(a, "--spec")) {
        if (!tr_spec_kind_parse(v, &o->spec.kind)) {
            fprintf(stderr, "trinity %s: --spec expects none, ngram, lookahead or draft, got '%s'\n", cmd, v);
            return -1;
        }
    } else if (!strcmp(a, "--draft-max") || !strcmp(a, "--draft") || !strcmp(a, "--draft-n"))
        return parse_int(cmd, a, v, 1, 64, &o->spec.n_max);
    else if (!strcmp(a, "--draft-min") || !strcmp(a, "--draft-n-min"))
        return parse_int(cmd, a, v, 0, 64, &o->spec.n_min);
    else if (!strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k")) return gen_parse_kv_type(cmd, a, v, &o->type_k);
    else if (!strcmp(a, "-ctv") || !strcmp(a, "--cache-type-v")) return gen_parse_kv_type(cmd, a, v, &o->type_v);
    else if (!strcmp(a, "--kv-sinks")) return parse_int(cmd, a, v, 0, 1 << 22, &o->n_sinks);
    else if (!strcmp(a, "--kv-window")) return parse_int(cmd, a, v, 1, 1 << 22, &o->n_window);
    else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) return parse_int(cmd, a, v, -1, INT32_MAX, &o->n_predict);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) return parse_int(cmd, a, v, 0, 256, &o->n_threads);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) return parse_int(cmd, a, v, 0, 1 << 22, &o->n_ctx);
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch-size")) return parse_int(cmd, a, v, 1, 1 << 16, &o->n_batch);
    else if (!strcmp(a, "--temp")) return parse_float(cmd, a, v, 0, 1000, &o->sp.temp);
    else if (!strcmp(a, "--top-k")) return parse_int(cmd, a, v, 0, INT32_MAX, &o->sp.top_k);
    else if (!strcmp(a, "--top-p")) return parse_float(cmd, a, v, 0, 1, &o->sp.top_p);
    else if (!strcmp(a, "--min-p")) return parse_float(cmd, a, v, 0, 1, &o->sp.min_p);
    else if (!strcmp(a, "--repeat-penalty")) return parse_float(cmd, a, v, 0, 100, &o->sp.repeat_penalty);
    else if (!strcmp(a, "--repeat-last-n")) return parse_int(cmd, a, v, -1, 1 << 20, &o->sp.repeat_last_n);
    else if (!strcmp(a, "--presence-penalty")) return parse_float(cmd, a, v, -100, 100, &o->sp.presence_penalty);
    else if (!strcmp(a, "--frequency-penalty")) return parse_float(cmd, a, v, -100, 100, &o->sp.frequency_penalty);
    else if (!strcmp(a, "--seed") || !strcmp(a, "-s")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || *end || end == v || v[0] == '-') {
            fprintf(stderr, "trinity %s: %s expects a non-negative integer, got '%s'\n", cmd, a, v);
            return -1;
        }
        o->sp.seed = s;
        o->seed_set = true;
    }
    return 1;
}

int gen_parse_kv_type(const char *cmd, const char *flag, const char *value, int32_t *out) {
    const int t = tr_kv_type_from_name(value);
    if (t < 0) {
        fprintf(stderr, "trinity %s: %s expects one of %s, got '%s'\n", cmd, flag, tr_kv_type_names(), value);
        return -1;
    }
    *out = t;
    return 1;
}

void gen_kv_type_help(FILE *f) {
    fprintf(f, "  -ctk, --cache-type-k T  KV cache type of K: %s (default f16)\n"
               "  -ctv, --cache-type-v T  KV cache type of V, the same choices (default f16)\n"
               "  --no-kv-rot             store a quantized K / V unrotated (default: Hadamard-rotated, as\n"
               "                          llama.cpp; its LLAMA_ATTN_ROT_DISABLE=1)\n",
            tr_kv_type_names());
}

void gen_stream_help(FILE *f) {
    fprintf(f, "  --kv-window W           stream past the context: keep the sinks and at least the last W tokens\n"
               "                          (evicting a KV block at a time), memory constant (default: off)\n"
               "  --kv-sinks N            with --kv-window: the first N tokens stay (attention sinks, default 0)\n");
}

void gen_flags_help(FILE *f, bool sampling) {
    fprintf(f, "  -m, --model FILE        GGUF model (required)\n"
               "  -t, --threads N         threads (default: all cores)\n"
               "  -c, --ctx-size N        context size in tokens (default: the model's, at most 4096)\n"
               "  -b, --batch-size N      tokens per forward pass of the prompt (default 512)\n");
    gen_kv_type_help(f);
    gen_stream_help(f);
    gen_repack_help(f);
    if (sampling)
        fprintf(f, "  -n, --n-predict N       tokens to generate (-1: until end of generation or context; default -1)\n"
                   "  --temp T                temperature (default 0.8; 0 = greedy)\n"
                   "  --top-k K               top-k (default 40; 0 = off)\n"
                   "  --top-p P               top-p (default 0.95; 1 = off)\n"
                   "  --min-p M               min-p (default 0.05; 0 = off)\n"
                   "  --repeat-penalty R      repetition penalty (default 1.0 = off)\n"
                   "  --repeat-last-n N       tokens the penalties look at (default 64; -1 = all)\n"
                   "  --presence-penalty X    presence penalty (default 0)\n"
                   "  --frequency-penalty X   frequency penalty (default 0)\n"
                   "  -s, --seed S            random seed (default: random)\n"
                   "  --spec KIND             speculative decoding, the same tokens faster where the text is\n"
                   "                          guessable: ngram (prompt lookup), lookahead (Jacobi), draft (a\n"
                   "                          draft model, -md), none (default)\n"
                   "  -md, --model-draft FILE draft model for --spec draft (same vocabulary as -m)\n"
                   "  --draft-max N           most guesses verified per step (default 16, at most 64)\n"
                   "  --draft-min N           fewer guesses than this are not verified (default 0)\n"
                   "  --grammar GBNF          constrain the output to a grammar (llama.cpp's GBNF)\n"
                   "  --grammar-file FILE     ... read from a file\n"
                   "  --json-schema JSON      constrain the output to JSON valid against a schema\n");
}

/* "flag: message" in place. */
static void prefix_error(tr_error *err, const char *flag) {
    char m[sizeof err->msg];
    memcpy(m, err->msg, sizeof m);
    m[sizeof m - 1] = 0;
    size_t fl = strlen(flag), ml = strlen(m);
    if (fl + 2 + ml >= sizeof err->msg) ml = sizeof err->msg - fl - 3;
    memcpy(err->msg, flag, fl);
    memcpy(err->msg + fl, ": ", 2);
    memcpy(err->msg + fl + 2, m, ml);
    err->msg[fl + 2 + ml] = 0;
}

tr_status gen_grammar(const gen_opts *o, tr_grammar **out, tr_error *err) {
    *out = NULL;
    const int given = !!o->grammar + !!o->grammar_file + !!o->json_schema;
    if (given == 0) return TR_OK;
    if (given > 1) {
        snprintf(err->msg, sizeof err->msg, "give one of --grammar, --grammar-file and --json-schema");
        return TR_ERR_ARG;
    }
    char *text = NULL;
    size_t len = 0;
    const char *flag = o->grammar ? "--grammar" : o->grammar_file ? "--grammar-file" : "--json-schema";
    if (o->grammar_file) {
        if (!(text = gen_read_file(o->grammar_file, &len, err))) return TR_ERR_IO;
    } else if (o->json_schema) {
        tr_status st = tr_json_schema_to_gbnf(o->json_schema, strlen(o->json_schema), &text, err);
        if (st) {
            prefix_error(err, flag);
            return st;
        }
        len = strlen(text);
    }
    tr_status st = tr_grammar_parse(text ? text : o->grammar, text ? len : strlen(o->grammar), out, err);
    free(text);
    if (st) {
        prefix_error(err, flag);
    }
    return st;
}

void gen_print_spec(FILE *f, const gen_opts *o, const gen_result *r) {
    if (o->spec.kind == TR_SPEC_NONE) return;
    fprintf(f, "speculation (%s): %d guesses verified, %d accepted (%.1f %%), %.2f tokens per step\n",
            tr_spec_kind_name(o->spec.kind), r->n_drafted, r->n_accepted,
            r->n_drafted ? 100.0 * r->n_accepted / r->n_drafted : 0.0, r->n_steps ? (double)r->n_gen / r->n_steps : 0.0);
}

char *gen_read_file(const char *path, size_t *len, tr_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err->msg, sizeof err->msg, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > ((size_t)1 << 31)) {
                snprintf(err->msg, sizeof err->msg, "%s: file is larger than 2 GiB", path);
                free(buf);
                fclose(f);
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) break;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    if (!buf) {
        snprintf(err->msg, sizeof err->msg, "%s: out of memory", path);
        fclose(f);
        return NULL;
    }
    if (ferror(f)) {
        snprintf(err->msg, sizeof err->msg, "%s: read error", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

tr_status gen_engine(gen_opts *o, tr_model *m, bool prefix_cache, tr_engine **out, tr_error *err) {
    tr_engine_params ep = tr_engine_default_params();
    if (o->model_draft && !o->draft) {
        tr_status st = gen_load_model(o->model_draft, o->no_repack, &o->draft, err);
        if (st != TR_OK) return st;
    }
    if (o->spec.kind == TR_SPEC_DRAFT && !o->draft) {
        snprintf(err->msg, sizeof err->msg, "--spec draft needs a draft model: -md FILE");
        return TR_ERR_ARG;
    }
    ep.draft_model = o->draft;
    ep.ctx.n_ctx = o->n_ctx;
    ep.ctx.n_batch = o->n_batch;
    ep.ctx.n_threads = o->n_threads;
    ep.ctx.type_k = o->type_k;
    ep.ctx.type_v = o->type_v;
    ep.ctx.no_kv_rot = o->no_kv_rot;
    ep.ctx.n_sinks = o->n_sinks;
    ep.ctx.n_window = o->n_window;
    ep.no_prefix_cache = !prefix_cache;
    return tr_engine_new(m, &ep, out, err);
}

tr_status gen_sequence(tr_engine *e, const tr_seq_params *p, bool (*on_token)(void *user, int32_t id), void *user,
                       gen_result *r, tr_error *err) {
    memset(r, 0, sizeof *r);
    const double t0 = gen_now();
    double t1 = 0;
    int64_t id = tr_engine_submit(e, p, err);
    if (id < 0) return TR_ERR_ARG;
    tr_seq_info info = {0};
    for (;;) {
        tr_status st = tr_engine_step(e, NULL, err);
        int32_t toks[64], k;
        bool stop = false;
        while ((k = tr_engine_take(e, id, toks, 64, &info)) > 0) {
            if (r->n_gen == 0) t1 = gen_now();
            for (int32_t i = 0; i < k && !stop; i++) {
                r->n_gen++;
                if (on_token && !on_token(user, toks[i])) stop = true;
            }
            if (stop) break; /* else take on: a step may yield more than 64 tokens (speculation), even its last */
        }
        if (k < 0) break; /* released: finished and fully taken */
        if (stop) {
            tr_engine_cancel(e, id, true);
            info.finish = TR_FINISH_LENGTH;
            break;
        }
        if (info.finish != TR_FINISH_NONE) break;
        if (st != TR_OK) {
            tr_engine_cancel(e, id, true);
            return st;
        }
    }
    const double tend = gen_now();
    if (!t1) t1 = tend;
    r->t_prompt = t1 - t0;
    r->t_gen = tend - t1;
    r->n_cached = info.n_cached;
    r->n_drafted = info.n_drafted;
    r->n_accepted = info.n_accepted;
    r->n_steps = info.n_steps;
    r->finish = info.finish;
    if (info.finish == TR_FINISH_ERROR) { /* the step's error message is in err */
        if (!err->msg[0]) snprintf(err->msg, sizeof err->msg, "generation failed");
        return TR_ERR_ARG;
    }
    return TR_OK;
}

void gen_stream_put(gen_stream *s, const tr_vocab *v, int32_t id) {
    char piece[256];
    size_t n = tr_token_to_piece(v, id, false, piece, sizeof piece);
    if (n > sizeof piece) n = sizeof piece;
    for (size_t i = 0; i < n; i++) {
        if (s->len == sizeof s->buf) gen_stream_flush(s); /* not UTF-8 after all: let it out */
        s->buf[s->len++] = piece[i];
    }
    size_t ok = tr_utf8_complete_prefix(s->buf, s->len);
    if (ok) {
        fwrite(s->buf, 1, ok, s->out);
        memmove(s->buf, s->buf + ok, s->len - ok);
        s->len -= ok;
        fflush(s->out);
    }
}

bool gen_stream_token(void *stream, int32_t id) {
    gen_stream *s = stream;
    gen_stream_put(s, s->vocab, id);
    return true;
}

void gen_stream_flush(gen_stream *s) {
    if (s->len) fwrite(s->buf, 1, s->len, s->out);
    s->len = 0;
    fflush(s->out);
}

double gen_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
