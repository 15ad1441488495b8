#include "oai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void srv_error_set(srv_error *e, int status, const char *type, const char *code, const char *param,
                   const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *srv_error_json(const srv_error *e) {
    srv_buf msg = {0};
    /* A message may quote the client's bytes: keep the JSON valid whatever they were. */
    if (!srv_utf8_sanitize(&msg, e->message, strlen(e->message))) return NULL;
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", msg.p ? msg.p : "",
                          "type", e->type ? e->type : "invalid_request_error", "param",
                          e->param[0] ? json_string(e->param) : json_null(), "code",
                          e->code ? json_string(e->code) : json_null());
    srv_buf_free(&msg);
    if (!o) return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

const char *srv_finish_str(srv_finish f) {
    switch (f) {
    case SRV_FINISH_STOP: return "stop";
    case SRV_FINISH_LENGTH: return "length";
    case SRV_FINISH_TOOL_CALLS: return "tool_calls";
    default: return NULL;
    }
}

/* ------------------------------------------------------------- parsing */

#define BAD(param, ...) (srv_error_set(e, 400, "invalid_request_error", NULL, param, __VA_ARGS__), false)

static const char *json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* A field that is absent or null counts as not given. */
static json_t *field(json_t *root, const char *name) {
    json_t *v = json_object_get(root, name);
    return v && !json_is_null(v) ? v : NULL;
}

static bool get_number(json_t *root, const char *name, double lo, double hi, float *out, srv_error *e) {
    json_t *v = field(root, name);
    if (!v) return true;
    if (!json_is_number(v)) return BAD(name, "'%s' must be a number, not %s", name, json_kind(v));
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi)) return BAD(name, "'%s' must be between %g and %g, got %g", name, lo, hi, x);
    *out = (float)x;
    return true;
}

/* Integers; a real with no fractional part (2.0) is accepted as JSON
 * libraries in some languages write them so. */
static bool get_int(json_t *root, const char *name, int64_t lo, int64_t hi, int64_t *out, bool *given,
                    srv_error *e) {
    json_t *v = field(root, name);
    if (given) *given = v != NULL;
    if (!v) return true;
    int64_t x;
    if (json_is_integer(v)) {
        x = (int64_t)json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e18) {
        x = (int64_t)json_real_value(v);
    } else {
        return BAD(name, "'%s' must be an integer, not %s", name, json_kind(v));
    }
    if (x < lo || x > hi)
        return BAD(name, "'%s' must be between %lld and %lld, got %lld", name, (long long)lo,
                   (long long)hi, (long long)x);
    *out = x;
    return true;
}

static bool get_bool(json_t *root, const char *name, bool *out, srv_error *e) {
    json_t *v = field(root, name);
    if (!v) return true;
    if (!json_is_boolean(v)) return BAD(name, "'%s' must be a boolean, not %s", name, json_kind(v));
    *out = json_is_true(v);
    return true;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static bool oom(srv_error *e) {
    srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory while reading the request");
    return false;
}

/* A message's content: a string, or an array of {"type": "text", "text": ...}
 * parts, concatenated. */
static bool parse_content(json_t *c, size_t i, bool assistant, char **out, srv_error *e) {
    char name[96];
    snprintf(name, sizeof name, "messages[%zu].content", i);
    if (!c) {
        if (assistant) { /* an assistant turn that only called tools */
            *out = dup_n("", 0);
            return *out ? true : oom(e);
        }
        return BAD(name, "'%s' is missing", name);
    }
    if (json_is_string(c)) {
        if (memchr(json_string_value(c), '\0', json_string_length(c)))
            return BAD(name, "'%s' must not contain NUL characters", name);
        *out = dup_n(json_string_value(c), json_string_length(c));
        return *out ? true : oom(e);
    }
    if (!json_is_array(c)) return BAD(name, "'%s' must be a string or an array of parts, not %s", name, json_kind(c));
    srv_buf b = {0};
    if (!srv_buf_append(&b, "", 0)) return oom(e);
    for (size_t j = 0; j < json_array_size(c); j++) {
        json_t *part = json_array_get(c, j);
        char pname[128];
        snprintf(pname, sizeof pname, "%s[%zu]", name, j);
        if (!json_is_object(part)) {
            srv_buf_free(&b);
            return BAD(pname, "'%s' must be an object, not %s", pname, json_kind(part));
        }
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text")) {
            srv_buf_free(&b);
            if (json_is_string(type))
                return BAD(pname, "'%s.type' '%s' is not supported: only text parts are", pname,
                           json_string_value(type));
            return BAD(pname, "'%s.type' must be the string \"text\"", pname);
        }
        if (!json_is_string(text) || memchr(json_string_value(text), '\0', json_string_length(text))) {
            srv_buf_free(&b);
            return BAD(pname, "'%s.text' must be a string without NUL characters", pname);
        }
        if (!srv_buf_append(&b, json_string_value(text), json_string_length(text))) {
            srv_buf_free(&b);
            return oom(e);
        }
    }
    *out = b.p;
    return true;
}

static char *render_tool_turn(json_t *msg, size_t i, const char *content, bool is_tool, srv_error *e);

