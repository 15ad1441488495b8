/* GGUF writer: collects key/values (deep copies) and tensors (borrowed data),
 * then writes a GGUF v3 file — to a temporary file in the same folder,
 * renamed over the target only once everything is written, so a failed or
 * interrupted write never leaves a half file under the real name.
 *
 * Layout choices match the gguf Python package's GGUFWriter: keys in the order
 * they were first set, tensors in the order added, each tensor's data padded
 * with zeros to the alignment (general.alignment if set, else 32). */
#include "gguf_internal.h"

#include "core/util.h"
#include "quant/quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct wkv {
    char *key;
    tr_gguf_value val; /* owns every byte it points to */
} wkv;

typedef struct wtensor {
    char *name;
    tr_type type;
    int n_dims;
    int64_t ne[4];
    const void *data; /* borrowed until the write */
    tr_gguf_fill_fn fill; /* or produced at the write */
    void *user;
    uint64_t nbytes;
} wtensor;

struct tr_gguf_writer {
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
};

tr_gguf_writer *tr_gguf_writer_new(void) { return calloc(1, sizeof(tr_gguf_writer)); }

void tr_gguf_writer_free(tr_gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        tr_gguf_value_free_parts(&w->kv[i].val, true);
    }
    free(w->kv);
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->t);
    free(w);
}

/* ------------------------------------------------------------ deep copy */

static bool int_fits(tr_gguf_type t, const tr_gguf_value *v) {
    switch (t) {
    case TR_GGUF_UINT8: return v->v.u64 <= UINT8_MAX;
    case TR_GGUF_UINT16: return v->v.u64 <= UINT16_MAX;
    case TR_GGUF_UINT32: return v->v.u64 <= UINT32_MAX;
    case TR_GGUF_INT8: return v->v.i64 >= INT8_MIN && v->v.i64 <= INT8_MAX;
    case TR_GGUF_INT16: return v->v.i64 >= INT16_MIN && v->v.i64 <= INT16_MAX;
    case TR_GGUF_INT32: return v->v.i64 >= INT32_MIN && v->v.i64 <= INT32_MAX;
    default: return true;
    }
}

static void *dup_bytes(const void *p, size_t n) {
    void *q = malloc(n ? n : 1);
    if (q && n) memcpy(q, p, n);
    return q;
}

/* Copy src into dst so that dst owns all its bytes; strings of string arrays
 * are re-laid out contiguously (length + bytes, as in the file). */
