/* The grammar matcher: llama.cpp's pushdown recogniser over sets of stacks
 * (grammar.h), with stacks as interned persistent lists so that a set is an
 * array of node ids, a closure visits each (position, parent) once, and the
 * nodes a step's checks create are dropped again by truncation.
 *
 * Text is UTF-8, matched code point by code point; a token that ends inside
 * a character leaves it in the state (pval, pneed), and the state is alive
 * only if some stack's character class meets the code points that prefix
 * can still become (as llama.cpp's partial matching; a negated class counts
 * as meeting them unless one of its ranges covers them all). */
#include "grammar/grammar.h"

#include <stdlib.h>
#include <string.h>

enum { ROOT = 0 }; /* node 0: below the bottom of every stack */

/* The most stacks a state may hold. An ambiguous grammar can multiply them
 * with every character: the fuzzer found one (a nullable rule inside an
 * object inside a string inside a value) whose state tripled at each `{`,
 * 1.17 million stacks after 16 tokens and 77 s of matching. A step that
 * would pass this many is taken as a step the grammar does not allow (the
 * path of an allocation failure: the state dies, and where no token is
 * left the generation ends as at any dead end of a grammar), so matching
 * stays bounded whatever the grammar. Grammars from JSON schemas and
 * llama.cpp's grammars/ stay far below it. */
enum { GM_MAX_STACKS = 1 << 15 };

typedef struct gnode {
    uint32_t pos, parent, hnext, mark;
} gnode;

/* A state: a set of stacks (node ids in the arena), whether one stack is
 * empty (the text is complete), and a partial UTF-8 character. */
typedef struct gset {
    uint32_t off, n;
    uint32_t pval;
    uint8_t pneed; /* continuation bytes the partial character still needs */
    uint8_t plen;  /* and its whole length in bytes */
    bool complete;
} gset;

struct gmatch {
    tr_grammar *g;
    gnode *nodes;
    uint32_t n_nodes, cap_nodes;
    uint32_t *bucket, n_bucket; /* power of two; chains are newest first */
    uint32_t epoch;
    uint32_t *arena; /* node ids of sets */
    uint32_t n_arena, cap_arena;
    uint32_t *work, cap_work;
    gset cur; /* its stacks are arena[0 .. cur.n) */
    bool oom;
    gset *depth; /* gm_mask: the state after each byte of the current prefix */
    uint32_t cap_depth;
};

static inline uint32_t hnode(uint32_t pos, uint32_t parent) {
    uint64_t h = ((uint64_t)pos << 32 | parent) * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32);
}

static bool rehash(gmatch *m, uint32_t n_bucket) {
    uint32_t *b = calloc(n_bucket, sizeof *b);
    if (!b) return false;
    free(m->bucket);
    m->bucket = b;
    m->n_bucket = n_bucket;
    for (uint32_t i = 1; i < m->n_nodes; i++) { /* oldest first: chains stay newest first */
        uint32_t k = hnode(m->nodes[i].pos, m->nodes[i].parent) & (n_bucket - 1);
        m->nodes[i].hnext = b[k];
        b[k] = i;
    }
    return true;
}

/* The node (pos, parent), made if new; 0 (ROOT) when out of memory. */
static uint32_t intern(gmatch *m, uint32_t pos, uint32_t parent) {
    uint32_t k = hnode(pos, parent) & (m->n_bucket - 1);
    for (uint32_t i = m->bucket[k]; i; i = m->nodes[i].hnext)
        if (m->nodes[i].pos == pos && m->nodes[i].parent == parent) return i;
    if (m->n_nodes == UINT32_MAX - 1) {
        m->oom = true;
        return ROOT;
    }
    if (m->n_nodes == m->cap_nodes) {
        uint32_t cap = m->cap_nodes * 2;
        gnode *n = realloc(m->nodes, sizeof *n * cap);
        if (!n) {
            m->oom = true;
            return ROOT;
        }
        m->nodes = n;
        m->cap_nodes = cap;
    }
    uint32_t id = m->n_nodes++;
    m->nodes[id] = (gnode){.pos = pos, .parent = parent, .hnext = m->bucket[k], .mark = 0};
    m->bucket[k] = id;
    if (m->n_nodes > 2 * m->n_bucket && !rehash(m, m->n_bucket * 2)) m->oom = true;
    return id;
}

/* Forget the nodes made since n_nodes was `mark` (newest first: each is its
 * chain's head). */
