/* The OpenAI wire format: requests parsed and checked into srv_request,
 * responses, stream chunks and errors built as JSON. No HTTP, no engine here:
 * everything is a pure function of its inputs, unit-tested on its own. */
#ifndef SRV_OAI_H
#define SRV_OAI_H

#include "logprobs.h"
#include "srv_util.h"
#include "trinity.h"

#include <jansson.h>

typedef enum srv_kind {
    SRV_KIND_CHAT = 1,       /* POST /v1/chat/completions */
    SRV_KIND_COMPLETION = 2, /* POST /v1/completions */
} srv_kind;

/* An error as the client sees it: HTTP status and OpenAI's error object. */
typedef struct srv_error {
    int status;
    const char *type;  /* "invalid_request_error", "server_error", ... */
    const char *code;  /* NULL, or "model_not_found", "context_length_exceeded", ... */
    char param[96];    /* the request field at fault, "" when none */
    char message[480];
} srv_error;

void srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* {"error": {"message", "type", "param", "code"}} as a malloc'ed string. */
char *srv_error_json(const srv_error *e);

typedef enum srv_tool_choice {
    SRV_TOOLS_OFF = 0,   /* no tools, or tool_choice "none" */
    SRV_TOOLS_AUTO,      /* the model may call tools: its output is parsed for calls */
    SRV_TOOLS_REQUIRED,  /* it must call one (or more, with parallel_tool_calls) */
    SRV_TOOLS_NAMED,     /* it must call tool_name */
} srv_tool_choice;

/* One parsed tool call. */
typedef struct srv_tool_call {
    char id[32];
    char *name, *arguments; /* arguments: JSON text */
} srv_tool_call;

#define SRV_MAX_STOP 16
#define SRV_MAX_STOP_LEN 256
#define SRV_MAX_CHOICES 8 /* "n": the choices one request may ask for */
#define SRV_MAX_JOBS 32   /* prompts x "n": the generations one request may ask for */

/* One prompt of a completion request: text (owned), or token ids when text is NULL. */
typedef struct srv_prompt {
    char *text;
    int32_t *ids;
    size_t n_ids;
} srv_prompt;

typedef struct srv_request {
    srv_kind kind;
    /* chat: the conversation (strings owned) */
    tr_chat_msg *msgs;
    size_t n_msgs;
    char *messages_json; /* chat: 'messages' as sent (owned JSON text): what the chat template renders */
    char *tools_json;    /* chat: 'tools' as sent (owned JSON text), NULL when not given */
    /* completion: the prompts, in order (a string, a list of token ids, or a list of either:
     * one choice per prompt and "n", index = prompt * n + choice, as OpenAI numbers them) */
    srv_prompt *prompts;
    size_t n_prompts;
    /* generation */
    int32_t max_tokens;        /* -1: until the context is full */
    int n_choices;             /* "n": 1..SRV_MAX_CHOICES */
    tr_sampler_params sampling;
    bool has_seed;             /* false: the server picks one */
    bool stream;
    bool include_usage;        /* stream_options.include_usage */
    bool logprobs;
    int top_logprobs;          /* 0..SRV_MAX_TOP_LOGPROBS */
    bool cache_prompt;         /* llama-server's field: reuse and keep prefix-cache blocks (default true) */
    bool ignore_eos;           /* llama-server's field: generate past end-of-generation tokens */
    /* "speculative": {"type", "n_max", "n_min"} (or llama-server's flat
     * "speculative.n_max", "speculative.n_min"); a field < 0 was not given:
     * the server's setting applies. "speculative": false turns it off. */
    tr_spec_params spec;
    char **stop;               /* owned, none empty */
    size_t n_stop;
    /* The output's grammar (owned; NULL: free text): from "grammar" (GBNF),
     * "response_format" (json_object, json_schema) or llama-server's
     * "json_schema". */
    tr_grammar *grammar;
    /* "tools" (the validated array, a reference), "tool_choice",
     * "parallel_tool_calls" (default true). */
    json_t *tools;
    srv_tool_choice tool_choice;
    char *tool_name;
    bool parallel_tool_calls;
    /* Set by the server, not parsed: messages the context shift dropped (chat_fit.h). */
    int32_t ctx_dropped;
} srv_request;

