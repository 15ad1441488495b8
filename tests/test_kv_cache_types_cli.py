"""-ctk / -ctv (--cache-type-k / --cache-type-v), as llama.cpp spells them, on
every command that makes a context: run, chat, perplexity (the shared flags),
bench and serve. A bad or missing value is a usage error (exit 2) whose one
line names the flag, the value and the accepted names; good values run."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from conftest import run_trinity  # noqa: E402

COMMANDS = ["run", "chat", "perplexity", "bench", "serve"]
FLAGS = ["-ctk", "-ctv", "--cache-type-k", "--cache-type-v"]
ACCEPTED = "f16, q8_0, q4_0, tq2_32"


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("flag", FLAGS)
@pytest.mark.parametrize("value", ["q5_1", "Q8_0", "f32", "", "ternary"])
def test_bad_value_names_flag_and_choices(cmd, flag, value):
    # the model is never loaded: the flags are checked first
    p = run_trinity(cmd, "-m", "missing.gguf", flag, value, timeout=60)
    assert p.returncode == 2, (p.returncode, p.stderr)
    line = p.stderr.strip().splitlines()[0]
    assert f"trinity {cmd}: {flag} expects one of {ACCEPTED}, got '{value}'" == line, line


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("flag", ["-ctk", "--cache-type-v"])
def test_missing_value(cmd, flag):
    p = run_trinity(cmd, "-m", "missing.gguf", flag, timeout=60)
    assert p.returncode == 2
    assert flag in p.stderr and "needs a value" in p.stderr, p.stderr


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_lists_the_flags(cmd):
    p = run_trinity(cmd, "--help", timeout=60)
    assert p.returncode == 0
    assert "-ctk" in p.stdout and "-ctv" in p.stdout and "tq2_32" in p.stdout, p.stdout
    assert "--no-kv-rot" in p.stdout, p.stdout


def test_each_type_generates_on_the_real_model(model_path):
    """Every type runs end to end; q8_0 stays close to f16 (the same first
    greedy tokens on a plain prompt), the others at least produce text."""
    outs = {}
    for t in ["f16", "q8_0", "q4_0", "tq2_32"]:
        p = run_trinity("run", "-m", model_path, "-p", "The capital of France is", "-n", "8", "--temp", "0",
                        "-t", "2", "-ctk", t, "-ctv", t, timeout=120)
        assert p.returncode == 0, p.stderr
        outs[t] = p.stdout
        assert p.stdout.strip(), t
    assert outs["q8_0"].split()[:3] == outs["f16"].split()[:3], outs
    # --no-kv-rot: the quantized cache unrotated (llama.cpp's LLAMA_ATTN_ROT_DISABLE=1), still close to f16
    p = run_trinity("run", "-m", model_path, "-p", "The capital of France is", "-n", "8", "--temp", "0",
                    "-t", "2", "-ctk", "q8_0", "-ctv", "q8_0", "--no-kv-rot", timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:3] == outs["f16"].split()[:3], (p.stdout, outs)
    p = run_trinity("bench", "-m", model_path, "-p", "0", "-n", "4", "-r", "1", "-t", "2", "--no-bw", "--json",
                    "-ctk", "q4_0", "-ctv", "tq2_32", "--no-kv-rot", timeout=120)
    assert p.returncode == 0, p.stderr
    assert '"type_k": "Q4_0", "type_v": "TQ2_32"' in p.stdout, p.stdout
