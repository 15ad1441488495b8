/* The paged KV cache against a simple reference model, under thousands of
 * random operation sequences: append, publish (prefix cache), truncate,
 * fork, free, reuse from the cache, with a pool small enough that blocks run
 * out and cached ones are evicted.
 *
 * The reference keeps each sequence's tokens as a plain array. Storage is
 * checked as the engine uses it: when positions are appended, the test
 * writes into each new slot a value that is a function of the whole token
 * prefix up to it (as a K/V entry is), in every layer; afterwards every
 * position of every sequence must read back the value of its own prefix,
 * whether the block was written by it, shared by a fork, copied on write or
 * found in the prefix cache. tr_kv_check verifies the bookkeeping (each
 * block used, cached or free, never two; refcounts equal to the tables). */
#include "kv/kv.h"
#include "tt.h"

enum { NSEQ = 6, BS = 4, MAXB = 12, LAYERS = 2 };

typedef struct ref_seq {
    int32_t tok[MAXB * BS];
    int32_t len;
} ref_seq;

static uint64_t prefix_value(const int32_t *tok, int32_t n, int layer) {
    uint64_t h = 1469598103934665603ull + (uint64_t)layer;
    for (int32_t i = 0; i < n; i++) h = (h ^ (uint64_t)(uint32_t)tok[i]) * 1099511628211ull;
    return h;
}

static void write_slots(tr_kv *kv, int32_t seq, const ref_seq *r, int32_t from) {
    for (int l = 0; l < LAYERS; l++) {
        uint64_t *k = tr_kv_k_layer(kv, l), *v = tr_kv_v_layer(kv, l);
        for (int32_t p = from; p < r->len; p++) {
            int64_t s = tr_kv_slot(tr_kv_table(kv, seq), BS, p);
            k[s] = prefix_value(r->tok, p + 1, l);
            v[s] = ~prefix_value(r->tok, p + 1, l);
        }
    }
}

static int content_errors(tr_kv *kv, const ref_seq *ref) {
    int bad = 0;
    for (int32_t s = 0; s < NSEQ; s++) {
        if (tr_kv_len(kv, s) != ref[s].len) bad++;
        for (int l = 0; l < LAYERS; l++) {
            const uint64_t *k = tr_kv_k_layer(kv, l), *v = tr_kv_v_layer(kv, l);
            for (int32_t p = 0; p < ref[s].len; p++) {
                int64_t sl = tr_kv_slot(tr_kv_table(kv, s), BS, p);
                if (k[sl] != prefix_value(ref[s].tok, p + 1, l) || v[sl] != ~prefix_value(ref[s].tok, p + 1, l)) bad++;
            }
        }
    }
    return bad;
}

/* Random tokens from a small alphabet, so that prefixes repeat and the
 * cache hits. */
static int32_t rnd_tok(void) { return (int32_t)(tt_rnd() % 3); }

