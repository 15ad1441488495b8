"""`trinity bench` and the llama.cpp side of bench/compare.py measure the
same tests on the same file and report them in the same JSON fields, so the
ratios compare like with like. No speed is asserted: only that the runs
happen, name their tests alike, and count tokens/s as positive numbers."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from conftest import run_trinity  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bench") / "llama-q8_0.gguf")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "llama", "--type",
                    "Q8_0", "-o", path], check=True, capture_output=True)
    return path


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_bench_json_matches_llamacpp_side(tiny):
    args = ["-p", "16", "-n", "4", "-d", "8", "-r", "2", "-t", "1"]
    p = run_trinity("bench", "-m", tiny, "--json", "--no-bw", *args)
    assert p.returncode == 0, p.stderr
    ours = json_lines(p.stdout)
    q = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "llamacpp_bench.py"), "-m", tiny, *args],
                       capture_output=True, text=True, timeout=300)
    assert q.returncode == 0, q.stderr
    theirs = json_lines(q.stdout)
    assert [o["test"] for o in ours] == ["pp16", "tg4", "tg4@d8"]
    assert [o["test"] for o in theirs] == [o["test"] for o in ours]
    for o in ours + theirs:
        assert o["tps_mean"] > 0 and o["reps"] == 2 and o["threads"] == 1
    assert [o["depth"] for o in ours] == [0, 0, 8]


def test_bench_depth_past_the_trained_context(tiny):
    """-d past the model's trained context (read with the gguf package) is measured, as llama-bench measures it:
    a speed test, not a claim about quality there."""
    from gguf import GGUFReader
    f = GGUFReader(tiny).fields["llama.context_length"]
    ctx = int(f.parts[f.data[0]][0])
    p = run_trinity("bench", "-m", tiny, "--json", "--no-bw", "-p", "0", "-n", "2", "-d", ctx, "-r", "1", "-t", "1")
    assert p.returncode == 0, p.stderr
    assert [(o["test"], o["depth"]) for o in json_lines(p.stdout)] == [("tg2", 0), (f"tg2@d{ctx}", ctx)]
    assert all(o["tps_mean"] > 0 for o in json_lines(p.stdout))


def test_bench_table_and_bandwidth_share(tiny):
    p = run_trinity("bench", "-m", tiny, "-p", "0", "-n", "4", "-r", "1", "-t", "1")
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("|") and "tg4" in line]
    assert len(rows) == 1
    share = rows[0].split("|")[-2].strip()
    assert float(share) > 0  # a share of the measured bandwidth ceiling
    assert "read bandwidth" in p.stderr


@pytest.mark.parametrize("args,needle", [
    ([], "no model"),
    (["-m", "x.gguf", "-r", "0"], "-r"),
    (["-m", "x.gguf", "-p", "zero"], "-p"),
    (["-m", "x.gguf", "-p", "0", "-n", "0"], "nothing to measure"),
    (["-m", "x.gguf", "--frobnicate"], "unknown option"),
])
def test_bench_usage_errors(args, needle):
    p = run_trinity("bench", *args)
    assert p.returncode == 2
    assert needle in p.stderr


def test_bench_missing_model_names_file(tmp_path):
    p = run_trinity("bench", "-m", str(tmp_path / "absent.gguf"), "-p", "4", "-n", "0")
    assert p.returncode == 1
    assert "absent.gguf" in p.stderr and len(p.stderr.strip().splitlines()) == 1
