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
/* The CPU seconds the pool's workers (not the caller) have used, spinning
 * included: with the caller's own thread CPU time, what a job cost, without
 * the process's other threads (a server's connections). */
double tr_pool_cpu_s(const tr_pool *p);
/* Run fn(arg, i, n) for i in [0, n) on all workers and the caller; returns when all are done.
 * Workers persist between calls (spin briefly, then sleep): no thread is created per operation.
 * Not reentrant: one tr_pool_run at a time per pool. */
void tr_pool_run(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg);
/* As tr_pool_run, for jobs whose shares take their work from a counter of
 * the job's own until none is left (so any one share can do it all): returns
 * when the caller's share is done and every worker that joined meanwhile has
 * left; a worker that had not joined by then skips the job. A worker that the
 * OS has not scheduled (a busy machine) then costs nothing, where tr_pool_run
 * would wait for it. fn must not rely on every ith running. */
void tr_pool_run_shared(tr_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg);
/* A buffer of at least `bytes`, 64-byte aligned, owned by the pool and reused
 * by the kernels (tr_matmul, tr_attention) for their per-call temporaries; it
 * grows on demand, so after the first forward pass nothing is allocated per
 * token. Valid until the next call on this pool. NULL if p is NULL or on OOM. */
void *tr_pool_scratch(tr_pool *p, size_t bytes);

/* Y[t][r] = sum_c W[r][c] * X[t][c] for t < n_tokens, r < rows.
 * X: n_tokens x cols, Y: n_tokens x rows (float32). pool may be NULL (single thread).
 * As in llama.cpp, X is first converted to the activation format the weight
 * type pairs with (int8 blocks of 32 with a half-rounded scale for Q4_0..Q8_0,
 * int8 blocks of 256 for k-quants and TQ1_0/TQ2_0, half- or bfloat-rounded
 * floats for F16/BF16, exact for F32), so results differ from a float product
 * by that rounding. Kernels (scalar reference + AVX2) exist for F32, F16, BF16,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K, TQ1_0, TQ2_0; any other type with a
 * dequantizer is computed by dequantizing rows (slow). Uses tr_pool_scratch. */
void tr_matmul(tr_pool *pool, int type, const void *W, int64_t rows, int64_t cols,
               const float *X, int64_t n_tokens, float *Y);

/* The layout a matrix of `type` is best repacked into at load on this CPU
 * (as capped by TRINITY_CPU), for tr_matmul; -1 to keep the file's rows.
 * Today Q4_K, Q4_0, Q5_0, Q8_0 -> their _X16 layouts (the format table's
 * x16) where the best SIMD tier this CPU runs has a kernel for the layout
 * (AMX, AVX-512, AVX-VNNI and AVX2: all four). An _X16 matrix has rows in
 * whole groups of 16, and a tr_matmul on it starts at a group. */
int tr_matmul_repack_type(int type);
/* The same for a matrix read mostly one token at a time (an output tied to
 * the token embeddings: a prompt asks for the last token's logits only):
 * the layout where its one-token kernels beat the file's rows, the 512-bit
 * tiers' (AVX-512, and AMX, whose one-token calls run them); -1 on the
 * 256-bit tiers, where the file's rows read faster for one token (Q8_0
 * 31.5 against 28 GB/s: docs/BENCHMARKS.md, session 20). */
int tr_matmul_repack_type_one_token(int type);

/* The scalar reference for tr_matmul: dequantize each row, dot in float (double accumulation not used). */
void tr_matmul_ref(int type, const void *W, int64_t rows, int64_t cols,
                   const float *X, int64_t n_tokens, float *Y);

/* ---------------------------------------------- the forward pass's other ops
 * (nn.c). Scalar, in float; each is small beside the matmuls. */

/* y[i] = x[i] / sqrt(mean(x^2) + eps) * w[i]; w may be NULL (no weight). y may be x. */
void tr_rmsnorm(float *y, const float *x, const float *w, int64_t n, float eps);

/* LayerNorm: y = (x - mean(x)) / sqrt(var(x) + eps) * w + b, with ggml's
 * roundings (nn.c); w and b may be NULL. y may be x. */
void tr_layernorm(float *y, const float *x, const float *w, const float *b, int64_t n, float eps);

/* Rotary position embedding of one head vector x[0..head_dim) at position pos,
 * over its first n_rot dimensions. neox: pairs (i, i + n_rot/2) as GPT-NeoX
 * (Qwen, Gemma); otherwise adjacent pairs (2i, 2i+1) as the original Llama.
 * theta_i = pos * freq_scale * base^(-2i/n_rot) / freq_factors[i] (factors may be NULL);
 * cos and sin are multiplied by mscale (1: none; LongRoPE's attention factor). */