TT_TEST(random_operations_match_the_reference) {
    int hits = 0, evictions_seen = 0, nomem = 0, cows = 0, forks = 0, tails = 0;
    for (int round = 0; round < 40; round++) {
        tt_seed(1000 + (uint64_t)round);
        const int32_t n_blocks = 8 + (int32_t)(tt_rnd() % 16);
        tr_kv_params p = {.n_blocks = n_blocks, .block_size = BS, .n_seq = NSEQ, .max_blocks = MAXB,
                          .n_layer = LAYERS, .k_row = 8, .v_row = 8};
        tr_kv *kv = NULL;
        tr_error err = {{0}};
        TT_CHECK(tr_kv_new(&p, &kv, &err) == TR_OK);
        if (!kv) return;
        ref_seq ref[NSEQ] = {0};
        for (int op = 0; op < 400; op++) {
            const int32_t s = (int32_t)(tt_rnd() % NSEQ);
            ref_seq *r = &ref[s];
            switch (tt_rnd() % 7) {
            case 0:
            case 1: { /* append */
                int32_t n = 1 + (int32_t)(tt_rnd() % 9);
                if (r->len + n > MAXB * BS) n = MAXB * BS - r->len;
                if (n <= 0) break;
                int32_t t[MAXB * BS];
                for (int32_t i = 0; i < n; i++) t[i] = rnd_tok();
                const int32_t need = tr_kv_blocks_needed(kv, s, n), avail = tr_kv_available(kv);
                const bool shared_tail = r->len % BS && need > (r->len + n + BS - 1) / BS - (r->len + BS - 1) / BS;
                tr_status st = tr_kv_append(kv, s, t, n, &err);
                if (need > avail) {
                    TT_CHECK(st == TR_ERR_NOMEM);
                    nomem++;
                    break;
                }
                TT_CHECK(st == TR_OK);
                cows += shared_tail;
                memcpy(r->tok + r->len, t, sizeof *t * (size_t)n);
                r->len += n;
                write_slots(kv, s, r, r->len - n);
                break;
            }
            case 2: /* publish */
                tr_kv_publish(kv, s);
                break;
            case 3: { /* truncate (rollback) */
                int32_t q = r->len ? (int32_t)(tt_rnd() % (uint32_t)(r->len + 1)) : 0;
                tr_kv_truncate(kv, s, q);
                r->len = q;
                break;
            }
            case 4: /* free, keeping the tail (as the engine does) when the sequence's blocks are published */
                if (tt_rnd() & 1) {
                    tr_kv_publish(kv, s);
                    tr_kv_keep_tail(kv, s);
                }
                tr_kv_truncate(kv, s, 0);
                r->len = 0;
                break;
            case 5: { /* fork into an empty sequence */
                int32_t d = (int32_t)(tt_rnd() % NSEQ);
                if (d == s || ref[d].len) break;
                TT_CHECK(tr_kv_fork(kv, s, d, &err) == TR_OK);
                ref[d] = *r;
                forks++;
                break;
            }
            case 6: { /* a new request: reuse what the cache has of its prompt */
                if (r->len) break;
                int32_t n = 1 + (int32_t)(tt_rnd() % (MAXB * BS));
                int32_t t[MAXB * BS];
                for (int32_t i = 0; i < n; i++) t[i] = rnd_tok();
                const bool leave_one = tt_rnd() & 1;
                int32_t got = tr_kv_reuse(kv, s, t, n, leave_one);
                TT_CHECK(got <= (leave_one ? n - 1 : n));
                hits += got > 0;
                tails += got % BS != 0;
                memcpy(r->tok, t, sizeof *t * (size_t)got);
                r->len = got;
                break;
            }
            }
            const char *why = tr_kv_check(kv);
            if (*why) {
                fprintf(stderr, "  round %d op %d: %s\n", round, op, why);
                TT_CHECK(!*why);
                break;
            }
            int bad = content_errors(kv, ref);
            if (bad) {
                fprintf(stderr, "  round %d op %d: %d entries differ from the reference\n", round, op, bad);
                TT_CHECK(bad == 0);
                break;
            }
        }
        tr_kv_counts c;
        tr_kv_counts_get(kv, &c);
        evictions_seen += c.evictions > 0;
        TT_CHECK_EQ_INT(c.used + c.cached + c.free, n_blocks);
        tr_kv_free(kv);
    }
    /* The random walk must have exercised what it is meant to. */
    fprintf(stderr, "  rounds with evictions %d, cache hits %d (from tails %d), out-of-blocks %d, copies on write %d, "
            "forks %d\n", evictions_seen, hits, tails, nomem, cows, forks);
    TT_CHECK(evictions_seen > 0);
    TT_CHECK(hits > 0);
    TT_CHECK(nomem > 0);
    TT_CHECK(cows > 0);
    TT_CHECK(forks > 0);
    TT_CHECK(tails > 0);
}

/* A hit needs the tokens and the exact parent: a block is found only after
 * the very block its K/V were computed on; and with leave_one the last
 * token is always left to compute (its logits are wanted). */
TT_TEST(hits_need_the_same_prefix) {
    tr_kv_params p = {.n_blocks = 6, .block_size = 2, .n_seq = 2, .max_blocks = 3, .n_layer = 0};
    tr_kv *kv = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_kv_new(&p, &kv, &err) == TR_OK);
    const int32_t a[] = {1, 2, 3, 4, 5}, b[] = {9, 9, 3, 4}, c[] = {1, 2, 7, 7};
    TT_CHECK(tr_kv_append(kv, 0, a, 4, &err) == TR_OK);
    TT_CHECK_EQ_INT(tr_kv_reuse(kv, 1, a, 4, false), 0); /* not published yet */
    tr_kv_publish(kv, 0);
    tr_kv_truncate(kv, 0, 0);
    TT_CHECK_EQ_INT(tr_kv_reuse(kv, 1, b, 4, false), 0); /* same tokens, other parent */
    TT_CHECK_EQ_INT(tr_kv_reuse(kv, 1, c, 4, false), 2);
    tr_kv_truncate(kv, 1, 0);
    TT_CHECK_EQ_INT(tr_kv_reuse(kv, 1, a, 4, true), 2);
    tr_kv_truncate(kv, 1, 0);
    TT_CHECK_EQ_INT(tr_kv_reuse(kv, 1, a, 5, true), 4);
    TT_CHECK_EQ_INT(tr_kv_reuse(kv, 0, a, 4, false), 4); /* shared by two sequences */
    tr_kv_counts n;
    tr_kv_counts_get(kv, &n);
    TT_CHECK_EQ_INT(n.used, 2);
    TT_CHECK_EQ_INT(n.tokens_held, 8);
    TT_CHECK_STR(tr_kv_check(kv), "");
    tr_kv_free(kv);
}

