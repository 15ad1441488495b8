/* Internal to the matmul kernels: the activation formats that weights pair
 * with, the lists of kernels each kernel file exports, and the per-type
 * kernel table the dispatcher (kernels.c) assembles from them (the ops side
 * of the format table in src/quant: which activation format a weight type
 * is multiplied with, its scalar reference and its SIMD variants; the
 * block geometry comes from src/quant's row).
 *
 * Every kernel has one shape, a small matrix product over whole rows:
 *   y[t * y_stride + r] = dot(weight row r, activation row t)
 * for r < nr, t < nt, rows n elements long. Weight row r starts at
 * w + r * w_stride bytes, activation row t at a + t * a_stride bytes. A
 * matrix-vector product is nt = 1; the matrix-matrix path hands tiles so each
 * weight block is decoded once for several tokens. */
#ifndef TR_KERNELS_H
#define TR_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "trinity.h"
#include "quant/blocks.h"

/* Up to this many tokens, the legacy kernels read a chunk's weight rows as
 * four far-apart sequential streams (as for one token) and matmul hands out
 * large chunks; above it, tiles of neighbouring rows in small chunks. A
 * speculative verification step is 2-17 tokens. */
enum { TR_STREAM_TOKENS = 16 };
/* The widest token tile a kernel takes (tr_matmul hands kernels up to this
 * many tokens a call; a kernel with narrower tiles loops over them). */
enum { TR_TILE_MAX = 8 };

/* Activation formats. */
enum {
    TR_ACT_F32 = 0, /* float as is (F32 weights) */
    TR_ACT_F16,     /* floats rounded to IEEE half (F16 weights: ggml's arithmetic), kept as float so
                       kernels do not convert the activations again for every weight row */
    TR_ACT_BF16,    /* floats rounded to bfloat16 (BF16 weights), kept as float likewise */
    TR_ACT_Q8,      /* tr_q8a: 32 int8 with a scale and their sum (legacy quants) */
    TR_ACT_Q8K,     /* tr_q8k: 256 int8 with a scale and sums per 16 (k-quants) */
    TR_ACT_Q8KP,    /* tr_q8kp: tr_q8k's values, quants also in a tile order (tr_q8kp_pos4): Q4_K */
    TR_ACT_COUNT
};

/* Legacy-quant activations: like ggml's Q8_0 (scale rounded through fp16,
 * so products match llama.cpp's) plus the integer sum of the quants, which
 * lets kernels multiply unsigned weight nibbles and subtract the offset once
 * per block instead of sign-fixing every weight. */
typedef struct tr_q8a {
    int8_t qs[32];
    float d;
    int32_t sum;
} tr_q8a;

/* K-quant activations: ggml's Q8_K (float scale, sums per 16 for the mins),
 * laid out for the kernels: quants first and the block padded to 320 bytes,
 * so in a 32-byte aligned buffer (tr_pool_scratch) every 32-byte load of
 * quants or sums is aligned; unaligned loads that cross a cache line cost
 * extra on the Zen cores this was tuned on. */
typedef struct tr_q8k {
    int8_t qs[256];
    int16_t bsums[16];
    float d;
    int16_t bsums32[8]; /* sums per 32 (bsums pairwise): Q4_K/Q5_K mins in one 128-bit vpmaddwd */
    uint8_t pad_[12];
} tr_q8k;

typedef void (*tr_gemm_fn)(int64_t n, const void *w, size_t w_stride, int nr, const void *a,
                           size_t a_stride, int nt, float *y, size_t y_stride);
typedef void (*tr_act_fn)(const float *x, void *dst, int64_t n);

/* The instruction sets a kernel can be written for, in the order the
 * dispatcher prefers the later ones. TRINITY_CPU caps what it may pick. */
typedef enum tr_isa {
    TR_ISA_SCALAR = 0, /* the reference: baseline C, the truth */
    TR_ISA_AVX2,       /* AVX2 + FMA + F16C */
    TR_ISA_AVXVNNI,    /* AVX2 + FMA + F16C + AVX-VNNI (VEX vpdpbusd: Alder Lake and later client cores) */
    TR_ISA_AVX512,     /* AVX-512 F, BW, VL, DQ and VNNI (Zen 4, Ice Lake and later Xeons) on top of AVX2 */
    TR_ISA_AMX,        /* AVX-512 plus AMX-TILE and AMX-INT8 (Sapphire Rapids and later Xeons) */
    TR_ISA_COUNT
} tr_isa;

