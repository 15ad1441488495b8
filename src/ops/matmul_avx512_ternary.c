/* AVX-512 ternary matmul kernels (TQ1_0, TQ2_0; TR_ISA_AVX512, see
 * kernels.h for the shape they share): none yet, the dispatcher keeps the
 * AVX2 ones. */
#include "kernels.h"

const tr_gemm_row tr_avx512_ternary_gemm_rows[] = {{-1, 0, NULL}};
