/* The paged KV cache and its prefix cache (see kv.h). Every block is in
 * exactly one of three states:
 *   used    ref > 0: in at least one sequence's table (registered or not)
 *   cached  ref = 0, registered: on the LRU list, reusable until evicted
 *   free    ref = 0, not registered: on the free stack
 * Registered blocks are full and immutable; the hash index finds them. */
#include "kv/kv.h"

#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tr_kv {
    int32_t bs, n_blocks, n_seq, max_blocks, n_layer;
    size_t k_row, v_row;
    uint8_t *k, *v; /* [n_layer][n_blocks * bs][row] */

    /* per block */
    int32_t *ref;
    uint32_t *gen;        /* incarnation: bumped when a block is given out again */
    bool *reg;            /* registered in the prefix index */
    int32_t *fill;        /* registered: slots holding entries (bs, or fewer for a sequence's last block, a "tail") */
    uint64_t *hash;       /* chain hash (registered blocks) */
    int32_t *parent;      /* registered: the block before it in its chain, -1: first */
    uint32_t *parent_gen; /* ... and that block's incarnation when this one was computed */
    int32_t *tok;         /* [n_blocks][bs] tokens the block holds */
    int32_t *hnext;       /* next block in the same hash bucket */
    int32_t *lru_prev, *lru_next;

    int32_t *free_stack, n_free;
    int32_t lru_head, lru_tail, n_lru; /* head: least recently used */
    int32_t *bucket;                   /* [n_bucket]: first block, -1 */
    uint32_t bucket_mask;

    /* per sequence */
    int32_t *table; /* [n_seq][max_blocks] */
    int32_t *len;
    int32_t *n_pub; /* leading blocks already registered (or checked) */

    uint64_t evictions, hit_tokens, lookup_tokens;
};

/* ------------------------------------------------------------- life cycle */

tr_status tr_kv_new(const tr_kv_params *p, tr_kv **out, tr_error *err) {
    *out = NULL;
    if (p->n_blocks < 1 || p->block_size < 1 || p->n_seq < 1 || p->max_blocks < 1 || p->n_layer < 0)
        return tr_err_set(err, TR_ERR_ARG, "kv: bad parameters (blocks %d, block size %d, sequences %d)", p->n_blocks,
                          p->block_size, p->n_seq);
    tr_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return tr_err_set(err, TR_ERR_NOMEM, "kv: out of memory");
    kv->bs = p->block_size;
    kv->n_blocks = p->n_blocks;
    kv->n_seq = p->n_seq;
    kv->max_blocks = p->max_blocks;
    kv->n_layer = p->n_layer;
    kv->k_row = p->k_row;
    kv->v_row = p->v_row;
    const size_t nb = (size_t)p->n_blocks, slots = nb * (size_t)p->block_size;
    uint32_t nbucket = 16;
    while (nbucket < 2 * (uint32_t)p->n_blocks && nbucket < (1u << 30)) nbucket <<= 1;
    kv->bucket_mask = nbucket - 1;
    uint64_t kbytes = 0, vbytes = 0;
    bool ok = tr_mul_u64(slots * (uint64_t)p->n_layer, p->k_row, &kbytes) &&
              tr_mul_u64(slots * (uint64_t)p->n_layer, p->v_row, &vbytes) && kbytes < ((uint64_t)1 << 40) &&
              vbytes < ((uint64_t)1 << 40);
    if (ok) {
        kv->k = calloc(1, kbytes ? kbytes : 1);
        kv->v = calloc(1, vbytes ? vbytes : 1);
        tr_hint_huge_pages(kv->k, (size_t)kbytes); /* attention streams them every token */
        tr_hint_huge_pages(kv->v, (size_t)vbytes);
        kv->ref = calloc(nb, sizeof *kv->ref);
        kv->gen = calloc(nb, sizeof *kv->gen);
        kv->reg = calloc(nb, sizeof *kv->reg);
        kv->fill = calloc(nb, sizeof *kv->fill);
        kv->hash = calloc(nb, sizeof *kv->hash);
        kv->parent = calloc(nb, sizeof *kv->parent);
        kv->parent_gen = calloc(nb, sizeof *kv->parent_gen);
        kv->tok = calloc(slots, sizeof *kv->tok);
        kv->hnext = calloc(nb, sizeof *kv->hnext);
        kv->lru_prev = calloc(nb, sizeof *kv->lru_prev);
        kv->lru_next = calloc(nb, sizeof *kv->lru_next);
        kv->free_stack = calloc(nb, sizeof *kv->free_stack);
        kv->bucket = calloc(nbucket, sizeof *kv->bucket);
        kv->table = calloc((size_t)p->n_seq * (size_t)p->max_blocks, sizeof *kv->table);
        kv->len = calloc((size_t)p->n_seq, sizeof *kv->len);
        kv->n_pub = calloc((size_t)p->n_seq, sizeof *kv->n_pub);
        ok = kv->k && kv->v && kv->ref && kv->gen && kv->reg && kv->hash && kv->parent && kv->parent_gen &&
             kv->fill && kv->tok && kv->hnext && kv->lru_prev && kv->lru_next && kv->free_stack && kv->bucket && kv->table &&
             kv->len && kv->n_pub;
    }
    if (!ok) {
        tr_kv_free(kv);
        return tr_err_set(err, TR_ERR_NOMEM, "kv: out of memory for %d blocks of %d tokens (%.1f MiB)", p->n_blocks,
                          p->block_size, (double)(kbytes + vbytes) / (1024.0 * 1024.0));
    }
    /* Free stack popped from the top: block 0 is given out first. */
    for (int32_t i = 0; i < p->n_blocks; i++) kv->free_stack[i] = p->n_blocks - 1 - i;
    kv->n_free = p->n_blocks;
    kv->lru_head = kv->lru_tail = -1;
    for (uint32_t i = 0; i < nbucket; i++) kv->bucket[i] = -1;
    for (size_t i = 0; i < (size_t)p->n_seq * (size_t)p->max_blocks; i++) kv->table[i] = -1;
    *out = kv;
    return TR_OK;
}

