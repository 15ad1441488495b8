/* Log-probabilities of the model's raw distribution (log-softmax of the
 * logits), as the OpenAI API reports them: the chosen token's and the k most
 * likely alternatives. Sampling settings do not change them. */
#ifndef SRV_LOGPROBS_H
#define SRV_LOGPROBS_H

#include <stdint.h>

#define SRV_MAX_TOP_LOGPROBS 20

typedef struct srv_top {
    int32_t id;
    float logprob;
} srv_top;

/* Returns log p(id). Fills top[0..k) (k <= SRV_MAX_TOP_LOGPROBS, k <= n) with
 * the k most likely tokens, most likely first; ties go to the lower id. */
float srv_logprobs(const float *logits, int32_t n, int32_t id, int k, srv_top *top);

#endif