static tr_status copy_value(tr_gguf_value *dst, const tr_gguf_value *src, int depth, const char *key,
                            tr_error *err) {
    memset(dst, 0, sizeof *dst);
    if ((unsigned)src->type >= TR_GGUF_TYPE_COUNT)
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': unknown value type %d", key, (int)src->type);
    dst->type = src->type;
    if (src->type == TR_GGUF_STRING) {
        if (!src->v.str.ptr && src->v.str.len)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': string with NULL bytes", key);
        char *p = dup_bytes(src->v.str.ptr, src->v.str.len);
        if (!p) return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
        dst->v.str.ptr = p;
        dst->v.str.len = src->v.str.len;
        return TR_OK;
    }
    if (src->type != TR_GGUF_ARRAY) {
        if (!int_fits(src->type, src))
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': value out of range for %s", key,
                              tr_gguf_type_name(src->type));
        dst->v = src->v;
        return TR_OK;
    }
    if (depth >= TR_GGUF_MAX_ARRAY_DEPTH)
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': arrays nested deeper than %d levels", key,
                          TR_GGUF_MAX_ARRAY_DEPTH);
    tr_gguf_type et = src->v.arr.type;
    uint64_t n = src->v.arr.n;
    if ((unsigned)et >= TR_GGUF_TYPE_COUNT)
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': unknown array element type %d", key, (int)et);
    dst->v.arr.type = et;
    size_t sz = tr_gguf_type_size(et);
    if (sz) {
        uint64_t bytes;
        if (!tr_mul_u64(n, sz, &bytes) || bytes > SIZE_MAX)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': array too large", key);
        if (n && !src->v.arr.data)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': array with NULL data", key);
        if (et == TR_GGUF_BOOL)
            for (uint64_t j = 0; j < n; j++)
                if (src->v.arr.data[j] > 1)
                    return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': bool element %llu is not 0 or 1",
                                      key, (unsigned long long)j);
        uint8_t *d = dup_bytes(src->v.arr.data, (size_t)bytes);
        if (!d) return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
        dst->v.arr.data = d;
        dst->v.arr.n = n;
        return TR_OK;
    }
    if (n == 0) {
        dst->v.arr.data = dup_bytes(NULL, 0);
        return dst->v.arr.data ? TR_OK : tr_err_set(err, TR_ERR_NOMEM, "gguf writer: out of memory");
    }
    if (et == TR_GGUF_STRING) {
        if (!src->v.arr.str_off || !src->v.arr.data)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': string array without data/str_off", key);
        uint64_t total = 0;
        for (uint64_t j = 0; j < n; j++) {
            tr_str s = tr_gguf_arr_str(src, j);
            if (!tr_add_u64(total, 8, &total) || !tr_add_u64(total, s.len, &total) || total > SIZE_MAX)
                return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': array too large", key);
        }
        uint8_t *d = malloc((size_t)total);
        uint64_t *off = n <= SIZE_MAX / 8 ? malloc((size_t)n * 8) : NULL;
        if (!d || !off) {
            free(d);
            free(off);
            return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
        }
        uint64_t pos = 0;
        for (uint64_t j = 0; j < n; j++) {
            tr_str s = tr_gguf_arr_str(src, j);
            off[j] = pos;
            memcpy(d + pos, &s.len, 8);
            if (s.len) memcpy(d + pos + 8, s.ptr, s.len);
            pos += 8 + s.len;
        }
        dst->v.arr.data = d;
        dst->v.arr.str_off = off;
        dst->v.arr.n = n;
        return TR_OK;
    }
    /* arrays of arrays */
    if (!src->v.arr.items)
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': array of arrays without items", key);
    if (n > SIZE_MAX / sizeof(tr_gguf_value))
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': array too large", key);
    tr_gguf_value *items = calloc((size_t)n, sizeof *items);
    if (!items) return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: key '%s': out of memory", key);
    dst->v.arr.items = items;
    dst->v.arr.n = n; /* zeroed items: freeing a partial copy is safe */
    for (uint64_t j = 0; j < n; j++) {
        if (src->v.arr.items[j].type != TR_GGUF_ARRAY)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': element %llu of an array of arrays is a %s",
                              key, (unsigned long long)j, tr_gguf_type_name(src->v.arr.items[j].type));
        tr_status st = copy_value(&items[j], &src->v.arr.items[j], depth + 1, key, err);
        if (st != TR_OK) return st;
    }
    return TR_OK;
}

/* ------------------------------------------------------------- setters */

tr_status tr_gguf_writer_set(tr_gguf_writer *w, const char *key, const tr_gguf_value *v, tr_error *err) {
    if (!w || !key || !v) return tr_err_set(err, TR_ERR_ARG, "gguf writer: NULL argument");
    if (!strcmp(key, "general.alignment") &&
        (v->type != TR_GGUF_UINT32 || v->v.u64 == 0 || v->v.u64 > UINT32_MAX || (v->v.u64 & (v->v.u64 - 1))))
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: general.alignment must be a uint32 power of two");
    tr_gguf_value copy;
    tr_status st = copy_value(&copy, v, 0, key, err);
    if (st != TR_OK) {
        tr_gguf_value_free_parts(&copy, true);
        return st;
    }
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) { /* replace, keeping the key's place */
            tr_gguf_value_free_parts(&w->kv[i].val, true);
            w->kv[i].val = copy;
            return TR_OK;
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *kv = realloc(w->kv, cap * sizeof *kv);
        if (!kv) {
            tr_gguf_value_free_parts(&copy, true);
            return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: out of memory");
        }
        w->kv = kv;
        w->cap_kv = cap;
    }
    char *k = strdup(key);
    if (!k) {
        tr_gguf_value_free_parts(&copy, true);
        return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: out of memory");
    }
    w->kv[w->n_kv].key = k;
    w->kv[w->n_kv].val = copy;
    w->n_kv++;
    return TR_OK;
}

tr_status tr_gguf_writer_set_str(tr_gguf_writer *w, const char *key, const char *s, tr_error *err) {
    if (!s) return tr_err_set(err, TR_ERR_ARG, "gguf writer: key '%s': NULL string", key ? key : "");
    tr_gguf_value v = {.type = TR_GGUF_STRING, .v.str = {s, strlen(s)}};
    return tr_gguf_writer_set(w, key, &v, err);
}

tr_status tr_gguf_writer_set_u32(tr_gguf_writer *w, const char *key, uint32_t x, tr_error *err) {
    tr_gguf_value v = {.type = TR_GGUF_UINT32, .v.u64 = x};
    return tr_gguf_writer_set(w, key, &v, err);
}

