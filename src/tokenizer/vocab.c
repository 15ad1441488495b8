/* The vocabulary: tokenizer.ggml.* read from a GGUF file, the special-token
 * partition that runs before the SPM/BPE tokenizers, and ids back to bytes.
 *
 * llama.cpp (llama-vocab.cpp) is the reference for every behaviour here:
 * default ids and flags per tokenizer family, which tokens count as special,
 * the EOG set, and how pieces are rendered. Where llama.cpp would abort or
 * crash on malformed metadata, we return an error that names the field. */
#define _GNU_SOURCE /* memmem */
#include "core/util.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab_impl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY(x) "tokenizer.ggml." x

bool tr_ids_push(tr_ids *a, int32_t id) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) return false;
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return true;
}

/* FNV-1a: simple, and good enough spread for token texts. */
uint64_t tr_hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

int32_t tr_text_map_find(const tr_vocab *v, const char *s, size_t n) {
    uint64_t i = tr_hash_bytes(s, n) & v->map.mask;
    for (;; i = (i + 1) & v->map.mask) {
        int32_t id = v->map.slot[i];
        if (id < 0) return -1;
        if (v->text_len[id] == n && !memcmp(tr_vocab_text(v, id), s, n)) return id;
    }
}

static inline uint64_t pair_hash(int32_t a, int32_t b) {
    uint64_t h = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 31);
}

const tr_merge *tr_merge_find(const tr_vocab *v, int32_t left, int32_t right) {
    if (!v->merges) return NULL;
    for (uint64_t i = pair_hash(left, right) & v->merge_mask;; i = (i + 1) & v->merge_mask) {
        const tr_merge *m = &v->merges[i];
        if (m->left < 0) return NULL;
        if (m->left == left && m->right == right) return m;
    }
}

static inline uint64_t edge_hash(int32_t from, uint8_t b) {
    uint64_t h = ((uint64_t)(uint32_t)from << 8 | b) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static int32_t trie_child(const tr_vocab *v, int32_t from, uint8_t b) {
    for (uint64_t i = edge_hash(from, b) & v->edge_mask;; i = (i + 1) & v->edge_mask) {
        const struct tr_trie_edge *e = &v->edges[i];
        if (e->from < 0) return -1;
        if (e->from == from && e->byte == b) return e->to;
    }
}

/* Trie of the texts of v->special (built after they are sorted). */
static bool build_trie(tr_vocab *v) {
    uint64_t total = 1;
    for (size_t k = 0; k < v->n_special; k++) total += v->text_len[v->special[k]];
    uint64_t cap = 16;
    while (cap < 2 * total) cap <<= 1;
    v->edges = malloc(cap * sizeof *v->edges);
    v->node_special = malloc(total * sizeof *v->node_special);
    if (!v->edges || !v->node_special) return false;
    v->edge_mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++) v->edges[i].from = -1;
    v->n_nodes = 1;
    v->node_special[0] = -1;
    for (size_t k = 0; k < v->n_special; k++) {
        const char *t = tr_vocab_text(v, v->special[k]);
        int32_t node = 0;
        for (uint32_t j = 0; j < v->text_len[v->special[k]]; j++) {
            uint8_t b = (uint8_t)t[j];
            int32_t next = trie_child(v, node, b);
            if (next < 0) {
                next = v->n_nodes++;
                v->node_special[next] = -1;
                uint64_t i = edge_hash(node, b) & v->edge_mask;
                while (v->edges[i].from >= 0) i = (i + 1) & v->edge_mask;
                v->edges[i] = (struct tr_trie_edge){node, next, b};
            }
            node = next;
        }
        v->node_special[node] = (int32_t)k;
    }
    return true;
}

/* ------------------------------------------------------------- loading */

/* Pre-tokenizer names llama.cpp knows, grouped by the expressions they use
 * (pretok.c) and the flags they set. */
typedef struct pre_def {
    const char *names; /* space-separated */
    const char *style;
    bool ignore_merges, add_bos, keep_spaces, no_bos;
} pre_def;

static const pre_def pre_defs[] = {
    {"default", "default", false, false, false, false},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano", "llama3", true, true, false, false},
    {"dbrx smaug-bpe", "llama3", false, false, false, false},
    {"chatglm-bpe", "llama3", false, false, false, true},
    {"glm4 glm5", "llama3", true, false, false, true},
    {"deepseek-llm", "deepseek-llm", false, false, true, false},
    {"deepseek-coder", "deepseek-coder", false, false, true, false},
    {"falcon", "falcon", false, false, false, false},
    {"gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert jina-v1-en "
     "jina-v2-code roberta-bpe mpt olmo jais exaone4",
     "gpt2", false, false, false, false},
    {"trillion granite-docling", "gpt2", false, false, true, false},
    {"starcoder refact codeshell exaone minerva-7b mellum2", "starcoder", false, false, false, false},
    {"command-r smollm", "starcoder", false, false, true, false},
    {"qwen2 deepseek-r1-qwen kormo f2llmv2", "qwen2", false, false, true, false},
    {"stablelm2 megrez", "qwen2", false, false, false, false},
    {"poro-chat viking", NULL, false, false, true, false}, /* style = the name itself, below */
    {"bloom gpt3-finnish", "bloom", false, false, false, false},
    {"deepseek-v3 hunyuan-dense joyai-llm hy_v4", "deepseek-v3", false, false, true, false},
    {"gpt-4o llama4 kanana2 talkie minimax-m2", "gpt-4o", false, false, true, false},
    {"tekken", "tekken", true, true, true, false},
    {"seed-coder", "seed-coder", false, false, true, false},
    {"grok-2", "grok-2", false, false, true, false},
    {"ufakzeka", "ufakzeka", false, false, true, false},
    {"bailingmoe bailingmoe2 llada-moe", "bailingmoe", false, false, true, false},
    {"minicpm5", "minicpm5", true, false, false, false},
    {"exaone-moe", "exaone-moe", false, false, false, false},
    {"laguna", "laguna", false, false, true, false},
    {"hunyuan solar-open", "qwen2", false, false, true, false},
};

