/* The grammar compiler and matcher, and the constrained sampler against a
 * full mask. The matcher's language is checked against llama.cpp's own
 * grammar engine in test_grammar_llamacpp.py; here: errors name their
 * cause, the parser takes llama.cpp's syntax, and the speed tricks (checking
 * the best candidates lazily, masking the vocabulary by one walk of the
 * sorted token bytes) give exactly the tokens of "mask every forbidden
 * token, then sample", computed the slow way from tr_grammar_match over the
 * whole text for every token. */
#include "tt.h"

#include "grammar/grammar.h"
#include "trinity.h"

static tr_grammar *compile(const char *text) {
    tr_grammar *g = NULL;
    tr_error err = {{0}};
    if (tr_grammar_parse(text, strlen(text), &g, &err) != TR_OK) {
        fprintf(stderr, "grammar failed: %s\n%s\n", err.msg, text);
        return NULL;
    }
    return g;
}

static int match(const tr_grammar *g, const char *s) { return tr_grammar_match(g, s, strlen(s)); }

TT_TEST(errors_name_the_problem) {
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"root ::= foo\n", "rule 'foo' is used but not defined"},
        {"main ::= \"x\"\n", "no rule named 'root'"},
        {"root ::= root \"x\" | \"y\"\n", "left-recursive"},
        {"root ::= a\na ::= b? root\nb ::= \"x\"\n", "left-recursive"},
        {"root ::= \"abc\n", "unterminated string literal"},
        {"root ::= [abc\n", "unterminated character class"},
        {"root ::= \"\\q\"\n", "unknown escape"},
        {"root ::= (\"a\" \"b\"\n", "expected ')'"},
        {"root ::= *\n", "repetition operator with nothing before it"},
        {"root ::= \"a\"{3,2}\n", "n < m"},
        {"root ::= \"a\"{99999}\n", "above 10000"},
        {"root \"a\"\n", "expected '::='"},
        {"root ::= [z-a]\n", "end is below its start"},
        {"root ::= \"a\" )\n", "expected the end of the line"},
        {"root ::= []\n", "empty character class"},
        {"root ::= \"\\x4\"\n", "hexadecimal"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tr_grammar *g = NULL;
        tr_error err = {{0}};
        tr_status st = tr_grammar_parse(cases[i].text, strlen(cases[i].text), &g, &err);
        TT_CHECK(st != TR_OK);
        TT_CHECK(g == NULL);
        if (!strstr(err.msg, cases[i].want)) {
            fprintf(stderr, "case %zu: got '%s', want '%s'\n", i, err.msg, cases[i].want);
            TT_CHECK(0);
        }
    }
    /* line numbers */
    tr_grammar *g = NULL;
    tr_error err = {{0}};
    const char *t = "root ::= a\n# comment\na ::= \"x\" \"\n";
    TT_CHECK(tr_grammar_parse(t, strlen(t), &g, &err) != TR_OK);
    TT_CHECK(strstr(err.msg, "line 3") != NULL);
}

