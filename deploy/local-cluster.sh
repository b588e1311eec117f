#!/usr/bin/env bash
# Starts a tfps cluster on this machine: M ps and N workers (worker 0 is the
# chief), each a real process with its own TF_CONFIG, on free loopback ports.
#
#   deploy/local-cluster.sh [--ps M] [--workers N] [--evaluator] [--task-args TASK "ARGS"]...
#                           [--restart never|on-failure] [--max-restarts R] [--kill TASK SECONDS]... [--tls]
#                           [--quiet] [options...]
#
# Each ps listens on its own 127.0.0.1 address (its TF_CONFIG address). With
# --tls every task talks mTLS: deploy/make-certs.sh makes a CA and a
# certificate per task into <output-dir>/tls, and each task gets
# --tls-cert <output-dir>/tls/<task>.pem --tls-key ....key --tls-ca ca.pem.
#
# Options (e.g. --epochs 5 --output-dir out) go to every task; --task-args
# adds ARGS to one task only (TASK as ps-0, worker-1, evaluator-0), e.g. a
# straggler: --task-args worker-1 "--slow-step-ms 50". Per-task logs go to
# <output-dir>/logs/<job>-<index>.log; <output-dir>/logs/pids lists the
# running tasks as lines "<task> <pid>" (rewritten on every start, restart and
# exit). Ctrl-C stops every task. At the end it prints the chief's summary.
#
# Failures: with --restart never (default), the first task to exit non-zero
# stops the rest and this script exits 1. With --restart on-failure (as
# Kubernetes' restartPolicy OnFailure), such a task is restarted with the same
# TF_CONFIG, arguments and log file (appended to, after a line
# "local-cluster: restarting TASK (exit N, restart K of R)") after a backoff of
# 1 s doubling to 10 s, at most --max-restarts times (default 5) per task; when
# they are used up, the rest are stopped and this script exits 1. A task that
# exits 0 is done; one that exits 2 (a usage or configuration error) is never
# restarted. --kill TASK SECONDS (repeatable) kill -9s TASK that many seconds
# after the start, once per --kill, to try faults (a killed task exits 137 and
# counts as a failure).
#
# Progress: the chief's progress lines (step, epoch, loss, examples/s of this
# task and of the cluster, ETA, global step, the evaluator's latest accuracy)
# and its warnings are shown as they come: on a terminal as one updating line,
# else (a pipe, CI) as plain lines. --quiet shows none; every task's full log
# stays in <output-dir>/logs.
#
# Each run gets a random job secret (TFPS_JOB_SECRET, in the tasks'
# environment only) unless TFPS_JOB_SECRET, TFPS_JOB_SECRET_FILE or
# --job-secret-file is given.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
self=$(cd "$(dirname "$0")" && pwd)
# Installed (cmake --install, the .deb) as tfps-local-cluster next to tfps-ps and
# tfps-worker: use its own directory; in the source tree: build/bin.
if [ -z "${TFPS_BIN:-}" ] && [ -x "$self/tfps-ps" ] && [ -x "$self/tfps-worker" ]; then
  bin=$self
else
  bin=${TFPS_BIN:-$here/build/bin}
fi
# deploy/make-certs.sh, installed as tfps-make-certs
make_certs=$here/deploy/make-certs.sh
[ -x "$self/tfps-make-certs" ] && make_certs=$self/tfps-make-certs
num_ps=2
num_workers=2
evaluator=0
tls=0
out=outputs
restart=never
max_restarts=5
quiet=0
args=()
kills=()   # "TASK SECONDS" pairs