static void truncate_nodes(gmatch *m, uint32_t mark) {
    while (m->n_nodes > mark) {
        uint32_t id = --m->n_nodes;
        uint32_t k = hnode(m->nodes[id].pos, m->nodes[id].parent) & (m->n_bucket - 1);
        m->bucket[k] = m->nodes[id].hnext;
    }
}

static bool arena_push(gmatch *m, uint32_t v) {
    if (m->n_arena == m->cap_arena) {
        uint32_t cap = m->cap_arena * 2;
        uint32_t *a = realloc(m->arena, sizeof *a * cap);
        if (!a) {
            m->oom = true;
            return false;
        }
        m->arena = a;
        m->cap_arena = cap;
    }
    m->arena[m->n_arena++] = v;
    return true;
}

static bool work_push(gmatch *m, uint32_t *n, uint32_t v) {
    if (*n == m->cap_work) {
        uint32_t cap = m->cap_work * 2;
        uint32_t *w = realloc(m->work, sizeof *w * cap);
        if (!w) {
            m->oom = true;
            return false;
        }
        m->work = w;
        m->cap_work = cap;
    }
    m->work[(*n)++] = v;
    return true;
}

static void next_epoch(gmatch *m) {
    if (++m->epoch == 0) { /* wrapped: clear every mark */
        for (uint32_t i = 0; i < m->n_nodes; i++) m->nodes[i].mark = 0;
        m->epoch = 1;
    }
}

static inline bool is_end(uint32_t t) { return t == G_END || t == G_ALT; }

/* Every stack node `start` stands for, with a character element on top,
 * appended to the arena (each once per epoch); *complete when one is empty. */
static void closure(gmatch *m, uint32_t start, bool *complete) {
    const gelem *el = m->g->el;
    uint32_t nw = 0;
    work_push(m, &nw, start);
    while (nw && !m->oom) {
        uint32_t id = m->work[--nw];
        if (id == ROOT) {
            *complete = true;
            continue;
        }
        gnode *nd = &m->nodes[id];
        if (nd->mark == m->epoch) continue;
        nd->mark = m->epoch;
        const uint32_t pos = nd->pos, parent = nd->parent;
        const gelem e = el[pos];
        if (is_end(e.type)) {
            work_push(m, &nw, parent);
        } else if (e.type == G_REF) {
            /* push the rest of this alternative (not when nothing is left of it) */
            uint32_t cont = is_end(el[pos + 1].type) ? parent : intern(m, pos + 1, parent);
            if (m->oom) return;
            uint32_t a = m->g->rule_start[e.value];
            for (;;) {
                uint32_t child = intern(m, a, cont);
                if (m->oom || !work_push(m, &nw, child)) return;
                while (el[a].type != G_ALT && el[a].type != G_END) a++;
                if (el[a].type == G_END) break;
                a++;
            }
        } else {
            arena_push(m, id);
        }
    }
}

/* Whether the class at el[pos] matches c; *next: the element after the class. */
static bool match_char(const gelem *el, uint32_t pos, uint32_t c, uint32_t *next) {
    if (el[pos].type == G_ANY) {
        *next = pos + 1;
        return true;
    }
    const bool neg = el[pos].type == G_CHAR_NOT;
    bool found = false;
    uint32_t p = pos;
    do {
        if (el[p + 1].type == G_RNG_UPPER) {
            found |= el[p].value <= c && c <= el[p + 1].value;
            p += 2;
        } else {
            found |= el[p].value == c;
            p += 1;
        }
    } while (el[p].type == G_CHAR_ALT);
    *next = p;
    return found != neg;
}

/* Whether the class at el[pos] may match some code point in [lo, hi]. */
static bool meets_range(const gelem *el, uint32_t pos, uint32_t lo, uint32_t hi) {
    if (el[pos].type == G_ANY) return true;
    const bool neg = el[pos].type == G_CHAR_NOT;
    uint32_t p = pos;
    do {
        uint32_t a = el[p].value, b = a;
        if (el[p + 1].type == G_RNG_UPPER) b = el[p + 1].value, p += 2;
        else p += 1;
        if (!neg && a <= hi && b >= lo) return true;
        if (neg && a <= lo && b >= hi) return false;
    } while (el[p].type == G_CHAR_ALT);
    return neg;
}

/* The state after code point c from `in` (its stacks at arena[in.off ..]):
 * the new set is appended to the arena. */