TT_TEST(llama_cpp_syntax) {
    tr_grammar *g = compile("# leading comment\n"
                            "root ::= greeting (\" \" name)? punct   # trailing comment\n"
                            "greeting ::= \"hi\" | \"hello\"\n"
                            "name ::= [A-Z] [a-z]{1,5}\n"
                            "punct ::= (\n"
                            "    \"!\" |\n"
                            "    \"?\"\n"
                            "  )+\n");
    TT_CHECK(g != NULL);
    if (!g) return;
    TT_CHECK_EQ_INT(match(g, "hi!"), 2);
    TT_CHECK_EQ_INT(match(g, "hello Bob?!"), 2);
    TT_CHECK_EQ_INT(match(g, "hello Bob"), 1);
    TT_CHECK_EQ_INT(match(g, "hello B"), 1);
    TT_CHECK_EQ_INT(match(g, "hello Bobbbbb!"), 0); /* 6 lower-case letters */
    TT_CHECK_EQ_INT(match(g, "hello bob!"), 0);
    TT_CHECK_EQ_INT(match(g, ""), 1);
    tr_grammar_free(g);

    g = compile("root ::= [^\"\\\\\\x00-\\x1F]* \"\\\"\" \"\\u00e9\" [\\U0001F600-\\U0001F64F] . \"\\t\" [\\-\\]]\n");
    TT_CHECK(g != NULL);
    if (!g) return;
    TT_CHECK_EQ_INT(match(g, "ab\"\xc3\xa9\xf0\x9f\x98\x80x\t-"), 2);
    TT_CHECK_EQ_INT(match(g, "\"\xc3\xa9\xf0\x9f\x98\x80\xe6\x97\xa5\t]"), 2);
    TT_CHECK_EQ_INT(match(g, "\"\xc3\xa9\xf0\x9f\x98"), 1);   /* inside a character */
    TT_CHECK_EQ_INT(match(g, "\"\xc3\xa9\xf0\x9f\x99\x90"), 0); /* U+1F650: outside the range */
    TT_CHECK_EQ_INT(match(g, "a\\"), 0);
    TT_CHECK_EQ_INT(match(g, "\x80"), 0); /* not UTF-8 */
    tr_grammar_free(g);

    /* only valid UTF-8: no overlong forms, surrogates or code points above U+10FFFF */
    g = compile("root ::= [^\"]*\n");
    TT_CHECK(g != NULL);
    if (!g) return;
    TT_CHECK_EQ_INT(match(g, "\xf0\x9f\x98\x80\xc3\xa9\xe6\x97\xa5"), 2);
    TT_CHECK_EQ_INT(match(g, "\xc0\x80"), 0);
    TT_CHECK_EQ_INT(match(g, "\xe0\x81"), 0);
    TT_CHECK_EQ_INT(match(g, "\xe0\xa0"), 1);
    TT_CHECK_EQ_INT(match(g, "\xed\xa0\x80"), 0);
    TT_CHECK_EQ_INT(match(g, "\xf4\x90\x80\x80"), 0);
    TT_CHECK_EQ_INT(match(g, "\xf0\x8f\xbf\xbf"), 0);
    tr_grammar_free(g);

    /* {m}, {m,}, {,n}-style via {0,n}, empty alternatives, rules used before they are defined */
    g = compile("root ::= a{2} b{2,} c{0,2} d\na ::= \"a\"\nb ::= \"b\"\nc ::= \"c\"\nd ::= \"d\" |\n");
    TT_CHECK(g != NULL);
    if (!g) return;
    TT_CHECK_EQ_INT(match(g, "aabb"), 2);
    TT_CHECK_EQ_INT(match(g, "aabbbbbccd"), 2);
    TT_CHECK_EQ_INT(match(g, "aabbccc"), 0);
    TT_CHECK_EQ_INT(match(g, "aab"), 1);
    TT_CHECK_EQ_INT(match(g, "ab"), 0);
    tr_grammar_free(g);
}

TT_TEST(json_schema_whitespace_is_bounded) {
    char *gbnf = NULL;
    tr_error err = {{0}};
    const char *schema = "{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},\"required\":[\"a\"]}";
    TT_CHECK(tr_json_schema_to_gbnf(schema, strlen(schema), &gbnf, &err) == TR_OK);
    if (!gbnf) return;
    tr_grammar *g = compile(gbnf);
    TT_CHECK(g != NULL);
    if (g) {
        TT_CHECK_EQ_INT(match(g, "{\"a\":1}"), 2);
        TT_CHECK_EQ_INT(match(g, "{ \"a\" : 12 }"), 2);
        TT_CHECK_EQ_INT(match(g, "{\n  \"a\": -3\n}"), 2);
        char buf[64] = "{";
        for (int i = 0; i < 40; i++) strcat(buf, " ");
        TT_CHECK_EQ_INT(match(g, buf), 0); /* no padding forever */
        TT_CHECK_EQ_INT(match(g, "{\"a\":1.5}"), 0);
        TT_CHECK_EQ_INT(match(g, "{\"a\":1,\"b\":2}"), 0);
        TT_CHECK_EQ_INT(match(g, "{}"), 0);
        tr_grammar_free(g);
    }
    free(gbnf);
}

