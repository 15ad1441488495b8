/* libFuzzer target: the model loader over arbitrary GGUF bytes. Whatever the
 * file says (architecture, hyperparameters, tensor names, shapes, types),
 * loading either fails with a message or gives a model that describes itself
 * and runs one forward pass over two tokens without reading out of bounds.
 * Seeds (tests/fuzz/fuzz_model): micro-shaped random models of every
 * supported architecture, written by scripts/gen_model.py --shape micro. */
#include "trinity.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) snprintf(path, sizeof path, "/tmp/trinity_fuzz_model_%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t put = fwrite(data, 1, size, f);
    fclose(f);
    if (put != size) return 0;
    tr_model *m = NULL;
    tr_error err = {{0}};
    if (tr_model_load(path, &m, &err) != TR_OK) return 0;
    char desc[4096];
    tr_model_describe(m, desc, sizeof desc);
    tr_context_params p = tr_context_default_params();
    p.n_ctx = 8;
    p.n_batch = 4;
    p.n_threads = 1;
    tr_context *c = NULL;
    if (tr_context_new(m, &p, &c, &err) == TR_OK) {
        int32_t n_vocab = tr_model_n_vocab(m);
        int32_t tok[2] = {0, n_vocab > 1 ? 1 : 0}, pos[2] = {0, 1}, seq[2] = {0, 0};
        tr_batch b = {.n_tokens = tr_context_n_ctx(c) >= 2 ? 2 : 1, .token = tok, .pos = pos, .seq_id = seq};
        tr_decode(c, &b, &err);
        tr_context_free(c);
    }
    tr_model_free(m);
    return 0;
}
