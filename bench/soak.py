"""Soak: `trinity serve` on the real model under mixed traffic at its capacity
for a long time, watching for what only time shows: memory or descriptors
that creep, requests left unanswered, 5xx answers to valid requests.

    python3 bench/soak.py [--minutes 30] [--report-every 60] [--parallel 4] [--clients 8]
                          [--threads 2] [--ctx 4096] [--max-tokens 8] [--warmup-minutes N]
                          [--model PATH] [--trinity PATH] [--seed 1] [--out FILE]

`make soak` runs it (SOAK_ARGS="--minutes 3" for a short run). --clients
threads (twice --parallel by default, so the queue is never empty) each loop
over a weighted mix, every request on 127.0.0.1 with a timeout:

  valid     completion (not streamed), chat stream read to [DONE], three
            requests on one kept-alive connection, a request sent then
            half-closed (shutdown(SHUT_WR)), headers trickled over a second
            then the body, a slow reader of a stream, HTTP/1.0
  cancelled a stream closed after its first token (half of them reset, half
            plain close), a non-streamed request reset while it waits
  bad       invalid JSON, Content-Length 'abc', two Content-Lengths,
            Transfer-Encoding gzip, an unknown model, a folded header, a TLS
            ClientHello; each has the answer it must get (400, 400, 400, 501,
            404, 400, 400)
  slowloris a head trickled past --header-timeout: it must get 408

Every --report-every seconds one line: requests finished in the interval and
in all, errors by kind (a valid request answered other than 200, a bad one
answered other than its status, no answer), p50/p99 latency of the valid
requests of the interval, the server's resident memory, open descriptors and
threads, and the KV pool's blocks in use or cached and its evictions. At the
end, with the traffic stopped: descriptors and threads must be back where
they were before it started, resident memory after the warm-up within +-5 %
of its first sample, no 5xx to a valid request, no request unanswered. The
warm-up lasts --warmup-minutes (default: a fifth of the run, at least one
minute) and until the KV pool has been filled once (its first eviction). The
pool is allocated untouched and its pages become resident as its blocks are
first written, so before the traffic a few distinct ~700-token prompts write
every block in full once; without that, resident memory creeps up for tens of
minutes as blocks are reused for ever longer content, bounded by the pool's
size (growth, not a leak). Exit status 1 when a target is missed."""
import argparse
import collections
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"  # the only address this benchmark ever talks to
REQUEST_TIMEOUT = 120.0  # seconds a valid request may take, queue included


# ----------------------------------------------------------- a raw client

def connect(port, timeout=REQUEST_TIMEOUT):
    s = socket.create_connection((HOST, port), timeout=10)
    s.settimeout(timeout)
    return s


def request_bytes(method, path, body=None, headers=(), version="1.1"):
    lines = [f"{method} {path} HTTP/{version}"]
    if version == "1.1":
        lines.append("Host: soak")
    lines += list(headers)
    data = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class Reader:
    """Reads HTTP/1.1 responses off one socket (several, when kept alive)."""

    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def _more(self):
        b = self.s.recv(65536)
        if not b:
            raise ConnectionError("closed")
        self.buf += b

    def _line(self):
        while b"\r\n" not in self.buf:
            self._more()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, on_chunk=None):
        """(status, headers, body). on_chunk(bytes) -> False stops reading (a
        client that leaves mid-stream)."""
        while True:
            status = int(self._line().split()[1])
            headers = {}
            while True:
                line = self._line()
                if not line:
                    break
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            if status != 100:
                break
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        body = b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                n = int(self._line().split(b";")[0], 16)
                chunk = self._take(n + 2)[:n]
                if n == 0:
                    return status, headers, body
                body += chunk
                if on_chunk and on_chunk(chunk) is False:
                    return status, headers, body
        while True:  # HTTP/1.0 stream: to the close
            try:
                self._more()
            except ConnectionError:
                return status, headers, body + self.buf


