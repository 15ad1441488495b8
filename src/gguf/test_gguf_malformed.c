/* Malformed GGUF files: each must be refused with the right status and a
 * one-line message that names the file and the problem — never a crash, a
 * hang or a huge allocation (this binary also runs under ASan + UBSan).
 * Crashes the fuzzer (src/gguf/fuzz_gguf.c) finds become cases here; its
 * runs so far (millions of inputs from tests/fuzz/fuzz_gguf/) found none. */
#include "gguf_test_build.h"
#include "trinity.h"
#include "tt.h"

#include <stdio.h>
#include <unistd.h>

#define NAME "bad.gguf"

/* Open bytes that must be refused; check status and message. */
static void expect_fail_at(const char *file, int line, const tb *b, tr_status want, const char *needle) {
    tr_gguf *g = (tr_gguf *)1;
    tr_error err = {{0}};
    tr_status st = tr_gguf_open_memory(b->p, b->n, NAME, &g, &err);
    bool ok = st == want && g == NULL && !strncmp(err.msg, NAME ": ", strlen(NAME) + 2) &&
              strstr(err.msg, needle) && !strchr(err.msg, '\n');
    if (!ok) {
        fprintf(stderr, "  %s:%d: expected status %d with \"%s\", got %d: \"%s\"\n", file, line, (int)want, needle,
                (int)st, err.msg);
        tt_failed_checks++;
    }
    if (st == TR_OK && g != (tr_gguf *)1) tr_gguf_close(g);
}
#define EXPECT_FAIL(b, st, needle) expect_fail_at(__FILE__, __LINE__, (b), (st), (needle))

static bool opens(const uint8_t *p, size_t n, tr_error *err) {
    tr_gguf *g = NULL;
    tr_status st = tr_gguf_open_memory(p, n, NAME, &g, err);
    tr_gguf_close(g);
    return st == TR_OK;
}

/* A small valid file whose last tensor ends exactly at the end of the file,
 * so that every strict prefix is incomplete. */
static void build_valid(tb *b) {
    tb_header(b, 3, 2, 4);
    tb_key(b, "general.architecture", 8); tb_str(b, "llama");
    tb_key(b, "x.toks", 9); tb_u32(b, 8); tb_u64(b, 3); tb_str(b, "a"); tb_str(b, "bb"); tb_str(b, "");
    tb_key(b, "x.nested", 9); tb_u32(b, 9); tb_u64(b, 2);
    tb_u32(b, 4); tb_u64(b, 1); tb_u32(b, 7);
    tb_u32(b, 8); tb_u64(b, 1); tb_str(b, "z");
    tb_key(b, "x.f", 6); tb_f32(b, 2.0f);
    uint64_t ne0[2] = {2, 2}, ne1[1] = {32};
    tb_tensor_info(b, "w0", 2, ne0, 0, 0);
    tb_tensor_info(b, "w1", 1, ne1, 8, 32);
    tb_pad(b, 32);
    for (int i = 0; i < 4; i++) tb_f32(b, (float)i);
    tb_pad(b, 32);
    for (int i = 0; i < 34; i++) tb_u8(b, (uint8_t)i);
}

TT_TEST(the_valid_base_file_opens) {
    tb b = {0};
    build_valid(&b);
    tr_error err = {{0}};
    TT_CHECK(opens(b.p, b.n, &err));
    if (err.msg[0]) fprintf(stderr, "  %s\n", err.msg);
    tb_free(&b);
}

TT_TEST(every_prefix_is_refused) {
    tb b = {0};
    build_valid(&b);
    for (size_t n = 0; n < b.n; n++) {
        /* a copy of exactly n bytes, so ASan sees any read past the end */
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, b.p, n);
        tr_error err = {{0}};
        bool ok = opens(p, n, &err);
        TT_CHECK(!ok);
        if (!ok && !(strstr(err.msg, "truncated") || strstr(err.msg, "data out of bounds"))) {
            fprintf(stderr, "  prefix of %zu bytes: unexpected message \"%s\"\n", n, err.msg);
            tt_failed_checks++;
        }
        free(p);
    }
    /* the data part: a tensor whose bytes run past the end */
    uint8_t *p = malloc(b.n - 1);
    memcpy(p, b.p, b.n - 1);
    tb c = {p, b.n - 1, b.n - 1};
    EXPECT_FAIL(&c, TR_ERR_FORMAT, "tensor info 1 ('w1'): data out of bounds");
    free(p);
    tb_free(&b);
}