usage() { sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; }
declare -A task_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ps|--workers)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 64 ] ||
        { echo "local-cluster: $1 \"${2:-}\": expected an integer in 1..64" >&2; exit 2; }
      if [ "$1" = --ps ]; then num_ps=$2; else num_workers=$2; fi
      shift 2;;
    --evaluator) evaluator=1; shift;;
    --tls) tls=1; shift;;
    --quiet) quiet=1; shift;;
    --task-args)
      [ $# -ge 3 ] && [[ "$2" =~ ^(ps|worker|evaluator)-[0-9]+$ ]] ||
        { echo "local-cluster: --task-args \"${2:-}\": expected --task-args ps-K|worker-K|evaluator-0 \"ARGS\"" >&2; exit 2; }
      task_args[$2]="${task_args[$2]:-} $3"; shift 3;;
    --restart)
      [ $# -ge 2 ] && [[ "$2" =~ ^(never|on-failure)$ ]] ||
        { echo "local-cluster: --restart \"${2:-}\": expected never or on-failure" >&2; exit 2; }
      restart=$2; shift 2;;
    --max-restarts)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -le 1000 ] ||
        { echo "local-cluster: --max-restarts \"${2:-}\": expected an integer in 0..1000" >&2; exit 2; }
      max_restarts=$2; shift 2;;
    --kill)
      [ $# -ge 3 ] && [[ "$2" =~ ^(ps|worker|evaluator)-[0-9]+$ ]] && [[ "$3" =~ ^[0-9]+(\.[0-9]+)?$ ]] ||
        { echo "local-cluster: --kill \"${2:-}\" \"${3:-}\": expected --kill ps-K|worker-K|evaluator-0 SECONDS" >&2; exit 2; }
      kills+=("$2 $3"); shift 3;;
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
tasks=()
for i in $(seq 0 $((num_ps - 1))); do tasks+=("ps-$i"); done
for i in $(seq 0 $((num_workers - 1))); do tasks+=("worker-$i"); done
[ $evaluator = 1 ] && tasks+=("evaluator-0")
for k in "${kills[@]+"${kills[@]}"}"; do
  case " ${tasks[*]} " in *" ${k% *} "*) ;;
    *) echo "local-cluster: --kill ${k% *}: no such task in this cluster (${tasks[*]})" >&2; exit 2;; esac
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
if [ $tls = 1 ]; then   # a new CA and certificates for these ports, every run
  rm -rf "$out/tls"
  "$make_certs" --out "$out/tls" --days 30 "{\"cluster\": $cluster$([ $evaluator = 1 ] && echo ', "task": {"type": "evaluator", "index": 0}')}" 2>"$out/logs/make-certs.log" ||
    { echo "local-cluster: --tls: deploy/make-certs.sh failed:" >&2; cat "$out/logs/make-certs.log" >&2; exit 1; }
fi
pidfile=$out/logs/pids
# A job secret of its own for this run (README, Security), unless one was given: another process on
# this machine that finds a ps port cannot join the job or call it.
given_secret=${TFPS_JOB_SECRET_FILE:-}
for a in "${args[@]+"${args[@]}"}"; do case "$a" in --job-secret-file|--job-secret-file=*) given_secret=1;; esac; done
if [ -z "${TFPS_JOB_SECRET:-}" ] && [ -z "$given_secret" ]; then
  TFPS_JOB_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  export TFPS_JOB_SECRET
fi
# Two processes per core or more: one OpenBLAS thread each unless asked otherwise.
export TFPS_THREADS=${TFPS_THREADS:-1}
declare -A pid_of=()     # running task -> pid
declare -A restarts=()   # task -> restarts so far
declare -A last_rc=()    # task -> exit status of its last run
declare -A timer_of=()   # backoff timer pid -> task it restarts
helpers=()               # --kill timers

