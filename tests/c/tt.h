/* tt.h — the tiny test harness every C test uses.
 *
 *   TT_TEST(name) { TT_CHECK(cond); TT_CHECK_EQ_INT(a, b); ... }
 *   int main(void) { TT_RUN(name); ...; return TT_DONE(); }
 *
 * A failed check prints file:line and the expression and marks the test
 * failed; the binary exits non-zero if any test failed, which ctest reads.
 *
 * A test that cannot run here says so with TT_SKIP("why") and returns: it is
 * reported as skipped, never as passed. A test that exercises a SIMD path
 * says which with TT_SIMD(path, ran, why_not): a path that ran is listed in
 * the report, one that did not is a skipped sub-case ("test[path]") with the
 * reason, so a CPU without it shows in the suite's summary.
 *
 * With TRINITY_TEST_REPORT_DIR set (ctest sets it), TT_DONE also writes
 * <dir>/<test file's name>.xml in JUnit form: every test with its status,
 * the skips' reasons, the first failed check, and the SIMD paths as
 * properties. tests/summarize.py reads these. */
#ifndef TT_H
#define TT_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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
static int tt_tests_run, tt_tests_failed, tt_tests_skipped, tt_parts_skipped;

/* What the report needs: one row per test (and per SIMD path not run), the
 * SIMD paths that ran. Fixed sizes: a test file has a few dozen tests. */
enum { TT_PASS, TT_FAIL, TT_SKIPPED };
typedef struct tt_row {
    char name[128];
    int status;
    char message[256];
    double seconds;
} tt_row;
static tt_row tt_rows[256];
static int tt_n_rows;
typedef struct tt_prop {
    char name[16], value[128];
} tt_prop;
static tt_prop tt_props[256]; /* test_matmul alone reports ~80 SIMD paths */
static int tt_n_props;
static const char *tt_current = "";
static bool tt_skip_now;
static char tt_skip_reason[256], tt_first_failure[256];

static inline tt_row *tt_add_row(const char *name, int status, const char *message, double seconds) {
    if (tt_n_rows >= (int)(sizeof tt_rows / sizeof tt_rows[0])) return NULL;
    tt_row *r = &tt_rows[tt_n_rows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->status = status;
    snprintf(r->message, sizeof r->message, "%s", message ? message : "");
    r->seconds = seconds;
    return r;
}

/* Every failed check goes through here: printed, counted, and the first one
 * of the test kept for the report. */
__attribute__((format(printf, 1, 2))) static inline void tt_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (!tt_first_failure[0]) {
        va_list aq;
        va_copy(aq, ap);
        vsnprintf(tt_first_failure, sizeof tt_first_failure, fmt, aq);
        va_end(aq);
    }
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    tt_failed_checks++;
}

#define TT_TEST(name) static void name(void)

