"""Serving benchmark: Trinity's `trinity serve` against llama-server, over HTTP,
on the same GGUF file, with the same threads and the same total context,
interleaved (each scenario runs on one server, then on the other, the order
alternating), streamed, temperature 0. Prints a Markdown table with the ratio
Trinity ÷ llama-server and writes every measurement as JSON.

    python3 bench/serve.py [--scenarios concurrent,multiturn,shared] [--rounds 3]
                           [--threads 2] [--ctx 16384] [--model PATH] [--trinity PATH]
                           [--llama-server PATH] [--quick] [--out FILE]

Scenarios (each starts both servers afresh, on a free 127.0.0.1 port):
  concurrent    1, 4, 8, 16 streams (--parallel = streams) of distinct prompts
                of 100-200 tokens, 64 tokens each (2 requests per stream, back
                to back): aggregate generated tok/s, TTFT p50/p95, decode tok/s
                of one stream after its first token.
  multiturn     an 8-turn chat (8 slots) after a ~1,000-token system prompt;
                each turn sends the whole conversation so far, the server's own
                earlier replies included: TTFT of every turn.
  shared-off, shared-cold, shared-warm (`shared` = all three)
                8 concurrent requests (8 slots) sharing a ~1,000-token system
                prompt, distinct suffixes: TTFT p50 and wall time, with the
                prompt cache off (`cache_prompt: false` on every request), on
                from cold (nothing cached before the 8 arrive), and on warm (one
                earlier request with the same system prompt finished first).

Prompts are raw text over /v1/completions (Gemma 3 270M is a base model),
cut from the licence texts in /usr/share/common-licenses. Both servers get
"ignore_eos": true (llama-server honours it; today's Trinity ignores fields it
does not know, and the base model rarely stops early; a server that answers
400 to it gets requests without it); the generated counts come from each
response's usage, and requests that stopped early are reported. The total
context is split into per-slot contexts wherever a server takes -c per slot
(llama-server with -np and no unified KV; Trinity while `serve --help` says
"-c ... context per request"). The llama-server binary is built on first use by
bench/llama_server.py. Every request goes to 127.0.0.1, each loop is bounded in
count, every request has a timeout, and the whole run has a deadline."""
import argparse
import datetime
import http.client
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama_server  # noqa: E402  (bench/llama_server.py)
from compare import cpu_name  # noqa: E402  (bench/compare.py)

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
LICENCES = "/usr/share/common-licenses"
TOKENS_PER_WORD = 1.2  # Gemma 3 on these texts: `trinity tokenize` of 1,000-word slices gives 1,193-1,216
ENGINES = ("trinity", "llama-server")


# ------------------------------------------------------------------ prompts

