/* GGUF reader: maps a file and validates every byte before trusting it.
 *
 * Layout (v2/v3, little-endian):
 *   "GGUF" u32 version, u64 n_tensors, u64 n_kv
 *   n_kv   x { string key, u32 type, value }
 *   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset }
 *   padding to `general.alignment` (default 32), then the data section.
 * A string is u64 length + bytes; an array is u32 element type + u64 count +
 * elements.
 *
 * Rules this reader enforces (and why):
 * - Every length or count is checked against the bytes that remain BEFORE
 *   anything is allocated for it, so a hostile count (2^60) is an error, not a
 *   malloc attempt. Tables then grow with what has actually been parsed (not
 *   with the count a header claims), so memory stays proportional to the
 *   bytes consumed: a few times the metadata's size at most.
 * - Keys and tensor names are handed out NUL-terminated, so a key or name with
 *   an embedded NUL byte cannot be represented and is rejected. Duplicates are
 *   rejected (a hash index makes that check linear, not quadratic).
 * - Tensors: 1..4 dimensions, each >= 0 (ggml allows empty tensors), element
 *   count fitting int64, ne[0] a multiple of the type's block, a type from the
 *   ggml table, offset a multiple of the alignment, bytes inside the file.
 * - Where we differ from ggml's gguf.cpp: it also requires tensors packed in
 *   order (offset == sum of the previous padded sizes) and names shorter than
 *   64 bytes, and refuses arrays of arrays; we accept all three, as the gguf
 *   Python package does (nothing here depends on packing). It accepts
 *   n_dims == 0 (a scalar); we refuse it, since tr_gguf_tensor promises 1..4.
 * - BOOL values must be 0 or 1.
 * - With no tensors, the padding after the header may be missing (the file
 *   ends where its content ends); ggml accepts such files too. */
#include "gguf_internal.h"

#include "core/util.h"
#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ name index */

/* Open-addressing hash of indices into an array of NUL-terminated names:
 * duplicate detection while parsing and O(1) look-ups afterwards. */
typedef struct name_index {
    int64_t *slots; /* -1 = empty */
    uint64_t mask;
    uint64_t count;
} name_index;

static uint64_t hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

static void name_index_place(int64_t *slots, uint64_t mask, uint64_t h, int64_t i) {
    for (h &= mask; slots[h] >= 0; h = (h + 1) & mask) {}
    slots[h] = i;
}

/* Index of `name` in names[], or -1. */
static int64_t name_index_find(const name_index *ni, const char *const *names, const char *name) {
    if (!ni->slots) return -1;
    for (uint64_t h = hash_name(name) & ni->mask;; h = (h + 1) & ni->mask) {
        int64_t i = ni->slots[h];
        if (i < 0) return -1;
        if (!strcmp(names[i], name)) return i;
    }
}

/* Insert names[i]: returns -1, or the index of an earlier equal name (not
 * inserted), or -2 when out of memory. Grows to stay at most half full. */
static int64_t name_index_insert(name_index *ni, const char *const *names, int64_t i) {
    int64_t j = name_index_find(ni, names, names[i]);
    if (j >= 0) return j;
    uint64_t cap = ni->slots ? ni->mask + 1 : 0;
    if ((ni->count + 1) * 2 > cap) {
        uint64_t ncap = cap ? cap * 2 : 64;
        int64_t *slots = malloc(ncap * sizeof *slots);
        if (!slots) return -2;
        memset(slots, 0xff, ncap * sizeof *slots);
        for (uint64_t k = 0; k < cap; k++)
            if (ni->slots[k] >= 0) name_index_place(slots, ncap - 1, hash_name(names[ni->slots[k]]), ni->slots[k]);
        free(ni->slots);
        ni->slots = slots;
        ni->mask = ncap - 1;
    }
    name_index_place(ni->slots, ni->mask, hash_name(names[i]), i);
    ni->count++;
    return -1;
}

/* Make room for element i of an array that will hold at most n elements of
 * `elem` bytes: capacity doubles (zero-filled) as parsing actually reaches
 * further, instead of trusting a count from the file. */
static bool grow(void **p, uint64_t *cap, uint64_t i, uint64_t n, size_t elem) {
    if (i < *cap) return true;
    uint64_t c = *cap ? *cap * 2 : 64;
    if (c > n) c = n;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    memset((char *)q + *cap * elem, 0, (c - *cap) * elem);
    *p = q;
    *cap = c;
    return true;
}

