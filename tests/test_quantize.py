"""`trinity quantize` against llama.cpp's own quantizer (llama_model_quantize,
what llama-quantize calls, through llama-cpp-python): for the same source
file, mix and options, the output file must be byte for byte the one
llama.cpp writes (metadata, tensor order, each tensor's type and bytes).
Sources: the real Gemma 3 270M (Q4_K_M, so --allow-requantize, as the issue
asks), and random-weight F32 files of the tiny llama and gemma3 shapes
(rows of 256 and 128: the mixes' per-category rules and their fallbacks for
rows that do not fit a 256-block). Bad input gets a clear error and leaves no
output file."""
import ctypes
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from conftest import run_trinity  # noqa: E402

# llama.cpp's llama_ftype numbers (include/llama.h) and ggml type numbers, written out here independently.
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
          "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
          "BF16": 32, "TQ1_0": 36, "TQ2_0": 37}
GGML = {"Q4_0": 2, "Q8_0": 8, "Q6_K": 14, "F16": 1}


def llama_quantize(llama_cpp, src, dst, mix, **opt):
    keep = []  # ctypes buffers that must outlive the call
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = FTYPES[mix]
    p.nthread = 2
    p.allow_requantize = opt.get("allow_requantize", False)
    p.pure = opt.get("pure", False)
    p.quantize_output_tensor = not opt.get("leave_output", False)
    if "output_type" in opt:
        p.output_tensor_type = GGML[opt["output_type"]]
    if "token_embd_type" in opt:
        p.token_embedding_type = GGML[opt["token_embd_type"]]
    if "imatrix" in opt:  # {name: float32 array}, and the metadata llama-quantize (the tool) adds
        entries, meta = opt["imatrix"]
        arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, w) in enumerate(entries.items()):
            buf = (ctypes.c_float * len(w))(*w.tolist())
            keep.append(buf)
            arr[i].name, arr[i].data, arr[i].size = name.encode(), ctypes.cast(buf, ctypes.POINTER(ctypes.c_float)), len(w)
        p.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
        kvo = (llama_cpp.llama_model_kv_override * (len(meta) + 1))()
        for i, (k, v) in enumerate(meta):
            kvo[i].key = k.encode()
            if isinstance(v, str):
                kvo[i].tag, kvo[i].value.val_str = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR, v.encode()
            else:
                kvo[i].tag, kvo[i].value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, v
        kvo[len(meta)].key = b""
        p.kv_overrides = ctypes.cast(kvo, ctypes.POINTER(llama_cpp.llama_model_kv_override))
        keep += [arr, kvo]
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0, (src, mix, opt)


def trinity_quantize(src, dst, mix, *flags, threads=2):
    p = run_trinity("quantize", *flags, src, dst, mix, threads, timeout=600)
    assert p.returncode == 0, p.stderr
    return p


def first_difference(a, b):
    """Where two files part (None: equal), named by what the gguf package reads there."""
    x, y = open(a, "rb").read(), open(b, "rb").read()
    if x == y:
        return None
    import gguf
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    for ta, tb in zip(ra.tensors, rb.tensors):
        if ta.name != tb.name or ta.tensor_type != tb.tensor_type or ta.data.tobytes() != tb.data.tobytes():
            return f"tensor {ta.name} {ta.tensor_type.name} vs {tb.name} {tb.tensor_type.name}"
    return f"sizes {len(x)} vs {len(y)}, metadata or layout differ"


def check_same(llama_cpp, src, tmp_path, mix, flags=(), threads=2, **opt):
    ours, theirs = str(tmp_path / f"trinity-{mix}.gguf"), str(tmp_path / f"llama-{mix}.gguf")
    trinity_quantize(src, ours, mix, *flags, threads=threads)
    llama_quantize(llama_cpp, src, theirs, mix, **opt)
    assert first_difference(ours, theirs) is None, (mix, flags, first_difference(ours, theirs))
    os.unlink(theirs)
    return ours


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("quantize-src")
    out = {}
    for arch in ("llama", "gemma3"):
        path = str(d / f"{arch}-f32.gguf")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", arch, "--type",
                        "F32", "--seed", "3", "-o", path], check=True, capture_output=True)
        out[arch] = path
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_every_mix_from_f32_is_llama_cpps_file(llama_cpp, random_models, tmp_path, arch):
    for mix in FTYPES:
        check_same(llama_cpp, random_models[arch], tmp_path, mix)


