/* TQ2_0 and TQ1_0 weights as unsigned codes 0..2 (the trits -1..1 plus
 * one) in ymm, 32 elements a vector in the activations' order, and the
 * float step of a super-block: shared by the AVX2 kernels
 * (matmul_avx2_kquant.c) and the AVX-VNNI ones (matmul_avxvnni_kquant.c),
 * which differ only in how the codes meet the activations. Included after
 * avx2_common.h. */
#ifndef TR_TERNARY_CODES_H
#define TR_TERNARY_CODES_H

/* TQ2_0: byte m of the 32-byte half h holds elements 128h + 32l + m in
 * bits 2l, 2l+1 (matmul_ref.c): q[l] = elements 128h + 32l .. +31. */
TILE void tq2_0_half(const uint8_t *w, const int h, __m256i q[4]) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i raw = _mm256_loadu_si256((const __m256i *)(w + 32 * h));
    _Pragma("GCC unroll 4") for (int l = 0; l < 4; l++) q[l] = _mm256_and_si256(l ? _mm256_srli_epi16(raw, 2 * l) : raw, m3);
}

/* TQ1_0: five trits per byte in base 3 (see matmul_ref.c). The trit k of a
 * byte b is the top of (b * 3^k mod 256) * 3, that is 0, 1 or 2 as
 * q = b * 3^k mod 256 is below 86, below 171, or above: q advances by byte
 * adds (q + q + q wraps mod 256 as the reference's uint8_t does) and the
 * thresholds are two signed compares of q ^ 0x80; no multiply pipe is used
 * until the products, which are TQ2_0's (codes 0..2, the -1 through the
 * activation sums). The eight vectors of 32 codes follow the activations'
 * order: qs[0..31] give 0..159 (one power each), qs[32..47] 160..239 (two
 * powers a vector), qh[0..3] 240..255 (four bytes a power). */
TILE __m256i tq1_trits(__m256i q) {
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    const __m256i t1 = _mm256_set1_epi8((char)(85 ^ 0x80)), t2 = _mm256_set1_epi8((char)(170 ^ 0x80));
    __m256i f = _mm256_xor_si256(q, flip);
    return _mm256_sub_epi8(_mm256_setzero_si256(),
                           _mm256_add_epi8(_mm256_cmpgt_epi8(f, t1), _mm256_cmpgt_epi8(f, t2)));
}
TILE __m256i times3(__m256i q) { return _mm256_add_epi8(q, _mm256_add_epi8(q, q)); }
TILE __m128i times3_128(__m128i q) { return _mm_add_epi8(q, _mm_add_epi8(q, q)); }

TILE void tq1_0_codes(const uint8_t *w, __m256i T[8]) {
    __m256i q = _mm256_loadu_si256((const __m256i *)w);
    _Pragma("GCC unroll 5") for (int k = 0; k < 5; k++) {
        T[k] = tq1_trits(q);
        if (k < 4) q = times3(q);
    }
    __m128i h0 = _mm_loadu_si128((const __m128i *)(w + 32)); /* powers 0..4 of qs[32..47] */
    __m128i h1 = times3_128(h0), h2 = times3_128(h1), h3 = times3_128(h2), h4 = times3_128(h3);
    uint32_t qh;
    memcpy(&qh, w + 48, 4);
    __m128i e0 = _mm_set1_epi32((int)qh), e1 = times3_128(e0), e2 = times3_128(e1), e3 = times3_128(e2);
    __m128i e = _mm_blend_epi32(_mm_blend_epi32(e0, e1, 0x2), _mm_blend_epi32(e2, e3, 0x8), 0xc);
    T[5] = tq1_trits(_mm256_set_m128i(h1, h0));
    T[6] = tq1_trits(_mm256_set_m128i(h3, h2));
    T[7] = tq1_trits(_mm256_set_m128i(e, h4));
}

/* A token's super-block into its float accumulator: the 8 int32 lanes v
 * (lane k: the products of bytes 4k..4k+3 of every 32, minus the bsums
 * 2k and 2k+1), converted, times the weight scale dw times the token's d. */
TILE __m256 tq_accumulate(__m256 acc, __m256i v, float dw, const tr_q8k *x) {
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(dw * x->d), acc);
}

#endif
