/* BPE pre-tokenizers: split text into words before merging.
 *
 * llama.cpp is the reference, so this follows what it runs rather than what
 * the Hugging Face expressions say:
 *  - the GPT-2, Llama 3 and Qwen2 expressions are hand-written scanners there
 *    (with their own corner cases); ours walk the code points the same way;
 *  - every other expression goes through std::regex over the code points,
 *    where any non-ASCII code point is first replaced by a stand-in for its
 *    category when the expression uses \p{..} ("collapsed"), and non-ASCII
 *    white space by U+000B, so \s stays ASCII. We do the same substitution and
 *    run the expression with PCRE2 (32-bit code units, no UTF/UCP), whose
 *    leftmost-first backtracking agrees with ECMAScript on these expressions.
 *  - the text is decoded leniently first: each malformed byte becomes U+FFFD.
 * Steps apply in order; each splits the pieces the previous ones made. */
#define PCRE2_CODE_UNIT_WIDTH 32
#include <pcre2.h>

#include "core/util.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab_impl.h"

#include <stdlib.h>
#include <string.h>

#define OUT_OF_RANGE 0xFFFFFFFFu

/* ------------------------------------------------------- definitions */

typedef struct step_def {
    tr_pretok_kind kind;
    const char *regex; /* REGEX only: the expression as llama.cpp writes it */
} step_def;

typedef struct style_def {
    const char *name;
    step_def steps[TR_PRETOK_MAX_STEPS];
} style_def;

/* The expression lists for each family (from the models' tokenizer.json, as
 * adapted by llama.cpp). */
