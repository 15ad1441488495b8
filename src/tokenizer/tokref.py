"""Shared helpers for the tokenizer reference tests: our tokenizer through the
CLI and through ctypes, llama.cpp's through llama-cpp-python, and byte-level
BPE vocabularies trained with the `tokenizers` package and written to GGUF
with the gguf package."""
import ctypes
import glob
import json
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS_PATH = os.path.join(HERE, "testdata", "corpus.json")

# Malformed UTF-8 the tokenizers must survive, compared with llama.cpp too.
# (No lead bytes F5..F7: llama.cpp's BPE path throws on the code points they
# decode to, so there is no reference behaviour to compare with.)
INVALID_UTF8 = [b"\xff", b"abc\xe3\x81", b"\xc3(", b"\x80\x80abc", b"\xe2\x82", b"ok\xc0\xafok",
                b"\xed\xa0\x80 surrogate", b"\xf0\x9f\x98 cut emoji", b"x\xfe\xfdy"]


def corpus():
    with open(CORPUS_PATH, encoding="utf-8") as f:
        return [s.encode("utf-8") for s in json.load(f)] + INVALID_UTF8


def trinity_ids(bin_path, model, text, special):
    """`trinity tokenize` on text (bytes), through a file so any bytes pass."""
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(text)
        name = f.name
    try:
        args = [bin_path, "tokenize", "-m", model, "-f", name]
        if not special:
            args.append("--no-special")
        p = subprocess.run(args, capture_output=True, timeout=120)
        assert p.returncode == 0, f"trinity tokenize failed on {text!r}: {p.stderr.decode(errors='replace')}"
        out = p.stdout.decode().strip()
        return [int(x) for x in out.split()] if out else []
    finally:
        os.unlink(name)


class TrError(ctypes.Structure):
    _fields_ = [("msg", ctypes.c_char * 512)]


class OurVocab:
    """tr_gguf_open + tr_vocab_load through ctypes, for pieces and attributes."""

    def __init__(self, lib, path):
        P = ctypes.c_void_p
        self.lib = lib
        lib.tr_gguf_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(P), ctypes.POINTER(TrError)]
        lib.tr_gguf_open.restype = ctypes.c_int
        lib.tr_gguf_close.argtypes = [P]
        lib.tr_vocab_load.argtypes = [P, ctypes.POINTER(P), ctypes.POINTER(TrError)]
        lib.tr_vocab_load.restype = ctypes.c_int
        lib.tr_vocab_free.argtypes = [P]
        lib.tr_token_to_piece.argtypes = [P, ctypes.c_int32, ctypes.c_bool, ctypes.c_char_p, ctypes.c_size_t]
        lib.tr_token_to_piece.restype = ctypes.c_size_t
        for fn in ("tr_vocab_token_attr",):
            getattr(lib, fn).argtypes = [P, ctypes.c_int32]
            getattr(lib, fn).restype = ctypes.c_uint32
        lib.tr_vocab_is_eog.argtypes = [P, ctypes.c_int32]
        lib.tr_vocab_is_eog.restype = ctypes.c_bool
        for fn in ("tr_vocab_n_tokens", "tr_vocab_bos", "tr_vocab_eos", "tr_vocab_eot"):
            getattr(lib, fn).argtypes = [P]
            getattr(lib, fn).restype = ctypes.c_int32
        err = TrError()
        self.g = P()
        assert lib.tr_gguf_open(path.encode(), ctypes.byref(self.g), ctypes.byref(err)) == 0, err.msg
        self.v = P()
        rc = lib.tr_vocab_load(self.g, ctypes.byref(self.v), ctypes.byref(err))
        assert rc == 0, err.msg
        self.buf = ctypes.create_string_buffer(4096)

    def piece(self, tok, special):
        n = self.lib.tr_token_to_piece(self.v, tok, special, self.buf, len(self.buf))
        assert n <= len(self.buf)
        return self.buf.raw[:n]

    def attr(self, tok):
        return self.lib.tr_vocab_token_attr(self.v, tok)

    def is_eog(self, tok):
        return self.lib.tr_vocab_is_eog(self.v, tok)

    def n_tokens(self):
        return self.lib.tr_vocab_n_tokens(self.v)

    def ids(self):
        return {"bos": self.lib.tr_vocab_bos(self.v), "eos": self.lib.tr_vocab_eos(self.v),
                "eot": self.lib.tr_vocab_eot(self.v)}

    def close(self):
        self.lib.tr_vocab_free(self.v)
        self.lib.tr_gguf_close(self.g)


class RefVocab:
    """llama.cpp's vocabulary through llama-cpp-python (vocab_only)."""

    def __init__(self, path):
        import llama_cpp
        self.lc = llama_cpp
        self.llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.vocab = self.llm._model.vocab
        self.buf = ctypes.create_string_buffer(4096)

    def tokenize(self, text, special):
        return self.llm.tokenize(text, add_bos=special, special=special)

    def piece(self, tok, special):
        n = self.lc.llama_token_to_piece(self.vocab, tok, self.buf, len(self.buf), 0, special)
        assert 0 <= n <= len(self.buf)
        return self.buf.raw[:n]

    def detokenize(self, ids, special):
        return self.llm.detokenize(ids, special=special)

    def attr(self, tok):
        return int(self.lc.llama_vocab_get_attr(self.vocab, tok))

    def is_eog(self, tok):
        return bool(self.lc.llama_vocab_is_eog(self.vocab, tok))

    def n_tokens(self):
        return self.lc.llama_vocab_n_tokens(self.vocab)

    def ids(self):
        return {"bos": self.lc.llama_vocab_bos(self.vocab), "eos": self.lc.llama_vocab_eos(self.vocab),
                "eot": self.lc.llama_vocab_eot(self.vocab)}


# ------------------------------------------------------------ BPE vocabularies

# Added tokens of the trained vocabularies and their token_type
# (3 = control, 4 = user-defined). <|fim_suffix|> is written user-defined on
# purpose: llama.cpp turns FIM-looking tokens into control tokens.
BPE_SPECIALS = [("<|endoftext|>", 3), ("<|im_start|>", 3), ("<|im_end|>", 3), ("<|fim_prefix|>", 3),
                ("<|fim_suffix|>", 4), ("<|fim_middle|>", 3), ("[USERDEF]", 4)]


def training_texts():
    texts = []
    for f in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(f):
            with open(f, encoding="utf-8", errors="replace") as fh:
                texts.append(fh.read())
    with open(CORPUS_PATH, encoding="utf-8") as fh:
        texts += json.load(fh) * 20  # so CJK, Cyrillic, emoji, ... get merges too
    return texts


def train_bpe(vocab_size=4000):
    """A real byte-level BPE vocabulary: (tokens by id, merges as "a b")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[t for t, _ in BPE_SPECIALS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(training_texts(), trainer)
    model = json.loads(tok.to_str())["model"]
    tokens = [None] * len(model["vocab"])
    for t, i in model["vocab"].items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in model["merges"]]
    return tokens, merges


def write_bpe_gguf(path, tokens, merges, pre, bos=0, eos=0, extra=None):
    """A vocabulary-only GGUF, as llama.cpp's vocab files are: llama.cpp needs
    general.architecture and the tokenizer keys, no hyperparameters."""
    import gguf
    types = {t: ty for t, ty in BPE_SPECIALS}
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    if pre is not None:
        w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types([types.get(t, 1) for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    for k, v in (extra or {}).items():
        w.add_bool(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
