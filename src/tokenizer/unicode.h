/* Unicode facts the tokenizers need: UTF-8 decoding as llama.cpp does it,
 * general categories (Unicode 15.1, as llama.cpp's tables), White_Space, and
 * GPT-2's byte <-> printable-character mapping. */
#ifndef TR_TOKENIZER_UNICODE_H
#define TR_TOKENIZER_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One flag per major general category; Cn (unassigned) is UNDEFINED. */
enum {
    TR_UC_UNDEFINED = 1 << 0,
    TR_UC_NUMBER = 1 << 1,    /* \p{N} */
    TR_UC_LETTER = 1 << 2,    /* \p{L} */
    TR_UC_SEPARATOR = 1 << 3, /* \p{Z} */
    TR_UC_MARK = 1 << 4,      /* \p{M} */
    TR_UC_PUNCT = 1 << 5,     /* \p{P} */
    TR_UC_SYMBOL = 1 << 6,    /* \p{S} */
    TR_UC_CONTROL = 1 << 7,   /* \p{C} except Cn */
    TR_UC_CATEGORIES = 0xFF,
    TR_UC_WHITESPACE = 1 << 8, /* the White_Space property (\s) */
};

typedef struct tr_uc_range {
    uint32_t first;
    uint16_t flags;
} tr_uc_range;

extern const tr_uc_range tr_uc_ranges[];
extern const size_t tr_uc_n_ranges;

/* Category flag | TR_UC_WHITESPACE. Code points past U+10FFFF: UNDEFINED. */
unsigned tr_uc_flags(uint32_t cp);

/* Bytes a UTF-8 sequence claims from its first byte's high nibble (1 for a
 * stray continuation byte): how llama.cpp cuts text into symbols. */
static inline size_t tr_utf8_seq_len(uint8_t lead) {
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[lead >> 4];
}

/* Decode one code point at s[*off] (< n), advancing *off. Malformed input
 * (a bad lead or continuation byte, a truncated sequence, a value past
 * U+10FFFF) gives U+FFFD and advances one byte. Overlong forms and surrogates
 * are decoded as they are, the way llama.cpp does. */
uint32_t tr_utf8_decode(const char *s, size_t n, size_t *off);

/* Encode cp (<= 0x10FFFF) into out; returns the length. */
size_t tr_utf8_encode(uint32_t cp, char out[4]);

/* GPT-2's byte-level alphabet: byte b is written as code point
 * tr_gpt2_byte_cp(b); tr_gpt2_cp_byte inverts it (-1: not in the alphabet). */
uint32_t tr_gpt2_byte_cp(uint8_t b);
int tr_gpt2_cp_byte(uint32_t cp);

#endif
