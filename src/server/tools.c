/* Tool calling (tools.h). */
#define _GNU_SOURCE /* memmem */
#include "tools.h"

#include <stdlib.h>
#include <string.h>

srv_tool_format srv_tool_format_detect(const char *tmpl, size_t len) {
    if (!tmpl) return SRV_TOOLFMT_HERMES;
    if (memmem(tmpl, len, "[TOOL_CALLS]", 12)) return SRV_TOOLFMT_MISTRAL;
    if (memmem(tmpl, len, "<tool_call>", 11)) return SRV_TOOLFMT_HERMES;
    if (memmem(tmpl, len, "<|start_header_id|>", 19) && memmem(tmpl, len, "\"parameters\"", 12))
        return SRV_TOOLFMT_LLAMA3;
    return SRV_TOOLFMT_HERMES;
}

const char *srv_tool_format_name(srv_tool_format f) {
    switch (f) {
    case SRV_TOOLFMT_LLAMA3: return "llama3";
    case SRV_TOOLFMT_MISTRAL: return "mistral";
    default: return "hermes";
    }
}

static const char *tool_name(json_t *t) { return json_string_value(json_object_get(json_object_get(t, "function"), "name")); }

char *srv_tools_prompt(const srv_request *r, srv_tool_format f) {
    srv_buf b = {0};
    bool ok = srv_buf_puts(&b, "You can call functions. Their signatures, as JSON:\n<tools>\n");
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t) {
        char *js = json_dumps(t, JSON_COMPACT | JSON_ENSURE_ASCII);
        ok = ok && js && srv_buf_puts(&b, js) && srv_buf_puts(&b, "\n");
        free(js);
    }
    ok = ok && srv_buf_puts(&b, "</tools>\n");
    if (f == SRV_TOOLFMT_LLAMA3)
        ok = ok && srv_buf_puts(&b, "To call a function, answer with only a JSON object: "
                                    "{\"name\": function name, \"parameters\": its arguments as an object}.");
    else if (f == SRV_TOOLFMT_MISTRAL)
        ok = ok && srv_buf_puts(&b, "To call functions, answer with [TOOL_CALLS] and a JSON list: "
                                    "[TOOL_CALLS][{\"name\": function name, \"arguments\": its arguments as an object}].");
    else
        ok = ok && srv_buf_puts(&b, "To call a function, answer with a JSON object inside <tool_call></tool_call> tags:\n"
                                    "<tool_call>\n{\"name\": function name, \"arguments\": its arguments as an object}\n"
                                    "</tool_call>");
    if (r->tool_choice == SRV_TOOLS_NAMED)
        ok = ok && srv_buf_puts(&b, "\nCall the function ") && srv_buf_puts(&b, r->tool_name) && srv_buf_puts(&b, " now.");
    if (!ok || !srv_buf_append(&b, "", 1)) {
        srv_buf_free(&b);
        return NULL;
    }
    return b.p;
}

/* GBNF string literal of s (names are [A-Za-z0-9_-]: nothing to escape). */
bool srv_tools_grammar(srv_request *r, srv_tool_format f, srv_error *e) {
    srv_buf g = {0};
    bool ok = true, prim = true;
    char rule[24];
    size_t i, n_alt = 0;
    json_t *t;
    ok = srv_buf_puts(&g, "call ::= ");
    json_array_foreach(r->tools, i, t) {
        if (r->tool_choice == SRV_TOOLS_NAMED && strcmp(tool_name(t), r->tool_name)) continue;
        snprintf(rule, sizeof rule, "c%zu", i);
        ok = ok && srv_buf_puts(&g, n_alt++ ? " | " : "") && srv_buf_puts(&g, rule);
    }
    ok = ok && srv_buf_puts(&g, "\n");
    json_array_foreach(r->tools, i, t) {
        if (!ok) break;
        if (r->tool_choice == SRV_TOOLS_NAMED && strcmp(tool_name(t), r->tool_name)) continue;
        json_t *params = json_object_get(json_object_get(t, "function"), "parameters");
        char *schema = params ? json_dumps(params, JSON_COMPACT) : strdup("{\"type\":\"object\"}");
        char *gbnf = NULL;
        tr_error err = {{0}};
        snprintf(rule, sizeof rule, "a%zu", i);
        tr_status st = schema ? tr_json_schema_to_gbnf_rule(schema, strlen(schema), rule, prim, &gbnf, &err) : TR_ERR_NOMEM;
        free(schema);
        if (st != TR_OK) {
            char param[64];
            snprintf(param, sizeof param, "tools[%zu].function.parameters", i);
            srv_error_set(e, 400, "invalid_request_error", NULL, param, "'%s' cannot be enforced: %s", param, err.msg);
            srv_buf_free(&g);
            return false;
        }
        prim = false;
        ok = srv_buf_puts(&g, gbnf);
        free(gbnf);
        char line[256];
        if (f == SRV_TOOLFMT_HERMES)
            snprintf(line, sizeof line, "c%zu ::= \"<tool_call>\\n{\\\"name\\\": \\\"%s\\\", \\\"arguments\\\": \" a%zu \"}\\n</tool_call>\"\n",
                     i, tool_name(t), i);
        else if (f == SRV_TOOLFMT_LLAMA3)
            snprintf(line, sizeof line, "c%zu ::= \"{\\\"name\\\": \\\"%s\\\", \\\"parameters\\\": \" a%zu \"}\"\n", i,
                     tool_name(t), i);
        else
            snprintf(line, sizeof line, "c%zu ::= \"{\\\"name\\\": \\\"%s\\\", \\\"arguments\\\": \" a%zu \"}\"\n", i,
                     tool_name(t), i);
        ok = ok && srv_buf_puts(&g, line);
    }
    /* One call, or up to SRV_MAX_TOOL_CALLS (parallel_tool_calls; Llama 3
     * makes one): bounded, so a model that repeats itself ends anyway. */
    const int more = r->parallel_tool_calls && f != SRV_TOOLFMT_LLAMA3 ? SRV_MAX_TOOL_CALLS - 1 : 0;
    char root[96];
    if (f == SRV_TOOLFMT_MISTRAL) snprintf(root, sizeof root, "root ::= \"[\" call (\", \" call){0,%d} \"]\"\n", more);
    else snprintf(root, sizeof root, "root ::= call (\"\\n\" call){0,%d}\n", more);
    ok = ok && srv_buf_puts(&g, root);
    if (!ok || !srv_buf_append(&g, "", 1)) {
        srv_buf_free(&g);
        srv_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return false;
    }
    tr_error err = {{0}};
    tr_grammar *gr = NULL;
    tr_status st = tr_grammar_parse(g.p, strlen(g.p), &gr, &err);
    srv_buf_free(&g);
    if (st != TR_OK) {
        srv_error_set(e, 400, "invalid_request_error", NULL, "tools", "the tools' grammar: %s", err.msg);
        return false;
    }
    tr_grammar_free(r->grammar);
    r->grammar = gr;
    return true;
}