void tr_kv_free(tr_kv *kv) {
    if (!kv) return;
    free(kv->k);
    free(kv->v);
    free(kv->ref);
    free(kv->gen);
    free(kv->reg);
    free(kv->fill);
    free(kv->hash);
    free(kv->parent);
    free(kv->parent_gen);
    free(kv->tok);
    free(kv->hnext);
    free(kv->lru_prev);
    free(kv->lru_next);
    free(kv->free_stack);
    free(kv->bucket);
    free(kv->table);
    free(kv->len);
    free(kv->n_pub);
    free(kv);
}

int32_t tr_kv_block_size(const tr_kv *kv) { return kv->bs; }
int32_t tr_kv_max_blocks(const tr_kv *kv) { return kv->max_blocks; }
int32_t tr_kv_len(const tr_kv *kv, int32_t seq) {
    return seq >= 0 && seq < kv->n_seq ? kv->len[seq] : 0;
}
const int32_t *tr_kv_table(const tr_kv *kv, int32_t seq) { return kv->table + (size_t)seq * kv->max_blocks; }
const int32_t *tr_kv_tables(const tr_kv *kv) { return kv->table; }
int32_t tr_kv_available(const tr_kv *kv) { return kv->n_free + kv->n_lru; }
void *tr_kv_k_layer(const tr_kv *kv, int32_t layer) {
    return kv->k + (size_t)layer * kv->n_blocks * kv->bs * kv->k_row;
}
void *tr_kv_v_layer(const tr_kv *kv, int32_t layer) {
    return kv->v + (size_t)layer * kv->n_blocks * kv->bs * kv->v_row;
}

/* ------------------------------------------------------------------ lists */

static void lru_remove(tr_kv *kv, int32_t b) {
    int32_t p = kv->lru_prev[b], n = kv->lru_next[b];
    if (p >= 0) kv->lru_next[p] = n;
    else kv->lru_head = n;
    if (n >= 0) kv->lru_prev[n] = p;
    else kv->lru_tail = p;
    kv->n_lru--;
}

