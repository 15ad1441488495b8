/* The hand-written chat formats: the fallback for files without a
 * tokenizer.chat_template (src/template renders those that have one) and
 * the built-in names --chat-template accepts. A template's text can still be
 * recognised as one of them by its markers (as llama.cpp's
 * llama_chat_detect_template does); a file without a template is recognised
 * by its special tokens; anything else is an error that asks for a format. */
#include "model/model.h"

#include "core/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum chat_fmt { FMT_NONE, FMT_GEMMA, FMT_CHATML, FMT_LLAMA3, FMT_LLAMA2 } chat_fmt;

static const struct {
    const char *name;
    chat_fmt fmt;
} fmt_names[] = {{"gemma", FMT_GEMMA}, {"chatml", FMT_CHATML}, {"llama3", FMT_LLAMA3}, {"llama2", FMT_LLAMA2}};

bool tr_chat_format_known(const char *name) {
    for (size_t i = 0; name && i < sizeof fmt_names / sizeof fmt_names[0]; i++)
        if (!strcmp(name, fmt_names[i].name)) return true;
    return false;
}

static bool contains(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    if (k > n) return false;
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(s + i, needle, k)) return true;
    return false;
}

static chat_fmt detect_from_text(const char *t, size_t n) {
    if (contains(t, n, "<start_of_turn>")) return FMT_GEMMA;
    if (contains(t, n, "<|im_start|>")) return FMT_CHATML;
    if (contains(t, n, "<|start_header_id|>")) return FMT_LLAMA3;
    if (contains(t, n, "[INST]")) return FMT_LLAMA2;
    return FMT_NONE;
}

static bool vocab_has(const tr_vocab *v, const char *text) {
    if (!v) return false;
    const int32_t n = tr_vocab_n_tokens(v);
    for (int32_t i = 0; i < n; i++) {
        const char *t = tr_vocab_token_text(v, i);
        if (t && !strcmp(t, text)) return true;
    }
    return false;
}

/* A growing string. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->oom) return;
    if (b->len + k + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256);
        while (cap < b->len + k + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, k);
    b->len += k;
    b->p[b->len] = 0;
}

static bool is_role(const char *r, const char *want) { return r && !strcmp(r, want); }

/* Append s without leading and trailing white space (the templates' | trim). */
static void put_trimmed(sbuf *b, const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r')) n--;
    char *t = malloc(n + 1);
    if (!t) {
        b->oom = true;
        return;
    }
    memcpy(t, s, n);
    t[n] = 0;
    put(b, t);
    free(t);
}

static void format_gemma(sbuf *b, const tr_chat_msg *msgs, size_t n, bool add_assistant) {
    /* Gemma has no system role: the system text opens the first user turn. */
    const char *system = NULL;
    for (size_t i = 0; i < n; i++) {
        if (is_role(msgs[i].role, "system")) {
            system = msgs[i].content;
            continue;
        }
        const char *role = is_role(msgs[i].role, "assistant") ? "model" : msgs[i].role;
        put(b, "<start_of_turn>");
        put(b, role);
        put(b, "\n");
        /* The system text opens the first turn after it (Gemma 3's template). */
        if (system) {
            put(b, system);
            put(b, "\n\n");
            system = NULL;
        }
        put_trimmed(b, msgs[i].content);
        put(b, "<end_of_turn>\n");
    }
    if (add_assistant) put(b, "<start_of_turn>model\n");
}

static void format_chatml(sbuf *b, const tr_chat_msg *msgs, size_t n, bool add_assistant) {
    for (size_t i = 0; i < n; i++) {
        put(b, "<|im_start|>");
        put(b, msgs[i].role);
        put(b, "\n");
        put(b, msgs[i].content);
        put(b, "<|im_end|>\n");
    }
    if (add_assistant) put(b, "<|im_start|>assistant\n");
}

