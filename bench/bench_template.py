"""Chat-template rendering time: Trinity's interpreter (parse + render, through
libtrinity.so) against jinja2 (render of a compiled template, as transformers
caches compilation), on llama.cpp's templates with a six-message tool
conversation. Min of N runs each, interleaved; the machine may be shared.

    python3 bench/bench_template.py [--lib build/libtrinity.so] [-n 20]"""
import argparse
import ctypes
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src", "template"))
import test_template_jinja2 as T  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=os.path.join(ROOT, "build", "libtrinity.so"))
    ap.add_argument("-n", type=int, default=20)
    a = ap.parse_args()
    tr = T.Trinity(ctypes.CDLL(a.lib))
    env = T.reference_env()
    v = T.case_vars(T.CASES["tool_calls_object_args"], True)
    rows = []
    for path in T.template_files():
        src = open(path, encoding="utf-8").read()
        want, err, _ = T.reference_render(env, src, v)
        if want is None:
            continue
        tmpl = env.from_string(src)
        best_t, best_j = float("inf"), float("inf")
        for _ in range(a.n):
            t0 = time.perf_counter()
            got, _ = tr.render(src, v)
            t1 = time.perf_counter()
            tmpl.render(**v)
            t2 = time.perf_counter()
            best_t, best_j = min(best_t, t1 - t0), min(best_j, t2 - t1)
        assert got == want, path
        rows.append((os.path.basename(path), best_t * 1e6, best_j * 1e6))
    rows.sort(key=lambda r: r[1])
    print(f"{'template':56} {'trinity us':>11} {'jinja2 us':>10}")
    for name, t, j in rows:
        print(f"{name:56} {t:11.0f} {j:10.0f}")
    med = lambda xs: sorted(xs)[len(xs) // 2]
    print(f"median of {len(rows)}: trinity {med([r[1] for r in rows]):.0f} us (parse + render), "
          f"jinja2 {med([r[2] for r in rows]):.0f} us (render only)")


if __name__ == "__main__":
    main()
