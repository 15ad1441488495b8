/* Tool calling, OpenAI's way, over a model's own tool-call syntax: the tools
 * described in the prompt, the output constrained to a call when the request
 * requires one (tool_choice "required" or a named function: a grammar whose
 * arguments follow each function's parameters schema), and the output parsed
 * back into tool calls. No HTTP here. */
#ifndef SRV_TOOLS_H
#define SRV_TOOLS_H

#include "oai.h"

#define SRV_MAX_TOOL_CALLS 8 /* calls one forced answer may make with parallel_tool_calls */

typedef enum srv_tool_format {
    SRV_TOOLFMT_HERMES = 0, /* <tool_call>{"name", "arguments"}</tool_call> (Hermes, Qwen; the default) */
    SRV_TOOLFMT_LLAMA3,     /* {"name", "parameters"} as the whole answer (Llama 3.1+) */
    SRV_TOOLFMT_MISTRAL,    /* [TOOL_CALLS][{"name", "arguments"}, ...] */
} srv_tool_format;

/* The format a chat template writes tool calls in (NULL or unknown: Hermes). */
srv_tool_format srv_tool_format_detect(const char *tmpl, size_t len);
const char *srv_tool_format_name(srv_tool_format f);

/* The system text that describes r's tools and how to call them (malloc'ed). */
char *srv_tools_prompt(const srv_request *r, srv_tool_format f);
/* tool_choice "required" or a named function: r->grammar becomes the call
 * syntax with each function's arguments per its parameters. False: e says
 * which tool's schema cannot be enforced, and why. */
bool srv_tools_grammar(srv_request *r, srv_tool_format f, srv_error *e);

/* The calls in a model's output: content_len is how much of the text comes
 * before them (the assistant's content). Returns how many (0: the output is
 * content only); *calls malloc'ed, ids "call_" + 24 random characters. */
size_t srv_tools_parse(const srv_request *r, srv_tool_format f, const char *text, size_t len, srv_tool_call **calls,
                       size_t *content_len);
void srv_tool_calls_free(srv_tool_call *c, size_t n);

#endif