static const pre_def *find_pre(const char *name, const char **style) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < sizeof pre_defs / sizeof pre_defs[0]; i++) {
        for (const char *p = pre_defs[i].names; *p;) {
            const char *e = strchr(p, ' ');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == nl && !memcmp(p, name, l)) {
                *style = pre_defs[i].style ? pre_defs[i].style : (!strcmp(name, "viking") ? "viking" : "bloom");
                return &pre_defs[i];
            }
            p += l + (e ? 1 : 0);
        }
    }
    return NULL;
}

/* Texts llama.cpp recognises as end-of-turn / end-of-generation / FIM. */
static const char *const eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
    "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {"<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>", "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const fim_suf_texts[] = {"<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "hole\xef\xbd\x9c>", "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const fim_mid_texts[] = {"<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>", "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const fim_pad_texts[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const fim_rep_texts[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "[e~[", NULL};

static bool text_is(const tr_vocab *v, int32_t id, const char *s) {
    return id >= 0 && strlen(s) == v->text_len[id] && !memcmp(s, tr_vocab_text(v, id), v->text_len[id]);
}

static int32_t find_cstr(const tr_vocab *v, const char *s) { return tr_text_map_find(v, s, strlen(s)); }

/* Optional bool key: absent leaves *out; another type is an error. */
static tr_status get_flag(const tr_gguf *g, const char *key, bool *out, tr_error *err) {
    const tr_gguf_value *val = tr_gguf_get(g, key);
    if (!val) return TR_OK;
    if (val->type != TR_GGUF_BOOL) return tr_err_set(err, TR_ERR_FORMAT, "%s: expected a bool, found %s", key, tr_gguf_type_name(val->type));
    *out = val->v.b;
    return TR_OK;
}

static bool is_int_type(tr_gguf_type t) {
    return t == TR_GGUF_UINT8 || t == TR_GGUF_INT8 || t == TR_GGUF_UINT16 || t == TR_GGUF_INT16 || t == TR_GGUF_UINT32 ||
           t == TR_GGUF_INT32 || t == TR_GGUF_UINT64 || t == TR_GGUF_INT64;
}

/* A special token id key. Absent: keep the default (disabled if out of
 * range). Present but out of range: an error for the ids generation depends
 * on (strict), otherwise ignored as llama.cpp does. */
static tr_status get_special(const tr_vocab *v, const tr_gguf *g, const char *key, int32_t *id, bool strict, tr_error *err) {
    if (*id >= v->n_tokens) *id = -1;
    const tr_gguf_value *val = tr_gguf_get(g, key);
    if (!val) return TR_OK;
    if (!is_int_type(val->type)) return tr_err_set(err, TR_ERR_FORMAT, "%s: expected an integer, found %s", key, tr_gguf_type_name(val->type));
    int64_t x;
    if (!tr_gguf_get_int(g, key, &x)) return tr_err_set(err, TR_ERR_FORMAT, "%s: unreadable integer", key);
    if (x < 0 || x >= v->n_tokens) {
        if (strict)
            return tr_err_set(err, TR_ERR_FORMAT, "%s = %lld is out of range (the vocabulary has %d tokens)", key,
                              (long long)x, v->n_tokens);
        return TR_OK;
    }
    *id = (int32_t)x;
    return TR_OK;
}

/* Up to 40 bytes of s for an error message: control bytes become '?', so
 * the message stays on one line. */
static const char *quote(char out[48], const char *s, size_t n) {
    size_t k = n < 40 ? n : 40;
    for (size_t i = 0; i < k; i++) out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7F ? '?' : s[i];
    out[k] = 0;
    return out;
}

static tr_status load_tokens(tr_vocab *v, const tr_gguf *g, tr_error *err) {
    const tr_gguf_value *toks = tr_gguf_get(g, KEY("tokens"));
    if (!toks) return tr_err_set(err, TR_ERR_FORMAT, "%s is missing", KEY("tokens"));
    if (toks->type != TR_GGUF_ARRAY || toks->v.arr.type != TR_GGUF_STRING)
        return tr_err_set(err, TR_ERR_FORMAT, "%s: expected an array of strings", KEY("tokens"));
    uint64_t n = toks->v.arr.n;
    if (n == 0) return tr_err_set(err, TR_ERR_FORMAT, "%s is empty", KEY("tokens"));
    if (n > (1u << 30)) return tr_err_set(err, TR_ERR_FORMAT, "%s: %llu tokens is too many", KEY("tokens"), (unsigned long long)n);
    v->n_tokens = (int32_t)n;

    const tr_gguf_value *sc = tr_gguf_get(g, KEY("scores"));
    if (sc) {
        if (sc->type != TR_GGUF_ARRAY || (sc->v.arr.type != TR_GGUF_FLOAT32 && sc->v.arr.type != TR_GGUF_INT32))
            return tr_err_set(err, TR_ERR_FORMAT, "%s: expected an array of float32 or int32", KEY("scores"));
        if (sc->v.arr.n < n)
            return tr_err_set(err, TR_ERR_FORMAT, "%s has %llu entries for %llu tokens", KEY("scores"),
                              (unsigned long long)sc->v.arr.n, (unsigned long long)n);
    }
    const tr_gguf_value *tt = tr_gguf_get(g, KEY("token_type"));
    if (tt) {
        if (tt->type != TR_GGUF_ARRAY || !is_int_type(tt->v.arr.type))
            return tr_err_set(err, TR_ERR_FORMAT, "%s: expected an array of int32", KEY("token_type"));
        if (tt->v.arr.n < n)
            return tr_err_set(err, TR_ERR_FORMAT, "%s has %llu entries for %llu tokens", KEY("token_type"),
                              (unsigned long long)tt->v.arr.n, (unsigned long long)n);
    }

    uint64_t total = 0;
    for (uint64_t i = 0; i < n; i++) {
        tr_str s = tr_gguf_arr_str(toks, i);
        total += (s.len ? s.len : 24) + 1; /* an empty text becomes "[EMPTY_<i>]" */
    }
    v->arena = malloc(total);
    v->text_off = malloc(n * sizeof *v->text_off);
    v->text_len = malloc(n * sizeof *v->text_len);
    v->score = malloc(n * sizeof *v->score);
    v->attr = malloc(n * sizeof *v->attr);
    uint64_t cap = 1;
    while (cap < 2 * n) cap <<= 1;
    v->map.slot = malloc(cap * sizeof *v->map.slot);
    v->map.mask = cap - 1;
    if (!v->arena || !v->text_off || !v->text_len || !v->score || !v->attr || !v->map.slot)
        return tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory for %llu tokens", KEY("tokens"), (unsigned long long)n);
    memset(v->map.slot, 0xFF, cap * sizeof *v->map.slot);

    uint64_t off = 0;
    char q[48];
    for (uint64_t i = 0; i < n; i++) {
        tr_str s = tr_gguf_arr_str(toks, i);
        char *dst = v->arena + off;
        size_t len;
        if (s.len == 0) {
            len = (size_t)snprintf(dst, 25, "[EMPTY_%llu]", (unsigned long long)i); /* as llama.cpp names it */
        } else {
            if (s.len > UINT32_MAX) return tr_err_set(err, TR_ERR_FORMAT, "%s[%llu] is too long", KEY("tokens"), (unsigned long long)i);
            len = (size_t)s.len;
            memcpy(dst, s.ptr, len);
        }
        dst[len] = 0;
        v->text_off[i] = off;
        v->text_len[i] = (uint32_t)len;
        off += len + 1;

        uint64_t h = tr_hash_bytes(dst, len) & v->map.mask;
        for (;; h = (h + 1) & v->map.mask) {
            int32_t o = v->map.slot[h];
            if (o < 0) break;
            if (v->text_len[o] == len && !memcmp(tr_vocab_text(v, o), dst, len))
                return tr_err_set(err, TR_ERR_FORMAT, "%s: tokens %d and %llu have the same text '%s'", KEY("tokens"), o,
                                  (unsigned long long)i, quote(q, dst, len));
        }
        v->map.slot[h] = (int32_t)i;

        v->score[i] = sc ? (float)(sc->v.arr.type == TR_GGUF_FLOAT32 ? tr_gguf_arr_float(sc, i) : (double)tr_gguf_arr_int(sc, i)) : 0.0f;
        uint32_t a = TR_TOKEN_ATTR_NORMAL;
        if (tt) {
            switch (tr_gguf_arr_int(tt, i)) { /* llama_token_type -> attribute */
            case 0: a = TR_TOKEN_ATTR_UNDEFINED; break;
            case 1: a = TR_TOKEN_ATTR_NORMAL; break;
            case 2: a = TR_TOKEN_ATTR_UNKNOWN; break;
            case 3: a = TR_TOKEN_ATTR_CONTROL; break;
            case 4: a = TR_TOKEN_ATTR_USER_DEFINED; break;
            case 5: a = TR_TOKEN_ATTR_UNUSED; break;
            case 6: a = TR_TOKEN_ATTR_BYTE; break;
            default: a = TR_TOKEN_ATTR_UNDEFINED; break;
            }
        }
        v->attr[i] = a;
    }
    return TR_OK;
}

static tr_status load_merges(tr_vocab *v, const tr_gguf *g, tr_error *err) {
    const tr_gguf_value *mg = tr_gguf_get(g, KEY("merges"));
    if (!mg) return tr_err_set(err, TR_ERR_FORMAT, "%s is missing (needed by a BPE vocabulary)", KEY("merges"));
    if (mg->type != TR_GGUF_ARRAY || mg->v.arr.type != TR_GGUF_STRING)
        return tr_err_set(err, TR_ERR_FORMAT, "%s: expected an array of strings", KEY("merges"));
    uint64_t n = mg->v.arr.n;
    if (n > (1u << 30)) return tr_err_set(err, TR_ERR_FORMAT, "%s: too many merges", KEY("merges"));
    uint64_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    v->merges = malloc(cap * sizeof *v->merges);
    if (!v->merges) return tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory for %llu merges", KEY("merges"), (unsigned long long)n);
    v->merge_mask = cap - 1;
    for (uint64_t i = 0; i < cap; i++) v->merges[i].left = -1;
    char *cat = NULL, q[48];
    size_t cat_cap = 0;
    tr_status st = TR_OK;
    for (uint64_t i = 0; i < n && st == TR_OK; i++) {
        tr_str s = tr_gguf_arr_str(mg, i);
        /* "left right": the first space after the first byte separates them. */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            st = tr_err_set(err, TR_ERR_FORMAT, "%s[%llu] '%s' is not two tokens separated by a space", KEY("merges"),
                            (unsigned long long)i, quote(q, s.ptr, s.len));
            break;
        }
        size_t ll = (size_t)(sp - s.ptr), rl = s.len - ll - 1;
        int32_t l = tr_text_map_find(v, s.ptr, ll), r = tr_text_map_find(v, sp + 1, rl);
        if (ll + rl > cat_cap) {
            cat_cap = (ll + rl) * 2;
            char *nc = realloc(cat, cat_cap);
            if (!nc) {
                st = tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory", KEY("merges"));
                break;
            }
            cat = nc;
        }
        memcpy(cat, s.ptr, ll);
        memcpy(cat + ll, sp + 1, rl);
        int32_t res = tr_text_map_find(v, cat, ll + rl);
        if (l < 0 || r < 0 || res < 0) {
            const char *what = l < 0 ? "its left part is" : r < 0 ? "its right part is" : "the merged text is";
            st = tr_err_set(err, TR_ERR_FORMAT, "%s[%llu] '%s': %s not a token", KEY("merges"), (unsigned long long)i,
                            quote(q, s.ptr, s.len), what);
            break;
        }
        uint64_t h = pair_hash(l, r) & v->merge_mask;
        for (;; h = (h + 1) & v->merge_mask) {
            tr_merge *m = &v->merges[h];
            if (m->left < 0) {
                *m = (tr_merge){l, r, res, (int32_t)i};
                break;
            }
            if (m->left == l && m->right == r) break; /* a repeated merge keeps its first (lowest) rank */
        }
    }
    free(cat);
    return st;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Longest text first; equal lengths by id, so the order is deterministic. */
typedef struct len_id {
    uint32_t len;
    int32_t id;
} len_id;

static int cmp_len_id(const void *a, const void *b) {
    const len_id *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void str_lower(char *s) {
    for (; *s; s++) *s = (char)tolower((unsigned char)*s);
}

static void get_cstr(const tr_gguf *g, const char *key, char *out, size_t cap) {
    tr_str s;
    out[0] = 0;
    if (tr_gguf_get_str(g, key, &s)) {
        size_t l = s.len < cap - 1 ? (size_t)s.len : cap - 1;
        memcpy(out, s.ptr, l);
        out[l] = 0;
    }
}

/* EOG set, special-token detection by text, and the attribute fix-ups
 * llama.cpp applies after reading the ids. */
static tr_status finish_specials(tr_vocab *v, const tr_gguf *g, tr_error *err) {
    int32_t n = v->n_tokens;
    uint32_t *attr = v->attr;
    struct {
        int32_t *id;
        const char *const *texts;
    } detect[] = {{&v->eot, eot_texts},         {&v->eom, eom_texts},         {&v->fim_pre, fim_pre_texts},
                  {&v->fim_suf, fim_suf_texts}, {&v->fim_mid, fim_mid_texts}, {&v->fim_pad, fim_pad_texts},
                  {&v->fim_rep, fim_rep_texts}, {&v->fim_sep, fim_sep_texts}};
    /* llama.cpp takes the first candidate its hash map yields, an order we
     * cannot reproduce; we take the first of the list that exists, which puts
     * <|im_end|> before <|endoftext|> as the end of a turn. */
    for (size_t k = 0; k < sizeof detect / sizeof detect[0]; k++) {
        if (*detect[k].id >= 0) continue;
        for (const char *const *t = detect[k].texts; *t; t++) {
            int32_t id = find_cstr(v, *t);
            if (id >= 0) {
                *detect[k].id = id;
                attr[id] |= TR_TOKEN_ATTR_CONTROL;
                break;
            }
        }
    }
    for (int32_t id = 0; id < n; id++)
        if ((attr[id] & TR_TOKEN_ATTR_CONTROL) && strstr(tr_vocab_text(v, id), "unused")) attr[id] |= TR_TOKEN_ATTR_UNUSED;

    /* EOG: a bitmap while building, a sorted list after. */
    uint8_t *eog = calloc((size_t)n, 1);
    if (!eog) return tr_err_set(err, TR_ERR_NOMEM, "vocabulary: out of memory");
    if (v->fim_pad >= 0) eog[v->fim_pad] = 1;
    if (v->fim_rep >= 0) eog[v->fim_rep] = 1;
    if (v->fim_sep >= 0) eog[v->fim_sep] = 1;
    for (const char *const *t = eog_texts; *t; t++) {
        int32_t id = find_cstr(v, *t);
        if (id >= 0) {
            eog[id] = 1;
            attr[id] |= TR_TOKEN_ATTR_CONTROL;
        }
    }
    /* gpt-oss: these are always rendered. */
    static const char *const always_rendered[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};
    for (const char *const *t = always_rendered; *t; t++) {
        int32_t id = find_cstr(v, *t);
        if (id >= 0) attr[id] = TR_TOKEN_ATTR_USER_DEFINED;
    }
    if (v->eos >= 0) eog[v->eos] = 1;
    if (v->eot >= 0) eog[v->eot] = 1;
    if (v->eom >= 0) eog[v->eom] = 1;

    /* o200k_harmony / solar-open: <|end|> is no EOG when <|return|> and
     * <|call|> (or <|calls|> and <|flush|>) are; a normal </s> where
     * <|tool_response>/<|plamo:eos|> exists. */
    bool has_return = false, has_call = false, has_flush = false, has_marker = false;
    int32_t end_id = -1, s_id = -1;
    for (int32_t id = 0; id < n; id++) {
        if (!eog[id]) continue;
        if (text_is(v, id, "<|return|>")) has_return = true;
        else if (text_is(v, id, "<|call|>") || text_is(v, id, "<|calls|>")) has_call = true;
        else if (text_is(v, id, "<|flush|>")) has_flush = true;
        else if (text_is(v, id, "<|end|>")) end_id = id;
        if (text_is(v, id, "<|tool_response>") || text_is(v, id, "<|plamo:eos|>")) has_marker = true;
        else if (text_is(v, id, "</s>")) s_id = id;
    }
    if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush))) {
        eog[end_id] = 0;
        attr[end_id] = TR_TOKEN_ATTR_USER_DEFINED;
    }
    if (has_marker && s_id >= 0) {
        eog[s_id] = 0;
        attr[s_id] = TR_TOKEN_ATTR_NORMAL;
    }
    size_t ne = 0;
    for (int32_t id = 0; id < n; id++) ne += eog[id];
    v->eog = malloc((ne ? ne : 1) * sizeof *v->eog);
    if (!v->eog) {
        free(eog);
        return tr_err_set(err, TR_ERR_NOMEM, "vocabulary: out of memory");
    }
    for (int32_t id = 0; id < n; id++)
        if (eog[id]) v->eog[v->n_eog++] = id;
    free(eog);

    /* Tokens the partition looks for, longest first. */
    size_t ns = 0;
    for (int32_t id = 0; id < n; id++)
        ns += (attr[id] & (TR_TOKEN_ATTR_CONTROL | TR_TOKEN_ATTR_USER_DEFINED | TR_TOKEN_ATTR_UNKNOWN)) != 0;
    v->special = malloc((ns ? ns : 1) * sizeof *v->special);
    len_id *order = malloc((ns ? ns : 1) * sizeof *order);
    if (!v->special || !order) {
        free(order);
        return tr_err_set(err, TR_ERR_NOMEM, "vocabulary: out of memory");
    }
    for (int32_t id = 0; id < n; id++)
        if (attr[id] & (TR_TOKEN_ATTR_CONTROL | TR_TOKEN_ATTR_USER_DEFINED | TR_TOKEN_ATTR_UNKNOWN))
            order[v->n_special++] = (len_id){v->text_len[id], id};
    qsort(order, v->n_special, sizeof *order, cmp_len_id);
    for (size_t i = 0; i < v->n_special; i++) v->special[i] = order[i].id;
    free(order);
    if (!build_trie(v)) return tr_err_set(err, TR_ERR_NOMEM, "vocabulary: out of memory");

    /* Per-model attributes llama.cpp sets by name. */
    char name[128], arch[64];
    get_cstr(g, "general.name", name, sizeof name);
    get_cstr(g, "general.architecture", arch, sizeof arch);
    str_lower(name);
    int32_t t;
    if (strstr(v->pre_name, "jina-v2-de") || strstr(v->pre_name, "jina-v2-es") || strstr(v->pre_name, "jina-v2-code") ||
        strstr(arch, "nomic-bert-moe") || strstr(arch, "jina-bert-v3")) {
        if ((t = find_cstr(v, "<mask>")) >= 0) attr[t] |= TR_TOKEN_ATTR_LSTRIP;
    } else if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        for (size_t i = 0; i < v->n_special; i++) attr[v->special[i]] |= TR_TOKEN_ATTR_RSTRIP;
        if ((t = find_cstr(v, "</s>")) >= 0) attr[t] |= TR_TOKEN_ATTR_RSTRIP;
        static const char *const no_rstrip[] = {"<unk>", "<s>", "<|endoftext|>"};
        for (size_t k = 0; k < 3; k++)
            if ((t = find_cstr(v, no_rstrip[k])) >= 0) attr[t] &= ~(uint32_t)TR_TOKEN_ATTR_RSTRIP;
    } else if (strstr(name, "modern-bert")) {
        if ((t = find_cstr(v, "[MASK]")) >= 0) attr[t] |= TR_TOKEN_ATTR_LSTRIP;
    }
    return TR_OK;
}

tr_status tr_vocab_load(const tr_gguf *g, tr_vocab **out, tr_error *err) {
    *out = NULL;
    tr_str model;
    char q[48];
    if (!tr_gguf_get(g, KEY("model"))) return tr_err_set(err, TR_ERR_FORMAT, "%s is missing", KEY("model"));
    if (!tr_gguf_get_str(g, KEY("model"), &model)) return tr_err_set(err, TR_ERR_FORMAT, "%s: expected a string", KEY("model"));
    tr_vocab_kind kind;
    if (model.len == 5 && !memcmp(model.ptr, "llama", 5)) kind = TR_VOCAB_SPM;
    else if (model.len == 4 && !memcmp(model.ptr, "gpt2", 4)) kind = TR_VOCAB_BPE;
    else
        return tr_err_set(err, TR_ERR_UNSUPPORTED, "%s = '%s' is not supported (only 'llama' and 'gpt2')", KEY("model"),
                          quote(q, model.ptr, model.len));

    tr_vocab *v = calloc(1, sizeof *v);
    if (!v) return tr_err_set(err, TR_ERR_NOMEM, "vocabulary: out of memory");
    v->kind = kind;
    tr_status st;
    const tr_gguf_value *pre = tr_gguf_get(g, KEY("pre"));
    if (pre && pre->type != TR_GGUF_STRING) {
        st = tr_err_set(err, TR_ERR_FORMAT, "%s: expected a string", KEY("pre"));
        goto fail;
    }
    get_cstr(g, KEY("pre"), v->pre_name, sizeof v->pre_name);

    if ((st = load_tokens(v, g, err)) != TR_OK) goto fail;

    v->eot = v->eom = v->sep = v->pad = v->mask = -1;
    v->fim_pre = v->fim_suf = v->fim_mid = v->fim_pad = v->fim_rep = v->fim_sep = -1;
    if (kind == TR_VOCAB_SPM) {
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_space_prefix = true;
        v->add_bos = true;
    } else {
        v->bos = 11, v->eos = 11, v->unk = -1;
        v->clean_spaces = true;
        const char *style = "default";
        const char *name = v->pre_name[0] ? v->pre_name : "default";
        const pre_def *pd = find_pre(name, &style);
        if (!pd) {
            st = tr_err_set(err, TR_ERR_UNSUPPORTED, "%s = '%s': this pre-tokenizer is not supported", KEY("pre"), quote(q, name, strlen(name)));
            goto fail;
        }
        v->ignore_merges = pd->ignore_merges;
        v->add_bos = pd->add_bos;
        if (pd->keep_spaces) v->clean_spaces = false;
        if (pd->no_bos) v->bos = -1;
        if ((st = tr_pretok_init(&v->pre, style, err)) != TR_OK) goto fail;
        if ((st = load_merges(v, g, err)) != TR_OK) goto fail;
    }
    if ((st = get_flag(g, KEY("add_space_prefix"), &v->add_space_prefix, err)) != TR_OK) goto fail;

    struct {
        const char *key;
        int32_t *id;
        bool strict;
    } ids[] = {
        {KEY("bos_token_id"), &v->bos, true},         {KEY("eos_token_id"), &v->eos, true},
        {KEY("eot_token_id"), &v->eot, true},         {KEY("eom_token_id"), &v->eom, true},
        {KEY("unknown_token_id"), &v->unk, false},    {KEY("seperator_token_id"), &v->sep, false},
        {KEY("padding_token_id"), &v->pad, false},    {KEY("mask_token_id"), &v->mask, false},
        {KEY("fim_pre_token_id"), &v->fim_pre, false}, {KEY("fim_suf_token_id"), &v->fim_suf, false},
        {KEY("fim_mid_token_id"), &v->fim_mid, false}, {KEY("fim_pad_token_id"), &v->fim_pad, false},
        {KEY("fim_rep_token_id"), &v->fim_rep, false}, {KEY("fim_sep_token_id"), &v->fim_sep, false},
        {KEY("prefix_token_id"), &v->fim_pre, false}, {KEY("suffix_token_id"), &v->fim_suf, false},
        {KEY("middle_token_id"), &v->fim_mid, false},
    };
    for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++)
        if ((st = get_special(v, g, ids[k].key, ids[k].id, ids[k].strict, err)) != TR_OK) goto fail;
    if ((st = get_flag(g, KEY("add_bos_token"), &v->add_bos, err)) != TR_OK) goto fail;
    if ((st = get_flag(g, KEY("add_eos_token"), &v->add_eos, err)) != TR_OK) goto fail;

    if ((st = finish_specials(v, g, err)) != TR_OK) goto fail;

    /* Byte fallback: SPM writes a byte as <0xXX> (or as the byte itself);
     * BPE as the token whose text is that one byte. */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        v->byte_token[b] = -1;
        if (kind == TR_VOCAB_SPM) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            v->byte_token[b] = find_cstr(v, buf);
        }
        if (v->byte_token[b] < 0) {
            buf[0] = (char)b;
            v->byte_token[b] = tr_text_map_find(v, buf, 1);
        }
        v->gpt2_cp[b] = tr_gpt2_byte_cp((uint8_t)b);
    }
    *out = v;
    return TR_OK;
