/* tr_matmul: Y = X W^T with W in any GGUF format.
 *
 * The activations are converted once per call to the format the weight type
 * pairs with (int8 blocks for quantized weights, so the inner loops are
 * integer dot products; half/bfloat for F16/BF16), shared by all threads. The
 * weight rows are then cut into chunks that threads take from an atomic
 * counter (a busy core on a shared machine does not hold the others up).
 * Within a chunk, tiles of TILE_T tokens (TR_AMX_TOKENS for an AMX kernel)
 * go to the kernel, which decodes each weight block once for the whole
 * tile; the chunk's weights stay in cache while every tile of tokens passes
 * over them.
 *
 * Types without a kernel fall back to dequantizing each row to float. */
#include "kernels.h"
#include "ops.h"

#include <stdatomic.h>
#include <stdlib.h>

enum {
    TILE_T = TR_TILE_MAX, /* tokens per kernel call: the widest register-blocked tile */
    CHUNK_ROWS = 16,  /* rows per work item when there are many tokens */
};

typedef struct mm_job {
    tr_gemm_fn gemm;
    int tile_t; /* tokens per kernel call */
    const char *w;
    size_t w_stride;
    int64_t rows, cols;
    const float *x;
    const char *act; /* converted activations, act_stride bytes per token */
    size_t act_stride;
    int act_type;
    int64_t n_tokens;
    float *y;
    int64_t chunk; /* rows per work item */
    atomic_llong next;
    float *deq; /* fallback: one dequantized row per thread */
    int type;
} mm_job;

static void convert_part(void *arg, int ith, int nth) {
    mm_job *j = arg;
    for (int64_t t = ith; t < j->n_tokens; t += nth)
        tr_act_convert(j->act_type, j->x + t * j->cols, (char *)j->act + (size_t)t * j->act_stride, j->cols);
}

static int64_t pick_chunk(int64_t rows, int64_t n_tokens, int nth);

/* One chunk of rows against every token, in tiles of tile_t tokens. */
static void gemm_chunk(tr_gemm_fn gemm, int tile_t, const char *w, size_t w_stride, int64_t cols, int64_t nr,
                       const char *act, size_t act_stride, int64_t n_tokens, float *y, int64_t rows) {
    for (int64_t t0 = 0; t0 < n_tokens; t0 += tile_t) {
        int nt = n_tokens - t0 < tile_t ? (int)(n_tokens - t0) : tile_t;
        gemm(cols, w, w_stride, (int)nr, act + (size_t)t0 * act_stride, act_stride, nt, y + t0 * rows, (size_t)rows);
    }
}

static void gemm_part(void *arg, int ith, int nth) {
    (void)ith, (void)nth;
    mm_job *j = arg;
    for (;;) {
        int64_t r0 = atomic_fetch_add_explicit(&j->next, j->chunk, memory_order_relaxed);
        if (r0 >= j->rows) break;
        int64_t nr = j->rows - r0 < j->chunk ? j->rows - r0 : j->chunk;
        gemm_chunk(j->gemm, j->tile_t, j->w + (size_t)r0 * j->w_stride, j->w_stride, j->cols, nr, j->act, j->act_stride,
                   j->n_tokens, j->y + r0, j->rows);
    }
}

void tr_matmul_chunks(tr_gemm_fn gemm, int64_t chunk, const void *W, size_t w_stride, int64_t rows, int64_t cols,
                      const void *act, size_t act_stride, int64_t n_tokens, float *Y) {
    for (int64_t r0 = 0; r0 < rows; r0 += chunk)
        gemm_chunk(gemm, TILE_T, (const char *)W + (size_t)r0 * w_stride, w_stride, cols, rows - r0 < chunk ? rows - r0 : chunk,
                   act, act_stride, n_tokens, Y + r0, rows);
}

int64_t tr_matmul_chunk_rows(int64_t rows, int64_t n_tokens, int nth) { return pick_chunk(rows, n_tokens, nth); }

