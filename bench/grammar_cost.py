#!/usr/bin/env python3
"""What a grammar costs per generated token: `trinity run` greedy on the real
model, N tokens, without a constraint and with one, runs interleaved, best of
R each (the machine may be shared: the minimum is the least disturbed run).

Constrained cases (none completes before N tokens, so every run generates N):
  json  -- a JSON array of objects that never closes (generic JSON values: the
           model's preferred tokens are often forbidden, e.g. after '{')
  text  -- lines of lower-case words and spaces (most top tokens allowed)
Generation speed is tokens / generation time as `run` reports it."""
import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JSON = r'''root ::= "[" ws (value ws "," ws)*
value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws (string ws ":" ws value ws ("," ws string ws ":" ws value ws)*)? "}"
array ::= "[" ws (value ws ("," ws value ws)*)? "]"
string ::= "\"" ([^"\\\x00-\x1F] | "\\" ["\\/bfnrt])* "\""
number ::= "-"? [0-9]{1,12} ("." [0-9]{1,6})?
ws ::= [ \n]{0,4}
'''
TEXT = 'root ::= ([a-z ]+ "\\n")+\n'


def run(binary, model, prompt, n, threads, grammar):
    args = [binary, "run", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0", "-t", str(threads)]
    if grammar is not None:
        args += ["--grammar", grammar]
    p = subprocess.run(args, capture_output=True, text=True, errors="replace", check=True)
    m = re.search(r"generation: (\d+) tokens in ([\d.]+) ms", p.stderr)
    tokens, ms = int(m.group(1)), float(m.group(2))
    if tokens != n:
        raise RuntimeError(f"expected {n} tokens, got {tokens}: the grammar completed early")
    return tokens / (ms / 1000)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "trinity"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args()
    cases = {"plain": (None, "Here is a list of records in JSON:"), "json": (JSON, "Here is a list of records in JSON:"),
             "text": (TEXT, "Here is a story:")}
    best = {k: 0.0 for k in cases}
    for rep in range(a.reps):
        for k, (g, prompt) in cases.items():
            best[k] = max(best[k], run(a.bin, a.model, prompt, a.n, a.threads, g))
        print(f"rep {rep + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()), file=sys.stderr)
    print(f"generation tokens/s, best of {a.reps}, {a.n} tokens, {a.threads} threads, greedy:")
    for k, v in best.items():
        rel = "" if k == "plain" else f"  ({100 * (1 - v / best['plain']):+.1f} % slower than plain)"
        print(f"  {k:6s} {v:7.2f}{rel}")
    # plain's text differs from the constrained texts, but per-token work is the forward pass plus sampling


if __name__ == "__main__":
    main()
