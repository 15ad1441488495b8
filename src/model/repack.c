/* Weights repacked at load into the layout the fastest kernels want, in
 * memory of the model's own. tr_model_params.no_repack keeps them all in
 * the mapping (zero copy).
 *
 * Every matrix the forward pass reads is copied into one mapping of the
 * model's own in 2 MiB pages (own_alloc: fewer TLB misses), two kinds
 * rewritten on the way:
 * - TQ1_0 (1.69 bits a weight, five trits a byte: decoding them is most of
 *   its matmul's work) into TQ2_0 (2.06 bits, four trits a byte: a shift
 *   and a mask), the same trits and the same scale bits, so every product
 *   is the same number (the integer sums are exact) and a TQ1_0 model
 *   computes with TQ2_0's kernels; on every CPU.
 * - Q4_K, Q4_0, Q5_0 and Q8_0 into their _X16 layouts (quant/blocks.h:
 *   sixteen rows interleaved per block; Q4_K's scales unpacked, 148 bytes
 *   per row and super-block against 144, the others the same size) where
 *   tr_matmul_repack_type says so (a SIMD tier with kernels for the
 *   layout: AMX, AVX-512, AVX-VNNI, AVX2): the kernels
 *   read sixteen rows as one stream with no shuffles, and compute the
 *   scalar reference's bits (matmul_avx512_repack.c, matmul_avx2_repack.c).
 * docs/BENCHMARKS.md has what each buys, docs/DESIGN.md why. A tensor is
 * converted once, and every weight that views it (fused q/k/v, experts, a
 * tied output) follows it; an _X16 tensor is repacked only when every view
 * is a matmul of whole groups of sixteen rows or the token embeddings
 * (whose rows forward.c reads back through tr_x16_dequantize_row), and one
 * view at least a matmul: token embeddings tied to the output are repacked
 * for the output's sake (Gemma 3's 262144 x 640 Q8_0, most of the bytes a
 * token reads) where tr_matmul_repack_type_one_token says so (the 512-bit
 * tiers), untied ones are copied as they are. */
#include "model/model.h"

#include "core/util.h"
#include "ops/ops.h"
#include "quant/quant.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rows_job {
    int to; /* the target type; -1: copied as it is */
    const uint8_t *src;
    uint8_t *dst;
    size_t src_row, dst_row;
    int64_t r0, r1, cols; /* units: rows (TQ2_0) or groups of 16 rows (the _X16 layouts) */
} rows_job;

enum { COPY_UNIT = 64 << 10 };

static void *convert_rows(void *arg) {
    const rows_job *j = arg;
    if (j->to < 0) { /* units of src_row bytes, the last one short: cols bytes in all */
        const size_t a = (size_t)j->r0 * j->src_row, e = (size_t)j->r1 * j->src_row;
        const size_t end = e < (size_t)j->cols ? e : (size_t)j->cols;
        if (end > a) memcpy(j->dst + a, j->src + a, end - a);
        return NULL;
    }
    for (int64_t r = j->r0; r < j->r1; r++) {
        if (j->to == TR_TYPE_TQ2_0)
            tr_tq1_0_to_tq2_0(j->src + (size_t)r * j->src_row, j->dst + (size_t)r * j->dst_row, j->cols);
        else
            tr_x16_pack(j->to, j->src + (size_t)r * 16 * j->src_row, j->src_row, j->dst + (size_t)r * 16 * j->dst_row,
                        j->cols);
    }
    return NULL;
}

/* The units split among up to 8 threads (the bytes do not depend on it;
 * the threads also share the first touch of the model's fresh pages, which
 * is most of a plain copy's time: the kernel zeroes each page first, slowly
 * under a hypervisor that backs guest memory on first use). to -1: a copy
 * of cols bytes in units of src_row. */
