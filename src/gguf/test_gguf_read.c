/* The reader on a hand-assembled file: every value type, nested arrays,
 * arrays of strings, general.alignment, tensors of several types. The bytes
 * are written field by field here (gguf_test_build.h), independently of our
 * writer; the writer is checked against the gguf package in Python. */
#include "gguf_test_build.h"
#include "trinity.h"
#include "tt.h"

#include <stdio.h>
#include <unistd.h>

/* A valid file; alignment 64 to exercise general.alignment. */
static void build_valid(tb *b) {
    tb_header(b, 3, 3, 19);
    tb_key(b, "u8", 0); tb_u8(b, 200);
    tb_key(b, "i8", 1); tb_u8(b, (uint8_t)-5);
    tb_key(b, "u16", 2); tb_u16(b, 60000);
    tb_key(b, "i16", 3); tb_u16(b, (uint16_t)-1234);
    tb_key(b, "u32", 4); tb_u32(b, 4000000000u);
    tb_key(b, "i32", 5); tb_u32(b, (uint32_t)-100000);
    tb_key(b, "f32", 6); tb_f32(b, 1.5f);
    tb_key(b, "bool", 7); tb_u8(b, 1);
    tb_key(b, "str", 8); tb_str(b, "héllo");
    tb_key(b, "u64", 10); tb_u64(b, 0xFFFFFFFFFFFFFFFFull);
    tb_key(b, "i64", 11); tb_u64(b, (uint64_t)-7);
    tb_key(b, "f64", 12); tb_f64(b, -2.25);
    tb_key(b, "general.alignment", 4); tb_u32(b, 64);
    tb_key(b, "arr.i32", 9); tb_u32(b, 5); tb_u64(b, 3); tb_u32(b, 1); tb_u32(b, (uint32_t)-2); tb_u32(b, 3);
    tb_key(b, "arr.str", 9); tb_u32(b, 8); tb_u64(b, 3); tb_str(b, "a"); tb_str(b, ""); tb_str(b, "ccc");
    tb_key(b, "arr.f32", 9); tb_u32(b, 6); tb_u64(b, 2); tb_f32(b, 0.5f); tb_f32(b, -3.0f);
    /* [[1, 2], [], [3]] of uint16 */
    tb_key(b, "arr.nested", 9); tb_u32(b, 9); tb_u64(b, 3);
    tb_u32(b, 2); tb_u64(b, 2); tb_u16(b, 1); tb_u16(b, 2);
    tb_u32(b, 2); tb_u64(b, 0);
    tb_u32(b, 2); tb_u64(b, 1); tb_u16(b, 3);
    tb_key(b, "arr.empty", 9); tb_u32(b, 8); tb_u64(b, 0);
    tb_key(b, "arr.bool", 9); tb_u32(b, 7); tb_u64(b, 2); tb_u8(b, 0); tb_u8(b, 1);
    uint64_t ne_a[2] = {4, 3}, ne_b[1] = {32}, ne_c[3] = {0, 5, 2};
    tb_tensor_info(b, "a.weight", 2, ne_a, 0 /* F32 */, 0);
    tb_tensor_info(b, "b.q8", 1, ne_b, 8 /* Q8_0 */, 64);
    tb_tensor_info(b, "c.empty", 3, ne_c, 1 /* F16 */, 128);
    tb_pad(b, 64);
    for (int i = 0; i < 12; i++) tb_f32(b, (float)i);
    tb_pad(b, 64);
    for (int i = 0; i < 34; i++) tb_u8(b, (uint8_t)(i + 1));
    tb_pad(b, 64);
}

