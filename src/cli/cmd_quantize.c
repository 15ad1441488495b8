/* trinity quantize — a GGUF file's weights in another format, as llama.cpp's
 * llama-quantize writes them (tr_quantize_file in src/model/quantize.c). */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: trinity quantize [options] IN.gguf OUT.gguf TYPE [THREADS]\n"
            "  TYPE   %s\n"
            "  THREADS  threads converting rows (default: all cores; the output does not depend on it)\n"
            "  --imatrix FILE            importance matrix (llama-imatrix's GGUF output) for the weighted\n"
            "                            quantizers of Q2_K..Q6_K, Q4_0, Q4_1, Q5_0, Q5_1\n"
            "  --allow-requantize        convert tensors that are quantized already\n"
            "  --pure                    every quantizable tensor TYPE's base type (no per-tensor mix rules)\n"
            "  --leave-output-tensor     keep output.weight as it is\n"
            "  --output-tensor-type T    output.weight's type (a ggml type name: Q8_0, Q6_K, F16, ...)\n"
            "  --token-embedding-type T  token_embd.weight's type\n",
            tr_quantize_mix_names());
}

/* A ggml type by name ("Q6_K", "f16"), or -1. */
static int type_by_name(const char *s) {
    for (int t = 0; t < TR_TYPE_COUNT; t++)
        if (tr_type_name(t) && !strcasecmp(tr_type_name(t), s)) return t;
    return -1;
}

typedef struct totals {
    uint64_t from, to;
} totals;

static void progress(void *user, int64_t i, int64_t n, const char *name, int from, int to, uint64_t bf, uint64_t bt) {
    totals *t = user;
    t->from += bf;
    t->to += bt;
    if (from == to)
        fprintf(stderr, "[%4lld/%4lld] %-40s %-6s %9.3f MiB (kept)\n", (long long)i + 1, (long long)n, name,
                tr_type_name(from), bf / 1048576.0);
    else
        fprintf(stderr, "[%4lld/%4lld] %-40s %-6s -> %-6s %9.3f -> %9.3f MiB\n", (long long)i + 1, (long long)n, name,
                tr_type_name(from), tr_type_name(to), bf / 1048576.0, bt / 1048576.0);
}

int cmd_quantize(int argc, char **argv) {
    tr_quantize_params p = tr_quantize_default_params();
    const char *pos[4];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--allow-requantize")) {
            p.allow_requantize = true;
        } else if (!strcmp(a, "--imatrix")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "trinity quantize: --imatrix needs a file\n");
                return 2;
            }
            p.imatrix = argv[++i];
        } else if (!strcmp(a, "--pure")) {
            p.pure = true;
        } else if (!strcmp(a, "--leave-output-tensor")) {
            p.leave_output = true;
        } else if (!strcmp(a, "--output-tensor-type") || !strcmp(a, "--token-embedding-type")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "trinity quantize: %s needs a type\n", a);
                return 2;
            }
            int t = type_by_name(argv[++i]);
            if (t < 0 || !tr_type_can_quantize(t)) {
                fprintf(stderr, "trinity quantize: %s: '%s' is not a type this build can write\n", a, argv[i]);
                return 2;
            }
            if (!strcmp(a, "--output-tensor-type")) p.output_type = t;
            else p.token_embd_type = t;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "trinity quantize: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        } else if (n_pos < 4) {
            pos[n_pos++] = a;
        } else {
            fprintf(stderr, "trinity quantize: too many arguments ('%s')\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (n_pos < 3) {
        fprintf(stderr, "trinity quantize: expected IN.gguf OUT.gguf TYPE\n");
        usage(stderr);
        return 2;
    }
    if (!strcmp(pos[0], pos[1])) {
        fprintf(stderr, "trinity quantize: the output would overwrite the input (%s)\n", pos[0]);
        return 2;
    }
    p.type = pos[2];
    long threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (n_pos == 4) {
        char *end;
        threads = strtol(pos[3], &end, 10);
        if (!*pos[3] || *end || threads < 1 || threads > 64) {
            fprintf(stderr, "trinity quantize: THREADS wants a whole number from 1 to 64, not '%s'\n", pos[3]);
            return 2;
        }
    }
    p.n_threads = (int32_t)(threads > 0 ? threads : 1);
    totals t = {0, 0};
    p.progress = progress;
    p.user = &t;
    tr_error err = {{0}};
    if (tr_quantize_file(pos[0], pos[1], &p, &err) != TR_OK) {
        fprintf(stderr, "trinity quantize: %s\n", err.msg);
        unlink(pos[1]);
        return 1;
    }
    fprintf(stderr, "trinity quantize: %s: %.2f MiB -> %.2f MiB of tensors (%s)\n", pos[1], t.from / 1048576.0,
            t.to / 1048576.0, p.type);
    return 0;
}
