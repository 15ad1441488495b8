/* Stop strings found however the tokens split them, never released, and
 * UTF-8 characters never released half-way. The reference is the plain
 * definition: the output is the text up to the first occurrence of any stop
 * string, computed here with strstr over the whole text at once. */
#include "server/textout.h"
#include "tt.h"

#include <stdlib.h>

/* Feed `pieces` one by one, collecting what is released; return the total. */
static char *run(const char *const *pieces, size_t n, char *const *stop, size_t n_stop, bool *stopped,
                 int *max_held) {
    srv_textout t;
    srv_textout_init(&t, stop, n_stop);
    srv_buf got = {0};
    srv_buf_append(&got, "", 0);
    *max_held = 0;
    for (size_t i = 0; i < n && !t.stopped; i++) {
        srv_textout_push(&t, pieces[i], strlen(pieces[i]));
        size_t r = srv_textout_releasable(&t, false);
        TT_CHECK(r >= t.released && r <= t.raw.len);
        srv_buf_append(&got, t.raw.p + t.released, r - t.released);
        t.released = r;
        if ((int)(t.raw.len - t.released) > *max_held) *max_held = (int)(t.raw.len - t.released);
    }
    size_t r = srv_textout_releasable(&t, true);
    srv_buf_append(&got, t.raw.p ? t.raw.p + t.released : "", r - t.released);
    *stopped = t.stopped;
    srv_textout_free(&t);
    return got.p;
}

/* The reference: after each token, look for the stop strings in the whole
 * text so far; the first time any occurs, cut at the earliest occurrence. (A
 * longer stop string that could still complete further back does not wait:
 * generation ends as soon as some stop string is there, as in llama.cpp.) */
static char *reference(const char *const *pieces, size_t n, char *const *stop, size_t n_stop, bool *stopped) {
    srv_buf all = {0};
    srv_buf_append(&all, "", 0);
    *stopped = false;
    for (size_t k = 0; k < n; k++) {
        srv_buf_puts(&all, pieces[k]);
        size_t cut = all.len;
        for (size_t i = 0; i < n_stop; i++) {
            char *m = strstr(all.p, stop[i]);
            if (m && (size_t)(m - all.p) < cut) cut = (size_t)(m - all.p);
        }
        if (cut < all.len) {
            *stopped = true;
            all.p[cut] = '\0';
            break;
        }
    }
    return all.p;
}

static void check_case(const char *const *pieces, size_t n, char *const *stop, size_t n_stop) {
    bool s1, s2;
    int held;
    char *got = run(pieces, n, stop, n_stop, &s1, &held);
    char *want = reference(pieces, n, stop, n_stop, &s2);
    TT_CHECK_STR(got, want);
    TT_CHECK(s1 == s2);
    if (strcmp(got, want)) {
        for (size_t i = 0; i < n; i++) fprintf(stderr, "[%s]", pieces[i]);
        for (size_t i = 0; i < n_stop; i++) fprintf(stderr, " stop{%s}", stop[i]);
        fprintf(stderr, "\n");
    }
    free(got);
    free(want);
}

TT_TEST(stop_split_across_tokens) {
    char *stop[] = {"</stop>"};
    const char *p[] = {"Hello", " world", "</", "st", "op", ">", "never seen"};
    check_case(p, 7, stop, 1);
    bool st;
    int held;
    char *got = run(p, 7, stop, 1, &st, &held);
    TT_CHECK_STR(got, "Hello world");
    TT_CHECK(st);
    free(got);
}

TT_TEST(stop_inside_one_token) {
    char *stop[] = {"END"};
    const char *p[] = {"abc", "xxENDyy", "zz"};
    check_case(p, 3, stop, 1);
}