static bool parse_messages(json_t *root, srv_request *r, srv_error *e) {
    json_t *m = json_object_get(root, "messages");
    if (!m || json_is_null(m)) return BAD("messages", "'messages' is required");
    if (!json_is_array(m)) return BAD("messages", "'messages' must be an array, not %s", json_kind(m));
    size_t n = json_array_size(m);
    if (n == 0) return BAD("messages", "'messages' must hold at least one message");
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) return oom(e);
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(m, i);
        char name[64];
        snprintf(name, sizeof name, "messages[%zu]", i);
        if (!json_is_object(msg)) return BAD(name, "'%s' must be an object, not %s", name, json_kind(msg));
        json_t *role = json_object_get(msg, "role");
        snprintf(name, sizeof name, "messages[%zu].role", i);
        if (!json_is_string(role) || strlen(json_string_value(role)) != json_string_length(role))
            return BAD(name, "'%s' must be a string", name);
        const char *rs = json_string_value(role);
        const char *canon;
        if (!strcmp(rs, "system") || !strcmp(rs, "developer")) canon = "system";
        else if (!strcmp(rs, "user")) canon = "user";
        else if (!strcmp(rs, "assistant")) canon = "assistant";
        /* a tool's result: as sent to a Jinja template (messages_json); in msgs (the built-in formats, which
         * write it as the user's turn, and the context shift, for which it belongs to the turn before it) in
         * the default (Hermes) form */
        else if (!strcmp(rs, "tool")) canon = "tool";
        else return BAD(name, "'%s' '%s' is not supported: use system, user, assistant or tool", name, rs);
        char *content = NULL;
        if (!parse_content(field(msg, "content"), i, !strcmp(rs, "assistant"), &content, e)) return false;
        if (!strcmp(rs, "tool") || field(msg, "tool_calls")) {
            char *c = render_tool_turn(msg, i, content, !strcmp(rs, "tool"), e);
            free(content);
            if (!c) return false;
            content = c;
        }
        r->msgs[i].role = canon; /* static strings */
        r->msgs[i].content = content;
        r->n_msgs = i + 1;
    }
    /* The chat template gets the messages as they came (tool calls, tool results, content parts). */
    r->messages_json = json_dumps(m, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (!r->messages_json) return oom(e);
    json_t *tools = json_object_get(root, "tools");
    if (json_is_array(tools) && json_array_size(tools) > 0) {
        r->tools_json = json_dumps(tools, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (!r->tools_json) return oom(e);
    }
    return true;
}

/* Tool turns in a chat's history, written the way the default (Hermes)
 * format has them, for templates that know no tools: a tool's result inside
 * <tool_response>, an assistant's calls as <tool_call> blocks after its
 * content. NULL: e says why. */
static char *render_tool_turn(json_t *msg, size_t i, const char *content, bool is_tool, srv_error *e) {
    srv_buf b = {0};
    bool ok = true;
    if (is_tool) {
        ok = srv_buf_puts(&b, "<tool_response>\n") && srv_buf_puts(&b, content) && srv_buf_puts(&b, "\n</tool_response>");
    } else {
        json_t *calls = field(msg, "tool_calls");
        char name[64];
        snprintf(name, sizeof name, "messages[%zu].tool_calls", i);
        if (!json_is_array(calls)) {
            srv_error_set(e, 400, "invalid_request_error", NULL, name, "'%s' must be an array", name);
            return NULL;
        }
        ok = srv_buf_puts(&b, content);
        for (size_t k = 0; ok && k < json_array_size(calls); k++) {
            json_t *c = json_array_get(calls, k), *fn = json_object_get(c, "function");
            json_t *fname = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
            if (!json_is_string(fname) || (args && !json_is_string(args))) {
                srv_buf_free(&b);
                snprintf(name, sizeof name, "messages[%zu].tool_calls[%zu]", i, k);
                srv_error_set(e, 400, "invalid_request_error", NULL, name,
                              "'%s' must be {\"type\": \"function\", \"function\": {\"name\": string, \"arguments\": string}}",
                              name);
                return NULL;
            }
            json_t *a = args ? json_loads(json_string_value(args), JSON_DECODE_ANY, NULL) : json_object();
            if (!a) a = json_incref(args); /* not JSON: as the string it is */
            json_t *o = json_pack("{s:O, s:o}", "name", fname, "arguments", a);
            char *js = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
            json_decref(o);
            ok = js && srv_buf_puts(&b, b.len ? "\n<tool_call>\n" : "<tool_call>\n") && srv_buf_puts(&b, js) &&
                 srv_buf_puts(&b, "\n</tool_call>");
            free(js);
        }
    }
    if (!ok || !srv_buf_append(&b, "", 1)) {
        srv_buf_free(&b);
        oom(e);
        return NULL;
    }
    return b.p;
}

/* "tools": [{"type": "function", "function": {"name", "description",
 * "parameters"}}], "tool_choice": "auto" | "none" | "required" |
 * {"type": "function", "function": {"name"}}, "parallel_tool_calls". */
static bool parse_tools(json_t *root, srv_request *r, srv_error *e) {
    json_t *tools = field(root, "tools"), *choice = field(root, "tool_choice");
    r->parallel_tool_calls = true;
    if (!get_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, e)) return false;
    if (tools && json_is_null(tools)) tools = NULL;
    if (choice && json_is_null(choice)) choice = NULL;
    if (tools && !json_is_array(tools)) return BAD("tools", "'tools' must be an array, not %s", json_kind(tools));
    size_t n = tools ? json_array_size(tools) : 0;
    if (n > 128) return BAD("tools", "'tools' lists %zu tools: at most 128 are supported", n);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(tools, i), *fn = json_object_get(t, "function");
        char name[64];
        snprintf(name, sizeof name, "tools[%zu]", i);
        json_t *type = json_object_get(t, "type");
        if (!json_is_object(t) || !json_is_string(type) || strcmp(json_string_value(type), "function"))
            return BAD(name, "'%s' must be {\"type\": \"function\", \"function\": {...}}", name);
        snprintf(name, sizeof name, "tools[%zu].function", i);
        if (!json_is_object(fn)) return BAD(name, "'%s' must be an object", name);
        json_t *fname = json_object_get(fn, "name"), *params = json_object_get(fn, "parameters"),
               *desc = json_object_get(fn, "description");
        snprintf(name, sizeof name, "tools[%zu].function.name", i);
        const char *nm = json_string_value(fname);
        size_t nl = nm ? strlen(nm) : 0;
        bool good = nl > 0 && nl <= 64;
        for (size_t k = 0; good && k < nl; k++)
            good = (nm[k] >= 'a' && nm[k] <= 'z') || (nm[k] >= 'A' && nm[k] <= 'Z') || (nm[k] >= '0' && nm[k] <= '9') ||
                   nm[k] == '_' || nm[k] == '-';
        if (!good) return BAD(name, "'%s' must be 1 to 64 letters, digits, '_' or '-'", name);
        for (size_t k = 0; k < i; k++)
            if (!strcmp(nm, json_string_value(json_object_get(json_object_get(json_array_get(tools, k), "function"), "name"))))
                return BAD(name, "'%s': two tools are named '%s'", name, nm);
        if (desc && !json_is_string(desc)) {
            snprintf(name, sizeof name, "tools[%zu].function.description", i);
            return BAD(name, "'%s' must be a string", name);
        }
        if (params && !json_is_object(params)) {
            snprintf(name, sizeof name, "tools[%zu].function.parameters", i);
            return BAD(name, "'%s' must be a JSON schema (an object)", name);
        }
    }
    r->tool_choice = n ? SRV_TOOLS_AUTO : SRV_TOOLS_OFF;
    if (choice) {
        const char *cs = json_string_value(choice);
        if (cs && !strcmp(cs, "none")) r->tool_choice = SRV_TOOLS_OFF;
        else if (cs && !strcmp(cs, "auto")) ;
        else if (cs && !strcmp(cs, "required")) r->tool_choice = SRV_TOOLS_REQUIRED;
        else if (json_is_object(choice)) {
            json_t *fname = json_object_get(json_object_get(choice, "function"), "name");
            if (!json_is_string(fname))
                return BAD("tool_choice", "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                                          "{\"type\": \"function\", \"function\": {\"name\": ...}}");
            bool found = false;
            for (size_t i = 0; i < n; i++)
                found |= !strcmp(json_string_value(fname),
                                 json_string_value(json_object_get(json_object_get(json_array_get(tools, i), "function"), "name")));
            if (!found) return BAD("tool_choice", "'tool_choice' names '%s', which is not in 'tools'", json_string_value(fname));
            r->tool_choice = SRV_TOOLS_NAMED;
            if (!(r->tool_name = strdup(json_string_value(fname)))) return oom(e);
        } else {
            return BAD("tool_choice", "'tool_choice' must be \"auto\", \"none\", \"required\" or "
                                      "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        }
        if (r->tool_choice != SRV_TOOLS_OFF && !n) return BAD("tool_choice", "'tool_choice' needs 'tools'");
    }
    if (n) r->tools = json_incref(tools);
    return true;
}

/* One prompt: a string or a non-empty list of token ids. name: how errors call it. */
static bool parse_one_prompt(json_t *p, const char *name, int32_t n_vocab, srv_prompt *out, srv_error *e) {
    if (json_is_string(p)) {
        if (memchr(json_string_value(p), '\0', json_string_length(p)))
            return BAD(name, "'%s' must not contain NUL characters", name);
        out->text = dup_n(json_string_value(p), json_string_length(p));
        return out->text ? true : oom(e);
    }
    if (!json_is_array(p)) return BAD(name, "'%s' must be a string or a list of token ids, not %s", name, json_kind(p));
    size_t n = json_array_size(p);
    if (n == 0) return BAD(name, "'%s' must not be an empty list", name);
    out->ids = malloc(n * sizeof *out->ids);
    if (!out->ids) return oom(e);
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(p, i);
        char at[64];
        snprintf(at, sizeof at, "%s[%zu]", name, i);
        if (!json_is_integer(t)) return BAD(at, "'%s' must be a token id (an integer), not %s", at, json_kind(t));
        json_int_t id = json_integer_value(t);
        if (id < 0 || id >= n_vocab)
            return BAD(at, "'%s' = %lld is not a token id: the vocabulary has %d tokens", at, (long long)id,
                       (int)n_vocab);
        out->ids[i] = (int32_t)id;
    }
    out->n_ids = n;
    return true;
}

/* "prompt", as the OpenAI API takes it: a string, a list of token ids, a list
 * of strings, or a list of token-id lists (one choice per prompt). */
static bool parse_prompt(json_t *root, int32_t n_vocab, srv_request *r, srv_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (!p || json_is_null(p)) return BAD("prompt", "'prompt' is required");
    bool list = json_is_array(p) && json_array_size(p) > 0 &&
                (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0)));
    size_t n = list ? json_array_size(p) : 1;
    if (n > SRV_MAX_JOBS)
        return BAD("prompt", "'prompt' holds %zu prompts: at most %d per request", n, SRV_MAX_JOBS);
    r->prompts = calloc(n, sizeof *r->prompts);
    if (!r->prompts) return oom(e);
    r->n_prompts = n;
    if (!list) return parse_one_prompt(p, "prompt", n_vocab, &r->prompts[0], e);
    for (size_t i = 0; i < n; i++) {
        char name[32];
        snprintf(name, sizeof name, "prompt[%zu]", i);
        if (!parse_one_prompt(json_array_get(p, i), name, n_vocab, &r->prompts[i], e)) return false;
    }
    return true;
}

