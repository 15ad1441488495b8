/* Quantize -> dequantize round trips for every format with a quantizer: the
 * error relative to the data's RMS stays under a bound that reflects the
 * format's bits, on gaussian, uniform and outlier-laden data, all-zero blocks
 * and lengths of 1..N blocks. Plus the special values of F16/BF16, exactness
 * where the format can represent the input exactly, and no writes past the
 * last block. (Bit-identity with ggml's reference quantizers is checked
 * against the gguf package and ggml itself in test_quant_reference.py.) */
#include "tt.h"

#include "quant/blocks.h"
#include "quant/quant.h"
#include "trinity.h"

#include <stdint.h>
#include <string.h>

/* xorshift64* and Box-Muller: deterministic data without libc's rand(). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static float rng_uniform(void) { return (float)((rng_next() >> 40) + 0.5) / (float)(1u << 24); } /* (0,1) */
static float rng_gauss(void) {
    const float u = rng_uniform(), v = rng_uniform();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

enum data_kind { DATA_GAUSS, DATA_UNIFORM, DATA_OUTLIERS, DATA_KINDS };
static const char *kind_name[DATA_KINDS] = {"gaussian", "uniform", "outliers"};

static void fill(float *x, int64_t n, int64_t blck, enum data_kind kind, float scale) {
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case DATA_GAUSS: x[i] = scale * rng_gauss(); break;
        case DATA_UNIFORM: x[i] = scale * (2.0f * rng_uniform() - 1.0f); break;
        case DATA_OUTLIERS: x[i] = scale * rng_gauss(); break;
        default: break;
        }
    }
    if (kind == DATA_OUTLIERS) /* one element 30x the rest in every 32 (and so in every block) */
        for (int64_t i = 0; i < n; i += 32) x[i + (int64_t)(rng_next() % 32)] *= 30.0f;
    (void)blck;
}

/* Round trip through `type`; returns RMSE / RMS of the data. The output buffer
 * is exactly the row size plus a canary, so overruns show (and ASan sees them). */
static double roundtrip_rel_rmse(int type, const float *x, int64_t n, float *y) {
    const size_t bytes = tr_row_size(type, n);
    uint8_t *q = malloc(bytes + 16);
    memset(q + bytes, 0xa5, 16);
    TT_CHECK(tr_quantize(type, x, q, n) == TR_OK);
    for (int k = 0; k < 16; k++) TT_CHECK(q[bytes + k] == 0xa5);
    TT_CHECK(tr_dequantize(type, q, y, n) == TR_OK);
    free(q);
    double se = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        se += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        ss += (double)x[i] * x[i];
    }
    return ss > 0 ? sqrt(se / ss) : sqrt(se);
}

/* Bounds on the mean relative RMSE per type and data kind, about 1.2x what
 * this code measures (printed by the test), so a real regression fails. They
 * follow the format: each extra bit roughly halves the error, k-quants beat
 * the legacy format of the same bits, offsets (Q4_1) beat symmetric (Q4_0).
 * A gaussian block of 32 has max/rms around 2.2, so even a perfect Q8_0 has
 * a relative RMSE of about 2.2 / 127 / sqrt(12) = 0.5%: the bound is 0.65%.
 * "Outliers" (one element 30x in every 32) is judged against the whole
 * signal's RMS, which the outliers dominate; the rest of each block then
 * sits on few levels, so the legacy formats suffer most. */
struct bound {
    int type;
    double gauss, uniform, outliers;
};
static const struct bound bounds[] = {
    {TR_TYPE_F16, 0.0003, 0.0003, 0.0003}, {TR_TYPE_BF16, 0.0022, 0.0022, 0.0022},
    {TR_TYPE_Q8_0, 0.0065, 0.005, 0.015},  {TR_TYPE_Q8_1, 0.0065, 0.005, 0.015},
    {TR_TYPE_Q8_K, 0.0085, 0.005, 0.028},  {TR_TYPE_Q6_K, 0.022, 0.019, 0.042},
    {TR_TYPE_Q5_0, 0.05, 0.038, 0.11},     {TR_TYPE_Q5_1, 0.045, 0.035, 0.064},
    {TR_TYPE_Q5_K, 0.044, 0.034, 0.063},   {TR_TYPE_Q4_0, 0.10, 0.078, 0.16},
    {TR_TYPE_Q4_1, 0.094, 0.074, 0.14},    {TR_TYPE_Q4_K, 0.086, 0.066, 0.117},
    {TR_TYPE_MXFP4, 0.14, 0.145, 0.21},    {TR_TYPE_IQ4_NL, 0.092, 0.078, 0.142},
    {TR_TYPE_Q3_K, 0.185, 0.15, 0.145},
    {TR_TYPE_Q2_K, 0.36, 0.28, 0.24},
};

