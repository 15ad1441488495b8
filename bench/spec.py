"""Speculative decoding, measured: Trinity's drafters against plain decoding
and against llama.cpp's lossless options, on the prompts of
bench/spec_prompts.json (each marked grounded or open).

    python3 bench/spec.py [--rounds 2] [--max-tokens 128] [-t 2] [--quick]

Both engines serve over HTTP on loopback with the same model and threads:
one `trinity serve` (speculation chosen per request: "speculative": false,
{"type": "ngram"}, {"type": "lookahead"}), and llama-server (built once from
the pinned llama-cpp-python's source by bench/llama_server.py) plain and with
each of its model-free speculative types (--spec-type ngram-simple,
ngram-mod, ngram-map-k), one process each.

1. One stream. For every prompt, every configuration in turn, `rounds`
   times (interleaved): a streamed completion at temperature 0 with
   max_tokens tokens (ignore_eos). Generation speed = tokens after the first
   / time from the first to the last; tokens per step and acceptance from
   Trinity's usage.completion_tokens_details (accepted and rejected guesses)
   and llama-server's timings (draft_n, draft_n_accepted). Every Trinity
   output must equal Trinity's plain output, at temperature 0 and at 0.8
   with a seed (checked; a difference fails the run).
2. Eight streams at once (the eight prompts together, --parallel 8): the
   aggregate tokens/s with speculation off and on, each engine, over
   --stream-rounds rounds (Trinity's three configurations in alternating
   order), with Trinity's on ÷ off in every round and the lowest of them.

--streams-only: Trinity alone, the identity checks and part 2 (no llama-server
to build or run, no part 1).

Prints markdown tables (ratios to plain decoding and to llama.cpp's best
option per prompt) and writes every figure to build/bench-spec.json."""
import argparse
import datetime
import http.client
import json
import math
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_server  # noqa: E402  (bench/llama_server.py)
import serve  # noqa: E402  (bench/serve.py: Server)
from compare import cpu_name  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
TRINITY_CONFIGS = {"plain": False, "ngram": {"type": "ngram"}, "lookahead": {"type": "lookahead"}}
LLAMA_TYPES = ["ngram-simple", "ngram-mod", "ngram-map-k"]