class Corpus:
    """The licence texts as one list of words; prompts are slices of it."""

    def __init__(self) -> None:
        words = []
        for name in sorted(os.listdir(LICENCES)):
            path = os.path.join(LICENCES, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue  # GPL -> GPL-3 and friends: each text once
            with open(path, encoding="utf-8", errors="replace") as f:
                words += f.read().split()
        if len(words) < 20000:
            raise SystemExit(f"serve: {LICENCES} holds only {len(words)} words: too little text for prompts")
        self.words = words

    def text(self, tokens: int, at: int) -> str:
        """About `tokens` tokens of text starting at word `at` (wrapping around)."""
        n = max(1, int(tokens / TOKENS_PER_WORD))
        at %= len(self.words)
        w = self.words[at:at + n]
        if len(w) < n:
            w += self.words[:n - len(w)]
        return " ".join(w)


# ----------------------------------------------------------------- requests

def request(srv, body: dict, timeout: float) -> dict:
    """POST /v1/completions streamed to `srv`; returns the timings of the events.
    Fields the server refused at warm-up (srv.drop) are left out.

    TTFT is the time from sending the request to the first event that carries
    generated text; tokens come from the final usage (stream_options.include_usage),
    the number of text events when a server sends no usage."""
    out = {"ok": False, "status": None}
    t0 = time.perf_counter()
    deadline = t0 + timeout
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=timeout)
    try:
        data = json.dumps({k: v for k, v in body.items() if k not in srv.drop}).encode()
        conn.request("POST", "/v1/completions", body=data,
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        out["status"] = resp.status
        if resp.status != 200:
            err = resp.read(4096).decode("utf-8", "replace")
            try:
                err = json.loads(err).get("error", err)
                if isinstance(err, dict):
                    err = err.get("message", err)
            except (ValueError, AttributeError):
                pass
            out["error"] = str(err)[:300]
            return out
        first = last = None
        n_events = 0
        usage = None
        pieces = []
        finish = None
        while True:
            if time.perf_counter() > deadline:
                out["error"] = f"timed out after {timeout:.0f} s"
                return out
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
            if ev.get("error"):
                out["error"] = str(ev["error"])[:300]
                return out
            if isinstance(ev.get("usage"), dict) and "completion_tokens" in ev["usage"]:
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                piece = ch.get("text")
                if piece is None:
                    piece = (ch.get("delta") or {}).get("content")
                if piece:
                    now = time.perf_counter()
                    if first is None:
                        first = now
                    last = now
                    n_events += 1
                    pieces.append(piece)
                if ch.get("finish_reason"):
                    finish = ch["finish_reason"]
        t_end = time.perf_counter()
        if first is None:
            out["error"] = "the stream ended without any generated text"
            return out
        n_gen = usage["completion_tokens"] if usage else n_events
        out.update(ok=True, t_start=t0, ttft=first - t0, t_first=first, t_last=last, t_end=t_end,
                   n_events=n_events, n_gen=n_gen, finish=finish, text="".join(pieces),
                   prompt_tokens=usage.get("prompt_tokens") if usage else None,
                   cached_tokens=((usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens"))
        # decode speed of this stream once its first token is out
        if n_gen > 1 and last > first:
            out["decode_tps"] = (n_gen - 1) / (last - first)
        return out
    except (OSError, http.client.HTTPException, ValueError) as e:
        out["error"] = f"{type(e).__name__}: {e}"[:300]
        return out
    finally:
        conn.close()


def body_for(prompt: str, max_tokens: int, cache: bool = True) -> dict:
    b = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
         "stream_options": {"include_usage": True}, "ignore_eos": True}
    if not cache:
        b["cache_prompt"] = False  # sent only when testing the off case
    return b


def run_streams(srv, streams: list, timeout: float) -> tuple:
    """Runs each stream's requests back to back, all streams at once.
    Returns (results, wall seconds from the common start to the last end)."""
    results = [[] for _ in streams]
    barrier = threading.Barrier(len(streams) + 1)

    def worker(i: int) -> None:
        barrier.wait()
        for body in streams[i]:
            results[i].append(request(srv, body, timeout))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(streams))]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:  # each request has its own timeout: this only bounds the wait
        t.join(timeout * max(len(st) for st in streams) + 5)
    wall = time.perf_counter() - t0
    return [r for rs in results for r in rs], wall


# ------------------------------------------------------------------ servers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5) -> tuple:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        conn.close()


def trinity_ctx_per_slot(binary: str) -> bool:
    """True while `trinity serve -c` is the context of one request (per slot),
    False once it is the total token budget (the unified pool of issue 10)."""
    try:
        p = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return True
    for line in (p.stdout + p.stderr).splitlines():
        if "--ctx-size" in line:
            return "per request" in line or "per slot" in line
    return True


def unified_llama(cfg: dict) -> bool:
    return any(x in ("-kvu", "--kv-unified") for x in cfg["llama_args"])


class Server:
    """One server process on a free loopback port; stopped by its own pid."""

    def __init__(self, engine: str, cfg: dict, parallel: int, log_path: str) -> None:
        self.engine, self.cfg, self.parallel, self.log_path = engine, cfg, parallel, log_path
        self.proc = None
        self.port = None
        self.ctx_arg = None
        self.drop = set()  # request fields this server refused (see Scenarios.warmup)

    def command(self) -> list:
        c = self.cfg
        total = c["ctx"]
        if self.engine == "trinity":
            self.ctx_arg = max(256, total // self.parallel) if c["trinity_per_slot"] else total
            return [c["trinity"], "serve", "-m", c["model"], "--host", HOST, "--port", str(self.port),
                    "--parallel", str(self.parallel), "-c", str(self.ctx_arg), "-t", str(c["threads"])] \
                + c["trinity_args"]
        self.ctx_arg = total
        return [c["llama_server"], "-m", c["model"], "--host", HOST, "--port", str(self.port),
                "-np", str(self.parallel), "-c", str(total), "-t", str(c["threads"]),
                "-tb", str(c["threads"]), "--metrics", "--no-webui"] + c["llama_args"]

    def per_slot_ctx(self) -> int:
        """The longest request (prompt + generated) one slot holds."""
        if self.engine == "trinity":
            return self.ctx_arg  # per slot, or the whole pool once -c is the total
        if unified_llama(self.cfg):
            return self.ctx_arg
        return self.ctx_arg // self.parallel  # -np N without --kv-unified: n_ctx / N per slot

    def start(self, timeout: float = 180) -> None:
        self.port = free_port()
        cmd = self.command()
        self.log = open(self.log_path, "ab")
        self.log.write(f"\n$ {' '.join(cmd)}\n".encode())
        self.log.flush()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.engine} exited ({self.proc.returncode}) at start; see {self.log_path}")
            try:
                status, _ = http_get(self.port, "/health", 2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.engine} did not answer /health within {timeout:.0f} s; see {self.log_path}")

    def memory_mib(self) -> dict:
        """Resident and peak resident memory of the server process, MiB."""
        out = {}
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        out[line.split(":")[0]] = int(line.split()[1]) / 1024
        except (OSError, AttributeError):
            pass
        return out

    def metrics(self) -> dict:
        """Unlabelled numeric lines of /metrics (Prometheus text), name -> value."""
        try:
            status, text = http_get(self.port, "/metrics", 5)
        except OSError:
            return {}
        if status != 200:
            return {}
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)\s+([-+0-9.eEinfNa]+)$", line)
            if m:
                try:
                    out[m.group(1)] = float(m.group(2))
                except ValueError:
                    pass
        return out

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()
            self.log = None


