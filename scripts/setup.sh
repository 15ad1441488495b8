#!/usr/bin/env bash
# Installs everything Trinity builds and tests with on a fresh Debian 12 machine:
# Debian packages, the pinned Python packages, and the real model under models/.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="build-essential cmake pkg-config clang libclang-rt-14-dev libpcre2-dev libmicrohttpd-dev libjansson-dev"
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
if ! $PY scripts/check_requirements.py requirements.txt 2>/dev/null; then
  echo "setup: installing Python packages (llama-cpp-python builds llama.cpp from source: minutes)"
  $PY -m pip install -q --disable-pip-version-check -r requirements.txt
fi

$PY scripts/fetch_model.py
