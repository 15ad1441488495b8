/* The 256-bit _X16 kernels' body, included twice by matmul_avx2_repack.c:
 * X_SFX names the tier (avx2, avxvnni), X_TGT is its target attribute and
 * X_VNNI selects vpdpbusd over vpmaddubsw. See that file's comment. */
#define X_CAT2(a, b) a##_##b
#define X_CAT(a, b) X_CAT2(a, b)
#define X_FN(name) X_CAT(name, X_SFX)
#define X_INLINE static inline __attribute__((always_inline)) X_TGT

/* s + each lane's products of w (unsigned bytes) with the four signed
 * bytes at x: AVX-VNNI's exact int32 step; on AVX2 the int16 pairs of
 * vpmaddubsw, which the callers sum in int16 within the bounds above. */
X_INLINE __m256i X_FN(mac)(__m256i s, __m256i w, const int8_t *x) {
#if X_VNNI
    return _mm256_dpbusd_avx_epi32(s, w, bcast4(x));
#else
    /* the empty asm keeps each sum a chain: gcc otherwise re-associates the
     * int16 adds of a tile into trees, computes every product first and
     * spills most of them (Q4_K: two stack stores per vpmaddubsw) */
    __m256i r = _mm256_add_epi16(s, _mm256_maddubs_epi16(w, bcast4(x)));
    __asm__("" : "+x"(r));
    return r;
#endif
}

/* The int32 sums of an accumulator of mac (AVX2: pairs of int16 added). */
X_INLINE __m256i X_FN(widen)(__m256i s) {
#if X_VNNI
    return s;
#else
    return _mm256_madd_epi16(s, _mm256_set1_epi16(1));
#endif
}

/* Halves h0 .. h0 + H - 1 of a Q4_K_X16 group against NT <= XT tokens:
 * out[hh][j] lane i = row 8(h0 + hh) + i's result for token j. Sub-blocks
 * in pairs (2c: a byte's low nibbles, 2c + 1: its high ones), each of the
 * pair's eight weight vectors loaded and split once for the tile's tokens.
 * H = 2 takes both halves of each block in turn (one pass over the group's
 * stream: what one token or two, bound by memory, want), H = 1 one half
 * (a pass each: the registers of four tokens). */
X_INLINE void X_FN(q4k_x16)(int64_t n, const tr_block_q4_K_x16 *g0, size_t gs, int S, int h0, int H, const char *a,
                            size_t as, int NT, __m256 out[][XT]) {
    __m256 acc[2 * X_STREAMS][XT];
    for (int i = 0; i < S * H; i++) FOR_XT(j) acc[i][j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < n / 256; b++) _Pragma("GCC unroll 1") for (int st = 0; st < S; st++) {
        const tr_block_q4_K_x16 *g = (const tr_block_q4_K_x16 *)((const uint8_t *)g0 + (size_t)st * gs) + b;
        _Pragma("GCC unroll 2") for (int hh = 0; hh < H; hh++) {
            const int h = h0 + hh;
            __m256i sumi[XT];
            FOR_XT(j) sumi[j] = _mm256_setzero_si256();
            _Pragma("GCC unroll 1") for (int c = 0; c < 4; c++) {
                if (H == 2) /* the next block, five of its 37 lines at a time (all at once: 6-8 % slower) */
                    for (int l = 0; l < 5; l++)
                        _mm_prefetch((const char *)(g + 1) + 64 * (5 * (4 * hh + c) + l), _MM_HINT_T0);
                __m256i lo[XT], hi[XT];
                FOR_XT(j) lo[j] = hi[j] = _mm256_setzero_si256();
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
                    const __m256i q = half_load(g->qs[c][k], h);
                    const __m256i wl = _mm256_and_si256(q, m4), wh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    FOR_XT(j) {
                        const int8_t *x = ACTKP(j, b)->qs + 64 * c + 4 * k;
                        lo[j] = X_FN(mac)(lo[j], wl, x);
                        hi[j] = X_FN(mac)(hi[j], wh, x + 32);
                    }
                }
                const __m256i S0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(g->sc[2 * c] + 8 * h)));
                const __m256i S1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(g->sc[2 * c + 1] + 8 * h)));
#if X_VNNI
                FOR_XT(j) sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(_mm256_mullo_epi32(lo[j], S0),
                                                                               _mm256_mullo_epi32(hi[j], S1)));