#define TT_CHECK(cond)                                                                         \
    do {                                                                                       \
        if (!(cond)) tt_fail("  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);       \
    } while (0)

#define TT_CHECK_EQ_INT(a, b)                                                                  \
    do {                                                                                       \
        long long tt_a = (long long)(a), tt_b = (long long)(b);                                \
        if (tt_a != tt_b)                                                                      \
            tt_fail("  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b,    \
                    tt_a, tt_b);                                                               \
    } while (0)

#define TT_CHECK_NEAR(a, b, tol)                                                               \
    do {                                                                                       \
        double tt_a = (double)(a), tt_b = (double)(b);                                         \
        if (!(fabs(tt_a - tt_b) <= (tol)))                                                     \
            tt_fail("  %s:%d: |%s - %s| <= %g failed: %.9g vs %.9g\n", __FILE__, __LINE__, #a, \
                    #b, (double)(tol), tt_a, tt_b);                                            \
    } while (0)

#define TT_CHECK_STR(a, b)                                                                     \
    do {                                                                                       \
        const char *tt_a = (a), *tt_b = (b);                                                   \
        if (!tt_a || !tt_b || strcmp(tt_a, tt_b))                                              \
            tt_fail("  %s:%d: %s == %s failed: \"%s\" vs \"%s\"\n", __FILE__, __LINE__, #a, #b, \
                    tt_a ? tt_a : "(null)", tt_b ? tt_b : "(null)");                           \
    } while (0)

/* The current test cannot run here: say why, then return from the test. */
#define TT_SKIP(...)                                                                           \
    do {                                                                                       \
        tt_skip_now = true;                                                                    \
        snprintf(tt_skip_reason, sizeof tt_skip_reason, __VA_ARGS__);                          \
    } while (0)

/* A required reference (the model, say) is missing: a failure, or a skip
 * where TRINITY_ALLOW_SKIP=1 says this machine is expected to lack it. The
 * caller returns from the test after this. */
static inline void tt_missing_reference(const char *what) {
    const char *allow = getenv("TRINITY_ALLOW_SKIP");
    if (allow && !strcmp(allow, "1")) {
        tt_skip_now = true;
        snprintf(tt_skip_reason, sizeof tt_skip_reason, "%.200s is missing (allowed: TRINITY_ALLOW_SKIP=1)", what);
    } else {
        tt_fail("  %s is missing: run scripts/setup.sh, or set TRINITY_ALLOW_SKIP=1 where that is expected\n", what);
    }
}

/* A name = value line for the report (kept once). */
static inline void tt_property(const char *name, const char *value) {
    for (int i = 0; i < tt_n_props; i++)
        if (!strcmp(tt_props[i].name, name) && !strcmp(tt_props[i].value, value)) return;
    if (tt_n_props >= (int)(sizeof tt_props / sizeof tt_props[0])) return;
    snprintf(tt_props[tt_n_props].name, sizeof tt_props[0].name, "%s", name);
    snprintf(tt_props[tt_n_props].value, sizeof tt_props[0].value, "%s", value);
    tt_n_props++;
}
#define TT_PROPERTY(name, value) tt_property((name), (value))

/* A part of the current test that cannot run here: a skipped sub-case
 * "test[part]" with the reason (the rest of the test runs). */
static inline void tt_skip_part(const char *part, const char *reason) {
    char name[128];
    snprintf(name, sizeof name, "%s[%s]", tt_current, part);
    for (int i = 0; i < tt_n_rows; i++)
        if (!strcmp(tt_rows[i].name, name)) return;
    printf("skip %s: %s\n", name, reason);
    tt_add_row(name, TT_SKIPPED, reason, 0);
    tt_parts_skipped++;
}
#define TT_SKIP_PART(part, reason) tt_skip_part((part), (reason))

/* A SIMD path this test exercises (ran) or would exercise on another CPU
 * (!ran: a skipped part, "not run on this CPU: why_not"). */
static inline void tt_simd(const char *path, bool ran, const char *why_not) {
    if (!ran) {
        char why[256];
        snprintf(why, sizeof why, "not run on this CPU: %s", why_not);
        tt_skip_part(path, why);
        return;
    }
    char name[128];
    snprintf(name, sizeof name, "%s[%s]", tt_current, path);
    printf("     simd: %s ran\n", path);
    tt_property("simd", name);
}
#define TT_SIMD(path, ran, why_not) tt_simd((path), (ran), (why_not))

static inline double tt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define TT_RUN(name)                                                                           \
    do {                                                                                       \
        int tt_before = tt_failed_checks;                                                      \
        tt_current = #name;                                                                    \
        tt_skip_now = false;                                                                   \
        tt_first_failure[0] = 0;                                                               \
        double tt_t0 = tt_now();                                                               \
        name();                                                                                \
        double tt_dt = tt_now() - tt_t0;                                                       \
        tt_tests_run++;                                                                        \
        if (tt_failed_checks != tt_before) {                                                   \
            tt_tests_failed++;                                                                 \
            fprintf(stderr, "FAIL %s\n", #name);                                               \
            tt_add_row(#name, TT_FAIL, tt_first_failure[0] ? tt_first_failure : "a check failed (see the log)", tt_dt); \
        } else if (tt_skip_now) {                                                              \
            tt_tests_skipped++;                                                                \
            printf("skip %s: %s\n", #name, tt_skip_reason);                                    \
            tt_add_row(#name, TT_SKIPPED, tt_skip_reason, tt_dt);                              \
        } else {                                                                               \
            printf("ok   %s\n", #name);                                                        \
            tt_add_row(#name, TT_PASS, NULL, tt_dt);                                           \
        }                                                                                      \
        tt_current = "";                                                                       \
    } while (0)

static inline void tt_xml_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '&') fputs("&amp;", f);
        else if (c == '<') fputs("&lt;", f);
        else if (c == '>') fputs("&gt;", f);
        else if (c == '"') fputs("&quot;", f);
        else if (c < 0x20 && c != '\t') fputc(' ', f); /* newlines too: messages are one line */
        else fputc(c, f);
    }
}

/* Writes the report (see the header comment); `file` is the test's source. */
static inline void tt_write_report(const char *file) {
    const char *dir = getenv("TRINITY_TEST_REPORT_DIR");
    if (!dir || !*dir) return;
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    char suite[128], path[4096];
    snprintf(suite, sizeof suite, "%s", base);
    char *dot = strrchr(suite, '.');
    if (dot) *dot = 0;
    snprintf(path, sizeof path, "%s/%s.xml", dir, suite);
    mkdir(dir, 0777); /* the first test of a run makes it */
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "tt: cannot write the report %s\n", path);
        return;
    }
    int n_fail = 0, n_skip = 0;
    double total = 0;
    for (int i = 0; i < tt_n_rows; i++) {
        n_fail += tt_rows[i].status == TT_FAIL;
        n_skip += tt_rows[i].status == TT_SKIPPED;
        total += tt_rows[i].seconds;
    }
    fprintf(f, "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites>\n");
    fprintf(f, "<testsuite name=\"%s\" tests=\"%d\" failures=\"%d\" errors=\"0\" skipped=\"%d\" time=\"%.3f\">\n",
            suite, tt_n_rows, n_fail, n_skip, total);
    if (tt_n_props) {
        fprintf(f, "<properties>\n");
        for (int i = 0; i < tt_n_props; i++) {
            fprintf(f, "<property name=\"%s\" value=\"", tt_props[i].name);
            tt_xml_escaped(f, tt_props[i].value);
            fprintf(f, "\"/>\n");
        }
        fprintf(f, "</properties>\n");
    }
    for (int i = 0; i < tt_n_rows; i++) {
        const tt_row *r = &tt_rows[i];
        fprintf(f, "<testcase classname=\"%s\" name=\"", suite);
        tt_xml_escaped(f, r->name);
        fprintf(f, "\" time=\"%.3f\"", r->seconds);
        if (r->status == TT_PASS) {
            fprintf(f, "/>\n");
            continue;
        }
        fprintf(f, "><%s message=\"", r->status == TT_FAIL ? "failure" : "skipped");
        tt_xml_escaped(f, r->message);
        fprintf(f, "\"/></testcase>\n");
    }
    fprintf(f, "</testsuite>\n</testsuites>\n");
    fclose(f);
}

#define TT_DONE()                                                                              \
    (tt_write_report(__FILE__),                                                                \
     printf("%d passed, %d failed, %d skipped\n", tt_tests_run - tt_tests_failed - tt_tests_skipped, \
            tt_tests_failed, tt_tests_skipped + tt_parts_skipped),                                                \
     tt_tests_failed ? 1 : 0)

#endif
