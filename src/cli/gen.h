/* What run, chat and perplexity share: llama.cpp-style flags, loading,
 * evaluating a token list in batches, and streaming pieces as UTF-8. */
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
    tr_sampler_params sp;  /* --temp, --top-k, ... */
    bool seed_set;
    const char *chat_format; /* --chat-format */
    const char *system;      /* -sys */
} gen_opts;

void gen_opts_init(gen_opts *o);
/* Consume argv[*i] (and its value) if it is a shared flag: 1 consumed, 0 not
 * ours, -1 usage error (message printed). */
int gen_parse_flag(gen_opts *o, const char *cmd, int argc, char **argv, int *i);
/* The help text of the shared flags. */
void gen_flags_help(FILE *f, bool sampling);

/* Read a whole file (NUL-terminated, *len without it). NULL with a message on failure. */
char *gen_read_file(const char *path, size_t *len, tr_error *err);

/* Decode toks[0..n) of sequence `seq` from position pos0, n_batch at a time,
 * keeping only the last token's logits. */
tr_status gen_eval(tr_context *c, int32_t n_batch, const int32_t *toks, int32_t n, int32_t pos0, int32_t seq,
                   tr_error *err);

/* Prints token pieces without ever splitting a UTF-8 character. */
typedef struct gen_stream {
    char buf[64];
    size_t len;
    FILE *out;
} gen_stream;
void gen_stream_put(gen_stream *s, const tr_vocab *v, int32_t id);
void gen_stream_flush(gen_stream *s);

double gen_now(void); /* seconds, monotonic */

#endif
