# Thin wrapper over CMake. `make demo` = set up and run the main job; `make test` = the whole suite.
.PHONY: all build setup setup-run model demo test bench bench-serve bench-spec bench-long-stream soak clean

MODEL := models/gemma-3-270m-q4_k_m.gguf

all: build

build:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build build -j2

# What running needs (build tools, libraries, the model) and what testing needs on top (clang, the references).
setup-run:
	bash scripts/setup.sh run

setup:
	bash scripts/setup.sh test

model:
	python3 scripts/fetch_model.py

demo: setup-run build
	build/trinity run -m $(MODEL) -p "The capital of France is" -n 32 --temp 0

# Trinity against llama.cpp, interleaved, same files and threads (minutes; see docs/BENCHMARKS.md).
bench: setup build
	python3 bench/compare.py

# Serving: `trinity serve` against llama-server over HTTP, interleaved (builds llama-server once into
# ~/.cache/trinity; about half an hour; see docs/BENCHMARKS.md). BENCH_SERVE_ARGS=--quick: a short smoke run.
BENCH_SERVE_ARGS ?=
bench-serve: setup build
	python3 bench/serve.py $(BENCH_SERVE_ARGS)

# Speculative decoding: Trinity's drafters against plain decoding and llama-server's --spec-type
# options, one stream and eight, on bench/spec_prompts.json (see docs/BENCHMARKS.md).
BENCH_SPEC_ARGS ?=
bench-spec: setup build
	python3 bench/spec.py $(BENCH_SPEC_ARGS)

# A long stream through a rolling KV cache (attention sinks, StreamingLLM's experiment): per-1024-token
# perplexity and resident memory over >= 50,000 tokens of the machine's licence texts, sinks 4 + window 1024
# against a plain window and a fresh -c 1024 (docs/BENCHMARKS.md, "Long stream").
bench-long-stream: setup build
	python3 bench/long_stream.py $(BENCH_LONG_STREAM_ARGS)

# Soak (not part of `make test`): `trinity serve` on the real model under mixed traffic at its capacity, valid,
# cancelled, malformed and slow clients, a report every minute (30 minutes by default; see bench/soak.py).
# SOAK_ARGS="--minutes 3": a short run.
SOAK_ARGS ?=
soak: setup build
	python3 bench/soak.py $(SOAK_ARGS)

test: setup
	bash tests/run_all.sh

clean:
	rm -rf build build-asan build-fuzz
