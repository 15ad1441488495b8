/* Tool calling's pure parts: the format a template implies, the calls parsed
 * out of each format's output (arguments compared as JSON with jansson), the
 * forced-call grammar (what it accepts and refuses, and that its sentences
 * parse back into the same calls), and tool turns of a chat's history. */
#include "server/oai.h"
#include "server/tools.h"
#include "tt.h"

#include <stdlib.h>

static const char *TOOLS =
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"parameters\":{\"type\":\"object\","
    "\"properties\":{\"city\":{\"type\":\"string\"},\"unit\":{\"enum\":[\"c\",\"f\"]}},\"required\":[\"city\"],"
    "\"additionalProperties\":false}}},{\"type\":\"function\",\"function\":{\"name\":\"add\",\"parameters\":"
    "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":\"integer\"}},\"required\":"
    "[\"a\",\"b\"],\"additionalProperties\":false}}}]";

static bool request(srv_request *r, const char *extra) {
    char body[2048];
    snprintf(body, sizeof body, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],%s%s%s}", TOOLS,
             extra[0] ? "," : "", extra);
    tr_sampler_params d = tr_sampler_default_params();
    srv_error e;
    bool ok = srv_request_parse(SRV_KIND_CHAT, body, strlen(body), "m", 1000, &d, r, &e);
    if (!ok) fprintf(stderr, "    %s: %s\n", body, e.message);
    return ok;
}

static bool same_json(const char *a, const char *b) {
    json_t *x = json_loads(a, JSON_DECODE_ANY, NULL), *y = json_loads(b, JSON_DECODE_ANY, NULL);
    bool eq = x && y && json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return eq;
}

TT_TEST(format_from_template) {
    const char *h = "{% for tool in tools %}<tool_call>{{ tool }}</tool_call>{% endfor %}";
    const char *m = "{{ '[TOOL_CALLS]' }}[{{ calls }}]";
    const char *l = "<|start_header_id|>ipython<|end_header_id|> {\"name\": ..., \"parameters\": ...}";
    TT_CHECK_EQ_INT(srv_tool_format_detect(h, strlen(h)), SRV_TOOLFMT_HERMES);
    TT_CHECK_EQ_INT(srv_tool_format_detect(m, strlen(m)), SRV_TOOLFMT_MISTRAL);
    TT_CHECK_EQ_INT(srv_tool_format_detect(l, strlen(l)), SRV_TOOLFMT_LLAMA3);
    TT_CHECK_EQ_INT(srv_tool_format_detect(NULL, 0), SRV_TOOLFMT_HERMES);
    TT_CHECK_EQ_INT(srv_tool_format_detect("{{ messages }}", 14), SRV_TOOLFMT_HERMES);
}

