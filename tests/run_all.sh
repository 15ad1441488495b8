#!/usr/bin/env bash
# The whole test suite: the release build's C and Python tests, the C tests
# again under AddressSanitizer + UBSan, and each libFuzzer target for a bounded
# time from its seed corpus. Ends with one line: "Summary: N passed, N failed".
set -u
cd "$(dirname "$0")/.."
JOBS=${JOBS:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
pass=0
fail=0

# ctest prints "NN% tests passed, F tests failed out of T"
count_ctest() {
  local log=$1 line t f
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$log" | tail -n1)
  if [ -z "$line" ]; then
    if grep -q "No tests were found" "$log"; then return; fi
    echo "run_all: no ctest summary in $log"; fail=$((fail + 1)); return
  fi
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
  t=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/')
  pass=$((pass + t - f))
  fail=$((fail + f))
}

stage() { echo; echo "=== $*"; }

stage "release build"
if cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build build -j"$JOBS"; then
  (cd build && ctest --output-on-failure -j"$JOBS" --timeout 1800) 2>&1 | tee build/ctest.log
  count_ctest build/ctest.log
else
  echo "run_all: release build failed"; fail=$((fail + 1))
fi

stage "AddressSanitizer + UBSan build"
if cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTRINITY_SANITIZE=ON >/dev/null && cmake --build build-asan -j"$JOBS"; then
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
     ctest --output-on-failure -j"$JOBS" --timeout 1800) 2>&1 | tee build-asan/ctest.log
  count_ctest build-asan/ctest.log
else
  echo "run_all: sanitizer build failed"; fail=$((fail + 1))
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
      tail -n 3 build-fuzz/"$name".log; pass=$((pass + 1))
    else
      tail -n 40 build-fuzz/"$name".log; echo "FAIL $name (artifacts in build-fuzz/)"; fail=$((fail + 1))
    fi
  done
else
  echo "run_all: fuzz build failed"; fail=$((fail + 1))
fi

echo
echo "Summary: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