def reset_close(s):
    """Close with a reset (SO_LINGER 0): a client that vanishes."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()


# ------------------------------------------------------------- the traffic

PROMPTS = ["The capital of France is", "Once upon a time", "A list of fruits:", "def fibonacci(n):",
           "The three primary colors are", "In 1492,", "Water boils at", "My favourite book is"]


class Mix:
    """One client's requests. Each returns (kind, valid, outcome, seconds):
    outcome 'ok' when the request got the answer it must get, else what it got."""

    def __init__(self, port, rng, max_tokens, header_timeout):
        self.port, self.rng, self.mt, self.ht = port, rng, max_tokens, header_timeout

    def prompt(self):
        """One of a few beginnings, made distinct (as real traffic is): every
        request leaves its own blocks in the prefix cache, so the KV pool fills
        and starts evicting early in the run."""
        return f"{self.rng.choice(PROMPTS)} ({self.rng.randrange(10 ** 6)})"

    def completion_body(self, stream=False):
        return {"prompt": self.prompt(), "max_tokens": self.mt, "temperature": 0.7, "stream": stream}

    def chat_body(self, stream=True):
        return {"messages": [{"role": "user", "content": self.prompt()}], "max_tokens": self.mt, "stream": stream}

    def one(self, raw, want=200, check=None, half_close=False):
        s = connect(self.port)
        try:
            s.sendall(raw)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            status, _, body = Reader(s).response()
        finally:
            s.close()
        if status != want:
            return str(status)
        if check and check not in body:
            return f"{status}-incomplete"
        return "ok"

    def complete(self):
        return self.one(request_bytes("POST", "/v1/completions", self.completion_body(),
                                      ["Connection: close"]), check=b'"finish_reason"')

    def chat_stream(self):
        return self.one(request_bytes("POST", "/v1/chat/completions", self.chat_body(), ["Connection: close"]),
                        check=b"data: [DONE]")

    def keepalive(self):
        s = connect(self.port)
        try:
            r = Reader(s)
            for raw, check in ((request_bytes("GET", "/health"), b'"ok"'),
                               (request_bytes("POST", "/v1/completions", self.completion_body()), b'"finish_reason"'),
                               (request_bytes("GET", "/v1/models", headers=["Connection: close"]), b'"data"')):
                s.sendall(raw)
                status, _, body = r.response()
                if status != 200 or check not in body:
                    return f"{status}" if status != 200 else "200-incomplete"
        finally:
            s.close()
        return "ok"

    def half_close(self):
        return self.one(request_bytes("POST", "/v1/completions", self.completion_body()), check=b'"finish_reason"',
                        half_close=True)

    def slow_writer(self):
        raw = request_bytes("POST", "/v1/completions", self.completion_body(), ["Connection: close"])
        head_end = raw.index(b"\r\n\r\n") + 4
        s = connect(self.port)
        try:
            step = max(1, head_end // 10)
            for i in range(0, head_end, step):  # the head in ten pieces over about a second
                s.sendall(raw[i:min(i + step, head_end)])
                time.sleep(0.1)
            s.sendall(raw[head_end:])
            status, _, body = Reader(s).response()
        finally:
            s.close()
        return "ok" if status == 200 and b'"finish_reason"' in body else str(status)

    def slow_reader(self):
        s = connect(self.port)
        try:
            s.sendall(request_bytes("POST", "/v1/completions", self.completion_body(stream=True),
                                    ["Connection: close"]))
            status, _, body = Reader(s).response(on_chunk=lambda c: time.sleep(0.3))
        finally:
            s.close()
        return "ok" if status == 200 and b"data: [DONE]" in body else str(status)

    def http10(self):
        return self.one(request_bytes("POST", "/v1/completions", self.completion_body(), version="1.0"),
                        check=b'"finish_reason"')

    def cancel_stream(self):
        s = connect(self.port)
        s.sendall(request_bytes("POST", "/v1/chat/completions", self.chat_body()))
        try:
            Reader(s).response(on_chunk=lambda c: b'"content"' not in c)
        except (OSError, ValueError):
            pass
        if self.rng.random() < 0.5:
            reset_close(s)
        else:
            s.close()
        return "ok"

    def cancel_wait(self):
        s = connect(self.port)
        s.sendall(request_bytes("POST", "/v1/completions", self.completion_body()))
        time.sleep(0.2)
        reset_close(s)
        return "ok"

    BAD = [
        ("invalid-json", lambda: request_bytes("POST", "/v1/completions", b'{"prompt": ', ["Connection: close"]), 400),
        ("cl-abc", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}", 400),
        ("cl-twice", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                             b"Content-Length: 3\r\n\r\n{}", 400),
        ("te-gzip", lambda: b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}", 501),
        ("unknown-model", lambda: request_bytes("POST", "/v1/completions", {"prompt": "x", "model": "gpt-4o"},
                                                ["Connection: close"]), 404),
        ("folded", lambda: b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
        ("tls", lambda: bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]) + os.urandom(32), 400),
    ]

    def bad(self):
        name, make, want = self.rng.choice(self.BAD)
        got = self.one(make(), want=want)
        return "ok" if got == "ok" else f"{name}:{got}"

    def slowloris(self):
        s = connect(self.port, timeout=self.ht + 10)
        t0 = time.monotonic()
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            s.settimeout(0.25)
            while time.monotonic() - t0 < self.ht + 8:
                try:
                    s.sendall(b"X")
                    if s.recv(65536, socket.MSG_PEEK):
                        break
                except socket.timeout:
                    continue
            s.settimeout(10)
            status, _, _ = Reader(s).response()
        finally:
            s.close()
        return "ok" if status == 408 else str(status)

    # kind: (weight, valid)
    KINDS = {"complete": (25, True), "chat_stream": (20, True), "keepalive": (10, True), "half_close": (5, True),
             "slow_writer": (5, True), "slow_reader": (5, True), "http10": (3, True),
             "cancel_stream": (10, None), "cancel_wait": (5, None), "bad": (10, False), "slowloris": (2, False)}

    def run_one(self):
        kinds = list(self.KINDS)
        kind = self.rng.choices(kinds, weights=[self.KINDS[k][0] for k in kinds])[0]
        t0 = time.monotonic()
        try:
            outcome = getattr(self, kind)()
        except socket.timeout:
            outcome = "no-answer (timeout)"
        except ConnectionResetError:
            outcome = "reset"
        except (ConnectionError, OSError, ValueError, IndexError) as e:
            outcome = f"no-answer ({type(e).__name__})"
        return kind, self.KINDS[kind][1], outcome, time.monotonic() - t0


# ------------------------------------------------------------- the server

class Server:
    def __init__(self, a):
        self.log_path = a.log
        cmd = [a.trinity, "serve", "-m", a.model, "--port", "0", "-t", str(a.threads), "--parallel",
               str(a.parallel), "-c", str(a.ctx), "--header-timeout", str(a.header_timeout), "-q"]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        self.port = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = open(self.log_path).read()
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
            if m:
                self.port = int(m.group(1))
            if self.port and "ready" in text:
                return
            time.sleep(0.1)
        raise SystemExit(f"soak: trinity serve did not start:\n{open(self.log_path).read()}")

    def status(self):
        """(resident MiB, open descriptors, threads)."""
        pid = self.proc.pid
        with open(f"/proc/{pid}/status") as f:
            st = f.read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1)) / 1024
        threads = int(re.search(r"Threads:\s+(\d+)", st).group(1))
        return rss, len(os.listdir(f"/proc/{pid}/fd")), threads

    def metrics(self):
        """The /metrics gauges and counters without labels, as numbers."""
        try:
            s = connect(self.port, timeout=10)
            s.sendall(request_bytes("GET", "/metrics", headers=["Connection: close"]))
            _, _, body = Reader(s).response()
            s.close()
        except OSError:
            return {}
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(trinity_\w+) (\S+)$", body.decode(), re.M)}

    def stop(self):
        self.proc.send_signal(2)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


# ------------------------------------------------------------------ the run

def fill_kv_pool(srv, ctx, rng):
    """Write every block of the KV pool in full once: distinct prompts of
    about 700 tokens (numbers: Gemma's tokenizer gives one token a digit),
    1.5 times the pool's size in all, four at a time. The pool is allocated
    untouched and its pages become resident as blocks are first written;
    without this its resident size creeps up for tens of minutes (blocks
    reused for ever longer content), which is growth, but not a leak."""
    n = max(4, int(1.5 * ctx / 700) + 1)
    bodies = [{"prompt": " ".join(str(rng.randrange(10 ** 5, 10 ** 6)) for _ in range(100)), "max_tokens": 1}
              for _ in range(n)]
    failed = []

    def go(body):
        s = connect(srv.port)
        try:
            s.sendall(request_bytes("POST", "/v1/completions", body, ["Connection: close"]))
            if Reader(s).response()[0] != 200:
                failed.append(body)
        finally:
            s.close()

    for i in range(0, n, 4):
        ts = [threading.Thread(target=go, args=(b,)) for b in bodies[i:i + 4]]
        for t in ts:
            t.start()
        for t in ts:
            t.join(REQUEST_TIMEOUT)
    return n, len(failed)

Result = collections.namedtuple("Result", "kind valid outcome seconds")  # valid None: a cancellation

def pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--report-every", type=float, default=60, help="seconds between report lines")
    ap.add_argument("--warmup-minutes", type=float, default=None,
                    help="memory is judged after this (default: a fifth of the run, at least 1)")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--clients", type=int, default=None, help="client threads (default 2 x --parallel)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--header-timeout", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--trinity", default=os.path.join(ROOT, "build", "trinity"))
    ap.add_argument("--log", default=os.path.join(ROOT, "build", "soak-server.log"))
    ap.add_argument("--out", default=None, help="write every report and the verdict as JSON here")
    a = ap.parse_args()
    clients = a.clients or 2 * a.parallel
    warmup = 60 * (a.warmup_minutes if a.warmup_minutes is not None else max(1.0, a.minutes / 5))

    srv = Server(a)
    base = srv.status()
    print(f"soak: trinity serve pid {srv.proc.pid} on port {srv.port}, --parallel {a.parallel}, {clients} clients, "
          f"{a.minutes:g} min, max_tokens {a.max_tokens}; before traffic: {base[0]:.1f} MiB resident, "
          f"{base[1]} descriptors, {base[2]} threads", flush=True)
    t0 = time.monotonic()
    n_fill, fill_failed = fill_kv_pool(srv, a.ctx, random.Random(a.seed))
    print(f"soak: warm-up: {n_fill} distinct prompts of ~700 tokens wrote the whole KV pool in "
          f"{time.monotonic() - t0:.0f} s ({fill_failed} failed); resident now {srv.status()[0]:.1f} MiB", flush=True)

    lock = threading.Lock()
    results = []  # Result per finished request
    stop_at = time.monotonic() + 60 * a.minutes
    t_start = time.monotonic()

    def client(i):
        mix = Mix(srv.port, random.Random(a.seed * 1000 + i), a.max_tokens, a.header_timeout)
        while time.monotonic() < stop_at and srv.proc.poll() is None:
            r = Result(*mix.run_one())
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()

    reports, seen = [], 0
    pool_filled_at = None  # run time at which the KV pool had given out every block once
    next_report = t_start + a.report_every
    while True:
        now = time.monotonic()
        done = now >= stop_at or srv.proc.poll() is not None
        if now < next_report and not done:
            time.sleep(min(1.0, next_report - now))
            continue
        with lock:
            window, seen = results[seen:], len(results)
        rss, fds, nthreads = srv.status() if srv.proc.poll() is None else (float("nan"), -1, -1)
        m = srv.metrics()
        kv_held = int(m.get("trinity_kv_blocks_used", 0) + m.get("trinity_kv_blocks_cached", 0))
        evictions = int(m.get("trinity_kv_evictions_total", 0))
        if evictions and pool_filled_at is None:
            pool_filled_at = now - t_start
        lat = [r.seconds for r in window if r.valid is True and r.outcome == "ok"]
        errs = {}
        for r in window:
            if r.outcome != "ok":
                key = f"{'valid' if r.valid else 'bad' if r.valid is False else 'cancel'}/{r.kind}: {r.outcome}"
                errs[key] = errs.get(key, 0) + 1
        rep = {"t_min": round((now - t_start) / 60, 2), "finished": len(window), "total": seen,
               "valid_ok": len(lat), "errors": errs, "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99),
               "rss_mib": rss, "fds": fds, "threads": nthreads, "kv_blocks": kv_held,
               "kv_blocks_total": int(m.get("trinity_kv_blocks_total", 0)), "kv_evictions": evictions,
               "connections": int(m.get("trinity_connections_open", -1))}
        reports.append(rep)
        print(f"[{rep['t_min']:6.2f} min] finished {len(window):4d} (total {seen:5d}; valid ok {len(lat):4d}) "
              f"p50 {rep['p50_s']:.2f} s p99 {rep['p99_s']:.2f} s | rss {rss:.1f} MiB fds {fds} threads {nthreads} "
              f"kv {kv_held}/{rep['kv_blocks_total']} evictions {evictions}"
              f" | errors {json.dumps(errs) if errs else 'none'}", flush=True)
        next_report += a.report_every
        if done:
            break

    for t in threads:
        t.join(REQUEST_TIMEOUT + 30)
    alive = srv.proc.poll() is None
    time.sleep(3)  # let the last connections close
    end = srv.status() if alive else (float("nan"), -1, -1)

    # The verdict.
    valid = [r for r in results if r.valid is True]
    valid_5xx = [r for r in valid if r.outcome[:1] == "5"]
    unanswered = [r for r in results if r.outcome.startswith("no-answer") or r.outcome == "reset"]
    # Memory is judged once the time warm-up is over and the KV pool has been
    # filled once: until then its pages are still being touched for the
    # first time (the pool is calloc'ed; the kernel maps pages as blocks are
    # first written), which is growth, but not a leak.
    warm = max(warmup, pool_filled_at if pool_filled_at is not None else warmup)
    after = [r for r in reports if r["t_min"] * 60 >= warm and r["rss_mib"] == r["rss_mib"]]
    lat_all = [r.seconds for r in valid if r.outcome == "ok"]
    kinds = {}
    for r in results:
        k = kinds.setdefault(r.kind, [0, 0])
        k[0] += 1
        k[1] += r.outcome == "ok"
    checks = []
    if after:
        ref = after[0]["rss_mib"]
        lo, hi = min(r["rss_mib"] for r in after), max(r["rss_mib"] for r in after)
        filled = (f"KV pool filled at {pool_filled_at / 60:.1f} min" if pool_filled_at is not None
                  else "KV pool never filled")
        checks.append((f"resident memory after the warm-up ({warm / 60:.1f} min; {filled}) within +-5 % of {ref:.1f} MiB "
                       f"(min {lo:.1f}, max {hi:.1f}: {100 * (lo / ref - 1):+.1f} % .. {100 * (hi / ref - 1):+.1f} %)",
                       lo >= 0.95 * ref and hi <= 1.05 * ref))
    else:
        checks.append(("resident memory: no sample after the warm-up (run longer, or lower --warmup-minutes)", False))
    checks.append((f"descriptors back to {base[1]} with the traffic stopped (now {end[1]})", end[1] == base[1]))
    checks.append((f"threads back to {base[2]} with the traffic stopped (now {end[2]})", end[2] == base[2]))
    checks.append((f"no 5xx to a valid request ({len(valid_5xx)} of {len(valid)})", not valid_5xx))
    checks.append((f"every request answered ({len(unanswered)} unanswered or reset)", not unanswered))
    checks.append(("the server ran to the end", alive))
    print(f"\nsoak: {len(results)} requests in {(time.monotonic() - t_start) / 60:.1f} min; valid ones answered 200: "
          f"{len(lat_all)} of {len(valid)}, p50 {pct(lat_all, 0.5):.2f} s, p99 {pct(lat_all, 0.99):.2f} s")
    print("by kind (finished, as expected): " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(kinds.items())))
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    status = srv.stop()
    print(f"soak: server stopped (exit {status}); its log: {a.log}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"reports": reports, "checks": [{"check": t, "ok": ok} for t, ok in checks],
                       "by_kind": kinds}, f, indent=1)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