static bool parse_speculative(json_t *root, srv_request *r, srv_error *e);
static bool parse_constraint(json_t *root, srv_request *r, srv_error *e);
static bool parse_tools(json_t *root, srv_request *r, srv_error *e);

static bool parse_stop(json_t *root, srv_request *r, srv_error *e) {
    json_t *s = field(root, "stop");
    if (!s) return true;
    json_t *one[1] = {s};
    size_t n;
    if (json_is_string(s)) {
        n = 1;
    } else if (json_is_array(s)) {
        n = json_array_size(s);
        if (n > SRV_MAX_STOP) return BAD("stop", "'stop' holds %zu strings: at most %d are allowed", n, SRV_MAX_STOP);
    } else {
        return BAD("stop", "'stop' must be a string or an array of strings, not %s", json_kind(s));
    }
    r->stop = calloc(n ? n : 1, sizeof *r->stop);
    if (!r->stop) return oom(e);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_string(s) ? one[0] : json_array_get(s, i);
        if (!json_is_string(v)) return BAD("stop", "'stop[%zu]' must be a string, not %s", i, json_kind(v));
        size_t len = json_string_length(v);
        if (len > SRV_MAX_STOP_LEN) return BAD("stop", "'stop[%zu]' is %zu bytes: at most %d are allowed", i, len, SRV_MAX_STOP_LEN);
        if (len == 0 || memchr(json_string_value(v), '\0', len)) continue; /* an empty stop string never ends anything */
        if (!(r->stop[r->n_stop] = dup_n(json_string_value(v), len))) return oom(e);
        r->n_stop++;
    }
    return true;
}

