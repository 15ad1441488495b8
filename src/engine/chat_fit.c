/* Context shift for chat: a conversation that would overflow the context
 * loses whole turns, oldest first, never a half message and never the system
 * prompt, so the prompt is always the chat template applied to a well-formed
 * conversation (llama-server turned its token-level context shift off by
 * default because cutting tokens broke templates). Every rendering goes
 * through the caller's one "messages -> prompt" function, whichever renderer
 * that is, and the conversation is rendered again after each drop, because
 * a template's output for a turn can depend on its neighbours (Gemma folds
 * the system prompt into the first user turn). */
#include "trinity.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static bool is_system(const char *role) { return !strcmp(role, "system") || !strcmp(role, "developer"); }

int32_t tr_chat_room(int32_t max_tokens, int32_t n_ctx) {
    if (max_tokens > 0) return max_tokens < n_ctx - 1 ? max_tokens : n_ctx - 1;
    return n_ctx / 4;
}

/* Render and tokenize msgs[0..n). */
static tr_status render_ids(void *self, tr_chat_render_fn render, tr_chat_tokenize_fn tokenize, const tr_chat_msg *msgs,
                            size_t n, int32_t **ids, size_t *n_ids, tr_error *err) {
    char *text = NULL;
    tr_status st = render(self, msgs, n, &text, err);
    if (st != TR_OK) return st;
    st = tokenize(self, text, strlen(text), ids, n_ids, err);
    free(text);
    return st;
}

tr_status tr_chat_fit(void *self, tr_chat_render_fn render, tr_chat_tokenize_fn tokenize, const tr_chat_msg *msgs,
                       size_t n, int32_t n_ctx, int32_t room, int32_t **ids, size_t *n_ids, size_t *dropped,
                       tr_error *err) {
    *ids = NULL;
    *n_ids = 0;
    *dropped = 0;
    tr_status st = render_ids(self, render, tokenize, msgs, n, ids, n_ids, err);
    if (st != TR_OK || (int64_t)*n_ids + room <= n_ctx) return st;
    /* The leading system messages stay; turns begin at user messages. */
    size_t n_sys = 0;
    while (n_sys < n && is_system(msgs[n_sys].role)) n_sys++;
    size_t last_user = n; /* the last turn's start: never dropped */
    for (size_t i = n; i-- > n_sys;)
        if (!strcmp(msgs[i].role, "user")) {
            last_user = i;
            break;
        }
    if (last_user == n) return TR_OK; /* no turn to drop */
    tr_chat_msg *kept = malloc(sizeof *kept * (n ? n : 1));
    if (!kept) return TR_OK; /* as it was: the caller's limits apply */
    memcpy(kept, msgs, sizeof *kept * n_sys);
    size_t from = n_sys; /* first message of msgs still kept after the system ones */
    while ((int64_t)*n_ids + room > n_ctx && from < last_user) {
        /* Drop the turn at `from`: through the message before the next user message. */
        size_t next = from + 1;
        while (next < last_user && strcmp(msgs[next].role, "user")) next++;
        memcpy(kept + n_sys, msgs + next, sizeof *kept * (n - next));
        int32_t *nids = NULL;
        size_t nn = 0;
        st = render_ids(self, render, tokenize, kept, n_sys + (n - next), &nids, &nn, err);
        if (st != TR_OK) break;
        free(*ids);
        *ids = nids;
        *n_ids = nn;
        from = next;
    }
    free(kept);
    if (st != TR_OK) {
        free(*ids);
        *ids = NULL;
        *n_ids = 0;
        return st;
    }
    *dropped = from - n_sys;
    return TR_OK;
}
