/* The writer's memory handling and argument checks, here so that they run
 * under ASan + UBSan too. (Whether its files are right is checked against the
 * gguf package's GGUFReader in test_gguf_reference.py; this only reads them
 * back with our reader to walk every path of the deep copy.) */
#include "trinity.h"
#include "tt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *tmp_path(char *buf, size_t cap, const char *tag) {
    snprintf(buf, cap, "/tmp/trinity_gguf_write_%d_%s.gguf", (int)getpid(), tag);
    return buf;
}

TT_TEST(writes_copies_and_replaces) {
    tr_error err = {{0}};
    tr_gguf_writer *w = tr_gguf_writer_new();
    TT_CHECK(w != NULL);
    TT_CHECK_EQ_INT(tr_gguf_writer_set_str(w, "general.name", "first", &err), TR_OK);
    TT_CHECK_EQ_INT(tr_gguf_writer_set_u32(w, "n", 7, &err), TR_OK);
    TT_CHECK_EQ_INT(tr_gguf_writer_set_f32(w, "f", 0.25f, &err), TR_OK);
    TT_CHECK_EQ_INT(tr_gguf_writer_set_str(w, "general.name", "second", &err), TR_OK); /* replaced in place */

    /* array of strings, laid out as in a file */
    uint8_t sdata[8 + 2 + 8 + 0 + 8 + 3];
    uint64_t soff[3] = {0, 10, 18}, l;
    l = 2; memcpy(sdata, &l, 8); memcpy(sdata + 8, "ab", 2);
    l = 0; memcpy(sdata + 10, &l, 8);
    l = 3; memcpy(sdata + 18, &l, 8); memcpy(sdata + 26, "xyz", 3);
    tr_gguf_value strs = {.type = TR_GGUF_ARRAY, .v.arr = {TR_GGUF_STRING, 3, sdata, soff, NULL}};
    TT_CHECK_EQ_INT(tr_gguf_writer_set(w, "strs", &strs, &err), TR_OK);

    /* [[1, 2, 3], []] of int16 */
    int16_t i16[3] = {1, -2, 3};
    tr_gguf_value inner[2] = {
        {.type = TR_GGUF_ARRAY, .v.arr = {TR_GGUF_INT16, 3, (const uint8_t *)i16, NULL, NULL}},
        {.type = TR_GGUF_ARRAY, .v.arr = {TR_GGUF_INT16, 0, NULL, NULL, NULL}},
    };
    tr_gguf_value nested = {.type = TR_GGUF_ARRAY, .v.arr = {TR_GGUF_ARRAY, 2, NULL, NULL, inner}};
    TT_CHECK_EQ_INT(tr_gguf_writer_set(w, "nested", &nested, &err), TR_OK);

    float data[6] = {1, 2, 3, 4, 5, 6};
    int64_t ne[2] = {3, 2};
    TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w, "w", TR_TYPE_F32, 2, ne, data, &err), TR_OK);
    int64_t ne0[1] = {0};
    TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w, "empty", TR_TYPE_F32, 1, ne0, NULL, &err), TR_OK);

    /* refused */
    TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w, "w", TR_TYPE_F32, 2, ne, data, &err), TR_ERR_ARG);
    TT_CHECK(strstr(err.msg, "duplicate tensor name 'w'") != NULL);
    TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w, "x", (tr_type)4, 2, ne, data, &err), TR_ERR_ARG);
    int64_t bad[1] = {-1};
    TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w, "x", TR_TYPE_F32, 1, bad, data, &err), TR_ERR_ARG);
    TT_CHECK_EQ_INT(tr_gguf_writer_set_u32(w, "general.alignment", 0, &err), TR_ERR_ARG);
    tr_gguf_value oob = {.type = TR_GGUF_INT8, .v.i64 = 200};
    TT_CHECK_EQ_INT(tr_gguf_writer_set(w, "x", &oob, &err), TR_ERR_ARG);
    tr_gguf_value notarr[1] = {{.type = TR_GGUF_UINT8}};
    tr_gguf_value badnest = {.type = TR_GGUF_ARRAY, .v.arr = {TR_GGUF_ARRAY, 1, NULL, NULL, notarr}};
    TT_CHECK_EQ_INT(tr_gguf_writer_set(w, "x", &badnest, &err), TR_ERR_ARG);

    char p1[128], p2[128];
    TT_CHECK_EQ_INT(tr_gguf_writer_write(w, tmp_path(p1, sizeof p1, "a"), &err), TR_OK);
    tr_gguf_writer_free(w);

    tr_gguf *g = NULL;
    TT_CHECK_EQ_INT(tr_gguf_open(p1, &g, &err), TR_OK);
    if (!g) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    TT_CHECK_EQ_INT(tr_gguf_n_kv(g), 5);
    TT_CHECK_STR(tr_gguf_kv_key(g, 0), "general.name");
    tr_str s;
    TT_CHECK(tr_gguf_get_str(g, "general.name", &s) && s.len == 6 && !memcmp(s.ptr, "second", 6));

    /* copy every key of the file into a second writer, with its tensors */
    tr_gguf_writer *w2 = tr_gguf_writer_new();
    TT_CHECK_EQ_INT(tr_gguf_writer_copy_kv(w2, g, &err), TR_OK);
    TT_CHECK_EQ_INT(tr_gguf_writer_set_u32(w2, "general.alignment", 128, &err), TR_OK);
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w2, t->name, t->type, t->n_dims, t->ne, t->data, &err), TR_OK);
    }
    TT_CHECK_EQ_INT(tr_gguf_writer_write(w2, tmp_path(p2, sizeof p2, "b"), &err), TR_OK);
    tr_gguf_writer_free(w2);

    tr_gguf *g2 = NULL;
    TT_CHECK_EQ_INT(tr_gguf_open(p2, &g2, &err), TR_OK);
    if (g2) {
        TT_CHECK_EQ_INT(tr_gguf_alignment(g2), 128);
        TT_CHECK_EQ_INT(tr_gguf_n_kv(g2), 6);
        const tr_gguf_value *a = tr_gguf_get(g2, "strs");
        TT_CHECK(a && a->v.arr.n == 3);
        tr_str x = tr_gguf_arr_str(a, 2);
        TT_CHECK(x.len == 3 && !memcmp(x.ptr, "xyz", 3));
        TT_CHECK(tr_gguf_arr_str(a, 1).len == 0);
        a = tr_gguf_get(g2, "nested");
        TT_CHECK(a && a->v.arr.type == TR_GGUF_ARRAY && a->v.arr.n == 2);
        if (a && a->v.arr.items) {
            TT_CHECK(tr_gguf_arr_int(&a->v.arr.items[0], 1) == -2);
            TT_CHECK(a->v.arr.items[1].v.arr.n == 0);
        }
        double f;
        TT_CHECK(tr_gguf_get_float(g2, "f", &f) && f == 0.25);
        const tr_gguf_tensor *t = tr_gguf_find_tensor(g2, "w");
        TT_CHECK(t && t->nbytes == 24 && !memcmp(t->data, data, 24) && t->offset == 0);
        t = tr_gguf_find_tensor(g2, "empty");
        TT_CHECK(t && t->nbytes == 0 && t->offset == 128);
        TT_CHECK_EQ_INT(tr_gguf_data_offset(g2) % 128, 0);
    }
    tr_gguf_close(g2);
    tr_gguf_close(g);
    struct stat st;
    TT_CHECK(stat(p1, &st) == 0 && (st.st_mode & 0777) == 0644);
    unlink(p1);
    unlink(p2);
}

