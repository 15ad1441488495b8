/* Matmul kernels against their scalar references, and the references
 * against float arithmetic on dequantized weights.
 *
 * Weights are random bytes with sane scale fields (every bit pattern of the
 * quants is a valid weight), so no quantizer is needed; ragged sizes: rows
 * not a multiple of any tile, 1..17 tokens, 1..3 threads. */
#include "ops/cpu.h"
#include "ops/kernels.h"
#include "ops/ops.h"
#include "quant/quant.h"
#include "tt.h"

#include <stdint.h>

/* Byte offsets of the fp16 scale fields inside a block, -1 terminated. */
static const int *scale_fields(int type) {
    static const int q40[] = {0, -1}, q41[] = {0, 2, -1}, q2k[] = {80, 82, -1}, q3k[] = {108, -1},
                     q6k[] = {208, -1}, tq1[] = {52, -1}, tq2[] = {64, -1}, none[] = {-1};
    switch (type) {
    case TR_TYPE_Q4_0:
    case TR_TYPE_Q5_0:
    case TR_TYPE_Q8_0: return q40;
    case TR_TYPE_Q4_1:
    case TR_TYPE_Q5_1:
    case TR_TYPE_Q4_K:
    case TR_TYPE_Q5_K: return q41;
    case TR_TYPE_Q2_K: return q2k;
    case TR_TYPE_Q3_K: return q3k;
    case TR_TYPE_Q6_K: return q6k;
    case TR_TYPE_TQ1_0: return tq1;
    case TR_TYPE_TQ2_0: return tq2;
    default: return none;
    }
}

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* rows x cols of `type` with random content and scales around 1/64. */
static uint8_t *random_weights(int type, int64_t rows, int64_t cols) {
    size_t rs = tr_row_size(type, cols), total = rs * (size_t)rows;
    uint8_t *w = malloc(total);
    if (type == TR_TYPE_F32) {
        for (size_t i = 0; i < total / 4; i++) ((float *)w)[i] = tt_rndf();
    } else if (type == TR_TYPE_F16) {
        for (size_t i = 0; i < total / 2; i++) put16(w + 2 * i, tr_fp32_to_fp16(tt_rndf()));
    } else if (type == TR_TYPE_BF16) {
        for (size_t i = 0; i < total / 2; i++) put16(w + 2 * i, tr_fp32_to_bf16(tt_rndf()));
    } else {
        for (size_t i = 0; i < total; i++) w[i] = (uint8_t)tt_rnd();
        size_t bb = tr_type_block_bytes(type);
        const int *f = scale_fields(type);
        for (size_t b = 0; b < total / bb; b++)
            for (int k = 0; f[k] >= 0; k++)
                put16(w + b * bb + f[k], tr_fp32_to_fp16((0.5f + 0.5f * (tt_rndf() + 1)) / 64.0f));
    }
    return w;
}

static float *random_floats(int64_t n) {
    float *x = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) x[i] = tt_rndf();
    return x;
}

/* Why the AVX2 kernels cannot run here (called when they cannot). */
static const char *avx2_missing(const tr_cpu_features *f) {
    static char why[96];
    snprintf(why, sizeof why, "lacks%s%s%s%s", f->avx2 ? "" : " avx2", f->fma ? "" : " fma", f->f16c ? "" : " f16c",
             getenv("TRINITY_CPU") ? " (TRINITY_CPU caps the features)" : "");
    return why;
}

/* Why the AVX-512 kernels cannot run here. tests/test_kernels_emu.py runs
 * them on any machine under an emulator. */
static const char *avx512_missing(const tr_cpu_features *f) {
    static char why[160];
    snprintf(why, sizeof why, "lacks%s%s%s%s%s%s%s (tests/test_kernels_emu.py runs them emulated)",
             tr_isa_usable(TR_ISA_AVX2) ? "" : " avx2/fma/f16c", f->avx512f ? "" : " avx512f",
             f->avx512bw ? "" : " avx512bw", f->avx512vl ? "" : " avx512vl", f->avx512dq ? "" : " avx512dq",
             f->avx512vnni ? "" : " avx512vnni", getenv("TRINITY_CPU") ? " (TRINITY_CPU caps the features)" : "");
    return why;
}

/* Why the AVX-VNNI kernels cannot run here (tests/test_kernels_emu.py runs
 * them emulated). */
static const char *avxvnni_missing(const tr_cpu_features *f) {
    static char why[128];
    snprintf(why, sizeof why, "lacks%s%s (tests/test_kernels_emu.py runs them emulated)%s",
             tr_isa_usable(TR_ISA_AVX2) ? "" : " avx2/fma/f16c", f->avxvnni ? "" : " avxvnni",
             getenv("TRINITY_CPU") ? " (TRINITY_CPU caps the features)" : "");
    return why;
}

/* Why the AMX kernels cannot run here (no emulator runs them). */
static const char *amx_missing(const tr_cpu_features *f) {
    static char why[160];
    snprintf(why, sizeof why, "lacks%s%s%s", tr_isa_usable(TR_ISA_AVX512) ? "" : " the avx512 tier",
             f->amx ? "" : " amx-tile/amx-int8 (or the OS's tile state)",
             getenv("TRINITY_CPU") ? " (TRINITY_CPU caps the features)" : "");
    return why;
}

