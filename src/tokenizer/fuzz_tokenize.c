/* libFuzzer target: tokenize arbitrary bytes (invalid UTF-8 included) with
 * small SPM and byte-level BPE vocabularies built here, then render the ids
 * back. Checks: no crash, ids in range, and for valid UTF-8 input the pieces
 * add up to the input again (byte fallback / byte-level alphabet lose
 * nothing); the streaming helper never cuts past the end.
 *
 * The first input byte picks the vocabulary and the flags; the rest is text. */
#define _GNU_SOURCE /* memmem */
#include "tok_test_util.h"

#include <assert.h>

/* Strict UTF-8 (what must round-trip exactly). */
static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i], cp, len;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
        else return false;
        if (i + len > n) return false;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* GPT-2's printable stand-in for byte b, as UTF-8 (independent of src). */
static void gpt2_char(unsigned b, char out[3]) {
    unsigned cp = b;
    if (b <= 0x20) cp = 0x100 + b;
    else if (b >= 0x7F && b <= 0xA0) cp = 0x100 + 33 + (b - 0x7F);
    else if (b == 0xAD) cp = 0x100 + 67;
    memset(out, 0, 3);
    if (cp < 0x80) out[0] = (char)cp;
    else out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F));
}

#define N_BPE_PRE 4
static const char *const bpe_pres[N_BPE_PRE] = {"llama-bpe", "default", "deepseek-llm", "qwen2"};
static tr_gguf *gs[1 + N_BPE_PRE];
static tr_vocab *vs[1 + N_BPE_PRE];

static tr_gguf_writer *bpe_writer(const char *pre) {
    tr_error err = {{0}};
    /* the 256 byte characters, some merges among them, and special tokens */
    static char chars[256][3];
    const char *toks[256 + 16];
    size_t n = 0;
    for (unsigned b = 0; b < 256; b++) {
        gpt2_char(b, chars[b]);
        toks[n++] = chars[b];
    }
    static const char *const extra[] = {"th", "the", "\xc4\xa0t", "\xc4\xa0the", "in", "ing", "\xc4\xa0\xc4\xa0",
                                        "12", "123", "<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    static const char *const merges[] = {"t h", "th e", "\xc4\xa0 t", "\xc4\xa0t he", "i n", "in g", "\xc4\xa0 \xc4\xa0",
                                         "1 2", "12 3"};
    /* "he" is no token here: "Ġt he" is dropped below; keep merges valid */
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) toks[n++] = extra[i];
    const char *m2[16];
    size_t nm = 0;
    for (size_t i = 0; i < sizeof merges / sizeof merges[0]; i++)
        if (strcmp(merges[i], "\xc4\xa0t he")) m2[nm++] = merges[i];
    m2[nm++] = "\xc4\xa0t h";
    m2[nm++] = "\xc4\xa0th e";
    toks[n++] = "\xc4\xa0th";
    tr_gguf_writer *w = tr_gguf_writer_new();
    tr_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", &err);
    tr_gguf_writer_set_str(w, "tokenizer.ggml.pre", pre, &err);
    tt_set_strs(w, "tokenizer.ggml.tokens", toks, n, &err);
    tt_set_strs(w, "tokenizer.ggml.merges", m2, nm, &err);
    int32_t types[256 + 16];
    for (size_t i = 0; i < n; i++) types[i] = strncmp(toks[i], "<|", 2) ? 1 : 3;
    tr_gguf_value ty = tt_arr(TR_GGUF_INT32, types, n);
    tr_gguf_writer_set(w, "tokenizer.ggml.token_type", &ty, &err);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 256 + 9, &err);
    tr_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 256 + 9, &err);
    return w;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    tr_error err = {{0}};
    tt_vocab tv;
    tt_vocab_spm(&tv);
    tr_gguf_writer *w = tt_writer_spm(&tv, NULL, &err);
    if (tt_load(w, "fuzz_spm", &gs[0], &vs[0], &err) != TR_OK) {
        fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
        abort();
    }
    tr_gguf_writer_free(w);
    tt_vocab_free(&tv);
    for (int i = 0; i < N_BPE_PRE; i++) {
        w = bpe_writer(bpe_pres[i]);
        if (tt_load(w, bpe_pres[i], &gs[1 + i], &vs[1 + i], &err) != TR_OK) {
            fprintf(stderr, "fuzz_tokenize: %s\n", err.msg);
            abort();
        }
        tr_gguf_writer_free(w);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    unsigned sel = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    const tr_vocab *v = vs[sel % (1 + N_BPE_PRE)];
    bool add_special = sel & 0x10, parse_special = sel & 0x20;

    int32_t *ids = NULL;
    size_t n = 0;
    tr_error err = {{0}};
    if (tr_tokenize(v, text, len, add_special, parse_special, &ids, &n, &err) != TR_OK) {
        /* the only failure these vocabularies allow is running out of memory */
        fprintf(stderr, "tokenize failed: %s\n", err.msg);
        abort();
    }
    char *out = malloc(len * 4 + 64);
    size_t on = 0;
    char piece[64];
    for (size_t i = 0; i < n; i++) {
        assert(ids[i] >= 0 && ids[i] < tr_vocab_n_tokens(v));
        size_t pl = tr_token_to_piece(v, ids[i], true, piece, sizeof piece);
        assert(pl <= sizeof piece);
        if (add_special && ((i == 0 && tr_vocab_add_bos(v)) || (i == n - 1 && tr_vocab_add_eos(v))))
            continue; /* BOS/EOS were added, not read */
        if (on + pl <= len * 4 + 64) memcpy(out + on, piece, pl);
        on += pl;
        size_t k = tr_utf8_complete_prefix(out, on < len * 4 + 64 ? on : 0);
        assert(k <= on);
    }
    /* Valid UTF-8 without U+2581 (SPM writes spaces as it) comes back whole. */
    if (valid_utf8(data + 1, len) && !memmem(text, len, "\xe2\x96\x81", 3)) {
        if (on != len || memcmp(out, text, len)) {
            fprintf(stderr, "round trip differs: %zu bytes in, %zu out\n", len, on);
            abort();
        }
    }
    free(out);
    free(ids);
    return 0;
}