TT_TEST(false_start_is_released) {
    /* "</" looks like the start of "</stop>" but is not: it must come out. */
    char *stop[] = {"</stop>"};
    const char *p[] = {"a</", "b", "</s", "x"};
    bool st;
    int held;
    char *got = run(p, 4, stop, 1, &st, &held);
    TT_CHECK_STR(got, "a</b</sx");
    TT_CHECK(!st);
    free(got);
}

TT_TEST(earliest_of_several_stops) {
    char *stop[] = {"world", "lo w", "zzz"};
    const char *p[] = {"Hel", "lo", " wo", "rld"};
    check_case(p, 4, stop, 3);
}

TT_TEST(overlapping_prefixes) {
    /* "aab" inside "aaab": a naive matcher that resets on mismatch misses it. */
    char *stop[] = {"aab"};
    const char *p[] = {"a", "a", "a", "b", "c"};
    check_case(p, 5, stop, 1);
}

TT_TEST(utf8_held_until_complete) {
    /* The euro sign (E2 82 AC) split over three tokens: nothing of it may be
     * released before its last byte. */
    srv_textout t;
    srv_textout_init(&t, NULL, 0);
    srv_textout_push(&t, "5 \xE2", 3);
    TT_CHECK_EQ_INT(srv_textout_releasable(&t, false), 2);
    srv_textout_push(&t, "\x82", 1);
    TT_CHECK_EQ_INT(srv_textout_releasable(&t, false), 2);
    srv_textout_push(&t, "\xAC", 1);
    TT_CHECK_EQ_INT(srv_textout_releasable(&t, false), 5);
    srv_textout_free(&t);
}

TT_TEST(random_splits_match_reference) {
    /* Random texts over a small alphabet, random token splits, random stops. */
    srand(1234);
    const char alpha[] = "ab</>";
    for (int iter = 0; iter < 2000; iter++) {
        char text[64];
        int len = rand() % 40;
        for (int i = 0; i < len; i++) text[i] = alpha[rand() % 5];
        text[len] = '\0';
        char pieces_buf[64][64];
        const char *pieces[64];
        size_t n = 0;
        for (int i = 0; i < len;) {
            int k = 1 + rand() % 4;
            if (i + k > len) k = len - i;
            memcpy(pieces_buf[n], text + i, (size_t)k);
            pieces_buf[n][k] = '\0';
            pieces[n] = pieces_buf[n];
            n++;
            i += k;
        }
        char s1[8], s2[8];
        int l1 = 1 + rand() % 4, l2 = 1 + rand() % 3;
        for (int i = 0; i < l1; i++) s1[i] = alpha[rand() % 5];
        for (int i = 0; i < l2; i++) s2[i] = alpha[rand() % 5];
        s1[l1] = s2[l2] = '\0';
        char *stop[] = {s1, s2};
        check_case(pieces, n, stop, 2);
    }
}

TT_TEST(sanitize_replaces_invalid) {
    srv_buf b = {0};
    srv_utf8_sanitize(&b, "a\xFF" "b\xC3", 4); /* a lone FF, then a truncated 2-byte char */
    TT_CHECK_STR(b.p, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD");
    srv_buf_free(&b);
    srv_utf8_sanitize(&b, "\xED\xA0\x80ok", 5); /* an encoded surrogate is not UTF-8 */
    TT_CHECK_STR(b.p, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDok");
    srv_buf_free(&b);
    srv_utf8_sanitize(&b, "h\xC3\xA9llo \xF0\x9F\x98\x80", 11);
    TT_CHECK_STR(b.p, "h\xC3\xA9llo \xF0\x9F\x98\x80");
    srv_buf_free(&b);
}

int main(void) {
    TT_RUN(stop_split_across_tokens);
    TT_RUN(stop_inside_one_token);
    TT_RUN(false_start_is_released);
    TT_RUN(earliest_of_several_stops);
    TT_RUN(overlapping_prefixes);
    TT_RUN(utf8_held_until_complete);
    TT_RUN(random_splits_match_reference);
    TT_RUN(sanitize_replaces_invalid);
    return TT_DONE();
}
