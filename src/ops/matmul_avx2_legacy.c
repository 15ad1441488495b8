/* AVX2 kernels for the legacy block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)
 * against tr_q8a activations; see matmul_avx2.c for the common scheme. */
#include "avx2_common.h"

#ifdef TR_HAVE_AVX2_KERNELS

/* ---------------------------------------------------------------- legacy quants */

TILE void q8_0_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {
    __m256 acc[4];
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += 34) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(w + 2));
        __m256i aq = _mm256_abs_epi8(q); /* |w| unsigned, sign moved onto x */
        float dw = h2f(w);
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)x->qs), q);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(aq, sx)), _mm256_set1_ps(dw * x->d), acc[j]);
        }
    }
    FOR_T(j) out[j] = hsum_ps(acc[j]);
}

/* 32 nibbles: low halves are elements 0..15, high halves 16..31. */
TILE __m256i nibbles32(const uint8_t *p) {
    __m128i raw = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

/* The fifth bits of 32 elements (bit i of qh for element i) as 0x10 bytes. */
TILE __m256i bits5(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    /* Broadcast the 4 bytes so byte i holds the byte containing bit i, then test its bit. */
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                    _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101,
                                                       0x0202020202020202, 0x0303030303030303));
    __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

enum { F_Q4_0, F_Q4_1, F_Q5_0, F_Q5_1, F_Q8_0 };

/* Bytes per block, and the offset the unsigned quants carry (removed through
 * the activation sums). */
TILE int legacy_bytes(const int F) {
    return F == F_Q4_0 ? 18 : F == F_Q4_1 ? 20 : F == F_Q5_0 ? 22 : F == F_Q5_1 ? 24 : 34;
}
TILE int legacy_offset(const int F) { return F == F_Q4_0 ? 8 : F == F_Q5_0 ? 16 : 0; }
/* Whether the block carries a min (added through the activation sums). */
TILE int legacy_has_min(const int F) { return F == F_Q4_1 || F == F_Q5_1; }

/* A block's 32 quants as unsigned bytes (Q8_0: their magnitudes; the signs
 * are moved onto the activations). */
TILE __m256i legacy_quants(const uint8_t *blk, const int F) {
    if (F == F_Q4_0) return nibbles32(blk + 2);
    if (F == F_Q4_1) return nibbles32(blk + 4);
    if (F == F_Q5_0) return _mm256_or_si256(nibbles32(blk + 6), bits5(blk + 2));
    if (F == F_Q5_1) return _mm256_or_si256(nibbles32(blk + 8), bits5(blk + 4));
    return _mm256_abs_epi8(_mm256_loadu_si256((const __m256i *)(blk + 2)));
}

/* One weight row of a 4- or 5-bit legacy format against NT tokens (the rows
 * left over after the four-row tiles). */
TILE void legacy_tile1(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out, const int F) {
    const int bs = legacy_bytes(F), has_m = legacy_has_min(F), off = legacy_offset(F);
    __m256 acc[4];
    float corr[4] = {0};
    FOR_T(j) acc[j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / 32; b++, w += bs) {
        __m256i q = legacy_quants(w, F);
        float dw = h2f(w), mw = has_m ? h2f(w + 2) : 0.0f;
        FOR_T(j) {
            const tr_q8a *x = ACT(j, b);
            float d = dw * x->d;
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_us(q, _mm256_loadu_si256((const __m256i *)x->qs))),
                                     _mm256_set1_ps(d), acc[j]);
            corr[j] += has_m ? mw * x->d * (float)x->sum : d * (float)x->sum;
        }
    }
    FOR_T(j) out[j] = has_m ? hsum_ps(acc[j]) + corr[j] : hsum_ps(acc[j]) - (float)off * corr[j];
}
#define LEGACY_TILE1(name, F) \
    TILE void name(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) { \
        legacy_tile1(n, w, a, as, NT, out, F);                                                  \
    }