static void check_valid(const tr_gguf *g) {
    TT_CHECK_EQ_INT(tr_gguf_version(g), 3);
    TT_CHECK_EQ_INT(tr_gguf_n_kv(g), 19);
    TT_CHECK_EQ_INT(tr_gguf_alignment(g), 64);
    TT_CHECK_EQ_INT(tr_gguf_data_offset(g) % 64, 0);
    int64_t i;
    double f;
    bool bo;
    tr_str s;
    TT_CHECK(tr_gguf_get_int(g, "u8", &i) && i == 200);
    TT_CHECK(tr_gguf_get_int(g, "i8", &i) && i == -5);
    TT_CHECK(tr_gguf_get_int(g, "u16", &i) && i == 60000);
    TT_CHECK(tr_gguf_get_int(g, "i16", &i) && i == -1234);
    TT_CHECK(tr_gguf_get_int(g, "u32", &i) && i == 4000000000ll);
    TT_CHECK(tr_gguf_get_int(g, "i32", &i) && i == -100000);
    TT_CHECK(!tr_gguf_get_int(g, "u64", &i)); /* does not fit int64 */
    TT_CHECK(tr_gguf_get(g, "u64")->v.u64 == 0xFFFFFFFFFFFFFFFFull);
    TT_CHECK(tr_gguf_get_int(g, "i64", &i) && i == -7);
    TT_CHECK(tr_gguf_get_int(g, "bool", &i) && i == 1);
    TT_CHECK(!tr_gguf_get_int(g, "f32", &i));
    TT_CHECK(tr_gguf_get_float(g, "f32", &f) && f == 1.5);
    TT_CHECK(tr_gguf_get_float(g, "f64", &f) && f == -2.25);
    TT_CHECK(tr_gguf_get_float(g, "i32", &f) && f == -100000.0);
    TT_CHECK(tr_gguf_get_bool(g, "bool", &bo) && bo);
    TT_CHECK(!tr_gguf_get_bool(g, "u8", &bo));
    TT_CHECK(tr_gguf_get_str(g, "str", &s) && s.len == 6 && !memcmp(s.ptr, "héllo", 6));
    TT_CHECK(!tr_gguf_get_str(g, "u8", &s));
    TT_CHECK(!tr_gguf_get_int(g, "missing", &i));
    TT_CHECK(tr_gguf_get(g, "missing") == NULL);
    TT_CHECK_EQ_INT(tr_gguf_find_kv(g, "f64"), 11);
    TT_CHECK_STR(tr_gguf_kv_key(g, 8), "str");
    TT_CHECK(tr_gguf_kv_value(g, 8)->type == TR_GGUF_STRING);
    TT_CHECK(tr_gguf_kv_key(g, 19) == NULL && tr_gguf_kv_value(g, -1) == NULL);

    const tr_gguf_value *a = tr_gguf_get(g, "arr.i32");
    TT_CHECK(a && a->type == TR_GGUF_ARRAY && a->v.arr.type == TR_GGUF_INT32 && a->v.arr.n == 3);
    TT_CHECK(tr_gguf_arr_int(a, 0) == 1 && tr_gguf_arr_int(a, 1) == -2 && tr_gguf_arr_int(a, 2) == 3);
    TT_CHECK(tr_gguf_arr_int(a, 3) == 0); /* out of range: 0, not a read past the end */
    a = tr_gguf_get(g, "arr.str");
    TT_CHECK(a && a->v.arr.type == TR_GGUF_STRING && a->v.arr.n == 3);
    s = tr_gguf_arr_str(a, 0);
    TT_CHECK(s.len == 1 && s.ptr[0] == 'a');
    TT_CHECK(tr_gguf_arr_str(a, 1).len == 0);
    s = tr_gguf_arr_str(a, 2);
    TT_CHECK(s.len == 3 && !memcmp(s.ptr, "ccc", 3));
    TT_CHECK(tr_gguf_arr_str(a, 3).len == 0);
    a = tr_gguf_get(g, "arr.f32");
    TT_CHECK(tr_gguf_arr_float(a, 0) == 0.5 && tr_gguf_arr_float(a, 1) == -3.0);
    a = tr_gguf_get(g, "arr.nested");
    TT_CHECK(a && a->v.arr.type == TR_GGUF_ARRAY && a->v.arr.n == 3 && a->v.arr.items);
    if (a && a->v.arr.items) {
        const tr_gguf_value *it = a->v.arr.items;
        TT_CHECK(it[0].type == TR_GGUF_ARRAY && it[0].v.arr.type == TR_GGUF_UINT16 && it[0].v.arr.n == 2);
        TT_CHECK(tr_gguf_arr_int(&it[0], 0) == 1 && tr_gguf_arr_int(&it[0], 1) == 2);
        TT_CHECK(it[1].v.arr.n == 0);
        TT_CHECK(it[2].v.arr.n == 1 && tr_gguf_arr_int(&it[2], 0) == 3);
    }
    a = tr_gguf_get(g, "arr.empty");
    TT_CHECK(a && a->v.arr.type == TR_GGUF_STRING && a->v.arr.n == 0);
    a = tr_gguf_get(g, "arr.bool");
    TT_CHECK(a && tr_gguf_arr_int(a, 0) == 0 && tr_gguf_arr_int(a, 1) == 1);

    TT_CHECK_EQ_INT(tr_gguf_n_tensors(g), 3);
    const tr_gguf_tensor *t = tr_gguf_find_tensor(g, "a.weight");
    TT_CHECK(t && t == tr_gguf_tensor_at(g, 0));
    if (t) {
        TT_CHECK(t->type == TR_TYPE_F32 && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 3 && t->ne[2] == 1 &&
                 t->ne[3] == 1);
        TT_CHECK_EQ_INT(t->nbytes, 48);
        float x[12];
        memcpy(x, t->data, sizeof x);
        TT_CHECK(x[0] == 0.0f && x[11] == 11.0f);
    }
    t = tr_gguf_find_tensor(g, "b.q8");
    TT_CHECK(t && t->type == TR_TYPE_Q8_0 && t->nbytes == 34 && t->offset == 64);
    if (t) TT_CHECK(((const uint8_t *)t->data)[0] == 1 && ((const uint8_t *)t->data)[33] == 34);
    t = tr_gguf_find_tensor(g, "c.empty");
    TT_CHECK(t && t->nbytes == 0 && t->ne[0] == 0 && t->ne[1] == 5 && t->ne[2] == 2 && t->n_dims == 3);
    TT_CHECK(tr_gguf_find_tensor(g, "nope") == NULL && tr_gguf_tensor_at(g, 3) == NULL);
}