/* ------------------------------------------------------------ the object */

struct tr_gguf {
    char *path; /* file path, or the name given to open_memory */
    const uint8_t *base;
    uint64_t size;
    bool mapped; /* base is our mmap (munmap on close) */

    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;

    int64_t n_kv;
    uint64_t cap_kv;
    char **keys;
    tr_gguf_value *values;
    name_index key_index;

    int64_t n_tensors;
    uint64_t cap_tensors;
    tr_gguf_tensor *tensors;
    const char **tensor_names; /* tensors[i].name, for the index */
    name_index tensor_index;
};

size_t tr_gguf_type_size(tr_gguf_type t) {
    switch (t) {
    case TR_GGUF_UINT8: case TR_GGUF_INT8: case TR_GGUF_BOOL: return 1;
    case TR_GGUF_UINT16: case TR_GGUF_INT16: return 2;
    case TR_GGUF_UINT32: case TR_GGUF_INT32: case TR_GGUF_FLOAT32: return 4;
    case TR_GGUF_UINT64: case TR_GGUF_INT64: case TR_GGUF_FLOAT64: return 8;
    case TR_GGUF_STRING: case TR_GGUF_ARRAY: case TR_GGUF_TYPE_COUNT: break;
    }
    return 0;
}

const char *tr_gguf_type_name(tr_gguf_type t) {
    static const char *const names[TR_GGUF_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64",
    };
    return (unsigned)t < TR_GGUF_TYPE_COUNT ? names[t] : "unknown";
}

void tr_gguf_value_free_parts(tr_gguf_value *v, bool owned) {
    if (v->type == TR_GGUF_STRING) {
        if (owned) free((void *)v->v.str.ptr);
    } else if (v->type == TR_GGUF_ARRAY) {
        if (v->v.arr.items) {
            tr_gguf_value *items = (tr_gguf_value *)v->v.arr.items;
            for (uint64_t j = 0; j < v->v.arr.n; j++) tr_gguf_value_free_parts(&items[j], owned);
            free(items);
        }
        free((void *)v->v.arr.str_off);
        if (owned) free((void *)v->v.arr.data);
    }
    memset(&v->v, 0, sizeof v->v);
}

/* ---------------------------------------------------------------- parser */

/* What is being read, for error messages ("key 3 ('general.name') value"). */
typedef enum part { PART_HEADER, PART_KEY, PART_VALUE, PART_TENSOR } part;

typedef struct parser {
    const uint8_t *p;
    uint64_t size, off;
    const char *name; /* for messages */
    tr_error *err;
    part part;
    int64_t idx;
    const char *item; /* key or tensor name once known, else NULL */
    tr_status st;     /* status of the first failure */
} parser;

static void describe(const parser *r, char *buf, size_t cap) {
    switch (r->part) {
    case PART_HEADER: snprintf(buf, cap, "header"); return;
    case PART_KEY: snprintf(buf, cap, "key %lld", (long long)r->idx); return;
    case PART_VALUE:
        snprintf(buf, cap, "key %lld ('%.80s') value", (long long)r->idx, r->item ? r->item : "");
        return;
    case PART_TENSOR:
        if (r->item)
            snprintf(buf, cap, "tensor info %lld ('%.80s')", (long long)r->idx, r->item);
        else
            snprintf(buf, cap, "tensor info %lld", (long long)r->idx);
        return;
    }
}

static bool fail_truncated(parser *r, uint64_t need) {
    char what[160];
    describe(r, what, sizeof what);
    r->st = tr_err_set(r->err, TR_ERR_FORMAT,
               "%s: truncated file: %s runs past the end (needs %llu bytes at offset %llu of %llu)",
               r->name, what, (unsigned long long)need, (unsigned long long)r->off,
               (unsigned long long)r->size);
    return false;
}

/* A formatted error about the current part, with status `st`. */
static bool fail(parser *r, tr_status st, const char *problem) {
    char what[160];
    describe(r, what, sizeof what);
    r->st = tr_err_set(r->err, st, "%s: %s: %s", r->name, what, problem);
    return false;
}

static inline uint64_t remaining(const parser *r) { return r->size - r->off; }

static inline bool need(parser *r, uint64_t n) {
    return n <= remaining(r) ? true : fail_truncated(r, n);
}

