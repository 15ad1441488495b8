/* SentencePiece-style tokenizer (tokenizer.ggml.model = "llama").
 *
 * Start from one symbol per UTF-8 character, then repeatedly merge the
 * adjacent pair whose concatenation is the vocabulary token with the highest
 * score (ties: the leftmost pair), as llama.cpp does. A priority queue keeps
 * this O(n log n). Symbols that end up not being tokens are written as their
 * bytes' <0xXX> tokens (byte fallback). */
#include "core/util.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab_impl.h"

#include <stdlib.h>

typedef struct sym {
    int prev, next;
    size_t start, n; /* bytes of the text; n = 0 once merged into the left neighbour */
} sym;

typedef struct bigram {
    int left, right;
    float score;
    size_t size;
} bigram;

/* a before b: higher score, then the leftmost pair */
static inline bool before(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

#include "tokenizer/merge_heap.h"

typedef struct session {
    const tr_vocab *v;
    const char *text;
    sym *s;
    heap q;
} session;

static bool try_bigram(session *ss, int left, int right) {
    if (left < 0 || right < 0) return true;
    size_t size = ss->s[left].n + ss->s[right].n;
    int32_t id = tr_text_map_find(ss->v, ss->text + ss->s[left].start, size);
    if (id < 0) return true;
    return heap_push(&ss->q, (bigram){left, right, ss->v->score[id], size});
}

tr_status tr_spm_tokenize(const tr_vocab *v, const char *text, size_t len, tr_ids *out, tr_error *err) {
    if (len == 0) return TR_OK;
    tr_status st = TR_ERR_NOMEM;
    session ss = {v, text, malloc(len * sizeof(sym)), {0}};
    if (!ss.s) goto done;

    int n = 0;
    for (size_t off = 0; off < len; n++) {
        size_t cl = tr_utf8_seq_len((uint8_t)text[off]);
        if (cl > len - off) cl = len - off;
        ss.s[n] = (sym){n - 1, off + cl == len ? -1 : n + 1, off, cl};
        off += cl;
    }
    for (int i = 1; i < n; i++)
        if (!try_bigram(&ss, i - 1, i)) goto done;

    while (ss.q.n) {
        bigram b = heap_pop(&ss.q);
        sym *l = &ss.s[b.left], *r = &ss.s[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) ss.s[r->next].prev = b.left;
        if (!try_bigram(&ss, l->prev, b.left) || !try_bigram(&ss, b.left, l->next)) goto done;
    }

    for (int i = 0; i != -1; i = ss.s[i].next) {
        const sym *sy = &ss.s[i];
        int32_t id = tr_text_map_find(v, text + sy->start, sy->n);
        if (id >= 0) {
            if (!tr_ids_push(out, id)) goto done;
            continue;
        }
        /* Not a token: one byte-fallback token per byte. Merged symbols are
         * always tokens, so this is a single character. */
        for (size_t j = 0; j < sy->n; j++) {
            uint8_t byte = (uint8_t)text[sy->start + j];
            int32_t bt = v->byte_token[byte];
            if (bt < 0) {
                st = tr_err_set(err, TR_ERR_UNSUPPORTED,
                                "the vocabulary has no byte token <0x%02X> for byte fallback", byte);
                goto done;
            }
            if (!tr_ids_push(out, bt)) goto done;
        }
    }
    st = TR_OK;
done:
    if (st == TR_ERR_NOMEM) tr_err_set(err, st, "tokenize: out of memory for %zu bytes of text", len);
    free(ss.s);
    free(ss.q.v);
    return st;
}
