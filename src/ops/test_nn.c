/* The forward pass's small ops (nn.c): each against a float64 reference
 * written here from its definition (ops.h), with a tolerance derived from the
 * float roundings the op is allowed; every SIMD variant against its scalar
 * reference, bit for bit. Random inputs of ragged lengths and the edge values
 * each op treats specially. */
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

static const int64_t ragged[] = {1, 2, 3, 7, 8, 9, 31, 33, 64, 100, 255, 640, 1023, 2048 + 5, 16384 + 3};
#define N_RAGGED (sizeof ragged / sizeof ragged[0])

/* An IEEE half's value nearest to v, ties to even (11 significant bits,
 * subnormals on a grid of 2^-24), in double: independent of quant/blocks.h's code. */
static double round_to_half(double v) {
    if (v == 0 || !isfinite(v)) return v;
    int e;
    frexp(v, &e); /* v = m * 2^e, 0.5 <= |m| < 1 */
    int q = e - 11;
    if (q < -24) q = -24;
    return ldexp(nearbyint(ldexp(v, -q)), q);
}

TT_TEST(half_conversion_rounds_to_nearest_even) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tr_fp16_to_fp32((uint16_t)h);
        if (isnan(f)) continue;
        TT_CHECK_EQ_INT(tr_fp32_to_fp16(f), h);
        if (((h >> 10) & 0x1f) != 0x1f) TT_CHECK(f == (float)round_to_half(f));
    }
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        float x = tt_rndf() * ldexpf(1.0f, (int)(tt_rnd() % 40) - 28); /* subnormal halves to 2^12 */
        if (tr_fp16_to_fp32(tr_fp32_to_fp16(x)) != (float)round_to_half(x)) bad++;
    }
    TT_CHECK_EQ_INT(bad, 0);
    TT_CHECK(isinf(tr_fp16_to_fp32(tr_fp32_to_fp16(65520.0f))));
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(65519.0f), 0x7bff);
}

