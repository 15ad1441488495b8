/* The _X16 layouts (blocks.h): sixteen rows of a format interleaved per
 * block, written once at load (src/model/repack.c) for the SIMD kernels
 * (src/ops/matmul_*_repack.c, matmul_amx_legacy.c). Packing is lossless:
 * the getters give any row's block back byte for byte (the scalar reference
 * kernels compute on those blocks, and the tests compare them). The
 * converters sit in their layouts' rows of the format table (types.c);
 * Q4_K_X16's are with the k-quants. */
#include "blocks.h"
#include "quant.h"

#include <string.h>

void tr_q4_0_to_x16(const void *src_, size_t src_row, void *dst, int64_t n) {
    const uint8_t *src = src_;
    tr_block_q4_0_x16 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, y++)
        for (int i = 0; i < 16; i++) {
            const tr_block_q4_0 *x = (const tr_block_q4_0 *)(src + (size_t)i * src_row) + b;
            y->d[i] = x->d;
            for (int k = 0; k < 4; k++) memcpy(y->qs[k][i], x->qs + 4 * k, 4);
        }
}

void tr_q5_0_to_x16(const void *src_, size_t src_row, void *dst, int64_t n) {
    const uint8_t *src = src_;
    tr_block_q5_0_x16 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, y++) {
        memset(y->hm, 0, sizeof y->hm);
        for (int i = 0; i < 16; i++) {
            const tr_block_q5_0 *x = (const tr_block_q5_0 *)(src + (size_t)i * src_row) + b;
            y->d[i] = x->d;
            for (int k = 0; k < 4; k++) memcpy(y->qs[k][i], x->qs + 4 * k, 4);
            const uint32_t qh = (uint32_t)x->qh[0] | (uint32_t)x->qh[1] << 8 | (uint32_t)x->qh[2] << 16 |
                                (uint32_t)x->qh[3] << 24;
            for (int v = 0; v < 32; v++) /* value v = 16h + 4k + j */
                if (qh >> v & 1) y->hm[v / 4] |= (uint64_t)1 << (4 * i + v % 4);
        }
    }
}

void tr_q8_0_to_x16(const void *src_, size_t src_row, void *dst, int64_t n) {
    const uint8_t *src = src_;
    tr_block_q8_0_x16 *y = dst;
    for (int64_t b = 0; b < n / 32; b++, y++)
        for (int i = 0; i < 16; i++) {
            const tr_block_q8_0 *x = (const tr_block_q8_0 *)(src + (size_t)i * src_row) + b;
            y->d[i] = x->d;
            for (int k = 0; k < 8; k++) { /* four int8 plus 128 at once: each byte's top bit flipped */
                uint32_t v;
                memcpy(&v, x->qs + 4 * k, 4);
                v ^= 0x80808080u;
                memcpy(y->qs[k][i], &v, 4);
            }
        }
}

void tr_q4_0_x16_get(const void *blk, int i, void *dst) {
    const tr_block_q4_0_x16 *x = blk;
    tr_block_q4_0 *y = dst;
    y->d = x->d[i];
    for (int k = 0; k < 4; k++) memcpy(y->qs + 4 * k, x->qs[k][i], 4);
}

void tr_q5_0_x16_get(const void *blk, int i, void *dst) {
    const tr_block_q5_0_x16 *x = blk;
    tr_block_q5_0 *y = dst;
    y->d = x->d[i];
    for (int k = 0; k < 4; k++) memcpy(y->qs + 4 * k, x->qs[k][i], 4);
    uint32_t qh = 0;
    for (int v = 0; v < 32; v++) qh |= (uint32_t)(x->hm[v / 4] >> (4 * i + v % 4) & 1) << v;
    for (int j = 0; j < 4; j++) y->qh[j] = (uint8_t)(qh >> (8 * j));
}

void tr_q8_0_x16_get(const void *blk, int i, void *dst) {
    const tr_block_q8_0_x16 *x = blk;
    tr_block_q8_0 *y = dst;
    y->d = x->d[i];
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 4; j++) y->qs[4 * k + j] = (int8_t)(x->qs[k][i][j] ^ 0x80);
}