tr_status tr_gguf_writer_set_f32(tr_gguf_writer *w, const char *key, float x, tr_error *err) {
    tr_gguf_value v = {.type = TR_GGUF_FLOAT32, .v.f64 = x};
    return tr_gguf_writer_set(w, key, &v, err);
}

tr_status tr_gguf_writer_copy_kv(tr_gguf_writer *w, const tr_gguf *g, tr_error *err) {
    if (!w || !g) return tr_err_set(err, TR_ERR_ARG, "gguf writer: NULL argument");
    for (int64_t i = 0; i < tr_gguf_n_kv(g); i++) {
        tr_status st = tr_gguf_writer_set(w, tr_gguf_kv_key(g, i), tr_gguf_kv_value(g, i), err);
        if (st != TR_OK) return st;
    }
    return TR_OK;
}

static tr_status add_tensor(tr_gguf_writer *w, const char *name, tr_type type, int n_dims, const int64_t ne[],
                            const void *data, tr_gguf_fill_fn fill, void *user, tr_error *err) {
    if (!w || !name || !ne) return tr_err_set(err, TR_ERR_ARG, "gguf writer: NULL argument");
    const tr_type_traits *tt = (int)type < TR_TYPE_COUNT ? tr_type_traits_get((int)type) : NULL;
    if (!tt) return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': unknown type %d", name, (int)type);
    if (n_dims < 1 || n_dims > 4)
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': %d dimensions (must be 1 to 4)", name, n_dims);
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .data = data, .fill = fill, .user = user};
    uint64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] < 0)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': negative dimension %d", name, d);
        t.ne[d] = ne[d];
        if (!tr_mul_u64(nel, (uint64_t)ne[d], &nel) || nel > (uint64_t)INT64_MAX)
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': element count overflows", name);
    }
    if (t.ne[0] % tt->blck_size)
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': ne[0] = %lld is not a multiple of the %s block size %lld",
                          name, (long long)t.ne[0], tt->name, (long long)tt->blck_size);
    uint64_t nbytes = (uint64_t)(t.ne[0] / tt->blck_size);
    if (!tr_mul_u64(nbytes, tt->type_size, &nbytes) || !tr_mul_u64(nbytes, (uint64_t)t.ne[1], &nbytes) ||
        !tr_mul_u64(nbytes, (uint64_t)t.ne[2], &nbytes) || !tr_mul_u64(nbytes, (uint64_t)t.ne[3], &nbytes))
        return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': byte size overflows", name);
    t.nbytes = nbytes;
    if (nbytes && !data && !fill) return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': NULL data", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return tr_err_set(err, TR_ERR_ARG, "gguf writer: duplicate tensor name '%s'", name);
    if (w->n_t == w->cap_t) {
        size_t cap = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt) return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: out of memory");
        w->t = nt;
        w->cap_t = cap;
    }
    t.name = strdup(name);
    if (!t.name) return tr_err_set(err, TR_ERR_NOMEM, "gguf writer: out of memory");
    w->t[w->n_t++] = t;
    return TR_OK;
}

tr_status tr_gguf_writer_add_tensor(tr_gguf_writer *w, const char *name, tr_type type, int n_dims,
                                    const int64_t ne[], const void *data, tr_error *err) {
    return add_tensor(w, name, type, n_dims, ne, data, NULL, NULL, err);
}

tr_status tr_gguf_writer_add_tensor_fill(tr_gguf_writer *w, const char *name, tr_type type, int n_dims,
                                         const int64_t ne[], tr_gguf_fill_fn fill, void *user, tr_error *err) {
    if (!fill) return tr_err_set(err, TR_ERR_ARG, "gguf writer: tensor '%s': NULL fill", name ? name : "(null)");
    return add_tensor(w, name, type, n_dims, ne, NULL, fill, user, err);
}

/* ---------------------------------------------------------------- write */

typedef struct out {
    FILE *f;
    uint64_t pos;
    bool ok;
} out;

static void put(out *o, const void *p, size_t n) {
    if (o->ok && n && fwrite(p, 1, n, o->f) != n) o->ok = false;
    o->pos += n;
}
static void put_u32(out *o, uint32_t x) { put(o, &x, 4); }
static void put_u64(out *o, uint64_t x) { put(o, &x, 8); }
static void put_str(out *o, const char *p, uint64_t n) {
    put_u64(o, n);
    put(o, p, (size_t)n);
}
static void put_pad(out *o, uint64_t align) {
    static const uint8_t zeros[256];
    uint64_t n = (align - o->pos % align) % align;
    while (n) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        put(o, zeros, k);
        n -= k;
    }
}

