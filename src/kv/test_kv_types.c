/* The KV cache's entry formats (-ctk / -ctv): f16, q8_0, q4_0 and Trinity's
 * ternary tq2_32. Round trips of head-sized rows stay within a bound per type
 * (derived below from each format's step); TQ2_32 is the least-squares
 * ternary block (checked against every support by brute force), exact on its
 * grid, zero on zero blocks, and survives non-finite input. (Q8_0 and Q4_0
 * are ggml's quantizers byte for byte, checked against the gguf package in
 * src/quant/test_quant_reference.py; the cache stores what they write.) */
#include "tt.h"

#include "quant/blocks.h"
#include "quant/quant.h"
#include "trinity.h"

static float gauss(void) {
    float u = (tt_rndf() + 1.0f) * 0.5f + 1e-7f, v = tt_rndf();
    return sqrtf(-2.0f * logf(u)) * cosf(3.14159265f * v);
}

/* RMSE / RMS of a round trip of n elements. */
static double rel_rmse(int type, const float *x, int n) {
    uint8_t q[4096];
    float y[1024];
    TT_CHECK(tr_quantize(type, x, q, n) == TR_OK);
    TT_CHECK(tr_dequantize(type, q, y, n) == TR_OK);
    double se = 0, ss = 0;
    for (int i = 0; i < n; i++) se += ((double)x[i] - y[i]) * ((double)x[i] - y[i]), ss += (double)x[i] * x[i];
    return sqrt(se / ss);
}

TT_TEST(round_trip_error_per_type) {
    /* Gaussian heads of 256 (a model's K and V rows look like this, with a
     * few larger channels: every 32nd element is 4x). With the block's
     * largest |x| = M: Q8_0's step is M/127 and Q4_0's M/8, an error of
     * step/sqrt(12) per element; the larger channel makes M about 4 x 2.5
     * sigma, so about 0.8 % and 12 % of the RMS; F16 keeps 11 bits (0.03 %);
     * the best ternary block leaves about half the RMS. Measured over 200
     * heads (mean / worst): F16 0.0002 / 0.0003, Q8_0 0.0076 / 0.0104, Q4_0
     * 0.121 / 0.163, TQ2_32 0.50 / 0.57. Bounds: a third above the worst. */
    static const struct { int type; double bound; } rows[] = {
        {TR_TYPE_F16, 0.0004}, {TR_TYPE_Q8_0, 0.014}, {TR_TYPE_Q4_0, 0.22}, {TR_TYPE_TQ2_32, 0.75}};
    float x[256];
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        double worst = 0, mean = 0;
        for (int rep = 0; rep < 200; rep++) {
            for (int i = 0; i < 256; i++) x[i] = gauss() * (i % 32 == 5 ? 4.0f : 1.0f) * 0.3f;
            const double e = rel_rmse(rows[r].type, x, 256);
            mean += e / 200;
            if (e > worst) worst = e;
        }
        printf("     %-6s head of 256: relative RMSE mean %.4f worst %.4f (bound %.4f)\n", tr_type_name(rows[r].type),
               mean, worst, rows[r].bound);
        TT_CHECK(worst <= rows[r].bound);
    }
}

/* TQ2_32 picks, among all ternary blocks, the one of least squared error:
 * for every support size k the best is the k largest magnitudes with d their
 * mean (then rounded to a half); check against all k by brute force. */
