/* libFuzzer: any bytes as a request body, for both endpoints. Parsing must
 * never crash or leak, and every error must serialise to valid JSON; every
 * accepted request's fields must be within their documented ranges. */
#include "server/oai.h"
#include "server/tools.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tr_sampler_params d = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .repeat_penalty = 1.0f};
    for (int k = 1; k <= 2; k++) {
        srv_request r;
        srv_error e;
        if (srv_request_parse((srv_kind)k, (const char *)data, size, "m", 1000, &d, &r, &e)) {
            if (r.max_tokens == 0 || r.n_stop > SRV_MAX_STOP || r.top_logprobs > SRV_MAX_TOP_LOGPROBS) abort();
            if (r.n_choices < 1 || r.n_choices > SRV_MAX_CHOICES) abort();
            if (r.sampling.temp < 0 || r.sampling.temp > 2 || r.sampling.top_p < 0 || r.sampling.top_p > 1) abort();
            if (k == SRV_KIND_COMPLETION && (r.n_prompts < 1 || r.n_prompts * (size_t)r.n_choices > SRV_MAX_JOBS))
                abort();
            for (size_t p = 0; p < r.n_prompts; p++) {
                if (!r.prompts[p].text == !r.prompts[p].ids) abort();
                for (size_t i = 0; i < r.prompts[p].n_ids; i++)
                    if (r.prompts[p].ids[i] < 0 || r.prompts[p].ids[i] >= 1000) abort();
            }
            if (r.tools) { /* the body as a model's output, in every format; the forced-call grammar */
                for (int f = 0; f < 3; f++) {
                    srv_tool_call *calls = NULL;
                    size_t content = 0;
                    size_t n = srv_tools_parse(&r, (srv_tool_format)f, (const char *)data, size, &calls, &content);
                    if (content > size) abort();
                    for (size_t i = 0; i < n; i++) {
                        json_t *a = json_loads(calls[i].arguments, JSON_DECODE_ANY, NULL);
                        json_decref(a); /* a string argument need not be JSON: only must not crash */
                    }
                    srv_tool_calls_free(calls, n);
                    srv_error te;
                    srv_request copy;
                    if (srv_request_copy_settings(&r, &copy)) {
                        if (copy.tool_choice == SRV_TOOLS_OFF) copy.tool_choice = SRV_TOOLS_REQUIRED;
                        if (srv_tools_grammar(&copy, (srv_tool_format)f, &te) && !copy.grammar) abort();
                        srv_request_free(&copy);
                    }
                }
            }
            srv_request_free(&r);
        } else {
            char *js = srv_error_json(&e);
            json_t *o = js ? json_loads(js, 0, NULL) : NULL;
            if (!o || (e.status != 400 && e.status != 404 && e.status != 500)) abort();
            json_decref(o);
            free(js);
        }
    }
    return 0;
}
