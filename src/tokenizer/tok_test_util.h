/* Small vocabularies written with our GGUF writer, for the tokenizer's C
 * tests and fuzz target. Header-only so each test binary has its own copy. */
#ifndef TR_TOK_TEST_UTIL_H
#define TR_TOK_TEST_UTIL_H

#include "trinity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An array of strings laid out as in a file (u64 length + bytes each). */
typedef struct tt_strarr {
    uint8_t *data;
    uint64_t *off;
    tr_gguf_value val;
} tt_strarr;

static inline void tt_strarr_make(tt_strarr *a, const char *const *s, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += 8 + strlen(s[i]);
    a->data = malloc(total ? total : 1);
    a->off = malloc((n ? n : 1) * sizeof *a->off);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t l = strlen(s[i]);
        a->off[i] = o;
        memcpy(a->data + o, &l, 8);
        memcpy(a->data + o + 8, s[i], l);
        o += 8 + l;
    }
    a->val = (tr_gguf_value){.type = TR_GGUF_ARRAY, .v.arr = {TR_GGUF_STRING, n, a->data, a->off, NULL}};
}

static inline void tt_strarr_free(tt_strarr *a) {
    free(a->data);
    free(a->off);
}

static inline tr_gguf_value tt_arr(tr_gguf_type t, const void *p, size_t n) {
    return (tr_gguf_value){.type = TR_GGUF_ARRAY, .v.arr = {t, n, (const uint8_t *)p, NULL, NULL}};
}

static inline tr_status tt_set_strs(tr_gguf_writer *w, const char *key, const char *const *s, size_t n, tr_error *err) {
    tt_strarr a;
    tt_strarr_make(&a, s, n);
    tr_status st = tr_gguf_writer_set(w, key, &a.val, err);
    tt_strarr_free(&a);
    return st;
}

static inline tr_status tt_set_bool(tr_gguf_writer *w, const char *key, bool b, tr_error *err) {
    tr_gguf_value v = {.type = TR_GGUF_BOOL, .v.b = b};
    return tr_gguf_writer_set(w, key, &v, err);
}

/* A small SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte
 * tokens, some pieces (scored so longer pieces win), one control and one
 * user-defined token. Returned as a writer so tests can replace keys. */
typedef struct tt_vocab {
    char **tokens;
    size_t n;
    float *scores;
    int32_t *types;
} tt_vocab;

static inline void tt_vocab_spm(tt_vocab *tv) {
    static const char *const pieces[] = {
        "\xe2\x96\x81", "\xe2\x96\x81h", "\xe2\x96\x81he", "\xe2\x96\x81hel", "\xe2\x96\x81hell", "\xe2\x96\x81hello",
        "h", "e", "l", "o", "w", "r", "d", "\xc3\xa9", "\xe2\x96\x81w", "wo", "\xe2\x96\x81wo", "rld",
        "\xe2\x96\x81world", "\xe4\xb8\xad", "\xe6\x96\x87", "\xe4\xb8\xad\xe6\x96\x87", "ab", "abc", "bc", "a", "b", "c",
    };
    size_t np = sizeof pieces / sizeof pieces[0];
    tv->n = 3 + 256 + np + 2;
    tv->tokens = calloc(tv->n, sizeof *tv->tokens);
    tv->scores = calloc(tv->n, sizeof *tv->scores);
    tv->types = calloc(tv->n, sizeof *tv->types);
    size_t k = 0;
    const char *head[3] = {"<unk>", "<s>", "</s>"};
    int32_t head_t[3] = {2, 3, 3};
    for (int i = 0; i < 3; i++, k++) {
        tv->tokens[k] = strdup(head[i]);
        tv->types[k] = head_t[i];
    }
    for (int b = 0; b < 256; b++, k++) {
        tv->tokens[k] = malloc(8);
        snprintf(tv->tokens[k], 8, "<0x%02X>", b);
        tv->types[k] = 6;
    }
    for (size_t i = 0; i < np; i++, k++) {
        tv->tokens[k] = strdup(pieces[i]);
        tv->scores[k] = (float)strlen(pieces[i]) - (float)i * 0.01f;
        tv->types[k] = 1;
    }
    tv->tokens[k] = strdup("<ctl>");
    tv->types[k++] = 3;
    tv->tokens[k] = strdup("<ud>");
    tv->types[k++] = 4;
}

static inline void tt_vocab_free(tt_vocab *tv) {
    for (size_t i = 0; i < tv->n; i++) free(tv->tokens[i]);
    free(tv->tokens);
    free(tv->scores);
    free(tv->types);
}

/* Writer holding tv as tokenizer.ggml.* (model "llama"), minus the key named
 * `omit` (NULL: none). */
static inline tr_gguf_writer *tt_writer_spm(const tt_vocab *tv, const char *omit, tr_error *err) {
    tr_gguf_writer *w = tr_gguf_writer_new();
    if (!w) return NULL;
#define TT_OMIT(k) (omit && !strcmp(omit, k))
    tr_gguf_writer_set_str(w, "general.architecture", "llama", err);
    if (!TT_OMIT("tokenizer.ggml.model")) tr_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", err);
    if (!TT_OMIT("tokenizer.ggml.tokens")) tt_set_strs(w, "tokenizer.ggml.tokens", (const char *const *)tv->tokens, tv->n, err);
    tr_gguf_value sc = tt_arr(TR_GGUF_FLOAT32, tv->scores, tv->n), ty = tt_arr(TR_GGUF_INT32, tv->types, tv->n);
    if (!TT_OMIT("tokenizer.ggml.scores")) tr_gguf_writer_set(w, "tokenizer.ggml.scores", &sc, err);
    if (!TT_OMIT("tokenizer.ggml.token_type")) tr_gguf_writer_set(w, "tokenizer.ggml.token_type", &ty, err);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1, err);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2, err);
    tt_set_bool(w, "tokenizer.ggml.add_space_prefix", false, err);
#undef TT_OMIT
    return w;
}

/* Write w to a fresh temporary file and load its vocabulary. */
static inline tr_status tt_load(tr_gguf_writer *w, const char *tag, tr_gguf **g, tr_vocab **v, tr_error *err) {
    char path[256];
    snprintf(path, sizeof path, "/tmp/trinity_tok_%d_%s.gguf", (int)getpid(), tag);
    *g = NULL;
    *v = NULL;
    tr_status st = tr_gguf_writer_write(w, path, err);
    if (st == TR_OK) st = tr_gguf_open(path, g, err);
    unlink(path);
    if (st != TR_OK) return st;
    st = tr_vocab_load(*g, v, err);
    if (st != TR_OK) {
        tr_gguf_close(*g);
        *g = NULL;
    }
    return st;
}

#endif