LEGACY_TILE1(q4_0_tile, F_Q4_0)
LEGACY_TILE1(q4_1_tile, F_Q4_1)
LEGACY_TILE1(q5_0_tile, F_Q5_0)
LEGACY_TILE1(q5_1_tile, F_Q5_1)

/* Four weight rows at a time for the legacy formats: the 32-byte activation
 * block is loaded once for four rows, the four rows' dot products are folded
 * into one 4-lane vector (one lane per row: reduce4_small for the 4- and
 * 5-bit formats, widening multiplies and a horizontal-add tree for Q8_0,
 * whose pair sums fill 16 bits), and the block scales of the four rows
 * become one vector, so the per-block float work (convert, scale,
 * accumulate) is shared by four rows.
 *
 * Measured on the Zen 1 development machine (TRINITY_BENCH_HOT=1): the
 * 256-bit multiplies (vpmaddubsw, vpmaddwd) issue on one pipe at two cycles
 * each, so a block costs at least 4 cycles per token with both; Q8_0
 * measures about 2.06 ns per block and token at 2.0 GHz, at that floor.
 * Tried and slower there: 8-lane float accumulators per row (a convert and a
 * broadcast per block), Q8_0 through 16-bit products (vpunpck + vpmaddwd, no
 * sign trick), Q8_0 pair sums of some rows widened with shifts instead of
 * vpmaddwd, blends instead of unpacks in reduce4_small, vpsrlvd for the
 * nibble split. Software prefetch over neighbouring rows showed no clear
 * gain; over far-apart rows it does (legacy_streams4, below).
 *
 * On Zen 3 (family 25, 2.9 GHz) the picture differs: vpmaddubsw, vpmaddwd,
 * vpsignb and vfmadd each issue two a cycle (and compete for the same two
 * pipes), vphaddd takes two cycles, and Q8_0 runs at about 0.81-0.91 ns per
 * block and token (4 rows x 4 tokens, weights in L2, 1 thread): not at a
 * multiply floor. Tried there in a copy of this tile, all bit-identical and
 * none faster beyond the noise (session 11, docs/BENCHMARKS.md): reduce4 by
 * unpacks instead of vphaddd; Q8_0 against 16-bit activations (two vpmaddwd,
 * no sign trick: a third fewer multiply-pipe instructions); eight rows
 * transposed in registers so that each lane accumulates one row (no
 * horizontal sums; llama.cpp's repacked layout without the repack). */
/* Four fp16 values from four addresses as the low 64 bits of a vector,
 * merged in a general register rather than through a small stack array
 * (whose 8-byte reload cannot be forwarded from four 2-byte stores; on Zen 1
 * the out-of-order window hid that, so this measured the same). */
TILE __m128i halves4(const uint8_t *p0, const uint8_t *p1, const uint8_t *p2, const uint8_t *p3) {
    uint16_t h0, h1, h2, h3;
    memcpy(&h0, p0, 2), memcpy(&h1, p1, 2), memcpy(&h2, p2, 2), memcpy(&h3, p3, 2);
    uint64_t v = (uint64_t)h0 | (uint64_t)h1 << 16 | (uint64_t)h2 << 32 | (uint64_t)h3 << 48;
    return _mm_cvtsi64_si128((long long)v);
}

/* reduce4 for int16 vectors whose lanes are at most 8191 in magnitude (the
 * maddubs output of weights below 32 and int8 activations: 2 * 31 * 128),
 * so sums of four lanes still fit 16 bits. Two transposing unpack-and-add
 * rounds leave each 64-bit group holding one partial sum per input; one
 * shuffle puts a group's partners side by side and a single multiply-add
 * with ones widens them to 32 bits. Instead of four widening multiplies and
 * three horizontal adds (the slow instructions here), one multiply and six
 * cheap shuffles. */