def test_options_are_llama_cpps(llama_cpp, random_models, tmp_path):
    src = random_models["llama"]
    check_same(llama_cpp, src, tmp_path, "Q4_K_M", ["--pure"], pure=True)
    check_same(llama_cpp, src, tmp_path, "Q4_K_M", ["--leave-output-tensor"], leave_output=True)
    check_same(llama_cpp, src, tmp_path, "Q3_K_M", ["--output-tensor-type", "Q8_0", "--token-embedding-type", "Q4_0"],
               output_type="Q8_0", token_embd_type="Q4_0")
    # the row split across threads does not change a byte
    check_same(llama_cpp, src, tmp_path, "Q5_K_M", threads=1)
    check_same(llama_cpp, src, tmp_path, "Q5_K_M", threads=3)


def write_imatrix(path, model, seed):
    """An importance matrix in llama.cpp's imatrix GGUF layout (tools/imatrix: <weight>.in_sum2 [columns x 1],
    <weight>.counts [1 x 1], F32; imatrix.datasets, chunk_count, chunk_size), random sums for every matmul weight
    of `model`, written with the gguf package; returns what llama-quantize derives from it (sums / count)."""
    import gguf
    import numpy as np
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch="")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["calibration.txt"])
    w.add_uint32("imatrix.chunk_count", 7)
    w.add_uint32("imatrix.chunk_size", 512)
    derived = {}
    for t in gguf.GGUFReader(model).tensors:
        if len(t.shape) < 2 or t.name in ("token_embd.weight",) or "norm" in t.name:
            continue
        cols = int(t.shape[0])
        count = float(rng.integers(1, 4000))
        sums = (rng.gamma(0.5, 2.0, cols) * count).astype(np.float32)
        w.add_tensor(t.name + ".in_sum2", sums.reshape(1, cols))
        w.add_tensor(t.name + ".counts", np.array([[count]], dtype=np.float32))
        derived[t.name] = (sums / np.float32(round(count))).astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return derived


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_imatrix_quantization_is_llama_cpps_file(llama_cpp, random_models, tmp_path, arch):
    """With an importance matrix, every mix whose formats have weighted quantizers (and the rule that moves the
    first ffn_down layers of Q4_0/Q5_0 files to Q4_1/Q5_1), byte for byte llama.cpp's file, the metadata
    llama-quantize records of the imatrix included."""
    src = random_models[arch]
    im = str(tmp_path / "imatrix.gguf")
    derived = write_imatrix(im, src, seed=11)
    meta = [("quantize.imatrix.file", im), ("quantize.imatrix.dataset", "calibration.txt"),
            ("quantize.imatrix.entries_count", len(derived)), ("quantize.imatrix.chunks_count", 7)]
    for mix in ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_S", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        out = check_same(llama_cpp, src, tmp_path, mix, ["--imatrix", im], imatrix=(derived, meta))
        if mix == "Q4_K_M":  # the importance changed the weights' bytes (the comparison has teeth)
            plain = str(tmp_path / "plain.gguf")
            trinity_quantize(src, plain, mix)
            import gguf
            def q(path):
                return next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.attn_q.weight")
            a, b = q(out), q(plain)
            assert a.tensor_type == b.tensor_type and a.data.tobytes() != b.data.tobytes()


def test_bad_imatrix_is_refused_by_name(random_models, tmp_path):
    out = tmp_path / "out.gguf"
    not_gguf = tmp_path / "legacy.dat"
    not_gguf.write_bytes(b"\x03\x00\x00\x00legacy imatrix bytes")
    p = run_trinity("quantize", "--imatrix", not_gguf, random_models["llama"], out, "Q4_K_M")
    assert p.returncode != 0 and "legacy.dat" in p.stderr and ".dat format" in p.stderr, p.stderr
    p = run_trinity("quantize", "--imatrix", random_models["llama"], random_models["llama"], out, "Q4_K_M")
    assert p.returncode != 0 and "imatrix metadata" in p.stderr, p.stderr
    assert not out.exists()


@pytest.mark.parametrize("mix", ["Q4_K_M", "Q8_0", "Q3_K_M", "TQ2_0"])
def test_requantized_gemma_is_llama_cpps_file(llama_cpp, model_path, tmp_path, mix):
    out = check_same(llama_cpp, model_path, tmp_path, mix, ["--allow-requantize"], allow_requantize=True)
    if mix == "Q8_0":  # and Trinity runs what it wrote
        p = run_trinity("run", "-m", out, "-p", "The capital of France is", "-n", 4, "--temp", 0)
        assert p.returncode == 0 and p.stdout.strip(), p.stderr