/* The SIMD ISAs the tests below try, each with the reason it cannot run. */
static const struct {
    tr_isa isa;
    const char *name;
    const char *(*missing)(const tr_cpu_features *);
} simd_isas[] = {{TR_ISA_AVX2, "avx2", avx2_missing},
                 {TR_ISA_AVXVNNI, "avxvnni", avxvnni_missing},
                 {TR_ISA_AVX512, "avx512", avx512_missing},
                 {TR_ISA_AMX, "amx", amx_missing}};
#define N_SIMD (int)(sizeof simd_isas / sizeof simd_isas[0])

static const int types[] = {TR_TYPE_F32,  TR_TYPE_F16,  TR_TYPE_BF16, TR_TYPE_Q8_0, TR_TYPE_Q4_0,
                            TR_TYPE_Q4_1, TR_TYPE_Q5_0, TR_TYPE_Q5_1, TR_TYPE_Q2_K, TR_TYPE_Q3_K,
                            TR_TYPE_Q4_K, TR_TYPE_Q5_K, TR_TYPE_Q6_K, TR_TYPE_TQ1_0, TR_TYPE_TQ2_0};
#define N_TYPES (int)(sizeof types / sizeof types[0])

/* nt tokens of x (cols floats each) converted to the kernel's activations,
 * as tr_matmul converts them: as bytes a token (malloc'd). */
static char *converted(const tr_kernel *k, const float *x, int64_t cols, int64_t nt) {
    const size_t as = tr_act_row_size(k->act, cols);
    char *a = malloc(as * (size_t)nt);
    for (int64_t t = 0; t < nt; t++) tr_act_convert(k->act, x + t * cols, a + (size_t)t * as, cols);
    return a;
}

/* Reference results through the kernel's scalar reference: the activations
 * converted exactly as tr_matmul does, then ref(). */
static void kernel_ref(int type, const uint8_t *w, int64_t rows, int64_t cols, const float *x, int64_t nt,
                       float *y) {
    const tr_kernel *k = tr_kernel_get(type);
    size_t as = tr_act_row_size(k->act, cols);
    char *a = converted(k, x, cols, nt);
    k->ref(cols, w, tr_row_size(type, cols), (int)rows, a, as, (int)nt, y, (size_t)rows);
    free(a);
}

/* Float sums in a different order differ by rounding: compare against the
 * scale of the terms, not the (possibly cancelling) result. */
static double term_scale(int type, const uint8_t *w, int64_t rows, int64_t cols) {
    (void)w, (void)rows;
    /* k-quants multiply by sub-block scales of up to 63 (127 for Q6_K) */
    double per = tr_type_block_size(type) == 256 ? 64.0 : 1.0;
    return per * sqrt((double)cols) + 1.0;
}

TT_TEST(variants_match_scalar_reference) {
    const tr_cpu_features *f = tr_cpu_get();
    printf("     cpu: %s\n", tr_cpu_describe());
    TT_PROPERTY("cpu", tr_cpu_describe());
    int tested = 0;
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = types[ti];
        const tr_kernel *k = tr_kernel_get(type);
        TT_CHECK(k != NULL);
        if (!k) continue;
        struct { tr_gemm_fn fn; bool ok; const char *name; const char *why; } vs[N_SIMD];
        for (int v = 0; v < N_SIMD; v++) {
            vs[v].fn = tr_kernel_variant(k, simd_isas[v].isa);
            vs[v].ok = tr_isa_usable(simd_isas[v].isa);
            vs[v].name = simd_isas[v].name;
            vs[v].why = vs[v].ok ? NULL : simd_isas[v].missing(f);
        }
        for (int v = 0; v < N_SIMD; v++) {
            if (!vs[v].fn) continue; /* no such variant for this type */
            char path[64];
            snprintf(path, sizeof path, "%s %s matmul", vs[v].name, tr_type_name(type));
            TT_SIMD(path, vs[v].ok, vs[v].why);
            if (!vs[v].ok) continue;
            tested++;
            int64_t bl = k->blck < 32 ? 32 : k->blck;
            for (int rep = 0; rep < 6; rep++) {
                int64_t cols = bl * (1 + tt_rnd() % 9), rows = 1 + tt_rnd() % (rep < 4 ? 37 : 150);
                /* up to 17 tokens, and past one AMX call (TR_AMX_TOKENS = 128 tokens, 64 rows) */
                int nt = rep < 4 ? 1 + (int)(tt_rnd() % 17) : 18 + (int)(tt_rnd() % 130);
                uint8_t *w = random_weights(type, rows, cols);
                float *x = random_floats(cols * nt);
                size_t as = tr_act_row_size(k->act, cols), ws = tr_row_size(type, cols);
                char *a = converted(k, x, cols, nt);
                float *y0 = malloc(sizeof(float) * (size_t)(rows * nt)), *y1 = malloc(sizeof(float) * (size_t)(rows * nt));
                k->ref(cols, w, ws, (int)rows, a, as, nt, y0, (size_t)rows);
                vs[v].fn(cols, w, ws, (int)rows, a, as, nt, y1, (size_t)rows);
                double tol = 1e-5 * term_scale(type, w, rows, cols);
                int bad = 0;
                for (int64_t i = 0; i < rows * nt; i++)
                    if (!(fabs(y0[i] - y1[i]) <= tol + 1e-5 * fabs(y0[i]))) bad++;
                if (bad) {
                    fprintf(stderr, "  %s %s rows=%lld cols=%lld nt=%d: %d mismatches (first %g vs %g)\n",
                            tr_type_name(type), vs[v].name, (long long)rows, (long long)cols, nt, bad, y0[0], y1[0]);
                }
                TT_CHECK_EQ_INT(bad, 0);
                free(w), free(x), free(a), free(y0), free(y1);
            }
        }
    }
    printf("     %d SIMD variants tested on this CPU\n", tested);
    if (!tested) TT_SKIP("no SIMD variant runs on this CPU (%s)", tr_cpu_describe());
}