TT_TEST(json_schema_refusals_name_the_keyword) {
    static const struct {
        const char *schema, *want;
    } cases[] = {
        {"{\"type\":\"string\",\"format\":\"email\"}", "'format'"},
        {"{\"type\":\"array\",\"uniqueItems\":true}", "'uniqueItems'"},
        {"{\"type\":\"number\",\"minimum\":0.5}", "'minimum'"},
        {"{\"type\":\"integer\",\"multipleOf\":3}", "'multipleOf'"},
        {"{\"type\":\"object\",\"patternProperties\":{}}", "'patternProperties'"},
        {"{\"oneOf\":[{\"type\":\"string\"},{\"type\":\"string\",\"maxLength\":3}]}", "'oneOf'"},
        {"{\"allOf\":[{\"type\":\"string\"},{\"maxLength\":3}]}", "'allOf'"},
        {"{\"$ref\":\"http://example.com/s.json\"}", "'$ref'"},
        {"{\"$ref\":\"#/$defs/missing\"}", "not defined"},
        {"{\"type\":\"strin\"}", "unknown type 'strin'"},
        {"{\"type\":\"object\",\"required\":[\"x\"]}", "'x'"},
        {"{\"type\":\"string\",\"pattern\":\"(?=a)\"}", "lookaround"},
        {"{\"type\":\"string\",\"pattern\":\"a\\\\\\\\b\"}", "'pattern'"},
        {"[1,2", "not valid JSON"},
        {"{\"type\":\"integer\",\"minimum\":5,\"maximum\":4}", "no integer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *gbnf = NULL;
        tr_error err = {{0}};
        tr_status st = tr_json_schema_to_gbnf(cases[i].schema, strlen(cases[i].schema), &gbnf, &err);
        TT_CHECK(st != TR_OK);
        TT_CHECK(gbnf == NULL);
        if (!strstr(err.msg, cases[i].want)) {
            fprintf(stderr, "case %zu: got '%s', want '%s'\n", i, err.msg, cases[i].want);
            TT_CHECK(0);
        }
        free(gbnf);
    }
}

TT_TEST(json_schema_integer_ranges) {
    /* every integer in a window around the bounds: accepted exactly when inside */
    static const long long bounds[][2] = {{0, 9}, {-5, 17}, {7, 123}, {-1000, -999}, {95, 1005}, {-12, 0}, {1, 1}};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        char schema[160];
        snprintf(schema, sizeof schema, "{\"type\":\"integer\",\"minimum\":%lld,\"maximum\":%lld}", bounds[i][0],
                 bounds[i][1]);
        char *gbnf = NULL;
        tr_error err = {{0}};
        TT_CHECK(tr_json_schema_to_gbnf(schema, strlen(schema), &gbnf, &err) == TR_OK);
        if (!gbnf) continue;
        tr_grammar *g = compile(gbnf);
        free(gbnf);
        TT_CHECK(g != NULL);
        if (!g) continue;
        for (long long x = bounds[i][0] - 1200; x <= bounds[i][1] + 1200; x++) {
            char s[32];
            snprintf(s, sizeof s, "%lld", x);
            const bool in = x >= bounds[i][0] && x <= bounds[i][1];
            if ((match(g, s) == 2) != in) {
                fprintf(stderr, "[%lld, %lld]: %s\n", bounds[i][0], bounds[i][1], s);
                TT_CHECK(0);
                break;
            }
        }
        TT_CHECK(match(g, "007") != 2);
        tr_grammar_free(g);
    }
}

/* ---- the constrained sampler against a full mask */

enum { NV = 3000 };

/* A vocabulary rich in what JSON and the UTF-8 grammar below need, with
 * multi-byte characters split across tokens, invalid bytes, empty pieces
 * and three end-of-generation tokens. */
