#!/usr/bin/env bash
# Installs everything Trinity builds and tests with on a fresh Debian 12 machine:
# Debian packages, the pinned Python packages, and the real model under models/.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="build-essential cmake pkg-config clang libclang-rt-14-dev libpcre2-dev libjansson-dev"
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