void tr_rope(float *x, int n_rot, int32_t pos, float freq_base, float freq_scale,
             const float *freq_factors, float mscale, bool neox);

/* In place, each of n_rows rows of n floats (n a power of two): x = H x, H
 * the orthonormal Walsh-Hadamard matrix (Sylvester order, H[i][j] =
 * (-1)^popcount(i & j) / sqrt(n)), which is symmetric and its own inverse.
 * O(n log n) butterflies with ggml's roundings (nn.c): what llama.cpp
 * rotates a quantized KV cache's queries, keys and values with. */
void tr_hadamard(float *x, int64_t n_rows, int n);

/* The index of the largest of x[0..n) (n >= 1), the first of equals, as
 * the loop `if (x[i] > x[best]) best = i` finds it (NaN never wins; a NaN
 * x[0] is never beaten): greedy sampling's choice of a row of logits.
 * AVX2 where the CPU has it (two passes: the maximum, then its first
 * position; a row holding a NaN takes the loop). */
int64_t tr_argmax(const float *x, int64_t n);

/* In place: x = exp(x - max) / sum. */
void tr_softmax(float *x, int64_t n);

/* out[i] = act(gate[i]) * up[i]: SiLU (SwiGLU) or GELU with the tanh
 * approximation (GeGLU, evaluated at half precision as ggml does). out may be gate. */
void tr_swiglu(float *out, const float *gate, const float *up, int64_t n);
void tr_geglu(float *out, const float *gate, const float *up, int64_t n);
/* out[i] = gelu(x[i]), the same GELU (GPT-2's MLP). out may be x. */
void tr_gelu(float *out, const float *x, int64_t n);
/* ------------------------------------------------------------------ attention
 * Flash attention: softmax(scale * Q K^T + mask) V computed with an online
 * softmax over tiles of the KV cache, so no n_tokens x n_kv score matrix is
 * ever built. Grouped-query attention: query head h reads KV head
 * h / (n_head / n_head_kv); the heads of one group are processed together so
 * each K/V tile is loaded once for all of them (and for several tokens).
 *
 * Layouts (all row-major):
 *   q    n_tokens x n_head x head_dim floats: query t, head h at q + (t*n_head + h)*head_dim
 *   out  n_tokens x n_head x head_dim_v (the same shape as q when head_dim_v is head_dim)
 *   k, v the cache of one layer: slot i (0 <= i < n_kv) holds, for every KV
 *        head, head_dim elements of k_type (v: head_dim_v of v_type):
 *        head g of slot i at (char *)k + i*k_stride + g*tr_row_size(k_type,
 *        head_dim); k_stride/v_stride are bytes between slots (n_head_kv
 *        head rows when packed). Types: TR_TYPE_F32, TR_TYPE_F16, and, with
 *        TR_ATTN_HALF_P and heads of whole blocks of 32, the quantized cache
 *        types TR_TYPE_Q8_0, TR_TYPE_Q4_0, TR_TYPE_TQ2_32. A quantized K is
 *        met by the queries quantized to Q8_0 (TR_ATTN_HALF_Q does not apply
 *        to it): integer dot products per block, each times both scales
 *        into lane (block mod 8); a quantized V is dequantized in registers
 *        (each slot's weight times its block's scale, times the integers).
 * Masking: slot i holds position kv_pos[i] (kv_pos NULL: position i) of
 * sequence kv_seq[i] (NULL: all one sequence). Query t (position q_pos[t],
 * sequence q_seq[t]) sees slot i iff same sequence, kv_pos[i] <= q_pos[t]
 * and, when window > 0, q_pos[t] - kv_pos[i] < window (llama.cpp's sliding
 * window). A query that sees no slot gets zeros.
 * softcap > 0 applies cap * tanh(s / cap) to the scaled scores (Gemma 2).
 *
 * Paged (n_seq > 0): k and v are a pool of blocks of block_size slots, and
 * sequence s's position i lives in slot blocks[s*max_blocks + i/block_size]
 * * block_size + i % block_size (src/kv's block tables). Query t reads
 * positions 0 .. q_pos[t] of its own sequence q_seq[t] through that table
 * (q_seq required; kv_pos and kv_seq must be NULL; n_kv is the most
 * positions a sequence holds, at most max_blocks * block_size).
 * flags TR_ATTN_HALF_Q rounds the queries to halves before they meet the
 * cache. TR_ATTN_HALF_P selects the normalised-weights path: each query's
 * whole row of scores, its softmax, the normalised weights rounded to halves,
 * then their sum with V, every sum in a fixed 8-lane order (the roundings of
 * llama.cpp's CPU graph with a half-precision cache, and results that do not
 * depend on tiling or threads). Without it the tiled online softmax (flash
 * attention) runs. */
