/* Malformed tokenizer metadata: each is refused with an error that names the
 * field at fault, and nothing crashes or leaks (this runs under ASan too). */
#include "tok_test_util.h"
#include "tt.h"

/* Load what w holds; expect status `want` and a message containing `needle`. */
static void expect_error(tr_gguf_writer *w, const char *tag, tr_status want, const char *needle) {
    tr_error err = {{0}};
    tr_gguf *g = NULL;
    tr_vocab *v = NULL;
    tr_status st = tt_load(w, tag, &g, &v, &err);
    if (st != want || !strstr(err.msg, needle))
        fprintf(stderr, "  %s: status %d (%s), message '%s', wanted '%s'\n", tag, st, tr_status_str(st), err.msg, needle);
    TT_CHECK_EQ_INT(st, want);
    TT_CHECK(strstr(err.msg, needle) != NULL);
    TT_CHECK(v == NULL);
    TT_CHECK(strchr(err.msg, '\n') == NULL); /* one line */
    tr_vocab_free(v);
    tr_gguf_close(g);
    tr_gguf_writer_free(w);
}

static tt_vocab tv;

static tr_gguf_writer *spm(const char *omit) {
    tr_error err = {{0}};
    return tt_writer_spm(&tv, omit, &err);
}

/* A few-token byte-level BPE vocabulary. */
static tr_gguf_writer *bpe(void) {
    tr_error err = {{0}};
    tr_gguf_writer *w = tr_gguf_writer_new();
    static const char *const toks[] = {"<|endoftext|>", "a", "b", "c", "ab", "abc", "\xc4\xa0", ("\xc4\xa0" "a")};
    static const char *const merges[] = {"a b", "ab c", "\xc4\xa0 a"};
    tr_gguf_writer_set_str(w, "general.architecture", "llama", &err);
    tr_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", &err);
    tr_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2", &err);
    tt_set_strs(w, "tokenizer.ggml.tokens", toks, 8, &err);
    tt_set_strs(w, "tokenizer.ggml.merges", merges, 3, &err);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 0, &err);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 0, &err);
    return w;
}

TT_TEST(good_vocabularies_load) {
    tr_error err = {{0}};
    tr_gguf *g;
    tr_vocab *v;
    tr_gguf_writer *w = spm(NULL);
    TT_CHECK_EQ_INT(tt_load(w, "good_spm", &g, &v, &err), TR_OK);
    tr_gguf_writer_free(w);
    if (v) {
        TT_CHECK_EQ_INT(tr_vocab_kind_of(v), TR_VOCAB_SPM);
        TT_CHECK_EQ_INT(tr_vocab_n_tokens(v), (int64_t)tv.n);
        TT_CHECK_EQ_INT(tr_vocab_bos(v), 1);
        TT_CHECK(tr_vocab_is_eog(v, 2));
        int32_t *ids;
        size_t n;
        TT_CHECK_EQ_INT(tr_tokenize(v, "hello", 5, true, true, &ids, &n, &err), TR_OK);
        TT_CHECK_EQ_INT(n, 6); /* no space prefix, so no ▁hello: <s> h e l l o (no two-letter piece of them exists) */
        free(ids);
        tr_vocab_free(v);
        tr_gguf_close(g);
    }
    w = bpe();
    TT_CHECK_EQ_INT(tt_load(w, "good_bpe", &g, &v, &err), TR_OK);
    tr_gguf_writer_free(w);
    if (v) {
        int32_t *ids;
        size_t n;
        TT_CHECK_EQ_INT(tr_tokenize(v, "abc a", 5, false, false, &ids, &n, &err), TR_OK);
        TT_CHECK_EQ_INT(n, 2);
        if (n == 2) {
            TT_CHECK_EQ_INT(ids[0], 5); /* abc */
            TT_CHECK_EQ_INT(ids[1], 7); /* Ġa */
        }
        free(ids);
        tr_vocab_free(v);
        tr_gguf_close(g);
    }
}