/* The rows a kernel file exports, one per weight type (or activation
 * format) it implements, ended by a row of type -1. The dispatcher
 * (kernels.c) assembles the table from these lists: no file calls into
 * another ISA's file, and adding a kernel is adding a row to its file's
 * list. A list is just its end row in a build without that ISA's code. */
typedef struct tr_gemm_row {
    int type;       /* weight type (TR_TYPE_*), -1 ends the list */
    int act;        /* activation format the kernel reads (the scalar rows define it; SIMD rows repeat it,
                       and the dispatcher checks they agree) */
    tr_gemm_fn fn;
} tr_gemm_row;

typedef struct tr_act_row {
    int act;        /* TR_ACT_*, -1 ends the list */
    tr_act_fn fn;   /* converts whole blocks of the format; the SIMD ones write the scalar one's bytes */
} tr_act_row;

/* Each kernel file's lists (matmul_ref.c: scalar; matmul_avx2*.c: AVX2;
 * matmul_avxvnni*.c: AVX-VNNI; matmul_avx512*.c: AVX-512). */
extern const tr_gemm_row tr_ref_gemm_rows[];
extern const tr_act_row tr_ref_act_rows[];
extern const tr_gemm_row tr_avx2_float_gemm_rows[];
extern const tr_gemm_row tr_avx2_legacy_gemm_rows[];
extern const tr_gemm_row tr_avx2_kquant_gemm_rows[];
extern const tr_act_row tr_avx2_legacy_act_rows[];
extern const tr_act_row tr_avx2_kquant_act_rows[];
extern const tr_gemm_row tr_avx2_repack_gemm_rows[];
extern const tr_gemm_row tr_avxvnni_legacy_gemm_rows[];
extern const tr_gemm_row tr_avxvnni_repack_gemm_rows[];
extern const tr_gemm_row tr_avxvnni_kquant_gemm_rows[];
extern const tr_gemm_row tr_avx512_float_gemm_rows[];
extern const tr_gemm_row tr_avx512_legacy_gemm_rows[];
/* The AVX-512 Q8_0 kernel by name: the AMX tier's own for a few tokens. */
void tr_avx512_gemm_q8_0(int64_t n, const void *w, size_t w_stride, int nr, const void *a, size_t a_stride, int nt,
                         float *y, size_t y_stride);
extern const tr_gemm_row tr_avx512_kquant_gemm_rows[];
extern const tr_gemm_row tr_avx512_ternary_gemm_rows[];
extern const tr_gemm_row tr_avx512_repack_gemm_rows[];
extern const tr_gemm_row tr_amx_kquant_gemm_rows[];
extern const tr_gemm_row tr_amx_legacy_gemm_rows[];
extern const tr_gemm_row tr_amx_repack_gemm_rows[];

/* Tokens tr_matmul hands an AMX kernel a call (the others get TR_TILE_MAX):
 * its tiles are 16 tokens wide and it prepares each call's activations
 * once for all its rows. */
enum { TR_AMX_TOKENS = 128 };

/* A weight type's row of the assembled table: its activation format, its
 * block (the format's, from src/quant's traits), its scalar reference and
 * the variant of each ISA that has one (NULL where none). */
typedef struct tr_kernel {
    int act;          /* activation format */
    int64_t blck;     /* weight elements per block (rows must be a multiple) */
    tr_gemm_fn ref;   /* scalar reference: the truth */
    tr_gemm_fn avx2;  /* AVX2 + FMA + F16C variant, NULL when none */
    tr_gemm_fn avxvnni; /* AVX-VNNI (TR_ISA_AVXVNNI) variant, NULL when none */
    tr_gemm_fn avx512; /* AVX-512 (TR_ISA_AVX512) variant, NULL when none */
    tr_gemm_fn amx;   /* AMX (TR_ISA_AMX) variant, NULL when none */
    int64_t group;    /* rows per group of the layout: kernels take rows in whole groups from a group's
                         start (16 for the _X16 types repacked at load, else 1) */
} tr_kernel;