TILE __m128i reduce4_small(__m256i p0, __m256i p1, __m256i p2, __m256i p3) {
    __m256i u01 = _mm256_add_epi16(_mm256_unpacklo_epi16(p0, p1), _mm256_unpackhi_epi16(p0, p1));
    __m256i u23 = _mm256_add_epi16(_mm256_unpacklo_epi16(p2, p3), _mm256_unpackhi_epi16(p2, p3));
    /* 32-bit lanes of u01: (p0, p1) partial sums; of u23: (p2, p3). */
    __m256i v = _mm256_add_epi16(_mm256_unpacklo_epi32(u01, u23), _mm256_unpackhi_epi32(u01, u23));
    /* 64-bit groups of v: (p0, p1, p2, p3), each the sum of four original lanes. */
    v = _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, 0, 1, 8, 9, 2,
                                                3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15));
    v = _mm256_madd_epi16(v, _mm256_set1_epi16(1));
    return _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
}

/* One block b of four rows into the NT accumulators acc. */
TILE void legacy_block(const uint8_t *w, size_t ws, int64_t b, const char *a, size_t as, int NT, __m128 *acc,
                       const int F) {
    const int bs = legacy_bytes(F), has_m = legacy_has_min(F), off = legacy_offset(F);
    size_t o = (size_t)b * bs;
    __m256i q[4];
    const uint8_t *wr[4] = {w + o, w + ws + o, w + 2 * ws + o, w + 3 * ws + o};
    _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
        q[r] = legacy_quants(wr[r], F);
    }
    __m128 dw = _mm_cvtph_ps(halves4(wr[0], wr[1], wr[2], wr[3]));
    __m128 mw = has_m ? _mm_cvtph_ps(halves4(wr[0] + 2, wr[1] + 2, wr[2] + 2, wr[3] + 2)) : _mm_setzero_ps();
    FOR_T(j) {
        const tr_q8a *x = ACT(j, b);
        __m256i xv = _mm256_loadu_si256((const __m256i *)x->qs);
        __m256i p[4];
        __m128i isum;
        if (F == F_Q8_0) {
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++)
                p[r] = dot_us(q[r], _mm256_sign_epi8(xv, _mm256_loadu_si256((const __m256i *)(wr[r] + 2))));
            isum = reduce4(p[0], p[1], p[2], p[3]);
        } else {
            /* Weights of at most 5 bits: the int16 pair sums stay small enough to be
             * added in 16 bits, which saves three of the four widening multiplies. */
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) p[r] = _mm256_maddubs_epi16(q[r], xv);
            isum = reduce4_small(p[0], p[1], p[2], p[3]);
        }
        if (off) isum = _mm_sub_epi32(isum, _mm_set1_epi32(off * x->sum));
        __m128 da = _mm_set1_ps(x->d);
        acc[j] = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(dw, da), acc[j]);
        if (has_m) acc[j] = _mm_fmadd_ps(mw, _mm_set1_ps(x->d * (float)x->sum), acc[j]);
    }
}

/* The four rows are w + k * ws. pf > 0 (one-token streams): also prefetch
 * the bytes pf ahead in each row, every line the next two blocks will need. */
TILE void legacy_tile4(int64_t n, const uint8_t *w, size_t ws, const char *a, size_t as, int NT, __m128 *out,
                       const int F, size_t pf) {
    __m128 acc[4], acc2[4];
    FOR_T(j) acc[j] = acc2[j] = _mm_setzero_ps();
    int64_t nb = n / 32, b = 0;
    /* With one or two tokens, a single accumulator per token would chain every
     * block's multiply-add (5 cycles of latency each on Zen 1) while a block
     * takes about that long: even and odd blocks go to separate sums. Every
     * tile width sums this way, so that a token's result is the same bits
     * whatever batch it came in (test_matmul: batch_results_equal_...). */
    for (; b + 2 <= nb; b += 2) {
        if (pf) {
            /* Two blocks span 36-68 bytes: one line, and for Q8_0 a second
             * one every other step. */
            const char *p = (const char *)w + (size_t)b * legacy_bytes(F) + pf;
            _Pragma("GCC unroll 4") for (int r = 0; r < 4; r++) {
                _mm_prefetch(p + (size_t)r * ws, _MM_HINT_T0);
                if (F == F_Q8_0 && (b & 2)) _mm_prefetch(p + (size_t)r * ws + 64, _MM_HINT_T0);
            }
        }
        legacy_block(w, ws, b, a, as, NT, acc, F);
        legacy_block(w, ws, b + 1, a, as, NT, acc2, F);
    }
    for (; b < nb; b++) legacy_block(w, ws, b, a, as, NT, acc, F);
    FOR_T(j) out[j] = _mm_add_ps(acc[j], acc2[j]);
}

