#!/usr/bin/env python3
"""The suite's summary: what ran, what was skipped and why, what failed.

  tests/summarize.py [--extra FILE] LABEL=BUILD_DIR ...

For each build directory, ctest's own JUnit file (BUILD_DIR/ctest-junit.xml,
one row per ctest entry) says which entries ran and whether each exited 0;
BUILD_DIR/test-reports/<entry>.xml (written by tests/c/tt.h for the C tests,
by pytest --junitxml for the Python ones) says which individual tests each
entry ran. An entry is counted by its individual tests; an entry that failed
although its report shows no failed test (a crash after the last test, a
leak report at exit, a timeout) counts one failure more; an entry without a
report counts as one test. --extra FILE adds lines "pass|fail|skip NAME
[reason]" (the fuzz targets, a build that failed).

Prints every test that ran (by entry), the CPU, which of Trinity's SIMD paths ran (tt.h's "simd" properties),
notes the tests recorded (pytest's record_property("note", ...): which
reference a parity test used, what it measured), the failed and skipped
tests with their reasons, and last exactly one line
"Summary: N passed, N failed, N skipped". Exit status 1 if anything failed.
Standard library only."""
import argparse
import os
import re
import sys
import xml.etree.ElementTree as ET

CPU_FLAGS = ("avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "amx_tile", "amx_int8", "amx_bf16")


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = []   # (name, message)
        self.skipped = []  # (name, reason)
        self.simd = {}     # label -> [path, ...]
        self.cpu = None    # Trinity's view of the CPU (test_matmul's "cpu" property)
        self.notes = []    # (name, note)
        self.groups = {}   # "release C" etc. -> [passed, failed, skipped]
        self.ran = {}      # "release test_matmul" -> names of the tests it ran

    def add(self, status, name, message="", group=None):
        g = self.groups.setdefault(group or name.split("::")[0].split(" ")[0], [0, 0, 0])
        g[{"pass": 0, "skip": 2}.get(status, 1)] += 1
        if status == "pass":
            self.passed += 1
        elif status == "skip":
            self.skipped.append((name, message))
        else:
            self.failed.append((name, message))


def parse(path):
    try:
        return ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return e


def one_line(s, n=300):
    s = " ".join((s or "").split())
    return s if len(s) <= n else s[:n - 3] + "..."


def testcases(root):
    for tc in root.iter("testcase"):
        yield tc


def case_status(tc):
    """(status, message) of a JUnit testcase: a failure or error wins over a skip."""
    for tag in ("failure", "error"):
        e = tc.find(tag)
        if e is not None:
            return "fail", one_line(e.get("message") or e.text or tag)
    e = tc.find("skipped")
    if e is not None:
        return "skip", one_line(e.get("message") or e.text or "skipped")
    return "pass", ""


def case_name(entry, tc):
    name = tc.get("name", "?")
    return f"{entry}::{name}"


def group_of(label, entry):
    return f"{label} {'Python' if entry.startswith('py_') else 'C'} tests"


def read_build(label, build, t):
    ctest = os.path.join(build, "ctest-junit.xml")
    root = parse(ctest)
    if isinstance(root, Exception):
        t.add("fail", f"{label}: ctest", f"no ctest results ({ctest}: {root})")
        return
    reports = os.path.join(build, "test-reports")
    for entry_tc in testcases(root):
        entry = entry_tc.get("name", "?")
        entry_status, entry_msg = case_status(entry_tc)
        if entry_tc.get("status") in ("fail", "failed", "notrun"):
            entry_status = "fail"
        grp = group_of(label, entry)
        if entry_tc.get("status") == "disabled":
            t.add("skip", f"{label} {entry}", "disabled in ctest", grp)
            continue
        rep = parse(os.path.join(reports, entry + ".xml"))
        if isinstance(rep, Exception):
            t.add(entry_status, f"{label} {entry}",
                  entry_msg or "exited non-zero (no report of its tests: crashed or timed out before writing it?)", grp)
            continue
        n_fail = 0
        for prop in rep.iter("property"):
            if prop.get("name") == "simd":
                t.simd.setdefault(label, []).append(f"{entry}: {prop.get('value')}")
            elif prop.get("name") == "cpu" and t.cpu is None:
                t.cpu = prop.get("value")
        for tc in testcases(rep):
            st, msg = case_status(tc)
            n_fail += st == "fail"
            t.add(st, f"{label} {case_name(entry, tc)}", msg, grp)
            if st != "skip":
                t.ran.setdefault(f"{label} {entry}", []).append(tc.get("name", "?"))
            props = tc.find("properties")
            if props is not None:
                for p in props.iter("property"):
                    if p.get("name") == "note":
                        t.notes.append((f"{label} {case_name(entry, tc)}", p.get("value")))
        if entry_status == "fail" and n_fail == 0:
            t.add("fail", f"{label} {entry}",
                  "the test binary exited non-zero after its tests passed (crash at exit, sanitizer or leak "
                  "report, timeout: see the log)", grp)


def read_extra(path, t):
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) < 2:
                continue
            status, name = parts[0], parts[1]
            t.add(status if status in ("pass", "fail", "skip") else "fail", name, parts[2] if len(parts) > 2 else "")


