/* tr_chat_fit (context shift for chat) with a renderer that checks what it
 * is given: every conversation it renders must be the leading system
 * messages, then whole turns (a user message first), ending with the
 * original last turn. Its "tokens" are one per byte of the rendering, so the
 * sizes are known. Under random conversations (system, developer, user,
 * assistant, tool messages; random lengths, contexts and rooms): the result
 * is the fewest dropped turns that fit (or every droppable one), the kept
 * messages are a suffix of whole turns, and a renderer's error is passed on. */
#include "trinity.h"
#include "core/util.h"
#include "tt.h"

#include <stdlib.h>
#include <string.h>

typedef struct fake {
    const tr_chat_msg *all;  /* the original conversation */
    size_t n_all, n_sys, last_user;
    int bad;                 /* renderings that were not well-formed */
    int calls, fail_at;      /* fail_at: this call fails (0: never) */
} fake;

static tr_status render(void *user, const tr_chat_msg *msgs, size_t n, char **out, tr_error *err) {
    fake *f = user;
    if (++f->calls == f->fail_at) return tr_err_set(err, TR_ERR_FORMAT, "template: rendering failed on purpose");
    /* Leading system messages as given, then a suffix of the original that
     * starts at a user message (or is the original's own continuation). */
    size_t ok = n >= f->n_sys && n - f->n_sys <= f->n_all - f->n_sys;
    for (size_t i = 0; ok && i < f->n_sys; i++) ok = msgs[i].content == f->all[i].content;
    const size_t from = f->n_all - (n - f->n_sys);
    if (ok && from != f->n_sys) ok = !strcmp(f->all[from].role, "user");
    for (size_t i = f->n_sys; ok && i < n; i++) ok = msgs[i].content == f->all[from + i - f->n_sys].content;
    if (ok) ok = from <= f->last_user;
    f->bad += !ok;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += strlen(msgs[i].content) + 2;
    *out = malloc(len + 1);
    if (!*out) return TR_ERR_NOMEM;
    char *p = *out;
    for (size_t i = 0; i < n; i++) p += sprintf(p, "<%s", msgs[i].content), *p++ = '>';
    *p = 0;
    return TR_OK;
}

static tr_status tokenize(void *user, const char *text, size_t len, int32_t **ids, size_t *n, tr_error *err) {
    (void)user, (void)err;
    *ids = malloc(sizeof **ids * (len ? len : 1));
    if (!*ids) return TR_ERR_NOMEM;
    for (size_t i = 0; i < len; i++) (*ids)[i] = (unsigned char)text[i];
    *n = len;
    return TR_OK;
}

static size_t rendered_len(const tr_chat_msg *m, size_t n_sys, size_t from, size_t n) {
    size_t len = 0;
    for (size_t i = 0; i < n_sys; i++) len += strlen(m[i].content) + 2;
    for (size_t i = from; i < n; i++) len += strlen(m[i].content) + 2;
    return len;
}

TT_TEST(drops_the_fewest_whole_turns) {
    static const char *roles[] = {"user", "assistant", "tool", "user", "assistant"};
    char text[64][40];
    int shifted = 0, all_dropped = 0;
    for (int round = 0; round < 3000; round++) {
        tt_seed(77 + (uint64_t)round);
        tr_chat_msg m[64];
        size_t n = 0, n_sys = tt_rnd() % 3;
        for (size_t i = 0; i < n_sys; i++) m[n++].role = tt_rnd() & 1 ? "system" : "developer";
        const size_t body = 1 + tt_rnd() % 40;
        for (size_t i = 0; i < body; i++) m[n++].role = roles[tt_rnd() % 5];
        m[n++].role = "user";
        for (size_t i = 0; i < n; i++) {
            const size_t len = 1 + tt_rnd() % 30;
            memset(text[i], 'a' + (int)(i % 26), len);
            text[i][len] = 0;
            m[i].content = text[i];
        }
        fake f = {.all = m, .n_all = n, .n_sys = n_sys, .last_user = n - 1};
        const int32_t n_ctx = 20 + (int32_t)(tt_rnd() % 600), room = (int32_t)(tt_rnd() % 64);
        int32_t *ids = NULL;
        size_t n_ids = 0, dropped = 0;
        tr_error err = {{0}};
        TT_CHECK(tr_chat_fit(&f, render, tokenize, m, n, n_ctx, room, &ids, &n_ids, &dropped, &err) == TR_OK);
        TT_CHECK_EQ_INT(f.bad, 0);
        const size_t from = n_sys + dropped;
        TT_CHECK(from <= n - 1);
        TT_CHECK(dropped == 0 || !strcmp(m[from].role, "user"));
        TT_CHECK_EQ_INT(n_ids, rendered_len(m, n_sys, from, n));
        /* Fits, or nothing more could go; and keeping the previous turn would not fit. */
        const bool fits = (int64_t)n_ids + room <= n_ctx;
        TT_CHECK(fits || from == n - 1); /* the last message is the last turn */
        if (dropped) {
            size_t prev = from - 1;
            while (prev > n_sys && strcmp(m[prev].role, "user")) prev--;
            TT_CHECK((int64_t)rendered_len(m, n_sys, prev, n) + room > n_ctx);
        }
        shifted += dropped > 0;
        all_dropped += !fits;
        free(ids);
    }
    fprintf(stderr, "  %d conversations shifted, %d still too long after every droppable turn went\n", shifted,
            all_dropped);
    TT_CHECK(shifted > 500);
    TT_CHECK(all_dropped > 50);
}

TT_TEST(renderer_errors_are_passed_on) {
    tr_chat_msg m[] = {{"system", "s"}, {"user", "aaaaaaaaaa"}, {"assistant", "bbbbbbbbbb"}, {"user", "c"}};
    fake f = {.all = m, .n_all = 4, .n_sys = 1, .last_user = 3, .fail_at = 2};
    int32_t *ids = (int32_t *)&f;
    size_t n_ids = 9, dropped = 9;
    tr_error err = {{0}};
    TT_CHECK(tr_chat_fit(&f, render, tokenize, m, 4, 10, 2, &ids, &n_ids, &dropped, &err) == TR_ERR_FORMAT);
    TT_CHECK(strstr(err.msg, "on purpose") != NULL);
    TT_CHECK(ids == NULL && n_ids == 0);
    f.calls = 0;
    f.fail_at = 1;
    TT_CHECK(tr_chat_fit(&f, render, tokenize, m, 4, 10, 2, &ids, &n_ids, &dropped, &err) == TR_ERR_FORMAT);
    TT_CHECK(ids == NULL);
    /* A conversation of system messages only: nothing to drop. */
    f = (fake){.all = m, .n_all = 1, .n_sys = 1, .last_user = 1};
    TT_CHECK(tr_chat_fit(&f, render, tokenize, m, 1, 2, 0, &ids, &n_ids, &dropped, &err) == TR_OK);
    TT_CHECK_EQ_INT(dropped, 0);
    free(ids);
    TT_CHECK_EQ_INT(tr_chat_room(100, 64), 63);
    TT_CHECK_EQ_INT(tr_chat_room(-1, 400), 100);
    TT_CHECK_EQ_INT(tr_chat_room(10, 400), 10);
}

int main(void) {
    TT_RUN(drops_the_fewest_whole_turns);
    TT_RUN(renderer_errors_are_passed_on);
    return TT_DONE();
}