TT_TEST(matmul_matches_reference_any_threads_and_tokens) {
    tr_pool *pools[3] = {tr_pool_new(1), tr_pool_new(2), tr_pool_new(3)};
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = types[ti];
        const tr_kernel *k = tr_kernel_get(type);
        int64_t bl = k->blck < 32 ? 32 : k->blck;
        for (int nt = 1; nt <= 17; nt += (nt < 5 ? 1 : 4)) {
            int64_t cols = bl * (1 + tt_rnd() % 4), rows = 1 + tt_rnd() % 75;
            uint8_t *w = random_weights(type, rows, cols);
            float *x = random_floats(cols * nt);
            float *ref = malloc(sizeof(float) * (size_t)(rows * nt)), *y = malloc(sizeof(float) * (size_t)(rows * nt));
            kernel_ref(type, w, rows, cols, x, nt, ref);
            double tol = 1e-5 * term_scale(type, w, rows, cols);
            for (int p = 0; p <= 3; p++) {
                tr_matmul(p ? pools[p - 1] : NULL, type, w, rows, cols, x, nt, y);
                int bad = 0;
                for (int64_t i = 0; i < rows * nt; i++)
                    if (!(fabs(ref[i] - y[i]) <= tol + 1e-5 * fabs(ref[i]))) bad++;
                if (bad)
                    fprintf(stderr, "  %s threads=%d rows=%lld nt=%d: %d bad\n", tr_type_name(type), p,
                            (long long)rows, nt, bad);
                TT_CHECK_EQ_INT(bad, 0);
            }
            free(w), free(x), free(ref), free(y);
        }
    }
    for (int p = 0; p < 3; p++) tr_pool_free(pools[p]);
}

/* The quantized-activation product stays within the error that int8
 * activations introduce of the exact float product (dequantized weights). */
/* Rows repacked into the _X16 layouts (src/model/repack.c; Q4_K, Q4_0,
 * Q5_0, Q8_0): every row's blocks come back byte for byte, and every
 * variant of the X16 kernel that this CPU runs (AVX2, AVX-VNNI, AVX-512;
 * run the way tr_matmul runs it: chunks of whole groups, tiles of tokens),
 * and tr_matmul itself on 1-3 threads, give the
 * source format's scalar reference's bits on the file's rows, for 1..19
 * tokens (so a token's result does not depend on its batch), and for one
 * token over 5-16 groups in calls of one to seventeen groups (read as up to
 * four streams side by side, each several groups in turn).
 * A row read back as floats (tr_x16_dequantize_row) is the source row's. */
