/* libFuzzer target: every tensor format's converters over arbitrary bytes.
 * The first byte picks the type. The rest is read as blocks of that type and
 * dequantized (any bit pattern is a valid block: NaN/inf scales included),
 * the floats quantized back, and the raw bytes also read as floats (NaN,
 * inf, subnormals, huge values) and quantized. No crash, no out-of-bounds
 * access, no undefined float-to-int conversion (the clang sanitizer checks
 * those), and requantizing is stable where it must be: what the Q8_0 /
 * Q4_0 / Q5_0 / TQ2_0 quantizers write comes back unchanged from another
 * quantize-dequantize round (finite blocks). */
#include "trinity.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int type = data[0] % TR_TYPE_COUNT;
    /* blocks are read in place, so they must be aligned like their fields
     * (as tensor data in a GGUF file is): copy past the type byte */
    uint8_t *aligned = malloc(size);
    if (!aligned) abort();
    memcpy(aligned, data + 1, size - 1);
    data = aligned;
    size--;
    const size_t bb = tr_type_block_bytes(type);
    const int64_t bs = tr_type_block_size(type);
    if (!bb || !bs) {
        free(aligned);
        return 0;
    }

    const size_t nblocks = size / bb > 64 ? 64 : size / bb;
    const int64_t n = (int64_t)nblocks * bs;
    float *y = malloc(sizeof(float) * (size_t)(n ? n : 1));
    float *y2 = malloc(sizeof(float) * (size_t)(n ? n : 1));
    uint8_t *q = malloc(nblocks * bb + 1);
    if (!y || !y2 || !q) abort();

    if (tr_type_can_dequantize(type) && nblocks) {
        if (tr_dequantize(type, data, y, n) != TR_OK) abort();
        if (tr_type_can_quantize(type)) {
            if (tr_quantize(type, y, q, n) != TR_OK) abort();
            if (tr_dequantize(type, q, y2, n) != TR_OK) abort();
            if (type == TR_TYPE_Q8_0 || type == TR_TYPE_Q4_0 || type == TR_TYPE_Q5_0 || type == TR_TYPE_TQ2_0) {
                /* what these quantizers write always uses the extreme level, so
                 * it survives another round trip unchanged (if finite) */
                float *y3 = malloc(sizeof(float) * (size_t)n);
                if (!y3) abort();
                if (tr_quantize(type, y2, q, n) != TR_OK || tr_dequantize(type, q, y3, n) != TR_OK) abort();
                for (size_t b = 0; b < nblocks; b++) {
                    const float *v = y2 + (int64_t)b * bs;
                    bool finite = true;
                    for (int64_t j = 0; j < bs; j++) finite &= isfinite(v[j]);
                    if (!finite) continue;
                    for (int64_t j = 0; j < bs; j++)
                        if (v[j] != y3[(int64_t)b * bs + j]) abort();
                }
                free(y3);
            }
        }
    }

    /* the raw bytes as floats, through every quantizer */
    const int64_t nf = (int64_t)(size / sizeof(float)) / bs * bs;
    if (tr_type_can_quantize(type) && nf > 0) {
        const int64_t m = nf > 64 * bs ? 64 * bs : nf;
        float *x = malloc(sizeof(float) * (size_t)m);
        uint8_t *q2 = malloc(tr_row_size(type, m));
        if (!x || !q2) abort();
        memcpy(x, data, sizeof(float) * (size_t)m);
        if (tr_quantize(type, x, q2, m) != TR_OK) abort();
        free(x);
        free(q2);
    }
    free(y);
    free(y2);
    free(q);
    free(aligned);
    return 0;
}
