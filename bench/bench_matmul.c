/* Matmul micro-benchmark on TinyLlama-shaped layers (not a test: it prints
 * numbers and never fails). Build: cmake --build build --target bench_matmul
 *
 *   build/bench_matmul [types...]          e.g. build/bench_matmul Q4_0 Q8_0
 *   env: TRINITY_BENCH_MB (weights cycled, default 256), TRINITY_BENCH_REPS (3),
 *        TRINITY_BENCH_THREADS (2), TRINITY_BENCH_CPU=1 (thread CPU time),
 *        TRINITY_BENCH_PROMPT (prompt tokens, 64), TRINITY_BENCH_HOT=1 (kernel
 *        alone on cached weights: ns per weight block and token),
 *        TRINITY_BENCH_COLS (its row length, 2048; a multiple of 256); with HOT,
 *        the layouts repacked at load too (e.g. Q8_0_X16); TRINITY_BENCH_THP=0
 *        (weights in 4 KiB pages instead of the model's 2 MiB ones)
 *
 * For each weight type and 1 and 2 threads: generation (one token: GB/s of
 * weights streamed, the figure that bounds tokens/s) and prompt (64 tokens:
 * effective tokens/s through one layer set). The weights cycle through
 * enough copies (>= 256 MB) that they come from memory, not cache, like a
 * real model's. The machine may be shared and noisy: take the best of a few
 * repetitions and compare runs made side by side. */
#include "ops/kernels.h"
#include "ops/ops.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* Wall time, or (TRINITY_BENCH_CPU=1, meaningful with 1 thread) the calling
 * thread's CPU time, which a busy shared machine disturbs less. */
static int use_cpu_time;
static double now(void) {
    struct timespec ts;
    clock_gettime(use_cpu_time ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)rng;
}

/* Fill a weight matrix with random quants and fp16 scales near 1/64 (every
 * block field that is a half-float scale gets a sane value). */
static void fill(int type, uint8_t *w, size_t bytes) {
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)rnd();
    static const struct { int type; int off[3]; } sc[] = {
        {TR_TYPE_Q4_0, {0, -1}}, {TR_TYPE_Q5_0, {0, -1}}, {TR_TYPE_Q8_0, {0, -1}},
        {TR_TYPE_Q4_1, {0, 2, -1}}, {TR_TYPE_Q5_1, {0, 2, -1}}, {TR_TYPE_Q4_K, {0, 2, -1}},
        {TR_TYPE_Q5_K, {0, 2, -1}}, {TR_TYPE_Q2_K, {80, 82, -1}}, {TR_TYPE_Q3_K, {108, -1}},
        {TR_TYPE_Q6_K, {208, -1}},
    };
    uint16_t h = tr_fp32_to_fp16(1.0f / 64);
    if (type == TR_TYPE_F16 || type == TR_TYPE_BF16) {
        for (size_t i = 0; i + 1 < bytes; i += 2) {
            uint16_t v = type == TR_TYPE_F16 ? tr_fp32_to_fp16((float)(rnd() % 2001) / 1000 - 1)
                                             : tr_fp32_to_bf16((float)(rnd() % 2001) / 1000 - 1);
            memcpy(w + i, &v, 2);
        }
        return;
    }
    if (type == TR_TYPE_F32) {
        for (size_t i = 0; i + 3 < bytes; i += 4) {
            float f = (float)(rnd() % 2001) / 1000 - 1;
            memcpy(w + i, &f, 4);
        }
        return;
    }
    size_t bb = tr_type_block_bytes(type);
    for (size_t k = 0; k < sizeof sc / sizeof sc[0]; k++) {
        if (sc[k].type != type) continue;
        for (size_t b = 0; b < bytes / bb; b++)
            for (int f = 0; sc[k].off[f] >= 0; f++) memcpy(w + b * bb + sc[k].off[f], &h, 2);
    }
}

