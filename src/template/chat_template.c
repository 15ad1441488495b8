/* A model's chat template: the Jinja text of tokenizer.chat_template (or of
 * --chat-template FILE) rendered by our interpreter with the variables
 * Hugging Face's apply_chat_template passes (messages, tools, documents,
 * add_generation_prompt, bos_token, eos_token), or, for a file without a
 * template or --chat-template NAME, one of the hand-written formats of
 * src/engine/chat.c. */
#include "core/util.h"
#include "trinity.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tr_chat_template {
    const tr_model *model;  /* may be NULL (a template file alone) */
    tr_template *jinja;     /* NULL: a built-in format */
    tr_template *tool_use;  /* the file's tokenizer.chat_template.tool_use, for requests with tools (or NULL) */
    char *builtin;          /* the built-in format's name; NULL: detected from the model at each use */
    char what[300];         /* for messages: where the template came from */
};

static char *read_file(const char *path, size_t *len, tr_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return tr_err_set(err, TR_ERR_IO, "--chat-template '%s': no such file and not a built-in format "
                                              "(gemma, chatml, llama3, llama2)", path), NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            if (cap > ((size_t)16 << 20)) {
                free(buf);
                fclose(f);
                return tr_err_set(err, TR_ERR_FORMAT, "%s: a chat template larger than 16 MiB", path), NULL;
            }
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return tr_err_set(err, TR_ERR_NOMEM, "%s: out of memory reading it", path), NULL;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return tr_err_set(err, TR_ERR_IO, "%s: read error", path), NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static tr_status parse_into(tr_chat_template *ct, const char *src, size_t len, tr_error *err) {
    tr_error e = {{0}};
    if (tr_template_parse(src, len, &ct->jinja, &e) != TR_OK)
        return tr_err_set(err, TR_ERR_FORMAT, "%s: %s", ct->what, e.msg);
    return TR_OK;
}

tr_status tr_chat_template_load(const tr_model *m, const char *spec, tr_chat_template **out, tr_error *err) {
    *out = NULL;
    tr_chat_template *ct = calloc(1, sizeof *ct);
    if (!ct) return tr_err_set(err, TR_ERR_NOMEM, "chat template: out of memory");
    ct->model = m;
    tr_status st = TR_OK;
    if (spec && tr_chat_format_known(spec)) {
        ct->builtin = strdup(spec);
        snprintf(ct->what, sizeof ct->what, "built-in format %s", spec);
        if (!ct->builtin) st = tr_err_set(err, TR_ERR_NOMEM, "chat template: out of memory");
    } else if (spec) {
        size_t len;
        char *src = read_file(spec, &len, err);
        snprintf(ct->what, sizeof ct->what, "%s", spec);
        st = src ? parse_into(ct, src, len, err) : (tr_status)TR_ERR_IO;
        free(src);
    } else {
        tr_str t = {0};
        if (!m) {
            st = tr_err_set(err, TR_ERR_ARG, "chat template: no model and no --chat-template");
        } else if (tr_gguf_get_str(tr_model_gguf(m), "tokenizer.chat_template", &t) && t.len > 0) {
            snprintf(ct->what, sizeof ct->what, "%s: tokenizer.chat_template", tr_gguf_path(tr_model_gguf(m)));
            st = parse_into(ct, t.ptr, (size_t)t.len, err);
            /* a second template for requests with tools (Command R), used as llama.cpp does */
            tr_str tu = {0};
            if (st == TR_OK && tr_gguf_get_str(tr_model_gguf(m), "tokenizer.chat_template.tool_use", &tu) && tu.len) {
                tr_error e = {{0}};
                if (tr_template_parse(tu.ptr, (size_t)tu.len, &ct->tool_use, &e) != TR_OK)
                    st = tr_err_set(err, TR_ERR_FORMAT, "%s: tokenizer.chat_template.tool_use: %s",
                                    tr_gguf_path(tr_model_gguf(m)), e.msg);
            }
        } else {
            /* no template in the file: a hand-written format recognised from the vocabulary */
            const char *name = NULL;
            st = tr_chat_format_detect(m, &name, err);
            if (st == TR_OK && !(ct->builtin = strdup(name)))
                st = tr_err_set(err, TR_ERR_NOMEM, "chat template: out of memory");
            snprintf(ct->what, sizeof ct->what, "%s has no tokenizer.chat_template: built-in format %s",
                     tr_gguf_path(tr_model_gguf(m)), name ? name : "");
        }
    }
    if (st != TR_OK) {
        tr_chat_template_free(ct);
        return st;
    }
    *out = ct;
    return TR_OK;
}

void tr_chat_template_free(tr_chat_template *ct) {
    if (!ct) return;
    tr_template_free(ct->jinja);
    tr_template_free(ct->tool_use);
    free(ct->builtin);
    free(ct);
}

bool tr_chat_template_is_builtin(const tr_chat_template *ct) { return !ct->jinja; }
const char *tr_chat_template_describe(const tr_chat_template *ct) { return ct->what; }

static const char *token_text(const tr_model *m, bool bos) {
    if (!m) return "";
    const tr_vocab *v = tr_model_vocab(m);
    int32_t id = bos ? tr_vocab_bos(v) : tr_vocab_eos(v);
    const char *t = id >= 0 ? tr_vocab_token_text(v, id) : NULL;
    return t ? t : "";
}

/* The hand-written formats: role and text content only. */
static tr_status apply_builtin(const tr_chat_template *ct, json_t *msgs, const tr_chat_apply_opts *o, char **out,
                               tr_error *err) {
    if (o->tools_json && strcmp(o->tools_json, "null") && strcmp(o->tools_json, "[]"))
        return tr_err_set(err, TR_ERR_UNSUPPORTED,
                          "tools need a Jinja chat template; the %s has none (pass --chat-template FILE)", ct->what);
    size_t n = json_array_size(msgs);
    tr_chat_msg *cm = calloc(n ? n : 1, sizeof *cm);
    if (!cm) return tr_err_set(err, TR_ERR_NOMEM, "chat template: out of memory");
    tr_status st = TR_OK;
    for (size_t i = 0; i < n && st == TR_OK; i++) {
        json_t *msg = json_array_get(msgs, i);
        json_t *role = json_object_get(msg, "role"), *content = json_object_get(msg, "content");
        if (!json_is_string(role))
            st = tr_err_set(err, TR_ERR_ARG, "messages[%zu]: 'role' must be a string", i);
        else if (json_object_get(msg, "tool_calls") || !strcmp(json_string_value(role), "tool"))
            st = tr_err_set(err, TR_ERR_UNSUPPORTED,
                            "messages[%zu]: tool calls and tool results need a Jinja chat template; the %s has none",
                            i, ct->what);
        else if (content && !json_is_string(content) && !json_is_null(content))
            st = tr_err_set(err, TR_ERR_UNSUPPORTED,
                            "messages[%zu]: the %s takes text content only (a string)", i, ct->what);
        else {
            const char *r = json_string_value(role);
            cm[i].role = !strcmp(r, "developer") ? "system" : r;
            cm[i].content = json_is_string(content) ? json_string_value(content) : "";
        }
    }
    if (st == TR_OK) st = tr_chat_format(ct->model, ct->builtin, cm, n, o->add_generation_prompt, out, err);
    free(cm);
    return st;
}

tr_status tr_chat_template_apply(const tr_chat_template *ct, const char *messages_json, const tr_chat_apply_opts *opts,
                                 char **out, tr_error *err) {
    *out = NULL;
    tr_chat_apply_opts o = opts ? *opts : (tr_chat_apply_opts){0};
    json_error_t je;
    json_t *msgs = json_loads(messages_json ? messages_json : "", JSON_ALLOW_NUL, &je);
    if (!msgs) return tr_err_set(err, TR_ERR_FORMAT, "messages: not valid JSON (%s, line %d)", je.text, je.line);
    if (!json_is_array(msgs)) {
        json_decref(msgs);
        return tr_err_set(err, TR_ERR_FORMAT, "messages: must be a JSON array of message objects");
    }
    for (size_t i = 0; i < json_array_size(msgs); i++)
        if (!json_is_object(json_array_get(msgs, i))) {
            json_decref(msgs);
            return tr_err_set(err, TR_ERR_FORMAT, "messages[%zu]: must be an object", i);
        }
    if (!ct->jinja) {
        tr_status st = apply_builtin(ct, msgs, &o, out, err);
        json_decref(msgs);
        return st;
    }
    /* the variables of transformers' apply_chat_template */
    json_t *vars = json_object();
    json_t *tools = json_null();
    tr_status st = TR_OK;
    if (o.tools_json) {
        json_decref(tools);
        tools = json_loads(o.tools_json, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
        if (!tools || !(json_is_array(tools) || json_is_null(tools)))
            st = tr_err_set(err, TR_ERR_FORMAT, "tools: must be a JSON array%s%s", tools ? "" : ": ",
                            tools ? "" : je.text);
    }
    const char *bos = o.bos_token ? o.bos_token : token_text(ct->model, true);
    const char *eos = o.eos_token ? o.eos_token : token_text(ct->model, false);
    if (st == TR_OK && o.extra_json) {
        json_t *extra = json_loads(o.extra_json, JSON_ALLOW_NUL, &je);
        if (!json_is_object(extra))
            st = tr_err_set(err, TR_ERR_FORMAT, "template variables: must be a JSON object");
        else
            json_object_update(vars, extra);
        json_decref(extra);
    }
    bool with_tools = tools && json_array_size(tools) > 0;
    json_object_set_new(vars, "messages", msgs);
    json_object_set_new(vars, "tools", tools ? tools : json_null());
    json_object_set_new(vars, "documents", json_null());
    json_object_set_new(vars, "add_generation_prompt", json_boolean(o.add_generation_prompt));
    json_object_set_new(vars, "bos_token", json_string(bos));
    json_object_set_new(vars, "eos_token", json_string(eos));
    char *vj = st == TR_OK ? json_dumps(vars, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(vars);
    if (st != TR_OK) return st;
    if (!vj) return tr_err_set(err, TR_ERR_NOMEM, "chat template: out of memory");
    tr_template_opts to = {.now = o.now};
    tr_error e = {{0}};
    char *text = NULL;
    const tr_template *tm = with_tools && ct->tool_use ? ct->tool_use : ct->jinja;
    st = tr_template_render(tm, vj, &to, &text, &e);
    free(vj);
    if (st != TR_OK) return tr_err_set(err, st, "%s%s: %s", ct->what, tm == ct->tool_use ? ".tool_use" : "", e.msg);
    if (o.strip_special && ct->model) {
        /* as llama.cpp: the tokenizer adds BOS (EOS) itself, so a template's own goes */
        const tr_vocab *v = tr_model_vocab(ct->model);
        size_t bl = strlen(bos), el = strlen(eos), tl = strlen(text);
        if (tr_vocab_add_bos(v) && bl && !strncmp(text, bos, bl)) {
            memmove(text, text + bl, tl - bl + 1);
            tl -= bl;
        }
        if (tr_vocab_add_eos(v) && el && tl >= el && !strcmp(text + tl - el, eos)) text[tl - el] = 0;
    }
    *out = text;
    return TR_OK;
}

tr_status tr_chat_template_apply_msgs(const tr_chat_template *ct, const tr_chat_msg *msgs, size_t n,
                                      const tr_chat_apply_opts *opts, char **out, tr_error *err) {
    *out = NULL;
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        const char *role = strcmp(msgs[i].role, "tool") ? msgs[i].role : "user";
        if (json_array_append_new(a, json_pack("{s:s, s:s}", "role", role, "content", msgs[i].content))) {
            json_decref(a);
            a = NULL;
        }
    }
    char *js = a ? json_dumps(a, JSON_COMPACT) : NULL;
    json_decref(a);
    if (!js) return tr_err_set(err, TR_ERR_NOMEM, "chat template: out of memory");
    tr_status st = tr_chat_template_apply(ct, js, opts, out, err);
    free(js);
    return st;
}
