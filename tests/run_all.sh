#!/usr/bin/env bash
# The whole test suite: the release build's C and Python tests, the C tests
# again under AddressSanitizer + UBSan, and each libFuzzer target for a bounded
# time from its seed corpus. Every test entry writes a report of its individual
# tests; tests/summarize.py reads them and prints what ran on this CPU (which
# of Trinity's SIMD paths), every skipped test with its reason, every failure,
# and last one line: "Summary: N passed, N failed, N skipped".
#
# A missing required reference (llama-cpp-python, the model) fails the tests
# that need it; TRINITY_ALLOW_SKIP=1 turns those failures into skips on a
# machine where that is expected.
set -u
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
start=$(date +%s)
extra=build/run_all-extra.txt # "pass|fail|skip NAME reason" lines the summary adds
mkdir -p build
: > "$extra"
note() { echo "$*" >> "$extra"; }

stage() { echo; echo "=== $*"; }

# Runs ctest in build dir $1 (extra environment in the rest of the arguments),
# leaving its log, its JUnit file and the entries' reports there.
run_ctest() {
  local dir=$1
  shift
  rm -rf "$dir/test-reports" "$dir/ctest-junit.xml"
  mkdir -p "$dir/test-reports"
  (cd "$dir" && env ${1+"$@"} ctest --output-on-failure -j"$JOBS" --timeout 1800 \
     --output-junit "$PWD/ctest-junit.xml") 2>&1 | tee "$dir/ctest.log"
}

stage "release build"
if cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j"$JOBS"; then
  run_ctest build
else
  note "fail release-build the release build failed (see above)"
  rm -f build/ctest-junit.xml
fi

stage "AddressSanitizer + UBSan build"
if cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTRINITY_SANITIZE=ON >/dev/null && cmake --build build-asan -j"$JOBS"; then
  run_ctest build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
else
  note "fail asan-build the sanitizer build failed (see above)"
  rm -f build-asan/ctest-junit.xml
fi

stage "fuzzing (${FUZZ_SECONDS}s per target)"
# Only the fuzz targets: the tests already ran in the two builds above.
fuzz_targets=$(ls src/*/fuzz_*.c 2>/dev/null | xargs -r -n1 basename | sed 's/\.c$//')
if cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DTRINITY_FUZZ=ON -DCMAKE_C_COMPILER=clang >/dev/null &&
   cmake --build build-fuzz -j"$JOBS" --target $fuzz_targets; then
  for bin in build-fuzz/fuzz_*; do
    [ -x "$bin" ] || continue
    name=$(basename "$bin")
    seeds=tests/fuzz/$name
    work=build-fuzz/corpus-$name
    mkdir -p "$work"
    echo "--- $name"
    if "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix=build-fuzz/"$name"- "$work" "$seeds" > build-fuzz/"$name".log 2>&1; then
      tail -n 3 build-fuzz/"$name".log; note "pass fuzz::$name"
    else
      tail -n 40 build-fuzz/"$name".log; echo "FAIL $name (artifacts in build-fuzz/)"
      note "fail fuzz::$name crashed or leaked (artifacts in build-fuzz/, log build-fuzz/$name.log)"
    fi
  done
else
  note "fail fuzz-build the fuzz build failed (see above)"
fi

echo
echo "=== whole suite: $(( $(date +%s) - start )) s"
python3 tests/summarize.py --extra "$extra" release=build asan=build-asan | tee build/summary.log
status=${PIPESTATUS[0]}
if ! tail -n 1 build/summary.log | grep -q '^Summary: '; then
  echo "run_all: tests/summarize.py could not summarize (exit $status)"
  echo "Summary: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
exit "$status"