static void lru_push(tr_kv *kv, int32_t b) {
    kv->lru_prev[b] = kv->lru_tail;
    kv->lru_next[b] = -1;
    if (kv->lru_tail >= 0) kv->lru_next[kv->lru_tail] = b;
    else kv->lru_head = b;
    kv->lru_tail = b;
    kv->n_lru++;
}

static void index_remove(tr_kv *kv, int32_t b) {
    int32_t *pp = &kv->bucket[kv->hash[b] & kv->bucket_mask];
    while (*pp != b) pp = &kv->hnext[*pp];
    *pp = kv->hnext[b];
    kv->reg[b] = false;
}

/* A block for writing: a free one, else the least recently used cached one
 * (forgotten by the index). -1 when every block is in use. */
static int32_t block_take(tr_kv *kv) {
    int32_t b;
    if (kv->n_free > 0) {
        b = kv->free_stack[--kv->n_free];
    } else if (kv->lru_head >= 0) {
        b = kv->lru_head;
        lru_remove(kv, b);
        index_remove(kv, b);
        kv->evictions++;
    } else {
        return -1;
    }
    kv->gen[b]++;
    kv->ref[b] = 1;
    return b;
}

static void block_ref(tr_kv *kv, int32_t b) {
    if (kv->ref[b]++ == 0) lru_remove(kv, b); /* only registered blocks are found unused */
}

static void block_unref(tr_kv *kv, int32_t b) {
    if (--kv->ref[b] > 0) return;
    if (kv->reg[b]) lru_push(kv, b);
    else kv->free_stack[kv->n_free++] = b;
}

/* ------------------------------------------------------------------ hashing */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t chain_hash(uint64_t parent, const int32_t *tok, int32_t n) {
    uint64_t h = mix64(parent ^ 0x9E3779B97F4A7C15ull);
    for (int32_t i = 0; i < n; i++) h = mix64(h ^ ((uint64_t)(uint32_t)tok[i] + 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1)));
    return h;
}

/* Whether registered block b was computed right after this incarnation of
 * block `parent` (-1: at position 0). */
static bool computed_after(const tr_kv *kv, int32_t b, int32_t parent) {
    return kv->parent[b] == parent && (parent < 0 || kv->parent_gen[b] == kv->gen[parent]);
}

/* The registered block holding tokens tok[0..bs) right after block `parent`
 * (-1: at position 0), or -1. */
static int32_t index_find(const tr_kv *kv, uint64_t h, int32_t parent, const int32_t *tok) {
    for (int32_t b = kv->bucket[h & kv->bucket_mask]; b >= 0; b = kv->hnext[b]) {
        if (kv->hash[b] != h || kv->fill[b] != kv->bs || !computed_after(kv, b, parent)) continue;
        if (memcmp(kv->tok + (size_t)b * kv->bs, tok, sizeof *tok * (size_t)kv->bs)) continue;
        return b;
    }
    return -1;
}

static void index_add(tr_kv *kv, int32_t b, uint64_t h, int32_t parent, int32_t fill) {
    kv->reg[b] = true;
    kv->fill[b] = fill;
    kv->hash[b] = h;
    kv->parent[b] = parent;
    kv->parent_gen[b] = parent >= 0 ? kv->gen[parent] : 0;
    int32_t *head = &kv->bucket[h & kv->bucket_mask];
    kv->hnext[b] = *head;
    *head = b;
}

/* Tails (a sequence's last, partly filled block, kept when it ends) are
 * indexed under their parent alone: one hash per parent, the tokens compared
 * one by one on lookup. */
static uint64_t tail_hash(const tr_kv *kv, int32_t parent) {
    return mix64((parent >= 0 ? kv->hash[parent] : 0) ^ 0x7A11B10CC0FFEEull);
}

/* ------------------------------------------------------------- sequences */

