/* The forward pass's small ops (nn.c): every SIMD variant against its
 * scalar reference, bit for bit, on random inputs of ragged lengths and on
 * the edge values each one treats specially. */
#include "ops/cpu.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "tt.h"

/* uniform in [-a, a) */
static float rndf(float a) { return tt_rndf() * a; }

static int bits_differ(const float *a, const float *b, int64_t n) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, 4)) bad++;
    return bad;
}

TT_TEST(geglu_table_and_simd_equal_the_direct_formula) {
    /* simd = 1 below runs the AVX2 loop only where the CPU has it */
    const tr_cpu_features *f = tr_cpu_get();
    TT_SIMD("avx2 GeGLU", f->avx2 && f->f16c, "lacks avx2 or f16c");
    static const float edges[] = {-10.0f, 10.0f, -9.999f, 9.999f, -10.001f, 10.001f, 0.0f, -0.0f, 1e-8f, -1e-8f,
                                  6.1e-5f, 65504.0f, -65504.0f, 1e6f, -1e6f, 3.0f, -3.0f, 0.5f};
    const int64_t lens[] = {1, 7, 8, 9, 31, 64, 100, 2048 + 5};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t n = lens[li];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n);
        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
        for (int64_t i = 0; i < n; i++) {
            g[i] = tt_rnd() % 4 == 0 ? edges[tt_rnd() % (sizeof edges / sizeof edges[0])] : rndf(tt_rnd() % 2 ? 12.0f : 0.01f);
            u[i] = rndf(3.0f);
        }
        tr_geglu_ref(want, g, u, n);
        for (int simd = 0; simd <= 1; simd++) {
            tr_geglu_variant(got, g, u, n, simd);
            TT_CHECK_EQ_INT(bits_differ(got, want, n), 0);
            /* in place, as the forward pass calls it (out == gate) */
            memcpy(got, g, sizeof(float) * n);
            tr_geglu_variant(got, got, u, n, simd);
            TT_CHECK_EQ_INT(bits_differ(got, want, n), 0);
        }
        free(g), free(u), free(want), free(got);
    }
    /* every half as the gate: the whole table */
    float *g = malloc(sizeof(float) * 65536), *u = malloc(sizeof(float) * 65536);
    float *want = malloc(sizeof(float) * 65536), *got = malloc(sizeof(float) * 65536);
    int n = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float x = tr_fp16_to_fp32((uint16_t)h);
        if (isnan(x)) continue;
        g[n] = x;
        u[n++] = 1.0f;
    }
    tr_geglu_ref(want, g, u, n);
    for (int simd = 0; simd <= 1; simd++) {
        tr_geglu_variant(got, g, u, n, simd);
        TT_CHECK_EQ_INT(bits_differ(got, want, n), 0);
    }
    free(g), free(u), free(want), free(got);
}

int main(void) {
    TT_RUN(geglu_table_and_simd_equal_the_direct_formula);
    return TT_DONE();
}
