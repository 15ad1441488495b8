/* OpenAI request checking: every bad field answered with the right status and
 * a message and `param` naming it; good requests parsed field by field.
 * Responses, chunks and SSE framing checked by parsing them back with
 * jansson. */
#include "server/oai.h"
#include "tt.h"

#include <stdlib.h>

static tr_sampler_params defaults(void) {
    return (tr_sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                               .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

/* Parse; expect failure with `status` and `param`, and `needle` in the message. */
static void expect_error(srv_kind kind, const char *body, int status, const char *param, const char *needle) {
    srv_request r;
    srv_error e;
    tr_sampler_params d = defaults();
    bool ok = srv_request_parse(kind, body, strlen(body), "gemma", 1000, &d, &r, &e);
    TT_CHECK(!ok);
    if (ok) {
        fprintf(stderr, "    accepted: %s\n", body);
        srv_request_free(&r);
        return;
    }
    if (e.status != status || strcmp(e.param, param) || !strstr(e.message, needle))
        fprintf(stderr, "    body %s -> %d param '%s': %s\n", body, e.status, e.param, e.message);
    TT_CHECK_EQ_INT(e.status, status);
    TT_CHECK_STR(e.param, param);
    TT_CHECK(strstr(e.message, needle) != NULL);
    /* The error body is OpenAI's shape. */
    char *js = srv_error_json(&e);
    json_t *o = json_loads(js, 0, NULL);
    TT_CHECK(o != NULL);
    json_t *err = json_object_get(o, "error");
    TT_CHECK(json_is_string(json_object_get(err, "message")));
    TT_CHECK(json_is_string(json_object_get(err, "type")));
    TT_CHECK(json_object_get(err, "code") != NULL);
    if (param[0]) TT_CHECK_STR(json_string_value(json_object_get(err, "param")), param);
    else TT_CHECK(json_is_null(json_object_get(err, "param")));
    json_decref(o);
    free(js);
}

TT_TEST(malformed_bodies) {
    expect_error(SRV_KIND_CHAT, "{\"messages\": [", 400, "", "not valid JSON");
    expect_error(SRV_KIND_CHAT, "[1,2]", 400, "", "must be a JSON object");
    expect_error(SRV_KIND_CHAT, "", 400, "", "empty");
    expect_error(SRV_KIND_CHAT, "{\"a\":1,\"a\":2}", 400, "", "not valid JSON");
    expect_error(SRV_KIND_CHAT, "{\"messages\":\"\xFF\"}", 400, "", "not valid JSON");
}

TT_TEST(missing_and_wrong_messages) {
    expect_error(SRV_KIND_CHAT, "{}", 400, "messages", "'messages' is required");
    expect_error(SRV_KIND_CHAT, "{\"messages\": null}", 400, "messages", "required");
    expect_error(SRV_KIND_CHAT, "{\"messages\": {}}", 400, "messages", "must be an array");
    expect_error(SRV_KIND_CHAT, "{\"messages\": []}", 400, "messages", "at least one");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [3]}", 400, "messages[0]", "must be an object");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"content\":\"x\"}]}", 400, "messages[0].role", "must be a string");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"wizard\",\"content\":\"x\"}]}", 400, "messages[0].role", "not supported");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"function\",\"content\":\"x\"}]}", 400, "messages[0].role", "not supported");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"assistant\",\"content\":null,\"tool_calls\":{}}]}", 400,
                 "messages[0].tool_calls", "must be an array");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{}}]}]}", 400,
                 "messages[0].tool_calls[0]", "\"name\"");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"user\"}]}", 400, "messages[0].content", "missing");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"user\",\"content\":5}]}", 400, "messages[0].content", "string or an array");
    expect_error(SRV_KIND_CHAT, "{\"messages\": [{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", 400,
                 "messages[0].content[0]", "not supported");
}

