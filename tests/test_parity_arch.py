"""The architectures added after the first four (issue #14): gpt2, phi3,
gemma2, qwen3moe, bitnet, and llama files that carry Mistral's sliding window
or experts, each checked against llama.cpp (live, through llama-cpp-python)
on random-weight files that scripts/gen_model.py writes at F32, F16, Q8_0
and Q4_K (bitnet also TQ2_0 and TQ1_0).

What each variant exercises (docs/ARCHITECTURES.md):
  gpt2    learned absolute positions, LayerNorm with bias, GELU MLP with
          biases, fused attn_qkv with its bias, attn_output bias;
  phi3    fused attn_qkv and fused gate/up (ffn_up of 2*n_ff rows), NeoX RoPE
          over 48 of 64 dimensions, LongRoPE: the long factors (the 256-token
          context is beyond rope.scaling.original_context_length = 128) and
          rope.scaling.attn_factor; a sliding_window key that llama.cpp
          disables for Phi-3 (so must we);
  gemma2  attention-score soft-capping at 5 (so that random weights reach
          it) and final-logit soft-capping, local/global layers alternating with a
          window of 16 under a 72-token prompt, post-norms, scaled embeddings,
          final cap 30 (llama.cpp's default) reached by logits of ~13,
          GQA with head_dim * n_head != n_embd;
  mistral llama with llama.attention.sliding_window = 16: llama.cpp does not
          apply it to llama files, so attention stays global here too;
  qwen3moe Qwen3 attention and a mixture of 8 SwiGLU experts of 256, top 2
          by the router's softmax, weights renormalised (3-D expert tensors);
  mixtral llama with llama.expert_count = 8 (top 2, renormalised);
  olmoe   NeoX RoPE, QK-norm over all heads at once (weights of n_head*head
          and n_head_kv*head), 8 experts of n_ff, top 2, weights not
          renormalised;
  bitnet  BitNet b1.58: ternary matrices ({-1, 0, 1} x a scale: folded into
          layer 0's values, separate {name}.scale tensors in layer 1),
          attn_sub_norm / ffn_sub_norm, NeoX RoPE, SwiGLU (llama.cpp's
          graph), the output always token_embd; also at TQ2_0 and TQ1_0,
          whose matrices hold exactly the F16 file's values (checked);
  mamba   Mamba-1: no attention, a recurrent state per sequence (conv state
          of 3 inputs, selective-scan state of 16 per channel), dt through
          its low-rank projection (rank 16, F16 in the quantized files, as
          llama-quantize's fallback), untied output;
  mamba2  Mamba-2: 8 heads of 64 with a scalar decay each, 2 groups of B and
          C (d_state 64), the grouped RMSNorm after the gate, tied output;
  granitehybrid  Granite 4.0-H's layout: Mamba-2 layers (0, 2) and attention
          layers (1, 3: attention.head_count_kv per layer, 0 for Mamba-2), each
          with a SwiGLU feed-forward, no RoPE (rope.scaling.finetuned false),
          Granite's multipliers (embeddings x12, residual branches x0.5, q.k
          x0.0625, logits /4): the recurrent state and the KV cache side by side.

For the state-space models the batch-invariance test checks the recurrent
state: a prompt cut into chunks of 7 or 1 meets, at each chunk, the state its
previous chunk left; interleaved with another sequence, each token updates its
own sequence's state only.

Batched prompts group the tokens by expert (each chosen expert's matrices
read once per batch): the batch-invariance test below checks that this
grouping never changes a token's logits.

The comparison and its tolerances are tests/test_parity_llamacpp.py's (the
prompt in one batch, then llama.cpp's 128 greedy tokens teacher-forced; whole
rows of logits; docs/PARITY.md): F32/F16 must agree on every argmax and every
greedy token, with max |delta logit| within 1e-3 / 2e-3 of the largest.

Also: batch invariance on each new path (a token's logits are the same bits
alone, in prompt chunks, beside another sequence in one batch, on 1 or 3
threads, with small KV blocks), and `trinity info` naming each architecture.
"""
import ctypes
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, ROOT)
import engine_ctypes as E  # noqa: E402
import llamacpp_ref as R  # noqa: E402
from conftest import missing_reference, run_trinity  # noqa: E402
from test_parity_llamacpp import TOL, TOL_LSE, TOL_PPL, Compared, Seq, nll_ppl, trinity_rows  # noqa: E402