static void make_call_id(char *out) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    uint8_t rnd[24];
    arc4random_buf(rnd, sizeof rnd);
    memcpy(out, "call_", 5);
    for (int i = 0; i < 24; i++) out[5 + i] = alnum[rnd[i] % (sizeof alnum - 1)];
    out[29] = 0;
}

static bool known_tool(const srv_request *r, const char *name) {
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t) if (!strcmp(tool_name(t), name)) return true;
    return false;
}

/* A call object {"name": ..., args_key: {...} or "..."} into calls[n]. */
static bool add_call(const srv_request *r, json_t *o, const char *args_key, srv_tool_call **calls, size_t *n) {
    json_t *name = json_object_get(o, "name"), *args = json_object_get(o, args_key);
    if (!args && strcmp(args_key, "arguments")) args = json_object_get(o, "arguments");
    if (!json_is_object(o) || !json_is_string(name) || !known_tool(r, json_string_value(name))) return false;
    if (args && !json_is_object(args) && !json_is_string(args)) return false;
    char *a = !args ? strdup("{}") : json_is_string(args) ? strdup(json_string_value(args)) : json_dumps(args, JSON_COMPACT);
    srv_tool_call *c = realloc(*calls, sizeof **calls * (*n + 1));
    if (!a || !c) {
        free(a);
        if (c) *calls = c;
        return false;
    }
    *calls = c;
    c[*n].name = strdup(json_string_value(name));
    c[*n].arguments = a;
    if (!c[*n].name) {
        free(a);
        return false;
    }
    make_call_id(c[*n].id);
    (*n)++;
    return true;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++;
    return p;
}

size_t srv_tools_parse(const srv_request *r, srv_tool_format f, const char *text, size_t len, srv_tool_call **calls,
                       size_t *content_len) {
    *calls = NULL;
    *content_len = len;
    size_t n = 0;
    if (!r->tools || r->tool_choice == SRV_TOOLS_OFF) return 0;
    const char *end = text + len;
    if (f == SRV_TOOLFMT_HERMES) {
        const char *p = memmem(text, len, "<tool_call>", 11);
        if (!p) return 0;
        const char *first = p;
        bool ok = true;
        while (p && ok) {
            const char *body = p + 11, *close = memmem(body, (size_t)(end - body), "</tool_call>", 12);
            if (!close && n) break; /* a last call cut off (max_tokens): the complete ones stand */
            if (!close) close = end;
            json_t *o = json_loadb(body, (size_t)(close - body), 0, NULL);
            ok = o && add_call(r, o, "arguments", calls, &n);
            json_decref(o);
            if (close == end) break;
            p = memmem(close, (size_t)(end - close), "<tool_call>", 11);
            if (p && skip_ws(close + 12, end) != p) break; /* text between calls: stop at it */
        }
        if (!ok) {
            srv_tool_calls_free(*calls, n);
            *calls = NULL;
            return 0;
        }
        *content_len = (size_t)(first - text);
        return n;
    }
    const char *p = skip_ws(text, end);
    if (f == SRV_TOOLFMT_MISTRAL) {
        if ((size_t)(end - p) >= 12 && !memcmp(p, "[TOOL_CALLS]", 12)) p += 12;
        json_t *a = json_loadb(p, (size_t)(end - p), 0, NULL);
        bool ok = json_is_array(a) && json_array_size(a) > 0;
        size_t i;
        json_t *o;
        json_array_foreach(a, i, o) ok = ok && add_call(r, o, "arguments", calls, &n);
        json_decref(a);
        if (!ok) {
            srv_tool_calls_free(*calls, n);
            *calls = NULL;
            return 0;
        }
        *content_len = 0;
        return n;
    }
    /* Llama 3: the whole answer is the call ("<|python_tag|>" may open it). */
    if ((size_t)(end - p) >= 14 && !memcmp(p, "<|python_tag|>", 14)) p += 14;
    json_t *o = json_loadb(p, (size_t)(end - p), 0, NULL);
    bool ok = o && add_call(r, o, "parameters", calls, &n);
    json_decref(o);
    if (!ok) {
        srv_tool_calls_free(*calls, n);
        *calls = NULL;
        return 0;
    }
    *content_len = 0;
    return n;
}

void srv_tool_calls_free(srv_tool_call *c, size_t n) {
    for (size_t i = 0; c && i < n; i++) {
        free(c[i].name);
        free(c[i].arguments);
    }
    free(c);
}