static bool rd_u32(parser *r, uint32_t *out) {
    if (!need(r, 4)) return false;
    memcpy(out, r->p + r->off, 4);
    r->off += 4;
    return true;
}

static bool rd_u64(parser *r, uint64_t *out) {
    if (!need(r, 8)) return false;
    memcpy(out, r->p + r->off, 8);
    r->off += 8;
    return true;
}

static bool rd_str(parser *r, tr_str *out) {
    uint64_t len;
    if (!rd_u64(r, &len)) return false;
    if (!need(r, len)) return false;
    out->ptr = (const char *)r->p + r->off;
    out->len = len;
    r->off += len;
    return true;
}

/* A malloc'ed NUL-terminated copy of a string that must not contain NUL. */
static char *dup_name(parser *r, tr_str s, const char *what) {
    if (memchr(s.ptr, 0, s.len)) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s contains a NUL byte", what);
        fail(r, TR_ERR_FORMAT, msg);
        return NULL;
    }
    char *c = malloc(s.len + 1);
    if (!c) {
        fail(r, TR_ERR_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

static bool check_bools(parser *r, const uint8_t *b, uint64_t n) {
    for (uint64_t j = 0; j < n; j++)
        if (b[j] > 1) {
            char msg[96];
            snprintf(msg, sizeof msg, "bool element %llu is %u (must be 0 or 1)", (unsigned long long)j, b[j]);
            return fail(r, TR_ERR_FORMAT, msg);
        }
    return true;
}

static bool read_array(parser *r, tr_gguf_value *v, int depth);

/* Read a value of type `t` (already read) into *v. */
static bool read_value(parser *r, tr_gguf_type t, tr_gguf_value *v, int depth) {
    memset(v, 0, sizeof *v);
    v->type = t;
    const uint8_t *q = r->p + r->off;
    size_t sz = tr_gguf_type_size(t);
    if (sz && !need(r, sz)) return false;
    switch (t) {
    case TR_GGUF_UINT8: v->v.u64 = q[0]; break;
    case TR_GGUF_INT8: v->v.i64 = (int8_t)q[0]; break;
    case TR_GGUF_UINT16: { uint16_t x; memcpy(&x, q, 2); v->v.u64 = x; break; }
    case TR_GGUF_INT16: { int16_t x; memcpy(&x, q, 2); v->v.i64 = x; break; }
    case TR_GGUF_UINT32: { uint32_t x; memcpy(&x, q, 4); v->v.u64 = x; break; }
    case TR_GGUF_INT32: { int32_t x; memcpy(&x, q, 4); v->v.i64 = x; break; }
    case TR_GGUF_FLOAT32: { float x; memcpy(&x, q, 4); v->v.f64 = x; break; }
    case TR_GGUF_BOOL:
        if (!check_bools(r, q, 1)) return false;
        v->v.b = q[0] != 0;
        break;
    case TR_GGUF_UINT64: memcpy(&v->v.u64, q, 8); break;
    case TR_GGUF_INT64: memcpy(&v->v.i64, q, 8); break;
    case TR_GGUF_FLOAT64: memcpy(&v->v.f64, q, 8); break;
    case TR_GGUF_STRING: return rd_str(r, &v->v.str);
    case TR_GGUF_ARRAY: return read_array(r, v, depth + 1);
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "unknown value type %u", (unsigned)t);
        return fail(r, TR_ERR_FORMAT, msg);
    }
    }
    r->off += sz;
    return true;
}

static bool read_type(parser *r, tr_gguf_type *t, const char *what) {
    uint32_t x;
    if (!rd_u32(r, &x)) return false;
    if (x >= TR_GGUF_TYPE_COUNT) {
        char msg[80];
        snprintf(msg, sizeof msg, "unknown %s type %u", what, x);
        return fail(r, TR_ERR_FORMAT, msg);
    }
    *t = (tr_gguf_type)x;
    return true;
}

