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
/* Q4_K_X16 (weights repacked at load): 16 Q4_K rows of n elements (row i
 * at src + i * src_row) into n / 256 tr_block_q4_K_x16 at dst; and row i's
 * Q4_K block back from one of them, byte for byte. */
void tr_q4_k_to_x16(const void *src, size_t src_row, void *dst, int64_t n);
void tr_q4_k_x16_get(const void *x16, int i, void *dst);
/* Any _X16 layout (x16.c): its source format (-1: not an _X16 type); 16
 * rows of the source into it; row i's source block back from one block. */
int tr_x16_source(int type);
void tr_x16_pack(int type, const void *src, size_t src_row, void *dst, int64_t n);
void tr_x16_get(int type, const void *blk, int i, void *dst);
void tr_dequantize_row_tq2_32(const void *src, float *dst, int64_t n);
void tr_quantize_row_tq2_32(const float *src, void *dst, int64_t n);

/* One row of n elements quantized under an importance matrix (qw: n weights,
 * the row's columns), as ggml's weighted quantizers: Q2_K..Q6_K, Q4_0, Q4_1,
 * Q5_0, Q5_1. False: the type has no weighted form (quantize as without). */
bool tr_quantize_row_imatrix(int type, const float *src, void *dst, int64_t n, const float *qw);

#endif