TT_TEST(reads_every_value_type_from_memory) {
    tb b = {0};
    build_valid(&b);
    tr_gguf *g = NULL;
    tr_error err = {{0}};
    TT_CHECK_EQ_INT(tr_gguf_open_memory(b.p, b.n, "mem.gguf", &g, &err), TR_OK);
    if (!g) fprintf(stderr, "  %s\n", err.msg);
    if (g) {
        check_valid(g);
        TT_CHECK_STR(tr_gguf_path(g), "mem.gguf");
        TT_CHECK_EQ_INT(tr_gguf_file_size(g), b.n);
        /* never copied: tensor data points into the caller's bytes */
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, 0);
        TT_CHECK((const uint8_t *)t->data >= b.p && (const uint8_t *)t->data < b.p + b.n);
    }
    tr_gguf_close(g);
    tb_free(&b);
}

TT_TEST(reads_the_same_from_a_mapped_file) {
    tb b = {0};
    build_valid(&b);
    char path[] = "/tmp/trinity_gguf_read_XXXXXX";
    int fd = mkstemp(path);
    TT_CHECK(fd >= 0);
    if (fd < 0) return;
    TT_CHECK(write(fd, b.p, b.n) == (ssize_t)b.n);
    close(fd);
    tr_gguf *g = NULL;
    tr_error err = {{0}};
    TT_CHECK_EQ_INT(tr_gguf_open(path, &g, &err), TR_OK);
    if (g) {
        check_valid(g);
        TT_CHECK_STR(tr_gguf_path(g), path);
    }
    tr_gguf_close(g);
    unlink(path);
    tb_free(&b);
}