TT_TEST(missing_and_wrong_prompt) {
    expect_error(SRV_KIND_COMPLETION, "{}", 400, "prompt", "'prompt' is required");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": 7}", 400, "prompt", "string or a list");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": []}", 400, "prompt", "empty");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": [1, 5000]}", 400, "prompt[1]", "not a token id");
    /* a list of prompts: each checked, named by its place */
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": [\"a\", 7]}", 400, "prompt[1]", "string or a list");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": [\"a\", []]}", 400, "prompt[1]", "empty");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": [[1, 2], [3, 5000]]}", 400, "prompt[1][1]", "not a token id");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": [\"a\", \"b\\u0000\"]}", 400, "prompt[1]", "NUL");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": [\"a\", \"b\", \"c\", \"d\", \"e\"], \"n\": 7}", 400, "n",
                 "at most 32");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\": \"x\", \"echo\": true}", 400, "echo", "not supported");
}

TT_TEST(wrong_field_types_and_ranges) {
    const char *m = "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]";
    char b[512];
#define E(extra, status, param, needle)                       \
    snprintf(b, sizeof b, "{%s, %s}", m, extra);              \
    expect_error(SRV_KIND_CHAT, b, status, param, needle)
    E("\"model\": 3", 400, "model", "must be a string");
    E("\"model\": \"gpt-4\"", 404, "model", "does not exist");
    E("\"temperature\": \"hot\"", 400, "temperature", "must be a number");
    E("\"temperature\": 3", 400, "temperature", "between 0 and 2");
    E("\"top_p\": 1.5", 400, "top_p", "between");
    E("\"max_tokens\": 2.5", 400, "max_tokens", "must be an integer");
    E("\"max_tokens\": 0", 400, "max_tokens", "between 1");
    E("\"max_completion_tokens\": \"9\"", 400, "max_completion_tokens", "must be an integer");
    E("\"stop\": 5", 400, "stop", "string or an array");
    E("\"stop\": [\"a\", 1]", 400, "stop", "stop[1]");
    E("\"seed\": \"x\"", 400, "seed", "integer");
    E("\"presence_penalty\": 9", 400, "presence_penalty", "between -2 and 2");
    E("\"frequency_penalty\": true", 400, "frequency_penalty", "must be a number");
    E("\"n\": 0", 400, "n", "between 1 and 8, got 0");
    E("\"n\": 9", 400, "n", "between 1 and 8, got 9");
    E("\"n\": 2.5", 400, "n", "must be an integer");
    E("\"n\": \"2\"", 400, "n", "must be an integer");
    E("\"best_of\": 2", 400, "best_of", "not supported");
    E("\"stream\": \"yes\"", 400, "stream", "must be a boolean");
    E("\"stream_options\": {\"include_usage\": 1}", 400, "stream_options.include_usage", "boolean");
    E("\"logprobs\": 1", 400, "logprobs", "boolean");
    E("\"top_logprobs\": 3", 400, "top_logprobs", "needs 'logprobs'");
    E("\"logprobs\": true, \"top_logprobs\": 21", 400, "top_logprobs", "between 0 and 20");
    E("\"top_k\": -1", 400, "top_k", "between 0");
    E("\"min_p\": 2", 400, "min_p", "between 0 and 1");
    E("\"repeat_penalty\": 0", 400, "repeat_penalty", "above 0");
    E("\"tools\": [{\"type\":\"function\"}]", 400, "tools[0].function", "must be an object");
    E("\"tools\": {}", 400, "tools", "must be an array");
    E("\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"a b\"}}]", 400, "tools[0].function.name", "letters");
    E("\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\"}},{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]",
      400, "tools[1].function.name", "two tools");
    E("\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]", 400,
      "tools[0].function.parameters", "JSON schema");
    E("\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\"}}], \"tool_choice\": {\"type\":\"function\","
      "\"function\":{\"name\":\"g\"}}", 400, "tool_choice", "'g', which is not in 'tools'");
    E("\"tool_choice\": \"required\"", 400, "tool_choice", "needs 'tools'");
    E("\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\"}}], \"tool_choice\": \"sometimes\"", 400,
      "tool_choice", "must be");
    E("\"tools\": [{\"type\":\"function\",\"function\":{\"name\":\"f\"}}], \"tool_choice\": \"required\", "
      "\"response_format\": {\"type\":\"json_object\"}", 400, "tool_choice", "cannot be combined");
    E("\"parallel_tool_calls\": 1", 400, "parallel_tool_calls", "boolean");
    expect_error(SRV_KIND_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\\u0000b\"}]}", 400,
                 "messages[0].content", "NUL");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"a\\u0000b\"}", 400, "prompt", "NUL");
    E("\"response_format\": {\"type\":\"yaml\"}", 400, "response_format", "not supported");
    E("\"response_format\": \"json\"", 400, "response_format", "string 'type'");
    E("\"response_format\": {\"type\":\"json_schema\"}", 400, "response_format.json_schema", "'name' and 'schema'");
    E("\"response_format\": {\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":"
      "{\"type\":\"string\",\"format\":\"email\"}}}",
      400, "response_format", "keyword 'format' is not supported");
    E("\"response_format\": {\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":"
      "{\"type\":\"array\",\"uniqueItems\":true}}}",
      400, "response_format", "'uniqueItems'");
    E("\"grammar\": \"root ::= foo\"", 400, "grammar", "rule 'foo' is used but not defined");
    E("\"grammar\": 5", 400, "grammar", "must be a string");
    E("\"grammar\": \"root ::= [a]\", \"json_schema\": {}", 400, "grammar", "at most one");
    E("\"json_schema\": {\"type\":\"number\",\"minimum\":1}", 400, "json_schema", "'minimum'");
