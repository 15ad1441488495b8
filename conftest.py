"""Fixtures shared by every Python test (src/<layer>/test_*.py, tests/test_*.py).

ctest sets TRINITY_BIN (the CLI), TRINITY_LIB (libtrinity.so for ctypes) and
TRINITY_ROOT; run by hand, they default to the build/ folder."""
import ctypes
import os
import subprocess

import pytest

ROOT = os.environ.get("TRINITY_ROOT", os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TRINITY_BIN", os.path.join(ROOT, "build", "trinity"))
LIB = os.environ.get("TRINITY_LIB", os.path.join(ROOT, "build", "libtrinity.so"))
MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def trinity_bin():
    assert os.path.exists(BIN), f"{BIN} is missing: build first (make build)"
    return BIN


@pytest.fixture(scope="session")
def lib():
    assert os.path.exists(LIB), f"{LIB} is missing: build first (make build)"
    return ctypes.CDLL(LIB)


@pytest.fixture(scope="session")
def model_path():
    assert os.path.exists(MODEL), f"{MODEL} is missing: run scripts/setup.sh (or make model)"
    return MODEL


def run_trinity(*args, input=None, timeout=300, check=False):
    """Run the CLI; returns CompletedProcess with text stdout/stderr."""
    p = subprocess.run([BIN, *map(str, args)], input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"trinity {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}")
    return p
