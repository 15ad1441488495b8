#!/usr/bin/env python3
"""Regenerate tests/fixtures/parity/*: llama.cpp's answers (through
llama-cpp-python) that tests/test_parity_llamacpp.py compares Trinity with.

  scripts/make_parity_fixtures.py            # everything (minutes: the real model's perplexity)
  scripts/make_parity_fixtures.py --random   # only the random-weight models

For each architecture (llama, qwen2, qwen3, gemma3) and weight type (F32,
F16, Q8_0, Q4_K) a tiny random model is written by scripts/gen_model.py with
a fixed seed (its SHA-256 is stored: the test regenerates it and checks the
bytes are the same), a 72-token prompt of random ids (BOS first) is
evaluated with logits for every position, and 128 greedy tokens follow it.

For the real Gemma 3 270M Q4_K_M: the logits of a prompt cut from the GPL-3
(top 64 per position, with the log-sum-exp of the full row), 128 greedy
tokens, the greedy continuation text of "The capital of France is", and
perplexity on /usr/share/common-licenses/GPL-3 computed as llama-perplexity
does (-c 512): on the first 2 windows (what the test reruns) and on all.

llama.cpp runs with its default context settings for llama-cpp-python
(half-precision KV cache, no flash attention), 2 threads.
"""
import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "parity")
REAL_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
GPL3 = "/usr/share/common-licenses/GPL-3"

ARCHES = ("llama", "qwen2", "qwen3", "gemma3")
TYPES = ("F32", "F16", "Q8_0", "Q4_K")
SEED = 1234
N_PROMPT = 72
N_GREEDY = 128
N_CTX = 256
PPL_CTX = 512
PPL_TEST_CHUNKS = 2


def gen_model(arch, wtype, path):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", arch,
                          "--type", wtype, "--seed", str(SEED), "-o", path],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def random_prompt(n_vocab, bos, seed):
    rng = np.random.default_rng(seed)
    # ids past the control and byte tokens, so the prompt looks like text
    return [bos] + [int(t) for t in rng.integers(259, n_vocab, size=N_PROMPT - 1)]


def llama(path, n_ctx):
    import llama_cpp
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                           n_threads=2, seed=0)


def greedy(llm, prompt, n):
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        if llm.n_tokens >= llm.n_ctx():
            break
        llm.eval([t])
    return out


def ppl_llamacpp(llm, tokens, n_ctx, n_chunks, bos):
    """llama-perplexity's perplexity(): windows of n_ctx, first token -> BOS,
    score positions n_ctx/2 .. n_ctx-2 predicting the next token."""
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    for i in range(n_chunks):
        w = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        if bos is not None:
            w[0] = bos
        llm.reset()
        llm.eval(w)
        logits = np.asarray(llm.scores[:n_ctx], dtype=np.float32)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            mx = row.max()
            lse = math.log(float(np.exp((row - mx).astype(np.float64)).sum()))
            lp = float(row[w[j + 1]] - mx) - lse
            nll -= lp
            nll2 += lp * lp
            count += 1
    mean, mean2 = nll / count, nll2 / count
    ppl = math.exp(mean)
    var = mean2 - mean * mean
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 else 0.0
    return ppl, err, count


def make_random(tmp):
    meta = {}
    arrays = {}
    for arch in ARCHES:
        for wtype in TYPES:
            key = f"{arch}_{wtype}"
            path = os.path.join(tmp, key + ".gguf")
            sha = gen_model(arch, wtype, path)
            llm = llama(path, N_CTX)
            n_vocab = llm.n_vocab()
            prompt = random_prompt(n_vocab, llm.token_bos(), SEED + len(key))
            llm.reset()
            llm.eval(prompt)
            logits = np.asarray(llm.scores[:len(prompt)], dtype=np.float32)
            toks = greedy(llm, prompt, N_GREEDY)
            arrays[key + "_prompt"] = np.asarray(prompt, dtype=np.int32)
            arrays[key + "_logits"] = logits
            arrays[key + "_greedy"] = np.asarray(toks, dtype=np.int32)
            meta[key] = {"arch": arch, "type": wtype, "seed": SEED, "sha256": sha, "n_vocab": n_vocab}
            print(f"{key}: sha256 {sha[:12]}, max|logit| {np.abs(logits).max():.2f}, greedy {toks[:6]}...",
                  file=sys.stderr)
            del llm
    np.savez_compressed(os.path.join(OUT, "random_models.npz"), **arrays)
    return meta