#undef E
}

TT_TEST(constraints_compile) {
    static const char *const bodies[] = {
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":\"json_object\"}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"response_format\":{\"type\":\"json_schema\","
        "\"json_schema\":{\"name\":\"p\",\"strict\":true,\"schema\":{\"type\":\"object\",\"properties\":"
        "{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"],\"additionalProperties\":false}}}}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"grammar\":\"root ::= \\\"yes\\\" | \\\"no\\\"\"}",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"json_schema\":{\"enum\":[1,2]}}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        srv_request r, copy;
        srv_error e;
        tr_sampler_params d = defaults();
        bool ok = srv_request_parse(SRV_KIND_CHAT, bodies[i], strlen(bodies[i]), "gemma", 1000, &d, &r, &e);
        if (!ok) fprintf(stderr, "    %s: %s\n", bodies[i], e.message);
        TT_CHECK(ok);
        if (!ok) continue;
        TT_CHECK(r.grammar != NULL);
        TT_CHECK(srv_request_copy_settings(&r, &copy));
        TT_CHECK(copy.grammar != NULL && copy.grammar != r.grammar);
        srv_request_free(&copy);
        srv_request_free(&r);
    }
    /* "text" and an empty grammar: no constraint */
    const char *plain = "{\"prompt\":\"x\",\"response_format\":{\"type\":\"text\"},\"grammar\":\"\"}";
    srv_request r;
    srv_error e;
    tr_sampler_params d = defaults();
    TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, plain, strlen(plain), "gemma", 1000, &d, &r, &e));
    TT_CHECK(r.grammar == NULL);
    srv_request_free(&r);
}