def cpu_line():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == "flags":
                    flags = set(v.split())
                    break
    except OSError:
        pass
    # the model name with its cpuid family/model and core generation (bench/compare.py)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    try:
        from compare import cpu_name
        model = cpu_name()
    except Exception as e:  # noqa: BLE001 (a summary line must not fail the run)
        model = f"? ({e})"
    have = [x for x in CPU_FLAGS if x in flags]
    lack = [x for x in CPU_FLAGS if x not in flags]
    return f"CPU: {model}; has {' '.join(have) or '(none of the listed)'}; lacks {' '.join(lack) or 'nothing listed'}"


def simd_summary(paths):
    """From 'entry: test[avx2 Q4_K matmul]' strings, each path once, those
    that differ only by a tensor type grouped: 'avx2 matmul (F32, Q4_K)'."""
    groups = {}
    for p in paths:
        inner = p[p.find("[") + 1:p.rfind("]")] if "[" in p else p
        w = inner.split()
        if len(w) >= 3 and re.fullmatch(r"[A-Z][A-Z0-9_]*", w[1]):
            key, item = " ".join([w[0]] + w[2:]), w[1]
        else:
            key, item = inner, None
        items = groups.setdefault(key, [])
        if item and item not in items:
            items.append(item)
    return [f"{k} ({', '.join(v)})" if v else k for k, v in groups.items()]


def main():
    ap = argparse.ArgumentParser(description="the test suite's summary")
    ap.add_argument("--extra", action="append", default=[], help="file of 'pass|fail|skip NAME [reason]' lines")
    ap.add_argument("builds", nargs="*", help="LABEL=BUILD_DIR")
    a = ap.parse_args()
    t = Tally()
    for b in a.builds:
        label, _, build = b.partition("=")
        read_build(label, build, t)
    for e in a.extra:
        if os.path.exists(e):
            read_extra(e, t)

    print()
    print("=== what ran")
    print(f"Tests run, by entry ({sum(len(v) for v in t.ran.values())}):")
    for entry, names in t.ran.items():
        print(f"  {entry} ({len(names)}): {', '.join(names)}")
    print(cpu_line())
    print(f"Trinity's dispatcher saw: {t.cpu or '(unknown: test_matmul did not report)'}"
          + (f"  [TRINITY_CPU={os.environ['TRINITY_CPU']}]" if os.environ.get("TRINITY_CPU") else ""))
    if not t.simd:
        print("SIMD paths of Trinity exercised: none reported")
    for label, paths in t.simd.items():
        names = simd_summary(paths)
        print(f"SIMD paths of Trinity exercised ({label} build):")
        for n in names:
            print(f"  {n}")
    print("(the Python tests run libtrinity with the dispatcher's choice above)")
    print("Tests by stage: " + "; ".join(f"{g}: {p} passed, {f} failed, {k} skipped"
                                         for g, (p, f, k) in t.groups.items()))
    if t.notes:
        print()
        print(f"Notes ({len(t.notes)}):")
        for name, note in t.notes:
            print(f"  {name}: {note}")
    if t.failed:
        print()
        print(f"Failed ({len(t.failed)}):")
        for name, msg in t.failed:
            print(f"  {name}: {msg}")
    print()
    print(f"Skipped ({len(t.skipped)}):")
    for name, reason in t.skipped:
        print(f"  {name}: {reason}")
    print(f"Summary: {t.passed} passed, {len(t.failed)} failed, {len(t.skipped)} skipped")
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
