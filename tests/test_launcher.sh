#!/usr/bin/env bash
# test_launcher.sh BIN_DIR DATA_DIR -- deploy/local-cluster.sh as a supervisor.
#
# - --restart on-failure: a worker kill -9'd by --kill, and another found in
#   logs/pids and killed by this test, are restarted (the "restarting" line in
#   the log and on stderr) and the run ends 0 with a summary; logs/pids names
#   every task while it runs and none at the end;
# - --max-restarts 1 with two kills: the second failure stops the run (exit 1);
# - exit 2 (a bad flag) is not restarted;
# - --restart never (default): a kill stops the run, exit 1, as before.
set -uo pipefail
bin=${1:?usage: test_launcher.sh BIN_DIR DATA_DIR}
data=${TFPS_TEST_DATA:-${2:?usage: test_launcher.sh BIN_DIR DATA_DIR}}
src=$(cd "$(dirname "$0")/.." && pwd)
[ -r "$data/train-images-idx3-ubyte.gz" ] ||
  { echo "test_launcher: no MNIST data in $data: run deploy/get-data.sh mnist $data first" >&2; exit 1; }
tmp=$(mktemp -d /tmp/tfps-launcher-XXXXXX)
lpid=
cleanup() { [ -n "$lpid" ] && kill -TERM "$lpid" 2>/dev/null && wait "$lpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
launch() {   # out-dir args...: runs the launcher, stderr into out.err; returns its exit code
  local o=$1; shift
  TFPS_BIN=$bin timeout 120 bash "$src/deploy/local-cluster.sh" --data-folder "$data" --output-dir "$o" \
    --batch-size 32 --log-every 0 "$@" >"$o.out" 2>"$o.err"
}
has() { grep -qF -- "$2" "$1" || fail "$1 lacks \"$2\""; }

# 1. restarts: --kill at 2.5 s, then (once worker-1 is back) a kill -9 of worker-0 from the pids file; training lasts ~6 s
o=$tmp/restart; mkdir -p "$o/logs"
t0=$(date +%s.%N)
launch "$o" --restart on-failure --steps 300 --slow-step-ms 20 --kill worker-1 2.5 &
lpid=$!
# until worker-1 was killed and restarted (polled: a loaded machine is slow to start processes)
for _ in $(seq 1 300); do
  grep -q "restarting worker-1" "$o/logs/worker-1.log" 2>/dev/null && [ "$(wc -l <"$o/logs/pids")" -eq 4 ] && break
  sleep 0.1
done
pids_now=$(cat "$o/logs/pids")
n=$(echo "$pids_now" | wc -l)
[ "$n" -eq 4 ] || fail "logs/pids has $n lines while running, expected 4: $pids_now"
victim=$(echo "$pids_now" | awk '$1 == "worker-0" { print $2 }')
[ -n "$victim" ] && kill -KILL "$victim" || fail "no worker-0 in logs/pids"
wait "$lpid"; rc=$?; lpid=
echo "restart run: exit $rc in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
[ $rc -eq 0 ] || { fail "restart run exited $rc, expected 0"; cat "$o.err" >&2; }
has "$o.err" "restarting worker-1 (exit 137, restart 1 of 5)"
has "$o.err" "restarting worker-0 (exit 137, restart 1 of 5)"
has "$o/logs/worker-1.log" "local-cluster: --kill worker-1 2.5: sent SIGKILL to worker-1"
has "$o/logs/worker-1.log" "local-cluster: restarting worker-1 (exit 137, restart 1 of 5)"
has "$o/logs/worker-0.log" "local-cluster: restarting worker-0 (exit 137, restart 1 of 5)"
# appended, not truncated: the restart line, then the second run's lines (the first may have logged nothing yet)
awk '/local-cluster: restarting worker-1/ { r = 1 } r && / I registering with/ { ok = 1 } END { exit !ok }' \
  "$o/logs/worker-1.log" || fail "worker-1.log: expected the restarted run's lines after the restart line"
[ -f "$o/summary.json" ] || fail "no summary.json after the restarts"
[ ! -s "$o/logs/pids" ] || fail "logs/pids not empty at the end: $(cat "$o/logs/pids")"

# 2. --max-restarts 1: the second kill of worker-1 ends the run
o=$tmp/exhaust; mkdir -p "$o"
launch "$o" --restart on-failure --max-restarts 1 --steps 1000 --slow-step-ms 20 --kill worker-1 1 --kill worker-1 3.5
rc=$?
[ $rc -eq 1 ] || fail "exhausted restarts: exit $rc, expected 1"
has "$o.err" "restarting worker-1 (exit 137, restart 1 of 1)"
has "$o.err" "worker-1 exited 137 (SIGKILL) after 1 restart (--max-restarts 1); stopping the other tasks"

# 3. exit 2 is the user's mistake: not restarted
o=$tmp/usage; mkdir -p "$o"
launch "$o" --restart on-failure --steps 100 --task-args worker-1 "--no-such-flag 1"
rc=$?
[ $rc -eq 1 ] || fail "a bad flag: exit $rc, expected 1"
has "$o.err" "worker-1 exited 2 (exit 2 is a usage or configuration error: not restarted)"
grep -q restarting "$o.err" && fail "a task that exited 2 was restarted"

# 4. --restart never: a kill stops everything, as before
o=$tmp/never; mkdir -p "$o"
launch "$o" --steps 1000 --slow-step-ms 20 --kill ps-1 1
rc=$?
[ $rc -eq 1 ] || fail "--restart never with a kill: exit $rc, expected 1"
has "$o.err" "ps-1 exited 137 (SIGKILL); stopping the other tasks"

# no task outlives its launcher
left=$(pgrep -f "$tmp" || true)
[ -z "$left" ] || fail "processes left behind: $left"
[ $failed -eq 0 ] && echo "test_launcher: passed"
exit $failed
