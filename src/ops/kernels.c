/* The kernel dispatcher: one table row per weight type, assembled from the
 * lists the kernel files export (kernels.h), with each format's block taken
 * from src/quant's traits and each activation format's geometry from its
 * struct. It is neither reference nor SIMD code: the scalar file never
 * calls a SIMD file and no SIMD file falls back to the scalar one; the
 * choice between them is made here, once per CPU. */
#include "kernels.h"
#include "cpu.h"
#include "ops.h"
#include "quant/quant.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* ---------------------------------------------------------------- activation formats */

static const struct {
    int64_t blck; /* floats per block */
    size_t bytes; /* bytes per block */
} act_geometry[TR_ACT_COUNT] = {
    [TR_ACT_F32] = {1, sizeof(float)},
    [TR_ACT_F16] = {1, sizeof(float)},  /* rounded to half, kept as float */
    [TR_ACT_BF16] = {1, sizeof(float)}, /* rounded to bfloat16, kept as float */
    [TR_ACT_Q8] = {32, sizeof(tr_q8a)},
    [TR_ACT_Q8K] = {256, sizeof(tr_q8k)},
    [TR_ACT_Q8KP] = {256, sizeof(tr_q8kp)},
};

int64_t tr_act_block(int act) { return act >= 0 && act < TR_ACT_COUNT ? act_geometry[act].blck : 1; }

size_t tr_act_row_size(int act, int64_t n) {
    if (act < 0 || act >= TR_ACT_COUNT) return 0;
    return (size_t)(n / act_geometry[act].blck) * act_geometry[act].bytes;
}

/* ---------------------------------------------------------------- ISAs */

bool tr_isa_usable(tr_isa isa) {
    const tr_cpu_features *f = tr_cpu_get();
    switch (isa) {
    case TR_ISA_SCALAR: return true;
    case TR_ISA_AVX2: return f->avx2 && f->fma && f->f16c;
    case TR_ISA_AVXVNNI: return tr_isa_usable(TR_ISA_AVX2) && f->avxvnni;
    case TR_ISA_AVX512:
        return tr_isa_usable(TR_ISA_AVX2) && f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq &&
               f->avx512vnni;
    case TR_ISA_AMX: return tr_isa_usable(TR_ISA_AVX512) && f->amx;
    default: return false;
    }
}

/* Every ISA's lists, in the files that define them. */
static const tr_gemm_row *const gemm_lists[TR_ISA_COUNT][6] = {
    [TR_ISA_SCALAR] = {tr_ref_gemm_rows, NULL},
    [TR_ISA_AVX2] = {tr_avx2_float_gemm_rows, tr_avx2_legacy_gemm_rows, tr_avx2_kquant_gemm_rows, tr_avx2_repack_gemm_rows,
                     NULL},
    [TR_ISA_AVXVNNI] = {tr_avxvnni_legacy_gemm_rows, tr_avxvnni_kquant_gemm_rows, tr_avxvnni_repack_gemm_rows, NULL},
    [TR_ISA_AVX512] = {tr_avx512_float_gemm_rows, tr_avx512_legacy_gemm_rows, tr_avx512_kquant_gemm_rows,
                       tr_avx512_ternary_gemm_rows, tr_avx512_repack_gemm_rows, NULL},
    [TR_ISA_AMX] = {tr_amx_kquant_gemm_rows, tr_amx_legacy_gemm_rows, tr_amx_repack_gemm_rows, NULL},
};
static const tr_act_row *const act_lists[TR_ISA_COUNT][3] = {
    [TR_ISA_SCALAR] = {tr_ref_act_rows, NULL},
    [TR_ISA_AVX2] = {tr_avx2_legacy_act_rows, tr_avx2_kquant_act_rows, NULL},
};

/* ---------------------------------------------------------------- the table */

static tr_kernel kernels[TR_TYPE_TABLE_SIZE];
static tr_act_fn acts[TR_ISA_COUNT][TR_ACT_COUNT];
static tr_act_fn act_best[TR_ACT_COUNT];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

/* A list naming a type twice, or a SIMD row with another activation format
 * than the reference's, is a programming error caught at the first use. */
static void table_error(const char *what, int type, tr_isa isa) {
    fprintf(stderr, "trinity: kernel table: %s (type %d, isa %d)\n", what, type, (int)isa);
    abort();
}

