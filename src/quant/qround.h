/* Float-to-integer steps shared by the quantizers. Every cast from float to
 * int goes through these: they clamp in the float domain first, so NaN or
 * infinite input yields garbage blocks rather than undefined behaviour. */
#ifndef TR_QUANT_QROUND_H
#define TR_QUANT_QROUND_H

#include <math.h>

/* Clamp to [lo, hi]; NaN goes to lo. */
static inline float tr_q_clampf(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* Truncation toward zero, as C's (int) cast, after clamping to [lo, hi]. */
static inline int tr_q_trunc(float v, int lo, int hi) { return (int)tr_q_clampf(v, (float)lo, (float)hi); }

/* Round half away from zero (C's roundf), clamped to [lo, hi]. */
static inline int tr_q_round(float v, int lo, int hi) { return (int)roundf(tr_q_clampf(v, (float)lo, (float)hi)); }

/* Round half to even (the current rounding mode, which is never changed in
 * Trinity), clamped to [lo, hi]: ggml's nearest_int for the k-quants. */
static inline int tr_q_rint(float v, int lo, int hi) { return (int)rintf(tr_q_clampf(v, (float)lo, (float)hi)); }

#endif
