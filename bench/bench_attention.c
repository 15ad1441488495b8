/* Flash-attention micro-benchmark on TinyLlama's shape (32 query heads, 4 KV
 * heads, head_dim 64), F16 and F32 caches: decode (1 token over n_kv slots)
 * and prompt (n tokens, causal). Not a test; numbers only, on a possibly
 * shared machine. Build: cmake --build build --target bench_attention */
#include "ops/kernels.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double run(tr_pool *pool, int kv_type, int n_tokens, int n_kv, int reps) {
    const int d = 64, nh = 32, nkv = 4;
    size_t es = kv_type == TR_TYPE_F16 ? 2 : 4, row = (size_t)nkv * d * es;
    char *k = malloc(row * (size_t)n_kv), *v = malloc(row * (size_t)n_kv);
    for (size_t i = 0; i < row * (size_t)n_kv; i++) k[i] = v[i] = (char)(i * 7 % 61); /* finite halves/floats */
    float *q = malloc(sizeof(float) * (size_t)n_tokens * nh * d), *out = malloc(sizeof(float) * (size_t)n_tokens * nh * d);
    for (size_t i = 0; i < (size_t)n_tokens * nh * d; i++) q[i] = (float)(i % 13) / 13.0f - 0.5f;
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tokens);
    for (int t = 0; t < n_tokens; t++) pos[t] = n_kv - n_tokens + t;
    tr_attn_params p = {.n_tokens = n_tokens, .n_kv = n_kv, .head_dim = d, .n_head = nh, .n_head_kv = nkv,
                        .k_type = kv_type, .v_type = kv_type, .k_stride = row, .v_stride = row, .q_pos = pos, .scale = 0.125f};
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        tr_attention(pool, &p, q, k, v, out);
        double t = now() - t0;
        if (t < best) best = t;
    }
    free(k), free(v), free(q), free(out), free(pos);
    return best;
}

int main(void) {
    for (int nth = 1; nth <= 2; nth++) {
        tr_pool *pool = tr_pool_new(nth);
        for (int kt = 0; kt < 2; kt++) {
            int type = kt ? TR_TYPE_F32 : TR_TYPE_F16;
            printf("%s threads=%d  decode n_kv=512: %7.3f ms  n_kv=2048: %7.3f ms   prompt 512 tokens: %8.2f ms\n",
                   tr_type_name(type), nth, run(pool, type, 1, 512, 20) * 1e3, run(pool, type, 1, 2048, 20) * 1e3,
                   run(pool, type, 512, 512, 2) * 1e3);
        }
        tr_pool_free(pool);
    }
    return 0;
}
