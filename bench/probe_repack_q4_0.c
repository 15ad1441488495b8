/* Probe (not a test, not used by the engine): would a Q4_0 layout repacked
 * at load into groups of eight interleaved rows make prompt tiles faster?
 * Build: cmake --build build --target probe_repack_q4_0; run: build/probe_repack_q4_0
 *
 * Against the engine's own AVX2 Q4_0 kernel (this file includes its source,
 * so "current" is exactly what tr_matmul runs, through tr_matmul's own
 * chunk-and-tile loop, tr_matmul_chunks), a prototype kernel on a
 * layout built here: per eight rows and block, the eight fp16 scales, then
 * four 32-byte vectors, vector m holding bytes 4m..4m+3 of each row's nibbles
 * (its low nibbles are elements 4m..4m+3 of the eight rows, its high ones
 * 16+4m..16+4m+3). Each lane of a 256-bit register then accumulates one row:
 * per token and block, eight vpmaddubsw against the token's bytes 4v..4v+3
 * broadcast, int16 adds (at most 8 * 2 * 15 * 128 = 30720, no overflow), one
 * vpmaddwd, and the current kernel's float steps in the same order (even and
 * odd blocks in two sums, added at the end), so every output is the same bits
 * as the current kernel's, which the probe checks before it times anything.
 * Real activations: tr_act_convert of random floats. Prints ns per weight
 * block and token (best of many runs) for both, L2-sized and larger. */
/* this copy's tables, not the library's */
#define tr_avx2_legacy_gemm_rows probe_avx2_legacy_gemm_rows
#define tr_avx2_legacy_act_rows probe_avx2_legacy_act_rows
#include "ops/matmul_avx2_legacy.c"

#ifdef TR_HAVE_AVX2_KERNELS
#include "ops/cpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

enum { R8_BYTES = 16 + 4 * 32 }; /* one block of eight rows */

static void repack8(const uint8_t *w, size_t ws, int nr, int64_t n, uint8_t *out) {
    const int64_t nb = n / 32;
    for (int g = 0; g < nr / 8; g++)
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *o = out + ((size_t)g * (size_t)nb + (size_t)b) * R8_BYTES;
            for (int r = 0; r < 8; r++) memcpy(o + 2 * r, w + (size_t)(8 * g + r) * ws + (size_t)b * 18, 2);
            for (int m = 0; m < 4; m++)
                for (int r = 0; r < 8; r++)
                    memcpy(o + 16 + 32 * m + 4 * r, w + (size_t)(8 * g + r) * ws + (size_t)b * 18 + 2 + 4 * m, 4);
        }
}

TILE void r8_block(const uint8_t *o, int64_t b, const char *a, size_t as, int NT, __m256 *acc) {
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    __m256i W[8];
    _Pragma("GCC unroll 4") for (int m = 0; m < 4; m++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(o + 16 + 32 * m));
        W[m] = _mm256_and_si256(v, m4);
        W[4 + m] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)o));
    FOR_T(j) {
        const tr_q8a *x = ACT(j, b);
        int32_t xq[8];
        memcpy(xq, x->qs, 32);
        __m256i s = _mm256_maddubs_epi16(W[0], _mm256_set1_epi32(xq[0]));
        _Pragma("GCC unroll 8") for (int v = 1; v < 8; v++) s =
            _mm256_add_epi16(s, _mm256_maddubs_epi16(W[v], _mm256_set1_epi32(xq[v])));
        __m256i isum = _mm256_sub_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1)), _mm256_set1_epi32(8 * x->sum));
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(x->d)), acc[j]);
    }
}

TILE void r8_tile(int64_t n, const uint8_t *o, const char *a, size_t as, int NT, __m256 *out) {
    __m256 acc[4], acc2[4];
    FOR_T(j) acc[j] = acc2[j] = _mm256_setzero_ps();
    const int64_t nb = n / 32;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        r8_block(o + (size_t)b * R8_BYTES, b, a, as, NT, acc);
        r8_block(o + (size_t)(b + 1) * R8_BYTES, b + 1, a, as, NT, acc2);
    }
    for (; b < nb; b++) r8_block(o + (size_t)b * R8_BYTES, b, a, as, NT, acc);
    FOR_T(j) out[j] = _mm256_add_ps(acc[j], acc2[j]);
}