static tr_grammar_vocab *test_vocab(char **pieces, size_t *lens, bool *eog) {
    static const char *const fixed[] = {
        "{", "}", "[", "]", "\"", ":", ",", " ", "  ", "\n", "\n  ", "{\"", "\":", "\": ", ", \"", "true", "fal", "se",
        "null", "nu", "ll", "0", "1", "12", "-", "3.5", ".", "e", "e+", "E-", "7", "\\", "\\n", "\\u00", "e9", "a",
        "b", "c", "name", "age", "\xc3\xa9", "\xc3", "\xa9", "\xe6\x97\xa5", "\xe6\x97", "\xa5", "\xe6", "\x97\xa5",
        "\x80", "\xff", "\xf0\x9f\x98\x80", "\xf0\x9f", "\x98\x80", "x", "xy", "\"a\"", "\"name\"", "\t", "]}", "\"}",
    };
    const int nf = (int)(sizeof fixed / sizeof fixed[0]);
    static const char alphabet[] = "{}[]\":, \nabcxyz0123456789.-+eE\\\xc3\xa9";
    for (int t = 0; t < NV; t++) {
        eog[t] = false;
        if (t < nf) {
            lens[t] = strlen(fixed[t]);
            pieces[t] = malloc(lens[t] + 1);
            memcpy(pieces[t], fixed[t], lens[t] + 1);
        } else if (t == nf || t == nf + 1 || t == NV - 1) { /* end-of-generation */
            eog[t] = true;
            lens[t] = 0;
            pieces[t] = calloc(1, 1);
        } else if (t % 97 == 0) { /* a control token: no bytes */
            lens[t] = 0;
            pieces[t] = calloc(1, 1);
        } else {
            lens[t] = 1 + tt_rnd() % 6;
            pieces[t] = malloc(lens[t] + 1);
            for (size_t i = 0; i < lens[t]; i++) pieces[t][i] = alphabet[tt_rnd() % (sizeof alphabet - 1)];
            pieces[t][lens[t]] = 0;
        }
    }
    return tr_grammar_vocab_from_pieces(NV, (const char *const *)pieces, lens, eog);
}

static const char *const TEST_GRAMMARS[] = {
    /* JSON, with unbounded whitespace (llama.cpp's json.gbnf shape) */
    "root ::= value\n"
    "value ::= object | array | string | number | (\"true\" | \"false\" | \"null\") ws\n"
    "object ::= \"{\" ws ( string \":\" ws value (\",\" ws string \":\" ws value)* )? \"}\" ws\n"
    "array ::= \"[\" ws ( value (\",\" ws value)* )? \"]\" ws\n"
    "string ::= \"\\\"\" ( [^\"\\\\\\x7F\\x00-\\x1F] | \"\\\\\" ([\"\\\\bfnrt] | \"u\" [0-9a-fA-F]{4}) )* \"\\\"\" ws\n"
    "number ::= (\"-\"? ([0-9] | [1-9] [0-9]{0,15})) (\".\" [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws\n"
    "ws ::= | \" \" | \"\\n\" [ \\t]{0,20}\n",
    /* multi-byte characters */
    "root ::= (\"\xe6\x97\xa5\" | [\xc3\xa0-\xc3\xbf]+ | \"x\" | \"\xf0\x9f\x98\x80\"){1,6}\n",
    /* a small finite language: completion forces the end */
    "root ::= \"{\\\"name\\\": \" (\"true\" | \"null\" | [0-9]{1,3}) \"}\"\n",
};

/* Brute force: is token t allowed after text[0..n)? */
static bool allowed_slow(const tr_grammar *g, const char *text, size_t n, const char *piece, size_t len, bool eog) {
    if (eog) return tr_grammar_match(g, text, n) == 2;
    if (len == 0) return false;
    char buf[4096];
    if (n + len > sizeof buf) return false;
    memcpy(buf, text, n);
    memcpy(buf + n, piece, len);
    return tr_grammar_match(g, buf, n + len) >= 1;
}

