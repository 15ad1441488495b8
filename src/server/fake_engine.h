/* A scripted engine for the server's tests (test_server_http.c,
 * test_http_reliability.c): the step API of include/trinity.h without a
 * model. After any prompt byte the "model" says "Hello", " wor", "ld", "</",
 * "stop", ">", a euro sign split over two tokens, then "x" forever; a prompt
 * ending in '!' gets end-of-generation at once; a sequence seeded FAIL_SEED
 * is refused. It checks the contract the server must keep (ids it knows,
 * positions in range, no take after release) and counts breaches in
 * `errors`. Test-only: included by the test files, not built into the
 * library. */
#ifndef SRV_FAKE_ENGINE_H
#define SRV_FAKE_ENGINE_H

#include "server/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { NV = 300, T_EOS = 0, T_HELLO = 257, T_WOR, T_LD, T_LT, T_STOP, T_GT, T_EURO1, T_EURO2 };
#define BYTE(b) ((int32_t)(unsigned char)(b) + 1)
#define FAIL_SEED 666u /* a sequence with this seed is refused by the engine */

typedef struct fseq {
    bool used, running;
    int64_t id;
    int32_t last, n_prompt, n_predict, n_gen, n_taken, n_eog;
    int32_t *out;
    tr_finish fin;
    float row[NV]; /* logits of the latest token */
} fseq;

/* The engine's step API, scripted: n_seq sequences run at once (the rest
 * wait, oldest first), each step gives every running one its next token.
 * It checks the contract the server must keep: ids it knows, no take after
 * release. */
typedef struct fake {
    int n_seq;
    int32_t n_ctx;
    fseq seqs[64];
    int64_t next_id;
    useconds_t delay;
    int per_step;         /* tokens a step gives a sequence (speculation gives several); 0: 1 */
    int errors;           /* calls that broke the contract */
    uint64_t seeds[64];   /* each submitted sequence's seed, in order (wrapping) */
    int n_submitted;
} fake;

static int32_t next_of(int32_t t) {
    if (t == BYTE('!')) return T_EOS;
    if (t >= 1 && t <= 256) return T_HELLO;
    if (t >= T_HELLO && t < T_EURO2) return t + 1;
    return BYTE('x');
}

static fseq *f_find(fake *f, int64_t id) {
    for (int i = 0; i < 64; i++)
        if (f->seqs[i].used && f->seqs[i].id == id) return &f->seqs[i];
    f->errors++;
    return NULL;
}

static int64_t f_submit(void *self, const tr_seq_params *p, tr_error *err) {
    fake *f = self;
    if (p->n_prompt <= 0 || p->n_prompt >= f->n_ctx) {
        snprintf(err->msg, sizeof err->msg, "prompt of %d tokens does not fit", p->n_prompt);
        return -1;
    }
    if (p->sampling.seed == FAIL_SEED) {
        snprintf(err->msg, sizeof err->msg, "scripted failure");
        return -1;
    }
    for (int i = 0; i < 64; i++) {
        fseq *q = &f->seqs[i];
        if (q->used) continue;
        free(q->out);
        memset(q, 0, sizeof *q);
        q->out = malloc(sizeof *q->out * (size_t)f->n_ctx);
        q->used = true;
        q->id = f->next_id++;
        q->last = p->prompt[p->n_prompt - 1];
        q->n_prompt = p->n_prompt;
        q->n_predict = p->n_predict;
        f->seeds[f->n_submitted++ % 64] = p->sampling.seed;
        for (int32_t k = 0; k < p->n_prompt; k++)
            if (p->prompt[k] < 0 || p->prompt[k] >= NV) f->errors++;
        return q->id;
    }
    snprintf(err->msg, sizeof err->msg, "too many sequences");
    return -1;
}