/* Same order as tr_matmul's prompt path: 64-row chunks, four tokens a call. */
TGT static void run_r8(int64_t n, const uint8_t *rp, int nr, const char *a, size_t as, int nt, float *y) {
    const size_t group = (size_t)(n / 32) * R8_BYTES;
    for (int c = 0; c < nr; c += 64)
        for (int t = 0; t + 4 <= nt; t += 4)
            for (int g = c / 8; g < (c + 64) / 8 && g < nr / 8; g++) {
                __m256 out[4];
                r8_tile(n, rp + (size_t)g * group, a + (size_t)t * as, as, 4, out);
                for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + (size_t)(t + k) * (size_t)nr + 8 * g, out[k]);
            }
}

/* The engine's Q4_0 kernel as tr_matmul runs it on one thread (its chunk for
 * two threads, tiles of four tokens). */
static void run_current(int64_t n, const uint8_t *w, size_t ws, int nr, const char *a, size_t as, int nt, float *y) {
    tr_matmul_chunks(gemm_q4_0, tr_matmul_chunk_rows(nr, nt, 2), w, ws, nr, n, a, as, nt, y);
}

static int probe(int rows, int cols, int nt, int reps) {
    const size_t ws = (size_t)cols / 32 * 18, as = (size_t)cols / 32 * sizeof(tr_q8a);
    uint8_t *w = malloc(ws * (size_t)rows), *rp = malloc((size_t)rows / 8 * (size_t)cols / 32 * R8_BYTES);
    char *a = malloc(as * (size_t)nt);
    float *x = malloc(sizeof(float) * (size_t)cols), *y0 = malloc(sizeof(float) * (size_t)rows * (size_t)nt),
          *y1 = malloc(sizeof(float) * (size_t)rows * (size_t)nt);
    if (!w || !rp || !a || !x || !y0 || !y1) return 1;
    srand(1);
    for (size_t i = 0; i < ws * (size_t)rows; i++) w[i] = (uint8_t)rand();
    for (int r = 0; r < rows; r++)
        for (int b = 0; b < cols / 32; b++) {
            tr_fp16 h = tr_fp32_to_fp16((float)(rand() % 1000) / 100000.0f + 0.001f);
            memcpy(w + (size_t)r * ws + (size_t)b * 18, &h, 2);
        }
    for (int t = 0; t < nt; t++) {
        for (int i = 0; i < cols; i++) x[i] = (float)(rand() % 2001) / 1000.0f - 1.0f;
        tr_act_convert(TR_ACT_Q8, x, a + (size_t)t * as, cols);
    }
    repack8(w, ws, rows, cols, rp);
    run_current(cols, w, ws, rows, a, as, nt, y0);
    run_r8(cols, rp, rows, a, as, nt, y1);
    int differ = 0;
    for (size_t i = 0; i < (size_t)rows * (size_t)nt; i++) differ += memcmp(&y0[i], &y1[i], sizeof(float)) != 0;
    printf("%4d rows x %d cols, %3d tokens: %s", rows, cols, nt, differ ? "OUTPUTS DIFFER" : "same bits");
    if (!differ) {
        double bc = 1e9, br = 1e9;
        for (int rep = 0; rep < reps; rep++) { /* interleaved, best of each */
            double t0 = now();
            run_current(cols, w, ws, rows, a, as, nt, y0);
            double t1 = now();
            run_r8(cols, rp, rows, a, as, nt, y1);
            double t2 = now();
            if (t1 - t0 < bc) bc = t1 - t0;
            if (t2 - t1 < br) br = t2 - t1;
        }
        const double pairs = (double)rows * cols / 32 * nt;
        printf("; current %.3f ns per block and token, repacked %.3f (%.2fx)", bc / pairs * 1e9, br / pairs * 1e9,
               bc / br);
    }
    printf("\n");
    free(w), free(rp), free(a), free(x), free(y0), free(y1);
    return differ != 0;
}

int main(void) {
    const tr_cpu_features *f = tr_cpu_get();
    if (!f->avx2 || !f->fma || !f->f16c) {
        printf("probe_repack_q4_0: this CPU has no AVX2\n");
        return 0;
    }
    int bad = probe(64, 2048, 16, 2000);
    bad |= probe(512, 2048, 128, 40);
    bad |= probe(2048, 5632, 128, 5);
    return bad;
}
#else
#include <stdio.h>
int main(void) {
    printf("probe_repack_q4_0: x86-64 with gcc or clang only\n");
    return 0;
}
#endif