/* y = x / sqrt(mean(x^2) + eps) * w, in double. */
static void rmsnorm_f64(double *y, const float *x, const float *w, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double s = 1.0 / sqrt(ss / (double)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * s * (w ? w[i] : 1.0);
}

TT_TEST(rmsnorm_matches_float64) {
    static const float scales[] = {1.0f, 1e-3f, 300.0f};
    static const float epss[] = {1e-6f, 1e-5f, 0.5f};
    for (size_t li = 0; li < N_RAGGED; li++) {
        const int64_t n = ragged[li];
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        double *want = malloc(sizeof(double) * n);
        for (int rep = 0; rep < 6; rep++) {
            const float sc = scales[rep % 3], eps = epss[(rep + li) % 3];
            for (int64_t i = 0; i < n; i++) x[i] = rndf(sc), w[i] = rndf(2.0f);
            if (rep == 5) x[n / 2] = 40.0f * sc; /* one outlier, as Gemma's activations have */
            const float *wp = rep % 2 ? w : NULL;
            rmsnorm_f64(want, x, wp, n, eps);
            if (rep == 4) {
                memcpy(y, x, sizeof(float) * n);
                tr_rmsnorm(y, y, wp, n, eps); /* in place */
            } else {
                tr_rmsnorm(y, x, wp, n, eps);
            }
            /* float: the square, the scale's sqrt and division, two products */
            int bad = 0;
            for (int64_t i = 0; i < n; i++)
                if (!(fabs(y[i] - want[i]) <= 8 * 0x1p-24 * fabs(want[i]) + 1e-37)) bad++;
            if (bad) fprintf(stderr, "  n=%lld rep=%d eps=%g: %d off\n", (long long)n, rep, eps, bad);
            TT_CHECK_EQ_INT(bad, 0);
        }
        free(x), free(w), free(y), free(want);
    }
    /* all zeros: eps keeps it finite, the result is zero */
    float z[5] = {0}, y[5];
    tr_rmsnorm(y, z, NULL, 5, 1e-6f);
    for (int i = 0; i < 5; i++) TT_CHECK(y[i] == 0.0f);
}

/* RoPE in double from ops.h's definition: the pairs (2i, 2i+1), or (i,
 * i + n_rot/2) for NeoX, rotated by theta_i = pos * freq_scale *
 * base^(-2i/n_rot) / factor_i; dimensions from n_rot on are untouched.
 * err[i] bounds the float computation's angle error for pair i: theta is
 * built by i float multiplications by a powf result (each off by <= 2^-24
 * relative, compounding) and a division and a product more. */
static void rope_f64(double *y, double *err, const float *x, int head_dim, int n_rot, int32_t pos, double base,
                     double scale, const float *ff, bool neox) {
    for (int d = 0; d < head_dim; d++) y[d] = x[d];
    for (int i = 0; i < n_rot / 2; i++) {
        double theta = pos * scale * pow(base, -2.0 * i / n_rot) / (ff ? ff[i] : 1.0);
        int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        y[a] = x[a] * cos(theta) - x[b] * sin(theta);
        y[b] = x[a] * sin(theta) + x[b] * cos(theta);
        err[i] = fabs(theta) * (2.0 * i + 8) * 0x1p-24;
    }
}

TT_TEST(rope_both_styles_with_scaling_match_float64) {
    static const int rots[][2] = {{2, 2}, {6, 6}, {64, 64}, {64, 80}, {96, 128}, {128, 128}, {32, 256}};
    static const int32_t positions[] = {0, 1, 2, 7, 100, 1000, 4095, 32767, 131071};
    static const float bases[] = {10000.0f, 1000000.0f, 500000.0f};
    static const float fscales[] = {1.0f, 0.25f, 0.125f};
    float x[256], y[256], ff[128];
    double want[256], err[128];
    int cases = 0;
    for (size_t r = 0; r < sizeof rots / sizeof rots[0]; r++) {
        const int n_rot = rots[r][0], hd = rots[r][1];
        for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
            for (int v = 0; v < 12; v++) {
                const bool neox = v & 1;
                const float base = bases[(v / 2) % 3], fs = fscales[(v / 6 + pi) % 3];
                const bool factors = (v / 2) % 2; /* rope_freqs as Llama 3.1's: 1 .. 8 */
                for (int i = 0; i < n_rot / 2; i++) ff[i] = 1.0f + 7.0f * (tt_rndf() + 1.0f) / 2.0f;
                for (int d = 0; d < hd; d++) x[d] = rndf(3.0f);
                memcpy(y, x, sizeof(float) * hd);
                tr_rope(y, n_rot, positions[pi], base, fs, factors ? ff : NULL, 1.0f, neox);
                rope_f64(want, err, x, hd, n_rot, positions[pi], base, fs, factors ? ff : NULL, neox);
                int bad = 0;
                for (int i = 0; i < n_rot / 2; i++) {
                    int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
                    /* the angle's error moves the pair along its circle; then
                     * cosf/sinf and the products round (a few ulps) */
                    double tol = (fabs(x[a]) + fabs(x[b])) * (err[i] + 8 * 0x1p-24);
                    if (!(fabs(y[a] - want[a]) <= tol) || !(fabs(y[b] - want[b]) <= tol)) bad++;
                }
                for (int d = n_rot; d < hd; d++) bad += y[d] != x[d];
                if (bad)
                    fprintf(stderr, "  n_rot=%d head=%d pos=%d base=%g scale=%g factors=%d neox=%d: %d off\n", n_rot,
                            hd, positions[pi], base, fs, factors, neox, bad);
                TT_CHECK_EQ_INT(bad, 0);
                cases++;
            }
        }
    }
    TT_CHECK(cases > 700);
    /* the two styles rotate different pairs: on a one-hot input they differ */
    float a[8] = {1, 0, 0, 0, 0, 0, 0, 0}, b[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    tr_rope(a, 8, 3, 10000.0f, 1.0f, NULL, 1.0f, false);
    tr_rope(b, 8, 3, 10000.0f, 1.0f, NULL, 1.0f, true);
    TT_CHECK_NEAR(a[1], sin(3.0), 1e-6);
    TT_CHECK(b[1] == 0.0f);
    TT_CHECK_NEAR(b[4], sin(3.0), 1e-6);
    TT_CHECK(a[4] == 0.0f);
}

TT_TEST(softmax_matches_float64) {
    for (size_t li = 0; li < N_RAGGED; li++) {
        const int64_t n = ragged[li];
        float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        double *want = malloc(sizeof(double) * n);
        for (int rep = 0; rep < 4; rep++) {
            const float spread = rep == 0 ? 1.0f : rep == 1 ? 20.0f : 60.0f;
            for (int64_t i = 0; i < n; i++) x[i] = rndf(spread);
            if (rep == 3 && n > 2)
                for (int64_t i = 0; i < n; i += 3) x[i] = -INFINITY; /* masked entries */
            double mx = -INFINITY, sum = 0;
            for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
            for (int64_t i = 0; i < n; i++) sum += want[i] = exp((double)x[i] - mx);
            memcpy(y, x, sizeof(float) * n);
            tr_softmax(y, n);
            int bad = 0;
            double total = 0;
            for (int64_t i = 0; i < n; i++) {
                want[i] /= sum;
                total += y[i];
                /* x - max rounds (relative 2^-24 of |x - max|, which expf
                 * turns into that much relative error), expf, the
                 * reciprocal of the sum and the product round */
                double d = isinf(x[i]) ? 0 : fabs((double)x[i] - mx);
                if (!(fabs(y[i] - want[i]) <= want[i] * (d + 8) * 0x1p-24 + 1e-45)) bad++;
                if (isinf(x[i]) && y[i] != 0.0f) bad++;
            }
            if (bad) fprintf(stderr, "  n=%lld rep=%d: %d off\n", (long long)n, rep, bad);
            TT_CHECK_EQ_INT(bad, 0);
            TT_CHECK_NEAR(total, 1.0, 1e-5);
        }
        free(x), free(y), free(want);
    }
    float one = 12.5f, eq[4] = {3, 3, 3, 3};
    tr_softmax(&one, 1);
    TT_CHECK(one == 1.0f);
    tr_softmax(eq, 4);
    for (int i = 0; i < 4; i++) TT_CHECK(eq[i] == 0.25f);
}

TT_TEST(swiglu_matches_float64) {
    for (size_t li = 0; li < N_RAGGED; li++) {
        const int64_t n = ragged[li];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        for (int rep = 0; rep < 3; rep++) {
            for (int64_t i = 0; i < n; i++) {
                g[i] = rndf(rep == 0 ? 1.0f : rep == 1 ? 12.0f : 120.0f);
                u[i] = rndf(4.0f);
            }
            if (rep == 1) memcpy(y, g, sizeof(float) * n), tr_swiglu(y, y, u, n); /* in place, as forward.c */
            else tr_swiglu(y, g, u, n);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
                /* expf, the sum, the quotient and the product: a few ulps;
                 * below a gate of -88.7 expf(-gate) overflows and the float
                 * result is 0 where the exact one is under 1e-36 */
                if (!(fabs(y[i] - want) <= 8 * 0x1p-24 * fabs(want) + 1e-35)) {
                    if (bad++ < 3) fprintf(stderr, "  silu(%.9g) * %.9g = %.9g, want %.9g\n", g[i], u[i], y[i], want);
                }
            }
            if (bad) fprintf(stderr, "  n=%lld rep=%d: %d off\n", (long long)n, rep, bad);
            TT_CHECK_EQ_INT(bad, 0);
        }
        free(g), free(u), free(y);
    }
}