TT_TEST(tq2_32_is_the_least_squares_ternary_block) {
    float x[32], y[32];
    tr_block_tq2_32 b;
    for (int rep = 0; rep < 500; rep++) {
        for (int i = 0; i < 32; i++) x[i] = rep % 3 ? gauss() : tt_rndf() * (rep % 7 + 1);
        tr_quantize_row_tq2_32(x, &b, 32);
        tr_dequantize_row_tq2_32(&b, y, 32);
        double got = 0;
        for (int i = 0; i < 32; i++) got += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        /* brute force: sort magnitudes, every k */
        double mag[32];
        for (int i = 0; i < 32; i++) mag[i] = fabs(x[i]);
        for (int i = 1; i < 32; i++)
            for (int j = i; j > 0 && mag[j - 1] < mag[j]; j--) {
                double t = mag[j];
                mag[j] = mag[j - 1];
                mag[j - 1] = t;
            }
        double best = INFINITY, ss = 0, sum = 0;
        for (int i = 0; i < 32; i++) ss += mag[i] * mag[i];
        for (int k = 1; k <= 32; k++) {
            sum += mag[k - 1];
            const double err = ss - sum * sum / k;
            if (err < best) best = err;
        }
        /* the stored scale is a half: allow its rounding (relative 2^-11 of d over the support) */
        TT_CHECK(got <= best * (1 + 1e-3) + 1e-6 * ss);
    }
}

TT_TEST(tq2_32_layout_grid_and_zeros) {
    /* element j's code (q + 1) is in bits 2*(j/8) of qs[j%8] */
    float x[32], y[32];
    for (int j = 0; j < 32; j++) x[j] = (j % 3 == 0) ? 0.5f : (j % 3 == 1 ? -0.5f : 0.0f);
    tr_block_tq2_32 b;
    tr_quantize_row_tq2_32(x, &b, 32);
    TT_CHECK(tr_fp16_to_fp32(b.d) == 0.5f);
    for (int j = 0; j < 32; j++) {
        const int code = (b.qs[j % 8] >> (2 * (j / 8))) & 3;
        TT_CHECK_EQ_INT(code, j % 3 == 0 ? 2 : (j % 3 == 1 ? 0 : 1));
    }
    tr_dequantize_row_tq2_32(&b, y, 32);
    for (int j = 0; j < 32; j++) TT_CHECK(y[j] == x[j]); /* on the grid: exact */
    /* zero blocks stay zero, and requantizing a dequantized block gives it back */
    for (int j = 0; j < 32; j++) x[j] = 0.0f;
    tr_quantize_row_tq2_32(x, &b, 32);
    tr_dequantize_row_tq2_32(&b, y, 32);
    for (int j = 0; j < 32; j++) TT_CHECK(y[j] == 0.0f);
    for (int rep = 0; rep < 100; rep++) {
        for (int j = 0; j < 32; j++) x[j] = gauss();
        tr_block_tq2_32 b1, b2;
        tr_quantize_row_tq2_32(x, &b1, 32);
        tr_dequantize_row_tq2_32(&b1, y, 32);
        tr_quantize_row_tq2_32(y, &b2, 32);
        TT_CHECK(memcmp(&b1, &b2, sizeof b1) == 0);
    }
    /* the type is Trinity's own: in the table, never a GGUF tensor type */
    TT_CHECK(tr_type_block_size(TR_TYPE_TQ2_32) == 32 && tr_type_block_bytes(TR_TYPE_TQ2_32) == 10);
    TT_CHECK(strcmp(tr_type_name(TR_TYPE_TQ2_32), "TQ2_32") == 0);
    TT_CHECK(TR_TYPE_TQ2_32 >= TR_TYPE_COUNT);
}

TT_TEST(non_finite_input_is_survived) {
    float x[64], y[64];
    uint8_t q[64];
    for (int v = 0; v < 3; v++) {
        for (int j = 0; j < 64; j++) x[j] = gauss();
        x[3] = v == 0 ? NAN : v == 1 ? INFINITY : -INFINITY;
        x[40] = 3e38f;
        TT_CHECK(tr_quantize(TR_TYPE_TQ2_32, x, q, 64) == TR_OK);
        TT_CHECK(tr_dequantize(TR_TYPE_TQ2_32, q, y, 64) == TR_OK);
    }
}

int main(void) {
    tt_seed(0x6b765f7479706573ull);
    TT_RUN(round_trip_error_per_type);
    TT_RUN(tq2_32_is_the_least_squares_ternary_block);
    TT_RUN(tq2_32_layout_grid_and_zeros);
    TT_RUN(non_finite_input_is_survived);
    return TT_DONE();
}