/* One token, or a few (speculative verification): the rows 4 * (nr / 4)
 * that tile4 takes are read as four sequential streams, rows i, i + h,
 * i + 2h, i + 3h (h = nr / 4) at a time, each with a prefetch one row
 * ahead. Four neighbouring rows at a time (what the prompt tiles do)
 * interleave four streams inside a few pages, which the hardware prefetcher
 * follows badly: measured with build/bench_matmul (2 threads, weights from
 * memory), Q8_0 17.7 -> 23.3-24.9 GB/s and Q4_0 11.6 -> 16.0 GB/s, against
 * about 26 GB/s for a plain read loop. Tokens go in tiles of up to four, the
 * second tile reading the rows from cache. Every row still goes through the
 * same arithmetic as in a batch (same kernel, its own lane). */
TILE void legacy_streams4(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a, size_t as, int nt, float *y,
                          size_t ys, const int F) {
    int h = nr / 4;
    for (int i = 0; i < h; i++) {
        for (int t = 0; t < nt; t += 4) {
            __m128 out[4];
            const uint8_t *wi = w + (size_t)i * ws;
            const char *at = a + (size_t)t * as;
            const int left = nt - t;
            const size_t pf = t == 0 ? ws : 0; /* the first tile brings the rows in */
            if (left >= 4) legacy_tile4(n, wi, ws * (size_t)h, at, as, 4, out, F, pf);
            else if (left == 3) legacy_tile4(n, wi, ws * (size_t)h, at, as, 3, out, F, pf);
            else if (left == 2) legacy_tile4(n, wi, ws * (size_t)h, at, as, 2, out, F, pf);
            else legacy_tile4(n, wi, ws * (size_t)h, at, as, 1, out, F, pf);
            for (int j = 0; j < 4 && j < left; j++) {
                float o[4];
                _mm_storeu_ps(o, out[j]);
                for (int k = 0; k < 4; k++) y[(size_t)(t + j) * ys + i + k * h] = o[k];
            }
        }
    }
}

/* Rows in fours through tile4, the remaining rows through the one-row tile. */
#define GEMM_ROWS4(name, F, tile1)                                                                \
    TGT static void name(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as,  \
                         int nt, float *y, size_t ys) {                                          \
        const char *a = a_;                                                                      \
        int r = 0;                                                                               \
        if (nt <= TR_STREAM_TOKENS) {                                                            \
            legacy_streams4(n, w, ws, nr, a, as, nt, y, ys, F);                                  \
            r = nr & ~3;                                                                         \
        }                                                                                        \
        for (; r + 4 <= nr; r += 4) {                                                            \
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;                             \
            __m128 out[4];                                                                       \
            int t = 0;                                                                           \
            for (; t + 4 <= nt; t += 4) {                                                        \
                legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 4, out, F, 0);                     \
                for (int k = 0; k < 4; k++) _mm_storeu_ps(y + (size_t)(t + k) * ys + r, out[k]); \
            }                                                                                    \
            int left = nt - t;                                                                   \
            if (left == 3) legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 3, out, F, 0);          \
            else if (left == 2) legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 2, out, F, 0);     \
            else if (left == 1) legacy_tile4(n, wr, ws, a + (size_t)t * as, as, 1, out, F, 0);     \
            for (int k = 0; k < left; k++) _mm_storeu_ps(y + (size_t)(t + k) * ys + r, out[k]);  \
        }                                                                                        \
        if (r < nr) tile1(n, (const uint8_t *)w + (size_t)r * ws, ws, nr - r, a, as, nt, y + r, ys); \
    }

