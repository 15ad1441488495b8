/* Memory read bandwidth, measured rather than assumed: `trinity bench` states
 * generation speed as a share of what this machine can read per second, and
 * the figure depends on the machine, its load and the thread count. Each
 * thread reads its own slice of a buffer much larger than the caches, with
 * the widest loads the CPU has, as one sequential stream and as four side by
 * side (as the one-token kernels read their weights: one stream per thread
 * left a Sapphire Rapids' prefetchers short, 28 GB/s on two threads against
 * 32 with four, so generation read "105 %" of the old figure), and the best
 * of a few passes is kept (the others are disturbed by whatever else runs). */
#include "cpu.h"
#include "ops.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { MAX_STREAMS = 4 };

typedef struct bw_job {
    const uint8_t *buf;
    size_t bytes;
    int streams; /* read side by side per thread, 1..MAX_STREAMS */
    bool wide;   /* AVX-512 */
    bool avx2;
    uint64_t sink[64];
} bw_job;

/* Bytes [0, S * part) of p as S streams side by side, 256 bytes of each in
 * turn; the empty asm keeps every load (the sums are never used). */
#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t part, int S) {
    __m512i acc[MAX_STREAMS];
    for (int s = 0; s < MAX_STREAMS; s++) acc[s] = _mm512_setzero_si512();
    for (size_t i = 0; i + 256 <= part; i += 256)
        for (int s = 0; s < S; s++) {
            const uint8_t *q = p + (size_t)s * part + i;
            __m512i a = _mm512_xor_si512(_mm512_load_si512((const void *)q), _mm512_load_si512((const void *)(q + 64)));
            __m512i b = _mm512_xor_si512(_mm512_load_si512((const void *)(q + 128)), _mm512_load_si512((const void *)(q + 192)));
            acc[s] = _mm512_xor_si512(acc[s], _mm512_xor_si512(a, b));
            __asm__ volatile("" : "+v"(acc[s]));
        }
    for (int s = 1; s < MAX_STREAMS; s++) acc[0] = _mm512_xor_si512(acc[0], acc[s]);
    return (uint64_t)_mm512_reduce_add_epi64(acc[0]);
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t part, int S) {
    __m256i acc[MAX_STREAMS];
    for (int s = 0; s < MAX_STREAMS; s++) acc[s] = _mm256_setzero_si256();
    for (size_t i = 0; i + 256 <= part; i += 256)
        for (int s = 0; s < S; s++) {
            const uint8_t *q = p + (size_t)s * part + i;
            __m256i a = _mm256_xor_si256(_mm256_load_si256((const void *)q), _mm256_load_si256((const void *)(q + 32)));
            __m256i b = _mm256_xor_si256(_mm256_load_si256((const void *)(q + 64)), _mm256_load_si256((const void *)(q + 96)));
            __m256i c = _mm256_xor_si256(_mm256_load_si256((const void *)(q + 128)), _mm256_load_si256((const void *)(q + 160)));
            __m256i d = _mm256_xor_si256(_mm256_load_si256((const void *)(q + 192)), _mm256_load_si256((const void *)(q + 224)));
            acc[s] = _mm256_xor_si256(acc[s], _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d)));
            __asm__ volatile("" : "+x"(acc[s]));
        }
    for (int s = 1; s < MAX_STREAMS; s++) acc[0] = _mm256_xor_si256(acc[0], acc[s]);
    return (uint64_t)_mm256_extract_epi64(acc[0], 0) ^ (uint64_t)_mm256_extract_epi64(acc[0], 3);
}
#endif

static uint64_t read_scalar(const uint8_t *p, size_t part, int S) {
    uint64_t acc[MAX_STREAMS] = {0};
    for (size_t i = 0; i + 256 <= part; i += 256)
        for (int s = 0; s < S; s++) {
            const uint64_t *q = (const uint64_t *)(p + (size_t)s * part + i);
            uint64_t a = 0, b = 0, c = 0, d = 0;
            for (int k = 0; k < 32; k += 4) a ^= q[k], b ^= q[k + 1], c ^= q[k + 2], d ^= q[k + 3];
            acc[s] ^= a ^ b ^ c ^ d;
            __asm__ volatile("" : "+r"(acc[s]));
        }
    return acc[0] ^ acc[1] ^ acc[2] ^ acc[3];
}

/* Bytes each thread reads: its slice, whole 256-byte rows of every stream. */
static size_t per_thread(size_t bytes, int nth, int S) { return (bytes / (size_t)nth / (size_t)S & ~(size_t)255) * (size_t)S; }

static void bw_worker(void *arg, int ith, int nth) {
    bw_job *j = arg;
    const size_t per = per_thread(j->bytes, nth, j->streams), part = per / (size_t)j->streams;
    const uint8_t *p = j->buf + per * (size_t)ith;
    uint64_t s;
#if defined(__x86_64__)
    if (j->wide) s = read_avx512(p, part, j->streams);
    else if (j->avx2) s = read_avx2(p, part, j->streams);
    else
#endif
        s = read_scalar(p, part, j->streams);
    j->sink[ith & 63] ^= s; /* keeps the loads from being optimised away */
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double tr_read_bandwidth_gbs(int n_threads) {
    const size_t bytes = (size_t)512 << 20; /* far past any cache */
    /* In 2 MiB pages, as the model's weights are (src/model/repack.c): the
     * ceiling those reads can reach, not one set by TLB misses (4 KiB pages
     * read ~30 % slower on a Sapphire Rapids virtual machine). */
    uint8_t *buf = aligned_alloc((size_t)2 << 20, bytes);
    if (!buf) return 0;
    madvise(buf, bytes, MADV_HUGEPAGE);
    memset(buf, 1, bytes); /* fault the pages in before timing */
    tr_pool *pool = tr_pool_new(n_threads > 0 ? n_threads : 1);
    if (!pool) {
        free(buf);
        return 0;
    }
    const tr_cpu_features *f = tr_cpu_get();
    bw_job j = {.buf = buf, .bytes = bytes, .wide = f->avx512f, .avx2 = f->avx2};
    double best = 0;
    for (int rep = 0; rep < 6; rep++) {
        j.streams = rep % 2 ? MAX_STREAMS : 1;
        double t0 = now_s();
        tr_pool_run(pool, bw_worker, &j);
        double dt = now_s() - t0;
        const int nth = tr_pool_size(pool);
        double gbs = (double)(per_thread(bytes, nth, j.streams) * (size_t)nth) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    tr_pool_free(pool);
    free(buf);
    return best;
}

const char *tr_system_info(void) { return tr_cpu_describe(); }