static void format_llama3(sbuf *b, const tr_chat_msg *msgs, size_t n, bool add_assistant) {
    for (size_t i = 0; i < n; i++) {
        put(b, "<|start_header_id|>");
        put(b, msgs[i].role);
        put(b, "<|end_header_id|>\n\n");
        put_trimmed(b, msgs[i].content);
        put(b, "<|eot_id|>");
    }
    if (add_assistant) put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void format_llama2(sbuf *b, const tr_chat_msg *msgs, size_t n) {
    /* [INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant</s><s>[INST] ... The
     * first <s> is the tokenizer's BOS. */
    const char *system = NULL;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (is_role(msgs[i].role, "system")) {
            system = msgs[i].content;
        } else if (is_role(msgs[i].role, "user")) {
            if (!first) put(b, "<s>");
            put(b, "[INST] ");
            if (system) {
                put(b, "<<SYS>>\n");
                put(b, system);
                put(b, "\n<</SYS>>\n\n");
                system = NULL;
            }
            put(b, msgs[i].content);
            put(b, " [/INST]");
            first = false;
        } else {
            put(b, " ");
            put(b, msgs[i].content);
            put(b, "</s>");
        }
    }
}

/* The format of a model without an explicit one: its template's markers, or its vocabulary's chat tokens. */
static tr_status detect(const tr_model *m, chat_fmt *out, tr_error *err) {
    chat_fmt fmt = FMT_NONE;
    if (!m) return tr_err_set(err, TR_ERR_ARG, "chat: no model and no chat format");
    tr_str tmpl;
    if (tr_gguf_get_str(m->gguf, "tokenizer.chat_template", &tmpl)) {
        fmt = detect_from_text(tmpl.ptr, (size_t)tmpl.len);
        if (fmt == FMT_NONE)
            return tr_err_set(err, TR_ERR_UNSUPPORTED,
                              "%s: tokenizer.chat_template is not a known format; pass --chat-template "
                              "(gemma, chatml, llama3, llama2)",
                              tr_gguf_path(m->gguf));
    } else if (vocab_has(m->vocab, "<start_of_turn>")) {
        fmt = FMT_GEMMA;
    } else if (vocab_has(m->vocab, "<|im_start|>")) {
        fmt = FMT_CHATML;
    } else if (vocab_has(m->vocab, "<|start_header_id|>")) {
        fmt = FMT_LLAMA3;
    } else {
        return tr_err_set(err, TR_ERR_UNSUPPORTED,
                          "%s: no tokenizer.chat_template and no known chat tokens; pass --chat-template "
                          "(gemma, chatml, llama3, llama2)",
                          tr_gguf_path(m->gguf));
    }
    *out = fmt;
    return TR_OK;
}

tr_status tr_chat_format_detect(const tr_model *m, const char **name, tr_error *err) {
    chat_fmt fmt;
    tr_status st = detect(m, &fmt, err);
    if (st != TR_OK) return st;
    for (size_t i = 0; i < sizeof fmt_names / sizeof fmt_names[0]; i++)
        if (fmt_names[i].fmt == fmt) *name = fmt_names[i].name;
    return TR_OK;
}

tr_status tr_chat_format(const tr_model *m, const char *format, const tr_chat_msg *msgs, size_t n,
                         bool add_assistant, char **out, tr_error *err) {
    *out = NULL;
    chat_fmt fmt = FMT_NONE;
    if (format) {
        for (size_t i = 0; i < sizeof fmt_names / sizeof fmt_names[0]; i++)
            if (!strcmp(format, fmt_names[i].name)) fmt = fmt_names[i].fmt;
        if (fmt == FMT_NONE)
            return tr_err_set(err, TR_ERR_ARG, "chat format '%s' is unknown (known: gemma, chatml, llama3, llama2)",
                              format);
    } else {
        tr_status st = detect(m, &fmt, err);
        if (st != TR_OK) return st;
    }
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return tr_err_set(err, TR_ERR_ARG, "chat: message %zu has no role or content", i);
    sbuf b = {0};
    put(&b, "");
    switch (fmt) {
    case FMT_GEMMA: format_gemma(&b, msgs, n, add_assistant); break;
    case FMT_CHATML: format_chatml(&b, msgs, n, add_assistant); break;
    case FMT_LLAMA3: format_llama3(&b, msgs, n, add_assistant); break;
    case FMT_LLAMA2: format_llama2(&b, msgs, n); break;
    case FMT_NONE: break;
    }
    if (b.oom) {
        free(b.p);
        return tr_err_set(err, TR_ERR_NOMEM, "chat: out of memory formatting %zu messages", n);
    }
    *out = b.p;
    return TR_OK;
}