log_of() { echo "$out/logs/$1.log"; }
# Both stderr and the task's log (opened O_APPEND by every writer, so lines never overwrite each other).
# (stderr writes in the wait loop never fail the script: a reader that went away must not orphan the tasks)
say() { echo "local-cluster: $2" >&2 2>/dev/null || true; echo "local-cluster: $2" >>"$(log_of "$1")"; }
write_pids() {
  local t
  for t in "${tasks[@]}"; do [ -n "${pid_of[$t]:-}" ] && echo "$t ${pid_of[$t]}"; done >"$pidfile.tmp"
  mv -f "$pidfile.tmp" "$pidfile"
}
start() {   # task (job-index)
  local job=${1%-*} index=${1##*-} daemon=tfps-worker extra=()
  [ "$job" = ps ] && daemon=tfps-ps
  local tf="{\"cluster\": $cluster, \"task\": {\"type\": \"$job\", \"index\": $index}}"
  read -r -a extra <<<"${task_args[$1]:-}"
  [ $tls = 1 ] && extra+=(--tls-cert "$out/tls/$1.pem" --tls-key "$out/tls/$1.key" --tls-ca "$out/tls/ca.pem")
  TF_CONFIG="$tf" "$bin/$daemon" "${args[@]}" "${extra[@]+"${extra[@]}"}" >>"$(log_of "$1")" 2>&1 &
  pid_of[$1]=$!
  write_pids
}
describe() {   # exit status -> "137 (SIGKILL)"
  if [ "$1" -gt 128 ] && [ "$1" -lt 160 ]; then echo "$1 (SIG$(kill -l $(($1 - 128)) 2>/dev/null || echo ?))"; else echo "$1"; fi
}
stop_helpers() {
  local p
  for p in "${helpers[@]+"${helpers[@]}"}" "${!timer_of[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${helpers[@]+"${helpers[@]}"}" "${!timer_of[@]}"; do wait "$p" 2>/dev/null || true; done
  helpers=(); timer_of=()
}
stop_all() {
  local p
  stop_helpers
  for p in "${pid_of[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pid_of[@]}"; do wait "$p" 2>/dev/null || true; done
  pid_of=()
  write_pids
}
# The chief's progress, read from its log as it grows (polled by the wait loop
# below: no extra process to clean up). prog_off: bytes of it shown so far;
# prog_open: a terminal's updating line is showing.
chief_log=$(log_of worker-0)
prog_off=0
prog_open=0
prog_tty=0
[ -t 2 ] && [ "${TERM:-dumb}" != dumb ] && prog_tty=1
# The display never stops the run: a write that fails (a reader that went away: SIGPIPE is ignored
# below) turns it off.
prog_line() {   # kind (step|note) text
  local t=$2
  if [ $prog_tty = 1 ]; then
    if [ "$1" = step ]; then   # one terminal row: \r and erase-line redraw only that row, so cut to its width
      local cols
      cols=$(tput cols 2>/dev/null || echo "${COLUMNS:-80}")
      [[ $cols =~ ^[0-9]+$ ]] && [ "$cols" -gt 10 ] || cols=80
      [ ${#t} -ge "$cols" ] && t="${t:0:$((cols - 2))}…"
      printf '\r\033[K%s' "$t" >&2 2>/dev/null || quiet=1
      prog_open=1
    else
      printf '\r\033[K%s\n' "$t" >&2 2>/dev/null || quiet=1
      prog_open=0
    fi
  else
    printf '%s\n' "$t" >&2 2>/dev/null || quiet=1
  fi
}
prog_end() { if [ $prog_open = 1 ]; then printf '\n' >&2 2>/dev/null || true; prog_open=0; fi; }
show_progress() {
  [ $quiet = 0 ] || return 0
  local size chunk line msg
  size=$(stat -c %s "$chief_log" 2>/dev/null || echo 0)
  [ "$size" -lt "$prog_off" ] && prog_off=0   # truncated: read it again
  [ "$size" -gt "$prog_off" ] || return 0
  chunk=$(LC_ALL=C tail -c +$((prog_off + 1)) "$chief_log" 2>/dev/null | LC_ALL=C head -c $((size - prog_off)) | tr -d '\000'; echo x)
  chunk=${chunk%x}
  case "$chunk" in *$'\n'*) ;; *) return 0;; esac   # no whole line yet
  chunk=${chunk%$'\n'*}$'\n'                       # whole lines only; the rest comes next time
  prog_off=$((prog_off + $(printf '%s' "$chunk" | LC_ALL=C wc -c)))
  local hdr day mon tod lvl
  while IFS= read -r line; do
    # pid:<role><index> <date: day month> <time> <level> message (README, Outputs)
    read -r hdr day mon tod lvl msg <<<"$line" || true
    case "$lvl" in
      I) case "$msg" in
           "step "*) prog_line step "chief: $msg";;
           "final evaluation"*|"waiting for the workers"*|"resuming at step"*|"checkpoint step "*" (final)"*)
             prog_line note "chief: $msg";;
         esac;;
      W|E) prog_line note "chief: $msg";;
    esac
  done <<<"$chunk"
}

trap 'prog_end; echo "local-cluster: interrupted, stopping every task" >&2; stop_all; exit 130' INT TERM
trap '' PIPE   # a reader of our stderr that goes away (| head) must not kill this script and orphan the tasks
trap 'stop_all' EXIT   # whatever ends this script (an error too) stops what it started

echo "local-cluster: $num_ps ps, $num_workers workers$([ $evaluator = 1 ] && echo ", 1 evaluator")$([ $tls = 1 ] && echo ", mTLS (certificates in $out/tls)"); cluster $cluster; logs in $out/logs$([ $restart = on-failure ] && echo "; --restart on-failure, at most $max_restarts per task")" >&2
if compgen -G "$out/checkpoints/step-*/MANIFEST" >/dev/null; then
  echo "local-cluster: $out/checkpoints holds checkpoints: the ps restore the newest and training resumes from it (as TF's MonitoredTrainingSession; a new --output-dir starts over)" >&2