TT_TEST(roundtrip_error_bounds) {
    const int64_t max_blocks = 24;
    float *x = malloc(sizeof(float) * 256 * max_blocks), *y = malloc(sizeof(float) * 256 * max_blocks);
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        const int type = bounds[b].type;
        TT_CHECK(tr_type_can_quantize(type));
        if (!tr_type_can_quantize(type)) continue;
        const int64_t blck = tr_type_block_size(type) > 1 ? tr_type_block_size(type) : 256;
        for (int kind = 0; kind < DATA_KINDS; kind++) {
            const double bound = kind == DATA_GAUSS ? bounds[b].gauss : kind == DATA_UNIFORM ? bounds[b].uniform
                                                                                             : bounds[b].outliers;
            double worst = 0.0, sum = 0.0;
            int cases = 0;
            /* ragged lengths: 1, 2, 3, 5, 8, 13, 24 blocks, at scales from 1e-3 to 100
             * (the outliers at 30x stay inside F16's range) */
            static const int64_t nblocks[] = {1, 2, 3, 5, 8, 13, 24};
            static const float scales[] = {1e-3f, 0.02f, 1.0f, 7.0f, 100.0f};
            for (size_t k = 0; k < sizeof nblocks / sizeof nblocks[0]; k++) {
                for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
                    const int64_t n = nblocks[k] * blck;
                    fill(x, n, blck, (enum data_kind)kind, scales[s]);
                    const double e = roundtrip_rel_rmse(type, x, n, y);
                    if (e > worst) worst = e;
                    sum += e;
                    cases++;
                }
            }
            printf("     %-6s %-9s relative RMSE mean %.5f worst %.5f (bounds %.4f, %.4f)\n", tr_type_name(type),
                   kind_name[kind], sum / cases, worst, bound, 1.5 * bound);
            TT_CHECK(sum / cases < bound);
            /* single blocks vary more: the worst case gets half as much again */
            TT_CHECK(worst < 1.5 * bound);
        }
    }
    free(x);
    free(y);
}

/* Every quantizer: all-zero blocks come back as exact zeros. */
TT_TEST(zero_blocks_stay_zero) {
    float x[512] = {0}, y[512];
    for (int type = 0; type < TR_TYPE_COUNT; type++) {
        if (!tr_type_can_quantize(type) || !tr_type_can_dequantize(type)) continue;
        const int64_t n = tr_type_block_size(type) > 1 ? 2 * tr_type_block_size(type) : 512;
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f;
        TT_CHECK(roundtrip_rel_rmse(type, x, n, y) == 0.0);
        for (int64_t i = 0; i < n; i++) TT_CHECK(y[i] == 0.0f);
    }
}

/* A block whose values sit exactly on the format's grid comes back exactly. */
TT_TEST(ternary_inputs_are_exact) {
    static const int types[] = {TR_TYPE_TQ1_0, TR_TYPE_TQ2_0};
    static const float scales[] = {1.0f, 0.5f, 0.0234375f, 3.0f, 1024.0f}; /* exact in fp16 */
    float x[256 * 3], y[256 * 3];
    for (size_t t = 0; t < 2; t++) {
        for (size_t s = 0; s < sizeof scales / sizeof scales[0]; s++) {
            for (int i = 0; i < 256 * 3; i++) x[i] = scales[s] * (float)((int)(rng_next() % 3) - 1);
            for (int b = 0; b < 3; b++) x[256 * b + (int)(rng_next() % 256)] = -scales[s]; /* the scale is present */
            TT_CHECK(roundtrip_rel_rmse(types[t], x, 256 * 3, y) == 0.0);
            for (int i = 0; i < 256 * 3; i++) TT_CHECK(x[i] == y[i]);
        }
    }
}

