#!/usr/bin/env bash
# Starts a tfps cluster on this machine: M ps and N workers (worker 0 is the
# chief), each a real process with its own TF_CONFIG, on free loopback ports.
#
#   deploy/local-cluster.sh [--ps M] [--workers N] [--evaluator] [--task-args TASK "ARGS"]... [options...]
#
# Options (e.g. --epochs 5 --output-dir out) go to every task; --task-args
# adds ARGS to one task only (TASK as ps-0, worker-1, evaluator-0), e.g. a
# straggler: --task-args worker-1 "--slow-step-ms 50". Per-task
# logs go to <output-dir>/logs/<job>-<index>.log. Ctrl-C stops every task. If
# any task fails, the rest are stopped and this script exits non-zero. At the
# end it prints the chief's summary.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${TFPS_BIN:-$here/build/bin}
num_ps=2
num_workers=2
evaluator=0
out=outputs
args=()

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
declare -A task_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ps|--workers)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 64 ] ||
        { echo "local-cluster: $1 \"${2:-}\": expected an integer in 1..64" >&2; exit 2; }
      if [ "$1" = --ps ]; then num_ps=$2; else num_workers=$2; fi
      shift 2;;
    --evaluator) evaluator=1; shift;;
    --task-args)
      [ $# -ge 3 ] && [[ "$2" =~ ^(ps|worker|evaluator)-[0-9]+$ ]] ||
        { echo "local-cluster: --task-args \"${2:-}\": expected --task-args ps-K|worker-K|evaluator-0 \"ARGS\"" >&2; exit 2; }
      task_args[$2]="${task_args[$2]:-} $3"; shift 3;;
    -h|--help) usage; exit 0;;
    --output-dir) [ $# -ge 2 ] || { echo "local-cluster: --output-dir: missing value" >&2; exit 2; }
      out=$2; args+=("$1" "$2"); shift 2;;
    --output-dir=*) out=${1#--output-dir=}; args+=("$1"); shift;;
    *) args+=("$1"); shift;;
  esac
done
for b in tfps-ps tfps-worker; do
  [ -x "$bin/$b" ] || { echo "local-cluster: $bin/$b not found: build first (cmake -S . -B build && cmake --build build) or set TFPS_BIN" >&2; exit 2; }
done

# Free loopback ports: ask the kernel for ephemeral ones through bash's /dev/tcp
# probe (connection refused = nobody listens) in a range away from common services.
used=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 30000 ))
    case "$used" in *" $p "*) continue;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then used="$used$p "; echo "$p"; return; fi
  done
  echo "local-cluster: found no free port" >&2; exit 1
}
ps_list=""; worker_list=""
for i in $(seq 0 $((num_ps - 1))); do ps_list="$ps_list${ps_list:+, }\"127.0.0.1:$(free_port)\""; done
for i in $(seq 0 $((num_workers - 1))); do worker_list="$worker_list${worker_list:+, }\"127.0.0.1:$(free_port)\""; done
cluster="{\"worker\": [$worker_list], \"ps\": [$ps_list]}"

mkdir -p "$out/logs"
# Two processes per core or more: one OpenBLAS thread each unless asked otherwise.
export TFPS_THREADS=${TFPS_THREADS:-1}
pids=(); names=()
start() {   # job index daemon
  local tf="{\"cluster\": $cluster, \"task\": {\"type\": \"$1\", \"index\": $2}}" extra=()
  read -r -a extra <<<"${task_args[$1-$2]:-}"
  TF_CONFIG="$tf" "$bin/$3" "${args[@]}" "${extra[@]+"${extra[@]}"}" >"$out/logs/$1-$2.log" 2>&1 &
  pids+=($!); names+=("$1-$2")
}
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap 'echo "local-cluster: interrupted, stopping every task" >&2; stop_all; exit 130' INT TERM

echo "local-cluster: $num_ps ps, $num_workers workers$([ $evaluator = 1 ] && echo ", 1 evaluator"); cluster $cluster; logs in $out/logs" >&2
for i in $(seq 0 $((num_ps - 1))); do start ps "$i" tfps-ps; done
for i in $(seq 0 $((num_workers - 1))); do start worker "$i" tfps-worker; done
[ $evaluator = 1 ] && start evaluator 0 tfps-worker

# Wait for every task; the first failure stops the rest.
remaining=("${pids[@]}")
while [ ${#remaining[@]} -gt 0 ]; do
  set +e
  wait -n -p finished "${remaining[@]}"
  rc=$?
  set -e
  [ -n "${finished:-}" ] || break
  keep=()
  for p in "${remaining[@]}"; do [ "$p" = "$finished" ] || keep+=("$p"); done
  remaining=("${keep[@]+"${keep[@]}"}")
  for k in "${!pids[@]}"; do [ "${pids[$k]}" = "$finished" ] && name=${names[$k]}; done
  if [ "$rc" -ne 0 ]; then
    echo "local-cluster: $name exited $rc; stopping the other tasks. Last lines of $out/logs/$name.log:" >&2
    tail -n 5 "$out/logs/$name.log" >&2
    stop_all
    exit 1
  fi
  echo "local-cluster: $name exited 0" >&2
done
trap - INT TERM
grep -h '^tfps:' "$out/logs/worker-0.log" || true
[ -f "$out/summary.json" ] && echo "local-cluster: summary in $out/summary.json, model in $out/model/" >&2