TT_TEST(a_failed_write_leaves_nothing) {
    tr_error err = {{0}};
    tr_gguf_writer *w = tr_gguf_writer_new();
    TT_CHECK_EQ_INT(tr_gguf_writer_write(w, "/nonexistent-dir/out.gguf", &err), TR_ERR_IO);
    TT_CHECK(strstr(err.msg, "/nonexistent-dir/out.gguf") != NULL);
    tr_gguf_writer_free(w);
}

/* Tensors produced at the write: called once each, in order, with their
 * size; the bytes they hand back land where a borrowed tensor's would; a failing fill ends
 * the write with its status and leaves no file, not even the temporary. */
typedef struct fill_log {
    int calls[3];
    int order[3], n;
    bool fail_second;
} fill_log;

static float a_bytes[24];
static uint8_t b_bytes[5];

static tr_status fill_a(void *user, uint64_t nbytes, const void **data, tr_error *err) {
    fill_log *l = user;
    l->calls[0]++, l->order[l->n++] = 0;
    for (uint64_t i = 0; i < nbytes / 4 && i < 24; i++) a_bytes[i] = (float)i + 0.5f;
    *data = a_bytes;
    (void)err;
    return TR_OK;
}
static tr_status fill_b(void *user, uint64_t nbytes, const void **data, tr_error *err) {
    fill_log *l = user;
    l->calls[1]++, l->order[l->n++] = 1;
    if (l->fail_second) {
        snprintf(err->msg, sizeof err->msg, "fill_b refuses");
        return TR_ERR_UNSUPPORTED;
    }
    memset(b_bytes, 0x7f, sizeof b_bytes < nbytes ? sizeof b_bytes : (size_t)nbytes);
    *data = b_bytes;
    return TR_OK;
}