#else
                /* a lane's two int16 times its scale in both halves: vpmaddwd gives sum * scale, exact */
                const __m256i P0 = _mm256_or_si256(S0, _mm256_slli_epi32(S0, 16));
                const __m256i P1 = _mm256_or_si256(S1, _mm256_slli_epi32(S1, 16));
                FOR_XT(j) sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(_mm256_madd_epi16(lo[j], P0),
                                                                               _mm256_madd_epi16(hi[j], P1)));
#endif
            }
            __m256i M[4];
            _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++)
                M[p] = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(g->mn[p][8 * h])));
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g->d + 8 * h)));
            const __m256 dmw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g->dmin + 8 * h)));
            FOR_XT(j) {
                const tr_q8kp *x = ACTKP(j, b);
                __m256i summ = _mm256_setzero_si256();
                _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
                    int32_t v;
                    memcpy(&v, x->bsums32 + 2 * p, 4);
                    summ = _mm256_add_epi32(summ, _mm256_madd_epi16(M[p], _mm256_set1_epi32(v)));
                }
                const __m256 t1 = _mm256_mul_ps(dw, _mm256_cvtepi32_ps(sumi[j]));
                const __m256 t2 = _mm256_mul_ps(dmw, _mm256_cvtepi32_ps(summ));
                acc[st * H + hh][j] =
                    _mm256_add_ps(acc[st * H + hh][j], _mm256_mul_ps(_mm256_set1_ps(x->d), _mm256_sub_ps(t1, t2)));
            }
        }
    }
    for (int i = 0; i < S * H; i++) FOR_XT(j) out[i][j] = acc[i][j];
}

/* Halves h0 .. h0 + H - 1 (as Q4_K's) of a Q4_0_X16 / Q5_0_X16 / Q8_0_X16
 * group: per block and token the reference's s = s + (d * xd) *
 * float(sumi), sumi exact. The four weight vectors of a block are each
 * loaded (and Q4_0 / Q5_0's split into values 4k.. and 16 + 4k..) once for
 * the tile's tokens. */
X_INLINE void X_FN(lx16)(int64_t n, const uint8_t *g0, size_t gs, int S, int h0, int H, const char *a, size_t as,
                         int NT, __m256 out[][XT], const int F) {
    __m256 acc[2 * X_STREAMS][XT];
    for (int i = 0; i < S * H; i++) FOR_XT(j) acc[i][j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < n / 32; b++) _Pragma("GCC unroll 1") for (int st = 0; st < S; st++) {
        const uint8_t *g = g0 + (size_t)st * gs + (size_t)b * X_BYTES(F);
        if (H == 2) prefetch_ahead(g, X_BYTES(F));
        _Pragma("GCC unroll 2") for (int hh = 0; hh < H; hh++) {
            const int h = h0 + hh;
            __m256i lo[XT], hi[XT];
            FOR_XT(j) lo[j] = hi[j] = _mm256_setzero_si256();
            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
                __m256i wl, wh;
                if (F == X_Q8_0) {
                    const tr_block_q8_0_x16 *x = (const tr_block_q8_0_x16 *)g;
                    wl = half_load(x->qs[k], h);
                    wh = half_load(x->qs[4 + k], h);
                } else {
                    const uint8_t(*qs)[16][4] =
                        F == X_Q4_0 ? ((const tr_block_q4_0_x16 *)g)->qs : ((const tr_block_q5_0_x16 *)g)->qs;
                    const __m256i q = half_load(qs[k], h);
                    wl = _mm256_and_si256(q, m4);
                    wh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    if (F == X_Q5_0) {
                        const uint64_t *hm = ((const tr_block_q5_0_x16 *)g)->hm;
                        wl = _mm256_or_si256(wl, q5_high(hm[k], h));
                        wh = _mm256_or_si256(wh, q5_high(hm[4 + k], h));
                    }
                }
                FOR_XT(j) {
                    const int8_t *x = ACTQ(j, b)->qs + 4 * k;
                    lo[j] = X_FN(mac)(lo[j], wl, x);
                    hi[j] = X_FN(mac)(hi[j], wh, x + 16);
                }
            }
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g + 16 * h))); /* d[16] first */
            FOR_XT(j) {
                const tr_q8a *x = ACTQ(j, b);
                /* the offset (wrapping: a hostile file's NaN activations leave sums out of range) */
                const __m256i off = _mm256_set1_epi32((int32_t)(0u - X_OFFSET(F) * (uint32_t)x->sum));
#if X_VNNI
                const __m256i sumi = _mm256_add_epi32(off, _mm256_add_epi32(lo[j], hi[j]));
#else
                /* Q4_0: one int16 sum of the eight (<= 30720); Q5_0: two of four (<= 31744 each) */
                const __m256i sumi =
                    _mm256_add_epi32(off, F == X_Q4_0 ? X_FN(widen)(_mm256_add_epi16(lo[j], hi[j]))
                                                      : _mm256_add_epi32(X_FN(widen)(lo[j]), X_FN(widen)(hi[j])));
#endif
                const __m256 t = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x->d)), _mm256_cvtepi32_ps(sumi));
                acc[st * H + hh][j] = _mm256_add_ps(acc[st * H + hh][j], t);
            }
        }
    }
    for (int i = 0; i < S * H; i++) FOR_XT(j) out[i][j] = acc[i][j];
}