TT_TEST(errors_name_the_problem) {
    tr_kv_params p = {.n_blocks = 2, .block_size = 4, .n_seq = 2, .max_blocks = 4, .n_layer = 0};
    tr_kv *kv = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_kv_new(&p, &kv, &err) == TR_OK);
    int32_t t[20] = {0};
    TT_CHECK(tr_kv_append(kv, 0, t, 9, &err) == TR_ERR_NOMEM);
    TT_CHECK(strstr(err.msg, "cache full") != NULL);
    TT_CHECK_EQ_INT(tr_kv_len(kv, 0), 0);
    TT_CHECK(tr_kv_append(kv, 0, t, 17, &err) == TR_ERR_ARG);
    TT_CHECK(strstr(err.msg, "limit") != NULL);
    TT_CHECK(tr_kv_append(kv, 5, t, 1, &err) == TR_ERR_ARG);
    TT_CHECK(tr_kv_append(kv, 0, t, 3, &err) == TR_OK);
    TT_CHECK(tr_kv_fork(kv, 1, 0, &err) == TR_ERR_ARG); /* 0 is not empty */
    TT_CHECK_STR(tr_kv_check(kv), "");
    tr_kv_params bad = p;
    bad.block_size = 0;
    tr_kv *none = NULL;
    TT_CHECK(tr_kv_new(&bad, &none, &err) == TR_ERR_ARG && !none);
    tr_kv_free(kv);
}

/* Streaming (attention sinks): sequences of random sink counts, windows and
 * block sizes stream thousands of tokens through a pool of just their
 * windows, in random chunks that never cross the limit (as the engine feeds
 * them), sliding whenever full. Each slot holds the stream index of its
 * token (sequence in the high bits); after every step every position must
 * read its own token: position p < n_sink holds token p, position p >= n_sink
 * token p + dropped. So a slide that lost, duplicated or left a stale entry
 * (or a table entry past the length) is caught, and tr_kv_check verifies the
 * blocks' bookkeeping. */