TT_TEST(good_chat_request) {
    const char *body =
        "{\"model\":\"gemma\",\"messages\":[{\"role\":\"system\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi \"},{\"type\":\"text\",\"text\":\"there\"}]},"
        "{\"role\":\"assistant\",\"content\":null},{\"role\":\"developer\",\"content\":\"d\"}],"
        "\"max_tokens\":12,\"temperature\":0,\"top_p\":0.5,\"stop\":[\"x\",\"\",\"yz\"],\"seed\":-1,"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"logprobs\":true,\"top_logprobs\":3,"
        "\"n\":1,\"top_k\":7,\"min_p\":0.1,\"repeat_penalty\":1.1,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"ignored\"}";
    srv_request r;
    srv_error e;
    tr_sampler_params d = defaults();
    TT_CHECK(srv_request_parse(SRV_KIND_CHAT, body, strlen(body), "gemma", 1000, &d, &r, &e));
    TT_CHECK_EQ_INT(r.n_msgs, 4);
    TT_CHECK_STR(r.msgs[0].role, "system");
    TT_CHECK_STR(r.msgs[1].content, "hi there");
    TT_CHECK_STR(r.msgs[2].content, "");
    TT_CHECK_STR(r.msgs[3].role, "system");
    TT_CHECK_EQ_INT(r.max_tokens, 12);
    TT_CHECK_NEAR(r.sampling.temp, 0, 0);
    TT_CHECK_NEAR(r.sampling.top_p, 0.5, 1e-6);
    TT_CHECK_NEAR(r.sampling.presence_penalty, 0.5, 1e-6);
    TT_CHECK_NEAR(r.sampling.frequency_penalty, -0.5, 1e-6);
    TT_CHECK_NEAR(r.sampling.min_p, 0.1, 1e-6);
    TT_CHECK_NEAR(r.sampling.repeat_penalty, 1.1, 1e-6);
    TT_CHECK_EQ_INT(r.sampling.top_k, 7);
    TT_CHECK(r.has_seed && r.sampling.seed == UINT64_MAX);
    TT_CHECK_EQ_INT(r.n_stop, 2); /* the empty one is dropped */
    TT_CHECK_STR(r.stop[1], "yz");
    TT_CHECK(r.stream && r.include_usage && r.logprobs);
    TT_CHECK_EQ_INT(r.top_logprobs, 3);
    srv_request_free(&r);
}

TT_TEST(n_choices_from_one_to_eight) {
    const char *bodies[] = {"{\"prompt\":\"p\"}", "{\"prompt\":\"p\",\"n\":1}", "{\"prompt\":\"p\",\"n\":8}",
                            "{\"prompt\":\"p\",\"n\":3.0}", "{\"prompt\":\"p\",\"n\":null}"};
    const int want[] = {1, 1, 8, 3, 1};
    for (int i = 0; i < 5; i++) {
        srv_request r;
        srv_error e;
        tr_sampler_params d = defaults();
        TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, bodies[i], strlen(bodies[i]), "gemma", 1000, &d, &r, &e));
        TT_CHECK_EQ_INT(r.n_choices, want[i]);
        srv_request_free(&r);
    }
}

/* llama-server's speculative settings: an object, false, or flat keys;
 * what is left out stays -1 (the server's setting applies). */
TT_TEST(speculative_settings) {
    const char *bodies[] = {"{\"prompt\":\"p\"}",
                            "{\"prompt\":\"p\",\"speculative\":{\"type\":\"ngram\",\"n_max\":8,\"n_min\":2}}",
                            "{\"prompt\":\"p\",\"speculative\":false}",
                            "{\"prompt\":\"p\",\"speculative.n_max\":5,\"speculative.type\":\"lookahead\"}"};
    const int want[][3] = {{-1, -1, -1}, {TR_SPEC_NGRAM, 8, 2}, {TR_SPEC_NONE, -1, -1}, {TR_SPEC_LOOKAHEAD, 5, -1}};
    for (int i = 0; i < 4; i++) {
        srv_request r;
        srv_error e;
        tr_sampler_params d = defaults();
        TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, bodies[i], strlen(bodies[i]), "gemma", 1000, &d, &r, &e));
        TT_CHECK_EQ_INT((int)r.spec.kind, want[i][0]);
        TT_CHECK_EQ_INT(r.spec.n_max, want[i][1]);
        TT_CHECK_EQ_INT(r.spec.n_min, want[i][2]);
        srv_request_free(&r);
    }
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"p\",\"speculative\":3}", 400, "speculative", "object");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"p\",\"speculative\":{\"type\":\"eagle\"}}", 400,
                 "speculative.type", "ngram");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"p\",\"speculative\":{\"n_max\":0}}", 400,
                 "speculative.n_max", "between 1 and 64");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"p\",\"speculative.n_min\":-1}", 400, "speculative.n_min",
                 "between 0 and 64");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"p\",\"speculative\":{\"n_max\":2,\"n_min\":3}}", 400,
                 "speculative.n_min", "more than");
}