TT_TEST(parse_each_format) {
    srv_request r;
    TT_CHECK(request(&r, ""));
    TT_CHECK_EQ_INT(r.tool_choice, SRV_TOOLS_AUTO);
    static const struct {
        srv_tool_format f;
        const char *text;
        size_t n, content;
        const char *name0, *args0, *name1, *args1;
    } cases[] = {
        {SRV_TOOLFMT_HERMES,
         "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n"
         "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
         2, 13, "get_weather", "{\"city\":\"Paris\"}", "add", "{\"a\":1,\"b\":2}"},
        {SRV_TOOLFMT_HERMES, "<tool_call>{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}</tool_call><tool_call>{\"na",
         1, 0, "add", "{\"a\":1,\"b\":2}", NULL, NULL}, /* the cut-off second call is dropped */
        {SRV_TOOLFMT_HERMES, "<tool_call>{\"name\":\"nope\",\"arguments\":{}}</tool_call>", 0, 0, NULL, NULL, NULL, NULL},
        {SRV_TOOLFMT_HERMES, "<tool_call>{\"name\":\"add\",\"arguments\":{</tool_call>", 0, 0, NULL, NULL, NULL, NULL},
        {SRV_TOOLFMT_HERMES, "no calls here", 0, 0, NULL, NULL, NULL, NULL},
        {SRV_TOOLFMT_LLAMA3, " {\"name\": \"add\", \"parameters\": {\"a\": 5, \"b\": 6}}", 1, 0, "add", "{\"a\":5,\"b\":6}",
         NULL, NULL},
        {SRV_TOOLFMT_LLAMA3, "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}", 1, 0,
         "get_weather", "{\"city\":\"Oslo\"}", NULL, NULL},
        {SRV_TOOLFMT_LLAMA3, "The answer is 11.", 0, 0, NULL, NULL, NULL, NULL},
        {SRV_TOOLFMT_MISTRAL,
         "[TOOL_CALLS][{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}, {\"name\": \"get_weather\", "
         "\"arguments\": {\"city\": \"Rome\", \"unit\": \"c\"}}]",
         2, 0, "add", "{\"a\":1,\"b\":2}", "get_weather", "{\"city\":\"Rome\",\"unit\":\"c\"}"},
        {SRV_TOOLFMT_MISTRAL, "[{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": 2}\"}]", 1, 0, "add",
         "{\"a\":1,\"b\":2}", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_tool_call *calls = NULL;
        size_t content = 99;
        size_t n = srv_tools_parse(&r, cases[i].f, cases[i].text, strlen(cases[i].text), &calls, &content);
        if (n != cases[i].n) fprintf(stderr, "    case %zu: %zu calls\n", i, n);
        TT_CHECK_EQ_INT((int)n, (int)cases[i].n);
        if (n == cases[i].n && n > 0) {
            TT_CHECK_EQ_INT((int)content, (int)cases[i].content);
            TT_CHECK_STR(calls[0].name, cases[i].name0);
            TT_CHECK(same_json(calls[0].arguments, cases[i].args0));
            TT_CHECK(!strncmp(calls[0].id, "call_", 5) && strlen(calls[0].id) == 29);
            if (n > 1) {
                TT_CHECK_STR(calls[1].name, cases[i].name1);
                TT_CHECK(same_json(calls[1].arguments, cases[i].args1));
                TT_CHECK(strcmp(calls[0].id, calls[1].id) != 0);
            }
        }
        srv_tool_calls_free(calls, n);
    }
    srv_request_free(&r);
}

