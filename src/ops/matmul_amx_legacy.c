/* AMX kernels for the legacy formats Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0
 * (TR_ISA_AMX; amx_common.h has the shared pieces, matmul_avx512_kquant.c's
 * last part the k-quants and the tier's reasoning).
 *
 * A block is 32 weights with a float scale of its own (and Q4_1/Q5_1 a
 * float min), so the scales cannot go into the integer products as the
 * k-quants' do: one product per block, 16 rows x 32 bytes of weights
 * (decoded: unsigned 0..15 / 0..31, Q8_0's signed bytes as they are, through
 * tdpbssd) against the block of 16 tokens (transposed into 4-byte groups),
 * the 256 exact int32 dot products stored, then per row the float step for
 * 16 tokens a zmm. Four products in flight before their stores.
 *
 * The tier's arithmetic, per row, token and block b in order from acc = 0:
 *   isum = dot(q, x) + off * sum(x)      (exact; off -8 Q4_0, -16 Q5_0, else 0)
 *   acc = float(isum) * (d * xd) + acc   (d * xd rounded, then fused)
 *   Q4_1/Q5_1 also: acc = m * (xd * float(sum(x))) + acc  (the product rounded, then fused)
 * the same instructions on a zmm lane (AMX calls: 16 tokens of a row) and on
 * a ymm lane (the vector kernel, generation and calls of a few tokens: eight
 * rows of a token), so a token's result does not depend on its batch. */
#include "amx_common.h"

#ifdef TR_HAVE_AVX512_KERNELS

enum { LQ_Q4_0, LQ_Q4_1, LQ_Q5_0, LQ_Q5_1, LQ_Q8_0 };

/* Bytes of a block, where its quants start, and the offset of the quants. */
#define LQ_BYTES(f) ((f) == LQ_Q4_0 ? 18 : (f) == LQ_Q4_1 ? 20 : (f) == LQ_Q5_0 ? 22 : (f) == LQ_Q5_1 ? 24 : 34)
#define LQ_QS(f) ((f) == LQ_Q4_0 ? 2 : (f) == LQ_Q4_1 ? 4 : (f) == LQ_Q5_0 ? 6 : (f) == LQ_Q5_1 ? 8 : 2)
#define LQ_OFF(f) ((f) == LQ_Q4_0 ? -8 : (f) == LQ_Q5_0 ? -16 : 0)
#define LQ_MIN(f) ((f) == LQ_Q4_1 || (f) == LQ_Q5_1)

/* The block at p as 32 bytes, element i in byte i: 0..15 (Q4), 0..31 (Q5:
 * bit i of qh is element i's fifth bit), Q8_0's signed bytes. */
TILE512 __m256i lq_decode(const uint8_t *p, const int f) {
    if (f == LQ_Q8_0) return _mm256_loadu_si256((const __m256i *)(p + 2));
    const __m128i m4 = _mm_set1_epi8(0x0f);
    __m128i v = _mm_loadu_si128((const __m128i *)(p + LQ_QS(f)));
    __m256i w = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, m4)),
                                        _mm_and_si128(_mm_srli_epi16(v, 4), m4), 1);
    if (f == LQ_Q5_0 || f == LQ_Q5_1) {
        uint32_t qh;
        memcpy(&qh, p + (f == LQ_Q5_0 ? 2 : 4), 4);
        w = _mm256_mask_add_epi8(w, (__mmask32)qh, w, _mm256_set1_epi8(16));
    }
    return w;
}

TILE512 float lq_h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* ---------------------------------------------------------------- the vector kernel */

/* Eight rows against NT <= TR_TILE_MAX tokens, the rows in the lanes of a
 * ymm (row i at w0 + ro[i]; token j's activations at a + j * as): per block
 * the eight rows are decoded once for the tokens (four rows' 16 bytes of
 * quants in the 128-bit lanes of a zmm, low nibbles against the
 * activations 0..15 broadcast, high ones against 16..31), and per token the
 * int32 sums are folded into one lane per row and the float step done for
 * the eight rows at once (lane i the same instructions as a zmm lane of the
 * tile kernel). Q4_0, Q4_1, Q5_0, Q5_1: Q8_0's few tokens go to the
 * AVX-512 tier's sixteen-row kernel, tr_avx512_gemm_q8_0, whose lanes are
 * the same instructions too. */