/* Parse and check a request body. model_id: the name the server answers to
 * (a different "model" is a 404). n_vocab bounds prompt token ids. defaults:
 * sampling settings for fields the request leaves out. On failure fills e
 * (status 400/404, param naming the field) and returns false; *out is then
 * empty and needs no free. */
bool srv_request_parse(srv_kind kind, const char *body, size_t len, const char *model_id,
                       int32_t n_vocab, const tr_sampler_params *defaults, srv_request *out,
                       srv_error *e);
void srv_request_free(srv_request *r);
/* dst: src's generation settings (every field but the conversation and the
 * prompt, which dst leaves empty), with its own copy of the stop strings, so
 * that each of a request's choices owns what its job reads. False: out of
 * memory, dst empty. */
bool srv_request_copy_settings(const srv_request *src, srv_request *dst);

/* One generated token's log-probabilities. `off`: where its bytes begin in
 * the generated text. */
typedef struct srv_token_lp {
    int32_t id;
    float logprob;
    uint32_t off;
    uint8_t n_top;
    srv_top top[SRV_MAX_TOP_LOGPROBS];
} srv_token_lp;

/* The bytes of a token, for logprobs ("token" and "bytes"). */
typedef size_t (*srv_piece_fn)(void *ctx, int32_t id, char *buf, size_t cap);

typedef enum srv_finish { SRV_FINISH_NONE = 0, SRV_FINISH_STOP, SRV_FINISH_LENGTH, SRV_FINISH_TOOL_CALLS } srv_finish;
const char *srv_finish_str(srv_finish f);

/* What a response or a stream chunk carries. text is raw generated bytes
 * (sanitised to UTF-8 here). */
typedef struct srv_result {
    srv_kind kind;
    int index;          /* the choice (0..n-1) */
    const char *id;     /* "chatcmpl-..." / "cmpl-..." */
    int64_t created;
    const char *model;
    const char *text;
    size_t text_len;
    const srv_token_lp *lp; /* NULL: "logprobs": null */
    size_t n_lp;
    srv_finish finish;  /* NONE in a middle chunk */
    bool first;         /* the chunk that carries the assistant's role */
    int64_t prompt_tokens, completion_tokens; /* < 0: no usage in this object */
    int64_t cached_tokens;  /* prompt tokens reused from the prefix cache */
    int64_t accepted_tokens, rejected_tokens; /* speculative guesses (usage.completion_tokens_details, as
                                               * OpenAI reports its predicted outputs) */
    int32_t dropped_messages; /* > 0: "context_shift": {"dropped_messages": N} (chat_fit.h) */
    srv_piece_fn piece;
    void *piece_ctx;
    /* chat: the tool calls the answer made (message.tool_calls, or a
     * stream's delta.tool_calls); text is then the content before them
     * (null when empty) */
    const srv_tool_call *calls;
    size_t n_calls;
} srv_result;

/* The whole (non-streamed) response object: choices r[0..n), each with its
 * index, text, logprobs and finish; the envelope (id, created, model) and the
 * usage come from r[0]. */
json_t *srv_response_json(const srv_result *r, size_t n);
/* One streamed chunk: one choice (its index) with its delta (chat) or text
 * (completion) and finish_reason, and "usage": null unless the result
 * carries usage. */
json_t *srv_chunk_json(const srv_result *r);
/* The usage-only chunk of stream_options.include_usage: "choices": []. */
json_t *srv_usage_chunk_json(const srv_result *r);

/* Server-Sent Events framing: "data: <compact json>\n\n", "data: [DONE]\n\n". */
bool srv_sse_event(srv_buf *out, json_t *obj);
bool srv_sse_done(srv_buf *out);

#endif
