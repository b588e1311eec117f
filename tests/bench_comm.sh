#!/usr/bin/env bash
# bench_comm.sh [BIN_DIR] [tfps options...] -- the communication-only scaling
# table: W simulated workers (no compute) against P real tfps-ps, rounds/s and
# GB/s (tests/bench_comm.c does one cell; this runs the matrix). Not a test.
#
# 1. Loopback: W in 1 2 4 8 16 x P in 1 2 4, every process on this machine
#    (bench_comm starts the ps). On a machine with fewer cores than W + P the
#    processes share them: such a cell measures the CPU, not a network, and
#    the table marks every cell whose machine was >= 90% busy.
# 2. Links between network namespaces (root, iproute2): every task gets a
#    namespace of its own with one veth into a bridge in a hub namespace (as
#    tests/test_netns.sh), so each ps and each worker has a NIC of its own:
#
#        hub netns:  br0 -- v-ps0 .. v-ps3  v-w0 .. v-w15     (veth ends)
#                             |              |
#        task netns:        eth0           eth0    10.78.0.10+k (ps k, port 2222), 10.78.1.10+i (worker i)
#
#    Links: "veth" (no limit: the namespaces' own cost), then each NIC limited
#    to 10gbit and to 1gbit in both directions (tbf on both ends of its veth)
#    with 100 us of added delay on every task's egress (netem; RTT 200 us).
#    Where netem is missing (a kernel without sch_netem) the links are
#    limited in rate only, and the table says so; where tbf is missing, or
#    namespaces cannot be made (not root, a container without CAP_NET_ADMIN),
#    that part is skipped with one line. Reduced matrix: W in 1 4 16, P in 1 4.
#
# Prints one table: link, W, P, rounds/s in all and per worker (min), GB/s
# (message bytes, both directions), round p50 and p99 ms, the machine's busy
# CPU and the bench's own share of it, the bench's CPU ms per round, and the
# qdiscs' dropped packets. Each cell runs BENCH_SECONDS (default 3) after a
# warm-up; the whole script took ~5 min on 2 shared cores. tbf's bucket is
# 128 KB (one GSO packet and a bit; smaller ones made the kernel segment
# every packet, 3x the CPU here): it refills while a direction is idle, so a
# lone worker (W=1) beats the line rate by up to ~12%.
#
# Everything it makes (namespaces, veths, processes) is removed on every exit
# path, Ctrl-C included. Every process runs under timeout -s KILL (BENCH_SECONDS
# + 120 s) and bench_comm's workers and ps die with it (PR_SET_PDEATHSIG), so
# even if this script is SIGKILLed nothing outlives it by more than one cell's
# limit; namespaces left by such a run are removed by the next one.
#
# Env: BENCH_SECONDS; BENCH_W, BENCH_P (loopback lists), BENCH_NETNS_W,
# BENCH_NETNS_P, BENCH_LINKS ("veth 10gbit 1gbit"); BENCH_NETNS=0 skips part
# 2, BENCH_LOOPBACK=0 part 1; BENCH_RESULTS=FILE appends every cell's RESULT
# line (bench_comm's, all its numbers) to FILE. tfps options after BIN_DIR go
# to every worker and ps, e.g. --wire-dtype bf16.
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$here/build/bin}
[ $# -gt 0 ] && shift
extra=("$@")
secs=${BENCH_SECONDS:-3}
loop_w=${BENCH_W:-1 2 4 8 16}
loop_p=${BENCH_P:-1 2 4}
ns_w=${BENCH_NETNS_W:-1 4 16}
ns_p=${BENCH_NETNS_P:-1 4}
links=${BENCH_LINKS:-veth 10gbit 1gbit}
say() { echo "bench_comm.sh: $(date +%T) $*"; }
for b in tfps-ps bench_comm; do
  [ -x "$bin/$b" ] || { say "$bin/$b not found: build first (cmake --build build)"; exit 1; }
done
cap_s=$(awk -v s="$secs" 'BEGIN { printf "%d", s + 120 }')   # a cell's hard limit (timeout -s KILL)

out=$(mktemp -d /tmp/tfps-bench-comm-XXXXXX)
pfx=tfpsbc$$
hub=$pfx-hub
made=()      # namespaces made
pids=()      # processes of the running cell
rows=()      # the table's lines
keep_out=0

cleanup() {
  local p
  for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null; done
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]+"${pids[@]}"}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]+"${pids[@]}"}"; do   # timeout, then what it runs
    pkill -KILL -P "$p" 2>/dev/null
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  pids=()
  # a namespace's veth end goes with it, and its peer with the pair; the bridge goes with the hub
  for p in "${made[@]+"${made[@]}"}"; do ip netns del "$p" 2>/dev/null; done
  made=()
  if [ $keep_out = 1 ]; then say "logs kept in $out"; else rm -rf "$out"; fi
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Runs one cell: bench_comm with the given arguments (under a wrapper command
# when the first argument is not --); appends a row. Returns bench_comm's exit.
cell() {   # link W P [wrapper... --] bench_comm args...
  local link=$1 w=$2 p=$3 drops0 drops1 rc line
  shift 3
  local wrap=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do wrap+=("$1"); shift; done
  shift
  local log=$out/cell-$link-w$w-p$p.log
  drops0=$(drops)
  "${wrap[@]+"${wrap[@]}"}" timeout -s KILL "$cap_s" "$bin/bench_comm" --workers "$w" --seconds "$secs" --label "$link" \
    "$@" "${extra[@]+"${extra[@]}"}" >"$log" 2>&1 &
  local bpid=$!
  pids+=("$bpid")
  wait "$bpid"; rc=$?
  unlist "$bpid"
  drops1=$(drops)
  line=$(grep '^RESULT ' "$log" | tail -n 1)
  if [ $rc != 0 ] || [ -z "$line" ]; then
    keep_out=1
    say "FAILED: $link W=$w P=$p (exit $rc); last lines of $log:"
    tail -n 12 "$log" | sed 's/^/    /'
    rows+=("$(printf '%-22s %3d %2d   %s' "$link" "$w" "$p" "failed (exit $rc)")")
    return 1
  fi
  local v; declare -A r=()
  for v in $line; do [[ $v == *=* ]] && r[${v%%=*}]=${v#*=}; done
  [ -n "${BENCH_RESULTS:-}" ] && echo "$line" >>"$BENCH_RESULTS"
  local mark=" " cpu
  cpu=$(awk -v a="${r[worker_cpu_ms]}" -v b="${r[ps_cpu_ms]}" 'BEGIN { printf "%.2f/%s", a, b == "-" ? "-" : sprintf("%.2f", b) }')
  [ "$(awk -v b="${r[busy]}" 'BEGIN { print (b >= 0.9) }')" = 1 ] && mark="*"
  rows+=("$(printf '%-22s %3d %2d %10.1f %9.1f %7.3f %8.2f %8.2f %5.0f%%%s %4.0f%% %11s %6s' "$link" "$w" "$p" \
    "${r[rps]}" "${r[rps_min]}" "${r[gbs]}" "${r[p50_ms]}" "${r[p99_ms]}" \
    "$(awk -v b="${r[busy]}" 'BEGIN { print b * 100 }')" "$mark" "$(awk -v b="${r[own]}" 'BEGIN { print b * 100 }')" \
    "$cpu" "$((drops1 - drops0))")")
  say "$link W=$w P=$p: ${r[rps]} rounds/s, ${r[gbs]} GB/s, p50 ${r[p50_ms]} ms, busy ${r[busy]}"
  return 0
}

unlist() {   # pid: no longer in pids
  local q keep=()
  for q in "${pids[@]+"${pids[@]}"}"; do [ "$q" = "$1" ] || keep+=("$q"); done
  pids=("${keep[@]+"${keep[@]}"}")
}

# Packets dropped so far by every qdisc of the namespaces (0 without them).
drops() {
  local n=0 ns d
  for ns in "${made[@]+"${made[@]}"}"; do
    for d in $(tc -s -n "$ns" qdisc show 2>/dev/null | awk '/dropped/ { for (i = 1; i < NF; i++) if ($i == "(dropped") print $(i + 1) + 0 }'); do
      n=$((n + d))
    done
  done
  echo $n
}

failed=0
say "bench_comm on $(nproc) cores, $secs s per cell; tfps options: ${extra[*]:-(none)}; logs in $out"

# ---- 1. loopback ----------------------------------------------------------
if [ "${BENCH_LOOPBACK:-1}" != 0 ]; then
  for p in $loop_p; do
    for w in $loop_w; do cell loopback "$w" "$p" -- --ps "$p" || failed=1; done
  done
fi

# ---- 2. network namespaces --------------------------------------------------
netns_skip=""
try() { local e; e=$("$@" 2>&1) || { echo "$e"; return 1; }; }
setup_netns() {   # returns 1 with netns_skip set when this machine cannot
  local e t ns
  [ "$(id -u)" = 0 ] || { netns_skip="needs root to make network namespaces (uid $(id -u))"; return 1; }
  command -v ip >/dev/null && command -v tc >/dev/null ||
    { netns_skip="no ip or tc command: apt-get install iproute2"; return 1; }
  # namespaces of earlier runs that died without cleaning up (their pid is gone), and what still runs in them
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E '^tfpsbc[0-9]+-' || true); do
    t=${ns#tfpsbc}; t=${t%%-*}
    kill -0 "$t" 2>/dev/null && continue
    for q in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$q" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || true
  done
  e=$(try ip netns add "$hub") || { netns_skip="cannot make a network namespace (ip netns add: $e)"; return 1; }
  made+=("$hub")
  e=$(try ip netns exec "$hub" true) || { netns_skip="cannot run in a network namespace (ip netns exec: $e)"; return 1; }
  e=$(try ip -n "$hub" link add br0 type bridge) || { netns_skip="cannot make a bridge: $e"; return 1; }
  ip -n "$hub" link set lo up && ip -n "$hub" link set br0 up || { netns_skip="cannot bring br0 up"; return 1; }
  # what tc can do here: tbf (the rate) and netem (the delay) on a probe veth
  e=$(try ip -n "$hub" link add vprobe0 type veth peer name vprobe1) || { netns_skip="cannot make a veth pair: $e"; return 1; }
  have_tbf=1 have_netem=1
  tc -n "$hub" qdisc add dev vprobe0 root tbf rate 1gbit burst 128kb latency 20ms 2>/dev/null || have_tbf=0
  tc -n "$hub" qdisc del dev vprobe0 root 2>/dev/null
  netem_err=$(tc -n "$hub" qdisc add dev vprobe0 root netem delay 100us 2>&1) || have_netem=0
  ip -n "$hub" link del vprobe0 2>/dev/null
  local maxw=0 maxp=0
  for t in $ns_w; do [ "$t" -gt $maxw ] && maxw=$t; done
  for t in $ns_p; do [ "$t" -gt $maxp ] && maxp=$t; done
  tasks=()
  for ((k = 0; k < maxp; k++)); do tasks+=("ps$k"); addr[ps$k]=10.78.0.$((10 + k)); done
  for ((k = 0; k < maxw; k++)); do tasks+=("w$k"); addr[w$k]=10.78.1.$((10 + k)); done
  for t in "${tasks[@]}"; do
    ns=$pfx-$t
    e=$(try ip netns add "$ns") || { netns_skip="cannot make a network namespace: $e"; return 1; }
    made+=("$ns")
    e=$(try ip -n "$hub" link add "v-$t" type veth peer name eth0 netns "$ns") ||
      { netns_skip="cannot make a veth pair: $e"; return 1; }
    ip -n "$hub" link set "v-$t" master br0 up && ip -n "$ns" addr add "${addr[$t]}/16" dev eth0 &&
      ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up || { netns_skip="cannot set up $ns"; return 1; }
  done
  return 0
}

# Every NIC limited to rate (veth: none) in both directions; the delay on each task's egress.
shape() {   # link
  local t ns rate=$1
  for t in "${tasks[@]}"; do
    ns=$pfx-$t
    tc -n "$ns" qdisc del dev eth0 root 2>/dev/null
    tc -n "$hub" qdisc del dev "v-$t" root 2>/dev/null
    [ "$rate" = veth ] && continue
    # burst: one 64 KB GSO packet and a bit (the bucket refills while a worker's direction is idle:
    # a larger one would let a 1 MB message through at veth speed)
    local tbf=(tbf rate "$rate" burst 128kb latency 20ms)
    if [ $have_netem = 1 ]; then
      tc -n "$ns" qdisc add dev eth0 root handle 1: netem delay 100us limit 100000 &&
        tc -n "$ns" qdisc add dev eth0 parent 1:1 handle 10: "${tbf[@]}" || return 1
    else
      tc -n "$ns" qdisc add dev eth0 root "${tbf[@]}" || return 1
    fi
    tc -n "$hub" qdisc add dev "v-$t" root "${tbf[@]}" || return 1
  done
}

# P tfps-ps, one per namespace, with a TF_CONFIG of P ps and W workers.
start_ps() {   # W P
  local w=$1 p=$2 k cluster tf
  cluster="{\"ps\": ["
  for ((k = 0; k < p; k++)); do cluster+="$([ $k -gt 0 ] && echo ", ")\"${addr[ps$k]}:2222\""; done
  cluster+="], \"worker\": ["
  for ((k = 0; k < w; k++)); do cluster+="$([ $k -gt 0 ] && echo ", ")\"${addr[w$k]}:2222\""; done
  cluster+="]}"
  ps_addrs=""
  for ((k = 0; k < p; k++)); do
    tf="{\"cluster\": $cluster, \"task\": {\"type\": \"ps\", \"index\": $k}}"
    TF_CONFIG=$tf ip netns exec "$pfx-ps$k" timeout -s KILL "$cap_s" "$bin/tfps-ps" --output-dir "$out/ps$k" \
      --log-level warn "${extra[@]+"${extra[@]}"}" >>"$out/ps$k.log" 2>&1 &
    pids+=("$!")
    ps_addrs+="${ps_addrs:+,}${addr[ps$k]}:2222"
  done
  ps_pids=""   # the tfps-ps under each timeout, for bench_comm --ps-pids (their CPU time)
  local t q
  for t in "${pids[@]}"; do
    for _ in $(seq 1 50); do q=$(pgrep -P "$t" | head -n 1); [ -n "$q" ] && break; sleep 0.02; done
    ps_pids+="${ps_pids:+,}${q:-0}"
  done
}
stop_ps() {
  local p
  for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null; done
  pids=()
}

notes=()
if [ "${BENCH_NETNS:-1}" = 0 ]; then
  notes+=("network namespaces: not run (BENCH_NETNS=0)")
else
  declare -A addr=()
  tasks=()
  if setup_netns; then
    # the tasks' job secret: in their environment only
    TFPS_JOB_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    export TFPS_JOB_SECRET
    [ $have_netem = 1 ] || notes+=("netem is missing here (tc: ${netem_err//$'\n'/ }): links limited in rate only, no added delay")
    for link in $links; do
      if [ "$link" != veth ] && [ $have_tbf = 0 ]; then
        notes+=("tbf is missing here: link $link skipped"); continue
      fi
      if ! shape "$link"; then notes+=("tc could not limit the links to $link: skipped"); continue; fi
      label=$link
      [ "$link" != veth ] && [ $have_netem = 1 ] && label="$link+100us"
      [ "$link" != veth ] && [ $have_netem = 0 ] && label="$link(no-delay)"
      for p in $ns_p; do
        for w in $ns_w; do
          start_ps "$w" "$p"
          cell "$label" "$w" "$p" ip netns exec "$pfx-w0" -- --ps-addrs "$ps_addrs" --ps-pids "$ps_pids" --worker-netns "$pfx-w" || failed=1
          stop_ps
        done
      done
    done
  else
    notes+=("network namespaces: skipped: $netns_skip")
  fi
fi

echo
echo "bench_comm.sh: $(nproc) cores; model 784-300-100-10 (266,610 floats, 1,066,440 B each way per round)"
printf '%-22s %3s %2s %10s %9s %7s %8s %8s %6s %5s %11s %6s\n' link W P "rounds/s" "min/wkr" "GB/s" "p50 ms" "p99 ms" "busy" \
  "own" "cpu ms w/ps" "drops"
for r in "${rows[@]}"; do echo "$r"; done
echo "(rounds/s: all workers' together; min/wkr: the slowest worker's; GB/s: both directions, message bytes;"
echo " busy: the whole machine's CPU over the window, * = >= 90%: that cell measured the cores, not the link;"
echo " own: the bench's workers' and ps's CPU time (user + system) as a share of the machine: busy - own = others';"
echo " cpu ms w/ps: that CPU time per round, workers' / ps's (the kernel's softirq work is only partly in it);"
echo " drops: packets the tc qdiscs dropped during the cell)"
for n in "${notes[@]+"${notes[@]}"}"; do echo "note: $n"; done
exit $failed