TT_TEST(x16_repack_matches_source_reference) {
    const tr_cpu_features *f = tr_cpu_get();
    static const int x16s[] = {TR_TYPE_Q4_K_X16, TR_TYPE_Q4_0_X16, TR_TYPE_Q5_0_X16, TR_TYPE_Q8_0_X16};
    tr_pool *pools[3] = {tr_pool_new(1), tr_pool_new(2), tr_pool_new(3)};
    for (int xi = 0; xi < 4; xi++) {
        const int xt = x16s[xi], st = tr_x16_source(xt);
        const tr_kernel *ks = tr_kernel_get(st), *kx = tr_kernel_get(xt);
        TT_CHECK(ks && kx && kx->act == ks->act && kx->group == 16);
        if (!ks || !kx) continue;
        tr_gemm_fn fns[1 + N_SIMD] = {kx->ref};
        for (int i = 0; i < N_SIMD; i++) {
            if (!tr_kernel_variant(kx, simd_isas[i].isa)) continue;
            char path[64];
            snprintf(path, sizeof path, "%s %s matmul", simd_isas[i].name, tr_type_name(xt));
            const bool can = tr_isa_usable(simd_isas[i].isa);
            TT_SIMD(path, can, can ? NULL : simd_isas[i].missing(f));
            if (can) fns[1 + i] = tr_kernel_variant(kx, simd_isas[i].isa);
        }
        const int64_t bl = ks->blck;
        const size_t bb = tr_type_block_bytes(st);
        for (int rep = 0; rep < 8; rep++) {
            const int64_t cols = bl * (1 + tt_rnd() % (bl == 256 ? 9 : 40)), rows = 16 * (rep < 2 ? 5 + tt_rnd() % 12 : 1 + tt_rnd() % (rep < 6 ? 6 : 40));
            /* 1..19 tokens (every tier's tiles, the AMX kernels' last partial group), then the AMX
             * kernels' groups of sixteen and more than one call (nt > TR_AMX_TOKENS) */
            static const int big[] = {16, 37, 150};
            const int nt = rep == 3 || rep == 5 || rep == 7 ? big[(rep - 3) / 2]
                           : rep < 2                          ? 1 /* one token: several groups side by side */
                                                              : 1 + (int)(tt_rnd() % 19);
            const size_t rs = tr_row_size(st, cols), rx = tr_row_size(xt, cols);
            TT_CHECK_EQ_INT((long long)rx, st == TR_TYPE_Q4_K ? (long long)(cols / 256 * 148) : (long long)rs);
            uint8_t *w = random_weights(st, rows, cols);
            if (rep == 7) { /* extremes: every quant at its largest magnitude (Q4_K: scales and mins 63 too) */
                const size_t keep = st == TR_TYPE_Q4_K ? 4 : 2;
                for (size_t b = 0; b < rs * (size_t)rows / bb; b++)
                    memset(w + b * bb + keep, st == TR_TYPE_Q8_0 ? 0x80 : 0xff, bb - keep);
            }
            uint8_t *x16 = aligned_alloc(64, (rx * (size_t)rows + 63) & ~(size_t)63);
            for (int64_t g = 0; g < rows / 16; g++) tr_x16_pack(xt, w + (size_t)g * 16 * rs, rs, x16 + (size_t)g * 16 * rx, cols);
            int moved = 0;
            const size_t gb = 16 * tr_row_size(xt, bl);
            for (int64_t r = 0; r < rows; r++)
                for (int64_t b = 0; b < cols / bl; b++) {
                    uint8_t blk[256] __attribute__((aligned(16)));
                    tr_x16_get(xt, x16 + (size_t)(r / 16) * 16 * rx + (size_t)b * gb, (int)(r % 16), blk);
                    moved += memcmp(blk, w + (size_t)r * rs + (size_t)b * bb, bb) != 0;
                }
            TT_CHECK_EQ_INT(moved, 0);
            /* a row read back as floats (the token embeddings' lookup): the source row's */
            float *e0 = malloc(sizeof(float) * (size_t)cols), *e1 = malloc(sizeof(float) * (size_t)cols);
            int rows_differ = 0;
            for (int64_t r = 0; r < rows; r++) {
                TT_CHECK(tr_dequantize(st, w + (size_t)r * rs, e0, cols) == TR_OK);
                memset(e1, 0xff, sizeof(float) * (size_t)cols);
                tr_x16_dequantize_row(xt, x16 + (size_t)(r / 16) * 16 * rx, (int)(r % 16), e1, cols);
                rows_differ += memcmp(e0, e1, sizeof(float) * (size_t)cols) != 0;
            }
            TT_CHECK_EQ_INT(rows_differ, 0);
            free(e0);
            free(e1);
            float *x = random_floats(cols * nt);
            if (rep == 7) /* and activations at +-127 */
                for (int64_t i = 0; i < cols * nt; i++) x[i] = (i & 1) ? -1.0f : 1.0f;
            size_t as = tr_act_row_size(ks->act, cols);
            char *a = malloc(as * (size_t)nt);
            for (int t = 0; t < nt; t++) tr_act_convert(ks->act, x + (int64_t)t * cols, a + t * as, cols);
            float *y0 = malloc(sizeof(float) * (size_t)(rows * nt)), *y1 = malloc(sizeof(float) * (size_t)(rows * nt));
            ks->ref(cols, w, rs, (int)rows, a, as, nt, y0, (size_t)rows);
            for (int v = 0; v < 1 + N_SIMD; v++) {
                if (!fns[v]) continue;
                /* groups a call: 1-4 side by side, more (one token: each stream several groups in
                 * turn, and the groups left over), all of them */
                static const int chunks[] = {1, 2, 3, 4, 7, 9, 17};
                for (int c = 0; c < 7; c++) {
                    memset(y1, 0, sizeof(float) * (size_t)(rows * nt));
                    tr_matmul_chunks(fns[v], 16 * chunks[c], x16, rx, rows, cols, a, as, nt, y1);
                    TT_CHECK(memcmp(y0, y1, sizeof(float) * (size_t)(rows * nt)) == 0);
                }
            }
            for (int p = 0; p < 3; p++) {
                memset(y1, 0, sizeof(float) * (size_t)(rows * nt));
                tr_matmul(pools[p], xt, x16, rows, cols, x, nt, y1);
                TT_CHECK(memcmp(y0, y1, sizeof(float) * (size_t)(rows * nt)) == 0);
            }
            free(w), free(x16), free(x), free(a), free(y0), free(y1);
        }
    }
    for (int p = 0; p < 3; p++) tr_pool_free(pools[p]);
}

TT_TEST(matmul_close_to_float_on_dequantized_weights) {
    tr_pool *pool = tr_pool_new(2);
    int checked = 0;
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = types[ti];
        if (!tr_type_can_dequantize(type)) {
            TT_SKIP_PART(tr_type_name(type), "no dequantizer for this type in this build");
            continue;
        }
        checked++;
        int64_t cols = 512, rows = 33;
        int nt = 5;
        uint8_t *w = random_weights(type, rows, cols);
        float *x = random_floats(cols * nt);
        float *ref = malloc(sizeof(float) * (size_t)(rows * nt)), *y = malloc(sizeof(float) * (size_t)(rows * nt));
        tr_matmul_ref(type, w, rows, cols, x, nt, ref);
        tr_matmul(pool, type, w, rows, cols, x, nt, y);
        /* Error bound: each activation is off by at most half a quantization
         * step (amax/254 of its block); sum |w| * step. */
        float *row = malloc(sizeof(float) * (size_t)cols);
        for (int64_t r = 0; r < rows; r++) {
            tr_dequantize(type, w + (size_t)r * tr_row_size(type, cols), row, cols);
            double wabs = 0;
            for (int64_t c = 0; c < cols; c++) wabs += fabs(row[c]);
            double step = type == TR_TYPE_F32 ? 1e-6 : type == TR_TYPE_BF16 ? 1.0 / 256 : type == TR_TYPE_F16 ? 1.0 / 2048 : 1.0 / 254;
            for (int t = 0; t < nt; t++) TT_CHECK_NEAR(y[t * rows + r], ref[t * rows + r], wabs * step + 1e-4);
        }
        free(row), free(w), free(x), free(ref), free(y);
    }
    printf("     %d types checked against dequantized float\n", checked);
    tr_pool_free(pool);
}

