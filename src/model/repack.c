/* Weights repacked at load into the layout the fastest kernels want, in
 * memory of the model's own; every other weight stays a view into the
 * mapping (zero copy). tr_model_params.no_repack keeps them all there.
 *
 * Today one repack: TQ1_0 (1.69 bits a weight, five trits a byte: decoding
 * them is most of its matmul's work) into TQ2_0 (2.06 bits, four trits a
 * byte: a shift and a mask), the same trits and the same scale bits, so
 * every product is the same number (the integer sums are exact) and a
 * TQ1_0 model computes with TQ2_0's kernels: docs/BENCHMARKS.md has what it
 * buys, docs/DESIGN.md why. A tensor is converted once, and every weight
 * that views it (fused q/k/v, experts, a tied output) follows it. */
#include "model/model.h"

#include "core/util.h"
#include "quant/quant.h"

#include <pthread.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct rows_job {
    const uint8_t *src;
    uint8_t *dst;
    size_t src_row, dst_row;
    int64_t r0, r1, cols;
} rows_job;

static void *convert_rows(void *arg) {
    const rows_job *j = arg;
    for (int64_t r = j->r0; r < j->r1; r++)
        tr_tq1_0_to_tq2_0(j->src + (size_t)r * j->src_row, j->dst + (size_t)r * j->dst_row, j->cols);
    return NULL;
}

/* The rows split among up to 8 threads (the bytes do not depend on it). */
static void convert(const uint8_t *src, uint8_t *dst, size_t src_row, size_t dst_row, int64_t rows, int64_t cols) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    int nth = nc < 1 ? 1 : nc > 8 ? 8 : (int)nc;
    if (rows < 64 * nth) nth = 1;
    rows_job jobs[8];
    pthread_t th[8];
    bool made[8] = {false};
    for (int t = 0; t < nth; t++)
        jobs[t] = (rows_job){src, dst, src_row, dst_row, rows * t / nth, rows * (t + 1) / nth, cols};
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

tr_status tr_model_repack(tr_model *m, tr_error *err) {
    const tr_gguf *g = m->gguf;
    int64_t nt = tr_gguf_n_tensors(g), n_tq1 = 0;
    for (int64_t i = 0; i < nt; i++) n_tq1 += tr_gguf_tensor_at(g, i)->type == TR_TYPE_TQ1_0;
    if (n_tq1 == 0) return TR_OK;
    m->repacked = calloc((size_t)n_tq1, sizeof *m->repacked);
    if (!m->repacked) return tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking TQ1_0 weights");
    for (int64_t i = 0; i < nt; i++) {
        const tr_gguf_tensor *t = tr_gguf_tensor_at(g, i);
        if (t->type != TR_TYPE_TQ1_0) continue;
        const int64_t cols = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3];
        const size_t src_row = tr_row_size(TR_TYPE_TQ1_0, cols), dst_row = tr_row_size(TR_TYPE_TQ2_0, cols);
        uint64_t bytes;
        if (!src_row || !tr_mul_u64((uint64_t)rows, dst_row, &bytes) || (uint64_t)(size_t)bytes != bytes)
            return tr_err_set(err, TR_ERR_FORMAT, "tensor %s: cannot be repacked (%lld x %lld)", t->name,
                              (long long)rows, (long long)cols);
        uint8_t *dst = malloc(bytes ? (size_t)bytes : 1);
        if (!dst) return tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking %s (%llu bytes)", t->name,
                                    (unsigned long long)bytes);
        convert(t->data, dst, src_row, dst_row, rows, cols);
        /* The mapped original is not read again: its whole pages leave this
         * process's resident set (the file's pages stay in the page cache). */
        const long pg = sysconf(_SC_PAGESIZE);
        if (pg > 0) {
            uintptr_t a = ((uintptr_t)t->data + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1);
            uintptr_t e = ((uintptr_t)t->data + (uintptr_t)t->nbytes) & ~((uintptr_t)pg - 1);
            if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
        }
        m->repacked[m->n_repacked++] = (tr_repacked){.src = t->data, .src_bytes = (size_t)rows * src_row, .dst = dst,
                                                     .src_row = src_row, .dst_row = dst_row};
        m->repacked_bytes += bytes;
    }
    const int nw = model_matrices(m, NULL, 0); /* count, then list */
    tr_weight **all = malloc(sizeof *all * (size_t)nw);
    if (!all) return tr_err_set(err, TR_ERR_NOMEM, "out of memory repacking TQ1_0 weights");
    model_matrices(m, all, nw);
    for (int k = 0; k < nw; k++) {
        tr_weight *w = all[k];
        if (w->type != TR_TYPE_TQ1_0 || !w->data) continue;
        const uint8_t *p = w->data;
        for (int64_t j = 0; j < m->n_repacked; j++) {
            const tr_repacked *r = &m->repacked[j];
            const uint8_t *s = r->src;
            if (p < s || p >= s + r->src_bytes) continue;
            const size_t row = (size_t)(p - s) / r->src_row; /* a view starts at a row */
            w->data = r->dst + row * r->dst_row;
            w->type = TR_TYPE_TQ2_0;
            break;
        }
    }
    free(all);
    return TR_OK;
}

void tr_model_repack_free(tr_model *m) {
    for (int64_t j = 0; j < m->n_repacked; j++) free(m->repacked[j].dst);
    free(m->repacked);
    m->repacked = NULL;
    m->n_repacked = 0;
}
