"""A long stream through a rolling KV cache (docs/BENCHMARKS.md, "Long stream:
attention sinks"): StreamingLLM's experiment on the machine's own texts.

The text is the licence texts under /usr/share/common-licenses, then the
copyright files under /usr/share/doc/*/ (paths sorted, each file once, by its
real path), concatenated until it has at least --tokens tokens. It goes through
`trinity perplexity` three ways:

  sinks     --kv-sinks 4 --kv-window 1024: the first 4 tokens stay, the latest
            >= 1024 slide (the paper's StreamingLLM)
  window    --kv-sinks 0 --kv-window 1024: a plain sliding window (the paper's
            "window attention", which falls apart once the first tokens go)
  plain     (--runs ...,plain) no shift at all: llama-perplexity's method at
            -c 1024 over the first --plain-chunks windows, each from an empty
            cache. The streams' first window is itself the no-shift boundary:
            nothing slides before 1,056 positions, and a plain cache stops there

and prints per-1024-token perplexity and resident memory (VmRSS of the
trinity process at the end of each window) as a markdown table, plus the
targets: last window within 10 % of the first windows, RSS flat (+-5 %) from
4k to the end.

  python3 bench/long_stream.py -m models/gemma-3-270m-q4_k_m.gguf [--tokens 50000] [-t 2] [--out results.json]
"""
import argparse
import glob
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity"))


def build_text(model, want_tokens, path):
    files, seen = [], set()
    for p in sorted(glob.glob("/usr/share/common-licenses/*")) + sorted(glob.glob("/usr/share/doc/*/copyright")):
        real = os.path.realpath(p)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        files.append(p)
    parts, n_chars = [], 0
    if not files:
        raise SystemExit("no texts under /usr/share/common-licenses or /usr/share/doc")
    # ~4.7 characters per token on these texts: read comfortably past the
    # target, then cut at a line end to just past it.
    for p in files:
        with open(p, "rb") as f:
            parts.append(f.read().decode("utf-8", "replace"))
        n_chars += len(parts[-1])
        if n_chars > want_tokens * 6:
            break
    full = "\n\n".join(parts)
    with open(path, "w", encoding="utf-8") as f:
        f.write(full)
    n_full = count_tokens(model, path)
    if n_full < want_tokens:
        raise SystemExit(f"the machine's texts give {n_full} tokens, fewer than {want_tokens}")
    ratio = 1.01
    while True:
        text = full[:full.rfind("\n", 0, int(len(full) * min(1.0, want_tokens * ratio / n_full))) + 1]
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        n = count_tokens(model, path)
        if n >= want_tokens or len(text) == len(full):
            return text, n, len(parts)
        ratio += 0.01


def count_tokens(model, path):
    out = subprocess.run([BIN, "tokenize", "-m", model, "-f", path], capture_output=True, text=True, check=True).stdout
    return len(out.split())


WINDOW_RE = re.compile(r"window (\d+): tokens (\d+)-(\d+) ppl ([0-9.]+|inf|nan) rss_kib (-?\d+)")