static float dot_f(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void fallback_part(void *arg, int ith, int nth) {
    (void)nth;
    mm_job *j = arg;
    float *row = j->deq + (size_t)ith * (size_t)j->cols;
    for (;;) {
        int64_t r0 = atomic_fetch_add_explicit(&j->next, j->chunk, memory_order_relaxed);
        if (r0 >= j->rows) break;
        int64_t r1 = r0 + j->chunk < j->rows ? r0 + j->chunk : j->rows;
        for (int64_t r = r0; r < r1; r++) {
            if (tr_dequantize(j->type, j->w + (size_t)r * j->w_stride, row, j->cols) != TR_OK)
                memset(row, 0, (size_t)j->cols * sizeof(float));
            for (int64_t t = 0; t < j->n_tokens; t++) j->y[t * j->rows + r] = dot_f(row, j->x + t * j->cols, j->cols);
        }
    }
}

/* Rows per work item: small enough that both threads get several, large
 * enough that the atomic counter is noise. */
static int64_t pick_chunk(int64_t rows, int64_t n_tokens, int nth) {
    /* Many tokens: every chunk streams all the activations past its rows, so
     * bigger chunks (64 rows of weights still fit L2) mean fewer passes. */
    if (n_tokens >= 16 && rows >= 4 * CHUNK_ROWS * 4 * (int64_t)nth) return 4 * CHUNK_ROWS;
    /* A few tokens (speculative verification): the kernels read a chunk's
     * rows as four sequential streams, as for one token, which large chunks
     * make long; the activations stay in L1 whatever the chunk. */
    if (n_tokens > TR_STREAM_TOKENS) return CHUNK_ROWS;
    /* One token: four chunks a thread, however large. Each chunk starts its
     * streams afresh (the hardware prefetcher and the kernels' prefetch
     * ahead have to ramp up again), so long chunks read faster: eight a
     * thread of at most 256 rows measured 4-10 % slower generation (Gemma
     * tg64 on a Sapphire Rapids 118-119 -> 123-127 tok/s, TinyLlama Q4_0
     * 48-50 -> 52, TQ1_0 87-90 -> 96-97); two a thread is faster still for
     * the ternary files and slower for Q4_0, and leaves less to even out a
     * thread that falls behind. Up to four tokens (speculative
     * verification) likewise: every kernel reads a chunk's rows once for
     * them (and the scheduler prices a guess by the step it adds to, so one
     * token's steps and a few tokens' should be cut alike). More keep chunks
     * of at most 256 rows: a kernel may take their tokens in several passes
     * over the chunk (tiles of four tokens), which then come from cache. */
    const bool one_pass = n_tokens <= 4;
    int64_t c = rows / ((one_pass ? 4 : 8) * (int64_t)nth);
    if (c < 4) c = 4;
    if (!one_pass && c > 256) c = 256;
    /* A multiple of 4, like the sizes above: kernels take rows in fours
     * from the start of a chunk and sum a lone row in another order, so
     * chunks aligned to 4 give every row the same kernel path whatever the
     * number of tokens (a token's result must not depend on its batch). */
    return (c + 3) & ~(int64_t)3;
}

void tr_matmul(tr_pool *pool, int type, const void *W, int64_t rows, int64_t cols, const float *X,
               int64_t n_tokens, float *Y) {
    if (rows <= 0 || n_tokens <= 0) return;
    int nth = tr_pool_size(pool);
    mm_job j = {0};
    j.w = W;
    j.w_stride = tr_row_size(type, cols);
    j.rows = rows;
    j.cols = cols;
    j.x = X;
    j.n_tokens = n_tokens;
    j.y = Y;
    j.type = type;
    j.chunk = pick_chunk(rows, n_tokens, nth);
    atomic_init(&j.next, 0);

    const tr_kernel *k = tr_kernel_get(type);
    if (k && cols % k->blck == 0 && cols % tr_act_block(k->act) == 0 && rows % k->group == 0) {
        /* a layout of row groups (repacked at load): chunks of whole groups */
        j.chunk = (j.chunk + k->group - 1) / k->group * k->group;
        j.gemm = tr_kernel_for_tokens(k, n_tokens);
        j.tile_t = tr_kernel_call_tokens(k, j.gemm);
        j.act_type = k->act;
        j.act_stride = tr_act_row_size(k->act, cols);
        size_t bytes = j.act_stride * (size_t)n_tokens;
        void *owned = NULL, *buf = tr_pool_scratch(pool, bytes);
        if (!buf) buf = owned = malloc(bytes);
        if (buf) {
            j.act = buf;
            if (n_tokens >= 2 * nth && nth > 1) tr_pool_run(pool, convert_part, &j);
            else convert_part(&j, 0, 1);
            tr_pool_run_shared(pool, gemm_part, &j);
            free(owned);
            return;
        }
    }
    /* No kernel (or no memory for the converted activations): dequantize rows. */
    size_t bytes = (size_t)nth * (size_t)cols * sizeof(float);
    void *owned = NULL, *buf = tr_pool_scratch(pool, bytes);
    if (!buf) buf = owned = malloc(bytes);
    if (!buf) {
        tr_matmul_ref(type, W, rows, cols, X, n_tokens, Y);
        return;
    }
    j.deq = buf;
    tr_pool_run_shared(pool, fallback_part, &j);
    free(owned);
}

void tr_matmul_ref(int type, const void *W, int64_t rows, int64_t cols, const float *X, int64_t n_tokens,
                   float *Y) {
    size_t stride = tr_row_size(type, cols);
    float *row = malloc((size_t)cols * sizeof(float));
    if (!row) return;
    for (int64_t r = 0; r < rows; r++) {
        if (tr_dequantize(type, (const char *)W + (size_t)r * stride, row, cols) != TR_OK)
            memset(row, 0, (size_t)cols * sizeof(float));
        for (int64_t t = 0; t < n_tokens; t++) Y[t * rows + r] = dot_f(row, X + t * cols, cols);
    }
    free(row);
}