/* An array's element type, count and elements; v->type is ARRAY. */
static bool read_array(parser *r, tr_gguf_value *v, int depth) {
    v->type = TR_GGUF_ARRAY;
    if (depth > TR_GGUF_MAX_ARRAY_DEPTH) {
        char msg[64];
        snprintf(msg, sizeof msg, "arrays nested deeper than %d levels", TR_GGUF_MAX_ARRAY_DEPTH);
        return fail(r, TR_ERR_FORMAT, msg);
    }
    tr_gguf_type et;
    uint64_t n;
    if (!read_type(r, &et, "array element")) return false;
    if (!rd_u64(r, &n)) return false;
    v->v.arr.type = et;
    v->v.arr.data = r->p + r->off;
    size_t sz = tr_gguf_type_size(et);
    /* The smallest encoding of one element bounds the count before any
     * allocation: 8 bytes per string (its length), 12 per nested array. */
    uint64_t min_elem = sz ? sz : et == TR_GGUF_STRING ? 8 : 12;
    if (n > remaining(r) / min_elem) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "truncated file: array of %llu %s elements runs past the end (%llu bytes left at offset %llu)",
                 (unsigned long long)n, tr_gguf_type_name(et), (unsigned long long)remaining(r),
                 (unsigned long long)r->off);
        return fail(r, TR_ERR_FORMAT, msg);
    }
    if (sz) {
        if (et == TR_GGUF_BOOL && !check_bools(r, r->p + r->off, n)) return false;
        v->v.arr.n = n;
        r->off += n * sz;
        return true;
    }
    if (n == 0) return true;
    if (et == TR_GGUF_STRING) {
        uint64_t cap = 0;
        /* One pass: vocabularies hold ~262k strings. */
        uint64_t start = r->off;
        for (uint64_t j = 0; j < n; j++) {
            void *p = (void *)v->v.arr.str_off;
            if (!grow(&p, &cap, j, n, sizeof(uint64_t)))
                return fail(r, TR_ERR_NOMEM, "out of memory for an array of strings");
            uint64_t *off = p;
            v->v.arr.str_off = off;
            off[j] = r->off - start;
            uint64_t len;
            if (!rd_u64(r, &len)) return false;
            if (!need(r, len)) return false;
            r->off += len;
        }
        v->v.arr.n = n;
        return true;
    }
    /* Arrays of arrays: each element decoded. */
    uint64_t cap = 0;
    for (uint64_t j = 0; j < n; j++) {
        void *p = (void *)v->v.arr.items;
        if (!grow(&p, &cap, j, n, sizeof(tr_gguf_value)))
            return fail(r, TR_ERR_NOMEM, "out of memory for an array of arrays");
        tr_gguf_value *items = p;
        v->v.arr.items = items;
        v->v.arr.n = cap; /* spare items are zeroed (UINT8): freeing a partial array is safe */
        if (!read_array(r, &items[j], depth + 1)) return false;
    }
    return true;
}

/* ------------------------------------------------------------ open/close */

void tr_gguf_close(tr_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->keys[i]);
        tr_gguf_value_free_parts(&g->values[i], false);
    }
    free(g->keys);
    free(g->values);
    free(g->key_index.slots);
    for (int64_t i = 0; i < g->n_tensors; i++) free((char *)g->tensors[i].name);
    free(g->tensors);
    free(g->tensor_names);
    free(g->tensor_index.slots);
    if (g->mapped) munmap((void *)g->base, g->size);
    free(g->path);
    free(g);
}

static bool parse_kvs(parser *r, tr_gguf *g, uint64_t n_kv) {
    r->part = PART_HEADER;
    /* Smallest key/value: 8 (key length) + 4 (type) + 1 (a uint8). */
    if (n_kv > remaining(r) / 13) {
        char msg[128];
        snprintf(msg, sizeof msg, "truncated file: %llu key/value pairs cannot fit in the %llu bytes left",
                 (unsigned long long)n_kv, (unsigned long long)remaining(r));
        return fail(r, TR_ERR_FORMAT, msg);
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t cap = g->cap_kv;
        void *k = g->keys, *v = g->values;
        bool ok = grow(&k, &cap, i, n_kv, sizeof *g->keys);
        g->keys = k;
        ok = ok && grow(&v, &g->cap_kv, i, n_kv, sizeof *g->values);
        g->values = v;
        if (!ok) return fail(r, TR_ERR_NOMEM, "out of memory for the key/value table");
        r->part = PART_KEY;
        r->idx = (int64_t)i;
        r->item = NULL;
        tr_str ks;
        if (!rd_str(r, &ks)) return false;
        char *key = dup_name(r, ks, "key");
        if (!key) return false;
        g->keys[i] = key;
        g->n_kv = (int64_t)i + 1; /* owned from here: close frees it */
        r->item = key;
        int64_t dup = name_index_insert(&g->key_index, (const char *const *)g->keys, (int64_t)i);
        if (dup == -2) return fail(r, TR_ERR_NOMEM, "out of memory for the key index");
        if (dup >= 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "duplicate key (also key %lld)", (long long)dup);
            r->part = PART_VALUE;
            return fail(r, TR_ERR_FORMAT, msg);
        }
        r->part = PART_VALUE;
        tr_gguf_type t;
        if (!read_type(r, &t, "value")) return false;
        if (!read_value(r, t, &g->values[i], 0)) return false;
    }
    return true;
}