TT_TEST(version_2_reads_like_3) {
    tb b = {0};
    tb_header(&b, 2, 1, 1);
    tb_key(&b, "general.name", 8);
    tb_str(&b, "v2");
    uint64_t ne[1] = {8};
    tb_tensor_info(&b, "t", 1, ne, 0, 0);
    tb_pad(&b, 32);
    for (int i = 0; i < 8; i++) tb_f32(&b, (float)i);
    tr_gguf *g = NULL;
    tr_error err = {{0}};
    TT_CHECK_EQ_INT(tr_gguf_open_memory(b.p, b.n, "v2.gguf", &g, &err), TR_OK);
    if (g) {
        TT_CHECK_EQ_INT(tr_gguf_version(g), 2);
        TT_CHECK_EQ_INT(tr_gguf_alignment(g), 32);
        TT_CHECK_EQ_INT(tr_gguf_data_offset(g) % 32, 0);
        TT_CHECK(tr_gguf_find_tensor(g, "t") && tr_gguf_find_tensor(g, "t")->nbytes == 32);
    }
    tr_gguf_close(g);
    tb_free(&b);
}

/* Tables and name indexes grow while parsing: thousands of keys and tensors
 * (past several rehashes) are all found, and a duplicate at the end is seen. */
TT_TEST(many_keys_and_tensors) {
    enum { NK = 5000, NT = 3000 };
    for (int dup = 0; dup < 2; dup++) {
        tb b = {0};
        tb_header(&b, 3, NT, NK);
        char name[32];
        for (int i = 0; i < NK; i++) {
            snprintf(name, sizeof name, "key.%d", dup && i == NK - 1 ? 17 : i);
            tb_key(&b, name, 4);
            tb_u32(&b, (uint32_t)i * 3);
        }
        uint64_t ne[1] = {8};
        for (int i = 0; i < NT; i++) {
            snprintf(name, sizeof name, "blk.%d.w", i);
            tb_tensor_info(&b, name, 1, ne, 0, (uint64_t)i * 32);
        }
        tb_pad(&b, 32);
        for (int i = 0; i < NT * 8; i++) tb_f32(&b, (float)i);
        tr_gguf *g = NULL;
        tr_error err = {{0}};
        tr_status st = tr_gguf_open_memory(b.p, b.n, "many.gguf", &g, &err);
        if (dup) {
            TT_CHECK_EQ_INT(st, TR_ERR_FORMAT);
            TT_CHECK(strstr(err.msg, "key 4999 ('key.17') value: duplicate key (also key 17)") != NULL);
        } else {
            TT_CHECK_EQ_INT(st, TR_OK);
            if (g) {
                int64_t x;
                for (int i = 0; i < NK; i++) {
                    snprintf(name, sizeof name, "key.%d", i);
                    TT_CHECK(tr_gguf_find_kv(g, name) == i && tr_gguf_get_int(g, name, &x) && x == i * 3);
                }
                for (int i = 0; i < NT; i++) {
                    snprintf(name, sizeof name, "blk.%d.w", i);
                    const tr_gguf_tensor *t = tr_gguf_find_tensor(g, name);
                    TT_CHECK(t == tr_gguf_tensor_at(g, i));
                    if (t) TT_CHECK(((const float *)t->data)[0] == (float)(i * 8));
                }
                TT_CHECK(tr_gguf_find_kv(g, "key.5000") == -1);
            }
        }
        tr_gguf_close(g);
        tb_free(&b);
    }
}

TT_TEST(missing_file_is_an_io_error_naming_it) {
    tr_gguf *g = (tr_gguf *)1;
    tr_error err = {{0}};
    TT_CHECK_EQ_INT(tr_gguf_open("/nonexistent/x.gguf", &g, &err), TR_ERR_IO);
    TT_CHECK(g == NULL);
    TT_CHECK(strstr(err.msg, "/nonexistent/x.gguf") != NULL);
    TT_CHECK_EQ_INT(tr_gguf_open("/tmp", &g, &err), TR_ERR_IO);
    TT_CHECK(strstr(err.msg, "not a regular file") != NULL);
}

int main(void) {
    TT_RUN(reads_every_value_type_from_memory);
    TT_RUN(reads_the_same_from_a_mapped_file);
    TT_RUN(version_2_reads_like_3);
    TT_RUN(many_keys_and_tensors);
    TT_RUN(missing_file_is_an_io_error_naming_it);
    return TT_DONE();
}