def complete(port: int, body: dict, timeout: float = 600) -> dict:
    """A streamed POST /v1/completions; its text, tokens, timing and speculation counts."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read(2000).decode(errors='replace')}")
        first = last = None
        pieces, usage, timings = [], None, None
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            ev = json.loads(payload)
            if isinstance(ev.get("usage"), dict):
                usage = ev["usage"]
            if isinstance(ev.get("timings"), dict):
                timings = ev["timings"]
            for ch in ev.get("choices") or []:
                if ch.get("text"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    pieces.append(ch["text"])
        end = time.perf_counter()
    finally:
        conn.close()
    n = (usage or {}).get("completion_tokens") or len(pieces)
    out = {"text": "".join(pieces), "n": n, "t0": t0, "t_end": end, "first": first, "last": last,
           "tps": (n - 1) / (last - first) if first and last and last > first and n > 1 else None}
    det = (usage or {}).get("completion_tokens_details") or {}
    if "accepted_prediction_tokens" in det:
        acc, rej = det["accepted_prediction_tokens"], det.get("rejected_prediction_tokens", 0)
        out.update(accepted=acc, drafted=acc + rej)
    elif timings and "draft_n" in timings:
        out.update(accepted=timings.get("draft_n_accepted", 0), drafted=timings.get("draft_n", 0))
    if "accepted" in out:
        steps = n - out["accepted"]
        out["tokens_per_step"] = n / steps if steps > 0 else None
        out["acceptance"] = out["accepted"] / out["drafted"] if out["drafted"] else None
    return out


def gmean(xs: list):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def fmt(x, digits=2, suffix=""):
    return "-" if x is None else f"{x:.{digits}f}{suffix}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--trinity", default=os.path.join(ROOT, "build", "trinity"))
    ap.add_argument("--prompts", default=os.path.join(ROOT, "bench", "spec_prompts.json"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--streams", type=int, default=8, help="concurrent streams of part 2 (0: skip it)")
    ap.add_argument("--stream-rounds", type=int, default=4,
                    help="rounds of part 2 (each: Trinity off, ngram, lookahead in alternating order, then llama-server)")
    ap.add_argument("--quick", action="store_true", help="one round, 48 tokens, no llama-server types but one")
    ap.add_argument("--streams-only", action="store_true",
                    help="Trinity alone: the identity checks and part 2 (no llama-server, no part 1)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench-spec.json"))
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.max_tokens, a.stream_rounds = 1, 48, 1
    llama_types = [] if a.streams_only else LLAMA_TYPES[:1] if a.quick else LLAMA_TYPES
    if a.streams_only:
        a.rounds = 0
    prompts = json.load(open(a.prompts))["prompts"]
    llama_bin = None if a.streams_only else llama_server.ensure()
    cfg = {"trinity": a.trinity, "llama_server": llama_bin, "model": a.model, "ctx": 8192, "threads": a.threads,
           "trinity_per_slot": False, "trinity_args": [], "llama_args": []}
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    log_path = os.path.join(ROOT, "build", "bench-spec-servers.log")
    par = max(1, a.streams)
    servers = {"trinity": serve.Server("trinity", cfg, par, log_path)}
    if not a.streams_only:
        servers["llama:plain"] = serve.Server("llama", cfg, par, log_path)
    for t in llama_types:
        c = dict(cfg, llama_args=["--spec-type", t])
        servers[f"llama:{t}"] = serve.Server("llama", c, par, log_path)
    record = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "threads": a.threads,
              "max_tokens": a.max_tokens, "rounds": a.rounds, "model": os.path.basename(a.model),
              "one_stream": {}, "streams": {}}
    try:
        for s in servers.values():
            s.start()
        base = {"max_tokens": a.max_tokens, "temperature": 0, "ignore_eos": True}
        configs = [("trinity", k) for k in TRINITY_CONFIGS] + \
            ([] if a.streams_only else [("llama:plain", "plain")] + [(f"llama:{t}", t) for t in llama_types])

        def run_one(server_key, conf, prompt, extra=None):
            body = dict(base, prompt=prompt, **(extra or {}))
            if server_key == "trinity":
                body["speculative"] = TRINITY_CONFIGS[conf]
            return complete(servers[server_key].port, body)

        # Warm-up (page the model in, fill caches) and the identity checks.
        failures = []
        for p in prompts:
            for sk, conf in configs:
                run_one(sk, conf, p["prompt"], {"max_tokens": 8})
            for temp_kw in ({}, {"temperature": 0.8, "seed": 42}):
                want = run_one("trinity", "plain", p["prompt"], temp_kw)["text"]
                for conf in ("ngram", "lookahead"):
                    got = run_one("trinity", conf, p["prompt"], temp_kw)["text"]
                    if got != want:
                        failures.append(f"{p['name']} {conf} {temp_kw or 'greedy'}")
        if failures:
            print("speculation changed the output:", ", ".join(failures), file=sys.stderr)
            return 1
        print(f"identity: every Trinity drafter gave plain decoding's text on all {len(prompts)} prompts, "
              "greedy and at temperature 0.8 with a seed", file=sys.stderr)

        # 1. One stream, interleaved rounds.
        runs = {(p["name"], sk, conf): [] for p in prompts for sk, conf in configs}
        for r in range(a.rounds):
            for p in prompts:
                for sk, conf in configs:
                    runs[(p["name"], sk, conf)].append(run_one(sk, conf, p["prompt"]))
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

        def stat(name, sk, conf, key):
            xs = [x.get(key) for x in runs[(name, sk, conf)] if x.get(key) is not None]
            return statistics.mean(xs) if xs else None

        rows, summary = [], {"grounded": {}, "open": {}}
        for p in prompts if a.rounds else []:
            nm = p["name"]
            plain = stat(nm, "trinity", "plain", "tps")
            llama_plain = stat(nm, "llama:plain", "plain", "tps")
            llama_best = max([stat(nm, f"llama:{t}", t, "tps") or 0 for t in llama_types] + [llama_plain or 0])
            entry = {"kind": p["kind"], "trinity_plain_tps": plain, "llama_plain_tps": llama_plain,
                     "llama_best_tps": llama_best}
            for conf in ("ngram", "lookahead"):
                entry[conf] = {k: stat(nm, "trinity", conf, k) for k in ("tps", "tokens_per_step", "acceptance")}
            for t in llama_types:
                entry[f"llama_{t}"] = {k: stat(nm, f"llama:{t}", t, k) for k in ("tps", "tokens_per_step", "acceptance")}
            record["one_stream"][nm] = entry
            best = max(entry["ngram"]["tps"] or 0, entry["lookahead"]["tps"] or 0)
            for key, val in (("ngram_vs_plain", (entry["ngram"]["tps"] or 0) / plain),
                             ("lookahead_vs_plain", (entry["lookahead"]["tps"] or 0) / plain),
                             ("best_vs_plain", best / plain), ("best_vs_llama_best", best / llama_best)):
                summary[p["kind"]].setdefault(key, []).append(val)
            rows.append(f"| {nm} | {p['kind']} | {fmt(plain, 1)} | {fmt(entry['ngram']['tps'], 1)} "
                        f"({fmt(entry['ngram']['tps'] / plain)}×, {fmt(entry['ngram']['tokens_per_step'])}/step, "
                        f"{fmt((entry['ngram']['acceptance'] or 0) * 100, 0)} %) | "
                        f"{fmt(entry['lookahead']['tps'], 1)} ({fmt(entry['lookahead']['tps'] / plain)}×, "
                        f"{fmt(entry['lookahead']['tokens_per_step'])}/step) | {fmt(llama_plain, 1)} | "
                        + " | ".join(f"{fmt(entry[f'llama_{t}']['tps'], 1)} "
                                     f"({fmt(entry[f'llama_{t}']['tokens_per_step'])}/step)" for t in llama_types)
                        + f" | {fmt(best / llama_best)}× |")
        record["summary"] = {k: {m: gmean(v) for m, v in d.items()} for k, d in summary.items()}

        # 2. Concurrent streams: aggregate tokens/s, speculation off and on.
        if a.streams:
            plist = [prompts[i % len(prompts)]["prompt"] for i in range(a.streams)]
            pairs = [("trinity", "plain"), ("trinity", "ngram"), ("trinity", "lookahead")] + \
                ([] if a.streams_only else [("llama:plain", "plain")] + [(f"llama:{t}", t) for t in llama_types])
            agg = {pk: [] for pk in pairs}
            for r in range(a.stream_rounds):
                # Trinity's three alternate their order from round to round (one server
                # serves all three), so a drift of the machine does not favour one.
                order = pairs[:3] if r % 2 == 0 else pairs[2::-1]
                for sk, conf in order + pairs[3:]:
                    res = [None] * a.streams

                    def worker(i, sk=sk, conf=conf, res=res):
                        res[i] = run_one(sk, conf, plist[i])

                    th = [threading.Thread(target=worker, args=(i,)) for i in range(a.streams)]
                    for t in th:
                        t.start()
                    for t in th:
                        t.join()
                    t0 = min(x["t0"] for x in res)
                    t1 = max(x["t_end"] for x in res)
                    agg[(sk, conf)].append(sum(x["n"] for x in res) / (t1 - t0))
            record["streams"] = {f"{sk} {conf}": statistics.mean(v) for (sk, conf), v in agg.items()}
            # on ÷ off within each round: the machine's drift between rounds cancels
            record["streams_round_ratios"] = {
                conf: [on / off for on, off in zip(agg[("trinity", conf)], agg[("trinity", "plain")])]
                for conf in ("ngram", "lookahead")}
    finally:
        for s in servers.values():
            s.stop()

    llama_hdr = " | ".join(f"llama.cpp {t}" for t in llama_types)
    print(f"\n{record['cpu']}, {a.threads} threads, {record['model']}, {a.max_tokens} tokens, temperature 0, "
          f"mean of {a.rounds} rounds, {record['date']}\n")
    print(f"| prompt | kind | Trinity plain tok/s | Trinity ngram | Trinity lookahead | llama.cpp plain | {llama_hdr} "
          "| Trinity best ÷ llama.cpp best |")
    print("|---|---|---|---|---|---|" + "---|" * len(llama_types) + "---|")
    print("\n".join(rows) if rows else "| (part 1 skipped: --streams-only) |")
    for kind, d in record["summary"].items():
        if d:
            print(f"\n{kind} (geometric mean): ngram {fmt(d['ngram_vs_plain'])}× plain, lookahead "
                  f"{fmt(d['lookahead_vs_plain'])}× plain, best {fmt(d['best_vs_plain'])}× plain, "
                  f"{fmt(d['best_vs_llama_best'])}× llama.cpp's best")
    if record["streams"]:
        s = record["streams"]
        print(f"\n{a.streams} concurrent streams, aggregate tok/s: " +
              ", ".join(f"{k} {v:.1f}" for k, v in s.items()))
        print(f"Trinity ngram ÷ off: {s['trinity ngram'] / s['trinity plain']:.2f}×, lookahead ÷ off: "
              f"{s['trinity lookahead'] / s['trinity plain']:.2f}×" +
              (f"; llama.cpp {llama_types[0]} ÷ off: "
               f"{s['llama:' + llama_types[0] + ' ' + llama_types[0]] / s['llama:plain plain']:.2f}×" if llama_types else ""))
        for conf, rs in record["streams_round_ratios"].items():
            print(f"Trinity {conf} ÷ off in each of the {len(rs)} rounds: " + ", ".join(f"{x:.2f}×" for x in rs) +
                  f" (lowest {min(rs):.2f}×)")
    with open(a.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"\n(figures in {a.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
