"""Fixtures shared by every Python test (src/<layer>/test_*.py, tests/test_*.py).

ctest sets TRINITY_BIN (the CLI), TRINITY_LIB (libtrinity.so for ctypes) and
TRINITY_ROOT; run by hand, they default to the build/ folder.

The references the tests compare with (llama.cpp through llama-cpp-python,
the real model) are required: a test that cannot have one fails, unless
TRINITY_ALLOW_SKIP=1 says this machine is expected to lack it, and then it
is skipped with the reason (tests/run_all.sh lists every skip)."""
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


def missing_reference(what, detail):
    """A required reference is missing: fail, or skip where TRINITY_ALLOW_SKIP=1."""
    if os.environ.get("TRINITY_ALLOW_SKIP") == "1":
        pytest.skip(f"{what} is missing ({detail}); allowed by TRINITY_ALLOW_SKIP=1")
    pytest.fail(f"{what} is missing ({detail}): run scripts/setup.sh, or set TRINITY_ALLOW_SKIP=1 where that "
                "is expected", pytrace=False)


@pytest.fixture(scope="session")
def model_path():
    if not os.path.exists(MODEL):
        missing_reference("the real model", f"{MODEL}; scripts/setup.sh or make model fetches it")
    return MODEL


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module (llama.cpp, the reference engine)."""
    try:
        import llama_cpp
    except ImportError as e:
        missing_reference("llama-cpp-python", f"import llama_cpp: {e}")
    return llama_cpp


def run_trinity(*args, input=None, timeout=300, check=False):
    """Run the CLI; returns CompletedProcess with text stdout/stderr."""
    p = subprocess.run([BIN, *map(str, args)], input=input, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"trinity {' '.join(map(str, args))} exited {p.returncode}: {p.stderr}")
    return p