VARIANTS = {  # key -> gen_model.py arguments
    "gpt2": ["--arch", "gpt2"],
    "phi3": ["--arch", "phi3"],
    "gemma2": ["--arch", "gemma2"],
    "mistral": ["--arch", "llama", "--swa", "16"],
    "qwen3moe": ["--arch", "qwen3moe"],
    "mixtral": ["--arch", "llama", "--experts", "8"],
    "olmoe": ["--arch", "olmoe"],
    "bitnet": ["--arch", "bitnet"],
    "mamba": ["--arch", "mamba"],
    "mamba2": ["--arch", "mamba2"],
    "granitehybrid": ["--arch", "granitehybrid"],
}
TYPES = ("F32", "F16", "Q8_0", "Q4_K")
TERNARY = ("TQ2_0", "TQ1_0")
# mistral's weights are llama's (the same generator and seed: only the key
# differs), whose quantized files tests/test_parity_llamacpp.py covers; the
# window's question is answered at F32 and F16, where no parting is allowed.
# bitnet's matrices are ternary: also at TQ2_0 and TQ1_0 (our TQ kernels).
VARIANT_TYPES = {"mistral": ("F32", "F16"), "bitnet": TYPES + TERNARY}
MOE = ("qwen3moe", "mixtral", "olmoe")
MOE_FLIP_ROWS = 2  # of 199: 1 %
KEYS = [f"{v}_{t}" for v in VARIANTS for t in VARIANT_TYPES.get(v, TYPES)]
# Ternary files: the matrices dequantize to exactly the F16 file's values
# (test_bitnet_ternary_files_hold_the_f16_weights), and both engines' TQ
# kernels are exact integer sums of trits times 8-bit activations (Q8_K
# blocks of 256). What can differ is only where an activation rounds to the
# neighbouring 8-bit value because a float upstream differs in its last bit:
# Q8_0's mechanism (PARITY.md), without Q8_0's own weight rounding. Measured
# 5.3e-3 of the largest logit and 0.0056 in log-sum-exp (docs/ARCHITECTURES.md);
# the tolerances are about 4x and 7x that, below Q8_0's 3.5e-2 and 0.08.
TOL_ARCH = {**TOL, "TQ2_0": 2e-2, "TQ1_0": 2e-2}
TOL_LSE_ARCH = {**TOL_LSE, "TQ2_0": 0.04, "TQ1_0": 0.04}
TOL_PPL_ARCH = {**TOL_PPL, "TQ2_0": 2.5e-2, "TQ1_0": 2.5e-2}

MEASURED = {}


@pytest.fixture(scope="module", autouse=True)
def write_measurements():
    yield
    d = os.environ.get("TRINITY_TEST_REPORT_DIR")
    if d and MEASURED:
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "parity_arch.json"), "w") as f:
            json.dump(MEASURED, f, indent=1, sort_keys=True)


def record(request, name, **values):
    MEASURED[name] = values
    request.node.user_properties.append(("note", ", ".join(f"{k} {v}" for k, v in values.items())))


@pytest.fixture(scope="module")
def llama_cpp_live():
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        missing_reference("llama-cpp-python", f"import llama_cpp: {e}")
    return f"live llama.cpp (llama-cpp-python {R.version()})"


@pytest.fixture(scope="module")
def elib():
    return E.load_lib(os.environ.get("TRINITY_LIB"))


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("arch")


_paths = {}


def wtype(key):
    return next(t for t in TYPES + TERNARY if key.endswith("_" + t))


