/* The sampler against what each setting means: frequencies against the
 * softmax computed here independently, truncations against hand-worked
 * cases, penalties against llama.cpp's formula, seeds for reproducibility. */
#include "tt.h"

#include "trinity.h"

#include <math.h>

static tr_sampler_params plain(void) {
    tr_sampler_params p = tr_sampler_default_params();
    p.temp = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 42;
    return p;
}

TT_TEST(greedy_picks_the_largest) {
    tr_sampler_params p = plain();
    p.temp = 0;
    float logits[5] = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
    tr_sampler *s = tr_sampler_new(&p, 5);
    TT_CHECK(s != NULL);
    for (int i = 0; i < 10; i++) TT_CHECK_EQ_INT(tr_sampler_sample(s, logits), 1);
    tr_sampler_free(s);
}

TT_TEST(frequencies_follow_softmax_over_temperature) {
    const float logits[4] = {1.0f, 0.5f, 0.0f, -1.0f};
    const float temps[2] = {1.0f, 0.5f};
    for (int k = 0; k < 2; k++) {
        tr_sampler_params p = plain();
        p.temp = temps[k];
        tr_sampler *s = tr_sampler_new(&p, 4);
        int counts[4] = {0};
        const int n = 40000;
        for (int i = 0; i < n; i++) counts[tr_sampler_sample(s, logits)]++;
        double z = 0, prob[4];
        for (int i = 0; i < 4; i++) z += exp(logits[i] / temps[k]);
        for (int i = 0; i < 4; i++) {
            prob[i] = exp(logits[i] / temps[k]) / z;
            /* 5 standard deviations of a binomial count */
            double sd = sqrt(n * prob[i] * (1 - prob[i]));
            TT_CHECK(fabs(counts[i] - n * prob[i]) <= 5 * sd + 1);
        }
        tr_sampler_free(s);
    }
}

TT_TEST(top_k_keeps_only_the_k_best) {
    tr_sampler_params p = plain();
    p.top_k = 2;
    float logits[5] = {0.0f, 3.0f, 2.9f, 2.8f, -5.0f};
    tr_sampler *s = tr_sampler_new(&p, 5);
    for (int i = 0; i < 2000; i++) {
        int t = tr_sampler_sample(s, logits);
        TT_CHECK(t == 1 || t == 2);
    }
    tr_sampler_free(s);
}

TT_TEST(top_p_cuts_at_the_cumulative_probability) {
    /* probabilities 0.5, 0.3, 0.2 (from logs); top-p 0.7 keeps the first two
     * (0.5 < 0.7 <= 0.8), never the third */
    tr_sampler_params p = plain();
    p.top_p = 0.7f;
    float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    tr_sampler *s = tr_sampler_new(&p, 3);
    int seen[3] = {0};
    for (int i = 0; i < 4000; i++) seen[tr_sampler_sample(s, logits)]++;
    TT_CHECK(seen[0] > 0 && seen[1] > 0);
    TT_CHECK_EQ_INT(seen[2], 0);
    tr_sampler_free(s);
}

TT_TEST(min_p_drops_tokens_below_a_fraction_of_the_best) {
    /* p = 0.6, 0.3, 0.1: min-p 0.2 keeps p >= 0.12, so not the third */
    tr_sampler_params p = plain();
    p.min_p = 0.2f;
    float logits[3] = {logf(0.6f), logf(0.3f), logf(0.1f)};
    tr_sampler *s = tr_sampler_new(&p, 3);
    int seen[3] = {0};
    for (int i = 0; i < 4000; i++) seen[tr_sampler_sample(s, logits)]++;
    TT_CHECK(seen[0] > 0 && seen[1] > 0);
    TT_CHECK_EQ_INT(seen[2], 0);
    tr_sampler_free(s);
}