TT_TEST(prefixes_of_a_file_without_tensors) {
    /* Without tensors the padding after the header may be absent, so the file
     * is complete exactly when its last value is. */
    tb b = {0};
    tb_header(&b, 3, 0, 2);
    tb_key(&b, "a", 4); tb_u32(&b, 1);
    tb_key(&b, "b", 9); tb_u32(&b, 8); tb_u64(&b, 2); tb_str(&b, "x"); tb_str(&b, "yz");
    size_t end = b.n;
    tb_pad(&b, 32);
    for (size_t n = 0; n <= b.n; n++) {
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, b.p, n);
        tr_error err = {{0}};
        bool ok = opens(p, n, &err);
        TT_CHECK(ok == (n >= end));
        if (!ok) TT_CHECK(strstr(err.msg, "truncated") != NULL);
        free(p);
    }
    tb_free(&b);
}

TT_TEST(bad_magic_and_versions) {
    tb b = {0};
    tb_bytes(&b, "GGML", 4); tb_u32(&b, 3); tb_u64(&b, 0); tb_u64(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "not a GGUF file (bad magic");
    tb_free(&b);
    tb_header(&b, 1, 0, 0);
    EXPECT_FAIL(&b, TR_ERR_UNSUPPORTED, "GGUF version 1 is not supported");
    tb_free(&b);
    tb_header(&b, 4, 0, 0);
    EXPECT_FAIL(&b, TR_ERR_UNSUPPORTED, "unsupported GGUF version 4");
    tb_free(&b);
    tb_header(&b, 0, 0, 0);
    EXPECT_FAIL(&b, TR_ERR_UNSUPPORTED, "unsupported GGUF version 0");
    tb_free(&b);
    tb_header(&b, 0x03000000u, 0, 0);
    EXPECT_FAIL(&b, TR_ERR_UNSUPPORTED, "big-endian");
    tb_free(&b);
}

TT_TEST(empty_input) {
    tb b = {0};
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "truncated");
    char path[] = "/tmp/trinity_gguf_empty_XXXXXX";
    int fd = mkstemp(path);
    TT_CHECK(fd >= 0);
    close(fd);
    tr_gguf *g = NULL;
    tr_error err = {{0}};
    TT_CHECK_EQ_INT(tr_gguf_open(path, &g, &err), TR_ERR_FORMAT);
    TT_CHECK(strstr(err.msg, path) && strstr(err.msg, "empty file"));
    unlink(path);
}

TT_TEST(lengths_running_past_the_end) {
    tb b = {0};
    tb_header(&b, 3, 0, 1);
    tb_u64(&b, 1000); tb_bytes(&b, "abc", 3); /* key of 1000 bytes, 19 present */
    for (int i = 0; i < 16; i++) tb_u8(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "truncated file: key 0 runs past the end");
    tb_free(&b);

    tb_header(&b, 3, 0, 1);
    tb_key(&b, "s", 8); tb_u64(&b, 1ull << 63); /* a string length that would overflow offset + len */
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "key 0 ('s') value runs past the end");
    tb_free(&b);

    tb_header(&b, 3, 0, 1);
    tb_key(&b, "s", 8); tb_u64(&b, UINT64_MAX);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "runs past the end");
    tb_free(&b);

    /* a string in an array of strings */
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "toks", 9); tb_u32(&b, 8); tb_u64(&b, 2); tb_str(&b, "ok"); tb_u64(&b, 50); tb_bytes(&b, "x", 1);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "key 0 ('toks') value runs past the end");
    tb_free(&b);

    /* a tensor name */
    tb_header(&b, 3, 1, 0);
    tb_u64(&b, 1ull << 62); tb_bytes(&b, "name", 4);
    for (int i = 0; i < 40; i++) tb_u8(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor info 0 runs past the end");
    tb_free(&b);
}