TT_TEST(forced_call_grammar) {
    static const struct {
        const char *extra;
        srv_tool_format f;
        const char *text;
        int want; /* tr_grammar_match */
    } cases[] = {
        {"\"tool_choice\":\"required\",\"parallel_tool_calls\":false", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":-2}}\n</tool_call>", 2},
        {"\"tool_choice\":\"required\",\"parallel_tool_calls\":false", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":\"x\"}}\n</tool_call>", 0},
        {"\"tool_choice\":\"required\",\"parallel_tool_calls\":false", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\":\"c\"}}\n</tool_call>", 0}, /* city required */
        {"\"tool_choice\":\"required\",\"parallel_tool_calls\":false", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":2}}\n</tool_call>\n<tool_call>", 0},
        {"\"tool_choice\":\"required\"", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":2}}\n</tool_call>\n<tool_call>\n{\"name\": "
         "\"get_weather\", \"arguments\": {\"city\":\"Rome\"}}\n</tool_call>",
         2},
        {"\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"add\"", 0},
        {"\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}", SRV_TOOLFMT_HERMES,
         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Rome\",\"unit\":\"f\"}}\n</tool_call>", 2},
        {"\"tool_choice\":\"required\"", SRV_TOOLFMT_LLAMA3, "{\"name\": \"add\", \"parameters\": {\"a\":1,\"b\":2}}", 2},
        {"\"tool_choice\":\"required\"", SRV_TOOLFMT_MISTRAL,
         "[{\"name\": \"add\", \"arguments\": {\"a\":1,\"b\":2}}, {\"name\": \"add\", \"arguments\": {\"a\":3,\"b\":4}}]", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        srv_request r;
        srv_error e;
        TT_CHECK(request(&r, cases[i].extra));
        TT_CHECK(srv_tools_grammar(&r, cases[i].f, &e));
        if (!r.grammar) {
            srv_request_free(&r);
            continue;
        }
        int got = tr_grammar_match(r.grammar, cases[i].text, strlen(cases[i].text));
        if (got != cases[i].want) fprintf(stderr, "    case %zu: %d\n", i, got);
        TT_CHECK_EQ_INT(got, cases[i].want);
        if (got == 2) { /* a sentence of the grammar parses back into calls */
            srv_tool_call *calls = NULL;
            size_t content;
            size_t n = srv_tools_parse(&r, cases[i].f, cases[i].text, strlen(cases[i].text), &calls, &content);
            TT_CHECK(n >= 1);
            srv_tool_calls_free(calls, n);
        }
        srv_request_free(&r);
    }
    /* a parameters schema the grammar cannot enforce: 400 naming the tool */
    srv_request r;
    srv_error e;
    tr_sampler_params d = tr_sampler_default_params();
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tool_choice\":\"required\",\"tools\":"
                       "[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\","
                       "\"properties\":{\"e\":{\"type\":\"string\",\"format\":\"email\"}}}}}]}";
    TT_CHECK(srv_request_parse(SRV_KIND_CHAT, body, strlen(body), "m", 1000, &d, &r, &e));
    TT_CHECK(!srv_tools_grammar(&r, SRV_TOOLFMT_HERMES, &e));
    TT_CHECK_EQ_INT(e.status, 400);
    TT_CHECK_STR(e.param, "tools[0].function.parameters");
    TT_CHECK(strstr(e.message, "'format'") != NULL);
    srv_request_free(&r);
}

TT_TEST(tool_turns_in_history) {
    const char *body =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"add 1 and 2\"},{\"role\":\"assistant\",\"content\":null,"
        "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"add\",\"arguments\":"
        "\"{\\\"a\\\":1,\\\"b\\\":2}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"3\"}]}";
    srv_request r;
    srv_error e;
    tr_sampler_params d = tr_sampler_default_params();
    TT_CHECK(srv_request_parse(SRV_KIND_CHAT, body, strlen(body), "m", 1000, &d, &r, &e));
    if (r.n_msgs != 3) {
        TT_CHECK(0);
        return;
    }
    TT_CHECK_STR(r.msgs[1].role, "assistant");
    TT_CHECK(strstr(r.msgs[1].content, "<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}\n</tool_call>") != NULL);
    TT_CHECK_STR(r.msgs[2].role, "tool"); /* the built-in formats write it as the user's turn (serve's e_chat) */
    TT_CHECK_STR(r.msgs[2].content, "<tool_response>\n3\n</tool_response>");
    srv_request_free(&r);
}

TT_TEST(response_json_carries_calls) {
    srv_tool_call calls[2] = {{"call_a", "add", "{\"a\":1}"}, {"call_b", "get_weather", "{}"}};
    srv_result r = {.kind = SRV_KIND_CHAT, .id = "chatcmpl-1", .model = "m", .text = "\n", .text_len = 1,
                    .finish = SRV_FINISH_TOOL_CALLS, .prompt_tokens = -1, .calls = calls, .n_calls = 2};
    json_t *o = srv_response_json(&r, 1);
    json_t *ch = json_array_get(json_object_get(o, "choices"), 0), *msg = json_object_get(ch, "message");
    TT_CHECK_STR(json_string_value(json_object_get(ch, "finish_reason")), "tool_calls");
    TT_CHECK(json_is_null(json_object_get(msg, "content")));
    json_t *tc = json_object_get(msg, "tool_calls");
    TT_CHECK_EQ_INT((int)json_array_size(tc), 2);
    TT_CHECK_STR(json_string_value(json_object_get(json_array_get(tc, 1), "id")), "call_b");
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(tc, 0), "function"), "arguments")),
                 "{\"a\":1}");
    json_decref(o);
    r.finish = SRV_FINISH_NONE;
    o = srv_chunk_json(&r);
    json_t *delta = json_object_get(json_array_get(json_object_get(o, "choices"), 0), "delta");
    tc = json_object_get(delta, "tool_calls");
    TT_CHECK_EQ_INT((int)json_integer_value(json_object_get(json_array_get(tc, 1), "index")), 1);
    TT_CHECK_STR(json_string_value(json_object_get(json_object_get(json_array_get(tc, 1), "function"), "name")),
                 "get_weather");
    json_decref(o);
}

int main(void) {
    TT_RUN(format_from_template);
    TT_RUN(parse_each_format);
    TT_RUN(forced_call_grammar);
    TT_RUN(tool_turns_in_history);
    TT_RUN(response_json_carries_calls);
    return TT_DONE();
}