static void convert(int to, const uint8_t *src, uint8_t *dst, size_t src_row, size_t dst_row, int64_t units,
                    int64_t cols) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = nc < 1 ? 1 : nc > 8 ? 8 : (int)nc;
    if (units < 64 * nth) nth = 1;
    rows_job jobs[8];
    pthread_t th[8];
    bool made[8] = {false};
    for (int t = 0; t < nth; t++)
        jobs[t] = (rows_job){to, src, dst, src_row, dst_row, units * t / nth, units * (t + 1) / nth, cols};
    for (int t = 1; t < nth; t++) made[t] = pthread_create(&th[t], NULL, convert_rows, &jobs[t]) == 0;
    convert_rows(&jobs[0]);
    for (int t = 1; t < nth; t++) {
        if (made[t]) pthread_join(th[t], NULL);
        else convert_rows(&jobs[t]);
    }
}

/* Every matrix of the model the forward pass reads through a tr_weight. */
static int model_matrices(tr_model *m, tr_weight **out, int cap) {
    int n = 0;
#define ADD(w)                     \
    do {                           \
        if (n < cap) out[n] = (w); \
        n++;                       \
    } while (0)
    ADD(&m->tok_embd);
    ADD(&m->pos_embd);
    ADD(&m->output);
    for (int i = 0; i < m->hp.n_layer; i++) {
        tr_layer *l = &m->layers[i];
        tr_weight *lw[] = {&l->wq,       &l->wk,        &l->wv,      &l->wo,        &l->w_gate,
                           &l->w_up,     &l->w_down,    &l->gate_inp, &l->gate_exps, &l->up_exps,
                           &l->down_exps, &l->ssm_in,   &l->ssm_x,    &l->ssm_dt,    &l->ssm_out};
        for (size_t k = 0; k < sizeof lw / sizeof lw[0]; k++) ADD(lw[k]);
    }
#undef ADD
    return n;
}

/* Whether any of the model's nw matrices (all) views tensor t. */
static bool viewed(const tr_gguf_tensor *t, tr_weight *const *all, int nw) {
    const uint8_t *s = t->data;
    for (int k = 0; k < nw; k++) {
        const uint8_t *p = all[k]->data;
        if (p && p >= s && p < s + t->nbytes) return true;
    }
    return false;
}

/* The type tensor t is repacked into on this CPU; its own type when it is
 * copied as it is (a matrix no layout changes: into the model's 2 MiB
 * pages all the same, below); -1 when nothing reads it as a matrix (it
 * stays mapped). all: the model's nw matrices. */
static int repack_target(const tr_model *m, const tr_gguf_tensor *t, tr_weight *const *all, int nw) {
    if (!viewed(t, all, nw)) return -1;
    if (t->type == TR_TYPE_TQ1_0) return TR_TYPE_TQ2_0;
    const int to = tr_matmul_repack_type(t->type);
    if (to < 0 || tr_x16_source(to) != (int)t->type || t->ne[1] % 16) return (int)t->type;
    const size_t row = tr_row_size(t->type, t->ne[0]);
    const uint8_t *s = t->data;
    if (!row) return (int)t->type;
    bool matmul = false, embd = false;
    for (int k = 0; k < nw; k++) {
        const tr_weight *w = all[k];
        const uint8_t *p = w->data;
        if (!p || p < s || p >= s + t->nbytes) continue;
        if (w == &m->pos_embd || w->type != (int)t->type) return (int)t->type; /* read a row at a time */
        if ((size_t)(p - s) % (16 * row) || w->rows % 16) return (int)t->type;
        /* the token embeddings' rows are read through tr_x16_dequantize_row
         * (forward.c): worth it where an output tied to them is a matmul
         * whose one token the layout's kernels read faster */
        if (w == &m->tok_embd) embd = true;
        else matmul = true;
    }
    if (embd && tr_matmul_repack_type_one_token(t->type) != to) return (int)t->type;
    return matmul ? to : (int)t->type;
}

/* Bytes of tensor t's copy as type to (its own: the same bytes), 0 when
 * they cannot be counted in a size_t with room to spare. */
