"""Instructions the SIMD matmul kernels execute per block and token, counted
on an emulated Sapphire Rapids (tests/x86emu.py), which runs every tier
(AVX2, AVX-VNNI, AVX-512) whatever this machine has: a proxy for work, not
for speed. One kernel call over 16 rows x 1024 columns (docs/BENCHMARKS.md),
divided by rows x blocks x tokens (float formats: per 16 elements).

  python3 bench/emu_counts.py [--rows 16] [--cols 1024] [--lib build/libtrinity.so]
"""
import argparse
import ctypes
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import test_kernels_emu as tk  # noqa: E402
import x86emu  # noqa: E402

ISAS = (("avx2", tk.ISA_AVX2), ("avxvnni", tk.ISA_AVXVNNI), ("avx512", tk.ISA_AVX512))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--lib", default=tk.LIB)
    args = ap.parse_args()
    why = x86emu.unavailable()
    if why:
        sys.exit(f"no x86 emulator: {why}")
    tk.LIB = args.lib
    lib = tk.open_lib()
    emu = x86emu.Emulator()
    rng = random.Random(1)
    rows, cols = args.rows, args.cols
    print(f"per block and token, {rows} rows x {cols} columns; nt = 1 | nt = 4")
    print("| format | " + " | ".join(f"{n} nt=1" for n, _ in ISAS) + " | " + " | ".join(f"{n} nt=4" for n, _ in ISAS) + " |")
    print("|---" * (1 + 2 * len(ISAS)) + "|")
    for name, (t, _) in tk.TYPES.items():
        k = lib.tr_kernel_get(t).contents
        per = 16 if k.blck == 1 else k.blck
        wkeep, w, ws = tk.random_weights(lib, name, rows, cols, rng)
        cells = {}
        for nt in (1, 4):
            akeep, a, a_stride = tk.activations(lib, k, [rng.uniform(-1, 1) for _ in range(cols * nt)], cols, nt)
            yk, y = tk.aligned(4 * rows * nt)
            for isa_name, isa in ISAS:
                fn = lib.tr_kernel_variant(ctypes.byref(k), isa)
                if not fn:
                    cells[isa_name, nt] = "-"
                    continue
                count = [0]
                emu.call(fn, cols, w, ws, rows, a, a_stride, nt, y, rows, count=count)
                cells[isa_name, nt] = f"{count[0] / (rows * (cols // per) * nt):.2f}"
        print(f"| {name} | " + " | ".join(cells[n, 1] for n, _ in ISAS) + " | "
              + " | ".join(cells[n, 4] for n, _ in ISAS) + " |")


if __name__ == "__main__":
    main()