fail:
    tr_vocab_free(v);
    return st;
}

void tr_vocab_free(tr_vocab *v) {
    if (!v) return;
    free(v->arena);
    free(v->text_off);
    free(v->text_len);
    free(v->score);
    free(v->attr);
    free(v->map.slot);
    free(v->merges);
    free(v->special);
    free(v->edges);
    free(v->node_special);
    free(v->eog);
    tr_pretok_free(&v->pre);
    free(v);
}

/* ------------------------------------------------------------ accessors */

tr_vocab_kind tr_vocab_kind_of(const tr_vocab *v) { return v->kind; }
int32_t tr_vocab_n_tokens(const tr_vocab *v) { return v->n_tokens; }
int32_t tr_vocab_bos(const tr_vocab *v) { return v->bos; }
int32_t tr_vocab_eos(const tr_vocab *v) { return v->eos; }
int32_t tr_vocab_eot(const tr_vocab *v) { return v->eot; }
int32_t tr_vocab_eom(const tr_vocab *v) { return v->eom; }
int32_t tr_vocab_unk(const tr_vocab *v) { return v->unk; }
int32_t tr_vocab_pad(const tr_vocab *v) { return v->pad; }
bool tr_vocab_add_bos(const tr_vocab *v) { return v->add_bos; }
bool tr_vocab_add_eos(const tr_vocab *v) { return v->add_eos; }
const char *tr_vocab_pre(const tr_vocab *v) { return v->pre_name; }