/* k tokens in a W-wide tile (k <= W; larger k never reach it, but their case must still compile) */
#define TR_TILE_NT(W, k) ((k) <= (W) ? (k) : 1)

/* Wrap a tile into the kernel shape: tiles of W tokens outer (W = 4, or
 * TR_TILE_MAX where the ISA has the registers), the rows handed in inner,
 * so a tile's activations stay in L1 while the rows pass (from L2: the
 * caller's chunk of rows fits it). Rows outer, as this was, streamed every
 * token's activations past each row: eight tokens of a 5632-wide row are
 * 51 KB of tr_q8k, more than L1. A (row, token) result is the same tile
 * call either way.
 * tile(n, row, a, as, NT, out) writes the row's result for NT <= W tokens to
 * out; tgt is the SIMD file's target attribute (the tile is always inlined,
 * so the wrapper must carry the same). Each NT is its own inlined copy (a
 * constant: the accumulators stay in registers). */
#define TR_GEMM_FROM_TILE_W(name, tile, tgt, W)                                                          \
    tgt static void name(int64_t n, const void *w, size_t ws, int nr, const void *a_, size_t as, \
                         int nt, float *y, size_t ys) {                                         \
        _Static_assert((W) == 4 || (W) == TR_TILE_MAX, "tile width: 4 or TR_TILE_MAX");          \
        const char *a = a_;                                                                     \
        float out[TR_TILE_MAX];                                                                 \
        int t = 0;                                                                              \
        for (; t + (W) <= nt; t += (W)) {                                                       \
            for (int r = 0; r < nr; r++) {                                                      \
                tile(n, (const uint8_t *)w + (size_t)r * ws, a + (size_t)t * as, as, (W), out); \
                for (int k = 0; k < (W); k++) y[(size_t)(t + k) * ys + r] = out[k];             \
            }                                                                                   \
        }                                                                                       \
        const int left = nt - t;                                                                \
        const char *at = a + (size_t)t * as;                                                    \
        for (int r = 0; left > 0 && r < nr; r++) {                                              \
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * ws;                            \
            switch (left) { /* left < W: TR_TILE_NT keeps the other cases compilable */          \
            case 7: tile(n, wr, at, as, TR_TILE_NT(W, 7), out); break;                          \
            case 6: tile(n, wr, at, as, TR_TILE_NT(W, 6), out); break;                          \
            case 5: tile(n, wr, at, as, TR_TILE_NT(W, 5), out); break;                          \
            case 4: tile(n, wr, at, as, TR_TILE_NT(W, 4), out); break;                          \
            case 3: tile(n, wr, at, as, 3, out); break;                                         \
            case 2: tile(n, wr, at, as, 2, out); break;                                         \
            case 1: tile(n, wr, at, as, 1, out); break;                                         \
            default: break;                                                                     \
            }                                                                                   \
            for (int k = 0; k < left; k++) y[(size_t)(t + k) * ys + r] = out[k];                \
        }                                                                                       \
    }
#define TR_GEMM_FROM_TILE(name, tile, tgt) TR_GEMM_FROM_TILE_W(name, tile, tgt, 4)

/* From a per-super-block body sb(acc, w, a, as, b, NT, ...) (adds super-block
 * b of the row at w against NT <= TR_TILE_MAX tokens to acc[0..NT)): the row's tile
 * name##_tile for TR_GEMM_FROM_TILE, and the one-token block name##_block
 * for TR_GEMM_STREAMS. qual: the file's always-inline qualifier; the
 * arguments after it go on to sb. */