/* GELU with the tanh approximation, in double. */
static double gelu_f64(double x) { return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * x * (1.0 + 0.044715 * x * x))); }

/* ops.h: GeGLU evaluates GELU at half precision as ggml does -- of the gate
 * rounded to a half, the result rounded to a half -- and exactly (0 or the
 * gate) outside [-10, 10]. The reference rounds the input with
 * round_to_half above and computes GELU in double; the tolerance is the
 * output's half rounding, plus float tanhf's error near the cancellation of
 * 1 + tanh for negative gates, plus the product's rounding. */
TT_TEST(geglu_matches_float64_at_half_precision) {
    for (size_t li = 0; li < N_RAGGED; li++) {
        const int64_t n = ragged[li];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
        for (int rep = 0; rep < 3; rep++) {
            for (int64_t i = 0; i < n; i++) {
                g[i] = rndf(rep == 0 ? 0.01f : rep == 1 ? 4.0f : 14.0f);
                u[i] = rndf(3.0f);
            }
            tr_geglu(y, g, u, n);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                double want, tol;
                if (g[i] <= -10.0f) {
                    want = 0, tol = 0;
                } else if (g[i] >= 10.0f) {
                    want = (double)g[i] * u[i], tol = 0x1p-24 * fabs(want);
                } else {
                    double h = round_to_half(g[i]), gl = gelu_f64(h);
                    want = gl * u[i];
                    tol = ((fabs(gl) * 0x1p-11 + 0x1p-25) + fabs(h) * 0x1p-22) * fabs(u[i]) + 0x1p-23 * fabs(want);
                }
                if (!(fabs(y[i] - want) <= tol + 1e-37)) bad++;
            }
            if (bad) fprintf(stderr, "  n=%lld rep=%d: %d off\n", (long long)n, rep, bad);
            TT_CHECK_EQ_INT(bad, 0);
        }
        free(g), free(u), free(y);
    }
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

