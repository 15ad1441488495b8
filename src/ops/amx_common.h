/* Shared pieces of the AMX kernels (TR_ISA_AMX: the AVX-512 tier plus
 * AMX-TILE and AMX-INT8; matmul_avx512_kquant.c's last part, matmul_amx_legacy.c):
 * the target attribute, the tile configuration, the activations transposed
 * into the tile unit's 4-byte groups, the results transposed back, and the
 * kernel wrapper. Included only by files that compile with per-function
 * target attributes, after avx512_common.h. */
#ifndef TR_AMX_COMMON_H
#define TR_AMX_COMMON_H

#include "avx512_common.h"

#ifdef TR_HAVE_AVX512_KERNELS

#define TGTAMX __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8")))

enum {
    AMX_ROWS = 64,      /* rows an AMX call prepares at once (four tiles of 16) */
    AMX_AHEAD = 4,      /* super-blocks a row's weights are prefetched ahead */
};

/* LDTILECFG's operand (palette 1): bytes per row and rows of each tile. */
typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* The tile configuration: tiles 0..7 of `rows` rows of `colsb` bytes. */
TGTAMX static inline void amx_config(const uint8_t rows[8], const uint16_t colsb[8]) {
    amx_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int c = 0; c < 8; c++) cfg.colsb[c] = colsb[c], cfg.rows[c] = rows[c];
    _tile_loadconfig(&cfg);
}

/* The 16 x 8 dwords of one sub-block of 16 tokens (token i's 32 bytes at
 * q[i] + off) as 8 rows of 16 dwords: row k holds dword k of every token. */
TILE512 void amx_transpose(const int8_t *const q[16], int off, int8_t out[8][64]) {
    __m512i Z[8], T[8], U[8];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++)
        Z[i] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(q[i] + off))),
                                  _mm256_loadu_si256((const __m256i *)(q[i + 8] + off)), 1);
    _Pragma("GCC unroll 4") for (int i = 0; i < 8; i += 2) {
        T[i] = _mm512_unpacklo_epi32(Z[i], Z[i + 1]);
        T[i + 1] = _mm512_unpackhi_epi32(Z[i], Z[i + 1]);
    }
    /* U[c] (U[4 + c]): per 128-bit lane, dwords c and c + 4 of tokens 0-3
     * (4-7) in the low half, of tokens 8-11 (12-15) in the high half */
    _Pragma("GCC unroll 2") for (int h = 0; h < 8; h += 4) {
        U[h + 0] = _mm512_unpacklo_epi64(T[h], T[h + 2]);
        U[h + 1] = _mm512_unpackhi_epi64(T[h], T[h + 2]);
        U[h + 2] = _mm512_unpacklo_epi64(T[h + 1], T[h + 3]);
        U[h + 3] = _mm512_unpackhi_epi64(T[h + 1], T[h + 3]);
    }
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) {
        _mm512_store_si512(out[c], _mm512_permutex2var_epi64(U[c], lo, U[4 + c]));
        _mm512_store_si512(out[c + 4], _mm512_permutex2var_epi64(U[c], hi, U[4 + c]));
    }
}

/* 16 rows of 16 floats (r[i]: row i) transposed in place. */
TILE512 void transpose16_ps(__m512 r[16]) {
    __m512 t[16], u[16];
    _Pragma("GCC unroll 8") for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4q + k]: per 128-bit lane L, column 4L + k of rows 4q..4q+3 */
    _Pragma("GCC unroll 4") for (int q = 0; q < 16; q += 4) {
        u[q + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
        u[q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q]), _mm512_castps_pd(t[q + 2])));
        u[q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
        u[q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[q + 1]), _mm512_castps_pd(t[q + 3])));
    }
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        __m512 v01 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44), v23 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);
        __m512 w01 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44);
        __m512 w23 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
        r[k] = _mm512_shuffle_f32x4(v01, w01, 0x88);
        r[4 + k] = _mm512_shuffle_f32x4(v01, w01, 0xDD);
        r[8 + k] = _mm512_shuffle_f32x4(v23, w23, 0x88);
        r[12 + k] = _mm512_shuffle_f32x4(v23, w23, 0xDD);
    }
}

/* acc[row][token] (nr rows, nt tokens) to y[token * ys + row], 16 x 16 at a time. */
TILE512 void amx_store(float acc[][TR_AMX_TOKENS], int nr, int nt, float *y, size_t ys) {
    for (int rg = 0; rg < (nr + 15) / 16; rg++) {
        int rows = nr - 16 * rg < 16 ? nr - 16 * rg : 16;
        __mmask16 m = (__mmask16)((1u << rows) - 1);
        for (int g = 0; g < (nt + 15) / 16; g++) {
            __m512 R[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) R[i] = _mm512_load_ps(&acc[16 * rg + i][16 * g]);
            transpose16_ps(R);
            int toks = nt - 16 * g < 16 ? nt - 16 * g : 16;
            for (int i = 0; i < toks; i++) _mm512_mask_storeu_ps(y + (size_t)(16 * g + i) * ys + 16 * rg, m, R[i]);
        }
    }
}

/* All eight tiles 16 rows of 64 bytes. */
TGTAMX static inline void amx_config_full(void) {
    static const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
    static const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
    amx_config(rows, colsb);
}

/* The kernels of the tier: AMX calls of up to AMX_ROWS x TR_AMX_TOKENS, the
 * vector kernel (same arithmetic) under min_tokens tokens, where the tiles'
 * 16 columns are too empty to pay: per format, where the two cross on a
 * Sapphire Rapids (64 rows x 2048 columns, weights in cache: Q4_K 4, Q5_K 5,
 * Q6_K 7, Q8_0 6, Q5_0 8, Q4_0 10 tokens). */
#define GEMM_AMX(name, block, vec, min_tokens)                                                            \
    TGTAMX static void name(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nt, \
                            float *y, size_t ys) {                                                        \
        if (nt < (min_tokens)) {                                                                          \
            vec(n, w, ws, nr, a, as, nt, y, ys);                                                          \
            return;                                                                                       \
        }                                                                                                 \
        for (int t0 = 0; t0 < nt; t0 += TR_AMX_TOKENS)                                                    \
            for (int r0 = 0; r0 < nr; r0 += AMX_ROWS)                                                     \
                block(n, (const uint8_t *)w + (size_t)r0 * ws, ws, nr - r0 < AMX_ROWS ? nr - r0 : AMX_ROWS, \
                      (const char *)a + (size_t)t0 * as, as, nt - t0 < TR_AMX_TOKENS ? nt - t0 : TR_AMX_TOKENS, \
                      y + (size_t)t0 * ys + r0, ys);                                                      \
    }

#endif
#endif
