"""Speculative decoding through the CLI: `trinity run` and `trinity chat`
with each drafter print exactly what they print without it (greedy, and
sampled with a seed), report what speculation did, and refuse bad settings
and a draft model whose vocabulary differs, naming the problem."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from conftest import run_trinity  # noqa: E402

GROUNDED = ("def area(width, height):\n    return width * height\n\n"
            "def perimeter(width, height):\n    return 2 * (width + height)\n\n"
            "# The same two functions again:\ndef area(width, height):\n")


def run(model, *args):
    p = run_trinity("run", "-m", model, "-p", GROUNDED, "-n", 40, "-t", 2, *args)
    assert p.returncode == 0, p.stderr
    return p


@pytest.mark.parametrize("sampling", [["--temp", "0"], ["--temp", "0.8", "--seed", "5"]])
def test_run_output_is_the_same_with_every_drafter(model_path, sampling):
    plain = run(model_path, *sampling).stdout
    for spec in (["--spec", "ngram"], ["--spec", "lookahead", "--draft-max", "5"],
                 ["--spec", "draft", "-md", model_path, "--draft-max", "4"]):
        p = run(model_path, *sampling, *spec)
        assert p.stdout == plain, spec
        m = re.search(r"speculation \((\w+)\): (\d+) guesses verified, (\d+) accepted", p.stderr)
        assert m and m.group(1) == spec[1], p.stderr
        assert int(m.group(3)) <= int(m.group(2))
        if sampling[1] == "0":
            assert int(m.group(3)) > 0, (spec, p.stderr)  # the code repeats: guesses are accepted


def test_chat_output_is_the_same_with_speculation(model_path):
    turns = "List the days of the week.\nNow list them again, in the same order.\n"
    args = ["chat", "-m", model_path, "-n", 24, "--temp", "0", "-t", 2, "--chat-format", "gemma"]
    plain = run_trinity(*args, input=turns)
    spec = run_trinity(*args, "--spec", "ngram", input=turns)
    assert plain.returncode == 0 and spec.returncode == 0, plain.stderr + spec.stderr
    assert spec.stdout == plain.stdout and plain.stdout.strip()
    assert "speculation (ngram)" in spec.stderr


def test_bad_settings_are_refused(model_path, tmp_path):
    for args, needle in ((["--spec", "eagle"], "--spec expects"), (["--draft-max", "0"], "--draft-max"),
                         (["--draft-max", "65"], "--draft-max"), (["--spec", "draft"], "needs a draft model"),
                         (["--spec", "ngram", "--draft-max", "2", "--draft-min", "3"], "draft-min"),
                         (["--spec", "draft", "-md", str(tmp_path / "none.gguf")], "none.gguf")):
        p = run_trinity("run", "-m", model_path, "-p", "Hi", "-n", 2, *args)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
    # A draft model with another vocabulary is refused, naming both models.
    other = str(tmp_path / "other-vocab.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "gemma3", "--type",
                    "Q8_0", "-o", other], check=True, capture_output=True)
    p = run_trinity("run", "-m", model_path, "-md", other, "--spec", "draft", "-p", "Hi", "-n", 2)
    assert p.returncode != 0 and "vocabulary" in p.stderr and "other-vocab" in p.stderr, p.stderr


def test_bench_spec_times_both_and_checks_the_tokens(model_path, tmp_path):
    """`trinity bench --spec`: plain and speculative generation after the same text, timed in one run; the
    speculative tokens must be plain decoding's (the bench compares them and fails otherwise), and the guesses
    on text that repeats itself are mostly accepted."""
    import json
    f = tmp_path / "prompt.txt"
    f.write_text(GROUNDED)
    for kind in ("ngram", "lookahead"):
        p = run_trinity("bench", "-m", model_path, "-p", 0, "-n", 24, "-r", 1, "-t", 2, "--no-bw", "--json",
                        "--spec", kind, "-f", str(f))
        assert p.returncode == 0, p.stderr
        rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
        spec = [r for r in rows if r.get("spec")]
        assert len(spec) == 1 and spec[0]["spec"] == kind, p.stdout
        s = spec[0]
        assert s["same_tokens"] is True
        assert s["tps_plain_mean"] > 0 and s["tps_spec_mean"] > 0
        assert 0 <= s["accepted"] <= s["drafted"]
        if kind == "ngram":
            assert s["accepted"] > 0 and s["tokens_per_step"] > 1, s
    for args, needle in ((["--spec", "ngram"], "-f FILE"), (["-f", str(f)], "give --spec"),
                         (["--spec", "ngram", "-f", str(f), "-n", 0], "-n must be above 0"),
                         (["--spec", "ngram", "-f", str(tmp_path / "missing.txt")], "missing.txt")):
        p = run_trinity("bench", "-m", model_path, "-r", 1, "-p", 0, "--no-bw", *args)
        assert p.returncode != 0 and needle in p.stderr, (args, p.stderr)