TILE512 void lq_rows8(int64_t n, const uint8_t *w0, const int32_t ro[8], const char *a, size_t as, int NT,
                      size_t pf, __m256 *acc, const int f) {
    const int bytes = LQ_BYTES(f);
    const __m256i roff = _mm256_loadu_si256((const __m256i *)ro);
    const __m512i m4 = _mm512_set1_epi8(0x0f), b16 = _mm512_set1_epi8(16);
    const __m512i pick4 = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    FOR_T512(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++) {
        const uint8_t *base = w0 + (size_t)b * bytes;
        if (!(b & 1)) /* pf ahead (the next row of each stream): every line, at most 48 bytes apart */
            _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++)
                _mm_prefetch((const char *)base + ro[i] + pf, _MM_HINT_T0);
        __m256i dm = _mm256_i32gather_epi32((const int *)base, roff, 1); /* d, and Q4_1/Q5_1's m above it */
        const __m256 dw = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(dm));
        const __m256 mw = LQ_MIN(f) ? _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(dm, 16))) : dw;
        __m512i W[4];
        __m128i qlo = _mm_setzero_si128(), qhi = _mm_setzero_si128();
        if (f == LQ_Q5_0 || f == LQ_Q5_1) {
            /* the fifth bits: word i of qlo (qhi) is row i's qh bits 0-15 (16-31) */
            __m256i qh = _mm256_i32gather_epi32((const int *)(base + (f == LQ_Q5_0 ? 2 : 4)), roff, 1);
            qlo = _mm256_cvtepi32_epi16(qh);
            qhi = _mm256_cvtepi32_epi16(_mm256_srli_epi32(qh, 16));
        }
        _Pragma("GCC unroll 2") for (int k = 0; k < 2; k++) {
            const uint8_t *q = base + LQ_QS(f);
            __m512i Z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(q + ro[4 * k])));
            Z = _mm512_inserti32x4(Z, _mm_loadu_si128((const __m128i *)(q + ro[4 * k + 1])), 1);
            Z = _mm512_inserti32x4(Z, _mm_loadu_si128((const __m128i *)(q + ro[4 * k + 2])), 2);
            Z = _mm512_inserti32x4(Z, _mm_loadu_si128((const __m128i *)(q + ro[4 * k + 3])), 3);
            W[2 * k] = _mm512_and_si512(Z, m4);
            W[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi16(Z, 4), m4);
            if (f == LQ_Q5_0 || f == LQ_Q5_1) {
                __mmask64 kl = (__mmask64)(k ? _mm_extract_epi64(qlo, 1) : _mm_cvtsi128_si64(qlo));
                __mmask64 kh = (__mmask64)(k ? _mm_extract_epi64(qhi, 1) : _mm_cvtsi128_si64(qhi));
                W[2 * k] = _mm512_mask_add_epi8(W[2 * k], kl, W[2 * k], b16);
                W[2 * k + 1] = _mm512_mask_add_epi8(W[2 * k + 1], kh, W[2 * k + 1], b16);
            }
        }
        FOR_T512(j) {
            const tr_q8a *x = (const tr_q8a *)(a + (size_t)j * as) + b;
            const __m512i Xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)x->qs));
            const __m512i Xhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(x->qs + 16)));
            __m512i D0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], Xlo), W[1], Xhi);
            __m512i D1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[2], Xlo), W[3], Xhi);
            /* per 128-bit lane l: [S(D0), S(D0), S(D1), S(D1)] = rows l and 4 + l */
            __m512i E = _mm512_add_epi32(_mm512_unpacklo_epi64(D0, D1), _mm512_unpackhi_epi64(D0, D1));
            E = _mm512_add_epi32(E, _mm512_shuffle_epi32(E, _MM_SHUFFLE(2, 3, 0, 1)));
            __m256i is = _mm512_castsi512_si256(_mm512_permutexvar_epi32(pick4, E)); /* rows 0..7 */
            if (LQ_OFF(f)) /* wrapping as the tile kernel's vpmulld (a hostile file's activations can be NaN,
                            * whose conversion leaves sums far out of range) */
                is = _mm256_add_epi32(is, _mm256_set1_epi32((int32_t)((uint32_t)LQ_OFF(f) * (uint32_t)x->sum)));
            const __m256 xd = _mm256_set1_ps(x->d);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(dw, xd), acc[j]);
            if (LQ_MIN(f)) acc[j] = _mm256_fmadd_ps(mw, _mm256_mul_ps(xd, _mm256_set1_ps((float)x->sum)), acc[j]);
        }
    }
}