/* Dequantized Q8_0 / Q4_0 / Q5_0 / TQ blocks quantize back to the same bytes. */
TT_TEST(requantizing_dequantized_blocks_is_stable) {
    /* (not Q8_1: like ggml, its s field is rounded from the unrounded scale the first time) */
    static const int types[] = {TR_TYPE_Q8_0, TR_TYPE_Q4_0, TR_TYPE_Q5_0, TR_TYPE_TQ2_0, TR_TYPE_TQ1_0};
    float x[256 * 4], y[256 * 4];
    uint8_t q1[2048], q2[2048];
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const int type = types[t];
        const int64_t n = 256 * 4;
        for (int kind = 0; kind < DATA_KINDS; kind++) {
            fill(x, n, 32, (enum data_kind)kind, 0.3f);
            TT_CHECK(tr_quantize(type, x, q1, n) == TR_OK);
            TT_CHECK(tr_dequantize(type, q1, y, n) == TR_OK);
            TT_CHECK(tr_quantize(type, y, q2, n) == TR_OK);
            const size_t bytes = tr_row_size(type, n);
            if (memcmp(q1, q2, bytes) != 0) printf("     %s: requantized bytes differ\n", tr_type_name(type));
            TT_CHECK(memcmp(q1, q2, bytes) == 0);
        }
    }
}

static uint16_t f16_bits(float f) {
    uint16_t h;
    TT_CHECK(tr_quantize(TR_TYPE_F16, &f, &h, 1) == TR_OK);
    return h;
}
static uint16_t bf16_bits(float f) {
    uint16_t h;
    TT_CHECK(tr_quantize(TR_TYPE_BF16, &f, &h, 1) == TR_OK);
    return h;
}

TT_TEST(f16_special_values) {
    TT_CHECK_EQ_INT(f16_bits(0.0f), 0x0000);
    TT_CHECK_EQ_INT(f16_bits(-0.0f), 0x8000);
    TT_CHECK_EQ_INT(f16_bits(1.0f), 0x3c00);
    TT_CHECK_EQ_INT(f16_bits(-2.0f), 0xc000);
    TT_CHECK_EQ_INT(f16_bits(65504.0f), 0x7bff);   /* largest half */
    TT_CHECK_EQ_INT(f16_bits(65519.99f), 0x7bff);  /* rounds down */
    TT_CHECK_EQ_INT(f16_bits(65520.0f), 0x7c00);   /* tie to even: infinity */
    TT_CHECK_EQ_INT(f16_bits(1e10f), 0x7c00);
    TT_CHECK_EQ_INT(f16_bits(-INFINITY), 0xfc00);
    TT_CHECK_EQ_INT(f16_bits(0x1p-14f), 0x0400);   /* smallest normal */
    TT_CHECK_EQ_INT(f16_bits(0x1p-24f), 0x0001);   /* smallest subnormal */
    TT_CHECK_EQ_INT(f16_bits(0x1p-25f), 0x0000);   /* tie to even: zero */
    TT_CHECK_EQ_INT(f16_bits(0x1.8p-25f), 0x0001); /* above the tie */
    TT_CHECK_EQ_INT(f16_bits(3 * 0x1p-25f), 0x0002); /* 1.5 ulp ties to even 2 */
    TT_CHECK_EQ_INT(f16_bits(1.0f + 0x1p-11f), 0x3c00);     /* tie to even, down */
    TT_CHECK_EQ_INT(f16_bits(1.0f + 3 * 0x1p-11f), 0x3c02); /* tie to even, up */
    TT_CHECK_EQ_INT(f16_bits(0x1.ffcp-15f), 0x0400);        /* subnormal rounding up into the normals */
    const uint16_t qnan = f16_bits(NAN), nnan = f16_bits(-NAN);
    TT_CHECK((qnan & 0x7c00) == 0x7c00 && (qnan & 0x3ff) != 0);
    TT_CHECK((nnan & 0x8000) && (nnan & 0x3ff) != 0);
    /* a signalling NaN whose payload is only in the low bits must not become infinity */
    const uint32_t snan_bits = 0x7f800001u;
    float snan;
    memcpy(&snan, &snan_bits, 4);
    TT_CHECK((f16_bits(snan) & 0x3ff) != 0);

    /* decode: every half converts back exactly (and to its own value) */
    for (uint32_t h = 0; h < 65536; h++) {
        const uint16_t hb = (uint16_t)h;
        float f;
        TT_CHECK(tr_dequantize(TR_TYPE_F16, &hb, &f, 1) == TR_OK);
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
            TT_CHECK(isnan(f));
        } else {
            if (f16_bits(f) != hb) {
                TT_CHECK_EQ_INT(f16_bits(f), hb);
                break;
            }
        }
    }
    float sub;
    const uint16_t one_sub = 0x0001, big = 0x7bff;
    tr_dequantize(TR_TYPE_F16, &one_sub, &sub, 1);
    TT_CHECK(sub == 0x1p-24f);
    tr_dequantize(TR_TYPE_F16, &big, &sub, 1);
    TT_CHECK(sub == 65504.0f);
}

