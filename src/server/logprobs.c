#include "logprobs.h"

#include <math.h>

float srv_logprobs(const float *logits, int32_t n, int32_t id, int k, srv_top *top) {
    float mx = -INFINITY;
    for (int32_t i = 0; i < n; i++)
        if (logits[i] > mx) mx = logits[i];
    /* Double accumulation: 262k terms in float would lose the small ones. */
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double)logits[i] - (double)mx);
    double lse = (double)mx + log(sum);

    if (k > SRV_MAX_TOP_LOGPROBS) k = SRV_MAX_TOP_LOGPROBS;
    if (k > n) k = n;
    /* Insertion into a sorted array of at most 20: one pass over the vocabulary. */
    int have = 0;
    for (int32_t i = 0; i < n && k > 0; i++) {
        float v = logits[i];
        if (have == k && !(v > top[k - 1].logprob)) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && top[j - 1].logprob < v) {
            top[j] = top[j - 1];
            j--;
        }
        top[j].id = i;
        top[j].logprob = v;
    }
    for (int j = 0; j < have; j++) top[j].logprob = (float)((double)top[j].logprob - lse);
    return (float)((double)logits[id] - lse);
}