TT_TEST(mask_equals_brute_force) {
    char *pieces[NV];
    size_t lens[NV];
    bool eog[NV];
    tt_seed(11);
    tr_grammar_vocab *gv = test_vocab(pieces, lens, eog);
    TT_CHECK(gv != NULL);
    uint8_t *mask = malloc(NV);
    for (size_t k = 0; k < sizeof TEST_GRAMMARS / sizeof TEST_GRAMMARS[0]; k++) {
        tr_grammar *g = compile(TEST_GRAMMARS[k]);
        TT_CHECK(g != NULL);
        if (!g) continue;
        for (int walk = 0; walk < 6; walk++) {
            gmatch *m = gm_new(g);
            char text[4096];
            size_t n = 0;
            for (int step = 0; step < 40; step++) {
                int32_t count = gm_mask(m, gv, mask), slow = 0, bad = 0;
                for (int t = 0; t < NV; t++) {
                    bool a = allowed_slow(g, text, n, pieces[t], lens[t], eog[t]);
                    slow += a;
                    bad += a != (mask[t] != 0) || a != gm_token_ok(m, gv, t);
                }
                TT_CHECK_EQ_INT(bad, 0);
                TT_CHECK_EQ_INT(count, slow);
                if (bad || count == 0) break;
                /* a random allowed token next */
                int pick = (int)(tt_rnd() % (uint32_t)count), t = 0;
                for (;; t++)
                    if (mask[t] && pick-- == 0) break;
                if (eog[t]) break;
                TT_CHECK(gm_take_token(m, gv, t));
                memcpy(text + n, pieces[t], lens[t]);
                n += lens[t];
            }
            gm_free(m);
        }
        tr_grammar_free(g);
    }
    free(mask);
    tr_grammar_vocab_free(gv);
    for (int t = 0; t < NV; t++) free(pieces[t]);
}

TT_TEST(constrained_sampler_equals_full_mask) {
    char *pieces[NV];
    size_t lens[NV];
    bool eog[NV];
    tt_seed(12);
    tr_grammar_vocab *gv = test_vocab(pieces, lens, eog);
    float *logits = malloc(sizeof *logits * NV), *masked = malloc(sizeof *masked * NV);
    static const struct {
        float temp;
        int32_t top_k;
        float top_p, min_p, rep;
    } cfg[] = {
        {0, 0, 1, 0, 1},          /* greedy */
        {0, 40, 0.95f, 0.05f, 1.3f}, /* greedy with penalties */
        {0.8f, 40, 0.95f, 0.05f, 1}, /* llama.cpp's defaults */
        {1.0f, 5, 1, 0, 1},       /* top-k only */
        {1.0f, 0, 0.9f, 0, 1},    /* no top-k: every allowed token counts */
        {0.7f, 1000, 1, 0.01f, 1.1f},
    };
    int n_steps = 0, n_mismatch = 0;
    for (size_t k = 0; k < sizeof TEST_GRAMMARS / sizeof TEST_GRAMMARS[0]; k++) {
        tr_grammar *g = compile(TEST_GRAMMARS[k]);
        if (!g) continue;
        for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
            for (int run = 0; run < 3; run++) {
                tr_sampler_params p = tr_sampler_default_params();
                p.temp = cfg[c].temp, p.top_k = cfg[c].top_k, p.top_p = cfg[c].top_p, p.min_p = cfg[c].min_p;
                p.repeat_penalty = cfg[c].rep;
                p.seed = 1000 + (uint64_t)run;
                tr_sampler *s = tr_sampler_new(&p, NV), *ref = tr_sampler_new(&p, NV);
                TT_CHECK(tr_sampler_set_grammar(s, g, gv, NULL) == TR_OK);
                char text[4096];
                size_t n = 0;
                for (int step = 0; step < 30; step++) {
                    /* logits: mostly noise, sometimes peaked on a few tokens, so the best
                     * allowed token is sometimes far down the order */
                    const float scale = (float)(1 + tt_rnd() % 8);
                    for (int t = 0; t < NV; t++) logits[t] = tt_rndf() * scale;
                    for (int j = 0; j < 300; j++) logits[tt_rnd() % NV] += 10;
                    if (step % 7 == 3) logits[tt_rnd() % NV] = logits[tt_rnd() % NV]; /* ties */
                    int any = 0;
                    for (int t = 0; t < NV; t++) {
                        bool a = allowed_slow(g, text, n, pieces[t], lens[t], eog[t]);
                        masked[t] = a ? logits[t] : -INFINITY;
                        any += a;
                    }
                    if (!any) break;
                    const int32_t got = tr_sampler_sample(s, logits), want = tr_sampler_sample(ref, masked);
                    n_steps++;
                    if (got != want) {
                        n_mismatch++;
                        fprintf(stderr, "grammar %zu cfg %zu step %d: %d vs full mask %d\n", k, c, step, got, want);
                        break;
                    }
                    if (eog[got]) break;
                    memcpy(text + n, pieces[got], lens[got]);
                    n += lens[got];
                }
                tr_sampler_free(s);
                tr_sampler_free(ref);
            }
        }
        tr_grammar_free(g);
    }
    TT_CHECK_EQ_INT(n_mismatch, 0);
    TT_CHECK(n_steps > 500);
    char note[64];
    snprintf(note, sizeof note, "%d steps compared", n_steps);
    TT_PROPERTY("steps", note);
    free(logits);
    free(masked);
    tr_grammar_vocab_free(gv);
    for (int t = 0; t < NV; t++) free(pieces[t]);
}