# ---------------------------------------------------------------- scenarios

def pct(xs: list, q: float):
    """Percentile with linear interpolation between closest ranks; None if empty."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def errors_of(results: list) -> list:
    return [f"{r.get('status')}: {r.get('error')}" for r in results if not r["ok"]]


def summarise_requests(results: list, max_tokens: int) -> dict:
    ok = [r for r in results if r["ok"]]
    return {
        "short": sum(1 for r in ok if r["n_gen"] < max_tokens),
        "requests": len(results), "failed": len(results) - len(ok), "errors": errors_of(results)[:5],
        "gen_tokens": sum(r["n_gen"] for r in ok),
        "prompt_tokens": [r["prompt_tokens"] for r in ok],
        "cached_tokens": [r["cached_tokens"] for r in ok],
        "ttft": [r["ttft"] for r in ok],
        "decode_tps": [r.get("decode_tps") for r in ok],
        "finish": [r["finish"] for r in ok],
    }


class Scenarios:
    def __init__(self, a, corpus: Corpus) -> None:
        self.a = a
        self.c = corpus
        q = a.quick
        self.timeout = 120 if q else 600
        # sizes: (full, quick)
        self.streams = [int(x) for x in a.streams.split(",")] if a.streams else ([1, 4] if q else [1, 4, 8, 16])
        self.conc_prompt = (60, 100) if q else (100, 200)
        self.conc_gen = 16 if q else 64
        self.conc_reqs = 1 if q else 2
        self.sys_tokens = 300 if q else 1000
        self.turns = 3 if q else 8
        self.turn_user = 20 if q else 40
        self.turn_gen = 8 if q else 32
        self.mt_slots = 4 if q else 8
        self.shared_n = 4 if q else 8
        self.shared_suffix = 20 if q else 40
        self.shared_gen = 8 if q else 32

    # every scenario: list of (name, parallel, needed tokens per request, run function)
    def plan(self) -> list:
        out = []
        want = self.a.scenarios.split(",")
        if "concurrent" in want:
            for n in self.streams:
                out.append((f"concurrent-{n}", n, self.conc_prompt[1] + self.conc_gen + 16,
                            lambda srv, n=n: self.concurrent(srv, n)))
        if "multiturn" in want:
            need = self.sys_tokens + self.turns * (self.turn_user + self.turn_gen + 16) + 32
            out.append(("multiturn", self.mt_slots, need, self.multiturn))
        for v in ("off", "cold", "warm"):
            if "shared" in want or f"shared-{v}" in want:
                out.append((f"shared-{v}", self.shared_n, self.sys_tokens + self.shared_suffix + self.shared_gen + 32,
                            lambda srv, v=v: self.shared(srv, v)))
        return out

    def warmup(self, srv: Server) -> None:
        """One short request on text no scenario uses: touches the weights
        (Trinity maps them lazily) and the server's code paths."""
        body = body_for("Warm-up. " + self.c.text(24, 7), 4)
        r = request(srv, body, self.timeout)
        if not r["ok"] and r.get("status") == 400 and "ignore_eos" in (r.get("error") or ""):
            srv.drop.add("ignore_eos")  # a server that refuses it: send max_tokens alone
            r = request(srv, body, self.timeout)
        if not r["ok"]:
            raise RuntimeError(f"warm-up request failed: {r.get('status')} {r.get('error')}")

    def concurrent(self, srv: Server, n: int) -> dict:
        lo, hi = self.conc_prompt
        streams = []
        for i in range(n):
            reqs = []
            for j in range(self.conc_reqs):
                k = i * self.conc_reqs + j
                tokens = lo + (k * 37) % (hi - lo + 1)
                reqs.append(body_for(f"Passage {k}: " + self.c.text(tokens, 100 + k * 160), self.conc_gen))
            streams.append(reqs)
        results, wall = run_streams(srv, streams, self.timeout)
        s = summarise_requests(results, self.conc_gen)
        s["wall_raw_s"] = wall  # wall figures only count when every request went through
        s["wall_s"] = None if s["failed"] else wall
        s["agg_tps"] = s["gen_tokens"] / wall if wall > 0 and not s["failed"] else None
        s["ttft_p50"] = pct(s["ttft"], 50)
        s["ttft_p95"] = pct(s["ttft"], 95)
        s["decode_tps_p50"] = pct(s["decode_tps"], 50)
        return s

    def system_prompt(self) -> str:
        return ("The following is a conversation between a user and an assistant who explains software "
                "licences. The licence under discussion:\n\n" + self.c.text(self.sys_tokens, 6000) + "\n\n")

    def multiturn(self, srv: Server) -> dict:
        convo = self.system_prompt()
        turns = []
        for t in range(self.turns):
            convo += (f"User: Question {t + 1}. What does this passage mean: \""
                      + self.c.text(self.turn_user, 8000 + t * 50) + "\"?\nAssistant:")
            r = request(srv, body_for(convo, self.turn_gen), self.timeout)
            turns.append({k: r.get(k) for k in ("ok", "status", "error", "ttft", "n_gen", "prompt_tokens",
                                                 "cached_tokens", "decode_tps", "text")})
            if not r["ok"]:
                break
            convo += r["text"] + "\n"
        ttfts = [t["ttft"] for t in turns if t["ok"]]
        later = ttfts[1:]
        return {"turns": turns, "failed": sum(1 for t in turns if not t["ok"]),
                "errors": [f"{t['status']}: {t['error']}" for t in turns if not t["ok"]],
                "ttft": ttfts, "ttft_first": ttfts[0] if ttfts else None,
                "ttft_later_p50": pct(later, 50), "ttft_last": ttfts[-1] if len(ttfts) == self.turns else None,
                "short": sum(1 for t in turns if t["ok"] and t["n_gen"] < self.turn_gen),
                "prompt_tokens": [t["prompt_tokens"] for t in turns],
                "cached_tokens": [t["cached_tokens"] for t in turns]}

    def shared(self, srv: Server, variant: str) -> dict:
        """Eight requests at once after one system prompt, distinct suffixes.
        off: every request says cache_prompt false; cold: the cache is on
        and nothing has carried this system prompt before; warm: one request
        with the same system prompt finished first. Each variant runs on a
        server of its own, so that none inherits another's cache."""
        sysp = self.system_prompt()
        cache = variant != "off"
        if variant == "warm":
            prime = request(srv, body_for(sysp + "User: Hello.\nAssistant:", 1), self.timeout)
            if not prime["ok"]:
                return {"failed": 1, "errors": errors_of([prime])}
        streams = [[body_for(sysp + f"User: ({i + 1}) Explain: \""
                             + self.c.text(self.shared_suffix, 9000 + i * 50) + "\"\nAssistant:",
                             self.shared_gen, cache)] for i in range(self.shared_n)]
        results, wall = run_streams(srv, streams, self.timeout)
        s = summarise_requests(results, self.shared_gen)
        if variant == "off" and s["failed"] and any(r.get("status") == 400 for r in results):
            s["unsupported"] = next(r["error"] for r in results if r.get("status") == 400)
        s["wall_raw_s"] = wall
        s["wall_s"] = None if s["failed"] else wall
        s["ttft_p50"] = pct(s["ttft"], 50)
        return s