bool tr_vocab_is_eog(const tr_vocab *v, int32_t id) {
    if (id < 0) return false;
    return bsearch(&id, v->eog, v->n_eog, sizeof *v->eog, cmp_i32) != NULL;
}

const char *tr_vocab_token_text(const tr_vocab *v, int32_t id) {
    return id >= 0 && id < v->n_tokens ? tr_vocab_text(v, id) : NULL;
}

uint32_t tr_vocab_token_attr(const tr_vocab *v, int32_t id) {
    return id >= 0 && id < v->n_tokens ? v->attr[id] : 0;
}

float tr_vocab_token_score(const tr_vocab *v, int32_t id) {
    return id >= 0 && id < v->n_tokens ? v->score[id] : 0.0f;
}

int32_t tr_vocab_find(const tr_vocab *v, const char *text, size_t len) { return tr_text_map_find(v, text, len); }

/* ------------------------------------------------------------ tokenize */

/* A piece of the input: raw text still to tokenize, or a special token. */
typedef struct frag {
    int32_t token; /* -1: raw text [off, off + len) */
    size_t off, len;
} frag;

typedef struct frags {
    frag *v;
    size_t n, cap;
} frags;

static bool frags_push(frags *f, frag x) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        frag *nv = realloc(f->v, cap * sizeof *nv);
        if (!nv) return false;
        f->v = nv;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return true;
}