static const style_def styles[] = {
    {"default",
     {{TR_PRETOK_REGEX, "[\\p{P}\\$\\+<=>\\^~\\|]+"},
      {TR_PRETOK_GPT2, NULL},
      {TR_PRETOK_REGEX, "\\p{N}+"},
      {TR_PRETOK_REGEX, "[0-9][0-9][0-9]"}}},
    {"gpt2", {{TR_PRETOK_GPT2, NULL}}},
    {"llama3", {{TR_PRETOK_LLAMA3, NULL}}},
    {"qwen2", {{TR_PRETOK_QWEN2, NULL}}},
    {"starcoder", {{TR_PRETOK_REGEX, "\\p{N}"}, {TR_PRETOK_GPT2, NULL}}},
    {"falcon",
     {{TR_PRETOK_REGEX, "[\\p{P}\\$\\+<=>\\^~\\|`]+"},
      {TR_PRETOK_GPT2, NULL},
      {TR_PRETOK_REGEX, "[0-9][0-9][0-9]"}}},
    {"deepseek-llm",
     {{TR_PRETOK_REGEX, "[\r\n]"},
      {TR_PRETOK_REGEX, "\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+"},
      {TR_PRETOK_REGEX, "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"},
      {TR_PRETOK_REGEX, "\\s+$"},
      {TR_PRETOK_REGEX, "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"},
      {TR_PRETOK_REGEX, "\\p{N}+"}}},
    {"deepseek-coder",
     {{TR_PRETOK_REGEX, "[\r\n]"},
      {TR_PRETOK_REGEX, "\\s?\\p{L}+"},
      {TR_PRETOK_REGEX, "\\s?\\p{P}+"},
      {TR_PRETOK_REGEX, "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"},
      {TR_PRETOK_REGEX, "\\p{N}"}}},
    {"bloom", {{TR_PRETOK_REGEX, " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"}}},
    {"viking", {{TR_PRETOK_REGEX, " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"}, {TR_PRETOK_REGEX, "\\p{N}"}}},
    {"deepseek-v3",
     {{TR_PRETOK_REGEX, "\\p{N}{1,3}"},
      {TR_PRETOK_REGEX, "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"},
      {TR_PRETOK_REGEX, "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}}},
    {"gpt-4o",
     {{TR_PRETOK_REGEX, "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
    {"tekken",
     {{TR_PRETOK_REGEX, "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
    {"seed-coder",
     {{TR_PRETOK_REGEX, "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
    {"grok-2",
     {{TR_PRETOK_REGEX, "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
    {"ufakzeka",
     {{TR_PRETOK_REGEX, "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
    {"bailingmoe",
     {{TR_PRETOK_REGEX, "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}}},
    {"minicpm5",
     {{TR_PRETOK_REGEX, "\\p{N}{1,3}"},
      {TR_PRETOK_REGEX, "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
    {"exaone-moe",
     {{TR_PRETOK_REGEX, "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}}},
    {"laguna",
     {{TR_PRETOK_REGEX, "[^\\n]+|[\\n]+"},
      {TR_PRETOK_REGEX, "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}}},
};

/* The category stand-ins of a collapsed text, and the ASCII members of each
 * category, which \p{..} must still match. */
enum { STAND_OTHER = 0xD0, STAND_N = 0xD1, STAND_L = 0xD2, STAND_P = 0xD3, STAND_M = 0xD4, STAND_S = 0xD5 };

static const struct {
    const char *prop;
    const char *cls; /* class members without brackets, PCRE syntax */
} prop_classes[] = {
    {"\\p{N}", "\\x{D1}0-9"},
    {"\\p{L}", "\\x{D2}A-Za-z"},
    {"\\p{Lu}", "\\x{D2}A-Za-z"},
    {"\\p{Ll}", "\\x{D2}A-Za-z"},
    {"\\p{Lt}", "\\x{D2}A-Za-z"},
    {"\\p{Lm}", "\\x{D2}A-Za-z"},
    {"\\p{Lo}", "\\x{D2}A-Za-z"},
    {"\\p{P}", "\\x{D3}!-#%-*,-/:;?@\\[-\\]_\\{\\}"},
    {"\\p{M}", "\\x{D4}"},
    {"\\p{S}", "\\x{D5}\\$\\+<=>\\^`\\|~"},
};

static uint32_t collapse(uint32_t cp, unsigned flags) {
    if (cp < 128) return cp;
    if (flags & TR_UC_WHITESPACE) return 0x0B;
    switch (flags & TR_UC_CATEGORIES) {
    case TR_UC_NUMBER: return STAND_N;
    case TR_UC_LETTER: return STAND_L;
    case TR_UC_PUNCT: return STAND_P;
    case TR_UC_MARK: return STAND_M;
    case TR_UC_SYMBOL: return STAND_S;
    default: return STAND_OTHER;
    }
}

/* Pattern text -> 32-bit code units, rewriting \p{..} for a collapsed text. */
static uint32_t *translate(const char *re, bool *collapsed, size_t *out_len) {
    size_t n = strlen(re);
    *collapsed = false;
    for (size_t k = 0; k < sizeof prop_classes / sizeof prop_classes[0]; k++)
        if (strstr(re, prop_classes[k].prop)) *collapsed = true;
    uint32_t *out = malloc((n * 32 + 1) * sizeof *out); /* each byte expands to at most ~30 */
    if (!out) return NULL;
    size_t o = 0;
    bool inside = false;
    for (size_t i = 0; i < n;) {
        char c = re[i];
        if (*collapsed) {
            if (c == '[' && (i == 0 || re[i - 1] != '\\')) inside = true;
            else if (c == ']' && inside && re[i - 1] != '\\') inside = false;
            else if (c == '\\' && re[i + 1] == 'p' && re[i + 2] == '{') {
                bool done = false;
                for (size_t k = 0; k < sizeof prop_classes / sizeof prop_classes[0] && !done; k++) {
                    size_t pl = strlen(prop_classes[k].prop);
                    if (strncmp(re + i, prop_classes[k].prop, pl)) continue;
                    if (!inside) out[o++] = '[';
                    for (const char *s = prop_classes[k].cls; *s; s++) out[o++] = (uint8_t)*s;
                    if (!inside) out[o++] = ']';
                    i += pl;
                    done = true;
                }
                if (done) continue;
            }
        }
        size_t off = i;
        out[o++] = tr_utf8_decode(re, n, &off);
        i = off;
    }
    *out_len = o;
    return out;
}

/* Expressions llama.cpp does not run as regular expressions but with the
 * hand-written scanners below, wherever they appear. */
static const step_def scanned[] = {
    {TR_PRETOK_GPT2, "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"},
    {TR_PRETOK_LLAMA3,
     "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {TR_PRETOK_LLAMA3,
     "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
    {TR_PRETOK_QWEN2,
     "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
};

tr_status tr_pretok_init(tr_pretok *p, const char *style, tr_error *err) {
    memset(p, 0, sizeof *p);
    const style_def *def = NULL;
    for (size_t i = 0; i < sizeof styles / sizeof styles[0]; i++)
        if (!strcmp(styles[i].name, style)) def = &styles[i];
    if (!def) return tr_err_set(err, TR_ERR_UNSUPPORTED, "pre-tokenizer style '%s' is unknown", style);
    for (int s = 0; s < TR_PRETOK_MAX_STEPS && def->steps[s].kind != TR_PRETOK_END; s++) {
        const step_def *sd = &def->steps[s];
        tr_pretok_step *st = &p->steps[p->n_steps];
        st->kind = sd->kind;
        /* llama.cpp replaces these exact expressions by its scanners */
        for (size_t k = 0; sd->kind == TR_PRETOK_REGEX && k < sizeof scanned / sizeof scanned[0]; k++)
            if (!strcmp(sd->regex, scanned[k].regex)) st->kind = scanned[k].kind;
        if (st->kind == TR_PRETOK_REGEX) {
            size_t plen;
            uint32_t *pat = translate(sd->regex, &st->collapsed, &plen);
            if (!pat) {
                tr_pretok_free(p);
                return tr_err_set(err, TR_ERR_NOMEM, "pre-tokenizer '%s': out of memory", style);
            }
            int ecode;
            PCRE2_SIZE eoff;
            st->code = pcre2_compile(pat, plen, PCRE2_DOLLAR_ENDONLY, &ecode, &eoff, NULL);
            free(pat);
            if (!st->code) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(ecode, msg, 128);
                char m8[128];
                size_t k = 0;
                for (; k < 127 && msg[k]; k++) m8[k] = msg[k] < 128 ? (char)msg[k] : '?';
                m8[k] = 0;
                tr_pretok_free(p);
                return tr_err_set(err, TR_ERR_UNSUPPORTED, "pre-tokenizer '%s': expression %d: %s", style, s, m8);
            }
        }
        p->n_steps++;
    }
    return TR_OK;
}

void tr_pretok_free(tr_pretok *p) {
    if (!p) return;
    for (int s = 0; s < p->n_steps; s++)
        if (p->steps[s].code) pcre2_code_free(p->steps[s].code);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ splitting */

/* A list of piece lengths (in code points) that grows. */
typedef struct lens {
    size_t *v;
    size_t n, cap;
} lens;

static bool lens_push(lens *l, size_t x) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) return false;
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = x;
    return true;
}

/* What a hand-written scanner sees of one piece [ini, end). */
typedef struct scan {
    const uint32_t *cp;
    const uint16_t *fl;
    size_t ini, end, prev_end;
    lens *out;
    bool oom;
} scan;

static inline uint32_t sc_cp(const scan *s, size_t pos) {
    return pos >= s->ini && pos < s->end ? s->cp[pos] : OUT_OF_RANGE;
}
static inline unsigned sc_fl(const scan *s, size_t pos) {
    return pos >= s->ini && pos < s->end ? s->fl[pos] : 0;
}
/* Close the word that ends at `end`; returns its length. */
static size_t sc_add(scan *s, size_t end) {
    size_t len = end - s->prev_end;
    if (len > 0 && !lens_push(s->out, len)) s->oom = true;
    s->prev_end = end;
    return len;
}

static inline uint32_t ascii_lower(uint32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

/* 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive: the length matched. */
static size_t contraction(const scan *s, size_t pos, bool any_case) {
    if (sc_cp(s, pos) != '\'' || pos + 1 >= s->end) return 0;
    uint32_t a = sc_cp(s, pos + 1);
    if (any_case) a = ascii_lower(a);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (pos + 2 >= s->end) return 0;
    uint32_t b = sc_cp(s, pos + 2);
    if (any_case) b = ascii_lower(b);
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

#define WLN (TR_UC_WHITESPACE | TR_UC_LETTER | TR_UC_NUMBER)

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void scan_gpt2(scan *s) {
    for (size_t pos = s->ini; pos < s->end;) {
        uint32_t c = sc_cp(s, pos);
        unsigned f = sc_fl(s, pos);
        size_t k = contraction(s, pos, false);
        if (k) {
            pos += sc_add(s, pos + k);
            continue;
        }
        unsigned f2 = c == ' ' ? sc_fl(s, pos + 1) : f;
        if (f2 & TR_UC_LETTER) {
            pos += c == ' ';
            while (f2 & TR_UC_LETTER) f2 = sc_fl(s, ++pos);
            sc_add(s, pos);
            continue;
        }
        if (f2 & TR_UC_NUMBER) {
            pos += c == ' ';
            while (f2 & TR_UC_NUMBER) f2 = sc_fl(s, ++pos);
            sc_add(s, pos);
            continue;
        }
        if (!(f2 & WLN) && f2) {
            pos += c == ' ';
            while (!(f2 & WLN) && f2) f2 = sc_fl(s, ++pos);
            sc_add(s, pos);
            continue;
        }
        size_t nws = 0;
        while (sc_fl(s, pos + nws) & TR_UC_WHITESPACE) nws++;
        if (nws > 1 && sc_cp(s, pos + nws) != OUT_OF_RANGE) { /* \s+(?!\S): leave one for the next word */
            pos += nws - 1;
            sc_add(s, pos);
            continue;
        }
        if (nws > 0) {
            pos += nws;
            sc_add(s, pos);
            continue;
        }
        sc_add(s, ++pos);
    }
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * and Qwen2's, the same with \p{N} one digit at a time (max_digits 1). */
static void scan_llama3(scan *s, size_t max_digits) {
    for (size_t pos = s->ini; pos < s->end;) {
        uint32_t c = sc_cp(s, pos);
        unsigned f = sc_fl(s, pos);
        size_t k = contraction(s, pos, true);
        if (k) {
            pos += sc_add(s, pos + k);
            continue;
        }
        if (!(c == '\r' || c == '\n' || (f & TR_UC_NUMBER))) {
            if ((f & TR_UC_LETTER) || (sc_fl(s, pos + 1) & TR_UC_LETTER)) {
                pos++;
                while (sc_fl(s, pos) & TR_UC_LETTER) pos++;
                sc_add(s, pos);
                continue;
            }
        }
        if (f & TR_UC_NUMBER) {
            size_t ini = pos;
            while (sc_fl(s, pos) & TR_UC_NUMBER) {
                if (++pos - ini >= max_digits) {
                    sc_add(s, pos);
                    ini = pos;
                }
            }
            sc_add(s, pos);
            continue;
        }
        unsigned f2 = c == ' ' ? sc_fl(s, pos + 1) : f;
        if (!(f2 & WLN) && f) { /* llama.cpp tests the first code point's flags here, not f2's */
            pos += c == ' ';
            while (!(f2 & WLN) && f2) f2 = sc_fl(s, ++pos);
            uint32_t c2 = sc_cp(s, pos);
            while (c2 == '\r' || c2 == '\n') c2 = sc_cp(s, ++pos);
            sc_add(s, pos);
            continue;
        }
        size_t nws = 0, last_rn = 0;
        while (sc_fl(s, pos + nws) & TR_UC_WHITESPACE) {
            uint32_t c2 = sc_cp(s, pos + nws);
            if (c2 == '\r' || c2 == '\n') last_rn = pos + nws + 1;
            nws++;
        }
        if (last_rn > 0) { /* \s*[\r\n]+ */
            pos = last_rn;
            sc_add(s, pos);
            continue;
        }
        if (nws > 1 && sc_cp(s, pos + nws) != OUT_OF_RANGE) {
            pos += nws - 1;
            sc_add(s, pos);
            continue;
        }
        if (nws > 0) {
            pos += nws;
            sc_add(s, pos);
            continue;
        }
        sc_add(s, ++pos);
    }
}

/* Run a compiled expression over one piece as std::regex_iterator does: the
 * matches and the stretches between them all become pieces. */
static bool regex_piece(const pcre2_code *code, pcre2_match_data *md, const uint32_t *subj, size_t len, lens *out) {
    size_t start = 0, last = 0;
    while (start <= len) {
        int rc = pcre2_match(code, subj, len, start, 0, md, NULL);
        if (rc < 0) break; /* no match (or a resource limit: treat the rest as unmatched) */
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match splits nothing; step past it */
            start = ms + 1;
            continue;
        }
        if (ms > last && !lens_push(out, ms - last)) return false;
        if (!lens_push(out, me - ms)) return false;
        last = start = me;
    }
    if (last < len && !lens_push(out, len - last)) return false;
    return true;
}

tr_status tr_pretok_split(const tr_pretok *p, const char *text, size_t len, const uint32_t gpt2_cp[256],
                          char **buf, size_t *buf_len, size_t **ends, size_t *n_words, tr_error *err) {
    tr_status st = TR_ERR_NOMEM;
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    uint16_t *fl = malloc((len + 1) * sizeof *fl);
    uint32_t *alt = NULL; /* the text as the current expression sees it */
    lens a = {0}, b = {0};
    pcre2_match_data *md = NULL;
    char *o = NULL;
    size_t *e = NULL;
    if (!cp || !fl) goto done;

    size_t n = 0;
    for (size_t off = 0; off < len;) {
        cp[n] = tr_utf8_decode(text, len, &off);
        fl[n] = (uint16_t)tr_uc_flags(cp[n]);
        n++;
    }
    if (n && !lens_push(&a, n)) goto done;

    for (int si = 0; si < p->n_steps; si++) {
        const tr_pretok_step *step = &p->steps[si];
        b.n = 0;
        if (step->kind == TR_PRETOK_REGEX) {
            if (!alt && !(alt = malloc((n + 1) * sizeof *alt))) goto done;
            for (size_t i = 0; i < n; i++)
                alt[i] = step->collapsed ? collapse(cp[i], fl[i])
                         : (cp[i] >= 128 && (fl[i] & TR_UC_WHITESPACE)) ? 0x0B : cp[i];
            if (!md && !(md = pcre2_match_data_create(4, NULL))) goto done;
        }
        size_t start = 0;
        for (size_t k = 0; k < a.n; k++) {
            size_t plen = a.v[k];
            if (step->kind == TR_PRETOK_REGEX) {
                if (!regex_piece(step->code, md, alt + start, plen, &b)) goto done;
            } else {
                scan s = {cp, fl, start, start + plen, start, &b, false};
                if (step->kind == TR_PRETOK_GPT2) scan_gpt2(&s);
                else scan_llama3(&s, step->kind == TR_PRETOK_LLAMA3 ? 3 : 1);
                if (s.oom) goto done;
            }
            start += plen;
        }
        lens t = a;
        a = b;
        b = t;
    }

    /* Words back to UTF-8, then (GPT-2) each byte to its visible character. */
    size_t cap = len * 3 * 2 + 16, olen = 0; /* U+FFFD for a byte: 3 bytes, each up to 2 when byte-encoded */
    if (!(o = malloc(cap)) || !(e = malloc((a.n + 1) * sizeof *e))) goto done;
    size_t pos = 0;
    for (size_t k = 0; k < a.n; k++) {
        for (size_t i = pos; i < pos + a.v[k]; i++) {
            char u[4];
            size_t ul = tr_utf8_encode(cp[i], u);
            for (size_t j = 0; j < ul; j++) {
                if (gpt2_cp) olen += tr_utf8_encode(gpt2_cp[(uint8_t)u[j]], o + olen);
                else o[olen++] = u[j];
            }
        }
        pos += a.v[k];
        e[k] = olen;
    }
    *buf = o;
    *buf_len = olen;
    *ends = e;
    *n_words = a.n;
    o = NULL;
    e = NULL;
    st = TR_OK;
done:
    if (st != TR_OK) tr_err_set(err, st, "pre-tokenizer: out of memory for %zu bytes of text", len);
    free(cp);
    free(fl);
    free(alt);
    free(a.v);
    free(b.v);
    free(o);
    free(e);
    if (md) pcre2_match_data_free(md);
    return st;
}