TT_TEST(fills_are_called_in_order_and_a_failing_one_leaves_nothing) {
    char p[256];
    tmp_path(p, sizeof p, "fill");
    for (int fail = 0; fail < 2; fail++) {
        tr_error err = {{0}};
        fill_log log = {.fail_second = fail};
        tr_gguf_writer *w = tr_gguf_writer_new();
        int64_t ne_a[2] = {8, 3}, ne_b[1] = {5}, ne_c[1] = {4};
        float borrowed[4] = {1, 2, 3, 4};
        TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor_fill(w, "a", TR_TYPE_F32, 2, ne_a, fill_a, &log, &err), TR_OK);
        TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor(w, "c", TR_TYPE_F32, 1, ne_c, borrowed, &err), TR_OK);
        TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor_fill(w, "b", TR_TYPE_I8, 1, ne_b, fill_b, &log, &err), TR_OK);
        TT_CHECK_EQ_INT(tr_gguf_writer_add_tensor_fill(w, "d", TR_TYPE_F32, 1, ne_c, NULL, NULL, &err), TR_ERR_ARG);
        tr_status st = tr_gguf_writer_write(w, p, &err);
        tr_gguf_writer_free(w);
        TT_CHECK_EQ_INT(log.calls[0], 1);
        TT_CHECK_EQ_INT(log.calls[1], 1);
        TT_CHECK(log.n == 2 && log.order[0] == 0 && log.order[1] == 1);
        if (fail) {
            TT_CHECK_EQ_INT(st, TR_ERR_UNSUPPORTED);
            TT_CHECK(strstr(err.msg, "fill_b refuses") != NULL);
            TT_CHECK(access(p, F_OK) != 0);
            continue;
        }
        TT_CHECK_EQ_INT(st, TR_OK);
        tr_gguf *g = NULL;
        TT_CHECK_EQ_INT(tr_gguf_open(p, &g, &err), TR_OK);
        if (!g) continue;
        const tr_gguf_tensor *a = tr_gguf_find_tensor(g, "a"), *b = tr_gguf_find_tensor(g, "b"),
                             *c = tr_gguf_find_tensor(g, "c");
        TT_CHECK(a && b && c);
        if (a && b && c) {
            TT_CHECK(((const float *)a->data)[0] == 0.5f && ((const float *)a->data)[23] == 23.5f);
            TT_CHECK(((const uint8_t *)b->data)[0] == 0x7f && ((const uint8_t *)b->data)[4] == 0x7f);
            TT_CHECK(memcmp(c->data, borrowed, sizeof borrowed) == 0);
        }
        tr_gguf_close(g);
        unlink(p);
    }
    /* the temporary beside the target is gone too */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "ls %s.tmp.* 2>/dev/null | grep -q .", p);
    TT_CHECK(system(cmd) != 0);
}

int main(void) {
    TT_RUN(writes_copies_and_replaces);
    TT_RUN(a_failed_write_leaves_nothing);
    TT_RUN(fills_are_called_in_order_and_a_failing_one_leaves_nothing);
    return TT_DONE();
}