static bool needs_copy(const tr_kv *kv, int32_t b) { return kv->ref[b] > 1 || kv->reg[b]; }

int32_t tr_kv_blocks_needed(const tr_kv *kv, int32_t seq, int32_t n) {
    const int32_t len = kv->len[seq], bs = kv->bs;
    if (n <= 0) return 0;
    int32_t have = (len + bs - 1) / bs, want = (len + n + bs - 1) / bs, need = want - have;
    if (len % bs && needs_copy(kv, kv->table[(size_t)seq * kv->max_blocks + len / bs])) need++;
    return need;
}

static void copy_block(tr_kv *kv, int32_t dst, int32_t src, int32_t n_slots) {
    const size_t slots = (size_t)kv->n_blocks * kv->bs;
    for (int32_t l = 0; l < kv->n_layer; l++) {
        uint8_t *k = kv->k + (size_t)l * slots * kv->k_row, *v = kv->v + (size_t)l * slots * kv->v_row;
        memcpy(k + (size_t)dst * kv->bs * kv->k_row, k + (size_t)src * kv->bs * kv->k_row, (size_t)n_slots * kv->k_row);
        memcpy(v + (size_t)dst * kv->bs * kv->v_row, v + (size_t)src * kv->bs * kv->v_row, (size_t)n_slots * kv->v_row);
    }
    memcpy(kv->tok + (size_t)dst * kv->bs, kv->tok + (size_t)src * kv->bs, sizeof *kv->tok * (size_t)n_slots);
}

tr_status tr_kv_append(tr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n, tr_error *err) {
    if (seq < 0 || seq >= kv->n_seq) return tr_err_set(err, TR_ERR_ARG, "kv: sequence %d outside [0, %d)", seq, kv->n_seq);
    if (n <= 0) return TR_OK;
    const int32_t len = kv->len[seq], bs = kv->bs;
    if ((int64_t)len + n > (int64_t)kv->max_blocks * bs)
        return tr_err_set(err, TR_ERR_ARG, "kv: sequence %d would hold %lld positions, more than its limit %lld", seq,
                          (long long)len + n, (long long)kv->max_blocks * bs);
    const int32_t need = tr_kv_blocks_needed(kv, seq, n);
    if (need > tr_kv_available(kv))
        return tr_err_set(err, TR_ERR_NOMEM, "kv: cache full: sequence %d needs %d more blocks of %d tokens, %d available",
                          seq, need, bs, tr_kv_available(kv));
    int32_t *tab = kv->table + (size_t)seq * kv->max_blocks;
    if (len % bs && needs_copy(kv, tab[len / bs])) { /* copy on write */
        const int32_t old = tab[len / bs], nb = block_take(kv);
        copy_block(kv, nb, old, len % bs);
        block_unref(kv, old);
        tab[len / bs] = nb;
    }
    for (int32_t i = 0; i < n; i++) {
        const int32_t p = len + i;
        if (p % bs == 0) tab[p / bs] = block_take(kv);
        kv->tok[(size_t)tab[p / bs] * bs + p % bs] = tokens[i];
    }
    kv->len[seq] = len + n;
    return TR_OK;
}

void tr_kv_publish(tr_kv *kv, int32_t seq) {
    const int32_t bs = kv->bs, full = kv->len[seq] / bs;
    int32_t *tab = kv->table + (size_t)seq * kv->max_blocks;
    for (int32_t i = kv->n_pub[seq]; i < full; i++) {
        const int32_t b = tab[i], parent = i ? tab[i - 1] : -1;
        if (kv->reg[b]) continue; /* reused from the cache */
        const int32_t *tok = kv->tok + (size_t)b * bs;
        const uint64_t h = chain_hash(parent >= 0 ? kv->hash[parent] : 0, tok, bs);
        const int32_t twin = index_find(kv, h, parent, tok);
        if (twin >= 0) { /* computed twice (two sequences at once): keep one */
            block_ref(kv, twin);
            block_unref(kv, b);
            tab[i] = twin;
            continue;
        }
        index_add(kv, b, h, parent, bs);
    }
    if (full > kv->n_pub[seq]) kv->n_pub[seq] = full;
}