static bool parse_tensor_infos(parser *r, tr_gguf *g, uint64_t n_tensors) {
    r->part = PART_HEADER;
    /* Smallest tensor info: 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset). */
    if (n_tensors > remaining(r) / 32) {
        char msg[128];
        snprintf(msg, sizeof msg, "truncated file: %llu tensor infos cannot fit in the %llu bytes left",
                 (unsigned long long)n_tensors, (unsigned long long)remaining(r));
        return fail(r, TR_ERR_FORMAT, msg);
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        uint64_t cap = g->cap_tensors;
        void *t_ = g->tensors, *n_ = (void *)g->tensor_names;
        bool ok = grow(&t_, &cap, i, n_tensors, sizeof *g->tensors);
        g->tensors = t_;
        ok = ok && grow(&n_, &g->cap_tensors, i, n_tensors, sizeof *g->tensor_names);
        g->tensor_names = n_;
        if (!ok) return fail(r, TR_ERR_NOMEM, "out of memory for the tensor table");
        tr_gguf_tensor *t = &g->tensors[i];
        r->part = PART_TENSOR;
        r->idx = (int64_t)i;
        r->item = NULL;
        tr_str ns;
        if (!rd_str(r, &ns)) return false;
        char *name = dup_name(r, ns, "name");
        if (!name) return false;
        t->name = name;
        g->tensor_names[i] = name;
        g->n_tensors = (int64_t)i + 1;
        r->item = name;
        int64_t dup = name_index_insert(&g->tensor_index, g->tensor_names, (int64_t)i);
        if (dup == -2) return fail(r, TR_ERR_NOMEM, "out of memory for the tensor index");
        if (dup >= 0) {
            char msg[96];
            snprintf(msg, sizeof msg, "duplicate tensor name (also tensor %lld)", (long long)dup);
            return fail(r, TR_ERR_FORMAT, msg);
        }
        uint32_t n_dims;
        if (!rd_u32(r, &n_dims)) return false;
        if (n_dims < 1 || n_dims > 4) {
            char msg[64];
            snprintf(msg, sizeof msg, "%u dimensions (must be 1 to 4)", n_dims);
            return fail(r, TR_ERR_FORMAT, msg);
        }
        t->n_dims = (int)n_dims;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < n_dims; d++) {
            uint64_t x;
            if (!rd_u64(r, &x)) return false;
            if (x > (uint64_t)INT64_MAX) {
                char msg[96];
                snprintf(msg, sizeof msg, "dimension %u is %llu (larger than int64)", d, (unsigned long long)x);
                return fail(r, TR_ERR_FORMAT, msg);
            }
            t->ne[d] = (int64_t)x;
        }
        uint32_t type;
        if (!rd_u32(r, &type)) return false;
        const tr_type_traits *tt = type < TR_TYPE_COUNT ? tr_type_traits_get((int)type) : NULL;
        if (!tt) {
            char msg[64];
            snprintf(msg, sizeof msg, "unknown tensor type %u", type);
            return fail(r, TR_ERR_FORMAT, msg);
        }
        t->type = (tr_type)type;
        if (!rd_u64(r, &t->offset)) return false;

        /* Geometry: element count must fit int64, rows must be whole blocks. */
        uint64_t nel = 1;
        for (int d = 0; d < 4; d++)
            if (!tr_mul_u64(nel, (uint64_t)t->ne[d], &nel) || nel > (uint64_t)INT64_MAX) {
                char msg[160];
                snprintf(msg, sizeof msg, "element count overflows (shape %lld x %lld x %lld x %lld)",
                         (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
                return fail(r, TR_ERR_FORMAT, msg);
            }
        if (t->ne[0] % tt->blck_size) {
            char msg[128];
            snprintf(msg, sizeof msg, "ne[0] = %lld is not a multiple of the %s block size %lld",
                     (long long)t->ne[0], tt->name, (long long)tt->blck_size);
            return fail(r, TR_ERR_FORMAT, msg);
        }
        uint64_t nbytes = (uint64_t)(t->ne[0] / tt->blck_size);
        if (!tr_mul_u64(nbytes, tt->type_size, &nbytes) || !tr_mul_u64(nbytes, (uint64_t)t->ne[1], &nbytes) ||
            !tr_mul_u64(nbytes, (uint64_t)t->ne[2], &nbytes) || !tr_mul_u64(nbytes, (uint64_t)t->ne[3], &nbytes))
            return fail(r, TR_ERR_FORMAT, "byte size overflows");
        t->nbytes = nbytes;
    }
    return true;
}

static bool parse(parser *r, tr_gguf *g) {
    r->part = PART_HEADER;
    if (r->size < 4 || memcmp(r->p, TR_GGUF_MAGIC, 4)) {
        if (r->size < 4) return fail_truncated(r, 4);
        r->st = tr_err_set(r->err, TR_ERR_FORMAT, "%s: not a GGUF file (bad magic %02x %02x %02x %02x, expected \"GGUF\")",
                   r->name, r->p[0], r->p[1], r->p[2], r->p[3]);
        return false;
    }
    r->off = 4;
    uint32_t version;
    if (!rd_u32(r, &version)) return false;
    if (version != 2 && version != 3) {
        if (version == 1)
            r->st = tr_err_set(r->err, TR_ERR_UNSUPPORTED,
                       "%s: GGUF version 1 is not supported (32-bit counts; only versions 2 and 3 are read)", r->name);
        else if (version == 0x02000000u || version == 0x03000000u)
            r->st = tr_err_set(r->err, TR_ERR_UNSUPPORTED, "%s: big-endian GGUF files are not supported", r->name);
        else
            r->st = tr_err_set(r->err, TR_ERR_UNSUPPORTED, "%s: unsupported GGUF version %u (only 2 and 3)", r->name,
                       version);
        return false;
    }
    g->version = version;
    uint64_t n_tensors, n_kv;
    if (!rd_u64(r, &n_tensors) || !rd_u64(r, &n_kv)) return false;
    if (!parse_kvs(r, g, n_kv)) return false;

    g->alignment = TR_GGUF_DEFAULT_ALIGNMENT;
    int64_t ai = name_index_find(&g->key_index, (const char *const *)g->keys, "general.alignment");
    if (ai >= 0) {
        const tr_gguf_value *av = &g->values[ai];
        if (av->type != TR_GGUF_UINT32) {
            r->st = tr_err_set(r->err, TR_ERR_FORMAT, "%s: general.alignment has type %s (must be uint32)", r->name,
                       tr_gguf_type_name(av->type));
            return false;
        }
        if (av->v.u64 == 0 || (av->v.u64 & (av->v.u64 - 1))) {
            r->st = tr_err_set(r->err, TR_ERR_FORMAT, "%s: general.alignment is %llu (must be a non-zero power of two)",
                       r->name, (unsigned long long)av->v.u64);
            return false;
        }
        g->alignment = av->v.u64;
    }

    if (!parse_tensor_infos(r, g, n_tensors)) return false;

    /* The data section starts at the next multiple of the alignment. */
    uint64_t a = g->alignment;
    g->data_offset = (r->off + a - 1) / a * a; /* r->off < 2^63: no overflow */
    if (g->n_tensors == 0) return true;
    if (g->data_offset > r->size) {
        r->st = tr_err_set(r->err, TR_ERR_FORMAT,
                   "%s: truncated file: the data section would start at offset %llu, past the end (%llu bytes)",
                   r->name, (unsigned long long)g->data_offset, (unsigned long long)r->size);
        return false;
    }
    uint64_t data_size = r->size - g->data_offset;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        tr_gguf_tensor *t = &g->tensors[i];
        r->part = PART_TENSOR;
        r->idx = i;
        r->item = t->name;
        if (t->offset % a) {
            char msg[128];
            snprintf(msg, sizeof msg, "data offset %llu is not a multiple of the alignment %llu",
                     (unsigned long long)t->offset, (unsigned long long)a);
            return fail(r, TR_ERR_FORMAT, msg);
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "data out of bounds (%llu bytes at data offset %llu; the data section holds %llu bytes)",
                     (unsigned long long)t->nbytes, (unsigned long long)t->offset, (unsigned long long)data_size);
            return fail(r, TR_ERR_FORMAT, msg);
        }
        t->data = r->p + g->data_offset + t->offset;
    }
    return true;
}

