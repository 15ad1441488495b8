"""Builds llama-server once, from the pinned llama-cpp-python source
distribution, into a cache folder outside the repository, and prints its path.

    python3 bench/llama_server.py [--version 0.3.36] [--cache DIR] [-j 2] [--rebuild]

The sdist (`pip download --no-deps --no-binary :all: llama-cpp-python==V`)
carries llama.cpp under vendor/llama.cpp, whose tools/server is llama-server.
The build is CPU only, Release, static, native (-march=native) with AMX
switched off: ggml compiles its AMX kernels whenever the compiler defines
__AMX_INT8__ (ggml-cpu/amx/amx.h, ggml-cpu.cpp), which -march=native does on
Sapphire Rapids, and those kernels segfault there. GCC applies an explicit
-mno-amx-* whatever its position relative to -march, so the flags below win
over ggml's own -march=native. The web UI is not embedded (LLAMA_BUILD_UI and
LLAMA_USE_PREBUILT_UI off: the prebuilt one would be downloaded from outside
PyPI), HTTPS is off; only the llama-server target is built.

A second call finds the binary and its stamp and returns at once; a change of
version or of the build flags below builds again (in a new folder per
version). Concurrent callers wait on a lock file."""
import argparse
import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile

DEFAULT_VERSION = "0.3.36"
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_NATIVE=ON",
    "-DGGML_BACKEND_DL=OFF",
    "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF",
    f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}",
    "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF", "-DGGML_HIP=OFF", "-DGGML_SYCL=OFF",
    "-DGGML_OPENCL=OFF", "-DGGML_RPC=OFF", "-DGGML_BLAS=OFF",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_LLGUIDANCE=OFF",
]


