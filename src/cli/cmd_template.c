/* trinity template: print the prompt a conversation becomes, i.e. what the
 * server and `chat` send the model: the model's chat template (or
 * --chat-template) rendered with the messages, the tools, the generation
 * prompt and the model's BOS/EOS texts. */
#include "cli.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: trinity template (-m MODEL | --chat-template FILE|NAME) --messages FILE.json [options]\n\n"
            "Prints the prompt a conversation becomes (no newline added).\n\n"
            "  -m, --model FILE          its tokenizer.chat_template, BOS/EOS texts; without a template the\n"
            "                            built-in format its vocabulary suggests. A leading BOS (trailing EOS)\n"
            "                            text the tokenizer adds itself is left out, as the server does\n"
            "  --chat-template FILE|NAME a Jinja template file, or a built-in format (gemma, chatml, llama3,\n"
            "                            llama2); overrides the model's\n"
            "  --messages FILE.json      a JSON array of messages, or a chat request body (its messages, and\n"
            "                            its tools unless --tools is given)\n"
            "  --tools FILE.json         a JSON array of tools\n"
            "  --no-generation-prompt    do not end with the start of the assistant's turn\n"
            "  --bos-token S, --eos-token S  the texts of bos_token/eos_token (default: the model's, or \"\")\n"
            "  --date YYYY-MM-DD         the day strftime_now sees (default: now)\n");
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(buf, (cap *= 2) + 1);
        if (!nb) free(buf);
        buf = nb;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

int cmd_template(int argc, char **argv) {
    const char *model = NULL, *tmpl = NULL, *messages = NULL, *tools = NULL, *date = NULL;
    tr_chat_apply_opts o = {.add_generation_prompt = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has) model = argv[++i];
        else if (!strcmp(a, "--chat-template") && has) tmpl = argv[++i];
        else if (!strcmp(a, "--messages") && has) messages = argv[++i];
        else if (!strcmp(a, "--tools") && has) tools = argv[++i];
        else if (!strcmp(a, "--bos-token") && has) o.bos_token = argv[++i];
        else if (!strcmp(a, "--eos-token") && has) o.eos_token = argv[++i];
        else if (!strcmp(a, "--date") && has) date = argv[++i];
        else if (!strcmp(a, "--no-generation-prompt")) o.add_generation_prompt = false;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "trinity template: unknown option or missing value '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if ((!model && !tmpl) || !messages) {
        usage(stderr);
        return 2;
    }
    if (date) {
        struct tm tm = {0}, back;
        int y, mo, d, used = 0;
        bool ok = sscanf(date, "%4d-%2d-%2d%n", &y, &mo, &d, &used) == 3 && used == (int)strlen(date) && y >= 1970;
        if (ok) {
            tm.tm_year = y - 1900;
            tm.tm_mon = mo - 1;
            tm.tm_mday = d;
            time_t t = timegm(&tm);
            ok = gmtime_r(&t, &back) && back.tm_mday == d && back.tm_mon == mo - 1; /* no 02-30 */
            o.now = (int64_t)t;
        }
        if (!ok) {
            fprintf(stderr, "trinity template: --date '%s' is not a day YYYY-MM-DD (1970 or later)\n", date);
            return 2;
        }
        if (o.now == 0) o.now = 1; /* 0 means "now" */
    }

    int rc = 1;
    tr_error err = {{0}};
    tr_model *m = NULL;
    tr_chat_template *ct = NULL;
    char *msg_text = NULL, *tools_text = NULL, *out = NULL, *msgs_json = NULL, *tools_json = NULL;
    json_t *root = NULL;
    if (!(msg_text = slurp(messages))) {
        fprintf(stderr, "trinity template: cannot read '%s'\n", messages);
        goto done;
    }
    json_error_t je;
    if (!(root = json_loads(msg_text, 0, &je))) {
        fprintf(stderr, "trinity template: %s: not valid JSON (line %d: %s)\n", messages, je.line, je.text);
        goto done;
    }
    json_t *msgs = root, *req_tools = NULL;
    if (json_is_object(root)) { /* a chat request body */
        msgs = json_object_get(root, "messages");
        req_tools = json_object_get(root, "tools");
    }
    if (!json_is_array(msgs)) {
        fprintf(stderr, "trinity template: %s: expected a JSON array of messages or an object with \"messages\"\n",
                messages);
        goto done;
    }
    msgs_json = json_dumps(msgs, JSON_COMPACT);
    if (tools) {
        if (!(tools_text = slurp(tools))) {
            fprintf(stderr, "trinity template: cannot read '%s'\n", tools);
            goto done;
        }
        o.tools_json = tools_text;
    } else if (req_tools && !json_is_null(req_tools)) {
        tools_json = json_dumps(req_tools, JSON_COMPACT | JSON_ENCODE_ANY);
        o.tools_json = tools_json;
    }
    if (model && tr_model_load(model, &m, &err) != TR_OK) {
        fprintf(stderr, "trinity template: %s\n", err.msg);
        goto done;
    }
    if (tr_chat_template_load(m, tmpl, &ct, &err) != TR_OK) {
        fprintf(stderr, "trinity template: %s\n", err.msg);
        goto done;
    }
    if (tr_chat_template_is_builtin(ct) && !tmpl)
        fprintf(stderr, "trinity template: warning: %s (replies may not end)\n", tr_chat_template_describe(ct));
    o.strip_special = m != NULL;
    if (tr_chat_template_apply(ct, msgs_json, &o, &out, &err) != TR_OK) {
        fprintf(stderr, "trinity template: %s\n", err.msg);
        goto done;
    }
    fputs(out, stdout);
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(out);
    free(msgs_json);
    free(tools_json);
    free(tools_text);
    free(msg_text);
    json_decref(root);
    tr_chat_template_free(ct);
    tr_model_free(m);
    return rc;
}