/* One TinyLlama layer's matmuls: q, k, v, o, gate, up, down (rows x cols). */
static const int64_t shapes[][2] = {{2048, 2048}, {256, 2048}, {256, 2048}, {2048, 2048},
                                    {5632, 2048}, {5632, 2048}, {2048, 5632}};
#define N_SHAPES 7

static int env_int(const char *name, int def) {
    const char *v = getenv(name);
    return v && atoi(v) > 0 ? atoi(v) : def;
}

/* TRINITY_BENCH_HOT=1: the kernel alone on 64 weight rows x 2048 columns
 * (TRINITY_BENCH_COLS)
 * that stay in L2, one thread, best of many runs: the compute cost per
 * weight block and token without memory in the way (what a kernel change
 * moves; the memory-bound figures above hide it). Less disturbed by other
 * load than wall time: short runs, the best one kept. */
static void bench_hot(int type) {
    const tr_kernel *k = tr_kernel_get(type);
    if (!k) return;
    const int rows = 64, NTMAX = 128;
    const int cols = env_int("TRINITY_BENCH_COLS", 2048); /* a multiple of 256 */
    size_t ws = tr_row_size(type, cols), as = tr_act_row_size(k->act, cols);
    uint8_t *w = malloc(ws * rows);
    float *x = malloc(sizeof(float) * cols * NTMAX), *y = malloc(sizeof(float) * rows * NTMAX);
    char *a = malloc(as * NTMAX);
    if (!w || !x || !y || !a) return;
    const int src = tr_x16_source(type);
    if (src >= 0) { /* a layout repacked at load: random source rows, packed sixteen at a time */
        size_t ss = tr_row_size(src, cols);
        uint8_t *s = malloc(ss * rows);
        if (!s) {
            free(w), free(x), free(y), free(a);
            return;
        }
        fill(src, s, ss * rows);
        for (int g = 0; g < rows / 16; g++) tr_x16_pack(type, s + (size_t)g * 16 * ss, ss, w + (size_t)g * 16 * ws, cols);
        free(s);
    } else {
        fill(type, w, ws * rows);
    }
    for (int i = 0; i < cols * NTMAX; i++) x[i] = (float)(rnd() % 2001) / 1000 - 1;
    for (int t = 0; t < NTMAX; t++) tr_act_convert(k->act, x + (size_t)t * cols, a + (size_t)t * as, cols);
    tr_gemm_fn g = tr_kernel_best(k);
    const int call = tr_kernel_call_tokens(k, g);
    printf("%-8s hot kernel (64x%d in L2, 1 thread), ns/blk/tok:", tr_type_name(type), cols);
    static const int nts[] = {1, 2, 4, 8, 12, 16, 32, 128};
    for (int i = 0; i < 8; i++) {
        int nt = nts[i];
        double best = 1e9;
        for (int rep = 0; rep < (nt > 16 ? 60 : 300); rep++) {
            double t0 = now();
            for (int t = 0; t < nt; t += call) /* as tr_matmul hands them out */
                g(cols, w, ws, rows, a + (size_t)t * as, as, nt - t < call ? nt - t : call, y + (size_t)t * rows, rows);
            double d = now() - t0;
            if (d < best) best = d;
        }
        double blocks = (double)rows * cols / tr_type_block_size(type) * nt;
        printf("  nt=%-3d %5.2f", nt, best / blocks * 1e9);
    }
    printf("\n");
    free(w), free(x), free(y), free(a);
}

