/* trinity info FILE: what a GGUF file holds, like gguf-dump — the header,
 * every key with its type and value (long arrays and strings abbreviated
 * unless --full), then the tensor table and totals. */
#include "cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INFO_ARRAY_ITEMS 8   /* elements shown of a long array */
#define INFO_STRING_BYTES 72 /* bytes shown of a long string */

/* Bytes of a UTF-8 prefix of s[0..n) no longer than cap that does not cut a
 * character in two. */
static size_t utf8_cut(const char *s, size_t n, size_t cap) {
    if (n <= cap) return n;
    size_t k = cap;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    return k;
}

/* Bytes with quotes, backslashes and control characters escaped, so that a
 * hostile key or value cannot break the one-line-per-entry layout. */
static void put_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        default:
            if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
            else putchar(c);
        }
    }
}

/* A NUL-terminated name (key, tensor) escaped and padded to `width`. */
static void print_name(const char *s, size_t width) {
    size_t n = strlen(s);
    put_escaped(s, n);
    for (; n < width; n++) putchar(' ');
}

static void print_str(const char *s, uint64_t len, bool full) {
    size_t n = full ? (size_t)len : utf8_cut(s, (size_t)len, INFO_STRING_BYTES);
    putchar('"');
    put_escaped(s, n);
    putchar('"');
    if (n < len) printf("...(%" PRIu64 " bytes)", len);
}

/* The shortest decimal that reads back as the same float / double. */
static void print_float(double x, bool is_f32) {
    char buf[40];
    for (int prec = is_f32 ? 6 : 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (is_f32 ? strtof(buf, NULL) == (float)x : strtod(buf, NULL) == x) break;
    }
    fputs(buf, stdout);
}

static void print_scalar(const tr_gguf_value *v) {
    switch (v->type) {
    case TR_GGUF_UINT8: case TR_GGUF_UINT16: case TR_GGUF_UINT32: case TR_GGUF_UINT64:
        printf("%" PRIu64, v->v.u64);
        break;
    case TR_GGUF_INT8: case TR_GGUF_INT16: case TR_GGUF_INT32: case TR_GGUF_INT64:
        printf("%" PRId64, v->v.i64);
        break;
    case TR_GGUF_FLOAT32: print_float(v->v.f64, true); break;
    case TR_GGUF_FLOAT64: print_float(v->v.f64, false); break;
    case TR_GGUF_BOOL: fputs(v->v.b ? "true" : "false", stdout); break;
    default: break;
    }
}

static void print_elem(const tr_gguf_value *arr, uint64_t j, bool full);

/* Elements of an array, comma-separated, the first few unless full. */
static void print_elems(const tr_gguf_value *arr, bool full) {
    uint64_t n = arr->v.arr.n, show = full || n <= INFO_ARRAY_ITEMS ? n : INFO_ARRAY_ITEMS;
    for (uint64_t j = 0; j < show; j++) {
        if (j) fputs(", ", stdout);
        print_elem(arr, j, full);
    }
    if (show < n) fputs(", ...", stdout);
}

static void print_elem(const tr_gguf_value *arr, uint64_t j, bool full) {
    tr_gguf_type t = arr->v.arr.type;
    if (t == TR_GGUF_STRING) {
        tr_str s = tr_gguf_arr_str(arr, j);
        print_str(s.ptr, s.len, full);
    } else if (t == TR_GGUF_ARRAY) {
        putchar('[');
        print_elems(&arr->v.arr.items[j], full);
        putchar(']');
    } else if (t == TR_GGUF_FLOAT32 || t == TR_GGUF_FLOAT64) {
        print_float(tr_gguf_arr_float(arr, j), t == TR_GGUF_FLOAT32);
    } else if (t == TR_GGUF_BOOL) {
        fputs(tr_gguf_arr_int(arr, j) ? "true" : "false", stdout);
    } else if (t == TR_GGUF_UINT64) {
        printf("%" PRIu64, (uint64_t)tr_gguf_arr_int(arr, j));
    } else {
        printf("%" PRId64, tr_gguf_arr_int(arr, j));
    }
}

static void type_str(const tr_gguf_value *v, char *buf, size_t cap) {
    if (v->type != TR_GGUF_ARRAY) {
        snprintf(buf, cap, "%s", tr_gguf_type_name(v->type));
        return;
    }
    snprintf(buf, cap, "array[%s]", tr_gguf_type_name(v->v.arr.type));
}