def test_bad_input_is_refused_by_name(model_path, random_models, tmp_path):
    out = tmp_path / "out.gguf"
    cases = [
        ([model_path, out, "Q8_0"], "--allow-requantize"),      # quantized source without the flag
        ([random_models["llama"], out, "Q9_9"], "Q4_K_M"),      # unknown mix: the known ones listed
        ([tmp_path / "missing.gguf", out, "Q8_0"], "missing.gguf"),
        ([random_models["llama"], tmp_path / "no-dir" / "o.gguf", "Q8_0"], "no-dir"),
        ([random_models["llama"], random_models["llama"], "Q8_0"], "overwrite the input"),
        ([random_models["llama"], out, "Q8_0", "0"], "THREADS"),
        (["--output-tensor-type", "Q7_X", random_models["llama"], out, "Q8_0"], "Q7_X"),
        ([random_models["llama"], out], "expected IN.gguf OUT.gguf TYPE"),
    ]
    trunc = tmp_path / "truncated.gguf"
    data = open(random_models["llama"], "rb").read()
    trunc.write_bytes(data[: len(data) // 2])
    cases.append(([trunc, out, "Q8_0"], "truncated.gguf"))
    for args, needle in cases:
        p = run_trinity("quantize", *args)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
        assert not out.exists(), args  # nothing half-written left behind


def test_imatrix_sums_the_inputs_llama_imatrix_does(llama_cpp, random_models, tmp_path):
    """`trinity imatrix` on the tiny llama: chunks of -c tokens (the first BOS), every block weight's input columns
    squared and summed. Reference: layer 0's attention input computed here in numpy from the file's tensors
    (embedding rows of llama.cpp's tokens, RMS norm, attn_norm) - the same sums for attn_q, attn_k and attn_v;
    counts = the tokens; output.weight only with --process-output; the file then quantizes byte for byte like
    llama.cpp does with the importance llama-quantize derives from it."""
    import gguf
    import numpy as np
    src = random_models["llama"]
    text = tmp_path / "calib.txt"
    text.write_text(open("/usr/share/common-licenses/GPL-3").read()[:20000])
    out = tmp_path / "im.gguf"
    c, chunks = 64, 3
    p = run_trinity("imatrix", "-m", src, "-f", text, "-o", out, "-c", c, "--chunks", chunks, "-t", 2)
    assert p.returncode == 0, p.stderr
    r = gguf.GGUFReader(str(out))
    assert r.fields["general.type"].contents() == "imatrix"
    assert r.fields["imatrix.chunk_count"].contents() == chunks and r.fields["imatrix.chunk_size"].contents() == c
    got = {t.name: np.array(t.data, dtype=np.float64).reshape(-1) for t in r.tensors}
    assert "output.weight.in_sum2" not in got and "blk.1.ffn_down.weight.in_sum2" in got

    m = gguf.GGUFReader(src)
    T = {t.name: np.array(t.data, dtype=np.float64) for t in m.tensors}
    eps = float(m.fields["llama.attention.layer_norm_rms_epsilon"].contents())
    llm = llama_cpp.Llama(model_path=src, vocab_only=True, verbose=False)
    toks = llm.tokenize(text.read_bytes(), add_bos=True, special=False)
    rows = []
    for k in range(chunks):
        chunk = list(toks[k * c:(k + 1) * c])
        chunk[0] = llm.token_bos()
        rows += chunk
    x = T["token_embd.weight"].reshape(-1, T["blk.0.attn_norm.weight"].size)[rows]
    x = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + eps) * T["blk.0.attn_norm.weight"]
    want = (x * x).sum(axis=0)
    for w in ("attn_q", "attn_k", "attn_v"):
        np.testing.assert_allclose(got[f"blk.0.{w}.weight.in_sum2"], want, rtol=2e-4)
        assert got[f"blk.0.{w}.weight.counts"][0] == c * chunks

    p = run_trinity("imatrix", "-m", src, "-f", text, "-o", tmp_path / "im-out.gguf", "-c", c, "--chunks", 1,
                    "--process-output")
    assert p.returncode == 0 and "output.weight.in_sum2" in [t.name for t in gguf.GGUFReader(
        str(tmp_path / "im-out.gguf")).tensors], p.stderr

    derived = {n[:-len(".in_sum2")]: (v / np.float32(round(float(got[n[:-len(".in_sum2")] + ".counts"][0])))
                                      ).astype(np.float32) for n, v in got.items() if n.endswith(".in_sum2")}
    meta = [("quantize.imatrix.file", str(out)), ("quantize.imatrix.dataset", str(text)),
            ("quantize.imatrix.entries_count", len(derived)), ("quantize.imatrix.chunks_count", chunks)]
    check_same(llama_cpp, src, tmp_path, "Q4_K_M", ["--imatrix", str(out)], imatrix=(derived, meta))

    for args, needle in ((["-m", src], "-f TEXT"), (["-m", src, "-f", tmp_path / "none.txt"], "none.txt"),
                         (["-m", src, "-f", text, "-c", 100000], "fewer than one chunk"),
                         (["-m", src, "-f", text, "-c", 8], "-c wants")):
        p = run_trinity("imatrix", *args, "-o", tmp_path / "x.gguf")
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)