TT_TEST(f16_bf16_relative_error_per_element) {
    for (int i = 0; i < 100000; i++) {
        /* normal range of both formats: |x| in [2^-14, 2^15] */
        const float x = (rng_next() & 1 ? -1.0f : 1.0f) * exp2f(-14.0f + 29.0f * rng_uniform());
        float y;
        const uint16_t h = f16_bits(x), b = bf16_bits(x);
        tr_dequantize(TR_TYPE_F16, &h, &y, 1);
        TT_CHECK(fabsf(y - x) <= fabsf(x) * 0x1p-11f);
        tr_dequantize(TR_TYPE_BF16, &b, &y, 1);
        TT_CHECK(fabsf(y - x) <= fabsf(x) * 0x1p-8f);
    }
}

TT_TEST(bf16_special_values) {
    TT_CHECK_EQ_INT(bf16_bits(1.0f), 0x3f80);
    TT_CHECK_EQ_INT(bf16_bits(-0.0f), 0x8000);
    TT_CHECK_EQ_INT(bf16_bits(INFINITY), 0x7f80);
    TT_CHECK_EQ_INT(bf16_bits(-INFINITY), 0xff80);
    TT_CHECK_EQ_INT(bf16_bits(1.0f + 0x1p-8f), 0x3f80);     /* tie to even, down */
    TT_CHECK_EQ_INT(bf16_bits(1.0f + 3 * 0x1p-8f), 0x3f82); /* tie to even, up */
    TT_CHECK_EQ_INT(bf16_bits(0x1.fffffep127f), 0x7f80);    /* largest float rounds to infinity */
    TT_CHECK_EQ_INT(bf16_bits(0x1p-149f), 0x0000);          /* smallest float subnormal: down to zero */
    const uint32_t snan_bits = 0x7f800001u, nnan_bits = 0xffc00000u;
    float snan, nnan;
    memcpy(&snan, &snan_bits, 4);
    memcpy(&nnan, &nnan_bits, 4);
    TT_CHECK_EQ_INT(bf16_bits(snan), 0x7fc0); /* quieted, not rounded into infinity */
    TT_CHECK_EQ_INT(bf16_bits(nnan), 0xffc0);
    for (uint32_t h = 0; h < 65536; h++) { /* decode is exact: re-encoding gives the same bits */
        const uint16_t hb = (uint16_t)h;
        float f;
        tr_dequantize(TR_TYPE_BF16, &hb, &f, 1);
        if (isnan(f)) continue;
        if (bf16_bits(f) != hb) {
            TT_CHECK_EQ_INT(bf16_bits(f), hb);
            break;
        }
    }
}

/* Q8_K: the activation format kernels pair with the k-quants. Its bsums must
 * be the sums of each 16 quants, and the largest element lands on -127. */