void tr_kv_truncate(tr_kv *kv, int32_t seq, int32_t p) {
    if (seq < 0 || seq >= kv->n_seq) return;
    if (p < 0) p = 0;
    const int32_t len = kv->len[seq], bs = kv->bs;
    if (p >= len) return;
    int32_t *tab = kv->table + (size_t)seq * kv->max_blocks;
    /* Last block first: the LRU then evicts a chain's tail before its head. */
    for (int32_t i = (len + bs - 1) / bs - 1; i >= (p + bs - 1) / bs; i--) {
        block_unref(kv, tab[i]);
        tab[i] = -1;
    }
    kv->len[seq] = p;
    if (kv->n_pub[seq] > p / bs) kv->n_pub[seq] = p / bs;
}

tr_status tr_kv_slide(tr_kv *kv, int32_t seq, int32_t n_sink, tr_error *err) {
    if (seq < 0 || seq >= kv->n_seq) return tr_err_set(err, TR_ERR_ARG, "kv: sequence %d outside [0, %d)", seq, kv->n_seq);
    const int32_t bs = kv->bs, len = kv->len[seq], nb = (len + bs - 1) / bs;
    if (n_sink < 0 || (int64_t)n_sink + bs > len)
        return tr_err_set(err, TR_ERR_ARG, "kv: slide of sequence %d (%d positions) past %d sinks: it needs %lld", seq,
                          len, n_sink, (long long)n_sink + bs);
    int32_t *tab = kv->table + (size_t)seq * kv->max_blocks;
    const int32_t sb = n_sink / bs, off = n_sink % bs;
    /* Every block from the sinks' on is changed (moved entries are rotated). */
    for (int32_t i = sb; i < nb; i++)
        if (needs_copy(kv, tab[i]))
            return tr_err_set(err, TR_ERR_ARG,
                              "kv: sequence %d shares block %d with another sequence or the prefix cache: a streaming "
                              "sequence must own its blocks",
                              seq, i);
    int32_t gone = sb; /* the block that leaves the table */
    if (off) {
        const int32_t dst = tab[sb], src = tab[sb + 1];
        const size_t slots = (size_t)kv->n_blocks * bs;
        for (int32_t l = 0; l < kv->n_layer; l++) {
            uint8_t *k = kv->k + (size_t)l * slots * kv->k_row, *v = kv->v + (size_t)l * slots * kv->v_row;
            memcpy(k + ((size_t)dst * bs + off) * kv->k_row, k + ((size_t)src * bs + off) * kv->k_row,
                   (size_t)(bs - off) * kv->k_row);
            memcpy(v + ((size_t)dst * bs + off) * kv->v_row, v + ((size_t)src * bs + off) * kv->v_row,
                   (size_t)(bs - off) * kv->v_row);
        }
        memcpy(kv->tok + (size_t)dst * bs + off, kv->tok + (size_t)src * bs + off, sizeof *kv->tok * (size_t)(bs - off));
        gone = sb + 1;
    }
    block_unref(kv, tab[gone]);
    memmove(tab + gone, tab + gone + 1, sizeof *tab * (size_t)(nb - gone - 1));
    tab[nb - 1] = -1;
    kv->len[seq] = len - bs;
    if (kv->n_pub[seq] > sb) kv->n_pub[seq] = sb;
    return TR_OK;
}

tr_status tr_kv_fork(tr_kv *kv, int32_t src, int32_t dst, tr_error *err) {
    if (src < 0 || src >= kv->n_seq || dst < 0 || dst >= kv->n_seq || src == dst)
        return tr_err_set(err, TR_ERR_ARG, "kv: fork %d -> %d: bad sequence ids", src, dst);
    if (kv->len[dst]) return tr_err_set(err, TR_ERR_ARG, "kv: fork into sequence %d, which is not empty", dst);
    const int32_t nb = (kv->len[src] + kv->bs - 1) / kv->bs;
    const int32_t *ts = kv->table + (size_t)src * kv->max_blocks;
    int32_t *td = kv->table + (size_t)dst * kv->max_blocks;
    for (int32_t i = 0; i < nb; i++) {
        block_ref(kv, ts[i]);
        td[i] = ts[i];
    }
    kv->len[dst] = kv->len[src];
    kv->n_pub[dst] = kv->n_pub[src];
    return TR_OK;
}

