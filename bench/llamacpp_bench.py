"""The llama.cpp side of bench/compare.py: the same tests as `trinity bench`
(pp<P>, tg<N>, tg<N>@d<D> on random token ids, one warm-up then R timed
repetitions), through llama-cpp-python's low-level API so that Python adds
nothing per token but one ctypes call. Prints one JSON object per test, the
same fields `trinity bench --json` prints."""
import argparse
import ctypes
import json
import os
import random
import statistics
import sys
import time

import llama_cpp as L


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-d", type=int, default=0)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-t", type=int, default=os.cpu_count())
    ap.add_argument("-ctk", default="f16", help="KV cache type of K (llama-bench's names: f16, q8_0, q4_0)")
    ap.add_argument("-ctv", default="f16", help="KV cache type of V")
    ap.add_argument("-fa", type=int, default=-1, help="flash attention: 1 on, 0 off, -1 llama.cpp's auto (default)")
    a = ap.parse_args()
    types = {"f32": L.GGML_TYPE_F32, "f16": L.GGML_TYPE_F16, "q8_0": L.GGML_TYPE_Q8_0, "q4_0": L.GGML_TYPE_Q4_0}

    quiet = L.llama_log_callback(lambda level, text, user: None)  # keep a reference: C holds it
    L.llama_log_set(quiet, ctypes.c_void_p(0))
    L.llama_backend_init()
    t0 = time.perf_counter()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        print(f"llamacpp_bench: llama.cpp could not load {a.model}", file=sys.stderr)
        return 1
    load_s = time.perf_counter() - t0
    rss = rss_kib()
    n_batch = a.p if 0 < a.p < 512 else 512
    cp = L.llama_context_default_params()
    cp.n_ctx = max(a.p, a.d + a.n) + 1
    cp.n_batch = n_batch
    cp.n_ubatch = n_batch
    cp.n_threads = a.t
    cp.n_threads_batch = a.t
    cp.no_perf = True
    cp.type_k = types[a.ctk]
    cp.type_v = types[a.ctv]
    cp.flash_attn_type = a.fa
    ctx = L.llama_init_from_model(model, cp)
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(n_batch, 0, 1)
    rng = random.Random(1234)

    def run(pos: int, n: int, single: bool) -> float:
        t = time.perf_counter()
        done = 0
        while done < n:
            k = 1 if single else min(n - done, n_batch)
            for i in range(k):
                batch.token[i] = rng.randrange(n_vocab)
                batch.pos[i] = pos + done + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1 if i == k - 1 else 0
            batch.n_tokens = k
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            done += k
        return time.perf_counter() - t

    tests = []
    if a.p > 0:
        tests.append((f"pp{a.p}", a.p, 0, False))
    if a.n > 0:
        tests.append((f"tg{a.n}", a.n, 0, True))
    if a.n > 0 and a.d > 0:
        tests.append((f"tg{a.n}@d{a.d}", a.n, a.d, True))
    size = os.path.getsize(a.model)
    for name, n_tok, depth, gen in tests:
        rates = []
        # the depth is filled once per test; each repetition drops what the
        # previous one added after it (trinity bench does the same)
        L.llama_memory_clear(mem, True)
        if depth:
            run(0, depth, False)
        for r in range(-1, a.r):
            if not L.llama_memory_seq_rm(mem, 0, depth, -1):
                # a recurrent model (Mamba) cannot drop a suffix: read the depth again
                L.llama_memory_clear(mem, True)
                if depth:
                    run(0, depth, False)
            s = run(depth, n_tok, gen)
            if r >= 0:
                rates.append(n_tok / s)
        print(json.dumps({
            "engine": "llama.cpp", "test": name, "threads": a.t, "n_tokens": n_tok, "depth": depth,
            "reps": a.r, "tps_mean": statistics.mean(rates),
            "tps_sd": statistics.stdev(rates) if len(rates) > 1 else 0.0,
            "load_s": load_s, "rss_kib": rss, "file_bytes": size, "type_k": a.ctk, "type_v": a.ctv,
        }), flush=True)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
