"""Side-by-side benchmark: Trinity against llama.cpp (llama-cpp-python), same
GGUF file, same threads, same tests, interleaved A B A B in one run so that
both see the same machine. Prints a Markdown table of tokens/s and ratios.

    python3 bench/compare.py [--models gemma,q8_0,q4_k_m,q4_0,f16] [-p 128] [-n 64] [-d 2048] [-t 2] [-r 3]

The TinyLlama-1.1B-shaped random-weight models are written by
scripts/gen_model.py into models/bench/ on first use (speed only: their
text is noise); 'gemma' is the real Gemma 3 270M Q4_K_M; 'moe' a Qwen3-MoE-shaped
random model (64 experts, top 8, Q4_K_M; gen_model.py --shape moe-bench); 'mamba' / 'mamba-f16' a
Mamba-130M-shaped random model (state-space, Q8_0 / F16; gen_model.py --arch mamba --shape mamba-130m),
whose generation speed should not fall with the depth (-d: no KV cache grows):

    python3 bench/compare.py --models moe -d 0 -r 5
    python3 bench/compare.py --models mamba -d 2048"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRINITY = os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity"))
GEN_TYPES = {"q8_0": "Q8_0", "q4_k_m": "Q4_K_M", "q4_0": "Q4_0", "f16": "F16", "tq1_0": "TQ1_0", "tq2_0": "TQ2_0"}


def model_file(key: str) -> str:
    if key == "gemma":
        return os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
    if key in ("mamba", "mamba-f16"):
        t = "Q8_0" if key == "mamba" else "F16"
        path = os.path.join(ROOT, "models", "bench", f"mamba-130m-random-{t.lower()}.gguf")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            print(f"compare: writing {path}", file=sys.stderr)
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "mamba",
                            "--shape", "mamba-130m", "--type", t, "--seed", "1", "-o", path], check=True)
        return path
    if key == "moe":
        path = os.path.join(ROOT, "models", "bench", "qwen3moe-random-q4_k_m.gguf")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            print(f"compare: writing {path}", file=sys.stderr)
            subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "qwen3moe",
                            "--shape", "moe-bench", "--type", "Q4_K_M", "--seed", "1", "-o", path], check=True)
        return path
    path = os.path.join(ROOT, "models", "bench", f"tinyllama-1.1b-random-{key}.gguf")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        print(f"compare: writing {path}", file=sys.stderr)
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_model.py"), "--arch", "llama",
                        "--shape", "tinyllama", "--type", GEN_TYPES[key], "--seed", "1", "-o", path], check=True)
    return path


def run_json(cmd: list, env=None) -> list:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"compare: {' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def cpu_core(vendor: str, family: int, model: int) -> str:
    """The core generation behind a cpuid family and model, for the kinds this
    project meets (a VM's model name says only "AMD EPYC"), else ""."""
    if vendor == "AuthenticAMD":
        if family == 23:
            return "Zen 2" if model >= 0x30 else "Zen 1"
        if family == 25:
            return "Zen 4" if 0x10 <= model <= 0x1f or 0x60 <= model <= 0x7f or 0xa0 <= model <= 0xaf else "Zen 3"
        if family == 26:
            return "Zen 5"
    if vendor == "GenuineIntel" and family == 6:
        return {0x8F: "Sapphire Rapids", 0xCF: "Emerald Rapids", 0x6A: "Ice Lake-SP", 0x55: "Skylake-SP/Cascade Lake"}.get(model, "")
    return ""


def cpu_name() -> str:
    """The model name, with the cpuid family/model and the core generation they
    name: "AMD EPYC (family 25 model 1, Zen 3)". The same model name covers
    machines of different generations here, whose kernels' figures differ."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, val = line.partition(":")
            key = key.strip()
            if key in ("model name", "vendor_id", "cpu family", "model") and key not in info:
                info[key] = val.strip()
            if len(info) == 4:
                break
    except OSError:
        pass
    name = info.get("model name") or platform.processor()
    try:
        fam, mod = int(info["cpu family"]), int(info["model"])
    except (KeyError, ValueError):
        return name
    core = cpu_core(info.get("vendor_id", ""), fam, mod)
    return f"{name} (family {fam} model {mod}{', ' + core if core else ''})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="gemma,q8_0,q4_k_m,q4_0,f16")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-d", type=int, default=2048, help="depth of the tg@d test (0: skip)")
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3, help="rounds; each round runs Trinity then llama.cpp once")
    ap.add_argument("--best", action="store_true",
                    help="report each engine's best round (min-of-N time) instead of mean +/- sd: a shared machine")
    ap.add_argument("--cpu", choices=["avx2"], default=None,
                    help="both engines on one x86 tier of a machine that has more: Trinity with TRINITY_CPU, "
                         "llama.cpp as a shared library built for it (bench/llama_server.py ensure_lib, once)")
    a = ap.parse_args()
    env = {"trinity": None, "llama.cpp": None}
    if a.cpu:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        import llama_server
        env["trinity"] = dict(os.environ, TRINITY_CPU=a.cpu)
        env["llama.cpp"] = dict(os.environ, LLAMA_CPP_LIB_PATH=llama_server.ensure_lib(a.cpu))

    common = ["-p", str(a.p), "-n", str(a.n), "-t", str(a.t), "-r", "1"]
    if a.d:
        common += ["-d", str(a.d)]
    rows = []
    for key in a.models.split(","):
        path = model_file(key)
        res = {"trinity": {}, "llama.cpp": {}}
        extra = {"trinity": {"load_s": [], "rss_kib": [], "bw_share": {}}, "llama.cpp": {"load_s": [], "rss_kib": []}}
        for rnd in range(a.r):
            print(f"compare: {key} round {rnd + 1}/{a.r}", file=sys.stderr)
            for engine, cmd in (("trinity", [TRINITY, "bench", "-m", path, "--json"] + common),
                                ("llama.cpp", [sys.executable, os.path.join(ROOT, "bench", "llamacpp_bench.py"),
                                               "-m", path] + common)):
                out = run_json(cmd, env[engine])
                for o in out:
                    res[engine].setdefault(o["test"], []).append(o["tps_mean"])
                    if engine == "trinity" and o.get("bw_share"):
                        extra[engine]["bw_share"].setdefault(o["test"], []).append(o["bw_share"])
                if out:
                    extra[engine]["load_s"].append(out[0]["load_s"])
                    extra[engine]["rss_kib"].append(out[0]["rss_kib"])
        for test in res["trinity"]:
            tr, ll = res["trinity"][test], res["llama.cpp"].get(test, [])
            if not ll:
                continue
            share = extra["trinity"]["bw_share"].get(test)
            if a.best:
                rows.append({"model": key, "test": test, "trinity": (max(tr), 0.0), "llama": (max(ll), 0.0),
                             "ratio": max(tr) / max(ll), "bw": None})
                continue
            rows.append({
                "model": key, "test": test,
                "trinity": (statistics.mean(tr), statistics.stdev(tr) if len(tr) > 1 else 0.0),
                "llama": (statistics.mean(ll), statistics.stdev(ll) if len(ll) > 1 else 0.0),
                "ratio": statistics.mean(tr) / statistics.mean(ll),
                "bw": statistics.mean(share) if share else None,
            })
        rows.append({
            "model": key, "test": "load s / RSS MiB",
            "load": (statistics.median(extra["trinity"]["load_s"]), statistics.median(extra["llama.cpp"]["load_s"])),
            "rss": (statistics.median(extra["trinity"]["rss_kib"]) / 1024,
                    statistics.median(extra["llama.cpp"]["rss_kib"]) / 1024),
        })

    print(f"\n{datetime.date.today()} · {cpu_name()} · {os.cpu_count()} cores · {a.t} threads · {a.r} rounds"
          f"{f' · both engines on {a.cpu} kernels' if a.cpu else ''}"
          f"{' · best round of each' if a.best else ''}\n")
    info = subprocess.run([sys.executable, "-c", "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"],
                          capture_output=True, text=True, env=env["llama.cpp"]).stdout.strip()
    print(f"llama.cpp's build: `{info}`\n")
    print("| model | test | Trinity t/s | llama.cpp t/s | ratio | Trinity bw % |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "load" in r:
            print(f"| {r['model']} | load (s) / RSS after load (MiB) | {r['load'][0]:.2f} / {r['rss'][0]:.0f} "
                  f"| {r['load'][1]:.2f} / {r['rss'][1]:.0f} | {r['load'][0] / r['load'][1]:.2f} / "
                  f"{r['rss'][0] / r['rss'][1]:.2f} | |")
            continue
        bw = f"{100 * r['bw']:.0f}" if r["bw"] else ""
        print(f"| {r['model']} | {r['test']} | {r['trinity'][0]:.2f} ± {r['trinity'][1]:.2f} "
              f"| {r['llama'][0]:.2f} ± {r['llama'][1]:.2f} | {r['ratio']:.2f} | {bw} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