TT_TEST(missing_or_mistyped_keys) {
    tr_error err = {{0}};
    expect_error(spm("tokenizer.ggml.model"), "nomodel", TR_ERR_FORMAT, "tokenizer.ggml.model is missing");
    expect_error(spm("tokenizer.ggml.tokens"), "notokens", TR_ERR_FORMAT, "tokenizer.ggml.tokens is missing");

    tr_gguf_writer *w = spm(NULL);
    int32_t ints[3] = {1, 2, 3};
    tr_gguf_value iv = tt_arr(TR_GGUF_INT32, ints, 3);
    tr_gguf_writer_set(w, "tokenizer.ggml.tokens", &iv, &err);
    expect_error(w, "inttokens", TR_ERR_FORMAT, "tokenizer.ggml.tokens: expected an array of strings");

    w = spm(NULL);
    tt_set_strs(w, "tokenizer.ggml.tokens", NULL, 0, &err);
    expect_error(w, "emptytokens", TR_ERR_FORMAT, "tokenizer.ggml.tokens is empty");

    w = spm(NULL);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.model", 5, &err);
    expect_error(w, "intmodel", TR_ERR_FORMAT, "tokenizer.ggml.model: expected a string");

    w = spm(NULL);
    tr_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert", &err);
    expect_error(w, "bert", TR_ERR_UNSUPPORTED, "tokenizer.ggml.model = 'bert'");

    w = spm(NULL);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.add_bos_token", 1, &err);
    expect_error(w, "addbos", TR_ERR_FORMAT, "tokenizer.ggml.add_bos_token: expected a bool");
}

TT_TEST(array_lengths_must_cover_the_tokens) {
    tr_error err = {{0}};
    tr_gguf_writer *w = spm(NULL);
    tr_gguf_value sc = tt_arr(TR_GGUF_FLOAT32, tv.scores, tv.n - 1);
    tr_gguf_writer_set(w, "tokenizer.ggml.scores", &sc, &err);
    expect_error(w, "shortscores", TR_ERR_FORMAT, "tokenizer.ggml.scores has");

    w = spm(NULL);
    tr_gguf_value ty = tt_arr(TR_GGUF_INT32, tv.types, 10);
    tr_gguf_writer_set(w, "tokenizer.ggml.token_type", &ty, &err);
    expect_error(w, "shorttypes", TR_ERR_FORMAT, "tokenizer.ggml.token_type has");

    w = spm(NULL);
    const char *strs[2] = {"x", "y"};
    tt_set_strs(w, "tokenizer.ggml.scores", strs, 2, &err);
    expect_error(w, "strscores", TR_ERR_FORMAT, "tokenizer.ggml.scores: expected an array of float32 or int32");
}

TT_TEST(special_ids_must_be_tokens) {
    tr_error err = {{0}};
    tr_gguf_writer *w = spm(NULL);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)tv.n, &err);
    expect_error(w, "badbos", TR_ERR_FORMAT, "tokenizer.ggml.bos_token_id");

    w = spm(NULL);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 1000000, &err);
    expect_error(w, "badeos", TR_ERR_FORMAT, "tokenizer.ggml.eos_token_id = 1000000 is out of range");

    w = spm(NULL);
    tr_gguf_value neg = {.type = TR_GGUF_INT32, .v.i64 = -5};
    tr_gguf_writer_set(w, "tokenizer.ggml.eot_token_id", &neg, &err);
    expect_error(w, "negeot", TR_ERR_FORMAT, "tokenizer.ggml.eot_token_id = -5");

    w = spm(NULL);
    tr_gguf_writer_set_str(w, "tokenizer.ggml.bos_token_id", "1", &err);
    expect_error(w, "strbos", TR_ERR_FORMAT, "tokenizer.ggml.bos_token_id: expected an integer");
}

TT_TEST(duplicate_token_text) {
    tr_error err = {{0}};
    tr_gguf_writer *w = spm(NULL);
    char **dup = malloc(tv.n * sizeof *dup);
    memcpy(dup, tv.tokens, tv.n * sizeof *dup);
    dup[tv.n - 1] = dup[5]; /* the same text twice */
    tt_set_strs(w, "tokenizer.ggml.tokens", (const char *const *)dup, tv.n, &err);
    free(dup);
    expect_error(w, "dup", TR_ERR_FORMAT, "have the same text");
}

