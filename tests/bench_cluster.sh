#!/usr/bin/env bash
# Benchmark, not a test: training on this machine, in one run, with the same
# data, model, batch and epochs, one OpenBLAS thread per process.
#
#   tests/bench_cluster.sh [DATA_DIR=data/mnist] [EPOCHS=10]
#
# 1. Throughput and accuracy of the single-process reference, then async,
#    sync and ssp (staleness 2) clusters of 1, 2 and 4 workers (1 ps for one
#    worker, 2 ps otherwise), SGD lr 0.1: examples/s (the chief's
#    summary.json), ratio to the single process of the same run, test
#    accuracy, seconds the ps held pulls (all workers), gradients dropped;
#    async 1x1 and 2x2 again with --pushpull 0 (a Push and a Pull per ps
#    per step, the baseline of the fused PushPull the rows above use), and
#    async and sync 1x1 and 2x2 with --wire-dtype bf16.
# 2. --wire-dtype fp32, bf16, fp16: accuracy on the digits and
#    Fashion-MNIST and the bytes per step the ps counted.
# 3. Adam (lr 0.001): local mode and a 2 ps + 2 workers sync cluster against
#    PyTorch's Adam on the same model, data, epochs and batch
#    (tests/bench_torch_adam.py; skipped when python3 has no torch:
#    apt-get install python3-torch).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$here/data/mnist}
epochs=${2:-10}
bin=${TFPS_BIN:-$here/build/bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--data-folder "$data" --epochs "$epochs" --batch-size 64 --log-every 0 --threads 1)