def default_cache() -> str:
    base = os.environ.get("TRINITY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "trinity")
    return base


def log(msg: str) -> None:
    print(f"llama_server: {msg}", file=sys.stderr, flush=True)


def run(cmd: list, logf, cwd=None) -> None:
    logf.write(f"\n$ {' '.join(cmd)}\n")
    logf.flush()
    p = subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {' '.join(cmd[1:3])} ... failed ({p.returncode}); see {logf.name}")


def read_stamp(path: str):
    """A build's stamp (what it was built from), None when missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def works(binary: str) -> bool:
    if not os.access(binary, os.X_OK):
        return False
    try:
        p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


def _unpack(root: str, version: str, logf) -> str:
    """Download the sdist into root/sdist and unpack its vendor/llama.cpp
    under root/src (once); returns that folder. The caller holds the lock."""
    dl = os.path.join(root, "sdist")
    sdists = glob.glob(os.path.join(dl, f"llama_cpp_python-{version}.tar.gz"))
    if not sdists:
        os.makedirs(dl, exist_ok=True)
        log("downloading the source distribution (pip download)")
        run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", dl], logf)
        sdists = glob.glob(os.path.join(dl, f"llama_cpp_python-{version}.tar.gz"))
        if not sdists:
            raise RuntimeError(f"pip download left no llama_cpp_python-{version}.tar.gz in {dl}")
    src = os.path.join(root, "src")
    top = os.path.join(src, f"llama_cpp_python-{version}", "vendor", "llama.cpp")
    if not os.path.exists(os.path.join(top, "tools", "server", "CMakeLists.txt")):
        log("unpacking vendor/llama.cpp")
        shutil.rmtree(src, ignore_errors=True)
        prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        with tarfile.open(sdists[0]) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(prefix)]
            tf.extractall(src, members=members, filter="data")
    return top


def source_tree(version: str = DEFAULT_VERSION, cache: str = None) -> str:
    """Path of vendor/llama.cpp from llama-cpp-python==version's source
    distribution (downloaded and unpacked once, not built): e.g. its
    models/templates/*.jinja for the chat-template tests."""
    root = os.path.join(cache or default_cache(), f"llama-server-{version}")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.path.join(root, "unpack.log"), "a") as logf:
            return _unpack(root, version, logf)


def ensure(version: str = DEFAULT_VERSION, cache: str = None, jobs: int = 2, rebuild: bool = False) -> str:
    """Path of a working llama-server built from llama-cpp-python==version."""
    root = os.path.join(cache or default_cache(), f"llama-server-{version}")
    binary = os.path.join(root, "bin", "llama-server")
    stamp_path = os.path.join(root, "stamp.json")
    want = {"version": version, "cmake": CMAKE_FLAGS}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = read_stamp(stamp_path)
        if not rebuild and have == want and works(binary):
            return binary
        log(f"building llama-server from llama-cpp-python=={version} into {root} "
            f"(once; several minutes on 2 cores; log: {root}/build.log)")
        if os.path.exists(stamp_path):
            os.remove(stamp_path)
        with open(os.path.join(root, "build.log"), "a") as logf:
            top = _unpack(root, version, logf)
            build = os.path.join(root, "build")
            log("configuring (cmake)")
            run(["cmake", "-S", top, "-B", build] + CMAKE_FLAGS, logf)
            log(f"compiling llama-server with {jobs} jobs")
            run(["cmake", "--build", build, "--target", "llama-server", "-j", str(jobs)], logf)
            built = os.path.join(build, "bin", "llama-server")
            if not works(built):
                raise RuntimeError(f"{built} was built but does not run; see {logf.name}")
            os.makedirs(os.path.dirname(binary), exist_ok=True)
            shutil.copy2(built, binary + ".tmp")
            os.replace(binary + ".tmp", binary)
        with open(stamp_path, "w") as f:
            json.dump(want, f, indent=1)
        log(f"built {binary}")
        return binary


def ensure_tool(target: str, version: str = DEFAULT_VERSION, cache: str = None, jobs: int = 2) -> str:
    """Path of another tool of the same tree (e.g. llama-imatrix), built in llama-server's build folder (so
    only its own sources compile) the first time it is asked for."""
    ensure(version, cache, jobs)
    root = os.path.join(cache or default_cache(), f"llama-server-{version}")
    binary = os.path.join(root, "bin", target)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if works(binary):
            return binary
        with open(os.path.join(root, "build.log"), "a") as logf:
            log(f"compiling {target} with {jobs} jobs")
            run(["cmake", "--build", os.path.join(root, "build"), "--target", target, "-j", str(jobs)], logf)
            built = os.path.join(root, "build", "bin", target)
            if not works(built):
                raise RuntimeError(f"{built} was built but does not run; see {logf.name}")
            shutil.copy2(built, binary + ".tmp")
            os.replace(binary + ".tmp", binary)
        return binary


# An x86 tier of llama.cpp as a shared library for llama-cpp-python (LLAMA_CPP_LIB_PATH), built apart from
# the native one: compare.py --cpu avx2 runs both engines on their AVX2 kernels on a machine with more.
LIB_FLAVOURS = {
    "avx2": ["-DGGML_NATIVE=OFF", "-DGGML_AVX=ON", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
             "-DGGML_BMI2=ON", "-DGGML_AVX_VNNI=OFF", "-DGGML_AVX512=OFF", "-DGGML_AVX512_VBMI=OFF",
             "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF"],
}


def ensure_lib(flavour: str, version: str = DEFAULT_VERSION, cache: str = None, jobs: int = 2) -> str:
    """Folder of libllama.so (and its ggml libraries) built from llama-cpp-python==version's llama.cpp for
    one x86 tier (LIB_FLAVOURS), once, for llama-cpp-python's LLAMA_CPP_LIB_PATH."""
    root = os.path.join(cache or default_cache(), f"llama-lib-{flavour}-{version}")
    lib = os.path.join(root, "lib")
    stamp_path = os.path.join(root, "stamp.json")
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DGGML_BACKEND_DL=OFF",
             "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_BLAS=OFF", "-DGGML_OPENMP=ON",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
             "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF"] + LIB_FLAVOURS[flavour]
    want = {"version": version, "cmake": flags}
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        have = read_stamp(stamp_path)
        if have == want and os.path.exists(os.path.join(lib, "libllama.so")):
            return lib
        log(f"building llama.cpp's {flavour} libllama.so into {root} (once; minutes; log: {root}/build.log)")
        top = source_tree(version, cache)  # llama-server's unpacked tree, under its own lock
        with open(os.path.join(root, "build.log"), "a") as logf:
            build = os.path.join(root, "build")
            run(["cmake", "-S", top, "-B", build] + flags, logf)
            run(["cmake", "--build", build, "--target", "llama", "-j", str(jobs)], logf)
            shutil.rmtree(lib, ignore_errors=True)
            os.makedirs(lib)
            for so in glob.glob(os.path.join(build, "**", "lib*.so*"), recursive=True):
                shutil.copy2(so, lib)
        with open(stamp_path, "w") as f:
            json.dump(want, f, indent=1)
        log(f"built {lib}")
        return lib


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=DEFAULT_VERSION, help="llama-cpp-python version whose llama.cpp to build")
    ap.add_argument("--cache", default=None, help=f"cache folder (default {default_cache()})")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--rebuild", action="store_true")
    a = ap.parse_args()
    try:
        print(ensure(a.version, a.cache, a.jobs, a.rebuild))
    except RuntimeError as e:
        log(str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
