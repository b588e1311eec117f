#!/usr/bin/env bash
# test_netns.sh BIN_DIR DATA_DIR -- a cluster over a real (virtual) network,
# and a link cut in the middle of training.
#
# Each task gets a network namespace of its own with one veth into a bridge
# that lives in a further namespace (the hub), so the host's network is never
# touched:
#
#     hub netns:  br0 -- v-ps0 v-ps1 v-w0 v-w1      (veth ends, no address)
#                          |     |     |    |
#     task netns:        eth0  eth0  eth0  eth0     10.77.0.10 .11 (ps), .20 .21 (workers), port 2222
#
# 2 ps and 2 workers (worker 0 is the chief) train async with every step slowed
# (--slow-step-ms) so training lasts ~15 s. Once the chief logs a step, the
# hub's end of worker 1's veth goes down for CUT_S seconds (5), then up again.
# A downed veth resets nothing: TCP just retransmits, so gRPC calls stall
# rather than fail, until the link is back or --rpc-timeout ends them. Here
# --rpc-timeout is 3 s, shorter than the cut: worker 1's round fails, it
# re-registers with every ps once the link is back (--ps-recovery-timeout)
# and trains on.
#
# Asserts: every process exits within 120 s of the link coming back; the chief
# exits 0; summary.json has test_accuracy >= 0.80; worker 1's log says it lost
# the ps (its calls' "no answer for" lines) and that it re-registered with every
# ps. Prints the timings (cut,
# restore, worker 1's longest gap between progress lines, each exit).
#
# Needs root and iproute2 (network namespaces, veth, bridge); exits 77 (ctest:
# skipped) with one line when they cannot be made. Everything it makes
# (namespaces, links, processes) is removed on every exit path; namespaces
# left by a run that was SIGKILLed are removed by the next run. The whole test
# is bounded at ~3 min. Env: TFPS_TEST_DATA overrides DATA_DIR; CUT_S the cut's
# seconds; TFPS_NETNS_ARGS the flags added to every task (default
# "--rpc-timeout 3 --heartbeat-secs 1").
set -uo pipefail
bin=${1:?usage: test_netns.sh BIN_DIR DATA_DIR}
data=${TFPS_TEST_DATA:-${2:?usage: test_netns.sh BIN_DIR DATA_DIR}}
cut_s=${CUT_S:-5}
say() { echo "test_netns: $(date +%T.%3N) $*"; }
skip() { echo "test_netns: SKIP: $*"; exit 77; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root to make network namespaces (uid $(id -u))"
command -v ip >/dev/null || skip "no ip command: apt-get install iproute2"
for b in tfps-ps tfps-worker; do [ -x "$bin/$b" ] || die "$bin/$b not found: build first"; done
[ -r "$data/train-images-idx3-ubyte.gz" ] || die "no MNIST data in $data: run deploy/get-data.sh mnist $data first"

pfx=tfpsnet$$
hub=$pfx-hub
tasks=(ps0 ps1 w0 w1)
declare -A addr=([ps0]=10.77.0.10 [ps1]=10.77.0.11 [w0]=10.77.0.20 [w1]=10.77.0.21)
declare -A pid_of=() rc_of=() end_of=()
made=()   # namespaces made, for cleanup
out=$(mktemp -d /tmp/tfps-netns-XXXXXX)
keep_out=0
napping=
nap() { sleep "$1" </dev/null >/dev/null 2>&1 & napping=$!; wait "$napping"; napping=; }   # a signal ends it

cleanup() {
  local p t
  [ -n "$napping" ] && kill -TERM "$napping" 2>/dev/null
  for t in "${!pid_of[@]}"; do kill -TERM "${pid_of[$t]}" 2>/dev/null; done
  # a ps with a call to a peer behind a dead link drains for 5 s (rpc.c) before it exits
  for _ in $(seq 1 80); do
    local alive=0
    for t in "${!pid_of[@]}"; do kill -0 "${pid_of[$t]}" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for t in "${!pid_of[@]}"; do   # the daemon under timeout, then timeout
    pkill -KILL -P "${pid_of[$t]}" 2>/dev/null
    kill -KILL "${pid_of[$t]}" 2>/dev/null
    wait "${pid_of[$t]}" 2>/dev/null
  done
  # a namespace's veth end goes with it, and its peer with the pair; the bridge goes with the hub
  for p in "${made[@]+"${made[@]}"}"; do ip netns del "$p" 2>/dev/null; done
  if [ $keep_out = 1 ]; then say "logs kept in $out"; else rm -rf "$out"; fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 1' INT TERM

# Namespaces of earlier runs that died without cleaning up (their pid is gone),
# and the processes still in them.
for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^tfpsnet[0-9]+-' || true); do
  p=${ns#tfpsnet}; p=${p%%-*}
  kill -0 "$p" 2>/dev/null && continue
  for q in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$q" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null || true
done

# The topology. The first failure to make a namespace, a bridge or a veth is a
# machine that cannot (container without CAP_SYS_ADMIN / CAP_NET_ADMIN): skip.
try() { local e; e=$("$@" 2>&1) || { echo "$e"; return 1; }; }
e=$(try ip netns add "$hub") || skip "cannot make a network namespace (ip netns add: $e)"
made+=("$hub")
e=$(try ip netns exec "$hub" true) || skip "cannot run a command in a network namespace (ip netns exec: $e)"
e=$(try ip -n "$hub" link add br0 type bridge) || skip "cannot make a bridge (ip link add br0 type bridge: $e)"
ip -n "$hub" link set lo up && ip -n "$hub" link set br0 up || die "cannot bring br0 up"
for t in "${tasks[@]}"; do
  ns=$pfx-$t
  e=$(try ip netns add "$ns") || skip "cannot make a network namespace (ip netns add: $e)"
  made+=("$ns")
  e=$(try ip -n "$hub" link add "v-$t" type veth peer name eth0 netns "$ns") ||
    skip "cannot make a veth pair (ip link add type veth: $e)"
  ip -n "$hub" link set "v-$t" master br0 up &&
    ip -n "$ns" addr add "${addr[$t]}/24" dev eth0 &&
    ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up || die "cannot set up $ns"
done
say "network: bridge br0 in netns $hub; ps ${addr[ps0]} ${addr[ps1]}, workers ${addr[w0]} ${addr[w1]} (port 2222)"

# The cluster, as on four hosts.
cluster="{\"worker\": [\"${addr[w0]}:2222\", \"${addr[w1]}:2222\"], \"ps\": [\"${addr[ps0]}:2222\", \"${addr[ps1]}:2222\"]}"
args=(--data-folder "$data" --output-dir "$out" --steps 600 --batch-size 32 --log-every 20 --slow-step-ms 25
      --threads 1 ${TFPS_NETNS_ARGS---rpc-timeout 3 --heartbeat-secs 1})
t_start=$(date +%s.%N)
start() {   # task job index daemon
  local tf="{\"cluster\": $cluster, \"task\": {\"type\": \"$2\", \"index\": $3}}"
  # timeout: no process outlives the test, even if this script is killed with -9
  TF_CONFIG=$tf ip netns exec "$pfx-$1" timeout -s KILL 200 "$bin/$4" "${args[@]}" >"$out/$1.log" 2>&1 &
  pid_of[$1]=$!
}
start ps0 ps 0 tfps-ps
start ps1 ps 1 tfps-ps
start w0 worker 0 tfps-worker
start w1 worker 1 tfps-worker
say "started ps0 ${pid_of[ps0]}, ps1 ${pid_of[ps1]}, w0 (chief) ${pid_of[w0]}, w1 ${pid_of[w1]}; logs in $out"

fail_with_logs() {
  keep_out=1
  for t in "${tasks[@]}"; do echo "--- last lines of $t.log:"; tail -n 8 "$out/$t.log"; done
  die "$*"
}
secs() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Training has started: the chief logged a step.
for _ in $(seq 1 600); do
  grep -q ' I step [0-9]' "$out/w0.log" && break
  kill -0 "${pid_of[w0]}" 2>/dev/null || break
  sleep 0.1
done
grep -q ' I step [0-9]' "$out/w0.log" || fail_with_logs "the chief logged no step within 60 s"
say "chief: $(grep ' I step [0-9]' "$out/w0.log" | head -n 1 | cut -d' ' -f4-)"

# Records the exit of every task that has ended since the last call; returns
# 1 while any is still running.
reap() {
  local t running=0
  for t in "${tasks[@]}"; do
    [ -n "${rc_of[$t]:-}" ] && continue
    if kill -0 "${pid_of[$t]}" 2>/dev/null; then running=1; continue; fi
    wait "${pid_of[$t]}"; rc_of[$t]=$?
    if [ -n "$t_up" ]; then end_of[$t]="$(secs "$t_up") s after the link came back"
    else end_of[$t]="$(secs "$t_cut") s into the cut"; fi
    say "$t exited ${rc_of[$t]}, $(secs "$t_start") s after the start, ${end_of[$t]}"
  done
  return $running
}
later() { awk -v a="$1" -v d="$2" -v b="$(date +%s.%N)" 'BEGIN { exit !(b - a > d) }'; }

# The cut.
t_up=
ip -n "$hub" link set v-w1 down || fail_with_logs "cannot take v-w1 down"
t_cut=$(date +%s.%N)
say "link cut: v-w1 down (worker 1 cannot reach anyone) for $cut_s s, $(secs "$t_start") s after the start"
until later "$t_cut" "$cut_s"; do reap; nap 0.1; done
ip -n "$hub" link set v-w1 up || fail_with_logs "cannot bring v-w1 up"
t_up=$(date +%s.%N)
say "link restored: v-w1 up after $(secs "$t_cut") s"

# Every process ends within 120 s of the link's return.
until reap; do
  if later "$t_up" 120; then
    left=""; for t in "${tasks[@]}"; do [ -z "${rc_of[$t]:-}" ] && left="$left $t"; done
    fail_with_logs "still running 120 s after the link came back:$left"
  fi
  nap 0.2
done

# Worker 1's longest gap between progress lines, against the cut (the logs' clock is local time).
gap=$(grep ' I step [0-9]' "$out/w1.log" | awk '{ split($4, h, ":"); t = h[1] * 3600 + h[2] * 60 + h[3];
  if (NR > 1 && t - p > g) { g = t - p; a = $4; b = pt } p = t; pt = $4 }
  END { if (g) printf "%.2f s (no progress line from %s to %s)", g, b, a; else print "none" }')
say "worker 1: longest gap between progress lines (every 20 steps, ~0.5 s): $gap"
say "worker 1: lines about the ps:"
grep -E 'UNAVAILABLE|waiting for|no answer|re-registered|DEADLINE| [EW] ' "$out/w1.log" | head -n 10 | sed 's/^/    /'

failed=""
[ "${rc_of[w0]}" = 0 ] || failed="$failed; the chief exited ${rc_of[w0]}"
acc=$(awk -F'[:,]' '/"test_accuracy"/ { gsub(/[ \t]/, "", $2); print $2 }' "$out/summary.json" 2>/dev/null)
if [ -z "$acc" ]; then failed="$failed; no test_accuracy in $out/summary.json"
else
  say "test accuracy $acc"
  [ "$(awk -v a="$acc" 'BEGIN { print (a >= 0.80) }')" = 1 ] || failed="$failed; test accuracy $acc < 0.80"
fi
grep -qE 'no answer for|UNAVAILABLE|waiting for|re-registering' "$out/w1.log" ||
  failed="$failed; worker 1's log has no line about the cut (\"no answer for\", UNAVAILABLE, \"waiting for\" or \"re-registering\")"
if [ -z "${TFPS_NETNS_ARGS+set}" ]; then   # the default flags: the round outlives its deadline
  grep -q 're-registered with every ps' "$out/w1.log" ||
    failed="$failed; worker 1 did not re-register after its round outlived --rpc-timeout 3"
fi
[ -z "$failed" ] || fail_with_logs "${failed#; }"
say "passed: the cluster survived a $cut_s s cut of worker 1's link"