static bool parse_fields(json_t *root, srv_kind kind, const char *model_id, int32_t n_vocab,
                         srv_request *r, srv_error *e) {
    json_t *model = field(root, "model");
    if (model) {
        if (!json_is_string(model)) return BAD("model", "'model' must be a string, not %s", json_kind(model));
        if (strcmp(json_string_value(model), model_id) || strlen(model_id) != json_string_length(model)) {
            srv_error_set(e, 404, "invalid_request_error", "model_not_found", "model",
                          "The model '%s' does not exist: this server serves '%s'",
                          json_string_value(model), model_id);
            return false;
        }
    }
    if (kind == SRV_KIND_CHAT ? !parse_messages(root, r, e) : !parse_prompt(root, n_vocab, r, e)) return false;

    int64_t x;
    bool given;
    r->max_tokens = -1;
    if (!get_int(root, "max_tokens", 1, INT32_MAX, &x, &given, e)) return false;
    if (given) r->max_tokens = (int32_t)x;
    if (!get_int(root, "max_completion_tokens", 1, INT32_MAX, &x, &given, e)) return false;
    if (given) r->max_tokens = (int32_t)x;
    /* llama.cpp's name for the same thing */
    if (r->max_tokens < 0) {
        if (!get_int(root, "n_predict", -1, INT32_MAX, &x, &given, e)) return false;
        if (given && x > 0) r->max_tokens = (int32_t)x;
    }

    tr_sampler_params *sp = &r->sampling;
    if (!get_number(root, "temperature", 0, 2, &sp->temp, e)) return false;
    if (!get_number(root, "top_p", 0, 1, &sp->top_p, e)) return false;
    if (!get_number(root, "presence_penalty", -2, 2, &sp->presence_penalty, e)) return false;
    if (!get_number(root, "frequency_penalty", -2, 2, &sp->frequency_penalty, e)) return false;
    if (!get_number(root, "min_p", 0, 1, &sp->min_p, e)) return false;
    if (!get_number(root, "repeat_penalty", 0, 100, &sp->repeat_penalty, e)) return false;
    if (sp->repeat_penalty == 0) return BAD("repeat_penalty", "'repeat_penalty' must be above 0 (1 turns it off)");
    if (!get_int(root, "top_k", 0, INT32_MAX, &x, &given, e)) return false;
    if (given) sp->top_k = (int32_t)x;
    if (!get_int(root, "repeat_last_n", -1, INT32_MAX, &x, &given, e)) return false;
    if (given) sp->repeat_last_n = (int32_t)x;
    if (!get_int(root, "seed", INT64_MIN, INT64_MAX, &x, &r->has_seed, e)) return false;
    if (r->has_seed) sp->seed = (uint64_t)x;

    if (!get_int(root, "n", 1, SRV_MAX_CHOICES, &x, &given, e)) return false;
    r->n_choices = given ? (int)x : 1;
    if (r->n_prompts * (size_t)r->n_choices > SRV_MAX_JOBS)
        return BAD("n", "%zu prompts with 'n' = %d ask for %zu completions: at most %d per request", r->n_prompts,
                   r->n_choices, r->n_prompts * (size_t)r->n_choices, SRV_MAX_JOBS);
    if (!get_int(root, "best_of", 1, 1, &x, &given, e)) {
        snprintf(e->message, sizeof e->message, "'best_of' other than 1 is not supported");
        return false;
    }

    if (!get_bool(root, "stream", &r->stream, e)) return false;
    r->cache_prompt = true;
    if (!get_bool(root, "cache_prompt", &r->cache_prompt, e)) return false;
    if (!get_bool(root, "ignore_eos", &r->ignore_eos, e)) return false;
    if (!parse_speculative(root, r, e)) return false;
    json_t *so = field(root, "stream_options");
    if (so) {
        if (!json_is_object(so)) return BAD("stream_options", "'stream_options' must be an object, not %s", json_kind(so));
        json_t *iu = field(so, "include_usage");
        if (iu && !json_is_boolean(iu))
            return BAD("stream_options.include_usage", "'stream_options.include_usage' must be a boolean, not %s", json_kind(iu));
        r->include_usage = iu && json_is_true(iu);
    }

    if (kind == SRV_KIND_CHAT) {
        if (!get_bool(root, "logprobs", &r->logprobs, e)) return false;
        if (!get_int(root, "top_logprobs", 0, SRV_MAX_TOP_LOGPROBS, &x, &given, e)) return false;
        if (given) {
            if (!r->logprobs) return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            r->top_logprobs = (int)x;
        }
        if (!parse_tools(root, r, e)) return false;
    } else {
        /* The legacy endpoint: logprobs is the number of alternatives (0..5). */
        if (!get_int(root, "logprobs", 0, 5, &x, &given, e)) return false;
        if (given) {
            r->logprobs = true;
            r->top_logprobs = (int)x;
        }
        bool echo = false;
        if (!get_bool(root, "echo", &echo, e)) return false;
        if (echo) return BAD("echo", "'echo' is not supported");
        json_t *suffix = field(root, "suffix");
        if (suffix && (!json_is_string(suffix) || json_string_length(suffix) > 0))
            return BAD("suffix", "'suffix' (insertion) is not supported");
    }
    if (!parse_constraint(root, r, e)) return false;
    if (r->grammar && (r->tool_choice == SRV_TOOLS_REQUIRED || r->tool_choice == SRV_TOOLS_NAMED))
        return BAD("tool_choice", "a required tool call cannot be combined with 'response_format' or 'grammar'");
    return parse_stop(root, r, e);
}