/* The value's bytes after its type field. */
static void put_value(out *o, const tr_gguf_value *v) {
    switch (v->type) {
    case TR_GGUF_UINT8: case TR_GGUF_INT8: { uint8_t x = (uint8_t)v->v.u64; put(o, &x, 1); break; }
    case TR_GGUF_UINT16: case TR_GGUF_INT16: { uint16_t x = (uint16_t)v->v.u64; put(o, &x, 2); break; }
    case TR_GGUF_UINT32: case TR_GGUF_INT32: put_u32(o, (uint32_t)v->v.u64); break;
    case TR_GGUF_UINT64: case TR_GGUF_INT64: put_u64(o, v->v.u64); break;
    case TR_GGUF_FLOAT32: { float x = (float)v->v.f64; put(o, &x, 4); break; }
    case TR_GGUF_FLOAT64: put(o, &v->v.f64, 8); break;
    case TR_GGUF_BOOL: { uint8_t x = v->v.b ? 1 : 0; put(o, &x, 1); break; }
    case TR_GGUF_STRING: put_str(o, v->v.str.ptr, v->v.str.len); break;
    case TR_GGUF_ARRAY: {
        put_u32(o, (uint32_t)v->v.arr.type);
        put_u64(o, v->v.arr.n);
        size_t sz = tr_gguf_type_size(v->v.arr.type);
        if (sz) {
            put(o, v->v.arr.data, (size_t)(v->v.arr.n * sz));
        } else if (v->v.arr.type == TR_GGUF_STRING) {
            if (v->v.arr.n) { /* laid out contiguously by copy_value */
                tr_str last = tr_gguf_arr_str(v, v->v.arr.n - 1);
                put(o, v->v.arr.data, (size_t)(v->v.arr.str_off[v->v.arr.n - 1] + 8 + last.len));
            }
        } else {
            for (uint64_t j = 0; j < v->v.arr.n; j++) put_value(o, &v->v.arr.items[j]);
        }
        break;
    }
    default: break;
    }
}

tr_status tr_gguf_writer_write(tr_gguf_writer *w, const char *path, tr_error *err) {
    if (!w || !path) return tr_err_set(err, TR_ERR_ARG, "gguf writer: NULL argument");
    uint64_t align = TR_GGUF_DEFAULT_ALIGNMENT;
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, "general.alignment")) align = w->kv[i].val.v.u64;

    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) return tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return tr_err_set(err, TR_ERR_IO, "%s: cannot create a temporary file beside it: %s", path, strerror(e));
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; a model file is meant to be shared */
    out o = {.f = fdopen(fd, "wb"), .pos = 0, .ok = true};
    if (!o.f) {
        int e = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return tr_err_set(err, TR_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }

    put(&o, TR_GGUF_MAGIC, 4);
    put_u32(&o, 3);
    put_u64(&o, w->n_t);
    put_u64(&o, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        put_str(&o, w->kv[i].key, strlen(w->kv[i].key));
        put_u32(&o, (uint32_t)w->kv[i].val.type);
        put_value(&o, &w->kv[i].val);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        put_str(&o, t->name, strlen(t->name));
        put_u32(&o, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&o, (uint64_t)t->ne[d]);
        put_u32(&o, (uint32_t)t->type);
        put_u64(&o, off);
        off += (t->nbytes + align - 1) / align * align;
    }
    put_pad(&o, align);
    tr_status fst = TR_OK;
    for (size_t i = 0; i < w->n_t && fst == TR_OK; i++) {
        const wtensor *t = &w->t[i];
        if (t->fill) {
            const void *data = NULL;
            if ((fst = t->fill(t->user, t->nbytes, &data, err)) == TR_OK) {
                if (!data && t->nbytes) fst = tr_err_set(err, TR_ERR_ARG, "%s: tensor '%s': no data", path, t->name);
                else put(&o, data, (size_t)t->nbytes);
            }
        } else {
            put(&o, t->data, (size_t)t->nbytes);
        }
        put_pad(&o, align);
    }
    if (fst != TR_OK) {
        fclose(o.f);
        unlink(tmp);
        free(tmp);
        return fst;
    }

    int e = 0;
    if (!o.ok) e = errno ? errno : EIO;
    if (fclose(o.f) != 0 && !e) e = errno ? errno : EIO;
    if (!e && rename(tmp, path) != 0) e = errno;
    if (e) {
        unlink(tmp);
        free(tmp);
        return tr_err_set(err, TR_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    free(tmp);
    return TR_OK;
}