def make_real():
    import llama_cpp  # noqa: F401
    llm = llama(REAL_MODEL, PPL_CTX)
    bos = llm.token_bos()
    text = open(GPL3, encoding="utf-8").read()
    prompt_text = text[:700]
    prompt = llm.tokenize(prompt_text.encode(), add_bos=True, special=False)[:N_PROMPT + 8]
    llm.reset()
    llm.eval(prompt)
    logits = np.asarray(llm.scores[:len(prompt)], dtype=np.float32)
    k = 64
    top_ids = np.argsort(-logits, axis=1)[:, :k].astype(np.int32)
    top_vals = np.take_along_axis(logits, top_ids, axis=1)
    mx = logits.max(axis=1, keepdims=True)
    lse = (mx[:, 0] + np.log(np.exp((logits - mx).astype(np.float64)).sum(axis=1))).astype(np.float32)
    toks = greedy(llm, prompt, N_GREEDY)

    capital = "The capital of France is"
    cap_prompt = llm.tokenize(capital.encode(), add_bos=True, special=True)
    cap_toks = greedy(llm, cap_prompt, 32)
    # detokenize like a stream: pieces up to (not including) an end-of-generation token
    cut = list(cap_toks)
    for i, t in enumerate(cap_toks):
        if llama_cpp_is_eog(llm, t):
            cut = cap_toks[:i]
            break
    cap_text = llm.detokenize(cut).decode("utf-8", errors="replace")

    all_toks = llm.tokenize(text.encode(), add_bos=True, special=False)
    n_chunks_all = len(all_toks) // PPL_CTX
    ppl4 = ppl_llamacpp(llm, all_toks, PPL_CTX, PPL_TEST_CHUNKS, bos)
    print(f"real: PPL ({PPL_TEST_CHUNKS} chunks) = {ppl4[0]:.4f} +/- {ppl4[1]:.5f}", file=sys.stderr)
    ppl_all = ppl_llamacpp(llm, all_toks, PPL_CTX, n_chunks_all, bos)
    print(f"real: PPL ({n_chunks_all} chunks) = {ppl_all[0]:.4f} +/- {ppl_all[1]:.5f}", file=sys.stderr)
    np.savez_compressed(os.path.join(OUT, "gemma3_270m.npz"), prompt=np.asarray(prompt, dtype=np.int32),
                        top_ids=top_ids, top_vals=top_vals, lse=lse, argmax=top_ids[:, 0].copy(),
                        greedy=np.asarray(toks, dtype=np.int32))
    with open(REAL_MODEL, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return {
        "model": "models/gemma-3-270m-q4_k_m.gguf",
        "sha256": sha,
        "capital_prompt": capital,
        "capital_tokens": [int(t) for t in cap_toks],
        "capital_text": cap_text,
        "ppl_file": GPL3,
        "ppl_ctx": PPL_CTX,
        "ppl_tokens": len(all_toks),
        "ppl_chunks_test": PPL_TEST_CHUNKS,
        "ppl_test": ppl4[0],
        "ppl_test_err": ppl4[1],
        "ppl_chunks_all": n_chunks_all,
        "ppl_all": ppl_all[0],
        "ppl_all_err": ppl_all[1],
    }


def llama_cpp_is_eog(llm, t):
    import llama_cpp
    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), t))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random", action="store_true", help="only the random-weight models")
    ap.add_argument("--real", action="store_true", help="only the real model")
    a = ap.parse_args()
    import llama_cpp
    os.makedirs(OUT, exist_ok=True)
    meta_path = os.path.join(OUT, "meta.json")
    meta = json.load(open(meta_path)) if os.path.exists(meta_path) else {}
    meta["llama_cpp_python"] = llama_cpp.__version__
    meta["n_prompt"], meta["n_greedy"], meta["n_ctx"] = N_PROMPT, N_GREEDY, N_CTX
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
