/* Byte-level BPE (tokenizer.ggml.model = "gpt2").
 *
 * The pre-tokenizer cuts the text into words, written in GPT-2's byte
 * alphabet; within each word, start from one symbol per character and apply
 * the merge of lowest rank among adjacent pairs (ties: the leftmost), until
 * none applies, as llama.cpp does. Merges are looked up by the pair of token
 * ids (load checks that every merge's parts and result are tokens), and a
 * priority queue keeps each word O(n log n). */
#include "core/util.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab_impl.h"

#include <stdlib.h>

typedef struct sym {
    int prev, next;
    size_t start, n; /* n = 0 once merged into the left neighbour */
    int32_t id;      /* token whose text the symbol is, or -1 */
} sym;

typedef struct bigram {
    int left, right;
    int32_t rank, left_id, right_id, result;
} bigram;

static inline bool before(const bigram *a, const bigram *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

#include "tokenizer/merge_heap.h"

static bool add_bigram(const tr_vocab *v, sym *s, heap *q, int left, int right) {
    if (left < 0 || right < 0 || s[left].id < 0 || s[right].id < 0) return true;
    const tr_merge *m = tr_merge_find(v, s[left].id, s[right].id);
    if (!m) return true;
    return heap_push(q, (bigram){left, right, m->rank, m->left, m->right, m->result});
}

/* Merge one word and append its tokens. */
static bool bpe_word(const tr_vocab *v, const char *w, size_t len, sym *s, heap *q, tr_ids *out) {
    if (v->ignore_merges) {
        int32_t id = tr_text_map_find(v, w, len);
        if (id >= 0) return tr_ids_push(out, id);
    }
    int n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t cl = tr_utf8_seq_len((uint8_t)w[off]);
        if (cl > len - off) cl = len - off;
        s[n] = (sym){n - 1, off + cl == len ? -1 : n + 1, off, cl, tr_text_map_find(v, w + off, cl)};
        off += cl;
    }
    q->n = 0;
    for (int i = 1; i < n; i++)
        if (!add_bigram(v, s, q, i - 1, i)) return false;
    while (q->n) {
        bigram b = heap_pop(q);
        sym *l = &s[b.left], *r = &s[b.right];
        if (l->n == 0 || r->n == 0 || l->id != b.left_id || r->id != b.right_id) continue; /* stale */
        l->n += r->n;
        l->id = b.result;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) s[r->next].prev = b.left;
        if (!add_bigram(v, s, q, l->prev, b.left) || !add_bigram(v, s, q, b.left, l->next)) return false;
    }
    for (int i = 0; n > 0 && i != -1; i = s[i].next) {
        if (s[i].id >= 0) {
            if (!tr_ids_push(out, s[i].id)) return false;
            continue;
        }
        /* A character that is no token: its bytes' one-byte tokens, where they exist. */
        for (size_t j = 0; j < s[i].n; j++) {
            int32_t bt = v->byte_token[(uint8_t)w[s[i].start + j]];
            if (bt >= 0 && !tr_ids_push(out, bt)) return false;
        }
    }
    return true;
}

tr_status tr_bpe_tokenize(const tr_vocab *v, const char *text, size_t len, tr_ids *out, tr_error *err) {
    char *buf = NULL;
    size_t buf_len = 0, *ends = NULL, n_words = 0;
    tr_status st = tr_pretok_split(&v->pre, text, len, v->gpt2_cp, &buf, &buf_len, &ends, &n_words, err);
    if (st != TR_OK) return st;
    sym *s = malloc((buf_len + 1) * sizeof *s);
    heap q = {0};
    st = s ? TR_OK : TR_ERR_NOMEM;
    size_t start = 0;
    for (size_t k = 0; k < n_words && st == TR_OK; k++) {
        if (!bpe_word(v, buf + start, ends[k] - start, s, &q, out)) st = TR_ERR_NOMEM;
        start = ends[k];
    }
    if (st != TR_OK) tr_err_set(err, st, "tokenize: out of memory for %zu bytes of text", len);
    free(s);
    free(q.v);
    free(buf);
    free(ends);
    return st;
}