static tr_status f_step(void *self, tr_step_stats *st, tr_error *err) {
    fake *f = self;
    (void)err;
    int running = 0;
    for (int i = 0; i < 64; i++) running += f->seqs[i].used && f->seqs[i].running && f->seqs[i].fin == TR_FINISH_NONE;
    while (running < f->n_seq) { /* admit the oldest waiting */
        fseq *w = NULL;
        for (int i = 0; i < 64; i++) {
            fseq *q = &f->seqs[i];
            if (q->used && !q->running && q->fin == TR_FINISH_NONE && (!w || q->id < w->id)) w = q;
        }
        if (!w) break;
        w->running = true;
        running++;
    }
    if (f->delay) usleep(f->delay);
    memset(st, 0, sizeof *st);
    const int per_step = f->per_step > 0 ? f->per_step : 1;
    for (int i = 0; i < 64; i++) {
        fseq *q = &f->seqs[i];
        for (int r = 0; r < per_step; r++) {
            if (!q->used || !q->running || q->fin != TR_FINISH_NONE) break;
            const int32_t t = next_of(q->last);
            for (int k = 0; k < NV; k++) q->row[k] = -1.0f - (float)k * 0.001f;
            q->row[t] = 5.0f;
            st->n_tokens++;
            st->n_sampled++;
            if (t == T_EOS) { /* sampled and counted, not handed out: as the engine */
                q->fin = TR_FINISH_EOG;
                q->n_eog = 1;
                break;
            }
            q->out[q->n_gen++] = t;
            q->last = t;
            if (q->n_predict > 0 && q->n_gen >= q->n_predict) q->fin = TR_FINISH_LENGTH;
            else if (q->n_prompt + q->n_gen - 1 >= f->n_ctx) q->fin = TR_FINISH_CONTEXT;
        }
    }
    return TR_OK;
}

static int32_t f_take(void *self, int64_t id, int32_t *tokens, int32_t cap, tr_seq_info *info) {
    fseq *q = f_find(self, id);
    if (!q) return -1;
    int32_t n = q->n_gen - q->n_taken;
    if (n > cap) n = cap;
    memcpy(tokens, q->out + q->n_taken, sizeof *tokens * (size_t)n);
    q->n_taken += n;
    *info = (tr_seq_info){.finish = q->fin, .running = q->running, .n_prompt = q->n_prompt,
                          .n_generated = q->n_gen + q->n_eog};
    if (q->fin != TR_FINISH_NONE && q->n_taken == q->n_gen) q->used = false;
    return n;
}

static const float *f_logits(void *self, int64_t id) {
    fake *f = self;
    for (int i = 0; i < 64; i++)
        if (f->seqs[i].used && f->seqs[i].id == id) return f->seqs[i].row;
    return NULL; /* released already (finished and taken): fine */
}

static void f_release(void *self, int64_t id) {
    fake *f = self;
    for (int i = 0; i < 64; i++)
        if (f->seqs[i].used && f->seqs[i].id == id) f->seqs[i].used = false;
}

static tr_status f_tokenize(void *self, const char *text, size_t len, int32_t **ids, size_t *n, tr_error *err) {
    (void)self, (void)err;
    *ids = malloc((len ? len : 1) * sizeof **ids);
    for (size_t i = 0; i < len; i++) (*ids)[i] = BYTE(text[i]);
    *n = len;
    return TR_OK;
}
static tr_status f_chat(void *self, const tr_chat_msg *m, size_t n, const char *messages_json, const char *tools_json,
                        char **out, tr_error *err) {
    (void)self, (void)err, (void)messages_json, (void)tools_json;
    size_t cap = 64;
    for (size_t i = 0; i < n; i++) cap += strlen(m[i].role) + strlen(m[i].content) + 4;
    *out = malloc(cap);
    (*out)[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(*out, "<");
        strcat(*out, m[i].role);
        strcat(*out, ">");
        strcat(*out, m[i].content);
    }
    strcat(*out, "<assistant>");
    return TR_OK;
}
static size_t f_piece(void *self, int32_t id, char *buf, size_t cap) {
    (void)self;
    static const char *multi[] = {"Hello", " wor", "ld", "</", "stop", ">", "\xE2\x82", "\xAC"};
    char one[2] = {0};
    const char *p;
    if (id == T_EOS) p = "";
    else if (id <= 256) one[0] = (char)(id - 1), p = one;
    else p = multi[id - T_HELLO];
    size_t n = id >= 1 && id <= 256 ? 1 : strlen(p);
    memcpy(buf, p, n < cap ? n : cap);
    return n;
}

static srv_engine fake_engine(fake *f, int n_ctx) {
    f->n_ctx = n_ctx;
    return (srv_engine){.self = f, .n_vocab = NV, .n_ctx = n_ctx,
                        .defaults = {.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .repeat_penalty = 1.0f},
                        .submit = f_submit, .step = f_step, .take = f_take, .logits = f_logits,
                        .release = f_release, .tokenize = f_tokenize, .chat_format = f_chat, .piece = f_piece};
}

static void fake_free(fake *f) {
    for (int i = 0; i < 64; i++) free(f->seqs[i].out);
}

#endif
