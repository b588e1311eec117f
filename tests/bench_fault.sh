#!/usr/bin/env bash
# Benchmark, not a test: what checkpoints and a ps failure cost on this
# machine, 2 ps + 2 workers on loopback, one OpenBLAS thread per process.
#
#   tests/bench_fault.sh [DATA_DIR=data/mnist]
#
# 1. Checkpoints every 50 chief steps (400 steps), async, for three model sizes (and
#    optimizer state): shard and checkpoint size, the longest a ps stopped
#    serving to copy its state (the only pause other workers can see), the
#    write (fsyncs included, in the background on the ps), and the chief's
#    wait for all acknowledgements plus MANIFEST and pruning (the chief's own
#    training pause); examples/s against the same run without checkpoints.
# 2. Recovery: ps 1 killed (-9) mid-run and restarted by the launcher
#    (--restart on-failure) 3 s into the run, async and sync: for the worker
#    that waited longest, the time from the start of its round that failed
#    (the ps died under it) to its first step applied again, and from the
#    detection (the restarted ps no longer knows it) to that step; and the
#    steps ps 1 lost (its version after the restore against ps 0's).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$here/data/mnist}
bin=${TFPS_BIN:-$here/build/bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--data-folder "$data" --batch-size 64 --log-every 50 --threads 1)

run() {   # name args...
  local name=$1
  shift
  TFPS_BIN=$bin bash "$here/deploy/local-cluster.sh" --ps 2 --workers 2 "${common[@]}" "$@" \
    --output-dir "$tmp/$name" >/dev/null 2>"$tmp/$name.err" ||
    { echo "bench_fault: $name failed:" >&2; tail -n 5 "$tmp/$name.err" >&2; exit 1; }
}
field() { sed -n "s/.*\"$2\":[[:space:]]*\([0-9.eE+-]*\).*/\1/p" "$1/summary.json" | head -n 1; }
# median and max of column `what` of the chief's checkpoint lines
ckpt_stat() {   # log text-before-number
  grep -o "$2 [0-9.]*" "$1" | awk '{ print $NF }' | sort -g |
    awk '{ v[NR] = $1 } END { if (!NR) { print "- -"; exit }
      printf "%.2f %.2f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[NR] }'
}
secs() { awk '{ split($4, h, ":"); printf "%.3f\n", h[1] * 3600 + h[2] * 60 + h[3] }'; }

echo "bench_fault: $(nproc) cores, data $data, 2 ps + 2 workers, batch 64 per worker, 1 OpenBLAS thread/process"
printf "\n%-34s %8s %11s %11s %11s %11s %11s %9s\n" "checkpoints every 50 chief steps" "ckpt MB" "ps pause ms" \
  "(max)" "write ms" "chief ms" "(max)" "ex/s cost"
for spec in "784-300-100-10 sgd:300:100:sgd:0.1" "784-300-100-10 adam:300:100:adam:0.001" \
            "784-2048-1024-10 adam:2048:1024:adam:0.001"; do
  IFS=: read -r label h1 h2 opt lr <<<"$spec"
  model=(--first-layer-neurons "$h1" --second-layer-neurons "$h2" --optimizer "$opt" --learning-rate "$lr"
         --steps 400)
  run "base-$h1-$opt" "${model[@]}" --checkpoint-every-secs 0
  run "ckpt-$h1-$opt" "${model[@]}" --checkpoint-every-steps 50
  log=$tmp/ckpt-$h1-$opt/logs/worker-0.log
  mb=$(grep -o "shards, [0-9.]* MB" "$log" | tail -n 1 | awk '{ print $2 }')
  read -r pause pause_max <<<"$(ckpt_stat "$log" "paused serving")"
  read -r write _ <<<"$(ckpt_stat "$log" "wrote in")"
  read -r chief chief_max <<<"$(ckpt_stat "$log" "the chief waited")"
  b=$(field "$tmp/base-$h1-$opt" examples_per_s)
  c=$(field "$tmp/ckpt-$h1-$opt" examples_per_s)
  n=$(grep -c "checkpoint step .* (--checkpoint-every-steps)" "$log" || true)
  printf "%-34s %8s %11s %11s %11s %11s %11s %8s%%   (%d checkpoints; %.0f vs %.0f ex/s)\n" "$label" "$mb" "$pause" \
    "$pause_max" "$write" "$chief" "$chief_max" "$(awk -v b="$b" -v c="$c" 'BEGIN { printf "%.1f", 100 * (b - c) / b }')" \
    "$n" "$c" "$b"
done

printf "\n%-34s %14s %15s %15s %14s %9s %5s\n" "ps 1 killed (-9), restarted" "restored step" "outage s" \
  "detect->step s" "ps 1 lost" "accuracy" "exit"
for cons in async sync; do
  name=kill-$cons
  set +e
  run "$name" --consistency "$cons" --epochs 4 --checkpoint-every-steps 40 --heartbeat-secs 1 --slow-step-ms 10 \
    --restart on-failure --kill ps-1 3
  rc=$?
  set -e
  logs=$tmp/$name/logs
  restored=$(grep -o "restored step [0-9]*" "$logs/ps-1.log" | awk '{ print $3 }' | tail -n 1)
  outage=$(grep -ho "applied [0-9.]* s after the failed round" "$logs"/worker-*.log | awk '{ print $2 }' | sort -g |
           tail -n 1)
  rec=$(grep -ho "began, [0-9.]* s after the failure was detected" "$logs"/worker-*.log | awk '{ print $2 }' |
        sort -g | tail -n 1)
  # ps 1's version after the restore against ps 0's, as a worker saw both when it re-registered
  lost=$(grep -ho "versions: ps 0 at [0-9]*, ps 1 at [0-9]*" "$logs/worker-0.log" | head -n 1 |
         awk '{ print $5 - $9 }')
  printf "%-34s %14s %15s %15s %14s %9s %5s\n" "$cons" "${restored:--}" "${outage:--}" "${rec:--}" \
    "${lost:--} steps" "$(field "$tmp/$name" test_accuracy)" "$rc"
done
