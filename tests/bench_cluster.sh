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
# 4. PyTorch RPC parameter server (tests/bench_torch_rpc.py: TensorPipe over
#    TCP on 127.0.0.1, async SGD lr 0.1) against tfps async on the same
#    data, batches, initial weights and epochs, 1 ps + 1 and 2 workers, per
#    exchange: pull-push (two RPCs a step; tfps --pushpull 0 --overlap 0),
#    fused (one RPC pushes and returns the weights; --pushpull 1 --overlap 0)
#    and fused-overlap (that RPC in flight while the next step computes;
#    tfps's default): examples/s of each, ratio tfps / torch, accuracies,
#    CPU ms per step of the ps and workers together (tfps: each daemon's
#    whole life, via wrappers that record bash's `times`; torch: training
#    only), then the script's raw torch_rpc lines. Skipped with a message
#    when python3 has no torch.
#
#   BENCH_ONLY=torch_rpc tests/bench_cluster.sh [DATA_DIR] [EPOCHS]   section 4 only (a few minutes)
#   TORCH_RPC_WORKERS="1 2"   worker counts of section 3
#   TORCH_RPC_TRANSPORTS=uv   TensorPipe transports of its rows; one more row
#                             (1 worker, pull-push) with TensorPipe's own choice
#                             (shm on one machine) unless TORCH_RPC_DEFAULT_ROW=0
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
  TFPS_BIN=${cluster_bin:-$bin} bash "$here/deploy/local-cluster.sh" --ps "$ps" --workers "$w" "${common[@]}" "$@" \
    --output-dir "$tmp/$name" >/dev/null 2>"$tmp/$name.err" ||
    { echo "bench_cluster: $name failed:" >&2; tail -n 5 "$tmp/$name.err" >&2; exit 1; }
}

torch_py() {   # the first python3 with torch, or nothing
  local py
  for py in python3 /usr/bin/python3; do
    if "$py" -c "import torch" 2>/dev/null; then echo "$py"; return; fi
  done
}
kv() { echo "$1" | sed -n "s/.* $2=\([^ ]*\).*/\1/p"; }
# tfps's CPU time: $tmp/cpubin holds a tfps-ps and a tfps-worker that run the real one, then write bash's
# `times` (its children's user and system time: the daemon's) to $TFPS_CPU_DIR; cpu_sum adds them up
cpu_wrappers() {
  local b
  mkdir -p "$tmp/cpubin"
  for b in tfps-ps tfps-worker; do
    cat >"$tmp/cpubin/$b" <<EOF
#!/usr/bin/env bash
$(printf %q "$bin/$b") "\$@"
rc=\$?
times >"\${TFPS_CPU_DIR:?}/$b.\$\$"
exit \$rc
EOF
    chmod +x "$tmp/cpubin/$b"
  done
}
cpu_sum() { awk 'FNR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } }
                 END { printf "%.3f\n", s }' "$1"/*; }
torch_rpc_section() {
  local py variant w name tline eps acc teps teps_all tacc args rc cpu tcpu lines="" transports=${TORCH_RPC_TRANSPORTS-uv}
  py=$(torch_py)
  echo
  cpu_wrappers
  if [ -z "$py" ]; then
    echo "torch_rpc: SKIP: no python3 with torch (apt-get install python3-torch) for the PyTorch RPC baseline"
    return 0
  fi
  echo "torch_rpc: PyTorch $("$py" -c 'import torch; print(torch.__version__)') RPC parameter server" \
       "(tests/bench_torch_rpc.py, TensorPipe transports ${transports:-default}) against tfps async, 1 ps," \
       "$epochs epochs, batch 64, sgd lr 0.1, 1 thread/process, the same batches and initial weights;" \
       "torch ex/s: after 20 warm-up steps per worker, all: every step (as tfps's summary.json);" \
       "CPU ms/step: the ps's and workers' CPU time (user + system, every thread) per step (tfps: each" \
       "daemon's whole life, start-up and evaluation included; torch: training only)"
  printf "%-18s %7s %10s %10s %10s %10s %9s %9s %9s %9s\n" "exchange" "workers" "tfps ex/s" "torch ex/s" "torch all" \
    "tfps/torch" "tfps acc" "torch acc" "tfps cpu" "torch cpu"
  for w in ${TORCH_RPC_WORKERS:-1 2}; do
    for variant in pull-push fused fused-overlap default-transports; do
      case $variant in
        pull-push) args=(--pushpull 0 --overlap 0) ;;
        fused) args=(--pushpull 1 --overlap 0) ;;
        fused-overlap) args=(--pushpull 1 --overlap 1) ;;
        default-transports)
          if [ "$w" != 1 ] || [ "${TORCH_RPC_DEFAULT_ROW:-1}" != 1 ] || [ -z "$transports" ]; then continue; fi ;;
      esac
      name="torch-rpc-tfps-$variant-1x$w"
      if [ "$variant" != default-transports ]; then
        mkdir -p "$tmp/$name.cpudir"
        TFPS_CPU_DIR=$tmp/$name.cpudir cluster_bin=$tmp/cpubin cluster "$name" 1 "$w" --consistency async "${args[@]}"
        eps=$(field "$tmp/$name" examples_per_s)
        acc=$(field "$tmp/$name" test_accuracy)
        cpu=$(awk -v c="$(cpu_sum "$tmp/$name.cpudir")" -v s="$(field "$tmp/$name" steps)" \
          'BEGIN { printf "%.2f", c * 1e3 / s }')
        args=(--variant "$variant" ${transports:+--transports "$transports"})
      else   # TensorPipe's own choice of transports, pull-push; tfps's row is pull-push's above
        args=(--variant pull-push)
        eps=$(field "$tmp/torch-rpc-tfps-pull-push-1x$w" examples_per_s)
        acc=$(field "$tmp/torch-rpc-tfps-pull-push-1x$w" test_accuracy)
        cpu=$(cat "$tmp/torch-rpc-tfps-pull-push-1x$w.cpu")
      fi
      echo "$cpu" >"$tmp/$name.cpu"
      rc=0
      tline=$("$py" "$here/tests/bench_torch_rpc.py" "$data" --workers "$w" --epochs "$epochs" --batch 64 --lr 0.1 \
        "${args[@]}" --timeout 900 2>"$tmp/$name.torch.err") || rc=$?
      if [ "$rc" = 77 ]; then   # torch without torch.distributed.rpc / TensorPipe
        echo "$tline"
        return 0
      fi
      tline=$(echo "$tline" | grep '^torch_rpc ' || true)
      if [ "$rc" != 0 ] || [ -z "$tline" ]; then
        echo "torch_rpc: $variant with $w worker(s) failed or skipped:" >&2
        tail -n 8 "$tmp/$name.torch.err" >&2
        printf "%-18s %7s %10.0f %10s %10s %10s %9.4f %9s %9s %9s\n" "$variant" "$w" "$eps" - - - "$acc" - "$cpu" -
        continue
      fi
      teps=$(kv "$tline" examples_per_s)
      teps_all=$(kv "$tline" examples_per_s_all)
      tacc=$(kv "$tline" test_accuracy)
      tcpu=$(kv "$tline" cpu_ms_per_step)
      printf "%-18s %7s %10.0f %10.0f %10.0f %10s %9.4f %9.4f %9.2f %9.2f\n" "$variant" "$w" "$eps" "$teps" \
        "$teps_all" "$(ratio "$eps" "$teps")" "$acc" "$tacc" "$cpu" "$tcpu"
      lines+="$tline (${variant})"$'\n'
    done
  done
  echo "(default-transports: TensorPipe's own transport choice, pull-push; its tfps column repeats pull-push's)"
  printf "%s" "$lines"
}


