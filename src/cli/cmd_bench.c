/* trinity bench — prompt and generation speed, like llama-bench.
 *
 *   pp<P>        one batch of P tokens from an empty cache: tokens / second
 *   tg<N>        N single-token steps from an empty cache
 *   tg<N>@d<D>   the same after D tokens already in the cache (not timed)
 *
 *   tg<N> <spec> with --spec KIND -f FILE: N greedy tokens after the text of
 *                FILE, through the engine, with speculative decoding and
 *                without (interleaved, each repetition both), their ratio,
 *                the guesses accepted, and whether the tokens were the same
 *
 * Tokens are random ids (the speed of a dense forward does not depend on
 * them), except in the speculative test, whose guesses need real text. Generation is also given as a share of the bandwidth ceiling: each
 * step reads every weight matrix once (the embedding table only one row of,
 * unless the output reuses it), so tokens/s x those bytes / the read
 * bandwidth this machine shows now is the fraction of the limit reached. */
#include "cli.h"
#include "gen.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: trinity bench -m MODEL [-p 128] [-n 64] [-t THREADS] [-r 3] [-d DEPTH] [--json]\n"
            "  -p N      prompt tokens of the pp test (0: skip)\n"
            "  -n N      generated tokens of the tg test (0: skip)\n"
            "  -d D      also run tg at depth D (D tokens in the cache first)\n"
            "  --kv-block N  tokens per KV-cache block (default 16)\n"
            "  -ctk T, -ctv T  KV cache types of K and V: f16 (default), q8_0, q4_0, tq2_32\n"
            "  --no-kv-rot  store a quantized K / V unrotated (llama.cpp's LLAMA_ATTN_ROT_DISABLE=1)\n"
            "  -r R      repetitions; the table gives mean +/- standard deviation\n"
            "  -t T      threads (default: all cores)\n"
            "  --no-bw   skip the bandwidth measurement\n"
            "  --no-repack  keep every weight in the file's mapping (otherwise copied at load into 2 MiB pages,\n"
            "            TQ1_0 repacked to TQ2_0's layout, on x86 SIMD CPUs Q4_K/Q4_0/Q5_0/Q8_0 into sixteen\n"
            "            interleaved rows)\n"
            "  --spec KIND  also time -n greedy tokens after the text of -f FILE with speculative\n"
            "            decoding (ngram, lookahead, draft) against without, on the same engine\n"
            "  -f FILE   the prompt text of the --spec test\n"
            "  --draft-max N, --draft-min N, -md FILE  as for run (draft: -md is the draft model)\n"
            "  --json    one JSON object per test on stdout instead of the table\n");
}

static bool parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Bytes one generation step reads from the weights. */
static double bytes_per_token(const tr_model *m) {
    const tr_gguf *g = tr_model_gguf(m);
    const tr_gguf_tensor *emb = tr_gguf_find_tensor(g, "token_embd.weight");
    const tr_gguf_tensor *out = tr_gguf_find_tensor(g, "output.weight");
    double b = (double)tr_model_weight_bytes(m);
    if (emb && out) b -= (double)emb->nbytes; /* only a row of the table is read */
    return b;
}

/* The model's name as a JSON string body (names come from the file). */
static void json_escape(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = 0;
}

typedef struct stats {
    double mean, sd;
} stats;

