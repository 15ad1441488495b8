/* trinity tokenize: print the token ids of a text, as llama.cpp would give
 * them for the same file and flags. Needs only the file's tokenizer metadata
 * (vocabulary-only GGUFs work). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: trinity tokenize -m FILE [--no-special] [-f TEXTFILE | TEXT]\n"
            "  -m, --model FILE   GGUF file with tokenizer.ggml.* metadata\n"
            "  -f, --file FILE    read the text from FILE (bytes as they are)\n"
            "  --no-special       add no BOS/EOS and treat special-token text as plain text\n"
            "prints the ids on one line, separated by spaces\n");
}

/* Whole file into memory; NULL on error (message printed). */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "trinity tokenize: cannot open '%s'\n", path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) {
            free(buf);
            buf = NULL;
        }
        buf = nb;
    }
    if (!buf || ferror(f)) {
        fprintf(stderr, "trinity tokenize: cannot read '%s'\n", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *file = NULL, *text = NULL;
    bool special = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            model = argv[++i];
        } else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(a, "--no-special")) {
            special = false;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--")) {
            if (i + 1 < argc && !text) text = argv[++i];
            if (i + 1 < argc) {
                fprintf(stderr, "trinity tokenize: one TEXT argument only\n");
                return 2;
            }
        } else if (a[0] == '-' && a[1] != 0) {
            fprintf(stderr, "trinity tokenize: unknown option '%s'\n", a);
            tokenize_usage(stderr);
            return 2;
        } else if (!text) {
            text = a;
        } else {
            fprintf(stderr, "trinity tokenize: one TEXT argument only (quote it)\n");
            return 2;
        }
    }
    if (!model || (!file && !text) || (file && text)) {
        tokenize_usage(stderr);
        return 2;
    }

    size_t len = 0;
    char *owned = NULL;
    if (file) {
        if (!(owned = read_file(file, &len))) return 1;
        text = owned;
    } else {
        len = strlen(text);
    }

    tr_error err = {{0}};
    tr_gguf *g = NULL;
    tr_vocab *v = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 1;
    if (tr_gguf_open(model, &g, &err) != TR_OK || tr_vocab_load(g, &v, &err) != TR_OK ||
        tr_tokenize(v, text, len, special, special, &ids, &n, &err) != TR_OK) {
        fprintf(stderr, "trinity tokenize: %s: %s\n", model, err.msg);
        goto done;
    }
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    rc = fflush(stdout) == 0 ? 0 : 1;
done:
    free(ids);
    tr_vocab_free(v);
    tr_gguf_close(g);
    free(owned);
    return rc;
}
