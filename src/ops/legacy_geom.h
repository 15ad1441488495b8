/* The legacy formats' geometry for the AVX-512 and AVX-VNNI legacy kernels
 * (matmul_avx512_legacy.c, matmul_avxvnni_legacy.c), which decode them to
 * unsigned quants the same way: sizes and offsets from the block structs
 * (quant/blocks.h), the offset the unsigned quants carry, whether a block
 * has a min. Plain C (constants once F is known), inlined into either ISA. */
#ifndef TR_LEGACY_GEOM_H
#define TR_LEGACY_GEOM_H

#include <stddef.h>

#define LG_INLINE static inline __attribute__((always_inline))

enum { F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_Q8_0 };

/* The formats' geometry, from their block structs (quant/blocks.h). */
LG_INLINE size_t lg_bytes(const int F) {
    return F == F_Q4_0   ? sizeof(tr_block_q4_0)
           : F == F_Q4_1 ? sizeof(tr_block_q4_1)
           : F == F_Q5_0 ? sizeof(tr_block_q5_0)
           : F == F_Q5_1 ? sizeof(tr_block_q5_1)
                         : sizeof(tr_block_q8_0);
}
LG_INLINE size_t lg_qs(const int F) {
    return F == F_Q4_0   ? offsetof(tr_block_q4_0, qs)
           : F == F_Q4_1 ? offsetof(tr_block_q4_1, qs)
           : F == F_Q5_0 ? offsetof(tr_block_q5_0, qs)
           : F == F_Q5_1 ? offsetof(tr_block_q5_1, qs)
                         : offsetof(tr_block_q8_0, qs);
}
LG_INLINE size_t lg_qh(const int F) { return F == F_Q5_0 ? offsetof(tr_block_q5_0, qh) : offsetof(tr_block_q5_1, qh); }
/* The offset the unsigned quants carry (a multiple of 4: spread over a row's four lanes). */
LG_INLINE int lg_offset(const int F) { return F == F_Q4_0 ? 8 : F == F_Q5_0 ? 16 : F == F_Q8_0 ? 128 : 0; }
/* Whether the block carries a min, stored right after its scale. */
LG_INLINE int lg_has_min(const int F) { return F == F_Q4_1 || F == F_Q5_1; }

#endif
