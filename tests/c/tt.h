/* tt.h — the tiny test harness every C test uses.
 *
 *   TT_TEST(name) { TT_CHECK(cond); TT_CHECK_EQ_INT(a, b); ... }
 *   int main(void) { TT_RUN(name); ...; return TT_DONE(); }
 *
 * A failed check prints file:line and the expression and marks the test
 * failed; the binary exits non-zero if any test failed, which ctest reads. */
#ifndef TT_H
#define TT_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tests' random inputs: xorshift64 from a fixed seed (tt_seed to pick
 * another), so a failing input comes back on every run. */
static inline uint64_t *tt_rng_state(void) {
    static uint64_t s = 0x9e3779b97f4a7c15ull;
    return &s;
}
static inline void tt_seed(uint64_t seed) { *tt_rng_state() = seed; }
static inline uint32_t tt_rnd(void) {
    uint64_t *s = tt_rng_state();
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (uint32_t)(*s >> 16);
}
/* Uniform in [-1, 1), on a grid of 2^-23. */
static inline float tt_rndf(void) { return (float)(tt_rnd() & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f; }

static int tt_failed_checks;
static int tt_tests_run, tt_tests_failed;

#define TT_TEST(name) static void name(void)

#define TT_CHECK(cond)                                                                         \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            tt_failed_checks++;                                                                \
        }                                                                                      \
    } while (0)

#define TT_CHECK_EQ_INT(a, b)                                                                  \
    do {                                                                                       \
        long long tt_a = (long long)(a), tt_b = (long long)(b);                                \
        if (tt_a != tt_b) {                                                                    \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, \
                    #b, tt_a, tt_b);                                                           \
            tt_failed_checks++;                                                                \
        }                                                                                      \
    } while (0)

#define TT_CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                       \
        double tt_a = (double)(a), tt_b = (double)(b);                                         \
        if (!(fabs(tt_a - tt_b) <= (tol))) {                                                   \
            fprintf(stderr, "  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", __FILE__,        \
                    __LINE__, #a, #b, (double)(tol), tt_a, tt_b);                              \
            tt_failed_checks++;                                                                \
        }                                                                                      \
    } while (0)

#define TT_CHECK_STR(a, b)                                                                     \
    do {                                                                                       \
        const char *tt_a = (a), *tt_b = (b);                                                   \
        if (!tt_a || !tt_b || strcmp(tt_a, tt_b)) {                                            \
            fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" vs \"%s\"\n", __FILE__, __LINE__, \
                    #a, #b, tt_a ? tt_a : "(null)", tt_b ? tt_b : "(null)");                   \
            tt_failed_checks++;                                                                \
        }                                                                                      \
    } while (0)

#define TT_RUN(name)                                                                           \
    do {                                                                                       \
        int tt_before = tt_failed_checks;                                                      \
        name();                                                                                \
        tt_tests_run++;                                                                        \
        if (tt_failed_checks != tt_before) {                                                   \
            tt_tests_failed++;                                                                 \
            fprintf(stderr, "FAIL %s\n", #name);                                               \
        } else {                                                                               \
            printf("ok   %s\n", #name);                                                        \
        }                                                                                      \
    } while (0)

#define TT_DONE()                                                                              \
    (printf("%d passed, %d failed\n", tt_tests_run - tt_tests_failed, tt_tests_failed),         \
     tt_tests_failed ? 1 : 0)

#endif