TT_TEST(q8_K_block_fields) {
    float x[512];
    tr_block_q8_K b[2];
    fill(x, 512, 256, DATA_GAUSS, 2.0f);
    TT_CHECK(tr_quantize(TR_TYPE_Q8_K, x, b, 512) == TR_OK);
    for (int k = 0; k < 2; k++) {
        int amax_i = 0;
        for (int j = 0; j < 256; j++)
            if (fabsf(x[256 * k + j]) > fabsf(x[256 * k + amax_i])) amax_i = j;
        TT_CHECK_EQ_INT(b[k].qs[amax_i], -127);
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += b[k].qs[16 * g + l];
            TT_CHECK_EQ_INT(b[k].bsums[g], s);
        }
    }
}

/* Non-finite input makes garbage blocks, never undefined behaviour (the
 * sanitizer build checks float-to-int conversions). */
TT_TEST(non_finite_input_is_survived) {
    float x[512], y[512];
    for (int type = 0; type < TR_TYPE_COUNT; type++) {
        if (!tr_type_can_quantize(type)) continue;
        const int64_t n = tr_type_block_size(type) > 1 ? 2 * tr_type_block_size(type) : 512;
        for (int v = 0; v < 3; v++) {
            fill(x, n, n, DATA_GAUSS, 1.0f);
            x[3] = v == 0 ? NAN : v == 1 ? INFINITY : -INFINITY;
            x[n - 1] = 3e38f;
            uint8_t *q = malloc(tr_row_size(type, n));
            TT_CHECK(tr_quantize(type, x, q, n) == TR_OK);
            if (tr_type_can_dequantize(type)) TT_CHECK(tr_dequantize(type, q, y, n) == TR_OK);
            free(q);
        }
    }
}

/* A TQ1_0 block rewritten as TQ2_0 (the repack at load) dequantizes to the
 * same floats, bit for bit, for every byte value (not only the 243 a
 * quantizer writes) and every scale, infinities and NaN included; the
 * scale's bits are carried over unchanged. */
TT_TEST(tq1_0_repacked_as_tq2_0_holds_the_same_values) {
    enum { NB = 64 };
    tr_block_tq1_0 a[NB];
    tr_block_tq2_0 b[NB];
    static float x[NB * 256], y[NB * 256];
    uint32_t r = 12345;
    for (int i = 0; i < NB; i++) {
        uint8_t *p = (uint8_t *)&a[i];
        for (size_t k = 0; k < sizeof a[i]; k++) p[k] = (uint8_t)((r = r * 1664525u + 1013904223u) >> 24);
        if (i < 4) a[i].d = (tr_fp16)(0x7c00 | (i == 1 ? 0x8000 : 0) | (i == 2 ? 0x0200 : 0)); /* +inf, -inf, NaN */
        if (i == 3) a[i].d = 0;
        if (i == 4) memset(a[i].qs, 255, sizeof a[i].qs), memset(a[i].qh, 243, sizeof a[i].qh);
    }
    tr_tq1_0_to_tq2_0(a, b, NB * 256);
    tr_dequantize_row_tq1_0(a, x, NB * 256);
    tr_dequantize_row_tq2_0(b, y, NB * 256);
    TT_CHECK(memcmp(x, y, sizeof x) == 0);
    int scales = 0;
    for (int i = 0; i < NB; i++) scales += a[i].d == b[i].d;
    TT_CHECK_EQ_INT(scales, NB);
}

int main(void) {
    TT_RUN(roundtrip_error_bounds);
    TT_RUN(zero_blocks_stay_zero);
    TT_RUN(ternary_inputs_are_exact);
    TT_RUN(requantizing_dequantized_blocks_is_stable);
    TT_RUN(f16_special_values);
    TT_RUN(f16_bf16_relative_error_per_element);
    TT_RUN(bf16_special_values);
    TT_RUN(q8_K_block_fields);
    TT_RUN(non_finite_input_is_survived);
    TT_RUN(tq1_0_repacked_as_tq2_0_holds_the_same_values);
    return TT_DONE();
}
