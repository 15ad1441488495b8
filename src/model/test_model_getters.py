"""What a loaded model says about itself (include/trinity.h's tr_model_* and
tr_vocab_* getters, through ctypes) against the gguf package's reading of the
same file: the real Gemma 3 270M, generated random models of each
architecture, and a copy without the optional keys (where the getters fall
back to documented defaults)."""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

import gguf
from gguf import GGUFReader, GGUFWriter

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import engine_ctypes as E  # noqa: E402


@pytest.fixture(scope="module")
def lib():
    lib = E.load_lib(os.environ.get("TRINITY_LIB"))
    vp = ctypes.c_void_p
    for fn, res in (("tr_model_arch", ctypes.c_char_p), ("tr_model_name", ctypes.c_char_p),
                    ("tr_model_n_vocab", ctypes.c_int32), ("tr_model_n_ctx_train", ctypes.c_int32),
                    ("tr_model_n_params", ctypes.c_uint64), ("tr_model_weight_bytes", ctypes.c_uint64),
                    ("tr_model_vocab", vp)):
        getattr(lib, fn).argtypes = [vp]
        getattr(lib, fn).restype = res
    for fn, res in (("tr_vocab_n_tokens", ctypes.c_int32), ("tr_vocab_bos", ctypes.c_int32),
                    ("tr_vocab_eos", ctypes.c_int32), ("tr_vocab_add_bos", ctypes.c_bool)):
        getattr(lib, fn).argtypes = [vp]
        getattr(lib, fn).restype = res
    return lib


def ours(lib, path):
    m = E.Model(lib, path)
    try:
        v = lib.tr_model_vocab(m.ptr)
        return {
            "arch": lib.tr_model_arch(m.ptr).decode(),
            "name": lib.tr_model_name(m.ptr).decode(),
            "n_vocab": lib.tr_model_n_vocab(m.ptr),
            "n_ctx_train": lib.tr_model_n_ctx_train(m.ptr),
            "n_params": lib.tr_model_n_params(m.ptr),
            "weight_bytes": lib.tr_model_weight_bytes(m.ptr),
            "n_tokens": lib.tr_vocab_n_tokens(v),
            "bos": lib.tr_vocab_bos(v),
            "eos": lib.tr_vocab_eos(v),
        }
    finally:
        m.close()


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def theirs(path):
    """The same facts from the gguf package, by trinity.h's definitions:
    name = general.name or the file's base name; n_ctx_train =
    <arch>.context_length or 2048; n_vocab = token_embd.weight's rows;
    n_params and weight_bytes summed over every tensor of the file."""
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    return {
        "arch": arch,
        "name": field(r, "general.name") or os.path.basename(path),
        "n_vocab": int(emb.shape[1]),
        "n_ctx_train": int(field(r, f"{arch}.context_length") or 2048),
        "n_params": sum(int(np.prod(t.shape.astype(np.int64))) for t in r.tensors),
        "weight_bytes": sum(int(t.n_bytes) for t in r.tensors),
        "n_tokens": len(field(r, "tokenizer.ggml.tokens")),
        "bos": -1 if field(r, "tokenizer.ggml.bos_token_id") is None else int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos": -1 if field(r, "tokenizer.ggml.eos_token_id") is None else int(field(r, "tokenizer.ggml.eos_token_id")),
    }


def gen(tmp_path, arch, wtype):
    path = str(tmp_path / f"{arch}-{wtype}.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", arch, "--type", wtype,
                    "-o", path], check=True, capture_output=True)
    return path


def test_real_model_getters_match_gguf(lib, model_path):
    want = theirs(model_path)
    assert ours(lib, model_path) == want
    # and what is known of this file independently of both readers
    assert want["arch"] == "gemma3" and want["n_vocab"] == 262144
    assert 250e6 < want["n_params"] < 300e6


@pytest.mark.parametrize("arch,wtype", [("llama", "F32"), ("qwen2", "Q8_0"), ("qwen3", "F16"), ("gemma3", "Q4_K")])
def test_random_model_getters_match_gguf(lib, tmp_path, arch, wtype):
    path = gen(tmp_path, arch, wtype)
    assert ours(lib, path) == theirs(path)


def test_defaults_without_name_and_context_length(lib, tmp_path):
    """Without general.name the name is the file's base name; without
    <arch>.context_length the training context is 2048."""
    src = gen(tmp_path, "llama", "F32")
    r = GGUFReader(src)
    dst = str(tmp_path / "no-name.gguf")
    w = GGUFWriter(dst, "llama")
    dropped = {"general.name", "llama.context_length"}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in dropped:
            continue
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, f.contents(), f.types[0], sub_type=f.types[1])
        else:
            w.add_key_value(k, f.contents(), f.types[0])
    for t in r.tensors:
        w.add_tensor(t.name, np.asarray(t.data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got, want = ours(lib, dst), theirs(dst)
    assert got == want
    assert got["name"] == "no-name.gguf" and got["n_ctx_train"] == 2048
    assert field(GGUFReader(src), "general.name") and field(GGUFReader(src), "llama.context_length") == 4096