/* The vector kernel: rows in eights taken from the eight parts of the rows
 * handed in (eight far-apart sequential streams), each eight against the
 * tokens in tiles of up to 8; the last nr % 8 rows as an eight with the
 * last row repeated. A row's lane does not depend on its neighbours, nor a
 * token's on its tile. Row offsets are int32 (for the gathers): a call over
 * more than 1 GiB of rows goes in parts. */
TILE512 void lq_vec(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a, size_t as, int nt, float *y,
                    size_t ys, const int f) {
    const int part = (int)((1u << 30) / ws);
    if (nr > part) {
        for (int r0 = 0; r0 < nr; r0 += part)
            lq_vec(n, w + (size_t)r0 * ws, ws, nr - r0 < part ? nr - r0 : part, a, as, nt, y + r0, ys, f);
        return;
    }
    const int h = nr / 8;
    for (int q = 0; q <= h; q++) {
        int rows[8];
        if (q < h)
            for (int i = 0; i < 8; i++) rows[i] = q + i * h;
        else if (8 * h < nr)
            for (int i = 0; i < 8; i++) rows[i] = 8 * h + i < nr ? 8 * h + i : nr - 1;
        else
            break;
        int32_t ro[8];
        for (int i = 0; i < 8; i++) ro[i] = (int32_t)((size_t)(rows[i] - rows[0]) * ws);
        const uint8_t *w0 = w + (size_t)rows[0] * ws;
        for (int t0 = 0; t0 < nt; t0 += TR_TILE_MAX) {
            __m256 acc[TR_TILE_MAX];
            const char *at = a + (size_t)t0 * as;
            int k = nt - t0 < TR_TILE_MAX ? nt - t0 : TR_TILE_MAX;
            switch (k) { /* each tile width its own inlined copy: the accumulators stay in registers */
            case 1: lq_rows8(n, w0, ro, at, as, 1, ws, acc, f); break;
            case 2: lq_rows8(n, w0, ro, at, as, 2, ws, acc, f); break;
            case 3: lq_rows8(n, w0, ro, at, as, 3, ws, acc, f); break;
            case 4: lq_rows8(n, w0, ro, at, as, 4, ws, acc, f); break;
            case 5: lq_rows8(n, w0, ro, at, as, 5, ws, acc, f); break;
            case 6: lq_rows8(n, w0, ro, at, as, 6, ws, acc, f); break;
            case 7: lq_rows8(n, w0, ro, at, as, 7, ws, acc, f); break;
            default: lq_rows8(n, w0, ro, at, as, 8, ws, acc, f); break;
            }
            for (int j = 0; j < k; j++) {
                float out[8];
                _mm256_storeu_ps(out, acc[j]);
                for (int i = 0; i < 8; i++) y[(size_t)(t0 + j) * ys + rows[i]] = out[i];
            }
        }
    }
}

#define LQ_VEC(name, f)                                                                                      \
    TGT512 static void name##_vec(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nt, \
                                  float *y, size_t ys) {                                                     \
        lq_vec(n, w, ws, nr, a, as, nt, y, ys, f);                                                           \
    }

LQ_VEC(lq_q4_0, LQ_Q4_0)
LQ_VEC(lq_q4_1, LQ_Q4_1)
LQ_VEC(lq_q5_0, LQ_Q5_0)
LQ_VEC(lq_q5_1, LQ_Q5_1)

/* ---------------------------------------------------------------- the tile kernel */

