"""Start and stop a real `trinity serve` process for the server tests.

The server listens on a free loopback port (--port 0; the port is read from
its log line). However a test ends, the process is stopped: the fixture's
finaliser terminates it, and PR_SET_PDEATHSIG kills it if pytest itself dies."""
import ctypes
import http.client
import json
import os
import re
import signal
import subprocess
import tempfile
import time

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Server:
    def __init__(self, trinity_bin, model_path, *args, wait_ready=True):
        self.log_file = tempfile.NamedTemporaryFile(prefix="trinity-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([trinity_bin, "serve", "-m", model_path, "--port", "0", *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        self.pid = self.proc.pid
        self.port = None
        try:
            deadline = time.monotonic() + 60
            while self.port is None:
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log())
                if m:
                    self.port = int(m.group(1))
                elif self.proc.poll() is not None:
                    raise AssertionError(f"trinity serve exited {self.proc.returncode}:\n{self.log()}")
                elif time.monotonic() > deadline:
                    raise AssertionError(f"trinity serve did not start listening:\n{self.log()}")
                else:
                    time.sleep(0.05)
            if wait_ready:
                self.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self):
        with open(self.log_file.name, errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"trinity serve exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"trinity serve never became ready:\n{self.log()}")

    def request(self, method, path, body=None, headers=None, timeout=300):
        """A raw HTTP request: (status, headers dict, body bytes)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            h = {"Content-Type": "application/json"}
            h.update(headers or {})
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def metrics(self, headers=None):
        status, _, body = self.request("GET", "/metrics", headers=headers)
        assert status == 200, body
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def rss_kb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stop the server; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        return self.proc.returncode
