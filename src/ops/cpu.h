/* CPU features, read once at start-up with cpuid/xgetbv. Kernels never assume
 * an instruction set: the SIMD variants are compiled with per-function target
 * attributes so the binary runs on any x86-64, and the dispatcher picks the
 * best variant the running CPU (and OS, for the wide register state) allows. */
#ifndef TR_CPU_H
#define TR_CPU_H

#include <stdbool.h>

typedef struct tr_cpu_features {
    bool sse3, ssse3, avx, avx2, fma, f16c;
    bool avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512bf16;
    bool avxvnni;
    bool amx; /* AMX-TILE and AMX-INT8, the tile state enabled by the OS and granted to this process */
} tr_cpu_features;

/* The features of this CPU, detected on first call (thread-safe) and fixed
 * afterwards. TRINITY_CPU=scalar|avx2|avxvnni|avx512|amx in the environment caps what
 * the dispatcher may use (for tests and for comparing variants). */
const tr_cpu_features *tr_cpu_get(void);

/* One line naming the features found, e.g. "avx2 fma f16c avx512f ...". */
const char *tr_cpu_describe(void);

#endif
