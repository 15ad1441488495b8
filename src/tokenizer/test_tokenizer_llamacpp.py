"""Token ids, pieces, attributes and EOG sets against llama.cpp (through
llama-cpp-python, vocab_only=True), on a corpus of hard cases
(testdata/corpus.json + malformed UTF-8):

- SPM: the real Gemma 3 model (262144 tokens, byte fallback, user-defined
  whitespace tokens, control tokens), with default flags (BOS + special
  tokens parsed) and with --no-special;
- byte-level BPE: real vocabularies trained here with the `tokenizers`
  package, written to vocabulary-only GGUF files under each pre-tokenizer
  name (tokenizer.ggml.pre), both flag settings.

Ids come from `trinity tokenize`; pieces, attributes and EOG through ctypes."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokref  # noqa: E402

# tokenizer.ggml.pre values checked, one per llama.cpp pre-tokenizer family
# (and a few aliases that share an expression but differ in flags).
BPE_PRES = ["default", "gpt-2", "llama-bpe", "qwen2", "smollm", "deepseek-llm", "deepseek-coder", "falcon",
            "starcoder", "refact", "command-r", "stablelm2", "dbrx", "mpt", "chatglm-bpe", "poro-chat", "bloom",
            "viking", "deepseek-v3", "gpt-4o", "llama4", "tekken", "seed-coder", "grok-2", "ufakzeka", "bailingmoe",
            "minicpm5", "exaone-moe", "laguna", "hunyuan", None]


def compare_ids(trinity_bin, model, ref, texts):
    bad = []
    for special in (True, False):
        for text in texts:
            want = ref.tokenize(text, special)
            got = tokref.trinity_ids(trinity_bin, model, text, special)
            if got != want:
                bad.append(f"special={special} {text[:60]!r}\n   llama.cpp {want[:40]}\n   trinity   {got[:40]}")
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])


def compare_pieces(lib, model, ref, texts):
    """Every piece of every corpus id, both special settings, and the
    concatenation against Llama.detokenize."""
    ours = tokref.OurVocab(lib, model)
    try:
        bad = []
        for text in texts:
            ids = ref.tokenize(text, True)
            for special in (True, False):
                got = b"".join(ours.piece(t, special) for t in ids)
                want = b"".join(ref.piece(t, special) for t in ids)
                if got != want:
                    bad.append(f"pieces special={special} {text[:50]!r}: {got[:80]!r} vs {want[:80]!r}")
                # Llama.detokenize: llama_token_to_piece per token into a 32-byte
                # buffer, then drops one leading space after a BOS.
                if all(len(ref.piece(t, special)) <= 32 for t in ids):
                    det = ref.detokenize(ids, special)
                    mine = got[1:] if ids and ids[0] == ref.ids()["bos"] and got[:1] == b" " else got
                    if mine != det:
                        bad.append(f"detokenize special={special} {text[:50]!r}: {mine[:80]!r} vs {det[:80]!r}")
        assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:20])
    finally:
        ours.close()


def compare_vocab_facts(lib, model, ref):
    """Attributes (after llama.cpp's fix-ups), EOG membership, special ids."""
    ours = tokref.OurVocab(lib, model)
    try:
        n = ref.n_tokens()
        assert ours.n_tokens() == n
        assert ours.ids() == ref.ids()
        bad_attr = [t for t in range(n) if ours.attr(t) != ref.attr(t)]
        assert not bad_attr, f"attributes differ for {len(bad_attr)} tokens, e.g. {bad_attr[:10]}: " + \
            str([(ours.attr(t), ref.attr(t)) for t in bad_attr[:5]])
        bad_eog = [t for t in range(n) if ours.is_eog(t) != ref.is_eog(t)]
        assert not bad_eog, f"EOG differs for tokens {bad_eog[:10]}"
        # Every token's piece, both settings (cheap for small vocabularies;
        # for Gemma this walks all 262144 tokens once).
        bad = [t for t in range(n) for s in (True, False) if ours.piece(t, s) != ref.piece(t, s)]
        assert not bad, f"pieces differ for {len(bad)} tokens, e.g. {bad[:10]}"
    finally:
        ours.close()


# ------------------------------------------------------------------ Gemma (SPM)

@pytest.fixture(scope="module")
def gemma_ref(model_path):
    return tokref.RefVocab(model_path)


def test_gemma_ids_match_llamacpp(trinity_bin, model_path, gemma_ref):
    compare_ids(trinity_bin, model_path, gemma_ref, tokref.corpus())


def test_gemma_long_text_matches_llamacpp(trinity_bin, model_path, gemma_ref):
    """All of the corpus as one text, and a license file: long inputs with
    every kind of case mixed."""
    texts = [b"\n".join(tokref.corpus()), open("/usr/share/common-licenses/GPL-3", "rb").read()]
    compare_ids(trinity_bin, model_path, gemma_ref, texts)


def test_gemma_pieces_match_llamacpp(lib, model_path, gemma_ref):
    compare_pieces(lib, model_path, gemma_ref, tokref.corpus())


def test_gemma_vocab_facts_match_llamacpp(lib, model_path, gemma_ref):
    compare_vocab_facts(lib, model_path, gemma_ref)


# ------------------------------------------------------------- byte-level BPE

@pytest.fixture(scope="module")
def bpe_vocab():
    return tokref.train_bpe()


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("bpe")


@pytest.mark.parametrize("pre", BPE_PRES, ids=lambda p: p or "no-pre-key")
def test_bpe_matches_llamacpp(trinity_bin, lib, bpe_vocab, bpe_dir, pre):
    tokens, merges = bpe_vocab
    path = str(bpe_dir / f"bpe-{pre or 'none'}.gguf")
    tokref.write_bpe_gguf(path, tokens, merges, pre)
    ref = tokref.RefVocab(path)
    texts = tokref.corpus() + [b"\n".join(tokref.corpus())]
    compare_ids(trinity_bin, path, ref, texts)
    compare_pieces(lib, path, ref, texts)
    compare_vocab_facts(lib, path, ref)


def test_bpe_add_eos_and_no_bos(trinity_bin, bpe_vocab, bpe_dir):
    """add_bos/add_eos from the file override the pre-tokenizer's defaults."""
    tokens, merges = bpe_vocab
    path = str(bpe_dir / "bpe-eos.gguf")
    tokref.write_bpe_gguf(path, tokens, merges, "llama-bpe", bos=1, eos=2,
                          extra={"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": True})
    ref = tokref.RefVocab(path)
    compare_ids(trinity_bin, path, ref, [b"", b"Hello world", b"<|im_start|>x<|im_end|>"])


# ------------------------------------- SPM variants on Gemma's vocabulary

def write_spm_vocab_only(lib, src, dst, add_space_prefix, add_eos):
    """Gemma's metadata copied into a vocabulary-only GGUF (no tensors, as
    llama.cpp's vocab files are) with Llama-2-style flags changed:
    add_space_prefix (Llama 2, TinyLlama) and add_eos. Copied with our
    writer (the gguf package's reader needs minutes for 262144 tokens);
    llama.cpp reads the result on its own."""
    import ctypes
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gguf"))
    import gguf_ctypes as gc
    P = ctypes.c_void_p
    lib.tr_gguf_writer_new.restype = P
    lib.tr_gguf_writer_free.argtypes = [P]
    lib.tr_gguf_writer_copy_kv.argtypes = [P, P, ctypes.POINTER(tokref.TrError)]
    lib.tr_gguf_writer_set.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(gc.Value), ctypes.POINTER(tokref.TrError)]
    lib.tr_gguf_writer_write.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(tokref.TrError)]
    err = tokref.TrError()
    g = P()
    assert lib.tr_gguf_open(src.encode(), ctypes.byref(g), ctypes.byref(err)) == 0, err.msg
    w = lib.tr_gguf_writer_new()
    try:
        assert lib.tr_gguf_writer_copy_kv(w, g, ctypes.byref(err)) == 0, err.msg
        for key, val in (("tokenizer.ggml.add_space_prefix", add_space_prefix), ("tokenizer.ggml.add_eos_token", add_eos)):
            v = gc.Value()
            v.type = gc.BOOL
            v.v.b = val
            assert lib.tr_gguf_writer_set(w, key.encode(), ctypes.byref(v), ctypes.byref(err)) == 0, err.msg
        assert lib.tr_gguf_writer_write(w, dst.encode(), ctypes.byref(err)) == 0, err.msg
    finally:
        lib.tr_gguf_writer_free(w)
        lib.tr_gguf_close(g)


def test_spm_space_prefix_and_eos_vocab_only(trinity_bin, lib, model_path, tmp_path):
    path = str(tmp_path / "spm-prefix.gguf")
    write_spm_vocab_only(lib, model_path, path, add_space_prefix=True, add_eos=True)
    ref = tokref.RefVocab(path)
    texts = tokref.corpus()
    compare_ids(trinity_bin, path, ref, texts)
    compare_pieces(lib, path, ref, texts[:40])