int32_t tr_kv_reuse(tr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n, bool leave_one) {
    if (seq < 0 || seq >= kv->n_seq || kv->len[seq] || n <= 0) return 0;
    const int32_t bs = kv->bs, limit = leave_one ? n - 1 : n;
    int32_t *tab = kv->table + (size_t)seq * kv->max_blocks;
    int32_t i = 0, parent = -1;
    uint64_t h = 0;
    while ((int64_t)(i + 1) * bs <= limit && i < kv->max_blocks) {
        const int32_t *tok = tokens + (size_t)i * bs;
        h = chain_hash(parent >= 0 ? kv->hash[parent] : 0, tok, bs);
        const int32_t b = index_find(kv, h, parent, tok);
        if (b < 0) break;
        block_ref(kv, b);
        tab[i++] = b;
        parent = b;
    }
    kv->len[seq] = i * bs;
    kv->n_pub[seq] = i;
    /* Then the longest tail after the last block taken that begins like
     * the rest of the tokens: its first k entries are copied into a block of
     * the sequence's own (the tail stays cached for others). */
    const int32_t rest = limit - i * bs < bs ? limit - i * bs : bs;
    if (rest <= 0 || i >= kv->max_blocks) return i * bs;
    const uint64_t th = tail_hash(kv, parent);
    int32_t best = -1, best_k = 0;
    for (int32_t b = kv->bucket[th & kv->bucket_mask]; b >= 0; b = kv->hnext[b]) {
        if (kv->hash[b] != th || kv->fill[b] == bs || !computed_after(kv, b, parent)) continue;
        const int32_t *bt = kv->tok + (size_t)b * bs, *want = tokens + (size_t)i * bs;
        int32_t k = 0;
        while (k < kv->fill[b] && k < rest && bt[k] == want[k]) k++;
        if (k > best_k) best = b, best_k = k;
    }
    if (best < 0) return i * bs;
    block_ref(kv, best); /* pinned: taking a block must not evict it */
    const int32_t nb = block_take(kv);
    if (nb >= 0) {
        copy_block(kv, nb, best, best_k);
        kv->table[(size_t)seq * kv->max_blocks + i] = nb;
        kv->len[seq] = i * bs + best_k;
    }
    block_unref(kv, best);
    return kv->len[seq];
}

void tr_kv_keep_tail(tr_kv *kv, int32_t seq) {
    if (seq < 0 || seq >= kv->n_seq) return;
    const int32_t bs = kv->bs, len = kv->len[seq], i = len / bs, fill = len % bs;
    if (!fill || kv->n_pub[seq] < i) return; /* no tail, or its parent is not in the cache */
    const int32_t b = kv->table[(size_t)seq * kv->max_blocks + i], parent = i ? kv->table[(size_t)seq * kv->max_blocks + i - 1] : -1;
    if (kv->ref[b] != 1 || kv->reg[b]) return; /* shared (a fork): leave it */
    index_add(kv, b, tail_hash(kv, parent), parent, fill);
}

void tr_kv_note_lookup(tr_kv *kv, int64_t looked_up, int64_t hit) {
    kv->lookup_tokens += (uint64_t)looked_up;
    kv->hit_tokens += (uint64_t)hit;
}

/* ------------------------------------------------------------ inspection */

void tr_kv_counts_get(const tr_kv *kv, tr_kv_counts *o) {
    o->n_blocks = kv->n_blocks;
    o->cached = kv->n_lru;
    o->free = kv->n_free;
    o->used = kv->n_blocks - kv->n_lru - kv->n_free;
    o->tokens_held = 0;
    for (int32_t s = 0; s < kv->n_seq; s++) o->tokens_held += kv->len[s];
    o->evictions = kv->evictions;
    o->hit_tokens = kv->hit_tokens;
    o->lookup_tokens = kv->lookup_tokens;
}