fi
for t in "${tasks[@]}"; do : >"$(log_of "$t")"; restarts[$t]=0; done
for t in "${tasks[@]}"; do start "$t"; done

# --kill: each in a subshell of its own that sleeps, then kill -9s the task's
# pid of that moment (from the pids file: a task in backoff or done is not in it).
for k in "${kills[@]+"${kills[@]}"}"; do
  (
    task=${k% *} secs=${k#* }
    trap 'kill -TERM "$sp" 2>/dev/null; exit 0' TERM
    sleep "$secs" </dev/null >/dev/null 2>&1 & sp=$!
    wait "$sp"
    pid=$(awk -v t="$task" '$1 == t { print $2 }' "$pidfile")
    if [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; then
      say "$task" "--kill $task $secs: sent SIGKILL to $task (pid $pid)"
    else
      say "$task" "--kill $task $secs: $task is not running, nothing killed"
    fi
  ) &
  helpers+=($!)
done

# Wait for every task and backoff timer. A task that exits non-zero is
# restarted (on-failure, a timer's end) or stops the rest. Polled, not
# `wait -n`: bash's wait -n can miss a child that ended while the script was
# busy elsewhere (seen: a task killed during another's restart was never
# noticed). bash reaps every child as it ends and keeps its status for `wait`.
while [ ${#pid_of[@]} -gt 0 ] || [ ${#timer_of[@]} -gt 0 ]; do
  show_progress
  finished=
  for p in "${pid_of[@]}" "${!timer_of[@]}"; do
    kill -0 "$p" 2>/dev/null || { finished=$p; break; }
  done
  if [ -z "$finished" ]; then sleep 0.2; continue; fi
  set +e
  wait "$finished" 2>/dev/null   # not bash's own "Killed" line: ours says it
  rc=$?
  set -e
  show_progress   # what the task said before it ended comes first
  prog_end
  if [ -n "${timer_of[$finished]:-}" ]; then   # a backoff ended: start the task again
    name=${timer_of[$finished]}
    unset "timer_of[$finished]"
    say "$name" "restarting $name (exit ${last_rc[$name]}, restart ${restarts[$name]} of $max_restarts)"
    start "$name"
    continue
  fi
  name=
  for t in "${!pid_of[@]}"; do [ "${pid_of[$t]}" = "$finished" ] && name=$t; done
  unset "pid_of[$name]"
  write_pids
  last_rc[$name]=$rc
  if [ "$rc" -eq 0 ]; then
    echo "local-cluster: $name exited 0" >&2 2>/dev/null || true
    continue
  fi
  if [ $restart = on-failure ] && [ "$rc" -ne 2 ] && [ "${restarts[$name]}" -lt "$max_restarts" ]; then
    restarts[$name]=$((restarts[$name] + 1))
    delay=$((1 << (restarts[$name] - 1))); [ $delay -gt 10 ] && delay=10
    echo "local-cluster: $name exited $(describe "$rc"); restart in $delay s" >&2 2>/dev/null || true
    sleep "$delay" </dev/null >/dev/null 2>&1 &
    timer_of[$!]=$name
    continue
  fi
  why=""
  if [ $restart = on-failure ]; then
    if [ "$rc" -eq 2 ]; then why=" (exit 2 is a usage or configuration error: not restarted)"
    else why=" after ${restarts[$name]} restart$([ "${restarts[$name]}" = 1 ] || echo s) (--max-restarts $max_restarts)"; fi
  fi
  echo "local-cluster: $name exited $(describe "$rc")$why; stopping the other tasks. Last lines of $(log_of "$name"):" >&2 2>/dev/null || true
  tail -n 5 "$(log_of "$name")" >&2 2>/dev/null || true
  stop_all
  exit 1
done
show_progress
prog_end
stop_helpers
trap - INT TERM
grep -h '^tfps:' "$out/logs/worker-0.log" 2>/dev/null || true
if [ $evaluator = 1 ]; then   # the evaluator's last word: its final evaluation (eval.json)
  grep -h ' I final evaluation\| I done: \| W no final evaluation' "$out/logs/evaluator-0.log" | tail -n 2 |
    sed 's/^[^ ]* [0-9]* [A-Za-z]* [0-9:.]* [A-Z] /evaluator: /' >&2 || true
fi
if [ -f "$out/summary.json" ]; then
  echo "local-cluster: summary in $out/summary.json, model in $out/model/" >&2 2>/dev/null || true
fi