def test_imatrix_of_a_mixture_of_experts(llama_cpp, tmp_path):
    """`trinity imatrix` on a Qwen3-MoE file: the experts' 3-D matrices get a row of sums and a count per expert
    (in_sum2 [columns x experts], counts [1 x experts]), as llama-imatrix writes them for MUL_MAT_ID. Checked
    here: the router's own input (ffn_gate_inp, a dense product over every token) against the experts' - each
    token's row reaches top-k experts, so the gate and up sums over all experts are k times the router's sums,
    and the counts per expert add up to k per token, equal for gate, up and down; an expert's down sums are zero
    exactly when nobody chose it. Then the file quantizes byte for byte like llama.cpp with the per-expert
    importance llama-quantize derives from it. (Against llama-imatrix itself, built from the same source:
    `python3 bench/imatrix_check.py`, docs/BENCHMARKS.md.)"""
    import gguf
    import numpy as np
    src = str(tmp_path / "moe.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "qwen3moe", "--type",
                    "F32", "-o", src], check=True, capture_output=True)
    text = tmp_path / "calib.txt"
    text.write_text(open("/usr/share/common-licenses/GPL-3").read()[:20000])
    out = tmp_path / "im.gguf"
    c, chunks, k, n_exp = 64, 3, 2, 8
    p = run_trinity("imatrix", "-m", src, "-f", text, "-o", out, "-c", c, "--chunks", chunks, "-t", 2)
    assert p.returncode == 0, p.stderr
    r = gguf.GGUFReader(str(out))
    got = {t.name: np.array(t.data, dtype=np.float64) for t in r.tensors}
    shapes = {t.name: [int(x) for x in t.shape] for t in r.tensors}
    n_tok = c * chunks
    for layer in (0, 1):
        b = f"blk.{layer}."
        router = got[b + "ffn_gate_inp.weight.in_sum2"].reshape(-1)
        assert got[b + "ffn_gate_inp.weight.counts"].reshape(-1)[0] == n_tok
        cols = router.size
        for w in ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"):
            s = got[b + w + ".weight.in_sum2"].reshape(n_exp, -1)
            cnt = got[b + w + ".weight.counts"].reshape(-1)
            assert shapes[b + w + ".weight.counts"][:2] == [1, n_exp], shapes[b + w + ".weight.counts"]
            assert cnt.sum() == k * n_tok and np.array_equal(cnt, got[b + "ffn_gate_exps.weight.counts"].reshape(-1))
            assert np.array_equal(s.any(axis=1), cnt > 0), (w, cnt)
            if w != "ffn_down_exps":
                assert s.shape[1] == cols
                np.testing.assert_allclose(s.sum(axis=0), k * router, rtol=1e-4)
    derived = {}
    for n, v in got.items():
        if n.endswith(".in_sum2"):
            base = n[:-len(".in_sum2")]
            cnt = got[base + ".counts"].reshape(-1)
            v = v.reshape(cnt.size, -1)
            derived[base] = np.concatenate([v[e] / np.float32(round(float(cnt[e]))) if cnt[e] > 0 else
                                            np.ones(v.shape[1]) for e in range(cnt.size)]).astype(np.float32)
    meta = [("quantize.imatrix.file", str(out)), ("quantize.imatrix.dataset", str(text)),
            ("quantize.imatrix.entries_count", len(derived)), ("quantize.imatrix.chunks_count", chunks)]
    check_same(llama_cpp, src, tmp_path, "Q4_K_M", ["--imatrix", str(out)], imatrix=(derived, meta))
