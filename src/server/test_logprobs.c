/* Log-probabilities against the textbook definition, computed the slow way:
 * p_i = exp(l_i) / sum_j exp(l_j) in long double, and a full sort for the top k. */
#include "server/logprobs.h"
#include "tt.h"

#include <stdlib.h>

static int32_t order_n;
static const float *order_l;
static int by_logit_desc(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (order_l[x] != order_l[y]) return order_l[x] > order_l[y] ? -1 : 1;
    return x - y;
}

TT_TEST(matches_slow_definition) {
    srand(7);
    for (int iter = 0; iter < 50; iter++) {
        int32_t n = 1 + rand() % 3000;
        float *l = malloc((size_t)n * sizeof *l);
        for (int32_t i = 0; i < n; i++) l[i] = (float)(rand() % 4001 - 2000) / 100.0f; /* ties happen */
        if (iter % 5 == 0) l[rand() % n] = -INFINITY;
        long double sum = 0;
        for (int32_t i = 0; i < n; i++) sum += expl((long double)l[i]);
        int32_t id = rand() % n;
        int k = rand() % 21;
        srv_top top[SRV_MAX_TOP_LOGPROBS];
        float lp = srv_logprobs(l, n, id, k, top);
        double want = isinf(l[id]) ? -INFINITY : (double)(logl(expl((long double)l[id]) / sum));
        if (isinf(want)) TT_CHECK(isinf(lp) && lp < 0);
        else TT_CHECK_NEAR(lp, want, 1e-4);
        int32_t *idx = malloc((size_t)n * sizeof *idx);
        for (int32_t i = 0; i < n; i++) idx[i] = i;
        order_l = l;
        order_n = n;
        qsort(idx, (size_t)n, sizeof *idx, by_logit_desc);
        int kk = k < n ? k : n;
        for (int j = 0; j < kk; j++) {
            TT_CHECK_EQ_INT(top[j].id, idx[j]);
            TT_CHECK_NEAR(top[j].logprob, (double)logl(expl((long double)l[idx[j]]) / sum), 1e-4);
        }
        free(idx);
        free(l);
    }
}

int main(void) {
    TT_RUN(matches_slow_definition);
    return TT_DONE();
}
