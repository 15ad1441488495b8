/* The subcommands of the `trinity` binary. Each lives in its own cmd_*.c and
 * returns the process exit status (0 ok, 1 runtime error, 2 usage error). */
#ifndef TR_CLI_H
#define TR_CLI_H

#include "trinity.h"

#define TRINITY_VERSION "0.1.0"

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_imatrix(int argc, char **argv);
int cmd_template(int argc, char **argv);

#endif