TT_TEST(slide_keeps_sinks_and_window) {
    enum { NS = 3, LAY = 2 };
    int slides = 0, unaligned = 0;
    for (int round = 0; round < 60; round++) {
        tt_seed(5000 + (uint64_t)round);
        const int32_t bs = 1 + (int32_t)(tt_rnd() % 8), sinks = (int32_t)(tt_rnd() % (3 * bs + 1));
        const int32_t window = 1 + (int32_t)(tt_rnd() % (5 * bs));
        const int32_t cap = (sinks + window + bs - 1) / bs * bs + bs, mb = cap / bs;
        tr_kv_params p = {.n_blocks = NS * mb, .block_size = bs, .n_seq = NS, .max_blocks = mb, .n_layer = LAY,
                          .k_row = 8, .v_row = 8};
        tr_kv *kv = NULL;
        tr_error err = {{0}};
        TT_CHECK(tr_kv_new(&p, &kv, &err) == TR_OK);
        if (!kv) return;
        int64_t fed[NS] = {0}, dropped[NS] = {0};
        unaligned += sinks % bs != 0;
        for (int op = 0; op < 300; op++) {
            const int32_t s = (int32_t)(tt_rnd() % NS);
            int32_t len = tr_kv_len(kv, s);
            if (len == cap) {
                TT_CHECK(tr_kv_slide(kv, s, sinks, &err) == TR_OK);
                dropped[s] += bs;
                slides++;
                len -= bs;
                TT_CHECK_EQ_INT(tr_kv_len(kv, s), len);
            }
            const int32_t n = 1 + (int32_t)(tt_rnd() % (uint32_t)(cap - len));
            int32_t t[4096];
            for (int32_t i = 0; i < n; i++) t[i] = (int32_t)((fed[s] + i) & 0x7fffffff);
            TT_CHECK(tr_kv_append(kv, s, t, n, &err) == TR_OK);
            for (int l = 0; l < LAY; l++) {
                uint64_t *k = tr_kv_k_layer(kv, l), *v = tr_kv_v_layer(kv, l);
                for (int32_t i = 0; i < n; i++) {
                    const int64_t sl = tr_kv_slot(tr_kv_table(kv, s), bs, len + i);
                    k[sl] = ((uint64_t)s << 40) | (uint64_t)(fed[s] + i) | ((uint64_t)l << 56);
                    v[sl] = ~k[sl];
                }
            }
            fed[s] += n;
            const char *why = tr_kv_check(kv);
            if (*why) {
                fprintf(stderr, "  round %d op %d: %s\n", round, op, why);
                TT_CHECK(!*why);
                break;
            }
            int bad = 0;
            for (int32_t q = 0; q < NS; q++) {
                const int32_t lq = tr_kv_len(kv, q);
                if (fed[q] - dropped[q] != lq) bad++;
                for (int l = 0; l < LAY; l++) {
                    const uint64_t *k = tr_kv_k_layer(kv, l), *v = tr_kv_v_layer(kv, l);
                    for (int32_t pos = 0; pos < lq; pos++) {
                        const int64_t idx = pos < sinks ? pos : pos + dropped[q];
                        const uint64_t want = ((uint64_t)q << 40) | (uint64_t)idx | ((uint64_t)l << 56);
                        const int64_t sl = tr_kv_slot(tr_kv_table(kv, q), bs, pos);
                        if (k[sl] != want || v[sl] != ~want) bad++;
                    }
                }
            }
            if (bad) {
                fprintf(stderr, "  round %d op %d (bs %d, sinks %d, window %d): %d entries wrong\n", round, op, bs,
                        sinks, window, bad);
                TT_CHECK(bad == 0);
                break;
            }
        }
        tr_kv_counts c;
        tr_kv_counts_get(kv, &c);
        TT_CHECK(c.used <= NS * mb); /* memory bounded by the windows */
        tr_kv_free(kv);
    }
    fprintf(stderr, "  %d slides, %d rounds with sinks not a multiple of the block\n", slides, unaligned);
    TT_CHECK(slides > 1000);
    TT_CHECK(unaligned > 10);
}

/* A slide changes the blocks from the sinks' on: refused when one is shared
 * (a fork) or in the prefix cache, and when the sequence is too short. */
TT_TEST(slide_refuses_shared_blocks) {
    tr_kv_params p = {.n_blocks = 16, .block_size = 4, .n_seq = 2, .max_blocks = 6, .n_layer = 0};
    tr_kv *kv = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_kv_new(&p, &kv, &err) == TR_OK);
    int32_t t[24] = {0};
    for (int i = 0; i < 24; i++) t[i] = i;
    TT_CHECK(tr_kv_append(kv, 0, t, 5, &err) == TR_OK);
    TT_CHECK(tr_kv_slide(kv, 0, 2, &err) == TR_ERR_ARG); /* 5 < 2 + 4 */
    TT_CHECK(strstr(err.msg, "needs 6") != NULL);
    TT_CHECK(tr_kv_append(kv, 0, t + 5, 7, &err) == TR_OK);
    TT_CHECK(tr_kv_fork(kv, 0, 1, &err) == TR_OK);
    TT_CHECK(tr_kv_slide(kv, 0, 2, &err) == TR_ERR_ARG);
    TT_CHECK(strstr(err.msg, "must own its blocks") != NULL);
    TT_CHECK_EQ_INT(tr_kv_len(kv, 0), 12);
    tr_kv_truncate(kv, 1, 0);
    tr_kv_publish(kv, 0);
    TT_CHECK(tr_kv_slide(kv, 0, 2, &err) == TR_ERR_ARG); /* registered in the prefix cache */
    TT_CHECK(tr_kv_slide(kv, 1, 0, &err) == TR_ERR_ARG); /* empty */
    TT_CHECK(tr_kv_slide(kv, 7, 0, &err) == TR_ERR_ARG);
    TT_CHECK_STR(tr_kv_check(kv), "");
    tr_kv_free(kv);
}

int main(void) {
    TT_RUN(random_operations_match_the_reference);
    TT_RUN(hits_need_the_same_prefix);
    TT_RUN(errors_name_the_problem);
    TT_RUN(slide_keeps_sinks_and_window);
    TT_RUN(slide_refuses_shared_blocks);
    return TT_DONE();
}
