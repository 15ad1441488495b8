/* Streaming detokenization: pieces may end inside a UTF-8 character (byte
 * fallback writes a character as several one-byte tokens); a stream prints
 * the complete prefix of what it has and keeps the rest. Fed piece by piece,
 * the printed chunks must each be whole UTF-8 and add up to the text. */
#include "tok_test_util.h"
#include "tt.h"

/* Strict UTF-8 validation (no overlongs, no surrogates, <= U+10FFFF),
 * written independently of the code under test. */
static bool valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
        else return false;
        if (i + len > n) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* Tokenize text, stream the pieces through tr_utf8_complete_prefix, and
 * check the result; returns how many pieces ended inside a character. */
static int stream_roundtrip(const tr_vocab *v, const char *text, const char *expect) {
    int32_t *ids = NULL;
    size_t n = 0;
    tr_error err = {{0}};
    TT_CHECK_EQ_INT(tr_tokenize(v, text, strlen(text), false, false, &ids, &n, &err), TR_OK);
    char pending[64], out[4096], piece[256];
    size_t np = 0, no = 0;
    int split = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl = tr_token_to_piece(v, ids[i], false, piece, sizeof piece);
        TT_CHECK(pl <= sizeof piece);
        if (!valid_utf8((unsigned char *)piece, pl)) split++;
        TT_CHECK(np + pl <= sizeof pending);
        memcpy(pending + np, piece, pl);
        np += pl;
        size_t k = tr_utf8_complete_prefix(pending, np);
        TT_CHECK(k <= np);
        TT_CHECK(valid_utf8((unsigned char *)pending, k)); /* what a stream prints is always whole */
        memcpy(out + no, pending, k);
        no += k;
        memmove(pending, pending + k, np - k);
        np -= k;
    }
    TT_CHECK_EQ_INT(np, 0); /* nothing left over at the end */
    TT_CHECK_EQ_INT(no, strlen(expect));
    TT_CHECK(no == strlen(expect) && !memcmp(out, expect, no));
    free(ids);
    return split;
}

TT_TEST(complete_prefix_cases) {
    /* expected lengths worked out by hand from the UTF-8 encoding */
    struct { const char *s; size_t n, want; } c[] = {
        {"", 0, 0},
        {"abc", 3, 3},
        {"\xc3", 1, 0},                 /* first byte of é */
        {"a\xc3", 2, 1},
        {"a\xc3\xa9", 3, 3},            /* é complete */
        {"\xe4\xb8", 2, 0},             /* two of the three bytes of 中 */
        {"x\xe4\xb8\xad", 4, 4},
        {"\xf0\x9f\x98", 3, 0},         /* three of the four bytes of 😀 */
        {"ok\xf0\x9f\x98\x80", 6, 6},
        {"ok\xf0", 3, 2},
        {"\x80", 1, 1},                 /* stray continuation byte: nothing to wait for */
        {"a\x80\x80\x80\x80", 5, 5},
        {"\xff", 1, 1},                 /* never a lead byte */
        {"\xc3\xa9\xc3", 3, 2},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        size_t got = tr_utf8_complete_prefix(c[i].s, c[i].n);
        if (got != c[i].want) fprintf(stderr, "  case %zu\n", i);
        TT_CHECK_EQ_INT(got, c[i].want);
    }
}

TT_TEST(small_vocab_byte_fallback_streams_whole_characters) {
    tt_vocab tv;
    tt_vocab_spm(&tv);
    tr_error err = {{0}};
    tr_gguf_writer *w = tt_writer_spm(&tv, NULL, &err);
    tr_gguf *g;
    tr_vocab *v;
    TT_CHECK_EQ_INT(tt_load(w, "stream", &g, &v, &err), TR_OK);
    tr_gguf_writer_free(w);
    tt_vocab_free(&tv);
    if (!v) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    /* ö, ü, the emoji and the CJK extension-B character are not in the
     * vocabulary: byte fallback splits them over several pieces. */
    const char *text = "hello w\xc3\xb6rld \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xf0\xa0\x80\x80 caf\xc3\xa9 \xc3\xbc";
    int split = stream_roundtrip(v, text, text);
    TT_CHECK(split >= 4); /* the test does exercise pieces that end mid-character */
    tr_vocab_free(v);
    tr_gguf_close(g);
}

TT_TEST(gemma_streams_whole_characters) {
    tr_error err = {{0}};
    tr_gguf *g = NULL;
    tr_vocab *v = NULL;
    if (tr_gguf_open("models/gemma-3-270m-q4_k_m.gguf", &g, &err) != TR_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        tt_missing_reference("the model models/gemma-3-270m-q4_k_m.gguf");
        return;
    }
    TT_CHECK_EQ_INT(tr_vocab_load(g, &v, &err), TR_OK);
    if (v) {
        /* rare characters (CJK extension B, Linear B, a private-use code point)
         * that Gemma writes with byte tokens, between ordinary text */
        const char *text = "Stream \xf0\xa0\x80\x80\xf0\xa0\x80\x81 then \xf0\x90\x80\x80 and \xee\x80\x80 \xe4\xbd\xa0\xe5\xa5\xbd!";
        int split = stream_roundtrip(v, text, text);
        TT_CHECK(split >= 2);
        tr_vocab_free(v);
    }
    tr_gguf_close(g);
}

int main(void) {
    TT_RUN(complete_prefix_cases);
    TT_RUN(small_vocab_byte_fallback_streams_whole_characters);
    TT_RUN(gemma_streams_whole_characters);
    return TT_DONE();
}