/* LayerNorm against float64: the mean, the variance and the products each
 * round in float (a few ulps of the normalised value), weight and bias too. */
TT_TEST(layernorm_matches_float64) {
    for (size_t r = 0; r < N_RAGGED; r++) {
        const int64_t n = ragged[r];
        float *x = malloc(sizeof(float) * n), *w = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
        float *y = malloc(sizeof(float) * n);
        for (int rep = 0; rep < 4; rep++) {
            const float offset = rep == 3 ? 50.0f : rndf(2.0f); /* a large mean: the deviations still exact-ish */
            for (int64_t i = 0; i < n; i++) {
                x[i] = offset + rndf(rep == 2 ? 100.0f : 1.0f);
                w[i] = 1.0f + rndf(0.5f);
                b[i] = rndf(0.5f);
            }
            const bool wb = rep != 1;
            tr_layernorm(y, x, wb ? w : NULL, wb ? b : NULL, n, 1e-5f);
            double mean = 0, var = 0;
            for (int64_t i = 0; i < n; i++) mean += x[i];
            mean /= (double)n;
            for (int64_t i = 0; i < n; i++) var += ((double)x[i] - mean) * ((double)x[i] - mean);
            var /= (double)n;
            const double inv = 1.0 / sqrt(var + 1e-5);
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                double z = ((double)x[i] - mean) * inv, want = wb ? z * w[i] + b[i] : z;
                /* the float mean's rounding, relative to the spread, plus ulps */
                double tol = (fabs(mean) * 0x1p-22 * inv + fabs(z) * 0x1p-20) * (wb ? fabs(w[i]) : 1.0) + 0x1p-20;
                if (!(fabs(y[i] - want) <= tol)) bad++;
            }
            if (bad) fprintf(stderr, "  n=%lld rep=%d: %d off\n", (long long)n, rep, bad);
            TT_CHECK_EQ_INT(bad, 0);
            /* in place */
            memcpy(y, x, sizeof(float) * n);
            float *z = malloc(sizeof(float) * n);
            tr_layernorm(z, x, wb ? w : NULL, wb ? b : NULL, n, 1e-5f);
            tr_layernorm(y, y, wb ? w : NULL, wb ? b : NULL, n, 1e-5f);
            TT_CHECK_EQ_INT(bits_differ(y, z, n), 0);
            free(z);
        }
        free(x), free(w), free(b), free(y);
    }
    /* a constant row normalises to zeros (then the bias) */
    float c[9] = {3, 3, 3, 3, 3, 3, 3, 3, 3}, bb[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, o[9];
    tr_layernorm(o, c, NULL, bb, 9, 1e-5f);
    for (int i = 0; i < 9; i++) TT_CHECK(o[i] == bb[i]);
}

