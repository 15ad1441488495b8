#include "kernels.h"

tr_gemm_fn tr_gemm_avx512_for(int type) {
    (void)type;
    return NULL;
}
