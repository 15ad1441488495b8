/* libFuzzer: any bytes as a Jinja template, rendered with a conversation
 * that has tool calls, tool results and tools. Parsing and rendering must
 * never crash, hang or leak; a template that loops or grows without end is
 * stopped by the render's budget (steps, output, memory) with an error;
 * every failure has a message. */
#include "trinity.h"

#include <stdlib.h>
#include <string.h>

static const char vars[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": \"Weather in Par\\u00eds? \\ud83d\\ude00\"},"
    " {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"c1\", \"type\": \"function\","
    "  \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": [1, 2.5, true, null]}}}]},"
    " {\"role\": \"tool\", \"tool_call_id\": \"c1\", \"content\": \"{\\\"t\\\": 21}\"},"
    " {\"role\": \"assistant\", \"content\": \"21 C\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\":"
    "  {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"documents\": null}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tr_template *t = NULL;
    tr_error err = {{0}};
    if (tr_template_parse((const char *)data, size, &t, &err) != TR_OK) {
        if (!err.msg[0] || t) abort();
        return 0;
    }
    tr_template_opts o = {.max_output = 1 << 20, .max_steps = 200000, .max_memory = 64 << 20, .now = 1700000000};
    char *out = NULL;
    if (tr_template_render(t, vars, &o, &out, &err) == TR_OK) {
        if (!out || strlen(out) > o.max_output) abort();
        free(out);
    } else if (!err.msg[0] || out) {
        abort();
    }
    tr_template_free(t);
    return 0;
}
