"""KV cache types, measured (docs/BENCHMARKS.md, "KV cache types"): perplexity
over the GPL-3 per K/V type pair at -c 512 and 2048 (Trinity; llama.cpp for the
pairs it has, through llama-cpp-python with llama-perplexity's method and flash
attention on, which llama.cpp needs for a quantized V), generation tokens/s at
depths per type (trinity bench against bench/llamacpp_bench.py, interleaved,
best of the rounds), and KV bytes per token. Prints markdown tables.

  python3 bench/kv_types.py -m models/gemma-3-270m-q4_k_m.gguf [--ppl] [--speed] [-d 2048 8192] [--rounds 2]

A quantized cache is stored Walsh-Hadamard-rotated by both engines by default;
--no-rot measures both without it (Trinity --no-kv-rot, llama.cpp
LLAMA_ATTN_ROT_DISABLE=1).
"""
import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
BIN = os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity"))
GPL3 = "/usr/share/common-licenses/GPL-3"
NO_ROT = []  # ["--no-kv-rot"] with --no-rot
PAIRS = [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "q4_0"), ("tq2_32", "tq2_32")]
LLAMA_TYPES = {"f16", "q8_0", "q4_0"}


def trinity_ppl(model, ctx, k, v):
    p = subprocess.run([BIN, "perplexity", "-m", model, "-f", GPL3, "-c", str(ctx), "-t", "2", "-ctk", k, "-ctv", v,
                        *NO_ROT], capture_output=True, text=True, check=True)
    m = re.search(r"PPL = ([0-9.]+) \+/- ([0-9.]+)", p.stdout)
    return float(m.group(1)), float(m.group(2))


def llama_ppl(model, ctx, k, v):
    import llama_cpp
    import llamacpp_ref
    types = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
    ppl, err, *_ = llamacpp_ref.perplexity(model, n_ctx=ctx, type_k=types[k], type_v=types[v], flash_attn=True)
    return ppl, err


def ppl_tables(model, ctxs):
    for ctx in ctxs:
        print(f"\n#### Perplexity, GPL-3, -c {ctx}\n")
        print("| K / V | Trinity | vs f16 | llama.cpp (FA on) | vs its f16 |")
        print("|---|---|---|---|---|")
        base = lbase = None
        for k, v in PAIRS:
            t, te = trinity_ppl(model, ctx, k, v)
            base = base or t
            cell_l, rel_l = "—", "—"
            if k in LLAMA_TYPES and v in LLAMA_TYPES:
                lp, le = llama_ppl(model, ctx, k, v)
                lbase = lbase or lp
                cell_l, rel_l = f"{lp:.4f} ± {le:.4f}", f"{(lp / lbase - 1) * 100:+.2f} %"
            print(f"| {k} / {v} | {t:.4f} ± {te:.4f} | {(t / base - 1) * 100:+.2f} % | {cell_l} | {rel_l} |", flush=True)


def trinity_tg(model, depth, t, n):
    p = subprocess.run([BIN, "bench", "-m", model, "-p", "0", "-n", str(n), "-d", str(depth), "-r", "3", "-t", "2",
                        "--no-bw", "--json", "-ctk", t, "-ctv", t, *NO_ROT], capture_output=True, text=True, check=True)
    return [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")][-1]["tps_mean"]


def llama_tg(model, depth, t, n):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "llamacpp_bench.py"), "-m", model, "-p", "0",
                        "-n", str(n), "-d", str(depth), "-r", "3", "-t", "2", "-ctk", t, "-ctv", t, "-fa", "1"],
                       capture_output=True, text=True, check=True)
    return [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")][-1]["tps_mean"]


def speed_table(model, depths, rounds, n):
    types = ["f16", "q8_0", "q4_0", "tq2_32"]
    best = {}
    for r in range(rounds):  # interleaved: every configuration once per round
        for d in depths:
            for t in types:
                for eng, fn in (("trinity", trinity_tg), ("llama", llama_tg)):
                    if eng == "llama" and t not in LLAMA_TYPES:
                        continue
                    tps = fn(model, d, t, n)
                    key = (eng, d, t)
                    best[key] = max(best.get(key, 0.0), tps)
                    print(f"round {r} {eng} d={d} {t}: {tps:.2f} t/s", file=sys.stderr, flush=True)
    print(f"\n#### Generation tg{n} at depth, 2 threads, best of {rounds} rounds (each the mean of 3 runs)\n")
    print("| depth | K = V type | Trinity t/s | vs Trinity f16 | llama.cpp t/s (FA on) | Trinity ÷ llama.cpp |")
    print("|---|---|---|---|---|---|")
    for d in depths:
        for t in types:
            tr = best[("trinity", d, t)]
            ll = best.get(("llama", d, t))
            print(f"| {d} | {t} | {tr:.2f} | {tr / best[('trinity', d, 'f16')]:.2f}× | "
                  f"{f'{ll:.2f}' if ll else '—'} | {f'{tr / ll:.2f}×' if ll else '—'} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--ppl", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("-c", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("-d", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-rot", action="store_true", help="quantized caches unrotated in both engines")
    a = ap.parse_args()
    if a.no_rot:
        NO_ROT.append("--no-kv-rot")
        os.environ["LLAMA_ATTN_ROT_DISABLE"] = "1"  # read when llama.cpp makes a cache (in this process and in
        # bench/llamacpp_bench.py, which inherits it)
    if a.ppl:
        ppl_tables(a.model, a.c)
    if a.speed:
        speed_table(a.model, a.d, a.rounds, a.n)


if __name__ == "__main__":
    main()
