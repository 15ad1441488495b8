/* The Jinja interpreter's failure paths, run under ASan/UBSan too (the
 * jinja2 parity tests are Python and run only in the release build):
 * endless loops, growing output and memory stop with an error naming the
 * budget; syntax and runtime errors name the template line; a parsed template
 * renders the same from several threads at once; nothing leaks on any path. */
#include "trinity.h"
#include "tt.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const char *vars = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                          "{\"role\": \"assistant\", \"content\": \"yo\"}], \"n\": 3}";

/* Render src; returns the output or NULL with err filled. */
static char *render(const char *src, const tr_template_opts *o, tr_error *err) {
    tr_template *t = NULL;
    if (tr_template_parse(src, strlen(src), &t, err) != TR_OK) return NULL;
    char *out = NULL;
    tr_status st = tr_template_render(t, vars, o, &out, err);
    tr_template_free(t);
    return st == TR_OK ? out : NULL;
}

static bool fails_with(const char *src, const tr_template_opts *o, const char *want) {
    tr_error err = {{0}};
    char *out = render(src, o, &err);
    if (out) {
        fprintf(stderr, "  rendered, expected an error with '%s': %s\n", want, src);
        free(out);
        return false;
    }
    if (!strstr(err.msg, want)) {
        fprintf(stderr, "  error '%s' lacks '%s'\n", err.msg, want);
        return false;
    }
    return true;
}

TT_TEST(endless_loops_stop_at_the_step_budget) {
    tr_template_opts o = {.max_steps = 100000};
    TT_CHECK(fails_with("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", &o,
                        "steps"));
    TT_CHECK(fails_with("{% macro f(k) %}{{ f(k + 1) }}{% endmacro %}{{ f(0) }}", &o, "deeply"));
    /* work on big strings counts: 100,000 searches of a 4 MB string would take minutes */
    TT_CHECK(fails_with("{% set big = 'x' * 4000000 %}{% for i in range(100000) %}{% if 'zz' in big %}{% endif %}"
                        "{% endfor %}",
                        NULL, "steps"));
    TT_CHECK(fails_with("{% set big = 'ab' * 2000000 %}{% for i in range(100000) %}{{ big|length }}{% endfor %}",
                        NULL, "steps"));
    /* an empty sequence times a huge count is empty at once (fuzz_template found it spinning for 2.9e18 turns) */
    tr_error err = {{0}};
    char *out = render("[{{ [] * 2888888888888888881 }}|{{ '' * 2888888888888888881 }}|{{ 9000000000000000000 * [] }}]",
                       NULL, &err);
    TT_CHECK(out && !strcmp(out, "[[]||[]]"));
    free(out);
}

TT_TEST(output_and_memory_budgets) {
    tr_template_opts o = {.max_output = 1000};
    TT_CHECK(fails_with("{% for i in range(1000) %}xxxxxxxxxx{% endfor %}", &o, "output grew beyond 1000 bytes"));
    tr_template_opts m = {.max_memory = 1 << 20};
    TT_CHECK(fails_with("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
                        "{% endfor %}",
                        &m, "out of memory"));
    TT_CHECK(fails_with("{{ range(200000)|list|length }}", NULL, "Range too big"));
}

TT_TEST(errors_name_the_line) {
    TT_CHECK(fails_with("a\nb\n{% if x %}\nc", NULL, "template line 3: this block is never closed"));
    TT_CHECK(fails_with("a\n\n{{ 1 + }}", NULL, "template line 3"));
    TT_CHECK(fails_with("a\n{% foo %}", NULL, "template line 2: unknown or unexpected tag 'foo'"));
    TT_CHECK(fails_with("{{ x|nosuch }}", NULL, "no filter named 'nosuch'"));
    TT_CHECK(fails_with("1\n2\n3\n{{ raise_exception('roles must alternate') }}", NULL,
                        "template line 4: roles must alternate"));
    TT_CHECK(fails_with("\n{{ messages[0].content.nope.deeper }}", NULL, "template line 2"));
    TT_CHECK(fails_with("{{ messages.append(1) }}", NULL, "unsafe"));
    TT_CHECK(fails_with("{{ 'unterminated }}", NULL, "unterminated string"));
    TT_CHECK(fails_with("{{ 1 // 0 }}", NULL, "division or modulo by zero"));
    TT_CHECK(fails_with("{% break %}", NULL, "outside of a for loop"));
    tr_error err = {{0}};
    tr_template *t = NULL;
    TT_CHECK(tr_template_parse("{{ 1 }}", 7, &t, &err) == TR_OK);
    char *out = NULL;
    TT_CHECK(tr_template_render(t, "[1, 2]", NULL, &out, &err) != TR_OK && strstr(err.msg, "JSON object"));
    TT_CHECK(tr_template_render(t, "{\"a\": ", NULL, &out, &err) != TR_OK && out == NULL);
    tr_template_free(t);
    /* deep nesting is refused, not a stack overflow */
    size_t n = 100000;
    char *deep = malloc(2 * n + 16);
    for (int kind = 0; kind < 3; kind++) {
        const char *open = kind == 0 ? "(" : kind == 1 ? "[" : "-";
        const char *close = kind == 0 ? ")" : kind == 1 ? "]" : "";
        size_t o = 0;
        memcpy(deep, "{{ ", 3), o = 3;
        for (size_t i = 0; i < n; i++) deep[o++] = open[0];
        deep[o++] = '1';
        for (size_t i = 0; *close && i < n; i++) deep[o++] = close[0];
        memcpy(deep + o, " }}", 4);
        TT_CHECK(fails_with(deep, NULL, "nests too deeply"));
    }
    free(deep);
}

typedef struct job {
    const tr_template *t;
    char *out;
} job;

static void *render_job(void *arg) {
    job *j = arg;
    tr_error err = {{0}};
    for (int k = 0; k < 50; k++) {
        char *out = NULL;
        if (tr_template_render(j->t, vars, NULL, &out, &err) != TR_OK) return NULL;
        if (j->out && strcmp(j->out, out)) {
            free(out);
            return NULL;
        }
        free(j->out);
        j->out = out;
    }
    return j;
}

TT_TEST(one_template_renders_alike_from_threads) {
    const char *src = "{%- set ns = namespace(c=0) -%}{% for m in messages %}{% set ns.c = ns.c + 1 %}"
                      "<{{ m.role }}>{{ m.content|upper }}{{ messages|tojson(indent=1) if loop.last }}{% endfor %}"
                      "{{ ns.c * n }}";
    tr_template *t = NULL;
    tr_error err = {{0}};
    TT_CHECK(tr_template_parse(src, strlen(src), &t, &err) == TR_OK);
    job jobs[4] = {{t, NULL}, {t, NULL}, {t, NULL}, {t, NULL}};
    pthread_t th[4];
    for (int i = 0; i < 4; i++) TT_CHECK(pthread_create(&th[i], NULL, render_job, &jobs[i]) == 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        TT_CHECK(r == &jobs[i]);
    }
    for (int i = 1; i < 4; i++) TT_CHECK(jobs[i].out && jobs[0].out && !strcmp(jobs[i].out, jobs[0].out));
    for (int i = 0; i < 4; i++) free(jobs[i].out);
    tr_template_free(t);
}

int main(void) {
    TT_RUN(endless_loops_stop_at_the_step_budget);
    TT_RUN(output_and_memory_budgets);
    TT_RUN(errors_name_the_line);
    TT_RUN(one_template_renders_alike_from_threads);
    return TT_DONE();
}