#define TR_TILE_FROM_SB(name, sb, bytes, acc_t, zero, sum, act_t, qual, ...)                              \
    qual void name##_tile(int64_t n, const uint8_t *w, const char *a, size_t as, int NT, float *out) {   \
        acc_t acc[TR_TILE_MAX];                                                                          \
        _Pragma("GCC unroll 8") for (int j = 0; j < NT; j++) acc[j] = zero;                              \
        for (int64_t b = 0; b < n / 256; b++, w += bytes) sb(acc, w, a, as, b, NT, ##__VA_ARGS__);       \
        _Pragma("GCC unroll 8") for (int j = 0; j < NT; j++) out[j] = sum(acc[j]);                       \
    }                                                                                                    \
    qual acc_t name##_block(acc_t acc, const uint8_t *w, const act_t *x) {                               \
        sb(&acc, w, (const char *)x, 0, 0, 1, ##__VA_ARGS__);                                            \
        return acc;                                                                                      \
    }

/* A kernel over 256-element super-blocks of `bytes` bytes, for generation
 * (one token): TR_STREAMS rows at once, each its own accumulator chain
 * (independent work for the out-of-order core), taken from as many
 * stretches of the rows handed in so that memory sees that many sequential
 * streams: rows r and r+1 interleaved measured 40 % slower from memory than
 * one row at a time (the hardware prefetcher loses the pattern), far-apart
 * streams as fast as in cache. Four streams rather than two (session 23:
 * bench_matmul one token on 2 threads of a Sapphire Rapids, alternating
 * builds, two rounds: TQ2_0 on AVX2 20.0-24.1 -> 25.5-25.7 GB/s, on AVX-512
 * 25.2-26.1 -> 27.3-27.5; Q6_K 26.1-31.5 -> 30.7-32.3 and Q4_K 24.0-30.1 ->
 * 28.9-31.2 over the three tiers; TinyLlama TQ2_0 tg64 capped at AVX2
 * 82-84 -> 85-89 t/s), as the sixteen-row layouts' kernels read
 * (matmul_avx2_repack.c). A software prefetch 2 KiB ahead in each stream
 * covers the rest (one row ahead, 528 bytes for TinyLlama's TQ2_0, came too
 * late: its AVX2 one token read 20.6 GB/s on two threads against 23.5, the
 * other types 0-5 % slower; 8 KiB ahead is no better); the last nr %
 * TR_STREAMS rows go one at a time. Several tokens go to
 * `tiles` (a kernel, e.g. from TR_GEMM_FROM_TILE).
 *   acc_t block(acc_t acc, const uint8_t *w, const act_t *x): acc plus the
 *     super-block at w against the token's block x;
 *   zero: an empty acc_t; sum2(acc_t acc0, acc_t acc1, float out[2]): two
 *     rows' results (a pair, for ISAs that reduce two at once), each the
 *     same whatever its partner;
 *   tgt as for TR_GEMM_FROM_TILE (block and sum2 are inlined).
 * A row's result is its blocks in order through block, then sum2: the same
 * in whichever stream (or alone) it is read. */
enum { TR_STREAMS = 4 };
#define TR_GEMM_STREAMS(name, tiles, block, bytes, acc_t, zero, sum2, act_t, tgt)                        \
    tgt static void name(int64_t n, const void *w_, size_t ws, int nr, const void *a, size_t as, int nt, \
                         float *y, size_t ys) {                                                          \
        if (nt != 1) {                                                                                   \
            tiles(n, w_, ws, nr, a, as, nt, y, ys);                                                      \
            return;                                                                                      \
        }                                                                                                \
        const uint8_t *w = w_;                                                                           \
        const act_t *x = a;                                                                              \
        const int q = nr / TR_STREAMS;                                                                   \
        for (int r = 0; r < q; r++) {                                                                    \
            const uint8_t *wp[TR_STREAMS];                                                               \
            acc_t acc[TR_STREAMS];                                                                       \
            _Pragma("GCC unroll 4") for (int s = 0; s < TR_STREAMS; s++) {                               \
                wp[s] = w + (size_t)(r + s * q) * ws;                                                    \
                acc[s] = zero;                                                                           \
            }                                                                                            \
            for (int64_t b = 0; b < n / 256; b++) {                                                      \
                _Pragma("GCC unroll 4") for (int s = 0; s < TR_STREAMS; s++)                             \
                    _Pragma("GCC unroll 4") for (int l = 0; l < bytes; l += 64)                          \
                        _mm_prefetch((const char *)wp[s] + 2048 + l, _MM_HINT_T0);                       \
                _Pragma("GCC unroll 4") for (int s = 0; s < TR_STREAMS; s++) {                           \
                    acc[s] = block(acc[s], wp[s], x + b);                                                \
                    wp[s] += bytes;                                                                      \
                }                                                                                        \
            }                                                                                            \
            _Pragma("GCC unroll 4") for (int s = 0; s < TR_STREAMS; s += 2) {                            \
                float out[2];                                                                            \
                sum2(acc[s], acc[s + 1], out);                                                           \
                y[r + s * q] = out[0];                                                                   \
                y[r + (s + 1) * q] = out[1];                                                             \
            }                                                                                            \
        }                                                                                                \
        for (int r = TR_STREAMS * q; r < nr; r++) {                                                      \
            const uint8_t *w0 = w + (size_t)r * ws;                                                      \
            acc_t acc = zero;                                                                            \
            for (int64_t b = 0; b < n / 256; b++, w0 += bytes) acc = block(acc, w0, x + b);              \
            float out[2];                                                                                \
            sum2(acc, acc, out);                                                                         \
            y[r] = out[0];                                                                               \
        }                                                                                                \
    }

