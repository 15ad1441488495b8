/* Unicode helpers for the tokenizers; see unicode.h. */
#include "tokenizer/unicode.h"

static bool is_white_space(uint32_t cp) {
    /* The White_Space property (PropList.txt); stable across Unicode versions. */
    switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0x85: case 0xA0:
    case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
    default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
}

unsigned tr_uc_flags(uint32_t cp) {
    if (cp > 0x10FFFF) return TR_UC_UNDEFINED;
    /* Binary search for the last range starting at or before cp. */
    size_t lo = 0, hi = tr_uc_n_ranges;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (tr_uc_ranges[mid].first <= cp) lo = mid;
        else hi = mid;
    }
    unsigned f = tr_uc_ranges[lo].flags;
    if (is_white_space(cp)) f |= TR_UC_WHITESPACE;
    return f;
}

uint32_t tr_utf8_decode(const char *str, size_t n, size_t *off) {
    const uint8_t *s = (const uint8_t *)str + *off;
    size_t left = n - *off;
    uint8_t c = s[0];
    if (c < 0x80) {
        *off += 1;
        return c;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
    else goto bad; /* a continuation byte or 0xF8..0xFF */
    if (left < len) goto bad;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp > 0x10FFFF) goto bad;
    *off += len;
    return cp;
bad:
    *off += 1;
    return 0xFFFD;
}

size_t tr_utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2 keeps the printable bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF as the
 * code points of the same value, and moves the other 68 bytes, in order
 * (0x00..0x20, 0x7F..0xA0, 0xAD), to U+0100, U+0101, ... so that every byte
 * is a visible character. */
uint32_t tr_gpt2_byte_cp(uint8_t b) {
    if (b <= 0x20) return 0x100 + b;
    if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (b - 0x7F);
    if (b == 0xAD) return 0x100 + 67;
    return b;
}

int tr_gpt2_cp_byte(uint32_t cp) {
    if (cp < 0x100) return (cp <= 0x20 || (cp >= 0x7F && cp <= 0xA0) || cp == 0xAD) ? -1 : (int)cp;
    uint32_t k = cp - 0x100;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + k - 33);
    if (k == 67) return 0xAD;
    return -1;
}