TT_TEST(half_conversions_round_to_nearest_even) {
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(1.0f), 0x3c00);
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(-2.0f), 0xc000);
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(65504.0f), 0x7bff);
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(65520.0f), 0x7c00);
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(1.0f + 0x1p-11f), 0x3c00); /* tie to even */
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(1.0f + 3 * 0x1p-11f), 0x3c02);
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(0x1p-24f), 0x0001);
    TT_CHECK_EQ_INT(tr_fp32_to_fp16(0x1p-14f), 0x0400);
    for (uint32_t h = 0; h < 0x7c00; h++) TT_CHECK_EQ_INT(tr_fp32_to_fp16(tr_fp16_to_fp32((uint16_t)h)), h);
    TT_CHECK_EQ_INT(tr_fp32_to_bf16(1.0f), 0x3f80);
    TT_CHECK_EQ_INT(tr_fp32_to_bf16(1.0f + 0x1p-8f), 0x3f80); /* tie to even */
    TT_CHECK(tr_bf16_to_fp32(0x3f81) == 1.0f + 0x1p-7f);
}

/* Legacy kernels add maddubs pair sums in 16 bits before widening: the
 * largest weights times full-scale activations of one sign (and alternating
 * signs, and all-equal rows) must still match the reference exactly up to
 * float rounding. Every quant byte is 0xff (top nibbles, all fifth bits set;
 * Q8_0: -1) or 0x80 (Q8_0: -128), activations all +1 or all -1 per block. */
TT_TEST(legacy_extreme_values_match_reference) {
    const tr_cpu_features *f = tr_cpu_get();
    static const int lt[] = {TR_TYPE_Q8_0, TR_TYPE_Q4_0, TR_TYPE_Q4_1, TR_TYPE_Q5_0, TR_TYPE_Q5_1};
    if (!tr_isa_usable(TR_ISA_AVX2)) {
        TT_SKIP("not run on this CPU: %s", avx2_missing(f));
        return;
    }
    for (int ti = 0; ti < 5 * N_SIMD; ti++) {
        int type = lt[ti % 5], v = ti / 5;
        const tr_kernel *k = tr_kernel_get(type);
        tr_gemm_fn fn = tr_kernel_variant(k, simd_isas[v].isa);
        if (!fn) continue;
        char path[64];
        snprintf(path, sizeof path, "%s %s matmul extremes", simd_isas[v].name, tr_type_name(type));
        bool ok = tr_isa_usable(simd_isas[v].isa);
        TT_SIMD(path, ok, ok ? NULL : simd_isas[v].missing(f));
        if (!ok) continue;
        for (int fillv = 0; fillv < 2; fillv++) {
            int64_t cols = 32 * 7, rows = 11;
            int nt = fillv ? 20 : 6; /* 20: the AMX kernels' groups of 16 */
            size_t ws = tr_row_size(type, cols), as = tr_act_row_size(k->act, cols);
            uint8_t *w = malloc(ws * (size_t)rows);
            memset(w, fillv ? 0x80 : 0xff, ws * (size_t)rows);
            const int *sf = scale_fields(type);
            size_t bb = tr_type_block_bytes(type);
            for (size_t b = 0; b < ws * (size_t)rows / bb; b++)
                for (int q = 0; sf[q] >= 0; q++) put16(w + b * bb + sf[q], tr_fp32_to_fp16(1.0f / 64));
            float *x = malloc(sizeof(float) * (size_t)(cols * nt));
            for (int64_t i = 0; i < cols * nt; i++) x[i] = ((i / 32 + i / cols) % 2) ? -1.0f : 1.0f;
            char *a = converted(k, x, cols, nt);
            float *y0 = malloc(sizeof(float) * (size_t)(rows * nt)), *y1 = malloc(sizeof(float) * (size_t)(rows * nt));
            k->ref(cols, w, ws, (int)rows, a, as, nt, y0, (size_t)rows);
            fn(cols, w, ws, (int)rows, a, as, nt, y1, (size_t)rows);
            for (int64_t i = 0; i < rows * nt; i++) TT_CHECK_NEAR(y1[i], y0[i], 1e-4 * (1 + fabs(y0[i])));
            free(w), free(x), free(a), free(y0), free(y1);
        }
    }
}

/* The AVX2 tr_q8k conversion writes the same bytes as the scalar reference:
 * random rows, a zero block, the largest magnitude present with both signs
 * (the first one sets the sign), and halves that round to even. */