TT_TEST(pathological_grammars_stay_bounded) {
    /* exponential alternatives: 2^40 derivations of the same text */
    char text[4096] = "root ::= r0\n";
    for (int i = 0; i < 40; i++) {
        char line[96];
        snprintf(line, sizeof line, "r%d ::= r%d | r%d \"\"\n", i, i + 1, i + 1);
        strcat(text, line);
    }
    strcat(text, "r40 ::= \"a\"+\n");
    tr_grammar *g = compile(text);
    TT_CHECK(g != NULL);
    if (g) {
        TT_CHECK_EQ_INT(match(g, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 2);
        tr_grammar_free(g);
    }
    /* deep nesting grows stacks with the input only */
    g = compile("root ::= \"(\" root \")\" | \"x\"\n");
    TT_CHECK(g != NULL);
    if (g) {
        char s[2001];
        for (int i = 0; i < 1000; i++) s[i] = '(';
        s[1000] = 'x';
        for (int i = 0; i < 999; i++) s[1001 + i] = ')';
        s[2000] = 0;
        TT_CHECK_EQ_INT(match(g, s), 1);
        TT_CHECK_EQ_INT(tr_grammar_match(g, s, 1001), 1);
        tr_grammar_free(g);
    }
    /* stacks that triple with every "{" (a nullable string that may open an
     * object, inside the object's pairs: found by fuzz_grammar, 77 s for 16
     * tokens): up to the matcher's bound (GM_MAX_STACKS, 32768) a prefix is
     * matched as usual; past it the step counts as not allowed, at once */
    g = compile("root ::= obj\n"
                "obj ::= \"{\" (pair (\",\" pair)*)? \"}\"\n"
                "pair ::= str val\n"
                "val ::= obj | str | [0-9]+\n"
                "str ::= \"\" | obj \"\\\"\"\n");
    TT_CHECK(g != NULL);
    if (g) {
        char s[64];
        memset(s, '{', sizeof s);
        int n_ok = 0;
        while (n_ok < 40 && tr_grammar_match(g, s, (size_t)n_ok + 1) == 1) n_ok++;
        printf("     %d opening braces matched as a prefix before the bound\n", n_ok);
        TT_CHECK(n_ok >= 6);
        TT_CHECK(n_ok < 40);
        TT_CHECK_EQ_INT(match(g, "{}"), 2);
        TT_CHECK_EQ_INT(match(g, "{1,2}"), 2); /* pairs of an empty string and a number */
        TT_CHECK_EQ_INT(match(g, "{x"), 0);
        tr_grammar_free(g);
    }
}

int main(void) {
    TT_RUN(errors_name_the_problem);
    TT_RUN(llama_cpp_syntax);
    TT_RUN(json_schema_whitespace_is_bounded);
    TT_RUN(json_schema_refusals_name_the_keyword);
    TT_RUN(json_schema_integer_ranges);
    TT_RUN(mask_equals_brute_force);
    TT_RUN(constrained_sampler_equals_full_mask);
    TT_RUN(pathological_grammars_stay_bounded);
    return TT_DONE();
}