/* Cut special tokens out of the text, as llama.cpp's partition does: each
 * token in turn (longest first) splits every raw fragment at each of its
 * occurrences, left to right. Control and unknown tokens only when
 * parse_special; user-defined ones always. */
static bool partition(const tr_vocab *v, const char *text, size_t len, bool parse_special, frags *out) {
    frags cur = {0}, next = {0};
    bool ok = false;
    if (!frags_push(&cur, (frag){-1, 0, len})) goto done;
    /* Which special tokens occur in the text at all: one walk of the trie
     * from each position. Only those need searching below. */
    uint8_t *present = calloc(v->n_special ? v->n_special : 1, 1);
    if (!present) goto done;
    for (size_t p = 0; p < len; p++) {
        int32_t node = 0;
        for (size_t i = p; i < len; i++) {
            node = trie_child(v, node, (uint8_t)text[i]);
            if (node < 0) break;
            if (v->node_special[node] >= 0) present[v->node_special[node]] = 1;
        }
    }
    for (size_t k = 0; k < v->n_special; k++) {
        if (!present[k]) continue;
        int32_t id = v->special[k];
        uint32_t a = v->attr[id];
        if (!parse_special && (a & (TR_TOKEN_ATTR_CONTROL | TR_TOKEN_ATTR_UNKNOWN))) continue;
        const char *t = tr_vocab_text(v, id);
        size_t tl = v->text_len[id];
        next.n = 0;
        bool found = false;
        for (size_t i = 0; i < cur.n; i++) {
            frag f = cur.v[i];
            if (f.token >= 0) {
                if (!frags_push(&next, f)) goto done_present;
                continue;
            }
            size_t off = f.off, rem = f.len;
            for (;;) {
                const char *m = rem >= tl ? memmem(text + off, rem, t, tl) : NULL;
                if (!m) {
                    if (rem > 0 && !frags_push(&next, (frag){-1, off, rem})) goto done_present;
                    break;
                }
                found = true;
                size_t mo = (size_t)(m - text), ll = mo - off;
                if (a & TR_TOKEN_ATTR_LSTRIP)
                    while (ll > 0 && isspace((unsigned char)text[off + ll - 1])) ll--;
                if (ll > 0 && !frags_push(&next, (frag){-1, off, ll})) goto done_present;
                if (!frags_push(&next, (frag){id, 0, 0})) goto done_present;
                size_t ro = mo + tl, rl = off + rem - ro;
                if (a & TR_TOKEN_ATTR_RSTRIP)
                    while (rl > 0 && isspace((unsigned char)text[ro])) ro++, rl--;
                off = ro;
                rem = rl;
            }
        }
        if (found) {
            frags t2 = cur;
            cur = next;
            next = t2;
        }
    }
    ok = true;
done_present:
    free(present);
done:
    free(next.v);
    if (ok) *out = cur;
    else free(cur.v);
    return ok;
}

