/* The state-space kernels (ssm.c) on random inputs, ragged sizes included:
 *   - the convolution against a direct evaluation of its definition;
 *   - the scan's SIMD variant against the scalar reference (Mamba's decay
 *     per state, Mamba-2's per head, d_state not a multiple of 8 or 32);
 *   - a sequence's results are the same bits whether its tokens come in one
 *     call or several, interleaved with another sequence's tokens, and
 *     however the channels (heads) are split between calls;
 *   - a token at position 0 starts from a zero state whatever was there. */
#include "ops/cpu.h"
#include "ops/ops.h"
#include "tt.h"

enum { MAXT = 24 };

static void fill(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = tt_rndf() * scale;
}

static float *alloc_f(size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    TT_CHECK(p != NULL);
    return p;
}

TT_TEST(conv_matches_its_definition) {
    const int d_conv = 4;
    const int64_t cd = 37, n = 9;
    float *w = alloc_f((size_t)cd * d_conv), *bias = alloc_f((size_t)cd), *in = alloc_f((size_t)n * cd);
    float *out = alloc_f((size_t)n * cd), *state = alloc_f((size_t)(d_conv - 1) * cd);
    fill(w, (size_t)cd * d_conv, 1.0f);
    fill(bias, (size_t)cd, 0.5f);
    fill(in, (size_t)n * cd, 2.0f);
    fill(state, (size_t)(d_conv - 1) * cd, 9.0f); /* garbage: position 0 must ignore it */
    int32_t seq[MAXT] = {0}, pos[MAXT];
    for (int i = 0; i < n; i++) pos[i] = i;
    tr_ssm_batch b = {.n = n, .seq = seq, .pos = pos, .conv_state = state, .conv_stride = 0};
    tr_ssm_conv(&b, in, cd, w, bias, d_conv, cd, 0, 13, out);
    tr_ssm_conv(&b, in, cd, w, bias, d_conv, cd, 13, cd, out); /* another split of the channels: the same */
    double worst = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t c = 0; c < cd; c++) {
            double s = 0;
            for (int k = 0; k < d_conv; k++) {
                const int64_t src = t - (d_conv - 1) + k;
                if (src >= 0) s += (double)in[src * cd + c] * w[c * d_conv + k];
            }
            s += bias[c];
            s = s / (1 + exp(-s));
            const double d = fabs(s - out[t * cd + c]);
            if (d > worst) worst = d;
        }
    TT_CHECK(worst < 1e-5);
    /* the state now holds the last d_conv - 1 inputs */
    for (int k = 0; k < d_conv - 1; k++)
        for (int64_t c = 0; c < cd; c++) TT_CHECK(state[k * cd + c] == in[(n - (d_conv - 1) + k) * cd + c]);
    free(w), free(bias), free(in), free(out), free(state);
}

typedef struct scan_case {
    bool scalar_a;
    int64_t n_head, head_dim, d_state, n_group;
} scan_case;

/* Inputs of n tokens for a case; the state region holds 2 sequences. */
typedef struct scan_in {
    tr_ssm_scan_params p;
    float *x, *dt, *bc, *A, *state, *y;
    size_t state_n;
} scan_in;

static void scan_make(const scan_case *k, int64_t n, scan_in *in) {
    const int64_t di = k->n_head * k->head_dim, bcw = 2 * k->n_group * k->d_state;
    in->x = alloc_f((size_t)(n * di));
    in->dt = alloc_f((size_t)(n * k->n_head));
    in->bc = alloc_f((size_t)(n * bcw));
    in->A = alloc_f((size_t)(k->scalar_a ? k->n_head : di * k->d_state));
    in->state_n = (size_t)(di * k->d_state);
    in->state = alloc_f(2 * in->state_n);
    in->y = alloc_f((size_t)(n * di));
    fill(in->x, (size_t)(n * di), 1.0f);
    fill(in->dt, (size_t)(n * k->n_head), 3.0f); /* softplus over both of its branches' range... */
    in->dt[0] = 25.0f;                              /* ...and past 20, where it is the identity */
    fill(in->bc, (size_t)(n * bcw), 1.0f);
    const size_t na = (size_t)(k->scalar_a ? k->n_head : di * k->d_state);
    for (size_t i = 0; i < na; i++) in->A[i] = -(1.0f + 8.0f * (tt_rndf() + 1.0f)); /* -1 .. -17 */
    in->p = (tr_ssm_scan_params){.n_head = k->n_head, .head_dim = k->head_dim, .d_state = k->d_state,
                                 .n_group = k->n_group, .scalar_a = k->scalar_a, .A = in->A, .x = in->x,
                                 .x_stride = di, .dt = in->dt, .dt_stride = k->n_head, .B = in->bc,
                                 .C = in->bc + k->n_group * k->d_state, .bc_stride = bcw};
}