/* GELU alone: the GeGLU of ops.h with up = 1, in every variant, bit for bit. */
TT_TEST(gelu_equals_geglu_with_unit_up_in_every_variant) {
    const int64_t lens[] = {1, 7, 8, 9, 31, 64, 100, 2048 + 5};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int64_t n = lens[li];
        float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n);
        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
        for (int64_t i = 0; i < n; i++) {
            g[i] = tt_rnd() % 8 == 0 ? (tt_rnd() % 2 ? 10.0f : -10.0f) : rndf(tt_rnd() % 2 ? 12.0f : 0.01f);
            u[i] = 1.0f;
        }
        tr_geglu_ref(want, g, u, n);
        tr_gelu_ref(got, g, n);
        TT_CHECK_EQ_INT(bits_differ(got, want, n), 0);
        for (int simd = 0; simd <= 1; simd++) {
            tr_gelu_variant(got, g, n, simd);
            TT_CHECK_EQ_INT(bits_differ(got, want, n), 0);
            memcpy(got, g, sizeof(float) * n);
            tr_gelu_variant(got, got, n, simd);
            TT_CHECK_EQ_INT(bits_differ(got, want, n), 0);
        }
        free(g), free(u), free(want), free(got);
    }
    /* against the tanh formula in double, at half precision: within a half's ulp */
    for (int i = 0; i < 1000; i++) {
        float x = rndf(9.0f), y;
        tr_gelu(&y, &x, 1);
        double xh = round_to_half(x), want = gelu_f64(xh);
        /* as the GeGLU test: the half's rounding, and tanhf's near its -1 */
        TT_CHECK(fabs(y - want) <= fabs(want) * 0x1p-11 + 0x1p-25 + fabs(xh) * 0x1p-22);
    }
}

/* mscale multiplies the rotation: |rope(x)| = mscale |x| on the rotated dims,
 * and the result is mscale times the unscaled rotation's (to an ulp). */
TT_TEST(rope_mscale_scales_the_rotated_dims_only) {
    float x[64], a[64], b[64];
    for (int rep = 0; rep < 50; rep++) {
        for (int d = 0; d < 64; d++) x[d] = rndf(2.0f);
        memcpy(a, x, sizeof x), memcpy(b, x, sizeof x);
        const float ms = 1.0f + tt_rndf() * 0.2f + 0.2f;
        tr_rope(a, 48, rep * 37, 10000.0f, 1.0f, NULL, 1.0f, true);
        tr_rope(b, 48, rep * 37, 10000.0f, 1.0f, NULL, ms, true);
        int bad = 0;
        for (int d = 0; d < 48; d++)
            if (!(fabs(b[d] - ms * a[d]) <= 4 * 0x1p-24 * (fabs(x[d]) + fabs(x[(d + 24) % 48]) + 1) * ms)) bad++;
        for (int d = 48; d < 64; d++) bad += b[d] != x[d];
        TT_CHECK_EQ_INT(bad, 0);
    }
}

/* The Walsh-Hadamard rotation against the n x n matrix in float64, written
 * from its definition (H[i][j] = (-1)^popcount(i & j) / sqrt(n)); each
 * output of the float butterflies is x's elements times 1/sqrt(n), each
 * rounded once, then summed over log2(n) passes of one rounding each, so
 * it is within (log2(n) + 1) * 2^-24 * sum|x_j| / sqrt(n) (plus a margin)
 * of the exact value. The AVX2 passes equal the scalar ones bit for bit;
 * applied twice it returns x (H is its own inverse) to that precision. */
/* tr_argmax against the plain loop's definition (an independent scan in
 * double here), on rows of every length up to 70 and Gemma's 262144, with
 * ties (the first wins), -0 beside +0, infinities and NaNs (never chosen;
 * a NaN first element keeps index 0, as the loop's > keeps it). */