/* A grammar from GBNF text, or from a JSON schema (NULL: any JSON object);
 * errors are the compiler's, under the field's name. */
static bool compile_into(srv_request *r, const char *param, const char *gbnf, json_t *schema, srv_error *e) {
    tr_error err = {{0}};
    char *text = NULL;
    tr_status st = TR_OK;
    if (!gbnf) {
        char *js = schema ? json_dumps(schema, JSON_ENCODE_ANY | JSON_COMPACT) : strdup("{\"type\":\"object\"}");
        if (!js) return oom(e);
        st = tr_json_schema_to_gbnf(js, strlen(js), &text, &err);
        free(js);
    }
    if (st == TR_OK) st = tr_grammar_parse(gbnf ? gbnf : text, strlen(gbnf ? gbnf : text), &r->grammar, &err);
    free(text);
    if (st == TR_ERR_NOMEM) return oom(e);
    if (st != TR_OK) return BAD(param, "'%s': %s", param, err.msg);
    return true;
}

/* The output's constraint: "grammar" (llama-server's GBNF), "json_schema"
 * (llama-server's), or OpenAI's "response_format": {"type": "text"},
 * {"type": "json_object"} (any JSON object; llama-server's optional
 * "schema" too), {"type": "json_schema", "json_schema": {"name", "schema",
 * "strict"}}. At most one of them. */
