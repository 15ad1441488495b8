/* The _X16 layouts (blocks.h): sixteen rows of a format interleaved per
 * block, written once at load (src/model/repack.c) for the AVX-512 kernels
 * (src/ops/matmul_avx512_repack.c). Packing is lossless: tr_x16_get gives
 * any row's block back byte for byte (the scalar reference kernels compute
 * on those blocks, and the tests compare them). */
#include "blocks.h"
#include "quant.h"

#include <string.h>

int tr_x16_source(int type) {
    switch (type) {
    case TR_TYPE_Q4_K_X16: return TR_TYPE_Q4_K;
    case TR_TYPE_Q4_0_X16: return TR_TYPE_Q4_0;
    case TR_TYPE_Q5_0_X16: return TR_TYPE_Q5_0;
    case TR_TYPE_Q8_0_X16: return TR_TYPE_Q8_0;
    default: return -1;
    }
}

static void pack_q4_0(const uint8_t *src, size_t src_row, tr_block_q4_0_x16 *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, y++)
        for (int i = 0; i < 16; i++) {
            const tr_block_q4_0 *x = (const tr_block_q4_0 *)(src + (size_t)i * src_row) + b;
            y->d[i] = x->d;
            for (int k = 0; k < 4; k++) memcpy(y->qs[k][i], x->qs + 4 * k, 4);
        }
}

static void pack_q5_0(const uint8_t *src, size_t src_row, tr_block_q5_0_x16 *y, int64_t n) {
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

static void pack_q8_0(const uint8_t *src, size_t src_row, tr_block_q8_0_x16 *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, y++)
        for (int i = 0; i < 16; i++) {
            const tr_block_q8_0 *x = (const tr_block_q8_0 *)(src + (size_t)i * src_row) + b;
            y->d[i] = x->d;
            for (int k = 0; k < 8; k++)
                for (int j = 0; j < 4; j++) y->qs[k][i][j] = (uint8_t)((uint8_t)x->qs[4 * k + j] ^ 0x80);
        }
}

void tr_x16_pack(int type, const void *src, size_t src_row, void *dst, int64_t n) {
    switch (type) {
    case TR_TYPE_Q4_K_X16: tr_q4_k_to_x16(src, src_row, dst, n); break;
    case TR_TYPE_Q4_0_X16: pack_q4_0(src, src_row, dst, n); break;
    case TR_TYPE_Q5_0_X16: pack_q5_0(src, src_row, dst, n); break;
    case TR_TYPE_Q8_0_X16: pack_q8_0(src, src_row, dst, n); break;
    default: break;
    }
}

void tr_x16_get(int type, const void *blk, int i, void *dst) {
    switch (type) {
    case TR_TYPE_Q4_K_X16: tr_q4_k_x16_get(blk, i, dst); break;
    case TR_TYPE_Q4_0_X16: {
        const tr_block_q4_0_x16 *x = blk;
        tr_block_q4_0 *y = dst;
        y->d = x->d[i];
        for (int k = 0; k < 4; k++) memcpy(y->qs + 4 * k, x->qs[k][i], 4);
        break;
    }
    case TR_TYPE_Q5_0_X16: {
        const tr_block_q5_0_x16 *x = blk;
        tr_block_q5_0 *y = dst;
        y->d = x->d[i];
        for (int k = 0; k < 4; k++) memcpy(y->qs + 4 * k, x->qs[k][i], 4);
        uint32_t qh = 0;
        for (int v = 0; v < 32; v++) qh |= (uint32_t)(x->hm[v / 4] >> (4 * i + v % 4) & 1) << v;
        for (int j = 0; j < 4; j++) y->qh[j] = (uint8_t)(qh >> (8 * j));
        break;
    }
    case TR_TYPE_Q8_0_X16: {
        const tr_block_q8_0_x16 *x = blk;
        tr_block_q8_0 *y = dst;
        y->d = x->d[i];
        for (int k = 0; k < 8; k++)
            for (int j = 0; j < 4; j++) y->qs[4 * k + j] = (int8_t)(x->qs[k][i][j] ^ 0x80);
        break;
    }
    default: break;
    }
}
