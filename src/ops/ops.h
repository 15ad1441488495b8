/* Kernels the forward pass calls. Each has a scalar reference; SIMD variants
 * are chosen once at start-up from the CPU's features (see cpu.c) and are
 * tested against the reference on random inputs, ragged sizes included.
 *
 * Layout: a weight matrix W is `rows` rows of `cols` elements in its GGUF
 * type, row-major, each row tr_row_size(type, cols) bytes (the GGUF tensor
 * with ne[0] = cols, ne[1] = rows). Activations are float32 row-major. */
#ifndef TR_OPS_H
#define TR_OPS_H

#include "trinity.h"

typedef struct tr_pool tr_pool; /* persistent worker threads (pool.c) */

tr_pool *tr_pool_new(int n_threads);
void tr_pool_free(tr_pool *p);
int tr_pool_size(const tr_pool *p);
/* Run fn(arg, i, n) for i in [0, n) on all workers and the caller; returns when all are done.
 * Workers persist between calls (spin briefly, then sleep): no thread is created per operation.
 * Not reentrant: one tr_pool_run at a time per pool. */
void tr_pool_run(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg);
/* A buffer of at least `bytes`, 64-byte aligned, owned by the pool and reused
 * by the kernels (tr_matmul, tr_attention) for their per-call temporaries; it
 * grows on demand, so after the first forward pass nothing is allocated per
 * token. Valid until the next call on this pool. NULL if p is NULL or on OOM. */
void *tr_pool_scratch(tr_pool *p, size_t bytes);

/* Y[t][r] = sum_c W[r][c] * X[t][c] for t < n_tokens, r < rows.
 * X: n_tokens x cols, Y: n_tokens x rows (float32). Any weight type with a
 * dequantizer works; fast paths per type. pool may be NULL (single thread). */
void tr_matmul(tr_pool *pool, int type, const void *W, int64_t rows, int64_t cols,
               const float *X, int64_t n_tokens, float *Y);

/* The scalar reference for tr_matmul: dequantize each row, dot in float (double accumulation not used). */
void tr_matmul_ref(int type, const void *W, int64_t rows, int64_t cols,
                   const float *X, int64_t n_tokens, float *Y);

#endif