static gset advance_cp(gmatch *m, gset in, uint32_t c) {
    gset out = {.off = m->n_arena};
    next_epoch(m);
    const gelem *el = m->g->el;
    for (uint32_t i = 0; i < in.n && !m->oom; i++) {
        const gnode nd = m->nodes[m->arena[in.off + i]];
        uint32_t next;
        if (!match_char(el, nd.pos, c, &next)) continue;
        uint32_t id = intern(m, next, nd.parent);
        if (m->oom) break;
        closure(m, id, &out.complete);
        if (m->n_arena - out.off > GM_MAX_STACKS) m->oom = true;
    }
    out.n = m->n_arena - out.off;
    if (m->oom) out.n = 0, out.complete = false;
    return out;
}

/* Whether a partial character (value so far, continuation bytes still
 * needed, its whole length) can still become a valid code point that some
 * stack matches: UTF-8 as RFC 3629 has it (no overlong forms, no
 * surrogates, nothing above U+10FFFF), so the text is always valid UTF-8. */
static bool partial_alive(const gmatch *m, const gset *p) {
    static const uint32_t min_of_len[5] = {0, 0, 0x80, 0x800, 0x10000};
    uint32_t lo = p->pval << (6 * p->pneed), hi = lo | ((1u << (6 * p->pneed)) - 1);
    if (lo < min_of_len[p->plen]) lo = min_of_len[p->plen];
    if (hi > 0x10ffff) hi = 0x10ffff;
    if (lo > hi || (lo >= 0xd800 && hi <= 0xdfff)) return false;
    for (uint32_t i = 0; i < p->n; i++)
        if (meets_range(m->g->el, m->nodes[m->arena[p->off + i]].pos, lo, hi)) return true;
    return false;
}

/* The state after one byte. A dead state has no stacks and is not complete. */
static gset advance_byte(gmatch *m, gset in, uint8_t b) {
    gset dead = {.off = m->n_arena};
    gset p = in;
    if (in.pneed == 0) {
        if (b < 0x80) return advance_cp(m, in, b);
        p.complete = false;
        if (b >= 0xc2 && b <= 0xdf) p.pneed = 1, p.pval = b & 0x1f;
        else if (b >= 0xe0 && b <= 0xef) p.pneed = 2, p.pval = b & 0x0f;
        else if (b >= 0xf0 && b <= 0xf4) p.pneed = 3, p.pval = b & 0x07;
        else return dead;
        p.plen = (uint8_t)(p.pneed + 1);
        return partial_alive(m, &p) ? p : dead;
    }
    if ((b & 0xc0) != 0x80) return dead;
    p.pval = p.pval << 6 | (b & 0x3f);
    p.pneed--;
    if (!partial_alive(m, &p)) return dead; /* also checks a complete character's range */
    if (p.pneed == 0) {
        gset q = in;
        q.pneed = q.plen = 0;
        return advance_cp(m, q, p.pval);
    }
    return p;
}

static inline bool alive(gset s) { return s.n > 0 || s.complete; }

gmatch *gm_new(const tr_grammar *g) {
    gmatch *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->g = tr_grammar_clone(g);
    m->cap_nodes = 1024;
    m->nodes = malloc(sizeof *m->nodes * m->cap_nodes);
    m->cap_arena = 1024;
    m->arena = malloc(sizeof *m->arena * m->cap_arena);
    m->cap_work = 256;
    m->work = malloc(sizeof *m->work * m->cap_work);
    m->cap_depth = 64;
    m->depth = malloc(sizeof *m->depth * m->cap_depth);
    if (!m->g || !m->nodes || !m->arena || !m->work || !m->depth || !rehash(m, 1024)) {
        gm_free(m);
        return NULL;
    }
    gm_reset(m);
    if (m->oom) {
        gm_free(m);
        return NULL;
    }
    return m;
}

void gm_free(gmatch *m) {
    if (!m) return;
    tr_grammar_free(m->g);
    free(m->nodes);
    free(m->bucket);
    free(m->arena);
    free(m->work);
    free(m->depth);
    free(m);
}

/* Make the set at arena[s.off ..] the current state (moved to the front). */
static void set_current(gmatch *m, gset s) {
    memmove(m->arena, m->arena + s.off, sizeof *m->arena * s.n);
    s.off = 0;
    m->cur = s;
    m->n_arena = s.n;
}

void gm_reset(gmatch *m) {
    m->n_nodes = 1; /* ROOT */
    m->nodes[ROOT] = (gnode){0};
    memset(m->bucket, 0, sizeof *m->bucket * m->n_bucket);
    m->n_arena = 0;
    m->oom = false;
    next_epoch(m);
    gset s = {.off = 0};
    const uint32_t root = m->g->root;
    uint32_t a = m->g->rule_start[root];
    const gelem *el = m->g->el;
    for (;;) {
        closure(m, intern(m, a, ROOT), &s.complete);
        if (m->oom) break;
        while (el[a].type != G_ALT && el[a].type != G_END) a++;
        if (el[a].type == G_END) break;
        a++;
    }
    s.n = m->n_arena;
    m->cur = s;
}

