/* The table of tensor formats: one row per ggml type (see ggml's type_traits).
 * Adding a format means adding a row and its functions, nothing else. */
#ifndef TR_QUANT_H
#define TR_QUANT_H

#include "trinity.h"

typedef void (*tr_to_float_fn)(const void *src, float *dst, int64_t n);
typedef void (*tr_from_float_fn)(const float *src, void *dst, int64_t n);
/* An _X16 layout's converters: 16 rows of its source format (row i at
 * src + i * src_row, n elements each) into n / block of its blocks at dst;
 * and row i's source block back from one of them, byte for byte. */
typedef void (*tr_x16_pack_fn)(const void *src, size_t src_row, void *dst, int64_t n);
typedef void (*tr_x16_get_fn)(const void *blk, int i, void *dst);

typedef struct tr_type_traits {
    const char *name;
    int64_t blck_size;      /* elements per block */
    size_t type_size;       /* bytes per block */
    bool is_quantized;
    tr_to_float_fn to_float;     /* NULL: no dequantizer in this build */
    tr_from_float_fn from_float; /* NULL: no quantizer in this build */
    /* The sixteen-row layouts (weights repacked at load, x16.c). A format
     * that has one names it in x16; the layout's row names its source in
     * x16_source and carries its converters. 0 (F32, never either): none. */
    int x16;
    int x16_source;
    tr_x16_pack_fn x16_pack;
    tr_x16_get_fn x16_get;
} tr_type_traits;

/* NULL when `type` is not a ggml type. */
const tr_type_traits *tr_type_traits_get(int type);

/* The scalar reference converters behind the table: n elements, a multiple of
 * the type's block size. Quantizers write whole blocks; dequantizers read
 * them. They define the truth that faster variants are tested against. */
void tr_dequantize_row_f16(const void *src, float *dst, int64_t n);
void tr_quantize_row_f16(const float *src, void *dst, int64_t n);
void tr_dequantize_row_bf16(const void *src, float *dst, int64_t n);
void tr_quantize_row_bf16(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void tr_quantize_row_q4_0(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q4_1(const void *src, float *dst, int64_t n);
void tr_quantize_row_q4_1(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q5_0(const void *src, float *dst, int64_t n);
void tr_quantize_row_q5_0(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q5_1(const void *src, float *dst, int64_t n);
void tr_quantize_row_q5_1(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void tr_quantize_row_q8_0(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q8_1(const void *src, float *dst, int64_t n);
void tr_quantize_row_q8_1(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q2_K(const void *src, float *dst, int64_t n);
void tr_quantize_row_q2_K(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q3_K(const void *src, float *dst, int64_t n);
void tr_quantize_row_q3_K(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q4_K(const void *src, float *dst, int64_t n);
void tr_quantize_row_q4_K(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q5_K(const void *src, float *dst, int64_t n);
void tr_quantize_row_q5_K(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q6_K(const void *src, float *dst, int64_t n);
void tr_quantize_row_q6_K(const float *src, void *dst, int64_t n);
void tr_dequantize_row_q8_K(const void *src, float *dst, int64_t n);
void tr_quantize_row_q8_K(const float *src, void *dst, int64_t n);
void tr_dequantize_row_tq1_0(const void *src, float *dst, int64_t n);
void tr_quantize_row_tq1_0(const float *src, void *dst, int64_t n);
void tr_dequantize_row_tq2_0(const void *src, float *dst, int64_t n);
void tr_quantize_row_tq2_0(const float *src, void *dst, int64_t n);
void tr_dequantize_row_iq4_nl(const void *src, float *dst, int64_t n);
void tr_quantize_row_iq4_nl(const float *src, void *dst, int64_t n);
void tr_dequantize_row_iq4_xs(const void *src, float *dst, int64_t n);
void tr_dequantize_row_mxfp4(const void *src, float *dst, int64_t n);
void tr_quantize_row_mxfp4(const float *src, void *dst, int64_t n);
/* TQ1_0 blocks as TQ2_0 blocks of exactly the same values (n elements). */
void tr_tq1_0_to_tq2_0(const void *src, void *dst, int64_t n);
/* The _X16 layouts' converters (tr_x16_pack_fn, tr_x16_get_fn), in their
 * rows of the table. */
void tr_q4_k_to_x16(const void *src, size_t src_row, void *dst, int64_t n);
void tr_q4_k_x16_get(const void *x16, int i, void *dst);
void tr_q4_0_to_x16(const void *src, size_t src_row, void *dst, int64_t n);
void tr_q4_0_x16_get(const void *x16, int i, void *dst);
void tr_q5_0_to_x16(const void *src, size_t src_row, void *dst, int64_t n);
void tr_q5_0_x16_get(const void *x16, int i, void *dst);
void tr_q8_0_to_x16(const void *src, size_t src_row, void *dst, int64_t n);
void tr_q8_0_x16_get(const void *x16, int i, void *dst);
/* Through the table: an _X16 layout's source format (-1: `type` is not an
 * _X16 layout), a format's _X16 layout (-1: it has none), and the layout's
 * converters (nothing done for a type that is not one). */
int tr_x16_source(int type);
int tr_x16_layout(int type);
void tr_x16_pack(int type, const void *src, size_t src_row, void *dst, int64_t n);
void tr_x16_get(int type, const void *blk, int i, void *dst);
/* Row i (0..15) of the group of sixteen rows at `group` of an _X16 layout,
 * n elements, as floats: its source format's dequantizer on each block the
 * getter gives back (so the same floats as the source row's). */
void tr_x16_dequantize_row(int type, const void *group, int i, float *dst, int64_t n);
void tr_dequantize_row_tq2_32(const void *src, float *dst, int64_t n);
void tr_quantize_row_tq2_32(const float *src, void *dst, int64_t n);

/* One row of n elements quantized under an importance matrix (qw: n weights,
 * the row's columns), as ggml's weighted quantizers: Q2_K..Q6_K, Q4_0, Q4_1,
 * Q5_0, Q5_1. False: the type has no weighted form (quantize as without). */
bool tr_quantize_row_imatrix(int type, const float *src, void *dst, int64_t n, const float *qw);

#endif