TT_TEST(good_completion_request_defaults) {
    srv_request r;
    srv_error e;
    tr_sampler_params d = defaults();
    const char *b1 = "{\"prompt\":[\"once upon\"],\"stop\":\"\\n\",\"logprobs\":2,\"max_tokens\":null}";
    TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, b1, strlen(b1), "gemma", 1000, &d, &r, &e));
    TT_CHECK(r.n_prompts == 1 && !r.prompts[0].ids);
    TT_CHECK_STR(r.prompts[0].text, "once upon");
    TT_CHECK_EQ_INT(r.max_tokens, -1);
    TT_CHECK_NEAR(r.sampling.temp, 0.8, 1e-6); /* left to the defaults */
    TT_CHECK_EQ_INT(r.sampling.top_k, 40);
    TT_CHECK(!r.has_seed && !r.stream);
    TT_CHECK(r.logprobs && r.top_logprobs == 2);
    TT_CHECK(r.cache_prompt && !r.ignore_eos); /* llama-server's defaults */
    TT_CHECK_EQ_INT(r.n_stop, 1);
    TT_CHECK_STR(r.stop[0], "\n");
    srv_request_free(&r);
    const char *b2 = "{\"prompt\":[2, 17, 999]}";
    TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, b2, strlen(b2), "gemma", 1000, &d, &r, &e));
    TT_CHECK(r.n_prompts == 1 && r.prompts[0].text == NULL && r.prompts[0].n_ids == 3 && r.prompts[0].ids[2] == 999);
    srv_request_free(&r);
    /* A list of prompts, strings and token lists mixed, as the OpenAI API takes them. */
    const char *b4 = "{\"prompt\":[\"one\", [5, 6], \"three\"], \"n\": 2}";
    TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, b4, strlen(b4), "gemma", 1000, &d, &r, &e));
    TT_CHECK(r.n_prompts == 3 && r.n_choices == 2);
    TT_CHECK_STR(r.prompts[0].text, "one");
    TT_CHECK(r.prompts[1].text == NULL && r.prompts[1].n_ids == 2 && r.prompts[1].ids[0] == 5 && r.prompts[1].ids[1] == 6);
    TT_CHECK_STR(r.prompts[2].text, "three");
    srv_request_free(&r);
    const char *b3 = "{\"prompt\":\"x\",\"cache_prompt\":false,\"ignore_eos\":true}";
    TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, b3, strlen(b3), "gemma", 1000, &d, &r, &e));
    TT_CHECK(!r.cache_prompt && r.ignore_eos);
    srv_request_free(&r);
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"x\",\"cache_prompt\":1}", 400, "cache_prompt", "boolean");
    expect_error(SRV_KIND_COMPLETION, "{\"prompt\":\"x\",\"ignore_eos\":\"yes\"}", 400, "ignore_eos", "boolean");
}

static size_t fake_piece(void *ctx, int32_t id, char *buf, size_t cap) {
    (void)ctx;
    const char *p = id == 1 ? "Hi" : id == 2 ? "\xE2\x82" : "!";
    size_t n = strlen(p);
    memcpy(buf, p, n < cap ? n : cap);
    return n;
}

