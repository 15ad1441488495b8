/* The table of tensor formats: one row per ggml type (see ggml's type_traits).
 * Adding a format means adding a row and its functions, nothing else. */
#ifndef TR_QUANT_H
#define TR_QUANT_H

#include "trinity.h"

typedef void (*tr_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*tr_from_float_fn)(const float *src, void *dst, int64_t n);

typedef struct tr_type_traits {
    const char *name;
    int64_t blck_size;      /* elements per block */
    size_t type_size;       /* bytes per block */
    bool is_quantized;
    tr_to_float_fn to_float;     /* NULL: no dequantizer in this build */
    tr_from_float_fn from_float; /* NULL: no quantizer in this build */
} tr_type_traits;

/* NULL when `type` is not a ggml type. */
const tr_type_traits *tr_type_traits_get(int type);

#endif
