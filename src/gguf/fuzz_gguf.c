/* libFuzzer target: the GGUF reader over arbitrary bytes. On success every
 * accessor is walked — each key, each array element (nested too), each
 * tensor's first and last byte — so a validation gap that lets a bad offset
 * through shows up as an ASan report here rather than in a user's model.
 * Then the file goes through the writer (copy_kv + every tensor) and back
 * through the reader: what we accept we must be able to write, identically. */
#include "trinity.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile uint64_t sink;

static void walk_value(const tr_gguf_value *v) {
    switch (v->type) {
    case TR_GGUF_STRING:
        if (v->v.str.len) sink += (uint8_t)v->v.str.ptr[0] + (uint8_t)v->v.str.ptr[v->v.str.len - 1];
        break;
    case TR_GGUF_ARRAY:
        for (uint64_t j = 0; j < v->v.arr.n; j++) {
            if (v->v.arr.type == TR_GGUF_STRING) {
                tr_str s = tr_gguf_arr_str(v, j);
                if (s.len) sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
            } else if (v->v.arr.type == TR_GGUF_ARRAY) {
                walk_value(&v->v.arr.items[j]);
            } else {
                sink += (uint64_t)tr_gguf_arr_int(v, j);
                double f = tr_gguf_arr_float(v, j);
                sink += f == f;
            }
        }
        sink += (uint64_t)tr_gguf_arr_int(v, v->v.arr.n); /* out of range: must be harmless */
        break;
    default: sink += v->v.u64; break;
    }
}

static bool same_value(const tr_gguf_value *a, const tr_gguf_value *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case TR_GGUF_STRING:
        return a->v.str.len == b->v.str.len && !memcmp(a->v.str.ptr, b->v.str.ptr, a->v.str.len);
    case TR_GGUF_FLOAT32: case TR_GGUF_FLOAT64:
        return !memcmp(&a->v.f64, &b->v.f64, sizeof(double)); /* bitwise: NaNs too */
    case TR_GGUF_BOOL: return a->v.b == b->v.b;
    case TR_GGUF_ARRAY:
        if (a->v.arr.type != b->v.arr.type || a->v.arr.n != b->v.arr.n) return false;
        for (uint64_t j = 0; j < a->v.arr.n; j++) {
            if (a->v.arr.type == TR_GGUF_ARRAY) {
                if (!same_value(&a->v.arr.items[j], &b->v.arr.items[j])) return false;
            } else if (a->v.arr.type == TR_GGUF_STRING) {
                tr_str x = tr_gguf_arr_str(a, j), y = tr_gguf_arr_str(b, j);
                if (x.len != y.len || memcmp(x.ptr, y.ptr, x.len)) return false;
            } else {
                int64_t x = tr_gguf_arr_int(a, j), y = tr_gguf_arr_int(b, j);
                double fx = tr_gguf_arr_float(a, j), fy = tr_gguf_arr_float(b, j);
                if (x != y || memcmp(&fx, &fy, sizeof fx)) return false;
            }
        }
        return true;
    default: return a->v.u64 == b->v.u64;
    }
}

static void round_trip(const tr_gguf *g) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/trinity_fuzz_gguf_%d.gguf", (int)getpid());
    tr_error err;
    tr_gguf_writer *w = tr_gguf_writer_new();
    if (!w) abort();
    if (tr_gguf_writer_copy_kv(w, g, &err) != TR_OK) abort();
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        if (tr_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, &err) != TR_OK) abort();
    }
    if (tr_gguf_writer_write(w, path, &err) != TR_OK) abort();
    tr_gguf_writer_free(w);
    tr_gguf *h = NULL;
    if (tr_gguf_open(path, &h, &err) != TR_OK) abort();
    if (tr_gguf_n_kv(h) != tr_gguf_n_kv(g) || tr_gguf_n_tensors(h) != tr_gguf_n_tensors(g) ||
        tr_gguf_alignment(h) != tr_gguf_alignment(g))
        abort();
    for (int64_t i = 0; i < tr_gguf_n_kv(g); i++)
        if (strcmp(tr_gguf_kv_key(g, i), tr_gguf_kv_key(h, i)) || !same_value(tr_gguf_kv_value(g, i), tr_gguf_kv_value(h, i)))
            abort();
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        const tr_gguf_tensor *a = tr_gguf_tensor_at(g, i), *b = tr_gguf_tensor_at(h, i);
        if (strcmp(a->name, b->name) || a->type != b->type || a->n_dims != b->n_dims ||
            memcmp(a->ne, b->ne, sizeof a->ne) || a->nbytes != b->nbytes || (a->nbytes && memcmp(a->data, b->data, a->nbytes)))
            abort();
    }
    tr_gguf_close(h);
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tr_gguf *g = NULL;
    tr_error err;
    if (tr_gguf_open_memory(data, size, "fuzz.gguf", &g, &err) != TR_OK) {
        if (g || !err.msg[0] || strchr(err.msg, '\n')) abort(); /* failure must be clean and one line */
        return 0;
    }
    sink += tr_gguf_version(g) + tr_gguf_alignment(g) + tr_gguf_data_offset(g) + tr_gguf_file_size(g);
    for (int64_t i = 0; i < tr_gguf_n_kv(g); i++) {
        const char *key = tr_gguf_kv_key(g, i);
        if (tr_gguf_find_kv(g, key) != i) abort(); /* keys are unique */
        walk_value(tr_gguf_kv_value(g, i));
        int64_t x;
        double f;
        bool b;
        tr_str s;
        sink += tr_gguf_get_int(g, key, &x) + tr_gguf_get_float(g, key, &f) + tr_gguf_get_bool(g, key, &b) +
                tr_gguf_get_str(g, key, &s);
    }
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        if (tr_gguf_find_tensor(g, t->name) != t) abort();
        if (t->n_dims < 1 || t->n_dims > 4 || !tr_type_name(t->type)) abort();
        if (t->nbytes) {
            const uint8_t *p = t->data;
            if (p < data || p + t->nbytes > data + size) abort();
            sink += p[0] + p[t->nbytes - 1];
        }
    }
    round_trip(g);
    tr_gguf_close(g);
    return 0;
}