TT_TEST(hostile_counts_are_refused_before_allocating) {
    tb b = {0};
    uint32_t types[] = {4 /* uint32 */, 8 /* string */, 9 /* array */, 12 /* float64 */};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        uint64_t counts[] = {1ull << 60, UINT64_MAX, 1ull << 32};
        for (size_t c = 0; c < 3; c++) {
            tb_header(&b, 3, 0, 1);
            tb_key(&b, "big", 9); tb_u32(&b, types[k]); tb_u64(&b, counts[c]);
            for (int i = 0; i < 64; i++) tb_u8(&b, 0);
            EXPECT_FAIL(&b, TR_ERR_FORMAT, "runs past the end");
            tb_free(&b);
        }
    }
    tb_header(&b, 3, 0, 1ull << 60);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "key/value pairs cannot fit");
    tb_free(&b);
    tb_header(&b, 3, UINT64_MAX, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor infos cannot fit");
    tb_free(&b);
    /* nested: an outer array of 2 whose inner claims 2^61 elements */
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "n", 9); tb_u32(&b, 9); tb_u64(&b, 2); tb_u32(&b, 8); tb_u64(&b, 1ull << 61);
    for (int i = 0; i < 32; i++) tb_u8(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "runs past the end");
    tb_free(&b);
}

TT_TEST(deep_nesting_is_refused) {
    tb b = {0};
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "deep", 9);
    for (int i = 0; i < 100000; i++) { tb_u32(&b, 9); tb_u64(&b, 1); }
    tb_u32(&b, 0); tb_u64(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "nested deeper than");
    tb_free(&b);
}

TT_TEST(bad_value_types) {
    tb b = {0};
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "k", 13); tb_u64(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "key 0 ('k') value: unknown value type 13");
    tb_free(&b);
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "k", 9); tb_u32(&b, 0xFFFFFFFFu); tb_u64(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "unknown array element type 4294967295");
    tb_free(&b);
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "k", 7); tb_u8(&b, 2);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "must be 0 or 1");
    tb_free(&b);
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "k", 9); tb_u32(&b, 7); tb_u64(&b, 3); tb_u8(&b, 1); tb_u8(&b, 0); tb_u8(&b, 255);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "bool element 2 is 255");
    tb_free(&b);
}

TT_TEST(duplicate_and_nul_keys) {
    tb b = {0};
    tb_header(&b, 3, 0, 3);
    tb_key(&b, "general.name", 8); tb_str(&b, "a");
    tb_key(&b, "other", 4); tb_u32(&b, 1);
    tb_key(&b, "general.name", 8); tb_str(&b, "b");
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "key 2 ('general.name') value: duplicate key (also key 0)");
    tb_free(&b);
    tb_header(&b, 3, 0, 1);
    tb_strn(&b, "ab\0c", 4); tb_u32(&b, 4); tb_u32(&b, 1);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "key 0: key contains a NUL byte");
    tb_free(&b);
}

/* One tensor with the given fields, its data area `data_bytes` long. */
static void one_tensor(tb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                       uint64_t offset, size_t data_bytes) {
    tb_header(b, 3, 1, 0);
    tb_tensor_info(b, name, n_dims, ne, type, offset);
    tb_pad(b, 32);
    for (size_t i = 0; i < data_bytes; i++) tb_u8(b, 0);
}