GEMM_FROM_TILE(gemm1_q8_0, q8_0_tile)
GEMM_ROWS4(gemm_q8_0, F_Q8_0, gemm1_q8_0)
GEMM_FROM_TILE(gemm1_q4_0, q4_0_tile)
GEMM_ROWS4(gemm_q4_0, F_Q4_0, gemm1_q4_0)
GEMM_FROM_TILE(gemm1_q4_1, q4_1_tile)
GEMM_ROWS4(gemm_q4_1, F_Q4_1, gemm1_q4_1)
GEMM_FROM_TILE(gemm1_q5_0, q5_0_tile)
GEMM_ROWS4(gemm_q5_0, F_Q5_0, gemm1_q5_0)
GEMM_FROM_TILE(gemm1_q5_1, q5_1_tile)
GEMM_ROWS4(gemm_q5_1, F_Q5_1, gemm1_q5_1)

const tr_gemm_row tr_avx2_legacy_gemm_rows[] = {
    {TR_TYPE_Q8_0, TR_ACT_Q8, gemm_q8_0},
    {TR_TYPE_Q4_0, TR_ACT_Q8, gemm_q4_0},
    {TR_TYPE_Q4_1, TR_ACT_Q8, gemm_q4_1},
    {TR_TYPE_Q5_0, TR_ACT_Q8, gemm_q5_0},
    {TR_TYPE_Q5_1, TR_ACT_Q8, gemm_q5_1},
    {-1, 0, NULL},
};

/* tr_q8a conversion, the same bytes as tr_act_q8_ref: the same float
 * scale and inverse (scalar, once per block), the same products x * id, and
 * roundf's halves-away-from-zero rebuilt exactly: truncate, and step away
 * from zero when the (exact) remainder is at least one half. The scalar
 * version's roundf per element made the conversion cost as much as a small
 * matrix product at one token. */
TGT static void act_q8_avx2(const float *x_, void *y_, int64_t n) {
    const float *x = x_;
    tr_q8a *y = y_;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 signmask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    for (int64_t b = 0; b < n / 32; b++, x += 32, y++) {
        __m256 v[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v[0], absmask), _mm256_and_ps(v[1], absmask)),
                                 _mm256_max_ps(_mm256_and_ps(v[2], absmask), _mm256_and_ps(v[3], absmask)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h);
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        __m256 idv = _mm256_set1_ps(id);
        __m256i q[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
            __m256 p = _mm256_mul_ps(v[k], idv);
            __m256 t = _mm256_round_ps(p, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 up = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(p, t), absmask), half, _CMP_GE_OQ);
            __m256 step = _mm256_or_ps(_mm256_and_ps(p, signmask), one); /* +-1 with p's sign */
            q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)));
        }
        __m256i s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        /* Packing works within 128-bit lanes: 32-bit groups come out as
         * q0[0..3] q1[0..3] q2[0..3] q3[0..3] | q0[4..7] ...; one permute
         * restores element order. Values are within +-127: no saturation. */
        __m256i p16a = _mm256_packs_epi32(q[0], q[1]), p16b = _mm256_packs_epi32(q[2], q[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y->qs, p8);
        y->d = tr_fp16_to_fp32(tr_fp32_to_fp16(d));
        y->sum = _mm_cvtsi128_si32(s4);
    }
}

const tr_act_row tr_avx2_legacy_act_rows[] = {
    {TR_ACT_Q8, act_q8_avx2},
    {-1, NULL},
};

#else
const tr_gemm_row tr_avx2_legacy_gemm_rows[] = {{-1, 0, NULL}};
const tr_act_row tr_avx2_legacy_act_rows[] = {{-1, NULL}};
#endif