TT_TEST(responses_and_chunks) {
    srv_token_lp lp[2] = {{.id = 1, .logprob = -0.25f, .off = 0, .n_top = 2, .top = {{1, -0.25f}, {3, -1.5f}}},
                          {.id = 2, .logprob = -INFINITY, .off = 2, .n_top = 0}};
    srv_result r = {.kind = SRV_KIND_CHAT, .id = "chatcmpl-1", .created = 42, .model = "gemma",
                    .text = "Hi\xE2\x82", .text_len = 4, .lp = lp, .n_lp = 2, .finish = SRV_FINISH_LENGTH,
                    .prompt_tokens = 5, .completion_tokens = 2, .piece = fake_piece};
    json_t *o = srv_response_json(&r, 1);
    char *s = json_dumps(o, JSON_COMPACT);
    json_t *back = json_loads(s, 0, NULL); /* what a client reads */
    TT_CHECK(back != NULL);
    TT_CHECK_STR(json_string_value(json_object_get(back, "object")), "chat.completion");
    json_t *ch = json_array_get(json_object_get(back, "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(ch, "message"), "content")), "Hi\xEF\xBF\xBD");
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "length");
    json_t *content = json_object_get(json_object_get(ch, "logprobs"), "content");
    TT_CHECK_EQ_INT(json_array_size(content), 2);
    TT_CHECK_NEAR(json_real_value(json_object_get(json_array_get(content, 1), "logprob")), -9999.0, 0);
    TT_CHECK_EQ_INT(json_array_size(json_object_get(json_array_get(content, 1), "bytes")), 2);
    TT_CHECK_EQ_INT(json_array_size(json_object_get(json_array_get(content, 0), "top_logprobs")), 2);
    json_t *u = json_object_get(back, "usage");
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(u, "total_tokens")), 7);
    json_decref(back);
    json_decref(o);
    free(s);

    /* Legacy completion logprobs. */
    r.kind = SRV_KIND_COMPLETION;
    o = srv_response_json(&r, 1);
    json_t *lpo = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "logprobs");
    TT_CHECK_EQ_INT(json_array_size(json_object_get(lpo, "tokens")), 2);
    TT_CHECK_EQ_INT(json_integer_value(json_array_get(json_object_get(lpo, "text_offset"), 1)), 2);
    TT_CHECK_NEAR(json_real_value(json_object_get(json_array_get(json_object_get(lpo, "top_logprobs"), 0), "!")), -1.5, 1e-6);
    json_decref(o);
}

TT_TEST(settings_copy_owns_its_stop_strings) {
    const char *body = "{\"prompt\":\"p\",\"stop\":[\"ab\",\"c\"],\"seed\":5,\"temperature\":0.5,"
                       "\"max_tokens\":9,\"logprobs\":2}";
    srv_request r, c;
    srv_error e;
    tr_sampler_params d = defaults();
    TT_CHECK(srv_request_parse(SRV_KIND_COMPLETION, body, strlen(body), "gemma", 1000, &d, &r, &e));
    TT_CHECK(srv_request_copy_settings(&r, &c));
    srv_request_free(&r); /* the copy must not share anything with it */
    TT_CHECK(c.prompts == NULL && c.n_prompts == 0 && c.msgs == NULL);
    TT_CHECK_EQ_INT(c.n_stop, 2);
    TT_CHECK_STR(c.stop[0], "ab");
    TT_CHECK_STR(c.stop[1], "c");
    TT_CHECK(c.has_seed && c.sampling.seed == 5);
    TT_CHECK_NEAR(c.sampling.temp, 0.5, 1e-6);
    TT_CHECK(c.max_tokens == 9 && c.logprobs && c.top_logprobs == 2 && c.n_choices == 1);
    srv_request_free(&c);
}

