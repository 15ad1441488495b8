"""`trinity tokenize`: exit codes and messages (0 ok, 1 runtime error naming
the file/field, 2 usage error), text from the argument vs from a file."""
import os
import subprocess

import gguf


def run(bin_path, *args):
    return subprocess.run([bin_path, "tokenize", *args], capture_output=True, timeout=120)


def test_usage_errors(trinity_bin, model_path):
    assert run(trinity_bin).returncode == 2
    assert run(trinity_bin, "-m", model_path).returncode == 2  # no text
    assert run(trinity_bin, "-m", model_path, "--bogus", "x").returncode == 2
    assert run(trinity_bin, "-m", model_path, "a", "b").returncode == 2
    assert run(trinity_bin, "-m", model_path, "-f", "/nonexistent", "text").returncode == 2
    p = run(trinity_bin, "--help")
    assert p.returncode == 0 and b"--no-special" in p.stdout


def test_runtime_errors_name_the_file_and_field(trinity_bin, model_path, tmp_path):
    p = run(trinity_bin, "-m", "/nonexistent.gguf", "hi")
    assert p.returncode == 1 and b"/nonexistent.gguf" in p.stderr
    p = run(trinity_bin, "-m", model_path, "-f", "/nonexistent.txt")
    assert p.returncode == 1 and b"/nonexistent.txt" in p.stderr
    path = str(tmp_path / "novocab.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    p = run(trinity_bin, "-m", path, "hi")
    assert p.returncode == 1
    assert b"tokenizer.ggml.model is missing" in p.stderr and path.encode() in p.stderr
    assert p.stderr.count(b"\n") == 1


def test_argument_and_file_agree(trinity_bin, model_path, tmp_path):
    text = "Hello <start_of_turn> wörld\n\n  x"
    f = tmp_path / "t.txt"
    f.write_bytes(text.encode())
    a = run(trinity_bin, "-m", model_path, text)
    b = run(trinity_bin, "-m", model_path, "-f", str(f))
    assert a.returncode == 0 and a.stdout == b.stdout
    ids = a.stdout.split()
    assert len(ids) > 3 and a.stdout.endswith(b"\n") and a.stdout.count(b"\n") == 1
    c = run(trinity_bin, "--no-special", "-m", model_path, "--", text)
    assert c.returncode == 0 and c.stdout != a.stdout  # no BOS, <start_of_turn> as text
    assert run(trinity_bin, "-m", model_path, "").stdout.strip() == b"2"  # BOS only