def model(gen_dir, key):
    """Generate the file once; the generator is deterministic (checked)."""
    if key not in _paths:
        t = wtype(key)
        path = str(gen_dir / f"{key}.gguf")
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), *VARIANTS[key[:-len(t) - 1]], "--type",
               t, "-o", path]
        sha = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        with open(path, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
        _paths[key] = path
    return _paths[key]




_refs = {}


def reference(path, key):
    if key not in _refs:
        s = R.random_model(path, key)
        _refs[key] = Seq(s["prompt"], s["greedy"], s["lse"], full=s["full"], full_rows=len(s["full"]))
    return _refs[key]


# Two files were expected failures under the earlier rule (a parting only at
# a 1 % near-tie after 8 identical tokens; Q4_K's log-sum-exp within 0.09,
# perplexity within 1 %): mixtral_Q4_K parts at greedy token 1 at a 0.14 %
# near-tie; granitehybrid_Q4_K at token 1 at 0.64 %, with two rows'
# log-sum-exp 0.086 / 0.107 off (median 0.0095) and its perplexity 1.4 %
# (F32 / F16 / Q8_0 of the same weights agree: 1.5e-05 / 4.0e-04 / 8.7e-03 of
# the largest logit). The rule measured across CPUs and kernel tiers
# (tests/llamacpp_ref.py's NEAR_TIE, docs/PARITY.md) covers both: they run
# as every other file.
@pytest.mark.parametrize("key", KEYS)
def test_new_architecture_matches_llamacpp(request, llama_cpp_live, elib, gen_dir, key):
    """Logits of every row, log-sum-exp, argmax and greedy tokens against
    llama.cpp's; and perplexity of the prompt's second half."""
    path = model(gen_dir, key)
    seq = reference(path, key)
    c = Compared(seq, trinity_rows(elib, path, seq))
    t = wtype(key)
    p = len(seq.prompt)
    ppl_ref = nll_ppl([seq.row(j)[0] for j in range(p)], seq.prompt, p // 2)
    ours = list(trinity_rows(elib, path, Seq(seq.prompt, seq.greedy[:1], seq.lse)))
    ppl = nll_ppl(ours, seq.prompt, p // 2)
    summary = c.summary()
    summary["reference"] = llama_cpp_live
    summary["ppl_rel"] = f"{abs(ppl - ppl_ref) / ppl_ref:.2e}"
    if t in ("Q8_0", "Q4_K") and key.split("_")[0] in MOE:
        # A router near-tie under quantization noise can choose another
        # expert in one engine than in the other: that row then differs by
        # a whole expert's contribution. At most MOE_FLIP_ROWS rows may
        # exceed the tolerances (each reported); all other rows, and the
        # argmax and greedy rules, as for every model.
        over = np.nonzero((c.delta / c.scale.max() > TOL_ARCH[t]) | (c.dlse > TOL_LSE_ARCH[t]))[0]
        summary["rows_over_tolerance"] = " ".join(f"{int(r)}:{c.delta[r] / c.scale.max():.3f}" for r in over) or "none"
        assert len(over) <= MOE_FLIP_ROWS, f"{key}: {len(over)} rows beyond the tolerances: {summary['rows_over_tolerance']}"
        c.delta[over] = 0
        c.dlse[over] = 0
    record(request, key, **summary)
    c.check(TOL_ARCH[t], TOL_LSE_ARCH[t], strict=t in ("F32", "F16"), what=key)
    assert abs(ppl - ppl_ref) <= TOL_PPL_ARCH[t] * ppl_ref, (key, ppl, ppl_ref)


@pytest.mark.parametrize("key", [f"{v}_{t}" for v in VARIANTS for t in ("F32", "Q4_K")] +
                         [f"bitnet_{t}" for t in TERNARY])
def test_new_architecture_is_batch_invariant(elib, gen_dir, key):
    """A sequence's logits are the same bits alone in one batch, in chunks of
    7 and of 1, on 1 and 3 threads, with KV blocks of 4 (the window crosses
    blocks), and interleaved with another sequence in one batch."""
    path = model(gen_dir, key)
    rng = np.random.default_rng(7)
    prompt = [1] + [int(t) for t in rng.integers(259, 512, size=59)]
    other = [1] + [int(t) for t in rng.integers(259, 512, size=59)]
    m = E.Model(elib, path)
    try:
        def run(n_batch=256, threads=2, kv_block=0, chunk=None):
            c = E.Context(m, n_ctx=256, n_batch=n_batch, n_threads=threads, kv_block=kv_block)
            try:
                return c.eval_all(prompt, n_batch=chunk)
            finally:
                c.close()

        ref = run()
        for kw in (dict(chunk=7), dict(chunk=1, n_batch=1), dict(threads=1), dict(threads=3),
                   dict(kv_block=4, chunk=5)):
            got = run(**kw)
            assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), f"{key}: logits differ with {kw}"
        c = E.Context(m, n_ctx=256, n_batch=256, n_seq_max=2, n_threads=2, kv_block=4)
        try:
            toks, pos, seq = [], [], []
            for i in range(len(prompt)):
                toks += [other[i], prompt[i]]
                pos += [i, i]
                seq += [1, 0]
            c.decode(toks, pos, seq, logits=[1] * len(toks))
            both = np.stack([c.logits(2 * i + 1) for i in range(len(prompt))])
        finally:
            c.close()
        assert np.array_equal(both.view(np.uint32), ref.view(np.uint32)), f"{key}: logits differ beside another sequence"
    finally:
        m.close()


def test_bitnet_ternary_files_hold_the_f16_weights(gen_dir):
    """gen_model.py's bitnet matrices are {-1, 0, 1} x one scale per matrix:
    at TQ2_0 and TQ1_0 every tensor dequantizes (gguf package, ggml's
    layouts) to exactly the F16 file's values, so the ternary rows of the
    parity test differ from F16's by the 8-bit activations alone."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    def tensors(key):
        return {t.name: dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
                for t in GGUFReader(model(gen_dir, key)).tensors}

    f16 = tensors("bitnet_F16")
    assert sum(n.endswith(".scale") for n in f16) == 7  # layer 1's matrices keep their scale apart
    for t in TERNARY:
        q = tensors("bitnet_" + t)
        assert q.keys() == f16.keys()
        for name, x in f16.items():
            assert np.array_equal(q[name], x), (t, name, float(np.abs(q[name] - x).max()))
        blk = [n for n in q if n.startswith("blk.") and n.endswith(".weight") and "norm" not in n]
        assert len(blk) == 14 and all(set(np.unique(q[n] / np.abs(q[n]).max())) <= {-1.0, 0.0, 1.0} for n in blk)


def logits_with_and_without_repack(elib, path, prompt, want_bytes):
    """The prompt's logits with the repack and without it (--no-repack), on
    1 and 2 threads in prompt tiles and on 2 threads a token at a time:
    {(no_repack, threads, chunk): logits}; the repacked bytes checked."""
    out = {}
    for no_repack in (False, True):
        m = E.Model(elib, path, no_repack=no_repack)
        try:
            assert m.repacked_bytes == (0 if no_repack else want_bytes), (m.repacked_bytes, want_bytes)
            for threads, chunk in ((1, None), (2, None), (2, 1)):
                c = E.Context(m, n_ctx=128, n_batch=64, n_threads=threads)
                try:
                    out[(no_repack, threads, chunk)] = c.eval_all(prompt, n_batch=chunk)
                finally:
                    c.close()
        finally:
            m.close()
    return out


X16 = {"Q4_K": (12, 65, 256, 148), "Q4_0": (2, 66, 32, 18), "Q5_0": (6, 67, 32, 22), "Q8_0": (8, 68, 32, 34)}


@pytest.mark.parametrize("key,src", [("mixtral_Q4_K", "Q4_K"), ("phi3_Q4_K", "Q4_K"), ("qwen3moe_Q4_K", "Q4_K"),
                                     ("mixtral_Q8_0", "Q8_0"), ("phi3_Q8_0", "Q8_0"), ("llama_Q4_0", "Q4_0"),
                                     ("llama_Q5_0", "Q5_0"), ("llama_Q4_K_M", "Q4_K"),
                                     ("llama-tied_Q8_0", "Q8_0"), ("llama-tied_Q4_K", "Q4_K")])
def test_x16_repacked_at_load(elib, gen_dir, tmp_path, key, src):
    """Where a SIMD tier has kernels for them (AMX, AVX-512 and AVX-VNNI:
    all four; AVX2 too), Q4_K, Q4_0, Q5_0 and Q8_0 matrices are repacked at
    load into their _X16
    layouts (sixteen rows interleaved; Q4_K 148 bytes a row and super-block
    against 144, the others the same size): every such tensor but untied
    token embeddings (read a row at a time; tied ones are repacked for the
    output, and the lookup reads their rows back), 3-D experts (mixtral,
    qwen3moe) and fused q/k/v and gate/up views (phi3) included. With the repack a
    prompt's logits are the same bits on 1 and 2 threads, in one batch and a
    token at a time; against the mapped rows (--no-repack: the tier's own
    kernels, rounded in another order) they differ by the kernels' rounding
    only, within the quantized tolerance of the llama.cpp comparisons.
    Elsewhere nothing is repacked."""
    repacks, n, rel = check_x16_repack(elib, x16_file(gen_dir, tmp_path, key), src)
    MEASURED.setdefault("x16_repack", {})[key] = {"repacked": repacks, "tensors": n, "rel_vs_mapped": rel}


def x16_file(gen_dir, tmp_path, key):
    if key.startswith("llama"):  # llama_TYPE, or llama-tied_TYPE: the output is the token embeddings
        path = str(tmp_path / f"{key}.gguf")
        tied = ["--tied", "yes"] if key.startswith("llama-tied_") else []
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "llama", *tied,
                        "--type", key.split("_", 1)[1], "-o", path], check=True, capture_output=True)
        return path
    return model(gen_dir, key)


@pytest.mark.parametrize("tier", ["avx2", "avxvnni"])
@pytest.mark.parametrize("key,src", [("llama_Q4_0", "Q4_0"), ("llama_Q5_0", "Q5_0"), ("llama_Q4_K_M", "Q4_K"),
                                     ("phi3_Q8_0", "Q8_0"), ("llama-tied_Q8_0", "Q8_0")])
def test_x16_repacked_at_load_on_256_bit_tiers(elib, gen_dir, tmp_path, tier, key, src):
    """test_x16_repacked_at_load's checks with the kernels capped at AVX2 or
    AVX-VNNI (TRINITY_CPU, read once per process: a child process runs
    them), where the CPU has that tier: the 256-bit kernels of the _X16
    layouts repack Q4_0, Q5_0, Q4_K and Q8_0 on both."""
    elib.tr_isa_usable.argtypes, elib.tr_isa_usable.restype = [ctypes.c_int], ctypes.c_bool
    if not elib.tr_isa_usable({"avx2": 1, "avxvnni": 2}[tier]):
        pytest.skip(f"not run on this CPU: lacks {tier} (test_kernels_emu.py runs its kernels emulated)")
    path = x16_file(gen_dir, tmp_path, key)
    child = ("import sys; sys.path[:0] = [sys.argv[1]]; import test_parity_arch as T; "
             "import os; r = T.check_x16_repack(T.E.load_lib(os.environ.get('TRINITY_LIB')), sys.argv[2], sys.argv[3]); print('repacked', r[0], r[2])")
    p = subprocess.run([sys.executable, "-c", child, os.path.dirname(os.path.abspath(__file__)), path, src],
                       env=dict(os.environ, TRINITY_CPU=tier), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[:2] == ["repacked", "True"], p.stdout


def check_x16_repack(elib, path, src):
    """Repacked tensors, bytes, info lines and logits of test_x16_repacked_at_load on this process's tier:
    (repacked here?, tensors, repacked-vs-mapped logit difference relative to the largest)."""
    from gguf import GGUFReader
    elib.tr_matmul_repack_type.argtypes = [ctypes.c_int]
    repacks = elib.tr_matmul_repack_type(X16[src][0]) == X16[src][1]  # on this CPU

    tensors = GGUFReader(path).tensors
    # tied token embeddings: repacked for the output where its one token runs the 512-bit kernels
    elib.tr_isa_usable.argtypes, elib.tr_isa_usable.restype = [ctypes.c_int], ctypes.c_bool
    tied = not any(t.name == "output.weight" for t in tensors) and elib.tr_isa_usable(3)  # TR_ISA_AVX512

    def matrices(ty):  # the file's tensors of type ty that are repacked (where the CPU repacks)
        return [t for t in tensors if t.tensor_type.name == ty and (t.name != "token_embd.weight" or tied)
                and len(t.shape) > 1 and int(t.shape[1]) % 16 == 0]

    want = matrices(src)
    assert want, f"the file has no {src} matrix to repack"
    assert not tied or any(t.name == "token_embd.weight" for t in want), "the tied embeddings are not repacked"
    # (elsewhere they are copied as they are: want_bytes below counts them out, and the loader's count must match)
    want_bytes = sum(int(np.prod([int(x) for x in t.shape])) // blck * xbytes
                     for ty, (st, xt, blck, xbytes) in X16.items() if elib.tr_matmul_repack_type(st) == xt
                     for t in matrices(ty))
    rng = np.random.default_rng(5)
    prompt = [1] + [int(t) for t in rng.integers(259, 512, size=40)]
    out = logits_with_and_without_repack(elib, path, prompt, want_bytes)
    info = run_trinity("info", path, check=True).stdout
    assert (f"repack: {len(want)} {src} tensors" in info) == repacks, info[-600:]
    for no_repack in (False, True):
        ref = out[(no_repack, 2, None)]
        for k, v in out.items():
            if k[0] == no_repack:
                assert np.array_equal(v.view(np.uint32), ref.view(np.uint32)), f"{path}: logits differ with {k}"
    a, b = out[(False, 2, None)], out[(True, 2, None)]
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    assert rel <= TOL_ARCH["Q4_K"], f"{path}: repacked vs mapped logits differ by {rel:.3g} of the largest"
    return repacks, len(want), rel


@pytest.mark.parametrize("ty", ["TQ2_0", "F16"])
def test_matrices_copied_into_own_pages_give_the_same_bits(elib, tmp_path, ty):
    """Matrices no layout changes (here TQ2_0 or F16, every one of the file's
    but the norms) are copied at load as they are into the model's own
    memory in 2 MiB pages (fewer TLB misses); --no-repack keeps them mapped.
    The copied bytes are those of every tensor some weight reads (the gguf
    package's reading of the file: tied token embeddings included), and a
    prompt's logits are the same bits either way (the same kernels on the
    same bytes), on 1 and 2 threads, in one batch and a token at a time;
    `trinity info` names the copy."""
    from gguf import GGUFReader
    path = str(tmp_path / f"llama_{ty}.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "llama", "--type", ty,
                    "-o", path], check=True, capture_output=True)
    tensors = GGUFReader(path).tensors
    want = sum(int(t.n_bytes) for t in tensors if len(t.shape) > 1 and int(t.shape[1]) > 1)
    assert any(t.tensor_type.name == ty for t in tensors)
    rng = np.random.default_rng(4)
    prompt = [1] + [int(t) for t in rng.integers(259, 512, size=40)]
    out = logits_with_and_without_repack(elib, path, prompt, 0)
    for no_repack in (False, True):
        m = E.Model(elib, path, no_repack=no_repack)
        try:
            assert m.copied_bytes == (0 if no_repack else want), (m.copied_bytes, want)
        finally:
            m.close()
    ref = out[(True, 2, None)]
    for k, v in out.items():
        assert np.array_equal(v.view(np.uint32), ref.view(np.uint32)), f"{ty}: logits differ with {k}"
    info = run_trinity("info", path, check=True).stdout
    assert f"copy: the other matrices ({want / 1048576:.1f} MiB) copied at load by run/chat/serve/bench" in info, \
        info[-600:]


@pytest.mark.parametrize("key", ["bitnet_TQ1_0", "mixtral_TQ1_0", "granitehybrid_TQ1_0"])
def test_tq1_0_repacked_at_load_gives_the_same_bits(elib, gen_dir, tmp_path, key):
    """TQ1_0 matrices are repacked at load into TQ2_0's layout (the same
    trits and scale bits): a prompt's logits are the same bits with and
    without the repack (--no-repack keeps the mapping), on 1 and 2 threads,
    in one batch and a token at a time;
    the repacked bytes are those of the TQ1_0 tensors at TQ2_0's 66 bytes a
    block (the gguf package's reading of the file). The mixtral file puts
    TQ1_0 under fused views too: 3-D experts and a tied or separate output;
    the granitehybrid file in state-space layers' matrices."""
    from gguf import GGUFReader
    if key in ("mixtral_TQ1_0", "granitehybrid_TQ1_0"):
        path = str(tmp_path / f"{key}.gguf")
        args = ["--arch", "llama", "--experts", "4"] if key == "mixtral_TQ1_0" else ["--arch", "granitehybrid"]
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), *args, "--type", "TQ1_0", "-o",
                        path], check=True, capture_output=True)
    else:
        path = model(gen_dir, key)
    tq1 = [t for t in GGUFReader(path).tensors if t.tensor_type.name == "TQ1_0"]
    assert tq1, "the file has no TQ1_0 tensor"
    want_bytes = sum(int(np.prod([int(x) for x in t.shape])) // 256 * 66 for t in tq1)
    rng = np.random.default_rng(3)
    prompt = [1] + [int(t) for t in rng.integers(259, 512, size=40)]
    out = logits_with_and_without_repack(elib, path, prompt, want_bytes)
    info = run_trinity("info", path, check=True).stdout
    assert f"repack: {len(tq1)} TQ1_0 tensors" in info and "into TQ2_0's layout" in info, info[-600:]
    ref = out[(True, 2, None)]
    for k, v in out.items():
        assert np.array_equal(v.view(np.uint32), ref.view(np.uint32)), f"{key}: logits differ with {k}"


INFO = {  # what `trinity info` must say of each
    "gpt2": ["architecture: gpt2 (supported)", "learned absolute positions", "LayerNorm", "GELU"],
    "phi3": ["architecture: phi3 (supported)", "LongRoPE", "sliding window 16 in the file: not applied"],
    "gemma2": ["architecture: gemma2 (supported)", "attention soft-capping 5", "final logit soft-capping 30",
               "sliding window 16"],
    "mistral": ["architecture: llama (supported)", "sliding window 16 in the file: not applied"],
    "qwen3moe": ["architecture: qwen3moe (supported)", "mixture of 8 experts, top 2", "renormalised"],
    "mixtral": ["architecture: llama (supported)", "mixture of 8 experts, top 2", "renormalised"],
    "olmoe": ["architecture: olmoe (supported)", "mixture of 8 experts, top 2", "weights not renormalised",
              "QK-norm over all heads"],
    "bitnet": ["architecture: bitnet (supported)", "RoPE (NeoX pairs)", "SwiGLU", "(attn_sub_norm)",
               "(ffn_sub_norm)", "matrix scales: 7 of 14 layer matrices", "tied to token_embd"],
    "mamba": ["architecture: mamba (supported)", "Mamba (selective scan), d_inner 512, d_state 16, conv kernel 4, "
              "dt rank 16", "recurrent state: 76.0 KiB per sequence", "no KV cache", "output.weight"],
    "mamba2": ["architecture: mamba2 (supported)", "8 heads of 64, 2 groups of B/C, d_state 64, conv kernel 4",
               "grouped RMSNorm", "recurrent state: 274.0 KiB per sequence", "tied to token_embd"],
    "granitehybrid": ["architecture: granitehybrid (supported)", "2 KV heads (GQA)", "scale 0.0625",
                      "layers: 2 attention, 2 state-space (Mamba-2: 8 heads of 64, 1 group of B/C, d_state 64",
                      "multipliers: embeddings 12, residual branches 0.5, logits 1/4",
                      "positions: none (rope.scaling.finetuned is false", "feed-forward: SwiGLU"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_info_names_architecture_and_features(trinity_bin, gen_dir, variant):
    p = run_trinity("info", model(gen_dir, variant + "_Q8_0"), check=True)
    for want in INFO[variant]:
        assert want in p.stdout, (want, p.stdout[-2000:])
