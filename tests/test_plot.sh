#!/usr/bin/env bash
# test_plot.sh -- deploy/plot-metrics on synthetic metrics files. Seconds.
#
# - a folder without logs/metrics-*.jsonl: exit 2 and one line (checked first: it needs no
#   matplotlib); a path that is not a folder: exit 2;
# - --help: exit 0, names OUTPUT_DIR;
# - two workers' training records, an evaluator's eval + final records, a summary.json, unknown
#   keys, a blank line and three malformed lines: exit 0, one warning per malformed line naming
#   FILE:LINE, OUTPUT_DIR/metrics.png a PNG (signature) of 1200x900 pixels (its IHDR chunk), the
#   summary line counting 2 loss lines and the final accuracy;
# - -o elsewhere with --size 640x480: a 640x480 PNG there.
# Skipped (77) when plot-metrics reports matplotlib missing (apt-get install python3-matplotlib).
set -uo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
plot=$src/deploy/plot-metrics
tmp=$(mktemp -d /tmp/tfps-plot-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
ok() { echo "ok: $*"; }

[ -x "$plot" ] || { echo "FAIL: $plot is not executable" >&2; exit 1; }

# PNG facts: "signature width height" of $1 (signature as hex; IHDR's width/height big-endian)
png_info() {
  local sig w h
  sig=$(od -An -tx1 -N8 "$1" | tr -d ' \n')
  w=$(od -An -tu1 -j16 -N4 "$1" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
  h=$(od -An -tu1 -j20 -N4 "$1" | awk '{ print (($1 * 256 + $2) * 256 + $3) * 256 + $4 }')
  echo "$sig $w $h"
}
check_png() {   # file want_w want_h
  local info want="89504e470d0a1a0a $2 $3"
  [ -s "$1" ] || { fail "$1 missing or empty"; return; }
  info=$(png_info "$1")
  [ "$(od -An -c -j12 -N4 "$1" | tr -d ' ')" = IHDR ] || fail "$1: no IHDR chunk first"
  if [ "$info" = "$want" ]; then ok "$(basename "$1"): PNG signature, ${2}x${3} pixels, $(stat -c %s "$1") bytes"
  else fail "$1: signature width height = $info, expected $want"; fi
}

# 1. no metrics files: exit 2, one line
mkdir -p "$tmp/empty/logs"
"$plot" "$tmp/empty" >"$tmp/o" 2>"$tmp/e"; rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l <"$tmp/e")" -eq 1 ] && grep -q "no metrics files" "$tmp/e" && [ ! -s "$tmp/o" ] &&
   [ ! -e "$tmp/empty/metrics.png" ]; then ok "no metrics files: exit 2: $(cat "$tmp/e")"
else cat "$tmp/e" >&2; fail "no metrics files: exit $rc, $(wc -l <"$tmp/e") lines on stderr"; fi
"$plot" "$tmp/nonexistent" >/dev/null 2>"$tmp/e"; rc=$?
[ $rc -eq 2 ] && grep -q "not a folder" "$tmp/e" && ok "a missing folder: exit 2" || fail "a missing folder: exit $rc"

# 2. --help
"$plot" --help >"$tmp/h" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "OUTPUT_DIR" "$tmp/h" && grep -q -- "--size" "$tmp/h" && ok "--help: exit 0" ||
  fail "--help: exit $rc"

# 3. a run's folder
run=$tmp/run
mkdir -p "$run/logs"
for w in 0 1; do
  for i in $(seq 0 10 990); do
    step=$((2 * i + w))
    loss=$(awk -v s=$step 'BEGIN { printf "%.6f", 2.3 * exp(-s / 500) + 0.05 }')
    echo "{\"time\": 1700000000.5, \"task\": \"worker-$w\", \"step\": $step, \"local_step\": $i, \"epoch\": 0," \
         "\"loss\": $loss, \"examples_per_s\": 61234.5, \"lr\": 0.1, \"dropped\": 0, \"wait_s\": 0.001," \
         "\"version\": $step, \"future_key\": [1, 2]}"
  done >"$run/logs/metrics-worker-$w.jsonl"
done
echo "" >>"$run/logs/metrics-worker-0.jsonl"                      # blank: ignored silently
echo '{"task": "worker-0", "step": 5, "loss": ' >>"$run/logs/metrics-worker-0.jsonl"   # line 102: not JSON
echo '[1, 2, 3]' >>"$run/logs/metrics-worker-1.jsonl"             # line 101: not an object
{
  for s in 0 500 1000 1500 2000; do
    echo "{\"time\": 1700000001, \"task\": \"evaluator-0\", \"kind\": \"eval\", \"step\": $s, \"accuracy\": 0.$((5 + s / 500))1, \"loss\": 0.5}"
  done
  echo '{"time": 1700000001, "task": "evaluator-0", "kind": "eval", "step": "soon", "accuracy": 0.9}'   # line 6: bad step
  echo '{"time": 1700000002, "task": "evaluator-0", "kind": "final", "step": 1981, "accuracy": 0.9345, "loss": 0.21}'
} >"$run/logs/metrics-evaluator-0.jsonl"
echo '{"mode": "cluster", "test_accuracy": 0.9345, "steps": 1981, "examples_per_s": 60000}' >"$run/summary.json"
t0=$(date +%s.%N)
"$plot" "$run" >"$tmp/o" 2>"$tmp/e"; rc=$?
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ $rc -eq 2 ] && grep -q "matplotlib" "$tmp/e"; then
  echo "SKIP: $(cat "$tmp/e")" >&2
  exit 77
fi
[ $rc -eq 0 ] && ok "plot-metrics on a run's folder: exit 0 in ${secs}s: $(cat "$tmp/o")" ||
  { cat "$tmp/e" >&2; fail "plot-metrics: exit $rc"; }
check_png "$run/metrics.png" 1200 900
for w in "metrics-worker-0.jsonl:102" "metrics-worker-1.jsonl:101" "metrics-evaluator-0.jsonl:6"; do
  grep -q "warning: .*/$w: " "$tmp/e" && ok "warning names $w" || fail "no warning naming $w: $(cat "$tmp/e")"
done
n=$(grep -c "warning" "$tmp/e"); [ "$n" -eq 3 ] || fail "$n warnings, expected 3: $(cat "$tmp/e")"
grep -q "200 loss points in 2 lines, 6 accuracy points, final 0.9345 at step 1981, skipped 3 malformed lines" "$tmp/o" &&
  ok "counts: 2 loss lines of 100 points, 6 accuracy points, the final one" || fail "summary line: $(cat "$tmp/o")"

# 4. -o elsewhere, --size
"$plot" "$run" -o "$tmp/small.png" --size 640x480 >"$tmp/o" 2>"$tmp/e"; rc=$?
[ $rc -eq 0 ] || { cat "$tmp/e" >&2; fail "-o --size: exit $rc"; }
check_png "$tmp/small.png" 640 480
"$plot" "$run" --size 12x12 >/dev/null 2>"$tmp/e"; rc=$?
[ $rc -eq 2 ] && ok "--size 12x12: exit 2" || fail "--size 12x12: exit $rc"
"$plot" "$run" -o "$tmp/no/such/dir/x.png" >/dev/null 2>"$tmp/e"; rc=$?
[ $rc -eq 1 ] && grep -q "cannot write" "$tmp/e" && ok "an unwritable -o: exit 1: $(tail -1 "$tmp/e")" ||
  fail "an unwritable -o: exit $rc: $(cat "$tmp/e")"

[ $failed -eq 0 ] && echo "test_plot: all passed"
exit $failed