echo "bench_cluster: $(nproc) cores, data $data, $epochs epochs, batch 64 per worker, 784-300-100-10," \
     "1 OpenBLAS thread/process"
# One row of the throughput table: row LABEL RUN [HELD DROPPED] (default: the run's own wait_s and dropped).
row() {
  local eps held dropped
  eps=$(field "$tmp/$2" examples_per_s)
  held=${3:-$(printf %.2f "$(field "$tmp/$2" wait_s)")}
  dropped=${4:-$(printf %.0f "$(field "$tmp/$2" dropped)")}
  printf "%-30s %12.0f %9s %10.4f %9s %8s %8.2f\n" "$1" "$eps" "$(ratio "$eps" "$base")" \
    "$(field "$tmp/$2" test_accuracy)" "$held" "$dropped" "$(field "$tmp/$2" wall_s)"
}
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
      row "$mode, $ps ps + $w worker$([ "$w" = 1 ] || echo s)" "$name"
    done
  done
  # bf16 on the wire (--wire-dtype): the async and sync 1x1 and 2x2 clusters again, half the bytes per step
  for mode in async sync; do
    for w in 1 2; do
      name="$mode-${w}x$w-bf16"
      cluster "$name" "$w" "$w" --consistency "$mode" --wire-dtype bf16
      row "$mode, $w ps + $w worker$([ "$w" = 1 ] || echo s), bf16" "$name"
    done
  done
  # the same async clusters with a Push and a Pull per ps per step instead of one PushPull (the rows above)
  for w in 1 2; do
    name="async-${w}x$w-two-calls"
    cluster "$name" "$w" "$w" --consistency async --pushpull 0
    row "async, $w ps + $w worker$([ "$w" = 1 ] || echo s), --pushpull 0" "$name" - -
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

# BENCH_ONLY="throughput wire_dtypes adam torch_rpc" (any of them) runs only those sections; unset: all
for section in ${BENCH_ONLY:-throughput wire_dtypes adam torch_rpc}; do
  case $section in
    throughput | wire_dtypes | adam) "$section" ;;
    torch_rpc) torch_rpc_section ;;
    *) echo "bench_cluster: BENCH_ONLY: unknown section $section: expected throughput, wire_dtypes, adam or" \
            "torch_rpc" >&2
       exit 2 ;;
  esac
done