enum { LQ_CHUNK = 8 }; /* blocks prepared at once (256 weights) */

/* Block j's product into result tile c from weight tile wt and activation
 * tile at (tile numbers are literals). */
#define LQ_PRODUCT(c, wt, at, j)                                         \
    do {                                                                 \
        _tile_loadd(wt, A[0] + 32 * (j), 32 * LQ_CHUNK);                 \
        _tile_loadd(at, B[g][j], 64);                                    \
        if (f == LQ_Q8_0)                                                \
            _tile_dpbssd(c, wt, at);                                     \
        else                                                             \
            _tile_dpbusd(c, wt, at);                                     \
    } while (0)

/* nr <= AMX_ROWS rows against nt <= TR_AMX_TOKENS tokens. */
TGTAMX static inline __attribute__((always_inline)) void lq_amx_block(int64_t n, const uint8_t *w, size_t ws, int nr,
                                                                      const char *a, size_t as, int nt, float *y,
                                                                      size_t ys, const int f) {
    static const int8_t zero_qs[32] __attribute__((aligned(64)));
    enum { G = TR_AMX_TOKENS / 16 };
    const int ng = (nt + 15) / 16, nrg = (nr + 15) / 16;
    const int64_t nb = n / 32;
    float acc[AMX_ROWS][TR_AMX_TOKENS] __attribute__((aligned(64)));
    int8_t B[G][LQ_CHUNK][8][64] __attribute__((aligned(64))); /* [group][block][row][16 tokens x 4 bytes] */
    float xd[G][LQ_CHUNK][16] __attribute__((aligned(64)));
    int32_t xs[G][LQ_CHUNK][16] __attribute__((aligned(64))); /* sum(x) */
    uint8_t A[16][32 * LQ_CHUNK] __attribute__((aligned(64)));
    float dw[16][LQ_CHUNK], dm[16][LQ_CHUNK];
    int32_t C[LQ_CHUNK][16][16] __attribute__((aligned(64)));
    for (int r = 0; r < nrg * 16; r++) memset(acc[r], 0, sizeof(float) * 16 * (size_t)ng);

    static const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 8, 8};
    static const uint16_t colsb[8] = {64, 64, 64, 64, 32, 32, 64, 64};
    amx_config(rows, colsb); /* tmm0-3 results, tmm4/5 weights (16 x 32 bytes), tmm6/7 activations (8 x 64) */
    for (int64_t b0 = 0; b0 < nb; b0 += LQ_CHUNK) {
        const int cb = nb - b0 < LQ_CHUNK ? (int)(nb - b0) : LQ_CHUNK;
        for (int g = 0; g < ng; g++)
            for (int j = 0; j < cb; j++) {
                const int8_t *q[16];
                for (int i = 0; i < 16; i++) {
                    int t = 16 * g + i;
                    if (t < nt) {
                        const tr_q8a *x = (const tr_q8a *)(a + (size_t)t * as) + b0 + j;
                        q[i] = x->qs, xd[g][j][i] = x->d, xs[g][j][i] = x->sum;
                    } else {
                        q[i] = zero_qs, xd[g][j][i] = 0, xs[g][j][i] = 0;
                    }
                }
                amx_transpose(q, 0, B[g][j]);
            }
        /* the products of a last chunk's missing blocks run, on zero weights: keep their activations defined */
        if (cb % 4)
            for (int g = 0; g < ng; g++) memset(B[g][cb], 0, sizeof B[g][0] * (size_t)(4 - cb % 4));
        for (int rg = 0; rg < nrg; rg++) {
            for (int r = 0; r < 16; r++) {
                int row = 16 * rg + r;
                for (int j = 0; j < LQ_CHUNK; j++) {
                    if (row >= nr || j >= cb) {
                        _mm256_store_si256((__m256i *)(A[r] + 32 * j), _mm256_setzero_si256());
                        dw[r][j] = dm[r][j] = 0;
                        continue;
                    }
                    const uint8_t *p = w + (size_t)row * ws + (size_t)(b0 + j) * LQ_BYTES(f);
                    if (j == 0 && b0 + LQ_CHUNK < nb)
                        for (int l = 0; l < LQ_BYTES(f) * LQ_CHUNK; l += 64)
                            _mm_prefetch((const char *)p + LQ_BYTES(f) * LQ_CHUNK + l, _MM_HINT_T0);
                    _mm256_store_si256((__m256i *)(A[r] + 32 * j), lq_decode(p, f));
                    dw[r][j] = lq_h2f(p);
                    dm[r][j] = LQ_MIN(f) ? lq_h2f(p + 2) : 0.0f;
                }
            }
            __asm__ volatile("" ::: "memory"); /* GCC's tile loads do not tell it they read A and B */
            for (int g = 0; g < ng; g++) {
                for (int j = 0; j < cb; j += 4) {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    /* blocks past cb have zero weights and activations: their products are zero, never read */
                    LQ_PRODUCT(0, 4, 6, j);
                    LQ_PRODUCT(1, 5, 7, j + 1);
                    LQ_PRODUCT(2, 4, 6, j + 2);
                    LQ_PRODUCT(3, 5, 7, j + 3);
                    _tile_stored(0, C[j], 64);
                    _tile_stored(1, C[j + 1], 64);
                    _tile_stored(2, C[j + 2], 64);
                    _tile_stored(3, C[j + 3], 64);
                }
                for (int r = 0; r < 16; r++) {
                    float *ap = &acc[16 * rg + r][16 * g];
                    __m512 av = _mm512_load_ps(ap);
                    for (int j = 0; j < cb; j++) {
                        const __m512 xv = _mm512_load_ps(xd[g][j]);
                        const __m512i sv = _mm512_load_si512(xs[g][j]);
                        __m512i is = _mm512_load_si512(C[j][r]);
                        if (LQ_OFF(f)) is = _mm512_add_epi32(is, _mm512_mullo_epi32(sv, _mm512_set1_epi32(LQ_OFF(f))));
                        av = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_set1_ps(dw[r][j]), xv), av);
                        if (LQ_MIN(f))
                            av = _mm512_fmadd_ps(_mm512_set1_ps(dm[r][j]), _mm512_mul_ps(xv, _mm512_cvtepi32_ps(sv)),
                                                 av);
                    }
                    _mm512_store_ps(ap, av);
                }
            }
        }
    }
    _tile_release();
    amx_store(acc, nr, nt, y, ys);
}

