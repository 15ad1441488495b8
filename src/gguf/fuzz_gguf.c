/* libFuzzer target: the GGUF reader over arbitrary bytes. On success every
 * accessor is walked — each key, each array element (nested too), each
 * tensor's first and last byte — so a validation gap that lets a bad offset
 * through shows up as an ASan report here rather than in a user's model. */
#include "trinity.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    tr_gguf_close(g);
    return 0;
}
