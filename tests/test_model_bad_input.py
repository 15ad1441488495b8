"""Bad input to the model layer and the CLI: each is a one-line error that
names what is wrong (exit 1), a usage error (exit 2), or a well-defined
result -- never a crash. Broken models are copies of a generated random
model with one thing changed (gguf package)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import gguf
from gguf import GGUFReader, GGUFWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from conftest import run_trinity  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bad") / "llama.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "llama", "--type",
                    "F32", "-o", path], check=True, capture_output=True)
    return path


def copy_model(src, dst, set_keys=None, drop_keys=(), drop_tensors=(), replace=None, arch=None, add=None):
    """Copy a GGUF, changing keys and tensors (add: more tensors, name -> array)."""
    r = GGUFReader(src)
    a = arch or bytes(r.fields["general.architecture"].parts[-1]).decode()
    w = GGUFWriter(dst, a)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture" or k in drop_keys:
            continue
        if set_keys and k in set_keys:
            continue
        k2 = k.replace(bytes(r.fields["general.architecture"].parts[-1]).decode() + ".", a + ".", 1) if arch else k
        vt = f.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k2, f.contents(), vt, sub_type=f.types[1])
        else:
            w.add_key_value(k2, f.contents(), vt)
    for k, (v, vt) in (set_keys or {}).items():
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, v, vt, sub_type=gguf.GGUFValueType.STRING if isinstance(v[0], str) else
                            gguf.GGUFValueType.FLOAT32 if isinstance(v[0], float) else gguf.GGUFValueType.INT32)
        else:
            w.add_key_value(k, v, vt)
    for t in r.tensors:
        if t.name in drop_tensors:
            continue
        data = replace[t.name] if replace and t.name in replace else np.asarray(t.data)
        w.add_tensor(t.name, data)
    for name, data in (add or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def expect_error(p, *words):
    assert p.returncode == 1, (p.returncode, p.stderr)
    err = p.stderr.strip()
    assert "\n" not in err, f"not one line: {err!r}"
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"


def run(model, *extra):
    p = subprocess.run([os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity")), "run", "-m", model,
                        "-p", "hello world", "-n", "4", "--temp", "0", "-t", "1", *map(str, extra)],
                       capture_output=True, timeout=300)
    p.stdout = p.stdout.decode("utf-8", "replace")
    p.stderr = p.stderr.decode("utf-8", "replace")
    return p


def test_unsupported_architecture(base, tmp_path):
    m = copy_model(base, str(tmp_path / "m.gguf"), arch="rwkv6")
    expect_error(run(m), "architecture 'rwkv6' is not supported")
    # trinity info still dumps the file, and says why it cannot run it in one line
    p = run_trinity("info", m)
    assert p.returncode == 0, p.stderr
    tail = p.stdout.split("\nmodel:\n", 1)[1]
    assert tail.count("\n") == 1 and "not supported" in tail and "architecture 'rwkv6'" in tail, tail


@pytest.fixture(scope="module")
def arch_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    out = {}
    for a in ("gpt2", "phi3", "gemma2", "bitnet", "mamba", "mamba2", "granitehybrid"):
        out[a] = str(d / f"{a}.gguf")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", a, "--type", "F32",
                        "-o", out[a]], check=True, capture_output=True)
    return out


def test_llama_file_labelled_gpt2_names_the_missing_key(base, tmp_path):
    m = copy_model(base, str(tmp_path / "m.gguf"), arch="gpt2")
    expect_error(run(m), "gpt2.attention.layer_norm_epsilon")


def test_gpt2_without_position_embeddings(arch_files, tmp_path):
    m = copy_model(arch_files["gpt2"], str(tmp_path / "m.gguf"), drop_tensors=("position_embd.weight",))
    expect_error(run(m), "missing tensor position_embd.weight")


def test_gpt2_without_a_layernorm_bias(arch_files, tmp_path):
    m = copy_model(arch_files["gpt2"], str(tmp_path / "m.gguf"), drop_tensors=("blk.1.ffn_norm.bias",))
    expect_error(run(m), "missing tensor blk.1.ffn_norm.bias")


def test_phi3_rope_factors_of_the_wrong_size(arch_files, tmp_path):
    m = copy_model(arch_files["phi3"], str(tmp_path / "m.gguf"),
                   replace={"rope_factors_long.weight": np.ones(7, dtype=np.float32)})
    expect_error(run(m), "rope_factors_long.weight", "shape")


def test_phi3_ffn_up_neither_fused_nor_gated(arch_files, tmp_path):
    r = GGUFReader(arch_files["phi3"])
    up = np.asarray(next(t for t in r.tensors if t.name == "blk.0.ffn_up.weight").data)
    m = copy_model(arch_files["phi3"], str(tmp_path / "m.gguf"), replace={"blk.0.ffn_up.weight": up[:300]})
    expect_error(run(m), "blk.0.ffn_gate.weight")


def test_gemma2_per_layer_window_pattern_is_refused(arch_files, tmp_path):
    m = copy_model(arch_files["gemma2"], str(tmp_path / "m.gguf"),
                   set_keys={"gemma2.attention.sliding_window_pattern": ([1, 0, 1, 0], gguf.GGUFValueType.ARRAY)})
    expect_error(run(m), "gemma2.attention.sliding_window_pattern", "per-layer")


def test_gemma2_negative_softcap_is_refused(arch_files, tmp_path):
    m = copy_model(arch_files["gemma2"], str(tmp_path / "m.gguf"),
                   set_keys={"gemma2.attn_logit_softcapping": (-5.0, gguf.GGUFValueType.FLOAT32)})
    expect_error(run(m), "gemma2.attn_logit_softcapping is negative")


def test_bitnet_without_a_sub_norm(arch_files, tmp_path):
    m = copy_model(arch_files["bitnet"], str(tmp_path / "m.gguf"), drop_tensors=("blk.1.ffn_sub_norm.weight",))
    expect_error(run(m), "missing tensor blk.1.ffn_sub_norm.weight")
    m = copy_model(arch_files["bitnet"], str(tmp_path / "m2.gguf"), drop_tensors=("blk.0.attn_sub_norm.weight",))
    expect_error(run(m), "missing tensor blk.0.attn_sub_norm.weight")


def test_bitnet_matrix_scale_not_one_f32(arch_files, tmp_path):
    """A matrix's .scale is one F32 (llama.cpp's {1}): two of them, or an F16
    one, name the tensor."""
    m = copy_model(arch_files["bitnet"], str(tmp_path / "m.gguf"),
                   replace={"blk.1.attn_q.scale": np.ones(2, dtype=np.float32)})
    expect_error(run(m), "blk.1.attn_q.scale", "shape")
    m = copy_model(arch_files["bitnet"], str(tmp_path / "m2.gguf"),
                   replace={"blk.1.ffn_down.scale": np.ones(1, dtype=np.float16)})
    expect_error(run(m), "blk.1.ffn_down.scale", "expected F32")


def test_falcon_mamba_norms_are_refused(arch_files, tmp_path):
    m = copy_model(arch_files["mamba"], str(tmp_path / "m.gguf"),
                   set_keys={"mamba.ssm.dt_b_c_rms": (True, gguf.GGUFValueType.BOOL)})
    expect_error(run(m), "mamba.ssm.dt_b_c_rms", "not supported")


def test_mamba_dt_b_c_norm_tensors_are_refused(arch_files, tmp_path):
    """Jamba's RMSNorms of dt, B and C: tensors a mamba file must not carry unapplied."""
    m = copy_model(arch_files["mamba"], str(tmp_path / "m.gguf"),
                   add={"blk.0.ssm_dt_norm.weight": np.ones(16, dtype=np.float32)})
    expect_error(run(m), "blk.0.ssm_dt_norm.weight", "not supported for mamba")


