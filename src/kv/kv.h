/* The KV cache: one pool of fixed-size blocks shared by every sequence, and
 * the only code that computes a cache address.
 *
 *   pool      n_blocks blocks of block_size token slots, per layer:
 *             k[layer][block][slot][k_row bytes], v likewise
 *   sequence  a block table (block i holds positions i*bs .. i*bs+bs-1) and
 *             a length: it holds positions [0, len), always contiguous
 *   blocks    reference-counted: a fork shares them, a write into a shared
 *             (or prefix-cached) block first copies it (copy on write)
 *
 * Prefix cache: a full block whose K/V were computed is registered under a
 * hash chain of (parent block, its tokens). A new sequence reuses every
 * leading block already registered; a hit compares the tokens and the exact
 * parent (block id and incarnation), so a hash collision can never return a
 * wrong prefix. Blocks no sequence uses but that are registered stay cached
 * in LRU order until the pool needs them; a block in use is never evicted.
 *
 * K/V entries are a deterministic function of the token prefix (the forward
 * pass is batch-invariant), so a cached block holds the very bits the
 * sequence would have computed itself.
 *
 * Single-threaded: the engine's scheduler thread owns it. */
#ifndef TR_KV_H
#define TR_KV_H

#include "trinity.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tr_kv tr_kv;

typedef struct tr_kv_params {
    int32_t n_blocks;     /* blocks in the pool */
    int32_t block_size;   /* token slots per block */
    int32_t n_seq;        /* sequence ids 0 .. n_seq-1 */
    int32_t max_blocks;   /* most blocks one sequence may hold */
    int32_t n_layer;
    size_t k_row, v_row;  /* bytes of one token's K (V) entry in one layer; 0: no storage (tests) */
} tr_kv_params;

tr_status tr_kv_new(const tr_kv_params *p, tr_kv **out, tr_error *err);
void tr_kv_free(tr_kv *kv);

int32_t tr_kv_block_size(const tr_kv *kv);
int32_t tr_kv_len(const tr_kv *kv, int32_t seq);
/* The sequence's block table (max_blocks entries; the first ceil(len/bs) valid). */
const int32_t *tr_kv_table(const tr_kv *kv, int32_t seq);
/* Every sequence's table: [n_seq][max_blocks], as the attention op takes it. */
const int32_t *tr_kv_tables(const tr_kv *kv);
int32_t tr_kv_max_blocks(const tr_kv *kv);

/* Blocks that could be given to a sequence now (free + cached-unused). */
int32_t tr_kv_available(const tr_kv *kv);
/* Blocks a sequence needs to grow by n positions (copy-on-write included). */
int32_t tr_kv_blocks_needed(const tr_kv *kv, int32_t seq, int32_t n);

/* Make positions [len, len+n) writable (new blocks, copy-on-write of a
 * shared or cached last block) and record their tokens; len grows by n.
 * TR_ERR_NOMEM when the pool cannot give the blocks (nothing changed),
 * TR_ERR_ARG past max_blocks. */
tr_status tr_kv_append(tr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n, tr_error *err);
/* Register the sequence's full blocks in the prefix cache (after their K/V
 * were computed). A block identical to one already registered is replaced
 * by it (the copy is freed). */
void tr_kv_publish(tr_kv *kv, int32_t seq);
/* Keep positions [0, p) (rollback); blocks past them are released. */
void tr_kv_truncate(tr_kv *kv, int32_t seq, int32_t p);
/* Streaming (attention sinks): drop the block's worth of positions
 * [n_sink, n_sink + bs) from the middle of the sequence, so that positions
 * [n_sink + bs, len) become [n_sink, len - bs); the first n_sink stay. When
 * n_sink is not a multiple of bs, the slots [n_sink % bs, bs) of the block
 * after the sinks' are first copied (K, V, tokens) into the sinks' block.
 * One block goes back to the pool. The entries are moved, not changed: the
 * caller re-rotates the moved keys (kv knows nothing of RoPE). Refused
 * (TR_ERR_ARG) when the sequence is shorter than n_sink + bs, or when a
 * block it would change is shared with another sequence or registered in
 * the prefix cache (a streaming sequence must own its blocks). */
tr_status tr_kv_slide(tr_kv *kv, int32_t seq, int32_t n_sink, tr_error *err);
/* dst (empty) shares src's blocks. */
tr_status tr_kv_fork(tr_kv *kv, int32_t src, int32_t dst, tr_error *err);
/* An empty sequence takes the longest run of cached leading blocks of
 * tokens[0..n) that leaves at least one token of tokens[0..n) uncovered when
 * leave_one, then copies the matching first entries of a cached tail after
 * them (when the pool has a block for the copy). Returns the positions it
 * now holds. */
int32_t tr_kv_reuse(tr_kv *kv, int32_t seq, const int32_t *tokens, int32_t n, bool leave_one);
/* A sequence about to end keeps its last, partly filled block in the cache
 * as a "tail" of its parent (when its full blocks are published and no
 * other sequence shares it): a later request whose tokens go on like it
 * copies those entries instead of computing them (a chat's next turn). */
void tr_kv_keep_tail(tr_kv *kv, int32_t seq);
/* Count a request's lookup for the hit-rate figures (a reuse may be tried
 * and undone several times before a request is admitted: count it once). */
void tr_kv_note_lookup(tr_kv *kv, int64_t looked_up, int64_t hit);

/* Storage. Slot index of (seq, pos) in the pool (block * bs + offset). */
static inline int64_t tr_kv_slot(const int32_t *table, int32_t bs, int32_t pos) {
    return (int64_t)table[pos / bs] * bs + pos % bs;
}
void *tr_kv_k_layer(const tr_kv *kv, int32_t layer); /* slot 0 of the layer's K; slot i at + i*k_row */
void *tr_kv_v_layer(const tr_kv *kv, int32_t layer);

typedef struct tr_kv_counts {
    int32_t n_blocks, used, cached, free; /* used: held by a sequence; cached: registered, unused */
    int64_t tokens_held;                  /* sum of the sequences' lengths */
    uint64_t evictions, hit_tokens, lookup_tokens;
} tr_kv_counts;
void tr_kv_counts_get(const tr_kv *kv, tr_kv_counts *out);

/* Check every invariant (refcounts, lists, index): "" when sound, else what broke. */
const char *tr_kv_check(const tr_kv *kv);

#endif