static bool parse_constraint(json_t *root, srv_request *r, srv_error *e) {
    json_t *g = field(root, "grammar"), *js = field(root, "json_schema"), *rf = field(root, "response_format");
    if (g && json_is_null(g)) g = NULL;
    if (js && json_is_null(js)) js = NULL;
    if (rf && json_is_null(rf)) rf = NULL;
    if (rf) {
        json_t *t = json_is_object(rf) ? json_object_get(rf, "type") : NULL;
        if (!json_is_string(t)) return BAD("response_format", "'response_format' must be an object with a string 'type'");
        if (!strcmp(json_string_value(t), "text")) rf = NULL;
    }
    if (!!g + !!js + !!rf > 1)
        return BAD(g ? "grammar" : "json_schema", "give at most one of 'grammar', 'json_schema' and 'response_format'");
    if (g) {
        if (!json_is_string(g)) return BAD("grammar", "'grammar' must be a string (GBNF), not %s", json_kind(g));
        if (json_string_length(g) == 0) return true;
        return compile_into(r, "grammar", json_string_value(g), NULL, e);
    }
    if (js) {
        if (!json_is_object(js) && !json_is_boolean(js))
            return BAD("json_schema", "'json_schema' must be a JSON schema (an object), not %s", json_kind(js));
        return compile_into(r, "json_schema", NULL, js, e);
    }
    if (!rf) return true;
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!strcmp(type, "json_object")) {
        json_t *schema = json_object_get(rf, "schema");
        if (schema && !json_is_object(schema) && !json_is_boolean(schema))
            return BAD("response_format.schema", "'response_format.schema' must be a JSON schema (an object)");
        return compile_into(r, "response_format", NULL, schema, e);
    }
    if (!strcmp(type, "json_schema")) {
        json_t *o = json_object_get(rf, "json_schema");
        if (!json_is_object(o))
            return BAD("response_format.json_schema",
                       "'response_format.json_schema' must be an object with 'name' and 'schema'");
        json_t *name = json_object_get(o, "name"), *strict = json_object_get(o, "strict");
        if (name && !json_is_string(name))
            return BAD("response_format.json_schema.name", "'response_format.json_schema.name' must be a string");
        if (strict && !json_is_boolean(strict) && !json_is_null(strict))
            return BAD("response_format.json_schema.strict", "'response_format.json_schema.strict' must be a boolean");
        json_t *schema = json_object_get(o, "schema");
        if (schema && !json_is_object(schema) && !json_is_boolean(schema))
            return BAD("response_format.json_schema.schema",
                       "'response_format.json_schema.schema' must be a JSON schema (an object)");
        return compile_into(r, "response_format", NULL, schema, e);
    }
    return BAD("response_format",
               "'response_format' type '%s' is not supported: \"text\", \"json_object\" or \"json_schema\"", type);
}

/* Speculative decoding settings, llama-server's way: an object
 * "speculative": {"type": "ngram", "n_max": 16, "n_min": 0} (false: off),
 * or the flat keys "speculative.n_max", "speculative.n_min",
 * "speculative.type". What is not given stays -1 (the server's setting). */
static bool parse_speculative(json_t *root, srv_request *r, srv_error *e) {
    r->spec = (tr_spec_params){.kind = (tr_spec_kind)-1, .n_max = -1, .n_min = -1};
    json_t *o = field(root, "speculative");
    if (o && json_is_boolean(o)) {
        if (json_is_false(o)) r->spec.kind = TR_SPEC_NONE;
        o = NULL;
    } else if (o && !json_is_object(o)) {
        return BAD("speculative", "'speculative' must be an object (or false), not %s", json_kind(o));
    }
    static const char *const flat[3] = {"speculative.type", "speculative.n_max", "speculative.n_min"};
    static const char *const inner[3] = {"type", "n_max", "n_min"};
    for (int k = 0; k < 3; k++) {
        json_t *v = o ? field(o, inner[k]) : NULL;
        const char *name = flat[k];
        if (!v) v = field(root, flat[k]);
        if (!v) continue;
        if (k == 0) {
            tr_spec_kind kind;
            if (!json_is_string(v) || !tr_spec_kind_parse(json_string_value(v), &kind))
                return BAD(name, "'%s' must be \"ngram\", \"lookahead\", \"draft\" or \"none\"", name);
            r->spec.kind = kind;
            continue;
        }
        if (!json_is_integer(v) || json_integer_value(v) < (k == 1 ? 1 : 0) || json_integer_value(v) > 64)
            return BAD(name, "'%s' must be an integer between %d and 64", name, k == 1 ? 1 : 0);
        if (k == 1) r->spec.n_max = (int32_t)json_integer_value(v);
        else r->spec.n_min = (int32_t)json_integer_value(v);
    }
    if (r->spec.n_max > 0 && r->spec.n_min > r->spec.n_max)
        return BAD("speculative.n_min", "'speculative.n_min' (%d) is more than 'speculative.n_max' (%d)", r->spec.n_min,
                   r->spec.n_max);
    return true;
}