static tr_status open_bytes(const uint8_t *data, uint64_t size, const char *name, bool mapped, tr_gguf **out,
                            tr_error *err) {
    tr_gguf *g = calloc(1, sizeof *g);
    char *path = name ? strdup(name) : strdup("(memory)");
    if (!g || !path) {
        free(g);
        free(path);
        if (mapped) munmap((void *)data, size);
        return tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory", name ? name : "(memory)");
    }
    g->path = path;
    g->base = data;
    g->size = size;
    g->mapped = mapped;
    tr_error local;
    parser r = {.p = data, .size = size, .off = 0, .name = path, .err = err ? err : &local};
    r.err->msg[0] = 0;
    if (!parse(&r, g)) {
        tr_status st = r.st != TR_OK ? r.st : TR_ERR_FORMAT;
        tr_gguf_close(g);
        *out = NULL;
        return st;
    }
    *out = g;
    return TR_OK;
}

tr_status tr_gguf_open_memory(const void *data, size_t size, const char *name, tr_gguf **out, tr_error *err) {
    if (!out) return tr_err_set(err, TR_ERR_ARG, "tr_gguf_open_memory: out is NULL");
    *out = NULL;
    if (!data && size) return tr_err_set(err, TR_ERR_ARG, "tr_gguf_open_memory: data is NULL");
    static const uint8_t empty[1];
    return open_bytes(data ? data : empty, size, name, false, out, err);
}

