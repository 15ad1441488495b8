"""Our GBNF against llama.cpp's own grammar engine (through llama-cpp-python),
on llama.cpp's grammars/ folder (from the llama-cpp-python sdist, fetched the
way bench/llama_server.py does):

- every grammar there compiles with us (and with llama.cpp);
- text generated under each grammar by `trinity run --grammar-file` with the
  real model is, for llama.cpp's grammar, a sentence or a prefix of one (never
  rejected), and a sentence when generation ended on its own;
- on those texts and on mutations of them (cut, characters inserted, changed,
  deleted, multi-byte ones too) both engines say the same: rejected, a prefix,
  or a whole sentence.

llama.cpp is asked a string's verdict byte by byte through its byte-fallback
tokens (<0xHH>): each must be allowed by its grammar sampler before it is
accepted, and at the end the text is a sentence when end-of-sequence is
allowed."""
import codecs
import ctypes
import glob
import math
import os
import random
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import llama_server  # noqa: E402


@pytest.fixture(scope="module")
def grammars():
    top = llama_server.source_tree()
    files = sorted(glob.glob(os.path.join(top, "grammars", "*.gbnf")))
    assert len(files) >= 8, f"expected llama.cpp's grammars in {top}/grammars"
    return {os.path.basename(f)[:-5]: open(f, "rb").read() for f in files}


@pytest.fixture(scope="module")
def ours(lib):
    lib.tr_grammar_parse.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
    lib.tr_grammar_parse.restype = ctypes.c_int
    lib.tr_grammar_match.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.tr_grammar_match.restype = ctypes.c_int
    lib.tr_grammar_free.argtypes = [ctypes.c_void_p]

    class Ours:
        def compile(self, text):
            g = ctypes.c_void_p()
            err = ctypes.create_string_buffer(512)
            st = lib.tr_grammar_parse(text, len(text), ctypes.byref(g), err)
            assert st == 0, err.value.decode()
            return g

        def match(self, g, s):
            return lib.tr_grammar_match(g, s, len(s))

        def free(self, g):
            lib.tr_grammar_free(g)
    return Ours()


class LlamaCppGrammar:
    """Verdicts of llama.cpp's grammar sampler on byte strings."""

    def __init__(self, lc, model_path):
        self.lc = lc
        p = lc.llama_model_default_params()
        p.vocab_only = True
        lc.llama_backend_init()
        self.model = lc.llama_model_load_from_file(model_path.encode(), p)
        assert self.model, "llama.cpp could not load the model's vocabulary"
        self.vocab = lc.llama_model_get_vocab(self.model)
        self.eos = lc.llama_vocab_eos(self.vocab)
        self.byte_tok = {}
        for t in range(min(4096, lc.llama_vocab_n_tokens(self.vocab))):
            m = re.fullmatch(rb"<0x([0-9A-F]{2})>", lc.llama_vocab_get_text(self.vocab, t))
            if m:
                self.byte_tok[int(m.group(1), 16)] = t
        assert len(self.byte_tok) == 256, "the model's vocabulary has no byte-fallback tokens"
        self.arr = (lc.llama_token_data * 1)()

    def compiles(self, grammar):
        s = self.lc.llama_sampler_init_grammar(self.vocab, grammar, b"root")
        if s:
            self.lc.llama_sampler_free(s)
        return bool(s)

    def _allowed(self, smpl, tok):
        self.arr[0].id, self.arr[0].logit, self.arr[0].p = tok, 1.0, 0.0
        cur = self.lc.llama_token_data_array(data=self.arr, size=1, selected=-1, sorted=False)
        self.lc.llama_sampler_apply(smpl, ctypes.byref(cur))
        return self.arr[0].logit != -math.inf

    def match(self, grammar, s):
        """2: a sentence, 1: a prefix of one, 0: neither (as tr_grammar_match)."""
        smpl = self.lc.llama_sampler_init_grammar(self.vocab, grammar, b"root")
        assert smpl
        try:
            for b in s:
                t = self.byte_tok[b]
                if not self._allowed(smpl, t):
                    return 0
                self.lc.llama_sampler_accept(smpl, t)
            return 2 if self._allowed(smpl, self.eos) else 1
        finally:
            self.lc.llama_sampler_free(smpl)


@pytest.fixture(scope="module")
def ref(llama_cpp, model_path):
    return LlamaCppGrammar(llama_cpp, model_path)


PROMPTS = {
    "arithmetic": "2 + 2 * 3 =",
    "c": "int main() {",
    "chess": "1. e4 e5 2.",
    "english": "Once upon a time",
    "japanese": "日本の首都は",
    "json": "A JSON object describing a cat:",
    "json_arr": "A JSON list of three fruits:",
    "list": "Shopping list:\n",
}


def test_every_grammar_compiles(grammars, ours, ref):
    for name, text in grammars.items():
        assert ref.compiles(text), f"llama.cpp refuses its own {name}.gbnf"
        ours.free(ours.compile(text))


def mutations(s, rng):
    out = [s[:k] for k in sorted({rng.randrange(len(s) + 1) for _ in range(4)})]
    pool = [b" ", b"\n", b"{", b"}", b"\"", b"a", b"Z", b"0", b"9", b"-", b".", b",", b":", b"[", b"]", b"(", b")",
            "é".encode(), "日".encode(), b"\x80", b"\xe6\x97", b"\\", b"\t", b"*"]
    for _ in range(12):
        k = rng.randrange(len(s) + 1)
        c = rng.choice(pool)
        op = rng.randrange(3)
        if op == 0:
            out.append(s[:k] + c + s[k:])
        elif op == 1 and k < len(s):
            out.append(s[:k] + c + s[k + 1:])
        elif k < len(s):
            out.append(s[:k] + s[k + 1:])
    return out


@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_generated_text_and_mutations_agree_with_llamacpp(name, grammars, ours, ref, trinity_bin, model_path,
                                                         tmp_path, record_property):
    assert name in grammars, f"llama.cpp's grammars/ has no {name}.gbnf"
    gfile = tmp_path / f"{name}.gbnf"
    gfile.write_bytes(grammars[name])
    g = ours.compile(grammars[name])
    rng = random.Random(name)
    compared = 0
    try:
        for seed, temp in ((1, 0), (2, 1.0)):
            p = subprocess.run([trinity_bin, "run", "-m", model_path, "-p", PROMPTS[name], "-n", "40", "--temp",
                                str(temp), "--seed", str(seed), "-t", "2", "--grammar-file", str(gfile)],
                               capture_output=True, timeout=600)
            assert p.returncode == 0, p.stderr.decode(errors="replace")
            out = p.stdout
            ended = b"generation: 40 tokens" not in p.stderr  # stopped before the limit: on end of generation
            # The text is valid UTF-8; where the token limit stopped it, its last character may be cut short
            # (a byte token of a multi-byte character: llama.cpp's grammar accepts such a prefix too).
            codecs.getincrementaldecoder("utf-8")().decode(out, final=ended)
            v = ref.match(grammars[name], out)
            assert v >= 1, f"{name}: llama.cpp rejects our output {out!r}"
            if ended:
                assert v == 2, f"{name}: generation ended but llama.cpp says the text is incomplete: {out!r}"
            for s in [out] + mutations(out, rng):
                a, b = ours.match(g, s), ref.match(grammars[name], s)
                assert a == b, f"{name}: on {s!r} we say {a}, llama.cpp says {b}"
                compared += 1
    finally:
        ours.free(g)
    record_property("compared", compared)