TT_TEST(bpe_merges) {
    tr_error err = {{0}};
    tr_gguf_writer *w = bpe();
    const char *unknown[] = {"a b", "a zz"};
    tt_set_strs(w, "tokenizer.ggml.merges", unknown, 2, &err);
    expect_error(w, "mergeunknown", TR_ERR_FORMAT, "tokenizer.ggml.merges[1] 'a zz': its right part is not a token");

    w = bpe();
    const char *nores[] = {"b c"}; /* "bc" is no token */
    tt_set_strs(w, "tokenizer.ggml.merges", nores, 1, &err);
    expect_error(w, "mergeresult", TR_ERR_FORMAT, "the merged text is not a token");

    w = bpe();
    const char *nospace[] = {"abc"};
    tt_set_strs(w, "tokenizer.ggml.merges", nospace, 1, &err);
    expect_error(w, "mergespace", TR_ERR_FORMAT, "tokenizer.ggml.merges[0] 'abc' is not two tokens");

    w = bpe();
    int32_t ints[2] = {1, 2};
    tr_gguf_value iv = tt_arr(TR_GGUF_INT32, ints, 2);
    tr_gguf_writer_set(w, "tokenizer.ggml.merges", &iv, &err);
    expect_error(w, "mergeint", TR_ERR_FORMAT, "tokenizer.ggml.merges: expected an array of strings");

    w = bpe();
    tr_gguf_writer_set_str(w, "tokenizer.ggml.pre", "no-such-pre", &err);
    expect_error(w, "pre", TR_ERR_UNSUPPORTED, "tokenizer.ggml.pre = 'no-such-pre'");

    /* a gpt2 vocabulary without merges */
    w = tr_gguf_writer_new();
    const char *toks[] = {"a", "b"};
    tr_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", &err);
    tt_set_strs(w, "tokenizer.ggml.tokens", toks, 2, &err);
    expect_error(w, "nomerges", TR_ERR_FORMAT, "tokenizer.ggml.merges is missing");
}

TT_TEST(add_bos_without_bos) {
    /* chatglm-bpe has no default BOS; asking for one is an error at tokenize
     * time (llama.cpp asserts), not a crash */
    tr_error err = {{0}};
    tr_gguf_writer *w = tr_gguf_writer_new();
    const char *toks[] = {"a", "b", "ab"};
    const char *merges[] = {"a b"};
    tr_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", &err);
    tr_gguf_writer_set_str(w, "tokenizer.ggml.pre", "chatglm-bpe", &err);
    tt_set_strs(w, "tokenizer.ggml.tokens", toks, 3, &err);
    tt_set_strs(w, "tokenizer.ggml.merges", merges, 1, &err);
    tt_set_bool(w, "tokenizer.ggml.add_bos_token", true, &err);
    tr_gguf *g;
    tr_vocab *v;
    TT_CHECK_EQ_INT(tt_load(w, "nobos", &g, &v, &err), TR_OK);
    tr_gguf_writer_free(w);
    if (!v) return;
    int32_t *ids = NULL;
    size_t n = 0;
    TT_CHECK_EQ_INT(tr_tokenize(v, "ab", 2, true, true, &ids, &n, &err), TR_ERR_FORMAT);
    TT_CHECK(strstr(err.msg, "add_bos_token") != NULL);
    TT_CHECK(ids == NULL);
    TT_CHECK_EQ_INT(tr_tokenize(v, "ab", 2, false, true, &ids, &n, &err), TR_OK);
    TT_CHECK_EQ_INT(n, 1);
    free(ids);
    tr_vocab_free(v);
    tr_gguf_close(g);
}

int main(void) {
    tt_vocab_spm(&tv);
    TT_RUN(good_vocabularies_load);
    TT_RUN(missing_or_mistyped_keys);
    TT_RUN(array_lengths_must_cover_the_tokens);
    TT_RUN(special_ids_must_be_tokens);
    TT_RUN(duplicate_token_text);
    TT_RUN(bpe_merges);
    TT_RUN(add_bos_without_bos);
    tt_vocab_free(&tv);
    return TT_DONE();
}