static void print_shape(const tr_gguf_tensor *t, char *buf, size_t cap) {
    size_t k = 0;
    buf[0] = 0;
    for (int d = 0; d < t->n_dims && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, d ? " x %" PRId64 : "%" PRId64, t->ne[d]);
}

static void usage(FILE *f) {
    fprintf(f, "usage: trinity info [--full] FILE.gguf\n"
               "  Print a GGUF file's header, metadata and tensor table.\n"
               "  --full   print whole arrays and strings instead of the first few elements\n");
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL;
    bool full = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--full")) {
            full = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "trinity info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!path) {
            path = argv[i];
        } else {
            fprintf(stderr, "trinity info: more than one file given ('%s')\n", argv[i]);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    tr_gguf *g = NULL;
    tr_error err = {{0}};
    if (tr_gguf_open(path, &g, &err) != TR_OK) {
        fprintf(stderr, "trinity info: %s\n", err.msg);
        return 1;
    }
    printf("%s: GGUF v%u, %" PRId64 " keys, %" PRId64 " tensors, alignment %" PRIu64 ", data offset %" PRIu64
           ", file size %" PRIu64 "\n",
           path, tr_gguf_version(g), tr_gguf_n_kv(g), tr_gguf_n_tensors(g), tr_gguf_alignment(g),
           tr_gguf_data_offset(g), tr_gguf_file_size(g));

    printf("\nmetadata:\n");
    size_t kw = 10;
    for (int64_t i = 0; i < tr_gguf_n_kv(g); i++) {
        size_t l = strlen(tr_gguf_kv_key(g, i));
        if (l > kw) kw = l;
    }
    if (kw > 48) kw = 48;
    for (int64_t i = 0; i < tr_gguf_n_kv(g); i++) {
        const tr_gguf_value *v = tr_gguf_kv_value(g, i);
        char ts[40];
        type_str(v, ts, sizeof ts);
        printf("%5" PRId64 "  ", i);
        print_name(tr_gguf_kv_key(g, i), kw);
        printf("  %-15s ", ts);
        if (v->type == TR_GGUF_STRING) {
            print_str(v->v.str.ptr, v->v.str.len, full);
        } else if (v->type == TR_GGUF_ARRAY) {
            printf("[%" PRIu64 " %s%s] ", v->v.arr.n, v->v.arr.type == TR_GGUF_ARRAY ? "array" : tr_gguf_type_name(v->v.arr.type),
                   v->v.arr.n == 1 ? "" : "s");
            print_elems(v, full);
        } else {
            print_scalar(v);
        }
        putchar('\n');
    }

    printf("\ntensors:\n");
    size_t nw = 4;
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        size_t l = strlen(tr_gguf_tensor_at(g, i)->name);
        if (l > nw) nw = l;
    }
    if (nw > 64) nw = 64;
    printf("%5s  %-*s  %-8s %-28s %14s %14s\n", "index", (int)nw, "name", "type", "shape", "offset", "bytes");
    uint64_t total_bytes = 0, total_elems = 0;
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        char shape[128];
        print_shape(t, shape, sizeof shape);
        printf("%5" PRId64 "  ", i);
        print_name(t->name, nw);
        printf("  %-8s %-28s %14" PRIu64 " %14" PRIu64 "\n", tr_type_name(t->type), shape, t->offset, t->nbytes);
        total_bytes += t->nbytes;
        total_elems += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
    }
    printf("\ntotal: %" PRId64 " tensors, %" PRIu64 " elements, %" PRIu64 " bytes (%.2f MiB)\n",
           tr_gguf_n_tensors(g), total_elems, total_bytes, (double)total_bytes / (1024.0 * 1024.0));
    tr_gguf_close(g);

    /* What Trinity makes of it: the model as loaded, or the one line that
     * says why it cannot be (an unsupported architecture or feature). */
    printf("\nmodel:\n");
    tr_model *m = NULL;
    tr_error merr = {{0}};
    tr_model_params mp = tr_model_default_params();
    mp.no_repack = true; /* describing needs no repacked copy */
    if (tr_model_load_params(path, &mp, &m, &merr) != TR_OK) {
        printf("  not supported: %s\n", merr.msg);
        return 0;
    }
    size_t need = tr_model_describe(m, NULL, 0);
    char *d = malloc(need + 1);
    if (d) {
        tr_model_describe(m, d, need + 1);
        for (char *line = strtok(d, "\n"); line; line = strtok(NULL, "\n")) printf("  %s\n", line);
        free(d);
    }
    tr_model_free(m);
    return 0;
}