field() { sed -n "s/.*\"$2\":[[:space:]]*\([0-9.eE+-]*\).*/\1/p" "$1/summary.json" | head -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cluster() {   # name ps workers args...
  local name=$1 ps=$2 w=$3
  shift 3
  TFPS_BIN=$bin bash "$here/deploy/local-cluster.sh" --ps "$ps" --workers "$w" "${common[@]}" "$@" \
    --output-dir "$tmp/$name" >/dev/null 2>"$tmp/$name.err" ||
    { echo "bench_cluster: $name failed:" >&2; tail -n 5 "$tmp/$name.err" >&2; exit 1; }
}

echo "bench_cluster: $(nproc) cores, data $data, $epochs epochs, batch 64 per worker, 784-300-100-10," \
     "1 OpenBLAS thread/process"
throughput() {
  env -u TF_CONFIG "$bin/tfps-worker" "${common[@]}" --output-dir "$tmp/local" >/dev/null 2>"$tmp/local.log"
  base=$(field "$tmp/local" examples_per_s)
  printf "\n%-30s %12s %9s %10s %9s %8s %8s\n" "configuration (sgd, lr 0.1)" "examples/s" "vs local" "accuracy" \
    "held s" "dropped" "wall s"
  printf "%-30s %12.0f %9s %10.4f %9s %8s %8.2f\n" "single process (reference)" "$base" "1.00" \
    "$(field "$tmp/local" test_accuracy)" "-" "-" "$(field "$tmp/local" wall_s)"
  for mode in async sync ssp; do
    for w in 1 2 4; do
      ps=$([ "$w" = 1 ] && echo 1 || echo 2)
      name="$mode-${ps}x$w"
      cluster "$name" "$ps" "$w" --consistency "$mode" --staleness 2
      eps=$(field "$tmp/$name" examples_per_s)
      printf "%-30s %12.0f %9s %10.4f %9.2f %8.0f %8.2f\n" "$mode, $ps ps + $w worker$([ "$w" = 1 ] || echo s)" \
        "$eps" "$(ratio "$eps" "$base")" "$(field "$tmp/$name" test_accuracy)" "$(field "$tmp/$name" wait_s)" \
        "$(field "$tmp/$name" dropped)" "$(field "$tmp/$name" wall_s)"
    done
  done
  # bf16 on the wire (--wire-dtype): the async and sync 1x1 and 2x2 clusters again, half the bytes per step
  for mode in async sync; do
    for w in 1 2; do
      name="$mode-${w}x$w-bf16"
      cluster "$name" "$w" "$w" --consistency "$mode" --wire-dtype bf16
      eps=$(field "$tmp/$name" examples_per_s)
      printf "%-30s %12.0f %9s %10.4f %9.2f %8.0f %8.2f\n" "$mode, $w ps + $w worker$([ "$w" = 1 ] || echo s), bf16" \
        "$eps" "$(ratio "$eps" "$base")" "$(field "$tmp/$name" test_accuracy)" "$(field "$tmp/$name" wait_s)" \
        "$(field "$tmp/$name" dropped)" "$(field "$tmp/$name" wall_s)"
    done
  done
  # the same async clusters with a Push and a Pull per ps per step instead of one PushPull (the rows above)
  for w in 1 2; do
    name="async-${w}x$w-two-calls"
    cluster "$name" "$w" "$w" --consistency async --pushpull 0
    eps=$(field "$tmp/$name" examples_per_s)
    printf "%-30s %12.0f %9s %10.4f %9s %8s %8.2f\n" "async, $w ps + $w worker$([ "$w" = 1 ] || echo s), --pushpull 0" \
      "$eps" "$(ratio "$eps" "$base")" "$(field "$tmp/$name" test_accuracy)" "-" "-" "$(field "$tmp/$name" wall_s)"
  done
}

# 2. --wire-dtype and accuracy: sync 1 ps + 1 worker (deterministic: one rerun gives the same bits) in fp32,
#    bf16 and fp16 on the digits and on Fashion-MNIST (FASHION_DIR, default: deploy/get-data.sh fashion-mnist's
#    folder under $tmp when Debian's dataset-fashion-mnist is installed), and the bytes per step the ps counted
wire_dtypes() {
  echo
  printf "%-28s %8s %10s %16s %14s %12s\n" "sync 1 ps + 1 worker" "dtype" "accuracy" "vs fp32 (points)" \
    "bytes/step" "vs fp32"
  fashion=${FASHION_DIR:-}
  if [ -z "$fashion" ] && [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    fashion=$tmp/fashion
    bash "$here/deploy/get-data.sh" fashion-mnist "$fashion" >/dev/null 2>&1 || fashion=""
  fi
  for set in digits fashion; do
    dir=$data
    if [ "$set" = fashion ]; then
      [ -n "$fashion" ] || { echo "(Fashion-MNIST rows skipped: apt-get install dataset-fashion-mnist)"; continue; }
      dir=$fashion
    fi
    for dt in fp32 bf16 fp16; do
      name="dtype-$set-$dt"
      TFPS_BIN=$bin bash "$here/deploy/local-cluster.sh" --ps 1 --workers 1 --data-folder "$dir" --epochs "$epochs" \
        --batch-size 64 --log-every 0 --threads 1 --consistency sync --wire-dtype "$dt" --output-dir "$tmp/$name" \
        >/dev/null 2>"$tmp/$name.err" || { echo "bench_cluster: $name failed:" >&2; tail -n 5 "$tmp/$name.err" >&2; exit 1; }
      acc=$(field "$tmp/$name" test_accuracy)
      bps=$(field "$tmp/$name" bytes_per_step)
      [ "$dt" = fp32 ] && { acc32=$acc; bps32=$bps; }
      printf "%-28s %8s %10.4f %16s %14.0f %12s\n" "$set" "$dt" "$acc" \
        "$(awk -v a="$acc" -v b="$acc32" 'BEGIN { printf "%+.2f", (a - b) * 100 }')" "$bps" "$(ratio "$bps" "$bps32")"
    done
  done
}

adam() {
  echo
  adam=(--optimizer adam --learning-rate 0.001)
  env -u TF_CONFIG "$bin/tfps-worker" "${common[@]}" "${adam[@]}" --output-dir "$tmp/adam-local" >/dev/null \
    2>"$tmp/adam-local.log"
  cluster adam-sync 2 2 --consistency sync "${adam[@]}"
  torch_line=""
  for py in python3 /usr/bin/python3; do
    if "$py" -c "import torch" 2>/dev/null; then
      torch_line=$("$py" "$here/tests/bench_torch_adam.py" "$data" "$epochs" 64 0.001 | grep '^torch_adam') || true
      break
    fi
  done
  torch_acc=$(echo "$torch_line" | sed -n 's/.*test_accuracy=\([0-9.]*\).*/\1/p')
  printf "%-38s %10s %18s\n" "adam, lr 0.001" "accuracy" "vs PyTorch (points)"
  for run in adam-local adam-sync; do
    acc=$(field "$tmp/$run" test_accuracy)
    name=$([ "$run" = adam-local ] && echo "tfps local mode" || echo "tfps sync, 2 ps + 2 workers")
    printf "%-38s %10.4f %18s\n" "$name" "$acc" \
      "$([ -n "$torch_acc" ] && awk -v a="$acc" -v b="$torch_acc" 'BEGIN { printf "%+.2f", (a - b) * 100 }' || echo -)"
  done
  if [ -n "$torch_acc" ]; then
    printf "%-38s %10.4f %18s\n" "PyTorch $("${py}" -c 'import torch; print(torch.__version__)') Adam" "$torch_acc" "0"
  else
    echo "(PyTorch not installed: apt-get install python3-torch for the baseline row)"
  fi
}

# BENCH_ONLY="throughput wire_dtypes adam" (any of them) runs only those sections; unset: all
for section in ${BENCH_ONLY:-throughput wire_dtypes adam}; do
  case $section in
    throughput | wire_dtypes | adam) "$section" ;;
    *) echo "bench_cluster: BENCH_ONLY: unknown section $section: expected throughput, wire_dtypes or adam" >&2; exit 2 ;;
  esac
done
