/* Attention over each KV cache type on Gemma 3 270M's shape (4 query heads,
 * 1 KV head, heads of 256), the forward pass's path (TR_ATTN_HALF_Q |
 * TR_ATTN_HALF_P, paged in blocks of 32 or BLOCK): one generated token over n_kv
 * positions, 2 threads. Not a test; numbers only, on a possibly shared
 * machine. Build: cmake --build build --target bench_attention_kv */
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double run(tr_pool *pool, int type, int n_kv, int reps, int bs) {
    const int d = 256, nh = 4, n_blocks = (n_kv + bs - 1) / bs;
    const size_t row = tr_row_size(type, d), slots = (size_t)n_blocks * bs;
    char *k = malloc(row * slots), *v = malloc(row * slots);
    float *x = malloc(sizeof(float) * d);
    for (size_t i = 0; i < slots; i++) {
        for (int e = 0; e < d; e++) x[e] = (float)((i * 31 + (size_t)e * 7) % 61) / 61.0f - 0.5f;
        tr_quantize(type, x, k + i * row, d);
        tr_quantize(type, x, v + i * row, d);
    }
    int32_t *table = malloc(sizeof(int32_t) * (size_t)n_blocks);
    for (int b = 0; b < n_blocks; b++) table[b] = b;
    float q[4 * 256], out[4 * 256];
    for (int i = 0; i < nh * d; i++) q[i] = (float)(i % 13) / 13.0f - 0.5f;
    int32_t pos = n_kv - 1, seq = 0;
    tr_attn_params p = {.n_tokens = 1, .n_kv = n_kv, .head_dim = d, .n_head = nh, .n_head_kv = 1, .k_type = type,
                        .v_type = type, .k_stride = row, .v_stride = row, .q_pos = &pos, .q_seq = &seq, .n_seq = 1,
                        .block_size = bs, .max_blocks = n_blocks, .blocks = table, .scale = 0.0625f,
                        .flags = TR_ATTN_HALF_Q | TR_ATTN_HALF_P};
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        tr_attention(pool, &p, q, k, v, out);
        double t = now() - t0;
        if (t < best) best = t;
    }
    free(k), free(v), free(x), free(table);
    return best;
}

/* No arguments: every type at three depths. With TYPE N_KV REPS [THREADS
 * [BLOCK]] (TYPE as -ctk names it, BLOCK the KV block size, 32 by default):
 * that case alone, for instruction counts (valgrind --tool=callgrind
 * --toggle-collect=attn_part ...). */
int main(int argc, char **argv) {
    static const int types[] = {TR_TYPE_F16, TR_TYPE_Q8_0, TR_TYPE_Q4_0, TR_TYPE_TQ2_32};
    if (argc >= 4) {
        const int type = tr_kv_type_from_name(argv[1]), n_kv = atoi(argv[2]), reps = atoi(argv[3]);
        const int nth = argc > 4 ? atoi(argv[4]) : 2, bs = argc > 5 ? atoi(argv[5]) : 32;
        if (type < 0 || n_kv < 1 || reps < 1 || nth < 1 || bs < 1) {
            fprintf(stderr, "usage: bench_attention_kv [TYPE N_KV REPS [THREADS [BLOCK]]]\n");
            return 2;
        }
        tr_pool *pool = tr_pool_new(nth);
        printf("%-7s decode, %d threads, blocks of %d: n_kv=%d %7.3f ms\n", tr_type_name(type), nth, bs, n_kv,
               run(pool, type, n_kv, reps, bs) * 1e3);
        tr_pool_free(pool);
        return 0;
    }
    tr_pool *pool = tr_pool_new(2);
    for (int t = 0; t < 4; t++)
        printf("%-7s decode, 2 threads: n_kv=2048 %7.3f ms   n_kv=8192 %7.3f ms   n_kv=16384 %7.3f ms\n",
               tr_type_name(types[t]), run(pool, types[t], 2048, 30, 32) * 1e3, run(pool, types[t], 8192, 30, 32) * 1e3,
               run(pool, types[t], 16384, 20, 32) * 1e3);
    tr_pool_free(pool);
    return 0;
}
