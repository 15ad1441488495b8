/* The vocabulary's insides, shared by vocab.c (loading, special tokens,
 * pieces), spm.c, bpe.c and pretok.c. Nothing here is public. */
#ifndef TR_TOKENIZER_VOCAB_IMPL_H
#define TR_TOKENIZER_VOCAB_IMPL_H

#include "trinity.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A growable array of token ids: the tokenizers' output. */
typedef struct tr_ids {
    int32_t *v;
    size_t n, cap;
} tr_ids;
bool tr_ids_push(tr_ids *a, int32_t id);

/* Open-addressing hash from token text to id, built once at load. */
typedef struct tr_text_map {
    int32_t *slot; /* -1 = empty, else token id */
    uint64_t mask;
} tr_text_map;

/* BPE merges keyed by the pair of token ids: what the pair becomes and the
 * merge's rank (its index in tokenizer.ggml.merges; lower merges first). */
typedef struct tr_merge {
    int32_t left, right, result, rank; /* left = -1: empty slot */
} tr_merge;

/* One step of a pre-tokenizer: llama.cpp's hand-written splitters for the
 * GPT-2, Llama 3 and Qwen2 expressions, or a regular expression run the way
 * llama.cpp runs std::regex (see pretok.c). */
typedef enum tr_pretok_kind {
    TR_PRETOK_END = 0, /* ends a list of steps */
    TR_PRETOK_GPT2,
    TR_PRETOK_LLAMA3,
    TR_PRETOK_QWEN2,
    TR_PRETOK_REGEX,
} tr_pretok_kind;

typedef struct tr_pretok_step {
    tr_pretok_kind kind;
    bool collapsed;   /* REGEX: the expression uses \p{..}: match on category stand-ins */
    void *code;       /* REGEX: compiled pcre2_code_32 */
} tr_pretok_step;

#define TR_PRETOK_MAX_STEPS 8

typedef struct tr_pretok {
    tr_pretok_step steps[TR_PRETOK_MAX_STEPS];
    int n_steps;
} tr_pretok;

struct tr_vocab {
    tr_vocab_kind kind;
    int32_t n_tokens;

    char *arena;        /* every token's text, each NUL-terminated */
    uint64_t *text_off; /* [n_tokens] offset into arena */
    uint32_t *text_len; /* [n_tokens] */
    float *score;       /* [n_tokens] */
    uint32_t *attr;     /* [n_tokens] tr_token_attr bits */
    tr_text_map map;

    tr_merge *merges;   /* BPE: hash table of 2^k slots */
    uint64_t merge_mask;

    /* Special tokens in the order the partition looks for them (longest text
     * first), and a filter on their first two bytes for quick rejection. */
    int32_t *special;
    size_t n_special;
    /* A trie of the special tokens' texts, to find in one pass over a text
     * which of them occur at all. Edges live in a hash table keyed by
     * (node, byte); node_special[n] is the index in `special` of the token
     * ending at node n, or -1. */
    struct tr_trie_edge {
        int32_t from, to; /* from = -1: empty slot */
        uint8_t byte;
    } *edges;
    uint64_t edge_mask;
    int32_t *node_special;
    int32_t n_nodes;

    int32_t *eog; /* sorted ids that end generation */
    size_t n_eog;

    int32_t byte_token[256]; /* SPM: <0xXX> (or the byte itself); BPE: the one-byte token */

    int32_t bos, eos, eot, eom, unk, sep, pad, mask;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;

    bool add_bos, add_eos, add_space_prefix, ignore_merges, clean_spaces;
    char pre_name[64];
    tr_pretok pre;
    uint32_t gpt2_cp[256]; /* byte -> code point of GPT-2's alphabet */
};

static inline const char *tr_vocab_text(const tr_vocab *v, int32_t id) { return v->arena + v->text_off[id]; }

uint64_t tr_hash_bytes(const char *s, size_t n);
/* Id of the token whose text is exactly s[0..n), or -1. */
int32_t tr_text_map_find(const tr_vocab *v, const char *s, size_t n);

/* Merge of two adjacent tokens, or NULL. */
const tr_merge *tr_merge_find(const tr_vocab *v, int32_t left, int32_t right);

/* SPM: tokenize one fragment (spaces already escaped as U+2581). */
tr_status tr_spm_tokenize(const tr_vocab *v, const char *text, size_t len, tr_ids *out, tr_error *err);
/* BPE: pre-tokenize and merge one fragment. */
tr_status tr_bpe_tokenize(const tr_vocab *v, const char *text, size_t len, tr_ids *out, tr_error *err);

/* Pre-tokenizers by tokenizer.ggml.pre. */
tr_status tr_pretok_init(tr_pretok *p, const char *pre, tr_error *err);
void tr_pretok_free(tr_pretok *p);
/* Split text into words; each word is written to *buf (GPT-2 byte-encoded
 * when byte_encode) and its end offset appended to *ends. Buffers are
 * malloc'ed/grown by the callee; the caller frees them. */
tr_status tr_pretok_split(const tr_pretok *p, const char *text, size_t len, const uint32_t gpt2_cp[256],
                          char **buf, size_t *buf_len, size_t **ends, size_t *n_words, tr_error *err);

#endif