static void table_init(void) {
    for (int isa = 0; isa < TR_ISA_COUNT; isa++) {
        for (int l = 0; gemm_lists[isa][l]; l++) {
            for (const tr_gemm_row *r = gemm_lists[isa][l]; r->type >= 0; r++) {
                if (r->type >= TR_TYPE_TABLE_SIZE || !r->fn) table_error("bad row", r->type, (tr_isa)isa);
                tr_kernel *k = &kernels[r->type];
                if (isa == TR_ISA_SCALAR) {
                    if (k->ref) table_error("type listed twice", r->type, (tr_isa)isa);
                    k->ref = r->fn;
                    k->act = r->act;
                    k->blck = tr_type_block_size(r->type);
                    k->group = tr_x16_source(r->type) >= 0 ? 16 : 1;
                    continue;
                }
                if (!k->ref) table_error("SIMD kernel without a scalar reference", r->type, (tr_isa)isa);
                if (r->act != k->act) table_error("SIMD kernel reads another activation format", r->type, (tr_isa)isa);
                tr_gemm_fn *slot = isa == TR_ISA_AVX2      ? &k->avx2
                                   : isa == TR_ISA_AVXVNNI ? &k->avxvnni
                                   : isa == TR_ISA_AVX512  ? &k->avx512
                                                           : &k->amx;
                if (*slot) table_error("type listed twice", r->type, (tr_isa)isa);
                *slot = r->fn;
            }
        }
        for (int l = 0; act_lists[isa][l]; l++)
            for (const tr_act_row *r = act_lists[isa][l]; r->act >= 0; r++) {
                if (r->act >= TR_ACT_COUNT || !r->fn || acts[isa][r->act])
                    table_error("bad activation row", r->act, (tr_isa)isa);
                acts[isa][r->act] = r->fn;
            }
    }
    for (int a = 0; a < TR_ACT_COUNT; a++)
        for (int isa = 0; isa < TR_ISA_COUNT; isa++)
            if (acts[isa][a] && tr_isa_usable((tr_isa)isa)) act_best[a] = acts[isa][a];
}

const tr_kernel *tr_kernel_get(int type) {
    if (type < 0 || type >= TR_TYPE_TABLE_SIZE) return NULL;
    pthread_once(&table_once, table_init);
    return kernels[type].ref ? &kernels[type] : NULL;
}

int tr_matmul_repack_type(int type) {
    const int to = tr_x16_layout(type);
    if (to < 0) return -1;
    const tr_kernel *k = tr_kernel_get(type), *x = tr_kernel_get(to);
    if (!k || !x || tr_kernel_best(x) == x->ref) return -1; /* no SIMD kernel on this CPU for the layout */
    return to;
}

int tr_matmul_repack_type_one_token(int type) {
    const int to = tr_matmul_repack_type(type);
    return to >= 0 && tr_isa_usable(TR_ISA_AVX512) ? to : -1;
}

tr_gemm_fn tr_kernel_variant(const tr_kernel *k, tr_isa isa) {
    switch (isa) {
    case TR_ISA_SCALAR: return k->ref;
    case TR_ISA_AVX2: return k->avx2;
    case TR_ISA_AVXVNNI: return k->avxvnni;
    case TR_ISA_AVX512: return k->avx512;
    case TR_ISA_AMX: return k->amx;
    default: return NULL;
    }
}

tr_gemm_fn tr_kernel_best(const tr_kernel *k) {
    for (int isa = TR_ISA_COUNT - 1; isa > TR_ISA_SCALAR; isa--) {
        tr_gemm_fn fn = tr_kernel_variant(k, (tr_isa)isa);
        if (fn && tr_isa_usable((tr_isa)isa)) return fn;
    }
    return k->ref;
}

/* One token of Q4_K_X16 is bound by memory, and on a Sapphire Rapids its
 * 256-bit AVX-VNNI kernel reads it faster than the AVX-512 one (which is
 * faster on cached weights: 3.1 against 3.7 ns per row and super-block):
 * TinyLlama Q4_K_M tg64 37.7-40.0 -> 39.2-42.5 t/s in four alternating
 * pairs (docs/BENCHMARKS.md, session 22). Session 23 did not see the slower
 * 512-bit reads again (bench_matmul one token 28.3-28.9 GB/s against
 * AVX-VNNI's 27.6-28.3): the route stays, measured no worse either time.
 * Where AVX-VNNI is missing (Zen 4) the AVX-512 kernel stays (the 256-bit
 * one there would be AVX2's, not measured against it). */
tr_gemm_fn tr_kernel_for_tokens(const tr_kernel *k, int64_t n_tokens) {
    const tr_gemm_fn best = tr_kernel_best(k);
    if (n_tokens == 1 && k == tr_kernel_get(TR_TYPE_Q4_K_X16) && k->avxvnni && tr_isa_usable(TR_ISA_AVXVNNI) &&
        (best == k->avx512 || best == k->amx))
        return k->avxvnni;
    return best;
}

int tr_kernel_call_tokens(const tr_kernel *k, tr_gemm_fn fn) {
    return fn && fn == k->amx ? TR_AMX_TOKENS : TR_TILE_MAX;
}

tr_act_fn tr_act_variant(int act, tr_isa isa) {
    if (act < 0 || act >= TR_ACT_COUNT || isa < 0 || isa >= TR_ISA_COUNT) return NULL;
    pthread_once(&table_once, table_init);
    return acts[isa][act];
}

void tr_act_convert(int act, const float *x, void *dst, int64_t n) {
    float *y = dst;
    switch (act) {
    case TR_ACT_F32: memcpy(dst, x, (size_t)n * sizeof(float)); return;
    case TR_ACT_F16:
        for (int64_t i = 0; i < n; i++) y[i] = tr_fp16_to_fp32(tr_fp32_to_fp16(x[i]));
        return;
    case TR_ACT_BF16:
        for (int64_t i = 0; i < n; i++) y[i] = tr_bf16_to_fp32(tr_fp32_to_bf16(x[i]));
        return;
    default:
        if (act < 0 || act >= TR_ACT_COUNT) return;
        pthread_once(&table_once, table_init);
        act_best[act](x, dst, n);
    }
}