bool srv_request_parse(srv_kind kind, const char *body, size_t len, const char *model_id,
                       int32_t n_vocab, const tr_sampler_params *defaults, srv_request *out,
                       srv_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->sampling = *defaults;
    if (len == 0) return BAD(NULL, "the request body is empty: send a JSON object");
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return BAD(NULL, "the request body is not valid JSON: %s (line %d, column %d)", jerr.text,
                   jerr.line, jerr.column);
    bool ok;
    if (!json_is_object(root)) ok = BAD(NULL, "the request body must be a JSON object, not %s", json_kind(root));
    else ok = parse_fields(root, kind, model_id, n_vocab, out, e);
    json_decref(root);
    if (!ok) srv_request_free(out);
    return ok;
}

void srv_request_free(srv_request *r) {
    for (size_t i = 0; i < r->n_msgs; i++) free((char *)r->msgs[i].content);
    free(r->msgs);
    free(r->messages_json);
    free(r->tools_json);
    for (size_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    for (size_t i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    tr_grammar_free(r->grammar);
    json_decref(r->tools);
    free(r->tool_name);
    memset(r, 0, sizeof *r);
}

bool srv_request_copy_settings(const srv_request *src, srv_request *dst) {
    *dst = *src;
    dst->msgs = NULL;
    dst->n_msgs = 0;
    dst->messages_json = NULL;
    dst->tools_json = NULL;
    dst->prompts = NULL;
    dst->n_prompts = 0;
    dst->n_stop = 0;
    dst->grammar = NULL;
    dst->tool_name = NULL;
    json_incref(dst->tools);
    dst->stop = calloc(src->n_stop ? src->n_stop : 1, sizeof *dst->stop);
    bool ok = dst->stop != NULL && (!src->grammar || (dst->grammar = tr_grammar_clone(src->grammar))) &&
              (!src->tool_name || (dst->tool_name = strdup(src->tool_name)));
    for (size_t i = 0; ok && i < src->n_stop; i++) {
        ok = (dst->stop[i] = strdup(src->stop[i])) != NULL;
        dst->n_stop += ok;
    }
    if (!ok) srv_request_free(dst);
    return ok;
}

/* ----------------------------------------------------------- responses */

static json_t *text_json(const char *s, size_t n) {
    srv_buf b = {0};
    if (!srv_utf8_sanitize(&b, s, n)) return NULL;
    json_t *j = json_stringn(b.p ? b.p : "", b.len);
    srv_buf_free(&b);
    return j;
}

/* -inf (a token the model rules out) has no JSON spelling: OpenAI reports -9999. */
static json_t *lp_json(float lp) { return json_real(isfinite(lp) ? (double)lp : -9999.0); }

static json_t *piece_json(const srv_result *r, int32_t id, json_t **bytes) {
    char buf[256];
    size_t n = r->piece(r->piece_ctx, id, buf, sizeof buf);
    if (n > sizeof buf) n = sizeof buf;
    if (bytes) {
        *bytes = json_array();
        for (size_t i = 0; i < n; i++) json_array_append_new(*bytes, json_integer((unsigned char)buf[i]));
    }
    return text_json(buf, n);
}

static json_t *chat_logprobs_json(const srv_result *r) {
    json_t *content = json_array();
    for (size_t i = 0; i < r->n_lp; i++) {
        const srv_token_lp *t = &r->lp[i];
        json_t *bytes, *tok = piece_json(r, t->id, &bytes);
        json_t *top = json_array();
        for (int j = 0; j < t->n_top; j++) {
            json_t *tb, *tt = piece_json(r, t->top[j].id, &tb);
            json_array_append_new(top, json_pack("{s:o, s:o, s:o}", "token", tt, "logprob",
                                                 lp_json(t->top[j].logprob), "bytes", tb));
        }
        json_array_append_new(content, json_pack("{s:o, s:o, s:o, s:o}", "token", tok, "logprob",
                                                 lp_json(t->logprob), "bytes", bytes, "top_logprobs", top));
    }
    return json_pack("{s:o}", "content", content);
}

static json_t *completion_logprobs_json(const srv_result *r) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (size_t i = 0; i < r->n_lp; i++) {
        const srv_token_lp *t = &r->lp[i];
        json_array_append_new(tokens, piece_json(r, t->id, NULL));
        json_array_append_new(lps, lp_json(t->logprob));
        json_t *top = json_object();
        for (int j = 0; j < t->n_top; j++) {
            json_t *k = piece_json(r, t->top[j].id, NULL);
            /* two ids may share a spelling: keep the more likely (first) one */
            if (k && !json_object_get(top, json_string_value(k)))
                json_object_set_new(top, json_string_value(k), lp_json(t->top[j].logprob));
            json_decref(k);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer(t->off));
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs",
                     tops, "text_offset", offs);
}

static json_t *logprobs_json(const srv_result *r) {
    if (!r->lp) return json_null();
    return r->kind == SRV_KIND_CHAT ? chat_logprobs_json(r) : completion_logprobs_json(r);
}

static json_t *finish_json(srv_finish f) {
    const char *s = srv_finish_str(f);
    return s ? json_string(s) : json_null();
}

static json_t *usage_json(const srv_result *r) {
    if (r->prompt_tokens < 0) return json_null();
    return json_pack("{s:I, s:I, s:I, s:{s:I}, s:{s:I, s:I}}", "prompt_tokens", (json_int_t)r->prompt_tokens,
                     "completion_tokens", (json_int_t)r->completion_tokens, "total_tokens",
                     (json_int_t)(r->prompt_tokens + r->completion_tokens), "prompt_tokens_details", "cached_tokens",
                     (json_int_t)r->cached_tokens, "completion_tokens_details", "accepted_prediction_tokens",
                     (json_int_t)r->accepted_tokens, "rejected_prediction_tokens", (json_int_t)r->rejected_tokens);
}

static json_t *envelope(const srv_result *r, const char *object, json_t *choices) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:o}", "id", r->id, "object", object, "created",
                          (json_int_t)r->created, "model", r->model, "system_fingerprint", "trinity", "choices",
                          choices);
    /* The conversation lost its oldest turns to fit the context (an
     * extension, as llama-server's own fields are). */
    if (o && r->dropped_messages > 0)
        json_object_set_new(o, "context_shift", json_pack("{s:i}", "dropped_messages", (int)r->dropped_messages));
    return o;
}