tr_status tr_tokenize(const tr_vocab *v, const char *text, size_t len, bool add_special, bool parse_special,
                      int32_t **ids, size_t *n_ids, tr_error *err) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len) return tr_err_set(err, TR_ERR_ARG, "tokenize: text is NULL");
    tr_ids out = {0};
    frags fr = {0};
    char *esc = NULL;
    tr_status st = TR_ERR_NOMEM;
    if (len && !partition(v, text, len, parse_special, &fr)) goto fail;

    if (add_special && v->add_bos) {
        if (v->bos < 0) {
            st = tr_err_set(err, TR_ERR_FORMAT, "%s is set but the vocabulary has no BOS token", KEY("add_bos_token"));
            goto fail;
        }
        if (!tr_ids_push(&out, v->bos)) goto fail;
    }
    if (v->kind == TR_VOCAB_SPM) {
        /* Spaces become U+2581; a fragment after a special token (or at the
         * start) gets a leading space when add_space_prefix. */
        bool prev_special = true;
        size_t cap = 0;
        for (size_t i = 0; i < fr.n; i++) {
            const frag *f = &fr.v[i];
            if (f->token >= 0) {
                if (!tr_ids_push(&out, f->token)) goto fail;
                prev_special = true;
                continue;
            }
            size_t need = (f->len + 1) * 3;
            if (need > cap) {
                char *ne = realloc(esc, need);
                if (!ne) goto fail;
                esc = ne;
                cap = need;
            }
            size_t el = 0;
            if (v->add_space_prefix && prev_special) el += (size_t)(memcpy(esc, "\xe2\x96\x81", 3), 3);
            for (size_t j = 0; j < f->len; j++) {
                char c = text[f->off + j];
                if (c == ' ') {
                    memcpy(esc + el, "\xe2\x96\x81", 3);
                    el += 3;
                } else {
                    esc[el++] = c;
                }
            }
            if ((st = tr_spm_tokenize(v, esc, el, &out, err)) != TR_OK) goto fail;
            st = TR_ERR_NOMEM;
            prev_special = false;
        }
    } else {
        for (size_t i = 0; i < fr.n; i++) {
            const frag *f = &fr.v[i];
            if (f->token >= 0) {
                if (!tr_ids_push(&out, f->token)) goto fail;
                continue;
            }
            if ((st = tr_bpe_tokenize(v, text + f->off, f->len, &out, err)) != TR_OK) goto fail;
            st = TR_ERR_NOMEM;
        }
    }
    if (add_special && v->add_eos) {
        if (v->eos < 0) {
            st = tr_err_set(err, TR_ERR_FORMAT, "%s is set but the vocabulary has no EOS token", KEY("add_eos_token"));
            goto fail;
        }
        if (!tr_ids_push(&out, v->eos)) goto fail;
    }
    free(fr.v);
    free(esc);
    if (!out.v) out.v = malloc(sizeof *out.v); /* a valid pointer even for no tokens */
    if (!out.v) return tr_err_set(err, TR_ERR_NOMEM, "tokenize: out of memory");
    *ids = out.v;
    *n_ids = out.n;
    return TR_OK;
