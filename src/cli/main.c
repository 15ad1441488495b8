/* trinity — one binary, many subcommands (run, chat, serve, bench, ...). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static int cmd_version(int argc, char **argv) {
    (void)argc, (void)argv;
    printf("trinity %s\n", TRINITY_VERSION);
    return 0;
}

static const command commands[] = {
    {"info", cmd_info, "print a GGUF file's metadata and tensor table"},
    {"version", cmd_version, "print the version"},
    {"run", cmd_run, "generate a continuation of a prompt"},
    {"chat", cmd_chat, "chat with a model in the terminal"},
    {"perplexity", cmd_perplexity, "perplexity of a model on a text (llama.cpp's method)"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"template", cmd_template, "print the prompt a conversation becomes (the chat template rendered)"},
    {"bench", cmd_bench, "measure prompt and generation speed (like llama-bench)"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server (chat, completions, streaming)"},
    {"imatrix", cmd_imatrix, "compute an importance matrix from a text (for quantize --imatrix)"},
    {"quantize", cmd_quantize, "re-write a GGUF file's weights in another format (llama-quantize's mixes)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: trinity <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'trinity <command> --help' for a command's options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "trinity: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
