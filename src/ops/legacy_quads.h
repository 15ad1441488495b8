/* The row-group driver the AVX-512 and AVX-VNNI legacy kernels share
 * (matmul_avx512_legacy.c, matmul_avxvnni_legacy.c): which four rows go
 * together, the token tiles over them, the rows left over. Each file
 * includes it after defining its own quad_tile(rows, n, a, as, NT, out, F,
 * pf) (four rows against NT <= LQ_WIDTH tokens into out[NT], each a vector
 * of the four rows' results), LQ_WIDTH (4 or TR_TILE_MAX: the tile's widest
 * token count) and LQ_TILE / LQ_TGT, its always-inline and plain target
 * attributes; GEMM_QUADS(name, F) then makes a kernel of a format. */
#ifndef TR_LEGACY_QUADS_H
#define TR_LEGACY_QUADS_H

/* Four rows (rows[k], written to y column yrow[k] for k < keep) against
 * all nt tokens, in tiles of LQ_WIDTH; pf as quad_tile, for the first tile
 * (the one that brings the rows in). */
LQ_TILE void quad_group(int64_t n, const uint8_t *const *rows, const int *yrow, int keep, const char *a, size_t as,
                        int nt, float *y, size_t ys, size_t pf, const int F) {
    for (int t = 0; t < nt; t += LQ_WIDTH) {
        __m128 out[LQ_WIDTH];
        const char *at = a + (size_t)t * as;
        const int left = nt - t;
        const size_t p = t == 0 ? pf : 0;
        switch (left < LQ_WIDTH ? left : LQ_WIDTH) { /* each width its own inlined copy */
        case 8: quad_tile(rows, n, at, as, TR_TILE_NT(LQ_WIDTH, 8), out, F, p); break;
        case 7: quad_tile(rows, n, at, as, TR_TILE_NT(LQ_WIDTH, 7), out, F, p); break;
        case 6: quad_tile(rows, n, at, as, TR_TILE_NT(LQ_WIDTH, 6), out, F, p); break;
        case 5: quad_tile(rows, n, at, as, TR_TILE_NT(LQ_WIDTH, 5), out, F, p); break;
        case 4: quad_tile(rows, n, at, as, 4, out, F, p); break;
        case 3: quad_tile(rows, n, at, as, 3, out, F, p); break;
        case 2: quad_tile(rows, n, at, as, 2, out, F, p); break;
        default: quad_tile(rows, n, at, as, 1, out, F, p); break;
        }
        for (int j = 0; j < LQ_WIDTH && j < left; j++) {
            float o[4];
            _mm_storeu_ps(o, out[j]);
            for (int k = 0; k < keep; k++) y[(size_t)(t + j) * ys + (size_t)yrow[k]] = o[k];
        }
    }
}

/* Up to TR_STREAM_TOKENS tokens, the groups are rows i, i + h, i + 2h,
 * i + 3h (h = nr / 4): four sequential streams, which the hardware
 * prefetcher follows better than four neighbouring rows
 * (matmul_avx2_legacy.c has the measurements), each prefetched one row
 * ahead. More tokens: neighbouring rows, whose weights the token tiles after
 * the first find in cache. Then the nr % 4 rows left, in a padded group. */
#define GEMM_QUADS(name, F)                                                                                       \
    LQ_TGT static void name##_group(int64_t n, const uint8_t *const *rows, const int *yrow, int keep,           \
                                    const char *a, size_t as, int nt, float *y, size_t ys, size_t pf) {        \
        quad_group(n, rows, yrow, keep, a, as, nt, y, ys, pf, F);                                               \
    }                                                                                                           \
    LQ_TGT static void name(int64_t n, const void *w_, size_t ws, int nr, const void *a_, size_t as, int nt,   \
                            float *y, size_t ys) {                                                              \
        const uint8_t *w = w_;                                                                                  \
        const char *a = a_;                                                                                     \
        const int h = nr / 4, streams = nt <= TR_STREAM_TOKENS;                                                 \
        for (int i = 0; i < h; i++) {                                                                           \
            int yrow[4];                                                                                        \
            for (int k = 0; k < 4; k++) yrow[k] = streams ? i + k * h : 4 * i + k;                              \
            const uint8_t *rows[4] = {w + (size_t)yrow[0] * ws, w + (size_t)yrow[1] * ws,                        \
                                      w + (size_t)yrow[2] * ws, w + (size_t)yrow[3] * ws};                       \
            name##_group(n, rows, yrow, 4, a, as, nt, y, ys, streams ? ws : 0);                                 \
        }                                                                                                       \
        const int keep = nr - 4 * h;                                                                            \
        if (keep) {                                                                                             \
            int yrow[4];                                                                                        \
            for (int k = 0; k < 4; k++) yrow[k] = 4 * h + (k < keep ? k : keep - 1);                            \
            const uint8_t *rows[4] = {w + (size_t)yrow[0] * ws, w + (size_t)yrow[1] * ws,                        \
                                      w + (size_t)yrow[2] * ws, w + (size_t)yrow[3] * ws};                       \
            name##_group(n, rows, yrow, keep, a, as, nt, y, ys, 0);                                             \
        }                                                                                                       \
    }

#endif