tr_status tr_gguf_open(const char *path, tr_gguf **out, tr_error *err) {
    if (!out) return tr_err_set(err, TR_ERR_ARG, "tr_gguf_open: out is NULL");
    *out = NULL;
    if (!path) return tr_err_set(err, TR_ERR_ARG, "tr_gguf_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tr_err_set(err, TR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tr_err_set(err, TR_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tr_err_set(err, TR_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return tr_err_set(err, TR_ERR_FORMAT, "%s: empty file (not a GGUF file)", path);
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file alive */
    if (m == MAP_FAILED) return tr_err_set(err, TR_ERR_IO, "%s: cannot mmap: %s", path, strerror(e));
    return open_bytes(m, (uint64_t)st.st_size, path, true, out, err);
}

/* ------------------------------------------------------------- accessors */

const char *tr_gguf_path(const tr_gguf *g) { return g->path; }
uint32_t tr_gguf_version(const tr_gguf *g) { return g->version; }
uint64_t tr_gguf_file_size(const tr_gguf *g) { return g->size; }
uint64_t tr_gguf_alignment(const tr_gguf *g) { return g->alignment; }
uint64_t tr_gguf_data_offset(const tr_gguf *g) { return g->data_offset; }
int64_t tr_gguf_n_kv(const tr_gguf *g) { return g->n_kv; }

const char *tr_gguf_kv_key(const tr_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->keys[i] : NULL;
}

const tr_gguf_value *tr_gguf_kv_value(const tr_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? &g->values[i] : NULL;
}

int64_t tr_gguf_find_kv(const tr_gguf *g, const char *key) {
    if (!key) return -1;
    return name_index_find(&g->key_index, (const char *const *)g->keys, key);
}

const tr_gguf_value *tr_gguf_get(const tr_gguf *g, const char *key) {
    return tr_gguf_kv_value(g, tr_gguf_find_kv(g, key));
}

bool tr_gguf_get_int(const tr_gguf *g, const char *key, int64_t *out) {
    const tr_gguf_value *v = tr_gguf_get(g, key);
    if (!v) return false;
    switch (v->type) {
    case TR_GGUF_UINT8: case TR_GGUF_UINT16: case TR_GGUF_UINT32: case TR_GGUF_UINT64:
        if (v->v.u64 > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)v->v.u64;
        return true;
    case TR_GGUF_INT8: case TR_GGUF_INT16: case TR_GGUF_INT32: case TR_GGUF_INT64:
        *out = v->v.i64;
        return true;
    case TR_GGUF_BOOL: *out = v->v.b; return true;
    default: return false;
    }
}

bool tr_gguf_get_float(const tr_gguf *g, const char *key, double *out) {
    const tr_gguf_value *v = tr_gguf_get(g, key);
    if (!v) return false;
    switch (v->type) {
    case TR_GGUF_FLOAT32: case TR_GGUF_FLOAT64: *out = v->v.f64; return true;
    case TR_GGUF_UINT8: case TR_GGUF_UINT16: case TR_GGUF_UINT32: case TR_GGUF_UINT64:
        *out = (double)v->v.u64;
        return true;
    case TR_GGUF_INT8: case TR_GGUF_INT16: case TR_GGUF_INT32: case TR_GGUF_INT64:
        *out = (double)v->v.i64;
        return true;
    default: return false;
    }
}

bool tr_gguf_get_bool(const tr_gguf *g, const char *key, bool *out) {
    const tr_gguf_value *v = tr_gguf_get(g, key);
    if (!v || v->type != TR_GGUF_BOOL) return false;
    *out = v->v.b;
    return true;
}

bool tr_gguf_get_str(const tr_gguf *g, const char *key, tr_str *out) {
    const tr_gguf_value *v = tr_gguf_get(g, key);
    if (!v || v->type != TR_GGUF_STRING) return false;
    *out = v->v.str;
    return true;
}

tr_str tr_gguf_arr_str(const tr_gguf_value *arr, uint64_t j) {
    tr_str s = {"", 0};
    if (!arr || arr->type != TR_GGUF_ARRAY || arr->v.arr.type != TR_GGUF_STRING || j >= arr->v.arr.n ||
        !arr->v.arr.str_off)
        return s;
    const uint8_t *p = arr->v.arr.data + arr->v.arr.str_off[j];
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

/* Element j of a fixed-size array, decoded to both forms. */
static bool arr_elem(const tr_gguf_value *arr, uint64_t j, int64_t *i, double *f) {
    if (!arr || arr->type != TR_GGUF_ARRAY || j >= arr->v.arr.n) return false;
    size_t sz = tr_gguf_type_size(arr->v.arr.type);
    if (!sz) return false;
    const uint8_t *p = arr->v.arr.data + j * sz;
    switch (arr->v.arr.type) {
    case TR_GGUF_UINT8: case TR_GGUF_BOOL: *i = p[0]; *f = (double)*i; return true;
    case TR_GGUF_INT8: *i = (int8_t)p[0]; *f = (double)*i; return true;
    case TR_GGUF_UINT16: { uint16_t x; memcpy(&x, p, 2); *i = x; *f = x; return true; }
    case TR_GGUF_INT16: { int16_t x; memcpy(&x, p, 2); *i = x; *f = x; return true; }
    case TR_GGUF_UINT32: { uint32_t x; memcpy(&x, p, 4); *i = x; *f = x; return true; }
    case TR_GGUF_INT32: { int32_t x; memcpy(&x, p, 4); *i = x; *f = x; return true; }
    case TR_GGUF_UINT64: { uint64_t x; memcpy(&x, p, 8); *i = (int64_t)x; *f = (double)x; return true; }
    case TR_GGUF_INT64: { int64_t x; memcpy(&x, p, 8); *i = x; *f = (double)x; return true; }
    case TR_GGUF_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        *f = x;
        *i = x >= -9.2e18f && x <= 9.2e18f ? (int64_t)x : 0; /* casting out-of-range floats is UB */
        return true;
    }
    case TR_GGUF_FLOAT64: {
        double x;
        memcpy(&x, p, 8);
        *f = x;
        *i = x >= -9.2e18 && x <= 9.2e18 ? (int64_t)x : 0;
        return true;
    }
    default: return false;
    }
}

int64_t tr_gguf_arr_int(const tr_gguf_value *arr, uint64_t j) {
    int64_t i = 0;
    double f = 0;
    return arr_elem(arr, j, &i, &f) ? i : 0;
}

double tr_gguf_arr_float(const tr_gguf_value *arr, uint64_t j) {
    int64_t i = 0;
    double f = 0;
    return arr_elem(arr, j, &i, &f) ? f : 0.0;
}

int64_t tr_gguf_n_tensors(const tr_gguf *g) { return g->n_tensors; }

const tr_gguf_tensor *tr_gguf_tensor_at(const tr_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const tr_gguf_tensor *tr_gguf_find_tensor(const tr_gguf *g, const char *name) {
    if (!name) return NULL;
    return tr_gguf_tensor_at(g, name_index_find(&g->tensor_index, g->tensor_names, name));
}
