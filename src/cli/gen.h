/* What run, chat and perplexity share: llama.cpp-style flags, the engine
 * and its decode loop, and streaming pieces as UTF-8. */
#ifndef TR_CLI_GEN_H
#define TR_CLI_GEN_H

#include "trinity.h"

#include <stdio.h>

typedef struct gen_opts {
    const char *model;     /* -m */
    const char *prompt;    /* -p */
    const char *file;      /* -f */
    int32_t n_predict;     /* -n: tokens to generate, -1 = until end of generation or context */
    int32_t n_threads;     /* -t: 0 = all cores */
    int32_t n_ctx;         /* -c: 0 = the model's, at most 4096 */
    int32_t n_batch;       /* -b */
    int32_t type_k, type_v; /* -ctk, -ctv: KV cache types (0: f16) */
    bool no_kv_rot;         /* --no-kv-rot: a quantized cache's entries are not Hadamard-rotated */
    int32_t n_sinks, n_window; /* --kv-sinks, --kv-window: streaming with attention sinks (window 0: off) */
    tr_sampler_params sp;  /* --temp, --top-k, ... */
    bool seed_set;
    const char *chat_format; /* --chat-template (or its old name --chat-format): a Jinja file or a built-in name */
    const char *system;      /* -sys */
    tr_spec_params spec;     /* --spec, --draft-max, --draft-min */
    const char *model_draft; /* -md, --model-draft */
    tr_model *draft;         /* loaded by gen_engine (free it after the engine) */
    const char *grammar;     /* --grammar GBNF */
    const char *grammar_file; /* --grammar-file FILE */
    const char *json_schema; /* --json-schema JSON */
    bool no_repack;          /* --no-repack: every weight stays in the mapping */
} gen_opts;

void gen_opts_init(gen_opts *o);
/* Consume argv[*i] (and its value) if it is a shared flag: 1 consumed, 0 not
 * ours, -1 usage error (message printed). */
int gen_parse_flag(gen_opts *o, const char *cmd, int argc, char **argv, int *i);
/* A KV cache type by name (-ctk / -ctv, as llama.cpp spells them): 1 with
 * *out set, or -1 with a message naming the flag and the accepted names. */
int gen_parse_kv_type(const char *cmd, const char *flag, const char *value, int32_t *out);
/* The help lines of -ctk / -ctv (shared with bench and serve). */
void gen_kv_type_help(FILE *f);
/* The help lines of --kv-sinks / --kv-window (shared with serve). */
void gen_stream_help(FILE *f);
/* The help text of the shared flags. */
void gen_flags_help(FILE *f, bool sampling);
/* tr_model_load with --no-repack's choice. */
tr_status gen_load_model(const char *path, bool no_repack, tr_model **out, tr_error *err);
void gen_repack_help(FILE *f);

/* The grammar of --grammar, --grammar-file or --json-schema (*out NULL:
 * none given); errors name the flag and the problem. */
tr_status gen_grammar(const gen_opts *o, tr_grammar **out, tr_error *err);

/* Read a whole file (NUL-terminated, *len without it). NULL with a message on failure. */
char *gen_read_file(const char *path, size_t *len, tr_error *err);

/* An engine for one sequence at a time from the shared flags (-c, -b, -t),
 * with the draft model of --model-draft loaded into o->draft. */
tr_status gen_engine(gen_opts *o, tr_model *m, bool prefix_cache, tr_engine **out, tr_error *err);

/* What gen_sequence saw. t_prompt: from submission to the first sampled
 * token (the prompt's evaluation); t_gen: from there to the end. */
typedef struct gen_result {
    int32_t n_gen, n_cached;
    int32_t n_drafted, n_accepted, n_steps; /* speculation: guesses verified, accepted; steps that sampled */
    tr_finish finish;
    double t_prompt, t_gen;
} gen_result;

/* The CLI's one decode loop: submit a sequence, step the engine until it
 * ends, hand each sampled token to on_token (NULL: none; returning false
 * stops the sequence there). */
tr_status gen_sequence(tr_engine *e, const tr_seq_params *p, bool (*on_token)(void *user, int32_t id), void *user,
                       gen_result *r, tr_error *err);

/* Prints token pieces without ever splitting a UTF-8 character. */
typedef struct gen_stream {
    char buf[64];
    size_t len;
    FILE *out;
    const tr_vocab *vocab; /* for gen_stream_token */
} gen_stream;
void gen_stream_put(gen_stream *s, const tr_vocab *v, int32_t id);
/* gen_sequence's on_token for a gen_stream: prints the token, goes on. */
bool gen_stream_token(void *stream, int32_t id);
void gen_stream_flush(gen_stream *s);

/* Print "speculation: ..." (guesses, acceptance, tokens per step) to f when it was on. */
void gen_print_spec(FILE *f, const gen_opts *o, const gen_result *r);

double gen_now(void); /* seconds, monotonic */

#endif
