/* The two steps of a state-space (Mamba) layer that are not matrix
 * products: the causal depthwise convolution and the selective scan, each
 * carrying a recurrent state per sequence from one token to the next.
 *
 * Both walk the batch's tokens in order, each token updating the state of
 * its own sequence, so a batch may hold several sequences, interleaved or
 * not, and a prompt may be cut anywhere: a token meets the state its
 * sequence's previous token left. A channel's (head's) arithmetic depends on
 * that channel alone and runs in one fixed order, so the results are the
 * same bits however the channels are split between threads and whatever
 * else shares the batch. The order of each sum is llama.cpp's CPU one
 * (ggml_compute_forward_ssm_conv_f32 / _ssm_scan_f32): taps oldest first,
 * states in index order. */
#include "ops/ops.h"

#include <math.h>
#include <string.h>

/* Token t's state of one layer (conv or ssm). */
static float *state_of(float *base, size_t stride, const tr_ssm_batch *b, int64_t t) {
    return base + (size_t)b->seq[t] * stride;
}

void tr_ssm_conv(const tr_ssm_batch *b, const float *in, int64_t in_stride, const float *w, const float *bias,
                 int d_conv, int64_t conv_dim, int64_t c0, int64_t c1, float *out) {
    const int nk = d_conv - 1; /* state rows: the previous d_conv - 1 inputs, oldest first */
    for (int64_t t = 0; t < b->n; t++) {
        float *st = state_of(b->conv_state, b->conv_stride, b, t);
        const float *u = in + t * in_stride;
        float *o = out + t * conv_dim;
        if (b->pos[t] == 0) /* a sequence's first token: no past */
            for (int k = 0; k < nk; k++) memset(st + (size_t)k * conv_dim + c0, 0, sizeof(float) * (size_t)(c1 - c0));
        for (int64_t ch = c0; ch < c1; ch++) {
            const float *wc = w + ch * d_conv;
            float sum = 0.0f;
            for (int k = 0; k < nk; k++) sum += st[(size_t)k * conv_dim + ch] * wc[k];
            sum += u[ch] * wc[nk];
            for (int k = 0; k + 1 < nk; k++) st[(size_t)k * conv_dim + ch] = st[(size_t)(k + 1) * conv_dim + ch];
            if (nk > 0) st[(size_t)(nk - 1) * conv_dim + ch] = u[ch];
            const float v = sum + bias[ch];
            o[ch] = v / (1.0f + expf(-v)); /* SiLU */
        }
    }
}

/* softplus as ggml_compute_softplus_f32 */
static float softplus(float x) { return x > 20.0f ? x : logf(1.0f + expf(x)); }

void tr_ssm_scan(const tr_ssm_batch *b, const tr_ssm_scan_params *p, int64_t h0, int64_t h1, float *y) {
    const int64_t hd = p->head_dim, ds = p->d_state, d_inner = p->n_head * hd;
    const int64_t heads_per_group = p->n_head / p->n_group;
    for (int64_t t = 0; t < b->n; t++) {
        float *st = state_of(b->ssm_state, b->ssm_stride, b, t);
        if (b->pos[t] == 0) memset(st + h0 * hd * ds, 0, sizeof(float) * (size_t)((h1 - h0) * hd * ds));
        const float *x = p->x + t * p->x_stride, *dt = p->dt + t * p->dt_stride;
        float *yt = y + t * d_inner;
        for (int64_t h = h0; h < h1; h++) {
            const float dt_sp = softplus(dt[h]);
            const int64_t g = h / heads_per_group;
            const float *B = p->B + t * p->bc_stride + g * ds, *C = p->C + t * p->bc_stride + g * ds;
            if (p->scalar_a) { /* Mamba-2: one decay for the head */
                const float dA = expf(dt_sp * p->A[h]);
                for (int64_t i1 = 0; i1 < hd; i1++) {
                    const int64_t ii = h * hd + i1;
                    const float x_dt = x[ii] * dt_sp;
                    float *s = st + ii * ds, sum = 0.0f;
                    for (int64_t i = 0; i < ds; i++) {
                        const float v = s[i] * dA + B[i] * x_dt;
                        sum += v * C[i];
                        s[i] = v;
                    }
                    yt[ii] = sum;
                }
            } else { /* Mamba: a decay per (channel, state); one channel per head */
                const float *A = p->A + h * ds;
                const float x_dt = x[h] * dt_sp;
                float *s = st + h * ds, sum = 0.0f;
                for (int64_t i = 0; i < ds; i++) {
                    const float v = s[i] * expf(dt_sp * A[i]) + B[i] * x_dt;
                    sum += v * C[i];
                    s[i] = v;
                }
                yt[h] = sum;
            }
        }
    }
}