TT_TEST(bad_tensor_infos) {
    tb b = {0};
    uint64_t ne5[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, "t", 5, ne5, 0, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor info 0 ('t'): 5 dimensions (must be 1 to 4)");
    tb_free(&b);
    one_tensor(&b, "t", 0, ne5, 0, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "0 dimensions");
    tb_free(&b);
    tb_header(&b, 3, 1, 0);
    tb_str(&b, "t"); tb_u32(&b, 0xFFFFFFFFu);
    for (int i = 0; i < 64; i++) tb_u8(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "4294967295 dimensions");
    tb_free(&b);

    uint64_t big[3] = {1ull << 32, 1ull << 32, 1};
    one_tensor(&b, "t", 3, big, 0, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "element count overflows");
    tb_free(&b);
    uint64_t big2[4] = {1ull << 20, 1ull << 20, 1ull << 20, 1ull << 4};
    one_tensor(&b, "t", 4, big2, 0, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "element count overflows");
    tb_free(&b);
    uint64_t neg[2] = {4, (uint64_t)-1};
    one_tensor(&b, "t", 2, neg, 0, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "dimension 1 is 18446744073709551615 (larger than int64)");
    tb_free(&b);
    /* 2^62 bytes: no overflow, but far more than the file holds */
    uint64_t huge[2] = {1ull << 30, 1ull << 30};
    one_tensor(&b, "t", 2, huge, 0 /* F32 */, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "out of bounds");
    tb_free(&b);
    uint64_t bytes_ovf2[2] = {1ull << 32, 1ull << 30};
    one_tensor(&b, "t", 2, bytes_ovf2, 28 /* F64: 2^62 elements x 8 bytes */, 0, 4);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "byte size overflows");
    tb_free(&b);

    uint64_t ne1[1] = {8};
    one_tensor(&b, "t", 1, ne1, 0, 0, 31);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor info 0 ('t'): data out of bounds (32 bytes at data offset 0");
    tb_free(&b);
    one_tensor(&b, "t", 1, ne1, 0, 1ull << 63, 64);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "data out of bounds");
    tb_free(&b);
    one_tensor(&b, "t", 1, ne1, 0, UINT64_MAX - 31, 64); /* offset + bytes wraps around */
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "data out of bounds");
    tb_free(&b);
    one_tensor(&b, "t", 1, ne1, 0, 16, 64);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "data offset 16 is not a multiple of the alignment 32");
    tb_free(&b);

    one_tensor(&b, "t", 1, ne1, 4 /* Q4_2, removed from ggml */, 0, 64);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "unknown tensor type 4");
    tb_free(&b);
    one_tensor(&b, "t", 1, ne1, 40, 0, 64);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "unknown tensor type 40");
    tb_free(&b);
    one_tensor(&b, "t", 1, ne1, 0xFFFFFFFFu, 0, 64);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "unknown tensor type 4294967295");
    tb_free(&b);

    uint64_t ne33[1] = {33};
    one_tensor(&b, "q", 1, ne33, 8 /* Q8_0 */, 0, 128);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor info 0 ('q'): ne[0] = 33 is not a multiple of the Q8_0 block size 32");
    tb_free(&b);
    uint64_t ne128[2] = {128, 1};
    one_tensor(&b, "k", 2, ne128, 12 /* Q4_K */, 0, 256);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "multiple of the Q4_K block size 256");
    tb_free(&b);

    tb_header(&b, 3, 1, 0);
    tb_strn(&b, "a\0b", 3); tb_u32(&b, 1); tb_u64(&b, 1); tb_u32(&b, 0); tb_u64(&b, 0);
    tb_pad(&b, 32); tb_u32(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor info 0: name contains a NUL byte");
    tb_free(&b);
}

TT_TEST(duplicate_tensor_names) {
    tb b = {0};
    tb_header(&b, 3, 3, 0);
    uint64_t ne[1] = {1};
    tb_tensor_info(&b, "a", 1, ne, 0, 0);
    tb_tensor_info(&b, "b", 1, ne, 0, 32);
    tb_tensor_info(&b, "a", 1, ne, 0, 64);
    tb_pad(&b, 32);
    for (int i = 0; i < 96; i++) tb_u8(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "tensor info 2 ('a'): duplicate tensor name (also tensor 0)");
    tb_free(&b);
}

TT_TEST(bad_alignment) {
    uint32_t bad[] = {0, 48, 3, 0x80000001u};
    tb b = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tb_header(&b, 3, 0, 1);
        tb_key(&b, "general.alignment", 4); tb_u32(&b, bad[i]);
        EXPECT_FAIL(&b, TR_ERR_FORMAT, "general.alignment is");
        tb_free(&b);
    }
    tb_header(&b, 3, 0, 1);
    tb_key(&b, "general.alignment", 10); tb_u64(&b, 32);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "general.alignment has type uint64 (must be uint32)");
    tb_free(&b);
    /* a large but valid alignment puts the data section past the end */
    tb_header(&b, 3, 1, 1);
    tb_key(&b, "general.alignment", 4); tb_u32(&b, 1u << 31);
    uint64_t ne[1] = {1};
    tb_tensor_info(&b, "t", 1, ne, 0, 0);
    tb_pad(&b, 32);
    tb_u32(&b, 0);
    EXPECT_FAIL(&b, TR_ERR_FORMAT, "data section would start at offset 2147483648");
    tb_free(&b);
}

int main(void) {
    TT_RUN(the_valid_base_file_opens);
    TT_RUN(every_prefix_is_refused);
    TT_RUN(prefixes_of_a_file_without_tensors);
    TT_RUN(bad_magic_and_versions);
    TT_RUN(empty_input);
    TT_RUN(lengths_running_past_the_end);
    TT_RUN(hostile_counts_are_refused_before_allocating);
    TT_RUN(deep_nesting_is_refused);
    TT_RUN(bad_value_types);
    TT_RUN(duplicate_and_nul_keys);
    TT_RUN(bad_tensor_infos);
    TT_RUN(duplicate_tensor_names);
    TT_RUN(bad_alignment);
    return TT_DONE();
}
