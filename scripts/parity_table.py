#!/usr/bin/env python3
"""docs/PARITY.md's measured tables, from what tests/test_parity_llamacpp.py
measured (it writes <report dir>/parity.json; ctest's report dir is
build/test-reports):

  scripts/parity_table.py build/test-reports/parity.json            # print the tables
  scripts/parity_table.py build/test-reports/parity.json --write    # replace them in docs/PARITY.md

The tables go between the lines <!-- measured:begin --> and <!-- measured:end -->."""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "PARITY.md")
ARCHES = ("llama", "qwen2", "qwen3", "gemma3")
TYPES = ("F32", "F16", "Q8_0", "Q4_K")


def tables(m):
    refs = sorted({v["reference"] for v in m.values() if "reference" in v})
    out = [f"Measured by `tests/test_parity_llamacpp.py` against {', '.join(refs)}; 2 threads;",
           "rows: every prompt position and each of llama.cpp's 128 greedy steps (teacher-forced).", ""]
    out += ["max |Δlogit| / max |logit| over all rows; greedy: identical tokens before the first parting:", "",
            "| model | " + " | ".join(TYPES) + " |", "| --- |" + " --- |" * len(TYPES)]
    for a in ARCHES:
        cells = []
        for t in TYPES:
            v = m.get(f"{a}_{t}")
            cells.append(f"{v['max_rel_delta']}, {v['greedy_same']}" if v else "-")
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    out += ["", "max |Δ log-sum-exp| (logits); argmax agreeing rows; partings (row: llama.cpp's gap between its "
            "token and Trinity's / its top logit):", "",
            "| model | " + " | ".join(TYPES) + " |", "| --- |" + " --- |" * len(TYPES)]
    for a in ARCHES:
        cells = []
        for t in TYPES:
            v = m.get(f"{a}_{t}")
            cells.append(f"{v['max_delta_lse']}; {v['argmax_agree']}; {v['partings']}" if v else "-")
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    out += ["", "Perplexity of the prompt's second half (relative difference from llama.cpp's):", "",
            "| model | " + " | ".join(TYPES) + " |", "| --- |" + " --- |" * len(TYPES)]
    for a in ARCHES:
        cells = []
        for t in TYPES:
            v = m.get(f"{a}_{t} perplexity")
            cells.append(f"{v['rel']}" if v else "-")
        out.append(f"| {a} | " + " | ".join(cells) + " |")
    out += ["", "Gemma 3 270M Q4_K_M (real), llama.cpp's top 64 of each row:", "",
            "| sequence | rows | max \\|Δlogit\\| (of max \\|logit\\|) | max \\|Δ lse\\| | argmax | greedy | partings |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, label in (("gemma3_270m", "GPL-3 prompt (80 tokens) + 128 greedy"),
                        ("capital", '"The capital of France is" + 32 greedy')):
        v = m.get(name)
        if v:
            out.append(f"| {label} | {v['rows']} | {v['max_delta']} ({v['max_rel_delta']} of {v['max_abs_logit']}) "
                       f"| {v['max_delta_lse']} | {v['argmax_agree']} | {v['greedy_same']} | {v['partings']} |")
    v = m.get("gemma3_270m perplexity")
    if v:
        out += ["", f"Perplexity, first 2 GPL-3 windows of 512: llama.cpp {v['llama_cpp']}, Trinity {v['trinity']} "
                f"(relative difference {v['rel']})."]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", help="parity.json written by the test")
    ap.add_argument("--write", action="store_true", help=f"replace the tables in {DOC}")
    a = ap.parse_args()
    t = tables(json.load(open(a.json)))
    if not a.write:
        print(t)
        return
    doc = open(DOC).read()
    pat = re.compile(r"(<!-- measured:begin -->).*?(<!-- measured:end -->)", re.S)
    if not pat.search(doc):
        sys.exit(f"{DOC} has no <!-- measured:begin --> ... <!-- measured:end --> section")
    open(DOC, "w").write(pat.sub(lambda mm: mm.group(1) + "\n" + t + "\n" + mm.group(2), doc))


if __name__ == "__main__":
    main()