static void scan_free(scan_in *in) { free(in->x), free(in->dt), free(in->bc), free(in->A), free(in->state), free(in->y); }

static const scan_case CASES[] = {
    {false, 40, 1, 16, 1}, {false, 19, 1, 13, 1}, {false, 8, 1, 7, 1}, /* Mamba: d_state 16, ragged */
    {true, 4, 16, 64, 2},  {true, 6, 5, 40, 3},   {true, 2, 8, 9, 1},  /* Mamba-2: 32-multiples and not */
};

TT_TEST(scan_simd_matches_the_reference) {
    const bool simd = tr_ssm_scan_has_simd();
    TT_SIMD("avx2 selective scan", simd, "lacks avx2 or fma");
    if (!simd) return;
    for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ci++) {
        const scan_case *k = &CASES[ci];
        const int64_t n = 11, di = k->n_head * k->head_dim;
        scan_in in;
        scan_make(k, n, &in);
        int32_t seq[MAXT] = {0}, pos[MAXT];
        for (int i = 0; i < n; i++) pos[i] = i;
        tr_ssm_batch b = {.n = n, .seq = seq, .pos = pos, .ssm_state = in.state, .ssm_stride = in.state_n};
        float *y_ref = alloc_f((size_t)(n * di)), *s_ref = alloc_f(in.state_n);
        tr_ssm_scan_ref(&b, &in.p, 0, k->n_head, y_ref);
        memcpy(s_ref, in.state, in.state_n * sizeof(float));
        tr_ssm_scan(&b, &in.p, 0, k->n_head, in.y);
        /* each output and state entry within a few ulp of its size (sums of
         * terms of both signs: relative to the sum of the terms' sizes, which
         * the state's and C's sizes bound) */
        double worst_y = 0, worst_s = 0;
        for (int64_t t = 0; t < n; t++) {
            double row = 1e-6;
            for (int64_t i = 0; i < di; i++) row = fmax(row, fabs((double)y_ref[t * di + i]));
            for (int64_t i = 0; i < di; i++) worst_y = fmax(worst_y, fabs((double)in.y[t * di + i] - y_ref[t * di + i]) / row);
        }
        double s_max = 1e-6;
        for (size_t i = 0; i < in.state_n; i++) s_max = fmax(s_max, fabs((double)s_ref[i]));
        for (size_t i = 0; i < in.state_n; i++) worst_s = fmax(worst_s, fabs((double)in.state[i] - s_ref[i]) / s_max);
        if (getenv("TT_VERBOSE") || !(worst_y <= 2e-6 && worst_s <= 2e-6))
            fprintf(stderr, "  case %zu: SIMD differs from the reference by %.3g of the row's largest output, "
                    "%.3g of the largest state entry\n", ci, worst_y, worst_s);
        TT_CHECK(worst_y <= 2e-6 && worst_s <= 2e-6);
        free(y_ref), free(s_ref);
        scan_free(&in);
    }
}

