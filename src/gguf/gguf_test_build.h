/* Byte-level GGUF builder for the C tests and the fuzzer's regression cases:
 * writes exactly the bytes asked for, valid or not, so each malformed case
 * can be made by changing one field. Header-only, test code only. */
#ifndef TR_GGUF_TEST_BUILD_H
#define TR_GGUF_TEST_BUILD_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tb {
    uint8_t *p;
    size_t n, cap;
} tb;

static inline void tb_bytes(tb *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
}
static inline void tb_u8(tb *b, uint8_t x) { tb_bytes(b, &x, 1); }
static inline void tb_u16(tb *b, uint16_t x) { tb_bytes(b, &x, 2); }
static inline void tb_u32(tb *b, uint32_t x) { tb_bytes(b, &x, 4); }
static inline void tb_u64(tb *b, uint64_t x) { tb_bytes(b, &x, 8); }
static inline void tb_f32(tb *b, float x) { tb_bytes(b, &x, 4); }
static inline void tb_f64(tb *b, double x) { tb_bytes(b, &x, 8); }
static inline void tb_strn(tb *b, const char *s, size_t n) {
    tb_u64(b, n);
    tb_bytes(b, s, n);
}
static inline void tb_str(tb *b, const char *s) { tb_strn(b, s, strlen(s)); }
static inline void tb_pad(tb *b, size_t align) {
    while (b->n % align) tb_u8(b, 0);
}
static inline void tb_header(tb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    tb_bytes(b, "GGUF", 4);
    tb_u32(b, version);
    tb_u64(b, n_tensors);
    tb_u64(b, n_kv);
}
/* key + type; the caller appends the value */
static inline void tb_key(tb *b, const char *key, uint32_t type) {
    tb_str(b, key);
    tb_u32(b, type);
}
static inline void tb_tensor_info(tb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type,
                           uint64_t offset) {
    tb_str(b, name);
    tb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) tb_u64(b, ne[d]);
    tb_u32(b, type);
    tb_u64(b, offset);
}
static inline void tb_free(tb *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

#endif