typedef struct tr_attn_params {
    int n_tokens, n_kv;
    int head_dim, n_head, n_head_kv;
    int head_dim_v; /* head size of v and out; 0: head_dim */
    int k_type, v_type; /* entry types of K and V (above) */
    size_t k_stride, v_stride;
    const int32_t *q_pos;  /* n_tokens positions (required) */
    const int32_t *kv_pos; /* n_kv positions, or NULL: slot i is position i */
    const int32_t *q_seq, *kv_seq; /* sequence ids, or NULL: one sequence */
    int window;   /* sliding window, 0: none */
    float scale;  /* usually 1/sqrt(head_dim) */
    float softcap; /* 0: none */
    int n_seq;                /* > 0: paged, n_seq block tables (above) */
    int block_size, max_blocks;
    const int32_t *blocks;    /* [n_seq][max_blocks] */
    unsigned flags;           /* TR_ATTN_HALF_Q | TR_ATTN_HALF_P */
} tr_attn_params;

enum { TR_ATTN_HALF_Q = 1u, TR_ATTN_HALF_P = 2u };

/* Returns TR_ERR_ARG for inconsistent parameters (head counts, types,
 * strides), TR_ERR_NOMEM if no scratch could be had; pool may be NULL. */
tr_status tr_attention(tr_pool *pool, const tr_attn_params *p, const float *q, const void *k,
                       const void *v, float *out);


/* ------------------------------------------------- state-space (Mamba) layers
 * (ssm.c). A batch's tokens in order, each updating the recurrent state of
 * its own sequence; a token at position 0 first zeroes its sequence's state
 * (the part the call computes). Per channel (head) the arithmetic is fixed:
 * the same bits however channels are split between calls (threads) and
 * whatever else shares the batch. */
typedef struct tr_ssm_batch {
    int64_t n;                /* tokens */
    const int32_t *seq, *pos; /* token t's sequence and position */
    float *conv_state;        /* sequence s's (d_conv-1) x conv_dim rows, oldest first, at + s*conv_stride */
    float *ssm_state;         /* sequence s's [n_head][head_dim][d_state] at + s*ssm_stride */
    size_t conv_stride, ssm_stride;
} tr_ssm_batch;

/* out[t][ch] = silu(bias[ch] + sum_k w[ch][k] * window_k) for ch in [c0, c1):
 * the window is the d_conv - 1 previous inputs of token t's sequence (its
 * state, oldest first) then in[t][ch]; the state then shifts by one.
 * in: token t at in + t*in_stride; out: [n][conv_dim]; w: [conv_dim][d_conv]; bias may be NULL. */
void tr_ssm_conv(const tr_ssm_batch *b, const float *in, int64_t in_stride, const float *w, const float *bias,
                 int d_conv, int64_t conv_dim, int64_t c0, int64_t c1, float *out);

typedef struct tr_ssm_scan_params {
    int64_t n_head, head_dim, d_state, n_group; /* Mamba: n_head = d_inner, head_dim 1, n_group 1 */
    bool scalar_a;            /* Mamba-2: A[h] one per head; else A[h][d_state] (Mamba) */
    const float *A;
    const float *x;  int64_t x_stride;      /* token t's n_head*head_dim inputs */
    const float *dt; int64_t dt_stride;     /* token t's n_head time steps (bias added, before softplus) */
    const float *B, *C; int64_t bc_stride;  /* token t's group g: B + t*bc_stride + g*d_state */
} tr_ssm_scan_params;

/* The selective scan of heads [h0, h1), as llama.cpp's ssm_scan: for each
 * token, dt' = softplus(dt); per channel and state i, s = s*exp(dt'*A) +
 * B[i]*x*dt'; y = sum_i s*C[i], in index order. y: [n][n_head*head_dim]. */
void tr_ssm_scan(const tr_ssm_batch *b, const tr_ssm_scan_params *p, int64_t h0, int64_t h1, float *y);
/* The scalar reference (exactly llama.cpp's scalar order); tr_ssm_scan runs
 * the AVX2 + FMA variant where the CPU has it (8 states at a time, Mamba's
 * exp vectorised; Mamba-2's sums in ggml's AVX2 order), within a few ulp. */
void tr_ssm_scan_ref(const tr_ssm_batch *b, const tr_ssm_scan_params *p, int64_t h0, int64_t h1, float *y);
bool tr_ssm_scan_has_simd(void);

#endif