static stats summarize(const double *x, int n) {
    stats s = {0, 0};
    for (int i = 0; i < n; i++) s.mean += x[i];
    s.mean /= n;
    for (int i = 0; i < n; i++) s.sd += (x[i] - s.mean) * (x[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0;
    return s;
}

/* Decode `n` tokens of sequence 0 starting at `pos`, in batches of at most
 * n_batch, or one at a time when `single`. Returns seconds, or -1. */
static double run_tokens(tr_context *c, int32_t n_vocab, int32_t n_batch, int32_t pos, int32_t n,
                         bool single, unsigned *rng, int32_t *tok, int32_t *p, int32_t *seq) {
    tr_error err = {{0}};
    double t0 = now_s();
    for (int32_t done = 0; done < n;) {
        int32_t k = single ? 1 : (n - done < n_batch ? n - done : n_batch);
        for (int32_t i = 0; i < k; i++) {
            *rng = *rng * 1103515245u + 12345u;
            tok[i] = (int32_t)((*rng >> 8) % (unsigned)n_vocab);
            p[i] = pos + done + i;
            seq[i] = 0;
        }
        tr_batch b = {.n_tokens = k, .token = tok, .pos = p, .seq_id = seq, .logits = NULL};
        if (tr_decode(c, &b, &err) != TR_OK) {
            fprintf(stderr, "trinity bench: %s\n", err.msg);
            return -1;
        }
        done += k;
    }
    return now_s() - t0;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

typedef struct tok_log {
    int32_t *t;
    int32_t n, cap;
} tok_log;

static bool log_token(void *user, int32_t id) {
    tok_log *l = user;
    if (l->n < l->cap) l->t[l->n] = id;
    l->n++;
    return true;
}

/* The --spec test: n greedy tokens after the prompt, plain then speculative
 * in each repetition (one warm-up first), on one engine; the prefix cache
 * holds the prompt after the first run, and only generation is timed. */
static int bench_spec(gen_opts *go, tr_model *m, const char *file, long n, long reps, bool json, const char *name_json,
                      const char *name, double size_gib, double params_b) {
    tr_error err = {{0}};
    size_t len = 0;
    char *text = gen_read_file(file, &len, &err);
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    tr_engine *e = NULL;
    int status = 1;
    int32_t *buf = malloc(sizeof(int32_t) * 2 * (size_t)n);
    double *rate_plain = calloc((size_t)reps, sizeof(double)), *rate_spec = calloc((size_t)reps, sizeof(double));
    if (!text) goto fail;
    if (!buf || !rate_plain || !rate_spec) {
        snprintf(err.msg, sizeof err.msg, "out of memory");
        goto fail;
    }
    if (tr_tokenize(tr_model_vocab(m), text, len, true, false, &prompt, &n_prompt, &err) != TR_OK) goto fail;
    if (n_prompt == 0) {
        snprintf(err.msg, sizeof err.msg, "%s: the prompt gave no tokens", file);
        goto fail;
    }
    go->n_ctx = (int32_t)(n_prompt + (size_t)n + 64);
    if (gen_engine(go, m, true, &e, &err) != TR_OK) goto fail;
    tr_seq_params sp = {.prompt = prompt, .n_prompt = (int32_t)n_prompt, .n_predict = (int32_t)n,
                        .sampling = tr_sampler_default_params(), .ignore_eog = true};
    sp.sampling.temp = 0;
    long drafted = 0, accepted = 0, steps = 0, gen_spec = 0;
    bool same = true;
    for (long r = -1; r < reps; r++) {
        tok_log plain = {buf, 0, (int32_t)n}, spec = {buf + n, 0, (int32_t)n};
        gen_result a, b;
        sp.spec = (tr_spec_params){.kind = TR_SPEC_NONE};
        if (gen_sequence(e, &sp, log_token, &plain, &a, &err) != TR_OK) goto fail;
        sp.spec = go->spec;
        if (gen_sequence(e, &sp, log_token, &spec, &b, &err) != TR_OK) goto fail;
        same &= plain.n == spec.n && !memcmp(plain.t, spec.t, sizeof(int32_t) * (size_t)(plain.n < n ? plain.n : n));
        if (r < 0) continue;
        rate_plain[r] = a.t_gen > 0 ? a.n_gen / a.t_gen : 0;
        rate_spec[r] = b.t_gen > 0 ? b.n_gen / b.t_gen : 0;
        drafted += b.n_drafted, accepted += b.n_accepted, steps += b.n_steps, gen_spec += b.n_gen;
    }
    stats p = summarize(rate_plain, (int)reps), q = summarize(rate_spec, (int)reps);
    const char *kind = tr_spec_kind_name(go->spec.kind);
    int threads = (int)go->n_threads;
    if (json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"test\": \"tg%ld spec\", \"spec\": \"%s\", \"n_tokens\": %ld, "
               "\"n_prompt\": %zu, \"reps\": %ld, \"tps_plain_mean\": %.4f, \"tps_plain_sd\": %.4f, "
               "\"tps_spec_mean\": %.4f, \"tps_spec_sd\": %.4f, \"ratio\": %.4f, \"drafted\": %ld, "
               "\"accepted\": %ld, \"tokens_per_step\": %.4f, \"same_tokens\": %s}\n",
               name_json, threads, n, kind, n, n_prompt, reps, p.mean, p.sd, q.mean, q.sd,
               p.mean > 0 ? q.mean / p.mean : 0, drafted, accepted, steps ? (double)gen_spec / steps : 0,
               same ? "true" : "false");
    } else {
        char t1[48], t2[48];
        snprintf(t1, sizeof t1, "tg%ld plain", n);
        snprintf(t2, sizeof t2, "tg%ld %s", n, kind);
        printf("| %-24.24s | %5.2f GiB | %6.3f B | %7d | %14s | %8.2f ± %5.2f | %7s |\n", name, size_gib, params_b,
               threads, t1, p.mean, p.sd, "-");
        printf("| %-24.24s | %5.2f GiB | %6.3f B | %7d | %14s | %8.2f ± %5.2f | %7s |\n", name, size_gib, params_b,
               threads, t2, q.mean, q.sd, "-");
        printf("\nspeculation (%s) after %zu prompt tokens of %s: %.2fx plain; %ld guesses verified, %ld accepted "
               "(%.1f %%), %.2f tokens per step; same tokens as plain: %s\n",
               kind, n_prompt, file, p.mean > 0 ? q.mean / p.mean : 0, drafted, accepted,
               drafted ? 100.0 * accepted / drafted : 0.0, steps ? (double)gen_spec / steps : 0, same ? "yes" : "NO");
    }
    fflush(stdout);
    status = same ? 0 : 1;
    if (!same) fprintf(stderr, "trinity bench: speculation changed the tokens: a bug, please report it\n");
    goto done;
fail:
    fprintf(stderr, "trinity bench: %s\n", err.msg);
done:
    tr_engine_free(e);
    free(prompt);
    free(text);
    free(buf);
    free(rate_plain);
    free(rate_spec);
    return status;
}

int cmd_bench(int argc, char **argv) {
    const char *model_path = NULL;
    long n_prompt = 128, n_gen = 64, n_threads = 0, reps = 3, depth = 0, kv_block = 0;
    int32_t type_k = TR_TYPE_F16, type_v = TR_TYPE_F16;
    bool no_kv_rot = false;
    bool json = false, do_bw = true;
    gen_opts go; /* the --spec test's engine */
    gen_opts_init(&go);
    const char *spec_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *target = NULL;
        long lo = 0, hi = 1 << 20;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
            continue;
        } else if (!strcmp(a, "--no-bw")) {
            do_bw = false;
            continue;
        } else if (!strcmp(a, "--no-repack")) {
            go.no_repack = true;
            continue;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            if (!v) goto missing;
            model_path = v;
            i++;
            continue;
        } else if (!strcmp(a, "--no-kv-rot")) {
            no_kv_rot = true;
            continue;
        } else if (!strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k") || !strcmp(a, "-ctv") ||
                   !strcmp(a, "--cache-type-v")) {
            if (!v) goto missing;
            const bool is_k = !strcmp(a, "-ctk") || !strcmp(a, "--cache-type-k");
            if (gen_parse_kv_type("bench", a, v, is_k ? &type_k : &type_v) < 0) return 2;
            i++;
            continue;
        } else if (!strcmp(a, "--spec") || !strcmp(a, "--draft-max") || !strcmp(a, "--draft") ||
                   !strcmp(a, "--draft-n") || !strcmp(a, "--draft-min") || !strcmp(a, "--draft-n-min") ||
                   !strcmp(a, "-md") || !strcmp(a, "--model-draft")) {
            if (gen_parse_flag(&go, "bench", argc, argv, &i) < 0) return 2;
            continue;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--file")) {
            if (!v) goto missing;
            spec_file = v;
            i++;
            continue;
        } else if (!strcmp(a, "-p")) target = &n_prompt;
        else if (!strcmp(a, "-n")) target = &n_gen;
        else if (!strcmp(a, "-t")) target = &n_threads, lo = 1, hi = 256;
        else if (!strcmp(a, "-r")) target = &reps, lo = 1, hi = 1000;
        else if (!strcmp(a, "-d")) target = &depth;
        else if (!strcmp(a, "--kv-block")) target = &kv_block, lo = 1, hi = 4096;
        else {
            fprintf(stderr, "trinity bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (!v) goto missing;
        if (!parse_int(v, lo, hi, target)) {
            fprintf(stderr, "trinity bench: %s wants a whole number from %ld to %ld, not '%s'\n", a, lo, hi, v);
            return 2;
        }
        i++;
        continue;
    missing:
        fprintf(stderr, "trinity bench: %s needs a value\n", a);
        return 2;
    }
    if (!model_path) {
        fprintf(stderr, "trinity bench: no model: pass -m MODEL\n");
        usage(stderr);
        return 2;
    }
    if (go.spec.kind != TR_SPEC_NONE && !spec_file) {
        fprintf(stderr, "trinity bench: --spec needs text to guess from: -f FILE\n");
        return 2;
    }
    if (go.spec.kind != TR_SPEC_NONE && n_gen == 0) {
        fprintf(stderr, "trinity bench: --spec times generation: -n must be above 0\n");
        return 2;
    }
    if (spec_file && go.spec.kind == TR_SPEC_NONE) {
        fprintf(stderr, "trinity bench: -f is the prompt of the --spec test: give --spec KIND too\n");
        return 2;
    }
    if (n_prompt == 0 && n_gen == 0) {
        fprintf(stderr, "trinity bench: nothing to measure: -p and -n are both 0\n");
        return 2;
    }

    tr_error err = {{0}};
    tr_model *m = NULL;
    double t0 = now_s();
    if (gen_load_model(model_path, go.no_repack, &m, &err) != TR_OK) {
        fprintf(stderr, "trinity bench: %s\n", err.msg);
        return 1;
    }
    double load_s = now_s() - t0;
    long rss_after_load = rss_kib();

    tr_context_params cp = tr_context_default_params();
    long need = n_prompt > depth + n_gen ? n_prompt : depth + n_gen;
    cp.n_ctx = (int32_t)(need + 1);
    /* The depth asked for, even past the trained context (as llama-bench
     * runs it: a speed test); learned positions still stop at theirs. */
    cp.n_ctx_seq = cp.n_ctx;
    cp.kv_block = (int32_t)kv_block;
    cp.type_k = type_k;
    cp.type_v = type_v;
    cp.no_kv_rot = no_kv_rot;
    cp.n_batch = (int32_t)(n_prompt > 0 && n_prompt < 512 ? n_prompt : 512);
    cp.n_threads = (int32_t)(n_threads > 0 ? n_threads : sysconf(_SC_NPROCESSORS_ONLN));
    if (cp.n_threads < 1) cp.n_threads = 1;
    tr_context *c = NULL;
    if (tr_context_new(m, &cp, &c, &err) != TR_OK) {
        fprintf(stderr, "trinity bench: %s\n", err.msg);
        tr_model_free(m);
        return 1;
    }
    int32_t n_vocab = tr_model_n_vocab(m);
    int32_t n_batch = cp.n_batch;
    int32_t *tok = malloc(sizeof(int32_t) * 3 * (size_t)n_batch);
    if (!tok) {
        fprintf(stderr, "trinity bench: out of memory\n");
        tr_context_free(c);
        tr_model_free(m);
        return 1;
    }
    int32_t *pos = tok + n_batch, *seq = pos + n_batch;
    int threads_used = (int)cp.n_threads;

    double bw = do_bw && n_gen > 0 ? tr_read_bandwidth_gbs(threads_used) : 0;
    double bpt = bytes_per_token(m);

    struct test {
        char name[48];
        long n_tok;
        long depth;
        bool gen;
    } tests[3];
    int n_tests = 0;
    if (n_prompt > 0) {
        tests[n_tests] = (struct test){.n_tok = n_prompt, .depth = 0, .gen = false};
        snprintf(tests[n_tests++].name, sizeof tests[0].name, "pp%ld", n_prompt);
    }
    if (n_gen > 0) {
        tests[n_tests] = (struct test){.n_tok = n_gen, .depth = 0, .gen = true};
        snprintf(tests[n_tests++].name, sizeof tests[0].name, "tg%ld", n_gen);
    }
    if (n_gen > 0 && depth > 0) {
        tests[n_tests] = (struct test){.n_tok = n_gen, .depth = depth, .gen = true};
        snprintf(tests[n_tests++].name, sizeof tests[0].name, "tg%ld@d%ld", n_gen, depth);
    }

    const char *name = tr_model_name(m);
    char name_json[256];
    json_escape(name, name_json, sizeof name_json);
    double size_gib = (double)tr_model_weight_bytes(m) / (1024.0 * 1024.0 * 1024.0);
    double params_b = (double)tr_model_n_params(m) / 1e9;
    if (!json) {
        fprintf(stderr, "load %.3f s, resident %.1f MiB after load; read bandwidth %.1f GB/s; KV cache %s/%s; cpu: %s\n",
                load_s, rss_after_load / 1024.0, bw, tr_type_name(type_k), tr_type_name(type_v), tr_system_info());
        printf("| %-24s | %9s | %8s | %7s | %14s | %16s | %7s |\n", "model", "size", "params", "threads", "test",
               "t/s", "bw %");
        printf("| %.24s | %.9s | %.8s | %.7s | %.14s | %.16s | %.7s |\n", "-------------------------",
               "----------", "---------", "--------", "---------------", "-----------------", "--------");
    }

    unsigned rng = 1234;
    int status = 0;
    double *rates = malloc(sizeof(double) * (size_t)reps);
    for (int ti = 0; ti < n_tests && !status && rates; ti++) {
        const struct test *t = &tests[ti];
        /* The depth is filled once per test; each repetition then drops what
         * the previous one added after it (llamacpp_bench.py does the same).
         * A recurrent model cannot drop a suffix: it reads the depth again,
         * unmeasured. */
        tr_kv_seq_rm(c, 0, 0, -1);
        if (t->depth > 0 && run_tokens(c, n_vocab, n_batch, 0, (int32_t)t->depth, false, &rng, tok, pos, seq) < 0) {
            status = 1;
            break;
        }
        /* one warm-up run (page faults, caches), then the measured ones */
        for (long r = -1; r < reps; r++) {
            if (!tr_kv_seq_rm(c, 0, (int32_t)t->depth, -1)) {
                tr_kv_seq_rm(c, 0, 0, -1);
                if (run_tokens(c, n_vocab, n_batch, 0, (int32_t)t->depth, false, &rng, tok, pos, seq) < 0) {
                    status = 1;
                    break;
                }
            }
            double s = run_tokens(c, n_vocab, n_batch, (int32_t)t->depth, (int32_t)t->n_tok, t->gen, &rng, tok,
                                  pos, seq);
            if (s < 0) {
                status = 1;
                break;
            }
            if (r >= 0) rates[r] = (double)t->n_tok / s;
        }
        if (status) break;
        stats st = summarize(rates, (int)reps);
        double share = t->gen && bw > 0 ? st.mean * bpt / (bw * 1e9) * 100.0 : NAN;
        if (json) {
            printf("{\"model\": \"%s\", \"size_bytes\": %llu, \"n_params\": %llu, \"threads\": %d, \"test\": \"%s\", "
                   "\"n_tokens\": %ld, \"depth\": %ld, \"reps\": %ld, \"tps_mean\": %.4f, \"tps_sd\": %.4f, "
                   "\"bandwidth_gbs\": %.3f, \"bytes_per_token\": %.0f, \"bw_share\": %.4f, \"load_s\": %.4f, "
                   "\"rss_kib\": %ld, \"type_k\": \"%s\", \"type_v\": \"%s\"}\n",
                   name_json, (unsigned long long)tr_model_weight_bytes(m), (unsigned long long)tr_model_n_params(m),
                   threads_used, t->name, t->n_tok, t->depth, reps, st.mean, st.sd, bw, bpt,
                   isnan(share) ? 0.0 : share / 100.0, load_s, rss_after_load, tr_type_name(type_k), tr_type_name(type_v));
        } else {
            char bws[16] = "-";
            if (!isnan(share)) snprintf(bws, sizeof bws, "%.1f", share);
            printf("| %-24.24s | %5.2f GiB | %6.3f B | %7d | %14s | %8.2f ± %5.2f | %7s |\n", name, size_gib,
                   params_b, threads_used, t->name, st.mean, st.sd, bws);
        }
        fflush(stdout);
    }
    free(rates);
    free(tok);
    tr_context_free(c);
    if (!status && go.spec.kind != TR_SPEC_NONE) {
        go.n_threads = (int32_t)threads_used;
        go.type_k = type_k, go.type_v = type_v, go.no_kv_rot = no_kv_rot;
        status = bench_spec(&go, m, spec_file, n_gen, reps, json, name_json, name, size_gib, params_b);
    }
    tr_model_free(go.draft);
    tr_model_free(m);
    return status;
}