static void bench_type(int type) {
    if (getenv("TRINITY_BENCH_HOT") && atoi(getenv("TRINITY_BENCH_HOT"))) {
        bench_hot(type);
        return;
    }
    int mb = env_int("TRINITY_BENCH_MB", 256), reps = env_int("TRINITY_BENCH_REPS", 3);
    int max_threads = env_int("TRINITY_BENCH_THREADS", 2);
    size_t layer = 0;
    for (int s = 0; s < N_SHAPES; s++) layer += tr_row_size(type, shapes[s][1]) * (size_t)shapes[s][0];
    int copies = (int)(((size_t)mb << 20) / layer) + 1;
    size_t wbytes = (layer * (size_t)copies + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    uint8_t *w = aligned_alloc(2u << 20, wbytes);
    if (!w) return;
    if (env_int("TRINITY_BENCH_THP", 1)) madvise(w, wbytes, MADV_HUGEPAGE); /* as the model's own weights are */
    fill(type, w, layer * (size_t)copies);
    const int PROMPT = env_int("TRINITY_BENCH_PROMPT", 64);
    float *x = malloc(sizeof(float) * 5632 * (size_t)PROMPT), *y = malloc(sizeof(float) * 5632 * (size_t)PROMPT);
    for (int i = 0; i < 5632 * PROMPT; i++) x[i] = (float)(rnd() % 2001) / 1000 - 1;

    for (int nth = 1; nth <= max_threads; nth++) {
        tr_pool *pool = tr_pool_new(nth);
        double best_gen = 1e9, best_pp = 1e9;
        for (int rep = 0; rep < reps; rep++) {
            double t0 = now();
            for (int c = 0; c < copies; c++) {
                const uint8_t *p = w + layer * (size_t)c;
                for (int s = 0; s < N_SHAPES; s++) {
                    tr_matmul(pool, type, p, shapes[s][0], shapes[s][1], x, 1, y);
                    p += tr_row_size(type, shapes[s][1]) * (size_t)shapes[s][0];
                }
            }
            double t = (now() - t0) / copies;
            if (t < best_gen) best_gen = t;
            t0 = now();
            int pc = copies < 2 ? copies : 2;
            for (int c = 0; c < pc; c++) {
                const uint8_t *p = w + layer * (size_t)c;
                for (int s = 0; s < N_SHAPES; s++) {
                    tr_matmul(pool, type, p, shapes[s][0], shapes[s][1], x, PROMPT, y);
                    p += tr_row_size(type, shapes[s][1]) * (size_t)shapes[s][0];
                }
            }
            t = (now() - t0) / pc;
            if (t < best_pp) best_pp = t;
        }
        /* A 22-layer TinyLlama reads 22 such layers per token (plus the output matrix). */
        printf("%-5s threads=%d  gen: %6.2f GB/s  %7.3f ms/layer (~%5.1f tok/s for 22 layers)   "
               "prompt(64): %8.3f ms/layer (~%6.1f tok/s for 22 layers)\n",
               tr_type_name(type), nth, layer / best_gen / 1e9, best_gen * 1e3, 1.0 / (22 * best_gen),
               best_pp * 1e3, PROMPT / (22 * best_pp));
        fflush(stdout);
        tr_pool_free(pool);
    }
    free(w), free(x), free(y);
}

int main(int argc, char **argv) {
    use_cpu_time = getenv("TRINITY_BENCH_CPU") && atoi(getenv("TRINITY_BENCH_CPU"));
    if (use_cpu_time) printf("(CPU time of the calling thread: read the threads=1 lines)\n");
    static const int all[] = {TR_TYPE_Q4_0, TR_TYPE_Q8_0, TR_TYPE_Q4_K, TR_TYPE_Q6_K, TR_TYPE_F16, TR_TYPE_BF16,
                              TR_TYPE_Q5_K, TR_TYPE_Q5_0, TR_TYPE_Q4_1, TR_TYPE_Q5_1, TR_TYPE_Q2_K, TR_TYPE_Q3_K};
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            for (int t = 0; t <= TR_TYPE_Q8_0_X16; t++) /* the file types and the layouts repacked at load */
                if (tr_type_name(t) && !strcmp(tr_type_name(t), argv[i])) bench_type(t);
    } else {
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) bench_type(all[i]);
    }
    return 0;
}
