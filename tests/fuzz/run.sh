#!/usr/bin/env bash
# tests/fuzz/run.sh [BUILD_DIR] [SECONDS_PER_TARGET] -- builds the libFuzzer targets with clang in a
# build folder of their own (-DTFPS_FUZZ=ON: libFuzzer + ASan + UBSan) and runs each, from a copy of
# its seed corpus (tests/fuzz/corpus/<target>/), for SECONDS_PER_TARGET (default 20). Any crash,
# leak, sanitizer report or timeout fails the run (exit 1); its input is kept in BUILD_DIR/crashes/
# and replays with `BUILD_DIR/bin/<target> BUILD_DIR/crashes/<file>`. Exit 77 (skipped) when clang
# is missing. TFPS_FUZZ_CC picks another clang; TFPS_FUZZ_TARGETS="fuzz_ps" runs some only.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build/fuzz}
secs=${2:-20}
cc=${TFPS_FUZZ_CC:-clang}
targets=${TFPS_FUZZ_TARGETS:-fuzz_wire fuzz_config fuzz_ps}
case $secs in ''|*[!0-9]*) echo "run.sh: seconds per target \"$secs\": expected a whole number" >&2; exit 2;; esac
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "run.sh: $cc not found: fuzzing needs clang (deploy/install-deps.sh installs it); skipped" >&2
  exit 77
fi
mkdir -p "$build"
build=$(cd "$build" && pwd)   # the targets run from a scratch folder: an absolute path
if ! cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER="$cc" -DTFPS_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
     >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "run.sh: configuring the fuzz build failed (above)" >&2
  exit 1
fi
# shellcheck disable=SC2086
if ! cmake --build "$build" -j"${TFPS_FUZZ_JOBS:-2}" --target $targets >"$build/build.log" 2>&1; then
  tail -40 "$build/build.log" >&2
  echo "run.sh: building the fuzz targets failed (above; all of it in $build/build.log)" >&2
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/tfps-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$build/crashes"
failed=0
for t in $targets; do
  mkdir -p "$work/$t"
  cp "$src/tests/fuzz/corpus/$t/"* "$work/$t/"
  seeds=$(ls "$work/$t" | wc -l)
  # -timeout: one input may take 10 s at most; -rss_limit_mb: a leak or a huge allocation is a failure
  if (cd "$work" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$build/bin/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/crashes/$t-" "$work/$t" >"$work/$t.log" 2>&1); then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log")
    echo "run.sh: $t: ${runs:-?} inputs in ${secs} s from $seeds seeds, corpus now $(ls "$work/$t" | wc -l), 0 crashes"
  else
    failed=1
    tail -60 "$work/$t.log" >&2
    echo "run.sh: $t FAILED: the input is in $build/crashes/ (replay: $build/bin/$t FILE)" >&2
  fi
done
exit $failed
