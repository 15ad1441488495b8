/* AVX-512 float matmul kernels (TR_ISA_AVX512; see kernels.h for the shape they
 * share): none yet, the dispatcher keeps the AVX2 ones. */
#include "kernels.h"

const tr_gemm_row tr_avx512_float_gemm_rows[] = {{-1, 0, NULL}};