TT_TEST(q8k_conversion_avx2_matches_reference) {
    const tr_cpu_features *f = tr_cpu_get();
    tr_act_fn q8k_avx2 = tr_act_variant(TR_ACT_Q8K, TR_ISA_AVX2), q8kp_avx2 = tr_act_variant(TR_ACT_Q8KP, TR_ISA_AVX2);
    if (!q8k_avx2 || !q8kp_avx2) {
        TT_SKIP("this build has no AVX2 Q8_K conversion");
        return;
    }
    if (!(f->avx2 && f->fma && f->f16c)) {
        TT_SKIP("not run on this CPU: %s", avx2_missing(f));
        return;
    }
    TT_SIMD("avx2 Q8_K activation conversion", true, NULL);
    TT_SIMD("avx2 Q8_KP activation conversion", true, NULL);
    int64_t n = 256 * 8;
    float *x = malloc(sizeof(float) * (size_t)n);
    tr_q8k *a = malloc(sizeof(tr_q8k) * 8), *b = malloc(sizeof(tr_q8k) * 8);
    tr_q8kp *pa = malloc(sizeof(tr_q8kp) * 8), *pb = malloc(sizeof(tr_q8kp) * 8);
    for (int rep = 0; rep < 50; rep++) {
        for (int64_t i = 0; i < n; i++) x[i] = tt_rndf() * (float)(1 + rep);
        for (int i = 0; i < 256; i++) x[256 + i] = 0.0f;             /* block 1: zeros */
        x[512 + 7] = -3.0f * (float)(1 + rep), x[512 + 100] = 3.0f * (float)(1 + rep); /* block 2: -max first */
        x[768 + 3] = 2.0f, x[768 + 200] = -2.0f;                      /* block 3: +max first */
        for (int i = 0; i < 256; i++) if (i != 3 && i != 200) x[768 + i] = 2.0f * (float)((i % 255) - 127) / 127.0f + (i & 1 ? 1.0f / 127 : 0); /* near-halves */
        memset(a, 0, sizeof(tr_q8k) * 8), memset(b, 0, sizeof(tr_q8k) * 8);
        memset(pa, 0x55, sizeof(tr_q8kp) * 8), memset(pb, 0xaa, sizeof(tr_q8kp) * 8);
        tr_act_q8k_ref(x, a, n), q8k_avx2(x, b, n);
        int bad = 0;
        for (int k = 0; k < 8; k++) {
            bad += memcmp(a[k].qs, b[k].qs, 256) != 0;
            bad += memcmp(a[k].bsums, b[k].bsums, sizeof a[k].bsums) != 0;
            bad += memcmp(a[k].bsums32, b[k].bsums32, sizeof a[k].bsums32) != 0;
            bad += memcmp(&a[k].d, &b[k].d, sizeof(float)) != 0;
        }
        TT_CHECK_EQ_INT(bad, 0);
        /* Q4_K's permuted block: the same bytes from both conversions, the
         * natural quants at tr_q8kp_pos4/2, the same sums and scale */
        tr_act_q8kp_ref(x, pa, n), q8kp_avx2(x, pb, n);
        TT_CHECK(memcmp(pa, pb, sizeof(tr_q8kp) * 8) == 0);
        int moved = 0;
        for (int k = 0; k < 8; k++) {
            for (int e = 0; e < 256; e++)
                moved += pa[k].qs4[tr_q8kp_pos4(e)] != a[k].qs[e], moved += pa[k].qs[e] != a[k].qs[e];
            moved += memcmp(pa[k].bsums, a[k].bsums, sizeof a[k].bsums) != 0;
            moved += memcmp(pa[k].bsums32, a[k].bsums32, sizeof a[k].bsums32) != 0;
            moved += memcmp(&pa[k].d, &a[k].d, sizeof(float)) != 0;
        }
        TT_CHECK_EQ_INT(moved, 0);
    }
    free(x), free(a), free(b), free(pa), free(pb);
}

/* The AVX2 tr_q8a conversion writes the same bytes as the scalar reference:
 * random rows, a zero block, exact halves after scaling (127 and -127 at the
 * block maximum make id = 1, so k + 0.5 must round away from zero), values
 * just below a half, and negative maxima. */
TT_TEST(q8a_conversion_avx2_matches_reference) {
    const tr_cpu_features *f = tr_cpu_get();
    tr_act_fn q8_avx2 = tr_act_variant(TR_ACT_Q8, TR_ISA_AVX2);
    if (!q8_avx2) {
        TT_SKIP("this build has no AVX2 Q8 conversion");
        return;
    }
    if (!(f->avx2 && f->fma && f->f16c)) {
        TT_SKIP("not run on this CPU: %s", avx2_missing(f));
        return;
    }
    TT_SIMD("avx2 Q8 activation conversion", true, NULL);
    int64_t n = 32 * 8;
    float *x = malloc(sizeof(float) * (size_t)n);
    tr_q8a *a = malloc(sizeof(tr_q8a) * 8), *b = malloc(sizeof(tr_q8a) * 8);
    for (int rep = 0; rep < 200; rep++) {
        for (int64_t i = 0; i < n; i++) x[i] = tt_rndf() * (float)(1 + rep);
        for (int i = 0; i < 32; i++) x[32 + i] = 0.0f;                       /* block 1: zeros */
        x[64] = 127.0f;                                                        /* block 2: id = 1 */
        for (int i = 1; i < 32; i++) x[64 + i] = (float)((i * 37) % 253 - 126) + 0.5f * (float)(i & 1);
        x[96] = -127.0f;                                                       /* block 3: negative max */
        for (int i = 1; i < 32; i++) x[96 + i] = (float)(i - 16) + ((i & 1) ? 0.49999997f : -0.5f);
        memset(a, 0, sizeof(tr_q8a) * 8), memset(b, 0, sizeof(tr_q8a) * 8);
        tr_act_q8_ref(x, a, n);
        q8_avx2(x, b, n);
        int bad = 0;
        for (int k = 0; k < 8; k++) {
            bad += memcmp(a[k].qs, b[k].qs, 32) != 0;
            bad += a[k].sum != b[k].sum;
            bad += memcmp(&a[k].d, &b[k].d, sizeof(float)) != 0;
        }
        TT_CHECK_EQ_INT(bad, 0);
    }
    free(x), free(a), free(b);
}