/* NULL when the type has no kernel (tr_matmul then dequantizes rows). */
const tr_kernel *tr_kernel_get(int type);
/* The variant tr_matmul uses on this CPU (the highest tier it runs), and
 * how many tokens it hands that variant a call. */
tr_gemm_fn tr_kernel_best(const tr_kernel *k);
/* The variant tr_matmul uses for n_tokens: tr_kernel_best's, but one token
 * of Q4_K_X16 on the 512-bit tiers takes the AVX-VNNI kernel where the CPU
 * has it (kernels.c says why; every variant computes the reference's bits,
 * so a token's result does not depend on the choice). */
tr_gemm_fn tr_kernel_for_tokens(const tr_kernel *k, int64_t n_tokens);
int tr_kernel_call_tokens(const tr_kernel *k, tr_gemm_fn fn);
/* The variant written for `isa` (NULL when none), whether or not this CPU
 * runs it: for tests, which run other ISAs' code under an emulator. */
tr_gemm_fn tr_kernel_variant(const tr_kernel *k, tr_isa isa);
/* Whether this CPU (as capped by TRINITY_CPU) runs code of `isa`. */
bool tr_isa_usable(tr_isa isa);

/* tr_matmul's work on one thread: the rows cut in chunks of `chunk`, each
 * chunk against every token in tiles, with the kernel `gemm`, on activations
 * already converted. And the chunk tr_matmul picks for rows x n_tokens on
 * nth threads. For tests that run a kernel the CPU lacks under an emulator
 * (which runs no threads) exactly as tr_matmul would. */
void tr_matmul_chunks(tr_gemm_fn gemm, int64_t chunk, const void *W, size_t w_stride, int64_t rows, int64_t cols,
                      const void *act, size_t act_stride, int64_t n_tokens, float *Y);
int64_t tr_matmul_chunk_rows(int64_t rows, int64_t n_tokens, int nth);

size_t tr_act_row_size(int act, int64_t n);
/* Convert a row of n floats (n a multiple of the format's block) to `act`,
 * with the best conversion this CPU runs (all of them write the same bytes). */
void tr_act_convert(int act, const float *x, void *dst, int64_t n);
int64_t tr_act_block(int act);
/* The conversion to `act` written for `isa`, NULL when that ISA has none
 * (in this build): for tests that compare them. */
tr_act_fn tr_act_variant(int act, tr_isa isa);

/* The scalar conversions (matmul_ref.c), also the truth the SIMD ones are
 * tested against. tr_q8a and tr_q8k as described above. */
void tr_act_q8_ref(const float *x, tr_q8a *y, int64_t n);
void tr_act_q8k_ref(const float *x, tr_q8k *y, int64_t n);

