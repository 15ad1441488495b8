#!/usr/bin/env python3
"""Regenerate tests/fixtures/parity/*: llama.cpp's answers (through
llama-cpp-python) that tests/test_parity_llamacpp.py falls back to where
llama-cpp-python is not installed. Where it is, the test computes the same
answers live with the same code (tests/llamacpp_ref.py), so these files only
need regenerating after changing the generator or the reference's version.

  scripts/make_parity_fixtures.py            # everything (minutes: the real model's perplexity)
  scripts/make_parity_fixtures.py --random   # only the random-weight models
  scripts/make_parity_fixtures.py --real     # only the real model

For each architecture (llama, qwen2, qwen3, gemma3) and weight type (F32,
F16, Q8_0, Q4_K) a tiny random model is written by scripts/gen_model.py with
a fixed seed (its SHA-256 is stored: the test regenerates it and checks the
bytes are the same); its sequence (tests/llamacpp_ref.py: a 72-token prompt
of random ids, 128 greedy tokens) is stored with the prompt's rows whole and
the greedy rows as their top 16 and log-sum-exp.

For the real Gemma 3 270M Q4_K_M: the sequences of an 80-token prompt cut
from the GPL-3 and of "The capital of France is" (top 64 of each row, with
its log-sum-exp), and perplexity on /usr/share/common-licenses/GPL-3 computed
as llama-perplexity does (-c 512): on the first 2 windows (what the test
reruns) and on all.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import llamacpp_ref as R  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures", "parity")
REAL_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
ARCHES = ("llama", "qwen2", "qwen3", "gemma3")
TYPES = ("F32", "F16", "Q8_0", "Q4_K")


def gen_model(arch, wtype, path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", arch,
                          "--type", wtype, "--seed", str(R.SEED), "-o", path],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_random(tmp):
    meta, arrays = {}, {}
    for arch in ARCHES:
        for wtype in TYPES:
            key = f"{arch}_{wtype}"
            path = os.path.join(tmp, key + ".gguf")
            sha = gen_model(arch, wtype, path)
            s = R.random_model(path, key)
            p = len(s["prompt"])
            arrays[key + "_prompt"] = s["prompt"]
            arrays[key + "_logits"] = s["full"][:p]          # the prompt's rows, whole
            arrays[key + "_greedy"] = s["greedy"]
            arrays[key + "_greedy_ids"] = s["top_ids"][p:]   # the greedy rows' top 16
            arrays[key + "_greedy_vals"] = s["top_vals"][p:]
            arrays[key + "_lse"] = s["lse"]
            meta[key] = {"arch": arch, "type": wtype, "seed": R.SEED, "sha256": sha, "n_vocab": int(s["full"].shape[1])}
            print(f"{key}: sha256 {sha[:12]}, max|logit| {np.abs(s['full']).max():.2f}, greedy {s['greedy'][:6]}...",
                  file=sys.stderr)
    np.savez_compressed(os.path.join(OUT, "random_models.npz"), **arrays)
    return meta


def make_real():
    r = R.real_model(REAL_MODEL)
    arrays = {}
    for name in ("gpl", "capital"):
        for k in ("prompt", "greedy", "top_ids", "top_vals", "lse"):
            arrays[f"{name}_{k}"] = r[name][k]
    test = R.perplexity(REAL_MODEL, R.PPL_TEST_CHUNKS)
    print(f"real: PPL ({test[4]} chunks) = {test[0]:.4f} +/- {test[1]:.5f}", file=sys.stderr)
    whole = R.perplexity(REAL_MODEL)
    print(f"real: PPL ({whole[4]} chunks) = {whole[0]:.4f} +/- {whole[1]:.5f}", file=sys.stderr)
    np.savez_compressed(os.path.join(OUT, "gemma3_270m.npz"), **arrays)
    with open(REAL_MODEL, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "model": "models/gemma-3-270m-q4_k_m.gguf",
        "sha256": sha,
        "capital_prompt": R.CAPITAL,
        "capital_text": r["capital"]["text"],
        "ppl_file": R.GPL3,
        "ppl_ctx": R.PPL_CTX,
        "ppl_tokens": whole[3],
        "ppl_chunks_test": test[4],
        "ppl_test": test[0],
        "ppl_test_err": test[1],
        "ppl_chunks_all": whole[4],
        "ppl_all": whole[0],
        "ppl_all_err": whole[1],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random", action="store_true", help="only the random-weight models")
    ap.add_argument("--real", action="store_true", help="only the real model")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    meta_path = os.path.join(OUT, "meta.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    meta["llama_cpp_python"] = R.version()
    meta["n_prompt"], meta["n_greedy"], meta["n_ctx"] = R.N_PROMPT, R.N_GREEDY, R.N_CTX
    if not a.real:
        with tempfile.TemporaryDirectory() as tmp:
            meta["random"] = make_random(tmp)
    if not a.random:
        if not os.path.exists(REAL_MODEL):
            sys.exit(f"{REAL_MODEL} is missing: run scripts/setup.sh")
        meta["real"] = make_real()
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