TT_TEST(repeat_penalty_follows_llamacpp) {
    /* Token 0 seen: its positive logit is divided by the penalty, so token 1
     * wins greedy; a negative logit would be multiplied. */
    tr_sampler_params p = plain();
    p.temp = 0;
    p.repeat_penalty = 1.5f;
    float logits[3] = {3.0f, 2.5f, -1.0f};
    tr_sampler *s = tr_sampler_new(&p, 3);
    tr_sampler_accept(s, 0);
    TT_CHECK_EQ_INT(tr_sampler_sample(s, logits), 1); /* 3/1.5 = 2 < 2.5 */
    tr_sampler_free(s);

    p.repeat_penalty = 1.0f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.1f;
    s = tr_sampler_new(&p, 3);
    tr_sampler_accept(s, 0);
    tr_sampler_accept(s, 0);
    TT_CHECK_EQ_INT(tr_sampler_sample(s, logits), 1); /* 3 - 2 * 0.1 - 0.4 = 2.4 < 2.5 */
    tr_sampler_free(s);
}

TT_TEST(penalty_window_forgets_old_tokens) {
    tr_sampler_params p = plain();
    p.temp = 0;
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 2;
    float logits[3] = {3.0f, 2.0f, 0.0f};
    tr_sampler *s = tr_sampler_new(&p, 3);
    tr_sampler_accept(s, 0);
    tr_sampler_accept(s, 2);
    tr_sampler_accept(s, 2); /* token 0 has left the window of 2 */
    TT_CHECK_EQ_INT(tr_sampler_sample(s, logits), 0);
    tr_sampler_free(s);
}

TT_TEST(same_seed_same_tokens) {
    float logits[64];
    for (int i = 0; i < 64; i++) logits[i] = sinf((float)i) * 2;
    tr_sampler_params p = plain();
    p.seed = 7;
    tr_sampler *a = tr_sampler_new(&p, 64), *b = tr_sampler_new(&p, 64);
    p.seed = 8;
    tr_sampler *c = tr_sampler_new(&p, 64);
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        int x = tr_sampler_sample(a, logits), y = tr_sampler_sample(b, logits), z = tr_sampler_sample(c, logits);
        TT_CHECK_EQ_INT(x, y);
        differ += x != z;
    }
    TT_CHECK(differ > 0);
    tr_sampler_free(a);
    tr_sampler_free(b);
    tr_sampler_free(c);
}

/* top-k selects in one pass (a heap) instead of sorting the vocabulary:
 * it must keep the same tokens in the same order, ties included (equal
 * logits ordered by id). The check: the same draws as a sampler without
 * top-k given logits where everything but those k best is -inf, with top-p
 * and min-p on (penalties would change which k are best: not here). */
/* A draw depends on the seed and the position only (the tokens accepted
 * before it), not on the draws made before: what lets speculative decoding
 * sample a position once its guesses were accepted and get the same token. */
TT_TEST(draw_depends_on_seed_and_position_only) {
    const float flat[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    tr_sampler_params p = plain();
    int same_pos = 0, differ = 0;
    for (int pos = 0; pos < 64; pos++) {
        tr_sampler *a = tr_sampler_new(&p, 8), *b = tr_sampler_new(&p, 8);
        for (int i = 0; i < pos; i++) tr_sampler_accept(a, i % 8); /* a: remembered tokens */
        for (int i = 0; i < pos; i++) (void)tr_sampler_sample(b, flat); /* b: drew them */
        const int ta = tr_sampler_sample(a, flat), tb = tr_sampler_sample(b, flat);
        same_pos += ta == tb;
        tr_sampler_free(a), tr_sampler_free(b);
        /* another seed, same position: a different stream */
        tr_sampler_params q = p;
        q.seed = p.seed + 1;
        tr_sampler *c = tr_sampler_new(&q, 8);
        for (int i = 0; i < pos; i++) tr_sampler_accept(c, i % 8);
        differ += tr_sampler_sample(c, flat) != ta;
        tr_sampler_free(c);
    }
    TT_CHECK_EQ_INT(same_pos, 64);
    TT_CHECK(differ > 32); /* 7 in 8 expected to differ */
}

TT_TEST(top_k_selection_equals_masking_the_rest) {
    enum { NV = 5000, K = 40 };
    static float logits[NV], masked[NV];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < NV; i++) logits[i] = (float)(int)(tt_rndf() * 40) / 4; /* many ties */
        /* the K best by (logit desc, id asc), found the slow way */
        static int order[NV];
        for (int i = 0; i < NV; i++) order[i] = i;
        for (int i = 0; i < K; i++)
            for (int j = i + 1; j < NV; j++) {
                const float a = logits[order[i]], b = logits[order[j]];
                if (b > a || (b == a && order[j] < order[i])) {
                    int t = order[i];
                    order[i] = order[j];
                    order[j] = t;
                }
            }
        for (int i = 0; i < NV; i++) masked[i] = -INFINITY;
        for (int i = 0; i < K; i++) masked[order[i]] = logits[order[i]];
        tr_sampler_params p = tr_sampler_default_params();
        p.seed = 100 + (uint64_t)round;
        p.top_k = K;
        p.top_p = 0.9f;
        p.min_p = 0.01f;
        tr_sampler *a = tr_sampler_new(&p, NV);
        p.top_k = 0;
        tr_sampler *b = tr_sampler_new(&p, NV);
        for (int i = 0; i < 50; i++) TT_CHECK_EQ_INT(tr_sampler_sample(a, logits), tr_sampler_sample(b, masked));
        tr_sampler_free(a);
        tr_sampler_free(b);
    }
}