/* TR_ACT_Q8KP (Q4_K): the quants, sums and scale of tr_q8k (the same
 * values), with the 256 quants stored twice: qs in natural order for the
 * one-token kernel, qs4 permuted for the prompt tiles of the AVX2 Q4_K
 * kernel (matmul_avx2_kquant.c explains why); both make a row's int32
 * lanes the same, so a token's result does not depend on its batch.
 * qs4: each 128 quants of sub-blocks 4h + 0..3 become four vectors X_0..X_3
 * (bytes 128h + 32d) of 16 two-byte slots; in every vector, slot s holds
 * quants of sub-block 4h + s % 4, namely that sub-block's pair of quants at
 * natural slot s ^ d (d flips the low two bits of the slot index).
 * tr_q8kp_pos4 maps a natural index 0..255 to its byte in qs4. dsums: the
 * sums times d (every conversion computes them by the one expression in
 * tr_q8kp_set_natural, so they are the same bytes). */
typedef struct tr_q8kp {
    int8_t qs4[256];
    int8_t qs[256];
    int16_t bsums[16];
    float d;
    int16_t bsums32[8];
    uint8_t pad_[12];
    float dsums[16]; /* d * bsums[i], rounded once: the AVX-512 kernel takes Q4_K's mins against these in float */
} tr_q8kp;

static inline int tr_q8kp_pos4(int e) {
    int h = e >> 7, p = (e >> 5) & 3, i = e & 31, t = i >> 1;
    int d = (t & 3) ^ p;
    return 128 * h + 32 * d + 2 * ((t & ~3) | p) + (i & 1);
}
/* Everything of a tr_q8kp but qs4, from the tr_q8k of the same values. */
static inline void tr_q8kp_set_natural(tr_q8kp *y, const tr_q8k *k) {
    memcpy(y->qs, k->qs, sizeof y->qs);
    memcpy(y->bsums, k->bsums, sizeof y->bsums);
    memcpy(y->bsums32, k->bsums32, sizeof y->bsums32);
    y->d = k->d;
    memset(y->pad_, 0, sizeof y->pad_);
    for (int i = 0; i < 16; i++) y->dsums[i] = k->d * (float)k->bsums[i];
}
void tr_act_q8kp_ref(const float *x, tr_q8kp *y, int64_t n);

/* tr_attention with the inner loops written for `isa` (the highest ISA
 * below it for a loop that has none), whether or not this CPU runs them:
 * for tests, which compare the ISAs and run AVX-512 under an emulator.
 * tr_attention uses the highest usable ISA. */
struct tr_pool;
struct tr_attn_params;
tr_status tr_attention_variant(struct tr_pool *pool, const struct tr_attn_params *p, const float *q,
                               const void *k, const void *v, float *out, tr_isa isa);
/* For tests that run one of them emulated (tests/test_attention_emu.py): the
 * normalised-weights path's loop `kind` (0 scores_x, 1 scores_xq, 2 pv_x;
 * their signatures in attention.c's attn_fns) for entries of `type` (K's
 * for the scores, V's for pv_x), as tr_attention_variant picks it for
 * `isa`. */
typedef void (*tr_attn_loop_fn)(void);
tr_attn_loop_fn tr_attention_loop(int kind, int type, tr_isa isa);

/* tr_geglu through its table with the AVX2 loop (simd) or the scalar loop,
 * and its direct reference (a tanhf per element), for tests. */
void tr_geglu_variant(float *out, const float *gate, const float *up, int64_t n, bool simd);
void tr_geglu_ref(float *out, const float *gate, const float *up, int64_t n);
void tr_gelu_variant(float *out, const float *x, int64_t n, bool simd);
void tr_gelu_ref(float *out, const float *x, int64_t n);

/* tr_hadamard with the AVX2 passes (simd) or the scalar reference, for tests. */
void tr_hadamard_variant(float *x, int64_t n_rows, int n, bool simd);
/* tr_argmax: the loop (simd false) or the AVX2 variant where usable. */
int64_t tr_argmax_variant(const float *x, int64_t n, bool simd);

/* IEEE half and bfloat16 conversions (round to nearest even): quant/blocks.h's,
 * the one definition (included above); the AVX2 files read halves with F16C's
 * instruction, which converts exactly (every half is a float). */

#endif
