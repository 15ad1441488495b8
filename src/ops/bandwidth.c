/* Memory read bandwidth, measured rather than assumed: `trinity bench` states
 * generation speed as a share of what this machine can read per second, and
 * the figure depends on the machine, its load and the thread count. Each
 * thread streams its own slice of a buffer much larger than the caches, with
 * the widest loads the CPU has, and the best of a few passes is kept (the
 * others are disturbed by whatever else runs). */
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

typedef struct bw_job {
    const uint8_t *buf;
    size_t bytes;
    bool wide; /* AVX-512 */
    bool avx2;
    uint64_t sink[64];
} bw_job;

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t read_avx512(const uint8_t *p, size_t n) {
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (size_t i = 0; i + 256 <= n; i += 256) {
        a = _mm512_xor_si512(a, _mm512_load_si512((const void *)(p + i)));
        b = _mm512_xor_si512(b, _mm512_load_si512((const void *)(p + i + 64)));
        c = _mm512_xor_si512(c, _mm512_load_si512((const void *)(p + i + 128)));
        d = _mm512_xor_si512(d, _mm512_load_si512((const void *)(p + i + 192)));
    }
    a = _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d));
    return (uint64_t)_mm512_reduce_add_epi64(a);
}

__attribute__((target("avx2"))) static uint64_t read_avx2(const uint8_t *p, size_t n) {
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (size_t i = 0; i + 128 <= n; i += 128) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const void *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const void *)(p + i + 32)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const void *)(p + i + 64)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const void *)(p + i + 96)));
    }
    a = _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d));
    return (uint64_t)_mm256_extract_epi64(a, 0) ^ (uint64_t)_mm256_extract_epi64(a, 3);
}
#endif

static uint64_t read_scalar(const uint8_t *p, size_t n) {
    const uint64_t *q = (const uint64_t *)p;
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (size_t i = 0; i + 4 <= n / 8; i += 4) {
        a ^= q[i];
        b ^= q[i + 1];
        c ^= q[i + 2];
        d ^= q[i + 3];
    }
    return a ^ b ^ c ^ d;
}

static void bw_worker(void *arg, int ith, int nth) {
    bw_job *j = arg;
    size_t per = (j->bytes / (size_t)nth) & ~(size_t)255;
    const uint8_t *p = j->buf + per * (size_t)ith;
    uint64_t s;
#if defined(__x86_64__)
    if (j->wide) s = read_avx512(p, per);
    else if (j->avx2) s = read_avx2(p, per);
    else
#endif
        s = read_scalar(p, per);
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
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        tr_pool_run(pool, bw_worker, &j);
        double dt = now_s() - t0;
        size_t per = (bytes / (size_t)tr_pool_size(pool)) & ~(size_t)255;
        double gbs = (double)(per * (size_t)tr_pool_size(pool)) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    tr_pool_free(pool);
    free(buf);
    return best;
}

const char *tr_system_info(void) { return tr_cpu_describe(); }
