"""KV memory in use against the tokens actually held, at 8 concurrent streams
of mixed lengths: `trinity serve` samples its own /metrics while the streams
run (trinity_kv_blocks_used x block tokens / trinity_kv_tokens_held), and the
figure is set against what per-slot regions would hold for the same streams
(every slot owns ctx-per-slot positions whatever it uses).

    python3 bench/kv_memory.py [--model PATH] [--trinity PATH] [--ctx 16384] [--streams 8] [--kv-block N]

Only 127.0.0.1; every request has a timeout; the run is bounded."""
import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"


def metrics(port):
    c = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
    finally:
        c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def complete(port, prompt, n):
    c = http.client.HTTPConnection(HOST, port, timeout=300)
    try:
        body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True})
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        return json.loads(c.getresponse().read())
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--trinity", default=os.path.join(ROOT, "build", "trinity"))
    ap.add_argument("--ctx", type=int, default=16384)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--kv-block", type=int, default=0, help="tokens per KV block (0: the server's default)")
    a = ap.parse_args()
    text = open("/usr/share/common-licenses/GPL-3").read().split()
    proc = subprocess.Popen([a.trinity, "serve", "-m", a.model, "--port", "0", "-t", "2", "--parallel",
                             str(a.streams), "-c", str(a.ctx), "-q",
                             *(["--kv-block", str(a.kv_block)] if a.kv_block else [])], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    port = None
    try:
        deadline = time.monotonic() + 120
        while port is None or "ready" not in line:
            line = proc.stdout.readline()
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else port
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("trinity serve did not start")
        # mixed lengths: prompts of 40..400 words, 32..160 generated tokens
        jobs = [(" ".join(text[i * 500:i * 500 + 40 + 360 * i // max(1, a.streams - 1)]), 32 + 128 * (i % 3) // 2)
                for i in range(a.streams)]
        threads = [threading.Thread(target=complete, args=(port, p, n)) for p, n in jobs]
        for t in threads:
            t.start()
        samples = []
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline + 600:
            m = metrics(port)
            held = m.get("trinity_kv_tokens_held", 0)
            if held > 0:
                samples.append((m["trinity_kv_blocks_used"] * m["trinity_kv_block_tokens"], held,
                                m["trinity_requests_in_flight"]))
            time.sleep(0.1)
        for t in threads:
            t.join(timeout=300)
        full = [s for s in samples if s[2] == a.streams]
        use = full or samples
        ratio = sum(s[0] for s in use) / sum(s[1] for s in use)
        worst = max(s[0] / s[1] for s in use)
        per_slot = a.ctx // a.streams
        regions = sum(per_slot * s[2] / s[1] for s in use) / len(use)
        print(f"{len(use)} samples with {a.streams if full else 'some'} streams running: slots in used blocks / "
              f"tokens held = {ratio:.3f} (worst sample {worst:.3f}); per-slot regions of {per_slot} would hold "
              f"{regions:.1f}x the tokens")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