/* The k-quant kernels add int16 partial sums before widening (see
 * matmul_avx2_kquant.c): with every quant at its largest value and every
 * activation at +-127 those sums reach their bounds, where an overflow would
 * show as a large error. Scales stay sane, quants are all-ones bytes. */
TT_TEST(kquant_extreme_values_match_reference) {
    const tr_cpu_features *f = tr_cpu_get();
    static const int kt[] = {TR_TYPE_Q2_K, TR_TYPE_Q3_K, TR_TYPE_Q4_K, TR_TYPE_Q5_K, TR_TYPE_Q6_K, TR_TYPE_TQ1_0,
                             TR_TYPE_TQ2_0};
    if (!tr_isa_usable(TR_ISA_AVX2)) {
        TT_SKIP("not run on this CPU: %s", avx2_missing(f));
        return;
    }
    int64_t cols = 512;
    const int nkt = (int)(sizeof kt / sizeof kt[0]);
    for (int ti = 0; ti < nkt * N_SIMD; ti++) {
        int type = kt[ti % nkt], v = ti / nkt;
        const tr_kernel *k = tr_kernel_get(type);
        tr_gemm_fn fn = tr_kernel_variant(k, simd_isas[v].isa);
        if (!fn) continue;
        char path[64];
        snprintf(path, sizeof path, "%s %s matmul extremes", simd_isas[v].name, tr_type_name(type));
        bool ok = tr_isa_usable(simd_isas[v].isa);
        TT_SIMD(path, ok, ok ? NULL : simd_isas[v].missing(f));
        if (!ok) continue;
        for (int pat = 0; pat < 3; pat++) {
            int rows = 3;
            uint8_t *w = random_weights(type, rows, cols);
            size_t ws = tr_row_size(type, cols), bb = tr_type_block_bytes(type);
            /* every byte 0xff except the fp16 scales (sub-block scales then hit their maxima too) */
            for (size_t i = 0; i < ws * (size_t)rows; i++) {
                size_t off = i % bb;
                bool scale = false;
                for (const int *sf = scale_fields(type); *sf >= 0; sf++)
                    if (off == (size_t)*sf || off == (size_t)*sf + 1) scale = true;
                if (!scale) w[i] = 0xff;
            }
            int nt = 20; /* 1 and 4 tokens (tiles), 20 (AMX groups of 16) */
            float *x = malloc(sizeof(float) * (size_t)(cols * nt));
            for (int64_t i = 0; i < cols * nt; i++) x[i] = pat == 0 ? 1.0f : pat == 1 ? -1.0f : (i & 1 ? 1.0f : -1.0f);
            size_t as = tr_act_row_size(k->act, cols);
            char *a = converted(k, x, cols, nt);
            float y0[3 * 20], y1[3 * 20];
            static const int ntts[] = {1, 4, 20};
            for (int ni = 0; ni < 3; ni++) {
                int ntt = ntts[ni];
                k->ref(cols, w, ws, rows, a, as, ntt, y0, (size_t)rows);
                fn(cols, w, ws, rows, a, as, ntt, y1, (size_t)rows);
                int bad = 0;
                for (int i = 0; i < rows * ntt; i++)
                    if (!(fabs(y0[i] - y1[i]) <= 1e-5 * (fabs(y0[i]) + term_scale(type, w, rows, cols)))) bad++;
                if (bad) fprintf(stderr, "  %s pattern %d nt=%d: %g vs %g\n", tr_type_name(type), pat, ntt, y0[0], y1[0]);
                TT_CHECK_EQ_INT(bad, 0);
            }
            free(w), free(x), free(a);
        }
    }
}

/* A token's result does not depend on the batch it came in: the server
 * decodes many sequences in one batch, and a sequence's text at temperature
 * 0 must not change with how many others share its steps. So every tile
 * width of a kernel sums in the same order, and tr_matmul of a batch equals,
 * bit for bit, tr_matmul of each of its tokens alone (any thread count). */
TT_TEST(batch_results_equal_single_token_results) {
    tr_pool *pools[2] = {tr_pool_new(1), tr_pool_new(2)};
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = types[ti];
        const tr_kernel *k = tr_kernel_get(type);
        int64_t bl = k->blck < 32 ? 32 : k->blck;
        /* 2..9 tokens (the tiles of every tier, the AMX tier's vector
         * kernel and its first tile calls), then the AMX kernels' groups of
         * 16 and more than one call (nt > TR_AMX_TOKENS) */
        static const int nts[] = {2, 3, 4, 5, 6, 7, 8, 9, 16, 21, 70, 150};
        for (size_t ni = 0; ni < sizeof nts / sizeof nts[0]; ni++) {
            int nt = nts[ni];
            int64_t cols = bl * (1 + tt_rnd() % 4), rows = 1 + tt_rnd() % (nt > 9 ? 90 : 45);
            uint8_t *w = random_weights(type, rows, cols);
            float *x = random_floats(cols * nt);
            float *yb = malloc(sizeof(float) * (size_t)(rows * nt)), *y1 = malloc(sizeof(float) * (size_t)rows);
            for (int p = 0; p < 2; p++) {
                tr_matmul(pools[p], type, w, rows, cols, x, nt, yb);
                int bad = 0;
                for (int t = 0; t < nt; t++) {
                    tr_matmul(pools[p], type, w, rows, cols, x + (int64_t)t * cols, 1, y1);
                    if (memcmp(y1, yb + (int64_t)t * rows, sizeof(float) * (size_t)rows)) bad++;
                }
                if (bad)
                    fprintf(stderr, "  %s threads=%d rows=%lld cols=%lld nt=%d: %d tokens differ alone\n",
                            tr_type_name(type), p + 1, (long long)rows, (long long)cols, nt, bad);
                TT_CHECK_EQ_INT(bad, 0);
            }
            free(w), free(x), free(yb), free(y1);
        }
    }
    for (int p = 0; p < 2; p++) tr_pool_free(pools[p]);
}