TT_TEST(several_choices_carry_their_index) {
    srv_result r[3];
    const char *texts[3] = {"a", "bb", "ccc"};
    for (int i = 0; i < 3; i++)
        r[i] = (srv_result){.kind = SRV_KIND_COMPLETION, .index = i, .id = "cmpl-1", .created = 42,
                            .model = "gemma", .text = texts[i], .text_len = strlen(texts[i]),
                            .finish = i == 1 ? SRV_FINISH_STOP : SRV_FINISH_LENGTH,
                            .prompt_tokens = 4, .completion_tokens = 6};
    json_t *o = srv_response_json(r, 3);
    json_t *choices = json_object_get(o, "choices");
    TT_CHECK_EQ_INT(json_array_size(choices), 3);
    for (int i = 0; i < 3; i++) {
        json_t *ch = json_array_get(choices, (size_t)i);
        TT_CHECK_EQ_INT(json_integer_value(json_object_get(ch, "index")), i);
        TT_CHECK_STR(json_string_value(json_object_get(ch, "text")), texts[i]);
        TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), i == 1 ? "stop" : "length");
    }
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(o, "usage"), "total_tokens")), 10);
    json_decref(o);
    r[2].kind = SRV_KIND_CHAT;
    r[2].prompt_tokens = -1;
    o = srv_chunk_json(&r[2]);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0);
    TT_CHECK_EQ_INT(json_integer_value(json_object_get(ch, "index")), 2);
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(ch, "delta"), "content")), "ccc");
    json_decref(o);
}

TT_TEST(sse_framing) {
    srv_result r = {.kind = SRV_KIND_CHAT, .id = "chatcmpl-1", .created = 42, .model = "gemma",
                    .text = "line1\nline2", .text_len = 11, .first = true, .prompt_tokens = -1};
    srv_buf b = {0};
    json_t *o = srv_chunk_json(&r);
    TT_CHECK(srv_sse_event(&b, o));
    json_decref(o);
    r.first = false;
    r.text_len = 0;
    r.finish = SRV_FINISH_STOP;
    o = srv_chunk_json(&r);
    TT_CHECK(srv_sse_event(&b, o));
    json_decref(o);
    TT_CHECK(srv_sse_done(&b));
    /* Split into events on blank lines; each is exactly one "data: " line. */
    int n = 0;
    char *save, *ev = b.p, *next;
    (void)save;
    json_t *events[3] = {0};
    while (ev && *ev) {
        next = strstr(ev, "\n\n");
        TT_CHECK(next != NULL);
        if (!next) break;
        *next = '\0';
        TT_CHECK(!strncmp(ev, "data: ", 6));
        TT_CHECK(strchr(ev, '\n') == NULL);
        if (n < 3) events[n] = strcmp(ev + 6, "[DONE]") ? json_loads(ev + 6, 0, NULL) : NULL;
        n++;
        ev = next + 2;
    }
    TT_CHECK_EQ_INT(n, 3);
    json_t *c0 = json_array_get(json_object_get(events[0], "choices"), 0);
    TT_CHECK_STR(json_string_value(json_object_get(events[0], "object")), "chat.completion.chunk");
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(c0, "delta"), "role")), "assistant");
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(c0, "delta"), "content")), "line1\nline2");
    TT_CHECK(json_is_null(json_object_get(c0, "finish_reason")));
    json_t *c1 = json_array_get(json_object_get(events[1], "choices"), 0);
    TT_CHECK_EQ_INT(json_object_size(json_object_get(c1, "delta")), 0);
    TT_CHECK_STR(json_string_value(json_object_get(c1, "finish_reason")), "stop");
    TT_CHECK(events[2] == NULL); /* [DONE] */
    json_decref(events[0]);
    json_decref(events[1]);
    srv_buf_free(&b);
}

int main(void) {
    TT_RUN(malformed_bodies);
    TT_RUN(missing_and_wrong_messages);
    TT_RUN(missing_and_wrong_prompt);
    TT_RUN(wrong_field_types_and_ranges);
    TT_RUN(constraints_compile);
    TT_RUN(good_chat_request);
    TT_RUN(n_choices_from_one_to_eight);
    TT_RUN(speculative_settings);
    TT_RUN(good_completion_request_defaults);
    TT_RUN(responses_and_chunks);
    TT_RUN(settings_copy_owns_its_stop_strings);
    TT_RUN(several_choices_carry_their_index);
    TT_RUN(sse_framing);
    return TT_DONE();
}