static uint64_t copy_bytes(const tr_gguf_tensor *t, int to) {
    if (to == (int)t->type) return t->nbytes <= SIZE_MAX / 2 ? t->nbytes : 0;
    const int64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
    const size_t src_row = tr_row_size(t->type, cols), dst_row = tr_row_size(to, cols);
    uint64_t bytes;
    if (!src_row || !dst_row || !tr_mul_u64((uint64_t)rows, dst_row, &bytes) || bytes > SIZE_MAX / 2) return 0;
    return bytes;
}

/* The model's own memory for its weights: one anonymous mapping, 2 MiB
 * aligned and asked to be backed by transparent huge pages (the kernel's
 * "madvise" mode, Debian's default, honours MADV_HUGEPAGE). A token's
 * matmuls stream every weight once; with 4 KiB pages each page is a TLB
 * miss, dear under a hypervisor's nested paging: one token of Q4_0 read
 * 21-22 GB/s from 4 KiB pages and 30-32 from 2 MiB ones on 2 threads of a
 * Sapphire Rapids virtual machine (build/bench_matmul, TRINITY_BENCH_THP). */
enum { HUGE_PAGE = 2u << 20 };
static uint8_t *own_alloc(size_t bytes, size_t *len) {
    *len = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
    if (*len < bytes || *len > SIZE_MAX - HUGE_PAGE) return NULL;
    uint8_t *p = mmap(NULL, *len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uint8_t *a = (uint8_t *)(((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (a > p) munmap(p, (size_t)(a - p));
    if (p + *len + HUGE_PAGE > a + *len) munmap(a + *len, (size_t)(p + *len + HUGE_PAGE - (a + *len)));
    madvise(a, *len, MADV_HUGEPAGE);
    return a;
}

int tr_repack_kind(int to) {
    switch (to) {
    case TR_TYPE_TQ2_0: return 0;
    case TR_TYPE_Q4_K_X16: return 1;
    case TR_TYPE_Q4_0_X16: return 2;
    case TR_TYPE_Q5_0_X16: return 3;
    case TR_TYPE_Q8_0_X16: return 4;
    default: return -1;
    }
}

int64_t tr_model_repack_plan(const tr_model *m, int64_t n_from[TR_REPACK_KINDS], uint64_t bytes_from[TR_REPACK_KINDS],
                             uint64_t bytes_to[TR_REPACK_KINDS], uint64_t *bytes_copied) {
    const tr_gguf *g = m->gguf;
    const int nw = model_matrices((tr_model *)m, NULL, 0); /* count, then list */
    tr_weight **all = malloc(sizeof *all * (size_t)(nw ? nw : 1));
    if (!all) return -1;
    model_matrices((tr_model *)m, all, nw); /* only read */
    int64_t n = 0;
    for (int k = 0; k < TR_REPACK_KINDS; k++) n_from[k] = 0, bytes_from[k] = bytes_to[k] = 0;
    *bytes_copied = 0;
    for (int64_t i = 0; i < tr_gguf_n_tensors(g); i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        const int to = repack_target(m, t, all, nw);
        if (to == (int)t->type) *bytes_copied += t->nbytes;
        if (to < 0 || to == (int)t->type) continue; /* mapped, or copied as it is */
        const int k = tr_repack_kind(to);
        if (k < 0) continue;
        n_from[k]++, n++;
        bytes_from[k] += t->nbytes;
        bytes_to[k] += (uint64_t)tr_row_size(to, t->ne[0]) * (uint64_t)(t->ne[1] * t->ne[2] * t->ne[3]);
    }
    free(all);
    return n;
}

tr_status tr_model_repack(tr_model *m, tr_error *err) {
    const tr_gguf *g = m->gguf;
    const int64_t nt = tr_gguf_n_tensors(g);
    const int nw = model_matrices(m, NULL, 0); /* count, then list */
    tr_weight **all = malloc(sizeof *all * (size_t)(nw ? nw : 1));
    int *to = malloc(sizeof *to * (size_t)(nt ? nt : 1));
    tr_status st = TR_OK;
    if (!all || !to) {
        st = tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking weights");
        goto done;
    }
    model_matrices(m, all, nw);
    /* Decide every tensor before any weight is redirected. */
    int64_t n = 0;
    for (int64_t i = 0; i < nt; i++) n += (to[i] = repack_target(m, tr_gguf_tensor_at(g, i), all, nw)) >= 0;
    if (n == 0) goto done;
    m->repacked = calloc((size_t)n, sizeof *m->repacked);
    if (!m->repacked) {
        st = tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking weights");
        goto done;
    }
    /* Sizes first: the copies share one mapping (own_alloc), each 64-byte
     * aligned (the kernels load whole or half cache lines of a group). */
    size_t total = 0;
    for (int64_t i = 0; i < nt; i++) {
        if (to[i] < 0) continue;
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        const uint64_t bytes = copy_bytes(t, to[i]);
        if (!bytes && t->nbytes) {
            st = tr_err_set(err, TR_ERR_FORMAT, "tensor %s: cannot be repacked (%lld x %lld)", t->name,
                            (long long)(t->ne[1] * t->ne[2] * t->ne[3]), (long long)t->ne[0]);
            goto done;
        }
        const size_t b64 = ((size_t)bytes + 63) & ~(size_t)63;
        if (total > SIZE_MAX / 2 - b64) {
            st = tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking weights (%s)", t->name);
            goto done;
        }
        total += b64;
    }
    m->own = own_alloc(total ? total : 64, &m->own_len);
    if (!m->own) {
        st = tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking weights (%zu bytes)", total);
        goto done;
    }
    size_t off = 0;
    for (int64_t i = 0; i < nt; i++) {
        if (to[i] < 0) continue;
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        const int64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
        const bool copy = to[i] == (int)t->type;
        const size_t src_row = tr_row_size(t->type, cols), dst_row = tr_row_size(to[i], cols);
        const uint64_t bytes = copy_bytes(t, to[i]);
        uint8_t *dst = m->own + off;
        off += ((size_t)bytes + 63) & ~(size_t)63;
        if (copy) convert(-1, t->data, dst, COPY_UNIT, COPY_UNIT, (int64_t)((bytes + COPY_UNIT - 1) / COPY_UNIT), (int64_t)bytes);
        else convert(to[i], t->data, dst, src_row, dst_row, to[i] == TR_TYPE_TQ2_0 ? rows : rows / 16, cols);
        /* The mapped original is not read again: its whole pages leave this
         * process's resident set (the file's pages stay in the page cache). */
        const long pg = sysconf(_SC_PAGESIZE);
        if (pg > 0) {
            uintptr_t a = ((uintptr_t)t->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
            uintptr_t e = ((uintptr_t)t->data + (uintptr_t)t->nbytes) & ~((uintptr_t)pg - 1);
            if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
        }
        m->repacked[m->n_repacked++] = (tr_repacked){.src = t->data, .src_bytes = copy ? (size_t)bytes : (size_t)rows * src_row,
                                                     .dst = dst, .src_row = src_row, .dst_row = dst_row,
                                                     .from = t->type, .to = to[i]};
        if (copy) m->copied_bytes += bytes;
        else m->repacked_bytes += bytes;
    }
    for (int k = 0; k < nw; k++) {
        tr_weight *w = all[k];
        if (!w->data) continue;
        const uint8_t *p = w->data;
        for (int64_t j = 0; j < m->n_repacked; j++) {
            const tr_repacked *r = &m->repacked[j];
            const uint8_t *s = r->src;
            if (w->type != r->from || p < s || p >= s + r->src_bytes) continue;
            if (r->to == r->from) { /* a copy: the same bytes at the same offsets */
                w->data = r->dst + (p - s);
                break;
            }
            const size_t row = (size_t)(p - s) / r->src_row; /* a view starts at a row (X16: at a group) */
            w->data = r->dst + row * r->dst_row;
            w->type = r->to;
            break;
        }
    }
done:
    free(all);
    free(to);
    return st;
}

void tr_model_repack_free(tr_model *m) {
    if (m->own) munmap(m->own, m->own_len);
    m->own = NULL;
    m->own_len = 0;
    free(m->repacked);
    m->repacked = NULL;
    m->n_repacked = 0;
}