# ------------------------------------------------------------------ summary

def mean_sd(xs: list) -> tuple:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m, sd, digits=2) -> str:
    if m is None:
        return "—"
    return f"{m:.{digits}f} ± {sd:.{digits}f}" if sd else f"{m:.{digits}f}"


def metric_rows(scenario: str, runs: dict) -> list:
    """(scenario, metric, better, values per engine) for one scenario's rounds."""
    rows = []

    def add(label: str, better: str, get):
        vals = {}
        for e in ENGINES:
            xs = []
            for r in runs.get(e, []):
                try:
                    xs.append(get(r))
                except (KeyError, TypeError, IndexError):
                    xs.append(None)
            vals[e] = [x for x in xs if x is not None]
        rows.append((scenario, label, better, vals))

    if scenario.startswith("concurrent"):
        add("aggregate generated tok/s", "higher", lambda r: r["agg_tps"])
        add("TTFT p50 (s)", "lower", lambda r: r["ttft_p50"])
        add("TTFT p95 (s)", "lower", lambda r: r["ttft_p95"])
        add("one stream's decode tok/s, p50", "higher", lambda r: r["decode_tps_p50"])
        add("wall (s)", "lower", lambda r: r["wall_s"])
    elif scenario == "multiturn":
        n = max((len(r["ttft"]) for e in ENGINES for r in runs.get(e, [])), default=0)
        for t in range(n):
            add(f"TTFT turn {t + 1} (s)", "lower", lambda r, t=t: r["ttft"][t])
        add("TTFT turns 2+ p50 (s)", "lower", lambda r: r["ttft_later_p50"])
        add("turns 2+ p50 ÷ turn 1", "lower", lambda r: r["ttft_later_p50"] / r["ttft_first"])
    elif scenario.startswith("shared"):
        add("TTFT p50 (s)", "lower", lambda r: r["ttft_p50"])
        add("wall (s)", "lower", lambda r: r["wall_s"])
    return rows


