/* Run-time CPU feature detection: cpuid tells what the core implements, xgetbv
 * tells whether the OS saves the wide registers (YMM for AVX, ZMM/opmask for
 * AVX-512); an instruction set counts only when both agree. */
#include "cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static unsigned long long read_xcr0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static void detect(tr_cpu_features *f) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    f->sse3 = c & (1u << 0);
    f->ssse3 = c & (1u << 9);
    bool fma = c & (1u << 12);
    bool osxsave = c & (1u << 27);
    bool avx = c & (1u << 28);
    bool f16c = c & (1u << 29);
    unsigned long long xcr0 = osxsave ? read_xcr0() : 0;
    bool ymm_ok = (xcr0 & 0x6) == 0x6;   /* SSE and AVX state */
    bool zmm_ok = (xcr0 & 0xe6) == 0xe6; /* plus opmask, ZMM_Hi256, Hi16_ZMM */
    f->avx = avx && ymm_ok;
    f->fma = fma && f->avx;
    f->f16c = f16c && f->avx;
    unsigned max = __get_cpuid_max(0, NULL);
    if (max < 7) return;
    __cpuid_count(7, 0, a, b, c, d);
    f->avx2 = (b & (1u << 5)) && f->avx;
    f->avx512f = (b & (1u << 16)) && zmm_ok;
    f->avx512dq = (b & (1u << 17)) && f->avx512f;
    f->avx512bw = (b & (1u << 30)) && f->avx512f;
    f->avx512vl = (b & (1u << 31)) && f->avx512f;
    f->avx512vnni = (c & (1u << 11)) && f->avx512f;
    /* AMX: CPUID.7.0 EDX bits 24 (tiles) and 25 (int8 products); the OS must
     * enable the tile state (XCR0 bits 17, 18), and Linux hands the 8 KiB of
     * tile data to a process only on request (ARCH_REQ_XCOMP_PERM for
     * XFEATURE_XTILEDATA, 18; process-wide, so every pool thread has it). */
    bool amx = (d & (1u << 24)) && (d & (1u << 25)) && (xcr0 & 0x60000) == 0x60000 && f->avx512f;
#if defined(__linux__) && defined(__x86_64__)
    if (amx && syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18) != 0) amx = false;
#else
    amx = false;
#endif
    f->amx = amx;
    __cpuid_count(7, 1, a, b, c, d);
    f->avxvnni = (a & (1u << 4)) && f->avx2;
    f->avx512bf16 = (a & (1u << 5)) && f->avx512f;
}
#else
static void detect(tr_cpu_features *f) { (void)f; }
#endif

static tr_cpu_features features;
static char description[160];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void) {
    detect(&features);
    /* A cap for tests and comparisons, scalar < avx2 < avxvnni < avx512 <
     * amx; it never raises what the CPU has (amx is everything this build
     * has kernels for: no cap). */
    const char *cap = getenv("TRINITY_CPU");
    if (cap && (!strcmp(cap, "scalar") || !strcmp(cap, "avx2") || !strcmp(cap, "avxvnni") || !strcmp(cap, "avx512")))
        features.amx = false;
    if (cap && (!strcmp(cap, "scalar") || !strcmp(cap, "avx2") || !strcmp(cap, "avxvnni"))) {
        features.avx512f = features.avx512bw = features.avx512vl = features.avx512dq = false;
        features.avx512vnni = features.avx512bf16 = false;
        if (strcmp(cap, "avxvnni")) features.avxvnni = false;
        if (!strcmp(cap, "scalar")) features.avx2 = features.fma = false;
    }
    const struct { bool on; const char *name; } list[] = {
        {features.avx2, "avx2"},         {features.fma, "fma"},
        {features.f16c, "f16c"},         {features.avxvnni, "avxvnni"},
        {features.avx512f, "avx512f"},   {features.avx512bw, "avx512bw"},
        {features.avx512vl, "avx512vl"}, {features.avx512vnni, "avx512vnni"},
        {features.avx512bf16, "avx512bf16"}, {features.amx, "amx"},
    };
    size_t len = 0;
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) {
        if (!list[i].on) continue;
        size_t n = strlen(list[i].name);
        if (len + n + 2 >= sizeof description) break;
        if (len) description[len++] = ' ';
        memcpy(description + len, list[i].name, n);
        len += n;
    }
    if (!len) memcpy(description, "scalar", 7);
    else description[len] = 0;
}

const tr_cpu_features *tr_cpu_get(void) {
    pthread_once(&once, init);
    return &features;
}

const char *tr_cpu_describe(void) {
    pthread_once(&once, init);
    return description;
}