TT_TEST(scan_is_the_same_bits_however_it_is_cut) {
    for (int variant = 0; variant < 2; variant++) {
        void (*scan)(const tr_ssm_batch *, const tr_ssm_scan_params *, int64_t, int64_t, float *) =
            variant ? tr_ssm_scan : tr_ssm_scan_ref;
        for (size_t ci = 0; ci < sizeof CASES / sizeof CASES[0]; ci++) {
            const scan_case *k = &CASES[ci];
            const int64_t n = 10, di = k->n_head * k->head_dim;
            scan_in in;
            scan_make(k, 2 * n, &in); /* tokens 0..n-1: sequence 0's; n..2n-1: sequence 1's */
            int32_t seq[MAXT], pos[MAXT];
            for (int i = 0; i < 2 * n; i++) seq[i] = i >= n, pos[i] = (int32_t)(i % n);
            /* reference: each sequence alone, all heads, one call */
            float *y_alone = alloc_f((size_t)(2 * n * di));
            fill(in.state, 2 * in.state_n, 5.0f); /* garbage: position 0 zeroes it */
            tr_ssm_batch b = {.n = n, .seq = seq, .pos = pos, .ssm_state = in.state, .ssm_stride = in.state_n};
            scan(&b, &in.p, 0, k->n_head, y_alone);
            tr_ssm_batch b1 = b;
            b1.seq += n, b1.pos += n;
            tr_ssm_scan_params p1 = in.p;
            p1.x += n * p1.x_stride, p1.dt += n * p1.dt_stride, p1.B += n * p1.bc_stride, p1.C += n * p1.bc_stride;
            scan(&b1, &p1, 0, k->n_head, y_alone + n * di);
            /* interleaved token by token in one batch, in chunks of 3, heads split in two calls */
            int64_t order[2 * MAXT];
            for (int64_t i = 0; i < n; i++) order[2 * i] = i, order[2 * i + 1] = n + i;
            float *xs = alloc_f((size_t)(2 * n * di)), *dts = alloc_f((size_t)(2 * n * k->n_head));
            float *bcs = alloc_f((size_t)(2 * n * in.p.bc_stride)), *ys = alloc_f((size_t)(2 * n * di));
            int32_t seq2[2 * MAXT], pos2[2 * MAXT];
            for (int64_t i = 0; i < 2 * n; i++) {
                const int64_t o = order[i];
                memcpy(xs + i * di, in.x + o * di, sizeof(float) * (size_t)di);
                memcpy(dts + i * k->n_head, in.dt + o * k->n_head, sizeof(float) * (size_t)k->n_head);
                memcpy(bcs + i * in.p.bc_stride, in.bc + o * in.p.bc_stride, sizeof(float) * (size_t)in.p.bc_stride);
                seq2[i] = seq[o], pos2[i] = pos[o];
            }
            fill(in.state, 2 * in.state_n, 5.0f);
            const int64_t split = k->n_head / 2;
            for (int64_t c0 = 0; c0 < 2 * n; c0 += 3) {
                const int64_t cn = 2 * n - c0 < 3 ? 2 * n - c0 : 3;
                tr_ssm_batch bc = {.n = cn, .seq = seq2 + c0, .pos = pos2 + c0, .ssm_state = in.state,
                                   .ssm_stride = in.state_n};
                tr_ssm_scan_params pc = in.p;
                pc.x = xs + c0 * di, pc.dt = dts + c0 * k->n_head, pc.B = bcs + c0 * in.p.bc_stride;
                pc.C = pc.B + k->n_group * k->d_state;
                scan(&bc, &pc, 0, split, ys + c0 * di);
                scan(&bc, &pc, split, k->n_head, ys + c0 * di);
            }
            bool same = true;
            for (int64_t i = 0; i < 2 * n; i++)
                same &= !memcmp(ys + i * di, y_alone + order[i] * di, sizeof(float) * (size_t)di);
            if (!same) fprintf(stderr, "  case %zu (%s): interleaved/chunked/split results differ\n", ci,
                               variant ? "dispatched" : "reference");
            TT_CHECK(same);
            free(y_alone), free(xs), free(dts), free(bcs), free(ys);
            scan_free(&in);
        }
    }
}

int main(void) {
    tt_seed(42);
    TT_RUN(conv_matches_its_definition);
    TT_RUN(scan_simd_matches_the_reference);
    TT_RUN(scan_is_the_same_bits_however_it_is_cut);
    return TT_DONE();
}