#if !X_VNNI
/* Q8_0_X16 on AVX2 (halves as lx16's): the stored bytes are the int8
 * values plus 128, which vpmaddubsw cannot take as they are (255 * 127 * 2
 * saturates its int16 pairs). Flipped back to int8 (xor 0x80), the weight's
 * sign moves onto the broadcast activations (vpsignb) and its magnitude
 * (at most 128) multiplies them: a pair is at most 2 * 128 * 127 = 32512,
 * exact, and each vector's pairs are widened by vpmaddwd at once into one
 * int32 sum per token (exact, the same integers as the reference's sumi, so
 * the float steps are lx16's). The magnitudes and signs are taken once per
 * weight vector for the tile's tokens. */
X_INLINE void X_FN(q8x16)(int64_t n, const uint8_t *g0, size_t gs, int S, int h0, int H, const char *a, size_t as,
                          int NT, __m256 out[][XT]) {
    __m256 acc[2 * X_STREAMS][XT];
    for (int i = 0; i < S * H; i++) FOR_XT(j) acc[i][j] = _mm256_setzero_ps();
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n / 32; b++) _Pragma("GCC unroll 1") for (int st = 0; st < S; st++) {
        const uint8_t *g = g0 + (size_t)st * gs + (size_t)b * sizeof(tr_block_q8_0_x16);
        const tr_block_q8_0_x16 *blk = (const tr_block_q8_0_x16 *)g;
        if (H == 2) prefetch_ahead(g, sizeof *blk);
        _Pragma("GCC unroll 2") for (int hh = 0; hh < H; hh++) {
            const int h = h0 + hh;
            __m256i s[XT];
            FOR_XT(j) s[j] = _mm256_setzero_si256();
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++) {
                const __m256i w = _mm256_xor_si256(half_load(blk->qs[k], h), flip), m = _mm256_abs_epi8(w);
                FOR_XT(j) {
                    const int8_t *x = ACTQ(j, b)->qs + 4 * k;
                    const __m256i p = _mm256_maddubs_epi16(m, _mm256_sign_epi8(bcast4(x), w));
                    s[j] = _mm256_add_epi32(s[j], _mm256_madd_epi16(p, ones));
                    __asm__("" : "+x"(s[j])); /* a chain, as in mac */
                }
            }
            const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(g + 16 * h)));
            FOR_XT(j) {
                const tr_q8a *x = ACTQ(j, b);
                const __m256 t = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(x->d)), _mm256_cvtepi32_ps(s[j]));
                acc[st * H + hh][j] = _mm256_add_ps(acc[st * H + hh][j], t);
            }
        }
    }
    for (int i = 0; i < S * H; i++) FOR_XT(j) out[i][j] = acc[i][j];
}
#endif

#if X_VNNI
#define X_Q8_AVX2(S, NT, H, gs) ((void)0)
#else
#define X_Q8_AVX2(S, NT, H, gs) X_FN(q8x16)(n, gp, gs, S, h0, H, at, as, NT, acc)
#endif
/* Tile of NT tokens over halves h0 .. h0 + H - 1 of S groups from gp, gs
 * bytes apart. */