fail:
    if (st == TR_ERR_NOMEM) tr_err_set(err, st, "tokenize: out of memory for %zu bytes of text", len);
    free(fr.v);
    free(esc);
    free(out.v);
    return st;
}

/* ---------------------------------------------------------- detokenize */

static size_t put(char *buf, size_t cap, size_t at, const char *s, size_t n) {
    if (at < cap) memcpy(buf + at, s, n < cap - at ? n : cap - at);
    return at + n;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t tr_token_to_piece(const tr_vocab *v, int32_t id, bool special, char *buf, size_t cap) {
    if (id < 0 || id >= v->n_tokens) return 0;
    uint32_t a = v->attr[id];
    if (!special && (a & (TR_TOKEN_ATTR_UNKNOWN | TR_TOKEN_ATTR_CONTROL))) return 0;
    const char *t = tr_vocab_text(v, id);
    size_t tl = v->text_len[id];
    if (a & (TR_TOKEN_ATTR_UNKNOWN | TR_TOKEN_ATTR_CONTROL | TR_TOKEN_ATTR_USER_DEFINED)) return put(buf, cap, 0, t, tl);
    if (a & TR_TOKEN_ATTR_NORMAL) {
        size_t n = 0;
        if (v->kind == TR_VOCAB_SPM) { /* U+2581 -> space */
            for (size_t i = 0; i < tl;) {
                if (i + 3 <= tl && !memcmp(t + i, "\xe2\x96\x81", 3)) {
                    n = put(buf, cap, n, " ", 1);
                    i += 3;
                } else {
                    n = put(buf, cap, n, t + i, 1);
                    i++;
                }
            }
            return n;
        }
        /* GPT-2 alphabet -> bytes; a character outside it is written the way
         * llama.cpp writes it: [UNK_BYTE_0x<its bytes in hex><token text>]. */
        for (size_t off = 0; off < tl;) {
            size_t start = off;
            uint32_t cp = tr_utf8_decode(t, tl, &off);
            int b = tr_gpt2_cp_byte(cp);
            if (b >= 0) {
                char c = (char)b;
                n = put(buf, cap, n, &c, 1);
            } else {
                char u[4], hx[16];
                size_t ul = tr_utf8_encode(cp, u);
                (void)start;
                n = put(buf, cap, n, "[UNK_BYTE_0x", 12);
                for (size_t j = 0; j < ul; j++) {
                    snprintf(hx, sizeof hx, "%02x", (uint8_t)u[j]);
                    n = put(buf, cap, n, hx, 2);
                }
                n = put(buf, cap, n, t, tl);
                n = put(buf, cap, n, "]", 1);
            }
        }
        return n;
    }
    if (a & TR_TOKEN_ATTR_BYTE) { /* <0xXX> */
        if (tl < 5) return 0;
        int hi = hexval(t[3]), lo = hexval(t[4]);
        if (hi < 0) return 0;
        char c = (char)(lo < 0 ? hi : hi * 16 + lo);
        return put(buf, cap, 0, &c, 1);
    }
    return 0; /* unused / undefined tokens render as nothing */
}

size_t tr_utf8_complete_prefix(const char *s, size_t n) {
    /* Find the start of the last character within the last 4 bytes. */
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        uint8_t c = (uint8_t)s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* a continuation byte: keep looking */
        size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > back ? n - back : n;
    }
    return n; /* only continuation bytes: nothing to wait for */
}