bool gm_complete(const gmatch *m) { return m->cur.complete && m->cur.pneed == 0; }
bool gm_dead(const gmatch *m) { return m->cur.n == 0; }

/* The state after bytes from the current one, in the arena; nodes made
 * stay until the caller truncates. */
static gset run_bytes(gmatch *m, const char *bytes, size_t len) {
    gset s = m->cur;
    for (size_t i = 0; i < len && alive(s); i++) s = advance_byte(m, s, (uint8_t)bytes[i]);
    return s;
}

bool gm_can_take(gmatch *m, const char *bytes, size_t len) {
    const uint32_t mark = m->n_nodes, arena = m->n_arena;
    gset s = run_bytes(m, bytes, len);
    bool ok = alive(s) && !m->oom;
    truncate_nodes(m, mark);
    m->n_arena = arena;
    m->oom = false;
    return ok;
}

bool gm_take(gmatch *m, const char *bytes, size_t len) {
    const uint32_t mark = m->n_nodes, arena = m->n_arena;
    gset s = run_bytes(m, bytes, len);
    if (!alive(s) || m->oom) {
        truncate_nodes(m, mark);
        m->n_arena = arena;
        m->oom = false;
        return false;
    }
    set_current(m, s);
    return true;
}

bool gm_token_ok(gmatch *m, const tr_grammar_vocab *gv, int32_t t) {
    if (t < 0 || t >= gv->n) return false;
    if (gv->eog[t]) return gm_complete(m);
    const uint32_t len = gv->off[t + 1] - gv->off[t];
    return len > 0 && gm_can_take(m, gv->bytes + gv->off[t], len);
}

bool gm_take_token(gmatch *m, const tr_grammar_vocab *gv, int32_t t) {
    if (t < 0 || t >= gv->n) return false;
    if (gv->eog[t]) return gm_complete(m);
    const uint32_t len = gv->off[t + 1] - gv->off[t];
    return len > 0 && gm_take(m, gv->bytes + gv->off[t], len);
}

/* The whole vocabulary in byte order: the state after each byte of the
 * current token is kept by depth, so a prefix shared with the previous
 * token is not matched again, and a prefix that kills the state skips
 * every following token that starts with it. */
int32_t gm_mask(gmatch *m, const tr_grammar_vocab *gv, uint8_t *allowed) {
    memset(allowed, 0, (size_t)gv->n);
    int32_t count = 0;
    if (gm_complete(m))
        for (int32_t t = 0; t < gv->n; t++)
            if (gv->eog[t]) allowed[t] = 1, count++;
    if (m->cur.n == 0) return count;
    const uint32_t mark = m->n_nodes, arena0 = m->n_arena;
    m->depth[0] = m->cur;
    uint32_t valid = 0; /* depth[0 .. valid] hold the states of the current prefix */
    for (int32_t i = 0; i < gv->n_sorted; i++) {
        const int32_t t = gv->sorted[i];
        const char *b = gv->bytes + gv->off[t];
        const uint32_t len = gv->off[t + 1] - gv->off[t];
        if (valid > gv->lcp[i]) valid = gv->lcp[i];
        m->n_arena = m->depth[valid].off + m->depth[valid].n;
        if (m->n_arena < arena0) m->n_arena = arena0;
        if (len + 1 > m->cap_depth) {
            gset *d = realloc(m->depth, sizeof *d * (len + 1));
            if (!d) break;
            m->depth = d;
            m->cap_depth = len + 1;
        }
        bool ok = true;
        while (valid < len) {
            gset nx = advance_byte(m, m->depth[valid], (uint8_t)b[valid]);
            m->oom = false; /* a step past GM_MAX_STACKS (or out of memory) is dead, as in gm_token_ok */
            if (!alive(nx)) { /* dead after byte `valid`: skip the tokens that share it */
                ok = false;
                const uint32_t dead_len = valid + 1;
                while (i + 1 < gv->n_sorted && gv->lcp[i + 1] >= dead_len) i++;
                break;
            }
            m->depth[++valid] = nx;
        }
        if (ok) { /* alive after its last byte (stacks left, or the text complete) */
            allowed[t] = 1;
            count++;
        }
    }
    truncate_nodes(m, mark);
    m->n_arena = arena0;
    m->oom = false;
    return count;
}