/* With top-k off every candidate is sorted (a radix sort above 4096); with
 * top-k 4000 of 6000, by the heap and qsort. The 2000 left out have a
 * logit whose exp underflows to 0, so both see the same survivors and
 * sums: the same tokens, with ties, -0 beside +0 among the likeliest, and
 * penalties (the penalised logits are what is sorted). */
TT_TEST(sorting_every_candidate_equals_the_heap) {
    enum { NV = 6000, OUT = 2000 };
    static float logits[NV];
    for (int round = 0; round < 12; round++) {
        for (int i = 0; i < NV; i++) {
            logits[i] = (float)(int)(tt_rndf() * 6) / 4; /* many ties */
            if (logits[i] == 0 && (tt_rnd() & 1)) logits[i] = -0.0f;
        }
        for (int m = 0; m < OUT;) { /* exactly OUT tokens out of the heap's 4000 */
            const int i = (int)(tt_rnd() % NV);
            if (logits[i] != -1e30f) logits[i] = -1e30f, m++;
        }
        tr_sampler_params p = tr_sampler_default_params();
        p.seed = 7 + (uint64_t)round;
        p.temp = round % 3 == 0 ? 0.3f : 1.5f;
        p.top_p = round % 2 ? 0.999f : 1.0f;
        p.min_p = round % 4 == 1 ? 0.0f : 0.02f;
        p.repeat_penalty = round % 3 == 2 ? 1.3f : 1.0f;
        p.top_k = 0;
        tr_sampler *a = tr_sampler_new(&p, NV);
        p.top_k = NV - OUT;
        tr_sampler *b = tr_sampler_new(&p, NV);
        int differ = 0;
        for (int i = 0; i < 200; i++) differ += tr_sampler_sample(a, logits) != tr_sampler_sample(b, logits);
        TT_CHECK_EQ_INT(differ, 0);
        tr_sampler_free(a);
        tr_sampler_free(b);
    }
}

TT_TEST(bad_arguments) {
    tr_sampler_params p = plain();
    TT_CHECK(tr_sampler_new(&p, 0) == NULL);
    TT_CHECK(tr_sampler_new(NULL, 10) == NULL);
    tr_sampler *s = tr_sampler_new(&p, 4);
    TT_CHECK_EQ_INT(tr_sampler_sample(s, NULL), -1);
    tr_sampler_accept(s, 99); /* out of range: ignored */
    tr_sampler_accept(s, -1);
    tr_sampler_free(s);
    tr_sampler_free(NULL);
}

int main(void) {
    TT_RUN(greedy_picks_the_largest);
    TT_RUN(frequencies_follow_softmax_over_temperature);
    TT_RUN(top_k_keeps_only_the_k_best);
    TT_RUN(top_p_cuts_at_the_cumulative_probability);
    TT_RUN(min_p_drops_tokens_below_a_fraction_of_the_best);
    TT_RUN(repeat_penalty_follows_llamacpp);
    TT_RUN(penalty_window_forgets_old_tokens);
    TT_RUN(same_seed_same_tokens);
    TT_RUN(draw_depends_on_seed_and_position_only);
    TT_RUN(top_k_selection_equals_masking_the_rest);
    TT_RUN(sorting_every_candidate_equals_the_heap);
    TT_RUN(bad_arguments);
    return TT_DONE();
}