const char *tr_kv_check(const tr_kv *kv) {
    static _Thread_local char msg[160];
    const int32_t nb = kv->n_blocks, bs = kv->bs;
    int32_t *refs = calloc((size_t)nb, sizeof *refs);
    uint8_t *seen = calloc((size_t)nb, 1);
    if (!refs || !seen) {
        free(refs);
        free(seen);
        return "out of memory checking";
    }
#define FAIL(...)                                   \
    do {                                            \
        snprintf(msg, sizeof msg, __VA_ARGS__);     \
        free(refs);                                 \
        free(seen);                                 \
        return msg;                                 \
    } while (0)
    for (int32_t s = 0; s < kv->n_seq; s++) {
        const int32_t *tab = kv->table + (size_t)s * kv->max_blocks, used = (kv->len[s] + bs - 1) / bs;
        for (int32_t i = 0; i < kv->max_blocks; i++) {
            if (i < used) {
                if (tab[i] < 0 || tab[i] >= nb) FAIL("seq %d block %d: bad id %d", s, i, tab[i]);
                refs[tab[i]]++;
            } else if (tab[i] != -1) {
                FAIL("seq %d: table entry %d past its length is %d", s, i, tab[i]);
            }
        }
        if (kv->n_pub[s] > kv->len[s] / bs) FAIL("seq %d: %d published blocks, %d full", s, kv->n_pub[s], kv->len[s] / bs);
    }
    for (int32_t b = 0; b < nb; b++)
        if (refs[b] != kv->ref[b]) FAIL("block %d: refcount %d, %d tables hold it", b, kv->ref[b], refs[b]);
    for (int32_t i = 0; i < kv->n_free; i++) {
        const int32_t b = kv->free_stack[i];
        if (seen[b]++) FAIL("block %d twice on the free stack", b);
        if (kv->ref[b] || kv->reg[b]) FAIL("block %d free but ref %d, registered %d", b, kv->ref[b], kv->reg[b]);
    }
    int32_t n = 0, prev = -1;
    for (int32_t b = kv->lru_head; b >= 0; prev = b, b = kv->lru_next[b]) {
        if (++n > nb) FAIL("LRU list loops");
        if (seen[b]++) FAIL("block %d both free and cached, or twice cached", b);
        if (kv->ref[b] || !kv->reg[b]) FAIL("block %d cached but ref %d, registered %d", b, kv->ref[b], kv->reg[b]);
        if (kv->lru_prev[b] != prev) FAIL("LRU back link of block %d", b);
    }
    if (n != kv->n_lru || prev != kv->lru_tail) FAIL("LRU count %d, listed %d", kv->n_lru, n);
    for (int32_t b = 0; b < nb; b++)
        if (!seen[b] && kv->ref[b] == 0) FAIL("block %d is lost (unused, neither free nor cached)", b);
    int32_t n_reg = 0;
    for (uint32_t h = 0; h <= kv->bucket_mask; h++)
        for (int32_t b = kv->bucket[h]; b >= 0; b = kv->hnext[b]) {
            if (++n_reg > nb) FAIL("index loops");
            if (!kv->reg[b] || (kv->hash[b] & kv->bucket_mask) != h) FAIL("block %d indexed wrongly", b);
            if (kv->fill[b] < 1 || kv->fill[b] > kv->bs) FAIL("block %d registered with %d entries", b, kv->fill[b]);
            if (kv->fill[b] < kv->bs && kv->ref[b]) FAIL("tail block %d is in a table", b);
        }
    int32_t want = 0;
    for (int32_t b = 0; b < nb; b++) want += kv->reg[b];
    if (want != n_reg) FAIL("%d blocks registered, %d indexed", want, n_reg);
#undef FAIL
    free(refs);
    free(seen);
    return "";
}
