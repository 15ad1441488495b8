"""`trinity imatrix` against llama-imatrix (built once from the pinned llama-cpp-python source, beside
llama-server: bench/llama_server.py), on the same file, text, chunk size and chunk count: every weight's
sums (relative difference to the largest sum) and counts (must be equal), dense and mixture-of-experts files.
llama-imatrix runs without flash attention (-fa off), the attention Trinity computes as llama.cpp does.

    python3 bench/imatrix_check.py                       # random llama and Qwen3-MoE files (F32), 3 chunks of 64
    python3 bench/imatrix_check.py -m MODEL.gguf -c 512 --chunks 4

Not part of `make test` (llama-imatrix is not built there); the test suite checks the same files against
numpy and llama.cpp's quantizer (tests/test_quantize.py)."""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import llama_server  # noqa: E402


def load(path):
    import gguf
    r = gguf.GGUFReader(path)
    return ({t.name: np.array(t.data, dtype=np.float64).reshape(-1) for t in r.tensors},
            {k: r.fields[k].contents() for k in ("imatrix.chunk_count", "imatrix.chunk_size")})


def compare(model, text, c, chunks, threads, trinity, tool, tmp, a_tol):
    ref, ours = os.path.join(tmp, "ref.gguf"), os.path.join(tmp, "ours.gguf")
    subprocess.run([tool, "-m", model, "-f", text, "-o", ref, "-c", str(c), "--chunks", str(chunks), "-t",
                    str(threads), "-b", str(c), "-ub", str(c), "--no-ppl", "-fa", "off"], check=True, capture_output=True)
    subprocess.run([trinity, "imatrix", "-m", model, "-f", text, "-o", ours, "-c", str(c), "--chunks", str(chunks),
                    "-t", str(threads)], check=True, capture_output=True)
    a, ma = load(ref)
    b, mb = load(ours)
    ok = set(a) == set(b) and ma == mb
    worst, worst_name, counts_equal = 0.0, "", True
    for n in sorted(set(a) & set(b)):
        if a[n].shape != b[n].shape:
            print(f"  {n}: shapes {a[n].shape} vs {b[n].shape}")
            ok = False
        elif n.endswith(".counts"):
            if not np.array_equal(a[n], b[n]):
                print(f"  {n}: counts {a[n]} vs {b[n]}")
                counts_equal = ok = False
        else:
            rel = float(np.abs(a[n] - b[n]).max() / max(np.abs(a[n]).max(), 1e-30))
            if rel > worst:
                worst, worst_name = rel, n
    print(f"{os.path.basename(model)}: {len(a)} tensors (llama-imatrix) / {len(b)} (trinity), metadata "
          f"{'equal' if ma == mb else f'{ma} vs {mb}'}, counts {'equal' if counts_equal else 'DIFFER'}, "
          f"worst sum difference {worst:.2e} of the largest ({worst_name})")
    return ok and worst < a_tol


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", action="append", help="GGUF file(s) (default: random llama and qwen3moe)")
    ap.add_argument("-f", "--file", default="/usr/share/common-licenses/GPL-3")
    ap.add_argument("-c", type=int, default=64)
    ap.add_argument("--chunks", type=int, default=3)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--trinity", default=os.path.join(ROOT, "build", "trinity"))
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="largest sum difference accepted, relative to the largest sum (quantized files drift more)")
    a = ap.parse_args()
    tool = llama_server.ensure_tool("llama-imatrix")
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "calib.txt")
        with open(a.file, "rb") as f, open(text, "wb") as g:
            g.write(f.read()[:200000])
        models = a.model or []
        if not models:
            for arch in ("llama", "qwen3moe"):
                p = os.path.join(tmp, f"{arch}-f32.gguf")
                subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", arch,
                                "--type", "F32", "-o", p], check=True, capture_output=True)
                models.append(p)
        ok = all([compare(m, text, a.c, a.chunks, a.threads, a.trinity, tool, tmp, a.tol) for m in models])
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