#define LQ_KERNEL(name, f, vec, min_tokens)                                                                 \
    TGTAMX static void name##_amx_block(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a,       \
                                        size_t as, int nt, float *y, size_t ys) {                           \
        lq_amx_block(n, w, ws, nr, a, as, nt, y, ys, f);                                                    \
    }                                                                                                       \
    GEMM_AMX(gemm_##name##_amx, name##_amx_block, vec, min_tokens)

LQ_KERNEL(lq_q4_0, LQ_Q4_0, lq_q4_0_vec, 10)
LQ_KERNEL(lq_q4_1, LQ_Q4_1, lq_q4_1_vec, 10)
LQ_KERNEL(lq_q5_0, LQ_Q5_0, lq_q5_0_vec, 8)
LQ_KERNEL(lq_q5_1, LQ_Q5_1, lq_q5_1_vec, 8)
LQ_KERNEL(lq_q8_0, LQ_Q8_0, tr_avx512_gemm_q8_0, 6)

const tr_gemm_row tr_amx_legacy_gemm_rows[] = {
    {TR_TYPE_Q8_0, TR_ACT_Q8, gemm_lq_q8_0_amx},
    {TR_TYPE_Q4_0, TR_ACT_Q8, gemm_lq_q4_0_amx},
    {TR_TYPE_Q4_1, TR_ACT_Q8, gemm_lq_q4_1_amx},
    {TR_TYPE_Q5_0, TR_ACT_Q8, gemm_lq_q5_0_amx},
    {TR_TYPE_Q5_1, TR_ACT_Q8, gemm_lq_q5_1_amx},
    {-1, 0, NULL},
};

#else
const tr_gemm_row tr_amx_legacy_gemm_rows[] = {{-1, 0, NULL}};
#endif