def stream(model, path, sinks, window, threads):
    cmd = [BIN, "perplexity", "-m", model, "-f", path, "--kv-sinks", str(sinks), "--kv-window", str(window),
           "--ppl-stride", "1024", "-t", str(threads)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    rows = [{"i": int(m[1]), "from": int(m[2]), "to": int(m[3]), "ppl": float(m[4]), "rss_kib": int(m[5])}
            for m in WINDOW_RE.finditer(p.stdout)]
    final = re.search(r"PPL = ([0-9.]+|inf|nan)", p.stdout)
    return {"cmd": " ".join(cmd), "windows": rows, "ppl": float(final.group(1)), "secs": time.time() - t0}


def plain(model, path, chunks, threads):
    cmd = [BIN, "perplexity", "-m", model, "-f", path, "-c", "1024", "--chunks", str(chunks), "-t", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {p.stderr[-2000:]}")
    per = [float(x) for x in re.findall(r"\[\d+\]([0-9.]+),", p.stderr)]
    final = re.search(r"PPL = ([0-9.]+)", p.stdout)
    return {"cmd": " ".join(cmd), "chunks": per, "ppl": float(final.group(1))}


def summary(run):
    w = [r for r in run["windows"] if r["to"] - r["from"] >= 1023]  # whole windows only
    if not w:
        return {"first4": 0, "last": 0, "last_vs_first": 0, "rss_4k_kib": 0, "rss_max_kib": 0, "rss_min_kib": 0,
                "rss_spread": 0}
    first = sum(r["ppl"] for r in w[:4]) / min(4, len(w))
    last = w[-1]["ppl"]
    rss = [r["rss_kib"] for r in w if r["to"] >= 4096]
    mid = rss[0] if rss else 0
    return {"first4": first, "last": last, "last_vs_first": last / first - 1,
            "rss_4k_kib": mid, "rss_max_kib": max(rss) if rss else 0, "rss_min_kib": min(rss) if rss else 0,
            "rss_spread": (max(rss) - min(rss)) / mid if rss and mid else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", "--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--tokens", type=int, default=50000)
    ap.add_argument("--plain-chunks", type=int, default=16)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--text", default="/tmp/trinity_long_stream.txt")
    ap.add_argument("--out", default=None, help="write the raw results as JSON")
    ap.add_argument("--runs", default="sinks,window", help="any of sinks,window,plain")
    a = ap.parse_args()
    text, n_tok, n_files = build_text(a.model, a.tokens, a.text)
    info = {"tokens": n_tok, "files": n_files, "chars": len(text),
            "sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "cpu": platform.processor() or platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"text: {n_files} files, {len(text)} characters, {n_tok} tokens (sha256 {info['sha256']})", file=sys.stderr)
    res = {"info": info}
    runs = a.runs.split(",")
    if "sinks" in runs:
        res["sinks"] = stream(a.model, a.text, 4, 1024, a.threads)
        print(f"sinks: {res['sinks']['ppl']} in {res['sinks']['secs']:.0f} s", file=sys.stderr)
    if "window" in runs:
        res["window"] = stream(a.model, a.text, 0, 1024, a.threads)
        print(f"window: {res['window']['ppl']} in {res['window']['secs']:.0f} s", file=sys.stderr)
    if "plain" in runs:
        res["plain"] = plain(a.model, a.text, a.plain_chunks, a.threads)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    print(f"{info['tokens']} tokens, {info['cpu']}, {info['date']}\n")
    streams = [k for k in ("sinks", "window") if k in res]
    if streams:
        print("| tokens | " + " | ".join(f"{k}: ppl | {k}: RSS MiB" for k in streams) + " |")
        print("|---|" + "---|---|" * len(streams))
        n = max(len(res[k]["windows"]) for k in streams)
        for i in range(n):
            cells = []
            for k in streams:
                w = res[k]["windows"]
                cells += [f"{w[i]['ppl']:.2f}", f"{w[i]['rss_kib'] / 1024:.1f}"] if i < len(w) else ["", ""]
            rng = next(res[k]["windows"][i] for k in streams if i < len(res[k]["windows"]))
            print(f"| {rng['from']}-{rng['to']} | " + " | ".join(cells) + " |")
        for k in streams:
            s = summary(res[k])
            print(f"\n{k}: whole stream PPL {res[k]['ppl']:.4f}; first 4 windows {s['first4']:.2f}, last "
                  f"{s['last']:.2f} ({100 * s['last_vs_first']:+.1f} %); RSS from 4k tokens "
                  f"{s['rss_min_kib'] / 1024:.1f}-{s['rss_max_kib'] / 1024:.1f} MiB ({100 * s['rss_spread']:.2f} % spread)")
    if "plain" in res:
        p = res["plain"]
        print(f"\nplain (-c 1024, no shift, {len(p['chunks'])} windows from an empty cache): PPL {p['ppl']:.4f}")


if __name__ == "__main__":
    main()