TT_TEST(argmax_is_the_first_of_the_largest) {
    const tr_cpu_features *f = tr_cpu_get();
    TT_SIMD("avx2 argmax", f->avx2, "lacks avx2");
    float *x = malloc(sizeof(float) * 262144);
    int bad = 0, cases = 0;
    for (int rep = 0; rep < 400; rep++) {
        const int64_t n = rep < 380 ? 1 + rep % 70 : 262144;
        const int kind = rep % 6; /* 0 random, 1 coarse ties, 2 zeros of both signs, 3 infinities, 4 a NaN, 5 NaN first */
        for (int64_t i = 0; i < n; i++) {
            x[i] = kind == 1 ? (float)(tt_rnd() % 4) : kind == 2 ? ((tt_rnd() & 1) ? 0.0f : -0.0f) - (float)(tt_rnd() % 2)
                                                                  : rndf(10.0f);
            if (kind == 3 && tt_rnd() % 5 == 0) x[i] = (tt_rnd() & 1) ? INFINITY : -INFINITY;
        }
        if (kind == 4) x[tt_rnd() % n] = NAN;
        if (kind == 5) x[0] = NAN;
        int64_t want = 0; /* the definition (comparisons with a NaN are false) */
        for (int64_t i = 1; i < n; i++)
            if ((double)x[i] > (double)x[want]) want = i;
        bad += tr_argmax_variant(x, n, false) != want;
        bad += tr_argmax_variant(x, n, true) != want;
        cases++;
    }
    TT_CHECK_EQ_INT(bad, 0);
    TT_CHECK(cases == 400);
    free(x);
}

TT_TEST(hadamard_matches_the_float64_matrix) {
    const tr_cpu_features *f = tr_cpu_get();
    TT_SIMD("avx2 Walsh-Hadamard", f->avx2, "lacks avx2");
    for (int n = 1; n <= 1024; n *= 2) {
        const int rows = 3;
        float *x = malloc(sizeof(float) * n * rows), *want = malloc(sizeof(float) * n * rows);
        float *got = malloc(sizeof(float) * n * rows);
        for (int i = 0; i < n * rows; i++) x[i] = rndf(tt_rnd() % 8 == 0 ? 100.0f : 1.0f);
        memcpy(want, x, sizeof(float) * n * rows);
        tr_hadamard_variant(want, rows, n, false);
        int lg = 0;
        while ((1 << lg) < n) lg++;
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * n;
            double l1 = 0;
            for (int j = 0; j < n; j++) l1 += fabs(xr[j]);
            const double tol = (lg + 1) * ldexp(1.0, -24) * l1 / sqrt(n) * 1.01 + 1e-30;
            for (int i = 0; i < n; i++) {
                double e = 0;
                for (int j = 0; j < n; j++) e += (__builtin_popcount((unsigned)(i & j)) & 1 ? -1.0 : 1.0) * xr[j];
                e /= sqrt((double)n);
                if (fabs(want[(size_t)r * n + i] - e) > tol) bad++;
            }
        }
        TT_CHECK_EQ_INT(bad, 0);
        memcpy(got, x, sizeof(float) * n * rows);
        tr_hadamard_variant(got, rows, n, true);
        TT_CHECK_EQ_INT(bits_differ(got, want, (int64_t)n * rows), 0);
        tr_hadamard(got, rows, n); /* twice: x again */
        for (int r = 0; r < rows; r++) {
            double l1 = 0;
            for (int j = 0; j < n; j++) l1 += fabs(x[(size_t)r * n + j]);
            for (int i = 0; i < n; i++)
                if (fabs(got[(size_t)r * n + i] - x[(size_t)r * n + i]) > 2 * (lg + 1) * ldexp(1.0, -24) * l1 * 1.01 + 1e-30)
                    bad++;
        }
        TT_CHECK_EQ_INT(bad, 0);
        free(x), free(want), free(got);
    }
}

int main(void) {
    TT_RUN(half_conversion_rounds_to_nearest_even);
    TT_RUN(rmsnorm_matches_float64);
    TT_RUN(rope_both_styles_with_scaling_match_float64);
    TT_RUN(softmax_matches_float64);
    TT_RUN(swiglu_matches_float64);
    TT_RUN(geglu_matches_float64_at_half_precision);
    TT_RUN(geglu_table_and_simd_equal_the_direct_formula);
    TT_RUN(layernorm_matches_float64);
    TT_RUN(gelu_equals_geglu_with_unit_up_in_every_variant);
    TT_RUN(rope_mscale_scales_the_rotated_dims_only);
    TT_RUN(hadamard_matches_the_float64_matrix);
    TT_RUN(argmax_is_the_first_of_the_largest);
    return TT_DONE();
}