def report(plan: list, runs: dict, a, rounds: int, record: dict) -> tuple:
    """Prints the Markdown table and notes; returns them as JSON-able lists."""
    rows = []
    for name, *_ in plan:
        rows += metric_rows(name, runs[name])
    # the cache's own effect, per engine: TTFT p50 without it over with it
    names = [n for n, *_ in plan]
    for v in ("warm", "cold"):
        if "shared-off" in names and f"shared-{v}" in names:
            vals = {}
            for e in ENGINES:
                off = mean_sd([r.get("ttft_p50") for r in runs["shared-off"][e]])[0]
                on = mean_sd([r.get("ttft_p50") for r in runs[f"shared-{v}"][e]])[0]
                vals[e] = [off / on] if off and on else []
            rows.append((f"shared-{v}", "TTFT p50, cache off ÷ this", "higher", vals))
    summary = []
    loads = [x for e in record["runs"] for x in (e.get("load_before"), e.get("load_after")) if x is not None]
    load = f" · load average {min(loads):.1f}–{max(loads):.1f}" if loads else ""
    cfg = record["config"]
    print(f"\n{datetime.date.today()} · {cpu_name()} · {os.cpu_count()} cores · {a.threads} threads · "
          f"total context {a.ctx} · {rounds} round(s){' · quick' if a.quick else ''}{load}")
    print(f"Trinity -c = {'total ÷ slots (per request)' if cfg['trinity_per_slot'] else 'total'}; "
          f"llama-server -c = total, -np = slots, "
          f"{'one unified KV' if unified_llama(cfg) else 'each slot total ÷ slots'}\n")
    print("| scenario | metric | Trinity | llama-server | ratio T÷L | better |")
    print("|---|---|---|---|---|---|")
    for scenario, label, better, vals in rows:
        (tm, tsd), (lm, lsd) = mean_sd(vals["trinity"]), mean_sd(vals["llama-server"])
        ratio = tm / lm if tm is not None and lm else None
        summary.append({"scenario": scenario, "metric": label, "better": better, "trinity": vals["trinity"],
                        "llama_server": vals["llama-server"], "trinity_mean": tm, "llama_server_mean": lm,
                        "ratio": ratio})
        print(f"| {scenario} | {label} | {fmt(tm, tsd)} | {fmt(lm, lsd)} | "
              f"{'—' if ratio is None else f'{ratio:.2f}'} | {better} |")
    notes = []
    for name in names:
        for e in ENGINES:
            rs = runs[name][e]
            if not rs:
                notes.append(f"{e} {name}: no completed run")
                continue
            unsupported = [r["unsupported"] for r in rs if r.get("unsupported")]
            if unsupported:
                notes.append(f"{e} {name}: cache_prompt false unsupported ({unsupported[0]})")
            failed = sum(r.get("failed", 0) for r in rs)
            if failed and not unsupported:
                notes.append(f"{e} {name}: {failed} failed requests")
            short = sum(r.get("short", 0) for r in rs)
            if short:
                notes.append(f"{e} {name}: {short} requests stopped before max_tokens")
            prompt = [x for r in rs for x in r.get("prompt_tokens") or [] if x is not None]
            cached = [x for r in rs for x in r.get("cached_tokens") or [] if x is not None]
            if prompt:
                line = f"{e} {name}: prompt tokens {min(prompt)}–{max(prompt)}"
                if cached:
                    line += f"; usage cached_tokens {min(cached)}–{max(cached)} (mean {statistics.mean(cached):.0f})"
                notes.append(line)
    if "multiturn" in names and all(runs["multiturn"][e] for e in ENGINES):
        replies = {e: [t.get("text") for t in runs["multiturn"][e][0]["turns"]] for e in ENGINES}
        same = replies["trinity"] == replies["llama-server"]
        notes.append(f"multiturn: the two servers' replies (round 1) are {'identical' if same else 'different'}")
    if notes:
        print("\n" + "\n".join(f"- {n}" for n in notes))
    return summary, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="concurrent,multiturn,shared",
                    help="comma-separated: concurrent, multiturn, shared")
    ap.add_argument("--streams", default=None, help="stream counts of the concurrent scenario (default 1,4,8,16)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds (default 3; --quick: 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=16384, help="total context (KV tokens) of each server")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--trinity", default=os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity")))
    ap.add_argument("--trinity-ctx", choices=("auto", "per-slot", "total"), default="auto",
                    help="how `trinity serve -c` is read (auto: from its --help)")
    ap.add_argument("--llama-server", default=None,
                    help="llama-server binary (default: built once by bench/llama_server.py)")
    ap.add_argument("--llama-version", default=llama_server.DEFAULT_VERSION)
    ap.add_argument("--trinity-args", default="", help="extra `trinity serve` arguments, e.g. --no-prefix-cache")
    ap.add_argument("--llama-args", default="", help="extra llama-server arguments, e.g. --kv-unified")
    ap.add_argument("--quick", action="store_true", help="a short smoke run: smaller scenarios, 1 round")
    ap.add_argument("--max-minutes", type=float, default=None, help="deadline of the whole run (default 120; quick 20)")
    ap.add_argument("--out", default=None, help="JSON results (default build/bench-serve/serve-DATE.json)")
    a = ap.parse_args()
    rounds = a.rounds or (1 if a.quick else 3)
    deadline = time.time() + 60 * (a.max_minutes or (20 if a.quick else 120))

    for path, what in ((a.model, "model"), (a.trinity, "trinity binary")):
        if not os.path.exists(path):
            print(f"serve: {what} {path} not found (make setup build)", file=sys.stderr)
            return 1
    binary = a.llama_server
    if not binary:
        try:
            binary = llama_server.ensure(a.llama_version)
        except (RuntimeError, OSError) as e:
            print(f"serve: could not build llama-server: {e}", file=sys.stderr)
            return 1
    per_slot = trinity_ctx_per_slot(a.trinity) if a.trinity_ctx == "auto" else a.trinity_ctx == "per-slot"
    cfg = {"model": os.path.abspath(a.model), "trinity": os.path.abspath(a.trinity), "llama_server": binary,
           "threads": a.threads, "ctx": a.ctx, "trinity_per_slot": per_slot,
           "trinity_args": shlex.split(a.trinity_args), "llama_args": shlex.split(a.llama_args)}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = a.out or os.path.join(ROOT, "build", "bench-serve", f"serve-{stamp}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    log_dir = os.path.splitext(out_path)[0] + "-logs"
    os.makedirs(log_dir, exist_ok=True)
    try:
        ver = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
        llama_version = (ver.stdout + ver.stderr).strip().splitlines()[:2]
    except (OSError, subprocess.TimeoutExpired):
        llama_version = []

    sc = Scenarios(a, Corpus())
    plan = sc.plan()
    record = {"date": stamp, "cpu": cpu_name(), "cores": os.cpu_count(), "args": vars(a), "rounds": rounds,
              "config": cfg, "llama_server_version": llama_version, "quick": a.quick, "runs": []}
    runs = {name: {e: [] for e in ENGINES} for name, *_ in plan}
    print(f"serve: {len(plan)} scenarios × {rounds} rounds × 2 servers; logs in {log_dir}", file=sys.stderr)
    stopped = False
    for rnd in range(rounds):
        for si, (name, parallel, need, fn) in enumerate(plan):
            order = ENGINES if (rnd + si) % 2 == 0 else ENGINES[::-1]
            for engine in order:
                if time.time() > deadline:
                    print("serve: deadline reached, stopping", file=sys.stderr)
                    stopped = True
                    break
                srv = Server(engine, cfg, parallel, os.path.join(log_dir, f"{engine}.log"))
                entry = {"round": rnd + 1, "scenario": name, "engine": engine, "parallel": parallel,
                         "load_before": os.getloadavg()[0]}
                print(f"serve: round {rnd + 1}/{rounds} {name} on {engine}", file=sys.stderr, flush=True)
                try:
                    srv.start()
                    entry["ctx_arg"] = srv.ctx_arg
                    entry["per_slot_ctx"] = srv.per_slot_ctx()
                    if srv.per_slot_ctx() < need:
                        entry["warning"] = (f"per-slot context {srv.per_slot_ctx()} < about {need} tokens a request "
                                            "needs: raise --ctx")
                        print(f"serve: warning: {engine} {name}: {entry['warning']}", file=sys.stderr)
                    sc.warmup(srv)
                    entry["dropped_fields"] = sorted(srv.drop)
                    t0 = time.perf_counter()
                    res = fn(srv)
                    entry["elapsed_s"] = time.perf_counter() - t0
                    entry["metrics_after"] = srv.metrics()
                    entry["memory_mib_after"] = srv.memory_mib()
                    entry["result"] = res
                    if res.get("failed"):
                        print(f"serve: {engine} {name}: {res['failed']} failed requests: "
                              f"{(res.get('errors') or [''])[:2]}", file=sys.stderr)
                    runs[name][engine].append(res)
                except RuntimeError as e:
                    entry["error"] = str(e)
                    print(f"serve: {engine} {name}: {e}", file=sys.stderr)
                finally:
                    srv.stop()
                entry["load_after"] = os.getloadavg()[0]
                record["runs"].append(entry)
                with open(out_path, "w") as f:
                    json.dump(record, f, indent=1)
            if stopped:
                break
        if stopped:
            break

    summary, notes = report(plan, runs, a, rounds, record)
    record["summary"] = summary
    record["notes"] = notes
    with open(out_path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"\nserve: results in {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