/* tr_matmul's loop with one variant: chunks of `chunk` rows, each against
 * the tokens in calls of tile_t (tr_kernel_call_tokens). */
static void variant_chunks(tr_gemm_fn fn, int tile_t, int64_t chunk, const uint8_t *w, size_t ws, int64_t rows,
                           int64_t cols, const char *a, size_t as, int64_t nt, float *y) {
    for (int64_t r0 = 0; r0 < rows; r0 += chunk)
        for (int64_t t0 = 0; t0 < nt; t0 += tile_t)
            fn(cols, w + (size_t)r0 * ws, ws, (int)(rows - r0 < chunk ? rows - r0 : chunk), a + (size_t)t0 * as, as,
               (int)(nt - t0 < tile_t ? nt - t0 : tile_t), y + t0 * rows + r0, (size_t)rows);
}

/* Every SIMD variant this CPU runs, not only the one tr_matmul picks here,
 * is batch-invariant by itself: over ragged rows, a batch of tokens cut as
 * tr_matmul cuts it for 1, 2 or 3 threads gives, bit for bit, what each
 * token gives alone (the one-token streams, kernels.h's TR_GEMM_STREAMS,
 * against the tiles). On a CPU whose best tier is that variant, tr_matmul
 * runs exactly this. */
TT_TEST(every_variant_batch_invariant) {
    int tested = 0;
    for (int ti = 0; ti < N_TYPES; ti++) {
        int type = types[ti];
        const tr_kernel *k = tr_kernel_get(type);
        int64_t bl = k->blck < 32 ? 32 : k->blck;
        for (int v = 0; v < N_SIMD; v++) {
            tr_gemm_fn fn = tr_kernel_variant(k, simd_isas[v].isa);
            if (!fn || !tr_isa_usable(simd_isas[v].isa)) continue;
            const int tile_t = tr_kernel_call_tokens(k, fn);
            static const int nts[] = {2, 3, 5, 9, 17};
            for (size_t ni = 0; ni < sizeof nts / sizeof nts[0]; ni++) {
                const int nt = nts[ni];
                int64_t cols = bl * (1 + tt_rnd() % 4), rows = 1 + tt_rnd() % 75;
                uint8_t *w = random_weights(type, rows, cols);
                float *x = random_floats(cols * nt);
                size_t as = tr_act_row_size(k->act, cols), ws = tr_row_size(type, cols);
                char *a = converted(k, x, cols, nt);
                float *alone = malloc(sizeof(float) * (size_t)(rows * nt)), *yb = malloc(sizeof(float) * (size_t)(rows * nt));
                for (int t = 0; t < nt; t++)
                    variant_chunks(fn, tile_t, tr_matmul_chunk_rows(rows, 1, 1), w, ws, rows, cols, a + t * as, as, 1,
                                   alone + (int64_t)t * rows);
                int bad = 0;
                for (int nth = 1; nth <= 3; nth++) {
                    variant_chunks(fn, tile_t, tr_matmul_chunk_rows(rows, nt, nth), w, ws, rows, cols, a, as, nt, yb);
                    float *y1 = malloc(sizeof(float) * (size_t)rows);
                    for (int t = 0; t < nt; t++) { /* one token alone, cut as for nth threads */
                        variant_chunks(fn, tile_t, tr_matmul_chunk_rows(rows, 1, nth), w, ws, rows, cols, a + t * as,
                                       as, 1, y1);
                        if (memcmp(y1, alone + (int64_t)t * rows, sizeof(float) * (size_t)rows)) bad++;
                    }
                    free(y1);
                    if (memcmp(yb, alone, sizeof(float) * (size_t)(rows * nt))) bad++;
                }
                if (bad)
                    fprintf(stderr, "  %s %s rows=%lld cols=%lld nt=%d: %d differ from the tokens alone\n",
                            tr_type_name(type), simd_isas[v].name, (long long)rows, (long long)cols, nt, bad);
                TT_CHECK_EQ_INT(bad, 0);
                tested++;
                free(w), free(x), free(a), free(alone), free(yb);
            }
        }
    }
    printf("     %d variant x batch cases\n", tested);
    if (!tested) TT_SKIP("no SIMD variant runs on this CPU (%s)", tr_cpu_describe());
}

int main(void) {
    TT_RUN(half_conversions_round_to_nearest_even);
    TT_RUN(q8k_conversion_avx2_matches_reference);
    TT_RUN(q8a_conversion_avx2_matches_reference);
    TT_RUN(variants_match_scalar_reference);
    TT_RUN(legacy_extreme_values_match_reference);
    TT_RUN(kquant_extreme_values_match_reference);
    TT_RUN(matmul_matches_reference_any_threads_and_tokens);
    TT_RUN(x16_repack_matches_source_reference);
    TT_RUN(matmul_close_to_float_on_dequantized_weights);
    TT_RUN(batch_results_equal_single_token_results);
    TT_RUN(every_variant_batch_invariant);
    return TT_DONE();
}