/* A completion's choice reads the same in a response and in a chunk. */
static json_t *completion_choice_json(const srv_result *r) {
    return json_pack("{s:i, s:o, s:o, s:o}", "index", r->index, "text", text_json(r->text, r->text_len),
                     "logprobs", logprobs_json(r), "finish_reason", finish_json(r->finish));
}

/* message.tool_calls / delta.tool_calls (with each call's index in a delta). */
static json_t *tool_calls_json(const srv_result *r, bool delta) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < r->n_calls; i++) {
        const srv_tool_call *c = &r->calls[i];
        json_t *o = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", c->id, "type", "function", "function", "name",
                              c->name, "arguments", c->arguments);
        if (o && delta) json_object_set_new(o, "index", json_integer((json_int_t)i));
        json_array_append_new(a, o);
    }
    return a;
}

/* With tool calls, the content is what came before them, null when blank. */
static json_t *content_json(const srv_result *r) {
    if (r->n_calls) {
        bool blank = true;
        for (size_t i = 0; i < r->text_len; i++) blank &= r->text[i] == ' ' || r->text[i] == '\n' || r->text[i] == '\t' || r->text[i] == '\r';
        if (blank) return json_null();
    }
    return text_json(r->text, r->text_len);
}

static json_t *choice_json(const srv_result *r) {
    if (r->kind != SRV_KIND_CHAT) return completion_choice_json(r);
    json_t *o = json_pack("{s:i, s:{s:s, s:o}, s:o, s:o}", "index", r->index, "message", "role", "assistant",
                          "content", content_json(r), "logprobs", logprobs_json(r), "finish_reason",
                          finish_json(r->finish));
    if (o && r->n_calls) json_object_set_new(json_object_get(o, "message"), "tool_calls", tool_calls_json(r, false));
    return o;
}

json_t *srv_response_json(const srv_result *r, size_t n) {
    json_t *choices = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(choices, choice_json(&r[i]));
    json_t *o = envelope(r, r->kind == SRV_KIND_CHAT ? "chat.completion" : "text_completion", choices);
    if (o) json_object_set_new(o, "usage", usage_json(r));
    return o;
}

static json_t *delta_choice_json(const srv_result *r) {
    if (r->kind != SRV_KIND_CHAT) return completion_choice_json(r);
    json_t *delta = json_object();
    if (r->first) json_object_set_new(delta, "role", json_string("assistant"));
    /* The final chunk carries only finish_reason, with an empty delta. */
    if (r->n_calls) {
        if (r->text_len) json_object_set_new(delta, "content", content_json(r));
        json_object_set_new(delta, "tool_calls", tool_calls_json(r, true));
    } else if (r->text_len || (r->finish == SRV_FINISH_NONE)) {
        json_object_set_new(delta, "content", text_json(r->text, r->text_len));
    }
    return json_pack("{s:i, s:o, s:o, s:o}", "index", r->index, "delta", delta, "logprobs", logprobs_json(r),
                     "finish_reason", finish_json(r->finish));
}

json_t *srv_chunk_json(const srv_result *r) {
    json_t *o = envelope(r, r->kind == SRV_KIND_CHAT ? "chat.completion.chunk" : "text_completion",
                         json_pack("[o]", delta_choice_json(r)));
    if (o) json_object_set_new(o, "usage", usage_json(r));
    return o;
}

json_t *srv_usage_chunk_json(const srv_result *r) {
    json_t *o = envelope(r, r->kind == SRV_KIND_CHAT ? "chat.completion.chunk" : "text_completion",
                         json_array());
    if (o) json_object_set_new(o, "usage", usage_json(r));
    return o;
}

bool srv_sse_event(srv_buf *out, json_t *obj) {
    if (!obj) return false;
    /* Compact JSON never holds a raw newline (strings escape it), so one
     * "data:" line is the whole event. */
    char *s = json_dumps(obj, JSON_COMPACT);
    if (!s) return false;
    bool ok = srv_buf_puts(out, "data: ") && srv_buf_puts(out, s) && srv_buf_puts(out, "\n\n");
    free(s);
    return ok;
}

bool srv_sse_done(srv_buf *out) { return srv_buf_puts(out, "data: [DONE]\n\n"); }