#define X_TILE_S(F, S, NT, H, gs)                                                                                 \
    do {                                                                                                          \
        if ((F) == X_Q4_K) X_FN(q4k_x16)(n, (const tr_block_q4_K_x16 *)gp, gs, S, h0, H, at, as, NT, acc);       \
        else if ((F) == X_Q8_0 && !X_VNNI) X_Q8_AVX2(S, NT, H, gs);                                                \
        else X_FN(lx16)(n, gp, gs, S, h0, H, at, as, NT, acc, F);                                                 \
    } while (0)
#define X_TILE(F, NT, H) X_TILE_S(F, 1, NT, H, 16 * ws)

/* The rows handed in (nr a multiple of 16, from a group's start: matmul.c
 * cuts chunks of whole groups), group by group, each against the tokens in
 * tiles of up to XT: one or two tokens over both halves in one pass, more
 * half by half. One token reads up to X_STREAMS streams side by side, as the
 * AVX-512 kernels do (one sequential stream per thread leaves the hardware
 * prefetchers short: docs/BENCHMARKS.md, session 20), each stream a run of
 * the call's groups in turn (session 21). */
X_INLINE void X_FN(gemm_x16)(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as, int nt, float *y,
                             size_t ys, const int F) {
    const char *a = a_;
    int g = 0;
    /* One width only, and the kernels' loops over the S groups not unrolled
     * (unrolled, clang with the sanitizers took over ten minutes on this
     * file, 83 s before; rolled, 107 s, and one token 3-6 % slower than
     * unrolled: docs/BENCHMARKS.md, session 20). */
    const int S = X_STREAMS_OF(F), G = nr / 16;
    if (nt == 1 && S > 1 && G >= S) {
        /* stream st: the call's groups st * q .. st * q + q - 1 in turn
         * (consecutive groups are contiguous: one long sequential read each,
         * and the prefetch in a group's last block reaches the next group) */
        const int q = G / S;
        const size_t gs = (size_t)q * 16 * ws;
        for (int i = 0; i < q; i++) {
            const uint8_t *gp = (const uint8_t *)w + (size_t)i * 16 * ws;
            const char *at = a;
            const int h0 = 0;
            __m256 acc[2 * X_STREAMS][XT];
            X_TILE_S(F, S, 1, 2, gs);
            for (int k = 0; k < 2 * S; k++) _mm256_storeu_ps(y + 16 * ((size_t)(k / 2) * q + i) + 8 * (k % 2), acc[k][0]);
        }
        g = 16 * S * q; /* the groups left (fewer than S) one by one */
    }
    for (; g + 16 <= nr; g += 16) {
        const uint8_t *gp = (const uint8_t *)w + (size_t)g * ws;
        for (int t0 = 0; t0 < nt; t0 += XT) {
            const char *at = a + (size_t)t0 * as;
            const int k = nt - t0 < XT ? nt - t0 : XT, H = k <= 2 ? 2 : 1;
            for (int h0 = 0; h0 < 2; h0 += H) {
                __m256 acc[2 * X_STREAMS][XT];
                switch (k) { /* each tile width its own inlined copy: the accumulators stay in registers */
                case 1: X_TILE(F, 1, 2); break;
                case 2: X_TILE(F, 2, 2); break;
                case 3: X_TILE(F, 3, 1); break;
                default: X_TILE(F, 4, 1); break;
                }
                for (int hh = 0; hh < H; hh++)
                    for (int j = 0; j < k; j++) _mm256_storeu_ps(y + (size_t)(t0 + j) * ys + g + 8 * (h0 + hh), acc[hh][j]);
            }
        }
    }
}

#define X_GEMM(name, F)                                                                                           \
    X_TGT static void X_FN(name)(int64_t n, const void *w, size_t ws, int nr, const void *a, size_t as, int nt,  \
                                 float *y, size_t ys) {                                                           \
        X_FN(gemm_x16)(n, w, ws, nr, a, as, nt, y, ys, F);                                                        \
    }
X_GEMM(gemm_q4_k_x16, X_Q4_K)
X_GEMM(gemm_q4_0_x16, X_Q4_0)
X_GEMM(gemm_q5_0_x16, X_Q5_0)
X_GEMM(gemm_q8_0_x16, X_Q8_0)

#undef X_GEMM
#undef X_TILE
#undef X_TILE_S
#undef X_Q8_AVX2
#undef X_INLINE
#undef X_FN
#undef X_CAT
#undef X_CAT2