def test_mamba_conv_weights_must_be_f32(arch_files, tmp_path):
    r = GGUFReader(arch_files["mamba"])
    conv = np.asarray(next(t for t in r.tensors if t.name == "blk.1.ssm_conv1d.weight").data)
    m = copy_model(arch_files["mamba"], str(tmp_path / "m.gguf"),
                   replace={"blk.1.ssm_conv1d.weight": conv.astype(np.float16)})
    expect_error(run(m), "blk.1.ssm_conv1d.weight", "expected F32")


def test_mamba2_heads_and_groups_must_divide(arch_files, tmp_path):
    m = copy_model(arch_files["mamba2"], str(tmp_path / "m.gguf"),
                   set_keys={"mamba2.ssm.group_count": (3, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "mamba2.ssm.inner_size", "group_count (3)")
    m = copy_model(arch_files["mamba2"], str(tmp_path / "n.gguf"), drop_keys=("mamba2.ssm.group_count",))
    expect_error(run(m), "missing metadata key mamba2.ssm.group_count")


def test_mamba_a_of_the_wrong_shape(arch_files, tmp_path):
    m = copy_model(arch_files["mamba"], str(tmp_path / "m.gguf"),
                   replace={"blk.0.ssm_a": -np.ones((512, 8), dtype=np.float32)})
    expect_error(run(m), "blk.0.ssm_a", "expected [16, 512]")


def test_granitehybrid_kv_heads_per_layer_are_checked(arch_files, tmp_path):
    A = gguf.GGUFValueType.ARRAY
    m = copy_model(arch_files["granitehybrid"], str(tmp_path / "m.gguf"),
                   set_keys={"granitehybrid.attention.head_count_kv": ([0, 2, 0, 1], A)})
    expect_error(run(m), "granitehybrid.attention.head_count_kv[3] = 1", "one KV head count")
    m = copy_model(arch_files["granitehybrid"], str(tmp_path / "n.gguf"),
                   set_keys={"granitehybrid.attention.head_count_kv": ([0, 2, 0], A)})
    expect_error(run(m), "granitehybrid.attention.head_count_kv has 3 entries for 4 layers")
    # an attention layer's tensors where the file says Mamba-2: the missing ssm tensor is named
    m = copy_model(arch_files["granitehybrid"], str(tmp_path / "o.gguf"),
                   set_keys={"granitehybrid.attention.head_count_kv": ([0, 0, 0, 2], A)})
    expect_error(run(m), "missing tensor blk.1.ssm_in.weight")


def test_granitehybrid_experts_are_refused(arch_files, tmp_path):
    m = copy_model(arch_files["granitehybrid"], str(tmp_path / "m.gguf"),
                   set_keys={"granitehybrid.expert_count": (8, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "granitehybrid.expert_count is set: not supported")


def test_recurrent_models_refuse_what_a_state_cannot_do(arch_files):
    """Speculation would have to drop rejected guesses and a streaming window
    would cut the past: neither can be done to a recurrent state."""
    expect_error(run(arch_files["mamba"], "--spec", "ngram"), "speculative decoding is not supported for mamba")
    expect_error(run(arch_files["mamba2"], "--kv-window", "64"), "--kv-window", "mamba2")
    expect_error(run(arch_files["mamba"], "-md", arch_files["mamba"], "--spec", "draft"), "draft model")
    expect_error(run(arch_files["granitehybrid"], "--spec", "lookahead"),
                 "speculative decoding is not supported for granitehybrid")
    for a in ("mamba", "mamba2", "granitehybrid"):
        p = run(arch_files[a])
        assert p.returncode == 0, p.stderr


def test_missing_tensor(base, tmp_path):
    m = copy_model(base, str(tmp_path / "m.gguf"), drop_tensors={"blk.1.ffn_up.weight"})
    expect_error(run(m), "missing tensor blk.1.ffn_up.weight")


def test_wrongly_shaped_tensor(base, tmp_path):
    bad = np.zeros((100, 256), dtype=np.float32)
    m = copy_model(base, str(tmp_path / "m.gguf"), replace={"blk.0.attn_k.weight": bad})
    expect_error(run(m), "blk.0.attn_k.weight", "shape")


def test_vocabulary_embedding_mismatch(base, tmp_path):
    r = GGUFReader(base)
    toks = r.fields["tokenizer.ggml.tokens"].contents()[:-1]
    scores = [float(x) for x in r.fields["tokenizer.ggml.scores"].contents()[:-1]]
    types = [int(x) for x in r.fields["tokenizer.ggml.token_type"].contents()[:-1]]
    A = gguf.GGUFValueType.ARRAY
    m = copy_model(base, str(tmp_path / "m.gguf"), set_keys={"tokenizer.ggml.tokens": (toks, A),
                                                             "tokenizer.ggml.scores": (scores, A),
                                                             "tokenizer.ggml.token_type": (types, A)})
    expect_error(run(m), "vocabulary has 511 tokens", "token_embd.weight has 512 rows")


def test_experts_key_without_the_experts(base, tmp_path):
    """llama with expert_count is Mixtral: a dense file that claims experts
    names what is missing (the count used, then the router)."""
    m = copy_model(base, str(tmp_path / "m.gguf"), set_keys={"llama.expert_count": (8, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "llama.expert_used_count")
    m = copy_model(base, str(tmp_path / "m2.gguf"), set_keys={"llama.expert_count": (8, gguf.GGUFValueType.UINT32),
                                                             "llama.expert_used_count": (2, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "missing tensor blk.0.ffn_gate_inp.weight")
    m = copy_model(base, str(tmp_path / "m3.gguf"), set_keys={"llama.expert_count": (8, gguf.GGUFValueType.UINT32),
                                                             "llama.expert_used_count": (9, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "llama.expert_used_count = 9 is out of range")


def test_mixture_of_experts_is_refused_where_the_architecture_has_none(arch_files, tmp_path):
    m = copy_model(arch_files["phi3"], str(tmp_path / "m.gguf"),
                   set_keys={"phi3.expert_count": (8, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "phi3.expert_count is set: not supported")


def test_qwen3moe_expert_tensor_of_the_wrong_shape(tmp_path):
    src = str(tmp_path / "moe.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "qwen3moe", "--shape",
                    "micro", "-o", src], check=True, capture_output=True)
    r = GGUFReader(src)
    up = np.asarray(next(t for t in r.tensors if t.name == "blk.1.ffn_up_exps.weight").data)
    m = copy_model(src, str(tmp_path / "m.gguf"), replace={"blk.1.ffn_up_exps.weight": up[:3]})
    expect_error(run(m), "blk.1.ffn_up_exps.weight", "shape")
    m = copy_model(src, str(tmp_path / "m2.gguf"),
                   set_keys={"qwen3moe.expert_gating_func": (2, gguf.GGUFValueType.UINT32)})
    expect_error(run(m), "qwen3moe.expert_gating_func is set: not supported")


def test_yarn_rope_scaling_is_refused(base, tmp_path):
    m = copy_model(base, str(tmp_path / "m.gguf"),
                   set_keys={"llama.rope.scaling.type": ("yarn", gguf.GGUFValueType.STRING)})
    expect_error(run(m), "llama.rope.scaling.type", "yarn")


def test_missing_hyperparameter(base, tmp_path):
    m = copy_model(base, str(tmp_path / "m.gguf"), drop_keys={"llama.embedding_length"})
    expect_error(run(m), "llama.embedding_length")


def test_prompt_longer_than_context(base):
    p = run_trinity("run", "-m", base, "-p", "the of and to in is was that for it " * 4, "-c", 8, "-n", 4, "-t", 1)
    expect_error(p, "context (-c) holds 8")


def test_n_zero_generates_nothing(base):
    p = run(base, "-n", 0)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""
    assert "generation: 0 tokens" in p.stderr


def test_empty_prompt_continues_from_bos(base):
    p = subprocess.run([os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity")), "run", "-m", base,
                        "-p", "", "-n", "3", "--temp", "0", "-t", "1"], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    p.stderr = p.stderr.decode()
    assert "prompt: 1 tokens" in p.stderr
    assert "generation: 3 tokens" in p.stderr


def test_generation_stops_at_the_context(base):
    # random weights emit arbitrary bytes: read the output as bytes
    p = subprocess.run([os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity")), "run", "-m", base,
                        "-p", "hello", "-c", "12", "--temp", "0", "-t", "1"], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    p.stderr = p.stderr.decode()
    n = int(p.stderr.split("generation: ")[1].split(" ")[0])
    n_prompt = int(p.stderr.split("prompt: ")[1].split(" ")[0])
    assert n_prompt + n <= 13  # the last token is printed without being evaluated


def test_missing_model_file():
    expect_error(run_trinity("run", "-m", "/nonexistent/m.gguf", "-p", "x"), "/nonexistent/m.gguf")


def test_usage_errors(base):
    assert run_trinity("run", "-p", "x").returncode == 2
    assert run_trinity("run", "-m", base).returncode == 2
    assert run_trinity("run", "-m", base, "-p", "x", "-n", "abc").returncode == 2
    assert run_trinity("run", "-m", base, "-p", "x", "--top-p", "2").returncode == 2
    assert run_trinity("run", "-m", base, "-p", "x", "--bogus").returncode == 2
    assert run_trinity("perplexity", "-m", base).returncode == 2


def test_perplexity_needs_two_windows(base, tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("the of and to in is was")
    expect_error(run_trinity("perplexity", "-m", base, "-f", str(f), "-c", 64), "needs at least 128")


def test_chat_unknown_format(base):
    p = run_trinity("chat", "-m", base, "--chat-template", "nope", input="hi\n")
    expect_error(p, "'nope': no such file and not a built-in format (gemma, chatml, llama3, llama2)")


def test_chat_without_template_asks_for_a_format(base):
    p = run_trinity("chat", "-m", base, input="hi\n")
    expect_error(p, "--chat-template")


def chatml(messages):
    """ChatML, written out here independently of src/engine/chat.c."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def gemma(messages):
    """Gemma's chat template (tokenizer.chat_template of Gemma 3), written out
    here: turns of user and model, each message trimmed, the model's turn opened."""
    out = ""
    for m in messages:
        role = "model" if m["role"] == "assistant" else m["role"]
        out += f"<start_of_turn>{role}\n{m['content'].strip()}<end_of_turn>\n"
    return out + "<start_of_turn>model\n"


def cli(*args, input=None):
    """The CLI with bytes in and out (a random model's text need not be UTF-8)."""
    p = subprocess.run([os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity")), *map(str, args)],
                       input=input, capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    return p.stdout


def test_chat_answers_what_run_generates_for_the_rendered_conversation(base):
    """chat's reply is, byte for byte, `run`'s greedy text for the same
    conversation rendered in the chat format by hand, then a newline."""
    flags = ("-n", 6, "--temp", 0, "-t", 1)
    got = cli("chat", "-m", base, "--chat-format", "chatml", *flags, input=b"hello\n\n")
    want = cli("run", "-m", base, "-p", chatml([{"role": "user", "content": "hello"}]), *flags)
    assert want, "run generated nothing to compare with"
    assert got == want + b"\n"


def test_chat_second_turn_on_the_real_model_equals_run(model_path):
    """Two turns with Gemma 3 through the model's own template: each reply is
    what `run` generates for the conversation so far, rendered by hand (the
    first reply inside it as the model's turn). The second turn reuses the
    cache the first left, so this checks that reuse too."""
    flags = ("-n", 12, "--temp", 0, "-t", 2)
    q1, q2 = "Name one fruit.", "And one vegetable?"
    got = cli("chat", "-m", model_path, *flags, input=f"{q1}\n{q2}\n\n".encode())
    r1 = cli("run", "-m", model_path, "-p", gemma([{"role": "user", "content": q1}]), *flags)
    assert r1.strip(), "run generated nothing to compare with"
    assert got.startswith(r1 + b"\n"), (got, r1)
    r2 = cli("run", "-m", model_path, "-p", gemma([{"role": "user", "content": q1},
                                                   {"role": "assistant", "content": r1.decode()},
                                                   {"role": "user", "content": q2}]), *flags)
    assert r2.strip()
    assert got == r1 + b"\n" + r2 + b"\n"


def test_chat_says_where_a_reply_was_cut(model_path):
    """The base model rarely ends a turn: each reply that stops at -n says so (and one that stops for the
    context says that), on stderr, and the conversation goes on."""
    p = run_trinity("chat", "-m", model_path, "-n", 4, "--temp", 0, "-t", 2, input="Hi\nAnd again?\n\n")
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("[reply cut at the length limit: 4 tokens (-n)]") == 2, p.stderr
    assert len([line for line in p.stdout.splitlines() if line.strip()]) == 2, p.stdout
